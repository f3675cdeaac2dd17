"""BTree: ordered mapping behaviour, B-tree shape, persistence, and Durus 4.3 compatibility."""

import json
import random

import pytest
from hypothesis import given, settings, strategies as st

from durus.btree import (BNode, BNode4, BNode8, BNode16, BNode32, BNode64, BNode128,
                         BNode256, BNode512, BTree)
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent, PersistentObject, persistent_class
from durus.storage import MemoryStorage

from container_checks import outcome

NODE_CLASSES = [BNode, BNode4, BNode8, BNode16, BNode32, BNode64, BNode128, BNode256, BNode512]


def check_shape(tree: BTree) -> None:
    """Assert that tree is a valid B-tree: node sizes, key order, and equal leaf depths."""
    root = tree.root
    t = root.minimum_degree
    leaf_depths = set()

    def check(node, depth, low, high):
        assert type(node) is type(root)
        keys = [item[0] for item in node.items]
        assert all(type(item) is tuple and len(item) == 2 for item in node.items)
        assert len(keys) <= 2 * t - 1
        assert node is root or len(keys) >= t - 1
        assert all(a < b for a, b in zip(keys, keys[1:]))
        assert low is None or not keys or low < keys[0]
        assert high is None or not keys or keys[-1] < high
        if node.nodes is None:
            leaf_depths.add(depth)
            return
        assert len(node.nodes) == len(keys) + 1
        bounds = [low, *keys, high]
        for i, child in enumerate(node.nodes):
            check(child, depth + 1, bounds[i], bounds[i + 1])

    check(root, 0, None, None)
    assert len(leaf_depths) == 1


def every_node(tree: BTree):
    stack = [tree.root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.nodes or ())


def stored(tree: BTree) -> Connection:
    """Commit tree under the root of a new in-memory database; it is then saved."""
    connection = Connection(MemoryStorage())
    connection.get_root()["tree"] = tree
    connection.commit()
    return connection


def filled(node_class=BNode16, keys=range(100)) -> BTree:
    tree = BTree(node_class)
    for key in keys:
        tree[key] = -key
    return tree


# Model-based: a BTree against a dict, with enough keys to split and merge small nodes.

small_node_classes = st.sampled_from([BNode, BNode4, BNode8])
keys = st.integers(0, 60)
operations = st.one_of(
    st.tuples(st.just("set"), keys, st.integers()),
    st.tuples(st.just("add"), keys),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("pop"), keys),
    st.tuples(st.just("setdefault"), keys, st.integers()),
    st.tuples(st.just("get"), keys),
)


def apply(mapping, operation):
    name, *args = operation
    if name == "set":
        mapping[args[0]] = args[1]
    elif name == "add":
        # BTree.add(key) stores True.
        if isinstance(mapping, BTree):
            mapping.add(args[0])
        else:
            mapping[args[0]] = True
    elif name == "delete":
        del mapping[args[0]]
    elif name == "pop":
        return mapping.pop(args[0])
    elif name == "setdefault":
        return mapping.setdefault(*args)
    else:
        return mapping.get(args[0])


@settings(max_examples=150, deadline=None)
@given(small_node_classes, st.lists(keys, max_size=120), st.lists(operations, max_size=120))
def test_behaves_like_a_sorted_dict(node_class, initial, ops):
    tree = BTree(node_class)
    model = {}
    for key in initial:
        tree[key] = model[key] = key
    for operation in ops:
        assert outcome(lambda: apply(tree, operation)) == outcome(lambda: apply(model, operation))
    check_shape(tree)
    expected = sorted(model.items())
    assert tree.items() == expected and list(tree.iteritems()) == expected
    assert list(tree.items_backward()) == expected[::-1]
    assert tree.keys() == [k for k, v in expected] and list(reversed(tree)) == sorted(model)[::-1]
    assert tree.values() == [v for k, v in expected]
    assert len(tree) == len(model) and bool(tree) == bool(model)


