"""Server fault injection: slow clients holding half-sent requests, clients
vanishing in the middle of commits, thousands of connections opened and
dropped, and running out of file descriptors.

Throughout, bank clients keep transferring; afterwards every transfer they
were promised is there, the server answers a normal client, and its memory
and descriptors are back in bounds.
"""

import random
import resource
import socket
import struct
import threading

import bank
from durus.client_storage import ClientStorage
from durus.storage import ROOT_OID
from durus.utils import int4_to_str
from protocol_fuzz import MEMORY_BOUND_KB, check_fds_back_to, open_fds, rss_kb
from server_processes import connect_raw
from soak_runners import CLIENTS, check_bank, run_client_kills, start_bank
from wire import new_oids, payload, record, start_commit


def hold_commit_turn(address, holding: threading.Event, stop: threading.Event,
                     interval: float) -> None:
    """Take the commit turn (then set holding), and send a large commit one
    byte per interval until stop is set: a client that is slow, never silent."""
    with connect_raw(address, timeout=30) as sock:
        start_commit(sock)
        sock.sendall(int4_to_str(1 << 20))
        holding.set()
        while not stop.wait(interval):
            sock.sendall(b"\0")


def half_sent_requests(address) -> tuple:
    """Sockets each holding a request cut short (the commit one also holds the
    commit turn while silent)."""
    prefixes = [b"L\0\0\0", b"B" + int4_to_str(2) + b"\0" * 5, b"V\0\0", b"M",
                b"C" + int4_to_str(50) + b"\0" * 20, b"C"]
    return [connect_raw(address) for _ in range(5) for _ in prefixes], prefixes * 5


def test_slow_clients_hold_up_nobody(servers, tmp_path):
    server = start_bank(servers, tmp_path, timeout=3, commit_grace=0.3)
    holding, stop = threading.Event(), threading.Event()
    dribbler = threading.Thread(target=hold_commit_turn,
                                args=(server.address, holding, stop, 0.1))
    dribbler.start()
    assert holding.wait(10)
    sockets, prefixes = half_sent_requests(server.address)
    try:
        for sock, prefix in zip(sockets, prefixes):
            sock.sendall(prefix)
        results = bank.Clients(server, tmp_path, 5, CLIENTS).finish()
        assert all(result["commits"] > 0 for result in results)
        assert dribbler.is_alive()  # still sending, all along
    finally:
        stop.set()
        dribbler.join()
        for sock in sockets:
            sock.close()
    server.wait_for_log("lost the commit turn: held it for")
    check_bank(server, tmp_path)


def commit_payload(sock) -> bytes:
    """A real commit payload (int4 size + records) for a new object on sock's oids."""
    oid = new_oids(sock, 1)[0]
    return payload(record(oid, b"\x80\x02}q\x00." + bytes(200)))


def vanish(address, rng: random.Random) -> None:
    """Start a commit, send part of it, and vanish (half the time with a reset)."""
    with connect_raw(address) as sock:
        payload = commit_payload(sock)
        sock.sendall(b"C")
        if rng.random() < 0.8:  # else vanish while holding the turn, before the payload
            sock.recv(4)  # the invalidation count comes after the turn is ours
            sock.sendall(payload[:rng.randrange(len(payload))])
        if rng.random() < 0.5:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_clients_vanishing_mid_commit(servers, tmp_path, report):
    """Raw clients vanish at every stage of a commit while bank clients
    transfer; then bank clients are killed at random moments themselves."""
    server = start_bank(servers, tmp_path, timeout=3, commit_grace=0.3)
    baseline = open_fds(server.process.pid)
    rng = random.Random(2)
    vanished = 0
    with bank.Clients(server, tmp_path, 3, CLIENTS) as clients:
        while any(process.is_alive() for process in clients.processes.values()):
            vanish(server.address, rng)
            vanished += 1
        results = clients.finish()
    assert all(result["commits"] > 0 for result in results)
    # No part of a commit cut short was applied: the log counts only the
    # root's, the bank's and the bank clients' commits.
    assert server.log_text().count("Committed") == 2 + sum(r["commits"] for r in results)
    rounds = 20
    check_bank(server, tmp_path, run_client_kills(server, tmp_path, rounds, rng))
    check_fds_back_to(server.process.pid, baseline)
    report("%d raw clients vanished mid-commit, %d bank clients were killed; "
           "every promised transfer is there" % (vanished, rounds * CLIENTS))


def test_thousands_of_connections_opened_and_dropped(servers, tmp_path, report):
    """Some half-send a request; many reserve oids they never use: the server
    must forget those reservations when they leave, or its memory grows."""
    server = start_bank(servers, tmp_path)
    pid = server.process.pid
    probe = ClientStorage(address=server.address)
    root_record = probe.load(ROOT_OID)
    baseline, memory = open_fds(pid), rss_kb(pid)
    opened = 0
    rng = random.Random(4)
    # Batches of connections open at once, each within the listen backlog.
    for _ in range(100):
        batch = [connect_raw(server.address) for _ in range(50)]
        for sock in batch:
            if rng.random() < 0.8:
                new_oids(sock, 255)  # reserved for sock, which leaves them unused
            elif rng.random() < 0.5:
                sock.sendall(rng.choice([b"V", b"L\0\0", b"C", b"B\0\0\0\5", b"M"]))
            if rng.random() < 0.5:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        opened += len(batch)
        assert probe.load(ROOT_OID) == root_record
    check_fds_back_to(pid, baseline)
    assert rss_kb(pid) - memory < MEMORY_BOUND_KB
    check_bank(server, tmp_path)
    probe.close()
    report("%d connections opened and dropped" % opened)


def test_out_of_file_descriptors(servers, tmp_path):
    """A server out of descriptors pauses accepting, and recovers once
    connections close."""
    server = start_bank(servers, tmp_path)
    pid = server.process.pid
    limit = len(open_fds(pid)) + 10
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    crowd = [connect_raw(server.address) for _ in range(30)]
    try:
        server.wait_for_log("Cannot accept connections for now")
    finally:
        for sock in crowd:
            sock.close()
    check_bank(server, tmp_path)  # connects once the crowd is gone
