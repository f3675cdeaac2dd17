"""The C accelerators: the switch that binds them, parity with their
pure-Python twins (compared directly, in one process), no leaks."""

import gc
import importlib.util
import random
import struct
import sys
import weakref
from array import array
from types import SimpleNamespace

import pytest

import durus.btree
import durus.persistent
import durus.shelf
from durus.accelerator import SWITCH
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import (Persistent, PersistentBase, PersistentObject, _getattribute,
                              _setattribute, persistent_class, watched_class)
from durus.storage import MemoryStorage

EXTENSIONS = ("durus._persistent", "durus._shelf", "durus._btree")
BUILT = all(importlib.util.find_spec(name) is not None for name in EXTENSIONS)
needs_c = pytest.mark.skipif(not BUILT, reason="the C accelerators are not built")


def c_extension(name: str):
    """The C extension module called name; the test is skipped if it is not built."""
    return pytest.importorskip(name, reason="the C accelerator %s is not built" % name)


class Node(Persistent):
    def __init__(self, other=None):
        self.other = other


# Imports the accelerated modules with the extensions named in argv left
# unimportable (as if their build had failed), and prints which versions each
# module bound (C or py), then each warning, or the error the import raised.
PROBE = """
import sys, warnings
for name in sys.argv[1:]:
    sys.modules[name] = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        import durus.persistent as p, durus.shelf as s, durus.btree as b, durus.connection
    except (ImportError, ValueError) as error:
        print("%s: %s" % (type(error).__name__, error))
        raise SystemExit
print(*["py" if bound is python else "C" for bound, python in [
    (p.PersistentBase, p.PersistentBase_py), (p.ConnectionBase, p.ConnectionBase_py),
    (p.cached_or_ghost, p.cached_or_ghost_py), (p._setattribute, p._setattribute_py),
    (s.scan_buffer, s.scan_buffer_py), (s.assign_positions, s.assign_positions_py),
    (b._search, b._search_py)]])
for warning in caught:
    print("%s: %s" % (warning.category.__name__, warning.message))
"""


@pytest.fixture
def probe(run_ours, monkeypatch):
    """probe(setting, *blocked): PROBE's lines, run with DURUS_PURE_PYTHON set to
    setting (None: unset) and the extensions blocked unimportable."""
    def run(setting, *blocked):
        if setting is None:
            monkeypatch.delenv(SWITCH, raising=False)
        else:
            monkeypatch.setenv(SWITCH, setting)
        return run_ours(PROBE, *blocked).splitlines()
    return run


def test_switch_1_forces_python_without_a_warning(probe):
    assert probe("1") == ["py " * 6 + "py"]


@needs_c
def test_switch_0_binds_c(probe):
    assert probe("0") == ["C " * 6 + "C"]


@needs_c
@pytest.mark.parametrize("setting", [None, ""])
def test_switch_unset_binds_c_where_built(probe, setting):
    assert probe(setting) == ["C " * 6 + "C"]


def test_switch_unset_without_c_warns_once_and_falls_back(probe):
    bound, *warnings = probe(None, *EXTENSIONS)
    assert bound == "py " * 6 + "py"
    assert len(warnings) == 1 and warnings[0].startswith("RuntimeWarning: durus: the C accelerator")
    assert "pure-Python" in warnings[0] and "build_ext --inplace" in warnings[0]


@needs_c
def test_switch_unset_falls_back_per_extension(probe):
    bound, *warnings = probe(None, "durus._shelf")
    assert bound == "C C C C py py C"
    assert len(warnings) == 1 and "durus._shelf is not built" in warnings[0]


def test_switch_0_without_c_is_an_import_error(probe):
    error, = probe("0", "durus._persistent")
    assert error.startswith("ImportError: DURUS_PURE_PYTHON=0 requires the C accelerator "
                            "durus._persistent, which is not built")
    assert "python3 setup.py build_ext --inplace" in error and "pip" in error


@pytest.mark.parametrize("setting", ["yes", "true", "2", " 1"])
def test_switch_refuses_other_values(probe, setting):
    assert probe(setting) == ["ValueError: DURUS_PURE_PYTHON must be unset, empty, '0' "
                              "(require C) or '1' (pure Python), not %r" % setting]


