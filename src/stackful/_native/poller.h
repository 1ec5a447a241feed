/* The I/O poller: which task waits for which file descriptor, and epoll.
 *
 * Two kinds of registration:
 * - one-shot, for any fd a user hands to wait_readable()/wait_writable():
 *   registered while somebody waits and dropped when nobody does, so an fd
 *   closed behind our back can never leave a stale registration that breaks
 *   the next file to get its number;
 * - persistent, for fds whose owner tells us before closing them (stackful's
 *   own sockets call notify_closing): registered once, edge-triggered for
 *   both directions, so a connection's waits cost no epoll_ctl at all; an
 *   edge with nobody waiting is remembered, and the next wait returns at once.
 *
 * poller_epoll.c is the backend (Linux); the Python SelectorsPoller in
 * _core/_io.py has the same face and stays as the portable fallback.
 */
#ifndef STACKFUL_POLLER_H
#define STACKFUL_POLLER_H

#include <Python.h>

typedef struct sf_poller sf_poller;

enum { SF_READ = 0, SF_WRITE = 1 };

/* Outcome of sf_poller_wait. */
enum {
    SF_WAIT_PARKED = 0,  /* the waiter is registered: park it */
    SF_WAIT_READY = 1,   /* a remembered edge: ready now, nothing registered */
};

/* Register `waiter` (a strong reference is taken) for `direction` on `fd`.
 * -1 with BusyResourceError if another waits for the same, or OSError. */
int sf_poller_wait(sf_poller *p, int fd, int direction, PyObject *waiter, int persistent);
/* Drop `waiter`'s registration (its wait was interrupted); a no-op if gone. */
void sf_poller_cancel(sf_poller *p, int fd, int direction, PyObject *waiter);
/* Wait up to `timeout` seconds (< 0: forever; 0: just look) and call
 * wake(waiter, arg) for every waiter whose fd is ready (the poller's
 * reference is dropped after the call).  Returns how many were woken, or -1
 * with an exception (a signal handler's, say). */
Py_ssize_t sf_poller_poll(sf_poller *p, double timeout, int (*wake)(PyObject *, void *),
                          void *arg);
/* A poll's timeout argument: None -> -1 (forever), a negative number -> 0
 * (just look), else the number.  -1 with an exception if not a number. */
int sf_poll_timeout(PyObject *arg, double *timeout);
/* Is `obj` the native poller (else the Python fallback's)? */
int sf_is_epoll_poller(PyObject *obj);

/* The read plan of a persistent fd (poller_epoll.c explains it): should a
 * plain read (recv with no flags) of `fd` try the system call first, wait for
 * readiness first, or try as a probe (then say what it found)? */
enum {
    SF_PLAN_TRY = 0,    /* try; nothing to report */
    SF_PLAN_WAIT = 1,   /* wait for the fd first, then try */
    SF_PLAN_PROBE = 2,  /* try, then sf_poller_note_probe() */
};
int sf_poller_read_plan(sf_poller *p, int fd);
/* A probe's outcome: `found` data (or an error), or would have blocked. */
void sf_poller_note_probe(sf_poller *p, int fd, int found);
/* A plain read returned data: `short_read` if less than asked for. */
void sf_poller_note_read(sf_poller *p, int fd, int short_read);

/* How many fds somebody waits on. */
Py_ssize_t sf_poller_waiting(const sf_poller *p);

int sf_poller_init(PyObject *module);

#endif
