/* Every CPython-version branch of the project lives in this file.
 *
 * What a fiber owns of PyThreadState (read from each version's headers, and
 * from greenlet's record of which fields matter on which version):
 *
 *   field                  3.11            3.12           3.13           3.14              3.15
 *   innermost frame        cframe          cframe         current_frame  current_frame     current_frame (1)
 *   Python recursion       recursion_*     py_recursion_* (per fiber; Python calls cost no C stack from 3.12)
 *   C recursion            (same counter)  c_recursion_remaining (2)     c_stack_top/soft/hard_limit (3)
 *   frame storage          datastack_chunk/top/limit (every version)
 *   a frame's value stack  stacktop        stacktop       stacktop (4)   stackpointer (5)
 *   handled exceptions     exc_info        exc_info       exc_info       exc_info          exc_info
 *   contextvars            context + context_ver (bumped, or ContextVar caches go stale)
 *   context watchers       -               -              -              Py_CONTEXT_SWITCHED fired on a switch that changes it (6)
 *   asyncio's running loop thread dict + a cache in _asyncio (7)     asyncio_running_loop (+ _task, 3.14+)
 *   async generator hooks  async_gen_firstiter, async_gen_finalizer (every version)
 *   coroutine origin depth coroutine_origin_tracking_depth (every version)
 *   JIT                    -               -              -              current_executor  + jit_exit
 *   generator result kind  -               -              -              -                 generator_return_kind
 *   deallocation depth     trash_delete_nesting  trash.delete_nesting  (by C stack from 3.13)
 *   tracing flag           cframe->use_tracing   (instrumentation is per interpreter from 3.12)
 *   trace re-entrance      tracing, tracing_what   tracing, what_event (3.12+)
 *   repr() guard           the "Py_Repr" list in the thread-state dict (every version)
 *   collector running      interp->gc.collecting (per interpreter: not swapped)
 *
 *   (1) 3.15 ends every thread's frame chain at the thread's base_frame (a
 *       sentinel profilers check): a fresh fiber's chain ends at a copy of its
 *       own, which ts->base_frame names while the fiber runs.  (Not the
 *       thread's: a fiber outlives its thread when it is discarded.)
 *   (2) A budget of levels, computed from the fiber's stack size.
 *   (3) Addresses: CPython compares the stack pointer with them, and checks
 *       nothing when it is outside [soft - 2 margins, soft) -- so a fiber must
 *       carry the bounds of its own stack, or deep recursion on it is never
 *       stopped and (the trash can deciding by the same margin) every container
 *       it frees is deferred.  Computed as PyUnstable_ThreadState_SetStackProtection
 *       would, with smaller margins for stacks under 6 of them.
 *   (4) -1 while the frame is in a call: the live stack is then known only
 *       from switch()'s own arguments (call_top).
 *   (5) Set before every call that can escape, so a suspended frame's is known.
 *       Its slots are tagged references; only those owning a reference count.
 *   (6) Tracers and APM tools use them to follow "the current context"; a
 *       switch changes it as much as Context.run does.
 *   (7) 3.11: a holder object whose loop is swapped; 3.12: the loop itself,
 *       swapped, and _asyncio's cache of it emptied.  See "asyncio" below.
 *
 * The trace guard is per fiber: a fiber suspended inside a trace, profile or
 * sys.monitoring callback must not switch tracing off for the others.  The
 * repr() guard likewise: a fiber suspended inside repr() of a container must
 * not make another print it as [...].  The repr list object stays the
 * thread's; its contents move with the fiber (a storage swap, no allocation,
 * and only when either side has entries).
 *
 * Left with the thread: the trash can's deferred list (delete_later: dead
 * objects any fiber may free; a list saved with a fiber that then ended would
 * leak; freed on landing where the stack has room), monitoring's current
 * event, the recursion headroom, asyncio's list of all tasks (3.14+), the cached spare
 * data-stack chunk (3.14+: any fiber may use it), 3.15's remote-profiler cache
 * (last_profiled_frame: its walk simply does not meet another fiber's frame),
 * the JIT's trace recorder, and c_stack_init_base/top (3.14+: the thread's own
 * stack, which PyUnstable_ThreadState_ResetStackProtection() restores; called
 * on a fiber, it would give it the thread's bounds until its next switch).
 */
#define Py_BUILD_CORE 1
#include "interp_state.h"

#include <limits.h>
#include <string.h>

/* CPython's internal headers are not written for -Wextra. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "internal/pycore_context.h"
#include "internal/pycore_frame.h"
#include "internal/pycore_gc.h"
#include "internal/pycore_interp.h"
#if PY_VERSION_HEX >= 0x030E0000
#  include "internal/pycore_genobject.h"
#  include "internal/pycore_interpframe.h"
#  include "internal/pycore_pystate.h"
#  include "internal/pycore_interp_structs.h"
#endif
#pragma GCC diagnostic pop

/* ------------------------------------------------------------------ */
/* Sizing recursion from a fiber's stack                               */

/* C stack bytes one unit of CPython's recursion counter may cost (before
 * 3.14, which compares addresses).  Measured
 * (benchmarks/measure_stack_per_level.py): Python -> C -> Python recursion
 * through sorted(key=...) takes ~5 KiB a level, which 3.12+ counts as 2 units
 * (PY_EVAL_C_STACK_UNITS) and 3.11 as 2 calls; repr() of nested objects takes
 * ~500 bytes for 3 units.  3.11 counts pure Python calls (which cost no C
 * stack) with the same counter, so its ratio is looser to keep the default
 * limit of 1000 on a default 2 MiB stack; what gets past a budget is caught by
 * the guard page and reported.  AArch64 frames are a little larger (Debian 12's
 * 3.11, gcc 12: sorted(key=...) 5136 bytes a level against 4992 on x86-64,
 * repr() 208 bytes a unit against 143): the same figures serve both. */
#if PY_VERSION_HEX < 0x030C0000
#  define SF_STACK_BYTES_PER_LEVEL 2048
#else
#  define SF_STACK_BYTES_PER_LEVEL 3072
#endif
#if PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
#  define SF_TRASHCAN_UNITS (2 * Py_TRASHCAN_HEADROOM + 1)
#  define SF_STACK_BYTES_WORST_UNIT 2560  /* sorted(key=...) recursion, measured */
#endif
/* Bytes kept back for the fiber's entry, the switch and a RecursionError's
 * own handling (the interpreter allows 50 levels of headroom past the limit);
 * a quarter of a small stack. */
#define SF_STACK_RESERVE_MAX (24 * 1024)

#if PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
#  define SF_C_RECURSION_LIMIT Py_C_RECURSION_LIMIT
#elif PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000
#  define SF_C_RECURSION_LIMIT C_RECURSION_LIMIT
#endif

static inline int min_int(int a, int b) { return a < b ? a : b; }

#if PY_VERSION_HEX < 0x030C0000
/* 3.11 counts Python and C recursion with one counter: a fiber's limit is
 * the thread's, capped by what its C stack can take (a budget of 0: a root
 * fiber, on the thread's own stack, has no cap of its own). */
static inline int effective_limit(const sf_pystate *s, PyThreadState *ts)
{
    return s->c_budget > 0 ? min_int(ts->recursion_limit, s->c_budget) : ts->recursion_limit;
}
#endif

