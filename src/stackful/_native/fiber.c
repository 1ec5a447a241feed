/* The Fiber type and the module stackful._native.
 *
 * A fiber is a Python callable running on its own C stack (stack.c) with its
 * own slice of the interpreter's thread state (interp_state.c), switched to
 * and from by one assembly routine (switch.h).  Each OS thread has a record
 * (sf_thread) with a root fiber standing for the thread's own stack.
 *
 * Invariants:
 * - th->current is the fiber whose frames are live in th->tstate; it holds a
 *   strong reference.  Every other started, unfinished fiber of the thread is
 *   SUSPENDED, its state saved in fiber->py and its registers on its stack.
 * - Between sf_pystate_save and the assembly switch nothing allocates or runs
 *   Python code (the GC must never see half-switched state).  Work that can
 *   run code (dropping the previous fiber's reference, releasing a finished
 *   fiber's stack) happens on the resumed side, in after_switch().
 * - A fiber only ever runs on the thread that created it.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <ucontext.h>

#include "fiber.h"
#include "interp_state.h"
#include "stack.h"
#include "switch.h"

#if defined(__SANITIZE_ADDRESS__)
#  define SF_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define SF_ASAN 1
#  endif
#endif
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

enum fiber_state { FIBER_NEW, FIBER_RUNNING, FIBER_SUSPENDED, FIBER_DEAD };
static const char *const state_names[] = {"new", "running", "suspended", "dead"};

/* What travels with a switch. */
enum transfer_kind {
    TRANSFER_VALUE,  /* value: what switch() returns; target(value) for a new fiber */
    TRANSFER_ARGS,   /* value: args tuple, kwargs: dict or NULL */
    TRANSFER_THROW,  /* value: the exception to raise */
};
typedef struct {
    PyObject *value;
    PyObject *kwargs;
    int kind;
} sf_transfer;

struct Fiber;

typedef struct sf_thread {
    Py_ssize_t refs;              /* fibers bound here, plus one while the thread lives */
    PyThreadState *tstate;        /* NULL once the thread has exited */
    unsigned long thread_id;
    struct Fiber *root;           /* strong */
    struct Fiber *current;        /* strong */
    sf_transfer transfer;         /* in flight from a switch to the resumed side */
    PyObject *const *call_top;    /* end of the running switch()'s arguments, if on the
                                     calling frame's value stack (else NULL) */
    struct Fiber *previous;       /* strong: the fiber we just left, dropped on landing */
    struct Fiber *finished;       /* borrowed: it just ended; its stack is released on landing */
    PyObject *pending_kills;      /* list of our fibers dropped on other threads */
    PyObject *switch_hook;        /* called on every landing (tracing), or NULL */
    PyObject *scheduler;          /* the runtime running on this thread, or NULL */
    int in_switch_hook;
    char *altstack;               /* signal stack we installed for overflow reports */
} sf_thread;

typedef struct Fiber {
    PyObject_HEAD
    sf_context ctx;               /* saved stack pointer while suspended */
    sf_thread *thread;
    struct Fiber *parent;         /* strong; NULL only for a root */
    PyObject *target;             /* cleared when the fiber ends */
    sf_transfer start;            /* target's arguments while it runs: visible to the GC */
    sf_stack *stack;              /* NULL for a root, and before start / after death */
    size_t stack_size;
    int state;
    int c_budget_override;        /* 0, or the budget a test asked for */
    sf_pystate py;
    PyObject *dict;
    PyObject *weakreflist;
    unsigned long long serial;    /* N of the default name "Fiber-N" */
    PyObject *name;               /* NULL until asked for, when it is the default */
    char cname[64];               /* the name, readable from a signal handler */
#ifdef SF_ASAN
    const void *asan_bottom;
    size_t asan_size;
#endif
} Fiber;

static PyTypeObject FiberType;
static PyObject *FiberExit;
static PyObject *FiberError;
static PyObject *thread_key;      /* key of our sentinel in the thread-state dict */
static size_t default_stack_size = SF_STACK_DEFAULT;
static unsigned long long fiber_counter;

/* The record of the OS thread running now; valid while its tstate is current. */
static _Thread_local sf_thread *tls_thread __attribute__((tls_model("initial-exec")));

#define IS_ROOT(f) ((f) == (f)->thread->root)

/* ------------------------------------------------------------------ */
/* Exceptions without 3.12's single-object API on 3.11.                */

