"""Side-by-side benchmark of this durus, durus 4.3 and ZODB 6, modelled on zodbshootout.

Every measurement runs in a fresh process of the contender's own Python, and
the table gives medians over --rounds rounds (objects/second unless noted):
  add, btree_add, update   N small objects added to a dict / a BTree, updated; one commit each
  small_commits            1,000 commits of one changed object each (transactions/s)
  cold_read                reading N objects in a new process
  warm_read                reading them again after making them ghosts
  hot_read                 reading them in memory, each first touched in a new transaction
  btree_lookup             looking up N keys of the BTree
  btree_range              walking the middle half of its keys in order, in memory (items/s)
  open_ms, open_peak_mb    opening a file of --big objects (unpacked and packed) in a new
                           process (the median of 5)
  server_*                 the same through each one's server (ZEO for ZODB), small
                           commits from 1 and 4 concurrent clients, and a cold walk of
                           the BTree (server_tree_walk, and the requests our client sent);
                           server_load_each: records loaded one by one in random order

Contenders: plain Python objects (the floor, where it applies); this durus with
the C accelerator (fsync on, and off) and pure Python; durus 4.3 (never fsyncs);
ZODB 6 FileStorage and ZEO (fsync every commit). Peers missing from .venv-peer /
.venv-zodb (see bench/setup-venvs.sh) are left out.

Usage: python bench/shootout.py [--objects N] [--rounds R] [--big N] [--json FILE]
"""

import argparse
import glob
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
PEER_PYTHON = str(ROOT / ".venv-peer" / "bin" / "python")
ZODB_PYTHON = str(ROOT / ".venv-zodb" / "bin" / "python")

PLAIN = r"""
import json, sys, time
class Item:
    def __init__(self, n):
        self.n = n
        self.name = "item %d" % n
def read_all(items):
    for item in items:
        item.n
def main(n):
    started = time.perf_counter()
    items = {i: Item(i) for i in range(n)}
    add = n / (time.perf_counter() - started)
    objects = list(items.values())
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        read_all(objects)
        rounds.append(n / (time.perf_counter() - started))
    print(json.dumps({"add": add, "hot_read": max(rounds)}))
main(int(sys.argv[1]))
"""


class Contender:
    """One implementation: how to run its workload and its server."""

    def __init__(self, name, python, api, env=None, options=None, server=None):
        self.name = name
        self.python = python
        self.api = api
        self.env = env or {}
        self.options = options or {}
        self.server = server  # (argv builder, env) or None

    def available(self) -> bool:
        return os.path.exists(self.python)

    def argv(self, phase: str, db: str, n: int, **options) -> list:
        """The command line of one workload.py phase, with our options and these."""
        return [self.python, str(BENCH / "workload.py"), self.api, phase, db, str(n),
                json.dumps(dict(self.options, **options))]

    def run(self, phase: str, db: str, n: int, **options) -> dict:
        return json.loads(_run(self.argv(phase, db, n, **options), self.env))


