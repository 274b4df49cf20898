#!/usr/bin/env bash
# The example programs of examples/ (the library through its public headers
# alone), run as their reader would run them:
#  - train_spec trains a small LeNet from a spec with its own loop of
#    osp_train_step, saves a model that osprey reads, and fails when the
#    network has not learnt;
#  - classify gives every image of a scripts/make-shapes folder the same
#    top-1 answer as 'osprey eval' (with softmax probabilities), and names
#    each broken file, exit 1;
#  - embed_index indexes a class folder on a spatial and on a flat layer,
#    and the query's nearest neighbour is the query itself;
#  - an installed copy (cmake --install, without libosprey.so) builds each
#    example with nothing but pkg-config --static's flags, and links the
#    whole of libosprey.a with them: osprey.pc names every library it needs.
# usage: examples.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
build=$(cd "$(dirname "$osprey")" && pwd)
examples=$build/examples
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
python=/usr/bin/python3

for e in classify embed_index train_spec; do
    [ -x "$examples/$e" ] || fail "$examples/$e is missing (built by examples/CMakeLists.txt)"
done

# ---- train_spec -------------------------------------------------------------
cat >"$work/lenet-small.cfg" <<'EOF'
# LeNet in small: two convolutions with pooling, two fully connected layers.
[net]
input = 1x16x16
mean = 0.5
std = 0.25

[conv]
name = conv1
filters = 8
size = 5
pad = 2
[relu]
[maxpool]
size = 2

[conv]
name = conv2
filters = 16
size = 3
pad = 1
[relu]
[maxpool]
size = 2

[fc]
name = fc1
outputs = 32
[relu]
[fc]
name = fc2
outputs = 4
EOF
"$examples/train_spec" "$work/lenet-small.cfg" "$work/small.osp" >"$work/train.out" 2>"$work/train.err" ||
    fail "train_spec: $(cat "$work/train.out" "$work/train.err")"
[ "$(grep -c '^step ' "$work/train.out")" -eq 8 ] || fail "train_spec: not a loss every 25 of 200 steps: $(cat "$work/train.out")"
$python - "$work/train.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
losses = [float(v) for v in re.findall(r"^step +\d+ +loss ([0-9.]+)", text, re.M)]
assert losses[-1] < losses[0] / 2, losses
top1 = float(re.search(r"held-out top-1 ([0-9.]+) \(chance 0.250\) on 1024 samples", text).group(1))
assert top1 > 0.8, text
PY
"$osprey" info "$work/small.osp" >"$work/info.txt"
grep -q "^input *1x16x16" "$work/info.txt" || fail "the saved model: $(head -3 "$work/info.txt")"
grep -q "^parameters *9732" "$work/info.txt" || fail "the saved model: $(head -5 "$work/info.txt")"
# one step learns nothing: the accuracy check must say so
expect_error "did not learn" "$examples/train_spec" "$work/lenet-small.cfg" "$work/one.osp" 1
printf '[net]\ninput = 1x16x16\n[conv]\nfilters = 0\n' >"$work/bad.cfg"
expect_error "bad.cfg:4" "$examples/train_spec" "$work/bad.cfg" "$work/bad.osp"

# ---- a model of photos: osprey train on make-shapes ---------------------
# five classes of shapes, 30 images each, five broken files among them
$python "$src/scripts/make-shapes" "$work/shapes" --per-class 30 --size 32,48 \
    --spec "$work/shapes.cfg" >/dev/null
"$osprey" train --net "$work/shapes.cfg" --data "$work/shapes" --epochs 20 --batch 16 --lr 0.02 \
    --schedule cosine --crop-scale 0.5,1 --threads 2 --seed 3 --quiet --out "$work/shapes.osp" \
    2>"$work/err" || fail "osprey train: $(cat "$work/err")"
"$osprey" eval --model "$work/shapes.osp" --data "$work/shapes" --json >"$work/eval.json" 2>"$work/err" ||
    fail "osprey eval: $(cat "$work/err")"

