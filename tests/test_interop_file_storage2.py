"""DFS20 files (FileStorage2) written by the real Durus 4.3 open, change and pack
here, and ours there, checked object by object (tests/interop_model.py)."""

import pytest

import test_interop
from test_interop import sides  # noqa: F401 (the fixture)

# test_interop's scripts, on FileStorage2.
WRITE, MUTATE, READ = (
    script.replace("from durus.file_storage import FileStorage",
                   "from durus.file_storage2 import FileStorage2 as FileStorage")
    for script in (test_interop.WRITE, test_interop.MUTATE, test_interop.READ))

MAGIC = """
import sys
print(open(sys.argv[1], "rb").read(6) == b"DFS20\\0")
"""


@pytest.mark.parametrize("writer, reader", [("ours", "peer"), ("peer", "ours")])
def test_written_by_one_read_by_the_other(sides, tmp_path, writer, reader):  # noqa: F811
    path = str(tmp_path / "db.durus")
    sides[writer](WRITE, path, writer)
    assert sides[writer](MAGIC, path) == "True\n"
    summary = sides[reader](READ, path)
    assert summary == sides[writer](READ, path)
    assert '"tree_len": 10000' in summary


@pytest.mark.parametrize("first, second", [("ours", "peer"), ("peer", "ours")])
def test_changes_and_pack_by_the_other_side(sides, tmp_path, first, second):  # noqa: F811
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
