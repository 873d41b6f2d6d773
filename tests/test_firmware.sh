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

# SeaBIOS's text on the VNC screen.  Under a legacy boot ROM fbuf is QEMU's
# bochs-display (variant=auto) and offers SeaBIOS's own VGA BIOS through
# fw_cfg; the boot sector sets text mode 3 and writes a line through INT
# 10h, which that VGA BIOS draws into the framebuffer at the size the EDID
# block asks for (w x h).  Held to QEMU: the same ROMs and boot sector on
# its bochs-display (xres/yres: the same EDID size) give the same picture,
# pixel for pixel.
FW_VGA_TEXT="hyve VGA text 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"

fw_vga_need() {
	have_seabios || return 1
	[ -r "${SEABIOS%/*}/vgabios-bochs-display.bin" ] ||
		{ SKIP_REASON="SeaBIOS's vgabios-bochs-display.bin is missing"; return 1; }
	command -v qemu-system-x86_64 >/dev/null || { SKIP_REASON="qemu-system-x86_64 not installed"; return 1; }
	command -v vncsnapshot >/dev/null && command -v djpeg >/dev/null ||
		{ SKIP_REASON="vncsnapshot or djpeg missing (tests/install-deps.sh installs them)"; return 1; }
}

# qemu_vga_shot IMG W H OUT.ppm: QEMU (TCG) boots IMG with SeaBIOS on a
# WxH bochs-display; the screenshot once the boot sector says it drew.
qemu_vga_shot() {
	local port=5900 rc=0
	while ! python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', $port))" 2>/dev/null; do
		port=$((port + 1))
	done
	OUT=$TMP/vga-qemu.$RANDOM.out ERR=$TMP/vga-qemu.$RANDOM.err
	qemu-system-x86_64 -nodefaults -machine pc -m 256 -bios "$SEABIOS" -device bochs-display,xres="$2",yres="$3" \
		-drive file="$1",format=raw,if=virtio -serial stdio -display none -vnc 127.0.0.1:$((port - 5900)) \
		</dev/null >"$OUT" 2>"$ERR" &
	VM_PID=$! VM_START=$SECONDS
	wait_serial 120 'hyve-bootsect: on screen' || rc=1
	[ $rc = 0 ] && { fb_grab "$port" "$4" || rc=1; }
	vm_stop
	return $rc
}

# fb_text_lit PPM W H: the screenshot is WxH and has text in its first rows.
fb_text_lit() {
	python3 - "$@" <<'EOF2'
import sys
parts = open(sys.argv[1], "rb").read().split(maxsplit=4)
w, h, px = int(parts[1]), int(parts[2]), parts[4]
if (w, h) != (int(sys.argv[2]), int(sys.argv[3])):
    sys.exit(f"    screenshot is {w}x{h}, expected {sys.argv[2]}x{sys.argv[3]}")
lit = [y for y in range(h) for x in range(w) if max(px[(y * w + x) * 3:(y * w + x) * 3 + 3]) > 40]
print(f"    screen {w}x{h}: {len(lit)} pixels lit, rows {min(lit, default=-1)}..{max(lit, default=-1)}")
sys.exit(0 if len(lit) >= 400 and max(lit) < 32 else 1)
EOF2
}

# fb_same A.ppm B.ppm: the same size and the same pixels lit.
fb_same() {
	python3 - "$@" <<'EOF2'
import sys
def load(p):
    parts = open(p, "rb").read().split(maxsplit=4)
    w, h, px = int(parts[1]), int(parts[2]), parts[4]
    return w, h, bytes(1 if max(px[i:i + 3]) > 40 else 0 for i in range(0, w * h * 3, 3))
(wa, ha, a), (wb, hb, b) = load(sys.argv[1]), load(sys.argv[2])
if (wa, ha) != (wb, hb):
    sys.exit(f"    hyve's screen is {wa}x{ha}, QEMU's {wb}x{hb}")
diff = sum(1 for i in range(len(a)) if a[i] != b[i])
print(f"    {wa}x{ha}: {sum(a)} pixels lit on hyve, {sum(b)} on QEMU, {diff} differ")
sys.exit(0 if diff == 0 and sum(a) >= 400 else 1)
EOF2
}

