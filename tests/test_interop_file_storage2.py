"""DFS20 files (FileStorage2) written by the real Durus 4.3 open, change and pack
here, and ours there, checked object by object (tests/interop_model.py)."""

import pytest

import interop_scripts

# The interop scripts, on FileStorage2.
WRITE, MUTATE, READ = (
    script.replace("from durus.file_storage import FileStorage",
                   "from durus.file_storage2 import FileStorage2 as FileStorage")
    for script in (interop_scripts.WRITE, interop_scripts.MUTATE, interop_scripts.READ))

MAGIC = """
import sys
print(open(sys.argv[1], "rb").read(6) == b"DFS20\\0")
"""


@pytest.mark.parametrize("writer, reader", [("ours", "peer"), ("peer", "ours")])
def test_written_by_one_read_by_the_other(sides, tmp_path, writer, reader):
    path = str(tmp_path / "db.durus")
    sides[writer](WRITE, path, writer)
    assert sides[writer](MAGIC, path) == "True\n"
    summary = sides[reader](READ, path)
    assert summary == sides[writer](READ, path)
    assert '"tree_len": 10000' in summary


@pytest.mark.parametrize("first, second", [("ours", "peer"), ("peer", "ours")])
def test_changes_and_pack_by_the_other_side(sides, tmp_path, first, second):
    path = str(tmp_path / "db.durus")
    sides[first](WRITE, path, first)
    sides[second](MUTATE, path, second, "pack")
    assert sides[second](MAGIC, path) == "True\n"
    summary = sides[first](READ, path)
    assert summary == sides[second](READ, path)
    assert '"garbage_gone": true' in summary and '"tree_len": 6667' in summary
    # The packed file takes more commits, and a pack, from the first side.
    sides[first](MUTATE, path, first + "-again", "pack")
    assert sides[first](READ, path) == sides[second](READ, path)


OURS_WITH_COPIES = """
import sys
from durus.connection import Connection
from durus.file_storage2 import FileStorage2
from durus.persistent_dict import PersistentDict
storage = FileStorage2(sys.argv[1])
connection = Connection(storage)
root = connection.get_root()
for i in range(5):  # commits of one to three records, each ending with a copy
    root[sys.argv[2] + str(i)] = PersistentDict(n=i, text="x" * (50 * i))
    if i % 2:
        root[sys.argv[2] + str(i - 1)]["n"] = -i
    connection.commit()
storage.close()
"""

PEER_READS_COMMITS_PACKS = """
import sys
from durus.connection import Connection
from durus.file_storage2 import FileStorage2
storage = FileStorage2(sys.argv[1])
pairs = list(storage.gen_oid_record())
oids = [oid for oid, _ in pairs]
connection = Connection(storage)
root = connection.get_root()
print(len(oids) == len(set(oids)), all(storage.load(oid) == record for oid, record in pairs))
print(sorted((key, value["n"]) for key, value in root.items()))
root["peer0"]["n"] = 100
connection.commit()
connection.pack()
storage.close()
"""

READ_N = """
import sys
from durus.connection import Connection
from durus.file_storage2 import FileStorage2
root = Connection(FileStorage2(sys.argv[1], readonly=True)).get_root()
print(sorted((key, value["n"]) for key, value in root.items()))
"""


def test_durus_reads_commits_to_and_packs_our_commits_with_their_copies(run_ours, run_peer,
                                                                        tmp_path):
    """Each commit of ours repeats one of its records at its end: Durus 4.3
    sees each oid once in gen_oid_record, loads the same record, commits
    and packs; our commits after its own still read on both sides."""
    path = str(tmp_path / "db.durus")
    run_peer(OURS_WITH_COPIES, path, "peer")  # so that peer0 exists
    run_ours(OURS_WITH_COPIES, path, "ours")
    first, second = run_peer(PEER_READS_COMMITS_PACKS, path).splitlines()
    assert first == "True True"
    assert "('ours1', 1)" in second and "('ours0', -1)" in second
    run_ours(OURS_WITH_COPIES, path, "again")
    summary = run_peer(READ_N, path)
    assert summary == run_ours(READ_N, path)
    assert "('peer0', 100)" in summary and "('again4', 4)" in summary
