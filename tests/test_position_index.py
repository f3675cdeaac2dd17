"""The writer's index of record positions, checked against a dict: oids in
any order, far apart and close, across growth of the dense array, packs and
reopens. The index once lost oids that it had put aside as sparse when its
dense array later grew past them (issue 10, defect 1); the class of bug is
one oid with two homes, so every check asks each oid for its one answer.

PositionIndex.slack (65,536 slots) is made small here, so that hypothesis
reaches every path (sparse entries, growth over them, bulk updates) with
small numbers; test_lifecycle.py runs the real constant at scale.
"""

import os
import tempfile
from array import array

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, invariant, precondition,
                                 rule, run_state_machine_as_test)

import durus.shelf
from durus.file import File
from durus.serialize import pack_record
from durus.shelf import PositionIndex, Shelf, write_shelf
from durus.utils import int8_to_str, str_to_int8

SLACK = 16

# Oid numbers: around the slack boundary, well beyond it, and far out.
near = st.integers(0, 4 * SLACK)
beyond = st.integers(4 * SLACK, 40 * SLACK)
far = st.integers(1 << 20, (1 << 63) - 1)
oid_numbers = st.one_of(near, beyond, far)
positions = st.integers(1, (1 << 62))


def check_index(index: PositionIndex, model: dict) -> None:
    """Every oid gives its one position, and the index has no other oid."""
    listed = list(index)
    assert len(listed) == len(set(listed)) == len(index) == len(model)
    assert set(listed) == set(model)
    for n, position in model.items():
        assert index.get(n) == position
    assert all(n >= len(index.dense) for n in index.sparse)  # one home per oid


class IndexMachine(RuleBasedStateMachine):
    """PositionIndex against a dict; update() takes the assign_positions of
    the module given (the C accelerator's, or the pure-Python one)."""

    assign_positions = None

    def __init__(self):
        super().__init__()
        self.index = PositionIndex()
        self.index.slack = SLACK
        self.model = {}

    def _update(self, oids, new_positions):
        saved = durus.shelf.assign_positions
        durus.shelf.assign_positions = self.assign_positions
        try:
            self.index.update(array("Q", oids), array("q", new_positions))
        finally:
            durus.shelf.assign_positions = saved
        self.model.update(zip(oids, new_positions))

    @rule(n=oid_numbers, position=positions)
    def set_one(self, n, position):
        self.index.set(n, position)
        self.model[n] = position

    @rule(oids=st.lists(oid_numbers, max_size=20), data=st.data())
    def update_scattered(self, oids, data):
        self._update(oids, data.draw(st.lists(positions, min_size=len(oids),
                                              max_size=len(oids))))

    @rule(start=st.one_of(near, beyond), length=st.integers(1, 6 * SLACK),
          reverse=st.booleans(), position=positions)
    def update_run(self, start, length, reverse, position):
        """A transaction of consecutive new oids, as a writer allocates them."""
        oids = list(range(start, start + length))
        if reverse:
            oids.reverse()
        self._update(oids, [position + i for i in range(length)])

    @rule(oids=st.lists(oid_numbers, max_size=20, unique=True), data=st.data())
    def update_then_undo(self, oids, data):
        """What an append that is stopped after its index update puts back."""
        previous = [self.index.get(n) for n in oids]
        self._update(oids, data.draw(st.lists(positions, min_size=len(oids),
                                              max_size=len(oids))))
        self.index.restore(oids, previous)
        for n, position in zip(oids, previous):
            if position is None:
                del self.model[n]
            else:
                self.model[n] = position

    @rule(n=oid_numbers)
    def probe(self, n):
        assert self.index.get(n) == self.model.get(n)

    @invariant()
    def agrees_with_model(self):
        check_index(self.index, self.model)


def test_set_rejects_a_position_that_reads_as_empty():
    with pytest.raises(ValueError):
        PositionIndex().set(3, 0)


