#!/usr/bin/env python3
"""Python's own socketserver echo, the baseline sockserv is compared with.

    py_echo.py fork|thread PORT|PATH [--transport tcp|udp|unix|unix-dgram]
               [--service echo|delay|cpu] [--delay-ms MS] [--cpu-rounds N | --cpu-us US]
               [--max-children N] [--backlog N]

fork: ForkingMixIn, thread: ThreadingMixIn, over the stock server class of
the transport: TCPServer, UDPServer, UnixStreamServer or UnixDatagramServer
(tcp: exactly socketserver.ForkingTCPServer / ThreadingTCPServer). Streams
are served by a StreamRequestHandler that answers each recv() on
self.request until EOF; datagrams by a BaseRequestHandler that answers each
packet with one packet, as DatagramRequestHandler does but without its
BytesIO copies. The inet transports bind 127.0.0.1: PORT 0 picks a free
port, printed on stdout once listening; the Unix ones bind PATH (which must
not exist) and print it. SIGTERM ends it.

--service matches sockserv's built-in services of the same name, as handler
code written in Python:
  echo   the bytes it got
  delay  echo after time.sleep(--delay-ms / 1000) (an I/O-bound handler)
  cpu    echo after --cpu-rounds rounds of FNV-1a over the request and the
         last hash, the very loop of sockserv's `cpu` service (src/services/
         builtin.rs `burn`), in pure Python; under ThreadingMixIn it holds
         the GIL throughout. The same rounds cost Python some 75 times what
         they cost Rust (about 50 ms for 10000 rounds of a 64-byte request,
         against 0.7 ms), so --cpu-us US instead picks the rounds that take
         about US microseconds here (timed at start-up on a 64-byte request,
         and reported on stderr as "cpu: N rounds, about US us per request"):
         the same CPU time per request as sockserv, the same loop

Two class defaults are raised so the comparison measures the request path
rather than the defaults: request_queue_size (5 in Python, which drops SYNs
under 32 concurrent connects and turns them into 1 s retransmits) becomes
SOMAXCONN as in sockserv and raw_echo, and ForkingMixIn.max_children (40,
past which process_request blocks in waitpid) becomes --max-children, so a
few hundred idle connections can be held for the memory measurement.
Everything else is stock.
"""

import argparse
import signal
import socket
import socketserver
import sys
import time

MASK64 = 0xFFFF_FFFF_FFFF_FFFF


def burn(data, rounds):
    """sockserv's `cpu` service: `rounds` rounds of FNV-1a, each seeded with the last."""
    h = 0xCBF2_9CE4_8422_2325
    for r in range(rounds):
        h ^= r
        for b in data + h.to_bytes(8, "little"):
            h = ((h ^ b) * 0x0100_0000_01B3) & MASK64
    return h


_ROUND_US = []


def round_us():
    """Microseconds one round of burn() takes on a 64-byte request (best of 5)."""
    if not _ROUND_US:
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            burn(b"a" * 64, 200)
            best = min(best, time.perf_counter() - t)
        _ROUND_US.append(best * 1e6 / 200)
    return _ROUND_US[0]


def calibrate(us):
    """The number of rounds that takes about `us` microseconds."""
    return max(1, round(us / round_us()))


def make_reply(service, delay_s, rounds):
    if service == "delay":
        def reply(data):
            time.sleep(delay_s)
            return data
    elif service == "cpu":
        def reply(data):
            burn(data, rounds)
            return data
    else:
        def reply(data):
            return data
    return reply


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy", choices=["fork", "thread"])
    p.add_argument("where", metavar="PORT|PATH")
    p.add_argument("--transport", choices=["tcp", "udp", "unix", "unix-dgram"], default="tcp")
    p.add_argument("--service", choices=["echo", "delay", "cpu"], default="echo")
    p.add_argument("--delay-ms", type=float, default=10.0)
    p.add_argument("--cpu-rounds", type=int, default=10000)
    p.add_argument("--cpu-us", type=float, help="calibrate --cpu-rounds to this many µs")
    p.add_argument("--max-children", type=int, default=40)
    p.add_argument("--backlog", type=int, default=socket.SOMAXCONN)
    a = p.parse_args()

    if a.cpu_us is not None:
        a.cpu_rounds = calibrate(a.cpu_us)
    if a.service == "cpu":
        print(f"cpu: {a.cpu_rounds} rounds, about {a.cpu_rounds * round_us():.0f} us per request",
              file=sys.stderr, flush=True)
    reply = make_reply(a.service, a.delay_ms / 1000.0, a.cpu_rounds)

    class StreamHandler(socketserver.StreamRequestHandler):
        def handle(self):
            conn = self.request
            while True:
                data = conn.recv(16384)
                if not data:
                    return
                conn.sendall(reply(data))

    class DatagramHandler(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(reply(data), self.client_address)

    mixin = socketserver.ForkingMixIn if a.policy == "fork" else socketserver.ThreadingMixIn
    base, handler = {
        "tcp": (socketserver.TCPServer, StreamHandler),
        "udp": (socketserver.UDPServer, DatagramHandler),
        "unix": (socketserver.UnixStreamServer, StreamHandler),
        "unix-dgram": (socketserver.UnixDatagramServer, DatagramHandler),
    }[a.transport]
    inet = a.transport in ("tcp", "udp")
    address = ("127.0.0.1", int(a.where)) if inet else a.where

    class Server(mixin, base):
        allow_reuse_address = True
        request_queue_size = a.backlog
        max_children = a.max_children

    # Exit quietly (and without a traceback) on SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Server(address, handler) as srv:
        print(srv.server_address[1] if inet else srv.server_address, flush=True)
        try:
            srv.serve_forever()
        except (KeyboardInterrupt, SystemExit):
            pass


if __name__ == "__main__":
    main()
