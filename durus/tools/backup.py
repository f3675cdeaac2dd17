"""Copy a SHELF-1 or DFS20 file while it is in use; run again, add what is new.

durus backup SOURCE DEST copies SOURCE up to the end of its last complete
transaction, read through one open descriptor (a pack that replaces the file
meanwhile does not change what that descriptor reads), and fsyncs DEST. Both
formats only ever append between packs, so when DEST exists and is a
byte-prefix of SOURCE, only the bytes past its end are copied. Otherwise
(SOURCE was packed since, or DEST is another database) the backup is
refused, because DEST is then the only copy of what the pack removed; with
--replace, a full copy is written to DEST.tmp and renamed over DEST.

Checking the prefix compares, rather than every byte, DEST's first 64 KiB,
its last MiB (the last transactions) and 64 blocks spread over the rest: a
second or two for any size, and a pack rewrites the file from its start.
"""

import argparse
import os
from dataclasses import dataclass
from typing import Callable

from durus.file import File
from durus.file_storage import FileStorage
from durus.tools.progress import progress
from durus.tools.target import SERVER_SCHEME

# Bytes copied at a time.
CHUNK = 1 << 22
# The regions of DEST compared with SOURCE (see the module's docstring).
HEAD = 1 << 16
TAIL = 1 << 20
SAMPLES = 64
SAMPLE = 1 << 12

_ELSEWHERE = {
    "sqlite": "SQLite databases have their own online backup: sqlite3 SOURCE '.backup DEST'",
    "postgres": "use PostgreSQL's own tools (pg_dump, pg_basebackup)",
    "server": "run durus backup on the server's machine, on the file it serves",
}


@dataclass
class Result:
    """What a backup did: copied bytes from SOURCE, DEST now has size bytes;
    incremental if it appended to an earlier backup."""
    copied: int
    size: int
    incremental: bool


def backup(source: str, dest: str, replace: bool = False) -> Result:
    """Back up the file storage at source (a path) to the file dest; see
    the module's docstring. Raises ValueError if dest is not an earlier
    backup of source (unless replace) or source is not a SHELF-1 or DFS20 file."""
    storage = _open_source(source)
    try:
        origin, end = storage.shelf.file, storage.shelf.end
        assert isinstance(origin, File)  # _open_source opens a path: a File
        dest_size = os.path.getsize(dest) if os.path.exists(dest) else 0
        if dest_size:
            mismatch = _first_difference(origin, end, dest, dest_size)
            if mismatch is None:
                return Result(_append(origin, end, dest, dest_size), end, True)
            if not replace:
                raise ValueError(
                    "%s is not an earlier backup of %s: %s (%s was packed since, or %s "
                    "holds another database). It may hold objects %s no longer has: keep "
                    "it and back up to a new file, or add --replace to write a full copy "
                    "over it" % (dest, source, mismatch, source, dest, source))
        _copy_whole(origin, end, dest)
        return Result(end, end, False)
    finally:
        storage.close()


def _open_source(source: str) -> FileStorage:
    from durus.__main__ import get_storage_class
    if source.startswith(SERVER_SCHEME):
        raise ValueError("%s is a server: %s" % (source, _ELSEWHERE["server"]))
    if not source.startswith("postgres") and not os.path.isfile(source):
        raise ValueError("no database file %s" % source)
    cls = get_storage_class(source)
    if not issubclass(cls, FileStorage):
        kind = "postgres" if source.startswith("postgres") else "sqlite"
        raise ValueError("durus backup copies SHELF-1 and DFS20 files; for %s, %s"
                         % (source, _ELSEWHERE[kind]))
    return cls(source, readonly=True)


def _first_difference(origin: File, end: int, dest: str, dest_size: int) -> str | None:
    """Why the file dest (of dest_size bytes) is not the start of origin's
    first end bytes, or None if the regions compared agree."""
    if dest_size > end:
        return "it has %d bytes, more than the %d of %s" % (dest_size, end, origin.get_name())
    step = max(SAMPLE, dest_size // SAMPLES)
    regions = [(0, HEAD), (max(0, dest_size - TAIL), TAIL)]
    regions += [(position, SAMPLE) for position in range(HEAD, dest_size - TAIL, step)]
    with open(dest, "rb") as copy:
        for position, length in regions:
            length = min(length, dest_size - position)
            theirs = os.pread(copy.fileno(), length, position)
            ours = origin.pread(length, position)
            if theirs != ours:
                offset = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b),
                              min(len(theirs), len(ours)))
                return "the two differ at byte %d" % (position + offset)
    return None


def _append(origin: File, end: int, dest: str, start: int) -> int:
    """Copy origin's bytes from start to end onto the end of dest; return how many."""
    target = File(dest)
    try:
        target.obtain_lock()  # no other backup, or writer, on it meanwhile
        _copy(origin, start, end, target)
    finally:
        target.close()
    return end - start


def _copy_whole(origin: File, end: int, dest: str) -> None:
    """Write origin's first end bytes to dest, through dest.tmp."""
    write_new_file(dest, lambda target: _copy(origin, 0, end, target))


def write_new_file(dest: str, write: Callable[[File], None]) -> None:
    """Put a file at dest whole or not at all: write(file) fills dest.tmp
    (locked, emptied first) and leaves it on disk; then it is renamed to dest."""
    target = File(dest + ".tmp")
    try:
        target.obtain_lock()  # no other backup or convert into it meanwhile
        target.truncate(0)
        write(target)
        target.rename(dest)  # durable: it fsyncs the directory
    except BaseException:
        if not target.is_at(dest):
            os.unlink(dest + ".tmp")
        raise
    finally:
        target.close()


def _copy(origin: File, start: int, end: int, target: File) -> None:
    """Copy origin's bytes from start to end to the same positions of target, then fsync it."""
    with progress("backup of %s" % origin.get_name(), end - start, "bytes") as advance:
        for position in range(start, end, CHUNK):
            data = origin.pread(min(CHUNK, end - position), position)
            target.pwrite(data, position)
            advance(len(data))
    target.fsync()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="durus backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the SHELF-1 or DFS20 file to back up (it may be in use)")
    parser.add_argument("dest", help="the backup file: made if missing, else extended")
    parser.add_argument("--replace", action="store_true",
                        help="if DEST is not an earlier backup of SOURCE, replace it with a "
                             "full copy (written to DEST.tmp, then renamed)")
    options = parser.parse_args(argv)
    result = backup(options.source, options.dest, options.replace)
    # The proof that the backup is a database: it opens as one.
    from durus.__main__ import get_storage
    get_storage(options.dest, readonly=True).close()
    print("%s: %s, %d bytes copied, %d bytes in all" % (
        options.dest, "incremental" if result.incremental else "full copy", result.copied,
        result.size))
