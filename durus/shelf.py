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
every transaction gets, and is refused (or cut off with repair). The one
exception is a last transaction cut short while a writer's mark says one was
at work: a commit in flight, which readers leave out and the next writer drops.
"""

import os
import pickle
import struct
import weakref
import zlib
from array import array
from logging import WARNING
from typing import IO, Any, Callable, Iterable, Iterator, Protocol

from durus import shelf_index
from durus.accelerator import accelerate
from durus.error import CorruptFileError, ShortReadError, WrongFormatError
from durus.file import File, StreamFile, fsync_directory
from durus.logger import log
from durus.record_format import is_record_shape
from durus.utils import IntArray, as_bytes, int8_to_str, str_to_int8

PREFIX = b"SHELF-1\n"
CHECKSUM_OID = b"\xff" * 8

_INT8 = struct.Struct(">Q")
_RECORD_HEAD = struct.Struct(">QQQL")  # m, shelf oid, record oid, len(data)
_ITEM_HEAD = struct.Struct(">QQ")  # m, shelf oid: the part of a record Durus's Shelf reads
_CHECKSUM_NUMBER = str_to_int8(CHECKSUM_OID)
# The checksum record's data: the class pickle of `object`, then the CRC-32
# as a protocol-2 pickle of an int in a fixed-size form (LONG1, 5 bytes).
_CHECKSUM_DATA_HEAD = pickle.dumps(object, 2) + b"\x80\x02\x8a\x05"
_CHECKSUM_DATA_LENGTH = len(_CHECKSUM_DATA_HEAD) + 6


_CHUNK_SHIFT = shelf_index.CHUNK_SHIFT
# Bytes of the offset map read at once.
_MAP_PAGE_BYTES = 1 << 16
# Bytes read at once from a record's position: the file stays unchanged up to
# its end, so they serve later reads of the records that follow.
_READ_AHEAD = 16384
# What a new, empty shelf holds. A file holding only the start of it was cut
# short while being created (or lost all else): it holds no transactions.
_NEW_SHELF = PREFIX + _INT8.pack(0) + struct.pack(">QQQ", 16, 1, 0)


def _checksum_record(crc: int) -> bytes:
    """The object record holding a transaction's CRC-32."""
    return (CHECKSUM_OID + _CHECKSUM_DATA_LENGTH.to_bytes(4, "big")
            + _CHECKSUM_DATA_HEAD + crc.to_bytes(5, "little") + b".")


def _oid_number(oid: bytes) -> int:
    try:
        return _INT8.unpack(oid)[0]
    except struct.error:
        raise ValueError("an oid is 8 bytes, not %r" % (oid,)) from None


def _shelf_record(oid: bytes, record: bytes) -> bytes:
    return _INT8.pack(8 + len(record)) + oid + record


def _word_size(map_start: int, max_oid: int) -> int:
    """Bytes per offset-map word, as Durus computes it (max_oid -2 when empty)."""
    return ((map_start + max_oid + 3).bit_length() + 7) // 8


