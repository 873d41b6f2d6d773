#!/bin/bash
# hyve test runner: unit tests (C, no KVM needed), then integration tests
# that boot real guests.
#   tests/run.sh [-k PATTERN] [-x PATTERN] [--repeat N] [--slow]
# -k: an extended regular expression matched anywhere in a test's name;
# -x: leave out the tests whose name matches this one.
# --repeat N: run each selected test N times in a row (hunting flaky tests);
# a test counts once per run, and the summary lists which runs failed.
# Ends with the 10 slowest tests and "N passed, N failed, N skipped".
#
# Isolation: everything a run makes (images, logs, sockets, VM control
# sockets via HYVE_RUN_DIR) lives under one directory, $TMP, removed at the
# end; test VMs are named with the runner's PID, so nothing here can reach
# a VM the suite did not start.
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh

PATTERN=""
EXCLUDE=""
REPEAT=1
SLOW=${HYVE_SLOW_TESTS:-0}
while [ $# -gt 0 ]; do
	case $1 in
	-k) PATTERN=$2; shift 2 ;;
	-x) EXCLUDE=$2; shift 2 ;;
	--repeat) REPEAT=$2; shift 2 ;;
	--slow) SLOW=1; shift ;;
	*) echo "usage: $0 [-k PATTERN] [-x PATTERN] [--repeat N] [--slow]"; exit 2 ;;
	esac
done
case $REPEAT in '' | *[!0-9]* | 0) echo "run.sh: --repeat wants a positive number"; exit 2 ;; esac

PASSED=0 FAILED=0 SKIPPED=0
FAILED_NAMES=()
DURATIONS=$TMP/durations

# A failing test's log says why on its own: the tail of the guest's serial
# output and of hyve's stderr, unless the test already showed them.
show_failure_context() {
	[ "$SHOWN" = 1 ] && return
	if ! { [ -n "$OUT" ] && [ -s "$OUT" ]; } && ! { [ -n "$ERR" ] && [ -s "$ERR" ]; }; then
		return
	fi
	echo "    --- last serial/stdout lines ($OUT):"
	tail -n 20 "$OUT" 2>/dev/null | tr -d '\r' | sed 's/^/    | /'
	echo "    --- hyve stderr (tail, $ERR):"
	tail -n 10 "$ERR" 2>/dev/null | sed 's/^/    | /'
}

run_test() {
	local name=$1 i
	if [ -n "$PATTERN" ] && ! [[ $name =~ $PATTERN ]]; then
		return
	fi
	if [ -n "$EXCLUDE" ] && [[ $name =~ $EXCLUDE ]]; then
		return
	fi
	for ((i = 1; i <= REPEAT; i++)); do
		run_one "$name" "$i"
	done
}

run_one() {
	local name=$1 iter=$2 label=$1
	[ "$REPEAT" -gt 1 ] && label="$name [$iter/$REPEAT]"
	SKIP_REASON="" SHOWN=0 OUT="" ERR="" RC=0
	local start=$SECONDS
	"$name"
	local rc=$?
	local dt=$((SECONDS - start))
	# Whatever a test left running (a VM, a destination) ends with it.
	[ -n "$VM_PID" ] && vm_stop >/dev/null 2>&1
	case $rc in
	0) echo "PASS $label (${dt}s)"; PASSED=$((PASSED + 1)) ;;
	77) echo "SKIP $label: $SKIP_REASON"; SKIPPED=$((SKIPPED + 1)) ;;
	*)
		show_failure_context
		echo "FAIL $label (${dt}s)"
		FAILED=$((FAILED + 1))
		FAILED_NAMES+=("$label")
		;;
	esac
	[ "$rc" -ne 77 ] && echo "$dt $label" >>"$DURATIONS"
}

for f in tests/test_*.sh; do
	. "$f"
done

# Unit tests: each tests/unit/test_*.c is built with the sources named on
# its "test-sources:" line and the libraries on its "test-libs:" line (files
# that #include the code under test need neither) and must exit 0 (77:
# skipped, with the reason on a "SKIP: ..." line of its output).
UNIT_CFLAGS="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -g -I."
[ "${SANITIZE:-0}" = 1 ] && UNIT_CFLAGS="$UNIT_CFLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined"
mkdir -p build/unit
for src in tests/unit/test_*.c; do
	name=$(basename "$src" .c)
	unit_fn="u_${name#test_}"
	eval "$unit_fn() { run_unit_test $src; }"
done
run_unit_test() {
	local src=$1 name bin srcs libs
	name=$(basename "$src" .c)
	bin=build/unit/$name
	srcs=$(sed -n 's/.*test-sources: *//p' "$src")
	libs=$(sed -n 's/.*test-libs: *//p' "$src")
	if ! ${CC:-cc} $UNIT_CFLAGS -o "$bin" "$src" $srcs $libs >"$TMP/$name.build" 2>&1; then
		echo "    build failed:"; sed 's/^/    | /' "$TMP/$name.build" | tail -20
		return 1
	fi
	"$bin" >"$TMP/$name.log" 2>&1
	local rc=$?
	if [ $rc -eq 77 ]; then   # a missing prerequisite: the test says which on a "SKIP: why" line
		SKIP_REASON=$(sed -n 's/^SKIP:* *//p' "$TMP/$name.log" | head -1)
		SKIP_REASON=${SKIP_REASON:-$name: prerequisite missing}
		return 77
	fi
	if [ $rc -ne 0 ]; then
		grep -v '^ok' "$TMP/$name.log" | tail -20 | sed 's/^/    | /'
		return 1
	fi
}
for src in tests/unit/test_*.c; do
	name=$(basename "$src" .c)
	run_test "u_${name#test_}"
done

# Every function named t_* is a test, in file order.
TESTS=$(for f in tests/test_*.sh; do grep -oE '^t_[a-zA-Z0-9_]+' "$f"; done)
for t in $TESTS; do
	run_test "$t"
done

if [ -s "$DURATIONS" ]; then
	echo "slowest tests:"
	sort -rn "$DURATIONS" | head -n 10 | awk '{ t = $1; $1 = ""; printf "  %5ds %s\n", t, substr($0, 2) }'
fi
if [ ${#FAILED_NAMES[@]} -gt 0 ]; then
	echo "failed: ${FAILED_NAMES[*]}"
fi
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
