"""Persistent base classes: ghosts, change tracking and access bookkeeping.

An instance is UNSAVED (its state is here and not yet stored), SAVED (its
state is here and equals the stored state) or GHOST (its state is not loaded;
the first attribute access loads it through its connection).

Reads of a persistent class C are not intercepted (CPython's own fast paths
apply). An object that must notice its next read, a ghost or one the cache
has not seen used lately ("watched"), has the type watched_class(C) instead:
a hidden subclass of C with the same layout, name and module, whose
__getattribute__ loads the state if needed, records the access with the
connection, and turns the object back into a C (see persistent_class).

PersistentBase and ConnectionBase hold the hot path. The C extension
durus._persistent replaces them (and cached_or_ghost, call_if_persistent,
persistent_reference, persistent_class, watch, fill_instance_dict and the _*attribute
helpers) as durus.accelerator chooses; both implementations behave the same,
and the Python ones stay importable as <name>_py (PersistentBase_py, ...).
"""

import sys
import weakref
from collections import OrderedDict
from typing import Any, Callable, Mapping

from durus.accelerator import accelerate
from durus.utils import as_bytes, str_to_int8

stderr = sys.stderr  # a Durus 4.3 name (it warned there)

UNSAVED = 1
SAVED = 0
GHOST = -1

_setattribute = object.__setattr__
_delattribute = object.__delattr__
_getattribute = object.__getattribute__
# object's own, which accelerate() never rebinds (it rebinds _setattribute).
_object_setattr = object.__setattr__

# Names a ghost answers without loading its state.
_GHOST_SAFE_NAMES = frozenset(("__class__", "__repr__", "__setstate__"))


def _hasattribute(obj, name: str) -> bool:
    try:
        _getattribute(obj, name)
    except AttributeError:
        return False
    return True


# The Python twins below test for PersistentBase_py, so that they work
# together whichever versions the switch binds (the _*attribute helpers of C
# and of Python do the same to Python objects). accelerate() binds it.
PersistentBase_py: type


def _check_persistent(obj) -> None:
    if not isinstance(obj, PersistentBase_py):
        raise TypeError("expected a persistent object, got %s" % type(obj).__name__)


# {class: its data slot names}; weak, so that classes made at run time can go.
_data_slot_names_of: "weakref.WeakKeyDictionary[type, tuple]" = weakref.WeakKeyDictionary()


def _data_slot_names(cls: type) -> tuple:
    """Return the names of the data slots (not __weakref__ or __dict__) that cls
    and its bases below PersistentBase declare; the MRO is walked once per class."""
    names = _data_slot_names_of.get(cls)
    if names is None:
        found: list[str] = []
        for klass in cls.__mro__:
            if klass is PersistentBase:
                continue
            slots = klass.__dict__.get("__slots__", ())
            if isinstance(slots, str):
                slots = (slots,)
            found.extend(name for name in slots if name not in ("__weakref__", "__dict__"))
        names = _data_slot_names_of[cls] = tuple(found)
    return names


