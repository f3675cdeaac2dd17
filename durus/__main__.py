"""The durus command: `durus -s` runs or stops a storage server, `durus -c`
opens an interactive client, `durus -p` packs a storage.

`python -m durus` is the same command.
"""

import argparse
import atexit
import code
import importlib
import os
import signal
import sys
import time
from logging import ERROR, INFO
from pprint import pprint

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import DurusError
from durus.logger import direct_output, log, logger
from durus.storage_server import (DEFAULT_GCBYTES, DEFAULT_HOST, DEFAULT_PORT, SocketAddress,
                                  StorageServer, wait_for_server)
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

def import_class(name: str) -> type:
    """Return the class named by a dotted path such as 'durus.file_storage.FileStorage'."""
    module_name, _, class_name = name.rpartition(".")
    if not module_name:
        raise ValueError("%r is not a dotted path to a class" % name)
    return getattr(importlib.import_module(module_name), class_name)


def get_storage_class(file: str) -> type:
    """Return the storage class for file, judged by how it starts."""
    from durus.file_storage import FileStorage
    if not os.path.exists(file):
        return FileStorage
    with open(file, "rb") as f:
        start = f.read(20)
    if not start or start.startswith(b"SHELF-1"):
        return FileStorage
    if start.startswith(b"DFS20"):
        raise ValueError("%s is a Durus FileStorage2 file, which this durus cannot open" % file)
    if start.startswith(b"SQLite format "):
        raise ValueError("%s is a Durus SqliteStorage file, which this durus cannot open" % file)
    raise ValueError("%s is not a Durus storage file" % file)


def get_storage(file: str | None, storage_class: str | None = None, **kwargs):
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

def start_durus(logfile: str | None, logginglevel: int, address, storage,
                gcbytes: int) -> None:
    """Serve storage at address until stopped by 'durus -s --stop', a 'Q'
    request, SIGTERM or Ctrl-C; then close it."""
    direct_output(sys.stderr if logfile is None else open(logfile, "a+"))
    logger.setLevel(logginglevel)
    socket_address = SocketAddress.new(address)
    if hasattr(storage, "get_filename"):
        log(INFO, "Storage file=%s address=%s", storage.get_filename(), socket_address)
    server = StorageServer(storage, address=socket_address, gcbytes=gcbytes)
    # A signal must not cut a commit short: it only asks the loop to stop.
    previous = {signum: signal.signal(signum, lambda *_: server.stop())
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_durus(address) -> bool:
    """Ask the server at address to quit and wait (up to 10 s) until it is
    gone; return False if no server was running there."""
    socket_address = SocketAddress.new(address)
    sock = socket_address.get_connected_socket(timeout=10)
    if sock is None:
        log(INFO, "Durus server %s doesn't seem to be running.", socket_address)
        return False
    with sock:
        sock.sendall(b"Q")
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
                             "value), e.g. 077.")
    parser.add_argument("--logginglevel", type=int, default=DEFAULT_LOGGING_LEVEL,
                        help="Logging level. Lower positive numbers log more. (default=%s)"
                             % DEFAULT_LOGGING_LEVEL)
    parser.add_argument("--logfile", default=None, help="Log file. (default=stderr)")
    parser.add_argument("--repair", action="store_true", help=_REPAIR_HELP)
    parser.add_argument("--readonly", action="store_true",
                        help="Open the file read-only: clients can load but not commit.")
    parser.add_argument("--stop", action="store_true",
                        help="Instead of starting the server, try to stop a running one.")
    options = parser.parse_args(argv)
    if options.address is None:
        address = SocketAddress.new((options.host, options.port))
    else:
        address = SocketAddress.new(options.address, owner=options.owner,
                                    group=options.group, umask=options.umask)
    if options.stop:
        stop_durus(address)
        return
    storage = get_storage(options.file, storage_class=options.storage,
                          repair=options.repair, readonly=options.readonly)
    try:
        start_durus(options.logfile, options.logginglevel, address, storage, options.gcbytes)
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


def interactive_client(file: str | None, address, cache_size: int, readonly: bool,
                       repair: bool, startup: str, storage_class: str | None = None) -> None:
    """Run a Python console with a Connection to file, or to the server at address."""
    if file:
        storage = get_storage(file, storage_class=storage_class,
                              readonly=readonly, repair=repair)
        description = file
    else:
        socket_address = SocketAddress.new(address)
        wait_for_server(address=socket_address)
        storage = ClientStorage(address=socket_address)
        description = socket_address
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
    options = parser.parse_args(argv)
    address = options.address or (options.host, options.port)
    interactive_client(options.file, address, options.cache_size, options.readonly,
                       options.repair, options.startup, options.storage)


# durus -p

def pack_storage_main(argv: list) -> None:
    parser = argparse.ArgumentParser(prog="durus -p", description="Packs a Durus storage.")
    parser.add_argument("--file", default=None,
                        help="Pack this storage file. If not given, the storage is "
                             "through a Durus server.")
    _add_address_options(parser, "the server is on")
    options = parser.parse_args(argv)
    if options.file is None:
        address = SocketAddress.new(options.address or (options.host, options.port))
        wait_for_server(address=address)
        storage = ClientStorage(address=address)
    else:
        storage = get_storage(options.file)
    try:
        Connection(storage).pack()
    finally:
        storage.close()


def usage() -> None:
    sys.stdout.write(USAGE)


def main(argv: list | None = None) -> None:
    """Run the durus command with argv (default: sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"-s": run_durus_main, "-c": client_main, "-p": pack_storage_main}
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
        if sys.stderr is not sys.__stderr__:
            sys.__stderr__.write(message + "\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)  # as shells report an interrupted command


if __name__ == "__main__":
    main()
