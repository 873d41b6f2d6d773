#!/bin/bash
# Build the libFuzzer targets in tests/fuzz/ with clang (ASan + UBSan) and run
# each for a bounded time.  Used by `make fuzz` and by tests/test_fuzz.sh.
#
#   tests/fuzz/run.sh [-t SECONDS] [TARGET...]   (targets: virtqueue p9 ckpt config migration control qcow2 nvme insn ahci gdb xhci)
#   tests/fuzz/run.sh --make-seeds [TARGET...]   (rewrite tests/fuzz/corpus/TARGET/)
#
# SECONDS defaults to $FUZZ_SECONDS, else 30.  Binaries, logs and the corpora
# live in build/fuzz/ (corpora are kept between runs, so each run starts
# where the last one stopped); a binary is rebuilt when a source file
# changed.  Crash/leak reproducers land in build/fuzz/artifacts/.
#
# Committed inputs, per target:
#   tests/fuzz/corpus/NAME/   well-formed seeds, copied into the corpus
#                             (never over a file of the same name) before
#                             every run.  --make-seeds rewrites them with
#                             the target's -DFUZZ_MAKE_SEEDS main() or
#                             tests/fuzz/make_NAME_seeds.py (config's are
#                             written by hand).
#   tests/fuzz/regress/NAME/  reproducers of fixed findings (crash-WHAT):
#                             each runs once through the target first; any
#                             failure fails the target.  A reproducer of a
#                             finding not fixed yet waits in
#                             build/fuzz/pending/NAME/.
# Exit status: 0 all clean, 1 a target failed to build or found a
# crash/leak/timeout, 77 clang or libFuzzer is missing.
# A summary line per target: "fuzz NAME: N execs in S s, cov C, ft F, corpus K: ok".
cd "$(dirname "$0")/../.." || exit 1

SECS=${FUZZ_SECONDS:-30}
MAKE_SEEDS=0
case ${1:-} in
-t)
	SECS=$2
	shift 2
	;;
--make-seeds)
	MAKE_SEEDS=1
	shift
	;;
esac
case $SECS in '' | *[!0-9]*) echo "fuzz: bad seconds '$SECS'" >&2; exit 2 ;; esac
TARGETS=${*:-virtqueue p9 ckpt config migration control qcow2 nvme insn ahci gdb xhci}
OUT=build/fuzz

