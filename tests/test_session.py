"""The server's protocol sessions (durus.session), driven in-process over a
real storage by feeding them bytes, as the server's event loop does; the
socket side is tested through server processes in test_storage_server."""

import socket

import pytest

from durus.file_storage import FileStorage
from durus.group_commit import GroupCommit
from durus.protocol import (PROTOCOL, STATUS_INVALID, STATUS_KEYERROR, STATUS_OKAY,
                            STATUS_REFUSED, commit_payload, split_commit_payload)
from durus.session import ClientError, Wait
from durus.utils import int4_to_str, int8_to_str, join_bytes

from session_peer import Peer, commit, commit_request, new_oids, record, shared_state


def test_version_is_answered_and_a_wrong_one_refused():
    peer = Peer(shared_state())
    assert peer.run(b"V" + PROTOCOL) == PROTOCOL
    with pytest.raises(ClientError, match="protocol 7 is not supported"):
        peer.run(b"V" + int4_to_str(7))
    assert peer.output == PROTOCOL  # the server says its version before hanging up


def test_goodbye_ends_the_session():
    peer = Peer(shared_state())
    with pytest.raises(StopIteration):
        peer.run(b".")


def test_unknown_command_is_a_client_error_that_names_tls():
    with pytest.raises(ClientError, match="unknown command byte b'Z'"):
        Peer(shared_state()).run(b"Z")
    with pytest.raises(ClientError, match="a TLS handshake"):
        Peer(shared_state()).run(b"\x16\x03\x01")


def test_requests_may_arrive_a_byte_at_a_time():
    peer = Peer(shared_state())
    oid = new_oids(peer, 1)[0]
    answers = b""
    for byte in b"C" + commit_request((oid, record(oid))) + b"L" + oid:
        answers += peer.run(bytes([byte]))
    assert answers == (int4_to_str(0) + STATUS_OKAY + STATUS_OKAY
                       + int4_to_str(len(record(oid))) + record(oid))


def test_commit_invalidates_others_until_they_sync():
    shared = shared_state()
    alice, bob = Peer(shared, "alice"), Peer(shared, "bob")
    oid = new_oids(alice, 1)[0]
    assert commit(alice, (oid, b"one")) == ([], STATUS_OKAY)
    assert bob.run(b"L" + oid) == STATUS_INVALID
    assert bob.run(b"S") == int4_to_str(1) + oid
    assert bob.run(b"L" + oid)[5:] == record(oid, b"one")
    assert alice.run(b"S") == int4_to_str(0)
    assert bob.run(b"L" + int8_to_str(999)) == STATUS_KEYERROR


def test_a_commit_gets_the_invalidations_it_has_not_seen():
    shared = shared_state()
    alice, bob = Peer(shared, "alice"), Peer(shared, "bob")
    first, second = new_oids(alice, 1)[0], new_oids(bob, 1)[0]
    commit(alice, (first, b"a"))
    assert commit(bob, (second, b"b")) == ([first], STATUS_OKAY)


def test_committers_take_turns_and_a_late_one_sees_a_conflict():
    shared = shared_state()
    alice, bob = Peer(shared, "alice"), Peer(shared, "bob")
    oid, other = new_oids(alice, 1)[0], new_oids(bob, 1)[0]
    assert alice.run(b"C") == int4_to_str(0)  # alice holds the turn
    assert bob.run(b"C") == b""  # bob waits for it
    assert shared.turn.holder is alice.session and shared.turn.next_in_line() is None
    # alice goes silent; the turn is taken from her, bob commits.
    shared.turn.revoke_if_stalled(now=100.0, last_heard=0.0)
    assert shared.turn.next_in_line() is bob.session
    assert bob.run() == int4_to_str(0)
    assert bob.run(commit_request((other, record(other)))) == STATUS_OKAY
    # alice's records come after bob's commit, which she could not check.
    assert alice.run(commit_request((oid, record(oid)))) == STATUS_INVALID
    assert alice.run(b"L" + oid) == STATUS_KEYERROR  # nothing of hers was written


def test_giving_up_a_commit_releases_the_turn():
    shared = shared_state()
    alice = Peer(shared)
    alice.run(b"C")
    assert alice.run(int4_to_str(0)) == b""
    assert shared.turn.holder is None


