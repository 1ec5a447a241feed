/* The runtime's blocking path in C: park, wake, waits on file descriptors,
 * and the hub's poll.
 *
 * A task gives up control only here (and in the yield step, scheduler.c):
 * park() marks it BLOCKED and switches away -- straight to the next ready
 * task, or to the hub when none is ready -- and whoever makes it ready again
 * (wake, an I/O event, an interruption) sets what its park() returns or
 * raises.  The rules of interruption (which one wins, shields) are written
 * once, in the docstring of Runtime (_core/_run.py); this file follows
 * them and leaves the unusual cases (the end of a batch: timers and I/O due;
 * the run ending) to the Python side.
 *
 * An I/O wait needs no Python frame and no allocation: the task itself is the
 * poller's waiter, and one small IoWait object per task (made at its first
 * wait) says what it waits on and undoes the registration if interrupted.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <limits.h>
#include <math.h>
#include <time.h>

#include "fiber.h"
#include "interp_state.h"
#include "scheduler.h"

static PyObject *str_end_batch, *str_name, *str_on_interrupt, *str_hub_interrupt_pending,
    *str_clock, *str_now;

static void list_for_trim(SchedulerCore *s, TaskCore *task);

#define MAX_PARKED_TO_TRIM (1 << 20)  /* past that, tasks parking in I/O are not listed */

/* ---- switching away ---- */

