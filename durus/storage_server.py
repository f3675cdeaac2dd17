"""StorageServer: shares one Storage with many ClientStorage clients over
sockets, speaking the Durus protocol version 1 (durus.protocol).

The server is a single-threaded event loop over non-blocking sockets. Each
client has its own input and output buffers and a protocol Session
(durus.session) that asks for the bytes it needs next, so a client that is
slow, silent or sends garbage holds up nobody: it is dropped, with the
reason logged, while the others are served. Nothing a client sends reaches
the storage before its whole commit has arrived and been checked.

This module is the socket side: accepting connections, TLS handshakes
(durus.tls) driven a step at a time by the loop, reading and writing,
limits on what one client can cost (the size of a request, the number of
connections, the time to finish the handshake, stalls), and answering
commits once they are durable (durus.group_commit). The commit turn
(durus.commit_turn) and the pack (durus.packing), run a step at a time
whenever no client is waiting, are the loop's to grant and drive.
"""

import selectors
import socket
import ssl
import time
from datetime import datetime
from logging import CRITICAL, DEBUG, ERROR, INFO, WARNING
from typing import Any, Iterator, cast

from durus.commit_turn import CommitTurn
from durus.error import DurusError
from durus.exposure import describe_security, warn_if_exposed
from durus.group_commit import GroupCommit
from durus.logger import log
from durus.metrics import NO_METRICS, NoMetrics
from durus.packing import Packing
from durus.protocol import (  # re-exported: Durus users import them from here
    PROTOCOL, STATUS_INVALID, STATUS_KEYERROR, STATUS_OKAY, STATUS_REFUSED)
from durus.session import ClientError, Session, SharedState, Wait
from durus.snapshots import SnapshotHistory
from durus.storage import Storage
from durus.socket_address import (  # re-exported: Durus users import them from here
    DEFAULT_HOST, DEFAULT_PORT, HostPortAddress, InheritedSocket, SocketAddress,
    UnixAbstractAddress, UnixDomainSocketAddress)
from durus.systemd_socket import get_systemd_socket
from durus.tls import (WOULD_BLOCK, accept_tls, continue_handshake, describe_error,
                       describe_session, is_disconnect, read_pending, server_context)


__all__ = [
    "StorageServer", "wait_for_server", "ClientError", "SocketAddress", "HostPortAddress",
    "UnixAbstractAddress", "UnixDomainSocketAddress", "InheritedSocket",
    "STATUS_OKAY", "STATUS_KEYERROR", "STATUS_INVALID", "STATUS_REFUSED", "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_GCBYTES", "DEFAULT_MAX_COMMIT_SIZE", "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_CONNECTIONS", "DEFAULT_HANDSHAKE_TIMEOUT", "TIMEOUT", "PROTOCOL"]

DEFAULT_GCBYTES = 0
# Seconds a client may leave a request half-sent or its replies unread.
TIMEOUT = 10
# Largest commit payload (and 'B' oid list) a client may send, in bytes: a
# client's input buffer never grows beyond this and one read's worth.
DEFAULT_MAX_COMMIT_SIZE = 256 << 20
# Largest other request (a bulk load's oid list: 1M oids), in bytes.
DEFAULT_MAX_FRAME_SIZE = 8 << 20
# Connections served at once; more are accepted and closed at once. Well
# below the usual limit of 1024 open files.
DEFAULT_MAX_CONNECTIONS = 512
# Seconds from connecting to the end of the TLS handshake and authentication.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
# Seconds a client holding the commit turn may stay silent before another
# committer may go ahead.
DEFAULT_COMMIT_GRACE = 1.0
# Bytes of replaced records kept for clients reading snapshots, and seconds a
# snapshot may keep them; past either, the oldest snapshots expire.
DEFAULT_SNAPSHOT_BYTES = 64 << 20
DEFAULT_SNAPSHOT_AGE = 600.0

_READ_SIZE = 64 << 10
_LARGE_READ_SIZE = 1 << 20
# Pipelined requests buffered per client beyond the one being parsed.
_INPUT_SLACK = 64 << 10
# A session waiting for OUTPUT_DRAINED goes on once no more than this is unsent.
_OUTPUT_LIMIT = 1 << 20
_SWEEP_INTERVAL = 0.25
# A pack takes a step whenever the server is idle, and at least this often
# (seconds) when it is not.
_PACK_STARVATION = 0.1

