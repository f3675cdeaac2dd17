"""SqliteStorage's own side (durus.relational's shared behaviour is in
test_relational.py): durable commits, clear errors, temporary files, and
files that pass to and from Durus 4.3's SqliteStorage."""

import os
import sqlite3

import pytest

from durus.connection import Connection
from durus.error import CorruptFileError
from durus.sqlite_storage import SqliteStorage
from syscall_trace import Call, Trace


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "db.sqlite")


def test_a_commit_is_durable_when_it_returns(path):
    """WAL mode; SQLite itself syncs the WAL only at checkpoints
    (synchronous=NORMAL), and each commit syncs it after releasing the write
    lock, before commit() returns, so that processes' syncs overlap."""
    storage = SqliteStorage(path)
    connection = Connection(storage)
    assert storage._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert storage._db.execute("PRAGMA synchronous").fetchone() == (1,)
    for value in range(3):
        connection.get_root()["x"] = value
        with Trace() as trace:
            connection.commit()
        assert trace.calls == [Call("fdatasync", path + "-wal")]
    storage.close()
    storage = SqliteStorage(path, fsync=False)
    connection = Connection(storage)
    connection.get_root()["x"] = "unsynced"
    with Trace() as trace:
        connection.commit()
    assert trace.calls == []
    storage.close()


def test_not_an_sqlite_file_is_refused_clearly(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"SHELF-1\n" + b"\0" * 100)
    with pytest.raises(CorruptFileError, match="not an SQLite database"):
        SqliteStorage(str(bad))
    with pytest.raises(FileNotFoundError):
        SqliteStorage(str(tmp_path / "missing.sqlite"), readonly=True)


def test_a_temporary_storage_leaves_nothing_behind():
    storage = SqliteStorage()
    connection = Connection(storage)
    connection.get_root()["x"] = 1
    connection.commit()
    name = storage.get_filename()
    assert os.path.exists(name) and storage.is_temporary()
    storage.close()
    assert not [suffix for suffix in ("", "-wal", "-shm") if os.path.exists(name + suffix)]


# Durus 4.3's SqliteStorage.

WRITE = """
import sys
from durus.connection import Connection
from durus.sqlite_storage import SqliteStorage
from syscall_trace import Call, Trace
import interop_model
connection = Connection(SqliteStorage(sys.argv[1]))
interop_model.populate(connection.get_root(), sys.argv[2])
connection.commit()
"""

MUTATE = """
import sys
from durus.connection import Connection
from durus.sqlite_storage import SqliteStorage
from syscall_trace import Call, Trace
import interop_model
connection = Connection(SqliteStorage(sys.argv[1]))
interop_model.mutate(connection.get_root(), sys.argv[2])
connection.commit()
connection.pack()
"""

READ = """
import sys
from durus.connection import Connection
from durus.sqlite_storage import SqliteStorage
from syscall_trace import Call, Trace
import interop_model
print(interop_model.summarize(Connection(SqliteStorage(sys.argv[1])).get_root()))
"""


@pytest.mark.parametrize("first, second", [("ours", "peer"), ("peer", "ours")])
def test_files_pass_between_durus_43_and_us(sides, path, first, second):
    sides[first](WRITE, path, first)
    assert sides[second](READ, path) == sides[first](READ, path)
    sides[second](MUTATE, path, second)
    summary = sides[first](READ, path)
    assert summary == sides[second](READ, path)
    assert '"tree_len": 6667' in summary


def test_a_durus_43_file_is_read_only_here_without_being_changed(run_peer, path):
    run_peer(WRITE, path, "peer")
    before = open(path, "rb").read()
    storage = SqliteStorage(path, readonly=True)
    assert Connection(storage).get_root()["tag"] == "peer"
    storage.close()
    assert open(path, "rb").read() == before
    tables = {name for (name,) in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"objects"}


def test_a_reader_of_a_durus_43_file_sees_its_writes_and_never_blocks_them(run_peer, path):
    """Durus 4.3's files have no log and are not in WAL mode: a read-only
    process of ours reads them a statement at a time (a read transaction
    would lock Durus's writer out) and drops its whole cache whenever
    another process has committed."""
    run_peer(WRITE, path, "peer")
    reader = Connection(SqliteStorage(path, readonly=True))
    before = interop_model_summary(reader)
    run_peer(MUTATE, path, "peer")  # commits and packs while our reader is open
    assert interop_model_summary(reader) == before  # not synced yet: its cache
    reader.abort()
    after = interop_model_summary(reader)
    assert after != before and after == run_peer(READ, path).strip()
    reader.get_storage().close()


def interop_model_summary(connection: Connection) -> str:
    import interop_model
    return interop_model.summarize(connection.get_root())
