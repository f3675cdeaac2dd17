"""Connection: moves persistent objects between a Storage and memory, in transactions."""

import numbers
import os
import random
import time
from collections import deque
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator, Sequence
from weakref import KeyedRef
from weakref import ref as weak_ref

from durus.error import (ConflictError, DurusKeyError, ReadConflictError, SnapshotExpiredError,
                         WriteConflictError)
from durus.persistent import (GHOST, SAVED, ConnectionBase, PersistentObject, cached_or_ghost,
                              persistent_class, watch)
from durus.persistent_dict import PersistentDict
from durus.serialize import ObjectReader, ObjectWriter, pack_record, unpack_record
from durus.storage import ROOT_OID, Storage
from durus.utils import as_bytes, byte_string, int8_to_str, str_to_int8

byte_string  # re-exported: a Durus 4.3 name of this module


# Seconds a connection to a new database waits for another client to create its root.
ROOT_WAIT = 10.0
# Rounds in which abort() forgets the changes that finalizers make while it runs.
_ABORT_ROUNDS = 4
# Seconds: run() pauses up to this, doubled at each try, before trying again.
_RETRY_PAUSE = 0.005


class Connection(ConnectionBase):
    """A cached, transactional view of the objects in a storage.

    Changes to persistent objects are noted as they happen; commit() stores
    them and abort() forgets them. Both then sync with the storage, making
    objects that others changed into ghosts, and shrink the cache.

    storage: Storage
    changed: {oid: PersistentObject}, objects changed in this transaction.
    invalid_oids: {oid}, oids found to conflict; abort() must clear them.
    """

    def __init__(self, storage: Storage | str, cache_size: int = 100000, root_class: type | None = None) -> None:
        """storage: a Storage, or the file name of a FileStorage.
        root_class: the class of the root object: it is created as
        root_class() in a new database and checked in an existing one."""
        if isinstance(storage, (str, os.PathLike)):
            from durus.file_storage import FileStorage
            storage = FileStorage(os.fspath(storage))
        if not isinstance(storage, Storage):
            raise TypeError("expected a Storage or a file name, got %r" % (storage,))
        self.storage = storage
        self.new_oid = storage.new_oid  # used by ObjectWriter
        self.cache = Cache(cache_size, self)
        self.reader = ObjectReader(self)
        self.changed: dict[bytes, PersistentObject] = {}
        self.invalid_oids: set[bytes] = set()
        # Set while oids a sync returned are being dealt with: if something
        # stops that half way (Ctrl-C), some may be lost, so the next sync
        # treats every cached object as invalid.
        self._invalidations_pending = False
        # New objects of a failed commit, until their undoing is complete.
        self._forgetting: Sequence[PersistentObject] = ()
        self._in_transaction_block = False
        self.root = self.get(ROOT_OID)
        if self.root is None:
            self.root = self._create_root(root_class or PersistentDict)
        if root_class is not None and persistent_class(self.root) is not root_class:
            raise TypeError("the root is a %s, not a %s"
                            % (persistent_class(self.root).__name__, root_class.__name__))

    def _create_root(self, root_class):
        oid = self.storage.new_oid()
        if oid != ROOT_OID:
            # Another client of the same new database got oid 0, and is
            # creating the root: wait for its commit.
            return self._wait_for_root(oid)
        root = self.cache.get_instance(ROOT_OID, root_class, self)
        root._p_set_status_saved()
        root_class.__init__(root)
        root._p_note_change()
        self.commit()
        return root

    def _wait_for_root(self, oid: bytes, seconds: float = ROOT_WAIT):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
            self.storage.sync()
            root = self.get(ROOT_OID)
            if root is not None:
                return root
        raise ValueError("the storage has no root object, and gave oid %d rather than 0 "
                         "for one: is another client creating it?" % str_to_int8(oid))

    def get_storage(self) -> Storage:
        return self.storage

    def get_cache(self) -> "Cache":
        return self.cache

    def get_cache_count(self) -> int:
        """Return the number of objects (ghosts included) in the cache."""
        return self.cache.get_count()

    def get_cache_size(self) -> float:
        """Return the target number of objects in the cache."""
        return self.cache.get_size()

    def set_cache_size(self, size: int) -> None:
        self.cache.set_size(size)

    def get_transaction_serial(self) -> int:
        """Return 1 + the number of commit() and abort() calls so far."""
        return self.transaction_serial

    def get_root(self) -> Any:
        return self.root

    def get_load_count(self) -> int:
        """Return how many times any object's state has been loaded."""
        return self.reader.get_load_count()

    def get_stored_pickle(self, oid: bytes) -> bytes:
        """Return the record data of oid from the storage.

        Raises DurusKeyError if there is none, ReadConflictError if oid was
        changed by another client and an object read in this transaction too.
        """
        if self.invalid_oids:
            raise ConflictError(sorted(self.invalid_oids))
        while True:
            try:
                record = self.storage.load(oid)
                break
            except ReadConflictError as refused:
                # Raises unless nothing this transaction used was changed;
                # then the load is tried again (others may commit oid meanwhile).
                oids = self._take_invalidations()
                try:
                    self._handle_invalidations(oids, read_oid=oid)
                except ConflictError as conflict:
                    self._invalidations_pending = False
                    if isinstance(refused, SnapshotExpiredError):
                        raise refused from conflict  # it says why
                    raise
                self._invalidations_pending = False
        record_oid, data, _ = unpack_record(record)
        if record_oid != oid:
            raise ValueError("storage returned the record of %r for %r" % (record_oid, oid))
        return data

    def get(self, oid: bytes | int) -> PersistentObject | None:
        """Return the object with this oid (bytes or int), or None if there is none."""
        if isinstance(oid, int):
            oid = int8_to_str(oid)
        elif not isinstance(oid, bytes) or len(oid) != 8:
            raise TypeError("an oid is an int or 8 bytes, not %r" % (oid,))
        obj = self.cache.get(oid)
        if obj is not None:
            return obj
        try:
            data = self.get_stored_pickle(oid)
        except DurusKeyError:
            return None
        return self._fill(self.cache.get_instance(oid, self.reader.get_class(data), self), data)

    __getitem__ = get

    def _fill(self, obj, data: bytes):
        """Set obj's state from record data, mark it saved, and hold it (as the
        least recently used) so that shrink_cache() can ghost it."""
        obj.__setstate__(self.reader.get_state(data))
        obj._p_set_status_saved()
        self.hold_loaded(obj)
        return obj

    def get_crawler(self, start_oid: bytes = ROOT_OID, batch_size: int = 100
                    ) -> Iterator[PersistentObject]:
        """Yield the objects reachable from start_oid, breadth first, with their
        states loaded batch_size records at a time: a fast way to fill the cache."""
        for oid, record in self.storage.gen_oid_record(start_oid=start_oid,
                                                       batch_size=batch_size):
            obj = self.cache.get(oid)
            if obj is None or obj._p_is_ghost():
                data = unpack_record(record)[1]
                if obj is None:
                    obj = self.cache.get_instance(oid, self.reader.get_class(data), self)
                self._fill(obj, data)
            yield obj

    def load_state(self, obj: PersistentObject) -> None:
        """Load the state of the ghost obj from the storage."""
        try:
            data = self.get_stored_pickle(obj._p_oid)
        except DurusKeyError:
            # The object was removed by a pack while this connection held its ghost.
            raise ReadConflictError([obj._p_oid]) from None
        obj.__setstate__(self.reader.get_state(data))

    def note_change(self, obj: PersistentObject) -> None:
        """Record that obj must be stored by the next commit()."""
        self.changed[obj._p_oid] = obj

    def shrink_cache(self) -> None:
        """Ghost least recently used objects until the cache is at its target size."""
        self.cache.shrink(self)

    def _take_invalidations(self) -> list:
        """Return storage.sync(): the oids others changed. The caller clears
        _invalidations_pending once it has dealt with them all."""
        if self._invalidations_pending:
            # The last ones may be lost: treat every cached object as changed.
            self._invalidations_pending = False
            try:
                self._handle_invalidations([obj._p_oid for obj in self.cache])
            except ConflictError:
                pass  # noted in invalid_oids: this transaction cannot commit
        self._invalidations_pending = True
        return self.storage.sync()

    def _sync(self) -> None:
        """Turn every object that others changed into a ghost."""
        self.invalid_oids.update(self._take_invalidations())
        for oid in self.invalid_oids:
            obj = self.cache.get(oid)
            if obj is not None:
                obj._p_set_status_ghost()
        self.invalid_oids.clear()
        self._invalidations_pending = False

    def abort(self) -> None:
        """Forget uncommitted changes, sync, and shrink the cache."""
        self._finish_forgetting()
        # Ghosting drops states, whose finalizers may change more objects:
        # those changes are forgotten too, for a few rounds (finalizers that
        # change each other's objects would go on for ever; what they change
        # after that stays noted, for the next commit).
        for _ in range(_ABORT_ROUNDS):
            for oid, obj in list(self.changed.items()):
                obj._p_set_status_ghost()
                self.changed.pop(oid, None)
        self._sync()
        self._end_transaction()

    def _end_transaction(self) -> None:
        """Shrink the cache and start a new transaction. Where other clients
        commit, what this one read is watched again, so that the next one
        sees its reads (a conflict is an object it read that another client
        changed); elsewhere objects stay unwatched across transactions."""
        self.shrink_cache()
        if self.storage.others_commit:
            self.watch_touched()
        self.transaction_serial += 1

    def commit(self) -> None:
        """Store the changes of this transaction, sync, and shrink the cache.

        Raises WriteConflictError if another client committed an object used
        in this transaction: then call abort() and retry the transaction.
        """
        self._finish_forgetting()
        if self.changed:
            if self.invalid_oids:
                raise ConflictError(sorted(self.invalid_oids))
            self._store_changes()
        else:
            self._sync()
        self._end_transaction()

    def _store_changes(self) -> None:
        """Write the changed objects and the new objects they reference as one
        transaction. On any failure, leave the changes pending as they were,
        and every object first met here without an oid, as it was."""
        saved = list(self.changed.values())
        writer = ObjectWriter(self)
        committed = False
        self.storage.begin()
        try:
            for obj in saved:
                self._store(writer, obj)
                # New objects in the order they were met, as Durus numbers them.
                found = deque(writer.take_new_objects())
                while found:
                    new = found.popleft()
                    self.cache[new._p_oid] = new
                    # Noted changed until marked saved: stored again if the
                    # commit is cut short once written.
                    self.changed[new._p_oid] = new
                    self._store(writer, new)
                    found.extend(writer.take_new_objects())
            self.storage.end(self._handle_invalidations)
            committed = True
            self._mark_saved(saved + writer.new_objects)
        except BaseException:
            if not committed:
                # Every object the writer gave an oid, stored yet or not.
                self._forgetting = writer.new_objects
                self._finish_forgetting()
            raise
        finally:
            writer.close()

    def _mark_saved(self, objects: list) -> None:
        """Mark the objects of a commit that reached the storage saved and no
        longer changed (each one left changed is stored again next time)."""
        for obj in objects:
            obj._p_set_status_saved()
            # The commit read it (held, as Durus holds it), and its next read
            # is seen: a new object has a connection now.
            watch(obj)
            self.note_access(obj)
            self.changed.pop(obj._p_oid, None)

    def _store(self, writer: ObjectWriter, obj) -> None:
        data, refs = writer.get_state(obj)
        self.storage.store(obj._p_oid, pack_record(obj._p_oid, data, refs))

    def _finish_forgetting(self) -> None:
        """Undo the oid assignment of the objects first met in a failed commit
        (every step is harmless to repeat, should this be stopped half way)."""
        for obj in self._forgetting:
            self.changed.pop(obj._p_oid, None)
            self.release(obj)
            self.cache.forget(obj)
            obj._p_oid = None
            obj._p_connection = None
        self._forgetting = ()

    def _handle_invalidations(self, oids, read_oid: bytes | None = None) -> None:
        """Ghost objects others changed; raise a conflict if any was used in this
        transaction (ReadConflictError if this happened while loading read_oid).
        An object read since the cache last looked at it (not watched) may
        have been read in this transaction: it counts as used."""
        conflicts = []
        for oid in oids:
            obj = self.cache.get(oid)
            if obj is None:
                continue
            if (obj._p_serial == self.transaction_serial or oid in self.changed
                    or persistent_class(obj) is type(obj)):
                conflicts.append(oid)
                self.invalid_oids.add(oid)
            elif obj._p_status != GHOST:
                obj._p_set_status_ghost()
        if conflicts:
            if read_oid is None:
                raise WriteConflictError(conflicts)
            raise ReadConflictError([read_oid])

    def pack(self) -> None:
        """Abort this transaction and remove unreachable objects from the storage."""
        self.abort()
        self.storage.pack()

    @contextmanager
    def transaction(self) -> Iterator["Connection"]:
        """`with connection.transaction(): ...` commits on a normal exit; on
        an exception, the commit's own included, it aborts and re-raises.
        Blocks do not nest (an inner commit would commit the outer block's
        changes too): a nested one raises RuntimeError."""
        if self._in_transaction_block:
            raise RuntimeError("connection.transaction() blocks (and run()) do not nest")
        self._in_transaction_block = True
        try:
            yield self
            self.commit()
        except BaseException:
            self.abort()
            raise
        finally:
            self._in_transaction_block = False

    def run(self, func: Callable, *args: Any, tries: int = 3, **kwargs: Any) -> Any:
        """Call func(*args, **kwargs) in a transaction and commit; on a
        ConflictError, abort and try again, up to tries times in all, after
        a short random pause. Return func's result; raise the last error."""
        if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
            raise ValueError("tries must be an int >= 1, not %r" % (tries,))
        for attempt in range(1, tries + 1):
            try:
                with self.transaction():
                    return func(*args, **kwargs)
            except ConflictError:
                if attempt == tries:
                    raise
                # Randomized, so that clients that collided do not collide again.
                time.sleep(random.uniform(0, _RETRY_PAUSE * 2 ** attempt))


