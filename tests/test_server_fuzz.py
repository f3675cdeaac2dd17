"""Fuzzing a live server with random and structured byte streams (hypothesis)
and with mutations of real recorded client sessions.

After every case the server must answer a normal client; at the end the bank
it holds is intact and still takes commits, no request raised an unexpected
exception in the server, its memory and descriptors are back in bounds, and
the file opens without repair.
"""

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bank
import server_processes
from server_processes import connect
from durus.client_storage import ClientStorage
from durus.persistent_dict import PersistentDict
from durus.storage import ROOT_OID
from durus.utils import int4_to_str
from protocol_fuzz import (check_fds_back_to, is_safe, mutate, open_fds, record_sessions,
                           rss_kb, send_stream)


# Growth of the server's resident memory that a fuzz run may cause (its
# index grows a little with the records fuzz cases commit); a leak per
# connection or per request would exceed it.
MEMORY_BOUND_KB = 32 << 10


@dataclass
class Target:
    """A live server holding a bank (protected) and root['fuzz'] (for fuzz commits)."""
    server: server_processes.ServerProcess
    path: object
    sessions: list
    protected: set
    fuzz_oids: list
    probe: ClientStorage
    root_record: bytes
    memory_kb: int = 0
    fds: list = field(default_factory=list)
    sent: int = 0

    def send(self, stream: bytes) -> bool:
        """Send stream if it is safe (see is_safe), then check that the server
        still answers; return whether it was sent."""
        if not is_safe(stream, self.protected):
            return False
        send_stream(self.server.address, stream)
        assert self.probe.load(ROOT_OID) == self.root_record
        self.sent += 1
        return True

    def finish(self) -> None:
        """The end-of-run checks (see the module docstring)."""
        bank.check_server(self.server.address)
        pid = self.server.process.pid
        assert rss_kb(pid) - self.memory_kb < MEMORY_BOUND_KB
        check_fds_back_to(pid, self.fds)
        log = self.server.log_text()
        assert "request failed" not in log and "Traceback" not in log, log[-3000:]
        self.probe.close()
        assert self.server.quit() == 0
        bank.check_file(self.path)


@pytest.fixture
def target(servers, tmp_path):
    path = tmp_path / "fuzz.durus"
    # Short limits, so that streams left half-sent are dropped soon.
    server = servers.custom(path, timeout=2, commit_grace=0.2)
    connection = connect(server)
    bank.create(connection, 2)
    for _ in range(3):
        bank.apply_transfer(connection.get_root(), 0)
        connection.commit()
    root = connection.get_root()
    root["fuzz"] = PersistentDict()
    connection.commit()
    fuzz_oid = root["fuzz"]._p_oid
    protected = {obj._p_oid for obj in connection.get_crawler()} - {fuzz_oid}
    sessions = record_sessions(server.address)
    connection.abort()
    fuzz_oids = [fuzz_oid] + [item._p_oid for item in root["fuzz"].values()]
    connection.get_storage().close()
    probe = ClientStorage(address=server.address)
    target = Target(server, path, sessions, protected, fuzz_oids, probe, probe.load(ROOT_OID))
    for session in sessions:  # warm up, then measure
        target.send(session)
    target.memory_kb = rss_kb(server.process.pid)
    target.fds = open_fds(server.process.pid)
    return target


def requests(load_oids: list, commit_oids: list):
    """A strategy for byte streams of protocol requests, well formed or nearly so."""
    def int4(n: int) -> bytes:
        return int4_to_str(n % (1 << 32))

    any_oid = st.binary(min_size=8, max_size=8)
    load_oid = st.one_of(st.sampled_from(load_oids), any_oid)
    commit_oid = st.one_of(st.sampled_from(commit_oids), any_oid)

    @st.composite
    def commit(draw) -> bytes:
        payload = b""
        for _ in range(draw(st.integers(0, 3))):
            oid = draw(commit_oid)
            data = draw(st.binary(max_size=100))
            refs = b"".join(draw(st.lists(load_oid, max_size=3)))
            record = oid + int4(len(data)) + data + refs
            payload += int4(8 + len(record) + draw(st.sampled_from([0, 0, 0, -1, 1, 8]))) + oid
            payload += record
        return b"C" + int4(len(payload) + draw(st.sampled_from([0, 0, 0, -1, 1]))) + payload

    request = st.one_of(
        st.sampled_from([b"N", b"S", b"P", b"."]),
        st.integers(0, 255).map(lambda n: b"M" + bytes([n])),
        load_oid.map(lambda oid: b"L" + oid),
        st.lists(load_oid, max_size=6).map(lambda oids: b"B" + int4(len(oids)) + b"".join(oids)),
        st.integers(0, 2).map(lambda version: b"V" + int4(version)),
        commit(),
        st.binary(min_size=1, max_size=6))
    return st.lists(request, max_size=10).map(b"".join)


def run_hypothesis(target: Target, strategy, examples: int, derandomize: bool = True) -> int:
    """Send `examples` streams drawn from strategy; return how many were sent."""
    sent = target.sent

    @settings(max_examples=examples, deadline=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(stream):
        assume(target.send(stream))

    case()
    return target.sent - sent


def run_mutations(target: Target, cases: int, seed: int) -> dict:
    """Send `cases` mutated recorded sessions (unsafe ones skipped and counted)."""
    rng = random.Random(seed)
    sent = skipped = 0
    while sent < cases:
        if target.send(mutate(rng, target.sessions)):
            sent += 1
            if sent % 500 == 0:
                bank.check_server(target.server.address)
        else:
            skipped += 1
    return {"sent": sent, "skipped": skipped}


def fuzz_streams(target: Target):
    """The strategy of all fuzz streams: random bytes, with or without a
    valid handshake, and structured requests."""
    load_oids = sorted(target.protected) + target.fuzz_oids
    version = b"V" + int4_to_str(1)
    return st.one_of(st.binary(max_size=300),
                     st.binary(max_size=300).map(lambda data: version + data),
                     requests(load_oids, target.fuzz_oids).map(lambda data: version + data))


def test_hypothesis_streams(target, report):
    sent = run_hypothesis(target, fuzz_streams(target), examples=300)
    target.finish()
    report("%d hypothesis streams sent; the server answered after each" % sent)


def test_mutated_recorded_sessions(target, report):
    stats = run_mutations(target, cases=1500, seed=3)
    target.finish()
    report("%(sent)d mutated sessions sent (%(skipped)d skipped: they would quit or "
           "write the checked objects); the server answered after each" % stats)
