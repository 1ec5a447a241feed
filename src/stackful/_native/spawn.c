/* A task's start and end in C: spawn, the entry every task fiber runs, and the
 * common finish (the function returned; no group failure, no joiner left out).
 *
 * Spawning and finishing ran as five Python frames per task (Runtime.spawn,
 * Task.__init__, _task_body, _task_done, _finish): about 20,000 of the 34,000
 * instructions a spawn + join cost on CPython 3.12 (callgrind).  Here they are
 * C, on the fields TaskCore and SchedulerCore hold (scheduler.h); anything
 * unusual goes back to the Python side, which keeps the rules:
 *
 *   Runtime._spawn_fast  only while Runtime._fast_spawn says so (plain Fiber,
 *                        no max_tasks, not shutting down, not closed);
 *   Runtime._task_entry  calls Runtime._task_done for a task that failed, for
 *                        main, and once the run is ending;
 *   a task's finalizer   reports an exception nobody retrieved, as
 *                        Task.__del__ did (Runtime.report_unretrieved).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "fiber.h"
#include "fiber_internal.h"
#include "interp_state.h"
#include "scheduler.h"

static PyObject *str_task_done, *str_pick_next, *str_child_finished, *str_report_unretrieved,
    *str_context, *str_task_prefix, *empty_tuple, *empty_dict;

/* ---- GroupCore: the fields of a TaskGroup a child's spawn and end touch ---- */

typedef struct {
    PyObject_HEAD
    PyObject *children;  /* the live children: a dict used as an insertion-ordered set */
    PyObject *starting;  /* children started by start() not yet ready: task -> status */
    PyObject *waiter;    /* the owner, while blocked at the end of the block; or None */
    PyObject *runtime;   /* the owner's runtime once entered, or None */
    PyObject *state;     /* "new", "open" or "closed" (_group.py's _NEW, _OPEN, _CLOSED) */
    PyObject *cancelled; /* the group was cancelled: a child spawned now is cancelled too */
} GroupCore;

#define GROUP_FIELDS(g) {&(g)->children, &(g)->starting, &(g)->waiter, &(g)->runtime, \
                         &(g)->state, &(g)->cancelled}

static PyObject *str_open;

static PyObject *GroupCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    GroupCore *g = (GroupCore *)type->tp_alloc(type, 0);
    if (!g)
        return NULL;
    g->children = PyDict_New();
    g->starting = PyDict_New();
    g->waiter = Py_NewRef(Py_None);
    g->runtime = Py_NewRef(Py_None);
    g->state = Py_NewRef(Py_None);
    g->cancelled = Py_NewRef(Py_False);
    if (!g->children || !g->starting)
        Py_CLEAR(g);
    return (PyObject *)g;
}

static int GroupCore_traverse(GroupCore *g, visitproc visit, void *arg)
{
    PyObject **fields[] = GROUP_FIELDS(g);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        Py_VISIT(*fields[i]);
    return 0;
}

static int GroupCore_clear(GroupCore *g)
{
    PyObject **fields[] = GROUP_FIELDS(g);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        Py_CLEAR(*fields[i]);
    return 0;
}

