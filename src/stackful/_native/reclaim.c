/* Fibers nobody can reach.
 *
 * A suspended fiber that becomes garbage is killed: FiberExit is thrown in
 * and it unwinds (finally blocks run) on its own thread, coming back to
 * whoever collected it.  One dropped on another thread is queued for its
 * owner, which kills it at its next switch.  A fiber subclass's __del__ runs
 * first, then the kill: the type's finalizer is adopted when its first fiber
 * starts, whatever the class defines.
 *
 * Some fibers cannot be unwound: their thread has exited, they caught
 * FiberExit and switched away, or the interpreter is shutting down.  They are
 * *discarded*: freed without running (interp_state.c undoes what their frames
 * had entered that outlives them), which is counted per cause and reported
 * with one ResourceWarning per cause (a constant text, so the warnings
 * registry does not grow with every fiber).
 *
 * One thing cannot be undone from outside: a garbage collection whose C
 * frames are on the discarded fiber's stack (a finalizer switched away and
 * never came back).  Its list heads live on that stack, so the stack is
 * quarantined (never reused or unmapped) and the interpreter told that no
 * collection is running, so collecting works again.  Which fiber a collection
 * runs on is learnt from gc.callbacks: our entry marks the running collection
 * (in the interpreter's own flag, so the mark ends with it) and notes the
 * fiber it runs on.  Other threads, and gc.callbacks entries after ours, run
 * Python code while a collection is in progress; a fiber they discard is
 * not the collection's and is freed as usual.
 */
#include "fiber_internal.h"

#include <signal.h>

static PyObject *str_fiber_exit_attr, *str_del, *str_gc;
static PyObject *discard_hook;        /* hook(frame, own_thread) before frames are dropped */
static PyObject *gc_phase_callback;   /* ours, in gc.callbacks */
/* borrowed: the fiber the marked collection runs on (NULL: not a fiber's) */
static Fiber *collector_fiber;
/* The marks our entry leaves on a running collection (sf_gc_collection_mark):
 * it saw the collection start on collector_fiber; or it was put back into
 * gc.callbacks while the collection ran, so where that one runs is unknown. */
enum { GC_UNMARKED = 1, GC_SEEN = 2, GC_UNKNOWN = 3 };
static Py_ssize_t discard_counts[SF_DISCARD_CAUSES];
static Py_ssize_t quarantined_stacks;

static const char *const cause_keys[SF_DISCARD_CAUSES] = {
    "thread_exited", "ignored_exit", "at_shutdown", "finalizer_skipped",
};
static const char *const cause_texts[SF_DISCARD_CAUSES] = {
    "its thread exited while it was suspended",
    "it caught FiberExit and switched away instead of exiting",
    "the interpreter was shutting down",
    "its finalizer did not run (a __del__ assigned to its class after a fiber of it started?)",
};

static int gc_phase_callback_installed(void);

/* ---- discarding ---- */

static void warn_discarded(int cause)
{
    PyObject *exc = sf_fetch_exception();
    if (PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                         "stackful: a suspended fiber was freed without unwinding: %s; its "
                         "finally blocks did not run (stackful.discarded_fibers() counts them)",
                         cause_texts[cause]) < 0)
        sf_report_escaped(NULL);
    if (exc)
        sf_restore_exception(exc);
}

/* Let Python-level code undo what the frames had entered that the core does
 * not know of (an asyncio loop they were running, say). */
static void call_discard_hook(Fiber *f)
{
    if (!discard_hook)
        return;
    PyObject *exc = sf_fetch_exception();
    PyThreadState *ts = PyThreadState_Get();
    PyObject *frame = sf_pystate_top_frame(&f->py, ts);
    int own = f->thread->tstate == ts;
    PyObject *r = frame ? PyObject_CallFunction(discard_hook, "OO", frame, own ? Py_True : Py_False)
                        : NULL;
    if (!r)
        sf_report_escaped(discard_hook);
    Py_XDECREF(r);
    Py_XDECREF(frame);
    if (exc)
        sf_restore_exception(exc);
}

