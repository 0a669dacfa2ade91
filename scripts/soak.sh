#!/usr/bin/env bash
# A chaos soak: sockserv with 2 workers, per policy, under a steady sockload
# stream, while a chaos loop kills workers and fork children, hangs a worker,
# reloads, scales and upgrades it. See --help and README.md, "Chaos soak".
# Not -e: a status read that fails mid-upgrade is retried, not fatal.
set -uo pipefail

usage() {
    cat <<'EOF'
usage: scripts/soak.sh [SECONDS] [options]

SECONDS (default 60) is the chaos time shared evenly by the policies, each
with a fresh sockserv (--workers 2 --worker-timeout 1 --control PATH, a copy
of the binary so USR2 can re-execute it, serving --service delay) under an open-loop sockload stream
(--mode connect: a connection per request, replies checked). A policy's turn
runs whole chaos cycles until its share is used, at least one:
  SIGKILL a worker           (replaced; its requests in flight are lost)
  SIGKILL a fork child       (fork only; its one request is lost)
  SIGSTOP a worker           (--worker-timeout kills and replaces it)
  TTIN, then TTOU            (3 workers, then 2)
  HUP                        (a new generation; nothing refused)
  USR2                       (a new master from the copied binary)
each waited for, with a deadline, before the next.

options:
  --policies LIST      comma-separated (sync,fork,thread,pool,event)
  --rate R             sockload's total rate, requests/s (500)
  --connections N      sockload's connections (4): the most requests that can
                       be in flight when a process is killed
  --delay-ms MS        the service: sockserv's delay (echo after MS ms; 1), so
                       kills find requests in flight and fork children alive
  --sockserv PATH      (target/release/sockserv)
  --sockload PATH      (target/release/sockload)
  --out DIR            keep each policy's sockserv log, load JSON and results
  -h, --help
environment: SOAK_TRACE=1 logs each action with its time; SOAK_KEEP=1 keeps
the work directory (its path is printed).

Prints one JSON line per policy on stdout and a human summary on stderr.
Must hold, else exit 1: refused 0, wrong replies 0, requests lost in flight
<= kills x connections, zombies 0, every kill replaced and the worker count
back to 2, no upgrade failed, the master's fd count flat (last <= first) and
its RSS flat (last <= first + 25 % + 1 MiB). Exit 2: usage.
EOF
}

die() {
    echo "soak: $*" >&2
    exit 1
}

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
seconds=60
policies=sync,fork,thread,pool,event
rate=500
connections=4
delay_ms=1
sockserv=$target/release/sockserv
sockload=$target/release/sockload
out=""
while [ $# -gt 0 ]; do
    case $1 in
    --policies) policies=${2:?}; shift ;;
    --rate) rate=${2:?}; shift ;;
    --connections) connections=${2:?}; shift ;;
    --delay-ms) delay_ms=${2:?}; shift ;;
    --sockserv) sockserv=${2:?}; shift ;;
    --sockload) sockload=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    -h | --help) usage; exit 0 ;;
    [0-9]*) seconds=$1 ;;
    *) echo "soak: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "soak: SECONDS $seconds: not a number" >&2; exit 2; }
[[ $connections =~ ^[0-9]+$ ]] && [ "$connections" -ge 1 ] || { echo "soak: --connections $connections: not a count" >&2; exit 2; }
IFS=, read -r -a plist <<<"$policies"
for p in "${plist[@]}"; do
    case $p in sync | fork | thread | pool | event) ;; *) echo "soak: unknown policy $p" >&2; exit 2 ;; esac
done
for b in "$sockserv" "$sockload"; do
    [ -x "$b" ] || die "$b: not built (cargo build --release, or --sockserv/--sockload PATH)"
