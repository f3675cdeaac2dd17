/* durus._btree: the hot paths of durus.btree in C.
 *
 * Each function does what its pure-Python twin in btree.py (<name>_py) does,
 * step for step: it bisects each node's items (sorted (key, value) pairs)
 * with <, then compares with ==, and reads node.items, node.nodes and
 * tree.root as attributes, so that ghosts load and accesses are noted
 * exactly as in Python; changes are noted by calling _p_note_change().
 *
 * The BTree methods (_tree_add, ...) are exported as instance methods, so
 * that they bind to the tree as the Python functions do, without a Python
 * frame in between.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *str_items;
static PyObject *str_nodes;
static PyObject *str_root;
static PyObject *str_minimum_degree;
static PyObject *str_p_note_change;
static PyObject *str_split_child;
static PyObject *str_add;
static PyObject *str___class__;
static PyObject *add_method;   /* the exported _tree_add, to spot an override */

/* New reference to sequence[i], through the list and tuple fast paths. */
static PyObject *
item_at(PyObject *sequence, Py_ssize_t i)
{
    PyObject *item;
    if (PyList_CheckExact(sequence) && i < PyList_GET_SIZE(sequence)) {
        item = PyList_GET_ITEM(sequence, i);
    }
    else if (PyTuple_CheckExact(sequence) && i < PyTuple_GET_SIZE(sequence)) {
        item = PyTuple_GET_ITEM(sequence, i);
    }
    else {
        return PySequence_GetItem(sequence, i);
    }
    Py_INCREF(item);
    return item;
}

/* New reference to items[i][0]. */
static PyObject *
key_at(PyObject *items, Py_ssize_t i)
{
    PyObject *item = item_at(items, i);
    PyObject *key;
    if (item == NULL) {
        return NULL;
    }
    key = item_at(item, 0);
    Py_DECREF(item);
    return key;
}

/* bisect_left (bisect_right if after) of key among the items' keys, as
 * Python's bisect with key=itemgetter(0) compares; -1 on error. */
static Py_ssize_t
bisect_keys(PyObject *items, PyObject *key, Py_ssize_t length, int after)
{
    Py_ssize_t low = 0, high = length;
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        PyObject *item_key = key_at(items, middle);
        int before;  /* whether key goes before the middle item */
        if (item_key == NULL) {
            return -1;
        }
        before = after ? PyObject_RichCompareBool(key, item_key, Py_LT)
                       : !PyObject_RichCompareBool(item_key, key, Py_LT);
        Py_DECREF(item_key);
        if (PyErr_Occurred()) {
            return -1;
        }
        if (before) {
            high = middle;
        }
        else {
            low = middle + 1;
        }
    }
    return low;
}

/* bisect_left of key among the items' keys, or -1 on error. */
static Py_ssize_t
position_of(PyObject *items, PyObject *key, Py_ssize_t length)
{
    return bisect_keys(items, key, length, 0);
}

/* 1 if items[i][0] == key (by ==, as Python's _search compares), 0 if not, -1 on error. */
static int
key_equals(PyObject *items, Py_ssize_t i, PyObject *key)
{
    PyObject *item_key = key_at(items, i);
    PyObject *equal;
    int result;
    if (item_key == NULL) {
        return -1;
    }
    equal = PyObject_RichCompare(item_key, key, Py_EQ);
    Py_DECREF(item_key);
    if (equal == NULL) {
        return -1;
    }
    result = PyObject_IsTrue(equal);
    Py_DECREF(equal);
    return result;
}

/* Where key is in items: sets *position to bisect_left of key and returns 1
 * if the item there has the key, 0 if not, -1 on error. */
static int
find(PyObject *items, PyObject *key, Py_ssize_t *position)
{
    Py_ssize_t length = PyObject_Length(items);
    Py_ssize_t i = length < 0 ? -1 : position_of(items, key, length);
    if (i < 0) {
        return -1;
    }
    *position = i;
    return i < length ? key_equals(items, i, key) : 0;
}

