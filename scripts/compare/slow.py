#!/usr/bin/env python3
"""The slow-clients probe of scripts/compare.sh: hold N silent and N stalled
connections to an echo server, then time one normal client's request.

    slow.py --connect HOST:PORT|PATH --transport tcp|unix --policy P -n N
            --out FILE [--bound S] [--settle S] [--note TEXT]

*silent*: connected, never a byte sent. *stalled*: connected, then the first
three bytes of a request line ("sta", no newline), then nothing. Both stay
open while the normal client connects and sends "hello\\n"; its latency runs
from the start of its connect to the end of the echoed reply. If no reply
came within --bound seconds the server "locked out" the client; if its
connect was refused or reset, it was "refused".

Writes one JSON object to --out, the format `sockload report` reads
(src/load/compare.rs):

    {"kind":"slow","policy":"fork","transport":"tcp","silent":100,
     "stalled":100,"bound_s":5.0,"latency_us":812.0,"locked_out":false,
     "refused":false,"note":""}

"silent" and "stalled" are the connections asked for; when fewer could be
opened (a full backlog, the open-files limit) the note says how many. All
sockets are closed before it exits. Exit status 0 when the file was written.
"""

import argparse
import errno
import json
import os
import resource
import select
import socket
import sys
import time

REQUEST = b"hello\n"
PARTIAL = b"sta"


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def address(transport, where):
    if transport == "unix":
        return socket.AF_UNIX, where
    host, _, port = where.rpartition(":")
    return socket.AF_INET6 if ":" in host else socket.AF_INET, (host.strip("[]"), int(port))


def count(failed, err):
    """Adds one failure with errno err to the tally {name: count}."""
    name = errno.errorcode.get(err, str(err))
    failed[name] = failed.get(name, 0) + 1


def open_many(family, addr, n, deadline):
    """Starts n non-blocking connects, then waits (until deadline) for them.
    Returns (connected sockets, how many failed and why)."""
    pending, done, failed = [], [], {}

    def fail(s, err):
        count(failed, err)
        s.close()

    for _ in range(n):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            count(failed, e.errno)
            continue
        s.setblocking(False)
        err = s.connect_ex(addr)
        if err == 0:
            done.append(s)
        elif err in (errno.EINPROGRESS, errno.EALREADY):
            pending.append(s)
        else:
            fail(s, err)
    poller = select.poll()
    by_fd = {}
    for s in pending:
        poller.register(s.fileno(), select.POLLOUT)
        by_fd[s.fileno()] = s
    while by_fd:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(left * 1000):
            s = by_fd.pop(fd)
            poller.unregister(fd)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fail(s, err)
            else:
                done.append(s)
    for s in by_fd.values():
        fail(s, errno.ETIMEDOUT)
    return done, failed


def normal_request(family, addr, bound):
    """One normal client: (latency in µs or None, outcome) where outcome is
    "ok", "locked out" or "refused"."""
    start = time.monotonic()
    deadline = start + bound
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(bound)
        try:
            s.connect(addr)
            s.sendall(REQUEST)
            got = b""
            while len(got) < len(REQUEST):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, "locked out"
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    return None, "refused"
                got += chunk
        except socket.timeout:
            return None, "locked out"
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
            return None, "refused"
        if not got.startswith(REQUEST):
            raise SystemExit(f"slow.py: the normal client got {got[:40]!r}, not its echo")
        return (time.monotonic() - start) * 1e6, "ok"
    finally:
        s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connect", required=True, metavar="HOST:PORT|PATH")
    p.add_argument("--transport", choices=["tcp", "unix"], default="tcp")
    p.add_argument("--policy", required=True)
    p.add_argument("-n", type=int, required=True, help="silent and stalled connections, each")
    p.add_argument("--bound", type=float, default=5.0, help="seconds before 'locked out'")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds between opening the slow connections and the normal request")
    p.add_argument("--out", required=True)
    p.add_argument("--note", default="")
    a = p.parse_args()
    if a.n < 0:
        p.error("-n: must be 0 or more")
    raise_nofile(2 * a.n + 64)
    family, addr = address(a.transport, a.connect)
    deadline = time.monotonic() + 3.0 + a.n / 500
    silent, silent_failed = open_many(family, addr, a.n, deadline)
    stalled, stalled_failed = open_many(family, addr, a.n, deadline + 3.0)
    for s in list(stalled):
        try:
            s.send(PARTIAL)
        except OSError as e:
            stalled.remove(s)
            count(stalled_failed, e.errno)
            s.close()
    # Let the server take them up (fork a child, start a thread, park them).
    time.sleep(a.settle)
    latency, outcome = normal_request(family, addr, a.bound)
    notes = [a.note] if a.note else []
    for what, opened, failed in (("silent", silent, silent_failed), ("stalled", stalled, stalled_failed)):
        if len(opened) < a.n:
            why = ", ".join(f"{k} x{v}" for k, v in sorted(failed.items()))
            notes.append(f"{len(opened)} of {a.n} {what} connections could be opened ({why})")
    for s in silent + stalled:
        s.close()
    cell = {
        "kind": "slow",
        "policy": a.policy,
        "transport": a.transport,
        "silent": a.n,
        "stalled": a.n,
        "bound_s": a.bound,
        "latency_us": None if latency is None else round(latency, 1),
        "locked_out": outcome == "locked out",
        "refused": outcome == "refused",
        "note": "; ".join(notes),
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cell, f)
        f.write("\n")
    os.replace(tmp, a.out)
    shown = f"{latency:.0f} µs" if latency is not None else outcome
    print(f"slow clients: {a.policy} with {a.n} silent + {a.n} stalled: {shown}"
          + (f" ({cell['note']})" if cell["note"] else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
