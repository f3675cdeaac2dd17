"""durus -s --metrics: a real server's Prometheus endpoint, scraped over
HTTP while real clients load, commit, conflict, come and go, and pack."""

import shlex
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.protocol import commit_payload
from durus.storage_server import STATUS_INVALID, STATUS_OKAY
from durus.utils import int4_to_str

import server_processes
from readme import shell_commands
from server_processes import connect, connect_raw, free_port, our_env
from wire import load, new_oids, payload, recv_exact, record, start_commit



def scrape(server: server_processes.ServerProcess) -> dict[str, float]:
    """Return {sample: value} from server's metrics endpoint, a sample named
    as Prometheus shows it: 'durus_conflicts_total{kind="load"}'."""
    url = server.wait_for_log(r"Metrics on (http://\S+)").group(1)
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join('%s="%s"' % item for item in sorted(sample.labels.items()))
            samples[sample.name + ("{%s}" % labels if labels else "")] = sample.value
    return samples


def moved(before: dict, after: dict) -> dict[str, float]:
    """The samples whose value changed from before to after, and by how much."""
    return {name: after[name] - before.get(name, 0) for name in after
            if after[name] != before.get(name, 0) and not name.endswith("_created")}


def metrics_server(servers, tmp_path, *args: str) -> server_processes.ServerProcess:
    return servers.ours("--file", str(tmp_path / "db.durus"),
                        "--metrics", "127.0.0.1:%d" % free_port(), *args)


def wait_for(server, sample: str, value: float, timeout: float = 10) -> dict:
    """Scrape until sample has value; return that scrape."""
    deadline = time.monotonic() + timeout
    while (metrics := scrape(server))[sample] != value:
        assert time.monotonic() < deadline, "%s stayed %s, not %s" % (
            sample, metrics[sample], value)
        time.sleep(0.02)
    return metrics


def test_loads_commits_and_bytes_move_by_what_clients_did(servers, tmp_path):
    server = metrics_server(servers, tmp_path)
    with connect_raw(server.address) as writer, connect_raw(server.address) as reader:
        oids = new_oids(writer, 4)
        first = [record(oid, b"x" * 100 * n) for n, oid in enumerate(oids[:3])]
        second = [record(oids[3], b"y" * 5000)]
        before = scrape(server)
        for records in first, second:
            start_commit(writer)
            writer.sendall(payload(*records))
            assert recv_exact(writer, 1) == STATUS_OKAY
        reader.sendall(b"S")  # gets the oids committed since it connected
        recv_exact(reader, 4 + 8 * len(oids))
        assert load(reader, oids[0]).startswith(STATUS_OKAY)
        assert load(reader, oids[3]).startswith(STATUS_OKAY)
        reader.sendall(b"B" + int4_to_str(3) + b"".join(oids[:3]))
        assert all(load_answer(reader).startswith(STATUS_OKAY) for _ in range(3))
        after = scrape(server)
    size = sum(len(commit_payload((record[:8], record) for record in records))
               for records in (first, second))
    changes = moved(before, after)
    latency = {name: changes.pop(name) for name in list(changes)
               if name.startswith("durus_commit_seconds")}
    assert changes == {"durus_loads_total": 5, "durus_commits_total": 2,
                       "durus_committed_bytes_total": size}
    assert latency["durus_commit_seconds_count"] == 2
    assert latency['durus_commit_seconds_bucket{le="+Inf"}'] == 2
    # Each took more than nothing, and less than the slowest bucket.
    assert 0 < latency["durus_commit_seconds_sum"] < 10
    assert latency['durus_commit_seconds_bucket{le="10.0"}'] == 2


def load_answer(sock: socket.socket) -> bytes:
    """Read one answer to a load from sock."""
    status = recv_exact(sock, 1)
    if status != STATUS_OKAY:
        return status
    size = recv_exact(sock, 4)
    return status + size + recv_exact(sock, int.from_bytes(size, "big"))