static int
note_change(PyObject *node)
{
    PyObject *result = PyObject_CallMethodNoArgs(node, str_p_note_change);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* The (key, value) item with this key under node (new reference), Py_None
 * (new reference) if there is none, or NULL on error. */
static PyObject *
search_under(PyObject *node, PyObject *key)
{
    Py_INCREF(node);
    while (1) {
        PyObject *items, *nodes, *child;
        Py_ssize_t i;
        int found;

        items = PyObject_GetAttr(node, str_items);
        if (items == NULL) {
            break;
        }
        found = find(items, key, &i);
        if (found) {
            PyObject *item = found > 0 ? item_at(items, i) : NULL;
            Py_DECREF(items);
            Py_DECREF(node);
            return item;
        }
        Py_DECREF(items);
        nodes = PyObject_GetAttr(node, str_nodes);
        if (nodes == NULL) {
            break;
        }
        if (nodes == Py_None) {
            Py_DECREF(nodes);
            Py_DECREF(node);
            Py_RETURN_NONE;
        }
        child = item_at(nodes, i);
        Py_DECREF(nodes);
        if (child == NULL) {
            break;
        }
        Py_SETREF(node, child);
    }
    Py_DECREF(node);
    return NULL;
}

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t least, Py_ssize_t most)
{
    if (nargs < least || nargs > most) {
        PyErr_Format(PyExc_TypeError, "%s() takes from %zd to %zd arguments (%zd given)",
                     name, least, most, nargs);
        return 0;
    }
    return 1;
}

static PyObject *
search(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("_search", nargs, 2, 2)) {
        return NULL;
    }
    return search_under(args[0], args[1]);
}

