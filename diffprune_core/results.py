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
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import matplotlib

from .errors import InputError
from .fileio import write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PACKAGES = ("torch", "diffusers", "torch-pruning", "accelerate", "torch-fidelity")
DEFAULT_RUN = "default"

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


def write_metadata(folder, params: dict, seed: int | list, wall_time_s: float) -> dict:
    """Write ``metadata.json`` into ``folder``: parameters, seed, wall time, versions, git, and the files there."""
    import torch

    folder = Path(folder)
    metadata = {
        "parameters": params,
        "seed": seed,
        "wall_time_s": round(wall_time_s, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_commit(),
        "packages": package_versions(),
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
