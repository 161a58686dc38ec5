#!/usr/bin/env bash
# Build the book into _build/html: execute every notebook of _toc.yml on its defaults (cached in
# _build/.jupyter_cache, so an unchanged notebook is not run again), treat warnings as errors, and
# check that no page loads anything from the network.
# Usage: tools/build_book.sh [--all]   (--all: delete the cache and the HTML and run everything again)
set -euo pipefail
cd "$(dirname "$0")/.."
export JUPYTER_PATH="$PWD/.venv/share/jupyter"  # the notebooks' python3 kernel is this environment's
if [ "${1:-}" = "--all" ]; then
    .venv/bin/jupyter-book clean --all .
fi
tools/fetch_mathjax.sh
.venv/bin/jupyter-book build . --warningiserror --keep-going
.venv/bin/python tools/check_offline_html.py _build/html
