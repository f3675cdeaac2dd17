"""PersistentDict: dict behaviour, Durus 4.3's extras, and change tracking."""

import pickle

import pytest
from hypothesis import given, settings, strategies as st

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent, persistent_class
from durus.persistent_dict import PersistentDict

from container_checks import assert_change_committed, assert_left_saved, outcome, stored


keys = st.integers(-5, 5)
operations = st.one_of(
    st.tuples(st.just("setitem"), keys, st.integers()),
    st.tuples(st.just("delitem"), keys),
    st.tuples(st.just("pop"), keys),
    st.tuples(st.just("pop_default"), keys),
    st.tuples(st.just("popitem")),
    st.tuples(st.just("setdefault"), keys, st.integers()),
    st.tuples(st.just("update"), st.dictionaries(keys, st.integers(), max_size=4)),
    st.tuples(st.just("ior"), st.dictionaries(keys, st.integers(), max_size=4)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("getitem"), keys),
)


def apply(mapping, operation):
    name, *args = operation
    if name == "setitem":
        mapping[args[0]] = args[1]
    elif name == "delitem":
        del mapping[args[0]]
    elif name == "pop":
        return mapping.pop(args[0])
    elif name == "pop_default":
        return mapping.pop(args[0], "default")
    elif name == "ior":
        mapping |= args[0]
    elif name == "getitem":
        return mapping[args[0]]
    else:
        return getattr(mapping, name)(*args)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, st.integers()), st.lists(operations, max_size=30))
def test_behaves_like_dict(initial, ops):
    model = dict(initial)
    pd = PersistentDict(initial)
    for operation in ops:
        assert outcome(lambda: apply(pd, operation)) == outcome(lambda: apply(model, operation))
        assert pd.data == model
        assert list(pd) == list(model) and len(pd) == len(model)
        assert list(reversed(pd)) == list(reversed(model))
        assert pd.items() == list(model.items())
        assert pd.keys() == list(model) and pd.values() == list(model.values())
        assert bool(pd) == bool(model)


def test_constructor_takes_what_dict_takes():
    assert PersistentDict().data == {}
    assert PersistentDict({1: 2}, a=3).data == {1: 2, "a": 3}
    assert PersistentDict([(1, 2), (3, 4)]).data == {1: 2, 3: 4}
    assert PersistentDict(PersistentDict(x=1)).data == {"x": 1}
    with pytest.raises(TypeError):
        PersistentDict({}, {})


def test_lookups():
    pd = PersistentDict((n, n * n) for n in range(10))
    assert pd[3] == 9 and pd.get(3) == 9
    assert pd.get(-1) is None and pd.get(-1, "x") == "x"
    assert 2 in pd and -1 not in pd
    assert pd.has_key(2) and not pd.has_key(-1)
    with pytest.raises(KeyError):
        pd[-1]
    assert list(pd.iterkeys()) == pd.keys() == list(range(10))
    assert list(pd.itervalues()) == pd.values()
    assert list(pd.iteritems()) == pd.items() == list(zip(pd.keys(), pd.values()))
    assert dict(pd) == pd.data


def test_keys_values_items_are_lists_that_allow_changes_while_looping():
    pd = PersistentDict.fromkeys(range(5), 0)
    assert type(pd.keys()) is list and type(pd.values()) is list and type(pd.items()) is list
    for key in pd.keys():
        del pd[key]
    assert not pd


def test_update_forms():
    pd = PersistentDict()
    pd.update()
    assert pd.data == {}
    pd.update({"a": 1}, b=2)
    pd.update([("c", 3)])
    pd.update(PersistentDict(d=4))

    class KeysOnly:
        def keys(self):
            return ["e"]

        def __getitem__(self, key):
            return 5

    pd.update(KeysOnly())
    assert pd.data == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    with pytest.raises(TypeError):
        pd.update({}, {})


def test_setdefault_returns_the_stored_value():
    pd = PersistentDict()
    assert pd.setdefault("k", []) == []
    pd.setdefault("k", None).append(1)
    assert pd["k"] == [1]
    assert pd.setdefault("n") is None and pd.data == {"k": [1], "n": None}


def test_pop_and_popitem_like_dict():
    pd = PersistentDict(a=1, b=2, c=3)
    assert pd.pop("a") == 1 and pd.pop("a", None) is None
    with pytest.raises(KeyError):
        pd.pop("a")
    assert pd.popitem() == ("c", 3)
    assert type(pd.popitem()) is tuple
    with pytest.raises(KeyError):
        pd.popitem()


