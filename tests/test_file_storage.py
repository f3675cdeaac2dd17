"""FileStorage on real files: durability, torn tails, repair, locking, pack
(the shelf format itself: test_shelf.py)."""

import errno
import gc
import os
import random
import stat

import pytest

from durus.connection import Connection
from durus.error import CorruptFileError, DurusKeyError, FileLockedError, ReadOnlyError
from durus.file import WriterMark
from durus.file_storage import FileStorage, TempFileStorage
from durus.serialize import pack_record
from durus.storage import get_census, get_reference_index, gen_oid_class, gen_referring_oid_record
from durus.utils import int8_to_str

from storage_files import Counter, committed_keys, make_file, open_with_counters


def test_records_round_trip_and_missing_oid(tmp_path):
    storage = FileStorage(str(tmp_path / "r.durus"))
    oid = storage.new_oid()
    record = pack_record(oid, b"data", b"")
    storage.begin()
    storage.store(oid, record)
    storage.end()
    assert storage.load(oid) == record
    with pytest.raises(DurusKeyError):
        storage.load(int8_to_str(999))
    with pytest.raises(KeyError):  # DurusKeyError is a KeyError
        storage.load(int8_to_str(998))


def test_store_refuses_unallocated_oid_and_malformed_record(tmp_path):
    storage = FileStorage(str(tmp_path / "s.durus"))
    storage.begin()
    with pytest.raises(ValueError, match="never allocated"):
        storage.store(int8_to_str(77), pack_record(int8_to_str(77), b"x", b""))
    oid = storage.new_oid()
    with pytest.raises(ValueError, match="malformed"):
        storage.store(oid, b"short")


def test_new_oids_are_unique(tmp_path):
    storage = FileStorage(str(tmp_path / "o.durus"))
    oids = [storage.new_oid() for _ in range(1000)]
    assert len(set(oids)) == 1000


def test_each_commit_is_fsynced_once(tmp_path, monkeypatch):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    storage = FileStorage(str(tmp_path / "f.durus"))
    connection = Connection(storage)
    calls.clear()
    for i in range(5):
        connection.get_root()[i] = i
        connection.commit()
    assert len(calls) == 5


def test_fsync_can_be_turned_off(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: calls.append(fd))
    storage = FileStorage(str(tmp_path / "g.durus"), fsync=False)
    connection = Connection(storage)
    calls.clear()
    connection.get_root()["x"] = 1
    connection.commit()
    assert calls == []


def cuts_of_last_transaction(path):
    """Write a file of three commits; yield (cut, start) with the file cut at
    each byte inside its last transaction, which starts at start."""
    boundaries = make_file(path, commits=3)
    original = path.read_bytes()
    start, end = boundaries[-2], boundaries[-1]
    for cut in range(start + 1, end):
        path.write_bytes(original[:cut])
        yield cut, start


def test_cut_at_every_offset_of_last_transaction(tmp_path):
    path = tmp_path / "cut.durus"
    for _, start in cuts_of_last_transaction(path):
        with pytest.raises(CorruptFileError, match="repair"):
            FileStorage(str(path))
        assert committed_keys(path, repair=True) == ["c0", "c1"]
        assert os.path.getsize(path) == start
    assert committed_keys(path) == ["c0", "c1"]


def test_damaged_bytes_inside_last_transaction_are_detected(tmp_path):
    path = tmp_path / "dmg.durus"
    boundaries = make_file(path, commits=3)
    original = path.read_bytes()
    start, end = boundaries[-2], boundaries[-1]
    rng = random.Random(7)
    for _ in range(60):
        a = rng.randrange(start, end)
        b = rng.randrange(a + 1, end + 1)
        filler = bytes(b - a) if rng.random() < 0.5 else rng.randbytes(b - a)
        damaged = original[:a] + filler + original[b:]
        if damaged == original:
            continue
        path.write_bytes(damaged)
        with pytest.raises(CorruptFileError):
            FileStorage(str(path))
        assert committed_keys(path, repair=True) == ["c0", "c1"]


