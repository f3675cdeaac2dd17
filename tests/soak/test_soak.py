"""The reliability tests at length: thousands of kills, a hundred thousand
fuzz cases, ten minutes of load, a database of two million objects. Left out of the default run; see
"Reliability testing" in README.md:

    python3 -m pytest -m soak tests/soak

DURUS_SOAK_SCALE (default 1) multiplies every count and duration: 0.1 for
a quick run, 10 for a night. Seeds are random and reported, so that a
failure can be replayed.
"""

import logging
import os
import random

import pytest

from lifecycle import Lifecycle
from soak_runners import (CLIENTS, check_bank, describe, fuzz_streams, run_client_kills,
                          run_file_writer_kills, run_hypothesis, run_load, run_mutations,
                          run_server_kills, start_bank)

pytestmark = pytest.mark.soak

SCALE = float(os.environ.get("DURUS_SOAK_SCALE", "1"))


def scaled(count: float) -> int:
    return max(1, round(count * SCALE))


def seed() -> int:
    return random.randrange(1 << 30)


def test_file_storage_writer_kills(tmp_path, report):
    stats = run_file_writer_kills(tmp_path, scaled(3000), seed=(chosen := seed()))
    report("seed %d: %d kills survived (%d in a pack, %d cut a commit short: dropped "
           "without repair), %d transfers, none lost"
           % (chosen, stats["kills"], stats["in_pack"], stats["torn"], stats["transfers"]))


def test_server_kills(servers, tmp_path, report):
    stats = run_server_kills(servers, tmp_path, scaled(500), clients=4, seed=(chosen := seed()))
    report("seed %d: %d kills survived (%d in a pack, %d cut a commit short: dropped "
           "without repair), %d commits acknowledged, none lost"
           % (chosen, stats["kills"], stats["in_pack"], stats["torn"], stats["commits"]))


def test_client_kills(servers, tmp_path, report):
    server = start_bank(servers, tmp_path, timeout=3, commit_grace=0.3)
    rounds = scaled(300)
    check_bank(server, tmp_path, run_client_kills(server, tmp_path, rounds,
                                                  random.Random(chosen := seed())))
    report("seed %d: %d bank clients killed mid-transfer, none of their promised "
           "transfers lost" % (chosen, rounds * CLIENTS))


def test_hypothesis_streams(target, report):
    sent = run_hypothesis(target, fuzz_streams(target), scaled(20000), derandomize=False)
    target.finish()
    report("%d hypothesis streams sent; the server answered after each" % sent)


def test_mutated_sessions(target, report):
    stats = run_mutations(target, scaled(100_000), seed=(chosen := seed()))
    target.finish()
    report("seed %d: %d mutated sessions sent (%d skipped); the server answered after "
           "each" % (chosen, stats["sent"], stats["skipped"]))


def test_load(servers, tmp_path, report):
    report(describe(run_load(servers, tmp_path, clients=16, seconds=600 * SCALE,
                             packs=scaled(10))))


def test_lifecycle_of_two_million_objects(tmp_path, caplog, report):
    life = Lifecycle(tmp_path / "life.durus", chosen := seed())
    objects = scaled(2_000_000)
    with caplog.at_level(logging.WARNING, logger="durus"):
        counts = life.run(objects=objects, steps=scaled(20))
    life.close()
    assert not caplog.records
    report("seed %d: %d objects, then %s, each checked object by object"
           % (chosen, objects, ", ".join("%d %s" % (n, name)
                                         for name, n in sorted(counts.items()))))
