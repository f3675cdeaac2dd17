"""Power loss: torn and damaged tails are refused or repaired, never read as
wrong data; and the writes and syncs durus issues are ordered so that what
commit() (or a server's 'O') promised survives a power loss.

Copies of a real bank file are cut at every byte offset inside their last
transactions and have ranges overwritten with zeros or random bytes: as
copies, and with the mark a writer leaves when it is killed with the file
open. The oracle is exact: every record of every oid at each transaction
boundary.
"""

import random

import pytest

import bank
from server_processes import connect
from durus.connection import Connection
from durus.error import CorruptFileError
from durus.file import WriterMark
from durus.file_storage import FileStorage
from storage_operations import OPERATIONS
from syscall_trace import Call, Trace, check_durable_order, check_marked_writes


LAST = 3  # transactions damaged at every offset


def records(path, **options) -> dict:
    """{oid: record} of every record in the file."""
    storage = FileStorage(str(path), **options)
    try:
        return dict(storage.gen_oid_record())
    finally:
        storage.close()


@pytest.fixture
def history(tmp_path):
    """(file bytes, {transaction boundary: records at that boundary}) of a
    bank file, for its last LAST + 1 boundaries."""
    path = tmp_path / "history.durus"
    bank.create_file(path)
    storage = FileStorage(str(path))
    connection = Connection(storage)
    states = {}
    for _ in range(12):
        bank.apply_transfer(connection.get_root(), 0)
        connection.commit()
        states[path.stat().st_size] = dict(storage.gen_oid_record())
    storage.close()
    boundaries = sorted(states)[-(LAST + 1):]
    return path.read_bytes(), {size: states[size] for size in boundaries}


def boundary_before(states: dict, position: int) -> int:
    """The last transaction boundary at or before position."""
    return max(size for size in states if size <= position)


def test_cut_at_every_offset_of_the_last_transactions(history, tmp_path):
    data, states = history
    path = tmp_path / "cut.durus"
    first = min(states)
    for cut in range(first, len(data) + 1):
        path.write_bytes(data[:cut])
        if cut in states:
            assert records(path) == states[cut]
            continue
        with pytest.raises(CorruptFileError, match=r"transaction at byte %d .*repair=True"
                           % boundary_before(states, cut)):
            FileStorage(str(path))
        assert path.stat().st_size == cut  # refused, untouched
        assert records(path, repair=True) == states[boundary_before(states, cut)]
        assert path.stat().st_size == boundary_before(states, cut)


def test_cut_at_every_offset_with_the_writer_mark(history, tmp_path):
    """A writer killed in the middle of a commit: readers leave that commit
    out, and the next writer cuts it off, without repair."""
    data, states = history
    path = tmp_path / "cut.durus"
    for cut in range(min(states), len(data) + 1):
        path.write_bytes(data[:cut])
        WriterMark(str(path)).place()  # as a writer killed with it open leaves
        good = boundary_before(states, cut)
        assert records(path, readonly=True) == states[good]
        assert path.stat().st_size == cut
        assert records(path) == states[good]
        assert path.stat().st_size == good


def test_reader_leaves_out_a_commit_being_written(history, tmp_path):
    """What a reader opening the file finds while a writer's write is half done."""
    data, states = history
    path = tmp_path / "live.durus"
    last, before = sorted(states)[-1], sorted(states)[-2]
    path.write_bytes(data[:before])
    writer = FileStorage(str(path))
    with open(path, "r+b") as f:
        for cut in range(before + 1, last, 97):
            f.seek(before)
            f.write(data[before:cut])
            f.flush()
            assert records(path, readonly=True) == states[before]
        f.truncate(before)
    writer.close()


def damage(data: bytes, rng: random.Random, start: int) -> tuple[bytes, int]:
    """Overwrite a random range after start with zeros, 0xff or random bytes
    (sometimes up to the end); return the damaged bytes and the first changed offset."""
    a = rng.randrange(start, len(data))
    b = len(data) if rng.random() < 0.3 else rng.randrange(a + 1, min(len(data), a + 600) + 1)
    filler = rng.choice([bytes(b - a), b"\xff" * (b - a), rng.randbytes(b - a)])
    damaged = data[:a] + filler + data[b:]
    first_change = next((i for i in range(a, b) if damaged[i] != data[i]), None)
    return damaged, first_change


