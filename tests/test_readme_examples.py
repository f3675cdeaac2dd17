"""The examples of Durus's README (the user's spec) and of ours run unchanged."""

import os
import re
import subprocess
import sys
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


def readme_code_blocks(section: str) -> list:
    """The indented Python blocks that import durus in a section of our README."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## " + section + "\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"(?:\n(?: {4}.*|))+", text[start:end if end > 0 else None])
    return [textwrap.dedent(b) for b in blocks if "import" in b and "durus" in b]


def test_our_readme_tour(run_ours):
    blocks = readme_code_blocks("A short tour")
    assert blocks, "README.md lost its tour"
    for block in blocks:
        out = run_ours(block + "\nprint(root['alice'].balance)")
        assert out.strip() == "0"


SHARED = "Many processes on one database: SQLite and PostgreSQL"


def _run_workers(code: str, tmp_path, processes: int, env: dict) -> list:
    """Run code in `processes` processes at once; return their last lines."""
    script = tmp_path / "worker.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    workers = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(processes)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    return [out.strip().splitlines()[-1] for out, _ in outputs]


def test_shared_sqlite_worker_in_four_processes(tmp_path):
    worker, _ = readme_code_blocks(SHARED)
    last = _run_workers(worker, tmp_path, 4, {})
    assert "count is now 400" in last


def test_shared_postgres_worker_in_four_processes(tmp_path, postgres_dsn):
    """The same worker with the README's PostgreSQL opening in place of SQLite's."""
    worker, opening = readme_code_blocks(SHARED)
    loop = worker[worker.index("for _ in range"):]
    last = _run_workers(opening + "from durus.error import ConflictError\n" + loop,
                        tmp_path, 4, {"DURUS_DSN": postgres_dsn})
    assert "count is now 400" in last


def test_our_readme_transactions_example(run_ours):
    blocks = readme_code_blocks("Transactions and conflicts")
    assert len(blocks) == 1, "README.md lost its transactions example"
    assert run_ours(blocks[0]).strip() == "30"
