"""Safe defaults: Unix sockets only their owner may use, a loud warning for
a server reachable from the network without TLS and authentication, Durus
4.3 clients still served by an open local server, and a server that treats
records as bytes and never unpickles what clients send."""

import os
import pickle
import stat

from durus.exposure import exposure_warning
from durus.storage_server import STATUS_OKAY

from server_processes import connect_raw
from wire import ROOT_OID, commit, load, new_oids, record


def test_unix_sockets_are_for_their_owner_by_default(servers, tmp_path, run_peer):
    path = str(tmp_path / "owner.sock")
    servers.ours(address=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # Durus 4.3's client, run by the owner, is served as before.
    out = run_peer("""
from durus.client_storage import ClientStorage
from durus.connection import Connection
connection = Connection(ClientStorage(address=%r))
connection.get_root()["old client"] = "welcome"
connection.commit()
print(Connection(ClientStorage(address=%r)).get_root()["old client"])
""" % (path, path))
    assert out.strip() == "welcome"
    group_path = str(tmp_path / "group.sock")
    servers.ours("--group", str(os.getgid()), address=group_path)
    assert stat.S_IMODE(os.stat(group_path).st_mode) == 0o660


def test_reachable_server_without_tls_warns_loudly(servers, tmp_path):
    users = tmp_path / "users"
    users.write_text("alice read-write %s\n" % ("a" * 32))
    users.chmod(0o600)
    # Users but no TLS, on every interface (users, so that nobody else can use it meanwhile).
    server = servers.ours("--users-file", str(users), address=("0.0.0.0", 0))
    log = server.wait_for_log(r"\*\*\* SECURITY WARNING: the Durus server listens on "
                              r"0\.0\.0\.0:\d+, beyond this machine, and its traffic is not "
                              r"encrypted").string
    assert "Ready on 0.0.0.0" in log
    loopback = servers.ours()
    assert "WARNING" not in loopback.log_text()
    assert "neither encrypts (TLS) nor authenticates" in exposure_warning("[::]:2972", False,
                                                                          False)
    assert "does not authenticate clients" in exposure_warning("10.0.0.1:2972", True, False)
    assert exposure_warning("10.0.0.1:2972", True, True) is None


class Exploit:
    """Unpickling this runs code: it writes a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_server_treats_records_as_bytes_and_never_unpickles_them(servers, tmp_path):
    victim = tmp_path / "written-by-unpickling"
    evil = pickle.dumps(Exploit(str(victim)), protocol=2)
    # Debug logging, where the server names the class of each record it stores.
    server = servers.ours("--file", str(tmp_path / "db.durus"), "--logginglevel", "1")
    with connect_raw(server.address) as sock:
        oid = new_oids(sock, 2)[1]
        root = record(ROOT_OID, evil, oid)  # refers to oid, so a pack keeps it
        child = record(oid, evil + b"\x80\x02c__main__\nnot really\n")
        assert commit(sock, root, child) == STATUS_OKAY
        sock.sendall(b"P")
        assert sock.recv(1) == STATUS_OKAY
        server.wait_for_log("Pack finished")
        assert load(sock, ROOT_OID) == STATUS_OKAY + root
        assert load(sock, oid) == STATUS_OKAY + child
    assert server.quit() == 0
    assert "b'open'" in server.log_text()  # it read the class name, and no further
    assert not victim.exists()
    # The same record, unpickled by a client that trusts it, does run code.
    pickle.loads(evil)
    assert victim.exists()
