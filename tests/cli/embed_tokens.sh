#!/usr/bin/env bash
# osprey embed on a layer of tokens (T x D per sample), through a vision
# transformer's front imported from ONNX (vittok of the nd_golden fixture:
# 3x16x16 images to 17 tokens of 32): --pool cls gives token 0, --pool
# mean the tokens' mean, each equal to what the whole layer (embed without
# --pool) holds; the choice is recorded in the catalogue, a folder made
# with one pooling refuses another, and 'osprey similar' pools an outside
# image as the folder was made, so that a copy of a catalogued image finds
# it at distance 0. --pool on a spatial layer, and image paths on a model
# whose input is not an image, are refused in one line. 'osprey serve' on
# the folder gives the folder's vector as the image's EMBEDDING.
# usage: embed_tokens.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
golden=${OSP_ND_GOLDEN:-$PWD/nd_golden}
py=/usr/bin/python3
work=$(mktemp -d)
server=
cleanup() {
    [ -z "$server" ] || { kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT
. "$src/tests/support/cli.sh"

"$osprey" embed --help | grep -q -- "--pool cls|mean" || fail "embed --help lacks --pool"
[ -s "$golden/vittok.onnx" ] || fail "no golden data in $golden (the nd_golden fixture)"
"$osprey" import "$golden/vittok.onnx" --out "$work/vit.osp" >/dev/null
layer=$("$osprey" info "$work/vit.osp" | awk '$NF == 0 && $(NF-1) == "17x32" {l = $1} END {print l}')
[ -n "$layer" ] || fail "no 17x32 layer in: $("$osprey" info "$work/vit.osp")"

mkdir "$work/img"
$py - "$work/img" <<'PY'
import sys
import numpy as np
from PIL import Image
rng = np.random.RandomState(0)
for i in range(6):
    Image.fromarray(rng.randint(0, 256, (20, 24, 3), dtype=np.uint8)).save(f"{sys.argv[1]}/{i}.png")
PY

for pool in whole cls mean; do
    opt=(); [ $pool = whole ] || opt=(--pool $pool)
    "$osprey" embed --model "$work/vit.osp" --layer "$layer" "${opt[@]}" --out "$work/$pool" \
        --threads 2 --quiet "$work/img"
done
$py - "$work" <<'PY'
import sqlite3, sys
import numpy as np
w = sys.argv[1]
def load(p):
    v, ids = np.load(f"{w}/{p}/vectors.npy"), np.load(f"{w}/{p}/ids.npy")
    return v[np.argsort(ids)]
whole, cls, mean = load("whole"), load("cls"), load("mean")
assert whole.shape == (6, 17 * 32) and cls.shape == (6, 32) and mean.shape == (6, 32), (whole.shape, cls.shape)
tokens = whole.reshape(6, 17, 32)
assert np.array_equal(cls, tokens[:, 0]), "cls is not token 0"
err = np.abs(mean - tokens.mean(axis=1)).max() / np.abs(mean).max()
assert err < 1e-6, f"mean differs by {err:.2e}"
for p, want in (("whole", ""), ("cls", "cls"), ("mean", "mean")):
    have = sqlite3.connect(f"{w}/{p}/catalog.db").execute(
        "SELECT value FROM settings WHERE key = 'pool'").fetchone()[0]
    assert have == want, (p, have)
print(f"embed --pool: cls = token 0 exactly; mean within {err:.1e}; recorded")
PY

# the folder's pooling is kept: another one is refused
expect_error "pool = 'mean', not 'cls'" "$osprey" embed --model "$work/vit.osp" --layer "$layer" \
    --pool cls --out "$work/mean" --quiet "$work/img"
# similar pools an outside image as the folder was made
"$osprey" index build --from "$work/mean" --type flat --metric l2 --out "$work/mean.idx" >/dev/null
cp "$work/img/3.png" "$work/outside.png"
"$osprey" similar --index "$work/mean.idx" --catalog "$work/mean" -k 1 --json "$work/outside.png" \
    >"$work/sim.json"
$py - "$work/sim.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).readline())["results"][0]
assert r["path"].endswith("img/3.png") and abs(r["score"]) < 1e-6, r
PY

# the server's EMBEDDING pools as the folder was made: the row of the image
"$osprey" serve --model "$work/vit.osp" --catalog "$work/mean" --listen 127.0.0.1:0 \
    --threads 2 2>"$work/serve.err" &
server=$!
for _ in $(seq 1 200); do
    grep -q "listening on" "$work/serve.err" && break
    kill -0 "$server" 2>/dev/null || fail "serve did not start: $(cat "$work/serve.err")"
    sleep 0.05
done
addr=$(sed -n 's/.*listening on //p' "$work/serve.err")
[ -n "$addr" ] || fail "serve is not listening: $(cat "$work/serve.err")"
$py - "$addr" "$work" <<'PY'
import base64, json, sys, urllib.request
import numpy as np
addr, w = sys.argv[1], sys.argv[2]
body = {"requests": [{"image": {"content": base64.b64encode(open(f"{w}/img/3.png", "rb").read()).decode()},
                      "features": [{"type": "EMBEDDING"}]}]}
req = urllib.request.Request(f"http://{addr}/v1/images:annotate", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
got = np.array(json.load(urllib.request.urlopen(req))["responses"][0]["embedding"]["vector"], np.float32)
import sqlite3
row = sqlite3.connect(f"{w}/mean/catalog.db").execute(
    "SELECT row FROM images WHERE path LIKE '%img/3.png'").fetchone()[0]
want = np.load(f"{w}/mean/vectors.npy")[row]
assert got.shape == (32,) and np.abs(got - want).max() <= 1e-6 * np.abs(want).max(), (got, want)
PY
kill -TERM "$server"
wait "$server" || fail "serve exited badly after SIGTERM"
server=

# refusals
expect_error "not tokens x features" "$osprey" embed --model "$work/vit.osp" --layer patch.Conv \
    --pool mean --out "$work/bad" --quiet "$work/img"
expect_error "--pool must be cls" "$osprey" embed --model "$work/vit.osp" --layer "$layer" \
    --pool max --out "$work/bad" --quiet "$work/img"
"$osprey" import "$golden/tokens17.onnx" --out "$work/tok.osp" >/dev/null
expect_error "not an image" "$osprey" embed --model "$work/tok.osp" --layer "$layer" --out "$work/bad" \
    --quiet "$work/img"
echo "embed tokens: all passed"
