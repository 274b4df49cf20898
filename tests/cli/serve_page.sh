#!/usr/bin/env bash
# The router's web page in headless Chromium (Debian's chromium): load /,
# choose an image, and see its labels and a grid of similar images served
# from the catalogue through the router; a screenshot is saved as
# serve_page.png in the build directory. 2 shards x 1 worker.
# usage: serve_page.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$(realpath "$1")
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
. "$src/tests/support/cli.sh"
. "$src/tests/serve/cluster.sh"
trap serve_cleanup EXIT
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    [ -n "${CI:-}" ] && fail "$chromium is missing (scripts/install-deps installs it)"
    echo "SKIP: $chromium is missing (scripts/install-deps installs it)"
    exit 77
fi

make_catalog 2
printf 'test-token-0123456789abcdef\n' >"$work/token"
worker s0
worker s1
start router "$osprey" route --listen 127.0.0.1:0 --shard "$s0_addr" --shard "$s1_addr" \
    --allow-root "$work/photos" --health-ms 500
# a copy of a catalogue image, uploaded as a person would: its own copy is
# the nearest
cp "$work/photos/star/0003.png" "$work/query.png"
shot=$PWD/serve_page.png
rm -f "$shot"
$py "$src/tests/serve/page_check.py" "http://$router_addr/" "$work/query.png" "$shot" 12 "$chromium" \
    >"$work/page.json" || fail "the page: $(tail -c 2000 "$work/page.json")"
$py - "$work/page.json" "$work/photos/star/0003.png" <<'PY'
import json, sys, urllib.parse
shown = json.load(open(sys.argv[1]))
assert 1 <= len(shown["labels"]) <= 5, shown["labels"]
assert shown["status"].startswith("Done"), shown["status"]
first = urllib.parse.unquote(shown["similar"][0]["src"].split("path=", 1)[1])
assert first == sys.argv[2], f"the nearest image is {first}, not the image's own copy"
assert all(x["width"] > 0 for x in shown["similar"])
assert not shown["warning"], shown["warning"]
PY
[ -s "$shot" ] || fail "no screenshot"
echo "cli serve_page: all checks passed (screenshot: $shot)"
