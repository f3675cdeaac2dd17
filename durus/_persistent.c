/* durus._persistent: the hot path of durus.persistent in C.
 *
 * PersistentBase does not intercept reads (CPython's fast paths apply); a
 * ghost or watched object's type is its class's watched twin (see
 * watched_class in persistent.py), whose __getattribute__ is
 * pb_watched_getattribute: it loads a ghost, records the access with the
 * connection and gives the object its class back. Setting an attribute
 * notes the change. ConnectionBase holds
 * the transaction serial and the dict of recently accessed objects, so the
 * access bookkeeping needs no call into Python. Behaviour matches the
 * pure-Python classes in persistent.py exactly.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Must match UNSAVED, SAVED and GHOST in persistent.py. */
enum { SAVED = 0, UNSAVED = 1, GHOST = -1 };

struct ConnectionBaseObject;

/* A link in a connection's list of held objects, oldest access first. An
 * object is held by one connection at most: holding it in another moves it. */
typedef struct Link {
    struct Link *prev;
    struct Link *next;  /* NULL when the object is not held */
    struct ConnectionBaseObject *holder;  /* borrowed: its list holds the object */
} Link;

typedef struct {
    PyObject_HEAD
    Link link;          /* first, so that a Link * is the object's address + offset 0 */
    int status;
    long long serial;
    PyObject *connection;   /* NULL reads as None */
    PyObject *oid;          /* NULL reads as None */
} PersistentBaseObject;

typedef struct ConnectionBaseObject {
    PyObject_HEAD
    long long transaction_serial;
    Link held;              /* sentinel of the circular list of held objects */
    Py_ssize_t held_count;  /* each held object is a strong reference */
} ConnectionBaseObject;

#define OBJECT_OF(l) ((PersistentBaseObject *)((char *)(l) - offsetof(PersistentBaseObject, link)))

static PyTypeObject PersistentBase_Type;
static PyTypeObject ConnectionBase_Type;

static PyObject *str_p_load_state;
static PyObject *str_p_note_change;
static PyObject *str_note_access;
static PyObject *str_transaction_serial;
static PyObject *str___new__;
static PyObject *str_p_oid;
static PyObject *str_p_connection;
static PyObject *str_p_status;
static PyObject *str_key;
static PyObject *str_new_oid;
static PyObject *str_p_real_class;
static PyObject *str_p_watched_class;
static PyObject *str___getattribute__;
static PyObject *str_watched_class;
static PyObject *ghost_status;   /* the int GHOST */
static PyObject *base_note_access;   /* ConnectionBase.note_access */

/* Names that never load a ghost or count as an access. */
static int
is_exempt_name(PyObject *name)
{
    if (!PyUnicode_Check(name) || PyUnicode_GET_LENGTH(name) < 3
            || PyUnicode_READ_CHAR(name, 0) != '_') {
        return 0;
    }
    if (PyUnicode_READ_CHAR(name, 1) == 'p' && PyUnicode_READ_CHAR(name, 2) == '_') {
        return 1;
    }
    return (PyUnicode_CompareWithASCIIString(name, "__class__") == 0
            || PyUnicode_CompareWithASCIIString(name, "__repr__") == 0
            || PyUnicode_CompareWithASCIIString(name, "__setstate__") == 0);
}

