#!/bin/sh
# qemu-ref.sh [CASE...]
# Optional cross-check of the kit with a known-good VMM: boot the guests under
# QEMU TCG (pure emulation, no /dev/kvm) and grep the serial log for the
# /init markers. Shows what hyve should reproduce; does not involve hyve.
# Cases: initrd blk 9p nvme ahci usb net stock stock-blk (default: all).
# Logs: $HYVE_CACHE/qemu-ref/CASE.log
set -u
. "$(dirname -- "$0")/lib.sh"

need_tool qemu-system-x86_64 qemu-system-x86
kit=$HYVE_KIT_DIR
work=$(cache_dir qemu-ref)
timeout_s=${HYVE_QEMU_TIMEOUT:-300}

kernel=$("$kit/build-kernel.sh") || exit 1
"$kit/initramfs.sh" "$work/initrd.cpio.gz" || exit 1
"$kit/mkrootfs.sh" "$work/root.img" || exit 1
"$kit/mk9proot.sh" "$work/9proot" || exit 1

cmd="console=ttyS0 nopv hyve.poweroff panic=-1"
base="-M q35 -accel tcg -cpu max -smp 2 -m 512 -nographic -no-reboot -nodefaults -serial stdio"

# boot CASE KERNEL APPEND QEMU-ARGS...
pass=0 fail=0 failed=
boot() {
	name=$1 kern=$2 append=$3
	shift 3
	log=$work/$name.log
	say "case $name: booting (log: $log)"
	t0=$(date +%s)
	# shellcheck disable=SC2086
	timeout "$timeout_s" qemu-system-x86_64 $base -kernel "$kern" -append "$append" "$@" \
		</dev/null >"$log" 2>&1
	t1=$(date +%s)
	if grep -q '^hyve-init: started' "$log" && grep -q '^hyve-init: powering off' "$log" &&
		{ [ -z "$expect" ] || grep -qE "$expect" "$log"; }; then
		say "case $name: ok in $((t1 - t0))s"
		pass=$((pass + 1))
	else
		say "case $name: FAILED after $((t1 - t0))s; last lines:"
		tail -n 15 "$log" | sed 's/^/    /' >&2
		fail=$((fail + 1)); failed="$failed $name"
	fi
}

cases=${*:-initrd blk 9p nvme ahci usb net stock stock-blk}
for c in $cases; do
	case $c in
	initrd) expect='hyve-init: uname: Linux hyve .*-hyve-test'
		boot initrd "$kernel" "$cmd" -initrd "$work/initrd.cpio.gz" ;;
	blk) expect='hyve-init: root: /dev/root / ext4'
		boot blk "$kernel" "$cmd root=/dev/vda rw" \
			-drive "file=$work/root.img,format=raw,if=none,id=d0,snapshot=on" \
			-device virtio-blk-pci,drive=d0 ;;
	9p) expect='hyve-init: root: hyveroot / 9p'
		boot 9p "$kernel" "$cmd root=hyveroot rootfstype=9p rootflags=trans=virtio,version=9p2000.L" \
			-fsdev "local,id=f0,path=$work/9proot,security_model=none,readonly=on" \
			-device virtio-9p-pci,fsdev=f0,mount_tag=hyveroot ;;
	nvme) expect='hyve-init: block: .*nvme0n1'
		boot nvme "$kernel" "$cmd root=/dev/nvme0n1 rw" \
			-drive "file=$work/root.img,format=raw,if=none,id=d0,snapshot=on" \
			-device nvme,drive=d0,serial=hyve0 ;;
	ahci) expect='hyve-init: block: .*sda'
		boot ahci "$kernel" "$cmd root=/dev/sda rw" \
			-drive "file=$work/root.img,format=raw,if=none,id=d0,snapshot=on" \
			-device ahci,id=ahci0 -device ide-hd,drive=d0,bus=ahci0.0 ;;
	usb) expect='hid-generic .*: input: USB HID .*Tablet'
		# hyve.hold: usbhid binds while /init runs; the hold keeps the VM up for it.
		boot usb "$kernel" "$cmd hyve.hold=5" -initrd "$work/initrd.cpio.gz" \
			-device qemu-xhci -device usb-tablet ;;
	net) expect='IP-Config: Complete'
		# restrict=on: QEMU's built-in DHCP only, the guest reaches nothing outside.
		boot net "$kernel" "$cmd ip=dhcp" -initrd "$work/initrd.cpio.gz" \
			-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 \
			-device virtio-rng-pci -device virtio-serial-pci ;;
	stock | stock-blk)
		vmlinuz=$("$kit/fetch-stock.sh") || exit 1
		"$kit/initramfs.sh" --stock-modules "$work/initrd-stock.cpio.gz" || exit 1
		if [ "$c" = stock ]; then
			expect='hyve-init: modules: .*virtio_blk'
			boot stock "$vmlinuz" "$cmd" -initrd "$work/initrd-stock.cpio.gz"
		else
			expect='hyve-init: root: /dev/vda / ext4'
			boot stock-blk "$vmlinuz" "$cmd hyve.root=/dev/vda" -initrd "$work/initrd-stock.cpio.gz" \
				-drive "file=$work/root.img,format=raw,if=none,id=d0,snapshot=on" \
				-device virtio-blk-pci,drive=d0
		fi ;;
	*) die "unknown case $c (known: initrd blk 9p nvme ahci usb net stock stock-blk)" ;;
	esac
done

echo "qemu-ref: $pass passed, $fail failed"
[ "$fail" = 0 ] || die "failed cases:$failed"
