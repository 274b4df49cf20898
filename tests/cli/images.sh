#!/usr/bin/env bash
# End to end on image folders: scripts/make-shapes data with unreadable
# files mixed in; dataset check; training that learns, skips and names the
# bad files, and is the same for any number of decoding workers; eval; list
# files; and clear errors (exit 1, a line, no crash) for bad input.
# ctest: slow
# usage: images.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
# The broken files among the images are named in warnings.
error_lines() { grep -cv '^warning: ' "$work/err"; }

# circles and crosses (two classes learn in seconds), five broken files among them
/usr/bin/python3 "$src/scripts/make-shapes" "$work/shapes" --per-class 100 --size 32,64 \
    --spec "$work/shapes.cfg" >/dev/null
rm -rf "$work/shapes/square" "$work/shapes/star" "$work/shapes/triangle"
mkdir -p "$work/shapes/cross/more"
cp "$src/scripts/make-shapes" "$work/shapes/cross/more/notes.txt" # not an image name: left out

"$osprey" dataset --help | grep "usage: osprey dataset" >/dev/null || fail "dataset --help"
"$osprey" train --help | grep -- "--val-split" >/dev/null || fail "train --help lacks --val-split"

# check: counts per class and the two unreadable files, by name
"$osprey" dataset check "$work/shapes" >"$work/check.txt"
grep -q "202 samples in 2 classes, 2 unreadable" "$work/check.txt" || fail "check: $(head -1 "$work/check.txt")"
grep -q "unreadable: .*circle/broken-truncated.jpg: truncated JPEG" "$work/check.txt" || fail "check: truncated"
grep -q "unreadable: .*cross/broken-empty.png: empty file" "$work/check.txt" || fail "check: empty"
grep -q "left out: .*cross/more/notes.txt: not a .jpg, .jpeg, .png or .webp name" "$work/check.txt" ||
    fail "check: the file left out is not named"
"$osprey" dataset check "$work/shapes" --json >"$work/check.json" 2>"$work/check.err"
/usr/bin/python3 - "$work/check.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["samples"] == 202 and r["unreadable"] == 2 and r["per_class"] == {"circle": 101, "cross": 101}, r
assert r["jpeg"] + r["png"] + r["webp"] == 200, r
# the unreadable files and the files left out, each with the reason
bad = sorted((f["path"].split("/shapes/")[1], f["reason"]) for f in r["unreadable_files"])
assert [p for p, _ in bad] == ["circle/broken-truncated.jpg", "cross/broken-empty.png"], bad
assert bad[0][1].startswith("truncated JPEG") and bad[1][1] == "empty file", bad
assert r["left_out"] == 1 and len(r["left_out_files"]) == 1, r
assert r["left_out_files"][0]["path"].endswith("shapes/cross/more/notes.txt"), r["left_out_files"]
assert "not a .jpg" in r["left_out_files"][0]["reason"], r["left_out_files"]
PY
# the file left out for its name is named in the warning, with the count
grep -q "^warning: .*shapes: 1 file left out (names without .jpg, .jpeg, .png or .webp): .*cross/more/notes.txt$" \
    "$work/check.err" || fail "left-out file not named: $(cat "$work/check.err")"
# a photo or a model given as DATA is named for what it is
expect_error "0000.jpg is a JPEG image, not a dataset" "$osprey" dataset check "$work/shapes/circle/0000.jpg"

# training learns, names each unreadable file once, and sums them up
train=(--net "$work/shapes.cfg" --data "$work/shapes" --val-split 0.25 --epochs 15 --batch 16
       --lr 0.01 --schedule cosine --crop-scale 0.5,1 --threads 2 --seed 3)
"$osprey" train "${train[@]}" --workers 1 --json --out "$work/a.osp" >"$work/a.json" 2>"$work/a.err"
[ "$(grep -c "skipped .*broken-truncated.jpg: truncated JPEG" "$work/a.err")" -eq 1 ] || fail "truncated file not named once: $(cat "$work/a.err")"
grep -q "skipped .*broken-empty.png: empty file" "$work/a.err" || fail "empty file not named"
grep -q "2 unreadable files were skipped" "$work/a.err" || fail "no summary of skipped files"
/usr/bin/python3 - "$work/a.json" <<'PY'
import json, sys
last = [json.loads(l) for l in open(sys.argv[1])][-1]
assert last["epoch"] == 15 and last["val_top1"] > 0.65, last
PY
# the same run with other worker counts, bit for bit
"$osprey" train "${train[@]}" --workers 2 --prefetch 3 --quiet --out "$work/b.osp" 2>/dev/null
"$osprey" train "${train[@]}" --workers 0 --quiet --out "$work/c.osp" 2>/dev/null
cmp "$work/a.osp" "$work/b.osp" || fail "2 workers changed the model"
cmp "$work/a.osp" "$work/c.osp" || fail "decoding on the training threads changed the model"

# eval: the unreadable files are left out, and counted
"$osprey" eval --model "$work/a.osp" --data "$work/shapes" --json >"$work/eval.json" 2>"$work/eval.err"
/usr/bin/python3 - "$work/eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["count"] == 200 and r["skipped"] == 2 and r["top1"] > 0.65, r
PY

# a list file of paths relative to it; numeric labels
(cd "$work" && for f in shapes/circle/00[0-3]*.*; do printf '%s\t0\n' "$f"; done
 for f in shapes/cross/00[0-3]*.*; do printf '%s\t1\n' "$f"; done) >"$work/list.txt"
"$osprey" train --net "$work/shapes.cfg" --data "$work/list.txt" --epochs 1 --batch 8 --threads 2 \
    --quiet --augment none --resize letterbox --out "$work/l.osp" 2>/dev/null
[ -f "$work/l.osp" ] || fail "training on a list file"
"$osprey" dataset bench "$work/list.txt" --input 3x24x24 --passes 2 --threads 2 | grep -q "images/s" || fail "bench"

# bad input: one line, exit 1
expect_error "no sample of the" "$osprey" train "${train[@]}" --quiet --max-pixels 100
expect_error "--val-split must be" "$osprey" train "${train[@]}" --quiet --val-split 2
expect_error "--augment takes" "$osprey" train "${train[@]}" --quiet --augment crop,spin
expect_error "--resize must be" "$osprey" train "${train[@]}" --quiet --resize squash
expect_error "--max-pixels must be" "$osprey" train "${train[@]}" --quiet --max-pixels lots
expect_error "not both" "$osprey" train "${train[@]}" --quiet --val "$work/shapes"
expect_error "multi-scale" "$osprey" train "${train[@]}" --quiet --multiscale 8,16
printf 'a.png 1\n' >"$work/bad-list.txt"
expect_error "bad-list.txt:1: expected path<TAB>label" "$osprey" train --net "$work/shapes.cfg" --data "$work/bad-list.txt" --quiet
mkdir -p "$work/other/circle" "$work/other/hexagon"
cp "$work/shapes/circle/0000.jpg" "$work/other/circle/"
cp "$work/shapes/circle/0000.jpg" "$work/other/hexagon/"
expect_error "class 'hexagon'" "$osprey" eval --model "$work/a.osp" --data "$work/other"
expect_error "no class folders" "$osprey" dataset check "$work/shapes/circle"
# a grey network takes the images as grey
"$osprey" train --net "$src/nets/lenet.cfg" --data "$work/list.txt" --epochs 1 --threads 2 --quiet 2>/dev/null
echo "cli images: all checks passed"
