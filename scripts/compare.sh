#!/usr/bin/env bash
# Fork vs thread, measured: the comparison matrix (a script to run by hand).
#
# Builds in release, then for each policy (sync, fork, thread, pool, prefork,
# and Python's ForkingMixIn/ThreadingMixIn servers as reference rows) x
# transport (tcp, unix, udp, unix-dgram) x workload (persistent echo,
# connect-per-request echo, delay = I/O-bound, cpu = CPU-bound) it starts
# one server on loopback, samples its process tree (RSS, PSS, processes,
# threads) every 200 ms while sockload loads it, and writes one JSON cell.
# Then it holds --idle idle TCP connections against each policy and records
# what they cost in memory, and, with every policy at its default bounds,
# times a normal client's request while N silent and N stalled connections
# are held (the slow-clients row). Finally `sockload report` prints the Markdown
# tables and draws the chart; both also go to the results directory.
#
# Usage: scripts/compare.sh [options]        (see --help)
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/compare.sh [options]

  --policies LIST     comma-separated subset of
                      sync,fork,thread,pool,event,prefork,py-fork,
                      py-thread                                         [all]
  --transports LIST   subset of tcp,unix,udp,unix-dgram                 [all]
  --workloads LIST    subset of persistent,connect,delay,cpu, or none    [all]
  --duration S        measured seconds per cell                         [2]
  --warmup S          unmeasured load before each cell, seconds         [0.5]
  --connections N     client connections per cell (capped where a policy
                      cannot serve that many persistent connections)   [16]
  --idle N            idle TCP connections held per policy; 0 skips     [1000]
  --sweep LIST        a connection-count sweep: persistent echo over TCP at
                      each count (e.g. 16,1000,10000) for fork, thread and
                      Python's servers among --policies (fork's
                      --max-children and thread's --max-threads raised to
                      the count); empty skips                            [none]
  --slow LIST         slow clients: for each N, every policy at its default
                      bounds (fork's --max-children, thread's --max-threads,
                      Python's max_children 40) holds N silent and N
                      stalled TCP connections while one normal client's
                      request is timed; none skips                [10,100,1000]
  --slow-bound S      the normal client's wait before "locked out"     [5]
  --quick             about a minute: tcp only, --duration 1 --warmup 0.25
                      --idle 200 --slow 10,100 (flags given explicitly
                      still win)
  --results DIR       where the JSON files, compare.md, compare.svg and
                      compare.html go
                      (must be empty or absent)  [bench-results/compare-STAMP]
  --no-build          use the binaries already built
  --workers N         prefork: sync worker processes                    [4]
  --pool-threads N    pool: --threads (its --queue is as long)   [4 per CPU]
  --delay-ms MS       delay workload: wait per request                  [10]
  --cpu-rounds N      cpu workload: hashing rounds per request          [10000]
  --py-cpu-rounds N   rounds for the Python servers' cpu handler (the same
                      loop, 75 times slower in Python)  [calibrated: as many
                      as take the time sockserv's --cpu-rounds take]
  --timeout S         sockload's per-request timeout, seconds           [5]
  --sources N         TCP: loopback source addresses sockload spreads its
                      connections over (see scripts/README.md)         [64]
  -h, --help          this text

A full run (8 policies x 4 transports x 4 workloads = 128 cells, plus the
idle connections) takes about 7 minutes with the defaults. Binaries come from
${CARGO_TARGET_DIR:-target}/release (built with `cargo build --release --bins`
unless --no-build). Needs python3 and Linux's /proc.
EOF
}

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "compare: $*" >&2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SRC=$ROOT/scripts/bench
CMP_SRC=$ROOT/scripts/compare

ALL_POLICIES=sync,fork,thread,pool,event,prefork,py-fork,py-thread
ALL_TRANSPORTS=tcp,unix,udp,unix-dgram
ALL_WORKLOADS=persistent,connect,delay,cpu

