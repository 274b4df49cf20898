#!/usr/bin/env bash
# The task platform end to end on a Redis server of its own (a free
# loopback port, a password, a temporary folder): two workers run train,
# tag, embed -> index build (--after), and a sweep of 4; one worker is
# killed with SIGKILL mid-task and its task is taken over and resumed from
# its checkpoint; the sweep's one-core tasks run two at once on a worker
# of two cores; every task ends done with exactly one result. Then
# status, logs, cancel (queued and running), notify (a loopback listener),
# the events channel, the dead letters, foreign messages on the stream,
# and clear errors for bad input.
# ctest: slow (17-25 s plain on a loaded machine; 43 s to 2.5 min with the
# sanitizers, whose training tasks are slow)
# usage: platform.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$(realpath "$1")
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
py=/usr/bin/python3
pids=()
redis_pid=
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
. "$src/tests/support/cli.sh"
# grep -q that reads its input to the end: under pipefail, a writer cut
# off by grep's early exit (SIGPIPE) would fail the check it passed
grep_q() {
    local status=0
    grep -q "$@" || status=$?
    cat >/dev/null
    return $status
}

"$osprey" submit --help | grep_q "usage: osprey submit" || fail "submit --help"
for cmd in worker status logs cancel results sweep; do
    "$osprey" "$cmd" --help | grep_q "usage: osprey $cmd" || fail "$cmd --help"
