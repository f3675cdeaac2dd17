"""Storage server processes for tests: ours (`python -m durus -s`, or a
StorageServer with custom limits) and Durus 4.3's, each stopped at the end of
the test that started it; and running the durus command."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    """Return a TCP port that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connect_raw(address, timeout: float = 5) -> socket.socket:
    """Return a plain socket connected to a server at (host, port), a socket
    path or '@name'."""
    if isinstance(address, str):
        family = socket.AF_UNIX
        target = "\0" + address[1:] if address.startswith("@") else address
    else:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        target = tuple(address)
    sock = socket.socket(family)
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(server: "ServerProcess", **options) -> Connection:
    """Return a Connection to server through a ClientStorage(**options)."""
    return Connection(ClientStorage(address=server.address, **options))


def our_env() -> dict:
    """The environment for a process that must import this project's durus."""
    return dict(os.environ, PYTHONPATH=str(ROOT))


def peer_env() -> dict:
    """The environment for a Durus 4.3 process: no PYTHONPATH to shadow its durus."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def durus_command(*args: str) -> list:
    """The command line of `durus *args` with this project's durus."""
    return [sys.executable, "-m", "durus", *args]


def run_durus(*args: str, cwd, stdin: str = "", env: dict | None = None
              ) -> subprocess.CompletedProcess:
    """Run `durus *args` in cwd (env: our_env()) with stdin as its input; return
    the finished process, its output captured as text."""
    return subprocess.run(durus_command(*args), cwd=cwd, env=env or our_env(), input=stdin,
                          capture_output=True, text=True, timeout=60)


def _address_options(address) -> list:
    """The `durus -s` options to listen on address: a socket path or (host, port)."""
    if isinstance(address, str):
        return ["--address", address]
    return ["--host", address[0], "--port", str(address[1])]


class ServerProcess:
    """A storage server in a child process.

    address: (host, port) or a socket path, known once start() returns.
    log_path: Path of its log file.
    secured: bool, it uses TLS or users, so quit() stops it with SIGTERM
        rather than a 'Q' that it would refuse.
    """

    def __init__(self, command: list, address, log_path: Path, cwd: Path, env: dict,
                 secured: bool = False):
        self.address = address
        self.log_path = log_path
        self.secured = secured
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 20) -> re.Match:
        """Return the match of pattern in the log, waiting for it to appear."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log_text())
            if match:
                return match
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("no %r in the server log (exit code %s):\n%s"
                                     % (pattern, self.process.poll(), self.log_text()))
            time.sleep(0.02)

    def wait_until_connectable(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self._connectable():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("server at %s never came up (exit code %s):\n%s"
                                     % (self.address, self.process.poll(), self.log_text()))
            time.sleep(0.05)

    def _connectable(self) -> bool:
        try:
            connect_raw(self.address).close()
        except OSError:
            return False
        return True

    def quit(self, timeout: float = 15) -> int:
        """Ask the server to quit with 'Q' (or SIGTERM if it does not listen);
        return its exit code."""
        if self.process.poll() is None and self.secured:
            self.process.terminate()
        elif self.process.poll() is None:
            try:
                with connect_raw(self.address) as sock:
                    sock.sendall(b"Q")
            except OSError:
                self.process.terminate()
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Servers:
    """Starts servers for one test; stop_all() ends every one still running."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started = []

    def _log_path(self) -> Path:
        return self.tmp_path / ("server-%d.log" % len(self.started))

    def ours(self, *args: str, address=None) -> ServerProcess:
        """Start `python -m durus -s *args` on address (default: a free
        loopback port chosen by the server itself)."""
        log_path = self._log_path()
        args = list(args) + ["--logfile", str(log_path)]
        args += ["--port", "0"] if address is None else _address_options(address)
        command = [sys.executable, "-m", "durus", "-s", *args]
        secured = "--certfile" in args or "--users-file" in args
        return self._start(ServerProcess(command, address, log_path, self.tmp_path, our_env(),
                                         secured))

    def custom(self, file: Path, trace: Path | None = None, **options) -> ServerProcess:
        """Start a StorageServer(FileStorage(file), **options) on a free loopback
        port; with trace, its calls are saved there (see syscall_trace) when it quits."""
        log_path = self._log_path()
        options = dict(options, file=str(file), logfile=str(log_path),
                       address=["127.0.0.1", 0], logginglevel=options.get("logginglevel", 20))
        if trace is not None:
            options["trace"] = str(trace)
        command = [sys.executable, str(TESTS / "custom_server.py"), json.dumps(options)]
        secured = "certfile" in options or "users_file" in options
        return self._start(ServerProcess(command, None, log_path, self.tmp_path, our_env(),
                                         secured))

    def peer(self, python: str, *args: str, address=None) -> ServerProcess:
        """Start Durus 4.3's server (`python -m durus -s *args`) on address
        (default: a free loopback port)."""
        address = address or ("127.0.0.1", free_port())
        log_path = self._log_path()
        args = [*args, "--logfile", str(log_path), *_address_options(address)]
        server = ServerProcess([python, "-m", "durus", "-s", *args], address, log_path,
                               self.tmp_path, peer_env())
        self.started.append(server)
        server.wait_until_connectable()
        return server

    def _start(self, server: ServerProcess) -> ServerProcess:
        self.started.append(server)
        ready = server.wait_for_log(r"Ready on (\S+)").group(1)
        if server.address is None or (not isinstance(server.address, str)
                                      and server.address[1] == 0):
            host, _, port = ready.rpartition(":")
            server.address = (host.strip("[]"), int(port))
        return server

    def stop_all(self) -> None:
        for server in self.started:
            try:
                server.quit(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            server.kill()


@pytest.fixture
def servers(tmp_path):
    """A Servers factory; every server it starts is stopped after the test."""
    factory = Servers(tmp_path)
    yield factory
    factory.stop_all()
