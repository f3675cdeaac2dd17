"""The shelf format of FileStorage files, Durus 4.3's: durus.shelf.Shelf
with generic values, on files and streams; the header and offset map of a
new and of a packed file, and damage to them; OffsetMap and
read_transaction_offsets; the checksum records."""

import io
import logging
import os
import struct

import pytest

from durus.connection import Connection
from durus.error import CorruptFileError, ReadOnlyError, ShortReadError, WrongFormatError
from durus.file import File
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.shelf import CHECKSUM_OID, PREFIX, OffsetMap, Shelf, read_transaction_offsets
from durus.utils import ShortRead, int8_to_str

from storage_files import Counter, committed_keys, make_file, open_with_counters


def test_shelf_stores_values_of_any_form_and_reads_them_after_reopening(tmp_path):
    name = str(tmp_path / "shelf")
    shelf = Shelf(name)
    first, second = shelf.next_name(), shelf.next_name()
    assert first != second
    result = shelf.store([(first, b"one"), (second, "two")])
    assert [(n, old) for n, old, _ in result] == [(first, None), (second, None)]
    assert [new for _, _, new in result] == [shelf.get_position(first),
                                             shelf.get_position(second)]
    assert shelf.get_value(first) == b"one" and shelf.get_value(second) == b"two"
    again = shelf.store([(first, b"uno")])
    assert again == [(first, result[0][2], shelf.get_position(first))]
    with pytest.raises(CorruptFileError):
        shelf.get_record(first)  # not an object record
    with pytest.raises(ValueError):
        shelf.get_value(b"okok")
    assert shelf.get_value(int8_to_str(99)) is None
    shelf.close()
    reopened = Shelf(name, readonly=True)
    assert sorted(reopened) == [first, second]
    assert sorted(reopened.items()) == [(first, b"uno"), (second, b"two")]
    assert sorted(reopened.iterindex()) == sorted(
        (n, reopened.get_position(n)) for n in (first, second))
    reopened.close()


def test_shelf_on_a_shared_file_and_with_initial_items():
    f = File()
    shelf = Shelf(f, items=[(int8_to_str(0), "zero"), (int8_to_str(2), b"two")])
    shelf.store([(int8_to_str(1), b"one")])
    other = Shelf(f)
    assert dict(other.items()) == {int8_to_str(0): b"zero", int8_to_str(1): b"one",
                                   int8_to_str(2): b"two"}
    with pytest.raises(ValueError):
        Shelf(f, items=[(int8_to_str(3), b"three")])  # only for a new shelf
    f.close()


def test_shelf_in_a_stream():
    stream = io.BytesIO()
    shelf = Shelf(stream)
    shelf.store([(int8_to_str(5), b"five")])
    copy = Shelf(io.BytesIO(stream.getvalue()), readonly=True)
    assert copy.get_value(int8_to_str(5)) == b"five"
    with pytest.raises(ReadOnlyError):
        copy.store([(int8_to_str(6), b"six")])
    with pytest.raises(WrongFormatError) as raised:
        Shelf(io.BytesIO(b"nope"), readonly=True)
    assert isinstance(raised.value, AssertionError)
    with pytest.raises(ShortRead) as raised:
        Shelf(io.BytesIO(b"SHELF-1\nbogus"), readonly=True)
    assert isinstance(raised.value, CorruptFileError)


def _transaction(records: list) -> bytes:
    body = b"".join(int8_to_str(8 + len(v)) + n + v for n, v in records)
    return int8_to_str(len(body)) + body


def test_a_value_not_an_object_record_needs_the_checksum_that_vouches_for_it():
    stream = io.BytesIO()
    Shelf(stream).store([(int8_to_str(1), b"any value")])
    good = stream.getvalue()
    damaged = bytearray(good)
    damaged[-3] ^= 1  # in the CRC
    with pytest.raises(ShortReadError, match="checksum"):
        Shelf(io.BytesIO(bytes(damaged)), readonly=True)
    # As Durus's Shelf would write it: no checksum, so it is not taken on trust.
    empty = io.BytesIO()
    Shelf(empty)
    with pytest.raises(ShortReadError, match="malformed record"):
        Shelf(io.BytesIO(empty.getvalue() + _transaction([(int8_to_str(1), b"a value of 20 bytes or more")])),
              readonly=True)


