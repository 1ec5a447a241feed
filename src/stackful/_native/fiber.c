/* The Fiber type and the switch.
 *
 * A fiber is a Python callable running on its own C stack (stack.c) with its
 * own slice of the interpreter's thread state (interp_state.c), switched to
 * and from by one assembly routine (switch.h).  The records and invariants
 * this file keeps are described in fiber_internal.h; threads are thread.c's,
 * fibers nobody can reach are reclaim.c's, the module is module.c's.
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <stdio.h>
#include <string.h>
#include <structmember.h>

#ifdef SF_ASAN
#  include <sanitizer/common_interface_defs.h>
#endif

/* The assembly's frame layout, checked against switch.h. */
#if defined(__x86_64__)
struct sf_switch_frame {
    unsigned int mxcsr;
    unsigned short x87_cw, pad0;
    void *r15, *r14, *r13, *r12, *rbx, *rbp, *ret;
};
_Static_assert(sizeof(struct sf_switch_frame) == SF_SWITCH_FRAME_SIZE, "frame size");
_Static_assert(offsetof(struct sf_switch_frame, ret) == SF_FRAME_OFFSET_RETURN, "ret slot");
_Static_assert(offsetof(struct sf_switch_frame, r12) == SF_FRAME_OFFSET_ENTRY, "entry slot");
_Static_assert(offsetof(struct sf_switch_frame, r13) == SF_FRAME_OFFSET_ARG, "arg slot");
#elif defined(__aarch64__)
struct sf_switch_frame {
    double d[8];
    void *x19, *x20, *x21_x28[8], *x29, *x30;
    unsigned long fpcr, pad;
};
_Static_assert(sizeof(struct sf_switch_frame) == SF_SWITCH_FRAME_SIZE, "frame size");
_Static_assert(offsetof(struct sf_switch_frame, x30) == SF_FRAME_OFFSET_RETURN, "lr slot");
_Static_assert(offsetof(struct sf_switch_frame, x19) == SF_FRAME_OFFSET_ENTRY, "entry slot");
_Static_assert(offsetof(struct sf_switch_frame, x20) == SF_FRAME_OFFSET_ARG, "arg slot");
#endif

static const char *const state_names[] = {"new", "running", "suspended", "dead"};

PyObject *FiberExit;
PyObject *FiberError;
int (*sf_fiber_resolve_target)(Fiber *);
size_t sf_default_stack_size = SF_STACK_DEFAULT;
static unsigned long long fiber_counter;

/* ------------------------------------------------------------------ */
/* Transfers                                                           */

static void transfer_clear(sf_transfer *t)
{
    Py_CLEAR(t->value);
    Py_CLEAR(t->kwargs);
}

/* greenlet's packing: one argument comes back as itself, none as (), several
 * as a tuple, keywords alone as the dict, both as (args, kwargs). */
static PyObject *transfer_result(sf_transfer *t)
{
    PyObject *result;
    switch (t->kind) {
    case TRANSFER_THROW:
        sf_restore_exception(t->value);
        t->value = NULL;
        return NULL;
    case TRANSFER_ARGS:
        if (t->kwargs && PyDict_GET_SIZE(t->kwargs)) {
            if (PyTuple_GET_SIZE(t->value) == 0)
                result = Py_NewRef(t->kwargs);
            else
                result = PyTuple_Pack(2, t->value, t->kwargs);
        } else if (PyTuple_GET_SIZE(t->value) == 1) {
            result = Py_NewRef(PyTuple_GET_ITEM(t->value, 0));
        } else {
            result = Py_NewRef(t->value);
        }
        transfer_clear(t);
        return result;
    default:
        result = t->value;
        t->value = NULL;
        return result;
    }
}

