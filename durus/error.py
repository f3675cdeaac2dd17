"""Exceptions raised by durus."""

from durus.utils import ShortRead, str_to_int8


def _format_oid(oid) -> str:
    return str(str_to_int8(oid)) if isinstance(oid, bytes) and len(oid) == 8 else repr(oid)


class DurusError(Exception):
    """Base class of every durus error."""


class DurusKeyError(KeyError, DurusError):
    """No record for this oid in the storage."""

    def __str__(self):
        return _format_oid(self.args[0]) if self.args else "unknown oid"


class ConflictError(DurusError):
    """A transaction conflicts with another one; abort() and retry.

    oids: [bytes] | None, the conflicting oids.
    """

    def __init__(self, oids: list[bytes] | None = None) -> None:
        super().__init__(oids)
        self.oids = oids

    def __str__(self):
        if not self.oids:
            return "conflicting oids not available"
        more = " ..." if len(self.oids) > 1 else ""
        return "oids=[%s%s]" % (_format_oid(self.oids[0]), more)


class WriteConflictError(ConflictError):
    """Objects read or changed in this transaction were committed by another."""


class ReadConflictError(ConflictError):
    """An object changed by another transaction was loaded before sync."""


class SnapshotExpiredError(ReadConflictError):
    """A transaction held its snapshot so long, or across such changes (a
    pack), that the server no longer keeps what it would read; reason says why."""

    def __init__(self, oids: list[bytes] | None = None, reason: str = "the transaction's snapshot expired") -> None:
        super().__init__(oids)
        self.reason = reason

    def __str__(self):
        return "%s (%s)" % (self.reason, super().__str__())


class CommitTooLargeError(DurusError, ValueError):
    """A commit is too large to send, or the server refused it for its size
    (its max_commit_size); the server then closes the connection."""


class ProtocolError(DurusError):
    """The peer on a storage-server connection broke the protocol."""


class CorruptFileError(DurusError, ValueError):
    """A storage file is damaged or is not a durus file."""


class WrongFormatError(CorruptFileError, AssertionError):
    """A file does not start with its format's magic bytes (an AssertionError
    too: Durus asserted the magic)."""


class ShortReadError(CorruptFileError, ShortRead):
    """A file ends, or a transaction breaks off, before what its lengths
    announce (a durus.utils.ShortRead too: Durus raised that for a cut-off
    or torn file)."""


class ClosedFileError(DurusError, ValueError, OSError):
    """A closed file was asked its size: a ValueError as for any closed file,
    and an OSError as Durus's File, which looked the size up by name, raised
    once a temporary file was gone."""


class FileLockedError(DurusError, BlockingIOError):
    """Another process holds the write lock on a storage file (a
    BlockingIOError, which is what Durus raised)."""


class ReadOnlyError(DurusError, PermissionError, AssertionError):
    """A change was attempted through a read-only storage (an AssertionError
    too: Durus asserted that its file was writable)."""


class LockTimeoutError(DurusError, TimeoutError):
    """Another process held a database's commit lock for longer than this one
    would wait (a relational storage's BUSY_TIMEOUT): nothing was written."""
