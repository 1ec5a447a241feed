/* The greenlet type: greenlet's object, laid out as greenlet's PyGreenlet.
 *
 * Why a greenlet wraps a fiber instead of being one: C code compiled against
 * greenlet.h (Cython's subclasses of greenlet: gevent's Greenlet and Hub)
 * puts its own fields right after the 40 bytes of PyGreenlet (object head,
 * weakref list, dict, one implementation pointer).  A Fiber keeps its state
 * inline, which the switch reads without an indirection; giving Fiber that
 * layout would put every field of it behind a pointer on every switch, and
 * touch every line of fiber.c.  So the greenlet is a small object whose one
 * pointer is the Fiber doing the work, of a private Fiber subclass that asks
 * the core for greenlet's rules (a dead greenlet's switch goes to its parent,
 * GreenletExit is the kill, asyncio state is inherited).  g.switch() costs
 * one pointer load more than Fiber.switch().
 *
 * The fiber points back at its greenlet (fiber->face).  Who keeps whom alive,
 * so that greenlet's rules hold:
 * - the greenlet owns its fiber;
 * - the fiber's pointer back is borrowed while it is suspended, so dropping
 *   the last reference to a suspended greenlet frees it, and it is killed
 *   there (GreenletExit thrown in, unwinding with getcurrent() the same
 *   object), as in greenlet;
 * - while the fiber runs, the pointer is strong (fiber.c's land() pins and
 *   unpins it): the running greenlet is never freed, and a thread's main
 *   greenlet stays pinned for good;
 * - a fiber met without a greenlet (a root, a stackful task calling
 *   getcurrent()) gets one on first use.
 * A child holds its parent's fiber, not its greenlet: a parent's greenlet
 * dropped while a child still needs the parent is not killed (its fiber has
 * another owner); that fiber gets a new greenlet if asked for one later.
 */
#include "greenlet_type.h"

#include <structmember.h>

PyObject *GreenletExit;
static PyObject *greenlet_fiber_type;  /* the private Fiber subclass of greenlets */
static PyObject *str_run, *str_context, *str_del, *empty_tuple;

/* ---- the greenlet of a fiber ---- */

PyObject *sf_greenlet_of(Fiber *f)
{
    if (f->face)
        return Py_NewRef(f->face);
    Greenlet *g = (Greenlet *)GreenletType.tp_alloc(&GreenletType, 0);
    if (!g)
        return NULL;
    g->fiber = (Fiber *)Py_NewRef(f);
    f->face = (PyObject *)g;
    if (f->state == FIBER_RUNNING)
        sf_fiber_pin_face(f);
    return (PyObject *)g;
}

PyObject *sf_greenlet_getcurrent(void)
{
    if (sf_interpreter_finalizing()) {
        /* As greenlet: finalizers that run at exit get an error, not a
         * greenlet whose thread state is being torn down. */
        PyErr_SetString(PyExc_RuntimeError, "greenlet is being finalized");
        return NULL;
    }
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    if (th->pending_kills)  /* greenlets other threads dropped: greenlet kills them here too */
        sf_process_pending_kills(th);
    return sf_greenlet_of(th->current);
}

static PyObject *mod_getcurrent(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return sf_greenlet_getcurrent();
}

static PyObject *mod_greenlet_of(PyObject *m, PyObject *arg)
{
    (void)m;
    if (PyObject_TypeCheck(arg, &GreenletType))
        return Py_NewRef(arg);
    if (!sf_is_fiber(arg)) {
        PyErr_Format(PyExc_TypeError, "greenlet_of() needs a Fiber, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    return sf_greenlet_of((Fiber *)arg);
}

/* ---- life cycle ---- */

static void Greenlet_finalize(Greenlet *self);
static void Greenlet_finalize_subclass(Greenlet *self);

static PyObject *Greenlet_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    if (th->pending_kills)  /* greenlet kills what other threads dropped here too */
        sf_process_pending_kills(th);
    /* object's tp_new: it refuses abstract classes, as greenlet does. */
    Greenlet *g = (Greenlet *)PyBaseObject_Type.tp_new(type, empty_tuple, NULL);
    if (!g)
        return NULL;
    g->fiber = sf_fiber_create((PyTypeObject *)greenlet_fiber_type, NULL);
    if (!g->fiber) {
        Py_DECREF(g);
        return NULL;
    }
    g->fiber->face = (PyObject *)g;
    /* A subclass's __del__ must not replace the kill. */
    if (type->tp_finalize != (destructor)Greenlet_finalize &&
        type->tp_finalize != (destructor)Greenlet_finalize_subclass)
        type->tp_finalize = (destructor)Greenlet_finalize_subclass;
    return (PyObject *)g;
}

static int set_run(Greenlet *self, PyObject *run, void *c);

static int Greenlet_init(Greenlet *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"run", "parent", NULL};
    PyObject *run = NULL, *parent = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:greenlet", kwlist, &run, &parent))
        return -1;
    if (run && set_run(self, run, NULL) < 0)
        return -1;
    if (parent && parent != Py_None)
        return sf_greenlet_set_parent(self, parent);
    return 0;
}

