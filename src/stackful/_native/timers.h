/* The runtime's timers (timers.c): a binary min-heap where cancelling a timer
 * removes it at once.  Python sees TimerHeap and Timer; the scheduler's C
 * side uses these. */
#ifndef STACKFUL_TIMERS_H
#define STACKFUL_TIMERS_H

#include <Python.h>

typedef struct sf_timer sf_timer;
typedef struct sf_timer_heap sf_timer_heap;

/* Call callback(arg) at `deadline` (a checked, non-NaN number; +inf: never).
 * A new reference, or NULL with an exception set. */
sf_timer *sf_timer_schedule(sf_timer_heap *h, double deadline, PyObject *callback,
                            PyObject *arg);
/* True if `o` is a TimerHeap (a Timer). */
int sf_is_timer_heap(PyObject *o);
int sf_is_timer(PyObject *o);
/* Cancel; 1 if it was pending. */
int sf_timer_cancel(sf_timer *t);
/* The timer's bound cancel() (a new reference): a park's abort. */
PyObject *sf_timer_canceller(sf_timer *t);
/* The earliest deadline into *deadline, or 0 if no timer is pending. */
int sf_timer_heap_next(const sf_timer_heap *h, double *deadline);
/* Fire the due timers (see TimerHeap.fire_due); -1 if on_error raised. */
Py_ssize_t sf_timer_heap_fire_due(sf_timer_heap *h, double now, PyObject *on_error);
Py_ssize_t sf_timer_heap_clear(sf_timer_heap *h);

int sf_timers_init(PyObject *module);

#endif
