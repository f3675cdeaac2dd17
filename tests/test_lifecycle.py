"""Nothing committed is lost as a database grows, is packed and grows again:
the reproduction of issue 10's defect 1 (objects vanished from the writer's
index once a packed database of more than ~65,000 oids kept growing), and a
lifecycle of 200,000 objects checked against a model after every step.

The reliability suites had missed it because their databases stayed far
below the 65,536 oids at which the index first puts an oid aside; these
tests run at the scale where it happened, and test_position_index.py runs
the index itself against a dict with that constant made small."""

import logging
import os
import threading

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_list import PersistentList

from lifecycle import Item, Lifecycle
from server_processes import connect


CLIENTS = 4
ITEMS = 20_000


def test_objects_survive_a_pack_then_growth_then_a_pack(tmp_path, caplog):
    """The reproduction from the issue: Durus 4.3 lost none of these, we lost 34,462."""
    path = str(tmp_path / "grow.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["old"] = PersistentList([Item(i) for i in range(100_000)])
    connection.commit()
    connection.pack()
    root["new"] = new = PersistentList()
    connection.commit()
    for batch in range(40):
        new.extend(Item(-(batch * 1000 + i)) for i in range(1000))
        connection.commit()
    with caplog.at_level(logging.WARNING, logger="durus"):
        connection.pack()
    assert not caplog.records  # "referenced but has no record; skipped", 34,462 times
    connection.get_storage().close()
    root = Connection(FileStorage(path)).get_root()
    assert [item.value for item in root["new"]] == [-i for i in range(40_000)]
    assert [item.value for item in root["old"]] == list(range(100_000))
    root._p_connection.get_storage().close()


def test_a_file_that_grew_after_a_pack_opens_with_every_object(tmp_path):
    """Opening indexes the transactions after the offset map a 4 MiB chunk at
    a time: the first chunks put the new oids aside, later ones grew the
    index past them and masked them, and new_oid() then handed them out again."""
    path = str(tmp_path / "grow.durus")
    connection = Connection(FileStorage(path))
    connection.get_root()["old"] = PersistentList(Item(i) for i in range(80_000))
    connection.commit()
    connection.pack()
    connection.get_root()["new"] = new = PersistentList()
    values = [os.urandom(300) for _ in range(30_000)]  # 10 MiB that do not compress
    for batch in range(30):
        new.extend(Item(value) for value in values[batch * 1000:(batch + 1) * 1000])
        connection.commit()
    connection.get_storage().close()
    storage = FileStorage(path)
    used = {oid for oid, _ in storage.gen_oid_record()}
    assert len(used) == 80_000 + 30_000 + 3  # with the root and the two lists
    fresh = {storage.new_oid() for _ in range(50_000)}
    assert not used & fresh
    root = Connection(storage).get_root()
    assert [item.value for item in root["new"]] == values
    assert [item.value for item in root["old"]] == list(range(80_000))
    storage.close()


def test_lifecycle_of_200000_objects_matches_a_model(tmp_path, caplog, report):
    seed = int(os.environ.get("DURUS_LIFECYCLE_SEED", "10"))
    life = Lifecycle(tmp_path / "life.durus", seed)
    with caplog.at_level(logging.WARNING, logger="durus"):
        counts = life.run(objects=200_000, steps=8)
    life.close()
    assert not caplog.records
    report("seed %d: 200,000 objects, then %s, each checked object by object"
           % (seed, ", ".join("%d %s" % (n, name) for name, n in sorted(counts.items()))))


def test_btrees_grow_through_a_server_that_packs_every_half_second(servers, tmp_path):
    """Four clients add 20,000 items each to their own BTree while a fifth
    asks for a pack every 0.5 s; fresh clients, and clients of the restarted
    server, then find every item."""
    path = tmp_path / "served.durus"
    server = servers.ours("--file", str(path))
    setup = connect(server)
    for i in range(CLIENTS):
        setup.get_root()["t%d" % i] = BTree()
    setup.commit()
    setup.get_storage().close()
    errors = []
    done = threading.Event()

    def write(i: int) -> None:
        try:
            connection = connect(server)
            tree = connection.get_root()["t%d" % i]
            for start in range(0, ITEMS, 500):
                for key in range(start, start + 500):
                    tree[key] = Item(key * CLIENTS + i)
                connection.commit()
            connection.get_storage().close()
        except Exception as error:  # reported by the test
            errors.append(error)

    def pack() -> None:
        storage = connect(server).get_storage()
        while not done.wait(0.5):
            storage.pack()
        storage.close()

    writers = [threading.Thread(target=write, args=(i,)) for i in range(CLIENTS)]
    packer = threading.Thread(target=pack)
    for thread in writers + [packer]:
        thread.start()
    for thread in writers:
        thread.join(300)
    done.set()
    packer.join(60)
    assert not errors
    check_trees(connect(server))
    server.quit()
    server = servers.ours("--file", str(path))
    check_trees(connect(server))
    assert "no record" not in server.log_text() + servers.started[0].log_text()


def check_trees(connection) -> None:
    for i in range(CLIENTS):
        tree = connection.get_root()["t%d" % i]
        assert [(key, item.value) for key, item in tree.items()] == \
            [(key, key * CLIENTS + i) for key in range(ITEMS)]
    connection.get_storage().close()
