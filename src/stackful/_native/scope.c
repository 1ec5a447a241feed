/* A cancel scope's fields, and its entry and exit, in C (ScopeCore, the base of
 * CancelScope in _core/_cancel.py, where the rules are written down).
 *
 * `with CancelScope(): pass` was three Python frames (__init__, __enter__,
 * __exit__): about 8,000 instructions on CPython 3.12 against asyncio's 12,000
 * for `async with timeout(None)`.  Here the common path of each is C; the
 * uncommon steps call back into the Python class: a deadline that is not a
 * finite float (CancelScope._checked_deadline), a shield's entry
 * (_absorb_pending), a scope cancelled before it was entered or a shield's end
 * handing on what it held (Runtime.interrupt), a scope left out of order.  The
 * deadline's timer calls the class's _fire(scope): no bound method per scope.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>

#include "fiber.h"
#include "scheduler.h"

typedef struct {
    PyObject_HEAD
    PyObject *deadline;          /* a finite float, or None */
    PyObject *what;
    PyObject *expired, *error, *shield, *cancel_called, *cancelled_caught, *fail;
    PyObject *task;              /* the task that entered it, or None */
    PyObject *timer;             /* the deadline's Timer while inside, or None */
    PyObject *held, *exited, *group;
} ScopeCore;

static PyTypeObject ScopeCoreType;

static PyObject *kw_names[4];  /* deadline, what, shield, fail */
static PyObject *str_checked_deadline, *str_absorb_pending, *str_interrupt, *str_fire,
    *str_remove, *str_fails_by_default, *str_empty;

#define SCOPE_FIELDS(s) {&(s)->deadline, &(s)->what, &(s)->expired, &(s)->error, &(s)->shield, \
                         &(s)->cancel_called, &(s)->cancelled_caught, &(s)->fail, &(s)->task, \
                         &(s)->timer, &(s)->held, &(s)->exited, &(s)->group}

static PyObject *ScopeCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    ScopeCore *s = (ScopeCore *)type->tp_alloc(type, 0);
    if (!s)
        return NULL;
    PyObject **fields[] = SCOPE_FIELDS(s);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        *fields[i] = Py_NewRef(Py_None);
    Py_SETREF(s->what, Py_NewRef(str_empty));
    PyObject **flags[] = {&s->expired, &s->shield, &s->cancel_called, &s->cancelled_caught,
                          &s->fail, &s->exited};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        Py_SETREF(*flags[i], Py_NewRef(Py_False));
    return (PyObject *)s;
}

/* The arguments of ScopeCore_init, by hand: PyArg_ParseTupleAndKeywords makes and
 * hashes a str per keyword per call, a tenth of a `with move_on_after(...)`. */
static int parse_args(PyObject *args, PyObject *kwds, PyObject **deadline, PyObject **what,
                      PyObject **shield, PyObject **fail)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n > 2) {
        PyErr_Format(PyExc_TypeError, "CancelScope() takes at most 2 positional arguments "
                     "(%zd given)", n);
        return -1;
    }
    if (n > 0)
        *deadline = PyTuple_GET_ITEM(args, 0);
    if (n > 1)
        *what = PyTuple_GET_ITEM(args, 1);
    if (!kwds)
        return 0;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(kwds, &pos, &key, &value)) {
        PyObject **slot = NULL;
        int positional = 0;
        for (int i = 0; i < 4 && !slot; i++) {
            if (key == kw_names[i] || (PyUnicode_Check(key) && PyUnicode_Compare(key, kw_names[i]) == 0)) {
                PyObject **slots[] = {deadline, what, shield, fail};
                slot = slots[i];
                positional = i < n;
            }
        }
        if (!slot || positional) {
            PyErr_Format(PyExc_TypeError, "CancelScope() got an unexpected or repeated keyword "
                         "argument %R", key);
            return -1;
        }
        *slot = value;
    }
    return 0;
}

/* CancelScope(deadline=None, what="", *, shield=False, fail=False); a class whose
 * _fails_by_default is true (TimeoutScope) fails unless told otherwise. */
