#!/usr/bin/env bash
# Resize and Upsample against ONNX Runtime (onnxruntime-node, CPU): one-node
# models in every mode osprey maps (nearest with each nearest_mode and
# coordinate_transformation_mode, linear with each mapping; scales that
# enlarge and shrink, and sizes; Resize at opsets 10, 13 and 18, Upsample
# at 9) are imported and run by osprey, run by ONNX Runtime as written,
# and exported by osprey and run by ONNX Runtime again; then PyTorch's
# models with [resize] layers from the onnx_opsets fixture
# (tests/onnx/old_opsets.py) are exported and run by ONNX Runtime against
# PyTorch's outputs.
#
# Agreement: max |diff| / max |reference| <= 1e-5 everywhere.
# usage: onnx_resize.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
golden=$PWD/onnx_opsets
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"

/usr/bin/python3 -c "import onnx" 2>/dev/null || { echo "no onnx Python package"; exit 77; }
"$src/scripts/install-onnxruntime" >/dev/null || fail "scripts/install-onnxruntime"
ort_run=$src/tests/onnx/ort_run.js

/usr/bin/python3 - "$work" <<'PY'
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

w = sys.argv[1]
rng = np.random.RandomState(0)
np.save(f"{w}/x.npy", rng.randn(2, 3, 6, 8).astype(np.float32))
names = []


def model(name, opset, inputs, inits, **attrs):
    op = attrs.pop("op", "Resize")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(op, ["x"] + inputs, ["y"], name=name, **attrs)
    g = helper.make_graph([node], name, [x], [y],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    onnx.save(m, f"{w}/{name}.onnx")
    names.append(name)


# Factors exact in binary, giving whole lengths (align_corners refuses
# others): 9 x 20 and 3 x 6. With a factor like 4/7 a coordinate that is
# 3.5 exactly comes out as 3.4999998 in float, and runtimes round it
# differently.
up = np.array([1, 1, 1.5, 2.5], np.float32)
down = np.array([1, 1, 0.5, 0.75], np.float32)
coords = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"]
for c in coords:
    for r in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]:
        for tag, s in (("up", up), ("down", down)):
            model(f"n_{c}_{r}_{tag}", 13, ["", "s"], {"s": s}, mode="nearest",
                  coordinate_transformation_mode=c, nearest_mode=r)
    if c != "tf_half_pixel_for_nn":  # ONNX Runtime: for nearest only
        for tag, s in (("up", up), ("down", down)):
            model(f"l_{c}_{tag}", 13, ["", "s"], {"s": s}, mode="linear",
                  coordinate_transformation_mode=c)
        # 11: scales required, empty when sizes are given
        model(f"l_{c}_sizes", 11, ["r", "r", "z"], {"r": np.zeros(0, np.float32),
              "z": np.array([2, 3, 9, 4], np.int64)}, mode="linear", coordinate_transformation_mode=c)
model("r10_nearest_down", 10, ["s"], {"s": down}, mode="nearest")
model("r10_linear_up", 10, ["s"], {"s": up}, mode="linear")
model("u9_nearest", 9, ["s"], {"s": np.array([1, 1, 2, 3], np.float32)}, op="Upsample")
model("r18_axes", 18, ["", "s"], {"s": np.array([1.6, 2.5], np.float32)}, mode="linear",
      axes=[2, 3])
model("r13_linear_frac", 13, ["", "s"], {"s": np.array([1, 1, 0.7, 2.5], np.float32)},
      mode="linear")
with open(f"{w}/names.txt", "w") as f:
    f.write("\n".join(names) + "\n")
PY

# osprey imports, runs and exports each; ONNX Runtime runs the original and
# the export in one process (tests/onnx/ort_batch.js); one Python compares.
count=0
: >"$work/ort.txt"
: >"$work/pairs.txt"
while read -r name; do
    m=$work/$name
    "$osprey" import "$m.onnx" --out "$m.osp" >/dev/null 2>"$work/err" ||
        fail "$name: $(cat "$work/err")"
    "$osprey" run --model "$m.osp" --input "$work/x.npy" --output "$m.osprey.npy" --threads 2
    "$osprey" export "$m.osp" --out "$m.x.onnx" >/dev/null
    echo "$m.onnx $work/x.npy $m.ort.npy" >>"$work/ort.txt"
    echo "$m.x.onnx $work/x.npy $m.x.npy" >>"$work/ort.txt"
    echo "$m.osprey.npy $m.ort.npy $name:osprey-vs-ONNX-Runtime" >>"$work/pairs.txt"
    echo "$m.x.npy $m.ort.npy $name:exported,ONNX-Runtime" >>"$work/pairs.txt"
    count=$((count + 1))
done <"$work/names.txt"
[ "$count" -ge 57 ] || fail "only $count one-node models"

# PyTorch's networks with [resize] layers, exported by osprey.
for name in upnet_op13 upnet_op18 alignnet_op11 fracnet_op13 nearestnet_op7_from9 nearestnet_op10; do
    [ -f "$golden/$name.onnx" ] || fail "no $golden/$name.onnx (the onnx_opsets fixture)"
    "$osprey" import "$golden/$name.onnx" --out "$work/$name.osp" >/dev/null 2>&1
    "$osprey" export "$work/$name.osp" --out "$work/$name.onnx" >/dev/null
    echo "$work/$name.onnx $golden/$name.input.npy $work/$name.ort.npy" >>"$work/ort.txt"
    echo "$work/$name.ort.npy $golden/$name.output.npy $name:exported,ONNX-Runtime-vs-PyTorch" \
        >>"$work/pairs.txt"
done
node "$src/tests/onnx/ort_batch.js" "$work/ort.txt" --threads 1 2>"$work/err" ||
    fail "ONNX Runtime: $(grep -v deprecated "$work/err")"

/usr/bin/python3 - "$work/pairs.txt" <<'PY'
import sys
import numpy as np
worst, n = 0.0, 0
for line in open(sys.argv[1]):
    a, b, what = line.split()
    a, b = np.load(a), np.load(b)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} and {b.shape}"
    rel = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
    assert rel <= 1e-5, f"{what}: differs by {rel:.2e} (> 1e-5)"
    worst, n = max(worst, rel), n + 1
print(f"ok: {n} comparisons, worst {worst:.2e}")
PY