static void GroupCore_dealloc(GroupCore *g)
{
    PyObject_GC_UnTrack(g);
    GroupCore_clear(g);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyMemberDef GroupCore_members[] = {
    {"_children", T_OBJECT_EX, offsetof(GroupCore, children), 0,
     "the live children, in spawn order (a dict used as a set)"},
    {"_starting", T_OBJECT_EX, offsetof(GroupCore, starting), 0,
     "children started by start() that have not called started() yet"},
    {"_waiter", T_OBJECT_EX, offsetof(GroupCore, waiter), 0,
     "the owner, while it is blocked at the end of the block waiting for children"},
    {"_runtime", T_OBJECT_EX, offsetof(GroupCore, runtime), 0,
     "the owner's runtime once the block is entered, or None"},
    {"_state", T_OBJECT_EX, offsetof(GroupCore, state), 0, "'new', 'open' or 'closed'"},
    {"_cancelled", T_OBJECT_EX, offsetof(GroupCore, cancelled), 0,
     "the group was cancelled (a child spawned now is cancelled at once)"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *GroupCore_spawn(GroupCore *g, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames);

PyDoc_STRVAR(group_spawn_doc,
"spawn(fn, /, *args, name=None, stack_size=None, **kwargs)\n--\n\n"
"Start ``fn(*args, **kwargs)`` as a child task of the group and return it.\n\n"
"``RuntimeError`` unless the group is open (see the module docstring of\n"
"stackful._core._group).  The common case is C; the rest is _spawn_slow.");

static PyMethodDef GroupCore_methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))GroupCore_spawn, METH_FASTCALL | METH_KEYWORDS,
     group_spawn_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GroupCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.GroupCore",
    .tp_doc = "The fields of a TaskGroup that a child's spawn and end touch (spawn.c).",
    .tp_basicsize = sizeof(GroupCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = GroupCore_new,
    .tp_dealloc = (destructor)GroupCore_dealloc,
    .tp_traverse = (traverseproc)GroupCore_traverse,
    .tp_clear = (inquiry)GroupCore_clear,
    .tp_members = GroupCore_members,
    .tp_methods = GroupCore_methods,
};

/* TaskGroup._child_finished for a child that returned while no start() waits: forget
 * it, and wake the owner if it was the last.  0, or -1 with an exception. */
static int group_child_returned(SchedulerCore *s, PyObject *group, TaskCore *task)
{
    GroupCore *g = (GroupCore *)group;
    if (!PyObject_TypeCheck(group, &GroupCoreType) || !g->starting || !PyDict_Check(g->starting) ||
        PyDict_GET_SIZE(g->starting) || !g->children || !PyDict_Check(g->children) ||
        !g->waiter) {
        PyObject *r = PyObject_CallMethodOneArg(group, str_child_finished, (PyObject *)task);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    if (PyDict_DelItem(g->children, (PyObject *)task) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return -1;
        PyErr_Clear();
    }
    if (PyDict_GET_SIZE(g->children))
        return 0;
    PyObject *owner = g->waiter;
    g->waiter = Py_NewRef(Py_None);
    /* (Not blocked: the run's wind-down gave up on it and killed its fiber.) */
    int rc = 0;
    if (PyObject_TypeCheck(owner, &TaskCoreType) && ((TaskCore *)owner)->state == STATE_BLOCKED)
        rc = sf_wake(s, (TaskCore *)owner, Py_None);
    Py_DECREF(owner);
    return rc;
}

/* ---- the record's fields (TaskCore's traverse, clear, finalizer) ---- */

#define TASK_RECORD(t) {&(t)->name, &(t)->id, &(t)->parent_id, &(t)->runtime, &(t)->fn, \
                        &(t)->args, &(t)->kwargs, &(t)->joiners, &(t)->result,           \
                        &(t)->exception, &(t)->scopes, &(t)->group}

int sf_task_traverse(TaskCore *t, visitproc visit, void *arg)
{
    /* Field by field, None skipped: most are None, and every collection walks every
     * live task (10,000 of them in the benchmark). */
#define VISIT_SET(o) do { if ((o) != Py_None) Py_VISIT(o); } while (0)
    VISIT_SET(t->name);
    VISIT_SET(t->id);
    VISIT_SET(t->parent_id);
    VISIT_SET(t->runtime);
    VISIT_SET(t->fn);
    VISIT_SET(t->args);
    VISIT_SET(t->kwargs);
    VISIT_SET(t->joiners);
    VISIT_SET(t->result);
    VISIT_SET(t->exception);
    VISIT_SET(t->scopes);
    VISIT_SET(t->group);
#undef VISIT_SET
    return 0;
}

void sf_task_clear(TaskCore *t, int to_none)
{
    PyObject **fields[] = TASK_RECORD(t);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (to_none)
            Py_XSETREF(*fields[i], Py_NewRef(Py_None));
        else
            Py_CLEAR(*fields[i]);
    }
}

/* "Nothing lost": a failed task nobody looked at reports its exception when it
 * is forgotten (or when the run ends, whichever comes first). */
