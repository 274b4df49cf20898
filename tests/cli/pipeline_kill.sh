#!/usr/bin/env bash
# Exactly once under kill -9: a 2-rank 'osprey tag --embed' run killed at
# random moments (decoding, inference, a commit, the final join), then run
# again to the end; every image is then in tags.jsonl, vectors.npy and
# catalog.db exactly once, in DIR and in each shard, with nothing
# half-written. Then the same for one process without MPI.
# ctest: slow
# usage: pipeline_kill.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
pg=
cleanup() { [ -n "$pg" ] && kill -9 -- "-$pg" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
. "$src/tests/support/cli.sh"
need_mpi
py=/usr/bin/python3

$py "$src/scripts/make-shapes" "$work/photos" --per-class 80 --size 32,96 --spec "$work/shapes.cfg" >/dev/null
"$osprey" train --net "$work/shapes.cfg" --data "$work/photos" --epochs 1 --batch 32 --threads 2 \
    --quiet --out "$work/m.osp" 2>/dev/null
find "$work/photos" -type f | sort >"$work/paths.txt"
n=$(wc -l <"$work/paths.txt")

# Runs the command in a process group of its own and kills the group with
# SIGKILL once the files named by the glob $2 hold $1 bytes between them
# (mid-run, whatever the machine's speed), or after $1 seconds if $1 has a
# point in it; prints the bytes there were at the kill.
kill_at() {
    local at=$1 glob=$2 size=0 start
    shift 2
    setsid "$@" >/dev/null 2>&1 &
    pg=$!
    start=$(date +%s.%N)
    while kill -0 "$pg" 2>/dev/null; do
        size=$(cat $glob 2>/dev/null | wc -c || true)
        if [[ $at == *.* ]]; then
            awk -v s="$start" -v n="$(date +%s.%N)" -v a="$at" 'BEGIN { exit !(n - s >= a) }' && break
        elif [ "$size" -ge "$at" ]; then
            break
        fi
        sleep 0.01
    done
    kill -9 -- "-$pg" 2>/dev/null || true
    wait "$pg" 2>/dev/null || true
    pg=
    # mpirun puts its ranks in process groups of their own: kill them too,
    # as a lost machine would. They outlive the kill by a moment, still
    # holding their folders' locks: the next run waits for those
    # (--lock-timeout) instead of refusing.
    pkill -9 -f -- "--out $work/out" 2>/dev/null || true
    echo "$size"
}
tag=(tag --model "$work/m.osp" --embed relu7 --out "$work/out" --batch 2 --workers 1 --threads 1 --quiet)
mpi=(mpirun --oversubscribe -np 2 --bind-to none)
# a line of tags.jsonl is over 250 bytes: these kills land before the end
sizes=()
for at in 0.4 $((n * 25)) $((n * 60)) $((n * 100)) $((n * 150)) $((n * 200)); do
    sizes+=("$(kill_at "$at" "$work/out/shards/*/tags.jsonl" "${mpi[@]}" "$osprey" "${tag[@]}" "$work/photos")")
done
"${mpi[@]}" "$osprey" "${tag[@]}" "$work/photos"
final=$(cat "$work"/out/shards/*/tags.jsonl | wc -c)
mid=0
for s in "${sizes[@]}"; do [ "$s" -gt 0 ] && [ "$s" -lt "$final" ] && mid=$((mid + 1)); done
[ "$mid" -ge 4 ] || fail "only $mid of the kills landed mid-run (bytes at each: ${sizes[*]} of $final)"
$py "$src/tests/cli/pipeline_check.py" "$work/out" "$work/paths.txt"
# the shards hold the same images between them, each once
for r in 0 1; do
    [ -f "$work/out/shards/$r-of-2/catalog.db" ] || fail "no shard $r"
done
cat "$work/out/shards/0-of-2/tags.jsonl" "$work/out/shards/1-of-2/tags.jsonl" | wc -l | grep -qx "$n" ||
    fail "the shards do not hold $n images between them"

# one process, killed in the middle of batches of one image
tag1=(tag --model "$work/m.osp" --embed relu7 --out "$work/one" --batch 1 --workers 1 --threads 1 --quiet)
sizes=()
for at in $((n * 30)) $((n * 90)) 0.05 $((n * 160)); do
    sizes+=("$(kill_at "$at" "$work/one/tags.jsonl" "$osprey" "${tag1[@]}" "$work/photos")")
done
"$osprey" "${tag1[@]}" "$work/photos"
final=$(wc -c <"$work/one/tags.jsonl")
mid=0
for s in "${sizes[@]}"; do [ "$s" -gt 0 ] && [ "$s" -lt "$final" ] && mid=$((mid + 1)); done
[ "$mid" -ge 3 ] || fail "only $mid of the kills of one process landed mid-run (${sizes[*]} of $final bytes)"
$py "$src/tests/cli/pipeline_check.py" "$work/one" "$work/paths.txt"
# mpirun binds a lone rank to one core by default; a tag rank allowed less
# than its share of the machine runs on all of it (its threads say so),
# and ranks that fill the machine keep one core each.
cores=$(nproc)
if [ "$cores" -ge 2 ]; then
    threads=$(mpirun -np 1 --bind-to core "$osprey" tag --model "$work/m.osp" --out "$work/lone" \
        --json --quiet "$work/photos" | $py -c "import json, sys; print(json.load(sys.stdin)['threads'])")
    [ "$threads" -eq "$cores" ] || fail "a lone mpirun rank ran $threads threads on $cores cores"
fi
echo "cli pipeline_kill: all checks passed"
