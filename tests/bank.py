"""The bank: the workload of the reliability tests, and the oracle that checks it.

Every write transaction is one transfer: client c's transfer number n moves
an amount between two accounts, sets c's `done` to n + 1 and replaces c's
receipt (a new object with a memo of some bytes, so that old receipts become
garbage for packs). Transfer n of client c is a pure function of (c, n), so
from the `done` counts alone the exact balance of every account follows:
a lost, doubled or half-applied transfer shows up as a wrong balance or a
receipt that does not match.

Workers run in forked processes (cheap to start, and really killed by
SIGKILL) and append the `done` count they reached to an ack file each time
commit() returns: what the database promised them.
"""

import json
import multiprocessing
import os
import random
import time
from functools import partial
from pathlib import Path

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.persistent_list import PersistentList

ACCOUNTS = 24
HOT = 2  # the first HOT accounts take a quarter of the transfers: conflicts
INITIAL = 1_000_000
TOTAL = ACCOUNTS * INITIAL


class Account(Persistent):
    def __init__(self):
        self.balance = INITIAL


class ClientState(Persistent):
    """One client's progress: transfers done, and the receipt of the last."""

    def __init__(self):
        self.done = 0
        self.receipt = None


class Receipt(Persistent):
    def __init__(self, number: int, memo: bytes):
        self.number = number
        self.memo = memo


def transfer(client: int, number: int) -> tuple[int, int, int, int]:
    """Return (from account, to account, amount, memo size) of a transfer."""
    rng = random.Random("%d/%d" % (client, number))
    if rng.random() < 0.25:
        source, target = rng.sample(range(HOT), 2)
    else:
        source, target = rng.sample(range(ACCOUNTS), 2)
    roll = rng.random()
    # Mostly small commits; some span pages, a few are large (a kill can
    # then land inside the write itself).
    if roll < 0.9:
        size = rng.randrange(300)
    elif roll < 0.99:
        size = rng.randrange(1000, 20000)
    else:
        size = rng.randrange(100_000, 300_000)
    return source, target, rng.randrange(1, 1000), size


def memo(client: int, number: int, size: int) -> bytes:
    """Bytes that do not compress, so that a record is as large on disk."""
    return random.Random("memo %d/%d" % (client, number)).randbytes(size)


def create(connection: Connection, clients: int) -> None:
    """Open the bank in an empty database, for up to `clients` clients."""
    root = connection.get_root()
    root["accounts"] = PersistentList(Account() for _ in range(ACCOUNTS))
    root["clients"] = PersistentList(ClientState() for _ in range(clients))
    connection.commit()


def apply_transfer(root, client: int) -> int:
    """Make client's next transfer in root (uncommitted); return its number."""
    state = root["clients"][client]
    number = state.done
    source, target, amount, size = transfer(client, number)
    accounts = root["accounts"]
    accounts[source].balance -= amount
    accounts[target].balance += amount
    state.done = number + 1
    state.receipt = Receipt(number, memo(client, number, size))
    return number


# {client: (count, what its first `count` transfers add to each account)}:
# checks replay only the transfers made since the last one.
_replayed = {}


def _changes(client: int, count: int) -> list:
    done, changes = _replayed.get(client, (0, (0,) * ACCOUNTS))
    changes = list(changes)
    forward = count >= done
    for number in range(done, count) if forward else range(count, done):
        source, target, amount, _ = transfer(client, number)
        amount = amount if forward else -amount
        changes[source] -= amount
        changes[target] += amount
    _replayed[client] = (count, tuple(changes))
    return changes


def expected_balances(done: list) -> list:
    balances = [INITIAL] * ACCOUNTS
    for client, count in enumerate(done):
        for account, change in enumerate(_changes(client, count)):
            balances[account] += change
    return balances


def check_snapshot(root, exact: bool = True) -> list:
    """Raise AssertionError unless root holds a consistent bank; return done counts.

    Consistent: every receipt is the one of its client's last transfer, the
    balances add up to TOTAL and (if exact, which replays every transfer) each
    is what exactly the transfers counted in `done` make it.
    """
    done = []
    for client, state in enumerate(root["clients"]):
        receipt = state.receipt
        if state.done == 0:
            assert receipt is None, "client %d: receipt without a transfer" % client
        else:
            number = state.done - 1
            size = transfer(client, number)[3]
            assert receipt.number == number and receipt.memo == memo(client, number, size), (
                "client %d: receipt %s does not match transfer %d"
                % (client, receipt.number, number))
        done.append(state.done)
    balances = [account.balance for account in root["accounts"]]
    assert sum(balances) == TOTAL, "money created or destroyed: %d" % (sum(balances) - TOTAL)
    if exact:
        assert balances == expected_balances(done), "balances differ from the transfers made"
    return done


def check_file(path, readonly: bool = True, repair: bool = False) -> list:
    """Open the file (read-only by default), check it; return done counts."""
    storage = FileStorage(str(path), readonly=readonly, repair=repair)
    try:
        return check_snapshot(Connection(storage).get_root())
    finally:
        storage.close()


def check_server(address) -> list:
    """Check the bank a server holds, then transfer once more as client 0 (a
    normal client still commits); return the done counts it had before."""
    connection = Connection(ClientStorage(address=address))
    try:
        done = check_snapshot(connection.get_root())
        apply_transfer(connection.get_root(), 0)
        connection.commit()
    finally:
        connection.get_storage().close()
    return done


def create_file(path, clients: int = 1) -> None:
    storage = FileStorage(str(path))
    create(Connection(storage), clients)
    storage.close()


