# The small Linux test kernel on qcow2 roots (issue 16's acceptance), with
# qemu-img as the judge afterwards:
#  - NVMe, root on a compressed qcow2 (qemu-img convert -c), probed;
#  - virtio-blk, root on a qcow2 overlay (format=qcow2) over a raw backing
#    file, checkpointed while the kernel waits to mount root (rootdelay),
#    then restored after the original VM went on and mounted it: the
#    restored VM must find the disk as it was at the checkpoint.
# "Mount count" in the ext4 superblock is the guest's write everyone can
# see: the kernel increments it on a read-write mount.  Helpers come from
# tests/test_linux.sh.

# lq_mount_count IMAGE [SNAPSHOT]: the superblock's mount count as QEMU
# reads the image (or one of its internal snapshots).
lq_mount_count() {
	local raw=$TMP/lq-view.$$.raw
	rm -f "$raw"
	qemu-img convert ${2:+-l snapshot.name="$2"} -O raw "$1" "$raw" 2>"$TMP/lq-convert.err" || {
		echo "convert-failed"; return 1; }
	dumpe2fs -h "$raw" 2>/dev/null | sed -n 's/^Mount count: *//p'
	rm -f "$raw"
}

lq_check() {   # lq_check IMAGE: qemu-img check clean, or print why
	qemu-img check "$1" >"$TMP/lq-check.out" 2>&1 && return 0
	echo "    qemu-img check $1:"
	sed 's/^/    | /' "$TMP/lq-check.out" | head -20
	return 1
}

lq_need() {
	linux_test_kit || return $?
	command -v qemu-img >/dev/null || { SKIP_REASON="qemu-img not installed (qemu-utils)"; return 77; }
	command -v dumpe2fs >/dev/null || { SKIP_REASON="dumpe2fs not installed (e2fsprogs)"; return 77; }
}

LQ_ERRORS='EXT4-fs (error|warning)|I/O error|blk_update_request|Buffer I/O|BUG:|Oops'

t_linux_qcow2_nvme_compressed_root() {
	lq_need || return $?
	local raw=$TMP/lq-comp.raw img=$TMP/lq-comp.qcow2
	sh tests/linux/mkrootfs.sh "$raw" 2>"$TMP/lq-mkrootfs.log" || {
		echo "    mkrootfs.sh failed:"; tail -5 "$TMP/lq-mkrootfs.log" | sed 's/^/    | /'; return 1; }
	qemu-img convert -c -O qcow2 -o cluster_size=65536 "$raw" "$img" || return 1
	qemu-img check "$img" 2>&1 | grep -qE '[1-9][0-9.]*% compressed' || {
		echo "    qemu-img convert -c made no compressed clusters"; return 1; }
	local before
	before=$(lq_mount_count "$img")
	vm_start -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" \
		-o boot.cmdline="console=ttyS0 root=/dev/nvme0n1 rootwait rw rootfstype=ext4 init=/init hyve.poweroff $(linux_cmdline_extra)" \
		-s 4,nvme,"$img" "$(vm_name lqnvme)"
	local rc=0
	wait_linux_init "$LINUX_TIMEOUT" || rc=1
	vm_stop
	[ $rc = 0 ] || return 1
	expect_out 'EXT4-fs \(nvme0n1\): mounted filesystem' &&
	expect_out 'VFS: Mounted root \(ext4 filesystem\) on device 259:[0-9]+\.' || return 1
	expect_no_out "$LQ_ERRORS" "block/ext4 errors" || return 1
	lq_check "$img" || return 1
	local after
	after=$(lq_mount_count "$img")
	echo "    mount count as QEMU reads the image: $before before the boot, $after after"
	[ -n "$after" ] && [ "$after" -gt "${before:-0}" ] || { echo "    the guest's rw mount did not reach the image"; return 1; }
}

t_linux_qcow2_overlay_checkpoint_before_mount() {
	lq_need || return $?
	[ -x "$HYVECTL" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	local base=$TMP/lq-base.raw img=$TMP/lq-overlay.qcow2 sock=$TMP/lq.sock ck=$TMP/lq.ckpt sum
	sh tests/linux/mkrootfs.sh "$base" 2>"$TMP/lq-mkrootfs.log" || {
		echo "    mkrootfs.sh failed:"; tail -5 "$TMP/lq-mkrootfs.log" | sed 's/^/    | /'; return 1; }
	qemu-img create -q -f qcow2 -b "$base" -F raw "$img" || return 1
	sum=$(md5sum <"$base")
	# rootdelay: the kernel sleeps (interrupts on) just before it mounts root.
	local cmdline="console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/init rootdelay=15 $(linux_cmdline_extra)"
	vm_start -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" -o boot.cmdline="$cmdline" \
		-s 3,virtio-blk,"$img",format=qcow2 -o control.socket="$sock" "$(vm_name lqovl)"
	local rc=0
	wait_serial "$LINUX_TIMEOUT" 'Waiting 15 sec before mounting root device|Kernel panic' || rc=1
	if [ $rc = 0 ] && ! "$HYVECTL" --socket="$sock" --checkpoint="$ck" >"$TMP/lq-ckpt.log" 2>&1; then
		echo "    hyvectl --checkpoint failed:"; sed 's/^/    | /' "$TMP/lq-ckpt.log"; rc=1
	fi
	[ $rc = 0 ] && { grep -q 'EXT4-fs (vda): mounted' "$OUT" && { echo "    root was mounted before the checkpoint"; rc=1; }; }
	[ $rc = 0 ] && { wait_linux_init "$LINUX_TIMEOUT" || rc=1; }
	vm_stop
	[ $rc = 0 ] || return 1
	expect_no_out "$LQ_ERRORS" "block/ext4 errors" || return 1
	grep -q "snapshot 1 '$ck' taken" "$ERR" || { echo "    hyve did not log the disk snapshot"; show; return 1; }
	lq_check "$img" || return 1
	local snap went_on
	snap=$(lq_mount_count "$img" "$ck")
	went_on=$(lq_mount_count "$img")
	echo "    mount count: $snap in the checkpoint's snapshot, $went_on after the original VM mounted root"
	[ "$snap" = 0 ] && [ "$went_on" = 1 ] || { echo "    expected 0 and 1"; return 1; }

	# Restore: the disk goes back to the checkpoint, the guest mounts it again.
	vm_start -r "$ck" -o pci.0.3.0.path="$img" -o control.socket=none
	rc=0
	wait_linux_init "$LINUX_TIMEOUT" || rc=1
	vm_stop
	[ $rc = 0 ] || return 1
	grep -q "reverted to snapshot 1 '$ck'" "$ERR" || { echo "    hyve did not log the revert"; show; return 1; }
	expect_out 'EXT4-fs \(vda\): mounted filesystem' || return 1
	expect_no_out "$LQ_ERRORS" "block/ext4 errors after the restore" || return 1
	lq_check "$img" || return 1
	local restored
	restored=$(lq_mount_count "$img")
	echo "    mount count after the restored VM mounted root: $restored (2 would mean the disk was not reverted)"
	[ "$restored" = 1 ] || return 1
	[ "$(md5sum <"$base")" = "$sum" ] || { echo "    the backing file changed"; return 1; }
	# The snapshot belongs to the checkpoint file and stays for the next restore.
	qemu-img snapshot -l "$img" | grep -q " $ck " || { echo "    snapshot gone after the restore"; return 1; }
}
