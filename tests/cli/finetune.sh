#!/usr/bin/env bash
# Fine-tuning end to end (docs/finetune.md): a model trained on three
# shape classes is fine-tuned to two others with a new head and frozen
# layers, and beats training from scratch for the same steps; frozen
# parameters and their batch-norm statistics stay bit for bit; a stopped
# fine-tuning run resumes exactly; the ONNX export -> import round trip
# keeps labels, mean and std (eval equal); the network's outputs are the
# data's classes; and clear errors for bad input.
# ctest: slow
# usage: finetune.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
py=/usr/bin/python3

# A: circle, cross, square (pretraining); B: star, triangle (fine-tuning)
$py "$src/scripts/make-shapes" "$work/all" --per-class 300 --no-broken --spec "$work/net.cfg" >/dev/null
mkdir "$work/A" "$work/B"
mv "$work/all/circle" "$work/all/cross" "$work/all/square" "$work/A/"
mv "$work/all/star" "$work/all/triangle" "$work/B/"
grep -q "outputs = 5" "$work/net.cfg" || fail "the spec's classifier is not 5 wide"

"$osprey" train --help | grep -- "--new-head" >/dev/null || fail "train --help lacks --new-head"

# A spec's classifier is sized from the data (5 outputs -> 3 classes), with
# a notice; the labels are the data's classes, none invented.
"$osprey" train --net "$work/net.cfg" --data "$work/A" --epochs 30 --batch 32 --lr 0.01 \
    --schedule cosine --crop-scale 0.5,1 --threads 2 --seed 1 --out "$work/a.osp" 2>"$work/log"
grep -q "sized for the 3 classes" "$work/log" || fail "no notice of the resized classifier: $(cat "$work/log")"
"$osprey" info "$work/a.osp" >"$work/info"
grep -q "classes    3: circle, cross, square$" "$work/info" || fail "labels: $(grep classes "$work/info")"

# Fine-tuning vs training from scratch: the same data, seed and steps.
common=(--data "$work/B" --val-split 0.3 --epochs 3 --batch 32 --lr 0.01 --crop-scale 0.5,1
        --threads 2 --seed 5 --json)
"$osprey" train --init "$work/a.osp" --new-head --freeze maxpool8 "${common[@]}" \
    --out "$work/ft.osp" >"$work/ft.json" 2>"$work/log"
grep -q "new classifier 'fc11': 2 outputs" "$work/log" || fail "no note of the new head: $(cat "$work/log")"
"$osprey" train --net "$work/net.cfg" "${common[@]}" --out "$work/scratch.osp" >"$work/scratch.json" 2>/dev/null
$py - "$work/ft.json" "$work/scratch.json" <<'PY'
import json, sys
ft, scratch = (json.loads(open(p).read().splitlines()[-1])["val_top1"] for p in sys.argv[1:])
print(f"fine-tuned {ft:.3f}, from scratch {scratch:.3f}")
assert ft >= 0.8 and ft >= scratch + 0.15, (ft, scratch)
PY
"$osprey" info "$work/ft.osp" | grep -q "classes    2: star, triangle$" || fail "fine-tuned labels"

# Frozen layers: weights and batch-norm statistics bit for bit; the rest
# trained; no optimizer state for the frozen part.
$py - "$src/tests/cli" "$work/a.osp" "$work/ft.osp" "$work/ft.osp.ckpt" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from weights_diff import load
a, b, ck = load(sys.argv[2]), load(sys.argv[3]), load(sys.argv[4])
frozen = [k for k in a if k.split(".")[0] in ("conv1", "batchnorm2", "conv5", "batchnorm6")]
assert len(frozen) == 12, frozen
for k in frozen:
    assert np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32)), k
assert not np.array_equal(a["fc9.weight"], b["fc9.weight"]), "fc9 did not train"
assert b["fc11.weight"].shape == (2, 64), b["fc11.weight"].shape
n = sum(a[k].size for k in frozen if "running" not in k)
m = ck["optim.m"].ravel()
assert not m[:n].any() and m[n:].any(), "optimizer state of frozen layers"
PY

