"""FileStorage2: a Storage kept in one file of Durus's older DFS20 format.

file          = b"DFS20\\0" + int8 index_offset + txn* + index_record + txn*
txn           = (int4 len(record) + record)* + int4 0
index_record  = int8 n + n bytes: zlib-compressed pickle of {oid: position}

The index record gives the position (of the int4 length) of every record
written before it: a new file has an empty one at once, a pack writes the
records it keeps and then their index. Transactions appended later are
scanned at open. Durus 3.7 wrote this format and later Durus still opens it;
new databases should use FileStorage (SHELF-1), whose index need not be read
into memory at open.

The format has no checksums: a damaged record is found by its structure (and
by its oid, when loaded). So that a commit we wrote can be told whole, it
ends with a second, byte-identical copy of its smallest record (Durus reads
the same record twice, harmlessly): a transaction cut at a record boundary, or
whose end a power loss left as zeros, lacks it. A transaction cut off at the
end of the file, or left unfinished that way, is refused (or cut back with
repair) unless the writer's mark (durus.file.WriterMark) shows that it is the
commit in flight: the mark records where that writer's commits start and how
far they are durable; a commit from there on that is not whole is left out,
only if every one before it there is whole and nothing but zeros follows it.
"""

import io
import pickle
import struct
import sys
import zlib
from array import array
from logging import WARNING
from typing import Any, Iterable, Iterator, cast

from durus.error import CorruptFileError
from durus.file import File, StreamFile, WriterMark, fsync_directory
from durus.file_storage import FileStorage
from durus.logger import log
from durus.record_format import MIN_RECORD_LENGTH, is_record_shape
from durus.shelf import PositionIndex, Shelf, is_new_file
from durus.utils import byte_string, int8_to_str

byte_string  # re-exported: a Durus 4.3 name of this module

MAGIC = b"DFS20\0"

_INT4 = struct.Struct(">L")
_INT8 = struct.Struct(">Q")
_RECORD_HEAD = struct.Struct(">LQL")  # int4 length, oid, int4 len(data)
_HEADER_LENGTH = len(MAGIC) + 8
_TERMINATOR = bytes(4)
# What Durus 4.3 writes (pickle's default in Python 3.8-3.13); Durus on
# Python 2 could not read it either.
_INDEX_PROTOCOL = 4
# Bytes read at once from a record's position, kept for the records after it.
_READ_AHEAD = 16384
_SCAN_CHUNK = 1 << 22
# Bytes before a session start whose CRC-32, recorded in the writer's mark,
# tells that the mark's positions describe this file (not the one a pack replaced).
_FINGERPRINTED = 64
_NOWHERE = float("inf")  # a position past every file: no region of the file is a writer's


def _index_record(positions: dict) -> bytes:
    data = zlib.compress(pickle.dumps(positions, _INDEX_PROTOCOL))
    return _INT8.pack(len(data)) + data


# What a new, empty file holds.
_NEW_FILE = MAGIC + _INT8.pack(_HEADER_LENGTH) + _index_record({})


