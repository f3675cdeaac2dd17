/* durus._shelf: the transaction scan of durus.shelf in C.
 *
 * Opening a file checks and indexes every transaction written since its
 * last pack; in Python that costs about a microsecond a record. This is
 * scan_buffer() of shelf.py, with the same results and messages.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Must match shelf.py: the reserved oid, and the checksum record's data,
 * the class pickle of `object` then a 5-byte LONG1 pickle of the CRC-32. */
static const unsigned char CHECKSUM_DATA_HEAD[] =
    "\x80\x02" "c__builtin__\nobject\n" "q\x00" "." "\x80\x02\x8a\x05";
#define CHECKSUM_DATA_HEAD_LENGTH (sizeof(CHECKSUM_DATA_HEAD) - 1)
#define CHECKSUM_DATA_LENGTH (CHECKSUM_DATA_HEAD_LENGTH + 6)
#define CHECKSUM_NUMBER UINT64_MAX
#define RECORD_HEAD 28      /* int8 m, shelf oid, record oid, int4 len(data) */
#define MIN_RECORD_LENGTH 20

static PyObject *crc32_function;   /* zlib.crc32 */
static PyObject *array_type;       /* array.array */

static uint64_t
read_int8(const unsigned char *p)
{
    uint64_t value = 0;
    for (int i = 0; i < 8; i++) {
        value = (value << 8) | p[i];
    }
    return value;
}

static uint32_t
read_int4(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

typedef struct {
    int64_t *values;  /* oids are stored as their uint64 bits */
    Py_ssize_t length;
    Py_ssize_t capacity;
} Int64List;

static int
append(Int64List *list, int64_t value)
{
    if (list->length == list->capacity) {
        Py_ssize_t capacity = list->capacity ? 2 * list->capacity : 1024;
        int64_t *values = PyMem_Realloc(list->values, capacity * sizeof(int64_t));
        if (values == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        list->values = values;
        list->capacity = capacity;
    }
    list->values[list->length++] = value;
    return 0;
}

static PyObject *
as_array(Int64List *list, const char *typecode)
{
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)list->values,
                                                list->length * (Py_ssize_t)sizeof(int64_t));
    PyObject *result;
    if (bytes == NULL) {
        return NULL;
    }
    result = PyObject_CallFunction(array_type, "sO", typecode, bytes);
    Py_DECREF(bytes);
    return result;
}