/* time.monotonic(), which is the real clock's now (_core/_clock.py). */
static inline double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Nothing is ready, but a timer is due already (a deadline that passed while
 * tasks ran, a timeout of zero): fire the due timers here, in the task that is
 * switching away, as the end of a batch does.  Going to the hub for them would
 * cost a round of its Python loop and a poll that returns at once -- more than
 * the rest of an expiring timeout.  I/O is still polled at the end of every
 * batch and whenever the hub runs.  The same on a virtual clock, whose hub would
 * fire them at the time they are due too (it jumps only to timers not yet due).
 * 1 if the timers fired and the run goes on (look at the ready queue again); 0
 * if nothing was due (or the run is ending: the hub's business); -1 on error. */
static int fire_due_in_place(SchedulerCore *s)
{
    double deadline;
    if (s->interrupt != Py_None || !s->timers || !sf_is_timer_heap(s->timers)
        || !sf_timer_heap_next((sf_timer_heap *)s->timers, &deadline))
        return 0;
    double now;
    if (s->real_clock) {
        now = monotonic_now();
    } else {
        /* Another clock (a VirtualClock): ask it.  Whatever goes wrong is left to the
         * hub, which asks again and reports it where the run can end. */
        PyObject *clock = PyObject_GetAttr((PyObject *)s, str_clock);
        PyObject *value = clock ? PyObject_CallMethodNoArgs(clock, str_now) : NULL;
        Py_XDECREF(clock);
        now = value ? PyFloat_AsDouble(value) : -1.0;
        Py_XDECREF(value);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
    }
    if (deadline > now)
        return 0;
    /* A callback's exception goes where the hub's timers send theirs. */
    PyObject *on_error = PyObject_GetAttr((PyObject *)s, str_on_interrupt);
    if (!on_error)
        return -1;
    Py_INCREF(s);
    /* Callbacks run "in the scheduler", as in the hub: no current task, so one
     * that blocks gets the clear error instead of parking the task it interrupted. */
    PyObject *task = s->current;
    s->current = Py_NewRef(Py_None);
    Py_ssize_t fired = sf_timer_heap_fire_due((sf_timer_heap *)s->timers, now, on_error);
    Py_DECREF(on_error);
    Py_XSETREF(s->current, task);
    /* A callback ended the run, or a signal came while no task was current: the hub
     * winds the run down / takes the signal. */
    int to_hub = s->interrupt != Py_None;
    if (!to_hub && fired >= 0) {
        PyObject *signalled = PyObject_GetAttr((PyObject *)s, str_hub_interrupt_pending);
        to_hub = !signalled || signalled != Py_None;
        Py_XDECREF(signalled);
        if (!signalled)
            fired = -1;
    }
    Py_DECREF(s);
    if (fired < 0)
        return -1;
    return !to_hub;
}

/* A switch to a task that has waited through a round of the ready queue
 * misses the cache on everything of it: its TaskCore, its Fiber, its stack
 * and Python frame.  So while one task is switched to, the ones after it are
 * warmed in a pipeline, each step reading only what the step before warmed:
 * the task two places after it (its TaskCore), then the one after that one
 * (its Fiber record), then the one right after (its stack and frame). */
static inline void warm_up_next(ReadyQueue *q)
{
    Py_ssize_t n = q->len;
    if (n > 2)
        __builtin_prefetch(rq_at(q, 2));
    if (n > 1)
        sf_fiber_prefetch_record(task_run_fiber((TaskCore *)rq_at(q, 1)));
    if (n > 0)
        sf_fiber_prefetch_stack(task_run_fiber((TaskCore *)rq_at(q, 0)));
}

/* `task` is queued or parked already: run the next ready task, or the hub
 * when none is.  The batch countdown is counted here; when it runs out the
 * Python side checks timers and I/O (Runtime._end_batch), and may send us to
 * the hub (the run is ending).  Returns 0 once `task` runs again. */
static int switch_away(SchedulerCore *s, TaskCore *task)
{
    PyObject *next = NULL;
    s->yields++;
    if (--s->countdown <= 0) {
        PyObject *to_hub = PyObject_CallMethodNoArgs((PyObject *)s, str_end_batch);
        if (!to_hub)
            return -1;
        int hub = PyObject_IsTrue(to_hub);
        Py_DECREF(to_hub);
        if (hub < 0)
            return -1;
        if (!hub)
            next = rq_pop(s->ready);
    } else {
        next = rq_pop(s->ready);
        if (!next) {
            int fired = fire_due_in_place(s);
            if (fired < 0)
                return -1;
            if (fired)
                next = rq_pop(s->ready);
        }
    }
    if (next == (PyObject *)task) {
        Py_DECREF(next);  /* it was the only one ready (a yield with nobody else) */
        return 0;
    }
    PyObject *to;
    if (next) {
        warm_up_next(s->ready);
        TaskCore *t = (TaskCore *)next;
        Py_XSETREF(t->state, Py_NewRef(STATE_RUNNING));
        to = task_run_fiber(t);
        Py_SETREF(s->current, next);  /* takes over next's reference */
    } else {
        to = s->hub;
        Py_SETREF(s->current, Py_NewRef(Py_None));
    }
    if (!to || !sf_is_fiber(to)) {
        PyErr_SetString(PyExc_RuntimeError, "the scheduler has no fiber to switch to");
        return -1;
    }
    Py_INCREF(task);  /* held across the switch */
    PyObject *r = sf_fiber_switch_empty(to);
    Py_DECREF(task);
    if (!r)
        return -1;
    Py_DECREF(r);
    /* Resumed: whoever switched here made us current and RUNNING. */
    return 0;
}

/* The running task, or NULL with RuntimeError naming `what`. */
static TaskCore *running_task(SchedulerCore *s, const char *what)
{
    if (!s->current || !PyObject_TypeCheck(s->current, &TaskCoreType)) {
        PyErr_Format(PyExc_RuntimeError, "%s must be called from a task", what);
        return NULL;
    }
    return (TaskCore *)s->current;
}

/* Raise the task's pending interruption if it has one and is not shielded,
 * calling `abort` first (the wait was registered).  1 if it raised. */
static int raise_pending(TaskCore *task, PyObject *abort)
{
    if (task->pending_exc == Py_None || task->shield)
        return 0;
    if (!task->pending_exc) {
        PyErr_SetString(PyExc_AttributeError, "the task's '_pending_exc' was deleted");
        return 1;
    }
    PyObject *exc = task->pending_exc;
    task->pending_exc = Py_NewRef(Py_None);
    if (abort && abort != Py_None) {
        PyObject *r = PyObject_CallNoArgs(abort);
        if (!r) {
            Py_DECREF(exc);
            return 1;
        }
        Py_DECREF(r);
    }
    sf_restore_exception(exc);
    return 1;
}

/* Mark `task` parked on `reason`, switch away, and on resuming return what
 * its waker left: a new reference, or NULL with the exception it left. */
static PyObject *block_and_switch(SchedulerCore *s, TaskCore *task, PyObject *reason,
                                  PyObject *abort)
{
    PyObject *here = sf_current_fiber();
    if (!here)
        return NULL;
    Py_XSETREF(task->state, Py_NewRef(STATE_BLOCKED));
    Py_XSETREF(task->wait_reason, Py_NewRef(reason));
    /* For dumps' "parked for": the coarse clock is a read of a shared page (no
     * syscall, no rdtsc), a few ns against a switch's hundred. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    task->parked_ns = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    Py_XSETREF(task->abort, Py_NewRef(abort));
    if (here != task->fiber)
        Py_XSETREF(task->resume_fiber, Py_NewRef(here));
    else
        Py_CLEAR(task->resume_fiber);
    if (switch_away(s, task) < 0)
        return NULL;
    if (task->resume_exc && task->resume_exc != Py_None) {
        PyObject *exc = task->resume_exc;
        task->resume_exc = Py_NewRef(Py_None);
        sf_restore_exception(exc);
        return NULL;
    }
    PyObject *value = task->resume_value ? task->resume_value : Py_NewRef(Py_None);
    task->resume_value = Py_NewRef(Py_None);
    return value;
}

PyDoc_STRVAR(park_doc,
"park(reason, abort=None)\n--\n\n"
"Block the running task until wake() or wake_with_exception(); return the\n"
"value, or raise the exception.  The task is registered where its waker will\n"
"find it first; abort() undoes that if the wait is interrupted.  Which\n"
"interruption wins: see the Runtime docstring.");

static PyObject *Sched_park(SchedulerCore *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "park() takes reason and an optional abort");
        return NULL;
    }
    PyObject *reason = args[0], *abort = nargs == 2 ? args[1] : Py_None;
    TaskCore *task = running_task(s, "park()");
    if (!task || raise_pending(task, abort))
        return NULL;
    return block_and_switch(s, task, reason, abort);
}

/* ---- waking ---- */

static int unpark(SchedulerCore *s, TaskCore *task)
{
    if (task->state != STATE_BLOCKED) {
        PyObject *name = PyObject_GetAttr((PyObject *)task, str_name);
        if (name)
            PyErr_Format(PyExc_RuntimeError, "cannot wake task %R: it is %S, not blocked", name,
                         task->state ? task->state : Py_None);
        Py_XDECREF(name);
        return -1;
    }
    if (rq_push(s->ready, (PyObject *)task) < 0)
        return -1;
    Py_XSETREF(task->abort, Py_NewRef(Py_None));
    Py_XSETREF(task->state, Py_NewRef(STATE_READY));
    return 0;
}

int sf_wake(SchedulerCore *s, TaskCore *task, PyObject *value)
{
    if (unpark(s, task) < 0)
        return -1;
    Py_XSETREF(task->resume_value, Py_NewRef(value));
    return 0;
}

PyDoc_STRVAR(wake_doc,
"wake(task, value=None)\n--\n\nMake a parked task ready; its park() returns `value`.");

static PyObject *Sched_wake(SchedulerCore *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyObject_TypeCheck(args[0], &TaskCoreType)) {
        PyErr_SetString(PyExc_TypeError, "wake() takes a task and an optional value");
        return NULL;
    }
    TaskCore *task = (TaskCore *)args[0];
    if (unpark(s, task) < 0)
        return NULL;
    Py_XSETREF(task->resume_value, Py_NewRef(nargs == 2 ? args[1] : Py_None));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(wake_with_exception_doc,
"wake_with_exception(task, exc)\n--\n\nMake a parked task ready; its park() raises `exc`.");

static PyObject *Sched_wake_with_exception(SchedulerCore *s, PyObject *const *args,
                                           Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &TaskCoreType)) {
        PyErr_SetString(PyExc_TypeError, "wake_with_exception() takes a task and an exception");
        return NULL;
    }
    TaskCore *task = (TaskCore *)args[0];
    if (unpark(s, task) < 0)
        return NULL;
    Py_XSETREF(task->resume_exc, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* ---- interrupting ---- */

int sf_interrupt_parked(SchedulerCore *s, TaskCore *task, PyObject *exc)
{
    PyObject *abort = task->abort ? task->abort : Py_NewRef(Py_None);
    task->abort = Py_NewRef(Py_None);
    if (abort != Py_None) {
        PyObject *r = PyObject_CallNoArgs(abort);
        if (!r) {
            Py_DECREF(abort);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(abort);
    if (unpark(s, task) < 0)
        return -1;
    Py_XSETREF(task->resume_exc, Py_NewRef(exc));
    return 0;
}

/* ---- sleeping ---- */

static PyObject *str_sleep, *wake_sleeper;  /* "sleep"; the timer callback below */

/* A sleeper's timer fired: wake the task (its park() returns None). */
static PyObject *mod_wake_sleeper(PyObject *m, PyObject *arg)
{
    (void)m;
    TaskCore *task = (TaskCore *)arg;
    if (!PyObject_TypeCheck(arg, &TaskCoreType) || !task->runtime ||
        !PyObject_TypeCheck(task->runtime, &SchedulerCoreType)) {
        PyErr_SetString(PyExc_TypeError, "_wake_sleeper() takes a task of a runtime");
        return NULL;
    }
    if (sf_wake((SchedulerCore *)task->runtime, task, Py_None) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sleep_doc,
"sleep(seconds)\n--\n\n"
"Block the running task for `seconds` on the runtime's clock (0: just yield;\n"
"+inf: until cancelled).  On the real clock a finite sleep is all C: a timer\n"
"and a park; anything else goes to Runtime.sleep.");

static PyObject *mod_sleep(PyObject *m, PyObject *arg)
{
    (void)m;
    SchedulerCore *s = sf_running_scheduler("sleep()");
    if (!s)
        return NULL;
    double seconds = -1.0;
    if (PyFloat_CheckExact(arg)) {
        seconds = PyFloat_AS_DOUBLE(arg);
    } else if (PyLong_CheckExact(arg)) {
        seconds = PyLong_AsDouble(arg);
        if (seconds == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();  /* too big for a float: Runtime.sleep says what it makes of it */
            seconds = -1.0;
        }
    }
    Py_INCREF(s);  /* the thread's slot may let go of it while the task sleeps */
    PyObject *r;
    if (s->real_clock && seconds > 0 && seconds < HUGE_VAL && s->current &&
        PyObject_TypeCheck(s->current, &TaskCoreType) && s->timers &&
        sf_is_timer_heap(s->timers)) {
        TaskCore *task = (TaskCore *)s->current;
        if (raise_pending(task, NULL)) {  /* before a timer exists: nothing to undo */
            Py_DECREF(s);
            return NULL;
        }
        sf_timer *timer = sf_timer_schedule((sf_timer_heap *)s->timers, monotonic_now() + seconds,
                                            wake_sleeper, (PyObject *)task);
        PyObject *abort = timer ? sf_timer_canceller(timer) : NULL;
        if (timer && !abort)
            sf_timer_cancel(timer);
        Py_XDECREF(timer);
        r = abort ? block_and_switch(s, task, str_sleep, abort) : NULL;
        Py_XDECREF(abort);
        if (r)
            Py_SETREF(r, Py_NewRef(Py_None));
    } else {
        r = PyObject_CallMethodOneArg((PyObject *)s, str_sleep, arg);
    }
    Py_DECREF(s);
    return r;
}

/* ---- waits on file descriptors ---- */

/* What a task waits on when it waits for an fd: its wait reason, and its
 * abort callback (an interruption takes it off the poller).  One per task,
 * made at its first I/O wait and reused. */
typedef struct {
    PyObject_HEAD
    PyObject *poller;     /* strong */
    PyObject *task;       /* borrowed: the task holds us */
    int fd;
    int direction;
} IoWait;

static PyTypeObject IoWaitType;

static PyObject *IoWait_call(IoWait *w, PyObject *args, PyObject *kwds)
{
    if ((args && PyTuple_GET_SIZE(args)) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "an I/O wait's abort takes no arguments");
        return NULL;
    }
    if (w->poller && w->task)
        sf_poller_cancel((sf_poller *)w->poller, w->fd, w->direction, w->task);
    Py_RETURN_NONE;
}

static PyObject *IoWait_str(IoWait *w)
{
    return PyUnicode_FromFormat("%s(fd=%d)",
                                w->direction == SF_READ ? "wait_readable" : "wait_writable",
                                w->fd);
}

static PyMemberDef IoWait_members[] = {
    {"fd", T_INT, offsetof(IoWait, fd), READONLY, "the file descriptor waited for"},
    {"direction", T_INT, offsetof(IoWait, direction), READONLY, "0: readable, 1: writable"},
    {NULL, 0, 0, 0, NULL},
};

static int IoWait_traverse(IoWait *w, visitproc visit, void *arg)
{
    Py_VISIT(w->poller);
    return 0;
}

static int IoWait_clear(IoWait *w)
{
    Py_CLEAR(w->poller);
    return 0;
}

static void IoWait_dealloc(IoWait *w)
{
    PyObject_GC_UnTrack(w);
    Py_CLEAR(w->poller);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyTypeObject IoWaitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.IoWait",
    .tp_doc = "What a task blocked on a file descriptor waits for (str()), and its abort.",
    .tp_basicsize = sizeof(IoWait),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)IoWait_dealloc,
    .tp_traverse = (traverseproc)IoWait_traverse,
    .tp_clear = (inquiry)IoWait_clear,
    .tp_call = (ternaryfunc)IoWait_call,
    .tp_str = (reprfunc)IoWait_str,
    .tp_repr = (reprfunc)IoWait_str,
    .tp_members = IoWait_members,
};

/* The task's IoWait, made at its first I/O wait. */
static IoWait *io_wait_of(TaskCore *task, PyObject *poller)
{
    IoWait *w = (IoWait *)task->io_wait;
    if (!w) {
        w = PyObject_GC_New(IoWait, &IoWaitType);
        if (!w)
            return NULL;
        w->poller = NULL;
        w->task = (PyObject *)task;
        PyObject_GC_Track(w);
        task->io_wait = (PyObject *)w;
    }
    if (w->poller != poller)
        Py_XSETREF(w->poller, Py_NewRef(poller));
    return w;
}

/* Block the running task until `fd` is ready for `direction`.  Returns None,
 * or NULL with the interruption (Cancelled...) or ClosedResourceError. */
static PyObject *wait_io(SchedulerCore *s, int fd, int direction, int persistent)
{
    TaskCore *task = running_task(s, direction == SF_READ ? "wait_readable()"
                                                          : "wait_writable()");
    if (!task || raise_pending(task, NULL))
        return NULL;
    PyObject *poller = s->io;
    int rc = sf_poller_wait((sf_poller *)poller, fd, direction, (PyObject *)task, persistent);
    if (rc < 0)
        return NULL;
    if (rc == SF_WAIT_READY)
        Py_RETURN_NONE;
    IoWait *w = io_wait_of(task, poller);
    if (!w) {
        sf_poller_cancel((sf_poller *)poller, fd, direction, (PyObject *)task);
        return NULL;
    }
    w->fd = fd;
    w->direction = direction;
    if (!task->trim_listed)
        list_for_trim(s, task);  /* its stack is trimmed if the runtime idles */
    PyObject *r = block_and_switch(s, task, (PyObject *)w, (PyObject *)w);
    return r;
}

SchedulerCore *sf_running_scheduler(const char *what)
{
    PyObject **slot = sf_thread_scheduler_slot();
    if (!slot)
        return NULL;
    if (!*slot) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s must be called inside stackful.run() (no runtime is running)", what);
        return NULL;
    }
    return (SchedulerCore *)*slot;
}

/* An int, or what an object's fileno() returns -- with _core/_io.py's
 * fileno_of's errors. */
static int fd_of(PyObject *obj, int *fd)
{
    PyObject *num;
    if (PyLong_Check(obj)) {
        num = Py_NewRef(obj);
    } else {
        PyObject *method = PyObject_GetAttrString(obj, "fileno");
        if (!method) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "expected a file descriptor or an object with "
                         "fileno(), got %.100s", Py_TYPE(obj)->tp_name);
            return -1;
        }
        num = PyObject_CallNoArgs(method);
        Py_DECREF(method);
        if (!num)
            return -1;
        if (!PyLong_Check(num)) {
            PyErr_Format(PyExc_TypeError, "fileno() returned %.100s, not int",
                         Py_TYPE(num)->tp_name);
            Py_DECREF(num);
            return -1;
        }
    }
    long value = PyLong_AsLong(num);
    Py_DECREF(num);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 0 || value > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "invalid file descriptor %ld", value);
        return -1;
    }
    *fd = (int)value;
    return 0;
}

