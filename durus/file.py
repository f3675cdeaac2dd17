"""File: the on-disk file under a FileStorage, with locking, positional I/O and fsync."""

import fcntl
import os
import tempfile

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
        self.fd = self.file.fileno()
        if not readonly:
            self._lock()

    def _lock(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise FileLockedError(
                "%r is in use by another writer (a FileStorage or a durus server); "
                "open it with readonly=True or go through the server" % self.name) from None

    def get_name(self) -> str:
        return self.name

    def is_temporary(self) -> bool:
        return self.temporary

    def is_readonly(self) -> bool:
        return self.readonly

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def pread(self, n: int, position: int) -> bytes:
        """Return up to n bytes at position (fewer only at the end of the file)."""
        return os.pread(self.fd, n, position)

    def pwrite(self, data: bytes, position: int) -> None:
        """Write all of data at position."""
        self._check_writable()
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, position)
            view = view[written:]
            position += written

    def truncate(self, size: int) -> None:
        self._check_writable()
        os.ftruncate(self.fd, size)

    def fsync(self) -> None:
        """Make everything written so far durable."""
        os.fdatasync(self.fd)

    def _check_writable(self) -> None:
        if self.readonly:
            raise ReadOnlyError("%r is open read-only" % self.name)

    def rename(self, new_name: str) -> None:
        """Give the file a new name (replacing any file there) and make that durable."""
        os.replace(self.name, new_name)
        self.name = new_name
        fsync_directory(new_name)

    def link(self, other_name: str) -> None:
        """Give the file other_name as a second name, replacing any file there."""
        try:
            os.unlink(other_name)
        except FileNotFoundError:
            pass
        os.link(self.name, other_name)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()  # closing also releases the flock


def fsync_directory(path: str) -> None:
    """Make a rename or creation of path durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