def test_offset_map_and_transaction_offsets_read_a_packed_file(tmp_path):
    name = str(tmp_path / "db")
    connection = Connection(FileStorage(name))
    root = connection.get_root()
    for j in range(5):
        root[j] = Persistent()
    connection.commit()
    del root[1], root[3]
    connection.commit()
    connection.pack()
    shelf = connection.get_storage().shelf
    offset_map = shelf.get_offset_map()
    assert offset_map.get_start() == shelf.map_start
    assert dict(offset_map.items()) == {
        j: shelf.get_position(int8_to_str(j)) for j in offset_map}
    holes = list(offset_map.gen_holes())
    free = shelf.gen_free_oids()
    assert [int8_to_str(j) for j in holes] == [next(free) for _ in holes]
    root[9] = Persistent()
    connection.commit()
    connection.get_storage().close()
    f = File(name, readonly=True)
    f.seek(OffsetMap(_at(f, shelf.map_start)).get_start())
    f.seek(shelf.map_end)
    offsets = read_transaction_offsets(f)
    assert CHECKSUM_OID in offsets and len(offsets) == 3  # root, the new object, the CRC
    assert read_transaction_offsets(f) is None
    f.close()
    with open(name, "ab") as raw:
        raw.write(b"\0" * 5)
    f = File(name)
    f.seek(shelf.map_end)
    read_transaction_offsets(f)
    with pytest.raises(ShortRead):
        read_transaction_offsets(f)
    size = len(f)
    assert read_transaction_offsets(f, repair=True) is None and len(f) == size - 5
    f.close()


def _at(f: File, position: int) -> File:
    f.seek(position)
    return f


def test_the_checksum_name_is_refused_and_nothing_is_written(tmp_path):
    """A value stored under the name our checksum records use would make the
    file unreadable; Durus 4.3 readers would also take our checksums for it."""
    path = str(tmp_path / "shelf")
    shelf = Shelf(path)
    size = os.path.getsize(path)
    with pytest.raises(ValueError, match="reserved"):
        shelf.store([(int8_to_str(1), b"fine"), (CHECKSUM_OID, b"value")])
    assert os.path.getsize(path) == size and shelf.get_value(int8_to_str(1)) is None
    shelf.close()
    Shelf(path, readonly=True).close()


def test_new_file_has_shelf_header_and_empty_map(tmp_path):
    path = tmp_path / "new.durus"
    FileStorage(str(path)).close()
    data = path.read_bytes()
    # prefix, empty first transaction, offset map of 0 words of 1 byte
    assert data == PREFIX + int8_to_str(0) + struct.pack(">QQQ", 16, 1, 0)


def test_truncated_header_and_map(tmp_path):
    """A file cut inside the header or map of a new shelf holds no transactions:
    refused, and made afresh only by repair. A packed file's cannot be."""
    path = tmp_path / "short.durus"
    make_file(path, commits=1)
    data = path.read_bytes()
    for cut in (10, 20, 30):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptFileError, match="cut short while being created"):
            FileStorage(str(path))
        assert committed_keys(path, repair=True) == []
    make_file(path, commits=1)
    FileStorage(str(path)).pack()
    data = path.read_bytes()
    for cut in (20, 30):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptFileError):
            FileStorage(str(path), repair=True)


@pytest.mark.parametrize("field", [2 ** 63, 2 ** 64 - 1, 10 ** 6])
def test_a_header_that_puts_the_offset_map_beyond_the_file_is_refused(tmp_path, field):
    path = tmp_path / "bad.durus"
    make_file(path, commits=3)
    FileStorage(str(path)).pack()
    data = bytearray(path.read_bytes())
    data[8:16] = struct.pack(">Q", field)
    path.write_bytes(data)
    for options in ({}, {"readonly": True}, {"repair": True}):
        with pytest.raises(CorruptFileError, match="header at byte 8 puts it at byte %d"
                           % (16 + field)):
            FileStorage(str(path), **options)


def packed_with_counters(path, count: int) -> list:
    """A packed file whose root holds Counters 0..count-1; return their oids."""
    storage, connection, root = open_with_counters(path, count)
    oids = [root[i]._p_oid for i in range(count)]
    connection.pack()
    storage.close()
    return oids


def test_a_damaged_record_length_in_the_packed_records_is_reported(tmp_path):
    path = tmp_path / "bad.durus"
    oids = packed_with_counters(path, 10)
    storage = FileStorage(str(path))
    positions = [storage.shelf.get_position(oid) for oid in oids]
    storage.close()
    data = bytearray(path.read_bytes())
    for n, length in ((3, 2 ** 62), (5, 2 ** 64 - 1), (7, 3)):
        data[positions[n]:positions[n] + 8] = struct.pack(">Q", length)
    path.write_bytes(data)
    storage = FileStorage(str(path))  # the packed records are read as they are needed
    root = Connection(storage).get_root()
    assert root[2].n == 2
    for n in (3, 5, 7):
        with pytest.raises(CorruptFileError, match="no well-formed record at byte %d"
                           % positions[n]):
            root[n].n
    assert root[9].n == 9
    storage.close()


