#!/usr/bin/env bash
# The first benchmark of sockserv (a script to run by hand, not a timed test).
#
# TCP echo on 127.0.0.1, connect-per-request and persistent connections, for
# each policy of sockserv beside Python's ForkingTCPServer/ThreadingTCPServer
# and a minimal raw-libc fork/thread echo loop (scripts/bench/raw_echo.c),
# all loaded by the same minimal raw-socket client (scripts/bench/rawload.c);
# then the memory of each server's process tree (PSS) before and while it
# holds a few hundred idle connections. Prints a Markdown table of rates and
# per-connection memory, the target ratios with PASS/FAIL, and, when sockload
# is built and answers with JSON, sockload's rate beside rawload's against the
# same server. Writes everything as JSON to the results directory.
#
# Usage: scripts/bench.sh [options]        (see --help; every option also has
#                                           an environment variable)
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench.sh [options]

  --quick               short runs: --duration 2 --warmup 0.5 (about a minute)
  --duration S          measured seconds per load run        [BENCH_DURATION=5]
  --warmup S            unmeasured seconds before each run   [BENCH_WARMUP=1]
  --connections N       client connections, connect-per-request [BENCH_CONNECTIONS=32]
  --persistent-connections N
                        client connections, persistent       [BENCH_PCONNECTIONS=32]
  --idle K              idle connections held for memory     [BENCH_IDLE=300]
  --size BYTES          request size                         [BENCH_SIZE=64]
  --sources N           loopback source addresses the clients spread their
                        connections over (127.0.0.2 and up; 1: the kernel's
                        choice, whose ephemeral-port search past TIME_WAIT
                        connections then limits connect-per-request)
                                                             [BENCH_SOURCES=64]
  --rounds N            repeat every load run N times (servers restarted each
                        round, runs interleaved); the median is reported
                                                             [BENCH_ROUNDS=1]
  --servers LIST        comma-separated subset of
                        sync,fork,thread,pool,raw-fork,raw-thread,py-fork,py-thread
                                                             [BENCH_SERVERS=all]
  --sockload-server S   server sockload is compared on (or "none")
                                                             [BENCH_SOCKLOAD_SERVER=thread]
  --pool-threads N      pass --threads N to the pool policy  [BENCH_POOL_THREADS=sockserv default]
  --results DIR         where the JSON/Markdown results go   [BENCH_RESULTS=bench-results]
  --no-build            use the binaries already built       [BENCH_NO_BUILD=1]
  BENCH_SOCKSERV=PATH, BENCH_SOCKLOAD=PATH
                        benchmark these binaries instead (e.g. to compare builds)
  --strict              exit 3 when a target fails (default: report only)
  -h, --help            this text

Binaries come from ${CARGO_TARGET_DIR:-target}/release; the C helpers are
compiled into ${CARGO_TARGET_DIR:-target}/bench. Needs cc (gcc), python3.
EOF
}

die() { echo "bench.sh: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SRC=$ROOT/scripts/bench

DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNECTIONS:-32}
PCONNS=${BENCH_PCONNECTIONS:-32}
IDLE=${BENCH_IDLE:-300}
SIZE=${BENCH_SIZE:-64}
SOURCES=${BENCH_SOURCES:-64}
ROUNDS=${BENCH_ROUNDS:-1}
SERVERS=${BENCH_SERVERS:-sync,fork,thread,pool,raw-fork,raw-thread,py-fork,py-thread}
SOCKLOAD_SERVER=${BENCH_SOCKLOAD_SERVER:-thread}
POOL_THREADS=${BENCH_POOL_THREADS:-}
RESULTS=${BENCH_RESULTS:-$ROOT/bench-results}
NO_BUILD=${BENCH_NO_BUILD:-}
STRICT=

