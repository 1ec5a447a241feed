/* The I/O poller on Linux's epoll (see poller.h for the two kinds of
 * registration).  Records are indexed by fd.
 *
 * Invariants, per record:
 * - interest is what the epoll set holds for the fd (0: not in it);
 * - one-shot (persistent == 0): interest is exactly the directions somebody
 *   waits for (level-triggered), so nobody waiting means not registered;
 * - persistent: interest is IN|OUT|RDHUP|PRI, edge-triggered, until
 *   forgotten; ready[d] records an edge that arrived while nobody waited for d.
 *
 * Reads of persistent TCP sockets may wait before they try (the read plan,
 * below): after a read that came back short, a read usually finds nothing
 * (EAGAIN), and waiting first saves that system call.  Whether it does is
 * learned per fd, as the share of such reads that found data after all.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "interp_state.h"
#include "poller.h"

#define PERSISTENT_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET)
#define READ_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLPRI | EPOLLHUP | EPOLLERR)
/* After these, a short read no longer means the socket is empty (end of
 * stream, an error, urgent data that stops a read at its mark). */
#define IRREGULAR_EVENTS (EPOLLRDHUP | EPOLLPRI | EPOLLHUP | EPOLLERR)
#define WRITE_EVENTS (EPOLLOUT | EPOLLHUP | EPOLLERR)
#define MAX_EVENTS 1024
#define EPFD_LAZY (-2)  /* most runs never wait on an fd: no epoll instance for them */

typedef struct {
    PyObject *waiter[2];      /* strong, or NULL */
    uint32_t interest;        /* what epoll holds for this fd; 0: not registered */
    unsigned char persistent;
    unsigned char ready[2];   /* persistent only: an edge nobody waited for */
    /* The read plan's state (persistent only; see sf_poller_read_plan). */
    unsigned char tcp;        /* 0: not known yet, 1: a TCP socket, 2: something else */
    unsigned char drained;    /* the last plain read came back short, and no edge since */
    unsigned char irregular;  /* an IRREGULAR_EVENTS event was seen: plans always try */
    unsigned char misses;     /* score: reads after a short one that found nothing */
    unsigned char waits;      /* reads that waited first since the last probe */
} fd_record;

struct sf_poller {
    PyObject_HEAD
    int epfd;                 /* EPFD_LAZY until the first wait, -1 once closed */
    fd_record *records;
    int nrecords;
    Py_ssize_t waiting;       /* records with at least one waiter */
    struct epoll_event *events;
};

static PyTypeObject PollerType;
static const char *const direction_names[2] = {"readable", "writable"};

/* ---- records ---- */

static fd_record *record_for(sf_poller *p, int fd)
{
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "invalid file descriptor %d", fd);
        return NULL;
    }
    if (fd >= p->nrecords) {
        int n = p->nrecords ? p->nrecords : 64;
        while (n <= fd)
            n *= 2;
        fd_record *records = PyMem_Realloc(p->records, (size_t)n * sizeof(*records));
        if (!records) {
            PyErr_NoMemory();
            return NULL;
        }
        memset(records + p->nrecords, 0, (size_t)(n - p->nrecords) * sizeof(*records));
        p->records = records;
        p->nrecords = n;
    }
    return &p->records[fd];
}

static inline int has_waiter(const fd_record *r) { return r->waiter[0] || r->waiter[1]; }

