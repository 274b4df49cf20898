#!/usr/bin/env bash
# The command starts itself again with its library settings (tools/osprey.c):
# that restart keeps every processor the process may run on, also where
# OMP_PROC_BIND had OpenMP bind the first thread to one of them as it loaded
# (the restarted command once saw one core and ran one thread).
# usage: environment.sh path/to/osprey   (run from the build directory)
set -euo pipefail
osprey=$1
src=${OSP_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/support/cli.sh"

cpus=$(nproc)
if [ "$cpus" -lt 2 ]; then
    echo "one processor here: nothing to check"
    exit 77
fi
# Inference with no wait policy of the user's: the command sets one and
# starts again.
for bind in false true close spread; do
    out=$(env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u OMP_NUM_THREADS OMP_PROC_BIND=$bind \
        "$osprey" bench --net "$src/nets/lenet.cfg" --batch 1 --steps 1 --reps 1 --json)
    threads=$(echo "$out" | sed -n 's/.*"threads": *\([0-9]*\).*/\1/p')
    [ "$threads" = "$cpus" ] || fail "OMP_PROC_BIND=$bind: $threads threads on $cpus processors"
done
echo "ok"