# A fine-tuning run stopped and resumed is the uninterrupted one, bit for bit.
"$osprey" train --init "$work/a.osp" --new-head --freeze maxpool8 --lr-backbone 0.001 "${common[@]}" \
    --out "$work/r1.osp" >/dev/null 2>&1
"$osprey" train --init "$work/a.osp" --new-head --freeze maxpool8 --lr-backbone 0.001 "${common[@]}" \
    --out "$work/r2.osp" --stop-after 20 >/dev/null 2>&1
"$osprey" train --resume "$work/r2.osp.ckpt" --data "$work/B" --val-split 0.3 --crop-scale 0.5,1 \
    --out "$work/r2.osp" --quiet
cmp "$work/r1.osp" "$work/r2.osp" || fail "resumed fine-tuning differs from the uninterrupted run"

# --lr-backbone alone: everything trains, the backbone slower than the head.
"$osprey" train --init "$work/a.osp" --new-head --lr-backbone 0.0001 "${common[@]}" --epochs 1 \
    --out "$work/lb.osp" >/dev/null 2>&1
$py - "$src/tests/cli" "$work/a.osp" "$work/lb.osp" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from weights_diff import load
a, b = load(sys.argv[2]), load(sys.argv[3])
d = lambda k: np.abs(a[k] - b[k]).max()
assert 0 < d("conv1.weight") and d("conv1.weight") < 0.01, d("conv1.weight")
assert not np.array_equal(a["batchnorm2.running_mean"], b["batchnorm2.running_mean"])
PY

# With --init and no --new-head the data keeps the model's classes (in
# another order it is renumbered to the model's).
mkdir "$work/A2"
cp -r "$work/A/square" "$work/A/circle" "$work/A/cross" "$work/A2/"
"$osprey" train --init "$work/a.osp" --data "$work/A2" --epochs 1 --threads 2 --quiet --out "$work/a2.osp"
"$osprey" info "$work/a2.osp" | grep -q "classes    3: circle, cross, square$" || fail "--init kept labels"

# ONNX export -> import keeps the labels, mean and std: eval is the same.
"$osprey" export "$work/a.osp" --out "$work/a.onnx" >/dev/null
"$osprey" import "$work/a.onnx" --out "$work/b.osp" >/dev/null
"$osprey" info "$work/b.osp" >"$work/info.b"
grep -q "classes    3: circle, cross, square$" "$work/info.b" || fail "import lost the labels"
grep -q "mean/std   0.5/0.25 0.5/0.25 0.5/0.25" "$work/info.b" || fail "import lost mean/std: $(cat "$work/info.b")"
"$osprey" eval --model "$work/a.osp" --data "$work/A" --json >"$work/e1.json"
"$osprey" eval --model "$work/b.osp" --data "$work/A" --json >"$work/e2.json"
$py - "$work/e1.json" "$work/e2.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["count"] == b["count"] == 900 and a["top1"] > 0.8, a
assert abs(a["top1"] - b["top1"]) < 1e-9 and abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
PY
# ... and a multi-label model's flag and per-label thresholds (a copy of a.osp
# marked multi-label, its file's metadata edited); a single-label export
# carries neither
$py - "$work/a.osp" "$work/ml.osp" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["__metadata__"].update(multi_label="1", thresholds="[0.25, 0.5, 0.8125]")
t = json.dumps(h, separators=(",", ":")).encode()
t += b" " * (-len(t) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(t)) + t + b[8 + n:])
PY
"$osprey" export "$work/ml.osp" --out "$work/ml.onnx" >/dev/null
"$osprey" import "$work/ml.onnx" --out "$work/ml2.osp" >/dev/null
for m in ml ml2 b; do "$osprey" info "$work/$m.osp" --json >"$work/$m.json"; done
$py - "$work/ml.json" "$work/ml2.json" "$work/b.json" <<'PY'
import json, sys
a, b, single = (json.load(open(p)) for p in sys.argv[1:])
assert a.get("multi_label") is True and a["thresholds"] == [0.25, 0.5, 0.8125], a
assert b.get("multi_label") is True and b["thresholds"] == a["thresholds"], b
assert b["labels"] == a["labels"] == ["circle", "cross", "square"], b["labels"]
assert "multi_label" not in single and "thresholds" not in single, single
PY
if $py -c "import onnx" 2>/dev/null; then
    $py - "$work/ml.onnx" "$work/a.onnx" <<'PY'