static PyObject *fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb)
        PyException_SetTraceback(value, tb);
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static void restore_exception(PyObject *exc)  /* steals exc */
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *type = Py_NewRef((PyObject *)Py_TYPE(exc));
    PyErr_Restore(type, exc, PyException_GetTraceback(exc));
#endif
}

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
        restore_exception(t->value);
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
/* Threads                                                             */

static void thread_decref(sf_thread *th)
{
    if (--th->refs == 0)
        PyMem_RawFree(th);
}

/* The thread-state dict holds one of these; CPython drops it while the
 * thread's state is cleared, which is how we learn that the thread ended. */
typedef struct {
    PyObject_HEAD
    sf_thread *thread;
} ThreadSentinel;

static void discard_fiber(Fiber *f);

static void sentinel_dealloc(ThreadSentinel *self)
{
    sf_thread *th = self->thread;
    if (th) {
        th->tstate = NULL;
        if (tls_thread == th) {
            tls_thread = NULL;
            if (th->altstack) {
                stack_t off = {.ss_flags = SS_DISABLE};
                stack_t now;
                if (sigaltstack(NULL, &now) == 0 && now.ss_sp == th->altstack)
                    sigaltstack(&off, NULL);
            }
        }
        PyMem_RawFree(th->altstack);
        th->altstack = NULL;
        transfer_clear(&th->transfer);
        Py_CLEAR(th->switch_hook);
        Py_CLEAR(th->scheduler);
        Fiber *root = th->root, *current = th->current, *previous = th->previous;
        th->root = th->current = th->previous = NULL;
        if (root)
            root->state = FIBER_DEAD;
        PyObject *pending = th->pending_kills;
        th->pending_kills = NULL;
        if (pending) {
            /* Dropped elsewhere and never run again: free them here. */
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++)
                discard_fiber((Fiber *)PyList_GET_ITEM(pending, i));
            Py_DECREF(pending);
        }
        Py_XDECREF(previous);
        Py_XDECREF(current);
        Py_XDECREF(root);
        thread_decref(th);
    }
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject ThreadSentinelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native._ThreadSentinel",
    .tp_basicsize = sizeof(ThreadSentinel),
    .tp_dealloc = (destructor)sentinel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

static void install_altstack(sf_thread *th)
{
    /* The overflow report runs on an alternate signal stack, since the
     * fiber's own is exhausted.  Keep one already installed (faulthandler's). */
    stack_t now;
    if (sigaltstack(NULL, &now) != 0 || !(now.ss_flags & SS_DISABLE))
        return;
    size_t size = 64 * 1024;
    char *mem = PyMem_RawMalloc(size);
    if (!mem)
        return;
    stack_t ss = {.ss_sp = mem, .ss_size = size, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) == 0)
        th->altstack = mem;
    else
        PyMem_RawFree(mem);
}

static Fiber *fiber_alloc(PyTypeObject *type);

static sf_thread *thread_create(PyThreadState *ts)
{
    PyObject *dict = PyThreadState_GetDict();
    if (!dict) {
        PyErr_SetString(PyExc_RuntimeError, "stackful: no thread-state dict");
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(dict, thread_key);
    if (found) {
        sf_thread *th = ((ThreadSentinel *)found)->thread;
        tls_thread = th;
        return th;
    }
    if (PyErr_Occurred())
        return NULL;

    sf_thread *th = PyMem_RawCalloc(1, sizeof(*th));
    if (!th)
        return (sf_thread *)PyErr_NoMemory();
    th->refs = 1;
    th->tstate = ts;
    th->thread_id = PyThread_get_thread_ident();

    ThreadSentinel *sentinel = PyObject_New(ThreadSentinel, &ThreadSentinelType);
    if (!sentinel) {
        PyMem_RawFree(th);
        return NULL;
    }
    sentinel->thread = th;

    Fiber *root = fiber_alloc(&FiberType);
    if (!root) {
        Py_DECREF(sentinel);
        return NULL;
    }
    root->thread = th;
    th->refs++;
    root->state = FIBER_RUNNING;
    root->name = PyUnicode_FromString("root");
    strcpy(root->cname, "root");
    th->root = root;
    th->current = (Fiber *)Py_NewRef(root);
#ifdef SF_ASAN
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr;
        size_t size;
        pthread_attr_getstack(&attr, &addr, &size);
        root->asan_bottom = addr;
        root->asan_size = size;
        pthread_attr_destroy(&attr);
    }
#endif
    if (!root->name || PyDict_SetItem(dict, thread_key, (PyObject *)sentinel) < 0) {
        Py_DECREF(sentinel);  /* its dealloc drops the root and the record */
        return NULL;
    }
    Py_DECREF(sentinel);
    install_altstack(th);
    tls_thread = th;
    return th;
}