static int transfer_from_call(sf_transfer *t, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    t->kwargs = NULL;
    if (!kwnames && nargs == 1) {
        t->kind = TRANSFER_VALUE;
        t->value = Py_NewRef(args[0]);
        return 0;
    }
    t->kind = TRANSFER_ARGS;
    t->value = PyTuple_New(nargs);
    if (!t->value)
        return -1;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(t->value, i, Py_NewRef(args[i]));
    if (kwnames && PyTuple_GET_SIZE(kwnames)) {
        t->kwargs = PyDict_New();
        if (!t->kwargs) {
            transfer_clear(t);
            return -1;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(t->kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                transfer_clear(t);
                return -1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Switching                                                           */

#ifdef SF_ASAN
#  define ASAN_START(save, to) \
    __sanitizer_start_switch_fiber((save), (to)->asan_bottom, (to)->asan_size)
#  define ASAN_FINISH(save) __sanitizer_finish_switch_fiber((save), NULL, NULL)
#else
#  define ASAN_START(save, to) ((void)0)
#  define ASAN_FINISH(save) ((void)0)
#endif

/* Work left by the side that switched to us: runs on the resumed fiber.
 * Returns the fiber we came from (a reference the caller drops last: dropping
 * the last reference to a suspended fiber kills it, which switches again). */
static inline Fiber *after_switch(sf_thread *th)
{
    Fiber *finished = th->finished;
    if (finished) {
        th->finished = NULL;
        sf_stack_release(finished->stack);
        finished->stack = NULL;
        /* A dead greenlet's gr_context is still the context it ran in. */
        PyObject *kept = NULL;
        if (finished->face) {
            kept = finished->py.context;
            finished->py.context = NULL;
        }
        sf_pystate_release(&finished->py);
        finished->py.context = kept;
    }
    Fiber *previous = th->previous;
    th->previous = NULL;
    return previous;
}

static PyObject *str_switch, *str_throw, *str_dead_to_parent_attr, *str_inherits_asyncio_attr,
    *str_inherits_context_attr;

/* The thread's switch hook sees every landing, on the target's stack, as
 * hook(event, (origin, target)); if it raises, its exception replaces what
 * the switch carried.  Switches the hook itself makes are reported too, as
 * greenlet's tracing does (a hook that always switches recurses). */
static void call_switch_hook(sf_thread *th, Fiber *origin, Fiber *target, sf_transfer *t)
{
    PyObject *hook = Py_NewRef(th->switch_hook);
    PyObject *event = t->kind == TRANSFER_THROW ? str_throw : str_switch;
    PyObject *pending = t->kind == TRANSFER_THROW ? NULL : sf_fetch_exception();
    PyObject *r = PyObject_CallFunction(hook, "O(OO)", event,
                                        origin ? (PyObject *)origin : Py_None, target);
    Py_DECREF(hook);
    if (r) {
        Py_DECREF(r);
        if (pending)
            sf_restore_exception(pending);
        return;
    }
    Py_XDECREF(pending);
    transfer_clear(t);
    t->kind = TRANSFER_THROW;
    t->value = sf_fetch_exception();
}

/* Everything a fiber does on landing, in order: bookkeeping, context
 * watchers, the hook, then dropping the fiber we came from. */
static inline void land(sf_thread *th, Fiber *self, sf_transfer *t)
{
    int context_switched = sf_pystate_context_changed(th->tstate, &th->previous->py);
    Fiber *previous = after_switch(th);
    sf_pystate_landed(th->tstate, &self->py);
    if (context_switched)
        sf_pystate_context_switched(th->tstate);
    /* Greenlets (greenlet_type.c): the one landing is pinned, the one left
     * unpinned.  Its greenlet goes after the fiber: freeing it may kill that
     * fiber (greenlet's rule), which needs the fiber's other owners gone. */
    PyObject *unpinned = NULL;
    if (__builtin_expect(self->face != NULL || (previous && previous->face_pinned), 0)) {
        sf_fiber_pin_face(self);
        if (previous && previous->face_pinned && !IS_ROOT(previous)) {
            unpinned = previous->face;
            previous->face_pinned = 0;
        }
    }
    if (th->switch_hook)
        call_switch_hook(th, previous, self, t);
    Py_XDECREF(previous);
    Py_XDECREF(unpinned);
}

static void fiber_entry(void *value, void *arg);

/* Give a new fiber its stack and its first context.  May fail (MemoryError).
 * `by_running`: the fiber starting it is still running (not finishing), so
 * what the new one inherits from it is in the thread state. */
static int fiber_prepare(Fiber *f, int by_running)
{
    if (!f->target) {
        if (f->face)  /* a greenlet without run, as greenlet says it */
            PyErr_SetString(PyExc_AttributeError, "run");
        else
            PyErr_SetString(FiberError, "cannot start a fiber whose __init__ was never called");
        return -1;
    }
    if (Py_TYPE(f)->tp_finalize != (destructor)sf_fiber_finalize)
        sf_adopt_finalizer(Py_TYPE(f));  /* a subclass's __del__ must not skip the kill */
    sf_stack *stack = sf_stack_acquire(f->stack_size);
    if (!stack)
        return -1;
    f->stack = stack;
    if (f->inherits_context && by_running && !f->py.context)
        f->py.context = Py_XNewRef(f->thread->tstate->context);  /* the same object */
    sf_pystate_init_fresh(&f->py, sf_stack_data_chunk(stack), SF_DATA_CHUNK_SIZE,
                          sf_stack_base(stack), stack->size);
    if (f->c_budget_override)
        sf_pystate_set_c_budget(&f->py, f->c_budget_override);
    if (f->inherits_asyncio && by_running)
        sf_pystate_inherit_asyncio(&f->py, f->thread->tstate, &f->thread->pythread);
    f->ctx = sf_make_context(sf_stack_top(stack), fiber_entry, f);
#ifdef SF_ASAN
    f->asan_bottom = sf_stack_base(stack);
    f->asan_size = stack->size;
#endif
    return 0;
}

/* Leave the running fiber for `target` (same thread, not dead, not running),
 * carrying what the caller put in th->transfer.  Returns what the running
 * fiber is resumed with: a new reference, or NULL with an exception set.
 * (Filling th->transfer in place, not passing a struct by value, avoids a
 * store-forwarding stall measured on the switch path.) */
static PyObject *switch_prepared(sf_thread *th, Fiber *target)
{
    if (target->state == FIBER_NEW && fiber_prepare(target, 1) < 0) {
        transfer_clear(&th->transfer);
        th->call_top = NULL;
        return NULL;
    }
    Fiber *origin = th->current;
    PyThreadState *ts = th->tstate;

    th->previous = origin;                         /* takes over th->current's ref */
    th->current = (Fiber *)Py_NewRef(target);
    sf_pystate_save(&origin->py, ts, &th->pythread, th->call_top);
    th->call_top = NULL;
    sf_pystate_restore(&target->py, ts, &th->pythread);
    origin->state = FIBER_SUSPENDED;
    target->state = FIBER_RUNNING;

#ifdef SF_ASAN
    void *fake_stack = NULL;
    ASAN_START(&fake_stack, target);
#endif
    sf_switch(&origin->ctx, target->ctx, NULL);
#ifdef SF_ASAN
    ASAN_FINISH(fake_stack);
#endif

    /* Resumed: whoever switched here restored our state and set us current. */
    sf_transfer got = th->transfer;
    th->transfer = (sf_transfer){0};
    land(th, origin, &got);
    if (th->pending_kills)
        sf_process_pending_kills(th);
    return transfer_result(&got);
}

PyObject *sf_switch_to(sf_thread *th, Fiber *target, sf_transfer t)
{
    th->transfer = t;
    return switch_prepared(th, target);
}

/* A switch or throw to the running fiber itself: no switch, but the hook
 * (greenlet's tracing) still sees it. */
static PyObject *switch_to_self(sf_thread *th, sf_transfer *t)
{
    if (th->switch_hook)
        call_switch_hook(th, th->current, th->current, t);
    return transfer_result(t);
}

/* The first ancestor of `f` that `match` accepts, or NULL.  kill() makes the
 * killer its victim's parent, so a fiber that kills its own ancestor closes a
 * loop in the chain (g -> f -> g): the walk also stops where it meets `f`
 * again or goes round a loop (a slow pointer is caught up). */
static Fiber *find_ancestor(Fiber *f, int (*match)(Fiber *, Fiber *), Fiber *arg)
{
    Fiber *slow = f;
    int step = 0;
    for (Fiber *p = f->parent; p && p != f; p = p->parent) {
        if (match(p, arg))
            return p;
        if (step++ & 1) {
            slow = slow->parent;
            if (slow == p)
                break;
        }
    }
    return NULL;
}

static int is_alive(Fiber *p, Fiber *unused) { (void)unused; return p->state != FIBER_DEAD; }
static int is_same(Fiber *p, Fiber *target) { return p == target; }

/* The first ancestor that can still receive a value, or NULL. */
static Fiber *live_parent(Fiber *f) { return find_ancestor(f, is_alive, NULL); }

static _Noreturn void fiber_finish(Fiber *self, sf_thread *th, sf_transfer t)
{
    PyThreadState *ts = th->tstate;
    Fiber *parent = live_parent(self);
    if (!parent)
        parent = th->root;  /* the root never dies while the thread runs */

    self->state = FIBER_DEAD;
    sf_pystate_release_extra_chunks(ts, sf_stack_data_chunk(self->stack));
    /* Moves the context out of ts; dropped by after_switch on the other side,
     * since dropping it here could run code on a fiber already marked dead. */
    sf_pystate_save(&self->py, ts, &th->pythread, NULL);

    if (parent->state == FIBER_NEW && fiber_prepare(parent, 0) < 0) {
        /* Cannot start the parent: hand the error to the root (an exception
         * already on its way, why the start was refused, wins). */
        if (t.kind == TRANSFER_THROW) {
            PyErr_Clear();
        } else {
            transfer_clear(&t);
            t.kind = TRANSFER_THROW;
            t.value = sf_fetch_exception();
        }
        parent = th->root;
    }
    th->transfer = t;
    th->finished = self;
    th->previous = self;                           /* th->current's ref */
    th->current = (Fiber *)Py_NewRef(parent);
    sf_pystate_restore(&parent->py, ts, &th->pythread);
    parent->state = FIBER_RUNNING;

    ASAN_START(NULL, parent);                      /* NULL: this stack is gone for good */
    sf_switch(&self->ctx, parent->ctx, NULL);
    Py_FatalError("stackful: a finished fiber was resumed");
}

static void fiber_entry(void *value, void *arg)
{
    (void)value;
    Fiber *self = arg;
    sf_thread *th = self->thread;
    ASAN_FINISH(NULL);

    sf_transfer t = th->transfer;
    th->transfer = (sf_transfer){0};
    land(th, self, &t);

    /* The fiber holds its target and arguments until the target returns, so
     * the GC sees them as the fiber's (cycles through them get collected). */
    PyObject *result = NULL;
    self->start = t;
    if (t.kind == TRANSFER_THROW) {
        transfer_result(&self->start);  /* raises it before the target runs */
    } else if (t.kind == TRANSFER_VALUE) {
        result = PyObject_CallOneArg(self->target, t.value);
    } else {
        result = PyObject_Call(self->target, t.value, t.kwargs);
    }
    transfer_clear(&self->start);
    Py_CLEAR(self->target);

    sf_transfer out = {0};
    if (result) {
        out.kind = TRANSFER_VALUE;
        out.value = result;
    } else if (PyErr_ExceptionMatches(FiberExit)) {
        /* Asked to exit: a normal end; the exception is the value (as greenlet). */
        out.kind = TRANSFER_VALUE;
        out.value = sf_fetch_exception();
    } else {
        out.kind = TRANSFER_THROW;
        out.value = sf_fetch_exception();
    }
    /* A parent that has not started may need Python code to find what it
     * runs (a greenlet's run attribute): that runs here, while we are alive. */
    Fiber *next = live_parent(self);
    if (next && next->state == FIBER_NEW && !next->target && sf_fiber_resolve_target) {
        PyObject *pending = sf_fetch_exception();
        if (sf_fiber_resolve_target(next) < 0) {
            transfer_clear(&out);
            out.kind = TRANSFER_THROW;
            out.value = sf_fetch_exception();
        }
        if (pending)
            sf_restore_exception(pending);
    }
    fiber_finish(self, th, out);
}

/* ------------------------------------------------------------------ */
/* The type                                                            */

Fiber *sf_fiber_alloc(PyTypeObject *type)
{
    Fiber *f = (Fiber *)type->tp_alloc(type, 0);
    if (f) {
        f->state = FIBER_NEW;
        sf_registry_add(f);
    }
    return f;
}

/* The fiber's name as a str (made on first use for the default "Fiber-N":
 * building it for every fiber was half of spawn's cost).  New reference. */
static PyObject *fiber_name(Fiber *f)
{
    if (!f->name) {
        f->name = PyUnicode_FromFormat("Fiber-%llu", f->serial);
        if (!f->name)
            return NULL;
    }
    return Py_NewRef(f->name);
}

/* For error messages: the name, or the default text if even that fails. */
static PyObject *fiber_label(Fiber *f)
{
    PyObject *name = fiber_name(f);
    if (!name) {
        PyErr_Clear();
        name = PyUnicode_FromString("?");
    }
    return name;
}

/* Name the fiber `name` (a str; a new reference) or, if NULL, "Fiber-N".  cname
 * points into the str (its UTF-8 is kept by it: for ASCII, its own characters), so
 * it is set before the old name may be freed. */
static void set_name(Fiber *f, PyObject *name)
{
    const char *utf8 = NULL;
    if (name) {
        utf8 = PyUnicode_AsUTF8(name);
        if (!utf8) {
            PyErr_Clear();
            utf8 = "?";
        }
    }
    f->cname = utf8;
    Py_XSETREF(f->name, name);
}

static int check_parent(Fiber *self, PyObject *value, sf_thread *th)
{
    if (!PyObject_TypeCheck(value, &FiberType)) {
        PyErr_Format(PyExc_TypeError, "parent must be a Fiber, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    Fiber *p = (Fiber *)value;
    if (p->thread != th) {
        PyErr_SetString(PyExc_ValueError,
                        "parent must be a fiber of the same thread");
        return -1;
    }
    if (p == self || find_ancestor(p, is_same, self)) {
        PyErr_SetString(PyExc_ValueError, "cyclic parent chain");
        return -1;
    }
    return 0;
}

static PyObject *Fiber_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    Fiber *f = sf_fiber_alloc(type);
    if (!f)
        return NULL;
    f->thread = th;
    th->refs++;
    f->stack_size = sf_default_stack_size;
    f->parent = (Fiber *)Py_NewRef(th->current);
    return (PyObject *)f;
}

/* What Fiber(target, *, name, stack_size, parent) sets; each argument may be
 * NULL or None for "not given". */
/* A class attribute's truth (0 if absent), or -1 with an exception. */
static int class_flag(PyTypeObject *type, PyObject *attr)
{
    PyObject *flag = _PyType_Lookup(type, attr);  /* borrowed */
    return flag ? PyObject_IsTrue(flag) : 0;
}

static int fiber_setup(Fiber *self, PyObject *target, PyObject *name, PyObject *stack_size,
                       PyObject *parent)
{
    if (self->state != FIBER_NEW) {
        PyErr_SetString(FiberError, "cannot re-initialise a fiber that has started");
        return -1;
    }
    if (!target || target == Py_None) {
        /* A subclass may define run() instead, like threading.Thread. */
        target = PyObject_GetAttrString((PyObject *)self, "run");
        if (!target) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError,
                            "Fiber() needs a callable target, or a subclass with a run() method");
            return -1;
        }
    } else {
        Py_INCREF(target);
    }
    if (!PyCallable_Check(target)) {
        PyErr_Format(PyExc_TypeError, "Fiber target must be callable, not %.100s",
                     Py_TYPE(target)->tp_name);
        Py_DECREF(target);
        return -1;
    }
    Py_XSETREF(self->target, target);

    if (stack_size && stack_size != Py_None) {
        long long requested = PyLong_AsLongLong(stack_size);
        if (requested == -1 && PyErr_Occurred())
            return -1;
        if (sf_stack_normalize_size(requested, &self->stack_size) < 0)
            return -1;
    }
    if (parent && parent != Py_None) {
        if (check_parent(self, parent, self->thread) < 0)
            return -1;
        Py_XSETREF(self->parent, (Fiber *)Py_NewRef(parent));
    }
    if (!name || name == Py_None) {
        self->serial = ++fiber_counter;
        set_name(self, NULL);
    } else if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %.100s", Py_TYPE(name)->tp_name);
        return -1;
    } else {
        set_name(self, Py_NewRef(name));
    }
    if (Py_TYPE(self) != &FiberType) {
        int asyncio = class_flag(Py_TYPE(self), str_inherits_asyncio_attr);
        int context = class_flag(Py_TYPE(self), str_inherits_context_attr);
        if (asyncio < 0 || context < 0)
            return -1;
        self->inherits_asyncio = asyncio;
        self->inherits_context = context;
    }
    return 0;
}

static int Fiber_init(Fiber *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"target", "name", "stack_size", "parent", NULL};
    PyObject *target = NULL, *name = NULL, *stack_size = NULL, *parent = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$OOO:Fiber", kwlist,
                                     &target, &name, &stack_size, &parent))
        return -1;
    return fiber_setup(self, target, name, stack_size, parent);
}

