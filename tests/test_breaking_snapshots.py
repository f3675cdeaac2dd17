"""Defects a hostile pass found in snapshot isolation over our server and in
transaction(), each pinned by the test that showed it."""

import gc
import logging
import time
import tracemalloc

import pytest

from durus.btree import BTree
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.protocol import (PROTOCOL, SNAPSHOT_PROTOCOL, STATUS_INVALID, STATUS_KEYERROR,
                            STATUS_OKAY)
from durus.record_format import pack_record
from durus.snapshots import SnapshotHistory
from durus.storage import MemoryStorage
from durus.utils import int4_to_str

from session_peer import Peer, commit_request, new_oids, record, shared_state


def snapshot_peer(shared, name: str) -> Peer:
    peer = Peer(shared, name)
    assert peer.run(b"V" + SNAPSHOT_PROTOCOL) == SNAPSHOT_PROTOCOL
    return peer


def durus_peer(shared, name: str) -> Peer:
    peer = Peer(shared, name)
    assert peer.run(b"V" + PROTOCOL) == PROTOCOL
    return peer


def pack(shared) -> None:
    shared.packing.start()
    while shared.packing.running:
        shared.packing.step()


def test_a_protocol_1_client_is_never_sent_the_protocol_3_expired_status(tmp_path):
    """A Durus 4.3 client (protocol 1) loading a record a pack just removed,
    while a snapshot client holds an old snapshot and the server could not
    keep the record (snapshot_bytes), gets status 'E', which protocol 1 has
    not got: Durus 4.3 expects 'O', 'K' or 'I'."""
    storage = FileStorage(str(tmp_path / "db.durus"))
    shared = shared_state(storage)
    shared.history = SnapshotHistory(0, 60.0)  # keep nothing for snapshots
    old_durus = durus_peer(shared, "durus 4.3 client")
    snapshot_peer(shared, "idle snapshot client")
    writer = Peer(shared, "writer")
    root, doomed = new_oids(writer, 2)
    writer.run(b"C")
    writer.run(commit_request((root, pack_record(root, b"root", doomed)),
                              (doomed, record(doomed, b"doomed"))))
    old_durus.run(b"S")  # it has seen doomed, which the next commit leaves unreachable
    writer.run(b"C")
    writer.run(commit_request((root, pack_record(root, b"root", b""))))
    pack(shared)
    answer = old_durus.run(b"L" + doomed)
    assert answer[:1] in (STATUS_OKAY, STATUS_KEYERROR, STATUS_INVALID), answer
    storage.close()


def memory_while_creating(idle_protocol: bytes, objects: int) -> int:
    """Bytes the server side holds after a writer creates objects new
    objects while an idle client (speaking idle_protocol) never syncs, with
    snapshot_bytes at 1000."""
    shared = shared_state(max_commit_size=1 << 26)
    shared.history = SnapshotHistory(1000, 600.0)
    idle = Peer(shared, "idle")
    assert idle.run(b"V" + idle_protocol) == idle_protocol
    writer = Peer(shared, "writer")
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(objects // 10000):
            oids = [oid for _ in range(40) for oid in new_oids(writer, 250)]
            writer.run(b"C")
            assert writer.run(commit_request(*((oid, record(oid)) for oid in oids))) == STATUS_OKAY
        gc.collect()
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def test_new_objects_kept_for_an_old_snapshot_stay_within_snapshot_bytes():
    """Each new object a commit creates is noted in the history (its record
    as of older snapshots: none) at 0 bytes, so while a snapshot client
    never syncs the history grows without bound past snapshot_bytes (until
    snapshot_age, 600 s by default): about 200 bytes an object, 20 MiB for
    100,000 here, over snapshot_bytes=1000."""
    durus_client = memory_while_creating(PROTOCOL, 100000)  # its invalid set grows too
    snapshot_client = memory_while_creating(SNAPSHOT_PROTOCOL, 100000)
    assert snapshot_client - durus_client < 2 << 20, (durus_client, snapshot_client)


def test_a_second_version_request_for_protocol_1_leaves_protocol_3():
    """A client that asked for protocol 3, then for protocol 1 (the server
    answered 1), still gets protocol 3 answers: loads followed by a
    read-ahead block it does not expect."""
    shared = shared_state()
    writer = Peer(shared, "writer")
    (oid,) = new_oids(writer, 1)
    writer.run(b"C")
    writer.run(commit_request((oid, record(oid))))
    client = snapshot_peer(shared, "client")
    assert client.run(b"V" + PROTOCOL) == PROTOCOL
    answer = client.run(b"L" + oid)
    assert answer == STATUS_OKAY + int4_to_str(len(record(oid))) + record(oid), answer


def test_an_expired_idle_snapshot_is_logged_once(caplog):
    """Once an idle client's snapshot is past snapshot_age, every later
    commit by anyone logs "its snapshot expired" for it again."""
    shared = shared_state()
    shared.history = SnapshotHistory(1 << 20, 0.0)
    snapshot_peer(shared, "idle")
    writer = Peer(shared, "writer")
    (oid,) = new_oids(writer, 1)
    with caplog.at_level(logging.INFO, logger="durus"):
        for n in range(5):
            writer.run(b"C")
            writer.run(commit_request((oid, record(oid, b"%d" % n))))
            time.sleep(0.01)
    expiries = [line for line in caplog.messages if "idle: its snapshot expired" in line]
    assert len(expiries) == 1, expiries


class Item(Persistent):
    def __init__(self, n: int):
        self.n = n


def test_a_cold_walk_of_a_big_btree_reads_ahead_as_a_small_one_does(tmp_path, servers):
    """Read-ahead takes 13 requests to walk the values of a 20,000-item
    BTree, but 15,898 for 100,000 items: the client's queue of oids to read
    ahead (READ_AHEAD_QUEUE, 65,536) overflows with the items the leaves
    refer to, the first are dropped, and each of those is then a round trip
    of its own (with a queue of 1M oids: 54 requests)."""
    storage = FileStorage(str(tmp_path / "db.durus"))
    builder = Connection(storage)
    tree = builder.get_root()["tree"] = BTree()
    for n in range(100000):
        tree[n] = Item(1)
    builder.commit()
    storage.close()
    server = servers.ours("--file", str(tmp_path / "db.durus"))
    reader = Connection(ClientStorage(address=server.address))
    before = reader.storage.requests
    assert sum(item.n for item in reader.get_root()["tree"].values()) == 100000
    assert reader.storage.requests - before < 1000


def test_a_nested_transaction_block_does_not_commit_the_outer_blocks_changes():
    """transaction() 'aborts if the block raises', but an inner block's
    commit has already committed what the outer block changed before it:
    the outer block raises, and its change stays."""
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    with pytest.raises(RuntimeError, match="do not nest"):
        with connection.transaction():
            root["outer"] = 1
            with connection.transaction():
                root["inner"] = 1
            raise RuntimeError("the outer block fails")
    connection.abort()
    assert "outer" not in connection.get_root() and "inner" not in connection.get_root()
    with pytest.raises(RuntimeError, match="do not nest"):
        with connection.transaction():
            connection.run(lambda: None)
    with connection.transaction():  # usable again
        root["after"] = 1
    assert connection.get_root()["after"] == 1
