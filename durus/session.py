"""Session: the storage server's side of the protocol (durus.protocol) for one client.

A session knows nothing of sockets. It is a generator that says what it
needs next (session.want: a number of input bytes, or a Wait) and is given
it with feed(); its replies go to the send callable it was made with. What
all sessions share (the storage, each other, the commit turn, the pack) is
a SharedState. So a session can be driven by the server's event loop or,
in tests, by feeding it bytes.
"""

import enum
import time
from dataclasses import dataclass, field
from datetime import datetime
from logging import DEBUG, INFO
from typing import Callable, Collection, Iterable

from durus.auth import AuthenticationFailed, server_handshake
from durus.commit_turn import CommitTurn
from durus.error import ConflictError, ReadConflictError
from durus.group_commit import GroupCommit
from durus.logger import is_logging, log
from durus.metrics import NO_METRICS, NoMetrics
from durus.packing import Packing
from durus.protocol import (BULK_LOAD, CHANGING_COMMANDS, COMMIT, GOODBYE, LOAD, NEW_OID,
                            NEW_OIDS, PACK, PROTOCOL, QUIT, SNAPSHOT_PROTOCOL, STATUS_EXPIRED,
                            STATUS_INVALID, STATUS_KEYERROR, STATUS_OKAY, STATUS_REFUSED, SYNC,
                            VERSION, oid_list, read_ahead_block, split_commit_payload)
from durus.record_format import split_oids, unpack_record
from durus.serialize import extract_class_name
from durus.snapshots import LOST, OldRecord, SnapshotExpired, SnapshotHistory, entry_bytes
from durus.storage import Storage
from durus.utils import int4_to_str, join_bytes, str_to_int4, str_to_int8


# A refused commit's payload is passed over in pieces this large.
_SKIP_PIECE = 1 << 20
# Protocol 3: bytes of the records a loaded one refers to that come with it.
PREFETCH_BYTES = 128 << 10
# Oids a session remembers sending (so as not to send them again) before it
# forgets them all.
_SENT_LIMIT = 1 << 20


class ClientError(Exception):
    """A client broke the protocol; it is disconnected."""


class Wait(enum.Enum):
    """What a session waits for, besides a number of input bytes."""
    COMMAND = "the next command byte (the client is idle)"
    COMMIT_TURN = "the commit turn"
    DURABLE = "its commit to reach the disk"
    OUTPUT_DRAINED = "its replies to be read"


@dataclass(eq=False)
class SharedState:
    """What the sessions of one server share.

    sessions: a collection (dict or list) of every connected Session.
    history: the old records snapshot sessions may need.
    group_commit: a durus.group_commit.GroupCommit, or None when each commit
        is durable (or not) as the storage writes it.
    stop_requested: set when a client asks the server to stop.
    metrics: a durus.metrics.ServerMetrics to report to (NO_METRICS: none).
    """
    storage: Storage
    turn: CommitTurn
    packing: Packing
    max_commit_size: int
    max_frame_size: int
    history: SnapshotHistory
    sessions: dict | list = field(default_factory=dict)
    protocol: bytes = PROTOCOL
    users: dict | None = None
    group_commit: GroupCommit | None = None
    stop_requested: bool = False
    # {oid: tid} a pack removed (as of tid) and the history keeps, until the
    # storage reports them.
    kept_from_pack: dict = field(default_factory=dict)
    metrics: NoMetrics = NO_METRICS

    def __post_init__(self) -> None:
        if hasattr(self.storage, "pack_observer"):
            self.storage.pack_observer = self.keep_from_pack

    def invalidate(self, oids: Iterable[bytes], except_for: "Session | None" = None) -> None:
        """Tell every session but except_for that oids changed."""
        for session in self.sessions:
            if session is not except_for:
                session.invalid.update(oids)

    def sync_storage(self) -> None:
        """Pass invalidations the storage itself reports (after a pack) to everyone."""
        oids = self.storage.sync()
        if self.kept_from_pack:  # gone, but kept: invalid, not lost
            self.invalidate(self.kept_from_pack.keys() & set(oids))
            oids = [oid for oid in oids if oid not in self.kept_from_pack]
            self.kept_from_pack.clear()
        self.note_changed_elsewhere(oids)

    def keep_from_pack(self, removed: list, load: Callable[[bytes], bytes]) -> None:
        """Keep the records a pack is about to remove for the snapshots that
        may still reach them (as far as history's max_bytes allows)."""
        history = self.history
        if not any(session.snapshots and session.snapshot < history.tid
                   for session in self.sessions):
            return
        kept: dict[bytes, OldRecord] = {}
        budget = history.max_bytes - history.bytes
        for oid in removed:
            kept[oid] = record = load(oid) if budget > 0 else LOST
            budget -= entry_bytes(record)
        tid = history.note_commit(kept, "a pack removed a record it needs, beyond what the "
                                        "server keeps for snapshots (snapshot_bytes)")
        # Sessions learn of them when the storage reports them (sync_storage):
        # one in a commit would take them for others' changes.
        self.kept_from_pack.update(dict.fromkeys(removed, tid))

    def note_changed_elsewhere(self, oids: Collection[bytes]) -> None:
        """Tell everyone of oids a pack removed or others changed in the
        storage itself (one shared with other processes); snapshots older
        than now can no longer read them."""
        self.history.note_lost(oids, "a pack removed, or another process changed, "
                                     "a record it needs")
        self.invalidate(oids)

    def trim_history(self) -> None:
        """Forget old records no snapshot needs; expire snapshots held too long."""
        if self.history.is_trimmed():
            return
        snapshots = {session: (session.snapshot, session.snapshot_taken)
                     for session in self.sessions if session.snapshots}
        for session in self.history.trim(snapshots):
            log(INFO, "Client %s: its snapshot expired", session.name)

    def needs_history(self, committer: "Session | None") -> bool:
        """Tell whether a commit by committer must keep the records it replaces."""
        return any(session.snapshots and session is not committer for session in self.sessions)

    def new_oids(self, count: int) -> list:
        """Return count new oids that no session still holds as invalid."""
        oids: list[bytes] = []
        while len(oids) < count:
            oid = self.storage.new_oid()
            # An oid freed by a pack may still be in someone's invalid set:
            # handing it out would confuse that client's next load.
            if any(oid in session.invalid for session in self.sessions):
                self.storage.release_oids([oid])
            else:
                oids.append(oid)
        return oids


