"""durus info through its command line, on databases of every kind, on a
file a server is serving and through the server itself; the bad targets
and README examples of durus info and durus verify."""

import json
import os
import time
from datetime import datetime

import pytest

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.record_format import unpack_record

import server_processes
from tool_databases import (BAD_TARGETS, KINDS, check_bad_target, fill,
                            run_readme_example, run_tool)


FORMATS = {"shelf": "SHELF-1", "dfs20": "DFS20", "sqlite": "SQLite", "postgres": "PostgreSQL"}


def info(target: str, cwd=None) -> dict:
    done = run_tool("info", target, "--json", cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _census(records) -> list:
    """The census of (oid, record) pairs, as durus info orders it."""
    counts = {}
    for _, record in records:
        data = unpack_record(record)[1]
        module, name = data[3:].split(b"\n")[:2]
        counts.setdefault((module + b"." + name).decode(), []).append(len(record))
    rows = [{"class": name, "objects": len(sizes), "bytes": sum(sizes)}
            for name, sizes in counts.items()]
    return sorted(rows, key=lambda row: (-row["bytes"], row["class"]))


def _file_bytes(database) -> bytes | None:
    if database.kind == "postgres":
        return None
    with open(database.target, "rb") as f:
        return f.read()


@pytest.mark.parametrize("database", KINDS, indirect=True)
def test_json_facts_match_the_database_and_change_nothing(database):
    database.fill(300)
    storage = database.open(readonly=True)
    expected = _census(storage.gen_oid_record(None))
    storage.close()
    before = _file_bytes(database)
    facts = info(database.target)
    assert _file_bytes(database) == before
    assert facts["format"] == FORMATS[database.kind]
    assert facts["census"] == expected
    assert facts["objects"] == sum(row["objects"] for row in expected) > 300
    assert expected[0]["class"] == "durus.persistent_dict.PersistentDict"
    if database.kind in ("shelf", "dfs20"):
        assert facts["size_bytes"] == os.path.getsize(database.target)
        assert facts["last_commit"] == datetime.fromtimestamp(
            int(os.path.getmtime(database.target))).astimezone().isoformat()
        assert facts["last_commit_source"].startswith("file modification time")
    else:
        assert facts["size_bytes"] > sum(row["bytes"] for row in expected)
        assert facts["last_commit_source"] == "the commit log, durus_log"
        committed = datetime.fromisoformat(facts["last_commit"]).timestamp()
        assert time.time() - 120 < committed <= time.time()
    # The root's creation, the items, root["extra"].
    assert facts["transactions"] == 3


@pytest.mark.parametrize("database", ["shelf", "dfs20", "sqlite"], indirect=True)
def test_transactions_are_counted_from_the_last_pack(database):
    database.fill(50)
    storage = database.open()
    connection = Connection(storage)
    for n in range(4):
        connection.get_root()["extra"]["n"] = n
        connection.commit()
    storage.close()
    assert info(database.target)["transactions"] == 3 + 4
    done = run_tool("-p", "--file", database.target)
    assert done.returncode == 0, done.stderr
    assert "pack: done" in done.stderr  # its progress, logged: stderr is no terminal
    storage = database.open()
    connection = Connection(storage)
    connection.get_root()["extra"]["n"] = "after the pack"
    connection.commit()
    storage.close()
    facts = info(database.target)
    if database.kind == "sqlite":
        # The log keeps the last hour's commits, and the pack's removals.
        assert facts["transactions"] >= 3 + 4 + 1
    else:
        assert facts["transactions"] == 1


def test_the_table_shows_the_facts_and_the_census(tmp_path):
    path = tmp_path / "db.durus"
    storage = fill(FileStorage(str(path)), 100).get_storage()
    count = sum(1 for _ in storage.gen_oid_record(None))
    storage.close()
    done = run_tool("info", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["format", "SHELF-1"]
    assert lines[3].split() == ["objects", str(count)]
    (row,) = [line for line in lines if "PersistentDict" in line]
    assert row.split()[1:4] == ["durus.persistent_dict.PersistentDict", "│", "102"]  # root and extra too
    assert "Census: objects and bytes by class" in done.stdout


def test_a_served_file_and_its_server(tmp_path, servers):
    path = tmp_path / "served.durus"
    storage = fill(FileStorage(str(path)), 200).get_storage()
    count = sum(1 for _ in storage.gen_oid_record(None))
    storage.close()
    server = servers.ours("--file", str(path))
    connection = server_processes.connect(server)
    connection.get_root()["garbage"] = PersistentDict()
    connection.commit()
    del connection.get_root()["garbage"]
    connection.commit()
    before = path.read_bytes()
    from_file = info(str(path))
    from_server = info("durus://%s:%d" % server.address)
    assert path.read_bytes() == before
    assert from_file["objects"] == count + 1  # the garbage too, until a pack
    assert from_file["transactions"] == 3 + 2
    assert from_server["format"] == "server"
    assert from_server["objects"] == count  # what the root reaches
    assert from_server["size_bytes"] == sum(row["bytes"] for row in from_server["census"])
    assert from_server["transactions"] is None and from_server["last_commit"] is None
    connection.get_storage().close()


@pytest.mark.parametrize("command", ["info", "verify"])
@pytest.mark.parametrize("target, message", BAD_TARGETS)
def test_bad_targets_get_one_line_and_status_1(tmp_path, command, target, message):
    check_bad_target(command, tmp_path, target, message)


@pytest.mark.parametrize("command, shown", [("info", "SHELF-1"), ("verify", "healthy")])
def test_the_readme_examples_run_as_written(tmp_path, command, shown):
    for done in run_readme_example(command, tmp_path):
        assert shown in done.stdout
