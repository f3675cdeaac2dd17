"""What every storage promises, run against each one: the records a
connection commits come back, after reopening and packs; oids are never
handed out twice; unreachable records go at a pack and reachable ones stay;
a read-only storage never writes; a closed one refuses everything."""

import pytest

from durus.btree import BTree
from durus.connection import Connection
from durus.error import DurusKeyError, ReadOnlyError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.serialize import pack_record
from durus.storage import get_census, gen_referring_oid_record
from durus.utils import int8_to_str

from lifecycle import Item

@pytest.fixture
def opener(any_database):
    return any_database


def fingerprint(opener, directory) -> dict:
    """What the database holds, byte for byte: its files, or its tables."""
    if opener.kind != "postgres":
        # SQLite's shared-memory index and an empty WAL are made by readers too.
        return {path.name: path.read_bytes() for path in directory.iterdir()
                if not path.name.endswith(("-shm", ".lock"))
                and not (path.name.endswith("-wal") and not path.stat().st_size)}
    storage = opener()
    tables = {table: storage._execute(storage._db, "SELECT * FROM %s ORDER BY 1" % table
                                      ).fetchall()
              for table in ("objects", "durus_log", "durus_meta")}
    storage.close()
    return tables


def test_commits_come_back_after_reopening(opener):
    connection = Connection(opener())
    root = connection.get_root()
    root["list"] = PersistentList(Item(i) for i in range(1000))
    root["dict"] = PersistentDict(a=Item("a"))
    connection.commit()
    root["list"][10].value = "changed"
    connection.commit()
    connection.get_storage().close()
    root = Connection(opener()).get_root()
    assert [item.value for item in root["list"]] == [
        "changed" if i == 10 else i for i in range(1000)]
    assert root["dict"]["a"].value == "a"


def test_oids_are_never_handed_out_twice(opener):
    storage = opener()
    connection = Connection(storage)
    given = {storage.new_oid() for _ in range(500)}
    assert len(given) == 500
    connection.get_root()["x"] = Item(1)
    connection.commit()
    storage.close()
    storage = opener()
    stored = {oid for oid, _ in storage.gen_oid_record()}
    fresh = {storage.new_oid() for _ in range(500)}
    assert len(fresh) == 500 and not fresh & stored


def test_loading_a_missing_oid_is_a_key_error(opener):
    storage = opener()
    Connection(storage)
    with pytest.raises(DurusKeyError):
        storage.load(int8_to_str(123456))
    with pytest.raises(KeyError):
        list(storage.bulk_load([int8_to_str(0), int8_to_str(123456)]))


def test_bulk_load_answers_in_the_order_asked(opener):
    storage = opener()
    connection = Connection(storage)
    connection.get_root()["items"] = PersistentList(Item(i) for i in range(1200))
    connection.commit()
    oids = [oid for oid, _ in storage.gen_oid_record()][::-1]
    assert [record[:8] for record in storage.bulk_load(oids)] == oids


def test_gen_oid_record_from_the_root_and_of_everything(opener):
    storage = opener()
    connection = Connection(storage)
    root = connection.get_root()
    root["kept"] = Item("kept")
    root["dropped"] = Item("dropped")
    connection.commit()
    del root["dropped"]
    connection.commit()
    assert len(list(storage.gen_oid_record())) == 3
    assert len(list(storage.gen_oid_record(start_oid=int8_to_str(0)))) == 2
    assert get_census(storage)[b"Item"] == 2
    kept = root["kept"]._p_oid
    assert [oid for oid, _ in gen_referring_oid_record(storage, kept)] == [int8_to_str(0)]


def test_a_pack_removes_the_unreachable_and_keeps_the_rest(opener):
    connection = Connection(opener())
    root = connection.get_root()
    root["tree"] = tree = BTree()
    for i in range(5000):
        tree[i] = Item(i)
    connection.commit()
    for i in range(0, 5000, 2):
        del tree[i]
    connection.commit()
    connection.pack()
    for i in range(5000, 8000):
        tree[i] = Item(i)
    connection.commit()
    connection.pack()
    storage = connection.get_storage()
    records = {oid for oid, _ in storage.gen_oid_record()}
    assert records == {oid for oid, _ in storage.gen_oid_record(start_oid=int8_to_str(0))}
    storage.close()
    tree = Connection(opener()).get_root()["tree"]
    assert {key: item.value for key, item in tree.items()} == {
        i: i for i in list(range(1, 5000, 2)) + list(range(5000, 8000))}


def test_read_only_never_writes(opener, tmp_path):
    connection = Connection(opener())
    connection.get_root()["x"] = Item(1)
    connection.commit()
    connection.get_storage().close()
    before = fingerprint(opener, tmp_path)
    reader = opener(readonly=True)
    root = Connection(reader).get_root()
    assert root["x"].value == 1
    root["y"] = 2
    with pytest.raises(ReadOnlyError):
        root._p_connection.commit()
    with pytest.raises(ReadOnlyError):
        reader.new_oid()
    reader.close()
    assert fingerprint(opener, tmp_path) == before


def test_a_closed_storage_refuses_every_operation(opener):
    storage = opener()
    connection = Connection(storage)
    connection.get_root()["x"] = Item(1)
    connection.commit()
    storage.close()
    storage.close()  # harmless to repeat
    record = pack_record(int8_to_str(0), b"data", b"")
    calls = [lambda: storage.load(int8_to_str(0)), storage.begin,
             lambda: storage.store(int8_to_str(0), record), storage.end, storage.sync,
             storage.new_oid, storage.pack, storage.get_packer,
             lambda: list(storage.bulk_load([int8_to_str(0)])),
             lambda: list(storage.gen_oid_record())]
    for call in calls:
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("record", [
    b"short",
    int8_to_str(9) + pack_record(int8_to_str(1), b"data", b"")[8:],  # another oid's
    pack_record(int8_to_str(1), b"data", b"abc"),  # refs that are not whole oids
    pack_record(int8_to_str(1), b"data", b"")[:-1],  # data shorter than its length says
    bytearray(pack_record(int8_to_str(1), b"data", b"")),  # not bytes
], ids=["short", "other oid", "partial oid", "cut data", "bytearray"])
def test_a_malformed_record_is_refused_and_nothing_written(opener, record):
    storage = opener()
    Connection(storage).commit()  # the root
    storage.begin()
    with pytest.raises(ValueError, match="malformed record"):
        storage.store(int8_to_str(1), record)
    storage.end()
    with pytest.raises(DurusKeyError):
        storage.load(int8_to_str(1))