static inline sf_thread *current_thread(void)
{
    PyThreadState *ts = PyThreadState_Get();
    sf_thread *th = tls_thread;
    if (th && th->tstate == ts)
        return th;
    return thread_create(ts);
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

static void process_pending_kills(sf_thread *th);

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
        Py_CLEAR(finished->py.context);
    }
    Fiber *previous = th->previous;
    th->previous = NULL;
    return previous;
}

static PyObject *str_switch, *str_throw;

/* The thread's switch hook sees every landing, on the target's stack, as
 * hook(event, (origin, target)); if it raises, its exception replaces what
 * the switch carried.  Switches the hook itself makes are not reported. */
static void call_switch_hook(sf_thread *th, Fiber *origin, Fiber *target, sf_transfer *t)
{
    th->in_switch_hook = 1;
    PyObject *hook = Py_NewRef(th->switch_hook);
    PyObject *event = t->kind == TRANSFER_THROW ? str_throw : str_switch;
    PyObject *pending = t->kind == TRANSFER_THROW ? NULL : fetch_exception();
    PyObject *r = PyObject_CallFunction(hook, "O(OO)", event,
                                        origin ? (PyObject *)origin : Py_None, target);
    Py_DECREF(hook);
    th->in_switch_hook = 0;
    if (r) {
        Py_DECREF(r);
        if (pending)
            restore_exception(pending);
        return;
    }
    Py_XDECREF(pending);
    transfer_clear(t);
    t->kind = TRANSFER_THROW;
    t->value = fetch_exception();
}

/* Everything a fiber does on landing, in order: bookkeeping, the hook, then
 * dropping the fiber we came from. */
static inline void land(sf_thread *th, Fiber *self, sf_transfer *t)
{
    sf_pystate_landed(th->tstate);
    Fiber *previous = after_switch(th);
    if (th->switch_hook && !th->in_switch_hook)
        call_switch_hook(th, previous, self, t);
    Py_XDECREF(previous);
}

static void fiber_entry(void *value, void *arg);

/* Give a new fiber its stack and its first context.  May fail (MemoryError). */
static int fiber_prepare(Fiber *f)
{
    if (!f->target) {
        PyErr_SetString(FiberError, "cannot start a fiber whose __init__ was never called");
        return -1;
    }
    sf_stack *stack = sf_stack_acquire(f->stack_size);
    if (!stack)
        return -1;
    f->stack = stack;
    sf_pystate_init_fresh(&f->py, sf_stack_data_chunk(stack), SF_DATA_CHUNK_SIZE, stack->size);
    if (f->c_budget_override)
        sf_pystate_set_c_budget(&f->py, f->c_budget_override);
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
    if (target->state == FIBER_NEW && fiber_prepare(target) < 0) {
        transfer_clear(&th->transfer);
        th->call_top = NULL;
        return NULL;
    }
    Fiber *origin = th->current;
    PyThreadState *ts = th->tstate;

    th->previous = origin;                         /* takes over th->current's ref */
    th->current = (Fiber *)Py_NewRef(target);
    sf_pystate_save(&origin->py, ts, th->call_top);
    th->call_top = NULL;
    sf_pystate_restore(&target->py, ts);
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
        process_pending_kills(th);
    return transfer_result(&got);
}

static inline PyObject *switch_to(sf_thread *th, Fiber *target, sf_transfer t)
{
    th->transfer = t;
    return switch_prepared(th, target);
}

/* A switch or throw to the running fiber itself: no switch, but the hook
 * (greenlet's tracing) still sees it. */
static PyObject *switch_to_self(sf_thread *th, sf_transfer *t)
{
    if (th->switch_hook && !th->in_switch_hook)
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
    sf_pystate_save(&self->py, ts, NULL);

    if (parent->state == FIBER_NEW && fiber_prepare(parent) < 0) {
        /* Cannot start the parent: hand the MemoryError to the root. */
        transfer_clear(&t);
        t.kind = TRANSFER_THROW;
        t.value = fetch_exception();
        parent = th->root;
    }
    th->transfer = t;
    th->finished = self;
    th->previous = self;                           /* th->current's ref */
    th->current = (Fiber *)Py_NewRef(parent);
    sf_pystate_restore(&parent->py, ts);
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
        out.value = fetch_exception();
    } else {
        out.kind = TRANSFER_THROW;
        out.value = fetch_exception();
    }
    fiber_finish(self, th, out);
}