done
if { "$osprey" status --broker redis://127.0.0.1:1 2>&1 || true; } | grep_q "without hiredis"; then
    expect_error "without hiredis" "$osprey" submit -- train --net x
    echo "built without hiredis: skipped"
    exit 77
fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    [ -z "${CI:-}" ] || fail "redis-server is missing"
    echo "redis-server is missing: skipped"
    exit 77
fi

free_port() { $py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
secret=platform-test-$RANDOM$RANDOM
printf '%s\n' "$secret" >"$work/password"
mkdir "$work/redis"
redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis" --save "" --appendonly yes \
    --requirepass "$secret" --logfile "$work/redis/log" &
redis_pid=$!
rcli() { redis-cli -p "$port" -a "$secret" --no-auth-warning "$@"; }
for _ in $(seq 100); do rcli ping 2>/dev/null | grep_q PONG && break; sleep 0.1; done
rcli ping | grep_q PONG || fail "redis-server did not start"
B=(--broker "redis://127.0.0.1:$port" --broker-password-file "$work/password")

# the password: in the URL, in a file, missing, wrong
"$osprey" status --broker "redis://:$secret@127.0.0.1:$port" >/dev/null || fail "password in the URL"
expect_error "NOAUTH" "$osprey" status --broker "redis://127.0.0.1:$port"
expect_error "WRONGPASS" "$osprey" status --broker "redis://:wrong@127.0.0.1:$port"
expect_error "cannot connect" "$osprey" status --broker "redis://127.0.0.1:$(free_port)"
expect_error "redis://" "$osprey" status --broker "http://127.0.0.1:$port"

# bad tasks are refused before they are queued
expect_error "not an osprey command" "$osprey" submit "${B[@]}" -- sh -c "echo hi"
expect_error "not an osprey command" "$osprey" submit "${B[@]}" -- serve --model m.osp
expect_error "has no option '--bogus'" "$osprey" submit "${B[@]}" -- train --net a.cfg --bogus 1
expect_error "needs one of its subcommands" "$osprey" submit "${B[@]}" -- index drop
expect_error "not a task id" "$osprey" submit "${B[@]}" --after x -- eval --model m.osp
expect_error "no task 999" "$osprey" submit "${B[@]}" --after 999 -- eval --model m.osp
expect_error "http:// or https://" "$osprey" submit "${B[@]}" --notify file:///etc/passwd -- eval --model m.osp
expect_error "priority must be" "$osprey" submit "${B[@]}" --priority 10 -- eval --model m.osp
expect_error "no task 999" "$osprey" status "${B[@]}" 999
expect_error "not a task id" "$osprey" logs "${B[@]}" ../x
expect_error "has no option '--nope'" "$osprey" sweep "${B[@]}" --grid 'nope=1,2' -- train --net a.cfg
expect_error "sweep grid" "$osprey" sweep "${B[@]}" --grid 'lr=' -- train --net a.cfg

# a listener for --notify: each POST body, one line
cat >"$work/listen.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[1], "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[2], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
$py "$work/listen.py" "$work/notified.jsonl" "$work/listen.port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/listen.port" ] && break; sleep 0.1; done
notify=http://127.0.0.1:$(cat "$work/listen.port")/done

# every change of state, from the channel osprey:events
"$osprey" status "${B[@]}" --watch --json >"$work/events.jsonl" &
pids+=($!)

$py "$src/scripts/make-shapes" "$work/photos" --per-class 16 --size 24,48 --no-broken --spec "$work/shapes.cfg" >/dev/null

declare -A worker_pid
start_worker() {
    local name=$1; shift
    "$osprey" worker "${B[@]}" --lapse 2 --workdir "$work/tasks" --cores 2 --name "$name" "$@" >"$work/$name.log" 2>&1 &
    worker_pid[$name]=$!
    pids+=($!)
}
# the task's record straight from its hash: polled often, so without
# starting the command and python each time ('osprey status' is checked below)
state() { rcli HGET "osprey:task:$1" state; }
field() { rcli HGET "osprey:task:$1" "$2"; }
wait_state() { # ID STATE SECONDS
    for _ in $(seq $(($3 * 10))); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.1; done
    fail "task $1 is $(state "$1"), not $2, after $3 s: $(cat "$work"/*.log)"
}

# The task that loses its worker: long enough to be killed mid-way, with
# a checkpoint every 20 steps to resume from.
long=$("$osprey" submit "${B[@]}" --priority 9 --notify "$notify" -- train --net "$work/shapes.cfg" \
    --data synthetic:3000 --epochs 1 --batch 16 --threads 1 --checkpoint-every 20)
model=$("$osprey" submit "${B[@]}" --priority 8 -- train --net "$work/shapes.cfg" --data "$work/photos" \
    --epochs 2 --batch 16 --threads 1)
tag=$("$osprey" submit "${B[@]}" --after "$model" --notify "$notify" -- tag --model "$work/tasks/$model/model.osp" \
    --out tags --threads 1 "$work/photos")
embed=$("$osprey" submit "${B[@]}" --after "$model" -- embed --model "$work/tasks/$model/model.osp" --layer relu10 \
    --out vectors --threads 1 "$work/photos")
index=$("$osprey" submit "${B[@]}" --after "$embed" -- index build --type flat --from "$work/tasks/$embed/vectors" \
    --out photos.idx)
[ "$(state "$index")" = waiting ] || fail "index build is $(state "$index"), not waiting"
"$osprey" logs "${B[@]}" "$model" --follow >"$work/model.follow" &
follow_pid=$!
sweep=$("$osprey" sweep "${B[@]}" --grid 'lr=0.05,0.01;batch=16,32' --priority 3 --cores 1 -- train --net "$work/shapes.cfg" \
    --data "$work/photos" --epochs 1 --val-split 0.25 --threads 1 --lr 0.1)
"$osprey" sweep report "${B[@]}" "$sweep" --json >"$work/sweep0.json"
sweep_tasks=$($py -c 'import json, sys; print(" ".join(r["task"] for r in json.load(open(sys.argv[1]))["rows"]))' "$work/sweep0.json")
[ "$(echo $sweep_tasks | wc -w)" -eq 4 ] || fail "the sweep queued $sweep_tasks"

start_worker A
start_worker B

# kill the long task's worker outright once it has a checkpoint
wait_state "$long" running 20
for _ in $(seq 200); do [ -f "$work/tasks/$long/model.osp.ckpt" ] && break; sleep 0.05; done
[ -f "$work/tasks/$long/model.osp.ckpt" ] || fail "no checkpoint of task $long"
victim=$(field "$long" worker)
{ kill -9 "${worker_pid[$victim]}" && wait "${worker_pid[$victim]}"; } 2>/dev/null || true
start_worker C

all="$long $model $tag $embed $index $sweep_tasks"
for t in $all; do wait_state "$t" done 90; done
[ "$(field "$long" tries)" = 2 ] || fail "task $long ran $(field "$long" tries) times, not 2"
[ "$(field "$long" worker)" != "$victim" ] || fail "task $long was not taken over"
"$osprey" logs "${B[@]}" "$long" >"$work/long.log"
grep -q -- "--- try 2 ---" "$work/long.log" || fail "no second try in the log: $(cat "$work/long.log")"
grep -q "(resumed)" "$work/long.log" || fail "the second try did not resume: $(cat "$work/long.log")"

wait "$follow_pid" || fail "logs --follow"
grep -q "saved model to model.osp" "$work/model.follow" || fail "logs --follow: $(cat "$work/model.follow")"

# results: one per task, with its files and summary
"$osprey" results "${B[@]}" "$long" | grep_q "model.osp" || fail "results $long"
for t in $all; do "$osprey" results "${B[@]}" "$t" --json >"$work/result.$t.json"; done
rcli XRANGE osprey:history - + >"$work/history.txt"
"$osprey" sweep report "${B[@]}" "$sweep" >"$work/sweep.txt"
"$osprey" sweep report "${B[@]}" "$sweep" --json >"$work/sweep.json"
$py - "$work" "$long $model $tag $embed $index" "$sweep_tasks" <<'PY'
import json, os, sys
work, main, sweep = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
ids = main + sweep
words = open(f"{work}/history.txt").read().split("\n")
# XRANGE: entry id, then task ID state STATE, a line each
ended = {}
for i in range(0, len(words) - 4, 5):
    assert words[i + 1] == "task" and words[i + 3] == "state", words[i:i + 5]
    ended.setdefault(words[i + 2], []).append(words[i + 4])
for t in ids:
    assert ended.get(t) == ["done"], (t, ended.get(t))
    r = json.load(open(f"{work}/result.{t}.json"))
    assert r["state"] == "done" and r["exit_code"] == 0, r
    assert os.path.isdir(r["dir"]) and r["dir"].endswith("/" + t), r
    names = {f["path"] for f in r["files"]}
    assert all(os.path.isfile(os.path.join(r["dir"], n)) for n in names), r
long, model, tag, embed, index = main
for t in [long, model] + sweep:
    assert "model.osp" in {f["path"] for f in json.load(open(f"{work}/result.{t}.json"))["files"]}, t
    assert "accuracy" in json.load(open(f"{work}/result.{t}.json"))["summary"], t
assert "tags/tags.jsonl" in {f["path"] for f in json.load(open(f"{work}/result.{tag}.json"))["files"]}
assert len(open(f"{work}/tasks/{tag}/tags/tags.jsonl").readlines()) == 80
assert "vectors/vectors.npy" in {f["path"] for f in json.load(open(f"{work}/result.{embed}.json"))["files"]}
assert "photos.idx" in {f["path"] for f in json.load(open(f"{work}/result.{index}.json"))["files"]}
# priorities: the train task of priority 8 started before the sweep's (3),
# though the two workers took the tasks when all were queued
started = {t: json.load(open(f"{work}/result.{t}.json"))["started"] for t in ids}
assert started[model] <= min(started[t] for t in sweep), started
# the sweep's tasks need one core: a worker of two ran two at once
spans = [(json.load(open(f"{work}/result.{t}.json"))["worker"], json.load(open(f"{work}/result.{t}.json"))["started"],
          json.load(open(f"{work}/result.{t}.json"))["ended"]) for t in sweep]
assert any(a[0] == b[0] and a[1] < b[2] and b[1] < a[2] for i, a in enumerate(spans) for b in spans[i + 1:]), spans
# the sweep: its four settings, best first
rows = json.load(open(f"{work}/sweep.json"))["rows"]
assert sorted(r["task"] for r in rows) == sorted(sweep), rows
assert {(r["params"]["lr"], r["params"]["batch"]) for r in rows} == {("0.05", "16"), ("0.05", "32"), ("0.01", "16"), ("0.01", "32")}
assert all(r["metric"] == "val_top1" for r in rows), rows
values = [r["value"] for r in rows]
assert values == sorted(values, reverse=True), values
table = open(f"{work}/sweep.txt").read().splitlines()
assert table[2].split()[0] == rows[0]["task"], table
PY
# each sweep task ran with its own settings: --lr replaced, not doubled
for t in $sweep_tasks; do
    "$osprey" status "${B[@]}" "$t" | grep_q -- "--lr 0.0[15] .*--batch [13][62]" || fail "sweep task $t: $("$osprey" status "${B[@]}" "$t")"
done
"$osprey" status "${B[@]}" | grep_q "^$long  *done " || fail "status table"
"$osprey" status "${B[@]}" "$long" --json | $py -c 'import json, sys; r = json.load(sys.stdin); assert r["state"] == "done" and r["tries"] == 2, r' \
    || fail "status --json"
"$osprey" status "${B[@]}" "$long" | grep_q "^tries *2 of 3" || fail "status ID: $("$osprey" status "${B[@]}" "$long")"
"$osprey" status "${B[@]}" | grep_q "^2 workers" || fail "status lists the live workers: $("$osprey" status "${B[@]}")"

# cancel: a queued task (no worker has its tag) and the task waiting for it
queued=$("$osprey" submit "${B[@]}" --tags nowhere -- eval --model m.osp --data x)
after_queued=$("$osprey" submit "${B[@]}" --after "$queued" --notify "$notify" -- eval --model m.osp --data x)
sleep 0.5
[ "$(state "$queued")" = queued ] || fail "a task no worker fits is $(state "$queued")"
"$osprey" cancel "${B[@]}" "$queued" | grep_q "cancelled" || fail "cancel queued"
[ "$(state "$queued")" = cancelled ] && [ "$(state "$after_queued")" = cancelled ] || fail "cancel queued: $(state "$after_queued")"
expect_error "no result yet" "$osprey" results "${B[@]}" "$(
    "$osprey" submit "${B[@]}" --tags nowhere -- eval --model m.osp --data x)"
