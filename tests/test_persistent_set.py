"""PersistentSet: set behaviour, Durus 4.3's comparisons, and change tracking."""

import operator
import pickle

import pytest
from hypothesis import given, settings, strategies as st

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent, persistent_class
from durus.persistent_set import PersistentSet

from container_checks import assert_change_committed, assert_left_saved, outcome, stored


def as_set(result):
    """('set', the elements) for a PersistentSet, set or frozenset, so that they
    compare equal; else result."""
    if isinstance(result, PersistentSet):
        return ("set", result.s)
    if isinstance(result, (set, frozenset)):
        return ("set", set(result))
    return result


elements = st.integers(0, 6)
element_sets = st.sets(elements, max_size=5)
# How the other operand is given: a set, a frozenset, a PersistentSet, or a list.
wrappers = st.sampled_from([set, frozenset, PersistentSet, list])

BINARY = ["and_", "or_", "sub", "xor"]
IN_PLACE = ["iand", "ior", "isub", "ixor"]
METHODS_OF_ITERABLES = ["union", "intersection", "difference", "symmetric_difference",
                        "issubset", "issuperset", "isdisjoint", "update",
                        "intersection_update", "difference_update",
                        "symmetric_difference_update"]
operations = st.one_of(
    st.tuples(st.sampled_from(["add", "discard", "remove"]), elements),
    st.tuples(st.sampled_from(["pop", "clear", "copy"])),
    st.tuples(st.sampled_from(BINARY + IN_PLACE + ["rbinary"] + METHODS_OF_ITERABLES),
              element_sets, wrappers),
    st.tuples(st.just("contains"), elements),
)


def apply(target, operation, persistent: bool):
    name, *args = operation
    if len(args) == 2:
        elements, wrapper = args
        if wrapper is PersistentSet and not persistent:
            wrapper = set  # the plain model works with the plain equivalent
        other = wrapper(elements)
        if name in BINARY:
            return getattr(operator, name)(target, other)
        if name in IN_PLACE:
            result = getattr(operator, name)(target, other)
            return ("same object", result is target)
        if name == "rbinary":
            return other | target
        return getattr(target, name)(other)
    if name == "contains":
        return args[0] in target
    return getattr(target, name)(*args)


@settings(max_examples=300, deadline=None)
@given(element_sets, st.lists(operations, max_size=20))
def test_behaves_like_set(initial, ops):
    model = set(initial)
    ps = PersistentSet(initial)
    for operation in ops:
        if operation == ("pop",) and model:
            # Which element pop() takes is arbitrary: the model loses the same one.
            model.remove(ps.pop())
            continue
        expected = outcome(lambda: apply(model, operation, persistent=False), as_set)
        assert outcome(lambda: apply(ps, operation, persistent=True), as_set) == expected
        assert ps.s == model
        assert set(ps) == model and len(ps) == len(model) and bool(ps) == bool(model)


def test_methods_take_several_iterables():
    ps = PersistentSet("abc")
    assert ps.union("d", ["e"]).s == set("abcde")
    assert ps.intersection("abx", PersistentSet("bc")).s == {"b"}
    assert ps.difference("a", iter("b")).s == {"c"}
    ps.update("x", PersistentSet("y"))
    ps.difference_update("a", "b")
    ps.intersection_update("cxyz", "cxy")
    assert ps.s == set("cxy")
    assert ps.issubset("cxyz") and ps.issuperset(["c"]) and ps.isdisjoint(range(3))


def test_equality_and_ordering_as_in_durus():
    ps = PersistentSet([1, 2])
    assert ps == PersistentSet([2, 1]) and ps != PersistentSet([1])
    assert not ps == {1, 2} and ps != {1, 2}
    assert PersistentSet([1]) < ps <= PersistentSet([1, 2]) and ps > PersistentSet() and ps >= ps
    for compare in (operator.lt, operator.le, operator.gt, operator.ge):
        with pytest.raises(TypeError):
            compare(ps, {1})
        with pytest.raises(TypeError):
            compare({1}, ps)
    with pytest.raises(TypeError):
        hash(ps)


def test_operators_return_persistent_sets_both_ways():
    ps = PersistentSet("ab")
    for result in (ps & {"a"}, ps | frozenset("c"), ps - PersistentSet("a"), ps ^ {"b"},
                   {"a"} & ps, frozenset("c") | ps, {"a", "z"} - ps, {"b"} ^ ps, ps.copy()):
        assert type(result) is PersistentSet
    assert ({"a", "z"} - ps).s == {"z"} and ({"b", "q"} ^ ps).s == {"a", "q"}
    assert (ps | {}.keys()).s == {"a", "b"}
    with pytest.raises(TypeError):
        ps | ["c"]
    with pytest.raises(TypeError):
        ["c"] | ps


