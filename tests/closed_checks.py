"""Checking that a closed object (a storage, shelf or file) refuses every
public method with ValueError and touches no descriptor; the
descriptor_calls fixture (through pytest_plugins in conftest) records the
os calls on descriptors."""

import os
from collections.abc import Iterator

import pytest

from durus.serialize import pack_record
from durus.utils import int8_to_str

ROOT_OID = int8_to_str(0)
RECORD = pack_record(ROOT_OID, b"data", b"")
# What each public method is called with after close().
ARGUMENTS = {
    "load": (ROOT_OID,), "begin": (), "store": (ROOT_OID, RECORD), "end": (), "sync": (),
    "new_oid": (), "release_oids": ([ROOT_OID],), "get_packer": (), "pack": (),
    "bulk_load": ([ROOT_OID],), "gen_oid_record": (), "make_durable": (), "stop_server": (),
    # Shelf and File
    "get_position": (ROOT_OID,), "get_value": (ROOT_OID,), "read_record": (16,),
    "gen_oids": (), "gen_free_oids": (), "next_free_oid": (), "append": ([(ROOT_OID, RECORD)],),
    "save_index": (),
    "ends_cleanly": (), "size": (), "pread": (8, 0), "pwrite": (b"x", 0), "truncate": (0,),
    "fsync": (), "rename": ("elsewhere",), "link": ("elsewhere",), "is_at": ("elsewhere",),
    # Durus's Shelf and File API
    "get_record": (ROOT_OID,), "iterindex": (), "items": (), "iteritems": (), "next_name": (),
    "obtain_lock": (), "release_lock": (), "seek": (0,),
    "seek_end": (), "tell": (), "read": (), "write": (b"x",), "flush": (), "stat": (),
    "get_offset_map": (),
    # Relational storages, for durus convert and info
    "count_objects": (), "skip_stored_oids": (), "query": ("SELECT 1",), "has_commit_log": (),
}
# Shelf.store is Durus's: it takes (oid, record) pairs.
SHELF_ARGUMENTS = {**ARGUMENTS, "store": ([(ROOT_OID, RECORD)],)}
# Methods that only report what the object was, and close() itself.
STILL_ANSWERED = {"close", "get_filename", "is_readonly", "get_name", "is_temporary",
                  "is_readonly", "has_format", "get_file"}

DESCRIPTOR_CALLS = ("pread", "pwrite", "fstat", "ftruncate", "fdatasync", "fsync", "read",
                    "write", "lseek")


@pytest.fixture
def descriptor_calls(monkeypatch):
    """A list that records every call of an os function that acts on a descriptor."""
    calls = []
    for name in DESCRIPTOR_CALLS:
        real = getattr(os, name)

        def traced(*args, _name=name, _real=real):
            calls.append((_name, args[0]))
            return _real(*args)
        monkeypatch.setattr(os, name, traced)
    return calls


def public_methods(obj) -> list:
    return sorted(name for name in dir(obj)
                  if not name.startswith("_") and callable(getattr(obj, name)))


def check_every_method_refused(obj, descriptor_calls: list, arguments: dict = ARGUMENTS) -> None:
    descriptor_calls.clear()
    for name in public_methods(obj):
        if name in STILL_ANSWERED:
            continue
        assert name in arguments, "%s.%s: give it arguments in ARGUMENTS" % (
            type(obj).__name__, name)
        with pytest.raises(ValueError, match="closed"):
            result = getattr(obj, name)(*arguments[name])
            if isinstance(result, Iterator):
                next(result)
    assert obj.closed
    obj.close()  # again: nothing happens
    assert descriptor_calls == []