/* A subclass that has come to define __new__ or __init__ after its creation:
 * the usual type call. */
static PyObject *call_through_type(PyObject *type, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    PyObject *tuple = PyTuple_New(nargs), *kwargs = NULL, *result = NULL;
    if (!tuple)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    if (kwnames && PyTuple_GET_SIZE(kwnames)) {
        kwargs = PyDict_New();
        for (Py_ssize_t i = 0; kwargs && i < PyTuple_GET_SIZE(kwnames); i++)
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                Py_CLEAR(kwargs);
        if (!kwargs)
            goto done;
    }
    result = PyType_Type.tp_call(type, tuple, kwargs);
done:
    Py_DECREF(tuple);
    Py_XDECREF(kwargs);
    return result;
}

/* Fiber(...) without building an args tuple and a kwargs dict: spawning is a
 * hot path.  Also for subclasses that define neither __new__ nor __init__
 * (Fiber.__init_subclass__ gives them this); the others go through tp_new
 * and tp_init as usual. */
static PyObject *Fiber_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyTypeObject *tp = (PyTypeObject *)type;
    if (tp != &FiberType && (tp->tp_new != FiberType.tp_new || tp->tp_init != FiberType.tp_init))
        return call_through_type(type, args, nargs, kwnames);
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "Fiber() takes at most 1 positional argument (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *target = nargs ? args[0] : NULL, *name = NULL, *stack_size = NULL,
             *parent = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), *value = args[nargs + i];
        PyObject **slot = (PyUnicode_CompareWithASCIIString(key, "name") == 0)         ? &name
                          : (PyUnicode_CompareWithASCIIString(key, "stack_size") == 0) ? &stack_size
                          : (PyUnicode_CompareWithASCIIString(key, "parent") == 0)     ? &parent
                          : (PyUnicode_CompareWithASCIIString(key, "target") == 0) && !nargs ? &target
                                                                                 : NULL;
        if (!slot || *slot) {
            PyErr_Format(PyExc_TypeError, "Fiber() got an unexpected or repeated keyword "
                         "argument %R", key);
            return NULL;
        }
        *slot = value;
    }
    PyObject *self = Fiber_new((PyTypeObject *)type, NULL, NULL);
    if (self && fiber_setup((Fiber *)self, target, name, stack_size, parent) < 0)
        Py_CLEAR(self);
    return self;
}

