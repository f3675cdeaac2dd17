"""Durus 4.3's public API of durus.connection, durus.client_storage,
durus.storage_server, durus.storage and durus.error, as Durus users call it
(test_durus_names.py checks every name is there): ObjectDictionary,
ReferenceContainer, Cache.recent_objects, the address classes, and a
ClientStorage whose socket is replaced (by a recv-only socket-like object,
or by a peer that garbles its replies)."""

import gc
import socket
import threading
import weakref

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Cache, Connection, ObjectDictionary, ReferenceContainer
from durus.error import ProtocolError, WriteConflictError
from durus.persistent import Persistent
from durus.serialize import pack_record
from durus.storage import MemoryStorage
from durus.storage_server import (STATUS_INVALID, HostPortAddress, InheritedSocket, SocketAddress,
                                  UnixAbstractAddress, UnixDomainSocketAddress, wait_for_server)
from durus.utils import int4_to_str, int8_to_str


def test_durus_constants_have_durus_values():
    from durus import client_storage, connection, storage_server
    assert (storage_server.DEFAULT_HOST, storage_server.DEFAULT_PORT) == ("127.0.0.1", 2972)
    assert (storage_server.STATUS_OKAY, storage_server.STATUS_KEYERROR,
            storage_server.STATUS_INVALID) == (b"O", b"K", b"I")
    assert client_storage.STATUS_INVALID == STATUS_INVALID
    assert connection.ROOT_OID == int8_to_str(0)


# ObjectDictionary and ReferenceContainer

def test_object_dictionary_holds_values_weakly():
    d = ObjectDictionary()
    value = Persistent()
    d["k"] = value
    assert d.get("k") is value and d["k"] is value and "k" in d
    assert len(d) == 1 and list(d) == ["k"]
    del value
    gc.collect()
    assert d.get("k") is None and "k" not in d and len(d) == 0
    assert d.get("k", "default") == "default"
    with pytest.raises(KeyError):
        d["k"]
    assert list(d) == [] and d.mapping == {} and d.dead == set()


def test_object_dictionary_delete_is_noted_then_cleared_by_iteration():
    d = ObjectDictionary()
    values = [Persistent() for _ in range(3)]
    for n, value in enumerate(values):
        d[n] = value
    del d[1]
    assert len(d) == 2 and 1 not in d and d.dead == {1} and 1 in d.mapping
    assert sorted(d) == [0, 2] and d.dead == set() and 1 not in d.mapping
    with pytest.raises(KeyError):
        del d[1]
    d[1] = values[1]
    assert d[1] is values[1] and len(d) == 3


def test_object_dictionary_callback_notes_a_key_dead():
    d = ObjectDictionary()
    value = Persistent()
    value.key = "k"  # the callback reads the key of what it is given
    d["k"] = value
    d.callback(value)
    assert "k" in d.dead and "k" in d.mapping and d.get("k") is None


def test_object_dictionary_keeps_a_key_whose_old_value_dies():
    d = ObjectDictionary()
    old, new = Persistent(), Persistent()
    d["k"] = old
    d["k"] = new
    del old
    gc.collect()
    assert d["k"] is new and len(d) == 1


def test_object_dictionary_does_not_keep_itself_alive():
    d = ObjectDictionary()
    value = Persistent()
    d["k"] = value
    dictionary = weakref.ref(d)
    del d
    gc.collect()
    assert dictionary() is None
    del value  # its callback finds the dictionary gone


def test_reference_container_holds_by_identity():
    container = ReferenceContainer()
    a, b = Persistent(), Persistent()
    container.add(a)
    container.add(a)
    container.add(b)
    assert len(container) == 2 and a in container
    container.discard(a)
    container.discard(a)
    assert len(container) == 1 and a not in container and b in container


# Cache.recent_objects: the objects the connection holds strongly

def _connection_with_child():
    connection = Connection(MemoryStorage())
    connection.get_root()["child"] = Persistent()
    connection.commit()
    child = connection.get_root()["child"]
    child.__dict__  # a read: the connection holds it
    return connection, child


def test_recent_objects_are_the_connection_held_objects():
    connection, child = _connection_with_child()
    recent = connection.get_cache().recent_objects
    assert len(recent) == connection.held_count() >= 2
    recent.discard(child)
    assert len(recent) == connection.held_count()
    recent.add(child)
    recent.add(child)
    assert connection.oldest_held() is child


def test_an_object_let_go_of_leaves_the_cache_when_unreferenced():
    connection, child = _connection_with_child()
    oid = child._p_oid
    connection.get_cache().recent_objects.discard(child)
    del child
    connection.get_root()._p_set_status_ghost()  # drops the root's reference
    gc.collect()
    assert connection.get_cache().get(oid) is None
    assert connection.get(oid)._p_oid == oid  # loaded again


def test_cache_delitem_forgets_an_object():
    connection, child = _connection_with_child()
    del connection.get_cache()[child._p_oid]
    assert connection.get_cache().get(child._p_oid) is None
    assert child not in list(connection.get_cache())
    del connection.get_cache()[int8_to_str(999)]  # absent: nothing happens, as in Durus


