"""How cost grows: this durus, durus 4.3 and ZODB 6, and this durus on SQLite
and PostgreSQL, at growing database sizes and numbers of clients.

At each size N (make_big's database of N small objects in 100 commits; the
files are kept in bench/.cache for next time), each in a new process:
  open_ms            opening it unpacked: storage, connection, root
  cold_read          then reading every object (objects/s)
  peak_mb            that process's peak RSS
  bytes_per_object   the RSS each object read added (memory per cached object)
  commits            small commits on a copy of it (transactions/s)
  pack_s             then packing that copy (seconds)
  open_packed_ms     opening the packed copy
With K client processes committing at once (one small object each) through
each one's server (durus -s, Durus 4.3's, ZEO), or straight to the shared
SQLite file or PostgreSQL database (a throw-away cluster, tests/postgres_cluster.py):
  tps                committed transactions/s
"this (C, no fsync)" is measured for commits and tps only (its reads are
this (C)'s): against durus 4.3, which never fsyncs.

Prints a table, writes it as JSON and draws a PNG (bench/curves_plot.py).
Usage: python bench/curves.py [--quick] [--huge] [--sizes N,...] [--clients K,...]
       [--only NAME,...] [--json FILE] [--png FILE]
"""

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from curves_plot import PANELS, plot
from shootout import (CACHE, PEER_PYTHON, ROOT, ZODB_PYTHON, Contender, Server, big_file,
                      concurrent_commits, contenders)

SIZES = (10_000, 100_000, 1_000_000)
CLIENTS = (1, 2, 4, 8, 16)
QUICK_SIZES = (10_000, 100_000)
QUICK_CLIENTS = (1, 2, 4)


class System:
    """A contender and the kind of database it uses: file, sqlite or postgres."""

    def __init__(self, contender: Contender, kind: str = "file", reads: bool = True):
        self.contender = contender
        self.name = contender.name
        self.kind = kind
        self.reads = reads  # False: commits and clients only
        self.label = re.sub(r"\W+", "_", self.name).strip("_").lower()  # of its databases

    def run(self, phase: str, where: str, n: int, **options) -> dict:
        """A workload.py phase on the database at where (a path or a DSN)."""
        if self.kind == "file":
            return self.contender.run(phase, where, n, **options)
        return self.contender.run(phase, where if self.kind == "sqlite" else "-", n,
                                  **{self.kind: where}, **options)


def systems(peer_python: str, zodb_python: str) -> list:
    by_name = {contender.name: contender for contender in contenders(peer_python, zodb_python)}
    ours = {"PYTHONPATH": str(ROOT)}
    return [System(by_name["this (C)"]),
            System(by_name["this (C, no fsync)"], reads=False),
            System(by_name["durus 4.3"]),
            System(by_name["ZODB 6"]),
            System(Contender("this SQLite", sys.executable, "durus", ours), "sqlite"),
            System(Contender("this PostgreSQL", sys.executable, "durus", ours), "postgres")]


class Databases:
    """Where the systems' databases live: files in the cache and in a
    temporary folder, and databases in a PostgreSQL cluster started on first use."""

    def __init__(self, cache: Path, tmp: str):
        self.cache = cache
        self.tmp = Path(tmp)
        self._cluster = None

    def cluster(self):
        if self._cluster is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from postgres_cluster import Cluster  # a test helper, shared
            self._cluster = Cluster()
        return self._cluster

    def postgres_available(self) -> bool:
        try:
            self.cluster()
        except (ImportError, RuntimeError, OSError) as error:
            print("no PostgreSQL (%s): left out" % error, file=sys.stderr)
            return False
        return True

    def built(self, system: System, n: int) -> str:
        """make_big's database of n objects, unpacked, for reading only."""
        if system.kind == "postgres":
            dsn = self.cluster().create_database("grown_%d" % n)
            system.run("make_big", dsn, n)
            return dsn
        return big_file(system.contender, n, False, self.cache,
                        "sqlite" if system.kind == "sqlite" else "")

    def copy(self, system: System, where: str, label: str) -> str:
        """A copy of the database at where, to write to."""
        if system.kind == "postgres":
            with self.cluster().admin() as admin:
                admin.execute("CREATE DATABASE %s TEMPLATE %s"
                              % (label, where.rsplit("/", 1)[1]))
            return self.cluster().dsn(label)
        shutil.copytree(Path(where).parent, self.tmp / label)
        return str(self.tmp / label / "big.db")

    def fresh(self, system: System, label: str) -> str:
        """A new, empty database."""
        if system.kind == "postgres":
            return self.cluster().create_database(label)
        return str(self.tmp / (label + ".db"))

    def remove(self, system: System, where: str) -> None:
        if system.kind == "postgres":
            with self.cluster().admin() as admin:
                admin.execute("DROP DATABASE %s" % where.rsplit("/", 1)[1])
        else:
            shutil.rmtree(Path(where).parent)

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.destroy()


