/* The registry of fibers: every Fiber not yet freed, on every thread, in one
 * doubly-linked list, so a dump (stackful.dump) can list them all without a
 * garbage-collector walk of the heap.
 *
 * Why a list in C: a fiber is linked when it is allocated and unlinked when it
 * is freed -- four pointer stores in all, nowhere near the switch path.  The
 * alternatives cost more where it matters: gc.get_objects() walks every object
 * of the process (a loaded server has millions), and a WeakSet costs a weak
 * reference and a dict entry per fiber.  The GIL guards the list (a fiber is
 * made and freed with it held), and a dump reads it with the GIL held too.
 */
#include "fiber_internal.h"

#include <string.h>
#include <time.h>

/* Invariant: every Fiber from sf_fiber_alloc until its dealloc, once. */
static Fiber *live_first;
static Py_ssize_t live_count;

void sf_registry_add(Fiber *f)
{
    f->live_prev = NULL;
    f->live_next = live_first;
    if (live_first)
        live_first->live_prev = f;
    live_first = f;
    live_count++;
}

void sf_registry_remove(Fiber *f)
{
    if (f->live_prev)
        f->live_prev->live_next = f->live_next;
    else if (live_first == f)
        live_first = f->live_next;
    else
        return;  /* never linked (or already unlinked) */
    if (f->live_next)
        f->live_next->live_prev = f->live_prev;
    f->live_prev = f->live_next = NULL;
    live_count--;
}

PyDoc_STRVAR(live_fibers_doc,
"_live_fibers()\n--\n\n"
"Every fiber of every thread that has not finished: roots (one per thread\n"
"that used fibers), fibers not started yet, running and suspended ones;\n"
"oldest first.");

