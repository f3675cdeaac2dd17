"""A quick BTree-only side-by-side: the btree_add and btree_lookup phases of
workload.py, for this durus (C and pure), durus 4.3 and ZODB 6, interleaved
round by round so that the machine's load hits every contender alike.

Usage: python bench/btree_quick.py [--objects N] [--rounds R] [--only NAMES]
(--only: comma-separated contender names, as in shootout.py)
"""

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time

import shootout


def add(api, db: str, n: int) -> dict:
    """workload.write's btree_add: n items into a new BTree, one commit."""
    session = api.Session(db, {})
    started = time.perf_counter()
    tree = api.BTree()
    for i in range(n):
        tree[(i * 7919) % n] = api.Item(i)
    session.root["tree"] = tree
    session.commit()
    result = {"btree_add": n / (time.perf_counter() - started)}
    session.close()
    return result


def lookup(api, db: str, n: int) -> dict:
    """workload.read's btree_lookup, in a new process: open the file, then
    look up every key (opening is timed apart)."""
    started = time.perf_counter()
    session = api.Session(db, {"readonly": True})
    tree = session.root["tree"]
    opened = time.perf_counter()
    for key in range(n):
        tree[key]
    return {"btree_lookup": n / (time.perf_counter() - opened),
            "open_ms": (opened - started) * 1000}


PHASES = {"add": add, "lookup": lookup}


def child(api_name: str, phase: str, db: str, n: int) -> None:
    api = importlib.import_module("api_" + api_name)
    print(json.dumps(PHASES[phase](api, db, n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated contender names")
    args = parser.parse_args()
    chosen = [c for c in shootout.contenders(shootout.PEER_PYTHON, shootout.ZODB_PYTHON)
              if c.available() and (not args.only or c.name in args.only.split(","))
              and c.name != "this (C, no fsync)"]
    rounds: dict = {c.name: [] for c in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for contender in chosen:
                db = os.path.join(tmp, "tree.db")
                result = {}
                for phase in PHASES:
                    argv = [contender.python, os.path.abspath(__file__), "--child",
                            contender.api, phase, db, str(args.objects)]
                    result.update(json.loads(shootout._run(argv, contender.env)))
                for suffix in ("", ".index", ".lock", ".tmp"):
                    if os.path.exists(db + suffix):
                        os.unlink(db + suffix)
                rounds[contender.name].append(result)
    for name, results in rounds.items():
        medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print("%-14s" % name + "".join("  %s %9.4g" % item for item in medians.items()))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