class PositionIndex:
    """{oid number: position} of the records written after the offset map.

    Oids are allocated densely, so most live in an array of 8 bytes per oid;
    the rare oid far beyond the others goes to a dict instead of growing it.
    Each oid has one home: the dict holds only oids beyond the array's end,
    and growing the array moves the ones it now reaches into it.
    """

    # The dense array may reach this many slots beyond twice its entries.
    slack = 65536

    def __init__(self) -> None:
        self.dense = array("q")
        self.sparse: dict[int, int] = {}
        self.count = 0

    def get(self, n: int) -> int | None:
        if n < len(self.dense):
            return self.dense[n] or None
        return self.sparse.get(n)

    def __contains__(self, n: int) -> bool:
        return self.get(n) is not None

    def __len__(self) -> int:
        return self.count

    def writable_dense(self) -> array:
        """The dense array, to be changed in place."""
        return self.dense

    def close(self) -> None:
        """Let go of what the index holds beyond its memory (here, nothing)."""

    def _grow_for(self, n: int, count: int) -> bool:
        """Make the dense array reach n if that keeps it dense enough for
        count entries; tell whether n is within it."""
        dense = self.writable_dense()
        if n >= len(dense) and n < 2 * count + self.slack:
            dense.frombytes(bytes(8 * (n + 1 + len(dense) // 4 - len(dense))))
            self._move_into_dense()
        return n < len(dense)

    def _move_into_dense(self) -> None:
        """Move the sparse entries that the dense array now reaches into it."""
        dense, sparse = self.dense, self.sparse
        reached = [n for n in sparse if n < len(dense)]
        for n in reached:
            dense[n] = sparse.pop(n)

    def set(self, n: int, position: int) -> None:
        if position <= 0:
            raise ValueError("a record position is > 0, not %r" % (position,))
        if self._grow_for(n, self.count):
            dense = self.dense
            if not dense[n]:
                self.count += 1
            dense[n] = position
        else:
            if n not in self.sparse:
                self.count += 1
            self.sparse[n] = position

    def discard(self, n: int) -> None:
        dense = self.writable_dense()
        if n < len(dense):
            if dense[n]:
                dense[n] = 0
                self.count -= 1
        elif self.sparse.pop(n, None) is not None:
            self.count -= 1

    def restore(self, oids: Iterable[int], previous: list) -> None:
        """Undo an update of oids: previous[i] is what get(oids[i]) answered before it."""
        for n, position in zip(oids, previous):
            if position is None:
                self.discard(n)
            else:
                self.set(n, position)

    def update(self, oids: array, positions: array) -> None:
        """Set the positions of the oid numbers, pairwise (arrays of "Q" and "q")."""
        if oids and self._grow_for(max(oids), self.count + len(oids)):
            self.count += assign_positions(self.dense, oids, positions)
        else:
            for n, position in zip(oids, positions):
                self.set(n, position)

    def __iter__(self):
        """Yield the oid numbers, ascending for the dense ones."""
        for n, _ in self.items():
            yield n

    def items(self) -> Iterator[tuple[int, int]]:
        """Yield (oid number, position), ascending for the dense ones."""
        for n, position in enumerate(self.dense):
            if position:
                yield n, position
        yield from list(self.sparse.items())


class SavedPositionIndex(PositionIndex):
    """A PositionIndex read in place from a persisted index (a
    shelf_index.Saved), so that an open reads none of its positions: each
    chunk of the dense array is checked the first time a lookup needs it.

    It becomes a plain PositionIndex at the first change (with a copy of
    the dense array, all checked first), or as soon as a chunk fails its
    check: then of the positions rescan() finds by scanning the file, so
    that a damaged index is never used.
    """

    def __init__(self, saved: shelf_index.Saved, rescan: Callable[[], PositionIndex]) -> None:
        self.dense, self.sparse, self.count = saved.dense, saved.sparse, saved.count  # type: ignore[assignment]
        # Weakly: a shelf dropped unclosed is freed at once, its file closed.
        self._saved, self._rescan = saved, weakref.WeakMethod(rescan)
        self._checked = saved.checked

    def get(self, n: int) -> int | None:
        dense = self.dense
        if n < len(dense):
            if not self._checked[n >> _CHUNK_SHIFT] and not self._saved.check(n >> _CHUNK_SHIFT):
                self._fall_back()
                return self.get(n)  # a plain PositionIndex's now
            return dense[n] or None
        return self.sparse.get(n)

    def writable_dense(self) -> array:
        if self._saved.check_all():
            dense = array("q")
            dense.frombytes(memoryview(self.dense).cast("B"))
            self._become(dense, self.sparse, self.count)
        else:
            self._fall_back()
        return self.dense

    def items(self) -> Iterator[tuple[int, int]]:
        if not self._saved.check_all():
            self._fall_back()
        return PositionIndex.items(self)

    def close(self) -> None:
        self._saved.release()

    def _fall_back(self) -> None:
        fresh = self._rescan()()  # type: ignore[misc]
        self._become(fresh.dense, fresh.sparse, fresh.count)

    def _become(self, dense: array, sparse: dict, count: int) -> None:
        """Turn into a plain PositionIndex of these, the persisted index let go
        (unmapped once nothing uses it: an iteration under way may)."""
        del self._saved, self._rescan, self._checked
        self.dense, self.sparse, self.count = dense, sparse, count
        # The checks leave the lookups of this object, wherever it is held.
        self.__class__ = PositionIndex  # type: ignore[assignment]


def is_new_file(file: "File | StreamFile", header: bytes, repair: bool, writer_marked: bool) -> bool:
    """Tell whether file is new: empty, or holding no more than the start of
    header (its creation cut short, which needs repair or a writer's mark),
    so that the caller writes it afresh. An empty file opened read-only is
    refused: there is nothing to read and it may not be written."""
    size = file.size()
    if size >= len(header) or file.pread(size, 0) != header[:size]:
        return False
    if size and not (repair or writer_marked):
        raise ShortReadError(
            "%r was cut short while being created, so it holds no transactions. "
            "Open with repair=True (durus --repair) to create it afresh." % file.get_name())
    if file.is_readonly():
        raise WrongFormatError("%r is empty, not a durus file" % file.get_name())
    return True


class _AppendOnlyFile(Protocol):
    """What Shelf's handling of a bad end and its appends use of self:
    durus.file_storage2.Dfs20File borrows those methods."""

    index: "PositionIndex"
    end: int
    _torn_end: bool

    @property
    def file(self) -> File | StreamFile: ...

    def _cut_back(self) -> None: ...


class Shelf:
    """An open SHELF-1 file: a map of 8-byte names (oids) to values (object
    records), kept as transactions appended to the file.

    Read records by oid, append transactions; Durus's Shelf API (store,
    get_value, next_name, iterindex, items) works on it too.
    """

    # file: File | str | os.PathLike | binary stream | None (Any: it is rebound to a File or StreamFile).
    def __init__(self, file: Any = None,
                 items: Iterable[tuple[bytes | str, bytes | str]] | None = None,
                 repair: bool = False, readonly: bool = False,
                 writer_marked: bool = False) -> None:
        """Open file, creating the shelf if the file is empty (or, with
        repair or writer_marked, if its creation was cut short).

        file: File | str | binary stream (a BytesIO, an open file) | None for
        a temporary file. readonly applies when file is a name or a stream.
        items: (name, value) pairs (bytes or str) that a new shelf starts
        with; only for an empty file.

        Raises CorruptFileError if the file is not a shelf (WrongFormatError),
        or if a transaction is incomplete or damaged (ShortReadError) and
        repair is False; with repair, the file is cut back to the end of the
        last good transaction.

        writer_marked: whether a writer's mark (file.WriterMark) was present,
        so that a last transaction cut short is a commit in flight: it is left
        out, and cut off unless the file is read-only.
        """
        if file is None:
            file = File(readonly=readonly)  # refused if readonly: it would be empty
        elif isinstance(file, (str, os.PathLike)):
            file = File(os.fspath(file), readonly=readonly)
        elif not isinstance(file, File):
            file = StreamFile(file, readonly=readonly)
        if not file.is_readonly():
            file.obtain_lock()
        self.file = file
        if is_new_file(file, _NEW_SHELF, repair, writer_marked):
            pairs = ((as_bytes(name), as_bytes(value)) for name, value in items or ())
            for _ in write_shelf(file, pairs):
                pass
            if isinstance(file, File) and not file.is_temporary():
                fsync_directory(file.get_name())
        elif items is not None:
            raise ValueError("items are for a new shelf, but %r is not empty" % file.get_name())
        self._read_header()
        self.index = PositionIndex()
        # Where the persisted index this shelf was opened with ends (the
        # scan went on from there), or None if the whole file was scanned.
        self.index_end: int | None = None
        self.end = self._scan_transactions(repair, writer_marked)
        self._chunk_start, self._chunk = 0, b""
        self._free_oids: Iterator[bytes] | None = None
        self._torn_end = False  # bytes of a failed append may follow self.end

    def _read_header(self) -> None:
        name = self.file.get_name()
        size = self.file.size()
        head = self.file.pread(16, 0)
        if head[:8] != PREFIX:
            raise WrongFormatError("%r is not a durus file (no SHELF-1 header)" % name)
        if len(head) < 16:
            raise ShortReadError("%r is truncated inside its header" % name)
        self.map_start = 16 + str_to_int8(head[8:16])
        if self.map_start > size - 24:
            raise ShortReadError("%r is truncated before its offset map: the header at "
                                   "byte 8 puts it at byte %d, the file has %d bytes"
                                   % (name, self.map_start, size))
        map_head = self.file.pread(24, self.map_start)
        length, self.word_size, self.map_count = struct.unpack(">QQQ", map_head)
        if not 1 <= self.word_size <= 8 or length != 16 + self.word_size * self.map_count:
            raise CorruptFileError("%r has a damaged offset map at %d" % (name, self.map_start))
        self.map_end = self.map_start + 8 + length
        if self.map_end > size:
            raise ShortReadError("%r is truncated inside its offset map" % name)
        # The map is read a page at a time, as lookups need it, so that a
        # packed file of any size opens at once.
        self._map_page_words = _MAP_PAGE_BYTES // self.word_size
        self._map_pages: dict[int, bytes] = {}

    def _map_word(self, j: int) -> int:
        page_number, k = divmod(j, self._map_page_words)
        page = self._map_pages.get(page_number)
        if page is None:
            page = self._map_pages[page_number] = self._read_map_page(page_number)
        w = self.word_size
        return int.from_bytes(page[k * w:(k + 1) * w], "big")

    def _read_map_page(self, page_number: int) -> bytes:
        first = page_number * self._map_page_words
        count = min(self._map_page_words, self.map_count - first)
        page = self.file.pread(count * self.word_size, self.map_start + 24 + first * self.word_size)
        if len(page) < count * self.word_size:
            raise ShortReadError("%r is truncated inside its offset map" % self.file.get_name())
        return page

    def _scan_transactions(self, repair: bool, writer_marked: bool) -> int:
        """Index every transaction after the offset map (those the persisted
        index covers, from it); return the end of the last good one."""
        size = self.file.size()
        return self._scan(self._load_index(size), size, repair, writer_marked)

    def _scan(self, position: int, size: int, repair: bool, writer_marked: bool) -> int:
        """Index the transactions from position up to size; return the end
        of the last good one."""
        # Where the run of empty transactions just before position starts, or
        # -1: Durus writes a zero length first and the real one last, so a
        # crash can leave an empty transaction followed by the records it counts.
        empty_run_start = -1
        needed = 0
        while position < size:
            if position + needed > size:
                if writer_marked and _is_cut_short(self.file.pread(size - position, position)):
                    return self._drop_commit_in_flight(position, size)
                reason = ("its length field is cut off" if size - position < 8 else
                          "it claims %d bytes but the file ends first" % needed)
                return self._handle_torn(empty_run_start, position, size, reason, repair)
            buffer = self.file.pread(min(max(_SCAN_CHUNK, needed), size - position), position)
            end, oids, positions, run_start, error, needed = scan_buffer(buffer, position)
            self.index.update(oids, positions)
            # A run that starts where this buffer does goes on from the one before it.
            if end and (run_start != position or empty_run_start == -1):
                empty_run_start = run_start
            position += end
            if error:
                return self._handle_torn(empty_run_start, position, size, error, repair)
        return position

    def _load_index(self, size: int) -> int:
        """Fill self.index from the persisted index if there is a valid one;
        return where the scan starts: after what it covers, or after the map."""
        if not isinstance(self.file, File) or self.file.is_temporary():
            return self.map_end
        saved = shelf_index.load(self, size)
        if saved is None:
            return self.map_end
        self.index_end = saved.end
        self.index = SavedPositionIndex(saved, self._rescan)
        return saved.end

    def _rescan(self) -> PositionIndex:
        """The positions of the records up to self.end, by scanning the file:
        what stands in for a persisted index found damaged (which a writer's
        close then replaces). Raises CorruptFileError if the file is damaged."""
        log(WARNING, "%s is damaged: the positions in %r are found by scanning it instead"
            % (shelf_index.index_path(self.file.get_name()), self.file.get_name()))
        saved, self.index = self.index, PositionIndex()
        try:
            self._scan(self.map_end, self.end, False, False)
            fresh = self.index
        finally:
            self.index = saved
        self.index_end = None
        return fresh

    def save_index(self) -> None:
        """Persist the index beside the file (a File this shelf writes, which
        ends cleanly), so that the next open need not scan what it covers."""
        self._check_open()
        if isinstance(self.file, File) and not (self.file.is_temporary()
                                                or self.file.is_readonly()):
            shelf_index.save(self)

    def _handle_torn(self: _AppendOnlyFile, empty_run_start: int, position: int, size: int,
                     reason: str, repair: bool) -> int:
        if empty_run_start != -1:
            position = empty_run_start
        if not repair:
            raise ShortReadError(
                "%r: the transaction at byte %d is incomplete or damaged (%s); "
                "%d bytes from there on are not a valid transaction. Open with "
                "repair=True (durus --repair) to cut the file back to its last "
                "complete transaction." % (self.file.get_name(), position, reason,
                                           size - position))
        self.file.truncate(position)
        self.file.fsync()
        return position

    def _drop_commit_in_flight(self: _AppendOnlyFile, position: int, size: int) -> int:
        if not self.file.is_readonly():
            log(WARNING, "%r: dropped %d bytes at byte %d, the start of a commit that its "
                "writer left unfinished when it stopped (the commit had not returned)"
                % (self.file.get_name(), size - position, position))
            self.file.truncate(position)
            self.file.fsync()
        return position

    def ends_cleanly(self) -> bool:
        """Tell whether the file ends with the last transaction appended."""
        self._check_open()
        return not self._torn_end

    @property
    def closed(self) -> bool:
        return self.file.closed

    def _check_open(self) -> None:
        if self.file.closed:
            raise ValueError("operation on a closed shelf (%r)" % self.file.get_name())

    def get_file(self) -> File | StreamFile:
        """The File (or StreamFile) the shelf lives in."""
        return self.file

    def get_offset_map(self) -> "OffsetMap":
        """Durus's view of the offset map (it moves a File's stream position)."""
        self._check_open()
        stream = self.file if isinstance(self.file, File) else self.file.stream
        stream.seek(self.map_start)
        return OffsetMap(stream)

    def get_position(self, oid: bytes) -> int | None:
        """Return the position of the newest record of oid, or None."""
        self._check_open()
        return self._position(_oid_number(oid))

    def _position(self, j: int) -> int | None:
        position = self.index.get(j)
        if position is None and j < self.map_count:
            return self._packed_position(j)
        return position

    def _packed_position(self, j: int) -> int | None:
        """The position of oid number j's record among the packed ones, or None
        (the map's word for j < map_count is a position or a link of the free list)."""
        word = self._map_word(j)
        if word < self.map_start:
            return word
        if word - self.map_start >= self.map_count:
            raise CorruptFileError("%r: the offset map's word for oid %d (at byte %d) is damaged"
                                   % (self.file.get_name(), j,
                                      self.map_start + 24 + j * self.word_size))
        return None

    def __contains__(self, oid: bytes) -> bool:
        return self.get_position(oid) is not None

    def read_record(self, position: int) -> bytes:
        """Return the object record stored at position.

        Raises CorruptFileError if there is no well-formed record there.
        """
        self._check_open()
        return self._read_record(position, None)

    def get_record(self, oid: bytes) -> bytes | None:
        """Return the newest record of oid, or None.

        Raises CorruptFileError if the file's index points at something other
        than a well-formed object record of oid.
        """
        if self.file.closed:
            self._check_open()
        try:
            j = _INT8.unpack(oid)[0]
        except struct.error:
            _oid_number(oid)  # raises the ValueError
        position = self.index.get(j)  # self._position(j), without a call: loads are hot
        if position is None:
            if j >= self.map_count:
                return None
            position = self._packed_position(j)
            if position is None:
                return None
        return self._read_record(position, j)

    def _read_record(self, position: int, j: int | None) -> bytes:
        """The record at position, which must be one of oid number j (if not None)."""
        offset = position - self._chunk_start
        chunk = self._chunk
        if not 0 <= offset <= len(chunk) - _RECORD_HEAD.size:
            # Records written together are read together: keep the next
            # _READ_AHEAD bytes, which hold many small records (but none past
            # the end of the last transaction, the only bytes that may change).
            chunk = self._chunk = self.file.pread(
                max(_RECORD_HEAD.size, min(_READ_AHEAD, self.end - position)), position)
            self._chunk_start, offset = position, 0
        # A record lies within the pack's records or the transactions after the map.
        limit = (self.map_start if position < self.map_start else self.end) - self._chunk_start
        oid, end = -1, -1
        if len(chunk) - offset >= _RECORD_HEAD.size and position >= len(PREFIX) + 8:
            oid, end = _read_record_head(chunk, offset, limit)
        if end == -1:
            raise CorruptFileError("%r: no well-formed record at byte %d"
                                   % (self.file.get_name(), position))
        if j is not None and oid != j:
            raise CorruptFileError("%r: the record for oid %d should be at byte %d, which "
                                   "holds one for oid %d" % (self.file.get_name(), j,
                                                             position, oid))
        if end > len(chunk):
            record = self.file.pread(end - offset - 16, position + 16)
            if len(record) < end - offset - 16:
                raise ShortReadError("%r: the record at byte %d is cut off"
                                       % (self.file.get_name(), position))
            return record
        return chunk[offset + 16:end]

    def get_value(self, name: bytes) -> bytes | None:
        """Return the newest value stored under name, or None: Durus's
        generic form of get_record(), for values of any form."""
        position = self.get_position(name)
        if position is None:
            return None
        return self._read_value(position, _oid_number(name))

    def _read_value(self, position: int, j: int) -> bytes:
        """The value of the item at position, which must be one of oid number j."""
        limit = self.map_start if position < self.map_start else self.end
        head = self.file.pread(16, position) if position >= len(PREFIX) + 8 else b""
        length, name = _ITEM_HEAD.unpack(head) if len(head) == 16 else (0, None)
        if length < 8 or position + 8 + length > limit or name != j:
            raise CorruptFileError("%r: no item for oid %d at byte %d"
                                   % (self.file.get_name(), j, position))
        value = self.file.pread(length - 8, position + 16)
        if len(value) < length - 8:
            raise ShortReadError("%r: the item at byte %d is cut off"
                                 % (self.file.get_name(), position))
        return value

    def iterindex(self) -> Iterator[tuple[bytes, int]]:
        """Yield (oid, position) for every oid that has a record (the checksum oid excluded)."""
        self._check_open()
        index = self.index
        for j in range(self.map_count):
            if j not in index:
                position = self._packed_position(j)
                if position is not None:
                    yield int8_to_str(j), position
        for j, position in index.items():
            yield int8_to_str(j), position

    def __iter__(self):
        """Yield every oid that has a record (the checksum oid excluded)."""
        for oid, _ in self.iterindex():
            yield oid

    gen_oids = __iter__

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield (oid, value) for every oid that has a record."""
        for oid, position in self.iterindex():
            yield oid, self._read_value(position, str_to_int8(oid))

    iteritems = items  # Durus's name

    def gen_free_oids(self) -> Iterator[bytes]:
        """Yield oids without a record: the offset map's holes, then upwards from its end."""
        self._check_open()
        last = self.map_count - 1
        j = last
        for _ in range(self.map_count):  # bounded, in case the list is damaged
            j = self._map_word(j) - self.map_start
            if not 0 <= j <= last:
                break
            try:
                free = self._packed_position(j) is None
            except CorruptFileError:
                free = False  # its own word is damaged: it may be in use
            if not free:
                log(WARNING, "%r: the offset map's free list leads to oid %d, which has a "
                    "record or a damaged word; new oids are taken from beyond the map "
                    "instead" % (self.file.get_name(), j))
                break
            yield int8_to_str(j)
            if j == last:
                break
        j = self.map_count
        while True:
            yield int8_to_str(j)
            j += 1

    def next_free_oid(self) -> bytes:
        """Return an oid with no record that this method has not returned
        before (unless it failed since: then it starts over, and callers
        skip the oids they were given)."""
        self._check_open()
        if self._free_oids is None:
            self._free_oids = self.gen_free_oids()
        try:
            for oid in self._free_oids:
                if str_to_int8(oid) not in self.index:
                    return oid
            raise AssertionError("gen_free_oids() never ends")
        except BaseException:
            self._free_oids = None  # a generator that raised is finished for good
            raise

    next_name = next_free_oid  # Durus's name

    def store(self, items: Iterable[tuple[Any, Any]]) -> list:  # names and values: bytes or str
        """Append the (name, value) pairs (bytes or str) as one transaction,
        on disk when this returns; return [(name, old position or None, new position)]."""
        items = [(as_bytes(name), as_bytes(value)) for name, value in items]
        if any(name == CHECKSUM_OID for name, _ in items):
            raise ValueError("the name %r is reserved for the checksums of transactions"
                             % CHECKSUM_OID)
        old = [self.get_position(name) for name, _ in items]
        self.append(items)
        return [(name, position, self.get_position(name))
                for (name, _), position in zip(items, old)]

    def append(self, items: Iterable[tuple[bytes, bytes]], fsync: bool = True) -> None:
        """Write the (oid, record) pairs as one transaction at the end of the file.

        When this returns (with fsync) the transaction is on disk. If writing
        fails, the file is cut back so that it stays valid, and the error raised.
        """
        self._check_open()
        oids, positions = array("Q"), array("q")
        parts = []
        position = self.end + 8
        for oid, record in items:
            oids.append(str_to_int8(oid))
            positions.append(position)
            part = _shelf_record(oid, record)
            parts.append(part)
            position += len(part)
        body = b"".join(parts)
        trailer = _shelf_record(CHECKSUM_OID, _checksum_record(zlib.crc32(body)))
        transaction = _INT8.pack(len(body) + len(trailer)) + body + trailer
        self._write_transaction(transaction, oids, positions, fsync)

    def _write_transaction(self: _AppendOnlyFile, transaction: bytes, oids: array, positions: array,
                           fsync: bool) -> None:
        """Write transaction at the end, then index its records (oids at
        positions); on any failure, undo both and raise."""
        if self._torn_end:
            # Or a shorter transaction would leave the rest of them after it.
            self.file.truncate(self.end)
            self._torn_end = False
        start = self.end
        previous = None
        # Anything that stops this (an I/O error, or Ctrl-C even after the
        # fsync) undoes it all: the caller is told the commit failed.
        try:
            self.file.pwrite(transaction, start)
            if fsync:
                self.file.fsync()
            previous = [self.index.get(n) for n in oids]
            self.index.update(oids, positions)
            self.end = start + len(transaction)
        except BaseException:
            if previous is not None:
                self.index.restore(oids, previous)
            self.end = start
            self._cut_back()
            raise

    def _cut_back(self: _AppendOnlyFile) -> None:
        """Remove whatever part of a failed append reached the file."""
        try:
            self.file.truncate(self.end)
        except OSError:
            self._torn_end = True  # the next append cuts it first; else the next open

    def close(self) -> None:
        self.file.close()
        self.index.close()


def read_transaction_offsets(file: File | IO[bytes], repair: bool = False) -> dict | None:
    """Read the transaction at the position of file (a File or a binary
    stream) and leave the position after it; return {oid: position} of its
    records, or None at the end of the file.

    A transaction cut off by the end of the file raises ShortReadError (a
    ShortRead); with repair, it is cut off the file instead and None returned.
    Durus's stream-style reader; Shelf's own scan checks far more.
    """
    start = file.tell()
    file.seek(0, os.SEEK_END)
    size = file.tell()
    if start >= size:
        return None
    file.seek(start)
    offsets = {}
    end = size + 1  # until the length is read
    position = start
    if start + 8 <= size:
        end = start + 8 + _INT8.unpack(file.read(8))[0]
        position += 8
        while position + 16 <= min(end, size):
            file.seek(position)
            length, = _INT8.unpack(file.read(8))
            offsets[file.read(8)] = position
            position += 8 + length
    if position == end <= size:
        file.seek(end)
        return offsets
    file.seek(start)
    if not repair:
        raise ShortReadError("the transaction at byte %d of %s is cut off (%d bytes of it there)"
                             % (start, getattr(file, "name", "the file"), size - start))
    file.truncate(start)
    return None


class OffsetMap:
    """Durus's view of a shelf's offset map, over a File or binary stream:
    an IntArray of record positions by oid number, its holes linked into
    the list of free oids (values >= its start).

    OffsetMap(file) reads the map at the position of file; at the end of the
    file, it first writes an empty one for oids up to max_oid (its records
    all before max_offset).
    """

    def __init__(self, file: File | IO[bytes], max_oid: int = -2, max_offset: int = 0) -> None:
        self.start = file.tell()
        file.seek(0, os.SEEK_END)
        if file.tell() == self.start:
            for _ in self.generate(file, max_oid, max_offset):
                pass
        file.seek(self.start)
        self.int_array = IntArray(file=file)

    @staticmethod
    def generate(file: File | IO[bytes], max_oid: int = -2, max_offset: int = 0) -> Iterator[int]:
        """Write a blank map for oids up to max_oid at the position of file, a step at a time."""
        start = file.tell()
        if max_offset >= start:
            raise ValueError("records at %d are not before the map at %d" % (max_offset, start))
        count = max_oid + 2
        # Word size as _write_offset_map's: the blank word (all 0xff) exceeds every value.
        yield from IntArray.generate(file, count, start + max_oid + 2)
        file.seek(start)

    def get_start(self) -> int:
        return self.start

    def get(self, j: int, default: Any = None) -> Any:
        """The position of oid number j's record, or default (a hole or beyond the map)."""
        value = self.int_array.get(j)
        return default if value is None or value >= self.start else value

    def __getitem__(self, j: int) -> int:
        value = self.get(j)
        if value is None:
            raise IndexError(j)
        return value

    def __setitem__(self, j: int, position: int) -> None:
        """Set the position of a record; only for a hole not yet stitched."""
        if self.get(j) is not None:
            raise ValueError("oid number %d already has a position" % j)
        self.int_array[j] = position

    def items(self) -> Iterator[tuple[int, int]]:
        """Yield (oid number, position) of the records, ascending."""
        for j, value in enumerate(self.int_array):
            if value < self.start:
                yield j, value

    iteritems = items  # Durus's name

    def __iter__(self):
        for j, _ in self.items():
            yield j

    def get_array_size(self) -> int:
        return len(self.int_array)

    def gen_stitch(self) -> Iterator[int]:
        """Link the holes into the free list (each holds the previous hole's
        index + start, the first the last index's), yielding each index."""
        previous = len(self.int_array) - 1
        for j in range(len(self.int_array)):
            if self.get(j) is None:
                self.int_array[j] = previous + self.start
                previous = j
            yield j

    def gen_holes(self) -> Iterator[int]:
        """Yield the oid numbers of the free list, from the last index down."""
        last = len(self.int_array) - 1
        j = last
        for _ in range(len(self.int_array)):  # bounded, in case the list is damaged
            j = self.int_array[j] - self.start
            yield j
            if j == last:
                break


_SCAN_CHUNK = 1 << 22


def assign_positions(dense: array, oids: array, positions: array) -> int:
    """dense[oid] = position, pairwise; return how many entries were 0 before.
    The C accelerator durus._shelf replaces this."""
    new = 0
    for n, position in zip(oids, positions):
        if not dense[n]:
            new += 1
        dense[n] = position
    return new


def scan_buffer(buffer: bytes, base: int) -> tuple:
    """Check and index the whole transactions in buffer, read at file position base.

    Returns (end, oids, positions, empty_run_start, error, needed):
    end, the offset in buffer after the last good transaction; oids and
    positions, arrays of the oid numbers and file positions of the records in
    them (checksum records left out); empty_run_start, the file position of
    the run of empty transactions that ends at end, or -1; error, why the
    transaction at end is bad, or None; needed, the length of the transaction
    at end when the buffer ends inside it, else 0. The C accelerator
    durus._shelf replaces this.
    """
    oids, positions = array("Q"), array("q")
    empty_run_start = -1
    start, size = 0, len(buffer)
    while start < size:
        if start + 8 > size:
            return start, oids, positions, empty_run_start, None, 8
        end = start + 8 + _INT8.unpack_from(buffer, start)[0]
        if end > size:
            return start, oids, positions, empty_run_start, None, end - start
        error = _check_transaction(buffer, start, end, base, oids, positions)
        if error:
            return start, oids, positions, empty_run_start, error, 0
        if end == start + 8:
            if empty_run_start == -1:
                empty_run_start = base + start
        else:
            empty_run_start = -1
        start = end
    return start, oids, positions, empty_run_start, None, 0


def _read_record_head(buffer: bytes, position: int, end: int) -> tuple[int, int]:
    """(oid number, end) of the record whose header is at position, in a
    transaction ending at end; the end is -1 if the header is malformed."""
    length, oid, record_oid, data_length = _RECORD_HEAD.unpack_from(buffer, position)
    record_end = position + 8 + length
    # length counts the shelf oid before the record.
    if record_end > end or oid != record_oid or not is_record_shape(length - 8, data_length):
        return oid, -1
    return oid, record_end


def _is_cut_short(tail: bytes) -> bool:
    """Tell whether tail, from the start of a transaction that runs past the
    end of the file to that end, is what an append cut short leaves: part of
    the length field, or the length field and well-formed records, the last
    of them perhaps cut off, and no whole checksum record (which ends it)."""
    if len(tail) < 8:
        return True
    end = 8 + _INT8.unpack_from(tail)[0]
    position = 8
    while position + _RECORD_HEAD.size <= len(tail):
        oid, record_end = _read_record_head(tail, position, end)
        if record_end == -1 or (oid == _CHECKSUM_NUMBER and record_end != end):
            return False
        position = record_end
    return True


def _check_transaction(buffer: bytes, start: int, end: int, base: int, oids, positions):
    """Check the transaction in buffer[start:end]; append the oid numbers and
    file positions of its records. Return None, or why it is bad.

    A record need not be an object record (Shelf.store takes any value) if
    the transaction ends with a matching checksum, which vouches for it.
    """
    count = len(oids)
    position = start + 8
    loose = -1  # the first record that is not an object record
    checksummed = False
    while position < end:
        if position + _RECORD_HEAD.size > end:
            error = "a record header is cut off at byte %d" % (base + position)
            break
        oid, record_end = _read_record_head(buffer, position, end)
        if record_end == -1 and oid != _CHECKSUM_NUMBER:
            record_end = _item_end(buffer, position, end)
            if loose == -1:
                loose = position
        if record_end == -1:
            error = "malformed record at byte %d" % (base + position)
            break
        if oid == _CHECKSUM_NUMBER:
            expected = _checksum_record(zlib.crc32(buffer[start + 8:position]))
            if record_end != end or buffer[position + 16:record_end] != expected:
                error = "checksum mismatch"
                break
            checksummed = True
        else:
            oids.append(oid)
            positions.append(base + position)
        position = record_end
    else:
        if loose == -1 or checksummed:
            return None
        error = "malformed record at byte %d" % (base + loose)
    del oids[count:], positions[count:]
    return error


def _item_end(buffer: bytes, position: int, end: int) -> int:
    """The end of the record at position as Durus's Shelf frames it (int8
    length, then at least the 8-byte name), or -1 if it overruns end."""
    record_end = position + 8 + _INT8.unpack_from(buffer, position)[0]
    return record_end if position + 16 <= record_end <= end else -1


accelerate(globals(), "durus._shelf", ("assign_positions", "scan_buffer"))


def write_shelf(file: "File | StreamFile", items: Iterable[tuple[bytes, bytes]]) -> Iterator[int]:
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


def _write_offset_map(file: "File | StreamFile", map_start: int, positions: dict):
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
