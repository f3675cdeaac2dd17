"""GroupCommit: one fsync for many commits, while a server goes on serving.

A storage server that fsyncs each commit before answering it serves one
durable commit per disk flush. Instead, the server writes commits without
fsync, counts them here, and answers each only once a flush that began after
it was written has finished. The flushes run in a thread (fsync releases the
GIL), so the event loop keeps writing the commits of other clients meanwhile,
and each flush covers all of them.
"""

import socket
import threading
from typing import TYPE_CHECKING
from logging import DEBUG

from durus.logger import log

if TYPE_CHECKING:
    from durus.file_storage import FileStorage


class GroupCommit:
    """Flushes storage (which has make_durable()) in a thread; wake gets a
    byte whenever more commits are durable, or a flush failed.

    written: int, commits written so far (numbered from 1).
    durable: int, the highest commit number known to be on disk.
    error: OSError | None, why a flush failed; no commit is durable after it.
    """

    def __init__(self, storage: "FileStorage", wake: socket.socket) -> None:
        self.storage = storage
        self.wake = wake
        self.written = 0
        self.durable = 0
        self.error: OSError | None = None
        self._stopping = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="durus-group-commit",
                                        daemon=True)
        self._thread.start()

    def note_written(self) -> int:
        """Count one more commit written; return its number."""
        with self._condition:
            self.written += 1
            self._condition.notify()
            return self.written

    def is_durable(self, number: int) -> bool:
        with self._condition:
            return number <= self.durable

    def stop(self) -> None:
        """Flush what is written, and end the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._condition:
                while self.durable == self.written and not self._stopping:
                    self._condition.wait()
                if self.durable == self.written:
                    return  # stopping, and all is flushed
                target = self.written
            try:
                self.storage.make_durable()
            except OSError as exc:
                with self._condition:
                    self.error = exc
                self._wake()
                return
            # Only this thread changes durable; the log line (I/O) is kept
            # out of the lock, which the event loop takes at every commit.
            log(DEBUG, "Flushed %d commits to disk", target - self.durable)
            with self._condition:
                self.durable = target
            self._wake()

    def _wake(self) -> None:
        try:
            self.wake.send(b"\0")
        except OSError:
            pass  # its buffer is full: the loop has wake-ups to read already