#if PY_VERSION_HEX < 0x030E0000
/* Recursion levels a fresh fiber's C stack can take. */
static int c_budget_for(size_t c_stack_bytes)
{
    size_t reserve = c_stack_bytes / 4 < SF_STACK_RESERVE_MAX ? c_stack_bytes / 4
                                                              : SF_STACK_RESERVE_MAX;
    size_t usable = c_stack_bytes - reserve;
    size_t levels = usable / SF_STACK_BYTES_PER_LEVEL;
#  if PY_VERSION_HEX >= 0x030D0000
    /* 3.13's trash can needs over 100 units left to free containers (see
     * sf_pystate_landed).  Where the stack has room for 101 worst-case units
     * beyond a budget, give them: the fiber then frees its own garbage. */
    size_t trash_bytes = (size_t)SF_TRASHCAN_UNITS * SF_STACK_BYTES_WORST_UNIT;
    if (usable > trash_bytes + SF_TRASHCAN_UNITS * SF_STACK_BYTES_PER_LEVEL)
        levels = (usable - trash_bytes) / SF_STACK_BYTES_PER_LEVEL + SF_TRASHCAN_UNITS;
#  endif
    return levels > INT_MAX ? INT_MAX : (int)levels;
}
#else
/* 3.14+: CPython's own layout of a stack's limits (tstate_set_stack in
 * Python/ceval.c): the hard limit one margin above the stack's base, the soft
 * limit two.  A margin is what C code may use between two checks; a stack
 * under 6 margins gets a sixth of itself instead, so that a 32 KiB fiber keeps
 * two thirds of its stack (a 5 KiB jump between checks can then reach the
 * guard page, which reports it). */
#  define SF_STACK_MARGIN ((uintptr_t)_PyOS_STACK_MARGIN_BYTES)

static void set_c_stack_limits(sf_pystate *s, uintptr_t base, uintptr_t top)
{
    uintptr_t margin = (top - base) / 6 < SF_STACK_MARGIN ? ((top - base) / 6) & ~(uintptr_t)15
                                                            : SF_STACK_MARGIN;
    s->c_stack_top = top;
    s->c_stack_hard_limit = base + margin;
    s->c_stack_soft_limit = base + 2 * margin;
}
#endif

/* ------------------------------------------------------------------ */
/* The repr() guard                                                    */

static PyObject *str_py_repr;
static void asyncio_init_strings(void);

void sf_pythread_init(sf_pythread *t)
{
    PyObject *dict = PyThreadState_GetDict();
    if (!str_py_repr)
        str_py_repr = PyUnicode_InternFromString("Py_Repr");
    asyncio_init_strings();
    PyObject *fresh = PyList_New(0);
    PyObject *list = dict && str_py_repr && fresh ? PyDict_SetDefault(dict, str_py_repr, fresh)
                                                  : NULL;
    Py_XDECREF(fresh);
    if (list && PyList_CheckExact(list))
        t->repr_list = (PyListObject *)Py_NewRef(list);
    PyErr_Clear();  /* without the list, fibers share the thread's guard: no worse */
}

void sf_pythread_clear(sf_pythread *t)
{
    Py_CLEAR(t->repr_list);
}

/* Move the running fiber's entries out of the thread's list (its storage
 * goes with them), and the resumed fiber's in. */
static inline void repr_save(sf_pystate *s, sf_pythread *t)
{
    PyListObject *list = t->repr_list;
    if (list && Py_SIZE(list)) {
        s->repr_items = list->ob_item;
        s->repr_size = Py_SIZE(list);
        s->repr_allocated = list->allocated;
        list->ob_item = NULL;
        Py_SET_SIZE(list, 0);
        list->allocated = 0;
    }
}

static inline void repr_restore(sf_pystate *s, sf_pythread *t)
{
    PyListObject *list = t->repr_list;
    if (s->repr_items && list) {
        PyMem_Free(list->ob_item);  /* empty: repr_save emptied it, or it never had entries */
        list->ob_item = s->repr_items;
        Py_SET_SIZE(list, s->repr_size);
        list->allocated = s->repr_allocated;
        s->repr_items = NULL;
        s->repr_size = s->repr_allocated = 0;
    }
}

static void repr_release(sf_pystate *s)
{
    PyObject **items = s->repr_items;
    Py_ssize_t n = s->repr_size;
    s->repr_items = NULL;
    s->repr_size = s->repr_allocated = 0;
    if (items) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(items[i]);
        PyMem_Free(items);
    }
}

/* ------------------------------------------------------------------ */
/* Frames: where each version keeps a frame's code, function and slots */

#if PY_VERSION_HEX >= 0x030F0000
_Static_assert(sizeof(_PyInterpreterFrame) <= sizeof(((sf_pystate *)0)->own_base_frame),
               "room for a base frame");
#endif

#if PY_VERSION_HEX >= 0x030E0000
/* A tagged stack reference; it owns a reference only without the tag bit. */
typedef _PyStackRef sf_slot;
static inline PyObject *slot_owned(sf_slot ref)
{
    return PyStackRef_IsNullOrInt(ref) || !PyStackRef_RefcountOnObject(ref)
               ? NULL : PyStackRef_AsPyObjectBorrow(ref);
}
static inline void slot_clear(sf_slot *ref)
{
    PyObject *owned = slot_owned(*ref);
    *ref = PyStackRef_NULL;
    Py_XDECREF(owned);
}
#else
typedef PyObject *sf_slot;
static inline PyObject *slot_owned(sf_slot ref) { return ref; }
static inline void slot_clear(sf_slot *ref) { Py_CLEAR(*ref); }
#endif

static inline _PyInterpreterFrame *current_frame(PyThreadState *ts)
{
#if PY_VERSION_HEX < 0x030D0000
    return ts->cframe->current_frame;
#else
    return ts->current_frame;
#endif
}

static inline sf_slot *frame_code_slot(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX < 0x030D0000
    return (PyObject **)&f->f_code;
#else
    return &f->f_executable;
#endif
}

static inline PyObject *frame_code(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030E0000
    return PyStackRef_AsPyObjectBorrow(f->f_executable);
#else
    return *frame_code_slot(f);
#endif
}

static inline sf_slot *frame_func_slot(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX < 0x030C0000
    return (PyObject **)&f->f_func;
#else
    return &f->f_funcobj;
#endif
}

static inline _PyInterpreterFrame *top_frame(const sf_pystate *s)
{
#if PY_VERSION_HEX < 0x030D0000
    return s->cframe ? s->cframe->current_frame : NULL;
#else
    return s->current_frame;
#endif
}

/* Walking a suspended fiber's frames, innermost first, down to (not into)
 * 3.15's base frame. */
static inline _PyInterpreterFrame *frame_or_end(const sf_pystate *s, _PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030F0000
    return f == s->base_frame ? NULL : f;
#else
    (void)s;
    return f;
#endif
}
static inline _PyInterpreterFrame *first_frame(const sf_pystate *s)
{
    return frame_or_end(s, top_frame(s));
}
static inline _PyInterpreterFrame *frame_below(const sf_pystate *s, _PyInterpreterFrame *f)
{
    return frame_or_end(s, f->previous);
}

#if PY_VERSION_HEX < 0x030E0000
/* Slots of `f` in use up to `call_top`, or -1 if call_top is not on f's
 * value stack (a switch called from C, or with its arguments elsewhere). */
static int live_slots_below(_PyInterpreterFrame *f, PyObject *const *call_top)
{
    if (!call_top || !f || f->owner != FRAME_OWNED_BY_THREAD || f->stacktop >= 0)
        return -1;
    PyObject *code = frame_code(f);
    if (!PyCode_Check(code))
        return -1;
    PyCodeObject *co = (PyCodeObject *)code;
    PyObject *const *stack = f->localsplus + co->co_nlocalsplus;
    if (call_top < stack || call_top > stack + co->co_stacksize)
        return -1;
    return (int)(call_top - f->localsplus);
}
#endif

/* How many localsplus slots of a suspended frame hold references we know of.
 * Before 3.14 a frame that called out to C has stacktop == -1 while it runs
 * (the value stack pointer lives in the eval loop's C locals), so only its
 * locals are known -- except for the innermost frame when switch() was
 * called from it directly (see sf_pystate_save).  Under-counting is safe for
 * the GC. */
