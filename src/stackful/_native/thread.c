/* The per-thread records: each OS thread (each thread state) that uses fibers
 * gets one, with a root fiber standing for the thread's own stack.
 *
 * CPython has no hook for "a thread ended"; what it does have is the
 * thread-state dict, cleared when the thread's state is.  A sentinel object
 * in that dict is how we learn it: its deallocation marks the record dead,
 * drops the root, and frees the fibers other threads left for it to kill.
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <pthread.h>
#include <string.h>

_Thread_local sf_thread *sf_tls_thread __attribute__((tls_model("initial-exec")));

static PyObject *thread_key;      /* key of our sentinel in the thread-state dict */

void sf_thread_decref(sf_thread *th)
{
    if (--th->refs == 0)
        PyMem_RawFree(th);
}

typedef struct {
    PyObject_HEAD
    sf_thread *thread;
} ThreadSentinel;

static void sentinel_dealloc(ThreadSentinel *self)
{
    sf_thread *th = self->thread;
    if (th) {
        th->tstate = NULL;
        if (sf_tls_thread == th)
            sf_tls_thread = NULL;
        Py_CLEAR(th->transfer.value);
        Py_CLEAR(th->transfer.kwargs);
        Py_CLEAR(th->switch_hook);
        Py_CLEAR(th->scheduler);
        sf_pythread_clear(&th->pythread);
        Fiber *root = th->root, *current = th->current, *previous = th->previous;
        th->root = th->current = th->previous = NULL;
        if (root)
            root->state = FIBER_DEAD;
        PyObject *pending = th->pending_kills;
        th->pending_kills = NULL;
        if (pending) {
            /* Dropped elsewhere and never run again: free them here. */
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++)
                sf_discard_fiber((Fiber *)PyList_GET_ITEM(pending, i), SF_DISCARD_THREAD_EXITED, 1);
            Py_DECREF(pending);
        }
        Py_XDECREF(previous);
        Py_XDECREF(current);
        Py_XDECREF(root);
        sf_thread_decref(th);
    }
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject ThreadSentinelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stackful._native._ThreadSentinel",
    .tp_basicsize = sizeof(ThreadSentinel),
    .tp_dealloc = (destructor)sentinel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

sf_thread *sf_thread_create(PyThreadState *ts)
{
    PyObject *dict = PyThreadState_GetDict();
    if (!dict) {
        PyErr_SetString(PyExc_RuntimeError, "stackful: no thread-state dict");
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(dict, thread_key);
    if (found) {
        sf_thread *th = ((ThreadSentinel *)found)->thread;
        sf_tls_thread = th;
        return th;
    }
    if (PyErr_Occurred())
        return NULL;

    sf_thread *th = PyMem_RawCalloc(1, sizeof(*th));
    if (!th)
        return (sf_thread *)PyErr_NoMemory();
    th->refs = 1;
    th->tstate = ts;
    th->thread_id = PyThread_get_thread_ident();

    ThreadSentinel *sentinel = PyObject_New(ThreadSentinel, &ThreadSentinelType);
    if (!sentinel) {
        PyMem_RawFree(th);
        return NULL;
    }
    sentinel->thread = th;

    Fiber *root = sf_fiber_alloc(&FiberType);
    if (!root) {
        Py_DECREF(sentinel);
        return NULL;
    }
    root->thread = th;
    th->refs++;
    root->state = FIBER_RUNNING;
    root->name = PyUnicode_FromString("root");
    root->cname = "root";
    th->root = root;
    th->current = (Fiber *)Py_NewRef(root);
#ifdef SF_ASAN
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr;
        size_t size;
        pthread_attr_getstack(&attr, &addr, &size);
        root->asan_bottom = addr;
        root->asan_size = size;
        pthread_attr_destroy(&attr);
    }
#endif
    if (!root->name || PyDict_SetItem(dict, thread_key, (PyObject *)sentinel) < 0) {
        Py_DECREF(sentinel);  /* its dealloc drops the root and the record */
        return NULL;
    }
    Py_DECREF(sentinel);
    sf_pythread_init(&th->pythread);
    sf_overflow_prepare_thread();
    sf_tls_thread = th;
    return th;
}

int sf_thread_init_types(void)
{
    thread_key = PyUnicode_InternFromString("stackful._native.thread");
    if (!thread_key)
        return -1;
    return PyType_Ready(&ThreadSentinelType);
}
