# NVMe controller (devices/nvme.c, devices/nvme_admin.c): the -s syntax and
# its errors (no KVM needed: -s options are checked when they are parsed,
# and -o config.dump=true prints the keys before /dev/kvm is opened), and
# on KVM hosts Linux's own nvme driver (the small test kernel of
# tests/test_linux.sh, CONFIG_BLK_DEV_NVME=y in tests/linux/hyve-test.config):
# ext4 root on an NVMe namespace, and the namespace IDs two controllers
# report (same eui64= vs defaults).  The model itself is driven command by
# command in tests/unit/test_nvme.c and fuzzed by tests/fuzz/fuzz_nvme.c.

t_nvme_cli_options() {
	local img=$TMP/nvme-cli.img
	truncate -s 16M "$img"
	run_hyve 10 -s "4,nvme,$img,maxq=2,qsz=64,ioslots=16,sectsz=4096,ser=NVME0001,eui64=0x0123456789abcdef,dsm=disable,ro" \
		-o config.dump=true vm
	expect_rc 0 && expect_out '^pci.0.4.0.device=nvme$' && expect_out "^pci.0.4.0.path=$img\$" &&
	expect_out '^pci.0.4.0.maxq=2$' && expect_out '^pci.0.4.0.qsz=64$' && expect_out '^pci.0.4.0.ioslots=16$' &&
	expect_out '^pci.0.4.0.sectsz=4096$' && expect_out '^pci.0.4.0.ser=NVME0001$' &&
	expect_out '^pci.0.4.0.eui64=0x0123456789abcdef$' && expect_out '^pci.0.4.0.dsm=disable$' &&
	expect_out '^pci.0.4.0.ro=true$' || return 1
	# The bhyve spelling with the defaults, and the model in -s help.
	run_hyve 10 -s "4,nvme,$img" -s "5:0,nvme,$img,dsm=auto,sectsz=512" -o config.dump=true vm
	expect_rc 0 && expect_out '^pci.0.5.0.dsm=auto$' || return 1
	run_hyve 10 -s help
	expect_rc 0 && expect_out '^ +nvme +NVMe disk: PATH\[,maxq=N\]\[,qsz=N\]\[,ioslots=N\]\[,sectsz=512\|4096\]\[,ser=S\]\[,eui64=N\]\[,dsm=auto\|enable\|disable\]'
}

