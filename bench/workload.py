"""Benchmark phases, written once for every API (bench/api_*.py).

Usage: python workload.py API PHASE DB N [OPTIONS-JSON]
API is durus or zodb; prints one JSON object of measurements. The phases are
described in shootout.py.
"""

import importlib
import json
import os
import sys
import time
from collections import deque


def rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def write(api, db: str, n: int, options: dict) -> dict:
    """add (into a mapping), add to a BTree, update, small commits."""
    session = api.Session(db, options)
    root = session.root
    result = {}
    started = time.perf_counter()
    items = api.Mapping((i, api.Item(i)) for i in range(n))
    root["items"] = items
    session.commit()
    result["add"] = rate(n, started)
    started = time.perf_counter()
    tree = api.BTree()
    for i in range(n):
        tree[(i * 7919) % n] = api.Item(i)
    root["tree"] = tree
    session.commit()
    result["btree_add"] = rate(n, started)
    started = time.perf_counter()
    for item in items.values():
        item.n += 1
    session.commit()
    result["update"] = rate(n, started)
    result["small_commits"] = _small_commits(api, session, 1000)
    session.close()
    return result


def _small_commits(api, session, count: int) -> float:
    """Commits per second, each changing one small object."""
    session.root["counter"] = counter = api.Item(0)
    session.commit()
    started = time.perf_counter()
    for i in range(count):
        counter.n = i
        session.commit()
    return rate(count, started)


def small_commits(api, db: str, n: int, options: dict) -> dict:
    """n commits, each changing one small object."""
    session = api.Session(db, options)
    result = {"small_commits": _small_commits(api, session, n)}
    session.close()
    return result


def read_all(items) -> None:
    for item in items:
        item.n


