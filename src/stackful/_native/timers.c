/* The runtime's timers: a binary min-heap of Timer objects.
 *
 * Each timer knows its index in the heap, so cancelling one removes it at
 * once (O(log n)) and drops what it holds: a million early-exit timeouts leave
 * nothing behind (a heap that drops cancelled entries lazily holds them until
 * their deadline).  Equal deadlines fire in the order they were scheduled.
 *
 * Deadlines follow the runtime's one rule (see _core/_timers.py): a real
 * number; NaN is a ValueError (at the top of the heap it would compare false
 * with everything and stop every later timer); +inf never fires, so such a
 * timer stays out of the heap and out of `active`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>

#include "interp_state.h"
#include "timers.h"

struct sf_timer {
    PyObject_HEAD
    double deadline;
    unsigned long long seq;       /* scheduling order: ties on deadline fire FIFO */
    PyObject *callback;           /* NULL once fired or cancelled */
    PyObject *arg;
    sf_timer_heap *heap;          /* borrowed; NULL when not in a heap */
    Py_ssize_t index;             /* position in heap->entries while in it */
};

struct sf_timer_heap {
    PyObject_HEAD
    sf_timer **entries;           /* strong references, a binary min-heap */
    Py_ssize_t len, cap;
    unsigned long long next_seq;
};

static PyTypeObject TimerType, TimerHeapType;

/* ---- the heap ---- */