void sf_task_finalize(PyObject *self)
{
    TaskCore *t = (TaskCore *)self;
    if (!t->exception || t->exception == Py_None || t->exc_retrieved || !t->runtime ||
        t->runtime == Py_None)
        return;
    PyObject *saved = sf_fetch_exception();
    PyObject *r = PyObject_CallMethodOneArg(t->runtime, str_report_unretrieved, self);
    if (r)
        Py_DECREF(r);
    else
        PyErr_Clear();  /* never let a finalizer raise */
    if (saved)  /* (NULL: nothing was raised; 3.11's restore needs an exception) */
        sf_restore_exception(saved);
}

/* ---- spawning ---- */

PyDoc_STRVAR(spawn_fast_doc,
"_spawn_fast(fn, args, kwargs, name, group=None)\n--\n\n"
"Runtime.spawn's common case (its caller checked _fast_spawn): make the task\n"
"and its fiber, queue it, return it; with a group (a GroupCore), as its child.");

static PyObject *spawn_task(SchedulerCore *s, PyObject *fn, PyObject *args, PyObject *kwargs,
                            PyObject *name, GroupCore *group);

static PyObject *Sched_spawn_fast(SchedulerCore *s, PyObject *const *a, Py_ssize_t n)
{
    if (n < 4 || n > 5 || !PyTuple_Check(a[1]) || !PyDict_Check(a[2]) ||
        (n == 5 && !PyObject_TypeCheck(a[4], &GroupCoreType))) {
        PyErr_SetString(PyExc_TypeError,
                        "_spawn_fast(fn, args: tuple, kwargs: dict, name[, group])");
        return NULL;
    }
    return spawn_task(s, a[0], a[1], a[2], a[3], n == 5 ? (GroupCore *)a[4] : NULL);
}

/* Make, queue and return a task for fn(*args, **kwargs) (Runtime.spawn's common
 * case), in `group` if not NULL.  A new reference, or NULL with an exception. */
static PyObject *spawn_task(SchedulerCore *s, PyObject *fn, PyObject *args, PyObject *kwargs,
                            PyObject *name, GroupCore *group)
{
    if (group && (!group->children || !PyDict_Check(group->children))) {
        PyErr_SetString(PyExc_TypeError, "_spawn_fast: the group has no children dict");
        return NULL;
    }
    if (!s->fast_spawn || !s->live || !PyDict_Check(s->live) || !s->entry || !s->hub ||
        !s->task_type || !PyType_Check(s->task_type) ||
        !PyType_IsSubtype((PyTypeObject *)s->task_type, &TaskCoreType)) {
        PyErr_SetString(PyExc_RuntimeError, "_spawn_fast: this runtime spawns through spawn()");
        return NULL;
    }
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "spawn() needs a callable, got %.100s",
                     Py_TYPE(fn)->tp_name);
        return NULL;
    }
    if (name != Py_None && !PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %.100s", Py_TYPE(name)->tp_name);
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)s->task_type;
    TaskCore *t = (TaskCore *)type->tp_new(type, empty_tuple, NULL);
    if (!t)
        return NULL;
    Py_ssize_t task_id = s->next_id++;
    Py_SETREF(t->id, PyLong_FromSsize_t(task_id));
    if (!t->id)
        goto fail;
    if (name == Py_None) {
        PyObject *digits = PyObject_Str(t->id);  /* (PyUnicode_FromFormat: 5x the cost) */
        if (!digits)
            goto fail;
        Py_SETREF(t->name, PyUnicode_Concat(str_task_prefix, digits));
        Py_DECREF(digits);
        if (!t->name)
            goto fail;
    } else {
        Py_SETREF(t->name, Py_NewRef(name));
    }
    Py_SETREF(t->runtime, Py_NewRef((PyObject *)s));
    Py_SETREF(t->fn, Py_NewRef(fn));
    Py_SETREF(t->args, Py_NewRef(args));
    Py_SETREF(t->kwargs, Py_NewRef(kwargs));
    /* Who spawned it, by id (Task says why not the task). */
    if (s->current && PyObject_TypeCheck(s->current, &TaskCoreType))
        Py_SETREF(t->parent_id, Py_NewRef(((TaskCore *)s->current)->id));
    PyObject *fiber = sf_fiber_new(s->entry, t->name, s->hub);
    if (!fiber)
        goto fail;
    Py_SETREF(t->fiber, fiber);
    /* Like asyncio, a task runs in a copy of its spawner's context; a copy of an
     * empty one is no different from the fresh context a fiber gets when needed,
     * so only a context with variables set is copied. */
    PyObject *ctx = PyThreadState_Get()->context;
    if (ctx) {
        Py_ssize_t len = PyObject_Length(ctx);
        if (len < 0)
            goto fail;
        if (len) {
            PyObject *copy = PyContext_Copy(ctx);
            if (!copy)
                goto fail;
            int rc = PyObject_SetAttr(fiber, str_context, copy);
            Py_DECREF(copy);
            if (rc < 0)
                goto fail;
        }
    }
    if (group && PyDict_SetItem(group->children, (PyObject *)t, Py_None) < 0)
        goto fail;
    if (group)
        Py_SETREF(t->group, Py_NewRef((PyObject *)group));
    if (PyDict_SetItem(s->live, (PyObject *)t, Py_None) < 0 || rq_push(s->ready, (PyObject *)t) < 0) {
        PyObject *exc = sf_fetch_exception();
        if (PyDict_DelItem(s->live, (PyObject *)t) < 0)
            PyErr_Clear();
        if (group && PyDict_DelItem(group->children, (PyObject *)t) < 0)
            PyErr_Clear();
        sf_restore_exception(exc);
        goto fail;
    }
    return (PyObject *)t;
