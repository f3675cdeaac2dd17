"""BTree: a persistent mapping that keeps its keys in order.

The tree is a classic B-tree (Cormen et al., "Introduction to Algorithms",
ch. 18) of persistent BNodes, so a change rewrites only the nodes it
touches. A node of minimum degree t holds at most 2t - 1 items, sorted
(key, value) tuples, and each node but the root at least t - 1; the
children of an internal node separate its items' keys.

Keys only need to be ordered by < and ==, not hashable. Nodes are searched
by bisection on their items' keys. Attribute reads of persistent objects
are costly in pure Python, so the hot paths read node.items and node.nodes
once per node, into locals.
"""

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, MutableMapping
from operator import itemgetter
from typing import Any, ClassVar

from durus.accelerator import accelerate
from durus.persistent import PersistentObject, persistent_class

_key_of = itemgetter(0)


def _first_position(items: list) -> int:
    return 0


def _ascending(node, start_position=_first_position):
    """Yield the items under node in ascending key order.

    start_position(items) -> int picks where to start in each node on the
    way down to the first item; everything after it follows.
    """
    # Each entry (items, nodes, i): nodes[i] is done, items[i] comes next.
    path = []
    position = start_position
    while True:
        while True:
            items = node.items
            nodes = node.nodes
            i = position(items)
            if nodes is None:
                break
            path.append((items, nodes, i))
            node = nodes[i]
        yield from (items[i:] if i else items)
        position = _first_position
        while path:
            items, nodes, i = path.pop()
            if i < len(items):
                yield items[i]
                path.append((items, nodes, i + 1))
                node = nodes[i + 1]
                break
        else:
            return


def _descending(node, start_position=len):
    """Yield the items under node in descending key order.

    start_position(items) -> int picks, in each node on the way down to the
    first item, the number of its items not to skip; everything after follows.
    """
    # Each entry (items, nodes, i): nodes[i] is done, items[i - 1] comes next.
    path = []
    position = start_position
    while True:
        while True:
            items = node.items
            nodes = node.nodes
            i = position(items)
            if nodes is None:
                break
            path.append((items, nodes, i))
            node = nodes[i]
        yield from reversed(items[:i])
        position = len
        while path:
            items, nodes, i = path.pop()
            if i:
                i -= 1
                yield items[i]
                path.append((items, nodes, i))
                node = nodes[i]
                break
        else:
            return


# What _walk generates of each item.
ITEM, KEY, VALUE = 0, 1, 2


def _walk(node, descending: bool | None, start: tuple | None, part: int, end: tuple | None):
    """Generate the items under node (or their keys or values: part) in key
    order, or descending. start is None (from the first item) or
    (key, closed): from key, the item with key itself walked if closed. end
    is None or (key, closed): up to key, the item with key walked if closed.
    descending None: ascending if start's key <= end's key, decided at the
    first step."""
    if part not in (ITEM, KEY, VALUE):
        raise ValueError("_walk() part must be 0, 1 or 2, not %r" % (part,))
    if descending is None:
        if start is None or end is None:
            raise TypeError("_walk() needs a start and an end to choose the direction")
        return _walk_range(node, start, part, end)
    if start is None:
        position = len if descending else _first_position
    else:
        # Ascending, a closed start begins at its key; descending, just after it.
        position = _position_of(start[0], after=bool(start[1]) == descending)
    steps = (_descending if descending else _ascending)(node, position)
    if end is not None:
        steps = _until(steps, end[0], bool(end[1]), descending)
    return steps if part == ITEM else map(itemgetter(part - 1), steps)


def _walk_range(node, start: tuple, part: int, end: tuple):
    yield from _walk(node, not start[0] <= end[0], start, part, end)


def _until(steps, end, closed: bool, descending: bool):
    """The items of steps up to the key end (and at it, if closed)."""
    for item in steps:
        key = item[0]
        if not ((end < key if descending else key < end) or (closed and key == end)):
            return
        yield item