static int Fiber_traverse(Fiber *self, visitproc visit, void *arg)
{
    /* Not Py_TYPE(self): the type is static, and a Python subclass's own
     * traverse visits its (heap) type before calling this one. */
    Py_VISIT(self->target);
    Py_VISIT(self->start.value);
    Py_VISIT(self->start.kwargs);
    Py_VISIT(self->parent);
    Py_VISIT(self->dict);
    if (self->face_pinned)
        Py_VISIT(self->face);
    /* A suspended fiber owns its frames (also once its thread has exited: they
     * stay intact until it is discarded); the running one's are the thread's. */
    if (self->state == FIBER_SUSPENDED)
        return sf_pystate_traverse(&self->py, visit, arg);
    if (self->state == FIBER_NEW || self->state == FIBER_DEAD)
        Py_VISIT(self->py.context);  /* set before the start, or kept after the end */
    return 0;
}

/* A suspended fiber being freed that could not be unwound. */
static void discard_unwound(Fiber *self)
{
    if (self->state == FIBER_SUSPENDED && !IS_ROOT(self))
        sf_discard_fiber(self, sf_discard_cause(self), 0);
}

static int Fiber_clear(Fiber *self)
{
    if (self->state == FIBER_SUSPENDED && self->thread->tstate &&
        self->thread != current_thread()) {
        /* Unreachable but not ours to touch: leave it for the owner thread. */
    } else {
        discard_unwound(self);
    }
    Py_CLEAR(self->dict);
    if (self->face_pinned) {
        self->face_pinned = 0;
        Py_CLEAR(self->face);
    }
    if (self->state == FIBER_NEW || self->state == FIBER_DEAD) {
        /* A suspended fiber's own C frames still use these. */
        Py_CLEAR(self->target);
        transfer_clear(&self->start);
        Py_CLEAR(self->parent);
        sf_pystate_release(&self->py);
    }
    return 0;
}

