#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another, each for a given
# time, and reports executions, corpus size and crashes per target. See
# --help and README.md, "Fuzzing".
set -uo pipefail

usage() {
    cat <<'EOF'
usage: scripts/fuzz.sh [--time SECONDS] [TARGET...]

Runs each TARGET (default: every target in fuzz/Cargo.toml) for SECONDS
(default 60), one after another, one libFuzzer process on one core each
(libFuzzer's in-process mode: one job, one worker). Each target's corpus
is kept in fuzz/corpus/TARGET (gitignored) and grows from run to run; the
seeds in fuzz/seeds/TARGET, if any, are read as well, and the tokens in
fuzz/dicts/TARGET.dict, if any, given to libFuzzer (-dict). A crash, leak,
timeout (10 s for one input) or out-of-memory (2 GiB) is written to
fuzz/artifacts/TARGET/.

Prints one line per target (executions, executions per second, corpus
inputs, crashes) and a summary table; exits 1 if any target found a crash,
naming each artifact (replay one with
`cargo +nightly fuzz run TARGET artifacts/TARGET/crash-...` in fuzz/), 2 on
a usage or build error. The targets are built once, first (cargo +nightly
fuzz build), and run from fuzz/target, so editing the source during a long
run changes nothing until the next one.

options:
  --time SECONDS   fuzzing time per target (60)
  --list           print the targets and exit
  -h, --help

Needs cargo-fuzz (cargo install cargo-fuzz) and a nightly toolchain
(rustup toolchain install nightly). Run it niced on a shared machine:
  nice -n 10 scripts/fuzz.sh --time 300
EOF
}

die() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

time_s=60
list_only=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time)
            [ $# -ge 2 ] || die "--time needs a number of seconds"
            time_s=$2
            shift 2
            ;;
        --time=*)
            time_s=${1#--time=}
            shift
            ;;
        --list) list_only=1; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) targets+=("$1"); shift ;;
    esac
done
case "$time_s" in
    '' | *[!0-9]* | 0) die "--time must be a whole number of seconds, at least 1 (got '$time_s')" ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir=$root/fuzz
[ -f "$fuzz_dir/Cargo.toml" ] || die "no cargo-fuzz crate at $fuzz_dir"

command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust with rustup (https://rustup.rs), then 'rustup toolchain install nightly' and 'cargo install cargo-fuzz'"
cargo +nightly --version >/dev/null 2>&1 ||
    die "no nightly toolchain (cargo +nightly failed): install it with 'rustup toolchain install nightly'"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    die "cargo-fuzz is not installed: install it with 'cargo install cargo-fuzz'"

cd "$fuzz_dir" || die "cd $fuzz_dir"
mapfile -t all < <(cargo +nightly fuzz list 2>/dev/null)
[ ${#all[@]} -gt 0 ] || die "cargo fuzz list found no targets in $fuzz_dir"
if [ $list_only = 1 ]; then
    printf '%s\n' "${all[@]}"
    exit 0
fi
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    printf '%s\n' "${all[@]}" | grep -qxF -- "$t" ||
        die "unknown target '$t' (targets: ${all[*]})"
done

# Built once, then run directly: a source edit during a long run changes
# nothing until the next run (cargo fuzz run would rebuild per target).
echo "fuzz.sh: building ${targets[*]}" >&2
for t in "${targets[@]}"; do
    cargo +nightly fuzz build "$t" >&2 || die "cargo fuzz build $t failed"
done
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=$fuzz_dir/target/$triple/release

# The longest input tried: room for the metrics endpoint's 8 KiB head limit
# and for a few-interval histogram file; libFuzzer's 4096 elsewhere.
max_len_of() {
    case "$1" in
        metrics) echo 9216 ;;
        histfile) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

stat_of() { # stat name, log file
    sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

logs=$(mktemp -d "${TMPDIR:-/tmp}/fuzz.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$logs"' EXIT
summary=()
found=()
for t in "${targets[@]}"; do
    corpus=corpus/$t
    artifacts=artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    dirs=("$corpus")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    dict=()
    [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
    before=$(ls "$artifacts")
    log=$logs/$t.log
    echo "fuzz.sh: $t for ${time_s}s" >&2
    [ -x "$bin_dir/$t" ] || die "no fuzz binary $bin_dir/$t after the build"
    "$bin_dir/$t" -artifact_prefix="$artifacts/" \
        -max_total_time="$time_s" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(max_len_of "$t")" -print_final_stats=1 "${dict[@]}" \
        "${dirs[@]}" >"$log" 2>&1
    rc=$?
    runs=$(stat_of number_of_executed_units "$log")
    rate=$(stat_of average_exec_per_sec "$log")
    if [ -z "$runs" ]; then # no final stats: the last status line
        runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    fi
    inputs=$(find "$corpus" -type f | wc -l)
    new=$(comm -13 <(printf '%s\n' "$before") <(ls "$artifacts"))
    crashes=0
    [ -n "$new" ] && crashes=$(printf '%s\n' "$new" | wc -l)
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        tail -n 30 "$log" >&2
        die "$t: libFuzzer exited $rc without writing an artifact (log above)"
    fi
    line=$(printf '%-14s %12s executions %8s/s  corpus %6s  crashes %s' \
        "$t" "${runs:-?}" "${rate:-?}" "$inputs" "$crashes")
    echo "$line"
    summary+=("$line")
    for a in $new; do
        found+=("fuzz/$artifacts/$a")
        grep -m 1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | sed "s|^|  $t: |" >&2
        echo "  $t: crash written to fuzz/$artifacts/$a" >&2
    done
done

echo
echo "fuzz.sh: ${time_s}s per target"
printf '%s\n' "${summary[@]}"
if [ ${#found[@]} -gt 0 ]; then
    echo "fuzz.sh: ${#found[@]} crash(es) found:" >&2
    printf '  %s\n' "${found[@]}" >&2
    exit 1
fi
echo "fuzz.sh: no crashes"