int sf_discard_cause(const Fiber *f)
{
    if (!f->thread->tstate)
        return SF_DISCARD_THREAD_EXITED;
    if (f->refused_exit)
        return SF_DISCARD_IGNORED_EXIT;
    if (sf_interpreter_finalizing())
        return SF_DISCARD_AT_SHUTDOWN;
    return SF_DISCARD_FINALIZER_SKIPPED;
}

/* The code a gc.callbacks entry runs: a function's, or a bound method's
 * (borrowed; NULL for anything else, such as a C function). */
static PyObject *callback_code(PyObject *cb)
{
    if (PyMethod_Check(cb))
        cb = PyMethod_GET_FUNCTION(cb);
    return PyFunction_Check(cb) ? PyFunction_GET_CODE(cb) : NULL;
}

/* Is fiber `f` suspended inside a gc.callbacks entry (one of its frames runs
 * an entry's code)?  Then the running collection is on its stack. */
static int runs_gc_callback(Fiber *f)
{
    PyObject *gc = PyImport_GetModule(str_gc);
    PyObject *callbacks = gc ? PyObject_GetAttrString(gc, "callbacks") : NULL;
    PyObject *frame = callbacks && PyList_Check(callbacks)
                      ? sf_pystate_top_frame(&f->py, PyThreadState_Get()) : NULL;
    int found = 0;
    while (frame && !found) {
        PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)frame);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(callbacks) && !found; i++)
            found = callback_code(PyList_GET_ITEM(callbacks, i)) == (PyObject *)code;
        Py_DECREF(code);
        PyObject *below = (PyObject *)PyFrame_GetBack((PyFrameObject *)frame);
        Py_SETREF(frame, below);
    }
    Py_XDECREF(frame);
    Py_XDECREF(callbacks);
    Py_XDECREF(gc);
    if (PyErr_Occurred())
        sf_clear_error();
    return found;
}

void sf_discard_fiber(Fiber *f, int cause, int quiet)
{
    if (f->state != FIBER_SUSPENDED || !f->stack)
        return;
    discard_counts[cause]++;
    if (!quiet && cause != SF_DISCARD_AT_SHUTDOWN) {
        call_discard_hook(f);
        warn_discarded(cause);
        if (f->state != FIBER_SUSPENDED || !f->stack)
            return;  /* the hook or a warning filter's code ran it after all */
    }
    int in_collection = 0, abandon_collection = 0;
    int mark = sf_gc_collection_mark();
    if (mark != 0 && !gc_phase_callback_installed())
        mark = GC_UNKNOWN;
    if (mark == GC_SEEN) {
        in_collection = abandon_collection = f == collector_fiber;
    } else if (mark == GC_UNMARKED) {
        /* Our entry has not reached this collection's start: entries ahead of
         * ours are running (hypothesis puts one at the front, and other threads
         * run while it is Python code), or one switched away at 'start', maybe
         * on this fiber.  Nothing of the collector is on a stack yet then, so
         * if the fiber is shown inside an entry, the collection is abandoned. */
        in_collection = abandon_collection = runs_gc_callback(f);
    } else if (mark != 0) {
        /* Our entry is missing or was put back while this collection ran
         * (a user cleared gc.callbacks): it may be on this fiber, so keep
         * the stack, but it cannot be told to be, so leave it running. */
        in_collection = 1;
    }
    f->state = FIBER_DEAD;
    sf_pystate_discard(&f->py, sf_stack_data_chunk(f->stack));
    if (in_collection) {
        sf_stack_quarantine(f->stack);
        quarantined_stacks++;
        if (abandon_collection) {
            collector_fiber = NULL;
            sf_gc_mark_collection(0);
        }
    } else {
        sf_stack_release(f->stack);
    }
    f->stack = NULL;
}

/* ---- killing ---- */

/* The exception kill() and the GC throw: FiberExit, or the FiberExit subclass
 * a Fiber subclass names in __fiber_exit__ (greenlet's GreenletExit). */
PyObject *sf_exit_exception_type(Fiber *f)
{
    PyTypeObject *type = Py_TYPE(f);
    if (type == &FiberType)
        return FiberExit;
    PyObject *cls = PyObject_GetAttr((PyObject *)type, str_fiber_exit_attr);
    if (!cls) {
        sf_clear_error();
        return FiberExit;
    }
    Py_DECREF(cls);  /* the class keeps it alive */
    if (PyType_Check(cls) && PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)FiberExit))
        return cls;
    return FiberExit;
}

