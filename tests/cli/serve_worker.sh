#!/usr/bin/env bash
# One `osprey serve` worker on loopback over a generated catalogue (shapes
# tagged with --embed relu7 --normalize --top-k 1, a flat ip index):
# healthz and metrics; annotate's four features (labels equal tags.jsonl's,
# a catalogued image finds itself first, EMBEDDING equals its row of
# vectors.npy, dominant colours of a two-colour image); per-image errors
# (not an image, outside --allow-root, a symbolic link out, missing, over
# 20 MB) beside images that succeed; search with id-range and label filters
# against numpy; every limit (10 MB body with and without Content-Length,
# a slow body, an idle connection, the connection cap, 16 images, 64
# queries, k) and malformed body as a JSON 4xx; writes refused without the
# token, an add that a fresh process finds in the saved index, a remove;
# a worker with only a model; start-up errors; SIGTERM finishing a request
# in flight and exiting 0. Every worker is killed on any exit.
# usage: serve_worker.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$(realpath "$1")
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
py=/usr/bin/python3
check=$src/tests/cli/serve_worker_check.py
. "$src/tests/support/cli.sh"

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME ARGS...: runs `osprey serve ARGS --listen 127.0.0.1:0`, waits for
# "listening on", sets NAME_pid and NAME_addr
start() {
    local name=$1; shift
    "$osprey" serve "$@" --listen 127.0.0.1:0 >"$work/$name.out" 2>"$work/$name.err" &
    local pid=$!
    pids+=("$pid")
    local i
    for i in $(seq 1 200); do
        grep -q "listening on" "$work/$name.err" && break
        kill -0 "$pid" 2>/dev/null || fail "$name did not start: $(cat "$work/$name.err")"
        sleep 0.05
    done
    grep -q "listening on" "$work/$name.err" || fail "$name is not listening after 10 s"
    eval "${name}_pid=$pid"
    eval "${name}_addr=$(sed -n 's/.*listening on //p' "$work/$name.err")"
}

# stop NAME: SIGTERM, exit status 0, "stopped", no process left
stop() {
    local name=$1 pid
    eval "pid=\$${name}_pid"
    kill -TERM "$pid" 2>/dev/null || true
    local status=0
    wait "$pid" || status=$?
    [ "$status" -eq 0 ] || fail "$name exited $status after SIGTERM: $(cat "$work/$name.err")"
    grep -q "stopped" "$work/$name.err" || fail "$name did not say it stopped"
    ! kill -0 "$pid" 2>/dev/null || fail "$name is still running"
}

# a catalogue: 60 shapes, a model, the tags and vectors, an index
$py "$src/scripts/make-shapes" "$work/photos" --per-class 12 --size 32,64 --no-broken --spec "$work/shapes.cfg" >/dev/null
"$osprey" train --net "$work/shapes.cfg" --data "$work/photos" --epochs 1 --batch 32 --threads 2 --quiet \
    --out "$work/m.osp" 2>/dev/null
"$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --top-k 1 --out "$work/run" --threads 2 --quiet \
    "$work/photos"
"$osprey" index build --from "$work/run" --type flat --metric ip --out "$work/photos.idx" >/dev/null
cp "$work/photos/circle/0000.jpg" "$work/outside.png"      # an image outside --allow-root
printf 'test-token-%s\n' "$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/token"
chmod 600 "$work/token"

# start-up errors: clear, exit 1, nothing listening
expect_error "--model is required" "$osprey" serve --listen 127.0.0.1:0
expect_error "--index needs --catalog" "$osprey" serve --model "$work/m.osp" --index "$work/photos.idx"
expect_error "is not HOST:PORT" "$osprey" serve --model "$work/m.osp" --listen 127.0.0.1
expect_error "no catalog.db" "$osprey" serve --model "$work/m.osp" --index "$work/photos.idx" --catalog "$work/photos"
expect_error "--layer nope: " "$osprey" serve --model "$work/m.osp" --catalog "$work/run" --layer nope
expect_error "no layer 'nope'" "$osprey" serve --model "$work/m.osp" --layer nope
expect_error "--allow-root $work/none: not a folder" "$osprey" serve --model "$work/m.osp" --allow-root "$work/none"
printf 'short\n' >"$work/short"
expect_error "shorter than 16 characters" "$osprey" serve --model "$work/m.osp" --index "$work/photos.idx" \
    --catalog "$work/run" --token-file "$work/short"
expect_error "--token-file needs --index" "$osprey" serve --model "$work/m.osp" --token-file "$work/token"
"$osprey" train --net "$work/shapes.cfg" --data "$work/photos" --epochs 1 --batch 32 --threads 2 --quiet --seed 7 \
    --out "$work/other.osp" 2>/dev/null
expect_error "is not the model $work/run was made with" "$osprey" serve --model "$work/other.osp" \
    --index "$work/photos.idx" --catalog "$work/run"

# the full worker
start main --model "$work/m.osp" --index "$work/photos.idx" --catalog "$work/run" --allow-root "$work/photos" \
    --token-file "$work/token" --threads 4 --inference-threads 2 --max-connections 16 --timeout-s 2
expect_error "cannot listen on $main_addr" "$osprey" serve --model "$work/m.osp" --listen "$main_addr"
$py "$check" main "$main_addr" "$work"
# the add is durable: another process reads it from the saved index and catalogue
"$osprey" similar --index "$work/photos.idx" --catalog "$work/run" -k 1 --json "$work/new.png" >"$work/sim.json"
grep -q '"path": "uploads/new.png"' "$work/sim.json" || fail "the added image is not in the saved index: $(cat "$work/sim.json")"
$py "$check" remove "$main_addr" "$work"
"$osprey" similar --index "$work/photos.idx" --catalog "$work/run" -k 1 --json "$work/new.png" >"$work/sim.json"
! grep -q 'uploads/new.png' "$work/sim.json" || fail "the removed image is still in the saved index"

# a worker with a model alone: EMBEDDING from --layer, nothing else
start bare --model "$work/m.osp" --layer relu7 --normalize --threads 2
$py "$check" bare "$bare_addr" "$work"
stop bare

# SIGTERM: a request in flight is answered, then the worker exits 0
$py "$check" inflight "$main_addr" "$work" "$main_pid"
status=0
wait "$main_pid" || status=$?
[ "$status" -eq 0 ] || fail "the worker exited $status after SIGTERM: $(cat "$work/main.err")"
grep -q "osprey serve: stopped" "$work/main.err" || fail "no 'stopped': $(cat "$work/main.err")"
! kill -0 "$main_pid" 2>/dev/null || fail "the worker is still running"
! $py -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)" \
    "${main_addr##*:}" 2>/dev/null || fail "something still listens on $main_addr"
# a sanitizer build's reports go to the workers' stderr
if grep -q -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$work"/*.err; then
    grep -E -A20 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$work"/*.err | head -60 >&2
    fail "sanitizer reports from a worker"
fi
echo "serve_worker: ok"
