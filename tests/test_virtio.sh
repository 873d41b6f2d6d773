# Integration tests for virtio-blk and virtio-rnd with the test guest's own
# virtio-pci modern driver (guests/testguest/{pci,virtio,vblk,vrnd,vbad}.c).
#
# Disk pattern (same formula as guests/testguest/vblk.c): 32-bit LE word j
# of 512-byte sector s is ((s*0x9e3779b1 + j*0x85ebca77) ^ seed ^ 0xa5a5a5a5)
# mod 2^32.  Images are made with seed 0; test=blk writes sectors 256-319
# with seed 0x5eed0001, discards 512-527, and prints FNV-1a 64 checksums
# that are recomputed here from the host's side.

VT_SECTORS=2048
EOL='[[:space:]]*$'   # the serial console ends lines with CR LF

# vt_py CMD ARGS...: image helper (mk IMG | fnv IMG FIRST N [SEED] | check IMG | hex IMG SECTOR)
vt_py() {
	python3 - "$@" <<'PY'
import struct, sys
M = 0xffffffff
def sector(s, seed=0):
    return struct.pack('<128I', *[((s * 0x9e3779b1 + j * 0x85ebca77) ^ seed ^ 0xa5a5a5a5) & M for j in range(128)])
def fnv(b):
    h = 0xcbf29ce484222325
    for c in b:
        h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
    return h
cmd, img = sys.argv[1], sys.argv[2]
if cmd == 'mk':
    open(img, 'wb').write(b''.join(sector(s) for s in range(int(sys.argv[3]))))
elif cmd == 'fnv':
    first, n = int(sys.argv[3]), int(sys.argv[4])
    seed = int(sys.argv[5], 0) if len(sys.argv) > 5 else 0
    print('0x%016x' % fnv(b''.join(sector(s, seed) for s in range(first, first + n))))
elif cmd == 'check':
    # After test=blk on a writable disk: 256-319 rewritten, 512-527 zero
    # (if discarded: argv[3] == 'discard'), everything else the original.
    data = open(img, 'rb').read()
    n = len(data) // 512
    bad = []
    for s in range(n):
        got = data[s * 512:(s + 1) * 512]
        if 256 <= s < 320:
            want = sector(s, 0x5eed0001)
        elif 512 <= s < 528 and sys.argv[3] == 'discard':
            want = bytes(512)
        else:
            want = sector(s)
        if got != want:
            bad.append(s)
    if len(data) != int(sys.argv[4]) * 512:
        sys.exit('image size %d, expected %d' % (len(data), int(sys.argv[4]) * 512))
    if bad:
        sys.exit('%d sectors differ from the expected content, first %d' % (len(bad), bad[0]))
elif cmd == 'hex':
    s = int(sys.argv[3])
    b = open(img, 'rb').read()[s * 512:s * 512 + 16]
    print('000:' + ''.join(' %02x' % c for c in b))
PY
}

vt_image() {   # vt_image NAME: fresh pattern image, path on stdout
	local img=$TMP/$1.img
	vt_py mk "$img" $VT_SECTORS && echo "$img"
}

vt_need() {
	have_kvm || return 77
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
}

# Read (checksums from the host's pattern), read past the end (IOERR),
# GET_ID = ser=, write + read back, FLUSH, DISCARD; then the host checks
# every sector of the image.
t_virtio_blk_rw() {
	vt_need || return 77
	local img
	img=$(vt_image blk_rw) || return 1
	run_guest 120 "test=blk" -s 3,virtio-blk,"$img",ser=hyve-ser-0042 -s 4,virtio-rnd
	expect_rc 1 && expect_out '^PASS blk'"$EOL" || return 1
	expect_out "^blk: 00:03.0 \(1af4:1001\) capacity $VT_SECTORS sectors" || return 1
	expect_out "^blk: id 'hyve-ser-0042'$EOL" || return 1
	expect_out "^blk: read sectors 0-63 fnv=$(vt_py fnv "$img" 0 64)$EOL" || return 1
	expect_out "^blk: read last sector $((VT_SECTORS - 1)) fnv=$(vt_py fnv "$img" $((VT_SECTORS - 1)) 1)$EOL" || return 1
	expect_out "^blk: read past the end \(sector $VT_SECTORS\): status 1$EOL" || return 1
	expect_out '^blk: flush: status 0'"$EOL" || return 1
	expect_out "^blk: wrote sectors 256-319 fnv=$(vt_py fnv "$img" 256 64 0x5eed0001), read back ok$EOL" || return 1
	# hyve offers DISCARD when the file system can punch holes.
	local discard=keep
	if grep -q '^blk: discard sectors 512-527: status 0'"$EOL" "$OUT"; then
		expect_out '^blk: sectors 512-527 read back as zeros'"$EOL" || return 1
		discard=discard
	else
		expect_out '^blk: DISCARD not offered; discard request: status 2'"$EOL" || return 1
	fi
	local msg
	if ! msg=$(vt_py check "$img" $discard $VT_SECTORS 2>&1); then
		echo "    image after the run: $msg"
		return 1
	fi
	if [ $discard = discard ] && command -v du >/dev/null; then
		# A punched hole shows as fewer allocated blocks than the file size (not fatal: fs dependent).
		local alloc
		alloc=$(du -k "$img" | cut -f1)
		[ "$alloc" -lt $((VT_SECTORS / 2)) ] || echo "    note: no hole visible (du ${alloc}K)"
	fi
}

