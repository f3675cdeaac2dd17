"""PostgresStorage: a database in PostgreSQL, used directly by any number of
processes on any number of machines (no storage server of our own).

The design (snapshots, the commit log, packs while others commit) is
durus.relational's. Here a snapshot is a REPEATABLE READ transaction; the
write lock is a transaction-level advisory lock; oids come from a sequence
in blocks. Requires psycopg 3 (`pip install 'durus[postgres]'`).

The DSN is a libpq connection string or a postgresql:// URI; the password
may be in it, in PGPASSWORD or in ~/.pgpass. Errors and str() show the DSN
without its password. TLS is libpq's (sslmode=... in the DSN).
"""

from durus.error import LockTimeoutError
from durus.relational import (BUSY_TIMEOUT, DEFAULT_CACHE_BYTES, OID_BLOCK, UPSERT,
                              RelationalStorage)

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError:  # the extra is not installed: say so when one is opened
    psycopg = None  # type: ignore[assignment]  # what the storage checks for

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS objects (id bigint PRIMARY KEY, data bytea NOT NULL, "
    "refs bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS durus_log (tid bigserial PRIMARY KEY, "
    "committed double precision NOT NULL, oids bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS durus_meta (name text PRIMARY KEY, value bigint NOT NULL)",
    # Each value is a block of OID_BLOCK oids.
    "CREATE SEQUENCE IF NOT EXISTS durus_oid_blocks MINVALUE 0 START 0",
)

# The refs column holds 8-byte big-endian oids: decoded in SQL, so that a
# load and its read-ahead take one round trip.
_LOAD_WITH_REFERENCES = (
    "WITH loaded AS (SELECT id, data, refs FROM objects WHERE id = ?) "
    "SELECT id, data, refs FROM loaded UNION ALL "
    "SELECT o.id, o.data, o.refs FROM objects o WHERE o.id IN ("
    " SELECT ('x' || encode(substr(loaded.refs, i * 8 + 1, 8), 'hex'))::bit(64)::bigint"
    " FROM loaded, generate_series(0, least(length(loaded.refs) / 8, ?) - 1) AS i)")

# A commit that changes more objects than this copies them in (3 parameters
# a row in an INSERT: well under PostgreSQL's 65,535).
_ROWS_PER_INSERT = 100
_COPY = "COPY %s (id, data, refs) FROM STDIN (FORMAT BINARY)"
# Rows copied in for an upsert; emptied at the end of the transaction.
_INCOMING = ("CREATE TEMPORARY TABLE IF NOT EXISTS durus_incoming (id bigint, data bytea, "
             "refs bytea) ON COMMIT DELETE ROWS")
_UPSERT_INCOMING = ("INSERT INTO objects (id, data, refs) SELECT id, data, refs FROM "
                    "durus_incoming ON CONFLICT (id) DO UPDATE SET data = excluded.data, "
                    "refs = excluded.refs")

# The advisory lock that serializes commits (and pack sweeps): 'durus' in ASCII.
_COMMIT_LOCK = 0x6475727573
# Seconds to wait for the server when connecting.
CONNECT_TIMEOUT = 10


