/* The hot calls of stackful's cooperative socket, in C: recv, recv_into,
 * send and sendall as the class's own methods, accept as a helper of its
 * Python method; all for a socket in blocking mode (no timeout).
 *
 * The socket's fd is non-blocking for its whole life (stackful/_sockets.py):
 * each call tries the system call, and only when it would block waits --
 * inside a runtime by parking the task on a persistent registration (no
 * epoll_ctl, no exception, no Python frame), outside one by poll() on the
 * thread with the GIL released, which is what a blocking socket does.  (A
 * plain read of a TCP socket in a task may wait first instead: the poller's
 * read plan, poller_epoll.c.)
 * Calls with a timeout, and non-blocking mode, stay in Python.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "fiber.h"
#include "scheduler.h"

static PyObject *str_fileno, *str_accept;

/* The stdlib's socket object keeps its fd right after the object head (its
 * PySocketSockObject has begun so since Python 2).  That is checked on a real
 * socket at start-up; if it ever does not hold, fileno() is called instead. */
static PyTypeObject *std_socket_type;
static int fd_after_head;

static inline int *fd_slot(PyObject *sock)
{
    return (int *)((char *)sock + sizeof(PyObject));
}

static PyTypeObject *coop_socket_type;  /* stackful's socket class, once installed */