# ,ro: reads work, a write gets VIRTIO_BLK_S_IOERR (devices/virtio_blk.c
# checks blockif_is_ro), DISCARD is not offered (UNSUPP), image unchanged.
t_virtio_blk_ro() {
	vt_need || return 77
	local img sum
	img=$(vt_image blk_ro) || return 1
	sum=$(sha256sum <"$img")
	run_guest 120 "test=blk" -s 3,virtio-blk,"$img",ro,ser=RO-DISK -s 4,virtio-rnd
	expect_rc 1 && expect_out '^PASS blk'"$EOL" || return 1
	expect_out '^blk: 00:03.0 \(1af4:1001\) capacity .*\(read-only\)'"$EOL" || return 1
	expect_out "^blk: id 'RO-DISK'$EOL" || return 1
	expect_out "^blk: read sectors 0-63 fnv=$(vt_py fnv "$img" 0 64)$EOL" || return 1
	expect_out '^blk: write on read-only disk: status 1'"$EOL" || return 1
	expect_out '^blk: discard on read-only disk \(not negotiated\): status 2'"$EOL" || return 1
	expect_out '^blk: sectors 256-271 unchanged'"$EOL" || return 1
	if [ "$(sha256sum <"$img")" != "$sum" ]; then
		echo "    read-only image was modified"
		return 1
	fi
}

# legacy=false: a modern-only function (device id 0x1042, no I/O BAR).
t_virtio_blk_modern_only() {
	vt_need || return 77
	local img
	img=$(vt_image blk_modern) || return 1
	run_guest 120 "test=blk" -s 5,virtio-blk,"$img",legacy=false
	expect_rc 1 && expect_out '^PASS blk'"$EOL" || return 1
	expect_out "^blk: 00:05.0 \\(1af4:1042\\) capacity $VT_SECTORS sectors" || return 1
	expect_out "^blk: read sectors 0-63 fnv=$(vt_py fnv "$img" 0 64)$EOL" || return 1
	vt_py check "$img" "$(grep -q '^blk: discard sectors 512-527: status 0' "$OUT" && echo discard || echo keep)" \
		$VT_SECTORS || { echo "    image content wrong after the run"; return 1; }
}

# Without a disk the guest says so and fails (exit status 5).
t_virtio_blk_missing() {
	vt_need || return 77
	run_guest 60 "test=blk" -s 4,virtio-rnd
	expect_rc 5 && expect_out '^FAIL blk: no virtio-blk device'
}

t_virtio_rnd() {
	vt_need || return 77
	run_guest 60 "test=rnd" -s 4,virtio-rnd
	expect_rc 1 && expect_out '^PASS rnd'"$EOL" &&
		expect_out '^rnd: virtio-rnd 00:04.0: 2 x 64 bytes, not zero, different \([0-9a-f]{16}\.\.\. [0-9a-f]{16}\.\.\.\)'"$EOL"
}

