"""Decoding records without importing the application's classes: each class
a pickle names becomes a Placeholder subclass recording its module and name
(a few plain standard-library classes excepted), each reference to a
persistent object a Ref. durus browse shows what it decodes; durus verify
checks that every state decodes and what it references."""

import importlib
from dataclasses import dataclass
from typing import Any, Iterable

from durus.record_format import split_oids, unpack_record
from durus.serialize import ObjectReader
from durus.utils import str_to_int8

# Classes whose pickled instances are plain values, safe to rebuild as they
# are. Protocol 2 pickles bytes as _codecs.encode(str, 'latin1').
_SAFE_CLASSES = {
    ("_codecs", "encode"), ("codecs", "encode"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "bytearray"), ("builtins", "complex"),
    ("collections", "OrderedDict"), ("collections", "deque"), ("decimal", "Decimal"),
    ("datetime", "date"), ("datetime", "datetime"), ("datetime", "time"),
    ("datetime", "timedelta"), ("datetime", "timezone"), ("fractions", "Fraction"),
    ("uuid", "UUID"),
}

# What Python 2 pickles (Durus 3 databases) call these modules.
_RENAMED_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class Placeholder:
    """An instance of a class that was not imported; the subclass made for
    each class name has class_name 'module.Name'.

    args: tuple, what the pickle passed to the class.
    state: what the pickle set as the instance's state (None if nothing).
    items: list of the items a pickle of a list or dict subclass added.
    """

    class_name = "?"
    args: tuple
    state: object
    items: list

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.args = args
        instance.state = None
        instance.items = []
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.items.extend(values)


@dataclass(frozen=True)
class Ref:
    """A reference to the persistent object of oid (an int), of class_name."""
    oid: int
    class_name: str


@dataclass
class RawObject:
    """A record decoded: its oid (int), class_name 'module.Name', state, the
    oids it references (ints) and its size in bytes."""
    oid: int
    class_name: str
    state: object
    refs: list
    size: int


_placeholders: dict[str, type] = {}  # {'module.Name': Placeholder subclass}, one per name


def _placeholder(module: str, name: str) -> type:
    class_name = "%s.%s" % (module, name)
    cls = _placeholders.get(class_name)
    if cls is None:
        cls = _placeholders[class_name] = type(name, (Placeholder,), {"class_name": class_name})
    return cls


class RawReader(ObjectReader):
    """An ObjectReader (the same split of class and state pickles, the same
    decompression) that imports no application class and turns persistent
    references into Refs, noting their oids in references."""

    def __init__(self) -> None:
        super().__init__(None)
        self.references: set[bytes] = set()
        self._persistent_load = self._reference

    def _find_class(self, module: str, name: str) -> type:
        module = _RENAMED_MODULES.get(module, module)
        if (module, name) in _SAFE_CLASSES:
            return super()._find_class(module, name)
        return _placeholder(module, name)

    def _reference(self, pid: bytes | tuple[bytes, Any]) -> Ref:
        # Our writers and Durus's store (oid, class); older ones the oid alone.
        oid, cls = pid if isinstance(pid, tuple) else (pid, None)
        if not isinstance(oid, bytes) or len(oid) != 8:
            raise ValueError("a persistent reference to %r, not an oid" % (oid,))
        self.references.add(oid)
        return Ref(str_to_int8(oid), name_of(cls) if cls is not None else "?")


def name_of(cls: type) -> str:
    """Return 'module.Name' of a class a raw unpickler returned."""
    if issubclass(cls, Placeholder):
        return cls.class_name
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def decode_class_name(data: bytes) -> str:
    """Return 'module.Name' of the class a record's data names."""
    return name_of(RawReader().get_class(data))


def decode_record(record: bytes) -> RawObject:
    """Decode a whole record (oid + int4 + data + refs) into a RawObject."""
    oid, data, refs = unpack_record(record)
    reader = RawReader()
    return RawObject(str_to_int8(oid), name_of(reader.get_class(data)), reader.get_state(data),
                     [str_to_int8(ref) for ref in split_oids(refs)], len(record))


def import_class(class_name: str) -> type | None:
    """Return the class 'module.Name', or None if it cannot be imported here."""
    module, _, name = class_name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # a module can fail to import in any way
        return None
    return cls if isinstance(cls, type) else None
