#!/usr/bin/env bash
# pss.sh PID: memory of a process tree.
#
# Prints "PSS_KIB PROCS THREADS": the sum of the Pss: lines of
# /proc/P/smaps_rollup over PID and all its descendants (found through the
# ppid field of /proc/*/stat), how many processes that is, and their threads.
# PSS splits each shared page among the processes mapping it, so over a whole
# tree the sum counts each page once: a forked child adds only the pages it
# touched (copied on write) plus its own new ones. Processes that vanish while
# being read are skipped. Needs to see the tree's /proc entries (same user or
# root).
set -euo pipefail

root=${1:?usage: pss.sh PID}
[[ -r /proc/$root/smaps_rollup ]] || { echo "pss.sh: no readable process $root" >&2; exit 1; }

declare -A kids=()
for stat in /proc/[0-9]*/stat; do
    line=
    read -r line 2>/dev/null < "$stat" || continue
    # Fields after "pid (comm) ": state ppid ... (comm may hold spaces and parens).
    rest=${line##*) }
    read -r _state ppid _ <<< "$rest"
    pid=${stat#/proc/}
    pid=${pid%/stat}
    kids[$ppid]+=" $pid"
done

tree=("$root")
for ((i = 0; i < ${#tree[@]}; i++)); do
    # Word splitting of the space-separated child list is intended.
    # shellcheck disable=SC2206
    tree+=(${kids[${tree[$i]}]:-})
done

# Bash builtins only from here: a tree of a few hundred processes is read in
# a fraction of a second, while they are all still there.
total=0 procs=0 threads=0
for pid in "${tree[@]}"; do
    pss='' nthreads=0
    while read -r key value _; do
        if [[ $key == Pss: ]]; then pss=$value; break; fi
    done 2>/dev/null < "/proc/$pid/smaps_rollup" || continue
    [[ -n $pss ]] || continue
    while read -r key value _; do
        if [[ $key == Threads: ]]; then nthreads=$value; break; fi
    done 2>/dev/null < "/proc/$pid/status" || true
    total=$((total + pss))
    procs=$((procs + 1))
    threads=$((threads + nthreads))
done
echo "$total $procs $threads"
