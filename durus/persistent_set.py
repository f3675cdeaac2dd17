"""PersistentSet: a set whose changes are tracked for the next commit."""

from collections.abc import Iterable, MutableSet
from typing import Any

from durus.persistent import PersistentObject, persistent_class


def _unwrap(other):
    """Return the set inside a PersistentSet, or other itself."""
    return other.s if isinstance(other, PersistentSet) else other


def _compared_set(other) -> set:
    if not isinstance(other, PersistentSet):
        raise TypeError("can only compare to a PersistentSet")
    return other.s


class PersistentSet(PersistentObject, MutableSet):
    """A persistent set backed by a plain set.

    s: set, the whole state (pickled as {'s': <set>}).

    As in Durus 4.3, a PersistentSet equals only another PersistentSet, and
    ordering comparisons (<, <=, >, >=) with anything else raise TypeError;
    compare set(ps) with a set instead. Operators accept sets, frozensets
    and PersistentSets; the named methods accept any iterables.

    Unlike Durus 4.3, a mutation that leaves the elements as they were
    (adding a present element, say) does not mark the set changed.
    """

    __slots__ = ("s",)

    s_is = set  # the attribute type, declared for QP's spec checking

    def __init__(self, *args: Iterable[Any]) -> None:
        self.s: set[Any] = set(*args)

    def __repr__(self) -> str:
        # The usual persistent repr with the elements listed before its '>'.
        return "%s %r>" % (PersistentObject.__repr__(self)[:-1], list(self.s))

    def __eq__(self, other) -> bool:
        return isinstance(other, PersistentSet) and self.s == other.s

    def __lt__(self, other) -> bool:
        return self.s < _compared_set(other)

    def __le__(self, other) -> bool:
        return self.s <= _compared_set(other)

    def __gt__(self, other) -> bool:
        return self.s > _compared_set(other)

    def __ge__(self, other) -> bool:
        return self.s >= _compared_set(other)

    def __len__(self) -> int:
        return len(self.s)

    def __iter__(self):
        return iter(self.s)

    def __contains__(self, item) -> bool:
        return item in self.s

    def copy(self) -> "PersistentSet":
        return persistent_class(self)(self.s)

    def __and__(self, other) -> "PersistentSet":
        return persistent_class(self)(self.s & _unwrap(other))

    def __or__(self, other) -> "PersistentSet":
        return persistent_class(self)(self.s | _unwrap(other))

    def __sub__(self, other) -> "PersistentSet":
        return persistent_class(self)(self.s - _unwrap(other))

    def __xor__(self, other) -> "PersistentSet":
        return persistent_class(self)(self.s ^ _unwrap(other))

    def __rand__(self, other) -> "PersistentSet":
        return persistent_class(self)(other & self.s)

    def __ror__(self, other) -> "PersistentSet":
        return persistent_class(self)(other | self.s)

    def __rsub__(self, other) -> "PersistentSet":
        return persistent_class(self)(other - self.s)

    def __rxor__(self, other) -> "PersistentSet":
        return persistent_class(self)(other ^ self.s)

    def union(self, *others: Iterable) -> "PersistentSet":
        return persistent_class(self)(self.s.union(*map(_unwrap, others)))

    def intersection(self, *others: Iterable) -> "PersistentSet":
        return persistent_class(self)(self.s.intersection(*map(_unwrap, others)))

    def difference(self, *others: Iterable) -> "PersistentSet":
        return persistent_class(self)(self.s.difference(*map(_unwrap, others)))

    def symmetric_difference(self, other: Iterable) -> "PersistentSet":
        return persistent_class(self)(self.s.symmetric_difference(_unwrap(other)))

    def issubset(self, other: Iterable) -> bool:
        return self.s.issubset(_unwrap(other))

    def issuperset(self, other: Iterable) -> bool:
        return self.s.issuperset(_unwrap(other))

    def isdisjoint(self, other: Iterable) -> bool:
        return self.s.isdisjoint(_unwrap(other))

    def add(self, item: Any) -> None:
        if item not in self.s:
            self._p_note_change()
            self.s.add(item)

    def discard(self, item: Any) -> None:
        if item in self.s:
            self._p_note_change()
            self.s.remove(item)

    def remove(self, item: Any) -> None:
        self.s.remove(item)  # KeyError, with nothing noted, if item is absent
        self._p_note_change()

    def pop(self) -> Any:
        """Remove and return an arbitrary element; KeyError if the set is empty."""
        item = self.s.pop()
        self._p_note_change()
        return item

    def clear(self) -> None:
        if self.s:
            self._p_note_change()
            self.s.clear()

    def _resize(self, mutator, others):
        """Call mutator(*others), a method of self.s that changes the size of
        self.s whenever it changes its elements, and note any change."""
        size = len(self.s)
        try:
            mutator(*map(_unwrap, others))
        finally:
            # Also after a failure part way through an iterable.
            if len(self.s) != size:
                self._p_note_change()

    def update(self, *others: Iterable) -> None:
        self._resize(self.s.update, others)

    def intersection_update(self, *others: Iterable) -> None:
        self._resize(self.s.intersection_update, others)

    def difference_update(self, *others: Iterable) -> None:
        self._resize(self.s.difference_update, others)

    def symmetric_difference_update(self, other: Iterable) -> None:
        other = _unwrap(other)
        if not isinstance(other, (set, frozenset)):
            other = set(other)
        # Each element of other is either added or removed.
        if other:
            self._p_note_change()
            self.s ^= other

    # The in-place operators take what set's do; for anything else Python
    # falls back to the plain operator, as it does for a set.

    def _in_place(self, mutator, other):
        other = _unwrap(other)
        if not isinstance(other, (set, frozenset)):
            return NotImplemented
        mutator(other)
        return self

    def __ior__(self, other):
        return self._in_place(self.update, other)

    def __iand__(self, other):
        return self._in_place(self.intersection_update, other)

    def __isub__(self, other):
        return self._in_place(self.difference_update, other)

    def __ixor__(self, other):
        return self._in_place(self.symmetric_difference_update, other)
