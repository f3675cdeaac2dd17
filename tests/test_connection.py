"""Connection: root, get, commit/abort, cache behaviour, crawler, conflicts, tools."""

import gc

import pytest

from durus.connection import Connection, gen_every_instance, touch_every_reference
from durus.error import ReadConflictError
from durus.file_storage import FileStorage
from durus.persistent import Persistent, persistent_class
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.storage import MemoryStorage
from durus.utils import int8_to_str


class Item(Persistent):
    def __init__(self, n=0):
        self.n = n


class OtherRoot(Persistent):
    def __init__(self):
        self.made = True


def test_new_database_has_persistent_dict_root(tmp_path):
    connection = Connection(FileStorage(str(tmp_path / "a.durus")))
    root = connection.get_root()
    assert persistent_class(root) is PersistentDict and root._p_oid == int8_to_str(0)
    assert root._p_is_saved()


def test_connection_accepts_a_file_name(tmp_path):
    path = tmp_path / "b.durus"
    Connection(str(path)).get_root()["x"] = 1
    assert path.exists()


def test_connection_rejects_non_storage():
    with pytest.raises(TypeError):
        Connection(42)


def test_root_class_is_created_and_checked():
    storage = MemoryStorage()
    root = Connection(storage, root_class=OtherRoot).get_root()
    assert persistent_class(root) is OtherRoot and root.made
    assert persistent_class(Connection(storage, root_class=OtherRoot).get_root()) is OtherRoot
    with pytest.raises(TypeError):
        Connection(storage, root_class=PersistentDict)


def test_get_by_int_and_bytes_and_missing():
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    assert connection.get(0) is root and connection[int8_to_str(0)] is root
    assert connection.get(12345) is None
    with pytest.raises(TypeError):
        connection.get("0")


