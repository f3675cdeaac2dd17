"""PersistentDict: a dict whose changes are tracked for the next commit."""

import copy as _copy
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any


from durus.persistent import PersistentObject, persistent_class


class PersistentDict(PersistentObject, MutableMapping):
    """A persistent mapping backed by a plain dict.

    data: dict, the whole state (pickled as {'data': <dict>}).

    As in Durus 4.3, keys(), values() and items() return lists, so callers
    may change the mapping while looping over them, and a PersistentDict
    equals only another PersistentDict (compare dict(pd) with a dict).
    """

    __slots__ = ("data",)

    data_is = dict  # the attribute type, declared for QP's spec checking

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.data = dict(*args, **kwargs)

    @classmethod
    def fromkeys(cls, iterable: Iterable, value: Any = None) -> "PersistentDict":
        """Return a new instance mapping each key of iterable to value."""
        result = cls()
        result.update(dict.fromkeys(iterable, value))
        return result

    def __eq__(self, other) -> bool:
        return isinstance(other, PersistentDict) and self.data == other.data

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.data)

    def __reversed__(self):
        return reversed(self.data)

    def __contains__(self, key) -> bool:
        return key in self.data

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def has_key(self, key: Any) -> bool:
        """Durus's spelling of `key in self`."""
        return key in self.data

    # Lists, not views, as Durus 4.3 returns.
    def keys(self) -> list:  # type: ignore[override]
        return list(self.data)

    def values(self) -> list:  # type: ignore[override]
        return list(self.data.values())

    def items(self) -> list:  # type: ignore[override]
        return list(self.data.items())

    def iterkeys(self) -> Iterator:
        return iter(self.data)

    def itervalues(self) -> Iterator:
        return iter(self.data.values())

    def iteritems(self) -> Iterator[tuple]:
        return iter(self.data.items())

    def copy(self) -> "PersistentDict":
        """Return a new, unsaved instance of the same class holding the same items."""
        # copy.copy keeps any further state a subclass adds to its slots.
        duplicate = _copy.copy(self)
        duplicate.data = self.data.copy()
        return duplicate

    def __or__(self, other):
        if isinstance(other, PersistentDict):
            other = other.data
        elif not isinstance(other, dict):
            return NotImplemented
        result = self.copy()
        result.data.update(other)
        return result

    def __ror__(self, other):
        if not isinstance(other, dict):
            return NotImplemented
        return persistent_class(self)(other | self.data)

    # Mutations note the change first, so that a partial failure (say, of
    # update() from a generator that raises) is still committed.

    def __ior__(self, other):
        self.update(other)
        return self

    def __setitem__(self, key, value):
        self._p_note_change()
        self.data[key] = value

    def __delitem__(self, key):
        self._p_note_change()
        del self.data[key]

    def clear(self) -> None:
        self._p_note_change()
        self.data.clear()

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Like dict.update(): other is a mapping or an iterable of (key, value) pairs."""
        self._p_note_change()
        if isinstance(other, PersistentDict):
            other = other.data
        self.data.update(other, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """Return self[key], first setting it to default if key is absent."""
        if key in self.data:
            return self.data[key]
        self._p_note_change()
        self.data[key] = default
        return default

    def pop(self, key: Any, *default: Any) -> Any:
        """Like dict.pop(key[, default])."""
        self._p_note_change()
        return self.data.pop(key, *default)

    def popitem(self) -> tuple:
        """Remove and return the last inserted (key, value) pair, like dict.popitem()."""
        self._p_note_change()
        return self.data.popitem()
