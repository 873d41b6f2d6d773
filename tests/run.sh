#!/bin/bash
# hyve test runner: unit tests (C, no KVM needed), then integration tests
# that boot real guests.  Usage: tests/run.sh [-k PATTERN] [--slow]
# Ends with "N passed, N failed, N skipped".
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh

PATTERN=""
SLOW=${HYVE_SLOW_TESTS:-0}
while [ $# -gt 0 ]; do
	case $1 in
	-k) PATTERN=$2; shift 2 ;;
	--slow) SLOW=1; shift ;;
	*) echo "usage: $0 [-k PATTERN] [--slow]"; exit 2 ;;
	esac
done

PASSED=0 FAILED=0 SKIPPED=0
FAILED_NAMES=()

run_test() {
	local name=$1
	if [ -n "$PATTERN" ] && [[ $name != *$PATTERN* ]]; then
		return
	fi
	SKIP_REASON=""
	local start=$SECONDS
	"$name"
	local rc=$?
	local dt=$((SECONDS - start))
	case $rc in
	0) echo "PASS $name (${dt}s)"; PASSED=$((PASSED + 1)) ;;
	77) echo "SKIP $name: $SKIP_REASON"; SKIPPED=$((SKIPPED + 1)) ;;
	*) echo "FAIL $name (${dt}s)"; FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name") ;;
	esac
}

for f in tests/test_*.sh; do
	. "$f"
done

# Every function named t_* is a test, in file order.
TESTS=$(for f in tests/test_*.sh; do grep -oE '^t_[a-zA-Z0-9_]+' "$f"; done)
for t in $TESTS; do
	run_test "$t"
done

rm -rf "$TMP"
if [ ${#FAILED_NAMES[@]} -gt 0 ]; then
	echo "failed: ${FAILED_NAMES[*]}"
fi
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