static int socket_fd(PyObject *sock, int *fd)
{
    /* The exact class first: a subtype test walks the MRO on every call. */
    if (fd_after_head && ((coop_socket_type && Py_IS_TYPE(sock, coop_socket_type))
                          || PyObject_TypeCheck(sock, std_socket_type))) {
        *fd = *fd_slot(sock);
        if (*fd >= 0)
            return 0;
        errno = EBADF;  /* a closed socket: what the stdlib raises then */
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyObject *r = PyObject_CallMethodNoArgs(sock, str_fileno);
    if (!r)
        return -1;
    long value = PyLong_AsLong(r);
    Py_DECREF(r);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 0) {
        errno = EBADF;  /* a closed socket: what the stdlib raises then */
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *fd = (int)value;
    return 0;
}

/* The call would block: wait until `fd` is ready for `direction`. */
static int wait_ready(int fd, int direction)
{
    PyObject **slot = sf_thread_scheduler_slot();
    if (!slot)
        return -1;
    if (*slot) {
        PyObject *r = sf_wait_io(*slot, fd, direction, 1);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    struct pollfd p = {.fd = fd, .events = direction == SF_READ ? POLLIN : POLLOUT};
    for (;;) {
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = poll(&p, 1, -1);
        Py_END_ALLOW_THREADS
        if (n >= 0)
            return 0;
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

/* After a system call failed with `errno`: 1 to retry (after waiting if it
 * would have blocked), 0 with an exception set otherwise. */
static int should_retry(int fd, int direction)
{
    if (errno == EINTR)
        return PyErr_CheckSignals() < 0 ? 0 : 1;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return wait_ready(fd, direction) < 0 ? 0 : 1;
    PyErr_SetFromErrno(PyExc_OSError);
    return 0;
}

static int parse_flags(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t at, int *flags)
{
    *flags = 0;
    if (nargs <= at)
        return 0;
    long value = PyLong_AsLong(args[at]);
    if (value == -1 && PyErr_Occurred())
        return -1;
    *flags = (int)value;
    return 0;
}

/* The epoll poller of the runtime running on this thread, when a task of it
 * is running (a read may then park); else NULL (no runtime, code the hub
 * runs, or the selectors fallback). */
static sf_poller *task_poller(void)
{
    PyObject **slot = sf_thread_scheduler_slot();
    if (!slot) {
        PyErr_Clear();
        return NULL;
    }
    SchedulerCore *s = (SchedulerCore *)*slot;
    if (!s || !s->current || s->current == Py_None || !sf_is_epoll_poller(s->io))
        return NULL;
    return (sf_poller *)s->io;
}

/* recv() into `buf`: the count, or -1 with an exception; parks the task (or
 * polls) while it would block.  A plain read follows the poller's read plan
 * (poller.h): it may wait before it tries, where trying would most likely
 * find nothing.  Nothing waits between the recv() and the return, so a
 * caller may use a buffer shared with other tasks. */
static Py_ssize_t read_some(PyObject *sock, int fd, char *buf, Py_ssize_t size, int flags)
{
    sf_poller *poller = flags == 0 ? task_poller() : NULL;
    int plan = poller ? sf_poller_read_plan(poller, fd) : SF_PLAN_TRY;
    int waited = plan == SF_PLAN_WAIT;
    if (waited && (wait_ready(fd, SF_READ) < 0 || socket_fd(sock, &fd) < 0))
        return -1;
    for (;;) {
        ssize_t n = recv(fd, buf, (size_t)size, flags);
        if (plan == SF_PLAN_PROBE) {
            sf_poller_note_probe(poller, fd, n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK));
            plan = SF_PLAN_TRY;
        }
        if (n >= 0) {
            if (poller && waited)
                poller = task_poller();  /* after a park: the same, or none left */
            if (poller)
                sf_poller_note_read(poller, fd, n > 0 && n < size);
            return n;
        }
        if (!should_retry(fd, SF_READ) || socket_fd(sock, &fd) < 0)
            return -1;
        waited = 1;
    }
}

/* recv() into one buffer, then a bytes of exactly what came: a recv(65536)
 * that gets 100 bytes costs no 64 KiB allocation and shrink.  One buffer for
 * the process is enough: the GIL is held from the call to the copy, and
 * nothing runs in between (the build refuses free-threaded CPython). */
#define SCRATCH_SIZE (64 * 1024)
static char scratch[SCRATCH_SIZE];

/* ---- the methods of stackful's socket class ----
 *
 * recv, recv_into, send and sendall are method descriptors of the class
 * itself (installed by install_socket_methods()), so a call on a socket runs
 * no Python frame: the interpreter's specialized call reaches the C function
 * directly.  In blocking mode (the socket's _timeout slot holds None) the
 * whole call is here; with a timeout, in non-blocking mode, with keywords,
 * or with the slot unset, the call goes on to the class's Python method of
 * the same name between "_" and "_slow" (_recv_slow, ...), which has the
 * timeout logic. */

static Py_ssize_t timeout_offset;       /* where its _timeout slot sits in an instance */

/* 1 in blocking mode (handled here), 0 otherwise (the Python method's job). */
static inline int blocking_mode(PyObject *self)
{
    return *(PyObject **)((char *)self + timeout_offset) == Py_None;
}

/* The Python method `name` (_recv_slow, ...) with the same arguments. */
static PyObject *call_slow(PyObject *name, PyObject *self, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *small[8];
    PyObject **stack = small;
    if (1 + nargs + nkw > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return NULL;
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[1 + i] = args[i];
    return PyObject_VectorcallMethod(name, stack, (size_t)(1 + nargs), kwnames);
}

/* What the stdlib says for a wrong number of positional arguments. */
static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t least, Py_ssize_t most)
{
    if (nargs >= least && nargs <= most)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes from %zd to %zd positional arguments but %zd "
                 "were given", name, least, most, nargs);
    return -1;
}

static PyObject *str_recv_slow, *str_recv_into_slow, *str_send_slow, *str_sendall_slow;

static PyObject *method_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("recv", nargs, 1, 2) < 0)
        return NULL;
    if (!blocking_mode(self))
        return call_slow(str_recv_slow, self, args, nargs, NULL);
    int fd, flags;
    Py_ssize_t size = PyLong_AsSsize_t(args[0]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    if (parse_flags(args, nargs, 1, &flags) < 0 || socket_fd(self, &fd) < 0)
        return NULL;
    if (size <= SCRATCH_SIZE) {
        Py_ssize_t n = read_some(self, fd, scratch, size, flags);
        return n < 0 ? NULL : PyBytes_FromStringAndSize(scratch, n);
    }
    PyObject *buf = PyBytes_FromStringAndSize(NULL, size);
    if (!buf)
        return NULL;
    Py_ssize_t n = read_some(self, fd, PyBytes_AS_STRING(buf), size, flags);
    if (n < 0) {
        Py_DECREF(buf);
        return NULL;
    }
    if (n != size && _PyBytes_Resize(&buf, n) < 0)
        return NULL;
    return buf;
}

static PyObject *method_recv_into(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames || nargs < 1 || nargs > 3 || !blocking_mode(self))
        return call_slow(str_recv_into_slow, self, args, nargs, kwnames);
    int fd, flags;
    Py_ssize_t nbytes = 0;
    if (nargs > 1) {
        nbytes = PyLong_AsSsize_t(args[1]);
        if (nbytes == -1 && PyErr_Occurred())
            return NULL;
        if (nbytes < 0) {
            PyErr_SetString(PyExc_ValueError, "negative buffersize in recv_into");
            return NULL;
        }
    }
    if (parse_flags(args, nargs, 2, &flags) < 0 || socket_fd(self, &fd) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (nbytes == 0)
        nbytes = view.len;
    else if (nbytes > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "buffer too small for requested bytes");
        return NULL;
    }
    Py_ssize_t n = read_some(self, fd, view.buf, nbytes, flags);
    PyBuffer_Release(&view);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

/* Send from `view` until all of it went (`all`) or some did; returns the
 * count sent, or -1 with an exception. */
static Py_ssize_t send_view(PyObject *sock, int fd, Py_buffer *view, int flags, int all)
{
    Py_ssize_t sent = 0;
    while (sent < view->len) {
        ssize_t n = send(fd, (char *)view->buf + sent, (size_t)(view->len - sent), flags);
        if (n >= 0) {
            sent += n;
            if (!all)
                break;
            continue;
        }
        if (!should_retry(fd, SF_WRITE) || socket_fd(sock, &fd) < 0)
            return -1;
    }
    return sent;
}

static PyObject *send_common(PyObject *self, PyObject *const *args, Py_ssize_t nargs, int all)
{
    int fd, flags;
    if (parse_flags(args, nargs, 1, &flags) < 0 || socket_fd(self, &fd) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t sent = send_view(self, fd, &view, flags, all);
    PyBuffer_Release(&view);
    if (sent < 0)
        return NULL;
    if (all)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(sent);
}

static PyObject *method_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("send", nargs, 1, 2) < 0)
        return NULL;
    if (!blocking_mode(self))
        return call_slow(str_send_slow, self, args, nargs, NULL);
    return send_common(self, args, nargs, 0);
}

