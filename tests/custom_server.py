"""Run a StorageServer with keyword arguments the command line has no
options for (server_processes.Servers.custom starts it):

    python custom_server.py OPTIONS_JSON

OPTIONS_JSON holds the StorageServer's keyword arguments and these: file,
logfile, logginglevel, address; optionally users_file (read as the users),
flush_delay (seconds each make_durable sleeps first: a slow disk),
flush_fails (make_durable raises an I/O error) and trace (a path where its
file-system calls and socket sends are saved, see syscall_trace, when it
stops).
"""

import contextlib
import json
import sys
import time

from durus.auth import read_users
from durus.file_storage import FileStorage
from durus.logger import direct_output, logger
from durus.storage_server import StorageServer

import syscall_trace


def failing_flush() -> None:
    raise OSError(5, "Input/output error")


def main(options: dict) -> None:
    direct_output(open(options.pop("logfile"), "a"))
    logger.setLevel(options.pop("logginglevel"))
    address = options.pop("address")
    if "users_file" in options:
        options["users"] = read_users(options.pop("users_file"))
    storage = FileStorage(options.pop("file"))
    flush_delay = options.pop("flush_delay", 0)
    if flush_delay:
        make_durable = storage.make_durable
        storage.make_durable = lambda: (time.sleep(flush_delay), make_durable())
    if options.pop("flush_fails", False):
        storage.make_durable = failing_flush
    trace_path = options.pop("trace", None)
    tracing = syscall_trace.Trace(sockets=True) if trace_path else contextlib.nullcontext()
    with tracing:
        StorageServer(storage, address=address, **options).serve()
    if trace_path:
        syscall_trace.save_all(tracing.calls, trace_path)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
