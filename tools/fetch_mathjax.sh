#!/usr/bin/env bash
# Put MathJax 3 (pinned) into book/_static/mathjax so that the built book renders math with no network.
# Needs npm once; the folder ignores itself in git. Usage: tools/fetch_mathjax.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.2.2
dest=book/_static/mathjax
if [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm install --prefix "$tmp" --no-save --no-audit --no-fund --loglevel=error "mathjax@$version"
es5="$tmp/node_modules/mathjax/es5"
rm -rf "$dest"
mkdir -p "$dest"
# SVG output needs no font files; the menu's accessibility tools (a11y, sre, ui) load on demand.
cp "$es5/tex-svg-full.js" "$dest/"
cp -r "$es5/a11y" "$es5/sre" "$es5/ui" "$dest/"
cp "$tmp/node_modules/mathjax/LICENSE" "$dest/"
printf '*\n' > "$dest/.gitignore"
echo "$version" > "$dest/VERSION"
echo "MathJax $version in $dest"
