#!/usr/bin/env bash
# Compressed gradients over MPI on loopback: 2 ranks train LeNet-5 on 3200
# MNIST digits for an epoch with --compress fp16 and int8 and reach, on the
# 1000 test digits,
# the accuracy of the uncompressed run within 0.02 (error feedback keeps
# the lost rounding); each reports half (fp16) and about a quarter (int8)
# of the uncompressed bytes per step. The ranks' weights are compared by
# the trainer at the end (a checksum): the packed sums agree on all ranks.
# ctest: slow
# usage: compress.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
mnist=$src/data/mnist
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
need_mpi

mnist_subset "$mnist" "$work/data" 3200

for c in none fp16 int8; do
    mpirun --oversubscribe -np 2 --bind-to none "$osprey" train --net "$src/nets/lenet.cfg" \
        --data "$work/data" --val "$work/data" --epochs 1 --batch 32 --lr 0.05 --seed 5 \
        --threads 1 --quiet --json --compress $c >"$work/$c.json"
done
/usr/bin/python3 - "$work" <<'PY'
import json, sys
r = {c: json.loads(open(f"{sys.argv[1]}/{c}.json").read().splitlines()[-1]) for c in ("none", "fp16", "int8")}
base = r["none"]
assert base["compress"] == "none" and base["val_top1"] > 0.8, base
for c in ("fp16", "int8"):
    x = r[c]
    assert x["compress"] == c, x
    assert abs(x["val_top1"] - base["val_top1"]) <= 0.02, (c, x["val_top1"], base["val_top1"])
    print(f"{c}: val accuracy {x['val_top1']:.4f} against {base['val_top1']:.4f}, "
          f"{x['comm_bytes_per_step']:.0f} bytes per step against {base['comm_bytes_per_step']:.0f}")
ratio16 = r["fp16"]["comm_bytes_per_step"] / base["comm_bytes_per_step"]
ratio8 = r["int8"]["comm_bytes_per_step"] / base["comm_bytes_per_step"]
assert ratio16 == 0.5, ratio16
assert 0.25 <= ratio8 < 0.2501, ratio8  # a 4-byte scale per bucket
PY
expect_error "compress must be none, fp16 or int8" "$osprey" train --net "$src/nets/lenet.cfg" \
    --data "$mnist" --compress int4
expect_error "does not combine with --reduce butterfly" "$osprey" train --net "$src/nets/lenet.cfg" \
    --data "$mnist" --compress fp16 --reduce butterfly
echo "cli compress: all checks passed"
