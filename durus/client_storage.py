"""ClientStorage: the Storage of a Durus storage server, used over a socket."""

import select
import socket
from typing import Iterable, Iterator, NoReturn

from durus.auth import AUTH_PROTOCOL, DEFAULT_USER, AuthenticationError, client_handshake
from durus.error import (CommitTooLargeError, DurusKeyError, ProtocolError, ReadConflictError,
                         ReadOnlyError, SnapshotExpiredError, WriteConflictError)
from durus.protocol import (BULK_LOAD, COMMIT, GOODBYE, LOAD, NEW_OIDS, PACK, PROTOCOL, QUIT,
                            SNAPSHOT_PROTOCOL, STATUS_EXPIRED, STATUS_INVALID, STATUS_KEYERROR,
                            STATUS_OKAY, STATUS_REFUSED, SYNC, VERSION, commit_payload)
from durus.record_cache import ReadAheadQueue, RecordCache
from durus.record_format import split_oids
from durus.socket_address import DEFAULT_HOST, DEFAULT_PORT, HostPortAddress, SocketAddress
from durus.storage import InvalidationHandler, Storage
from durus.tls import client_context, start_tls
from durus.utils import int4_to_str, join_bytes, str_to_int4

# Seconds to wait for a server's reply before declaring it gone. Generous,
# because a server may be busy with other clients' commits.
DEFAULT_TIMEOUT = 60.0
# Bytes of records kept by a client, to load them again without asking.
DEFAULT_CACHE_BYTES = 32 << 20
# Bytes asked of the socket at once: a reply and the next are read together.
_RECEIVE_SIZE = 1 << 16
# A commit payload is sent in pieces this large, looking for an early
# refusal between them.
_COMMIT_PIECE = 4 << 20
# The protocol frames a commit payload with an int4.
_MAX_PAYLOAD = (1 << 32) - 1
# Protocol 3: records read ahead with a load that looks like part of a walk
# (see durus.record_cache.ReadAheadQueue), and cache bytes per oid queued to
# tell (records are rarely smaller: the queue holds as many as the cache).
READ_AHEAD = 2048
READ_AHEAD_QUEUE_BYTES = 128


