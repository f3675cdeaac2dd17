"""Ctrl-C at any moment: a commit, a change, an undo or a sync stopped by a
KeyboardInterrupt fails as a whole; the connection, the index, the file and
the server's view stay consistent, and doing it again stores everything.

A KeyboardInterrupt once left the index ahead of the file's end (the next
commit overwrote a durable transaction), new objects UNSAVED outside the
changed set (their later changes were never stored), the free-oid generator
finished for good (new_oid() then spun forever), invalidations dropped
(stale reads, lost updates), a descriptor counted in use for ever.

Each test sweeps a KeyboardInterrupt over every point where CPython runs a
signal handler within the functions its operation passes (see interrupts).
"""

import os

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError
from durus.file import File
from durus.file_storage import FileStorage
from durus.persistent import ConnectionBase, ConnectionBase_py, Persistent
from durus.persistent_dict import PersistentDict
from durus.serialize import ObjectWriter
from durus.server_link import ServerLink
from durus.shelf import PositionIndex, Shelf
from durus.storage import MemoryStorage

from interrupts import InterruptAt, sweep
from server_processes import connect


# The functions a commit runs through, below the user's code.
COMMIT_PATH = [Connection.commit, Connection._store_changes, Connection._mark_saved,
               Connection._finish_forgetting, ObjectWriter.get_state,
               ObjectWriter.take_new_objects, FileStorage.end, FileStorage.new_oid,
               Shelf.append, Shelf.next_free_oid, Shelf.gen_free_oids,
               PositionIndex.update, PositionIndex._grow_for, File._call]
SYNC_PATH = [Connection.abort, Connection._sync, Connection._take_invalidations,
             Connection._handle_invalidations, Connection.commit, Connection._store_changes,
             ClientStorage.sync, ClientStorage.end, ServerLink.request, ServerLink.replied,
             ServerLink.receive_oids]


class Leaf(Persistent):
    def __init__(self, value):
        self.value = value


def fresh(path) -> None:
    for suffix in ("", ".pack", ".prepack", ".writer"):
        if os.path.exists(str(path) + suffix):
            os.unlink(str(path) + suffix)


def interrupted_commit(path, interrupt: InterruptAt, pack: bool) -> None:
    """Commit new and changed objects, interrupted; retry; change some again;
    reopen (as a writer: no descriptor kept its lock) and check every object."""
    fresh(path)
    storage = FileStorage(str(path), fsync=False)
    connection = Connection(storage)
    root = connection.get_root()
    tree = root["d"] = PersistentDict((k, Leaf(k)) for k in range(20))
    connection.commit()
    packer = storage.get_packer() if pack else None
    if packer is not None:
        next(packer)
    model = {k: k for k in range(20)}
    for k in range(20, 25):
        tree[k] = Leaf(k)
        model[k] = k
    for k in range(0, 20, 7):
        tree[k].value = model[k] = -k
    with interrupt:
        try:
            connection.commit()
        except KeyboardInterrupt:
            pass
    connection.commit()  # the retry
    for k in (3, 22):  # objects of the commit change again later
        tree[k].value = model[k] = "later %d" % k
    connection.commit()
    if packer is not None:
        for _ in packer:
            pass
    storage.close()
    storage = FileStorage(str(path))
    found = {k: leaf.value for k, leaf in Connection(storage).get_root()["d"].items()}
    storage.close()
    assert found == model, "interrupted at %s" % interrupt.where


@pytest.mark.parametrize("pack", [False, True], ids=["", "during a pack"])
def test_a_commit_interrupted_anywhere_fails_whole_and_the_retry_stores_all(
        tmp_path, pack, report):
    points = sweep(COMMIT_PATH, lambda interrupt: interrupted_commit(
        tmp_path / "db.durus", interrupt, pack))
    assert points > 100
    report("%d points of a commit interrupted, each retried and checked" % points)


def interrupted_undo(path, interrupt: InterruptAt) -> None:
    """A commit fails (an unpicklable attribute) and Ctrl-C stops the undoing
    of its oids: the next commit finishes it, and stores every object."""
    fresh(path)
    connection = Connection(FileStorage(str(path)))
    first = connection.get_root()["h"] = Leaf(Leaf(Leaf("last")))
    first.bad = lambda: 1
    with interrupt:
        with pytest.raises((KeyboardInterrupt, Exception)):
            connection.commit()
    del first.bad
    connection.commit()
    connection.get_storage().close()
    storage = FileStorage(str(path), readonly=True)
    assert Connection(storage).get_root()["h"].value.value.value == "last"
    storage.close()


