"""The Durus API for bench/workload.py: this durus and durus 4.3 alike."""

from durus.btree import BTree
from durus.connection import Connection
from durus.error import ConflictError
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.persistent_dict import PersistentDict as Mapping
from durus.persistent_list import PersistentList as List

__all__ = ["BTree", "ConflictError", "Item", "List", "Mapping", "Session", "open_storage",
           "range_items"]


class Item(Persistent):
    def __init__(self, n):
        self.n = n
        self.name = "item %d" % n


def range_items(tree, low, high):
    """The (key, value) items of tree with low <= key < high, ascending."""
    return tree.items_range(low, high)


def open_storage(db: str, options: dict):
    """The storage a Session on db with options uses, not yet read from."""
    if options.get("server"):
        from durus.client_storage import ClientStorage
        host, port = options["server"].rsplit(":", 1)
        storage = ClientStorage(host=host, port=int(port))
    elif options.get("sqlite"):
        from durus.sqlite_storage import SqliteStorage
        storage = SqliteStorage(options["sqlite"], readonly=bool(options.get("readonly")))
    elif options.get("postgres"):
        from durus.postgres_storage import PostgresStorage
        storage = PostgresStorage(options["postgres"], readonly=bool(options.get("readonly")))
    else:
        storage_options = {"readonly": True} if options.get("readonly") else {}
        if options.get("nofsync"):
            storage_options["fsync"] = False
        storage = FileStorage(db, **storage_options)
    return storage


class Session:
    """A connection to a file (options: nofsync, readonly), a server (options:
    server), an SQLite file (options: sqlite, its path) or a PostgreSQL
    database (options: postgres, its DSN)."""

    def __init__(self, db: str, options: dict):
        storage = open_storage(db, options)
        self.storage = storage
        self.connection = Connection(storage)
        self.root = self.connection.get_root()
        self.commit = self.connection.commit
        self.abort = self.connection.abort

    @staticmethod
    def ghost(obj) -> None:
        obj._p_set_status_ghost()

    def pack(self) -> None:
        self.connection.pack()

    def close(self) -> None:
        self.connection.get_storage().close()
