#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: read load-client output, render the report.

    report.py load-record --server S --client C --mode M --round R FILE
        Reads one load client's JSON output (rawload or sockload) from FILE
        and prints one normalised record line (JSON) for the records file.
    report.py render --records FILE --out JSON [--markdown MD] [--meta K=V ...]
        Prints the Markdown rate/memory table and the target ratios with
        PASS/FAIL, writes everything as JSON to --out (and the Markdown to
        --markdown). Exits 3 when a target failed, 0 otherwise.

All knowledge of the load clients' output format is in load_fields() below.
"""

import argparse
import json
import statistics
import sys

# --- The one place that knows the load clients' JSON field names. ----------
#
# rawload prints {"rate", "requests", "errors", ...}; sockload (471f3c2)
# prints {"ok_per_s", "requests_per_s", "requests_ok", "errors_total",
# "latency": {"p50_us", "p99_us", ...}, ...}. Each list is tried in order (the
# rate compared is of successful requests, as rawload counts only those); a
# dotted name looks inside nested objects; non-numbers are skipped.
RATE_KEYS = ["ok_per_s", "rate", "requests_per_s", "requests_per_sec", "rps"]
REQUESTS_KEYS = ["requests_ok", "requests", "requests_total"]
ERRORS_KEYS = ["errors_total", "errors"]
LATENCY_KEYS = {  # microseconds; names with "ms" in them are converted
    "p50": ["latency.p50_us", "latency_us.p50", "p50_us", "latency.p50_ms"],
    "p99": ["latency.p99_us", "latency_us.p99", "p99_us", "latency.p99_ms"],
}


def _lookup(obj, names):
    for name in names:
        cur = obj
        for part in name.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                break
        else:
            if isinstance(cur, (int, float)) and not isinstance(cur, bool):
                return name, float(cur)
    return None, None


def load_fields(obj):
    """(rate, requests, errors, p50_us, p99_us) from a load client's JSON."""
    _, rate = _lookup(obj, RATE_KEYS)
    _, requests = _lookup(obj, REQUESTS_KEYS)
    _, errors = _lookup(obj, ERRORS_KEYS)
    lat = {}
    for q, names in LATENCY_KEYS.items():
        name, v = _lookup(obj, names)
        if v is not None and "ms" in name:
            v *= 1000.0
        lat[q] = v
    return rate, requests, errors, lat["p50"], lat["p99"]


def parse_client_output(text):
    """The JSON object a client printed: the whole output, or its last line
    that parses as an object."""
    text = text.strip()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            return obj
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise ValueError("no JSON object in the client's output")


# --- Records -> report. ----------------------------------------------------

SERVERS = ["sync", "fork", "thread", "pool", "raw-fork", "raw-thread", "py-fork", "py-thread"]
LABELS = {
    "sync": "sockserv sync", "fork": "sockserv fork", "thread": "sockserv thread",
    "pool": "sockserv pool", "raw-fork": "raw C fork", "raw-thread": "raw C thread",
    "py-fork": "Python ForkingTCPServer", "py-thread": "Python ThreadingTCPServer",
}

# (name, numerator, denominator, what, op, bound)
RATE_TARGETS = [
    ("fork / raw-fork", "fork", "raw-fork", ">=", 0.9),
    ("fork / py-fork", "fork", "py-fork", ">=", 5.0),
    ("thread / raw-thread", "thread", "raw-thread", ">=", 0.9),
    ("thread / py-thread", "thread", "py-thread", ">=", 2.3),
    ("pool / thread", "pool", "thread", ">=", 1.2),
]
MEM_TARGETS = [
    ("fork / raw-fork", "fork", "raw-fork", "<=", 2.0),
    ("thread / raw-thread", "thread", "raw-thread", "<=", 2.0),
]
CLIENT_TARGET = 0.9  # sockload >= 0.9x rawload against the same server


def cmd_load_record(a):
    with open(a.file) as f:
        text = f.read()
    rec = {"kind": "load", "server": a.server, "client": a.client, "mode": a.mode,
           "round": a.round, "connections": a.connections}
    try:
        obj = parse_client_output(text)
        rate, requests, errors, p50, p99 = load_fields(obj)
        if rate is None:
            raise ValueError("no request rate among " + ", ".join(RATE_KEYS))
        rec.update(rate=rate, requests=requests, errors=errors, p50_us=p50, p99_us=p99,
                   raw=obj)
    except ValueError as e:
        rec.update(rate=None, error=str(e), output=text[-2000:])
    print(json.dumps(rec, sort_keys=True))


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _fmt_rate(v):
    return "n/a" if v is None else f"{v:,.0f}"


def _fmt_kib(v):
    return "n/a" if v is None else f"{v:,.1f}"


def _check(value, op, bound):
    if value is None:
        return "n/a"
    ok = value >= bound if op == ">=" else value <= bound
    return "PASS" if ok else "FAIL"


