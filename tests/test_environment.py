"""environment.yml (conda) and requirements.txt (pip) pin the same packages at the same versions."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(lines):
    return {line.split("==")[0].strip().lower(): line.split("==")[1].strip() for line in lines if "==" in line}


def test_conda_environment_matches_requirements():
    requirements = pins(l.split("#")[0] for l in (ROOT / "requirements.txt").read_text().splitlines())
    conda = pins(l.strip().lstrip("- ") for l in (ROOT / "environment.yml").read_text().splitlines()
                 if l.strip().startswith("- ") and "==" in l)
    assert requirements and conda == requirements


def test_every_requirement_is_pinned():
    lines = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    assert all("==" in l for l in lines if l), "every requirement needs an exact version"
