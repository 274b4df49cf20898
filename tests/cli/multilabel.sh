#!/usr/bin/env bash
# Multi-label training end to end (docs/multilabel.md): a generated set of
# images holding 0-3 of {circle, square, triangle} each, labelled by a list
# file of path<TAB>label,label lines (training, test) and by JSON Lines
# (validation); 'osprey train' picks sigmoid + binary cross-entropy by
# itself, stores per-label thresholds chosen on the validation set, and the
# model reaches per-label F1 >= 0.9 on held-out images ('osprey eval
# --json'); --save-thresholds; and clear errors, before training, for bad
# input.
# ctest: slow
# usage: multilabel.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
py=/usr/bin/python3
$py -c "import PIL" 2>/dev/null || { echo "python3-pil is missing: skipped"; exit 77; }

d=$work/shapes
$py "$src/tests/cli/make_multilabel.py" "$d" --train 2000 --val 300 --test 300
grep -qP "\t$" "$d/train.txt" || fail "no negative (empty label list) in the generated set"

"$osprey" train --help | grep -- "--loss" >/dev/null || fail "train --help lacks --loss"

# 'dataset check' counts each label, and the images without any.
"$osprey" dataset check "$d/train.txt" --threads 2 >"$work/check"
grep -q "2000 samples with 3 labels (multi-label), 0 unreadable" "$work/check" ||
    fail "dataset check: $(head -1 "$work/check")"
want=$(cut -f2 "$d/train.txt" | grep -v '^#' | grep -c '^$' || true)
grep -qE "^  \(no labels\) +$want +0$" "$work/check" || fail "dataset check negatives: $(cat "$work/check")"

# Training: the loss is chosen from the data.
"$osprey" train --net "$d/net.cfg" --data "$d/train.txt" --val "$d/val.jsonl" --epochs 20 \
    --batch 32 --lr 0.05 --schedule cosine --augment flip --threads 2 --seed 1 \
    --out "$work/m.osp" --json >"$work/train.json" 2>"$work/log"
grep -q "multi-label data: 3 labels, sigmoid + binary cross-entropy" "$work/log" ||
    fail "training did not say it is multi-label: $(head -3 "$work/log")"
"$osprey" info "$work/m.osp" >"$work/info"
grep -q "classes    3: circle, square, triangle$" "$work/info" || fail "labels: $(grep classes "$work/info")"
grep -q "scores     multi-label" "$work/info" || fail "info does not say multi-label"
grep -q "(default)" "$work/info" && fail "no thresholds were stored from the validation set"
"$osprey" info --json "$work/m.osp" | $py -c '
import json, sys
m = json.load(sys.stdin)
assert m["multi_label"] is True and len(m["thresholds"]) == 3, m
assert all(0 < t < 1 for t in m["thresholds"]), m["thresholds"]'
# The model file says so in its metadata, for other tools.
$py - "$work/m.osp" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    meta = json.loads(f.read(n))["__metadata__"]
assert meta["multi_label"] == "1", meta.keys()
assert len(json.loads(meta["thresholds"])) == 3
PY

# Held-out images: per-label F1 >= 0.9 at the stored thresholds.
"$osprey" eval --model "$work/m.osp" --data "$d/test.txt" --threads 2 --json >"$work/eval.json"
$py - "$work/eval.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
assert e["multi_label"] and e["count"] == 300, e
for l in e["labels"]:
    print(f'{l["label"]:9s} AP {l["ap"]:.3f}  P {l["precision"]:.3f}  R {l["recall"]:.3f}  '
          f'F1 {l["f1"]:.3f}  threshold {l["threshold"]:.3f}')
    assert l["f1"] >= 0.9, l
    assert l["positives"] > 0
assert e["map"] >= 0.95 and e["micro_f1"] >= 0.9 and e["macro_f1"] >= 0.9, e
print(f'mAP {e["map"]:.4f}  micro-F1 {e["micro_f1"]:.4f}  macro-F1 {e["macro_f1"]:.4f}')
PY
# osprey tag gives every label over its threshold, as sigmoids: F1 from tags.jsonl
"$osprey" tag --model "$work/m.osp" --out "$work/tags" --threads 2 --quiet "$d/test.txt"
$py - "$work/tags/tags.jsonl" "$d/test.txt" "$work/m.osp" <<'PY'
import json, struct, sys
rows = {r["path"].split("/")[-1]: r for r in map(json.loads, open(sys.argv[1]))}
truth = {}
for line in open(sys.argv[2]):
    if not line.strip() or line.startswith("#"): continue
    path, _, labels = line.rstrip("\n").partition("\t")
    truth[path.split("/")[-1]] = {l for l in labels.split(",") if l}
raw = open(sys.argv[3], "rb").read()
meta = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
names, th = json.loads(meta["labels"]), json.loads(meta["thresholds"])
assert len(rows) == len(truth) == 300, (len(rows), len(truth))
tp = fp = fn = 0
for name, want in truth.items():
    got = {l["description"] for l in rows[name]["labels"]}
    for l in rows[name]["labels"]:
        assert l["score"] >= th[names.index(l["description"])] - 1e-6, l
    tp += len(got & want); fp += len(got - want); fn += len(want - got)
f1 = 2 * tp / (2 * tp + fp + fn)
assert f1 >= 0.9, f1
print(f"tag: micro-F1 {f1:.4f} over 300 images")
PY
"$osprey" eval --model "$work/m.osp" --data "$d/test.txt" --threads 2 >"$work/eval.txt"
grep -q "^mAP .* micro-F1 .* macro-F1" "$work/eval.txt" || fail "eval's text: $(cat "$work/eval.txt")"
grep -q "^triangle " "$work/eval.txt" || fail "eval's text lacks per-label lines"