def test_a_failed_commit_whose_undoing_is_interrupted_is_undone_later(tmp_path):
    assert sweep([Connection._finish_forgetting],
                 lambda interrupt: interrupted_undo(tmp_path / "db.durus", interrupt)) > 3


def interrupted_change(path, interrupt: InterruptAt) -> None:
    """Ctrl-C in obj.attr = value; the user does it again, and commits."""
    fresh(path)
    connection = Connection(FileStorage(str(path)))
    leaf = connection.get_root()["leaf"] = Leaf(1)
    connection.commit()
    with interrupt:
        try:
            leaf.value = 2
        except KeyboardInterrupt:
            pass
    leaf.value = 3
    connection.commit()
    connection.get_storage().close()
    storage = FileStorage(str(path), readonly=True)
    assert Connection(storage).get_root()["leaf"].value == 3
    storage.close()


def test_a_change_interrupted_as_it_is_noted_is_still_stored(tmp_path):
    """Between marking the object UNSAVED and noting it changed, Ctrl-C lost
    every later change to it."""
    assert sweep([Persistent._p_note_change, Connection.note_change,
                  Persistent._p_set_status_unsaved],
                 lambda interrupt: interrupted_change(tmp_path / "db.durus", interrupt)) >= 3


def interrupted_sync(server, interrupt: InterruptAt, key: str) -> None:
    """A holds x; B commits x += 10; A's abort (or commit) is interrupted;
    A then sees B's value, and its own increment lands on top of it."""
    a, b = connect(server), connect(server)
    a.get_root()[key] = Leaf(0)
    a.get_root()["other"] = Leaf(0)
    a.commit()
    b.abort()
    a.get_root()[key].value  # A has x loaded
    a.abort()
    b.get_root()[key].value += 10
    b.commit()
    a.get_root()["other"].value += 1
    with interrupt:
        try:
            a.commit()
            a.abort()
        except (KeyboardInterrupt, ConflictError):
            pass
    for _ in range(3):
        try:
            a.abort()
            x = a.get_root()[key]
            assert x.value == 10
            x.value += 1
            a.commit()
            break
        except ConflictError:
            continue
        except ConnectionError:  # the interrupted request broke it: start over
            a = connect(server)
    else:
        raise AssertionError("no commit in three tries")
    assert connect(server).get_root()[key].value == 11
    for connection in a, b:
        connection.get_storage().close()


def test_a_sync_interrupted_anywhere_loses_no_invalidation(servers, tmp_path, report):
    """Invalidations taken off the wire and then dropped left A reading a
    stale value, and its increment overwrote B's (a lost update)."""
    server = servers.ours("--file", str(tmp_path / "db.durus"))
    keys = ("x%d" % n for n in range(1_000_000))
    points = sweep(SYNC_PATH, lambda interrupt: interrupted_sync(server, interrupt, next(keys)))
    assert points > 30
    report("%d points of commits and syncs interrupted; no invalidation lost" % points)


@pytest.mark.skipif(ConnectionBase is not ConnectionBase_py,
                    reason="the held list is in C unless DURUS_PURE_PYTHON=1 or C is not built")
def test_held_list_bookkeeping_interrupted_anywhere_stays_usable():
    """In pure Python the held list is Python code, which a signal can stop."""

    def run(interrupt):
        connection = Connection(MemoryStorage(), cache_size=3)
        items = connection.get_root()["items"] = [Leaf(i) for i in range(10)]
        connection.commit()
        with interrupt:
            try:
                for _ in range(2):
                    for item in items:
                        item.value
                    connection.abort()
            except KeyboardInterrupt:
                pass
        for round_number in range(3):  # no KeyError, no endless shrink
            assert [item.value for item in items][5:] == list(range(5, 10))
            items[4].value = round_number
            connection.commit()
            connection.abort()
            assert items[4].value == round_number
        assert connection.held_count() <= len(items) + 1

    assert sweep([ConnectionBase.note_access, ConnectionBase._hold, ConnectionBase.release,
                  ConnectionBase.hold_loaded], run) > 10
