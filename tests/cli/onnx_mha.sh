#!/usr/bin/env bash
# ONNX import of values whose batch leaves the first axis against PyTorch:
# torchvision's VisionTransformer (tiny: 2 layers, 2 heads),
# nn.MultiheadAttention(batch_first=True) and torchvision's SwinTransformer
# (tiny: its window partition merges the batch with the windows, and its
# shifted windows' mask is built from shapes), at opsets 11, 13 and 17 with a
# dynamic batch, exported by tests/golden/make_mha_golden.py (the
# mha_golden fixture). Outputs must match PyTorch's within 1e-4 of the
# largest value at batch sizes 3 and 1; the batch must leave no trace in the
# layers (7x16 per sample). Models that leave the batch where a sample's
# values would mix are refused in one line naming the node.
# usage: onnx_mha.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
golden=${OSP_MHA_GOLDEN:-$PWD/mha_golden}
python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
compare() { $python "$src/tests/golden/compare_npy.py" "$@" || fail "$1 differs from $2"; }

[ -s "$golden/manifest.txt" ] || fail "no golden data in $golden (the mha_golden fixture)"
while read -r model; do
    echo "== $model"
    "$osprey" import "$golden/$model.onnx" --out "$work/$model.osp" || fail "import $model"
    for batch in 3 1; do
        "$osprey" run --model "$work/$model.osp" --input "$golden/$model.input.npy" \
            --output "$work/$model.out.npy" --batch $batch --threads 2
        compare "$work/$model.out.npy" "$golden/$model.output.npy" 1e-4
    done
done <"$golden/manifest.txt"

# The attention core is one [attention] per layer; per sample, 7 x 16.
"$osprey" info "$work/mha17.osp" >"$work/info"
grep -q "attention" "$work/info" || fail "mha17: no [attention] layer"
grep -q "^input *7x16" "$work/info" || fail "info: $(head -3 "$work/info")"

while read -r file want; do
    expect_error "$want" "$osprey" import "$golden/$file" --out "$work/bad.osp"
    [ ! -e "$work/bad.osp" ] || fail "$file left a model behind"
done <"$golden/bad_mha.txt"
echo "onnx mha: all passed"