static inline int earlier(const sf_timer *a, const sf_timer *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static inline void place(sf_timer_heap *h, Py_ssize_t i, sf_timer *t)
{
    h->entries[i] = t;
    t->index = i;
}

static void sift_up(sf_timer_heap *h, Py_ssize_t i)
{
    sf_timer *t = h->entries[i];
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!earlier(t, h->entries[parent]))
            break;
        place(h, i, h->entries[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(sf_timer_heap *h, Py_ssize_t i)
{
    sf_timer *t = h->entries[i];
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && earlier(h->entries[child + 1], h->entries[child]))
            child++;
        if (!earlier(h->entries[child], t))
            break;
        place(h, i, h->entries[child]);
        i = child;
    }
    place(h, i, t);
}

/* Take `t` out of its heap; returns the heap's reference to it. */
static sf_timer *heap_remove(sf_timer_heap *h, sf_timer *t)
{
    Py_ssize_t i = t->index;
    sf_timer *last = h->entries[--h->len];
    t->heap = NULL;
    t->index = -1;
    if (last != t) {
        place(h, i, last);
        if (i > 0 && earlier(last, h->entries[(i - 1) / 2]))
            sift_up(h, i);
        else
            sift_down(h, i);
    }
    return t;
}

static int heap_push(sf_timer_heap *h, sf_timer *t)
{
    if (h->len == h->cap) {
        Py_ssize_t cap = h->cap ? h->cap * 2 : 64;
        sf_timer **entries = PyMem_Realloc(h->entries, (size_t)cap * sizeof(*entries));
        if (!entries) {
            PyErr_NoMemory();
            return -1;
        }
        h->entries = entries;
        h->cap = cap;
    }
    t->heap = h;
    h->entries[h->len] = (sf_timer *)Py_NewRef(t);
    t->index = h->len++;
    sift_up(h, t->index);
    return 0;
}

/* ---- Timer ---- */

static void timer_forget(sf_timer *t)
{
    Py_CLEAR(t->callback);
    Py_CLEAR(t->arg);
}

static int Timer_traverse(sf_timer *t, visitproc visit, void *arg)
{
    Py_VISIT(t->callback);
    Py_VISIT(t->arg);
    return 0;
}

static int Timer_clear(sf_timer *t)
{
    timer_forget(t);
    return 0;
}

static void Timer_dealloc(sf_timer *t)
{
    PyObject_GC_UnTrack(t);
    timer_forget(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

int sf_is_timer_heap(PyObject *o) { return PyObject_TypeCheck(o, &TimerHeapType); }
int sf_is_timer(PyObject *o) { return PyObject_TypeCheck(o, &TimerType); }

int sf_timer_cancel(sf_timer *t)
{
    if (!t->callback)
        return 0;
    sf_timer_heap *h = t->heap;
    if (h)
        Py_DECREF(heap_remove(h, t));  /* t stays alive: the caller holds it */
    timer_forget(t);
    return 1;
}

PyDoc_STRVAR(Timer_cancel_doc,
"cancel()\n--\n\nStop the timer; a no-op if it already fired or was cancelled.");

static PyObject *Timer_cancel(sf_timer *t, PyObject *Py_UNUSED(ignored))
{
    sf_timer_cancel(t);
    Py_RETURN_NONE;
}

static PyObject *Timer_get_pending(sf_timer *t, void *c)
{
    (void)c;
    return PyBool_FromLong(t->callback != NULL);
}

static PyObject *Timer_repr(sf_timer *t)
{
    PyObject *when = PyFloat_FromDouble(t->deadline);
    PyObject *r = when ? PyUnicode_FromFormat("<Timer at %R %s>", when,
                                              t->callback ? "pending" : "done") : NULL;
    Py_XDECREF(when);
    return r;
}

static PyMethodDef Timer_methods[] = {
    {"cancel", (PyCFunction)Timer_cancel, METH_NOARGS, Timer_cancel_doc},
    {NULL, NULL, 0, NULL},
};

PyObject *sf_timer_canceller(sf_timer *t)
{
    return PyCFunction_New(&Timer_methods[0], (PyObject *)t);
}

static PyGetSetDef Timer_getset[] = {
    {"pending", (getter)Timer_get_pending, NULL, "True until the timer fires or is cancelled",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Timer_members[] = {
    {"deadline", T_DOUBLE, offsetof(sf_timer, deadline), READONLY,
     "when it fires, on the runtime's clock"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject TimerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.Timer",
    .tp_doc = "A scheduled callback (TimerHeap.schedule); cancel() it to stop it.",
    .tp_basicsize = sizeof(sf_timer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)Timer_dealloc,
    .tp_traverse = (traverseproc)Timer_traverse,
    .tp_clear = (inquiry)Timer_clear,
    .tp_repr = (reprfunc)Timer_repr,
    .tp_methods = Timer_methods,
    .tp_getset = Timer_getset,
    .tp_members = Timer_members,
};

/* ---- TimerHeap ---- */

static PyObject *TimerHeap_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if ((args && PyTuple_GET_SIZE(args)) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "TimerHeap() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static int TimerHeap_traverse(sf_timer_heap *h, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < h->len; i++)
        Py_VISIT(h->entries[i]);
    return 0;
}

Py_ssize_t sf_timer_heap_clear(sf_timer_heap *h)
{
    Py_ssize_t n = 0;
    while (h->len) {
        sf_timer *t = heap_remove(h, h->entries[h->len - 1]);  /* the last: no sifting */
        timer_forget(t);
        Py_DECREF(t);
        n++;
    }
    return n;
}

static int TimerHeap_clear_impl(sf_timer_heap *h)
{
    sf_timer_heap_clear(h);
    return 0;
}

static void TimerHeap_dealloc(sf_timer_heap *h)
{
    PyObject_GC_UnTrack(h);
    sf_timer_heap_clear(h);
    PyMem_Free(h->entries);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

/* The deadline rule, for a number that is not already a plain float. */
static int check_deadline(PyObject *value, double *out)
{
    if (PyFloat_CheckExact(value)) {
        *out = PyFloat_AS_DOUBLE(value);
    } else if (PyLong_Check(value) || PyFloat_Check(value) ||
               (Py_TYPE(value)->tp_as_number && Py_TYPE(value)->tp_as_number->nb_float &&
                !PyComplex_Check(value))) {
        *out = PyFloat_AsDouble(value);
        if (*out == -1.0 && PyErr_Occurred())
            return -1;
    } else {
        PyErr_Format(PyExc_TypeError, "deadline must be a number, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    if (isnan(*out)) {
        PyErr_SetString(PyExc_ValueError, "deadline must not be NaN");
        return -1;
    }
    return 0;
}

sf_timer *sf_timer_schedule(sf_timer_heap *h, double deadline, PyObject *callback,
                            PyObject *arg)
{
    sf_timer *t = PyObject_GC_New(sf_timer, &TimerType);
    if (!t)
        return NULL;
    t->deadline = deadline;
    t->seq = h->next_seq++;
    t->callback = Py_NewRef(callback);
    t->arg = Py_NewRef(arg);
    t->heap = NULL;
    t->index = -1;
    PyObject_GC_Track(t);
    if (deadline != HUGE_VAL && heap_push(h, t) < 0) {  /* +inf never fires: no heap */
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

PyDoc_STRVAR(schedule_doc,
"schedule(deadline, callback, arg)\n--\n\n"
"Call callback(arg) once the clock reaches deadline; returns the Timer.\n"
"+inf never fires (the timer is kept out of the heap and of `active`); NaN is\n"
"a ValueError, anything but a real number a TypeError.");

static PyObject *TimerHeap_schedule(sf_timer_heap *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "schedule() takes deadline, callback and arg");
        return NULL;
    }
    double deadline;
    if (check_deadline(args[0], &deadline) < 0)
        return NULL;
    return (PyObject *)sf_timer_schedule(h, deadline, args[1], args[2]);
}

int sf_timer_heap_next(const sf_timer_heap *h, double *deadline)
{
    if (!h->len)
        return 0;
    *deadline = h->entries[0]->deadline;
    return 1;
}

PyDoc_STRVAR(next_deadline_doc,
"next_deadline()\n--\n\nDeadline of the earliest pending timer, or None.");

static PyObject *TimerHeap_next_deadline(sf_timer_heap *h, PyObject *Py_UNUSED(ignored))
{
    double deadline;
    if (!sf_timer_heap_next(h, &deadline))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(deadline);
}

Py_ssize_t sf_timer_heap_fire_due(sf_timer_heap *h, double now, PyObject *on_error)
{
    Py_ssize_t fired = 0;
    while (h->len && h->entries[0]->deadline <= now) {
        sf_timer *t = heap_remove(h, h->entries[0]);
        PyObject *callback = t->callback, *arg = t->arg;
        t->callback = t->arg = NULL;  /* fired: no longer pending */
        fired++;
        PyObject *r = PyObject_CallOneArg(callback, arg);
        Py_DECREF(callback);
        Py_DECREF(arg);
        Py_DECREF(t);
        if (r) {
            Py_DECREF(r);
            continue;
        }
        /* Timers fire in whichever task checks them, which must not receive a callback's
         * exception: it goes to on_error, and the other timers still run. */
        PyObject *exc = sf_fetch_exception();
        r = PyObject_CallOneArg(on_error, exc);
        Py_DECREF(exc);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    return fired;
}

PyDoc_STRVAR(fire_due_doc,
"fire_due(now, on_error)\n--\n\n"
"Run every pending timer whose deadline is <= now, in order; return how many\n"
"ran.  A callback's exception goes to on_error(exc) and the others still run.");

static PyObject *TimerHeap_fire_due(sf_timer_heap *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fire_due() takes now and on_error");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[0]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t fired = sf_timer_heap_fire_due(h, now, args[1]);
    return fired < 0 ? NULL : PyLong_FromSsize_t(fired);
}

PyDoc_STRVAR(clear_doc, "clear()\n--\n\nCancel every timer (the runtime is closing).");

static PyObject *TimerHeap_clear(sf_timer_heap *h, PyObject *Py_UNUSED(ignored))
{
    sf_timer_heap_clear(h);
    Py_RETURN_NONE;
}

static PyObject *TimerHeap_get_active(sf_timer_heap *h, void *c)
{
    (void)c;
    return PyLong_FromSsize_t(h->len);
}

static Py_ssize_t TimerHeap_len(sf_timer_heap *h) { return h->len; }

static PyMethodDef TimerHeap_methods[] = {
    {"schedule", (PyCFunction)(void (*)(void))TimerHeap_schedule, METH_FASTCALL, schedule_doc},
    {"next_deadline", (PyCFunction)TimerHeap_next_deadline, METH_NOARGS, next_deadline_doc},
    {"fire_due", (PyCFunction)(void (*)(void))TimerHeap_fire_due, METH_FASTCALL, fire_due_doc},
    {"clear", (PyCFunction)TimerHeap_clear, METH_NOARGS, clear_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef TimerHeap_getset[] = {
    {"active", (getter)TimerHeap_get_active, NULL,
     "how many timers are pending (cancelled ones are gone at once)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods TimerHeap_as_sequence = {.sq_length = (lenfunc)TimerHeap_len};

static PyTypeObject TimerHeapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.TimerHeap",
    .tp_doc = "TimerHeap()\n--\n\n"
              "The runtime's timers, earliest first; cancelling removes a timer at once.",
    .tp_basicsize = sizeof(sf_timer_heap),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = TimerHeap_new,
    .tp_dealloc = (destructor)TimerHeap_dealloc,
    .tp_traverse = (traverseproc)TimerHeap_traverse,
    .tp_clear = (inquiry)TimerHeap_clear_impl,
    .tp_methods = TimerHeap_methods,
    .tp_getset = TimerHeap_getset,
    .tp_as_sequence = &TimerHeap_as_sequence,
};

int sf_timers_init(PyObject *m)
{
    if (PyType_Ready(&TimerType) < 0 || PyType_Ready(&TimerHeapType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Timer", (PyObject *)&TimerType) < 0 ||
        PyModule_AddObjectRef(m, "TimerHeap", (PyObject *)&TimerHeapType) < 0)
        return -1;
    return 0;
}
