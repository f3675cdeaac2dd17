"""durus backup through its command line: an online copy while a server
commits under load, incremental runs, refusals of a DEST that is not an
earlier backup, a pack in between, and the README's example."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.file_storage2 import FileStorage2
from durus.persistent_dict import PersistentDict

from readme import shell_commands
from server_processes import our_env
from server_processes import run_durus


# Commits in a loop through a server; after each returns, prints its number.
LOAD_CLIENT = """
import sys
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.persistent_dict import PersistentDict
connection = Connection(ClientStorage(address=(sys.argv[1], int(sys.argv[2]))))
root = connection.get_root()
i = 0
while True:
    root["k%d" % i] = PersistentDict(n=i, pad="x" * (i % 500))
    connection.commit()
    print(i, flush=True)
    i += 1
"""


def make_database(path, storage_class=FileStorage, start=0, count=50, pad=0):
    """Add keys k<start>..k<start+count-1> to the database at path, a commit
    each, with pad bytes of padding each."""
    storage = storage_class(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    for i in range(start, start + count):
        root["k%d" % i] = PersistentDict(n=i, pad="x" * pad)
        connection.commit()
    storage.close()


def backup(tmp_path, *args):
    return run_durus("backup", *map(str, args), cwd=tmp_path)


def keys_in(path, storage_class=FileStorage) -> dict:
    storage = storage_class(str(path), readonly=True)
    try:
        root = Connection(storage).get_root()
        return {key: value["n"] for key, value in root.items()}
    finally:
        storage.close()


def digest(path, length=None) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(length)).hexdigest()


def test_backup_while_a_server_commits_under_load(tmp_path, servers):
    db, copy = tmp_path / "db.durus", tmp_path / "backup.durus"
    make_database(db, count=1)
    server = servers.ours("--file", str(db))
    client = subprocess.Popen([sys.executable, "-c", LOAD_CLIENT, *map(str, server.address)],
                              env=our_env(), stdout=subprocess.PIPE, text=True)
    try:
        sizes = []
        for _ in range(3):
            for _ in range(200):  # let it commit meanwhile
                committed = int(client.stdout.readline())
            done = backup(tmp_path, db, copy)
            assert done.returncode == 0, done.stderr
            sizes.append(copy.stat().st_size)
            # Every commit that returned before the backup started is in it.
            found = keys_in(copy)
            assert all(found["k%d" % i] == i for i in range(committed + 1))
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    finally:
        client.kill()
        client.wait()
        client.stdout.close()
    assert server.quit() == 0
    # Nothing committed since: a last run brings the backup to the file's bytes.
    assert backup(tmp_path, db, copy).returncode == 0
    assert digest(copy) == digest(db)


@pytest.mark.parametrize("storage_class", [FileStorage, FileStorage2])
def test_incremental_runs_append_only_the_new_transactions(tmp_path, storage_class):
    db, copy = tmp_path / "db", tmp_path / "db.backup"
    make_database(db, storage_class)
    first = backup(tmp_path, db, copy)
    assert first.returncode == 0 and "full copy" in first.stdout, first.stderr
    size, prefix = copy.stat().st_size, digest(copy)
    assert size == db.stat().st_size
    make_database(db, storage_class, start=50, count=7)
    again = backup(tmp_path, db, copy)
    assert again.returncode == 0 and "incremental" in again.stdout, again.stderr
    grown = db.stat().st_size - size
    assert grown > 0 and copy.stat().st_size == size + grown
    assert "%d bytes copied" % grown in again.stdout
    assert digest(copy, size) == prefix and digest(copy) == digest(db)
    assert keys_in(copy, storage_class) == {"k%d" % i: i for i in range(57)}


def test_a_commit_in_flight_is_left_out(tmp_path):
    # A writer killed mid-commit: its mark stays, and so does part of a transaction.
    db, copy = tmp_path / "db.durus", tmp_path / "copy.durus"
    make_database(db)
    whole = db.stat().st_size
    (tmp_path / "db.durus.writer").write_bytes(b"")
    with open(db, "ab") as f:
        f.write((1000).to_bytes(8, "big") + b"\0" * 20)
    done = backup(tmp_path, db, copy)
    assert done.returncode == 0, done.stderr
    assert copy.stat().st_size == whole


def test_a_foreign_dest_is_refused(tmp_path):
    db, other, copy = tmp_path / "db.durus", tmp_path / "other.durus", tmp_path / "copy.durus"
    make_database(db)
    make_database(other, count=60)
    assert backup(tmp_path, other, copy).returncode == 0
    before = digest(copy)
    refused = backup(tmp_path, db, copy)
    assert refused.returncode == 1
    assert "is not an earlier backup of" in refused.stderr
    assert "Traceback" not in refused.stderr and digest(copy) == before


def test_a_dest_of_a_diverged_copy_is_refused(tmp_path):
    # Two databases with the same first 3 MB: DEST backs up one, then the
    # other commits something else.
    db, twin, copy = tmp_path / "db.durus", tmp_path / "twin.durus", tmp_path / "copy.durus"
    make_database(db, pad=60000)
    shutil.copy(db, twin)
    make_database(twin, start=100, count=1)
    make_database(db, start=200, count=3)
    assert backup(tmp_path, twin, copy).returncode == 0
    refused = backup(tmp_path, db, copy)
    assert refused.returncode == 1 and "differ at byte" in refused.stderr


def test_a_pack_in_between_is_refused_then_replaced_on_request(tmp_path):
    db, copy = tmp_path / "db.durus", tmp_path / "copy.durus"
    make_database(db)
    assert backup(tmp_path, db, copy).returncode == 0
    storage = FileStorage(str(db))
    connection = Connection(storage)
    root = connection.get_root()
    for i in range(40):
        del root["k%d" % i]
    connection.commit()
    connection.pack()
    storage.close()
    before = digest(copy)
    refused = backup(tmp_path, db, copy)
    assert refused.returncode == 1
    assert "was packed since" in refused.stderr and "--replace" in refused.stderr
    assert digest(copy) == before  # still the only copy of what the pack removed
    replaced = backup(tmp_path, "--replace", db, copy)
    assert replaced.returncode == 0 and "full copy" in replaced.stdout, replaced.stderr
    assert digest(copy) == digest(db) and not os.path.exists(str(copy) + ".tmp")
    assert keys_in(copy) == {"k%d" % i: i for i in range(40, 50)}


def test_the_backup_opens_in_durus_4_3(tmp_path, run_peer):
    db, copy = tmp_path / "db.durus", tmp_path / "copy.durus"
    make_database(db, count=5)
    assert backup(tmp_path, db, copy).returncode == 0
    make_database(db, start=5, count=5)
    assert backup(tmp_path, db, copy).returncode == 0
    listed = run_peer(
        "from durus.file_storage import FileStorage\n"
        "from durus.connection import Connection\n"
        "root = Connection(FileStorage('copy.durus', readonly=True)).get_root()\n"
        "print(sorted(value['n'] for value in root.values()))\n")
    assert listed.strip() == str(list(range(10)))


@pytest.mark.parametrize("source, message", [
    ("missing.durus", "no database file missing.durus"),
    ("db.sqlite", "sqlite3 SOURCE '.backup DEST'"),
    ("postgresql://u@127.0.0.1:1/db", "pg_dump"),
    ("durus://127.0.0.1:1", "on the server's machine"),
    ("notes.txt", "not a Durus storage file"),
])
def test_sources_it_cannot_back_up_get_one_line(tmp_path, source, message):
    from durus.sqlite_storage import SqliteStorage
    SqliteStorage(str(tmp_path / "db.sqlite")).close()
    (tmp_path / "notes.txt").write_text("hello\n")
    refused = backup(tmp_path, source, "copy.durus")
    assert refused.returncode == 1
    assert message in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "copy.durus").exists()


def test_readme_example(tmp_path):
    commands = shell_commands("### durus backup")
    assert commands and all(line.startswith("durus backup ") for line in commands)
    for start, line in enumerate(commands):
        make_database(tmp_path / "data.durus", start=start, count=1)
        done = run_durus(*line.split()[1:], cwd=tmp_path)
        assert done.returncode == 0, (line, done.stderr)
    assert digest(tmp_path / "backup.durus") == digest(tmp_path / "data.durus")