while (($#)); do
    case $1 in
        --quick) DURATION=2 WARMUP=0.5 ;;
        --duration) DURATION=${2:?}; shift ;;
        --warmup) WARMUP=${2:?}; shift ;;
        --connections) CONNS=${2:?}; shift ;;
        --persistent-connections) PCONNS=${2:?}; shift ;;
        --idle) IDLE=${2:?}; shift ;;
        --size) SIZE=${2:?}; shift ;;
        --sources) SOURCES=${2:?}; shift ;;
        --rounds) ROUNDS=${2:?}; shift ;;
        --servers) SERVERS=${2:?}; shift ;;
        --sockload-server) SOCKLOAD_SERVER=${2:?}; shift ;;
        --pool-threads) POOL_THREADS=${2:?}; shift ;;
        --results) RESULTS=${2:?}; shift ;;
        --no-build) NO_BUILD=1 ;;
        --strict) STRICT=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

for n in "$CONNS" "$PCONNS" "$IDLE" "$SIZE" "$ROUNDS" "$SOURCES"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "not a positive integer: $n"
done
[[ -z $POOL_THREADS || $POOL_THREADS =~ ^[1-9][0-9]*$ ]] || die "bad --pool-threads: $POOL_THREADS"
for x in "$DURATION" "$WARMUP"; do
    [[ $x =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "not a number of seconds: $x"
done
IFS=, read -r -a SERVER_LIST <<< "$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    case $s in
        sync | fork | thread | pool | raw-fork | raw-thread | py-fork | py-thread) ;;
        *) die "unknown server $s" ;;
    esac
done

# --- Everything started is stopped by pid; the temp dir goes. --------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sockserv-bench.XXXXXX")
SERVER_PID=
HOLD_PID=
LOAD_PID=

