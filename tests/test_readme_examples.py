"""The examples of Durus's README (the user's spec) and of ours run unchanged."""

import re
import textwrap

from conftest import ROOT

# "Using Durus in a Program", verbatim, with mymodule written as the text assumes.
DURUS_FILESTORAGE_EXAMPLE = """
from durus.file_storage import FileStorage
from durus.connection import Connection
connection = Connection(FileStorage("test.durus"))
"""

DURUS_STORE_EXAMPLE = """
# Assume mymodule defines A as a subclass of Persistent.
from mymodule import A
x = A()
root = connection.get_root() # connection set as shown above.
root["sample"] = x           # root is dict-like
connection.commit()          # Now x is stored.
"""

MYMODULE = """
from durus.persistent import Persistent

class A(Persistent):
    pass
"""


def test_durus_readme_filestorage_examples(run_ours, tmp_path):
    (tmp_path / "mymodule.py").write_text(MYMODULE)
    check = """
connection.get_storage().close()
connection = Connection(FileStorage("test.durus"))
print(type(connection.get_root()["sample"]).__name__)
"""
    out = run_ours("import sys; sys.path.insert(0, '.')\n" + DURUS_FILESTORAGE_EXAMPLE
                   + DURUS_STORE_EXAMPLE + check)
    assert out.strip() == "A"


def readme_code_blocks(text: str) -> list:
    """The indented Python blocks of a Markdown file that import durus."""
    blocks = re.findall(r"(?:\n(?: {4}.*|))+", text)
    return [textwrap.dedent(b) for b in blocks if "import" in b and "durus" in b]


def test_our_readme_tour(run_ours):
    blocks = readme_code_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md lost its tour"
    for block in blocks:
        out = run_ours(block + "\nprint(root['alice'].balance)")
        assert out.strip() == "0"
