#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl) are on the machine,
# for the tests' throw-away clusters: installs Debian's postgresql package when
# they are missing (needs root, or sudo). Starts no server.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq postgresql >/dev/null
# Debian's package starts a cluster of its own; the tests need none.
$sudo service postgresql stop >/dev/null 2>&1 || true
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
