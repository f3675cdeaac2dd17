"""A model shared by our durus and the real Durus 4.3 in interop tests.

Each process imports this module under its own `durus` package, so the
classes pickle under the same names on both sides.
"""

import json

from durus.btree import BTree
from durus.persistent import Persistent, PersistentObject
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet

BTREE_KEYS = 10000


class Person(Persistent):
    def __init__(self, name, age):
        self.name = name
        self.age = age
        self.friends = PersistentList()


class Point(PersistentObject):
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y


def populate(root, tag: str) -> None:
    """Fill root with every kind of container and a user class."""
    alice, bob = Person("alice", 31), Person("bob", 42)
    alice.friends.append(bob)
    bob.friends.append(alice)  # a cycle
    root["tag"] = tag
    root["people"] = PersistentDict(alice=alice, bob=bob)
    root["list"] = PersistentList([1, "two", 3.0, (4, 5), b"six", None, alice])
    root["set"] = PersistentSet(["x", "y", 7, frozenset([1, 2])])
    tree = root["tree"] = BTree()
    for i in range(BTREE_KEYS):
        tree[(i * 7919) % BTREE_KEYS] = "v%d" % i
    root["points"] = PersistentList(Point(i, -i) for i in range(50))
    root["plain"] = {"nested": [1, {2: 3}], "unicode": "h\u00e9llo \u2603"}


def mutate(root, tag: str) -> None:
    """A second, later transaction's changes."""
    root["people"]["bob"].age += 1
    root["list"].append(tag)
    root["set"].discard("x")
    tree = root["tree"]
    for i in range(0, BTREE_KEYS, 3):
        if i in tree:
            del tree[i]
    tree[-1] = tag
    del root["points"][10:]
    root["garbage_gone"] = True


def summarize(root) -> str:
    """A canonical JSON description of everything populate/mutate wrote."""
    people = root["people"]
    tree = root["tree"]
    alice = people["alice"]
    summary = {
        "tag": root["tag"],
        "people": sorted((p.name, p.age, [f.name for f in p.friends]) for p in people.values()),
        "cycle": alice.friends[0].friends[0] is alice,
        "list": repr(list(root["list"])[:6]),
        "list_tail": repr(list(root["list"])[7:]),
        "list_alice": root["list"][6] is alice,
        "set": sorted(map(repr, root["set"])),
        "tree_len": len(tree),
        "tree_first": list(tree.items_from(tree.get_min_item()[0]))[:5],
        "tree_max": list(tree.get_max_item()),
        "tree_keys_sorted": list(tree.keys()) == sorted(tree.keys()),
        "tree_checksum": sum(k * len(v) for k, v in tree.items() if isinstance(v, str)),
        "points": [(p.x, p.y) for p in root["points"]],
        "plain": root["plain"],
        "garbage_gone": root.get("garbage_gone", False),
    }
    return json.dumps(summary, sort_keys=True, default=repr)
