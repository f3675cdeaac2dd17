"""A throw-away PostgreSQL cluster for the tests, from the machine's server
binaries: initdb and pg_ctl in a temporary directory, listening on a free
loopback port (password required; TLS offered, with a certificate for
127.0.0.1 signed by the CA in `cafile`) and on a Unix socket in that
directory (trusted, for the set-up). As root, the server runs as an
unprivileged user.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

from certificates import Authority

USER = "durus"
PASSWORD = "s3cret-pw"


def _bin_dir() -> str:
    """The folder of initdb and pg_ctl: on PATH, or Debian's versioned folder."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not folders:
        raise RuntimeError("no PostgreSQL server binaries (initdb): the README's test "
                           "command installs them (scripts/setup-postgres.sh)")
    return folders[-1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A running cluster; dsn(name) for a database in it, made by create_database()."""

    def __init__(self):
        self.bin = _bin_dir()
        self.directory = tempfile.mkdtemp(prefix="durus-pg-")
        self.data = os.path.join(self.directory, "data")
        self.port = _free_port()
        self.owner = None
        if os.geteuid() == 0:
            self.owner = "postgres" if _user_exists("postgres") else "nobody"
            account = pwd.getpwnam(self.owner)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        password_file = os.path.join(self.directory, "password")
        with open(password_file, "w") as f:
            f.write(PASSWORD)
        self._run("initdb", "-D", self.data, "-U", USER, "--pwfile", password_file,
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        authority = Authority(Path(self.directory), "PostgreSQL Test CA")
        self.cafile = authority.cafile
        server = authority.issue("server", "postgres", ("127.0.0.1", "localhost"))
        if self.owner is not None:
            os.chown(server.keyfile, account.pw_uid, account.pw_gid)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write("listen_addresses = '127.0.0.1'\nport = %d\n"
                       "unix_socket_directories = '%s'\nmax_connections = 200\n"
                       "ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n"
                       % (self.port, self.directory, server.certfile, server.keyfile))
        self.start()

    def _run(self, program: str, *args: str) -> None:
        # Without what instruments this test process (scripts/asan-test.sh
        # preloads AddressSanitizer): the server is not under test.
        env = {name: value for name, value in os.environ.items()
               if name not in ("LD_PRELOAD", "ASAN_OPTIONS", "PYTHONMALLOC")}
        subprocess.run([os.path.join(self.bin, program), *args], check=True, env=env,
                       user=self.owner, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       cwd=self.directory, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.directory, "log"),
                  "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "restart")

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(host=self.directory, port=self.port, user=USER,
                               dbname="postgres", autocommit=True)

    def create_database(self, name: str) -> str:
        """Create an empty database; return its DSN (a URI with the password)."""
        with self.admin() as admin:
            admin.execute("DROP DATABASE IF EXISTS %s" % name)
            admin.execute("CREATE DATABASE %s" % name)
        return self.dsn(name)

    def dsn(self, name: str, password: str = PASSWORD) -> str:
        return "postgresql://%s:%s@127.0.0.1:%d/%s" % (USER, password, self.port, name)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
