"""Show a database's format, size, objects, transactions and census (objects and bytes by class).

durus info TARGET [--json]: TARGET is a storage file of any format, a
postgresql:// URI or durus://HOST:PORT (a running server, whose census then
counts the objects the root reaches). Opens the target read-only and
changes nothing.
"""

import argparse
import json
import os
import struct
import sys
from datetime import datetime, timezone

from durus.error import CorruptFileError
from durus.storage import Storage
from durus.tools.records import (SERVER, class_name, file_storage, gen_records, query, relational,
                                 storage_format)
from durus.tools.target import open_target

_INT8 = struct.Struct(">Q")
FILE_TIME = "file modification time: the format records no commit times"
LOG_TIME = "the commit log, durus_log"


def main(argv: list) -> None:
    parser = argparse.ArgumentParser(prog="durus info", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="A storage file, postgresql:// URI or durus://HOST:PORT.")
    parser.add_argument("--json", action="store_true", help="Print the facts as one JSON object.")
    options = parser.parse_args(argv)
    storage = open_target(options.target)
    try:
        facts = get_info(storage, options.target)
    finally:
        storage.close()
    if options.json:
        json.dump(facts, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_info(facts)


def get_info(storage: Storage, target: str) -> dict:
    """Return the facts `durus info` shows about storage, opened from target:
    {target, format, size_bytes, size_source, objects, transactions,
    transactions_counted, last_commit (ISO 8601, UTC, or None),
    last_commit_source, census: [{class, objects, bytes}] by bytes, largest first}."""
    kind = storage_format(storage)
    census: dict[str, list[int]] = {}
    for _, _, record in gen_records(storage):
        if isinstance(record, CorruptFileError):
            name, size = "<unreadable record>", 0
        else:
            name, size = class_name(record), len(record)
        counts = census.setdefault(name, [0, 0])
        counts[0] += 1
        counts[1] += size
    rows = [{"class": name, "objects": n, "bytes": size}
            for name, (n, size) in sorted(census.items(), key=lambda item: (-item[1][1], item[0]))]
    size, size_source = _size(storage, target, rows)
    transactions, counted = _transactions(storage)
    when, when_source = _last_commit(storage, target)
    return {
        "target": storage.get_filename() if hasattr(storage, "get_filename") else target,
        "format": kind,
        "size_bytes": size,
        "size_source": size_source,
        "objects": sum(row["objects"] for row in rows),
        "transactions": transactions,
        "transactions_counted": counted,
        "last_commit": None if when is None else
        datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds"),
        "last_commit_source": when_source,
        "census": rows,
    }


def _size(storage: Storage, target: str, rows: list) -> tuple[int, str]:
    kind = storage_format(storage)
    if kind == "PostgreSQL":
        (size,) = query(storage, "SELECT pg_total_relation_size('objects') + "
                        "coalesce(pg_total_relation_size(to_regclass('durus_log')), 0) + "
                        "coalesce(pg_total_relation_size(to_regclass('durus_meta')), 0)")[0]
        return size, "PostgreSQL's size of the tables and their indexes"
    if kind == SERVER:
        return sum(row["bytes"] for row in rows), "the records' bytes"
    if kind == "SQLite":
        wal = target + "-wal"
        extra = os.path.getsize(wal) if os.path.exists(wal) else 0
        return os.path.getsize(target) + extra, "the file's size with its write-ahead log's"
    return os.path.getsize(target), "the file's size"


def _transactions(storage: Storage) -> tuple[int | None, str]:
    """(how many, what was counted) of the transactions since the last pack."""
    kind = storage_format(storage)
    if kind == "SHELF-1":
        return _shelf_transactions(file_storage(storage).shelf), "transactions since the last pack"
    if kind == "DFS20":
        return _dfs20_transactions(file_storage(storage).shelf), "transactions since the last pack"
    if kind == SERVER:
        return None, "not known through a server"
    if not relational(storage).has_commit_log():
        return None, "no commit log (a database only Durus 4.3 wrote)"
    (count,) = query(storage, "SELECT count(*) FROM durus_log")[0]
    return count, ("commits in the log: a pack keeps the last hour's, and logs its "
                   "removals as commits")


def _shelf_transactions(shelf) -> int:
    """Transactions after the offset map, which a pack (or creation) writes
    after the records it keeps: each is an int8 length and that many bytes."""
    count, position = 0, shelf.map_end
    while position < shelf.end:
        position += 8 + _INT8.unpack(shelf.file.pread(8, position))[0]
        count += 1
    return count


def _dfs20_transactions(dfs20) -> int:
    """Transactions after the index record, which a pack (or creation) writes
    after the records it keeps; counted in chunks by the format's own scanner."""
    from durus.file_storage2 import MAGIC, scan_transactions
    read = dfs20.file.pread
    index_start = _INT8.unpack(read(8, len(MAGIC)))[0]
    position = index_start + 8 + _INT8.unpack(read(8, index_start))[0]
    count, wanted = 0, 1 << 22
    while position < dfs20.end:
        buffer = read(min(wanted, dfs20.end - position), position)
        end, _, _, bounds, _, _ = scan_transactions(buffer, position, -1)
        count += len(bounds)
        position += end
        # A transaction longer than the chunk: read all of it next time.
        wanted = 1 << 22 if end else 2 * wanted
    return count


def _last_commit(storage: Storage, target: str) -> tuple[float | None, str]:
    kind = storage_format(storage)
    if kind == SERVER:
        return None, "not known through a server"
    if kind in ("SQLite", "PostgreSQL") and relational(storage).has_commit_log():
        (when,) = query(storage, "SELECT max(committed) FROM durus_log")[0]
        if when is not None:
            return when, LOG_TIME
    if kind == "PostgreSQL":
        return None, "no commit in the log"
    if kind == "SQLite":
        wal = target + "-wal"
        return max(os.path.getmtime(path) for path in (target, wal)
                   if os.path.exists(path)), FILE_TIME
    return os.path.getmtime(target), FILE_TIME


def print_info(facts: dict) -> None:
    """Print facts (from get_info) as a summary and a census table (rich)."""
    from rich.console import Console
    from rich.table import Table
    console = Console(markup=False, highlight=False)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    transactions = facts["transactions"]
    lines = [
        ("target", facts["target"]),
        ("format", facts["format"]),
        ("size", "%s bytes (%s)" % (format(facts["size_bytes"], ","), facts["size_source"])),
        ("objects", format(facts["objects"], ",")),
        ("transactions", "%s (%s)" % ("?" if transactions is None else format(transactions, ","),
                                      facts["transactions_counted"])),
        ("last commit", "%s (%s)" % (facts["last_commit"] or "?", facts["last_commit_source"])),
    ]
    for name, value in lines:
        summary.add_row(name, value)
    console.print(summary)
    census = Table(title="Census: objects and bytes by class")
    census.add_column("class")
    census.add_column("objects", justify="right")
    census.add_column("bytes", justify="right")
    for row in facts["census"]:
        census.add_row(row["class"], format(row["objects"], ","), format(row["bytes"], ","))
    console.print(census)
