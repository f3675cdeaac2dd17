"""StorageServer: the wire protocol spoken over raw sockets, clients that
misbehave, packing while serving, addresses, and shutting down."""

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus import serialize
from durus.storage import MemoryStorage
from durus.storage_server import (DEFAULT_HOST, DEFAULT_PORT, STATUS_INVALID,
                                  STATUS_KEYERROR, STATUS_OKAY, HostPortAddress,
                                  SocketAddress, StorageServer, UnixAbstractAddress,
                                  UnixDomainSocketAddress, wait_for_server)
from durus.utils import int4_to_str, int8_to_str, str_to_int4

from server_processes import connect, connect_raw, free_port, our_env
from wire import (PROTOCOL, ROOT_OID, commit, frame, is_closed_by_server, load, new_oids,
                  payload, record, recv_exact, start_commit)


def serve_kept_root(servers, path) -> tuple:
    """Start our server on the file at path and commit {'kept': 1} as its
    root; return (the server, the Connection that committed it)."""
    server = servers.ours("--file", str(path))
    connection = connect(server)
    connection.get_root()["kept"] = 1
    connection.commit()
    return server, connection


def test_version_exchange_and_oids_reserved_per_client(servers):
    server = servers.ours()
    with connect_raw(server.address) as a, connect_raw(server.address) as b:
        a.sendall(b"V" + PROTOCOL)
        assert recv_exact(a, 4) == PROTOCOL
        a.sendall(b"N")
        assert recv_exact(a, 8) == ROOT_OID
        a_oids = new_oids(a, 3)
        b_oids = new_oids(b, 2)
        assert len(set([ROOT_OID] + a_oids + b_oids)) == 6
        # An oid reserved for a must not be committed by b.
        b.sendall(b"C")
        recv_exact(b, 4)
        b.sendall(payload(record(a_oids[0])))
        assert is_closed_by_server(b)
        assert commit(a, record(ROOT_OID), record(a_oids[0])) == STATUS_OKAY
    server.wait_for_log("reserved for client")


def test_other_protocol_version_is_answered_then_refused(servers):
    server = servers.ours()
    with connect_raw(server.address) as sock:
        sock.sendall(b"V" + int4_to_str(2))
        assert recv_exact(sock, 4) == PROTOCOL
        assert is_closed_by_server(sock)
    server.wait_for_log("protocol 2 is not supported")


def test_loads_commits_invalidations_and_sync(servers):
    server = servers.ours()
    with connect_raw(server.address) as a, connect_raw(server.address) as b:
        assert load(b, ROOT_OID) == STATUS_KEYERROR
        oid = new_oids(a, 1)[0]
        assert oid == ROOT_OID
        assert commit(a, record(oid, b"first")) == STATUS_OKAY
        # b may have read something inconsistent with the new root: 'I' until it syncs.
        assert load(b, oid) == STATUS_INVALID
        assert load(b, oid) == STATUS_INVALID
        b.sendall(b"S")
        assert recv_exact(b, 4 + 8) == int4_to_str(1) + oid
        assert load(b, oid) == STATUS_OKAY + record(oid, b"first")
        # A bulk load answers each oid in order.
        missing = int8_to_str(999)
        b.sendall(b"B" + int4_to_str(2) + missing + oid)
        assert recv_exact(b, 1) == STATUS_KEYERROR
        assert recv_exact(b, 1) == STATUS_OKAY
        assert recv_exact(b, 4 + len(record(oid, b"first")))[4:] == record(oid, b"first")
        # a committed it, so a is not told about it; b is told at its commit.
        assert commit(a, record(oid, b"second")) == STATUS_OKAY
        assert start_commit(b) == [oid]
        b.sendall(int4_to_str(0))  # b gives up, as a client with a conflict does
        a.sendall(b"S")
        assert recv_exact(a, 4) == int4_to_str(0)
        with connect_raw(server.address) as c:
            assert load(c, oid) == STATUS_OKAY + record(oid, b"second")
            c.sendall(b".")
            assert is_closed_by_server(c)


def test_unknown_command_drops_only_that_client(servers):
    server = servers.ours()
    good = connect(server)
    with connect_raw(server.address) as bad:
        bad.sendall(b"Z\x00garbage")
        assert is_closed_by_server(bad)
    server.wait_for_log(r"dropped: unknown command byte b'Z'")
    good.get_root()["still"] = "served"
    good.commit()
    assert connect(server).get_root()["still"] == "served"


