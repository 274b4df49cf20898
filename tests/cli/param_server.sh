#!/usr/bin/env bash
# Asynchronous parameter servers on loopback: LeNet-5 on 6000 MNIST digits,
# 2 epochs. 1 server + 2 workers reach the test accuracy of synchronous
# data parallelism on 2 ranks within 1 point; a run whose worker is killed
# with SIGKILL mid-run completes (mpirun --enable-recovery) with one worker
# lost, loadable checkpoints and a final model; --resume auto continues a
# parameter-server checkpoint; osprey eval reads the model server 0 saved.
# ctest: slow
# usage: param_server.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$(realpath "$1")
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
job=0
cleanup() {
    [ "$job" -gt 0 ] && kill -KILL "$job" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
. "$src/tests/support/cli.sh"
need_mpi

# 6000 training digits (a quick run that still nears LeNet-5's plateau, so
# the two runs' accuracies are compared where they vary little), the 1000
# test digits for accuracy.
mnist_subset "$src/data/mnist" "$work/data" 6000
mpi() { local n=$1; shift; mpirun --oversubscribe --bind-to none -np "$n" "$@"; }
common=(--net "$src/nets/lenet.cfg" --data "$work/data" --val "$work/data" --epochs 2 --batch 32
        --lr 0.02 --schedule cosine --seed 5 --threads 1 --json)

# Without MPI ranks there is nothing to serve.
expect_error "needs an MPI job" "$osprey" train "${common[@]}" --param-servers 1
# Options of synchronous training are refused before any work.
for opt in --sync-bn --lr-scale-ranks "--update lazy" "--model-parallel fc"; do
    expect_error "belong to synchronous data parallelism" "$osprey" train "${common[@]}" --param-servers 1 $opt
done

# Synchronous: 2 ranks x 32. Asynchronous: 1 server, 2 workers x 32.
mpi 2 "$osprey" train "${common[@]}" --quiet >"$work/sync.json"
mpi 3 "$osprey" train "${common[@]}" --quiet --param-servers 1 --out "$work/ps.osp" >"$work/ps.json"
[ -f "$work/ps.osp" ] || fail "no model from the parameter-server run"
# The model server 0 saved is the one it validated.
"$osprey" eval --model "$work/ps.osp" --data "$work/data" --split test >"$work/eval.txt" 2>&1 ||
    fail "osprey eval: $(cat "$work/eval.txt")"

# Killed: worker rank 2 gets SIGKILL once the step-40 checkpoint exists
# (376 updates in all); the server gives it up after 4 s of silence.
mpirun --enable-recovery --oversubscribe --bind-to none -np 3 "$osprey" train "${common[@]}" \
    --param-servers 1 --worker-timeout 4 --checkpoint-every 20 --keep-checkpoints 3 \
    --out "$work/k.osp" >"$work/k.json" 2>"$work/k.err" &
job=$!
killed=0
for _ in $(seq 600); do
    if [ -e "$work/k.osp.ckpt-step000000040" ]; then
        for pid in $(pgrep -f "$osprey train" || true); do
            if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=2; then
                kill -KILL "$pid"
                killed=1
            fi
        done
        break
    fi
    sleep 0.05
done
[ "$killed" -eq 1 ] || fail "no worker was killed: $(cat "$work/k.err")"
wait "$job" || fail "the job with a killed worker did not complete: $(cat "$work/k.err")"
job=0
grep -q "worker rank 2 silent" "$work/k.err" || fail "the lost worker was not reported: $(cat "$work/k.err")"
grep -q "1 worker lost" "$work/k.err" || fail "the epoch line does not count the lost worker"
[ -f "$work/k.osp" ] || fail "no final model after the worker was killed"
if ls "$work" | grep -q '\.tmp\.'; then fail "temporary files left: $(ls "$work")"; fi
for c in "$work"/k.osp "$work"/k.osp.ckpt*; do
    "$osprey" info "$c" >/dev/null 2>"$work/info.err" || fail "$c does not load: $(cat "$work/info.err")"
done

# A checkpoint of the servers continues with --resume auto: the step-360
# copy, 16 updates before the end.
cp "$work/k.osp.ckpt-step000000360" "$work/r.ckpt"
mpi 3 "$osprey" train --resume auto --checkpoint "$work/r.ckpt" --data "$work/data" --val "$work/data" \
    --param-servers 1 --threads 1 --json --out "$work/r.osp" >"$work/r.json" 2>"$work/r.err" ||
    fail "--resume auto failed: $(cat "$work/r.err")"
grep -q "resuming from .*r.ckpt" "$work/r.err" || fail "did not resume: $(cat "$work/r.err")"
[ -f "$work/r.osp" ] || fail "no model after resuming"

/usr/bin/python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
last = lambda f: [json.loads(l) for l in open(f"{w}/{f}") if l.startswith("{")][-1]
s, p, k, r = last("sync.json"), last("ps.json"), last("k.json"), last("r.json")
print(f"val top-1: synchronous {s['val_top1']:.4f}, parameter server {p['val_top1']:.4f} "
      f"(staleness {p['staleness']:.2f}), worker killed {k['val_top1']:.4f}, resumed {r['val_top1']:.4f}")
assert s["epoch"] == p["epoch"] == k["epoch"] == r["epoch"] == 2, (s, p, k, r)
assert p["param_servers"] == 1 and p["workers_lost"] == 0 and k["workers_lost"] == 1, (p, k)
assert r["step"] == k["step"] == 376, (r, k)
assert s["val_top1"] > 0.90, s
ev = open(f"{w}/eval.txt").read()
assert f"top-1 {100 * p['val_top1']:.2f}%" in ev, ("osprey eval disagrees with the run", ev, p)
# reaching synchronous training's accuracy: at most 1 point below it
assert p["val_top1"] >= s["val_top1"] - 0.01, "parameter server: more than 1 point below synchronous"
# one worker short for most of the run: the same data, more noise
assert abs(k["val_top1"] - s["val_top1"]) <= 0.02, "killed worker vs synchronous: more than 2 points"
assert abs(r["val_top1"] - k["val_top1"]) <= 0.02, (r, k)
PY
echo "cli param_server: all checks passed"
