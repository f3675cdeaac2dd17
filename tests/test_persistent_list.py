"""PersistentList: list behaviour, Durus 4.3's conventions, and change tracking."""

import pickle

import pytest
from hypothesis import given, settings, strategies as st

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent, persistent_class
from durus.persistent_list import PersistentList

from container_checks import assert_change_committed, assert_left_saved, outcome, stored


def as_list(result):
    """('copy', the items) for a PersistentList or a list, so that the two compare
    equal; else result."""
    if isinstance(result, PersistentList):
        return ("copy", result.data)
    if isinstance(result, list):
        return ("copy", result)
    return result


indexes = st.integers(-7, 7)
slices = st.builds(slice, st.none() | indexes, st.none() | indexes,
                   st.none() | st.sampled_from([-2, -1, 1, 2]))
items = st.integers(0, 4)
item_lists = st.lists(items, max_size=5)
operations = st.one_of(
    st.tuples(st.just("append"), items),
    st.tuples(st.just("extend"), item_lists),
    st.tuples(st.just("insert"), indexes, items),
    st.tuples(st.just("pop")),
    st.tuples(st.just("pop"), indexes),
    st.tuples(st.just("remove"), items),
    st.tuples(st.just("index"), items),
    st.tuples(st.just("count"), items),
    st.tuples(st.just("reverse")),
    st.tuples(st.just("sort")),
    st.tuples(st.just("sort_reversed")),
    st.tuples(st.just("clear")),
    st.tuples(st.just("getitem"), indexes | slices),
    st.tuples(st.just("setitem"), indexes, items),
    st.tuples(st.just("setslice"), slices, item_lists),
    st.tuples(st.just("delitem"), indexes | slices),
    st.tuples(st.just("iadd"), item_lists),
    st.tuples(st.just("imul"), st.integers(-1, 3)),
    st.tuples(st.just("add"), item_lists),
    st.tuples(st.just("radd"), item_lists),
    st.tuples(st.just("mul"), st.integers(-1, 3)),
    st.tuples(st.just("compare"), item_lists),
)


def apply(sequence, operation):
    name, *args = operation
    if name == "getitem":
        return sequence[args[0]]
    if name in ("setitem", "setslice"):
        sequence[args[0]] = args[1]
    elif name == "delitem":
        del sequence[args[0]]
    elif name == "iadd":
        sequence += args[0]
    elif name == "imul":
        sequence *= args[0]
    elif name == "add":
        return sequence + args[0]
    elif name == "radd":
        return args[0] + sequence
    elif name == "mul":
        return sequence * args[0]
    elif name == "sort_reversed":
        sequence.sort(key=lambda x: -x, reverse=True)
    elif name == "compare":
        other = args[0]
        return (sequence == other, sequence != other, sequence < other,
                sequence <= other, sequence > other, sequence >= other)
    else:
        return getattr(sequence, name)(*args)


@settings(max_examples=300, deadline=None)
@given(item_lists, st.lists(operations, max_size=25))
def test_behaves_like_list(initial, ops):
    model = list(initial)
    pl = PersistentList(initial)
    for operation in ops:
        assert (outcome(lambda: apply(pl, operation), as_list)
                == outcome(lambda: apply(model, operation), as_list))
        assert pl.data == model
        assert list(pl) == model and len(pl) == len(model) and bool(pl) == bool(model)
        assert list(reversed(pl)) == model[::-1]


def test_constructor_takes_any_iterable():
    assert PersistentList().data == []
    assert PersistentList(n for n in range(3)).data == [0, 1, 2]
    assert PersistentList(PersistentList("ab")).data == ["a", "b"]
    with pytest.raises(TypeError):
        PersistentList([], [])


def test_comparisons_with_lists_and_persistent_lists():
    pl = PersistentList([1, 2])
    assert pl == [1, 2] and [1, 2] == pl and pl == PersistentList([1, 2])
    assert pl != [1] and pl != (1, 2) and pl != PersistentList()
    assert pl < [1, 3] and [1, 3] > pl and pl <= PersistentList([1, 2])
    assert pl > PersistentList([1]) and pl >= [1, 2]
    with pytest.raises(TypeError):
        pl < (1, 2)
    with pytest.raises(TypeError):
        hash(pl)


def test_results_of_operators_and_slices():
    pl = PersistentList([1, 2, 3])
    for result in (pl + [4], pl + (4,), pl + PersistentList([4]), (0,) + pl, [0] + pl,
                   pl * 2, 2 * pl, pl.copy()):
        assert type(result) is PersistentList and result._p_is_unsaved()
    assert (pl + (4,)).data == [1, 2, 3, 4] and ((0,) + pl).data == [0, 1, 2, 3]
    assert (pl + PersistentList([4])).data == [1, 2, 3, 4]
    # Slicing returns a plain list, as it does in Durus 4.3 under Python 3.
    assert type(pl[1:]) is list and pl[::-1] == [3, 2, 1]
    assert pl.copy() == pl and pl.copy().data is not pl.data


