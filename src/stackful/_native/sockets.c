/* The hot calls of stackful's cooperative socket, in C: recv, recv_into,
 * send, sendall, accept for a socket in blocking mode (no timeout).
 *
 * The socket's fd is non-blocking for its whole life (stackful/_sockets.py):
 * each call tries the system call, and only when it would block waits --
 * inside a runtime by parking the task on a persistent registration (no
 * epoll_ctl, no exception, no Python frame), outside one by poll() on the
 * thread with the GIL released, which is what a blocking socket does.
 * Calls with a timeout, and non-blocking mode, stay in Python.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

static int socket_fd(PyObject *sock, int *fd)
{
    if (fd_after_head && PyObject_TypeCheck(sock, std_socket_type)) {
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

/* recv() into one buffer, then a bytes of exactly what came: a recv(65536)
 * that gets 100 bytes costs no 64 KiB allocation and shrink.  One buffer for
 * the process is enough: the GIL is held from the call to the copy, and
 * nothing runs in between (the build refuses free-threaded CPython). */
#define SCRATCH_SIZE (64 * 1024)
static char scratch[SCRATCH_SIZE];

static PyObject *recv_via_scratch(PyObject *sock, int fd, Py_ssize_t size, int flags)
{
    for (;;) {
        ssize_t n = recv(fd, scratch, (size_t)size, flags);
        if (n >= 0)
            return PyBytes_FromStringAndSize(scratch, n);
        if (!should_retry(fd, SF_READ) || socket_fd(sock, &fd) < 0)
            return NULL;
    }
}

PyDoc_STRVAR(sock_recv_doc,
"sock_recv(sock, bufsize, flags=0)\n--\n\n"
"socket.recv() of a stackful socket in blocking mode.");

static PyObject *mod_sock_recv(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    int fd, flags;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "sock_recv() takes sock, bufsize and flags");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    if (parse_flags(args, nargs, 2, &flags) < 0 || socket_fd(args[0], &fd) < 0)
        return NULL;
    if (size <= SCRATCH_SIZE)
        return recv_via_scratch(args[0], fd, size, flags);
    PyObject *buf = PyBytes_FromStringAndSize(NULL, size);
    if (!buf)
        return NULL;
    for (;;) {
        ssize_t n = recv(fd, PyBytes_AS_STRING(buf), (size_t)size, flags);
        if (n >= 0) {
            if (n != size && _PyBytes_Resize(&buf, n) < 0)
                return NULL;
            return buf;
        }
        if (!should_retry(fd, SF_READ))
            break;
        if (socket_fd(args[0], &fd) < 0)  /* closed while we waited */
            break;
    }
    Py_DECREF(buf);
    return NULL;
}

PyDoc_STRVAR(sock_recv_into_doc,
"sock_recv_into(sock, buffer, nbytes=0, flags=0)\n--\n\n"
"socket.recv_into() of a stackful socket in blocking mode.");

static PyObject *mod_sock_recv_into(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    int fd, flags;
    if (nargs < 2 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "sock_recv_into() takes sock, buffer, nbytes, flags");
        return NULL;
    }
    Py_ssize_t nbytes = 0;
    if (nargs > 2) {
        nbytes = PyLong_AsSsize_t(args[2]);
        if (nbytes == -1 && PyErr_Occurred())
            return NULL;
        if (nbytes < 0) {
            PyErr_SetString(PyExc_ValueError, "negative buffersize in recv_into");
            return NULL;
        }
    }
    if (parse_flags(args, nargs, 3, &flags) < 0 || socket_fd(args[0], &fd) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (nbytes == 0)
        nbytes = view.len;
    else if (nbytes > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "buffer too small for requested bytes");
        return NULL;
    }
    PyObject *result = NULL;
    for (;;) {
        ssize_t n = recv(fd, view.buf, (size_t)nbytes, flags);
        if (n >= 0) {
            result = PyLong_FromSsize_t(n);
            break;
        }
        if (!should_retry(fd, SF_READ) || socket_fd(args[0], &fd) < 0)
            break;
    }
    PyBuffer_Release(&view);
    return result;
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

static PyObject *send_common(PyObject *const *args, Py_ssize_t nargs, int all)
{
    int fd, flags;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "send() takes sock, data and flags");
        return NULL;
    }
    if (parse_flags(args, nargs, 2, &flags) < 0 || socket_fd(args[0], &fd) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t sent = send_view(args[0], fd, &view, flags, all);
    PyBuffer_Release(&view);
    if (sent < 0)
        return NULL;
    if (all)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(sent);
}

PyDoc_STRVAR(sock_send_doc,
"sock_send(sock, data, flags=0)\n--\n\nsocket.send() of a stackful socket in blocking mode.");

static PyObject *mod_sock_send(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    return send_common(args, nargs, 0);
}

PyDoc_STRVAR(sock_sendall_doc,
"sock_sendall(sock, data, flags=0)\n--\n\n"
"socket.sendall() of a stackful socket in blocking mode.");

static PyObject *mod_sock_sendall(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    return send_common(args, nargs, 1);
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
    {"sock_recv", (PyCFunction)(void (*)(void))mod_sock_recv, METH_FASTCALL, sock_recv_doc},
    {"sock_recv_into", (PyCFunction)(void (*)(void))mod_sock_recv_into, METH_FASTCALL,
     sock_recv_into_doc},
    {"sock_send", (PyCFunction)(void (*)(void))mod_sock_send, METH_FASTCALL, sock_send_doc},
    {"sock_sendall", (PyCFunction)(void (*)(void))mod_sock_sendall, METH_FASTCALL,
     sock_sendall_doc},
    {"sock_accept", mod_sock_accept, METH_O, sock_accept_doc},
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
    if (!str_fileno || !str_accept)
        return -1;
    check_fd_layout();
    return PyModule_AddFunctions(m, socket_functions);
}