static int
call_method_no_args(PyObject *self, PyObject *name)
{
    PyObject *result = PyObject_CallMethodNoArgs(self, name);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

static void
unlink_object(PersistentBaseObject *obj)
{
    obj->link.prev->next = obj->link.next;
    obj->link.next->prev = obj->link.prev;
    obj->link.next = obj->link.prev = NULL;
}

/* Put obj at the newest (or oldest) end of the connection's held list,
 * holding a reference; another connection holding it lets go of it. */
static void
hold_object(ConnectionBaseObject *connection, PersistentBaseObject *obj, int newest)
{
    Link *sentinel = &connection->held;
    if (obj->link.next == NULL) {
        Py_INCREF(obj);
        connection->held_count++;
    }
    else {
        unlink_object(obj);
        if (obj->link.holder != connection) {
            /* The reference passes from the other connection to this one. */
            obj->link.holder->held_count--;
            connection->held_count++;
        }
    }
    obj->link.holder = connection;
    if (newest) {
        obj->link.prev = sentinel->prev;
        obj->link.next = sentinel;
    }
    else {
        obj->link.prev = sentinel;
        obj->link.next = sentinel->next;
    }
    obj->link.prev->next = &obj->link;
    obj->link.next->prev = &obj->link;
}

/* Drop the connection's reference to obj, if it holds obj; obj may be freed by this. */
static void
release_object(ConnectionBaseObject *connection, PersistentBaseObject *obj)
{
    if (obj->link.next != NULL && obj->link.holder == connection) {
        unlink_object(obj);
        obj->link.holder = NULL;
        connection->held_count--;
        Py_DECREF(obj);
    }
}

/* ConnectionBase.note_access in C: record that obj is used in this transaction. */
static void
record_access(ConnectionBaseObject *connection, PersistentBaseObject *obj)
{
    obj->serial = connection->transaction_serial;
    hold_object(connection, obj, 1);
}

/* Ask a connection of a class not based on ConnectionBase, or that
 * overrides note_access, to note the access, as the pure-Python code does.
 * Owns a reference to connection throughout: the calls into Python may drop
 * self->connection. */
static int
note_access_through_python(PyObject *connection, PersistentBaseObject *self)
{
    PyObject *serial, *method, *result;
    long long value;
    serial = PyObject_GetAttr(connection, str_transaction_serial);
    if (serial == NULL) {
        return -1;
    }
    value = PyLong_AsLongLong(serial);
    Py_DECREF(serial);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value == self->serial) {
        return 0;
    }
    /* type(connection).note_access(connection, self), as in pure Python. */
    method = PyObject_GetAttr((PyObject *)Py_TYPE(connection), str_note_access);
    if (method == NULL) {
        return -1;
    }
    result = PyObject_CallFunctionObjArgs(method, connection, (PyObject *)self, NULL);
    Py_DECREF(method);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* The connection class last found to use ConnectionBase's own note_access,
 * and its version tag then. Tags are never reused and a changed class loses
 * its tag, so while both match, that answer stands without a lookup (which
 * with the subclass check cost a third of a first access). */
static PyTypeObject *base_access_type;
static unsigned int base_access_tag;

static int
has_version_tag(PyTypeObject *type)
{
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    if (!PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) {
        return 0;
    }
#endif
    return type->tp_version_tag != 0;
}

/* Whether connection is a ConnectionBase whose class does not override
 * note_access (looked up on the class, as the pure-Python code does). */
static int
uses_base_note_access(PyObject *connection)
{
    PyTypeObject *type = Py_TYPE(connection);
    if (type == base_access_type && type->tp_version_tag == base_access_tag
            && has_version_tag(type)) {
        return 1;
    }
    if (!PyObject_TypeCheck(connection, &ConnectionBase_Type)
            || _PyType_Lookup(type, str_note_access) != base_note_access) {
        return 0;
    }
    /* The lookup gave the class a version tag, if it could. */
    if (has_version_tag(type)) {
        base_access_type = type;
        base_access_tag = type->tp_version_tag;
    }
    return 1;
}

/* The bookkeeping done before any ordinary attribute access. */
static int
before_access(PersistentBaseObject *self)
{
    PyObject *connection;
    int status;

    if (self->status == GHOST && call_method_no_args((PyObject *)self, str_p_load_state) < 0) {
        return -1;
    }
    connection = self->connection;
    if (connection == NULL || connection == Py_None) {
        return 0;
    }
    if (uses_base_note_access(connection)) {
        /* No call into Python from here on: the borrowed pointer stays valid. */
        ConnectionBaseObject *base = (ConnectionBaseObject *)connection;
        if (self->serial != base->transaction_serial) {
            record_access(base, self);
        }
        return 0;
    }
    Py_INCREF(connection);
    status = note_access_through_python(connection, self);
    Py_DECREF(connection);
    return status;
}

/* The persistent class of obj: the base of a watched twin, else its type.
 * Borrowed. NULL (no error set) never. */
static PyTypeObject *
persistent_class(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    PyObject *real;
    if (type->tp_dict == NULL || !(type->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        return type;
    }
    real = PyDict_GetItemWithError(type->tp_dict, str_p_real_class);
    if (real == NULL || !PyType_Check(real)) {
        PyErr_Clear();  /* a lookup error only means: not a twin */
        return type;
    }
    return (PyTypeObject *)real;
}

/* Give obj the type cls (same layout, both heap types): the object owns a
 * reference to its heap type. */
static void
set_type(PyObject *obj, PyTypeObject *cls)
{
    PyTypeObject *old = Py_TYPE(obj);
    if (old != cls) {
        Py_INCREF(cls);
        Py_SET_TYPE(obj, cls);
        Py_DECREF(old);
    }
}

static PyObject *pb_watched_getattribute(PersistentBaseObject *self, PyObject *name);
static PyObject *str___getattr__;

/* A twin's __getattribute__ entry reaches the hook through the generic slot
 * and a method call; without a __getattr__ (which that slot must call after
 * it), the slot can be the hook itself. Any later change to the class makes
 * CPython derive the slot again from the entry: correct, only slower. */
static void
install_hook_slot(PyTypeObject *watched)
{
    if (watched->tp_getattro != (getattrofunc)pb_watched_getattribute
            && _PyType_Lookup(watched, str___getattr__) == NULL) {
        watched->tp_getattro = (getattrofunc)pb_watched_getattribute;
    }
}

/* The watched twin of the persistent class type (see watched_class in
 * persistent.py), made on first need; a new reference, NULL on error. */
static PyTypeObject *
watched_twin(PyTypeObject *type)
{
    PyObject *watched, *module;
    watched = PyDict_GetItemWithError(type->tp_dict, str_p_watched_class);
    if (watched != NULL) {
        Py_INCREF(watched);
    }
    else {
        if (PyErr_Occurred()) {
            return NULL;
        }
        /* Made once per class, by the one factory of both implementations. */
        module = PyImport_ImportModule("durus.persistent");
        if (module == NULL) {
            return NULL;
        }
        watched = PyObject_CallMethodOneArg(module, str_watched_class, (PyObject *)type);
        Py_DECREF(module);
        if (watched == NULL) {
            return NULL;
        }
    }
    if (!PyType_Check(watched) || ((PyTypeObject *)watched)->tp_base != type
            || ((PyTypeObject *)watched)->tp_basicsize != type->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "%R is not a watched twin of %R", watched, type);
        Py_DECREF(watched);
        return NULL;
    }
    install_hook_slot((PyTypeObject *)watched);
    return (PyTypeObject *)watched;
}

/* Make obj watched (see watch in persistent.py); -1 on error. */
static int
watch_object(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj), *watched;
    if (type == &PersistentBase_Type || persistent_class(obj) != type) {
        return 0;
    }
    watched = watched_twin(type);
    if (watched == NULL) {
        return -1;
    }
    set_type(obj, watched);
    Py_DECREF(watched);
    return 0;
}

