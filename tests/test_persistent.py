"""Persistent objects: status changes, ghosts, change tracking, slots, ComputedAttribute."""

import pytest

from durus.connection import Connection
from durus.persistent import (GHOST, SAVED, UNSAVED, ComputedAttribute, Persistent,
                              PersistentObject, call_if_persistent)
from durus.storage import MemoryStorage
from durus.utils import int8_to_str


class Point(Persistent):
    def __init__(self, x=0, y=0):
        self.x = x
        self.y = y


class Slotted(PersistentObject):
    __slots__ = ("a", "b")


class SlottedChild(Slotted):
    __slots__ = ("c",)


@pytest.fixture
def connection():
    return Connection(MemoryStorage())


def test_new_object_is_unsaved_without_oid_or_connection():
    p = Point()
    assert p._p_status == UNSAVED and p._p_is_unsaved()
    assert p._p_oid is None and p._p_connection is None and p._p_serial == 0
    assert repr(p).startswith("<Point @")


def test_status_constants_match_durus():
    assert (UNSAVED, SAVED, GHOST) == (1, 0, -1)


def test_commit_saves_and_change_marks_unsaved(connection):
    root = connection.get_root()
    p = root["p"] = Point(1, 2)
    connection.commit()
    assert p._p_is_saved() and p._p_oid is not None and p._p_connection is connection
    assert repr(p) == "<Point %s>" % p._p_format_oid()
    p.x = 5
    assert p._p_is_unsaved()
    assert connection.changed[p._p_oid] is p


def test_delattr_notes_change(connection):
    p = connection.get_root()["p"] = Point()
    connection.commit()
    del p.y
    assert p._p_is_unsaved() and not hasattr(p, "y")
    connection.commit()
    assert not hasattr(Connection(connection.get_storage()).get_root()["p"], "y")


def test_ghost_loads_on_attribute_access(connection):
    p = connection.get_root()["p"] = Point(3, 4)
    connection.commit()
    p._p_set_status_ghost()
    assert p._p_is_ghost()
    assert object.__getattribute__(p, "__dict__") == {}
    repr(p)  # repr never loads
    assert p._p_is_ghost()
    assert p.x == 3
    assert p._p_is_saved() and p.y == 4


def test_abort_reverts_changes(connection):
    p = connection.get_root()["p"] = Point(1, 1)
    connection.commit()
    p.x = 99
    connection.abort()
    assert p.x == 1


def test_access_records_transaction_serial(connection):
    p = connection.get_root()["p"] = Point()
    connection.commit()
    serial = connection.get_transaction_serial()
    assert p._p_serial != serial
    p.x
    assert p._p_serial == serial


def test_slots_state_is_filled_slots_only(connection):
    s = SlottedChild()
    s.a = 1
    s.c = 3
    assert s.__getstate__() == {"a": 1, "c": 3}
    connection.get_root()["s"] = s
    connection.commit()
    s2 = Connection(connection.get_storage()).get_root()["s"]
    assert (s2.a, s2.c) == (1, 3) and not hasattr(s2, "b")
    s._p_set_status_ghost()
    assert not hasattr(s, "b") and s.a == 1


def test_setting_p_attributes_does_not_note_change(connection):
    p = connection.get_root()["p"] = Point()
    connection.commit()
    p._p_serial = 12
    assert p._p_is_saved()


def test_computed_attribute_caches_and_invalidates(connection):
    root = connection.get_root()
    root["c"] = ComputedAttribute()
    connection.commit()
    calls = []
    c = root["c"]
    assert c.get(lambda: calls.append(1) or 42) == 42
    assert c.get(lambda: calls.append(1) or 43) == 42
    assert calls == [1] and c._p_is_saved()
    c.invalidate()
    assert c._p_is_unsaved()
    assert c.get(lambda: 7) == 7
    assert c.__getstate__() is None


def test_call_if_persistent():
    assert call_if_persistent(lambda x: "yes", Point()) == "yes"
    assert call_if_persistent(lambda x: "yes", object()) is None


def test_format_oid(connection):
    assert connection.get_root()._p_format_oid() == "0"
    assert connection.get_root()._p_oid == int8_to_str(0)


def test_format_oid_of_unstored_and_str_oids():
    p = Point()
    assert p._p_format_oid() == "None"
    p._p_oid = "\0" * 7 + "\xff"  # Durus lets a str stand for the oid's latin-1 bytes
    assert p._p_format_oid() == "255"
    p._p_oid = int8_to_str(2 ** 40)
    assert p._p_format_oid() == str(2 ** 40) and repr(p) == "<Point %d>" % 2 ** 40
