# Integration tests for qcow2 disks (devices/qcow2.c under blockif) with
# the test guest's virtio-blk driver: the same test=blk run as
# tests/test_virtio.sh, on qcow2 images made by qemu-img; afterwards
# `qemu-img check` must be clean and `qemu-img convert -O raw` must hold
# what the guest wrote.  Helpers vt_py, vt_image and VT_SECTORS come from
# tests/test_virtio.sh.  The format layer itself is unit-tested without
# KVM (tests/unit/test_qcow2.c).

q2_need() {
	vt_need || return 77
	command -v qemu-img >/dev/null || { SKIP_REASON="qemu-img not installed (qemu-utils)"; return 77; }
}

# After test=blk: qemu-img check clean, and the raw view as the guest left it.
q2_verify() {   # q2_verify IMG
	local img=$1 raw=$TMP/q2verify.$RANDOM.raw msg
	if ! qemu-img check "$img" >"$TMP/q2check.out" 2>&1; then
		echo "    qemu-img check $img:"
		sed 's/^/    | /' "$TMP/q2check.out" | head -20
		return 1
	fi
	qemu-img convert -O raw "$img" "$raw" || { echo "    qemu-img convert failed"; return 1; }
	if ! msg=$(vt_py check "$raw" "$(grep -q '^blk: discard sectors 512-527: status 0' "$OUT" && echo discard || echo keep)" \
		$VT_SECTORS 2>&1); then
		echo "    $img after the run: $msg"
		return 1
	fi
}

# The guest's reads, checksums, writes, flush and discard on a probed
# qcow2 image (v3, 64 KiB clusters, no backing file).
t_qcow2_blk_rw() {
	q2_need || return 77
	local raw img
	raw=$(vt_image q2_rw) || return 1
	img=$TMP/q2_rw.qcow2
	qemu-img convert -O qcow2 "$raw" "$img" || return 1
	run_guest 120 "test=blk" -s 3,virtio-blk,"$img",ser=QCOW2-DISK -s 4,virtio-rnd
	expect_rc 1 && expect_out '^PASS blk'"$EOL" || return 1
	expect_out "^blk: 00:03.0 \(1af4:1001\) capacity $VT_SECTORS sectors" || return 1
	expect_out "^blk: read sectors 0-63 fnv=$(vt_py fnv "$raw" 0 64)$EOL" || return 1
	expect_out "^blk: wrote sectors 256-319 fnv=$(vt_py fnv "$raw" 256 64 0x5eed0001), read back ok$EOL" || return 1
	# qcow2 always offers DISCARD (deallocation or the zero flag).
	expect_out '^blk: discard sectors 512-527: status 0'"$EOL" || return 1
	expect_out '^blk: sectors 512-527 read back as zeros'"$EOL" || return 1
	q2_verify "$img"
}

# Compressed images -- v3 with 4 KiB clusters and zstd, then v2 with zlib
# -- declared with format=qcow2 and a 2-table L2 cache: the guest's writes
# land on compressed clusters (each moves to a new, uncompressed one).
t_qcow2_blk_compressed() {
	q2_need || return 77
	local raw img opts
	raw=$(vt_image q2_comp) || return 1
	for opts in "cluster_size=4096,compression_type=zstd" "compat=0.10,cluster_size=4096"; do
		img=$TMP/q2_comp.qcow2
		rm -f "$img"
		qemu-img convert -c -O qcow2 -o "$opts" "$raw" "$img" || return 1
		run_guest 120 "test=blk" -s 3,virtio-blk,"$img",format=qcow2,l2cache=8K -s 4,virtio-rnd
		expect_rc 1 && expect_out '^PASS blk'"$EOL" || { echo "    ($opts)"; return 1; }
		expect_out "^blk: read sectors 0-63 fnv=$(vt_py fnv "$raw" 0 64)$EOL" || return 1
		q2_verify "$img" || { echo "    ($opts)"; return 1; }
	done
}