import json, sys
import onnx
ml, single = ({p.key: p.value for p in onnx.load(f).metadata_props} for f in sys.argv[1:])
assert ml["osprey.multi_label"] == "1" and json.loads(ml["osprey.thresholds"]) == [0.25, 0.5, 0.8125], ml
assert "osprey.multi_label" not in single and "osprey.thresholds" not in single, single
PY
fi
# --labels sets them for any model (here over the exported ones)
printf 'round\nplus\nbox\n' >"$work/labels.txt"
"$osprey" import "$work/a.onnx" --labels "$work/labels.txt" --out "$work/c.osp" >/dev/null
"$osprey" info "$work/c.osp" | grep -q "classes    3: round, plus, box$" || fail "import --labels"
"$osprey" import "$work/a.osp" --labels "$work/labels.txt" --out "$work/d.osp" >/dev/null
"$osprey" info "$work/d.osp" | grep -q "classes    3: round, plus, box$" || fail "import --labels of an osprey model"
printf 'one\ntwo\n' >"$work/two.txt"
expect_error "2 label names for a network with 3 outputs" "$osprey" import "$work/a.osp" --labels "$work/two.txt" --out "$work/e.osp"
# an imported model fine-tunes like any other
"$osprey" train --init "$work/b.osp" --new-head --freeze fc9.flat --data "$work/B" --epochs 1 \
    --threads 2 --quiet --out "$work/fb.osp"
"$osprey" info "$work/fb.osp" | grep -q "classes    2: star, triangle$" || fail "fine-tuning an import"

# bad input: clear errors before training starts
b=(--data "$work/B" --epochs 1 --threads 2 --quiet)
expect_error "not in the model: 'star', 'triangle'" "$osprey" train --init "$work/a.osp" "${b[@]}"
expect_error "give --new-head" "$osprey" train --init "$work/a.osp" "${b[@]}"
expect_error "cannot freeze up to layer 'nosuch'" "$osprey" train --init "$work/a.osp" --new-head --freeze nosuch "${b[@]}"
expect_error "'conv1' is a \[conv\]" "$osprey" train --init "$work/a.osp" --new-head --head-layer conv1 "${b[@]}"
expect_error "'relu10' is a \[relu\], not a classifier" "$osprey" train --init "$work/a.osp" --new-head --head-layer relu10 "${b[@]}"
expect_error "'fc9' does not produce the logits" "$osprey" train --init "$work/a.osp" --new-head --head-layer fc9 "${b[@]}"
expect_error "nothing to train" "$osprey" train --init "$work/a.osp" --new-head --freeze fc11 "${b[@]}"
expect_error "is a network spec, not an osprey model" "$osprey" train --init "$work/net.cfg" "${b[@]}"
expect_error "is an ONNX model: import it first" "$osprey" train --init "$work/a.onnx" "${b[@]}"
echo "not a model" >"$work/text.osp"
expect_error "text.osp" "$osprey" train --init "$work/text.osp" "${b[@]}"
expect_error "needs --init MODEL" "$osprey" train --net "$work/net.cfg" --new-head "${b[@]}"
expect_error "not both" "$osprey" train --net "$work/net.cfg" --init "$work/a.osp" "${b[@]}"
[ ! -e "$work/nothing.osp" ] || fail "a refused run wrote a model"
echo "finetune: ok"
