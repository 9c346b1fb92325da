#!/usr/bin/env bash
# Install Debian's Chromium for the Playwright UI tests (pip playwright drives it through
# executable_path; never `playwright install`, which downloads browsers). Idempotent.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [[ -x $CHROMIUM ]]; then
  echo "install_browser: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo '?'))"
  exit 0
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install_browser: need root or sudo to apt-get install chromium" >&2; exit 1; }
  SUDO=(sudo)
fi
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium fonts-liberation
echo "install_browser: $("$CHROMIUM" --version) installed in $(( $(date +%s) - start )) s"
