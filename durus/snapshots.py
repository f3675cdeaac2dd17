"""SnapshotHistory: the old records a server keeps so that each snapshot
session reads the database as it was when its transaction began.

Commits are numbered (tid). A session's snapshot is the tid at which it last
took its invalidations (sync, or the start of a commit): it has been told of
every change up to there, and reads past it must not show. So when a commit
overwrites records while some session's snapshot is older, the server keeps
the records it overwrote, tagged with the commit's tid: the state of oid at
snapshot s is the record kept by the first commit after s that changed oid,
or the storage's current record if none did.

What the server cannot keep (records a pack removed, or others changed in a
storage the server shares, such as an SQLite file) is marked lost: a snapshot
that needs it has expired. History is dropped as soon as no snapshot is old
enough to need it, and bounded: past max_bytes, or for a snapshot older than
max_age seconds, the oldest snapshots expire (their sessions are told at
their next load of a changed record) and what only they needed goes.
"""

import collections
import enum
import time
from typing import Collection, Final


class _Lost(enum.Enum):
    # An enum member, so that `record is LOST` narrows record's type.
    LOST = "lost"


# What a snapshot may need but the server did not keep.
LOST: Final = _Lost.LOST
# An old record as kept: the record, None if there was none, or LOST.
OldRecord = bytes | None | _Lost
# Bytes of memory an entry costs besides its record (the oid, the entry in
# the version lists and the log): counted against max_bytes too.
ENTRY_BYTES = 200


def entry_bytes(record: OldRecord) -> int:
    """Return the memory an entry of record costs, as max_bytes counts it."""
    return ENTRY_BYTES + (len(record) if isinstance(record, bytes) else 0)


class SnapshotExpired(Exception):
    """The record a snapshot needs is no longer kept; str() says why."""


class SnapshotHistory:
    """Records overwritten by commits, while some snapshot still needs them.

    tid: int, the number of the last commit (or loss) noted.
    bytes: int, the size of the records kept.
    """

    def __init__(self, max_bytes: int, max_age: float) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.tid = 0
        self.bytes = 0
        # oid -> [(tid, record or None or LOST)], oldest first
        self._versions: dict[bytes, list[tuple[int, OldRecord]]] = {}
        # (tid, [oids], bytes), oldest first
        self._log: collections.deque[tuple[int, list[bytes], int]] = collections.deque()
        self._expired_below = 0  # snapshots older than this tid have expired
        self._why_expired = ""
        self._why_lost = ""

    def note_commit(self, old_records: dict[bytes, OldRecord], why_lost: str = "") -> int:
        """Note a commit that replaced {oid: previous record, or None if it had
        none, or LOST if unknown: why_lost says why}; return its tid."""
        if why_lost:
            self._why_lost = "the transaction's snapshot expired: " + why_lost
        self.tid += 1
        if not old_records:
            return self.tid
        size = sum(map(entry_bytes, old_records.values()))
        for oid, record in old_records.items():
            self._versions.setdefault(oid, []).append((self.tid, record))
        self._log.append((self.tid, list(old_records), size))
        self.bytes += size
        return self.tid

    def note_lost(self, oids: Collection[bytes], why: str) -> None:
        """Note that the records of oids changed in a way the server could not
        keep (say why, for the sessions that need them)."""
        if oids:
            self.note_commit(dict.fromkeys(oids, LOST), why)

    def record_at(self, oid: bytes, snapshot: int) -> bytes | None:
        """Return the record of oid as of snapshot (None if it had none), for
        an oid that a commit after snapshot changed. Raises SnapshotExpired."""
        if snapshot < self._expired_below:
            raise SnapshotExpired(self._why_expired)
        for tid, record in self._versions.get(oid, ()):
            if tid > snapshot:
                if record is LOST:
                    raise SnapshotExpired(self._why_lost)
                return record
        raise SnapshotExpired("the server kept no record of oid %r for the transaction's "
                              "snapshot" % (oid,))

    def is_trimmed(self) -> bool:
        """Tell whether nothing is kept."""
        return not self._log

    def trim(self, snapshots: dict) -> list:
        """Drop what no snapshot in {session: (tid, monotonic time taken)}
        needs; expire the oldest while over max_bytes or past max_age.
        Return the sessions whose snapshots expired now."""
        expired = []
        by_age = sorted(((session, taken) for session, taken in snapshots.items()
                         if taken[0] >= self._expired_below),  # expired ones need nothing
                        key=lambda item: item[1][0])
        now = time.monotonic()
        while by_age:
            tid, taken = by_age[0][1]
            if tid >= self.tid:
                break  # up to date: needs nothing kept
            if self.bytes > self.max_bytes:
                why = ("the server keeps at most %d bytes of old records for snapshots "
                       "(snapshot_bytes)" % self.max_bytes)
            elif now - taken > self.max_age:
                why = "older than %s s (snapshot_age)" % self.max_age
            else:
                break
            self._expire_below(tid + 1, why)
            while by_age and by_age[0][1][0] <= tid:  # all as old expire together
                expired.append(by_age.pop(0)[0])
            self._drop_through(by_age[0][1][0] if by_age else self.tid)
        self._drop_through(by_age[0][1][0] if by_age else self.tid)
        return expired

    def _expire_below(self, tid: int, why: str) -> None:
        if tid > self._expired_below:
            self._expired_below = tid
            self._why_expired = "the transaction's snapshot expired: it is " + why

    def _drop_through(self, oldest_snapshot: int) -> None:
        """Forget what commits up to oldest_snapshot kept: no snapshot is older."""
        log = self._log
        while log and log[0][0] <= oldest_snapshot:
            tid, oids, size = log.popleft()
            self.bytes -= size
            for oid in oids:
                versions = self._versions[oid]
                del versions[0]  # the oldest is this commit's: commits are noted in order
                if not versions:
                    del self._versions[oid]
