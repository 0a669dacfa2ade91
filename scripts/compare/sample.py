#!/usr/bin/env python3
"""Memory and size of a process tree, once or as peaks over time.

    sample.py once PID
        Prints one JSON object: {"rss_kib", "pss_kib", "processes", "threads"}
        summed over PID and all its descendants.
    sample.py peak PID --out FILE [--interval 0.2] [--max-seconds 600]
        Samples the tree every --interval seconds and keeps the largest value
        of each field (each on its own: the peaks need not be simultaneous),
        rewriting FILE (atomically) after every sample, until SIGTERM/SIGINT,
        the end of PID, or --max-seconds. FILE then holds the same fields plus
        "samples"; it appears with the first sample, so a caller can wait for
        it before starting the load.
    sample.py peak PID --out FILE --control PATH [...]
        The same, but each sample asks the server itself (`sockserv
        --control PATH`, one `status` request on the Unix socket) instead of
        walking /proc: processes are the master (if supervised), its
        workers and their fork children; threads, RSS and PSS are what the
        server reports for its workers and master. FILE also gets
        "source": "status" and "series": [[unix time, requests answered],
        ...], the server's own count at each sample, from which results.py
        takes the server-counted rate over the measured period.

The tree walk is scripts/bench/pss.sh's (children found through the ppid
field of /proc/*/stat; Rss: and Pss: from /proc/P/smaps_rollup, Threads: from
/proc/P/status; processes that vanish while being read are skipped), in
Python so that sampling every 200 ms during a load run costs a few ms of CPU
rather than a bash process per sample. PSS splits each shared page among the
processes mapping it, so over a tree it counts each page once; RSS counts a
page shared by N processes N times (what `ps` and `top` add up to).
"""

import argparse
import json
import os
import signal
import sys
import time

FIELDS = ("rss_kib", "pss_kib", "processes", "threads")


def tree(root):
    """PID and its descendants (root first)."""
    kids = {}
    with os.scandir("/proc") as it:
        for e in it:
            if not e.name.isdigit():
                continue
            try:
                with open(f"/proc/{e.name}/stat", "rb") as f:
                    line = f.read()
            except OSError:
                continue
            # Fields after "pid (comm) ": state ppid ... (comm may hold spaces and parens).
            rest = line[line.rfind(b")") + 2:].split()
            if len(rest) > 1:
                kids.setdefault(int(rest[1]), []).append(int(e.name))
    out = [root]
    i = 0
    while i < len(out):
        out.extend(kids.get(out[i], ()))
        i += 1
    return out


def _field(path, names):
    found = {}
    try:
        with open(path, "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key in names:
                    found[key] = int(value.split()[0])
                    if len(found) == len(names):
                        break
    except (OSError, ValueError, IndexError):
        return None
    return found


def measure(root):
    """The summed fields over the tree of `root`, or None if root is gone."""
    total = dict.fromkeys(FIELDS, 0)
    seen_root = False
    for pid in tree(root):
        mem = _field(f"/proc/{pid}/smaps_rollup", (b"Rss", b"Pss"))
        if not mem or b"Pss" not in mem:
            continue  # gone, or a kernel thread / zombie without a memory map
        st = _field(f"/proc/{pid}/status", (b"Threads",)) or {}
        seen_root |= pid == root
        total["rss_kib"] += mem.get(b"Rss", 0)
        total["pss_kib"] += mem[b"Pss"]
        total["processes"] += 1
        total["threads"] += st.get(b"Threads", 1)
    return total if seen_root else None


def _write(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.write("\n")
    os.replace(tmp, path)


def cmd_once(a):
    m = measure(a.pid)
    if m is None:
        print(f"sample.py: no readable process {a.pid}", file=sys.stderr)
        return 1
    print(json.dumps(m))
    return 0


def query_status(path):
    """The server's status object from its control socket, or None."""
    import socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(path)
            s.sendall(b"status\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        v = json.loads(data)
    except (OSError, ValueError):
        return None
    return v if "workers" in v else None


def from_status(v):
    """The sampled fields from a status object."""
    workers = v["workers"]
    master = v.get("master") or {}
    return {
        "rss_kib": sum(w["rss_kib"] for w in workers) + master.get("rss_kib", 0),
        "pss_kib": sum(w["pss_kib"] for w in workers) + master.get("pss_kib", 0),
        "processes": (1 if master else 0) + len(workers)
        + sum(w["children"] for w in workers),
        "threads": sum(w["threads"] for w in workers) + master.get("threads", 0),
    }


def cmd_peak(a):
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    peak = dict.fromkeys(FIELDS, 0)
    peak["samples"] = 0
    if a.control:
        peak["source"] = "status"
        peak["series"] = []
    deadline = time.monotonic() + a.max_seconds
    while not stop and time.monotonic() < deadline:
        if a.control:
            v = query_status(a.control)
            if v is None:
                if os.path.exists(f"/proc/{a.pid}"):
                    time.sleep(a.interval)
                    continue  # not answering yet (or a slow moment)
                break
            m = from_status(v)
            peak["series"].append([round(time.time(), 3), v["totals"]["requests"]])
        else:
            m = measure(a.pid)
        if m is None:
            break
        for k in FIELDS:
            peak[k] = max(peak[k], m[k])
        peak["samples"] += 1
        _write(a.out, peak)
        if not stop:
            time.sleep(a.interval)
    if stop and a.control:
        # One last count, after the load: the server is quiet now.
        v = query_status(a.control)
        if v is not None:
            peak["series"].append([round(time.time(), 3), v["totals"]["requests"]])
            _write(a.out, peak)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    once = sub.add_parser("once")
    once.add_argument("pid", type=int)
    pk = sub.add_parser("peak")
    pk.add_argument("pid", type=int)
    pk.add_argument("--out", required=True)
    pk.add_argument("--interval", type=float, default=0.2)
    pk.add_argument("--max-seconds", type=float, default=600.0)
    pk.add_argument("--control", help="ask the server's status socket instead of /proc")
    a = p.parse_args()
    return cmd_once(a) if a.cmd == "once" else cmd_peak(a)


if __name__ == "__main__":
    sys.exit(main())