static int ScopeCore_init(ScopeCore *self, PyObject *args, PyObject *kwds)
{
    PyObject *deadline = Py_None, *what = NULL, *shield = Py_False, *fail = NULL;
    if (parse_args(args, kwds, &deadline, &what, &shield, &fail) < 0)
        return -1;
    if (deadline != Py_None &&
        !(PyFloat_CheckExact(deadline) && PyFloat_AS_DOUBLE(deadline) < INFINITY)) {
        /* Not the common case: the Python rule (NaN: ValueError; +inf: None). */
        deadline = PyObject_CallMethodOneArg((PyObject *)self, str_checked_deadline, deadline);
        if (!deadline)
            return -1;
    } else {
        Py_INCREF(deadline);
    }
    Py_SETREF(self->deadline, deadline);
    Py_SETREF(self->what, Py_NewRef(what ? what : str_empty));
    int shielded = PyObject_IsTrue(shield);
    if (shielded < 0)
        return -1;
    Py_SETREF(self->shield, Py_NewRef(shielded ? Py_True : Py_False));
    if (!fail) {
        PyObject *flag = _PyType_Lookup(Py_TYPE(self), str_fails_by_default);  /* borrowed */
        fail = flag ? flag : Py_False;
    }
    Py_SETREF(self->fail, Py_NewRef(fail));
    return 0;
}

static int ScopeCore_traverse(ScopeCore *s, visitproc visit, void *arg)
{
    PyObject **fields[] = SCOPE_FIELDS(s);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        Py_VISIT(*fields[i]);
    return 0;
}

static int ScopeCore_clear(ScopeCore *s)
{
    PyObject **fields[] = SCOPE_FIELDS(s);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        Py_CLEAR(*fields[i]);
    return 0;
}

static void ScopeCore_dealloc(ScopeCore *s)
{
    PyObject_GC_UnTrack(s);
    ScopeCore_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* Every field may have been deleted from Python (NULL): the paths below check the
 * ones they read, in one test. */
static int fields_present(ScopeCore *s)
{
    if (s->deadline && s->shield && s->error && s->fail && s->task && s->timer && s->held &&
        s->exited && s->cancelled_caught)
        return 1;
    PyErr_SetString(PyExc_AttributeError, "a field of the cancel scope was deleted");
    return 0;
}

static PyObject *call_method2(PyObject *obj, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *args[] = {obj, a, b};
    return PyObject_VectorcallMethod(name, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* The deadline's timer, if it runs: stopped and let go. */
static void stop_timer(ScopeCore *self)
{
    if (self->timer == Py_None)
        return;
    PyObject *timer = self->timer;
    self->timer = Py_NewRef(Py_None);
    if (sf_is_timer(timer))
        sf_timer_cancel((sf_timer *)timer);
    Py_DECREF(timer);
}

PyDoc_STRVAR(enter_doc, "__enter__()\n--\n\nEnter the scope in the running task.");

static PyObject *ScopeCore_enter(ScopeCore *self, PyObject *Py_UNUSED(ignored))
{
    PyObject **slot = sf_thread_scheduler_slot();
    if (!slot)
        return NULL;
    SchedulerCore *s = (SchedulerCore *)*slot;
    if (!s) {
        PyErr_SetString(PyExc_RuntimeError, "a cancel scope must be called inside stackful.run() "
                        "(no runtime is running)");
        return NULL;
    }
    if (!s->current || !PyObject_TypeCheck(s->current, &TaskCoreType)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a cancel scope must be called from a task, not from the scheduler");
        return NULL;
    }
    if (!fields_present(self))
        return NULL;
    TaskCore *task = (TaskCore *)s->current;
    if (self->task != Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "a cancel scope cannot be entered twice");
        return NULL;
    }
    if (!task->scopes) {
        PyErr_SetString(PyExc_AttributeError, "the task's _scopes was deleted");
        return NULL;
    }
    if (task->scopes == Py_None) {
        PyObject *scopes = PyList_New(1);
        if (!scopes)
            return NULL;
        PyList_SET_ITEM(scopes, 0, Py_NewRef((PyObject *)self));
        Py_SETREF(task->scopes, scopes);
    } else if (!PyList_Check(task->scopes) || PyList_Append(task->scopes, (PyObject *)self) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "a task's _scopes must be a list or None");
        return NULL;
    }
    Py_SETREF(self->task, Py_NewRef((PyObject *)task));
    if (self->shield != Py_False) {
        int shielded = PyObject_IsTrue(self->shield);
        if (shielded < 0)
            return NULL;
        if (shielded) {
            PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, str_absorb_pending,
                                                    (PyObject *)task);
            if (!r)
                return NULL;
            Py_DECREF(r);
        }
    }
    if (self->error != Py_None) {  /* cancelled before it was entered */
        PyObject *r = call_method2(task->runtime, str_interrupt, (PyObject *)task, self->error);
        if (!r)
            return NULL;
        Py_DECREF(r);
    } else if (self->deadline != Py_None) {
        if (!PyFloat_Check(self->deadline)) {
            PyErr_SetString(PyExc_TypeError, "a cancel scope's _deadline must be a float or None");
            return NULL;
        }
        PyObject *fire = _PyType_Lookup(Py_TYPE(self), str_fire);  /* borrowed */
        if (!fire || !sf_is_timer_heap(s->timers)) {
            PyErr_SetString(PyExc_TypeError, "a cancel scope needs _fire and the runtime's timers");
            return NULL;
        }
        PyObject *timer = (PyObject *)sf_timer_schedule(
            (sf_timer_heap *)s->timers, PyFloat_AS_DOUBLE(self->deadline), fire, (PyObject *)self);
        if (!timer)
            return NULL;
        Py_SETREF(self->timer, timer);
    }
    return Py_NewRef((PyObject *)self);
}