class Session:
    """The protocol state of one client; see the module docstring.

    name: str, the client as log lines name it.
    invalid: {oid}, committed by others since this client last got them.
    unused_oids: {oid}, handed to this client by 'N'/'M' and not yet committed.
    read_only: bool, whether the client's user may only read.
    authenticated: bool, whether the client has passed authentication (or
        none is required).
    commit_number: int, with group commit: the number of its last commit.
    snapshots: bool, whether the client asked for snapshot reads (protocol 3).
    snapshot: int, the history tid as of which it reads; snapshot_taken, the
        monotonic time it was taken.
    refusal: str | None, why its last request was refused; it is dropped
        for that reason once the request's bytes are through.
    want: int | Wait, what the session needs before it can go on.
    """

    def __init__(self, shared: SharedState, name: str, send: Callable[[bytes], None]) -> None:
        self.shared = shared
        self.name = name
        self.send = send
        self.invalid: set[bytes] = set()
        self.unused_oids: set[bytes] = set()
        self.read_only = False
        self.authenticated = shared.users is None
        self.commit_number = 0
        self.snapshots = False
        self.snapshot = shared.history.tid
        self.snapshot_taken = 0.0
        self.refusal: str | None = None
        self._sent: set[bytes] = set()  # protocol 3: oids whose records this client was sent
        self._handlers = {
            VERSION: self._version, NEW_OID: self._new_oid, NEW_OIDS: self._new_oids,
            LOAD: self._load, BULK_LOAD: self._bulk_load, COMMIT: self._commit,
            SYNC: self._sync, PACK: self._pack, QUIT: self._quit}
        self._steps = self._run()
        self.want = next(self._steps)

    def feed(self, value: bytes | None) -> None:
        """Give the session what it wants (bytes, or None for a Wait that is
        over). Raises StopIteration once the client has said goodbye,
        ClientError if it broke the protocol, DurusError if the storage
        refused a request."""
        self.want = self._steps.send(value)

    def close(self) -> None:
        """End the session: give up its commit turn and its unused oids."""
        self._steps.close()  # runs the cleanup of a commit underway
        self.shared.turn.forget(self)
        # Or the storage would hold on to them for as long as the server runs.
        self.shared.storage.release_oids(self.unused_oids)

    def _run(self):
        if not self.authenticated:
            yield from self._authenticate()
        while True:
            code = yield Wait.COMMAND
            if code == GOODBYE:
                return
            handler = self._handlers.get(code)
            if handler is None:
                raise ClientError("unknown command byte %r%s" % (
                    code, " (a TLS handshake? this server does not use TLS)"
                    if code == b"\x16" else ""))
            if self.read_only and code in CHANGING_COMMANDS:
                raise ClientError("read-only user may not send %r (%s)"
                                  % (code, CHANGING_COMMANDS[code]))
            # Handlers that read more of the request are generators.
            steps = handler()
            if steps is not None:
                yield from steps

    def _authenticate(self):
        """Run the authentication handshake (durus.auth) before any request."""
        command = yield Wait.COMMAND  # a client may connect and leave, like wait_for_server()
        try:
            user = yield from server_handshake(self.shared.users, self.send, command)
        except AuthenticationFailed as exc:
            raise ClientError(str(exc)) from None
        self.read_only = user.read_only
        self.authenticated = True
        self.name += " user %r" % user.name
        log(DEBUG, "Client %s authenticated%s", self.name,
            " (read-only)" if user.read_only else "")

    def _version(self):
        version = yield 4
        self.snapshots = version == SNAPSHOT_PROTOCOL
        if self.snapshots:
            self._take_snapshot()
            self.send(version)
            return
        self.send(self.shared.protocol)
        if version != self.shared.protocol:
            raise ClientError("protocol %d is not supported" % str_to_int4(version))

    def _reserve_oids(self, count: int) -> list:
        oids = self.shared.new_oids(count)
        self.unused_oids.update(oids)
        return oids

    def _new_oid(self) -> None:
        self.send(self._reserve_oids(1)[0])

    def _new_oids(self):
        count = (yield 1)[0]
        self.send(join_bytes(self._reserve_oids(count)))

    def _record(self, oid: bytes) -> bytes:
        """Return the record of oid this client reads: as of its snapshot,
        with protocol 3. Raises KeyError, ReadConflictError, SnapshotExpired."""
        if oid not in self.invalid:
            try:
                return self.shared.storage.load(oid)
            except KeyError:
                # Removed by a pack that the storage has not reported yet.
                if not (self.snapshots
                        and self.snapshot < self.shared.kept_from_pack.get(oid, -1)):
                    raise
        elif not self.snapshots:
            raise ReadConflictError([oid])
        record = self.shared.history.record_at(oid, self.snapshot)
        if record is None:
            raise KeyError(oid)
        return record

    def _load_answer(self, oid: bytes) -> tuple[bytes, bytes | None]:
        """Return (the answer to a load of oid, the record it carries or None)."""
        try:
            record = self._record(oid)
        except SnapshotExpired as exc:
            reason = str(exc).encode("utf-8")
            return STATUS_EXPIRED + int4_to_str(len(reason)) + reason, None
        except ReadConflictError:
            self.shared.metrics.conflict("load")
            return STATUS_INVALID, None
        except KeyError:
            return STATUS_KEYERROR, None
        return STATUS_OKAY + int4_to_str(len(record)) + record, record

    def _load(self):
        oid = yield 8
        self.shared.metrics.loaded(1)
        answer, record = self._load_answer(oid)
        if self.snapshots:
            answer += read_ahead_block(self._read_ahead(oid, record))
        self.send(answer)

    def _read_ahead(self, oid: bytes, record: bytes | None) -> list[bytes]:
        """Protocol 3: the records that the loaded record refers to and this
        client was not sent yet, up to about PREFETCH_BYTES."""
        if len(self._sent) > _SENT_LIMIT:
            self._sent.clear()
        self._sent.add(oid)
        found: list[bytes] = []
        size = 0
        for ref in split_oids(unpack_record(record)[2]) if record is not None else ():
            if size >= PREFETCH_BYTES:
                break
            if ref in self._sent:
                continue
            try:
                found.append(self._record(ref))
            except (KeyError, ReadConflictError, SnapshotExpired):
                continue
            self._sent.add(ref)
            size += len(found[-1]) + 4
        return found

    def _bulk_load(self):
        count = str_to_int4((yield 4))
        limit = min(self.shared.max_frame_size, self.shared.max_commit_size)
        if 8 * count > limit:
            raise ClientError("bulk load request of %d bytes is over the limit of %d bytes"
                              % (8 * count, limit))
        self.shared.metrics.loaded(count)
        for oid in split_oids((yield 8 * count)) if count else ():
            self.send(self._load_answer(oid)[0])
            # The server goes on once the replies fit its output buffer.
            yield Wait.OUTPUT_DRAINED

    def _send_invalidations(self) -> None:
        """Tell the client what changed since; it reads as of now from here."""
        self.send(oid_list(self.invalid))
        self._sent.difference_update(self.invalid)  # the client drops them
        self.invalid.clear()
        self._take_snapshot()
        if self.snapshots:
            self.shared.trim_history()  # what this snapshot needed may go

    def _take_snapshot(self) -> None:
        self.snapshot = self.shared.history.tid
        self.snapshot_taken = time.monotonic()

    def _sync(self) -> None:
        self.shared.sync_storage()
        log(8, "Sync %s: %d invalid", self.name, len(self.invalid))
        self._send_invalidations()

    def _commit(self):
        shared = self.shared
        started = time.monotonic()  # for metrics: the commit's latency
        yield Wait.COMMIT_TURN
        try:
            shared.sync_storage()
            self._send_invalidations()
            size = str_to_int4((yield 4))
            if size == 0:
                shared.metrics.conflict("client")
                return  # The client found a conflict in the invalidations.
            if size > shared.max_commit_size:
                yield from self._refuse_commit(size)
            records = self._parse_commit((yield size))
            if self.invalid:
                # Others committed after this client got its invalidations (it
                # lost the turn): it could not check those against its reads.
                log(INFO, "Client %s: conflict, others committed during its commit", self.name)
                shared.metrics.conflict("commit")
                self.send(STATUS_INVALID)
                return
            committed = self._apply_commit(records, size)
        finally:
            shared.turn.release(self)
        if committed:
            if shared.group_commit is not None:
                # Answer once a flush covers it; others commit meanwhile.
                self.commit_number = shared.group_commit.note_written()
                yield Wait.DURABLE
            shared.metrics.committed(size, time.monotonic() - started)
            self.send(STATUS_OKAY)

    def _refuse_commit(self, size: int):
        """Tell the client at once why its commit of size bytes is refused,
        pass over the payload as it arrives (never holding it), then end: a
        Durus 4.3 client cannot read the reason, so the session cannot go
        on. Ours stops sending when the answer comes, and hangs up."""
        self.shared.turn.release(self)  # others commit while the payload goes by
        self.refusal = ("commit of %d bytes is over the server's limit of %d bytes "
                        "(max_commit_size)" % (size, self.shared.max_commit_size))
        reason = self.refusal.encode("utf-8")
        self.send(STATUS_REFUSED + int4_to_str(len(reason)) + reason)
        while size:
            size -= len((yield min(size, _SKIP_PIECE)))
        raise ClientError(self.refusal)

    def _parse_commit(self, payload: bytes) -> list:
        """Return [(oid, record)] from a commit payload, checking that each
        record is well formed and that no oid belongs to another client."""
        try:
            records = split_commit_payload(payload)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        oids = {oid for oid, _ in records}
        for other in self.shared.sessions:
            if other is not self and not oids.isdisjoint(other.unused_oids):
                raise ClientError("commit uses oids reserved for client %s" % other.name)
        return records

    def _apply_commit(self, records: list, size: int) -> bool:
        """Write the commit; on a conflict, answer it and return False."""
        storage = self.shared.storage
        replaced = self._replaced_records(records) if self.shared.needs_history(self) else {}
        committed = False
        storage.begin()
        try:
            for oid, record in records:
                if is_logging(DEBUG):
                    log(DEBUG, "  oid=%-6s rlen=%-6s %s",
                        str_to_int8(oid), len(record), extract_class_name(record))
                storage.store(oid, record)
            storage.end(handle_invalidations=self.shared.note_changed_elsewhere)
            committed = True
        except ConflictError:
            log(INFO, "Client %s: conflict reported by the storage", self.name)
            self.shared.metrics.conflict("commit")
            self.send(STATUS_INVALID)
            return False
        except ValueError as exc:
            raise ClientError("commit refused: %s" % exc) from None
        finally:
            if not committed:
                storage.begin()  # forgets the records of the failed commit
        oids = [oid for oid, _ in records]
        self.unused_oids.difference_update(oids)
        self.shared.history.note_commit(replaced)
        self.shared.invalidate(oids, except_for=self)
        self._take_snapshot()  # this client has seen its own commit
        self.shared.trim_history()
        self.shared.packing.note_committed(size + 8)
        log(INFO, "Committed %3s objects %s bytes at %s", len(records), size, datetime.now())
        return True

    def _replaced_records(self, records: list) -> dict:
        """{oid: the record a commit of records replaces, or None}."""
        storage = self.shared.storage
        replaced: dict[bytes, OldRecord] = {}
        for oid, _ in records:
            if oid in self.unused_oids:
                replaced[oid] = None  # new: no snapshot has it
                continue
            try:
                replaced[oid] = storage.load(oid)
            except KeyError:
                replaced[oid] = None
            except ReadConflictError:
                replaced[oid] = LOST  # another process changed it: end() will say
        return replaced

    def _pack(self) -> None:
        self.shared.packing.start()
        self.send(STATUS_OKAY)

    def _quit(self) -> None:
        log(INFO, "Quit requested by client %s", self.name)
        self.shared.stop_requested = True
