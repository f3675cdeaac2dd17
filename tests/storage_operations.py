"""The FileStorage operations that write to disk, each on a bank file: what
the crash-point and write-order tests run, and what each may leave behind.

An Operation's prepare(path) makes its starting file, run(path) does the
work (a commit, a pack with commits during and after it, creating a file,
repairing a torn one), and check(path) returns the bank's transfer count
after verifying the file, which must be in `outcomes` whenever the run was
cut short. A run cut short leaves the writer's mark, so the file opens
without repair.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bank
from durus.connection import Connection
from durus.file_storage import FileStorage

PREPARED_TRANSFERS = 20


@dataclass(frozen=True)
class Operation:
    name: str
    prepare: Callable[[Path], None]
    run: Callable[[Path], None]
    outcomes: frozenset

    def check(self, path: Path) -> int | None:
        """Verify the file, as the next writer opens it (None if the bank was
        never created); return its transfer count."""
        storage = FileStorage(str(path))
        try:
            root = Connection(storage).get_root()
            if "accounts" not in root:
                return None
            return bank.check_snapshot(root)[0]
        finally:
            storage.close()


def transfers(path: Path, count: int) -> None:
    storage = FileStorage(str(path))
    connection = Connection(storage)
    for _ in range(count):
        bank.apply_transfer(connection.get_root(), 0)
        connection.commit()
    storage.close()


def prepare_bank(path: Path) -> None:
    bank.create_file(path)
    transfers(path, PREPARED_TRANSFERS)


def prepare_torn(path: Path) -> None:
    """A bank whose last transfer was cut off in the middle of its write."""
    prepare_bank(path)
    size = path.stat().st_size
    transfers(path, 1)
    os.truncate(path, (size + path.stat().st_size) // 2)


def pack_with_commits(path: Path) -> None:
    storage = FileStorage(str(path))
    connection = Connection(storage)
    packer = storage.get_packer()
    next(packer)
    bank.apply_transfer(connection.get_root(), 0)
    connection.commit()  # lands in the old file, then is copied to the new one
    for _ in packer:
        pass
    bank.apply_transfer(connection.get_root(), 0)
    connection.commit()
    storage.close()


def create(path: Path) -> None:
    bank.create_file(path)
    transfers(path, 1)


def repair(path: Path) -> None:
    FileStorage(str(path), repair=True).close()
    transfers(path, 1)


OPERATIONS = [
    Operation("commit", prepare_bank, lambda path: transfers(path, 1),
              frozenset({20, 21})),
    Operation("pack", prepare_bank, pack_with_commits, frozenset({20, 21, 22})),
    Operation("create", lambda path: None, create, frozenset({None, 0, 1})),
    Operation("repair", prepare_torn, repair, frozenset({20, 21})),
]