# Pids of PID's descendants (children, grandchildren...), from /proc/*/stat.
descendants() {
    local root=$1 stat line rest pid ppid
    local -A kids=()
    for stat in /proc/[0-9]*/stat; do
        line=
        read -r line 2>/dev/null < "$stat" || continue
        rest=${line##*) }
        read -r _ ppid _ <<< "$rest"
        pid=${stat#/proc/}
        kids[$ppid]+=" ${pid%/stat}"
    done
    local -a tree=("$root")
    local i
    for ((i = 0; i < ${#tree[@]}; i++)); do
        # shellcheck disable=SC2206 # the space-separated list is meant to split
        tree+=(${kids[${tree[$i]}]:-})
    done
    echo "${tree[@]:1}"
}

# Stops a process we started (TERM, then KILL after a few seconds), and the
# descendants it had (a fork server's children), by pid.
stop_pid() {
    local pid=$1 kids i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kids=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 5 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    local k
    for k in $kids; do
        kill -KILL "$k" 2>/dev/null || true
    done
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$LOAD_PID"
    stop_pid "$HOLD_PID"
    stop_pid "$SERVER_PID"
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background and waits for it, so that a signal to this
# script is handled at once (the trap then stops it by pid).
run_bg() {
    "$@" &
    LOAD_PID=$!
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=
    return "$rc"
}

# --- Build. ---------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
SOCKSERV=${BENCH_SOCKSERV:-$TARGET_DIR/release/sockserv}
SOCKLOAD=${BENCH_SOCKLOAD:-$TARGET_DIR/release/sockload}
BUILD=$TARGET_DIR/bench
command -v python3 > /dev/null || die "python3 is needed"
CC=${CC:-cc}
command -v "$CC" > /dev/null || CC=gcc
if [[ -z $NO_BUILD ]]; then
    log "cargo build --release --bins"
    (cd "$ROOT" && cargo build --release --bins --quiet) || die "cargo build failed"
fi
[[ -x $SOCKSERV ]] || die "$SOCKSERV not built (run without --no-build)"
mkdir -p "$BUILD"
for prog in raw_echo rawload; do
    "$CC" -O2 -Wall -Wextra -pthread -o "$BUILD/$prog" "$BENCH_SRC/$prog.c" \
        || die "compiling $prog.c failed"
done
RAW_ECHO=$BUILD/raw_echo
RAWLOAD=$BUILD/rawload

# Older sockload builds (BENCH_SOCKLOAD) have no --sources.
SOCKLOAD_SOURCES=()
if [[ -x $SOCKLOAD ]] && "$SOCKLOAD" --help 2>/dev/null | grep -q -- '--sources'; then
    SOCKLOAD_SOURCES=(--sources "$SOURCES")
fi

NO_SUPERVISOR=()
if "$SOCKSERV" --help 2>/dev/null | grep -q -- '--no-supervisor'; then
    NO_SUPERVISOR=(--no-supervisor)
fi
NPROC=$(nproc)
POOL_SIZE=${POOL_THREADS:-$((4 * NPROC))} # sockserv's default: 4 threads per CPU
MAX_CHILDREN=$((IDLE + (CONNS > PCONNS ? CONNS : PCONNS) + 16))
# Room for the idle connections (and the load's) in every server.
nofile=$((IDLE * 2 + CONNS + PCONNS + 256))
if (($(ulimit -n) < nofile)); then
    ulimit -n "$nofile" 2>/dev/null || log "could not raise the open-files limit to $nofile"
fi

# Is sockload there, and does it speak the contract?
SOCKLOAD_STATUS=ok
if [[ $SOCKLOAD_SERVER == none ]]; then
    SOCKLOAD_STATUS="disabled (--sockload-server none)"
elif [[ ! -x $SOCKLOAD ]]; then
    SOCKLOAD_STATUS="$SOCKLOAD not built"
elif ! "$SOCKLOAD" --help 2>&1 | grep -q -- '--json'; then
    SOCKLOAD_STATUS="sockload --help shows no --json (not written yet?)"
elif [[ ",$SERVERS," != *",$SOCKLOAD_SERVER,"* ]]; then
    SOCKLOAD_STATUS="server $SOCKLOAD_SERVER not in --servers"
fi

# --- Servers. -------------------------------------------------------------
SERVER_PORT=

# start_server NAME: starts it on 127.0.0.1 port 0; sets SERVER_PID, SERVER_PORT.
start_server() {
    local name=$1 out=$TMP/$1.out err=$TMP/$1.err
    : > "$out"
    : > "$err"
    case $name in
        sync | fork | thread | pool)
            local -a extra=()
            case $name in
                fork) extra=(--max-children "$MAX_CHILDREN") ;;
                pool) [[ -n $POOL_THREADS ]] && extra=(--threads "$POOL_THREADS") ;;
            esac
            "$SOCKSERV" "${NO_SUPERVISOR[@]}" --transport tcp --listen 127.0.0.1:0 \
                --policy "$name" --service echo --log-format json --graceful-timeout 5 \
                "${extra[@]}" > "$out" 2> "$err" &
            ;;
        raw-fork | raw-thread)
            "$RAW_ECHO" "${name#raw-}" 0 > "$out" 2> "$err" &
            ;;
        py-fork | py-thread)
            python3 "$BENCH_SRC/py_echo.py" "${name#py-}" 0 --max-children "$MAX_CHILDREN" \
                > "$out" 2> "$err" &
            ;;
    esac
    SERVER_PID=$!
    SERVER_PORT=
    local i
    for ((i = 0; i < 200; i++)); do
        case $name in
            sync | fork | thread | pool)
                SERVER_PORT=$(grep -m1 '"msg":"listening"' "$err" \
                    | grep -o '"addr":"[^"]*"' | grep -o '[0-9]*"$' | tr -d '"') || true
                ;;
            *) SERVER_PORT=$(head -n1 "$out" | tr -dc '0-9') ;;
        esac
        [[ -n $SERVER_PORT ]] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "server $name did not start; its stderr:"
    cat "$err" >&2
    stop_pid "$SERVER_PID"
    SERVER_PID=
    return 1
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=
}

RECORDS=$TMP/records.jsonl
: > "$RECORDS"

note() { # note SERVER TEXT
    python3 -c 'import json,sys; print(json.dumps({"kind":"note","server":sys.argv[1],"text":sys.argv[2]}))' \
        "$1" "$2" >> "$RECORDS"
}

