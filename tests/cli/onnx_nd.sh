#!/usr/bin/env bash
# ONNX import of tensors of any rank against PyTorch: a vision
# transformer's front (class token expanded to the batch and concatenated,
# position embedding, x[:, 0]) at opsets 9, 13 and 17, shape operators on
# N x T x D tokens (Slice, Split, Gather, Expand, Squeeze/Unsqueeze, a
# Concat of 12 inputs, ReduceSum/Mean/Max), a densely connected block
# (Concats of up to 41 inputs) and a rank-6 input, exported by
# tests/golden/make_nd_golden.py (the nd_golden fixture). Outputs must
# match PyTorch's within 1e-4 of the largest value at batch sizes 1 to 3;
# each model exported again by osprey and imported back gives the same
# outputs (and ONNX Runtime's, where installed), and the file passes
# onnx.checker with shape inference. A network of osprey's shape layers
# (tests/onnx/zoo_nd.cfg), trained a few steps and exported, runs in ONNX
# Runtime as in osprey. Bad models are refused in one line.
# usage: onnx_nd.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
golden=${OSP_ND_GOLDEN:-$PWD/nd_golden}
python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
compare() { $python "$src/tests/golden/compare_npy.py" "$@" || fail "$1 differs from $2"; }
ort_run=$src/tests/onnx/ort_run.js
have_ort=0
[ -d "$src/.deps/node_modules/onnxruntime-node" ] && command -v node >/dev/null && have_ort=1

[ -s "$golden/manifest.txt" ] || fail "no golden data in $golden (the nd_golden fixture)"
while read -r model; do
    echo "== $model"
    "$osprey" import "$golden/$model.onnx" --out "$work/$model.osp" || fail "import $model"
    for batch in 3 2 1; do
        "$osprey" run --model "$work/$model.osp" --input "$golden/$model.input.npy" \
            --output "$work/$model.out.npy" --batch $batch --threads 2
        compare "$work/$model.out.npy" "$golden/$model.output.npy" 1e-4
    done
    # osprey's own export of the imported layers, and back
    "$osprey" export "$work/$model.osp" --out "$work/$model.re.onnx" >/dev/null
    $python -c "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)" \
        "$work/$model.re.onnx" || fail "$model: the exported file fails onnx.checker"
    "$osprey" import "$work/$model.re.onnx" --out "$work/$model.re.osp" >/dev/null
    "$osprey" run --model "$work/$model.re.osp" --input "$golden/$model.input.npy" \
        --output "$work/$model.re.npy" --threads 2
    compare "$work/$model.re.npy" "$golden/$model.output.npy" 1e-4
    if [ $have_ort = 1 ]; then
        node "$ort_run" "$work/$model.re.onnx" "$golden/$model.input.npy" "$work/$model.ort.npy" \
            --threads 2
        compare "$work/$model.ort.npy" "$golden/$model.output.npy" 1e-4
    fi
done <"$golden/manifest.txt"

# osprey's own networks of the shape layers (tests/onnx/zoo_nd.cfg), trained
# a few steps, exported: ONNX Runtime (where installed) and a reimport
# agree with osprey within 1e-5 of the largest output.
$python "$src/scripts/make-shapes" "$work/shapes" --per-class 4 --size 24,32 --no-broken >/dev/null
"$osprey" train --net "$src/tests/onnx/zoo_nd.cfg" --data "$work/shapes" --epochs 1 --batch 8 \
    --threads 2 --quiet --out "$work/zoo_nd.osp"
$python -c "import numpy as np, sys; np.save(sys.argv[1], np.random.RandomState(0).randn(5, 3, 16, 16).astype(np.float32))" \
    "$work/x16.npy"
"$osprey" export "$work/zoo_nd.osp" --out "$work/zoo_nd.onnx" >/dev/null
$python -c "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)" \
    "$work/zoo_nd.onnx" || fail "zoo_nd: the exported file fails onnx.checker"
"$osprey" run --model "$work/zoo_nd.osp" --input "$work/x16.npy" --output "$work/zoo_nd.npy" --threads 2
"$osprey" import "$work/zoo_nd.onnx" --out "$work/zoo_nd.re.osp" >/dev/null
"$osprey" run --model "$work/zoo_nd.re.osp" --input "$work/x16.npy" --output "$work/zoo_nd.re.npy" --threads 2
compare "$work/zoo_nd.re.npy" "$work/zoo_nd.npy" 1e-5
if [ $have_ort = 1 ]; then
    node "$ort_run" "$work/zoo_nd.onnx" "$work/x16.npy" "$work/zoo_nd.ort.npy" --threads 2
    compare "$work/zoo_nd.ort.npy" "$work/zoo_nd.npy" 1e-5
fi

# The shapes of a token model, shown and checked.
"$osprey" info "$work/tokens17.osp" >"$work/info"
grep -q "^input *6x8" "$work/info" || fail "info: $(head -3 "$work/info")"
$python -c "import numpy as np; np.save('$work/bad.npy', np.zeros((2, 8, 6), np.float32))"
expect_error "6x8" "$osprey" run --model "$work/tokens17.osp" --input "$work/bad.npy" \
    --output "$work/o.npy"
# Image options on a token model, and image paths on it.
expect_error "input-size is for" "$osprey" import "$golden/tokens17.onnx" --out "$work/b.osp" \
    --input-size 4x4
expect_error "mean and --std are for images" "$osprey" import "$golden/tokens17.onnx" \
    --out "$work/b.osp" --mean 0.5

while read -r file want; do
    expect_error "$want" "$osprey" import "$golden/$file" --out "$work/bad.osp"
    [ ! -e "$work/bad.osp" ] || fail "$file left a model behind"
done <"$golden/bad_nd.txt"
echo "onnx nd: all passed"