def _every_node(node: "BNode"):
    """Generate node and every node below it, in no particular order."""
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        nodes = node.nodes
        if nodes is not None:
            stack.extend(nodes)


def _position_of(key, after: bool):
    """Return a start_position function: the index of the first item whose
    key is > key (if after is true) or >= key (if not)."""
    bisect = bisect_right if after else bisect_left

    def position(items: list) -> int:
        return bisect(items, key, key=_key_of)

    return position


def _insert(node: "BNode", items: list, item: tuple, full: int):
    """Add item under node, replacing the item with an equal key, if any.

    items is node.items, which must be shorter than full, the size of a
    full node (all the nodes of a tree are of one class).
    """
    key = item[0]
    while True:
        i = bisect_left(items, key, key=_key_of)
        if i < len(items) and items[i][0] == key:
            items[i] = item
            node._p_note_change()
            return
        nodes = node.nodes
        if nodes is None:
            items.insert(i, item)
            node._p_note_change()
            return
        child = nodes[i]
        child_items = child.items
        if len(child_items) == full:
            # Splitting full nodes on the way down leaves room for the item.
            # The child's median moved up into items[i]: look at node again.
            node.split_child(i, child)
            continue
        node = child
        items = child_items


def _search(node: "BNode", key):
    """Return the (key, value) item with this key under node, or None."""
    while True:
        items = node.items
        i = bisect_left(items, key, key=_key_of)
        if i < len(items) and items[i][0] == key:
            return items[i]
        nodes = node.nodes
        if nodes is None:
            return None
        node = nodes[i]


def _tree_add(tree: "BTree", key, value=True):
    """BTree.add: set tree[key] = value; with the default value, use the tree as a set."""
    root = tree.root
    items = root.items
    full = 2 * root.minimum_degree - 1
    if len(items) == full:
        # The tree grows at the top: a new root above the old one split in two.
        new_root = persistent_class(root)()
        new_root.nodes = [root]
        new_root.split_child(0, root)
        tree.root = root = new_root
        items = root.items
    _insert(root, items, (key, value), full)


def _tree_setitem(tree: "BTree", key, value):
    """BTree.__setitem__."""
    tree.add(key, value)


def _tree_getitem(tree: "BTree", key):
    """BTree.__getitem__."""
    item = _search(tree.root, key)
    if item is None:
        raise KeyError(key)
    return item[1]


def _tree_get(tree: "BTree", key, default=None):
    """BTree.get: tree[key], or default if the key is absent."""
    item = _search(tree.root, key)
    return default if item is None else item[1]


def _tree_contains(tree: "BTree", key) -> bool:
    """BTree.__contains__."""
    return _search(tree.root, key) is not None


# The _tree_* functions are BTree's methods: the C versions are instance
# methods, which bind as these functions do.
accelerate(globals(), "durus._btree", (
    "_search", "_insert", "_tree_add", "_tree_setitem", "_tree_getitem", "_tree_get",
    "_tree_contains", "_walk"))


def _delete(node: "BNode", key, t: int, present: bool = False):
    """Remove the item with this key from under node; KeyError if absent.

    t is the minimum degree. The child descended into is first given at
    least t items, so that it can lose one. present tells that the key is
    known to be under node.
    """
    items = node.items
    nodes = node.nodes
    p = bisect_left(items, key, key=_key_of)
    found = p < len(items) and items[p][0] == key
    if nodes is None:
        if not found:
            raise KeyError(key)
        del items[p]
        node._p_note_change()
        return
    child = nodes[p]
    if found:
        if len(child.items) >= t:
            replacement = child.get_max_item()
            _delete(child, replacement[0], t, True)
        else:
            # As Durus does, take the successor even from a small upper
            # node, and then merge that node into child.
            upper = nodes[p + 1]
            upper_is_small = len(upper.items) < t
            replacement = upper.get_min_item()
            _delete(upper, replacement[0], t, True)
            if upper_is_small:
                node._merge(p, replacement, into_upper=False)
                return
        items[p] = replacement
        node._p_note_change()
        return
    if len(child.items) < t:
        # Look before changing any node, so that deleting a missing key
        # changes nothing (searching is cheaper than doing that always).
        if not present and _search(child, key) is None:
            raise KeyError(key)
        present = True
        lower = nodes[p - 1] if p > 0 else None
        upper = nodes[p + 1] if p + 1 < len(nodes) else None
        if lower is not None and len(lower.items) >= t:
            node._shift_from_lower(p)
        elif upper is not None and len(upper.items) >= t:
            node._shift_from_upper(p)
        elif lower is not None:
            node._merge(p - 1, items[p - 1], into_upper=True)
        else:
            node._merge(p, items[p], into_upper=False)
    _delete(child, key, t, present)