def test_oversized_requests_are_refused_before_buffering(servers, tmp_path):
    server = servers.custom(tmp_path / "db.durus", max_commit_size=1000)
    connection = connect(server)
    reason = b"commit of 1000000000 bytes is over the server's limit of 1000 bytes " \
             b"(max_commit_size)"
    with connect_raw(server.address) as sock:
        start_commit(sock)
        sock.sendall(int4_to_str(10 ** 9))
        # Answered at once, before any of the payload.
        assert recv_exact(sock, 5 + len(reason)) == b"R" + int4_to_str(len(reason)) + reason
        sock.sendall(b"\0" * 100_000)  # passed over, not buffered
    server.wait_for_log("dropped: " + re.escape(reason.decode()))
    with connect_raw(server.address) as sock:
        sock.sendall(b"B" + int4_to_str(10 ** 6))
        assert is_closed_by_server(sock)
    server.wait_for_log("bulk load request of 8000000 bytes is over the limit of 1000 bytes")
    connection.get_root()["x"] = 1
    connection.commit()


def test_a_refused_commit_does_not_hold_up_other_commits(servers, tmp_path):
    """The refused client gives up the commit turn at once, even if it then
    goes silent, or sends its payload a byte at a time."""
    server = servers.custom(tmp_path / "db.durus", max_commit_size=1000, commit_grace=600,
                            timeout=600)
    honest = connect(server, timeout=20)
    with connect_raw(server.address) as silent, connect_raw(server.address) as dripping:
        for sock in (silent, dripping):
            start_commit(sock)
            sock.sendall(int4_to_str(10 ** 6))
            assert recv_exact(sock, 1) == b"R"
        dripping.sendall(b"x")
        honest.get_root()["x"] = 1
        honest.commit()  # without the turn, it would wait for commit_grace (600 s)
        dripping.sendall(b"x")
        honest.get_root()["x"] = 2
        honest.commit()
    assert connect(server).get_root()["x"] == 2


def test_a_refused_commit_whose_client_sends_it_all_is_passed_over(servers, tmp_path):
    server = servers.custom(tmp_path / "db.durus", max_commit_size=1000)
    with connect_raw(server.address) as sock:
        start_commit(sock)
        body = frame(record(int8_to_str(5), b"x" * 3000))
        sock.sendall(int4_to_str(len(body)) + body)  # as a Durus 4.3 client does
        assert recv_exact(sock, 1) == b"R"
        assert b"over the server's limit of 1000 bytes" in recv_exact(sock, str_to_int4(
            recv_exact(sock, 4)))
        assert is_closed_by_server(sock)
    server.wait_for_log("dropped: commit of %d bytes is over" % len(body))


@pytest.mark.parametrize("bad, reason", [
    (int4_to_str(100) + b"\0" * 26, "ends inside a record"),
    (b"ab", "ends inside a record length"),
    (frame(record(ROOT_OID, b"x", b"abc")), "malformed record"),
    (frame(record(ROOT_OID), oid=int8_to_str(5)), "malformed record"),
    (frame(record(int8_to_str(77))), "never allocated"),
])
def test_malformed_commit_changes_nothing(servers, tmp_path, bad, reason):
    path = tmp_path / "db.durus"
    server, connection = serve_kept_root(servers, path)
    with connect_raw(server.address) as sock:
        start_commit(sock)
        # A good record comes first: it must not be applied either.
        body = frame(record(ROOT_OID, b"evil")) + bad
        sock.sendall(int4_to_str(len(body)) + body)
        assert is_closed_by_server(sock)
    server.wait_for_log(reason)
    connection.abort()
    assert dict(connection.get_root()) == {"kept": 1}
    assert server.quit() == 0
    assert dict(Connection(FileStorage(str(path), readonly=True)).get_root()) == {"kept": 1}


