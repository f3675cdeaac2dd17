"""The persisted index of a SHELF-1 file: <name>.index, kept beside it.

It saves the scan of the transactions after the offset map at open: a
writer that closes cleanly writes the positions of their records, with
what tells that they describe this very file, as it was then:

index   = MAGIC + head + table + padding + int4 CRC-32 of all before it
          + dense + sparse
head    = int8s: st_dev, st_ino, st_mtime_ns, st_ctime_ns, covered end,
          map_start, word size, map count, CRC-32 of the 4 KiB before the
          covered end, oids indexed, len(dense), len(sparse)
table   = int4 CRC-32 of each chunk of CHUNK_SLOTS positions of dense,
          then of sparse
padding = zero bytes that start dense at a multiple of 8
dense   = int8 little-endian position per oid number (0: none)
sparse  = (int8 oid number, int8 position) pairs, little-endian

An index is used only if its head and table hold, and the file is the
same one (device and inode), with the same header and offset map, at
least as long as the covered end, and the same bytes before that end. If
the file is unchanged since (same size and times), nothing more is read;
if it grew (a writer that was killed, Durus 4.3 appending), only the bytes
after the covered end are scanned. Anything else (it was cut, written in
place, replaced, another file's index copied here) and the whole file is
scanned. Durus 4.3 ignores the extra file, and the SHELF-1 file itself is
unchanged.

The dense positions are not read at open: the index is mapped, and each
chunk is checked against its CRC the first time a lookup needs it
(Saved.check), so that an open costs the same whatever the file holds. A
chunk that fails its CRC is never used: the shelf scans the file instead.
"""

import mmap
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

MAGIC = b"durus shelf index 2\n"
_HEAD = struct.Struct("<12Q")
_CRC = struct.Struct("<L")
# Positions per chunk of the dense array that one CRC-32 of the table
# covers (64 KiB): what the first lookup in a chunk reads and checks.
CHUNK_SHIFT = 13
CHUNK_SLOTS = 1 << CHUNK_SHIFT
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


