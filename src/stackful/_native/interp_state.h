/* The interpreter's per-thread state that belongs to a fiber.
 *
 * CPython keeps the running code's position in the PyThreadState: the
 * innermost frame, the data stack that holds 3.11+ frames, recursion
 * counters or (3.14+) the C stack's bounds, the handled-exception stack, the
 * contextvars context, the trash-can state, asyncio's running loop and task
 * and the async generator hooks.
 * A fiber switch must swap all of it, or CPython sees the wrong frames.
 * Which fields exist differs by version; interp_state.c holds every
 * PY_VERSION_HEX branch of the project, so supporting a new CPython means
 * reading that one file.
 */
#ifndef STACKFUL_INTERP_STATE_H
#define STACKFUL_INTERP_STATE_H

#include <Python.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x03100000
#  error "stackful supports CPython 3.11 to 3.15"
#endif
#ifdef Py_GIL_DISABLED
#  error "stackful does not support free-threaded CPython builds"
#endif

typedef struct sf_pystate {
#if PY_VERSION_HEX < 0x030D0000
    _PyCFrame *cframe;            /* innermost C-level frame record */
    _PyCFrame base_cframe;        /* a fresh fiber's bottom: no Python frame below */
#else
    struct _PyInterpreterFrame *current_frame;
#endif
    int py_depth;                 /* Python recursion depth (limit - remaining) */
#if PY_VERSION_HEX < 0x030E0000
    int c_budget;                 /* recursion levels this fiber's C stack can take */
#endif
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000
    int c_remaining;              /* C recursion budget left */
#endif
#if PY_VERSION_HEX >= 0x030E0000
    uintptr_t c_stack_top;        /* the C stack this state runs on, as CPython */
    uintptr_t c_stack_soft_limit; /* checks it: RecursionError below the soft */
    uintptr_t c_stack_hard_limit; /* limit, a fatal error below the hard one */
    PyObject *current_executor;   /* the JIT's running trace, borrowed */
#endif
#if PY_VERSION_HEX >= 0x030F0000
    struct _PyInterpreterFrame *base_frame;  /* the sentinel its frame chain ends at
                                                (ts->base_frame while it runs) */
    void *own_base_frame[12];     /* a fresh fiber's sentinel: a copy of its thread's */
    struct _PyExitData *jit_exit; /* the JIT's pending side exit */
    int generator_return_kind;    /* yield or return, read after an eval returns */
#endif
#if PY_VERSION_HEX >= 0x030C0000
    uintptr_t instrumentation_version;  /* the interpreter's when the fiber left: its
                                           frames' code was instrumented up to it */
    int instrumentation_stale;    /* restored behind the interpreter's version: its
                                     frames' code is instrumented on landing */
#endif
    _PyStackChunk *datastack_chunk;
    PyObject **datastack_top;
    PyObject **datastack_limit;
    _PyErr_StackItem *exc_info;   /* top of the handled-exception stack */
    _PyErr_StackItem exc_state;   /* a fiber's own bottom item, so exc_info is per fiber */
#if PY_VERSION_HEX < 0x030E0000
    int top_live_slots;           /* localsplus slots of the innermost frame known live
                                     while suspended, or -1 (see sf_pystate_save) */
#endif
    PyObject *context;            /* owned while suspended; the thread owns it while running */
#if PY_VERSION_HEX < 0x030D0000
    int trash_delete_nesting;     /* depth of this fiber's own C stack of deallocations */
#endif
    int tracing;                  /* trace/monitoring callback depth: per fiber, so a fiber
                                     suspended in a trace function leaves others traced */
    int tracing_what;             /* the event being traced, with it */
    PyObject **repr_items;        /* this fiber's repr() guard entries while suspended */
    Py_ssize_t repr_size, repr_allocated;
    PyObject *entry_context;      /* its base context (strong), or NULL: the one it started
                                     in or was given later, outside any Context.run; where
                                     the contexts it entered with Context.run end */
    /* What asyncio keeps per thread, per fiber (owned while suspended, like context):
     * so each fiber may run an event loop of its own. */
    PyObject *asyncio_running_loop;  /* NULL: none running */
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *asyncio_running_task;
#endif
    PyObject *asyncgen_firstiter;    /* sys.set_asyncgen_hooks(), which loops set */
    PyObject *asyncgen_finalizer;
    int coroutine_origin_depth;      /* sys.set_coroutine_origin_tracking_depth() */
} sf_pystate;

/* Thread-level state swapped per fiber although CPython keeps it outside the
 * thread state: the list behind Py_ReprEnter (the repr() recursion guard),
 * which lives in the thread-state dict.  One per thread record. */
typedef struct sf_pythread {
    PyListObject *repr_list;      /* strong; NULL if it could not be made */
#if PY_VERSION_HEX < 0x030D0000
    /* 3.11/3.12 keep asyncio's running loop in the thread-state dict: its entry
     * as last seen (borrowed, the dict owns it), valid while the dict's version
     * is unchanged. */
    PyObject *loop_dict;
    PyObject *loop_entry;
    uint64_t loop_dict_version;
#endif
} sf_pythread;