@pytest.mark.parametrize("marked", [False, True], ids=["copy", "writer mark"])
def test_overwritten_ranges_are_refused_or_cut_back(history, tmp_path, report, marked):
    data, states = history
    path = tmp_path / "damaged.durus"
    rng = random.Random(11)
    cases = earlier = 0
    while cases < 400:
        damaged, first_change = damage(data, rng, min(states))
        if first_change is None:
            continue  # the filler equals what was there
        cases += 1
        path.write_bytes(damaged)
        if marked:
            WriterMark(str(path)).place()
        good = boundary_before(states, first_change)
        try:
            found = records(path)
        except CorruptFileError as exc:
            assert "repair=True" in str(exc)
            assert records(path, repair=True) == states[good]
            assert path.stat().st_size == good
        else:
            # The file must show exactly the state before the damage, nothing
            # mixed. Without the mark, only zeros from a transaction boundary
            # to the end are read (as the empty transactions Durus writes):
            # what a power loss leaves when the unsynced end of a file comes
            # back as zeros. With it, also a last transaction cut short.
            assert found == states[good]
            assert marked or not damaged[good:].strip(b"\0")
            earlier += 1
    report("%d damaged tails%s: every one refused, or read as exactly the state before "
           "the damage (%d read)" % (cases, " with the writer's mark" if marked else "", earlier))


def test_zeroed_end_from_a_boundary_reads_as_the_state_before(history, tmp_path):
    """What a power loss leaves on file systems that zero unsynced blocks."""
    data, states = history
    path = tmp_path / "zeroed.durus"
    boundary = sorted(states)[-2]
    zeroed = data[:boundary] + bytes((len(data) - boundary) // 8 * 8)
    path.write_bytes(zeroed)
    assert records(path) == states[boundary]
    path.write_bytes(zeroed + b"\0" * 3)  # not a whole number of lengths
    with pytest.raises(CorruptFileError):
        FileStorage(str(path))
    assert records(path, repair=True) == states[boundary]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.name)
def test_writes_are_synced_before_they_are_relied_on(operation, tmp_path):
    """The database is at its name at every moment, files are synced before
    being renamed into place, and every write and rename is synced before
    the operation returns."""
    path = tmp_path / "db.durus"
    operation.prepare(path)
    with Trace() as trace:
        operation.run(path)
    check_durable_order(trace.calls, str(path))
    check_marked_writes(trace.calls, str(path))


def test_a_commit_is_one_append_then_one_sync(tmp_path):
    path = tmp_path / "db.durus"
    bank.create_file(path)
    storage = FileStorage(str(path))
    connection = Connection(storage)
    for _ in range(5):
        size = path.stat().st_size
        bank.apply_transfer(connection.get_root(), 0)
        with Trace() as trace:
            connection.commit()
        written = path.stat().st_size - size
        assert trace.calls == [Call("pwrite", str(path), (size, written)),
                               Call("fdatasync", str(path))]
    storage.close()


def test_server_answers_a_commit_only_once_it_is_synced(servers, tmp_path):
    path, trace_path = tmp_path / "db.durus", tmp_path / "trace.json"
    server = servers.custom(path, trace=trace_path)
    connection = connect(server)
    bank.create(connection, 1)
    for _ in range(10):
        bank.apply_transfer(connection.get_root(), 0)
        connection.commit()
    connection.get_storage().close()
    assert server.quit() == 0
    calls = Call.load_all(trace_path)
    replies = 0
    unsynced = False
    for call in calls:
        if call.name == "pwrite" and call.path == str(path):
            unsynced = True
        elif call.name == "fdatasync" and call.path == str(path):
            unsynced = False
        elif call.name == "send" and call.detail == ("4f", 1):  # 'O': committed
            assert not unsynced, "a commit was acknowledged before it was synced"
            replies += 1
    assert replies == 12  # the root, the bank, ten transfers
    check_durable_order([call for call in calls if call.name != "send"], str(path))