# Thresholds re-chosen on other data, into a copy of the model.
"$osprey" eval --model "$work/m.osp" --data "$d/val.jsonl" --threads 2 \
    --save-thresholds "$work/m2.osp" >/dev/null 2>&1 || fail "--save-thresholds failed"
"$osprey" info --json "$work/m2.osp" | $py -c '
import json, sys
m = json.load(sys.stdin)
assert m["multi_label"] is True and len(m["thresholds"]) == 3, m'

# The training log is JSON (no top-5 for multi-label: null).
tail -1 "$work/train.json" | $py -c '
import json, sys
p = json.loads(sys.stdin.read())
assert p["val_top5"] is None and p["val_top1"] > 0.8, p'

# A stopped multi-label run resumes bit for bit (model files equal).
small=(--net "$d/net.cfg" --data "$d/val.jsonl" --epochs 2 --batch 32 --lr 0.05 --augment flip
       --threads 2 --seed 3 --quiet)
"$osprey" train "${small[@]}" --out "$work/full.osp"
"$osprey" train "${small[@]}" --out "$work/part.osp" --stop-after 7
"$osprey" train --resume "$work/part.osp.ckpt" --data "$d/val.jsonl" --augment flip --threads 2 \
    --quiet --out "$work/part.osp"
cmp -s "$work/full.osp" "$work/part.osp" || fail "the resumed multi-label run differs"

# Hogwild: workers share the weights, each with its multi-hot batches.
"$osprey" train "${small[@]}" --hogwild --val "$d/val.jsonl" --out "$work/hw.osp" --json >"$work/hw.json"
"$osprey" info --json "$work/hw.osp" | $py -c '
import json, sys
m = json.load(sys.stdin)
assert m["multi_label"] is True and len(m["thresholds"]) == 3, m'
$py - "$work/hw.json" <<'PY'
import json, sys
p = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert len(p) == 2 and p[0]["hogwild_workers"] == 2, p
assert p[1]["loss"] < p[0]["loss"] and p[1]["val_top5"] is None, p
PY
# MPI: 2 ranks with half the batch each take the steps one process takes
# (weights and optimizer state within 1e-5), as single-label runs do; the
# network without its batch norms, whose batch statistics are per rank.
if command -v mpirun >/dev/null; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    grep -v '^\[batchnorm\]' "$d/net.cfg" >"$work/nobn.cfg"
    mpi=(--net "$work/nobn.cfg" --data "$d/val.jsonl" --epochs 1 --lr 0.05 --seed 5 --threads 1 --quiet
         --stop-after 4)
    "$osprey" train "${mpi[@]}" --batch 32 --checkpoint "$work/one.ckpt"
    mpirun --oversubscribe -np 2 --bind-to none "$osprey" train "${mpi[@]}" --batch 16 --checkpoint "$work/two.ckpt"
    $py "$src/tests/cli/weights_diff.py" "$work/one.ckpt" "$work/two.ckpt" --optim --max 1e-5 ||
        fail "2 ranks trained the multi-label model otherwise than one process"
    $py - "$work/two.ckpt" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
meta = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
assert meta["multi_label"] == "1" and json.loads(meta["config"])["loss"] == "bce", meta.get("config")
PY
else
    echo "mpirun is missing: the multi-label MPI check is skipped"
fi

# Bad input: clear errors before training starts.
common=(--net "$d/net.cfg" --epochs 1 --batch 32 --threads 2 --quiet)
expect_error "multi-label data .* --loss bce" \
    "$osprey" train "${common[@]}" --data "$d/train.txt" --loss softmax
printf 'img/00000.png\tcircle\nimg/00001.png\tsquare\nimg/00002.png\ttriangle\n' >"$d/single.txt"
expect_error "one label per image: --loss bce is for multi-label" \
    "$osprey" train "${common[@]}" --data "$d/single.txt" --loss bce
expect_error "--loss must be auto, softmax or bce" \
    "$osprey" train "${common[@]}" --data "$d/train.txt" --loss hinge
# an empty label list in a single-label list file
printf 'img/00000.png\tcircle\nimg/00001.png\t\n' >"$d/empty.txt"
expect_error "empty.txt:2: empty label" \
    "$osprey" train "${common[@]}" --data "$d/empty.txt"
# labels the model (or the training data) does not know
printf 'img/00000.png\tcircle,star\n' >"$d/star.txt"
expect_error "label 'star' .* is not one of the 3 labels" \
    "$osprey" eval --model "$work/m.osp" --data "$d/star.txt"
expect_error "label 'star' .* is not one of the 3 labels" \
    "$osprey" train "${common[@]}" --data "$d/train.txt" --val "$d/star.txt"
# a single-label model on multi-label data
"$osprey" train --net "$d/net.cfg" --data "$d/single.txt" --epochs 1 --batch 2 --threads 2 \
    --quiet --out "$work/single.osp" 2>/dev/null || fail "single-label training failed"
expect_error "the model is single-label" \
    "$osprey" eval --model "$work/single.osp" --data "$d/test.txt"
# broken JSON Lines
printf '{"path": "img/00000.png", "labels": ["circle"]}\n{"path": 3}\n' >"$d/bad.jsonl"
expect_error "bad.jsonl:2: no \"path\" string" \
    "$osprey" train "${common[@]}" --data "$d/bad.jsonl"
echo "multi-label: ok"