done
command -v jq >/dev/null || die "jq: not installed (apt-get install jq)"
share=$(awk -v s="$seconds" -v n=${#plist[@]} 'BEGIN { printf "%.3f", s / n }')

work=$(mktemp -d "${TMPDIR:-/tmp}/soak.$$.XXXXXX") || die "mktemp failed"
[ -z "$out" ] || { mkdir -p "$out" || die "mkdir $out failed"; }

# --- teardown: the load, every master we know of, every worker seen ------
load_pid=""
masters=()   # every master pid (the first, and each upgrade's)
seen=()      # every worker and child pid the chaos loop saw

kill_all() {
    local p
    [ -z "$load_pid" ] || kill -KILL "$load_pid" 2>/dev/null || true
    for p in ${masters[@]+"${masters[@]}"} ${seen[@]+"${seen[@]}"}; do
        signal_ident KILL "$p"
    done
    wait 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    kill_all
    [ -n "${SOAK_KEEP:-}" ] && echo "soak: kept $work" >&2 || rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

now() { echo "$EPOCHREALTIME"; }
after() { awk -v a="$1" -v b="$(now)" 'BEGIN { exit !(b >= a) }'; } # true once now >= $1
plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a + b }'; }

# Polls "$@" every 20 ms until it succeeds or SECS pass.
wait_for() { # SECS CMD...
    local until
    until=$(plus "$(now)" "$1")
    shift
    until "$@"; do
        after "$until" && return 1
        sleep 0.02
    done
}

# Processes are named PID:STARTTIME (see ident), so a pid the kernel has
# since given to another process is never taken for ours, nor signalled.
proc_field() { # PID N: field N of /proc/PID/stat after "pid (comm) "
    awk -v n="$2" '{ k = split($0, part, ") "); split(part[k], f, " "); print f[n] }' \
        "/proc/$1/stat" 2>/dev/null
}
ident() { local st; st=$(proc_field "$1" 20) && [ -n "$st" ] && echo "$1:$st"; }
gone() { # PID or PID:STARTTIME: no such process, a zombie, or another one
    local pid=${1%%:*} st
    st=$(proc_field "$pid" 1)
    [ -z "$st" ] || [ "$st" = Z ] && return 0
    case $1 in *:*) [ "$(proc_field "$pid" 20)" != "${1#*:}" ] ;; *) return 1 ;; esac
}
signal_ident() { # SIG PID:STARTTIME
    gone "$2" || kill -"$1" "${2%%:*}" 2>/dev/null || true
}

# --- one policy's soak -------------------------------------------------------
status() { "$sockserv" status --control "$dir/control.sock" --json 2>/dev/null; }
master_pid() { cat "$dir/sockserv.pid" 2>/dev/null; }
# Serving workers of the current master (pids), and all its workers.
serving() { status | jq -r '[.workers[] | select(.state == "serving") | .pid] | .[]'; }
worker_count() { status | jq '.workers | length'; }
serving_count() { status | jq '[.workers[] | select(.state == "serving")] | length'; }

