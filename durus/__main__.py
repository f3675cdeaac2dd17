"""The durus command: `durus -s` runs or stops a storage server, `durus -c`
opens an interactive client, `durus -p` packs a storage.

`python -m durus` is the same command.
"""

import argparse
import atexit
import code
import functools
import importlib
import importlib.util
import os
import signal
import sys
import time
from logging import ERROR, INFO
from pprint import pprint
from types import ModuleType
from typing import Any, Callable

from durus.auth import DEFAULT_USER, parse_users, read_secret, read_users
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import DurusError
from durus.logger import direct_output, log, logger
from durus.tls import client_context
from durus.tools import COMMANDS
from durus.storage import Storage
from durus.storage_server import (DEFAULT_GCBYTES, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HOST,
                                  DEFAULT_MAX_COMMIT_SIZE, DEFAULT_MAX_CONNECTIONS,
                                  DEFAULT_MAX_FRAME_SIZE, DEFAULT_PORT, DEFAULT_SNAPSHOT_AGE,
                                  DEFAULT_SNAPSHOT_BYTES, TIMEOUT, SocketAddress, StorageServer,
                                  wait_for_server)
from durus.utils import int8_to_str, str_to_int8

DEFAULT_LOGGING_LEVEL = INFO
HISTORY_FILE = "~/.durushistory"

USAGE = """\
durus [ -c | -s | -p ] [ -h ] [<specific options>]
    -s   Start or stop a Durus storage server.
    -c   Start a low-level interactive client.
    -p   Pack a storage file.
    -h   Get help on specific options.
"""

_REPAIR_HELP = ("Repair the file by cutting off a damaged or incomplete end. Without "
                "this option, a damaged file is reported and nothing is changed.")


# Storages.

# What --file takes as a PostgreSQL database rather than a file name.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

def import_class(name: str) -> type:
    """Return the class named by a dotted path such as 'durus.file_storage.FileStorage'."""
    module_name, _, class_name = name.rpartition(".")
    if not module_name:
        raise ValueError("%r is not a dotted path to a class" % name)
    return getattr(importlib.import_module(module_name), class_name)


def get_storage_class(file: str) -> type:
    """Return the storage class for file, judged by how it starts: FileStorage
    for SHELF-1 and for a missing or empty file, FileStorage2 for DFS20,
    SqliteStorage for SQLite; PostgresStorage for a postgresql:// URI."""
    if file.startswith(POSTGRES_SCHEMES):
        from durus.postgres_storage import PostgresStorage
        return PostgresStorage
    from durus.file_storage import FileStorage
    if not os.path.exists(file):
        return FileStorage
    with open(file, "rb") as f:
        start = f.read(20)
    # A file cut short while being created holds only the start of its header
    # (FileStorage(repair=True) writes it afresh).
    if start.startswith(b"SHELF-1") or b"SHELF-1".startswith(start):
        return FileStorage
    if start.startswith(b"DFS20") or b"DFS20".startswith(start):
        from durus.file_storage2 import FileStorage2
        return FileStorage2
    if start.startswith(b"SQLite format "):
        from durus.sqlite_storage import SqliteStorage
        return SqliteStorage
    raise ValueError("%s is not a Durus storage file (unknown storage type)" % file)


def get_storage(file: str | None, storage_class: str | None = None, **kwargs: Any) -> Storage:
    """Open a storage on file (a new temporary file if None); kwargs (readonly,
    repair) go to the storage class, named by storage_class or found by
    looking at the file."""
    if storage_class is not None:
        cls = import_class(storage_class)
    elif file is None:
        from durus.file_storage import FileStorage
        cls = FileStorage
    else:
        cls = get_storage_class(file)
    return cls(file, **kwargs)


# durus -s

def start_durus(logfile: str | None, logginglevel: int, address: "SocketAddress | tuple[str, int] | str", storage: Storage,
                gcbytes: int, **server_options: Any) -> None:
    """Serve storage at address until stopped by 'durus -s --stop', a 'Q'
    request, SIGTERM or Ctrl-C; then close it. server_options (TLS, users,
    limits) go to StorageServer."""
    log_to(logfile, logginglevel)
    serve(address, storage, gcbytes, **server_options)