/* 1 if the checksum record's data at p matches the CRC-32 of body, 0 if not, -1 on error. */
static int
checksum_matches(const unsigned char *p, const unsigned char *body, Py_ssize_t body_length)
{
    PyObject *view, *crc_object;
    unsigned long long crc;

    if (memcmp(p, "\xff\xff\xff\xff\xff\xff\xff\xff", 8) != 0
            || read_int4(p + 8) != CHECKSUM_DATA_LENGTH
            || memcmp(p + 12, CHECKSUM_DATA_HEAD, CHECKSUM_DATA_HEAD_LENGTH) != 0
            || p[12 + CHECKSUM_DATA_LENGTH - 1] != '.') {
        return 0;
    }
    view = PyMemoryView_FromMemory((char *)body, body_length, PyBUF_READ);
    if (view == NULL) {
        return -1;
    }
    crc_object = PyObject_CallOneArg(crc32_function, view);
    Py_DECREF(view);
    if (crc_object == NULL) {
        return -1;
    }
    crc = PyLong_AsUnsignedLongLong(crc_object);
    Py_DECREF(crc_object);
    if (crc == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    for (int i = 0; i < 5; i++) {
        if (p[12 + CHECKSUM_DATA_HEAD_LENGTH + i] != ((crc >> (8 * i)) & 0xff)) {
            return 0;
        }
    }
    return 1;
}

/* Check the transaction in buffer[start:end] and append its records.
 * Returns 0 if it is good, 1 with *reason set if it is bad, -1 on error.
 * A record that is not an object record (Shelf.store takes any value) is
 * good only in a transaction ending with a matching checksum. */
static int
check_transaction(const unsigned char *buffer, Py_ssize_t start, Py_ssize_t end,
                  long long base, Int64List *oids, Int64List *positions, PyObject **reason)
{
    Py_ssize_t count = oids->length;
    Py_ssize_t position = start + 8;
    Py_ssize_t loose = -1;  /* the first record that is not an object record */
    int checksummed = 0;

    *reason = NULL;
    while (position < end) {
        uint64_t length, oid, data_length;
        if (position + RECORD_HEAD > end) {
            *reason = PyUnicode_FromFormat("a record header is cut off at byte %lld",
                                           base + (long long)position);
            break;
        }
        length = read_int8(buffer + position);
        oid = read_int8(buffer + position + 8);
        data_length = read_int4(buffer + position + 24);
        if (length < MIN_RECORD_LENGTH || length > (uint64_t)(end - position - 8)
                || oid != read_int8(buffer + position + 16)
                || length - MIN_RECORD_LENGTH < data_length
                || (length - MIN_RECORD_LENGTH - data_length) % 8) {
            /* Durus's framing: the length covers at least the name. */
            if (oid != CHECKSUM_NUMBER && length >= 8 && length <= (uint64_t)(end - position - 8)) {
                if (loose == -1) {
                    loose = position;
                }
            }
            else {
                *reason = PyUnicode_FromFormat("malformed record at byte %lld",
                                               base + (long long)position);
                break;
            }
        }
        if (oid == CHECKSUM_NUMBER) {
            int matches = 0;
            if (position + 8 + (Py_ssize_t)length == end
                    && length == 8 + 12 + CHECKSUM_DATA_LENGTH) {
                matches = checksum_matches(buffer + position + 16, buffer + start + 8,
                                           position - start - 8);
                if (matches < 0) {
                    return -1;
                }
            }
            if (!matches) {
                *reason = PyUnicode_FromString("checksum mismatch");
                break;
            }
            checksummed = 1;
        }
        else if (append(oids, (int64_t)oid) < 0
                 || append(positions, base + (long long)position) < 0) {
            return -1;
        }
        position += 8 + (Py_ssize_t)length;
    }
    if (position == end) {
        if (loose == -1 || checksummed) {
            return 0;
        }
        *reason = PyUnicode_FromFormat("malformed record at byte %lld", base + (long long)loose);
    }
    oids->length = positions->length = count;
    return *reason == NULL ? -1 : 1;
}

/* What the transaction at the end of the buffer needs: 8 bytes when its
 * length field is cut, its 8 + length when it is incomplete, else 0. */
static PyObject *
needed_length(int length_cut, int incomplete, uint64_t claimed)
{
    PyObject *length, *eight, *sum;
    if (!incomplete) {
        return PyLong_FromLong(length_cut ? 8 : 0);
    }
    length = PyLong_FromUnsignedLongLong(claimed);  /* 8 + it may not fit in 64 bits */
    eight = PyLong_FromLong(8);
    sum = (length && eight) ? PyNumber_Add(length, eight) : NULL;
    Py_XDECREF(length);
    Py_XDECREF(eight);
    return sum;
}

static PyObject *
scan_buffer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    long long base;
    Int64List oids = {NULL, 0, 0}, positions = {NULL, 0, 0};
    long long empty_run_start = -1;
    Py_ssize_t start = 0;
    int length_cut = 0, incomplete = 0;
    uint64_t claimed = 0;
    PyObject *reason = NULL, *oid_array = NULL, *position_array = NULL, *result = NULL;
    const unsigned char *buffer;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "scan_buffer(buffer, base) takes 2 arguments");
        return NULL;
    }
    base = PyLong_AsLongLong(args[1]);
    if (base == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    buffer = view.buf;
    while (start < view.len) {
        uint64_t length;
        int status;
        if (start + 8 > view.len) {
            length_cut = 1;
            break;
        }
        length = read_int8(buffer + start);
        if (length > (uint64_t)(view.len - start - 8)) {
            incomplete = 1;
            claimed = length;
            break;
        }
        status = check_transaction(buffer, start, start + 8 + (Py_ssize_t)length, base,
                                   &oids, &positions, &reason);
        if (status < 0) {
            goto done;
        }
        if (status > 0) {
            break;
        }
        if (length == 0) {
            if (empty_run_start == -1) {
                empty_run_start = base + (long long)start;
            }
        }
        else {
            empty_run_start = -1;
        }
        start += 8 + (Py_ssize_t)length;
    }
    oid_array = as_array(&oids, "Q");
    position_array = as_array(&positions, "q");
    if (oid_array != NULL && position_array != NULL) {
        PyObject *needed_object = needed_length(length_cut, incomplete, claimed);
        if (needed_object != NULL) {
            result = Py_BuildValue("nOOLON", start, oid_array, position_array,
                                   empty_run_start, reason ? reason : Py_None, needed_object);
        }
    }
done:
    Py_XDECREF(reason);
    Py_XDECREF(oid_array);
    Py_XDECREF(position_array);
    PyMem_Free(oids.values);
    PyMem_Free(positions.values);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
assign_positions(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer dense, oids, positions;
    Py_ssize_t count, new_entries = 0;
    int64_t *slots;
    const uint64_t *oid_values;
    const int64_t *position_values;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "assign_positions(dense, oids, positions) takes 3 arguments");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &dense, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &oids, PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&dense);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &positions, PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&dense);
        PyBuffer_Release(&oids);
        return NULL;
    }
    if (dense.itemsize != 8 || oids.itemsize != 8 || positions.itemsize != 8
            || oids.len != positions.len) {
        PyErr_SetString(PyExc_TypeError, "expected 8-byte arrays, oids and positions alike long");
        goto fail;
    }
    slots = dense.buf;
    oid_values = oids.buf;
    position_values = positions.buf;
    count = oids.len / 8;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t n = oid_values[i];
        if (n >= (uint64_t)(dense.len / 8)) {
            PyErr_Format(PyExc_IndexError, "oid %llu is beyond the array", (unsigned long long)n);
            goto fail;
        }
        new_entries += slots[n] == 0;
        slots[n] = position_values[i];
    }
    PyBuffer_Release(&dense);
    PyBuffer_Release(&oids);
    PyBuffer_Release(&positions);
    return PyLong_FromSsize_t(new_entries);
