# AHCI controller (devices/ahci.c, devices/ahci_atapi.c): the -s syntax of
# ahci, ahci-hd and ahci-cd and its errors (no KVM needed: -s options are
# checked when they are parsed, and -o config.dump=true prints the keys
# before /dev/kvm is opened), and on KVM hosts Linux's own ahci/libata
# drivers (the small test kernel of tests/test_linux.sh: CONFIG_SATA_AHCI,
# CONFIG_BLK_DEV_SR and CONFIG_ISO9660_FS in tests/linux/hyve-test.config):
# ext4 root on an AHCI disk, and an ISO 9660 root on an ATAPI CD-ROM.  The
# model itself is driven command by command in tests/unit/test_ahci.c and
# fuzzed by tests/fuzz/fuzz_ahci.c.

t_ahci_cli_options() {
	local img=$TMP/ahci-cli.img iso=$TMP/ahci-cli.iso
	truncate -s 16M "$img"
	truncate -s 4M "$iso"
	run_hyve 10 -s "4,ahci,hd:$img,nocache,direct,sectorsize=512/4096,ser=DISK0001,nmrr=1,rev=R1,model=Disk One,cd:$iso,ro" \
		-o config.dump=true vm
	expect_rc 0 && expect_out '^pci.0.4.0.device=ahci$' && expect_out '^pci.0.4.0.port.0.type=hd$' &&
	expect_out "^pci.0.4.0.port.0.path=$img\$" && expect_out '^pci.0.4.0.port.0.nocache=true$' &&
	expect_out '^pci.0.4.0.port.0.direct=true$' && expect_out '^pci.0.4.0.port.0.sectorsize=512/4096$' &&
	expect_out '^pci.0.4.0.port.0.ser=DISK0001$' && expect_out '^pci.0.4.0.port.0.nmrr=1$' &&
	expect_out '^pci.0.4.0.port.0.rev=R1$' && expect_out '^pci.0.4.0.port.0.model=Disk One$' &&
	expect_out '^pci.0.4.0.port.1.type=cd$' && expect_out "^pci.0.4.0.port.1.path=$iso\$" &&
	expect_out '^pci.0.4.0.port.1.ro=true$' || return 1
	# ahci-hd and ahci-cd: port 0.
	run_hyve 10 -s "5,ahci-hd,$img,ro,sectorsize=4096" -s "6,ahci-cd,$iso" -o config.dump=true vm
	expect_rc 0 && expect_out '^pci.0.5.0.device=ahci-hd$' && expect_out '^pci.0.5.0.port.0.type=hd$' &&
	expect_out "^pci.0.5.0.port.0.path=$img\$" && expect_out '^pci.0.5.0.port.0.ro=true$' &&
	expect_out '^pci.0.6.0.device=ahci-cd$' && expect_out '^pci.0.6.0.port.0.type=cd$' || return 1
	# Up to 32 ports, in order.
	local ports="" i
	for i in $(seq 0 31); do ports="$ports,hd:$img"; done
	run_hyve 10 -s "4,ahci${ports}" -o config.dump=true vm
	expect_rc 0 && expect_out "^pci.0.4.0.port.31.path=$img\$" || return 1
	run_hyve 10 -s help
	expect_rc 0 && expect_out '^ +ahci +AHCI SATA controller: hd:PATH' && expect_out '^ +ahci-hd +AHCI SATA disk: PATH' &&
	expect_out '^ +ahci-cd +AHCI ATAPI CD-ROM: PATH'
}

