#!/usr/bin/env bash
# End to end: osprey hash train / apply / info. On a generated clustered set
# (labels = clusters, with label-free nuisance directions), learned 64-bit
# codes searched with the binary index find same-label neighbours clearly
# better than the LSH index at 64 bits. Then a hash trained from an output
# folder of 'osprey embed' (labels from parent folders and from a list
# file), and clear errors for bad input.
# usage: hash.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
py=/usr/bin/python3

# 3000 x 64 base with 24 labels, 300 queries: the bench's set, smaller.
$py - "$work" <<'PY'
import sys, numpy as np
w = sys.argv[1]
rng = np.random.default_rng(11)
C, D, N, Q = 24, 64, 3000, 300
centres = 0.7 * rng.standard_normal((C, D))
lab = rng.integers(0, C, N + Q)
dirs = np.linalg.qr(rng.standard_normal((D, 16)))[0].T
x = (centres[lab] + rng.standard_normal((N + Q, D)) + 2.0 * rng.standard_normal((N + Q, 16)) @ dirs).astype(np.float32)
np.save(f"{w}/base.npy", x[:N]); np.save(f"{w}/q.npy", x[N:])
np.save(f"{w}/labels.npy", lab[:N].astype(np.int64)); np.save(f"{w}/qlabels.npy", lab[N:].astype(np.int64))
np.save(f"{w}/labels32.npy", lab[:N].astype(np.int32))
np.save(f"{w}/short.npy", lab[:N - 1].astype(np.int64))
np.save(f"{w}/flabels.npy", lab[:N].astype(np.float32))
np.save(f"{w}/one.npy", np.zeros(N, dtype=np.int64))
np.save(f"{w}/q32.npy", x[N:, :32])
bad = x[:N].copy(); bad[7, 3] = np.nan
np.save(f"{w}/nan.npy", bad)
PY

# The share of the 10 results of each query that have its label.
same_label() {
    $py - "$1" "$work/labels.npy" "$work/qlabels.npy" <<'PY'
import sys, numpy as np
r, lab, ql = np.load(sys.argv[1]), np.load(sys.argv[2]), np.load(sys.argv[3])
print((np.where(r >= 0, lab[np.maximum(r, 0)], -1) == ql[:, None]).mean())
PY
}
atleast() { $py -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" "$1" "$2"; }

for sub in train apply; do
    "$osprey" hash "$sub" --help | grep -q "usage: osprey hash $sub" || fail "hash $sub --help"
done
"$osprey" hash --help | grep -q "usage: osprey hash train" || fail "hash --help"
"$osprey" --help | grep -q "hash" || fail "osprey --help does not list hash"

# learned 64-bit codes through the binary index
"$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" --bits 64 --out "$work/h64.osh" \
    --threads 2 --json >"$work/train.json"
$py - "$work/train.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["bits"] == 64 and j["dim"] == 64 and j["vectors"] == 3000 and j["labels"] == 24, j
assert j["final_loss"] < 0.7 * j["initial_loss"], j
PY
"$osprey" hash info "$work/h64.osh" | grep -q "64 bits from 64-d vectors" || fail "hash info"
"$osprey" hash info "$work/h64.osh" --json | grep -q '"bits": 64' || fail "hash info --json"
"$osprey" hash apply --hash "$work/h64.osh" --vectors "$work/base.npy" --out "$work/bc.npy"
"$osprey" hash apply --hash "$work/h64.osh" --vectors "$work/q.npy" --out "$work/qc.npy"
$py -c "import numpy as np,sys; a=np.load(sys.argv[1]); assert a.dtype==np.uint8 and a.shape==(3000,8), (a.dtype,a.shape)" "$work/bc.npy"
"$osprey" index build --type binary --input "$work/bc.npy" --out "$work/learned.idx" --quiet
"$osprey" index search --index "$work/learned.idx" --queries "$work/qc.npy" -k 10 --out "$work/r.npy" --threads 2 >/dev/null
learned=$(same_label "$work/r.npy")

# the same codes again: deterministic for a seed (and int32 labels take the same path)
"$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels32.npy" --bits 64 --out "$work/h64b.osh" \
    --threads 2 --quiet
"$osprey" hash apply --hash "$work/h64b.osh" --vectors "$work/base.npy" --out "$work/bc2.npy"
cmp -s "$work/bc.npy" "$work/bc2.npy" || fail "two trainings with one seed gave different codes"

# the LSH index at 64 bits, its two shapes (tables x key bits)
best=0
for tb in "4 16" "8 8"; do
    set -- $tb
    "$osprey" index build --type lsh --input "$work/base.npy" --out "$work/lsh.idx" --tables "$1" --nbits "$2" \
        --threads 2 --quiet
    "$osprey" index search --index "$work/lsh.idx" --queries "$work/q.npy" -k 10 --out "$work/r.npy" \
        --threads 2 >/dev/null
    s=$(same_label "$work/r.npy")
    atleast "$best" "$s" || best=$s
done
echo "same-label recall@10 at 64 bits: learned $learned, LSH index (best of 4x16, 8x8) $best"
$py -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) + 0.15 else 1)" "$learned" "$best" ||
    fail "learned codes ($learned) do not beat LSH ($best) by 0.15"

