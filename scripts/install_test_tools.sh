#!/usr/bin/env bash
# The browser test's tools (tests/test_browser.py): Debian's chromium and its driver. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/apt_require.sh browser-test chromium chromium-driver