def test_an_offset_map_word_pointing_at_another_record_is_reported(tmp_path):
    path = tmp_path / "bad.durus"
    oids = packed_with_counters(path, 4)
    storage = FileStorage(str(path))
    shelf = storage.shelf
    first, second = (shelf.get_position(oid) for oid in oids[:2])
    word = shelf.map_start + 24 + shelf.word_size * int.from_bytes(oids[0], "big")
    storage.close()
    data = bytearray(path.read_bytes())
    data[word:word + shelf.word_size] = second.to_bytes(shelf.word_size, "big")
    path.write_bytes(data)
    storage = FileStorage(str(path), readonly=True)
    with pytest.raises(CorruptFileError, match="the record for oid %d should be at byte %d, "
                       "which holds one for oid %d" % (int.from_bytes(oids[0], "big"), second,
                                                       int.from_bytes(oids[1], "big"))):
        storage.load(oids[0])
    assert first != second
    storage.close()


def damage_map_word(path, j: int, value) -> None:
    """Set the offset map's word for oid number j (-1: the last) to
    value(old word, the map's start)."""
    storage = FileStorage(str(path), readonly=True)
    shelf = storage.shelf
    j = j % shelf.map_count
    position = shelf.map_start + 24 + shelf.word_size * j
    new_word = value(shelf._map_word(j), shelf.map_start).to_bytes(shelf.word_size, "big")
    storage.close()
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(new_word)


def packed_with_a_hole(path) -> list:
    """A packed file of Counters 0..9 but 5, which left a hole in the map;
    return the oids the ten had."""
    oids = packed_with_counters(path, 10)
    storage = FileStorage(str(path))
    connection = Connection(storage)
    del connection.get_root()[5]
    connection.commit()
    connection.pack()
    storage.close()
    return oids


def test_a_free_list_leading_to_a_used_oid_hands_out_no_used_oid(tmp_path, caplog):
    """The holes of the map form a list of free oids; damaged so that it names
    an oid in use, a new object took that oid and replaced the old one."""
    path = tmp_path / "holes.durus"
    oids = packed_with_a_hole(path)
    used = int.from_bytes(oids[7], "big")
    hole = int.from_bytes(oids[5], "big")
    damage_map_word(path, -1, lambda word, map_start: map_start + used)  # the list's head
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    root[100] = Counter(100)
    with caplog.at_level(logging.WARNING, logger="durus"):
        connection.commit()
    assert "free list leads to oid %d, which has a record or a damaged word" % used in caplog.text
    assert root[100]._p_oid not in oids and int.from_bytes(root[100]._p_oid, "big") != hole
    storage.close()
    root = Connection(FileStorage(str(path), readonly=True)).get_root()
    assert [root[i].n for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 100)] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 100]


def test_a_free_list_leading_to_a_damaged_word_hands_out_no_used_oid(tmp_path, caplog):
    """The list names oid u, whose own word is damaged: u may be in use."""
    path = tmp_path / "holes.durus"
    oids = packed_with_a_hole(path)
    used = int.from_bytes(oids[7], "big")
    damage_map_word(path, -1, lambda word, map_start: map_start + used)
    damage_map_word(path, used, lambda word, map_start: word | 1 << 15)
    storage = FileStorage(str(path))
    with caplog.at_level(logging.WARNING, logger="durus"):
        fresh = storage.new_oid()
    assert "leads to oid %d, which has a record or a damaged word" % used in caplog.text
    assert fresh not in oids
    with pytest.raises(CorruptFileError):
        storage.load(oids[7])
    storage.close()


def test_an_offset_map_word_beyond_the_map_is_reported(tmp_path):
    path = tmp_path / "word.durus"
    oids = packed_with_counters(path, 10)
    damage_map_word(path, int.from_bytes(oids[5], "big"), lambda word, map_start: word | 1 << 15)
    storage = FileStorage(str(path))
    with pytest.raises(CorruptFileError, match="the offset map's word for oid %d "
                       r"\(at byte \d+\) is damaged" % int.from_bytes(oids[5], "big")):
        storage.load(oids[5])
    with pytest.raises(CorruptFileError):
        list(storage.gen_oid_record())  # a pack cannot pass over it either
    with pytest.raises(CorruptFileError):
        storage.pack()
    assert storage.load(oids[6])
    storage.close()
