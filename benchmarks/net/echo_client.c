/* The echo load client of bench_net.py: many connections on a few epoll threads.
 *
 *   echo_client HOST PORT CONNECTIONS SIZE WARMUP_S DURATION_S THREADS
 *
 * Each connection sends SIZE bytes, reads SIZE bytes back, and sends again (one message in
 * flight per connection, like wrk's one request per connection); each thread drives its own
 * share of the connections with its own epoll.  Once every connection has had a reply (a busy
 * server may take a while to accept a backlog of connections) and WARMUP_S seconds have
 * passed, the counting starts; after DURATION_S more it prints one line:
 *
 *   messages M bytes B seconds S stalled K errors E ramp R
 *
 * (stalled: connections that completed no message in the measured window; ramp: seconds until
 * every connection had its first reply).  C and epoll so that the client costs less than the
 * Python servers per message; the bench reports this process's CPU time to show it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
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
    int answered;     /* had its first reply */
    long done;        /* messages completed in the measured window */
};

struct worker {
    pthread_t thread;
    int epfd;
    struct conn *conns;
    int count;
    long messages;    /* in the measured window */
    long errors;
};

static char *message;
static size_t size;
/* Written by the main thread, read by the workers. */
static atomic_int measuring, stop;
static atomic_int answered;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Write what is left of the message; wait for EPOLLOUT only if the socket buffer is full. */
static void push(struct worker *w, struct conn *c) {
    while (c->sent < size) {
        ssize_t n = write(c->fd, message + c->sent, size - c->sent);
        if (n < 0) {
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
            } else {
                w->errors++;
            }
            return;
        }
        c->sent += (size_t)n;
    }
}

static void *drive(void *arg) {
    struct worker *w = arg;
    char *sink = malloc(size);
    struct epoll_event events[256];
    for (int i = 0; i < w->count; i++)
        push(w, &w->conns[i]);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int n = epoll_wait(w->epfd, events, 256, 20);
        int counting = atomic_load_explicit(&measuring, memory_order_relaxed);
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            if (events[k].events & EPOLLOUT) {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
                push(w, c);
            }
            if (!(events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            ssize_t got = read(c->fd, sink, size - c->received);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN)
                    continue;
                /* The server closed or reset: count it and stop watching this one. */
                w->errors++;
                epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->received += (size_t)got;
            if (c->received < size)
                continue;
            c->received = 0;
            c->sent = 0;
            if (!c->answered) {
                c->answered = 1;
                atomic_fetch_add(&answered, 1);
            }
            if (counting) {
                c->done++;
                w->messages++;
            }
            push(w, c);
        }
    }
    free(sink);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SIZE WARMUP_S DURATION_S THREADS\n",
                argv[0]);
        return 2;
    }
    int nconns = atoi(argv[3]), nthreads = atoi(argv[7]);
    size = (size_t)atol(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1 || nconns < 1 || size < 1 ||
        nthreads < 1 || nthreads > nconns) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    message = malloc(size);
    memset(message, 'x', size);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    struct worker *workers = calloc((size_t)nthreads, sizeof *workers);

    for (int t = 0, first = 0; t < nthreads; t++) {
        struct worker *w = &workers[t];
        w->epfd = epoll_create1(0);
        w->conns = conns + first;
        w->count = nconns / nthreads + (t < nconns % nthreads);
        first += w->count;
        for (int i = 0; i < w->count; i++) {
            /* Blocking connects, one after the other: the server's backlog never overflows. */
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            int one = 1;
            if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
                fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
                perror("connect");
                return 1;
            }
            w->conns[i].fd = fd;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->conns[i]};
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev);
        }
    }
    double start = now();
    for (int t = 0; t < nthreads; t++)
        pthread_create(&workers[t].thread, NULL, drive, &workers[t]);

    double ramp = -1;
    while (ramp < 0 || now() < start + warmup) {
        struct timespec tick = {0, 1000000};
        nanosleep(&tick, NULL);
        if (ramp < 0 && atomic_load(&answered) == nconns)
            ramp = now() - start;
        if (ramp < 0 && now() - start > 60) {
            fprintf(stderr, "only %d of %d connections had a reply within 60 s\n",
                    atomic_load(&answered), nconns);
            return 1;
        }
    }
    double measure_from = now();
    atomic_store(&measuring, 1);
    struct timespec window = {(time_t)duration, (long)((duration - (time_t)duration) * 1e9)};
    nanosleep(&window, NULL);
    atomic_store(&measuring, 0);
    double seconds = now() - measure_from;
    atomic_store(&stop, 1);

    long messages = 0, errors = 0, stalled = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(workers[t].thread, NULL);
        messages += workers[t].messages;
        errors += workers[t].errors;
    }
    for (int i = 0; i < nconns; i++)
        stalled += conns[i].done == 0;
    printf("messages %ld bytes %ld seconds %.6f stalled %ld errors %ld ramp %.3f\n", messages,
           messages * (long)size, seconds, stalled, errors, ramp);
    return 0;
}