def child_env(extra: dict) -> dict:
    """os.environ for a contender's process: none of our caller's PYTHONPATH or
    DURUS_PURE_PYTHON (each contender sets its own), plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DURUS_PURE_PYTHON")}
    env.update(extra)
    return env


def _run(argv, extra_env) -> str:
    done = subprocess.run(argv, env=child_env(extra_env), cwd=tempfile.gettempdir(),
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError("%s failed:\n%s" % (argv[:4], done.stderr[-3000:]))
    return done.stdout.strip().splitlines()[-1]


def durus_server(python: str, *extra: str):
    """The argv builder of a durus server (`python -m durus -s`) on a port and file."""
    return lambda port, f: [python, "-m", "durus", "-s", "--port", str(port), "--file", f, *extra]


def contenders(peer_python: str, zodb_python: str) -> list:
    ours = {"PYTHONPATH": str(ROOT)}
    zodb_bin = Path(zodb_python).parent
    return [
        Contender("this (C)", sys.executable, "durus", ours,
                  server=(durus_server(sys.executable), ours)),
        Contender("this (C, no fsync)", sys.executable, "durus", ours, {"nofsync": True},
                  server=(durus_server(sys.executable, "--nofsync"), ours)),
        Contender("this (pure)", sys.executable, "durus",
                  dict(ours, DURUS_PURE_PYTHON="1")),
        Contender("durus 4.3", peer_python, "durus", server=(durus_server(peer_python), {})),
        Contender("ZODB 6", zodb_python, "zodb",
                  # runzeo through the venv's python: its #! line may name
                  # where the venv was made, not where it is now
                  server=(lambda port, f: [zodb_python, str(zodb_bin / "runzeo"),
                                           "-a", "127.0.0.1:%d" % port, "-f", f], {})),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen) -> bool:
    """Whether a server answers on the loopback port within 30 s (False at
    once if its process ends)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Server:
    """A contender's server process on a free loopback port, stopped on exit."""

    def __init__(self, contender: Contender, path: str):
        self.port = free_port()
        argv, env = contender.server
        self.process = subprocess.Popen(argv(self.port, path), env=child_env(env),
                                        cwd=tempfile.gettempdir(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port, self.process):
            self.stop()
            raise RuntimeError("%s server did not start" % contender.name)

    def address(self) -> str:
        return "127.0.0.1:%d" % self.port

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def file_round(contender: Contender, n: int, tmp: str) -> dict:
    db = os.path.join(tmp, "file.db")
    result = contender.run("write", db, n)
    result.update(contender.run("read", db, n))
    return result


def server_round(contender: Contender, n: int, tmp: str, clients: int = 4) -> dict:
    server = Server(contender, os.path.join(tmp, "server.db"))
    try:
        address = server.address()
        written = contender.run("write", "-", n, server=address)
        read = contender.run("read", "-", n, server=address)
        walked = contender.run("walk", "-", n, server=address)
        walked.update(contender.run("load_each", "-", n, server=address))
        result = {"server_" + key: value for key, value in {**written, **read, **walked}.items()
                  if key in ("add", "cold_read", "warm_read", "small_commits", "tree_walk",
                             "tree_walk_requests", "load_each")}
        result["server_small_commits_4"] = concurrent_commits(contender, clients, tmp,
                                                              server=address)
        return result
    finally:
        server.stop()


def concurrent_commits(contender: Contender, clients: int, tmp: str, count: int = 500,
                       **options) -> float:
    """Transactions/second of `clients` processes committing at once, each
    to the database the options name."""
    go = os.path.join(tmp, "go")
    argv = contender.argv("client_commits", "-", count, go=go, **options)
    env = child_env(contender.env)
    processes = [subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.PIPE, text=True)
                 for _ in range(clients)]
    _wait_ready(go, processes)
    Path(go).touch()
    outputs = [p.communicate()[0] for p in processes]
    for path in [go, *glob.glob(go + ".ready.*")]:
        os.unlink(path)
    if any(p.returncode for p in processes):
        raise RuntimeError("a client of %s failed" % contender.name)
    results = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sum(r["count"] for r in results) / span


def _wait_ready(go: str, processes: list) -> None:
    """Wait (up to 120 s) until every client process has connected and made
    its counter (its file go.ready.PID), or one of them has ended."""
    deadline = time.monotonic() + 120
    while (len(glob.glob(go + ".ready.*")) < len(processes) and time.monotonic() < deadline
           and all(p.poll() is None for p in processes)):
        time.sleep(0.01)


