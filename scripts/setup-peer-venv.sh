#!/usr/bin/env bash
# Create the venv holding the real Durus 4.3, which the interop tests run as a peer.
# Usage: scripts/setup-peer-venv.sh [venv-dir]   (default: .venv-peer beside this repo's root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-${DURUS_PEER_VENV:-$root/.venv-peer}}
if [ -x "$venv/bin/python" ] && (cd / && "$venv/bin/python" -c "import durus; assert durus.__version__ == '4.3'") 2>/dev/null; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "durus==4.3"
(cd / && "$venv/bin/python" -c "import durus, durus._persistent; print('peer durus', durus.__version__, 'ready in $venv')")