static inline int known_slots(const sf_pystate *s, _PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030E0000
    (void)s;
    if (f->stackpointer)
        return (int)(f->stackpointer - f->localsplus);
#else
    if (f->stacktop >= 0)
        return f->stacktop;
    if (f == top_frame(s) && s->top_live_slots >= 0)
        return s->top_live_slots;  /* up to the arguments of the pending call */
#endif
    PyObject *code = frame_code(f);
    return PyCode_Check(code) ? ((PyCodeObject *)code)->co_nlocalsplus : 0;
}

/* ------------------------------------------------------------------ */
/* asyncio                                                             */

/* What asyncio keeps per thread must follow the fiber, or two fibers cannot
 * each run an event loop (asyncio.run in one says "cannot be called from a
 * running event loop" while another is suspended inside its own loop): the
 * running loop, the running task (3.14+; before, a dict keyed by loop), and
 * the async generator hooks and coroutine origin tracking depth that
 * BaseEventLoop.run_forever sets while it runs.  A fresh fiber has none of
 * them, like a fresh thread (unless it inherits them, see
 * sf_pystate_inherit_asyncio).
 *
 * Where the running loop lives, from each version's Modules/_asynciomodule.c:
 *   3.11  thread-state dict["__asyncio_running_event_loop__"] is a
 *         _RunningLoopHolder (rl_loop, rl_pid), which _asyncio caches,
 *         borrowed and tagged with the thread's id, in a static that the
 *         holder's dealloc clears.  The holder stays in the dict and the
 *         loop inside it is swapped, so that cache stays right.
 *   3.12  the same entry is the loop itself (or None), cached the same way in
 *         _asyncio's module state.  The entry is swapped and the cache
 *         emptied, so _asyncio looks it up again.  Where the cache is in the
 *         module state is found once, by its contents: the loop next to the
 *         thread's id, just after _set_running_loop stored both.  Until then
 *         the loop stays per thread.
 *   3.13+ _PyThreadStateImpl.asyncio_running_loop (3.14+ also _task): moved.
 * 3.11 and 3.12 look the dict entry up only when the dict's version tag has
 * changed since the last look (a loop started or stopped), so a switch
 * between fibers that run no loop costs two compares. */

#if PY_VERSION_HEX < 0x030D0000
static PyObject *str_running_loop_key;   /* "__asyncio_running_event_loop__" */

static inline uint64_t dict_version(PyObject *dict)
{
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    return ((PyDictObject *)dict)->ma_version_tag;  /* deprecated in 3.12, still kept */
#  pragma GCC diagnostic pop
}
#endif

#if PY_VERSION_HEX < 0x030C0000
typedef struct {
    PyObject_HEAD
    PyObject *rl_loop;    /* owned; None: no loop running */
    pid_t rl_pid;
} loop_holder;

static int is_loop_holder(PyObject *entry)
{
    PyTypeObject *type = Py_TYPE(entry);
    return type->tp_basicsize == (Py_ssize_t)sizeof(loop_holder) &&
           strcmp(type->tp_name, "_RunningLoopHolder") == 0;
}
#elif PY_VERSION_HEX < 0x030D0000
static PyObject *str_asyncio_module;     /* "_asyncio" */
static PyObject *loop_cache_module;      /* strong, once the cache is found */
static Py_ssize_t loop_cache_offset = -1;

/* Right after _set_running_loop(loop) the module state holds `loop` and,
 * in the next word, the thread's id: find that pair, if it is there once. */
static void find_loop_cache(PyThreadState *ts, PyObject *loop)
{
    PyObject *modules = ts->interp->imports.modules;
    PyObject *mod = modules ? PyDict_GetItem(modules, str_asyncio_module) : NULL;
    if (!mod || !PyModule_Check(mod))
        return;
    PyModuleDef *def = PyModule_GetDef(mod);
    uintptr_t *words = PyModule_GetState(mod);
    if (!def || !words || def->m_size < (Py_ssize_t)(2 * sizeof(uintptr_t)))
        return;
    Py_ssize_t n = def->m_size / (Py_ssize_t)sizeof(uintptr_t), found = -1, matches = 0;
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        if (words[i] == (uintptr_t)loop && words[i + 1] == (uintptr_t)ts->id) {
            found = i;
            matches++;
        }
    }
    if (matches == 1) {
        loop_cache_offset = found * (Py_ssize_t)sizeof(uintptr_t);
        loop_cache_module = Py_NewRef(mod);
    }
}

static inline void empty_loop_cache(void)
{
    char *state = PyModule_GetState(loop_cache_module);
    *(PyObject **)(state + loop_cache_offset) = NULL;
}
#endif

#if PY_VERSION_HEX < 0x030D0000
static PyObject *look_up_loop_entry(PyThreadState *ts, sf_pythread *t)
{
    PyObject *dict = ts->dict;
    PyObject *entry = str_running_loop_key ? PyDict_GetItem(dict, str_running_loop_key) : NULL;
#  if PY_VERSION_HEX < 0x030C0000
    if (entry && !is_loop_holder(entry))
        entry = NULL;  /* not the layout we know: the loop stays per thread */
#  else
    if (entry && entry != Py_None && loop_cache_offset < 0)
        find_loop_cache(ts, entry);
#  endif
    t->loop_dict = dict;
    t->loop_entry = entry;
    t->loop_dict_version = dict_version(dict);
    return entry;
}

/* The thread dict's running-loop entry (borrowed), or NULL. */
static inline PyObject *loop_entry(PyThreadState *ts, sf_pythread *t)
{
    PyObject *dict = ts->dict;
    if (!dict)
        return NULL;
    if (dict == t->loop_dict && dict_version(dict) == t->loop_dict_version)
        return t->loop_entry;
    return look_up_loop_entry(ts, t);
}
#endif

#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *running_loop_of_thread(PyThreadState *ts, sf_pythread *t)
{
    loop_holder *holder = (loop_holder *)loop_entry(ts, t);
    return holder && holder->rl_loop != Py_None ? holder->rl_loop : NULL;
}

static inline void running_loop_save(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    loop_holder *holder = (loop_holder *)loop_entry(ts, t);
    if (holder && holder->rl_loop != Py_None && !s->asyncio_running_loop) {
        s->asyncio_running_loop = holder->rl_loop;  /* the reference moves */
        holder->rl_loop = Py_NewRef(Py_None);
    }
}

static inline void running_loop_restore(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    (void)ts;
    if (!s->asyncio_running_loop)
        return;
    loop_holder *holder = (loop_holder *)t->loop_entry;  /* fresh: the save just before looked */
    if (holder && holder->rl_loop == Py_None) {
        Py_DECREF(Py_None);
        holder->rl_loop = s->asyncio_running_loop;  /* the reference moves back */
        s->asyncio_running_loop = NULL;
    }
}
#elif PY_VERSION_HEX < 0x030D0000
static inline PyObject *running_loop_of_thread(PyThreadState *ts, sf_pythread *t)
{
    PyObject *entry = loop_entry(ts, t);
    return entry && entry != Py_None && loop_cache_offset >= 0 ? entry : NULL;
}

static inline void running_loop_save(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    PyObject *loop = running_loop_of_thread(ts, t);
    if (loop && !s->asyncio_running_loop)
        s->asyncio_running_loop = Py_NewRef(loop);  /* the dict keeps its own until replaced */
}

/* Replacing the entry allocates nothing (the key is there) and frees
 * nothing: the fiber just saved holds the loop it drops. */
static void replace_loop_entry(PyThreadState *ts, sf_pythread *t, PyObject *loop)
{
    if (PyDict_SetItem(ts->dict, str_running_loop_key, loop) < 0)
        Py_FatalError("stackful: cannot swap asyncio's running loop");
    t->loop_entry = loop;
    t->loop_dict_version = dict_version(ts->dict);
    empty_loop_cache();
}

