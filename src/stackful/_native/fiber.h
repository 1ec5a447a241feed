/* What fiber.c offers the rest of the native core (the scheduler's hot path). */
#ifndef STACKFUL_FIBER_H
#define STACKFUL_FIBER_H

#include <Python.h>

/* True if `o` is a Fiber (or a subclass). */
int sf_is_fiber(PyObject *o);

/* Give back the stack pages a suspended fiber is not using (below its saved
 * stack pointer, above its last frame in its own data chunk); the bytes. */
size_t sf_fiber_trim_stack(PyObject *fiber);

/* Start loading what resuming `fiber` (a Fiber) will touch, a few switches
 * ahead of it: its record first, then (once the record is in the cache) its
 * stack top and innermost Python frame.  Hints only: nothing is written. */
void sf_fiber_prefetch_record(PyObject *fiber);
void sf_fiber_prefetch_stack(PyObject *fiber);

/* The running fiber (borrowed), or NULL with an exception set if this thread's
 * record cannot be made. */
PyObject *sf_current_fiber(void);

/* fiber.switch() with no arguments: resume `fiber` and return what the running
 * fiber is resumed with (a new reference), or NULL with an exception set. */
PyObject *sf_fiber_switch_empty(PyObject *fiber);

/* Fiber(target, name=name, parent=parent): a new reference, or NULL with an
 * exception set (the runtime's spawn, spawn.c). */
PyObject *sf_fiber_new(PyObject *target, PyObject *name, PyObject *parent);

/* The running thread's scheduler slot (the runtime running on it, or NULL);
 * NULL with an exception set if the thread record cannot be made. */
PyObject **sf_thread_scheduler_slot(void);

/* Add the scheduler's types (scheduler.c) to the module. */
int sf_scheduler_init(PyObject *module);

#endif