def test_persistent_classes_are_built_on_the_bound_base():
    assert PersistentObject.__bases__ == (PersistentBase,)


def test_unpersisted_cycles_are_collected():
    a, b = Node(), Node()
    a.other, b.other = b, a
    probe = weakref.ref(a)
    del a, b
    gc.collect()
    assert probe() is None


def test_cycles_through_stored_objects_and_connection_are_collected():
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    a = root["a"] = Node()
    a.other = Node(a)
    connection.commit()
    probe = weakref.ref(a)
    del root, a
    connection = None
    gc.collect()
    assert probe() is None


def test_bypass_helpers_do_not_load_or_note():
    connection = Connection(MemoryStorage())
    node = connection.get_root()["n"] = Node()
    connection.commit()
    node._p_set_status_ghost()
    with pytest.raises(AttributeError):
        _getattribute(node, "other")  # the ghost has no state and is not loaded
    assert node._p_is_ghost()
    _setattribute(node, "x", 1)
    assert node._p_is_ghost() and not connection.changed


def test_p_fields_accept_and_report_values():
    node = Node()
    node._p_serial = 2 ** 40
    node._p_oid = b"\0" * 7 + b"\1"
    assert (node._p_serial, node._p_oid, node._p_connection) == (2 ** 40, b"\0" * 7 + b"\1", None)
    node._p_oid = None
    assert node._p_oid is None


def test_held_objects_are_ordered_by_last_access():
    connection = Connection(MemoryStorage())
    connection.release(connection.get_root())
    a, b, c = Node(), Node(), Node()
    assert connection.oldest_held() is None and connection.held_count() == 0
    for node in (a, b, c):
        connection.note_access(node)
    assert a._p_serial == connection.transaction_serial
    connection.note_access(a)
    assert connection.oldest_held() is b and connection.held_count() == 3
    connection.hold_loaded(a)  # already held: stays where it is
    connection.release(b)
    assert connection.oldest_held() is c
    d = Node()
    connection.hold_loaded(d)
    assert connection.oldest_held() is d and d._p_serial == 0
    for node in (a, b, c, d):
        connection.release(node)
    assert connection.held_count() == 0
    with pytest.raises(TypeError):
        connection.note_access(object())


def test_load_and_ghost_loop_does_not_leak():
    """Memory after many load/ghost cycles stays where it was after the first ones."""
    import resource
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    nodes = root["nodes"] = [Node(i) for i in range(100)]
    connection.commit()

    def cycle(rounds):
        for _ in range(rounds):
            for node in nodes:
                node._p_set_status_ghost()
                node.other
            connection.abort()

    cycle(200)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cycle(2000)  # 200,000 loads
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 2048  # KiB


class Marker(Persistent):
    pass


class Counted(Persistent):
    made = []

    def __new__(cls, *args):
        Counted.made.append(args)
        return super().__new__(cls)


def implementation(name: str, pure: bool):
    """durus.persistent's function name: its Python twin if pure, else the
    C extension's (the test is skipped if that is not built)."""
    if pure:
        return getattr(durus.persistent, name + "_py")
    return getattr(c_extension("durus._persistent"), name)


@pytest.fixture(params=["python", "c"])
def cached_or_ghost(request):
    """cached_or_ghost of each implementation."""
    return implementation("cached_or_ghost", request.param == "python")


def test_cached_or_ghost_in_both_implementations(cached_or_ghost):
    from durus.connection import _OidRef
    from durus.persistent import GHOST
    connection = Connection(MemoryStorage())
    objects, dead = {}, []
    oid = b"\0" * 7 + b"\x09"
    ghost = cached_or_ghost(objects, _OidRef, dead.append, connection, (oid, Node))
    assert persistent_class(ghost) is Node and ghost._p_status == GHOST
    assert type(ghost) is watched_class(Node)  # a ghost is watched
    assert ghost._p_oid == oid and ghost._p_connection is connection
    assert type(objects[oid]) is _OidRef and objects[oid].key == oid and objects[oid]() is ghost
    assert cached_or_ghost(objects, _OidRef, dead.append, connection, [oid, Node]) is ghost
    other = cached_or_ghost(objects, _OidRef, dead.append, connection, (oid, Marker))
    assert persistent_class(other) is Marker and objects[oid]() is other  # another class replaces it
    ref = objects[oid]
    del ghost, other
    gc.collect()
    assert dead == [ref] and ref() is None
    Counted.made.clear()
    fresh = cached_or_ghost(objects, _OidRef, dead.append, connection, (oid, Counted))
    assert persistent_class(fresh) is Counted and Counted.made == [()]  # cls.__new__(cls), no more
    for bad, error in [((oid,), ValueError), ((oid, Node, 1), ValueError), (5, TypeError),
                       (([], Node), TypeError), ((b"x" * 8, "not a class"), TypeError)]:
        with pytest.raises(error):
            cached_or_ghost(objects, _OidRef, dead.append, connection, bad)
    assert list(objects) == [oid] and objects[oid]() is fresh


