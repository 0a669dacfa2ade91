#!/usr/bin/env bash
# Run sockload on several load hosts at one start time, collect their
# --hist files and merge them into one report (`sockload merge`).
#
#   scripts/multihost.sh --hosts a,b,c -- --connect 10.0.0.5:9000 --duration 30s
#   scripts/multihost.sh --netns 3 --duration 2s
#
# See --help and README.md, "Several load hosts".
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/multihost.sh --hosts HOST[,HOST...] [options] -- SOCKLOAD-ARGS...
       scripts/multihost.sh --netns K [options] [-- EXTRA-SOCKLOAD-ARGS...]

Runs `sockload SOCKLOAD-ARGS --json --hist FILE` on every host at once (over
ssh, or pdsh when installed), brings each host's JSON and histogram back over
the same connection, and merges the histograms with `sockload merge`.

hosts mode (load hosts reached over ssh; keys, no password prompts):
  --hosts LIST         comma-separated ssh destinations (user@host); repeatable
  --hosts-file FILE    one destination a line (# comments)
  --start-in SECS      every host starts at now + SECS on its own clock (10);
                       the hosts' clocks must agree (NTP) to well under that
  --sockload PATH      the sockload binary on the load hosts (sockload)
  --no-pdsh            plain ssh even when pdsh is installed
  --ssh-option OPT     passed to every ssh as -o OPT (e.g. Port=2222);
                       repeatable
  SOCKLOAD-ARGS        sockload's own flags (--connect is required; not --json
                       or --hist, which the script adds)

--netns K mode (proves the same path on one Linux box, as root):
  one server namespace holding a bridge (198.18.0.1/24, RFC 2544's benchmarking
  range, no default route) and K client namespaces each joined to it by a veth
  pair (198.18.0.11, .12, ...); sockserv serves in the server namespace and
  sockload runs in every client namespace at once; everything is torn down on
  exit, error, Ctrl-C or TERM.
  --duration D         each run's measured period (2s)
  --connections N      connections per load host (4)
  --warmup D           each run's warm-up (0s: so every request the server
                       answers is counted by a run)
  --policy P --workers N --service S   sockserv's (thread, 2, echo)
  --via exec|ssh       how the load hosts' runs start (exec): `ip netns exec`,
                       or ssh, as in hosts mode: an sshd (openssh-server)
                       runs in every client namespace with a key and host key
                       made for the run, and ssh connects to root@198.18.0.11...
                       from the server namespace
  --sockserv PATH      the sockserv binary (target/release/sockserv)
  --sockload PATH      the sockload binary (target/release/sockload)

common:
  --out DIR            keep every host's files and the report here
                       (multihost-YYYYmmdd-HHMMSS)
  --merge-sockload P   the local sockload that merges (the local build, else PATH)
  -h, --help

Files in DIR: NN-HOST.json (each run's --json), NN-HOST.hlog (its --hist),
NN-HOST.err (its stderr), merged.json, merged.txt (the human merge report),
pids (every process group the script started); netns mode adds
server-status.json (`sockserv status --json` once the server is quiet) and
sockserv.log. Exit 0 when every run passed (and, with --netns, the merged
request count equals the sum of the runs and the server's own count), else 1;
2 for a usage error.
EOF
}

die() {
    echo "multihost: $*" >&2
    exit 1
}
usage_error() {
    echo "multihost: $*" >&2
    echo "try scripts/multihost.sh --help" >&2
    exit 2
}

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
hosts=()
netns=0
start_in=""
out=""
no_pdsh=0
sockload_remote=""
merge_sockload=""
via=exec
ssh_opts=(-o BatchMode=yes)
ssh_prefix=()
sockserv=""
duration=2s
connections=4
warmup=0s
policy=thread
workers=2
service=echo
load_args=()

while [ $# -gt 0 ]; do
    case $1 in
    --hosts) IFS=, read -r -a more <<<"${2:?--hosts needs a list}"; hosts+=("${more[@]}"); shift ;;
    --hosts-file)
        [ -r "${2:?}" ] || usage_error "--hosts-file $2: cannot read it"
        while read -r h _; do
            case $h in '' | '#'*) ;; *) hosts+=("$h") ;; esac
        done <"$2"
        shift
        ;;
    --netns) netns=${2:?}; shift ;;
    --start-in) start_in=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    --no-pdsh) no_pdsh=1 ;;
    --ssh-option) ssh_opts+=(-o "${2:?--ssh-option needs an OPTION=VALUE}"); shift ;;
    --via) via=${2:?}; shift ;;
    --sockload) sockload_remote=${2:?}; shift ;;
    --merge-sockload) merge_sockload=${2:?}; shift ;;
    --sockserv) sockserv=${2:?}; shift ;;
    --duration) duration=${2:?}; shift ;;
    --connections) connections=${2:?}; shift ;;
    --warmup) warmup=${2:?}; shift ;;
    --policy) policy=${2:?}; shift ;;
    --workers) workers=${2:?}; shift ;;
    --service) service=${2:?}; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; load_args=("$@"); break ;;
    *) usage_error "unknown option $1" ;;
    esac
    shift