# ---- classify -----------------------------------------------------------
# every file of every class, the broken ones too
status=0
"$examples/classify" "$work/shapes.osp" "$work"/shapes/*/* >"$work/classify.out" 2>"$work/classify.err" || status=$?
[ "$status" -eq 1 ] || fail "classify with broken files exited $status, expected 1"
for f in circle/broken-truncated.jpg cross/broken-empty.png square/broken-text.jpg \
         star/broken-bomb.png triangle/broken-garbage.webp; do
    grep -q "^classify: $work/shapes/$f: " "$work/classify.err" || fail "classify did not name $f: $(cat "$work/classify.err")"
done
[ "$(wc -l <"$work/classify.err")" -eq 5 ] || fail "classify: more than a line per broken file: $(cat "$work/classify.err")"
# the five classes by name with probabilities that sum to 1, likeliest
# first; the top-1 answers score what osprey eval scores
$python - "$work/classify.out" "$work/eval.json" <<'PY'
import json, os, sys
names = {"circle", "cross", "square", "star", "triangle"}
blocks, cur = [], None
for line in open(sys.argv[1]):
    if not line.startswith(" "):
        cur = [line.strip(), []]
        blocks.append(cur)
    else:
        p, label = line.split()
        cur[1].append((float(p), label))
right = 0
for path, top in blocks:
    assert {l for _, l in top} == names and len(top) == 5, (path, top)
    ps = [p for p, _ in top]
    assert ps == sorted(ps, reverse=True) and abs(sum(ps) - 1) < 2e-3, (path, top)
    right += top[0][1] == os.path.basename(os.path.dirname(path))
ev = json.load(open(sys.argv[2]))
assert len(blocks) == ev["count"] == 150, (len(blocks), ev)
assert abs(right / len(blocks) - ev["top1"]) < 1e-6, (right, ev)
assert ev["top1"] > 0.4, ev
PY
# the good images alone: exit 0
"$examples/classify" "$work/shapes.osp" "$work/shapes/circle/0000.jpg" "$work/shapes/star/0001.png" \
    >"$work/two.out" || fail "classify on two good images failed"
[ "$(grep -c '^ ' "$work/two.out")" -eq 10 ] || fail "classify: not five lines an image: $(cat "$work/two.out")"
expect_error "nope.osp" "$examples/classify" "$work/nope.osp" "$work/shapes/circle/0000.jpg"

# ---- embed_index ----------------------------------------------------------
# a spatial layer (32x6x6: averaged to 32 floats) and a flat one (64 floats)
for spec in "relu7 32 circle" "relu10 64 cross"; do
    read -r layer dim class <<<"$spec"
    idx="$work/$class.idx"
    "$examples/embed_index" "$work/shapes.osp" "$layer" "$work/shapes/$class" "$idx" \
        >"$work/embed.out" 2>"$work/embed.err" || fail "embed_index $layer: $(cat "$work/embed.err")"
    grep -q "^30 vectors of $dim floats (layer $layer) in $idx, 1 unreadable" "$work/embed.out" ||
        fail "embed_index $layer: $(cat "$work/embed.out")"
    grep -q "skipped $work/shapes/$class/broken-" "$work/embed.err" || fail "embed_index did not name the broken file"
    # the first image (by name) is the query and its own nearest neighbour
    grep -q "^nearest to 0000.jpg:" "$work/embed.out" || fail "embed_index: $(cat "$work/embed.out")"
    read -r rank name dist < <(grep -A1 "^nearest to" "$work/embed.out" | tail -1)
    [ "$rank $name" = "1 0000.jpg" ] || fail "embed_index $layer: the first hit is not the query: $(cat "$work/embed.out")"
    $python -c "import sys; assert abs(float(sys.argv[1])) < 1e-4, sys.argv[1]" "$dist" ||
        fail "embed_index $layer: the query is at distance $dist from itself"
    [ "$(grep -c '^  [0-9] ' "$work/embed.out")" -eq 3 ] || fail "embed_index: not 3 hits: $(cat "$work/embed.out")"
    # the file is an index that osprey reads: 30 vectors, ids 0..29 by name
    "$osprey" index info "$idx" >"$work/index.txt"
    grep -q "flat index, metric l2, dim $dim" "$work/index.txt" || fail "index info: $(cat "$work/index.txt")"
    grep -q "vectors 30 .*next id 30" "$work/index.txt" || fail "index info: $(cat "$work/index.txt")"
done
expect_error "no layer 'nolayer'" "$examples/embed_index" "$work/shapes.osp" nolayer "$work/shapes/circle" "$work/x.idx"

# ---- an installed copy, linked statically through pkg-config ----------------
if ! command -v pkg-config >/dev/null; then
    echo "cli examples: the examples passed; pkg-config is missing, so the installed copy was not tried"
    exit 77
fi
cmake --install "$build" --prefix "$work/inst" >/dev/null
# so that -losprey can only be libosprey.a
find "$work/inst" -name 'libosprey.so*' -delete
PKG_CONFIG_PATH=$(dirname "$(find "$work/inst" -name osprey.pc)")
export PKG_CONFIG_PATH
flags=()
# a sanitized build's library needs the sanitizers' runtime in the program
if grep -q "^OSP_SANITIZE:BOOL=ON" "$build/CMakeCache.txt"; then flags=("-fsanitize=address,undefined"); fi
# each example stands alone: no flags but the project's warnings and pkg-config's
for e in classify embed_index train_spec; do
    # shellcheck disable=SC2046 # pkg-config's flags are meant to be split
    cc -std=c11 -Wall -Wextra -Wshadow -Werror "${flags[@]}" "$src/examples/$e.c" -o "$work/$e" \
        $(pkg-config --cflags --static --libs osprey) 2>"$work/cc.err" ||
        fail "$e.c with pkg-config --static: $(cat "$work/cc.err")"
done
# and every object of libosprey.a, not only those an example calls: each
# library the archive needs must be in osprey.pc
libs=$(pkg-config --static --libs osprey)
# shellcheck disable=SC2046,SC2086 # pkg-config's flags are meant to be split
cc "${flags[@]}" "$src/examples/classify.c" -o "$work/classify-whole" $(pkg-config --cflags osprey) \
    ${libs/-losprey/-Wl,--whole-archive -losprey -Wl,--no-whole-archive} 2>"$work/cc.err" ||
    fail "all of libosprey.a with pkg-config --static: $(grep -m5 'undefined reference' "$work/cc.err" || cat "$work/cc.err")"
"$work/classify" "$work/shapes.osp" "$work/shapes/circle/0000.jpg" >"$work/installed.out" ||
    fail "classify linked through pkg-config failed"
cmp -s "$work/installed.out" <(head -6 "$work/two.out") || fail "classify built from the installed copy answered differently"
echo "cli examples: all checks passed"
