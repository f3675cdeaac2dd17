"""RecordCache: records kept in memory by a storage that fetches them from
elsewhere (a server, a database), least recently used out first."""

from collections import OrderedDict
from typing import Iterable

from durus.record_format import split_oids, unpack_record


class RecordCache:
    """Records by oid, least recently used first, within max_bytes.

    A record stays valid until its storage learns that its oid changed (at a
    sync or a commit) and discards it, so every record served from here
    belongs to the state of the database as of the last sync: the snapshot
    the storage also answers loads from."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.records: OrderedDict[bytes, bytes] = OrderedDict()
        self.bytes = 0

    def get(self, oid: bytes) -> bytes | None:
        record = self.records.get(oid)
        if record is not None:
            self.records.move_to_end(oid)
        return record

    def put(self, oid: bytes, record: bytes) -> None:
        self.discard(oid)
        if len(record) > self.max_bytes // 4:
            return  # a huge record would push out everything else
        self.records[oid] = record
        self.bytes += len(record)
        while self.bytes > self.max_bytes:
            self.bytes -= len(self.records.popitem(last=False)[1])

    def discard(self, oid: bytes) -> None:
        record = self.records.pop(oid, None)
        if record is not None:
            self.bytes -= len(record)

    def discard_all(self, oids: Iterable[bytes]) -> None:
        for oid in oids:
            self.discard(oid)

    def clear(self) -> None:
        self.records.clear()
        self.bytes = 0


class ReadAheadQueue:
    """The oids that records a storage received refer to and that it has not
    got, in the order they came: what a reader walking the data asks for
    next. A miss on one of them is the sign of a walk, and the time to read
    ahead, in the same round trip, up to limit of those that came after it
    (its siblings, then their cousins); a miss on any other oid is a lookup.

    queued: {oid: None}, in order, at most size of them: when full, newer
    ones are not queued (a walk asks for the older first), except those of a
    record about to be used, which go first (see note_used).
    """

    def __init__(self, cache: RecordCache, limit: int, size: int) -> None:
        self.cache = cache
        self.limit = limit
        self.size = size
        self.queued: OrderedDict[bytes, None] = OrderedDict()

    def note(self, record: bytes) -> None:
        """Note a record the storage received (and cached)."""
        queued, cached = self.queued, self.cache.records
        oid, _, refs = unpack_record(record)
        queued.pop(oid, None)
        room = self.size - len(queued)
        for ref in split_oids(refs):
            if room <= 0:
                break
            if ref not in cached and ref not in queued:
                queued[ref] = None
                room -= 1

    def note_used(self, record: bytes) -> None:
        """Note a record about to be used (a cached one asked for): what it
        refers to and the cache lacks is what comes next, so it goes first in
        the queue, in order, even if that pushes the newest oids out."""
        queued, cached = self.queued, self.cache.records
        refs = [ref for ref in split_oids(unpack_record(record)[2]) if ref not in cached]
        for ref in reversed(refs[:self.size]):
            queued[ref] = None
            queued.move_to_end(ref, last=False)
        while len(queued) > self.size:
            queued.popitem()

    def wanted_after(self, oid: bytes) -> list:
        """Return up to limit uncached oids queued after oid, taken from the
        queue, if oid is queued; else []."""
        queued = self.queued
        if oid not in queued:
            return []
        cached, wanted, after = self.cache.records, [], False
        for ref in list(queued):
            if after and ref not in cached:
                wanted.append(ref)
                if len(wanted) == self.limit:
                    break
            after = after or ref == oid
        for ref in wanted:
            del queued[ref]
        del queued[oid]
        return wanted