def test_conflicts_are_counted_by_kind(servers, tmp_path):
    server = metrics_server(servers, tmp_path)
    first = connect(server)
    first.get_root()["n"] = 0
    first.commit()
    second = connect(server)
    assert second.get_root()["n"] == 0  # read: a commit of n by first conflicts with it
    before = scrape(server)
    first.get_root()["n"] = 1
    first.commit()
    second.get_root()["n"] = 2
    with pytest.raises(ConflictError):
        second.commit()  # second finds the conflict in the invalidations: "client"
    assert moved(before, scrape(server))['durus_conflicts_total{kind="client"}'] == 1
    # A load of what another committed since the client last synced, by a
    # client without snapshot reads (as Durus 4.3's): "load".
    late = ClientStorage(address=server.address, snapshots=False)
    first.get_root()["child"] = PersistentDict()
    first.commit()
    child = first.get_root()["child"]._p_oid
    before = scrape(server)
    for _ in range(2):
        with pytest.raises(ConflictError):
            late.load(child)
    assert moved(before, scrape(server)) == {
        'durus_conflicts_total{kind="load"}': 2, "durus_loads_total": 2}
    late.close()
    # A commit applied after another's, which the committer could not check: "commit".
    with connect_raw(server.address) as slow, connect_raw(server.address) as fast:
        slow_oid, fast_oid = new_oids(slow, 1)[0], new_oids(fast, 1)[0]
        before = scrape(server)
        start_commit(slow)  # holds the commit turn, silent past the 1 s grace
        fast.sendall(b"C")
        recv_exact(fast, 4)  # the turn lapsed: fast gets it
        fast.sendall(payload(record(fast_oid)))
        assert recv_exact(fast, 1) == STATUS_OKAY
        slow.sendall(payload(record(slow_oid)))
        assert recv_exact(slow, 1) == STATUS_INVALID
        changes = moved(before, scrape(server))
    assert changes['durus_conflicts_total{kind="commit"}'] == 1
    assert changes["durus_commits_total"] == 1
    assert not any("client" in name or "load" in name for name in changes)


def test_clients_connected_goes_up_and_down(servers, tmp_path):
    server = metrics_server(servers, tmp_path)
    assert scrape(server)["durus_clients_connected"] == 0
    clients = [ClientStorage(address=server.address) for _ in range(3)]
    wait_for(server, "durus_clients_connected", 3)
    for client in clients[:2]:
        client.close()
    wait_for(server, "durus_clients_connected", 1)
    clients[2].close()
    wait_for(server, "durus_clients_connected", 0)


def test_pack_progress_shows_during_and_after_a_pack(servers, tmp_path):
    path = tmp_path / "db.durus"
    connection = Connection(FileStorage(str(path)))
    root = connection.get_root()
    root["live"] = PersistentDict((i, PersistentDict(i=i)) for i in range(20000))
    root["garbage"] = PersistentDict((i, PersistentDict(i=i)) for i in range(5000))
    connection.commit()
    del root["garbage"]
    connection.commit()
    connection.get_storage().close()
    server = metrics_server(servers, tmp_path)
    before = scrape(server)
    assert before["durus_pack_running"] == 0
    connect(server).pack()  # answered once the pack has started
    scrapes = [scrape(server)]
    while scrapes[-1]["durus_pack_running"] == 1:
        scrapes.append(scrape(server))
    steps_seen = [metrics["durus_pack_steps"] for metrics in scrapes[:-1]]
    assert len(steps_seen) > 1 and steps_seen == sorted(steps_seen) and steps_seen[-1] > 0
    after = scrapes[-1]
    assert after["durus_pack_steps"] >= steps_seen[-1]
    assert moved(before, after)["durus_packs_total"] == 1
    server.wait_for_log("Pack finished")
    assert Connection(ClientStorage(address=server.address)).get_root()["live"][19999]["i"] \
        == 19999


@pytest.mark.parametrize("value, message", [
    ("abc", "is not HOST:PORT or PORT with a port from 0 to 65535"),
    ("127.0.0.1:http", "is not HOST:PORT or PORT with a port from 0 to 65535"),
    ("70000", "is not HOST:PORT or PORT with a port from 0 to 65535"),
    (":9464", "has no host before the ':' (use 0.0.0.0 to listen on every interface)"),
    ("fe80::1::2:9464", "is not HOST:PORT"),
])
def test_bad_metrics_values_are_refused_clearly(tmp_path, value, message):
    done = subprocess.run([sys.executable, "-m", "durus", "-s", "--metrics", value],
                          cwd=tmp_path, env=our_env(), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "durus -s: error: argument --metrics: %r %s\n" % (value, message) in done.stderr
    assert "Traceback" not in done.stderr


def test_a_metrics_port_in_use_is_refused_clearly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "durus", "-s", "--port", "0", "--file", "db.durus",
             "--metrics", str(port)],
            cwd=tmp_path, env=our_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "durus -s: cannot serve the metrics at 127.0.0.1:%d: " % port in done.stderr
    assert "Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_readme_example(tmp_path):
    start, scrape_command, stop = [
        command.replace("durus ", shlex.join([sys.executable, "-m", "durus"]) + " ", 1)
        for command in shell_commands("### durus -s --metrics")]
    assert start.endswith(" &")
    server = subprocess.Popen(shlex.split(start[:-2]), cwd=tmp_path, env=our_env(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while (scraped := subprocess.run(scrape_command, shell=True, cwd=tmp_path,
                                         capture_output=True, text=True)).returncode:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.1)
        assert "durus_clients_connected 0.0" in scraped.stdout.splitlines()
        assert "durus_commits_total 0.0" in scraped.stdout.splitlines()
        subprocess.run(shlex.split(stop), cwd=tmp_path, env=our_env(), check=True, timeout=30)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert (tmp_path / "data.durus").exists()
