/* The runtime's hot path in C: the ready queue and the yield that hands over
 * directly to the next ready task.
 *
 * The scheduler itself is Python (stackful/_core/_run.py); profiling showed a
 * yield spending most of its time on Python-level attribute traffic around one
 * ~25 ns fiber switch.  So the few fields a yield touches live in C structs
 * that the Python classes derive from:
 *
 *   TaskCore       base of Task:     state, _fiber, _pending_exc
 *   SchedulerCore  base of Runtime:  current, _countdown, ready (a ReadyQueue)
 *   ReadyQueue     a FIFO of tasks with the deque methods the runtime uses
 *
 * and SchedulerCore._yield_fast() does the whole round-robin step.  Anything
 * unusual (a pending exception, the batch countdown running out) is handed
 * back to Python with a return code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "fiber.h"
#include "scheduler.h"

PyObject *STATE_READY;    /* "ready" */
PyObject *STATE_RUNNING;  /* "running" */
PyObject *STATE_BLOCKED;  /* "blocked" */
PyObject *STATE_FINISHED; /* "finished" */

/* ------------------------------------------------------------------ */
/* ReadyQueue: a ring buffer of strong references                      */

static int rq_grow_impl(ReadyQueue *q)
{
    Py_ssize_t cap = q->cap ? q->cap * 2 : 16;
    PyObject **items = PyMem_Malloc((size_t)cap * sizeof(PyObject *));
    if (!items) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < q->len; i++)
        items[i] = q->items[(q->head + i) & (q->cap - 1)];
    PyMem_Free(q->items);
    q->items = items;
    q->head = 0;
    q->cap = cap;
    return 0;
}

int rq_grow(ReadyQueue *q) { return rq_grow_impl(q); }

static PyObject *ReadyQueue_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if ((args && PyTuple_GET_SIZE(args)) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "ReadyQueue() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static int ReadyQueue_traverse(ReadyQueue *q, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < q->len; i++)
        Py_VISIT(rq_at(q, i));
    return 0;
}

static int ReadyQueue_clear_impl(ReadyQueue *q)
{
    PyObject *item;
    while ((item = rq_pop(q)))
        Py_DECREF(item);
    return 0;
}

static void ReadyQueue_dealloc(ReadyQueue *q)
{
    PyObject_GC_UnTrack(q);
    ReadyQueue_clear_impl(q);
    PyMem_Free(q->items);
    Py_TYPE(q)->tp_free((PyObject *)q);
}