def read(api, db: str, n: int, options: dict) -> dict:
    """cold read (this is a new process), warm read (ghosts), hot read, BTree
    lookup, then walks of half the BTree's keys (its nodes loaded by then)."""
    session = api.Session(db, dict(options, readonly=True))
    objects = list(session.root["items"].values())
    started = time.perf_counter()
    read_all(objects)
    result = {"cold_read": rate(n, started)}
    for item in objects:
        session.ghost(item)
    started = time.perf_counter()
    read_all(objects)
    result["warm_read"] = rate(n, started)
    rounds = []
    for _ in range(5):
        session.abort()  # a new transaction: each object's first touch in it
        started = time.perf_counter()
        read_all(objects)
        rounds.append(rate(n, started))
    result["hot_read"] = max(rounds)
    tree = session.root["tree"]
    started = time.perf_counter()
    for key in range(n):
        tree[key]
    result["btree_lookup"] = rate(n, started)
    started = time.perf_counter()
    for _ in range(5):
        deque(api.range_items(tree, n // 4, n - n // 4), maxlen=0)
    result["btree_range"] = rate(5 * (n - 2 * (n // 4)), started)
    return result


def walk(api, db: str, n: int, options: dict) -> dict:
    """In a new process, walk the BTree of n items (its nodes and every
    item): objects/second, and the requests a server client sent for it."""
    session = api.Session(db, dict(options, readonly=True))
    storage = session.storage
    before = getattr(storage, "requests", None)
    started = time.perf_counter()
    for item in session.root["tree"].values():
        item.n
    result = {"tree_walk": rate(n, started)}
    if before is not None:
        result["tree_walk_requests"] = storage.requests - before
    return result


def load_each(api, db: str, n: int, options: dict) -> dict:
    """Load the records of the n items one by one, in random order, through a
    storage of its own that has loaded nothing else: records/second (for
    APIs that open a bare storage)."""
    import random
    if not hasattr(api, "open_storage"):
        return {}
    oids = [item._p_oid for item in api.Session(db, dict(options, readonly=True)).root[
        "items"].values()]
    random.Random(1).shuffle(oids)
    storage = api.open_storage(db, dict(options, readonly=True))
    started = time.perf_counter()
    for oid in oids:
        storage.load(oid)
    return {"load_each": rate(n, started)}


def make_big(api, db: str, n: int, options: dict) -> dict:
    """A file of n small objects in 100 commits, packed if options say so;
    returns the seconds the commits took and the file's size."""
    session = api.Session(db, options)
    per_commit = n // 100
    started = time.perf_counter()
    for c in range(100):
        session.root[c] = api.List(api.Item(c * per_commit + i) for i in range(per_commit))
        session.commit()
    seconds = time.perf_counter() - started
    if options.get("pack"):
        session.pack()
    session.close()
    return {"seconds": seconds, "file_bytes": os.path.getsize(db) if os.path.exists(db) else None}


def _memory_bytes(field: str) -> int:
    """This process's VmRSS (resident now) or VmHWM (its peak), Linux only.
    Not getrusage's ru_maxrss: that keeps the peak of the parent process
    that exec'd this one."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def open_big(api, db: str, n: int, options: dict) -> dict:
    started = time.perf_counter()
    api.Session(db, {"readonly": True})
    seconds = time.perf_counter() - started
    return {"open_ms": seconds * 1000, "open_peak_mb": _memory_bytes("VmHWM") / 2**20}


def grown_read(api, db: str, n: int, options: dict) -> dict:
    """In a new process, open make_big's database (open_ms) and, unless
    options say open_only, read each of its n items (cold_read, objects/s):
    the peak RSS (peak_mb) and the bytes each loaded object added to it."""
    started = time.perf_counter()
    session = api.Session(db, dict(options, readonly=True))
    result = {"open_ms": (time.perf_counter() - started) * 1000}
    if options.get("open_only"):
        return result
    before = _memory_bytes("VmRSS")
    started = time.perf_counter()
    count = 0
    for c in range(100):
        for item in session.root[c]:
            item.n
            count += 1
    result["cold_read"] = rate(count, started)
    result["bytes_per_object"] = (_memory_bytes("VmRSS") - before) / count
    result["peak_mb"] = _memory_bytes("VmHWM") / 2**20
    return result


def grown_write(api, db: str, n: int, options: dict) -> dict:
    """On (a copy of) make_big's database: small commits per second, then
    the seconds a pack takes."""
    session = api.Session(db, options)
    result = {"commits": _small_commits(api, session, options.get("commits", 200))}
    started = time.perf_counter()
    session.pack()
    result["pack_s"] = time.perf_counter() - started
    session.close()
    return result


def client_commits(api, db: str, n: int, options: dict) -> dict:
    """n small commits through a server, started when the file options['go']
    appears; a file options['go'] + '.ready.PID' says this client is ready."""
    while True:  # Durus 4.3's client may find the root changed as it loads it
        try:
            session = api.Session(db, options)
            break
        except api.ConflictError:
            pass
    while True:  # the clients all add their counter to the root at once
        try:
            session.root["counter%d" % os.getpid()] = counter = api.Item(0)
            session.commit()
            break
        except api.ConflictError:
            session.abort()
    open("%s.ready.%d" % (options["go"], os.getpid()), "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(options["go"]):
        if time.monotonic() > deadline:
            raise SystemExit("no start signal (%s) after 120 s" % options["go"])
        time.sleep(0.001)
    started = time.time()
    for i in range(n):
        counter.n = i
        session.commit()
    return {"start": started, "end": time.time(), "count": n}


PHASES = {"write": write, "read": read, "walk": walk, "load_each": load_each, "small_commits": small_commits, "make_big": make_big,
          "open_big": open_big, "client_commits": client_commits,
          "grown_read": grown_read, "grown_write": grown_write}


def main():
    api = importlib.import_module("api_" + sys.argv[1])
    phase, db, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    options = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    print(json.dumps(PHASES[phase](api, db, n, options)))


if __name__ == "__main__":
    main()