static void Fiber_dealloc(Fiber *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return;  /* resurrected (handed to its thread to kill) */
    PyObject_GC_UnTrack(self);
    sf_registry_remove(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    discard_unwound(self);
    if (self->stack) {
        sf_stack_release(self->stack);
        self->stack = NULL;
    }
    sf_pystate_release(&self->py);
    Py_CLEAR(self->target);
    transfer_clear(&self->start);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->name);
    Py_CLEAR(self->dict);
    if (self->face_pinned) {
        self->face_pinned = 0;
        Py_CLEAR(self->face);
    }
    if (self->thread)
        sf_thread_decref(self->thread);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- methods ---- */

/* Where a switch or throw aimed at `self` goes, or NULL with FiberError.
 * A finished fiber is an error, unless its class sets
 * __fiber_dead_switch_to_parent__ (greenlet's rule): then it goes to the
 * first live ancestor. */
static Fiber *switch_destination(sf_thread *th, Fiber *self)
{
    if (self->thread != th) {
        PyObject *label = fiber_label(self);
        PyErr_Format(FiberError,
                     "cannot switch to fiber %R: it belongs to another thread%s",
                     label, self->thread->tstate ? "" : " (which has exited)");
        Py_XDECREF(label);
        return NULL;
    }
    if (self->state != FIBER_DEAD)
        return self;
    if (Py_TYPE(self) != &FiberType) {
        PyObject *flag = PyObject_GetAttr((PyObject *)Py_TYPE(self), str_dead_to_parent_attr);
        int forward = flag ? PyObject_IsTrue(flag) : 0;
        Py_XDECREF(flag);
        if (forward < 0 || (!flag && !PyErr_ExceptionMatches(PyExc_AttributeError)))
            return NULL;
        PyErr_Clear();
        Fiber *parent = forward > 0 ? live_parent(self) : NULL;
        if (parent)
            return parent;
    }
    PyObject *label = fiber_label(self);
    PyErr_Format(FiberError, "cannot switch to fiber %R: it has finished", label);
    Py_XDECREF(label);
    return NULL;
}

/* Called from Python code, a method's arguments sit on top of the caller's
 * value stack, just above the object it was called on: where they end is
 * where the caller's live stack ends while it is suspended in the call (what
 * the GC sees, and a discard releases).  switch(), throw() and kill(). */
static inline void mark_call_top(sf_thread *th, PyObject *const *args, Py_ssize_t n)
{
    if (args)
        th->call_top = args + n;
}

PyDoc_STRVAR(switch_doc,
"switch(*args, **kwargs)\n--\n\n"
"Suspend the running fiber and run this one.\n\n"
"The first switch calls target(*args, **kwargs) on the fiber's own stack.\n"
"Later switches resume it: its pending switch() returns a single argument\n"
"as itself, none as (), several as a tuple, keywords alone as a dict, and\n"
"both as (args, kwargs).\n"
"Returns what is sent back when this fiber's caller is resumed, including\n"
"the return value of a fiber whose parent it is.");

static inline PyObject *switch_call(sf_thread *th, Fiber *self, PyObject *const *args,
                                     size_t nargsf, PyObject *kwnames)
{
    Fiber *target = switch_destination(th, self);
    if (!target)
        return NULL;
    if (target == th->current) {
        sf_transfer t;
        if (transfer_from_call(&t, args, nargsf, kwnames) < 0)
            return NULL;
        return switch_to_self(th, &t);
    }
    if (transfer_from_call(&th->transfer, args, nargsf, kwnames) < 0)
        return NULL;
    mark_call_top(th, args, PyVectorcall_NARGS(nargsf) + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0));
    return switch_prepared(th, target);
}

static PyObject *Fiber_switch(Fiber *self, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames)
{
    sf_thread *th = current_thread();
    return th ? switch_call(th, self, args, nargsf, kwnames) : NULL;
}

static PyObject *make_exception(PyObject *typ, PyObject *val, PyObject *tb)
{
    PyObject *exc;
    if (PyExceptionInstance_Check(typ)) {
        if (val && val != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return NULL;
        }
        exc = Py_NewRef(typ);
    } else if (PyExceptionClass_Check(typ)) {
        if (val && PyObject_TypeCheck(val, (PyTypeObject *)typ))
            exc = Py_NewRef(val);
        else if (!val || val == Py_None)
            exc = PyObject_CallNoArgs(typ);
        else if (PyTuple_Check(val))
            exc = PyObject_Call(typ, val, NULL);
        else
            exc = PyObject_CallOneArg(typ, val);
        if (!exc)
            return NULL;
        if (!PyExceptionInstance_Check(exc)) {
            PyErr_Format(PyExc_TypeError, "calling %R should have returned an exception, not %R",
                         typ, Py_TYPE(exc));
            Py_DECREF(exc);
            return NULL;
        }
    } else {
        /* greenlet's words: code matches them */
        PyErr_Format(PyExc_TypeError, "exceptions must be classes, or instances, not %.100s",
                     Py_TYPE(typ)->tp_name);
        return NULL;
    }
    if (tb && tb != Py_None) {
        if (!PyTraceBack_Check(tb)) {
            PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
            Py_DECREF(exc);
            return NULL;
        }
        PyException_SetTraceback(exc, tb);
    }
    return exc;
}

static PyObject *throw_into(sf_thread *th, Fiber *self, PyObject *exc)  /* steals exc */
{
    sf_transfer t = {.kind = TRANSFER_THROW, .value = exc};
    if (self == th->current) {
        th->call_top = NULL;
        return switch_to_self(th, &t);
    }
    return sf_switch_to(th, self, t);
}

PyObject **sf_thread_scheduler_slot(void)
{
    sf_thread *th = current_thread();
    return th ? &th->scheduler : NULL;
}

