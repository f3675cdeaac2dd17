"""The watched-twin bookkeeping and the CLOCK cache against a model: random
reads, writes, new objects, commits, aborts, explicit shrinks and reopens on
a real file with a small cache, every object's value checked against the
model after each step, and the invariant that a ghost is always watched and
an object of its own class is never a ghost. Run in both modes like the
whole suite."""

import gc
import tempfile
from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import GHOST, Persistent, persistent_class, watched_class
from durus.persistent_dict import PersistentDict

KEYS = st.integers(0, 30)
CACHE_SIZE = 4
VALUES = st.integers(-1000, 1000)


class Box(Persistent):
    def __init__(self, value):
        self.value = value


class CacheModel(RuleBasedStateMachine):
    """One connection on a file, its cache of 4 objects far smaller than
    what the steps touch; the model is {key: value} committed and pending."""

    def __init__(self):
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.path = str(Path(self.folder.name) / "model.durus")
        self.connection = Connection(FileStorage(self.path), cache_size=CACHE_SIZE)
        self.connection.get_root()["boxes"] = PersistentDict()
        self.connection.commit()
        self.committed: dict = {}
        self.pending: dict = {}

    def boxes(self):
        return self.connection.get_root()["boxes"]

    @rule(key=KEYS, value=VALUES)
    def put(self, key, value):
        if key in self.pending:
            self.boxes()[key].value = value
        else:
            self.boxes()[key] = Box(value)
        self.pending[key] = value

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def read(self, data):
        key = data.draw(st.sampled_from(sorted(self.pending)))
        assert self.boxes()[key].value == self.pending[key]

    @rule()
    def commit(self):
        self.connection.commit()
        self.committed = dict(self.pending)

    @rule()
    def abort(self):
        self.connection.abort()
        self.pending = dict(self.committed)

    @rule()
    def settle(self):
        """Transactions that read nothing: the first ends the one that read
        (what it used is kept), the next watches what is left unwatched (a
        second chance), the third lets the cache down to its size."""
        self.commit()
        self.connection.commit()
        self.connection.commit()
        gc.collect()  # what was let go of counts until freed, which a cycle may delay
        assert self.connection.get_cache_count() <= CACHE_SIZE

    @rule()
    def shrink(self):
        self.connection.shrink_cache()

    @rule()
    def reopen(self):
        self.connection.abort()
        self.connection.get_storage().close()
        self.connection = Connection(FileStorage(self.path), cache_size=CACHE_SIZE)
        self.pending = dict(self.committed)

    @invariant()
    def ghosts_are_watched_and_the_cache_is_bounded(self):
        for obj in self.connection.get_cache():
            cls = persistent_class(obj)
            if obj._p_status == GHOST:
                assert type(obj) is watched_class(cls)
            assert type(obj) in (cls, watched_class(cls))
        # The cache holds at most its size beyond what this transaction touched.
        assert self.connection.get_cache_count() <= CACHE_SIZE + len(self.pending) + 2

    @invariant()
    def every_value_is_the_model_s(self):
        boxes = self.boxes()
        assert sorted(boxes.keys()) == sorted(self.pending)
        for key, value in self.pending.items():
            assert boxes[key].value == value

    def teardown(self):
        self.connection.get_storage().close()
        self.folder.cleanup()


CacheModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_the_cache_and_watched_objects_follow_the_model = CacheModel.TestCase
