"""Authentication: read-write and read-only users, wrong secrets, plain
protocol-1 clients (ours and Durus 4.3's) refused by a server that requires
authentication, and authenticating clients that refuse open servers and
impostors; all with clear errors on both sides."""

import os
import secrets
import socket
import threading

import pytest

from durus.auth import (AUTH_PROTOCOL, AuthenticationError, client_handshake, parse_users,
                        read_secret)
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ReadOnlyError

from server_processes import connect_raw
from wire import ROOT_OID, is_closed_by_server, load, recv_exact


class Users:
    """A users file with a read-write user alice and a read-only user bob."""

    def __init__(self, directory):
        self.secrets = {"alice": secrets.token_urlsafe(32), "bob": secrets.token_urlsafe(32)}
        self.path = directory / "users"
        self.path.write_text("# name role secret\nalice read-write %s\n\nbob read-only %s\n"
                             % (self.secrets["alice"], self.secrets["bob"]))
        self.path.chmod(0o600)

    def storage(self, server, user: str, **options) -> ClientStorage:
        return ClientStorage(address=server.address, user=user, secret=self.secrets[user],
                             **options)


@pytest.fixture
def users(tmp_path):
    return Users(tmp_path)


@pytest.fixture
def secured(servers, users):
    """Our server on a temporary file, requiring authentication."""
    return servers.ours("--users-file", str(users.path))


def raw_session(server, users, user: str) -> socket.socket:
    """Return a raw socket on which user has authenticated."""
    sock = connect_raw(server.address)
    read_only = client_handshake(sock.sendall, lambda n: recv_exact(sock, n), user,
                                 users.secrets[user].encode(), "test")
    assert read_only == (user == "bob")
    return sock


def test_read_write_and_read_only_users(secured, users):
    alice = Connection(users.storage(secured, "alice"))
    alice.get_root()["x"] = 1
    alice.commit()
    bob = Connection(users.storage(secured, "bob"))
    assert bob.get_storage().read_only and not alice.get_storage().read_only
    assert bob.get_root()["x"] == 1
    alice.get_root()["x"] = 2
    alice.commit()
    bob.abort()  # syncs
    assert bob.get_root()["x"] == 2
    bob.get_root()["x"] = 3
    with pytest.raises(ReadOnlyError, match="commit refused: this user is read-only"):
        bob.commit()
    bob.abort()
    with pytest.raises(ReadOnlyError):
        bob.pack()
    with pytest.raises(ReadOnlyError):
        bob.get_storage().stop_server()
    assert bob.get_root()["x"] == 2  # still connected and served
    # The server enforces the role itself, whatever the client does.
    for command in b"C", b"N", b"P", b"Q":
        with raw_session(secured, users, "bob") as sock:
            assert load(sock, ROOT_OID).startswith(b"O")
            sock.sendall(command)
            assert is_closed_by_server(sock)
    log = secured.wait_for_log(r"user 'bob' dropped: read-only user may not send b'Q' \(quit\)")
    assert "may not send b'C' (commit)" in log.string
    alice.get_root()["x"] = 4
    alice.commit()


@pytest.mark.parametrize("user, secret, reason", [
    ("alice", "not-alice's-secret-at-all", "wrong secret"),
    ("mallory", "mallory-made-this-up-herself", "no such user"),
])
def test_wrong_secret_or_unknown_user_is_refused(secured, users, user, secret, reason):
    with pytest.raises(AuthenticationError, match="refused user %r: wrong user name or secret"
                       % user):
        ClientStorage(address=secured.address, user=user, secret=secret)
    secured.wait_for_log("authentication failed for user %r: %s" % (user, reason))
    Connection(users.storage(secured, "alice")).get_root()


