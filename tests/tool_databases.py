"""Databases of every kind for the tests of the inspecting tools (durus info,
durus verify), and running those tools as a user does."""

import shlex
import subprocess
import sys

import pytest

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.file_storage2 import FileStorage2
from durus.persistent_dict import PersistentDict
from durus.sqlite_storage import SqliteStorage

from server_processes import our_env

KINDS = ("shelf", "dfs20", "sqlite", "postgres")
FILE_KINDS = {"shelf": (FileStorage, "db.durus"), "dfs20": (FileStorage2, "db.dfs20"),
              "sqlite": (SqliteStorage, "db.sqlite")}


def run_tool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run `durus *args` (this tree's durus) as a user would; return what it did."""
    return subprocess.run([sys.executable, "-m", "durus", *args], cwd=cwd, env=our_env(),
                          capture_output=True, text=True, timeout=120)


def open_kind(kind: str, target: str, **options):
    """Open the storage of kind at target (a file name, or a DSN for postgres)."""
    if kind == "postgres":
        from durus.postgres_storage import PostgresStorage
        return PostgresStorage(target, **options)
    return FILE_KINDS[kind][0](target, **options)


def fill(storage, count: int) -> Connection:
    """Commit count PersistentDicts under root['tree'] (a BTree), in one
    commit, and root['extra'] in another; return the connection."""
    connection = Connection(storage)
    root = connection.get_root()
    root["tree"] = tree = BTree()
    for i in range(count):
        tree[i] = PersistentDict(number=i, text="item %d" % i)
    connection.commit()
    root["extra"] = PersistentDict(note="a second commit")
    connection.commit()
    return connection


class Database:
    """One database of a kind, at target (a file name, or a DSN for postgres)."""

    def __init__(self, kind: str, target: str):
        self.kind, self.target = kind, target

    def open(self, **options):
        return open_kind(self.kind, self.target, **options)

    def fill(self, count: int = 100) -> str:
        """Fill the database with fill(); return its target."""
        storage = self.open()
        try:
            fill(storage, count)
        finally:
            storage.close()
        return self.target


@pytest.fixture
def database(request, tmp_path) -> Database:
    """An empty Database of the kind the test's param names."""
    kind = request.param
    if kind == "postgres":
        return Database(kind, request.getfixturevalue("postgres_dsn"))
    return Database(kind, str(tmp_path / FILE_KINDS[kind][1]))


# Targets no tool can open, each with what its one-line error says.
BAD_TARGETS = [
    ("missing.durus", "no durus file at 'missing.durus'"),
    ("junk", "junk is not a Durus storage file"),
    ("durus://127.0.0.1", "is not durus://HOST:PORT"),
    ("postgresql://nobody@127.0.0.1:1/none", "cannot connect to PostgreSQL"),
    ("durus://127.0.0.1:1", "Connection refused"),
]


def check_bad_target(command: str, tmp_path, target: str, message: str) -> None:
    """`durus command target` fails with one line saying message, status 1,
    and creates nothing."""
    (tmp_path / "junk").write_text("not a database\n")
    done = run_tool(command, target, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "missing.durus").exists()


def run_readme_example(command: str, tmp_path) -> list:
    """Run the README's `durus command` examples as written, in tmp_path with
    the shop.durus they name; return what each did, checked to succeed."""
    from readme import shell_commands
    lines = shell_commands("### durus " + command)
    assert lines and all(line.startswith("durus %s " % command) for line in lines)
    fill(FileStorage(str(tmp_path / "shop.durus")), 100).get_storage().close()
    results = [run_tool(*shlex.split(line)[1:], cwd=tmp_path) for line in lines]
    for done in results:
        assert done.returncode == 0, done.stdout + done.stderr
    return results