POLICIES=$ALL_POLICIES WORKLOADS=$ALL_WORKLOADS
TRANSPORTS='' DURATION='' WARMUP='' IDLE='' QUICK='' SLOW='' SLOW_BOUND=5
SWEEP='' CONNS=16 WORKERS=4 POOL_THREADS='' DELAY_MS=10 CPU_ROUNDS=10000 PY_CPU_ROUNDS='' TIMEOUT=5 SOURCES=64
RESULTS='' NO_BUILD=''

while (($#)); do
    case $1 in
        --policies) POLICIES=${2:?--policies needs a list}; shift ;;
        --transports) TRANSPORTS=${2:?--transports needs a list}; shift ;;
        --workloads) WORKLOADS=${2:?--workloads needs a list}; shift ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift ;;
        --warmup) WARMUP=${2:?--warmup needs seconds}; shift ;;
        --connections) CONNS=${2:?--connections needs a number}; shift ;;
        --idle) IDLE=${2:?--idle needs a number}; shift ;;
        --sweep) SWEEP=${2?--sweep needs a list of connection counts}; shift ;;
        --slow) SLOW=${2:?--slow needs a list of counts, or none}; shift ;;
        --slow-bound) SLOW_BOUND=${2:?--slow-bound needs seconds}; shift ;;
        --quick) QUICK=1 ;;
        --results) RESULTS=${2:?--results needs a directory}; shift ;;
        --no-build) NO_BUILD=1 ;;
        --workers) WORKERS=${2:?--workers needs a number}; shift ;;
        --pool-threads) POOL_THREADS=${2:?--pool-threads needs a number}; shift ;;
        --delay-ms) DELAY_MS=${2:?--delay-ms needs a number}; shift ;;
        --cpu-rounds) CPU_ROUNDS=${2:?--cpu-rounds needs a number}; shift ;;
        --py-cpu-rounds) PY_CPU_ROUNDS=${2:?--py-cpu-rounds needs a number}; shift ;;
        --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift ;;
        --sources) SOURCES=${2:?--sources needs a number}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown flag $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [[ -n $QUICK ]]; then
    TRANSPORTS=${TRANSPORTS:-tcp} DURATION=${DURATION:-1} WARMUP=${WARMUP:-0.25} IDLE=${IDLE:-200}
    SLOW=${SLOW:-10,100}
fi
SLOW=${SLOW:-10,100,1000}
TRANSPORTS=${TRANSPORTS:-$ALL_TRANSPORTS} DURATION=${DURATION:-2} WARMUP=${WARMUP:-0.5}
IDLE=${IDLE:-1000}
NPROC=$(nproc)
POOL_THREADS=${POOL_THREADS:-$((4 * NPROC))} # sockserv's default, made explicit