# One error line naming the key, exit status 4, for each bad -s option.
t_nvme_cli_bad_options() {
	local img=$TMP/nvme-bad.img opts want
	truncate -s 16M "$img"
	while IFS='|' read -r opts want; do
		run_hyve 10 -s "4,nvme,$opts" -o config.dump=true vm
		expect_one_error 4 "$want" || { echo "    (with -s 4,nvme,$opts)"; return 1; }
	done <<EOF
$TMP/no-such.img|config: pci.0.4.0.path: $TMP/no-such.img: No such file or directory
maxq=2|config: pci.0.4.0.path: nvme needs a disk image
$img,qsz=0|config: pci.0.4.0.qsz: bad value '0' \(expected a queue size in 2..65536\)
$img,qsz=1|pci.0.4.0.qsz: bad value '1'
$img,qsz=65537|pci.0.4.0.qsz: bad value '65537'
$img,maxq=0|pci.0.4.0.maxq: bad value '0'
$img,maxq=257|pci.0.4.0.maxq: bad value '257'
$img,ioslots=0|pci.0.4.0.ioslots: bad value '0'
$img,eui64=xyz|config: pci.0.4.0.eui64: bad value 'xyz' \(expected a 64-bit number
$img,eui64=0x10000000000000000|pci.0.4.0.eui64: bad value
$img,sectsz=1024|config: pci.0.4.0.sectsz: bad value '1024' \(expected 512 or 4096\)
$img,sectsz=4k|pci.0.4.0.sectsz: bad value '4k'
$img,dsm=maybe|config: pci.0.4.0.dsm: bad value 'maybe' \(expected auto, enable or disable\)
$img,ser=ABCDEFGHIJKLMNOPQRSTU|pci.0.4.0.ser: bad value 'ABCDEFGHIJKLMNOPQRSTU' \(expected 1 to 20 characters\)
$img,ro=perhaps|pci.0.4.0.ro: bad value 'perhaps'
$img,format=vmdk|pci.0.4.0.format: bad value 'vmdk'
$img,sectorsize=512|unknown option 'sectorsize' for device model nvme
EOF
}

# Keys from -k are checked when the device is built (after the VM is created).
t_nvme_config_file_errors() {
	have_kvm || return 77
	local img=$TMP/nvme-k.img k=$TMP/nvme.conf
	truncate -s 16M "$img"
	printf 'pci.0.4.0.device=nvme\npci.0.4.0.path=%s\npci.0.4.0.qsz=0\n' "$img" >"$k"
	run_hyve 30 -k "$k" -o boot.kernel="$GUEST" vm
	expect_one_error 4 'config: pci.0.4.0.qsz: bad value' || return 1
	printf 'pci.0.4.0.device=nvme\npci.0.4.0.path=%s\n' "$TMP/nvme-missing.img" >"$k"
	run_hyve 30 -k "$k" -o boot.kernel="$GUEST" vm
	expect_one_error 4 'pci.0.4.0.path: .*nvme-missing.img: No such file or directory'
}

# --- Linux's nvme driver (KVM hosts; skipped without a test kernel) ----------

# What a failing NVMe or block layer prints.
NVME_LINUX_ERRORS='nvme nvme[0-9]+: .*([Tt]imeout|I/O error|[Ff]ailed|[Ee]rror|[Rr]eset)|blk_update_request|Buffer I/O|EXT4-fs (error|warning)|BUG:|Oops|WARNING: CPU'

# Ext4 root on an NVMe namespace (root=/dev/nvme0n1), -c 2: the controller
# probes with two I/O queue pairs (maxq defaults to the vCPU count), root is
# mounted read-write, /init writes 1 MiB, reads it back after dropping the
# page cache, runs fstrim (Dataset Management), syncs and powers off (the
# driver shuts the controller down: CC.SHN).  The host then finds the file
# in the image with the same checksum.
t_linux_nvme_root() {
	linux_test_kit || return $?
	local img=$TMP/linux-nvme-root.img script=$TMP/nvme-test.sh sum
	sh tests/linux/mkrootfs.sh "$img" 2>"$TMP/mkrootfs-nvme.log" || {
		echo "    mkrootfs.sh failed:"; tail -20 "$TMP/mkrootfs-nvme.log" | sed 's/^/    | /'; return 1; }
	cat >"$script" <<'EOF'
yes hyve-nvme | head -c 1048576 >/nvme-data
sync
echo 3 >/proc/sys/vm/drop_caches
echo "hyve-nvme: md5 $(md5sum /nvme-data | cut -d' ' -f1)"
fstrim -v / 2>&1 | sed 's/^/hyve-nvme: fstrim: /'
echo "hyve-nvme: queues $(ls -d /sys/block/nvme0n1/mq/* 2>/dev/null | wc -l | tr -d ' ')"
EOF
	debugfs -w -R "write $script /nvme-test.sh" "$img" >/dev/null 2>&1 || { echo "    debugfs cannot add the script"; return 1; }
	sum=$(yes hyve-nvme | head -c 1048576 | md5sum | cut -d' ' -f1)
	vm_start -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" \
		-o boot.cmdline="console=ttyS0 root=/dev/nvme0n1 rootwait rw rootfstype=ext4 init=/init hyve.run=/nvme-test.sh hyve.poweroff $(linux_cmdline_extra)" \
		-s 4,nvme,"$img" "linuxnvme$$"
	local rc=0
	wait_linux_init "$LINUX_TIMEOUT" || rc=1
	if [ $rc = 0 ] && ! linux_pvm; then
		# /init powers the guest off (status 1) once the script ran.
		wait_serial "$LINUX_TIMEOUT" 'hyve-init: powering off|reboot: Power down' || rc=1
		local i=0
		while kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
	fi
	vm_stop
	[ $rc = 0 ] || return 1
	expect_out 'nvme nvme0: pci function 0000:00:04\.0' &&
	expect_out 'nvme nvme0: 2/0/0 default/read/poll queues' &&
	expect_out 'EXT4-fs \(nvme0n1\): mounted filesystem' &&
	expect_out 'VFS: Mounted root \(ext4 filesystem\) on device 259:[0-9]+\.' &&
	expect_out "$LINUX_INIT_LINE" || return 1
	expect_no_out "$NVME_LINUX_ERRORS|missing or invalid SUBNQN" "NVMe/ext4 errors" || return 1
	if grep -qE 'hyve: (error|warning): .*nvme' "$ERR"; then
		echo "    hyve logged NVMe errors:"; grep -E 'hyve: (error|warning):' "$ERR" | head | sed 's/^/    | /'; return 1
	fi
	local sb
	sb=$(dumpe2fs -h "$img" 2>/dev/null)
	if ! printf '%s\n' "$sb" | grep -qE '^Mount count: +[1-9]'; then
		echo "    the guest's rw mount did not reach the image (superblock mount count)"; return 1
	fi
	linux_pvm && return 0
	expect_out 'hyve-init: root: /dev/root / ext4 rw' &&
	expect_out 'hyve-init: pci:.* 0000:00:04\.0=fb5d:0a0a:nvme' &&
	expect_out "hyve-nvme: md5 $sum" && expect_out 'hyve-nvme: queues 2' && expect_out 'hyve-init: powering off' || return 1
	expect_out 'hyve-nvme: fstrim: /: .*[1-9][0-9]* bytes\)? trimmed' || return 1   # Dataset Management reached the image
	grep -a 'hyve-nvme: fstrim' "$OUT" | tr -d '\r' | sed 's/^/    /'
	# Powered off by the guest (status 1), not killed; the data is in the image.
	[ "$RC" = 1 ] || { echo "    hyve exited with status $RC, not 1 (guest poweroff)"; return 1; }
	local got
	got=$(debugfs -R "cat /nvme-data" "$img" 2>/dev/null | md5sum | cut -d' ' -f1)
	[ "$got" = "$sum" ] || { echo "    /nvme-data in the image: md5 $got, expected $sum"; return 1; }
}

# Namespace IDs as Linux checks them: four controllers, probe only (root on
# virtio-blk).  Slots 4 and 5 keep the default EUI64/NGUID (from the VM name
# and slot: distinct); slots 6 and 7 are given the same eui64=, which Linux
# reports as duplicate IDs for the second of them to probe.
t_linux_nvme_ids() {
	linux_test_kit || return $?
	local root=$TMP/linux-nvme-ids-root.img s
	sh tests/linux/mkrootfs.sh "$root" 2>"$TMP/mkrootfs-ids.log" || {
		echo "    mkrootfs.sh failed:"; tail -20 "$TMP/mkrootfs-ids.log" | sed 's/^/    | /'; return 1; }
	for s in 4 5 6 7; do truncate -s 8M "$TMP/nvme-ids-$s.img"; done
	vm_start -l com1,stdio -c 1 -m 256M -o boot.kernel="$TEST_BZIMAGE" \
		-o boot.cmdline="console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/init hyve.poweroff $(linux_cmdline_extra)" \
		-s 3,virtio-blk,"$root" -s 4,nvme,"$TMP/nvme-ids-4.img" -s 5,nvme,"$TMP/nvme-ids-5.img" \
		-s 6,nvme,"$TMP/nvme-ids-6.img",eui64=0x02a1b2c3d4e5f601 -s 7,nvme,"$TMP/nvme-ids-7.img",eui64=0x02a1b2c3d4e5f601 \
		"linuxnvmeids$$"
	local rc=0
	wait_linux_init "$LINUX_TIMEOUT" || rc=1
	# /init lists the block devices (then the PCI functions) before powering off.
	if [ $rc = 0 ] && ! linux_pvm; then
		wait_serial "$LINUX_TIMEOUT" 'hyve-init: pci:' || rc=1
	fi
	vm_stop
	[ $rc = 0 ] || return 1
	# Controller number of each slot, from "nvme nvmeN: pci function 0000:00:0S.0".
	local ctl4 ctl5 ctl6 ctl7 n
	for s in 4 5 6 7; do
		n=$(sed -n "s/.*nvme nvme\([0-9]*\): pci function 0000:00:0$s\.0.*/\1/p" "$OUT" | head -n1)
		[ -n "$n" ] || { echo "    no nvme controller probed in slot $s"; show_serial 40; return 1; }
		eval "ctl$s=$n"
	done
	echo "    controllers: slot 4 nvme$ctl4, slot 5 nvme$ctl5, slot 6 nvme$ctl6, slot 7 nvme$ctl7"
	local dups
	dups=$(grep -aoE 'nvme nvme[0-9]+: [a-z ]*duplicate IDs for nsid 1' "$OUT" | sed 's/^nvme nvme\([0-9]*\):.*/\1/' | sort -u | tr '\n' ' ')
	case " $dups" in
	" $ctl6 " | " $ctl7 ") ;;
	*)
		echo "    expected duplicate IDs reported for exactly one of nvme$ctl6/nvme$ctl7 (same eui64=), got: '${dups:-none}'"
		grep -a 'duplicate' "$OUT" | tr -d '\r' | sed 's/^/    | /'
		return 1
		;;
	esac
	expect_no_out 'nvme nvme[0-9]+: (missing or invalid SUBNQN|Duplicate cntlid|ignoring ctrl due to duplicate subnqn)' "subsystem clashes" || return 1
	linux_pvm && return 0
	# The default-ID namespaces and one of the pair are block devices.
	expect_out "hyve-init: block: .*nvme${ctl4}n1" && expect_out "hyve-init: block: .*nvme${ctl5}n1" &&
	expect_out "hyve-init: block: .*nvme(${ctl6}|${ctl7})n1"
}

