"""Commit throughput and file size: this durus (fsync on/off), durus 4.3, ZODB.

Each workload runs in a fresh process of each implementation's own Python
(the phases of bench/workload.py):
  bulk:   100,000 small objects written in 100 commits; seconds and file size.
  small:  1,000 commits that each change one small object; commits/second.

Usage: python bench/commit_bench.py [--peer PYTHON] [--zodb PYTHON] [--json FILE]
Peers default to .venv-peer and .venv-zodb beside the repo (bench/setup-venvs.sh);
a missing peer is left out of the table.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from shootout import PEER_PYTHON, ROOT, ZODB_PYTHON, Contender

OBJECTS = 100000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default=PEER_PYTHON)
    parser.add_argument("--zodb", default=ZODB_PYTHON)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    ours = {"PYTHONPATH": str(ROOT)}
    contenders = [
        Contender("durus (this, fsync)", sys.executable, "durus", ours),
        Contender("durus (this, fsync=False)", sys.executable, "durus", ours, {"nofsync": True}),
        Contender("durus 4.3 (no fsync)", args.peer, "durus"),
        Contender("ZODB FileStorage (fsync)", args.zodb, "zodb"),
    ]
    results = {}
    print("%-28s %16s %12s %18s" % ("", "bulk 100k objs s", "file MB", "small commits/s"))
    for contender in contenders:
        if not contender.available():
            print("%-28s (not installed: %s)" % (contender.name, contender.python))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            bulk = contender.run("make_big", os.path.join(tmp, "bulk.db"), OBJECTS)
            small = contender.run("small_commits", os.path.join(tmp, "small.db"), 1000)
        results[contender.name] = dict(bulk, **small)
        print("%-28s %16.2f %12.2f %18.0f" % (contender.name, bulk["seconds"],
                                               bulk["file_bytes"] / 1e6, small["small_commits"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
