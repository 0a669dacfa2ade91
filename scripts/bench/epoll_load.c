/*
 * epoll_load: a minimal epoll closed-loop TCP echo load client, written for
 * the load-engine benchmark (scripts/loadbench.sh) as the yardstick for
 * sockload's event loops: the least a correct event-driven client does.
 *
 *   epoll_load PORT CONNECTIONS THREADS DURATION_S WARMUP_S [SIZE]
 *
 * THREADS threads, each with one level-triggered epoll loop and its share of
 * CONNECTIONS to 127.0.0.1:PORT (connected, blocking, before the clock
 * starts; then non-blocking, TCP_NODELAY). Each connection sends SIZE
 * (default 64) bytes, reads SIZE bytes back however they are split, checks
 * them, and sends the next request: closed loop, one request in flight per
 * connection. The latency of each request (send to complete reply, by
 * CLOCK_MONOTONIC) goes into a per-thread histogram (1 us buckets up to
 * 100 ms, 100 us buckets up to 10 s). Requests completed in the WARMUP_S seconds are not counted.
 * A failed read, a short or wrong reply counts as an error and closes that
 * connection (the benchmark's server never does this).
 *
 * One JSON object on stdout:
 *   {"client":"epoll_load","connections":..,"threads":..,"size":..,
 *    "duration_s":..,"requests":..,"errors":..,"rate":..,"p50_us":..,"p99_us":..}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Latency buckets: 1 us each up to 100 ms, then 100 us each up to 10 s
 * (0.1 % or better, like an HDR histogram with 3 digits); slower: the last. */
#define FINE 100000
#define BUCKETS (FINE + 99000)

static uint64_t bucket(uint64_t us) {
    uint64_t b = us < FINE ? us : FINE + (us - FINE) / 100;
    return b < BUCKETS ? b : BUCKETS - 1;
}

static uint64_t bucket_us(uint64_t b) {
    return b < FINE ? b : FINE + (b - FINE) * 100;
}

struct conn {
    int fd;
    int got;
    uint64_t sent_ns;
};

struct worker {
    pthread_t thread;
    int first, count;
    struct conn *conns;
    uint64_t requests, errors;
    uint32_t *hist;
};

static int port, size, nconns, nthreads;
static double duration_s, warmup_s;
static char *request;
static uint64_t start_ns, measure_ns, end_ns;
static pthread_barrier_t connected, go;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int open_conn(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void send_request(struct conn *c) {
    c->got = 0;
    c->sent_ns = now_ns();
    if (write(c->fd, request, size) != size) {
        close(c->fd);
        c->fd = -1;
    }
}

static void *run(void *arg) {
    struct worker *w = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < w->count; i++) {
        w->conns[i].fd = open_conn();
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, w->conns[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    pthread_barrier_wait(&connected);
    pthread_barrier_wait(&go);
    for (int i = 0; i < w->count; i++)
        send_request(&w->conns[i]);
    struct epoll_event events[256];
    char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, events, 256, 10);
        uint64_t now = now_ns();
        if (now >= end_ns)
            break;
        for (int e = 0; e < n; e++) {
            struct conn *c = &w->conns[events[e].data.u32];
            if (c->fd < 0)
                continue;
            ssize_t r = read(c->fd, buf, size - c->got);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0 || memcmp(buf, request + c->got, r) != 0) {
                if (now_ns() >= measure_ns)
                    w->errors++;
                close(c->fd);
                c->fd = -1;
                continue;
            }
            c->got += r;
            if (c->got < size)
                continue;
            uint64_t done = now_ns();
            if (done >= measure_ns && done < end_ns) {
                uint64_t us = (done - c->sent_ns) / 1000;
                w->hist[bucket(us)]++;
                w->requests++;
            }
            send_request(c);
        }
    }
    return NULL;
}

static uint64_t percentile(uint64_t *h, uint64_t total, double q) {
    uint64_t want = (uint64_t)(q * total + 0.5), seen = 0;
    for (uint64_t b = 0; b < BUCKETS; b++) {
        seen += h[b];
        if (seen >= want && seen > 0)
            return bucket_us(b);
    }
    return bucket_us(BUCKETS - 1);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: epoll_load PORT CONNECTIONS THREADS DURATION_S WARMUP_S [SIZE]\n");
        return 2;
    }
    port = atoi(argv[1]);
    nconns = atoi(argv[2]);
    nthreads = atoi(argv[3]);
    duration_s = atof(argv[4]);
    warmup_s = atof(argv[5]);
    size = argc > 6 ? atoi(argv[6]) : 64;
    if (nconns < 1 || nthreads < 1 || size < 1 || size > 65536 || duration_s <= 0) {
        fprintf(stderr, "epoll_load: bad arguments\n");
        return 2;
    }
    if (nthreads > nconns)
        nthreads = nconns;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    request = malloc(size);
    for (int i = 0; i < size; i++)
        request[i] = 'a' + i % 26;
    pthread_barrier_init(&connected, NULL, nthreads + 1);
    pthread_barrier_init(&go, NULL, nthreads + 1);
    struct worker *ws = calloc(nthreads, sizeof *ws);
    for (int t = 0; t < nthreads; t++) {
        ws[t].first = t * nconns / nthreads;
        ws[t].count = (t + 1) * nconns / nthreads - ws[t].first;
        ws[t].conns = calloc(ws[t].count, sizeof(struct conn));
        ws[t].hist = calloc(BUCKETS, sizeof(uint32_t));
        if (pthread_create(&ws[t].thread, NULL, run, &ws[t]) != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&connected);
    start_ns = now_ns();
    measure_ns = start_ns + (uint64_t)(warmup_s * 1e9);
    end_ns = measure_ns + (uint64_t)(duration_s * 1e9);
    pthread_barrier_wait(&go);
    uint64_t *hist = calloc(BUCKETS, sizeof(uint64_t));
    uint64_t requests = 0, errors = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(ws[t].thread, NULL);
        requests += ws[t].requests;
        errors += ws[t].errors;
        for (int b = 0; b < BUCKETS; b++)
            hist[b] += ws[t].hist[b];
    }
    printf("{\"client\":\"epoll_load\",\"connections\":%d,\"threads\":%d,\"size\":%d,"
           "\"duration_s\":%.3f,\"requests\":%llu,\"errors\":%llu,\"rate\":%.1f,"
           "\"p50_us\":%llu,\"p99_us\":%llu}\n",
           nconns, nthreads, size, duration_s, (unsigned long long)requests,
           (unsigned long long)errors, requests / duration_s,
           (unsigned long long)percentile(hist, requests, 0.5),
           (unsigned long long)percentile(hist, requests, 0.99));
    return 0;
}
