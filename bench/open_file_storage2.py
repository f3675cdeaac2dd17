"""Time to open a DFS20 file (FileStorage2 + Connection + get_root): this durus vs durus 4.3.

One file of --objects objects is written (packed, so that most of them are in
its index record, then a few thousand more changed after it, which an open
scans); each contender opens it --rounds times in one fresh process of its
own Python, and the table gives the median milliseconds and the process's
peak memory.

Usage: python bench/open_file_storage2.py [--objects N] [--rounds R] [--peer PYTHON]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from shootout import PEER_PYTHON, ROOT

MAKE = r"""
import sys
from durus.connection import Connection
from durus.file_storage2 import FileStorage2
from durus.persistent_dict import PersistentDict
path, n = sys.argv[1], int(sys.argv[2])
connection = Connection(FileStorage2(path, fsync=False))
root = connection.get_root()
# A small root, so that get_root() loads little: what is timed is the storage.
for i in range(n):
    if i % 1000 == 0:
        group = root[i // 1000] = PersistentDict()
        connection.commit()
    group[i] = PersistentDict(n=i)
connection.commit()
connection.pack()
for i in range(0, n, 50):  # a tail of commits after the index
    root[i // 1000][i]["n"] = -i
    if i % 1000 == 950:
        connection.commit()
connection.commit()
connection.get_storage().close()
"""

OPEN = r"""
import json, resource, statistics, sys, time
from durus.connection import Connection
from durus.file_storage2 import FileStorage2
path, rounds = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(rounds):
    started = time.perf_counter()
    storage = FileStorage2(path, readonly=True)
    Connection(storage).get_root()
    times.append(time.perf_counter() - started)
    storage.close()
print(json.dumps({"ms": 1000 * statistics.median(times),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(python: str, code: str, *args, env: dict | None = None) -> str:
    # From a temporary directory, so that the peer does not import our durus.
    return subprocess.run([python, "-c", code, *map(str, args)], check=True, text=True,
                          capture_output=True, cwd=tempfile.gettempdir(),
                          env=dict(os.environ, **(env or {}))).stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--peer", default=PEER_PYTHON)
    args = parser.parse_args()
    ours = {"PYTHONPATH": str(ROOT)}
    contenders = [("durus (this)", sys.executable, ours),
                  ("durus (this, pure Python)", sys.executable,
                   dict(ours, DURUS_PURE_PYTHON="1")),
                  ("durus 4.3", args.peer, {})]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "open.durus")
        run(sys.executable, MAKE, path, args.objects, env=ours)
        print("%d objects, %.1f MB; median of %d opens"
              % (args.objects, os.path.getsize(path) / 1e6, args.rounds))
        print("%-28s %10s %14s" % ("", "open ms", "peak RSS MB"))
        for name, python, env in contenders:
            if not os.path.exists(python):
                print("%-28s (not installed: %s)" % (name, python))
                continue
            result = json.loads(run(python, OPEN, path, args.rounds, env=env))
            print("%-28s %10.1f %14.1f" % (name, result["ms"], result["peak_mb"]))


if __name__ == "__main__":
    main()