size_t sf_fiber_trim_stack(PyObject *fiber)
{
    Fiber *f = (Fiber *)fiber;
    if (!sf_is_fiber(fiber) || f->state != FIBER_SUSPENDED || !f->stack)
        return 0;
    return sf_stack_trim(f->stack, (const char *)f->ctx, f->py.datastack_top);
}

/* What resuming a suspended fiber touches first: the C frames from its saved
 * stack pointer up through the park path to the eval loop of its innermost
 * Python function (about 1.5 KiB on x86-64), and that function's frame at
 * the top of its data stack. */
#define PREFETCH_STACK_BYTES 512
#define PREFETCH_FRAME_BYTES 256
#define CACHE_LINE 64

void sf_fiber_prefetch_record(PyObject *fiber)
{
    if (!fiber)
        return;
    for (size_t at = 0; at < sizeof(Fiber); at += CACHE_LINE)
        __builtin_prefetch((const char *)fiber + at);
}

void sf_fiber_prefetch_stack(PyObject *fiber)
{
    Fiber *f = (Fiber *)fiber;
    if (!fiber || !Py_IS_TYPE(fiber, &FiberType) || f->state != FIBER_SUSPENDED || !f->ctx)
        return;  /* (a subclass's record is warmed all the same; its stack is not) */
    const char *sp = (const char *)f->ctx;
    for (size_t at = 0; at < PREFETCH_STACK_BYTES; at += CACHE_LINE)
        __builtin_prefetch(sp + at);
    const char *top = (const char *)f->py.datastack_top;
    if (top)
        for (size_t at = CACHE_LINE; at <= PREFETCH_FRAME_BYTES; at += CACHE_LINE)
            __builtin_prefetch(top - at);
}

PyObject *sf_current_fiber(void)
{
    sf_thread *th = current_thread();
    return th ? (PyObject *)th->current : NULL;
}

int sf_is_fiber(PyObject *o)
{
    return PyObject_TypeCheck(o, &FiberType);
}

PyObject *sf_fiber_switch_empty(PyObject *fiber)
{
    return Fiber_switch((Fiber *)fiber, NULL, 0, NULL);
}

PyDoc_STRVAR(throw_doc,
"throw(typ=FiberExit, val=None, tb=None)\n--\n\n"
"Raise an exception in this fiber where it is suspended and run it.\n\n"
"`typ` is an exception class (instantiated with `val`) or an instance.\n"
"A fiber that has not started dies at once with the exception, which goes\n"
"to its parent.  Returns like switch().");

static PyObject *Fiber_throw(Fiber *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 3) {
        PyErr_Format(PyExc_TypeError, "throw() takes at most 3 arguments (%zd given)", nargs);
        return NULL;
    }
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    Fiber *target = switch_destination(th, self);
    if (!target)
        return NULL;
    PyObject *exc = make_exception(nargs > 0 ? args[0] : sf_exit_exception_type(self),
                                   nargs > 1 ? args[1] : NULL,
                                   nargs > 2 ? args[2] : NULL);
    if (!exc)
        return NULL;
    mark_call_top(th, args, nargs);
    return throw_into(th, target, exc);
}

PyDoc_STRVAR(kill_doc,
"kill()\n--\n\n"
"End this fiber: throw FiberExit in and let it unwind (finally blocks run),\n"
"then come back here.  A fiber that never started is just marked dead; a dead\n"
"one is left alone.  Returns None once it is dead, or what it sent back if it\n"
"caught FiberExit and switched here instead.  An exception other than\n"
"FiberExit that escapes it is raised here.");

static PyObject *Fiber_kill(Fiber *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs) {
        PyErr_Format(PyExc_TypeError, "kill() takes no arguments (%zd given)", nargs);
        return NULL;
    }
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    if (self->state == FIBER_DEAD)
        Py_RETURN_NONE;
    if (self->thread != th)
        return (switch_destination(th, self), NULL);
    if (self->state == FIBER_NEW) {
        self->state = FIBER_DEAD;
        Py_CLEAR(self->target);
        Py_RETURN_NONE;
    }
    if (IS_ROOT(self)) {
        PyErr_SetString(FiberError, "cannot kill a thread's root fiber");
        return NULL;
    }
    PyObject *exc = PyObject_CallNoArgs(sf_exit_exception_type(self));
    if (!exc)
        return NULL;
    if (self != th->current) {
        Py_SETREF(self->parent, (Fiber *)Py_NewRef(th->current));
    }
    mark_call_top(th, args, 0);
    PyObject *result = throw_into(th, self, exc);
    if (result && self->state == FIBER_DEAD && PyObject_TypeCheck(result, (PyTypeObject *)FiberExit)) {
        Py_DECREF(result);
        Py_RETURN_NONE;
    }
    return result;
}

static PyStructSequence_Field stack_info_fields[] = {
    {"base", "lowest usable address of the C stack"},
    {"top", "highest address: the stack grows down from here"},
    {"size", "usable bytes"},
    {"guard_size", "bytes of the guard region below base"},
    {"used", "bytes touched so far (resident pages, counted from the top)"},
    {NULL, NULL},
};
static PyStructSequence_Desc stack_info_desc = {
    "stackful.StackInfo", "Where a fiber's C stack lives and how much of it was touched.",
    stack_info_fields, 5,
};
static PyTypeObject *StackInfoType;

PyDoc_STRVAR(stack_info_doc,
"stack_info()\n--\n\n"
"StackInfo(base, top, size, guard_size, used) for a fiber that has a stack\n"
"(started and not finished), else None.  `used` counts resident pages from\n"
"the top, so it is the deepest the stack has reached (a pooled stack also\n"
"remembers earlier fibers' use).  Use it to size stack_size.");

static PyObject *Fiber_stack_info(Fiber *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->stack)
        Py_RETURN_NONE;
    PyObject *info = PyStructSequence_New(StackInfoType);
    if (!info)
        return NULL;
    sf_stack *s = self->stack;
    PyObject *items[5] = {
        PyLong_FromVoidPtr(sf_stack_base(s)), PyLong_FromVoidPtr(sf_stack_top(s)),
        PyLong_FromSize_t(s->size), PyLong_FromSize_t(s->guard_size),
        PyLong_FromSize_t(sf_stack_touched(s)),
    };
    for (int i = 0; i < 5; i++) {
        if (!items[i]) {
            for (int j = i + 1; j < 5; j++)
                Py_XDECREF(items[j]);
            Py_DECREF(info);
            return NULL;
        }
        PyStructSequence_SET_ITEM(info, i, items[i]);
    }
    return info;
}

