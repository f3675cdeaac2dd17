"""Copy a database into another storage, every record under its own oid.

durus convert SOURCE DEST copies every record SOURCE holds (those no longer
reachable too: a copy, not a pack) into DEST, a new database. SOURCE is a
file of any format, a postgresql:// URI, or durus://HOST:PORT (a server,
whose records are read as a client: those the root reaches). DEST's kind:
a postgresql:// URI is PostgreSQL; a file is SHELF-1 (FileStorage), unless
--format says shelf, dfs20 or sqlite, or its name ends in .sqlite, .sqlite3
or .db (SQLite). DEST must be new: a file must not exist (or be empty), a
relational database must hold no objects. A SHELF-1 or DFS20 DEST is
written as a pack writes one, to DEST.tmp, renamed to DEST once complete;
into SQLite and PostgreSQL the records go a batch a transaction, and the
oid counter is then moved past them, so that new objects get new oids.
"""

import argparse
import os
from typing import TYPE_CHECKING, Iterator

from durus.file_storage import FileStorage
from durus.relational import RelationalStorage
from durus.storage import Storage
from durus.tools.backup import write_new_file
from durus.tools.progress import progress
from durus.tools.target import open_target

if TYPE_CHECKING:  # imported when used: PostgreSQL's brings psycopg
    from durus.file import File
    from durus.postgres_storage import PostgresStorage
    from durus.sqlite_storage import SqliteStorage

FORMATS = ("shelf", "dfs20", "sqlite")
SQLITE_EXTENSIONS = (".sqlite", ".sqlite3", ".db")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Records a transaction, into a relational DEST.
BATCH = 5000
# Records between two updates of the progress shown.
PROGRESS_STEP = 1000


def dest_kind(dest: str, format: str | None = None) -> str:
    """Return the kind of storage DEST names: 'postgres', or one of FORMATS."""
    if dest.startswith(POSTGRES_SCHEMES):
        if format is not None:
            raise ValueError("--format is for a file DEST, not a postgresql:// URI")
        return "postgres"
    if format is not None:
        return format
    return "sqlite" if dest.lower().endswith(SQLITE_EXTENSIONS) else "shelf"


def convert(source: str, dest: str, format: str | None = None) -> int:
    """Copy every record of the storage at source into the new storage dest
    (of dest_kind(dest, format)); return how many. Raises ValueError if dest
    is not new."""
    kind = dest_kind(dest, format)
    if kind in ("shelf", "dfs20") and os.path.exists(dest) and os.path.getsize(dest):
        raise ValueError("%s exists (%d bytes): durus convert makes a new database; "
                         "remove it or choose another name" % (dest, os.path.getsize(dest)))
    storage = open_target(source)
    count = 0

    def counted() -> Iterator[tuple[bytes, bytes]]:
        nonlocal count
        with progress("convert %s to %s" % (source, kind), _count(storage)) as advance:
            for item in storage.gen_oid_record(None, batch_size=BATCH):
                yield item
                count += 1
                if count % PROGRESS_STEP == 0:
                    advance(PROGRESS_STEP)
            advance(count % PROGRESS_STEP)
    try:
        if kind in ("shelf", "dfs20"):
            _write_file(dest, kind, counted())
        else:
            _write_relational(dest, kind, counted())
    finally:
        storage.close()
    return count


def _count(storage: Storage) -> int | None:
    """How many records storage holds, where that is cheap to know."""
    if isinstance(storage, FileStorage):
        return sum(1 for _ in storage.shelf.gen_oids())
    if isinstance(storage, RelationalStorage):
        return storage.count_objects()
    return None  # a server: what the root reaches is known once walked


def _write_file(dest: str, kind: str, records) -> None:
    """Write a new SHELF-1 or DFS20 file of records at dest (through dest.tmp),
    as a pack writes one (the writer fsyncs it when exhausted)."""
    if kind == "shelf":
        from durus.shelf import write_shelf as write
    else:
        from durus.file_storage2 import write_dfs20 as write

    def fill(file: "File") -> None:
        for _ in write(file, records):
            pass  # the writer yields between steps, for a pack to interleave others' work
    write_new_file(dest, fill)


def _write_relational(dest: str, kind: str, records) -> None:
    """Store records into the empty SQLite or PostgreSQL database dest, BATCH
    a transaction; then move its oid counter past them."""
    cls: "type[SqliteStorage | PostgresStorage]"
    if kind == "sqlite":
        from durus.sqlite_storage import SqliteStorage as cls
    else:
        from durus.postgres_storage import PostgresStorage as cls
    storage = cls(dest)
    try:
        found = storage.count_objects()
        if found:
            raise ValueError("%s holds %d objects already: durus convert copies into a new, "
                             "empty database" % (storage.get_filename(), found))
        storage.begin()
        for count, (oid, record) in enumerate(records, 1):
            storage.store(oid, record)
            if count % BATCH == 0:
                storage.end()
                storage.begin()
        storage.end()
        storage.skip_stored_oids()
    finally:
        storage.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="durus convert",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a file of any format, a postgresql:// URI or "
                                       "durus://HOST:PORT")
    parser.add_argument("dest", help="a new file, or a postgresql:// URI of an empty database")
    parser.add_argument("--format", choices=FORMATS,
                        help="DEST's format, for a file (default: sqlite for a name ending "
                             "in .sqlite, .sqlite3 or .db, else shelf)")
    options = parser.parse_args(argv)
    count = convert(options.source, options.dest, options.format)
    print("%s: %d records copied from %s (%s)" % (
        options.dest, count, options.source, dest_kind(options.dest, options.format)))