/* Find or make this thread's repr guard list (the running thread's dict). */
void sf_pythread_init(sf_pythread *t);
void sf_pythread_clear(sf_pythread *t);

/* Move the running state out of `ts` into `s` / from `s` into `ts`.  They
 * allocate nothing and run no Python code, so the GC cannot run in between.
 * A restore always comes right after a save: the two halves of one switch.
 *
 * `call_top`, if not NULL, is the end of the arguments of the call the
 * innermost Python frame is suspended in (switch(), throw() or kill()
 * called straight from Python code receive their arguments in place on that
 * frame's value stack).
 * Before 3.14 a frame in a call does not record its stack pointer (CPython
 * keeps it in a C local of the eval loop); knowing it lets the GC see, and a
 * discard release, the call's operands, not just the frame's locals.  3.14+
 * frames record it themselves. */
void sf_pystate_save(sf_pystate *s, PyThreadState *ts, sf_pythread *t,
                     PyObject *const *call_top);
void sf_pystate_restore(sf_pystate *s, PyThreadState *ts, sf_pythread *t);

/* Prepare the state of a fiber that has not run (on its own thread): no
 * frames, an empty exception stack, no running asyncio loop, the context set
 * beforehand if any, `chunk` (chunk_size bytes) as its first data-stack chunk,
 * and recursion limits that fit its C stack [stack_base, stack_base + size). */
void sf_pystate_init_fresh(sf_pystate *s, void *chunk, size_t chunk_size,
                           void *stack_base, size_t stack_size);

/* A fresh state `s` starts inside the asyncio task running on `ts` (new
 * references to its running loop and task, async generator hooks and
 * coroutine origin tracking), as code the task calls directly would be. */
void sf_pystate_inherit_asyncio(sf_pystate *s, PyThreadState *ts, sf_pythread *t);

/* Let a fresh state recurse through C as if its stack held `levels` levels
 * (tests of the guard page: more than the stack can hold). */
void sf_pystate_set_c_budget(sf_pystate *s, int levels);

/* After a fiber's last frame returned (it is still the running one):
 * free the data-stack chunks CPython added on top of the fiber's own. */
void sf_pystate_release_extra_chunks(PyThreadState *ts, void *own_chunk);

/* Visit what the suspended frames of `s` own (for tp_traverse). */
int sf_pystate_traverse(const sf_pystate *s, visitproc visit, void *arg);

/* A new reference to the innermost Python frame of suspended `s`, or None. */
PyObject *sf_pystate_top_frame(const sf_pystate *s, PyThreadState *ts);

/* Forget a suspended state without running it (its thread is gone, or it
 * ignored FiberExit): drop the references its frames own, hand frame objects
 * that others still hold a copy of their frame, and undo what its frames had
 * entered that outlives them: generators and coroutines it was running are
 * closed (they could never resume), contexts it entered with Context.run are
 * exited, its repr() guard entries released.  Afterwards nothing points into
 * the fiber's stack but the collector, if the fiber was inside a collection
 * (see sf_gc_collection_mark).  References held only by a frame's value stack
 * (unknown while it is suspended in a call) are leaked, never freed twice. */
void sf_pystate_discard(sf_pystate *s, void *own_chunk);

/* Is `ctx` (a contextvars.Context, or NULL) entered by a Context.run() call? */
int sf_context_entered(PyObject *ctx);

/* A started fiber was given `ctx` (or NULL) as its context, outside any
 * Context.run: that is now where the contexts it enters end. */
void sf_pystate_set_base_context(sf_pystate *s, PyObject *ctx);

/* Drop what the saved state of a fiber that finished (or died unrun) still
 * holds: context, exception state, repr entries, asyncio's state. */
void sf_pystate_release(sf_pystate *s);

/* Make `ctx` (a new reference, or NULL) the running fiber's context, as
 * Context.run does: ContextVar caches are invalidated and (3.14+) context
 * watchers told. */
void sf_pystate_set_current_context(PyThreadState *ts, PyObject *ctx);

/* Out of line parts of the landing (rare paths).  The rare part of
 * sf_pystate_landed is one call, so that the landing stays small enough to
 * be inlined into the switch. */
void sf_pystate_context_switched(PyThreadState *ts);
void sf_pystate_landed_rare(PyThreadState *ts, sf_pystate *s);

/* Called on every landing, right after the switch (hot path), with `origin`
 * the state just saved: nonzero if the landing changed the current context
 * (call sf_pystate_context_switched() once the landing's bookkeeping is done:
 * context watchers may run any code).  Runs nothing. */
static inline int sf_pystate_context_changed(PyThreadState *ts, const sf_pystate *origin)
{
#if PY_VERSION_HEX >= 0x030E0000
    return ts->context != origin->context;
#else
    (void)ts;
    (void)origin;
    return 0;
#endif
}

