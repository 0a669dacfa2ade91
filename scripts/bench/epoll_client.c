/*
 * epoll_client: a minimal C persistent-connection echo client on epoll, for
 * scripts/eventbench.sh. It opens N TCP connections (spread over --sources
 * loopback addresses 127.0.0.1, .2, ... so that more than one address's
 * ephemeral ports can be used), then, in one of three modes:
 *
 *   load   every connection sends SIZE bytes, waits for the SIZE bytes back,
 *          and sends again, for WARMUP + DURATION seconds; prints one JSON
 *          line with the replies per second of the measured part
 *          ({"mode":"load","connections":N,"requests":R,"seconds":S,"rate":X,"errors":E,
 *          "total_requests":T}, T counting the warm-up too)
 *   hold   one round trip per connection, then prints "ready N" and keeps
 *          them open and idle until stdin closes or SIGTERM
 *   probe  one new connection makes COUNT round trips, one at a time;
 *          prints {"mode":"probe","count":C,"p50_us":..,"p99_us":..,"max_us":..}
 *
 *   epoll_client MODE HOST PORT [-c N] [-s SIZE] [-d DURATION] [-w WARMUP]
 *                [-n COUNT] [--sources K]
 *
 * Every reply is checked byte for byte; a wrong or short reply, or a closed
 * connection, is an error (load: counted; hold and probe: exit 1). Needs
 * RLIMIT_NOFILE above N (the script raises it). Build: cc -O2 -o epoll_client epoll_client.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    int got; /* bytes of the current reply received */
};

static int size = 64, nconn = 100, sources = 1;
static double duration = 5, warmup = 1;
static long count = 1000;
static char *msg, *rbuf;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* A blocking connection from source address 127.0.0.(1 + i % sources). */
static int dial(const char *host, int port, int i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (sources > 1) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001 + (uint32_t)(i % sources));
        /* The port is chosen at connect, per destination: without this a
         * bind-time search of the source's ephemeral ports slows to a crawl
         * once tens of thousands are in use. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind source");
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    return fd;
}

/* One blocking round trip on fd; 0 when the reply is right. */
static int round_trip(int fd) {
    if (send(fd, msg, size, MSG_NOSIGNAL) != size) return -1;
    int got = 0;
    while (got < size) {
        ssize_t r = read(fd, rbuf + got, size - got);
        if (r <= 0) return -1;
        got += r;
    }
    return memcmp(rbuf, msg, size) ? -1 : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile sig_atomic_t stop;
static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

static int load(const char *host, int port) {
    struct conn *c = calloc(nconn, sizeof *c);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!c || ep < 0) die("setup");
    for (int i = 0; i < nconn; i++) {
        c[i].fd = dial(host, port, i);
        fcntl(c[i].fd, F_SETFL, fcntl(c[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) < 0) die("epoll_ctl");
    }
    for (int i = 0; i < nconn; i++)
        if (send(c[i].fd, msg, size, MSG_NOSIGNAL) != size) die("send");
    struct epoll_event events[1024];
    long done = 0, total = 0, errors = 0;
    double start = now(), measured_from = start + warmup, end = measured_from + duration;
    int measuring = 0;
    for (;;) {
        double t = now();
        if (!measuring && t >= measured_from) {
            measuring = 1;
            done = 0;
        }
        if (t >= end) break;
        int n = epoll_wait(ep, events, 1024, 100);
        for (int i = 0; i < n; i++) {
            struct conn *k = events[i].data.ptr;
            ssize_t r = read(k->fd, rbuf, size - k->got);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, k->fd, NULL);
                continue;
            }
            if (memcmp(rbuf, msg + k->got, r)) errors++;
            k->got += r;
            if (k->got < size) continue;
            k->got = 0;
            done++;
            total++;
            if (send(k->fd, msg, size, MSG_NOSIGNAL) != size) errors++;
        }
    }
    double secs = now() - measured_from;
    printf("{\"mode\":\"load\",\"connections\":%d,\"requests\":%ld,\"seconds\":%.3f,"
           "\"rate\":%.1f,\"errors\":%ld,\"total_requests\":%ld}\n",
           nconn, done, secs, done / secs, errors, total);
    return errors ? 1 : 0;
}

static int hold(const char *host, int port) {
    int *fds = calloc(nconn, sizeof *fds);
    if (!fds) die("calloc");
    for (int i = 0; i < nconn; i++) {
        fds[i] = dial(host, port, i);
        if (round_trip(fds[i])) {
            fprintf(stderr, "epoll_client: round trip %d failed\n", i);
            return 1;
        }
    }
    printf("ready %d\n", nconn);
    fflush(stdout);
    signal(SIGTERM, on_term);
    struct pollfd in = {.fd = 0, .events = POLLIN};
    char b[64];
    while (!stop) {
        int n = poll(&in, 1, 1000);
        if (n > 0 && read(0, b, sizeof b) <= 0) break; /* stdin closed */
    }
    return 0;
}

static int probe(const char *host, int port) {
    double *lat = calloc(count, sizeof *lat);
    if (!lat) die("calloc");
    int fd = dial(host, port, 0);
    for (long i = 0; i < count; i++) {
        double t = now();
        if (round_trip(fd)) {
            fprintf(stderr, "epoll_client: probe %ld failed\n", i);
            return 1;
        }
        lat[i] = (now() - t) * 1e6;
    }
    qsort(lat, count, sizeof *lat, cmp_double);
    printf("{\"mode\":\"probe\",\"count\":%ld,\"p50_us\":%.0f,\"p99_us\":%.0f,\"max_us\":%.0f}\n",
           count, lat[count / 2], lat[count * 99 / 100], lat[count - 1]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: epoll_client load|hold|probe HOST PORT [-c N] [-s SIZE] "
                        "[-d SECS] [-w SECS] [-n COUNT] [--sources K]\n");
        return 2;
    }
    for (int i = 4; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "-c")) nconn = atoi(v);
        else if (!strcmp(f, "-s")) size = atoi(v);
        else if (!strcmp(f, "-d")) duration = atof(v);
        else if (!strcmp(f, "-w")) warmup = atof(v);
        else if (!strcmp(f, "-n")) count = atol(v);
        else if (!strcmp(f, "--sources")) sources = atoi(v);
        else {
            fprintf(stderr, "epoll_client: unknown flag %s\n", f);
            return 2;
        }
    }
    if (nconn < 1 || size < 1 || count < 1 || sources < 1 || sources > 250) {
        fprintf(stderr, "epoll_client: bad count\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    msg = malloc(size);
    rbuf = malloc(size);
    for (int i = 0; i < size; i++) msg[i] = 'a' + i % 26;
    int port = atoi(argv[3]);
    if (!strcmp(argv[1], "load")) return load(argv[2], port);
    if (!strcmp(argv[1], "hold")) return hold(argv[2], port);
    if (!strcmp(argv[1], "probe")) return probe(argv[2], port);
    fprintf(stderr, "epoll_client: unknown mode %s\n", argv[1]);
    return 2;
}