# Malformed rings on virtio-blk: each case sets NEEDS_RESET without
# completing the request, hyve keeps running (logs one warning), a reset
# revives the disk, and virtio-rnd still works.
t_virtio_badring() {
	vt_need || return 77
	local img sum
	img=$(vt_image badring) || return 1
	sum=$(sha256sum <"$img")
	run_guest 120 "test=badring" -s 3,virtio-blk,"$img" -s 4,virtio-rnd
	expect_rc 1 && expect_out '^PASS badring'"$EOL" || return 1
	local what
	for what in 'buffer at 0x7fffffff0000' 'descriptor loop' 'length 0xffff0000' 'next index 200' \
		'descriptor table at 0x7fffffff0000'; do
		expect_out "^badring: $what -> status 0x[4-7c-f][0-9a-f] \(NEEDS_RESET\)$EOL" || return 1
	done
	expect_out '^badring: virtio-blk works again after reset'"$EOL" || return 1
	expect_out '^badring: virtio-rnd 00:04.0: 2 x 64 bytes, not zero, different' || return 1
	expect_err 'virtio-blk@3:0: guest driver error: .*device needs reset' || return 1
	if [ "$(grep -c 'guest driver error' "$ERR")" -ne 1 ]; then
		echo "    expected one logged guest driver error (once per device)"
		show
		return 1
	fi
	[ "$(sha256sum <"$img")" = "$sum" ] || { echo "    image modified by malformed requests"; return 1; }
}

# The demo shell's disk command: list, then hexdump sector 1.
t_virtio_disk_shell() {
	vt_need || return 77
	local img
	img=$(vt_image shell) || return 1
	guest_shell 60 disk 'disk read 1' poweroff -- -m 128M -l com1,stdio -o boot.kernel="$GUEST" \
		-s 3,virtio-blk,"$img",ser=SHELL-DISK "$(vm_name vm)"
	expect_rc 1 || return 1
	expect_out "disk0: pci 00:03.0 virtio-blk, $VT_SECTORS sectors \($((VT_SECTORS / 2)) KiB\), serial 'SHELL-DISK'" || return 1
	local line
	line=$(vt_py hex "$img" 1)
	grep -qF -- "$line" "$OUT" || { echo "    expected hexdump line: $line"; show; return 1; }
}

# Kicks through ioeventfds: the test guest writes virtio-rnd's notify
# register 2000 times, moves the modern BAR by 1 MiB, and writes it 2000
# times more at the new address.  With virtio.ioeventfd=true (the default)
# KVM signals the queue's eventfd, also after the move, and hyve sees
# almost no MMIO exits; with false every write is an exit.  The device
# answers requests after each batch either way.  Counters come from
# hyvectl --get-stats.
t_virtio_ioeventfd() {
	vt_need || return 77
	local hyvectl mode st kicks=2000
	hyvectl=$(dirname -- "$HYVE")/hyvectl
	[ -x "$hyvectl" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	declare -A mmio evk
	for mode in true false; do
		vm_start -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
			-o boot.cmdline="test=kicks n=$kicks" -o control.socket="$TMP/kick.sock" \
			-o virtio.ioeventfd=$mode -s 4,virtio-rnd kickvm
		wait_serial 60 "^kicks: $((2 * kicks)) written" || { vm_stop; return 1; }
		st=$("$hyvectl" --socket="$TMP/kick.sock" --get-stats) || { echo "    get-stats failed"; vm_stop; return 1; }
		vm_stop
		expect_out '^kicks: virtio-rnd 00:04.0: 2 x 64 bytes' || return 1
		mmio[$mode]=$(sed -n 's/^exits_mmio //p' <<<"$st")
		evk[$mode]=$(sed -n 's/^virtio_kicks_ioeventfd //p' <<<"$st")
		echo "    virtio.ioeventfd=$mode: exits_mmio ${mmio[$mode]}, kicks via ioeventfd ${evk[$mode]}"
	done
	expect_out '^kicks: BAR 4 moved to 0x' || return 1
	kicks=$((2 * kicks))
	[ "${mmio[false]}" -ge "$kicks" ] || { echo "    without ioeventfds, fewer MMIO exits than kicks"; return 1; }
	[ "${evk[false]}" -eq 0 ] || { echo "    ioeventfd kicks counted with virtio.ioeventfd=false"; return 1; }
	[ $((mmio[false] - mmio[true])) -ge $((kicks * 9 / 10)) ] ||
		{ echo "    ioeventfds did not take the kicks off the MMIO exit path"; return 1; }
	# The eventfd counter adds up kicks that arrive before hyve reads it.
	[ "${evk[true]}" -ge "$kicks" ] || { echo "    fewer kicks arrived through ioeventfds than were written"; return 1; }
}
