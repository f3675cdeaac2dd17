"""Object records: how a persistent object's class and state become bytes.

record = oid (8) + int4 len(data) + data + refs
data   = class pickle + zlib-compressed state pickle (protocol 2, one pickler)
refs   = sorted 8-byte oids the state references, the object's own excluded
"""

from functools import partial
from io import BytesIO
from pickle import Pickler, Unpickler, loads
from zlib import compress, decompress, error as ZlibError

from durus.persistent import call_if_persistent
from durus.utils import int4_to_str, str_to_int4

PICKLE_PROTOCOL = 2
WRITE_COMPRESSED_STATE_PICKLES = True

# Every zlib stream at default settings starts with this byte.
COMPRESSED_START_BYTE = 0x78

# Smaller states are stored as plain pickles: compressing them costs time and
# saves no space. Readers tell them apart by the first byte (0x80, not 0x78).
_COMPRESS_MIN_BYTES = 64

# A pickler's memo gets slow to clear once large: start afresh past this.
_PICKLER_RESET_BYTES = 20000


def pack_record(oid: bytes, data: bytes, refs: bytes) -> bytes:
    """Return the record for an object."""
    return b"".join((oid, int4_to_str(len(data)), data, refs))


def unpack_record(record: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (oid, data, refs) of a record."""
    data_end = 12 + str_to_int4(record[8:12])
    return record[:8], record[12:data_end], record[data_end:]


def split_oids(s: bytes) -> list[bytes]:
    """Split a concatenation of 8-byte oids into a list."""
    if len(s) % 8:
        raise ValueError("oid list of %d bytes is not a multiple of 8" % len(s))
    return [s[i:i + 8] for i in range(0, len(s), 8)]


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
    (and this connection); get_new_objects() hands them to the commit loop.
    Call close() when done: Picklers don't take part in garbage collection.
    """

    def __init__(self, connection):
        self.connection = connection
        self.refs = set()
        self.new_objects = []
        self._reset_pickler()

    def _reset_pickler(self):
        self.buffer = BytesIO()
        self.pickler = Pickler(self.buffer, PICKLE_PROTOCOL)
        # The pickler asks about every object it meets: keep the common "not
        # persistent" answer in C, calling Python only for persistent objects.
        self.pickler.persistent_id = partial(call_if_persistent, self._reference)
        self.bytes_written = 0

    def _reference(self, obj) -> tuple:
        """Return the persistent id (oid, class) of a referenced object."""
        connection = obj._p_connection
        if obj._p_oid is None:
            obj._p_oid = self.connection.new_oid()
            obj._p_connection = self.connection
            self.new_objects.append(obj)
        elif connection is not self.connection:
            raise ValueError(
                "%r belongs to a different connection and cannot be stored here" % obj)
        self.refs.add(obj._p_oid)
        return obj._p_oid, type(obj)

    def take_new_objects(self) -> list:
        """Return and forget the objects that got an oid since the last call."""
        found = self.new_objects
        self.new_objects = []
        return found

    def get_state(self, obj) -> tuple[bytes, bytes]:
        """Return (data, refs) for obj."""
        if self.bytes_written > _PICKLER_RESET_BYTES:
            self._reset_pickler()
        else:
            self.buffer.seek(0)
            self.buffer.truncate()
            self.pickler.clear_memo()
        self.pickler.dump(type(obj))
        class_end = self.buffer.tell()
        self.refs.clear()
        self.pickler.dump(obj.__getstate__())
        pickled = self.buffer.getvalue()
        state = pickled[class_end:]
        if WRITE_COMPRESSED_STATE_PICKLES and len(state) > _COMPRESS_MIN_BYTES:
            state = compress(state)
        data = pickled[:class_end] + state
        self.bytes_written += len(data)
        self.refs.discard(obj._p_oid)
        return data, b"".join(sorted(self.refs))

    def close(self):
        self.pickler = None
        self.buffer = None


class ObjectReader:
    """Turns record data back into classes and states for one connection."""

    def __init__(self, connection):
        self.connection = connection
        self.load_count = 0

    def _persistent_load(self, oid_class):
        oid, cls = oid_class
        return self.connection.get_cache().get_instance(oid, cls, self.connection)

    def _start(self, data: bytes):
        """Return (unpickler, buffer, class) with the buffer at the state pickle,
        decompressed in place when it is compressed."""
        buffer = BytesIO(data)
        unpickler = Unpickler(buffer)
        unpickler.persistent_load = self._persistent_load
        cls = unpickler.load()
        position = buffer.tell()
        if position < len(data) and data[position] == COMPRESSED_START_BYTE:
            try:
                state = decompress(data[position:])
            except ZlibError:
                pass  # Not compressed after all: a plain pickle that starts with 'x'.
            else:
                buffer.truncate(position)
                buffer.write(state)
                buffer.seek(position)
        return unpickler, buffer, cls

    def get_state(self, data: bytes, load: bool = True):
        """Return the unpickled state of a record's data (or, with load False, its pickle)."""
        self.load_count += 1
        unpickler, buffer, _ = self._start(data)
        if load:
            return unpickler.load()
        return buffer.read()

    def get_state_pickle(self, data: bytes) -> bytes:
        """Return the uncompressed state pickle of a record's data."""
        return self.get_state(data, load=False)

    def get_class_and_state(self, data: bytes):
        """Return (class, state) of a record's data."""
        self.load_count += 1
        unpickler, _, cls = self._start(data)
        return cls, unpickler.load()

    def get_ghost(self, data: bytes):
        """Return a new ghost of the record's class, without connection or oid."""
        cls = loads(data)
        ghost = cls.__new__(cls)
        ghost._p_set_status_ghost()
        return ghost

    def get_load_count(self) -> int:
        return self.load_count