/* Throw FiberExit into a suspended fiber of this thread and let it unwind,
 * returning here.  A fiber that catches it and switches back stays suspended:
 * whoever frees it discards it (tp_clear, or the deallocation). */
static void kill_for_collection(sf_thread *th, Fiber *f)
{
    Py_INCREF(f);
    Fiber *old_parent = f->parent;
    f->parent = (Fiber *)Py_NewRef(th->current);  /* come back here when it ends */
    Py_XDECREF(old_parent);
    sf_transfer t = {.kind = TRANSFER_THROW,
                     .value = PyObject_CallNoArgs(sf_exit_exception_type(f))};
    if (!t.value) {
        sf_report_escaped((PyObject *)f);
    } else {
        PyObject *r = sf_switch_to(th, f, t);
        if (r)
            Py_DECREF(r);
        else
            sf_report_escaped((PyObject *)f);
    }
    if (f->state == FIBER_SUSPENDED)
        f->refused_exit = 1;
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
        /* Its thread is gone: tp_clear or the deallocation discards it. */
    } else if (sf_interpreter_finalizing()) {
        /* Too late to run code, but not to drop its frames: a collection at
         * exit that finalizes a generator running on it would otherwise find
         * that generator "already executing" (3.14+ collect such cycles). */
        if (th == current_thread())
            sf_discard_fiber(self, SF_DISCARD_AT_SHUTDOWN, 1);
    } else if (th == current_thread()) {
        kill_for_collection(th, self);
    } else {
        /* Never run a fiber on a foreign thread: its owner kills it on its
         * next switch (or discards it when it exits). */
        if (!th->pending_kills)
            th->pending_kills = PyList_New(0);
        if (!th->pending_kills || PyList_Append(th->pending_kills, (PyObject *)self) < 0)
            sf_report_escaped((PyObject *)self);
    }
    if (exc)
        sf_restore_exception(exc);
}

/* The finalizer of a Fiber subclass that defines __del__ (or a C finalizer
 * of its own): that first, then the kill.  CPython would otherwise call only
 * the subclass's, and the fiber would be freed without unwinding. */
static void finalize_subclass(PyObject *self)
{
    PyObject *exc = sf_fetch_exception();
    PyObject *del = PyObject_GetAttr((PyObject *)Py_TYPE(self), str_del);
    PyObject *r = del ? PyObject_CallOneArg(del, self) : NULL;
    if (!r)
        sf_report_escaped(del ? del : self);
    Py_XDECREF(r);
    Py_XDECREF(del);
    if (exc)
        sf_restore_exception(exc);
    sf_fiber_finalize((Fiber *)self);
}

void sf_adopt_finalizer(PyTypeObject *type)
{
    destructor ours = (destructor)sf_fiber_finalize;
    if (type->tp_finalize != ours && type->tp_finalize != (destructor)finalize_subclass)
        type->tp_finalize = (destructor)finalize_subclass;
}

/* Ctrl-C that surfaces where it cannot propagate (a finalizer, a hook) is
 * re-armed: the interpreter raises it again at its next check for signals,
 * in whatever code runs next, instead of losing it. */
static int rearm_interrupt(void)
{
    if (!PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return 0;
    PyErr_Clear();
    PyErr_SetInterruptEx(SIGINT);
    return 1;
}

void sf_report_escaped(PyObject *where)
{
    if (!rearm_interrupt())
        PyErr_WriteUnraisable(where);
}

void sf_clear_error(void)
{
    if (!rearm_interrupt())
        PyErr_Clear();
}

/* ---- which fiber a collection runs on (a gc.callbacks entry) ---- */

static PyObject *gc_phase(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs < 1 || !PyUnicode_Check(args[0]))
        Py_RETURN_NONE;
    /* 'stop' changes nothing: the collection still runs on the same fiber
     * until every entry after ours has run. */
    if (PyUnicode_CompareWithASCIIString(args[0], "start") == 0 &&
        sf_gc_collection_mark() == GC_UNMARKED) {
        sf_thread *th = sf_tls_thread;
        collector_fiber = th && th->tstate == PyThreadState_Get() ? th->current : NULL;
        sf_gc_mark_collection(GC_SEEN);
    }
    Py_RETURN_NONE;
}