def big_file(contender: Contender, big: int, packed: bool, cache: Path = CACHE,
             option: str = "") -> str:
    """The path of a file of `big` objects written by the contender itself
    (make_big; option, if given, names the storage option that takes the
    path: sqlite), kept in the cache folder for next time."""
    kind = "packed" if packed else "unpacked"
    folder = cache / ("%s-%d-%s" % (re.sub(r"\W+", "-", contender.name), big, kind))
    db = str(folder / "big.db")
    if not (folder / "complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        contender.run("make_big", db, big, pack=packed, **({option: db} if option else {}))
        (folder / "complete").touch()
    return db


OPENS = 5  # new processes timed opening each big file


def open_round(contender: Contender, big: int) -> dict:
    """Open time and peak memory of a big file, unpacked and packed, each
    written by the contender itself (and kept in bench/.cache for next time)."""
    result = {}
    for packed in (False, True):
        kind = "packed" if packed else "unpacked"
        path = big_file(contender, big, packed)
        # A millisecond is at the mercy of the machine: the median of several.
        opened = median_rounds([contender.run("open_big", path, big) for _ in range(OPENS)])
        result["open_ms_" + kind] = opened["open_ms"]
        result["open_peak_mb_" + kind] = opened["open_peak_mb"]
    return result


def median_rounds(rounds: list) -> dict:
    keys = rounds[0].keys()
    return {key: statistics.median(r[key] for r in rounds) for key in keys}


LOWER_IS_BETTER = ("open_ms", "open_peak_mb", "server_tree_walk_requests")


def _ratio(ours, theirs, metric: str):
    """How many times better ours is than theirs (None if either is missing)."""
    if not ours or not theirs:
        return None
    return theirs / ours if metric.startswith(LOWER_IS_BETTER) else ours / theirs


def table_layout(results: dict) -> tuple:
    """(contender names, metrics in first-seen order, column width) of a results table."""
    names = list(results)
    metrics = []
    for values in results.values():
        metrics += [m for m in values if m not in metrics]
    return names, metrics, max(len(n) for n in names) + 2


def print_table(results: dict) -> None:
    """One row per metric; the ratios compare equal durability: this durus
    without fsync against durus 4.3 (which never fsyncs), and with fsync
    against ZODB (which fsyncs every commit)."""
    names, metrics, width = table_layout(results)
    print("%-28s" % "" + "".join(n.rjust(width) for n in names)
          + "vs durus 4.3".rjust(16) + "vs ZODB".rjust(12))
    ours_fsync = results.get("this (C)", {})
    ours_nofsync = results.get("this (C, no fsync)", {})
    for metric in metrics:
        row = "%-28s" % metric
        for name in names:
            value = results[name].get(metric)
            row += ("%.4g" % value if value is not None else "-").rjust(width)
        versus_durus = _ratio(ours_nofsync.get(metric, ours_fsync.get(metric)),
                              results.get("durus 4.3", {}).get(metric), metric)
        versus_zodb = _ratio(ours_fsync.get(metric), results.get("ZODB 6", {}).get(metric), metric)
        for ratio, column in ((versus_durus, 16), (versus_zodb, 12)):
            row += ("%.2fx" % ratio if ratio else "-").rjust(column)
        print(row)
    print("(ratios > 1: this durus is better. Against durus 4.3, which never fsyncs, this "
          "durus without fsync; against ZODB, which fsyncs every commit, with fsync)")


def main():
    parser = argparse.ArgumentParser(description="durus / durus 4.3 / ZODB benchmark")
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--big", type=int, default=1000000,
                        help="objects in the open-time file (0: skip)")
    parser.add_argument("--peer", default=PEER_PYTHON)
    parser.add_argument("--zodb", default=ZODB_PYTHON)
    parser.add_argument("--only", help="comma-separated contender names")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    plain = [json.loads(_run([sys.executable, "-c", PLAIN, str(args.objects)], {}))
             for _ in range(args.rounds)]
    results = {"plain Python": median_rounds(plain)}
    with tempfile.TemporaryDirectory() as tmp:
        for contender in contenders(args.peer, args.zodb):
            wanted = not args.only or contender.name in args.only.split(",")
            if not (contender.available() and wanted):
                continue
            rounds = []
            for r in range(args.rounds):
                round_dir = tempfile.mkdtemp(dir=tmp)
                measured = file_round(contender, args.objects, round_dir)
                if contender.server:
                    measured.update(server_round(contender, args.objects, round_dir))
                rounds.append(measured)
            results[contender.name] = median_rounds(rounds)
            if args.big and contender.name in ("this (C)", "durus 4.3", "ZODB 6"):
                results[contender.name].update(open_round(contender, args.big))
            print("measured", contender.name, file=sys.stderr)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
