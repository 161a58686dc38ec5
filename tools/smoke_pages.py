"""Build some chapters on their smoke parameters and check their pages as a reader would, in minutes.

Usage: .venv/bin/python tools/smoke_pages.py NOTEBOOK [NOTEBOOK ...] [--out DIR] [--screenshots] [--defaults]
  e.g. tools/smoke_pages.py 05_table1_criteria 07_table5_threshold
Runs each notebook with papermill on notebooks/smoke_parameters.json (with --defaults on its default
parameters, for the full-size tables; results under DIR/results, never the book's own), builds a book of just those chapters (a plain root page instead of the introduction,
whose glue reads every chapter, and a stub page for each other chapter and book page, so that links to
them resolve) with warnings as errors, then tools/check_pages.py at a desktop and a
phone width with wide tables counted as problems. The whole book's version of this is the smoke build of
tests/test_notebooks.py; this is for working on a chapter.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import yaml

REPO = Path(__file__).resolve().parents[1]
WIDTHS = ("1280x900", "390x844")  # desktop, phone


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", help="chapter names, e.g. 05_table1_criteria")
    parser.add_argument("--out", type=Path, default=Path("/tmp/smoke_pages"), help="where to build (replaced)")
    parser.add_argument("--screenshots", action="store_true", help="also save full-page PNGs under OUT/shots")
    parser.add_argument("--defaults", action="store_true",
                        help="run on the book's default parameters instead (the full-size tables; runs not cached "
                             "under OUT/results are computed: minutes for chapters 1, 2, 8, 11, an hour for the rest)")
    args = parser.parse_args(argv)
    smoke = json.loads((REPO / "notebooks" / "smoke_parameters.json").read_text())
    unknown = [name for name in args.notebooks if name not in smoke]
    if unknown:
        parser.error(f"no smoke parameters for {unknown}: one of {', '.join(smoke)}")
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "notebooks").mkdir(parents=True)
    shutil.copytree(REPO / "book", args.out / "book")
    (args.out / "book" / "intro.md").write_text("# Smoke pages\n\nChapters built on their smoke parameters.\n")
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (args.out / "_config.yml").write_text(yaml.safe_dump(config))
    others = [f"notebooks/{name}" for name in sorted(smoke.keys() - set(args.notebooks))]
    others += [f"book/{path.stem}" for path in sorted((REPO / "book").glob("*.md"))
               if path.stem not in ("intro", "bibliography")]
    for name in others:  # a page per other chapter and page, so that links to it resolve
        title = name.split("/")[-1].replace("_", " ")  # words, which wrap on a phone
        (args.out / f"{name}.md").write_text(f"# {title}\n\n(Not built in this smoke book.)\n")
    toc = {"format": "jb-book", "root": "book/intro",
           "parts": [{"caption": "Chapters", "numbered": True,
                      "chapters": [{"file": f"notebooks/{name}"} for name in args.notebooks]},
                     {"caption": "The rest", "chapters": [{"file": "book/bibliography"},  # the citations
                                                          *[{"file": name} for name in others]]}]}
    (args.out / "_toc.yml").write_text(yaml.safe_dump(toc))
    os.environ |= {"DIFFPRUNE_RESULTS": str(args.out / "results"), "DIFFPRUNE_PROGRESS": "0",
                   "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}
    for name in args.notebooks:
        print(f"running {name} on its {'default' if args.defaults else 'smoke'} parameters", flush=True)
        executed = args.out / "notebooks" / f"{name}.ipynb"
        papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(executed),
                                   parameters={} if args.defaults else smoke[name],
                                   kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False)
        notebook = nbformat.read(executed, as_version=4)  # papermill's cell of smoke parameters: not a reader's
        for cell in notebook.cells:
            if "injected-parameters" in cell.metadata.get("tags", []):
                cell.metadata["tags"].append("remove-cell")
        nbformat.write(notebook, executed)
    build = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(args.out),
                            "--warningiserror", "--keep-going"], capture_output=True, text=True)
    if build.returncode:
        print(build.stdout[-4000:], build.stderr[-4000:], sep="\n")
        return 1
    failed = 0
    for width in WIDTHS:
        print(f"pages at {width}:", flush=True)
        shots = ["--screenshots", str(args.out / "shots" / width)] if args.screenshots else []
        failed |= subprocess.run([sys.executable, str(REPO / "tools" / "check_pages.py"), str(args.out / "_build" / "html"),
                                  "--viewport", width, "--fail-on-wide-tables", *shots]).returncode
    return failed


if __name__ == "__main__":
    sys.exit(main())