def test_equality_as_in_durus():
    assert PersistentDict(a=1) == PersistentDict(a=1)
    assert PersistentDict(a=1) != PersistentDict(a=2)
    assert not PersistentDict(a=1) == {"a": 1}
    assert PersistentDict(a=1) != {"a": 1}
    with pytest.raises(TypeError):
        hash(PersistentDict())


def test_union_operators():
    pd = PersistentDict(a=1, b=2)
    union = pd | {"b": 3, "c": 4}
    assert type(union) is PersistentDict and union.data == {"a": 1, "b": 3, "c": 4}
    assert pd.data == {"a": 1, "b": 2}
    assert (pd | PersistentDict(z=0)).data == {"a": 1, "b": 2, "z": 0}
    reflected = {"b": 3, "c": 4} | pd
    assert type(reflected) is PersistentDict and reflected.data == {"b": 2, "c": 4, "a": 1}
    with pytest.raises(TypeError):
        pd | [("x", 1)]
    same = pd
    pd |= [("x", 1)]
    assert pd is same and pd.data == {"a": 1, "b": 2, "x": 1}


class Labelled(PersistentDict):
    __slots__ = ("label",)


def test_copy_is_a_new_independent_instance_of_the_same_class():
    pd = Labelled(a=[1])
    pd.label = "L"
    copied = pd.copy()
    assert type(copied) is Labelled and copied == pd and copied.label == "L"
    assert copied.data is not pd.data and copied["a"] is pd["a"]
    copied["b"] = 2
    assert "b" not in pd
    assert copied._p_oid is None and copied._p_is_unsaved()


def test_fromkeys_builds_the_calling_class():
    made = Labelled.fromkeys("ab", value=4)
    assert type(made) is Labelled and made.data == {"a": 4, "b": 4}
    assert PersistentDict.fromkeys([1, 2]).data == {1: None, 2: None}


def test_class_layout_and_state_match_durus():
    pd = PersistentDict(a=1)
    assert not isinstance(pd, Persistent)
    with pytest.raises(AttributeError):
        pd.bogus = 1
    assert pd.__getstate__() == {"data": {"a": 1}}
    assert pickle.dumps(pd.__getstate__(), 2) == pickle.dumps({"data": {"a": 1}}, 2)
    assert PersistentDict.data_is is dict


MUTATIONS = {
    "setitem": lambda pd: pd.__setitem__("k", 1),
    "setitem_same": lambda pd: pd.__setitem__(1, 1),
    "delitem": lambda pd: pd.__delitem__(1),
    "clear": lambda pd: pd.clear(),
    "update": lambda pd: pd.update(k=1),
    "ior": lambda pd: pd.__ior__({"k": 1}),
    "setdefault_new": lambda pd: pd.setdefault("k", 1),
    "pop": lambda pd: pd.pop(1),
    "popitem": lambda pd: pd.popitem(),
}

READS = {
    "getitem": lambda pd: pd[1],
    "get": lambda pd: pd.get(1),
    "contains": lambda pd: 1 in pd,
    "iterate": lambda pd: list(pd),
    "items": lambda pd: pd.items(),
    "copy": lambda pd: pd.copy(),
    "union": lambda pd: pd | {"k": 1},
    "setdefault_present": lambda pd: pd.setdefault(1, 2),
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_every_mutation_notes_the_change(mutate):
    assert_change_committed(PersistentDict({1: 1, 2: 2}), mutate, lambda pd: dict(pd.data))


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_reads_leave_the_dict_saved(read):
    assert_left_saved(PersistentDict({1: 1, 2: 2}), read)


def test_abort_reverts_changes():
    pd = PersistentDict(a=1)
    connection = stored(pd)
    pd["b"] = 2
    del pd["a"]
    connection.abort()
    assert pd.data == {"a": 1}
    assert pd._p_is_saved()


def test_round_trip_through_a_file(tmp_path):
    path = str(tmp_path / "x.durus")
    storage = FileStorage(path)
    connection = Connection(storage)
    inner = PersistentDict(deep=True)
    connection.get_root()["pd"] = PersistentDict({1: "one", (2, 3): [4], "inner": inner})
    connection.commit()
    connection.get_root()["pd"]["added"] = None
    connection.commit()
    storage.close()

    storage = FileStorage(path, readonly=True)
    loaded = Connection(storage).get_root()["pd"]
    assert persistent_class(loaded) is PersistentDict
    assert loaded.keys() == [1, (2, 3), "inner", "added"]
    assert loaded[(2, 3)] == [4] and loaded["added"] is None
    assert persistent_class(loaded["inner"]) is PersistentDict and loaded["inner"].data == {"deep": True}
    storage.close()
