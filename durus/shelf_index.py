"""The persisted index of a SHELF-1 file: <name>.index, kept beside it.

It saves the scan of the transactions after the offset map at open: a
writer that closes cleanly writes the positions of their records, with
what tells that they describe this very file, as it was then:

index   = MAGIC + head + dense + sparse + int4 CRC-32 of all before it
head    = int8s: st_dev, st_ino, st_mtime_ns, st_ctime_ns, covered end,
          map_start, word size, map count, CRC-32 of the 4 KiB before the
          covered end, oids indexed, len(dense), len(sparse)
dense   = int8 little-endian position per oid number (0: none)
sparse  = (int8 oid number, int8 position) pairs, little-endian

An index is used only if its own CRC holds, and the file is the same one
(device and inode), with the same header and offset map, at least as long
as the covered end, and the same bytes before that end. If the file is
unchanged since (same size and times), nothing more is read; if it grew
(a writer that was killed, Durus 4.3 appending), only the bytes after the
covered end are scanned. Anything else (it was cut, written in place,
replaced, another file's index copied here) and the whole file is scanned.
Durus 4.3 ignores the extra file, and the SHELF-1 file itself is unchanged.
"""

import os
import struct
import sys
import zlib
from array import array
from logging import WARNING
from typing import TYPE_CHECKING

from durus.logger import log

if TYPE_CHECKING:
    from durus.shelf import Shelf

MAGIC = b"durus shelf index 1\n"
_HEAD = struct.Struct("<12Q")
_CRC = struct.Struct("<L")
# The bytes before the covered end whose CRC-32 the index records.
_TAIL_BYTES = 4096
# Fewer bytes of transactions after the map than this are scanned at once:
# not worth a file beside the database.
MIN_SCANNED_BYTES = 1 << 16


def index_path(name: str) -> str:
    return name + ".index"


def _little_endian(values: array) -> array:
    """values, or a copy of them with the bytes of each swapped on a big-endian machine."""
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values


def _tail_crc(file, end: int, start: int) -> int:
    """CRC-32 of the bytes of file before end, from no further back than start."""
    first = max(start, end - _TAIL_BYTES)
    return zlib.crc32(file.pread(end - first, first))


def _identity(stat: os.stat_result) -> tuple:
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


def save(shelf: "Shelf") -> None:
    """Write the index of shelf (a Shelf on a File it writes, ending cleanly)
    beside its file, or remove an old one if the scan it saves is too short
    to matter. A failure is logged, not raised: the index only saves time."""
    name = index_path(shelf.file.get_name())
    try:
        if shelf.end - shelf.map_end < MIN_SCANNED_BYTES:
            _remove(name)
            return
        if shelf.index_end == shelf.end:
            return  # the index it was opened with still holds
        _write(name, shelf)
    except OSError as error:
        log(WARNING, "cannot write %s (%s): the next open will scan the file", name, error)


def _remove(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def _write(name: str, shelf) -> None:
    """Write the index to a new file, then put it at name in one step, so
    that a reader finds a whole index or none (a torn one fails its CRC)."""
    index = shelf.index
    dense = _little_endian(index.writable_dense())
    sparse = _little_endian(array("q", [v for pair in sorted(index.sparse.items())
                                          for v in pair]))
    file = shelf.file
    head = _HEAD.pack(*_identity(file.stat()), shelf.end, shelf.map_start, shelf.word_size,
                      shelf.map_count, _tail_crc(file, shelf.end, shelf.map_end),
                      len(index), len(dense), len(sparse) // 2)
    crc = zlib.crc32(sparse, zlib.crc32(dense, zlib.crc32(MAGIC + head)))
    temporary = name + ".new"
    with open(temporary, "wb") as f:
        f.write(MAGIC + head)
        f.write(dense)
        f.write(sparse)
        f.write(_CRC.pack(crc))
    os.replace(temporary, name)


def load(shelf: "Shelf", size: int) -> tuple | None:
    """The index beside the file of shelf (size bytes long), if it is valid
    for it: (covered end, dense array of positions, {oid number: position}
    beyond it, count of oids); else None."""
    try:
        with open(index_path(shelf.file.get_name()), "rb") as f:
            return _read_valid(f, shelf, size)
    except OSError:
        return None


def _read_valid(f, shelf, size: int) -> tuple | None:
    """What load() returns, from the open index file f. Its head is checked
    against the file first, so that a stale index costs one short read."""
    head = f.read(len(MAGIC) + _HEAD.size)
    if len(head) < len(MAGIC) + _HEAD.size or not head.startswith(MAGIC):
        return None
    (dev, ino, mtime, ctime, end, map_start, word_size, map_count, tail_crc, count,
     dense_length, sparse_length) = _HEAD.unpack_from(head, len(MAGIC))
    if os.fstat(f.fileno()).st_size != len(head) + 8 * (dense_length + 2 * sparse_length) + _CRC.size:
        return None  # cut short, or a damaged length (which must not size the arrays)
    stat = shelf.file.stat()
    if ((dev, ino, map_start, word_size, map_count)
            != (stat.st_dev, stat.st_ino, shelf.map_start, shelf.word_size, shelf.map_count)
            or not shelf.map_end <= end <= size
            or end == size and (mtime, ctime) != (stat.st_mtime_ns, stat.st_ctime_ns)
            or _tail_crc(shelf.file, end, shelf.map_end) != tail_crc):
        return None  # (the same length but newer times: written in place, damaged perhaps)
    # The positions stay in the bytes read: a reader never copies them.
    dense, sparse, crc = f.read(8 * dense_length), f.read(16 * sparse_length), f.read(_CRC.size)
    if len(crc) != _CRC.size or _CRC.unpack(crc)[0] != zlib.crc32(
            sparse, zlib.crc32(dense, zlib.crc32(head))):
        return None  # (a short read leaves crc short)
    pairs = _native(sparse)
    return end, _native(dense), dict(zip(pairs[::2], pairs[1::2])), count


def _native(little_endian: bytes):
    """The int8 values in little_endian bytes: a read-only memoryview, or
    on a big-endian machine, an array."""
    if sys.byteorder == "big":
        values = array("q")
        values.frombytes(little_endian)
        values.byteswap()
        return values
    return memoryview(little_endian).cast("q")
