"""durus verify through its command line, on healthy databases of every kind
and on ones damaged in each way it claims to detect (its bad targets and
README example: with durus info's, in test_tool_info)."""

import io
import os
import pickle
import re
import sqlite3
import threading

import psycopg
import pytest

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.record_format import pack_record
from durus.utils import str_to_int8

import server_processes
from tool_databases import KINDS, fill, run_tool



def verify(target: str, *options: str):
    done = run_tool("verify", target, *options)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize("database", KINDS, indirect=True)
def test_a_healthy_database_of_20000_objects_passes(database):
    target = database.fill(20000)
    done = verify(target)
    assert done.returncode == 0, done.stdout + done.stderr
    (checked,) = re.findall(r"(\d+) records checked in [\d.]+ s: healthy, 0 unreachable",
                            done.stdout)
    assert int(checked) > 20002  # the items, the tree's nodes, root and extra
    assert "error" not in done.stdout


def _hand_made_record(oid: bytes, referenced: bytes, listed: bytes | None = None) -> bytes:
    """The record of a PersistentDict whose state references the object of
    oid referenced, pickled as a connection's writer does; its list of
    references is listed (default: referenced, as a writer lists it)."""
    class Reference:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return (referenced, PersistentDict) if isinstance(obj, Reference) else None
    buffer = io.BytesIO()
    pickler = Pickler(buffer, 2)
    pickler.dump(PersistentDict)
    pickler.dump({"data": {"child": Reference()}})
    return pack_record(oid, buffer.getvalue(), referenced if listed is None else listed)


@pytest.mark.parametrize("database", KINDS, indirect=True)
def test_a_dangling_reference_is_an_error_naming_both_oids(database):
    target = database.fill()
    storage = database.open()
    try:
        oid, missing = storage.new_oid(), storage.new_oid()  # missing is never stored
        storage.begin()
        storage.store(oid, _hand_made_record(oid, missing))
        storage.end()
    finally:
        storage.close()
    done = verify(target)
    assert done.returncode == 1
    line = "oid %d.*: references oid %d, which has no record" % (str_to_int8(oid),
                                                                   str_to_int8(missing))
    assert re.search("^error: " + line, done.stdout, re.M), done.stdout
    # The record is reached by nothing either: a warning, listed by oid.
    assert re.search(r"^warning: 1 objects are not reachable .*: oids %d$" % str_to_int8(oid),
                     done.stdout, re.M), done.stdout


@pytest.mark.parametrize("database", ["shelf"], indirect=True)
def test_a_list_of_references_that_differs_from_the_state_is_an_error(database):
    # A pack follows the list: a reference missing from it loses its object.
    database.fill()
    extra = _extra_oid(database)
    storage = database.open()
    oid = storage.new_oid()
    storage.begin()
    storage.store(oid, _hand_made_record(oid, extra, listed=b""))
    storage.end()
    storage.close()
    done = verify(database.target)
    assert done.returncode == 1
    assert re.search(r"^error: oid %d at byte \d+: its list of references does not match its "
                     r"state: listed only \[\], in the state only \[%d\]$"
                     % (str_to_int8(oid), str_to_int8(extra)), done.stdout, re.M), done.stdout


def _extra_oid(database) -> bytes:
    storage = database.open(readonly=True)
    try:
        return Connection(storage).get_root()["extra"]._p_oid
    finally:
        storage.close()


def _flip_state_byte(data: bytes) -> bytes:
    """data with the first byte of its state pickle (after the class pickle)
    made 0xff, which no pickle opcode (nor zlib stream) starts with."""
    start = data.index(b"q\x00.") + 3
    return data[:start] + b"\xff" + data[start + 1:]


def _damage_row(database, oid: bytes) -> None:
    """Flip the state byte of oid's row, by SQL."""
    if database.kind == "sqlite":
        db = sqlite3.connect(database.target, isolation_level=None)
    else:
        db = psycopg.connect(database.target, autocommit=True)
    try:
        cursor = db.cursor()
        marker = "?" if database.kind == "sqlite" else "%s"
        cursor.execute("SELECT data FROM objects WHERE id = " + marker, (str_to_int8(oid),))
        (data,) = cursor.fetchone()
        cursor.execute("UPDATE objects SET data = %s WHERE id = %s" % (marker, marker),
                       (_flip_state_byte(bytes(data)), str_to_int8(oid)))
    finally:
        db.close()


def _damage_file(database, oid: bytes) -> int:
    """Pack the file (its packed records have no checksum to fail first),
    flip the state byte of oid's record; return the record's offset."""
    storage = database.open()
    storage.pack()
    position = storage.shelf.get_position(oid)
    storage.close()
    # The record's data follows its frame (SHELF-1: int8 length and oid;
    # DFS20: int4 length), then the record's oid and int4 length.
    data_start = position + (16 if database.kind == "shelf" else 4) + 12
    with open(database.target, "r+b") as f:
        f.seek(data_start)
        data = f.read(200)
        f.seek(data_start)
        f.write(_flip_state_byte(data))
    return position