# check_list NAME VALUE ALLOWED: every comma-separated item of VALUE is allowed.
check_list() {
    local item
    local -a items
    [[ -n $2 ]] || die "--$1: empty list"
    IFS=, read -r -a items <<< "$2"
    for item in "${items[@]}"; do
        [[ ",$3," == *",$item,"* ]] || die "--$1: unknown item '$item' (expected some of $3)"
    done
}
check_list policies "$POLICIES" "$ALL_POLICIES"
check_list transports "$TRANSPORTS" "$ALL_TRANSPORTS"
[[ $WORKLOADS == none ]] || check_list workloads "$WORKLOADS" "$ALL_WORKLOADS"
for kv in "connections=$CONNS" "workers=$WORKERS" "pool-threads=$POOL_THREADS" \
    "delay-ms=$DELAY_MS" "cpu-rounds=$CPU_ROUNDS" "sources=$SOURCES"; do
    [[ ${kv#*=} =~ ^[1-9][0-9]*$ ]] || die "--${kv%%=*}: not a positive integer: ${kv#*=}"
done
[[ $IDLE =~ ^[0-9]+$ ]] || die "--idle: not a number: $IDLE"
[[ -z $PY_CPU_ROUNDS || $PY_CPU_ROUNDS =~ ^[1-9][0-9]*$ ]] \
    || die "--py-cpu-rounds: not a positive integer: $PY_CPU_ROUNDS"
for kv in "duration=$DURATION" "warmup=$WARMUP" "timeout=$TIMEOUT" "slow-bound=$SLOW_BOUND"; do
    [[ ${kv#*=} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--${kv%%=*}: not a number of seconds: ${kv#*=}"
done
((CONNS <= 1000)) || die "--connections: at most 1000"
SWEEP_LIST=() SWEEP_MAX=0
if [[ -n $SWEEP ]]; then
    IFS=, read -r -a SWEEP_LIST <<< "$SWEEP"
    for n in "${SWEEP_LIST[@]}"; do
        [[ $n =~ ^[1-9][0-9]*$ ]] && ((n <= 100000)) \
            || die "--sweep: not a connection count from 1 to 100000: $n"
        ((n > SWEEP_MAX)) && SWEEP_MAX=$n
    done
fi
SLOW_LIST=()
if [[ $SLOW != none ]]; then
    IFS=, read -r -a SLOW_LIST <<< "$SLOW"
    for n in "${SLOW_LIST[@]}"; do
        [[ $n =~ ^[1-9][0-9]*$ ]] && ((n <= 10000)) \
            || die "--slow: not a connection count from 1 to 10000: $n"
        ((n > SWEEP_MAX)) && SWEEP_MAX=$n # room in the open-files limit below
    done
fi
IFS=, read -r -a POLICY_LIST <<< "$POLICIES"
IFS=, read -r -a TRANSPORT_LIST <<< "$TRANSPORTS"
WORKLOAD_LIST=()
[[ $WORKLOADS == none ]] || IFS=, read -r -a WORKLOAD_LIST <<< "$WORKLOADS"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$ROOT/bench-results/compare-$STAMP}
if [[ -e $RESULTS ]]; then
    [[ -d $RESULTS && -z $(ls -A "$RESULTS") ]] || die "$RESULTS: exists and is not an empty directory"
fi
command -v python3 > /dev/null || die "python3 is needed"
command -v timeout > /dev/null || die "timeout (coreutils) is needed"

# --- Everything started is stopped by pid; the temp dir goes. --------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sockserv-compare.XXXXXX")
SERVER_PID='' LOAD_PID='' HOLD_PID='' SAMPLER_PID=''

# Pids of PID's descendants (children, grandchildren...), from /proc/*/stat.
descendants() {
    local root=$1 stat line rest pid ppid i
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
    for ((i = 0; i < ${#tree[@]}; i++)); do
        # shellcheck disable=SC2206 # the space-separated list is meant to split
        tree+=(${kids[${tree[$i]}]:-})
    done
    echo "${tree[@]:1}"
}

# Stops a process we started (TERM, then KILL after 5 s) and, by pid, the
# descendants it had when asked to stop (fork children, prefork workers).
stop_pid() {
    local pid=$1 kids i k
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
    stop_pid "$SAMPLER_PID"
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
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
SOCKSERV=$TARGET_DIR/release/sockserv
SOCKLOAD=$TARGET_DIR/release/sockload
if [[ -z $NO_BUILD ]]; then
    log "cargo build --release --bins"
    (cd "$ROOT" && cargo build --release --bins --quiet) || die "cargo build failed"
fi
for bin in "$SOCKSERV" "$SOCKLOAD"; do
    [[ -x $bin ]] || die "$bin: not built (run without --no-build)"
done
"$SOCKLOAD" report --help > /dev/null 2>&1 || die "$SOCKLOAD: has no 'report' subcommand (too old?)"

# Room for the idle connections (the server's and hold_idle's ends) and the load.
MAX_CHILDREN=$((IDLE + CONNS + 64))
MAX_THREADS=$MAX_CHILDREN
nofile=$((2 * IDLE + 4 * CONNS + 1024))
((nofile >= 2 * SWEEP_MAX + 1024)) || nofile=$((2 * SWEEP_MAX + 1024))
((nofile >= 8192)) || nofile=8192
if (($(ulimit -n) < nofile)); then
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] || ((hard >= nofile)) || nofile=$hard
    ulimit -n "$nofile" 2>/dev/null || log "could not raise the open-files limit to $nofile"
fi
(($(ulimit -n) >= IDLE + 256)) \
    || log "open-files limit $(ulimit -n) is too low for $IDLE idle connections; holding may fail"

# --- Servers. -------------------------------------------------------------
SEQ=0 DEFAULT_BOUNDS=''
SERVER_ADDR='' SERVER_CMD=''

# start_server POLICY TRANSPORT SERVICE: on loopback (port 0) or a socket in
# TMP; sets SERVER_PID, SERVER_ADDR (what sockload --connect takes), SERVER_CMD.
start_server() {
    local policy=$1 transport=$2 service=$3 listen i py_children=$MAX_CHILDREN
    local out=$TMP/server.out err=$TMP/server.err
    local -a cmd
    [[ -n $DEFAULT_BOUNDS ]] && py_children=40 # ForkingMixIn.max_children
    SEQ=$((SEQ + 1))
    CONTROL=
    case $transport in
        tcp | udp) listen=127.0.0.1:0 ;;
        *) listen=$TMP/s$SEQ.sock ;;
    esac
    case $policy in
        py-*)
            [[ $listen == *:0 ]] && listen=0
            cmd=(python3 "$BENCH_SRC/py_echo.py" "${policy#py-}" "$listen" --transport "$transport"
                --service "$service" --delay-ms "$DELAY_MS"
                --max-children "$py_children")
            if [[ -n $CPU_US ]]; then
                cmd+=(--cpu-us "$CPU_US")
            else
                cmd+=(--cpu-rounds "${PY_CPU_ROUNDS:-$CPU_ROUNDS}")
            fi
            ;;
        *)
            CONTROL=$TMP/c$SEQ.ctl
            cmd=("$SOCKSERV" --transport "$transport" --listen "$listen" --service "$service"
                --log-format json --graceful-timeout 2 --control "$CONTROL")
            case $service in
                delay) cmd+=(--delay-ms "$DELAY_MS") ;;
                cpu) cmd+=(--cpu-rounds "$CPU_ROUNDS") ;;
            esac
            case $policy in
                prefork) cmd+=(--policy sync --workers "$WORKERS") ;;
                fork) cmd+=(--no-supervisor --policy fork)
                    [[ -n $DEFAULT_BOUNDS ]] || cmd+=(--max-children "$MAX_CHILDREN") ;;
                thread) cmd+=(--no-supervisor --policy thread)
                    [[ -n $DEFAULT_BOUNDS ]] || cmd+=(--max-threads "$MAX_THREADS") ;;
                pool) cmd+=(--no-supervisor --policy pool --threads "$POOL_THREADS") ;;
                *) cmd+=(--no-supervisor --policy "$policy") ;;
            esac
            ;;
    esac
    SERVER_CMD="${cmd[*]}"
    SERVER_CMD=${SERVER_CMD//$TMP/\$TMP}
    # Emptied here, not by the child's redirection: that runs later, and until
    # then the files still hold the previous server's address.
    : > "$out"
    : > "$err"
    "${cmd[@]}" > "$out" 2> "$err" &
    SERVER_PID=$!
    SERVER_ADDR=
    for ((i = 0; i < 200; i++)); do
        case $policy in
            py-*) SERVER_ADDR=$(head -n1 "$out") ;;
            *) SERVER_ADDR=$(grep -m1 -o '"msg":"listening".*"addr":"[^"]*"' "$err" \
                | sed 's/.*"addr":"\([^"]*\)"$/\1/') || true ;;
        esac
        if [[ -n $SERVER_ADDR ]]; then
            [[ $SERVER_ADDR =~ ^[0-9]+$ ]] && SERVER_ADDR=127.0.0.1:$SERVER_ADDR
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    START_ERROR="server did not start: $(tail -c 300 "$err" | tr '\n' ' ')"
    log "$policy over $transport: $START_ERROR"
    stop_server
    return 1
}