class BNode(PersistentObject):
    """A node of a BTree.

    items: [(key, value)], sorted by key.
    nodes: None for a leaf, else [BNode], one more than there are items:
      the keys under nodes[i] lie between those of items[i - 1] and items[i].
    minimum_degree: int (class attribute), the t of the B-tree.
    """

    __slots__ = ("items", "nodes")

    minimum_degree = 2
    # Declared for QP's spec checking, below the subclasses.
    items_is: ClassVar[list]
    nodes_is: ClassVar[tuple]

    def __init__(self):
        self.items = []
        self.nodes = None

    def is_leaf(self) -> bool:
        return self.nodes is None

    def is_full(self) -> bool:
        return len(self.items) == 2 * self.minimum_degree - 1

    def get_position(self, key: Any) -> int:
        """Return the index of the first item whose key is >= key (len(items) if none)."""
        return bisect_left(self.items, key, key=_key_of)

    def __iter__(self):
        return _walk(self, False, None, ITEM, None)

    def __reversed__(self):
        return _walk(self, True, None, ITEM, None)

    def iter_from(self, key: Any) -> Iterator[tuple]:
        """Generate the items here and below with keys >= key, ascending."""
        return _walk(self, False, (key, True), ITEM, None)

    def iter_backward_from(self, key: Any) -> Iterator[tuple]:
        """Generate the items here and below with keys < key, descending."""
        return _walk(self, True, (key, False), ITEM, None)

    def search(self, key: Any) -> tuple | None:
        """(key) -> (key, value) | None: the item with this key here or below."""
        return _search(self, key)

    def get_min_item(self) -> tuple:
        """Return the (key, value) item with the least key here or below."""
        node = self
        while node.nodes is not None:
            node = node.nodes[0]
        return node.items[0]

    def get_max_item(self) -> tuple:
        """Return the (key, value) item with the greatest key here or below."""
        node = self
        while node.nodes is not None:
            node = node.nodes[-1]
        return node.items[-1]

    def split_child(self, position: int, child: "BNode") -> None:
        """Split the full child, self.nodes[position], in two halves around
        its median item, which moves up into self (which must not be full)."""
        t = child.minimum_degree
        child_items = child.items
        child_nodes = child.nodes
        upper = persistent_class(child)()
        upper.items = child_items[t:]
        child.items = child_items[:t - 1]
        if child_nodes is not None:
            upper.nodes = child_nodes[t:]
            child.nodes = child_nodes[:t]
        self.items.insert(position, child_items[t - 1])
        self.nodes.insert(position + 1, upper)
        self._p_note_change()

    def insert_item(self, item: tuple) -> None:
        """Add the (key, value) item here or below, replacing the item with an
        equal key, if any. This node must not be full."""
        _insert(self, self.items, item, 2 * self.minimum_degree - 1)

    def delete(self, key: Any) -> None:
        """Remove the item with this key from here or below; KeyError if absent.

        This node may be left with no items and one child: BTree.__delitem__
        then moves that child's contents up into the root.
        """
        _delete(self, key, self.minimum_degree)

    def _merge(self, p: int, separator: tuple, into_upper: bool):
        """Merge nodes[p], separator and nodes[p + 1] into one of those two
        nodes (the upper one if into_upper), which takes the place of both
        and of items[p]."""
        # The node kept is the one delete() descends into, as in Durus, so
        # that the same deletions leave the same nodes (and oids) behind.
        lower = self.nodes[p]
        upper = self.nodes[p + 1]
        merged = upper if into_upper else lower
        merged_items = lower.items + [separator] + upper.items
        if lower.nodes is not None:
            merged.nodes = lower.nodes + upper.nodes
        merged.items = merged_items
        del self.items[p]
        del self.nodes[p if into_upper else p + 1]
        self._p_note_change()

    def _shift_from_lower(self, p: int):
        """Rotate one item from nodes[p - 1] through items[p - 1] into nodes[p]."""
        lower = self.nodes[p - 1]
        node = self.nodes[p]
        node.items.insert(0, self.items[p - 1])
        self.items[p - 1] = lower.items.pop()
        if lower.nodes is not None:
            node.nodes.insert(0, lower.nodes.pop())
        for changed in (self, lower, node):
            changed._p_note_change()

    def _shift_from_upper(self, p: int):
        """Rotate one item from nodes[p + 1] through items[p] into nodes[p]."""
        upper = self.nodes[p + 1]
        node = self.nodes[p]
        node.items.append(self.items[p])
        self.items[p] = upper.items.pop(0)
        if upper.nodes is not None:
            node.nodes.append(upper.nodes.pop(0))
        for changed in (self, upper, node):
            changed._p_note_change()

    def get_count(self) -> int:
        """Return the number of items here and below."""
        return sum(len(node.items) for node in _every_node(self))

    def get_node_count(self) -> int:
        """Return the number of nodes here and below, this one included."""
        return sum(1 for _ in _every_node(self))

    def get_level(self) -> int:
        """Return the number of levels below this node (0 for a leaf)."""
        level = 0
        node = self
        while node.nodes is not None:
            node = node.nodes[0]
            level += 1
        return level


