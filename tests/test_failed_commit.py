"""A commit that fails leaves the connection as it was before the call, so
that a retry writes every object the stored states reference.

A failed commit once kept the oids it had given to new objects met while
pickling, and the retry then stored references to objects it never wrote
(issue 10, defect 3). Here commits fail while pickling at several depths of
new objects, on another connection's object, on a full disk and on a
conflict; each is retried, the database reopened and every reference
followed (the pickling failures on every kind of storage).
"""

import errno
import os
import pickle

import pytest

from durus.connection import Connection
from durus.error import ConflictError
from durus.file_storage import FileStorage
from durus.persistent import Persistent, persistent_class

from server_processes import connect


class Node(Persistent):
    def __init__(self, value, child=None):
        self.value = value
        self.child = child


def chain(values: list):
    """New nodes, each the child of the one before; return the first."""
    first = None
    for value in reversed(values):
        first = Node(value, first)
    return first


def values_of(node) -> list:
    values = []
    while node is not None:
        values.append(node.value)
        node = node.child
    return values


def last_of(node):
    while node.child is not None:
        node = node.child
    return node


class Snapshot:
    """What a failed commit must leave as it was: the changed objects, the
    cache, and the oid and connection of every new object."""

    def __init__(self, connection: Connection, new_objects: list):
        self.connection = connection
        self.new_objects = new_objects
        self.state = self._take()

    def _take(self):
        connection = self.connection
        return (dict(connection.changed), connection.get_cache_count(),
                [(obj._p_oid, obj._p_connection) for obj in self.new_objects])

    def check(self) -> None:
        assert self._take() == self.state


def fail_then_retry(connection, make_state, break_it, fix_it, error=Exception):
    """Hang make_state()'s new objects off the root, have break_it(first) make the
    commit fail, check nothing changed, fix_it(first), and commit again."""
    first = make_state()
    root = connection.get_root()
    root["h"] = first
    new_objects = []
    node = first
    while node is not None:
        new_objects.append(node)
        node = node.__dict__.get("child")
    broken = break_it(first)
    snapshot = Snapshot(connection, new_objects)
    for _ in range(2):  # a failure twice over changes nothing either
        with pytest.raises(error):
            connection.commit()
        snapshot.check()
    fix_it(first, broken)
    connection.commit()


def reopened_values(database) -> list:
    """The values of the chain under root["h"], read afresh: database is a
    path of a FileStorage file, or a function that opens a storage."""
    storage = (database(readonly=True) if callable(database)
               else FileStorage(str(database), readonly=True))
    try:
        return values_of(Connection(storage).get_root()["h"])
    finally:
        storage.close()


@pytest.mark.parametrize("depth", [0, 1, 2, 4])
def test_retry_after_an_unpicklable_attribute_writes_every_referenced_object(any_database,
                                                                             depth):
    """The unpicklable attribute sits on the depth-th new node; deeper nodes got oids first."""
    connection = Connection(any_database())
    values = ["precious %d" % i for i in range(depth + 3)]

    def break_it(first):
        node = first
        for _ in range(depth):
            node = node.child
        node.bad = lambda: 1
        return node

    def fix_it(first, node):
        del node.bad

    fail_then_retry(connection, lambda: chain(values), break_it, fix_it,
                    (pickle.PicklingError, AttributeError, TypeError))
    connection.get_storage().close()
    assert reopened_values(any_database) == values


def test_the_reproduction_from_the_issue(any_database):
    connection = Connection(any_database())
    root = connection.get_root()
    holder, n = Node("holder"), Node("precious")
    holder.child = n
    holder.bad = lambda: 1
    root["h"] = holder
    with pytest.raises(Exception):
        connection.commit()
    del holder.bad
    connection.commit()
    connection.get_storage().close()
    assert reopened_values(any_database) == ["holder", "precious"]


class Fragile(Persistent):
    """Cannot be pickled while broken is set."""
    broken = True

    def __getstate__(self):
        if Fragile.broken:
            raise RuntimeError("cannot pickle this yet")
        return Persistent.__getstate__(self)


