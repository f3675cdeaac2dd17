"""Disk full and I/O errors: a commit (or pack) that cannot be written fails
with a clear exception, leaves the file valid with every earlier transaction,
and the storage works again once space returns.

With root, a small tmpfs is mounted and really filled; otherwise those tests
are skipped, and the injected errors (which cannot be produced for real
here: EIO from a write, a sync or a truncate) still run.
"""

import errno
import os
from pathlib import Path

import pytest

import bank
from server_processes import connect
from durus.connection import Connection
from durus.file_storage import FileStorage


def transfer_until_full(connection: Connection) -> tuple[int, OSError]:
    """Commit transfers until one fails; return how many succeeded and the error."""
    for committed in range(1000):
        bank.apply_transfer(connection.get_root(), 0)
        try:
            connection.commit()
        except OSError as exc:
            return committed, exc
    raise AssertionError("the disk never filled up")


def test_file_storage_on_a_full_disk(disk):
    path = disk.directory / "bank.durus"
    bank.create_file(path)
    storage = FileStorage(str(path))
    connection = Connection(storage)
    disk.fill()
    committed, error = transfer_until_full(connection)
    assert error.errno == errno.ENOSPC
    assert bank.check_file(path) == [committed]  # valid, with every earlier transfer
    disk.fill()  # what the failed commit gave back
    with pytest.raises(OSError) as packing:
        storage.pack()
    assert packing.value.errno == errno.ENOSPC
    # No partial .pack; the writer's mark stays while the storage is open.
    assert sorted(os.listdir(disk.directory)) == ["bank.durus", "bank.durus.writer", "filler"]
    disk.free()
    connection.commit()  # the failed transfer, still pending, now goes through
    storage.pack()
    storage.close()
    assert bank.check_file(path) == [committed + 1]


def test_writer_opens_on_a_full_disk(disk):
    """The writer's mark needs no free space (its note is left out)."""
    path = disk.directory / "bank.durus"
    bank.create_file(path)
    disk.fill()
    storage = FileStorage(str(path))
    assert Path(storage.get_filename() + ".writer").read_bytes() == b""
    assert bank.check_snapshot(Connection(storage).get_root()) == [0]
    storage.close()
    assert sorted(os.listdir(disk.directory)) == ["bank.durus", "filler"]


def test_server_on_a_full_disk(servers, disk):
    path = disk.directory / "bank.durus"
    bank.create_file(path)
    server = servers.ours("--file", str(path), "--gcbytes", "1000000")
    connection = connect(server)
    disk.fill()
    committed, error = transfer_until_full(connection)
    assert isinstance(error, ConnectionError)  # the server drops the client and says why:
    server.wait_for_log(r"dropped: request failed: OSError\(28, 'No space left on device'\)")
    auditor = connect(server)
    assert bank.check_snapshot(auditor.get_root()) == [committed]  # still serving
    disk.fill()  # what the failed commit gave back
    auditor.get_storage().pack()
    server.wait_for_log("Pack failed")
    assert not path.with_name("bank.durus.pack").exists()
    disk.free()
    writer = connect(server)
    bank.apply_transfer(writer.get_root(), 0)
    writer.commit()
    writer.get_storage().pack()
    server.wait_for_log("Pack finished")
    assert server.quit() == 0
    assert bank.check_file(path) == [committed + 1]


class Fault:
    """While armed, os.<name> fails with errno code on files whose path ends
    with suffix; a failing pwrite first writes `partial` bytes, as a write
    that runs out of space part way does."""

    def __init__(self, monkeypatch, name: str, code: int, suffix: str = ".durus",
                 partial: int = 0):
        real = getattr(os, name)
        self.armed = True

        def failing(fd, *args):
            if self.armed and os.readlink("/proc/self/fd/%d" % fd).endswith(suffix):
                if partial:
                    real(fd, args[0][:partial], args[1])
                raise OSError(code, os.strerror(code))
            return real(fd, *args)
        monkeypatch.setattr(os, name, failing)


FAULTS = {"pwrite ENOSPC": ("pwrite", errno.ENOSPC, 100),
          "pwrite EIO": ("pwrite", errno.EIO, 0),
          "fdatasync EIO": ("fdatasync", errno.EIO, 0)}


@pytest.mark.parametrize("fault", FAULTS)
def test_injected_error_in_a_commit(fault, tmp_path, monkeypatch):
    name, code, partial = FAULTS[fault]
    path = tmp_path / "bank.durus"
    bank.create_file(path)
    storage = FileStorage(str(path))
    connection = Connection(storage)
    for _ in range(3):
        bank.apply_transfer(connection.get_root(), 0)
        connection.commit()
    injected = Fault(monkeypatch, name, code, partial=partial)
    bank.apply_transfer(connection.get_root(), 0)
    with pytest.raises(OSError) as failed:
        connection.commit()
    assert failed.value.errno == code
    assert bank.check_file(path) == [3]
    injected.armed = False
    connection.commit()
    bank.apply_transfer(connection.get_root(), 0)
    connection.commit()
    storage.close()
    assert bank.check_file(path) == [5]


def fail_a_commit_and_its_cut_back(path, monkeypatch) -> Connection:
    """A bank of two clients with two transfers, on which a commit failed part
    way and so did removing what it wrote; return its connection."""
    bank.create_file(path, clients=2)
    connection = Connection(FileStorage(str(path)))
    for _ in range(2):
        bank.apply_transfer(connection.get_root(), 0)
        connection.commit()
    writes = Fault(monkeypatch, "pwrite", errno.EIO, partial=8000)
    cuts = Fault(monkeypatch, "ftruncate", errno.EIO)
    bank.apply_transfer(connection.get_root(), 0)  # this one carries a 15 kB memo
    with pytest.raises(OSError):
        connection.commit()
    writes.armed = cuts.armed = False
    connection.abort()
    return connection


def test_failed_cut_back_is_redone_before_the_next_commit(tmp_path, monkeypatch):
    """A later, shorter commit must not leave the rest of the failed one after itself."""
    path = tmp_path / "bank.durus"
    connection = fail_a_commit_and_its_cut_back(path, monkeypatch)
    storage = connection.get_storage()
    bank.apply_transfer(connection.get_root(), 1)  # a short one
    connection.commit()
    storage.close()
    assert bank.check_file(path) == [2, 1]


def test_failed_cut_back_left_at_close_is_dropped_by_the_next_writer(tmp_path, monkeypatch):
    path = tmp_path / "bank.durus"
    fail_a_commit_and_its_cut_back(path, monkeypatch).get_storage().close()
    assert path.with_name("bank.durus.writer").exists()  # the file does not end cleanly
    assert bank.check_file(path) == [2, 0]
    FileStorage(str(path)).close()
    assert not path.with_name("bank.durus.writer").exists()
    assert bank.check_file(path) == [2, 0]  # with no mark, so nothing torn is left


def test_injected_error_in_a_pack(tmp_path, monkeypatch):
    path = tmp_path / "bank.durus"
    bank.create_file(path)
    storage = FileStorage(str(path))
    connection = Connection(storage)
    bank.apply_transfer(connection.get_root(), 0)
    connection.commit()
    injected = Fault(monkeypatch, "pwrite", errno.ENOSPC, suffix=".pack", partial=100)
    with pytest.raises(OSError):
        storage.pack()
    assert sorted(os.listdir(tmp_path)) == ["bank.durus", "bank.durus.writer"]  # no .pack
    bank.apply_transfer(connection.get_root(), 0)
    connection.commit()
    injected.armed = False
    storage.pack()
    storage.close()
    assert bank.check_file(path) == [2]