PyDoc_STRVAR(exit_doc, "__exit__(exc_type, exc, tb)\n--\n\nLeave the scope (see _cancel.py).");

static PyObject *ScopeCore_exit(ScopeCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__(exc_type, exc, tb)");
        return NULL;
    }
    if (!fields_present(self))
        return NULL;
    PyObject *exc = args[1];
    stop_timer(self);
    if (!PyObject_TypeCheck(self->task, &TaskCoreType)) {
        PyErr_SetString(PyExc_RuntimeError, "a cancel scope left without being entered");
        return NULL;
    }
    TaskCore *task = (TaskCore *)Py_NewRef(self->task);
    PyObject *result = NULL;
    Py_SETREF(self->exited, Py_NewRef(Py_True));
    PyObject *scopes = task->scopes;
    if (!scopes || !PyList_Check(scopes)) {
        PyErr_SetString(PyExc_TypeError, "a task's _scopes must be a list");
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(scopes);
    if (n && PyList_GET_ITEM(scopes, n - 1) == (PyObject *)self) {
        if (PyList_SetSlice(scopes, n - 1, n, NULL) < 0)
            goto done;
    } else {  /* exited out of order (by hand): still forget it */
        PyObject *r = PyObject_CallMethodOneArg(scopes, str_remove, (PyObject *)self);
        if (!r)
            goto done;
        Py_DECREF(r);
    }
    PyObject *error = self->error;
    if (error != Py_None && task->pending_exc == error) {
        /* Cancelled, but the body finished before blocking again: it made it in time. */
        Py_SETREF(task->pending_exc, Py_NewRef(Py_None));
    }
    if (self->held != Py_None) {
        /* A shield ends: what it held back goes on to the next blocking point. */
        PyObject *held = self->held;
        self->held = Py_NewRef(Py_None);
        PyObject *r = call_method2(task->runtime, str_interrupt, (PyObject *)task, held);
        Py_DECREF(held);
        if (!r)
            goto done;
        Py_DECREF(r);
    }
    if (exc != Py_None && exc == self->error) {
        int fails = PyObject_IsTrue(self->fail);
        if (fails < 0)
            goto done;
        if (!fails) {
            Py_SETREF(self->cancelled_caught, Py_NewRef(Py_True));
            result = Py_NewRef(Py_True);
            goto done;
        }
    }
    result = Py_NewRef(Py_False);
done:
    Py_DECREF(task);
    return result;
}

/* ---- cancelling ---- */

static PyObject *cancelled_type;  /* stackful._core._exceptions.Cancelled, on first use */

/* The shield that holds `exc` back from `task`: walking the task's scopes
 * innermost first, a shielded one met before `exc`'s own (the scope whose
 * error it is).  A new reference, Py_None when nothing holds it back (Ctrl-C
 * and SystemExit never are), NULL with an exception.  The one walk of that
 * rule: Runtime.interrupt's common case below and its Python side both use it. */
