"""ServerLink: a client's connection to a storage server, as ClientStorage uses it.

It sends requests and reads their replies exactly. Any failure (a timeout, a
reset, a request interrupted before its reply was read) leaves the protocol
out of step, so it breaks the link for good: every later call raises
ConnectionError naming the server.
"""

import select
import socket
import ssl
from typing import Any, NoReturn

from durus.record_format import split_oids
from durus.socket_address import SocketAddress
from durus.tls import start_tls
from durus.utils import str_to_int4

# Bytes asked of the socket at once: a reply and the next are read together.
_RECEIVE_SIZE = 1 << 16


class _RecvOnlySocket:
    """A socket-like object that has recv() but no recv_into(), read as a
    ServerLink reads sockets; other attributes are the object's own."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def recv_into(self, buffer: bytearray) -> int:
        data = self.sock.recv(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        close = getattr(self.sock, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class ServerLink:
    """The link to the server at address through sock (a socket, or an
    object with recv() and sendall(), as Durus's tests use).

    broken: str | None, why the link failed, once it has.
    requests: int, requests sent (each a round trip, but for 'Q' and goodbye).
    """

    def __init__(self, sock: Any, address: SocketAddress) -> None:
        self.sock = sock
        self.address = address
        self.stream = sock if hasattr(sock, "recv_into") else _RecvOnlySocket(sock)
        self.broken: str | None = None
        self.requests = 0
        self._input = bytearray()
        # Received into, so that a small reply costs no large allocation.
        self._chunk = bytearray(_RECEIVE_SIZE)
        self._chunk_view = memoryview(self._chunk)
        # Whether a request was sent whose whole reply has not been read:
        # anything that stops a call there (Ctrl-C) leaves the stream out of
        # step, and the next request breaks the link instead.
        self._awaiting_reply = False

    @classmethod
    def connect(cls, address: SocketAddress, timeout: float | None,
                ssl_context: ssl.SSLContext | None, server_hostname: str | None) -> "ServerLink":
        """Connect to address, with TLS if there is an ssl_context; raise
        ConnectionError naming the server if that fails."""
        try:
            sock = address.connect(timeout)
        except OSError as exc:
            raise ConnectionError("cannot connect to the Durus server at %s: %s"
                                  % (address, exc.strerror or exc)) from exc
        if ssl_context is not None:
            try:
                sock = start_tls(sock, ssl_context, server_hostname)
            except ConnectionError as exc:
                raise ConnectionError("cannot connect to the Durus server at %s: %s"
                                      % (address, exc)) from exc
        return cls(sock, address)

    def fail(self, reason: str, cause: BaseException | None = None,
             error: type = ConnectionError) -> NoReturn:
        """Break the link, and raise error saying why."""
        self.broken = "the connection to the Durus server at %s failed: %s" % (
            self.address, reason)
        self.stream.close()
        raise error(self.broken) from cause

    def request(self, data: bytes) -> None:
        """Send a request; replied() must follow once its reply is read."""
        if self._awaiting_reply and not self.broken:
            self.fail("an earlier request was interrupted before its reply was read")
        self._awaiting_reply = True
        self.requests += 1
        self.send(data)

    def replied(self) -> None:
        self._awaiting_reply = False

    def send(self, data: bytes | memoryview) -> None:
        if self.broken:
            raise ConnectionError(self.broken)
        try:
            self.stream.sendall(data)
        except OSError as exc:
            self.fail(str(exc) or type(exc).__name__, exc)

    def receive(self, n: int) -> bytes:
        """Return the next n bytes from the server."""
        if self.broken:
            raise ConnectionError(self.broken)
        buffer = self._input
        while len(buffer) < n:
            try:
                received = self.stream.recv_into(self._chunk)
            except socket.timeout as exc:
                self.fail("no reply within %s seconds" % self.stream.gettimeout(), exc)
            except OSError as exc:
                self.fail(str(exc), exc)
            if not received:
                self.fail("the server closed the connection")
            buffer += self._chunk_view[:received]
        data = bytes(buffer[:n])
        del buffer[:n]
        return data

    def receive_int4(self) -> int:
        return str_to_int4(self.receive(4))

    def receive_oids(self) -> list[bytes]:
        """Return the oids of an int4 n + n oids message."""
        return split_oids(self.receive(8 * self.receive_int4()))

    def reply_waiting(self) -> bool:
        """Tell whether the server has sent something not read yet."""
        pending = getattr(self.stream, "pending", None)  # TLS: bytes already decrypted
        return bool(pending and pending()) or bool(select.select([self.stream], [], [], 0)[0])

    def close(self, goodbye: bytes | None = None) -> None:
        """Send goodbye (if the link works), then close the socket; safe to repeat."""
        if goodbye is not None and not self.broken:
            try:
                self.stream.sendall(goodbye)
            except OSError:
                pass
        self.stream.close()