def test_a_cache_without_connection_has_a_reference_container():
    cache = Cache(10)
    assert isinstance(cache.recent_objects, ReferenceContainer)
    assert cache.get_size() == 10 and cache.get_count() == 0


# Address classes and wait_for_server

def test_socket_address_new_as_durus_users_call_it(tmp_path):
    address = SocketAddress.new(("localhost", 9123))
    assert isinstance(address, HostPortAddress)
    assert (address.host, address.port, str(address)) == ("localhost", 9123, "localhost:9123")
    assert SocketAddress.new(address) is address
    assert str(HostPortAddress(host="::1", port=5)) == "[::1]:5"
    assert address.get_address_family() == socket.AF_INET
    path = str(tmp_path / "s")
    unix = SocketAddress.new(path, umask=0o077)
    assert isinstance(unix, UnixDomainSocketAddress) and unix.umask == 0o077
    assert str(unix) == path and unix.get_address_family() == socket.AF_UNIX
    abstract = SocketAddress.new("@durus-test")
    assert isinstance(abstract, UnixAbstractAddress) and str(abstract) == "@durus-test"


def test_listening_and_connected_sockets(tmp_path):
    for address in (HostPortAddress(port=0), UnixDomainSocketAddress(str(tmp_path / "s"))):
        listening = address.get_listening_socket()
        try:
            assert str(InheritedSocket(listening)) == str(address).split(" ")[0]
            connected = address.get_connected_socket()
            assert connected is not None
            connected.close()
            wait_for_server(address=address, maxtries=1, sleeptime=0.01)
        finally:
            address.close(listening)
        assert address.get_connected_socket() is None
        with pytest.raises(SystemExit):
            wait_for_server(address=address, maxtries=2, sleeptime=0.01)


# A ClientStorage given another socket

class RecvOnlySocket:
    """A socket-like object with recv() and sendall() but no recv_into(),
    counting its recv() calls."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.recv_calls = 0

    def recv(self, n: int) -> bytes:
        self.recv_calls += 1
        return self.sock.recv(n)

    def sendall(self, data) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def storage(servers, tmp_path):
    """A ClientStorage of our server, on a database with a root."""
    server = servers.ours("--file", str(tmp_path / "db.durus"))
    storage = ClientStorage(address=server.address)
    Connection(storage)
    yield storage
    storage.close()


def test_a_recv_only_socket_carries_the_session(storage):
    root = storage.load(int8_to_str(0))
    recv_only = RecvOnlySocket(storage.s)
    storage.s = recv_only
    assert storage.s is recv_only
    # A new stream: the record cache is emptied, so the load asks the server.
    assert storage.load(int8_to_str(0)) == root and recv_only.recv_calls >= 1
    connection = Connection(storage)
    connection.get_root()["x"] = 1
    connection.commit()
    assert Connection(storage).get_root()["x"] == 1


class GarblingPeer:
    """The server end of a socket pair: reads what the client sends and
    answers with reply."""

    def __init__(self, reply: bytes):
        self.client_end, self.server_end = socket.socketpair()
        self.client_end.settimeout(10)
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.server_end:
            self.server_end.recv(1 << 16)
            self.server_end.sendall(self.reply)
            self.server_end.settimeout(0.5)
            try:
                while self.server_end.recv(1 << 16):
                    pass
            except OSError:
                pass


def _commit_change(storage) -> Connection:
    """Return a Connection of storage whose root is changed, to commit."""
    connection = Connection(storage)
    connection.get_root()._p_note_change()
    return connection


@pytest.mark.parametrize("reply, call", [
    (b"?", lambda storage, connection: storage.pack()),
    (b"?", lambda storage, connection: storage.load(int8_to_str(0))),
    (b"?", lambda storage, connection: list(storage.bulk_load([int8_to_str(0)]))),
    (int4_to_str(0) + b"?", lambda storage, connection: connection.commit()),
])
def test_a_garbled_reply_raises_protocol_error(storage, reply, call):
    connection = _commit_change(storage)
    peer = GarblingPeer(reply)
    storage.s = peer.client_end
    with pytest.raises(ProtocolError):
        call(storage, connection)
    with pytest.raises(ConnectionError):  # the stream is out of step for good
        storage.sync()
    peer.thread.join(5)


def test_a_refused_commit_raises_write_conflict(storage):
    connection = _commit_change(storage)
    peer = GarblingPeer(int4_to_str(0) + STATUS_INVALID)
    storage.s = RecvOnlySocket(peer.client_end)
    with pytest.raises(WriteConflictError):
        connection.commit()
    assert int8_to_str(0) in connection.changed  # still to be committed after abort()
    peer.thread.join(5)


def test_commits_records_as_before_after_swapping_back(storage):
    original = storage.s
    storage.s = RecvOnlySocket(original)
    storage.begin()
    oid = storage.new_oid()
    record = pack_record(oid, b"data", b"")
    storage.store(oid, record)
    storage.end()
    storage.s = original
    assert storage.load(oid) == record