@pytest.fixture(params=["python", "c"])
def persistent_reference(request):
    """persistent_reference of each implementation (the Python one works on
    objects of either base; the C one knows only its own)."""
    if (request.param == "c"
            and durus.persistent.PersistentBase is durus.persistent.PersistentBase_py):
        pytest.skip("pure Python objects, which the C function does not take")
    return implementation("persistent_reference", request.param == "python")


def test_persistent_reference_in_both_implementations(persistent_reference):
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    refs, new_objects = set(), []
    assert persistent_reference(connection, refs, new_objects, 7) is None
    assert persistent_reference(connection, refs, new_objects, [root]) is None
    assert refs == set() and new_objects == []
    assert persistent_reference(connection, refs, new_objects, root) == (
        root._p_oid, durus.persistent.persistent_class(root))
    assert refs == {root._p_oid} and new_objects == []
    new = Node()
    oid, cls = persistent_reference(connection, refs, new_objects, new)
    assert cls is Node and oid == new._p_oid and len(oid) == 8 and oid != root._p_oid
    assert new._p_connection is connection and new_objects == [new] and refs == {root._p_oid, oid}
    assert persistent_reference(connection, refs, new_objects, new) == (oid, Node)
    assert new_objects == [new]  # an oid once
    with pytest.raises(ValueError, match="different connection"):
        persistent_reference(Connection(MemoryStorage()), refs, new_objects, root)
    for bad_refs, bad_list in [([], []), (set(), ()), (frozenset(), [])]:
        with pytest.raises(TypeError):
            persistent_reference(connection, bad_refs, bad_list, root)
    assert refs == {root._p_oid, oid} and new_objects == [new]


def test_persistent_reference_refuses_a_missing_oid(persistent_reference):
    connection = Connection(MemoryStorage())
    connection.new_oid = lambda: None
    new_objects = []
    with pytest.raises(TypeError, match="new_oid"):
        persistent_reference(connection, set(), new_objects, Node())
    assert len(new_objects) == 1  # listed first, for the failed commit to undo


def _result(scanned):
    end, oids, positions, empty_run_start, error, needed = scanned
    return end, list(oids), list(positions), empty_run_start, error, needed


def test_c_scan_matches_python_scan_on_damaged_files(tmp_path):
    _shelf = c_extension("durus._shelf")
    path = tmp_path / "scan.durus"
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    for i in range(20):
        root[i] = Node(i)
        connection.commit()
    storage.close()
    data = path.read_bytes()
    base = len(data) // 2
    tail = data[base:]
    rng = random.Random(5)
    cases = [tail, tail[:-1], tail[:3], b"", bytes(16), struct.pack(">Q", 2 ** 64 - 1) + tail]
    for _ in range(400):
        a = rng.randrange(len(tail))
        b = min(len(tail), a + rng.randrange(1, 24))
        filler = bytes(b - a) if rng.random() < 0.3 else rng.randbytes(b - a)
        cases.append(tail[:a] + filler + tail[b:])
        cases.append(tail[:rng.randrange(len(tail))])
    for case in cases:
        for start in (0, 8 + len(data) % 7):
            buffer = case[start:]
            assert _result(_shelf.scan_buffer(buffer, base)) == \
                _result(durus.shelf.scan_buffer_py(buffer, base))
    oids, positions = array("Q", [3, 1, 3]), array("q", [30, 10, 31])
    dense_c, dense_py = array("q", bytes(40)), array("q", bytes(40))
    assert _shelf.assign_positions(dense_c, oids, positions) == \
        durus.shelf.assign_positions_py(dense_py, oids, positions) == 2
    assert dense_c == dense_py