# load CLIENT SERVER MODE CONNS ROUND: one load run against the running server.
load() {
    local client=$1 server=$2 mode=$3 conns=$4 round=$5
    local out=$TMP/load.out rc=0 limit
    limit=$(python3 -c "print(int($DURATION + $WARMUP + 30))")
    if [[ $client == rawload ]]; then
        run_bg "$RAWLOAD" --connect "127.0.0.1:$SERVER_PORT" --connections "$conns" \
            --duration "${DURATION}s" --warmup "${WARMUP}s" --size "$SIZE" --mode "$mode" \
            --sources "$SOURCES" > "$out" 2> "$TMP/load.err" || rc=$?
    else
        run_bg timeout -s KILL "$limit" "$SOCKLOAD" --transport tcp \
            --connect "127.0.0.1:$SERVER_PORT" --connections "$conns" \
            --duration "${DURATION}s" --warmup "${WARMUP}s" --size "$SIZE" --mode "$mode" \
            --expect echo --json "${SOCKLOAD_SOURCES[@]}" > "$out" 2> "$TMP/load.err" || rc=$?
    fi
    if ((rc != 0)); then
        log "$client against $server ($mode) exited $rc: $(tail -c 300 "$TMP/load.err")"
        cat "$TMP/load.err" >> "$out"
    fi
    python3 "$BENCH_SRC/report.py" load-record --server "$server" --client "$client" \
        --mode "$mode" --round "$round" --connections "$conns" "$out" >> "$RECORDS"
    tail -n1 "$RECORDS" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
v = "failed" if r["rate"] is None else "%.0f req/s" % r["rate"]
print("bench:   %-8s %-10s %-10s %3d conn  %s" % (r["client"], r["server"], r["mode"], r["connections"], v), file=sys.stderr)'
}

# memory SERVER: PSS of the server's tree, fresh, then holding IDLE connections.
# The holding client starts (and maps its libraries) before the first reading,
# so that shared file pages are split the same way in both.
memory() {
    local server=$1 before bprocs bthreads after procs threads i
    local ready=$TMP/hold.ready armed=$TMP/hold.armed go=$TMP/hold.go
    rm -f "$ready" "$armed" "$go"
    python3 "$BENCH_SRC/hold_idle.py" --connect "127.0.0.1:$SERVER_PORT" -n "$IDLE" \
        --armed-file "$armed" --go-file "$go" --ready-file "$ready" --max-hold 300 \
        > /dev/null 2> "$TMP/hold.err" &
    HOLD_PID=$!
    for ((i = 0; i < 1200; i++)); do
        [[ -e $armed ]] && break
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.05
    done
    read -r before bprocs bthreads < <("$BENCH_SRC/pss.sh" "$SERVER_PID")
    : > "$go"
    for ((i = 0; i < 1200; i++)); do
        [[ -e $ready ]] && break
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [[ ! -e $ready ]]; then
        log "holding $IDLE connections to $server failed: $(tail -c 300 "$TMP/hold.err")"
        note "$server" "memory: holding $IDLE idle connections failed"
        stop_pid "$HOLD_PID"
        HOLD_PID=
        return 0
    fi
    sleep 0.5 # let the last children and threads settle into their read
    read -r after procs threads < <("$BENCH_SRC/pss.sh" "$SERVER_PID")
    stop_pid "$HOLD_PID"
    HOLD_PID=
    python3 -c '
import json, sys
s, b, a, k, p, t = sys.argv[1], *map(int, sys.argv[2:])
print(json.dumps({"kind": "mem", "server": s, "idle": k, "before_kib": b, "after_kib": a,
                  "per_conn_kib": (a - b) / k, "procs": p, "threads": t}))' \
        "$server" "$before" "$after" "$IDLE" "$procs" "$threads" >> "$RECORDS"
    log "  memory    $server: PSS $before KiB -> $after KiB with $IDLE idle connections" \
        "($procs processes, $threads threads): $(((after - before) / IDLE)) KiB each"
    # Wait (up to 10 s) for the held connections' children/threads to go.
    for ((i = 0; i < 200; i++)); do
        read -r _ procs threads < <("$BENCH_SRC/pss.sh" "$SERVER_PID")
        ((procs <= bprocs && threads <= bthreads)) && break
        sleep 0.05
    done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "servers: ${SERVER_LIST[*]}; ${DURATION}s runs after ${WARMUP}s warm-up, ${ROUNDS} round(s);" \
    "connect-per-request $CONNS conn, persistent $PCONNS conn, $IDLE idle, ${SIZE}-byte requests;" \
    "sockserv ${NO_SUPERVISOR[*]:-(supervisor flag absent)}; sockload: $SOCKLOAD_STATUS"

for ((round = 1; round <= ROUNDS; round++)); do
    for server in "${SERVER_LIST[@]}"; do
        log "round $round: $server"
        if ! start_server "$server"; then
            note "$server" "did not start"
            continue
        fi
        if ((round == 1)); then
            case $server in
                sync) note sync "memory n/a: serves one connection at a time" ;;
                pool) note pool "memory n/a: a fixed set of $POOL_SIZE threads serves at most that many connections" ;;
                *) memory "$server" ;;
            esac
        fi
        load rawload "$server" connect "$CONNS" "$round"
        # Persistent clients occupy a worker for their whole life: sync serves
        # one connection at a time and the pool as many as it has threads, so
        # more clients than that would stall in the backlog or the queue.
        pconns=$PCONNS
        case $server in
            sync) pconns=1 ;;
            pool) ((pconns > POOL_SIZE)) && pconns=$POOL_SIZE ;;
        esac
        load rawload "$server" persistent "$pconns" "$round"
        if [[ $server == "$SOCKLOAD_SERVER" && $SOCKLOAD_STATUS == ok ]]; then
            load sockload "$server" connect "$CONNS" "$round"
            load sockload "$server" persistent "$pconns" "$round"
        fi
        stop_server
    done
