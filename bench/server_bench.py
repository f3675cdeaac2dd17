"""Storage server throughput: this durus's server (fsync on and off) beside
Durus 4.3's, all driven by this durus's ClientStorage over loopback TCP.

Measures, per server:
  load one by one:  10,000 'L' requests, one at a time (records/second)
  load in bulk:     one 'B' request for the same 10,000 records (records/second)
                    (both the best of three rounds)
  commits, 1 client:  small commits, each changing one object (commits/second)
  commits, 8 clients: the same from 8 processes at once, each on its own object

With --tls, only this durus's server is measured (with fsync and without),
each without and with TLS (certificates made with the `cryptography`
package, as in the tests), and the TLS/plain ratio of each measurement is
printed.

Usage: python bench/server_bench.py [--peer PYTHON] [--commits N] [--tls]
The peer defaults to .venv-peer beside the repo (scripts/setup-peer-venv.sh).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from durus.client_storage import ClientStorage  # noqa: E402
from durus.connection import Connection  # noqa: E402
from durus.persistent_dict import PersistentDict  # noqa: E402
from shootout import PEER_PYTHON, free_port, wait_for_port  # noqa: E402

OBJECTS = 10000
CLIENTS = 8

NO_FSYNC_SERVER = """
import sys
from durus.file_storage import FileStorage
from durus.storage_server import StorageServer
tls = dict(zip(["certfile", "keyfile"], sys.argv[3:]))
StorageServer(FileStorage(sys.argv[1], fsync=False), port=int(sys.argv[2]), **tls).serve()
"""

COMMIT_WORKER = """
import json, sys, time
from durus.client_storage import ClientStorage
from durus.connection import Connection
port, commits, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
connection = Connection(ClientStorage(port=port, **json.loads(sys.argv[4])))
mine = connection.get_root()[name]
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for _ in range(commits):
    mine["n"] += 1
    connection.commit()
print(time.perf_counter() - start, flush=True)
"""


# {kind with TLS: (kind without, server certificate, ClientStorage keyword arguments)}
TLS_KINDS = {}


def make_tls_kinds(directory: str) -> None:
    """Make a CA and a server certificate in directory, and define a TLS
    kind for this durus's server with and without fsync."""
    sys.path.insert(0, str(ROOT / "tests"))
    from certificates import LOOPBACK_NAMES, Authority
    ca = Authority(Path(directory), "Bench CA")
    server = ca.issue("server", "bench server", LOOPBACK_NAMES)
    for plain in "this durus", "this durus, no fsync":
        TLS_KINDS[plain + ", TLS"] = (plain, server, {"cafile": ca.cafile})


def client_options(kind: str) -> dict:
    return TLS_KINDS[kind][2] if kind in TLS_KINDS else {}


