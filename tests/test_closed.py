"""Every operation on a closed storage (of every kind), shelf or file raises ValueError and
touches no descriptor. A closed FileStorage once kept writing through its
old descriptor number, into whatever file had it next (issue 10, defect 2).

Each test lists every public method of the class: a method added later
without a closed check fails here until it is given arguments in
closed_checks.ARGUMENTS.
"""

import os
import random
import sys
import threading
import time

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.file import File
from durus.file_storage import FileStorage, TempFileStorage
from durus.shelf import Shelf
from durus.storage import MemoryStorage

from closed_checks import ROOT_OID, SHELF_ARGUMENTS, check_every_method_refused


def make_file_storage(tmp_path):
    storage = FileStorage(str(tmp_path / "db.durus"))
    Connection(storage).commit()
    return storage


def make_readonly_file_storage(tmp_path):
    make_file_storage(tmp_path).close()
    return FileStorage(str(tmp_path / "db.durus"), readonly=True)


@pytest.mark.parametrize("make", [make_file_storage, make_readonly_file_storage,
                                  lambda tmp_path: TempFileStorage(),
                                  lambda tmp_path: MemoryStorage()],
                         ids=["file", "read-only file", "temporary file", "memory"])
def test_local_storages_refuse_every_operation_once_closed(make, tmp_path, descriptor_calls):
    storage = make(tmp_path)
    Connection(storage)  # in use: it has a root
    storage.close()
    check_every_method_refused(storage, descriptor_calls)


def test_client_storage_refuses_every_operation_once_closed(servers, tmp_path,
                                                            descriptor_calls):
    server = servers.ours("--file", str(tmp_path / "db.durus"))
    storage = ClientStorage(address=server.address)
    Connection(storage).get_root()["x"] = 1
    storage.close()
    check_every_method_refused(storage, descriptor_calls)
    assert dict(Connection(ClientStorage(address=server.address)).get_root().items()) == {}


def test_shelf_and_file_refuse_every_operation_once_closed(tmp_path, descriptor_calls):
    storage = make_file_storage(tmp_path)
    shelf = storage.shelf
    storage.close()
    check_every_method_refused(shelf, descriptor_calls, SHELF_ARGUMENTS)
    check_every_method_refused(shelf.file, descriptor_calls)


def test_a_closed_file_storage_never_writes_into_the_file_that_took_its_descriptor(tmp_path):
    """The reproduction from the issue: b.durus read {'who': 'a', 'late': ...}."""
    a = Connection(FileStorage(str(tmp_path / "a.durus")))
    a.get_root()["who"] = "a"
    a.commit()
    a.get_storage().close()
    b = Connection(FileStorage(str(tmp_path / "b.durus")))
    b.get_root()["who"] = "b"
    b.commit()
    b_bytes = (tmp_path / "b.durus").read_bytes()
    a.get_root()["late"] = "x" * 100
    with pytest.raises(ValueError, match="closed"):
        a.commit()
    assert (tmp_path / "b.durus").read_bytes() == b_bytes
    b.get_storage().close()
    assert dict(Connection(FileStorage(str(tmp_path / "b.durus"))).get_root().items()) == \
        {"who": "b"}


def test_a_closed_storage_keeps_its_name_for_messages(tmp_path):
    storage = make_file_storage(tmp_path)
    storage.close()
    assert storage.get_filename() == str(tmp_path / "db.durus")
    with pytest.raises(ValueError, match=r"closed storage: FileStorage\('.*db.durus'\)"):
        storage.begin()
    with pytest.raises(ValueError, match=r"closed shelf \('.*db.durus'\)"):
        storage.load(ROOT_OID)
    shelf_file = File(str(tmp_path / "other.durus"))
    shelf_file.close()
    with pytest.raises(ValueError, match="closed durus file .*other.durus"):
        Shelf(shelf_file)


