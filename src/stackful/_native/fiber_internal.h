/* The records the native core's files share: a Fiber, the per-thread record,
 * and what travels with a switch.  Only the files of the fiber core include
 * this (fiber.c, thread.c, reclaim.c, overflow.c, module.c); the scheduler
 * sees fiber.h.
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
#ifndef STACKFUL_FIBER_INTERNAL_H
#define STACKFUL_FIBER_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

enum fiber_state { FIBER_NEW, FIBER_RUNNING, FIBER_SUSPENDED, FIBER_DEAD };

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
    sf_pythread pythread;         /* thread-level interpreter state swapped per fiber */
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
    int face_pinned;              /* set while it runs (and for good on a root): a running
                                     greenlet is never freed, as greenlet's thread state
                                     holds its current one */
    PyObject *face;               /* the greenlet standing for it (greenlet_type.c), or NULL.
                                     Borrowed, except while face_pinned: then strong */
    int c_budget_override;        /* 0, or the budget a test asked for */
    int refused_exit;             /* it caught FiberExit and switched away when collected */
    int inherits_asyncio;         /* its class sets __fiber_inherits_asyncio__: it starts
                                     with the asyncio state of the fiber that starts it */
    int inherits_context;         /* __fiber_inherits_context__: it starts in the context
                                     object of the fiber that starts it (unless given one) */
    sf_pystate py;
    PyObject *dict;
    PyObject *weakreflist;
    unsigned long long serial;    /* N of the default name "Fiber-N" */
    PyObject *name;               /* NULL until asked for, when it is the default */
    const char *cname;            /* the name's UTF-8 (inside `name`, or static), readable
                                     from a signal handler; NULL: the default "Fiber-N" */
    struct Fiber *live_prev;      /* borrowed links of the registry of fibers not yet */
    struct Fiber *live_next;      /* freed, which dumps walk (registry.c) */
#ifdef SF_ASAN
    const void *asan_bottom;
    size_t asan_size;
#endif
} Fiber;

extern PyTypeObject FiberType;
extern PyObject *FiberExit;
extern PyObject *FiberError;
extern size_t sf_default_stack_size;  /* what Fiber() gets without stack_size */

#define IS_ROOT(f) ((f) == (f)->thread->root)

/* ---- thread.c: the per-thread records ---- */

/* The record of the OS thread running now; valid while its tstate is current.
 * initial-exec: one load through the GOT plus the thread pointer (fs on
 * x86-64, tpidr_el0 on AArch64), no __tls_get_addr or TLS descriptor call on
 * the switch path, and safe to read in the overflow handler; glibc's static
 * TLS surplus holds it in a dlopen'ed module on both (checked on arm64 3.11).
 * A TLS address the compiler keeps across sf_switch stays right because a
 * fiber never changes threads (switching to another thread's fiber raises). */
extern _Thread_local sf_thread *sf_tls_thread __attribute__((tls_model("initial-exec")));

/* Find or make the record of the thread whose state is `ts`.  NULL with an
 * exception set on failure. */
sf_thread *sf_thread_create(PyThreadState *ts);
void sf_thread_decref(sf_thread *th);
int sf_thread_init_types(void);

static inline sf_thread *current_thread(void)
{
    PyThreadState *ts = PyThreadState_Get();
    sf_thread *th = sf_tls_thread;
    if (th && th->tstate == ts)
        return th;
    return sf_thread_create(ts);
}

/* ---- fiber.c: the type and the switch ---- */

Fiber *sf_fiber_alloc(PyTypeObject *type);
/* Leave the running fiber for `target` (same thread, not dead, not running),
 * carrying `t`.  Returns what the running fiber is resumed with: a new
 * reference, or NULL with an exception set. */
PyObject *sf_switch_to(sf_thread *th, Fiber *target, sf_transfer t);
/* Ready the Fiber type and its exceptions, and add them to the module. */
int sf_fiber_init_type(PyObject *module);

/* For greenlet_type.c: make a fiber of `type` (a Fiber subclass) parented to
 * the running fiber, with `target` (may be NULL: given before the start). */
Fiber *sf_fiber_create(PyTypeObject *type, PyObject *target);
/* Fiber.switch on `f` from the running thread `th`, and Fiber.throw, as if
 * called as methods. */
PyObject *sf_fiber_switch_call(sf_thread *th, Fiber *f, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames);
PyObject *sf_fiber_throw_call(Fiber *f, PyObject *const *args, Py_ssize_t nargs);
/* Fiber.parent's setter (TypeError / ValueError as there). */
int sf_fiber_set_parent(Fiber *f, PyObject *parent);
/* Give `f`, which has not started, a parent of another thread, and move it to
 * that thread (greenlet allows it: gevent's thread pool starts its workers so).
 * ValueError if it has started, or for a cycle. */
int sf_fiber_reparent_new(Fiber *f, Fiber *parent);
/* Set by greenlet_type.c: give a fiber that has no target yet the one its
 * greenlet names (run code to find it); -1 with an exception set. */
extern int (*sf_fiber_resolve_target)(Fiber *);
/* Pin `f`'s face (it runs now); `face` must be f->face. */
static inline void sf_fiber_pin_face(Fiber *f)
{
    if (f->face && !f->face_pinned) {
        Py_INCREF(f->face);
        f->face_pinned = 1;
    }
}

/* ---- reclaim.c: fibers nobody can reach ---- */

/* Why a suspended fiber was freed without unwinding (discarded_fibers()). */
enum {
    SF_DISCARD_THREAD_EXITED,
    SF_DISCARD_IGNORED_EXIT,
    SF_DISCARD_AT_SHUTDOWN,
    SF_DISCARD_FINALIZER_SKIPPED,
    SF_DISCARD_CAUSES
};

/* tp_finalize: kill a suspended fiber (FiberExit thrown in, finally blocks
 * run), on its own thread; one dropped on another thread is queued there. */
void sf_fiber_finalize(Fiber *self);
/* Make a Fiber subclass's finalizer one that also kills (see reclaim.c). */
void sf_adopt_finalizer(PyTypeObject *type);
/* Kill the fibers other threads dropped for us (their finalizers queued them). */
void sf_process_pending_kills(sf_thread *th);
/* Why `f`, suspended and being freed, could not be unwound. */
int sf_discard_cause(const Fiber *f);
/* Free a suspended fiber without running it, counting `cause`; `quiet`: no
 * warning and no Python-level hook (its thread's state is being torn down). */
void sf_discard_fiber(Fiber *f, int cause, int quiet);
/* The exception kill() and the GC throw into `f` (borrowed). */
PyObject *sf_exit_exception_type(Fiber *f);
/* Report the exception that escaped a kill nobody waits for (unraisable;
 * Ctrl-C is raised again instead of lost). */
void sf_report_escaped(PyObject *where);
/* PyErr_Clear(), except that Ctrl-C is raised again later, never lost. */
void sf_clear_error(void);
int sf_reclaim_init(PyObject *module);

/* ---- registry.c: every fiber not yet freed, for dumps and statistics ---- */

void sf_registry_add(Fiber *f);
void sf_registry_remove(Fiber *f);
int sf_registry_init(PyObject *module);

/* ---- overflow.c: the stack overflow report ---- */

/* Give this OS thread a signal stack for the report, if it has none. */
void sf_overflow_prepare_thread(void);
int sf_overflow_init(void);

#endif
