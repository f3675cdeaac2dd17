"""File: the on-disk file under a FileStorage, with locking, positional I/O and
fsync; WriterMark: the file that tells a writer is (or was) at work on it."""

import errno
import fcntl
import os
import socket
import tempfile
import time
import zlib
from typing import IO, Any

from durus.error import ClosedFileError, FileLockedError, ReadOnlyError


class File:
    """An open database file.

    Two ways to use it: positional (pread/pwrite, what a Shelf uses), and
    Durus's stream style (seek/tell/read/write at a position kept here).
    Writing takes an exclusive flock, held until close(); a writer that wants
    to fail at once when another has the file calls obtain_lock() first.
    Read-only files never take it. With name None, a temporary file is used
    (tempfile options such as prefix= go to it) and removed on close().
    """

    def __init__(self, name: str | None = None, readonly: bool = False, **temporary_options: Any) -> None:
        self.readonly = readonly
        self.temporary = name is None
        self.file: IO[bytes]
        if name is None:
            if readonly:
                raise ValueError("a temporary file cannot be read-only")
            options = {"prefix": "durus-", "suffix": ".durus", **temporary_options}
            self.file = tempfile.NamedTemporaryFile(**options)
            self.name: str = self.file.name
        elif temporary_options:
            raise TypeError("options %s are for temporary files only" % sorted(temporary_options))
        elif readonly:
            if not os.path.exists(name):
                raise FileNotFoundError("no durus file at %r to open read-only" % name)
            self.file = open(name, "rb")
            self.name = name
        else:
            self.file = open(name, "r+b" if os.path.exists(name) else "w+b")
            self.name = name
        self.closed = False
        self.has_lock = False
        self.position = 0  # of the stream-style methods
        # Descriptor uses under way, in any thread: close() leaves the
        # descriptor open until the last one ends, so that no other file can
        # be given its number while a call still uses it.
        self._uses = 0

    def obtain_lock(self) -> None:
        """Take the exclusive write lock, unless held already.

        Raises FileLockedError if another writer holds it, ReadOnlyError for
        a read-only file.
        """
        if not self.has_lock:
            self._call(_pass, writing=True)

    def release_lock(self) -> None:
        """Give up the write lock (the next write takes it again)."""
        self._check_open()
        if self.has_lock:
            self._call(fcntl.flock, fcntl.LOCK_UN)
            self.has_lock = False

    def _take_lock(self, fd: int) -> None:
        if self.readonly:
            raise ReadOnlyError("%r is open read-only" % self.name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileLockedError(
                errno.EAGAIN,
                "%r is in use by another writer (a FileStorage or a durus server); "
                "open it with readonly=True or go through the server" % self.name) from None
        self.has_lock = True

    def get_name(self) -> str:
        return self.name

    def is_temporary(self) -> bool:
        return self.temporary

    def is_readonly(self) -> bool:
        return self.readonly

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed durus file %r" % self.name)

    def _call(self, function, *args, writing: bool = False):
        """Return function(descriptor, *args), taking the write lock first if
        writing; ValueError once the file is closed."""
        # No call comes between the count and the try, nor between the finally
        # and the uncount: nothing (a signal handler's Ctrl-C, another thread:
        # both run only at calls and loops under the GIL) can come between.
        self._uses += 1
        try:
            self._check_open()
            fd = self.file.fileno()
            if writing and not self.has_lock:
                self._take_lock(fd)
            return function(fd, *args)
        finally:
            self._uses -= 1
            if self.closed and not self._uses:
                self.file.close()

    def size(self) -> int:
        return self._call(os.fstat).st_size

    def stat(self) -> os.stat_result:
        """os.stat_result of the file; ClosedFileError (a ValueError and an OSError) once closed."""
        if self.closed:
            raise ClosedFileError("durus file %r is closed" % self.name)
        return self._call(os.fstat)

    def __len__(self) -> int:
        return self.stat().st_size

    def pread(self, n: int, position: int) -> bytes:
        """Return up to n bytes at position (fewer only at the end of the file)."""
        return self._call(os.pread, n, position)

    def pwrite(self, data: bytes, position: int) -> None:
        """Write all of data at position."""
        self._call(_write_all, data, position, writing=True)

    def truncate(self, size: int | None = None) -> None:
        """Cut the file to size bytes (by default, to the stream position)."""
        self._call(os.ftruncate, self.position if size is None else size, writing=True)

    def fsync(self) -> None:
        """Make everything written so far durable."""
        self._call(os.fdatasync)

    # Durus's stream style: reads and writes at self.position, moving it on.

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> None:
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self.tell() + offset
        elif whence == os.SEEK_END:
            position = self.size() + offset
        else:
            raise ValueError("whence is 0, 1 or 2, not %r" % (whence,))
        self._check_open()
        if position < 0:
            raise OSError(errno.EINVAL, "cannot seek to %d, before the start of %r"
                          % (position, self.name))
        self.position = position

    def seek_end(self) -> None:
        self.seek(0, os.SEEK_END)

    def tell(self) -> int:
        self._check_open()
        return self.position

    def read(self, n: int | None = None) -> bytes:
        """Return the next n bytes (fewer at the end of the file), or all that
        is left (n None or negative)."""
        if n is None or n < 0:
            n = max(0, self.size() - self.position)
        data = self.pread(n, self.position)
        self.position += len(data)
        return data

    def write(self, data: bytes) -> None:
        self.pwrite(data, self.position)
        self.position += len(data)

    def flush(self) -> None:
        """Nothing to do (writes go straight to the descriptor), once the file is checked open."""
        self._check_open()

    def is_at(self, path: str) -> bool:
        """Tell whether path names this file."""
        self._check_open()
        try:
            there = os.stat(path)
        except FileNotFoundError:
            return False
        return os.path.samestat(self._call(os.fstat), there)

    def rename(self, new_name: str) -> None:
        """Give the file a new name (replacing any file there) and make that durable.

        A temporary file keeps its name (it is removed by that name on close):
        renaming one raises AssertionError, as in Durus.
        """
        self._check_open()
        if new_name == self.name:
            return
        if self.temporary:
            raise AssertionError("temporary file %r cannot be renamed" % self.name)
        old_name, self.name = self.name, new_name
        try:
            os.replace(old_name, new_name)
        except BaseException:
            if not self.is_at(new_name):  # else it was stopped after the rename
                self.name = old_name
            raise
        fsync_directory(new_name)

    def link(self, other_name: str) -> None:
        """Give the file other_name as a second name, replacing any file there."""
        self._check_open()
        try:
            os.unlink(other_name)
        except FileNotFoundError:
            pass
        os.link(self.name, other_name)

    def close(self) -> None:
        """Close the file (and release its lock) once no call is using it."""
        self.closed = True
        self.has_lock = False
        if not self._uses:  # else the last use closes it
            self.file.close()


class StreamFile:
    """The positional interface of File over an open binary stream (an
    io.BytesIO, an open file object), so that a Shelf can live in one. It takes
    no lock, and fsync() only flushes: the stream's owner sees to those.
    """

    def __init__(self, stream: IO[bytes], readonly: bool = False) -> None:
        self.stream = stream
        self.readonly = readonly

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def get_name(self) -> str:
        return getattr(self.stream, "name", repr(self.stream))

    def is_temporary(self) -> bool:
        return False

    def is_readonly(self) -> bool:
        return self.readonly

    def obtain_lock(self) -> None:
        self._check_writable()

    def _check_writable(self) -> None:
        if self.readonly:
            raise ReadOnlyError("%s is open read-only" % self.get_name())

    def size(self) -> int:
        return self.stream.seek(0, os.SEEK_END)

    def pread(self, n: int, position: int) -> bytes:
        self.stream.seek(position)
        return self.stream.read(n)

    def pwrite(self, data: bytes, position: int) -> None:
        self._check_writable()
        self.stream.seek(position)
        self.stream.write(data)

    def truncate(self, size: int) -> None:
        self._check_writable()
        self.stream.truncate(size)

    def fsync(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()


def _pass(fd: int) -> None:
    """What File._call runs when only the lock is wanted."""


def _write_all(fd: int, data: bytes, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written


class WriterMark:
    """The file <database>.writer: present while a writer has the database
    open, and left behind by a writer that stopped without closing it.

    It is the evidence that a last transaction cut short at the end of the
    file is a commit in flight (one that never returned), not damage.

    A DFS20 writer (FileStorage2) also records in it, ahead of the note, where
    its own writes start: the session start (the file's end when it began to
    write, with a fingerprint of the bytes before it, so that the positions
    are not taken for those of another file) and the durable end (every byte
    before it fsynced). Marks without them (SHELF-1 writers, older versions)
    only tell that a writer was at work.
    """

    def __init__(self, database: str) -> None:
        self.path = database + ".writer"
        self._fd: int | None = None  # kept open by a writer that records positions
        self._session: tuple[int, int] | None = None  # (start, fingerprint) last recorded here
        self._note = b""  # what place() wrote after the positions
        self.owner: object = None  # what the recorded positions describe (set by their recorder)

    def is_present(self) -> bool:
        return os.path.exists(self.path)

    def place(self) -> None:
        """Mark the database open for writing, durably, before anything is written to it.

        Positions recorded in a mark left over by a writer that stopped stay
        until this writer records its own: a crash before then still finds them.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            kept = os.pread(fd, _POSITIONS_LENGTH, 0)
            kept = kept if _read_positions(kept) else b""
            note = self._note = (
                "pid %d on %s has had the database open for writing since %s. "
                "If it is gone, it stopped without closing the database; the next "
                "writer drops any commit it left unfinished.\n"
                % (os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"))
            ).encode()
            try:
                # The kept positions are rewritten as they are: nothing to lose.
                os.pwrite(fd, kept + note, 0)
                os.ftruncate(fd, len(kept) + len(note))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise  # on a full disk the mark still counts, without its note
                os.ftruncate(fd, len(kept))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self.path)

    def recorded(self) -> tuple[int, int, int | None] | None:
        """(session start, fingerprint, durable end or None if unreadable) recorded
        in the mark, or None if it holds none (or cannot be read)."""
        try:
            with open(self.path, "rb") as f:
                return _read_positions(f.read(_POSITIONS_LENGTH))
        except OSError:
            return None

    def record_session(self, start: int, fingerprint: int) -> None:
        """Record, durably, that this writer's writes start at byte start
        (the durable end too, for now). Raises OSError if it cannot."""
        self._session = None  # until it is durable
        # The note again, after them: the positions' place may have held it.
        self._pwrite(_session_line(start, fingerprint) + _durable_line(start, start, fingerprint)
                     + self._note)
        os.fdatasync(self._descriptor())
        self._session = start, fingerprint

    def record_durable_end(self, end: int) -> None:
        """Record that every byte before end is fsynced. Not synced itself: a
        killed process leaves it in the page cache, and after a power loss the
        session start (or an earlier durable end) still tells what it must.
        Raises OSError if it cannot."""
        if self._session is None:
            return  # no session of this writer is recorded to pair it with
        start, fingerprint = self._session
        self._pwrite(_durable_line(end, start, fingerprint), len(_SESSION_FORMAT % (0, 0, 0)))

    def _pwrite(self, data: bytes, position: int = 0) -> None:
        _write_all(self._descriptor(), data, position)

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY)  # a mark that was removed is not made again
        return self._fd

    def close(self) -> None:
        """Give up the descriptor that records positions (the mark stays)."""
        fd, self._fd = self._fd, None
        self.owner = self._session = None
        if fd is not None:
            os.close(fd)

    def remove(self) -> None:
        """Tell that the database was closed with nothing unfinished."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        fsync_directory(self.path)


# The positions at the start of a DFS20 writer's mark: two lines of fixed
# width (so that one pwrite replaces the durable end), each with a CRC-32 so
# that a torn or stray one is not believed. The durable end's CRC also covers
# its session, so that it is never paired with another session's start.
_SESSION_FORMAT = b"session-start %020d fingerprint %08x check %08x\n"
_DURABLE_FORMAT = b"durable-end %020d check %08x\n"
_POSITIONS_LENGTH = len(_SESSION_FORMAT % (0, 0, 0)) + len(_DURABLE_FORMAT % (0, 0))


def _session_line(start: int, fingerprint: int) -> bytes:
    return _SESSION_FORMAT % (start, fingerprint, zlib.crc32(b"%d %d" % (start, fingerprint)))


def _durable_line(end: int, start: int, fingerprint: int) -> bytes:
    return _DURABLE_FORMAT % (end, zlib.crc32(b"%d %d %d" % (end, start, fingerprint)))


def _read_positions(data: bytes) -> tuple[int, int, int | None] | None:
    """Parse the positions at the start of a mark: (session start,
    fingerprint, durable end or None), or None without a readable session start."""
    session, _, rest = data.partition(b"\n")
    start, fingerprint = _word(session, 1), _word(session, 3, 16)
    if start is None or fingerprint is None or session + b"\n" != _session_line(start, fingerprint):
        return None
    end = _word(rest.partition(b"\n")[0], 1)
    if end is None or not rest.startswith(_durable_line(end, start, fingerprint)):
        end = None
    return start, fingerprint, end


def _word(line: bytes, index: int, base: int = 10) -> int | None:
    """The number that is word index of line, or None."""
    try:
        return int(line.split()[index], base)
    except (IndexError, ValueError):
        return None


def fsync_directory(path: str) -> None:
    """Make a rename or creation of path durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
