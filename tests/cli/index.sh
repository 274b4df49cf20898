#!/usr/bin/env bash
# End to end: osprey index build, search, add, remove and info on a small
# clustered set made here, and clear errors (exit 1, one line, no crash) for
# bad input, a damaged index file included.
# usage: index.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "${OSP_SOURCE_DIR:?}/tests/support/cli.sh"

# 2000 x 16 clustered base, 50 queries, the exact neighbours, and uint8 codes.
/usr/bin/python3 - "$work" <<'PY'
import sys, numpy as np
w = sys.argv[1]
rng = np.random.default_rng(5)
centres = rng.standard_normal((20, 16))
x = (centres[rng.integers(0, 20, 2050)] + 0.3 * rng.standard_normal((2050, 16))).astype(np.float32)
base, q = x[:2000], x[2000:]
np.save(f"{w}/base.npy", base)
np.save(f"{w}/q.npy", q)
np.save(f"{w}/ids.npy", np.arange(2000, dtype=np.int64) * 10)
d = ((q[:, None, :] - base[None, :, :]) ** 2).sum(-1)
np.save(f"{w}/gt.npy", (np.argsort(d, axis=1)[:, :10] * 10).astype(np.int64))
np.save(f"{w}/more.npy", base[:100] + 0.01)
np.save(f"{w}/codes.npy", rng.integers(0, 256, (500, 8), dtype=np.uint8))
np.save(f"{w}/rm.npy", np.arange(0, 1000, dtype=np.int64) * 10)
np.save(f"{w}/dup.npy", np.arange(0, 100, dtype=np.int64) * 10)
# an .fvecs copy of the queries: int32 D, then D floats, per vector
with open(f"{w}/q.fvecs", "wb") as f:
    for v in q:
        np.array([16], dtype=np.int32).tofile(f)
        v.astype(np.float32).tofile(f)
PY

for sub in build search add remove info; do
    "$osprey" index "$sub" --help | grep "usage: osprey index $sub" >/dev/null || fail "index $sub --help"
done
"$osprey" index --help | grep "usage: osprey index build" >/dev/null || fail "index --help"

recall() { /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['recall'])" "$1"; }
atleast() { /usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" "$1" "$2"; }

# Every float type builds, answers, and reaches its recall floor. Each
# takes only its own options (the others are refused, below).
for spec in "flat 0.999" "ivf 0.9" "ivfpq 0.5" "lsh 0.8" "hnsw 0.95"; do
    set -- $spec
    type=$1 floor=$2
    metric=(--metric l2) build=() search=()
    case $type in
    ivf) build=(--nlist 16) search=(--nprobe 8) ;;
    ivfpq) build=(--nlist 16 --m 4) search=(--nprobe 8) ;;
    lsh) metric=() search=(--nprobe 8) ;; # cos, its default and only metric
    hnsw) search=(--ef 64) ;;
    esac
    "$osprey" index build --type "$type" "${metric[@]}" --input "$work/base.npy" --ids "$work/ids.npy" \
        --out "$work/$type.idx" "${build[@]}" --threads 2 --quiet
    "$osprey" index search --index "$work/$type.idx" --queries "$work/q.npy" -k 10 --out "$work/r.npy" \
        --distances "$work/d.npy" --truth "$work/gt.npy" "${search[@]}" --threads 2 --json >"$work/$type.json"
    [ "$type" = lsh ] && continue # cosine neighbours are not the L2 truth
    atleast "$(recall "$work/$type.json")" "$floor" || fail "$type recall $(recall "$work/$type.json") < $floor"
done
"$osprey" index info "$work/lsh.idx" | grep -q "metric cos" || fail "lsh without --metric is not cos"

# The written results: int64 ids 50 x 10 and float32 distances, ascending.
"$osprey" index search --index "$work/flat.idx" --queries "$work/q.fvecs" -k 10 --out "$work/r.npy" \
    --distances "$work/d.npy" --batch 1 | grep -q "queries/s" || fail "search prints queries/s"
/usr/bin/python3 - "$work" <<'PY'
import sys, numpy as np
w = sys.argv[1]
r, d, gt = np.load(f"{w}/r.npy"), np.load(f"{w}/d.npy"), np.load(f"{w}/gt.npy")
assert r.dtype == np.int64 and r.shape == (50, 10), (r.dtype, r.shape)
assert d.dtype == np.float32 and d.shape == (50, 10)
assert (np.diff(d, axis=1) >= 0).all()
assert (r[:, 0] == gt[:, 0]).all()
PY

