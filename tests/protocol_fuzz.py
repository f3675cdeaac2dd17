"""Fuzzing a live storage server: real client sessions recorded byte for
byte, a mutator for them, a framing model of what a byte stream asks the
server to do, and probes of the server process's health.

The model only frames requests (it does not predict replies): the tests use
it to keep fuzz cases from committing to the objects whose survival they
check, and from sending 'Q' (which rightly stops the server).
"""

import os
import random
import socket
import time

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.storage_server import PROTOCOL
from durus.utils import int4_to_str, str_to_int4

from server_processes import connect_raw

# Growth of the server's resident memory that a fuzz or fault run may cause
# (its index grows a little with the records that cases commit); a leak per
# connection or per request would exceed it.
MEMORY_BOUND_KB = 32 << 10

# Bytes of arguments after each command byte; 'B' and 'C' say their own size.
_ARGUMENTS = {b"V": 4, b"N": 0, b"M": 1, b"L": 8, b"S": 0, b"P": 0, b".": 0, b"Q": 0}


def commands(stream: bytes):
    """Yield (command byte, arguments) for each whole request in stream, in
    the server's framing, up to the first it would drop the connection for."""
    position = 0

    def take(n: int) -> bytes | None:
        nonlocal position
        if position + n > len(stream):
            return None
        position += n
        return stream[position - n:position]

    while position < len(stream):
        code = take(1)
        if code in _ARGUMENTS:
            arguments = take(_ARGUMENTS[code])
        elif code == b"B":
            count = take(4)
            arguments = count and take(8 * str_to_int4(count))
        elif code == b"C":
            size = take(4)
            arguments = size and take(str_to_int4(size))
        else:
            return  # an unknown command: the server drops the client
        if arguments is None:
            return  # cut short: the server waits, then drops the client
        yield code, arguments
        if code in (b".", b"Q"):
            return


def committed_oids(stream: bytes) -> set:
    """Every oid that stream's commits could write (an overestimate)."""
    oids = set()
    for code, payload in commands(stream):
        position = 0
        while code == b"C" and position + 12 <= len(payload):
            oids.add(payload[position + 4:position + 12])
            position += 4 + str_to_int4(payload[position:position + 4])
    return oids


def is_safe(stream: bytes, protected: set) -> bool:
    """Tell whether stream neither stops the server nor commits to protected oids."""
    return (all(code != b"Q" for code, _ in commands(stream))
            and committed_oids(stream).isdisjoint(protected))


class _RecordingSocket:
    """A ClientStorage's socket that keeps a copy of everything sent."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sent = bytearray(b"V" + PROTOCOL)  # the handshake, sent before wrapping

    def sendall(self, data) -> None:
        self.sent += data
        self.sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def _recorded_connection(address) -> Connection:
    storage = ClientStorage(address=address)
    storage.s = _RecordingSocket(storage.s)
    return Connection(storage)


def _finish(connection: Connection) -> bytes:
    storage = connection.get_storage()
    sent = bytes(storage.s.sent)
    storage.close()
    return sent + b"."


def record_sessions(address) -> list:
    """Run real client sessions on root['fuzz'] (which must exist) and return
    the bytes each sent: commits of new and changed objects, loads, bulk
    loads, syncs, a conflict given up, a pack request, oid batches."""
    writer = _recorded_connection(address)
    fuzz = writer.get_root()["fuzz"]
    for i in range(4):
        fuzz["item%d" % i] = PersistentDict(n=i, tags=PersistentList(["a", "b"] * i))
        writer.commit()
    fuzz["item0"]["n"] = "changed"
    fuzz["item1"]["tags"].append("c")
    writer.commit()
    fuzz["item2"]["n"] = "forgotten"
    writer.abort()
    reader = _recorded_connection(address)
    for _ in reader.get_crawler(reader.get_root()["fuzz"]._p_oid):
        pass
    reader.get_root()["accounts"][0].balance  # a load of a bank object
    reader.abort()
    loser = _recorded_connection(address)
    loser.get_root()["fuzz"]["item3"]["n"]
    fuzz["item3"]["n"] = "winner"
    writer.commit()
    loser.get_root()["fuzz"]["item3"]["n"] = "loser"
    try:
        loser.commit()
    except ConflictError:  # seen in the invalidations: the client gives up its commit
        loser.abort()
    else:
        raise AssertionError("the loser's commit should have conflicted")
    loser.get_storage().pack()
    loser.get_storage().new_oid()
    return [_finish(connection) for connection in (writer, reader, loser)]


_INTERESTING_INT4 = [0, 1, 7, 8, 12, 255, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000000]


def mutate(rng: random.Random, sessions: list) -> bytes:
    """Return a recorded session changed by a few random byte-level mutations."""
    data = bytearray(rng.choice(sessions))
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5, 8))):
        if not data:
            data += rng.randbytes(4)
        i = rng.randrange(len(data))
        j = min(len(data), i + rng.randrange(1, 64))
        choice = rng.randrange(8)
        if choice == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif choice == 2:
            data[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif choice == 3:
            del data[i:j]
        elif choice == 4:
            data[i:i] = data[i:j]
        elif choice == 5:
            del data[i:]
        elif choice == 6:
            other = rng.choice(sessions)
            data[i:] = other[rng.randrange(len(other)):]
        else:
            data[i:i + 4] = int4_to_str(rng.choice(_INTERESTING_INT4 + [len(data)]))
    return bytes(data)


def send_stream(address, stream: bytes, timeout: float = 10) -> bytes:
    """Send stream on a new connection, say no more, and return what the
    server answered before closing; fail if it does not close in time."""
    with connect_raw(address, timeout=timeout) as sock:
        try:
            sock.sendall(stream)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # it closed first, e.g. at a bad command byte
        replies = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                return bytes(replies)
            if not chunk:
                return bytes(replies)
            replies += chunk
    raise AssertionError("the server kept a finished connection open: %r" % stream[:100])


def rss_kb(pid: int) -> int:
    """Resident memory of a process, in kB."""
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for process %d" % pid)


def open_fds(pid: int) -> list:
    """What the process's descriptors are open on."""
    directory = "/proc/%d/fd" % pid
    fds = []
    for fd in os.listdir(directory):
        try:
            fds.append(os.readlink(os.path.join(directory, fd)))
        except FileNotFoundError:
            pass  # closed meanwhile
    return sorted(fds)


def check_fds_back_to(pid: int, baseline: list, timeout: float = 10) -> None:
    """Wait until the process has no more descriptors than baseline (clients
    just closed may not be dropped yet); fail if that does not happen."""
    deadline = time.monotonic() + timeout
    while len(open_fds(pid)) > len(baseline):
        assert time.monotonic() < deadline, (
            "descriptors leaked: %s, was %s" % (open_fds(pid), baseline))
        time.sleep(0.05)