/* PersistentBase._p_watched_getattribute(name): see persistent.py. */
static PyObject *
pb_watched_getattribute(PersistentBaseObject *self, PyObject *name)
{
    PyTypeObject *cls;
    PyObject *getattribute, *result;
    descrgetfunc get;
    if (is_exempt_name(name)) {
        if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "__class__") == 0) {
            return Py_NewRef((PyObject *)persistent_class((PyObject *)self));
        }
        return PyObject_GenericGetAttr((PyObject *)self, name);
    }
    if (before_access(self) < 0) {
        return NULL;
    }
    cls = persistent_class((PyObject *)self);
    set_type((PyObject *)self, cls);
    /* The class's own __getattribute__ (its __getattr__, if any, runs once:
     * the watched class's slot calls it after this). */
    getattribute = _PyType_Lookup(cls, str___getattribute__);
    if (getattribute == NULL
            || (Py_IS_TYPE(getattribute, &PyWrapperDescr_Type)
                && ((PyWrapperDescrObject *)getattribute)->d_wrapped
                   == (void *)PyObject_GenericGetAttr)) {
        return PyObject_GenericGetAttr((PyObject *)self, name);
    }
    Py_INCREF(getattribute);
    get = Py_TYPE(getattribute)->tp_descr_get;
    if (get == NULL) {
        result = PyObject_CallFunctionObjArgs(getattribute, (PyObject *)self, name, NULL);
    }
    else {
        PyObject *bound = get(getattribute, (PyObject *)self, (PyObject *)cls);
        result = bound == NULL ? NULL : PyObject_CallOneArg(bound, name);
        Py_XDECREF(bound);
    }
    Py_DECREF(getattribute);
    return result;
}

static PyMethodDef pb_methods[] = {
    {"_p_watched_getattribute", (PyCFunction)pb_watched_getattribute, METH_O,
     "The __getattribute__ of watched classes: a ghost loads its state, the\n"
     "access is recorded with the connection, and the object becomes an\n"
     "instance of its persistent class again, which answers."},
    {NULL}
};