class _NoInitSubclass:
    """A first base that keeps type.__new__ from calling the persistent
    class's __init_subclass__ for its watched twin (a registry would see it)."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs):
        pass


def watched_class(cls: type) -> type:
    """Return the watched twin of the persistent class cls (made once, kept
    in cls.__dict__ as _p_watched_class): a subclass with __slots__ = () and
    cls's name, qualified name, module and doc, whose __getattribute__ is
    PersistentBase._p_watched_getattribute. Neither cls's metaclass's
    __new__/__init__ nor __init_subclass__ run for it."""
    watched = cls.__dict__.get("_p_watched_class")
    if watched is None:
        namespace = {"__slots__": (), "__module__": cls.__module__,
                     "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
                     "__getattribute__": _base_of(cls).__dict__["_p_watched_getattribute"],
                     "_p_real_class": cls}
        watched = type.__new__(type(cls), cls.__name__, (_NoInitSubclass, cls), namespace)
        type.__setattr__(watched, "__bases__", (cls,))
        type.__setattr__(cls, "_p_watched_class", watched)
    return watched


def _base_of(cls: type) -> type:
    # The C base when cls is built on it, as the switch may have bound either.
    return PersistentBase if issubclass(cls, PersistentBase) else PersistentBase_py


def persistent_class(obj: Any) -> type:
    """Return the class of obj, the persistent class C if obj is watched
    (its type is watched_class(C)): what is stored and compared."""
    cls = type(obj)
    return cls.__dict__.get("_p_real_class", cls)


def watch(obj: Any) -> None:
    """Make the persistent object obj watched: its next read goes through
    PersistentBase._p_watched_getattribute. A bare PersistentBase (no
    state to load) stays as it is."""
    _check_persistent(obj)
    cls = type(obj)
    if cls is not _base_of(cls) and "_p_real_class" not in cls.__dict__:
        _object_setattr(obj, "__class__", watched_class(cls))


class ConnectionBase:
    """Base of Connection: the transaction serial, and strong references to
    the objects used lately ("held"), least recently used first. An object
    is held by one connection at most (its _p_holder): holding it in
    another moves it there.

    transaction_serial: int, incremented by every commit() and abort().
    """

    __slots__ = ("transaction_serial", "_held")
    transaction_serial: int
    _held: OrderedDict

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.transaction_serial = 1
        instance._held = OrderedDict()  # {id(obj): obj}, oldest access first
        return instance

    def note_access(self, obj: Any) -> None:
        """Record that obj is used in the current transaction: set its
        _p_serial and hold it as the most recently used object."""
        _check_persistent(obj)
        _setattribute(obj, "_p_serial", self.transaction_serial)
        if _getattribute(obj, "_p_holder") is not self:
            self._hold(obj)
        held, key = self._held, id(obj)
        held[key] = obj  # a no-op, but after an interrupted _hold()
        held.move_to_end(key)

    def watch_touched(self) -> None:
        """Make watched every held object used in the current transaction
        (the newest end of the held list), so that the next transaction
        sees its first read of each."""
        serial = self.transaction_serial
        touched = []
        for obj in reversed(self._held.values()):
            if _getattribute(obj, "_p_serial") != serial:
                break
            touched.append(obj)
        for obj in touched:  # apart: making a twin class may run any code
            watch(obj)

    def hold_loaded(self, obj: Any) -> None:
        """Hold a just-loaded obj, as the least recently used, if this
        connection does not hold it."""
        _check_persistent(obj)
        if _getattribute(obj, "_p_holder") is not self:
            self._hold(obj)
            self._held.move_to_end(id(obj), last=False)

    def _hold(self, obj):
        # Each step leaves a state the next call puts right, whatever stops it.
        holder = _getattribute(obj, "_p_holder")
        if holder is not self:
            if holder is not None:
                holder._held.pop(id(obj), None)
            _setattribute(obj, "_p_holder", self)
        self._held[id(obj)] = obj

    def release(self, obj: Any) -> None:
        """Stop holding obj if this connection holds it."""
        _check_persistent(obj)
        if self._held.pop(id(obj), None) is not None:
            _setattribute(obj, "_p_holder", None)

    def oldest_held(self) -> Any:
        """Return the least recently used held object, or None."""
        return next(iter(self._held.values()), None)

    def held_count(self) -> int:
        return len(self._held)


class PersistentBase:
    """The slots and the setattr hook every persistent object has. Reads are
    not intercepted: a ghost or watched object's type is watched_class(C),
    whose __getattribute__ is _p_watched_getattribute.

    _p_status: UNSAVED | SAVED | GHOST; setting GHOST makes the object watched.
    _p_serial: int, the connection's transaction_serial at the last access.
    _p_connection: the Connection that stores this object, or None.
    _p_oid: bytes (8) | None, assigned when the object is first stored.
    _p_holder: the ConnectionBase holding this object, or None (the C
        accelerator keeps it hidden).
    """

    __slots__ = ("_p_status", "_p_serial", "_p_connection", "_p_oid", "_p_holder")
    _p_status: int
    _p_serial: int
    _p_connection: Any
    _p_oid: Any  # bytes (8) | None
    _p_holder: Any

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        _setattribute(instance, "_p_status", UNSAVED)
        _setattribute(instance, "_p_serial", 0)
        _setattribute(instance, "_p_connection", None)
        _setattribute(instance, "_p_oid", None)
        _setattribute(instance, "_p_holder", None)
        return instance

    def _p_watched_getattribute(self, name):
        """The __getattribute__ of watched classes: a ghost loads its state,
        the access is recorded with the connection, and the object becomes
        an instance of its persistent class again, which answers."""
        if name[:3] == "_p_" or name in _GHOST_SAFE_NAMES:
            if name == "__class__":
                return persistent_class(self)
            return _getattribute(self, name)
        if _getattribute(self, "_p_status") == GHOST:
            self._p_load_state()
        connection = _getattribute(self, "_p_connection")
        if (connection is not None
                and _getattribute(self, "_p_serial") != connection.transaction_serial):
            # Looked up on the class, as the C accelerator does.
            type(connection).note_access(connection, self)
        cls = persistent_class(self)
        _object_setattr(self, "__class__", cls)
        # The class's own __getattribute__ (its __getattr__, if any, runs
        # once: the watched class's slot calls it after this).
        return cls.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if name[:3] != "_p_" and name not in _GHOST_SAFE_NAMES:
            self._p_note_change()
        _setattribute(self, name, value)


_status_slot = PersistentBase.__dict__["_p_status"]


def _set_status(obj, status) -> None:
    _status_slot.__set__(obj, status)
    if status == GHOST:
        watch(obj)


# Setting _p_status to GHOST, however it is done, makes the object watched,
# as the C accelerator's _p_status does.
setattr(PersistentBase, "_p_status", property(_status_slot.__get__, _set_status,
                                             doc="UNSAVED (1), SAVED (0) or GHOST (-1)."))


def call_if_persistent(f: Callable[[Any], Any], x: Any) -> Any:
    """Return f(x) if x is a persistent object, else None (Durus's
    persistent_id hook, kept for its users; commits use persistent_reference)."""
    if isinstance(x, PersistentBase_py):
        return f(x)
    return None


def persistent_reference(connection: Any, refs: set, new_objects: list, obj: Any) -> tuple | None:
    """The pickler's persistent id of obj as connection stores it: None if
    obj is not persistent, else (oid, class), its oid added to refs. An
    object without an oid gets one from connection.new_oid(), and this
    connection, after being appended to new_objects (so that a failed commit
    finds it there to undo). An object of another connection is refused."""
    # The base bound by accelerate() below, so that this twin works on C objects too.
    if not isinstance(obj, PersistentBase):
        return None
    if not isinstance(refs, set) or not isinstance(new_objects, list):
        raise TypeError("persistent_reference() needs a set and a list")
    if _getattribute(obj, "_p_oid") is None:
        new_objects.append(obj)
        _setattribute(obj, "_p_oid", connection.new_oid())
        _setattribute(obj, "_p_connection", connection)
    elif _getattribute(obj, "_p_connection") is not connection:
        raise ValueError(
            "%r belongs to a different connection and cannot be stored here" % obj)
    oid = _getattribute(obj, "_p_oid")
    if oid is None:
        raise TypeError("new_oid() returned None")
    refs.add(oid)
    return oid, persistent_class(obj)


def cached_or_ghost(objects: dict, ref_type: type, on_death: Callable[[Any], Any], connection: "ConnectionBase", oid_class: tuple[bytes, type]) -> Any:
    """Return the object of oid_class = (oid, cls) that objects holds if it is
    a cls (persistent_class), else a new ghost of cls for connection (an
    instance of watched_class(cls)), which objects then holds.

    objects: {oid: weak reference}; ref_type: the weakref.ref subclass to file
    new objects under (created with the callback on_death, and given the oid
    as its `key`). The unpickler's persistent_load hook, bound with partial().
    """
    oid, cls = oid_class
    ref = objects.get(oid)
    obj = None if ref is None else ref()
    if obj is None or persistent_class(obj) is not cls:
        obj = cls.__new__(cls)  # type: ignore[call-overload]  # a persistent class, not type
        _setattribute(obj, "_p_oid", oid)
        _setattribute(obj, "_p_connection", connection)
        _setattribute(obj, "_p_status", GHOST)
        ref = ref_type(obj, on_death)
        ref.key = oid
        objects[oid] = ref
    return obj


def fill_instance_dict(instance_dict: dict, state: Mapping[Any, Any]) -> None:
    """Clear instance_dict and fill it from state (a mapping). The names of
    a plain dict state are interned: each loaded state brings its own name
    strings, which an attribute lookup can only match by comparing
    characters, and which every object would keep a copy of."""
    instance_dict.clear()
    if type(state) is not dict:
        instance_dict.update(state)
        return
    for name, value in state.items():
        instance_dict[sys.intern(name) if type(name) is str else name] = value


# The one rule of placement: after every Python twin, before the first class
# built on PersistentBase (which must get the base the switch chose).
accelerate(globals(), "durus._persistent", (
    "ConnectionBase", "PersistentBase", "cached_or_ghost", "call_if_persistent",
    "persistent_reference", "fill_instance_dict", "persistent_class", "watch", "_setattribute", "_getattribute",
    "_delattribute", "_hasattribute"))


class PersistentObject(PersistentBase):
    """A persistent object whose state is its filled slots (and __dict__ if it has one)."""

    __slots__ = ("__weakref__",)

    def _p_gen_data_slots(self):
        """Yield the names of data slots that hold a value."""
        for name in _data_slot_names(type(self)):
            if _hasattribute(self, name):
                yield name

    def __getstate__(self):
        if _getattribute(self, "_p_status") == GHOST:
            self._p_load_state()
        state = {}
        if _hasattribute(self, "__dict__"):
            state.update(_getattribute(self, "__dict__"))
        for name in self._p_gen_data_slots():
            state[name] = _getattribute(self, name)
        return state

    def __setstate__(self, state):
        if _hasattribute(self, "__dict__"):
            _getattribute(self, "__dict__").clear()
        for name in list(self._p_gen_data_slots()):
            _delattribute(self, name)
        if state is not None:
            for name, value in state.items():
                _setattribute(self, name, value)

    def __repr__(self):
        if _getattribute(self, "_p_oid") is None:
            identifier = "@%x" % id(self)
        else:
            identifier = self._p_format_oid()
        return "<%s %s>" % (type(self).__name__, identifier)

    def __delattr__(self, name):
        self._p_note_change()
        _delattribute(self, name)

    def _p_load_state(self):
        """Load the stored state of this ghost through its connection."""
        if self._p_connection is None:
            raise ValueError("%r is a ghost without a connection" % self)
        self._p_connection.load_state(self)
        self._p_set_status_saved()

    def _p_note_change(self):
        """Mark this object changed, so that the next commit() stores it."""
        if self._p_status != UNSAVED:
            # Noted first: if something stops this in between, the object
            # is stored anyway (UNSAVED but not noted, no change would be).
            self._p_connection.note_change(self)
            self._p_set_status_unsaved()

    def _p_format_oid(self) -> str:
        """Return the oid as a decimal number, or 'None' (an oid given as a
        latin-1 str, as Durus allows, is read as its bytes)."""
        oid = self._p_oid
        if oid is None:
            return "None"
        return str(str_to_int8(as_bytes(oid)))

    def _p_set_status_ghost(self):
        try:
            self.__setstate__({})
        finally:
            # Even if that stopped half way: the next access loads the state.
            _setattribute(self, "_p_status", GHOST)

    def _p_set_status_saved(self):
        _setattribute(self, "_p_status", SAVED)

    def _p_set_status_unsaved(self):
        if self._p_status == GHOST:
            self._p_load_state()
        _setattribute(self, "_p_status", UNSAVED)

    def _p_is_ghost(self) -> bool:
        return self._p_status == GHOST

    def _p_is_unsaved(self) -> bool:
        return self._p_status == UNSAVED

    def _p_is_saved(self) -> bool:
        return self._p_status == SAVED


class Persistent(PersistentObject):
    """The usual persistent base class: state is the instance __dict__."""

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        fill_instance_dict(_getattribute(self, "__dict__"), state)


class ComputedAttribute(PersistentObject):
    """A cached value computed from other persistent objects.

    It stores no state, but has an oid, so invalidate() in one connection
    makes every other connection forget its cached value at their next sync.
    """

    __slots__ = ("value",)

    def __getstate__(self):
        return None

    def _p_load_state(self):
        self._p_set_status_saved()

    def invalidate(self) -> None:
        """Forget the value here, and in other connections once committed."""
        self.__setstate__(None)
        self._p_note_change()

    def get(self, compute: Callable[[], Any]) -> Any:
        """Return the cached value, calling compute() (no arguments) if there is none."""
        # Filling the cache must not mark the object changed.
        if _hasattribute(self, "value"):
            return _getattribute(self, "value")
        value = compute()
        _setattribute(self, "value", value)
        return value