/* ------------------------------------------------------------------ */
/* Ending fibers nobody can reach                                      */

/* Free a suspended fiber without running it (its thread is gone, or it
 * refused to exit).  Its stack memory goes back to the pool. */
static void discard_fiber(Fiber *f)
{
    if (f->state != FIBER_SUSPENDED || !f->stack)
        return;
    f->state = FIBER_DEAD;
    sf_pystate_discard(&f->py, sf_stack_data_chunk(f->stack));
    sf_stack_release(f->stack);
    f->stack = NULL;
}

static PyObject *str_fiber_exit_attr, *str_dead_to_parent_attr;

/* The exception kill() and the GC throw: FiberExit, or the FiberExit subclass
 * a Fiber subclass names in __fiber_exit__ (greenlet's GreenletExit). */
static PyObject *exit_exception_type(Fiber *f)
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
                     .value = PyObject_CallNoArgs(exit_exception_type(f))};
    if (!t.value) {
        PyErr_WriteUnraisable((PyObject *)f);
    } else {
        PyObject *r = switch_to(th, f, t);
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
        discard_fiber(f);
    }
    Py_DECREF(f);
}

static void process_pending_kills(sf_thread *th)
{
    PyObject *pending = th->pending_kills;
    th->pending_kills = NULL;
    PyObject *exc = fetch_exception();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++) {
        Fiber *f = (Fiber *)PyList_GET_ITEM(pending, i);
        if (f->state == FIBER_SUSPENDED)
            kill_for_collection(th, f);
    }
    Py_DECREF(pending);
    if (exc)
        restore_exception(exc);
}

static void fiber_finalize(Fiber *self)
{
    if (self->state != FIBER_SUSPENDED || IS_ROOT(self))
        return;
    PyObject *exc = fetch_exception();
    sf_thread *th = self->thread;
    if (!th->tstate) {
        discard_fiber(self);
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
        restore_exception(exc);
}

/* ------------------------------------------------------------------ */
/* The type                                                            */

static Fiber *fiber_alloc(PyTypeObject *type)
{
    Fiber *f = (Fiber *)type->tp_alloc(type, 0);
    if (f)
        f->state = FIBER_NEW;
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

/* "Fiber-N" into cname with no allocation. */
static void set_default_cname(Fiber *f)
{
    char digits[24];
    int n = 0;
    unsigned long long v = f->serial;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(f->cname, "Fiber-", 6);
    for (int i = 0; i < n; i++)
        f->cname[6 + i] = digits[n - 1 - i];
    f->cname[6 + n] = 0;
}

static void set_cname(Fiber *f)
{
    const char *utf8 = f->name && PyUnicode_Check(f->name) ? PyUnicode_AsUTF8(f->name) : NULL;
    if (!utf8) {
        PyErr_Clear();
        utf8 = "?";
    }
    snprintf(f->cname, sizeof f->cname, "%s", utf8);
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
    Fiber *f = fiber_alloc(type);
    if (!f)
        return NULL;
    f->thread = th;
    th->refs++;
    f->stack_size = default_stack_size;
    f->parent = (Fiber *)Py_NewRef(th->current);
    return (PyObject *)f;
}

/* What Fiber(target, *, name, stack_size, parent) sets; each argument may be
 * NULL or None for "not given". */
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
        Py_CLEAR(self->name);
        self->serial = ++fiber_counter;
        set_default_cname(self);
    } else if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %.100s", Py_TYPE(name)->tp_name);
        return -1;
    } else {
        Py_XSETREF(self->name, Py_NewRef(name));
        set_cname(self);
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

/* Fiber(...) called on the base type itself, without building an args tuple
 * and a kwargs dict: spawning is a hot path.  Subclasses go through tp_new and
 * tp_init as usual. */
static PyObject *Fiber_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
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
    Py_VISIT(Py_TYPE(self));  /* a Python subclass's instances hold their type */
    Py_VISIT(self->target);
    Py_VISIT(self->start.value);
    Py_VISIT(self->start.kwargs);
    Py_VISIT(self->parent);
    Py_VISIT(self->dict);
    /* A suspended fiber owns its frames; the running one's are the thread's. */
    if (self->state == FIBER_SUSPENDED && self->thread && self->thread->tstate)
        return sf_pystate_traverse(&self->py, visit, arg);
    return 0;
}