def _outcome(search, node, key):
    try:
        return "found", search(node, key)
    except Exception as error:
        return "raised", type(error)


def test_c_btree_search_matches_python_search():
    c_search = c_extension("durus._btree")._search
    pure_search = durus.btree._search_py
    rng = random.Random(11)
    nan = float("nan")
    for node_class in (durus.btree.BNode, durus.btree.BNode4, durus.btree.BNode16):
        tree = durus.btree.BTree(node_class)
        for key in rng.sample(range(2000), 600):
            tree[key] = str(key)
        tree[1.5] = "float"
        probes = list(range(-5, 2005, 7)) + [1.5, 1, 1.0, True, nan, "text", None, (1,)]
        for key in probes:
            assert _outcome(c_search, tree.root, key) == _outcome(pure_search, tree.root, key)
    mixed = durus.btree.BTree()
    mixed[nan] = "nan"
    assert _outcome(c_search, mixed.root, nan) == _outcome(pure_search, mixed.root, nan)


def test_a_connection_that_lets_go_of_an_object_while_asked_about_it(run_ours):
    """before_access() once kept a borrowed pointer to a connection of another
    class across the call to its transaction_serial property, which here drops
    the object's (only) reference to it: a use after free in C (issue 10)."""
    out = run_ours("""
import gc
from durus.persistent import Persistent, watch

class Node(Persistent):
    pass

class OddConnection:
    noted = []

    def __init__(self, node):
        self.node = node

    @property
    def transaction_serial(self):
        node, self.node = self.node, None
        node._p_connection = None  # the last reference to this connection
        gc.collect()
        return 5

    def note_access(self, obj):
        OddConnection.noted.append((type(self).__name__, obj.__dict__.get("x")))

for i in range(200):
    node = Node()
    node.__dict__["x"] = i
    node._p_connection = OddConnection(node)
    watch(node)  # so that its next read is seen
    assert node.x == i
    assert node._p_connection is None
print(len(OddConnection.noted), OddConnection.noted[-1])
""")
    assert out.split() == ["200", "('OddConnection',", "199)"]


def _drain(connection) -> list:
    """The objects connection holds, oldest first (it holds none afterwards)."""
    order = []
    while (obj := connection.oldest_held()) is not None:
        order.append(obj.name)
        connection.release(obj)
    assert connection.held_count() == 0
    return order


def _run_held_operations(persistence, operations: list) -> list:
    """Apply (operation, connection index, object index) with the ConnectionBase,
    PersistentBase and _setattribute of persistence (durus._persistent or
    PYTHON_PERSISTENCE); return the outcome."""
    class Thing(persistence.PersistentBase):
        __slots__ = ("name", "__weakref__")

    connections = [persistence.ConnectionBase() for _ in range(3)]
    things = []
    for i in range(5):
        thing = Thing()
        persistence._setattribute(thing, "name", i)
        things.append(thing)
    outcome = []
    for step, (operation, c, t) in enumerate(operations):
        connections[c].transaction_serial = step + 10
        getattr(connections[c], operation)(things[t])
        outcome.append(([connection.held_count() for connection in connections],
                        [getattr(connection.oldest_held(), "name", None)
                         for connection in connections],
                        [thing._p_serial for thing in things]))
    outcome.append([_drain(connection) for connection in connections])
    return outcome


PYTHON_PERSISTENCE = SimpleNamespace(**{
    name: getattr(durus.persistent, name + "_py")
    for name in ("PersistentBase", "ConnectionBase", "_setattribute")})


def test_c_held_lists_match_python_with_several_connections():
    c_persistence = c_extension("durus._persistent")
    # The sequence from the issue: C left counts 0/0 and b holding nothing.
    issue = [("note_access", 0, 0), ("note_access", 1, 0), ("release", 0, 0)]
    c_outcome = _run_held_operations(c_persistence, issue)
    assert c_outcome == _run_held_operations(PYTHON_PERSISTENCE, issue)
    assert c_outcome[-2][0] == [0, 1, 0] and c_outcome[-1] == [[], [0], []]
    rng = random.Random(7)
    for _ in range(300):
        operations = [(rng.choice(["note_access", "hold_loaded", "release"]),
                       rng.randrange(3), rng.randrange(5)) for _ in range(rng.randrange(1, 30))]
        assert _run_held_operations(c_persistence, operations) == \
            _run_held_operations(PYTHON_PERSISTENCE, operations)


