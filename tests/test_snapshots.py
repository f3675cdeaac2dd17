"""Snapshot isolation: every transaction reads the database as of its start,
with no ReadConflictError, and commits stay serializable. Over our server
(protocol 3) and the relational storages; Durus 4.3 clients keep Durus's rules."""

import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError, ReadConflictError, SnapshotExpiredError
from durus.persistent import Persistent
from durus.persistent_dict import PersistentDict
from durus.protocol import SNAPSHOT_PROTOCOL, STATUS_EXPIRED, STATUS_KEYERROR, STATUS_OKAY
from durus.utils import int4_to_str, str_to_int4

import bank
import server_processes
from server_processes import durus_command, our_env
from durus.record_format import pack_record
from session_peer import Peer, commit, commit_request, new_oids, record, shared_state



# Sessions, in-process.

def snapshot_peer(shared, name: str) -> Peer:
    peer = Peer(shared, name)
    assert peer.run(b"V" + SNAPSHOT_PROTOCOL) == SNAPSHOT_PROTOCOL
    return peer


def loaded(answer: bytes) -> bytes:
    assert answer[:1] == STATUS_OKAY, answer
    return answer[5:5 + str_to_int4(answer[1:5])]


def expired_reason(answer: bytes) -> str:
    assert answer[:1] == STATUS_EXPIRED, answer
    return answer[5:5 + str_to_int4(answer[1:5])].decode()


def test_a_snapshot_session_reads_what_was_there_when_it_last_synced():
    shared = shared_state()
    alice, bob = snapshot_peer(shared, "alice"), Peer(shared, "bob")
    old, new = new_oids(bob, 2)
    commit(bob, (old, b"one"))
    assert alice.run(b"S") == int4_to_str(1) + old
    commit(bob, (old, b"two"), (new, b"born later"))
    assert loaded(alice.run(b"L" + old)) == record(old, b"one")
    assert alice.run(b"L" + new)[:1] == STATUS_KEYERROR  # not there in its snapshot
    answer = alice.run(b"S")
    assert answer[:4] == int4_to_str(2) and {answer[4:12], answer[12:20]} == {old, new}
    assert loaded(alice.run(b"L" + old)) == record(old, b"two")
    assert loaded(alice.run(b"L" + new)) == record(new, b"born later")
    assert shared.history.bytes == 0  # no snapshot needs anything kept


def test_a_durus_session_still_gets_invalid():
    shared = shared_state()
    durus, bob = Peer(shared, "durus"), Peer(shared, "bob")
    oid = new_oids(bob, 1)[0]
    commit(bob, (oid, b"one"))
    assert durus.run(b"L" + oid) == b"I"
    assert shared.history.bytes == 0  # nobody reads snapshots: nothing kept


def test_each_snapshot_reads_its_own_version():
    shared = shared_state()
    bob = Peer(shared, "bob")
    oid = new_oids(bob, 1)[0]
    readers = []
    for version in range(4):
        commit(bob, (oid, b"v%d" % version))
        readers.append(snapshot_peer(shared, "reader%d" % version))
    commit(bob, (oid, b"last"))
    for version, reader in enumerate(readers):
        assert loaded(reader.run(b"L" + oid)) == record(oid, b"v%d" % version)
        assert loaded(reader.run(b"B" + int4_to_str(1) + oid)) == record(oid, b"v%d" % version)


def test_old_records_past_snapshot_bytes_expire_the_oldest_snapshot():
    shared = shared_state()
    shared.history.max_bytes = 1000
    alice, carol, bob = snapshot_peer(shared, "alice"), snapshot_peer(shared, "carol"), Peer(
        shared, "bob")
    oids = new_oids(bob, 3)
    commit(bob, *((oid, b"x" * 400) for oid in oids))
    alice.run(b"S")
    commit(bob, (oids[0], b"y"))
    carol.run(b"S")
    commit(bob, (oids[1], b"y"), (oids[2], b"y"))  # over 1000 bytes kept for alice
    assert "snapshot_bytes" in expired_reason(alice.run(b"L" + oids[0]))
    assert loaded(carol.run(b"L" + oids[1])) == record(oids[1], b"x" * 400)
    assert shared.history.bytes <= 1000
    alice.run(b"S")  # a new transaction reads again
    assert loaded(alice.run(b"L" + oids[0])) == record(oids[0], b"y")