_BLOCKED = object()
# What a session may wait for that is up to the server, not the client.
_SERVER_WAITS = (Wait.COMMIT_TURN, Wait.DURABLE)


class _Client:
    """The socket side of one connection: its socket, buffers and timers;
    its protocol side is session.

    events: int, the selector events the socket is registered for.
    progress: float, monotonic time of the last I/O or turn change.
    handshake_deadline: monotonic time by which TLS and authentication must
        be done, or None if there is neither.
    """

    def __init__(self, sock: socket.socket, tls: bool) -> None:
        self.sock = sock
        self.session: Session  # the server's, made with this client's queue
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.events = 0
        self.progress = time.monotonic()
        self.closed = False
        self.tls = self.tls_handshaking = tls
        self.handshake_deadline: float | None = None

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def want(self) -> int | Wait:
        return self.session.want

    def is_mid_request(self) -> bool:
        return self.want is not Wait.COMMAND or bool(self.inbuf)

    def is_handshaking(self) -> bool:
        return self.tls_handshaking or not self.session.authenticated

    def describe_want(self) -> str:
        """Say what the session waits for, for log lines."""
        if isinstance(self.want, Wait):
            return self.want.value
        return "the rest of a request (%d of %d bytes)" % (len(self.inbuf), self.want)

    def receive(self) -> bytes:
        """Read what the socket has into inbuf and return it (b"": the
        client hung up). Raises OSError, or one of WOULD_BLOCK."""
        size = _READ_SIZE
        if isinstance(self.want, int) and self.want > _READ_SIZE:
            size = _LARGE_READ_SIZE
        data = self.sock.recv(size)
        if self.tls:
            data += read_pending(self.sock)
        if data:
            self.inbuf += data
            self.progress = time.monotonic()
        return data

    def take_input(self, size: int) -> bytes | None:
        """Return the next size bytes of input, or None if they have not all come."""
        if len(self.inbuf) < size:
            return None
        with memoryview(self.inbuf) as view:
            data = bytes(view[:size])  # one copy, even of a large commit
        del self.inbuf[:size]
        return data

    def queue(self, data: bytes) -> None:
        """Add data to the output; the server flushes it when the session pauses."""
        if not self.outbuf:
            self.progress = time.monotonic()
        self.outbuf += data

    def flush(self) -> None:
        """Send what the socket takes now of the output. Raises OSError."""
        if not self.outbuf or self.closed:
            return
        try:
            sent = self.sock.send(self.outbuf)
        except WOULD_BLOCK:
            return
        del self.outbuf[:sent]
        self.progress = time.monotonic()

    def close(self) -> None:
        """Close the socket, sending what output it takes first."""
        self.closed = True
        if self.outbuf:
            try:
                self.sock.send(self.outbuf)
            except OSError:
                pass  # Best effort: e.g. the reply to a refused 'V'.
        self.sock.close()

    def wanted_events(self) -> int:
        """The selector events to wait for: input while there is room for
        it and the output is not backed up, output while there is some."""
        events = 0
        wanted = self.want if isinstance(self.want, int) else 1
        if len(self.inbuf) < max(wanted, _INPUT_SLACK) and len(self.outbuf) <= _OUTPUT_LIMIT:
            events |= selectors.EVENT_READ
        if self.outbuf:
            events |= selectors.EVENT_WRITE
        return events

    def stall(self, now: float, timeout: float) -> str | None:
        """Say what the server has waited for from the client for more than
        timeout seconds without progress, or None."""
        if now - self.progress <= timeout:
            return None
        if self.outbuf:
            return "it to read its replies"
        if self.is_mid_request() and self.want not in _SERVER_WAITS:
            return self.describe_want()
        return None

    def overdue_handshake(self, now: float) -> str | None:
        """Say which handshake is past its deadline, or None."""
        if (self.handshake_deadline is None or not self.is_handshaking()
                or now <= self.handshake_deadline):
            return None
        return "TLS handshake" if self.tls_handshaking else "authentication"

    def is_idle(self, now: float, idle_timeout: float | None) -> bool:
        """Tell whether the client has been idle between requests for longer than idle_timeout."""
        return (idle_timeout is not None and not self.is_mid_request()
                and not self.outbuf and now - self.progress > idle_timeout)


