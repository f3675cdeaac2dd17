"""Files written by our durus open in the real Durus 4.3, and the reverse, also after packs."""

import pytest

from interop_scripts import MUTATE, READ, WRITE


@pytest.mark.parametrize("writer, reader", [("ours", "peer"), ("peer", "ours")])
def test_written_by_one_read_by_the_other(sides, tmp_path, writer, reader):
    path = str(tmp_path / "db.durus")
    sides[writer](WRITE, path, writer)
    assert sides[reader](READ, path) == sides[writer](READ, path)
    assert '"tree_len": 10000' in sides[reader](READ, path)


@pytest.mark.parametrize("first, second", [("ours", "peer"), ("peer", "ours")])
def test_changes_and_pack_by_the_other_side(sides, tmp_path, first, second):
    path = str(tmp_path / "db.durus")
    sides[first](WRITE, path, first)
    sides[second](MUTATE, path, second, "pack")
    summary = sides[first](READ, path)
    assert summary == sides[second](READ, path)
    assert '"garbage_gone": true' in summary and '"tree_len": 6667' in summary
    # The packed file takes more commits from the first side, and still reads on both.
    sides[first](MUTATE, path, first + "-again")
    assert sides[first](READ, path) == sides[second](READ, path)


def test_peer_storage_tools_accept_our_checksum_records(run_ours, run_peer, tmp_path):
    """Our per-transaction checksum records must not upset Durus's whole-file tools."""
    path = str(tmp_path / "db.durus")
    run_ours(WRITE, path, "ours")
    run_ours(MUTATE, path, "ours")
    out = run_peer("""
import sys
from durus.connection import Connection, gen_every_instance, touch_every_reference
from durus.file_storage import FileStorage
from durus.storage import get_census
import interop_model
connection = Connection(FileStorage(sys.argv[1]))
print(sorted(p.name for p in gen_every_instance(connection, interop_model.Person)))
print(get_census(connection.get_storage())[b"Person"])
touch_every_reference(connection, "Person")
connection.commit()
connection.pack()
""", path)
    assert out.splitlines()[:2] == ["['alice', 'bob']", "2"]
    run_ours(MUTATE, path, "ours-after-peer-pack")
