"""Object records: how a persistent object's class and state become bytes.

record = oid (8) + int4 len(data) + data + refs
data   = class pickle + zlib-compressed state pickle (protocol 2, one pickler)
refs   = sorted 8-byte oids the state references, the object's own excluded
"""

from functools import partial
from io import BytesIO
from pickle import Pickler, Unpickler
from types import MethodType
from zlib import compress, decompress, error as ZlibError
from typing import Any, Callable, IO, Iterator

from durus.persistent import persistent_class, persistent_reference
# Durus 4.3 has these here; they belong to the record format.
from durus.record_format import pack_record, split_oids, unpack_record  # noqa: F401

# Durus 4.3 names, for code that imports them from here: the separator of the
# class name in a record's first pickle, and a function binding to an instance.
NEWLINE = b"\n"
method = MethodType

PICKLE_PROTOCOL = 2
WRITE_COMPRESSED_STATE_PICKLES = True

# Every zlib stream at default settings starts with this byte.
COMPRESSED_START_BYTE = 0x78

# Level 1, not zlib's default 6 (Durus's): on pickled states it compresses
# within a percent as well, ten times faster (a 20,000-entry dict's state
# took 0.14 s at 6). Any level reads back the same, in Durus 4.3 too, and
# every level's stream still starts with COMPRESSED_START_BYTE.
COMPRESSION_LEVEL = 1

# Smaller states are stored as plain pickles: compressing them costs time and
# saves no space. Readers tell them apart by the first byte (0x80, not 0x78).
_COMPRESS_MIN_BYTES = 64

# A pickler's memo gets slow to clear once large: start afresh past this.
_PICKLER_RESET_BYTES = 20000


def extract_class_name(record: bytes) -> bytes:
    """Return the class name in a record without unpickling it, or b'?'.

    Bytes, as Durus 4.3 returns it (get_census keys are bytes there too).
    """
    try:
        return unpack_record(record)[1].split(b"\n", 2)[1]
    except IndexError:
        return b"?"


class ObjectWriter:
    """Serializes the objects of one commit.

    Persistent objects met while pickling that have no oid yet are given one
    (and this connection); take_new_objects() hands them to the commit loop.
    Call close() when done: Picklers don't take part in garbage collection.

    new_objects: [PersistentObject], every object given an oid, in the order met.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.refs: set[bytes] = set()
        self.new_objects: list[Any] = []
        self._taken = 0
        self._generated = False
        # {class: (its pickle, the memo after it)}: the same for every object of a class.
        self.class_pickles: dict[type, tuple[bytes, dict]] = {}
        self._reset_pickler()

    def _reset_pickler(self):
        self.pieces = _Pieces()
        # The pickler asks about every object it meets: answered in C, which
        # gives new objects an oid and records every reference in refs.
        self.pickler = _Pickler(self.pieces, partial(
            persistent_reference, self.connection, self.refs, self.new_objects))
        self.bytes_written = 0

    def _persistent_id(self, obj: Any) -> tuple | None:
        """The persistent id (oid, class) the pickler writes for obj, giving a
        new object an oid and this connection (None if obj is not persistent).
        Durus's name for the pickler's hook, which Durus's own tests call."""
        return persistent_reference(self.connection, self.refs, self.new_objects, obj)

    def take_new_objects(self) -> list:
        """Return the objects that got an oid since the last call."""
        found = self.new_objects[self._taken:]
        self._taken += len(found)
        return found

    def gen_new_objects(self, obj: Any) -> Iterator[Any]:
        """Return an iterator over obj, then every object given an oid so far
        and later (Durus's commit loop); a second call raises RuntimeError."""
        if self._generated:
            raise RuntimeError("gen_new_objects() can be called once per writer")
        self._generated = True
        return self._iterate_new_objects(obj)

    def _iterate_new_objects(self, obj):
        yield obj
        # By index: storing each object yielded may add new ones to the list.
        j = 0
        while j < len(self.new_objects):
            yield self.new_objects[j]
            j += 1

    def get_state(self, obj: Any) -> tuple[bytes, bytes]:
        """Return (data, refs) for obj."""
        if self.bytes_written > _PICKLER_RESET_BYTES:
            self._reset_pickler()
        else:
            self.pickler.clear_memo()
        pieces = self.pieces
        pieces.clear()
        self._dump_class(persistent_class(obj))
        class_end = len(pieces)
        self.refs.clear()
        self.pickler.dump(obj.__getstate__())
        state = b"".join(pieces[class_end:])
        if WRITE_COMPRESSED_STATE_PICKLES and len(state) > _COMPRESS_MIN_BYTES:
            state = compress(state, COMPRESSION_LEVEL)
        data = b"".join(pieces[:class_end]) + state
        self.bytes_written += len(data)
        self.refs.discard(obj._p_oid)
        return data, b"".join(sorted(self.refs))

    def _dump_class(self, cls: type) -> None:
        """Write the pickle of cls, leaving the (cleared) memo as dumping it
        does (one entry for a plain class, more for a nested one), so that
        the state pickle is byte for byte the same."""
        known = self.class_pickles.get(cls)
        if known is None:
            self.pickler.dump(cls)
            self.class_pickles[cls] = (self.pieces[-1], self.pickler.memo.copy())
        else:
            class_pickle, memo = known
            self.pieces.append(class_pickle)
            self.pickler.memo = memo

    def close(self) -> None:
        self.pickler = None
        self.pieces = None


