"""Protocol sessions (durus.session) driven in-process, as the server's event
loop drives them: a Peer feeds a Session bytes and collects its answers."""

from durus.commit_turn import CommitTurn
from durus.packing import Packing
from durus.protocol import commit_payload
from durus.record_format import pack_record
from durus.session import Session, SharedState, Wait
from durus.snapshots import SnapshotHistory
from durus.storage import MemoryStorage
from durus.utils import int4_to_str, str_to_int4


def shared_state(storage=None, max_commit_size=1 << 20, max_frame_size=1 << 20):
    storage = storage if storage is not None else MemoryStorage()
    return SharedState(storage, CommitTurn(grace=1.0, timeout=10.0), Packing(storage, 0),
                       max_commit_size, max_frame_size, SnapshotHistory(1 << 20, 60.0))


class Peer:
    """One client's session, with its input and output, run as far as its
    input and the commit turn allow, as the server's loop runs it."""

    def __init__(self, shared: SharedState, name: str = "peer"):
        self.shared = shared
        self.output = bytearray()
        self.input = bytearray()
        self.session = Session(shared, name, self.output.extend)
        shared.sessions[self.session] = self

    def run(self, data: bytes = b"") -> bytes:
        """Feed data; return (and forget) what the session answered."""
        self.input += data
        while True:
            value = self._satisfy(self.session.want)
            if value is None:
                break
            self.session.feed(value[0])
        answer = bytes(self.output)
        self.output.clear()
        return answer

    def _satisfy(self, want):
        """Return (what the session waits for,), or None if it has to wait."""
        if want is Wait.OUTPUT_DRAINED:
            return (None,)
        if want is Wait.COMMIT_TURN:
            return (None,) if self.shared.turn.request(self.session) else None
        if want is Wait.DURABLE:
            durable = self.shared.group_commit.is_durable(self.session.commit_number)
            return (None,) if durable else None
        size = 1 if want is Wait.COMMAND else want
        if len(self.input) < size:
            return None
        data = bytes(self.input[:size])
        del self.input[:size]
        return (data,)

    def close(self) -> None:
        del self.shared.sessions[self.session]
        self.session.close()


def record(oid: bytes, data: bytes = b"state") -> bytes:
    return pack_record(oid, data, b"")


def commit_request(*records: tuple) -> bytes:
    payload = commit_payload(records)
    return int4_to_str(len(payload)) + payload


def new_oids(peer: Peer, count: int) -> list:
    answer = peer.run(b"M" + bytes([count]))
    return [answer[i:i + 8] for i in range(0, len(answer), 8)]


def commit(peer: Peer, *pairs: tuple) -> tuple[list, bytes]:
    """Commit [(oid, data)]; return (invalidations received, status)."""
    invalidations = peer.run(b"C")
    count = str_to_int4(invalidations[:4])
    status = peer.run(commit_request(*((oid, record(oid, data)) for oid, data in pairs)))
    return [invalidations[4 + 8 * i:12 + 8 * i] for i in range(count)], status