def test_a_snapshot_held_past_snapshot_age_expires():
    shared = shared_state()
    shared.history.max_age = 0.05
    alice, bob = snapshot_peer(shared, "alice"), Peer(shared, "bob")
    oid = new_oids(bob, 1)[0]
    commit(bob, (oid, b"one"))
    alice.run(b"S")
    time.sleep(0.1)
    commit(bob, (oid, b"two"))
    assert "snapshot_age" in expired_reason(alice.run(b"L" + oid))


def test_snapshots_survive_a_pack_except_for_what_it_removed(tmp_path):
    from durus.file_storage import FileStorage
    storage = FileStorage(str(tmp_path / "db.durus"))
    shared = shared_state(storage)
    alice, bob = snapshot_peer(shared, "alice"), Peer(shared, "bob")
    root, kept, dropped = new_oids(bob, 3)
    def root_record(*refs: bytes) -> bytes:
        return pack_record(root, b"root", b"".join(refs))
    bob.run(b"C")
    bob.run(commit_request((root, root_record(kept, dropped)), (kept, record(kept, b"k1")),
                            (dropped, record(dropped, b"d"))))
    alice.run(b"S")
    bob.run(b"C")
    bob.run(commit_request((root, root_record(kept)), (kept, record(kept, b"k2"))))
    assert bob.run(b"P") == STATUS_OKAY
    while shared.packing.running:
        shared.packing.step()
    assert loaded(alice.run(b"L" + kept)) == record(kept, b"k1")
    assert loaded(alice.run(b"L" + root)) == root_record(kept, dropped)
    assert loaded(alice.run(b"L" + dropped)) == record(dropped, b"d")
    bob.run(b"S")  # the storage reports what the pack removed: nothing changes
    assert loaded(alice.run(b"L" + dropped)) == record(dropped, b"d")
    alice.run(b"S")
    assert alice.run(b"L" + dropped)[:1] == STATUS_KEYERROR
    storage.close()


def test_what_a_pack_removes_past_snapshot_bytes_expires(tmp_path):
    from durus.file_storage import FileStorage
    storage = FileStorage(str(tmp_path / "db.durus"))
    shared = shared_state(storage)
    shared.history.max_bytes = 500
    alice, bob = snapshot_peer(shared, "alice"), Peer(shared, "bob")
    oids = new_oids(bob, 4)
    bob.run(b"C")
    bob.run(commit_request((oids[0], pack_record(oids[0], b"root", b"".join(oids[1:]))),
                           *((oid, record(oid, b"x" * 300)) for oid in oids[1:])))
    alice.run(b"S")
    bob.run(b"C")
    bob.run(commit_request((oids[0], pack_record(oids[0], b"root", b""))))
    bob.run(b"P")
    while shared.packing.running:
        shared.packing.step()
    answers = [alice.run(b"L" + oid) for oid in oids[1:]]
    assert answers[0][:1] == STATUS_OKAY  # kept, within 500 bytes
    assert "a pack removed" in expired_reason(answers[-1])
    storage.close()


# Connections, over real servers.

class Counter(Persistent):
    def __init__(self, n: int = 0):
        self.n = n


def test_durus_clients_on_our_server_still_get_read_conflicts(servers, run_peer):
    server = servers.ours()
    ours = Connection(ClientStorage(address=server.address))
    ours.get_root()["a"] = PersistentDict(n=0)
    ours.get_root()["b"] = PersistentDict(n=0)
    ours.commit()
    out = run_peer("""
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ReadConflictError
one = Connection(ClientStorage(port=%d))
two = Connection(ClientStorage(port=%d))
a = one.get_root()["a"]
a["n"]
b = one.get_root()["b"]
two.get_root()["a"]["n"] = 1
two.get_root()["b"]["n"] = 1
two.commit()
try:
    b["n"]
except ReadConflictError:
    print("ReadConflictError")
""" % (server.address[1], server.address[1]))
    assert out.strip() == "ReadConflictError"