/* Subclasses that keep Fiber's __new__ and __init__ are created as fast as
 * Fiber itself (without tuple and dict of arguments). */
static PyObject *Fiber_init_subclass(PyObject *cls, PyObject *args, PyObject *kwds)
{
    PyTypeObject *tp = (PyTypeObject *)cls;
    if (tp->tp_new == FiberType.tp_new && tp->tp_init == FiberType.tp_init)
        tp->tp_vectorcall = Fiber_vectorcall;
    /* What comes after Fiber in the MRO gets the call, as with super(). */
    PyObject *super = PyObject_CallFunctionObjArgs((PyObject *)&PySuper_Type,
                                                   (PyObject *)&FiberType, cls, NULL);
    if (!super)
        return NULL;
    PyObject *next = PyObject_GetAttrString(super, "__init_subclass__");
    Py_DECREF(super);
    if (!next)
        return NULL;
    PyObject *result = PyObject_Call(next, args, kwds);
    Py_DECREF(next);
    return result;
}

static PyMethodDef Fiber_methods[] = {
    {"__init_subclass__", (PyCFunction)(void (*)(void))Fiber_init_subclass,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Give a subclass that keeps Fiber's __new__ and __init__ Fiber's fast creation."},
    {"switch", (PyCFunction)(void (*)(void))Fiber_switch, METH_FASTCALL | METH_KEYWORDS, switch_doc},
    {"throw", (PyCFunction)(void (*)(void))Fiber_throw, METH_FASTCALL, throw_doc},
    {"kill", (PyCFunction)(void (*)(void))Fiber_kill, METH_FASTCALL, kill_doc},
    {"stack_info", (PyCFunction)Fiber_stack_info, METH_NOARGS, stack_info_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- properties ---- */

static PyObject *Fiber_get_name(Fiber *self, void *c)
{
    (void)c;
    return fiber_name(self);
}

static int Fiber_set_name(Fiber *self, PyObject *value, void *c)
{
    (void)c;
    if (!value || !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "name must be a str");
        return -1;
    }
    set_name(self, Py_NewRef(value));
    return 0;
}

/* The running thread's record, if `self` belongs to it; else NULL with a
 * ValueError saying what cannot be done to another thread's fiber. */
static sf_thread *own_thread(Fiber *self, const char *what)
{
    sf_thread *th = current_thread();
    if (th && self->thread != th) {
        PyErr_Format(PyExc_ValueError, "cannot set the %s of another thread's fiber", what);
        return NULL;
    }
    return th;
}

static PyObject *Fiber_get_parent(Fiber *self, void *c)
{
    (void)c;
    return Py_NewRef(self->parent ? (PyObject *)self->parent : Py_None);
}

static int Fiber_set_parent(Fiber *self, PyObject *value, void *c)
{
    (void)c;
    if (!value || value == Py_None) {
        PyErr_SetString(PyExc_ValueError, "a fiber's parent cannot be deleted or set to None");
        return -1;
    }
    sf_thread *th = own_thread(self, "parent");
    if (!th)
        return -1;
    if (IS_ROOT(self)) {
        PyErr_SetString(PyExc_ValueError, "a thread's root fiber has no parent to set");
        return -1;
    }
    if (check_parent(self, value, th) < 0)
        return -1;
    Py_XSETREF(self->parent, (Fiber *)Py_NewRef(value));
    return 0;
}

static PyObject *Fiber_get_dead(Fiber *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->state == FIBER_DEAD);
}

static PyObject *Fiber_get_started(Fiber *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->state != FIBER_NEW);
}

static PyObject *Fiber_get_state(Fiber *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(state_names[self->state]);
}

static PyObject *Fiber_get_stack_size(Fiber *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(IS_ROOT(self) ? 0 : self->stack_size);
}

static PyObject *Fiber_get_frame(Fiber *self, void *c)
{
    (void)c;
    if (self->state == FIBER_RUNNING && self->thread->tstate == PyThreadState_Get()) {
        PyFrameObject *f = PyEval_GetFrame();
        return Py_NewRef(f ? (PyObject *)f : Py_None);
    }
    if (self->state != FIBER_SUSPENDED || !self->thread->tstate)
        Py_RETURN_NONE;
    return sf_pystate_top_frame(&self->py, PyThreadState_Get());
}

static PyObject *Fiber_get_context(Fiber *self, void *c)
{
    (void)c;
    PyObject *ctx;
    if (self->state == FIBER_RUNNING && self->thread->tstate)
        ctx = self->thread->tstate->context;
    else
        ctx = self->py.context;
    return Py_NewRef(ctx ? ctx : Py_None);
}