fail:
    Py_DECREF(t);
    return NULL;
}

static PyObject *str_name_kw, *str_stack_size_kw, *str_spawn_slow, *str_cancel;

/* TaskGroup.spawn: its common case (the group open, on its runtime's thread, the
 * runtime spawning in C, no stack size) without a Python frame; the rest, with the
 * clear errors, is TaskGroup._spawn_slow. */
static PyObject *GroupCore_spawn(GroupCore *g, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "spawn() missing the function to run");
        return NULL;
    }
    PyObject *name = Py_None, *stack_size = Py_None;
    /* No keyword for fn (the common case): the shared empty dict, which nothing changes. */
    PyObject *fn_args = PyTuple_New(nargs - 1), *kwargs = Py_NewRef(empty_dict), *task = NULL;
    if (!fn_args)
        goto done;
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(fn_args, i - 1, Py_NewRef(args[i]));
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), *value = args[nargs + i];
        if (PyUnicode_Compare(key, str_name_kw) == 0)
            name = value;
        else if (PyUnicode_Compare(key, str_stack_size_kw) == 0)
            stack_size = value;
        else {
            if (kwargs == empty_dict) {
                Py_SETREF(kwargs, PyDict_New());
                if (!kwargs)
                    goto done;
            }
            if (PyDict_SetItem(kwargs, key, value) < 0)
                goto done;
        }
    }
    if (PyErr_Occurred())  /* (a failed comparison) */
        goto done;
    PyObject **slot = sf_thread_scheduler_slot();
    if (!slot)
        goto done;
    SchedulerCore *s = (SchedulerCore *)g->runtime;
    /* (A field deleted from Python is NULL: the slow path reads it and raises.) */
    if (g->state == str_open && g->runtime && *slot == g->runtime && g->cancelled &&
        stack_size == Py_None && PyObject_TypeCheck(g->runtime, &SchedulerCoreType) &&
        s->fast_spawn) {
        task = spawn_task(s, args[0], fn_args, kwargs, name, g);
        if (task && g->cancelled != Py_False) {
            int cancelled = PyObject_IsTrue(g->cancelled);
            PyObject *r = cancelled > 0 ? PyObject_CallMethodOneArg(g->runtime, str_cancel, task)
                          : NULL;
            if (cancelled < 0 || (cancelled > 0 && !r))
                Py_CLEAR(task);
            Py_XDECREF(r);
        }
    } else {
        PyObject *call[] = {(PyObject *)g, args[0], fn_args, kwargs, name, stack_size};
        task = PyObject_VectorcallMethod(str_spawn_slow, call,
                                         6 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
done:
    Py_XDECREF(fn_args);
    Py_XDECREF(kwargs);
    return task;
}

/* ---- a task's life in its fiber ---- */

/* The task finished by returning: Runtime._finish for that case, then the
 * hand-over of Runtime._task_done.  0, or -1 with an exception. */
static int finish_returned(SchedulerCore *s, TaskCore *task, PyObject *result)
{
    Py_SETREF(task->state, Py_NewRef(STATE_FINISHED));
    Py_SETREF(task->result, Py_NewRef(result));
    Py_XSETREF(task->fiber, Py_NewRef(Py_None));
    Py_XSETREF(task->abort, Py_NewRef(Py_None));
    Py_XSETREF(task->pending_exc, Py_NewRef(Py_None));
    if (PyDict_DelItem(s->live, (PyObject *)task) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return -1;
        PyErr_Clear();
    }
    if (task->group != Py_None && group_child_returned(s, task->group, task) < 0)
        return -1;
    PyObject *joiners = task->joiners;
    if (joiners != Py_None) {
        task->joiners = Py_NewRef(Py_None);
        if (PyList_Check(joiners)) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(joiners); i++) {
                PyObject *joiner = PyList_GET_ITEM(joiners, i);
                if (!PyObject_TypeCheck(joiner, &TaskCoreType) ||
                    sf_wake(s, (TaskCore *)joiner, Py_None) < 0) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_TypeError, "a task's joiners must be tasks");
                    Py_DECREF(joiners);
                    return -1;
                }
            }
        }
        Py_DECREF(joiners);
    }
    /* Hand over directly: the next ready task becomes this fiber's parent, so the
     * core's switch-to-parent on return is the one switch to it. */
    PyObject *fiber = sf_current_fiber();
    if (!fiber)
        return -1;
    PyObject *next = NULL;
    if (s->interrupt == Py_None) {
        if (s->countdown - 1 <= 0) {
            /* The batch is over: the Python side checks timers and I/O. */
            next = PyObject_CallMethodNoArgs((PyObject *)s, str_pick_next);
            if (!next)
                return -1;
            if (next == Py_None)
                Py_CLEAR(next);
        } else {
            s->countdown--;
            next = rq_pop(s->ready);
        }
    }
    if (next) {
        if (!PyObject_TypeCheck(next, &TaskCoreType) || !sf_is_fiber(task_run_fiber((TaskCore *)next))) {
            PyErr_Format(PyExc_RuntimeError, "the ready queue holds %R, which has no fiber to run",
                         next);
            Py_DECREF(next);
            return -1;
        }
        Py_XSETREF(((TaskCore *)next)->state, Py_NewRef(STATE_RUNNING));
        Py_XSETREF(s->current, next);  /* takes over the reference */
        return sf_fiber_set_parent((Fiber *)fiber, task_run_fiber((TaskCore *)next));
    }
    Py_XSETREF(s->current, Py_NewRef(Py_None));
    return sf_fiber_set_parent((Fiber *)fiber, s->hub);
}

