"""The design SqliteStorage and PostgresStorage share: records in an SQL
table, many processes on one database without a storage server.

Tables (Durus 4.3's SqliteStorage has the first only):

- objects(id, data, refs): one row per object, its oid as an integer;
- durus_log(tid, committed, oids): one row per commit, naming the oids it
  wrote (or a pack removed), in commit order;
- durus_meta(name, value): 'log_pruned_through', the last log row a pack
  dropped (and, on SQLite, 'next_oid', the oid counter).

Each process keeps one read transaction open from one sync() (or commit) to
the next: a snapshot, so a transaction reads one consistent state and never
meets a ReadConflictError for what others committed meanwhile. At sync() it
reads the log rows past the last one it saw: the oids its connection must
drop. A commit takes the database's write lock, reads the same rows (the
connection raises ConflictError if this transaction read or wrote any of
those objects: no lost update, no write skew), writes its records and its
log row, and releases the lock with the database's own commit.

A pack marks what the root reaches in a snapshot without any lock, then
removes the rest in batches under the write lock, first taking back what
commits made reachable since the mark.
"""

import threading
import time
from typing import Any, Iterable, Iterator

from durus.error import DurusKeyError, ReadConflictError, ReadOnlyError, WriteConflictError
from durus.logger import log
from durus.record_cache import ReadAheadQueue, RecordCache
from durus.record_format import check_record, pack_record, split_oids, unpack_record
from durus.storage import ROOT_OID, InvalidationHandler, Storage
from durus.utils import int8_to_str, str_to_int8

# Seconds a process waits for another's commit lock before giving up.
BUSY_TIMEOUT = 60

# Log rows younger than this are kept by a pack; a process that has not
# synced for longer treats every object it has as changed.
LOG_KEEP_SECONDS = 3600.0
# Oids a process reserves at once.
OID_BLOCK = 128
# Ids per query.
BATCH = 500
# Objects a pack marks between two steps, and removes per write transaction.
PACK_STEP = 2000
# Bytes of records a process keeps in memory, as a ClientStorage does.
DEFAULT_CACHE_BYTES = 64 << 20

_TABLES = ("objects", "durus_log", "durus_meta")
UPSERT = ("INSERT INTO objects (id, data, refs) VALUES (?, ?, ?) ON CONFLICT (id) "
           "DO UPDATE SET data = excluded.data, refs = excluded.refs")


