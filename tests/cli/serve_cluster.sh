#!/usr/bin/env bash
# Serving end to end on loopback: a catalogue of generated shapes tagged in
# two shards (osprey tag --shard i/2), 2 shards x 2 replicas of `osprey
# serve` behind one `osprey route`, and a worker over one index of the
# whole set as the reference. Through the router: search and annotate
# answers equal the one index's; a worker killed with SIGKILL under load
# costs no request; a shard with both replicas down gives a partial answer
# naming it, and comes back; writes need the token and reach every replica
# of the image's shard; limits and malformed bodies are clear 4xx errors;
# catalogue images are served from below --allow-root only; SIGTERM lets
# a request in flight finish and exits 0.
# usage: serve_cluster.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$(realpath "$1")
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
. "$src/tests/support/cli.sh"
. "$src/tests/serve/cluster.sh"
trap serve_cleanup EXIT
check=$src/tests/serve/serve_check.py
command -v curl >/dev/null || fail "curl is missing"

make_catalog 2
printf 'test-token-0123456789abcdef\n' >"$work/token"
chmod 600 "$work/token"
for r in s0a s0b; do replica $r s0; done
for r in s1a s1b; do replica $r s1; done
replica ref all

worker ref
for r in s0a s0b s1a s1b; do worker $r; done
start router "$osprey" route --listen 127.0.0.1:0 --shard "$s0a_addr,$s0b_addr" --shard "$s1a_addr,$s1b_addr" \
    --allow-root "$work/photos" --health-ms 200 --timeout-ms 5000 --threads 8
R=http://$router_addr

# the router's view: every worker up
[ "$(http GET "$R/healthz")" = 200 ] || fail "healthz: $(cat "$work/body")"
$py - "$work/body" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
assert h["status"] == "ok" and h["workersUp"] == 4, h
assert [s["live"] for s in h["shards"]] == [2, 2], h
PY

# answers through the router equal the one index's
$py "$check" equal-search "$ref_addr" "$router_addr" "$work/all"
$py "$check" equal-annotate "$ref_addr" "$router_addr" "$work/photos"

# round robin: every replica served searches
for i in $(seq 1 8); do
    $py - "$R" "$work/all" <<'PY' >/dev/null
import json, sys, urllib.request, numpy as np
v = np.load(sys.argv[2] + "/vectors.npy")[0].tolist()
urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/v1/vectors:search",
    data=json.dumps({"queries": [{"vector": v, "k": 3}]}).encode(), headers={"Content-Type": "application/json"}))
PY
done
for r in s0a s0b s1a s1b; do
    eval "addr=\$${r}_addr"
    n=$(curl -s "http://$addr/metrics" | sed -n 's/^osprey_worker_requests_total{route="search",code="2xx"} \([0-9]*\)$/\1/p')
    [ "${n:-0}" -gt 0 ] || fail "replica $r served no search: the router does not spread them"
done

# a worker killed with SIGKILL under load: no request fails
$py "$check" load "$router_addr" "$ref_addr" "$work/all" "$work/photos" 5 "$work/load.json" &
load_pid=$!
SERVE_PIDS+=("$load_pid")
sleep 1.5
{ kill -KILL "$s0a_pid" && wait "$s0a_pid"; } 2>/dev/null || true
wait "$load_pid" || fail "the load run failed"
$py - "$work/load.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["requests"] >= 20, f"only {s['requests']} requests in the load run"
assert not s["failures"], f"{len(s['failures'])} of {s['requests']} requests failed, first: {s['failures'][:3]}"
PY
curl -s "$R/metrics" >"$work/metrics"
grep -q '^osprey_router_worker_up{worker="'"$s0a_addr"'",shard="0"} 0$' "$work/metrics" ||
    fail "the killed worker is not marked down in the router's metrics"

# both replicas of shard 0 down: a partial answer naming it, hits of shard 1 only
{ kill -KILL "$s0b_pid" && wait "$s0b_pid"; } 2>/dev/null || true
$py - "$R" "$work/all" <<'PY'
import json, sys, urllib.request, numpy as np
v = np.load(sys.argv[2] + "/vectors.npy")[:2].tolist()
body = {"queries": [{"vector": x, "k": 10} for x in v]}
r = urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/v1/vectors:search",
    data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}))
