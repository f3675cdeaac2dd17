#!/usr/bin/env bash
# The whole test run (README's test command; CI runs it too). Installs what the
# tests need: the package with its test extra, the real Durus 4.3 in
# .venv-peer, PostgreSQL's server binaries. Type-checks the package (mypy),
# then runs the suite with the C accelerator and in pure Python, the
# accelerator's tests under AddressSanitizer, Durus 4.3's own unit tests
# against this package (both ways again), and a quick slice on the other
# supported Pythons.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m mypy durus  # type errors fail fast, before the long runs
scripts/setup-peer-venv.sh
scripts/setup-postgres.sh
scripts/setup-browser.sh
python3 -m pytest
DURUS_PURE_PYTHON=1 python3 -m pytest
scripts/asan-test.sh
python3 scripts/durus_suite/run.py
DURUS_PURE_PYTHON=1 python3 scripts/durus_suite/run.py
scripts/test-other-pythons.sh
