/* The module stackful._native: its functions, and the order in which its
 * parts are set up. */
#include "fiber_internal.h"
#include "greenlet_type.h"
#include "poller.h"
#include "scheduler.h"
#include "timers.h"

#include <structmember.h>
#include <time.h>

PyDoc_STRVAR(current_doc, "current()\n--\n\nThe fiber running now (a thread's root fiber outside any other).");

static PyObject *mod_current(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    sf_thread *th = current_thread();
    return th ? Py_NewRef((PyObject *)th->current) : NULL;
}

PyDoc_STRVAR(get_default_stack_size_doc,
"get_default_stack_size()\n--\n\nThe stack_size new fibers get when they name none.");

static PyObject *mod_get_default_stack_size(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyLong_FromSize_t(sf_default_stack_size);
}

PyDoc_STRVAR(set_default_stack_size_doc,
"set_default_stack_size(size)\n--\n\n"
"Set the stack_size of fibers created later without one (rounded up to\n"
"whole pages; ValueError below MIN_STACK_SIZE).");

static PyObject *mod_set_default_stack_size(PyObject *m, PyObject *arg)
{
    (void)m;
    long long requested = PyLong_AsLongLong(arg);
    if (requested == -1 && PyErr_Occurred())
        return NULL;
    size_t size;
    if (sf_stack_normalize_size(requested, &size) < 0)
        return NULL;
    sf_default_stack_size = size;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stack_pool_doc,
"stack_pool(limit=None)\n--\n\n"
"Report the pool of finished fibers' stacks kept for reuse, after setting\n"
"its limit (a count of stacks, 1024 by default) if one is given: a dict with\n"
"'pooled' (stacks kept with their pages: reuse is free), 'limit', 'cold'\n"
"(stacks past the limit whose pages went back to the system but whose\n"
"mapping is kept, up to 16384: reuse costs a page fault or two),\n"
"'mapped_bytes' (live and pooled stacks) and 'guard_method'.");

static PyObject *mod_stack_pool(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "stack_pool() takes at most one argument");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        Py_ssize_t limit = PyLong_AsSsize_t(args[0]);
        if (limit == -1 && PyErr_Occurred())
            return NULL;
        if (limit < 0) {
            PyErr_SetString(PyExc_ValueError, "the pool limit cannot be negative");
            return NULL;
        }
        sf_stack_pool_set_limit((size_t)limit);
    }
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:s}", "pooled", (Py_ssize_t)sf_stack_pool_count(),
                         "limit", (Py_ssize_t)sf_stack_pool_limit(), "cold",
                         (Py_ssize_t)sf_stack_pool_cold_count(), "mapped_bytes",
                         (Py_ssize_t)sf_stack_mapped_bytes(), "guard_method",
                         sf_stack_guard_method());
}

PyDoc_STRVAR(clear_stack_pool_doc,
"clear_stack_pool()\n--\n\nUnmap every pooled stack; returns how many.");

static PyObject *mod_clear_stack_pool(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyLong_FromSize_t(sf_stack_pool_clear());
}

PyDoc_STRVAR(stack_pointer_doc,
"stack_pointer()\n--\n\nThe C stack pointer of the caller, roughly (for demos and tests).");

static PyObject *mod_stack_pointer(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyLong_FromVoidPtr(__builtin_frame_address(0));
}

PyDoc_STRVAR(switch_frame_layout_doc,
"switch_frame_layout()\n--\n\n"
"The assembly switch's saved-frame layout on this machine: a dict with its\n"
"size, the offsets (from the saved stack pointer) of the resume address and\n"
"of the registers that carry a fresh context's entry function and argument,\n"
"and how far below a stack's top a fresh context's stack pointer starts.");

static PyObject *mod_switch_frame_layout(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
#if defined(__x86_64__)
    const char *arch = "x86_64 System V";
#else
    const char *arch = "aarch64 AAPCS64";
#endif
    return Py_BuildValue("{s:s,s:i,s:i,s:i,s:i,s:i}", "abi", arch, "frame_size",
                         SF_SWITCH_FRAME_SIZE, "return_address", SF_FRAME_OFFSET_RETURN,
                         "entry", SF_FRAME_OFFSET_ENTRY, "arg", SF_FRAME_OFFSET_ARG,
                         "fresh_sp_below_top", SF_FRESH_SP_BELOW_TOP);
}