@pytest.mark.parametrize("database", KINDS, indirect=True)
def test_a_flipped_byte_in_a_state_is_a_decode_error_with_oid_and_offset(database):
    database.fill()
    oid = _extra_oid(database)
    if database.kind in ("sqlite", "postgres"):
        _damage_row(database, oid)
        where = ""  # rows have no byte offsets
    else:
        where = " at byte %d" % _damage_file(database, oid)
    done = verify(database.target)
    assert done.returncode == 1
    problems = [line for line in done.stdout.splitlines() if line.startswith("error")]
    assert len(problems) == 1, done.stdout
    assert problems[0].startswith("error: oid %d%s: its state does not decode ("
                                  % (str_to_int8(oid), where)), problems[0]


def _last_transaction_start(database) -> int:
    """Commit one more change; return the byte where its transaction starts."""
    start = os.path.getsize(database.target)
    storage = database.open()
    connection = Connection(storage)
    connection.get_root()["extra"]["note"] = "changed"
    connection.commit()
    storage.close()
    return start


def _structure_error(database) -> str:
    before = open(database.target, "rb").read()
    done = verify(database.target)
    assert done.returncode == 1
    assert open(database.target, "rb").read() == before  # read-only: nothing repaired
    (problem,) = [line for line in done.stdout.splitlines() if line.startswith("error")]
    return problem


@pytest.mark.parametrize("database", ["shelf", "dfs20"], indirect=True)
def test_a_truncated_tail_is_a_structure_error_at_its_transaction(database):
    database.fill()
    start = _last_transaction_start(database)
    os.truncate(database.target, os.path.getsize(database.target) - 5)
    problem = _structure_error(database)
    assert problem.startswith("error: at byte %d: " % start), problem
    assert "the transaction at byte %d is incomplete" % start in problem


@pytest.mark.parametrize("database", ["shelf"], indirect=True)
def test_a_bad_checksum_is_a_structure_error_at_its_transaction(database):
    database.fill()
    start = _last_transaction_start(database)
    # Inside the class name of the transaction's first record: every
    # record stays well formed, only the checksum can tell.
    with open(database.target, "r+b") as f:
        f.seek(start + 8 + 16 + 12 + 8)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x20]))
    problem = _structure_error(database)
    assert problem.startswith("error: at byte %d: " % start), problem
    assert "checksum mismatch" in problem


@pytest.mark.parametrize("database", KINDS, indirect=True)
def test_unreachable_objects_are_a_warning_with_the_first_oids(database):
    database.fill(30)
    storage = database.open()
    connection = Connection(storage)
    root = connection.get_root()
    dropped = {root["extra"]._p_oid}
    dropped.update(oid for oid, _ in storage.gen_oid_record(root["tree"]._p_oid))
    del root["tree"], root["extra"]
    connection.commit()
    storage.close()
    done = verify(database.target, "--show", "3")
    assert done.returncode == 0, done.stdout
    (warning,) = re.findall(r"^warning: (\d+) objects are not reachable .*: oids (.*)$",
                            done.stdout, re.M)
    assert int(warning[0]) == len(dropped) > 31
    first = ", ".join(str(str_to_int8(oid)) for oid in sorted(dropped)[:3])
    assert warning[1] == "%s, and %d more" % (first, len(dropped) - 3)
    assert "healthy, %s unreachable" % warning[0] in done.stdout


def test_a_file_a_server_is_writing_verifies_up_to_its_last_transaction(tmp_path, servers):
    path = tmp_path / "served.durus"
    fill(FileStorage(str(path)), 2000).get_storage().close()
    server = servers.ours("--file", str(path))
    stop = threading.Event()
    commits = []

    def commit_forever():
        connection = server_processes.connect(server)
        root = connection.get_root()
        while not stop.is_set():
            root["extra"]["n"] = len(commits)
            root[len(commits) % 50] = PersistentDict(n=len(commits))
            connection.commit()
            commits.append(1)
        connection.get_storage().close()
    writer = threading.Thread(target=commit_forever)
    writer.start()
    try:
        for _ in range(3):
            done = verify(str(path))
            assert done.returncode == 0, done.stdout + done.stderr
            assert "healthy" in done.stdout
        # Through the server, verify says what to give it instead.
        refused = verify("durus://%s:%d" % server.address)
        assert refused.returncode == 1
        assert refused.stderr.strip().endswith("give the file the server serves (it opens "
                                               "read-only while the server writes)")
    finally:
        stop.set()
        writer.join()
    assert len(commits) > 10  # verify ran while commits went on