static inline void running_loop_restore(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    PyObject *loop = s->asyncio_running_loop;
    PyObject *entry = t->loop_entry;  /* fresh: the save just before looked */
    if (!entry || entry == (loop ? loop : Py_None)) {
        if (loop && entry) {  /* the same loop (an inherited one): the dict holds it */
            s->asyncio_running_loop = NULL;
            Py_DECREF(loop);
        }
        return;
    }
    if (loop_cache_offset < 0)
        return;
    replace_loop_entry(ts, t, loop ? loop : Py_None);
    if (loop) {
        s->asyncio_running_loop = NULL;
        Py_DECREF(loop);  /* the dict holds it now */
    }
}
#else
static inline PyObject *running_loop_of_thread(PyThreadState *ts, sf_pythread *t)
{
    (void)t;
    return ((_PyThreadStateImpl *)ts)->asyncio_running_loop;
}

static inline void running_loop_save(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    (void)t;
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    s->asyncio_running_loop = impl->asyncio_running_loop;  /* the references move */
    impl->asyncio_running_loop = NULL;
#  if PY_VERSION_HEX >= 0x030E0000
    s->asyncio_running_task = impl->asyncio_running_task;
    impl->asyncio_running_task = NULL;
#  endif
}

static inline void running_loop_restore(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    (void)t;
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    impl->asyncio_running_loop = s->asyncio_running_loop;  /* the references move back */
    s->asyncio_running_loop = NULL;
#  if PY_VERSION_HEX >= 0x030E0000
    impl->asyncio_running_task = s->asyncio_running_task;
    s->asyncio_running_task = NULL;
#  endif
}
#endif

/* Invariant: between a save and its restore the thread has no hooks and no
 * origin tracking, and a running fiber's saved fields are empty; so the
 * usual switch, where neither side has any, only tests. */
static inline void asyncio_save(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    running_loop_save(s, ts, t);
    if ((uintptr_t)ts->async_gen_firstiter | (uintptr_t)ts->async_gen_finalizer |
        (uintptr_t)ts->coroutine_origin_tracking_depth) {
        s->asyncgen_firstiter = ts->async_gen_firstiter;  /* the references move */
        s->asyncgen_finalizer = ts->async_gen_finalizer;
        s->coroutine_origin_depth = ts->coroutine_origin_tracking_depth;
        ts->async_gen_firstiter = NULL;
        ts->async_gen_finalizer = NULL;
        ts->coroutine_origin_tracking_depth = 0;
    }
}

static inline void asyncio_restore(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    running_loop_restore(s, ts, t);
    if ((uintptr_t)s->asyncgen_firstiter | (uintptr_t)s->asyncgen_finalizer |
        (uintptr_t)s->coroutine_origin_depth) {
        ts->async_gen_firstiter = s->asyncgen_firstiter;  /* the references move back */
        ts->async_gen_finalizer = s->asyncgen_finalizer;
        ts->coroutine_origin_tracking_depth = s->coroutine_origin_depth;
        s->asyncgen_firstiter = NULL;
        s->asyncgen_finalizer = NULL;
        s->coroutine_origin_depth = 0;
    }
}

void sf_pystate_inherit_asyncio(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
    Py_XSETREF(s->asyncio_running_loop, Py_XNewRef(running_loop_of_thread(ts, t)));
#if PY_VERSION_HEX >= 0x030E0000
    Py_XSETREF(s->asyncio_running_task,
               Py_XNewRef(((_PyThreadStateImpl *)ts)->asyncio_running_task));
#endif
    Py_XSETREF(s->asyncgen_firstiter, Py_XNewRef(ts->async_gen_firstiter));
    Py_XSETREF(s->asyncgen_finalizer, Py_XNewRef(ts->async_gen_finalizer));
    s->coroutine_origin_depth = ts->coroutine_origin_tracking_depth;
}

static void asyncio_init_strings(void)
{
#if PY_VERSION_HEX < 0x030D0000
    if (!str_running_loop_key)
        str_running_loop_key = PyUnicode_InternFromString("__asyncio_running_event_loop__");
#endif
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
    if (!str_asyncio_module)
        str_asyncio_module = PyUnicode_InternFromString("_asyncio");
#endif
}

static void asyncio_release(sf_pystate *s)
{
    Py_CLEAR(s->asyncio_running_loop);
#if PY_VERSION_HEX >= 0x030E0000
    Py_CLEAR(s->asyncio_running_task);
#endif
    Py_CLEAR(s->asyncgen_firstiter);
    Py_CLEAR(s->asyncgen_finalizer);
}

#if PY_VERSION_HEX >= 0x030C0000
/* The interpreter's instrumentation version: code whose own version differs
 * has not been instrumented for the tools and hooks now on. */
static inline uintptr_t instrumentation_version(PyInterpreterState *interp)
{
#  if PY_VERSION_HEX < 0x030D0000
    return (uintptr_t)interp->monitoring_version;
#  else
    return interp->ceval.instrumentation_version;
#  endif
}

static inline int code_instrumented(PyCodeObject *code, PyInterpreterState *interp)
{
    return (uintptr_t)code->_co_instrumentation_version == instrumentation_version(interp);
}

/* An entry or shim frame: no code of its own to instrument. */
static inline int frame_is_shim(_PyInterpreterFrame *f)
{
#  if PY_VERSION_HEX < 0x030E0000
    return f->owner == FRAME_OWNED_BY_CSTACK;
#  else
    return f->owner >= FRAME_OWNED_BY_INTERPRETER;
#  endif
}
#endif

/* ------------------------------------------------------------------ */
/* Switching                                                           */

void sf_pystate_save(sf_pystate *s, PyThreadState *ts, sf_pythread *t,
                     PyObject *const *call_top)
{
#if PY_VERSION_HEX < 0x030D0000
    s->top_live_slots = live_slots_below(current_frame(ts), call_top);
    s->cframe = ts->cframe;
#elif PY_VERSION_HEX < 0x030E0000
    s->top_live_slots = live_slots_below(current_frame(ts), call_top);
    s->current_frame = ts->current_frame;
#else
    (void)call_top;
    s->current_frame = ts->current_frame;
#endif
#if PY_VERSION_HEX < 0x030C0000
    s->py_depth = effective_limit(s, ts) - ts->recursion_remaining;
#else
    s->py_depth = ts->py_recursion_limit - ts->py_recursion_remaining;
#endif
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000
    s->c_remaining = ts->c_recursion_remaining;
#endif
#if PY_VERSION_HEX >= 0x030E0000
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    s->c_stack_top = impl->c_stack_top;
    s->c_stack_soft_limit = impl->c_stack_soft_limit;
    s->c_stack_hard_limit = impl->c_stack_hard_limit;
    s->current_executor = ts->current_executor;
#endif
#if PY_VERSION_HEX >= 0x030F0000
    s->base_frame = ts->base_frame;
    s->jit_exit = ts->jit_exit;
    s->generator_return_kind = impl->generator_return_kind;
#endif
#if PY_VERSION_HEX >= 0x030C0000
    s->instrumentation_version = instrumentation_version(ts->interp);
#endif
    s->datastack_chunk = ts->datastack_chunk;
    s->datastack_top = ts->datastack_top;
    s->datastack_limit = ts->datastack_limit;
    s->exc_info = ts->exc_info;
    s->context = ts->context;  /* the reference moves to the fiber */
    ts->context = NULL;
#if PY_VERSION_HEX < 0x030C0000
    s->trash_delete_nesting = ts->trash_delete_nesting;
#elif PY_VERSION_HEX < 0x030D0000
    s->trash_delete_nesting = ts->trash.delete_nesting;
#endif
    s->tracing = ts->tracing;
#if PY_VERSION_HEX < 0x030C0000
    s->tracing_what = ts->tracing_what;
#else
    s->tracing_what = ts->what_event;
#endif
    repr_save(s, t);
    asyncio_save(s, ts, t);
}