/* Called on every landing once the switch's bookkeeping is done (hot path),
 * on the stack of `s`, the state just restored: what may free objects, and
 * so run code, which must not happen before the switch.
 *
 * 3.12+: the code of its frames is brought up to the interpreter's
 * instrumentation if it moved while the fiber was suspended.
 *
 * The trash can's list of deferred deallocations stays with the thread:
 * 3.13 defers every container deallocation while fewer than
 * Py_TRASHCAN_HEADROOM C recursion units remain and frees the deferred ones
 * only at a later deallocation with more than twice that left; 3.14+ does
 * the same by stack margins.  A fiber whose stack is small so hands its
 * garbage to the thread's list: free it as soon as a fiber with room runs. */
static inline void sf_pystate_landed(PyThreadState *ts, sf_pystate *s)
{
#if PY_VERSION_HEX >= 0x030E0000
    if (__builtin_expect(s->instrumentation_stale | (ts->delete_later != NULL), 0))
        sf_pystate_landed_rare(ts, s);
#elif PY_VERSION_HEX >= 0x030C0000
    if (__builtin_expect(s->instrumentation_stale, 0))
        sf_pystate_landed_rare(ts, s);
#  if PY_VERSION_HEX >= 0x030D0000
    if (ts->delete_later && ts->c_recursion_remaining > 2 * Py_TRASHCAN_HEADROOM)
        _PyTrash_thread_destroy_chain(ts);
#  endif
#else
    (void)ts;
    (void)s;
#endif
}

/* The value the interpreter uses for "is the interpreter shutting down". */
int sf_interpreter_finalizing(void);

/* The garbage collection running in this interpreter, read from the flag
 * the interpreter itself sets when one starts and clears when it ends:
 * 0 none, 1 one that nobody has marked yet, or the mark (>= 2) left on it
 * by sf_gc_mark_collection.  A mark lasts exactly as long as the collection
 * (the interpreter writes 1 when the next one starts), and CPython only tests
 * the flag for zero.  Marking 0 forces "no collection is running": for one
 * whose C frames were on a fiber freed without unwinding, which can never
 * finish, so that collecting is possible again. */
int sf_gc_collection_mark(void);
void sf_gc_mark_collection(int mark);

/* 3.11 counts a fiber's C budget in the thread's recursion counter, so
 * sys.setrecursionlimit() inside a fiber would see a wrong depth and then
 * lift the budget; where needed this installs a version of it that keeps the
 * two apart.  `running` gives the running fiber's state (NULL for a thread's
 * own stack).  -1 with an exception set on failure. */
int sf_install_recursion_limit_hook(sf_pystate *(*running)(void));

/* The raised exception as one object (taken out of the thread state), or
 * NULL; and back.  3.11 has only the (type, value, traceback) API. */
PyObject *sf_fetch_exception(void);
void sf_restore_exception(PyObject *exc);  /* steals exc */

/* Where a debugger finds a fiber's Python frames in memory (the gdb helper,
 * stackful/gdb_fibers.py, reads them from a core file without running code):
 * offsets into CPython's structs as this build sees them.  All uint64 so the
 * reader needs no C types; SF_NO_OFFSET where a version has no such field. */
#define SF_NO_OFFSET UINT64_MAX
typedef struct sf_frame_offsets {
    uint64_t pystate_frame;        /* in sf_pystate: the innermost frame pointer, or on
                                      3.11/3.12 the _PyCFrame pointer (then via_cframe) */
    uint64_t via_cframe;           /* 1: pystate_frame/tstate_frame point to a _PyCFrame */
    uint64_t cframe_current_frame; /* in _PyCFrame */
    uint64_t pystate_base_frame;   /* in sf_pystate: where the chain ends (3.15) */
    uint64_t tstate_frame;         /* in PyThreadState, like pystate_frame */
    uint64_t frame_previous;       /* in _PyInterpreterFrame */
    uint64_t frame_executable;     /* the code object (a tagged _PyStackRef on 3.14+) */
    uint64_t executable_tag_bits;  /* low bits of frame_executable that are tags */
    uint64_t frame_instr;          /* prev_instr (3.11/3.12) or instr_ptr */
    uint64_t instr_is_previous;    /* 1: frame_instr is the last executed instruction */
    uint64_t frame_owner;          /* a char */
    uint64_t owner_not_python;     /* owners >= this are C-stack / interpreter frames */
    uint64_t code_filename, code_name, code_firstlineno, code_linetable, code_code;
    uint64_t bytes_size, bytes_data;
    uint64_t unicode_length, unicode_state, sizeof_ascii, sizeof_compact;
} sf_frame_offsets;
void sf_pystate_frame_offsets(sf_frame_offsets *o);

/* The Python frames of a suspended fiber (`s`), or running in `ts` (s NULL),
 * innermost first, at most `limit`: a list of (code, line, self) tuples,
 * self being the first local when the code's first argument is "self". */
PyObject *sf_pystate_frame_list(const sf_pystate *s, PyThreadState *ts, int limit);

#endif
