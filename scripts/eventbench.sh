#!/usr/bin/env bash
# The event policy's benchmark (a script to run by hand, not a timed test).
#
# 1. Persistent echo connections (default 5,000), driven by a minimal C epoll
#    client (scripts/bench/epoll_client.c), against a minimal one-thread C
#    epoll echo server (scripts/bench/epoll_echo1.c), `sockserv --policy
#    event --threads 1` and `sockserv --policy thread`, interleaved over
#    --rounds rounds (servers restarted each time), all --no-supervisor so the
#    server is one process. Reports the client's replies per second and the
#    server's CPU time per reply (utime+stime from /proc/PID/stat over the
#    client's whole run, warm-up included, divided by every reply it got):
#    on a shared 2-CPU machine the client and the server share the CPUs, so
#    the rate alone understates what a server saves; CPU per reply shows it.
# 2. Memory per idle connection: PSS over the supervised process tree
#    (scripts/bench/pss.sh) before and while the client holds --idle (2,000)
#    connections idle after one round trip each, for event and thread.
# 3. --many (100,000) idle connections held by `--policy event`, spread over
#    as many client processes and loopback source addresses as the
#    open-files limit and the ephemeral ports need (and, when RLIMIT_NOFILE
#    cannot be raised, as many supervised workers); then a new client's round
#    trips (--probe 1000 of them) and the tree's PSS.
#
# Usage: scripts/eventbench.sh [--connections N] [--duration S] [--warmup S]
#          [--rounds N] [--idle N] [--many N | --no-many] [--probe N]
#          [--results DIR] [--no-build] [--no-pin]
#
# Part 1 runs each round twice: with the processes where the scheduler puts
# them, and with each server pinned to CPU 1 and the client to CPU 0
# (taskset), so that every server gets the same one CPU. Unpinned, on a
# machine where other work runs, a 5,000-thread server takes a larger share
# of the CPUs from that work than a one-thread server does; pinned, the
# thread policy loses the second CPU it would have. Neither alone is the
# truth; CPU time per reply is the same measure in both. --no-pin: only the
# first.
# Prints Markdown tables and the target ratios; writes results.json and
# summary.md to --results (default bench-results/event).
set -euo pipefail

die() { echo "eventbench.sh: $*" >&2; exit 1; }
log() { echo "eventbench: $*" >&2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SRC=$ROOT/scripts/bench
CONNS=5000 DURATION=5 WARMUP=1 ROUNDS=3 IDLE=2000 MANY=100000 PROBE=1000
RESULTS=$ROOT/bench-results/event NO_BUILD= PIN=1
while (($#)); do
    case $1 in
        --connections) CONNS=${2:?}; shift ;;
        --duration) DURATION=${2:?}; shift ;;
        --warmup) WARMUP=${2:?}; shift ;;
        --rounds) ROUNDS=${2:?}; shift ;;
        --idle) IDLE=${2:?}; shift ;;
        --many) MANY=${2:?}; shift ;;
        --no-many) MANY=0 ;;
        --probe) PROBE=${2:?}; shift ;;
        --results) RESULTS=${2:?}; shift ;;
        --no-build) NO_BUILD=1 ;;
        --no-pin) PIN= ;;
        -h | --help) sed -n '2,35p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
for n in "$CONNS" "$ROUNDS" "$IDLE" "$PROBE"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "not a positive integer: $n"
done
[[ $MANY =~ ^[0-9]+$ ]] || die "not a count: $MANY"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/eventbench.XXXXXX")
PIDS=()
# Stops what this script started, by pid: TERM, then KILL after 5 s.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    [[ -n ${KEEP_TMP:-} ]] || rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SOCKSERV=$TARGET_DIR/release/sockserv
BUILD=$TARGET_DIR/bench
mkdir -p "$BUILD" "$RESULTS"
if [[ -z $NO_BUILD ]]; then
    log "cargo build --release --bin sockserv"
    (cd "$ROOT" && cargo build --release --bin sockserv >&2)
fi
CC=${CC:-cc}
for c in epoll_echo1 epoll_client; do
    "$CC" -O2 -Wall -o "$BUILD/$c" "$BENCH_SRC/$c.c" || die "cannot compile $c.c"
done
[[ -x $SOCKSERV ]] || die "no $SOCKSERV (build it, or drop --no-build)"

# Room for the connections: raise the soft limit to the hard one, and the
# hard one if this process may (root with CAP_SYS_RESOURCE).
ulimit -Hn $((MANY + CONNS + 10000)) 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
log "open-files limit: $NOFILE"
((NOFILE > CONNS + 100)) || die "--connections $CONNS needs more than the open-files limit $NOFILE"

