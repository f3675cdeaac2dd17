"""FileStorage: a Storage kept in one append-only SHELF-1 file."""

import os
import threading
import weakref
from logging import WARNING
from typing import Any, Iterable, Iterator

from durus.error import DurusKeyError, ReadOnlyError
from durus.file import File, WriterMark
from durus.logger import log
from durus.record_format import check_record, split_oids, unpack_record
from durus.shelf import PREFIX, Shelf, write_shelf
from durus.storage import ROOT_OID, InvalidationHandler, Storage
from durus.utils import str_to_int8


class FileStorage(Storage):
    """Objects in a file, one writer at a time.

    By default every commit is on disk (fsynced) when end() returns; pass
    fsync=False to trade that for speed during bulk loads (a crash may then
    lose the last commits, but never leaves a damaged transaction readable).

    While a writer has the file open, <filename>.writer marks it; a writer
    killed mid-commit leaves the mark and part of a transaction, and the next
    open then leaves that commit out (a writer also cuts it off, and logs it).

    shelf: Shelf, the open file.
    pending: {oid: record}, the commit underway.
    allocated: {oid}, oids handed out by new_oid() and not yet committed.
    invalid: {oid}, oids removed by a pack since the last sync().
    pack_extra: {oid} | None, oids committed while a pack runs.
    """

    # The file format: the class that opens a file (as Shelf(file, repair=,
    # writer_marked=)), and the generator that writes a new one from
    # (oid, record) pairs (as write_shelf).
    _format_class = Shelf
    _write_format = staticmethod(write_shelf)
    # sync() reports only what a pack removed: no other client commits here.
    others_commit = False

    def __init__(self, filename: str | File | None = None, readonly: bool = False,
                 repair: bool = False, fsync: bool = True) -> None:
        """filename: a path, an open durus.file.File (as Durus accepted; its
        own read-only flag then applies), or None for a temporary file."""
        if isinstance(filename, File):
            file, readonly = filename, filename.is_readonly()
        else:
            file = File(None if filename is None else os.fspath(filename), readonly=readonly)
        if readonly and repair:
            file.close()
            raise ValueError("repair needs write access: open without readonly")
        if not readonly:
            try:
                file.obtain_lock()  # before anything else: a second writer fails here
            except BaseException:
                file.close()
                raise
        mark = None if file.is_temporary() else WriterMark(file.get_name())
        writer_marked = mark is not None and mark.is_present()
        # A writer's mark: present from before its first write until it closes.
        self._mark = None if readonly else mark
        try:
            if self._mark is not None:
                self._place_mark(self._mark)
            self.shelf = self._format_class(file, repair=repair, writer_marked=writer_marked)
        except BaseException:
            if self._mark is not None and not writer_marked:
                self._mark.remove()
            file.close()  # at once: a retry with repair=True needs the lock
            raise
        self.fsync = fsync
        # Held by make_durable() and by a pack while it switches files.
        self._switch_lock = threading.Lock()
        # Held by a commit while it writes, so that close() waits for it.
        self._commit_lock = threading.RLock()
        self.pending: dict[bytes, bytes] = {}
        self.allocated: set[bytes] = set()
        self.invalid: set[bytes] = set()
        self.pack_extra: set[bytes] | None = None
        # Called as pack_observer(removed oids, load) just before a pack makes
        # them go, with load(oid) -> record still working (a server keeps
        # what its clients' snapshots may need).
        self.pack_observer = None
        self._packer: Any = None  # weak reference to the generator of the pack underway

    def _place_mark(self, mark: WriterMark) -> None:
        """Place the writer's mark, or do without it (as Durus does) where it cannot be made."""
        try:
            mark.place()
        except OSError as exc:
            log(WARNING, "cannot make %s (%s): if this writer stops in the middle of a "
                "commit, the file will need repair", mark.path, exc)
            self._mark = None

    @classmethod
    def has_format(cls, file: File) -> bool:
        """Tell whether file starts like a SHELF-1 file."""
        return file.pread(len(PREFIX), 0) == PREFIX

    def get_filename(self) -> str:
        return self.shelf.file.get_name()

    def is_readonly(self) -> bool:
        return self.shelf.file.is_readonly()

    # The file's state: Storage's attribute, which its close() sets, is not used.
    @property
    def closed(self) -> bool:  # type: ignore[override]
        return self.shelf.file.closed

    def _check_open(self) -> None:
        # Called for every record stored: the shortest way to the answer.
        if self.shelf.file.closed:
            super()._check_open()

    def _check_writable(self) -> None:
        file = self.shelf.file
        if file.closed:
            super()._check_open()
        if file.readonly:
            raise ReadOnlyError("%s is read-only" % self)

    def load(self, oid: bytes) -> bytes:
        record = self.shelf.get_record(oid)
        if record is None:
            raise DurusKeyError(oid)
        return record

    def begin(self) -> None:
        self._check_open()
        self.pending = {}

    def store(self, oid: bytes, record: bytes) -> None:
        self._check_open()
        check_record(oid, record)
        if oid not in self.allocated and oid not in self.shelf and oid != ROOT_OID:
            raise ValueError("oid %r was never allocated by this storage" % (oid,))
        self.pending[oid] = record

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        self._check_writable()
        # The commit is over even if writing fails (a retry begins anew), so
        # that it does not hold up a pack.
        pending, self.pending = self.pending, {}
        if self.pack_extra is not None:
            # Before the append, so that nothing can stop the pack from
            # hearing of a commit that is written (oids of one that fails
            # have no record, and the pack passes over them).
            self.pack_extra.update(pending)
        with self._commit_lock:
            self.shelf.append(pending.items(), fsync=self.fsync)
        self.allocated.difference_update(pending)

    def make_durable(self) -> None:
        """Fsync the file: every commit ended so far is on disk when this
        returns. Another thread may call it while commits go on (a storage
        server does, to make many commits durable with one fsync)."""
        with self._switch_lock:
            self.shelf.file.fsync()

    def sync(self) -> list:
        self._check_open()
        invalid = list(self.invalid)
        self.invalid.clear()
        return invalid

    def new_oid(self) -> bytes:
        self._check_writable()
        while True:
            oid = self.shelf.next_free_oid()
            if oid not in self.allocated and oid not in self.invalid:
                self.allocated.add(oid)
                return oid

    def release_oids(self, oids: Iterable[bytes]) -> None:
        # Forgotten, so that they cost no memory; a pack makes them free again.
        self._check_open()
        self.allocated.difference_update(oids)

    def gen_oid_record(self, start_oid: bytes | None = None, batch_size: int = 100
                       ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (oid, record): for every record in the file when start_oid is
        None (unreachable ones included), else for those reachable from it."""
        self._check_open()
        if start_oid is None:
            return ((oid, self.load(oid)) for oid in self.shelf.gen_oids())
        return self._gen_reachable(start_oid, set())

    def _gen_reachable(self, start_oid: bytes, seen: set, skip_missing: bool = False):
        """Yield (oid, record) reachable from start_oid and not in seen (which grows).

        With skip_missing, a reference to an oid that has no record (left by a
        client that committed a dangling reference) is logged and passed over,
        rather than raising DurusKeyError: so that one bad record cannot stop
        every pack.
        """
        todo = [start_oid]
        while todo:
            oid = todo.pop()
            if oid in seen:
                continue
            seen.add(oid)
            try:
                record = self.load(oid)
            except DurusKeyError:
                if not skip_missing or oid == start_oid:
                    raise
                log(WARNING, "Pack: oid %d is referenced but has no record; skipped",
                    str_to_int8(oid))
                continue
            yield oid, record
            todo.extend(split_oids(unpack_record(record)[2]))

    def get_packer(self) -> Iterator[Any]:
        """Return a generator that packs the file a step at a time.

        It writes the records reachable from the root to <name>.pack, then
        the records of commits made meanwhile, keeps the old file as
        <name>.prepack and renames the new one to <name>. Temporary and read-only
        files, and storages in a commit or pack, are not packed.
        """
        self._check_open()
        file = self.shelf.file
        if self.pending or self.pack_extra is not None or file.is_temporary() or file.is_readonly():
            return iter(())
        self.pack_extra = set()
        packer = self._pack_steps()
        # Weak: a packer its caller abandons is collected, and its cleanup runs.
        self._packer = weakref.ref(packer)
        return packer

    def _pack_steps(self):
        name = self.get_filename()
        new_file = None
        switched = False
        try:
            new_file = File(name + ".pack")
            new_file.truncate(0)
            seen = set()
            yield from self._write_format(new_file, self._gen_reachable(ROOT_OID, seen, True))
            new_shelf = self._format_class(new_file)
            # No yield from here on: commits must not slip in while we switch.
            seen.difference_update(self.pack_extra)
            extra = {}
            for oid in self.pack_extra:
                if oid in self.shelf:
                    extra.update(self._gen_reachable(oid, seen, True))
            if extra:
                new_shelf.append(extra.items())
            old_shelf = self.shelf
            removed = [oid for oid in old_shelf.gen_oids() if oid not in new_shelf]
            if self.pack_observer is not None and removed:
                self.pack_observer(removed, self.load)
            with self._switch_lock:
                try:
                    _switch_files(old_shelf.file, new_file, name)
                finally:
                    # Whatever stopped the switch (a failed directory fsync,
                    # Ctrl-C), the storage goes on with the file at name.
                    if new_file.is_at(name):
                        self.shelf = new_shelf
                        switched = True
                        self.invalid.update(removed)
        finally:
            self.pack_extra = None
            if switched:
                old_shelf.close()
            else:
                # The pack failed or was abandoned: give back its file's space
                # (it may have failed for want of it) and descriptor.
                if new_file is not None:
                    new_file.close()
                try:
                    os.unlink(name + ".pack")
                except OSError:
                    pass
        yield "packed"

    def pack(self) -> None:
        for _ in self.get_packer():
            pass

    def close(self) -> None:
        """Close the file (once a commit under way in another thread ends)."""
        packer = self._packer and self._packer()
        self._packer = None
        if packer is not None:
            try:
                packer.close()  # an unfinished pack removes its file
            except ValueError:
                pass  # running in another thread: its next step fails, and cleans up
        with self._commit_lock, self._switch_lock:
            try:
                if not self.shelf.closed and self.shelf.ends_cleanly():
                    self.shelf.save_index()
                    if self._mark is not None:
                        self._mark.remove()  # while still holding the lock
            finally:
                self._mark = None
                self.shelf.close()

    def __str__(self):
        return "%s(%r)" % (type(self).__name__, self.get_filename())


def _switch_files(old: File, new: File, name: str) -> None:
    """Put new at name, keeping old as name.prepack.

    The old file stays at name until the new one atomically replaces it, so
    that a crash in between finds a whole database there rather than none;
    it is kept as .prepack by a hard link, or where there are none, by a
    rename that is undone if the new file cannot take its place.
    """
    try:
        old.link(name + ".prepack")
    except OSError:  # no hard links on this file system
        old.rename(name + ".prepack")
        try:
            new.rename(name)
        except BaseException:
            old.rename(name)
            raise
    else:
        new.rename(name)


def TempFileStorage() -> FileStorage:
    """A FileStorage on a temporary file that is removed when closed."""
    return FileStorage()
