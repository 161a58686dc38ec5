#!/usr/bin/env bash
# Install Debian's chromium (/usr/bin/chromium), which tools/check_pages.py drives through playwright
# (a pinned package of requirements.txt). Never runs `playwright install`: no browser build is
# downloaded. Quick when chromium is there; needs root (apt-get) when it is not.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install_browser.sh: no /usr/bin/chromium; install Debian's chromium as root (apt-get install chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
