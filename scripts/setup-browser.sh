#!/usr/bin/env bash
# Make sure Debian's Chromium (and its driver) is on the machine, for the
# `durus browse` tests, which drive it headless with Playwright: installs the
# chromium and chromium-driver packages when /usr/bin/chromium is missing
# (needs root, or sudo). Playwright's own browser downloads are never used.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