# 128 bits works too
"$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" --bits 128 --out "$work/h128.osh" \
    --epochs 5 --threads 2 --quiet
"$osprey" hash apply --hash "$work/h128.osh" --vectors "$work/q.npy" --out "$work/qc128.npy"
$py -c "import numpy as np,sys; a=np.load(sys.argv[1]); assert a.shape==(300,16)" "$work/qc128.npy"

# bad input: one line, exit 1
expect_error "multiple of 8" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" --bits 12 --out "$work/x.osh"
expect_error "from 8 to 1024" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" --bits 2048 --out "$work/x.osh"
expect_error "from 8 to 1024" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" --bits 0 --out "$work/x.osh"
expect_error "give its integer labels" "$osprey" hash train --vectors "$work/base.npy" --bits 64 --out "$work/x.osh"
expect_error "expected 3000 integer labels" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/short.npy" --bits 64 --out "$work/x.osh"
expect_error "expected 3000 integer labels" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/flabels.npy" --bits 64 --out "$work/x.osh"
expect_error "same label" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/one.npy" --bits 64 --out "$work/x.osh"
expect_error "row 7" "$osprey" hash train --vectors "$work/nan.npy" --labels "$work/labels.npy" --bits 64 --out "$work/x.osh"
expect_error "needs --vectors, --bits and --out" "$osprey" hash train --vectors "$work/base.npy"
expect_error "is a folder" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" --bits 64 --out "$work"
expect_error "takes 64" "$osprey" hash apply --hash "$work/h64.osh" --vectors "$work/q32.npy" --out "$work/x.npy"
expect_error "row 7" "$osprey" hash apply --hash "$work/h64.osh" --vectors "$work/nan.npy" --out "$work/x.npy"
expect_error "learned.idx" "$osprey" hash apply --hash "$work/learned.idx" --vectors "$work/q.npy" --out "$work/x.npy"
printf 'garbage' >"$work/bad.osh"
expect_error "bad.osh" "$osprey" hash info "$work/bad.osh"
expect_error "unknown subcommand" "$osprey" hash frobnicate

# from an output folder of 'osprey embed': labels from parent folders
$py "$src/scripts/make-shapes" "$work/photos" --per-class 24 --size 24,40 --no-broken --spec "$work/shapes.cfg" >/dev/null
"$osprey" train --net "$work/shapes.cfg" --data "$work/photos" --epochs 1 --batch 32 --threads 2 \
    --quiet --out "$work/m.osp" 2>/dev/null
