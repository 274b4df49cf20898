#!/usr/bin/env bash
# End to end: train, checkpoint, resume, eval, run, info on the MNIST digits,
# and clear errors (exit 1, one line, no crash) for bad input.
# ctest: slow
# usage: train.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
mnist=$src/data/mnist
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"

for cmd in train eval run info; do
    "$osprey" "$cmd" --help | grep "usage: osprey $cmd" >/dev/null || fail "$cmd --help"
done
"$osprey" --help >/dev/null
expect_error "unknown command" "$osprey" frobnicate
expect_error "unknown or incomplete option" "$osprey" train --net x --bogus

# Two epochs straight, and the same run stopped mid-epoch and resumed, give
# the same model bit for bit.
common=(--net "$src/nets/lenet.cfg" --data "$mnist" --epochs 2 --batch 64 --lr 0.01
        --schedule cosine --threads 2 --seed 7 --quiet)
"$osprey" train "${common[@]}" --out "$work/a.osp"
"$osprey" train "${common[@]}" --out "$work/b.osp" --stop-after 200
[ -f "$work/b.osp.ckpt" ] || fail "no checkpoint written"
[ ! -f "$work/b.osp" ] || fail "a stopped run saved a final model"
"$osprey" train --resume "$work/b.osp.ckpt" --data "$mnist" --out "$work/b.osp" --quiet
cmp "$work/a.osp" "$work/b.osp" || fail "resumed run differs from the uninterrupted one"

"$osprey" eval --model "$work/a.osp" --data "$mnist" --json >"$work/eval.json"
/usr/bin/python3 - "$work/eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert set(r) >= {"top1", "top5", "loss", "count"}, r
assert r["count"] == 1000 and r["top1"] > 0.9 and r["top5"] >= r["top1"], r
PY
"$osprey" info "$work/a.osp" | grep -q "parameters 431080" || fail "info"

# run: the output and an inner layer (the 500-wide embedding)
/usr/bin/python3 -c "import numpy as np; np.save('$work/x.npy', np.random.RandomState(0).rand(5, 1, 28, 28).astype(np.float32))"
"$osprey" run --model "$work/a.osp" --input "$work/x.npy" --output "$work/y.npy" --normalize
"$osprey" run --model "$work/a.osp" --input "$work/x.npy" --output "$work/e.npy" --layer relu1
/usr/bin/python3 -c "
import numpy as np
assert np.load('$work/y.npy').shape == (5, 10)
e = np.load('$work/e.npy'); assert e.shape == (5, 500) and (e >= 0).all()"

# bad input
printf '[net]\ninput = 1x28x28\n[conv]\nfilters = 0\nsize = 5\n' >"$work/bad.cfg"
expect_error "bad.cfg:4" "$osprey" train --net "$work/bad.cfg" --data "$mnist" --epochs 1
expect_error "input is 3x32x32" "$osprey" train --net "$src/nets/resnet20.cfg" --data "$mnist" --epochs 1
head -c 5000 "$work/a.osp" >"$work/trunc.osp"
expect_error "trunc.osp" "$osprey" eval --model "$work/trunc.osp" --data "$mnist"
cp "$work/a.osp" "$work/flip.osp"
printf 'XX' | dd of="$work/flip.osp" bs=1 seek=20 conv=notrunc 2>/dev/null
expect_error "flip.osp" "$osprey" info "$work/flip.osp"
expect_error "not a checkpoint" "$osprey" train --resume "$work/a.osp" --data "$mnist"
mkdir "$work/idx"
head -c 1000 "$mnist/t10k-images-idx3-ubyte" >"$work/idx/t10k-images-idx3-ubyte"
cp "$mnist/t10k-labels-idx1-ubyte" "$work/idx/"
expect_error "truncated" "$osprey" eval --model "$work/a.osp" --data "$work/idx"
expect_error "layer 'nope'" "$osprey" run --model "$work/a.osp" --input "$work/x.npy" --output "$work/z.npy" --layer nope
/usr/bin/python3 -c "import numpy as np; np.save('$work/x3.npy', np.zeros((2, 3, 28, 28), np.float32))"
expect_error "N x 1x28x28" "$osprey" run --model "$work/a.osp" --input "$work/x3.npy" --output "$work/z.npy"