static int
pb_setattro(PersistentBaseObject *self, PyObject *name, PyObject *value)
{
    /* Deletion notes the change in PersistentObject.__delattr__, as in pure Python. */
    if (value != NULL && !is_exempt_name(name)
            && call_method_no_args((PyObject *)self, str_p_note_change) < 0) {
        return -1;
    }
    return PyObject_GenericSetAttr((PyObject *)self, name, value);
}

static PyObject *
pb_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PersistentBaseObject *self = (PersistentBaseObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->status = UNSAVED;
    self->serial = 0;
    self->connection = NULL;
    self->oid = NULL;
    return (PyObject *)self;
}

static int
pb_traverse(PersistentBaseObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->connection);
    Py_VISIT(self->oid);
    return 0;
}

static int
pb_clear(PersistentBaseObject *self)
{
    Py_CLEAR(self->connection);
    Py_CLEAR(self->oid);
    return 0;
}

static void
pb_dealloc(PersistentBaseObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    pb_clear(self);
    /* A Python subclass's dealloc releases the reference to its type. */
    type->tp_free((PyObject *)self);
}

/* _p_connection and _p_oid: NULL is shown as None, and deleting sets None. */
static PyObject *
get_object_field(PyObject *field)
{
    PyObject *value = field ? field : Py_None;
    Py_INCREF(value);
    return value;
}

static void
set_object_field(PyObject **field, PyObject *value)
{
    PyObject *old = *field;
    *field = (value == NULL || value == Py_None) ? NULL : value;
    Py_XINCREF(*field);
    Py_XDECREF(old);
}

static PyObject *
pb_get_connection(PersistentBaseObject *self, void *closure)
{
    return get_object_field(self->connection);
}

static int
pb_set_connection(PersistentBaseObject *self, PyObject *value, void *closure)
{
    set_object_field(&self->connection, value);
    return 0;
}

static PyObject *
pb_get_oid(PersistentBaseObject *self, void *closure)
{
    return get_object_field(self->oid);
}

static int
pb_set_oid(PersistentBaseObject *self, PyObject *value, void *closure)
{
    set_object_field(&self->oid, value);
    return 0;
}

static PyObject *
pb_get_status(PersistentBaseObject *self, void *closure)
{
    return PyLong_FromLong(self->status);
}

/* Setting GHOST, however it is done, makes the object watched. */
static int
pb_set_status(PersistentBaseObject *self, PyObject *value, void *closure)
{
    long status;
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "can't delete _p_status");
        return -1;
    }
    status = PyLong_AsLong(value);
    if (status == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (status < INT_MIN || status > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "_p_status out of range");
        return -1;
    }
    self->status = (int)status;
    return status == GHOST ? watch_object((PyObject *)self) : 0;
}

static PyGetSetDef pb_getset[] = {
    {"_p_status", (getter)pb_get_status, (setter)pb_set_status,
     "UNSAVED (1), SAVED (0) or GHOST (-1); setting GHOST makes the object watched.", NULL},
    {"_p_connection", (getter)pb_get_connection, (setter)pb_set_connection,
     "The Connection that stores this object, or None.", NULL},
    {"_p_oid", (getter)pb_get_oid, (setter)pb_set_oid,
     "The 8-byte oid of this object, or None before it is first stored.", NULL},
    {NULL}
};

static PyMemberDef pb_members[] = {
    {"_p_serial", T_LONGLONG, offsetof(PersistentBaseObject, serial), 0,
     "The connection's transaction serial at this object's last access."},
    {NULL}
};

static PyTypeObject PersistentBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "durus._persistent.PersistentBase",
    .tp_basicsize = sizeof(PersistentBaseObject),
    .tp_dealloc = (destructor)pb_dealloc,
    .tp_setattro = (setattrofunc)pb_setattro,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The slots and the setattr hook every persistent object has; reads\n"
              "are not intercepted (see _p_watched_getattribute).",
    .tp_traverse = (traverseproc)pb_traverse,
    .tp_clear = (inquiry)pb_clear,
    .tp_members = pb_members,
    .tp_methods = pb_methods,
    .tp_getset = pb_getset,
    .tp_new = pb_new,
};

static PyObject *
cb_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ConnectionBaseObject *self = (ConnectionBaseObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->transaction_serial = 1;
    self->held.prev = self->held.next = &self->held;
    self->held_count = 0;
    return (PyObject *)self;
}

