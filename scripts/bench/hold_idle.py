#!/usr/bin/env python3
"""Open K connections to an echo server and hold them idle.

    hold_idle.py --connect HOST:PORT -n K [--ready-file PATH] [--max-hold 300]
                 [--armed-file PATH --go-file PATH]

Each connection is opened and then used for one round trip (one byte out,
the same byte back), so by the time this reports ready the server has
accepted every connection and started its child or thread for it. Then
"ready K" is written to stdout and, atomically, to --ready-file, and the
connections stay open and idle until SIGTERM/SIGINT, stdin's end (when stdin
is a pipe), or --max-hold seconds, whichever comes first. Exits 0 after
closing them, 1 if a connection or round trip failed.

With --go-file, it first writes --armed-file and waits (at most --max-hold
seconds) for the go file to appear before connecting: the benchmark takes its
"before" reading of the server's memory while this process already runs, so
the libraries it shares with the server (libc...) are shared in both readings
and do not show up as a change in the server's PSS.
"""

import argparse
import os
import select
import signal
import socket
import stat
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connect", required=True, help="HOST:PORT")
    p.add_argument("-n", "--connections", type=int, default=300)
    p.add_argument("--ready-file")
    p.add_argument("--max-hold", type=float, default=300.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--armed-file")
    p.add_argument("--go-file")
    a = p.parse_args()

    host, _, port = a.connect.rpartition(":")
    addr = (host.strip("[]"), int(port))

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))

    if a.go_file:
        if a.armed_file:
            _write_atomically(a.armed_file, "armed\n")
        deadline = time.monotonic() + a.max_hold
        while not os.path.exists(a.go_file):
            if stop or time.monotonic() > deadline:
                return 1
            time.sleep(0.01)

    conns = []
    try:
        for i in range(a.connections):
            if stop:
                return 1
            s = socket.create_connection(addr, timeout=a.timeout)
            s.sendall(b"x")
            if s.recv(1) != b"x":
                print(f"hold_idle: connection {i}: no echo", file=sys.stderr)
                return 1
            conns.append(s)
    except OSError as e:
        print(f"hold_idle: connection {len(conns)}: {e}", file=sys.stderr)
        return 1

    msg = f"ready {len(conns)}\n"
    if a.ready_file:
        _write_atomically(a.ready_file, msg)
    sys.stdout.write(msg)
    sys.stdout.flush()

    watch_stdin = _is_pipe(0)
    deadline = time.monotonic() + a.max_hold
    while not stop:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if watch_stdin:
            try:
                r, _, _ = select.select([0], [], [], min(left, 0.5))
            except InterruptedError:
                continue
            if r and not os.read(0, 4096):
                break
        else:
            time.sleep(min(left, 0.5))
    for s in conns:
        s.close()
    return 0


def _write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _is_pipe(fd):
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
