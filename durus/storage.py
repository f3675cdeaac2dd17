"""The Storage interface a Connection uses, MemoryStorage, and storage-wide tools."""

import heapq
from typing import Any, Callable, Iterable, Iterator

from durus.error import DurusKeyError
from durus.record_format import split_oids, unpack_record
from durus.serialize import extract_class_name
from durus.utils import as_bytes, int8_to_str

ROOT_OID = int8_to_str(0)

# What end() calls with the oids others committed, to raise a ConflictError if
# this commit's reads depend on them.
InvalidationHandler = Callable[[list], None]


class Storage:
    """Abstract base of storages: a mapping from oid to record, changed by commits.

    A commit is begin(), store() for each record, then end(). Once close()d,
    every method but close() raises ValueError.
    """

    closed = False
    # Whether sync() can report commits of other clients: if not, no
    # conflict can arise, and a connection need not see which objects each
    # transaction reads (see Connection.commit).
    others_commit = True

    def __init__(self) -> None:
        raise RuntimeError("Storage is abstract")

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("operation on a closed storage: %s" % self)

    def load(self, oid: bytes) -> bytes:
        """Return the record of oid; raise DurusKeyError (a KeyError) if there is
        none, or ReadConflictError if oid changed since the last sync()."""
        raise NotImplementedError

    def begin(self) -> None:
        """Start collecting the records of a commit."""
        raise NotImplementedError

    def store(self, oid: bytes, record: bytes) -> None:
        """Add a record to the commit underway."""
        raise NotImplementedError

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        """Make the commit underway durable. May raise ConflictError;
        handle_invalidations(oids) is called first where others committed."""
        raise NotImplementedError

    def sync(self) -> list:
        """Return the oids whose cached state is obsolete since the last sync()."""
        raise NotImplementedError

    def new_oid(self) -> bytes:
        """Return an oid nobody uses or has been given."""
        raise NotImplementedError

    def release_oids(self, oids: Iterable[bytes]) -> None:
        """Take back oids from new_oid() that will never be committed (a
        server's client left without using them)."""
        self._check_open()

    def close(self) -> None:
        """Release the storage's resources; safe to repeat."""
        self.closed = True

    def get_packer(self) -> Iterator[Any] | None:
        """Return a generator that packs a step at a time, or None if not supported."""
        self._check_open()
        return None

    def pack(self) -> None:
        """Remove records not reachable from the root, if the storage can."""
        self._check_open()

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        """Yield the records of oids, in order."""
        self._check_open()
        return (self.load(oid) for oid in oids)

    def gen_oid_record(self, start_oid: bytes | None = None, batch_size: int = 100
                       ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (oid, record) for every object reachable from start_oid (the root
        by default), breadth first by oid, loading batch_size records at a time."""
        self._check_open()
        return _gen_reachable(self, start_oid or ROOT_OID, batch_size)


def _gen_reachable(storage, start_oid: bytes, batch_size: int):
    todo = [start_oid]
    seen = {start_oid}
    while todo:
        batch = [heapq.heappop(todo) for _ in range(min(batch_size, len(todo)))]
        for record in storage.bulk_load(batch):
            oid, _, refs = unpack_record(record)
            yield oid, record
            for ref in split_oids(refs):
                if ref not in seen:
                    seen.add(ref)
                    heapq.heappush(todo, ref)


def gen_referring_oid_record(storage: Storage, referred_oid: bytes
                             ) -> Iterator[tuple[bytes, bytes]]:
    """Yield (oid, record) of every object that references referred_oid."""
    for oid, record in storage.gen_oid_record():
        if referred_oid in split_oids(unpack_record(record)[2]):
            yield oid, record


def gen_oid_class(storage: Storage, *classes: str | bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield (oid, class name: bytes) of every object, or of those whose class
    name is in classes (given as str or bytes)."""
    names = {as_bytes(name) for name in classes}
    for oid, record in storage.gen_oid_record():
        class_name = extract_class_name(record)
        if not names or class_name in names:
            yield oid, class_name


def get_census(storage: Storage) -> dict:
    """Return {class name (bytes): number of instances}."""
    census: dict[bytes, int] = {}
    for _, class_name in gen_oid_class(storage):
        census[class_name] = census.get(class_name, 0) + 1
    return census


def get_reference_index(storage: Storage) -> dict:
    """Return {oid: [oids of the objects that reference it]}."""
    index: dict[bytes, list[bytes]] = {}
    for oid, record in storage.gen_oid_record():
        for ref in split_oids(unpack_record(record)[2]):
            index.setdefault(ref, []).append(oid)
    return index


class MemoryStorage(Storage):
    """A storage that keeps its records in a dict: for tests and scratch work."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.pending: dict[bytes, bytes] | None = None
        self.next_oid = 0

    def new_oid(self) -> bytes:
        self._check_open()
        oid = int8_to_str(self.next_oid)
        self.next_oid += 1
        return oid

    def load(self, oid: bytes) -> bytes:
        self._check_open()
        try:
            return self.records[oid]
        except KeyError:
            raise DurusKeyError(oid) from None

    def begin(self) -> None:
        self._check_open()
        self.pending = {}

    def store(self, oid: bytes, record: bytes) -> None:
        self._check_open()
        if self.pending is None:
            raise RuntimeError("store() called outside begin()/end()")
        self.pending[oid] = record

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        self._check_open()
        if self.pending is None:
            raise RuntimeError("end() called without begin()")
        self.records.update(self.pending)
        self.pending = None

    def sync(self) -> list:
        self._check_open()
        return []

    def __str__(self):
        return "MemoryStorage(%d records)" % len(self.records)