# wait_file FILE PID TRIES: waits (TRIES x 50 ms at most) for FILE, or PID's end.
wait_file() {
    local i
    for ((i = 0; i < $3; i++)); do
        [[ -e $1 ]] && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    [[ -e $1 ]]
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=
}

stream() { [[ $1 == tcp || $1 == unix ]]; }

# cell_connections POLICY TRANSPORT WORKLOAD: sets CELL_CONNS, the
# connections the cell uses, and CELL_NOTE when that is not --connections. A
# persistent stream connection occupies a sync server, a prefork worker or a
# pool thread for its whole life: more clients than that would sit in the
# backlog (or the pool's queue) and time out, measuring nothing.
CELL_CONNS='' CELL_NOTE=''
cell_connections() {
    local policy=$1 transport=$2 workload=$3 cap=
    CELL_CONNS=$CONNS CELL_NOTE=
    stream "$transport" && [[ $workload != connect ]] || return 0
    case $policy in
        sync) cap=1 CELL_NOTE="sync serves one stream connection at a time: 1 connection" ;;
        prefork) cap=$WORKERS CELL_NOTE="prefork's $WORKERS sync workers serve one stream connection each: $WORKERS connections" ;;
        pool) cap=$POOL_THREADS CELL_NOTE="pool serves as many persistent connections as it has threads: $POOL_THREADS connections" ;;
    esac
    if [[ -n $cap ]] && ((CONNS > cap)); then
        CELL_CONNS=$cap
    else
        CELL_NOTE=
    fi
}

