"""Where a notebook writes its tables and figures, and the metadata that says how they were made.

Every notebook of the book writes under ``results/<notebook>/<run>/`` (``results/`` is gitignored;
the environment variable ``DIFFPRUNE_RESULTS`` moves it): ``<run>`` is ``default`` when every
parameter has the default of the notebook's tagged ``parameters`` cell, and otherwise the changed
parameters plus a short hash of all of them, e.g. ``seed=1-3f2a9c01``. A papermill re-run with new
parameters therefore never overwrites the default results. ``metadata.json`` records the parameters,
the seed, the wall time, the package versions and the git commit.
"""
import ast
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import matplotlib
import pandas as pd

from .errors import InputError
from .fileio import write_json

LIBRARY_DIR = Path(__file__).resolve().parent
REPO_ROOT = LIBRARY_DIR.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PACKAGES = ("torch", "diffusers", "torch-pruning", "accelerate", "torch-fidelity")
DEFAULT_RUN = "default"
PHASES = ("pruning", "fine_tuning", "sampling", "measuring")  # of a run's wall time (experiments.PhaseClock)

# Deterministic SVG files: fixed element ids and no creation date.
matplotlib.rcParams["svg.hashsalt"] = "diffprune"


def repo_path(source: str) -> str:
    """``source`` as an absolute path if it names something under the repository root, else unchanged.

    Notebooks run with their own folder as the working directory (Jupyter Book) or the caller's
    (papermill), so relative paths in their parameters are taken from the repository root; hub ids
    (``google/ddpm-cifar10-32``) and ``paper:NAME`` pass through.
    """
    candidate = REPO_ROOT / source
    return str(candidate) if not Path(source).is_absolute() and candidate.exists() else source


def results_root() -> Path:
    return Path(os.environ.get("DIFFPRUNE_RESULTS", REPO_ROOT / "results"))


def default_parameters(notebook: str) -> dict:
    """The values of the notebook's tagged ``parameters`` cell, as papermill reads them."""
    import papermill

    path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    if not path.is_file():
        raise InputError(f"no notebook {path}")
    return {name: ast.literal_eval(spec["default"]) for name, spec in papermill.inspect_notebook(str(path)).items()}


def notebook_parameters(notebook: str, namespace: dict) -> dict:
    """The notebook's parameters with their current values, taken from ``namespace`` (its ``globals()``)."""
    return {name: namespace[name] for name in default_parameters(notebook)}


def run_name(params: dict, defaults: dict) -> str:
    """``default``, or the changed parameters (readable, at most 40 characters) and a hash of all of them."""
    canonical = json.loads(json.dumps(params, sort_keys=True))  # tuples become lists, as in the defaults
    changed = {name: value for name, value in canonical.items() if defaults.get(name) != value}
    if not changed:
        return DEFAULT_RUN
    readable = ",".join(f"{name}={value}" for name, value in changed.items())
    readable = re.sub(r"[^A-Za-z0-9.,=_+-]+", "_", readable)[:40].strip("_,")
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def results_dir(notebook: str, params: dict) -> Path:
    """An empty folder ``results/<notebook>/<run>`` for this notebook and these parameters (see module doc)."""
    folder = results_root() / notebook / run_name(params, default_parameters(notebook))
    if folder.exists():
        shutil.rmtree(folder)  # a re-run with the same parameters replaces the earlier one
    folder.mkdir(parents=True)
    return folder