/* Kill a suspended greenlet nobody can reach any more, the object itself
 * standing for it while it unwinds.  Not if its fiber has another owner (a
 * child's parent link): it lives on without this object. */
static void Greenlet_finalize(Greenlet *self)
{
    Fiber *f = self->fiber;
    if (!f || f->face != (PyObject *)self || f->state != FIBER_SUSPENDED || IS_ROOT(f) ||
        Py_REFCNT(f) != 1)
        return;
    if (f->thread->tstate && f->thread != sf_tls_thread) {
        /* Dropped on another thread: all of it waits for the owner, which
         * kills the fiber at its next switch or getcurrent(); pinning the
         * greenlet until the fiber's end keeps its __dict__ for then too. */
        sf_fiber_pin_face(f);
        sf_fiber_finalize(f);
        return;
    }
    /* The kill makes us its parent; one that survives it (caught GreenletExit
     * and switched elsewhere) gets its own parent back, as in greenlet. */
    Fiber *parent = (Fiber *)Py_XNewRef(f->parent);
    sf_fiber_finalize(f);
    if (parent && f->state == FIBER_SUSPENDED)
        Py_XSETREF(f->parent, (Fiber *)Py_NewRef(parent));
    Py_XDECREF(parent);
}

/* A subclass's finalizer (its __del__) first, then the kill. */
static void Greenlet_finalize_subclass(Greenlet *self)
{
    PyObject *exc = sf_fetch_exception();
    PyObject *del = PyObject_GetAttr((PyObject *)Py_TYPE(self), str_del);
    if (del) {
        PyObject *r = PyObject_CallOneArg(del, (PyObject *)self);
        if (!r)
            sf_report_escaped(del);
        Py_XDECREF(r);
        Py_DECREF(del);
    } else {
        PyErr_Clear();
    }
    if (exc)
        sf_restore_exception(exc);
    Greenlet_finalize(self);
}

static int Greenlet_traverse(Greenlet *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->fiber);
    return 0;
}

static int Greenlet_clear(Greenlet *self)
{
    /* The fiber stays: methods may still be called on a cleared object, and
     * the fiber's own tp_clear breaks the cycles through it. */
    Py_CLEAR(self->dict);
    return 0;
}

