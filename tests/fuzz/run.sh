#!/bin/bash
# Build the libFuzzer targets in tests/fuzz/ with clang (ASan + UBSan) and run
# each for a bounded time.  Used by `make fuzz` and by tests/test_fuzz.sh.
#
#   tests/fuzz/run.sh [-t SECONDS] [TARGET...]     (targets: virtqueue p9)
#
# SECONDS defaults to $FUZZ_SECONDS, else 30.  Binaries, logs and the corpora
# live in build/fuzz/ (corpora are kept between runs, so each run starts
# where the last one stopped).  Crash/leak reproducers land in
# build/fuzz/artifacts/.  Exit status: 0 all clean, 1 a target failed to
# build or found a crash/leak/timeout, 77 clang or libFuzzer is missing.
# A summary line per target: "fuzz NAME: N execs in S s, cov C, ft F, corpus K: ok".
cd "$(dirname "$0")/../.." || exit 1

SECS=${FUZZ_SECONDS:-30}
if [ "${1:-}" = -t ]; then
	SECS=$2
	shift 2
fi
case $SECS in '' | *[!0-9]*) echo "fuzz: bad seconds '$SECS'" >&2; exit 2 ;; esac
TARGETS=${*:-virtqueue p9}
OUT=build/fuzz

CLANG=""
for c in clang-14 clang; do
	if command -v "$c" >/dev/null 2>&1; then
		CLANG=$c
		break
	fi
done
if [ -z "$CLANG" ]; then
	echo "fuzz: clang not installed (tests/install-deps.sh installs clang and libclang-rt-14-dev)"
	exit 77
fi
mkdir -p "$OUT/artifacts"
# libFuzzer ships in libclang-rt-*-dev: probe with an empty target.
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
	>"$OUT/probe.c"
if ! "$CLANG" -fsanitize=fuzzer,address,undefined -o "$OUT/probe" "$OUT/probe.c" >"$OUT/probe.log" 2>&1; then
	echo "fuzz: $CLANG cannot link libFuzzer (libclang-rt-14-dev missing?): $(head -c 200 "$OUT/probe.log")"
	exit 77
fi

CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -pthread -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"

# Sources of each target besides its own file.  virtio.c's checkpoint hooks
# use the snap_buf/snap_rd helpers of core/snapshot.c once that exists.
sources() {
	case $1 in
	virtqueue) echo devices/virtio.c; [ -f core/snapshot.c ] && echo core/snapshot.c ;;
	p9) echo devices/p9_server.c ;;
	esac
}

# The virtqueue target can write well-formed seeds (deep paths from the start).
seed() {
	local name=$1 corpus=$2
	[ "$name" = virtqueue ] || return 0
	[ -n "$(ls -A "$corpus" 2>/dev/null)" ] && return 0
	if ${CC:-cc} -std=c11 -D_GNU_SOURCE -pthread -I. -DFUZZ_MAKE_SEEDS -o "$OUT/seeds_$name" \
		tests/fuzz/fuzz_$name.c $(sources "$name") >"$OUT/seeds_$name.log" 2>&1; then
		"$OUT/seeds_$name" "$corpus" >/dev/null 2>&1 || true
	fi
}

rc=0
for name in $TARGETS; do
	src=tests/fuzz/fuzz_$name.c
	bin=$OUT/fuzz_$name
	log=$OUT/fuzz_$name.log
	corpus=$OUT/corpus_$name
	if [ ! -f "$src" ]; then
		echo "fuzz $name: no $src"
		rc=1
		continue
	fi
	mkdir -p "$corpus"
	# shellcheck disable=SC2046
	if ! "$CLANG" $CFLAGS -o "$bin" "$src" $(sources "$name") >"$OUT/build_$name.log" 2>&1; then
		echo "fuzz $name: build failed:"
		sed 's/^/    | /' "$OUT/build_$name.log" | tail -20
		rc=1
		continue
	fi
	seed "$name" "$corpus"
	# -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds memory.
	# ASAN_OPTIONS: leaks are findings too (the libFuzzer default), reported at exit.
	ASAN_OPTIONS=detect_leaks=1 "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$OUT/artifacts/${name}-" "$corpus" >"$log" 2>&1
	frc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	last=$(grep -E '^#[0-9]+' "$log" | tail -1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	ncorp=$(ls "$corpus" | wc -l)
	if [ $frc -eq 0 ] && ! grep -qE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: ' "$log"; then
		echo "fuzz $name: ${execs:-?} execs in ${SECS} s (${secs:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus $ncorp: ok"
	else
		echo "fuzz $name: FAILED (libFuzzer status $frc) after ${execs:-?} execs; log $log:"
		grep -E 'ERROR:|runtime error:|SUMMARY:|^==[0-9]+==|artifact|Test unit written' "$log" | head -15 |
			sed 's/^/    | /'
		rc=1
	fi
done
exit $rc