PyDoc_STRVAR(set_switch_hook_doc,
"set_switch_hook(hook)\n--\n\n"
"Install hook(event, (origin, target)) for this thread, or remove it with None;\n"
"returns the previous hook.  It runs on the target's stack after every switch\n"
"lands (event 'switch' or 'throw'), fibers' first starts, ends and GC kills\n"
"included.  An exception it raises replaces what the switch carried.\n"
"Switches the hook makes itself are reported too.  greenlet.settrace() is\n"
"built on it.");

static PyObject *mod_set_switch_hook(PyObject *m, PyObject *hook)
{
    (void)m;
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "the switch hook must be callable or None");
        return NULL;
    }
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    PyObject *previous = th->switch_hook ? th->switch_hook : Py_NewRef(Py_None);
    th->switch_hook = hook == Py_None ? NULL : Py_NewRef(hook);
    return previous;
}

PyDoc_STRVAR(get_switch_hook_doc,
"get_switch_hook()\n--\n\nThis thread's switch hook, or None.");

static PyObject *mod_get_switch_hook(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    return Py_NewRef(th->switch_hook ? th->switch_hook : Py_None);
}

PyDoc_STRVAR(adopt_root_doc,
"adopt_root(cls)\n--\n\n"
"Make this thread's root fiber an instance of `cls` and return it, so that a\n"
"compatibility layer's current() is one of its own (greenlet's main\n"
"greenlet).  `cls` must be a Python subclass of Fiber adding no storage of its\n"
"own (no __slots__), or Fiber itself to undo it.");

static PyObject *mod_adopt_root(PyObject *m, PyObject *arg)
{
    (void)m;
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    if (!PyType_Check(arg) || !PyType_IsSubtype((PyTypeObject *)arg, &FiberType)) {
        PyErr_SetString(PyExc_TypeError, "adopt_root() needs a subclass of Fiber");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)arg;
    if (cls != &FiberType &&
        (!(cls->tp_flags & Py_TPFLAGS_HEAPTYPE) || cls->tp_basicsize != FiberType.tp_basicsize ||
        cls->tp_itemsize || cls->tp_dictoffset != FiberType.tp_dictoffset ||
        cls->tp_weaklistoffset != FiberType.tp_weaklistoffset)) {
        PyErr_Format(PyExc_TypeError,
                     "adopt_root(): %.100s must be a Python subclass of Fiber without "
                     "storage of its own", cls->tp_name);
        return NULL;
    }
    Fiber *root = th->root;
    PyTypeObject *old = Py_TYPE(root);
    if (old != cls) {
        Py_SET_TYPE(root, cls);
        if (cls->tp_flags & Py_TPFLAGS_HEAPTYPE)
            Py_INCREF(cls);
        if (old->tp_flags & Py_TPFLAGS_HEAPTYPE)
            Py_DECREF(old);
    }
    return Py_NewRef((PyObject *)root);
}

PyDoc_STRVAR(set_recursion_budget_doc,
"_set_recursion_budget(fiber, levels)\n--\n\n"
"Testing only: give a fiber that has not started a C recursion budget of\n"
"`levels`, bigger than its stack can hold, so that the guard page is what\n"
"stops a runaway recursion.");

static PyObject *mod_set_recursion_budget(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *fiber;
    int levels;
    if (!PyArg_ParseTuple(args, "O!i:_set_recursion_budget", &FiberType, &fiber, &levels))
        return NULL;
    if (((Fiber *)fiber)->state != FIBER_NEW || levels < 1) {
        PyErr_SetString(PyExc_ValueError, "needs a fiber that has not started and levels >= 1");
        return NULL;
    }
    ((Fiber *)fiber)->c_budget_override = levels;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(call_untraced_doc,
"call_untraced(func, then, /, *args)\n--\n\n"
"Call func(*args) with tracing and profiling suspended on this thread, then,\n"
"if it returned and `then` is not None, then(*args) with them back on; return\n"
"None.  Wrapped in functools.partial it is a switch hook a profiler can swap\n"
"its per-fiber state in without its own frames showing in any profile.");

static PyObject *mod_call_untraced(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "call_untraced() needs func and then");
        return NULL;
    }
    /* Suspends settrace/setprofile and (3.12+) every sys.monitoring tool:
     * their events are all gated by the thread's `tracing` counter. */
    PyThreadState *ts = PyThreadState_Get();
    PyThreadState_EnterTracing(ts);
    PyObject *r = PyObject_Vectorcall(args[0], args + 2, (size_t)(nargs - 2), NULL);
    PyThreadState_LeaveTracing(ts);
    if (!r)
        return NULL;
    Py_DECREF(r);
    if (args[1] != Py_None) {
        r = PyObject_Vectorcall(args[1], args + 2, (size_t)(nargs - 2), NULL);
        if (!r)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

/* A clock that stops while its fiber is suspended: stackful.debug.Profile
 * gives one to each fiber's cProfile, which reads it at every event (a Python
 * function there doubled a profiled call's cost).  The switch hook moves
 * paused_ns; calling it gives CLOCK_MONOTONIC (time.monotonic_ns()) minus it. */
typedef struct {
    PyObject_HEAD
    long long paused_ns;  /* time spent suspended, plus the reading it started at */
    long long left_ns;    /* when its fiber was last switched away from; 0: never */
} FiberClock;

static PyObject *FiberClock_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "a FiberClock takes no arguments");
        return NULL;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    return PyLong_FromLongLong(ns - ((FiberClock *)self)->paused_ns);
}