class _Acceptor:
    """The listening socket: accepts connections and names them; pauses a
    while when accepting fails (out of file descriptors, most likely) rather
    than spin on a listener that stays readable."""

    def __init__(self, listener: socket.socket, address: SocketAddress,
                 selector: selectors.BaseSelector) -> None:
        self.listener = listener
        self.address = address
        self.selector = selector
        self.paused_until: float | None = None
        self._count = 0
        self._last_refusal_logged = 0.0
        selector.register(listener, selectors.EVENT_READ, self)

    def accept(self) -> Iterator[tuple[socket.socket, Any]]:
        """Yield (socket, name) for each connection waiting."""
        while True:
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                log(WARNING, "Cannot accept connections for now: %s", exc)
                self.selector.unregister(self.listener)
                self.paused_until = time.monotonic() + 1.0
                return
            sock.setblocking(False)
            self.address.set_connection_options(sock)
            self._count += 1
            name = "#%d" % self._count
            if isinstance(peer, tuple):
                name += " (%s)" % HostPortAddress(*peer[:2])
            yield sock, name

    def resume_if_due(self, now: float) -> None:
        if self.paused_until is not None and now >= self.paused_until:
            self.paused_until = None
            self.selector.register(self.listener, selectors.EVENT_READ, self)

    def refuse(self, sock: socket.socket, name: str, connected: int) -> None:
        """Close a connection beyond max_connections, logging it (at most
        every few seconds at WARNING, so that a flood cannot fill the log)."""
        sock.close()
        now = time.monotonic()
        level = WARNING if now - self._last_refusal_logged > 5 else DEBUG
        if level == WARNING:
            self._last_refusal_logged = now
        log(level, "Client %s refused: %d clients connected, the limit (max_connections)",
            name, connected)

    def close(self) -> None:
        self.address.close(self.listener)


