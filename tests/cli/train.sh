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
echo "cli train: all checks passed"