def test_zero_length_placeholder_followed_by_records_is_detected(tmp_path):
    """Durus writes a zero length first: a crash leaves it before the records."""
    path = tmp_path / "ph.durus"
    boundaries = make_file(path, commits=2)
    good = path.read_bytes()
    oid = int8_to_str(1)
    record = pack_record(oid, b"\x80\x02}q\x00.", b"")
    torn = good + int8_to_str(0) + int8_to_str(8 + len(record)) + oid + record
    path.write_bytes(torn)
    with pytest.raises(CorruptFileError):
        FileStorage(str(path))
    assert committed_keys(path, repair=True) == ["c0", "c1"]
    assert os.path.getsize(path) == boundaries[-1]


def test_empty_transactions_written_by_durus_are_valid(tmp_path):
    path = tmp_path / "empty.durus"
    make_file(path, commits=1)
    with open(path, "ab") as f:
        f.write(int8_to_str(0) * 3)
    make_more = FileStorage(str(path))
    connection = Connection(make_more)
    connection.get_root()["after"] = 1
    connection.commit()
    make_more.close()
    assert committed_keys(path) == ["after", "c0"]


def test_not_a_durus_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not a database\n" * 10)
    with pytest.raises(CorruptFileError, match="not a durus file"):
        FileStorage(str(path))
    with pytest.raises(CorruptFileError, match="not a durus file"):
        FileStorage(str(path), readonly=True)
    assert path.read_bytes().startswith(b"hello")  # untouched


def test_writer_mark_is_kept_while_a_writer_has_the_file_open(tmp_path):
    path = tmp_path / "marked.durus"
    mark = tmp_path / "marked.durus.writer"
    writer = FileStorage(str(path))
    assert ("pid %d " % os.getpid()).encode() in mark.read_bytes()
    reader = FileStorage(str(path), readonly=True)
    reader.close()
    assert mark.exists()  # readers leave it alone
    writer.close()
    assert not mark.exists()
    writer.close()  # a second close changes nothing
    FileStorage(str(path), readonly=True).close()
    assert not mark.exists()
    temporary = TempFileStorage()
    assert not os.path.exists(temporary.get_filename() + ".writer")
    temporary.close()


def test_writer_without_a_mark_where_none_can_be_made(tmp_path, caplog):
    """Like a directory the writer may not create files in: it works, and says
    what that costs."""
    path = tmp_path / "nomark.durus"
    (tmp_path / "nomark.durus.writer").symlink_to(tmp_path / "missing" / "mark")
    storage = FileStorage(str(path))
    assert "nomark.durus.writer" in caplog.text and "will need repair" in caplog.text
    connection = Connection(storage)
    connection.get_root()["kept"] = 1
    connection.commit()
    storage.close()
    assert committed_keys(path, readonly=True) == ["kept"]
    path.write_bytes(path.read_bytes()[:-5])  # a torn tail, with no mark to explain it
    with pytest.raises(CorruptFileError, match="repair"):
        FileStorage(str(path))


def test_writer_drops_a_last_commit_cut_short_when_marked(tmp_path, caplog):
    path = tmp_path / "cut.durus"
    for cut, start in cuts_of_last_transaction(path):
        WriterMark(str(path)).place()  # as a writer killed with it open leaves
        assert committed_keys(path, readonly=True) == ["c0", "c1"]
        assert os.path.getsize(path) == cut  # a reader changes nothing
        caplog.clear()
        assert committed_keys(path) == ["c0", "c1"]
        assert os.path.getsize(path) == start
        assert "dropped %d bytes at byte %d" % (cut - start, start) in caplog.text
        assert not path.with_name("cut.durus.writer").exists()


