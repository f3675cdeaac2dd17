"""Checks shared by the tests of the persistent containers."""

from collections.abc import Callable

from durus.connection import Connection
from durus.storage import MemoryStorage


def stored(obj, key: str = "obj") -> Connection:
    """Commit obj as root[key] of a new in-memory database; obj is then saved."""
    connection = Connection(MemoryStorage())
    connection.get_root()[key] = obj
    connection.commit()
    assert obj._p_is_saved()
    return connection


def assert_change_committed(obj, mutate, contents) -> None:
    """mutate(obj) on a saved obj marks it changed, and commit() stores what
    it made: contents(obj) reads the same from a new connection."""
    connection = stored(obj)
    mutate(obj)
    assert obj._p_is_unsaved()
    expected = contents(obj)
    connection.commit()
    assert obj._p_is_saved()
    assert contents(Connection(connection.get_storage()).get_root()["obj"]) == expected


def assert_left_saved(obj, act) -> None:
    """act(obj) on a saved obj leaves it saved: it notes no change."""
    stored(obj)
    act(obj)
    assert obj._p_is_saved()


def outcome(action: Callable[[], object],
            normal: Callable[[object], object] = lambda result: result) -> tuple:
    """Return ('ok', normal(result)) or ('raised', exception class): what
    action did, to compare a container with the builtin it models; normal
    makes a result and its builtin counterpart compare equal."""
    try:
        result = action()
    except Exception as error:
        return ("raised", type(error))
    return ("ok", normal(result))
