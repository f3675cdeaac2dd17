#!/usr/bin/env bash
# Run a quick slice of the suite (core, server, interop; C accelerator) on
# every other CPython we support, each in its own venv (.venv-py3.X).
# Usage: scripts/test-other-pythons.sh [3.12 3.13 ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.12 3.13)
slice=(tests/test_persistent.py tests/test_connection.py tests/test_file_storage.py
       tests/test_shelf.py tests/test_btree.py tests/test_storage_server.py
       tests/test_client_storage.py tests/test_interop.py tests/test_file_storage2.py
       tests/test_storage_contract.py tests/test_relational.py)

find_python() {  # under pyenv, else on PATH (a pyenv shim on PATH may not run it)
    local pyenv_root=${PYENV_ROOT:-$HOME/.pyenv} found
    found=$(ls -d "$pyenv_root"/versions/"$1".*/bin/"python$1" 2>/dev/null | sort -V | tail -1)
    [ -n "$found" ] || found=$(command -v "python$1" 2>/dev/null) || return 1
    "$found" -c "" 2>/dev/null && echo "$found"
}

for version in "${versions[@]}"; do
    python=$(find_python "$version") || { echo "Python $version not found" >&2; exit 1; }
    venv="$root/.venv-py$version"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    # The accelerator must have been built for this version: otherwise the
    # slice would silently test the pure-Python fallback only.
    "$venv/bin/python" -c "import durus._persistent, durus._shelf, durus._btree, sys; print('testing on', sys.version.split()[0])"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${slice[@]}"
done
