#!/usr/bin/env bash
# The load-engine benchmark (a script to run by hand, not a timed test).
#
# sockload against a minimal C epoll closed-loop client (scripts/bench/
# epoll_load.c), both with the same number of threads, driving the same
# minimal C epoll echo server (scripts/bench/epoll_echo.c) at 16, 1,000 and
# 10,000 persistent connections, side by side in one run: every round runs
# both clients at every count at the same time, each against its own copy of
# the server (or, with --apart, one after the other against one server). Then the CPU
# sockload uses in open loop (--rate 10000 over 1,000 connections) and
# against a closed port. Prints a Markdown report with the targets and
# PASS/FAIL, and writes every run as one JSON line to the results directory.
#
# Usage: scripts/loadbench.sh [options]   (see --help; each option also has
#                                          an environment variable)
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/loadbench.sh [options]

  --duration S        measured seconds per run                 [LOADBENCH_DURATION=2]
  --warmup S          unmeasured seconds before each run       [LOADBENCH_WARMUP=1]
  --rounds N          rounds (both clients at every count each round; the
                      report gives medians and the median of the per-round
                      ratios)                                  [LOADBENCH_ROUNDS=5]
  --counts LIST       connection counts, space- or comma-separated
                                                               [LOADBENCH_COUNTS="16 1000 10000"]
  --threads N         threads of both clients                  [LOADBENCH_THREADS=1]
  --server-threads N  epoll loops of the server                [LOADBENCH_SERVER_THREADS=1]
  --apart             run the two clients one after the other against one
                      epoll_echo, alternating which goes first (default:
                      together, each against its own epoll_echo, both
                      servers on the server CPU and both clients on the
                      client CPUs, so that other work on a shared machine
                      slows both alike)            [LOADBENCH_TOGETHER=]
  --no-pin            do not pin (default on a machine with 2 or more CPUs:
                      the server on CPU 0, the clients on the others)
  --results DIR       where runs.jsonl and report.md go        [LOADBENCH_RESULTS=target/loadbench]
  --no-build          use the binaries already built           [LOADBENCH_NO_BUILD=1]
  LOADBENCH_SOCKLOAD=PATH   benchmark this sockload binary instead
  --strict            exit 3 when a target fails (default: report only)
  -h, --help          this text

sockload comes from ${CARGO_TARGET_DIR:-target}/release; the C programs are
compiled into ${CARGO_TARGET_DIR:-target}/bench. Needs cc, python3 and
/usr/bin/time; 10,000 connections need RLIMIT_NOFILE's hard limit above
10,100 (both programs raise the soft limit to it).
EOF
}

die() { echo "loadbench.sh: $*" >&2; exit 1; }
log() { echo "loadbench: $*" >&2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${LOADBENCH_DURATION:-2}
WARMUP=${LOADBENCH_WARMUP:-0.5}
ROUNDS=${LOADBENCH_ROUNDS:-5}
COUNTS=${LOADBENCH_COUNTS:-"16 1000 10000"}
THREADS=${LOADBENCH_THREADS:-1}
SERVER_THREADS=${LOADBENCH_SERVER_THREADS:-1}
RESULTS=${LOADBENCH_RESULTS:-$TARGET/loadbench}
NO_BUILD=${LOADBENCH_NO_BUILD:-}
PIN=1
STRICT=
TOGETHER=${LOADBENCH_TOGETHER-1}

while [ $# -gt 0 ]; do
    case $1 in
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --counts) COUNTS=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        --server-threads) SERVER_THREADS=$2; shift ;;
        --no-pin) PIN= ;;
        --apart) TOGETHER= ;;
        --results) RESULTS=$2; shift ;;
        --no-build) NO_BUILD=1 ;;
        --strict) STRICT=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done