def public_dsn(dsn: str) -> str:
    """Return dsn as a connection string without its password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        raise ValueError("not a PostgreSQL connection string or URI: %s"
                         % str(error).replace(dsn, "<dsn>")) from None
    params.pop("password", None)
    return make_conninfo("", **params)


class PostgresStorage(RelationalStorage):
    """A storage in a PostgreSQL database, shared by every process that opens it.

    dsn: str, libpq connection string or postgresql:// URI. readonly: bool,
    never write. cache_bytes: int, records kept in memory by this process.
    The tables are created on first use.
    """

    read_ahead = 65536

    def __init__(self, dsn: str, readonly: bool = False, repair: bool = False,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if psycopg is None:
            raise ImportError("PostgresStorage needs psycopg 3: pip install 'durus[postgres]'")
        self.dsn = dsn
        self.public_dsn = public_dsn(dsn)
        super().__init__(readonly, cache_bytes)

    def _connect(self):
        params = conninfo_to_dict(self.dsn)
        try:
            db = psycopg.connect(self.dsn, autocommit=True,
                                 connect_timeout=params.get("connect_timeout", CONNECT_TIMEOUT))
        except psycopg.OperationalError as error:
            raise ConnectionError("cannot connect to PostgreSQL (%s): %s" % (
                self._where(params), _first_line(error))) from None
        except psycopg.ProgrammingError as error:  # e.g. a parameter of the wrong type
            raise ValueError("bad PostgreSQL connection string %s: %s" % (
                self.public_dsn, _first_line(error).replace(self.dsn, "<dsn>"))) from None
        # Waiting for another process's commit lock ends with LockTimeoutError.
        db.execute("SET lock_timeout = %d" % (BUSY_TIMEOUT * 1000))
        if self.readonly:
            db.execute("SET default_transaction_read_only = on")
        return db

    def _where(self, params: dict) -> str:
        return "host %s, port %s, database %s, user %s" % (
            params.get("host") or "(default)", params.get("port") or "(default)",
            params.get("dbname") or "(default)", params.get("user") or "(default)")

    def _execute(self, db, sql: str, params=()):
        try:
            return db.execute(sql.replace("?", "%s"), params)
        except psycopg.OperationalError as error:
            raise self._translated(db, error) from None

    def _executemany(self, db, sql: str, rows) -> None:
        try:
            db.cursor().executemany(sql.replace("?", "%s"), rows)
        except psycopg.OperationalError as error:
            raise self._translated(db, error) from None

    def _translated(self, db, error: Exception) -> Exception:
        """The error to raise for an OperationalError of db: a lock waited for
        too long, or a connection lost (noted: the next operation reconnects)."""
        if isinstance(error, psycopg.errors.LockNotAvailable):
            return LockTimeoutError("%s: another process held the commit lock for %d s; "
                                    "nothing was written" % (self, BUSY_TIMEOUT))
        if not (db.closed or db.broken or _mid_command(db)):
            return error
        self._drop(db)
        return ConnectionError("lost the connection to PostgreSQL (%s): %s" % (
            self._where(conninfo_to_dict(self.dsn)), _first_line(error)))

    def _check_open(self) -> None:
        if not self.closed and _mid_command(self._db):
            self._drop(self._db)  # an interrupt left it waiting for a result
        super()._check_open()

    def _drop(self, db) -> None:
        super()._drop(db)
        try:
            db.close()  # the server rolls back what it had open, locks included
        except psycopg.Error:
            pass

    def _load_rows(self, db, number: int) -> list:
        """The object's row and, in the same round trip, those of up to
        read_ahead objects it refers to: what a reader is about to load next
        (a BTree's nodes, a container's items), from the same snapshot."""
        return self._execute(db, _LOAD_WITH_REFERENCES, (number, self.read_ahead)).fetchall()

    def _rows(self, db, ids: list, columns: str = "id, data, refs") -> list:
        """Rows of the objects among ids (ints), in one query."""
        return self._execute(db, "SELECT %s FROM objects WHERE id = ANY(?)" % columns,
                             (ids,)).fetchall()

    def _store_rows(self, db, rows: list) -> None:
        """By COPY, the fastest way in: new objects (oids this process was
        given) straight into the table, many changed ones through a temporary
        table; a few changed ones in one INSERT."""
        new = [row for row in rows if row[0] in self._new]
        if new:
            self._copy(db, "objects", new)
        changed = [row for row in rows if row[0] not in self._new]
        if len(changed) > _ROWS_PER_INSERT:
            self._execute(db, _INCOMING)
            self._copy(db, "durus_incoming", changed)
            self._execute(db, _UPSERT_INCOMING)
        elif changed:
            self._execute(db, UPSERT.replace(
                "(?, ?, ?)", ", ".join(["(?, ?, ?)"] * len(changed))),
                [value for row in changed for value in row])

    def _copy(self, db, table: str, rows: list) -> None:
        try:
            with db.cursor().copy(_COPY % table) as copy:
                copy.set_types(["int8", "bytea", "bytea"])
                for row in rows:
                    copy.write_row(row)
        except psycopg.OperationalError as error:
            raise self._translated(db, error) from None

    def _begin_read(self, db) -> None:
        self._execute(db, "BEGIN ISOLATION LEVEL REPEATABLE READ")

    def _begin_write(self, db) -> None:
        self._execute(db, "BEGIN")
        self._execute(db, "SELECT pg_advisory_xact_lock(?)", (_COMMIT_LOCK,))

    def _in_transaction(self, db) -> bool:
        return db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def _insert_log(self, db, oids: bytes) -> int:
        return self._query_one(db, "INSERT INTO durus_log (committed, oids) VALUES "
                                   "(extract(epoch FROM clock_timestamp()), ?) RETURNING tid",
                               (oids,))[0]

    def _reserve_oids(self) -> range:
        """The next block of the sequence (whatever writes records with oids of
        its own must move the sequence past them)."""
        (block,) = self._query_one(self._db, "SELECT nextval('durus_oid_blocks')")
        first = block * OID_BLOCK
        return range(first, first + OID_BLOCK)

    def skip_stored_oids(self) -> None:
        """Move the oid sequence past the block of the highest stored oid
        (never back), so that new_oid() hands out none of theirs. For a
        database others do not use meanwhile: setval does not wait for them."""
        self._check_writable()
        self._reserved = []
        self._execute(self._db, "SELECT setval('durus_oid_blocks', greatest(max(id) / ?, "
                                "(SELECT last_value FROM durus_oid_blocks))) FROM objects "
                                "HAVING count(*) > 0", (OID_BLOCK,))

    def _create_tables(self, db) -> None:
        def create() -> None:
            for statement in _SCHEMA:
                self._execute(db, statement)
        self._write(db, create)

    def _changed_without_log(self, db) -> bool:
        return False  # only this durus writes these databases, with the log

    def _table_exists(self, name: str) -> bool:
        return self._query_one(self._db, "SELECT to_regclass(?) IS NOT NULL", (name,))[0]

    def get_filename(self) -> str:
        return self.public_dsn

    def is_temporary(self) -> bool:
        return False

    def __str__(self):
        return "PostgresStorage(%r)" % self.public_dsn


def _mid_command(db) -> bool:
    """Tell whether db was left in the middle of a command (an interrupt
    stopped the wait for its result): it can take no other."""
    return db.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
