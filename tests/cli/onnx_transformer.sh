#!/usr/bin/env bash
# ONNX import of transformer operators against PyTorch: LayerNorm (opset
# 17's LayerNormalization and the decomposed form of opsets 11 and 13),
# Linear on N x T x D (MatMul + Add), GELU (the Erf form), multi-head
# attention written out (folded into one fused [attention]), a ViT encoder
# block, Softmax over one axis and Erf alone, from tests/golden/make_transformer_golden.py (the
# onnx_transformer_golden fixture). Each import must hold the folded layer
# types, match PyTorch within 1e-4 of the largest value, and survive
# osprey export and a second import with the same layers and outputs (the
# exported model also run by ONNX Runtime where it installs); hostile files
# are refused with one line.
# ctest: slow
# usage: onnx_transformer.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
golden=${OSP_TRANSFORMER_GOLDEN:-$PWD/onnx_transformer_golden}
python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
compare() { $python "$src/tests/golden/compare_npy.py" "$@" || fail "$1 differs from $2"; }
# The layer types of a model, one a line, from osprey info's table.
types() { "$osprey" info "$1" | awk 'seen { print $2 } /^layer +type/ { seen = 1 }' | sort -u; }
layers() { "$osprey" info "$1" | awk 'seen { n++ } /^layer +type/ { seen = 1 } END { print n }'; }

# ONNX Runtime runs the exported models too, where it can be installed.
ort_run=
if "$src/scripts/install-onnxruntime" >/dev/null 2>&1; then ort_run=$src/tests/onnx/ort_run.js
else echo "ONNX Runtime could not be installed: exported models are not run by it"; fi

[ -s "$golden/manifest.txt" ] || fail "no golden data in $golden (the onnx_transformer_golden fixture)"

while read -r model want; do
    echo "== $model"
    "$osprey" import "$golden/$model.onnx" --out "$work/$model.osp" || fail "import $model"
    for t in ${want//,/ }; do
        if [ "${t#!}" != "$t" ]; then
            ! types "$work/$model.osp" | grep -qx "${t#!}" || fail "$model: a [${t#!}] layer"
        else
            types "$work/$model.osp" | grep -qx "$t" ||
                fail "$model: no [$t] layer: $(types "$work/$model.osp" | tr '\n' ' ')"
        fi
    done
    "$osprey" run --model "$work/$model.osp" --input "$golden/$model.input.npy" \
        --output "$work/$model.out.npy" --batch 1 --threads 2
    compare "$work/$model.out.npy" "$golden/$model.output.npy" 1e-4
    # Export writes the decomposed forms; the importer folds them back.
    "$osprey" export "$work/$model.osp" --out "$work/$model.re.onnx" >/dev/null
    "$osprey" import "$work/$model.re.onnx" --out "$work/$model.re.osp" >/dev/null
    [ "$(layers "$work/$model.re.osp")" = "$(layers "$work/$model.osp")" ] ||
        fail "$model: $(layers "$work/$model.osp") layers, $(layers "$work/$model.re.osp") after export"
    "$osprey" run --model "$work/$model.re.osp" --input "$golden/$model.input.npy" \
        --output "$work/$model.re.npy"
    compare "$work/$model.re.npy" "$golden/$model.output.npy" 1e-4
    if [ -n "$ort_run" ]; then
        node "$ort_run" "$work/$model.re.onnx" "$golden/$model.input.npy" "$work/$model.ort.npy" \
            --threads 2
        compare "$work/$model.ort.npy" "$golden/$model.output.npy" 1e-4
    fi
done <"$golden/manifest.txt"

while read -r file want; do
    expect_error "$want" "$osprey" import "$golden/$file" --out "$work/bad.osp"
    [ ! -e "$work/bad.osp" ] || fail "$file left a model behind"
done <"$golden/bad_models.txt"
echo "onnx transformer import: all passed"