assert r.status == 200
a = json.load(r)
assert a.get("partial") is True and a.get("missingShards") == [0], a
for res in a["results"]:
    assert len(res["hits"]) == 10 and all(int(h["id"]) % 2 == 1 for h in res["hits"]), res
h = json.load(urllib.request.urlopen(sys.argv[1] + "/healthz"))
assert h["status"] == "degraded" and h["shards"][0]["live"] == 0 and h["shards"][1]["live"] == 2, h
assert all("lastError" in x for x in h["shards"][0]["replicas"]), h
PY
# annotate too: labels, and similar images of shard 1 only
cat >"$work/ann1.json" <<EOF
{"requests": [{"image": {"source": {"imageUri": "$work/photos/star/0003.png"}},
  "features": [{"type": "LABEL_DETECTION"}, {"type": "WEB_DETECTION", "maxResults": 4}]}]}
EOF
[ "$(http POST "$R/v1/images:annotate" "$work/ann1.json")" = 200 ] || fail "annotate, shard 0 down: $(cat "$work/body")"
grep -q '"missingShards":\[0\]' "$work/body" || fail "annotate, shard 0 down, is not partial: $(cat "$work/body")"
grep -q '"labelAnnotations"' "$work/body" || fail "annotate, shard 0 down, lost its labels: $(cat "$work/body")"

# a replica back on its port: the health checks find it, answers are whole again
LISTEN=$s0a_addr worker s0a
for i in $(seq 1 50); do
    grep -q '"status":"ok"' <<<"$(curl -s "$R/healthz")" && break
    sleep 0.1
done
grep -q '"status":"ok"' <<<"$(curl -s "$R/healthz")" || fail "the router did not see s0a come back: $(curl -s "$R/healthz")"
$py "$check" equal-search "$ref_addr" "$router_addr" "$work/all" >/dev/null
LISTEN=$s0b_addr worker s0b
for i in $(seq 1 50); do
    grep -q '"workersUp":4' <<<"$(curl -s "$R/healthz")" && break
    sleep 0.1
done

# writes: the token is needed; an added image reaches both replicas of its
# shard (id % 2) and is found through the router; a delete removes it
new=$work/photos/new.jpg
cp "$work/photos/circle/0004.jpg" "$new"
cat >"$work/add.json" <<EOF
{"requests": [{"image": {"source": {"imageUri": "$new"}}, "path": "$new"}]}
EOF
[ "$(http POST "$R/v1/images" "$work/add.json")" = 401 ] || fail "an add without a token: $(cat "$work/body")"
grep -q UNAUTHENTICATED "$work/body" || fail "401 without a JSON error: $(cat "$work/body")"
[ "$(http POST "$R/v1/images" "$work/add.json" 'Authorization: Bearer wrong-token-0123456789')" = 401 ] ||
    fail "an add with a wrong token: $(cat "$work/body")"
[ "$(http POST "$R/v1/images" "$work/add.json" 'Authorization: Bearer test-token-0123456789abcdef')" = 200 ] ||
    fail "an add with the token: $(cat "$work/body")"
