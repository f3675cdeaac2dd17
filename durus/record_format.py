"""The shape of a record, as every storage keeps it and the protocol carries it.

record = oid (8 bytes) + int4 n + n bytes of data + refs
refs   = the oids the object references, 8 bytes each

Each file format frames records its own way (durus.shelf, durus.file_storage2);
all of them, the relational storages and the server check a record's shape
here, with one strictness.
"""

from durus.utils import int4_to_str, str_to_int4

# oid + int4: the shortest record (no data, no refs).
MIN_RECORD_LENGTH = 12


def pack_record(oid: bytes, data: bytes, refs: bytes) -> bytes:
    """Return the record for an object."""
    return b"".join((oid, int4_to_str(len(data)), data, refs))


def unpack_record(record: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (oid, data, refs) of a record."""
    data_end = 12 + str_to_int4(record[8:12])
    return record[:8], record[12:data_end], record[data_end:]


def split_oids(s: bytes) -> list[bytes]:
    """Split a concatenation of 8-byte oids into a list."""
    if len(s) % 8:
        raise ValueError("oid list of %d bytes is not a multiple of 8" % len(s))
    return [s[i:i + 8] for i in range(0, len(s), 8)]


def is_record_shape(length: int, data_length: int) -> bool:
    """Tell whether a record of length bytes whose int4 says data_length is
    whole: long enough for its head and data, then whole oids."""
    refs_length = length - MIN_RECORD_LENGTH - data_length
    return refs_length >= 0 and refs_length % 8 == 0


def check_record(oid: bytes, record: bytes) -> None:
    """Raise ValueError unless record is bytes shaped as a record of oid."""
    if (not isinstance(record, bytes) or len(record) < MIN_RECORD_LENGTH or record[:8] != oid
            or not is_record_shape(len(record), str_to_int4(record[8:12]))):
        raise ValueError("malformed record for oid %r" % (oid,))