# a random part of a grid (its tasks fit no worker, and are cancelled)
picked=$("$osprey" sweep "${B[@]}" --grid 'lr=0.1,0.2,0.3;batch=8,16' --random 2 --seed 5 --tags nowhere --json \
    -- train --net "$work/shapes.cfg" --data x)
$py -c 'import json, sys; assert len(json.loads(sys.argv[1])["tasks"]) == 2' "$picked" || fail "sweep --random 2: $picked"
for t in $($py -c 'import json, sys; print(" ".join(json.loads(sys.argv[1])["tasks"]))' "$picked"); do
    "$osprey" cancel "${B[@]}" "$t" >/dev/null
done
# a running one: its worker stops the command
running=$("$osprey" submit "${B[@]}" --priority 9 --notify "$notify" -- train --net "$work/shapes.cfg" \
    --data synthetic:100000 --epochs 1 --batch 16 --threads 1)
wait_state "$running" running 20
"$osprey" cancel "${B[@]}" "$running" | grep_q "cancelling" || fail "cancel running"
wait_state "$running" cancelled 15
"$osprey" cancel "${B[@]}" "$running" | grep_q "already ended: cancelled" || fail "cancel twice"
pgrep -f "$work/shapes.cfg --data synthetic:100000" >/dev/null && fail "the cancelled command still runs"

