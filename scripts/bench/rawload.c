/*
 * rawload: a minimal raw-socket echo load client, written for the benchmark
 * (scripts/bench.sh). It is the yardstick sockload is held to (sockload
 * should reach at least 0.9x its rate against the same server), so it does
 * the least a correct client can: no event loop, no latency histogram.
 *
 *   rawload --connect HOST:PORT [--connections N] [--duration 5s]
 *           [--warmup 1s] [--size BYTES] [--mode connect|persistent]
 *           [--timeout 2s] [--sources N]
 *
 * N threads, each looping until the end:
 *   connect     socket, connect, send SIZE bytes, read SIZE bytes back, close
 *   persistent  one connection per thread; send SIZE bytes, read them back
 * Every reply is compared with what was sent. TCP_NODELAY is set on each
 * connection (as any request/response client does); SO_RCVTIMEO/SO_SNDTIMEO
 * bound every call (also connect) by --timeout. A failed request counts as an
 * error and, in persistent mode, the thread reconnects.
 *
 * Requests completed during --warmup are not counted; the rate is the count
 * over the measured window divided by its measured length. One JSON object
 * is printed on stdout:
 *   {"client":"rawload","mode":..,"connections":..,"size":..,"duration_s":..,
 *    "requests":..,"errors":..,"rate":..}
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct worker {
    _Alignas(64) atomic_uint_fast64_t requests;
    atomic_uint_fast64_t errors;
    pthread_t thread;
};

static struct sockaddr_storage target;
static socklen_t target_len;
static int persistent = 1;
static long sources = 1; /* --sources: IPv4 loopback source addresses to spread over */
static size_t size = 64;
static double timeout_s = 2.0;
static atomic_int stop;

static double parse_seconds(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) {
        fprintf(stderr, "rawload: bad duration %s\n", s);
        exit(2);
    }
    if (strcmp(end, "ms") == 0)
        v /= 1000.0;
    else if (strcmp(end, "m") == 0)
        v *= 60.0;
    else if (*end != '\0' && strcmp(end, "s") != 0) {
        fprintf(stderr, "rawload: bad duration %s\n", s);
        exit(2);
    }
    return v;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_for(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static void resolve(const char *addr) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
        fprintf(stderr, "rawload: --connect wants HOST:PORT, got %s\n", addr);
        exit(2);
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *h = host;
    if (h[0] == '[') { /* [::1]:port */
        h++;
        h[strlen(h) - 1] = '\0';
    }
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    int err = getaddrinfo(h, colon + 1, &hints, &res);
    if (err != 0) {
        fprintf(stderr, "rawload: %s: %s\n", addr, gai_strerror(err));
        exit(2);
    }
    memcpy(&target, res->ai_addr, res->ai_addrlen);
    target_len = res->ai_addrlen;
    freeaddrinfo(res);
}

/* With --sources N > 1 (an IPv4 loopback target), connection k comes from
 * 127.0.0.(2 + k % N), its port picked at connect time
 * (IP_BIND_ADDRESS_NO_PORT). A client that closes first leaves each
 * connection in TIME_WAIT on its side, and connect() then searches the
 * ephemeral ports of one source address for a free 4-tuple: at ~15k
 * connections/s that search, not the server, takes most of the machine. */
static int bind_source(int fd) {
    static atomic_ulong next;
    if (sources <= 1 || target.ss_family != AF_INET)
        return 0;
    unsigned long k = atomic_fetch_add(&next, 1);
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {0};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(k % (unsigned long)sources));
    return bind(fd, (struct sockaddr *)&src, sizeof src);
}

