"""Small FileStorage databases of Counters for the tests of FileStorage and
of its shelf format."""

import os

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent


class Counter(Persistent):
    """A persistent object holding a number n."""

    def __init__(self, n=0):
        self.n = n


def make_file(path, commits: int = 5) -> list:
    """Write a file of `commits` transactions after the root; return the file
    size after each commit (the transaction boundaries)."""
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    boundaries = [os.path.getsize(path)]
    for i in range(commits):
        root["c%d" % i] = Counter(i)
        connection.commit()
        boundaries.append(os.path.getsize(path))
    storage.close()
    return boundaries


def open_with_counters(path, count: int) -> tuple:
    """Open a FileStorage at path and commit root[i] = Counter(i) for i < count;
    return (storage, connection, root)."""
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    for i in range(count):
        root[i] = Counter(i)
    connection.commit()
    return storage, connection, root


def committed_keys(path, **options) -> list:
    """The sorted keys of the root of the file at path, opened with options."""
    storage = FileStorage(str(path), **options)
    try:
        return sorted(Connection(storage).get_root().keys())
    finally:
        storage.close()