class RelationalStorage(Storage):
    """Records in an SQL database that several processes share.

    Subclasses connect to their engine and say how it begins transactions,
    takes the write lock and hands out oids; SQL here uses '?' parameters.
    """

    # How many of the objects a loaded record refers to are read with it
    # (where a query costs a round trip over the network; 0: none).
    read_ahead = 0
    # Cache bytes for each oid the read-ahead queue may hold.
    read_ahead_queue_bytes = 128

    def __init__(self, readonly: bool, cache_bytes: int) -> None:
        if not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ValueError("cache_bytes must be an int >= 0, not %r" % (cache_bytes,))
        self.readonly = readonly
        # One thread uses a storage, as one uses a Connection (close() excepted).
        self._thread = threading.get_ident()
        self.pending: dict = {}
        self.invalid: set = set()  # oids others committed past this snapshot
        self.cache = RecordCache(cache_bytes)
        self._reserved: list = []
        self._new: set = set()  # oid numbers handed out by new_oid(), not committed yet
        self._last_tid = 0
        self._lost = False  # the connection broke: the next operation reconnects
        self._read_ahead = ReadAheadQueue(self.cache, self.read_ahead,
                                          cache_bytes // self.read_ahead_queue_bytes)
        self._db = self._connect()
        if not readonly and not all(map(self._table_exists, _TABLES)):
            self._create_tables(self._db)
        self._has_log = self._table_exists("durus_log")
        self._begin_read(self._db)
        if self._has_log:
            self._last_tid = self._query_one(
                self._db, "SELECT coalesce(max(tid), 0) FROM durus_log")[0]

    # What each engine provides.

    def _connect(self):
        """Return a new connection to the database, in autocommit mode."""
        raise NotImplementedError

    def _execute(self, db, sql: str, params=()):
        """Run sql (with '?' parameters) on db; return the cursor."""
        raise NotImplementedError

    def _executemany(self, db, sql: str, rows) -> None:
        raise NotImplementedError

    def _begin_read(self, db) -> None:
        """Begin a read transaction whose snapshot its first query fixes."""
        raise NotImplementedError

    def _begin_write(self, db) -> None:
        """Begin a transaction holding the database's write lock (waiting for
        it, up to a limit: then LockTimeoutError)."""
        raise NotImplementedError

    def _in_transaction(self, db) -> bool:
        raise NotImplementedError

    def _make_durable(self) -> None:
        """Make sure the commit just made is on disk (after the write lock is
        released: where the engine's commit does not see to it itself)."""

    def _store_rows(self, db, rows: list) -> None:
        """Insert or replace the rows (id, data, refs) of objects."""
        self._executemany(db, UPSERT, rows)

    def _insert_log(self, db, oids: bytes) -> int:
        """Add a log row naming oids; return its tid."""
        raise NotImplementedError

    def _reserve_oids(self) -> range:
        """Return a block of oids (ints) that no process was given before."""
        raise NotImplementedError

    def _create_tables(self, db) -> None:
        raise NotImplementedError

    def _table_exists(self, name: str) -> bool:
        raise NotImplementedError

    def _changed_without_log(self, db) -> bool:
        """Tell whether others committed since this was last asked, in a
        database that has no log (one only Durus 4.3 wrote)."""
        raise NotImplementedError

    # Shared helpers.

    def _query_one(self, db, sql: str, params=()):
        return self._execute(db, sql, params).fetchone()

    def _finish(self, db) -> None:
        """End db's read transaction, if it has one. Rolled back: a read has
        nothing to commit, and a write an interrupt left open must not be."""
        if self._in_transaction(db):
            self._execute(db, "ROLLBACK")

    def _write(self, db, work):
        """Return work() run in a transaction holding the write lock, committed."""
        try:
            self._begin_write(db)
            result = work()
            self._execute(db, "COMMIT")
        except BaseException:
            try:
                self._finish(db)
            except Exception:
                self._drop(db)  # what cannot be rolled back is abandoned: closing does it
            raise
        return result

    def _drop(self, db) -> None:
        """Stop using db, which can no longer be trusted (it is closed, or
        about to be): if it is the storage's own, the next operation reconnects."""
        if db is self._db:
            self._lost = True

    def _reconnect(self) -> None:
        """Replace the lost connection; the commits missed meanwhile are in
        the log, read at the new snapshot."""
        try:
            self._db.close()
        except Exception:
            pass  # it is gone already
        self._db = self._connect()
        self._lost = False
        self._reserved = []
        self._new_snapshot(self._db)

    def _new_snapshot(self, db) -> None:
        """End whatever transaction db has, begin a read transaction, and
        note what others committed before it."""
        self._finish(db)
        self._begin_read(db)
        self._collect_log(db)

    def _collect_log(self, db) -> None:
        """Note the oids of the log rows past the last one seen in self.invalid,
        and forget their cached records.

        Every step may be repeated: the last row seen advances only once
        both are done, so an interrupt loses no invalidation.
        """
        if not self._has_log:
            self._note_changes_without_log(db)
            return
        # One query: the rows, and a row of tid -1 if some were pruned unseen.
        rows = self._execute(
            db, "SELECT tid, oids FROM durus_log WHERE tid > ? UNION ALL "
                "SELECT -1, NULL FROM durus_meta WHERE name = 'log_pruned_through' "
                "AND value > ? ORDER BY 1", (self._last_tid, self._last_tid)).fetchall()
        if not rows:
            return
        if rows[0][0] == -1:
            self._invalidate_everything(db)
        found = set()
        for _, oids in rows[1 if rows[0][0] == -1 else 0:]:
            found.update(split_oids(bytes(oids)))
        self.cache.discard_all(found)
        self.invalid.update(found)
        self._last_tid = max(self._last_tid, rows[-1][0])

    def _invalidate_everything(self, db) -> None:
        """Rows this process never saw are gone, or there never were any:
        anything may have changed."""
        self.cache.clear()
        self.invalid.update(int8_to_str(oid) for (oid,) in self._execute(
            db, "SELECT id FROM objects").fetchall())

    def _note_changes_without_log(self, db) -> None:
        if not self._changed_without_log(db):
            return
        self._invalidate_everything(db)
        # A process of ours may have made the log since: follow it from now on.
        if self._table_exists("durus_log"):
            self._last_tid = self._query_one(
                db, "SELECT coalesce(max(tid), 0) FROM durus_log")[0]
            self._has_log = True

    def _rows(self, db, ids: list, columns: str = "id, data, refs") -> list:
        """Rows of the objects among ids (ints), a query per BATCH of them."""
        rows = []
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            rows.extend(self._execute(db, "SELECT %s FROM objects WHERE id IN (%s)" % (
                columns, ",".join("?" * len(batch))), batch).fetchall())
        return rows

    # The Storage interface.

    def is_readonly(self) -> bool:
        return self.readonly

    def _check_open(self) -> None:
        super()._check_open()
        if threading.get_ident() != self._thread:
            raise RuntimeError("%s belongs to the thread that opened it: open a storage per "
                               "thread, as a Connection is" % self)
        if self._lost:
            self._reconnect()

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ReadOnlyError("%s is read-only" % self)

    def load(self, oid: bytes) -> bytes:
        record = self.cache.get(oid)
        if record is not None:
            if self.read_ahead:
                self._read_ahead.note_used(record)
            return record
        self._check_open()
        if oid in self.invalid:
            raise ReadConflictError([oid])
        record = None
        for number, data, refs in self._missed_rows(oid):
            row_oid = int8_to_str(number)
            if row_oid in self.invalid and row_oid != oid:
                continue  # never a record past the snapshot
            row_record = pack_record(row_oid, bytes(data), bytes(refs))
            self.cache.put(row_oid, row_record)
            if row_oid == oid:
                record = row_record
            elif self.read_ahead:
                self._read_ahead.note(row_record)
        if record is None:
            raise DurusKeyError(oid)
        if self.read_ahead:
            self._read_ahead.note_used(record)
        return record

    def _missed_rows(self, oid: bytes) -> list:
        """The rows to read for a load of oid that missed the cache: if a
        record read before refers to it, it and up to read_ahead of the
        objects referred to after it (the rest of a walk, in one query); else
        it and what the engine reads ahead with it."""
        wanted = self._read_ahead.wanted_after(oid) if self.read_ahead else []
        wanted = [str_to_int8(ref) for ref in wanted if ref not in self.invalid]
        if wanted:
            return self._rows(self._db, [str_to_int8(oid)] + wanted)
        return self._load_rows(self._db, str_to_int8(oid))

    def _load_rows(self, db, number: int) -> list:
        """Rows (id, data, refs) of the object numbered number, if it has a
        record, and of any others the engine reads ahead with it."""
        return self._execute(db, "SELECT id, data, refs FROM objects WHERE id = ?",
                             (number,)).fetchall()

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        """Yield the records of oids in order, those not cached in one query per batch."""
        self._check_open()
        oids = list(oids)
        conflicts = self.invalid.intersection(oids)
        if conflicts:
            raise ReadConflictError(sorted(conflicts))
        missing = [str_to_int8(oid) for oid in oids if self.cache.get(oid) is None]
        found = {}
        for number, data, refs in self._rows(self._db, missing):
            oid = int8_to_str(number)
            found[oid] = pack_record(oid, bytes(data), bytes(refs))
            self.cache.put(oid, found[oid])
        for oid in oids:
            record = found.get(oid) or self.cache.get(oid)
            if record is None:
                raise DurusKeyError(oid)
            yield record

    def begin(self) -> None:
        self._check_open()
        self.pending = {}

    def store(self, oid: bytes, record: bytes) -> None:
        self._check_writable()
        check_record(oid, record)
        self.pending[oid] = record

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        """Commit the stored records as one database transaction."""
        self._check_writable()
        pending, self.pending = self.pending, {}
        if not pending:
            return
        db = self._db
        self._finish(db)  # the snapshot: a commit needs the latest state
        # Forgotten first: whatever stops this commit, no older record of
        # these stays cached (this process skips its own log rows).
        self.cache.discard_all(pending)
        try:
            self._last_tid = self._write(db, lambda: self._commit(db, pending,
                                                                  handle_invalidations))
            self._make_durable()
            for oid, record in pending.items():
                self.cache.put(oid, record)
        finally:
            if not self._lost:  # else the next operation reconnects, and reads the log
                self._new_snapshot(db)

    def _commit(self, db, pending: dict, handle_invalidations) -> int:
        self._collect_log(db)
        if self.invalid:
            if handle_invalidations is None:
                # No connection to judge: refuse only to overwrite their records.
                overwritten = self.invalid.intersection(pending)
                if overwritten:
                    raise WriteConflictError(sorted(overwritten))
            else:
                handled = list(self.invalid)
                handle_invalidations(handled)  # raises ConflictError if this one used any
                self.invalid.difference_update(handled)
        rows = [(str_to_int8(oid), *unpack_record(record)[1:]) for oid, record in pending.items()]
        self._store_rows(db, rows)
        # No longer new, even if the commit then fails: the connection gives
        # its new objects other oids for a retry, so these are never stored
        # as new again, and a record that did land is never copied in twice.
        self._new.difference_update(row[0] for row in rows)
        return self._insert_log(db, b"".join(pending))

    def sync(self) -> list:
        self._check_open()
        self._new_snapshot(self._db)
        invalid = list(self.invalid)
        self.invalid.difference_update(invalid)
        return invalid

    def new_oid(self) -> bytes:
        self._check_writable()
        if not self._reserved:
            self._reserved = list(reversed(self._reserve_oids()))
        number = self._reserved.pop()
        self._new.add(number)
        return int8_to_str(number)

    def gen_oid_record(self, start_oid: bytes | None = None, batch_size: int = 100
                       ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (oid, record): of every object when start_oid is None
        (unreachable ones included), else of those reachable from it."""
        self._check_open()
        if start_oid is not None:
            return super().gen_oid_record(start_oid, batch_size)
        return ((int8_to_str(oid), pack_record(int8_to_str(oid), bytes(data), bytes(refs)))
                for oid, data, refs in self._execute(
                    self._db, "SELECT id, data, refs FROM objects ORDER BY id").fetchall())

    def count_objects(self) -> int:
        """Return the number of objects in the database (at this snapshot)."""
        self._check_open()
        return self._query_one(self._db, "SELECT count(*) FROM objects")[0]

    def query(self, sql: str, params: tuple | list = ()) -> list:
        """Return the rows of sql (with '?' parameters) run in this storage's
        snapshot: for the tools that look inside databases."""
        self._check_open()
        return self._execute(self._db, sql, params).fetchall()

    def has_commit_log(self) -> bool:
        """Tell whether the database has the commit log, durus_log (one only
        Durus 4.3 wrote has not)."""
        self._check_open()
        return self._has_log

    def skip_stored_oids(self) -> None:
        """Make new_oid() hand out only oids above the stored ones, after
        records came in with oids of their own (as `durus convert` stores
        them). SQLite's counter looks at the stored oids by itself."""
        self._check_writable()

    def get_packer(self) -> Iterator[Any]:
        """Return a generator that removes the objects the root does not
        reach, a step at a time, while other processes go on committing."""
        self._check_writable()
        return self._pack_steps()

    def pack(self) -> None:
        for _ in self.get_packer():
            pass

    def _pack_steps(self):
        db = self._connect()
        try:
            self._begin_read(db)
            start_tid = self._query_one(db, "SELECT coalesce(max(tid), 0) FROM durus_log")[0]
            alive = {str_to_int8(ROOT_OID)}
            yield from self._mark(db, alive)
            dead = {oid for (oid,) in self._execute(db, "SELECT id FROM objects").fetchall()
                    if oid not in alive}
            self._finish(db)
            yield None
            removed = 0
            state = {"checked": start_tid}
            while True:
                self._check_open()  # a storage closed meanwhile stops its pack
                batch = self._write(db, lambda: self._sweep(db, dead, state))
                removed += len(batch)
                if not dead:
                    break
                yield None
            log(20, "packed %s: %d objects kept, %d removed", self, len(alive), removed)
            yield "%d objects kept, %d removed" % (len(alive), removed)
        finally:
            db.close()

    def _mark(self, db, alive: set):
        """Add to alive every id the ids in it reach, yielding now and then."""
        todo = list(alive)
        visited = 0
        while todo:
            batch, todo = todo[:BATCH], todo[BATCH:]
            for _, refs in self._rows(db, batch, "id, refs"):
                for ref in split_oids(bytes(refs)):
                    number = str_to_int8(ref)
                    if number not in alive:
                        alive.add(number)
                        todo.append(number)
            visited += len(batch)
            if visited >= PACK_STEP:
                visited = 0
                yield None

    def _sweep(self, db, dead: set, state: dict) -> list:
        """Under the write lock: take back from dead what commits since the
        last sweep made reachable, then remove a batch of it; return the batch."""
        changed: set[int] = set()
        for tid, oids in self._execute(db, "SELECT tid, oids FROM durus_log WHERE tid > ?",
                                       (state["checked"],)).fetchall():
            changed.update(str_to_int8(oid) for oid in split_oids(bytes(oids)))
            state["checked"] = max(state["checked"], tid)
        dead.difference_update(changed)
        todo = list(changed)
        while todo:
            batch, todo = todo[:BATCH], todo[BATCH:]
            for _, refs in self._rows(db, batch, "id, refs"):
                for ref in split_oids(bytes(refs)):
                    number = str_to_int8(ref)
                    if number in dead:
                        dead.discard(number)
                        todo.append(number)
        batch = [dead.pop() for _ in range(min(PACK_STEP, len(dead)))]
        if batch:
            self._executemany(db, "DELETE FROM objects WHERE id = ?", [(oid,) for oid in batch])
            # Logged, so that every process drops them (and this sweep skips them).
            state["checked"] = self._insert_log(
                db, b"".join(int8_to_str(oid) for oid in sorted(batch)))
        if not dead:
            self._prune_log(db, time.time() - LOG_KEEP_SECONDS)
        return batch

    def _prune_log(self, db, before: float) -> None:
        """Drop log rows committed before `before` (but the newest), noting the last dropped."""
        (last,) = self._query_one(
            db, "SELECT max(tid) FROM durus_log WHERE committed < ? AND "
                "tid < (SELECT max(tid) FROM durus_log)", (before,))
        if last is None:
            return
        self._execute(db, "DELETE FROM durus_log WHERE tid <= ?", (last,))
        self._execute(db, "INSERT INTO durus_meta (name, value) VALUES ('log_pruned_through', ?) "
                          "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (last,))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.cache.clear()  # load() answers from it before it checks
            self._db.close()
