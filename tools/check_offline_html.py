"""Fail if a built HTML page loads a script, stylesheet or font from the network.

Usage: python tools/check_offline_html.py _build/html
Links (<a href="https://...">) are fine; <script src>, <link href> (stylesheets, preloads, icons) and
CSS url(...) must point inside the build.
"""
import re
import sys
from pathlib import Path

REMOTE = re.compile(r"""(?:<script[^>]*\ssrc|<link[^>]*\shref)\s*=\s*["'](?:https?:)?//[^"']*""", re.I)
REMOTE_CSS = re.compile(r"""url\(\s*["']?(?:https?:)?//""", re.I)


def remote_loads(folder: Path) -> list:
    found = []
    for path in sorted(folder.rglob("*.html")):
        found += [f"{path}: {match}" for match in REMOTE.findall(path.read_text(errors="replace"))]
    for path in sorted(folder.rglob("*.css")):
        if REMOTE_CSS.search(path.read_text(errors="replace")):
            found.append(f"{path}: url(//...)")
    return found


def main(folder: str) -> int:
    pages = list(Path(folder).rglob("*.html"))
    if not pages:
        print(f"no HTML pages under {folder}", file=sys.stderr)
        return 1
    found = remote_loads(Path(folder))
    for line in found:
        print(line, file=sys.stderr)
    print(f"{len(pages)} pages checked: {'no' if not found else len(found)} network loads")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
