/*
 * epoll_echo: a minimal epoll TCP echo server, written for the load-engine
 * benchmark (scripts/loadbench.sh) as the server both load clients drive.
 *
 *   epoll_echo PORT [THREADS]     (PORT 0: the bound port is printed on stdout)
 *
 * Binds 127.0.0.1 with SO_REUSEADDR and a SOMAXCONN backlog. THREADS
 * (default 1) threads each run one epoll loop; the listening socket is in
 * every loop (EPOLLEXCLUSIVE, so one loop wakes per connection), and each
 * accepted connection stays in the loop that accepted it. Level-triggered:
 * on readable, one read(2) of up to 16 KiB and a write(2) of what was read
 * (a reply the socket buffer cannot take at once is finished with blocking
 * writes: it never happens with the benchmark's 64-byte requests). EOF or an
 * error closes the connection. No TCP_NODELAY on the server side is needed
 * (it writes whole replies), no timeouts, no logging. RLIMIT_NOFILE's soft
 * limit is raised to the hard one. SIGTERM ends it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static int listener;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void write_all(int fd, const char *p, ssize_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EAGAIN) {
            int flags = fcntl(fd, F_GETFL);
            fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
            continue;
        }
        if (w <= 0)
            return;
        p += w;
        n -= w;
    }
}

static void *serve(void *arg) {
    (void)arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = listener};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) < 0)
        die("epoll_ctl listener");
    struct epoll_event events[256];
    char buf[16384];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                for (;;) {
                    int c = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break; /* EAGAIN: another loop took it, or none left */
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0)
                        close(c);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r > 0) {
                write_all(fd, buf, r);
            } else if (r == 0 || errno != EAGAIN) {
                close(fd); /* closing removes it from the epoll set */
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: epoll_echo PORT [THREADS]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (threads < 1)
        threads = 1;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0)
        die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    if (listen(listener, SOMAXCONN) < 0)
        die("listen");
    socklen_t len = sizeof sa;
    getsockname(listener, (struct sockaddr *)&sa, &len);
    printf("%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    pthread_t t;
    for (int i = 1; i < threads; i++)
        if (pthread_create(&t, NULL, serve, NULL) != 0)
            die("pthread_create");
    serve(NULL);
    return 0;
}