static int epoll_set(sf_poller *p, int fd, fd_record *r, uint32_t events)
{
    if (events == r->interest)
        return 0;
    struct epoll_event ev = {.events = events, .data.fd = fd};
    int op = !r->interest ? EPOLL_CTL_ADD : events ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    if (epoll_ctl(p->epfd, op, fd, &ev) < 0) {
        if (op == EPOLL_CTL_DEL) {
            /* Already closed: epoll forgot it, which is what we want. */
            r->interest = 0;
            return 0;
        }
        if (op == EPOLL_CTL_MOD && errno == ENOENT) {
            /* Closed and reopened behind our back: register the new file. */
            r->interest = 0;
            return epoll_set(p, fd, r, events);
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r->interest = events;
    return 0;
}

/* One-shot: make the registration match who waits now. */
static int oneshot_update(sf_poller *p, int fd, fd_record *r)
{
    uint32_t want = (r->waiter[0] ? EPOLLIN : 0) | (r->waiter[1] ? EPOLLOUT : 0);
    return epoll_set(p, fd, r, want);
}

static void reset_read_plan(fd_record *r)
{
    r->tcp = r->drained = r->irregular = r->misses = r->waits = 0;
}

static int raise_busy(int fd, int direction)
{
    PyObject *mod = PyImport_ImportModule("stackful._core._exceptions");
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "BusyResourceError") : NULL;
    Py_XDECREF(mod);
    if (cls) {
        PyErr_Format(cls, "another task is already waiting for fd %d to become %s", fd,
                     direction_names[direction]);
        Py_DECREF(cls);
    }
    return -1;
}

static int ensure_epoll(sf_poller *p)
{
    if (p->epfd == EPFD_LAZY) {
        p->epfd = epoll_create1(EPOLL_CLOEXEC);
        p->events = p->epfd < 0 ? NULL : PyMem_Malloc(MAX_EVENTS * sizeof(struct epoll_event));
        if (p->epfd < 0 || !p->events) {
            if (p->epfd < 0)
                PyErr_SetFromErrno(PyExc_OSError);
            else
                PyErr_NoMemory();
            if (p->epfd >= 0)
                close(p->epfd);
            p->epfd = EPFD_LAZY;
            return -1;
        }
    }
    if (p->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the poller is closed");
        return -1;
    }
    return 0;
}

/* Take the fd over from one-shot waits (if any) for good. */
static int make_persistent(sf_poller *p, int fd, fd_record *r)
{
    if (r->persistent)
        return 0;
    if (epoll_set(p, fd, r, PERSISTENT_EVENTS) < 0)
        return -1;
    r->persistent = 1;
    r->ready[0] = r->ready[1] = 0;
    reset_read_plan(r);
    return 0;
}

int sf_poller_wait(sf_poller *p, int fd, int direction, PyObject *waiter, int persistent)
{
    if (ensure_epoll(p) < 0)
        return -1;
    fd_record *r = record_for(p, fd);
    if (!r)
        return -1;
    if (r->waiter[direction])
        return raise_busy(fd, direction);
    if (persistent && make_persistent(p, fd, r) < 0)
        return -1;
    if (direction == SF_READ)
        r->drained = 0;  /* whatever reads next follows an edge (see the read plan) */
    if (r->persistent && r->ready[direction]) {
        r->ready[direction] = 0;
        return SF_WAIT_READY;
    }
    int was_idle = !has_waiter(r);
    r->waiter[direction] = Py_NewRef(waiter);
    if (!r->persistent && oneshot_update(p, fd, r) < 0) {
        Py_CLEAR(r->waiter[direction]);
        return -1;
    }
    if (was_idle)
        p->waiting++;
    return SF_WAIT_PARKED;
}

/* Take the waiter of `direction` off `r` (a reference the caller owns). */
static PyObject *take_waiter(sf_poller *p, fd_record *r, int direction)
{
    PyObject *w = r->waiter[direction];
    r->waiter[direction] = NULL;
    if (w && !has_waiter(r))
        p->waiting--;
    return w;
}

void sf_poller_cancel(sf_poller *p, int fd, int direction, PyObject *waiter)
{
    if (fd < 0 || fd >= p->nrecords)
        return;
    fd_record *r = &p->records[fd];
    if (r->waiter[direction] != waiter)
        return;
    Py_DECREF(take_waiter(p, r, direction));
    if (!r->persistent && p->epfd >= 0 && oneshot_update(p, fd, r) < 0)
        PyErr_Clear();  /* the fd is closed or gone: nothing left to undo */
}

Py_ssize_t sf_poller_waiting(const sf_poller *p) { return p->waiting; }

/* ---- the read plan ----
 *
 * Why waiting first after a short read loses nothing: a plain recv() of a TCP
 * socket that returns less than asked for has emptied the receive queue (the
 * kernel copies until the queue or the request runs out), unless it stopped
 * at urgent data or the end of the stream -- events the poller marks as
 * irregular.  Whatever arrives after that read raises a new edge: it is
 * still pending in epoll, or remembered in ready[READ], or it woke a waiter,
 * and a wait clears `drained` so that the reader it woke tries first.  So
 * while `drained` holds and nothing is remembered, the next edge is still to
 * come, and a wait for it misses no data.
 *
 * Whether waiting first pays depends on the peer: a server that answers at
 * once gets the next request before its next read often enough that trying
 * first wins (the wait would cost a poll round); under load the read finds
 * nothing nearly every time.  So the plan keeps a score of the reads after a
 * short one that tried: +1 when it found nothing, -4 when it found data; it
 * waits first from PLAN_WAIT_AT on (a hit rate under about 1 in 5), and still
 * tries one read in PLAN_PROBE_EVERY to keep the score current. */

#define PLAN_SCORE_MAX 16
#define PLAN_WAIT_AT 12
#define PLAN_HIT_COST 4
#define PLAN_PROBE_EVERY 8

/* Is `fd` a TCP socket?  Asked once per registration, at its first short read. */
static unsigned char classify(int fd)
{
    int proto = 0;
    socklen_t len = sizeof(proto);
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP)
        return 1;
    return 2;
}