@pytest.mark.parametrize("node_class", [BNode, BNode4, BNode16])
def test_long_random_workload_keeps_the_shape(node_class):
    rnd = random.Random(node_class.minimum_degree)
    tree = BTree(node_class)
    model = {}
    for step in range(20000):
        key = rnd.randrange(1500)
        if key in model and rnd.random() < 0.5:
            del tree[key]
            del model[key]
        else:
            tree[key] = model[key] = step
        if step % 2000 == 0:
            check_shape(tree)
            assert tree.items() == sorted(model.items())
    for key in list(model):
        del tree[key]
    check_shape(tree)
    assert not tree and tree.get_depth() == 1 and tree.root.items == []


# Ordered access.

sorted_keys = st.lists(st.integers(0, 40).map(lambda n: 2 * n), unique=True, max_size=60)
probes = st.integers(-2, 82).map(lambda n: n / 2)  # hits keys and falls between them


@settings(max_examples=150, deadline=None)
@given(small_node_classes, sorted_keys, probes, probes, st.booleans(), st.booleans())
def test_ranges_match_filtering(node_class, present, start, end, closed_start, closed_end):
    tree = filled(node_class, present)
    items = sorted((key, -key) for key in present)
    assert list(tree.items_from(start)) == [i for i in items if i[0] >= start]
    assert list(tree.items_from(start, closed=False)) == [i for i in items if i[0] > start]
    assert list(tree.items_backward_from(start)) == [i for i in items if i[0] < start][::-1]
    assert (list(tree.items_backward_from(start, closed=True))
            == [i for i in items if i[0] <= start][::-1])

    def inside(key, low, high, closed_low, closed_high):
        return ((low < key or (closed_low and key == low))
                and (key < high or (closed_high and key == high)))

    got = list(tree.items_range(start, end, closed_start, closed_end))
    if start <= end:
        assert got == [i for i in items if inside(i[0], start, end, closed_start, closed_end)]
    else:
        assert got == [i for i in items if inside(i[0], end, start, closed_end, closed_start)][::-1]


def test_node_level_iteration():
    tree = filled(BNode4, range(50))
    root = tree.root
    assert list(root) == tree.items() and list(reversed(root)) == tree.items()[::-1]
    assert [k for k, v in root.iter_from(20)] == list(range(20, 50))
    assert [k for k, v in root.iter_backward_from(20)] == list(range(19, -1, -1))
    assert root.search(7) == (7, -7) and root.search(70) is None
    assert root.get_min_item() == (0, 0) and root.get_max_item() == (49, -49)
    assert root.get_count() == 50 and not root.is_leaf()


def test_extreme_items():
    tree = BTree()
    with pytest.raises(AssertionError):
        tree.get_min_item()
    with pytest.raises(AssertionError):
        tree.get_max_item()
    for key in random.Random(1).sample(range(1000), 1000):
        tree[key] = str(key)
    assert tree.get_min_item() == (0, "0") and tree.get_max_item() == (999, "999")


# Keys.

def test_keys_need_only_compare_not_hash():
    tree = BTree(BNode4)
    keys = [[n % 7, n] for n in range(200)]
    random.Random(2).shuffle(keys)
    for key in keys:
        tree[key] = key[1]
    check_shape(tree)
    assert tree.keys() == sorted(keys)
    assert tree[[3, 10]] == 10 and [3, 11] not in tree
    for key in keys[:150]:
        del tree[key]
    check_shape(tree)
    assert tree.keys() == sorted(keys[150:])
    assert [k for k, v in tree.items_from([5, 0])] == [k for k in sorted(keys[150:]) if k >= [5, 0]]


def test_equal_keys_of_other_types_replace_each_other_as_in_a_dict():
    tree = BTree()
    tree[1] = "int"
    tree[1.0] = "float"
    assert tree.items() == [(1.0, "float")] and tree[True] == "float"
    del tree[True]
    assert not tree


def test_missing_keys():
    tree = filled(BNode, range(30))
    with pytest.raises(KeyError) as raised:
        del tree[99]
    assert raised.value.args == (99,)
    with pytest.raises(KeyError):
        tree[99]
    assert tree.get(99) is None and tree.get(99, "d") == "d"
    assert 99 not in tree and not tree.has_key(99) and tree.has_key(3)
    assert tree.pop(99, "d") == "d"
    check_shape(tree)
    assert len(tree) == 30


# The mapping interface.

