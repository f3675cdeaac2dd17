"""Process crashes: writers killed with SIGKILL lose nothing that commit()
promised, and never leave a half-applied transaction readable.

A FileStorage writer and a server with clients are killed at random moments
of a commit loop (with packs in it); and operations are killed between every
two file-system calls they make, which covers each point a crash can hit.
"""

import shutil

import pytest

from soak_runners import run_file_writer_kills, run_server_kills
from storage_operations import OPERATIONS
from syscall_trace import Trace, run_killed_at


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
