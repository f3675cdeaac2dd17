"""The README's "Running a server on a network" set-up, run as written: its
openssl and users commands, the server's command line, the clients' command
lines and the program, with the example name and address replaced by
loopback ones. TLS and authentication through the durus command."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from server_processes import our_env


SECTION = "## Running a server on a network"
CONSOLE_INPUT = 'root["who"] = "alice"\nconnection.commit()\nprint(sorted(root))\n'


def readme_section_blocks() -> list:
    """[(language, code)] of the fenced blocks in the README's network section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    end = section.find("\n## ", 1)
    return re.findall(r"```(\w+)\n(.*?)```", section if end < 0 else section[:end], re.S)


def on_loopback(text: str) -> str:
    return (text.replace("db.example.com", "localhost").replace("192.0.2.10", "127.0.0.1")
            .replace("0.0.0.0", "127.0.0.1"))


def run_shell(line: str, cwd, stdin: str = "") -> subprocess.CompletedProcess:
    # This python's durus, wherever a `durus` command may be installed.
    line = re.sub(r"\bdurus -", lambda _: shlex.quote(sys.executable) + " -m durus -", line)
    env = dict(our_env(), HOME=str(cwd))
    env.pop("DURUS_SECRET", None)
    return subprocess.run(["bash", "-ec", line], cwd=cwd, env=env, input=stdin, text=True,
                          capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_readme_network_setup_runs_as_written(servers, tmp_path, run_ours):
    (_, setup), (_, server_line), (_, client_lines), (language, program) = \
        readme_section_blocks()
    assert language == "python"
    done = run_shell(on_loopback(setup), tmp_path)
    assert done.returncode == 0, done.stderr
    assert stat_mode(tmp_path / "alice.secret") == 0o600
    server_args = shlex.split(on_loopback(server_line))
    assert server_args[:2] == ["durus", "-s"]
    server = servers.ours(*server_args[2:])
    assert "(TLS, 2 users)" in server.log_text()
    port = server.address[1]
    *clients, stop = [on_loopback(line) + " --port %d" % port
                      for line in client_lines.strip().splitlines()]
    alice, bob, pack = clients
    done = run_shell(alice, tmp_path, CONSOLE_INPUT)
    assert "['who']" in done.stdout and "Error" not in done.stdout + done.stderr, done
    done = run_shell(bob, tmp_path, CONSOLE_INPUT)
    assert "ReadOnlyError: commit refused" in done.stdout + done.stderr, done
    assert "['who']" in done.stdout
    done = run_shell(pack, tmp_path)
    assert done.returncode == 0, done.stderr
    server.wait_for_log("Pack finished")
    out = run_ours(on_loopback(program).replace('host="localhost"',
                                                'host="localhost", port=%d' % port))
    assert out.strip() == "True ['who']"
    # A read-only user may not stop the server; alice may.
    bob_stop = stop.replace("--user alice --secret-file alice.secret",
                            "--user bob --secret-file bob.secret")
    done = run_shell(bob_stop, tmp_path)
    assert done.returncode == 1 and "this user is read-only" in done.stderr
    done = run_shell(stop, tmp_path)
    assert done.returncode == 0, done.stderr
    assert server.process.wait(10) == 0


def test_durus_command_refuses_bad_security_options(tmp_path):
    done = run_shell("durus -s --certfile missing.pem --port 0", tmp_path)
    assert done.returncode == 1 and "No such file" in done.stderr
    (tmp_path / "users").write_text("alice owner %s\n" % ("s" * 32))
    done = run_shell("durus -s --users-file users --port 0", tmp_path)
    assert done.returncode == 1 and "users, line 1: the role must be one of" in done.stderr
    assert "s" * 32 not in done.stderr
    done = run_shell("DURUS_USERS='alice read-only short' durus -s --port 0", tmp_path)
    assert done.returncode == 1 and "$DURUS_USERS, line 1: a secret must be at least 16" \
        in done.stderr
    done = run_shell("durus -c --secret s3cr3t-on-the-command-line", tmp_path)
    assert done.returncode == 2 and "never given on the command line" in done.stderr
    assert "s3cr3t" not in done.stderr


def stat_mode(path) -> int:
    return os.stat(path).st_mode & 0o777
