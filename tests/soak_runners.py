"""The reliability runs that both the default tests and the soak tests
(tests/soak) make, at different lengths: killing FileStorage writers,
servers and bank clients, loading a server with bank clients, and fuzzing
a live server (the `target` fixture, through pytest_plugins in conftest).
Each returns what it counted, for the report."""

import random
import subprocess
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bank
from durus.client_storage import ClientStorage
from durus.persistent_dict import PersistentDict
from durus.storage import ROOT_OID
from durus.utils import int4_to_str
from protocol_fuzz import (MEMORY_BOUND_KB, check_fds_back_to, is_safe, mutate, open_fds,
                           record_sessions, rss_kb, send_stream)
from server_processes import ServerProcess, connect, durus_command, our_env

# Bank clients of the fault runs.
CLIENTS = 3


# Servers and writers killed.

def check_after_kill(path, acked: list, before: list) -> tuple[list, bool]:
    """Check the file killed writers left, which started from the done counts
    `before`; return (done counts, whether it was torn).

    A kill can land inside the write of a large transaction, which the kernel
    then leaves half done. The writer's mark is left too, so a reader leaves
    that commit out and the next writer cuts it off, both without repair;
    and it is a commit in flight, never one that was acknowledged.
    """
    assert path.with_name(path.name + ".writer").exists()
    size = path.stat().st_size
    done = bank.check_file(path)
    assert bank.check_file(path, readonly=False) == done
    torn = path.stat().st_size < size
    # A client's commit in flight may be there unacknowledged even when the
    # file was torn: with group commit another client's may be the torn one.
    bank.check_promises(done, acked, before)
    return done, torn


class PackWatch:
    """Tells whether a kill interrupted a pack: <name>.pack then holds one unfinished."""

    def __init__(self, path):
        self.pack_path = path.with_name(path.name + ".pack")
        self.seen = None
        self.count = 0

    def check(self) -> None:
        try:
            stamp = self.pack_path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if stamp != self.seen:
            self.seen = stamp
            self.count += 1


def run_file_writer_kills(directory, kills: int, seed: int) -> dict:
    """Kill a FileStorage writer (which packs every 25 commits) `kills` times."""
    path, ack = directory / "bank.durus", directory / "acks"
    bank.create_file(path)
    rng = random.Random(seed)
    torn = 0
    packs = PackWatch(path)
    done = [0]
    for _ in range(kills):
        acked = bank.read_acks(ack)
        writer = bank.start(bank.file_writer, str(path), 0, str(ack), 25)
        try:
            bank.wait_for(lambda: bank.read_acks(ack) > acked, [writer])
            time.sleep(rng.random() * 0.03)
        finally:
            bank.stop(writer)
        packs.check()
        done, was_torn = check_after_kill(path, [bank.read_acks(ack)], done)
        torn += was_torn
    return {"kills": kills, "torn": torn, "in_pack": packs.count, "transfers": done[0]}


def run_server_kills(servers, directory, kills: int, clients: int, seed: int) -> dict:
    """Kill a server (packing every 40 kB committed) while clients transfer
    and audit, `kills` times; each time restart it on the same file."""
    path = directory / "bank.durus"
    bank.create_file(path, clients)
    rng = random.Random(seed)
    torn = commits = 0
    packs = PackWatch(path)
    done = [0] * clients
    for _ in range(kills):
        server = servers.ours("--file", str(path), "--gcbytes", "40000")
        with bank.Clients(server, directory, 3600, clients) as workers:
            before = sum(workers.acked())
            bank.wait_for(lambda: sum(workers.acked()) > before + clients,
                          workers.processes.values())
            time.sleep(rng.random() * 0.1)
            server.kill()
            packs.check()
            results = workers.finish(server_lost=True)
        commits += sum(result["commits"] for result in results)
        done, was_torn = check_after_kill(path, workers.acked(), done)
        torn += was_torn
    return {"kills": kills, "torn": torn, "in_pack": packs.count, "commits": commits,
            "transfers": sum(done)}


# Load.

def durus_pack(server) -> None:
    """Run `durus -p` against the server, as an operator would."""
    host, port = server.address
    subprocess.run(durus_command("-p", "--host", host, "--port", str(port)), env=our_env(),
                   check=True, timeout=60, capture_output=True)


