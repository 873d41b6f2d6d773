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
	# -k is an extended regular expression matched anywhere in the name.
	if [ -n "$PATTERN" ] && ! [[ $name =~ $PATTERN ]]; then
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

# Unit tests: each tests/unit/test_*.c is built with the sources named on
# its "test-sources:" line and the libraries on its "test-libs:" line (files
# that #include the code under test need neither) and must exit 0.
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
	if ! "$bin" >"$TMP/$name.log" 2>&1; then
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

rm -rf "$TMP"
if [ ${#FAILED_NAMES[@]} -gt 0 ]; then
	echo "failed: ${FAILED_NAMES[*]}"
fi
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