done

for a in ${load_args[@]+"${load_args[@]}"}; do
    case $a in --json | --hist | --hist=*) usage_error "do not pass $a: the script adds it" ;; esac
done
[[ $netns =~ ^[0-9]+$ ]] && [ "$netns" -le 200 ] || usage_error "--netns $netns: not a count from 1 to 200"
case $via in exec | ssh) ;; *) usage_error "--via $via: expected exec or ssh" ;; esac
if [ "$netns" -gt 0 ]; then
    [ ${#hosts[@]} -eq 0 ] || usage_error "--hosts and --netns exclude each other"
    for a in ${load_args[@]+"${load_args[@]}"}; do
        case $a in
        --connect* | --duration* | -d | --connections* | -c | --warmup* | --requests* | -n)
            usage_error "with --netns, give $a as the script's own option (or not at all)" ;;
        esac
    done
    start_in=${start_in:-0.5}
    sockserv=${sockserv:-$target/release/sockserv}
    sockload_remote=${sockload_remote:-$target/release/sockload}
    merge_sockload=${merge_sockload:-$sockload_remote}
    [ -x "$sockserv" ] || die "$sockserv: no sockserv binary there (cargo build --release, or --sockserv PATH)"
else
    [ "$via" = exec ] || usage_error "--via is for --netns mode (hosts mode always uses ssh)"
    [ ${#hosts[@]} -gt 0 ] || usage_error "give --hosts, --hosts-file or --netns K"
    printf '%s\n' ${load_args[@]+"${load_args[@]}"} | grep -q -- '^--connect' ||
        usage_error "give sockload's --connect ADDR after -- (the server as the load hosts reach it)"
    start_in=${start_in:-10}
    sockload_remote=${sockload_remote:-sockload}
    if [ -z "$merge_sockload" ]; then
        if [ -x "$target/release/sockload" ]; then
            merge_sockload=$target/release/sockload
        else
            merge_sockload=$(command -v sockload) || die "no local sockload to merge with (--merge-sockload PATH)"
        fi
    fi
fi
[[ $start_in =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage_error "--start-in $start_in: not a number of seconds"
[ -x "$merge_sockload" ] || die "$merge_sockload: no sockload binary there"
command -v jq >/dev/null || die "jq: not installed (apt-get install jq)"

out=${out:-multihost-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out" || die "mkdir $out failed"
out=$(cd "$out" && pwd)
: >"$out/pids"
work=$(mktemp -d "${TMPDIR:-/tmp}/multihost.$$.XXXXXX") || die "mktemp failed"

# --- teardown: every process group we started, then every namespace ------
groups=()        # process groups (each started under setsid: pgid == pid)
namespaces=()    # namespaces we created, in creation order
server_pid=""

stop_group() { # PGID: TERM, up to 3 s, then KILL; by process group id only
    local g=$1 i
    kill -TERM -- "-$g" 2>/dev/null || return 0
    for i in $(seq 60); do
        kill -0 -- "-$g" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -KILL -- "-$g" 2>/dev/null || true
}

cleanup() {
    local rc=$? g ns
    trap - EXIT INT TERM
    for g in ${groups[@]+"${groups[@]}"}; do stop_group "$g"; done
    wait 2>/dev/null || true
    for ns in ${namespaces[@]+"${namespaces[@]}"}; do
        ip netns delete "$ns" 2>/dev/null || echo "multihost: ip netns delete $ns failed" >&2
    done
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "multihost: interrupted; tearing down" >&2; exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in its own session (so one kill reaches what it forks) in the
# background; sets $started to its pid, which is also its process group.
start_group() {
    # <&0: an explicit stdin, else bash gives a background command /dev/null.
    setsid "$@" <&0 &
    started=$!
    groups+=("$started")
    echo "$started" >>"$out/pids"
}

# --- the same run on every host -------------------------------------------
# What each load host runs, as one sh command line: wait for the shared start
# time on its own clock, run sockload, then print its JSON, a marker line and
# the histogram file, and exit with sockload's status.
remote_script() { # START_EPOCH TMPDIR
    local cmd
    cmd=$(printf '%q ' "$sockload_remote" ${load_args[@]+"${load_args[@]}"} --json --hist)
    cat <<EOF
f=\$(mktemp "$2/sockload-multihost.XXXXXX") || exit 1
w=\$(awk -v t=$1 -v n="\$(date +%s.%N)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')
sleep "\$w"
$cmd"\$f" </dev/null
rc=\$?
echo '#--- sockload --hist'
cat "\$f"
rm -f "\$f"
exit \$rc
EOF
}

# NN-HOST: a file name for host number N.
host_base() { printf '%02d-%s' "$1" "${2//[^A-Za-z0-9._-]/_}"; }

# Splits a host's output into its JSON line and its histogram file.
split_output() { # BASE
    local b=$out/$1
    awk -v j="$b.json" -v h="$b.hlog" '
        /^#--- sockload --hist$/ { hist = 1; next }
        { if (hist) print > h; else print > j }' "$b.out"
    rm -f "$b.out"
    [ -s "$b.json" ] && [ -s "$b.hlog" ]
}

run_everywhere() { # RUNNER-KIND
    local start script i host base rc=0 pids=()
    start=$(awk -v n="$(date +%s.%N)" -v s="$start_in" 'BEGIN { printf "%.3f", n + s }')
    if [ "$1" = netns ]; then
        script=$(remote_script "$start" "$work")
    else
        script=$(remote_script "$start" '${TMPDIR:-/tmp}')
    fi
    echo "multihost: ${#hosts[@]} load hosts start at $(date -d "@$start" +%T.%N | cut -c1-12)" >&2
    if [ "$1" = ssh ] && [ $no_pdsh = 0 ] && command -v pdsh >/dev/null; then
        run_pdsh "$script" || rc=1
    else
        for i in "${!hosts[@]}"; do
            host=${hosts[$i]}
            base=$(host_base $((i + 1)) "$host")
            if [ "$1" = netns ]; then
                start_group ip netns exec "$host" sh -c "$script" >"$out/$base.out" 2>"$out/$base.err"
            else
                # The script on stdin, run by sh whatever the login shell is.
                start_group ${ssh_prefix[@]+"${ssh_prefix[@]}"} ssh "${ssh_opts[@]}" -- "$host" sh -s \
                    <<<"$script" >"$out/$base.out" 2>"$out/$base.err"
            fi
            pids+=("$started")
        done
        for i in "${!pids[@]}"; do
            base=$(host_base $((i + 1)) "${hosts[$i]}")
            if ! wait "${pids[$i]}"; then
                echo "multihost: ${hosts[$i]}: the run failed (the connection or sockload); its stderr ($out/$base.err):" >&2
                sed 's/^/  /' "$out/$base.err" >&2
                rc=1
            fi
        done
    fi
    for i in "${!hosts[@]}"; do
        base=$(host_base $((i + 1)) "${hosts[$i]}")
        split_output "$base" || die "${hosts[$i]}: no JSON or no histogram came back (see $out/$base.err)"
    done
    return $rc
}

# pdsh runs the script on every host and prefixes each output line with
# "HOST: "; the lines are sorted back into one file per host.
run_pdsh() { # SCRIPT
    local list rc=0 i
    list=$(IFS=,; echo "${hosts[*]}")
    PDSH_SSH_ARGS_APPEND="${ssh_opts[*]}" start_group pdsh -S -R ssh -w "$list" "$1" \
        >"$work/pdsh.out" 2>"$out/pdsh.err"
    wait "$started" || rc=1
    for i in "${!hosts[@]}"; do
        awk -v h="${hosts[$i]}: " 'index($0, h) == 1 { print substr($0, length(h) + 1) }' \
            "$work/pdsh.out" >"$out/$(host_base $((i + 1)) "${hosts[$i]}").out"
    done
    [ $rc = 0 ] || { echo "multihost: pdsh reported a failure:" >&2; sed 's/^/  /' "$out/pdsh.err" >&2; }
    return $rc
}

# --- netns mode: the namespaces and the server ----------------------------
make_namespaces() {
    local pre=mh$$ srv i ns
    srv=$pre-srv
    ip netns add "$srv" || die "ip netns add $srv failed (needs root, or CAP_SYS_ADMIN)"
    namespaces+=("$srv")
    ip -n "$srv" link set lo up
    ip -n "$srv" link add br0 type bridge
    ip -n "$srv" addr add 198.18.0.1/24 dev br0
    ip -n "$srv" link set br0 up
    for i in $(seq "$netns"); do
        ns=$pre-c$i
        ip netns add "$ns" || die "ip netns add $ns failed"
        namespaces+=("$ns")
        ip -n "$ns" link set lo up
        ip -n "$srv" link add "v$i" type veth peer name eth0 netns "$ns"
        ip -n "$srv" link set "v$i" master br0 up
        ip -n "$ns" addr add "198.18.0.$((10 + i))/24" dev eth0
        ip -n "$ns" link set eth0 up
        hosts+=("$ns")
    done
}

# --via ssh: an sshd in every client namespace, reached from the server
# namespace with a client key and a host key made for this run (in $work,
# removed with it), so the runs take hosts mode's path: ssh, sh -s, the
# output back over the connection. The load hosts become root@ADDR.
start_sshds() {
    local sshd i ns addr user conf
    sshd=$(command -v sshd || echo /usr/sbin/sshd)
    [ -x "$sshd" ] || die "sshd: not installed (apt-get install openssh-server)"
    command -v ssh-keygen >/dev/null || die "ssh-keygen: not installed (apt-get install openssh-client)"
    ssh-keygen -q -t ed25519 -N '' -C multihost -f "$work/client_key" || die "ssh-keygen failed"
    ssh-keygen -q -t ed25519 -N '' -C multihost -f "$work/host_key" || die "ssh-keygen failed"
    cp "$work/client_key.pub" "$work/authorized_keys"
    # sshd refuses to start without its privilege-separation directory.
    [ -d /run/sshd ] || mkdir -p -m 0755 /run/sshd || die "mkdir /run/sshd failed"
    user=$(id -un)
    hosts=()
    for i in $(seq "$netns"); do
        ns=mh$$-c$i addr=198.18.0.$((10 + i)) conf=$work/sshd-$i.conf
        printf '%s\n' "ListenAddress $addr:22" "HostKey $work/host_key" \
            "AuthorizedKeysFile $work/authorized_keys" "PidFile none" "StrictModes no" \
            "UsePAM no" "PasswordAuthentication no" "KbdInteractiveAuthentication no" \
            "PermitRootLogin prohibit-password" >"$conf"
        start_group ip netns exec "$ns" "$sshd" -D -e -f "$conf" </dev/null >/dev/null 2>"$out/sshd-$i.log"
        echo "$addr $(cut -d' ' -f1,2 "$work/host_key.pub")" >>"$work/known_hosts"
        hosts+=("$user@$addr")
    done
    for i in $(seq "$netns"); do
        addr=198.18.0.$((10 + i))
        for _ in $(seq 100); do
            ip netns exec "mh$$-c$i" ss -Hltn "sport = :22" 2>/dev/null | grep -q "$addr:22" && continue 2
            sleep 0.05
        done
        die "sshd in mh$$-c$i did not listen on $addr:22 within 5 s: $(tr '\n' ' ' <"$out/sshd-$i.log")"
    done
    ssh_prefix=(ip netns exec "mh$$-srv")
    ssh_opts+=(-F /dev/null -i "$work/client_key" -o IdentitiesOnly=yes
        -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes)
    no_pdsh=1
}

status_json() { "$sockserv" status --control "$work/control.sock" --json 2>/dev/null; }

start_server() {
    start_group ip netns exec "mh$$-srv" "$sockserv" --listen 198.18.0.1:9000 \
        --policy "$policy" --workers "$workers" --service "$service" \
        --control "$work/control.sock" --log-format json --log-file "$out/sockserv.log" \
        </dev/null >/dev/null 2>>"$out/sockserv.log"
    server_pid=$started
    local i
    for i in $(seq 200); do
        if [ "$(status_json | jq '[.workers[] | select(.state == "serving")] | length' 2>/dev/null)" = "$workers" ]; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "multihost: sockserv did not serve $workers workers within 10 s; its log:" >&2
    sed 's/^/  /' "$out/sockserv.log" >&2
    exit 1
}

# Waits until nothing is in flight and the request count holds still, then
# saves the server's status.
quiet_status() {
    local i last="" now
    for i in $(seq 100); do
        now=$(status_json | jq -c '.totals | select(.in_flight == 0) | .requests' 2>/dev/null || true)
        if [ -n "$now" ] && [ "$now" = "$last" ]; then
            status_json >"$out/server-status.json"
            return 0
        fi
        last=$now
        sleep 0.05
    done
    die "sockserv did not go quiet within 5 s (status: $(status_json | jq -c .totals))"
}

stop_server() {
    kill -TERM "$server_pid" 2>/dev/null || return 0
    local i
    for i in $(seq 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    wait "$server_pid" 2>/dev/null || true
}

# --- the report ------------------------------------------------------------
report() {
    local f
    local runs=()
    for f in "$out"/[0-9]*.hlog; do runs+=("$f"); done
    "$merge_sockload" merge --json "${runs[@]}" >"$out/merged.json" || true
    "$merge_sockload" merge "${runs[@]}" >"$out/merged.txt" 2>&1 || true
    [ -s "$out/merged.json" ] || die "sockload merge wrote nothing (see $out/merged.txt)"
    printf '%-28s %12s %12s %9s %9s %9s\n' host requests req/s p50_us p99_us max_us
    for f in "$out"/[0-9]*.json; do
        jq -r --arg h "$(basename "$f" .json)" \
            '[$h, .requests_total, (.requests_per_s | floor), .latency.p50_us, .latency.p99_us, .latency.max_us] | @tsv' "$f"
    done | while IFS=$'\t' read -r h n r p50 p99 max; do
        printf '%-28s %12s %12s %9s %9s %9s\n' "$h" "$n" "$r" "$p50" "$p99" "$max"
    done
    jq -r '["merged", .requests_total, (.requests_per_s | floor), .latency.p50_us, .latency.p99_us, .latency.max_us] | @tsv' \
        "$out/merged.json" | while IFS=$'\t' read -r h n r p50 p99 max; do
        printf '%-28s %12s %12s %9s %9s %9s\n' "$h" "$n" "$r" "$p50" "$p99" "$max"
    done
    echo
    cat "$out/merged.txt"
}

# The merged count against the runs' sum and (netns) the server's own count.
check_counts() {
    local sum merged server
    sum=$(jq -s 'map(.requests_total) | add' "$out"/[0-9]*.json)
    merged=$(jq .requests_total "$out/merged.json")
    if [ -f "$out/server-status.json" ]; then
        server=$(jq .totals.requests "$out/server-status.json")
        echo "requests: merged $merged, sum of the runs $sum, sockserv's own count $server"
        [ "$merged" = "$sum" ] && [ "$sum" = "$server" ] || { echo "multihost: the counts differ" >&2; return 1; }
    else
        echo "requests: merged $merged, sum of the runs $sum"
        [ "$merged" = "$sum" ] || { echo "multihost: the counts differ" >&2; return 1; }
    fi
}

status=0
if [ "$netns" -gt 0 ]; then
    command -v ip >/dev/null || die "ip: not installed (apt-get install iproute2)"
    command -v setsid >/dev/null || die "setsid: not installed (util-linux)"
    make_namespaces
    start_server
    load_args=(--connect 198.18.0.1:9000 --duration "$duration" --warmup "$warmup"
        --connections "$connections" ${load_args[@]+"${load_args[@]}"})
    if [ "$via" = ssh ]; then
        start_sshds
        run_everywhere ssh || status=1
    else
        run_everywhere netns || status=1
    fi
    quiet_status
    stop_server
else
    command -v ssh >/dev/null || die "ssh: not installed (apt-get install openssh-client)"
    run_everywhere ssh || status=1
fi
report
check_counts || status=1
echo "files: $out"
exit $status
