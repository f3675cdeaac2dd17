"""ClientStorage and Connections through a server: against our server and
against Durus 4.3's (the `server` fixture runs each test on both), conflict
semantics, failures, and Durus 4.3 clients on our server."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from durus import client_storage
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import CommitTooLargeError, DurusKeyError, ReadConflictError, WriteConflictError
from durus.persistent import Persistent, persistent_class
from durus.persistent_dict import PersistentDict
from durus.serialize import pack_record
from durus.utils import int4_to_str, int8_to_str

import counter_worker
from server_processes import TESTS, connect, free_port, our_env, peer_env
from wire import recv_exact


PACK_DONE = r"Pack finished|gc at"  # ours | Durus 4.3's log line


@pytest.fixture(params=["ours", "durus-4.3"])
def server(request, servers, tmp_path):
    """A server on a file, ours or Durus 4.3's."""
    path = str(tmp_path / "db.durus")
    if request.param == "ours":
        return servers.ours("--file", path)
    return servers.peer(request.getfixturevalue("peer_python"), "--file", path)


def test_storage_protocol_walkthrough(server, request):
    b = ClientStorage(address=server.address)
    c = ClientStorage(address=server.address)
    assert [b.new_oid() for _ in range(3)] == [int8_to_str(n) for n in range(3)]
    with pytest.raises(DurusKeyError):
        b.load(int8_to_str(0))
    root_record = pack_record(int8_to_str(0), b"ok", b"")
    b.begin()
    b.store(int8_to_str(0), root_record)
    b.end()
    assert b.load(int8_to_str(0)) == root_record
    assert b.sync() == []
    b.begin()
    b.store(int8_to_str(1), pack_record(int8_to_str(1), b"no", b""))
    b.end()
    assert [oid for oid, _ in b.gen_oid_record()] == [int8_to_str(0)]
    assert len(list(b.bulk_load([int8_to_str(0), int8_to_str(1)]))) == 2
    with pytest.raises(DurusKeyError):
        list(b.bulk_load([int8_to_str(0), int8_to_str(1), int8_to_str(2)]))
    assert b.load(int8_to_str(1))  # still in step after the failed bulk load
    b.pack()
    server.wait_for_log(PACK_DONE)
    # c has not synced since b committed. Our server gives it its snapshot,
    # from before the root existed; Durus's, read conflicts. Until it syncs.
    assert c.snapshots == (request.node.callspec.params["server"] == "ours")
    for _ in range(2):
        with pytest.raises(DurusKeyError if c.snapshots else ReadConflictError):
            c.load(int8_to_str(0))
    assert set(c.sync()) == {int8_to_str(0), int8_to_str(1)}
    assert c.load(int8_to_str(0)) == root_record
    b.close()
    c.close()
    c.close()


def test_changes_are_seen_after_commit_or_abort(server):
    a, b = connect(server), connect(server)
    a.get_root()["x"] = 1
    a.commit()
    assert "x" not in b.get_root()
    b.abort()
    assert b.get_root()["x"] == 1
    b.get_root()["x"] = 2
    b.commit()
    assert a.get_root()["x"] == 1  # a has not synced yet
    a.commit()  # nothing to store: it just syncs
    assert a.get_root()["x"] == 2


def test_abort_reverts_uncommitted_changes(server):
    connection = connect(server)
    root = connection.get_root()
    root["kept"] = 1
    connection.commit()
    root["dropped"] = 2
    connection.abort()
    assert dict(root) == {"kept": 1}


def test_write_conflict(server):
    a, b = connect(server), connect(server)
    a.get_root()["x"] = PersistentDict(value=0)
    a.get_root()["y"] = PersistentDict(value=0)
    a.commit()
    b.abort()
    xa, xb = a.get_root()["x"], b.get_root()["x"]
    assert xa["value"] == xb["value"] == 0
    xa["value"] = 1
    a.commit()
    xb["value"] = 2
    with pytest.raises(WriteConflictError):
        b.commit()
    b.abort()
    assert b.get_root()["x"]["value"] == 1
    b.abort()
    # Without having read x in its transaction, b does not conflict with a.
    a.get_root()["x"]["value"] = 3
    a.commit()
    b.get_root()["y"]["value"] = 4
    b.commit()
    a.abort()
    assert (a.get_root()["x"]["value"], a.get_root()["y"]["value"]) == (3, 4)


