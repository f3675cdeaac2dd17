"""The C BTree functions of durus._btree against their pure-Python twins, in
one process: the same operations on two stored trees, one through C and one
through Python, leave the same nodes, in the same states (items and change
status), with the same results."""

import contextlib
import unittest.mock

import pytest
from hypothesis import given, settings, strategies as st

import durus.btree as btree
from durus.btree import BNode, BNode4, BTree
from durus.connection import Connection
from durus.storage import MemoryStorage

from container_checks import outcome

pytest.importorskip("durus._btree", reason="the C accelerator durus._btree is not built")
C_BOUND = btree._search is not btree._search_py
pytestmark = pytest.mark.skipif(not C_BOUND, reason="pure Python is chosen: no C to compare")

# The module functions that have a C version, and the BTree methods among them.
TWINS = ("_search", "_insert", "_tree_add", "_tree_setitem", "_tree_getitem", "_tree_get",
         "_tree_contains", "_walk")
METHODS = {"add": "_tree_add", "__setitem__": "_tree_setitem", "__getitem__": "_tree_getitem",
           "get": "_tree_get", "__contains__": "_tree_contains"}


@contextlib.contextmanager
def bound(pure: bool):
    """A context in which durus.btree's functions and BTree's methods are the
    Python twins if pure, else as the switch bound them (C)."""
    if not pure:
        yield
        return
    with unittest.mock.patch.multiple(btree, **{name: getattr(btree, name + "_py")
                                                for name in TWINS}), \
            unittest.mock.patch.multiple(BTree, **{method: getattr(btree, name + "_py")
                                                   for method, name in METHODS.items()}):
        yield


def shape(node) -> tuple:
    """(class, change status, items, children's shapes) of node and below."""
    children = None if node.nodes is None else [shape(child) for child in node.nodes]
    return type(node), node._p_status, list(node.items), children


def stored_ghost_tree(node_class: type, keys: list) -> BTree:
    """A tree of these keys, committed, every node of it then a ghost."""
    tree = BTree(node_class)
    for key in keys:
        tree[key] = -key
    connection = Connection(MemoryStorage())
    connection.get_root()["tree"] = tree
    connection.commit()
    return Connection(connection.get_storage()).get_root()["tree"]


keys = st.integers(-60, 60)
operations = st.lists(st.one_of(
    st.tuples(st.sampled_from(["add", "__setitem__", "get", "setdefault"]), keys, st.integers()),
    st.tuples(st.sampled_from(["add", "get", "__getitem__", "__contains__", "__delitem__",
                               "range"]), keys),
), max_size=60)


def apply(tree: BTree, pure: bool, operation: tuple):
    """What the operation (name, *args) did to tree, through C or pure Python."""
    name, *args = operation
    with bound(pure):
        if name == "range":
            return walks(tree, args[0])
        return outcome(lambda: getattr(tree, name)(*args))


def walks(tree: BTree, key) -> list:
    """What every way of walking tree from (or to) key generates."""
    return [outcome(lambda: list(walk)) for walk in (
        tree.items_from(key), tree.items_from(key, closed=False),
        tree.items_backward_from(key), tree.items_backward_from(key, closed=True),
        tree.items_range(key, key + 20), tree.items_range(key, key - 20),
        tree.items_range(key, key + 9, closed_start=False, closed_end=True),
        tree.items_range(key, key - 9, closed_start=False, closed_end=True),
        tree.items_range(key, key), tree.items_range(key, key, True, True),
        iter(tree), reversed(tree), tree.itervalues(), tree.iteritems(), tree.items_backward(),
        tree.root.iter_from(key), tree.root.iter_backward_from(key), iter(tree.root),
        reversed(tree.root))]


@settings(max_examples=150, deadline=None)
@given(node_class=st.sampled_from([BNode, BNode4]),
       initial=st.lists(keys, unique=True, max_size=60), operations=operations)
def test_c_and_python_trees_change_alike(node_class, initial, operations):
    c_tree = stored_ghost_tree(node_class, initial)
    pure_tree = stored_ghost_tree(node_class, initial)
    # The shapes are compared at the end only, so that the operations meet ghosts.
    for operation in operations:
        assert apply(c_tree, False, operation) == apply(pure_tree, True, operation)
    assert shape(c_tree.root) == shape(pure_tree.root)
    assert c_tree._p_status == pure_tree._p_status


