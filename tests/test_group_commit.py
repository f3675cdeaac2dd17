"""Group commit: the server answers a commit only once it is on disk, and one
flush serves every commit written while the previous flush ran."""

import re
import threading

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError
from durus.file_storage import FileStorage
from durus.persistent import Persistent

from server_processes import connect


CLIENTS = 6
COMMITS = 15


class Counter(Persistent):
    def __init__(self):
        self.n = 0


def commit_counter(address, name: str, errors: list) -> None:
    try:
        connection = Connection(ClientStorage(address=address))
        root = connection.get_root()
        while True:
            try:
                root[name] = counter = Counter()
                connection.commit()
                break
            except ConflictError:
                connection.abort()
        for _ in range(COMMITS):
            counter.n += 1
            connection.commit()
    except Exception as error:  # reported by the test
        errors.append(error)


def test_concurrent_commits_share_flushes_and_all_reach_the_disk(servers, tmp_path):
    path = tmp_path / "db.durus"
    server = servers.custom(path, logginglevel=10, flush_delay=0.05)
    connect(server)  # creates the root
    errors = []
    threads = [threading.Thread(target=commit_counter, args=(server.address, "c%d" % i, errors))
               for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    server.process.kill()  # no clean shutdown: answered commits must be on disk already
    server.process.wait()
    flushes = [int(n) for n in re.findall(r"Flushed (\d+) commits", server.log_text())]
    committed = len(re.findall(r"Committed ", server.log_text()))
    assert sum(flushes) == committed >= CLIENTS * (COMMITS + 1)
    assert len(flushes) < committed / 2  # many commits a flush
    root = Connection(FileStorage(str(path), readonly=True)).get_root()
    assert sorted(root["c%d" % i].n for i in range(CLIENTS)) == [COMMITS] * CLIENTS


def test_a_failed_flush_answers_no_commit_and_stops_the_server(servers, tmp_path):
    path = tmp_path / "db.durus"
    FileStorage(str(path)).close()
    server = servers.custom(path, flush_fails=True)
    storage = ClientStorage(address=server.address)
    with pytest.raises(ConnectionError):
        Connection(storage)  # its first commit creates the root
    assert server.process.wait(10) == 0
    assert "could not be flushed to disk: [Errno 5] Input/output error" in server.log_text()
    FileStorage(str(path), readonly=True).close()  # the file is still valid


def test_nofsync_server_never_flushes(servers, tmp_path):
    path = tmp_path / "db.durus"
    server = servers.ours("--file", str(path), "--nofsync", "--logginglevel", "10")
    connection = connect(server)
    for i in range(5):
        connection.get_root()[i] = i
        connection.commit()
    connection.get_storage().close()
    server.quit()
    assert "Committed" in server.log_text() and "Flushed" not in server.log_text()
    assert sorted(Connection(FileStorage(str(path))).get_root().keys()) == list(range(5))
