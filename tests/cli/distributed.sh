#!/usr/bin/env bash
# Data parallelism over MPI on loopback: N ranks with per-rank batch B end
# with the same weights as one process with batch N*B, after K steps
# (within 1e-5 relative), for N = 2 and 4, with and without overlap, with
# the communication thread and without, ring and butterfly; a run
# stopped on 2 ranks and continued on 4 ends there too; --resume auto picks
# the newest valid checkpoint and skips a damaged one.
# ctest: slow
# usage: distributed.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
mnist=$src/data/mnist
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
need_mpi
diff_ok() { # A B: weights and optimizer state within 1e-5 relative
    /usr/bin/python3 "$src/tests/cli/weights_diff.py" "$1" "$2" --optim --max 1e-5 ||
        fail "$2 differs from $1 by more than 1e-5"
}
mpi() { local n=$1; shift; mpirun --oversubscribe -np "$n" --bind-to none "$@"; }

K=8
G=64
common=(--net "$src/nets/lenet.cfg" --data "$mnist" --epochs 1 --lr 0.05 --seed 11
        --threads 1 --quiet --stop-after $K)
"$osprey" train "${common[@]}" --batch $G --checkpoint "$work/one.ckpt"
for n in 2 4; do
    mpi $n "$osprey" train "${common[@]}" --batch $((G / n)) --checkpoint "$work/n$n.ckpt"
    diff_ok "$work/one.ckpt" "$work/n$n.ckpt"
done
mpi 2 "$osprey" train "${common[@]}" --batch $((G / 2)) --no-overlap --checkpoint "$work/n2-blocking.ckpt"
diff_ok "$work/one.ckpt" "$work/n2-blocking.ckpt"
mpi 2 "$osprey" train "${common[@]}" --batch $((G / 2)) --bucket-mb 0.05 --checkpoint "$work/n2-small.ckpt"
diff_ok "$work/one.ckpt" "$work/n2-small.ckpt"
# Butterfly (reduce-scatter + all-gather) on 4 ranks with small buckets, and
# the exchange moved along by the training thread alone, with either reduce.
mpi 4 "$osprey" train "${common[@]}" --batch $((G / 4)) --bucket-mb 0.05 --reduce butterfly \
    --checkpoint "$work/n4-butterfly.ckpt"
diff_ok "$work/one.ckpt" "$work/n4-butterfly.ckpt"
mpi 4 "$osprey" train "${common[@]}" --batch $((G / 4)) --bucket-mb 0.05 --reduce butterfly \
    --no-comm-thread --checkpoint "$work/n4-butterfly-calls.ckpt"
diff_ok "$work/one.ckpt" "$work/n4-butterfly-calls.ckpt"
mpi 2 "$osprey" train "${common[@]}" --batch $((G / 2)) --no-comm-thread --checkpoint "$work/n2-calls.ckpt"
diff_ok "$work/one.ckpt" "$work/n2-calls.ckpt"

# An epoch whose last global batch (32 of 96) is all rank 0's: ranks 1 and
# 2 join that step's exchange with no samples and zero gradients.
short=(--net "$src/nets/lenet.cfg" --data synthetic:224 --epochs 1 --lr 0.05 --seed 11 --threads 1 --quiet)
"$osprey" train "${short[@]}" --batch 96 --checkpoint "$work/short-one.ckpt"
mpi 3 "$osprey" train "${short[@]}" --batch 32 --checkpoint "$work/short-n3.ckpt"
diff_ok "$work/short-one.ckpt" "$work/short-n3.ckpt"

# Stopped at step 3 on 2 ranks, continued to step K on 4 ranks (the global
# batch is kept: it is saved in the checkpoint).
mpi 2 "$osprey" train "${common[@]}" --batch $((G / 2)) --stop-after 3 --checkpoint "$work/moved.ckpt" \
    --keep-checkpoints 3 --checkpoint-every 1
ls "$work"/moved.ckpt-step* >/dev/null || fail "no numbered checkpoints kept"
[ "$(ls "$work"/moved.ckpt-step* | wc -l)" -eq 3 ] || fail "--keep-checkpoints 3 kept $(ls "$work"/moved.ckpt-step* | wc -l)"
mpi 4 "$osprey" train --resume auto --data "$mnist" --checkpoint "$work/moved.ckpt" --threads 1 \
    --quiet --stop-after $K
diff_ok "$work/one.ckpt" "$work/moved.ckpt"

# --resume auto skips a damaged checkpoint for the newest valid one.
"$osprey" train "${common[@]}" --batch $G --stop-after 4 --checkpoint "$work/auto.ckpt" \
    --keep-checkpoints 2 --checkpoint-every 2
cp "$work/auto.ckpt" "$work/auto.ckpt-step000000099"
size=$(stat -c %s "$work/auto.ckpt-step000000099")
printf 'XXXX' | dd of="$work/auto.ckpt-step000000099" bs=1 seek=$((size - 100)) conv=notrunc 2>/dev/null
touch "$work/auto.ckpt.tmp.12345.0"
"$osprey" train --resume auto --data "$mnist" --checkpoint "$work/auto.ckpt" --threads 1 \
    --stop-after $K 2>"$work/err"
grep -q "skipping .*step000000099.*checksum" "$work/err" || fail "the damaged checkpoint was not reported: $(cat "$work/err")"
grep -q "resuming from .*auto.ckpt" "$work/err" || fail "no checkpoint was resumed: $(cat "$work/err")"
[ ! -e "$work/auto.ckpt.tmp.12345.0" ] || fail "a leftover temporary file was not removed"
diff_ok "$work/one.ckpt" "$work/auto.ckpt"

# The job's progress: one set of lines (rank 0), per-rank timings in --json.
mpi 2 "$osprey" train --net "$src/nets/lenet.cfg" --data "$mnist" --epochs 1 --batch 32 --lr 0.05 \
    --threads 1 --json --val "$mnist" --stop-after 141 >"$work/job.json" 2>"$work/job.err"
[ "$(grep -c '^epoch 1/1' "$work/job.err")" -eq 1 ] || fail "expected one epoch line: $(cat "$work/job.err")"
/usr/bin/python3 - "$work/job.json" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 1, lines
r = lines[0]
assert r["ranks"] == 2 and r["global_batch"] == 64, r
assert len(r["rank_timing"]) == 2 and {t["rank"] for t in r["rank_timing"]} == {0, 1}, r
assert all(t["steps"] == 141 and t["comm_wait_s"] >= 0 for t in r["rank_timing"]), r
assert 0 <= r["comm_fraction"] < 1 and r["val_top1"] > 0.9, r
PY
echo "cli distributed: all checks passed"
