"""Benchmark workload for ZODB 6 (FileStorage, or ZEO with --server): the same
phases as workload_durus.py, through ZODB's API.

Usage: python workload_zodb.py PHASE DB N [OPTIONS-JSON]
"""

import json
import os
import resource
import sys
import time

import transaction
from BTrees.OOBTree import OOBTree
from persistent import Persistent
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping
from ZODB import DB
from ZODB.FileStorage import FileStorage


class Item(Persistent):
    def __init__(self, n):
        self.n = n
        self.name = "item %d" % n


# Big enough for every object of a run, as durus's default cache is.
CACHE_SIZE = 100000


def open_db(db: str, options: dict, **storage_options):
    if options.get("server"):
        from ZEO.ClientStorage import ClientStorage
        host, port = options["server"].rsplit(":", 1)
        storage = ClientStorage((host, int(port)), wait_timeout=30)
    else:
        storage = FileStorage(db, **storage_options)
    return DB(storage, cache_size=CACHE_SIZE)


def rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def write(db: str, n: int, options: dict) -> dict:
    database = open_db(db, options)
    connection = database.open()
    root = connection.root()
    result = {}
    started = time.perf_counter()
    items = PersistentMapping((i, Item(i)) for i in range(n))
    root["items"] = items
    transaction.commit()
    result["add"] = rate(n, started)
    started = time.perf_counter()
    tree = OOBTree()
    for i in range(n):
        tree[(i * 7919) % n] = Item(i)
    root["tree"] = tree
    transaction.commit()
    result["btree_add"] = rate(n, started)
    started = time.perf_counter()
    for item in items.values():
        item.n += 1
    transaction.commit()
    result["update"] = rate(n, started)
    root["counter"] = counter = Item(0)
    transaction.commit()
    started = time.perf_counter()
    for i in range(1000):
        counter.n = i
        transaction.commit()
    result["small_commits"] = rate(1000, started)
    database.close()
    return result


def read_all(items) -> None:
    for item in items:
        item.n


def read(db: str, n: int, options: dict) -> dict:
    storage_options = {} if options.get("server") else {"read_only": True}
    database = open_db(db, options, **storage_options)
    connection = database.open()
    items = connection.root()["items"]
    objects = list(items.values())
    started = time.perf_counter()
    read_all(objects)
    result = {"cold_read": rate(n, started)}
    for item in objects:
        item._p_invalidate()
    started = time.perf_counter()
    read_all(objects)
    result["warm_read"] = rate(n, started)
    rounds = []
    for _ in range(5):
        transaction.abort()
        started = time.perf_counter()
        read_all(objects)
        rounds.append(rate(n, started))
    result["hot_read"] = max(rounds)
    tree = connection.root()["tree"]
    started = time.perf_counter()
    for key in range(n):
        tree[key]
    result["btree_lookup"] = rate(n, started)
    return result


def make_big(db: str, n: int, options: dict) -> dict:
    database = open_db(db, options)
    root = database.open().root()
    per_commit = n // 100
    for c in range(100):
        root[c] = PersistentList(Item(c * per_commit + i) for i in range(per_commit))
        transaction.commit()
    if options.get("pack"):
        database.pack()
    database.close()
    return {}


def open_big(db: str, n: int, options: dict) -> dict:
    started = time.perf_counter()
    database = DB(FileStorage(db, read_only=True), cache_size=CACHE_SIZE)
    database.open().root()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"open_ms": seconds * 1000, "open_peak_mb": peak}


def client_commits(db: str, n: int, options: dict) -> dict:
    database = open_db(db, options)
    connection = database.open()
    root = connection.root()
    for attempt in range(100):
        try:
            root["counter%d" % os.getpid()] = counter = Item(0)
            transaction.commit()
            break
        except Exception:  # a ConflictError on the shared root: retry
            transaction.abort()
    while not os.path.exists(options["go"]):
        time.sleep(0.001)
    started = time.time()
    for i in range(n):
        counter.n = i
        transaction.commit()
    return {"start": started, "end": time.time(), "count": n}


PHASES = {"write": write, "read": read, "make_big": make_big, "open_big": open_big,
          "client_commits": client_commits}


def main():
    phase, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    print(json.dumps(PHASES[phase](db, n, options)))


if __name__ == "__main__":
    main()