class _Pieces(list):
    """A file for a Pickler that keeps what each write() gives as an item
    (a protocol 2 pickler writes once a dump): no buffer to rewind and copy."""

    __slots__ = ()
    write = list.append


class _Pickler(Pickler):
    """A Pickler given its persistent_id hook at creation.

    Python 3.13 no longer lets a plain Pickler's persistent_id be assigned;
    an instance of a subclass may have it, set before Pickler.__init__ so
    that every version's C pickler picks it up there.
    """

    def __init__(self, file: IO[bytes], persistent_id: Callable[[Any], Any]) -> None:
        # pickle's persistent_id hook, set per instance (Durus's pickler does the same).
        self.persistent_id = persistent_id  # type: ignore[method-assign]
        Pickler.__init__(self, file, PICKLE_PROTOCOL)


class _WholeInput:
    """A file for an Unpickler whose read() hands over all that is left at once.

    Given more than it asked for, the C unpickler parses on from that one
    buffer instead of calling read() for each opcode: loading gets several
    times faster.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def read(self, n: int = -1) -> bytes:
        data, self.data = self.data, b""
        return data

    readline = read


def _class_pickle_length(data: bytes) -> int | None:
    """Return the length of the class pickle that starts data, when it has the
    form every writer produces, b'\\x80\\x02c<module>\\n<name>\\nq\\x00.', else None."""
    if data[:3] != b"\x80\x02c":
        return None
    module_end = data.find(b"\n", 3)
    name_end = data.find(b"\n", module_end + 1) if module_end > 0 else -1
    if name_end < 0 or data[name_end:name_end + 4] != b"\nq\x00.":
        return None
    return name_end + 4


class _Unpickler(Unpickler):
    """An Unpickler whose find_class and persistent_load a reader sets per instance."""


class ObjectReader:
    """Turns record data back into classes and states for one connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.load_count = 0
        self.classes: dict[tuple[str, str], type] = {}  # {(module, name): class}, so each is imported once
        self._importer = Unpickler(BytesIO())  # its find_class does the import
        # A connection without a cache (Durus's tests make such) can still
        # read classes and ghosts; states with references then cannot load.
        get_cache = getattr(connection, "get_cache", None)
        self._persistent_load = None if get_cache is None else get_cache().loader(connection)

    def _find_class(self, module: str, name: str) -> type:
        try:
            return self.classes[module, name]
        except KeyError:
            cls = self.classes[module, name] = self._importer.find_class(module, name)
            return cls

    def _new_unpickler(self, file):
        unpickler = _Unpickler(file)
        unpickler.find_class = self._find_class
        if self._persistent_load is not None:
            unpickler.persistent_load = self._persistent_load
        return unpickler

    def get_class(self, data: bytes) -> type:
        """Return the class named by a record's data."""
        length = _class_pickle_length(data)
        if length is None:
            return self._new_unpickler(_WholeInput(data)).load()
        # The usual form names module and class: no unpickler is needed.
        module, name = data[3:length - 4].decode("utf-8").split("\n")
        return self._find_class(module, name)

    def _split(self, data: bytes) -> tuple[int, bytes]:
        """Return (length of the class pickle, uncompressed state pickle)."""
        length = _class_pickle_length(data)
        if length is None:  # an unusual class pickle: find its end by loading it
            buffer = BytesIO(data)
            self._new_unpickler(buffer).load()
            length = buffer.tell()
        return length, _uncompressed(data[length:])

    def get_state(self, data: bytes, load: bool = True) -> Any:
        """Return the unpickled state of a record's data (or, with load False, its pickle)."""
        self.load_count += 1
        length, state = self._split(data)
        if not load:
            return state
        return self._load_class_and_state(data[:length] + state)

    def _load_class_and_state(self, pickles: bytes):
        """Load the class pickle, then the state pickle that may refer back to
        the class through the memo, as the writer's one pickler wrote them."""
        unpickler = self._new_unpickler(_WholeInput(pickles))
        unpickler.load()
        return unpickler.load()

    def get_state_pickle(self, data: bytes) -> bytes:
        """Return the uncompressed state pickle of a record's data."""
        return self.get_state(data, load=False)

    def get_ghost(self, data: bytes) -> Any:
        """Return a new ghost of the record's class, without connection or oid."""
        cls = self.get_class(data)
        ghost = cls.__new__(cls)  # type: ignore[call-overload]  # a persistent class, not type
        ghost._p_set_status_ghost()
        return ghost

    def get_load_count(self) -> int:
        return self.load_count


def _uncompressed(state: bytes) -> bytes:
    """Return state decompressed if it is a zlib stream, else as it is."""
    if state and state[0] == COMPRESSED_START_BYTE:
        try:
            return decompress(state)
        except ZlibError:
            pass  # a plain pickle that happens to start with 'x'
    return state