def log_to(logfile: str | None, logginglevel: int) -> None:
    """Send the log to logfile (None: stderr), at logginglevel and above."""
    direct_output(sys.stderr if logfile is None else open(logfile, "a+"))
    logger.setLevel(logginglevel)


def serve(address: "SocketAddress | tuple[str, int] | str", storage: Storage, gcbytes: int, metrics_address: tuple[str, int] | None = None,
          **server_options: Any) -> None:
    """Serve storage at address until stopped (see start_durus), logging as set
    up, with Prometheus metrics at metrics_address (host, port) if given."""
    socket_address = SocketAddress.new(address)
    if hasattr(storage, "get_filename"):
        log(INFO, "Storage file=%s address=%s", storage.get_filename(), socket_address)
    metrics = None
    if metrics_address is not None:
        from durus.metrics import ServerMetrics
        metrics = ServerMetrics()
        metrics.listen(*metrics_address)
    server = StorageServer(storage, address=socket_address, gcbytes=gcbytes, metrics=metrics,
                           **server_options)
    # A signal must not cut a commit short: it only asks the loop to stop.
    previous = {signum: signal.signal(signum, lambda *_: server.stop())
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if metrics is not None:
            metrics.close()


def stop_durus(address: "SocketAddress | tuple[str, int] | str", **client_options: Any) -> bool:
    """Ask the server at address to quit and wait (up to 10 s) until it is
    gone; return False if no server was running there. client_options (TLS,
    user, secret) go to ClientStorage."""
    socket_address = SocketAddress.new(address)
    sock = socket_address.get_connected_socket(timeout=10)
    if sock is None:
        log(INFO, "Durus server %s doesn't seem to be running.", socket_address)
        return False
    sock.close()
    ClientStorage(address=socket_address, timeout=10, **client_options).stop_server()
    for _ in range(100):
        time.sleep(0.1)
        sock = socket_address.get_connected_socket(timeout=1)
        if sock is None:
            break
        sock.close()
    return True


def _add_address_options(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="Port %s. (default=%s)" % (verb, DEFAULT_PORT))
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="Host %s. (default=%s)" % (verb, DEFAULT_HOST))
    parser.add_argument("--address", default=None,
                        help="Path of a Unix domain socket (or @name for an abstract one) "
                             "to use instead of --host and --port.")


def _add_client_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                        certificate: bool = True) -> None:
    """Add the options of a client of a server using TLS or authentication."""
    parser.add_argument("--tls", action="store_true",
                        help="Use TLS, verifying the server against the system's CAs.")
    parser.add_argument("--cafile", default=None,
                        help="Use TLS, verifying the server's certificate against the CAs "
                             "in this PEM file.")
    if certificate:
        parser.add_argument("--certfile", default=None,
                            help="Client certificate (PEM), for servers that require one.")
        parser.add_argument("--keyfile", default=None,
                            help="Key of the client certificate, if not in --certfile.")
    parser.add_argument("--user", default=os.environ.get("DURUS_USER", DEFAULT_USER),
                        help="User to authenticate as, if there is a secret. (default=%s, "
                             "or DURUS_USER from the environment)" % DEFAULT_USER)
    parser.add_argument("--secret-file", default=None,
                        help="File holding the user's secret; without it, DURUS_SECRET from "
                             "the environment is the secret, if set. Secrets are never "
                             "given on the command line.")
    parser.add_argument("--secret", nargs="?", action=_RefuseSecret, help=argparse.SUPPRESS)


