#!/usr/bin/env bash
# The batch pipeline end to end: tag + embed over a generated folder of a
# few hundred images with hostile files among them; every image once in
# tags.jsonl, vectors.npy and catalog.db; a rerun does nothing; new files
# are picked up; shards joined by merge equal one run; an index built from
# the output finds each catalogued image first; clear errors for bad runs.
# usage: pipeline.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"
error_lines() { grep -cv '^warning: ' "$work/err" || true; }
py=/usr/bin/python3

# 305 shapes in 5 classes (5 broken on purpose), plus hostile files
$py "$src/scripts/make-shapes" "$work/photos" --per-class 60 --size 32,96 --spec "$work/shapes.cfg" >/dev/null
mkdir -p "$work/photos/extra/deeper" "$work/photos/.hidden"
cp "$work/photos/circle/0000.jpg" "$work/photos/.hidden/0000.jpg"    # hidden: left out
printf 'not an image' >"$work/photos/extra/notes.txt"                  # not an image name: left out
head -c 100 /dev/urandom >"$work/photos/extra/deeper/random.webp"      # garbage
# a PNG header claiming 100000 x 100000 pixels
$py - "$work/photos/extra/huge.png" <<'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
PY
mkdir "$work/photos/extra/dir.jpg"                                   # a folder with an image's name
n_images=$(find "$work/photos" -path '*/.hidden' -prune -o -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.webp' \) -print | wc -l)
[ "$n_images" -eq 307 ] || fail "expected 307 image files, found $n_images"

# a model of the five classes (the folder also holds 'extra', which is no class)
mkdir -p "$work/train"
for c in circle cross square star triangle; do ln -s "$work/photos/$c" "$work/train/$c"; done
"$osprey" train --net "$work/shapes.cfg" --data "$work/train" --epochs 2 --batch 32 --threads 2 \
    --quiet --out "$work/m.osp" 2>/dev/null

"$osprey" tag --help | grep -q -- "--embed NAME" || fail "tag --help"
"$osprey" embed --help | grep -q -- "--layer NAME" || fail "embed --help"

# tag + embed in one pass, over a folder, a list file and stdin
out=$work/run
(cd "$work" && ls photos/circle/00[0-4]*.jpg) >"$work/list.txt"      # relative to the list's folder
ls "$work"/photos/cross/001*.png | "$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --out "$out" \
    --batch 16 --threads 2 --json "$work/photos" "$work/list.txt" - >"$work/run1.json" 2>"$work/err1"
grep -q "extra/notes.txt: left out" "$work/err1" || fail "the non-image file is not named: $(cat "$work/err1")"
$py - "$out" "$work/run1.json" 307 <<'PY'
import json, sqlite3, sys, numpy as np
out, summary, n = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
rows = [json.loads(l) for l in open(out + "/tags.jsonl")]
assert len(rows) == n, (len(rows), n)            # the list and stdin repeat folder images: once each
ids = [r["id"] for r in rows]
assert len(set(ids)) == n and all(i >= 0 for i in ids)
assert len({r["path"] for r in rows}) == n
errors = {r["path"].split("/")[-1]: r["error"]["code"] for r in rows if "error" in r}
want = {"broken-truncated.jpg": "decode", "broken-empty.png": "empty", "broken-text.jpg": "decode",
        "broken-bomb.png": "too_large", "broken-garbage.webp": "decode", "random.webp": "decode",
        "huge.png": "too_large"}
assert errors == want, errors
ok = [r for r in rows if "error" not in r]
for r in ok:
    assert 1 <= len(r["labels"]) <= 5 and r["model"].startswith("m@"), r
    s = [l["score"] for l in r["labels"]]
    assert s == sorted(s, reverse=True) and all(0 <= x <= 1 for x in s), r
    assert {l["description"] for l in r["labels"]} <= {"circle", "cross", "square", "star", "triangle"}, r
v, vid = np.load(out + "/vectors.npy"), np.load(out + "/ids.npy")
assert v.dtype == np.float32 and v.shape == (len(ok), 32), v.shape
assert vid.dtype == np.int64 and sorted(vid.tolist()) == sorted(r["id"] for r in ok)
assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
db = sqlite3.connect(out + "/catalog.db")
assert db.execute("select count(*), count(distinct path) from images").fetchone() == (n, n)
assert db.execute("select count(*) from images where status = 'error'").fetchone()[0] == len(want)
for i, path, row, sha, w, h, nbytes in db.execute("select id, path, row, sha256, width, height, bytes from images where status = 'ok'"):
    assert vid[row] == i, (path, row)
    assert len(sha) == 64 and w > 0 and h > 0 and nbytes > 0
assert db.execute("select count(distinct image) from labels").fetchone()[0] == len(ok)
assert db.execute("select value from state where key = 'rows'").fetchone()[0] == len(ok)
assert summary["images"] == n and summary["errors"] == len(want) and summary["already_done"] > 0, summary
assert summary["not_images"] == 1, summary
PY

# the same command again does no work; the outputs are unchanged
cp "$out/tags.jsonl" "$work/tags.before"
"$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --out "$out" --threads 2 --json --quiet \
    "$work/photos" >"$work/run2.json"
grep -q '"images": 0,' "$work/run2.json" || fail "a rerun did work: $(cat "$work/run2.json")"
cmp "$out/tags.jsonl" "$work/tags.before" || fail "a rerun changed tags.jsonl"

# embed alone, float16: the same vectors to half precision
"$osprey" embed --model "$work/m.osp" --layer relu7 --normalize --dtype float16 --out "$work/half" \
    --threads 2 --quiet "$work/photos"
$py - "$out" "$work/half" <<'PY'
import sys, numpy as np
a, b = sys.argv[1], sys.argv[2]
va, ia = np.load(a + "/vectors.npy"), np.load(a + "/ids.npy")
vb, ib = np.load(b + "/vectors.npy"), np.load(b + "/ids.npy")
assert vb.dtype == np.float16 and len(ib) == len(ia)
pos = {i: k for k, i in enumerate(ia.tolist())}
for k, i in enumerate(ib.tolist()):
    assert np.allclose(vb[k].astype(np.float32), va[pos[i]], atol=2e-3), i
PY
[ ! -e "$work/half/tags.jsonl" ] || fail "embed wrote tags"

# new files are picked up, and only they; --skip-done notices a changed file
mkdir "$work/photos/new"
cp "$work/photos/star/0002.jpg" "$work/photos/new/a.jpg"
cp "$work/photos/star/0003.png" "$work/photos/new/b.png"
cp "$work/photos/circle/0001.png" "$work/0001.png.orig"
cp "$work/photos/square/0001.png" "$work/photos/circle/0001.png"
"$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --out "$out" --threads 2 --json --skip-done \
    "$work/photos" >"$work/run3.json" 2>"$work/err3"
grep -q '"images": 2,' "$work/run3.json" || fail "new files: $(cat "$work/run3.json")"
grep -q '"changed": 1,' "$work/run3.json" || fail "the changed file: $(cat "$work/run3.json")"
grep -q "circle/0001.png changed since" "$work/err3" || fail "the changed file is not named"
[ "$(wc -l <"$out/tags.jsonl")" -eq 309 ] || fail "tags.jsonl has $(wc -l <"$out/tags.jsonl") lines, not 309"
cp "$work/0001.png.orig" "$work/photos/circle/0001.png"

# two shards joined equal one run: the same ids, each once
for i in 0 1; do
    "$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --out "$work/s$i" --shard $i/2 \
        --threads 2 --quiet "$work/photos"
done
"$osprey" merge --out "$work/joined" "$work/s0" "$work/s1"
$py - "$out" "$work/joined" "$work/s0" <<'PY'
import json, sqlite3, sys, numpy as np
one, joined, s0 = sys.argv[1:4]
ids = lambda d: sorted(json.loads(l)["id"] for l in open(d + "/tags.jsonl"))
assert ids(one) == ids(joined), "merged ids differ from one run's"
assert 0 < len(ids(s0)) < len(ids(one))
a, b = np.load(one + "/ids.npy"), np.load(joined + "/ids.npy")
assert sorted(a.tolist()) == sorted(b.tolist())
va, vb = np.load(one + "/vectors.npy"), np.load(joined + "/vectors.npy")
pa = {i: k for k, i in enumerate(a.tolist())}
assert all(np.allclose(vb[k], va[pa[i]], atol=1e-5) for k, i in enumerate(b.tolist()))
db = sqlite3.connect(joined + "/catalog.db")
assert db.execute("select count(*) from images").fetchone()[0] == len(ids(one))
for i, row in db.execute("select id, row from images where row is not null"):
    assert b[row] == i
PY

# an index from the output; a catalogued image finds itself first, by id and by path
"$osprey" index build --from "$out" --type flat --metric ip --out "$work/photos.idx" >/dev/null
first_ok=$($py -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; r=[x for x in r if 'error' not in x]; print(r[0]['id'], r[0]['path'])" "$out/tags.jsonl")
id=${first_ok%% *}; path=${first_ok#* }
"$osprey" similar --index "$work/photos.idx" --catalog "$out" -k 3 --json "$id" "$path" "$work/photos/new/a.jpg" >"$work/sim.json"
$py - "$work/sim.json" "$path" "$work/photos/new/a.jpg" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 3, lines
for q, want in zip(lines, [sys.argv[2], sys.argv[2], sys.argv[3]]):
    assert len(q["results"]) == 3 and q["results"][0]["path"] == want or (
        # new/a.jpg is a copy of star/0002.jpg: the two tie
        want.endswith("new/a.jpg") and {r["path"].split("/")[-1] for r in q["results"][:2]} == {"a.jpg", "0002.jpg"}), q
PY
# an image outside the catalogue is embedded with the recorded model and layer
cp "$work/photos/star/0004.jpg" "$work/outside.jpg"
"$osprey" similar --index "$work/photos.idx" --catalog "$out" -k 1 "$work/outside.jpg" | grep -q "star/0004.jpg" ||
    fail "an outside copy of an image did not find it"

# binary codes from a learned hash, written by the pipeline, as 'hash apply' makes them
# (sort_codes: a folder's codes ordered by image id, as text)
sort_codes() {
    $py -c 'import sys, numpy as np; c, i = np.load(sys.argv[1] + "/vectors.npy"), np.load(sys.argv[1] + "/ids.npy")
for k in np.argsort(i): print(i[k], c[k].tobytes().hex())' "$1"
}
"$osprey" hash train --vectors "$out" --bits 32 --epochs 5 --out "$work/h.osh" >/dev/null 2>&1
"$osprey" embed --model "$work/m.osp" --layer relu7 --normalize --hash "$work/h.osh" --out "$work/codes" \
    --threads 2 --quiet "$work/photos"
"$osprey" hash apply --hash "$work/h.osh" --vectors "$out" --out "$work/applied.npy" --ids-out "$work/applied-ids.npy" >/dev/null
$py - "$work/codes" "$work/applied.npy" "$work/applied-ids.npy" <<'PY'
import sys, numpy as np
d, applied, applied_ids = sys.argv[1:4]
c, ids = np.load(d + "/vectors.npy"), np.load(d + "/ids.npy")
assert c.dtype == np.uint8 and c.shape[1] == 4, (c.dtype, c.shape)
a, ai = np.load(applied), np.load(applied_ids)
pos = {i: k for k, i in enumerate(ai.tolist())}
same = [np.array_equal(c[k], a[pos[i]]) for k, i in enumerate(ids.tolist()) if i in pos]
assert len(same) > 250 and all(same), (len(same), sum(same))
PY
"$osprey" index build --from "$work/codes" --type binary --out "$work/codes.idx" >/dev/null
"$osprey" index info "$work/codes.idx" --json | grep -q '"count": 30[0-9]' || fail "the binary index from --from"
# similar over the codes: a catalogued image by its stored code, another
# image coded now with the hash file the folder records
"$osprey" similar --index "$work/codes.idx" --catalog "$work/codes" -k 5 --json "$path" "$work/outside.jpg" \
    >"$work/bsim.json"
$py - "$work/bsim.json" "$path" <<'PY'
import json, sys
a, b = map(json.loads, open(sys.argv[1]))
# equal codes tie at 0: the image itself is among them
zero = lambda q: [r["path"] for r in q["results"] if r["score"] == 0]
assert a["metric"] == "hamming" and sys.argv[2] in zero(a), a
assert any(p.endswith("star/0004.jpg") for p in zero(b)), b
PY
# the same with the head stored in the model: embed --binary takes its layer
# and normalisation, similar codes the outside image with it
"$osprey" hash train --vectors "$out" --bits 32 --epochs 5 --out "$work/mh.osp" >/dev/null 2>&1
"$osprey" embed --model "$work/mh.osp" --binary --out "$work/mcodes" --threads 2 --quiet "$work/photos"
cmp -s <(sort_codes "$work/codes") <(sort_codes "$work/mcodes") || fail "the model's head and the same hash as a file differ"
"$osprey" index build --from "$work/mcodes" --type binary --out "$work/mcodes.idx" >/dev/null
"$osprey" similar --index "$work/mcodes.idx" --catalog "$work/mcodes" -k 5 "$work/outside.jpg" | grep -q "^0	.*star/0004.jpg" ||
    fail "an outside copy of an image did not find it through the model's hash head"
expect_error "is a binary index, .* holds float vectors" "$osprey" similar --index "$work/codes.idx" --catalog "$out" "$path"
expect_error "holds binary codes" "$osprey" similar --index "$work/photos.idx" --catalog "$work/codes" "$path"
# a hash file changed since the folder was made is refused
"$osprey" hash train --vectors "$out" --bits 32 --epochs 2 --seed 7 --out "$work/h.osh" >/dev/null 2>&1
expect_error "is not the one .* was made with" "$osprey" similar --index "$work/codes.idx" --catalog "$work/codes" \
    "$work/outside.jpg"
# a folder that does not record its hash file (an older osprey's) says so
cp -r "$work/codes" "$work/oldcodes"
$py -c 'import sqlite3, sys; d = sqlite3.connect(sys.argv[1]); d.execute("DELETE FROM settings WHERE key = ?", ("hash_file",)); d.commit()' \
    "$work/oldcodes/catalog.db"
expect_error "records no hash file and .* has no hash head" "$osprey" similar --index "$work/codes.idx" \
    --catalog "$work/oldcodes" "$work/outside.jpg"
expect_error "holds float vectors" "$osprey" index build --from "$out" --type binary --out "$work/x.idx"
expect_error "not with --dtype" "$osprey" embed --model "$work/m.osp" --layer relu7 --hash "$work/h.osh" --dtype float16 --out "$work/x" "$work/photos"
expect_error "the hash takes vectors of 32 values, layer 'relu10' gives 64" "$osprey" embed --model "$work/m.osp" --layer relu10 --hash "$work/h.osh" --out "$work/x" "$work/photos"

# an ensemble's scores are the mean of its models' scores
"$osprey" train --net "$work/shapes.cfg" --data "$work/train" --epochs 1 --batch 32 --threads 2 --seed 9 \
    --quiet --out "$work/other.osp" 2>/dev/null
for m in m other; do
    "$osprey" tag --model "$work/$m.osp" --out "$work/ens-$m" --threads 2 --quiet "$work/photos/star"
done
"$osprey" tag --model "$work/m.osp" --model "$work/other.osp" --out "$work/ens" --threads 2 --quiet "$work/photos/star"
$py - "$work/ens-m" "$work/ens-other" "$work/ens" <<'PY'
import json, sys
load = lambda d: {r["path"]: r for r in map(json.loads, open(d + "/tags.jsonl"))}
a, b, e = (load(d) for d in sys.argv[1:4])
assert a.keys() == e.keys()
for path, r in e.items():
    if "error" in r:
        continue
    assert r["model"].startswith("m+other@"), r["model"]
    sa = {l["description"]: l["score"] for l in a[path]["labels"]}
    sb = {l["description"]: l["score"] for l in b[path]["labels"]}
    for l in r["labels"]:
        want = (sa[l["description"]] + sb[l["description"]]) / 2
        assert abs(l["score"] - want) < 2e-6, (path, l, want)
PY
expect_error "depends on the input size" "$osprey" tag --model "$work/m.osp" --scales 24,32 --out "$work/ens2" "$work/photos/star"
# a network of convolutions and global pooling takes any size: scales
printf '[net]\ninput = 3x24x24\nmean = 0.5\nstd = 0.25\n[conv]\nfilters = 8\nsize = 3\npad = 1\n[relu]\n[maxpool]\nsize = 2\n[conv]\nfilters = 16\nsize = 3\npad = 1\n[relu]\n[globalavgpool]\n[fc]\noutputs = 5\n' >"$work/gap.cfg"
"$osprey" train --net "$work/gap.cfg" --data "$work/train" --epochs 1 --batch 32 --threads 2 --quiet --out "$work/gap.osp" 2>/dev/null
"$osprey" tag --model "$work/gap.osp" --scales 24,40 --embed relu5 --out "$work/scales" --threads 2 --quiet "$work/photos/star"
"$osprey" tag --model "$work/gap.osp" --embed relu5 --out "$work/scale24" --threads 2 --quiet "$work/photos/star"
$py - "$work/scales" "$work/scale24" <<'PY'
import json, sys, numpy as np
s, one = sys.argv[1], sys.argv[2]
rs = {r["path"]: r for r in map(json.loads, open(s + "/tags.jsonl"))}
r1 = {r["path"]: r for r in map(json.loads, open(one + "/tags.jsonl"))}
ok = [p for p in rs if "error" not in rs[p]]
assert all(rs[p]["model"].startswith("gap@24,40@") for p in ok), rs[ok[0]]["model"]
assert any(rs[p]["labels"][0]["score"] != r1[p]["labels"][0]["score"] for p in ok), "the second scale changed nothing"
assert np.array_equal(np.load(s + "/vectors.npy"), np.load(one + "/vectors.npy")), "vectors are not the first scale's"
PY
expect_error "the first scale must be the model's own" "$osprey" tag --model "$work/gap.osp" --scales 40,24 --embed relu5 --out "$work/ens3" "$work/photos/star"

# one writer at a time in a folder: a run that finds another one there (the
# ranks of a killed job, still exiting) waits for it to end, saying so, and
# gives up after --lock-timeout
rm -f "$work/locked" "$work/release"
$py - "$out" "$work/locked" "$work/release" <<'PY' &
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
for _ in range(600):                     # at most a minute, whatever happens
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.05)
PY
holder=$!
for _ in $(seq 600); do [ -e "$work/locked" ] && break; sleep 0.05; done
expect_error "another run or merge into it is still running after 0.3 s" \
    "$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --out "$out" --lock-timeout 0.3 "$work/photos"
"$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --out "$out" --json "$work/photos" \
    >"$work/waited.json" 2>"$work/waited.err" &
waiter=$!
for _ in $(seq 600); do grep -q "waiting up to 10 s" "$work/waited.err" && break; sleep 0.05; done
grep -q "waiting up to 10 s" "$work/waited.err" || fail "no word of waiting: $(cat "$work/waited.err")"
kill -0 "$waiter" 2>/dev/null || fail "the run did not wait for the folder's lock"
touch "$work/release"
wait "$holder"
wait "$waiter" || fail "the run that waited failed: $(cat "$work/waited.err")"
grep -q '"images": 0,' "$work/waited.json" || fail "the run that waited redid work: $(cat "$work/waited.json")"

# bad runs: one clear error before any work
expect_error "holds a run with model_sha256" "$osprey" tag --model "$work/other.osp" --embed relu7 --normalize --out "$out" "$work/photos"
expect_error "no layer 'conv99'" "$osprey" embed --model "$work/m.osp" --layer conv99 --out "$work/x" "$work/photos"
expect_error "holds a run with layer" "$osprey" tag --model "$work/m.osp" --embed relu3 --normalize --out "$out" "$work/photos"
expect_error "nowhere.jpg: no such file" "$osprey" tag --model "$work/m.osp" --out "$work/y" "$work/photos" "$work/nowhere.jpg"
expect_error "--shard must be" "$osprey" tag --model "$work/m.osp" --out "$work/y" --shard 2/2 "$work/photos"
expect_error "no INPUT" "$osprey" tag --model "$work/m.osp" --out "$work/y"
touch "$work/plainfile"
expect_error "not a folder" "$osprey" tag --model "$work/m.osp" --out "$work/plainfile" "$work/photos"
if [ "$(id -u)" -ne 0 ]; then
    mkdir "$work/ro" && chmod 555 "$work/ro"
    expect_error "cannot write" "$osprey" tag --model "$work/m.osp" --out "$work/ro" "$work/photos"
fi
[ ! -e "$work/y" ] || [ -z "$(ls "$work/y")" ] || fail "a refused run left files in its output folder"
echo "cli pipeline: all checks passed"