def test_in_place_operators_keep_the_object():
    pl = PersistentList([1])
    same = pl
    pl += (2,)
    pl += PersistentList([3])
    pl *= 2
    assert pl is same and pl.data == [1, 2, 3, 1, 2, 3]
    pl.extend(pl)
    assert len(pl) == 12
    pl[:] = pl
    assert len(pl) == 12


def test_searches_and_sort():
    pl = PersistentList([3, 1, 2, 1])
    assert pl.count(1) == 2 and pl.index(1) == 1 and pl.index(1, 2) == 3
    with pytest.raises(ValueError):
        pl.index(1, 2, 3)
    assert 2 in pl and 5 not in pl
    pl.sort()
    assert pl == [1, 1, 2, 3]
    pl.sort(key=lambda x: -x)
    assert pl == [3, 2, 1, 1]
    pl.sort(reverse=False)
    assert sorted(pl) == [1, 1, 2, 3]


def test_slice_assignment_takes_any_iterable():
    pl = PersistentList(range(10))
    pl[:] = [2, 3]
    pl[1:] = PersistentList([0, 1])
    assert pl == [2, 0, 1]
    pl[:] = (3, 4)
    del pl[:1]
    assert pl == [4]
    pl[0:0] = iter("ab")
    assert pl == ["a", "b", 4]


def test_stores_persistent_lists_as_items():
    inner = PersistentList([1])
    pl = PersistentList()
    pl.append(inner)
    pl.insert(0, inner)
    pl[0] = inner
    assert pl.data[0] is inner and pl.data[1] is inner


def test_class_layout_and_state_match_durus():
    pl = PersistentList([1, "a"])
    assert not isinstance(pl, Persistent)
    with pytest.raises(AttributeError):
        pl.bogus = 1
    assert pl.__getstate__() == {"data": [1, "a"]}
    assert pickle.dumps(pl.__getstate__(), 2) == pickle.dumps({"data": [1, "a"]}, 2)
    assert PersistentList.data_is is list


MUTATIONS = {
    "setitem": lambda pl: pl.__setitem__(0, 9),
    "setslice": lambda pl: pl.__setitem__(slice(0, 1), [7, 8]),
    "delitem": lambda pl: pl.__delitem__(0),
    "delslice": lambda pl: pl.__delitem__(slice(None, None, 2)),
    "append": lambda pl: pl.append(4),
    "extend": lambda pl: pl.extend([4, 5]),
    "insert": lambda pl: pl.insert(1, 4),
    "pop": lambda pl: pl.pop(),
    "remove": lambda pl: pl.remove(2),
    "clear": lambda pl: pl.clear(),
    "reverse": lambda pl: pl.reverse(),
    "sort": lambda pl: pl.sort(reverse=True),
    "iadd": lambda pl: pl.__iadd__([4]),
    "imul": lambda pl: pl.__imul__(2),
}

READS = {
    "getitem": lambda pl: pl[0],
    "slice": lambda pl: pl[1:],
    "iterate": lambda pl: list(pl),
    "reversed": lambda pl: list(reversed(pl)),
    "index": lambda pl: pl.index(2),
    "count": lambda pl: pl.count(2),
    "compare": lambda pl: pl < [5],
    "add": lambda pl: pl + [1],
    "mul": lambda pl: pl * 2,
    "copy": lambda pl: pl.copy(),
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_every_mutation_notes_the_change(mutate):
    assert_change_committed(PersistentList([1, 2, 3]), mutate, lambda pl: list(pl.data))


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_reads_leave_the_list_saved(read):
    assert_left_saved(PersistentList([1, 2, 3]), read)


def test_a_failed_sort_is_still_committed():
    pl = PersistentList([3, 2, 1, "x"])
    stored(pl)
    with pytest.raises(TypeError):
        pl.sort()
    assert pl._p_is_unsaved()


def test_abort_reverts_changes():
    pl = PersistentList([1, 2])
    connection = stored(pl)
    pl.append(3)
    pl.reverse()
    connection.abort()
    assert pl == [1, 2] and pl._p_is_saved()


def test_round_trip_through_a_file(tmp_path):
    path = str(tmp_path / "x.durus")
    storage = FileStorage(path)
    connection = Connection(storage)
    inner = PersistentList([None])
    connection.get_root()["pl"] = PersistentList([1, "two", (3,), inner, inner])
    connection.commit()
    connection.get_root()["pl"].insert(0, 0.5)
    connection.commit()
    storage.close()

    storage = FileStorage(path, readonly=True)
    loaded = Connection(storage).get_root()["pl"]
    assert persistent_class(loaded) is PersistentList and loaded[:4] == [0.5, 1, "two", (3,)]
    assert persistent_class(loaded[4]) is PersistentList and loaded[4] is loaded[5] and loaded[4] == [None]
    storage.close()
