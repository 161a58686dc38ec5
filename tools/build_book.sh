#!/usr/bin/env bash
# Build the book into _build/html: execute every notebook of _toc.yml on its defaults (cached in
# _build/.jupyter_cache, so an unchanged notebook is not run again), treat warnings as errors, and
# check that no page loads anything from the network. Jupyter's cache knows the notebooks only: when
# the library (its source or the versions of the packages it runs on: results.library_digest) or the
# shipped data changed since the last build, it is cleared, so that no page outlives the code that
# computed it.
# Usage: tools/build_book.sh [--all]   (--all: delete the cache and the HTML and run everything again)
# An unchanged book rebuilds in about 20 s: its pages are written again from the cached notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
export JUPYTER_PATH="$PWD/.venv/share/jupyter"  # the notebooks' python3 kernel is this environment's
export DIFFPRUNE_PROGRESS=0  # no progress bar in a page (diffprune_core.progress)
# glibc's malloc returns every freed block above its mmap threshold (at most 32 MB by default) to the system, so
# each forward of a large U-Net (LSUN at 256x256) faults its activations' pages in anew: a third of its time here.
# Freed blocks kept in the heap change no number, only times (chapter 8 says which setting timed it: metrics.allocator)
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736
digest=$( { .venv/bin/python -c "from diffprune_core.results import library_digest; print(library_digest())"
           cat data/*/manifest.json; } | sha256sum | cut -c1-16)
if [ "${1:-}" = "--all" ] || [ "$(cat _build/.library_digest 2>/dev/null)" != "$digest" ]; then
    .venv/bin/jupyter-book clean --all .
fi
mkdir -p _build && echo "$digest" > _build/.library_digest
tools/fetch_mathjax.sh
# --all: Sphinx writes every page again (the notebooks still come from the cache), so that a change to the
# book's CSS or templates alone reaches _build/html too (Sphinx copies static files only when a page is out of date)
.venv/bin/jupyter-book build . --all --warningiserror --keep-going
.venv/bin/python tools/check_offline_html.py _build/html