static PyObject *str_wait_fd;

/* wait_readable/wait_writable without a timeout.  The native poller does it
 * all here; the selectors fallback goes through Runtime.wait_fd. */
static PyObject *wait_fd(SchedulerCore *s, PyObject *obj, int direction, int persistent)
{
    if (!sf_is_epoll_poller(s->io))
        return PyObject_CallMethod((PyObject *)s, "wait_fd", "OOO", obj,
                                   direction == SF_WRITE ? Py_True : Py_False, Py_None);
    int fd;
    if (fd_of(obj, &fd) < 0)
        return NULL;
    Py_INCREF(s);
    PyObject *r = wait_io(s, fd, direction, persistent);
    Py_DECREF(s);
    return r;
}

PyObject *sf_wait_io(PyObject *scheduler, int fd, int direction, int persistent)
{
    SchedulerCore *s = (SchedulerCore *)scheduler;
    if (!sf_is_epoll_poller(s->io))
        return PyObject_CallMethod(scheduler, "wait_fd", "iOO", fd,
                                   direction == SF_WRITE ? Py_True : Py_False, Py_None);
    Py_INCREF(s);
    PyObject *r = wait_io(s, fd, direction, persistent);
    Py_DECREF(s);
    return r;
}

PyDoc_STRVAR(wait_io_doc,
"wait_io(fd, writable=False, persistent=False)\n--\n\n"
"Block the running task until `fd` (an int or an object with fileno()) is\n"
"readable (or writable), with no timeout.  `persistent`: the fd stays\n"
"registered (edge-triggered) after the wait, for an owner that calls\n"
"notify_closing() before closing it -- stackful's sockets.  Raises the task's\n"
"interruption (Cancelled, ...) or ClosedResourceError.");

