# Firmware (boot/bootrom.c, devices/fw_cfg.c): -l bootrom with Debian's
# SeaBIOS (/usr/share/seabios/bios-256k.bin), which finds hyve's machine
# through fw_cfg (e820, CPU count, ACPI tables via the table loader, boot
# order) and boots guests/bootsect/bootsect.bin from a virtio-blk disk, an
# NVMe namespace, an AHCI disk and an AHCI CD (El Torito, built with
# genisoimage).  The boot sector reads its second sector through the BIOS
# (SeaBIOS's own driver for the controller), prints the tag it finds there
# and powers off through ACPI.  Errors in ROM and variable files need no KVM.

SEABIOS=/usr/share/seabios/bios-256k.bin
BOOTSECT=guests/bootsect/bootsect.bin

have_seabios() {
	[ -r "$SEABIOS" ] || { SKIP_REASON="Debian's seabios package is not installed ($SEABIOS)"; return 1; }
	[ -r "$BOOTSECT" ] || { SKIP_REASON="$BOOTSECT not built (make guest)"; return 1; }
}

# bootsect_image OUT TAG: a raw disk image whose first two sectors are
# bootsect.bin with TAG in the tag sector.
bootsect_image() {
	truncate -s 1M "$1"
	dd if="$BOOTSECT" of="$1" conv=notrunc status=none
	printf 'HTAG%s\0' "$2" | dd of="$1" bs=1 seek=512 conv=notrunc status=none
}

# boot_seabios TIMEOUT HYVE-ARGS...: boots the ROM with com1 on stdio and
# SeaBIOS's debug log (port 0x402) in $FW_LOG.
boot_seabios() {
	local t=$1
	shift
	FW_LOG=$TMP/seabios.$RANDOM.log
	run_hyve "$t" -c 2 -m 256M -l com1,stdio -l bootrom,"$SEABIOS" -o lpc.debugcon.path="$FW_LOG" "$@" "$(vm_name fw)"
}

# expect_fw_log REGEX: SeaBIOS's own messages are matched in its debug log:
# on COM1 they come through its serial console emulation, which redraws
# the screen with cursor moves as timing has it ("SS\e[01;02HeaBIOS").
expect_fw_log() {
	grep -qE -- "$1" "$FW_LOG" 2>/dev/null && return 0
	echo "    expected SeaBIOS's debug log to match: $1"
	tail -n 8 "$FW_LOG" 2>/dev/null | sed 's/^/    | /'
	show
	return 1
}

expect_booted() {
	# SeaBIOS's "Booting from Hard Disk..." has no newline: the tag ends the line.
	expect_rc 1 && expect_fw_log 'SeaBIOS \(version' && expect_out "(^|\.\.)hyve-bootsect: $1"$'\r?$'
}

# seabios_disk_boot SPEC TAG: SeaBIOS boots a boot-sector image tagged TAG
# from -s 4,SPEC, where @ in SPEC stands for the image's path.
seabios_disk_boot() {
	have_kvm && have_seabios || return 77
	local img=$TMP/disk.$RANDOM.img
	bootsect_image "$img" "$2"
	boot_seabios 120 -s "4,${1/@/$img}"
	expect_booted "$2"
}

t_firmware_seabios_virtio_blk() { seabios_disk_boot "virtio-blk,@" "virtio-blk disk"; }
t_firmware_seabios_nvme() { seabios_disk_boot "nvme,@" "nvme namespace"; }
t_firmware_seabios_ahci_disk() { seabios_disk_boot "ahci,hd:@" "ahci disk"; }

# El Torito no-emulation boot: the firmware loads 4 sectors (code and tag).
t_firmware_seabios_ahci_cd() {
	have_kvm && have_seabios || return 77
	command -v genisoimage >/dev/null || { SKIP_REASON="genisoimage not installed"; return 77; }
	mkdir -p "$TMP/iso"
	bootsect_image "$TMP/iso/boot.img" "ahci cd el torito"
	truncate -s 2048 "$TMP/iso/boot.img"
	genisoimage -quiet -b boot.img -no-emul-boot -boot-load-size 4 -o "$TMP/cd.iso" "$TMP/iso" 2>"$TMP/iso.err" ||
		{ cat "$TMP/iso.err"; return 1; }
	boot_seabios 120 -s "4,ahci,cd:$TMP/cd.iso"
	expect_booted "ahci cd el torito"
}