PyDoc_STRVAR(task_entry_doc,
"_task_entry(*ignored)\n--\n\n"
"The target of every task fiber: run the task's function, record the outcome,\n"
"hand over to the next task.  The task is `current` (whoever switches to a\n"
"fiber sets it first); arguments are ignored (a task starts by a plain switch,\n"
"or by a dying task whose fiber was re-parented onto it, which passes its\n"
"return value).");

#define ENTRY_ARGS_MAX 8  /* positional arguments a task's call takes off its tuple */

static PyObject *Sched_task_entry(SchedulerCore *s, PyObject *Py_UNUSED(ignored))
{
    if (!s->current || !PyObject_TypeCheck(s->current, &TaskCoreType)) {
        PyErr_SetString(PyExc_RuntimeError, "_task_entry() runs only as a task's fiber");
        return NULL;
    }
    TaskCore *task = (TaskCore *)Py_NewRef(s->current);
    /* Hand the call to this frame and forget it in the task, so a finished task does
     * not keep its arguments alive. */
    PyObject *fn = task->fn, *args = task->args, *kwargs = task->kwargs;
    if (!fn || fn == Py_None || !args || !PyTuple_Check(args) || !kwargs) {
        PyErr_SetString(PyExc_RuntimeError, "a task's function is taken once");
        Py_DECREF(task);
        return NULL;
    }
    task->fn = Py_NewRef(Py_None);
    task->args = Py_NewRef(empty_tuple);
    task->kwargs = Py_NewRef(Py_None);
    PyObject *result = NULL, *error = NULL;
    PyObject *pending = task->pending_exc;
    if (pending && pending != Py_None) {
        /* Cancelled (or interrupted) before it ever ran: do not start the function. */
        task->pending_exc = Py_NewRef(Py_None);
        error = pending;
    } else if (PyDict_Check(kwargs) && PyDict_GET_SIZE(kwargs)) {
        result = PyObject_Call(fn, args, kwargs);
    } else if (PyTuple_GET_SIZE(args) <= ENTRY_ARGS_MAX) {
        /* The arguments on this C stack and the tuple (and an empty kwargs) let go
         * before the call: a task lives as long as its call, and a server's idle
         * connection would otherwise keep both (144 bytes) for nothing. */
        PyObject *argv[ENTRY_ARGS_MAX];
        Py_ssize_t argc = PyTuple_GET_SIZE(args);
        for (Py_ssize_t i = 0; i < argc; i++)
            argv[i] = Py_NewRef(PyTuple_GET_ITEM(args, i));
        Py_SETREF(args, Py_NewRef(empty_tuple));
        Py_SETREF(kwargs, Py_NewRef(Py_None));
        result = PyObject_Vectorcall(fn, argv, argc, NULL);
        for (Py_ssize_t i = 0; i < argc; i++)
            Py_DECREF(argv[i]);
    } else {
        result = PyObject_Vectorcall(fn, &PyTuple_GET_ITEM(args, 0), PyTuple_GET_SIZE(args),
                                     NULL);
    }
    Py_DECREF(fn);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    if (!result && !error)
        error = sf_fetch_exception();
    if (error && PyObject_TypeCheck(error, (PyTypeObject *)FiberExit)) {
        /* The fiber is being killed (shutdown gave up on it, or it was collected):
         * let the core unwind it; the task was already marked finished. */
        sf_restore_exception(error);
        Py_DECREF(task);
        return NULL;
    }
    PyObject *r;
    if (error || task->state == STATE_FINISHED || (PyObject *)task == s->main ||
        s->interrupt != Py_None || task->pending_exc != Py_None || !s->live ||
        !PyDict_Check(s->live)) {
        /* The rules for failures, main's end, a run ending and an interruption the task
         * finished without seeing (a signal's, say) are the Python side's. */
        r = PyObject_CallMethodObjArgs((PyObject *)s, str_task_done, (PyObject *)task,
                                       result ? result : Py_None, error ? error : Py_None,
                                       NULL);
    } else {
        r = finish_returned(s, task, result) < 0 ? NULL : Py_NewRef(Py_None);
    }
    Py_XDECREF(result);
    Py_XDECREF(error);
    Py_DECREF(task);
    return r;
}

