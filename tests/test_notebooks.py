"""Every notebook: documented parameters, a smoke run with papermill, and the book built from the results.

The smoke parameters (notebooks/smoke_parameters.json) exercise every cell in seconds. The executed
notebooks go into a temporary copy of the book tree (_config.yml, _toc.yml, book/, notebooks/), which
jupyter-book then builds with execution off and Sphinx warnings as errors, as CI does.
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from diffprune_core.results import NOTEBOOKS_DIR, REPO_ROOT

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
SMOKE = json.loads((NOTEBOOKS_DIR / "smoke_parameters.json").read_text())
BIN = Path(sys.executable).parent


def parameters_cell(notebook: nbformat.NotebookNode):
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    return cells[0]


def test_every_notebook_has_smoke_parameters():
    assert NOTEBOOKS, "no notebooks found"
    assert sorted(SMOKE) == [path.stem for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_clean_with_documented_parameters(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    ids = [cell.id for cell in notebook.cells]
    assert len(set(ids)) == len(ids), f"cell ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "commit notebooks without outputs"
    statements = ast.parse(parameters_cell(notebook).source).body
    names = [s.target.id for s in statements if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    assert len(names) == len(statements), "the parameters cell holds only annotated assignments `name: type = value`"
    documented = papermill.inspect_notebook(str(path))  # what `papermill --help-notebook` shows
    assert list(documented) == names, "papermill could not read every line (no '=' inside the comments)"
    for name, spec in documented.items():
        assert spec["inferred_type_name"] != "None", f"{name} has no type annotation"
        assert spec["help"], f"{name} has no trailing comment"
    assert set(SMOKE.get(path.stem, {})) <= set(names), "smoke parameters must be parameters of the notebook"


COLLAPSED = {"hide-input", "remove-input", "remove-cell"}  # myst-nb's tags that keep code out of a reader's way
STUDENT = "student"  # a cell a student is meant to read, shown open: chapter 1's derivation, the call that prunes
CHAPTERS = [path for path in NOTEBOOKS if path.stem != "11_provenance"]  # the provenance page is not a chapter


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_code_is_collapsed_and_prints_nothing_a_reader_sees(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = set(cell.metadata.get("tags", []))
        assert tags & (COLLAPSED | {STUDENT}), f"cell {cell.id}: tag it hide-input (or {STUDENT} if a student reads it)"
        if not tags & {"remove-cell", "remove-output"}:
            assert not re.search(r"\bprint\(", cell.source), f"cell {cell.id}: a verdict is glued once, not printed"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_every_chapter_opens_with_its_result(path):
    """(That every table and figure is numbered, the browser check of the smoke build tells.)"""
    notebook = nbformat.read(path, as_version=4)
    opening = "".join(cell.source for cell in notebook.cells[:3] if cell.cell_type == "markdown")
    box = re.search(r":::\{admonition\} In short\n:class: result\n(.*?)\n:::", opening, re.S)
    assert box, "the chapter opens with the result box (the paper's claim, our measurement, the verdict)"
    assert all(f"**{part}:**" in box.group(1) for part in ("The paper", "Here", "Verdict"))
    assert re.search(r"\*\*Verdict:\*\*[^\n]*\{glue:text\}`\w+:s`", box.group(1)), "the verdict is a glued string"


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """The book tree with every notebook executed on its smoke parameters, and the results folder."""
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "book", root / "book")  # with MathJax (tools/fetch_mathjax.sh), for the browser
    (root / "notebooks").mkdir()
    saved = {key: os.environ.get(key) for key in ("DIFFPRUNE_RESULTS", "JUPYTER_PATH", "DIFFPRUNE_PROGRESS")}
    os.environ["DIFFPRUNE_RESULTS"] = str(root / "results")
    os.environ["DIFFPRUNE_PROGRESS"] = "0"  # as tools/build_book.sh: no bar in a page
    os.environ["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")  # this environment's python3 kernel
    try:
        for path in NOTEBOOKS:
            if path.stem not in SMOKE:
                pytest.fail(f"{path.stem} has no entry in notebooks/smoke_parameters.json")
            papermill.execute_notebook(str(path), str(root / "notebooks" / path.name), parameters=SMOKE[path.stem],
                                       kernel_name="python3", cwd=str(root / "notebooks"), progress_bar=False)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return root


def test_smoke_runs_write_results_beside_the_defaults(smoke_book):
    for path in NOTEBOOKS:
        runs = list((smoke_book / "results" / path.stem).iterdir())
        assert len(runs) == 1 and runs[0].name != "default", "smoke parameters must not write the default results"
        metadata = json.loads((runs[0] / "metadata.json").read_text())
        assert metadata["parameters"] | SMOKE[path.stem] == metadata["parameters"]
        assert any(name.endswith(".csv") for name in metadata["files"])
        assert any(name.endswith(".png") for name in metadata["files"])
        assert any(name.endswith(".svg") for name in metadata["files"])


@pytest.fixture(scope="module")
def smoke_build(smoke_book):
    """jupyter-book's build of the smoke book (execution off: papermill just ran every notebook)."""
    config = yaml.safe_load((smoke_book / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (smoke_book / "_config.yml").write_text(yaml.safe_dump(config))
    for path in (smoke_book / "notebooks").glob("*.ipynb"):  # also those forced to run at every build
        notebook = nbformat.read(path, as_version=4)
        notebook.metadata.get("mystnb", {}).pop("execution_mode", None)
        nbformat.write(notebook, path)
    return subprocess.run([str(BIN / "jupyter-book"), "build", str(smoke_book), "--warningiserror", "--keep-going"],
                          capture_output=True, text=True)


def test_book_builds_with_warnings_as_errors_and_loads_nothing_remote(smoke_book, smoke_build):
    assert smoke_build.returncode == 0, smoke_build.stdout[-3000:] + smoke_build.stderr[-3000:]
    html = smoke_book / "_build" / "html"
    check = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "check_offline_html.py"), str(html)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    chapter = (html / "notebooks" / "01_error_propagation.html").read_text()
    assert "_static/mathjax/tex-svg-full.js" in chapter
    pages = {path.relative_to(html).as_posix(): path.read_text() for path in html.rglob("*.html")}
    assert not [name for name, page in pages.items() if re.search(r"\d+/\d+ \[\d\d:\d\d<", page)], "a progress bar"
    for name, shown in (("notebooks/11_provenance.html", "fig-build-profile"),
                        ("book/execution.html", "Run Time (s)"),  # myst-nb's table (empty: execution off)
                        ("book/bibliography.html", "Structural pruning for diffusion models")):
        assert shown in pages[name], f"{name} lacks {shown}"
    for button in ("mybinder.org/v2/gh/diffprune/diffprune", "colab.research.google.com/github/diffprune/diffprune",
                   "jupyterhub.example.org/hub/user-redirect/git-pull", ".ipynb"):
        assert button in chapter, f"no {button} button"
    assert re.search(r'href="bibliography.html#id\w+"', pages["book/intro.html"]), "the intro cites the papers"


@pytest.mark.skipif(not Path("/usr/bin/chromium").is_file(), reason="needs Debian's chromium: tools/setup.sh as root")
def test_every_page_passes_the_browser_check(smoke_book, smoke_build):
    """tools/check_pages.py at a desktop and a phone width: no console or page error, no network, math and titles
    rendered, nothing a reader must not see (NaN, paths, warnings), every table and figure numbered and no table
    wider than the text column."""
    assert smoke_build.returncode == 0
    for width in ("1280x900", "390x844"):  # a desktop and a phone
        check = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "check_pages.py"),
                                str(smoke_book / "_build" / "html"), "--viewport", width, "--fail-on-wide-tables"],
                               capture_output=True, text=True)
        assert check.returncode == 0, width + "\n" + check.stdout[-3000:] + check.stderr[-2000:]


def test_the_provenance_page_is_generated_at_every_build():
    notebook = nbformat.read(NOTEBOOKS_DIR / "11_provenance.ipynb", as_version=4)
    assert notebook.metadata["mystnb"]["execution_mode"] == "force", "never taken from the cache"


def test_offline_check_catches_remote_scripts_and_stylesheets(tmp_path):
    check = [sys.executable, str(REPO_ROOT / "tools" / "check_offline_html.py"), str(tmp_path)]
    page = tmp_path / "page.html"
    page.write_text('<a href="https://arxiv.org/abs/2305.10924">paper</a><script src="_static/mathjax/tex.js"></script>')
    assert subprocess.run(check, capture_output=True).returncode == 0
    for remote in ('<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>',
                   '<link rel="stylesheet" href="//fonts.googleapis.com/css?family=Lato">'):
        page.write_text(remote)
        assert subprocess.run(check, capture_output=True).returncode == 1
