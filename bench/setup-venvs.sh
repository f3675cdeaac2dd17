#!/usr/bin/env bash
# Create the venvs of the peers the benchmarks compare against:
# .venv-peer (durus==4.3) and .venv-zodb (ZODB 6, ZEO, and RelStorage on PostgreSQL).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup-peer-venv.sh"
if ! (cd / && "$root/.venv-zodb/bin/python" -c "import ZODB, ZEO, relstorage, psycopg2") 2>/dev/null; then
    [ -x "$root/.venv-zodb/bin/python" ] || python3 -m venv "$root/.venv-zodb"
    "$root/.venv-zodb/bin/python" -m pip install --quiet --disable-pip-version-check \
        "ZODB==6.4" "ZEO==6.2" "RelStorage[postgresql]==4.3.0" "psycopg2-binary==2.9.13"
fi
