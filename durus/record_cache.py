"""RecordCache: records kept in memory by a storage that fetches them from
elsewhere (a server, a database), least recently used out first."""

from collections import OrderedDict
from typing import Container, Iterable

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


class ReadAhead:
    """The records a storage read ahead of use, and what to read next.

    A reader that uses a record read ahead has started on what was read with
    it (the next level of a tree, a container's items): the time to read
    ahead, in one request, what all of those refer to, up to limit records.
    frontier: {oid}, records read ahead and not used yet.
    """

    def __init__(self, cache: RecordCache, limit: int) -> None:
        self.cache = cache
        self.limit = limit
        self.frontier: set[bytes] = set()

    def take_wanted(self, skip: Container[bytes] = ()) -> list:
        """Return up to limit oids, not cached and not in skip, that the
        frontier's records refer to; the frontier is then empty."""
        frontier, self.frontier = self.frontier, set()
        cached = self.cache.records
        wanted: dict[bytes, None] = {}  # ordered, without repeats
        for oid in frontier:
            record = cached.get(oid)
            if record is not None:
                wanted.update((ref, None) for ref in split_oids(unpack_record(record)[2])
                              if ref not in cached and ref not in skip)
            if len(wanted) >= self.limit:
                break
        return list(wanted)[:self.limit]


class ReadAheadQueue:
    """The oids that records a storage received refer to and that it has not
    got, in the order they came: what a reader walking the data asks for
    next. A miss on one of them is the sign of a walk, and the time to read
    ahead, in the same round trip, up to limit of those that came after it
    (its siblings, then their cousins); a miss on any other oid is a lookup.

    queued: {oid: None}, in order, at most size of them: when full, newer
    ones are not queued (a walk asks for the older first).
    """

    def __init__(self, cache: RecordCache, limit: int, size: int) -> None:
        self.cache = cache
        self.limit = limit
        self.size = size
        self.queued: dict[bytes, None] = {}

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
