#!/usr/bin/env bash
# Lazy update over MPI on loopback: 2 ranks train LeNet-5 for 8 steps with
# 18 small buckets, and the weights and momentum after --update lazy (each
# bucket applied just before the next forward pass reaches its first
# layer) equal those of --update step (all buckets at the end of the step)
# within 1e-6: the same arithmetic in another order. Also with the
# training thread moving the exchange, without overlap, with int8
# compression, and for a lazy run stopped after 3 steps and resumed.
# ctest: slow
# usage: lazy_update.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
mnist=$src/data/mnist
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
need_mpi
same() { # A B: weights and optimizer state within 1e-6 relative
    /usr/bin/python3 "$src/tests/cli/weights_diff.py" "$1" "$2" --optim --max 1e-6 ||
        fail "$2 differs from $1 by more than 1e-6"
}
mpi() { mpirun --oversubscribe -np 2 --bind-to none "$@"; }

common=(--net "$src/nets/lenet.cfg" --data "$mnist" --epochs 1 --batch 32 --lr 0.05 --seed 11
        --threads 1 --quiet --stop-after 8 --bucket-mb 0.05)
mpi "$osprey" train "${common[@]}" --update step --checkpoint "$work/step.ckpt"
mpi "$osprey" train "${common[@]}" --update lazy --checkpoint "$work/lazy.ckpt"
same "$work/step.ckpt" "$work/lazy.ckpt"
mpi "$osprey" train "${common[@]}" --update lazy --no-comm-thread --checkpoint "$work/lazy-calls.ckpt"
same "$work/step.ckpt" "$work/lazy-calls.ckpt"
mpi "$osprey" train "${common[@]}" --update lazy --no-overlap --checkpoint "$work/lazy-blocking.ckpt"
same "$work/step.ckpt" "$work/lazy-blocking.ckpt"
# Packed buckets: the residuals live with the ranks, the order of updates
# does not touch them.
mpi "$osprey" train "${common[@]}" --compress int8 --checkpoint "$work/int8.ckpt"
mpi "$osprey" train "${common[@]}" --compress int8 --update lazy --checkpoint "$work/int8-lazy.ckpt"
same "$work/int8.ckpt" "$work/int8-lazy.ckpt"
# Stopped with buckets pending: they are applied before the checkpoint.
mpi "$osprey" train "${common[@]}" --update lazy --stop-after 3 \
    --checkpoint "$work/resumed.ckpt"
mpi "$osprey" train "${common[@]:2}" --update lazy --resume "$work/resumed.ckpt" --checkpoint "$work/resumed.ckpt"
same "$work/step.ckpt" "$work/resumed.ckpt"

# A whole epoch (its object in --json): the epoch's end settles the last step.
mpi "$osprey" train --net "$src/nets/lenet.cfg" --data synthetic:256 --epochs 1 --batch 32 --threads 1 \
    --quiet --json --update lazy >"$work/lazy.json"
grep -q '"update": "lazy"' "$work/lazy.json" || fail "--json does not say lazy: $(cat "$work/lazy.json")"

expect_error "update must be step or lazy" "$osprey" train --net "$src/nets/lenet.cfg" --data "$mnist" \
    --update later
echo "cli lazy_update: all checks passed"
