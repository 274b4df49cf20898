#!/usr/bin/env bash
# Int8 models end to end (docs/quantization.md): LeNet-5 trained on MNIST
# and a batch-norm network trained on generated shapes are quantised; the
# int8 models keep top-1 within 0.5 points of float32 and agree with it on
# at least 99% of the samples; the portable int8 kernel (OSP_BACKEND=
# reference) gives the same answers as this CPU's; a backend without int8
# (avx2) runs the same file in float32; tag, embed and info take the int8
# model; clear errors for bad input.
# usage: quantize.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
py=/usr/bin/python3
mnist=$src/data/mnist

"$osprey" quantize --help | grep -- "--calibrate" >/dev/null || fail "quantize --help lacks --calibrate"

# LeNet-5 on MNIST: calibrated on the training images, checked on the test set.
"$osprey" train --net "$src/nets/lenet.cfg" --data "$mnist" --epochs 2 --batch 64 --lr 0.01 \
    --threads 2 --seed 1 --out "$work/lenet.osp" --quiet
"$osprey" quantize "$work/lenet.osp" --calibrate "$mnist" --images 256 --out "$work/lenet8.osp" \
    --check "$mnist" --json >"$work/q.json"
$py - "$work/q.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["layers"] == 2 and r["images"] == 256, r
assert r["count"] > 0, r
delta = abs(r["top1_int8"] - r["top1_float32"])
assert r["top1_float32"] > 0.9, r
assert delta <= 0.005, f"int8 top-1 {r['top1_int8']} vs float32 {r['top1_float32']}"
assert r["agreement"] >= 0.99, f"agreement {r['agreement']}"
EOF
"$osprey" info "$work/lenet8.osp" | grep "^precision  int8: 2 convolutions" >/dev/null || fail "info: $("$osprey" info "$work/lenet8.osp" | head -6)"
"$osprey" info --json "$work/lenet8.osp" | grep '"scheme":"int8"\|"scheme": "int8"' >/dev/null || fail "info --json lacks the quantization"
"$osprey" export "$work/lenet8.osp" --out "$work/lenet8.onnx" >/dev/null 2>"$work/err"
grep -q "int8 model; the ONNX file holds its float32 network" "$work/err" || fail "export of an int8 model: $(cat "$work/err")"
# This CPU's backend runs int8 where it has AVX-512 (VNNI); elsewhere (an
# AVX2-only CPU) it runs the int8 file in float32, as the avx2 backend does.
native_int8=0
"$osprey" bench --net "$src/nets/lenet.cfg" --batch 1 --steps 1 --reps 1 --json 2>/dev/null |
    grep avx512 >/dev/null && native_int8=1
"$osprey" eval --model "$work/lenet8.osp" --data "$mnist" --json >"$work/native.json"
OSP_BACKEND=reference "$osprey" eval --model "$work/lenet8.osp" --data "$mnist" --json >"$work/ref.json"
"$osprey" eval --model "$work/lenet.osp" --data "$mnist" --json >"$work/f32.json"
OSP_BACKEND=avx2 "$osprey" eval --model "$work/lenet8.osp" --data "$mnist" --json >"$work/avx2.json"
if [ $native_int8 -eq 1 ]; then
    # The same answers from the portable int8 kernel as from this CPU's.
    cmp -s "$work/native.json" "$work/ref.json" || fail "int8 eval differs between backends: $(cat "$work/native.json" "$work/ref.json")"
    cmp -s "$work/native.json" "$work/f32.json" && fail "int8 eval equals float32's to the last digit"
fi
# A backend without int8 runs the file in float32: the float model's
# answers (this CPU's too, where it has no int8).
without=("$work/avx2.json")
[ $native_int8 -eq 1 ] || without+=("$work/native.json")
$py - "$work/f32.json" "${without[@]}" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1]))
for p in sys.argv[2:]:
    b = json.load(open(p))
    assert abs(a["loss"] - b["loss"]) < 1e-4 and a["top1"] == b["top1"], (p, a, b)
EOF