static int Fiber_clear(Fiber *self)
{
    if (self->state == FIBER_SUSPENDED && !IS_ROOT(self) && self->thread &&
        self->thread != current_thread()) {
        /* Unreachable but not ours to touch: leave it for the owner thread. */
    } else if (self->state == FIBER_SUSPENDED && !IS_ROOT(self)) {
        discard_fiber(self);
    }
    Py_CLEAR(self->dict);
    if (self->state == FIBER_NEW || self->state == FIBER_DEAD) {
        /* A suspended fiber's own C frames still use these. */
        Py_CLEAR(self->target);
        transfer_clear(&self->start);
        Py_CLEAR(self->parent);
    }
    return 0;
}

static void Fiber_dealloc(Fiber *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return;  /* resurrected (handed to its thread to kill) */
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->state == FIBER_SUSPENDED && !IS_ROOT(self))
        discard_fiber(self);
    if (self->stack) {
        sf_stack_release(self->stack);
        self->stack = NULL;
    }
    Py_CLEAR(self->py.context);
    Py_CLEAR(self->py.exc_state.exc_value);
    Py_CLEAR(self->target);
    transfer_clear(&self->start);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->name);
    Py_CLEAR(self->dict);
    if (self->thread)
        thread_decref(self->thread);
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

PyDoc_STRVAR(switch_doc,
"switch(*args, **kwargs)\n--\n\n"
"Suspend the running fiber and run this one.\n\n"
"The first switch calls target(*args, **kwargs) on the fiber's own stack.\n"
"Later switches resume it: its pending switch() returns a single argument\n"
"as itself, none as (), several as a tuple, keywords alone as a dict, and\n"
"both as (args, kwargs).\n"
"Returns what is sent back when this fiber's caller is resumed, including\n"
"the return value of a fiber whose parent it is.");

static PyObject *Fiber_switch(Fiber *self, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames)
{
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
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
    /* Called from Python code, the arguments sit on top of the caller's value
     * stack: where they end is where its live stack ends (GC, discard). */
    if (args)
        th->call_top = args + PyVectorcall_NARGS(nargsf) + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    return switch_prepared(th, target);
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
        PyErr_Format(PyExc_TypeError,
                     "exceptions must be classes or instances deriving from BaseException, "
                     "not %.100s", Py_TYPE(typ)->tp_name);
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
    if (self == th->current)
        return switch_to_self(th, &t);
    return switch_to(th, self, t);
}

PyObject **sf_thread_scheduler_slot(void)
{
    sf_thread *th = current_thread();
    return th ? &th->scheduler : NULL;
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
    PyObject *exc = make_exception(nargs > 0 ? args[0] : exit_exception_type(self),
                                   nargs > 1 ? args[1] : NULL,
                                   nargs > 2 ? args[2] : NULL);
    if (!exc)
        return NULL;
    return throw_into(th, target, exc);
}

PyDoc_STRVAR(kill_doc,
"kill()\n--\n\n"
"End this fiber: throw FiberExit in and let it unwind (finally blocks run),\n"
"then come back here.  A fiber that never started is just marked dead; a dead\n"
"one is left alone.  Returns None once it is dead, or what it sent back if it\n"
"caught FiberExit and switched here instead.  An exception other than\n"
"FiberExit that escapes it is raised here.");

