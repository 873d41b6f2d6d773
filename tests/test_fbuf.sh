# The framebuffer device and its VNC server (devices/fbuf.c, rfb.c) with
# the test guest drawing (test=fbuf, guests/testguest/tfbuf.c) and Debian's
# vncsnapshot as the client; djpeg turns its JPEG into pixels we check.

fb_need() {
	have_kvm || return 77
	if ! command -v vncsnapshot >/dev/null || ! command -v djpeg >/dev/null; then
		SKIP_REASON="vncsnapshot or djpeg missing (tests/install-deps.sh installs them)"
		return 77
	fi
}

# fb_shot PORT W H [PASSWD-FILE]: a screenshot must be WxH with the four
# quadrants the guest drew (red, green / blue, white).
fb_shot() {
	local port=$1 w=$2 h=$3 pw=${4:-} img=$TMP/fb.$RANDOM
	timeout -k 5 60 vncsnapshot -quiet -allowblank -nojpeg -quality 100 ${pw:+-passwd "$pw"} 127.0.0.1::"$port" "$img.jpg" \
		>"$img.log" 2>&1 && djpeg -pnm "$img.jpg" >"$img.ppm" || {
		echo "    vncsnapshot failed:"; sed 's/^/    | /' "$img.log"; return 1; }
	python3 - "$img.ppm" "$w" "$h" <<'EOF2'
import sys
data = open(sys.argv[1], "rb").read()
parts = data.split(maxsplit=4)
assert parts[0] == b"P6", parts[0]
w, h = int(parts[1]), int(parts[2])
px = parts[4]
want_w, want_h = int(sys.argv[2]), int(sys.argv[3])
if (w, h) != (want_w, want_h):
    sys.exit(f"    screenshot is {w}x{h}, expected {want_w}x{want_h}")
def at(x, y):
    o = (y * w + x) * 3
    return tuple(px[o:o + 3])
for (x, y), want in [((w // 4, h // 4), (255, 0, 0)), ((3 * w // 4, h // 4), (0, 255, 0)),
                     ((w // 4, 3 * h // 4), (0, 0, 255)), ((3 * w // 4, 3 * h // 4), (255, 255, 255))]:
    got = at(x, y)
    if any(abs(a - b) > 24 for a, b in zip(got, want)):
        sys.exit(f"    pixel ({x},{y}) is {got}, expected {want}")
EOF2
}

t_fbuf_vnc_screenshot() {
	fb_need || return 77
	local port
	port=$(free_port)
	vm_start -m 128M -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o boot.cmdline=test=fbuf \
		-s 29,fbuf,tcp=127.0.0.1:"$port",w=800,h=600 "$(vm_name fbuf)"
	wait_serial 120 '^fbuf: pattern drawn 800x600' || { vm_stop; return 1; }
	fb_shot "$port" 800 600 || { vm_stop; return 1; }
	# A second client after the first left.
	fb_shot "$port" 800 600 || { vm_stop; return 1; }
	# A client's thread reads the network under the device role's filter
	# (process + role: 2); it has sent its banner, so the role is in place.
	local fd banner t found=0
	exec {fd}<>"/dev/tcp/127.0.0.1/$port" && read -r -t 20 -u "$fd" banner
	for t in /proc/"$VM_PID"/task/*; do
		[ "$(cat "$t/comm" 2>/dev/null)" = hyve-rfb ] || continue
		found=1
		grep -q '^Seccomp_filters:[[:space:]]*2$' "$t/status" || {
			echo "    VNC client thread: $(grep '^Seccomp_filters:' "$t/status") (want 2: process + device role)"
			exec {fd}>&-; vm_stop; return 1; }
	done
	exec {fd}>&-
	[ "$banner" = "RFB 003.008" ] && [ $found = 1 ] ||
		{ echo "    no VNC client thread seen (banner '$banner')"; vm_stop; return 1; }
	vm_stop
	# The guest drew into the memory slot, not through hyve (one exit per store).
	if grep -q 'cannot map the framebuffer' "$ERR"; then
		echo "    the framebuffer was not mapped into the guest:"; grep 'cannot map' "$ERR" | head -3 | sed 's/^/    | /'
		return 1
	fi
}

# variant=bochs: the test guest finds QEMU's display interface (1234:1111),
# sets 800x600x32 through the DISPI registers and draws into BAR 0; the
# VNC client sees that mode and the quadrants.
t_fbuf_bochs_screenshot() {
	fb_need || return 77
	local port
	port=$(free_port)
	vm_start -m 128M -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o boot.cmdline=test=fbuf \
		-s 29,fbuf,tcp=127.0.0.1:"$port",w=1024,h=768,variant=bochs "$(vm_name fbufbochs)"
	wait_serial 120 '^fbuf: pattern drawn 800x600' || { vm_stop; return 1; }
	fb_shot "$port" 800 600 || { vm_stop; return 1; }
	vm_stop
}

# The same guest and screenshot on QEMU's bochs-display (TCG, no KVM
# needed): the reference t_fbuf_bochs_screenshot is held to.
t_fbuf_bochs_qemu_reference() {
	command -v qemu-system-x86_64 >/dev/null || { SKIP_REASON="qemu-system-x86_64 not installed"; return 77; }
	if ! command -v vncsnapshot >/dev/null || ! command -v djpeg >/dev/null; then
		SKIP_REASON="vncsnapshot or djpeg missing (tests/install-deps.sh installs them)"
		return 77
	fi
	local port=5900 rc=0
	while ! python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', $port))" 2>/dev/null; do
		port=$((port + 1))
	done
	OUT=$TMP/fb-qemu.out ERR=$TMP/fb-qemu.err
	guests/testguest/qemu.sh -c 1 test=fbuf -device bochs-display -vnc 127.0.0.1:$((port - 5900)) >"$OUT" 2>"$ERR" &
	VM_PID=$! VM_START=$SECONDS
	wait_serial 120 '^fbuf: pattern drawn 800x600' || rc=1
	[ $rc = 0 ] && { fb_shot "$port" 800 600 || rc=1; }
	vm_stop
	return $rc
}

# password=: VNC authentication only; vncsnapshot's password file is the
# standard obfuscated one (DES with VNC's fixed key, made with openssl).
fb_passwd() {   # fb_passwd PASSWORD FILE: the file vncpasswd would write
	{ printf '%s' "$1"; printf '\0\0\0\0\0\0\0\0'; } | head -c 8 |
		openssl enc -des-ede3-ecb -K e84ad660c4721ae0e84ad660c4721ae0e84ad660c4721ae0 -nopad >"$2"
}

t_fbuf_vnc_password() {
	fb_need || return 77
	local port pw=$TMP/vncpw wrong=$TMP/vncpw.wrong
	port=$(free_port)
	fb_passwd s3cret "$pw" && fb_passwd guess "$wrong" || { echo "    cannot write the password files"; return 1; }
	vm_start -m 128M -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o boot.cmdline=test=fbuf \
		-s 29,fbuf,tcp=127.0.0.1:"$port",w=640,h=480,password=s3cret "$(vm_name fbufpw)"
	wait_serial 120 '^fbuf: pattern drawn 640x480' || { vm_stop; return 1; }
	fb_shot "$port" 640 480 "$pw" || { vm_stop; return 1; }
	if timeout -k 5 60 vncsnapshot -quiet -allowblank -passwd "$wrong" 127.0.0.1::"$port" "$TMP/wrong.jpg" >/dev/null 2>&1; then
		echo "    a wrong password got a screenshot"; vm_stop; return 1
	fi
	vm_stop
	expect_err 'rfb: a client failed VNC authentication'
}

# The picture survives a checkpoint and restore (the device saves what is
# on screen); the restored VM's VNC server is given again with -s (a host
# port is never taken from a checkpoint).
t_fbuf_checkpoint_restore() {
	fb_need || return 77
	local port port2 name ck=$TMP/fb.ckpt
	port=$(free_port)
	name=$(vm_name fbufck)
	vm_start -m 128M -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o boot.cmdline=test=fbuf \
		-s 29,fbuf,tcp=127.0.0.1:"$port",w=640,h=480 "$name"
	wait_serial 120 '^fbuf: pattern drawn 640x480' || { vm_stop; return 1; }
	./hyvectl --vm="$name" --suspend="$ck" >"$TMP/fbck.ctl" 2>&1 || {
		sed 's/^/    | /' "$TMP/fbck.ctl"; vm_stop; return 1; }
	wait_vm_exit 60
	port2=$(free_port)
	vm_start -r "$ck" -s 29,fbuf,tcp=127.0.0.1:"$port2",w=640,h=480 "$name"
	local i=0
	while ! grep -q 'restored' "$ERR" && kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
	fb_shot "$port2" 640 480 || { vm_stop; return 1; }
	vm_stop
}

# Bad -s values need no KVM: one error line, exit 4.
t_fbuf_bad_options() {
	run_hyve 10 -s 29,fbuf,tcp=5900,w=99999 -o boot.kernel="$GUEST" "$(vm_name fbufbad)"
	expect_one_error 4 'fbuf: w=99999: expected 640 to 1920' || return 1
	run_hyve 10 -s 29,fbuf,w=800 -o boot.kernel="$GUEST" "$(vm_name fbufbad)"
	expect_one_error 4 'fbuf: give tcp=' || return 1
	run_hyve 10 -s 29,fbuf,tcp=70000 -o boot.kernel="$GUEST" "$(vm_name fbufbad)"
	expect_one_error 4 'fbuf: tcp=70000: expected \[ADDR:\]PORT' || return 1
	run_hyve 10 -s 29,fbuf,tcp=5900,variant=cirrus -o boot.kernel="$GUEST" "$(vm_name fbufbad)"
	expect_one_error 4 'fbuf: variant=cirrus: expected auto, bhyve or bochs' || return 1
	run_hyve 10 -s 29,fbuf,tcp=5900,rom="$TMP/no-such.rom" -o boot.kernel="$GUEST" "$(vm_name fbufbad)"
	expect_one_error 4 'fbuf: rom=.*no-such.rom: No such file' || return 1
	head -c 4096 /dev/zero >"$TMP/zero.rom"
	run_hyve 10 -s 29,fbuf,tcp=5900,rom="$TMP/zero.rom" -o boot.kernel="$GUEST" "$(vm_name fbufbad)"
	expect_one_error 4 'fbuf: rom=.*zero.rom: not an option ROM' || return 1
	{ printf '\125\252'; head -c 200000 /dev/zero; } >"$TMP/big.rom"
	run_hyve 10 -s 29,fbuf,tcp=5900,rom="$TMP/big.rom" -o boot.kernel="$GUEST" "$(vm_name fbufbad)"
	expect_one_error 4 'fbuf: rom=.*big.rom: larger than 128 KiB'
}

# fb_lit PPM MIN: the screenshot has at least MIN pixels that are not black
# (text or a logo drawn); prints its size.
fb_lit() {
	python3 - "$1" "$2" <<'EOF2'
import sys
data = open(sys.argv[1], "rb").read()
parts = data.split(maxsplit=4)
w, h = int(parts[1]), int(parts[2])
px = parts[4]
lit = sum(1 for i in range(0, w * h * 3, 3) if px[i] > 40 or px[i + 1] > 40 or px[i + 2] > 40)
print(f"    screen {w}x{h}, {lit} pixels lit")
sys.exit(0 if lit >= int(sys.argv[2]) else 1)
EOF2
}

# fb_grab PORT OUT.ppm: one screenshot with Debian's vncsnapshot.
fb_grab() {
	timeout -k 5 120 vncsnapshot -quiet -allowblank -nojpeg -quality 100 127.0.0.1::"$1" "$2.jpg" >"$2.log" 2>&1 &&
		djpeg -pnm "$2.jpg" >"$2" || { echo "    vncsnapshot failed:"; sed 's/^/    | /' "$2.log"; return 1; }
}