def cmd_render(a):
    records = []
    with open(a.records) as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    meta = {}
    for kv in a.meta or []:
        k, _, v = kv.partition("=")
        meta[k] = v

    servers = [s for s in SERVERS if any(r.get("server") == s for r in records)]
    rates = {}  # (server, client, mode) -> [rates]
    conns = {}
    notes = {}
    for r in records:
        if r["kind"] == "load":
            key = (r["server"], r["client"], r["mode"])
            rates.setdefault(key, []).append(r.get("rate"))
            conns[key] = r.get("connections")
            if r.get("rate") is None:
                notes.setdefault(r["server"], []).append(
                    f"{r['client']} {r['mode']}: {r.get('error', 'failed')}")
            elif r.get("errors"):
                notes.setdefault(r["server"], []).append(
                    f"{r['client']} {r['mode']} round {r['round']}: {r['errors']:.0f} errors")
        elif r["kind"] == "note":
            notes.setdefault(r["server"], []).append(r["text"])
    mem = {r["server"]: r for r in records if r["kind"] == "mem"}

    def rate(server, mode, client="rawload"):
        return _median(rates.get((server, client, mode), []))

    def per_conn(server):
        m = mem.get(server)
        return None if m is None or m.get("per_conn_kib") is None else m["per_conn_kib"]

    out = []
    out.append("| server | connect-per-request (req/s) | persistent (req/s) | "
               "idle connection (KiB PSS each) |")
    out.append("|---|---:|---:|---:|")
    for s in servers:
        c = conns.get((s, "rawload", "persistent"))
        pers = _fmt_rate(rate(s, "persistent"))
        if pers != "n/a" and c is not None and str(c) != meta.get("persistent_connections"):
            pers += f" ({c} conn)"
        out.append(f"| {LABELS[s]} | {_fmt_rate(rate(s, 'connect'))} | {pers} | "
                   f"{_fmt_kib(per_conn(s))} |")
    out.append("")

    ratios = []
    failed = False
    out.append("Targets (connect-per-request rates):")
    for name, num, den, op, bound in RATE_TARGETS:
        x, y = rate(num, "connect"), rate(den, "connect")
        v = x / y if x and y else None
        verdict = _check(v, op, bound)
        failed |= verdict == "FAIL"
        ratios.append({"target": f"rate {name}", "value": v, "op": op, "bound": bound,
                       "verdict": verdict})
        out.append(f"  rate   {name:<22} {('n/a' if v is None else f'{v:6.2f}x'):>8}  "
                   f"(target {op} {bound}x)  {verdict}")
    out.append("Targets (PSS per idle connection):")
    for name, num, den, op, bound in MEM_TARGETS:
        x, y = per_conn(num), per_conn(den)
        v = x / y if x is not None and y else None
        verdict = _check(v, op, bound)
        failed |= verdict == "FAIL"
        ratios.append({"target": f"memory {name}", "value": v, "op": op, "bound": bound,
                       "verdict": verdict})
        out.append(f"  memory {name:<22} {('n/a' if v is None else f'{v:6.2f}x'):>8}  "
                   f"(target {op} {bound}x)  {verdict}")

    client_lines = []
    for (s, client, mode), vals in sorted(rates.items()):
        if client != "sockload":
            continue
        sl, rl = _median(vals), rate(s, mode)
        v = sl / rl if sl and rl else None
        verdict = _check(v, ">=", CLIENT_TARGET)
        failed |= verdict == "FAIL"
        ratios.append({"target": f"client sockload / rawload ({s}, {mode})", "value": v,
                       "op": ">=", "bound": CLIENT_TARGET, "verdict": verdict,
                       "sockload": sl, "rawload": rl})
        name = f"{s} {mode}"
        client_lines.append(
            f"  client {name:<22} {('n/a' if v is None else f'{v:6.2f}x'):>8}  "
            f"(target >= {CLIENT_TARGET}x)  {verdict}  "
            f"[sockload {_fmt_rate(sl)} vs rawload {_fmt_rate(rl)} req/s]")
    out.append("Load client (sockload / rawload, same server):")
    if client_lines:
        out.extend(client_lines)
    else:
        out.append("  skipped: " + meta.get("sockload_status", "sockload not run"))

    if notes:
        out.append("")
        out.append("Notes:")
        for s in servers:
            for n in notes.get(s, []):
                out.append(f"  {LABELS.get(s, s)}: {n}")

    text = "\n".join(out)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")

    result = {
        "meta": meta,
        "servers": {
            s: {
                "connect_rate": rate(s, "connect"),
                "persistent_rate": rate(s, "persistent"),
                "persistent_connections": conns.get((s, "rawload", "persistent")),
                "connect_rates": rates.get((s, "rawload", "connect"), []),
                "persistent_rates": rates.get((s, "rawload", "persistent"), []),
                "memory": mem.get(s),
                "notes": notes.get(s, []),
            }
            for s in servers
        },
        "ratios": ratios,
        "records": records,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    return 3 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    lr = sub.add_parser("load-record")
    lr.add_argument("--server", required=True)
    lr.add_argument("--client", required=True)
    lr.add_argument("--mode", required=True)
    lr.add_argument("--round", type=int, default=1)
    lr.add_argument("--connections", type=int)
    lr.add_argument("file")
    rd = sub.add_parser("render")
    rd.add_argument("--records", required=True)
    rd.add_argument("--out", required=True)
    rd.add_argument("--markdown")
    rd.add_argument("--meta", action="append")
    a = p.parse_args()
    if a.cmd == "load-record":
        cmd_load_record(a)
        return 0
    return cmd_render(a)


if __name__ == "__main__":
    sys.exit(main())
