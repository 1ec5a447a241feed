/* A minimal epoll server in C, single-threaded: the same HTTP and echo logic as protocol.py.
 *
 *   ceiling_server http|echo
 *
 * Not a contender: it shows how fast the load clients (wrk, echo_client) can drive one server
 * core on this machine, so a Python server measured far below it is measured by its own speed,
 * not the client's.  Prints "listening PORT" once it accepts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 65536
#define BUF 65536

static const char body[] = "Hello, world!\n";
static char response[256];
static size_t response_len;
/* Per fd: how many bytes of "\r\n\r\n" the last read ended with (requests split across reads). */
static unsigned char matched[MAX_FD];

static int send_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno != EAGAIN)
                return -1;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, -1); /* rare with these small replies: block rather than queue */
            continue;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Count request heads ending in this chunk, carrying a partial "\r\n\r\n" over. */
static size_t count_heads(int fd, const char *data, size_t len) {
    static const char end[] = "\r\n\r\n";
    size_t count = 0;
    unsigned m = matched[fd];
    for (size_t i = 0; i < len; i++) {
        if (data[i] == end[m]) {
            if (++m == 4) {
                count++;
                m = 0;
            }
        } else {
            m = data[i] == '\r';
        }
    }
    matched[fd] = (unsigned char)m;
    return count;
}

int main(int argc, char **argv) {
    int http = argc == 2 && strcmp(argv[1], "http") == 0;
    if (argc != 2 || (!http && strcmp(argv[1], "echo") != 0)) {
        fprintf(stderr, "usage: %s http|echo\n", argv[0]);
        return 2;
    }
    response_len = (size_t)snprintf(response, sizeof response,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
        strlen(body), body);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    socklen_t alen = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 2048) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        perror("listen");
        return 1;
    }
    int epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    static char buf[BUF], out[BUF];
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int k = 0; k < n; k++) {
            int fd = events[k].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAX_FD) {
                        close(c);
                        continue;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    matched[c] = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t got = read(fd, buf, sizeof buf);
            if (got < 0 && errno == EAGAIN)
                continue;
            if (got <= 0) {
                close(fd);
                continue;
            }
            int failed;
            if (http) {
                size_t heads = count_heads(fd, buf, (size_t)got), len = 0;
                failed = 0;
                while (heads-- && !failed) {
                    if (len + response_len > sizeof out) {
                        failed = send_all(fd, out, len);
                        len = 0;
                    }
                    memcpy(out + len, response, response_len);
                    len += response_len;
                }
                if (!failed && len)
                    failed = send_all(fd, out, len);
            } else {
                failed = send_all(fd, buf, (size_t)got);
            }
            if (failed)
                close(fd);
        }
    }
}