# The test guest's own polled NVMe driver (guests/testguest/tnvme.c):
# reset/enable, Identify (controller, namespace, ID descriptors), queue
# set-up, Write/Read/Flush/DSM/Write Zeroes, and the errors hyve must
# return instead of acting (LBA out of range 0x80, invalid opcode 0x1,
# invalid queue size sct 1 sc 0x2, PRP offset invalid 0x13).  Then the host
# checks the image: the written blocks hold the pattern, the deallocated
# and zeroed ones read zeros, the rest is untouched.  Once on a raw image,
# once on a qcow2 image (the same blockif/format path as virtio-blk).
nvme_guest_run() {   # nvme_guest_run IMG EXTRA-NVME-OPTIONS
	local img=$1 opts=$2
	run_guest 120 "test=nvme" -s 4,nvme,"$img",ser=NVME-TG-1$opts
	expect_rc 1 && expect_out '^PASS nvme' || return 1
	expect_out "^nvme: 00:04\.0 \([0-9a-f]{4}:[0-9a-f]{4}\) vs 1\.4 " &&
	expect_out "^nvme: model '.+' serial 'NVME-TG-1' vwc 1 oncs 0x[0-9a-f]+" &&
	expect_out "^nvme: ns1 $VT_SECTORS blocks of 512 bytes eui64 [0-9a-f]{16} nguid [0-9a-f]{32}" &&
	expect_out '^nvme: nsid descriptors: eui64 nguid' &&
	expect_out '^nvme: queues granted sq [1-9][0-9]* cq [1-9]' &&
	expect_out "^nvme: wrote lba 256-271 fnv=$(vt_py fnv "$img" 256 16 0x5eed0002), read back ok" &&
	expect_out '^nvme: flush status 0x0' &&
	expect_out '^nvme: dsm lba 512-527 status 0x0, reads zeros' &&
	expect_out '^nvme: write zeroes lba 600-607 status 0x0, reads zeros' &&
	expect_out '^nvme: read past the end status 0x80' &&
	expect_out '^nvme: opcode 0x7f status 0x1'"$EOL" &&
	expect_out '^nvme: queue of mqes\+2 entries: status sct 1 sc 0x2' &&
	expect_out '^nvme: misaligned PRP list entry status 0x13'
}

