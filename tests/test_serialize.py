"""durus.serialize: records, oid lists, class names, and the object writer and
reader as Durus 4.3 users call them."""

import pickle
import zlib

import pytest

from durus.connection import Connection
from durus.persistent import Persistent, persistent_class
from durus.persistent_dict import PersistentDict
from durus.serialize import (COMPRESSED_START_BYTE, ObjectReader, ObjectWriter,
                             extract_class_name, pack_record, split_oids, unpack_record)
from durus.storage import MemoryStorage
from durus.utils import int8_to_str

ROOT_OID = int8_to_str(0)


class Leaf(Persistent):
    def __init__(self, text=""):
        self.text = text


@pytest.fixture
def connection():
    return Connection(MemoryStorage())


@pytest.fixture
def writer(connection):
    writer = ObjectWriter(connection)
    yield writer
    writer.close()


def test_pack_and_unpack_record_are_inverse():
    refs = int8_to_str(1) + int8_to_str(2)
    record = pack_record(ROOT_OID, b"state", refs)
    assert record == ROOT_OID + b"\0\0\0\x05state" + refs
    assert unpack_record(record) == (ROOT_OID, b"state", refs)
    assert unpack_record(pack_record(ROOT_OID, b"", b"")) == (ROOT_OID, b"", b"")


def test_split_oids():
    assert split_oids(b"") == [] and split_oids("") == []
    assert split_oids(int8_to_str(3) + int8_to_str(9)) == [int8_to_str(3), int8_to_str(9)]
    with pytest.raises(ValueError):
        split_oids(b"\0" * 9)


def test_extract_class_name_reads_stored_records(connection):
    connection.get_root()["leaf"] = leaf = Leaf()
    connection.commit()
    storage = connection.storage
    assert extract_class_name(storage.load(ROOT_OID)) == b"PersistentDict"
    assert extract_class_name(storage.load(leaf._p_oid)) == b"Leaf"
    assert extract_class_name(pack_record(ROOT_OID, b"no newline", b"")) == b"?"


def test_writer_gives_new_references_an_oid_and_lists_them(connection, writer):
    root = connection.get_root()
    first, second = Leaf("a"), Leaf("b")
    root["x"], root["y"] = first, second
    data, refs = writer.get_state(root)
    assert first._p_oid is not None and first._p_connection is connection
    assert split_oids(refs) == sorted([first._p_oid, second._p_oid])
    new = writer.gen_new_objects(root)
    assert next(new) is root
    assert next(new) is first
    second.other = third = Leaf("c")
    writer.get_state(second)  # met while iterating: still yielded
    assert list(new) == [second, third]
    with pytest.raises(RuntimeError):
        writer.gen_new_objects(root)


def test_writer_refs_leave_out_the_object_itself(connection, writer):
    root = connection.get_root()
    root["self"] = root
    assert writer.get_state(root)[1] == b""


def test_writer_refuses_an_object_of_another_connection(connection, writer):
    other = Connection(MemoryStorage())
    stranger = other.get_root()
    assert writer._persistent_id(connection.get_root()) == (ROOT_OID, PersistentDict)
    assert writer._persistent_id(5) is None
    with pytest.raises(ValueError, match="different connection"):
        writer._persistent_id(stranger)
    connection.get_root()["stranger"] = stranger
    with pytest.raises(ValueError, match="different connection"):
        writer.get_state(connection.get_root())
    with pytest.raises(ValueError):
        connection.commit()


def test_state_layout_is_class_pickle_then_state_pickle(connection, writer):
    small, large = Leaf("s"), Leaf("x" * 1000)
    for leaf in small, large:
        connection.get_root()[leaf.text[:1]] = leaf
    small_data, _ = writer.get_state(small)
    large_data, _ = writer.get_state(large)
    class_pickle = b"\x80\x02ctest_serialize\nLeaf\nq\x00."
    assert small_data.startswith(class_pickle) and large_data.startswith(class_pickle)
    # Tiny states stay plain pickles; larger ones are zlib streams.
    assert small_data[len(class_pickle)] != COMPRESSED_START_BYTE
    large_state = zlib.decompress(large_data[len(class_pickle):])
    unpickler = pickle.Unpickler(_Concatenated(class_pickle + large_state))
    assert unpickler.load() is Leaf and unpickler.load() == {"text": "x" * 1000}


class _Concatenated:
    """A file over bytes, for pickle.Unpickler."""

    def __init__(self, data):
        self.data, self.position = data, 0

    def read(self, n):
        chunk = self.data[self.position:self.position + n]
        self.position += len(chunk)
        return chunk

    def readline(self):
        end = self.data.index(b"\n", self.position) + 1
        chunk, self.position = self.data[self.position:end], end
        return chunk


def test_reader_loads_what_the_writer_wrote(connection):
    root = connection.get_root()
    root["leaf"] = leaf = Leaf("y" * 500)
    connection.commit()
    data = unpack_record(connection.storage.load(ROOT_OID))[1]
    leaf_data = unpack_record(connection.storage.load(leaf._p_oid))[1]
    reader = ObjectReader(connection)
    assert reader.get_class(leaf_data) is Leaf
    state = reader.get_state(data)
    assert state["data"]["leaf"] is leaf  # references resolve through the cache
    assert pickle.loads(reader.get_state_pickle(leaf_data)) == {"text": "y" * 500}
    ghost = reader.get_ghost(leaf_data)
    assert persistent_class(ghost) is Leaf and ghost._p_is_ghost()
    assert reader.get_load_count() == 2


def test_reader_without_a_cache_still_makes_ghosts(connection, writer):
    class NoCache:
        pass

    data, _ = writer.get_state(connection.get_root())
    ghost = ObjectReader(NoCache()).get_ghost(data)
    assert persistent_class(ghost) is PersistentDict and ghost._p_is_ghost()


def test_reader_accepts_any_class_pickle_form(connection):
    # Durus 4.3 itself writes memo index 1 for the class: no fast-path form.
    data = (b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x01."
            b"\x80\x02}q\x02U\x04dataq\x03}q\x04s.")
    reader = ObjectReader(connection)
    assert reader.get_class(data) is PersistentDict
    assert reader.get_state(data) == {"data": {}}
