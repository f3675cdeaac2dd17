"""Watched objects: a ghost, or an object whose next read must be seen, has
its class's watched twin as its type; a read gives it its class back (see
durus.persistent.watched_class). Run in both modes like the whole suite."""

import copy
import pickle

from durus.btree import BNode4, BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import (GHOST, Persistent, PersistentObject, persistent_class, watch,
                              watched_class)
from durus.persistent_dict import PersistentDict
from durus.storage import MemoryStorage


class Item(Persistent):
    def __init__(self, n=0):
        self.n = n


class Fallback(Persistent):
    asked: list = []

    def __getattr__(self, name):
        Fallback.asked.append(name)
        return "default " + name


class Slotted(PersistentObject):
    __slots__ = ("a", "b")


registered: list = []


class Registering(type):
    def __new__(meta, name, bases, namespace):
        cls = super().__new__(meta, name, bases, namespace)
        registered.append(("meta", cls))
        return cls


class Registered(Persistent, metaclass=Registering):
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        registered.append(("subclass", cls))


def _stored(tmp_path, **objects):
    """A file whose root holds objects; return a new connection to it."""
    path = str(tmp_path / "w.durus")
    connection = Connection(FileStorage(path))
    connection.get_root().update(objects)
    connection.commit()
    connection.get_storage().close()
    return Connection(FileStorage(path))


def _ghost(connection, name):
    obj = connection.get_root()[name]
    obj._p_set_status_ghost()
    return obj


def test_a_ghost_is_watched_and_a_read_gives_its_class_back(tmp_path):
    connection = _stored(tmp_path, item=Item(5))
    item = _ghost(connection, "item")
    twin = watched_class(Item)
    assert type(item) is twin and item._p_status == GHOST and isinstance(item, Item)
    assert (twin.__name__, twin.__qualname__, twin.__module__) == (
        Item.__name__, Item.__qualname__, Item.__module__)
    assert item.__class__ is Item and persistent_class(item) is Item and item._p_is_ghost()
    assert item.n == 5 and type(item) is Item and item._p_is_saved()
    assert watched_class(Item) is twin  # made once
    item._p_status = GHOST  # however a ghost is made, it is watched
    assert type(item) is twin


def test_watch_and_the_twin_of_a_bare_base(tmp_path):
    connection = _stored(tmp_path, item=Item(1))
    item = connection.get_root()["item"]
    item.n
    watch(item)
    watch(item)
    assert type(item) is watched_class(Item) and item._p_is_saved()
    assert item.n == 1 and type(item) is Item


def test_a_class_with_getattr_answers_once_through_its_hook(tmp_path):
    connection = _stored(tmp_path, obj=Fallback())
    obj = _ghost(connection, "obj")
    Fallback.asked.clear()
    assert obj.missing == "default missing" and Fallback.asked == ["missing"]
    obj._p_set_status_ghost()
    assert obj.other == "default other" and Fallback.asked == ["missing", "other"]
    assert type(obj) is Fallback


def test_a_class_with_slots_only(tmp_path):
    slotted = Slotted()
    slotted.a = 1
    connection = _stored(tmp_path, obj=slotted)
    obj = _ghost(connection, "obj")
    assert type(obj) is watched_class(Slotted)
    assert obj.a == 1 and not hasattr(obj, "b") and type(obj) is Slotted


def test_the_twin_runs_no_metaclass_new_and_no_init_subclass(tmp_path):
    connection = _stored(tmp_path, obj=Registered())
    before = list(registered)
    obj = _ghost(connection, "obj")
    assert registered == before
    assert type(type(obj)) is Registering and obj.__class__ is Registered


def test_copies_and_pickles_of_ghosts_and_loaded_objects(tmp_path):
    connection = _stored(tmp_path, item=Item(7))
    for make_ghost in (True, False):
        item = connection.get_root()["item"]
        if make_ghost:
            item._p_set_status_ghost()
        else:
            item.n
        for clone in (copy.copy(item), pickle.loads(pickle.dumps(item))):
            assert type(clone) is Item and clone.n == 7


