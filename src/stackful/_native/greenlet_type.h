/* The greenlet type (greenlet_type.c), as greenlet_abi.c and module.c see it.
 *
 * The layout is greenlet's PyGreenlet to the byte: C extensions built against
 * greenlet's greenlet.h (Cython's subclasses of greenlet, gevent's first) put
 * their own fields right after it.  The one implementation pointer is the
 * Fiber that does the work; greenlet_type.c says why a greenlet wraps a fiber
 * rather than being one.
 */
#ifndef STACKFUL_GREENLET_TYPE_H
#define STACKFUL_GREENLET_TYPE_H

#include "fiber_internal.h"

typedef struct {
    PyObject_HEAD
    PyObject *weakreflist;
    PyObject *dict;
    Fiber *fiber;  /* strong; set by tp_new, dropped only by tp_dealloc */
} Greenlet;

extern PyTypeObject GreenletType;
extern PyObject *GreenletExit;  /* greenlet.GreenletExit, a FiberExit */

/* greenlet.getcurrent(): a new reference, or NULL with an exception set. */
PyObject *sf_greenlet_getcurrent(void);
/* The greenlet standing for `f` (made on first use): a new reference. */
PyObject *sf_greenlet_of(Fiber *f);
/* g.switch(*args, **kwargs); `args` a tuple or NULL, `kwargs` a dict or NULL. */
PyObject *sf_greenlet_switch_tuple(Greenlet *g, PyObject *args, PyObject *kwargs);
/* g.throw(typ, val, tb); val and tb may be NULL. */
PyObject *sf_greenlet_throw(Greenlet *g, PyObject *typ, PyObject *val, PyObject *tb);
/* g.parent = parent, with greenlet's errors. */
int sf_greenlet_set_parent(Greenlet *g, PyObject *parent);
/* Ready the type and add it, GreenletExit and getcurrent to the module. */
int sf_greenlet_init(PyObject *module);
/* greenlet's C API capsule (greenlet_abi.c) added to the module. */
int sf_greenlet_abi_init(PyObject *module);

#endif
