#!/usr/bin/env bash
# Fine-tuning an imported transformer end to end (docs/finetune.md): a tiny
# vision transformer built and exported by PyTorch
# (tests/golden/make_finetune_vit.py: torchvision's VisionTransformer, 24x24
# images, patch 4, 2 blocks, 2 heads, width 32, random weights) goes through
# `osprey import`, then `osprey train --init --new-head` on generated images
# of four classes (stripes of three orientations and checkerboards); held
# out, it must classify clearly above chance and above the model before
# fine-tuning. The imported model's gradients are checked against finite
# differences end to end by tests/io/test_onnx_vit_grad.c (the same
# architecture) and test_onnx_swin_grad.c.
# ctest: slow
# usage: finetune_transformer.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
py=/usr/bin/python3
$py -c "import torch, torchvision, PIL" 2>/dev/null || { echo "no python3-torch: skipped"; exit 77; }

$py "$src/tests/golden/make_finetune_vit.py" "$work" --per-class 120
"$osprey" import "$work/vit.onnx" --out "$work/vit.osp" --labels "$work/labels.txt" \
    --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25 >/dev/null
"$osprey" info "$work/vit.osp" >"$work/info"
grep -q "attention" "$work/info" || fail "no [attention] layer in the import: $(head -5 "$work/info")"

# Before: the random model on all the images.
"$osprey" eval --model "$work/vit.osp" --data "$work/data" --threads 2 --json >"$work/before.json"

# Fine-tuning with a new head, AdamW (a transformer's usual optimizer).
"$osprey" train --init "$work/vit.osp" --new-head --data "$work/data" --val-split 0.3 \
    --epochs 20 --batch 32 --optimizer adamw --lr 0.003 --schedule cosine --threads 2 \
    --seed 5 --json --out "$work/ft.osp" >"$work/ft.json" 2>"$work/log"
grep -q "new classifier '[^']*': 4 outputs" "$work/log" || fail "no note of the new head: $(cat "$work/log")"
"$osprey" info "$work/ft.osp" >"$work/info"
grep -q "classes    4: checker, diagonal, horizontal, vertical$" "$work/info" ||
    fail "fine-tuned labels: $(grep classes "$work/info")"
$py - "$work/before.json" "$work/ft.json" <<'PY'
import json, sys
before = json.loads(open(sys.argv[1]).read())["top1"]
after = json.loads(open(sys.argv[2]).read().splitlines()[-1])["val_top1"]
print(f"held-out top-1: before fine-tuning {before:.3f}, after {after:.3f} (chance 0.25)")
assert after >= 0.6 and after >= before + 0.25, (before, after)
PY

# The fine-tuned model runs as any other: eval on its training folder.
"$osprey" eval --model "$work/ft.osp" --data "$work/data" --threads 2 --json >"$work/after.json"
$py -c "import json,sys; t=json.load(open(sys.argv[1]))['top1']; assert t >= 0.6, t" "$work/after.json" ||
    fail "eval of the fine-tuned model: $(cat "$work/after.json")"
echo "finetune transformer: all passed"
