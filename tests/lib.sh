# Test helpers shared by tests/*.sh (sourced by tests/run.sh).
# Each test is a shell function; it returns 0 (pass), 1 (fail) or 77 (skip,
# with the reason in $SKIP_REASON).  Failures print what was expected and
# the tail of what was seen.

HYVE=${HYVE:-$PWD/hyve}
GUEST=${GUEST:-$PWD/guests/testguest/testguest.elf}
TMP=${TMPDIR:-/tmp}/hyve-tests.$$
mkdir -p "$TMP"

SKIP_REASON=""
OUT="" ERR="" RC=0

have_kvm() {
	if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
		SKIP_REASON="/dev/kvm missing or not accessible"
		return 1
	fi
	return 0
}

# run_hyve TIMEOUT ARGS... : runs hyve, stdin from /dev/null unless
# HYVE_STDIN names a file; sets OUT (stdout file), ERR (stderr file), RC.
run_hyve() {
	local t=$1
	shift
	OUT=$TMP/out.$RANDOM ERR=$TMP/err.$RANDOM
	timeout -k 5 "$t" "$HYVE" "$@" <"${HYVE_STDIN:-/dev/null}" >"$OUT" 2>"$ERR"
	RC=$?
}

# run_guest TIMEOUT CMDLINE HYVE-ARGS...: boots the test guest with
# pc-testdev (debug-exit) and com1 on stdio.
run_guest() {
	local t=$1 cmd=$2
	shift 2
	run_hyve "$t" -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="$cmd" "$@" testvm
}

show() {
	echo "    --- exit status $RC; stdout (tail):"
	tail -n 15 "$OUT" 2>/dev/null | sed 's/^/    | /'
	echo "    --- stderr (tail):"
	tail -n 8 "$ERR" 2>/dev/null | sed 's/^/    | /'
}

expect_rc() {
	if [ "$RC" -ne "$1" ]; then
		echo "    expected exit status $1, got $RC"
		show
		return 1
	fi
}

expect_out() {
	if ! grep -qE -- "$1" "$OUT"; then
		echo "    expected stdout to match: $1"
		show
		return 1
	fi
}

expect_err() {
	if ! grep -qE -- "$1" "$ERR"; then
		echo "    expected stderr to match: $1"
		show
		return 1
	fi
}

# A bad-input error: exactly one "hyve: error:" line naming $2, status $1.
expect_one_error() {
	expect_rc "$1" || return 1
	local n
	n=$(grep -c '^hyve: error:' "$ERR")
	if [ "$n" -ne 1 ]; then
		echo "    expected exactly one error line, got $n"
		show
		return 1
	fi
	expect_err "$2"
}
