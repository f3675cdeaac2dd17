"""The durus command as a user types it: the README's Quick Demo through a
pseudo-terminal, persistence with --file, packing, help and error messages."""

import os
import re
import select
import signal
import subprocess
import time

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict

from server_processes import connect, durus_command, free_port, our_env, run_durus


class Terminal:
    """A command on a pseudo-terminal, driven by typing lines and waiting for output."""

    def __init__(self, args: list, cwd, env: dict):
        master, slave = os.openpty()
        self.process = subprocess.Popen(args, cwd=cwd, env=env, stdin=slave, stdout=slave,
                                        stderr=slave, start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = ""
        self.seen = 0

    def expect(self, pattern: str, timeout: float = 20) -> re.Match:
        """Wait for pattern in the output not yet matched; return the match."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.output, self.seen)
            if match:
                self.seen = match.end()
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise AssertionError("no %r in the terminal output:\n%s"
                                     % (pattern, self.output[self.seen:]))

    def _read(self, timeout: float) -> bool:
        if not select.select([self.master], [], [], timeout)[0]:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the command has exited
            return False
        self.output += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return bool(data)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def run(self, line: str, expected: str | None = None) -> None:
        """Type a line at the prompt, then wait for expected (if given) and the next prompt."""
        self.type(line + "\n")
        if expected is not None:
            self.expect(expected)
        self.expect(">>> ")

    def end(self) -> int:
        """Type Control-D and return the exit code."""
        self.type("\x04")
        try:
            return self.process.wait(20)
        finally:
            os.close(self.master)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def terminals(tmp_path):
    """terminals(*durus_args) starts `python -m durus *durus_args` on a
    pseudo-terminal, with HOME in tmp_path; all are killed after the test."""
    env = dict(our_env(), HOME=str(tmp_path), TERM="xterm", INPUTRC=os.devnull)
    env.pop("PYTHONSTARTUP", None)
    env.pop("DURUSSTARTUP", None)
    started = []

    def start(*args: str) -> Terminal:
        terminal = Terminal(durus_command(*args), tmp_path, env)
        started.append(terminal)
        return terminal

    yield start
    for terminal in started:
        terminal.kill()


def test_quick_demo(tmp_path, terminals):
    port = str(free_port())
    server = subprocess.Popen(durus_command("-s", "--port", port), cwd=tmp_path,
                              env=our_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert "Ready on 127.0.0.1:%s" % port in server.stderr.readline() + \
            server.stderr.readline()
        first = terminals("-c", "--port", port)
        first.expect("Durus 127.0.0.1:%s" % port)
        first.expect(">>> ")
        first.run("root['demo'] = 1")
        first.run("connection.commit()")
        first.run("root['scratch'] = 'not committed'")
        first.run("connection.abort()")
        first.run("print(sorted(root.items()))", r"\[\('demo', 1\)\]")
        second = terminals("-c", "--port", port)
        second.expect(">>> ")
        second.run("print('demo is', root['demo'])", "demo is 1")
        first.run("root['demo'] = 2")
        first.run("connection.commit()")
        second.run("print('demo is', root['demo'])", "demo is 1")
        second.run("connection.abort()")
        second.run("print('demo is', root['demo'])", "demo is 2")
        # Tab completion works on the namespace.
        second.type("print('completed', type(conne\t).__name__)\n")
        second.expect("completed Connection")
        assert first.end() == 0 and second.end() == 0
        assert "root['demo'] = 2" in (tmp_path / ".durushistory").read_text()
        stop = run_durus("-s", "--stop", "--port", port, cwd=tmp_path)
        assert stop.returncode == 0
        assert server.wait(15) == 0
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stderr.close()


def test_file_persistence_stop_restart_and_direct_client(tmp_path, servers, terminals):
    path = str(tmp_path / "test.durus")
    port = free_port()
    servers.ours("--file", path, address=("127.0.0.1", port))
    connection = Connection(ClientStorage(port=port))
    connection.get_root()["kept"] = "across restarts"
    connection.commit()
    connection.get_storage().close()
    assert run_durus("-s", "--stop", "--port", str(port), cwd=tmp_path).returncode == 0
    servers.ours("--file", path, address=("127.0.0.1", port))
    assert Connection(ClientStorage(port=port)).get_root()["kept"] == "across restarts"
    assert run_durus("-s", "--stop", "--port", str(port), cwd=tmp_path).returncode == 0
    direct = terminals("-c", "--file", path)
    direct.expect("Durus %s" % re.escape(path))
    direct.expect(">>> ")
    direct.run("print(root['kept'])", "across restarts")
    assert direct.end() == 0


def test_client_on_a_unix_socket_with_startup_file(tmp_path, servers):
    address = str(tmp_path / "durus.sock")
    servers.ours(address=address)
    startup = tmp_path / "startup.py"
    startup.write_text("greeting = 'hello from ' + type(connection).__name__\n")
    done = run_durus("-c", "--address", address, "--startup", str(startup), cwd=tmp_path,
                     stdin="print(greeting)\nroot['via'] = 'unix'\nconnection.commit()\n")
    assert "hello from Connection" in done.stdout, done.stderr
    env = dict(our_env(), DURUSSTARTUP=str(startup))
    done = run_durus("-c", "--address", address, cwd=tmp_path, env=env,
                     stdin="print(greeting, root['via'])\n")
    assert "hello from Connection unix" in done.stdout, done.stderr


def test_pack_a_file_and_a_server(tmp_path, servers):
    path = tmp_path / "db.durus"
    connection = Connection(FileStorage(str(path)))
    connection.get_root()["garbage"] = PersistentDict((i, PersistentDict(n=i))
                                                      for i in range(500))
    connection.commit()
    del connection.get_root()["garbage"]
    connection.commit()
    connection.get_storage().close()
    size = path.stat().st_size
    assert run_durus("-p", "--file", str(path), cwd=tmp_path).returncode == 0
    assert path.stat().st_size < size / 5
    server = servers.ours("--file", str(path))
    done = run_durus("-p", "--port", str(server.address[1]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    server.wait_for_log("Pack finished")


def test_usage_and_help(tmp_path, peer_python):
    usage = run_durus(cwd=tmp_path)
    assert usage.returncode == 0 and "-s" in usage.stdout and "-c" in usage.stdout
    for command in "-s", "-c", "-p":
        ours = run_durus(command, "--help", cwd=tmp_path)
        assert ours.returncode == 0
        peer = subprocess.run([peer_python, "-m", "durus", command, "--help"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        peer_options = set(re.findall(r"--[a-z_-]+", peer.stdout))
        assert peer_options and peer_options <= set(re.findall(r"--[a-z_-]+", ours.stdout))


def test_errors_are_messages_not_tracebacks(tmp_path, servers):
    path = str(tmp_path / "db.durus")
    servers.ours("--file", path)
    locked = run_durus("-s", "--file", path, "--port", "0", cwd=tmp_path)
    assert locked.returncode != 0 and "in use" in locked.stderr
    assert "Traceback" not in locked.stderr
    (tmp_path / "notes.txt").write_text("not a database")
    wrong = run_durus("-c", "--file", str(tmp_path / "notes.txt"), cwd=tmp_path)
    assert "is not a Durus storage file" in wrong.stderr and "Traceback" not in wrong.stderr
    absent = run_durus("-s", "--stop", "--port", str(free_port()), cwd=tmp_path)
    assert "doesn't seem to be running" in absent.stderr


def test_server_restarts_on_a_commit_its_killed_predecessor_cut_short(tmp_path, servers):
    path = tmp_path / "db.durus"
    first = servers.ours("--file", str(path))
    connection = connect(first)
    connection.get_root()["kept"] = 1
    connection.commit()
    connection.get_storage().close()
    first.kill()
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\0\0\0\0\0\0\1\0torn")  # where the kill stopped its next commit
    second = servers.ours("--file", str(path))  # no --repair
    second.wait_for_log(r"dropped 12 bytes at byte %d" % size)
    assert connect(second).get_root()["kept"] == 1
    assert path.stat().st_size == size
    assert second.quit() == 0
    assert not path.with_name("db.durus.writer").exists()


def test_damaged_file_needs_repair_and_readonly_file_refuses_changes(tmp_path, servers):
    path = tmp_path / "db.durus"
    connection = Connection(FileStorage(str(path)))
    connection.get_root()["kept"] = 1
    connection.commit()
    connection.get_storage().close()
    with open(path, "ab") as f:
        f.write(b"\0\0\0\0\0\0\1\0torn")  # a transaction cut short
    damaged = run_durus("-s", "--file", str(path), "--port", "0", cwd=tmp_path)
    assert damaged.returncode == 1 and "--repair" in damaged.stderr
    server = servers.ours("--file", str(path), "--repair")
    assert connect(server).get_root()["kept"] == 1
    assert server.quit() == 0
    readonly = run_durus("-c", "--file", str(path), "--readonly", cwd=tmp_path,
                         stdin="print('kept', root['kept'])\nroot['x'] = 2\n"
                               "connection.commit()\n")
    assert "kept 1" in readonly.stdout and "ReadOnlyError" in readonly.stderr