static PyObject *Fiber_kill(Fiber *self, PyObject *Py_UNUSED(ignored))
{
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
    PyObject *exc = PyObject_CallNoArgs(exit_exception_type(self));
    if (!exc)
        return NULL;
    if (self != th->current) {
        Py_SETREF(self->parent, (Fiber *)Py_NewRef(th->current));
    }
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

static PyMethodDef Fiber_methods[] = {
    {"switch", (PyCFunction)(void (*)(void))Fiber_switch, METH_FASTCALL | METH_KEYWORDS, switch_doc},
    {"throw", (PyCFunction)(void (*)(void))Fiber_throw, METH_FASTCALL, throw_doc},
    {"kill", (PyCFunction)Fiber_kill, METH_NOARGS, kill_doc},
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
    Py_XSETREF(self->name, Py_NewRef(value));
    set_cname(self);
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
    PyObject *ctx = value == Py_None ? NULL : Py_NewRef(value);
    if (self == th->current) {
        Py_XSETREF(th->tstate->context, ctx);
        th->tstate->context_ver++;
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
     "the contextvars.Context the fiber runs in (None until it needs one)", NULL},
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

static PyTypeObject FiberType = {
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
    .tp_finalize = (destructor)fiber_finalize,
};

/* ------------------------------------------------------------------ */
/* Stack overflow reports                                              */

static struct sigaction previous_segv, previous_bus;

static void write_str(const char *s) { (void)!write(2, s, strlen(s)); }

static void write_num(size_t n)
{
    char buf[32];
    int i = sizeof buf;
    buf[--i] = 0;
    do {
        buf[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n && i > 0);
    write_str(buf + i);
}

static void on_fault(int sig, siginfo_t *info, void *ucontext)
{
    sf_thread *th = tls_thread;
    Fiber *f = th ? th->current : NULL;
    if (f && f->stack) {
        char *addr = info->si_addr;
        char *base = sf_stack_base(f->stack);
        uintptr_t sp = 0;
        ucontext_t *uc = ucontext;
#if defined(__x86_64__)
        sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
        sp = (uintptr_t)uc->uc_mcontext.sp;
#endif
        /* A fault in the guard, or just below it by a frame larger than the
         * guard, or with the stack pointer already past the base. */
        int in_guard = addr >= f->stack->map - 64 * 1024 && addr < base;
        int sp_below = sp && sp < (uintptr_t)base && sp >= (uintptr_t)f->stack->map - 64 * 1024;
        if (in_guard || sp_below) {
            write_str("stackful: fiber '");
            write_str(f->cname);
            write_str("' overflowed its ");
            write_num(f->stack->size / 1024);
            write_str(" KiB stack (raise stack_size, or lower sys.setrecursionlimit)\n");
            signal(SIGABRT, SIG_DFL);
            abort();
        }
    }
    /* Not ours: put the previous handler back and let the fault repeat. */
    sigaction(sig, sig == SIGSEGV ? &previous_segv : &previous_bus, NULL);
}

static void install_fault_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
    sigaction(SIGBUS, &sa, &previous_bus);
}

/* ------------------------------------------------------------------ */
/* Module functions                                                    */

PyDoc_STRVAR(current_doc, "current()\n--\n\nThe fiber running now (a thread's root fiber outside any other).");

static PyObject *mod_current(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    sf_thread *th = current_thread();
    return th ? Py_NewRef((PyObject *)th->current) : NULL;
}

PyDoc_STRVAR(get_default_stack_size_doc,
"get_default_stack_size()\n--\n\nThe stack_size new fibers get when they name none.");

static PyObject *mod_get_default_stack_size(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyLong_FromSize_t(default_stack_size);
}

PyDoc_STRVAR(set_default_stack_size_doc,
"set_default_stack_size(size)\n--\n\n"
"Set the stack_size of fibers created later without one (rounded up to\n"
"whole pages; ValueError below MIN_STACK_SIZE).");

static PyObject *mod_set_default_stack_size(PyObject *m, PyObject *arg)
{
    (void)m;
    long long requested = PyLong_AsLongLong(arg);
    if (requested == -1 && PyErr_Occurred())
        return NULL;
    size_t size;
    if (sf_stack_normalize_size(requested, &size) < 0)
        return NULL;
    default_stack_size = size;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stack_pool_doc,
"stack_pool(limit=None)\n--\n\n"
"Report the pool of finished fibers' stacks kept for reuse, after setting\n"
"its limit (a count of stacks, 1024 by default) if one is given: a dict with\n"
"'pooled' (stacks kept with their pages: reuse is free), 'limit', 'cold'\n"
"(stacks past the limit whose pages went back to the system but whose\n"
"mapping is kept, up to 16384: reuse costs a page fault or two),\n"
"'mapped_bytes' (live and pooled stacks) and 'guard_method'.");

static PyObject *mod_stack_pool(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "stack_pool() takes at most one argument");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        Py_ssize_t limit = PyLong_AsSsize_t(args[0]);
        if (limit == -1 && PyErr_Occurred())
            return NULL;
        if (limit < 0) {
            PyErr_SetString(PyExc_ValueError, "the pool limit cannot be negative");
            return NULL;
        }
        sf_stack_pool_set_limit((size_t)limit);
    }
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:s}", "pooled", (Py_ssize_t)sf_stack_pool_count(),
                         "limit", (Py_ssize_t)sf_stack_pool_limit(), "cold",
                         (Py_ssize_t)sf_stack_pool_cold_count(), "mapped_bytes",
                         (Py_ssize_t)sf_stack_mapped_bytes(), "guard_method",
                         sf_stack_guard_method());
}