static PyObject *mod_wait_io(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "wait_io() takes fd, writable and persistent");
        return NULL;
    }
    int writable = nargs > 1 ? PyObject_IsTrue(args[1]) : 0;
    int persistent = nargs > 2 ? PyObject_IsTrue(args[2]) : 0;
    if (writable < 0 || persistent < 0)
        return NULL;
    SchedulerCore *s = sf_running_scheduler(writable ? "wait_writable()" : "wait_readable()");
    if (!s)
        return NULL;
    return wait_fd(s, args[0], writable ? SF_WRITE : SF_READ, persistent);
}

PyDoc_STRVAR(wait_readable_doc,
"wait_readable_now(fd)\n--\n\nwait_io(fd) for a socket of stackful's (persistent).");

static PyObject *mod_wait_readable(PyObject *m, PyObject *fd)
{
    (void)m;
    SchedulerCore *s = sf_running_scheduler("wait_readable()");
    return s ? wait_fd(s, fd, SF_READ, 1) : NULL;
}

PyDoc_STRVAR(wait_writable_doc,
"wait_writable_now(fd)\n--\n\nwait_io(fd, True) for a socket of stackful's (persistent).");

static PyObject *mod_wait_writable(PyObject *m, PyObject *fd)
{
    (void)m;
    SchedulerCore *s = sf_running_scheduler("wait_writable()");
    return s ? wait_fd(s, fd, SF_WRITE, 1) : NULL;
}

