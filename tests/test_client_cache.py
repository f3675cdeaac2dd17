"""ClientStorage's record cache: ghosts reload without asking the server, and
nothing stale survives a sync or a commit."""

import threading
import time

import pytest

from durus.client_storage import ClientStorage
from durus.record_cache import ReadAheadQueue, RecordCache
from durus.record_format import pack_record
from durus.connection import Connection
from durus.error import ConflictError
from durus.persistent import Persistent

from server_processes import connect


class Counter(Persistent):
    def __init__(self):
        self.n = 0


@pytest.fixture
def server(servers, tmp_path):
    return servers.ours("--file", str(tmp_path / "db.durus"))


def test_ghosts_reload_from_the_cache_without_the_server(server):
    connection = connect(server)
    root = connection.get_root()
    root["counters"] = counters = [Counter() for _ in range(20)]
    connection.commit()
    for counter in counters:
        counter._p_set_status_ghost()
    server.kill()  # from now on, only the cache can answer
    assert [counter.n for counter in counters] == [0] * 20
    with pytest.raises(ConnectionError):
        connection.abort()  # a sync needs the server


def test_a_sync_drops_what_others_changed(server):
    first, second = connect(server), connect(server)
    first.get_root()["counter"] = Counter()
    first.commit()
    second.abort()
    counter = second.get_root()["counter"]
    assert counter.n == 0  # now cached by the second client
    first.get_root()["counter"].n = 5
    first.commit()
    second.abort()  # sync: the counter is a ghost, its record dropped from the cache
    assert counter._p_is_ghost()
    assert counter.n == 5


def test_a_commit_drops_what_others_changed(server):
    first, second = connect(server), connect(server)
    first.get_root()["a"], first.get_root()["b"] = Counter(), Counter()
    first.commit()
    second.abort()
    b = second.get_root()["b"]
    b.n  # cached by the second client
    second.abort()  # a new transaction, that will not use b
    first.get_root()["b"].n = 7
    first.commit()
    second.get_root()["a"].n = 1
    second.commit()  # no conflict: b was not used in this transaction
    assert b._p_is_ghost() and b.n == 7


def test_cached_reads_stay_consistent_until_sync(server):
    """Between syncs a client reads one snapshot: its cached records, and what
    the server refuses (ReadConflictError) once others changed it."""
    first, second = connect(server), connect(server)
    root = first.get_root()
    root["a"], root["b"] = Counter(), Counter()
    first.commit()
    second.abort()
    a, b = second.get_root()["a"], second.get_root()["b"]
    assert (a.n, b.n) == (0, 0)
    second.abort()
    root["a"].n = root["b"].n = 1
    first.commit()
    a._p_set_status_ghost()
    b._p_set_status_ghost()
    assert (a.n, b.n) == (0, 0)  # both from the snapshot of the last sync
    b.n = 2
    with pytest.raises(ConflictError):
        second.commit()  # b was used, and changed by the first client
    second.abort()
    assert (a.n, b.n) == (1, 1)


def test_own_commits_are_cached(server):
    connection = connect(server)
    root = connection.get_root()
    root["counter"] = counter = Counter()
    connection.commit()
    counter.n = 3
    connection.commit()
    counter._p_set_status_ghost()
    server.kill()
    assert counter.n == 3


def test_cache_can_be_turned_off(server):
    connection = connect(server, cache_bytes=0)
    root = connection.get_root()
    root["counter"] = counter = Counter()
    connection.commit()
    counter._p_set_status_ghost()
    server.kill()
    with pytest.raises(ConnectionError):
        counter.n


def test_record_cache_keeps_the_most_recently_used_within_its_budget():
    cache = RecordCache(100)
    for i in range(10):
        cache.put(bytes([i]) * 8, b"x" * 20)
    assert cache.bytes <= 100
    kept = [oid for oid in (bytes([i]) * 8 for i in range(10)) if cache.get(oid)]
    assert kept == [bytes([i]) * 8 for i in range(5, 10)]
    cache.get(bytes([5]) * 8)  # now the most recently used
    cache.put(b"\xaa" * 8, b"y" * 20)
    assert cache.get(bytes([5]) * 8) and not cache.get(bytes([6]) * 8)
    cache.put(b"\xbb" * 8, b"z" * 26)  # over a quarter of the budget: not kept
    assert cache.get(b"\xbb" * 8) is None
    cache.discard_all([b"\xaa" * 8, b"\xcc" * 8])
    assert cache.get(b"\xaa" * 8) is None and cache.bytes == sum(map(len, cache.records.values()))


def oid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def test_a_record_used_puts_what_it_refers_to_first_in_the_read_ahead_queue():
    cache = RecordCache(10000)
    queue = ReadAheadQueue(cache, limit=3, size=5)
    queue.note(pack_record(oid(1), b"x", b"".join(oid(n) for n in range(10, 17))))
    assert list(queue.queued) == [oid(n) for n in range(10, 15)]  # full: the newer wait
    cache.put(oid(21), b"cached")
    queue.note_used(pack_record(oid(2), b"x", b"".join(oid(n) for n in (20, 21, 22, 12))))
    # Its uncached refs go first, in order; the newest queued are pushed out.
    assert list(queue.queued) == [oid(20), oid(22), oid(12), oid(10), oid(11)]
    assert queue.wanted_after(oid(20)) == [oid(22), oid(12), oid(10)]
    assert list(queue.queued) == [oid(11)]
    assert queue.wanted_after(oid(99)) == [] and list(queue.queued) == [oid(11)]


def test_clients_of_a_new_database_share_the_root_one_creates(server):
    first, second = (ClientStorage(address=server.address) for _ in range(2))
    oid = first.new_oid()
    first.oid_pool.append(oid)  # the first client holds oid 0 ...
    found = []
    waiting = threading.Thread(target=lambda: found.append(Connection(second).get_root()))
    waiting.start()  # ... so the second waits for the root it creates
    time.sleep(0.2)
    assert waiting.is_alive() and not found
    root = Connection(first).get_root()
    root["made by"] = "first"
    root._p_connection.commit()
    waiting.join(10)
    assert found and found[0]._p_oid == root._p_oid == b"\0" * 8
