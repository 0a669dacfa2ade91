#!/usr/bin/env python3
"""Result files of scripts/compare.sh, in the format `sockload report` reads
(src/load/compare.rs).

    results.py cell --out FILE --server S --policy P --transport T --workload W
                    --connections N --load FILE --peak FILE [--rc N]
                    [--command TEXT] [--note TEXT]... [--error TEXT]
        One load cell: {"kind":"cell", ..., "load": sockload's --json report,
        "peak": {"rss_kib","pss_kib","processes","threads"}}. When sockload
        printed no report (the server did not start, sockload crashed or was
        killed), the cell is still written, as a failed one: zero rate and
        latencies, "failed": true and the reason in "error". Prints a one-line
        summary on stderr.
    results.py idle --out FILE --server S --policy P --transport T
                    --connections N --before FILE --after FILE
                    [--note TEXT]... [--error TEXT]
        One idle-memory measurement ({"kind":"idle", ...}); with --error, or
        when a reading is missing, {"kind":"idle-failed", ...} instead (which
        the report skips and the notes list).
    results.py meta --out FILE KEY=VALUE...
        {"kind":"meta", ...}: the run's settings.
    results.py notes DIR
        The Markdown list of every cell's and measurement's notes and errors.

Extra fields ("connections", "note", "error", "failed", "command",
"sockload_rc") are ignored by `sockload report`.
"""

import argparse
import json
import os
import sys

ZERO_LOAD = {
    "requests_per_s": 0.0,
    "ok_per_s": 0.0,
    "requests_ok": 0,
    "errors_total": 0,
    "latency": {"p50_us": 0, "p90_us": 0, "p99_us": 0, "p999_us": 0, "max_us": 0},
}
ZERO_PEAK = {"rss_kib": 0, "pss_kib": 0, "processes": 0, "threads": 0}