# QEMU's side alone (no KVM needed): what t_firmware_seabios_vga_text is held to.
t_firmware_seabios_vga_text_qemu_reference() {
	fw_vga_need || return 77
	bootsect_image "$TMP/vgaq.img" "screen:$FW_VGA_TEXT"
	qemu_vga_shot "$TMP/vgaq.img" 800 600 "$TMP/vga-qemu.ppm" && fb_text_lit "$TMP/vga-qemu.ppm" 800 600
}

t_firmware_seabios_vga_text() {
	have_kvm && fw_vga_need || return 77
	local port img=$TMP/vga.img
	bootsect_image "$img" "screen:$FW_VGA_TEXT"
	port=$(free_port)
	vm_start -c 1 -m 256M -l com1,stdio -l bootrom,"$SEABIOS" -s 4,virtio-blk,"$img" \
		-s 29,fbuf,tcp=127.0.0.1:"$port",w=800,h=600 "$(vm_name fwvga)"
	wait_serial 120 'hyve-bootsect: on screen' || { vm_stop; return 1; }
	fb_grab "$port" "$TMP/vga-hyve.ppm" || { vm_stop; return 1; }
	vm_stop
	fb_text_lit "$TMP/vga-hyve.ppm" 800 600 || return 1
	qemu_vga_shot "$img" 800 600 "$TMP/vga-qemu.ppm" || return 1
	fb_same "$TMP/vga-hyve.ppm" "$TMP/vga-qemu.ppm"
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
	FW_LOG=$TMP/seabios.$RANDOM.log
	vm_start -c 2 -m 256M -l com1,stdio -l bootrom,"$SEABIOS" -o lpc.debugcon.path="$FW_LOG" \
		-o boot.kernel="$TEST_BZIMAGE" -o boot.initrd="$TMP/fwk-initrd.cpio.gz" \
		-o boot.cmdline="console=ttyS0 hyve.poweroff $(linux_cmdline_extra)" "$(vm_name fw)"
	wait_linux_init "$LINUX_TIMEOUT" || { vm_stop; return 1; }
	# Where user space runs, /init powers the VM off (status 1); on an
	# emulating host (PVM) it cannot, and the kernel panics: stop it.
	if linux_pvm; then
		vm_stop
		# The firmware got hyve's parameters for this host too (main.c: as a direct boot).
		expect_out 'Command line: console=ttyS0 hyve\.poweroff .*noxsave' || return 1
	else
		wait_vm_exit "$LINUX_TIMEOUT"
		expect_out '^hyve-init: started' && expect_rc 1 || return 1
	fi
	expect_fw_log 'SeaBIOS \(version' && expect_fw_log 'Booting from ROM' &&
		expect_out 'Command line: console=ttyS0 hyve\.poweroff'
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
	if linux_pvm; then
		SKIP_REASON="GRUB gives Linux its own command line, without the parameters an emulating host (PVM) needs (hyve adds them to direct and fw_cfg boots: t_firmware_seabios_kernel_fw_cfg)"
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

# ---- OVMF (UEFI) ----
# Debian's OVMF (the 4 MiB build for QEMU, no SMM) with a copy of its
# variable store: the store is a CFI flash (devices/pflash.c) that OVMF's
# variable driver probes and programs; under a UEFI ROM the machine is an
# i440FX (host bridge 8086:1237, PIIX4 PM at 0:1.3) as OVMF expects.
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

have_ovmf() {
	[ -r "$OVMF_CODE" ] && [ -r "$OVMF_VARS" ] ||
		{ SKIP_REASON="Debian's ovmf package is not installed ($OVMF_CODE)"; return 1; }
}

# OVMF under hyve in the nested L1 needs its -icount mode (tests/nested/l1run.sh).
have_kvm_for_ovmf() {
	have_kvm || return 1
	# Measured 2026-12-08: on PVM OVMF shows nothing on COM1 in 240 s, its
	# vCPU busy at CPL0 (RIP moving through 0x1d000-0x89000), every
	# instruction emulated: ~10 s of guest time elsewhere, hours there.
	if linux_pvm; then
		SKIP_REASON="OVMF runs its CPL0 code through an emulating host's (PVM) instruction emulator: nothing on COM1 in 240 s (measured); its ~10 s of guest time would take hours"
		return 1
	fi
	if grep -q 'QEMU TCG' /proc/cpuinfo && [[ "${HYVE_L1_ACCEL:-}" != *icount* ]]; then
		SKIP_REASON="QEMU TCG's nested SVM aborts on OVMF's CR8 writes unless the L1 runs with -icount (tests/nested/l1run.sh)"
		return 1
	fi
}

# ovmf_vm NAME CODE VARS HYVE-ARGS...: starts OVMF (vm_start), its debug
# log (port 0x402) in $FW_LOG.
ovmf_vm() {
	local name=$1 code=$2 vars=$3
	shift 3
	FW_LOG=$TMP/ovmf.$RANDOM.log
	vm_start -c 1 -m 256M -l com1,stdio -l bootrom,"$code","$vars" -o lpc.debugcon.path="$FW_LOG" \
		-o control.socket="${OVMF_SOCK:-none}" "$@" "$(vm_name "$name")"
}

# ovmf_start NAME HYVE-ARGS...: OVMF with fresh copies of the code and
# variable files ($OVMF_C, $OVMF_V).
ovmf_start() {
	local name=$1
	shift
	OVMF_C=$TMP/ovmf_code.$RANDOM.fd OVMF_V=$TMP/ovmf_vars.$RANDOM.fd
	cp "$OVMF_CODE" "$OVMF_C" && cp "$OVMF_VARS" "$OVMF_V" || return 1
	ovmf_vm "$name" "$OVMF_C" "$OVMF_V" "$@"
}

# lpc.chipset: a UEFI ROM makes the machine an i440FX (what OVMF accepts),
# SeaBIOS keeps hyve's own ids, and the choice can be forced either way.
t_firmware_chipset_config() {
	have_ovmf || return 77
	cp "$OVMF_VARS" "$TMP/cfg_vars.fd"
	run_hyve 10 -l bootrom,"$OVMF_CODE","$TMP/cfg_vars.fd" -o config.dump=true vm
	expect_rc 0 && expect_out '^pci\.0\.0\.0\.devid=0x1237$' && expect_out '^pci\.0\.0\.0\.vendor=0x8086$' &&
		expect_out '^pci\.0\.1\.3\.device=piix4-pm$' || return 1
	if grep -q 'has no function 0' "$ERR"; then echo "    a warning about 1:3 without 1:0"; cat "$ERR"; return 1; fi
	run_hyve 10 -l bootrom,"$OVMF_CODE","$TMP/cfg_vars.fd" -o lpc.chipset=bhyve -o config.dump=true vm
	expect_rc 0 || return 1
	if grep -qE 'piix4-pm|devid=' "$OUT"; then echo "    lpc.chipset=bhyve still added i440FX parts"; return 1; fi
	run_hyve 10 -l bootrom,"$OVMF_CODE","$TMP/cfg_vars.fd" -s 0,hostbridge,devid=0x29c0 -o config.dump=true vm
	expect_rc 0 && expect_out '^pci\.0\.0\.0\.devid=0x29c0$' || return 1
	if [ -r "$SEABIOS" ]; then
		run_hyve 10 -l bootrom,"$SEABIOS" -o config.dump=true vm
		expect_rc 0 || return 1
		if grep -qE 'piix4-pm|devid=' "$OUT"; then echo "    SeaBIOS got the i440FX parts"; return 1; fi
		run_hyve 10 -l bootrom,"$SEABIOS" -o lpc.chipset=i440fx -o config.dump=true vm
		expect_rc 0 && expect_out '^pci\.0\.1\.3\.device=piix4-pm$' || return 1
	fi
	run_hyve 10 -l bootrom,"$OVMF_CODE" -o lpc.chipset=q35 -o config.dump=true vm
	expect_one_error 4 "lpc.chipset: bad value 'q35': expected auto \(the default\), i440fx or bhyve"
}

# The acceptance: OVMF reaches its shell on the serial console (no boot
# device: the boot manager falls back to the built-in UEFI shell), its
# variable driver wrote the variable store (boot options), and the code
# file is byte for byte what Debian ships.
t_firmware_ovmf_shell() {
	have_kvm_for_ovmf && have_ovmf || return 77
	ovmf_start ovmf || return 1
	wait_serial 900 'Shell> ' || { vm_stop; return 1; }
	local took=$((SECONDS - VM_START))
	vm_stop
	expect_out 'UEFI Interactive Shell' || return 1
	cmp -s "$OVMF_C" "$OVMF_CODE" || { echo "    the OVMF code file changed"; return 1; }
	if cmp -s "$OVMF_V" "$OVMF_VARS"; then
		echo "    the variable store is unchanged: OVMF did not find the flash writable"
		return 1
	fi
	echo "    OVMF reached its shell in ${took}s"
}

# The framebuffer under OVMF: with a UEFI boot ROM fbuf takes QEMU's
# register interface (variant=auto -> bochs), OVMF's QemuVideoDxe puts a
# Graphics Output Protocol on it and its shell draws there: the VNC
# screenshot (Debian's vncsnapshot) has text on it, not a black screen.
t_firmware_ovmf_gop_screen() {
	have_kvm_for_ovmf && have_ovmf || return 77
	command -v vncsnapshot >/dev/null && command -v djpeg >/dev/null ||
		{ SKIP_REASON="vncsnapshot or djpeg missing (tests/install-deps.sh installs them)"; return 77; }
	local port
	port=$(free_port)
	ovmf_start ovmfgop -s 29,fbuf,tcp=127.0.0.1:"$port" || return 1
	wait_serial 900 'Shell> ' || { vm_stop; return 1; }
	fb_grab "$port" "$TMP/ovmf-gop.ppm" || { vm_stop; return 1; }
	vm_stop
	fb_lit "$TMP/ovmf-gop.ppm" 200 || { echo "    the screen OVMF drew on is black"; return 1; }
}

# efi_fat_disk OUT [LINE...]: a 16 MiB FAT disk (no partition table, as a
# USB stick formatted whole) whose startup.nsh the UEFI shell runs: the
# shell commands given (by default a line that says so), then `reset -s`,
# which powers the VM off through UEFI's ResetSystem (OVMF: PIIX4 PM1
# control at 0xb004, sleep type 0).
efi_fat_disk() {
	command -v mformat >/dev/null && command -v mcopy >/dev/null ||
		{ SKIP_REASON="mtools is not installed"; return 77; }
	local img=$1 nsh=$TMP/startup.$RANDOM.nsh
	shift
	[ $# -gt 0 ] || set -- 'echo hyve-efi-disk: startup.nsh ran'
	printf '%s\r\n' "$@" 'reset -s' >"$nsh"
	truncate -s 16M "$img" && mformat -i "$img" -T 32768 -h 16 -s 32 :: && mcopy -i "$img" "$nsh" ::/startup.nsh
}

# A non-volatile variable the shell sets on one boot and dumps on the next.
EFI_VAR_GUID=5fd3f1a4-1c3e-4b7a-9e0f-6a1b2c3d4e5f
EFI_SETVAR="setvar HyveTest -guid $EFI_VAR_GUID -bs -nv =\"persisted-by-hyve\""
EFI_DMPSTORE="dmpstore HyveTest -guid $EFI_VAR_GUID"
EFI_DUMPED='\*persisted-by-hyv\*'

# ovmf_disk_boot SPEC: OVMF's own driver for the controller (-s 4,SPEC, @
# for the image) reads the FAT disk, the shell runs its startup.nsh, and
# the shutdown it asks for ends hyve with the power-off status.
ovmf_disk_boot() {
	have_kvm_for_ovmf && have_ovmf || return 77
	local img=$TMP/efi.$RANDOM.img
	efi_fat_disk "$img" || return $?
	ovmf_start ovmfdisk -s "4,${1/@/$img}" || return 1
	wait_vm_exit 900
	expect_out 'hyve-efi-disk: startup.nsh ran' && expect_rc 1
}

t_firmware_ovmf_virtio_blk_disk() { ovmf_disk_boot "virtio-blk,@"; }
t_firmware_ovmf_nvme_disk() { ovmf_disk_boot "nvme,@"; }
t_firmware_ovmf_ahci_disk() { ovmf_disk_boot "ahci,hd:@"; }

# The variable store is the file: a variable set on one boot (programmed
# into the flash) is there on the next boot of a new hyve with that file.
t_firmware_ovmf_variables_persist() {
	have_kvm_for_ovmf && have_ovmf || return 77
	efi_fat_disk "$TMP/set.img" "$EFI_SETVAR" && efi_fat_disk "$TMP/get.img" "$EFI_DMPSTORE" || return $?
	ovmf_start ovmfvar -s "4,virtio-blk,$TMP/set.img" || return 1
	wait_vm_exit 900
	expect_rc 1 || return 1
	ovmf_vm ovmfvar2 "$OVMF_C" "$OVMF_V" -s "4,virtio-blk,$TMP/get.img"
	wait_vm_exit 900
	expect_rc 1 && expect_out "$EFI_DUMPED"
}

# A checkpoint of OVMF's shell waiting for input (timers, the flash, the
# PIIX4 copy of the PM registers); a new hyve restores it and the shell
# takes the command typed there: its `reset -s` powers the VM off.
t_firmware_ovmf_checkpoint_restore() {
	have_kvm_for_ovmf && have_ovmf || return 77
	local hyvectl=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}
	[ -x "$hyvectl" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	local sock=$TMP/ovck.sock ck=$TMP/ovmf.ckpt
	OVMF_SOCK=$sock ovmf_start ovck || return 1
	wait_serial 900 'Shell> ' || { vm_stop; return 1; }
	if ! "$hyvectl" --socket="$sock" --checkpoint="$ck" >"$TMP/ovck.ctl" 2>&1; then
		echo "    hyvectl --checkpoint failed:"; sed 's/^/    | /' "$TMP/ovck.ctl"; vm_stop; return 1
	fi
	vm_stop
	printf 'reset -s\r' >"$TMP/ovck.keys"
	HYVE_STDIN=$TMP/ovck.keys run_hyve 600 -r "$ck" -o control.socket=none -o lpc.bootrom="$OVMF_C" \
		-o lpc.bootvars="$OVMF_V" -o lpc.debugcon.path="$FW_LOG" -l com1,stdio
	# The shell echoes the keys with cursor moves between them; "Reset with"
	# is its answer to the command.
	expect_rc 1 && expect_out 'Reset with'
}

# Live migration of OVMF's shell over loopback: the destination names the
# firmware files (host resources, docs/security.md), and the shell there
# takes the command typed into the destination's COM1: `reset -s`.
t_firmware_ovmf_migrate_live() {
	have_kvm_for_ovmf && have_ovmf || return 77
	local hyvectl=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}
	[ -x "$hyvectl" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	local sock=$TMP/ovmig.sock port fifo=$TMP/ovmig.in wfd dst_pid i=0
	port=$(free_port)
	OVMF_SOCK=$sock ovmf_start ovmig || return 1
	wait_serial 900 'Shell> ' || { vm_stop; return 1; }
	mkfifo "$fifo" && exec {wfd}<>"$fifo" || { vm_stop; return 1; }
	local dout=$TMP/ovmig.dst.out derr=$TMP/ovmig.dst.err
	"$HYVE" -R 127.0.0.1:"$port" -o control.socket=none -o lpc.bootrom="$OVMF_C" -o lpc.bootvars="$OVMF_V" \
		-o lpc.debugcon.path="$FW_LOG" -l com1,stdio <"$fifo" >"$dout" 2>"$derr" &
	dst_pid=$!
	while ! grep -q 'waiting for an incoming VM' "$derr" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
	if ! timeout -k 5 600 "$hyvectl" --socket="$sock" --migrate-live=127.0.0.1:"$port" >"$TMP/ovmig.ctl" 2>&1; then
		echo "    hyvectl --migrate-live failed:"; sed 's/^/    | /' "$TMP/ovmig.ctl" "$derr"
		vm_stop; kill -9 "$dst_pid" 2>/dev/null; exec {wfd}>&-; return 1
	fi
	vm_stop
	printf 'reset -s\r' >&"$wfd"
	i=0
	while kill -0 "$dst_pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 1; i=$((i + 1)); done
	kill -9 "$dst_pid" 2>/dev/null
	wait "$dst_pid"
	RC=$? OUT=$dout ERR=$derr
	exec {wfd}>&-
	expect_rc 1 && expect_out 'Reset with'
}

# The same disks and expectations on QEMU's i440FX with its own pflash and
# virtio-blk (TCG, no KVM needed): the reference the hyve tests above are
# held to, so a failure there is hyve's, not the test's.
qemu_ovmf() {
	OUT=$TMP/ovmf-ref.$RANDOM.out ERR=$TMP/ovmf-ref.$RANDOM.err
	timeout -k 5 300 qemu-system-x86_64 -machine pc,accel=tcg -m 256 -nographic -nodefaults -no-reboot \
		-serial stdio -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" \
		-drive if=pflash,format=raw,file="$1" -drive if=virtio,format=raw,file="$2" </dev/null >"$OUT" 2>"$ERR"
	RC=$?
}

t_firmware_ovmf_qemu_reference() {
	have_ovmf || return 77
	command -v qemu-system-x86_64 >/dev/null || { SKIP_REASON="qemu-system-x86_64 not installed"; return 77; }
	efi_fat_disk "$TMP/ref.img" && efi_fat_disk "$TMP/ref-set.img" "$EFI_SETVAR" &&
		efi_fat_disk "$TMP/ref-get.img" "$EFI_DMPSTORE" || return $?
	cp "$OVMF_VARS" "$TMP/ref_vars.fd"
	qemu_ovmf "$TMP/ref_vars.fd" "$TMP/ref.img"
	expect_rc 0 && expect_out 'UEFI Interactive Shell' && expect_out 'hyve-efi-disk: startup.nsh ran' || return 1
	! cmp -s "$TMP/ref_vars.fd" "$OVMF_VARS" || { echo "    QEMU's OVMF left the variable store unchanged"; return 1; }
	qemu_ovmf "$TMP/ref_vars.fd" "$TMP/ref-set.img"
	expect_rc 0 || return 1
	qemu_ovmf "$TMP/ref_vars.fd" "$TMP/ref-get.img"
	expect_rc 0 && expect_out "$EFI_DUMPED" || return 1
	# QEMU's bochs-display (the interface fbuf's variant=bochs has) under the
	# same OVMF: the shell's screen, taken over VNC as in t_firmware_ovmf_gop_screen.
	command -v vncsnapshot >/dev/null && command -v djpeg >/dev/null ||
		{ echo "    (no vncsnapshot/djpeg: the bochs-display screen is not checked)"; return 0; }
	local port=5900 pid rc=0
	while ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', $port))" 2>/dev/null; do
		port=$((port + 1))
	done
	cp "$OVMF_VARS" "$TMP/ref_vars2.fd"
	OUT=$TMP/ovmf-ref-gop.out ERR=$TMP/ovmf-ref-gop.err
	qemu-system-x86_64 -machine pc,accel=tcg -m 256 -nodefaults -no-reboot -display none -vnc 127.0.0.1:$((port - 5900)) \
		-serial stdio -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" \
		-drive if=pflash,format=raw,file="$TMP/ref_vars2.fd" -device bochs-display </dev/null >"$OUT" 2>"$ERR" &
	pid=$! VM_PID=$pid VM_START=$SECONDS
	wait_serial 300 'Shell> ' || rc=1
	[ $rc = 0 ] && { fb_grab "$port" "$TMP/ovmf-ref-gop.ppm" || rc=1; }
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	VM_PID=""
	[ $rc = 0 ] && fb_lit "$TMP/ovmf-ref-gop.ppm" 200
}