# Add, remove and info on the HNSW index; k past the count pads with -1.
"$osprey" index add --index "$work/hnsw.idx" --input "$work/more.npy" --quiet
"$osprey" index info "$work/hnsw.idx" --json >"$work/info.json"
/usr/bin/python3 - "$work/info.json" <<'PY'
import json, sys
i = json.load(open(sys.argv[1]))
assert i["type"] == "hnsw" and i["count"] == 2100 and i["next_id"] == 20091, i
PY
"$osprey" index remove --index "$work/hnsw.idx" --ids "$work/rm.npy" | grep -q "removed 1000 of 1000" || fail "remove"
"$osprey" index remove --index "$work/hnsw.idx" --id 19990,19980,7 --out "$work/h2.idx" | grep -q "removed 2 of 3" ||
    fail "remove --id"
"$osprey" index info "$work/h2.idx" | grep -q "vectors 1098 (removed 1002, free slots 1002)" || fail "info after remove"
"$osprey" index search --index "$work/h2.idx" --queries "$work/q.npy" -k 10 --out "$work/r.npy" --ef 64 >/dev/null
/usr/bin/python3 -c "
import numpy as np, sys
r = np.load(sys.argv[1])
assert (r >= 0).all() and not np.isin(r, np.arange(0, 10000, 10)).any() and not np.isin(r, [19990, 19980]).any()
" "$work/r.npy" || fail "removed ids came back"
"$osprey" index add --index "$work/h2.idx" --input "$work/more.npy" --quiet
/usr/bin/python3 -c "import numpy as np, sys; np.save(sys.argv[1], np.zeros((1, 16), np.float64))" "$work/one.npy"
"$osprey" index add --index "$work/h2.idx" --input "$work/one.npy" --out "$work/h3.idx" | grep -q "^added 1 vector;" ||
    fail "one vector, said as one"
"$osprey" index remove --index "$work/h3.idx" --id 20191 | grep -q "^removed 1 of 1 id; 1198 vectors left" ||
    fail "one id, said as one"
"$osprey" index info "$work/h2.idx" | grep -q "free slots 902" || fail "freed slots not reused"
"$osprey" index build --type flat --input "$work/base.npy" --out "$work/small.idx" --quiet
"$osprey" index search --index "$work/small.idx" --queries "$work/q.npy" -k 2500 --out "$work/r.npy" >/dev/null
/usr/bin/python3 -c "
import numpy as np, sys
r = np.load(sys.argv[1]); assert (r[:, 2000:] == -1).all() and (r[:, :2000] >= 0).all()" "$work/r.npy" ||
    fail "padding past the count"

# Binary codes.
"$osprey" index build --type binary --input "$work/codes.npy" --out "$work/bin.idx" --quiet
"$osprey" index search --index "$work/bin.idx" --queries "$work/codes.npy" -k 1 --out "$work/r.npy" >/dev/null
/usr/bin/python3 -c "
import numpy as np, sys
assert (np.load(sys.argv[1])[:, 0] == np.arange(500)).all()" "$work/r.npy" || fail "binary self-search"

# Errors: one line, exit 1.
expect_error "unknown subcommand" "$osprey" index frobnicate
expect_error "unknown index type" "$osprey" index build --type nope --input "$work/base.npy" --out "$work/x.idx"
expect_error "build needs" "$osprey" index build --type flat --input "$work/base.npy"
expect_error "unknown or incomplete option" "$osprey" index search --bogus
expect_error "does not take the hamming metric" "$osprey" index build --type flat --metric hamming \
    --input "$work/base.npy" --out "$work/x.idx"
expect_error "queries have 8 dimensions" "$osprey" index search --index "$work/flat.idx" \
    --queries "$work/codes.npy" -k 1 --out "$work/r.npy"
expect_error "already in the index" "$osprey" index add --index "$work/flat.idx" --input "$work/more.npy" \
    --ids "$work/dup.npy"
expect_error "2000 ids for 100 vectors" "$osprey" index add --index "$work/flat.idx" --input "$work/more.npy" \
    --ids "$work/ids.npy"
expect_error "No such file" "$osprey" index info "$work/missing.idx"
expect_error "-k must be" "$osprey" index search --index "$work/flat.idx" --queries "$work/q.npy" -k 0 --out "$work/r.npy"

# A damaged index file is refused with a clear message: truncated, flipped.
head -c 5000 "$work/hnsw.idx" >"$work/cut.idx"
expect_error "truncated" "$osprey" index info "$work/cut.idx"
cp "$work/hnsw.idx" "$work/flip.idx"
printf '\xff' | dd of="$work/flip.idx" bs=1 seek=3000 conv=notrunc status=none
expect_error "corrupted" "$osprey" index search --index "$work/flip.idx" --queries "$work/q.npy" -k 5 --out "$work/r.npy"
expect_error "not an osprey index" "$osprey" index info "$work/base.npy"
# Rough edges a new user met.
for sub in build search add remove info; do
    "$osprey" index "$sub" -h | grep "usage: osprey index $sub" >/dev/null || fail "index $sub -h"
