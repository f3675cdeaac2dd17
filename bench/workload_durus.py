"""Benchmark workload for the Durus API: run by this durus and by durus 4.3 alike.

Usage: python workload_durus.py PHASE DB N [--server HOST:PORT] [--nofsync]
Prints one JSON object of measurements. Phases are described in shootout.py.
"""

import json
import os
import resource
import sys
import time

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList


class Item(Persistent):
    def __init__(self, n):
        self.n = n
        self.name = "item %d" % n


def open_connection(db: str, options: dict, **storage_options) -> Connection:
    if options.get("server"):
        from durus.client_storage import ClientStorage
        host, port = options["server"].rsplit(":", 1)
        return Connection(ClientStorage(host=host, port=int(port)))
    if options.get("nofsync"):
        storage_options["fsync"] = False
    return Connection(FileStorage(db, **storage_options))


def rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def write(db: str, n: int, options: dict) -> dict:
    """add (into a PersistentDict), add to a BTree, update, small commits."""
    connection = open_connection(db, options)
    root = connection.get_root()
    result = {}
    started = time.perf_counter()
    items = PersistentDict((i, Item(i)) for i in range(n))
    root["items"] = items
    connection.commit()
    result["add"] = rate(n, started)
    started = time.perf_counter()
    tree = BTree()
    for i in range(n):
        tree[(i * 7919) % n] = Item(i)
    root["tree"] = tree
    connection.commit()
    result["btree_add"] = rate(n, started)
    started = time.perf_counter()
    for item in items.values():
        item.n += 1
    connection.commit()
    result["update"] = rate(n, started)
    result["small_commits"] = small_commits(connection, 1000)
    return result


def small_commits(connection: Connection, count: int) -> float:
    """Commits per second, each changing one object."""
    root = connection.get_root()
    root["counter"] = counter = Item(0)
    connection.commit()
    started = time.perf_counter()
    for i in range(count):
        counter.n = i
        connection.commit()
    return rate(count, started)


def read_all(items) -> None:
    for item in items:
        item.n


def read(db: str, n: int, options: dict) -> dict:
    """cold read (this is a new process), warm read (ghosts), hot read, BTree lookup."""
    connection = open_connection(db, options, **({} if options.get("server") else {"readonly": True}))
    items = connection.get_root()["items"]
    objects = list(items.values())
    started = time.perf_counter()
    read_all(objects)
    result = {"cold_read": rate(n, started)}
    for item in objects:
        item._p_set_status_ghost()
    started = time.perf_counter()
    read_all(objects)
    result["warm_read"] = rate(n, started)
    rounds = []
    for _ in range(5):
        connection.abort()  # a new transaction: each object's first touch in it
        started = time.perf_counter()
        read_all(objects)
        rounds.append(rate(n, started))
    result["hot_read"] = max(rounds)
    tree = connection.get_root()["tree"]
    started = time.perf_counter()
    for key in range(n):
        tree[key]
    result["btree_lookup"] = rate(n, started)
    return result


def make_big(db: str, n: int, options: dict) -> dict:
    """A file of n small objects in 100 commits; pack it if options say so."""
    connection = open_connection(db, options)
    root = connection.get_root()
    per_commit = n // 100
    for c in range(100):
        root[c] = PersistentList(Item(c * per_commit + i) for i in range(per_commit))
        connection.commit()
    if options.get("pack"):
        connection.pack()
    return {}


def open_big(db: str, n: int, options: dict) -> dict:
    started = time.perf_counter()
    connection = Connection(FileStorage(db, readonly=True))
    connection.get_root()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"open_ms": seconds * 1000, "open_peak_mb": peak}


def client_commits(db: str, n: int, options: dict) -> dict:
    """Small commits through a server, started when the file options['go'] appears."""
    from durus.error import ConflictError
    connection = open_connection(db, options)
    root = connection.get_root()
    while True:  # the clients all add their counter to the root at once
        try:
            root["counter%d" % os.getpid()] = counter = Item(0)
            connection.commit()
            break
        except ConflictError:
            connection.abort()
    while not os.path.exists(options["go"]):
        time.sleep(0.001)
    started = time.time()
    for i in range(n):
        counter.n = i
        connection.commit()
    return {"start": started, "end": time.time(), "count": n}


PHASES = {"write": write, "read": read, "make_big": make_big, "open_big": open_big,
          "client_commits": client_commits}


def main():
    phase, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    print(json.dumps(PHASES[phase](db, n, options)))


if __name__ == "__main__":
    main()
