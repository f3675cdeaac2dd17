"""Shelf: the SHELF-1 file format, a mapping from oid to record kept in an append-only file.

file        = b"SHELF-1\\n" + first_txn + offset_map + txn*
txn         = int8 n + n bytes of shelf records
shelf rec   = int8 m + oid (8) + object record (m - 8 bytes, starting with oid)
offset_map  = int8 (16 + w*k) + int8 w + int8 k + k words of w bytes

The offset map gives the position of each oid's record in first_txn (the
records a pack wrote); its unused words form a linked list of free oids.
Later transactions are scanned at open into an in-memory index.

Beyond Durus, each transaction we append ends with a checksum record under
the reserved oid CHECKSUM_OID: a valid object record (of class `object`)
whose state is the CRC-32 of the transaction's records before it. Durus 4.3
reads it as one more unreachable record and drops it when it packs. A torn
or damaged transaction fails the checksum or the structural checks that
every transaction gets, and is refused (or cut off with repair).
"""

import pickle
import struct
import zlib
from array import array

from durus.error import CorruptFileError
from durus.file import File, fsync_directory
from durus.utils import int8_to_str, str_to_int8

PREFIX = b"SHELF-1\n"
CHECKSUM_OID = b"\xff" * 8

_INT8 = struct.Struct(">Q")
_RECORD_HEAD = struct.Struct(">QQQL")  # m, shelf oid, record oid, len(data)
_CHECKSUM_NUMBER = str_to_int8(CHECKSUM_OID)
_MIN_RECORD_LENGTH = 8 + 12  # shelf oid + record oid + int4
_OBJECT_CLASS_PICKLE = pickle.dumps(object, 2)
# Records are usually small: one read of this size gets the length and the record.
_READ_AHEAD = 1024
# What a new, empty shelf holds. A file holding only the start of it was cut
# short while being created (or lost all else): it holds no transactions.
_NEW_SHELF = PREFIX + _INT8.pack(0) + struct.pack(">QQQ", 16, 1, 0)


def _checksum_record(crc: int) -> bytes:
    data = _OBJECT_CLASS_PICKLE + pickle.dumps(crc, 2)
    return CHECKSUM_OID + len(data).to_bytes(4, "big") + data


def _shelf_record(oid: bytes, record: bytes) -> bytes:
    return _INT8.pack(8 + len(record)) + oid + record


def _word_size(map_start: int, max_oid: int) -> int:
    """Bytes per offset-map word, as Durus computes it (max_oid -2 when empty)."""
    return ((map_start + max_oid + 3).bit_length() + 7) // 8


