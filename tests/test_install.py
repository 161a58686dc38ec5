"""`pip install .` into a fresh virtual environment that holds only the pinned torch: pyproject.toml's
dependencies resolve and install, every module diffprune_core imports is there, and the `diffprune`
console script prints the same help as `python -m diffprune_core`.

The fresh venv gets torch 2.14.1 and torchvision 0.29.1 (requirements.txt's pins) first, as pyproject.toml
says to, so that pip never resolves torch's range itself (with no torch installed it would take a
CUDA build of several GB). A real `pip install torch==2.14.1 torchvision==0.29.1` from this machine's
disk takes about a minute (64 s) and 5.5 GB per run. Instead, the files of exactly the distributions
that command installs (torch, torchvision and the closure of their requirements: the CUDA libraries,
triton, sympy, numpy, pillow, a newer setuptools, ...) are hard-linked by their RECORD, dist-info
included, from the running .venv's site-packages (made by tools/setup.sh from requirements.txt) into
the new venv's: 2 s and no disk (a full copy where a hard link is refused). The venv is what that pip
command gives but for torch's console scripts (torchrun), which are left out; pip and Python replace
files rather than write into them, so .venv's files are never changed. pip then has to build the
project from a copy of the checkout's files (non-editable, built in the copy, so no build/ or egg-info
lands in the checkout) and install it and every other dependency for real, from the package indexes,
with its usual cache: about 80 s in all. pip must leave torch alone: its files are checked to be the
same files afterwards.
"""
import os
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from diffprune_core.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
TORCH = ("torch", "torchvision")
PIP = ("-m", "pip", "install", "--disable-pip-version-check", "-q")
BOOK_ONLY = {"papermill", "IPython"}  # imported by diffprune_core for the notebooks: the [book] extra (ipykernel)
# Run in the new venv: the top-level modules that the installed diffprune_core imports, at the top of a
# file or inside a function, that cannot be found there.
MISSING_IMPORTS = """
import ast, importlib.util, pathlib, sys, diffprune_core
missing = set()
for file in pathlib.Path(diffprune_core.__file__).parent.glob("*.py"):
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        tops = {name.split(".")[0] for name in names} - set(sys.stdlib_module_names)
        missing |= {top for top in tops if importlib.util.find_spec(top) is None}
print(" ".join(sorted(missing)))
"""


def pinned(name: str) -> str:
    pins = dict(line.split("#")[0].strip().split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line.split("#")[0])
    return pins[name]


def closure(names) -> dict:
    """The installed distributions ``names`` need, with the extras asked for, themselves included:
    {canonical name: Distribution}."""
    found, extras, todo = {}, {}, [Requirement(name) for name in names]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        new = set(requirement.extras) - extras.setdefault(name, set())
        if name in found and not new:
            continue
        extras[name] |= new
        found[name] = dist = distribution(name)
        for needed in map(Requirement, dist.requires or []):
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in {"", *extras[name]}):
                todo.append(needed)
    return found


def link_tree(dists, site_packages: Path) -> int:
    """Hard-link (or copy) each distribution's files under site-packages into ``site_packages``."""
    count = 0
    for dist in dists:
        source_root = Path(dist.locate_file("")).resolve()
        assert dist.files, f"{dist.metadata['Name']} has no RECORD"
        for file in dist.files:
            source = Path(dist.locate_file(file)).resolve()
            if source_root not in source.parents or not source.is_file():  # bin/ scripts; a stale RECORD line
                continue
            target = site_packages / source.relative_to(source_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # another file system
                shutil.copy2(source, target)
            count += 1
    return count


def run(command, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["COLUMNS"] = "100"  # the width argparse formats --help for
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def copy_source(destination: Path) -> None:
    """The checkout's files as git sees them (tracked, and new ones not ignored): no .venv, build or results."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():  # not one deleted in the work tree
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)


def test_pip_install_into_fresh_venv_gives_the_diffprune_command(tmp_path, monkeypatch):
    dists = closure(TORCH)
    for name in TORCH:
        assert dists[name].version == pinned(name), f"the running environment's {name} is not requirements.txt's"
    venv, source, work = tmp_path / "venv", tmp_path / "source", tmp_path / "work"
    work.mkdir()  # the working directory of every command: not the checkout, whose diffprune_core would shadow
    try:
        run([sys.executable, "-m", "venv", venv], work, 300)
        python = venv / "bin" / "python"
        site_packages = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 work, 60).stdout.strip())
        # The venv's own setuptools is older than torch's setuptools>=77.0.3, so pip would upgrade it.
        present = {canonicalize_name(info.name.split("-")[0]) for info in site_packages.glob("*.dist-info")}
        replaced = sorted(present & dists.keys())
        if replaced:
            run([python, "-m", "pip", "uninstall", "--disable-pip-version-check", "-q", "-y", *replaced], work, 120)
        assert link_tree(dists.values(), site_packages) > 1000
        torch_init = site_packages / "torch" / "__init__.py"
        before = torch_init.stat().st_ino
        copy_source(source)

        run([python, *PIP, source], work, 900)

        assert torch_init.stat().st_ino == before, "pip re-installed torch"
        run([python, "-m", "pip", "check", "--disable-pip-version-check"], work, 300)
        script = ("import diffprune_core, torch, torchvision; from importlib.metadata import version; "
                  "print(diffprune_core.__file__, version('torch'), version('torchvision'))")
        installed = run([python, "-c", script], work, 300).stdout.split()
        assert Path(installed[0]).parent == site_packages / "diffprune_core"
        assert installed[1:] == [pinned("torch"), pinned("torchvision")]
        missing = set(run([python, "-c", MISSING_IMPORTS], work, 300).stdout.split())
        assert missing <= BOOK_ONLY, f"diffprune_core imports {sorted(missing - BOOK_ONLY)}: not in its dependencies"

        command = run([venv / "bin" / "diffprune", "--help"], work, 300)
        module = run([python, "-m", "diffprune_core", "--help"], work, 300)
        monkeypatch.setenv("COLUMNS", "100")
        assert command.stdout == module.stdout == build_parser().format_help()
        assert command.stdout.startswith("usage: python -m diffprune_core")
    finally:
        for folder in (venv, source, work):  # pytest keeps the last runs' tmp_path: 0.7 GB each
            shutil.rmtree(folder, ignore_errors=True)