# --- Calibration. ---------------------------------------------------------
# The Python servers' cpu handler runs sockserv's hashing loop; left at the
# same rounds it would take some 75 times longer per request, so by default
# it runs as many rounds as take the time sockserv's do: CPU_US, the median
# latency of sockserv's cpu service (sync, one connection, so nothing else
# runs), which py_echo.py --cpu-us turns into rounds.
CPU_US=''
if [[ -z $PY_CPU_ROUNDS && ",$POLICIES," == *,py-* && ",$WORKLOADS," == *,cpu,* ]]; then
    if start_server sync tcp cpu; then
        CPU_US=$(timeout -s KILL 30 "$SOCKLOAD" --connect "$SERVER_ADDR" --connections 1 \
            --duration 0.5 --warmup 0.2 --json 2>/dev/null \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency"]["p50_us"])') || CPU_US=
        stop_server
    fi
    if [[ $CPU_US =~ ^[1-9][0-9]*$ ]]; then
        log "calibration: sockserv's cpu service takes $CPU_US µs per request ($CPU_ROUNDS rounds)"
    else
        log "calibration failed; the Python servers' cpu handler runs the same $CPU_ROUNDS rounds"
        CPU_US=''
    fi
fi

# --- The matrix. ----------------------------------------------------------
mkdir -p "$RESULTS"
CELLS=$((${#POLICY_LIST[@]} * ${#TRANSPORT_LIST[@]} * ${#WORKLOAD_LIST[@]}))
LIMIT=$(python3 -c "import math; print(math.ceil($DURATION + $WARMUP + 3 * $TIMEOUT + 30))")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$SECONDS
log "$CELLS cells: ${POLICY_LIST[*]} x ${TRANSPORT_LIST[*]} x ${WORKLOAD_LIST[*]};" \
    "${DURATION}s after ${WARMUP}s warm-up, $CONNS connections; $IDLE idle; results in $RESULTS"

# run_cell N POLICY TRANSPORT WORKLOAD CONNS [NOTE]: one load run against one
# fresh server, written to $RESULTS as cell number N.
run_cell() {
    local n=$1 policy=$2 transport=$3 workload=$4 conns=$5 note=${6:-}
    local server=sockserv service=echo mode=persistent rc=0 file load peak py_cpu
    local -a args sources control
    case $policy in py-*) server=python ;; esac
    case $workload in
        persistent | connect | sweep) ;;
        *) service=$workload ;;
    esac
    [[ $workload == connect ]] && mode=connect
    file=$RESULTS/$(printf %03d "$n")-$policy-$transport-$workload-$conns.json
    load=$TMP/load.json peak=$TMP/peak.json
    rm -f "$load" "$load.err" "$peak"
    args=(--out "$file" --server "$server" --policy "$policy" --transport "$transport"
        --workload "$workload" --connections "$conns" --load "$load" --peak "$peak")
    [[ -n $note ]] && args+=(--note "$note")
    START_ERROR=
    if ! start_server "$policy" "$transport" "$service"; then
        printf 'compare: [%d/%d]' "$n" "$CELLS" >&2
        python3 "$CMP_SRC/results.py" cell "${args[@]}" --error "$START_ERROR"
        return 0
    fi
    if [[ $policy == py-* && $workload == cpu ]]; then
        py_cpu=$(grep -m1 '^cpu: ' "$TMP/server.err" | sed 's/^cpu: //') || true
        args+=(--note "the Python handler hashes ${py_cpu:-? rounds} (sockserv: $CPU_ROUNDS rounds${CPU_US:+, $CPU_US us})")
    fi
    # sockserv reports on itself (`status` on its control socket); Python's
    # servers are read from /proc.
    control=()
    [[ -n $CONTROL ]] && control=(--control "$CONTROL")
    python3 "$CMP_SRC/sample.py" peak "$SERVER_PID" --out "$peak" --interval 0.2 \
        --max-seconds "$LIMIT" "${control[@]}" &
    SAMPLER_PID=$!
    # The first sample (the idle server) is taken before the load starts.
    wait_file "$peak" "$SAMPLER_PID" 200 || true
    sources=()
    [[ $transport == tcp && $SOURCES != 1 ]] && sources=(--sources "$SOURCES")
    run_bg timeout -s KILL "$LIMIT" "$SOCKLOAD" --transport "$transport" \
        --connect "$SERVER_ADDR" --connections "$conns" --duration "$DURATION" \
        --warmup "$WARMUP" --mode "$mode" --expect echo --timeout "$TIMEOUT" \
        --max-error-rate 1 --json "${sources[@]}" > "$load" 2> "$load.err" || rc=$?
    stop_pid "$SAMPLER_PID"
    SAMPLER_PID=
    kill -0 "$SERVER_PID" 2>/dev/null || args+=(--error "the server exited during the run")
    stop_server
    printf 'compare: [%d/%d]' "$n" "$CELLS" >&2
    python3 "$CMP_SRC/results.py" cell "${args[@]}" --rc "$rc" --command "$SERVER_CMD"
}

# The sweep's policies: those that hold every persistent connection at once.
SWEEP_POLICIES=()
if ((${#SWEEP_LIST[@]})); then
    for policy in "${POLICY_LIST[@]}"; do
        case $policy in
            fork | thread | event | py-fork | py-thread) SWEEP_POLICIES+=("$policy") ;;
        esac
    done
fi
CELLS=$((CELLS + ${#SWEEP_POLICIES[@]} * ${#SWEEP_LIST[@]}))

n=0
for policy in "${POLICY_LIST[@]}"; do
    for transport in "${TRANSPORT_LIST[@]}"; do
        for workload in "${WORKLOAD_LIST[@]}"; do
            n=$((n + 1))
            cell_connections "$policy" "$transport" "$workload"
            run_cell "$n" "$policy" "$transport" "$workload" "$CELL_CONNS" "$CELL_NOTE"
        done
    done
done

# --- The connection-count sweep. ------------------------------------------
# Persistent echo over TCP at each count, the bounds raised to match, so the
# rows show where a process or a thread per connection stops scaling.
for conns in "${SWEEP_LIST[@]}"; do
    for policy in "${SWEEP_POLICIES[@]}"; do
        n=$((n + 1))
        MAX_CHILDREN=$((conns + 64)) MAX_THREADS=$((conns + 64))
        run_cell "$n" "$policy" tcp sweep "$conns"
    done
done
MAX_CHILDREN=$((IDLE + CONNS + 64)) MAX_THREADS=$MAX_CHILDREN

# --- Idle connections. ----------------------------------------------------
# idle POLICY: the tree's memory fresh and then holding idle TCP connections.
# hold_idle starts (and maps its libraries) before the first reading, so the
# pages it shares with the server are split the same way in both readings.
idle() {
    local policy=$1 server=sockserv k=$IDLE note=
    local ready=$TMP/hold.ready armed=$TMP/hold.armed go=$TMP/hold.go
    local before=$TMP/before.json after=$TMP/after.json file
    [[ $policy == py-* ]] && server=python
    case $policy in
        sync) k=1 note="sync serves one connection at a time: it holds 1" ;;
        prefork) k=$WORKERS note="prefork's $WORKERS sync workers hold one connection each" ;;
        pool) k=$POOL_THREADS note="pool holds one connection per thread ($POOL_THREADS); a connection past that waits in its queue, unserved" ;;
    esac
    ((k > IDLE)) && k=$IDLE
    IDLE_SEQ=$((IDLE_SEQ + 1))
    file=$RESULTS/idle-$(printf %02d "$IDLE_SEQ")-$policy-tcp.json
    local -a args=(--out "$file" --server "$server" --policy "$policy" --transport tcp
        --connections "$k" --before "$before" --after "$after")
    [[ -n $note ]] && args+=(--note "$note")
    rm -f "$ready" "$armed" "$go" "$before" "$after" "$TMP/hold.err"
    START_ERROR=
    if ! start_server "$policy" tcp echo; then
        python3 "$CMP_SRC/results.py" idle "${args[@]}" --error "$START_ERROR"
        return 0
    fi
    python3 "$BENCH_SRC/hold_idle.py" --connect "$SERVER_ADDR" -n "$k" --armed-file "$armed" \
        --go-file "$go" --ready-file "$ready" --max-hold 300 > /dev/null 2> "$TMP/hold.err" &
    HOLD_PID=$!
    if wait_file "$armed" "$HOLD_PID" 600; then
        python3 "$CMP_SRC/sample.py" once "$SERVER_PID" > "$before" || true
        : > "$go"
        if wait_file "$ready" "$HOLD_PID" 6000; then
            sleep 0.5 # let the last children and threads settle into their read
            python3 "$CMP_SRC/sample.py" once "$SERVER_PID" > "$after" || true
        else
            args+=(--error "holding $k connections failed: $(tail -c 300 "$TMP/hold.err" | tr '\n' ' ')")
        fi
    else
        args+=(--error "hold_idle did not start: $(tail -c 300 "$TMP/hold.err" | tr '\n' ' ')")
    fi
    stop_pid "$HOLD_PID"
    HOLD_PID=
    stop_server
    python3 "$CMP_SRC/results.py" idle "${args[@]}"
}

IDLE_SEQ=0
if ((IDLE > 0)); then
    log "idle connections: $IDLE against each policy over tcp"
    for policy in "${POLICY_LIST[@]}"; do
        idle "$policy"
    done
fi

# --- Slow clients. --------------------------------------------------------
# slow POLICY N: N silent and N stalled TCP connections held against a fresh
# server at its default bounds, and the latency of one normal request.
slow() {
    local policy=$1 k=$2 file
    file=$RESULTS/slow-$policy-$k.json
    START_ERROR=
    DEFAULT_BOUNDS=1
    if ! start_server "$policy" tcp echo; then
        DEFAULT_BOUNDS=
        python3 - "$file" "$policy" "$k" "$SLOW_BOUND" "$START_ERROR" <<'PY'
import json, sys
out, policy, k, bound, err = sys.argv[1:]
json.dump({"kind": "slow", "policy": policy, "transport": "tcp", "silent": int(k),
           "stalled": int(k), "bound_s": float(bound), "latency_us": None,
           "locked_out": False, "refused": True, "note": err}, open(out, "w"))
PY
        return 0
    fi
    DEFAULT_BOUNDS=
    run_bg timeout -s KILL $((60 + k / 100)) python3 "$CMP_SRC/slow.py" --connect "$SERVER_ADDR" \
        --transport tcp --policy "$policy" -n "$k" --bound "$SLOW_BOUND" --out "$file" \
        || log "slow clients: $policy with $k: the probe failed"
    kill -0 "$SERVER_PID" 2>/dev/null || log "slow clients: $policy with $k: the server exited"
    stop_server
}

if ((${#SLOW_LIST[@]})); then
    log "slow clients: ${SLOW_LIST[*]} silent + as many stalled connections against each policy"
    for k in "${SLOW_LIST[@]}"; do
        for policy in "${POLICY_LIST[@]}"; do
            slow "$policy" "$k"
        done
    done
fi

# --- Report. --------------------------------------------------------------
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- src bin 2>/dev/null) ]]; then rev+="+dirty"; fi
[[ -n $NO_BUILD ]] && rev+=" (binaries not rebuilt)"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
WALL=$((SECONDS - T0))
python3 "$CMP_SRC/results.py" meta --out "$RESULTS/meta.json" "stamp=$STAMP" "rev=$rev" \
    "cpus=$NPROC" "cpu=$cpu" "kernel=$(uname -r)" "policies=$POLICIES" "transports=$TRANSPORTS" \
    "workloads=$WORKLOADS" "duration_s=$DURATION" "warmup_s=$WARMUP" "connections=$CONNS" \
    "idle=$IDLE" "slow=$SLOW" "slow_bound_s=$SLOW_BOUND" "workers=$WORKERS" "pool_threads=$POOL_THREADS" "delay_ms=$DELAY_MS" \
    "cpu_rounds=$CPU_ROUNDS" "timeout_s=$TIMEOUT" "max_children=$MAX_CHILDREN" "sources=$SOURCES" \
    "loadavg_start=$LOAD_START" "loadavg_end=$LOAD_END" "wall_s=$WALL"

report() {
    local py_cpu_how=''
    [[ -n $CPU_US ]] && py_cpu_how=", for as many rounds as take the $CPU_US µs sockserv's take"
    local SOURCES_NOTE=''
    ((SOURCES > 1)) && SOURCES_NOTE="; over TCP from $SOURCES loopback source addresses, --sources $SOURCES"
    cat <<EOF
## Fork vs thread: sockserv $rev, $STAMP

$NPROC CPUs (${cpu:-unknown CPU}), Linux $(uname -r); load average ${LOAD_START// /\/} before,
${LOAD_END// /\/} after; ${WALL} s. All on loopback. Each cell: a fresh server, sockload
(closed loop, 64-byte echo requests checked byte for byte, --expect echo${SOURCES_NOTE}) for ${DURATION} s after
${WARMUP} s of warm-up, with $CONNS connections unless a note says otherwise. *persistent*:
requests on open connections; *connect*: a new connection (datagrams: a new socket) per
request; *delay*: persistent, the handler sleeps ${DELAY_MS} ms (I/O-bound); *cpu*:
persistent, the handler hashes ${CPU_ROUNDS} rounds (CPU-bound). Policies: sync, fork,
thread, pool (--threads $POOL_THREADS --queue $POOL_THREADS) run with --no-supervisor;
prefork is the supervisor with $WORKERS sync workers; py-fork and py-thread are Python's
socketserver with ForkingMixIn / ThreadingMixIn (scripts/bench/py_echo.py); their cpu
handler runs the same hashing loop in pure Python${py_cpu_how}; see the notes. req/s counts every measured request, failed
ones too (see errors); peak figures are the largest seen in 200 ms samples of the server's
whole process tree (master, workers, children). Idle: PSS of the tree fresh and then
holding idle TCP connections (one round trip each). Slow clients: each policy at its
default bounds (sockserv's defaults; Python's ForkingMixIn max_children 40) holds N
connections that never send a byte and N that sent 3 bytes of a line and stopped,
then one normal client's echo request is timed from its connect; no answer within
${SLOW_BOUND} s is "locked out".
EOF
    "$SOCKLOAD" report "$RESULTS" --chart "$RESULTS/compare.svg" --html "$RESULTS/compare.html" \
        || echo "(sockload report failed: see above)"
    python3 "$CMP_SRC/results.py" notes "$RESULTS"
}
echo
report | tee "$RESULTS/compare.md"
echo
log "done in ${WALL} s; results: $RESULTS (compare.md, compare.svg, compare.html, one JSON file per cell)"