static PyObject *ReadyQueue_append(ReadyQueue *q, PyObject *item)
{
    if (rq_push(q, item) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *ReadyQueue_popleft(ReadyQueue *q, PyObject *Py_UNUSED(ignored))
{
    PyObject *item = rq_pop(q);
    if (!item)
        PyErr_SetString(PyExc_IndexError, "pop from an empty ReadyQueue");
    return item;
}

static PyObject *ReadyQueue_remove(ReadyQueue *q, PyObject *item)
{
    for (Py_ssize_t i = 0; i < q->len; i++) {
        if (rq_at(q, i) != item)
            continue;
        PyObject *found = rq_at(q, i);
        for (Py_ssize_t j = i; j + 1 < q->len; j++)
            q->items[(q->head + j) & (q->cap - 1)] = rq_at(q, j + 1);
        q->len--;
        Py_DECREF(found);
        Py_RETURN_NONE;
    }
    PyErr_SetString(PyExc_ValueError, "ReadyQueue.remove(x): x not in queue");
    return NULL;
}

static PyObject *ReadyQueue_clear(ReadyQueue *q, PyObject *Py_UNUSED(ignored))
{
    ReadyQueue_clear_impl(q);
    Py_RETURN_NONE;
}

static Py_ssize_t ReadyQueue_len(ReadyQueue *q) { return q->len; }

static int ReadyQueue_contains(ReadyQueue *q, PyObject *item)
{
    for (Py_ssize_t i = 0; i < q->len; i++)
        if (rq_at(q, i) == item)
            return 1;
    return 0;
}

static PyObject *ReadyQueue_iter(ReadyQueue *q)
{
    /* A snapshot: callers may change the queue while they walk it. */
    PyObject *snapshot = PyTuple_New(q->len);
    if (!snapshot)
        return NULL;
    for (Py_ssize_t i = 0; i < q->len; i++)
        PyTuple_SET_ITEM(snapshot, i, Py_NewRef(rq_at(q, i)));
    PyObject *it = PyObject_GetIter(snapshot);
    Py_DECREF(snapshot);
    return it;
}

static PyMethodDef ReadyQueue_methods[] = {
    {"append", (PyCFunction)ReadyQueue_append, METH_O, "Add a task at the back."},
    {"popleft", (PyCFunction)ReadyQueue_popleft, METH_NOARGS,
     "Take the task at the front (IndexError if empty)."},
    {"remove", (PyCFunction)ReadyQueue_remove, METH_O, "Remove a task (by identity)."},
    {"clear", (PyCFunction)ReadyQueue_clear, METH_NOARGS, "Remove every task."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods ReadyQueue_as_sequence = {
    .sq_length = (lenfunc)ReadyQueue_len,
    .sq_contains = (objobjproc)ReadyQueue_contains,
};

PyTypeObject ReadyQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.ReadyQueue",
    .tp_doc = "ReadyQueue()\n--\n\nThe runtime's FIFO of ready tasks (deque-like: append, "
              "popleft, remove, clear, len, in, iteration over a snapshot).",
    .tp_basicsize = sizeof(ReadyQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = ReadyQueue_new,
    .tp_dealloc = (destructor)ReadyQueue_dealloc,
    .tp_traverse = (traverseproc)ReadyQueue_traverse,
    .tp_clear = (inquiry)ReadyQueue_clear_impl,
    .tp_methods = ReadyQueue_methods,
    .tp_as_sequence = &ReadyQueue_as_sequence,
    .tp_iter = (getiterfunc)ReadyQueue_iter,
};

/* ------------------------------------------------------------------ */
/* TaskCore                                                            */


static PyObject *TaskCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    TaskCore *t = (TaskCore *)type->tp_alloc(type, 0);
    if (t) {
        t->state = Py_NewRef(STATE_READY);
        t->fiber = Py_NewRef(Py_None);
        t->pending_exc = Py_NewRef(Py_None);
        t->resume_value = Py_NewRef(Py_None);
        t->resume_exc = Py_NewRef(Py_None);
        t->abort = Py_NewRef(Py_None);
        t->wait_reason = PyUnicode_New(0, 0);
        PyObject **fields[] = {&t->name, &t->id, &t->parent_id, &t->runtime, &t->fn,
                               &t->args, &t->kwargs, &t->joiners, &t->result, &t->exception,
                               &t->scopes, &t->group};
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
            *fields[i] = Py_NewRef(Py_None);
        if (!t->wait_reason)
            Py_CLEAR(t);
    }
    return (PyObject *)t;
}

static int TaskCore_traverse(TaskCore *t, visitproc visit, void *arg)
{
    Py_VISIT(t->state);
    Py_VISIT(t->fiber);
    Py_VISIT(t->pending_exc);
    Py_VISIT(t->resume_value);
    Py_VISIT(t->resume_exc);
    Py_VISIT(t->abort);
    Py_VISIT(t->wait_reason);
    Py_VISIT(t->resume_fiber);
    Py_VISIT(t->io_wait);
    return sf_task_traverse(t, visit, arg);
}

/* The object fields of TaskCore and SchedulerCore are T_OBJECT_EX slots, which the
 * interpreter specialises like any __slots__ field: the runtime's Python half reads and writes
 * them on every switch.  (Getset descriptors whose setter refuses deletion were tried: spawn
 * and channel round trips cost 10-15% more on 3.13, where member slots are specialised and
 * getsets never are.)  So Python code may delete them, leaving NULL, and no C code here
 * dereferences one unchecked: a deleted `current` or `_fiber` is an exception, a deleted
 * `_pending_exc` counts as pending (the Python side's read of it then raises AttributeError),
 * and `state` is only ever overwritten.  The collector's clear leaves None, not NULL. */
static inline void clear_to_none(PyObject **field)
{
    Py_XSETREF(*field, Py_NewRef(Py_None));
}

static int TaskCore_clear(TaskCore *t)
{
    clear_to_none(&t->state);
    clear_to_none(&t->fiber);
    clear_to_none(&t->pending_exc);
    clear_to_none(&t->resume_value);
    clear_to_none(&t->resume_exc);
    clear_to_none(&t->abort);
    clear_to_none(&t->wait_reason);
    Py_CLEAR(t->resume_fiber);
    Py_CLEAR(t->io_wait);
    sf_task_clear(t, 1);
    return 0;
}

/* A Python subclass's dealloc drops the reference to its type itself. */
static void TaskCore_dealloc(TaskCore *t)
{
    PyObject_GC_UnTrack(t);
    Py_CLEAR(t->state);
    Py_CLEAR(t->fiber);
    Py_CLEAR(t->pending_exc);
    Py_CLEAR(t->resume_value);
    Py_CLEAR(t->resume_exc);
    Py_CLEAR(t->abort);
    Py_CLEAR(t->wait_reason);
    Py_CLEAR(t->resume_fiber);
    Py_CLEAR(t->io_wait);
    sf_task_clear(t, 0);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *TaskCore_get_run_fiber(TaskCore *t, void *c)
{
    (void)c;
    PyObject *f = task_run_fiber(t);
    return Py_NewRef(f ? f : Py_None);
}

static PyGetSetDef TaskCore_getset[] = {
    {"_run_fiber", (getter)TaskCore_get_run_fiber, NULL,
     "the fiber to switch to to run the task: the one that parked", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef TaskCore_members[] = {
    {"state", T_OBJECT_EX, offsetof(TaskCore, state), 0, "ready, running, blocked or finished"},
    {"_fiber", T_OBJECT_EX, offsetof(TaskCore, fiber), 0,
     "the task's fiber (None when finished)"},
    {"_pending_exc", T_OBJECT_EX, offsetof(TaskCore, pending_exc), 0,
     "an exception for the task's next blocking point"},
    {"_resume_value", T_OBJECT_EX, offsetof(TaskCore, resume_value), 0,
     "what the task's park() returns when it resumes"},
    {"_resume_exc", T_OBJECT_EX, offsetof(TaskCore, resume_exc), 0,
     "what the task's park() raises when it resumes (None: nothing)"},
    {"_abort", T_OBJECT_EX, offsetof(TaskCore, abort), 0,
     "undoes the registration of the task's wait (None: nothing to undo)"},
    {"_wait_reason", T_OBJECT_EX, offsetof(TaskCore, wait_reason), 0,
     "what a blocked task waits on"},
    {"_parked_ns", T_LONGLONG, offsetof(TaskCore, parked_ns), READONLY,
     "time.CLOCK_MONOTONIC_COARSE in ns when the task last parked (how long: dumps)"},
    {"_shield", T_INT, offsetof(TaskCore, shield), 0,
     "> 0 while interruptions must wait (call_shielded)"},
    /* The rest of the record (what each is: Task in _core/_task.py). */
    {"name", T_OBJECT_EX, offsetof(TaskCore, name), 0, "the task's name"},
    {"id", T_OBJECT_EX, offsetof(TaskCore, id), 0, "the task's number in its runtime"},
    {"_parent_id", T_OBJECT_EX, offsetof(TaskCore, parent_id), 0, NULL},
    {"_runtime", T_OBJECT_EX, offsetof(TaskCore, runtime), 0, NULL},
    {"_fn", T_OBJECT_EX, offsetof(TaskCore, fn), 0, NULL},
    {"_args", T_OBJECT_EX, offsetof(TaskCore, args), 0, NULL},
    {"_kwargs", T_OBJECT_EX, offsetof(TaskCore, kwargs), 0, NULL},
    {"_joiners", T_OBJECT_EX, offsetof(TaskCore, joiners), 0, NULL},
    {"_result", T_OBJECT_EX, offsetof(TaskCore, result), 0, NULL},
    {"_exception", T_OBJECT_EX, offsetof(TaskCore, exception), 0, NULL},
    {"_scopes", T_OBJECT_EX, offsetof(TaskCore, scopes), 0, NULL},
    {"_group", T_OBJECT_EX, offsetof(TaskCore, group), 0, NULL},
    {"_exc_retrieved", T_BOOL, offsetof(TaskCore, exc_retrieved), 0, NULL},
    {"_cancel_requested", T_BOOL, offsetof(TaskCore, cancel_requested), 0, NULL},
    {"_cancel_count", T_INT, offsetof(TaskCore, cancel_count), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject TaskCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.TaskCore",
    .tp_doc = "The fields of a task that the scheduler's C hot path reads and writes.",
    .tp_basicsize = sizeof(TaskCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = TaskCore_new,
    .tp_dealloc = (destructor)TaskCore_dealloc,
    .tp_traverse = (traverseproc)TaskCore_traverse,
    .tp_clear = (inquiry)TaskCore_clear,
    .tp_members = TaskCore_members,
    .tp_getset = TaskCore_getset,
    .tp_finalize = sf_task_finalize,
};

/* ------------------------------------------------------------------ */
/* SchedulerCore                                                       */


static PyObject *SchedulerCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    SchedulerCore *s = (SchedulerCore *)type->tp_alloc(type, 0);
    if (!s)
        return NULL;
    s->current = Py_NewRef(Py_None);
    s->hub = Py_NewRef(Py_None);
    s->io = Py_NewRef(Py_None);
    s->timers = Py_NewRef(Py_None);
    s->main = Py_NewRef(Py_None);
    s->interrupt = Py_NewRef(Py_None);
    s->ready = (ReadyQueue *)PyObject_CallNoArgs((PyObject *)&ReadyQueueType);
    s->parked_io = (ReadyQueue *)PyObject_CallNoArgs((PyObject *)&ReadyQueueType);
    if (!s->ready || !s->parked_io) {
        Py_DECREF(s);
        return NULL;
    }
    return (PyObject *)s;
}

static int SchedulerCore_traverse(SchedulerCore *s, visitproc visit, void *arg)
{
    Py_VISIT(s->current);
    Py_VISIT(s->ready);
    Py_VISIT(s->parked_io);
    Py_VISIT(s->hub);
    Py_VISIT(s->io);
    Py_VISIT(s->timers);
    Py_VISIT(s->live);
    Py_VISIT(s->main);
    Py_VISIT(s->interrupt);
    Py_VISIT(s->entry);
    Py_VISIT(s->task_type);
    return 0;
}

static int SchedulerCore_clear(SchedulerCore *s)
{
    /* The ready queue stays (it clears itself: that breaks its cycles). */
    clear_to_none(&s->current);
    clear_to_none(&s->hub);
    clear_to_none(&s->io);
    clear_to_none(&s->timers);
    s->fast_spawn = 0;
    Py_CLEAR(s->live);
    Py_CLEAR(s->main);
    Py_CLEAR(s->interrupt);
    Py_CLEAR(s->entry);
    Py_CLEAR(s->task_type);
    return 0;
}

/* A Python subclass's dealloc drops the reference to its type itself. */
static void SchedulerCore_dealloc(SchedulerCore *s)
{
    PyObject_GC_UnTrack(s);
    Py_CLEAR(s->current);
    Py_CLEAR(s->ready);
    Py_CLEAR(s->parked_io);
    Py_CLEAR(s->hub);
    Py_CLEAR(s->io);
    Py_CLEAR(s->timers);
    Py_CLEAR(s->live);
    Py_CLEAR(s->main);
    Py_CLEAR(s->interrupt);
    Py_CLEAR(s->entry);
    Py_CLEAR(s->task_type);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

enum yield_outcome {
    YIELD_DONE = 0,            /* yielded (or nothing else was ready) and resumed cleanly */
    YIELD_PENDING_BEFORE = 1,  /* the task has a pending exception: nothing was done */
    YIELD_BATCH_OVER = 2,      /* the batch countdown ran out: check timers and I/O first */
    YIELD_PENDING_AFTER = 3,   /* yielded, and was resumed with a pending exception */
};

static PyObject *yield_step(SchedulerCore *s, int count)
{
    if (!s->current) {
        PyErr_SetString(PyExc_AttributeError,
                        "the runtime's 'current' was deleted: the scheduler cannot run without it");
        return NULL;
    }
    if (!PyObject_TypeCheck(s->current, &TaskCoreType)) {
        PyErr_SetString(PyExc_RuntimeError, "yield_now() must be called from a task");
        return NULL;
    }
    TaskCore *task = (TaskCore *)s->current;
    s->yields++;
    /* A deleted _pending_exc (NULL) counts as pending: the Python side's read of it then
     * raises the AttributeError. */
    if (task->pending_exc != Py_None)
        return PyLong_FromLong(YIELD_PENDING_BEFORE);
    if (count && --s->countdown <= 0)
        return PyLong_FromLong(YIELD_BATCH_OVER);
    if (!s->ready->len)
        return PyLong_FromLong(YIELD_DONE);

    TaskCore *next = (TaskCore *)rq_pop(s->ready);  /* a new reference */
    if (!PyObject_TypeCheck(next, &TaskCoreType) || !next->fiber ||
        !sf_is_fiber(task_run_fiber(next))) {
        PyErr_Format(PyExc_RuntimeError, "the ready queue holds %R, which has no fiber to run",
                     next);
        Py_DECREF(next);
        return NULL;
    }
    PyObject *here = sf_current_fiber();  /* where the task resumes: a fiber of its own, maybe */
    if (!here || rq_push(s->ready, (PyObject *)task) < 0) {
        Py_DECREF(next);
        return NULL;
    }
    if (here != task->fiber)
        Py_XSETREF(task->resume_fiber, Py_NewRef(here));
    else
        Py_CLEAR(task->resume_fiber);
    Py_XSETREF(task->state, Py_NewRef(STATE_READY));  /* X: may have been deleted */
    Py_XSETREF(next->state, Py_NewRef(STATE_RUNNING));
    Py_INCREF(task);                             /* held across the switch */
    Py_SETREF(s->current, (PyObject *)next);     /* takes over next's reference */
    PyObject *r = sf_fiber_switch_empty(task_run_fiber(next));
    /* Resumed: whoever switched to us made us current and RUNNING again. */
    int pending = task->pending_exc != Py_None;
    Py_DECREF(task);
    if (!r)
        return NULL;
    Py_DECREF(r);
    return PyLong_FromLong(pending ? YIELD_PENDING_AFTER : YIELD_DONE);
}

PyDoc_STRVAR(yield_fast_doc,
"_yield_fast()\n--\n\n"
"The round-robin step of yield_now(): count the switch against the batch, put\n"
"the current task at the back of the ready queue and switch straight to the\n"
"front one.  Returns 0 when done; 1 if the task has a pending exception (nothing\n"
"done); 2 if the batch is over (call _tick(), then _switch_next()); 3 if the\n"
"task was resumed with a pending exception.");

static PyObject *SchedulerCore_yield_fast(SchedulerCore *s, PyObject *Py_UNUSED(ignored))
{
    return yield_step(s, 1);
}

PyDoc_STRVAR(switch_next_doc,
"_switch_next()\n--\n\n_yield_fast() without counting the switch against the batch.");

static PyObject *SchedulerCore_switch_next(SchedulerCore *s, PyObject *Py_UNUSED(ignored))
{
    return yield_step(s, 0);
}

static PyObject *str_yield_slow;

PyDoc_STRVAR(yield_now_doc,
"yield_now()\n--\n\n"
"Let every other ready task run once, then continue (the seeds' t_yield):\n"
"the running task goes to the back of the ready queue and the front one runs.");

static PyObject *mod_yield_now(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    PyObject **slot = sf_thread_scheduler_slot();
    if (!slot)
        return NULL;
    SchedulerCore *s = (SchedulerCore *)*slot;
    if (!s) {
        PyErr_SetString(PyExc_RuntimeError,
                        "yield_now() must be called inside stackful.run() (no runtime is running)");
        return NULL;
    }
    PyObject *outcome = yield_step(s, 1);
    if (!outcome)
        return NULL;
    if (PyLong_AsLong(outcome) == YIELD_DONE) {
        Py_DECREF(outcome);
        Py_RETURN_NONE;
    }
    /* The unusual cases are the Python scheduler's business. */
    Py_INCREF(s);
    PyObject *r = PyObject_CallMethodOneArg((PyObject *)s, str_yield_slow, outcome);
    Py_DECREF(s);
    Py_DECREF(outcome);
    return r;
}

PyDoc_STRVAR(set_thread_scheduler_doc,
"set_thread_scheduler(runtime)\n--\n\n"
"Make `runtime` (a SchedulerCore, or None) the one running on this thread:\n"
"yield_now() and get_thread_scheduler() find it here.");

static PyObject *mod_set_thread_scheduler(PyObject *m, PyObject *arg)
{
    (void)m;
    if (arg != Py_None && !PyObject_TypeCheck(arg, &SchedulerCoreType)) {
        PyErr_SetString(PyExc_TypeError, "set_thread_scheduler() needs a SchedulerCore or None");
        return NULL;
    }
    PyObject **slot = sf_thread_scheduler_slot();
    if (!slot)
        return NULL;
    Py_XSETREF(*slot, arg == Py_None ? NULL : Py_NewRef(arg));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_thread_scheduler_doc,
"get_thread_scheduler()\n--\n\nThe runtime running on this thread, or None.");

static PyObject *mod_get_thread_scheduler(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    PyObject **slot = sf_thread_scheduler_slot();
    if (!slot)
        return NULL;
    return Py_NewRef(*slot ? *slot : Py_None);
}

static PyMethodDef scheduler_functions[] = {
    {"yield_now", mod_yield_now, METH_NOARGS, yield_now_doc},
    {"set_thread_scheduler", mod_set_thread_scheduler, METH_O, set_thread_scheduler_doc},
    {"get_thread_scheduler", mod_get_thread_scheduler, METH_NOARGS, get_thread_scheduler_doc},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef SchedulerCore_methods[] = {
    {"_yield_fast", (PyCFunction)SchedulerCore_yield_fast, METH_NOARGS, yield_fast_doc},
    {"_switch_next", (PyCFunction)SchedulerCore_switch_next, METH_NOARGS, switch_next_doc},
    {NULL, NULL, 0, NULL},
};

/* SchedulerCore's own methods and loop.c's, in one table for the type. */
static PyMethodDef all_methods[24];

static int gather_methods(void)
{
    const size_t room = sizeof all_methods / sizeof all_methods[0] - 1;  /* a sentinel last */
    size_t n = 0;
    PyMethodDef *tables[] = {SchedulerCore_methods, sf_loop_methods, sf_spawn_methods};
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        for (PyMethodDef *d = tables[t]; d->ml_name; d++) {
            if (n == room) {
                PyErr_SetString(PyExc_SystemError, "stackful: too many SchedulerCore methods");
                return -1;
            }
            all_methods[n++] = *d;
        }
    }
    return 0;
}

static PyMemberDef SchedulerCore_members[] = {
    {"current", T_OBJECT_EX, offsetof(SchedulerCore, current), 0,
     "the running task, or None while the hub runs"},
    {"_countdown", T_PYSSIZET, offsetof(SchedulerCore, countdown), 0,
     "switches left before timers and I/O are checked"},
    {"ready", T_OBJECT, offsetof(SchedulerCore, ready), READONLY, "the ready queue (FIFO)"},
    {"_hub", T_OBJECT_EX, offsetof(SchedulerCore, hub), 0,
     "the fiber running the hub loop (None until run())"},
    {"io", T_OBJECT_EX, offsetof(SchedulerCore, io), 0, "the I/O poller"},
    {"timers", T_OBJECT_EX, offsetof(SchedulerCore, timers), 0, "the timer heap"},
    {"_parked_io", T_OBJECT, offsetof(SchedulerCore, parked_io), READONLY,
     "tasks that parked in I/O waits, their stacks to trim when the runtime idles a while"},
    {"stack_trims", T_PYSSIZET, offsetof(SchedulerCore, trims), READONLY,
     "how many parked tasks' stacks were trimmed (pages below where they rest given back)"},
    {"_yields", T_ULONGLONG, offsetof(SchedulerCore, yields), READONLY,
     "how many times a task yielded or parked (the watchdog's sign of progress)"},
    {"hub_resumptions", T_PYSSIZET, offsetof(SchedulerCore, hub_resumptions), 0,
     "how many times a task handed control back to the hub"},
    {"_next_id", T_PYSSIZET, offsetof(SchedulerCore, next_id), 0,
     "the id of the next task spawned"},
    {"_idle", T_BOOL, offsetof(SchedulerCore, idle), 0,
     "True while the hub waits for timers and I/O"},
    {"_fast_spawn", T_BOOL, offsetof(SchedulerCore, fast_spawn), 0,
     "True while _spawn_fast may make tasks without the Python side (spawn.c)"},
    {"_real_clock", T_BOOL, offsetof(SchedulerCore, real_clock), 0,
     "True when the clock is the real one (time.monotonic): C reads it itself"},
    {"_live", T_OBJECT_EX, offsetof(SchedulerCore, live), 0, "the live tasks (a dict)"},
    {"_main", T_OBJECT_EX, offsetof(SchedulerCore, main), 0, "the main task, or None"},
    {"_interrupt", T_OBJECT_EX, offsetof(SchedulerCore, interrupt), 0,
     "what ends the run early, or None"},
    {"_entry", T_OBJECT_EX, offsetof(SchedulerCore, entry), 0,
     "the target of every task fiber"},
    {"_task_type", T_OBJECT_EX, offsetof(SchedulerCore, task_type), 0,
     "the class of the tasks _spawn_fast makes"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject SchedulerCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.SchedulerCore",
    .tp_doc = "The fields and the yield step of a runtime that must be fast.",
    .tp_basicsize = sizeof(SchedulerCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = SchedulerCore_new,
    .tp_dealloc = (destructor)SchedulerCore_dealloc,
    .tp_traverse = (traverseproc)SchedulerCore_traverse,
    .tp_clear = (inquiry)SchedulerCore_clear,
    .tp_methods = all_methods,
    .tp_members = SchedulerCore_members,
};

int sf_scheduler_init(PyObject *m)
{
    STATE_READY = PyUnicode_InternFromString("ready");
    STATE_RUNNING = PyUnicode_InternFromString("running");
    STATE_BLOCKED = PyUnicode_InternFromString("blocked");
    STATE_FINISHED = PyUnicode_InternFromString("finished");
    str_yield_slow = PyUnicode_InternFromString("_yield_slow");
    if (gather_methods() < 0)
        return -1;
    if (!STATE_READY || !STATE_RUNNING || !STATE_BLOCKED || !str_yield_slow || PyType_Ready(&ReadyQueueType) < 0 ||
        PyType_Ready(&TaskCoreType) < 0 || PyType_Ready(&SchedulerCoreType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "TASK_READY", STATE_READY) < 0 ||
        PyModule_AddObjectRef(m, "TASK_RUNNING", STATE_RUNNING) < 0 ||
        PyModule_AddObjectRef(m, "TASK_BLOCKED", STATE_BLOCKED) < 0 ||
        !STATE_FINISHED || PyModule_AddObjectRef(m, "TASK_FINISHED", STATE_FINISHED) < 0 ||
        PyModule_AddObjectRef(m, "ReadyQueue", (PyObject *)&ReadyQueueType) < 0 ||
        PyModule_AddObjectRef(m, "TaskCore", (PyObject *)&TaskCoreType) < 0 ||
        PyModule_AddObjectRef(m, "SchedulerCore", (PyObject *)&SchedulerCoreType) < 0 ||
        PyModule_AddFunctions(m, scheduler_functions) < 0 || sf_loop_init(m) < 0 ||
        sf_watchdog_init(m) < 0 || sf_spawn_init(m) < 0 ||
        sf_scope_init(m) < 0)
        return -1;
    return 0;
}
