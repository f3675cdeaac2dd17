"""A database's life at the scale users run, checked object by object
against a dict after every step: adds, changes, objects unreferenced and
replaced, packs (some while commits go on), reopens.

Lifecycle(path, seed).run(objects, steps) drives one FileStorage file (or
the database open_storage() opens, if given):
root["items"] is a BTree of Item objects, each one record; the model is
{key: value}. Used by test_lifecycle.py (CI) and the soak runs (2,000,000
objects).
"""

import random
from pathlib import Path

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent

BATCH = 20_000
# Objects loaded by a check before the connection lets the cache shrink.
CHECK_CHUNK = 100_000


class Item(Persistent):
    def __init__(self, value):
        self.value = value


class Lifecycle:
    """One file, its model, and the steps that change both."""

    def __init__(self, path: Path, seed: int, open_storage=None):
        self.path = str(path)
        self.open_storage = open_storage or (lambda: FileStorage(self.path))
        self.rng = random.Random(seed)
        self.model = {}
        self.next_key = 0
        self.version = 0
        self.counts = {}
        self.connection = None
        self._open()
        self.root["items"] = BTree()
        self.connection.commit()

    @property
    def root(self):
        return self.connection.get_root()

    @property
    def tree(self) -> BTree:
        return self.root["items"]

    def _open(self) -> None:
        self.connection = Connection(self.open_storage())

    def _value(self) -> str:
        self.version += 1
        return "v%d" % self.version

    def _some_keys(self, count: int) -> list:
        return self.rng.sample(sorted(self.model), min(count, len(self.model)))

    # Steps: each ends with a commit (or a reopen), then the check.

    def add(self, count: int) -> None:
        tree = self.tree
        for key in range(self.next_key, self.next_key + count):
            tree[key] = Item(value := self._value())
            self.model[key] = value
            if (key + 1) % BATCH == 0:
                self.connection.commit()
        self.next_key += count
        self.connection.commit()

    def change(self, count: int) -> None:
        tree = self.tree
        for key in self._some_keys(count):
            tree[key].value = self.model[key] = self._value()
        self.connection.commit()

    def unreference(self, count: int) -> None:
        tree = self.tree
        for key in self._some_keys(count):
            del tree[key]
            del self.model[key]
        self.connection.commit()

    def replace(self, count: int) -> None:
        """New objects under existing keys: the old ones become garbage."""
        tree = self.tree
        for key in self._some_keys(count):
            tree[key] = Item(value := self._value())
            self.model[key] = value
        self.connection.commit()

    def pack(self) -> None:
        self.connection.pack()

    def pack_during_commits(self) -> None:
        """A pack a step at a time, with commits of every kind between its steps."""
        self.connection.abort()
        packer = self.connection.get_storage().get_packer()
        small = max(1, len(self.model) // 50)
        steps = [lambda: self.add(small), lambda: self.change(small),
                 lambda: self.unreference(small), lambda: self.replace(small)]
        for _ in packer:
            if steps and self.rng.random() < 0.5:
                steps.pop(self.rng.randrange(len(steps)))()
        for commit in steps:
            commit()

    def reopen(self) -> None:
        self.connection.get_storage().close()
        self._open()

    def check(self) -> None:
        """Every object the tree reaches holds the model's value, and no other is there."""
        found = {}
        for i, (key, item) in enumerate(self.tree.items()):
            found[key] = item.value
            if i % CHECK_CHUNK == CHECK_CHUNK - 1:
                self.connection.abort()  # lets the cache shrink
        assert len(found) == len(self.model)
        mismatched = [key for key, value in self.model.items() if found.get(key) != value]
        assert not mismatched, "%d objects differ from the model, first %r: %r, not %r" % (
            len(mismatched), mismatched[0], found.get(mismatched[0]), self.model[mismatched[0]])
        self.connection.abort()

    def run(self, objects: int, steps: int) -> dict:
        """Add objects, then take steps random steps (each kind at least once
        if steps allow), checking after each; return how many of each ran."""
        self.add(objects)
        self.check()
        self.reopen()
        self.check()
        small = max(1, objects // 20)
        choices = [("add", lambda: self.add(small)), ("change", lambda: self.change(small)),
                   ("unreference", lambda: self.unreference(small)),
                   ("replace", lambda: self.replace(small)), ("pack", self.pack),
                   ("pack during commits", self.pack_during_commits), ("reopen", self.reopen)]
        sequence = self.rng.sample(choices, len(choices))
        sequence += [self.rng.choice(choices) for _ in range(steps - len(sequence))]
        for name, step in sequence[:steps]:
            step()
            self.counts[name] = self.counts.get(name, 0) + 1
            self.check()
        self.pack()
        self.reopen()
        self.check()
        return self.counts

    def close(self) -> None:
        self.connection.get_storage().close()