# One error line naming the key, exit status 4, for each bad -s option.
t_ahci_cli_bad_options() {
	local img=$TMP/ahci-bad.img iso=$TMP/ahci-bad.iso ports="" i opts want
	truncate -s 16M "$img"
	truncate -s 1M "$iso"
	for i in $(seq 0 32); do ports="$ports,hd:$img"; done
	run_hyve 10 -s "4,ahci${ports}" -o config.dump=true vm
	expect_one_error 4 'config: pci.0.4.0: more than 32 ports' || return 1
	while IFS='|' read -r opts want; do
		run_hyve 10 -s "4,$opts" -o config.dump=true vm
		expect_one_error 4 "$want" || { echo "    (with -s 4,$opts)"; return 1; }
	done <<EOF
ahci,hd:$TMP/no-such.img|config: pci.0.4.0.port.0.path: $TMP/no-such.img: No such file or directory
ahci,cd:$TMP/no-such.iso|config: pci.0.4.0.port.0.path: $TMP/no-such.iso: No such file or directory
ahci,$img|config: pci.0.4.0: '$img': expected hd:PATH or cd:PATH
ahci,hd:|config: pci.0.4.0.port.0.path: the port needs an image
ahci,sd:$img|expected hd:PATH or cd:PATH
ahci,hd:$img,bogus=1|unknown option 'port.0.bogus' for device model ahci
ahci,hd:$img,sectorsize=1024|config: pci.0.4.0.port.0.sectorsize: bad value '1024' \(expected 512 or 4096
ahci,hd:$img,sectorsize=4096/512|pci.0.4.0.port.0.sectorsize: bad value '4096/512'
ahci,hd:$img,sectorsize=512/3000|pci.0.4.0.port.0.sectorsize: bad value '512/3000'
ahci,hd:$img,ro=perhaps|config: pci.0.4.0.port.0.ro: bad value 'perhaps' \(expected true or false\)
ahci,hd:$img,nocache=2|pci.0.4.0.port.0.nocache: bad value '2'
ahci,hd:$img,ser=ABCDEFGHIJKLMNOPQRSTU|pci.0.4.0.port.0.ser: bad value 'ABCDEFGHIJKLMNOPQRSTU' \(expected 1 to 20 characters\)
ahci,hd:$img,rev=123456789|pci.0.4.0.port.0.rev: bad value '123456789' \(expected 1 to 8 characters\)
ahci,hd:$img,nmrr=65535|config: pci.0.4.0.port.0.nmrr: bad value '65535'
ahci,hd:$img,nmrr=fast|pci.0.4.0.port.0.nmrr: bad value 'fast'
ahci,hd:$img,cd:$iso,sectorsize=512|config: pci.0.4.0.port.1.sectorsize: a CD has 2048-byte sectors
ahci-hd,$TMP/no-such.img|config: pci.0.4.0.port.0.path: $TMP/no-such.img: No such file or directory
ahci-hd,$img,model=|pci.0.4.0.port.0.model: bad value '' \(expected 1 to 40 characters\)
ahci-hd,ro|config: pci.0.4.0.port.0.path: ro: No such file or directory
ahci-cd,$iso,sectorsize=4096|a CD has 2048-byte sectors
EOF
}

# Keys from -k, and an ahci with no port, are checked when the device is
# built (after the VM is created).
t_ahci_config_file_errors() {
	have_kvm || return 77
	local img=$TMP/ahci-k.img k=$TMP/ahci.conf
	truncate -s 16M "$img"
	printf 'pci.0.4.0.device=ahci\npci.0.4.0.port.0.type=zip\npci.0.4.0.port.0.path=%s\n' "$img" >"$k"
	run_hyve 30 -k "$k" -o boot.kernel="$GUEST" vm
	expect_one_error 4 "config: pci.0.4.0.port.0.type: bad value 'zip' \\(expected hd or cd\\)" || return 1
	printf 'pci.0.4.0.device=ahci-cd\npci.0.4.0.port.0.path=%s\npci.0.4.0.port.1.path=%s\n' "$img" "$img" >"$k"
	run_hyve 30 -k "$k" -o boot.kernel="$GUEST" vm
	expect_one_error 4 'config: pci.0.4.0.port.1.type: missing' || return 1
	run_hyve 30 -s 4,ahci -o boot.kernel="$GUEST" vm
	expect_one_error 4 'config: pci.0.4.0: ahci needs a port'
}

# --- Linux's ahci/libata (KVM hosts; skipped without a test kernel) ----------

AHCI_LINUX_ERRORS='ata[0-9]+(\.[0-9]+)?: .*(failed command|exception Emask|hard resetting link|SError|timeout)|blk_update_request|Buffer I/O|I/O error|EXT4-fs (error|warning)|ISOFS: |BUG:|Oops|WARNING: CPU'
# A CD-ROM answers CHECK CONDITION to MMC commands it does not have (the
# cdrom layer probes some); only failed reads, resets and timeouts count.
AHCI_CD_LINUX_ERRORS='ata[0-9]+(\.[0-9]+)?: .*(hard resetting link|timeout|failed command: READ)|Buffer I/O|I/O error|ISOFS: |BUG:|Oops|WARNING: CPU'

# Ext4 root on an AHCI disk (root=/dev/sda): libata probes the port
# (COMRESET, IDENTIFY, SET FEATURES, NCQ), root is mounted read-write, /init
# writes 1 MiB, reads it back after dropping the page cache, runs fstrim
# (DATA SET MANAGEMENT), syncs and powers off; the host then finds the file
# in the image with the same checksum.
t_linux_ahci_root() {
	linux_test_kit || return $?
	local img=$TMP/linux-ahci-root.img script=$TMP/ahci-test.sh sum
	sh tests/linux/mkrootfs.sh "$img" 2>"$TMP/mkrootfs-ahci.log" || {
		echo "    mkrootfs.sh failed:"; tail -20 "$TMP/mkrootfs-ahci.log" | sed 's/^/    | /'; return 1; }
	cat >"$script" <<'EOF'
yes hyve-ahci | head -c 1048576 >/ahci-data
sync
echo 3 >/proc/sys/vm/drop_caches
echo "hyve-ahci: md5 $(md5sum /ahci-data | cut -d' ' -f1)"
fstrim -v / 2>&1 | sed 's/^/hyve-ahci: fstrim: /'
echo "hyve-ahci: queue_depth $(cat /sys/block/sda/device/queue_depth 2>/dev/null)"
EOF
	debugfs -w -R "write $script /ahci-test.sh" "$img" >/dev/null 2>&1 || { echo "    debugfs cannot add the script"; return 1; }
	sum=$(yes hyve-ahci | head -c 1048576 | md5sum | cut -d' ' -f1)
	vm_start -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" \
		-o boot.cmdline="console=ttyS0 root=/dev/sda rootwait rw rootfstype=ext4 init=/init hyve.run=/ahci-test.sh hyve.poweroff $(linux_cmdline_extra)" \
		-s 4,ahci,hd:"$img" "linuxahci$$"
	local rc=0
	wait_linux_init "$LINUX_TIMEOUT" || rc=1
	if [ $rc = 0 ] && ! linux_pvm; then
		wait_serial "$LINUX_TIMEOUT" 'hyve-init: powering off|reboot: Power down' || rc=1
		local i=0
		while kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
	fi
	vm_stop
	[ $rc = 0 ] || return 1
	expect_out 'ahci 0000:00:04\.0: AHCI ' &&
	expect_out 'ata1: SATA link up' &&
	expect_out 'ata1\.00: ATA-[0-9]+: HYVE SATA DISK' &&
	expect_out 'ata1\.00: .*NCQ \(depth 32\)' &&
	expect_out 'EXT4-fs \(sda\): mounted filesystem' &&
	expect_out "$LINUX_INIT_LINE" || return 1
	expect_no_out "$AHCI_LINUX_ERRORS" "ATA/ext4 errors" || return 1
	if grep -qE 'hyve: (error|warning): .*(ahci|port)' "$ERR"; then
		echo "    hyve logged AHCI errors:"; grep -E 'hyve: (error|warning):' "$ERR" | head | sed 's/^/    | /'; return 1
	fi
	linux_pvm && return 0
	expect_out 'hyve-init: root: /dev/root / ext4 rw' &&
	expect_out "hyve-ahci: md5 $sum" && expect_out 'hyve-init: powering off' || return 1
	# TRIM reached the disk (DATA SET MANAGEMENT) and libata runs NCQ at depth 32.
	expect_out 'hyve-ahci: fstrim: /: .*[1-9][0-9]* bytes\)? trimmed' && expect_out 'hyve-ahci: queue_depth 32' || return 1
	grep -a 'hyve-ahci: ' "$OUT" | tr -d '\r' | sed 's/^/    /'
	[ "$RC" = 1 ] || { echo "    hyve exited with status $RC, not 1 (guest poweroff)"; return 1; }
	local got
	got=$(debugfs -R "cat /ahci-data" "$img" 2>/dev/null | md5sum | cut -d' ' -f1)
	[ "$got" = "$sum" ] || { echo "    /ahci-data in the image: md5 $got, expected $sum"; return 1; }
}

# ISO 9660 root on an ATAPI CD-ROM (ahci-cd, root=/dev/sr0
# rootfstype=iso9660): the sr driver's INQUIRY, READ CAPACITY, GET
# CONFIGURATION, MODE SENSE, READ TOC, and every block through READ(10).
t_linux_ahci_cd_root() {
	linux_test_kit || return $?
	local iso=$TMP/linux-ahci-root.iso
	sh tests/linux/mkrootfs.sh "$iso" 2>"$TMP/mkrootfs-ahci-iso.log" || {
		echo "    mkrootfs.sh failed:"; tail -20 "$TMP/mkrootfs-ahci-iso.log" | sed 's/^/    | /'; return 1; }
	vm_start -l com1,stdio -c 1 -m 256M -o boot.kernel="$TEST_BZIMAGE" \
		-o boot.cmdline="console=ttyS0 root=/dev/sr0 rootwait ro rootfstype=iso9660 init=/init hyve.poweroff $(linux_cmdline_extra)" \
		-s 5,ahci-cd,"$iso" "linuxahcicd$$"
	local rc=0
	wait_linux_init "$LINUX_TIMEOUT" || rc=1
	if [ $rc = 0 ] && ! linux_pvm; then
		wait_serial "$LINUX_TIMEOUT" 'hyve-init: pci:' || rc=1
	fi
	vm_stop
	[ $rc = 0 ] || return 1
	expect_out 'ahci 0000:00:05\.0: AHCI ' &&
	expect_out 'ata1\.00: ATAPI: HYVE SATA DVD ROM' &&
	expect_out 'sr 0:0:0:0: \[sr0\]' &&
	expect_out 'VFS: Mounted root \(iso9660 filesystem\) readonly' &&
	expect_out "$LINUX_INIT_LINE" || return 1
	expect_no_out "$AHCI_CD_LINUX_ERRORS" "ATAPI/ISO errors" || return 1
	linux_pvm && return 0
	expect_out 'hyve-init: root: /dev/root / iso9660 ro'
}

# The test guest's own polled AHCI driver (guests/testguest/tahci.c) on a
# disk and a CD: IDENTIFY, DMA write/read of the disk pattern, FLUSH, TRIM
# (reads zeros after it), an NCQ read, a read past the end that must end in
# a task file error (and a port that recovers), and on the CD INQUIRY,
# READ CAPACITY and READ(10) of the ISO's volume descriptor.  The host then
# checks the image: the written sectors hold the pattern, the trimmed ones
# zeros, the rest is untouched.
ahci_tg_iso() {   # ahci_tg_iso OUT: a small ISO 9660 image
	mkdir -p "$TMP/ahci_tg_isodir" && echo hyve >"$TMP/ahci_tg_isodir/hello" &&
		genisoimage -quiet -o "$1" "$TMP/ahci_tg_isodir"
}

ahci_tg_image_ok() {   # ahci_tg_image_ok RAW TRIMMED(0|1)
	python3 - "$1" "$VT_SECTORS" "$2" <<'PY'
import struct, sys
M = 0xffffffff
def sector(s, seed=0):
    return struct.pack('<128I', *[((s * 0x9e3779b1 + j * 0x85ebca77) ^ seed ^ 0xa5a5a5a5) & M for j in range(128)])
data = open(sys.argv[1], 'rb').read()
trimmed = sys.argv[3] == '1'
bad = [s for s in range(int(sys.argv[2])) if data[s * 512:(s + 1) * 512] !=
       (sector(s, 0x5eed0003) if 256 <= s < 272 else bytes(512) if trimmed and 512 <= s < 528 else sector(s))]
if bad:
    sys.exit('    image: %d sectors differ from what the guest wrote, first %d' % (len(bad), bad[0]))
PY
}

t_ahci_guest_driver() {
	vt_need || return 77
	command -v genisoimage >/dev/null || { SKIP_REASON="genisoimage not installed"; return 77; }
	local img iso=$TMP/ahci_tg.iso
	img=$(vt_image ahci_tg) || return 1
	ahci_tg_iso "$iso" || return 1
	run_guest 120 "test=ahci" -s 5,ahci,hd:"$img",ser=AHCI-TG-1,cd:"$iso"
	expect_rc 1 && expect_out '^PASS ahci' || return 1
	expect_out "^ahci: 00:05\.0 \([0-9a-f]{4}:[0-9a-f]{4}\) vs 1\.3 ports [0-9]+ slots 32 ncq 1" &&
	expect_out "^ahci: port 0 disk '.+' serial 'AHCI-TG-1' $VT_SECTORS sectors ncq depth 32 trim 1" &&
	expect_out "^ahci: port 0 wrote 256-271 fnv=$(vt_py fnv "$img" 256 16 0x5eed0003), read back ok" &&
	expect_out '^ahci: port 0 flush ok' &&
	expect_out '^ahci: port 0 trim 512-527 ok, reads zeros' &&
	expect_out '^ahci: port 0 ncq read ok' &&
	expect_out '^ahci: port 0 read past the end: task file error' &&
	expect_out "^ahci: port 1 cd '.+' [0-9]+ blocks of 2048 bytes, block 16 'CD001'" || return 1
	ahci_tg_image_ok "$img" 1
}

# The same driver against QEMU's ICH9 AHCI (TCG, no KVM needed), so the
# driver tests AHCI and ATAPI, not hyve's reading of them.  (QEMU keeps
# the data of a TRIM on a raw file; the image check allows either.)
t_ahci_guest_driver_qemu_reference() {
	command -v genisoimage >/dev/null || { SKIP_REASON="genisoimage not installed"; return 77; }
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
	local img iso=$TMP/ahci_qref.iso
	img=$(vt_image ahci_qref) || return 1
	ahci_tg_iso "$iso" || return 1
	run_guest_qemu 300 "test=ahci" -device ich9-ahci,id=ahci,addr=5 \
		-drive file="$img",if=none,format=raw,id=d0 -device ide-hd,drive=d0,bus=ahci.0,serial=AHCI-TG-1 \
		-drive file="$iso",if=none,format=raw,id=c0,media=cdrom -device ide-cd,drive=c0,bus=ahci.1 || return $?
	expect_out '^PASS ahci' &&
	expect_out "^ahci: port 0 disk '.+' serial 'AHCI-TG-1' $VT_SECTORS sectors ncq depth 32 trim 1" &&
	expect_out "^ahci: port 0 wrote 256-271 fnv=$(vt_py fnv "$img" 256 16 0x5eed0003), read back ok" &&
	expect_out '^ahci: port 0 ncq read ok' &&
	expect_out '^ahci: port 0 read past the end: task file error' &&
	expect_out "^ahci: port 1 cd '.+' [0-9]+ blocks of 2048 bytes, block 16 'CD001'" || return 1
	ahci_tg_image_ok "$img" 0
}