def test_held_objects_move_between_connections():
    """Run under both implementations: one connection holds an object at most."""
    a, b = Connection(MemoryStorage()), Connection(MemoryStorage())
    for connection in a, b:
        connection.release(connection.get_root())
    node = Node()
    a.note_access(node)
    b.note_access(node)
    assert (a.held_count(), b.held_count(), b.oldest_held()) == (0, 1, node)
    a.release(node)  # a does not hold it: nothing happens
    assert (a.held_count(), b.held_count()) == (0, 1)
    a.hold_loaded(node)
    assert (a.held_count(), b.held_count(), a.oldest_held()) == (1, 0, node)
    probe = weakref.ref(node)
    del node
    gc.collect()
    assert probe() is not None  # held
    a.release(probe())
    gc.collect()
    assert probe() is None


class CountingConnection(Connection):
    """Durus programs may override note_access (Durus's C code calls the method)."""

    def __init__(self, *args, **kwargs):
        self.noted = []
        super().__init__(*args, **kwargs)

    def note_access(self, obj):
        self.noted.append(obj._p_oid)
        super().note_access(obj)


def test_an_overridden_note_access_is_called_in_both_implementations():
    connection = CountingConnection(MemoryStorage())
    root = connection.get_root()
    node = root["n"] = Node()
    connection.commit()
    connection.noted.clear()
    node.other
    root["n"]
    node.other  # noted once a transaction
    assert connection.noted == [node._p_oid, root._p_oid]
    assert connection.oldest_held() is not None  # super().note_access held them


def test_note_access_set_on_the_class_later_is_called_in_both_implementations():
    class Patched(Connection):
        pass

    connection = Patched(MemoryStorage())
    node = connection.get_root()["n"] = Node()
    connection.commit()
    noted = []

    def note_access(self, obj):
        noted.append(obj)
        Connection.note_access(self, obj)

    Patched.note_access = note_access
    node.other
    del Patched.note_access
    connection.abort()
    node.other
    assert noted == [node]


def test_note_access_set_on_a_class_already_seen_is_called_in_both_implementations():
    class Patched(Connection):
        pass

    connection = Patched(MemoryStorage())
    node = connection.get_root()["n"] = Node()
    connection.commit()
    node.other  # the C code has now seen Patched use ConnectionBase's note_access
    noted = []
    Patched.note_access = lambda self, obj: noted.append(obj)
    connection.abort()
    node.other
    assert noted == [node]


@pytest.fixture(params=["py", "C"])
def fill_instance_dict(request):
    """fill_instance_dict of each implementation."""
    return implementation("fill_instance_dict", request.param == "py")


class _Name(str):
    pass


@pytest.mark.parametrize("state", [
    {}, {"a": 1, "name": [2]}, {"".join(["lo", "aded"]): 3, 4: "four", _Name("sub"): 5},
    [("pairs", 1)], {"x": 1}.items(), type("Sub", (dict,), {})(y=2)])
def test_fill_instance_dict_in_both_implementations(fill_instance_dict, state):
    instance_dict = {"old": 0}
    fill_instance_dict(instance_dict, state)
    assert instance_dict == dict(state)
    for name in instance_dict:
        if type(name) is str and type(state) is dict:
            assert name is sys.intern(name)  # one copy of each name, found by identity
        elif isinstance(name, str):
            assert type(name) is type(next(k for k in dict(state) if k == name))


def test_fill_instance_dict_refuses_a_state_that_is_no_mapping(fill_instance_dict):
    with pytest.raises(TypeError):
        fill_instance_dict({}, 5)


def test_loaded_state_names_are_interned():
    connection = Connection(MemoryStorage())
    connection.get_root()["n"] = Node()
    connection.commit()
    other = Connection(connection.get_storage())
    node = other.get_root()["n"]
    node._p_load_state()
    assert all(name is sys.intern(name) for name in vars(node))
