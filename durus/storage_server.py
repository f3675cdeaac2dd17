"""StorageServer: shares one Storage with many ClientStorage clients over
sockets, speaking the Durus protocol version 1.

The server is a single-threaded event loop. Each client has its own input
and output buffers and a protocol session (a generator) that asks for the
bytes it needs next, so a client that is slow, silent or sends garbage holds
up nobody: it is dropped, with the reason logged, while the others are
served. Nothing a client sends reaches the storage before its whole commit
has arrived and been checked.

Commits are two-phase: a client sends 'C', gets the oids others committed
since it last synced, checks them against what it read, and only then sends
its records. So that the invalidations it checked are still the whole truth
when its records are applied, one client at a time holds the "commit turn"
between the two phases and other committers wait. A client that goes quiet
while holding the turn loses it after commit_grace seconds, and one that
keeps it longer than timeout seconds (sending ever so slowly) loses it too;
if anyone commits meanwhile, its own commit is then refused as a conflict ('I').

A pack, asked for with 'P' or due after gcbytes committed bytes, runs a step
at a time whenever no client is waiting, so serving goes on while it runs.

Connections may use TLS (durus.tls), driven a step at a time by the same
loop, and the server may require clients to authenticate (durus.auth) before
anything else; read-only users may load and sync but not change anything.
Limits bound what one client can cost: the size of a commit and of any other
request, the number of connections, and the time to finish the handshake.
"""

import collections
import enum
import selectors
import socket
import ssl
import time
from datetime import datetime
from logging import CRITICAL, DEBUG, ERROR, INFO, WARNING

from durus.auth import AuthenticationFailed, server_handshake
from durus.error import ConflictError, DurusError, ReadConflictError
from durus.exposure import exposure_warning, is_loopback
from durus.group_commit import GroupCommit
from durus.logger import is_logging, log
from durus.serialize import extract_class_name, split_oids
from durus.socket_address import (  # re-exported: Durus users import them from here
    DEFAULT_HOST, DEFAULT_PORT, HostPortAddress, InheritedSocket, SocketAddress,
    UnixAbstractAddress, UnixDomainSocketAddress)
from durus.systemd_socket import get_systemd_socket
from durus.tls import (WOULD_BLOCK, accept_tls, continue_handshake, describe_error,
                       describe_session, is_disconnect, read_pending, server_context)
from durus.utils import int4_to_str, join_bytes, str_to_int4, str_to_int8

__all__ = [
    "StorageServer", "wait_for_server", "ClientError", "SocketAddress", "HostPortAddress",
    "UnixAbstractAddress", "UnixDomainSocketAddress", "InheritedSocket",
    "STATUS_OKAY", "STATUS_KEYERROR", "STATUS_INVALID", "STATUS_REFUSED", "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_GCBYTES", "DEFAULT_MAX_COMMIT_SIZE", "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_CONNECTIONS", "DEFAULT_HANDSHAKE_TIMEOUT", "TIMEOUT", "PROTOCOL"]

STATUS_OKAY = b"O"
STATUS_KEYERROR = b"K"
STATUS_INVALID = b"I"
# Beyond Durus: a commit refused outright (over max_commit_size), followed
# by int4 n and n bytes of UTF-8 saying why; sent as soon as the commit's
# size is read, and the client is disconnected once it has gone.
STATUS_REFUSED = b"R"

PROTOCOL = int4_to_str(1)

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
# Commands a read-only user may not send: they change the storage, or stop it.
_CHANGING_COMMANDS = {b"N": "new oid", b"M": "new oids", b"C": "commit", b"P": "pack",
                      b"Q": "quit"}
# Seconds a client holding the commit turn may stay silent before another
# committer may go ahead.
DEFAULT_COMMIT_GRACE = 1.0

_READ_SIZE = 64 << 10
_LARGE_READ_SIZE = 1 << 20
# Pipelined requests buffered per client beyond the one being parsed.
_INPUT_SLACK = 64 << 10
# A bulk load stops producing replies while this much is unsent.
_OUTPUT_LIMIT = 1 << 20
_SWEEP_INTERVAL = 0.25
# A pack takes a step whenever the server is idle, and at least this often
# (seconds) when it is not.
_PACK_STARVATION = 0.1