def test_plain_clients_are_refused_with_clear_errors_on_both_sides(secured, users, run_peer):
    with pytest.raises(AuthenticationError, match="requires authentication: give a user"):
        ClientStorage(address=secured.address)
    out = run_peer("""
from durus.client_storage import ClientStorage
from durus.error import ProtocolError
try:
    ClientStorage(port=%d)
except ProtocolError as exc:
    print(exc)
""" % secured.address[1])
    assert out.strip() == "Protocol version mismatch."
    log = secured.wait_for_log(
        r"(?s)(protocol [13] client refused: this server requires authentication \(protocol 2\)"
        r".*){2}").string
    # Requests without the handshake, 'Q' included, are refused too.
    for request in b"Q", b"L" + ROOT_OID:
        with connect_raw(secured.address) as sock:
            sock.sendall(request)
            assert is_closed_by_server(sock)
    secured.wait_for_log(r"sent b'L' before authenticating")
    assert "sent b'Q' before authenticating" in secured.log_text()
    assert secured.process.poll() is None
    assert "Stopped" not in log
    Connection(users.storage(secured, "alice")).get_root()


def test_authenticating_client_refuses_open_servers(servers, peer_python, tmp_path):
    for server in (servers.ours(), servers.peer(peer_python, "--file", str(tmp_path / "x"))):
        with pytest.raises(AuthenticationError, match="does not authenticate clients \\(it "
                                                      "answered protocol 1\\)"):
            ClientStorage(address=server.address, secret="a-secret-of-some-length")


def test_client_refuses_a_server_that_does_not_know_its_secret():
    """An impostor that takes any answer cannot prove it knows the secret."""
    listener = socket.create_server(("127.0.0.1", 0))

    def impostor():
        sock, _ = listener.accept()
        with sock:
            assert recv_exact(sock, 5) == b"V" + AUTH_PROTOCOL
            sock.sendall(AUTH_PROTOCOL + os.urandom(32))
            size = recv_exact(sock, 1)[0]
            recv_exact(sock, size + 64)
            sock.sendall(b"OW" + os.urandom(32))
            sock.recv(1)  # until the client hangs up

    thread = threading.Thread(target=impostor)
    thread.start()
    try:
        with pytest.raises(AuthenticationError, match="did not prove that it knows the secret"):
            ClientStorage(port=listener.getsockname()[1], user="alice",
                          secret="alice's-real-secret-here")
    finally:
        thread.join(10)
        listener.close()


def test_malformed_handshakes_never_upset_the_server(secured, users):
    good = Connection(users.storage(secured, "alice"))
    hellos = [
        b"\0" + b"n" * 64,                                # empty user name
        b"\3\xff\xfe\xfd" + b"n" * 64,                    # not UTF-8
        b"\5alice" + b"\0" * 64 + b"L" + ROOT_OID,        # bad proof, request pipelined
        b"\xff" + b"a" * 100,                             # cut short, then gone
    ]
    for hello in hellos:
        with connect_raw(secured.address) as sock:
            sock.sendall(b"V" + AUTH_PROTOCOL)
            assert recv_exact(sock, 4 + 32)[:4] == AUTH_PROTOCOL
            sock.sendall(hello)
            if hello is not hellos[-1]:
                assert recv_exact(sock, 1) == b"I"
                assert is_closed_by_server(sock)
    secured.wait_for_log("disconnected in the middle of a request")
    assert secured.log_text().count("authentication failed") == 3
    good.get_root()["still"] = "served"
    good.commit()


def test_users_file_and_secret_errors_never_show_secrets(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="line 2: the role must be one of") as caught:
        parse_users("a read-write %s\nb admin %s\n" % ("s" * 20, "t" * 20), "users")
    assert "t" * 20 not in str(caught.value)
    with pytest.raises(ValueError, match="line 1: a secret must be at least 16"):
        parse_users("a read-only short\n", "users")
    with pytest.raises(ValueError, match="appears twice"):
        parse_users("a read-only %s\na read-write %s\n" % ("s" * 20, "s" * 20), "users")
    with pytest.raises(ValueError, match="names no users"):
        parse_users("# nobody\n", "users")
    path = tmp_path / "secret"
    path.write_text("  from-a-file-0123456789\n")
    monkeypatch.setenv("DURUS_SECRET", "from-the-environment-0123")
    assert read_secret(str(path)) == b"from-a-file-0123456789"
    assert read_secret() == b"from-the-environment-0123"
    monkeypatch.delenv("DURUS_SECRET")
    assert read_secret() is None