def test_marked_file_still_refuses_damage(tmp_path):
    """The mark explains only a last transaction that runs past the end of
    the file: not a whole one that fails its checksum, nor an earlier one."""
    path = tmp_path / "damaged.durus"
    boundaries = make_file(path, commits=3)
    original = path.read_bytes()
    last, earlier = boundaries[-2], boundaries[-3]
    for where in (last, earlier):
        damaged = bytearray(original)
        damaged[where + 40] ^= 0x01
        path.write_bytes(damaged)
        WriterMark(str(path)).place()
        with pytest.raises(CorruptFileError, match="transaction at byte %d" % where):
            FileStorage(str(path))
        with pytest.raises(CorruptFileError, match="transaction at byte %d" % where):
            FileStorage(str(path), readonly=True)
        assert path.with_name("damaged.durus.writer").exists()  # a failed open leaves it
    cut_inside_earlier = bytearray(original[:last + 100])
    cut_inside_earlier[earlier + 40] ^= 0x01  # and a cut-off last one after it
    path.write_bytes(cut_inside_earlier)
    with pytest.raises(CorruptFileError, match="transaction at byte %d" % earlier):
        FileStorage(str(path))
    garbage = original[:last] + int8_to_str(10 ** 6) + random.Random(3).randbytes(200)
    path.write_bytes(garbage)  # a length running past the end, then no records
    with pytest.raises(CorruptFileError, match="transaction at byte %d" % last):
        FileStorage(str(path))


def test_failed_open_leaves_no_mark_of_its_own(tmp_path):
    path = tmp_path / "refused.durus"
    make_file(path, commits=2)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CorruptFileError):
        FileStorage(str(path))
    assert not path.with_name("refused.durus.writer").exists()
    assert committed_keys(path, repair=True) == ["c0"]


def test_marked_file_whose_creation_was_cut_short_is_created(tmp_path):
    path = tmp_path / "new.durus"
    make_file(path, commits=1)
    path.write_bytes(path.read_bytes()[:20])
    WriterMark(str(path)).place()
    assert committed_keys(path) == []


def test_second_writer_is_refused_with_the_file_name(tmp_path):
    path = tmp_path / "locked.durus"
    first = FileStorage(str(path))
    with pytest.raises(FileLockedError, match="locked.durus") as refused:
        FileStorage(str(path))
    assert isinstance(refused.value, BlockingIOError)  # what Durus raised
    assert refused.value.errno == errno.EAGAIN
    reader = FileStorage(str(path), readonly=True)  # readers take no lock
    reader.close()
    first.close()
    FileStorage(str(path)).close()


def test_readonly_storage_refuses_changes(tmp_path):
    path = tmp_path / "ro.durus"
    make_file(path, commits=1)
    storage = FileStorage(str(path), readonly=True)
    connection = Connection(storage)
    assert connection.get_root()["c0"].n == 0
    connection.get_root()["new"] = 1
    with pytest.raises(ReadOnlyError):
        connection.commit()
    with pytest.raises(FileNotFoundError):
        FileStorage(str(tmp_path / "missing.durus"), readonly=True)
    with pytest.raises(ValueError):
        FileStorage(str(path), readonly=True, repair=True)


def test_temp_file_storage_is_removed_on_close():
    storage = TempFileStorage()
    name = storage.get_filename()
    connection = Connection(storage)
    connection.get_root()["x"] = 1
    connection.commit()
    assert os.path.exists(name)
    storage.close()
    assert not os.path.exists(name)


def test_failed_write_leaves_file_valid_and_storage_usable(tmp_path, monkeypatch):
    path = tmp_path / "enospc.durus"
    storage = FileStorage(str(path))
    connection = Connection(storage)
    connection.get_root()["before"] = 1
    connection.commit()
    real_pwrite = os.pwrite

    def short_then_fail(fd, data, position):
        real_pwrite(fd, bytes(data[:10]), position)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", short_then_fail)
    connection.get_root()["failed"] = 2
    with pytest.raises(OSError, match="No space"):
        connection.commit()
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert committed_keys(path, readonly=True) == ["before"]
    connection.commit()  # the change is still pending; retry after space returns
    storage.close()
    assert committed_keys(path) == ["before", "failed"]


