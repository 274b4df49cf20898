#!/usr/bin/env bash
# Synchronised batch norm (--sync-bn) on loopback: N ranks with per-rank
# batch B end with the weights, momentum and running statistics of one
# process at batch N*B (within 1e-5 relative), for N = 2 and 4, and with
# an epoch's last, shorter batch cut unevenly (16 and 4 samples); without
# --sync-bn they do not (each rank normalises by its own slice). A batch
# that leaves a rank without samples is refused.
# ctest: slow
# usage: sync_bn.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
need_mpi
diff_max() { # A B TOL: weights, statistics and optimizer state within TOL relative
    /usr/bin/python3 "$src/tests/cli/weights_diff.py" "$1" "$2" --optim --max "$3"
}
mpi() { local n=$1; shift; mpirun --oversubscribe -np "$n" --bind-to none "$@"; }

# Batch norm after convolutions (over N x H x W) and after a fully
# connected layer (over N).
cat >"$work/bn.cfg" <<'CFG'
[net]
input = 3x16x16

[conv]
filters = 8
size = 3
pad = 1
bias = 0

[batchnorm]
name = bn1

[relu]

[maxpool]
size = 2
stride = 2

[conv]
filters = 16
size = 3
pad = 1
bias = 0

[batchnorm]
name = bn2

[relu]

[fc]
outputs = 32

[batchnorm]
name = bn3

[relu]

[fc]
outputs = 10
CFG

G=32
common=(--net "$work/bn.cfg" --data synthetic:512 --epochs 1 --lr 0.02 --seed 11 --threads 1
        --quiet --stop-after 8)
"$osprey" train "${common[@]}" --batch $G --checkpoint "$work/one.ckpt"
for n in 2 4; do
    mpi $n "$osprey" train "${common[@]}" --batch $((G / n)) --sync-bn --checkpoint "$work/s$n.ckpt"
    diff_max "$work/one.ckpt" "$work/s$n.ckpt" 1e-5 || fail "$n ranks with --sync-bn differ by more than 1e-5"
done
# Without it the ranks' statistics are their slices': the test can fail.
mpi 2 "$osprey" train "${common[@]}" --batch $((G / 2)) --checkpoint "$work/local.ckpt"
if diff_max "$work/one.ckpt" "$work/local.ckpt" 1e-3; then
    fail "2 ranks without --sync-bn match one process: the test cannot tell"
fi

# 84 samples: batches of 32, 32 and 20, the last cut 16 + 4 over 2 ranks.
short=(--net "$work/bn.cfg" --data synthetic:84 --epochs 1 --lr 0.02 --seed 11 --threads 1 --quiet)
"$osprey" train "${short[@]}" --batch $G --checkpoint "$work/one-short.ckpt"
mpi 2 "$osprey" train "${short[@]}" --batch $((G / 2)) --sync-bn --checkpoint "$work/s2-short.ckpt"
diff_max "$work/one-short.ckpt" "$work/s2-short.ckpt" 1e-5 || fail "an uneven last batch differs"
# ... and 8 + 8 + 4 + 0 over 4: the fourth rank would have nothing to add.
status=0
mpi 4 "$osprey" train "${short[@]}" --batch $((G / 4)) --sync-bn 2>"$work/err" || status=$?
[ "$status" -ne 0 ] || fail "a rank without samples was not refused"
grep -q "last batch has 20 samples, too few for 4 ranks" "$work/err" || fail "unexpected message: $(cat "$work/err")"
echo "cli sync_bn: all checks passed"
