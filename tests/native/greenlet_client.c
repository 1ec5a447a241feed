/* A C extension that uses greenlet's C API the way code built against
 * greenlet's greenlet.h does (tests/test_greenlet_abi.py builds and drives
 * it): the capsule "greenlet._C_API" taken through `import greenlet`, each
 * slot of its table called by number, and a C subclass of the greenlet type
 * whose own fields start right after greenlet's 40-byte PyGreenlet, as
 * Cython lays out gevent's Greenlet.
 *
 * The declarations below are this test's own statement of that ABI (slot
 * numbers, the object layout), written from greenlet's documentation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

typedef struct {
    PyObject_HEAD
    PyObject *weakreflist;
    PyObject *dict;
    void *pimpl;
} PyGreenlet;

enum {
    SLOT_TYPE, SLOT_ERROR, SLOT_EXIT, SLOT_NEW, SLOT_GET_CURRENT, SLOT_THROW, SLOT_SWITCH,
    SLOT_SET_PARENT, SLOT_MAIN, SLOT_STARTED, SLOT_ACTIVE, SLOT_GET_PARENT,
};

static void **api;

#define GreenletType ((PyTypeObject *)api[SLOT_TYPE])
#define Greenlet_New ((PyObject *(*)(PyObject *, PyObject *))api[SLOT_NEW])
#define Greenlet_GetCurrent ((PyObject *(*)(void))api[SLOT_GET_CURRENT])
#define Greenlet_Throw ((PyObject *(*)(PyObject *, PyObject *, PyObject *, PyObject *))api[SLOT_THROW])
#define Greenlet_Switch ((PyObject *(*)(PyObject *, PyObject *, PyObject *))api[SLOT_SWITCH])
#define Greenlet_SetParent ((int (*)(PyObject *, PyObject *))api[SLOT_SET_PARENT])
#define Greenlet_Main ((int (*)(PyObject *))api[SLOT_MAIN])
#define Greenlet_Started ((int (*)(PyObject *))api[SLOT_STARTED])
#define Greenlet_Active ((int (*)(PyObject *))api[SLOT_ACTIVE])
#define Greenlet_GetParent ((PyObject *(*)(PyObject *))api[SLOT_GET_PARENT])

/* ---- a C subclass with fields of its own after PyGreenlet ---- */

typedef struct {
    PyGreenlet base;
    PyObject *payload;   /* must survive switches untouched */
    long long marker;
} Sub;

#define MARKER 0x5A5A5A5A12345678LL

static int Sub_init(Sub *self, PyObject *args, PyObject *kwds)
{
    if (GreenletType->tp_init((PyObject *)self, args, kwds) < 0)
        return -1;
    self->marker = MARKER;
    Py_XSETREF(self->payload, PyList_New(0));
    return self->payload ? 0 : -1;
}

static int Sub_traverse(Sub *self, visitproc visit, void *arg)
{
    Py_VISIT(self->payload);
    return GreenletType->tp_traverse((PyObject *)self, visit, arg);
}

static int Sub_clear(Sub *self)
{
    Py_CLEAR(self->payload);
    return GreenletType->tp_clear((PyObject *)self);
}

static void Sub_dealloc(Sub *self)
{
    /* As Cython does: the finalizer (greenlet's kill) first, then our fields,
     * then the base's deallocation. */
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return;
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->payload);
    self->marker = 0;
    PyObject_GC_Track(self);
    GreenletType->tp_dealloc((PyObject *)self);
}

static PyObject *Sub_check(Sub *self, PyObject *Py_UNUSED(ignored))
{
    if (self->marker != MARKER || !self->payload || !PyList_CheckExact(self->payload)) {
        PyErr_SetString(PyExc_AssertionError, "the subclass's own fields were overwritten");
        return NULL;
    }
    return Py_NewRef(self->payload);
}