fail:
    PyBuffer_Release(&dense);
    PyBuffer_Release(&oids);
    PyBuffer_Release(&positions);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"assign_positions", (PyCFunction)(void (*)(void))assign_positions, METH_FASTCALL,
     "assign_positions(dense, oids, positions) -> entries that were 0, as\n"
     "durus.shelf.assign_positions."},
    {"scan_buffer", (PyCFunction)(void (*)(void))scan_buffer, METH_FASTCALL,
     "scan_buffer(buffer, base) -> (end, oids, positions, empty_run_start, error, needed)\n"
     "as durus.shelf.scan_buffer."},
    {NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "durus._shelf",
    .m_doc = "C implementation of durus.shelf's transaction scan.",
    .m_size = -1,
    .m_methods = module_methods,
};

static PyObject *
import_attribute(const char *module_name, const char *name)
{
    PyObject *module = PyImport_ImportModule(module_name);
    PyObject *attribute;
    if (module == NULL) {
        return NULL;
    }
    attribute = PyObject_GetAttrString(module, name);
    Py_DECREF(module);
    return attribute;
}

PyMODINIT_FUNC
PyInit__shelf(void)
{
    crc32_function = import_attribute("zlib", "crc32");
    array_type = import_attribute("array", "array");
    if (crc32_function == NULL || array_type == NULL) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}
