/*
 * raw_echo: the smallest honest TCP echo server, written for the benchmark
 * (scripts/bench.sh) as the yardstick for sockserv's fork and thread policies.
 *
 *   raw_echo fork|thread PORT        (PORT 0: the bound port is printed on stdout)
 *
 * Binds 127.0.0.1 with SO_REUSEADDR and a SOMAXCONN backlog, then accepts
 * forever:
 *   fork    a child per connection (read/write until EOF, then _exit); the
 *           parent closes its copy of the connection. SIGCHLD is ignored, so
 *           the kernel reaps children and there is no bound on their number.
 *   thread  a detached pthread per connection, with the default attributes
 *           (glibc's default stack: 8 MiB reserved, only touched pages cost).
 * Each connection is served with a 16 KiB buffer on the stack (sockserv reads
 * through a 16 KiB BufReader). SIGPIPE is ignored so a vanished client cannot
 * kill the server. No TCP_NODELAY, no timeouts, no logging. SIGTERM ends it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void echo_loop(int fd) {
    char buf[16384];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return;
            }
            off += w;
        }
    }
}

static void *serve_thread(void *arg) {
    int fd = (int)(intptr_t)arg;
    echo_loop(fd);
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "fork") != 0 && strcmp(argv[1], "thread") != 0)) {
        fprintf(stderr, "usage: %s fork|thread PORT\n", argv[0]);
        return 2;
    }
    int forking = strcmp(argv[1], "fork") == 0;
    int port = atoi(argv[2]);

    signal(SIGPIPE, SIG_IGN);
    if (forking)
        signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0)
        die("socket");
    int one = 1;
    if (setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die("setsockopt SO_REUSEADDR");
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    if (listen(ls, SOMAXCONN) < 0)
        die("listen");
    socklen_t len = sizeof sa;
    if (getsockname(ls, (struct sockaddr *)&sa, &len) < 0)
        die("getsockname");
    printf("%d\n", ntohs(sa.sin_port));
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("accept");
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                usleep(10000);
                continue;
            }
            return 1;
        }
        if (forking) {
            pid_t pid = fork();
            if (pid == 0) {
                close(ls);
                echo_loop(fd);
                _exit(0);
            }
            if (pid < 0)
                perror("fork");
            close(fd);
        } else {
            pthread_t t;
            int err = pthread_create(&t, &attr, serve_thread, (void *)(intptr_t)fd);
            if (err != 0) {
                fprintf(stderr, "pthread_create: %s\n", strerror(err));
                close(fd);
            }
        }
    }
}
