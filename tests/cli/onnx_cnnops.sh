#!/usr/bin/env bash
# ONNX's ConvTranspose, InstanceNormalization and GroupNormalization against
# PyTorch and ONNX's own test data (tests/golden/make_cnnops_golden.py, the
# onnx_cnnops_golden fixture): each model imported, run at batch 2 and 1
# and compared within 1e-5 of the largest value, its layers as listed
# (PyTorch's nn.GroupNorm chain folded into one [groupnorm]); then
# exported, re-imported (the export's own chain folds back) and run again,
# and, where ONNX Runtime is installed, run there too. Hostile models are
# refused with one line. ONNX's own cases (one image each, layers not
# listed) are imported and run once.
# ctest: slow
# usage: onnx_cnnops.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
golden=${OSP_CNNOPS_GOLDEN:-$PWD/onnx_cnnops_golden}
python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
compare() { $python "$src/tests/golden/compare_npy.py" "$@" >/dev/null || fail "$1 differs from $2"; }
layers() { "$osprey" info "$1" --json | $python -c \
    'import json, sys; print(",".join(l["type"] for l in json.load(sys.stdin)["layers"]))'; }

[ -s "$golden/manifest.txt" ] || fail "no golden data in $golden (the onnx_cnnops_golden fixture)"
ort=""
if "$src/scripts/install-onnxruntime" >/dev/null 2>&1; then ort=$src/tests/onnx/ort_run.js
else echo "ONNX Runtime is not installed: exported models are checked by osprey only"; fi

while read -r model want; do
    "$osprey" import "$golden/$model.onnx" --out "$work/$model.osp" >/dev/null 2>"$work/err" ||
        fail "import $model: $(cat "$work/err")"
    echo "== $model"
    if [ "$want" = "-" ]; then
        "$osprey" run --model "$work/$model.osp" --input "$golden/$model.input.npy" \
            --output "$work/$model.out.npy"
        compare "$work/$model.out.npy" "$golden/$model.output.npy" 1e-5
        continue
    fi
    for batch in 2 1; do
        "$osprey" run --model "$work/$model.osp" --input "$golden/$model.input.npy" \
            --output "$work/$model.out.npy" --batch $batch --threads 2
        compare "$work/$model.out.npy" "$golden/$model.output.npy" 1e-5
    done
    got=$(layers "$work/$model.osp")
    [ "$got" = "$want" ] || fail "$model: layers $got, expected $want"
    "$osprey" export "$work/$model.osp" --out "$work/$model.back.onnx" >/dev/null
    "$osprey" import "$work/$model.back.onnx" --out "$work/$model.back.osp" >/dev/null
    [ "$(layers "$work/$model.back.osp")" = "$got" ] || fail "$model: export changed the layers"
    "$osprey" run --model "$work/$model.back.osp" --input "$golden/$model.input.npy" \
        --output "$work/$model.back.npy"
    compare "$work/$model.back.npy" "$golden/$model.output.npy" 1e-5
    if [ -n "$ort" ]; then
        node "$ort" "$work/$model.back.onnx" "$golden/$model.input.npy" "$work/$model.ort.npy" \
            --threads 2
        compare "$work/$model.ort.npy" "$work/$model.out.npy" 1e-5
    fi
done <"$golden/manifest.txt"

while read -r file want; do
    expect_error "$want" "$osprey" import "$golden/$file" --out "$work/bad.osp"
    [ ! -e "$work/bad.osp" ] || fail "$file left a model behind"
done <"$golden/bad_models.txt"
echo "onnx cnnops: all passed"
