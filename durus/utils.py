"""Integer packing and exact-length I/O helpers shared by storages and the wire protocol.

In Durus names, 'int4' is an unsigned 32-bit big-endian integer and 'int8' an
unsigned 64-bit one.
"""

import struct
from io import BytesIO
from pickle import Pickler, Unpickler, dumps, loads

_INT8 = struct.Struct(">Q")
_INT4 = struct.Struct(">L")

byte_string = (bytes, bytearray)
empty_byte_string = b""
join_bytes = b"".join
BytesIO, Pickler, Unpickler, dumps, loads  # re-exported for Durus compatibility


def int8_to_str(n: int) -> bytes:
    return _INT8.pack(n)


def str_to_int8(s: bytes) -> int:
    return _INT8.unpack(s)[0]


def int4_to_str(n: int) -> bytes:
    return _INT4.pack(n)


def str_to_int4(s: bytes) -> int:
    return _INT4.unpack(s)[0]


def as_bytes(s) -> bytes:
    """Return s as bytes; str is encoded as latin-1 (Durus's convention)."""
    if isinstance(s, byte_string):
        return bytes(s)
    return s.encode("latin1")


def iteritems(mapping):
    return iter(mapping.items())


class ShortRead(IOError):
    """Fewer bytes were available than the format requires."""


def read(f, n: int) -> bytes:
    """Read exactly n bytes from a file or socket, or raise ShortRead."""
    file_read = getattr(f, "read", None)
    if file_read is not None:
        data = file_read(n)
        if len(data) < n:
            raise ShortRead("wanted %d bytes, got %d" % (n, len(data)))
        return data
    chunks = []
    remaining = n
    while remaining > 0:
        chunk = f.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ShortRead("connection closed with %d of %d bytes unread" % (remaining, n))
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def write(f, s) -> None:
    """Write all of s to a file or socket."""
    data = as_bytes(s)
    file_write = getattr(f, "write", None)
    if file_write is not None:
        file_write(data)
    else:
        f.sendall(data)


def write_all(f, *parts) -> None:
    write(f, b"".join(as_bytes(p) for p in parts))


def read_int8(f) -> int:
    return str_to_int8(read(f, 8))


def write_int8(f, n: int) -> None:
    write(f, int8_to_str(n))


def read_int8_str(f) -> bytes:
    return read(f, read_int8(f))


def write_int8_str(f, s: bytes) -> None:
    write(f, int8_to_str(len(s)) + s)


def read_int4(f) -> int:
    return str_to_int4(read(f, 4))


def write_int4(f, n: int) -> None:
    write(f, int4_to_str(n))


def read_int4_str(f) -> bytes:
    return read(f, read_int4(f))


def write_int4_str(f, s: bytes) -> None:
    write(f, int4_to_str(len(s)) + s)
