"""FileStorage2, the DFS20 format, through Connection and real files: commits,
readonly, pack, repair, closed storages, durability, locking, format detection."""

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from durus.__main__ import get_storage, get_storage_class
from durus.connection import Connection
from durus.error import CorruptFileError, DurusKeyError, FileLockedError, ReadOnlyError
from durus.file import WriterMark
from durus.file_storage import FileStorage
from durus.file_storage2 import MAGIC, FileStorage2
from durus.persistent_dict import PersistentDict
from durus.utils import int8_to_str

from closed_checks import check_every_method_refused


def commit_items(path, items: dict, **options) -> None:
    """Open path, put items in its root (each value in a PersistentDict), commit, close."""
    storage = FileStorage2(str(path), **options)
    connection = Connection(storage)
    root = connection.get_root()
    for key, value in items.items():
        root[key] = PersistentDict(value=value)
    connection.commit()
    storage.close()


def read_items(path) -> dict:
    storage = FileStorage2(str(path), readonly=True)
    try:
        root = Connection(storage).get_root()
        return {key: value["value"] for key, value in root.items()}
    finally:
        storage.close()


def test_new_file_starts_with_the_dfs20_magic(tmp_path):
    path = tmp_path / "db.durus"
    FileStorage2(str(path)).close()
    assert path.read_bytes().startswith(MAGIC)


def test_commits_survive_reopening(tmp_path):
    path = tmp_path / "db.durus"
    commit_items(path, {"a": 1})
    commit_items(path, {"b": [2, "two"]})
    assert read_items(path) == {"a": 1, "b": [2, "two"]}


def test_readonly_never_writes_and_refuses_commits(tmp_path):
    path = tmp_path / "db.durus"
    commit_items(path, {"a": 1})
    before = path.read_bytes(), os.stat(path).st_mtime_ns
    storage = FileStorage2(str(path), readonly=True)
    connection = Connection(storage)
    connection.get_root()["b"] = 2
    with pytest.raises(ReadOnlyError):
        connection.commit()
    with pytest.raises(ReadOnlyError):
        storage.new_oid()
    storage.close()
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    with pytest.raises(FileNotFoundError):
        FileStorage2(str(tmp_path / "missing.durus"), readonly=True)


