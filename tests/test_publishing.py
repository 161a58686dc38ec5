"""What a reader of the published book relies on: the Pages workflow builds with the README's command and
refuses to publish without a front page; the buttons, the citation file and the bibliography agree."""
import re
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "book.yml").read_text())
CONFIG = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())


def steps(name: str) -> dict:
    return {step.get("name"): step for step in WORKFLOW["jobs"][name]["steps"]}


def readme_build_command() -> str:
    block = re.search(r"## The two commands.*?```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, "the README gives two commands: the book, then the tests"
    return commands[0]


def test_the_workflow_builds_with_the_readmes_command_and_publishes_the_html():
    assert readme_build_command() == "bash tools/setup.sh && bash tools/build_book.sh"
    build = steps("build")
    assert build["Build the book"]["run"] == readme_build_command()
    upload = next(step for step in build.values() if step.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert any(step.get("uses", "").startswith("actions/deploy-pages") for step in steps("deploy").values())


def test_the_site_check_fails_without_index_html(tmp_path):
    check = steps("build")["Check the site"]["run"]
    (tmp_path / "_build" / "html").mkdir(parents=True)
    missing = subprocess.run(["bash", "-c", check], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 1 and "index.html is missing" in missing.stdout
    (tmp_path / "_build" / "html" / "index.html").write_text("<html></html>")
    assert subprocess.run(["bash", "-c", check], cwd=tmp_path).returncode == 0


def test_buttons_and_citation_follow_one_repository_url():
    url = CONFIG["repository"]["url"]
    assert url.startswith("https://github.com/")
    assert CONFIG["html"]["use_repository_button"] and CONFIG["html"]["use_issues_button"]
    launch = CONFIG["launch_buttons"]
    assert launch["binderhub_url"] and launch["colab_url"] and launch["jupyterhub_url"]
    citation = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["repository-code"] == url
    assert {"message", "title", "authors", "preferred-citation"} <= set(citation)


def test_every_citation_has_an_entry_in_the_bibliography():
    bibfiles = CONFIG["bibtex_bibfiles"]
    keys = set()
    for name in bibfiles:
        keys |= set(re.findall(r"^@\w+\{([^,]+),", (REPO_ROOT / name).read_text(), re.M))
    pages = [*(REPO_ROOT / "book").glob("*.md"), *(REPO_ROOT / "notebooks").glob("*.ipynb")]
    cited = {key.strip() for page in pages for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", page.read_text())
             for key in group.split(",")}
    assert {"fang_diffpruning", "castells_ldpruner"} <= cited
    assert cited <= keys, f"cited but not in {bibfiles}: {sorted(cited - keys)}"