# start NAME CMD...: starts a server, waits for its port; sets SERVER_PID, PORT.
STARTS=0
start() {
    local name=$1.$((++STARTS)) i
    shift
    : > "$TMP/$name.out"
    : > "$TMP/$name.err"
    "$@" > "$TMP/$name.out" 2> "$TMP/$name.err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    PORT=
    for ((i = 0; i < 200; i++)); do
        PORT=$(grep -ohE 'listening [0-9]+|"addr":"127\.0\.0\.1:[0-9]+' "$TMP/$name.out" "$TMP/$name.err" \
               | head -1 | grep -oE '[0-9]+$' || true)
        [[ -n $PORT ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "$name did not start: $(tail -3 "$TMP/$name.err")"
        sleep 0.05
    done
    [[ -n $PORT ]] || die "$name did not report its port"
}
stop() { stop_pid "$SERVER_PID"; }

# cpu_ticks PID: utime + stime of a process (all its threads), in clock ticks.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

server_cmd() {
    case $1 in
        c) echo "$BUILD/epoll_echo1 0" ;;
        event) echo "$SOCKSERV --no-supervisor --policy event --threads 1 --listen 127.0.0.1:0 --log-format json --graceful-timeout 1" ;;
        thread) echo "$SOCKSERV --no-supervisor --policy thread --listen 127.0.0.1:0 --log-format json --graceful-timeout 1" ;;
    esac
}

# --- 1. persistent connections -------------------------------------------
MODES=(float)
if [[ -n $PIN ]] && command -v taskset > /dev/null && (($(nproc) >= 2)); then
    MODES+=(pinned)
fi
echo '{"persistent":[' > "$TMP/persistent.json"
sep=
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in "${MODES[@]}"; do
        PIN_SERVER=() PIN_CLIENT=()
        [[ $mode == pinned ]] && PIN_SERVER=(taskset -c 1) PIN_CLIENT=(taskset -c 0)
        for s in c event thread; do
            # shellcheck disable=SC2046 # the command line is meant to split
            start "$s" "${PIN_SERVER[@]}" $(server_cmd "$s")
            t0=$(cpu_ticks "$SERVER_PID")
            out=$("${PIN_CLIENT[@]}" "$BUILD/epoll_client" load 127.0.0.1 "$PORT" -c "$CONNS" \
                  -d "$DURATION" -w "$WARMUP")
            t1=$(cpu_ticks "$SERVER_PID")
            stop
            log "round $r $mode $s: $out cpu_ticks=$((t1 - t0))"
            echo "$sep{\"round\":$r,\"mode\":\"$mode\",\"server\":\"$s\",\"cpu_ticks\":$((t1 - t0)),\"hz\":$HZ,\"client\":$out}" >> "$TMP/persistent.json"
            sep=,
        done
    done
done
echo '],' >> "$TMP/persistent.json"

# --- 2. memory per idle connection ---------------------------------------
# hold NAME K: the supervised tree's PSS before and while K connections idle.
hold_pss() {
    local name=$1 k=$2 before after
    before=$("$BENCH_SRC/pss.sh" "$SERVER_PID" | cut -d' ' -f1)
    mkfifo "$TMP/hold.in"
    "$BUILD/epoll_client" hold 127.0.0.1 "$PORT" -c "$k" < "$TMP/hold.in" > "$TMP/hold.out" &
    local hp=$!
    PIDS+=("$hp")
    exec 7> "$TMP/hold.in"
    local i
    for ((i = 0; i < 600; i++)); do
        grep -q ready "$TMP/hold.out" 2>/dev/null && break
        kill -0 "$hp" 2>/dev/null || die "$name: the idle client failed"
        sleep 0.1
    done
    after=$("$BENCH_SRC/pss.sh" "$SERVER_PID" | cut -d' ' -f1)
    exec 7>&-
    wait "$hp" || true
    rm -f "$TMP/hold.in"
    echo "{\"server\":\"$name\",\"idle\":$k,\"pss_before_kib\":$before,\"pss_after_kib\":$after}"
}
echo '"idle":[' >> "$TMP/persistent.json"
sep=
for s in event thread; do
    start "$s-sup" "$SOCKSERV" --policy "$s" --listen 127.0.0.1:0 --log-format json --graceful-timeout 1
    sleep 0.5 # the worker's "listening" comes from the master: let the worker start its loops
    line=$(hold_pss "$s" "$IDLE")
    stop
    log "idle $line"
    echo "$sep$line" >> "$TMP/persistent.json"
    sep=,
done
echo '],' >> "$TMP/persistent.json"

