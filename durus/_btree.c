/* durus._btree: the key search of durus.btree in C.
 *
 * _search(node, key) walks down from node as btree._search_py does: bisect
 * each node's items (sorted (key, value) pairs) with <, then compare with ==;
 * it reads node.items and node.nodes as attributes, so that ghosts load and
 * accesses are noted exactly as in Python.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *str_items;
static PyObject *str_nodes;

/* New reference to items[i][0]. */
static PyObject *
key_at(PyObject *items, Py_ssize_t i)
{
    PyObject *item = PySequence_GetItem(items, i);
    PyObject *key;
    if (item == NULL) {
        return NULL;
    }
    key = PySequence_GetItem(item, 0);
    Py_DECREF(item);
    return key;
}

/* bisect_left of key among the items' keys, or -1 on error. */
static Py_ssize_t
position_of(PyObject *items, PyObject *key, Py_ssize_t length)
{
    Py_ssize_t low = 0, high = length;
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        PyObject *item_key = key_at(items, middle);
        int less;
        if (item_key == NULL) {
            return -1;
        }
        less = PyObject_RichCompareBool(item_key, key, Py_LT);
        Py_DECREF(item_key);
        if (less < 0) {
            return -1;
        }
        if (less) {
            low = middle + 1;
        }
        else {
            high = middle;
        }
    }
    return low;
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

static PyObject *
search(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *node, *key;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_search(node, key) takes 2 arguments");
        return NULL;
    }
    node = args[0];
    key = args[1];
    Py_INCREF(node);
    while (1) {
        PyObject *items, *nodes, *child;
        Py_ssize_t length, i;
        int found;

        items = PyObject_GetAttr(node, str_items);
        if (items == NULL) {
            break;
        }
        length = PyObject_Length(items);
        i = length < 0 ? -1 : position_of(items, key, length);
        if (i < 0) {
            Py_DECREF(items);
            break;
        }
        found = i < length ? key_equals(items, i, key) : 0;
        if (found) {
            PyObject *item = found > 0 ? PySequence_GetItem(items, i) : NULL;
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
        child = PySequence_GetItem(nodes, i);
        Py_DECREF(nodes);
        if (child == NULL) {
            break;
        }
        Py_SETREF(node, child);
    }
    Py_DECREF(node);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"_search", (PyCFunction)(void (*)(void))search, METH_FASTCALL,
     "_search(node, key) -> the (key, value) item with this key under node, or None,\n"
     "as durus.btree._search_py."},
    {NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "durus._btree",
    .m_doc = "C implementation of durus.btree's key search.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__btree(void)
{
    str_items = PyUnicode_InternFromString("items");
    str_nodes = PyUnicode_InternFromString("nodes");
    if (str_items == NULL || str_nodes == NULL) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}