/* ---- the hub's poll ---- */

/* A connection's task parks in an I/O wait, often for long, after running
 * code that went deeper than where it rests: the pages below its resting
 * stack pointer stay resident for nothing.  Each task that parks in an I/O
 * wait is listed once; when the runtime has been idle for a while (the hub's
 * poll saw nothing for Runtime's _TRIM_AFTER seconds), the stacks of the
 * listed tasks still parked in I/O are trimmed, one madvise each: an idle
 * connection then costs the page it rests on.  A busy runtime never idles
 * that long and pays nothing but the listing (and, amortized, its sweeps). */

static inline int parked_in_io(TaskCore *task)
{
    return task->state == STATE_BLOCKED && task->io_wait && task->abort == task->io_wait;
}

static Py_ssize_t sweep_parked(SchedulerCore *s, Py_ssize_t count, int trim)
{
    Py_ssize_t trimmed = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        TaskCore *task = (TaskCore *)rq_pop(s->parked_io);
        if (!task)
            break;
        if (parked_in_io(task) && !trim && rq_push(s->parked_io, (PyObject *)task) == 0) {
            Py_DECREF(task);  /* kept for a later trim */
            continue;
        }
        if (parked_in_io(task) && trim) {
            sf_fiber_trim_stack(task_run_fiber(task));
            trimmed++;
        }
        task->trim_listed = 0;
        Py_DECREF(task);
    }
    PyErr_Clear();  /* a failed re-push just drops the entry */
    s->trims += trimmed;
    s->sweep_at = 2 * s->parked_io->len + 64;
    return trimmed;
}

