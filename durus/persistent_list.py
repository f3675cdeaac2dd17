"""PersistentList: a list whose changes are tracked for the next commit."""

from collections.abc import Callable, Iterable, MutableSequence
from typing import Any

from durus.persistent import PersistentObject, persistent_class


def _unwrap(other):
    """Return the list inside a PersistentList, or other itself."""
    return other.data if isinstance(other, PersistentList) else other


class PersistentList(PersistentObject, MutableSequence):
    """A persistent sequence backed by a plain list.

    data: list, the whole state (pickled as {'data': <list>}).

    It compares with lists and PersistentLists as a list would. As in
    Durus 4.3, slicing returns a plain list, while +, * and copy() return
    new instances of the same class.
    """

    __slots__ = ("data",)

    data_is = list  # the attribute type, declared for QP's spec checking

    def __init__(self, *args: Iterable[Any]) -> None:
        self.data: list[Any] = list(*args)

    def __eq__(self, other) -> bool:
        return self.data == _unwrap(other)

    def __lt__(self, other) -> bool:
        return self.data < _unwrap(other)

    def __le__(self, other) -> bool:
        return self.data <= _unwrap(other)

    def __gt__(self, other) -> bool:
        return self.data > _unwrap(other)

    def __ge__(self, other) -> bool:
        return self.data >= _unwrap(other)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.data)

    def __reversed__(self):
        return reversed(self.data)

    def __contains__(self, item) -> bool:
        return item in self.data

    def __getitem__(self, index):
        return self.data[index]

    def count(self, item: Any) -> int:
        return self.data.count(item)

    def index(self, item: Any, *bounds: int) -> int:
        """Like list.index(item[, start[, stop]])."""
        return self.data.index(item, *bounds)

    def copy(self) -> "PersistentList":
        return persistent_class(self)(self.data)

    def __add__(self, other) -> "PersistentList":
        # Any iterable will do, as in Durus, not only another list.
        return persistent_class(self)([*self.data, *other])

    def __radd__(self, other) -> "PersistentList":
        return persistent_class(self)([*other, *self.data])

    def __mul__(self, n: int) -> "PersistentList":
        return persistent_class(self)(self.data * n)

    __rmul__ = __mul__

    # Mutations note the change first, so that a partial failure (say, of a
    # sort whose key function raises) is still committed.

    def __setitem__(self, index, value):
        self._p_note_change()
        self.data[index] = value

    def __delitem__(self, index):
        self._p_note_change()
        del self.data[index]

    def __iadd__(self, other):
        self.extend(other)
        return self

    def __imul__(self, n: int):
        self._p_note_change()
        self.data *= n
        return self

    def append(self, item: Any) -> None:
        self._p_note_change()
        self.data.append(item)

    def extend(self, other: Iterable) -> None:
        self._p_note_change()
        self.data.extend(_unwrap(other))

    def insert(self, index: int, item: Any) -> None:
        self._p_note_change()
        self.data.insert(index, item)

    def pop(self, index: int = -1) -> Any:
        self._p_note_change()
        return self.data.pop(index)

    def remove(self, item: Any) -> None:
        self._p_note_change()
        self.data.remove(item)

    def clear(self) -> None:
        self._p_note_change()
        self.data.clear()

    def reverse(self) -> None:
        self._p_note_change()
        self.data.reverse()

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        self._p_note_change()
        self.data.sort(key=key, reverse=reverse)
