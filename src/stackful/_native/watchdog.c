/* The watchdog's eyes: a loop, run on the watchdog's own thread, that notices when a
 * runtime's thread has been held too long without yielding.  The policy and the report are
 * Python (stackful/_core/_watchdog.py).
 *
 * Why the loop runs without the GIL: a call that holds the GIL (a long pure-C computation,
 * json.loads of a big document, a C extension that blocks without releasing it) would keep a
 * Python sampler from running at all, so a stall that began right after a switch would never
 * be seen.  Sampling without the GIL sees it; the report then waits for the GIL, which the
 * interpreter hands over right after the holding call returns -- before the task can run
 * another line, so its stack is still at that call.  And a sampler without the GIL costs a
 * busy runtime nothing: no GIL hand-off per sample.
 *
 * What it reads (scheduler.h): the progress fields of SchedulerCore, word-sized and written
 * only by the runtime's thread, loaded here with relaxed atomic loads; `current` is compared,
 * never dereferenced, until the GIL is held and it is seen unchanged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <time.h>

#include "scheduler.h"

typedef struct {
    unsigned long long yields;
    Py_ssize_t hub_resumptions;
    Py_ssize_t next_id;
    PyObject *current;  /* identity only */
} Progress;

typedef struct {
    PyObject_HEAD
    SchedulerCore *runtime;      /* strong */
    unsigned long thread_id;     /* the runtime's thread (threading.get_ident()) */
    PyThread_type_lock stop;     /* held until stop(): the loop sleeps on it */
    int stopped;
    double threshold, period;    /* seconds */
    /* The loop's state, kept from one wait() to the next. */
    Progress last;
    double since;                /* when `last` was first seen */
    int seen, reported;          /* `last` is valid; the stall it began was reported */
} Watcher;

static PyObject *str_id, *str_name;

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static Progress read_progress(SchedulerCore *s)
{
    Progress p;
    p.yields = __atomic_load_n(&s->yields, __ATOMIC_RELAXED);
    p.hub_resumptions = __atomic_load_n(&s->hub_resumptions, __ATOMIC_RELAXED);
    p.next_id = __atomic_load_n(&s->next_id, __ATOMIC_RELAXED);
    p.current = __atomic_load_n(&s->current, __ATOMIC_RELAXED);
    return p;
}

static int same_progress(const Progress *a, const Progress *b)
{
    return a->yields == b->yields && a->hub_resumptions == b->hub_resumptions &&
           a->next_id == b->next_id && a->current == b->current;
}

/* Without the GIL: sample every period until the runtime has made no progress for the
 * threshold while not idle (1), or stop() (0).  A sample that comes late by half a threshold
 * or more (the machine starved this thread, or the process was stopped) says nothing about
 * the time it missed: the stall is timed again from there. */
static int watch(Watcher *w, SchedulerCore *s, double *since)
{
    PY_TIMEOUT_T period_us = (PY_TIMEOUT_T)(w->period * 1e6);
    double prev = monotonic();
    for (;;) {
        if (PyThread_acquire_lock_timed(w->stop, period_us, 0) == PY_LOCK_ACQUIRED) {
            PyThread_release_lock(w->stop);  /* so that every later wait() returns at once */
            return 0;
        }
        double now = monotonic();
        int late = now - prev > w->period + w->threshold / 2;
        prev = now;
        if (__atomic_load_n(&s->idle, __ATOMIC_RELAXED)) {
            w->seen = 0;  /* the hub waits for events: nobody holds the thread */
            continue;
        }
        Progress p = read_progress(s);
        if (!w->seen || !same_progress(&p, &w->last)) {
            w->last = p;
            w->seen = 1;
            w->since = now;
            w->reported = 0;
            continue;
        }
        if (late) {
            w->since = now;
            continue;
        }
        if (!w->reported && now - w->since >= w->threshold) {
            *since = w->since;
            return 1;
        }
    }
}

/* With the GIL, the stall seen still going on: (blocked_for, task id, task name, frame). */
static PyObject *describe_stall(Watcher *w, SchedulerCore *s, double since)
{
    PyObject *id = Py_NewRef(Py_None), *name = Py_NewRef(Py_None), *frame = NULL;
    PyObject *cur = s->current;
    if (cur && PyObject_TypeCheck(cur, &TaskCoreType)) {
        Py_INCREF(cur);  /* across the getattrs (which run no Python code on a Task: slots) */
        Py_SETREF(id, PyObject_GetAttr(cur, str_id));
        Py_SETREF(name, id ? PyObject_GetAttr(cur, str_name) : NULL);
        Py_DECREF(cur);
        if (!id || !name)
            goto error;
    }
    /* The runtime thread's innermost frame: its running fiber's, since a switch swaps the
     * thread state's frames.  Taken here, in C, so the thread cannot move on in between. */
    PyObject *current_frames = PySys_GetObject("_current_frames");  /* borrowed */
    if (!current_frames) {
        PyErr_SetString(PyExc_RuntimeError, "the watchdog needs sys._current_frames");
        goto error;
    }
    PyObject *frames = PyObject_CallNoArgs(current_frames);
    if (!frames)
        goto error;
    PyObject *key = PyLong_FromUnsignedLong(w->thread_id);
    if (!key) {
        Py_DECREF(frames);
        goto error;
    }
    frame = PyDict_GetItemWithError(frames, key);  /* borrowed */
    Py_DECREF(key);
    if (!frame && PyErr_Occurred()) {
        Py_DECREF(frames);
        goto error;
    }
    frame = Py_NewRef(frame ? frame : Py_None);
    Py_DECREF(frames);
    return Py_BuildValue("(dNNN)", monotonic() - since, id, name, frame);
error:
    Py_XDECREF(id);
    Py_XDECREF(name);
    return NULL;
}

