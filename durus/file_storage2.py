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
by its oid, when loaded), and a transaction cut off at the end of the file is
refused (or cut back with repair) unless a writer's mark (durus.file.WriterMark)
shows that it is a commit in flight, which is then left out.
"""

import io
import pickle
import struct
import sys
import zlib
from array import array

from durus.error import CorruptFileError
from durus.file import File, fsync_directory
from durus.file_storage import FileStorage
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


def _index_record(positions: dict) -> bytes:
    data = zlib.compress(pickle.dumps(positions, _INDEX_PROTOCOL))
    return _INT8.pack(len(data)) + data


# What a new, empty file holds.
_NEW_FILE = MAGIC + _INT8.pack(_HEADER_LENGTH) + _index_record({})


class _IndexUnpickler(pickle.Unpickler):
    """Reads an index pickle, which names no class but, when written under
    Python 2 or with protocol 2, the function that makes bytes from text."""

    def find_class(self, module: str, name: str):
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

    def __init__(self, file: File, repair: bool = False, writer_marked: bool = False):
        """Open file, creating an empty DFS20 file if the file is empty (or,
        with repair or writer_marked, if its creation was cut short).

        Raises CorruptFileError (naming the byte where the trouble starts) if
        the file is not a DFS20 file, or if its last transaction is damaged or
        cut off and repair is False; with repair, the file is cut back to the
        end of its last good transaction.
        """
        self.file = file
        if is_new_file(file, _NEW_FILE, repair, writer_marked):
            file.pwrite(_NEW_FILE, 0)
            file.fsync()
            if not file.is_temporary():
                fsync_directory(file.get_name())
        self.index = PositionIndex()
        self.next_oid = 0  # one more than the largest oid number with a record
        self.end = self._scan(self._read_index(), repair, writer_marked)
        self._chunk_start, self._chunk = 0, b""
        self._torn_end = False  # bytes of a failed append may follow self.end

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

    def _scan(self, position: int, repair: bool, writer_marked: bool) -> int:
        """Index the transactions from position on; return the end of the last good one."""
        size = self.file.size()
        wanted = _SCAN_CHUNK
        while position < size:
            buffer = self.file.pread(min(wanted, size - position), position)
            end, oids, positions, error = scan_transactions(buffer, position)
            self._add(oids, positions)
            position += end
            if error:
                return self._handle_torn(-1, position, size, error, repair)
            if position + len(buffer) - end >= size and end < len(buffer):
                # The last transaction runs to the end of the file, unfinished.
                if writer_marked:
                    return self._drop_commit_in_flight(position, size)
                return self._handle_torn(-1, position, size, "it is cut off by the end "
                                         "of the file", repair)
            # A transaction longer than the buffer: read all of it next time.
            wanted = _SCAN_CHUNK if end else 2 * wanted
        return position

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
        refs_length = length - 12 - data_length
        if (record_oid != _INT8.unpack(oid)[0] or refs_length < 0 or refs_length % 8
                or position + 4 + length > self.end):
            raise self._corrupt("the record for oid %d should be at byte %d, which holds "
                                "no well-formed record of it", _INT8.unpack(oid)[0], position)
        end = offset + 4 + length
        if end > len(chunk):
            return self.file.pread(length, position + 4)
        return chunk[offset + 4:end]

    def gen_oids(self):
        """Yield every oid that has a record."""
        self._check_open()
        for n in self.index:
            yield int8_to_str(n)

    def next_free_oid(self) -> bytes:
        """Return an oid above every one with a record or returned before."""
        self._check_open()
        self.next_oid += 1
        return int8_to_str(self.next_oid - 1)

    def append(self, items, fsync: bool = True) -> None:
        """Write the (oid, record) pairs as one transaction at the end of the file.

        When this returns (with fsync) the transaction is on disk. If writing
        fails, the file is cut back so that it stays valid, and the error raised.
        """
        self._check_open()
        transaction, oids, positions = _transaction(items, self.end)
        self._write_transaction(transaction, oids, positions, fsync)
        if oids:
            self.next_oid = max(self.next_oid, max(oids) + 1)

    def close(self) -> None:
        self.file.close()


def _transaction(items, start: int) -> tuple:
    """(bytes of a transaction of the (oid, record) pairs written at start,
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
    parts.append(_TERMINATOR)
    return b"".join(parts), oids, positions


def scan_transactions(buffer: bytes, base: int) -> tuple:
    """Check and index the whole transactions in buffer, read at file position base.

    Returns (end, oids, positions, error): end, the offset in buffer after the
    last good transaction; oids and positions, arrays of the oid numbers and
    file positions of the records in them; error, why the transaction at end
    is malformed, or None (the buffer may end inside it).
    """
    oids, positions = array("Q"), array("q")
    start, size = 0, len(buffer)
    while start < size:
        count = len(oids)
        position = start
        while True:
            if position + 4 > size:
                del oids[count:], positions[count:]
                return start, oids, positions, None
            length = _INT4.unpack_from(buffer, position)[0]
            if length == 0:
                start = position + 4
                break
            if position + 4 + length > size:
                del oids[count:], positions[count:]
                return start, oids, positions, None
            if length < 12:
                error = "a record at byte %d is %d bytes long" % (base + position, length)
            else:
                _, oid, data_length = _RECORD_HEAD.unpack_from(buffer, position)
                refs_length = length - 12 - data_length
                error = None if refs_length >= 0 and refs_length % 8 == 0 else (
                    "malformed record at byte %d" % (base + position))
            if error:
                del oids[count:], positions[count:]
                return start, oids, positions, error
            oids.append(oid)
            positions.append(base + position)
            position += 4 + length
    return start, oids, positions, None


def write_dfs20(file: File, items):
    """Write a new DFS20 file holding the (oid, record) pairs into the empty file.

    A generator, so that a pack can be interleaved with other work: it yields
    now and then, and the file is complete (and fsynced) once it is exhausted.
    """
    # Until the index is written, the header points nowhere: an unfinished
    # file is not taken for a database.
    file.pwrite(MAGIC + _INT8.pack(0), 0)
    position = _HEADER_LENGTH
    positions = {}
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


def _write_records(file: File, batch: list, position: int, positions: dict) -> int:
    """Write the records of batch at position; return the position after them."""
    data, oids, offsets = _transaction(batch, position)
    data = data[:-len(_TERMINATOR)]
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

    _format_class = Dfs20File
    _write_format = staticmethod(write_dfs20)

    @classmethod
    def has_format(cls, file: File) -> bool:
        """Tell whether file starts like a DFS20 file."""
        return file.pread(len(MAGIC), 0) == MAGIC
