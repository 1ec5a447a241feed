/* Fibers nobody can reach: a suspended fiber that becomes garbage is killed
 * (FiberExit thrown in, so its finally blocks run) on its own thread; one
 * dropped on another thread is queued for its owner; one that cannot run
 * (its thread has exited, or it ignored FiberExit) is freed without running.
 */
#include "fiber_internal.h"

void sf_discard_fiber(Fiber *f)
{
    if (f->state != FIBER_SUSPENDED || !f->stack)
        return;
    f->state = FIBER_DEAD;
    sf_pystate_discard(&f->py, sf_stack_data_chunk(f->stack));
    sf_stack_release(f->stack);
    f->stack = NULL;
}

static PyObject *str_fiber_exit_attr;

/* The exception kill() and the GC throw: FiberExit, or the FiberExit subclass
 * a Fiber subclass names in __fiber_exit__ (greenlet's GreenletExit). */
PyObject *sf_exit_exception_type(Fiber *f)
{
    PyTypeObject *type = Py_TYPE(f);
    if (type == &FiberType)
        return FiberExit;
    PyObject *cls = PyObject_GetAttr((PyObject *)type, str_fiber_exit_attr);
    if (!cls) {
        PyErr_Clear();
        return FiberExit;
    }
    Py_DECREF(cls);  /* the class keeps it alive */
    if (PyType_Check(cls) && PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)FiberExit))
        return cls;
    return FiberExit;
}

/* Throw FiberExit into a suspended fiber of this thread and let it unwind,
 * returning here.  Errors are reported as unraisable. */
static void kill_for_collection(sf_thread *th, Fiber *f)
{
    Py_INCREF(f);
    Fiber *old_parent = f->parent;
    f->parent = (Fiber *)Py_NewRef(th->current);  /* come back here when it ends */
    Py_XDECREF(old_parent);
    sf_transfer t = {.kind = TRANSFER_THROW,
                     .value = PyObject_CallNoArgs(sf_exit_exception_type(f))};
    if (!t.value) {
        PyErr_WriteUnraisable((PyObject *)f);
    } else {
        PyObject *r = sf_switch_to(th, f, t);
        if (r)
            Py_DECREF(r);
        else
            PyErr_WriteUnraisable((PyObject *)f);
    }
    if (f->state == FIBER_SUSPENDED) {
        /* It caught FiberExit and switched away: nothing can resume it. */
        PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                         "fiber '%s' ignored FiberExit when it was collected; "
                         "freeing it without running it", f->cname);
        if (PyErr_Occurred())
            PyErr_WriteUnraisable((PyObject *)f);
        sf_discard_fiber(f);
    }
    Py_DECREF(f);
}

void sf_process_pending_kills(sf_thread *th)
{
    PyObject *pending = th->pending_kills;
    th->pending_kills = NULL;
    PyObject *exc = sf_fetch_exception();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++) {
        Fiber *f = (Fiber *)PyList_GET_ITEM(pending, i);
        if (f->state == FIBER_SUSPENDED)
            kill_for_collection(th, f);
    }
    Py_DECREF(pending);
    if (exc)
        sf_restore_exception(exc);
}

void sf_fiber_finalize(Fiber *self)
{
    if (self->state != FIBER_SUSPENDED || IS_ROOT(self))
        return;
    PyObject *exc = sf_fetch_exception();
    sf_thread *th = self->thread;
    if (!th->tstate) {
        sf_discard_fiber(self);
    } else if (sf_interpreter_finalizing()) {
        /* Too late to run code: leave it to the process's exit. */
    } else if (th == current_thread()) {
        kill_for_collection(th, self);
    } else if (th->tstate) {
        /* Never run a fiber on a foreign thread: its owner kills it on its
         * next switch (or frees it when it exits). */
        if (!th->pending_kills)
            th->pending_kills = PyList_New(0);
        if (!th->pending_kills || PyList_Append(th->pending_kills, (PyObject *)self) < 0)
            PyErr_WriteUnraisable((PyObject *)self);
    }
    PyErr_Clear();
    if (exc)
        sf_restore_exception(exc);
}

int sf_reclaim_init(PyObject *module)
{
    (void)module;
    str_fiber_exit_attr = PyUnicode_InternFromString("__fiber_exit__");
    return str_fiber_exit_attr ? 0 : -1;
}