PyDoc_STRVAR(watcher_wait_doc,
"wait()\n--\n\n"
"On the watchdog's thread: block, without the GIL, until the runtime has held its\n"
"thread for the threshold without yielding (and not idle), then return\n"
"(blocked_for, task_id, task_name, frame) -- the task is None for the hub, the\n"
"frame the runtime thread's innermost -- once per stall.  None once stopped.");

static PyObject *Watcher_wait(Watcher *w, PyObject *Py_UNUSED(ignored))
{
    if (PyThread_get_thread_ident() == w->thread_id) {
        PyErr_SetString(PyExc_RuntimeError, "a watchdog cannot wait on the thread it watches");
        return NULL;
    }
    if (!w->runtime) {
        PyErr_SetString(PyExc_RuntimeError, "the watcher was cleared");
        return NULL;
    }
    SchedulerCore *s = (SchedulerCore *)Py_NewRef(w->runtime);  /* read without the GIL */
    PyObject *r = NULL;
    for (;;) {
        double since = 0;
        int stall;
        Py_BEGIN_ALLOW_THREADS
        stall = watch(w, s, &since);
        Py_END_ALLOW_THREADS
        if (!stall) {
            r = Py_NewRef(Py_None);
            break;
        }
        /* Holding the GIL now.  If the thread moved on while we waited for it, the stall
         * ended just past the threshold, and its stack is gone: look again. */
        Progress p = read_progress(s);
        if (s->idle || !same_progress(&p, &w->last))
            continue;
        w->reported = 1;
        r = describe_stall(w, s, since);
        break;
    }
    Py_DECREF(s);
    return r;
}

PyDoc_STRVAR(watcher_stop_doc,
"stop()\n--\n\nMake wait() return None, now and from then on.");

static PyObject *Watcher_stop(Watcher *w, PyObject *Py_UNUSED(ignored))
{
    if (!w->stopped) {
        w->stopped = 1;
        PyThread_release_lock(w->stop);
    }
    Py_RETURN_NONE;
}

static PyObject *Watcher_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"runtime", "thread_id", "threshold", "period", NULL};
    PyObject *runtime;
    unsigned long thread_id;
    double threshold, period;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!kdd:Watcher", kwlist, &SchedulerCoreType,
                                     &runtime, &thread_id, &threshold, &period))
        return NULL;
    if (!(threshold > 0) || !(period > 0) || period > 1e6) {
        PyErr_SetString(PyExc_ValueError, "Watcher: threshold and period must be positive");
        return NULL;
    }
    Watcher *w = (Watcher *)type->tp_alloc(type, 0);
    if (!w)
        return NULL;
    w->stop = PyThread_allocate_lock();
    if (!w->stop) {
        Py_DECREF(w);
        return PyErr_NoMemory();
    }
    PyThread_acquire_lock(w->stop, WAIT_LOCK);
    w->runtime = (SchedulerCore *)Py_NewRef(runtime);
    w->thread_id = thread_id;
    w->threshold = threshold;
    w->period = period;
    return (PyObject *)w;
}

static int Watcher_traverse(Watcher *w, visitproc visit, void *arg)
{
    Py_VISIT(w->runtime);
    return 0;
}

static int Watcher_clear(Watcher *w)
{
    Py_CLEAR(w->runtime);
    return 0;
}

static void Watcher_dealloc(Watcher *w)
{
    PyObject_GC_UnTrack(w);
    Py_CLEAR(w->runtime);
    if (w->stop) {
        if (!w->stopped)
            PyThread_release_lock(w->stop);
        PyThread_free_lock(w->stop);
    }
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyMethodDef Watcher_methods[] = {
    {"wait", (PyCFunction)Watcher_wait, METH_NOARGS, watcher_wait_doc},
    {"stop", (PyCFunction)Watcher_stop, METH_NOARGS, watcher_stop_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.Watcher",
    .tp_doc = "Watcher(runtime, thread_id, threshold, period)\n--\n\n"
              "Samples a runtime's progress every `period` seconds, without the GIL, for the\n"
              "watchdog's thread: see wait().",
    .tp_basicsize = sizeof(Watcher),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Watcher_new,
    .tp_dealloc = (destructor)Watcher_dealloc,
    .tp_traverse = (traverseproc)Watcher_traverse,
    .tp_clear = (inquiry)Watcher_clear,
    .tp_methods = Watcher_methods,
};

int sf_watchdog_init(PyObject *m)
{
    str_id = PyUnicode_InternFromString("id");
    str_name = PyUnicode_InternFromString("name");
    if (!str_id || !str_name || PyType_Ready(&WatcherType) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "Watcher", (PyObject *)&WatcherType);
}
