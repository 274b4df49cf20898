# Helpers for the end-to-end tests in tests/cli/, sourced after they set
# $work (their scratch directory).

fail() { echo "FAIL: $*" >&2; exit 1; }

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
