#!/usr/bin/env bash
# Retakes docs/ui.png: runs the browser test (headless Chromium over chromedriver against an
# in-process server on 127.0.0.1), which saves the page with a new token shown and two
# tokens listed. Needs Debian's chromium and chromium-driver.
#
#   bash scripts/ui_screenshot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEYGATE_SCREENSHOT=1 cargo test --test browser -- --nocapture
