"""Shared fixtures: the real Durus 4.3 peer, running scripts under it, and
(through pytest_plugins) storage servers, TLS certificates, a fuzz target,
a full disk and descriptor calls."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# Helper modules whose fixtures every test module may use (pytest reads
# this only here, in the root conftest).
pytest_plugins = [
    "certificates", "closed_checks", "full_disk", "server_processes", "soak_runners",
    "tool_databases"]


def _peer_python() -> str:
    python = os.environ.get("DURUS_PEER_PYTHON")
    if python:
        return python
    venv = Path(os.environ.get("DURUS_PEER_VENV", ROOT / ".venv-peer"))
    subprocess.run([str(ROOT / "scripts" / "setup-peer-venv.sh"), str(venv)], check=True)
    return str(venv / "bin" / "python")


@pytest.fixture(scope="session")
def peer_python() -> str:
    """Path of a python that imports the real durus==4.3."""
    return _peer_python()


def run_python(python: str, code: str, *args: str, cwd, path=(TESTS,), timeout: float = 300) -> str:
    """Run code under python with path importable; return its stdout, fail on error.

    For the peer, cwd must not be the repo root, or our durus would shadow its own.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, path)))
    done = subprocess.run([python, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AssertionError("%s failed (%d):\n%s\n%s"
                             % (python, done.returncode, done.stdout, done.stderr))
    return done.stdout


@pytest.fixture
def run_peer(peer_python, tmp_path):
    """run_peer(code, *args) runs code under Durus 4.3 in tmp_path; returns stdout."""
    return lambda code, *args: run_python(peer_python, code, *args, cwd=tmp_path)


@pytest.fixture
def run_ours(tmp_path):
    """run_ours(code, *args) runs code under this project's durus in a new process."""
    return lambda code, *args: run_python(sys.executable, code, *args, cwd=tmp_path,
                                          path=(ROOT, TESTS))


@pytest.fixture
def sides(run_peer, run_ours) -> dict:
    """{'ours': run_ours, 'peer': run_peer}: a script run by either side."""
    return {"ours": run_ours, "peer": run_peer}


# Numbers the reliability tests report (kills survived, fuzz cases tried,
# throughput), printed at the end of the run.
_REPORTED = []


@pytest.fixture
def report(request):
    """report(text) adds a line, under the test's name, to the end-of-run summary."""
    return lambda text: _REPORTED.append("%s: %s" % (request.node.name, text))


def pytest_terminal_summary(terminalreporter):
    if _REPORTED:
        terminalreporter.section("reliability numbers")
        for line in _REPORTED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster started for this test run (postgres_cluster.Cluster)."""
    from postgres_cluster import Cluster
    cluster = Cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def postgres_dsn(postgres, request):
    """The DSN of a new, empty database in the test run's cluster."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[-50:]
    return postgres.create_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def shared_database(request, tmp_path):
    """open_storage(**options) -> a storage on one database that processes
    share without a server: an SQLite file, or a PostgreSQL database."""
    from durus.sqlite_storage import SqliteStorage
    if request.param == "sqlite":
        target, storage_class = str(tmp_path / "db.sqlite"), SqliteStorage
    else:
        from durus.postgres_storage import PostgresStorage
        target, storage_class = request.getfixturevalue("postgres_dsn"), PostgresStorage
    return functools.partial(storage_class, target)


@pytest.fixture(params=["file", "sqlite", "postgres"])
def any_database(request, tmp_path):
    """open_storage(**options) -> a storage on one database of each kind in
    turn: a FileStorage file, an SQLite file, a PostgreSQL database. It has
    .kind; storages it opened are closed after the test."""
    from durus.file_storage import FileStorage
    from durus.sqlite_storage import SqliteStorage
    if request.param == "postgres":
        from durus.postgres_storage import PostgresStorage
        storage_class, target = PostgresStorage, request.getfixturevalue("postgres_dsn")
    else:
        storage_class = FileStorage if request.param == "file" else SqliteStorage
        target = str(tmp_path / ("db." + request.param))
    opened = []

    def open_storage(**options):
        storage = storage_class(target, **options)
        opened.append(storage)
        return storage
    open_storage.kind = request.param
    yield open_storage
    for storage in opened:
        storage.close()