# A qcow2 overlay on a raw base, opened with format=qcow2: reads come from
# the base, writes and discards go to the overlay, the base stays as it was.
t_qcow2_blk_backing() {
	q2_need || return 77
	local base img sum
	base=$(vt_image q2_base) || return 1
	sum=$(sha256sum <"$base")
	img=$TMP/q2_overlay.qcow2
	qemu-img create -f qcow2 -o cluster_size=16384 -b "$base" -F raw "$img" >/dev/null || return 1
	run_guest 120 "test=blk" -s 3,virtio-blk,"$img",format=qcow2 -s 4,virtio-rnd
	expect_rc 1 && expect_out '^PASS blk'"$EOL" || return 1
	expect_out "^blk: read sectors 0-63 fnv=$(vt_py fnv "$base" 0 64)$EOL" || return 1
	expect_out "^blk: read last sector $((VT_SECTORS - 1)) fnv=$(vt_py fnv "$base" $((VT_SECTORS - 1)) 1)$EOL" || return 1
	expect_out '^blk: sectors 512-527 read back as zeros'"$EOL" || return 1
	[ "$(sha256sum <"$base")" = "$sum" ] || { echo "    the backing file was modified"; return 1; }
	q2_verify "$img"
}

# Without format=, a qcow2 image that names a backing file is refused: the
# guest could have written that header into what was its raw disk.
t_qcow2_probed_backing_refused() {
	q2_need || return 77
	local base img
	base=$(vt_image q2_pbase) || return 1
	img=$TMP/q2_probed.qcow2
	qemu-img create -f qcow2 -b "$base" -F raw "$img" >/dev/null || return 1
	run_guest 60 "test=blk" -s 3,virtio-blk,"$img" -s 4,virtio-rnd
	expect_one_error 4 "names a backing file .*add format=qcow2"
}

# Read-only: reads from a compressed qcow2, writes refused, the file unchanged.
t_qcow2_blk_ro() {
	q2_need || return 77
	local raw img sum
	raw=$(vt_image q2_ro) || return 1
	img=$TMP/q2_ro.qcow2
	qemu-img convert -c -O qcow2 "$raw" "$img" || return 1
	sum=$(sha256sum <"$img")
	run_guest 120 "test=blk" -s 3,virtio-blk,"$img",ro -s 4,virtio-rnd
	expect_rc 1 && expect_out '^PASS blk'"$EOL" || return 1
	expect_out '^blk: write on read-only disk: status 1'"$EOL" || return 1
	expect_out "^blk: read sectors 0-63 fnv=$(vt_py fnv "$raw" 0 64)$EOL" || return 1
	[ "$(sha256sum <"$img")" = "$sum" ] || { echo "    read-only image was modified"; return 1; }
}

# Damaged images and unsupported features: one error line, exit status 4.
t_qcow2_open_errors() {
	q2_need || return 77
	local img=$TMP/q2_bad.qcow2
	qemu-img create -f qcow2 "$img" 1M >/dev/null || return 1
	# L1 table offset (header bytes 40-47) far beyond the end of the file.
	printf '\x00\x00\x01\x00\x00\x00\x00\x00' | dd of="$img" bs=1 seek=40 conv=notrunc status=none
	run_guest 60 "test=blk" -s 3,virtio-blk,"$img"
	expect_one_error 4 "pci.0.3.0.path: .*L1 table .*beyond the end of the file" || return 1
	rm -f "$img"
	qemu-img create -f qcow2 -o extended_l2=on "$img" 1M >/dev/null || return 1
	run_guest 60 "test=blk" -s 3,virtio-blk,"$img"
	expect_one_error 4 "extended L2 entries" || return 1
	rm -f "$img"
	: >"$TMP/q2_missing.raw"
	qemu-img create -f qcow2 -b "$TMP/q2_missing.raw" -F raw "$img" 1M >/dev/null || return 1
	rm -f "$TMP/q2_missing.raw"
	run_guest 60 "test=blk" -s 3,virtio-blk,"$img",format=qcow2
	expect_one_error 4 "backing file .*No such file or directory" || return 1
	run_guest 60 "test=blk" -s 3,virtio-blk,"$img",format=vmdk
	expect_one_error 4 "format.*bad value 'vmdk'"
}