def test_mapping_methods():
    tree = BTree()
    assert not tree and len(tree) == 0 and tree.keys() == [] and list(tree) == []
    tree.add("a")
    assert tree["a"] is True and tree and tree.__nonzero__()
    assert tree.setdefault("b", []) == []
    tree.setdefault("b", None).append(1)
    assert tree["b"] == [1] and tree.setdefault("c") is None
    assert list(tree.iterkeys()) == ["a", "b", "c"]
    assert list(tree.itervalues()) == [True, [1], None]
    assert type(tree.keys()) is list and type(tree.items()) is list and type(tree.values()) is list
    assert tree == {"a": True, "b": [1], "c": None}
    assert tree.popitem() == ("a", True) and tree.pop("c") is None
    tree.clear()
    assert not tree and tree.items() == [] and type(tree.root) is BNode16


def test_update_forms():
    tree = BTree()
    tree.update()
    tree.update({"b": 2}, a=1)
    tree.update([("c", 3)])
    other = BTree()
    other["d"] = 4
    tree.update(other)

    class ItemsOnly:
        def items(self):
            return [("e", 5)]

    tree.update(ItemsOnly())
    assert tree.items() == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
    with pytest.raises(TypeError):
        tree.update({}, {})


def test_constructor_checks_the_node_class():
    assert type(BTree().root) is BNode16
    assert type(BTree(BNode8).root) is BNode8
    with pytest.raises(TypeError):
        BTree(dict)
    with pytest.raises(TypeError):
        BTree(BNode4())


# Shape, depth, node classes.

@pytest.mark.parametrize("node_class", NODE_CLASSES)
def test_a_root_splits_when_full(node_class):
    t = node_class.minimum_degree
    tree = filled(node_class, range(2 * t - 1))
    assert node_class().is_leaf() and tree.root.is_full()
    assert tree.get_depth() == 1 and tree.get_node_count() == 1
    tree.add(2 * t - 1)
    assert tree.get_depth() == 2 and tree.get_node_count() == 3
    assert tree.root.items == [(t - 1, 1 - t)]
    assert [len(node.items) for node in tree.root.nodes] == [t - 1, t]
    check_shape(tree)


def test_node_classes():
    assert [c.minimum_degree for c in NODE_CLASSES] == [2, 4, 8, 16, 32, 64, 128, 256, 512]
    for node_class in NODE_CLASSES:
        assert issubclass(node_class, PersistentObject) and not issubclass(node_class, Persistent)
        assert node_class.items_is == [tuple] and node_class.nodes_is == (None, [node_class])
    assert BTree.root_is is BNode
    tree = filled(BNode4, range(10))
    for obj in (tree, tree.root):
        with pytest.raises(AttributeError):
            obj.bogus = 1
    assert tree.__getstate__() == {"root": tree.root}
    assert list(tree.root.nodes[0].__getstate__().items()) == [
        ("items", [(0, 0), (1, -1), (2, -2)]), ("nodes", None)]
    assert list(tree.root.__getstate__()) == ["items", "nodes"]


@pytest.mark.parametrize("degree", [2, 4, 32, 512])
def test_set_bnode_minimum_degree_rebuilds_the_tree(degree):
    tree = filled(BNode16, random.Random(degree).sample(range(3000), 3000))
    before = tree.items()
    assert tree.set_bnode_minimum_degree(degree) is (degree != 16)
    assert tree.items() == before
    assert all(node.minimum_degree == degree for node in every_node(tree))
    check_shape(tree)
    assert tree.set_bnode_minimum_degree(degree) is False
    assert tree.set_bnode_minimum_degree(3) is False


def test_depth_and_node_count_grow_with_the_keys():
    tree = filled(BNode4, range(1000))
    nodes = list(every_node(tree))
    assert tree.get_node_count() == len(nodes)
    assert sum(len(node.items) for node in nodes) == 1000
    assert tree.get_depth() == tree.root.get_level() + 1 >= 4


