"""Process crashes: writers killed with SIGKILL lose nothing that commit()
promised, and never leave a half-applied transaction readable.

A FileStorage writer and a server with clients are killed at random moments
of a commit loop (with packs in it); and operations are killed between every
two file-system calls they make, which covers each point a crash can hit.
"""

import random
import shutil
import time

import pytest

import bank
from storage_operations import OPERATIONS
from syscall_trace import Trace, run_killed_at


def check_after_kill(path, acked: list, before: list) -> tuple[list, bool]:
    """Check the file killed writers left, which started from the done counts
    `before`; return (done counts, whether it was torn).

    A kill can land inside the write of a large transaction, which the kernel
    then leaves half done. The writer's mark is left too, so a reader leaves
    that commit out and the next writer cuts it off, both without repair;
    and it is the commit in flight, never one that was acknowledged.
    """
    assert path.with_name(path.name + ".writer").exists()
    size = path.stat().st_size
    done = bank.check_file(path)
    assert bank.check_file(path, readonly=False) == done
    torn = path.stat().st_size < size
    if torn:
        assert done == list(map(max, acked, before)), "more than the commit in flight was torn"
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


def test_file_storage_writer_killed_at_random_moments(tmp_path, report):
    stats = run_file_writer_kills(tmp_path, kills=70, seed=5)
    report("FileStorage writer: %(kills)d kills survived (%(in_pack)d in a pack, %(torn)d "
           "cut a commit short: dropped without repair), %(transfers)d transfers, none lost"
           % stats)


def test_server_killed_at_random_moments_with_clients_committing(servers, tmp_path, report):
    stats = run_server_kills(servers, tmp_path, kills=30, clients=3, seed=5)
    report("server: %(kills)d kills survived (%(in_pack)d in a pack, %(torn)d cut a commit "
           "short: dropped without repair), %(commits)d commits acknowledged, none lost" % stats)


def count_calls(operation, directory) -> int:
    path = directory / "count.durus"
    operation.prepare(path)
    with Trace() as trace:
        operation.run(path)
    return len(trace.calls)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.name)
def test_killed_between_any_two_file_calls(operation, tmp_path):
    """Kill the operation just before each file write, sync or rename it makes."""
    calls = count_calls(operation, tmp_path)
    base = tmp_path / "base"
    base.mkdir()
    operation.prepare(base / "db.durus")
    for index in range(calls + 1):
        directory = tmp_path / ("kill%d" % index)
        shutil.copytree(base, directory)
        path = directory / "db.durus"
        killed = run_killed_at(index, lambda: operation.run(path))
        assert killed == (index < calls)
        outcome = operation.check(path)
        assert outcome in operation.outcomes, "killed before call %d: %s" % (index, outcome)
    assert outcome == max(operation.outcomes, key=lambda n: n or 0)