static int
cb_traverse(ConnectionBaseObject *self, visitproc visit, void *arg)
{
    Link *link;
    for (link = self->held.next; link != &self->held; link = link->next) {
        Py_VISIT((PyObject *)OBJECT_OF(link));
    }
    return 0;
}

static int
cb_clear(ConnectionBaseObject *self)
{
    while (self->held.next != &self->held) {
        release_object(self, OBJECT_OF(self->held.next));
    }
    return 0;
}

static void
cb_dealloc(ConnectionBaseObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    cb_clear(self);
    /* A Python subclass's dealloc releases the reference to its type. */
    type->tp_free((PyObject *)self);
}

static PersistentBaseObject *
as_persistent(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &PersistentBase_Type)) {
        PyErr_Format(PyExc_TypeError, "expected a persistent object, got %.200s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return (PersistentBaseObject *)obj;
}

static PyObject *
cb_note_access(ConnectionBaseObject *self, PyObject *obj)
{
    PersistentBaseObject *persistent = as_persistent(obj);
    if (persistent == NULL) {
        return NULL;
    }
    record_access(self, persistent);
    Py_RETURN_NONE;
}

static int watch_object(PyObject *obj);

static PyObject *
cb_watch_touched(ConnectionBaseObject *self, PyObject *unused)
{
    PyObject *touched = PyList_New(0);
    Link *link;
    Py_ssize_t i;
    if (touched == NULL) {
        return NULL;
    }
    for (link = self->held.prev; link != &self->held; link = link->prev) {
        if (OBJECT_OF(link)->serial != self->transaction_serial) {
            break;
        }
        if (PyList_Append(touched, (PyObject *)OBJECT_OF(link)) < 0) {
            Py_DECREF(touched);
            return NULL;
        }
    }
    /* Apart from the walk: making a twin class may run any code. */
    for (i = 0; i < PyList_GET_SIZE(touched); i++) {
        if (watch_object(PyList_GET_ITEM(touched, i)) < 0) {
            Py_DECREF(touched);
            return NULL;
        }
    }
    Py_DECREF(touched);
    Py_RETURN_NONE;
}

static PyObject *
cb_hold_loaded(ConnectionBaseObject *self, PyObject *obj)
{
    PersistentBaseObject *persistent = as_persistent(obj);
    if (persistent == NULL) {
        return NULL;
    }
    if (persistent->link.next == NULL || persistent->link.holder != self) {
        hold_object(self, persistent, 0);
    }
    Py_RETURN_NONE;
}

static PyObject *
cb_release(ConnectionBaseObject *self, PyObject *obj)
{
    PersistentBaseObject *persistent = as_persistent(obj);
    if (persistent == NULL) {
        return NULL;
    }
    release_object(self, persistent);
    Py_RETURN_NONE;
}

static PyObject *
cb_oldest_held(ConnectionBaseObject *self, PyObject *unused)
{
    PyObject *oldest;
    if (self->held.next == &self->held) {
        Py_RETURN_NONE;
    }
    oldest = (PyObject *)OBJECT_OF(self->held.next);
    Py_INCREF(oldest);
    return oldest;
}

static PyObject *
cb_held_count(ConnectionBaseObject *self, PyObject *unused)
{
    return PyLong_FromSsize_t(self->held_count);
}

static PyMethodDef cb_methods[] = {
    {"note_access", (PyCFunction)cb_note_access, METH_O,
     "note_access(obj): record that obj is used in the current transaction:\n"
     "set its _p_serial and hold it as the most recently used object (another\n"
     "connection holding it lets go of it)."},
    {"watch_touched", (PyCFunction)cb_watch_touched, METH_NOARGS,
     "watch_touched(): make watched every held object used in the current\n"
     "transaction, so that the next transaction sees its first read of each."},
    {"hold_loaded", (PyCFunction)cb_hold_loaded, METH_O,
     "hold_loaded(obj): hold a just-loaded obj, as the least recently used, if this\n"
     "connection does not hold it (another connection holding it lets go of it)."},
    {"release", (PyCFunction)cb_release, METH_O,
     "release(obj): stop holding obj if this connection holds it."},
    {"oldest_held", (PyCFunction)cb_oldest_held, METH_NOARGS,
     "oldest_held() -> the least recently used held object, or None."},
    {"held_count", (PyCFunction)cb_held_count, METH_NOARGS,
     "held_count() -> the number of objects held."},
    {NULL}
};

static PyMemberDef cb_members[] = {
    {"transaction_serial", T_LONGLONG, offsetof(ConnectionBaseObject, transaction_serial), 0,
     "1 + the number of commit() and abort() calls so far."},
    {NULL}
};

static PyTypeObject ConnectionBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "durus._persistent.ConnectionBase",
    .tp_basicsize = sizeof(ConnectionBaseObject),
    .tp_dealloc = (destructor)cb_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Base of Connection: the transaction serial, and strong references to\n"
              "the objects used lately (held), least recently used first.",
    .tp_traverse = (traverseproc)cb_traverse,
    .tp_clear = (inquiry)cb_clear,
    .tp_methods = cb_methods,
    .tp_members = cb_members,
    .tp_new = cb_new,
};

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)",
                     name, expected, nargs);
        return 0;
    }
    return 1;
}