done
# The settings a search used, defaults included; null where the type has none;
# all cores unless --threads says otherwise.
json_of() { "$osprey" index search --index "$work/$1.idx" --queries "$work/q.npy" -k "$2" --out "$work/r.npy" --json; }
/usr/bin/python3 - "$(json_of hnsw 10)" "$(json_of hnsw 100)" "$(json_of ivf 10)" "$(json_of lsh 10)" \
    "$(json_of flat 10)" "$(nproc)" <<'PY'
import json, sys
h10, h100, ivf, lsh, flat = (json.loads(a) for a in sys.argv[1:6])
cores = int(sys.argv[6])
assert (h10["ef"], h10["nprobe"]) == (64, None), h10
assert h100["ef"] == 100, h100
assert (ivf["ef"], ivf["nprobe"]) == (None, 8), ivf
assert lsh["nprobe"] == 16, lsh
assert (flat["ef"], flat["nprobe"]) == (None, None), flat
for r in (h10, ivf, lsh, flat):
    assert r["threads"] == cores, (r, cores)
PY
# Options a type does not take are refused, saying which types take them.
expect_error "--ef does not apply to ivf indexes: hnsw takes it" "$osprey" index search --index "$work/ivf.idx" \
    --queries "$work/q.npy" -k 1 --out "$work/r.npy" --ef 32
expect_error "--nprobe does not apply to hnsw indexes: ivf, ivfpq and lsh take it" "$osprey" index search \
    --index "$work/hnsw.idx" --queries "$work/q.npy" -k 1 --out "$work/r.npy" --nprobe 4
expect_error "--nlist does not apply to hnsw indexes: ivf and ivfpq take it" "$osprey" index build --type hnsw \
    --input "$work/base.npy" --out "$work/x.idx" --nlist 16
expect_error "--nlist does not apply to lsh indexes" "$osprey" index build --type lsh \
    --input "$work/base.npy" --out "$work/x.idx" --nlist 16
expect_error "--M does not apply to flat indexes" "$osprey" index build --type flat \
    --input "$work/base.npy" --out "$work/x.idx" --M 8
expect_error "lsh indexes take the cos metric only" "$osprey" index build --type lsh --metric l2 \
    --input "$work/base.npy" --out "$work/x.idx"
[ ! -e "$work/x.idx" ] || fail "a refused build wrote an index"
expect_error "--id '1,,2' has an empty item" "$osprey" index remove --index "$work/flat.idx" --id 1,,2
expect_error "empty item" "$osprey" index remove --index "$work/flat.idx" --id 10,
# NaN and infinities: refused, naming the row, for build, add and search; the
# index file is left as it was.
/usr/bin/python3 - "$work" <<'PY'
import sys, numpy as np
w = sys.argv[1]
x = np.load(f"{w}/q.npy")[:5].copy()
x[3, 7] = np.nan
np.save(f"{w}/nan.npy", x)
x[3, 7] = -np.inf
np.save(f"{w}/inf.npy", x.astype(np.float64))
np.save(f"{w}/wide.npy", np.zeros((5, 65537), np.float32))
PY
cp "$work/flat.idx" "$work/before.idx"
expect_error "nan.npy: row 3 of the vectors holds NaN at dimension 7" "$osprey" index add --index "$work/flat.idx" \
    --input "$work/nan.npy"
cmp "$work/flat.idx" "$work/before.idx" || fail "a refused add changed the index"
expect_error "row 3 of the vectors holds -infinity" "$osprey" index build --type ivf --input "$work/inf.npy" \
    --out "$work/x.idx" --nlist 2
for type in flat hnsw ivf; do
    expect_error "nan.npy: row 3 of the queries holds NaN" "$osprey" index search --index "$work/$type.idx" \
        --queries "$work/nan.npy" -k 3 --out "$work/r.npy"
done
# The library's "index: ..." is not said twice after "osprey index: ".
expect_error "already in the index" "$osprey" index add --index "$work/flat.idx" --input "$work/more.npy" \
    --ids "$work/dup.npy"
! grep -q "index: index:" "$work/err" || fail "doubled prefix: $(cat "$work/err")"
expect_error "wide.npy: vectors of 65537 dimensions (an index takes at most 65536)" "$osprey" index build \
    --type flat --input "$work/wide.npy" --out "$work/x.idx"
echo "index CLI: ok"