def test_in_place_operators_keep_the_object_and_reject_non_sets():
    ps = PersistentSet("ab")
    same = ps
    ps |= {"c"}
    ps &= PersistentSet("abc")
    ps -= frozenset("a")
    ps ^= {"b", "d"}
    assert ps is same and ps.s == {"c", "d"}
    for in_place in (operator.ior, operator.iand, operator.isub, operator.ixor):
        with pytest.raises(TypeError):
            in_place(ps, ["c"])
    assert ps.s == {"c", "d"}


def test_repr_lists_the_elements():
    ps = PersistentSet()
    assert repr(ps) == "<PersistentSet @%x []>" % id(ps)
    ps.add("x")
    assert repr(ps) == "<PersistentSet @%x ['x']>" % id(ps)
    stored(ps)
    assert repr(ps) == "<PersistentSet %s ['x']>" % ps._p_format_oid()


def test_pop_and_remove_raise_key_error():
    with pytest.raises(KeyError):
        PersistentSet().pop()
    with pytest.raises(KeyError):
        PersistentSet().remove(1)


def test_class_layout_and_state_match_durus():
    ps = PersistentSet([3])
    assert not isinstance(ps, Persistent)
    with pytest.raises(AttributeError):
        ps.bogus = 1
    assert ps.__getstate__() == {"s": {3}}
    assert pickle.dumps(ps.__getstate__(), 2) == pickle.dumps({"s": {3}}, 2)
    assert PersistentSet.s_is is set


MUTATIONS = {
    "add": lambda ps: ps.add(9),
    "discard": lambda ps: ps.discard(1),
    "remove": lambda ps: ps.remove(1),
    "pop": lambda ps: ps.pop(),
    "clear": lambda ps: ps.clear(),
    "update": lambda ps: ps.update([9]),
    "intersection_update": lambda ps: ps.intersection_update([1]),
    "difference_update": lambda ps: ps.difference_update([1]),
    "symmetric_difference_update_same_size": lambda ps: ps.symmetric_difference_update([1, 9]),
    "ior": lambda ps: ps.__ior__({9}),
    "iand": lambda ps: ps.__iand__({1}),
    "isub": lambda ps: ps.__isub__({1}),
    "ixor": lambda ps: ps.__ixor__({1}),
}

NO_CHANGES = {
    "add_present": lambda ps: ps.add(1),
    "discard_absent": lambda ps: ps.discard(9),
    "update_subset": lambda ps: ps.update([1], PersistentSet([2])),
    "intersection_update_superset": lambda ps: ps.intersection_update([1, 2, 3, 9]),
    "difference_update_disjoint": lambda ps: ps.difference_update([9]),
    "symmetric_difference_update_empty": lambda ps: ps.symmetric_difference_update([]),
    "ior_subset": lambda ps: ps.__ior__({1}),
    "contains": lambda ps: 1 in ps,
    "iterate": lambda ps: list(ps),
    "operators": lambda ps: (ps | {9}, ps & {1}, ps - {1}, ps ^ {1}, {9} | ps),
    "methods": lambda ps: (ps.union([9]), ps.issubset([1]), ps.isdisjoint([9]), ps.copy()),
    "repr": repr,
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_every_change_is_noted(mutate):
    assert_change_committed(PersistentSet([1, 2, 3]), mutate, lambda ps: set(ps.s))


@pytest.mark.parametrize("act", NO_CHANGES.values(), ids=NO_CHANGES.keys())
def test_calls_that_change_nothing_leave_the_set_saved(act):
    ps = PersistentSet([1, 2, 3])
    assert_left_saved(ps, act)
    assert ps.s == {1, 2, 3}


def test_failed_removals_leave_the_set_saved():
    ps = PersistentSet([1])
    stored(ps)
    with pytest.raises(KeyError):
        ps.remove(2)
    with pytest.raises(TypeError):
        ps.add([])
    assert ps._p_is_saved()


def test_an_update_that_fails_part_way_is_still_noted():
    ps = PersistentSet([1])
    stored(ps)

    def elements():
        yield 2
        raise RuntimeError("halfway")

    with pytest.raises(RuntimeError):
        ps.update(elements())
    assert ps.s == {1, 2} and ps._p_is_unsaved()


def test_abort_reverts_changes():
    ps = PersistentSet([1, 2])
    connection = stored(ps)
    ps.add(3)
    ps.discard(1)
    connection.abort()
    assert ps.s == {1, 2} and ps._p_is_saved()


def test_round_trip_through_a_file(tmp_path):
    path = str(tmp_path / "x.durus")
    storage = FileStorage(path)
    connection = Connection(storage)
    connection.get_root()["ps"] = PersistentSet([1, "two", (3, 4), frozenset([5])])
    connection.commit()
    connection.get_root()["ps"].remove(1)
    connection.commit()
    storage.close()

    storage = FileStorage(path, readonly=True)
    loaded = Connection(storage).get_root()["ps"]
    assert persistent_class(loaded) is PersistentSet and loaded.s == {"two", (3, 4), frozenset([5])}
    storage.close()