/* Module functions: attribute access that bypasses PersistentBase's hooks
 * (object.__setattr__ refuses to run on a C type with its own setattro). */

static PyObject *
m_setattribute(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("_setattribute", nargs, 3)
            || PyObject_GenericSetAttr(args[0], args[1], args[2]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
m_delattribute(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("_delattribute", nargs, 2)
            || PyObject_GenericSetAttr(args[0], args[1], NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
m_getattribute(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("_getattribute", nargs, 2)) {
        return NULL;
    }
    return PyObject_GenericGetAttr(args[0], args[1]);
}

static PyObject *
m_hasattribute(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *value;
    if (!check_nargs("_hasattribute", nargs, 2)) {
        return NULL;
    }
    value = PyObject_GenericGetAttr(args[0], args[1]);
    if (value != NULL) {
        Py_DECREF(value);
        Py_RETURN_TRUE;
    }
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return NULL;
    }
    PyErr_Clear();
    Py_RETURN_FALSE;
}

/* call_if_persistent(f, x): see persistent.py (Durus's name, kept for its users). */
static PyObject *
m_call_if_persistent(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("call_if_persistent", nargs, 2)) {
        return NULL;
    }
    if (PyObject_TypeCheck(args[1], &PersistentBase_Type)) {
        return PyObject_CallOneArg(args[0], args[1]);
    }
    Py_RETURN_NONE;
}

/* persistent_reference(connection, refs, new_objects, obj): see persistent.py. */
static PyObject *
m_persistent_reference(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *connection, *refs, *new_objects, *oid;
    PersistentBaseObject *obj;
    if (!check_nargs("persistent_reference", nargs, 4)) {
        return NULL;
    }
    if (!PyObject_TypeCheck(args[3], &PersistentBase_Type)) {
        Py_RETURN_NONE;
    }
    connection = args[0];
    refs = args[1];
    new_objects = args[2];
    obj = (PersistentBaseObject *)args[3];
    if (!PySet_Check(refs) || !PyList_Check(new_objects)) {
        PyErr_SetString(PyExc_TypeError, "persistent_reference() needs a set and a list");
        return NULL;
    }
    if (obj->oid == NULL) {
        /* Listed first: whatever is interrupted after this, a failed commit
         * finds the object there to undo. */
        if (PyList_Append(new_objects, (PyObject *)obj) < 0) {
            return NULL;
        }
        oid = PyObject_CallMethodNoArgs(connection, str_new_oid);
        if (oid == NULL) {
            return NULL;
        }
        set_object_field(&obj->oid, oid);
        Py_DECREF(oid);
        set_object_field(&obj->connection, connection);
    }
    else if (obj->connection != connection) {
        PyErr_Format(PyExc_ValueError,
                     "%R belongs to a different connection and cannot be stored here", obj);
        return NULL;
    }
    oid = obj->oid;
    if (oid == NULL) {
        PyErr_SetString(PyExc_TypeError, "new_oid() returned None");
        return NULL;
    }
    if (PySet_Add(refs, oid) < 0) {
        return NULL;
    }
    return PyTuple_Pack(2, oid, (PyObject *)persistent_class((PyObject *)obj));
}

static PyObject *
m_persistent_class(PyObject *module, PyObject *obj)
{
    return Py_NewRef((PyObject *)persistent_class(obj));
}

static PyObject *
m_watch(PyObject *module, PyObject *obj)
{
    if (as_persistent(obj) == NULL || watch_object(obj) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* A new ghost of cls for connection: cls.__new__(cls) with the oid, the
 * connection and the status GHOST set as attributes (which makes it watched).
 * A class that keeps PersistentBase's __new__ gets the same made directly,
 * an instance of its watched twin from the start. */
static PyObject *
new_ghost(PyObject *cls, PyObject *oid, PyObject *connection)
{
    PyTypeObject *watched;
    PersistentBaseObject *ghost;
    PyObject *obj;
    if (PyType_Check(cls) && ((PyTypeObject *)cls)->tp_new == pb_new
            && PyType_IsSubtype((PyTypeObject *)cls, &PersistentBase_Type)
            && (PyObject *)cls != (PyObject *)&PersistentBase_Type) {
        watched = watched_twin((PyTypeObject *)cls);
        if (watched == NULL) {
            return NULL;
        }
        ghost = (PersistentBaseObject *)pb_new(watched, NULL, NULL);
        Py_DECREF(watched);
        if (ghost != NULL) {
            ghost->status = GHOST;
            set_object_field(&ghost->oid, oid);
            set_object_field(&ghost->connection, connection);
        }
        return (PyObject *)ghost;
    }
    obj = PyObject_CallMethodOneArg(cls, str___new__, cls);
    if (obj == NULL
            || PyObject_GenericSetAttr(obj, str_p_oid, oid) < 0
            || PyObject_GenericSetAttr(obj, str_p_connection, connection) < 0
            || PyObject_GenericSetAttr(obj, str_p_status, ghost_status) < 0) {
        Py_CLEAR(obj);
    }
    return obj;
}

/* cached_or_ghost(objects, ref_type, on_death, connection, (oid, cls)):
 * see persistent.py. */
static PyObject *
m_cached_or_ghost(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *objects, *oid, *cls, *ref, *obj = NULL, *pair;
    if (!check_nargs("cached_or_ghost", nargs, 5)) {
        return NULL;
    }
    objects = args[0];
    if (!PyDict_Check(objects)) {
        PyErr_Format(PyExc_TypeError, "cached_or_ghost() needs a dict, not %.200s",
                     Py_TYPE(objects)->tp_name);
        return NULL;
    }
    pair = PySequence_Tuple(args[4]);
    if (pair == NULL) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(pair) != 2) {
        PyErr_Format(PyExc_ValueError, "a persistent reference is (oid, class), not %R", args[4]);
        goto done;
    }
    oid = PyTuple_GET_ITEM(pair, 0);
    cls = PyTuple_GET_ITEM(pair, 1);
    ref = PyDict_GetItemWithError(objects, oid);
    if (ref == NULL && PyErr_Occurred()) {
        goto done;
    }
    if (ref != NULL) {
        /* Owned across the call, which may run Python code that changes objects. */
        Py_INCREF(ref);
        obj = PyObject_CallNoArgs(ref);
        Py_DECREF(ref);
        if (obj == NULL || (obj != Py_None && (PyObject *)persistent_class(obj) == cls)) {
            goto done;
        }
        Py_CLEAR(obj);
    }
    obj = new_ghost(cls, oid, args[3]);
    if (obj == NULL) {
        goto done;
    }
    ref = PyObject_CallFunctionObjArgs(args[1], obj, args[2], NULL);
    if (ref == NULL || PyObject_SetAttr(ref, str_key, oid) < 0
            || PyDict_SetItem(objects, oid, ref) < 0) {
        Py_CLEAR(obj);
    }
    Py_XDECREF(ref);
done:
    Py_DECREF(pair);
    return obj;
}

/* fill_instance_dict(instance_dict, state): see persistent.py. */
static PyObject *
m_fill_instance_dict(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *instance_dict, *state, *key, *value, *result;
    Py_ssize_t position = 0;
    if (!check_nargs("fill_instance_dict", nargs, 2)) {
        return NULL;
    }
    instance_dict = args[0];
    state = args[1];
    if (!PyDict_Check(instance_dict)) {
        PyErr_Format(PyExc_TypeError, "fill_instance_dict() needs a dict, not %.200s",
                     Py_TYPE(instance_dict)->tp_name);
        return NULL;
    }
    PyDict_Clear(instance_dict);
    if (!PyDict_CheckExact(state)) {
        result = PyObject_CallMethod(instance_dict, "update", "(O)", state);
        Py_XDECREF(result);
        return result == NULL ? NULL : Py_NewRef(Py_None);
    }
    while (PyDict_Next(state, &position, &key, &value)) {
        int failed;
        /* Owned while set: interning may swap in the interned equal string. */
        Py_INCREF(key);
        Py_INCREF(value);
        if (PyUnicode_CheckExact(key)) {
            PyUnicode_InternInPlace(&key);
        }
        failed = PyDict_SetItem(instance_dict, key, value) < 0;
        Py_DECREF(key);
        Py_DECREF(value);
        if (failed) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"fill_instance_dict", (PyCFunction)(void (*)(void))m_fill_instance_dict, METH_FASTCALL,
     "fill_instance_dict(instance_dict, state): clear instance_dict and fill it\n"
     "from state, str names interned (see persistent.py)."},
    {"_setattribute", (PyCFunction)(void (*)(void))m_setattribute, METH_FASTCALL,
     "_setattribute(obj, name, value): set without noting a change."},
    {"_delattribute", (PyCFunction)(void (*)(void))m_delattribute, METH_FASTCALL,
     "_delattribute(obj, name): delete without noting a change."},
    {"_getattribute", (PyCFunction)(void (*)(void))m_getattribute, METH_FASTCALL,
     "_getattribute(obj, name): get without loading a ghost or noting an access."},
    {"_hasattribute", (PyCFunction)(void (*)(void))m_hasattribute, METH_FASTCALL,
     "_hasattribute(obj, name) -> bool, without loading a ghost."},
    {"cached_or_ghost", (PyCFunction)(void (*)(void))m_cached_or_ghost, METH_FASTCALL,
     "cached_or_ghost(objects, ref_type, on_death, connection, (oid, cls)) -> the\n"
     "cached object of oid if it is a cls, else a new ghost, filed in objects."},
    {"persistent_reference", (PyCFunction)(void (*)(void))m_persistent_reference, METH_FASTCALL,
     "persistent_reference(connection, refs, new_objects, obj) -> the pickler's\n"
     "persistent id of obj, None if it is not persistent (see persistent.py)."},
    {"call_if_persistent", (PyCFunction)(void (*)(void))m_call_if_persistent, METH_FASTCALL,
     "call_if_persistent(f, x): f(x) if x is persistent, else None."},
    {"persistent_class", (PyCFunction)m_persistent_class, METH_O,
     "persistent_class(obj) -> the class of obj, the persistent class C if obj\n"
     "is watched (its type is C's watched twin)."},
    {"watch", (PyCFunction)m_watch, METH_O,
     "watch(obj): make the persistent obj watched (its next read is seen)."},
    {NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "durus._persistent",
    .m_doc = "C implementation of durus.persistent's base classes.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
intern_names(void)
{
    str_p_load_state = PyUnicode_InternFromString("_p_load_state");
    str_p_note_change = PyUnicode_InternFromString("_p_note_change");
    str_note_access = PyUnicode_InternFromString("note_access");
    str_transaction_serial = PyUnicode_InternFromString("transaction_serial");
    str___new__ = PyUnicode_InternFromString("__new__");
    str_p_oid = PyUnicode_InternFromString("_p_oid");
    str_p_connection = PyUnicode_InternFromString("_p_connection");
    str_p_status = PyUnicode_InternFromString("_p_status");
    str_key = PyUnicode_InternFromString("key");
    str_new_oid = PyUnicode_InternFromString("new_oid");
    str_p_real_class = PyUnicode_InternFromString("_p_real_class");
    str_p_watched_class = PyUnicode_InternFromString("_p_watched_class");
    str___getattribute__ = PyUnicode_InternFromString("__getattribute__");
    str_watched_class = PyUnicode_InternFromString("watched_class");
    str___getattr__ = PyUnicode_InternFromString("__getattr__");
    ghost_status = PyLong_FromLong(GHOST);
    return (str_p_load_state && str_p_note_change && str_note_access
            && str_transaction_serial && str___new__ && str_p_oid && str_p_connection
            && str_p_status && str_key && ghost_status && str_p_real_class
            && str_p_watched_class && str___getattribute__ && str_watched_class
            && str___getattr__ && str_new_oid) ? 0 : -1;
}

PyMODINIT_FUNC
PyInit__persistent(void)
{
    PyObject *module;
    if (intern_names() < 0 || PyType_Ready(&PersistentBase_Type) < 0
            || PyType_Ready(&ConnectionBase_Type) < 0) {
        return NULL;
    }
    base_note_access = PyObject_GetAttr((PyObject *)&ConnectionBase_Type, str_note_access);
    if (base_note_access == NULL) {
        return NULL;
    }
    module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddType(module, &PersistentBase_Type) < 0
            || PyModule_AddType(module, &ConnectionBase_Type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
