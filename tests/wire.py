"""The storage server's wire protocol spoken over a raw socket: the bytes
of requests and records, and reading the answers, for tests that play a
client byte by byte."""

import socket

from durus.serialize import pack_record, split_oids
from durus.storage_server import STATUS_OKAY
from durus.utils import int4_to_str, int8_to_str, str_to_int4

ROOT_OID = int8_to_str(0)
PROTOCOL = int4_to_str(1)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Return the next n bytes from sock; EOFError if it closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def is_closed_by_server(sock: socket.socket, timeout: float = 5) -> bool:
    """Tell whether the server closes sock (within timeout), ignoring data it sends first."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return False
    return True


def record(oid: bytes, data: bytes = b"x", refs: bytes = b"") -> bytes:
    """Return the record of oid with data and refs (packed oids)."""
    return pack_record(oid, data, refs)


def frame(rec: bytes, oid: bytes | None = None) -> bytes:
    """Return a record as a commit payload carries it."""
    return int4_to_str(8 + len(rec)) + (oid or rec[:8]) + rec


def payload(*records: bytes) -> bytes:
    """Return the commit payload (int4 size, then framed records) of records."""
    body = b"".join(frame(r) for r in records)
    return int4_to_str(len(body)) + body


def start_commit(sock: socket.socket) -> list:
    """Send 'C' and return the invalidated oids the server answers with."""
    sock.sendall(b"C")
    count = str_to_int4(recv_exact(sock, 4))
    return split_oids(recv_exact(sock, 8 * count))


def commit(sock: socket.socket, *records: bytes) -> bytes:
    """Commit records on sock; return the server's status byte."""
    start_commit(sock)
    sock.sendall(payload(*records))
    return recv_exact(sock, 1)


def load(sock: socket.socket, oid: bytes) -> bytes:
    """Return the raw load response for oid."""
    sock.sendall(b"L" + oid)
    status = recv_exact(sock, 1)
    if status != STATUS_OKAY:
        return status
    return status + recv_exact(sock, str_to_int4(recv_exact(sock, 4)))


def new_oids(sock: socket.socket, count: int) -> list:
    """Ask for count (< 256) new oids on sock; return them."""
    sock.sendall(b"M" + bytes([count]))
    return split_oids(recv_exact(sock, 8 * count))