int sf_poller_read_plan(sf_poller *p, int fd)
{
    if (fd < 0 || fd >= p->nrecords)
        return SF_PLAN_TRY;
    fd_record *r = &p->records[fd];
    if (!r->persistent || !r->drained || r->irregular || r->ready[SF_READ])
        return SF_PLAN_TRY;
    if (r->misses < PLAN_WAIT_AT || ++r->waits >= PLAN_PROBE_EVERY) {
        r->waits = 0;
        return SF_PLAN_PROBE;
    }
    return SF_PLAN_WAIT;
}

void sf_poller_note_probe(sf_poller *p, int fd, int found)
{
    if (fd < 0 || fd >= p->nrecords)
        return;
    fd_record *r = &p->records[fd];
    if (found)
        r->misses = r->misses > PLAN_HIT_COST ? (unsigned char)(r->misses - PLAN_HIT_COST) : 0;
    else if (r->misses < PLAN_SCORE_MAX)
        r->misses++;
}

void sf_poller_note_read(sf_poller *p, int fd, int short_read)
{
    if (fd < 0 || fd >= p->nrecords)
        return;
    fd_record *r = &p->records[fd];
    if (!r->persistent)
        return;
    if (short_read && !r->tcp)
        r->tcp = classify(fd);
    r->drained = short_read && r->tcp == 1;
}

int sf_is_epoll_poller(PyObject *obj) { return obj && Py_IS_TYPE(obj, &PollerType); }

/* ---- waiting for events ---- */

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* epoll_wait, with the GIL released when it may block; retried on EINTR
 * after running signal handlers (whose exception, Ctrl-C say, ends it). */
static int wait_for_events(sf_poller *p, double timeout)
{
    double deadline = timeout > 0 ? monotonic() + timeout : 0;
    for (;;) {
        int ms = timeout < 0 ? -1 : timeout == 0 ? 0 : (int)ceil(timeout * 1000.0);
        if (timeout > 0 && ms <= 0)
            ms = 1;
        int n;
        if (ms == 0) {
            n = epoll_wait(p->epfd, p->events, MAX_EVENTS, 0);
        } else {
            Py_BEGIN_ALLOW_THREADS
            n = epoll_wait(p->epfd, p->events, MAX_EVENTS, ms);
            Py_END_ALLOW_THREADS
        }
        if (n >= 0)
            return n;
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
        if (timeout > 0) {
            timeout = deadline - monotonic();
            if (timeout <= 0)
                return 0;
        }
    }
}

