"""Durus's API of durus.file.File (stream-style methods), and errors that
are instances of the classes Durus raised, through real files (durus.shelf's
API: test_shelf.py)."""

import os

import pytest

from durus.connection import Connection
from durus.error import FileLockedError, ReadOnlyError
from durus.file import File
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.utils import ShortRead, int8_to_str


def test_file_stream_methods_read_and_write_at_a_moving_position():
    f = File(prefix="streamtest")
    assert os.path.basename(f.get_name()).startswith("streamtest") and f.is_temporary()
    assert f.tell() == 0
    f.write(b"abcdef")
    assert (f.tell(), len(f), f.stat().st_size) == (6, 6, 6)
    f.seek(1)
    assert f.read(2) == b"bc" and f.tell() == 3
    assert f.read() == b"def" and f.read() == b""
    f.seek(-2, os.SEEK_END)
    assert f.read(10) == b"ef"
    f.seek(2)
    f.seek(1, os.SEEK_CUR)
    f.truncate()
    f.seek_end()
    assert f.tell() == 3 and f.pread(10, 0) == b"abc"
    with pytest.raises(OSError):
        f.seek(-1)
    f.flush()
    f.fsync()
    name = f.get_name()
    f.close()
    assert not os.path.exists(name)
    for call in (f.tell, f.read, f.flush, f.seek_end, lambda: f.write(b"x"), f.truncate):
        with pytest.raises(ValueError, match="closed"):
            call()
    with pytest.raises(OSError, match="closed") as raised:
        len(f)
    assert isinstance(raised.value, ValueError)


def test_file_takes_the_write_lock_at_its_first_write(tmp_path):
    name = str(tmp_path / "locked")
    first, second = File(name), File(name)
    assert not first.has_lock and not second.has_lock
    first.write(b"a")
    assert first.has_lock and not second.has_lock
    with pytest.raises(FileLockedError) as raised:
        second.write(b"b")
    assert isinstance(raised.value, IOError)
    first.release_lock()
    second.write(b"b")
    assert second.has_lock and first.pread(1, 0) == b"b"
    first.close()
    second.close()
    # A FileStorage still refuses a second writer at open.
    storage = FileStorage(str(tmp_path / "db"))
    with pytest.raises(FileLockedError):
        FileStorage(str(tmp_path / "db"))
    storage.close()


def test_file_refusals_are_the_exceptions_durus_raised(tmp_path):
    name = str(tmp_path / "f")
    with pytest.raises(OSError):
        File(name, readonly=True)
    File(name).close()
    readonly = File(name, readonly=True)
    with pytest.raises(ReadOnlyError) as raised:
        readonly.write(b"ok")
    assert isinstance(raised.value, AssertionError) and isinstance(raised.value, PermissionError)
    with pytest.raises(IOError):
        readonly.file.write(b"ok")
    readonly.close()
    temporary = File()
    temporary.rename(temporary.get_name())  # its own name: nothing happens
    with pytest.raises(AssertionError):
        temporary.rename(name + ".renamed")
    assert os.path.exists(temporary.get_name())
    temporary.close()
    with pytest.raises(TypeError):
        File(name, prefix="only-for-temporary-files")


def test_file_storage_errors_are_instances_of_what_durus_raised(tmp_path):
    name = str(tmp_path / "db")
    for content in (b"b", b"bogusbogus"):
        with open(name, "wb") as f:
            f.write(content)
        with pytest.raises(AssertionError):
            FileStorage(name)
    os.unlink(name)
    connection = Connection(FileStorage(name))
    connection.get_root()["x"] = Persistent()
    connection.commit()
    connection.get_storage().close()
    size = os.path.getsize(name)
    with open(name, "ab") as f:
        f.write(b"b")
    with pytest.raises(ShortRead):
        FileStorage(name, readonly=True)
    FileStorage(name, repair=True).close()
    assert os.path.getsize(name) == size
    readonly = Connection(FileStorage(name, readonly=True))
    readonly.get_root()["y"] = 1
    with pytest.raises(AssertionError):
        readonly.commit()
    storage = readonly.get_storage()
    with pytest.raises(KeyError):
        storage.load(int8_to_str(1000))
    storage.close()
    with pytest.raises(ValueError):
        storage.load(int8_to_str(0))


def test_pack_of_a_closed_storage_touches_nothing(tmp_path):
    """Durus 4.3 made an empty <name>.pack before it found the storage closed
    (its own test removes that file: an exception in the Durus suite); here
    a closed storage refuses everything, with no side effect."""
    name = str(tmp_path / "db")
    storage = FileStorage(name)
    Connection(storage).commit()
    storage.pack()
    storage.close()
    before = sorted(os.listdir(tmp_path))
    assert name.rpartition("/")[2] + ".prepack" in before
    with pytest.raises(ValueError, match="closed"):
        storage.pack()
    assert sorted(os.listdir(tmp_path)) == before
    assert len(list(FileStorage(name, readonly=True).gen_oid_record())) == 1


@pytest.mark.parametrize("storage_class", ["FileStorage", "FileStorage2"])
def test_a_storage_opens_on_a_file_object_as_durus_allowed(tmp_path, storage_class):
    from durus import file_storage, file_storage2
    cls = getattr(file_storage2 if storage_class == "FileStorage2" else file_storage,
                  storage_class)
    path = str(tmp_path / "db")
    storage = cls(File(path))
    connection = Connection(storage)
    connection.get_root()["x"] = 1
    connection.commit()
    storage.close()
    reader = cls(File(path, readonly=True))
    assert reader.is_readonly() and Connection(reader).get_root()["x"] == 1
    reader.close()


def test_read_with_a_negative_count_reads_all_that_is_left(tmp_path):
    f = File(str(tmp_path / "f"))
    f.write(b"abcdef")
    f.seek(2)
    assert f.read(-1) == b"cdef"
    f.close()


@pytest.mark.parametrize("content", [b"SHE", b"SHELF-1", b"DF", b"DFS20"])
def test_durus_repair_recognises_a_file_cut_inside_its_magic(tmp_path, content):
    from durus.__main__ import get_storage
    path = tmp_path / "db"
    path.write_bytes(content)
    storage = get_storage(str(path), repair=True)
    assert type(storage).__name__ == ("FileStorage" if content.startswith(b"S") else "FileStorage2")
    storage.close()
