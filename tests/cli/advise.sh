#!/usr/bin/env bash
# End to end: osprey advise on LeNet-5 and a small generated IDX set (its
# JSON checked against the memory budget and the rules of the choice),
# train --batch auto for one short epoch (the chosen batch recorded in the
# checkpoint, kept when resumed), and clear errors for bad input.
# usage: advise.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
py=/usr/bin/python3
lenet=$src/nets/lenet.cfg

# 512 28x28 digits-like images in the IDX files 'osprey train' reads: each
# class a fixed pattern under noise.
mkdir "$work/idx"
$py - "$work/idx" <<'PY'
import struct, sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(5)
n = 512
patterns = rng.integers(0, 256, (10, 28, 28))
labels = np.arange(n) % 10
x = np.clip(0.6 * patterns[labels] + 0.4 * rng.integers(0, 256, (n, 28, 28)), 0, 255).astype(np.uint8)
with open(f"{d}/train-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes())
with open(f"{d}/train-labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())
PY

"$osprey" advise --help | grep -q "usage: osprey advise" || fail "advise --help"
"$osprey" --help | grep -q "advise" || fail "advise missing from osprey --help"

# The table and the recommendation, then JSON with a budget that leaves out
# the large batches (LeNet plans about 8.5 MiB + 0.18 MiB per sample).
"$osprey" advise --net "$lenet" --data "$work/idx" --seconds 1 --max-batch 64 --quiet >"$work/table"
grep -q "^recommended: --batch [0-9]* --threads [0-9]*" "$work/table" || fail "no recommendation: $(cat "$work/table")"
grep -q "^mpirun on a node like this" "$work/table" || fail "no mpirun line"
"$osprey" advise --net "$lenet" --data "$work/idx" --seconds 2 --memory-budget 16M --json \
    >"$work/a.json" 2>"$work/a.err"
[ "$(wc -l <"$work/a.err")" -ge 1 ] || fail "no measurement lines on stderr"
$py - "$work/a.json" "$(nproc)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); cores = int(sys.argv[2])
budget = 16 << 20
assert r["memory_budget"] == budget and r["cores"] == cores, r
m = r["measurements"]; rec = r["recommendation"]
assert m, r
for p in m:
    b = p["batch"]
    assert b >= 8 and b & (b - 1) == 0 and b <= 512, p
    assert 1 <= p["threads"] <= cores and p["images_per_s"] > 0 and p["steps"] >= 2, p
    assert abs(p["images_per_s"] * p["step_s"] - b) < 1e-6 * b, p
    # nothing over the budget was measured
    assert p["planned_bytes"] <= budget and p["fits"], p
    if p["rss_bytes"] is not None and b >= 32:
        assert 0.3 < p["rss_bytes"] / p["planned_bytes"] < 3, p
# planned memory grows with the batch
planned = sorted({(p["batch"], p["planned_bytes"]) for p in m})
assert all(a[1] < b[1] for a, b in zip(planned, planned[1:])), planned
# the batch sweep ran at all cores; thread counts at the chosen batch
assert any(p["threads"] == cores for p in m), m
if cores > 1:
    assert any(p["threads"] == 1 and p["batch"] == rec["batch"] for p in m), m
# the recommendation follows its rules on this table
best = {}
for p in m:
    best[p["batch"]] = max(best.get(p["batch"], 0), p["images_per_s"])
top = max(best.values())
assert rec["best_images_per_s"] == top, rec
assert rec["batch"] == min(b for b, v in best.items() if v >= (1 - r["tolerance"]) * top), (rec, best)
assert rec["images_per_s"] == best[rec["batch"]], rec
assert rec["planned_bytes"] <= budget and rec["reason"], rec
mp = rec["mpirun"]
assert mp["ranks_per_node"] * mp["threads_per_rank"] <= cores, mp
assert mp["predicted"] == (mp["ranks_per_node"] > 1), mp
if mp["predicted"]:
    assert mp["images_per_s"] > (1 + r["tolerance"]) * rec["images_per_s"], mp
PY

# train --batch auto: one short epoch with the advisor's batch, recorded
# in the checkpoint; a resumed run keeps it.
"$osprey" train --net "$lenet" --data "$work/idx" --epochs 1 --batch auto --advise-seconds 1 \
    --memory-budget 16M --out "$work/m.osp" 2>"$work/train.err"
chosen=$(sed -n 's/^--batch auto: batch \([0-9]*\), .*/\1/p' "$work/train.err")
[ -n "$chosen" ] || fail "train --batch auto did not say what it chose: $(cat "$work/train.err")"
grep -q "batch $chosen, sgd" "$work/train.err" || fail "trained with another batch: $(cat "$work/train.err")"
saved_batch() {
    $py - "$1" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
print(json.loads(json.loads(f.read(n))["__metadata__"]["config"])["batch"])
PY
}
[ "$(saved_batch "$work/m.osp.ckpt")" = "$chosen" ] || fail "the checkpoint records another batch"
"$osprey" train --resume auto --data "$work/idx" --epochs 2 --batch auto --out "$work/m.osp" \
    2>"$work/resume.err"
grep -q "keeping the checkpoint's batch $chosen" "$work/resume.err" || fail "resume: $(cat "$work/resume.err")"
[ "$(saved_batch "$work/m.osp.ckpt")" = "$chosen" ] || fail "the resumed run changed the batch"

# --threads given: the advisor measures at it, and the run keeps it
"$osprey" train --net "$lenet" --data "$work/idx" --epochs 1 --batch auto --advise-seconds 0.5 \
    --threads 1 2>"$work/t1.err"
grep -q "^--batch auto: batch [0-9]*, 1 thread, " "$work/t1.err" || fail "--threads 1: $(cat "$work/t1.err")"
grep -q "1 thread$" "$work/t1.err" || fail "trained with other threads: $(cat "$work/t1.err")"

# a model's network: the one just trained
"$osprey" advise --model "$work/m.osp" --data "$work/idx" --seconds 0.5 --max-batch 16 --quiet --json \
    | $py -c "import json, sys; r = json.load(sys.stdin); assert r['model'].endswith('m.osp') and r['measurements'], r"

# bad input: clear errors, before any measurement
for junk in 4X abc -1G 0 G 1.5Q 12MBx ""; do
    expect_error "must be a size" "$osprey" advise --net "$lenet" --data "$work/idx" --memory-budget "$junk"
done
expect_error "smaller than the" "$osprey" advise --net "$lenet" --data "$work/idx" --memory-budget 1M
printf '[net]\ninput = 1x32x32\n[fc]\noutputs = 10\n' >"$work/wide.cfg"
expect_error "network's input is 1x32x32" "$osprey" advise --net "$work/wide.cfg" --data "$work/idx"
expect_error "give --net SPEC or --model MODEL" "$osprey" advise --net "$lenet"
expect_error "give --net SPEC or --model MODEL" "$osprey" advise --net "$lenet" --model "$work/m.osp" --data "$work/idx"
expect_error "larger than --max-batch" "$osprey" advise --net "$lenet" --data "$work/idx" --min-batch 64 --max-batch 8
expect_error "smaller than the" "$osprey" train --net "$lenet" --data "$work/idx" --batch auto --memory-budget 2M
expect_error "go with --batch auto" "$osprey" train --net "$lenet" --data "$work/idx" --memory-budget 4G
expect_error "--batch must be an integer" "$osprey" train --net "$lenet" --data "$work/idx" --batch big
expect_error "run 'osprey advise' first" "$osprey" train --net "$lenet" --data "$work/idx" --batch auto --hogwild
echo "advise: ok"