def test_an_expired_snapshot_is_a_clear_conflict_only_if_it_matters(tmp_path, servers):
    server = servers.custom(tmp_path / "db.durus", snapshot_bytes=200)
    # one keeps no records, so that it loads each from the server when it reads it.
    one = Connection(ClientStorage(address=server.address, cache_bytes=0))
    two = Connection(ClientStorage(address=server.address))
    root = two.get_root()
    root["a"], root["b"], root["c"] = Counter(), Counter(), Counter()
    two.commit()
    one.abort()
    a, b, c = (one.get_root()[name] for name in "abc")
    assert a.n == 0
    for n in range(1, 4):  # a, b and c change; the old records are more than 200 bytes
        for name in "abc":
            two.get_root()[name].n = n
        two.get_root()["padding"] = "x" * 300
        two.commit()
    with pytest.raises(SnapshotExpiredError, match="snapshot_bytes") as raised:
        b.n  # a, read in this transaction, has changed since: it cannot go on
    assert isinstance(raised.value, ReadConflictError)
    one.abort()
    assert (a.n, b.n) == (3, 3)
    one.abort()  # a new transaction, which has read nothing yet
    for name in "abc":
        two.get_root()[name].n = 4
    for _ in range(3):
        two.get_root()["padding"] += "y" * 300
        two.commit()
    assert c.n == 4  # nothing this transaction read changed: it just reads on


def test_bank_over_our_server_audits_never_conflict_and_no_transfer_is_lost(tmp_path, servers):
    clients_count = 4
    server = servers.ours("--file", str(tmp_path / "bank.durus"))
    connection = Connection(ClientStorage(address=server.address))
    bank.create(connection, clients_count)
    with bank.Clients(server, tmp_path, 6, clients_count, read_share=0.5) as clients:
        time.sleep(2)
        connection.pack()
        results = clients.finish()
    done = bank.check_server(server.address)
    bank.check_promises(done, clients.acked(), [0] * clients_count)
    assert sum(result["audits"] for result in results) > 20
    assert sum(result["audit_conflicts"] for result in results) == 0
    assert sum(result["commits"] for result in results) == sum(done)


def test_transaction_commits_or_aborts(tmp_path):
    from durus.file_storage import FileStorage
    connection = Connection(FileStorage(str(tmp_path / "db.durus")))
    with connection.transaction():
        connection.get_root()["x"] = 1
    with pytest.raises(KeyError):
        with connection.transaction():
            connection.get_root()["x"] = 2
            raise KeyError("changed my mind")
    assert connection.get_root()["x"] == 1
    assert not connection.changed


def test_run_retries_conflicts_and_returns_the_result(servers):
    server = servers.ours()
    one, two = (Connection(ClientStorage(address=server.address)) for _ in range(2))
    one.get_root()["counter"] = Counter()
    one.commit()
    calls = []

    def increment(connection: Connection, by: int) -> int:
        counter = connection.get_root()["counter"]
        counter.n += by
        if not calls:  # someone else gets in first, once
            two.abort()
            two.get_root()["counter"].n += 100
            two.commit()
        calls.append(counter.n)
        return counter.n

    assert one.run(increment, one, by=1) == 101
    assert len(calls) == 2
    two.abort()
    assert two.get_root()["counter"].n == 101
    with pytest.raises(ValueError, match="tries"):
        one.run(increment, one, 1, tries=0)

    def always_conflicts() -> None:
        raise ConflictError()
    with pytest.raises(ConflictError):
        one.run(always_conflicts, tries=2)


# The model: concurrent transfers, random reads and writes, random interleavings.

ACCOUNTS = 4
START = 100


class Account(Persistent):
    def __init__(self):
        self.balance = START


def open_over_server(server):
    return lambda: ClientStorage(address=server.address)