/* List a task about to park in an I/O wait.  Tasks that moved on (woken, or
 * finished: the list would keep them alive) are dropped by a sweep of the
 * whole list each time it has doubled since the last: O(1) per listing. */
static void list_for_trim(SchedulerCore *s, TaskCore *task)
{
    if (s->parked_io->len >= s->sweep_at)
        sweep_parked(s, s->parked_io->len, 0);
    if (s->parked_io->len < MAX_PARKED_TO_TRIM && rq_push(s->parked_io, (PyObject *)task) == 0)
        task->trim_listed = 1;
    PyErr_Clear();
}

PyDoc_STRVAR(trim_parked_doc,
"_trim_parked()\n--\n\n"
"The runtime has been idle a while: trim the stacks of the tasks parked in I/O\n"
"waits (give back the pages below where they rest); returns how many.");

static PyObject *Sched_trim_parked(SchedulerCore *s, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(sweep_parked(s, s->parked_io->len, 1));
}

/* A poller waiter became ready: it is a task parked in an I/O wait. */
static int wake_waiter(PyObject *waiter, void *arg)
{
    SchedulerCore *s = arg;
    if (!PyObject_TypeCheck(waiter, &TaskCoreType)) {
        /* The runtime's own callbacks (the thread bridge's wake-up fd): a call
         * that only records the event -- the poller is mid-iteration. */
        PyObject *r = PyObject_CallNoArgs(waiter);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    TaskCore *task = (TaskCore *)waiter;
    if (task->state != STATE_BLOCKED)
        return 0;  /* interrupted already: its abort took it off (belt and braces) */
    if (unpark(s, task) < 0)
        return -1;
    Py_XSETREF(task->resume_value, Py_NewRef(Py_None));
    return 0;
}

PyDoc_STRVAR(poll_doc,
"_poll(timeout)\n--\n\n"
"Wait for I/O up to `timeout` seconds (None: forever; 0: just look) and make\n"
"every task whose fd is ready ready to run; returns how many.  Signal\n"
"handlers run while it waits (Ctrl-C raises here).");

static PyObject *Sched_poll(SchedulerCore *s, PyObject *arg)
{
    double timeout;
    if (sf_poll_timeout(arg, &timeout) < 0)
        return NULL;
    Py_ssize_t woken;
    Py_INCREF(s);
    if (sf_is_epoll_poller(s->io)) {
        woken = sf_poller_poll((sf_poller *)s->io, timeout, wake_waiter, s);
    } else {
        PyObject *list = PyObject_CallMethod(s->io, "poll", "O", arg);
        woken = list ? PyList_GET_SIZE(list) : -1;
        for (Py_ssize_t i = 0; list && i < PyList_GET_SIZE(list); i++) {
            if (wake_waiter(PyList_GET_ITEM(list, i), s) < 0) {
                woken = -1;
                break;
            }
        }
        Py_XDECREF(list);
    }
    Py_DECREF(s);
    return woken < 0 ? NULL : PyLong_FromSsize_t(woken);
}

PyMethodDef sf_loop_methods[] = {
    {"park", (PyCFunction)(void (*)(void))Sched_park, METH_FASTCALL, park_doc},
    {"wake", (PyCFunction)(void (*)(void))Sched_wake, METH_FASTCALL, wake_doc},
    {"wake_with_exception", (PyCFunction)(void (*)(void))Sched_wake_with_exception,
     METH_FASTCALL, wake_with_exception_doc},
    {"_poll", (PyCFunction)Sched_poll, METH_O, poll_doc},
    {"_trim_parked", (PyCFunction)Sched_trim_parked, METH_NOARGS, trim_parked_doc},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef loop_functions[] = {
    {"wait_io", (PyCFunction)(void (*)(void))mod_wait_io, METH_FASTCALL, wait_io_doc},
    {"_wait_readable", mod_wait_readable, METH_O, wait_readable_doc},
    {"_wait_writable", mod_wait_writable, METH_O, wait_writable_doc},
    {"sleep", mod_sleep, METH_O, sleep_doc},
    {NULL, NULL, 0, NULL},
};

int sf_loop_init(PyObject *m)
{
    str_end_batch = PyUnicode_InternFromString("_end_batch");
    str_name = PyUnicode_InternFromString("name");
    str_wait_fd = PyUnicode_InternFromString("wait_fd");
    str_on_interrupt = PyUnicode_InternFromString("_on_interrupt");
    str_sleep = PyUnicode_InternFromString("sleep");
    str_hub_interrupt_pending = PyUnicode_InternFromString("_hub_interrupt_pending");
    str_clock = PyUnicode_InternFromString("clock");
    str_now = PyUnicode_InternFromString("now");
    static PyMethodDef wake_sleeper_def = {"_wake_sleeper", mod_wake_sleeper, METH_O,
                                           "A sleeping task's timer fired: wake it."};
    wake_sleeper = PyCFunction_New(&wake_sleeper_def, NULL);
    if (!str_end_batch || !str_name || !str_wait_fd || !str_on_interrupt || !str_sleep ||
        !str_hub_interrupt_pending || !str_clock || !str_now || !wake_sleeper ||
        PyType_Ready(&IoWaitType) < 0 ||
        PyModule_AddObjectRef(m, "_wake_sleeper", wake_sleeper) < 0)
        return -1;
    return PyModule_AddFunctions(m, loop_functions);
}
