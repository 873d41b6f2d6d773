# Linux guests: the small test kernel built from Debian's linux-source-6.1
# (tests/linux/build-kernel.sh) and Debian's stock kernel (slow tier).
# Kernels and images are cached in ${HYVE_CACHE:-/var/cache/hyve}.

LINUX_CACHE=${HYVE_CACHE:-/var/cache/hyve}

# Build (or reuse) the test kernel and an initramfs; sets TEST_BZIMAGE, TEST_INITRD.
linux_test_kit() {
	have_kvm || return 77
	TEST_BZIMAGE=$(sh tests/linux/build-kernel.sh 2>"$TMP/kbuild.log") || {
		echo "    build-kernel.sh failed:"; tail -20 "$TMP/kbuild.log" | sed 's/^/    | /'; return 1; }
	TEST_INITRD=$LINUX_CACHE/hyve-test-initrd.cpio
	if [ ! -s "$TEST_INITRD" ] || [ tests/linux/init -nt "$TEST_INITRD" ]; then
		sh tests/linux/initramfs.sh "$TEST_INITRD" 2>"$TMP/initrd.log" || {
			echo "    initramfs.sh failed:"; tail -20 "$TMP/initrd.log" | sed 's/^/    | /'; return 1; }
	fi
}

# The kernel prints this right before executing /init; on emulating hosts
# user space cannot get further (no system calls from CPL3 there).
LINUX_INIT_LINE='Run /init as init process'

# boot_linux TIMEOUT KERNEL INITRD CMDLINE [hyve args]: waits for /init or the timeout.
boot_linux() {
	local t=$1 kernel=$2 initrd=$3 cmdline=$4
	shift 4
	OUT=$TMP/linux.$RANDOM.out ERR=$TMP/linux.$RANDOM.err
	"$HYVE" -l com1,stdio -o boot.kernel="$kernel" ${initrd:+-o boot.initrd="$initrd"} \
		-o boot.cmdline="$cmdline" "$@" linuxvm >"$OUT" 2>"$ERR" </dev/null &
	local pid=$! start=$SECONDS
	while kill -0 $pid 2>/dev/null; do
		if grep -q "$LINUX_INIT_LINE" "$OUT" && { [ -d /sys/module/kvm_pvm ] || grep -q 'hyve-init: started' "$OUT"; }; then
			break
		fi
		if [ $((SECONDS - start)) -ge "$t" ]; then
			echo "    timeout after ${t}s; last serial lines:"
			break
		fi
		sleep 1
	done
	LINUX_SECONDS=$((SECONDS - start))
	kill $pid 2>/dev/null
	wait $pid 2>/dev/null
	RC=$?
}

t_linux_test_kernel_to_init() {
	linux_test_kit || return $?
	boot_linux 1200 "$TEST_BZIMAGE" "$TEST_INITRD" "console=ttyS0" -c 2 -m 256M
	echo "    /init reached in ${LINUX_SECONDS}s (-c 2)"
	expect_out 'smpboot: Total of 2 processors activated' &&
	expect_out 'ACPI: .*MADT|ACPI: APIC' && expect_out 'Unpacking initramfs' &&
	expect_out "$LINUX_INIT_LINE"
}

t_linux_truncated_bzimage() {
	have_kvm || return 77
	[ -r "$LINUX_CACHE/hyve-test-bzImage" ] || { SKIP_REASON="no test kernel built yet"; return 77; }
	head -c 200000 "$LINUX_CACHE/hyve-test-bzImage" >"$TMP/trunc-bzImage"
	run_hyve 30 -o boot.kernel="$TMP/trunc-bzImage" vm
	expect_one_error 4 'trunc-bzImage: .*(truncated|beyond)'
}

t_linux_non_kernel_file() {
	have_kvm || return 77
	run_hyve 30 -o boot.kernel=/etc/services vm
	expect_one_error 4 'services: not a kernel hyve can boot' || return 1
	# An ELF program is not a kernel either.
	run_hyve 30 -o boot.kernel=/bin/sh vm
	expect_one_error 4 '/bin/sh: .*not an executable ELF'
}

t_linux_initrd_too_big() {
	have_kvm || return 77
	[ -r "$LINUX_CACHE/hyve-test-bzImage" ] || { SKIP_REASON="no test kernel built yet"; return 77; }
	head -c $((100 << 20)) /dev/zero >"$TMP/big-initrd"
	run_hyve 30 -m 64M -o boot.kernel="$LINUX_CACHE/hyve-test-bzImage" -o boot.initrd="$TMP/big-initrd" vm
	expect_one_error 4 'big-initrd: .*(does not fit|too large)'
}

t_linux_stock_kernel_to_init() {
	[ "$SLOW" = 1 ] || { SKIP_REASON="slow tier (make check-slow, or HYVE_SLOW_TESTS=1)"; return 77; }
	have_kvm || return 77
	local vmlinuz
	vmlinuz=$(sh tests/linux/fetch-stock.sh 2>"$TMP/stock.log") || {
		echo "    fetch-stock.sh failed"; tail "$TMP/stock.log"; return 1; }
	local initrd=$LINUX_CACHE/hyve-stock-initrd.cpio
	[ -s "$initrd" ] || sh tests/linux/initramfs.sh "$initrd" 2>>"$TMP/stock.log" || return 1
	boot_linux 2400 "$vmlinuz" "$initrd" "console=ttyS0" -c 2 -m 512M
	echo "    /init reached in ${LINUX_SECONDS}s (-c 2)"
	expect_out 'smpboot: Total of 2 processors activated' &&
	expect_out 'ACPI: (XSDT|RSDP)' && expect_out 'Unpacking initramfs|Trying to unpack rootfs' &&
	expect_out "$LINUX_INIT_LINE"
}