def test_close_racing_a_commit_in_another_thread_writes_nowhere_else(tmp_path):
    """A thread commits while the main thread closes the storage and opens a
    file, which may be given the descriptor number the storage had: a call
    under way keeps the descriptor until it ends, so nothing lands there."""
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns between any two steps
    try:
        for round_number in range(60):
            path = tmp_path / ("a%d.durus" % round_number)
            storage = FileStorage(str(path), fsync=False)
            connection = Connection(storage)
            errors = []

            def commit_until_closed():
                i = 0
                while True:
                    connection.get_root()["x"] = b"A" * 5000 + str(i).encode()
                    i += 1
                    try:
                        connection.commit()
                    except ValueError as error:
                        errors.append(error)
                        return

            thread = threading.Thread(target=commit_until_closed)
            thread.start()
            time.sleep(random.uniform(0, 0.005))
            storage.close()
            victim = tmp_path / ("victim%d.bin" % round_number)
            fd = os.open(victim, os.O_RDWR | os.O_CREAT, 0o644)
            thread.join(30)
            os.close(fd)
            assert victim.stat().st_size == 0
            assert "closed" in str(errors[0])
            reopened = FileStorage(str(path))  # whole, and its lock released
            Connection(reopened)
            reopened.close()
    finally:
        sys.setswitchinterval(switch_interval)


def test_close_waits_for_a_commit_under_way_in_another_thread(tmp_path):
    """close() came during a commit's write, whose fsync then found the file
    closed: the commit raised, but it was whole in the file, and counted."""
    for round_number in range(10):
        path = tmp_path / ("db%d.durus" % round_number)
        storage = FileStorage(str(path))
        connection = Connection(storage)
        connection.get_root()["n"] = 0
        connection.commit()
        outcome = []

        def commit():
            connection.get_root()["n"] = 1
            connection.get_root()["pad"] = os.urandom(20_000_000)  # a long write
            try:
                connection.commit()
                outcome.append("committed")
            except ValueError:
                outcome.append("refused")

        thread = threading.Thread(target=commit)
        thread.start()
        time.sleep(random.uniform(0, 0.05))
        storage.close()
        thread.join(60)
        reopened = FileStorage(str(path))
        n = Connection(reopened).get_root()["n"]
        reopened.close()
        assert (outcome[0], n) in (("committed", 1), ("refused", 0))


def storage_with_items(path, count: int) -> FileStorage:
    """A FileStorage whose root holds count items of 100 kB: a pack of it takes steps."""
    storage = FileStorage(str(path))
    connection = Connection(storage)
    connection.get_root()["items"] = [os.urandom(100_000) for _ in range(count)]
    connection.commit()
    return storage


def test_close_while_another_thread_packs(tmp_path):
    path = tmp_path / "db.durus"
    storage = storage_with_items(path, 100)
    errors = []
    packer = storage.get_packer()
    started = threading.Event()

    def pack():
        try:
            for _ in packer:
                started.set()
                time.sleep(0.01)
        except ValueError as error:
            errors.append(error)

    thread = threading.Thread(target=pack)
    thread.start()
    started.wait(10)
    storage.close()
    thread.join(30)
    # Ended by close() between two steps, or failing (ValueError) at the next one.
    assert storage.closed and len(errors) <= 1
    assert not os.path.exists(str(path) + ".pack")
    again = FileStorage(str(path))  # not locked
    assert len(Connection(again).get_root()["items"]) == 100
    again.close()


def test_closing_during_a_pack_removes_the_unfinished_pack_file(tmp_path):
    path = tmp_path / "db.durus"
    storage = storage_with_items(path, 30)
    packer = storage.get_packer()
    next(packer)
    assert os.path.exists(str(path) + ".pack")
    storage.close()
    assert not os.path.exists(str(path) + ".pack")
    with pytest.raises(StopIteration):
        next(packer)
    again = FileStorage(str(path))
    again.pack()  # the pack file is free: no FileLockedError
    assert len(Connection(again).get_root()["items"]) == 30
    again.close()


def test_relational_storages_refuse_every_operation_once_closed(shared_database,
                                                                descriptor_calls):
    storage = shared_database()
    Connection(storage).commit()
    storage.close()
    check_every_method_refused(storage, descriptor_calls)