static PyObject *holding_shield(TaskCore *task, PyObject *exc)
{
    PyObject *scopes = task->scopes;
    if (!scopes || !PyList_Check(scopes) ||
        PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt) ||
        PyErr_GivenExceptionMatches(exc, PyExc_SystemExit))
        Py_RETURN_NONE;
    for (Py_ssize_t i = PyList_GET_SIZE(scopes) - 1; i >= 0; i--) {
        PyObject *item = PyList_GET_ITEM(scopes, i);
        if (!PyObject_TypeCheck(item, &ScopeCoreType)) {
            PyErr_SetString(PyExc_TypeError, "a task's cancel scopes must be CancelScopes");
            return NULL;
        }
        ScopeCore *scope = (ScopeCore *)item;
        if (scope->error == exc)
            break;
        int shielded = scope->shield == Py_False ? 0 : PyObject_IsTrue(scope->shield);
        if (shielded < 0)
            return NULL;
        if (shielded)
            return Py_NewRef(item);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(holding_shield_doc,
"_holding_shield(task, exc)\n--\n\n"
"The innermost shielded cancel scope of `task` that holds `exc` back (met\n"
"before the scope whose error `exc` is), or None.");

static PyObject *mod_holding_shield(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &TaskCoreType)) {
        PyErr_SetString(PyExc_TypeError, "_holding_shield() takes a task and an exception");
        return NULL;
    }
    return holding_shield((TaskCore *)args[0], args[1]);
}

/* Runtime.interrupt(task, exc): its common case -- the task parked, nothing
 * shielding it -- in C, the rest by the method. */
static int interrupt(TaskCore *task, PyObject *exc)
{
    if (task->state == STATE_BLOCKED && !task->shield && task->runtime &&
        PyObject_TypeCheck(task->runtime, &SchedulerCoreType)) {
        PyObject *shield = holding_shield(task, exc);
        if (!shield)
            return -1;
        int held = shield != Py_None;
        Py_DECREF(shield);
        if (!held)
            return sf_interrupt_parked((SchedulerCore *)task->runtime, task, exc);
    }
    PyObject *r = call_method2(task->runtime, str_interrupt, (PyObject *)task, exc);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

PyDoc_STRVAR(deliver_doc,
"_deliver(exc)\n--\n\n"
"Make `exc` this scope's interruption (once: cancel() and the deadline check\n"
"`error` first), stop the deadline's timer, and interrupt the task inside.");

static PyObject *ScopeCore_deliver(ScopeCore *self, PyObject *exc)
{
    if (!fields_present(self))
        return NULL;
    Py_SETREF(self->cancel_called, Py_NewRef(Py_True));
    Py_SETREF(self->error, Py_NewRef(exc));
    stop_timer(self);
    if (self->task == Py_None || self->exited != Py_False)
        Py_RETURN_NONE;
    if (!PyObject_TypeCheck(self->task, &TaskCoreType)) {
        PyErr_SetString(PyExc_TypeError, "a cancel scope's _task must be a task or None");
        return NULL;
    }
    PyObject *task = Py_NewRef(self->task);
    int rc = interrupt((TaskCore *)task, exc);
    Py_DECREF(task);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fire_doc,
"_fire(_=None)\n--\n\n"
"The deadline passed (its timer calls CancelScope._fire(scope)): deliver the\n"
"scope's Cancelled, or TimeoutError if it fails.");

static PyObject *ScopeCore_fire(ScopeCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_fire() takes at most one argument");
        return NULL;
    }
    if (!fields_present(self))
        return NULL;
    Py_SETREF(self->expired, Py_NewRef(Py_True));
    int fails = PyObject_IsTrue(self->fail);
    int named = fails < 0 ? -1 : PyObject_IsTrue(self->what);
    if (named < 0)
        return NULL;
    PyObject *type = PyExc_TimeoutError;
    if (!fails) {
        if (!cancelled_type) {
            PyObject *mod = PyImport_ImportModule("stackful._core._exceptions");
            cancelled_type = mod ? PyObject_GetAttrString(mod, "Cancelled") : NULL;
            Py_XDECREF(mod);
            if (!cancelled_type)
                return NULL;
        }
        type = cancelled_type;
    }
    PyObject *message = !named ? PyUnicode_FromString(fails ? "timed out" : "deadline passed")
                        : PyUnicode_FromFormat(fails ? "timed out in %S" : "deadline passed (%S)",
                                               self->what);
    PyObject *exc = message ? PyObject_CallOneArg(type, message) : NULL;
    Py_XDECREF(message);
    if (!exc)
        return NULL;
    PyObject *r = ScopeCore_deliver(self, exc);
    Py_DECREF(exc);
    return r;
}