def _read_json(path):
    """The JSON object in the file (whole, or its last line that is one), or None."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    for chunk in [text] + list(reversed(text.splitlines())):
        chunk = chunk.strip()
        if chunk.startswith("{"):
            try:
                obj = json.loads(chunk)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def _write(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _tail(path, n=300):
    try:
        with open(path, errors="replace") as f:
            return " ".join(f.read()[-n:].split())
    except OSError:
        return ""


def server_counted(series):
    """The requests the server itself answered during the cell: its count at
    the last sample (taken once the load is over, so quiet and exact) less
    its count at the first (taken before the load started)."""
    if not series or len(series) < 2:
        return None
    return {"requests": series[-1][1] - series[0][1], "samples": len(series)}


def cmd_cell(a):
    load = _read_json(a.load)
    peak = _read_json(a.peak) or dict(ZERO_PEAK)
    series = peak.pop("series", None)
    cell = {
        "kind": "cell", "server": a.server, "policy": a.policy, "transport": a.transport,
        "workload": a.workload, "connections": a.connections, "peak": peak,
    }
    errors = list(a.error or [])
    if load is None or "requests_per_s" not in load or "latency" not in load:
        if not errors:
            errors.append(f"sockload gave no report (exit {a.rc}): "
                          f"{_tail(a.load + '.err') or 'no output'}")
        load = dict(ZERO_LOAD)
        cell["failed"] = True
    elif not load.get("requests_total"):
        errors.append(f"no request completed within the {load.get('measured_s', 0):.1f} s measured "
                      "(a longer --duration or fewer --connections would measure some)")
    elif load.get("errors_total"):
        samples = load.get("error_samples") or {}
        kinds = {k: v for k, v in (load.get("errors") or {}).items() if v}
        first = "; ".join(f"{k}: {v}" for k, v in samples.items())
        errors.append(f"{load['errors_total']} errors {kinds}, {load.get('ok_per_s', 0):,.0f} ok/s"
                      + (f" (first: {first})" if first else ""))
    cell["load"] = load
    if series is not None and not cell.get("failed"):
        counted = server_counted(series)
        if counted is not None:
            cell["server_counted"] = counted
    if a.rc is not None:
        cell["sockload_rc"] = a.rc
    if a.command:
        cell["command"] = a.command
    if a.note:
        cell["note"] = "; ".join(a.note)
    if errors:
        cell["error"] = "; ".join(errors)
    _write(a.out, cell)
    if cell.get("failed"):
        summary = "FAILED: " + cell["error"][:200]
    else:
        lat = load["latency"]
        summary = (f"{load['requests_per_s']:>10,.0f} req/s  p50 {lat['p50_us']:>6} µs  "
                   f"p99 {lat['p99_us']:>7} µs  err {load['errors_total']:<5}")
    print(f"  {a.policy:<9} {a.transport:<10} {a.workload:<10} {a.connections:>3} conn  {summary}  "
          f"peak PSS {peak['pss_kib'] / 1024:.1f} MiB, {peak['processes']} procs, "
          f"{peak['threads']} threads"
          + (f", {cell['server_counted']['requests']:,} requests counted by the server"
             if "server_counted" in cell else ""), file=sys.stderr)
    return 0


def cmd_idle(a):
    before, after = _read_json(a.before), _read_json(a.after)
    rec = {"server": a.server, "policy": a.policy, "transport": a.transport,
           "connections": a.connections}
    errors = list(a.error or [])
    if not errors and (before is None or after is None):
        errors.append("no memory reading")
    if a.note:
        rec["note"] = "; ".join(a.note)
    if errors:
        rec.update(kind="idle-failed", error="; ".join(errors))
        print(f"  idle {a.policy:<9} FAILED: {rec['error'][:200]}", file=sys.stderr)
    else:
        rec.update(kind="idle", pss_before_kib=before["pss_kib"], pss_after_kib=after["pss_kib"],
                   rss_before_kib=before["rss_kib"], rss_after_kib=after["rss_kib"],
                   processes=after["processes"], threads=after["threads"])
        per = max(0, after["pss_kib"] - before["pss_kib"]) / max(1, a.connections)
        print(f"  idle {a.policy:<9} {a.connections:>5} conn: PSS {before['pss_kib']:,} -> "
              f"{after['pss_kib']:,} KiB ({per:.1f} KiB each), RSS {before['rss_kib']:,} -> "
              f"{after['rss_kib']:,} KiB, {after['processes']} procs, {after['threads']} threads",
              file=sys.stderr)
    _write(a.out, rec)
    return 0


def cmd_meta(a):
    meta = {"kind": "meta"}
    for kv in a.pairs:
        k, _, v = kv.partition("=")
        meta[k] = v
    _write(a.out, meta)
    return 0


def cmd_notes(a):
    lines = []
    for name in sorted(os.listdir(a.dir)):
        if not name.endswith(".json"):
            continue
        obj = _read_json(os.path.join(a.dir, name))
        if not obj or obj.get("kind") not in ("cell", "idle", "idle-failed"):
            continue
        what = (f"{obj['policy']} {obj['transport']} {obj['workload']}" if obj["kind"] == "cell"
                else f"idle {obj['policy']} {obj['transport']}")
        for key, label in (("note", ""), ("error", "error: ")):
            if obj.get(key):
                failed = " **failed**" if key == "error" and obj.get("failed") else ""
                lines.append(f"- {what}:{failed} {label}{obj[key]}")
    if lines:
        print("\n#### notes\n")
        print("\n".join(lines))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cell")
    i = sub.add_parser("idle")
    for q in (c, i):
        q.add_argument("--out", required=True)
        q.add_argument("--server", required=True)
        q.add_argument("--policy", required=True)
        q.add_argument("--transport", required=True)
        q.add_argument("--connections", type=int, required=True)
        q.add_argument("--note", action="append")
        q.add_argument("--error", action="append")
    c.add_argument("--workload", required=True)
    c.add_argument("--load", required=True)
    c.add_argument("--peak", required=True)
    c.add_argument("--rc", type=int)
    c.add_argument("--command")
    i.add_argument("--before", required=True)
    i.add_argument("--after", required=True)
    m = sub.add_parser("meta")
    m.add_argument("--out", required=True)
    m.add_argument("pairs", nargs="*")
    n = sub.add_parser("notes")
    n.add_argument("dir")
    a = p.parse_args()
    return {"cell": cmd_cell, "idle": cmd_idle, "meta": cmd_meta, "notes": cmd_notes}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
