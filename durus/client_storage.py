"""ClientStorage: the Storage of a Durus storage server, used over a socket."""

import ssl
from typing import Any, Iterable, Iterator, NoReturn

from durus.auth import AUTH_PROTOCOL, DEFAULT_USER, AuthenticationError, client_handshake
from durus.error import (CommitTooLargeError, DurusKeyError, ProtocolError, ReadConflictError,
                         ReadOnlyError, SnapshotExpiredError, WriteConflictError)
from durus.protocol import (BULK_LOAD, COMMIT, GOODBYE, LOAD, NEW_OIDS, PACK, PROTOCOL, QUIT,
                            SNAPSHOT_PROTOCOL, STATUS_EXPIRED, STATUS_INVALID, STATUS_KEYERROR,
                            STATUS_OKAY, STATUS_REFUSED, SYNC, VERSION, commit_payload,
                            split_read_ahead)
from durus.record_cache import ReadAheadQueue, RecordCache
from durus.record_format import split_oids
from durus.socket_address import DEFAULT_HOST, DEFAULT_PORT, HostPortAddress, SocketAddress
from durus.server_link import ServerLink
from durus.storage import InvalidationHandler, Storage
from durus.tls import client_context
from durus.utils import int4_to_str, join_bytes, str_to_int4

# Seconds to wait for a server's reply before declaring it gone. Generous,
# because a server may be busy with other clients' commits.
DEFAULT_TIMEOUT = 60.0
# Bytes of records kept by a client, to load them again without asking.
DEFAULT_CACHE_BYTES = 32 << 20
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

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, address: "SocketAddress | tuple[str, int] | str | None" = None,
                 timeout: float | None = DEFAULT_TIMEOUT, *, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, user: str | None = None,
                 secret: bytes | str | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 snapshots: bool = True) -> None:
        self.address = SocketAddress.new(address or (host, port))
        self.cache = RecordCache(cache_bytes)
        self._read_ahead = ReadAheadQueue(self.cache, READ_AHEAD,
                                          cache_bytes // READ_AHEAD_QUEUE_BYTES)
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
        self._use(ServerLink.connect(self.address, timeout, ssl_context, server_hostname))
        try:
            self._start_session(user, secret)
        except ConnectionError as exc:
            self.link.close()
            if ssl_context is None:
                raise
            # With TLS 1.3 a server checks the client's certificate after the
            # client has finished its handshake, and its alert may be lost.
            raise ConnectionError("%s; the server ended the connection after the TLS "
                                  "handshake: does it require a client certificate (certfile) "
                                  "from a CA it trusts?" % exc) from exc
        except BaseException:
            self.link.close()
            raise

    @property
    def s(self) -> Any:
        """The socket (or socket-like object) connected to the server."""
        return self.link.sock

    @s.setter
    def s(self, sock: Any) -> None:
        """Talk to the server through sock from now on (objects with recv()
        but no recv_into(), test doubles as in Durus's tests, are accepted too)."""
        self._use(ServerLink(sock, self.address))

    def _use(self, link: ServerLink) -> None:
        """Talk to the server through link from now on: nothing learnt
        through another is kept, since records are valid until the server
        that sent them says otherwise and oids are reserved while the
        session that got them lasts."""
        self.link = link
        self.cache.clear()
        self.oid_pool: list[bytes] = []

    @property
    def requests(self) -> int:
        """Requests sent to the server (each a round trip, but for 'Q' and goodbye)."""
        return self.link.requests

    @property
    def broken(self) -> str | None:
        """Why the connection to the server failed, once it has."""
        return self.link.broken

    def _start_session(self, user: str | None, secret: bytes | str | None) -> None:
        """Agree on the protocol, authenticating if there is a secret; ask
        for snapshot reads if self.snapshots, and note whether they are given
        (if not, the server hangs up)."""
        if secret is not None:
            if isinstance(secret, str):
                secret = secret.encode("utf-8")
            self.read_only = client_handshake(self.link.send, self.link.receive, user or DEFAULT_USER,
                                              secret, str(self.address))
            if not self.snapshots:
                return
        wanted = SNAPSHOT_PROTOCOL if self.snapshots else PROTOCOL
        self.link.send(VERSION + wanted)
        server_protocol = self.link.receive(4)
        if server_protocol == AUTH_PROTOCOL:
            raise AuthenticationError("the server at %s requires authentication: give a user "
                                      "and secret" % self.address)
        if server_protocol == PROTOCOL and wanted == SNAPSHOT_PROTOCOL:
            self.snapshots = False
            self.link.close()
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

    # The Storage interface.

    def new_oid(self) -> bytes:
        self._check_open()
        if self.read_only:
            self._refuse_change("new oid")
        if not self.oid_pool:
            batch = max(1, min(self.oid_pool_size, 255))
            self.link.request(NEW_OIDS + bytes([batch]))
            self.oid_pool = split_oids(self.link.receive(8 * batch))[::-1]
            self.link.replied()
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
            self.link.request(LOAD + oid)
            record = self._receive_load_response(oid)
        else:
            # Read ahead in the same round trip: the answers stay snapshots.
            wanted = self._read_ahead.wanted_after(oid) if self.cache.max_bytes else []
            bulk = BULK_LOAD + int4_to_str(len(wanted)) + join_bytes(wanted) if wanted else b""
            self.link.request(LOAD + oid + bulk)
            record = self._receive_load_response(oid)
            self._note_read_ahead(record)
            self._receive_read_ahead()
            for wanted_oid in wanted:
                self._note_read_ahead(self._receive_load_response(wanted_oid))
        self.link.replied()
        if isinstance(record, Exception):
            raise record
        return record

    def _note_read_ahead(self, record: bytes | Exception) -> None:
        if not isinstance(record, Exception):
            self._read_ahead.note(record)

    def _receive_read_ahead(self) -> None:
        """Cache the records that follow a protocol 3 load's answer."""
        for record in split_read_ahead(self.link.receive(self.link.receive_int4())):
            self.cache.put(record[:8], record)
            self._read_ahead.note(record)

    def _receive_load_response(self, oid: bytes) -> bytes | Exception:
        """Return the record in a load reply (and cache it), or the error it
        reports, to be raised once the whole reply is read."""
        status = self.link.receive(1)
        if status == STATUS_OKAY:
            record = self.link.receive(self.link.receive_int4())
            self.cache.put(oid, record)
            return record
        if status == STATUS_INVALID:
            return ReadConflictError([oid])
        if status == STATUS_EXPIRED:
            reason = self.link.receive(self.link.receive_int4()).decode("utf-8", "replace")
            return SnapshotExpiredError([oid], reason)
        if status == STATUS_KEYERROR:
            return DurusKeyError(oid)
        self.link.fail("unexpected load status %r for oid %r" % (status, oid), error=ProtocolError)

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
            self.link.request(BULK_LOAD + int4_to_str(len(missing)) + join_bytes(missing))
            # Every reply is read before raising, to stay in step with the server.
            for oid in missing:
                records[oid] = self._receive_load_response(oid)
            self.link.replied()
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
        self.link.request(COMMIT)
        invalid = self.link.receive_oids()
        self.cache.discard_all(invalid)
        # Held, for sync() to hand out (again), until dealt with: whatever
        # stops handle_invalidations half way, none is lost.
        self.held_invalidations.extend(invalid)
        try:
            if invalid and handle_invalidations is not None:
                handle_invalidations(invalid)
                del self.held_invalidations[-len(invalid):]
        except BaseException:
            self.link.send(int4_to_str(0))  # tell the server we give up
            self.link.replied()
            self._abandon_commit()
            raise
        payload = commit_payload(self.records.items())
        self._send_payload(int4_to_str(len(payload)) + payload)
        if not payload:
            self.link.replied()
            return
        status = self.link.receive(1)
        if status == STATUS_REFUSED:
            reason = self.link.receive(self.link.receive_int4()).decode("utf-8", "replace")
            self.link.fail("the server refused the commit: %s" % reason, error=CommitTooLargeError)
        if status == STATUS_INVALID:
            self.link.replied()
            self._abandon_commit()
            raise WriteConflictError()
        if status != STATUS_OKAY:
            self.link.fail("unexpected commit status %r" % status, error=ProtocolError)
        for oid, record in self.records.items():
            self.cache.put(oid, record)
        self.begin()
        self.link.replied()

    def _send_payload(self, data: bytes) -> None:
        """Send a commit's payload; stop early if the server answers before
        it has all of it (it refuses a commit over its limit at once)."""
        view = memoryview(data)
        for start in range(0, len(view), _COMMIT_PIECE):
            if start and self.link.reply_waiting():
                return
            self.link.send(view[start:start + _COMMIT_PIECE])

    def _abandon_commit(self) -> None:
        """Forget the records; the server still reserves their new oids for us."""
        self.oid_pool.extend(reversed(self.transaction_new_oids))
        self.begin()

    def sync(self) -> list:
        self._check_open()
        self.link.request(SYNC)
        received = self.link.receive_oids()
        self.cache.discard_all(received)
        self.held_invalidations.extend(received)
        self.link.replied()
        invalid, self.held_invalidations = self.held_invalidations, []
        return invalid

    def pack(self) -> None:
        """Ask the server to pack; it does so while serving, after replying."""
        self._check_open()
        if self.read_only:
            self._refuse_change("pack")
        self.link.request(PACK)
        status = self.link.receive(1)
        self.link.replied()
        if status != STATUS_OKAY:
            self.link.fail("unexpected pack status %r" % status, error=ProtocolError)

    def stop_server(self) -> None:
        """Ask the server to shut down (as `durus -s --stop` does), then close."""
        self._check_open()
        if self.read_only:
            self._refuse_change("stopping the server")
        self.link.request(QUIT)
        self.close()

    def close(self) -> None:
        """Say goodbye to the server and close the connection; safe to repeat."""
        self.link.close(GOODBYE)
        self.closed = True


def _check_oid(oid: bytes) -> None:
    # A malformed oid would put the request stream out of step with the server.
    if not isinstance(oid, bytes) or len(oid) != 8:
        raise ValueError("an oid is 8 bytes, not %r" % (oid,))
