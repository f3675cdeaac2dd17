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
         "_tree_contains")
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
            key = args[0]
            return (list(tree.items_from(key)), list(tree.items_backward_from(key)),
                    list(tree.items_range(key, key + 20)), list(tree.items_range(key, key - 20)))
        return outcome(lambda: getattr(tree, name)(*args))


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