def test_disconnect_mid_commit_changes_nothing(servers, tmp_path):
    path = tmp_path / "db.durus"
    server, connection = serve_kept_root(servers, path)
    with connect_raw(server.address) as sock:
        start_commit(sock)
        whole = payload(record(ROOT_OID, b"never"))
        sock.sendall(whole[:len(whole) // 2])
    server.wait_for_log("disconnected in the middle of a request")
    connection.get_root()["after"] = 2
    connection.commit()
    assert server.quit() == 0
    root = Connection(FileStorage(str(path), readonly=True)).get_root()
    assert dict(root) == {"kept": 1, "after": 2}


def test_stalled_clients_hold_up_nobody(servers, tmp_path):
    server = servers.custom(tmp_path / "db.durus", timeout=4, commit_grace=0.5)
    good = connect(server)
    good.get_root()["n"] = 0
    good.commit()
    with connect_raw(server.address) as half_load, connect_raw(server.address) as committer:
        half_load.sendall(b"L\0\0\0")  # and then nothing
        oid = new_oids(committer, 1)[0]
        start_commit(committer)
        whole = payload(record(oid, b"late"))
        committer.sendall(whole[:6])  # holds the commit turn, half-sent
        started = time.monotonic()
        good.get_root()["n"] = 1
        good.commit()  # waits for the silent holder's turn to lapse
        other = connect(server)
        assert other.get_root()["n"] == 1
        assert time.monotonic() - started < 5
        # The holder finishes at last: others committed meanwhile, so it must
        # not be applied blindly.
        committer.sendall(whole[6:])
        assert recv_exact(committer, 1) == STATUS_INVALID
        # The silent half-load is dropped after the timeout.
        assert is_closed_by_server(half_load, timeout=15)
    server.wait_for_log("lost the commit turn")
    server.wait_for_log(r"no progress for \d+ s while waiting for the rest of a request")


def test_client_that_never_reads_is_dropped_without_holding_up_others(servers, tmp_path):
    server = servers.custom(tmp_path / "db.durus", timeout=2)
    good = connect(server)
    good.get_root()["big"] = os.urandom(200000)
    good.commit()
    with connect_raw(server.address) as greedy:
        greedy.setblocking(False)
        requests = (b"L" + ROOT_OID) * 5000
        sent = 0
        deadline = time.monotonic() + 2
        while sent < len(requests) and time.monotonic() < deadline:
            try:
                sent += greedy.send(requests[sent:])
            except BlockingIOError:
                time.sleep(0.01)
        started = time.monotonic()
        good.abort()
        good.get_root()["n"] = 1
        good.commit()
        assert time.monotonic() - started < 5
        server.wait_for_log("no progress for .* it to read its replies")


def test_pack_runs_while_other_clients_commit(servers, tmp_path, monkeypatch):
    path = tmp_path / "db.durus"
    server = servers.ours("--file", str(path))
    packer = connect(server)
    root = packer.get_root()
    # Enough live data for the pack to take many steps, and quick to make.
    monkeypatch.setattr(serialize, "WRITE_COMPRESSED_STATE_PICKLES", False)
    for name in "live", "garbage":
        root[name] = PersistentDict((i, PersistentDict(value="%d" % i * 20000))
                                    for i in range(300))
        packer.commit()
    root["counter"] = PersistentDict(n=0)
    packer.commit()
    del root["garbage"]
    packer.commit()
    size_before = path.stat().st_size
    writer = connect(server)
    counter = writer.get_root()["counter"]
    packer.pack()
    commits = 0
    while "Pack finished" not in server.log_text() or commits < 3:
        counter["n"] += 1
        writer.commit()
        commits += 1
    log = server.log_text()
    during_pack = log[log.index("Pack started"):log.index("Pack finished")]
    assert "Committed" in during_pack
    assert path.with_name("db.durus.prepack").exists()
    assert path.stat().st_size < size_before * 0.7
    assert server.quit() == 0
    reopened = Connection(FileStorage(str(path), readonly=True)).get_root()
    assert reopened["counter"]["n"] == commits and "garbage" not in reopened
    assert len(reopened["live"]) == 300


def test_gcbytes_packs_automatically(servers, tmp_path):
    path = tmp_path / "db.durus"
    server = servers.ours("--file", str(path), "--gcbytes", "5000")
    connection = connect(server)
    root = connection.get_root()
    for i in range(10):
        root["blob"] = PersistentDict(data=os.urandom(1000), i=i)
        connection.commit()
    server.wait_for_log("Automatic pack started")
    server.wait_for_log("Pack finished")
    connection.abort()
    assert connection.get_root()["blob"]["i"] == 9


def test_readonly_server_serves_loads_and_refuses_commits(servers, tmp_path):
    path = tmp_path / "db.durus"
    connection = Connection(FileStorage(str(path)))
    connection.get_root()["kept"] = 1
    connection.commit()
    connection.get_storage().close()
    server = servers.ours("--file", str(path), "--readonly")
    reader = connect(server)
    assert reader.get_root()["kept"] == 1
    reader.get_root()["x"] = 2
    with pytest.raises(ConnectionError, match="closed the connection"):
        reader.commit()
    server.wait_for_log("refused by the storage: ReadOnlyError")
    assert connect(server).get_root()["kept"] == 1


def test_unix_domain_socket_with_umask_owner_and_group(servers, tmp_path):
    path = str(tmp_path / "durus.sock")
    user = os.getuid()
    server = servers.ours("--umask", "077", "--owner", str(user), "--group", str(os.getgid()),
                          address=path)
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o700
    connection = Connection(ClientStorage(address=path))
    connection.get_root()["unix"] = True
    connection.commit()
    assert server.quit() == 0
    assert not os.path.exists(path)


def test_stale_socket_file_is_replaced_but_other_files_are_not(servers, tmp_path):
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)  # never listens: like a server that died
    server = servers.ours(address=path)
    Connection(ClientStorage(address=path)).get_root()
    server.quit()
    regular = tmp_path / "regular"
    regular.write_text("precious")
    with pytest.raises(AssertionError, match="exists and is not a socket"):
        servers.ours(address=str(regular))
    assert regular.read_text() == "precious"


def test_abstract_socket(servers):
    name = "@durus-test-%d" % os.getpid()
    servers.ours(address=name)
    connection = Connection(ClientStorage(address=name))
    connection.get_root()["abstract"] = True
    connection.commit()


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback")
def test_ipv6(servers):
    server = servers.ours(address=("::1", 0))
    assert server.address[0] == "::1"
    connection = connect(server)
    connection.get_root()["v6"] = True
    connection.commit()
    assert "Ready on [::1]:" in server.log_text()


def test_sigterm_stops_gracefully_and_data_survives_restart(servers, tmp_path):
    path = tmp_path / "db.durus"
    sock_path = str(tmp_path / "s.sock")
    server = servers.ours("--file", str(path), address=sock_path)
    connection = Connection(ClientStorage(address=sock_path))
    connection.get_root()["kept"] = "yes"
    connection.commit()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(10) == 0
    assert "Stopped" in server.log_text() and not os.path.exists(sock_path)
    servers.ours("--file", str(path), address=sock_path)
    assert Connection(ClientStorage(address=sock_path)).get_root()["kept"] == "yes"


def test_temporary_file_is_removed_when_the_server_stops(servers):
    server = servers.ours()
    temporary = server.wait_for_log(r"Storage file=(\S+)").group(1)
    assert os.path.exists(temporary)
    connection = connect(server)
    connection.get_root()["x"] = 1
    connection.commit()
    connection.pack()  # nothing to pack in a temporary file; must not fail
    assert server.quit() == 0
    assert not os.path.exists(temporary)


def test_socket_from_systemd_socket_activation(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    log_path = tmp_path / "server.log"
    # systemd passes the socket as descriptor 3 and names the process in LISTEN_PID.
    command = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', sys.executable,
               "-m", "durus", "-s", "--logfile", str(log_path)]
    server = subprocess.Popen(command, cwd=tmp_path, env=our_env(), close_fds=False,
                              preexec_fn=lambda: os.dup2(listener.fileno(), 3))
    listener.close()
    try:
        connection = Connection(ClientStorage(port=port))
        connection.get_root()["activated"] = True
        connection.commit()
        assert "Ready on 127.0.0.1:%d" % port in log_path.read_text()
        connection.get_storage().close()
    finally:
        with connect_raw(("127.0.0.1", port)) as sock:
            sock.sendall(b"Q")
        assert server.wait(10) == 0


def test_wait_for_server_gives_up_naming_the_address():
    port = free_port()
    with pytest.raises(SystemExit, match="127.0.0.1:%d" % port):
        wait_for_server(port=port, maxtries=2, sleeptime=0.05)


def test_socket_addresses():
    assert isinstance(SocketAddress.new(("h", 1)), HostPortAddress)
    assert str(SocketAddress.new(("::1", 5))) == "[::1]:5"
    assert str(SocketAddress.new(("10.0.0.1", 5))) == "10.0.0.1:5"
    assert isinstance(SocketAddress.new("@x"), UnixAbstractAddress)
    assert str(SocketAddress.new("@x")) == "@x"
    unix = SocketAddress.new("/tmp/x.sock", owner="root", umask=0o22)
    assert type(unix) is UnixDomainSocketAddress and unix.umask == 0o22
    assert SocketAddress.new(unix) is unix
    with pytest.raises(ValueError):
        SocketAddress.new(42)
    server = StorageServer(MemoryStorage(), host=DEFAULT_HOST, port=DEFAULT_PORT)
    assert str(server.address) == "127.0.0.1:2972"
    with pytest.raises(ValueError):
        StorageServer(MemoryStorage(), gcbytes="lots")
