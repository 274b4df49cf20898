# Helpers for the serving tests (tests/cli/serve_*.sh), sourced after
# tests/support/cli.sh with $osprey, $src and $work set: a catalogue of
# generated shapes in shards, and `osprey serve` / `osprey route`
# processes on loopback that are killed on every way out.
py=/usr/bin/python3
SERVE_PIDS=()

# Kills every process started here (SIGKILL: a test that wants a clean
# stop checks it itself), then removes $work unless KEEP_WORK is set.
serve_cleanup() {
    local pid
    for pid in "${SERVE_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${SERVE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}

# start NAME COMMAND...: runs it in the background (stderr and stdout into
# $work/NAME.log), waits up to 60 s for its "listening on HOST:PORT" line
# and sets ${NAME}_addr, ${NAME}_pid.
start() {
    local name=$1; shift
    "$@" >"$work/$name.log" 2>&1 &
    local pid=$!
    SERVE_PIDS+=("$pid")
    local i addr=""
    for i in $(seq 1 600); do
        addr=$(sed -n 's/^.*listening on \([^ ]*\)$/\1/p' "$work/$name.log" | head -1)
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || fail "$name exited before listening: $(tail -5 "$work/$name.log")"
        sleep 0.1
    done
    [ -n "$addr" ] || fail "$name did not say 'listening on' within 60 s: $(tail -5 "$work/$name.log")"
    printf -v "${name}_addr" '%s' "$addr"
    printf -v "${name}_pid" '%s' "$pid"
}

# A catalogue in $work: photos/ (N_PER_CLASS shapes of 5 classes), a model
# m.osp, all/ + all.idx (every image: the one-shard reference) and, for
# each shard i of $1, s$i/ + s$i.idx, as `osprey tag --shard i/N` makes
# them; flat inner-product indexes over L2-normalised relu7 vectors.
make_catalog() {
    local shards=$1 per_class=${N_PER_CLASS:-24} i
    $py "$src/scripts/make-shapes" "$work/photos" --per-class "$per_class" --size 32,64 \
        --spec "$work/shapes.cfg" >/dev/null
    "$osprey" train --net "$work/shapes.cfg" --data "$work/photos" --epochs 6 --batch 32 --threads 2 \
        --quiet --out "$work/m.osp" 2>/dev/null || fail "training the test model"
    "$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --threads 2 --quiet \
        --out "$work/all" "$work/photos" 2>/dev/null
    "$osprey" index build --from "$work/all" --type flat --metric ip --out "$work/all.idx" >/dev/null
    for ((i = 0; i < shards; i++)); do
        "$osprey" tag --model "$work/m.osp" --embed relu7 --normalize --threads 2 --quiet \
            --shard "$i/$shards" --out "$work/s$i" "$work/photos" 2>/dev/null
        "$osprey" index build --from "$work/s$i" --type flat --metric ip --out "$work/s$i.idx" >/dev/null
    done
}

# replica NAME FROM: a worker's own copy of shard folder FROM and its
# index (writes change them), as $work/NAME/ and $work/NAME.idx.
replica() {
    cp -r "$work/$2" "$work/$1"
    cp "$work/$2.idx" "$work/$1.idx"
}

# worker NAME [options]: `osprey serve` over $work/NAME/ + NAME.idx.
worker() {
    local name=$1; shift
    start "$name" "$osprey" serve --model "$work/m.osp" --index "$work/$name.idx" --catalog "$work/$name" \
        --listen "${LISTEN:-127.0.0.1:0}" --allow-root "$work/photos" --token-file "$work/token" --threads 2 "$@"
}

# A free TCP port on loopback (for a process restarted on its old one,
# the port is known; this is for the rest).
free_port() {
    $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# http METHOD URL [BODY_FILE] [HEADER]: prints the status, the body into
# $work/body.
http() {
    local method=$1 url=$2 data=${3:-} header=${4:-}
    local args=(-s -o "$work/body" -w '%{http_code}' -X "$method" --max-time 30)
    [ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "@$data")
    [ -n "$header" ] && args+=(-H "$header")
    curl "${args[@]}" "$url" || true
}
