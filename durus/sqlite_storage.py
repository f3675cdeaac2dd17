"""SqliteStorage: a database in one SQLite file, shared by processes without a server.

Durus 4.3's files open here (its one table, objects, is ours too) and ours
open there. The design (snapshots, the commit log, packs while others
commit) is durus.relational's. The file is put in WAL mode, so that readers
keep their snapshots while a writer commits; a commit is on disk when end()
returns (synchronous=FULL: SQLite syncs the WAL at every commit).
"""

import os
import sqlite3
import tempfile
import time

from durus.error import CorruptFileError
from durus.relational import DEFAULT_CACHE_BYTES, OID_BLOCK, RelationalStorage

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS objects (id integer primary key, data blob, refs blob)",
    "CREATE TABLE IF NOT EXISTS durus_log (tid integer primary key autoincrement, "
    "committed real not null, oids blob not null)",
    "CREATE TABLE IF NOT EXISTS durus_meta (name text primary key, value integer not null)",
)

# Seconds a process waits for another's write lock before giving up.
BUSY_TIMEOUT = 60.0


class SqliteStorage(RelationalStorage):
    """A storage in an SQLite file that several processes may open at once.

    filename: str | None (None: a temporary file, deleted on close).
    readonly: bool, never write. repair: accepted for Durus's signature (SQLite
    recovers its file after a crash by itself). fsync: bool, a commit is on
    disk when end() returns (synchronous=FULL), or may be lost in a power cut
    but not corrupt the file (False: synchronous=NORMAL). cache_bytes: int,
    records kept in memory.
    """

    def __init__(self, filename: str | None = None, readonly: bool = False,
                 repair: bool = False, fsync: bool = True,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.temporary = filename is None
        if self.temporary:
            if readonly:
                raise ValueError("a temporary SqliteStorage cannot be read-only")
            descriptor, filename = tempfile.mkstemp(suffix=".sqlite")
            os.close(descriptor)
        elif readonly and not os.path.exists(filename):
            raise FileNotFoundError("no database file %r to open read-only" % filename)
        self.filename = os.path.abspath(filename)
        self.fsync = fsync
        self._counter = None  # a second connection, for oids: the first keeps its snapshot
        super().__init__(readonly, cache_bytes)

    def _connect(self, synchronous: str | None = None) -> sqlite3.Connection:
        if self.readonly:
            target, uri = "file:%s?mode=ro" % self.filename, True
        else:
            target, uri = self.filename, False
        try:
            db = sqlite3.connect(target, uri=uri, isolation_level=None, timeout=BUSY_TIMEOUT,
                                 check_same_thread=False)
            if not self.readonly:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=%s" % (
                synchronous or ("FULL" if self.fsync else "NORMAL")))
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as error:
            raise CorruptFileError("%r is not an SQLite database (%s)"
                                   % (self.filename, error)) from None
        return db

    def _execute(self, db, sql: str, params=()):
        return db.execute(sql, params)

    def _executemany(self, db, sql: str, rows) -> None:
        db.executemany(sql, rows)

    def _begin_read(self, db) -> None:
        db.execute("BEGIN")

    def _begin_write(self, db) -> None:
        db.execute("BEGIN IMMEDIATE")

    def _in_transaction(self, db) -> bool:
        return db.in_transaction

    def _insert_log(self, db, oids: bytes) -> int:
        return db.execute("INSERT INTO durus_log (committed, oids) VALUES (?, ?)",
                          (time.time(), oids)).lastrowid

    def _reserve_oids(self) -> range:
        """The next block from the shared counter, never below the highest id
        stored (a Durus 4.3 process may have added objects)."""
        if self._counter is None:
            self._counter = self._connect(synchronous="NORMAL")
        db = self._counter

        def draw() -> int:
            (first,) = db.execute(
                "SELECT max(coalesce((SELECT value FROM durus_meta WHERE name = 'next_oid'), 0),"
                " coalesce((SELECT max(id) + 1 FROM objects), 0))").fetchone()
            db.execute("INSERT INTO durus_meta (name, value) VALUES ('next_oid', ?) ON CONFLICT "
                       "(name) DO UPDATE SET value = excluded.value", (first + OID_BLOCK,))
            return first
        first = self._write(db, draw)
        return range(first, first + OID_BLOCK)

    def _create_tables(self, db) -> None:
        self._write(db, lambda: [db.execute(statement) for statement in _SCHEMA])

    def _table_exists(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (name,)).fetchone() is not None

    def get_filename(self) -> str:
        return self.filename

    def is_temporary(self) -> bool:
        return self.temporary

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._counter is not None:
            self._counter.close()
        if self.temporary:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(self.filename + suffix)
                except FileNotFoundError:
                    pass

    def __str__(self):
        return "SqliteStorage(%r)" % self.filename