done

if [[ $SOCKLOAD_STATUS == ok ]] && grep -q '"client": "sockload".*"rate": null' "$RECORDS"; then
    SOCKLOAD_STATUS="sockload ran but gave no usable JSON (see results)"
fi

# --- Report. --------------------------------------------------------------
mkdir -p "$RESULTS"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- src bin 2>/dev/null) ]]; then rev+="+dirty"; fi
if [[ -n $NO_BUILD || -n ${BENCH_SOCKSERV:-} ]]; then rev+=" (binaries not rebuilt)"; fi
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
echo
echo "## sockserv benchmark $stamp ($rev; $NPROC CPUs, ${cpu:-unknown CPU}, $(uname -r))"
echo
echo "TCP echo on 127.0.0.1, ${SIZE}-byte requests, rawload client from $SOURCES loopback source" \
    "address(es); ${DURATION}s per run after" \
    "${WARMUP}s warm-up, median of $ROUNDS round(s). connect-per-request: $CONNS connections;" \
    "persistent: $PCONNS (sync: 1, pool: at most its $POOL_SIZE threads). Memory: PSS summed" \
    "over the server's process tree, fresh and holding $IDLE idle connections, delta / $IDLE."
echo
rc=0
python3 "$BENCH_SRC/report.py" render --records "$RECORDS" \
    --out "$RESULTS/bench-$stamp.json" --markdown "$RESULTS/bench-$stamp.md" \
    --meta "stamp=$stamp" --meta "rev=$rev" --meta "cpus=$NPROC" --meta "cpu=$cpu" \
    --meta "kernel=$(uname -r)" --meta "duration_s=$DURATION" --meta "warmup_s=$WARMUP" \
    --meta "connections=$CONNS" --meta "persistent_connections=$PCONNS" \
    --meta "idle=$IDLE" --meta "size=$SIZE" --meta "rounds=$ROUNDS" --meta "sources=$SOURCES" \
    --meta "pool_threads=$POOL_SIZE" --meta "max_children=$MAX_CHILDREN" \
    --meta "loadavg_start=$LOAD_START" --meta "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" \
    --meta "sockserv_flags=${NO_SUPERVISOR[*]:-}" --meta "sockload_status=$SOCKLOAD_STATUS" \
    || rc=$?
cp "$RESULTS/bench-$stamp.json" "$RESULTS/latest.json"
echo
echo "Results: $RESULTS/bench-$stamp.json (and .md)"
if ((rc == 3)) && [[ -z $STRICT ]]; then rc=0; fi
exit "$rc"
