"""Relational storages side by side, in one run on one machine: this durus on
SQLite and on PostgreSQL, and ZODB 6 with RelStorage (history-free) on the
same PostgreSQL cluster, which this script starts (tests/postgres_cluster.py).

Phases, medians over --rounds, each round on a new database (objects/second
unless noted):
  add, btree_add, update, small_commits   as in shootout.py, one process
  cold_read, warm_read, hot_read, btree_lookup   in a new process
  commits_1, commits_4, commits_16   transactions/s of 1, 4, 16 processes
                                     committing at once (one object each)
and, as the target for SQLite, commits_4 of 4 clients of this durus's own
file server. Every contender syncs every commit to disk.

Usage: python bench/relational_bench.py [--objects N] [--rounds R] [--json FILE]
(bench/setup-venvs.sh installs ZODB and RelStorage in .venv-zodb.)
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from shootout import (ROOT, ZODB_PYTHON, Contender, Server, concurrent_commits, durus_server,
                      median_rounds, table_layout)

sys.path.insert(0, str(ROOT / "tests"))
from postgres_cluster import Cluster  # noqa: E402  (a test helper, shared)

PROCESSES = (1, 4, 16)


def contenders(zodb_python: str) -> list:
    ours = {"PYTHONPATH": str(ROOT)}
    return [
        ("this, SQLite", Contender("this, SQLite", sys.executable, "durus", ours), "sqlite"),
        ("this, PostgreSQL", Contender("this, PostgreSQL", sys.executable, "durus", ours),
         "postgres"),
        ("ZODB + RelStorage", Contender("ZODB + RelStorage", zodb_python, "zodb"), "relstorage"),
    ]


def target(kind: str, cluster: Cluster, tmp: str, name: str) -> str:
    """A new, empty database of the kind: a file path or a DSN."""
    if kind == "sqlite":
        return os.path.join(tmp, name + ".sqlite")
    dsn = cluster.create_database(name)
    if kind == "relstorage":  # psycopg2 wants key=value
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
        return make_conninfo(**conninfo_to_dict(dsn))
    return dsn


def one_round(contender: Contender, kind: str, cluster: Cluster, n: int, tmp: str,
              number: int) -> dict:
    database = target(kind, cluster, tmp, "bench_%s_%d" % (kind, number))
    result = contender.run("write", "-", n, **{kind: database})
    result.update(contender.run("read", "-", n, **{kind: database}))
    for processes in PROCESSES:
        database = target(kind, cluster, tmp, "bench_%s_%d_%d" % (kind, number, processes))
        # Made before the processes start: RelStorage's processes race to
        # create its tables otherwise.
        contender.run("small_commits", "-", 1, **{kind: database})
        result["commits_%d" % processes] = concurrent_commits(
            contender, processes, tmp, count=200, **{kind: database})
    return result


def file_server_commits(tmp: str) -> float:
    """commits_4 through this durus's own server on a file (the SQLite target)."""
    ours = {"PYTHONPATH": str(ROOT)}
    contender = Contender("this, file server", sys.executable, "durus", ours,
                          server=(durus_server(sys.executable), ours))
    server = Server(contender, os.path.join(tmp, "server.durus"))
    try:
        return concurrent_commits(contender, 4, tmp, count=200, server=server.address())
    finally:
        server.stop()


def print_table(results: dict) -> None:
    names, metrics, width = table_layout(results)
    print("%-16s" % "" + "".join(name.rjust(width) for name in names)
          + "PG vs RelStorage".rjust(18))
    for metric in metrics:
        row = "%-16s" % metric
        for name in names:
            value = results[name].get(metric)
            row += ("%.4g" % value if value is not None else "-").rjust(width)
        ours = results.get("this, PostgreSQL", {}).get(metric)
        theirs = results.get("ZODB + RelStorage", {}).get(metric)
        row += ("%.2fx" % (ours / theirs) if ours and theirs else "-").rjust(18)
        print(row)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--zodb", default=ZODB_PYTHON)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    cluster = Cluster()
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, contender, kind in contenders(args.zodb):
                if not contender.available():
                    continue
                results[name] = median_rounds([
                    one_round(contender, kind, cluster, args.objects, tmp, number)
                    for number in range(args.rounds)])
                print("measured", name, file=sys.stderr)
            results["this, file server"] = {"commits_4": file_server_commits(tmp)}
    finally:
        cluster.destroy()
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