def test_retry_after_a_new_object_fails_stores_its_siblings(any_database):
    """Siblings met in the same state waited their turn when the failure came."""
    connection = Connection(any_database())
    root = connection.get_root()
    holder = Node("holder")
    holder.fragile, holder.sibling, holder.other = Fragile(), Node("sibling"), Node("other")
    root["h"] = holder
    Fragile.broken = True
    with pytest.raises(RuntimeError):
        connection.commit()
    assert [(obj._p_oid, obj._p_connection) for obj in
            (holder, holder.fragile, holder.sibling, holder.other)] == [(None, None)] * 4
    Fragile.broken = False
    connection.commit()
    connection.get_storage().close()
    storage = any_database(readonly=True)
    holder = Connection(storage).get_root()["h"]
    assert (holder.value, holder.sibling.value, holder.other.value) == \
        ("holder", "sibling", "other")
    assert persistent_class(holder.fragile) is Fragile and holder.fragile.__dict__ == {}
    storage.close()


def test_retry_after_referencing_another_connections_object(any_database, tmp_path):
    connection = Connection(any_database())
    other = Connection(FileStorage(str(tmp_path / "other.durus")))
    foreign = other.get_root()["f"] = Node("foreign")
    other.commit()
    values = ["a", "b", "c", "d"]

    def break_it(first):
        first.foreign = foreign  # pickled after first.child got its oid
        return first

    def fix_it(first, _):
        del first.foreign

    fail_then_retry(connection, lambda: chain(values), break_it, fix_it, ValueError)
    connection.get_storage().close()
    other.get_storage().close()
    assert reopened_values(any_database) == values


def test_retry_after_a_full_disk(disk):
    path = disk.directory / "db.durus"
    connection = Connection(FileStorage(str(path)))
    values = ["v%d" % i for i in range(50)]
    padding = "x" * 100_000

    def break_it(first):
        first.padding = [padding + str(i) for i in range(40)]  # 4 MB: over the disk's 3
        disk.fill()
        return first

    def fix_it(first, _):
        disk.free()

    fail_then_retry(connection, lambda: chain(values), break_it, fix_it, OSError)
    connection.get_storage().close()
    assert reopened_values(path) == values


def test_retry_after_a_failed_flush(tmp_path, monkeypatch):
    """An I/O error where the disk cannot be made to give one (EIO from fdatasync)."""
    path = tmp_path / "db.durus"
    connection = Connection(FileStorage(str(path)))
    values = ["v%d" % i for i in range(10)]
    real_fdatasync = os.fdatasync

    def failing_fdatasync(fd):
        raise OSError(errno.EIO, "Input/output error")

    def break_it(first):
        monkeypatch.setattr(os, "fdatasync", failing_fdatasync)

    def fix_it(first, _):
        monkeypatch.setattr(os, "fdatasync", real_fdatasync)

    fail_then_retry(connection, lambda: chain(values), break_it, fix_it, OSError)
    connection.get_storage().close()
    assert reopened_values(path) == values


def test_retry_after_a_conflict(servers, tmp_path):
    """A conflict ends the transaction: abort() forgets its changes, and the
    retry makes them again, with the same new objects, which all get stored."""
    path = tmp_path / "db.durus"
    server = servers.ours("--file", str(path))
    connection, rival = connect(server), connect(server)
    connection.get_root()["counter"] = Node(0)
    connection.commit()
    rival.abort()
    values = ["n%d" % i for i in range(5)]
    first = chain(values)
    new_objects = [first, first.child, last_of(first)]
    for attempt in range(2):
        counter = connection.get_root()["counter"]
        counter.value += 1
        counter.child = first
        rival.get_root()["counter"].value += 10
        rival.commit()
        with pytest.raises(ConflictError):
            connection.commit()
        assert [(obj._p_oid, obj._p_connection) for obj in new_objects] == [(None, None)] * 3
        connection.abort()
        rival.abort()
    counter = connection.get_root()["counter"]
    counter.value += 1
    counter.child = first
    connection.commit()
    server.quit()
    storage = FileStorage(str(path), readonly=True)
    counter = Connection(storage).get_root()["counter"]
    assert counter.value == 21 and values_of(counter.child) == values
    storage.close()