def test_commit_is_visible_to_new_connection_and_abort_reverts(tmp_path):
    path = str(tmp_path / "c.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["items"] = PersistentList([Item(i) for i in range(10)])
    connection.commit()
    root["items"][3].n = "three"
    root["scratch"] = Item()
    connection.abort()
    assert "scratch" not in root and root["items"][3].n == 3
    root["items"][4].n = "four"
    connection.commit()
    connection.get_storage().close()
    reopened = Connection(FileStorage(path)).get_root()
    assert [item.n for item in reopened["items"]] == [0, 1, 2, 3, "four", 5, 6, 7, 8, 9]


def test_new_objects_reached_only_through_new_objects_are_stored():
    connection = Connection(MemoryStorage())
    a, b, c = Item(1), Item(2), Item(3)
    a.next, b.next, c.next = b, c, a  # a cycle of new objects
    connection.get_root()["a"] = a
    connection.commit()
    assert all(x._p_is_saved() for x in (a, b, c))
    other = Connection(connection.get_storage()).get_root()["a"]
    assert other.next.next.next is other and other.next.next.n == 3


def test_object_of_another_connection_is_refused():
    first, second = Connection(MemoryStorage()), Connection(MemoryStorage())
    item = first.get_root()["x"] = Item()
    first.commit()
    second.get_root()["x"] = item
    with pytest.raises(ValueError, match="different connection"):
        second.commit()


def test_failed_commit_leaves_changes_pending_and_retry_works():
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    new = Item(1)
    new.bad = lambda: None  # cannot be pickled
    root["new"] = new
    with pytest.raises(Exception):
        connection.commit()
    assert new._p_oid is None and new._p_connection is None
    assert root._p_is_unsaved()
    del new.bad
    connection.commit()
    assert new._p_is_saved()
    assert Connection(connection.get_storage()).get_root()["new"].n == 1


def test_cache_ghosts_least_recently_used_beyond_target():
    connection = Connection(MemoryStorage(), cache_size=50)
    root = connection.get_root()
    root["items"] = [Item(i) for i in range(200)]
    root._p_note_change()
    connection.commit()
    assert connection.get_cache_count() > 50
    connection.abort()
    gc.collect()
    assert connection.get_cache_count() <= 50
    assert connection.get_cache_size() == 50
    items = root["items"]
    assert sum(item._p_is_ghost() for item in items) >= 150
    assert [item.n for item in items] == list(range(200))


def test_cache_never_ghosts_objects_touched_in_current_transaction():
    connection = Connection(MemoryStorage(), cache_size=10)
    root = connection.get_root()
    root["items"] = items = [Item(i) for i in range(100)]
    connection.commit()
    for item in items:
        item.n  # touch every item in this transaction
    connection.shrink_cache()
    assert not any(item._p_is_ghost() for item in items)


def test_set_cache_size_validates():
    connection = Connection(MemoryStorage())
    connection.set_cache_size(10)
    assert connection.get_cache_size() == 10
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            connection.set_cache_size(bad)
    with pytest.raises(TypeError):
        connection.set_cache_size("10")


def test_cache_size_may_be_any_positive_number_as_in_durus():
    connection = Connection(MemoryStorage(), cache_size=2.5)
    assert connection.get_cache_size() == 2.5
    root = connection.get_root()
    root["items"] = [Item(i) for i in range(10)]
    connection.commit()
    connection.abort()
    gc.collect()
    assert connection.get_cache_count() <= 2


def test_load_count_and_crawler(tmp_path):
    path = str(tmp_path / "d.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["items"] = PersistentList(Item(i) for i in range(300))
    connection.commit()
    connection.get_storage().close()
    fresh = Connection(FileStorage(path))
    before = fresh.get_load_count()
    crawled = list(fresh.get_crawler())
    assert len(crawled) == 302  # root, list, items
    assert all(obj._p_is_saved() for obj in crawled)
    assert fresh.get_load_count() - before == 301
    assert sorted(item.n for item in fresh.get_root()["items"]) == list(range(300))


def test_gen_every_instance_and_touch_every_reference():
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    root["a"], root["b"] = Item(1), Item(2)
    connection.commit()
    assert sorted(x.n for x in gen_every_instance(connection, Item)) == [1, 2]
    touch_every_reference(connection, "Item")
    assert root._p_is_unsaved() and root["a"]._p_is_unsaved()


def test_pack_removes_unreachable_objects(tmp_path):
    path = str(tmp_path / "e.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["keep"], root["drop"] = Item(1), Item(2)
    connection.commit()
    dropped = root["drop"]
    dropped_oid = dropped._p_oid
    del root["drop"]
    connection.commit()
    connection.pack()
    connection.abort()  # sync: the pack's removals reach the cache
    assert dropped._p_is_ghost()
    with pytest.raises(ReadConflictError):
        dropped.n
    assert root["keep"].n == 1
    connection.get_storage().close()
    assert Connection(FileStorage(path)).get(dropped_oid) is None


class Flusher:
    """Changes a persistent log when it is let go of (as a finalizer may)."""

    def __init__(self, log):
        self.log = log

    def __del__(self):
        self.log.entries = self.log.entries + ["flushed"]


def test_abort_forgets_changes_that_finalizers_make_while_it_runs(tmp_path):
    """Ghosting drops states; a finalizer in one changed another object, and
    abort() stopped half done with 'dictionary changed size during iteration'."""
    path = str(tmp_path / "db.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    log = root["log"] = Item(0)
    log.entries = []
    a, b = root["a"], root["b"] = Item(1), Item(2)
    connection.commit()
    a.helper = Flusher(log)
    a.n = b.n = "aborted"
    connection.abort()
    assert not connection.changed
    connection.commit()
    connection.get_storage().close()
    root = Connection(FileStorage(path)).get_root()
    assert (root["a"].n, root["b"].n, root["log"].entries) == (1, 2, [])


class Toucher:
    """Changes another persistent object when it is let go of (while active)."""

    active = False

    def __init__(self, target):
        self.target = target

    def __del__(self):
        if Toucher.active:
            self.target.touched = getattr(self.target, "touched", 0) + 1


def test_abort_returns_when_finalizers_keep_changing_each_others_objects(tmp_path):
    """Ghosting x lets go of a Toucher that changes y; ghosting y, one that
    changes x, which loads x again, with a new Toucher...: abort() went on
    for ever."""
    path = str(tmp_path / "db.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    x, y = root["x"], root["y"] = Item(1), Item(2)
    x.toucher, y.toucher = Toucher(y), Toucher(x)
    connection.commit()
    x.n, y.n = "aborted", "aborted"
    Toucher.active = True
    try:
        connection.abort()  # returns
    finally:
        Toucher.active = False
    connection.abort()
    assert (x.n, y.n) == (1, 2)
    connection.get_storage().close()