def test_btree_has_the_c_methods():
    for method, name in METHODS.items():
        assert BTree.__dict__[method] is getattr(btree, name) is not getattr(btree, name + "_py")


def test_a_missing_tuple_key_raises_keyerror_of_that_tuple():
    tree = BTree()
    tree[(1, 2)] = 3
    for pure in (False, True):
        with bound(pure), pytest.raises(KeyError) as raised:
            tree[(4, 5)]
        assert raised.value.args == ((4, 5),)


def test_setitem_calls_an_overriding_add():
    added = []

    class Logged(BTree):
        def add(self, key, value=True):
            added.append((key, value))
            super().add(key, value)

    tree = Logged()
    tree[1] = 2
    assert added == [(1, 2)] and tree[1] == 2


def test_errors_from_comparing_keys_pass_through_alike():
    class Touchy:
        def __lt__(self, other):
            raise ZeroDivisionError

        __gt__ = __eq__ = __lt__
        __hash__ = object.__hash__

    results = []
    for pure in (False, True):
        tree = BTree()
        tree[1] = 1
        results.append([apply(tree, pure, (name, Touchy(), 0)) for name in ("add", "get")]
                       + [apply(tree, pure, ("__contains__", Touchy()))])
    assert results[0] == results[1] == [("raised", ZeroDivisionError)] * 3


def walk_while_changing(tree: BTree, pure: bool, start: int, descending: bool, changes: list):
    """The items (or error) a walk from start meets while each step makes
    the next change (key: add it; -key - 100: delete key) to the tree."""
    seen = []
    with bound(pure):
        walk = tree.items_backward_from(start) if descending else tree.items_from(start)
        changes = iter(changes)
        try:
            for item in walk:
                seen.append(item)
                change = next(changes, None)
                if change is not None and change >= 0:
                    tree[change] = change
                elif change is not None and change + 100 in tree:
                    del tree[change + 100]
        except Exception as error:
            seen.append(type(error))
    return seen


@settings(max_examples=100, deadline=None)
@given(initial=st.lists(st.integers(0, 80), unique=True, max_size=70), start=st.integers(0, 80),
       descending=st.booleans(),
       changes=st.lists(st.one_of(st.integers(0, 80), st.integers(-180, -100)), max_size=40))
def test_walks_meet_changes_alike(initial, start, descending, changes):
    trees = [BTree(BNode4), BTree(BNode4)]
    for tree in trees:
        for key in initial:
            tree[key] = key
    assert (walk_while_changing(trees[0], False, start, descending, changes)
            == walk_while_changing(trees[1], True, start, descending, changes))
    assert shape(trees[0].root) == shape(trees[1].root)


def test_walks_are_lazy_and_refuse_bad_arguments_alike():
    tree = BTree()
    tree[1] = 1
    for pure in (False, True):
        with bound(pure):
            walk = tree.items_range(1, "a")  # compared at the first step, as a generator
            with pytest.raises(TypeError):
                next(walk)
            assert list(walk) == []
            for args, error in [((None, None, 0, None), TypeError), ((False, None, 3, None), ValueError),
                                ((None, (1, True), 0, None), TypeError)]:
                with pytest.raises(error):
                    btree._walk(tree.root, *args)


def test_a_walk_asked_for_its_next_item_while_taking_one_refuses_alike():
    class Reentrant(int):
        def __gt__(self, other):  # what item_key < key asks first, of an int subclass
            return next(walks_of[0]) if walks_of else int.__gt__(self, other)

    tree = BTree()
    for key in range(40):
        tree[key] = key
    for pure in (False, True):
        walks_of = []
        with bound(pure):
            walk = tree.items_from(Reentrant(5))
            walks_of.append(walk)
            with pytest.raises(ValueError, match="already executing"):
                next(walk)


def test_items_too_short_for_their_part_raise_alike():
    for pure in (False, True):
        tree = BTree()
        tree.root.items = [(1,), (2, 2)]
        with bound(pure):
            values = tree.itervalues()
            with pytest.raises(IndexError):
                next(values)
            assert list(values) == [2]  # the walk goes on, as map() does
