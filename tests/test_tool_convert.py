"""durus convert through its command line: a round trip through every
storage (SHELF-1, DFS20, SQLite, PostgreSQL) keeps every record under its
oid, the copy opens through a Connection and gives new objects new oids;
a DEST that is not new, and bad input, are refused in one line."""

import pytest

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet
from durus.storage import ROOT_OID
from durus.tools.target import open_target
from durus.utils import str_to_int8

from readme import shell_commands
from server_processes import run_durus


TREE_KEYS = 12000
DICTS = 8000


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A SHELF-1 file of over 20,000 objects (a BTree of PersistentLists, a
    PersistentDict of PersistentDicts, PersistentSets, and one object no
    longer reachable); returns (path, {oid: record} of all its records)."""
    path = tmp_path_factory.mktemp("convert") / "source.durus"
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    root["gone"] = PersistentDict(x=1)
    connection.commit()
    del root["gone"]  # its record stays until a pack
    root["tree"], root["dicts"] = BTree(), PersistentDict()
    root["sets"] = PersistentList(PersistentSet({i, -i}) for i in range(50))
    for i in range(TREE_KEYS):
        root["tree"][i] = PersistentList([i, "v%d" % i])
        if i % 2000 == 1999:
            connection.commit()
    for i in range(DICTS):
        root["dicts"]["d%d" % i] = PersistentDict(n=i, text="<%d>" % i)
    connection.commit()
    records = dict(storage.gen_oid_record(None))
    storage.close()
    assert len(records) > 20000
    return path, records


def convert(cwd, *args):
    return run_durus("convert", *map(str, args), cwd=cwd)


def records_of(target: str) -> dict:
    storage = open_target(target)
    try:
        return dict(storage.gen_oid_record(None))
    finally:
        storage.close()


def check_same(target: str, expected: dict) -> None:
    """The records of target are expected's, object by object."""
    found = records_of(target)
    assert sorted(found) == sorted(expected)
    for oid, record in expected.items():
        assert found[oid] == record, str_to_int8(oid)


def check_loads(target: str) -> None:
    storage = open_target(target)
    try:
        root = Connection(storage).get_root()
        assert [root["tree"][i][1] for i in range(TREE_KEYS)] == ["v%d" % i for i in range(TREE_KEYS)]
        assert sum(value["n"] for value in root["dicts"].values()) == sum(range(DICTS))
        assert [max(s) for s in root["sets"]] == list(range(50))
        assert "gone" not in root
    finally:
        storage.close()


def check_new_oids_are_new(target: str, copied: dict) -> None:
    """A commit to the copy gives its new object an oid none of the copied has."""
    storage = open_target(target, readonly=False)
    try:
        connection = Connection(storage)
        connection.get_root()["new"] = PersistentDict(fresh=True)
        connection.commit()
        oid = connection.get_root()["new"]._p_oid
    finally:
        storage.close()
    assert oid not in copied
    if not target.endswith(".durus"):  # SHELF-1 reuses holes of the copied oids, as Durus
        assert str_to_int8(oid) > max(map(str_to_int8, copied))


def test_round_trip_through_every_storage(tmp_path, source, postgres_dsn):
    path, records = source
    chain = [str(path), str(tmp_path / "a.dfs20"), str(tmp_path / "b.sqlite"), postgres_dsn,
             str(tmp_path / "c.durus")]
    formats = [["--format", "dfs20"], [], [], []]
    for (here, there), options in zip(zip(chain, chain[1:]), formats):
        done = convert(tmp_path, here, there, *options)
        assert done.returncode == 0, done.stderr
        assert "%d records copied" % len(records) in done.stdout
        check_same(there, records)
    assert open(chain[1], "rb").read(5) == b"DFS20"
    assert open(chain[2], "rb").read(6) == b"SQLite"
    check_loads(chain[-1])
    for target in chain[1:]:
        check_new_oids_are_new(target, records)


def test_from_a_server_it_copies_what_the_root_reaches(tmp_path, source, servers):
    path, records = source
    served = tmp_path / "served.durus"
    served.write_bytes(path.read_bytes())
    server = servers.ours("--file", str(served))
    done = convert(tmp_path, "durus://%s:%d" % server.address, "copy.sqlite")
    assert done.returncode == 0, done.stderr
    storage = FileStorage(str(path), readonly=True)
    reachable = dict(storage.gen_oid_record(ROOT_OID))
    storage.close()
    assert len(reachable) == len(records) - 1  # all but "gone"
    check_same(str(tmp_path / "copy.sqlite"), reachable)


def test_a_dest_that_is_not_new_is_refused(tmp_path, source, postgres_dsn):
    path = source[0]
    (tmp_path / "taken.durus").write_bytes(b"SHELF-1\n")
    refused = convert(tmp_path, path, "taken.durus")
    assert refused.returncode == 1 and "taken.durus exists (8 bytes)" in refused.stderr
    for dest in ("once.sqlite", postgres_dsn):
        assert convert(tmp_path, path, dest).returncode == 0
        refused = convert(tmp_path, path, dest)
        assert refused.returncode == 1, refused.stdout
        assert "objects already" in refused.stderr and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    check_same(str(tmp_path / "once.sqlite"), source[1])


@pytest.mark.parametrize("args, message", [
    (["missing.durus", "out.durus"], "no durus file at 'missing.durus'"),
    (["notes.txt", "out.durus"], "not a Durus storage file"),
    (["SOURCE", "postgresql://u:p@127.0.0.1:1/db"], "cannot connect to PostgreSQL"),
    (["SOURCE", "postgresql://u@127.0.0.1:1/db", "--format", "shelf"], "--format is for a file"),
])
def test_bad_input_gets_one_line(tmp_path, source, args, message):
    (tmp_path / "notes.txt").write_text("hello\n")
    args = [str(source[0]) if arg == "SOURCE" else arg for arg in args]
    refused = convert(tmp_path, *args)
    assert refused.returncode == 1
    assert message in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.durus").exists()


def test_readme_example(tmp_path, source):
    commands = shell_commands("### durus convert")
    assert commands and all(line.startswith("durus convert ") for line in commands)
    (tmp_path / "data.durus").write_bytes(source[0].read_bytes())
    for line in commands:
        done = run_durus(*line.split()[1:], cwd=tmp_path)
        assert done.returncode == 0, (line, done.stderr)
    check_same(str(tmp_path / "data.dfs20"), source[1])