"$osprey" embed --model "$work/m.osp" --layer relu7 --out "$work/emb" --threads 2 --quiet "$work/photos" 2>/dev/null
"$osprey" hash train --vectors "$work/emb" --bits 32 --out "$work/f.osh" --epochs 5 --threads 2 --json >"$work/f.json"
grep -q '"labels": 5' "$work/f.json" || fail "labels from parent folders: $(cat "$work/f.json")"
"$osprey" hash info "$work/f.osh" | grep -q "of layer relu7" || fail "the folder's layer is not recorded"
"$osprey" hash apply --hash "$work/f.osh" --vectors "$work/emb" --out "$work/fc.npy" --ids-out "$work/fids.npy"
"$osprey" index build --type binary --input "$work/fc.npy" --ids "$work/fids.npy" --out "$work/f.idx" --quiet
# a list file path<TAB>label: round shapes against the rest
$py - "$work/emb/catalog.db" "$work/list.tsv" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
with open(sys.argv[2], "w") as f:
    for (p,) in db.execute("SELECT path FROM images WHERE status = 'ok' ORDER BY path"):
        f.write(f"{p}\t{'round' if '/circle/' in p else 'angular'}\n")
PY
"$osprey" hash train --vectors "$work/emb" --labels "$work/list.tsv" --bits 16 --out "$work/l.osh" --epochs 3 \
    --threads 2 --json >"$work/l.json"
grep -q '"labels": 2' "$work/l.json" || fail "labels from a list file: $(cat "$work/l.json")"
# or a .npy of labels in the folder's row order
$py - "$work/emb/catalog.db" "$work/rowlabels.npy" <<'PY'
import sqlite3, sys, numpy as np
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = dict(db.execute("SELECT row, path FROM images WHERE row IS NOT NULL"))
np.save(sys.argv[2], np.array([int("/star/" in rows[i]) for i in range(len(rows))], dtype=np.int64))
PY
"$osprey" hash train --vectors "$work/emb" --labels "$work/rowlabels.npy" --bits 8 --out "$work/r.osh" --epochs 2 \
    --threads 2 --json >"$work/r.json"
grep -q '"labels": 2' "$work/r.json" || fail "row labels from a .npy: $(cat "$work/r.json")"
head -n 3 "$work/list.tsv" >"$work/partial.tsv"
expect_error "gives no label for" "$osprey" hash train --vectors "$work/emb" --labels "$work/partial.tsv" --bits 16 --out "$work/x.osh"
printf 'no tab here\n' >"$work/notab.tsv"
expect_error "not path<TAB>label" "$osprey" hash train --vectors "$work/emb" --labels "$work/notab.tsv" --bits 16 --out "$work/x.osh"
expect_error "is a file" "$osprey" hash apply --hash "$work/f.osh" --vectors "$work/q.npy" --out "$work/x.npy" --ids-out "$work/i.npy"

# stored in the model: --out NAME.osp writes a copy of the folder's model with
# the head (its layer and normalisation), which 'embed --binary' then uses
"$osprey" hash train --vectors "$work/emb" --bits 32 --out "$work/mh.osp" --epochs 5 --threads 2 --quiet
"$osprey" hash train --vectors "$work/emb" --bits 32 --out "$work/mh.osh" --epochs 5 --threads 2 --quiet
"$osprey" info "$work/mh.osp" | grep -q "^hash *32 bits from layer relu7 (32 values)" ||
    fail "info does not show the hash head: $("$osprey" info "$work/mh.osp" | head -6)"
"$osprey" info "$work/mh.osp" --json | $py -c '
import json, sys
h = json.load(sys.stdin)["hash"]
assert h == {"bits": 32, "dim": 32, "layer": "relu7", "normalize": False, "method": "dsh"}, h'
"$osprey" info "$work/m.osp" --json | $py -c 'import json, sys; assert "hash" not in json.load(sys.stdin)'
"$osprey" hash info "$work/mh.osp" --json | grep -q '"layer": "relu7", "method": "dsh", "normalize": false' ||
    fail "hash info of a model's head: $("$osprey" hash info "$work/mh.osp" --json)"
"$osprey" embed --model "$work/mh.osp" --binary --out "$work/mcodes" --threads 2 --quiet "$work/photos"
"$osprey" embed --model "$work/m.osp" --layer relu7 --hash "$work/mh.osh" --out "$work/fcodes" --threads 2 --quiet \
    "$work/photos"
