"""What one client can cost the server: connections beyond max_connections,
handshakes that never finish, idle clients, and requests over
max_frame_size are cut off, and the other clients go on being served.
(max_commit_size: test_storage_server.py::test_oversized_requests_are_refused_before_buffering.)"""

import re
import ssl
import time

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.persistent_dict import PersistentDict
from durus.storage_server import (DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
                                  DEFAULT_MAX_FRAME_SIZE, StorageServer)
from durus.storage import MemoryStorage
from durus.utils import int8_to_str

from server_processes import connect, connect_raw
from wire import PROTOCOL, is_closed_by_server, recv_exact


def test_defaults_are_bounded():
    server = StorageServer(MemoryStorage())
    assert server.max_connections == DEFAULT_MAX_CONNECTIONS <= 1000
    assert server.max_frame_size == DEFAULT_MAX_FRAME_SIZE <= server.max_commit_size
    assert 0 < server.handshake_timeout == DEFAULT_HANDSHAKE_TIMEOUT <= 30
    # Durus clients hold their connection for as long as they run and do
    # not reconnect: an idle limit is for operators who know their clients.
    assert server.idle_timeout is None


def test_connections_beyond_max_connections_are_closed_at_once(servers, tmp_path):
    server = servers.custom(tmp_path / "db.durus", max_connections=2)
    first = connect(server)
    with connect_raw(server.address) as second:
        with connect_raw(server.address) as third:
            assert is_closed_by_server(third)
        server.wait_for_log(r"Client #3 \(127\.0\.0\.1:\d+\) refused: 2 clients connected, "
                            r"the limit \(max_connections\)")
        second.sendall(b"V" + PROTOCOL)
        assert recv_exact(second, 4) == PROTOCOL
    # A place is free again once a client leaves.
    deadline = time.monotonic() + 10
    while True:
        try:
            replacement = connect(server, timeout=5)
            break
        except ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    replacement.get_root()["n"] = 1
    replacement.commit()
    first.abort()
    assert first.get_root()["n"] == 1
    for connection in first, replacement:  # makes room for the 'Q' that stops the server
        connection.get_storage().close()


def test_unfinished_handshakes_are_dropped_after_handshake_timeout(servers, tmp_path,
                                                                   certificates):
    users = tmp_path / "users"
    users.write_text("alice read-write %s\n" % ("a" * 32))
    users.chmod(0o600)
    server = servers.custom(tmp_path / "db.durus", handshake_timeout=0.5, timeout=60,
                            certfile=certificates.server.certfile,
                            keyfile=certificates.server.keyfile, users_file=str(users))
    context = ssl.create_default_context(cafile=certificates.ca.cafile)
    with connect_raw(server.address) as silent, connect_raw(server.address) as raw:
        # silent never starts TLS; the other finishes TLS but never authenticates.
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as unauthenticated:
            unauthenticated.sendall(b"V")
            assert is_closed_by_server(silent)
            assert is_closed_by_server(unauthenticated)
    log = server.wait_for_log(r"authentication not finished within 0\.5 s").string
    assert "TLS handshake not finished within 0.5 s (handshake_timeout)" in log
    good = connect(server, cafile=certificates.ca.cafile, user="alice", secret="a" * 32)
    time.sleep(1)  # authenticated clients are past the handshake deadline
    good.get_root()["ok"] = True
    good.commit()


def test_idle_clients_are_dropped_after_idle_timeout(servers, tmp_path):
    server = servers.custom(tmp_path / "db.durus", idle_timeout=1.0)
    busy = connect(server)
    idle = ClientStorage(address=server.address)
    busy.get_root()["n"] = 0
    busy.commit()
    for _ in range(8):  # 2 s of requests, none more than 0.25 s apart
        time.sleep(0.25)
        busy.get_root()["n"] += 1
        busy.commit()
    with pytest.raises(ConnectionError, match="closed the connection"):
        idle.sync()
    server.wait_for_log(r"Client #2 \(127\.0\.0\.1:\d+\) dropped: idle for more than 1\.0 s")
    assert not re.search("Client #1 .*dropped", server.log_text())
    assert busy.get_root()["n"] == 8


def test_requests_over_max_frame_size_are_refused(servers, tmp_path):
    server = servers.custom(tmp_path / "db.durus", max_frame_size=800)
    storage = ClientStorage(address=server.address, cache_bytes=0)  # every oid goes out
    connection = Connection(storage)
    connection.get_root()["items"] = items = [PersistentDict() for _ in range(100)]
    connection.commit()
    oids = [item._p_oid for item in items]
    assert len(list(storage.bulk_load(oids))) == 100  # 800 bytes of oids
    with pytest.raises(ConnectionError, match="closed the connection"):
        list(storage.bulk_load(oids + [int8_to_str(0)]))
    server.wait_for_log("bulk load request of 808 bytes is over the limit of 800 bytes")
    assert connect(server).get_root()["items"][99] is not None