static void Greenlet_dealloc(Greenlet *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return;  /* resurrected */
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    Py_CLEAR(self->dict);
    Fiber *f = self->fiber;
    self->fiber = NULL;
    if (f) {
        if (f->face == (PyObject *)self)
            f->face = NULL;
        Py_DECREF(f);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- switch and throw ---- */

/* The target of a greenlet whose run argument was overridden: `pair` is
 * [run, the argument]; drops the argument first, on the new stack. */
static PyObject *run_dropping_replaced(PyObject *pair, PyObject *args, PyObject *kwargs)
{
    PyObject *run = Py_NewRef(PyList_GET_ITEM(pair, 0));
    PyObject *result = NULL;
    if (PyList_SetSlice(pair, 1, PyList_GET_SIZE(pair), NULL) == 0)
        result = PyObject_Call(run, args, kwargs);
    Py_DECREF(run);
    return result;
}

static PyMethodDef run_dropping_replaced_def = {
    "run", (PyCFunction)(void (*)(void))run_dropping_replaced, METH_VARARGS | METH_KEYWORDS, NULL,
};

/* Give a greenlet that has not started what it runs: a subclass's `run`
 * attribute wins over a run argument, as in greenlet, so it is looked up
 * now (a throw needs it too, as in greenlet). */
static int resolve_run(Greenlet *self)
{
    Fiber *f = self->fiber;
    if (f->state != FIBER_NEW || (f->target && Py_TYPE(self) == &GreenletType))
        return 0;
    PyObject *run = PyObject_GetAttr((PyObject *)self, str_run);
    if (!run)
        return -1;
    if (f->state != FIBER_NEW) {  /* the lookup ran code that started it */
        Py_DECREF(run);
        return 0;
    }
    if (f->target && f->target != run) {
        /* A run argument that the attribute overrode: greenlet drops it in the
         * new greenlet, as it starts (its __del__ may switch), not here. */
        PyObject *pair = PyList_New(2);
        if (!pair) {
            Py_DECREF(run);
            return -1;
        }
        PyList_SET_ITEM(pair, 0, run);
        PyList_SET_ITEM(pair, 1, f->target);  /* takes over the fiber's reference */
        f->target = PyCFunction_New(&run_dropping_replaced_def, pair);
        Py_DECREF(pair);
        return f->target ? 0 : -1;
    }
    Py_XSETREF(f->target, run);
    return 0;
}

/* For the core: a parent greenlet started by its child's end. */
static int resolve_fiber_target(Fiber *f)
{
    return f->face ? resolve_run((Greenlet *)f->face) : 0;
}

/* A switch or throw at a dead greenlet goes to its first live ancestor; if
 * that has not started, find what it runs now (Python code may run). */
static int resolve_dead_destination(Fiber *f)
{
    for (int hops = 0; f && f->state == FIBER_DEAD && hops < 1000; hops++)
        f = f->parent;
    if (f && f->state == FIBER_NEW && f->face)
        return resolve_run((Greenlet *)f->face);
    return 0;
}

PyDoc_STRVAR(switch_doc,
"switch(*args, **kwargs)\n--\n\n"
"Switch to this greenlet.  The first switch calls run(*args, **kwargs); later\n"
"ones make its pending switch() return a single argument as itself, none as\n"
"(), several as a tuple, keywords alone as a dict, both as (args, kwargs).\n"
"A dead greenlet's switch goes to its parent.");

/* greenlet.error with greenlet's words for a greenlet of another thread
 * (the core's FiberError says the same in its own). */
static int other_thread(Fiber *f)
{
    sf_thread *th = current_thread();
    if (!th)
        return -1;
    if (f->thread == th)
        return 0;
    if (!f->thread->tstate) {
        PyErr_SetString(FiberError, "cannot switch to a different thread (which happens to have "
                        "exited)");
        return -1;
    }
    PyObject *here = sf_greenlet_of(th->root), *there = sf_greenlet_of(f->thread->root);
    if (here && there)
        PyErr_Format(FiberError, "Cannot switch to a different thread\n\tCurrent:  %R\n\t"
                     "Expected: %R", here, there);
    Py_XDECREF(here);
    Py_XDECREF(there);
    return -1;
}

static PyObject *Greenlet_switch(Greenlet *self, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames)
{
    Fiber *f = self->fiber;
    sf_thread *th = current_thread();
    if (!th || (f->thread != th && other_thread(f) < 0))
        return NULL;
    if (f->state == FIBER_NEW) {
        /* Looking run up runs code, which may even move it to another thread. */
        if (resolve_run(self) < 0 || (f->thread != th && other_thread(f) < 0))
            return NULL;
    }
    if (f->state == FIBER_DEAD && resolve_dead_destination(f) < 0)
        return NULL;
    return sf_fiber_switch_call(th, f, args, nargsf, kwnames);
}

PyDoc_STRVAR(throw_doc,
"throw(typ=GreenletExit, val=None, tb=None)\n--\n\n"
"Raise an exception in this greenlet where it is suspended and switch to it.\n"
"One that never started dies at once, the exception going to its parent.");

/* A GreenletExit thrown at a dead greenlet is returned at once (greenlet
 * turns it into the dead greenlet's return); NULL if `typ` is not one. */
static PyObject *exit_for_dead(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ = nargs > 0 ? args[0] : GreenletExit;
    PyObject *val = nargs > 1 ? args[1] : Py_None;
    if (PyObject_TypeCheck(typ, (PyTypeObject *)GreenletExit))
        return Py_NewRef(typ);
    if (!PyType_Check(typ) || !PyType_IsSubtype((PyTypeObject *)typ, (PyTypeObject *)GreenletExit))
        return NULL;
    if (PyObject_TypeCheck(val, (PyTypeObject *)typ))
        return Py_NewRef(val);
    if (val == Py_None)
        return PyObject_CallNoArgs(typ);
    if (PyTuple_Check(val))
        return PyObject_Call(typ, val, NULL);
    return PyObject_CallOneArg(typ, val);
}

static PyObject *Greenlet_throw(Greenlet *self, PyObject *const *args, Py_ssize_t nargs)
{
    Fiber *f = self->fiber;
    if (f->thread != sf_tls_thread && other_thread(f) < 0)
        return NULL;
    if (f->state == FIBER_NEW && (resolve_run(self) < 0 || other_thread(f) < 0))
        return NULL;
    if (f->state == FIBER_DEAD && nargs <= 3) {
        PyObject *exc = exit_for_dead(args, nargs);
        if (exc || PyErr_Occurred())
            return exc;
        if (resolve_dead_destination(f) < 0)
            return NULL;
    }
    return sf_fiber_throw_call(f, args, nargs);
}

PyObject *sf_greenlet_switch_tuple(Greenlet *g, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t nargs = args ? PyTuple_GET_SIZE(args) : 0;
    Py_ssize_t nkw = kwargs ? PyDict_GET_SIZE(kwargs) : 0;
    if (!nkw)
        return Greenlet_switch(g, args ? &PyTuple_GET_ITEM(args, 0) : NULL, nargs, NULL);
    PyObject **stack = PyMem_Malloc((nargs + nkw) * sizeof(PyObject *));
    PyObject *kwnames = PyTuple_New(nkw);
    PyObject *result = NULL;
    if (!stack || !kwnames) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        stack[i] = PyTuple_GET_ITEM(args, i);
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(kwargs, &pos, &key, &value)) {
        PyTuple_SET_ITEM(kwnames, i, Py_NewRef(key));
        stack[nargs + i++] = value;
    }
    /* The dict may be mutated by the switch: hold the values. */
    for (i = 0; i < nkw; i++)
        Py_INCREF(stack[nargs + i]);
    result = Greenlet_switch(g, stack, nargs, kwnames);
    for (i = 0; i < nkw; i++)
        Py_DECREF(stack[nargs + i]);
done:
    PyMem_Free(stack);
    Py_XDECREF(kwnames);
    return result;
}

PyObject *sf_greenlet_throw(Greenlet *g, PyObject *typ, PyObject *val, PyObject *tb)
{
    PyObject *args[3] = {typ, val ? val : Py_None, tb ? tb : Py_None};
    return Greenlet_throw(g, args, 3);
}

static PyObject *Greenlet_getstate(Greenlet *self, PyObject *Py_UNUSED(ignored))
{
    PyErr_Format(PyExc_TypeError, "cannot serialize '%s' object", Py_TYPE(self)->tp_name);
    return NULL;
}

static PyMethodDef Greenlet_methods[] = {
    {"switch", (PyCFunction)(void (*)(void))Greenlet_switch, METH_FASTCALL | METH_KEYWORDS,
     switch_doc},
    {"throw", (PyCFunction)(void (*)(void))Greenlet_throw, METH_FASTCALL, throw_doc},
    {"__getstate__", (PyCFunction)Greenlet_getstate, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- attributes ---- */

static PyObject *get_run(Greenlet *self, void *c)
{
    (void)c;
    Fiber *f = self->fiber;
    if (f->state != FIBER_NEW || !f->target) {
        PyErr_SetString(PyExc_AttributeError, "run");
        return NULL;
    }
    return Py_NewRef(f->target);
}

static int set_run(Greenlet *self, PyObject *run, void *c)
{
    (void)c;
    Fiber *f = self->fiber;
    if (f->state != FIBER_NEW) {
        PyErr_SetString(PyExc_AttributeError, "run cannot be set after the start of the greenlet");
        return -1;
    }
    Py_XSETREF(f->target, Py_XNewRef(run));
    return 0;
}

static PyObject *get_parent(Greenlet *self, void *c)
{
    (void)c;
    Fiber *p = self->fiber->parent;
    return p ? sf_greenlet_of(p) : Py_NewRef(Py_None);
}

int sf_greenlet_set_parent(Greenlet *self, PyObject *value)
{
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "can't delete attribute");
        return -1;
    }
    if (!PyObject_TypeCheck(value, &GreenletType)) {
        PyErr_Format(PyExc_TypeError, "GreenletChecker: Expected any type of greenlet, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    Fiber *f = self->fiber, *p = ((Greenlet *)value)->fiber;
    if (!f->parent) {
        PyErr_SetString(PyExc_AttributeError, "cannot set the parent of a main greenlet");
        return -1;
    }
    if (p->thread != f->thread)  /* moves a greenlet that has not started there */
        return sf_fiber_reparent_new(f, p);
    return sf_fiber_set_parent(f, (PyObject *)p);
}

static int set_parent(Greenlet *self, PyObject *value, void *c)
{
    (void)c;
    return sf_greenlet_set_parent(self, value);
}

static PyObject *get_dead(Greenlet *self, void *c)
{
    (void)c;
    Fiber *f = self->fiber;
    return PyBool_FromLong(f->state == FIBER_DEAD ||
                           (f->state != FIBER_NEW && !f->thread->tstate));
}

static PyObject *get_frame(Greenlet *self, void *c)
{
    (void)c;
    if (self->fiber->state != FIBER_SUSPENDED)
        Py_RETURN_NONE;
    /* Its frames stay intact after its thread exits (until it is discarded),
     * and greenlet still shows them. */
    return sf_pystate_top_frame(&self->fiber->py, PyThreadState_Get());
}

static PyObject *get_context(Greenlet *self, void *c)
{
    (void)c;
    Fiber *f = self->fiber;
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    if (f->thread != th && f->state == FIBER_RUNNING) {
        PyErr_SetString(PyExc_ValueError,
                        "cannot get context of a greenlet that is running in a different thread");
        return NULL;
    }
    return PyObject_GetAttr((PyObject *)f, str_context);
}

static int set_context(Greenlet *self, PyObject *value, void *c)
{
    (void)c;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "can't delete context attribute");
        return -1;
    }
    if (value != Py_None && !PyContext_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError,
                        "greenlet context must be a contextvars.Context or None");
        return -1;
    }
    Fiber *f = self->fiber;
    sf_thread *th = current_thread();
    if (!th)
        return -1;
    if (f->thread == th)
        return PyObject_SetAttr((PyObject *)f, str_context, value);
    if (f->state == FIBER_RUNNING) {
        PyErr_SetString(PyExc_ValueError,
                        "cannot set context of a greenlet that is running in a different thread");
        return -1;
    }
    /* Suspended on another thread: greenlet allows it, and it is only a
     * field until that thread switches to it. */
    if (sf_context_entered(f->py.context)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot replace the context of a greenlet inside Context.run()");
        return -1;
    }
    PyObject *ctx = value == Py_None ? NULL : Py_NewRef(value);
    if (f->state == FIBER_SUSPENDED)
        sf_pystate_set_base_context(&f->py, ctx);
    Py_XSETREF(f->py.context, ctx);
    return 0;
}

