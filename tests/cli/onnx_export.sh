#!/usr/bin/env bash
# End to end: osprey export, then the same .npy batch through `osprey run`
# and through ONNX Runtime (onnxruntime-node, CPU, installed into .deps by
# scripts/install-onnxruntime when missing). Models: LeNet-5 trained on the
# MNIST digits, ResNet-20, the small MobileNet, tests/onnx/zoo.cfg and
# zoo2.cfg (between them every layer type the exporter maps) trained a few
# steps on generated shapes, so that batch norm statistics are not the
# initial 0 and 1.
#
# Agreement: max |osprey - ort| over the whole output, divided by
# max |osprey|, must be at most 1e-5 for every model.
# ctest: slow
# usage: onnx_export.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
mnist=$src/data/mnist
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"

"$src/scripts/install-onnxruntime" >/dev/null || fail "scripts/install-onnxruntime"
ort_run=$src/tests/onnx/ort_run.js

"$osprey" export --help | grep "usage: osprey export" >/dev/null || fail "export --help"
"$osprey" --help | grep "export" >/dev/null || fail "export missing from osprey --help"

# compare NAME INPUT.npy: osprey run against ONNX Runtime on the exported model
compare() {
    local name=$1 x=$2
    "$osprey" export "$work/$name.osp" --out "$work/$name.onnx" >/dev/null
    "$osprey" run --model "$work/$name.osp" --input "$x" --output "$work/$name.osprey.npy" --threads 2
    node "$ort_run" "$work/$name.onnx" "$x" "$work/$name.ort.npy" --threads 2
    /usr/bin/python3 - "$name" "$work/$name.osprey.npy" "$work/$name.ort.npy" <<'PY'
import sys
import numpy as np
name, a, b = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
assert a.shape == b.shape, f"{name}: osprey {a.shape}, ONNX Runtime {b.shape}"
assert np.isfinite(a).all() and np.abs(a).max() > 0, f"{name}: degenerate output"
rel = float(np.abs(a - b).max() / np.abs(a).max())
print(f"{name}: {a.shape}, max |diff| / max |osprey| = {rel:.2e}")
assert rel <= 1e-5, f"{name}: ONNX Runtime differs from osprey by {rel:.2e} (> 1e-5)"
PY
}

# LeNet-5 on the digits, a few hundred steps.
"$osprey" train --net "$src/nets/lenet.cfg" --data "$mnist" --epochs 1 --batch 32 --lr 0.01 \
    --threads 2 --seed 3 --quiet --out "$work/lenet.osp"
/usr/bin/python3 - "$work" <<'PY'
import sys
import numpy as np
w = sys.argv[1]
rng = np.random.RandomState(0)
np.save(f"{w}/x28.npy", rng.randn(16, 1, 28, 28).astype(np.float32))
np.save(f"{w}/x32.npy", rng.randn(5, 3, 32, 32).astype(np.float32))
np.save(f"{w}/x24.npy", rng.randn(7, 3, 24, 24).astype(np.float32))
np.save(f"{w}/x24_1.npy", rng.randn(1, 3, 24, 24).astype(np.float32))
np.save(f"{w}/x16.npy", rng.randn(4, 3, 16, 16).astype(np.float32))
PY
compare lenet "$work/x28.npy"

# The ONNX file is a valid model (where the onnx Python package is present).
if /usr/bin/python3 -c "import onnx" 2>/dev/null; then
    /usr/bin/python3 - "$work/lenet.onnx" <<'PY'
import json, sys
import onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
assert m.opset_import[0].version == 13
assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["output"]
assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
assert [n.name for n in m.graph.node if n.op_type == "Conv"] == ["conv1", "conv2"]
meta = {p.key: p.value for p in m.metadata_props}
assert json.loads(meta["osprey.mean"]) == [0.1307] and json.loads(meta["osprey.std"]) == [0.3081]
assert json.loads(meta["osprey.labels"]) == [str(i) for i in range(10)]
PY
fi

# Batch norm, residual adds, depthwise convolutions and ReLU6, and every
# mapped layer type: a few steps on generated shapes.
/usr/bin/python3 "$src/scripts/make-shapes" "$work/shapes" --per-class 8 --size 32,40 --no-broken >/dev/null
for net in resnet20 mobilenet; do
    "$osprey" train --net "$src/nets/$net.cfg" --data "$work/shapes" --epochs 1 --batch 8 \
        --threads 2 --quiet --out "$work/$net.osp"
    compare "$net" "$work/x32.npy"
done
"$osprey" train --net "$src/tests/onnx/zoo.cfg" --data "$work/shapes" --epochs 1 --batch 8 \
    --threads 2 --quiet --out "$work/zoo.osp"
compare zoo "$work/x24.npy"
cp "$work/zoo.osp" "$work/zoo1.osp"
compare zoo1 "$work/x24_1.npy" # another batch size: the batch is symbolic
# the layer types ONNX import brings, with constants set to non-zero values
"$osprey" train --net "$src/tests/onnx/zoo2.cfg" --data "$work/shapes" --epochs 1 --batch 8 \
    --threads 2 --quiet --out "$work/zoo2.osp"
/usr/bin/python3 "$src/tests/onnx/set_constants.py" "$work/zoo2.osp"
compare zoo2 "$work/x16.npy"

# errors
expect_error "--out is required" "$osprey" export "$work/lenet.osp"
expect_error "exactly one MODEL" "$osprey" export --out "$work/x.onnx"
expect_error "unknown or incomplete option" "$osprey" export "$work/lenet.osp" --out "$work/x.onnx" --bogus
expect_error "nope.osp" "$osprey" export "$work/nope.osp" --out "$work/x.onnx"
expect_error "$work/no/such/dir/x.onnx" "$osprey" export "$work/lenet.osp" --out "$work/no/such/dir/x.onnx"
[ ! -e "$work/x.onnx" ] || fail "a failed export left a file"
echo "cli onnx_export: all checks passed"