# --- 3. many idle connections --------------------------------------------
many_json=null
if ((MANY > 0)); then
    per_proc=$((NOFILE - 200))
    ((per_proc > 20000)) && per_proc=20000
    clients=$(((MANY + per_proc - 1) / per_proc))
    workers=1
    ((NOFILE < MANY + 1000)) && workers=$(((MANY + per_proc - 1) / per_proc + 1))
    sources=$(((MANY + 19999) / 20000 + 1))
    log "many: $MANY idle over $clients client processes, $sources source addresses, $workers workers"
    start many "$SOCKSERV" --policy event --threads 1 --workers "$workers" --listen 127.0.0.1:0 \
        --log-format json --graceful-timeout 1 --backlog 4096
    sleep 1
    before=$("$BENCH_SRC/pss.sh" "$SERVER_PID" | cut -d' ' -f1)
    mkfifo "$TMP/many.in"
    exec 8<> "$TMP/many.in"
    left=$MANY
    hold_pids=()
    for ((i = 0; i < clients; i++)); do
        k=$((left < per_proc ? left : per_proc))
        left=$((left - k))
        "$BUILD/epoll_client" hold 127.0.0.1 "$PORT" -c "$k" --sources "$sources" \
            < "$TMP/many.in" > "$TMP/many.$i.out" 2> "$TMP/many.$i.err" &
        hold_pids+=($!)
        PIDS+=($!)
    done
    started=$(date +%s)
    while :; do
        ready=$(cat "$TMP"/many.*.out 2>/dev/null | grep -c ready || true)
        ((ready == clients)) && break
        for p in "${hold_pids[@]}"; do
            kill -0 "$p" 2>/dev/null || grep -q ready "$TMP"/many.*.out ||
                die "an idle client failed: $(cat "$TMP"/many.*.err | tail -3)"
        done
        (($(date +%s) - started < 300)) || die "the idle clients did not connect within 300 s"
        sleep 0.5
    done
    after=$("$BENCH_SRC/pss.sh" "$SERVER_PID" | cut -d' ' -f1)
    probe=$("$BUILD/epoll_client" probe 127.0.0.1 "$PORT" -n "$PROBE")
    exec 8>&-
    for p in "${hold_pids[@]}"; do stop_pid "$p"; done
    stop
    many_json="{\"idle\":$MANY,\"workers\":$workers,\"clients\":$clients,\"pss_before_kib\":$before,\"pss_after_kib\":$after,\"probe\":$probe}"
    log "many: $many_json"
fi
echo "\"many\":$many_json}" >> "$TMP/persistent.json"
cp "$TMP/persistent.json" "$RESULTS/results.json"

# --- report ----------------------------------------------------------------
python3 - "$RESULTS/results.json" "$CONNS" << 'PY' | tee "$RESULTS/summary.md"
import json, statistics, sys
d = json.load(open(sys.argv[1]))
conns = sys.argv[2]
names = {"c": "C epoll, 1 thread", "event": "sockserv --policy event --threads 1", "thread": "sockserv --policy thread"}
titles = {"float": "servers and client where the scheduler puts them",
          "pinned": "each server pinned to CPU 1, the client to CPU 0"}
for mode in ["float", "pinned"]:
    by = {}
    for r in d["persistent"]:
        if r["mode"] != mode:
            continue
        c = r["client"]
        cpu_us = r["cpu_ticks"] / r["hz"] * 1e6 / max(c["total_requests"], 1)
        by.setdefault(r["server"], []).append((c["rate"], cpu_us, c["errors"]))
    if not by:
        continue
    med = {s: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v),
               sum(x[2] for x in v), [round(x[0]) for x in v]) for s, v in by.items()}
    print(f"### {conns} persistent echo connections (64-byte requests), {titles[mode]}: medians of {len(by['c'])} rounds\n")
    print("| server | replies/s | each round | server CPU µs/reply | errors |")
    print("|---|---|---|---|---|")
    for s in ["c", "event", "thread"]:
        rate, cpu, err, rounds = med[s]
        print(f"| {names[s]} | {rate:,.0f} | {', '.join(f'{x:,}' for x in rounds)} | {cpu:.1f} | {err} |")
    e, c, t = med["event"], med["c"], med["thread"]
    print()
    print(f"- event / C: replies/s {e[0]/c[0]:.2f}x (target >= 0.9x); CPU per reply {c[1]/e[1]:.2f}x")
    print(f"- event / thread: replies/s {e[0]/t[0]:.2f}x (target >= 1.5x); CPU per reply {t[1]/e[1]:.2f}x")
    print()
print("### Memory per idle connection (PSS over the supervised tree)\n")
print("| policy | idle | PSS before KiB | PSS held KiB | per connection |")
print("|---|---|---|---|---|")
for m in d["idle"]:
    per = (m["pss_after_kib"] - m["pss_before_kib"]) * 1024 / m["idle"]
    print(f"| {m['server']} | {m['idle']:,} | {m['pss_before_kib']:,} | {m['pss_after_kib']:,} | {per:,.0f} B |")
m = d.get("many")
if m:
    per = (m["pss_after_kib"] - m["pss_before_kib"]) * 1024 / m["idle"]
    p = m["probe"]
    print()
    print(f"### {m['idle']:,} idle connections, --policy event, {m['workers']} worker(s)\n")
    print(f"- PSS of the tree: {m['pss_before_kib']:,} KiB fresh, {m['pss_after_kib']:,} KiB holding them ({per:,.0f} B each)")
    print(f"- a new client's {p['count']} round trips meanwhile: p50 {p['p50_us']} µs, p99 {p['p99_us']} µs, max {p['max_us']} µs (target < 10 ms)")
PY
