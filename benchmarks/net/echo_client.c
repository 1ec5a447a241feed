/* The echo load client of bench_net.py: many connections, one event loop, one core.
 *
 *   echo_client HOST PORT CONNECTIONS SIZE WARMUP_S DURATION_S
 *
 * Each connection sends SIZE bytes, reads SIZE bytes back, and sends again (one message in
 * flight per connection, like wrk's one request per connection).  After WARMUP_S seconds the
 * counters are reset; after DURATION_S more it prints one line:
 *
 *   messages M bytes B seconds S stalled K errors E
 *
 * (stalled: connections that completed no message in the measured window).  C and epoll so
 * that the client costs a fraction of what the Python servers cost per message; the bench
 * reports this process's CPU time to show it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t sent;      /* bytes of the current message written */
    size_t received;  /* bytes of the current message read back */
    long done;        /* messages completed in the measured window */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *message;
static size_t size;
static int epfd;
static long errors;

/* Write what is left of the message; wait for EPOLLOUT only if the socket buffer is full. */
static void push(struct conn *c) {
    while (c->sent < size) {
        ssize_t n = write(c->fd, message + c->sent, size - c->sent);
        if (n < 0) {
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                return;
            }
            errors++;
            return;
        }
        c->sent += (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SIZE WARMUP_S DURATION_S\n", argv[0]);
        return 2;
    }
    int nconns = atoi(argv[3]);
    size = (size_t)atol(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1 || nconns < 1 || size < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    message = malloc(size);
    char *sink = malloc(size);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    memset(message, 'x', size);
    epfd = epoll_create1(0);

    for (int i = 0; i < nconns; i++) {
        /* Blocking connects, one after the other: the server's backlog never overflows. */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
            perror("fcntl");
            return 1;
        }
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    }
    for (int i = 0; i < nconns; i++)
        push(&conns[i]);

    struct epoll_event events[256];
    double start = now(), measure_from = start + warmup, end = measure_from + duration;
    int measuring = warmup <= 0;
    long messages = 0;
    while (1) {
        double t = now();
        if (!measuring && t >= measure_from) {
            measuring = 1;
            messages = 0;
            errors = 0;
            for (int i = 0; i < nconns; i++)
                conns[i].done = 0;
            measure_from = t;
        }
        if (measuring && t >= end)
            break;
        int n = epoll_wait(epfd, events, 256, 50);
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            if (events[k].events & EPOLLOUT) {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                push(c);
            }
            if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t got = read(c->fd, sink, size - c->received);
                if (got <= 0) {
                    if (got < 0 && errno == EAGAIN)
                        continue;
                    /* The server closed or reset: count it and stop watching this one. */
                    errors++;
                    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    continue;
                }
                c->received += (size_t)got;
                if (c->received == size) {
                    c->received = 0;
                    c->sent = 0;
                    c->done++;
                    messages++;
                    push(c);
                }
            }
        }
    }
    double seconds = now() - measure_from;
    long stalled = 0;
    for (int i = 0; i < nconns; i++)
        stalled += conns[i].done == 0;
    printf("messages %ld bytes %ld seconds %.6f stalled %ld errors %ld\n", messages,
           messages * (long)size, seconds, stalled, errors);
    return 0;
}
