# Helpers for the end-to-end tests in tests/cli/, sourced after they set
# $work (their scratch directory).

fail() { echo "FAIL: $*" >&2; exit 1; }

# need_mpi: Open MPI's mpirun, allowed to run as root and to oversubscribe
# the cores. Without it the test is skipped (exit 77), except in CI, where
# scripts/install-deps has installed it and its absence is an error.
need_mpi() {
    if ! command -v mpirun >/dev/null; then
        [ -n "${CI:-}" ] && fail "mpirun is missing (scripts/install-deps installs it)"
        echo "SKIP: mpirun is missing (scripts/install-deps installs Open MPI)"
        exit 77
    fi
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
}

# The lines of stderr that expect_error counts: all of them (a test whose
# input makes the command warn redefines it to leave the warnings out).
error_lines() { wc -l <"$work/err"; }

# expect_error "what it must say" command...: exit status 1 and a message
# on stderr that says it, in a line or two.
expect_error() {
    local want=$1; shift
    local status=0
    "$@" >"$work/out" 2>"$work/err" || status=$?
    [ "$status" -eq 1 ] || fail "'$*' exited $status, expected 1: $(cat "$work/err")"
    grep -q -- "$want" "$work/err" || fail "'$*' said '$(cat "$work/err")', expected '$want'"
    [ "$(error_lines)" -le 2 ] || fail "'$*' printed more than a line or two"
}

# mnist_subset SRC DST N: an MNIST folder in DST with the first N training
# digits of SRC (for a quick run) and all of SRC's test digits.
mnist_subset() {
    mkdir -p "$2"
    /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import shutil, struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name, size in (("train-images-idx3-ubyte", 784), ("train-labels-idx1-ubyte", 1)):
    b = open(f"{src}/{name}", "rb").read()
    head = 16 if size > 1 else 8
    out = bytearray(b[:head]); out[4:8] = struct.pack(">I", n)
    open(f"{dst}/{name}", "wb").write(bytes(out) + b[head:head + n * size])
for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    shutil.copy(f"{src}/{name}", dst)
PY
}