# the dead letters: a task whose worker dies on each of its tries
start_worker D --tags doomed --gpus 1
doomed=$("$osprey" submit "${B[@]}" --tags doomed --max-tries 1 -- train --net "$work/shapes.cfg" \
    --data synthetic:200000 --epochs 1 --batch 16 --threads 1)
wait_state "$doomed" running 20
{ kill -9 "${worker_pid[D]}" && wait "${worker_pid[D]}"; } 2>/dev/null || true
start_worker E --tags doomed --gpus 1
wait_state "$doomed" dead 30
[ "$(rcli XLEN osprey:dead)" = 1 ] || fail "osprey:dead holds $(rcli XLEN osprey:dead)"
field "$doomed" reason | grep_q "worker was lost" || fail "dead reason: $(field "$doomed" reason)"

# a task that needs a GPU goes to the worker that has one
gpu=$("$osprey" submit "${B[@]}" --gpus 1 -- info "$work/tasks/$model/model.osp")
wait_state "$gpu" done 20
[ "$(field "$gpu" worker)" = E ] || fail "the GPU task ran on $(field "$gpu" worker)"

# foreign and malformed messages are moved aside; the workers go on
rcli XADD osprey:queue:5 '*' foo bar >/dev/null
rcli XADD osprey:queue:5 '*' task 999999 v 1 >/dev/null
rcli XADD osprey:queue:7 '*' task '../../x' v 1 >/dev/null
for _ in $(seq 50); do [ "$(rcli XLEN osprey:malformed)" = 3 ] && break; sleep 0.1; done
[ "$(rcli XLEN osprey:malformed)" = 3 ] || fail "osprey:malformed holds $(rcli XLEN osprey:malformed)"
grep -q "moved to osprey:malformed: message: 2 fields" "$work"/*.log || fail "not logged: $(cat "$work"/*.log)"
after=$("$osprey" submit "${B[@]}" -- info "$work/tasks/$model/model.osp")
wait_state "$after" done 20
"$osprey" logs "${B[@]}" "$after" | grep_q "79301" || fail "logs of info"
for w in A B C E; do
    [ "$w" = "$victim" ] && continue
    kill -0 "${worker_pid[$w]}" || fail "worker $w died: $(cat "$work/$w.log")"
done

# notifications and events
for _ in $(seq 50); do [ "$(wc -l <"$work/notified.jsonl")" -ge 4 ] && break; sleep 0.1; done
$py - "$work" "$long" "$tag" "$after_queued" "$running" <<'PY'
import json, sys
work, long, tag, after_queued, running = sys.argv[1:]
got = {}
for line in open(f"{work}/notified.jsonl"):
    r = json.loads(line)
    got.setdefault(r["id"], []).append(r["state"])
want = {long: ["done"], tag: ["done"], after_queued: ["cancelled"], running: ["cancelled"]}
assert got == want, got
events = [json.loads(l) for l in open(f"{work}/events.jsonl")]
seen = [e["state"] for e in events if e["task"] == long]
assert seen == ["queued", "running", "running", "done"], seen
PY

# the workers stop at SIGTERM, between tasks
for w in A B C E; do
    [ "$w" = "$victim" ] && continue
    kill -TERM "${worker_pid[$w]}"
    wait "${worker_pid[$w]}" || fail "worker $w exited $?"
    grep -q "stopped" "$work/$w.log" || fail "worker $w: $(cat "$work/$w.log")"
done
echo "platform: ok"
