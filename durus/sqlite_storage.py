"""SqliteStorage: a database in one SQLite file, shared by processes without a server.

Durus 4.3's files open here (its one table, objects, is ours too) and ours
open there. The design (snapshots, the commit log, packs while others
commit) is durus.relational's. The file is put in WAL mode, so that readers
keep their snapshots while a writer commits; a commit is on disk when end()
returns: SQLite runs with synchronous=NORMAL, and end() syncs the WAL after
the write lock is released, so that the syncs of processes committing one
after the other overlap (a group commit of sorts).
"""

import os
import sqlite3
import tempfile
import time

from durus.error import CorruptFileError, LockTimeoutError
from durus.relational import BUSY_TIMEOUT, DEFAULT_CACHE_BYTES, OID_BLOCK, RelationalStorage

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS objects (id integer primary key, data blob, refs blob)",
    "CREATE TABLE IF NOT EXISTS durus_log (tid integer primary key autoincrement, "
    "committed real not null, oids blob not null)",
    "CREATE TABLE IF NOT EXISTS durus_meta (name text primary key, value integer not null)",
)


class SqliteStorage(RelationalStorage):
    """A storage in an SQLite file that several processes may open at once.

    filename: str | None (None: a temporary file, deleted on close).
    readonly: bool, never write. repair: accepted for Durus's signature (SQLite
    recovers its file after a crash by itself). fsync: bool, a commit is on
    disk when end() returns (the WAL synced), or may be lost in a power cut
    but not corrupt the file (False). cache_bytes: int,
    records kept in memory.
    """

    def __init__(self, filename: str | None = None, readonly: bool = False,
                 repair: bool = False, fsync: bool = True,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.temporary = filename is None
        if filename is None:
            if readonly:
                raise ValueError("a temporary SqliteStorage cannot be read-only")
            descriptor, filename = tempfile.mkstemp(suffix=".sqlite")
            os.close(descriptor)
        elif readonly and not os.path.exists(filename):
            raise FileNotFoundError("no database file %r to open read-only" % filename)
        self.filename = os.path.abspath(filename)
        self.fsync = fsync
        self._counter: sqlite3.Connection | None = None  # a second connection, for oids: the first keeps its snapshot
        # In WAL mode a read transaction is a snapshot that blocks no writer;
        # a file a reader may not switch to WAL (Durus 4.3's, read-only) is
        # read a statement at a time instead, or it would lock writers out.
        self._snapshots = True
        super().__init__(readonly, cache_bytes)
        self._data_version = self._data_version_now(self._db)

    def _connect(self, synchronous: str | None = None) -> sqlite3.Connection:
        if self.readonly:
            target, uri = "file:%s?mode=ro" % self.filename, True
        else:
            target, uri = self.filename, False
        try:
            # Threads are held off by the storage (one per thread), not here:
            # close() may come from another one.
            db = sqlite3.connect(target, uri=uri, isolation_level=None, timeout=BUSY_TIMEOUT,
                                 check_same_thread=False)
            mode = db.execute("PRAGMA journal_mode%s" % ("" if self.readonly else "=WAL")
                              ).fetchone()[0]
            self._snapshots = mode == "wal"
            # In WAL mode a commit is made durable by _make_durable, outside
            # the write lock, so that processes' syncs overlap.
            db.execute("PRAGMA synchronous=%s" % (
                synchronous or ("FULL" if self.fsync and not self._snapshots else "NORMAL")))
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as error:
            if _is_locked(error):
                raise LockTimeoutError("%r: another process kept the database locked for %d s"
                                       % (self.filename, BUSY_TIMEOUT)) from None
            raise CorruptFileError("%r is not an SQLite database (%s)"
                                   % (self.filename, error)) from None
        except sqlite3.DatabaseError as error:
            raise CorruptFileError("%r is not an SQLite database (%s)"
                                   % (self.filename, error)) from None
        return db

    def _execute(self, db, sql: str, params=()):
        return db.execute(sql, params)

    def _executemany(self, db, sql: str, rows) -> None:
        db.executemany(sql, rows)

    def _begin_read(self, db) -> None:
        if self._snapshots:
            db.execute("BEGIN")

    def _begin_write(self, db) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if not _is_locked(error):
                raise
            raise LockTimeoutError("%r: another process held the write lock for %d s; nothing "
                                   "was written" % (self.filename, BUSY_TIMEOUT)) from None

    def _in_transaction(self, db) -> bool:
        return db.in_transaction

    def _insert_log(self, db, oids: bytes) -> int:
        return db.execute("INSERT INTO durus_log (committed, oids) VALUES (?, ?)",
                          (time.time(), oids)).lastrowid

    def _reserve_oids(self) -> range:
        """The next block from the shared counter, never below the highest id
        stored (a Durus 4.3 process may have added objects)."""
        db = self._counter
        if db is None:
            db = self._counter = self._connect(synchronous="NORMAL")

        def draw() -> int:
            (first,) = db.execute(
                "SELECT max(coalesce((SELECT value FROM durus_meta WHERE name = 'next_oid'), 0),"
                " coalesce((SELECT max(id) + 1 FROM objects), 0))").fetchone()
            db.execute("INSERT INTO durus_meta (name, value) VALUES ('next_oid', ?) ON CONFLICT "
                       "(name) DO UPDATE SET value = excluded.value", (first + OID_BLOCK,))
            return first
        first = self._write(db, draw)
        return range(first, first + OID_BLOCK)

    def _drop(self, db) -> None:
        super()._drop(db)
        db.close()
        if db is self._counter:
            self._counter = None

    def _make_durable(self) -> None:
        """Sync the WAL, which holds the commit just made (SQLite, with
        synchronous=NORMAL, does not at a commit; it does at a checkpoint)."""
        if not (self.fsync and self._snapshots):
            return
        descriptor = os.open(self.filename + "-wal", os.O_RDONLY)
        try:
            os.fdatasync(descriptor)
        finally:
            os.close(descriptor)

    def _data_version_now(self, db) -> int:
        return db.execute("PRAGMA data_version").fetchone()[0]

    def _changed_without_log(self, db) -> bool:
        version, self._data_version = self._data_version, self._data_version_now(db)
        return version != self._data_version

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


def _is_locked(error: sqlite3.OperationalError) -> bool:
    """Tell whether SQLite gave up waiting for another process's lock."""
    return "locked" in str(error) or "busy" in str(error)
