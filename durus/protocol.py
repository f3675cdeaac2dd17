"""The Durus storage-server protocol, version 1, as client and server speak it.

A client sends a command byte and its arguments; the server answers each
request in order:

    V int4 version      -> int4 version (the server's; it hangs up on a mismatch)
    N                   -> oid                        a new oid
    M n (1 byte)        -> n oids                     new oids
    L oid               -> status [int4 n, record]    load
                           (protocol 3: the record as of the snapshot: the
                           state when the client last synced or committed;
                           then int4 n, n bytes of records it refers to,
                           each int4 length + record, read ahead for the
                           client)
    B int4 n, n oids    -> n answers as for L         bulk load
    S                   -> int4 n, n oids             sync: invalidations
    C                   -> int4 n, n oids (invalidations), then the client
                           sends int4 size, payload (0: it gives up) and gets
                           a status (no status after 0)
    P                   -> status                     pack
    Q                   (no answer)                   stop the server
    .                   (no answer)                   goodbye

A commit payload is, for each record, int4 (8 + len(record)), oid, record.
"""

from typing import Iterable

from durus.record_format import check_record
from durus.utils import int4_to_str, join_bytes, str_to_int4

PROTOCOL = int4_to_str(1)
# Beyond Durus: protocol 1 with snapshot reads. A client asks for it with
# V 3; a server that has it answers 3, one that has not answers its own
# version and hangs up (as Durus 4.3 does), and the client connects again
# with V 1. A client that authenticates (durus.auth) sends V 3 after that.
SNAPSHOT_PROTOCOL = int4_to_str(3)

STATUS_OKAY = b"O"
STATUS_KEYERROR = b"K"
STATUS_INVALID = b"I"
# Beyond Durus: a commit refused outright (over the server's max_commit_size),
# followed by int4 n and n bytes of UTF-8 saying why; sent as soon as the
# commit's size is read, and the client is disconnected once it has gone.
STATUS_REFUSED = b"R"
# Protocol 3: a load whose snapshot has expired, followed by int4 n and n
# bytes of UTF-8 saying why.
STATUS_EXPIRED = b"E"

VERSION = b"V"
NEW_OID = b"N"
NEW_OIDS = b"M"
LOAD = b"L"
BULK_LOAD = b"B"
SYNC = b"S"
COMMIT = b"C"
PACK = b"P"
QUIT = b"Q"
GOODBYE = b"."

# Commands a read-only user may not send: they change the storage, or stop it.
CHANGING_COMMANDS = {NEW_OID: "new oid", NEW_OIDS: "new oids", COMMIT: "commit",
                     PACK: "pack", QUIT: "quit"}


def oid_list(oids: Iterable[bytes]) -> bytes:
    """Return the message int4 n + n oids (a sync's or a commit's invalidations)."""
    oids = list(oids)
    return int4_to_str(len(oids)) + join_bytes(oids)


def commit_payload(records: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Return the payload of a commit of [(oid, record)]."""
    return join_bytes(int4_to_str(8 + len(record)) + oid + record for oid, record in records)


def read_ahead_block(records: Iterable[bytes]) -> bytes:
    """Return the block that follows a protocol 3 load's answer: int4 n, then
    n bytes of records, each int4 length + record."""
    frames = join_bytes(int4_to_str(len(record)) + record for record in records)
    return int4_to_str(len(frames)) + frames


def split_read_ahead(frames: bytes) -> list[bytes]:
    """Return the records of a read-ahead block's n bytes."""
    records = []
    position = 0
    while position < len(frames):
        end = position + 4 + str_to_int4(frames[position:position + 4])
        records.append(frames[position + 4:end])
        position = end
    return records


def split_commit_payload(payload: bytes) -> list[tuple[bytes, bytes]]:
    """Return [(oid, record)] of a commit payload; raise ValueError, saying
    what is wrong, unless it is whole and each record is well formed."""
    records = []
    position = 0
    while position < len(payload):
        if len(payload) - position < 4:
            raise ValueError("commit payload ends inside a record length")
        end = position + 4 + str_to_int4(payload[position:position + 4])
        if end > len(payload):
            raise ValueError("commit payload ends inside a record")
        oid = payload[position + 4:position + 12]
        record = payload[position + 12:end]
        check_record(oid, record)
        records.append((oid, record))
        position = end
    return records