PyMethodDef sf_spawn_methods[] = {
    {"_spawn_fast", (PyCFunction)(void (*)(void))Sched_spawn_fast, METH_FASTCALL,
     spawn_fast_doc},
    {"_task_entry", (PyCFunction)Sched_task_entry, METH_VARARGS, task_entry_doc},
    {NULL, NULL, 0, NULL},
};

int sf_spawn_init(PyObject *m)
{
    str_task_done = PyUnicode_InternFromString("_task_done");
    str_pick_next = PyUnicode_InternFromString("_pick_next");
    str_child_finished = PyUnicode_InternFromString("_child_finished");
    str_report_unretrieved = PyUnicode_InternFromString("report_unretrieved");
    str_context = PyUnicode_InternFromString("context");
    str_task_prefix = PyUnicode_InternFromString("task-");
    empty_tuple = PyTuple_New(0);
    empty_dict = PyDict_New();
    str_open = PyUnicode_InternFromString("open");
    str_name_kw = PyUnicode_InternFromString("name");
    str_stack_size_kw = PyUnicode_InternFromString("stack_size");
    str_spawn_slow = PyUnicode_InternFromString("_spawn_slow");
    str_cancel = PyUnicode_InternFromString("cancel");
    if (!empty_dict || !str_open || !str_name_kw || !str_stack_size_kw || !str_spawn_slow || !str_cancel)
        return -1;
    if (!str_task_done || !str_pick_next || !str_child_finished || !str_report_unretrieved ||
        !str_context || !str_task_prefix || !empty_tuple || PyType_Ready(&GroupCoreType) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "GroupCore", (PyObject *)&GroupCoreType);
}