# Two bootable disks: bootindex decides (the fw_cfg bootorder file), not slot order.
t_firmware_seabios_bootindex() {
	have_kvm && have_seabios || return 77
	bootsect_image "$TMP/first.img" "disk in slot 4"
	bootsect_image "$TMP/second.img" "disk in slot 5"
	boot_seabios 120 -s "4,virtio-blk,$TMP/first.img" -s "5,virtio-blk,$TMP/second.img"
	expect_booted "disk in slot 4" || return 1
	boot_seabios 120 -s "4,virtio-blk,$TMP/first.img,bootindex=2" -s "5,nvme,$TMP/second.img,bootindex=1"
	expect_booted "disk in slot 5"
}

# The ROM file is never written (it is mapped read-only), whatever the guest does.
t_firmware_rom_unchanged() {
	have_kvm && have_seabios || return 77
	cp "$SEABIOS" "$TMP/rom.bin"
	local before
	before=$(sha256sum <"$TMP/rom.bin")
	bootsect_image "$TMP/ro.img" "rom check"
	run_hyve 120 -m 256M -l com1,stdio -l bootrom,"$TMP/rom.bin" -s "4,virtio-blk,$TMP/ro.img" "$(vm_name rom)"
	expect_booted "rom check" || return 1
	[ "$(sha256sum <"$TMP/rom.bin")" = "$before" ] || { echo "    the ROM file changed"; return 1; }
}

# A VM running under firmware (real mode, BIOS data in RAM) is checkpointed
# while its boot sector waits, and the restored VM carries on to power off.
t_firmware_seabios_checkpoint_restore() {
	have_kvm && have_seabios || return 77
	local hyvectl=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}
	[ -x "$hyvectl" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	bootsect_image "$TMP/fwck.img" "wait:restored under firmware"
	local sock=$TMP/fwck.sock ck=$TMP/fw.ckpt
	vm_start -m 256M -l com1,stdio -l bootrom,"$SEABIOS" -s "4,virtio-blk,$TMP/fwck.img" \
		-o control.socket="$sock" "$(vm_name fwck)"
	wait_serial 120 'hyve-bootsect: waiting' || { vm_stop; return 1; }
	if ! "$hyvectl" --socket="$sock" --checkpoint="$ck" >"$TMP/fwck.ctl" 2>&1; then
		echo "    hyvectl --checkpoint failed:"; sed 's/^/    | /' "$TMP/fwck.ctl"; vm_stop; return 1
	fi
	vm_stop
	run_hyve 120 -r "$ck" -o control.socket=none -o pci.0.4.0.path="$TMP/fwck.img" -o lpc.bootrom="$SEABIOS" \
		-l com1,stdio
	expect_rc 1 && expect_out 'hyve-bootsect: restored under firmware'
}

# Bad ROM and variable files: one error line, status 4, before a VM exists.
t_firmware_bad_files() {
	printf 'x' >"$TMP/odd.rom"
	truncate -s 256K "$TMP/good.rom"
	truncate -s 17M "$TMP/huge.rom"
	truncate -s 1000 "$TMP/odd.vars"
	truncate -s 128K "$TMP/good.vars"
	local spec want
	while IFS='|' read -r spec want; do
		run_hyve 10 -l "bootrom,$spec" -o config.dump=true vm
		expect_one_error 4 "$want" || { echo "    (with -l bootrom,$spec)"; return 1; }
	done <<EOF
$TMP/missing.rom|boot ROM $TMP/missing.rom: No such file or directory
$TMP/odd.rom|boot ROM $TMP/odd.rom: 1 bytes; a ROM is a multiple of 4 KiB, at most 16 MiB
$TMP/huge.rom|boot ROM $TMP/huge.rom: 17825792 bytes
$TMP|boot ROM $TMP: not a regular file
$TMP/good.rom,$TMP/missing.vars|boot variable store $TMP/missing.vars: No such file or directory
$TMP/good.rom,$TMP/odd.vars|boot variable store $TMP/odd.vars: 1000 bytes; it is a multiple of 4 KiB
EOF
	run_hyve 10 -l "bootrom,$TMP/good.rom,$TMP/good.vars" -o config.dump=true vm
	expect_rc 0 && expect_out "^lpc.bootrom=$TMP/good.rom\$" && expect_out "^lpc.bootvars=$TMP/good.vars\$" || return 1
	run_hyve 10 -l bootrom -o config.dump=true vm
	expect_one_error 4 "expected bootrom,ROMFILE\[,VARSFILE\]" || return 1
	# boot.kernel under a ROM goes through fw_cfg: a Linux bzImage only, and QEMU's loader ROM must exist.
	run_hyve 10 -l "bootrom,$TMP/good.rom" -o boot.kernel="$GUEST" -o config.dump=true vm
	expect_one_error 4 "boot.kernel $GUEST: under a boot ROM hyve passes only a Linux bzImage" || return 1
	printf 'HdrS' | dd of="$TMP/fake.bzimage" bs=1 seek=514 conv=notrunc status=none
	printf '\002\002' | dd of="$TMP/fake.bzimage" bs=1 seek=518 conv=notrunc status=none
	printf '\001' | dd of="$TMP/fake.bzimage" bs=1 seek=529 conv=notrunc status=none
	truncate -s 4096 "$TMP/fake.bzimage"
	run_hyve 10 -l "bootrom,$TMP/good.rom" -o boot.kernel="$TMP/fake.bzimage" -o boot.linuxboot_rom="$TMP/no.bin" \
		-o config.dump=true vm
	expect_one_error 4 "needs QEMU's Linux loader option ROM $TMP/no.bin: No such file" || return 1
	run_hyve 10 -o lpc.fwcfg=bhyve -o boot.kernel="$GUEST" -o config.dump=true vm
	expect_one_error 4 "lpc.fwcfg: .*bhyve's own fwctl interface is not supported"
}

