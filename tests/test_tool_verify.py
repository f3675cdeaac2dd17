"""durus verify through its command line, on healthy databases of every kind
and on ones damaged in each way it claims to detect."""

import io
import os
import pickle
import re
import sqlite3
import threading

import pytest

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.record_format import pack_record, unpack_record
from durus.serialize import _class_pickle_length
from durus.utils import int8_to_str, str_to_int8

import server_processes
from readme import shell_commands
from tool_databases import KINDS, database, run_tool  # noqa: F401

servers = server_processes.servers  # the fixture, for the tests here


def verify(target: str, *options: str):
    done = run_tool("verify", target, *options)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize("database", KINDS, indirect=True)
def test_a_healthy_database_of_20000_objects_passes(database):
    target = database.fill(20000)
    done = verify(target)
    assert done.returncode == 0, done.stdout + done.stderr
    (checked,) = re.findall(r"(\d+) records checked in [\d.]+ s: healthy, 0 unreachable",
                            done.stdout)
    assert int(checked) > 20002  # the items, the tree's nodes, root and extra
    assert "error" not in done.stdout


def _hand_made_record(oid: bytes, referenced: bytes) -> bytes:
    """The record of a PersistentDict whose state references the object of
    oid referenced, pickled as a connection's writer does."""
    class Reference:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return (referenced, PersistentDict) if isinstance(obj, Reference) else None
    buffer = io.BytesIO()
    pickler = Pickler(buffer, 2)
    pickler.dump(PersistentDict)
    pickler.dump({"data": {"child": Reference()}})
    return pack_record(oid, buffer.getvalue(), referenced)


@pytest.mark.parametrize("database", KINDS, indirect=True)
def test_a_dangling_reference_is_an_error_naming_both_oids(database):
    target = database.fill()
    storage = database.open()
    try:
        oid, missing = storage.new_oid(), storage.new_oid()  # missing is never stored
        storage.begin()
        storage.store(oid, _hand_made_record(oid, missing))
        storage.end()
    finally:
        storage.close()
    done = verify(target)
    assert done.returncode == 1
    line = "oid %d.*: references oid %d, which has no record" % (str_to_int8(oid),
                                                                   str_to_int8(missing))
    assert re.search("^error: " + line, done.stdout, re.M), done.stdout
    # The record is reached by nothing either: a warning, listed by oid.
    assert re.search(r"^warning: 1 objects are not reachable .*: oids %d$" % str_to_int8(oid),
                     done.stdout, re.M), done.stdout
