#!/usr/bin/env bash
# ONNX import against PyTorch: torchvision's squeezenet1_1, resnet18 and
# mobilenet_v2 (random weights, small inputs) and a network of the other
# operators, exported by tests/golden/make_onnx_golden.py (the onnx_golden
# fixture). Outputs and pooled features must match PyTorch's within 1e-4 of
# the largest value; hostile files must be refused with one clear line.
# ctest: slow
# usage: onnx_import.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
golden=${OSP_ONNX_GOLDEN:-$PWD/onnx_golden}
python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
compare() { $python "$src/tests/golden/compare_npy.py" "$@" || fail "$1 differs from $2"; }

"$osprey" import --help | grep "usage: osprey import" >/dev/null || fail "import --help"
[ -s "$golden/manifest.txt" ] || fail "no golden data in $golden (the onnx_golden fixture)"

while read -r model layer; do
    echo "== $model"
    "$osprey" import "$golden/$model.onnx" --out "$work/$model.osp" || fail "import $model"
    for batch in 2 1; do
        "$osprey" run --model "$work/$model.osp" --input "$golden/$model.input.npy" \
            --output "$work/$model.out.npy" --batch $batch --threads 2
        compare "$work/$model.out.npy" "$golden/$model.output.npy" 1e-4
    done
    if [ "$layer" != "-" ]; then
        "$osprey" run --model "$work/$model.osp" --input "$golden/$model.input.npy" \
            --output "$work/$model.features.npy" --layer "$layer"
        compare "$work/$model.features.npy" "$golden/$model.features.npy" 1e-4
    fi
done <"$golden/manifest.txt"

# Labels and normalisation travel with the model.
seq 1 10 | sed 's/^/class/' >"$work/labels.txt"
"$osprey" import "$golden/opsnet.onnx" --out "$work/labelled.osp" --labels "$work/labels.txt" \
    --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 >/dev/null
"$osprey" info "$work/labelled.osp" >"$work/info"
grep -q "0.485" "$work/info" || fail "mean not saved: $(cat "$work/info")"

# Refusals: exit 1, one line that says why.
expect_refusal() {
    expect_error "$@"
    [ ! -e "$work/bad.osp" ] || fail "'${*:2}' left a model behind"
}
while read -r file want; do
    expect_refusal "$want" "$osprey" import "$golden/$file" --out "$work/bad.osp"
done <"$golden/bad_models.txt"
head -c 3000 "$golden/squeezenet1_1.onnx" >"$work/truncated.onnx"
expect_refusal "not an ONNX model" "$osprey" import "$work/truncated.onnx" --out "$work/bad.osp"
echo "not a model" >"$work/text.onnx"
expect_refusal "not an ONNX model" "$osprey" import "$work/text.onnx" --out "$work/bad.osp"
printf 'one\ntwo\n' >"$work/two-labels.txt"
expect_refusal "label names for a network with 10 outputs" "$osprey" import "$golden/opsnet.onnx" \
    --out "$work/bad.osp" --labels "$work/two-labels.txt"
expect_refusal "input-size" "$osprey" import "$golden/opsnet.onnx" --out "$work/bad.osp" --input-size 12
echo "onnx import: all passed"
