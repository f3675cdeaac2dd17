"""Reading every record of a storage of any kind, where it lies, for the
tools that look inside databases (info, verify) and for pack's progress.

Each kind is reached where its records are: a file format through its open
reader (FileStorage.shelf: a Shelf or a Dfs20File), a relational storage
through its own connection and snapshot, a server (ClientStorage) by walking
from the root, the only records its protocol can list.
"""

from collections.abc import Iterator
from typing import Any, cast

from durus.error import CorruptFileError
from durus.file_storage import FileStorage
from durus.record_format import pack_record, unpack_record
from durus.relational import RelationalStorage
from durus.serialize import extract_class_name
from durus.storage import Storage
from durus.utils import int8_to_str

SERVER = "server"


def storage_format(storage: Storage) -> str:
    """The name of storage's format: SHELF-1, DFS20, SQLite, PostgreSQL or server."""
    from durus.file_storage2 import FileStorage2
    from durus.file_storage import FileStorage
    from durus.postgres_storage import PostgresStorage
    from durus.sqlite_storage import SqliteStorage
    kinds = ((FileStorage2, "DFS20"), (FileStorage, "SHELF-1"), (SqliteStorage, "SQLite"),
             (PostgresStorage, "PostgreSQL"))
    return next((name for cls, name in kinds if isinstance(storage, cls)), SERVER)


def is_file_format(storage: Storage) -> bool:
    """Tell whether storage is a file format we read directly (SHELF-1, DFS20)."""
    return storage_format(storage) in ("SHELF-1", "DFS20")


def is_relational(storage: Storage) -> bool:
    return storage_format(storage) in ("SQLite", "PostgreSQL")


def file_storage(storage: Storage) -> FileStorage:
    """storage, which is_file_format(), as the FileStorage it is."""
    return cast(FileStorage, storage)


def relational(storage: Storage) -> RelationalStorage:
    """storage, which is_relational(), as the RelationalStorage it is."""
    return cast(RelationalStorage, storage)


def query(storage: Storage, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list:
    """Rows of sql ('?' parameters) run in a relational storage's snapshot."""
    return relational(storage).query(sql, params)


def class_name(record: bytes) -> str:
    """The module and name of the class of a record ('module.Class'), read
    from its class pickle without importing it (the name alone, or '?', when
    that pickle is not in the usual form)."""
    data = unpack_record(record)[1]
    if data.startswith(b"\x80\x02c"):
        module, _, rest = data[3:].partition(b"\n")
        name = rest.partition(b"\n")[0]
        if name:
            return (module + b"." + name).decode("utf-8", "replace")
    return extract_class_name(record).decode("utf-8", "replace")


def located_oids(storage: Storage) -> Iterator[tuple[bytes, int | None]]:
    """Yield (oid, byte offset of its record or None) for every record of a
    file or relational storage, unreachable ones included."""
    if is_file_format(storage):
        reader = file_storage(storage).shelf
        if hasattr(reader, "iterindex"):  # a Shelf: the packed records are in its map
            yield from reader.iterindex()
        else:
            for number, position in reader.index.items():
                yield int8_to_str(number), position
    else:
        for (number,) in query(storage, "SELECT id FROM objects ORDER BY id"):
            yield int8_to_str(number), None


def record_total(storage: Storage) -> int | None:
    """The number of records in storage, if it can tell without reading them."""
    if is_file_format(storage):
        return sum(1 for _ in located_oids(storage))
    if is_relational(storage):
        return query(storage, "SELECT count(*) FROM objects")[0][0]
    return None


def gen_records(storage: Storage) -> Iterator[tuple[bytes, int | None, bytes | CorruptFileError]]:
    """Yield (oid, offset or None, record) for every record of storage (of a
    server: every one the root reaches); a record the file's index points to
    but cannot be read comes as the CorruptFileError that says why."""
    if is_file_format(storage):
        for oid, position in located_oids(storage):
            try:
                yield oid, position, storage.load(oid)
            except CorruptFileError as error:
                yield oid, position, error
    elif is_relational(storage):
        for number, data, refs in query(storage, "SELECT id, data, refs FROM objects ORDER BY id"):
            oid = int8_to_str(number)
            yield oid, None, pack_record(oid, bytes(data), bytes(refs))
    else:
        for oid, record in storage.gen_oid_record():
            yield oid, None, record


def pack_with_progress(storage: Storage) -> None:
    """Pack storage a step at a time, showing the records it has read (of
    how many, where the storage can tell) on a terminal, or in log lines."""
    from durus.tools.progress import progress
    packer = storage.get_packer()
    if packer is None:  # a server packs on its side, in one request
        with progress("pack", None, "requests") as advance:
            storage.pack()
            advance(1)
        return
    if not is_file_format(storage):
        with progress("pack", None, "steps") as advance:
            for _ in packer:
                advance(1)
        return
    # A file's pack reads each record it keeps through load(): counting
    # those calls measures it in records, whatever units its steps have
    # (an instance attribute over the method while the pack runs).
    load = storage.load
    with progress("pack", record_total(storage), "records") as advance:
        def counting_load(oid: bytes) -> bytes:
            advance(1)
            return load(oid)
        storage.load = counting_load  # type: ignore[method-assign]
        try:
            for _ in packer:
                pass
        finally:
            del storage.load
