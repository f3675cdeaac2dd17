"""Load: 16 client processes transfer (often between the same hot accounts,
so conflicting) and audit the bank for a fixed time against a server that
packs meanwhile, on request (`durus -p`) and on its own (gcbytes).

No transfer is lost or doubled (every balance is exactly what the promised
transfers make it), every audit saw a consistent bank, nobody deadlocks, and
the throughput is reported.
"""

from soak_runners import describe, run_load


def test_sixteen_clients_with_packs(servers, tmp_path, report):
    report(describe(run_load(servers, tmp_path, clients=16, seconds=30, packs=2)))


