#!/usr/bin/env bash
# Model parallelism (--model-parallel fc) on loopback: the wide fully
# connected layers of nets/widefc.cfg (narrowed from 4096 to 1024 outputs,
# to stay quick) split by outputs over 2 and 4 ranks,
# the convolutions data-parallel, end with the weights and momentum of one
# process at the same global batch (within 1e-5 relative); a run stopped
# and resumed ends there too (checkpoints hold the whole net); the bytes
# each rank moves per step are the cost model's (docs/distributed.md).
# ctest: slow
# usage: model_parallel.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
need_mpi
diff_ok() { # A B: weights and optimizer state within 1e-5 relative
    /usr/bin/python3 "$src/tests/cli/weights_diff.py" "$1" "$2" --optim --max 1e-5 ||
        fail "$2 differs from $1 by more than 1e-5"
}
mpi() { local n=$1; shift; mpirun --oversubscribe -np "$n" --bind-to none "$@"; }

expect_error "takes 'fc'" "$osprey" train --net "$src/nets/widefc.cfg" --data synthetic:96 \
    --model-parallel conv

# One epoch of 3 steps at a global batch of 32.
W=1024
sed "s/^outputs = 4096$/outputs = $W/" "$src/nets/widefc.cfg" >"$work/wide.cfg"
[ "$(grep -c "^outputs = $W$" "$work/wide.cfg")" -eq 2 ] || fail "nets/widefc.cfg has changed: adapt the test"
G=32
common=(--net "$work/wide.cfg" --data synthetic:96 --epochs 1 --lr 0.05 --seed 11
        --threads 1 --quiet)
"$osprey" train "${common[@]}" --batch $G --checkpoint "$work/one.ckpt"
mpi 2 "$osprey" train "${common[@]}" --batch $((G / 2)) --model-parallel fc --json \
    --checkpoint "$work/mp2.ckpt" >"$work/mp2.json"
diff_ok "$work/one.ckpt" "$work/mp2.ckpt"
mpi 4 "$osprey" train "${common[@]}" --batch $((G / 4)) --model-parallel fc --checkpoint "$work/mp4.ckpt"
diff_ok "$work/one.ckpt" "$work/mp4.ckpt"

# Stopped after 2 steps, resumed to the end: the saved blocks of every
# rank are the whole net, loaded by every rank.
mpi 2 "$osprey" train "${common[@]}" --batch $((G / 2)) --model-parallel fc --stop-after 2 \
    --checkpoint "$work/resumed.ckpt"
mpi 2 "$osprey" train --resume auto --data synthetic:96 --threads 1 --quiet --model-parallel fc \
    --checkpoint "$work/resumed.ckpt"
diff_ok "$work/one.ckpt" "$work/resumed.ckpt"

# Bytes per step and rank, as docs/distributed.md counts them: the
# convolutions' and classifier's gradients in a ring allreduce (2 (N-1)/N
# of them), and for fc1 (512 -> W) and fc2 (W -> W) the other
# rank's inputs (all-gather), the other half of this rank's outputs
# (all-to-all), the same in backward for the output gradients, and the
# other rank's input gradients (reduce-scatter). Against pure data
# parallelism (every weight in the allreduce) it is 15 times less at
# W = 1024 (57 times at 4096).
/usr/bin/python3 - "$work/mp2.json" $W <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())
N, G, B, W = 2, 32, 16, int(sys.argv[2])
conv = (16 * 25 + 16) + (32 * 16 * 25 + 32) + (W * 10 + 10)
fc = [(512, W), (W, W)]
want = 2 * (N - 1) / N * 4 * conv
for i, o in fc:
    want += 4 * ((G - B) * i + B * (o - o // N) + B * (o - o // N) + (G - B) * i)
data_parallel = 2 * (N - 1) / N * 4 * (conv + sum(i * o + o for i, o in fc))
got = [t["comm_bytes_per_step"] for t in r["rank_timing"]]
assert r["ranks"] == N and len(got) == N, r
# parameter offsets are aligned: the allreduce carries a few padding floats
assert all(abs(g - want) / want < 1e-3 for g in got), (got, want)
assert data_parallel / want > 12, (data_parallel, want)
print(f"bytes per step: {got[0]:.0f} measured, {want:.0f} modelled, {data_parallel:.0f} data-parallel")
PY
echo "cli model_parallel: all checks passed"