Py_ssize_t sf_poller_poll(sf_poller *p, double timeout, int (*wake)(PyObject *, void *),
                          void *arg)
{
    if (p->epfd == EPFD_LAZY && timeout != 0 && ensure_epoll(p) < 0)
        return -1;  /* the hub sleeps until its next timer in epoll_wait, fds or not */
    if (p->epfd < 0)
        return 0;
    int n = wait_for_events(p, timeout);
    if (n < 0)
        return -1;
    Py_ssize_t woken = 0;
    PyObject *error = NULL;  /* the first failed wake's; the others still happen */
    for (int i = 0; i < n; i++) {
        int fd = p->events[i].data.fd;
        uint32_t ev = p->events[i].events;
        if (fd < 0 || fd >= p->nrecords)
            continue;
        fd_record *r = &p->records[fd];
        if (ev & IRREGULAR_EVENTS)
            r->irregular = 1;
        for (int d = 0; d < 2; d++) {
            if (!(ev & (d == SF_READ ? READ_EVENTS : WRITE_EVENTS)))
                continue;
            PyObject *w = take_waiter(p, r, d);
            if (w) {
                woken++;
                if (wake(w, arg) < 0) {
                    PyObject *exc = sf_fetch_exception();
                    if (error)
                        Py_XDECREF(exc);
                    else
                        error = exc;
                }
                Py_DECREF(w);
            } else if (r->persistent) {
                r->ready[d] = 1;
            }
        }
        if (!r->persistent && oneshot_update(p, fd, r) < 0)
            PyErr_Clear();
    }
    if (error) {
        sf_restore_exception(error);
        return -1;
    }
    return woken;
}

/* ---- the Python face: the same as _core/_io.py's IOPoller ---- */

static PyObject *Poller_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if ((args && PyTuple_GET_SIZE(args)) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "EpollPoller() takes no arguments");
        return NULL;
    }
    sf_poller *p = (sf_poller *)type->tp_alloc(type, 0);
    if (p)
        p->epfd = EPFD_LAZY;
    return (PyObject *)p;
}

static void release_records(sf_poller *p)
{
    for (int fd = 0; fd < p->nrecords; fd++) {
        fd_record *r = &p->records[fd];
        Py_CLEAR(r->waiter[0]);
        Py_CLEAR(r->waiter[1]);
    }
    p->waiting = 0;
}

static void poller_close(sf_poller *p)
{
    if (p->epfd >= 0)
        close(p->epfd);
    p->epfd = -1;
    release_records(p);
    PyMem_Free(p->records);
    p->records = NULL;
    p->nrecords = 0;
}

static int Poller_traverse(sf_poller *p, visitproc visit, void *arg)
{
    for (int fd = 0; fd < p->nrecords; fd++) {
        Py_VISIT(p->records[fd].waiter[0]);
        Py_VISIT(p->records[fd].waiter[1]);
    }
    return 0;
}

static int Poller_clear(sf_poller *p)
{
    release_records(p);
    return 0;
}

static void Poller_dealloc(sf_poller *p)
{
    PyObject_GC_UnTrack(p);
    poller_close(p);
    PyMem_Free(p->events);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

/* selectors.EVENT_READ (1) / EVENT_WRITE (2), as _core/_io.py passes them. */
static int direction_of(long event)
{
    if (event == 1)
        return SF_READ;
    if (event == 2)
        return SF_WRITE;
    PyErr_Format(PyExc_ValueError, "event must be EVENT_READ or EVENT_WRITE, not %ld", event);
    return -1;
}

static int as_fd(PyObject *obj, int *fd)
{
    long value = PyLong_AsLong(obj);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 0 || value > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "invalid file descriptor %ld", value);
        return -1;
    }
    *fd = (int)value;
    return 0;
}

static int parse_fd_event(PyObject *const *args, int *fd, int *direction)
{
    if (as_fd(args[0], fd) < 0)
        return -1;
    long event = PyLong_AsLong(args[1]);
    if (event == -1 && PyErr_Occurred())
        return -1;
    *direction = direction_of(event);
    return *direction < 0 ? -1 : 0;
}

PyDoc_STRVAR(add_doc,
"add(fd, event, waiter, describe, persistent=False)\n--\n\n"
"Register `waiter` for `event` (EVENT_READ or EVENT_WRITE) on `fd`; one waiter\n"
"per (fd, event).  Returns True if it was registered (park it), False if a\n"
"remembered edge of a persistent fd means it is ready now.");