/* items.insert(i, item), with the list fast path. */
static int
insert_at(PyObject *items, Py_ssize_t i, PyObject *item)
{
    PyObject *result;
    if (PyList_CheckExact(items)) {
        return PyList_Insert(items, i, item);
    }
    result = PyObject_CallMethod(items, "insert", "nO", i, item);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* node.split_child(i, child). */
static int
split_child(PyObject *node, Py_ssize_t i, PyObject *child)
{
    PyObject *position = PyLong_FromSsize_t(i);
    PyObject *result;
    if (position == NULL) {
        return -1;
    }
    result = PyObject_CallMethodObjArgs(node, str_split_child, position, child, NULL);
    Py_DECREF(position);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* btree._insert_py in C; steals nothing. 0 on success, -1 on error. */
static int
insert_under(PyObject *node, PyObject *items, PyObject *item, Py_ssize_t full)
{
    PyObject *key = item_at(item, 0);
    int status = -1;
    if (key == NULL) {
        return -1;
    }
    Py_INCREF(node);
    Py_INCREF(items);
    while (1) {
        PyObject *nodes, *child, *child_items;
        Py_ssize_t i, child_length;
        int found = find(items, key, &i);
        if (found < 0) {
            break;
        }
        if (found) {
            if (PySequence_SetItem(items, i, item) == 0) {
                status = note_change(node);
            }
            break;
        }
        nodes = PyObject_GetAttr(node, str_nodes);
        if (nodes == NULL) {
            break;
        }
        if (nodes == Py_None) {
            Py_DECREF(nodes);
            if (insert_at(items, i, item) == 0) {
                status = note_change(node);
            }
            break;
        }
        child = item_at(nodes, i);
        Py_DECREF(nodes);
        if (child == NULL) {
            break;
        }
        child_items = PyObject_GetAttr(child, str_items);
        child_length = child_items == NULL ? -1 : PyObject_Length(child_items);
        if (child_length < 0) {
            Py_XDECREF(child_items);
            Py_DECREF(child);
            break;
        }
        if (child_length == full) {
            /* Splitting full nodes on the way down leaves room for the item.
             * The child's median moved up into items[i]: look at node again. */
            int split = split_child(node, i, child);
            Py_DECREF(child_items);
            Py_DECREF(child);
            if (split < 0) {
                break;
            }
            continue;
        }
        Py_SETREF(node, child);
        Py_SETREF(items, child_items);
    }
    Py_DECREF(items);
    Py_DECREF(node);
    Py_DECREF(key);
    return status;
}

static PyObject *
insert(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t full;
    if (!check_nargs("_insert", nargs, 4, 4)) {
        return NULL;
    }
    full = PyLong_AsSsize_t(args[3]);
    if ((full == -1 && PyErr_Occurred()) || insert_under(args[0], args[1], args[2], full) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* 2 * node.minimum_degree - 1, or -1 on error. */
static Py_ssize_t
full_size(PyObject *node)
{
    PyObject *degree = PyObject_GetAttr(node, str_minimum_degree);
    Py_ssize_t t;
    if (degree == NULL) {
        return -1;
    }
    t = PyLong_AsSsize_t(degree);
    Py_DECREF(degree);
    if (t == -1 && PyErr_Occurred()) {
        return -1;
    }
    return 2 * t - 1;
}

/* A new root above the full root, split in two: btree._tree_add_py's growth
 * step. Returns the new root's items (new reference) and sets *root to the
 * new root, or NULL on error. */
static PyObject *
grow(PyObject *tree, PyObject **root)
{
    /* __class__, not the type: a watched root's type is its class's twin. */
    PyObject *cls = PyObject_GetAttr(*root, str___class__);
    PyObject *new_root = cls == NULL ? NULL : PyObject_CallNoArgs(cls);
    PyObject *nodes;
    Py_XDECREF(cls);
    if (new_root == NULL) {
        return NULL;
    }
    nodes = PyList_New(1);
    if (nodes == NULL) {
        Py_DECREF(new_root);
        return NULL;
    }
    Py_INCREF(*root);
    PyList_SET_ITEM(nodes, 0, *root);
    if (PyObject_SetAttr(new_root, str_nodes, nodes) < 0
            || split_child(new_root, 0, *root) < 0
            || PyObject_SetAttr(tree, str_root, new_root) < 0) {
        Py_DECREF(nodes);
        Py_DECREF(new_root);
        return NULL;
    }
    Py_DECREF(nodes);
    Py_SETREF(*root, new_root);
    return PyObject_GetAttr(new_root, str_items);
}

/* tree.add(key, value) in C: 0 on success, -1 on error. */
static int
add_item(PyObject *tree, PyObject *key, PyObject *value)
{
    PyObject *root, *items = NULL, *item = NULL;
    Py_ssize_t full, length;
    int status = -1;

    root = PyObject_GetAttr(tree, str_root);
    if (root == NULL) {
        return -1;
    }
    items = PyObject_GetAttr(root, str_items);
    if (items == NULL || (full = full_size(root)) < 0 || (length = PyObject_Length(items)) < 0) {
        goto done;
    }
    if (length == full) {
        Py_SETREF(items, grow(tree, &root));
        if (items == NULL) {
            goto done;
        }
    }
    item = PyTuple_Pack(2, key, value);
    if (item != NULL) {
        status = insert_under(root, items, item, full);
    }
done:
    Py_XDECREF(item);
    Py_XDECREF(items);
    Py_DECREF(root);
    return status;
}

static PyObject *
tree_add(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("add", nargs, 2, 3)
            || add_item(args[0], args[1], nargs > 2 ? args[2] : Py_True) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tree_setitem(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result;
    if (!check_nargs("__setitem__", nargs, 3, 3)) {
        return NULL;
    }
    /* self.add(key, value): straight to C unless a subclass overrides add. */
    if (_PyType_Lookup(Py_TYPE(args[0]), str_add) == add_method) {
        if (add_item(args[0], args[1], args[2]) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    result = PyObject_CallMethodObjArgs(args[0], str_add, args[1], args[2], NULL);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* The item with this key in tree (new reference), or Py_None, or NULL on error. */
static PyObject *
tree_search(PyObject *tree, PyObject *key)
{
    PyObject *root = PyObject_GetAttr(tree, str_root);
    PyObject *item;
    if (root == NULL) {
        return NULL;
    }
    item = search_under(root, key);
    Py_DECREF(root);
    return item;
}

/* item[1] (new reference); steals item. */
static PyObject *
value_of(PyObject *item)
{
    PyObject *value = item_at(item, 1);
    Py_DECREF(item);
    return value;
}

static PyObject *
tree_getitem(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *item;
    if (!check_nargs("__getitem__", nargs, 2, 2)) {
        return NULL;
    }
    item = tree_search(args[0], args[1]);
    if (item == Py_None) {
        /* KeyError(key), made so that a tuple key is not taken as the args. */
        PyObject *error = PyObject_CallOneArg(PyExc_KeyError, args[1]);
        Py_DECREF(item);
        if (error != NULL) {
            PyErr_SetObject(PyExc_KeyError, error);
            Py_DECREF(error);
        }
        return NULL;
    }
    return item == NULL ? NULL : value_of(item);
}

static PyObject *
tree_get(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *item;
    if (!check_nargs("get", nargs, 2, 3)) {
        return NULL;
    }
    item = tree_search(args[0], args[1]);
    if (item == Py_None) {
        PyObject *fallback = nargs > 2 ? args[2] : Py_None;
        Py_DECREF(item);
        Py_INCREF(fallback);
        return fallback;
    }
    return item == NULL ? NULL : value_of(item);
}

static PyObject *
tree_contains(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *item;
    if (!check_nargs("__contains__", nargs, 2, 2)) {
        return NULL;
    }
    item = tree_search(args[0], args[1]);
    if (item == NULL) {
        return NULL;
    }
    Py_DECREF(item);
    return PyBool_FromLong(item != Py_None);
}

/* ---- _walk: the items under a node, in key order, as durus.btree._walk_py. ---- */

enum { PART_ITEM = 0, PART_KEY = 1, PART_VALUE = 2 };

/* A node on the path down to the leaf being walked: nodes[i] is the child
 * last descended into (ascending: items[i] comes next; descending:
 * items[i - 1] does). */
typedef struct {
    PyObject *items;
    PyObject *nodes;
    Py_ssize_t i;
} Frame;

typedef struct {
    PyObject_HEAD
    PyObject *node;         /* to descend into at the next step, or NULL */
    PyObject *leaf;         /* iterator over the leaf's items being walked, or NULL */
    Frame *path;
    Py_ssize_t depth;
    Py_ssize_t capacity;
    PyObject *start_key;    /* NULL: from the first (last) item */
    int start_closed;       /* whether the item with the start key is walked */
    PyObject *end_key;      /* NULL: to the end */
    int end_closed;
    int descending;         /* -1: decided at the first step, by start <= end */
    int part;
    int started;
    int child_pending;      /* go down into the top frame's nodes[i] next */
    int running;
    int finished;
} WalkObject;

static PyTypeObject Walk_Type;

/* Where to start in items on the way down, as the Python twin's position
 * functions: the first step's start, else 0 (ascending) or len(items). */
static Py_ssize_t
start_position(WalkObject *walk, PyObject *items, int first)
{
    Py_ssize_t length;
    if (!first || walk->start_key == NULL) {
        return walk->descending ? PyObject_Length(items) : 0;
    }
    length = PyObject_Length(items);
    if (length < 0) {
        return -1;
    }
    /* Ascending, a closed start begins at its key; descending, just after it. */
    return bisect_keys(items, walk->start_key, length, walk->start_closed == walk->descending);
}

static int
push_frame(WalkObject *walk, PyObject *items, PyObject *nodes, Py_ssize_t i)
{
    if (walk->depth == walk->capacity) {
        Py_ssize_t capacity = walk->capacity ? 2 * walk->capacity : 8;
        Frame *path = PyMem_Realloc(walk->path, capacity * sizeof(Frame));
        if (path == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        walk->path = path;
        walk->capacity = capacity;
    }
    Py_INCREF(items);
    Py_INCREF(nodes);
    walk->path[walk->depth].items = items;
    walk->path[walk->depth].nodes = nodes;
    walk->path[walk->depth].i = i;
    walk->depth++;
    return 0;
}

static void
pop_frame(WalkObject *walk)
{
    Frame *frame = &walk->path[--walk->depth];
    Py_CLEAR(frame->items);
    Py_CLEAR(frame->nodes);
}

/* An iterator over a leaf's items: items itself from position 0, else a
 * copy of the part walked (reversed when descending), as the Python twin. */
static PyObject *
leaf_iterator(WalkObject *walk, PyObject *items, Py_ssize_t i)
{
    PyObject *part, *iterator;
    if (!walk->descending) {
        part = i ? PySequence_GetSlice(items, i, PY_SSIZE_T_MAX) : Py_NewRef(items);
        iterator = part == NULL ? NULL : PyObject_GetIter(part);
    }
    else {
        part = PySequence_GetSlice(items, 0, i);
        iterator = part == NULL ? NULL
                   : PyObject_CallOneArg((PyObject *)&PyReversed_Type, part);
    }
    Py_XDECREF(part);
    return iterator;
}

/* Go down from walk->node to a leaf, leaving walk->leaf set: 0, or -1 on error. */
static int
descend(WalkObject *walk)
{
    int first = !walk->started;
    walk->started = 1;
    while (1) {
        PyObject *node = walk->node, *items, *nodes, *child;
        Py_ssize_t i;
        items = PyObject_GetAttr(node, str_items);
        if (items == NULL) {
            return -1;
        }
        nodes = PyObject_GetAttr(node, str_nodes);
        if (nodes == NULL) {
            Py_DECREF(items);
            return -1;
        }
        i = start_position(walk, items, first);
        if (i < 0) {
            Py_DECREF(items);
            Py_DECREF(nodes);
            return -1;
        }
        if (nodes == Py_None) {
            Py_DECREF(nodes);
            Py_CLEAR(walk->node);
            walk->leaf = leaf_iterator(walk, items, i);
            Py_DECREF(items);
            return walk->leaf == NULL ? -1 : 0;
        }
        if (push_frame(walk, items, nodes, i) < 0) {
            Py_DECREF(items);
            Py_DECREF(nodes);
            return -1;
        }
        child = item_at(nodes, i);
        Py_DECREF(items);
        Py_DECREF(nodes);
        if (child == NULL) {
            return -1;
        }
        Py_SETREF(walk->node, child);
    }
}

/* The next item from the path above the leaf, setting walk->node to the
 * child to go down into after it; NULL without an error when done. */
static PyObject *
climb(WalkObject *walk)
{
    while (walk->depth > 0) {
        Frame *frame = &walk->path[walk->depth - 1];
        PyObject *item;
        if (!walk->descending) {
            Py_ssize_t length = PyObject_Length(frame->items);
            if (length < 0) {
                return NULL;
            }
            if (frame->i < length) {
                item = item_at(frame->items, frame->i);
                frame->i++;
                return item;
            }
        }
        else if (frame->i) {
            frame->i--;
            return item_at(frame->items, frame->i);
        }
        pop_frame(walk);
    }
    return NULL;
}

/* Whether item's key is within the end bound: 1, 0 (past it), -1 on error. */
static int
within_end(WalkObject *walk, PyObject *item)
{
    PyObject *key;
    int within;
    if (walk->end_key == NULL) {
        return 1;
    }
    key = item_at(item, 0);
    if (key == NULL) {
        return -1;
    }
    within = walk->descending ? PyObject_RichCompareBool(walk->end_key, key, Py_LT)
                              : PyObject_RichCompareBool(key, walk->end_key, Py_LT);
    if (within == 0 && walk->end_closed) {
        within = PyObject_RichCompareBool(key, walk->end_key, Py_EQ);
    }
    Py_DECREF(key);
    return within;
}

/* The part of item wanted (item, its key or its value); steals item. A
 * failure here leaves the walk going on, as map() in the Python twin does. */
static PyObject *
item_part(WalkObject *walk, PyObject *item)
{
    PyObject *part;
    if (walk->part == PART_ITEM) {
        return item;
    }
    part = item_at(item, walk->part == PART_KEY ? 0 : 1);
    Py_DECREF(item);
    return part;
}

static PyObject *
next_item(WalkObject *walk)
{
    PyObject *item;
    if (walk->descending < 0) {
        int ascending = PyObject_RichCompareBool(walk->start_key, walk->end_key, Py_LE);
        if (ascending < 0) {
            return NULL;
        }
        walk->descending = !ascending;
    }
    while (1) {
        if (walk->leaf != NULL) {
            item = PyIter_Next(walk->leaf);
            if (item != NULL || PyErr_Occurred()) {
                return item;
            }
            Py_CLEAR(walk->leaf);
        }
        else if (walk->node != NULL) {
            if (descend(walk) < 0) {
                return NULL;
            }
        }
        else if (walk->child_pending) {
            /* The child after the item climbed to, fetched once it was taken. */
            Frame *frame = &walk->path[walk->depth - 1];
            walk->child_pending = 0;
            walk->node = item_at(frame->nodes, frame->i);
            if (walk->node == NULL) {
                return NULL;
            }
        }
        else {
            item = climb(walk);
            walk->child_pending = item != NULL;
            return item;
        }
    }
}

static void
finish(WalkObject *walk)
{
    walk->finished = 1;
    Py_CLEAR(walk->node);
    Py_CLEAR(walk->leaf);
    while (walk->depth > 0) {
        pop_frame(walk);
    }
}

static PyObject *
walk_iternext(WalkObject *walk)
{
    PyObject *item;
    int within;
    if (walk->finished) {
        return NULL;
    }
    if (walk->running) {
        /* Loading a node ran code that asked this walk for its next item. */
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    walk->running = 1;
    item = next_item(walk);
    walk->running = 0;
    if (item == NULL) {
        finish(walk);
        return NULL;
    }
    within = within_end(walk, item);
    if (within <= 0) {
        Py_DECREF(item);
        finish(walk);
        return NULL;
    }
    return item_part(walk, item);
}

static int
walk_traverse(WalkObject *walk, visitproc visit, void *arg)
{
    Py_ssize_t i;
    Py_VISIT(walk->node);
    Py_VISIT(walk->leaf);
    Py_VISIT(walk->start_key);
    Py_VISIT(walk->end_key);
    for (i = 0; i < walk->depth; i++) {
        Py_VISIT(walk->path[i].items);
        Py_VISIT(walk->path[i].nodes);
    }
    return 0;
}

static int
walk_clear(WalkObject *walk)
{
    finish(walk);
    Py_CLEAR(walk->start_key);
    Py_CLEAR(walk->end_key);
    return 0;
}

static void
walk_dealloc(WalkObject *walk)
{
    PyObject_GC_UnTrack(walk);
    walk_clear(walk);
    PyMem_Free(walk->path);
    PyObject_GC_Del(walk);
}

static PyTypeObject Walk_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "durus._btree.Walk",
    .tp_basicsize = sizeof(WalkObject),
    .tp_dealloc = (destructor)walk_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An iterator over the items under a BNode (see durus.btree._walk).",
    .tp_traverse = (traverseproc)walk_traverse,
    .tp_clear = (inquiry)walk_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)walk_iternext,
};

/* Unpacks a (key, flag) bound, or None, into *key (borrowed) and *flag. */
static int
unpack_bound(const char *name, PyObject *bound, PyObject **key, int *flag)
{
    if (bound == Py_None) {
        *key = NULL;
        return 0;
    }
    if (!PyTuple_Check(bound) || PyTuple_GET_SIZE(bound) != 2) {
        PyErr_Format(PyExc_TypeError, "_walk() %s must be None or (key, flag), not %R",
                     name, bound);
        return -1;
    }
    *key = PyTuple_GET_ITEM(bound, 0);
    *flag = PyObject_IsTrue(PyTuple_GET_ITEM(bound, 1));
    return *flag < 0 ? -1 : 0;
}

/* _walk(node, descending, start, part, end): see durus.btree._walk_py. */
static PyObject *
walk(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    WalkObject *walk;
    PyObject *start_key, *end_key;
    int start_closed = 0, end_closed = 0, descending = -1;
    long part;
    if (!check_nargs("_walk", nargs, 5, 5)
            || unpack_bound("start", args[2], &start_key, &start_closed) < 0
            || unpack_bound("end", args[4], &end_key, &end_closed) < 0) {
        return NULL;
    }
    part = PyLong_AsLong(args[3]);
    if (part == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (part < PART_ITEM || part > PART_VALUE) {
        PyErr_Format(PyExc_ValueError, "_walk() part must be 0, 1 or 2, not %ld", part);
        return NULL;
    }
    if (args[1] != Py_None) {
        descending = PyObject_IsTrue(args[1]);
        if (descending < 0) {
            return NULL;
        }
    }
    else if (start_key == NULL || end_key == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "_walk() needs a start and an end to choose the direction");
        return NULL;
    }
    walk = PyObject_GC_New(WalkObject, &Walk_Type);
    if (walk == NULL) {
        return NULL;
    }
    walk->node = Py_NewRef(args[0]);
    walk->leaf = NULL;
    walk->path = NULL;
    walk->depth = walk->capacity = 0;
    walk->start_key = Py_XNewRef(start_key);
    walk->start_closed = start_closed;
    walk->end_key = Py_XNewRef(end_key);
    walk->end_closed = end_closed;
    walk->descending = descending;
    walk->part = (int)part;
    walk->started = walk->child_pending = walk->running = walk->finished = 0;
    PyObject_GC_Track(walk);
    return (PyObject *)walk;
}

static PyMethodDef module_methods[] = {
    {"_search", (PyCFunction)(void (*)(void))search, METH_FASTCALL,
     "_search(node, key) -> the (key, value) item with this key under node, or None,\n"
     "as durus.btree._search_py."},
    {"_insert", (PyCFunction)(void (*)(void))insert, METH_FASTCALL,
     "_insert(node, items, item, full): add item under node, as durus.btree._insert_py."},
    {"_walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL,
     "_walk(node, descending, start, part, end) -> an iterator over the items under\n"
     "node, as durus.btree._walk_py."},
    {NULL}
};

/* BTree methods, exported wrapped as instance methods. */
static PyMethodDef tree_methods[] = {
    {"_tree_add", (PyCFunction)(void (*)(void))tree_add, METH_FASTCALL,
     "add(key, value=True): set self[key] = value, as durus.btree._tree_add_py."},
    {"_tree_setitem", (PyCFunction)(void (*)(void))tree_setitem, METH_FASTCALL,
     "__setitem__(key, value): self.add(key, value)."},
    {"_tree_getitem", (PyCFunction)(void (*)(void))tree_getitem, METH_FASTCALL,
     "__getitem__(key) -> the value of key; KeyError if absent."},
    {"_tree_get", (PyCFunction)(void (*)(void))tree_get, METH_FASTCALL,
     "get(key, default=None) -> the value of key, or default if absent."},
    {"_tree_contains", (PyCFunction)(void (*)(void))tree_contains, METH_FASTCALL,
     "__contains__(key) -> bool: whether the tree has key."},
    {NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "durus._btree",
    .m_doc = "C implementation of durus.btree's hot paths.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
intern_names(void)
{
    str_items = PyUnicode_InternFromString("items");
    str_nodes = PyUnicode_InternFromString("nodes");
    str_root = PyUnicode_InternFromString("root");
    str_minimum_degree = PyUnicode_InternFromString("minimum_degree");
    str_p_note_change = PyUnicode_InternFromString("_p_note_change");
    str_split_child = PyUnicode_InternFromString("split_child");
    str_add = PyUnicode_InternFromString("add");
    str___class__ = PyUnicode_InternFromString("__class__");
    return (str_items && str_nodes && str_root && str_minimum_degree && str_p_note_change
            && str_split_child && str_add && str___class__) ? 0 : -1;
}

/* Adds each of tree_methods to module as an instance method. */
static int
add_tree_methods(PyObject *module)
{
    PyMethodDef *def;
    for (def = tree_methods; def->ml_name != NULL; def++) {
        PyObject *function = PyCFunction_NewEx(def, NULL, NULL);
        PyObject *method = function == NULL ? NULL : PyInstanceMethod_New(function);
        Py_XDECREF(function);
        if (method == NULL) {
            return -1;
        }
        if (def == tree_methods) {
            Py_INCREF(method);
            add_method = method;
        }
        if (PyModule_AddObject(module, def->ml_name, method) < 0) {
            Py_DECREF(method);
            return -1;
        }
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__btree(void)
{
    PyObject *module;
    if (intern_names() < 0) {
        return NULL;
    }
    if (PyType_Ready(&Walk_Type) < 0) {
        return NULL;
    }
    module = PyModule_Create(&module_def);
    if (module != NULL && add_tree_methods(module) < 0) {
        Py_CLEAR(module);
    }
    return module;
}
