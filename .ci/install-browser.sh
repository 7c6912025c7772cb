#!/usr/bin/env bash
# Debian's Chromium for the Playwright browser tests (tests/e2e/test_webapp_browser.py).
# Playwright drives /usr/bin/chromium; its own browser download (`playwright install`) is never used.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