def git_commit() -> dict:
    """The repository's HEAD commit and whether tracked files differ from it (None outside git)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True).stdout

    try:
        return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(git("status", "--porcelain", "-uno").strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def library_imports(module: str) -> set:
    """The library's modules that ``module`` ("experiments") imports, directly or through others, itself and the
    package's ``__init__`` included:
    every ``from .x import``, ``from . import x`` and ``diffprune_core.x`` import in the source, function-level
    imports too (read from the files, not from what Python has loaded)."""
    seen, todo = set(), [module, "__init__"]  # the package's __init__ runs before any of its modules
    while todo:
        name = todo.pop()
        path = LIBRARY_DIR / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("diffprune_core")):
                base = (node.module or "").removeprefix("diffprune_core").lstrip(".")
                todo += [base.split(".")[0]] if base else [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [alias.name.split(".")[1] for alias in node.names if alias.name.startswith("diffprune_core.")]
    return seen


def library_digest(module: str | None = None) -> str:
    """SHA-256 of the library's source files and of :func:`package_versions` (torch, diffusers, torch-pruning,
    accelerate, torch-fidelity, Python): what a cached result's key must hold besides its settings.

    With ``module``, only the files that module imports (:func:`library_imports`): the key of a cached run
    ("experiments") then changes with every line of code that computes it, but not with the chapters' tables,
    plots and sentences, whose change does not need the runs computed again."""
    names = library_imports(module) if module else {path.stem for path in LIBRARY_DIR.glob("*.py")}
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(f"{name}.py".encode() + (LIBRARY_DIR / f"{name}.py").read_bytes())
    digest.update(json.dumps(package_versions(), sort_keys=True).encode())
    return digest.hexdigest()


def write_metadata(folder, params: dict, seed: int | list | None, wall_time_s: float) -> dict:
    """Write ``metadata.json`` into ``folder``: parameters, seed, wall time, versions, git, the library's digest,
    and the files there."""
    import torch

    folder = Path(folder)
    metadata = {
        "parameters": params,
        "seed": seed,
        "wall_time_s": round(wall_time_s, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_commit(),
        "packages": package_versions(),
        "library_digest": library_digest(),
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "files": sorted(p.name for p in folder.iterdir() if p.name != "metadata.json"),
    }
    write_json(folder / "metadata.json", metadata)
    return metadata


def save_table(table, folder, name: str) -> Path:
    """A pandas table as ``folder/name.csv``."""
    path = Path(folder) / f"{name}.csv"
    table.to_csv(path, index=False)
    return path


def save_figure(figure, folder, name: str) -> None:
    """A matplotlib figure as ``folder/name.png`` (for the page) and ``folder/name.svg`` (for print)."""
    figure.savefig(Path(folder) / f"{name}.png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    figure.savefig(Path(folder) / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})


def chapter_metadata(runs: str = DEFAULT_RUN, root=None) -> list:
    """(chapter, run, metadata) of every ``<root>/<chapter>/<run>/metadata.json`` whose run matches the glob
    ``runs`` ("default": the book's own results; "*": every run), sorted by chapter and run."""
    root = Path(root) if root is not None else results_root()
    return [(path.parent.parent.name, path.parent.name, json.loads(path.read_text()))
            for path in sorted(root.glob(f"[0-9][0-9]_*/{runs}/metadata.json"))]


def provenance(runs: str = DEFAULT_RUN, root=None) -> pd.DataFrame:
    """One row per chapter result (see :func:`chapter_metadata`): when it finished, its wall time and seed, the
    git commit ("+changes" when tracked files differed), the library digest, the package versions and the
    parameters as JSON, with paths inside the repository written relative to it. No result is an error."""
    root = Path(root) if root is not None else results_root()
    rows = []
    for chapter, run, metadata in chapter_metadata(runs, root):
        git = metadata.get("git") or {}
        commit = (git.get("commit") or "")[:10] + ("+changes" if git.get("dirty") else "")
        parameters = json.dumps(metadata["parameters"]).replace(str(REPO_ROOT) + "/", "")
        rows.append({"chapter": chapter, "run": run, "finished": metadata["finished"],
                     "wall_time_s": metadata["wall_time_s"], "seed": json.dumps(metadata["seed"]), "commit": commit,
                     "library_digest": (metadata.get("library_digest") or "")[:12], **metadata["packages"],
                     "parameters": parameters})
    if not rows:
        raise InputError(f"no chapter results ({runs!r}) under {root}: run the chapters first (tools/build_book.sh)")
    return pd.DataFrame(rows)


def build_profile(runs: str = DEFAULT_RUN, root=None) -> pd.DataFrame:
    """Minutes per chapter: its wall time and the phases (:data:`PHASES`) of the runs it computed, plus 'other'.

    A run of ``<root>/runs/*/metrics.json`` belongs to the chapter whose execution window (its finish minus its
    wall time) holds the run's finish: the chapter that computed it, as later ones read it back. Runs compute
    several at once (:func:`experiments.run_all`), so a chapter's phases share out the minutes in which at least
    one of its runs was computing, in proportion to each phase's time summed over the runs; 'other' is the rest
    of the chapter's time (shared Algorithm 1 passes, Figure 5's and LD-Pruner's own work, timings, plots).
    The last row, 'all', sums the chapters.
    """
    root = Path(root) if root is not None else results_root()

    def when(stamp: str) -> datetime:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")

    chapters = []
    for chapter, _, metadata in chapter_metadata(runs, root):
        end = when(metadata["finished"])
        chapters.append({"chapter": chapter, "start": end - timedelta(seconds=metadata["wall_time_s"]), "end": end,
                         "wall": metadata["wall_time_s"], "runs": 0, "spans": [], **dict.fromkeys(PHASES, 0.0)})
    for path in root.glob("runs/*/metrics.json"):
        metrics = json.loads(path.read_text())
        if "phases_s" not in metrics:  # a run from before phases were recorded
            continue
        finished = when(metrics["finished"])
        for chapter in chapters:
            if chapter["start"] <= finished <= chapter["end"] + timedelta(seconds=1):
                chapter["runs"] += 1
                chapter["spans"].append((finished.timestamp() - metrics["wall_time_s"], finished.timestamp()))
                for phase in PHASES:
                    chapter[phase] += metrics["phases_s"].get(phase, 0.0)
    for chapter in chapters:
        summed = sum(chapter[phase] for phase in PHASES)
        for phase in PHASES:
            chapter[phase] *= covered(chapter["spans"]) / summed if summed else 0.0
    table = pd.DataFrame(chapters, columns=["chapter", "wall", "runs", *PHASES])
    table["other"] = table["wall"] - table[list(PHASES)].sum(axis=1)
    total = table.sum(numeric_only=True).to_frame().T.assign(chapter="all")
    minutes = pd.concat([table, total], ignore_index=True)
    for column in ["wall", *PHASES, "other"]:
        minutes[column] = minutes[column] / 60
    return minutes


def covered(spans: list) -> float:
    """Seconds that at least one of the (start, end) spans covers."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total