class _RefuseSecret(argparse.Action):
    """Refuses --secret VALUE, rather than taking it as --secret-file, with a
    message that does not repeat it."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("a secret is never given on the command line, where other users of "
                     "the machine can see it: use --secret-file or DURUS_SECRET")


def _client_options(options: argparse.Namespace, certificate: bool = True) -> dict:
    """Return the ClientStorage keyword arguments for options (see
    _add_client_options, and its certificate argument)."""
    client = {"user": options.user, "secret": read_secret(options.secret_file)}
    certfile, keyfile = (options.certfile, options.keyfile) if certificate else (None, None)
    if options.cafile is not None or certfile is not None:
        client.update(cafile=options.cafile, certfile=certfile, keyfile=keyfile)
    elif options.tls:
        client["ssl_context"] = client_context()
    return client


def _server_storage(address, client_options: dict) -> ClientStorage:
    """Wait for a server at address, then return a ClientStorage(**client_options) on it."""
    socket_address = SocketAddress.new(address)
    wait_for_server(address=socket_address)
    return ClientStorage(address=socket_address, **client_options)


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    """Add the options for TLS, users and limits of `durus -s`."""
    parser.add_argument("--certfile", default=None,
                        help="Use TLS with this server certificate (PEM).")
    parser.add_argument("--keyfile", default=None,
                        help="Key of the server certificate, if not in --certfile.")
    parser.add_argument("--client-cafile", default=None,
                        help="Require clients to present a certificate signed by a CA in "
                             "this PEM file (mutual TLS).")
    parser.add_argument("--users-file", default=None,
                        help="Require clients to authenticate as one of the users in this "
                             "file, one 'name role secret' a line, role read-write or "
                             "read-only. Without it, DURUS_USERS from the environment is the "
                             "file's text, if set.")
    limits = [
        ("--max-connections", int, DEFAULT_MAX_CONNECTIONS, "Clients served at once."),
        ("--max-commit-size", int, DEFAULT_MAX_COMMIT_SIZE, "Largest commit, in bytes."),
        ("--max-frame-size", int, DEFAULT_MAX_FRAME_SIZE,
         "Largest other request (a bulk load), in bytes."),
        ("--timeout", float, TIMEOUT,
         "Seconds a client may stall in the middle of a request or leave replies unread."),
        ("--handshake-timeout", float, DEFAULT_HANDSHAKE_TIMEOUT,
         "Seconds a client has to finish TLS and authentication."),
        ("--idle-timeout", float, None,
         "Seconds a client may stay idle between requests. (default: no limit)"),
        ("--snapshot-bytes", int, DEFAULT_SNAPSHOT_BYTES,
         "Bytes of replaced records kept for clients reading snapshots."),
        ("--snapshot-age", float, DEFAULT_SNAPSHOT_AGE,
         "Seconds a client's snapshot may keep replaced records."),
    ]
    for flag, kind, default, text in limits:
        parser.add_argument(flag, type=kind, default=default,
                            help=text + ("" if default is None else " (default=%s)" % default))
    parser.add_argument("--metrics", type=_metrics_address, default=None, metavar="HOST:PORT",
                        help="Serve Prometheus metrics over HTTP at HOST:PORT (PORT alone: on "
                             "127.0.0.1). Needs the prometheus-client package, the 'metrics' "
                             "extra.")


def _metrics_address(text: str) -> tuple[str, int]:
    """Parse --metrics: (host, port)."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise argparse.ArgumentTypeError("needs the prometheus-client package "
                                         "(pip install 'durus[metrics]')")
    from durus.metrics import parse_metrics_address
    try:
        return parse_metrics_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _server_options(options: argparse.Namespace) -> dict:
    """Return the StorageServer keyword arguments for options (see _add_server_options)."""
    if options.users_file is not None:
        users = read_users(options.users_file)
    elif os.environ.get("DURUS_USERS"):
        users = parse_users(os.environ["DURUS_USERS"], "$DURUS_USERS")
    else:
        users = None
    return dict(certfile=options.certfile, keyfile=options.keyfile,
                client_cafile=options.client_cafile, users=users,
                max_connections=options.max_connections, max_commit_size=options.max_commit_size,
                max_frame_size=options.max_frame_size, timeout=options.timeout,
                handshake_timeout=options.handshake_timeout, idle_timeout=options.idle_timeout,
                snapshot_bytes=options.snapshot_bytes, snapshot_age=options.snapshot_age,
                metrics_address=options.metrics)


def _umask(text: str) -> int:
    """Parse a umask: a leading 0 means octal, as in 'umask 077'."""
    try:
        return int(text, 8) if text.startswith("0") else int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid umask: %r" % text) from None