# A batch-norm network on shapes: batch norm folds into the int8 filters;
# calibrated on an unlabelled folder; tag with both models.
$py "$src/scripts/make-shapes" "$work/shapes" --per-class 60 --no-broken --spec "$work/net.cfg" >/dev/null
"$osprey" train --net "$work/net.cfg" --data "$work/shapes" --epochs 8 --batch 32 --lr 0.02 \
    --threads 2 --seed 2 --out "$work/shapes.osp" --quiet 2>/dev/null
mkdir "$work/unlabelled"
mapfile -t files < <(find "$work/shapes" -type f | sort) # no pipe into head: SIGPIPE under pipefail
for f in "${files[@]:0:100}"; do cp "$f" "$work/unlabelled/$(basename "$(dirname "$f")")-$(basename "$f")"; done
"$osprey" quantize "$work/shapes.osp" --calibrate "$work/unlabelled" --out "$work/shapes8.osp" \
    --check "$work/shapes" >"$work/q.txt"
grep -q "quantised 2 convolutions to int8 (calibrated on 100 images)" "$work/q.txt" || fail "$(cat "$work/q.txt")"
agree=$(sed -n 's/.*agreement \([0-9.]*\)%.*/\1/p' "$work/q.txt")
$py -c "import sys; sys.exit(0 if float('$agree') >= 99 else 1)" || fail "shapes agreement $agree%"
"$osprey" tag --model "$work/shapes.osp" --out "$work/t32" --embed fc9 "$work/unlabelled" --quiet
"$osprey" tag --model "$work/shapes8.osp" --out "$work/t8" --embed fc9 "$work/unlabelled" --quiet
$py - "$work/t32" "$work/t8" <<'EOF'
import json, sys
import numpy as np
a, b = ([json.loads(l) for l in open(d + "/tags.jsonl")] for d in sys.argv[1:])
top = lambda r: {x["path"]: x["labels"][0]["description"] for x in r}
ta, tb = top(a), top(b)
same = sum(ta[p] == tb[p] for p in ta) / len(ta)
assert len(ta) == 100 and same >= 0.98, same
va, vb = (np.load(d + "/vectors.npy") for d in sys.argv[1:])
cos = (va * vb).sum(1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1) + 1e-12)
assert cos.min() > 0.98, cos.min()
EOF
# An int8 model is another model: it does not write into the float one's folder.
expect_error "holds a run with model_sha256" "$osprey" tag --model "$work/shapes8.osp" --out "$work/t32" "$work/unlabelled" --quiet

# Bad input: one clear line each.
expect_error "quantised already" "$osprey" quantize "$work/lenet8.osp" --calibrate "$mnist" --out "$work/x.osp"
expect_error "percentile" "$osprey" quantize "$work/lenet.osp" --calibrate "$mnist" --out "$work/x.osp" --percentile 40
expect_error "--method must be" "$osprey" quantize "$work/lenet.osp" --calibrate "$mnist" --out "$work/x.osp" --method kl
expect_error "required" "$osprey" quantize "$work/lenet.osp" --out "$work/x.osp"
mkdir "$work/empty"
expect_error "no images to calibrate" "$osprey" quantize "$work/lenet.osp" --calibrate "$work/empty" --out "$work/x.osp"
: >"$work/empty.jpg"
error_lines() { grep -vc "left out" "$work/err" || true; }
expect_error "none of its 1 image could be read" "$osprey" quantize "$work/lenet.osp" --calibrate "$work/empty.jpg" --out "$work/x.osp"
error_lines() { wc -l <"$work/err"; }
expect_error "--out" "$osprey" quantize "$work/lenet.osp" --calibrate "$mnist" --out /nonexistent/x.osp
cat >"$work/mlp.cfg" <<'EOF'
[net]
input = 1x28x28
[flatten]
[fc]
outputs = 10
EOF
"$osprey" train --net "$work/mlp.cfg" --data "$mnist" --epochs 1 --threads 2 --out "$work/mlp.osp" --quiet
expect_error "no convolution" "$osprey" quantize "$work/mlp.osp" --calibrate "$mnist" --out "$work/x.osp"
[ ! -e "$work/x.osp" ] || fail "a failed quantize wrote its output"
echo "quantize: ok"