# -o boot.kernel under -l bootrom (QEMU's -kernel with SeaBIOS): the small
# test kernel, its initrd and command line go through fw_cfg; SeaBIOS runs
# QEMU's linuxboot_dma.bin option ROM (first in bootorder), which loads
# them and enters Linux's real-mode setup code; Linux runs /init.
t_firmware_seabios_kernel_fw_cfg() {
	have_kvm && have_seabios || return 77
	[ -r /usr/share/qemu/linuxboot_dma.bin ] || { SKIP_REASON="no /usr/share/qemu/linuxboot_dma.bin (qemu-system-data)"; return 77; }
	linux_test_kit || return $?
	sh tests/linux/initramfs.sh "$TMP/fwk-initrd.cpio.gz" 2>"$TMP/fwk-initrd.log" ||
		{ tail -5 "$TMP/fwk-initrd.log"; return 1; }
	boot_seabios "$LINUX_TIMEOUT" -o boot.kernel="$TEST_BZIMAGE" -o boot.initrd="$TMP/fwk-initrd.cpio.gz" \
		-o boot.cmdline="console=ttyS0 hyve.poweroff $(linux_cmdline_extra)"
	expect_fw_log 'SeaBIOS \(version' && expect_fw_log 'Booting from ROM' &&
		expect_out 'Command line: console=ttyS0 hyve\.poweroff' && expect_out "$LINUX_INIT_LINE" || return 1
	linux_pvm || { expect_out '^hyve-init: started' && expect_rc 1; }
}

# An installer-style CD: a GRUB rescue ISO (grub-mkrescue, BIOS GRUB) on an
# AHCI CD-ROM.  SeaBIOS boots it through El Torito, GRUB (on the serial
# console) loads the small test kernel and its initrd from the ISO with
# SeaBIOS's ATAPI driver, and Linux runs /init.
t_firmware_seabios_grub_cd_linux() {
	have_kvm && have_seabios || return 77
	if ! command -v grub-mkrescue >/dev/null || [ ! -d /usr/lib/grub/i386-pc ] ||
		! command -v xorriso >/dev/null || ! command -v mformat >/dev/null; then
		SKIP_REASON="grub-mkrescue needs grub-pc-bin, xorriso and mtools"
		return 77
	fi
	linux_test_kit || return $?
	local iso=$TMP/grub-iso
	mkdir -p "$iso/boot/grub"
	cp "$TEST_BZIMAGE" "$iso/boot/bzImage"
	sh tests/linux/initramfs.sh "$iso/boot/initrd.cpio.gz" 2>"$TMP/grub-initrd.log" ||
		{ tail -5 "$TMP/grub-initrd.log"; return 1; }
	cat >"$iso/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry "hyve test kernel" {
	echo "grub: loading the test kernel"
	linux /boot/bzImage console=ttyS0 hyve.poweroff $(linux_cmdline_extra)
	initrd /boot/initrd.cpio.gz
}
CFG
	grub-mkrescue -o "$TMP/grub.iso" "$iso" >"$TMP/grub-mkrescue.log" 2>&1 ||
		{ tail -5 "$TMP/grub-mkrescue.log"; return 1; }
	boot_seabios "$LINUX_TIMEOUT" -s "4,ahci,cd:$TMP/grub.iso"
	expect_fw_log 'Booting from DVD/CD' && expect_out 'grub: loading the test kernel' &&
	expect_out "$LINUX_INIT_LINE" && expect_out '^hyve-init: started' || return 1
	# SMBIOS through fw_cfg, placed by SeaBIOS, read by Linux: bhyve's strings.
	expect_out 'DMI: .*BHYVE, BIOS 1\.00 03/14/2014' || return 1
	linux_pvm || expect_rc 1
}