class StorageServer:
    """Serves storage at address (or (host, port)); see the module docstring.

    gcbytes: pack automatically once this many bytes were committed (0: never).
    max_commit_size: bytes; larger commits get the client disconnected.
    max_frame_size: bytes; the same for any other request (a bulk load).
    max_connections: clients served at once; more are disconnected at once.
    timeout: seconds a client may stall mid-request, leave replies unread, or
        hold the commit turn while others wait.
    handshake_timeout: seconds a client has for TLS and authentication.
    idle_timeout: seconds a client may stay idle between requests (None: no limit).
    commit_grace: seconds a client holding the commit turn may stay silent.
    certfile, keyfile: the server's certificate and key (PEM) for TLS.
    client_cafile: require client certificates signed by a CA in this file.
    ssl_context: an ssl.SSLContext to use instead of those three.
    users: {name: durus.auth.User}; if given, clients must authenticate.
    snapshot_bytes, snapshot_age: bound the replaced records kept for
        clients reading snapshots (durus.snapshots).
    metrics: a durus.metrics.ServerMetrics to report to, or None.
    """

    protocol = PROTOCOL

    def __init__(self, storage: Storage, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 address: "SocketAddress | tuple[str, int] | str | None" = None, gcbytes: int = DEFAULT_GCBYTES, *,
                 max_commit_size: int = DEFAULT_MAX_COMMIT_SIZE,
                 timeout: float = TIMEOUT, commit_grace: float = DEFAULT_COMMIT_GRACE,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 idle_timeout: float | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 client_cafile: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 users: dict | None = None,
                 snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES,
                 snapshot_age: float = DEFAULT_SNAPSHOT_AGE, metrics: NoMetrics | None = None) -> None:
        for name, value in (("gcbytes", gcbytes), ("snapshot_bytes", snapshot_bytes),
                            ("snapshot_age", snapshot_age)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError("%s must be a number >= 0, not %r" % (name, value))
        self.storage = storage
        self.address = SocketAddress.new(address or (host, port))
        self.gcbytes = gcbytes
        self.max_commit_size = max_commit_size
        self.timeout = timeout
        self.commit_grace = commit_grace
        self.max_frame_size = max_frame_size
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        if ssl_context is None and certfile is not None:
            ssl_context = server_context(certfile, keyfile, client_cafile)
        self.ssl_context = ssl_context
        self.users = users
        self.snapshot_bytes = snapshot_bytes
        self.snapshot_age = snapshot_age
        self.metrics = metrics or NO_METRICS
        # {Session: _Client}, in the order they connected.
        self.clients: dict[Session, _Client] = {}
        # Set by serve():
        self.shared: SharedState
        self._selector: selectors.BaseSelector
        self._acceptor: _Acceptor
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._stopping = False
        self._last_pack_step = 0.0
        self._answered_durable = 0

    # The event loop.

    def serve(self) -> None:
        """Serve until a client sends 'Q' or stop() is called; then close the
        storage and the listening socket."""
        listener = get_systemd_socket()
        if listener is None:
            listener = self.address.get_listening_socket()
        else:
            self.address = InheritedSocket(listener)
        listener.setblocking(False)
        warn_if_exposed(listener, str(self.address), self.ssl_context, self.users)
        self.shared = SharedState(
            self.storage, CommitTurn(self.commit_grace, self.timeout),
            Packing(self.storage, self.gcbytes), self.max_commit_size, self.max_frame_size,
            SnapshotHistory(self.snapshot_bytes, self.snapshot_age), sessions=self.clients, protocol=self.protocol, users=self.users)
        self.shared.metrics = self.shared.packing.metrics = self.metrics
        self._selector = selectors.DefaultSelector()
        self._wakeup = socket.socketpair()
        for sock in self._wakeup:
            sock.setblocking(False)
        self._acceptor = _Acceptor(listener, self.address, self._selector)
        self._selector.register(self._wakeup[0], selectors.EVENT_READ, "wakeup")
        if getattr(self.storage, "fsync", False) and hasattr(self.storage, "make_durable"):
            self.storage.fsync = False  # type: ignore[attr-defined]  # a FileStorage (checked above): commits become durable in groups instead
            self.shared.group_commit = GroupCommit(self.storage, self._wakeup[1])  # type: ignore[arg-type]  # a FileStorage
        log(INFO, "Ready on %s%s", self.address, describe_security(self.ssl_context, self.users))
        next_sweep = time.monotonic() + _SWEEP_INTERVAL
        try:
            while not (self._stopping or self.shared.stop_requested):
                events = self._selector.select(self._select_timeout())
                for key, mask in events:
                    self._dispatch(key.data, mask)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SWEEP_INTERVAL
                self._answer_durable_commits()
                self._grant_commit_turn()
                packing = self.shared.packing
                if packing.running and (
                        not events or now - self._last_pack_step > _PACK_STARVATION):
                    packing.step()
                    self._last_pack_step = time.monotonic()
        finally:
            self._shut_down()

    def stop(self) -> None:
        """Make serve() return soon; safe to call from a signal handler."""
        self._stopping = True
        if self._wakeup is not None:
            try:
                self._wakeup[1].send(b"\0")
            except OSError:
                pass  # The loop is awake already: the pipe is full.

    def _select_timeout(self) -> float | None:
        if self.shared.packing.running:
            return 0
        if self.clients or self._acceptor.paused_until is not None:
            return _SWEEP_INTERVAL
        return None

    def _dispatch(self, data, mask: int) -> None:
        if data is self._acceptor:
            self._accept()
        elif data == "wakeup":
            assert self._wakeup is not None  # registered while serving
            try:
                self._wakeup[0].recv(4096)
            except BlockingIOError:
                pass
        elif data.tls_handshaking:
            self._continue_tls_handshake(data)
        else:
            if mask & selectors.EVENT_WRITE:
                self._on_writable(data)
            if mask & selectors.EVENT_READ and not data.closed:
                self._on_readable(data)

    def _shut_down(self) -> None:
        group_commit = self.shared.group_commit
        if group_commit is not None:
            group_commit.stop()  # flushes what is written
            if group_commit.error is None:
                self._answer_durable_commits()
                for client in list(self.clients.values()):
                    self._flush(client)  # the answers, as far as the sockets take them
        for client in list(self.clients.values()):
            self._drop(client, "the server is stopping", DEBUG)
        self.shared.packing.abandon()
        self._selector.close()
        assert self._wakeup is not None  # set by serve()
        for sock in self._wakeup:
            sock.close()
        self._wakeup = None
        self._acceptor.close()
        self.storage.close()
        log(INFO, "Stopped at %s", datetime.now())

    # Connections.

    def _accept(self) -> None:
        for sock, name in self._acceptor.accept():
            if len(self.clients) >= self.max_connections:
                self._acceptor.refuse(sock, name, len(self.clients))
                continue
            client = self._new_client(sock, name)
            if client is None:
                continue
            self.clients[client.session] = client
            self.metrics.connected(len(self.clients))
            self._set_events(client, selectors.EVENT_READ)
            log(DEBUG, "Client %s connected", name)

    def _new_client(self, sock: socket.socket, name: str) -> _Client | None:
        """Return the _Client for a new connection, wrapped for TLS if the
        server uses it (None if that fails)."""
        if self.ssl_context is not None:
            try:
                sock = accept_tls(sock, self.ssl_context)
            except OSError as exc:
                sock.close()
                log(WARNING, "Client %s dropped: TLS refused: %s", name, exc)
                return None
        client = _Client(sock, tls=self.ssl_context is not None)
        client.session = Session(self.shared, name, client.queue)
        if client.is_handshaking():
            client.handshake_deadline = time.monotonic() + self.handshake_timeout
        return client

    def _continue_tls_handshake(self, client: _Client) -> None:
        sock = cast(ssl.SSLSocket, client.sock)  # tls_handshaking: accept_tls() wrapped it
        try:
            events = continue_handshake(sock)
        except OSError as exc:
            self._drop(client, "TLS handshake failed: %s" % describe_error(exc, "the client"),
                       DEBUG if is_disconnect(exc) else WARNING)
            return
        if events:
            self._set_events(client, events)
            return
        client.tls_handshaking = False
        client.progress = time.monotonic()
        log(DEBUG, "Client %s: TLS %s", client.name, describe_session(sock))
        # Requests may have come with the end of the handshake.
        self._on_readable(client)
        self._update_events(client)

    def _on_readable(self, client: _Client) -> None:
        try:
            data = client.receive()
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self._drop(client, "receive failed: %s" % exc, WARNING)
            return
        if not data:
            if client.session.refusal is not None:
                self._drop(client, client.session.refusal, WARNING)
            elif client.is_mid_request() and client.want is not Wait.COMMIT_TURN:
                self._drop(client, "disconnected in the middle of a request "
                           "(waiting for %s)" % client.describe_want(), WARNING)
            else:
                self._drop(client, "disconnected", DEBUG)
            return
        self._advance(client)

    def _on_writable(self, client: _Client) -> None:
        self._flush(client)
        self._advance(client)  # it may have been held back by unsent replies

    def _flush(self, client: _Client) -> None:
        """Send what the socket takes now of client's pending output."""
        try:
            client.flush()
        except OSError as exc:
            self._drop(client, "send failed: %s" % exc, WARNING)

    def _update_events(self, client: _Client) -> None:
        if not client.closed:
            self._set_events(client, client.wanted_events())

    def _set_events(self, client: _Client, events: int) -> None:
        if events == client.events:
            return
        if not client.events:
            self._selector.register(client.sock, events, client)
        elif not events:
            self._selector.unregister(client.sock)
        else:
            self._selector.modify(client.sock, events, client)
        client.events = events

    def _drop(self, client: _Client, reason: str, level: int) -> None:
        """Disconnect client (sending what output it can first) and forget it."""
        if client.closed:
            return
        log(level, "Client %s dropped: %s", client.name, reason)
        self._set_events(client, 0)
        client.close()
        del self.clients[client.session]
        self.metrics.connected(len(self.clients))
        client.session.close()

    def _sweep(self, now: float) -> None:
        """Drop stalled clients; take the commit turn from a silent holder."""
        for client in list(self.clients.values()):
            stall = client.stall(now, self.timeout)
            if stall is not None:
                self._drop(client, "no progress for %.0f s while waiting for %s"
                           % (now - client.progress, stall), WARNING)
                continue
            handshake = client.overdue_handshake(now)
            if handshake is not None:
                self._drop(client, "%s not finished within %s s (handshake_timeout)"
                           % (handshake, self.handshake_timeout), WARNING)
            elif client.is_idle(now, self.idle_timeout):
                self._drop(client, "idle for more than %s s (idle_timeout)" % self.idle_timeout,
                           INFO)
        turn = self.shared.turn
        if turn.holder is not None:
            turn.revoke_if_stalled(now, self.clients[turn.holder].progress)
        self._acceptor.resume_if_due(now)

    # Running sessions: each says what it needs next (session.want) and is
    # fed it once that is there.

    def _advance(self, client: _Client) -> None:
        """Run client's session as far as its input and its turn allow, then
        send what it produced."""
        try:
            while not client.closed:
                value = self._satisfy(client)
                if value is _BLOCKED:
                    break
                client.session.feed(value)
        except StopIteration:
            self._drop(client, "closed by the client", DEBUG)
        except ClientError as exc:
            self._drop(client, str(exc), WARNING)
        except DurusError as exc:
            # Refused by the storage, e.g. a read-only one asked for new oids.
            self._drop(client, "request refused by the storage: %r" % exc, WARNING)
        except Exception as exc:  # noqa: BLE001 - one client's failure must not stop the server
            log(ERROR, "Client %s: request failed", client.name, exc_info=True)
            self._drop(client, "request failed: %r" % exc, ERROR)
        self._flush(client)
        self._update_events(client)

    def _satisfy(self, client: _Client):
        """Return what the session waits for, or _BLOCKED if it is not there yet."""
        want = client.want
        if want is Wait.COMMIT_TURN:
            if not self.shared.turn.request(client.session):
                return _BLOCKED
            client.progress = time.monotonic()
            return None
        if want is Wait.DURABLE:
            assert self.shared.group_commit is not None  # sessions wait for DURABLE only with it
            durable = self.shared.group_commit.is_durable(client.session.commit_number)
            return None if durable else _BLOCKED
        if want is Wait.OUTPUT_DRAINED:
            return None if self._output_within_limit(client) else _BLOCKED
        if want is Wait.COMMAND and not self._output_within_limit(client):
            # A client that sends requests but does not read the replies
            # gets no more served; it is dropped when it times out.
            return _BLOCKED
        data = client.take_input(1 if want is Wait.COMMAND else want)
        return _BLOCKED if data is None else data

    def _output_within_limit(self, client: _Client) -> bool:
        """Flush client's output if over _OUTPUT_LIMIT; tell whether it is within it now."""
        if len(client.outbuf) > _OUTPUT_LIMIT:
            self._flush(client)
        return len(client.outbuf) <= _OUTPUT_LIMIT

    def _answer_durable_commits(self) -> None:
        """Go on with the sessions whose commits a flush has made durable."""
        group_commit = self.shared.group_commit
        if group_commit is None:
            return
        if group_commit.error is not None:
            # The commits written since the last good flush may be lost: tell
            # none of their clients otherwise, and stop, so that a restart
            # checks the file.
            log(CRITICAL, "Stopping: the storage could not be flushed to disk: %s",
                group_commit.error)
            for client in list(self.clients.values()):
                if client.want is Wait.DURABLE:
                    self._drop(client, "its commit could not be flushed to disk", ERROR)
            self._stopping = True
        elif group_commit.durable != self._answered_durable:
            self._answered_durable = group_commit.durable
            for client in list(self.clients.values()):
                if client.want is Wait.DURABLE:
                    self._advance(client)

    def _grant_commit_turn(self) -> None:
        """Let waiting committers go ahead, in order, while the turn is free."""
        turn = self.shared.turn
        while (session := turn.next_in_line()) is not None:
            self._advance(self.clients[session])



def wait_for_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, maxtries: int = 300,
                    sleeptime: float = 2, address: "SocketAddress | tuple[str, int] | str | None" = None) -> None:
    """Return once a server accepts connections at address (or (host, port));
    after maxtries attempts sleeptime seconds apart, exit with a message."""
    server_address = SocketAddress.new(address or (host, port))
    for attempt in range(maxtries):
        connected = server_address.get_connected_socket(timeout=max(sleeptime, 1.0))
        if connected is not None:
            connected.close()
            return
        if attempt == 0:
            log(INFO, "Waiting for a Durus server at %s", server_address)
        if attempt + 1 < maxtries:
            time.sleep(sleeptime)
    raise SystemExit("Timeout waiting for address: %s." % server_address)
