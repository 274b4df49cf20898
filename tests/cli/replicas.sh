#!/usr/bin/env bash
# osprey train --threads-mode: replicas train as one thread does (to float32
# rounding), a stopped and resumed replicas run equals an uninterrupted one
# bit for bit (the checkpoint keeps the mode), and a bad mode is refused.
# usage: replicas.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"

cat >"$work/net.cfg" <<'CFG'
[net]
input = 3x12x12
[conv]
name = c1
filters = 8
size = 3
pad = 1
bias = 0
[batchnorm]
[relu]
name = r1
[conv]
filters = 8
size = 3
pad = 1
bias = 0
[batchnorm]
name = b2
[add]
input = b2, r1
[relu]
[globalavgpool]
[fc]
outputs = 4
CFG
common=(--net "$work/net.cfg" --data synthetic:300 --epochs 3 --batch 40 --lr 0.05 --seed 3
        --augment none)

"$osprey" train "${common[@]}" --threads 1 --threads-mode layers --json --quiet >"$work/one.json"
"$osprey" train "${common[@]}" --threads 2 --threads-mode replicas --json --quiet \
    --out "$work/a.osp" >"$work/two.json"
/usr/bin/python3 - "$work/one.json" "$work/two.json" <<'PY'
import json, sys
one, two = ([json.loads(l) for l in open(p) if l.startswith("{")] for p in sys.argv[1:])
assert len(one) == len(two) == 3, (one, two)
for a, b in zip(one, two):
    assert abs(a["loss"] - b["loss"]) <= 1e-4 * (1 + abs(a["loss"])), (a, b)
assert two[-1]["loss"] < two[0]["loss"], two
PY

"$osprey" train "${common[@]}" --threads 2 --threads-mode replicas --quiet --out "$work/b.osp" \
    --stop-after 10
"$osprey" train --resume "$work/b.osp.ckpt" --data synthetic:300 --augment none --out "$work/b.osp" --quiet
cmp "$work/a.osp" "$work/b.osp" || fail "a resumed replicas run differs from the uninterrupted one"

"$osprey" train --help | grep -q -- "--threads-mode" || fail "train --help lacks --threads-mode"
"$osprey" bench --net "$work/net.cfg" --train --batch 16 --threads 2 --threads-mode replicas \
    --steps 2 --reps 1 --json | grep -q '"threads_mode": "replicas"' || fail "bench --threads-mode replicas"
expect_error "--threads-mode must be auto, layers or replicas" \
    "$osprey" train --net "$work/net.cfg" --data synthetic:10 --threads-mode rows
echo ok
