"""A commit stopped at any line of its path (Ctrl-C, or any exception a
signal handler raises) fails as a whole: the connection, the index and the
file stay as they were, and the retry stores every object.

A KeyboardInterrupt once left the index ahead of the file's end (the next
commit overwrote a durable transaction), new objects UNSAVED outside the
changed set (their later changes were never stored), or the free-oid
generator finished for good (new_oid() then spun forever). Here a trace
function raises KeyboardInterrupt at every line of the functions a commit
runs, as a signal handler would, once per run, while a pack may be underway.
"""

import inspect
import os
import sys

import pytest

from durus.connection import Connection
from durus.file import File
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.persistent_dict import PersistentDict
from durus.serialize import ObjectWriter
from durus.shelf import PositionIndex, Shelf

# The functions a commit runs through, below the user's code.
COMMIT_PATH = [Connection.commit, Connection._store_changes, Connection._mark_saved,
               ObjectWriter._reference,
               ObjectWriter.take_new_objects, FileStorage.end, FileStorage.new_oid,
               Shelf.append, Shelf.next_free_oid, Shelf.gen_free_oids,
               PositionIndex.update, PositionIndex._grow_for, File._call]


class Leaf(Persistent):
    def __init__(self, value):
        self.value = value


def lines_of(function) -> list:
    lines, first = inspect.getsourcelines(function)
    return [(inspect.getsourcefile(function), first + i) for i in range(1, len(lines))]


class InterruptAt:
    """Raise KeyboardInterrupt the first time (file, line) is about to run."""

    def __init__(self, place):
        self.place = place
        self.fired = False

    def __enter__(self):
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename == self.place[0] else None

    def _local(self, frame, event, arg):
        if not self.fired and event == "line" and frame.f_lineno == self.place[1]:
            self.fired = True
            raise KeyboardInterrupt("at line %d" % self.place[1])
        return self._local


def run_interrupted_commit(path, place, pack: bool) -> bool:
    """Commit new and changed objects, interrupted at place; retry; reopen
    and check every object. Return whether the interrupt fired."""
    for suffix in ("", ".pack", ".prepack", ".writer"):
        if os.path.exists(str(path) + suffix):
            os.unlink(str(path) + suffix)
    storage = FileStorage(str(path), fsync=False)
    connection = Connection(storage)
    root = connection.get_root()
    tree = root["d"] = PersistentDict((k, Leaf(k)) for k in range(60))
    connection.commit()
    packer = storage.get_packer() if pack else None
    if packer is not None:
        next(packer)
    model = {k: k for k in range(60)}
    for k in range(60, 80):
        tree[k] = Leaf(k)
        model[k] = k
    for k in range(0, 60, 7):
        tree[k].value = model[k] = -k
    with InterruptAt(place) as interrupt:
        try:
            connection.commit()
        except KeyboardInterrupt:
            pass
    connection.commit()  # the retry
    for k in (3, 70):  # objects of the commit change again later
        tree[k].value = model[k] = "later %d" % k
    connection.commit()
    if packer is not None:
        for _ in packer:
            pass
    storage.close()
    storage = FileStorage(str(path), readonly=True)
    found = {k: leaf.value for k, leaf in Connection(storage).get_root()["d"].items()}
    storage.close()
    assert found == model, "interrupted at %s:%d" % place
    return interrupt.fired


@pytest.mark.parametrize("pack", [False, True], ids=["", "during a pack"])
def test_a_commit_interrupted_at_any_line_fails_whole_and_the_retry_stores_all(tmp_path, pack):
    for function in COMMIT_PATH:
        fired = [run_interrupted_commit(tmp_path / "db.durus", place, pack)
                 for place in lines_of(function)]
        assert any(fired), "%s never ran" % function.__qualname__