def test_a_million_keys():
    n = 1_000_000
    keys = list(range(n))
    random.Random(1000).shuffle(keys)
    tree = BTree()
    for key in keys:
        tree[key] = key
    assert len(tree) == n
    assert tree.get_depth() == 5
    assert all(tree[key] == key for key in keys[::997])
    assert -1 not in tree and n not in tree
    assert list(tree) == list(range(n))
    gone = keys[: n // 2]
    for key in gone:
        del tree[key]
    remaining = sorted(keys[n // 2:])
    assert len(tree) == len(remaining)
    assert tree.keys() == remaining
    assert all(key not in tree for key in gone[::997])
    assert [k for k, v in tree.items_range(400_000, 400_100)] == [
        k for k in remaining if 400_000 <= k < 400_100]
    check_shape(tree)


# Persistence: what mutations note, commit and abort.

MUTATIONS = {
    "set_new": lambda tree: tree.__setitem__(1000, 0),
    "set_existing": lambda tree: tree.__setitem__(5, "new"),
    "add": lambda tree: tree.add(-1),
    "delete_min": lambda tree: tree.__delitem__(tree.get_min_item()[0]),
    "delete_from_root": lambda tree: tree.__delitem__(tree.root.items[0][0]),
    "pop": lambda tree: tree.pop(7),
    "popitem": lambda tree: tree.popitem(),
    "setdefault_new": lambda tree: tree.setdefault(1000, 1),
    "update": lambda tree: tree.update({1000: 1}),
    "clear": lambda tree: tree.clear(),
    "note_change": lambda tree: tree.note_change_of_bnode_containing_key(5),
    "set_bnode_minimum_degree": lambda tree: tree.set_bnode_minimum_degree(8),
    "grow_a_level": lambda tree: [tree.add(k) for k in range(1000, 1100)],
    "shrink_a_level": lambda tree: [tree.__delitem__(k) for k in range(95)],
}

READS = {
    "getitem": lambda tree: tree[5],
    "contains": lambda tree: 5 in tree,
    "items": lambda tree: tree.items(),
    "reversed": lambda tree: list(reversed(tree)),
    "ranges": lambda tree: list(tree.items_range(50, 10)) + list(tree.items_from(3)),
    "extremes": lambda tree: (tree.get_min_item(), tree.get_max_item()),
    "counts": lambda tree: (len(tree), tree.get_depth(), tree.get_node_count()),
    "setdefault_present": lambda tree: tree.setdefault(5, 0),
    "failed_delete": lambda tree: pytest.raises(KeyError, tree.__delitem__, 50.5),
    "same_degree": lambda tree: tree.set_bnode_minimum_degree(4),
}


def changed_objects(tree: BTree) -> list:
    return [obj for obj in (tree, *every_node(tree)) if obj._p_is_unsaved()]


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_every_mutation_is_noted_and_committed(mutate):
    tree = filled(BNode4, range(100))
    connection = stored(tree)
    assert not changed_objects(tree)
    mutate(tree)
    assert changed_objects(tree)
    expected = tree.items()
    connection.commit()
    assert not changed_objects(tree)
    loaded = Connection(connection.get_storage()).get_root()["tree"]
    assert loaded.items() == expected
    check_shape(loaded)


@pytest.mark.parametrize("node_class", [BNode, BNode4])
def test_every_step_of_a_workload_is_committed(node_class):
    # Each commit must store every node a step changed, however deep the change.
    rnd = random.Random(node_class.minimum_degree)
    tree = filled(node_class, rnd.sample(range(300), 300))
    connection = stored(tree)
    storage = connection.get_storage()
    for step in range(400):
        key = rnd.randrange(330)
        if key in tree:
            del tree[key]
        else:
            tree[key] = step
        connection.commit()
        if step % 20 == 0:
            loaded = Connection(storage).get_root()["tree"]
            assert loaded.items() == tree.items()
            check_shape(loaded)


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_reads_and_failed_deletions_change_nothing(read):
    tree = filled(BNode4, range(100))
    stored(tree)
    read(tree)
    assert not changed_objects(tree)


def test_failed_deletions_leave_the_tree_as_it_was():
    tree = filled(BNode, range(200))
    stored(tree)

    def shape() -> str:
        return repr([(node.items, node.nodes) for node in every_node(tree)])

    before = shape()
    for key in range(-1, 200):
        with pytest.raises(KeyError):
            del tree[key + 0.5]
    assert shape() == before
    assert not changed_objects(tree)


def test_a_value_changed_in_place_is_committed_after_note_change():
    tree = BTree()
    tree["list"] = []
    connection = stored(tree)
    tree["list"].append(1)
    assert not changed_objects(tree)
    tree.note_change_of_bnode_containing_key("list")
    connection.commit()
    assert Connection(connection.get_storage()).get_root()["tree"]["list"] == [1]


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_abort_reverts_mutations(mutate):
    tree = filled(BNode4, range(100))
    connection = stored(tree)
    before = tree.items()
    mutate(tree)
    connection.abort()
    assert tree.items() == before
    check_shape(tree)


def test_round_trip_through_a_file_with_a_small_cache(tmp_path):
    path = str(tmp_path / "x.durus")
    rnd = random.Random(3)
    model = {}
    storage = FileStorage(path)
    connection = Connection(storage)
    tree = connection.get_root()["tree"] = BTree(BNode4)
    for batch in range(5):
        for _ in range(1000):
            key = rnd.randrange(3000)
            if key in model and rnd.random() < 0.4:
                del tree[key]
                del model[key]
            else:
                tree[key] = model[key] = (batch, str(key))
        connection.commit()
    storage.close()

    storage = FileStorage(path, readonly=True)
    connection = Connection(storage, cache_size=20)
    loaded = connection.get_root()["tree"]
    assert persistent_class(loaded) is BTree and persistent_class(loaded.root) is BNode4
    expected = sorted(model.items())
    assert loaded.items() == expected
    connection.abort()  # shrinks the cache: nodes turn into ghosts
    assert list(loaded.items_backward()) == expected[::-1]
    assert all(loaded[key] == value for key, value in expected[::50])
    check_shape(loaded)
    storage.close()


# Compatibility with the real Durus 4.3: same trees, and files readable both ways.

DUMP = """
import json
def dump(node):
    return [type(node).__name__, node.items, node.nodes and [dump(n) for n in node.nodes]]
def dump_trees(root):
    return json.dumps({name: dump(root[name].root) for name in sorted(root)})
"""

BUILD = DUMP + """
import random, sys
from durus.btree import BTree, BNode4, BNode16
from durus.connection import Connection
from durus.file_storage import FileStorage
storage = FileStorage(sys.argv[1])
connection = Connection(storage)
root = connection.get_root()
rnd = random.Random(int(sys.argv[2]))
if not root:
    root["small"] = BTree(BNode4)
    root["default"] = BTree()
    root["converted"] = BTree(BNode16)
for name in ("small", "default", "converted"):
    tree = root[name]
    for step in range(3000):
        key = rnd.randrange(1200)
        if key in tree and rnd.random() < 0.45:
            del tree[key]
        else:
            tree[key] = (step, str(key))
        if step % 500 == 0:
            connection.commit()
root["converted"].set_bnode_minimum_degree(8 if sys.argv[2] == "1" else 32)
connection.commit()
print(dump_trees(root))
storage.close()
"""

READ = DUMP + """
import sys
from durus.connection import Connection
from durus.file_storage import FileStorage
storage = FileStorage(sys.argv[1], readonly=True)
print(dump_trees(Connection(storage).get_root()))
storage.close()
"""


def test_trees_and_files_match_durus_4_3(run_peer, run_ours, tmp_path):
    ours_first = str(tmp_path / "ours_first.durus")
    peer_first = str(tmp_path / "peer_first.durus")
    # The same operations build the same trees, node for node.
    built = run_ours(BUILD, ours_first, "1")
    assert run_peer(BUILD, peer_first, "1") == built
    # Each side reads the other's file, and continues it with the same result.
    assert run_peer(READ, ours_first) == built
    assert run_ours(READ, peer_first) == built
    continued = run_peer(BUILD, ours_first, "2")
    assert run_ours(BUILD, peer_first, "2") == continued
    assert run_ours(READ, ours_first) == run_peer(READ, peer_first) == continued
    trees = json.loads(continued)
    assert {name: tree[0] for name, tree in trees.items()} == {
        "small": "BNode4", "default": "BNode16", "converted": "BNode32"}