static int Fiber_set_context(Fiber *self, PyObject *value, void *c)
{
    (void)c;
    if (!value)
        value = Py_None;
    if (value != Py_None && !PyContext_CheckExact(value)) {
        PyErr_Format(PyExc_TypeError, "context must be a contextvars.Context or None, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    sf_thread *th = own_thread(self, "context");
    if (!th)
        return -1;
    /* Inside Context.run(c) the fiber's context is c, entered: replacing it would
     * make run()'s exit fail and leave c entered for good. */
    if (sf_context_entered(self == th->current ? th->tstate->context : self->py.context)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot replace the context of a fiber inside Context.run()");
        return -1;
    }
    PyObject *ctx = value == Py_None ? NULL : Py_NewRef(value);
    if (self->state != FIBER_NEW)  /* a new one takes its context as base when it starts */
        sf_pystate_set_base_context(&self->py, ctx);
    if (self == th->current) {
        sf_pystate_set_current_context(th->tstate, ctx);
    } else {
        Py_XSETREF(self->py.context, ctx);
    }
    return 0;
}

static PyGetSetDef Fiber_getset[] = {
    {"name", (getter)Fiber_get_name, (setter)Fiber_set_name, "the fiber's name (str)", NULL},
    {"parent", (getter)Fiber_get_parent, (setter)Fiber_set_parent,
     "the fiber that receives this one's result or exception (None for a root)", NULL},
    {"dead", (getter)Fiber_get_dead, NULL, "True once the fiber has finished", NULL},
    {"started", (getter)Fiber_get_started, NULL, "True once the fiber has been switched to", NULL},
    {"state", (getter)Fiber_get_state, NULL, "'new', 'running', 'suspended' or 'dead'", NULL},
    {"stack_size", (getter)Fiber_get_stack_size, NULL,
     "usable bytes of the fiber's C stack (0 for a thread's root fiber)", NULL},
    {"frame", (getter)Fiber_get_frame, NULL,
     "the innermost Python frame of a suspended or running fiber, else None", NULL},
    {"context", (getter)Fiber_get_context, (setter)Fiber_set_context,
     "the contextvars.Context the fiber runs in (None until it needs one); not "
     "replaceable while the fiber is inside Context.run() (RuntimeError)", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *Fiber_repr(Fiber *self)
{
    PyObject *label = fiber_label(self);
    PyObject *repr = PyUnicode_FromFormat("<%s %R %s at %p>", Py_TYPE(self)->tp_name, label,
                                          state_names[self->state], (void *)self);
    Py_XDECREF(label);
    return repr;
}

static PyMemberDef Fiber_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(Fiber, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(Fiber, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Fiber_doc,
"Fiber(target=None, *, name=None, stack_size=None, parent=None)\n--\n\n"
"A function running on its own C stack, switched to explicitly.\n\n"
"target: called with the arguments of the first switch(); a subclass may\n"
"    define run() instead.\n"
"name: a label for reprs and error messages (default 'Fiber-N').\n"
"stack_size: usable bytes of C stack (default get_default_stack_size(),\n"
"    at least MIN_STACK_SIZE).  Memory is reserved lazily: only touched\n"
"    pages cost.\n"
"parent: receives the result or exception when the fiber ends (default:\n"
"    the fiber running now).");

PyTypeObject FiberType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful.Fiber",
    .tp_basicsize = sizeof(Fiber),
    .tp_dealloc = (destructor)Fiber_dealloc,
    .tp_repr = (reprfunc)Fiber_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Fiber_doc,
    .tp_traverse = (traverseproc)Fiber_traverse,
    .tp_clear = (inquiry)Fiber_clear,
    .tp_weaklistoffset = offsetof(Fiber, weakreflist),
    .tp_methods = Fiber_methods,
    .tp_members = Fiber_members,
    .tp_getset = Fiber_getset,
    .tp_dictoffset = offsetof(Fiber, dict),
    .tp_init = (initproc)Fiber_init,
    .tp_new = Fiber_new,
    .tp_vectorcall = Fiber_vectorcall,
    .tp_finalize = (destructor)sf_fiber_finalize,
};

/* ---- for greenlet_type.c ---- */

Fiber *sf_fiber_create(PyTypeObject *type, PyObject *target)
{
    Fiber *f = (Fiber *)Fiber_new(type, NULL, NULL);
    if (!f)
        return NULL;
    f->serial = ++fiber_counter;
    f->target = Py_XNewRef(target);
    int asyncio = class_flag(type, str_inherits_asyncio_attr);
    int context = class_flag(type, str_inherits_context_attr);
    if (asyncio < 0 || context < 0) {
        Py_DECREF(f);
        return NULL;
    }
    f->inherits_asyncio = asyncio;
    f->inherits_context = context;
    return f;
}

PyObject *sf_fiber_switch_call(sf_thread *th, Fiber *f, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames)
{
    return switch_call(th, f, args, nargsf, kwnames);
}

PyObject *sf_fiber_throw_call(Fiber *f, PyObject *const *args, Py_ssize_t nargs)
{
    return Fiber_throw(f, args, nargs);
}

PyObject *sf_fiber_new(PyObject *target, PyObject *name, PyObject *parent)
{
    PyObject *self = Fiber_new(&FiberType, NULL, NULL);
    if (self && fiber_setup((Fiber *)self, target, name, NULL, parent) < 0)
        Py_CLEAR(self);
    return self;
}

int sf_fiber_set_parent(Fiber *f, PyObject *parent)
{
    return Fiber_set_parent(f, parent, NULL);
}

int sf_fiber_reparent_new(Fiber *f, Fiber *parent)
{
    if (f->state != FIBER_NEW) {
        PyErr_SetString(PyExc_ValueError, "parent cannot be on a different thread");
        return -1;
    }
    if (parent == f || find_ancestor(parent, is_same, f)) {
        PyErr_SetString(PyExc_ValueError, "cyclic parent chain");
        return -1;
    }
    /* Nothing of it is bound to its thread before it starts but the record. */
    sf_thread *old = f->thread;
    f->thread = parent->thread;
    f->thread->refs++;
    Py_XSETREF(f->parent, (Fiber *)Py_NewRef(parent));
    sf_thread_decref(old);
    return 0;
}

int sf_fiber_init_type(PyObject *m)
{
    if (PyType_Ready(&FiberType) < 0)
        return -1;
    StackInfoType = PyStructSequence_NewType(&stack_info_desc);
    FiberExit = PyErr_NewExceptionWithDoc(
        "stackful.FiberExit",
        "Thrown into a fiber to make it exit (kill(), garbage collection).\n"
        "A fiber ended by it returns normally.", PyExc_BaseException, NULL);
    FiberError = PyErr_NewExceptionWithDoc(
        "stackful.FiberError", "Misuse of a fiber (switching to a finished one, or to another "
        "thread's).", PyExc_RuntimeError, NULL);
    str_switch = PyUnicode_InternFromString("switch");
    str_throw = PyUnicode_InternFromString("throw");
    str_dead_to_parent_attr = PyUnicode_InternFromString("__fiber_dead_switch_to_parent__");
    str_inherits_asyncio_attr = PyUnicode_InternFromString("__fiber_inherits_asyncio__");
    str_inherits_context_attr = PyUnicode_InternFromString("__fiber_inherits_context__");
    if (!str_switch || !str_throw || !str_dead_to_parent_attr || !str_inherits_asyncio_attr ||
        !str_inherits_context_attr ||
        !StackInfoType || !FiberExit ||
        !FiberError ||
        PyModule_AddObjectRef(m, "Fiber", (PyObject *)&FiberType) < 0 ||
        PyModule_AddObjectRef(m, "StackInfo", (PyObject *)StackInfoType) < 0 ||
        PyModule_AddObjectRef(m, "FiberExit", FiberExit) < 0 ||
        PyModule_AddObjectRef(m, "FiberError", FiberError) < 0)
        return -1;
    return 0;
}