def start_server(kind: str, peer: str, path: str, port: int) -> subprocess.Popen:
    ours_env = dict(os.environ, PYTHONPATH=str(ROOT))
    peer_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    quiet = ["--logginglevel", "30"]
    commands = {
        "this durus": ([sys.executable, "-m", "durus", "-s", "--file", path,
                        "--port", str(port)] + quiet, ours_env),
        "this durus, no fsync": ([sys.executable, "-c", NO_FSYNC_SERVER, path, str(port)],
                                 ours_env),
        "durus 4.3": ([peer, "-m", "durus", "-s", "--file", path, "--port", str(port)] + quiet,
                      peer_env),
    }
    if kind in TLS_KINDS:
        plain, server, _ = TLS_KINDS[kind]
        command, env = commands[plain]
        if plain == "this durus":
            command += ["--certfile", server.certfile, "--keyfile", server.keyfile]
        else:
            command += [server.certfile, server.keyfile]
    else:
        command, env = commands[kind]
    # The peer must not run with the repo as its directory, or it imports our durus.
    process = subprocess.Popen(command, cwd=os.path.dirname(path), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for_port(port, process):
        raise SystemExit("server on port %d did not start" % port)
    return process


def stop_server(process: subprocess.Popen, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"Q")
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def populate(port: int, options: dict) -> list:
    """Commit OBJECTS small objects, and one for each commit worker; return
    the oids of the former."""
    connection = Connection(ClientStorage(port=port, **options))
    items = [PersistentDict(n=i, name="item %d" % i) for i in range(OBJECTS)]
    connection.get_root()["items"] = items
    for i in range(CLIENTS):
        connection.get_root()["worker%d" % i] = PersistentDict(n=0)
    connection.commit()
    oids = [item._p_oid for item in items]
    connection.get_storage().close()
    return oids


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def measure_loads(port: int, oids: list, options: dict, rounds: int = 3) -> tuple:
    """Return the best (one by one, bulk) load rates of a few rounds, with the
    client's record cache off, so that every record comes from the server."""
    storage = ClientStorage(port=port, cache_bytes=0, **options)
    one_by_one = bulk = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for oid in oids:
            storage.load(oid)
        one_by_one = max(one_by_one, rate(len(oids), time.perf_counter() - start))
        start = time.perf_counter()
        assert len(list(storage.bulk_load(oids))) == len(oids)
        bulk = max(bulk, rate(len(oids), time.perf_counter() - start))
    storage.close()
    return one_by_one, bulk


def measure_commits(port: int, clients: int, commits: int, cwd: str, options: dict) -> float:
    """Return total commits/second of clients processes committing at once."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    workers = [subprocess.Popen([sys.executable, "-c", COMMIT_WORKER, str(port), str(commits),
                                 "worker%d" % i, json.dumps(options)], cwd=cwd, env=env,
                                stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
               for i in range(clients)]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    for worker in workers:
        worker.communicate(timeout=600)
    return rate(clients * commits, time.perf_counter() - start)


def bench(kind: str, peer: str, commits: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="durus-bench-") as directory:
        path = os.path.join(directory, "bench.durus")
        port = free_port()
        server = start_server(kind, peer, path, port)
        options = client_options(kind)
        try:
            oids = populate(port, options)
            one_by_one, bulk = measure_loads(port, oids, options)
            single = measure_commits(port, 1, commits, directory, options)
            many = measure_commits(port, CLIENTS, commits, directory, options)
        finally:
            stop_server(server, port)
    return {"server": kind, "load one by one": one_by_one, "load in bulk": bulk,
            "commits, 1 client": single, "commits, %d clients" % CLIENTS: many}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", default=PEER_PYTHON,
                        help="python with durus==4.3 installed")
    parser.add_argument("--commits", type=int, default=300,
                        help="commits per client in the commit measurements")
    parser.add_argument("--tls", action="store_true",
                        help="measure this durus's server without and with TLS")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durus-bench-tls-") as certificates:
        if options.tls:
            make_tls_kinds(certificates)
            kinds = [kind for tls in TLS_KINDS for kind in (TLS_KINDS[tls][0], tls)]
        else:
            kinds = ["this durus", "this durus, no fsync"]
            if os.path.exists(options.peer):
                kinds.append("durus 4.3")
            else:
                print("(no durus 4.3 at %s: left out)" % options.peer)
        rows = [bench(kind, options.peer, options.commits) for kind in kinds]
    if options.tls:
        by_kind = {row["server"]: row for row in rows}
        for tls, (plain, _, _) in TLS_KINDS.items():
            rows.append(dict({column: by_kind[tls][column] / by_kind[plain][column]
                              for column in by_kind[plain] if column != "server"},
                             server="TLS/plain" + plain[len("this durus"):]))
    columns = list(rows[0])
    print(" | ".join("%-20s" % column for column in columns))
    for row in rows:
        print(" | ".join("%-20s" % _format(row[c], row["server"]) for c in columns))


def _format(value, server: str) -> str:
    if isinstance(value, str):
        return value
    return "%.2f" % value if server.startswith("TLS/plain") else "%.0f/s" % value


if __name__ == "__main__":
    main()
