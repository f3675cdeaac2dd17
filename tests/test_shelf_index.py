"""The persisted index beside a SHELF-1 file (durus.shelf_index): used when
valid, so that an open scans only what it does not cover; never trusted when
stale or damaged (the whole file is scanned then); read in place, each
chunk of positions checked when first used (a damaged one makes the shelf
scan the file instead); a hypothesis model of commits, packs, kills and
reopens against a dict."""

import os
import shutil
import sys
import tempfile
import weakref
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from durus import shelf_index
from durus.connection import Connection
from durus.error import CorruptFileError
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.shelf import PositionIndex, SavedPositionIndex, Shelf
from durus.utils import int8_to_str


@pytest.fixture(autouse=True)
def index_small_files():
    """An index for files of any size, so that small test files get one."""
    with mock.patch.object(shelf_index, "MIN_SCANNED_BYTES", 0):
        yield


def commit_values(name: str, values: dict, close: bool = True) -> FileStorage:
    """Set root[key] = PersistentDict(v=value) for each item, in one commit."""
    storage = FileStorage(name)
    connection = Connection(storage)
    root = connection.get_root()
    for key, value in values.items():
        root[key] = PersistentDict(v=value)
    connection.commit()
    if close:
        storage.close()
    return storage


def read_values(name: str) -> tuple:
    """({key: value} in the file, where its persisted index ended or None)."""
    storage = FileStorage(name, readonly=True)
    try:
        root = Connection(storage).get_root()
        return {key: item["v"] for key, item in root.items()}, storage.shelf.index_end
    finally:
        storage.close()


def test_a_valid_index_spares_the_scan_and_gives_the_same_positions(tmp_path):
    name = str(tmp_path / "db")
    for i in range(5):
        commit_values(name, {i: i * 10})
    assert os.path.exists(name + ".index")
    values, index_end = read_values(name)
    assert values == {i: i * 10 for i in range(5)}
    assert index_end == os.path.getsize(name)
    with_index = FileStorage(name, readonly=True)
    os.unlink(name + ".index")
    scanned = FileStorage(name, readonly=True)
    assert scanned.shelf.index_end is None
    assert dict(with_index.shelf.iterindex()) == dict(scanned.shelf.iterindex())
    if sys.byteorder == "little":  # a reader reads the positions in place, never copied
        assert isinstance(with_index.shelf.index.dense, memoryview)
    with_index.close()
    scanned.close()


def test_a_writer_that_changes_nothing_keeps_the_index(tmp_path):
    name = str(tmp_path / "db")
    commit_values(name, {1: 1})
    before = os.stat(name + ".index")
    FileStorage(name).close()
    assert os.stat(name + ".index").st_mtime_ns == before.st_mtime_ns
    assert read_values(name)[1] == os.path.getsize(name)


def test_small_files_get_no_index_and_lose_a_stale_one(tmp_path):
    name = str(tmp_path / "db")
    commit_values(name, {1: 1})
    with mock.patch.object(shelf_index, "MIN_SCANNED_BYTES", 1 << 30):
        commit_values(name, {2: 2})
    assert not os.path.exists(name + ".index")
    assert read_values(name) == ({1: 1, 2: 2}, None)


def test_commits_of_a_killed_writer_are_scanned_after_the_index(tmp_path, run_ours):
    name = str(tmp_path / "db")
    commit_values(name, {1: 1})
    covered = os.path.getsize(name)
    run_ours("import os, sys, test_shelf_index as t\n"
             "t.commit_values(sys.argv[1], {2: 2}, close=False)\n"
             "os._exit(0)\n", name)
    assert os.path.exists(name + ".writer")
    assert read_values(name) == ({1: 1, 2: 2}, covered)


def test_commits_of_durus_4_3_are_scanned_after_the_index(tmp_path, run_peer):
    name = str(tmp_path / "db")
    commit_values(name, {1: 1})
    covered = os.path.getsize(name)
    run_peer("import sys\n"
             "from durus.connection import Connection\n"
             "from durus.file_storage import FileStorage\n"
             "from durus.persistent_dict import PersistentDict\n"
             "connection = Connection(FileStorage(sys.argv[1]))\n"
             "connection.get_root()[2] = PersistentDict(v=2)\n"
             "connection.commit()\n", name)
    assert read_values(name) == ({1: 1, 2: 2}, covered)


