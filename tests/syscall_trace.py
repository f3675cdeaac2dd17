"""Tracing the file-system calls durus makes: to check that their order keeps
commits durable across a power loss, and to crash a process between them.

Trace wraps the os functions durus writes through (the real ones still run)
and records each call as a Call naming the file it acts on; optionally also
each socket send (what a server tells its clients, and when).
"""

import json
import os
import signal
import socket
import traceback
from dataclasses import dataclass

# Calls that change a file, make it durable, or change a directory.
_TRACED = ("pwrite", "ftruncate", "fdatasync", "fsync", "replace", "rename", "link", "unlink")
WRITES = {"pwrite", "ftruncate"}
SYNCS = {"fdatasync", "fsync"}
NAMING = {"replace", "rename", "link", "unlink"}


@dataclass(frozen=True)
class Call:
    """name: the os function; path: the file (or directory) it acts on;
    detail: (position, length) for pwrite, (size,) for ftruncate, (target,)
    for replace/rename/link."""
    name: str
    path: str
    detail: tuple = ()

    @classmethod
    def load_all(cls, path) -> list:
        """Return the calls saved by save_all()."""
        return [cls(name, file, tuple(detail))
                for name, file, detail in json.loads(open(path).read())]


def save_all(calls: list, path) -> None:
    with open(path, "w") as f:
        json.dump([[call.name, call.path, list(call.detail)] for call in calls], f)


def _fd_path(fd: int) -> str:
    return os.readlink("/proc/self/fd/%d" % fd)


def _describe(name: str, args: tuple) -> Call:
    if name == "pwrite":
        fd, data, position = args
        return Call(name, _fd_path(fd), (position, len(data)))
    if name == "ftruncate":
        return Call(name, _fd_path(args[0]), (args[1],))
    if name in SYNCS:
        return Call(name, _fd_path(args[0]))
    if name == "unlink":
        return Call(name, os.path.abspath(args[0]))
    return Call(name, os.path.abspath(args[0]), (os.path.abspath(args[1]),))


class Trace:
    """Context manager recording calls in .calls; before(index, call), if
    given, runs just before each real call. With sockets, socket sends are
    recorded too, as Call("send", "socket", (first bytes as hex, length))."""

    def __init__(self, before=None, sockets: bool = False):
        self.calls = []
        self.before = before
        self.sockets = sockets
        self._saved = {}
        self._saved_send = None

    def __enter__(self) -> "Trace":
        for name in _TRACED:
            real = getattr(os, name)
            self._saved[name] = real
            setattr(os, name, self._wrap(name, real))
        if self.sockets:
            self._saved_send = real_send = socket.socket.send

            def send(sock, data, *flags):
                self.calls.append(Call("send", "socket", (bytes(data[:8]).hex(), len(data))))
                return real_send(sock, data, *flags)
            socket.socket.send = send
        return self

    def __exit__(self, *exc) -> None:
        for name, real in self._saved.items():
            setattr(os, name, real)
        if self._saved_send is not None:
            socket.socket.send = self._saved_send

    def _wrap(self, name: str, real):
        def traced(*args, **kwargs):
            call = _describe(name, args)
            if self.before is not None:
                self.before(len(self.calls), call)
            self.calls.append(call)
            return real(*args, **kwargs)
        return traced


def kill_before(index: int):
    """A `before` hook that SIGKILLs this process just before call number index."""
    def before(i: int, call: Call) -> None:
        if i == index:
            os.kill(os.getpid(), signal.SIGKILL)
    return before


def run_killed_at(index: int, operation) -> bool:
    """Run operation() in a forked child that is SIGKILLed just before its
    traced call number index; return True if it was killed (False if it
    made fewer calls and finished)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with Trace(before=kill_before(index)):
                operation()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)  # never return into the parent's code
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the operation failed in the child"
    return False


def check_durable_order(calls: list, database: str) -> None:
    """Assert that calls keep `database` safe whenever power is lost.

    - the database file exists under its name at every moment;
    - a file is synced after its last write before a rename or link puts it
      at the database's name, and before the end;
    - every rename, link or unlink is followed by an fsync of its directory.
    """
    database = os.path.abspath(database)
    present = {database}
    unsynced = set()  # paths written since their last sync
    unsynced_dirs = set()
    for call in calls:
        if call.name in WRITES:
            unsynced.add(call.path)
        elif call.name in SYNCS:
            unsynced.discard(call.path)
            unsynced_dirs.discard(call.path)
        elif call.name in NAMING:
            if call.name in ("replace", "rename", "link") and call.detail[0] == database:
                assert call.path not in unsynced, (
                    "%s put at the database's name before it was synced" % call.path)
            if call.name != "link":  # a link keeps the old name
                present.discard(call.path)
            if call.name != "unlink":
                present.add(call.detail[0])
            unsynced_dirs.add(os.path.dirname(call.path))
            assert database in present, "the database is missing after %s" % (call,)
    assert not unsynced, "written but never synced: %s" % sorted(unsynced)
    assert not unsynced_dirs, "directory changes never synced in %s" % sorted(unsynced_dirs)


def check_marked_writes(calls: list, database: str) -> None:
    """Assert that `database` is written only while its writer's mark is durable:
    the mark synced, and its directory synced after it was created."""
    database = os.path.abspath(database)
    mark = database + ".writer"
    synced = directory_synced = False
    for call in calls:
        if call.path == mark:
            if call.name == "unlink":
                synced = directory_synced = False
            else:
                synced = call.name in SYNCS
        elif call.name in SYNCS and call.path == os.path.dirname(mark) and synced:
            directory_synced = True
        elif call.name in WRITES and call.path == database:
            assert synced and directory_synced, "%s before the writer's mark was durable" % (call,)