def run_durus_main(argv: list) -> None:
    parser = argparse.ArgumentParser(prog="durus -s", description="Run a Durus Server.")
    _add_address_options(parser, "to listen on")
    parser.add_argument("--file", default=None,
                        help="The storage file. If not given, the storage is in a new "
                             "temporary file, removed when the server stops.")
    parser.add_argument("--storage-class", dest="storage", default=None,
                        help="Storage class (e.g. durus.file_storage.FileStorage).")
    parser.add_argument("--gcbytes", type=int, default=DEFAULT_GCBYTES,
                        help="Pack automatically each time this many bytes have been "
                             "committed; 0 never does. (default=%s)" % DEFAULT_GCBYTES)
    parser.add_argument("--owner", default=None,
                        help="Owner of the Unix domain socket (the --address value).")
    parser.add_argument("--group", default=None,
                        help="Group of the Unix domain socket (the --address value).")
    parser.add_argument("--umask", type=_umask, default=None,
                        help="umask for creating the Unix domain socket (the --address "
                             "value), e.g. 077. (default: only the owner, and the --group "
                             "if given, may connect)")
    _add_server_options(parser)
    parser.add_argument("--logginglevel", type=int, default=DEFAULT_LOGGING_LEVEL,
                        help="Logging level. Lower positive numbers log more. (default=%s)"
                             % DEFAULT_LOGGING_LEVEL)
    parser.add_argument("--logfile", default=None, help="Log file. (default=stderr)")
    parser.add_argument("--repair", action="store_true", help=_REPAIR_HELP)
    parser.add_argument("--readonly", action="store_true",
                        help="Open the file read-only: clients can load but not commit.")
    parser.add_argument("--nofsync", action="store_true",
                        help="Answer commits before they are flushed to disk, as Durus 4.3 "
                             "does: faster, but a power loss may lose answered commits. "
                             "(default: commits are answered once on disk, many per flush)")
    parser.add_argument("--stop", action="store_true",
                        help="Instead of starting the server, try to stop a running one "
                             "(with --cafile or --tls if it uses TLS, and a read-write "
                             "user's --user and --secret-file if it has users).")
    stopping = parser.add_argument_group("options of --stop")
    _add_client_options(stopping, certificate=False)
    options = parser.parse_args(argv)
    if options.address is None:
        address = SocketAddress.new((options.host, options.port))
    else:
        address = SocketAddress.new(options.address, owner=options.owner,
                                    group=options.group, umask=options.umask)
    if options.stop:
        # --certfile is the server's own here, not a client certificate.
        stop_durus(address, **_client_options(options, certificate=False))
        return
    server_options = _server_options(options)
    log_to(options.logfile, options.logginglevel)  # opening may log a recovery
    storage = get_storage(options.file, storage_class=options.storage,
                          repair=options.repair, readonly=options.readonly)
    if options.nofsync and hasattr(storage, "fsync"):
        storage.fsync = False
    try:
        serve(address, storage, options.gcbytes, **server_options)
    except BaseException:
        storage.close()
        raise


# durus -c

def configure_readline(namespace: dict, history_path: str) -> None:
    """Give the console tab completion on namespace, and a history kept in
    history_path to which each session adds its lines when it exits."""
    try:
        import readline
        import rlcompleter
    except ImportError:
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    readline.parse_and_bind("tab: complete")
    try:
        readline.read_history_file(history_path)
    except OSError:
        pass  # No history yet.
    atexit.register(_save_history, readline, history_path,
                    readline.get_current_history_length())


def _save_history(readline, history_path: str, old_length: int) -> None:
    # Appending, rather than rewriting, keeps the lines of sessions that ran
    # at the same time.
    try:
        if os.path.exists(history_path):
            new_lines = readline.get_current_history_length() - old_length
            readline.append_history_file(new_lines, history_path)
        else:
            readline.write_history_file(history_path)
    except OSError:
        pass  # Keeping history is a convenience, not worth an error at exit.