class ClientError(Exception):
    """A client broke the protocol; it is disconnected."""


class _Wait(enum.Enum):
    """What a session waits for, besides a number of input bytes."""
    COMMAND = "the next command byte (the client is idle)"
    COMMIT_TURN = "the commit turn"
    DURABLE = "its commit to reach the disk"
    OUTPUT_DRAINED = "its replies to be read"


_BLOCKED = object()
# What a session may wait for that is up to the server, not the client.
_SERVER_WAITS = (_Wait.COMMIT_TURN, _Wait.DURABLE)


class _Client:
    """The server's state for one connection.

    invalid: {oid}, committed by others since this client last got them.
    unused_oids: {oid}, handed to this client by 'N'/'M' and not yet committed.
    want: int | _Wait, what the session needs before it can go on.
    progress: float, monotonic time of the last I/O or turn change.
    refusal: str | None, why its last request was refused; it is dropped
        for that reason once the request's bytes are through.
    """

    def __init__(self, sock: socket.socket, name: str):
        self.sock = sock
        self.name = name
        self.invalid = set()
        self.unused_oids = set()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.session = None
        self.want = _Wait.COMMAND
        self.events = 0
        self.progress = time.monotonic()
        self.closed = False
        self.read_only = False
        self.tls = False
        self.tls_handshaking = False
        self.commit_number = 0  # with group commit: the number of its last commit
        self.refusal = None
        # Monotonic time by which TLS and authentication must be done; None once done.
        self.handshake_deadline = None

    def is_mid_request(self) -> bool:
        return self.want is not _Wait.COMMAND or bool(self.inbuf)


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
    """

    protocol = PROTOCOL

    def __init__(self, storage, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 address=None, gcbytes: int = DEFAULT_GCBYTES, *,
                 max_commit_size: int = DEFAULT_MAX_COMMIT_SIZE,
                 timeout: float = TIMEOUT, commit_grace: float = DEFAULT_COMMIT_GRACE,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 idle_timeout: float | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 client_cafile: str | None = None, ssl_context=None,
                 users: dict | None = None):
        if isinstance(gcbytes, bool) or not isinstance(gcbytes, (int, float)) or gcbytes < 0:
            raise ValueError("gcbytes must be a number >= 0, not %r" % (gcbytes,))
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
        self.clients = []
        self.packer = None
        self.bytes_since_pack = 0
        self._handlers = {
            b"V": self._handle_version, b"N": self._handle_new_oid,
            b"M": self._handle_new_oids, b"L": self._handle_load,
            b"B": self._handle_bulk_load, b"C": self._handle_commit,
            b"S": self._handle_sync, b"P": self._handle_pack, b"Q": self._handle_quit}
        self._selector = None
        self._wakeup = None
        self._stopping = False
        self._committer = None
        self._turn_granted = 0.0  # monotonic time the committer got the turn
        self._parked = collections.deque()
        self._client_count = 0
        self._last_pack_step = 0.0
        self._accept_paused_until = None
        self._last_refusal_logged = 0.0
        self._group_commit = None
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
        self._warn_if_exposed(listener)
        self._selector = selectors.DefaultSelector()
        self._wakeup = socket.socketpair()
        for sock in self._wakeup:
            sock.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wakeup[0], selectors.EVENT_READ, "wakeup")
        if getattr(self.storage, "fsync", False) and hasattr(self.storage, "make_durable"):
            self.storage.fsync = False  # commits become durable in groups instead
            self._group_commit = GroupCommit(self.storage, self._wakeup[1])
        log(INFO, "Ready on %s%s", self.address, self._describe_security())
        next_sweep = time.monotonic() + _SWEEP_INTERVAL
        try:
            while not self._stopping:
                events = self._selector.select(self._select_timeout())
                for key, mask in events:
                    self._dispatch(key.data, mask, listener)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now, listener)
                    next_sweep = now + _SWEEP_INTERVAL
                self._answer_durable_commits()
                self._grant_commit_turn()
                self._start_automatic_pack()
                if self.packer is not None and (
                        not events or now - self._last_pack_step > _PACK_STARVATION):
                    self._run_packer()
        finally:
            self._shut_down(listener)

    def stop(self) -> None:
        """Make serve() return soon; safe to call from a signal handler."""
        self._stopping = True
        if self._wakeup is not None:
            try:
                self._wakeup[1].send(b"\0")
            except OSError:
                pass  # The loop is awake already: the pipe is full.

    def _select_timeout(self) -> float | None:
        if self.packer is not None:
            return 0
        if self.clients or self._accept_paused_until is not None:
            return _SWEEP_INTERVAL
        return None

    def _dispatch(self, data, mask: int, listener: socket.socket) -> None:
        if data == "listener":
            self._accept(listener)
        elif data == "wakeup":
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

    def _shut_down(self, listener: socket.socket) -> None:
        if self._group_commit is not None:
            self._group_commit.stop()  # flushes what is written
            if self._group_commit.error is None:
                self._answer_durable_commits()
                for client in list(self.clients):
                    self._flush(client)  # the answers, as far as the sockets take them
        for client in list(self.clients):
            self._drop(client, "the server is stopping", DEBUG)
        if self.packer is not None:
            self.packer.close()
            self.packer = None
            log(INFO, "Pack abandoned: the server is stopping")
        self._selector.close()
        for sock in self._wakeup:
            sock.close()
        self._wakeup = None
        self.address.close(listener)
        self.storage.close()
        log(INFO, "Stopped at %s", datetime.now())

    # Connections.

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                # Out of file descriptors, most likely: stop accepting for a
                # while rather than spin on a listener that stays readable.
                log(WARNING, "Cannot accept connections for now: %s", exc)
                self._selector.unregister(listener)
                self._accept_paused_until = time.monotonic() + 1.0
                return
            sock.setblocking(False)
            self.address.set_connection_options(sock)
            self._client_count += 1
            name = "#%d" % self._client_count
            if isinstance(peer, tuple):
                name += " (%s)" % HostPortAddress(*peer[:2])
            if len(self.clients) >= self.max_connections:
                self._refuse_connection(sock, name)
                continue
            client = self._new_client(sock, name)
            if client is None:
                continue
            client.session = self._session(client)
            client.want = next(client.session)
            self.clients.append(client)
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
        client = _Client(sock, name)
        client.tls = client.tls_handshaking = self.ssl_context is not None
        if client.tls_handshaking or self.users is not None:
            client.handshake_deadline = time.monotonic() + self.handshake_timeout
        return client

    def _refuse_connection(self, sock: socket.socket, name: str) -> None:
        """Close a connection beyond max_connections, logging it (at most
        every few seconds at WARNING, so that a flood cannot fill the log)."""
        sock.close()
        now = time.monotonic()
        level = WARNING if now - self._last_refusal_logged > 5 else DEBUG
        if level == WARNING:
            self._last_refusal_logged = now
        log(level, "Client %s refused: %d clients connected, the limit (max_connections)",
            name, len(self.clients))

    def _continue_tls_handshake(self, client: _Client) -> None:
        try:
            events = continue_handshake(client.sock)
        except OSError as exc:
            self._drop(client, "TLS handshake failed: %s" % describe_error(exc, "the client"),
                       DEBUG if is_disconnect(exc) else WARNING)
            return
        if events:
            self._set_events(client, events)
            return
        client.tls_handshaking = False
        client.progress = time.monotonic()
        if self.users is None:
            client.handshake_deadline = None
        log(DEBUG, "Client %s: TLS %s", client.name, describe_session(client.sock))
        # Requests may have come with the end of the handshake.
        self._on_readable(client)
        self._update_events(client)

    def _on_readable(self, client: _Client) -> None:
        size = _READ_SIZE
        if isinstance(client.want, int) and client.want > _READ_SIZE:
            size = _LARGE_READ_SIZE
        try:
            data = client.sock.recv(size)
            if client.tls:
                data += read_pending(client.sock)
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self._drop(client, "receive failed: %s" % exc, WARNING)
            return
        if not data:
            if client.refusal is not None:
                self._drop(client, client.refusal, WARNING)
            elif client.is_mid_request() and client.want is not _Wait.COMMIT_TURN:
                self._drop(client, "disconnected in the middle of a request "
                           "(waiting for %s)" % _describe(client), WARNING)
            else:
                self._drop(client, "disconnected", DEBUG)
            return
        client.inbuf += data
        client.progress = time.monotonic()
        self._advance(client)

    def _on_writable(self, client: _Client) -> None:
        self._flush(client)
        self._advance(client)  # it may have been held back by unsent replies

    def _flush(self, client: _Client) -> None:
        """Send what the socket takes now of client's pending output."""
        if not client.outbuf or client.closed:
            return
        try:
            sent = client.sock.send(client.outbuf)
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self._drop(client, "send failed: %s" % exc, WARNING)
            return
        del client.outbuf[:sent]
        client.progress = time.monotonic()

    def _send(self, client: _Client, data: bytes) -> None:
        """Queue data for client; _advance() flushes it when the session pauses."""
        if not client.outbuf:
            client.progress = time.monotonic()
        client.outbuf += data

    def _update_events(self, client: _Client) -> None:
        if client.closed:
            return
        events = 0
        wanted = client.want if isinstance(client.want, int) else 1
        if len(client.inbuf) < max(wanted, _INPUT_SLACK) and len(client.outbuf) <= _OUTPUT_LIMIT:
            events |= selectors.EVENT_READ
        if client.outbuf:
            events |= selectors.EVENT_WRITE
        self._set_events(client, events)

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
        client.closed = True
        log(level, "Client %s dropped: %s", client.name, reason)
        if client.outbuf:
            try:
                client.sock.send(client.outbuf)
            except OSError:
                pass  # Best effort: e.g. the reply to a refused 'V'.
        self._set_events(client, 0)
        client.sock.close()
        self.clients.remove(client)
        if client in self._parked:
            self._parked.remove(client)
        # Runs the session's cleanup, which gives back the commit turn.
        client.session.close()
        # Or the storage would hold on to them for as long as the server runs.
        self.storage.release_oids(client.unused_oids)

    def _sweep(self, now: float, listener: socket.socket) -> None:
        """Drop stalled clients; take the commit turn from a silent holder."""
        for client in list(self.clients):
            waiting_on_client = client.outbuf or (
                client.is_mid_request() and client.want not in _SERVER_WAITS)
            if waiting_on_client and now - client.progress > self.timeout:
                self._drop(client, "no progress for %.0f s while waiting for %s"
                           % (now - client.progress, "it to read its replies" if client.outbuf
                              else _describe(client)), WARNING)
            elif not client.closed:
                self._drop_if_late(client, now)
        committer = self._committer
        if committer is not None and self._parked:
            silent, held = now - committer.progress, now - self._turn_granted
            if silent > self.commit_grace:
                log(INFO, "Client %s lost the commit turn: silent for %.1f s",
                    committer.name, silent)
                self._committer = None
            elif held > self.timeout:
                log(INFO, "Client %s lost the commit turn: held it for %.1f s",
                    committer.name, held)
                self._committer = None
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(listener, selectors.EVENT_READ, "listener")

    def _drop_if_late(self, client: _Client, now: float) -> None:
        """Drop client if its handshake is overdue, or it idled too long."""
        if client.handshake_deadline is not None and now > client.handshake_deadline:
            self._drop(client, "%s not finished within %s s (handshake_timeout)" % (
                "TLS handshake" if client.tls_handshaking else "authentication",
                self.handshake_timeout), WARNING)
        elif (self.idle_timeout is not None and not client.is_mid_request()
              and not client.outbuf and now - client.progress > self.idle_timeout):
            self._drop(client, "idle for more than %s s (idle_timeout)" % self.idle_timeout,
                       INFO)

    # Sessions: one generator per client. It yields what it needs next (an
    # int for that many input bytes, or a _Wait) and is sent the bytes, or
    # None, once that is there.

    def _advance(self, client: _Client) -> None:
        """Run client's session as far as its input and its turn allow, then
        send what it produced."""
        try:
            while not client.closed:
                value = self._satisfy(client)
                if value is _BLOCKED:
                    break
                client.want = client.session.send(value)
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
        if want is _Wait.COMMIT_TURN:
            # First come, first served.
            if client not in self._parked:
                self._parked.append(client)
            if self._committer is not None or self._parked[0] is not client:
                return _BLOCKED
            self._parked.popleft()
            self._committer = client
            client.progress = self._turn_granted = time.monotonic()
            return None
        if want is _Wait.DURABLE:
            return None if self._group_commit.is_durable(client.commit_number) else _BLOCKED
        if want is _Wait.OUTPUT_DRAINED:
            return None if self._output_within_limit(client) else _BLOCKED
        if want is _Wait.COMMAND and not self._output_within_limit(client):
            # A client that sends requests but does not read the replies
            # gets no more served; it is dropped when it times out.
            return _BLOCKED
        size = 1 if want is _Wait.COMMAND else want
        if len(client.inbuf) < size:
            return _BLOCKED
        with memoryview(client.inbuf) as view:
            data = bytes(view[:size])  # one copy, even of a large commit
        del client.inbuf[:size]
        return data

    def _output_within_limit(self, client: _Client) -> bool:
        """Flush client's output if over _OUTPUT_LIMIT; tell whether it is within it now."""
        if len(client.outbuf) > _OUTPUT_LIMIT:
            self._flush(client)
        return len(client.outbuf) <= _OUTPUT_LIMIT

    def _answer_durable_commits(self) -> None:
        """Go on with the sessions whose commits a flush has made durable."""
        group_commit = self._group_commit
        if group_commit is None:
            return
        if group_commit.error is not None:
            # The commits written since the last good flush may be lost: tell
            # none of their clients otherwise, and stop, so that a restart
            # checks the file.
            log(CRITICAL, "Stopping: the storage could not be flushed to disk: %s",
                group_commit.error)
            for client in list(self.clients):
                if client.want is _Wait.DURABLE:
                    self._drop(client, "its commit could not be flushed to disk", ERROR)
            self._stopping = True
        elif group_commit.durable != self._answered_durable:
            self._answered_durable = group_commit.durable
            for client in list(self.clients):
                if client.want is _Wait.DURABLE:
                    self._advance(client)

    def _grant_commit_turn(self) -> None:
        """Let waiting committers go ahead, in order, while the turn is free."""
        while self._committer is None and self._parked:
            self._advance(self._parked[0])

    def _session(self, client: _Client):
        if self.users is not None:
            yield from self._authenticate(client)
        while True:
            code = yield _Wait.COMMAND
            if code == b".":
                return
            handler = self._handlers.get(code)
            if handler is None:
                raise ClientError("unknown command byte %r%s" % (
                    code, " (a TLS handshake? this server does not use TLS)"
                    if code == b"\x16" else ""))
            if client.read_only and code in _CHANGING_COMMANDS:
                raise ClientError("read-only user may not send %r (%s)"
                                  % (code, _CHANGING_COMMANDS[code]))
            # Handlers that read more of the request are generators.
            steps = handler(client)
            if steps is not None:
                yield from steps

    def _authenticate(self, client: _Client):
        """Run the authentication handshake (durus.auth) before any request."""
        command = yield _Wait.COMMAND  # a client may connect and leave, like wait_for_server()
        try:
            user = yield from server_handshake(self.users, lambda data: self._send(client, data),
                                               command)
        except AuthenticationFailed as exc:
            raise ClientError(str(exc)) from None
        client.read_only = user.read_only
        client.handshake_deadline = None
        client.name += " user %r" % user.name
        log(DEBUG, "Client %s authenticated%s", client.name,
            " (read-only)" if user.read_only else "")

    # Command handlers.

    def _handle_version(self, client: _Client):
        version = yield 4
        self._send(client, self.protocol)
        if version != self.protocol:
            raise ClientError("protocol %d is not supported" % str_to_int4(version))

    def _new_oids(self, client: _Client, count: int) -> list:
        """Return count new oids, reserved for client."""
        oids = []
        while len(oids) < count:
            oid = self.storage.new_oid()
            # An oid freed by a pack may still be in someone's invalid set:
            # handing it out would confuse that client's next load.
            if any(oid in other.invalid for other in self.clients):
                self.storage.release_oids([oid])
            else:
                oids.append(oid)
        client.unused_oids.update(oids)
        return oids

    def _handle_new_oid(self, client: _Client) -> None:
        self._send(client, self._new_oids(client, 1)[0])

    def _handle_new_oids(self, client: _Client):
        count = (yield 1)[0]
        self._send(client, join_bytes(self._new_oids(client, count)))

    def _load_response(self, client: _Client, oid: bytes) -> bytes:
        if oid in client.invalid:
            return STATUS_INVALID
        try:
            record = self.storage.load(oid)
        except ReadConflictError:
            return STATUS_INVALID
        except KeyError:
            return STATUS_KEYERROR
        return STATUS_OKAY + int4_to_str(len(record)) + record

    def _handle_load(self, client: _Client):
        oid = yield 8
        self._send(client, self._load_response(client, oid))

    def _handle_bulk_load(self, client: _Client):
        count = str_to_int4((yield 4))
        limit = min(self.max_frame_size, self.max_commit_size)
        if 8 * count > limit:
            raise ClientError("bulk load request of %d bytes is over the limit of %d bytes"
                              % (8 * count, limit))
        oids = split_oids((yield 8 * count)) if count else []
        for oid in oids:
            self._send(client, self._load_response(client, oid))
            if len(client.outbuf) > _OUTPUT_LIMIT:
                yield _Wait.OUTPUT_DRAINED

    def _sync_storage(self) -> None:
        """Pass invalidations the storage itself reports (after a pack) to everyone."""
        self._invalidate_all(self.storage.sync())

    def _invalidate_all(self, oids) -> None:
        for client in self.clients:
            client.invalid.update(oids)

    def _send_invalidations(self, client: _Client) -> None:
        self._send(client, int4_to_str(len(client.invalid)) + join_bytes(client.invalid))
        client.invalid.clear()

    def _handle_sync(self, client: _Client) -> None:
        self._sync_storage()
        log(8, "Sync %s: %d invalid", client.name, len(client.invalid))
        self._send_invalidations(client)

    def _handle_commit(self, client: _Client):
        yield _Wait.COMMIT_TURN
        try:
            self._sync_storage()
            self._send_invalidations(client)
            size = str_to_int4((yield 4))
            if size == 0:
                return  # The client found a conflict in the invalidations.
            if size > self.max_commit_size:
                yield from self._refuse_commit(client, size)
            records = self._parse_commit(client, (yield size))
            if client.invalid:
                # Others committed after this client got its invalidations (it
                # lost the turn): it could not check those against its reads.
                log(INFO, "Client %s: conflict, others committed during its commit",
                    client.name)
                self._send(client, STATUS_INVALID)
                return
            committed = self._apply_commit(client, records, size)
        finally:
            if self._committer is client:
                self._committer = None
        if committed:
            if self._group_commit is not None:
                # Answer once a flush covers it; others commit meanwhile.
                client.commit_number = self._group_commit.note_written()
                yield _Wait.DURABLE
            self._send(client, STATUS_OKAY)

    def _refuse_commit(self, client: _Client, size: int):
        """Tell client at once why its commit of size bytes is refused, pass
        over the payload as it arrives (never holding it), then drop client:
        a Durus 4.3 client cannot read the reason, so the session cannot go
        on. Ours stops sending when the answer comes, and hangs up."""
        if self._committer is client:
            self._committer = None  # others commit while the payload goes by
        client.refusal = ("commit of %d bytes is over the server's limit of %d bytes "
                          "(max_commit_size)" % (size, self.max_commit_size))
        reason = client.refusal.encode("utf-8")
        self._send(client, STATUS_REFUSED + int4_to_str(len(reason)) + reason)
        while size:
            size -= len((yield min(size, _LARGE_READ_SIZE)))
        raise ClientError(client.refusal)

    def _parse_commit(self, client: _Client, payload: bytes) -> list:
        """Return [(oid, record)] from a commit payload, checking that each
        record is well formed and that no oid belongs to another client."""
        records = []
        position = 0
        while position < len(payload):
            if len(payload) - position < 4:
                raise ClientError("commit payload ends inside a record length")
            end = position + 4 + str_to_int4(payload[position:position + 4])
            if end > len(payload):
                raise ClientError("commit payload ends inside a record")
            oid = payload[position + 4:position + 12]
            record = payload[position + 12:end]
            _check_record(oid, record)
            records.append((oid, record))
            position = end
        oids = {oid for oid, _ in records}
        for other in self.clients:
            if other is not client and not oids.isdisjoint(other.unused_oids):
                raise ClientError("commit uses oids reserved for client %s" % other.name)
        return records

    def _apply_commit(self, client: _Client, records: list, size: int) -> bool:
        """Write the commit; on a conflict, answer it and return False."""
        committed = False
        self.storage.begin()
        try:
            for oid, record in records:
                if is_logging(DEBUG):
                    log(DEBUG, "  oid=%-6s rlen=%-6s %s",
                        str_to_int8(oid), len(record), extract_class_name(record))
                self.storage.store(oid, record)
            self.storage.end(handle_invalidations=self._invalidate_all)
            committed = True
        except ConflictError:
            log(INFO, "Client %s: conflict reported by the storage", client.name)
            self._send(client, STATUS_INVALID)
            return False
        except ValueError as exc:
            raise ClientError("commit refused: %s" % exc) from None
        finally:
            if not committed:
                self.storage.begin()  # forgets the records of the failed commit
        oids = [oid for oid, _ in records]
        client.unused_oids.difference_update(oids)
        for other in self.clients:
            if other is not client:
                other.invalid.update(oids)
        self.bytes_since_pack += size + 8
        log(INFO, "Committed %3s objects %s bytes at %s", len(records), size, datetime.now())
        return True

    def _handle_pack(self, client: _Client) -> None:
        if self.packer is None:
            log(INFO, "Pack started at %s", datetime.now())
            self._start_pack()
        else:
            log(INFO, "Pack already in progress at %s", datetime.now())
        self._send(client, STATUS_OKAY)

    def _handle_quit(self, client: _Client) -> None:
        log(INFO, "Quit requested by client %s", client.name)
        self._stopping = True

    # Security.

    def _requires_client_certificates(self) -> bool:
        return self.ssl_context is not None and self.ssl_context.verify_mode == ssl.CERT_REQUIRED

    def _describe_security(self) -> str:
        """Say how clients are checked, for the 'Ready on' line."""
        parts = []
        if self.ssl_context is not None:
            parts.append("TLS" + (" with client certificates"
                                  if self._requires_client_certificates() else ""))
        if self.users is not None:
            parts.append("%d users" % len(self.users))
        return " (%s)" % ", ".join(parts) if parts else ""

    def _warn_if_exposed(self, listener: socket.socket) -> None:
        if is_loopback(listener):
            return
        warning = exposure_warning(str(self.address), self.ssl_context is not None,
                                   self.users is not None or self._requires_client_certificates())
        if warning:
            log(WARNING, warning)

    # Packing.

    def _start_pack(self) -> None:
        self.packer = self.storage.get_packer()
        if self.packer is None:
            # The storage cannot pack a step at a time: do it all now.
            self.storage.pack()
            self._pack_finished()

    def _start_automatic_pack(self) -> None:
        if self.packer is None and 0 < self.gcbytes <= self.bytes_since_pack:
            log(INFO, "Automatic pack started at %s after %d bytes committed",
                datetime.now(), self.bytes_since_pack)
            self._start_pack()

    def _run_packer(self) -> None:
        """Run one step of the pack."""
        try:
            step = next(self.packer)
            if isinstance(step, str):
                log(15, "Pack: %s", step)
        except StopIteration:
            self._pack_finished()
        except Exception:  # noqa: BLE001 - a failed pack must not stop the server
            log(ERROR, "Pack failed", exc_info=True)
            self.packer = None
            # The next automatic pack waits for another gcbytes, rather than
            # retrying (and likely failing) again at once, over and over.
            self.bytes_since_pack = 0
        self._last_pack_step = time.monotonic()

    def _pack_finished(self) -> None:
        self.packer = None
        self.bytes_since_pack = 0
        log(INFO, "Pack finished at %s", datetime.now())


def _check_record(oid: bytes, record: bytes) -> None:
    """Raise ClientError unless record is oid + int4 n + n bytes + whole oids."""
    if len(record) < 12 or record[:8] != oid:
        raise ClientError("malformed record for oid %r" % oid)
    refs_length = len(record) - 12 - str_to_int4(record[8:12])
    if refs_length < 0 or refs_length % 8:
        raise ClientError("malformed record for oid %s" % str_to_int8(oid))


def _describe(client: _Client) -> str:
    """Say what a session waits for, for log lines."""
    if isinstance(client.want, _Wait):
        return client.want.value
    return "the rest of a request (%d of %d bytes)" % (len(client.inbuf), client.want)


def wait_for_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, maxtries: int = 300,
                    sleeptime: float = 2, address=None) -> None:
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