class _OidRef(weak_ref):
    """A weak reference to an object that knows the oid it is filed under.
    Like weakref.KeyedRef, without its constructor written in Python (which
    cost about 0.3 us for every object loaded)."""

    __slots__ = ("key",)
    key: bytes


class Cache:
    """The objects of a connection, by oid, held weakly.

    The connection itself holds strong references to the objects used
    lately (see ConnectionBase), so that hot objects stay in memory;
    shrink() ghosts and lets go of the least recently used of them while
    the cache is beyond its target size.
    """

    def __init__(self, size: int, connection: ConnectionBase | None = None) -> None:
        """connection: the connection whose held objects recent_objects shows
        (Durus's name for them); without one it is a ReferenceContainer."""
        self.objects: dict[bytes, _OidRef] = {}
        self.recent_objects = (ReferenceContainer() if connection is None
                               else HeldObjects(connection))
        self.set_size(size)

    def get_size(self) -> float:
        return self.size

    def set_size(self, size: float) -> None:
        """size: a number > 0 (as in Durus, a float works too)."""
        if not isinstance(size, numbers.Real):
            raise TypeError("the cache size must be a number, not %r" % (size,))
        if not size > 0:
            raise ValueError("the cache size must be > 0, not %r" % (size,))
        self.size: float = size

    def get_count(self) -> int:
        return len(self.objects)

    def _remove_dead(self, ref: _OidRef) -> None:
        if self.objects.get(ref.key) is ref:
            del self.objects[ref.key]

    def get(self, oid: bytes) -> PersistentObject | None:
        ref = self.objects.get(oid)
        return None if ref is None else ref()

    def __setitem__(self, oid: bytes, obj) -> None:
        ref = _OidRef(obj, self._remove_dead)
        ref.key = oid
        self.objects[oid] = ref

    def __delitem__(self, oid: bytes) -> None:
        """Drop the object of oid from the cache and let go of it (as in
        Durus, nothing happens if there is none)."""
        obj = self.get(oid)
        if obj is not None:
            self.recent_objects.discard(obj)
            self.forget(obj)

    def forget(self, obj: PersistentObject) -> None:
        """Drop obj from the cache, if it is there."""
        if self.get(obj._p_oid) is obj:
            del self.objects[obj._p_oid]

    def get_instance(self, oid: bytes, cls: type, connection: "Connection") -> PersistentObject:
        """Return the cached object of oid if it is a cls, else a new ghost of cls."""
        return cached_or_ghost(self.objects, _OidRef, self._remove_dead, connection, (oid, cls))

    def loader(self, connection: "Connection") -> Callable[[tuple], PersistentObject]:
        """The persistent_load hook of connection's unpicklers: (oid, cls) ->
        get_instance(oid, cls, connection)."""
        return partial(cached_or_ghost, self.objects, _OidRef, self._remove_dead, connection)

    def __iter__(self):
        for ref in list(self.objects.values()):
            obj = ref()
            if obj is not None:
                yield obj

    def shrink(self, connection: "Connection") -> None:
        """While the cache is beyond its size, look at the oldest held object
        (a CLOCK): one read since it was last looked at (not watched) gets a
        second chance, watched again at the newest end; a watched one not used
        in the current transaction is ghosted (if saved) and let go of. The
        held list is ordered by _p_serial, so this ends at the first object
        stamped with the current transaction."""
        while len(self.objects) > self.size:
            if not self._let_go_of_oldest(connection):
                break

    @staticmethod
    def _let_go_of_oldest(connection) -> bool:
        """Look at the oldest held object, as shrink() says; False if none is
        older than the current transaction."""
        obj = connection.oldest_held()
        if obj is None or obj._p_serial == connection.transaction_serial:
            return False
        if persistent_class(obj) is type(obj):
            # Its reads since were not seen: it counts as used now, so that
            # what this transaction touched is never ghosted.
            watch(obj)
            connection.note_access(obj)
            return True
        if obj._p_status == SAVED:
            obj._p_set_status_ghost()
        connection.release(obj)
        return True