def test_read_conflict_or_snapshot(server, request):
    """The Durus FAQ's case: a read, b changed by another client, then b
    loaded. Our server gives b as it was; Durus's raises ReadConflictError."""
    one, two = connect(server), connect(server)
    two.get_root()["a"] = PersistentDict(n=0)
    two.get_root()["b"] = PersistentDict(n=0)
    two.commit()
    one.abort()
    a = one.get_root()["a"]
    assert a["n"] == 0
    b = one.get_root()["b"]  # a ghost: not loaded yet
    two.get_root()["a"]["n"] = 1
    two.get_root()["b"]["n"] = 1
    two.commit()
    if request.node.callspec.params["server"] == "ours":
        assert (a["n"], b["n"]) == (0, 0)  # one consistent state: the snapshot
    else:
        with pytest.raises(ReadConflictError):
            b["n"]
    one.abort()
    assert (a["n"], b["n"]) == (1, 1)
    # Had it not read a in this transaction, loading b would just be fresh.
    two.get_root()["a"]["n"] = 2
    two.get_root()["b"]["n"] = 2
    two.commit()
    one.abort()
    assert b["n"] == 2


def test_crawler_loads_in_bulk(server):
    connection = connect(server)
    root = connection.get_root()
    root["items"] = [PersistentDict(i=i) for i in range(250)]
    connection.commit()
    fresh = connect(server)
    crawled = list(fresh.get_crawler())
    assert len(crawled) == 251
    assert sorted(obj["i"] for obj in crawled if "i" in obj) == list(range(250))


def test_oids_freed_by_a_pack_are_reused_safely(server):
    s1, s2 = ClientStorage(address=server.address), ClientStorage(address=server.address)
    s1.oid_pool_size = s2.oid_pool_size = 1
    c1, c2 = Connection(s1), Connection(s2)
    r1, r2 = c1.get_root(), c2.get_root()
    r1["a"] = PersistentDict()
    r1["b"] = PersistentDict()
    c1.commit()
    c2.abort()
    a_oid = r1["a"]._p_oid
    del r2["a"]  # the only reference to a
    c2.commit()
    c2.pack()
    server.wait_for_log(PACK_DONE)
    c2.abort()
    assert c2.get(a_oid) is None
    c1.abort()
    r2["b"]["new"] = Persistent()
    c2.commit()
    assert c2.get(a_oid) is r2["b"]["new"]
    c1.abort()
    assert persistent_class(r1["b"]["new"]) is Persistent and r1["b"]["new"]._p_oid == a_oid


def test_no_server_gives_connection_error_naming_the_address(tmp_path):
    port = free_port()
    with pytest.raises(ConnectionError, match="127.0.0.1:%d" % port):
        ClientStorage(port=port)
    path = str(tmp_path / "nobody.sock")
    with pytest.raises(ConnectionError, match=path):
        ClientStorage(address=path)


def test_server_going_away_gives_connection_error(servers):
    server = servers.ours()
    storage = ClientStorage(address=server.address)
    connection = Connection(storage)
    server.kill()
    with pytest.raises(ConnectionError, match="%s:%d" % server.address):
        connection.get_root()["x"] = 1
        connection.commit()
    with pytest.raises(ConnectionError, match="failed"):
        storage.sync()
    storage.close()


def test_silent_server_times_out(servers):
    server = servers.ours()
    storage = ClientStorage(address=server.address, timeout=1)
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ConnectionError, match="no reply within 1"):
            storage.load(int8_to_str(0))
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def test_a_commit_over_the_servers_limit_is_refused_with_the_reason(servers, tmp_path):
    server = servers.custom(tmp_path / "db.durus", max_commit_size=1 << 20)
    connection, other = connect(server), connect(server)
    connection.get_root()["big"] = os.urandom(20 << 20)
    with pytest.raises(CommitTooLargeError, match=r"the server refused the commit: commit of "
                       r"\d+ bytes is over the server's limit of 1048576 bytes "
                       r"\(max_commit_size\)"):
        connection.commit()
    with pytest.raises(ConnectionError, match="refused the commit"):
        connection.get_storage().sync()  # the server hung up
    server.wait_for_log(r"dropped: commit of \d+ bytes is over the server's limit")
    other.get_root()["small"] = 1
    other.commit()
    assert connect(server).get_root()["small"] == 1


def test_a_client_stops_sending_a_commit_the_server_refused(servers):
    """A server that answers as soon as it has the commit's size, then reads
    no more (a real socket, as our server's sessions see it): the client
    does not block on the rest of its 64 MiB."""
    reason = b"commit of 67108947 bytes is over the server's limit of 1000 bytes"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve():
            sock, _ = listener.accept()
            with sock:
                assert recv_exact(sock, 5) == b"V" + int4_to_str(1)
                sock.sendall(int4_to_str(1))
                assert recv_exact(sock, 1) == b"C"
                sock.sendall(int4_to_str(0))
                recv_exact(sock, 4)
                sock.sendall(b"R" + int4_to_str(len(reason)) + reason)
                received = 0
                while received < 5 << 20:  # the client's first piece, at most
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        return  # the client hung up
                    received += len(chunk)
                time.sleep(10)  # and no more

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        storage = ClientStorage(address=listener.getsockname(), timeout=5, snapshots=False)
        storage.begin()
        storage.store(int8_to_str(0), pack_record(int8_to_str(0), os.urandom(64 << 20), b""))
        with pytest.raises(CommitTooLargeError, match=reason.decode()):
            storage.end()


