/* The runtime's records in C, shared by scheduler.c (the types and the
 * yield step) and loop.c (park, wake, I/O waits, the hub's poll).
 *
 * The scheduler's policy is Python (stackful/_core/_run.py); what every
 * switch, park and wake touches lives in these structs, which the Python
 * classes derive from (Task from TaskCore, Runtime from SchedulerCore).
 */
#ifndef STACKFUL_SCHEDULER_H
#define STACKFUL_SCHEDULER_H

#include <Python.h>

#include "poller.h"
#include "timers.h"

/* A FIFO ring buffer of strong references (the ready queue). */
typedef struct {
    PyObject_HEAD
    PyObject **items;
    Py_ssize_t head;       /* index of the first item */
    Py_ssize_t len;
    Py_ssize_t cap;        /* a power of two, or 0 */
} ReadyQueue;

/* Invariants (the Python side keeps them too):
 * - state READY: in the runtime's ready queue exactly once;
 * - RUNNING: the runtime's current task;
 * - BLOCKED: parked; `abort` undoes its registration, `wait_reason` names it;
 * - whoever makes a task ready sets resume_value or resume_exc, which the task
 *   reads once when it resumes. */
typedef struct {
    PyObject_HEAD
    PyObject *state;         /* one of the STATE_* strings */
    PyObject *fiber;         /* the task's Fiber, or None once finished */
    PyObject *pending_exc;   /* an interruption for its next blocking point, or None */
    PyObject *resume_value;  /* what its park() returns */
    PyObject *resume_exc;    /* or raises (None: nothing) */
    PyObject *abort;         /* undoes the registration of its wait, or None */
    PyObject *wait_reason;   /* what it waits on (a str, or an object whose str() says) */
    PyObject *resume_fiber;  /* the fiber that parked, if not `fiber` (a fiber the task
                                switched to itself), else NULL */
    PyObject *io_wait;       /* its IoWait (loop.c), made at its first I/O wait, or NULL */
    long long parked_ns;     /* CLOCK_MONOTONIC_COARSE when it last parked (dumps) */
    int shield;              /* > 0: interruptions wait (call_shielded) */
    char trim_listed;        /* in its scheduler's parked_io list */
    /* The rest of a task's record (Task in _core/_task.py says what each is for): here so
     * that a task is made, started and finished without Python code (spawn.c). */
    char exc_retrieved;      /* its exception was looked at (or needs no report) */
    char cancel_requested;   /* Task.cancel() was called */
    int cancel_count;        /* how many times */
    PyObject *name, *id, *parent_id, *runtime;
    PyObject *fn, *args, *kwargs;  /* the call, until the fiber takes it */
    PyObject *joiners;       /* tasks in join(), a list, or None */
    PyObject *result, *exception;
    PyObject *scopes;        /* its open cancel scopes, a list, or None */
    PyObject *group;         /* the TaskGroup it was spawned into, or None */
} TaskCore;

typedef struct {
    PyObject_HEAD
    PyObject *current;       /* the RUNNING task, or None while the hub runs */
    Py_ssize_t countdown;    /* switches left in this batch before timers/I/O are checked */
    ReadyQueue *ready;
    PyObject *hub;           /* the fiber that runs the hub loop (None until run()) */
    PyObject *io;            /* the poller */
    PyObject *timers;        /* the TimerHeap */
    ReadyQueue *parked_io;   /* tasks that parked in I/O waits, each once: their stacks are
                                trimmed when the runtime has been idle a while (loop.c) */
    Py_ssize_t trims;        /* stacks trimmed that way, in all */
    Py_ssize_t sweep_at;     /* parked_io's length that makes it drop tasks that moved on */
    /* What the watchdog's thread reads without the GIL (watchdog.c): word-sized fields that
     * only the runtime's thread writes.  Any of the first three moving, or `current`
     * changing, is progress: a task yielded or parked, the hub took over, a task was
     * spawned (so a new task cannot be mistaken for a finished one at the same address). */
    unsigned long long yields;   /* times a task yielded or parked */
    Py_ssize_t hub_resumptions;  /* times a task handed control back to the hub */
    Py_ssize_t next_id;          /* the id of the next task spawned */
    char idle;                   /* the hub is waiting for timers and I/O */
    char fast_spawn;             /* spawn.c may spawn on its own (the Python side says when) */
    char real_clock;             /* the clock is time.monotonic's: C may read it itself */
    PyObject *live;              /* live tasks: a dict used as an insertion-ordered set */
    PyObject *main;              /* the main task, or None */
    PyObject *interrupt;         /* what ends the run early, or None */
    PyObject *entry;             /* the target of every task fiber */
    PyObject *task_type;         /* the class of the tasks spawn.c makes */
} SchedulerCore;

extern PyTypeObject ReadyQueueType, TaskCoreType, SchedulerCoreType;
extern PyObject *STATE_READY, *STATE_RUNNING, *STATE_BLOCKED, *STATE_FINISHED;

int rq_grow(ReadyQueue *q);

static inline int rq_push(ReadyQueue *q, PyObject *item)
{
    if (q->len == q->cap && rq_grow(q) < 0)
        return -1;
    q->items[(q->head + q->len) & (q->cap - 1)] = Py_NewRef(item);
    q->len++;
    return 0;
}

/* A new reference, or NULL if empty (no exception set). */
static inline PyObject *rq_pop(ReadyQueue *q)
{
    if (!q->len)
        return NULL;
    PyObject *item = q->items[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return item;
}

static inline PyObject *rq_at(ReadyQueue *q, Py_ssize_t i)
{
    return q->items[(q->head + i) & (q->cap - 1)];
}

/* The fiber to switch to to run `task` (the one that parked). */
static inline PyObject *task_run_fiber(TaskCore *task)
{
    return task->resume_fiber ? task->resume_fiber : task->fiber;
}

/* ---- loop.c ---- */

/* Make the parked `task` ready; its park() returns `value`.  0, or -1 with an exception. */
int sf_wake(SchedulerCore *s, TaskCore *task, PyObject *value);

/* Runtime.interrupt for a task parked with nothing to weigh (not shielded, no
 * other interruption): undo its wait (its abort), make it ready, and have its
 * park() raise `exc`.  0, or -1 with an exception. */
int sf_interrupt_parked(SchedulerCore *s, TaskCore *task, PyObject *exc);

/* Block the running task of `scheduler` (a SchedulerCore) until `fd` is ready
 * for `direction` (SF_READ/SF_WRITE), with no timeout; `persistent` as in
 * poller.h.  None, or NULL with the interruption or ClosedResourceError. */
PyObject *sf_wait_io(PyObject *scheduler, int fd, int direction, int persistent);
/* The scheduler running on this thread, or NULL with RuntimeError naming `what`. */
SchedulerCore *sf_running_scheduler(const char *what);
int sf_loop_init(PyObject *module);

/* ---- spawn.c ---- */

int sf_spawn_init(PyObject *module);
extern PyMethodDef sf_spawn_methods[];  /* SchedulerCore methods defined in spawn.c */
int sf_task_traverse(TaskCore *t, visitproc visit, void *arg);
void sf_task_clear(TaskCore *t, int to_none);
void sf_task_finalize(PyObject *task);

/* ---- scope.c ---- */

int sf_scope_init(PyObject *module);

/* ---- watchdog.c ---- */

int sf_watchdog_init(PyObject *module);

/* ---- sockets.c ---- */

int sf_sockets_init(PyObject *module);
extern PyMethodDef sf_loop_methods[];  /* SchedulerCore methods defined in loop.c */

#endif