static PyMethodDef ScopeCore_methods[] = {
    {"__enter__", (PyCFunction)ScopeCore_enter, METH_NOARGS, enter_doc},
    {"__exit__", (PyCFunction)(void (*)(void))ScopeCore_exit, METH_FASTCALL, exit_doc},
    {"_fire", (PyCFunction)(void (*)(void))ScopeCore_fire, METH_FASTCALL, fire_doc},
    {"_deliver", (PyCFunction)ScopeCore_deliver, METH_O, deliver_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ScopeCore_members[] = {
    {"_deadline", T_OBJECT_EX, offsetof(ScopeCore, deadline), 0, NULL},
    {"what", T_OBJECT_EX, offsetof(ScopeCore, what), 0, "what the scope is for (messages)"},
    {"expired", T_OBJECT_EX, offsetof(ScopeCore, expired), 0,
     "the deadline passed inside the block"},
    {"error", T_OBJECT_EX, offsetof(ScopeCore, error), 0,
     "the interruption this scope raised, or None"},
    {"_shield", T_OBJECT_EX, offsetof(ScopeCore, shield), 0, NULL},
    {"cancel_called", T_OBJECT_EX, offsetof(ScopeCore, cancel_called), 0,
     "cancel() was called or the deadline passed"},
    {"cancelled_caught", T_OBJECT_EX, offsetof(ScopeCore, cancelled_caught), 0,
     "the block was left by this scope's own Cancelled"},
    {"_fail", T_OBJECT_EX, offsetof(ScopeCore, fail), 0, NULL},
    {"_task", T_OBJECT_EX, offsetof(ScopeCore, task), 0, NULL},
    {"_timer", T_OBJECT_EX, offsetof(ScopeCore, timer), 0, NULL},
    {"_held", T_OBJECT_EX, offsetof(ScopeCore, held), 0, NULL},
    {"_exited", T_OBJECT_EX, offsetof(ScopeCore, exited), 0, NULL},
    {"group", T_OBJECT_EX, offsetof(ScopeCore, group), 0,
     "the TaskGroup whose body this scope is, or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ScopeCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.ScopeCore",
    .tp_doc = "The fields of a cancel scope and its entry and exit (scope.c).",
    .tp_basicsize = sizeof(ScopeCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = ScopeCore_new,
    .tp_init = (initproc)ScopeCore_init,
    .tp_dealloc = (destructor)ScopeCore_dealloc,
    .tp_traverse = (traverseproc)ScopeCore_traverse,
    .tp_clear = (inquiry)ScopeCore_clear,
    .tp_methods = ScopeCore_methods,
    .tp_members = ScopeCore_members,
};

int sf_scope_init(PyObject *m)
{
    str_checked_deadline = PyUnicode_InternFromString("_checked_deadline");
    str_absorb_pending = PyUnicode_InternFromString("_absorb_pending");
    str_interrupt = PyUnicode_InternFromString("interrupt");
    str_fire = PyUnicode_InternFromString("_fire");
    str_remove = PyUnicode_InternFromString("remove");
    str_fails_by_default = PyUnicode_InternFromString("_fails_by_default");
    str_empty = PyUnicode_InternFromString("");
    const char *names[] = {"deadline", "what", "shield", "fail"};
    for (int i = 0; i < 4; i++)
        if (!(kw_names[i] = PyUnicode_InternFromString(names[i])))
            return -1;
    if (!str_checked_deadline || !str_absorb_pending || !str_interrupt || !str_fire ||
        !str_remove || !str_fails_by_default || !str_empty || PyType_Ready(&ScopeCoreType) < 0)
        return -1;
    static PyMethodDef functions[] = {
        {"_holding_shield", (PyCFunction)(void (*)(void))mod_holding_shield, METH_FASTCALL,
         holding_shield_doc},
        {NULL, NULL, 0, NULL},
    };
    if (PyModule_AddFunctions(m, functions) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "ScopeCore", (PyObject *)&ScopeCoreType);
}
