"""File: the on-disk file under a FileStorage, with locking, positional I/O and
fsync; WriterMark: the file that tells a writer is (or was) at work on it."""

import errno
import fcntl
import os
import socket
import tempfile
import time

from durus.error import FileLockedError, ReadOnlyError


class File:
    """An open database file.

    Writers hold an exclusive flock for as long as the file is open; readonly
    opens take no lock. With name None, an anonymous temporary file is used
    and removed on close().
    """

    def __init__(self, name: str | None = None, readonly: bool = False):
        self.readonly = readonly
        self.temporary = name is None
        if self.temporary:
            if readonly:
                raise ValueError("a temporary file cannot be read-only")
            self.file = tempfile.NamedTemporaryFile(prefix="durus-", suffix=".durus")
            self.name = self.file.name
        elif readonly:
            if not os.path.exists(name):
                raise FileNotFoundError("no durus file at %r to open read-only" % name)
            self.file = open(name, "rb")
            self.name = name
        else:
            self.file = open(name, "r+b" if os.path.exists(name) else "w+b")
            self.name = name
        self.closed = False
        # Descriptor uses under way, in any thread: close() leaves the
        # descriptor open until the last one ends, so that no other file can
        # be given its number while a call still uses it.
        self._uses = 0
        if not readonly:
            self._lock()

    def _lock(self) -> None:
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise FileLockedError(
                errno.EAGAIN,
                "%r is in use by another writer (a FileStorage or a durus server); "
                "open it with readonly=True or go through the server" % self.name) from None

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
        """Return function(descriptor, *args); ValueError once the file is closed."""
        # No call comes between the count and the try, nor between the finally
        # and the uncount: nothing (a signal handler's Ctrl-C, another thread:
        # both run only at calls and loops under the GIL) can come between.
        self._uses += 1
        try:
            self._check_open()
            if writing and self.readonly:
                raise ReadOnlyError("%r is open read-only" % self.name)
            return function(self.file.fileno(), *args)
        finally:
            self._uses -= 1
            if self.closed and not self._uses:
                self.file.close()

    def size(self) -> int:
        return self._call(os.fstat).st_size

    def pread(self, n: int, position: int) -> bytes:
        """Return up to n bytes at position (fewer only at the end of the file)."""
        return self._call(os.pread, n, position)

    def pwrite(self, data: bytes, position: int) -> None:
        """Write all of data at position."""
        self._call(_write_all, data, position, writing=True)

    def truncate(self, size: int) -> None:
        self._call(os.ftruncate, size, writing=True)

    def fsync(self) -> None:
        """Make everything written so far durable."""
        self._call(os.fdatasync)

    def is_at(self, path: str) -> bool:
        """Tell whether path names this file."""
        self._check_open()
        try:
            there = os.stat(path)
        except FileNotFoundError:
            return False
        return os.path.samestat(self._call(os.fstat), there)

    def rename(self, new_name: str) -> None:
        """Give the file a new name (replacing any file there) and make that durable."""
        self._check_open()
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
        if not self._uses:  # else the last use closes it
            self.file.close()


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
    """

    def __init__(self, database: str):
        self.path = database + ".writer"

    def is_present(self) -> bool:
        return os.path.exists(self.path)

    def place(self) -> None:
        """Mark the database open for writing, durably, before anything is written to it."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            note = ("pid %d on %s has had the database open for writing since %s. "
                    "If it is gone, it stopped without closing the database; the next "
                    "writer drops any commit it left unfinished.\n"
                    % (os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S")))
            try:
                os.pwrite(fd, note.encode(), 0)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise  # on a full disk the mark still counts, without its note
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self.path)

    def remove(self) -> None:
        """Tell that the database was closed with nothing unfinished."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        fsync_directory(self.path)


def fsync_directory(path: str) -> None:
    """Make a rename or creation of path durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