static PyObject *method_sendall(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("sendall", nargs, 1, 2) < 0)
        return NULL;
    if (!blocking_mode(self))
        return call_slow(str_sendall_slow, self, args, nargs, NULL);
    return send_common(self, args, nargs, 1);
}

static PyMethodDef socket_methods[] = {
    {"recv", (PyCFunction)(void (*)(void))method_recv, METH_FASTCALL,
     "recv($self, bufsize, flags=0, /)\n--\n\n"
     "Receive up to bufsize bytes; b\"\" at end of stream.  Parks the task while\n"
     "nothing has arrived (see the socket's timeout)."},
    {"recv_into", (PyCFunction)(void (*)(void))method_recv_into, METH_FASTCALL | METH_KEYWORDS,
     "recv_into($self, buffer, nbytes=0, flags=0)\n--\n\n"
     "Receive into buffer (up to nbytes; 0: its size) and return the count.  Parks\n"
     "the task while nothing has arrived (see the socket's timeout)."},
    {"send", (PyCFunction)(void (*)(void))method_send, METH_FASTCALL,
     "send($self, data, flags=0, /)\n--\n\n"
     "Send some of data and return how many bytes went.  Parks the task while the\n"
     "send buffer is full (see the socket's timeout)."},
    {"sendall", (PyCFunction)(void (*)(void))method_sendall, METH_FASTCALL,
     "sendall($self, data, flags=0, /)\n--\n\n"
     "Send all of data, parking the task while the send buffer is full.  With a\n"
     "timeout, it bounds the whole call, as in the stdlib; on a timeout or another\n"
     "error, some of the data may have been sent."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(install_socket_methods_doc,
"_install_socket_methods(cls)\n--\n\n"
"Make recv, recv_into, send and sendall of stackful's socket class (which has a\n"
"_timeout slot and the methods _recv_slow, ... for what C leaves to Python) C\n"
"method descriptors.  Once per process.");

static PyObject *mod_install_socket_methods(PyObject *m, PyObject *cls)
{
    (void)m;
    if (coop_socket_type) {
        PyErr_SetString(PyExc_RuntimeError, "the socket methods are installed already");
        return NULL;
    }
    if (!PyType_Check(cls) || !std_socket_type
        || !PyType_IsSubtype((PyTypeObject *)cls, std_socket_type)) {
        PyErr_SetString(PyExc_TypeError, "_install_socket_methods() takes a socket class");
        return NULL;
    }
    PyObject *slot = PyDict_GetItemString(((PyTypeObject *)cls)->tp_dict, "_timeout");
    if (!slot || !Py_IS_TYPE(slot, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)slot)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "the socket class needs a _timeout slot");
        return NULL;
    }
    for (PyMethodDef *def = socket_methods; def->ml_name; def++) {
        PyObject *descr = PyDescr_NewMethod((PyTypeObject *)cls, def);
        if (!descr || PyObject_SetAttrString(cls, def->ml_name, descr) < 0) {
            Py_XDECREF(descr);
            return NULL;
        }
        Py_DECREF(descr);
    }
    timeout_offset = ((PyMemberDescrObject *)slot)->d_member->offset;
    coop_socket_type = (PyTypeObject *)Py_NewRef(cls);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sock_accept_doc,
"sock_accept(sock)\n--\n\n"
"The stdlib's _accept() of a stackful socket in blocking mode: (fd, address).");