static PyObject *mod_live_fibers(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    /* Collect first, reverse after: appending may not run Python code, but keep
     * the walk free of anything that could free a fiber under it. */
    for (Fiber *f = live_first; f; f = f->live_next) {
        if (f->state == FIBER_DEAD || Py_REFCNT(f) <= 0)
            continue;
        if (PyList_Append(out, (PyObject *)f) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    if (PyList_Reverse(out) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

PyDoc_STRVAR(fiber_count_doc,
"_fiber_count()\n--\n\n"
"How many Fiber objects exist (not yet freed), finished ones included.");

static PyObject *mod_fiber_count(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyLong_FromSsize_t(live_count);
}

static const char *const state_names[] = {"new", "running", "suspended", "dead"};

PyDoc_STRVAR(fiber_debug_doc,
"_fiber_debug(fiber)\n--\n\n"
"(state, thread_id, thread_alive, is_root, is_current, scheduler, stack_size,\n"
"stack_depth) of a fiber, for dumps.  thread_id is 0 before the fiber is\n"
"bound to a thread; is_current: it is the running fiber of its thread;\n"
"scheduler: the runtime running on its thread, or None; stack_depth: bytes\n"
"of its C stack in use below the top where it is suspended (or here, if it\n"
"is running on the calling thread), else -1.");

static PyObject *mod_fiber_debug(PyObject *m, PyObject *arg)
{
    (void)m;
    if (!PyObject_TypeCheck(arg, &FiberType)) {
        PyErr_Format(PyExc_TypeError, "_fiber_debug() needs a Fiber, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    Fiber *f = (Fiber *)arg;
    sf_thread *th = f->thread;
    int root = th && f == th->root;
    int is_current = th && th->current == f;
    PyObject *scheduler = th && th->scheduler ? th->scheduler : Py_None;
    long long depth = -1;
    if (f->stack) {
        char *top = sf_stack_top(f->stack);
        char *sp = NULL;
        if (f->state == FIBER_SUSPENDED)
            sp = (char *)f->ctx;
        else if (is_current && th->tstate == PyThreadState_Get())
            sp = (char *)&depth;  /* we run on it: this frame is on that stack */
        if (sp && sp <= top && sp >= sf_stack_base(f->stack))
            depth = (long long)(top - sp);
    }
    int state = f->state >= 0 && f->state <= FIBER_DEAD ? f->state : FIBER_DEAD;
    return Py_BuildValue("(skiiiOnL)", state_names[state], th ? th->thread_id : 0UL,
                         th && th->tstate != NULL, root, is_current, scheduler,
                         root ? (Py_ssize_t)0 : (Py_ssize_t)f->stack_size, depth);
}

PyDoc_STRVAR(coarse_ns_doc,
"_monotonic_coarse_ns()\n--\n\n"
"CLOCK_MONOTONIC_COARSE in ns: the clock a task's _parked_ns is on.");

static PyObject *mod_coarse_ns(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    return PyLong_FromLongLong((long long)now.tv_sec * 1000000000LL + now.tv_nsec);
}

PyDoc_STRVAR(fiber_frames_doc,
"_fiber_frames(fiber, limit)\n--\n\n"
"The Python frames of a suspended fiber, or of a running one on any thread,\n"
"innermost first, at most `limit`: a list of (code, line, self) tuples,\n"
"self being the first local when the code's first argument is named self\n"
"(else None).  [] for a fiber not started, finished, or whose thread has\n"
"exited while it ran.  Makes no frame objects (dumps of thousands).");

static PyObject *mod_fiber_frames(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *arg;
    int limit;
    if (!PyArg_ParseTuple(args, "O!i:_fiber_frames", &FiberType, &arg, &limit))
        return NULL;
    Fiber *f = (Fiber *)arg;
    sf_thread *th = f->thread;
    if (f->state == FIBER_SUSPENDED && th && th->tstate)
        return sf_pystate_frame_list(&f->py, NULL, limit);
    if (f->state == FIBER_RUNNING && th && th->tstate && th->current == f)
        return sf_pystate_frame_list(NULL, th->tstate, limit);
    return PyList_New(0);
}

static PyMethodDef registry_methods[] = {
    {"_fiber_frames", mod_fiber_frames, METH_VARARGS, fiber_frames_doc},
    {"_monotonic_coarse_ns", mod_coarse_ns, METH_NOARGS, coarse_ns_doc},
    {"_live_fibers", mod_live_fibers, METH_NOARGS, live_fibers_doc},
    {"_fiber_count", mod_fiber_count, METH_NOARGS, fiber_count_doc},
    {"_fiber_debug", mod_fiber_debug, METH_O, fiber_debug_doc},
    {NULL, NULL, 0, NULL},
};

/* What a debugger reads to list fibers without running code in the process
 * (stackful/gdb_fibers.py, on a live process or a core file): where the
 * registry starts and where each field it needs sits.  Exported by name, so
 * gdb finds it in the symbol table; filled at import. */
typedef struct {
    char magic[8];                 /* "SFDEBUG\0" */
    uint64_t version;              /* of this layout */
    uint64_t python_hex;           /* PY_VERSION_HEX of the build */
    uint64_t live_first;           /* the address of the registry's head pointer */
    uint64_t fiber_live_next, fiber_state, fiber_cname, fiber_serial, fiber_thread,
        fiber_stack, fiber_stack_size, fiber_py, fiber_ctx;
    uint64_t thread_tstate, thread_id, thread_current, thread_root;
    uint64_t stack_size;           /* in sf_stack: its usable size; base: mmap base */
    uint64_t state_suspended, state_running;
    sf_frame_offsets frames;
} sf_debug_info_t;

__attribute__((visibility("default"), used)) sf_debug_info_t stackful_debug_info;

int sf_registry_init(PyObject *module)
{
    sf_debug_info_t *d = &stackful_debug_info;
    memcpy(d->magic, "SFDEBUG", 8);
    d->version = 1;
    d->python_hex = PY_VERSION_HEX;
    d->live_first = (uint64_t)(uintptr_t)&live_first;
    d->fiber_live_next = offsetof(Fiber, live_next);
    d->fiber_state = offsetof(Fiber, state);
    d->fiber_cname = offsetof(Fiber, cname);
    d->fiber_serial = offsetof(Fiber, serial);
    d->fiber_thread = offsetof(Fiber, thread);
    d->fiber_stack = offsetof(Fiber, stack);
    d->fiber_stack_size = offsetof(Fiber, stack_size);
    d->fiber_py = offsetof(Fiber, py);
    d->fiber_ctx = offsetof(Fiber, ctx);
    d->thread_tstate = offsetof(sf_thread, tstate);
    d->thread_id = offsetof(sf_thread, thread_id);
    d->thread_current = offsetof(sf_thread, current);
    d->thread_root = offsetof(sf_thread, root);
    d->stack_size = offsetof(sf_stack, size);
    d->state_suspended = FIBER_SUSPENDED;
    d->state_running = FIBER_RUNNING;
    sf_pystate_frame_offsets(&d->frames);
    return PyModule_AddFunctions(module, registry_methods);
}