def test_a_watched_object_is_stored_under_its_class(tmp_path):
    connection = _stored(tmp_path, items=PersistentDict(a=Item(1)))
    items = connection.get_root()["items"]
    item = items["a"]  # a ghost, referenced by a state that is written again
    items._p_note_change()
    watch(items)
    connection.commit()
    connection.get_storage().close()
    again = Connection(FileStorage(str(tmp_path / "w.durus")))
    loaded = again.get_root()["items"]
    assert persistent_class(loaded) is PersistentDict
    assert persistent_class(loaded["a"]) is Item and loaded["a"].n == 1
    assert persistent_class(item) is Item


def test_durus_4_3_reads_what_watched_objects_wrote(tmp_path, run_peer):
    # Classes Durus 4.3 has: the peer cannot import this module.
    connection = _stored(tmp_path, items=PersistentDict(a=PersistentDict(n=1)))
    items = connection.get_root()["items"]
    items["a"]._p_set_status_ghost()
    items["b"] = 2
    assert type(items) is PersistentDict
    watch(items)
    items["c"] = 3  # written while watched
    connection.commit()
    connection.get_storage().close()
    out = run_peer("""
from durus.btree import BNode4, BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
root = Connection(FileStorage("w.durus", readonly=True)).get_root()
items = root["items"]
print(type(items).__name__, sorted(items.keys()), type(items["a"]).__name__, items["a"]["n"])
""")
    assert out.split() == ["PersistentDict", "['a',", "'b',", "'c']", "PersistentDict", "1"]


def test_a_file_storage_keeps_read_objects_unwatched_across_transactions(tmp_path):
    connection = _stored(tmp_path, item=Item(1))
    item = connection.get_root()["item"]
    item.n
    connection.abort()
    assert type(item) is Item  # no other client commits: no read needs to be seen


def test_where_others_commit_each_transaction_sees_its_first_read():
    connection = Connection(MemoryStorage())
    connection.get_root()["item"] = item = Item(1)
    connection.commit()
    assert type(item) is watched_class(Item)  # saved by the commit: watched
    item.n
    serial = connection.get_transaction_serial()
    assert type(item) is Item and item._p_serial == serial
    connection.abort()
    assert type(item) is watched_class(Item)
    item.n
    assert item._p_serial == serial + 1


def test_the_cache_keeps_what_this_transaction_touched(tmp_path):
    connection = _stored(tmp_path, items=PersistentDict((n, Item(n)) for n in range(50)))
    connection.set_cache_size(5)
    items = connection.get_root()["items"]
    touched = [items[n] for n in range(20)]
    for item in touched:
        item.n
    connection.abort()
    for item in touched[:10]:
        item.n  # unwatched from the last transaction: this read is not seen
    connection.shrink_cache()  # mid-transaction: none of them may be ghosted
    connection.shrink_cache()
    assert not any(item._p_is_ghost() for item in touched[:10])
    assert [item.n for item in touched[:10]] == list(range(10))


def test_the_cache_size_holds_with_a_working_set_larger_than_the_cache(tmp_path):
    size, count = 20, 200
    connection = _stored(tmp_path, items=PersistentDict((n, Item(n)) for n in range(count)))
    connection.set_cache_size(size)
    items = connection.get_root()["items"]
    for start in range(0, 10 * count, 37):
        for n in range(start, start + 60):
            assert items[n % count].n == n % count
        connection.commit()
        # Each commit looks at each held object once at most; in two, the
        # objects not read since are ghosts and let go of.
        loaded = sum(not items[n]._p_is_ghost() for n in range(count))
        assert loaded <= size + 2 * 60 + 2
    for _ in range(3):
        connection.commit()
    assert sum(not items[n]._p_is_ghost() for n in range(count)) <= size


def test_a_tree_whose_nodes_are_watched_grows_nodes_of_their_class(tmp_path):
    connection = _stored(tmp_path, tree=BTree(BNode4))
    tree = connection.get_root()["tree"]
    for n in range(200):
        watch(tree.root)
        tree.add(n, n)
    nodes, new = [tree.root], []
    while nodes:
        node = nodes.pop()
        if node._p_oid is None:  # made by a split or a growth: its type, before any read
            new.append(type(node))
        nodes.extend(node.nodes or ())
    assert set(new) == {BNode4} and len(new) > 20
    connection.commit()
    assert sorted(tree.keys()) == list(range(200))
