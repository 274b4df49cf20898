#!/usr/bin/env bash
# Compressed pushes to a parameter server over MPI on loopback: 1 server
# and 2 workers train LeNet-5 on 3200 MNIST digits for 2 epochs with
# --compress none and int8; int8 reaches the uncompressed run's accuracy on
# the 1000 test digits within 0.02 (error feedback keeps what the packing
# loses), at a quarter of the bytes per push plus a 4-byte scale per
# weight tensor (the weights pulled stay float32).
# ctest: slow
# usage: ps_compress.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
need_mpi

mnist_subset "$src/data/mnist" "$work/data" 3200
# Asynchronous, so the accuracies vary from run to run: 2 epochs at lr 0.02
# bring both near LeNet-5's plateau on these digits, where they vary little.
for c in none int8; do
    mpirun --oversubscribe -np 3 --bind-to none "$osprey" train --net "$src/nets/lenet.cfg" \
        --data "$work/data" --val "$work/data" --epochs 2 --batch 32 --lr 0.02 --schedule cosine \
        --seed 5 --threads 1 --quiet --json --param-servers 1 --compress $c >"$work/$c.json"
done
/usr/bin/python3 - "$work" <<'PY'
import json, sys
r = {c: json.loads(open(f"{sys.argv[1]}/{c}.json").read().splitlines()[-1]) for c in ("none", "int8")}
base, x = r["none"], r["int8"]
assert base["param_servers"] == 1 and base["compress"] == "none" and base["val_top1"] > 0.85, base
assert x["param_servers"] == 1 and x["compress"] == "int8", x
assert abs(x["val_top1"] - base["val_top1"]) <= 0.02, (x["val_top1"], base["val_top1"])
# LeNet-5 has 8 weight tensors, each packed with its own 4-byte scale.
assert x["comm_bytes_per_step"] == base["comm_bytes_per_step"] / 4 + 4 * 8, (x, base)
print(f"int8 pushes: val accuracy {x['val_top1']:.4f} against {base['val_top1']:.4f}, "
      f"{x['comm_bytes_per_step']:.0f} bytes per push against {base['comm_bytes_per_step']:.0f}")
PY
echo "cli ps_compress: all checks passed"