nvme_guest_image_ok() {   # nvme_guest_image_ok RAW: the host's view after the run
	python3 - "$1" "$VT_SECTORS" <<'PY'
import struct, sys
M = 0xffffffff
def sector(s, seed=0):
    return struct.pack('<128I', *[((s * 0x9e3779b1 + j * 0x85ebca77) ^ seed ^ 0xa5a5a5a5) & M for j in range(128)])
data = open(sys.argv[1], 'rb').read()
bad = []
for s in range(int(sys.argv[2])):
    got = data[s * 512:(s + 1) * 512]
    want = sector(s, 0x5eed0002) if 256 <= s < 272 else bytes(512) if 512 <= s < 528 or 600 <= s < 608 else sector(s)
    if got != want:
        bad.append(s)
if bad:
    sys.exit('    image: %d sectors differ from what the guest wrote, first %d' % (len(bad), bad[0]))
PY
}

t_nvme_guest_driver() {
	vt_need || return 77
	local img
	img=$(vt_image nvme_tg) || return 1
	nvme_guest_run "$img" "" || return 1
	nvme_guest_image_ok "$img"
}

t_nvme_guest_driver_qcow2() {
	vt_need || return 77
	command -v qemu-img >/dev/null || { SKIP_REASON="qemu-img not installed (qemu-utils)"; return 77; }
	local raw img=$TMP/nvme_tg.qcow2
	raw=$(vt_image nvme_tgq) || return 1
	qemu-img convert -O qcow2 -o cluster_size=4096 "$raw" "$img" || return 1
	nvme_guest_run "$img" ",format=qcow2" || return 1
	qemu-img check "$img" >"$TMP/nvme_tg.check" 2>&1 || { sed 's/^/    | /' "$TMP/nvme_tg.check"; return 1; }
	qemu-img convert -O raw "$img" "$TMP/nvme_tg.view" || return 1
	nvme_guest_image_ok "$TMP/nvme_tg.view"
}