def test_pack_keeps_commits_made_during_the_pack(tmp_path):
    path = tmp_path / "pack.durus"
    storage, connection, root = open_with_counters(path, 300)
    for i in range(0, 300, 2):
        del root[i]
    connection.commit()
    packer = storage.get_packer()
    next(packer)
    root["during"] = Counter("during")
    root[1].n = "changed during pack"
    connection.commit()
    for _ in packer:
        pass
    assert os.path.exists(str(path) + ".prepack")
    root["after"] = Counter("after")
    connection.commit()
    storage.close()
    reopened = Connection(FileStorage(str(path))).get_root()
    assert reopened["during"].n == "during" and reopened["after"].n == "after"
    assert reopened[1].n == "changed during pack"
    assert sorted(k for k in reopened.keys() if isinstance(k, int)) == list(range(1, 300, 2))
    assert os.path.getsize(path) < os.path.getsize(str(path) + ".prepack")


def test_a_pack_that_cannot_take_the_files_place_leaves_the_database_where_it_was(
        tmp_path, monkeypatch):
    """Without hard links the old file is renamed to .prepack first; if the
    new one then cannot be renamed into place, the old one is put back."""
    path = tmp_path / "pack.durus"
    storage, connection, root = open_with_counters(path, 10)
    del root[3]
    connection.commit()

    def no_hard_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    real_replace = os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".pack"):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "link", no_hard_links)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output error"):
        storage.pack()
    monkeypatch.undo()
    assert storage.sync() == []  # nothing was removed
    assert not os.path.exists(str(path) + ".pack")
    root[10] = Counter(10)
    connection.commit()
    storage.close()
    assert committed_keys(path) == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]


def test_a_pack_whose_directory_fsync_fails_keeps_the_database(tmp_path, monkeypatch):
    """Some file systems refuse fsync on a directory: the pack's file is in
    place by then, and its cleanup used to delete it, the database."""
    path = tmp_path / "pack.durus"
    storage, connection, root = open_with_counters(path, 10)
    real_fsync = os.fsync

    def no_directory_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_directory_fsync)
    with pytest.raises(OSError, match="Invalid argument"):
        storage.pack()
    monkeypatch.undo()
    assert os.path.exists(path)
    root[10] = Counter(10)  # goes into the file at path: the packed one
    connection.commit()
    storage.pack()
    storage.close()
    assert committed_keys(path) == list(range(11))


def test_an_abandoned_packer_does_not_stop_later_packs(tmp_path):
    path = tmp_path / "pack.durus"
    storage, connection, root = open_with_counters(path, 10)
    packer = storage.get_packer()
    next(packer)
    del packer  # its cleanup runs when it is collected
    gc.collect()
    assert not os.path.exists(str(path) + ".pack")
    removed = root[3]._p_oid
    del root[3]
    connection.commit()
    storage.pack()
    assert storage.sync() == [removed]  # the pack ran
    storage.close()
    assert committed_keys(path) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert os.path.exists(str(path) + ".prepack")


def test_pack_ignores_a_stale_pack_file(tmp_path):
    path = tmp_path / "stale.durus"
    make_file(path, commits=2)
    (tmp_path / "stale.durus.pack").write_bytes(b"left over from a crash")
    storage = FileStorage(str(path))
    storage.pack()
    storage.close()
    assert committed_keys(path) == ["c0", "c1"]


def test_packed_file_reuses_freed_oids(tmp_path):
    storage, connection, root = open_with_counters(tmp_path / "holes.durus", 10)
    freed = {root[i]._p_oid for i in (2, 5)}
    del root[2], root[5]
    connection.commit()
    connection.pack()
    connection.abort()
    new_oids = {storage.new_oid(), storage.new_oid()}
    assert new_oids == freed


def test_storage_tools(tmp_path):
    storage = FileStorage(str(tmp_path / "tools.durus"))
    connection = Connection(storage)
    root = connection.get_root()
    root["a"], root["b"] = Counter(1), Counter(2)
    connection.commit()
    census = get_census(storage)
    assert census == {b"PersistentDict": 1, b"Counter": 2}
    assert [name for _, name in gen_oid_class(storage, "Counter")] == [b"Counter", b"Counter"]
    assert len(list(gen_oid_class(storage, b"Counter", "PersistentDict"))) == 3
    index = get_reference_index(storage)
    assert index[root["a"]._p_oid] == [root._p_oid]
    assert [oid for oid, _ in gen_referring_oid_record(storage, root["b"]._p_oid)] == [root._p_oid]