PyDoc_STRVAR(clear_stack_pool_doc,
"clear_stack_pool()\n--\n\nUnmap every pooled stack; returns how many.");

static PyObject *mod_clear_stack_pool(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyLong_FromSize_t(sf_stack_pool_clear());
}

PyDoc_STRVAR(stack_pointer_doc,
"stack_pointer()\n--\n\nThe C stack pointer of the caller, roughly (for demos and tests).");

static PyObject *mod_stack_pointer(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyLong_FromVoidPtr(__builtin_frame_address(0));
}

PyDoc_STRVAR(switch_frame_layout_doc,
"switch_frame_layout()\n--\n\n"
"The assembly switch's saved-frame layout on this machine: a dict with its\n"
"size, the offsets (from the saved stack pointer) of the resume address and\n"
"of the registers that carry a fresh context's entry function and argument,\n"
"and how far below a stack's top a fresh context's stack pointer starts.");

static PyObject *mod_switch_frame_layout(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
#if defined(__x86_64__)
    const char *arch = "x86_64 System V";
#else
    const char *arch = "aarch64 AAPCS64";
#endif
    return Py_BuildValue("{s:s,s:i,s:i,s:i,s:i,s:i}", "abi", arch, "frame_size",
                         SF_SWITCH_FRAME_SIZE, "return_address", SF_FRAME_OFFSET_RETURN,
                         "entry", SF_FRAME_OFFSET_ENTRY, "arg", SF_FRAME_OFFSET_ARG,
                         "fresh_sp_below_top", SF_FRESH_SP_BELOW_TOP);
}

PyDoc_STRVAR(set_switch_hook_doc,
"set_switch_hook(hook)\n--\n\n"
"Install hook(event, (origin, target)) for this thread, or remove it with None;\n"
"returns the previous hook.  It runs on the target's stack after every switch\n"
"lands (event 'switch' or 'throw'), fibers' first starts, ends and GC kills\n"
"included.  An exception it raises replaces what the switch carried.\n"
"Switches the hook makes itself are not reported.  greenlet.settrace() is\n"
"built on it.");

static PyObject *mod_set_switch_hook(PyObject *m, PyObject *hook)
{
    (void)m;
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "the switch hook must be callable or None");
        return NULL;
    }
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    PyObject *previous = th->switch_hook ? th->switch_hook : Py_NewRef(Py_None);
    th->switch_hook = hook == Py_None ? NULL : Py_NewRef(hook);
    return previous;
}

PyDoc_STRVAR(get_switch_hook_doc,
"get_switch_hook()\n--\n\nThis thread's switch hook, or None.");

static PyObject *mod_get_switch_hook(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    return Py_NewRef(th->switch_hook ? th->switch_hook : Py_None);
}

PyDoc_STRVAR(adopt_root_doc,
"adopt_root(cls)\n--\n\n"
"Make this thread's root fiber an instance of `cls` and return it, so that a\n"
"compatibility layer's current() is one of its own (greenlet's main\n"
"greenlet).  `cls` must be a Python subclass of Fiber adding no storage of its\n"
"own (no __slots__), or Fiber itself to undo it.");

static PyObject *mod_adopt_root(PyObject *m, PyObject *arg)
{
    (void)m;
    sf_thread *th = current_thread();
    if (!th)
        return NULL;
    if (!PyType_Check(arg) || !PyType_IsSubtype((PyTypeObject *)arg, &FiberType)) {
        PyErr_SetString(PyExc_TypeError, "adopt_root() needs a subclass of Fiber");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)arg;
    if (cls != &FiberType &&
        (!(cls->tp_flags & Py_TPFLAGS_HEAPTYPE) || cls->tp_basicsize != FiberType.tp_basicsize ||
        cls->tp_itemsize || cls->tp_dictoffset != FiberType.tp_dictoffset ||
        cls->tp_weaklistoffset != FiberType.tp_weaklistoffset)) {
        PyErr_Format(PyExc_TypeError,
                     "adopt_root(): %.100s must be a Python subclass of Fiber without "
                     "storage of its own", cls->tp_name);
        return NULL;
    }
    Fiber *root = th->root;
    PyTypeObject *old = Py_TYPE(root);
    if (old != cls) {
        Py_SET_TYPE(root, cls);
        if (cls->tp_flags & Py_TPFLAGS_HEAPTYPE)
            Py_INCREF(cls);
        if (old->tp_flags & Py_TPFLAGS_HEAPTYPE)
            Py_DECREF(old);
    }
    return Py_NewRef((PyObject *)root);
}