def interactive_client(file: str | None, address: "SocketAddress | tuple[str, int] | str | None", cache_size: int, readonly: bool,
                       repair: bool, startup: str, storage_class: str | None = None,
                       client_options: dict | None = None) -> None:
    """Run a Python console with a Connection to file, or to the server at
    address (client_options, for TLS and authentication, go to ClientStorage)."""
    if file:
        storage = get_storage(file, storage_class=storage_class,
                              readonly=readonly, repair=repair)
        description = storage.get_filename()  # type: ignore[attr-defined]  # every storage class has it; a DSN without its password
    else:
        storage = _server_storage(address, client_options or {})
        description = storage.address
    try:
        connection = Connection(storage, cache_size=cache_size)
        namespace = {"__name__": "__console__", "connection": connection,
                     "root": connection.get_root(), "get": connection.get,
                     "sys": sys, "os": os, "int8_to_str": int8_to_str,
                     "str_to_int8": str_to_int8, "pp": pprint}
        configure_readline(namespace, os.path.expanduser(HISTORY_FILE))
        console = code.InteractiveConsole(namespace)
        if startup:
            path = os.path.expanduser(startup)
            with open(path) as f:
                console.runcode(compile(f.read(), path, "exec"))
        console.interact("Durus %s\n"
                         "    connection -> the Connection\n"
                         "    root       -> the root instance\n"
                         "    get(oid)   -> the object with that oid" % description,
                         exitmsg="")
    finally:
        storage.close()


def client_main(argv: list) -> None:
    parser = argparse.ArgumentParser(prog="durus -c",
                                     description="Opens a client connection to a Durus server.")
    parser.add_argument("--file", default=None,
                        help="Open this storage file directly. If not given, the storage "
                             "is through a Durus server.")
    _add_address_options(parser, "the server is on")
    parser.add_argument("--storage-class", dest="storage", default=None,
                        help="Storage class (e.g. durus.file_storage.FileStorage).")
    parser.add_argument("--cache_size", type=int, default=10000,
                        help="Size of client cache (default=10000)")
    parser.add_argument("--repair", action="store_true", help=_REPAIR_HELP)
    parser.add_argument("--readonly", action="store_true",
                        help="Open the file in read-only mode.")
    parser.add_argument("--startup", default=os.environ.get("DURUSSTARTUP", ""),
                        help="Python file to run in the console's namespace on startup. "
                             "(default=DURUSSTARTUP from the environment, if set)")
    _add_client_options(parser)
    options = parser.parse_args(argv)
    address = options.address or (options.host, options.port)
    interactive_client(options.file, address, options.cache_size, options.readonly,
                       options.repair, options.startup, options.storage,
                       _client_options(options))


# durus -p

def pack_storage_main(argv: list) -> None:
    parser = argparse.ArgumentParser(prog="durus -p", description="Packs a Durus storage.")
    parser.add_argument("--file", default=None,
                        help="Pack this storage file. If not given, the storage is "
                             "through a Durus server.")
    _add_address_options(parser, "the server is on")
    _add_client_options(parser)
    options = parser.parse_args(argv)
    if options.file is None:
        storage: Storage = _server_storage(options.address or (options.host, options.port),
                                  _client_options(options))
    else:
        storage = get_storage(options.file)
    try:
        # Progress of the pack: a bar on a terminal, log lines otherwise.
        from durus.tools.records import pack_with_progress
        pack_with_progress(storage)
    finally:
        storage.close()


def usage() -> None:
    sys.stdout.write(USAGE)
    for name in COMMANDS:
        summary = (_tool(name).__doc__ or "").strip().splitlines()[0]
        sys.stdout.write("durus %-8s %s\n" % (name, summary))


def _tool(name: str) -> ModuleType:
    return importlib.import_module("durus.tools." + name)


def _run_tool(name: str, argv: list) -> None:
    _tool(name).main(argv)


def main(argv: list | None = None) -> None:
    """Run the durus command with argv (default: sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else argv
    commands: dict[str, Callable[[list], None]] = {
        "-s": run_durus_main, "-c": client_main, "-p": pack_storage_main}
    commands.update((name, functools.partial(_run_tool, name)) for name in COMMANDS)
    if not argv or argv[0] not in commands:
        usage()
        return
    direct_output(sys.stderr)
    try:
        commands[argv[0]](argv[1:])
    except (OSError, DurusError, ValueError) as exc:
        # Setup problems (a locked or damaged file, an address in use, a
        # server that is not there) deserve a message, not a traceback. It
        # goes to the log, and to the terminal if the log is a file.
        message = "durus %s: %s" % (argv[0], exc)
        log(ERROR, message)
        if sys.stderr is not sys.__stderr__ and sys.__stderr__ is not None:
            sys.__stderr__.write(message + "\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)  # as shells report an interrupted command


if __name__ == "__main__":
    main()