cp "$work/body" "$work/added.json"
# its id, as osp_image_id: the first 63 bits of the path's SHA-256
id=$($py -c 'import hashlib, sys; print(int.from_bytes(hashlib.sha256(sys.argv[1].encode()).digest()[:8], "big") & (2**63 - 1))' "$new")
grep -q "\"$id\"" "$work/added.json" || fail "the add's answer does not name id $id: $(cat "$work/added.json")"
shard=$((id % 2))
[ $shard = 0 ] && owners="s0a s0b" || owners="s1a s1b"
[ $shard = 0 ] && others="s1a s1b" || others="s0a s0b"
cat >"$work/q.json" <<EOF
{"requests": [{"image": {"source": {"imageUri": "$new"}}, "features": [{"type": "WEB_DETECTION", "maxResults": 3}]}]}
EOF
for r in $owners $others; do
    eval "addr=\$${r}_addr"
    [ "$(http POST "http://$addr/v1/images:annotate" "$work/q.json")" = 200 ] || fail "$r: $(cat "$work/body")"
    if [[ " $owners " == *" $r "* ]]; then
        grep -q "\"url\":\"$new\"" "$work/body" || fail "replica $r of shard $shard did not get the added image"
    else
        ! grep -q "\"url\":\"$new\"" "$work/body" || fail "$r holds an image of the other shard"
    fi
done
[ "$(http POST "$R/v1/images:annotate" "$work/q.json")" = 200 ] || fail "annotate after add: $(cat "$work/body")"
grep -q "\"url\":\"$new\"" "$work/body" || fail "the router does not find the added image: $(cat "$work/body")"
[ "$(http DELETE "$R/v1/images/$id")" = 401 ] || fail "a delete without a token: $(cat "$work/body")"
[ "$(http DELETE "$R/v1/images/$id" '' 'Authorization: Bearer test-token-0123456789abcdef')" = 200 ] ||
    fail "a delete with the token: $(cat "$work/body")"
[ "$(http POST "$R/v1/images:annotate" "$work/q.json")" = 200 ] || fail "annotate after delete: $(cat "$work/body")"
! grep -q "\"url\":\"$new\"" "$work/body" || fail "the deleted image is still found through the router"
for r in $owners; do
    eval "addr=\$${r}_addr"
    http POST "http://$addr/v1/images:annotate" "$work/q.json" >/dev/null
    ! grep -q "\"url\":\"$new\"" "$work/body" || fail "replica $r still holds the deleted image"
done
# one add over both shards: each image to its own shard, the answers joined
# in the request's order
$py - "$work/photos" "$work/add2.json" <<'PY'
import hashlib, json, shutil, sys
photos, out = sys.argv[1:3]
pid = lambda p: int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "big") & (2**63 - 1)
by_shard = {}
for i in range(100):
    p = f"{photos}/new-{i}.png"
    by_shard.setdefault(pid(p) % 2, p)
    if len(by_shard) == 2:
        break
paths = [by_shard[1], by_shard[0]]
for p, src in zip(paths, ["star/0003.png", "circle/0004.jpg"]):
    shutil.copy(f"{photos}/{src}", p)
json.dump({"requests": [{"image": {"source": {"imageUri": p}}, "path": p} for p in paths]}, open(out, "w"))
PY
[ "$(http POST "$R/v1/images" "$work/add2.json" 'Authorization: Bearer test-token-0123456789abcdef')" = 200 ] ||
    fail "an add over two shards: $(cat "$work/body")"
$py - "$work/body" "$work/add2.json" <<'PY'
import hashlib, json, sys
got, sent = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
paths = [r["path"] for r in sent["requests"]]
pid = lambda p: str(int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "big") & (2**63 - 1))
assert [r["path"] for r in got["responses"]] == paths, got
assert [r["id"] for r in got["responses"]] == [pid(p) for p in paths], got
PY
$py -c 'import json, sys; print("\n".join(r["id"] for r in json.load(open(sys.argv[1]))["responses"]))' "$work/body" >"$work/ids2"
while read -r one; do
    [ "$(http DELETE "$R/v1/images/$one" '' 'Authorization: Bearer test-token-0123456789abcdef')" = 200 ] ||
        fail "a delete of $one: $(cat "$work/body")"
done <"$work/ids2"
[ "$(http DELETE "$R/v1/images/12x" '' 'Authorization: Bearer test-token-0123456789abcdef')" = 400 ] ||
    fail "a delete of a bad id: $(cat "$work/body")"