def test_sparse_entries_move_when_the_dense_array_grows_past_them():
    """The shape of defect 1: oids beyond the slack go sparse while the index
    is nearly empty, then a bulk update grows the array past them."""
    index = PositionIndex()
    model = {}
    for n in range(100_000, 110_000):
        index.set(n, n * 10)
        model[n] = n * 10
    assert index.sparse  # put aside: far beyond twice the count + slack
    batch = array("Q", range(110_000, 150_000))
    index.update(batch, array("q", [n * 10 for n in batch]))
    model.update((n, n * 10) for n in batch)
    check_index(index, model)
    assert not index.sparse


@pytest.mark.parametrize("implementation", ["accelerated", "pure"])
def test_index_agrees_with_a_dict(implementation):
    """With DURUS_PURE_PYTHON=1, both runs use the pure-Python assign_positions."""
    if implementation == "pure":
        assign = durus.shelf.assign_positions_py
    else:
        assign = durus.shelf.assign_positions
    machine = type("Machine", (IndexMachine,), {"assign_positions": staticmethod(assign)})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=150, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))


class ShelfMachine(RuleBasedStateMachine):
    """A Shelf (file, offset map, index, free oids) against {oid number: record},
    through appends, packs that drop oids, and reopens."""

    def __init__(self):
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.directory.name, "shelf.durus")
        self.model = {}
        self.shelf = Shelf(File(self.path))
        self.version = 0

    oids = Bundle("oids")

    def _record(self, n: int) -> bytes:
        self.version += 1
        return pack_record(int8_to_str(n), b"v%d" % self.version, b"")

    def _append(self, numbers):
        items = [(int8_to_str(n), self._record(n)) for n in numbers]
        self.shelf.append(items, fsync=False)
        self.model.update((str_to_int8(oid), record) for oid, record in items)

    @rule(target=oids, count=st.integers(1, 3 * SLACK))
    def append_new(self, count):
        """New objects under the oids a writer is given."""
        numbers = [str_to_int8(self.shelf.next_free_oid()) for _ in range(count)]
        assert not set(numbers) & set(self.model)
        self._append(numbers)
        return numbers[-1]

    @rule(target=oids, n=st.one_of(near, beyond, far))
    def append_any(self, n):
        self._append([n])
        return n

    @rule(chosen=st.lists(oids, min_size=1, max_size=10), shuffle=st.randoms())
    def append_existing(self, chosen, shuffle):
        shuffle.shuffle(chosen)
        self._append(chosen)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def pack(self, data):
        """Rewrite the live records (some dropped) as a new shelf, as a pack does."""
        keys = sorted(self.model)
        dropped = data.draw(st.sets(st.sampled_from(keys), max_size=len(keys) // 2))
        for n in dropped:
            del self.model[n]
        self.shelf.close()
        pack_path = self.path + ".pack"
        new_file = File(pack_path)
        for _ in write_shelf(new_file, ((int8_to_str(n), r) for n, r in self.model.items()
                                        if n < 1 << 20)):
            pass
        new_file.rename(self.path)
        new_file.close()
        # Far oids are not packed here: offset maps are dense; they come back
        # as transactions after the map.
        self.shelf = Shelf(File(self.path))
        self._append([n for n in self.model if n >= 1 << 20])

    @rule()
    def reopen(self):
        self.shelf.close()
        self.shelf = Shelf(File(self.path))

    @invariant()
    def agrees_with_model(self):
        shelf = self.shelf
        listed = [str_to_int8(oid) for oid in shelf.gen_oids()]
        assert len(listed) == len(set(listed))
        assert set(listed) == set(self.model)
        for n, record in self.model.items():
            assert shelf.get_value(int8_to_str(n)) == record

    def teardown(self):
        self.shelf.close()
        self.directory.cleanup()


def test_shelf_agrees_with_a_dict(monkeypatch):
    monkeypatch.setattr(PositionIndex, "slack", SLACK)
    run_state_machine_as_test(ShelfMachine, settings=settings(
        max_examples=60, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