class BNode4(BNode):
    __slots__ = ()
    minimum_degree = 4


class BNode8(BNode):
    __slots__ = ()
    minimum_degree = 8


class BNode16(BNode):
    __slots__ = ()
    minimum_degree = 16


class BNode32(BNode):
    __slots__ = ()
    minimum_degree = 32


class BNode64(BNode):
    __slots__ = ()
    minimum_degree = 64


class BNode128(BNode):
    __slots__ = ()
    minimum_degree = 128


class BNode256(BNode):
    __slots__ = ()
    minimum_degree = 256


class BNode512(BNode):
    __slots__ = ()
    minimum_degree = 512


def _node_classes() -> list[type[BNode]]:
    """BNode and its subclasses, one for each minimum degree."""
    return [BNode, *BNode.__subclasses__()]


# Attribute types, declared for QP's spec checking.
for _node_class in _node_classes():
    _node_class.items_is = [tuple]
    _node_class.nodes_is = (None, [_node_class])
del _node_class


class BTree(PersistentObject, MutableMapping):
    """A persistent mapping whose keys are kept in ascending order.

    root: BNode, the root of the tree (pickled as {'root': <BNode>}).

    As in Durus 4.3, keys(), values() and items() return lists, and
    len() counts the items of every node.
    """

    __slots__ = ("root",)

    root_is = BNode  # the attribute type, declared for QP's spec checking

    def __init__(self, node_constructor: type = BNode16) -> None:
        if not (isinstance(node_constructor, type) and issubclass(node_constructor, BNode)):
            raise TypeError("node_constructor must be a BNode class")
        self.root = node_constructor()

    def __bool__(self) -> bool:
        return bool(self.root.items)

    __nonzero__ = __bool__

    def __len__(self) -> int:
        return self.root.get_count()

    __contains__ = has_key = _tree_contains
    __getitem__ = _tree_getitem
    get = _tree_get

    def __iter__(self):
        return _walk(self.root, False, None, KEY, None)

    def __reversed__(self):
        return _walk(self.root, True, None, KEY, None)

    def iteritems(self) -> Iterator[tuple]:
        """Generate all (key, value) items in ascending key order."""
        return _walk(self.root, False, None, ITEM, None)

    def iterkeys(self) -> Iterator:
        return iter(self)

    def itervalues(self) -> Iterator:
        return _walk(self.root, False, None, VALUE, None)

    # Lists, not views, as Durus 4.3 returns.
    def items(self) -> list:  # type: ignore[override]
        return list(self.iteritems())

    def keys(self) -> list:  # type: ignore[override]
        return list(self)

    def values(self) -> list:  # type: ignore[override]
        return list(self.itervalues())

    def items_backward(self) -> Iterator[tuple]:
        """Generate all (key, value) items in descending key order."""
        return _walk(self.root, True, None, ITEM, None)

    def items_from(self, key: Any, closed: bool = True) -> Iterator[tuple]:
        """Generate, ascending, the items with keys >= key (> key if not closed)."""
        return _walk(self.root, False, (key, closed), ITEM, None)

    def items_backward_from(self, key: Any, closed: bool = False) -> Iterator[tuple]:
        """Generate, descending, the items with keys < key (<= key if closed)."""
        return _walk(self.root, True, (key, closed), ITEM, None)

    def items_range(self, start: Any, end: Any, closed_start: bool = True,
                    closed_end: bool = False) -> Iterator[tuple]:
        """Generate the items with keys from start to end, ascending if
        start <= end, else descending. closed_start and closed_end tell
        whether the items with the key start and the key end are included.
        """
        return _walk(self.root, None, (start, closed_start), ITEM, (end, closed_end))

    def get_min_item(self) -> tuple:
        """Return the (key, value) item with the least key."""
        if not self.root.items:
            # AssertionError, as Durus raises (under -O too).
            raise AssertionError("empty BTree has no min item")
        return self.root.get_min_item()

    def get_max_item(self) -> tuple:
        """Return the (key, value) item with the greatest key."""
        if not self.root.items:
            raise AssertionError("empty BTree has no max item")
        return self.root.get_max_item()

    add = _tree_add
    __setitem__ = _tree_setitem

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """Return self[key], first setting it to default if key is absent."""
        item = _search(self.root, key)
        if item is None:
            self.add(key, default)
            return default
        return item[1]

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add the items of a mapping (anything with items()) or an iterable
        of (key, value) pairs, then the keyword arguments."""
        if len(args) > 1:
            raise TypeError("update expected at most 1 argument, got %d" % len(args))
        for source in args:
            if hasattr(source, "iteritems"):
                source = source.iteritems()
            elif hasattr(source, "items"):
                source = source.items()
            for key, value in source:
                self.add(key, value)
        for key, value in kwargs.items():
            self.add(key, value)

    def __delitem__(self, key):
        root = self.root
        _delete(root, key, root.minimum_degree)
        if not root.items and root.nodes is not None:
            # The tree shrinks at the top: the root takes over its one child.
            child = root.nodes[0]
            root.items = child.items
            root.nodes = child.nodes

    def clear(self) -> None:
        self.root = persistent_class(self.root)()

    def note_change_of_bnode_containing_key(self, key: Any) -> None:
        """Mark changed the node holding key, so that the next commit stores
        the (non-persistent, changed in place) value of self[key]."""
        self.add(key, self[key])

    def get_depth(self) -> int:
        """Return the number of levels of nodes."""
        return self.root.get_level() + 1

    def get_node_count(self) -> int:
        """Return the number of nodes."""
        return self.root.get_node_count()

    def set_bnode_minimum_degree(self, degree: int) -> bool:
        """Rebuild the tree with the BNode class of this minimum degree, if
        there is one and the tree does not use it already. Return whether
        the tree was rebuilt."""
        if self.root.minimum_degree == degree:
            return False
        for node_class in _node_classes():
            if node_class.minimum_degree == degree:
                rebuilt = BTree(node_class)
                rebuilt.update(self.iteritems())
                self.root = rebuilt.root
                return True
        return False