def test_pack_removes_garbage_then_the_file_grows_and_reopens(tmp_path):
    path = tmp_path / "db.durus"
    storage = FileStorage2(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    root["garbage"] = PersistentDict((i, PersistentDict(n=i)) for i in range(300))
    root["kept"] = PersistentDict(n=-1)
    connection.commit()
    garbage_oid = root["garbage"]._p_oid
    del root["garbage"]
    connection.commit()
    size = path.stat().st_size
    connection.pack()
    assert path.stat().st_size < size / 5
    assert (tmp_path / "db.durus.prepack").exists()
    assert not (tmp_path / "db.durus.pack").exists()
    with pytest.raises(DurusKeyError):
        storage.load(garbage_oid)
    root["later"] = PersistentDict(n=1)
    connection.commit()
    storage.close()
    reopened = FileStorage2(str(path))
    root = Connection(reopened).get_root()
    assert (root["kept"]["n"], root["later"]["n"], sorted(root)) == (-1, 1, ["kept", "later"])
    assert int8_to_str(0) in set(reopened.shelf.gen_oids())
    reopened.close()


def test_commits_made_while_a_pack_runs_are_kept(tmp_path):
    path = tmp_path / "db.durus"
    storage = FileStorage2(str(path))
    connection = Connection(storage)
    connection.get_root()["old"] = PersistentDict(n=0)
    connection.commit()
    packer = storage.get_packer()
    next(packer)
    connection.get_root()["new"] = PersistentDict(n=1)
    connection.get_root()["old"]["n"] = 2
    connection.commit()
    for _ in packer:
        pass
    storage.close()
    root = Connection(FileStorage2(str(path), readonly=True)).get_root()
    assert (root["old"]["n"], root["new"]["n"]) == (2, 1)


def cut_tail_file(path) -> tuple[int, int]:
    """Write two commits; return (end of the first, end of the second)."""
    commit_items(path, {"a": 1})
    first = path.stat().st_size
    commit_items(path, {"b": 2})
    return first, path.stat().st_size


def test_a_cut_tail_is_refused_naming_its_offset_then_repaired(tmp_path):
    path = tmp_path / "db.durus"
    first, second = cut_tail_file(path)
    original = path.read_bytes()
    for cut in (first + 1, first + 6, (first + second) // 2, second - 1):
        path.write_bytes(original[:cut])
        with pytest.raises(CorruptFileError, match="byte %d" % first):
            FileStorage2(str(path))
        with pytest.raises(CorruptFileError):
            FileStorage2(str(path), readonly=True)
    FileStorage2(str(path), repair=True).close()
    assert path.stat().st_size == first
    assert read_items(path) == {"a": 1}


def test_a_damaged_tail_is_refused_without_repair(tmp_path):
    path = tmp_path / "db.durus"
    first, _ = cut_tail_file(path)
    with open(path, "r+b") as f:
        f.seek(first)
        f.write(b"\0\0\0\x05")  # a record length under 12
    with pytest.raises(CorruptFileError, match="byte %d" % first):
        FileStorage2(str(path))
    with pytest.raises(ValueError, match="readonly"):
        FileStorage2(str(path), readonly=True, repair=True)
    FileStorage2(str(path), repair=True).close()
    assert read_items(path) == {"a": 1}


def test_a_damaged_index_or_header_is_refused(tmp_path):
    path = tmp_path / "db.durus"
    commit_items(path, {"a": 1})
    data = path.read_bytes()
    path.write_bytes(data[:6] + (10 ** 9).to_bytes(8, "big") + data[14:])
    with pytest.raises(CorruptFileError, match="byte 6"):
        FileStorage2(str(path))
    path.write_bytes(data[:30] + b"x" * 5 + data[35:])
    with pytest.raises(CorruptFileError, match="index at byte 14 is damaged"):
        FileStorage2(str(path))
    path.write_bytes(b"SHELF-1\n" + data[8:])
    with pytest.raises(CorruptFileError, match="DFS20"):
        FileStorage2(str(path))


def write_session(path, commits: list) -> list:
    """Make each dict of commits a commit in one writer session (each value a
    PersistentDict in the root, or a change to the one there); return, after
    each, (file bytes, mark bytes, state): what a writer killed then leaves,
    and {oid: record} of every record."""
    storage = FileStorage2(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    mark = Path(str(path) + ".writer")
    snapshots = []
    for items in commits:
        for key, value in items.items():
            if key in root:
                root[key]["value"] = value
            else:
                root[key] = PersistentDict(value=value)
        connection.commit()
        snapshots.append((path.read_bytes(), mark.read_bytes(), records(storage)))
    storage.close()
    return snapshots


def records(storage) -> dict:
    return dict(storage.gen_oid_record())


def outcome(path, **options):
    """{oid: record} of the file opened with options, or CorruptFileError."""
    try:
        storage = FileStorage2(str(path), **options)
    except CorruptFileError as exc:
        return exc
    try:
        return records(storage)
    finally:
        storage.close()


def put(path, data: bytes, mark: bytes | None) -> None:
    """Make path hold data, with a writer's mark holding mark (None: no mark)."""
    path.write_bytes(data)
    mark_path = Path(str(path) + ".writer")
    if mark is None:
        mark_path.unlink(missing_ok=True)
    else:
        mark_path.write_bytes(mark)


def test_a_commit_cut_short_by_its_killed_writer_is_dropped(tmp_path):
    """A writer killed in the middle of writing a commit leaves its mark:
    the next open leaves out the unfinished commit, without repair."""
    path = tmp_path / "db.durus"
    (first, mark, state), (second, _, _) = write_session(path, [{"a": 1}, {"b": 2}])
    cut = (len(first) + len(second)) // 2
    put(path, second[:cut], mark)
    assert outcome(path, readonly=True) == state
    assert path.stat().st_size == cut  # a reader leaves it
    assert outcome(path) == state
    assert path.read_bytes() == first
    assert not (tmp_path / "db.durus.writer").exists()


def test_a_commit_zero_filled_by_a_power_loss_is_dropped_whole(tmp_path):
    """What ext4 or XFS leave of a commit not yet synced when the file's size
    was: its first record, then zeros. With the mark, the whole commit is
    left out; without it, the file is refused (no half commit is read)."""
    path = tmp_path / "db.durus"
    (first, mark, state), (second, _, _) = write_session(
        path, [{"a": 1}, {"a": 2, "b": 2, "c": "x" * 40}])
    start = len(first)
    kept = start + 4 + int.from_bytes(second[start:start + 4], "big")  # the first record
    # Zeros from every offset modulo 4, to ends of every length modulo 4 (the
    # file's size may have been synced past the commit).
    for zeros_from, extra in itertools.product(range(kept, kept + 8), range(4)):
        damaged = second[:zeros_from] + bytes(len(second) - zeros_from + extra)
        put(path, damaged, mark)
        assert outcome(path, readonly=True) == state
        assert outcome(path) == state
        assert path.read_bytes() == first
        put(path, damaged, None)
        with pytest.raises(CorruptFileError, match="byte %d" % start):
            FileStorage2(str(path))
        assert outcome(path, repair=True) == state


def test_a_damaged_length_before_the_commit_in_flight_is_refused_with_the_mark(tmp_path):
    """A record length damaged in an acknowledged commit, so that it runs
    past the end of the file, is damage even with a writer's mark: the
    commits after it are never cut off as a commit in flight."""
    path = tmp_path / "db.durus"
    snapshots = write_session(path, [{i: i} for i in range(6)])
    data, mark, _ = snapshots[-1]
    start = len(snapshots[-5][0])  # the fourth-from-last commit
    damaged = bytearray(data)
    damaged[start] ^= 0x40  # its first record's length now claims about 1 GB
    put(path, bytes(damaged), mark)
    for options in ({}, {"readonly": True}):
        with pytest.raises(CorruptFileError, match="byte %d" % start):
            FileStorage2(str(path), **options)
    assert path.read_bytes() == damaged
    assert outcome(path, repair=True) == snapshots[-5][2]


@pytest.mark.parametrize("readonly", [False, True])
def test_every_operation_on_a_closed_storage_raises_value_error(tmp_path, readonly,
                                                                descriptor_calls):
    path = tmp_path / "db.durus"
    commit_items(path, {"a": 1})
    storage = FileStorage2(str(path), readonly=readonly)
    Connection(storage)
    dfs20 = storage.shelf
    storage.close()
    check_every_method_refused(storage, descriptor_calls)
    check_every_method_refused(dfs20, descriptor_calls)


def test_each_commit_is_fsynced_unless_turned_off(tmp_path, monkeypatch):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    for fsync, expected in ((True, 5), (False, 0)):
        storage = FileStorage2(str(tmp_path / ("%s.durus" % fsync)), fsync=fsync)
        connection = Connection(storage)
        calls.clear()
        for i in range(5):
            connection.get_root()[i] = i
            connection.commit()
        assert len(calls) == expected
        storage.close()


def test_a_second_writer_is_refused_and_a_reader_is_not(tmp_path):
    path = tmp_path / "db.durus"
    writer = FileStorage2(str(path))
    Connection(writer).commit()
    with pytest.raises(FileLockedError, match="db.durus"):
        FileStorage2(str(path))
    FileStorage2(str(path), readonly=True).close()
    writer.close()
    FileStorage2(str(path)).close()


def test_a_temporary_storage_works_and_is_removed(tmp_path):
    storage = FileStorage2()
    name = storage.get_filename()
    connection = Connection(storage)
    connection.get_root()["x"] = PersistentDict(n=1)
    connection.commit()
    connection.pack()  # temporary files are not packed
    assert connection.get_root()["x"]["n"] == 1
    storage.close()
    assert not os.path.exists(name)


def test_format_detection(tmp_path):
    from durus.postgres_storage import PostgresStorage
    from durus.sqlite_storage import SqliteStorage
    dfs20, shelf, empty, sqlite, other = (str(tmp_path / name) for name in
                                          ("a", "b", "c", "d", "e"))
    FileStorage2(dfs20).close()
    FileStorage(shelf).close()
    open(empty, "wb").close()
    with open(sqlite, "wb") as f:
        f.write(b"SQLite format 3\0" + bytes(100))
    with open(other, "wb") as f:
        f.write(b"something else")
    assert get_storage_class(dfs20) is FileStorage2
    assert get_storage_class(shelf) is FileStorage
    assert get_storage_class(empty) is FileStorage
    assert get_storage_class(str(tmp_path / "new")) is FileStorage
    assert get_storage_class(sqlite) is SqliteStorage
    assert get_storage_class("postgresql://u:pw@h/db") is PostgresStorage
    with pytest.raises(ValueError, match="not a Durus storage"):
        get_storage_class(other)
    storage = get_storage(dfs20, readonly=True)
    assert type(storage) is FileStorage2
    storage.close()
    with pytest.raises(CorruptFileError, match="SHELF-1"):  # the class given wins
        get_storage(dfs20, storage_class="durus.file_storage.FileStorage", readonly=True)


def test_durus_pack_command_on_a_dfs20_file(tmp_path):
    path = tmp_path / "db.durus"
    storage = FileStorage2(str(path))
    connection = Connection(storage)
    connection.get_root()["garbage"] = PersistentDict((i, PersistentDict(n=i))
                                                      for i in range(300))
    connection.get_root()["kept"] = PersistentDict(value="yes")
    connection.commit()
    del connection.get_root()["garbage"]
    connection.commit()
    storage.close()
    size = path.stat().st_size
    done = subprocess.run([sys.executable, "-m", "durus", "-p", "--file", str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert path.stat().st_size < size / 5
    assert path.read_bytes().startswith(MAGIC)
    assert read_items(path) == {"kept": "yes"}


def test_a_hundred_thousand_objects_commit_pack_grow_and_reopen(tmp_path):
    started = time.monotonic()
    path = tmp_path / "big.durus"
    model = {}
    storage = FileStorage2(str(path), fsync=False)
    connection = Connection(storage, cache_size=1000)
    root = connection.get_root()
    for batch in range(10):
        for i in range(batch * 10000, (batch + 1) * 10000):
            root[i] = model[i] = PersistentDict(n=i)
        connection.commit()
    model = {i: i for i in model}
    for i in range(0, 100000, 3):  # garbage for the pack
        del root[i], model[i]
    for i in range(1, 100000, 7):
        if i in model:
            root[i]["n"] = model[i] = -i
    connection.commit()
    connection.pack()
    for i in range(100000, 110000):  # growth after the pack
        root[i] = PersistentDict(n=i)
        model[i] = i
    connection.commit()
    storage.close()
    storage = FileStorage2(str(path), readonly=True)
    root = Connection(storage, cache_size=1000).get_root()
    assert len(root) == len(model)
    for key, value in model.items():
        assert root[key]["n"] == value
    storage.close()
    assert time.monotonic() - started < 60


def no_syncs(monkeypatch) -> None:
    """Skip fsyncs: the sweeps below test what opens make of files, not durability."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


def damaged_tails(data: bytes, start: int):
    """(kind, offset, bytes) of data cut at every offset from start, and zero-filled from there."""
    for offset in range(start, len(data)):
        yield "cut", offset, data[:offset]
        yield "zeros", offset, data[:offset] + bytes(len(data) - offset)


def sweep(path, data: bytes, start: int, mark: bytes | None, states: dict, allowed: set,
          tally: dict) -> None:
    """Open every damaged tail of data from start readonly, as a writer, and
    with repair: each must see exactly one of states ({name: records}) whose
    name is allowed, or be refused (repair: never refused, any of states)."""
    for kind, offset, damaged in damaged_tails(data, start):
        for mode, options in (("readonly", {"readonly": True}), ("writer", {}),
                              ("repair", {"repair": True})):
            put(path, damaged, mark)
            seen = outcome(path, **options)
            if isinstance(seen, CorruptFileError):
                assert mode != "repair", seen
                assert path.read_bytes() == damaged  # refused: nothing was cut
                name = "refused"
            else:
                name = next((name for name, state in states.items() if state == seen), None)
                assert name in (states if mode == "repair" else allowed), (
                    kind, offset, mode, name)
                if mode != "readonly":
                    assert outcome(path, readonly=True) == seen  # what the writer left
            tally[kind, mode, name] = tally.get((kind, mode, name), 0) + 1


def test_every_cut_and_zero_fill_of_the_last_commits_reads_a_commit_boundary_or_is_refused(
        tmp_path, monkeypatch, report):
    """The last two commits of a file written in one session, cut at every
    offset and zero-filled from every offset: with the mark the writer left
    while the last one was in flight, each open sees the state before or
    after that commit, or is refused; the same with that mark's durable end
    lost (a power loss: over the last commit only, as the one before it was
    synced); without a mark, a file that ends where the one before the last
    began is that older file, for all we can tell."""
    path = tmp_path / "db.durus"
    commits = [{0: "v", 1: "w"}] + [{0: "v" * k, 1: k} for k in range(3)]
    *_, (older, _, earlier), (previous, mark, before), (data, _, after) = write_session(
        path, commits)
    states = {"earlier": earlier, "before": before, "after": after}
    durable_lost = mark[:mark.index(b"\n") + 1] + b"x" * 48 + mark[mark.index(b"\n") + 49:]
    no_syncs(monkeypatch)
    tallies = {}
    for variant, start, variant_mark, allowed in (
            ("in flight", len(older), mark, {"before", "after"}),
            ("durable end lost", len(previous), durable_lost, {"before", "after"}),
            ("no mark", len(older), None, {"earlier", "before", "after"})):
        tally = tallies[variant] = {}
        sweep(path, data, start, variant_mark, states, allowed, tally)
    for variant, tally in tallies.items():
        report("%s: %d damaged tails; %s" % (
            variant, sum(tally.values()) // 3,
            ", ".join("%s/%s %s: %d" % (kind, mode, name, n)
                      for (kind, mode, name), n in sorted(tally.items()))))
    # With the mark, a commit in flight cut anywhere is dropped without repair.
    assert tallies["in flight"]["cut", "writer", "before"] == len(data) - len(previous)
    # Without it, only what is a whole older file reads as one.
    assert tallies["no mark"].get(("cut", "readonly", "earlier")) == 1


def test_a_damaged_byte_before_the_commit_in_flight_is_refused_or_kept(
        tmp_path, monkeypatch, report):
    """Every byte of the two commits before a commit in flight, damaged, with
    the writer's mark: the open is refused, or cuts off the commit in flight
    and nothing before it (a record's contents have no checksum to fail)."""
    path = tmp_path / "db.durus"
    commits = [{0: "v", 1: "w"}] + [{0: "v" * k, 1: k} for k in range(4)]
    *_, (older, _, _), _, (previous, mark, _), (data, _, _) = write_session(path, commits)
    in_flight = data[:(len(previous) + len(data)) // 2]
    no_syncs(monkeypatch)
    tally = {}
    for offset in range(len(older), len(previous)):
        for flip in (0x40, 0xff):
            damaged = bytearray(in_flight)
            damaged[offset] ^= flip
            put(path, bytes(damaged), mark)
            seen = outcome(path)
            if isinstance(seen, CorruptFileError):
                assert "byte" in str(seen) and path.read_bytes() == damaged
                name = "refused"
            else:
                assert path.read_bytes() == damaged[:len(previous)]
                name = "in flight dropped, the rest kept"
            tally[name] = tally.get(name, 0) + 1
    report("%d damaged bytes: %s" % (sum(tally.values()), tally))


def test_after_a_pack_the_mark_describes_the_new_file(tmp_path):
    """A writer killed after a pack, before its next commit, leaves positions
    of the file the pack replaced: they are not taken for the new file's (a
    clean file opens). Its next commit records the new file's, so that a
    commit in flight there is dropped."""
    path = tmp_path / "db.durus"
    mark_path = tmp_path / "db.durus.writer"
    storage = FileStorage2(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    root["garbage"] = PersistentDict((i, PersistentDict(n=i)) for i in range(100))
    connection.commit()
    del root["garbage"]
    root["kept"] = PersistentDict(n=0)
    connection.commit()
    connection.pack()
    packed, stale_mark, state = path.read_bytes(), mark_path.read_bytes(), records(storage)
    root["kept"]["n"] = 1
    connection.commit()
    committed, mark, after = path.read_bytes(), mark_path.read_bytes(), records(storage)
    root["kept"]["n"] = 2
    connection.commit()
    in_flight = path.read_bytes()[:len(committed) + 10]
    storage.close()
    put(path, packed, stale_mark)
    assert outcome(path, readonly=True) == outcome(path) == state
    put(path, in_flight, mark)
    assert outcome(path, readonly=True) == after
    assert outcome(path) == after and path.read_bytes() == committed


def test_make_durable_records_how_far_commits_are_durable(tmp_path):
    """With fsync=False, a commit leaves the mark's durable end where it was;
    make_durable() (what a server calls for a batch of commits) moves it."""
    path = tmp_path / "db.durus"
    storage = FileStorage2(str(path), fsync=False)
    connection = Connection(storage)
    connection.get_root()["a"] = 1
    connection.commit()
    marked = WriterMark(str(path)).recorded
    start = marked()[0]
    connection.get_root()["a"] = 2
    connection.commit()
    assert marked()[2] == start < path.stat().st_size
    storage.make_durable()
    assert marked()[2] == path.stat().st_size
    storage.close()
    assert not os.path.exists(str(path) + ".writer")


def test_a_mark_without_positions_does_not_drop_a_cut_commit(tmp_path):
    """A mark that records no positions (left by an older version, or a
    SHELF-1 writer's) cannot tell a commit in flight from damage: the file is
    refused, and repair cuts it back."""
    path = tmp_path / "db.durus"
    (first, _, state), (second, _, _) = write_session(path, [{"a": 1}, {"b": 2}])
    put(path, second[:len(second) - 5], b"pid 1 on host has had the database open")
    with pytest.raises(CorruptFileError, match="byte %d.*records no positions" % len(first)):
        FileStorage2(str(path))
    assert outcome(path, repair=True) == state


def test_a_commit_of_nothing_writes_nothing(tmp_path):
    path = tmp_path / "db.durus"
    storage = FileStorage2(str(path))
    Connection(storage).commit()
    size = path.stat().st_size
    storage.begin()
    storage.end()
    assert path.stat().st_size == size
    storage.close()


def test_each_commit_ends_with_a_copy_of_its_smallest_record(tmp_path):
    path = tmp_path / "db.durus"
    storage = FileStorage2(str(path))
    connection = Connection(storage)
    start = path.stat().st_size
    connection.get_root()["big"] = PersistentDict(text="x" * 500)
    connection.commit()
    data = path.read_bytes()[start:]
    records_written = []
    position = 0
    while (length := int.from_bytes(data[position:position + 4], "big")):
        records_written.append(data[position:position + 4 + length])
        position += 4 + length
    assert position + 4 == len(data)
    assert records_written[-1] == min(records_written[:-1], key=len)
    assert len(records_written) == 3  # the root, the new dict, the copy
    storage.close()