static PyObject *mod_sock_accept(PyObject *m, PyObject *sock)
{
    (void)m;
    for (;;) {
        PyObject *r = PyObject_CallMethodNoArgs(sock, str_accept);
        if (r || !PyErr_ExceptionMatches(PyExc_BlockingIOError))
            return r;
        PyErr_Clear();
        int fd;
        if (socket_fd(sock, &fd) < 0 || wait_ready(fd, SF_READ) < 0)
            return NULL;
    }
}

static PyMethodDef socket_functions[] = {
    {"sock_accept", mod_sock_accept, METH_O, sock_accept_doc},
    {"_install_socket_methods", mod_install_socket_methods, METH_O,
     install_socket_methods_doc},
    {NULL, NULL, 0, NULL},
};

/* Check, on a socket made for the purpose, that the fd sits where socket_fd()
 * reads it; any doubt leaves fileno() in use. */
static void check_fd_layout(void)
{
    PyObject *mod = PyImport_ImportModule("_socket");
    PyObject *type = mod ? PyObject_GetAttrString(mod, "socket") : NULL;
    PyObject *sock = type ? PyObject_CallNoArgs(type) : NULL;
    PyObject *fileno = sock ? PyObject_CallMethodNoArgs(sock, str_fileno) : NULL;
    if (fileno && PyType_Check(type) &&
        ((PyTypeObject *)type)->tp_basicsize >= (Py_ssize_t)(sizeof(PyObject) + sizeof(int)) &&
        PyLong_AsLong(fileno) == *fd_slot(sock) && *fd_slot(sock) >= 0) {
        std_socket_type = (PyTypeObject *)Py_NewRef(type);
        fd_after_head = 1;
    }
    if (sock) {
        PyObject *r = PyObject_CallMethod(sock, "close", NULL);
        Py_XDECREF(r);
    }
    PyErr_Clear();
    Py_XDECREF(fileno);
    Py_XDECREF(sock);
    Py_XDECREF(type);
    Py_XDECREF(mod);
}

int sf_sockets_init(PyObject *m)
{
    str_fileno = PyUnicode_InternFromString("fileno");
    str_accept = PyUnicode_InternFromString("_accept");
    str_recv_slow = PyUnicode_InternFromString("_recv_slow");
    str_recv_into_slow = PyUnicode_InternFromString("_recv_into_slow");
    str_send_slow = PyUnicode_InternFromString("_send_slow");
    str_sendall_slow = PyUnicode_InternFromString("_sendall_slow");
    if (!str_fileno || !str_accept || !str_recv_slow || !str_recv_into_slow || !str_send_slow
        || !str_sendall_slow)
        return -1;
    check_fd_layout();
    return PyModule_AddFunctions(m, socket_functions);
}
