#!/usr/bin/env bash
# Set-up on a fresh machine: .venv/ with the pinned packages of requirements.txt and diffprune_core
# installed editable, MathJax for the book's pages (tools/fetch_mathjax.sh) and, as root, Debian's
# chromium for the browser check of the pages (tools/install_browser.sh; elsewhere its tests skip).
# Torch 2.14.1 and torchvision 0.29.1 come from the machine's local wheels (pip finds them there);
# never let pip resolve an unpinned torch. Re-running is quick: pip is skipped when
# requirements.txt has not changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.requirements.sha256
if ! sha256sum --status -c "$stamp" 2>/dev/null; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
    sha256sum requirements.txt pyproject.toml > "$stamp"
fi
tools/fetch_mathjax.sh
[ "$(id -u)" != 0 ] || tools/install_browser.sh