void sf_pystate_restore(sf_pystate *s, PyThreadState *ts, sf_pythread *t)
{
#if PY_VERSION_HEX < 0x030D0000
    ts->cframe = s->cframe;
#else
    ts->current_frame = s->current_frame;
#endif
    ts->tracing = s->tracing;
#if PY_VERSION_HEX < 0x030C0000
    ts->tracing_what = s->tracing_what;
#else
    ts->what_event = s->tracing_what;
#endif
    repr_restore(s, t);
    asyncio_restore(s, ts, t);
#if PY_VERSION_HEX < 0x030C0000
    /* sys.settrace/setprofile are per thread, not per fiber: the resumed
     * frame record must see the thread's current choice. */
    ts->cframe->use_tracing =
        (ts->tracing == 0 && (ts->c_tracefunc || ts->c_profilefunc)) ? 255 : 0;
    ts->recursion_remaining = effective_limit(s, ts) - s->py_depth;
#else
    ts->py_recursion_remaining = ts->py_recursion_limit - s->py_depth;
#endif
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000
    ts->c_recursion_remaining = s->c_remaining;
#endif
#if PY_VERSION_HEX >= 0x030E0000
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    impl->c_stack_top = s->c_stack_top;
    impl->c_stack_soft_limit = s->c_stack_soft_limit;
    impl->c_stack_hard_limit = s->c_stack_hard_limit;
    ts->current_executor = s->current_executor;
#endif
#if PY_VERSION_HEX >= 0x030F0000
    ts->base_frame = s->base_frame;
    ts->jit_exit = s->jit_exit;
    impl->generator_return_kind = s->generator_return_kind;
#endif
#if PY_VERSION_HEX >= 0x030C0000
    /* Instrumented on landing (sf_pystate_landed): instrumenting can free
     * objects, which must not happen before the switch (see fiber_internal.h). */
    s->instrumentation_stale = s->instrumentation_version != instrumentation_version(ts->interp);
#endif
    ts->datastack_chunk = s->datastack_chunk;
    ts->datastack_top = s->datastack_top;
    ts->datastack_limit = s->datastack_limit;
    ts->exc_info = s->exc_info;
    ts->context = s->context;  /* the reference moves back to the thread */
    s->context = NULL;
    ts->context_ver++;         /* ContextVar caches are keyed on this */
#if PY_VERSION_HEX < 0x030C0000
    ts->trash_delete_nesting = s->trash_delete_nesting;
#elif PY_VERSION_HEX < 0x030D0000
    ts->trash.delete_nesting = s->trash_delete_nesting;
#endif
}

void sf_pystate_init_fresh(sf_pystate *s, void *chunk_memory, size_t chunk_size,
                           void *stack_base, size_t stack_size)
{
    PyObject *context = s->context;  /* may have been set before the start */
    memset(s, 0, sizeof(*s));
    s->context = context;
    s->entry_context = Py_XNewRef(context);
#if PY_VERSION_HEX < 0x030D0000
    s->cframe = &s->base_cframe;  /* current_frame NULL: the fiber's frames end here */
#elif PY_VERSION_HEX >= 0x030F0000
    _PyInterpreterFrame *base = (_PyInterpreterFrame *)s->own_base_frame;
    memcpy(base, PyThreadState_GET()->base_frame, sizeof(*base));
    base->previous = NULL;
    base->frame_obj = NULL;
    base->stackpointer = base->localsplus;
    s->base_frame = s->current_frame = base;
#endif
#if PY_VERSION_HEX >= 0x030C0000
    s->instrumentation_version = instrumentation_version(PyThreadState_GET()->interp);
#endif
#if PY_VERSION_HEX < 0x030E0000
    (void)stack_base;
    s->c_budget = c_budget_for(stack_size);
#  if PY_VERSION_HEX >= 0x030C0000
    s->c_remaining = min_int(SF_C_RECURSION_LIMIT, s->c_budget);
#  endif
    s->top_live_slots = -1;
#else
    set_c_stack_limits(s, (uintptr_t)stack_base, (uintptr_t)stack_base + stack_size);
#endif
    /* The fiber's own chunk is a "root" chunk (no previous): CPython never
     * frees a root chunk, and skips its first slot so no frame can pop it. */
    _PyStackChunk *chunk = chunk_memory;
    chunk->previous = NULL;
    chunk->size = chunk_size;
    chunk->top = 0;
    s->datastack_chunk = chunk;
    s->datastack_top = &chunk->data[1];
    s->datastack_limit = (PyObject **)((char *)chunk + chunk_size);
    s->exc_info = &s->exc_state;
}

void sf_pystate_set_c_budget(sf_pystate *s, int levels)
{
#if PY_VERSION_HEX < 0x030E0000
    s->c_budget = levels;
#  if PY_VERSION_HEX >= 0x030C0000
    s->c_remaining = levels;
#  endif
#else
    /* The soft limit `levels` deep, possibly far below the stack (where
     * CPython then checks nothing); never below address zero. */
    uintptr_t depth = (uintptr_t)levels * SF_STACK_BYTES_PER_LEVEL;
    uintptr_t floor = 4 * SF_STACK_MARGIN;
    uintptr_t soft = s->c_stack_top - floor > depth ? s->c_stack_top - depth : floor;
    s->c_stack_soft_limit = soft;
    s->c_stack_hard_limit = soft - SF_STACK_MARGIN;
#endif
}

void sf_pystate_release(sf_pystate *s)
{
    Py_CLEAR(s->context);
    Py_CLEAR(s->entry_context);
    Py_CLEAR(s->exc_state.exc_value);
    asyncio_release(s);
    repr_release(s);
}

/* sys.monitoring, settrace and setprofile re-instrument only the code of
 * frames on a thread's frame chain (a suspended fiber's are not on it), and
 * other code at its next RESUME (which a fiber resuming mid-call never runs).
 * Left so, a resumed frame sends none of the events its code was not
 * instrumented for (line, return, ...) until it returns; and 3.15 reads the
 * RAISE, unwind and handled-exception tools from the raising code's own
 * monitoring data, so an exception in a frame whose code was never
 * instrumented dereferences NULL.  Bring the fiber's code up to date as
 * CPython does for a thread's frames: in place, as CPython does with frames
 * of the same code on other threads, mid-call (the code's layout does not
 * change).  Runs on the fiber's own stack, its state restored: instrumenting
 * frees old instrumentation and JIT executors, and so can run any
 * deallocation, finalizers included. */
#if PY_VERSION_HEX >= 0x030F0000
static void instrument_landed(PyThreadState *ts, sf_pystate *s)
{
    PyInterpreterState *interp = ts->interp;
    s->instrumentation_stale = 0;
    PyObject *pending = PyErr_GetRaisedException();
    for (_PyInterpreterFrame *f = current_frame(ts); f && f != ts->base_frame; f = f->previous) {
        if (frame_is_shim(f))
            continue;
        PyCodeObject *code = (PyCodeObject *)frame_code(f);
        if (!code_instrumented(code, interp) && _Py_Instrument(code, interp) < 0)
            Py_FatalError("stackful: out of memory instrumenting a resumed fiber's code");
    }
    PyErr_SetRaisedException(pending);
}
#elif PY_VERSION_HEX >= 0x030C0000
/* 3.12-3.14 export no call that instruments one code object (_Py_Instrument
 * is hidden), but sys.monitoring.set_local_events() runs it at once: setting
 * a local event instruments the code for every tool's events, and clearing it
 * again leaves the others'.  The tool id must be one nobody holds (tools 0-5
 * are the users'; 6 and 7 setprofile's and settrace's); none free, the code
 * stays as it was, which is what 3.12-3.14 did before.  It is claimed and
 * released as use_tool_id does, by naming it: 3.14's free_tool_id bumps the
 * interpreter's version, which would make every other suspended fiber
 * instrument again on landing, each bumping it for the next. */