PyDoc_STRVAR(set_recursion_budget_doc,
"_set_recursion_budget(fiber, levels)\n--\n\n"
"Testing only: give a fiber that has not started a C recursion budget of\n"
"`levels`, bigger than its stack can hold, so that the guard page is what\n"
"stops a runaway recursion.");

static PyObject *mod_set_recursion_budget(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *fiber;
    int levels;
    if (!PyArg_ParseTuple(args, "O!i:_set_recursion_budget", &FiberType, &fiber, &levels))
        return NULL;
    if (((Fiber *)fiber)->state != FIBER_NEW || levels < 1) {
        PyErr_SetString(PyExc_ValueError, "needs a fiber that has not started and levels >= 1");
        return NULL;
    }
    ((Fiber *)fiber)->c_budget_override = levels;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_switch_hook", mod_set_switch_hook, METH_O, set_switch_hook_doc},
    {"get_switch_hook", mod_get_switch_hook, METH_NOARGS, get_switch_hook_doc},
    {"adopt_root", mod_adopt_root, METH_O, adopt_root_doc},
    {"_set_recursion_budget", mod_set_recursion_budget, METH_VARARGS, set_recursion_budget_doc},
    {"current", mod_current, METH_NOARGS, current_doc},
    {"get_default_stack_size", mod_get_default_stack_size, METH_NOARGS, get_default_stack_size_doc},
    {"set_default_stack_size", mod_set_default_stack_size, METH_O, set_default_stack_size_doc},
    {"stack_pool", (PyCFunction)(void (*)(void))mod_stack_pool, METH_FASTCALL, stack_pool_doc},
    {"clear_stack_pool", mod_clear_stack_pool, METH_NOARGS, clear_stack_pool_doc},
    {"stack_pointer", mod_stack_pointer, METH_NOARGS, stack_pointer_doc},
    {"switch_frame_layout", mod_switch_frame_layout, METH_NOARGS, switch_frame_layout_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "stackful._native",
    .m_doc = "The native core of stackful: fibers on their own C stacks.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&FiberType) < 0 || PyType_Ready(&ThreadSentinelType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    StackInfoType = PyStructSequence_NewType(&stack_info_desc);
    FiberExit = PyErr_NewExceptionWithDoc(
        "stackful.FiberExit",
        "Thrown into a fiber to make it exit (kill(), garbage collection).\n"
        "A fiber ended by it returns normally.", PyExc_BaseException, NULL);
    FiberError = PyErr_NewExceptionWithDoc(
        "stackful.FiberError", "Misuse of a fiber (switching to a finished one, or to another "
        "thread's).", PyExc_RuntimeError, NULL);
    thread_key = PyUnicode_InternFromString("stackful._native.thread");
    str_switch = PyUnicode_InternFromString("switch");
    str_throw = PyUnicode_InternFromString("throw");
    str_fiber_exit_attr = PyUnicode_InternFromString("__fiber_exit__");
    str_dead_to_parent_attr = PyUnicode_InternFromString("__fiber_dead_switch_to_parent__");
    if (!str_switch || !str_throw || !str_fiber_exit_attr || !str_dead_to_parent_attr ||
        !StackInfoType || !FiberExit || !FiberError || !thread_key ||
        PyModule_AddObjectRef(m, "Fiber", (PyObject *)&FiberType) < 0 ||
        PyModule_AddObjectRef(m, "StackInfo", (PyObject *)StackInfoType) < 0 ||
        PyModule_AddObjectRef(m, "FiberExit", FiberExit) < 0 ||
        PyModule_AddObjectRef(m, "FiberError", FiberError) < 0 ||
        PyModule_AddIntConstant(m, "MIN_STACK_SIZE", SF_STACK_MIN) < 0 ||
        PyModule_AddIntConstant(m, "DEFAULT_STACK_SIZE", SF_STACK_DEFAULT) < 0 ||
        PyModule_AddIntConstant(m, "DATA_CHUNK_SIZE", SF_DATA_CHUNK_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (sf_scheduler_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    install_fault_handler();
    return m;
}