# Rough edges a new user met.
# -h is --help everywhere; --version is in the top-level help.
for cmd in train eval run info import export bench dataset index; do
    "$osprey" "$cmd" -h | grep "usage: osprey $cmd" >/dev/null || fail "'osprey $cmd -h' is not its help"
done
"$osprey" --help | grep -- "--version" >/dev/null || fail "--version missing from osprey --help"
"$osprey" --version | grep -q "^osprey [0-9]" || fail "--version"
# info --json: the layers, their shapes and parameters, and the metadata.
"$osprey" info "$work/a.osp" --json >"$work/info.json"
/usr/bin/python3 - "$work/info.json" <<'PY'
import json, sys
i = json.load(open(sys.argv[1]))
assert i["input"] == [1, 28, 28] and i["classes"] == 10 and i["parameters"] == 431080, i
assert [l["name"] for l in i["layers"]][:2] == ["conv1", "pool1"], i["layers"]
assert i["layers"][0] == {"name": "conv1", "type": "conv", "inputs": ["input"], "shape": [20, 24, 24],
                          "params": 520}, i["layers"][0]
assert sum(l["params"] for l in i["layers"]) == i["parameters"]
assert i["mean"] == [0.1307] and len(i["labels"]) == 10, i
m = i["metadata"]
assert m["format"] == "osprey" and m["kind"] == "model" and "[net]" in m["spec"], m
PY
# Files that are something else are named for what they are.
"$osprey" export "$work/a.osp" --out "$work/a.onnx" >/dev/null
expect_error "a.onnx is an ONNX model, not an osprey model .*osprey import" "$osprey" info "$work/a.onnx"
expect_error "lenet.cfg is a network spec: 'osprey info' reads models" "$osprey" info "$src/nets/lenet.cfg"
expect_error "x.npy is a NumPy array" "$osprey" info "$work/x.npy"
expect_error "a.osp is an osprey model or checkpoint (safetensors), not a dataset" "$osprey" train \
    --net "$src/nets/lenet.cfg" --data "$work/a.osp"
expect_error "a.osp is an osprey model or checkpoint (safetensors), not a network spec" "$osprey" train \
    --net "$work/a.osp" --data "$mnist"
# Outputs that cannot be written are refused before the first step (the
# message is the only line: no training happened).
mkdir "$work/folder"
expect_error "--out $work/folder is a folder" "$osprey" train "${common[@]}" --out "$work/folder"
expect_error "--out /nonexistent/m.osp: cannot write in /nonexistent" "$osprey" train "${common[@]}" \
    --out /nonexistent/m.osp
expect_error "--checkpoint /nonexistent/m.ckpt: cannot write" "$osprey" train "${common[@]}" \
    --out "$work/c.osp" --checkpoint /nonexistent/m.ckpt
[ -z "$(ls "$work/folder")" ] && [ ! -e "$work/c.osp" ] || fail "a refused run left files"
# A warm-up longer than the run; one epoch is "1 epoch".
expect_error "--warmup 50 is longer than the run (1 epoch)" "$osprey" train --net "$src/nets/lenet.cfg" \
    --data synthetic:64 --epochs 1 --warmup 50
"$osprey" train --net "$src/nets/lenet.cfg" --data synthetic:64 --epochs 1 --threads 2 2>"$work/one.err"
grep -q "on 64 samples of synthetic:64: 1 epoch, batch 64" "$work/one.err" || fail "$(head -1 "$work/one.err")"
# run converts float64 input as 'osprey index' does: the same answer.
/usr/bin/python3 -c "import numpy as np; np.save('$work/x64.npy', np.load('$work/x.npy').astype(np.float64))"
"$osprey" run --model "$work/a.osp" --input "$work/x64.npy" --output "$work/y64.npy" --normalize
cmp "$work/y.npy" "$work/y64.npy" || fail "float64 input gave another answer"
# import: --mean for a 1-channel model; one warning for --input-size HxW.
expect_error "needs 1 value (the model has 1 channel), not 3" "$osprey" import "$work/a.onnx" \
    --out "$work/i.osp" --mean 0.1,0.1,0.1
"$osprey" import "$work/a.onnx" --out "$work/i.osp" --input-size 32x32 2>"$work/import.err" &&
    fail "LeNet's fc1 cannot take 32x32 inputs"
[ "$(grep -c "input size 32x32 replaces the model's 28x28" "$work/import.err")" = 1 ] ||
    fail "the --input-size warning is not said once: $(cat "$work/import.err")"
echo "cli train: all checks passed"
