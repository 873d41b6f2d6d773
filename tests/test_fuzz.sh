# libFuzzer targets (tests/fuzz/) run briefly as part of every test run:
# FUZZ_TEST_SECONDS (default 20) per target, with the corpora that `make fuzz`
# keeps in build/fuzz/.  A crash, leak, sanitizer report or hang fails the
# test; a missing clang/libFuzzer skips it.  `make fuzz` runs longer.

fz_run() {
	local name=$1 out
	out=$TMP/fuzz_$name.out
	nice -n 10 ./tests/fuzz/run.sh -t "${FUZZ_TEST_SECONDS:-20}" "$name" >"$out" 2>&1
	local rc=$?
	if [ $rc -eq 77 ]; then
		SKIP_REASON=$(head -1 "$out")
		return 77
	fi
	# The summary line (exec count, coverage) shows in the test log either way.
	sed 's/^/    /' "$out"
	return $rc
}

t_fuzz_virtqueue() {
	fz_run virtqueue
}

t_fuzz_p9() {
	fz_run p9
}