# Sources of each target besides its own file.  virtio.c's checkpoint hooks
# use the snap_buf/snap_rd helpers of core/snapshot.c; files that may not
# exist in every tree are added when present.
# ckpt builds a small VM's devices around the checkpoint reader (only the
# KVM layer is stubbed); migration builds the same VM (the stubs and set-up
# are shared in tests/fuzz/fuzz_vm_stubs.c) around the migration
# destination; control #includes core/control.c; config links the -s
# parsers of the device models.
sources() {
	case $1 in
	virtqueue) echo devices/virtio.c; [ -f core/snapshot.c ] && echo core/snapshot.c ;;
	p9) echo devices/p9_server.c; [ -f devices/p9_fs.c ] && echo devices/p9_fs.c ;;
	ckpt)
		echo tests/fuzz/fuzz_vm_stubs.c core/checkpoint.c core/snapshot.c core/vmstate.c core/config.c core/init.c core/inout.c \
			core/mmio.c devices/pci_emul.c devices/pci_hostbridge.c devices/pci_lpc.c devices/acpi_pm.c devices/debugcon.c \
			devices/atkbdc.c devices/pc_testdev.c devices/rtc.c devices/uart_16550.c devices/virtio.c \
			devices/virtio_snapshot.c devices/virtio_ioeventfd.c devices/virtio_rnd.c \
			devices/virtio_console.c devices/chardev.c devices/virtio_9p.c devices/p9_server.c devices/p9_state.c core/sandbox_landlock.c
		[ -f devices/p9_fs.c ] && echo devices/p9_fs.c
		[ -f core/config_trust.c ] && echo core/config_trust.c
		;;
	migration)
		echo tests/fuzz/fuzz_vm_stubs.c core/migration.c core/migration_tls.c core/config_trust.c core/cpuid.c \
			core/snapshot.c core/vmstate.c core/config.c core/init.c core/inout.c core/mmio.c devices/pci_emul.c \
			devices/pci_hostbridge.c devices/pci_lpc.c devices/acpi_pm.c devices/debugcon.c devices/atkbdc.c devices/pc_testdev.c \
			devices/rtc.c devices/uart_16550.c devices/virtio.c devices/virtio_snapshot.c devices/virtio_ioeventfd.c \
			devices/virtio_rnd.c devices/virtio_console.c devices/chardev.c devices/virtio_9p.c devices/p9_server.c devices/p9_state.c core/sandbox_landlock.c
		[ -f devices/p9_fs.c ] && echo devices/p9_fs.c
		;;
	control) echo core/config.c core/sandbox_landlock.c ;;   # control.c is #included
	config)
		echo core/config.c core/cpuid.c core/snapshot.c core/inout.c core/mmio.c devices/pci_emul.c \
			devices/pci_hostbridge.c devices/pci_lpc.c devices/virtio.c devices/virtio_snapshot.c \
			devices/virtio_ioeventfd.c devices/virtio_rnd.c devices/virtio_console.c devices/chardev.c devices/virtio_9p.c \
			devices/p9_server.c devices/p9_state.c devices/virtio_blk.c devices/blockif.c core/sandbox_landlock.c \
			devices/virtio_net.c devices/net_backend.c devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c devices/qcow2_snapshot.c
		[ -f devices/p9_fs.c ] && echo devices/p9_fs.c
		[ -f core/config_trust.c ] && echo core/config_trust.c
		;;
	qcow2) echo devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c devices/qcow2_snapshot.c core/log.c ;;
	insn) echo core/insn_decode.c core/insn_mem.c core/insn_complete.c ;;
	gdb) echo core/gdb_proto.c ;;
	nvme)   # two controllers on image files, only the KVM layer stubbed (nvme_stubs.c)
		echo tests/fuzz/nvme_stubs.c devices/nvme.c devices/nvme_admin.c devices/pci_emul.c devices/blockif.c \
			devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c devices/qcow2_snapshot.c core/config.c core/snapshot.c core/init.c \
			core/inout.c core/mmio.c
		;;
	ahci)   # one HBA (disk + CD) on image files, the same stubbed KVM layer
		echo tests/fuzz/nvme_stubs.c devices/ahci.c devices/ahci_atapi.c devices/ahci_config.c devices/pci_emul.c devices/blockif.c \
			devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c devices/qcow2_snapshot.c core/config.c core/snapshot.c core/init.c \
			core/inout.c core/mmio.c
		;;
	xhci)   # one controller with a tablet, the same stubbed KVM layer
		echo tests/fuzz/nvme_stubs.c devices/pci_xhci.c devices/usb_tablet.c devices/pci_emul.c core/config.c \
			core/snapshot.c core/init.c core/inout.c core/mmio.c
		;;
	esac
}

# Compiler flags and libraries beyond the common ones.
extra_cflags() {
	case $1 in
	config) pkg-config --cflags slirp 2>/dev/null ;;
	esac
}
libs() {
	case $1 in
	ckpt) echo -lz ;;
	migration) pkg-config --libs liblz4 libssl libcrypto 2>/dev/null || echo -llz4 -lssl -lcrypto ;;
	config) pkg-config --libs liburing slirp zlib libzstd 2>/dev/null || echo -luring -lslirp -lglib-2.0 -lz -lzstd ;;
	qcow2) echo -lz -lzstd ;;
	nvme | ahci) pkg-config --libs liburing zlib libzstd 2>/dev/null || echo -luring -lz -lzstd ;;
	esac
}

# Seeds come from a target's -DFUZZ_MAKE_SEEDS main() (plain cc, no
# sanitizers) or from tests/fuzz/make_NAME_seeds.py.
has_seed_mode() {
	[ -f "tests/fuzz/make_$1_seeds.py" ] || grep -q 'FUZZ_MAKE_SEEDS' "tests/fuzz/fuzz_$1.c" 2>/dev/null
}
make_seeds() {
	local name=$1 dir=$2
	mkdir -p "$OUT" "$dir"
	if [ -f "tests/fuzz/make_${name}_seeds.py" ]; then
		python3 "tests/fuzz/make_${name}_seeds.py" "$dir" >"$OUT/seeds_$name.log" 2>&1
		return
	fi
	# shellcheck disable=SC2046
	${CC:-cc} -std=c11 -D_GNU_SOURCE -g -pthread -I. -DFUZZ_MAKE_SEEDS $(extra_cflags "$name") \
		-o "$OUT/seeds_$name" "tests/fuzz/fuzz_$name.c" $(sources "$name") $(libs "$name") \
		>"$OUT/seeds_$name.log" 2>&1 && "$OUT/seeds_$name" "$dir" >>"$OUT/seeds_$name.log" 2>&1
}