def read_acks(path) -> int:
    """Return the last count in an ack file (0 if none yet)."""
    try:
        lines = Path(path).read_bytes().split()
    except FileNotFoundError:
        return 0
    return int(lines[-1]) if lines else 0


def check_promises(done: list, acked: list, before: list) -> None:
    """Every acknowledged transfer is there; beyond those, at most the one in flight.

    before: the counts the clients started from (if one acknowledged nothing
    since, its count may still be one more than its acks say).
    """
    for client, (count, *promises) in enumerate(zip(done, acked, before)):
        promised = max(promises)
        assert promised <= count <= promised + 1, (
            "client %d: %d transfers promised, %d in the file" % (client, promised, count))


# Workers.

def start(target, *args) -> multiprocessing.Process:
    """Run target(*args) in a forked process."""
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    process.start()
    return process


def open_acks(ack_path) -> int:
    return os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def _acknowledge(ack_fd: int, count: int) -> None:
    os.write(ack_fd, b"%d\n" % count)  # one small write: whole, even if killed


def acknowledge(ack_path, count: int) -> None:
    """Note in an ack file that a client was promised `count` transfers."""
    ack_fd = open_acks(ack_path)
    try:
        _acknowledge(ack_fd, count)
    finally:
        os.close(ack_fd)


def file_writer(path: str, client: int, ack_path: str, pack_every: int = 0) -> None:
    """Transfer forever through a FileStorage (until killed), packing now and then."""
    storage = FileStorage(path)
    connection = Connection(storage)
    root = connection.get_root()
    ack_fd = open_acks(ack_path)
    while True:
        number = apply_transfer(root, client)
        connection.commit()
        _acknowledge(ack_fd, number + 1)
        if pack_every and number % pack_every == pack_every - 1:
            connection.pack()


def bank_client(open_storage, client: int, ack_path: str, seconds: float, summary_path: str,
                read_share: float = 0.0) -> None:
    """Mix transfers and read-only audits on the storage open_storage() opens
    (a ClientStorage, or one shared without a server) for `seconds` (or until
    its server goes away); write a JSON summary of what happened."""
    rng = random.Random(client)
    summary = {"commits": 0, "conflicts": 0, "audits": 0, "audit_conflicts": 0,
               "server_lost": False, "errors": []}
    deadline = time.monotonic() + seconds
    ack_fd = open_acks(ack_path)
    storage = None
    try:
        storage = open_storage()
        connection = Connection(storage)
        while time.monotonic() < deadline:
            if rng.random() < read_share:
                _audit(connection, summary)
            else:
                _transfer_with_retries(connection, client, ack_fd, summary)
    except ConnectionError:
        summary["server_lost"] = True
    except AssertionError as exc:
        summary["errors"].append(str(exc))
    finally:
        if storage is not None:
            storage.close()
        Path(summary_path).write_text(json.dumps(summary))


def _transfer_with_retries(connection: Connection, client: int, ack_fd: int,
                           summary: dict) -> None:
    while True:
        try:
            number = apply_transfer(connection.get_root(), client)
            connection.commit()
        except ConflictError:
            summary["conflicts"] += 1
            connection.abort()
            continue
        _acknowledge(ack_fd, number + 1)
        summary["commits"] += 1
        return


def _audit(connection: Connection, summary: dict) -> None:
    """A read-only transaction must see one consistent state of the bank."""
    while True:
        connection.abort()
        try:
            check_snapshot(connection.get_root(), exact=False)
        except ConflictError:
            summary["audit_conflicts"] += 1
            continue
        summary["audits"] += 1
        return


def summaries(paths) -> list:
    return [json.loads(Path(path).read_text()) for path in paths]


class Clients:
    """Bank clients bank_client() in forked processes, for `seconds`, with
    their ack and summary files in directory. As a context manager, it kills
    those still running at the end.

    server: a storage server (the clients connect to its address), or a
    callable that opens the storage each client uses.
    """

    def __init__(self, server, directory, seconds: float, clients: int,
                 read_share: float = 0.2):
        self.directory = directory
        self.clients = range(clients)
        open_storage = server if callable(server) else partial(ClientStorage,
                                                               address=server.address)
        self.processes = {client: start(bank_client, open_storage, client,
                                        str(self.ack(client)), seconds,
                                        str(self.summary(client)), read_share)
                          for client in self.clients}

    def ack(self, client: int):
        return self.directory / ("ack%d" % client)

    def summary(self, client: int):
        return self.directory / ("summary%d" % client)

    def acked(self) -> list:
        return [read_acks(self.ack(client)) for client in self.clients]

    def __enter__(self) -> "Clients":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def kill(self) -> None:
        for process in self.processes.values():
            stop(process)

    def finish(self, server_lost: bool = False, timeout: float = 30) -> list:
        """Wait for every client to end on its own (none may hang, or find the
        bank inconsistent; all lose the server if server_lost); return summaries."""
        with self:
            for process in self.processes.values():
                process.join(timeout)
                assert process.exitcode == 0, "a bank client hung or failed"
        results = summaries(self.summary(client) for client in self.clients)
        assert all(not result["errors"] and result["server_lost"] == server_lost
                   for result in results), results
        return results


def wait_for(condition, processes=(), timeout: float = 60) -> None:
    """Wait until condition() is true; fail if a process dies first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            assert process.is_alive(), "worker died (exit code %s)" % process.exitcode
        assert time.monotonic() < deadline, "timed out waiting for %s" % condition
        time.sleep(0.002)


def stop(process: multiprocessing.Process) -> None:
    """SIGKILL process (if it still runs) and reap it."""
    process.kill()
    process.join()
