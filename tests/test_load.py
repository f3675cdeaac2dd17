"""Load: 16 client processes transfer (often between the same hot accounts,
so conflicting) and audit the bank for a fixed time against a server that
packs meanwhile, on request (`durus -p`) and on its own (gcbytes).

No transfer is lost or doubled (every balance is exactly what the promised
transfers make it), every audit saw a consistent bank, nobody deadlocks, and
the throughput is reported.
"""

import subprocess
import sys
import time

import bank
from server_processes import our_env


def durus_pack(server) -> None:
    """Run `durus -p` against the server, as an operator would."""
    host, port = server.address
    subprocess.run([sys.executable, "-m", "durus", "-p", "--host", host, "--port", str(port)],
                   env=our_env(), check=True, timeout=60, capture_output=True)


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


def test_sixteen_clients_with_packs(servers, tmp_path, report):
    report(describe(run_load(servers, tmp_path, clients=16, seconds=30, packs=2)))


def _packs_started(log: str) -> int:
    return log.count("Pack started") + log.count("Automatic pack started")


def _packs_running(log: str) -> bool:
    return log.count("Pack finished") < _packs_started(log)