# The same driver against QEMU's NVMe controller (TCG, no KVM needed): the
# statuses the hyve test expects are what a reference device returns, so
# the guest driver tests NVMe, not hyve's reading of it.  (QEMU keeps the
# data of a DSM deallocate on a raw file; that line is not compared.)
t_nvme_guest_driver_qemu_reference() {
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
	local img
	img=$(vt_image nvme_qref) || return 1
	run_guest_qemu 300 "test=nvme" -drive file="$img",if=none,format=raw,id=d0 \
		-device nvme,drive=d0,serial=NVME-TG-1,addr=4 || return $?
	expect_out '^PASS nvme' &&
	expect_out "^nvme: 00:04\.0 \(1b36:0010\) vs 1\.4 " &&
	expect_out "^nvme: wrote lba 256-271 fnv=$(vt_py fnv "$img" 256 16 0x5eed0002), read back ok" &&
	expect_out '^nvme: write zeroes lba 600-607 status 0x0, reads zeros' &&
	expect_out '^nvme: read past the end status 0x80' &&
	expect_out '^nvme: opcode 0x7f status 0x1'"$EOL" &&
	expect_out '^nvme: queue of mqes\+2 entries: status sct 1 sc 0x2' &&
	expect_out '^nvme: misaligned PRP list entry status 0x13'
}
