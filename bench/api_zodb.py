"""ZODB 6's API (FileStorage, or ZEO) for bench/workload.py."""

import transaction
from BTrees.OOBTree import OOBTree as BTree
from persistent import Persistent
from persistent.list import PersistentList as List
from persistent.mapping import PersistentMapping as Mapping
from ZODB import DB
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError

__all__ = ["BTree", "ConflictError", "Item", "List", "Mapping", "Session"]

# Big enough for every object of a run, as durus's default cache is.
CACHE_SIZE = 100000


class Item(Persistent):
    def __init__(self, n):
        self.n = n
        self.name = "item %d" % n


class Session:
    """A connection to a file (options: readonly) or a ZEO server (options: server)."""

    def __init__(self, db: str, options: dict):
        if options.get("server"):
            from ZEO.ClientStorage import ClientStorage
            host, port = options["server"].rsplit(":", 1)
            storage = ClientStorage((host, int(port)), wait_timeout=30)
        else:
            storage = FileStorage(db, read_only=bool(options.get("readonly")))
        self.database = DB(storage, cache_size=CACHE_SIZE)
        self.root = self.database.open().root()
        self.commit = transaction.commit
        self.abort = transaction.abort

    @staticmethod
    def ghost(obj) -> None:
        obj._p_invalidate()

    def pack(self) -> None:
        self.database.pack()

    def close(self) -> None:
        self.database.close()