class HeldObjects:
    """The objects a connection holds strong references to, seen as Durus's
    Cache.recent_objects (a ReferenceContainer): add() holds an object,
    discard() lets go of it, so that only weak references may remain."""

    def __init__(self, connection: ConnectionBase) -> None:
        self.connection = connection

    def __len__(self):
        return self.connection.held_count()

    def add(self, obj: PersistentObject) -> None:
        """Hold obj (as the least recently used, if it was not held)."""
        self.connection.hold_loaded(obj)

    def discard(self, obj: PersistentObject) -> None:
        self.connection.release(obj)


class ReferenceContainer:
    """Strong references to objects, by identity (Durus's container of the
    recently used objects of a cache).

    map: {id(obj): obj}
    """

    def __init__(self) -> None:
        self.map: dict[int, Any] = {}

    def __len__(self):
        return len(self.map)

    def __contains__(self, obj) -> bool:
        return id(obj) in self.map

    def add(self, obj: PersistentObject) -> None:
        self.map[id(obj)] = obj

    def discard(self, obj: PersistentObject) -> None:
        self.map.pop(id(obj), None)


# The key of a weak reference in an ObjectDictionary that a newer value for
# its key replaced: its death must not mark that newer value dead.
_REPLACED = object()


class ObjectDictionary:
    """A mapping whose values are held weakly, as in Durus.

    A key whose value dies, or that is deleted, is only noted in `dead`, and
    removed from `mapping` when an iteration starts: a value dying while
    another thread walks `mapping` does not change its size.

    mapping: {key: weakref.KeyedRef}
    dead: {key}, keys of mapping that are no longer there.
    callback: called with a dead reference (anything with a `key`): notes
        its key dead. It holds the dictionary weakly.
    """

    def __init__(self) -> None:
        self.mapping: dict[Any, KeyedRef] = {}
        self.dead: set[Any] = set()
        self.callback = partial(_note_dead, weak_ref(self))

    def get(self, key: Any, default: Any = None) -> Any:
        ref = self.mapping.get(key)
        if ref is not None and key not in self.dead:
            value = ref()
            if value is not None:
                return value
        return default

    def __getitem__(self, key):
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value) -> None:
        old = self.mapping.get(key)
        if old is not None:
            old.key = _REPLACED
        self.mapping[key] = KeyedRef(value, self.callback, key)
        self.dead.discard(key)

    def __delitem__(self, key) -> None:
        if key not in self:
            raise KeyError(key)
        self.dead.add(key)

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __len__(self):
        return len(self.mapping) - len(self.dead)

    def clear_dead(self) -> None:
        """Remove the dead keys from mapping."""
        while self.dead:
            self.mapping.pop(self.dead.pop(), None)

    def __iter__(self):
        self.clear_dead()
        for key in list(self.mapping):
            if key not in self.dead:
                yield key


def _note_dead(dictionary_ref, value_ref) -> None:
    dictionary = dictionary_ref()
    key = value_ref.key
    if dictionary is not None and key is not _REPLACED and key in dictionary.mapping:
        dictionary.dead.add(key)


def touch_every_reference(connection: Connection, *words: str | bytes) -> None:
    """Mark changed every object whose record mentions one of words (str or
    bytes): after renaming a class, commit to rewrite every reference."""
    wanted = [as_bytes(word) for word in words]
    for oid, record in connection.get_storage().gen_oid_record():
        data = unpack_record(record)[1]
        state = connection.reader.get_state_pickle(data)
        if any(word in data or word in state for word in wanted):
            obj = connection.get(oid)
            assert obj is not None  # the storage just listed its record
            obj._p_note_change()


def gen_every_instance(connection: Connection, *classes: type) -> Iterator[PersistentObject]:
    """Yield every stored object that is an instance of one of classes."""
    for oid, record in connection.get_storage().gen_oid_record():
        if issubclass(connection.reader.get_class(unpack_record(record)[1]), classes):
            obj = connection.get(oid)
            assert obj is not None  # the storage just listed its record
            yield obj