def test_a_commit_too_large_for_the_protocol_is_refused_before_sending(servers, monkeypatch):
    server = servers.ours()
    connection = connect(server)
    monkeypatch.setattr(client_storage, "_MAX_PAYLOAD", 1000)  # rather than 4 GiB
    connection.get_root()["big"] = os.urandom(2000)
    with pytest.raises(CommitTooLargeError, match="cannot be sent: the protocol's limit is "
                       "1000 bytes"):
        connection.commit()
    connection.abort()  # the storage is still usable
    connection.get_root()["small"] = 1
    connection.commit()
    assert connect(server).get_root()["small"] == 1


def test_a_request_interrupted_before_its_reply_breaks_the_connection(servers):
    """Ctrl-C while waiting for a slow server left its reply unread, and the
    next load returned that reply: another object's record."""
    server = servers.ours()
    connection = connect(server)
    root = connection.get_root()
    root["a"], root["b"] = PersistentDict(a=1), PersistentDict(b=2)
    connection.commit()
    oid_a, oid_b = root["a"]._p_oid, root["b"]._p_oid
    storage = ClientStorage(address=server.address, cache_bytes=0)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    os.kill(server.process.pid, signal.SIGSTOP)  # busy for a moment
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            storage.load(oid_a)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.kill(server.process.pid, signal.SIGCONT)
    with pytest.raises(ConnectionError, match="interrupted before its reply was read"):
        storage.load(oid_b)
    with pytest.raises(ConnectionError):
        storage.sync()
    storage.close()
    assert connect(server).get_root()["b"]["b"] == 2


def test_no_lost_updates_with_concurrent_clients(servers, tmp_path, peer_python):
    """Processes (three of ours, one Durus 4.3) increment shared counters,
    retrying on conflicts; every increment must be in the totals."""
    server = servers.ours("--file", str(tmp_path / "db.durus"))
    setup = connect(server)
    for name in counter_worker.COUNTERS:
        setup.get_root()[name] = PersistentDict(n=0)
    setup.commit()
    host, port = server.address
    script = str(TESTS / "counter_worker.py")
    workers = [subprocess.Popen([python, script, host, str(port), "100", str(seed)],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
               for seed, (python, env) in enumerate([(sys.executable, our_env())] * 3
                                                    + [(peer_python, peer_env())])]
    results = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    setup.abort()
    for name in counter_worker.COUNTERS:
        expected = sum(result["done"][name] for result in results)
        assert setup.get_root()[name]["n"] == expected
    assert sum(result["conflicts"] for result in results) > 0


# Durus 4.3 clients.

PEER_WRITER = """
import sys
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.persistent_dict import PersistentDict
connection = Connection(ClientStorage(port=int(sys.argv[1])))
root = connection.get_root()
root["from_peer"] = PersistentDict(text="hello", numbers=[1, 2, 3])
connection.commit()
print(sorted(root["from_ours"].items()))
"""

PEER_READ_THEN_WRITE = """
import sys
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import WriteConflictError
connection = Connection(ClientStorage(port=int(sys.argv[1])))
x = connection.get_root()["x"]
x["value"]
print("read", flush=True)
sys.stdin.readline()
x["value"] = "peer"
try:
    connection.commit()
    print("committed", flush=True)
except WriteConflictError:
    connection.abort()
    print("conflict", x["value"], flush=True)
"""


def test_durus_43_client_on_our_server(servers, run_peer):
    server = servers.ours()
    ours = connect(server)
    ours.get_root()["from_ours"] = PersistentDict(a=1)
    ours.commit()
    assert run_peer(PEER_WRITER, str(server.address[1])).strip() == "[('a', 1)]"
    ours.abort()
    assert ours.get_root()["from_peer"]["numbers"] == [1, 2, 3]


def test_write_conflict_across_implementations(server, peer_python, tmp_path):
    ours = connect(server)
    ours.get_root()["x"] = PersistentDict(value="start")
    ours.commit()

    def start_peer() -> subprocess.Popen:
        return subprocess.Popen([peer_python, "-c", PEER_READ_THEN_WRITE,
                                 str(server.address[1])], cwd=tmp_path, env=peer_env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    peer = start_peer()
    try:
        assert peer.stdout.readline().strip() == "read"
        x = ours.get_root()["x"]
        x["value"] = "ours"
        ours.commit()
        peer.stdin.write("go\n")
        peer.stdin.flush()
        assert peer.stdout.readline().strip() == "conflict ours"
    finally:
        peer.communicate(timeout=30)
    # And the other way round: the peer commits first, ours conflicts.
    assert x["value"] == "ours"
    peer = start_peer()
    out, _ = peer.communicate("go\n", timeout=30)
    assert out.split() == ["read", "committed"]
    x["value"] = "ours again"
    with pytest.raises(WriteConflictError):
        ours.commit()
    ours.abort()
    assert x["value"] == "peer"