# The current master answers, with `want` workers all serving.
settled() {
    local s
    s=$(status) || return 1
    [ "$(jq -r --argjson w "$want" --arg m "$(master_pid)" \
        '(.pid | tostring) == $m and (.workers | length) == $w and
         ([.workers[] | select(.state == "serving")] | length) == $w' <<<"$s")" = true ]
}

requests_above() { local n; n=$(status | jq .totals.requests); [ -n "$n" ] && [ "$n" -gt "$1" ]; }
quiet() { [ "$(status | jq .totals.in_flight)" = 0 ]; }

t0=$EPOCHREALTIME
trace() { [ -z "${SOAK_TRACE:-}" ] || echo "soak: +$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') $*" >&2; }

fail() { failures+=("$*"); echo "soak: $policy: $*" >&2; }

note_workers() { local p; for p in $(serving); do seen+=("$(ident "$p")"); done; }

in_flight_of() { # WORKER
    status | jq --argjson p "$1" '[.workers[] | select(.pid == $p) | .in_flight] | add // 0'
}

fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# Signals a serving worker (the first or the last listed), counting what it
# had in flight, and waits until the master has replaced it.
strike_worker() { # head|tail SIGNAL WHAT-HAPPENED
    local w n id
    w=$(serving | "$1" -1)
    [ -n "$w" ] || { fail "no serving worker to signal"; return; }
    n=$(in_flight_of "$w")
    in_flight=$((in_flight + ${n:-0}))
    id=$(ident "$w")
    signal_ident "$2" "$id"
    wait_for 15 gone "$id" && wait_for 15 settled || fail "worker $w: $3 and not replaced within 15 s"
    note_workers
}

chaos_kill_worker() {
    trace chaos_kill_worker
    kills_worker=$((kills_worker + 1))
    strike_worker head KILL "SIGKILLed"
}

chaos_kill_child() {
    trace chaos_kill_child
    local ws w c id until looks=0 k
    until=$(plus "$(now)" 3)
    while ! after "$until"; do
        ws=$(serving) # afresh: a worker may have just been replaced
        # Builtin reads, no fork, many per status call: a child lives about
        # a millisecond.
        for k in $(seq 200); do
            for w in $ws; do
                c=""
                # (no newline at the end: read fails but fills c)
                read -r c _ 2>/dev/null <"/proc/$w/task/$w/children"
                [ -n "$c" ] || continue
                id=$(ident "$c") && kill -KILL "$c" 2>/dev/null || continue
                seen+=("$id")
                in_flight=$((in_flight + 1))
                kills_child=$((kills_child + 1))
                wait_for 5 gone "$id" || fail "fork child $c: still there 5 s after SIGKILL"
                return
            done
        done
        looks=$((looks + 200))
    done
    child_missed=$((child_missed + 1))
    trace "no fork child seen in 3 s ($looks looks at workers $(echo $ws))"
}

chaos_hang_worker() {
    trace chaos_hang_worker
    hangs=$((hangs + 1))
    strike_worker tail STOP "SIGSTOPped (--worker-timeout 1 must kill it)"
}

chaos_scale() {
    trace chaos_scale
    kill -TTIN "$(master_pid)"
    want=3
    wait_for 15 settled || fail "TTIN: no third worker within 15 s"
    note_workers
    kill -TTOU "$(master_pid)"
    want=2
    wait_for 15 settled || fail "TTOU: not back to 2 workers within 15 s"
    scales=$((scales + 1))
}

max_generation() { status | jq '[.workers[].generation] | max'; }
reloaded() { # OLD-GENERATION
    settled && [ "$(status | jq --argjson g "$1" '[.workers[] | select(.generation <= $g)] | length')" = 0 ]
}
chaos_reload() {
    trace chaos_reload
    local g
    g=$(max_generation)
    kill -HUP "$(master_pid)"
    wait_for 15 reloaded "$g" || fail "HUP: the new generation did not replace generation $g within 15 s"
    reloads=$((reloads + 1))
    note_workers
}

upgraded() { # OLD-MASTER
    local m
    m=$(master_pid)
    [ -n "$m" ] && [ "$m" != "${1%%:*}" ] && gone "$1" && settled
}
chaos_upgrade() {
    trace chaos_upgrade
    local old
    old=$(master_pid)
    kill -USR2 "$old"
    if wait_for 20 upgraded "$(ident "$old")"; then
        upgrades=$((upgrades + 1))
        masters+=("$(ident "$(master_pid)")")
    else
        upgrades_failed=$((upgrades_failed + 1))
        fail "USR2: no new master serving within 20 s (log: $(grep -o '"msg":"upgrade[^"]*"[^}]*' "$dir/sockserv.log" | tail -1))"
    fi
    note_workers
}

chaos_cycle() {
    chaos_kill_worker
    [ "$policy" != fork ] || chaos_kill_child
    chaos_hang_worker
    chaos_scale
    chaos_reload
    chaos_upgrade
    cycles=$((cycles + 1))
}

# Zombies among the master's descendants (cat skips processes that left).
zombie_count() { # MASTER
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
        {
            n = split($0, part, ") "); split(part[n], f, " ")
            pid = $1; parent[pid] = f[2]; state[pid] = f[1]
        }
        END {
            z = 0
            for (p in parent) {
                q = parent[p]
                for (hops = 0; q != root && (q in parent) && hops < 64; hops++) q = parent[q]
                if (q == root && state[p] == "Z") z++
            }
            print z
        }'
}

soak_policy() {
    policy=$1
    dir=$work/$policy
    mkdir -p "$dir"
    cp "$sockserv" "$dir/sockserv" # USR2 re-executes this path
    failures=()
    masters=()
    seen=()
    want=2
    kills_worker=0 kills_child=0 child_missed=0 hangs=0 scales=0 reloads=0
    upgrades=0 upgrades_failed=0 cycles=0 in_flight=0

    "$dir/sockserv" --listen 127.0.0.1:0 --policy "$policy" --workers 2 \
        --service delay --delay-ms "$delay_ms" \
        --worker-timeout 1 --graceful-timeout 10 --restart-burst 1000000 --restart-window 1 \
        --control "$dir/control.sock" --pid-file "$dir/sockserv.pid" \
        --log-format json </dev/null >/dev/null 2>>"$dir/sockserv.log" &
    masters+=("$(ident $!)")
    trace "$policy: sockserv started"
    wait_for 10 settled || { cat "$dir/sockserv.log" >&2; die "$policy: sockserv did not serve 2 workers within 10 s"; }
    note_workers
    local addr first_fds first_rss start elapsed
    addr=$(status | jq -r .addr)
    "$sockload" --connect "$addr" --mode connect --connections "$connections" --rate "$rate" \
        --duration "$(plus "$share" 120)" --warmup 0s --timeout 10s --expect echo \
        --max-error-rate 1 --json >"$dir/load.json" 2>"$dir/load.err" &
    load_pid=$!
    wait_for 10 requests_above 0 ||
        die "$policy: sockload got no reply within 10 s ($(cat "$dir/load.err"))"
    first_fds=$(fd_count "$(master_pid)")
    first_rss=$(rss_kib "$(master_pid)")
    start=$(now)
    local until
    until=$(plus "$start" "$share")
    chaos_cycle
    while ! after "$until"; do chaos_cycle; done
    want=2
    wait_for 15 settled || fail "not back to 2 serving workers within 15 s of the last action"
    # Let the load run on the settled server briefly, then end it.
    local n0
    n0=$(status | jq .totals.requests)
    wait_for 5 requests_above "${n0:-0}" ||
        fail "no request served after the chaos ended"
    trace "$policy: chaos done, settled; ending the load"
    kill -TERM "$load_pid"
    wait "$load_pid" || fail "sockload exited $? ($(cat "$dir/load.err"))"
    load_pid=""
    elapsed=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    [ -s "$dir/load.json" ] || die "$policy: sockload wrote no JSON ($(cat "$dir/load.err"))"

    # Quiet now: the master's last readings, zombies, then stop it.
    local m last_fds last_rss zombies workers_after
    m=$(master_pid)
    wait_for 5 quiet || trace "$policy: still in flight 5 s after the load ended: $(status | jq -c '[.totals.in_flight, [.workers[] | {pid, generation, state, in_flight}]]')"
    last_fds=$(fd_count "$m")
    last_rss=$(rss_kib "$m")
    workers_after=$(serving_count)
    zombies=$(zombie_count "$m")
    trace "$policy: stopping the master"
    local mid
    mid=$(ident "$m")
    kill -TERM "$m"
    wait_for 15 gone "$mid" || fail "master $m: still running 15 s after TERM"
    local p left=0
    for p in ${masters[@]+"${masters[@]}"} ${seen[@]+"${seen[@]}"}; do gone "$p" || left=$((left + 1)); done
    [ "$left" = 0 ] || fail "$left of its processes still run after the master stopped"
    wait 2>/dev/null || true

    trace "$policy: stopped"
    local lost bound
    lost=$(jq '.errors.reset + .errors.short_reply + .errors.timeout + .errors.other' "$dir/load.json")
    bound=$(((kills_worker + kills_child + hangs) * connections))
    [ "$(jq .errors.refused "$dir/load.json")" = 0 ] || fail "refused: $(jq -c .errors "$dir/load.json") $(jq -c .error_samples "$dir/load.json")"
    [ "$(jq .errors.wrong_reply "$dir/load.json")" = 0 ] || fail "wrong replies: $(jq -c .error_samples "$dir/load.json")"
    [ "$lost" -le "$bound" ] || fail "lost $lost requests in flight, more than $bound (kills x connections): $(jq -c .error_samples "$dir/load.json")"
    [ "$zombies" = 0 ] || fail "$zombies zombies under the master"
    [ "$workers_after" = 2 ] || fail "$workers_after workers serving at the end, not 2"
    local fds_flat=true mem_flat=true
    [ "$last_fds" -le "$first_fds" ] || { fds_flat=false; fail "master fds grew: $first_fds -> $last_fds"; }
    awk -v a="$first_rss" -v b="$last_rss" 'BEGIN { exit !(b <= a * 1.25 + 1024) }' ||
        { mem_flat=false; fail "master RSS grew: $first_rss -> $last_rss KiB"; }

    local failed_json
    failed_json=$(printf '%s\n' ${failures[@]+"${failures[@]}"} | jq -R . | jq -sc 'map(select(. != ""))')
    jq -c -n --arg policy "$policy" --argjson seconds "$elapsed" --slurpfile load "$dir/load.json" \
        --argjson lost "$lost" --argjson bound "$bound" --argjson in_flight "$in_flight" \
        --argjson kw "$kills_worker" --argjson kc "$kills_child" --argjson km "$child_missed" \
        --argjson hangs "$hangs" --argjson scales "$scales" --argjson reloads "$reloads" \
        --argjson up "$upgrades" --argjson upf "$upgrades_failed" --argjson cycles "$cycles" \
        --argjson wa "$workers_after" --argjson zombies "$zombies" \
        --argjson f0 "$first_fds" --argjson f1 "$last_fds" --argjson r0 "$first_rss" --argjson r1 "$last_rss" \
        --argjson fds_flat "$fds_flat" --argjson mem_flat "$mem_flat" --argjson failures "$failed_json" \
        --argjson connections "$connections" --argjson rate "$rate" '
        $load[0] as $l | {
          policy: $policy, seconds: $seconds, rate: $rate, connections: $connections,
          requests_ok: $l.requests_ok, refused: $l.errors.refused, wrong_replies: $l.errors.wrong_reply,
          lost_in_flight: $lost, lost_bound: $bound, in_flight_at_kills: $in_flight,
          errors: $l.errors, error_samples: $l.error_samples,
          kills: {worker: $kw, child: $kc, hang: $hangs}, child_kill_missed: $km,
          scales: $scales, reloads: $reloads, upgrades: $up, upgrades_failed: $upf, cycles: $cycles,
          workers_after: $wa, zombies: $zombies,
          master_fds_first: $f0, master_fds_last: $f1, fds_flat: $fds_flat,
          master_rss_kib_first: $r0, master_rss_kib_last: $r1, memory_flat: $mem_flat,
          failures: $failures, passed: ($failures | length == 0)
        }' | tee -a "$work/results.jsonl"
    if [ -n "$out" ]; then
        mkdir -p "$out/$policy"
        cp "$dir/sockserv.log" "$dir/load.json" "$dir/load.err" "$out/$policy/"
    fi
}

echo "soak: ${seconds}s of chaos over ${plist[*]} (${share}s each), sockload --rate $rate --connections $connections --mode connect, --service delay --delay-ms $delay_ms" >&2
for p in "${plist[@]}"; do soak_policy "$p"; done
[ -z "$out" ] || cp "$work/results.jsonl" "$out/results.jsonl"

{
    echo
    printf '%-7s %6s %10s %7s %6s %5s %9s %13s %7s %7s %7s %7s %8s %12s %16s %s\n' \
        policy secs ok refused wrong lost lost_max 'kills w/c/h' scales reloads upgr zombies workers fds rss_kib result
    jq -r '[.policy, .seconds, .requests_ok, .refused, .wrong_replies, .lost_in_flight, .lost_bound,
            "\(.kills.worker)/\(.kills.child)/\(.kills.hang)", .scales, .reloads, .upgrades, .zombies,
            .workers_after, "\(.master_fds_first)->\(.master_fds_last)",
            "\(.master_rss_kib_first)->\(.master_rss_kib_last)", (if .passed then "PASS" else "FAIL" end)] | @tsv' \
        "$work/results.jsonl" |
        while IFS=$'\t' read -r -a f; do
            printf '%-7s %6s %10s %7s %6s %5s %9s %13s %7s %7s %7s %7s %8s %12s %16s %s\n' "${f[@]}"
        done
    jq -r 'select(.passed | not) | "\(.policy): \(.failures | join("; "))"' "$work/results.jsonl"
} >&2
[ "$(jq -s 'all(.passed)' "$work/results.jsonl")" = true ]
