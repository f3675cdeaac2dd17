"""ZODB 6's API (FileStorage, or ZEO) for bench/workload.py."""

import transaction
from BTrees.OOBTree import OOBTree as BTree
from persistent import Persistent
from persistent.list import PersistentList as List
from persistent.mapping import PersistentMapping as Mapping
from ZODB import DB
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError

__all__ = ["BTree", "ConflictError", "Item", "List", "Mapping", "Session", "range_items"]

# Big enough for every object of a run, as durus's default cache is.
CACHE_SIZE = 100000


class Item(Persistent):
    def __init__(self, n):
        self.n = n
        self.name = "item %d" % n


def range_items(tree, low, high):
    """The (key, value) items of tree with low <= key < high, ascending."""
    return tree.items(low, high, excludemax=True)


def _relstorage(dsn: str, read_only: bool):
    from relstorage.adapters.postgresql import PostgreSQLAdapter
    from relstorage.options import Options
    from relstorage.storage import RelStorage
    # A local record cache as large as durus's (64 MB), history-free as ours is.
    options = Options(keep_history=False, read_only=read_only, cache_local_mb=64)
    return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options), options=options)


class Session:
    """A connection to a file (options: readonly), a ZEO server (options:
    server) or RelStorage, history-free, on PostgreSQL (options: relstorage,
    a libpq DSN)."""

    def __init__(self, db: str, options: dict):
        if options.get("relstorage"):
            storage = _relstorage(options["relstorage"], bool(options.get("readonly")))
        elif options.get("server"):
            from ZEO.ClientStorage import ClientStorage
            host, port = options["server"].rsplit(":", 1)
            storage = ClientStorage((host, int(port)), wait_timeout=30)
        else:
            storage = FileStorage(db, read_only=bool(options.get("readonly")))
        self.storage = storage
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