static PyObject *get_stack_saved(Greenlet *self, void *c)
{
    (void)self; (void)c;
    return PyLong_FromLong(0);  /* nothing is ever copied off a stack here */
}

static PyObject *get_fiber(Greenlet *self, void *c)
{
    (void)c;
    return Py_NewRef((PyObject *)self->fiber);
}

static PyGetSetDef Greenlet_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"run", (getter)get_run, (setter)set_run,
     "the callable the greenlet runs when started; gone once it has started", NULL},
    {"parent", (getter)get_parent, (setter)set_parent,
     "where execution goes when this greenlet dies; None for a thread's main greenlet", NULL},
    {"dead", (getter)get_dead, NULL, "True once the greenlet has finished", NULL},
    {"gr_frame", (getter)get_frame, NULL,
     "the frame a suspended greenlet resumes in; None unless suspended", NULL},
    {"gr_context", (getter)get_context, (setter)set_context,
     "the contextvars.Context the greenlet runs in (None: a fresh empty one)", NULL},
    {"_stack_saved", (getter)get_stack_saved, NULL, "always 0: stacks are never copied", NULL},
    {"fiber", (getter)get_fiber, NULL, "the stackful.Fiber doing this greenlet's work", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static int Greenlet_bool(Greenlet *self)
{
    int state = self->fiber->state;
    return (state == FIBER_RUNNING || state == FIBER_SUSPENDED) && self->fiber->thread->tstate;
}

static PyNumberMethods Greenlet_as_number = {
    .nb_bool = (inquiry)Greenlet_bool,
};

static PyObject *Greenlet_repr(Greenlet *self)
{
    Fiber *f = self->fiber;
    const char *tp_name = Py_TYPE(self)->tp_name;
    int exited = !f->thread->tstate;
    if (f->state == FIBER_DEAD || (exited && f->state != FIBER_NEW))
        return PyUnicode_FromFormat("<%s object at %p (otid=%p) %sdead>", tp_name, (void *)self,
                                    (void *)f->thread, exited ? "(thread exited) " : "");
    sf_thread *th = sf_tls_thread;
    /* Seen from another thread, a running greenlet is suspended (greenlet's view). */
    const char *where = exited ? " (thread exited)"
                        : (th == f->thread && th->current == f) ? " current"
                        : f->state != FIBER_NEW ? " suspended" : "";
    int active = f->state == FIBER_RUNNING || f->state == FIBER_SUSPENDED;
    /* greenlet binds a greenlet to its thread when it starts: none before (a null otid). */
    return PyUnicode_FromFormat("<%s object at %p (otid=%p)%s%s%s%s>", tp_name, (void *)self,
                                f->state == FIBER_NEW ? NULL : (void *)f->thread, where, active ? " active" : "",
                                f->state == FIBER_NEW ? " pending" : " started",
                                IS_ROOT(f) ? " main" : "");
}

static PyMemberDef Greenlet_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(Greenlet, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(Greenlet, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Greenlet_doc,
"greenlet(run=None, parent=None)\n--\n\n"
"A greenlet: `run` called on a C stack of its own at the first switch().\n"
"`parent` (default: the greenlet running now) gets run's return value, or its\n"
"exception, when it ends.  Laid out as greenlet's PyGreenlet, so C extensions\n"
"built against greenlet.h (and their subclasses) work with it.");

PyTypeObject GreenletType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenlet.greenlet",
    .tp_basicsize = sizeof(Greenlet),
    .tp_dealloc = (destructor)Greenlet_dealloc,
    .tp_repr = (reprfunc)Greenlet_repr,
    .tp_as_number = &Greenlet_as_number,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Greenlet_doc,
    .tp_traverse = (traverseproc)Greenlet_traverse,
    .tp_clear = (inquiry)Greenlet_clear,
    .tp_weaklistoffset = offsetof(Greenlet, weakreflist),
    .tp_methods = Greenlet_methods,
    .tp_members = Greenlet_members,
    .tp_getset = Greenlet_getset,
    .tp_dictoffset = offsetof(Greenlet, dict),
    .tp_init = (initproc)Greenlet_init,
    .tp_new = Greenlet_new,
    .tp_finalize = (destructor)Greenlet_finalize,
};

/* greenlet.h's layout, checked field by field. */
typedef struct {
    PyObject_HEAD
    PyObject *weakreflist;
    PyObject *dict;
    void *pimpl;
} PyGreenlet_layout;
_Static_assert(sizeof(Greenlet) == sizeof(PyGreenlet_layout), "PyGreenlet size");
_Static_assert(offsetof(Greenlet, weakreflist) == offsetof(PyGreenlet_layout, weakreflist), "");
_Static_assert(offsetof(Greenlet, dict) == offsetof(PyGreenlet_layout, dict), "");
_Static_assert(offsetof(Greenlet, fiber) == offsetof(PyGreenlet_layout, pimpl), "");

/* ---- the module's part ---- */

PyDoc_STRVAR(class_attr_doc,
"_greenlet_set_class_attr(name, value)\n--\n\n"
"Put one of greenlet's module functions on the greenlet class too (settrace,\n"
"gettrace), as greenlet does.");

static PyObject *mod_set_class_attr(PyObject *m, PyObject *args)
{
    (void)m;
    const char *name;
    PyObject *value;
    if (!PyArg_ParseTuple(args, "sO:_greenlet_set_class_attr", &name, &value))
        return NULL;
    if (strcmp(name, "settrace") && strcmp(name, "gettrace")) {
        PyErr_Format(PyExc_ValueError, "not one of greenlet's class attributes: %s", name);
        return NULL;
    }
    if (PyDict_SetItemString(GreenletType.tp_dict, name, value) < 0)
        return NULL;
    PyType_Modified(&GreenletType);
    Py_RETURN_NONE;
}

static PyMethodDef greenlet_functions[] = {
    {"getcurrent", mod_getcurrent, METH_NOARGS,
     "getcurrent()\n--\n\nThe greenlet running now (a thread's main greenlet outside any other)."},
    {"greenlet_of", mod_greenlet_of, METH_O,
     "greenlet_of(fiber)\n--\n\nThe greenlet standing for `fiber` (made on first use)."},
    {"_greenlet_set_class_attr", mod_set_class_attr, METH_VARARGS, class_attr_doc},
    {NULL, NULL, 0, NULL},
};

/* The private Fiber subclass behind greenlets: greenlet's rules, asked of
 * the core through its class attributes. */
static PyObject *make_fiber_type(void)
{
    PyObject *ns = Py_BuildValue("{s:(),s:O,s:O,s:O,s:s}", "__slots__",
                                 "__fiber_dead_switch_to_parent__", Py_True,
                                 "__fiber_exit__", GreenletExit,
                                 "__fiber_inherits_asyncio__", Py_True,
                                 "__module__", "stackful.greenlet");
    if (!ns)
        return NULL;
    PyObject *type = PyObject_CallFunction((PyObject *)&PyType_Type, "s(O)O", "greenlet_fiber",
                                           (PyObject *)&FiberType, ns);
    Py_DECREF(ns);
    return type;
}

int sf_greenlet_init(PyObject *m)
{
    str_run = PyUnicode_InternFromString("run");
    str_context = PyUnicode_InternFromString("context");
    str_del = PyUnicode_InternFromString("__del__");
    empty_tuple = PyTuple_New(0);
    if (!str_run || !str_context || !str_del || !empty_tuple)
        return -1;
    GreenletExit = PyErr_NewExceptionWithDoc(
        "greenlet.GreenletExit",
        "Raised into a greenlet to make it exit; escaping run() it is returned, not raised.\n"
        "A stackful.FiberExit.", FiberExit, NULL);
    if (!GreenletExit || PyType_Ready(&GreenletType) < 0)
        return -1;
    sf_fiber_resolve_target = resolve_fiber_target;
    greenlet_fiber_type = make_fiber_type();
    if (!greenlet_fiber_type)
        return -1;
    for (PyMethodDef *def = greenlet_functions; def->ml_name; def++) {
        PyObject *fn = PyCFunction_NewEx(def, NULL, NULL);
        if (!fn || PyModule_AddObject(m, def->ml_name, fn) < 0) {
            Py_XDECREF(fn);
            return -1;
        }
    }
    /* greenlet publishes these on its class too; code reads greenlet.getcurrent. */
    PyObject *getcurrent = PyObject_GetAttrString(m, "getcurrent");
    if (!getcurrent)
        return -1;
    int bad = PyDict_SetItemString(GreenletType.tp_dict, "getcurrent", getcurrent) < 0 ||
              PyDict_SetItemString(GreenletType.tp_dict, "GreenletExit", GreenletExit) < 0 ||
              PyDict_SetItemString(GreenletType.tp_dict, "error", FiberError) < 0;
    Py_DECREF(getcurrent);
    if (bad)
        return -1;
    PyType_Modified(&GreenletType);
    if (PyModule_AddObjectRef(m, "greenlet", (PyObject *)&GreenletType) < 0 ||
        PyModule_AddObjectRef(m, "GreenletExit", GreenletExit) < 0 ||
        PyModule_AddObjectRef(m, "greenlet_fiber", greenlet_fiber_type) < 0)
        return -1;
    return sf_greenlet_abi_init(m);
}