"$osprey" hash apply --hash "$work/mh.osp" --vectors "$work/emb" --out "$work/mc.npy" --ids-out "$work/mids.npy"
$py - "$work/mcodes" "$work/fcodes" "$work/mc.npy" "$work/mids.npy" <<'PY'
import sys, numpy as np
def rows(codes, ids):
    return {i: c.tobytes() for i, c in zip(np.load(ids).tolist(), np.load(codes))}
m = rows(sys.argv[1] + "/vectors.npy", sys.argv[1] + "/ids.npy")
f = rows(sys.argv[2] + "/vectors.npy", sys.argv[2] + "/ids.npy")
a = rows(sys.argv[3], sys.argv[4])
assert len(m) == 120 and m == f == a, (len(m), len(f), len(a))
assert len(next(iter(m.values()))) == 4
PY
# the head travels with a relabelled copy; new normalisation or training drops it
printf 'a\nb\nc\nd\ne\n' >"$work/names.txt"
"$osprey" import "$work/mh.osp" --labels "$work/names.txt" --out "$work/relabelled.osp" >/dev/null
"$osprey" info "$work/relabelled.osp" | grep -q "^hash *32 bits" || fail "import --labels dropped the hash head"
"$osprey" import "$work/mh.osp" --mean 0.4 --out "$work/renorm.osp" >/dev/null 2>"$work/renorm.err"
grep -q "hash head is dropped" "$work/renorm.err" || fail "import --mean: no note that the head is dropped"
"$osprey" info "$work/renorm.osp" | grep -q "^hash" && fail "import --mean kept a hash head that no longer fits"
"$osprey" train --init "$work/mh.osp" --data "$work/photos" --epochs 1 --batch 32 --threads 2 --out "$work/tuned.osp" \
    >/dev/null 2>"$work/tuned.err"
grep -q "hash head is not carried over" "$work/tuned.err" || fail "train --init: no note that the head is dropped"
"$osprey" info "$work/tuned.osp" | grep -q "^hash" && fail "train --init kept a stale hash head"
# mistakes, each named
expect_error "has no hash head" "$osprey" embed --model "$work/m.osp" --binary --out "$work/x" "$work/photos"
expect_error "give it with --hash" "$osprey" embed --model "$work/mh.osp" --binary "$work/mh.osh" --out "$work/x" "$work/photos"
expect_error "trained on layer 'relu7', not 'maxpool8'" "$osprey" embed --model "$work/mh.osp" --binary --layer maxpool8 \
    --out "$work/x" "$work/photos"
expect_error "drop --normalize" "$osprey" embed --model "$work/mh.osp" --binary --normalize --out "$work/x" "$work/photos"
expect_error "give --out NAME.osp" "$osprey" hash train --vectors "$work/emb" --bits 8 --model "$work/m.osp" --out "$work/x.osh"
expect_error "not the model the vectors" "$osprey" hash train --vectors "$work/emb" --bits 8 --model "$work/relabelled.osp" \
    --out "$work/x.osp"
expect_error "with --model MODEL" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" --bits 8 \
    --out "$work/x.osp"
expect_error "give --layer NAME" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" --bits 8 \
    --model "$work/m.osp" --out "$work/x.osp"
expect_error "gives vectors of 32 values, but" "$osprey" hash train --vectors "$work/base.npy" --labels "$work/labels.npy" \
    --bits 8 --model "$work/m.osp" --layer relu7 --out "$work/x.osp"
[ ! -e "$work/x.osp" ] || fail "a refused hash train wrote its output"
# a model whose head disagrees with its tensors is refused, naming the file
$py - "$work/mh.osp" "$work/badhead.osp" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
assert b.count(b'\\"bits\\":32') == 1, "the head's metadata not found"
open(sys.argv[2], "wb").write(b.replace(b'\\"bits\\":32', b'\\"bits\\":40'))
PY
expect_error "badhead.osp: tensor 'hash.weight' is F32 32x32, expected F32 40x32" "$osprey" info "$work/badhead.osp"
echo "hash: ok"