def size_point(system: System, n: int, databases: Databases) -> dict:
    """The measures of one system at one size."""
    where = databases.built(system, n)
    result = system.run("grown_read", where, n) if system.reads else {}
    copy = databases.copy(system, where, "grown_%s_%d" % (system.label, n))
    try:
        result.update(system.run("grown_write", copy, n))
        if system.reads:
            result["open_packed_ms"] = system.run("grown_read", copy, n,
                                                  open_only=True)["open_ms"]
    finally:
        databases.remove(system, copy)
    return result


def client_point(system: System, clients: int, databases: Databases, commits: int) -> float:
    """Transactions/s of `clients` processes committing at once, commits in all."""
    where = databases.fresh(system, "clients_%s_%d" % (system.label, clients))
    server = Server(system.contender, where) if system.kind == "file" else None
    options = {"server": server.address()} if server else {system.kind: where}
    try:
        # The root (and the tables) made before the clients start, not in a
        # race between them: Durus 4.3's clients would both make a root.
        system.contender.run("small_commits", "-", 1, **options)
        return concurrent_commits(system.contender, clients, str(databases.tmp),
                                  max(20, commits // clients), **options)
    finally:
        if server:
            server.stop()


def measure(system: System, sizes: list, clients: list, databases: Databases,
            commits: int) -> dict:
    """{measure: {size or clients: value}} of one system; a point that fails
    is reported on stderr and left out."""
    measures: dict = {}
    points = [(n, lambda n=n: size_point(system, n, databases)) for n in sizes]
    points += [(k, lambda k=k: {"tps": client_point(system, k, databases, commits)})
               for k in clients]
    for x, point in points:
        try:
            values = point()
        except RuntimeError as error:
            print("%s at %d failed: %s" % (system.name, x, error), file=sys.stderr)
            continue
        for key, value in values.items():
            measures.setdefault(key, {})[str(x)] = value
        print("measured %s at %d" % (system.name, x), file=sys.stderr)
    return measures


def print_table(results: dict) -> None:
    """One row per measure and size (or number of clients), one column per system."""
    names = list(results["systems"])
    width = max(len(name) for name in names) + 2
    print("%-34s" % "" + "".join(name.rjust(width) for name in names))
    for measure, title, _ in PANELS:
        xs = results["clients"] if measure == "tps" else results["sizes"]
        for x in xs:
            row = "%-34s" % ("%s @ %s" % (measure, "{:,}".format(x)))
            for name in names:
                value = results["systems"][name].get(measure, {}).get(str(x))
                row += ("%.4g" % value if value is not None else "-").rjust(width)
            print(row)


def numbers(text: str) -> list:
    return [int(part.replace("_", "")) for part in text.split(",")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="sizes %s, clients %s" % (QUICK_SIZES, QUICK_CLIENTS))
    parser.add_argument("--huge", action="store_true", help="add 10,000,000 objects (long)")
    parser.add_argument("--sizes", type=numbers, help="comma-separated database sizes")
    parser.add_argument("--clients", type=numbers, help="comma-separated client counts")
    parser.add_argument("--commits", type=int, default=800,
                        help="commits of each client count, shared by its clients")
    parser.add_argument("--only", help="comma-separated system names")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where built files are kept")
    parser.add_argument("--peer", default=PEER_PYTHON)
    parser.add_argument("--zodb", default=ZODB_PYTHON)
    parser.add_argument("--json", default="curves.json", help="write the results here")
    parser.add_argument("--png", default="curves.png", help="draw the plot here")
    args = parser.parse_args()
    sizes = args.sizes or list(QUICK_SIZES if args.quick else SIZES)
    sizes += [10_000_000] if args.huge else []
    clients = args.clients or list(QUICK_CLIENTS if args.quick else CLIENTS)
    results = {"sizes": sizes, "clients": clients, "systems": {}}
    with tempfile.TemporaryDirectory() as tmp:
        databases = Databases(args.cache, tmp)
        try:
            for system in systems(args.peer, args.zodb):
                wanted = not args.only or system.name in args.only.split(",")
                if not (wanted and system.contender.available()) or (
                        system.kind == "postgres" and not databases.postgres_available()):
                    continue
                results["systems"][system.name] = measure(system, sizes, clients, databases,
                                                          args.commits)
                Path(args.json).write_text(json.dumps(results, indent=2))
        finally:
            databases.close()
    print_table(results)
    plot(results, args.png)


if __name__ == "__main__":
    main()