# limits and malformed input, through the router: each a 4xx JSON error
expect_status() { # STATUS GREP METHOD PATH [BODY_FILE] [HEADER]
    local want=$1 what=$2; shift 2
    local got
    got=$(http "$@")
    [ "$got" = "$want" ] || fail "$1 $2: status $got, expected $want: $(head -c 300 "$work/body")"
    grep -q -- "$what" "$work/body" || fail "$1 $2: '$(head -c 300 "$work/body")' does not say '$what'"
}
head -c 10000001 /dev/zero | tr '\0' ' ' >"$work/big.json"
expect_status 413 PAYLOAD_TOO_LARGE POST "$R/v1/vectors:search" "$work/big.json"
expect_status 413 PAYLOAD_TOO_LARGE POST "$R/v1/images:annotate" "$work/big.json"
printf '{"queries": [{"vector": [1, 2' >"$work/bad.json"
expect_status 400 "not valid JSON" POST "$R/v1/vectors:search" "$work/bad.json"
printf '[1, 2]' >"$work/bad.json"
expect_status 400 "JSON object" POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"queries": {"vector": [1]}}' >"$work/bad.json"
expect_status 400 '\\"queries\\" must be an array' POST "$R/v1/vectors:search" "$work/bad.json"
printf '{"queries": [{"vector": [1, 2], "k": 0}]}' >"$work/bad.json"
expect_status 400 "k must be an integer" POST "$R/v1/vectors:search" "$work/bad.json"
printf '{"queries": [{"vector": [1, 2, 3]}]}' >"$work/bad.json"
expect_status 400 INVALID_ARGUMENT POST "$R/v1/vectors:search" "$work/bad.json"   # the workers' own check: a wrong dimension
printf '{"queries": [{"vector": [1, "x"]}]}' >"$work/bad.json"
expect_status 400 INVALID_ARGUMENT POST "$R/v1/vectors:search" "$work/bad.json"
$py -c '
import json, sys
r = {"image": {"source": {"imageUri": sys.argv[1]}}, "features": [{"type": "LABEL_DETECTION"}]}
json.dump({"requests": [r] * 17}, open(sys.argv[2], "w"))' "$work/photos/star/0003.png" "$work/bad.json"
expect_status 400 "at most 16" POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"requests": [{"image": {"content": "@@not base64@@"}, "features": [{"type": "LABEL_DETECTION"}]}]}' >"$work/bad.json"
expect_status 400 base64 POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"requests": [{"image": {"source": {"imageUri": "/etc/passwd"}}, "features": [{"type": "WEB_DETECTION"}]}]}' >"$work/bad.json"
[ "$(http POST "$R/v1/images:annotate" "$work/bad.json")" = 200 ] && grep -q '"error"' "$work/body" &&
    ! grep -q root: "$work/body" || fail "an imageUri outside the root: $(head -c 300 "$work/body")"
printf '{"requests": [{"image": {"content": "aGVsbG8="}, "features": [{"type": "FACE_DETECTION"}]}]}' >"$work/bad.json"
expect_status 400 FACE_DETECTION POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"requests": [{"image": {"content": "aGVsbG8="}, "features": [{"type": "WEB_DETECTION", "maxResults": -1}]}]}' >"$work/bad.json"
expect_status 400 maxResults POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"requests": [{"image": {"content": "aGVsbG8="}, "features": [{"type": "WEB_DETECTION", "maxResults": 1e300}]}]}' >"$work/bad.json"
expect_status 400 maxResults POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"requests": [1]}' >"$work/bad.json"
expect_status 400 "must be an object" POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"requests": [{"image": {"content": "aGVsbG8="}, "features": 5}]}' >"$work/bad.json"
expect_status 400 features POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"requests": []}' >"$work/bad.json"
expect_status 400 requests POST "$R/v1/images:annotate" "$work/bad.json"
printf '{"requests": [{"image": {"content": "aGVsbG8="}}]}' >"$work/bad.json"
expect_status 400 "path is missing" POST "$R/v1/images" "$work/bad.json" 'Authorization: Bearer test-token-0123456789abcdef'
expect_status 404 NOT_FOUND GET "$R/v1/nothing"
expect_status 405 "" GET "$R/v1/vectors:search"
expect_status 400 "JSON object" POST "$R/v1/vectors:search"