static PyObject *str_tool_name, *str_set_local_events;

static int claim_free_tool(PyInterpreterState *interp)
{
    for (int tool = PY_MONITORING_SYS_PROFILE_ID - 1; tool >= 0; tool--) {
        if (!interp->monitoring_tool_names[tool]) {
            interp->monitoring_tool_names[tool] = Py_NewRef(str_tool_name);
            return tool;
        }
    }
    return -1;
}

static void release_tool(PyInterpreterState *interp, int tool)
{
    /* Unless code that ran meanwhile (a finalizer) freed it and took it again. */
    if (interp->monitoring_tool_names[tool] == str_tool_name)
        Py_CLEAR(interp->monitoring_tool_names[tool]);
}

static int set_local_events(PyObject *set, int tool, PyObject *code, int events)
{
    PyObject *r = PyObject_CallFunction(set, "iOi", tool, code, events);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static void instrument_landed(PyThreadState *ts, sf_pystate *s)
{
    PyInterpreterState *interp = ts->interp;
    s->instrumentation_stale = 0;
    if (!str_tool_name) {
        str_tool_name = PyUnicode_InternFromString("stackful: instrumenting a resumed fiber");
        str_set_local_events = PyUnicode_InternFromString("set_local_events");
        if (!str_tool_name || !str_set_local_events) {
            Py_CLEAR(str_tool_name);
            PyErr_Clear();
            return;
        }
    }
    PyObject *pending = PyErr_GetRaisedException();
    PyObject *set = NULL;
    int tool = -1;
    for (_PyInterpreterFrame *f = current_frame(ts); f; f = f->previous) {
        if (frame_is_shim(f))
            continue;
        PyObject *code = frame_code(f);
        if (!PyCode_Check(code) || code_instrumented((PyCodeObject *)code, interp))
            continue;
        if (!set) {
            PyObject *monitoring = PySys_GetObject("monitoring");  /* borrowed */
            tool = monitoring ? claim_free_tool(interp) : -1;
            if (tool < 0)
                break;
            set = PyObject_GetAttr(monitoring, str_set_local_events);
            if (!set) {
                PyErr_WriteUnraisable(monitoring);
                break;
            }
        }
        Py_INCREF(code);  /* what instrumenting runs could drop the frame's */
        if (set_local_events(set, tool, code, 1 << PY_MONITORING_EVENT_PY_START) < 0 ||
            set_local_events(set, tool, code, 0) < 0)
            PyErr_WriteUnraisable(code);
        Py_DECREF(code);
    }
    Py_XDECREF(set);
    if (tool >= 0)
        release_tool(interp, tool);
    PyErr_SetRaisedException(pending);
}
#endif

#if PY_VERSION_HEX >= 0x030C0000
void sf_pystate_landed_rare(PyThreadState *ts, sf_pystate *s)
{
    if (s->instrumentation_stale)
        instrument_landed(ts, s);
#  if PY_VERSION_HEX >= 0x030E0000
    /* Deferred deallocations pending: free them if this stack has the room
     * CPython itself asks for (_Py_Dealloc: 4 margins). */
    if (ts->delete_later && _Py_RecursionLimit_GetMargin(ts) >= 4)
        _PyTrash_thread_destroy_chain(ts);
#  endif
}
#else
void sf_pystate_landed_rare(PyThreadState *ts, sf_pystate *s) { (void)ts; (void)s; }
#endif

#if PY_VERSION_HEX >= 0x030E0000

/* Tell context watchers, as CPython does when Context.run enters or leaves:
 * one Py_CONTEXT_SWITCHED with the now-current context (or None).  A
 * watcher's error is reported as unraisable, like CPython's own. */
void sf_pystate_context_switched(PyThreadState *ts)
{
    PyInterpreterState *interp = ts->interp;
    uint8_t active = interp->active_context_watchers;
    if (!active)
        return;
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *ctx = ts->context ? ts->context : Py_None;
    Py_INCREF(ctx);
    for (int i = 0; i < CONTEXT_MAX_WATCHERS; i++, active >>= 1) {
        PyContext_WatchCallback cb = interp->context_watchers[i];
        if ((active & 1) && cb && cb(Py_CONTEXT_SWITCHED, ctx) < 0)
            PyErr_FormatUnraisable("Exception ignored in context watcher %d "
                                   "callback for a fiber switch to %R", i, ctx);
    }
    Py_DECREF(ctx);
    PyErr_SetRaisedException(exc);
}
#else
void sf_pystate_context_switched(PyThreadState *ts) { (void)ts; }
#endif

void sf_pystate_set_current_context(PyThreadState *ts, PyObject *ctx)
{
    PyObject *old = ts->context;
    ts->context = ctx;
    ts->context_ver++;
    if (old != ctx)
        sf_pystate_context_switched(ts);
    Py_XDECREF(old);
}

/* ------------------------------------------------------------------ */
/* Suspended frames                                                    */

static void free_chunks_above(_PyStackChunk *chunk, void *own_chunk)
{
    PyObjectArenaAllocator arena;
    PyObject_GetArenaAllocator(&arena);
    while (chunk && (void *)chunk != own_chunk) {
        _PyStackChunk *previous = chunk->previous;
        arena.free(arena.ctx, chunk, chunk->size);
        chunk = previous;
    }
}

void sf_pystate_release_extra_chunks(PyThreadState *ts, void *own_chunk)
{
    free_chunks_above(ts->datastack_chunk, own_chunk);
}

int sf_pystate_traverse(const sf_pystate *s, visitproc visit, void *arg)
{
    for (_PyInterpreterFrame *f = first_frame(s); f; f = frame_below(s, f)) {
        /* Generator frames are traversed by their generator; shim and base
         * frames own nothing. */
        if (f->owner == FRAME_OWNED_BY_GENERATOR) {
#if PY_VERSION_HEX < 0x030E0000
            /* ...all but the slots of one suspended in a C call (switch() called
             * in the generator): the eval loop set its stacktop to -1, so its
             * generator visits none of them, and a cycle through its locals (a
             * generator holding its own fiber) would never be collected. */
            if (f->stacktop < 0) {
                int n = known_slots(s, f);
                for (int i = 0; i < n; i++)
                    Py_VISIT(slot_owned(f->localsplus[i]));
            }
#endif
            continue;
        }
        if (f->owner != FRAME_OWNED_BY_THREAD)
            continue;
        Py_VISIT(f->frame_obj);
        Py_VISIT(f->f_locals);
        Py_VISIT(slot_owned(*frame_func_slot(f)));
        Py_VISIT(slot_owned(*frame_code_slot(f)));
        int n = known_slots(s, f);
        for (int i = 0; i < n; i++)
            Py_VISIT(slot_owned(f->localsplus[i]));
    }
    Py_VISIT(s->context);
    Py_VISIT(s->entry_context);
    Py_VISIT(s->exc_state.exc_value);
    for (Py_ssize_t i = 0; i < s->repr_size; i++)
        Py_VISIT(s->repr_items[i]);
    Py_VISIT(s->asyncio_running_loop);
#if PY_VERSION_HEX >= 0x030E0000
    Py_VISIT(s->asyncio_running_task);
#endif
    Py_VISIT(s->asyncgen_firstiter);
    Py_VISIT(s->asyncgen_finalizer);
    return 0;
}

PyObject *sf_pystate_top_frame(const sf_pystate *s, PyThreadState *ts)
{
    /* PyThreadState_GetFrame does the work (skipping incomplete frames,
     * creating the frame object); point it at the suspended frames for the
     * call.  Creating a frame object allocates: keep the GC (and so any
     * finalizer code) out while the thread state is borrowed. */
    int gc_was_enabled = PyGC_Disable();
#if PY_VERSION_HEX < 0x030D0000
    _PyCFrame *saved = ts->cframe;
    ts->cframe = s->cframe;
#else
    _PyInterpreterFrame *saved = ts->current_frame;
    ts->current_frame = s->current_frame;
#endif
    PyFrameObject *frame = PyThreadState_GetFrame(ts);
#if PY_VERSION_HEX < 0x030D0000
    ts->cframe = saved;
#else
    ts->current_frame = saved;
#endif
    if (gc_was_enabled)
        PyGC_Enable();
    if (frame)
        return (PyObject *)frame;
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* A frame object outlives the frame it shows: give it a copy of the frame
 * (as CPython does when a frame ends), holding what we know it holds. */
static void hand_frame_to_its_object(_PyInterpreterFrame *f, PyFrameObject *fo, int slots)
{
    _PyInterpreterFrame *copy = (_PyInterpreterFrame *)fo->_f_frame_data;
#if PY_VERSION_HEX >= 0x030E0000
    /* Borrowed slots become owned ones: what they borrowed from is going. */
    f->stackpointer = f->localsplus + slots;
    _PyFrame_Copy(f, copy);
#else
    size_t size = (size_t)((char *)&f->localsplus[slots] - (char *)f);
    memcpy(copy, f, size);
    copy->stacktop = slots;
    copy->previous = NULL;
#endif
    copy->frame_obj = NULL;
    copy->owner = FRAME_OWNED_BY_FRAME_OBJECT;
    fo->f_frame = copy;
    if (!PyObject_GC_IsTracked((PyObject *)fo))
        PyObject_GC_Track(fo);
}

/* Drop the references a frame that will never run again holds, or hand
 * them to its frame object.  `keep_code`: the frame's memory outlives this
 * (a generator's) and its owner releases the code itself. */
static void drop_frame(_PyInterpreterFrame *f, int slots, int keep_code)
{
    PyFrameObject *fo = f->frame_obj;
    f->frame_obj = NULL;
    if (fo && Py_REFCNT(fo) > 1) {
        /* The copy takes over every reference the frame held. */
        hand_frame_to_its_object(f, fo, slots);
        if (keep_code && slot_owned(*frame_code_slot(f)))
            Py_INCREF(frame_code(f));
        Py_DECREF(fo);
        return;
    }
    Py_XDECREF(fo);
    for (int i = 0; i < slots; i++)
        slot_clear(&f->localsplus[i]);
    Py_CLEAR(f->f_locals);
    slot_clear(frame_func_slot(f));
    if (!keep_code)
        slot_clear(frame_code_slot(f));
}

/* 3.12+ generators keep their code in their frame and release it when they
 * are freed; 3.11's hold it apart (gi_code), and a cleared frame owns none. */
#if PY_VERSION_HEX >= 0x030C0000
#  define GENERATOR_FRAME_KEEPS_CODE 1
#else
#  define GENERATOR_FRAME_KEEPS_CODE 0
#endif

/* A generator or coroutine that was running on a fiber freed without
 * unwinding can never resume (its caller's frames are gone): close it as
 * CPython does one that returned, unlinked from the dead stack.  Left alone,
 * its frame would keep a `previous` link into freed memory (f_back) and it
 * would say "already executing" for good. */
static void close_running_generator(const sf_pystate *s, _PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030E0000
    PyGenObject *gen = _PyGen_GetGeneratorFromFrame(f);
#else
    PyGenObject *gen = _PyFrame_GetGenerator(f);
#endif
    if (gen->gi_frame_state != FRAME_EXECUTING)
        return;
    int slots = known_slots(s, f);
    gen->gi_frame_state = FRAME_CLEARED;
    gen->gi_running_async = 0;  /* an async generator's asend() in progress ends with it */
    f->previous = NULL;
    gen->gi_exc_state.previous_item = NULL;  /* pointed at its caller's item */
    drop_frame(f, slots, GENERATOR_FRAME_KEEPS_CODE);
    Py_CLEAR(gen->gi_exc_state.exc_value);
}

/* Is `base` (entered) in the chain of contexts entered below it?  Then the
 * fiber entered its base context itself (base.run() while base was current,
 * directly or inside another context's run); otherwise another fiber, whose
 * context it shares, is inside base.run().  The chain may loop (a context
 * entered while current points back to itself): a slow pointer catches that. */
static int base_entered_by_own_chain(PyContext *base)
{
    PyContext *slow = base, *c = base->ctx_prev;
    int step = 0;
    while (c && c->ctx_entered) {
        if (c == base)
            return 1;
        c = c->ctx_prev;
        if (step++ & 1) {
            slow = slow->ctx_prev;
            if (slow == c)
                return 0;
        }
    }
    return c == base;
}

/* Exit the contexts the fiber entered with Context.run, innermost first, down
 * to its base context: their run() calls will never return.  The base itself
 * is exited only if the fiber entered it. */
static void exit_entered_contexts(sf_pystate *s)
{
    PyContext *ctx = (PyContext *)s->context, *base = (PyContext *)s->entry_context;
    int own_base = base && base->ctx_entered && base_entered_by_own_chain(base);
    while (ctx && ctx->ctx_entered && (ctx != base || own_base)) {
        PyContext *outer = ctx->ctx_prev;  /* the reference moves to s->context */
        ctx->ctx_prev = NULL;
        ctx->ctx_entered = 0;
        s->context = (PyObject *)outer;
        Py_DECREF(ctx);
        ctx = outer;
    }
}

int sf_context_entered(PyObject *ctx)
{
    return ctx && ((PyContext *)ctx)->ctx_entered;
}

void sf_pystate_set_base_context(sf_pystate *s, PyObject *ctx)
{
    Py_XSETREF(s->entry_context, Py_XNewRef(ctx));
}

void sf_pystate_discard(sf_pystate *s, void *own_chunk)
{
    exit_entered_contexts(s);
    /* Top down: a generator's frame is closed before its caller's locals
     * (which may hold the generator) are dropped.  (known_slots needs the
     * top frame still recorded in `s`.) */
    for (_PyInterpreterFrame *f = first_frame(s), *previous; f; f = previous) {
        previous = frame_below(s, f);
        if (f->owner == FRAME_OWNED_BY_THREAD)
            drop_frame(f, known_slots(s, f), 0);
        else if (f->owner == FRAME_OWNED_BY_GENERATOR)
            close_running_generator(s, f);
        /* 3.12+ C-stack shim frames (and 3.15's base frame) own nothing */
    }
#if PY_VERSION_HEX < 0x030D0000
    s->cframe = NULL;
#else
    s->current_frame = NULL;
#endif
    free_chunks_above(s->datastack_chunk, own_chunk);
    s->datastack_chunk = NULL;
    sf_pystate_release(s);
}

int sf_gc_collection_mark(void)
{
    return PyInterpreterState_Get()->gc.collecting;
}

void sf_gc_mark_collection(int mark)
{
    PyInterpreterState_Get()->gc.collecting = mark;
}

#if PY_VERSION_HEX < 0x030C0000
static sf_pystate *(*running_fiber_state)(void);

/* sys.setrecursionlimit() for 3.11, where the running fiber's C budget is
 * folded into the thread's recursion counter: the depth it checks against
 * the new limit is the fiber's true depth, and the budget still caps the
 * counter afterwards.  (Other threads' running fibers get their budget back
 * at their next switch.) */
static PyObject *setrecursionlimit_for_fibers(PyObject *module, PyObject *arg)
{
    (void)module;
    int new_limit = _PyLong_AsInt(arg);
    if (new_limit == -1 && PyErr_Occurred())
        return NULL;
    if (new_limit < 1) {
        PyErr_SetString(PyExc_ValueError, "recursion limit must be greater or equal than 1");
        return NULL;
    }
    PyThreadState *ts = PyThreadState_Get();
    sf_pystate *s = running_fiber_state();
    int limit = s ? effective_limit(s, ts) : ts->recursion_limit;
    int depth = limit - ts->recursion_remaining;
    if (depth >= new_limit) {
        PyErr_Format(PyExc_RecursionError,
                     "cannot set the recursion limit to %i at the recursion depth %i: "
                     "the limit is too low", new_limit, depth);
        return NULL;
    }
    ts->recursion_remaining = ts->recursion_limit - depth;  /* the depth CPython should see */
    Py_SetRecursionLimit(new_limit);
    if (s)
        ts->recursion_remaining = effective_limit(s, ts) - depth;
    Py_RETURN_NONE;
}

static PyMethodDef setrecursionlimit_def = {
    "setrecursionlimit", setrecursionlimit_for_fibers, METH_O,
    "setrecursionlimit($module, limit, /)\n--\n\n"
    "Set the maximum depth of the Python interpreter stack to n.\n\n"
    "(stackful: inside a fiber, its C stack budget still applies.)"};

int sf_install_recursion_limit_hook(sf_pystate *(*running)(void))
{
    running_fiber_state = running;
    PyObject *sys = PyImport_ImportModule("sys");
    if (!sys)
        return -1;
    PyObject *func = PyCFunction_NewEx(&setrecursionlimit_def, NULL, NULL);
    int rc = func ? PyObject_SetAttrString(sys, "setrecursionlimit", func) : -1;
    Py_XDECREF(func);
    Py_DECREF(sys);
    return rc;
}
#else
int sf_install_recursion_limit_hook(sf_pystate *(*running)(void))
{
    (void)running;  /* 3.12+: the C budget has a counter of its own */
    return 0;
}
#endif

int sf_interpreter_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

PyObject *sf_fetch_exception(void)
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

void sf_restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *type = Py_NewRef((PyObject *)Py_TYPE(exc));
    PyErr_Restore(type, exc, PyException_GetTraceback(exc));
#endif
}

void sf_pystate_frame_offsets(sf_frame_offsets *o)
{
#if PY_VERSION_HEX < 0x030D0000
    o->pystate_frame = offsetof(sf_pystate, cframe);
    o->via_cframe = 1;
    o->cframe_current_frame = offsetof(_PyCFrame, current_frame);
    o->tstate_frame = offsetof(PyThreadState, cframe);
#else
    o->pystate_frame = offsetof(sf_pystate, current_frame);
    o->via_cframe = 0;
    o->cframe_current_frame = SF_NO_OFFSET;
    o->tstate_frame = offsetof(PyThreadState, current_frame);
#endif
#if PY_VERSION_HEX >= 0x030F0000
    o->pystate_base_frame = offsetof(sf_pystate, base_frame);
#else
    o->pystate_base_frame = SF_NO_OFFSET;
#endif
    o->frame_previous = offsetof(_PyInterpreterFrame, previous);
#if PY_VERSION_HEX >= 0x030E0000
    o->frame_executable = offsetof(_PyInterpreterFrame, f_executable);
    o->executable_tag_bits = Py_TAG_BITS;
#elif PY_VERSION_HEX >= 0x030D0000
    o->frame_executable = offsetof(_PyInterpreterFrame, f_executable);
    o->executable_tag_bits = 0;
#else
    o->frame_executable = offsetof(_PyInterpreterFrame, f_code);
    o->executable_tag_bits = 0;
#endif
#if PY_VERSION_HEX >= 0x030D0000
    o->frame_instr = offsetof(_PyInterpreterFrame, instr_ptr);
    o->instr_is_previous = 0;
#else
    o->frame_instr = offsetof(_PyInterpreterFrame, prev_instr);
    o->instr_is_previous = 1;
#endif
    o->frame_owner = offsetof(_PyInterpreterFrame, owner);
#if PY_VERSION_HEX >= 0x030E0000
    o->owner_not_python = FRAME_OWNED_BY_INTERPRETER;
#elif PY_VERSION_HEX >= 0x030C0000
    o->owner_not_python = FRAME_OWNED_BY_CSTACK;
#else
    o->owner_not_python = 255;  /* 3.11 has no shim frames */
#endif
    o->code_filename = offsetof(PyCodeObject, co_filename);
    o->code_name = offsetof(PyCodeObject, co_name);
    o->code_firstlineno = offsetof(PyCodeObject, co_firstlineno);
    o->code_linetable = offsetof(PyCodeObject, co_linetable);
    o->code_code = offsetof(PyCodeObject, co_code_adaptive);
    o->bytes_size = offsetof(PyVarObject, ob_size);
    o->bytes_data = offsetof(PyBytesObject, ob_sval);
    o->unicode_length = offsetof(PyASCIIObject, length);
    o->unicode_state = offsetof(PyASCIIObject, state);
    o->sizeof_ascii = sizeof(PyASCIIObject);
    o->sizeof_compact = sizeof(PyCompactUnicodeObject);
}

/* ---- frames as data, for dumps ---- */

static PyObject *str_self;

/* A frame's line for a dump (-1 if unknown). */
static int frame_line(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyUnstable_InterpreterFrame_GetLine(f);
#else
    /* 3.11 does not export _PyInterpreterFrame_GetLine: what it does. */
    return PyCode_Addr2Line(f->f_code, _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT));
#endif
}