static PyMethodDef Sub_methods[] = {
    {"check", (PyCFunction)Sub_check, METH_NOARGS, "the payload, if the fields are intact"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SubType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenlet_client.Sub",
    .tp_basicsize = sizeof(Sub),
    .tp_dealloc = (destructor)Sub_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Sub_traverse,
    .tp_clear = (inquiry)Sub_clear,
    .tp_methods = Sub_methods,
    .tp_init = (initproc)Sub_init,
};

/* ---- each slot of the table, callable from Python ---- */

static PyObject *c_new(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *run = NULL, *parent = NULL;
    if (!PyArg_ParseTuple(args, "|OO", &run, &parent))
        return NULL;
    return Greenlet_New(run == Py_None ? NULL : run, parent == Py_None ? NULL : parent);
}

static PyObject *c_getcurrent(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return Greenlet_GetCurrent();
}

static PyObject *c_switch(PyObject *m, PyObject *args, PyObject *kwargs)
{
    (void)m;
    PyObject *g = PyTuple_GetItem(args, 0);
    if (!g)
        return NULL;
    PyObject *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    if (!rest)
        return NULL;
    PyObject *r = Greenlet_Switch(g, rest, kwargs);
    Py_DECREF(rest);
    return r;
}

static PyObject *c_throw(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *g, *typ, *val = NULL, *tb = NULL;
    if (!PyArg_ParseTuple(args, "OO|OO", &g, &typ, &val, &tb))
        return NULL;
    return Greenlet_Throw(g, typ, val, tb);
}

static PyObject *c_set_parent(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *g, *p;
    if (!PyArg_ParseTuple(args, "OO", &g, &p))
        return NULL;
    if (Greenlet_SetParent(g, p) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *c_flags(PyObject *m, PyObject *g)
{
    (void)m;
    int main = Greenlet_Main(g), started = Greenlet_Started(g), active = Greenlet_Active(g);
    if (main < 0 || started < 0 || active < 0)
        return NULL;
    return Py_BuildValue("(iii)", main, started, active);
}

static PyObject *c_get_parent(PyObject *m, PyObject *g)
{
    (void)m;
    PyObject *p = Greenlet_GetParent(g);
    if (!p && !PyErr_Occurred())
        Py_RETURN_NONE;  /* a main greenlet: NULL without an exception */
    return p;
}

static PyObject *c_objects(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return Py_BuildValue("(OOO)", (PyObject *)api[SLOT_TYPE], (PyObject *)api[SLOT_ERROR],
                         (PyObject *)api[SLOT_EXIT]);
}

static PyObject *c_layout(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return Py_BuildValue("(nnnnn)", (Py_ssize_t)sizeof(PyGreenlet), GreenletType->tp_basicsize,
                         GreenletType->tp_weaklistoffset, GreenletType->tp_dictoffset,
                         (Py_ssize_t)offsetof(PyGreenlet, pimpl));
}

static PyMethodDef functions[] = {
    {"new", c_new, METH_VARARGS, NULL},
    {"getcurrent", c_getcurrent, METH_NOARGS, NULL},
    {"switch", (PyCFunction)(void (*)(void))c_switch, METH_VARARGS | METH_KEYWORDS, NULL},
    {"throw", c_throw, METH_VARARGS, NULL},
    {"set_parent", c_set_parent, METH_VARARGS, NULL},
    {"flags", c_flags, METH_O, NULL},
    {"get_parent", c_get_parent, METH_O, NULL},
    {"objects", c_objects, METH_NOARGS, NULL},
    {"layout", c_layout, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "greenlet_client", NULL, -1, functions,
};

PyMODINIT_FUNC PyInit_greenlet_client(void)
{
    api = (void **)PyCapsule_Import("greenlet._C_API", 0);
    if (!api)
        return NULL;
    SubType.tp_base = GreenletType;
    if (PyType_Ready(&SubType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Sub", (PyObject *)&SubType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