# catalogue images: below --allow-root only
[ "$(http GET "$R/v1/catalog/image?path=$work/photos/star/0003.png")" = 200 ] || fail "a catalogue image"
cmp -s "$work/body" "$work/photos/star/0003.png" || fail "the catalogue image's bytes differ"
ln -s /etc/passwd "$work/photos/link.jpg"
cp "$work/token" "$work/photos/secret.jpg"
expect_status 403 PERMISSION_DENIED GET "$R/v1/catalog/image?path=/etc/passwd"
expect_status 403 PERMISSION_DENIED GET "$R/v1/catalog/image?path=$work/photos/../token"
expect_status 403 PERMISSION_DENIED GET "$R/v1/catalog/image?path=$work/photos/link.jpg"
expect_status 403 "not a JPEG" GET "$R/v1/catalog/image?path=$work/photos/secret.jpg"
expect_status 404 NOT_FOUND GET "$R/v1/catalog/image?path=$work/photos/none.jpg"
expect_status 400 path= GET "$R/v1/catalog/image"
[ "$(http GET "$R/")" = 200 ] && grep -q "/v1/images:annotate" "$work/body" || fail "the web page"
curl -s "$R/metrics" >"$work/metrics"
grep -q '^osprey_router_requests_total{route="search",code="2xx"} [1-9]' "$work/metrics" ||
    fail "the router's metrics count no search"
grep -q '^osprey_router_partial_total [1-9]' "$work/metrics" || fail "the partial answers are not counted"

# SIGTERM with a request in flight: it is answered, then the router exits 0.
# The workers of shard 0 are stopped meanwhile so that the request waits for
# them; this router's health checks are rare enough not to mark them down
# before the request comes.
{ kill -KILL "$router_pid" && wait "$router_pid"; } 2>/dev/null || true
start router "$osprey" route --listen 127.0.0.1:0 --shard "$s0a_addr,$s0b_addr" --shard "$s1a_addr,$s1b_addr" \
    --health-ms 10000 --timeout-ms 8000
R=http://$router_addr
kill -STOP "$s0a_pid" "$s0b_pid"
cat >"$work/s.json" <<EOF
{"queries": [{"vector": $($py -c 'import numpy as np, sys; print(np.load(sys.argv[1])[0].tolist())' "$work/all/vectors.npy"), "k": 5}]}
EOF
curl -s -o "$work/inflight.json" -w '%{http_code}' --max-time 30 -H 'Content-Type: application/json' \
    --data-binary "@$work/s.json" "$R/v1/vectors:search" >"$work/inflight.status" &
curl_pid=$!
sleep 0.5
kill -TERM "$router_pid"
sleep 0.5
kill -0 "$router_pid" 2>/dev/null || fail "the router exited with a request in flight"
kill -CONT "$s0a_pid" "$s0b_pid"
status=0
wait "$router_pid" || status=$?
[ $status -eq 0 ] || fail "the router exited $status on SIGTERM: $(tail -3 "$work/router.log")"
wait "$curl_pid" || true
[ "$(cat "$work/inflight.status")" = 200 ] || fail "the request in flight at SIGTERM: $(cat "$work/inflight.status") $(cat "$work/inflight.json")"
! grep -q partial "$work/inflight.json" || fail "the request in flight at SIGTERM was partial"
curl -s --max-time 2 "$R/healthz" >/dev/null && fail "the router still answers after SIGTERM"

# a worker given as the wrong shard (its catalogue says which it holds) is
# kept out: its answers would make every merge wrong
start swapped "$osprey" route --listen 127.0.0.1:0 --shard "$s1a_addr" --shard "$s0a_addr" --health-ms 200
[ "$(http GET "http://$swapped_addr/healthz")" = 503 ] || fail "a router over swapped shards: $(cat "$work/body")"
grep -q "holds shard 1/2, not 0/2" "$work/body" || fail "the swapped shard is not named: $(cat "$work/body")"
{ kill -KILL "$swapped_pid" && wait "$swapped_pid"; } 2>/dev/null || true

# bad command lines: one clear error each
expect_error "--listen and at least one --shard" "$osprey" route --listen 127.0.0.1:0
expect_error "not HOST:PORT" "$osprey" route --listen 127.0.0.1:0 --shard nowhere
expect_error "given twice" "$osprey" route --listen 127.0.0.1:0 --shard 127.0.0.1:9,127.0.0.1:9
expect_error "allow-root" "$osprey" route --listen 127.0.0.1:0 --shard 127.0.0.1:9 --allow-root "$work/none"
echo "cli serve_cluster: all checks passed"
