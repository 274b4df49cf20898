#!/usr/bin/env bash
# Fault tolerance: a 2-rank run has a rank killed (SIGKILL) in the middle of
# its first epoch; scripts/osprey-supervise restarts the job with --resume
# auto, which continues from the last checkpoint; the run completes with
# the accuracy of an uninterrupted run, and no checkpoint is left
# half-written (every checkpoint file loads, no temporary file is left).
# ctest: slow
# usage: fault.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$(realpath "$1")
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
group=0
cleanup() {
    # the supervised job, if a check failed while it ran (its own group)
    [ "$group" -gt 0 ] && kill -KILL -- "-$group" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
. "$src/tests/support/cli.sh"
need_mpi

# 3000 training digits (a quick run), the 1000 test digits for accuracy.
mnist_subset "$src/data/mnist" "$work/data" 3000
run=(mpirun --oversubscribe --bind-to none -np 2 "$osprey" train --net "$src/nets/lenet.cfg"
     --data "$work/data" --val "$work/data" --epochs 2 --batch 32 --lr 0.02 --seed 5 --threads 1
     --checkpoint-every 8 --keep-checkpoints 2 --json --resume auto)

# Uninterrupted.
"${run[@]}" --out "$work/a.osp" >"$work/a.json" 2>"$work/a.err" || fail "uninterrupted run: $(cat "$work/a.err")"

# Supervised, with rank 1 killed once checkpoints exist, mid-epoch 1 (47 steps an epoch).
setsid "$src/scripts/osprey-supervise" --delay 1 --retries 3 -- "${run[@]}" --out "$work/b.osp" \
    >"$work/b.json" 2>"$work/b.err" &
sup=$!
group=$sup
killed=0
for _ in $(seq 300); do
    if ls "$work"/b.osp.ckpt-step000000016 >/dev/null 2>&1; then
        mpirun_pid=$(pgrep -P "$sup" | head -1 || true)
        rank=$(pgrep -P "${mpirun_pid:-0}" | tail -1 || true)
        if [ -n "$rank" ]; then
            kill -KILL "$rank"
            killed=1
            break
        fi
    fi
    sleep 0.1
done
[ "$killed" -eq 1 ] || fail "the run never reached its second checkpoint: $(cat "$work/b.err")"
wait "$sup" || fail "the supervised run did not complete: $(cat "$work/b.err")"
group=0
grep -q "restart 1 of 3" "$work/b.err" || fail "the job was not restarted: $(cat "$work/b.err")"
grep -q "resuming from .*b.osp.ckpt" "$work/b.err" || fail "the restart did not resume: $(cat "$work/b.err")"
grep -q "completed after 1 restart" "$work/b.err" || fail "no completion reported: $(cat "$work/b.err")"
[ -f "$work/b.osp" ] || fail "no final model"

# No half-written checkpoint: no temporary file left, every checkpoint loads.
if ls "$work" | grep -q '\.tmp\.'; then fail "temporary files left: $(ls "$work")"; fi
for c in "$work"/b.osp.ckpt*; do
    "$osprey" info "$c" >/dev/null 2>"$work/info.err" || fail "$c does not load: $(cat "$work/info.err")"
done

# The same accuracy as the uninterrupted run (the restart continues the same
# data order from the checkpoint: run-to-run noise at most).
/usr/bin/python3 - "$work/a.json" "$work/b.json" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])][-1]
b = [json.loads(l) for l in open(sys.argv[2])][-1]
assert a["epoch"] == b["epoch"] == 2, (a, b)
print(f"val top-1: uninterrupted {a['val_top1']:.4f}, killed and restarted {b['val_top1']:.4f}")
assert a["val_top1"] > 0.85, a
assert abs(a["val_top1"] - b["val_top1"]) <= 0.02, (a, b)
PY
echo "cli fault: all checks passed"
