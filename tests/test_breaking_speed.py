"""Defects a hostile pass found in the second speed wave (issue 16): the
watched twins, the class pickle written once per writer, the C BTree walks,
the relational read-ahead and the mapped shelf index. Each test fails
until its defect is fixed; run in both modes like the whole suite."""

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.serialize import ObjectWriter
from durus.storage import MemoryStorage


class Outer:
    """A nested persistent class: protocol 2 pickles it as getattr(Outer,
    'Inner'), a class pickle that puts four objects in the memo, not one."""

    class Inner(Persistent):
        def __init__(self):
            self.kind = Outer.Inner


def test_a_nested_class_referred_to_in_a_state_loads_back_as_itself(tmp_path):
    """The second object of a nested class that one commit writes refers to
    its class through memo index 0, which the replayed class pickle left
    out: loaded, its `kind` is the builtin getattr (Durus 4.3 gives the class)."""
    path = str(tmp_path / "nested.durus")
    connection = Connection(FileStorage(path))
    connection.get_root()["first"] = Outer.Inner()
    connection.get_root()["second"] = Outer.Inner()
    connection.commit()
    connection.get_storage().close()
    root = Connection(FileStorage(path, readonly=True)).get_root()
    assert root["first"].kind is Outer.Inner
    assert root["second"].kind is Outer.Inner


def test_a_nested_class_record_is_the_same_written_first_or_second():
    """Durus 4.3 clears the memo and pickles the class anew for each object:
    a record must not depend on what the same writer wrote before it."""
    connection = Connection(MemoryStorage())
    first, second = Outer.Inner(), Outer.Inner()
    connection.get_root()["objects"] = [first, second]
    connection.commit()
    alone = ObjectWriter(connection)
    expected = alone.get_state(second)
    alone.close()
    after_another = ObjectWriter(connection)
    after_another.get_state(first)
    assert after_another.get_state(second) == expected
    after_another.close()