static PyMethodDef gc_phase_def = {
    "_stackful_gc_phase", (PyCFunction)(void (*)(void))gc_phase, METH_FASTCALL,
    "stackful: notes which fiber a garbage collection runs on (see discarded_fibers())."};

/* Is our gc.callbacks entry there?  If a user cleared the list, put it back
 * for the collections to come (the running one, if any, stays unknown). */
static int gc_phase_callback_installed(void)
{
    PyObject *gc = PyImport_GetModule(str_gc);
    PyObject *callbacks = gc ? PyObject_GetAttrString(gc, "callbacks") : NULL;
    int found = callbacks && PyList_Check(callbacks) ?
                PySequence_Contains(callbacks, gc_phase_callback) : -1;
    if (found == 0 && PyList_Append(callbacks, gc_phase_callback) < 0)
        found = -1;
    if (found == 0 && sf_gc_collection_mark() == GC_UNMARKED)
        sf_gc_mark_collection(GC_UNKNOWN);  /* put back while one runs: its start was not seen */
    Py_XDECREF(callbacks);
    Py_XDECREF(gc);
    if (found < 0)
        sf_clear_error();
    return found > 0;
}

static int watch_collections(void)
{
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *callbacks = gc ? PyObject_GetAttrString(gc, "callbacks") : NULL;
    gc_phase_callback = callbacks ? PyCFunction_NewEx(&gc_phase_def, NULL, NULL) : NULL;
    int rc = gc_phase_callback && PyList_Check(callbacks)
                 ? PyList_Append(callbacks, gc_phase_callback) : -1;
    Py_XDECREF(callbacks);
    Py_XDECREF(gc);
    return rc;
}

/* ---- module functions ---- */

PyDoc_STRVAR(discarded_fibers_doc,
"discarded_fibers()\n--\n\n"
"Counts of suspended fibers freed without unwinding (their finally blocks did\n"
"not run), by cause: 'thread_exited', 'ignored_exit' (caught FiberExit and\n"
"switched away), 'at_shutdown', 'finalizer_skipped'; and\n"
"'quarantined_stacks': stacks never reused because a garbage collection was\n"
"(or, unknown to stackful's gc.callbacks entry, may have been) suspended on them.");

static PyObject *mod_discarded_fibers(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < SF_DISCARD_CAUSES; i++) {
        PyObject *n = PyLong_FromSsize_t(discard_counts[i]);
        if (!n || PyDict_SetItemString(d, cause_keys[i], n) < 0)
            Py_CLEAR(d);
        Py_XDECREF(n);
    }
    PyObject *q = d ? PyLong_FromSsize_t(quarantined_stacks) : NULL;
    if (d && (!q || PyDict_SetItemString(d, "quarantined_stacks", q) < 0))
        Py_CLEAR(d);
    Py_XDECREF(q);
    return d;
}

PyDoc_STRVAR(set_discard_hook_doc,
"set_discard_hook(hook)\n--\n\n"
"Internal: hook(frame, own_thread) is called with the innermost frame of a\n"
"fiber about to be freed without unwinding, so that Python-level state its\n"
"frames had entered can be undone.  None removes it.");

static PyObject *mod_set_discard_hook(PyObject *m, PyObject *hook)
{
    (void)m;
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "the discard hook must be callable or None");
        return NULL;
    }
    Py_XSETREF(discard_hook, hook == Py_None ? NULL : Py_NewRef(hook));
    Py_RETURN_NONE;
}

static PyMethodDef reclaim_methods[] = {
    {"discarded_fibers", mod_discarded_fibers, METH_NOARGS, discarded_fibers_doc},
    {"set_discard_hook", mod_set_discard_hook, METH_O, set_discard_hook_doc},
    {NULL, NULL, 0, NULL},
};

int sf_reclaim_init(PyObject *module)
{
    str_fiber_exit_attr = PyUnicode_InternFromString("__fiber_exit__");
    str_del = PyUnicode_InternFromString("__del__");
    str_gc = PyUnicode_InternFromString("gc");
    if (!str_fiber_exit_attr || !str_del || !str_gc || watch_collections() < 0)
        return -1;
    return PyModule_AddFunctions(module, reclaim_methods);
}