@pytest.fixture(params=["server", "sqlite", "postgres"])
def storage_opener(request, tmp_path_factory):
    if request.param == "server":
        factory = server_processes.Servers(tmp_path_factory.mktemp("model"))
        yield open_over_server(factory.ours())
        factory.stop_all()
    elif request.param == "sqlite":
        from durus.sqlite_storage import SqliteStorage
        path = str(tmp_path_factory.mktemp("model") / "db.sqlite")
        yield lambda: SqliteStorage(path)
    else:
        from durus.postgres_storage import PostgresStorage
        dsn = request.getfixturevalue("postgres").create_database("t_snapshot_model")
        yield lambda: PostgresStorage(dsn)


step = st.tuples(st.integers(0, 2),  # client
                 st.sampled_from(["read", "transfer", "commit", "abort", "audit"]),
                 st.integers(0, ACCOUNTS - 1), st.integers(0, ACCOUNTS - 1),
                 st.integers(1, 30))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=5, max_size=60))
def test_concurrent_transfers_are_serializable(storage_opener, steps):
    """Each committed transaction's reads equal the state its commit order
    gives them (serializable: no lost update, no write skew); every read,
    audits included, sees one consistent state and raises nothing."""
    connections = [Connection(storage_opener()) for _ in range(3)]
    try:
        _run_model(connections, steps)
    finally:
        for connection in connections:
            connection.get_storage().close()


def _read(snapshot: list, wrote: dict, seen: dict, account: int, balance: int) -> None:
    """Check a balance a transaction read: what it wrote, else its snapshot's."""
    assert balance == wrote.get(account, snapshot[account]), "not the snapshot's balance"
    seen.setdefault(account, balance)


def _run_model(connections: list, steps: list) -> None:
    setup = connections[0]
    setup.get_root()["bank"] = PersistentDict((i, Account()) for i in range(ACCOUNTS))
    setup.commit()
    state = [START] * ACCOUNTS  # the committed state, replayed in commit order
    snapshots = [list(state) for _ in connections]  # the state each transaction began in
    seen = [{} for _ in connections]  # per client: {account: balance it read}
    wrote = [{} for _ in connections]
    for connection in connections:
        connection.abort()
    for client, action, source, target, amount in steps:
        connection = connections[client]
        accounts = connection.get_root()["bank"]
        if action in ("read", "transfer"):
            for i in {source, target}:
                _read(snapshots[client], wrote[client], seen[client], i, accounts[i].balance)
        if action == "audit":
            balances = [accounts[i].balance for i in range(ACCOUNTS)]
            assert sum(balances) == START * ACCOUNTS, balances
            for i, balance in enumerate(balances):
                _read(snapshots[client], wrote[client], seen[client], i, balance)
        elif action == "transfer" and source != target:
            accounts[source].balance -= amount
            accounts[target].balance += amount
            wrote[client][source] = accounts[source].balance
            wrote[client][target] = accounts[target].balance
        elif action in ("commit", "abort"):
            try:
                if action == "abort":
                    raise ConflictError()
                connection.commit()
            except ConflictError:
                connection.abort()
            else:
                if wrote[client]:  # serialized at its commit: what it read is still so
                    for account, balance in seen[client].items():
                        # Else a lost update (written) or write skew (only read).
                        assert state[account] == balance, "a commit read a stale balance"
                    state = [wrote[client].get(i, state[i]) for i in range(ACCOUNTS)]
            seen[client], wrote[client] = {}, {}
            snapshots[client] = list(state)
    for connection in connections:
        connection.abort()
    final = [setup.get_root()["bank"][i].balance for i in range(ACCOUNTS)]
    assert final == state and sum(final) == START * ACCOUNTS


def test_snapshot_limits_are_checked(tmp_path):
    from durus.storage import MemoryStorage
    from durus.storage_server import StorageServer
    for bad in ({"snapshot_bytes": -1}, {"snapshot_age": "600"}, {"snapshot_bytes": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            StorageServer(MemoryStorage(), port=0, **bad)
    done = subprocess.run(durus_command("-s", "--file", str(tmp_path / "db.durus"),
                                        "--snapshot-age", "-3", "--port", "0"),
                          env=our_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "snapshot_age must be a number >= 0" in done.stderr