if [ $MAKE_SEEDS = 1 ]; then
	rc=0
	for name in $TARGETS; do
		if ! has_seed_mode "$name"; then
			echo "fuzz $name: no seed mode (its seeds in tests/fuzz/corpus/$name/ are written by hand)"
			continue
		fi
		rm -rf "tests/fuzz/corpus/$name"
		if make_seeds "$name" "tests/fuzz/corpus/$name"; then
			echo "fuzz $name: $(ls "tests/fuzz/corpus/$name" | wc -l) seeds in tests/fuzz/corpus/$name/"
		else
			echo "fuzz $name: seed generation failed:"
			tail -20 "$OUT/seeds_$name.log" | sed 's/^/    | /'
			rc=1
		fi
	done
	exit $rc
fi

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

# Rebuild unless the binary is newer than every C file and header of the
# tree and this script (headers make a precise list impractical).
up_to_date() {
	local bin=$1
	[ -x "$bin" ] && [ "$bin" -nt tests/fuzz/run.sh ] &&
		[ -z "$(find core devices vmm boot tests/fuzz -name '*.[ch]' -newer "$bin" -print -quit 2>/dev/null)" ]
}

# Sanitizer or libFuzzer reports in a log.
found_problem() {
	grep -aqE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: ' "$1"
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
	if ! up_to_date "$bin" &&
		! "$CLANG" $CFLAGS $(extra_cflags "$name") -o "$bin" "$src" $(sources "$name") $(libs "$name") \
			>"$OUT/build_$name.log" 2>&1; then
		echo "fuzz $name: build failed:"
		sed 's/^/    | /' "$OUT/build_$name.log" | tail -20
		rc=1
		continue
	fi
	# Seeds: the committed ones (never overwriting a corpus file), else,
	# for an empty corpus, what the seed mode writes.
	if [ -d "tests/fuzz/corpus/$name" ]; then
		cp -n tests/fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null
	elif [ -z "$(ls -A "$corpus")" ] && has_seed_mode "$name"; then
		make_seeds "$name" "$corpus" || true
	fi
	# Regression inputs: each once, in a fresh process (as it was found), before fuzzing.
	regress="" rfail=0 nreg=0
	for r in tests/fuzz/regress/"$name"/*; do
		[ -f "$r" ] || continue
		nreg=$((nreg + 1))
		rlog=$OUT/regress_$name.$(basename "$r").log
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$bin" -timeout=10 -rss_limit_mb=2048 "$r" >"$rlog" 2>&1
		frc=$?
		if [ $frc -ne 0 ] || found_problem "$rlog"; then
			echo "fuzz $name: FAILED regression input $r (libFuzzer status $frc); log $rlog:"
			grep -aE 'ERROR:|runtime error:|SUMMARY:|^==[0-9]+==|^    #[0-9] ' "$rlog" | head -15 |
				sed 's/^/    | /'
			rfail=1
		fi
	done
	if [ $rfail = 1 ]; then
		rc=1
		continue
	fi
	[ $nreg -gt 0 ] && regress=", $nreg regression inputs ok"
	# -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds memory.
	# ASAN_OPTIONS: leaks are findings too (the libFuzzer default), reported at exit.
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$OUT/artifacts/${name}-" "$corpus" >"$log" 2>&1
	frc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	last=$(grep -aE '^#[0-9]+' "$log" | tail -1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	ncorp=$(ls "$corpus" | wc -l)
	if [ $frc -eq 0 ] && ! found_problem "$log"; then
		echo "fuzz $name: ${execs:-?} execs in ${SECS} s (${secs:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus $ncorp$regress: ok"
	else
		echo "fuzz $name: FAILED (libFuzzer status $frc) after ${execs:-?} execs; log $log:"
		grep -aE 'ERROR:|runtime error:|SUMMARY:|^==[0-9]+==|artifact|Test unit written' "$log" | head -15 |
			sed 's/^/    | /'
		rc=1
	fi
done
exit $rc
