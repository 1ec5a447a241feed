/* greenlet's C API: the capsule "greenlet._C_API".
 *
 * C code built against greenlet's greenlet.h calls PyGreenlet_Import(), which
 * imports the module `greenlet` (stackful.greenlet once install() ran) and
 * takes its `_C_API` capsule: an array of pointers in the header's order.
 * Each entry keeps greenlet's conventions: functions returning an object give
 * a new reference or NULL with an exception set (PyGreenlet_GetParent may
 * return NULL without one: a main greenlet), the int ones -1 with an
 * exception set for something that is not a greenlet.
 */
#include "greenlet_type.h"

/* The header's slot numbers; the order is the ABI. */
enum {
    API_TYPE,
    API_ERROR,
    API_GREENLET_EXIT,
    API_NEW,
    API_GET_CURRENT,
    API_THROW,
    API_SWITCH,
    API_SET_PARENT,
    API_MAIN,
    API_STARTED,
    API_ACTIVE,
    API_GET_PARENT,
    API_COUNT
};
_Static_assert(API_COUNT == 12, "greenlet.h's PyGreenlet_API_pointers");

static void *api[API_COUNT];

static int is_greenlet(PyObject *o)
{
    if (o && PyObject_TypeCheck(o, &GreenletType))
        return 1;
    PyErr_BadArgument();
    return 0;
}

/* greenlet(run, parent), through the type as a call from Python would go. */
static PyObject *api_new(PyObject *run, PyObject *parent)
{
    PyObject *kwargs = PyDict_New();
    if (!kwargs)
        return NULL;
    if ((run && PyDict_SetItemString(kwargs, "run", run) < 0) ||
        (parent && PyDict_SetItemString(kwargs, "parent", parent) < 0)) {
        Py_DECREF(kwargs);
        return NULL;
    }
    PyObject *args = PyTuple_New(0);
    PyObject *g = args ? PyObject_Call((PyObject *)&GreenletType, args, kwargs) : NULL;
    Py_XDECREF(args);
    Py_DECREF(kwargs);
    return g;
}

static PyObject *api_get_current(void)
{
    return sf_greenlet_getcurrent();
}

static PyObject *api_throw(PyObject *g, PyObject *typ, PyObject *val, PyObject *tb)
{
    if (!is_greenlet(g))
        return NULL;
    return sf_greenlet_throw((Greenlet *)g, typ, val, tb);
}

static PyObject *api_switch(PyObject *g, PyObject *args, PyObject *kwargs)
{
    if (!is_greenlet(g))
        return NULL;
    if (args && !PyTuple_Check(args)) {
        PyErr_BadArgument();
        return NULL;
    }
    if (kwargs && !PyDict_Check(kwargs))
        kwargs = NULL;  /* as greenlet: anything but a dict means none */
    return sf_greenlet_switch_tuple((Greenlet *)g, args, kwargs);
}

static int api_set_parent(PyObject *g, PyObject *parent)
{
    if (!is_greenlet(g))
        return -1;
    return sf_greenlet_set_parent((Greenlet *)g, parent);
}

static int api_main(PyObject *g)
{
    if (!is_greenlet(g))
        return -1;
    Fiber *f = ((Greenlet *)g)->fiber;
    return f->parent == NULL;
}

static int api_started(PyObject *g)
{
    if (!is_greenlet(g))
        return -1;
    return ((Greenlet *)g)->fiber->state != FIBER_NEW;
}

static int api_active(PyObject *g)
{
    if (!is_greenlet(g))
        return -1;
    int state = ((Greenlet *)g)->fiber->state;
    return state == FIBER_RUNNING || state == FIBER_SUSPENDED;
}

static PyObject *api_get_parent(PyObject *g)
{
    if (!is_greenlet(g))
        return NULL;
    Fiber *p = ((Greenlet *)g)->fiber->parent;
    return p ? sf_greenlet_of(p) : NULL;
}

int sf_greenlet_abi_init(PyObject *m)
{
    api[API_TYPE] = &GreenletType;
    api[API_ERROR] = FiberError;
    api[API_GREENLET_EXIT] = GreenletExit;
    api[API_NEW] = (void *)api_new;
    api[API_GET_CURRENT] = (void *)api_get_current;
    api[API_THROW] = (void *)api_throw;
    api[API_SWITCH] = (void *)api_switch;
    api[API_SET_PARENT] = (void *)api_set_parent;
    api[API_MAIN] = (void *)api_main;
    api[API_STARTED] = (void *)api_started;
    api[API_ACTIVE] = (void *)api_active;
    api[API_GET_PARENT] = (void *)api_get_parent;
    PyObject *capsule = PyCapsule_New(api, "greenlet._C_API", NULL);
    if (!capsule)
        return -1;
    if (PyModule_AddObject(m, "_greenlet_C_API", capsule) < 0) {
        Py_DECREF(capsule);
        return -1;
    }
    return 0;
}