def test_a_pack_by_durus_4_3_makes_the_index_stale(tmp_path, run_peer):
    name = str(tmp_path / "db")
    commit_values(name, {1: 1})
    commit_values(name, {2: 2})
    run_peer("import sys\n"
             "from durus.connection import Connection\n"
             "from durus.file_storage import FileStorage\n"
             "Connection(FileStorage(sys.argv[1])).pack()\n", name)
    assert read_values(name) == ({1: 1, 2: 2}, None)


def damage_index(name: str, offset: int) -> None:
    with open(name + ".index", "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x20]))


def test_a_damaged_or_truncated_index_is_not_trusted(tmp_path):
    name = str(tmp_path / "db")
    for i in range(3):
        commit_values(name, {i: i})
    good = open(name + ".index", "rb").read()
    for offset in range(0, len(good), 7):
        damage_index(name, offset)
        assert read_values(name) == ({0: 0, 1: 1, 2: 2}, None), offset
        open(name + ".index", "wb").write(good)
    for length in (0, 10, len(good) // 2, len(good) - 1):
        open(name + ".index", "wb").write(good[:length])
        assert read_values(name) == ({0: 0, 1: 1, 2: 2}, None), length
    open(name + ".index", "wb").write(good + b"\0")
    assert read_values(name)[1] is None


def test_the_index_of_another_file_is_not_trusted(tmp_path):
    name, other = str(tmp_path / "db"), str(tmp_path / "other")
    commit_values(name, {1: 1})
    commit_values(other, {1: 5})
    shutil.copy(other + ".index", name + ".index")
    assert read_values(name) == ({1: 1}, None)
    # Not even for a copy of the file: its index is rebuilt when a writer closes it.
    shutil.copy(other, name)
    assert read_values(name) == ({1: 5}, None)


def test_a_file_damaged_in_place_is_refused_despite_its_index(tmp_path):
    name = str(tmp_path / "db")
    commit_values(name, {1: 1})
    commit_values(name, {2: 2})
    size = os.path.getsize(name)
    times = os.stat(name)
    with open(name, "r+b") as f:
        f.seek(size - 200)
        byte = f.read(1)
        f.seek(size - 200)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(name, ns=(times.st_atime_ns, times.st_mtime_ns))  # its ctime still tells
    with pytest.raises(CorruptFileError):
        FileStorage(name, readonly=True)


def test_a_file_cut_short_is_scanned(tmp_path):
    name = str(tmp_path / "db")
    commit_values(name, {1: 1})
    size = os.path.getsize(name)
    commit_values(name, {2: 2})
    os.truncate(name, size)
    assert read_values(name) == ({1: 1}, None)


# Oids of the multi-chunk shelves: three chunks and a part of dense
# positions, and one far beyond them (a sparse one).
CHUNK = shelf_index.CHUNK_SLOTS
DENSE_OIDS = range(3 * CHUNK + 100)
SPARSE_OID = 1 << 40


def write_shelf_with_index(name: str, oids=DENSE_OIDS, transactions: int = 4) -> dict:
    """A shelf holding a value for each oid number (and SPARSE_OID), in a few
    transactions, its index saved; {oid: value}."""
    values = {int8_to_str(n): b"value %d" % n for n in list(oids) + [SPARSE_OID]}
    items = list(values.items())
    shelf = Shelf(name)
    step = -(-len(items) // transactions)
    for start in range(0, len(items), step):
        shelf.append(items[start:start + step], fsync=False)
    shelf.save_index()
    shelf.close()
    return values


def index_layout(name: str) -> tuple:
    """(offset of dense, len(dense), offset of sparse) in the index of name."""
    with open(name + ".index", "rb") as f:
        head = f.read(len(shelf_index.MAGIC) + shelf_index._HEAD.size)
    dense_length = shelf_index._HEAD.unpack_from(head, len(shelf_index.MAGIC))[10]
    dense_offset = shelf_index._prefix_size(dense_length)
    return dense_offset, dense_length, dense_offset + 8 * dense_length


def check_values(shelf: Shelf, values: dict) -> None:
    assert {oid: shelf.get_value(oid) for oid in values} == values
    assert sorted(oid for oid, _ in shelf.iterindex()) == sorted(values)


def check_index_used(shelf: Shelf, name: str, values: dict) -> None:
    """shelf, just opened on the file name, took its positions from the saved
    index and reads values back; it is closed after."""
    assert shelf.index_end == os.path.getsize(name)
    check_values(shelf, values)
    shelf.close()


@pytest.mark.parametrize("chunk", [0, 1, 3])  # first, middle, last (a part)
def test_a_damaged_chunk_is_found_when_first_used_and_the_file_scanned(tmp_path, chunk):
    name = str(tmp_path / "db")
    values = write_shelf_with_index(name)
    dense_offset, dense_length, _ = index_layout(name)
    assert (dense_length - 1) // CHUNK == 3  # chunk 3 is the last
    damage_index(name, dense_offset + 8 * (chunk * CHUNK + 5) + 2)
    shelf = Shelf(name, readonly=True)
    assert isinstance(shelf.index, SavedPositionIndex)  # not read at open
    other = 2 if chunk != 2 else 0
    assert shelf.get_value(int8_to_str(other * CHUNK + 1)) == b"value %d" % (other * CHUNK + 1)
    assert shelf.index_end is not None
    # The damaged position (of oid chunk * CHUNK + 5) is never used.
    first_in_chunk = int8_to_str(chunk * CHUNK)
    assert shelf.get_value(first_in_chunk) == values[first_in_chunk]
    assert type(shelf.index) is PositionIndex and shelf.index_end is None
    check_values(shelf, values)
    shelf.close()


@pytest.mark.parametrize("where", ["head", "table", "padding", "sparse"])
def test_a_damaged_head_table_or_sparse_part_is_found_at_open(tmp_path, where):
    name = str(tmp_path / "db")
    values = write_shelf_with_index(name)
    dense_offset, _, sparse_offset = index_layout(name)
    table_offset = len(shelf_index.MAGIC) + shelf_index._HEAD.size
    offset = {"head": table_offset - 30, "table": table_offset + 4, "padding": dense_offset - 5,
              "sparse": sparse_offset + 9}[where]
    damage_index(name, offset)
    shelf = Shelf(name, readonly=True)
    assert shelf.index_end is None and type(shelf.index) is PositionIndex
    check_values(shelf, values)
    shelf.close()


@pytest.mark.parametrize("first_use", ["writable_dense", "items", "discard"])
def test_every_use_of_the_positions_checks_them(tmp_path, first_use):
    name = str(tmp_path / "db")
    values = write_shelf_with_index(name)
    dense_offset, _, _ = index_layout(name)
    damage_index(name, dense_offset + 8 * (2 * CHUNK + 7))
    shelf = Shelf(name, readonly=True)
    index = shelf.index
    if first_use == "writable_dense":
        index.writable_dense()
    elif first_use == "items":
        index.items()
    else:
        index.discard(3)
        del values[int8_to_str(3)]
    assert type(index) is PositionIndex and shelf.index_end is None
    check_values(shelf, values)
    shelf.close()


def test_a_writer_works_on_from_the_scan_and_replaces_a_damaged_index(tmp_path):
    name = str(tmp_path / "db")
    values = write_shelf_with_index(name)
    dense_offset, _, _ = index_layout(name)
    damage_index(name, dense_offset + 8 * (CHUNK + 3))
    shelf = Shelf(name)
    shelf.append([(int8_to_str(5), b"new")])  # the first change checks every chunk
    values[int8_to_str(5)] = b"new"
    assert type(shelf.index) is PositionIndex and shelf.index_end is None
    shelf.save_index()
    shelf.close()
    check_index_used(Shelf(name, readonly=True), name, values)


def test_an_index_of_the_previous_format_is_ignored_then_replaced(tmp_path):
    name = str(tmp_path / "db")
    commit_values(name, {1: 1})
    data = open(name + ".index", "rb").read()
    open(name + ".index", "wb").write(b"durus shelf index 1\n" + data[len(shelf_index.MAGIC):])
    assert read_values(name) == ({1: 1}, None)
    FileStorage(name).close()
    assert open(name + ".index", "rb").read() == data  # the same file, rewritten
    assert read_values(name) == ({1: 1}, os.path.getsize(name))


def test_a_large_index_round_trips(tmp_path):
    name = str(tmp_path / "db")
    values = write_shelf_with_index(name, range(300_000), transactions=3)
    with_index = Shelf(name, readonly=True)
    os.rename(name + ".index", name + ".saved")
    scanned = Shelf(name, readonly=True)
    assert with_index.index_end == os.path.getsize(name) and scanned.index_end is None
    assert list(with_index.iterindex()) == list(scanned.iterindex())
    assert with_index.get_value(int8_to_str(299_999)) == values[int8_to_str(299_999)]
    assert with_index.get_value(int8_to_str(SPARSE_OID)) == values[int8_to_str(SPARSE_OID)]
    with_index.close()
    scanned.close()


def test_closing_or_packing_lets_go_of_the_mapped_index(tmp_path):
    name = str(tmp_path / "db")
    commit_values(name, {i: i for i in range(3)})
    storage = FileStorage(name, readonly=True)
    root = Connection(storage).get_root()
    assert root[1]["v"] == 1
    saved = storage.shelf.index._saved
    iteration = storage.shelf.iterindex()
    next(iteration)  # an iteration under way holds no buffer of the map
    storage.close()
    assert saved._buffer.closed
    with pytest.raises(ValueError):
        storage.load(int8_to_str(0))
    storage = FileStorage(name)
    saved = storage.shelf.index._saved
    Connection(storage).pack()
    assert saved._buffer.closed
    storage.close()


def test_a_change_during_an_iteration_leaves_it_its_positions(tmp_path):
    name = str(tmp_path / "db")
    values = write_shelf_with_index(name)
    shelf = Shelf(name)
    iteration = shelf.iterindex()
    listed = [next(iteration)[0]]
    shelf.append([(int8_to_str(5), b"new")])  # the positions are copied, not unmapped
    listed += [oid for oid, _ in iteration]
    assert sorted(listed) == sorted(values)
    shelf.close()


def test_a_shelf_dropped_unclosed_is_freed_at_once(tmp_path):
    name = str(tmp_path / "db")
    write_shelf_with_index(name)
    shelf = Shelf(name, readonly=True)
    assert isinstance(shelf.index, SavedPositionIndex)
    dropped = weakref.ref(shelf)
    del shelf
    assert dropped() is None


def test_an_index_that_cannot_be_mapped_is_read(tmp_path):
    name = str(tmp_path / "db")
    values = write_shelf_with_index(name)
    with mock.patch.object(shelf_index.mmap, "mmap", side_effect=OSError("no mmap here")):
        shelf = Shelf(name, readonly=True)
    check_index_used(shelf, name, values)


def test_an_index_written_and_read_big_endian_round_trips(tmp_path):
    name = str(tmp_path / "db")
    with mock.patch.object(sys, "byteorder", "big"):
        values = write_shelf_with_index(name)
        shelf = Shelf(name, readonly=True)
        assert shelf.index_end == os.path.getsize(name)
        check_values(shelf, values)
        shelf.close()


# The model: each step is a commit of {key: value}, a pack, a writer killed
# (its storage abandoned, its last commit perhaps cut short) or a clean reopen.
steps = st.lists(st.one_of(
    st.dictionaries(st.integers(0, 20), st.integers(0, 1000), min_size=1, max_size=5),
    st.sampled_from(["pack", "kill", "kill mid-commit", "reopen"])), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_commits_packs_kills_and_reopens_match_a_model(steps):
    with tempfile.TemporaryDirectory() as directory, \
            mock.patch.object(shelf_index, "MIN_SCANNED_BYTES", 0):
        name = os.path.join(directory, "db")
        model = {}
        storage = FileStorage(name)
        connection = Connection(storage)
        for step in steps:
            if isinstance(step, dict):
                root = connection.get_root()
                for key, value in step.items():
                    root[key] = PersistentDict(v=value)
                connection.commit()
                model.update(step)
            elif step == "pack":
                connection.pack()
            else:
                if step == "kill mid-commit":
                    # What a writer killed in its append leaves: the length of a
                    # transaction and the start of its first record.
                    storage.shelf.file.pwrite(b"\0\0\0\0\0\0\1\0" + bytes(10), storage.shelf.end)
                if step == "reopen":
                    storage.close()
                else:
                    storage.shelf.file.close()  # no index written, the mark stays
                assert read_values(name)[0] == model
                storage = FileStorage(name)
                connection = Connection(storage)
            assert {key: item["v"] for key, item in connection.get_root().items()} == model
        storage.close()
        assert read_values(name)[0] == model