static PyObject *Poller_add(sf_poller *p, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError, "add() takes fd, event, waiter, describe[, persistent]");
        return NULL;
    }
    int fd, direction;
    if (parse_fd_event(args, &fd, &direction) < 0)
        return NULL;
    int persistent = nargs == 5 ? PyObject_IsTrue(args[4]) : 0;
    if (persistent < 0)
        return NULL;
    int rc = sf_poller_wait(p, fd, direction, args[2], persistent);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc == SF_WAIT_PARKED);
}

PyDoc_STRVAR(watch_doc,
"watch(fd)\n--\n\n"
"Register `fd` for good with no waiter: each edge on it (a byte written to a\n"
"wake-up pipe) wakes poll(), and it never counts as a wait.  Ends with forget().");

static PyObject *Poller_watch(sf_poller *p, PyObject *arg)
{
    int fd;
    if (as_fd(arg, &fd) < 0 || ensure_epoll(p) < 0)
        return NULL;
    fd_record *r = record_for(p, fd);
    if (!r || make_persistent(p, fd, r) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(remove_doc,
"remove(fd, event, waiter)\n--\n\n"
"Drop `waiter`'s registration (cancellation or timeout); a no-op if already gone.");

static PyObject *Poller_remove(sf_poller *p, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "remove() takes fd, event and waiter");
        return NULL;
    }
    int fd, direction;
    if (parse_fd_event(args, &fd, &direction) < 0)
        return NULL;
    sf_poller_cancel(p, fd, direction, args[2]);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(forget_doc,
"forget(fd)\n--\n\n"
"`fd` is about to be closed: drop it (persistent or not) and return its\n"
"waiters as (waiter, 'readable' | 'writable') pairs.");

static PyObject *Poller_forget(sf_poller *p, PyObject *arg)
{
    int fd;
    if (as_fd(arg, &fd) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out || fd < 0 || fd >= p->nrecords)
        return out;
    fd_record *r = &p->records[fd];
    if (r->interest && p->epfd >= 0) {
        struct epoll_event ev = {0};
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev);  /* errors: it is gone already */
    }
    r->interest = 0;
    r->persistent = 0;
    r->ready[0] = r->ready[1] = 0;
    reset_read_plan(r);
    for (int d = 0; d < 2; d++) {
        PyObject *w = take_waiter(p, r, d);
        if (!w)
            continue;
        PyObject *pair = Py_BuildValue("(Ns)", w, direction_names[d]);
        if (!pair || PyList_Append(out, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(pair);
    }
    return out;
}

static int append_woken(PyObject *waiter, void *list)
{
    return PyList_Append((PyObject *)list, waiter);
}

PyDoc_STRVAR(poll_doc,
"poll(timeout)\n--\n\n"
"Wait up to `timeout` seconds (None: forever) and return the waiters whose fd\n"
"is ready.  The GIL is released while it blocks.");

int sf_poll_timeout(PyObject *arg, double *timeout)
{
    *timeout = -1;
    if (arg == Py_None)
        return 0;
    double t = PyFloat_AsDouble(arg);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    *timeout = t < 0 ? 0 : t;  /* a deadline already past: just look */
    return 0;
}

static PyObject *Poller_poll(sf_poller *p, PyObject *arg)
{
    double timeout;
    if (sf_poll_timeout(arg, &timeout) < 0)
        return NULL;
    PyObject *woken = PyList_New(0);
    if (!woken)
        return NULL;
    if (sf_poller_poll(p, timeout, append_woken, woken) < 0) {
        Py_DECREF(woken);
        return NULL;
    }
    return woken;
}

PyDoc_STRVAR(after_fork_doc,
"_after_fork()\n--\n\n"
"In a child process after fork(): give it an epoll instance of its own, with\n"
"the same registrations (the inherited one is shared with the parent, which\n"
"would receive -- and take -- the child's events, and the child the parent's).\n"
"Returns the fds that could not be registered again (closed in the child).");

static PyObject *Poller_after_fork(sf_poller *p, PyObject *Py_UNUSED(ignored))
{
    PyObject *failed = PyList_New(0);
    if (!failed || p->epfd < 0)
        return failed;  /* no instance yet (lazy), or closed */
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        Py_DECREF(failed);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    close(p->epfd);  /* the child's copy only: the parent's instance lives on */
    p->epfd = epfd;
    for (int fd = 0; fd < p->nrecords; fd++) {
        fd_record *r = &p->records[fd];
        if (!r->interest)
            continue;
        struct epoll_event ev = {.events = r->interest, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            r->interest = 0;  /* not in the new set: forget(fd) must not try to drop it */
            PyObject *num = PyLong_FromLong(fd);
            if (!num || PyList_Append(failed, num) < 0) {
                Py_XDECREF(num);
                Py_DECREF(failed);
                return NULL;
            }
            Py_DECREF(num);
        }
    }
    return failed;
}

PyDoc_STRVAR(close_doc, "close()\n--\n\nRelease the epoll instance and every registration.");

static PyObject *Poller_close(sf_poller *p, PyObject *Py_UNUSED(ignored))
{
    poller_close(p);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(read_state_doc,
"_read_state(fd)\n--\n\n"
"The read plan's state of `fd`, for tests: (tcp, drained, irregular, misses),\n"
"tcp being 0 (not known yet), 1 (TCP) or 2 (something else); None if `fd` is\n"
"not registered persistently.");

static PyObject *Poller_read_state(sf_poller *p, PyObject *arg)
{
    int fd;
    if (as_fd(arg, &fd) < 0)
        return NULL;
    if (fd >= p->nrecords || !p->records[fd].persistent)
        Py_RETURN_NONE;
    fd_record *r = &p->records[fd];
    return Py_BuildValue("(iiii)", r->tcp, r->drained, r->irregular, r->misses);
}

static PyObject *Poller_get_waiting(sf_poller *p, void *c)
{
    (void)c;
    return PyLong_FromSsize_t(p->waiting);
}

static PyObject *Poller_get_registered(sf_poller *p, void *c)
{
    (void)c;
    Py_ssize_t n = 0;
    for (int fd = 0; fd < p->nrecords; fd++)
        n += p->records[fd].interest != 0;
    return PyLong_FromSsize_t(n);
}

static PyMethodDef Poller_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Poller_add, METH_FASTCALL, add_doc},
    {"watch", (PyCFunction)Poller_watch, METH_O, watch_doc},
    {"remove", (PyCFunction)(void (*)(void))Poller_remove, METH_FASTCALL, remove_doc},
    {"forget", (PyCFunction)Poller_forget, METH_O, forget_doc},
    {"poll", (PyCFunction)Poller_poll, METH_O, poll_doc},
    {"close", (PyCFunction)Poller_close, METH_NOARGS, close_doc},
    {"_after_fork", (PyCFunction)Poller_after_fork, METH_NOARGS, after_fork_doc},
    {"_read_state", (PyCFunction)Poller_read_state, METH_O, read_state_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Poller_getset[] = {
    {"waiting", (getter)Poller_get_waiting, NULL, "how many fds somebody waits on", NULL},
    {"registered", (getter)Poller_get_registered, NULL,
     "how many fds are in the epoll set (for tests)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PollerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native.EpollPoller",
    .tp_doc = "EpollPoller()\n--\n\n"
              "The runtime's I/O poller on epoll: one waiter per (fd, direction); one-shot\n"
              "registrations for any fd, persistent edge-triggered ones for fds whose owner\n"
              "calls forget() before closing them.",
    .tp_basicsize = sizeof(sf_poller),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Poller_new,
    .tp_dealloc = (destructor)Poller_dealloc,
    .tp_traverse = (traverseproc)Poller_traverse,
    .tp_clear = (inquiry)Poller_clear,
    .tp_methods = Poller_methods,
    .tp_getset = Poller_getset,
};

int sf_poller_init(PyObject *m)
{
    if (PyType_Ready(&PollerType) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "EpollPoller", (PyObject *)&PollerType);
}
