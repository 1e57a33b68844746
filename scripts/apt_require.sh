#!/usr/bin/env bash
# apt_require.sh LABEL PACKAGE...: install the Debian packages that are missing (as root), or say in one line how.
# Idempotent: when all are present it only checks. Used by install_data.sh (fonts, Fashion-MNIST) and
# install_test_tools.sh (the browser test's chromium).
set -euo pipefail
label=$1; shift
missing=()
for p in "$@"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "apt: all $# $label packages present"
  exit 0
fi
cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "apt: missing ${missing[*]}; run as root: sudo sh -c '$cmd'" >&2
  exit 1
fi
echo "apt: installing ${missing[*]}"
sh -c "$cmd" >/dev/null
