"""Commit throughput and file size: this durus (fsync on/off), durus 4.3, ZODB.

Two workloads, each run in a fresh process per implementation:
  bulk:  100,000 small objects written in 100 commits; time and file size.
  small: 1,000 commits that each change one small object; commits/second.

Usage: python bench/commit_bench.py [--peer PYTHON] [--zodb PYTHON] [--json FILE]
Peers default to .venv-peer and .venv-zodb beside the repo (see bench/setup-venvs.sh);
a missing peer is left out of the table.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DURUS_WORKLOAD = r"""
import os, sys, time
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.persistent_list import PersistentList

class Item(Persistent):
    def __init__(self, n):
        self.n = n
        self.name = "item %d" % n

def open_storage(path):
    if sys.argv[3] == "nofsync":
        return FileStorage(path, fsync=False)
    return FileStorage(path)

path, workload = sys.argv[1], sys.argv[2]
connection = Connection(open_storage(path))
root = connection.get_root()
start = time.perf_counter()
if workload == "bulk":
    for c in range(100):
        root[c] = PersistentList(Item(c * 1000 + i) for i in range(1000))
        connection.commit()
else:
    root["counter"] = Item(0)
    connection.commit()
    start = time.perf_counter()
    counter = root["counter"]
    for i in range(1000):
        counter.n = i
        connection.commit()
print(time.perf_counter() - start, os.path.getsize(path))
"""

ZODB_WORKLOAD = r"""
import os, sys, time
import transaction
from ZODB import DB
from ZODB.FileStorage import FileStorage
from persistent import Persistent
from persistent.list import PersistentList

class Item(Persistent):
    def __init__(self, n):
        self.n = n
        self.name = "item %d" % n

path, workload = sys.argv[1], sys.argv[2]
db = DB(FileStorage(path))
connection = db.open()
root = connection.root()
start = time.perf_counter()
if workload == "bulk":
    for c in range(100):
        root[c] = PersistentList(Item(c * 1000 + i) for i in range(1000))
        transaction.commit()
else:
    root["counter"] = Item(0)
    transaction.commit()
    start = time.perf_counter()
    counter = root["counter"]
    for i in range(1000):
        counter.n = i
        transaction.commit()
print(time.perf_counter() - start, os.path.getsize(path))
"""


def run(python: str, code: str, workload: str, mode: str, pythonpath: str | None):
    """Return (seconds, file bytes) of one workload run in a new process."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        out = subprocess.run([python, "-c", code, os.path.join(tmp, "bench.db"), workload, mode],
                             cwd=tmp, env=env, check=True, capture_output=True, text=True)
        seconds, size = out.stdout.split()
        return float(seconds), int(size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default=str(ROOT / ".venv-peer" / "bin" / "python"))
    parser.add_argument("--zodb", default=str(ROOT / ".venv-zodb" / "bin" / "python"))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    contenders = [
        ("durus (this, fsync)", sys.executable, DURUS_WORKLOAD, "fsync", str(ROOT)),
        ("durus (this, fsync=False)", sys.executable, DURUS_WORKLOAD, "nofsync", str(ROOT)),
        ("durus 4.3 (no fsync)", args.peer, DURUS_WORKLOAD, "default", None),
        ("ZODB FileStorage (fsync)", args.zodb, ZODB_WORKLOAD, "fsync", None),
    ]
    results = {}
    print("%-28s %16s %12s %18s" % ("", "bulk 100k objs s", "file MB", "small commits/s"))
    for name, python, code, mode, path in contenders:
        if not os.path.exists(python):
            print("%-28s (not installed: %s)" % (name, python))
            continue
        bulk_seconds, bulk_size = run(python, code, "bulk", mode, path)
        small_seconds, _ = run(python, code, "small", mode, path)
        results[name] = {"bulk_seconds": bulk_seconds, "bulk_file_bytes": bulk_size,
                         "small_commits_per_second": 1000 / small_seconds}
        print("%-28s %16.2f %12.2f %18.0f" % (name, bulk_seconds, bulk_size / 1e6,
                                               1000 / small_seconds))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
