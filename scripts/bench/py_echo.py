#!/usr/bin/env python3
"""Python's own socketserver echo, the baseline sockserv is compared with.

    py_echo.py fork|thread PORT [--max-children N] [--backlog N]

fork: socketserver.ForkingTCPServer; thread: socketserver.ThreadingTCPServer;
both with a StreamRequestHandler that echoes each recv() on self.request
until EOF. Binds 127.0.0.1; PORT 0 picks a free port, printed on stdout once
listening. SIGTERM ends it.

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


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        conn = self.request
        while True:
            data = conn.recv(16384)
            if not data:
                return
            conn.sendall(data)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy", choices=["fork", "thread"])
    p.add_argument("port", type=int)
    p.add_argument("--max-children", type=int, default=40)
    p.add_argument("--backlog", type=int, default=socket.SOMAXCONN)
    a = p.parse_args()

    base = socketserver.ForkingTCPServer if a.policy == "fork" else socketserver.ThreadingTCPServer

    class Server(base):
        allow_reuse_address = True
        request_queue_size = a.backlog
        max_children = a.max_children

    # Exit quietly (and without a traceback) on SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Server(("127.0.0.1", a.port), Echo) as srv:
        print(srv.server_address[1], flush=True)
        try:
            srv.serve_forever()
        except (KeyboardInterrupt, SystemExit):
            pass


if __name__ == "__main__":
    main()