class _IndexUnpickler(pickle.Unpickler):
    """Reads an index pickle, which names no class but, when written under
    Python 2 or with protocol 2, the function that makes bytes from text."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("_codecs", "encode"), ("codecs", "encode")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError("the index names %s.%s, not a dict of positions"
                                     % (module, name))


def _as_oid(key) -> bytes:
    # Keys pickled by Python 2 come back as latin-1 text.
    return key.encode("latin1") if isinstance(key, str) else key


class Dfs20File:
    """An open DFS20 file: read records by oid, append transactions.

    It offers what FileStorage asks of its Shelf, so that FileStorage2 is a
    FileStorage on this format.

    file: File. index: PositionIndex, {oid number: position} of every record.
    end: int, the position after the last good transaction.
    """

    def __init__(self, file: File, repair: bool = False, writer_marked: bool = False) -> None:
        """Open file, creating an empty DFS20 file if the file is empty (or,
        with repair or writer_marked, if its creation was cut short).

        Raises CorruptFileError (naming the byte where the trouble starts) if
        the file is not a DFS20 file, or if a transaction is damaged or cut
        off and repair is False; with repair, the file is cut back to the end
        of its last good transaction. With writer_marked (a writer's mark is
        present), a commit in flight at the end, as the mark's positions show
        it, is left out (and cut off unless the file is read-only).
        """
        self.file = file
        # Before the file's size is read: a live writer's positions only grow.
        marked = _marked_positions(file) if writer_marked else None
        if is_new_file(file, _NEW_FILE, repair, writer_marked):
            file.pwrite(_NEW_FILE, 0)
            file.fsync()
            if not file.is_temporary():
                fsync_directory(file.get_name())
            marked = None
        self.index = PositionIndex()
        self.next_oid = 0  # one more than the largest oid number with a record
        self.end = self._scan(self._read_index(), repair, writer_marked, marked)
        self._chunk_start, self._chunk = 0, b""
        self._torn_end = False  # bytes of a failed append may follow self.end
        # The WriterMark where a writer records where its commits start and
        # how far they are durable (set by FileStorage2), or None.
        self.mark: WriterMark | None = None

    def _corrupt(self, text: str, *args) -> CorruptFileError:
        return CorruptFileError(("%r: " + text) % ((self.file.get_name(),) + args))

    def _read_index(self) -> int:
        """Read the index record into self.index; return the position after it."""
        size = self.file.size()
        head = self.file.pread(_HEADER_LENGTH, 0)
        if head[:len(MAGIC)] != MAGIC:
            raise self._corrupt("not a DFS20 durus file (no DFS20 header)")
        if len(head) < _HEADER_LENGTH:
            raise self._corrupt("the file is cut off inside its header (%d bytes)", size)
        start = _INT8.unpack_from(head, len(MAGIC))[0]
        if not _HEADER_LENGTH <= start <= size - 8:
            raise self._corrupt("the header at byte 6 puts the index at byte %d, and the "
                                "file has %d bytes", start, size)
        length = _INT8.unpack(self.file.pread(8, start))[0]
        if start + 8 + length > size:
            raise self._corrupt("the index at byte %d claims %d bytes, and the file "
                                "ends first", start, length)
        try:
            pickled = zlib.decompress(self.file.pread(length, start + 8))
            positions = _IndexUnpickler(io.BytesIO(pickled), encoding="latin1").load()
            oids = array("Q")
            try:
                oids.frombytes(b"".join(positions))
            except TypeError:  # text keys
                oids.frombytes(b"".join(map(_as_oid, positions)))
            if len(oids) != len(positions):
                raise ValueError("an oid is not 8 bytes")
            offsets = array("q", positions.values())
        except (zlib.error, pickle.UnpicklingError, AttributeError, EOFError, TypeError,
                ValueError, OverflowError) as exc:
            raise self._corrupt("the index at byte %d is damaged (%s)", start, exc) from None
        if offsets and not (_HEADER_LENGTH <= min(offsets) and max(offsets) < start):
            raise self._corrupt("the index at byte %d gives a position outside the "
                                "records before it", start)
        if sys.byteorder == "little":
            oids.byteswap()
        self._add(oids, offsets)
        return start + 8 + length

    def _add(self, oids: array, positions: array) -> None:
        if oids:
            self.index.update(oids, positions)
            self.next_oid = max(self.next_oid, max(oids) + 1)

    def _scan(self, position: int, repair: bool, writer_marked: bool, marked) -> int:
        """Index the transactions from position on; return the end of the last good one.

        marked: (session start, durable end) from the writer's mark, or None.
        Before the session start, transactions need only be well formed; from
        there to the durable end, they must be whole commits of ours; from
        there on, the first that is not whole starts the commit in flight.
        """
        size = self.file.size()
        session, durable = marked or (_NOWHERE, _NOWHERE)
        unmarked = "" if marked or not writer_marked else (
            "; the writer's mark records no positions in this file, so it does not "
            "tell a commit in flight")
        last: tuple[int, int] | None = None  # (start, end) of the last transaction with records
        wanted = _SCAN_CHUNK
        while position < size:
            buffer = self.file.pread(min(wanted, size - position), position)
            end, oids, positions, bounds, last_here, error = scan_transactions(
                buffer, position, session)
            for start, stop, first, count, whole in bounds:
                problem = _out_of_place(start, stop, whole, session, durable)
                if problem:
                    self._add(oids[:first], positions[:first])
                    return self._handle_bad(start, size, problem, repair, durable)
            self._add(oids, positions)
            last = last_here or last
            position += end
            if error or (position + len(buffer) - end >= size and end < len(buffer)):
                if (not error and marked is None and last is not None
                        and not self.file.pread(size - position, position).strip(b"\0")
                        and self._zero_filled(last[0], last[1], size)):
                    break  # zeros to the end (a count not a multiple of 4): checked below
                reason = error or "it is cut off by the end of the file"
                # Unless refused, the file now ends here (for this open).
                size = position = self._handle_bad(position, size, reason + unmarked, repair,
                                                   durable)
                break
            # A transaction longer than the buffer: read all of it next time.
            wanted = _SCAN_CHUNK if end else 2 * wanted
        if position < durable < _NOWHERE:
            return self._handle_bad(position, size, "the file ends before byte %d, up to "
                                    "which the writer's mark says commits were durable"
                                    % durable, repair, durable)
        # What is left may end with a commit that zeros left unfinished.
        if marked is None and last is not None and (problem := self._zero_filled(*last, size)):
            self._handle_torn(-1, last[0], size, problem + unmarked, repair)  # raises unless repair
            # Its records are indexed already: index the file as cut back.
            self.index, self.next_oid = PositionIndex(), 0
            return self._scan(self._read_index(), repair, writer_marked, None)
        return position

    def _handle_bad(self, position: int, size: int, reason: str, repair: bool,
                    durable: float) -> int:
        """The transaction at position is not whole: leave it out if it is the
        commit in flight (from the durable end on, and nothing but the start
        of one transaction), else refuse it or, with repair, cut it off."""
        if position >= durable:
            why = _why_not_in_flight(self.file.pread(size - position, position))
            if why is None:
                return self._drop_commit_in_flight(position, size)
            reason = why
        return self._handle_torn(-1, position, size, reason, repair)

    def _zero_filled(self, start: int, stop: int, size: int) -> str | None:
        """Why the transaction from start to stop, the last with records,
        looks like a commit of ours whose end a power loss left as zeros, or
        None (then it may be Durus's)."""
        _, _, positions, bounds, _, error = scan_transactions(
            self.file.pread(stop - start, start), start, start)
        if error:
            return error  # our copy, half zeros
        if bounds[0][-1]:
            return None  # whole
        if stop < size:
            return ("it is not a whole commit and only zeros follow it (empty "
                    "transactions): what a power loss leaves of a commit not yet synced")
        record = positions[-1]
        if _RECORD_HEAD.unpack(self.file.pread(_RECORD_HEAD.size, record))[2] == 0:
            return ("its last record, at byte %d, has no data: what a power loss leaves of "
                    "a commit not yet synced" % record)
        return None

    # A bad end is handled as in a Shelf (Shelf's errors, log and cut-back).
    _handle_torn = Shelf._handle_torn
    _drop_commit_in_flight = Shelf._drop_commit_in_flight
    _cut_back = Shelf._cut_back
    _write_transaction = Shelf._write_transaction

    @property
    def closed(self) -> bool:
        return self.file.closed

    def _check_open(self) -> None:
        if self.file.closed:
            raise ValueError("operation on a closed DFS20 file (%r)" % self.file.get_name())

    def ends_cleanly(self) -> bool:
        """Tell whether the file ends with the last transaction appended."""
        self._check_open()
        return not self._torn_end

    def save_index(self) -> None:
        """Nothing to persist beside the file: its index record is in it (a pack writes it)."""
        self._check_open()

    def __contains__(self, oid: bytes) -> bool:
        self._check_open()
        return _INT8.unpack(oid)[0] in self.index

    def get_position(self, oid: bytes) -> int | None:
        """Return the position of the newest record of oid, or None."""
        self._check_open()
        return self.index.get(_INT8.unpack(oid)[0])

    def get_record(self, oid: bytes) -> bytes | None:
        """Return the newest record of oid, or None.

        Raises CorruptFileError if the index points at something else.
        """
        if self.file.closed:
            self._check_open()
        position = self.index.get(_INT8.unpack(oid)[0])
        if position is None:
            return None
        offset = position - self._chunk_start
        chunk = self._chunk
        if not 0 <= offset <= len(chunk) - _RECORD_HEAD.size:
            # Records written together are read together; nothing before
            # self.end changes while the file is open.
            chunk = self._chunk = self.file.pread(
                max(_RECORD_HEAD.size, min(_READ_AHEAD, self.end - position)), position)
            self._chunk_start, offset = position, 0
        if len(chunk) - offset < _RECORD_HEAD.size:
            raise self._corrupt("no well-formed record at byte %d", position)
        length, record_oid, data_length = _RECORD_HEAD.unpack_from(chunk, offset)
        if (record_oid != _INT8.unpack(oid)[0] or not is_record_shape(length, data_length)
                or position + 4 + length > self.end):
            raise self._corrupt("the record for oid %d should be at byte %d, which holds "
                                "no well-formed record of it", _INT8.unpack(oid)[0], position)
        end = offset + 4 + length
        if end > len(chunk):
            return self.file.pread(length, position + 4)
        return chunk[offset + 4:end]

    def gen_oids(self) -> Iterator[bytes]:
        """Yield every oid that has a record."""
        self._check_open()
        for n in self.index:
            yield int8_to_str(n)

    def next_free_oid(self) -> bytes:
        """Return an oid above every one with a record or returned before."""
        self._check_open()
        self.next_oid += 1
        return int8_to_str(self.next_oid - 1)

    def append(self, items: Iterable[tuple[bytes, bytes]], fsync: bool = True) -> None:
        """Write the (oid, record) pairs as one transaction at the end of the
        file, ended by a copy of its smallest record (the sign that it is
        whole); with no pairs, write nothing.

        When this returns (with fsync) the transaction is on disk. If writing
        fails, the file is cut back so that it stays valid, and the error raised.
        """
        self._check_open()
        items = list(items)
        if not items:
            return  # an empty transaction would read as the zeros a power loss leaves
        data, oids, positions = _records(items, self.end)
        copy = min((record for _, record in items), key=len)
        transaction = b"".join((data, _INT4.pack(len(copy)), copy, _TERMINATOR))
        self._record_session()
        self._write_transaction(transaction, oids, positions, fsync)
        self.next_oid = max(self.next_oid, max(oids) + 1)
        if fsync:
            self._note_durable(self.end)

    def _record_session(self) -> None:
        """Before this file's first commit by this writer, record in its mark
        (durably) that the writer's commits start at the end of the file."""
        mark = self.mark
        if mark is None or mark.owner is self:
            return
        mark.owner = self  # once, even if it fails: later commits then record nothing
        try:
            mark.record_session(self.end, _fingerprint(self.file, self.end))
        except OSError as exc:
            log(WARNING, "cannot record positions in %s (%s): if this writer stops in the "
                "middle of a commit, the file may need repair", mark.path, exc)

    def _note_durable(self, end: int) -> None:
        """Record in the writer's mark that every byte before end is on disk."""
        mark = self.mark
        if mark is not None and mark.owner is self:
            try:
                mark.record_durable_end(end)
            except OSError:
                pass  # the mark keeps an earlier durable end, which is still true

    def close(self) -> None:
        self.file.close()


def _records(items, start: int) -> tuple:
    """(bytes of the (oid, record) pairs as records written at start,
    array of their oid numbers, array of their positions)."""
    oids, positions = array("Q"), array("q")
    parts = []
    position = start
    for oid, record in items:
        oids.append(_INT8.unpack(oid)[0])
        positions.append(position)
        parts.append(_INT4.pack(len(record)))
        parts.append(record)
        position += 4 + len(record)
    return b"".join(parts), oids, positions


def _fingerprint(file: File, start: int) -> int:
    """CRC-32 of the bytes before start that tell this file from another."""
    first = max(0, start - _FINGERPRINTED)
    return zlib.crc32(file.pread(start - first, first))


def _marked_positions(file: File) -> tuple[int, int] | None:
    """(session start, durable end) that the writer's mark records for file,
    or None if it records none, or only for another file (the one a pack
    replaced, or one whose start is gone)."""
    recorded = WriterMark(file.get_name()).recorded()
    if recorded is None:
        return None
    start, fingerprint, durable = recorded
    if not _HEADER_LENGTH <= start <= file.size() or _fingerprint(file, start) != fingerprint:
        return None
    return start, start if durable is None or durable < start else durable


def scan_transactions(buffer: bytes, base: int, check_from: float = _NOWHERE) -> tuple:
    """Check and index the whole transactions in buffer, read at file position base.

    Returns (end, oids, positions, bounds, last, error): end, the offset in
    buffer after the last good transaction; oids and positions, arrays of
    the oid numbers and file positions of the records in them; bounds, for
    each of them that ends after file position check_from, (start, end)
    (file positions), (first, count) (its records are oids[first:count])
    and whether it is whole (see _ends_with_copy); last,
    (start, end) of the last of them with records, or None; error, why the
    transaction at end is malformed, or None (the buffer may end inside it).
    """
    oids, positions = array("Q"), array("q")
    bounds = []
    last = None
    start, size = 0, len(buffer)
    while start < size:
        first = len(oids)
        position, error, terminated = start, None, False
        while position + 4 <= size:
            length = _INT4.unpack_from(buffer, position)[0]
            if length == 0:
                terminated = True
                break
            if position + 4 + length > size:
                break
            if not _is_record(buffer, position, length):
                error = "malformed record at byte %d" % (base + position)
                break
            oids.append(_RECORD_HEAD.unpack_from(buffer, position)[1])
            positions.append(base + position)
            position += 4 + length
        if terminated and base + position + 4 > check_from:
            whole, error = _ends_with_copy(buffer, base, oids, positions, first, position)
            bounds.append((base + start, base + position + 4, first, len(oids), whole))
        if error or not terminated:
            del oids[first:], positions[first:]
            if bounds and bounds[-1][0] == base + start:
                del bounds[-1]
            return start, oids, positions, bounds, last, error
        if len(oids) > first:
            last = base + start, base + position + 4
        start = position + 4
    return start, oids, positions, bounds, last, None


def _is_record(buffer: bytes, position: int, length: int) -> bool:
    """Tell whether the length bytes after position frame an object record:
    oid, int4 len(data), data, and whole oids of references."""
    return length >= MIN_RECORD_LENGTH and is_record_shape(
        length, _RECORD_HEAD.unpack_from(buffer, position)[2])


def _ends_with_copy(buffer: bytes, base: int, oids: array, positions: array, first: int,
                    end: int) -> tuple:
    """(whole, error) of the transaction whose records are oids[first:] and
    end at offset end of buffer: whole if its last record repeats, byte for
    byte, an earlier one of it (as every commit we write ends); error if it
    repeats an oid with other bytes (Durus never writes an oid twice in a
    commit: it is damage, or our copy left half written)."""
    count = len(oids)
    if count - first < 2:
        return False, None
    try:
        k = oids.index(oids[-1], first, count - 1)
    except ValueError:
        return False, None
    a, b = positions[k] - base, positions[-1] - base
    if buffer[a:a + end - b] == buffer[b:end]:
        return True, None
    return False, ("the record at byte %d repeats oid %d of the one at byte %d with other "
                   "bytes" % (base + b, oids[-1], base + a))


def _out_of_place(start: int, end: int, whole: bool, session: float, durable: float) -> str | None:
    """Why the whole, well-formed transaction from start to end does not fit
    the writer's positions (session start, durable end), or None."""
    for position, what in ((session, "this writer's commits start"),
                           (durable, "its commits were durable")):
        if start < position < end:
            return "it runs across byte %d, where the writer's mark says %s" % (position, what)
    if start >= session and not whole:
        return ("it is not a whole commit, though the writer's mark says the commits "
                "from byte %d on are this writer's" % session)
    return None


def _why_not_in_flight(tail: bytes) -> str | None:
    """Why tail, from the start of a transaction to the end of the file, is
    not what a commit left unfinished leaves, or None if it is.

    An unfinished commit leaves the start of one transaction: cut off by the
    end of the file (a killed writer), or followed by zeros only (a power
    loss: the file's size was synced, some of its last pages were not). A
    whole transaction ending at the end of the file is not one (a commit of
    ours ends with its copy; this is another program's), unless its last
    record is what zeros make of such a copy.
    """
    nonzero = len(tail.rstrip(b"\0"))  # only zeros from here on
    records = []  # their offsets in tail
    position = 0
    while True:
        if position + 4 > len(tail):
            return None  # cut off inside a length or the terminator
        length = _INT4.unpack_from(tail, position)[0]
        if length == 0:
            break
        if position + 4 + length > len(tail):
            return None  # the record being written when the writer stopped
        if not _is_record(tail, position, length) and position + 4 + length <= nonzero:
            return "malformed record at offset %d of it, with more after it" % position
        records.append(position)
        position += 4 + length
    if position < nonzero:
        return "a transaction ends at offset %d of it and more follows" % position
    if position + 4 < len(tail) or not records:
        return None  # zeros run on after the terminator, or are all there is
    last = records[-1]
    if (not _is_record(tail, last, position - last - 4)
            or _RECORD_HEAD.unpack_from(tail, last)[2] == 0
            or any(tail[r + 4:r + 12] == tail[last + 4:last + 12] for r in records[:-1])):
        return None  # zeros made our copy malformed, took its oid and data, or its end
    return "it is a whole transaction, not a commit of ours left unfinished"

def write_dfs20(file: File | StreamFile, items: Iterable[tuple[bytes, bytes]]) -> Iterator[int]:
    """Write a new DFS20 file holding the (oid, record) pairs into the empty file.

    A generator, so that a pack can be interleaved with other work: it yields
    now and then, and the file is complete (and fsynced) once it is exhausted.
    """
    # Until the index is written, the header points nowhere: an unfinished
    # file is not taken for a database.
    file.pwrite(MAGIC + _INT8.pack(0), 0)
    position = _HEADER_LENGTH
    positions: dict[bytes, int] = {}
    batch = []
    for oid, record in items:
        batch.append((oid, record))
        if len(batch) == 1000:
            position = _write_records(file, batch, position, positions)
            batch = []
            yield position
    position = _write_records(file, batch, position, positions) + len(_TERMINATOR)
    file.pwrite(_TERMINATOR + _index_record(positions), position - len(_TERMINATOR))
    file.pwrite(_INT8.pack(position), len(MAGIC))
    file.fsync()


def _write_records(file: File | StreamFile, batch: list, position: int, positions: dict) -> int:
    """Write the records of batch at position; return the position after them."""
    data, oids, offsets = _records(batch, position)
    positions.update(zip((int8_to_str(n) for n in oids), offsets))
    file.pwrite(data, position)
    return position + len(data)


class FileStorage2(FileStorage):
    """Objects in a DFS20 file (Durus 3.7's FileStorage), one writer at a time.

    The same Storage as FileStorage, in the older format: commits are on disk
    when end() returns (fsync=False to skip), a second writer gets
    FileLockedError, a damaged end is refused unless repair=True, and a pack
    writes <name>.pack and switches to it only once it is complete.
    filename: str | None, the path; None for a temporary file removed on close.
    """

    _write_format = staticmethod(write_dfs20)

    # A method in place of FileStorage's class: it opens a Dfs20File, which
    # offers what FileStorage asks of a Shelf without being one.
    def _format_class(self, file: File, repair: bool = False,  # type: ignore[override]
                      writer_marked: bool = False) -> Dfs20File:
        """Open file (as FileStorage opens its format class) so that this
        writer's commits to it record their positions in its mark."""
        dfs20 = Dfs20File(file, repair=repair, writer_marked=writer_marked)
        if self._mark is not None and not file.is_readonly():
            dfs20.mark = self._mark
            if repair:
                # The positions left in the mark may lie past what repair kept.
                dfs20._record_session()
        return dfs20

    def make_durable(self) -> None:
        shelf = cast(Dfs20File, self.shelf)  # as _format_class opened it
        end = shelf.end
        super().make_durable()
        shelf._note_durable(end)

    def close(self) -> None:
        mark = self._mark
        try:
            super().close()
        finally:
            if mark is not None:
                mark.close()  # if it was not removed, its descriptor still is open

    @classmethod
    def has_format(cls, file: File) -> bool:
        """Tell whether file starts like a DFS20 file."""
        return file.pread(len(MAGIC), 0) == MAGIC