class PositionIndex:
    """{oid number: position} of the records written after the offset map.

    Oids are allocated densely, so most live in an array of 8 bytes per oid;
    the rare oid far beyond the others goes to a dict instead of growing it.
    """

    def __init__(self):
        self.dense = array("q")
        self.sparse = {}
        self.count = 0

    def get(self, n: int) -> int | None:
        if n < len(self.dense):
            return self.dense[n] or None
        return self.sparse.get(n)

    def __contains__(self, n: int) -> bool:
        return self.get(n) is not None

    def set(self, n: int, position: int) -> None:
        dense = self.dense
        if n >= len(dense) and n < 2 * self.count + 65536:
            dense.frombytes(bytes(8 * (n + 1 + len(dense) // 4 - len(dense))))
        if n < len(dense):
            if not dense[n]:
                self.count += 1
            dense[n] = position
        else:
            if n not in self.sparse:
                self.count += 1
            self.sparse[n] = position

    def update(self, pairs) -> None:
        for n, position in pairs:
            self.set(n, position)

    def __iter__(self):
        """Yield the oid numbers, ascending for the dense ones."""
        for n, position in enumerate(self.dense):
            if position:
                yield n
        yield from list(self.sparse)


class TornTransaction(Exception):
    """Internal: the transaction being scanned is incomplete or damaged."""


class Shelf:
    """An open SHELF-1 file: read records by oid, append transactions."""

    def __init__(self, file: File, repair: bool = False):
        """Open file, creating the shelf if the file is empty (or, with
        repair, if its creation was cut short).

        Raises CorruptFileError if the file is not a shelf, or if a transaction
        is incomplete or damaged and repair is False; with repair, the file is
        cut back to the end of the last good transaction.
        """
        self.file = file
        size = file.size()
        if size < len(_NEW_SHELF) and file.pread(size, 0) == _NEW_SHELF[:size]:
            if size and not repair:
                raise CorruptFileError(
                    "%r was cut short while being created, so it holds no transactions. "
                    "Open with repair=True (durus --repair) to create it afresh."
                    % file.get_name())
            if file.is_readonly():
                raise CorruptFileError("%r is empty, not a durus file" % file.get_name())
            for _ in write_shelf(file, ()):
                pass
            if not file.is_temporary():
                fsync_directory(file.get_name())
        self._read_header()
        self.index = PositionIndex()
        self.end = self._scan_transactions(repair)
        self._free_oids = None
        self._torn_end = False  # bytes of a failed append may follow self.end

    def _read_header(self) -> None:
        name = self.file.get_name()
        size = self.file.size()
        head = self.file.pread(16, 0)
        if head[:8] != PREFIX:
            raise CorruptFileError("%r is not a durus file (no SHELF-1 header)" % name)
        if len(head) < 16:
            raise CorruptFileError("%r is truncated inside its header" % name)
        self.map_start = 16 + str_to_int8(head[8:16])
        map_head = self.file.pread(24, self.map_start)
        if len(map_head) < 24:
            raise CorruptFileError("%r is truncated before its offset map" % name)
        length, self.word_size, self.map_count = struct.unpack(">QQQ", map_head)
        if not 1 <= self.word_size <= 8 or length != 16 + self.word_size * self.map_count:
            raise CorruptFileError("%r has a damaged offset map at %d" % (name, self.map_start))
        self.map_end = self.map_start + 8 + length
        if self.map_end > size:
            raise CorruptFileError("%r is truncated inside its offset map" % name)
        self.map_words = self.file.pread(self.word_size * self.map_count, self.map_start + 24)

    def _map_word(self, j: int) -> int:
        w = self.word_size
        return int.from_bytes(self.map_words[j * w:(j + 1) * w], "big")

    def _scan_transactions(self, repair: bool) -> int:
        """Index every transaction after the offset map; return the end of the last good one."""
        size = self.file.size()
        # Start of the run of empty transactions just before position: Durus
        # writes a zero length first and the real one last, so a crash can
        # leave an empty transaction followed by the records it should count.
        empty_run_start = None
        for position, offsets_or_error in _gen_transactions(self.file, self.map_end, size):
            if isinstance(offsets_or_error, TornTransaction):
                cut = position if empty_run_start is None else empty_run_start
                return self._handle_torn(cut, size, str(offsets_or_error), repair)
            if offsets_or_error:
                empty_run_start = None
                self.index.update(offsets_or_error)
            elif empty_run_start is None:
                empty_run_start = position
        return size

    def _handle_torn(self, position: int, size: int, reason: str, repair: bool) -> int:
        if not repair:
            raise CorruptFileError(
                "%r: the transaction at byte %d is incomplete or damaged (%s); "
                "%d bytes from there on are not a valid transaction. Open with "
                "repair=True (durus --repair) to cut the file back to its last "
                "complete transaction." % (self.file.get_name(), position, reason,
                                           size - position))
        self.file.truncate(position)
        self.file.fsync()
        return position

    def get_position(self, oid: bytes) -> int | None:
        """Return the position of the newest record of oid, or None."""
        j = str_to_int8(oid)
        position = self.index.get(j)
        if position is not None:
            return position
        if j < self.map_count:
            position = self._map_word(j)
            if position < self.map_start:
                return position
        return None

    def __contains__(self, oid: bytes) -> bool:
        return self.get_position(oid) is not None

    def read_record(self, position: int) -> bytes:
        """Return the object record stored at position."""
        chunk = self.file.pread(_READ_AHEAD, position)
        length = _INT8.unpack_from(chunk)[0]
        if length + 8 > len(chunk):
            chunk += self.file.pread(length + 8 - len(chunk), position + len(chunk))
        return chunk[16:8 + length]

    def get_value(self, oid: bytes) -> bytes | None:
        """Return the newest record of oid, or None."""
        position = self.get_position(oid)
        return None if position is None else self.read_record(position)

    def gen_oids(self):
        """Yield every oid that has a record (the checksum oid excluded)."""
        index = self.index
        for j in range(self.map_count):
            if self._map_word(j) < self.map_start and j not in index:
                yield int8_to_str(j)
        for j in index:
            yield int8_to_str(j)

    def gen_free_oids(self):
        """Yield oids without a record: the offset map's holes, then upwards from its end."""
        last = self.map_count - 1
        j = last
        for _ in range(self.map_count):  # bounded, in case the list is damaged
            j = self._map_word(j) - self.map_start
            if not 0 <= j <= last:
                break
            yield int8_to_str(j)
            if j == last:
                break
        j = self.map_count
        while True:
            yield int8_to_str(j)
            j += 1

    def next_free_oid(self) -> bytes:
        """Return an oid with no record that this method has not returned before."""
        if self._free_oids is None:
            self._free_oids = self.gen_free_oids()
        for oid in self._free_oids:
            if str_to_int8(oid) not in self.index:
                return oid

    def append(self, items, fsync: bool = True) -> None:
        """Write the (oid, record) pairs as one transaction at the end of the file.

        When this returns (with fsync) the transaction is on disk. If writing
        fails, the file is cut back so that it stays valid, and the error raised.
        """
        offsets = []
        parts = []
        position = self.end + 8
        for oid, record in items:
            offsets.append((str_to_int8(oid), position))
            part = _shelf_record(oid, record)
            parts.append(part)
            position += len(part)
        body = b"".join(parts)
        trailer = _shelf_record(CHECKSUM_OID, _checksum_record(zlib.crc32(body)))
        transaction = _INT8.pack(len(body) + len(trailer)) + body + trailer
        if self._torn_end:
            # Or a shorter transaction would leave the rest of them after it.
            self.file.truncate(self.end)
            self._torn_end = False
        try:
            self.file.pwrite(transaction, self.end)
            if fsync:
                self.file.fsync()
        except BaseException:
            self._cut_back()
            raise
        self.index.update(offsets)
        self.end += len(transaction)

    def _cut_back(self) -> None:
        """Remove whatever part of a failed append reached the file."""
        try:
            self.file.truncate(self.end)
        except OSError:
            self._torn_end = True  # the next append cuts it first; an open detects it

    def close(self) -> None:
        self.file.close()


_SCAN_CHUNK = 1 << 22


def _gen_transactions(file: File, position: int, size: int):
    """Yield (position, [(oid number, record position)]) for each transaction from
    position to size, or finally (position, TornTransaction) for a bad one.

    Reads in chunks, so that memory stays small whatever the file size.
    """
    buffer, base = b"", position
    while position < size:
        offset = position - base
        if offset + 8 > len(buffer):
            buffer, base, offset = file.pread(_SCAN_CHUNK, position), position, 0
        if offset + 8 > len(buffer):
            yield position, TornTransaction("its length field is cut off")
            return
        length = 8 + _INT8.unpack_from(buffer, offset)[0]
        if position + length > size:
            yield position, TornTransaction(
                "it claims %d bytes but the file ends first" % length)
            return
        if offset + length > len(buffer):
            buffer, base, offset = file.pread(max(_SCAN_CHUNK, length), position), position, 0
        end = offset + length
        try:
            offsets = _read_transaction(buffer, offset, end, base)
        except TornTransaction as reason:
            yield position, reason
            return
        yield position, offsets
        position = base + end


def _read_transaction(buffer: bytes, start: int, end: int, base: int) -> list:
    """Check the transaction in buffer[start:end], which is at file position
    base + start; return [(oid number, record position)].

    Raises TornTransaction if it is malformed or its checksum does not match.
    """
    offsets = []
    position = start + 8
    while position < end:
        if position + _RECORD_HEAD.size > end:
            raise TornTransaction("a record header is cut off at byte %d" % (base + position))
        length, oid, record_oid, data_length = _RECORD_HEAD.unpack_from(buffer, position)
        record_end = position + 8 + length
        refs_length = length - _MIN_RECORD_LENGTH - data_length
        if (length < _MIN_RECORD_LENGTH or record_end > end or oid != record_oid
                or refs_length < 0 or refs_length % 8):
            raise TornTransaction("malformed record at byte %d" % (base + position))
        if oid == _CHECKSUM_NUMBER:
            expected = _checksum_record(zlib.crc32(buffer[start + 8:position]))
            if record_end != end or buffer[position + 16:record_end] != expected:
                raise TornTransaction("checksum mismatch")
        else:
            offsets.append((oid, base + position))
        position = record_end
    return offsets


def write_shelf(file: File, items):
    """Write a new shelf holding the (oid, record) pairs into the empty file.

    A generator, so that a pack can be interleaved with other work: it yields
    now and then, and the shelf is complete (and fsynced) once it is exhausted.
    """
    buffer = []
    buffered = 0
    position = len(PREFIX) + 8
    first = position
    positions = {}
    for oid, record in items:
        part = _shelf_record(oid, record)
        positions[str_to_int8(oid)] = position
        buffer.append(part)
        buffered += len(part)
        position += len(part)
        if buffered > 1 << 20:
            file.pwrite(b"".join(buffer), position - buffered)
            buffer, buffered = [], 0
            yield position
    file.pwrite(b"".join(buffer), position - buffered)
    file.pwrite(PREFIX + int8_to_str(position - first), 0)
    yield from _write_offset_map(file, position, positions)
    file.fsync()


def _write_offset_map(file: File, map_start: int, positions: dict):
    """Write the offset map for {oid number: position}, holes stitched as Durus does."""
    max_oid = max(positions, default=-2)
    count = max_oid + 2
    w = _word_size(map_start, max_oid)
    words = bytearray(w * count)
    previous_hole = count - 1
    for j in range(count):
        value = positions.get(j)
        if value is None:
            value = previous_hole + map_start
            previous_hole = j
        words[j * w:(j + 1) * w] = value.to_bytes(w, "big")
        if j % 65536 == 65535:
            yield j
    file.pwrite(struct.pack(">QQQ", 16 + w * count, w, count) + words, map_start)