class _RecvOnlySocket:
    """A socket-like object that has recv() but no recv_into(), read as
    ClientStorage reads sockets; other attributes are the object's own."""

    def __init__(self, sock):
        self.sock = sock

    def recv_into(self, buffer: bytearray) -> int:
        data = self.sock.recv(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        close = getattr(self.sock, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


class ClientStorage(Storage):
    """The storage served at address (or (host, port)).

    A server that cannot be reached, stops answering for timeout seconds, or
    closes the connection raises ConnectionError naming its address; after
    that the ClientStorage is unusable and must be replaced.

    TLS is used when cafile, certfile or ssl_context is given: the server's
    certificate must be signed by a CA in cafile (PEM; or, with certfile
    alone, a CA the system trusts) and name server_hostname (default: host).
    certfile and keyfile are the client's certificate, for servers that
    require one. With a secret (bytes or str), the client authenticates as
    user (durus.auth); read_only then says whether the server allows it only
    to load and sync, and changes raise ReadOnlyError here.

    oid_pool: [oid], reserved by the server for this client, last used first.
    oid_pool_size: int, how many oids to reserve at a time (at most 255).
    records: {oid: record}, the commit underway.
    held_invalidations: [oid], from a commit without handle_invalidations,
        for the next sync().
    cache: RecordCache of up to cache_bytes (0: none), so that objects the
        connection made ghosts load again without a round trip.
    snapshots: bool, whether the server gives snapshot reads (protocol 3:
        a load returns the record as of this client's last sync or commit,
        never a ReadConflictError); asked for unless snapshots=False, and
        given by our servers, not by Durus 4.3's.
    """

    # Requests sent (each a round trip, but for 'Q' and the goodbye).
    requests = 0

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, address=None,
                 timeout: float | None = DEFAULT_TIMEOUT, *, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, ssl_context=None,
                 server_hostname: str | None = None, user: str | None = None,
                 secret: bytes | str | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 snapshots: bool = True):
        self.address = SocketAddress.new(address or (host, port))
        self.cache = RecordCache(cache_bytes)
        self._read_ahead = ReadAheadQueue(self.cache, READ_AHEAD,
                                          cache_bytes // READ_AHEAD_QUEUE_BYTES)
        # Received into, so that a small reply costs no large allocation.
        self._chunk = bytearray(_RECEIVE_SIZE)
        self._chunk_view = memoryview(self._chunk)
        if ssl_context is None and (cafile is not None or certfile is not None):
            ssl_context = client_context(cafile, certfile, keyfile)
        if server_hostname is None and isinstance(self.address, HostPortAddress):
            server_hostname = self.address.host
        self.read_only = False
        self.oid_pool_size = 32
        self.held_invalidations: list[bytes] = []
        self.begin()
        self.snapshots = snapshots
        self._connect(timeout, ssl_context, server_hostname, user, secret)
        if snapshots and not self.snapshots:
            # The server said no and hung up, as Durus 4.3 does: its rules then.
            self._connect(timeout, ssl_context, server_hostname, user, secret)

    def _connect(self, timeout: float | None, ssl_context, server_hostname: str | None,
                 user: str | None, secret: bytes | str | None) -> None:
        """Connect, with TLS if there is an ssl_context, and start a session."""
        try:
            self.s = self.address.connect(timeout)
        except OSError as exc:
            raise ConnectionError("cannot connect to the Durus server at %s: %s"
                                  % (self.address, exc.strerror or exc)) from exc
        if ssl_context is not None:
            try:
                self.s = start_tls(self.s, ssl_context, server_hostname)
            except ConnectionError as exc:
                raise ConnectionError("cannot connect to the Durus server at %s: %s"
                                      % (self.address, exc)) from exc
        try:
            self._start_session(user, secret)
        except ConnectionError as exc:
            self._stream.close()
            if ssl_context is None:
                raise
            # With TLS 1.3 a server checks the client's certificate after the
            # client has finished its handshake, and its alert may be lost.
            raise ConnectionError("%s; the server ended the connection after the TLS "
                                  "handshake: does it require a client certificate (certfile) "
                                  "from a CA it trusts?" % exc) from exc
        except BaseException:
            self._stream.close()
            raise

    @property
    def s(self):
        """The socket (or socket-like object) connected to the server."""
        return self._socket

    @s.setter
    def s(self, sock) -> None:
        """Talk to the server through sock from now on: a new stream, so
        nothing learnt from the old one is kept. Objects with recv() but no
        recv_into() (test doubles, as in Durus's tests) are accepted too."""
        self._socket = sock
        self._stream = sock if hasattr(sock, "recv_into") else _RecvOnlySocket(sock)
        self._input = bytearray()
        self.broken: str | None = None
        # Whether a request was sent whose whole reply has not been read:
        # anything that stops a call there (Ctrl-C) leaves the stream out of
        # step, and the next request breaks the connection instead.
        self._awaiting_reply = False
        # Records are valid until the server that sent them says otherwise,
        # and oids are reserved while the session that got them lasts: a
        # stream to another session can vouch for neither.
        self.cache.clear()
        self.oid_pool: list[bytes] = []

    def _start_session(self, user: str | None, secret: bytes | str | None) -> None:
        """Agree on the protocol, authenticating if there is a secret; ask
        for snapshot reads if self.snapshots, and note whether they are given
        (if not, the server hangs up)."""
        if secret is not None:
            if isinstance(secret, str):
                secret = secret.encode("utf-8")
            self.read_only = client_handshake(self._send, self._receive, user or DEFAULT_USER,
                                              secret, str(self.address))
            if not self.snapshots:
                return
        wanted = SNAPSHOT_PROTOCOL if self.snapshots else PROTOCOL
        self._send(VERSION + wanted)
        server_protocol = self._receive(4)
        if server_protocol == AUTH_PROTOCOL:
            raise AuthenticationError("the server at %s requires authentication: give a user "
                                      "and secret" % self.address)
        if server_protocol == PROTOCOL and wanted == SNAPSHOT_PROTOCOL:
            self.snapshots = False
            self._stream.close()
            return
        if server_protocol != wanted:
            raise ProtocolError("the server at %s speaks protocol %d, not %d"
                                % (self.address, str_to_int4(server_protocol),
                                   str_to_int4(wanted)))

    def _refuse_change(self, what: str) -> NoReturn:
        raise ReadOnlyError("%s refused: this user is read-only on the server at %s"
                            % (what, self.address))

    def __str__(self):
        return "ClientStorage(%s)" % self.address

    # Socket I/O: any failure leaves the protocol out of step, so it breaks
    # the connection for good.

    def _fail(self, reason: str, cause: BaseException | None = None,
              error: type = ConnectionError) -> NoReturn:
        self.broken = "the connection to the Durus server at %s failed: %s" % (
            self.address, reason)
        self._stream.close()
        raise error(self.broken) from cause

    def _request(self, data: bytes) -> None:
        """Send a request; _replied() must follow once its reply is read."""
        if self._awaiting_reply and not self.broken:
            self._fail("an earlier request was interrupted before its reply was read")
        self._awaiting_reply = True
        self.requests += 1
        self._send(data)

    def _replied(self) -> None:
        self._awaiting_reply = False

    def _send(self, data: bytes | memoryview) -> None:
        if self.broken:
            raise ConnectionError(self.broken)
        try:
            self._stream.sendall(data)
        except OSError as exc:
            self._fail(str(exc) or type(exc).__name__, exc)

    def _receive(self, n: int) -> bytes:
        if self.broken:
            raise ConnectionError(self.broken)
        buffer = self._input
        while len(buffer) < n:
            try:
                received = self._stream.recv_into(self._chunk)
            except socket.timeout as exc:
                self._fail("no reply within %s seconds" % self._stream.gettimeout(), exc)
            except OSError as exc:
                self._fail(str(exc), exc)
            if not received:
                self._fail("the server closed the connection")
            buffer += self._chunk_view[:received]
        data = bytes(buffer[:n])
        del buffer[:n]
        return data

    def _receive_int4(self) -> int:
        return str_to_int4(self._receive(4))

    def _receive_oids(self) -> list:
        return split_oids(self._receive(8 * self._receive_int4()))

    # The Storage interface.

    def new_oid(self) -> bytes:
        self._check_open()
        if self.read_only:
            self._refuse_change("new oid")
        if not self.oid_pool:
            batch = max(1, min(self.oid_pool_size, 255))
            self._request(NEW_OIDS + bytes([batch]))
            self.oid_pool = split_oids(self._receive(8 * batch))[::-1]
            self._replied()
        oid = self.oid_pool.pop()
        self.transaction_new_oids.append(oid)
        return oid

    def load(self, oid: bytes) -> bytes:
        self._check_open()
        _check_oid(oid)
        record: bytes | Exception | None  # an Exception is raised once the reply is read
        record = self.cache.get(oid)
        if record is not None:
            return record
        if not self.snapshots:
            self._request(LOAD + oid)
            record = self._receive_load_response(oid)
        else:
            # Read ahead in the same round trip: the answers stay snapshots.
            wanted = self._read_ahead.wanted_after(oid) if self.cache.max_bytes else []
            self._request(LOAD + oid + (BULK_LOAD + int4_to_str(len(wanted)) + join_bytes(wanted)
                                        if wanted else b""))
            record = self._receive_load_response(oid)
            self._note_read_ahead(record)
            self._receive_read_ahead()
            for wanted_oid in wanted:
                self._note_read_ahead(self._receive_load_response(wanted_oid))
        self._replied()
        if isinstance(record, Exception):
            raise record
        return record

    def _note_read_ahead(self, record: bytes | Exception) -> None:
        if not isinstance(record, Exception):
            self._read_ahead.note(record)

    def _receive_read_ahead(self) -> None:
        """Cache the records that follow a protocol 3 load's answer."""
        block = self._receive(self._receive_int4())
        position = 0
        while position < len(block):
            end = position + 4 + str_to_int4(block[position:position + 4])
            record = block[position + 4:end]
            self.cache.put(record[:8], record)
            self._read_ahead.note(record)
            position = end

    def _receive_load_response(self, oid: bytes) -> bytes | Exception:
        """Return the record in a load reply (and cache it), or the error it
        reports, to be raised once the whole reply is read."""
        status = self._receive(1)
        if status == STATUS_OKAY:
            record = self._receive(self._receive_int4())
            self.cache.put(oid, record)
            return record
        if status == STATUS_INVALID:
            return ReadConflictError([oid])
        if status == STATUS_EXPIRED:
            reason = self._receive(self._receive_int4()).decode("utf-8", "replace")
            return SnapshotExpiredError([oid], reason)
        if status == STATUS_KEYERROR:
            return DurusKeyError(oid)
        self._fail("unexpected load status %r for oid %r" % (status, oid), error=ProtocolError)

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        """Yield the records of oids, those not cached loaded in one request
        when iteration starts."""
        self._check_open()
        return self._bulk_load(list(oids))

    def _bulk_load(self, oids: list):
        for oid in oids:
            _check_oid(oid)
        records: dict[bytes, bytes | Exception | None] = {oid: self.cache.get(oid) for oid in oids}
        missing = [oid for oid, record in records.items() if record is None]
        errors: list[Exception] = []
        if missing:
            self._request(BULK_LOAD + int4_to_str(len(missing)) + join_bytes(missing))
            # Every reply is read before raising, to stay in step with the server.
            for oid in missing:
                records[oid] = self._receive_load_response(oid)
            self._replied()
            errors = [record for record in records.values() if isinstance(record, Exception)]
        if errors:
            raise errors[0]
        for oid in oids:
            yield records[oid]

    def begin(self) -> None:
        self._check_open()
        self.records: dict[bytes, bytes] = {}
        self.transaction_new_oids: list[bytes] = []

    def store(self, oid: bytes, record: bytes) -> None:
        self._check_open()
        _check_oid(oid)
        self.records[oid] = record

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        """Commit the stored records. Raises the ConflictError that
        handle_invalidations raises on what others committed, or
        WriteConflictError if the server refuses the commit."""
        self._check_open()
        if self.read_only:
            self._refuse_change("commit")
        size = sum(12 + len(record) for record in self.records.values())
        if size > _MAX_PAYLOAD:
            raise CommitTooLargeError("a commit of %d bytes cannot be sent: the protocol's "
                                      "limit is %d bytes" % (size, _MAX_PAYLOAD))
        self._request(COMMIT)
        invalid = self._receive_oids()
        self.cache.discard_all(invalid)
        # Held, for sync() to hand out (again), until dealt with: whatever
        # stops handle_invalidations half way, none is lost.
        self.held_invalidations.extend(invalid)
        try:
            if invalid and handle_invalidations is not None:
                handle_invalidations(invalid)
                del self.held_invalidations[-len(invalid):]
        except BaseException:
            self._send(int4_to_str(0))  # tell the server we give up
            self._replied()
            self._abandon_commit()
            raise
        payload = commit_payload(self.records.items())
        self._send_payload(int4_to_str(len(payload)) + payload)
        if not payload:
            self._replied()
            return
        status = self._receive(1)
        if status == STATUS_REFUSED:
            reason = self._receive(self._receive_int4()).decode("utf-8", "replace")
            self._fail("the server refused the commit: %s" % reason, error=CommitTooLargeError)
        if status == STATUS_INVALID:
            self._replied()
            self._abandon_commit()
            raise WriteConflictError()
        if status != STATUS_OKAY:
            self._fail("unexpected commit status %r" % status, error=ProtocolError)
        for oid, record in self.records.items():
            self.cache.put(oid, record)
        self.begin()
        self._replied()

    def _send_payload(self, data: bytes) -> None:
        """Send a commit's payload; stop early if the server answers before
        it has all of it (it refuses a commit over its limit at once)."""
        view = memoryview(data)
        for start in range(0, len(view), _COMMIT_PIECE):
            if start and self._reply_waiting():
                return
            self._send(view[start:start + _COMMIT_PIECE])

    def _reply_waiting(self) -> bool:
        pending = getattr(self._stream, "pending", None)  # TLS: bytes already decrypted
        return bool(pending and pending()) or bool(select.select([self._stream], [], [], 0)[0])

    def _abandon_commit(self) -> None:
        """Forget the records; the server still reserves their new oids for us."""
        self.oid_pool.extend(reversed(self.transaction_new_oids))
        self.begin()

    def sync(self) -> list:
        self._check_open()
        self._request(SYNC)
        received = self._receive_oids()
        self.cache.discard_all(received)
        self.held_invalidations.extend(received)
        self._replied()
        invalid, self.held_invalidations = self.held_invalidations, []
        return invalid

    def pack(self) -> None:
        """Ask the server to pack; it does so while serving, after replying."""
        self._check_open()
        if self.read_only:
            self._refuse_change("pack")
        self._request(PACK)
        status = self._receive(1)
        self._replied()
        if status != STATUS_OKAY:
            self._fail("unexpected pack status %r" % status, error=ProtocolError)

    def stop_server(self) -> None:
        """Ask the server to shut down (as `durus -s --stop` does), then close."""
        self._check_open()
        if self.read_only:
            self._refuse_change("stopping the server")
        self._request(QUIT)
        self.close()

    def close(self) -> None:
        """Say goodbye to the server and close the connection; safe to repeat."""
        if not self.broken:
            try:
                self._stream.sendall(GOODBYE)
            except OSError:
                pass
        self._stream.close()
        self.closed = True


def _check_oid(oid: bytes) -> None:
    # A malformed oid would put the request stream out of step with the server.
    if not isinstance(oid, bytes) or len(oid) != 8:
        raise ValueError("an oid is 8 bytes, not %r" % (oid,))
