"""Ctrl-C at any moment of a relational storage's commit or sync loses no
update and leaves no stale record: on SQLite and PostgreSQL, a
KeyboardInterrupt at every point where CPython runs a signal handler within
the storage's commit, log reading and snapshot code (see
interrupts.InterruptAt), while another process commits
meanwhile; the transaction is then retried until it commits, and every view
of the database must be exactly what was committed.

A commit interrupted after the database committed it is in the database
though commit() raised, as after a lost connection: the retry writes the
same again. So the changes here are idempotent, and what is checked is that
nothing is lost, nothing stale is read, and no conflict goes unnoticed."""

from durus.connection import Connection
from durus.error import ConflictError
from durus.persistent_dict import PersistentDict
from durus.postgres_storage import PostgresStorage
from durus.relational import RelationalStorage
from durus.sqlite_storage import SqliteStorage

from lifecycle import Item
from interrupts import sweep

STORAGE_PATH = [RelationalStorage.end, RelationalStorage._commit, RelationalStorage._write,
                RelationalStorage._collect_log, RelationalStorage._new_snapshot,
                RelationalStorage._finish, RelationalStorage.sync, RelationalStorage.load,
                RelationalStorage.new_oid, RelationalStorage._check_open,
                RelationalStorage._missed_rows, RelationalStorage._store_rows,
                SqliteStorage._begin_write, SqliteStorage._reserve_oids,
                PostgresStorage._store_rows, PostgresStorage._load_rows,
                PostgresStorage._begin_write, PostgresStorage._check_open,
                PostgresStorage._execute]


def _change(connection: Connection, conflicting: bool) -> None:
    """This transaction's changes: a's value and a new child, and b's too if
    conflicting (which the other process changed meanwhile)."""
    root = connection.get_root()
    root["a"]["value"] = "from first"
    root["a"]["child"] = Item("new")
    if conflicting:
        root["b"]["value"] = "also from first"


def _view(connection: Connection) -> dict:
    connection.abort()
    root = connection.get_root()
    a = dict(root["a"])
    a["child"] = a["child"].value if "child" in a else None
    return {"a": a, "b": dict(root["b"])}


def _round(shared_database, interrupt, conflicting: bool) -> None:
    first = Connection(shared_database())
    second = Connection(shared_database())
    try:
        root = first.get_root()
        root["a"], root["b"] = PersistentDict(value=0), PersistentDict(value=0)
        first.commit()
        second.abort()
        if conflicting:
            first.get_root()["b"]["value"]  # read before the other's commit
        second.get_root()["b"]["value"] = "from second"
        second.commit()
        _change(first, conflicting)
        try:
            with interrupt:
                first.commit()
        except KeyboardInterrupt:
            pass
        except ConflictError:
            assert conflicting, "a conflict where there was none"
        else:
            assert not conflicting, "committed over the other's change"
        while True:  # retried until it commits
            first.abort()
            _change(first, False)
            try:
                first.commit()
                break
            except ConflictError:
                pass
        reader = Connection(shared_database(readonly=True))
        expected = {"a": {"value": "from first", "child": "new"}, "b": {"value": "from second"}}
        assert _view(first) == _view(second) == _view(reader) == expected, interrupt.where
        reader.get_storage().close()
    finally:
        for connection in (first, second):
            connection.get_storage().close()
        _empty(shared_database)


def test_a_commit_interrupted_anywhere_loses_nothing(shared_database, report):
    total = 0
    for conflicting in (False, True):
        points = sweep(STORAGE_PATH, lambda interrupt: _round(shared_database, interrupt,
                                                              conflicting))
        assert points > 40
        total += points
    report("%d points of relational commits interrupted (with and without a conflict), "
           "each retried and checked" % total)


def _empty(shared_database) -> None:
    """Start the next round on an empty database (its oids from 0 again)."""
    storage = shared_database()
    db = storage._db
    storage._finish(db)
    for table in ("objects", "durus_log", "durus_meta"):
        storage._execute(db, "DROP TABLE %s" % table)
    if hasattr(storage, "dsn"):
        storage._execute(db, "DROP SEQUENCE durus_oid_blocks")
    storage.close()