@pytest.mark.parametrize("payload, message", [
    (int4_to_str(100) + b"\0" * 26, "ends inside a record"),
    (b"ab", "ends inside a record length"),
    (commit_payload([(int8_to_str(0), int8_to_str(0) + int4_to_str(1) + b"xabc")]),
     "malformed record"),
    (commit_payload([(int8_to_str(5), record(int8_to_str(0)))]), "malformed record"),
])
def test_malformed_commits_are_client_errors_and_write_nothing(payload, message):
    shared = shared_state()
    peer = Peer(shared)
    peer.run(b"C")
    with pytest.raises(ClientError, match=message):
        peer.run(int4_to_str(len(payload)) + payload)
    assert shared.storage.records == {}
    peer.close()
    assert shared.turn.holder is None


def test_payload_framing_round_trips():
    pairs = [(int8_to_str(n), record(int8_to_str(n), b"x" * n)) for n in range(5)]
    assert split_commit_payload(commit_payload(pairs)) == pairs


def test_an_oversized_commit_is_refused_at_once_and_its_payload_passed_over():
    shared = shared_state(max_commit_size=100)
    peer, other = Peer(shared), Peer(shared, "other")
    peer.run(b"C")
    answer = peer.run(int4_to_str(3 << 20))
    assert answer[:1] == STATUS_REFUSED
    assert b"over the server's limit of 100 bytes" in answer[5:]
    assert shared.turn.holder is None  # others commit while the payload goes by
    assert other.run(b"C") == int4_to_str(0)
    peer.run(b"\0" * (2 << 20))  # not held, and not over yet
    with pytest.raises(ClientError, match="max_commit_size"):
        peer.run(b"\0" * (1 << 20))


def test_oids_reserved_for_one_client_are_refused_to_another():
    shared = shared_state()
    alice, bob = Peer(shared, "alice"), Peer(shared, "bob")
    oid = new_oids(alice, 1)[0]
    bob.run(b"C")
    with pytest.raises(ClientError, match="oids reserved for client alice"):
        bob.run(commit_request((oid, record(oid))))


def test_bulk_load_answers_each_oid_in_order_and_bounds_its_request():
    shared = shared_state(max_frame_size=80)
    peer = Peer(shared)
    oids = new_oids(peer, 3)
    commit(peer, *((oid, b"s%d" % n) for n, oid in enumerate(oids[:2])))
    answer = peer.run(b"B" + int4_to_str(3) + join_bytes(oids))
    expected = [STATUS_OKAY + int4_to_str(len(record(oid, b"s%d" % n))) + record(oid, b"s%d" % n)
                for n, oid in enumerate(oids[:2])] + [STATUS_KEYERROR]
    assert answer == b"".join(expected)
    assert peer.run(b"B" + int4_to_str(0)) == b""
    with pytest.raises(ClientError, match="bulk load request of 88 bytes is over the limit"):
        peer.run(b"B" + int4_to_str(11))


def test_closing_a_session_gives_back_its_oids_and_its_turn():
    shared = shared_state()
    alice, bob, carol = Peer(shared, "alice"), Peer(shared, "bob"), Peer(shared, "carol")
    oid = new_oids(alice, 1)[0]
    alice.run(b"C")
    bob.run(b"C")
    alice.close()
    assert shared.turn.next_in_line() is bob.session
    assert bob.run(int4_to_str(0)) == int4_to_str(0)  # bob has the turn, and gives up
    assert commit(carol, (oid, b"mine now")) == ([], STATUS_OKAY)


def test_pack_and_quit_reach_the_shared_state(tmp_path):
    storage = FileStorage(str(tmp_path / "db.durus"))
    shared = shared_state(storage)
    peer = Peer(shared)
    assert peer.run(b"P") == STATUS_OKAY
    assert shared.packing.running
    while shared.packing.running:
        shared.packing.step()
    assert not shared.stop_requested
    assert peer.run(b"Q") == b""
    assert shared.stop_requested
    storage.close()


def test_with_group_commit_a_commit_is_answered_once_durable(tmp_path):
    storage = FileStorage(str(tmp_path / "db.durus"))
    storage.fsync = False
    wake, woken = socket.socketpair()
    shared = shared_state(storage)
    shared.group_commit = GroupCommit(storage, wake)
    try:
        peer = Peer(shared)
        oid = new_oids(peer, 1)[0]
        peer.run(b"C")
        answer = peer.run(commit_request((oid, record(oid))))
        if answer == b"":  # not flushed yet
            assert peer.session.want is Wait.DURABLE
            woken.settimeout(10)
            while not shared.group_commit.is_durable(peer.session.commit_number):
                woken.recv(1)
            answer = peer.run()
        assert answer == STATUS_OKAY
        assert shared.group_commit.durable >= peer.session.commit_number == 1
    finally:
        shared.group_commit.stop()
        storage.close()
        wake.close()
        woken.close()