static PyMemberDef FiberClock_members[] = {
    {"paused_ns", T_LONGLONG, offsetof(FiberClock, paused_ns), 0,
     "subtracted from time.monotonic_ns() when called"},
    {"left_ns", T_LONGLONG, offsetof(FiberClock, left_ns), 0,
     "when its fiber was last switched away from (0: never)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FiberClockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.FiberClock",
    .tp_doc = "FiberClock()\n--\n\n"
              "Calling it returns time.monotonic_ns() - paused_ns: nanoseconds a fiber\n"
              "has run, when the switch hook adds each suspension to paused_ns.",
    .tp_basicsize = sizeof(FiberClock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_call = FiberClock_call,
    .tp_members = FiberClock_members,
};

static PyMethodDef module_methods[] = {
    {"set_switch_hook", mod_set_switch_hook, METH_O, set_switch_hook_doc},
    {"get_switch_hook", mod_get_switch_hook, METH_NOARGS, get_switch_hook_doc},
    {"adopt_root", mod_adopt_root, METH_O, adopt_root_doc},
    {"_set_recursion_budget", mod_set_recursion_budget, METH_VARARGS, set_recursion_budget_doc},
    {"current", mod_current, METH_NOARGS, current_doc},
    {"get_default_stack_size", mod_get_default_stack_size, METH_NOARGS, get_default_stack_size_doc},
    {"set_default_stack_size", mod_set_default_stack_size, METH_O, set_default_stack_size_doc},
    {"stack_pool", (PyCFunction)(void (*)(void))mod_stack_pool, METH_FASTCALL, stack_pool_doc},
    {"clear_stack_pool", mod_clear_stack_pool, METH_NOARGS, clear_stack_pool_doc},
    {"stack_pointer", mod_stack_pointer, METH_NOARGS, stack_pointer_doc},
    {"switch_frame_layout", mod_switch_frame_layout, METH_NOARGS, switch_frame_layout_doc},
    {"call_untraced", (PyCFunction)(void (*)(void))mod_call_untraced, METH_FASTCALL,
     call_untraced_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "stackful._native",
    .m_doc = "The native core of stackful: fibers on their own C stacks.",
    .m_size = -1,
    .m_methods = module_methods,
};

/* The running fiber's interpreter state, or NULL on a thread's own stack. */
static sf_pystate *running_fiber_state(void)
{
    sf_thread *th = sf_tls_thread;
    if (!th || th->tstate != PyThreadState_Get() || IS_ROOT(th->current))
        return NULL;
    return &th->current->py;
}

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    if (sf_thread_init_types() < 0 || sf_fiber_init_type(m) < 0 || sf_reclaim_init(m) < 0 ||
        sf_registry_init(m) < 0 ||
        PyModule_AddIntConstant(m, "MIN_STACK_SIZE", SF_STACK_MIN) < 0 ||
        PyModule_AddIntConstant(m, "DEFAULT_STACK_SIZE", SF_STACK_DEFAULT) < 0 ||
        PyModule_AddIntConstant(m, "DATA_CHUNK_SIZE", SF_DATA_CHUNK_SIZE) < 0 ||
        sf_timers_init(m) < 0 || sf_poller_init(m) < 0 || sf_scheduler_init(m) < 0 ||
        sf_sockets_init(m) < 0 || sf_overflow_init() < 0 || sf_greenlet_init(m) < 0 ||
        sf_install_recursion_limit_hook(running_fiber_state) < 0 ||
        PyModule_AddType(m, &FiberClockType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