COUNTS=${COUNTS//,/ }
command -v python3 >/dev/null || die "needs python3"
[ -x /usr/bin/time ] || die "needs /usr/bin/time (Debian: apt-get install time)"

mkdir -p "$TARGET/bench" "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
if [ -z "$NO_BUILD" ]; then
    log "building sockload (release) and the C programs"
    (cd "$ROOT" && cargo build --release --quiet --bin sockload)
fi
for prog in epoll_echo epoll_load; do
    if [ -z "$NO_BUILD" ] || [ ! -x "$TARGET/bench/$prog" ]; then
        cc -O2 -Wall -pthread -o "$TARGET/bench/$prog" "$ROOT/scripts/bench/$prog.c"
    fi
done
SOCKLOAD=${LOADBENCH_SOCKLOAD:-$TARGET/release/sockload}
[ -x "$SOCKLOAD" ] || die "no sockload at $SOCKLOAD (build it, or set LOADBENCH_SOCKLOAD)"

CPUS=$(nproc)
SERVER_PIN=()
CLIENT_PIN=()
if [ -n "$PIN" ] && [ "$CPUS" -ge 2 ] && command -v taskset >/dev/null; then
    SERVER_PIN=(taskset -c 0)
    CLIENT_PIN=(taskset -c "1-$((CPUS - 1))")
fi

SERVER_PIDS=()
cleanup() {
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server FILE: starts an epoll_echo, prints its port.
start_server() {
    "${SERVER_PIN[@]}" "$TARGET/bench/epoll_echo" 0 "$SERVER_THREADS" >"$1" &
    SERVER_PIDS+=($!)
    for _ in $(seq 100); do
        [ -s "$1" ] && break
        sleep 0.05
    done
    [ -s "$1" ] || die "epoll_echo did not print its port"
}
start_server "$RESULTS/server.port"
PORT=$(head -1 "$RESULTS/server.port")
PORT_C=$PORT
if [ -n "$TOGETHER" ]; then
    start_server "$RESULTS/server2.port"
    PORT_C=$(head -1 "$RESULTS/server2.port")
fi
log "epoll_echo (pids ${SERVER_PIDS[*]}, $SERVER_THREADS thread(s) each) on 127.0.0.1:$PORT ${TOGETHER:+and :$PORT_C, the clients together}; ${CPUS} CPUs, pinning: ${SERVER_PIN[*]:-none} / ${CLIENT_PIN[*]:-none}"

RUNS=$RESULTS/runs.jsonl
: >"$RUNS"
TIMES=$RESULTS/time.txt

# timed OUT -- CMD...: runs CMD under /usr/bin/time (to OUT.time); stdout to OUT.
timed() {
    local out=$1
    shift 2
    /usr/bin/time -o "$out.time" -f '%M %U %S %e' "$@" >"$out" || echo "exit $?" >>"$out.status"
    cp "$out.time" "$TIMES"
}

# record CLIENT CONNECTIONS ROUND OUTFILE: one JSON line into runs.jsonl.
record() {
    python3 - "$1" "$2" "$3" "$4" "$4.time" >>"$RUNS" <<'EOF'
import json, sys
client, conns, rnd, out, times = sys.argv[1:]
rss, user, sys_, wall = open(times).read().split()[-4:]
j = json.load(open(out))
if client == "sockload":
    row = {"rate": j["requests_per_s"], "p50_us": j["latency"]["p50_us"],
           "p99_us": j["latency"]["p99_us"], "errors": j["errors_total"],
           "requests": j["requests_total"], "measured_s": j["measured_s"]}
else:
    row = {"rate": j["rate"], "p50_us": j["p50_us"], "p99_us": j["p99_us"], "errors": j["errors"],
           "requests": j["requests"], "measured_s": j["duration_s"]}
row.update(client=client, connections=int(conns), round=int(rnd), rss_kib=int(rss),
           cpu_s=float(user) + float(sys_), wall_s=float(wall))
print(json.dumps(row))
EOF
}

run_c() {
    timed "$RESULTS/c.json" -- "${CLIENT_PIN[@]}" "$TARGET/bench/epoll_load" "$PORT_C" "$1" "$THREADS" "$DURATION" "$WARMUP"
}

run_sockload() {
    timed "$RESULTS/sockload.json" -- "${CLIENT_PIN[@]}" "$SOCKLOAD" --connect "127.0.0.1:$PORT" \
        --connections "$1" --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" --json
}

for round in $(seq "$ROUNDS"); do
    for n in $COUNTS; do
        log "round $round/$ROUNDS, $n connections"
        if [ -n "$TOGETHER" ]; then
            run_c "$n" &
            c_pid=$!
            run_sockload "$n"
            wait "$c_pid"
        elif [ $(((round + n) % 2)) -eq 0 ]; then
            run_c "$n"; run_sockload "$n"
        else
            run_sockload "$n"; run_c "$n"
        fi
        record epoll_load "$n" "$round" "$RESULTS/c.json"
        record sockload "$n" "$round" "$RESULTS/sockload.json"
    done
done

# CPU in open loop: --rate 10000 over 1,000 connections.
log "open loop: --rate 10000 over 1,000 connections"
timed "$RESULTS/open.json" -- "${CLIENT_PIN[@]}" "$SOCKLOAD" --connect "127.0.0.1:$PORT" \
    --connections 1000 --threads "$THREADS" --rate 10000 --duration 5 --warmup 1 --json
cp "$TIMES" "$RESULTS/open.time"

# CPU against a closed port (nothing listens: every connect is refused).
CLOSED=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "closed port 127.0.0.1:$CLOSED, 1,000 connections"
CLOSED_STATUS=0
/usr/bin/time -o "$RESULTS/closed.time" -f '%M %U %S %e' "${CLIENT_PIN[@]}" "$SOCKLOAD" \
    --connect "127.0.0.1:$CLOSED" --connections 1000 --threads "$THREADS" --duration 5 --warmup 0 \
    --json >"$RESULTS/closed.json" || CLOSED_STATUS=$?

LOADBENCH_TOGETHER=$TOGETHER LOADBENCH_WARMUP_S=$WARMUP python3 - "$RESULTS" "$THREADS" "$SERVER_THREADS" "$DURATION" "$ROUNDS" "$CLOSED_STATUS" "$STRICT" <<'EOF' | tee "$RESULTS/report.md"
import json, os, statistics as st, sys
res, threads, sthreads, duration, rounds, closed_status, strict = sys.argv[1:]
runs = [json.loads(l) for l in open(os.path.join(res, "runs.jsonl"))]
counts = sorted({r["connections"] for r in runs})
fails = []
warmup = float(os.environ.get("LOADBENCH_WARMUP_S", "0"))

def cpu_per_req(d):
    # The process's CPU (connects and warm-up included) over the requests it
    # made, warm-up ones estimated at the measured rate: less noisy than rates.
    return st.median(v["cpu_s"] / (v["requests"] * (1 + warmup / v["measured_s"])) * 1e6
                     for v in d.values())

print(f"### loadbench: sockload vs epoll_load against epoll_echo\n")
together = os.environ.get("LOADBENCH_TOGETHER")
print(f"{threads} client thread(s), {sthreads} server thread(s), {duration} s per run, "
      f"{rounds} rounds, medians (ratio: the median of the per-round ratios); "
      + ("the clients ran together, each against its own server" if together else
         "the clients ran one after the other, alternating which went first") + "\n")
print("| connections | epoll_load req/s | sockload req/s | ratio (target >= 1.0) | "
      "p50 µs C / sockload | p50 ratio (target within 10 %) | sockload peak RSS MiB | C peak RSS MiB | "
      "CPU µs per request C / sockload |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n in counts:
    by = lambda c: {r["round"]: r for r in runs if r["connections"] == n and r["client"] == c}
    c, s = by("epoll_load"), by("sockload")
    both = sorted(set(c) & set(s))
    ratio = st.median(s[k]["rate"] / c[k]["rate"] for k in both)
    p50 = st.median(s[k]["p50_us"] / max(c[k]["p50_us"], 1) for k in both)
    med = lambda d, f: st.median(v[f] for v in d.values())
    rss = max(v["rss_kib"] for v in s.values()) / 1024
    ok_rate, ok_p50 = ratio >= 1.0, abs(p50 - 1) <= 0.10
    ok_rss = n < 10000 or rss <= 64
    for ok, what in [(ok_rate, f"rate at {n}"), (ok_p50, f"p50 at {n}"), (ok_rss, f"RSS at {n}")]:
        if not ok:
            fails.append(what)
    mark = lambda ok: "PASS" if ok else "FAIL"
    print(f"| {n:,} | {med(c, 'rate'):,.0f} | {med(s, 'rate'):,.0f} | {ratio:.2f}x {mark(ok_rate)} | "
          f"{med(c, 'p50_us'):,.0f} / {med(s, 'p50_us'):,.0f} | {p50:.2f} {mark(ok_p50)} | "
          f"{rss:.1f}{' ' + mark(ok_rss) if n >= 10000 else ''} | "
          f"{max(v['rss_kib'] for v in c.values()) / 1024:.1f} | "
          f"{cpu_per_req(c):.2f} / {cpu_per_req(s):.2f} |")

def cpu(name):
    rss, user, sys_, wall = open(os.path.join(res, name)).read().split()[-4:]
    return (float(user) + float(sys_)), float(wall)

j = json.load(open(os.path.join(res, "open.json")))
cs, wall = cpu("open.time")
print(f"\nOpen loop, --rate 10000 over 1,000 connections, {threads} thread(s): "
      f"{j['requests_per_s']:,.0f} req/s, corrected p50 {j['corrected']['p50_us']} µs, "
      f"p99 {j['corrected']['p99_us']} µs, uncorrected p50 {j['uncorrected']['p50_us']} µs; "
      f"CPU {cs:.2f} s over {wall:.2f} s wall = {cs / wall:.3f} CPU-s per second.")
j = json.load(open(os.path.join(res, "closed.json")))
cs, wall = cpu("closed.time")
kinds = ", ".join(f"{k} {v:,}" for k, v in j["errors"].items() if v)
ok = cs / wall < 0.5 and closed_status == "1"
if not ok:
    fails.append("closed port")
print(f"\nClosed port, 1,000 connections for 5 s: exit {closed_status}, errors: {kinds}; "
      f"CPU {cs:.2f} s over {wall:.2f} s wall = {cs / wall:.3f} CPU-s per second "
      f"(target well under 0.5) {'PASS' if ok else 'FAIL'}.")
print("\n" + ("Every target met." if not fails else "Targets missed: " + ", ".join(fails) + "."))
if fails and strict:
    sys.exit(3)
EOF