def run_load(servers, directory, clients: int, seconds: float, packs: int) -> dict:
    """Run the load for `seconds`, with `packs` evenly spaced `durus -p` runs."""
    path = directory / "bank.durus"
    bank.create_file(path, clients)
    server = servers.ours("--file", str(path), "--gcbytes", "1000000")
    started = time.monotonic()
    with bank.Clients(server, directory, seconds, clients, read_share=0.3) as workers:
        for number in range(1, packs + 1):
            time.sleep(max(0.0, started + seconds * number / (packs + 1) - time.monotonic()))
            durus_pack(server)
        results = workers.finish(timeout=seconds + 60)
    elapsed = time.monotonic() - started
    # The last commits may have started an automatic pack: let it finish.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _packs_running(server.log_text()):
        time.sleep(0.1)
    log = server.log_text()
    assert server.quit() == 0
    asked = log.count("Pack started") + log.count("Pack already in progress")
    assert asked == packs and log.count("Pack finished") == _packs_started(log)  # none failed
    done = bank.check_file(path)
    assert done == workers.acked()  # every client ended between transfers
    total = {key: sum(result[key] for result in results)
             for key in ("commits", "conflicts", "audits", "audit_conflicts")}
    assert total["commits"] == sum(done) and total["audits"] > 0
    assert all(result["commits"] > 0 for result in results)  # nobody starved
    return dict(total, clients=clients, seconds=elapsed, packs=log.count("Pack finished"),
                automatic=log.count("Automatic pack started"),
                rate=total["commits"] / elapsed, audit_rate=total["audits"] / elapsed)


def describe(stats: dict) -> str:
    return ("%(clients)d clients, %(seconds).0f s: %(commits)d transfers committed "
            "(%(rate).0f/s), %(conflicts)d conflicts retried, %(audits)d audits "
            "(%(audit_rate).0f/s, %(audit_conflicts)d retried), %(packs)d packs "
            "(%(automatic)d automatic); nothing lost" % stats)


def _packs_started(log: str) -> int:
    return log.count("Pack started") + log.count("Automatic pack started")


def _packs_running(log: str) -> bool:
    return log.count("Pack finished") < _packs_started(log)


# Bank clients killed.

def start_bank(servers, tmp_path, **options):
    """A server (custom, with options) holding a bank for CLIENTS clients."""
    server = servers.custom(tmp_path / "bank.durus", **options)
    connection = connect(server)
    bank.create(connection, CLIENTS)
    connection.get_storage().close()
    return server


def check_bank(server, directory, before: list | None = None) -> list:
    """Check that the bank holds every promised transfer (see check_promises;
    before defaults to the acks), and that a normal client still transfers
    (as client 0, acknowledged); return the transfer counts."""
    acks = [directory / ("ack%d" % client) for client in range(CLIENTS)]
    acked = [bank.read_acks(ack) for ack in acks]
    done = bank.check_server(server.address)
    bank.check_promises(done, acked, before or acked)
    done[0] += 1
    bank.acknowledge(acks[0], done[0])
    return done


def run_client_kills(server, directory, rounds: int, rng: random.Random) -> list:
    """Kill the bank clients (SIGKILL) at a random moment, `rounds` times over;
    return the transfer counts they reached."""
    done = check_bank(server, directory)
    for _ in range(rounds):
        with bank.Clients(server, directory, 3600, CLIENTS) as clients:
            acked = clients.acked()
            bank.wait_for(lambda: sum(clients.acked()) > sum(acked) + CLIENTS,
                          clients.processes.values())
            time.sleep(rng.random() * 0.05)
        connection = connect(server)
        before, done = done, bank.check_snapshot(connection.get_root())
        connection.get_storage().close()
        bank.check_promises(done, clients.acked(), before)
    return done


# Fuzzing a live server.

@dataclass
class Target:
    """A live server holding a bank (protected) and root['fuzz'] (for fuzz commits)."""
    server: ServerProcess
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
        """The end-of-run checks: the bank is intact and takes commits, no
        request raised an unexpected exception in the server, its memory and
        descriptors are back in bounds, and the file opens without repair."""
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
def target(servers, tmp_path) -> Target:
    """A Target on a new server, its sessions recorded and replayed once."""
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