def _chunk_count(dense_length: int) -> int:
    return -(-dense_length // CHUNK_SLOTS)


def _prefix_size(dense_length: int) -> int:
    """Bytes before dense: MAGIC, head, table, padding and their CRC."""
    unpadded = len(MAGIC) + _HEAD.size + _CRC.size * (_chunk_count(dense_length) + 2)
    return unpadded + -unpadded % 8


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
    that a reader finds a whole index or none (a torn one fails its CRCs)."""
    index = shelf.index
    dense = _little_endian(index.writable_dense())
    sparse = _little_endian(array("q", [v for pair in sorted(index.sparse.items())
                                          for v in pair]))
    file = shelf.file
    head = _HEAD.pack(*_identity(file.stat()), shelf.end, shelf.map_start, shelf.word_size,
                      shelf.map_count, _tail_crc(file, shelf.end, shelf.map_end),
                      len(index), len(dense), len(sparse) // 2)
    dense_bytes = memoryview(dense).cast("B")
    step = 8 * CHUNK_SLOTS
    crcs = [zlib.crc32(dense_bytes[i:i + step]) for i in range(0, len(dense_bytes), step)]
    crcs.append(zlib.crc32(sparse))
    prefix = MAGIC + head + struct.pack("<%dL" % len(crcs), *crcs)
    prefix += bytes(_prefix_size(len(dense)) - _CRC.size - len(prefix))
    temporary = name + ".new"
    with open(temporary, "wb") as f:
        f.write(prefix + _CRC.pack(zlib.crc32(prefix)))
        f.write(dense_bytes)
        f.write(sparse)
    os.replace(temporary, name)


class Saved:
    """The positions of a valid index, read in place.

    dense: a read-only memoryview ("q") of the mapped index (on a big-endian
    machine, an array, all checked at load), to be used only in the chunks
    that check() passed; sparse: {oid number: position} beyond it; count:
    the oids indexed; end: the end of the file that they cover.
    """

    def __init__(self, end: int, count: int, sparse: dict, buffer, dense_offset: int,
                 dense_length: int, crcs: tuple) -> None:
        self.end, self.count, self.sparse = end, count, sparse
        self._buffer = buffer  # an mmap, or bytes if it could not be mapped
        self._bytes = memoryview(buffer)[dense_offset:dense_offset + 8 * dense_length]
        self.dense: "memoryview | array" = self._bytes.cast("q")
        self._crcs = crcs
        # Per chunk: 1 once its CRC held.
        self.checked = bytearray(len(crcs))

    def check(self, chunk: int) -> bool:
        """Tell whether chunk number chunk of dense holds its CRC (so it may be used)."""
        step = 8 * CHUNK_SLOTS
        if zlib.crc32(self._bytes[chunk * step:(chunk + 1) * step]) != self._crcs[chunk]:
            return False
        self.checked[chunk] = 1
        return True

    def check_all(self) -> bool:
        """Tell whether every chunk of dense holds its CRC."""
        return all(self.checked[chunk] or self.check(chunk) for chunk in range(len(self._crcs)))

    def release(self) -> None:
        """Unmap the index: dense may not be used after this."""
        if isinstance(self.dense, memoryview):
            self.dense.release()
        self._bytes.release()
        if isinstance(self._buffer, mmap.mmap):
            self._buffer.close()


def load(shelf: "Shelf", size: int) -> Saved | None:
    """The index beside the file of shelf (size bytes long), if its head and
    table are valid for it; else None."""
    try:
        with open(index_path(shelf.file.get_name()), "rb") as f:
            return _read_valid(f, shelf, size)
    except OSError:
        return None


def _read_valid(f, shelf, size: int) -> Saved | None:
    """What load() returns, from the open index file f. Its head is checked
    against the file first, so that a stale index costs one short read."""
    head = f.read(len(MAGIC) + _HEAD.size)
    if len(head) < len(MAGIC) + _HEAD.size or not head.startswith(MAGIC):
        return None
    (dev, ino, mtime, ctime, end, map_start, word_size, map_count, tail_crc, count,
     dense_length, sparse_length) = _HEAD.unpack_from(head, len(MAGIC))
    dense_offset = _prefix_size(dense_length)
    sparse_offset = dense_offset + 8 * dense_length
    if os.fstat(f.fileno()).st_size != sparse_offset + 16 * sparse_length:
        return None  # cut short, or a damaged length (which must not size the table)
    stat = shelf.file.stat()
    if ((dev, ino, map_start, word_size, map_count)
            != (stat.st_dev, stat.st_ino, shelf.map_start, shelf.word_size, shelf.map_count)
            or not shelf.map_end <= end <= size
            or end == size and (mtime, ctime) != (stat.st_mtime_ns, stat.st_ctime_ns)
            or _tail_crc(shelf.file, end, shelf.map_end) != tail_crc):
        return None  # (the same length but newer times: written in place, damaged perhaps)
    rest = f.read(dense_offset - len(head))
    prefix = head + rest[:-_CRC.size]
    if len(rest) != dense_offset - len(head) or zlib.crc32(prefix) != _CRC.unpack(rest[-_CRC.size:])[0]:
        return None
    crcs = struct.unpack_from("<%dL" % (_chunk_count(dense_length) + 1), prefix, len(head))
    # The sparse part is small and read whole, so it is checked now.
    f.seek(sparse_offset)
    sparse = f.read()
    if zlib.crc32(sparse) != crcs[-1]:
        return None
    pairs = _native(sparse)
    saved = Saved(end, count, dict(zip(pairs[::2], pairs[1::2])), _map(f), dense_offset,
                  dense_length, crcs[:-1])
    if sys.byteorder == "big":  # the positions are swapped into an array, all checked first
        valid = saved.check_all()
        native = _native(memoryview(saved.dense).cast("B"))
        saved.release()
        saved.dense = native
        return saved if valid else None
    return saved


def _map(f):
    """The whole of the open file f: mapped read-only, or if it cannot be, read."""
    try:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # (no mmap on this file or system)
        f.seek(0)
        return f.read()


def _native(little_endian):
    """The int8 values in little_endian bytes: a read-only memoryview, or
    on a big-endian machine, an array."""
    if sys.byteorder == "big":
        values = array("q")
        values.frombytes(little_endian)
        values.byteswap()
        return values
    return memoryview(little_endian).cast("q")