# A checkpoint records a qcow2 disk at the same instant as RAM (an internal
# snapshot named after the checkpoint file), and restoring reverts the disk
# to it.  The guest writes 48 rounds of sectors; the checkpoint is taken
# mid-way; the original VM finishes.  Then the active disk's rounds are
# overwritten with zeros (qemu-io): the restored guest, which goes on from
# the checkpoint and verifies every round at the end, passes only if the
# rounds written before the checkpoint came back with the snapshot.
t_qcow2_checkpoint_restores_disk() {
	q2_need || return 77
	command -v qemu-io >/dev/null || { SKIP_REASON="qemu-io not installed (qemu-utils)"; return 77; }
	local sock=$TMP/q2ck.sock ck=$TMP/q2ck.ckpt raw img=$TMP/q2ck.qcow2 rounds=48
	raw=$(vt_image q2ck) || return 1
	qemu-img convert -O qcow2 -o cluster_size=4096 "$raw" "$img" || return 1
	ck_guest "$sock" "test=blkckpt rounds=$rounds" -s 4,virtio-blk,"$img",format=qcow2 || return 1
	wait_serial 60 '^blkckpt: round 8.$' || { vm_stop; return 1; }
	local before after i=0
	before=$(grep -c '^blkckpt: round' "$OUT")
	if ! "$HYVECTL" --socket="$sock" --checkpoint="$ck" >"$TMP/q2ck.ctl" 2>&1; then
		echo "    hyvectl --checkpoint failed:"; sed 's/^/    | /' "$TMP/q2ck.ctl"; vm_stop; return 1
	fi
	after=$(grep -c '^blkckpt: round' "$OUT")
	while kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
	vm_stop
	expect_rc 1 && expect_out '^PASS blkckpt' || return 1
	grep -q "snapshot 1 '$ck' taken" "$ERR" || { echo "    hyve did not log the disk snapshot"; show; return 1; }
	qemu-img check "$img" >"$TMP/q2ck.check" 2>&1 || { sed 's/^/    | /' "$TMP/q2ck.check"; return 1; }
	qemu-img snapshot -l "$img" | grep -q " $ck " || { echo "    qemu-img snapshot -l does not list '$ck'"; return 1; }
	# The snapshot holds exactly a prefix of the rounds, at least those printed before it.
	qemu-img convert -l snapshot.name="$ck" -O raw "$img" "$TMP/q2ck-snap.raw" || return 1
	local held
	held=$(python3 - "$TMP/q2ck-snap.raw" "$rounds" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
M = 0xffffffff
n = 0
for r in range(int(sys.argv[2])):
    s = 1024 + 16 * r
    want = struct.pack('<128I', *[((s * 0x9e3779b1 + j * 0x85ebca77) ^ (0x5eed1000 + r) ^ 0xa5a5a5a5) & M for j in range(128)])
    if data[s * 512:(s + 1) * 512] != want:
        break
    n += 1
print(n)
PY
)
	# A round is printed after its write completes: the snapshot holds at least
	# the rounds printed before the checkpoint, at most one more than after it.
	echo "    the original VM had printed $before rounds before the checkpoint, $after after; its disk snapshot holds $held"
	[ "$held" -ge "$before" ] && [ "$held" -le $((after + 1)) ] && [ "$held" -lt "$rounds" ] || return 1
	qemu-io -f qcow2 -c "write -P 0 512k $((rounds * 8))k" "$img" >/dev/null || return 1
	run_hyve 120 -r "$ck" -o control.socket=none -o pci.0.4.0.path="$img"
	expect_rc 1 && expect_out '^PASS blkckpt' && expect_out "^blkckpt: verified $rounds rounds" || return 1
	grep -q "reverted to snapshot 1 '$ck'" "$ERR" || { echo "    hyve did not log the revert"; show; return 1; }
	qemu-img check "$img" >"$TMP/q2ck.check" 2>&1 || { sed 's/^/    | /' "$TMP/q2ck.check"; return 1; }
	qemu-img convert -O raw "$img" "$TMP/q2ck-final.raw" || return 1
	ck_check_image "$TMP/q2ck-final.raw" "$rounds"
}