static int open_conn(void) {
    int fd = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind_source(fd) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&target, target_len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One request on fd: 0 if the whole echo came back intact. */
static int round_trip(int fd, const char *out, char *in) {
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, out + off, size - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)n;
    }
    off = 0;
    while (off < size) {
        ssize_t n = recv(fd, in + off, size - off, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return memcmp(out, in, size) == 0 ? 0 : -1;
}

static void *run(void *arg) {
    struct worker *w = arg;
    char *out = malloc(size), *in = malloc(size);
    if (out == NULL || in == NULL)
        abort();
    for (size_t i = 0; i < size; i++)
        out[i] = (char)('a' + i % 26);
    uint_fast64_t done = 0, errors = 0;
    int fd = -1;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (fd < 0)
            fd = open_conn();
        int ok = fd >= 0 && round_trip(fd, out, in) == 0;
        if (!persistent || !ok) {
            if (fd >= 0)
                close(fd);
            fd = -1;
        }
        if (ok)
            atomic_store_explicit(&w->requests, ++done, memory_order_relaxed);
        else {
            atomic_store_explicit(&w->errors, ++errors, memory_order_relaxed);
            if (!atomic_load_explicit(&stop, memory_order_relaxed))
                sleep_for(0.001); /* do not spin on a refusing server */
        }
    }
    if (fd >= 0)
        close(fd);
    free(out);
    free(in);
    return NULL;
}

static void usage(void) {
    fprintf(stderr, "usage: rawload --connect HOST:PORT [--connections N] [--duration 5s] "
                    "[--warmup 1s] [--size BYTES] [--mode connect|persistent] [--timeout 2s] "
                    "[--sources N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *connect_to = NULL;
    long conns = 32;
    double duration = 5.0, warmup = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--connect") == 0)
            connect_to = v;
        else if (strcmp(a, "--connections") == 0)
            conns = atol(v);
        else if (strcmp(a, "--duration") == 0)
            duration = parse_seconds(v);
        else if (strcmp(a, "--warmup") == 0)
            warmup = parse_seconds(v);
        else if (strcmp(a, "--size") == 0)
            size = (size_t)atol(v);
        else if (strcmp(a, "--sources") == 0)
            sources = atol(v);
        else if (strcmp(a, "--timeout") == 0)
            timeout_s = parse_seconds(v);
        else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "persistent") == 0)
                persistent = 1;
            else if (strcmp(v, "connect") == 0)
                persistent = 0;
            else
                usage();
        } else
            usage();
    }
    if (connect_to == NULL || conns < 1 || size < 1 || duration <= 0 || sources < 1 || sources > 253)
        usage();
    resolve(connect_to);
    signal(SIGPIPE, SIG_IGN);

    struct worker *ws = aligned_alloc(64, sizeof *ws * (size_t)conns);
    if (ws == NULL)
        abort();
    for (long i = 0; i < conns; i++) {
        atomic_init(&ws[i].requests, 0);
        atomic_init(&ws[i].errors, 0);
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (long i = 0; i < conns; i++) {
        int err = pthread_create(&ws[i].thread, &attr, run, &ws[i]);
        if (err != 0) {
            fprintf(stderr, "rawload: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }

    sleep_for(warmup);
    uint_fast64_t req0 = 0, err0 = 0, req1 = 0, err1 = 0;
    double t0 = now();
    for (long i = 0; i < conns; i++) {
        req0 += atomic_load(&ws[i].requests);
        err0 += atomic_load(&ws[i].errors);
    }
    sleep_for(duration);
    for (long i = 0; i < conns; i++) {
        req1 += atomic_load(&ws[i].requests);
        err1 += atomic_load(&ws[i].errors);
    }
    double t1 = now();
    atomic_store(&stop, 1);
    for (long i = 0; i < conns; i++)
        pthread_join(ws[i].thread, NULL);

    double elapsed = t1 - t0;
    uint_fast64_t requests = req1 - req0, errors = err1 - err0;
    printf("{\"client\":\"rawload\",\"mode\":\"%s\",\"connections\":%ld,\"size\":%zu,"
           "\"duration_s\":%.3f,\"requests\":%llu,\"errors\":%llu,\"rate\":%.1f}\n",
           persistent ? "persistent" : "connect", conns, size, elapsed,
           (unsigned long long)requests, (unsigned long long)errors,
           (double)requests / elapsed);
    free(ws);
    return 0;
}