/* The first local of `f` if its code's first argument is named "self", else
 * None (borrowed).  A parked method's receiver: the Lock of Lock.acquire. */
static PyObject *frame_self(_PyInterpreterFrame *f, PyCodeObject *co)
{
    if (co->co_argcount < 1 || co->co_nlocalsplus < 1)
        return Py_None;
    PyObject *first = PyTuple_GET_ITEM(co->co_localsplusnames, 0);
    if (!str_self && !(str_self = PyUnicode_InternFromString("self")))
        return NULL;
    if (first != str_self && PyUnicode_Compare(first, str_self) != 0)
        return Py_None;
#if PY_VERSION_HEX >= 0x030E0000
    _PyStackRef ref = f->localsplus[0];
    PyObject *value = PyStackRef_IsNullOrInt(ref) ? NULL : PyStackRef_AsPyObjectBorrow(ref);
#else
    PyObject *value = f->localsplus[0];
#endif
    return value ? value : Py_None;
}

/* One tuple per Python frame, innermost first, at most `limit`: (code, line,
 * self) where self is as frame_self says.  The frames of a suspended fiber
 * (`s`), or those running in `ts` (s == NULL).  No frame objects are made:
 * a dump of thousands of tasks would otherwise build one per level. */
PyObject *sf_pystate_frame_list(const sf_pystate *s, PyThreadState *ts, int limit)
{
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    _PyInterpreterFrame *f;
    if (s) {
        f = first_frame(s);
    } else {
#if PY_VERSION_HEX < 0x030D0000
        f = ts->cframe ? ts->cframe->current_frame : NULL;
#else
        f = ts->current_frame;
#endif
    }
    while (f && PyList_GET_SIZE(out) < limit) {
#if PY_VERSION_HEX >= 0x030E0000
        int python = f->owner < FRAME_OWNED_BY_INTERPRETER;
#elif PY_VERSION_HEX >= 0x030C0000
        int python = f->owner < FRAME_OWNED_BY_CSTACK;
#else
        int python = 1;
#endif
        PyObject *code = python ? frame_code(f) : NULL;
        if (code && PyCode_Check(code) && !_PyFrame_IsIncomplete(f)) {
            PyObject *self_ = frame_self(f, (PyCodeObject *)code);
            if (!self_) {
                Py_DECREF(out);
                return NULL;
            }
            PyObject *item = Py_BuildValue("(OiO)", code, frame_line(f), self_);
            if (!item || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(item);
        }
        f = s ? frame_below(s, f) : f->previous;
    }
    return out;
}
