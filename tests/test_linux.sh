# Linux guests: the small test kernel built from Debian's linux-source-6.1
# (tests/linux/build-kernel.sh) and Debian's stock kernel (slow tier).
# Kernels and images are cached in ${HYVE_CACHE:-/var/cache/hyve}.
#
# The test kernel drives hyve's devices with real Linux drivers in two boots
# (each one takes minutes on an emulating host, so they are shared):
#  1. "devices" boot (-c 2): ext4 root on virtio-blk mounted rw, virtio-rnd,
#     a virtio-9p share, virtio-net with ip= in a network namespace (pinged
#     from the host while the guest runs) and virtio-console, when hyve has
#     those models.  t_linux_ext4_root_virtio_blk, t_linux_virtio_probe and
#     t_linux_virtio_net_ping check its serial log; whichever runs first boots.
#  2. 9p-root boot (-c 1): root over virtio-9p, plus a tiny initramfs without
#     /init (the kernel unpacks it, then mounts the real root), which keeps
#     hyve's initrd loading under test in make check.
# On emulating (PVM) hosts a boot ends at "Run /init as init process": guest
# user space cannot make system calls there, so everything is judged on what
# the kernel prints.  Elsewhere /init's own report ("hyve-init: ...") is
# checked as well.

LINUX_CACHE=${HYVE_CACHE:-/var/cache/hyve}
LINUX_TIMEOUT=${HYVE_LINUX_TIMEOUT:-1200}

# Build (or reuse) the test kernel; sets TEST_BZIMAGE.  Skips (with the
# reason) when there is no cached kernel and it cannot be built here.
linux_test_kit() {
	have_kvm || return 77
	TEST_BZIMAGE=$(sh tests/linux/build-kernel.sh 2>"$TMP/kbuild.log") && return 0
	echo "    build-kernel.sh failed:"
	tail -20 "$TMP/kbuild.log" | sed 's/^/    | /'
	SKIP_REASON="test kernel missing or out of date in $LINUX_CACHE and build-kernel.sh failed: $(grep 'error:' "$TMP/kbuild.log" | tail -n1)"
	return 77
}

linux_pvm() { [ -d /sys/module/kvm_pvm ]; }

# Extra kernel parameters for every test boot: HYVE_LINUX_CMDLINE, plus
# pty.legacy_count=0.  (On emulating hosts hyve itself adds
# clocksource=jiffies: boot/linux_adapt.c says why.)
# pty.legacy_count=0: the test kernel has LEGACY_PTYS; registering its 512
# legacy pty devices takes ~25 s of an emulated boot and no test uses them.
linux_cmdline_extra() {
	printf '%s' "pty.legacy_count=0${HYVE_LINUX_CMDLINE:+ $HYVE_LINUX_CMDLINE}"
}

# The kernel prints this right before executing /init (init=/init on disk
# roots); on emulating hosts user space cannot get further.
LINUX_INIT_LINE='Run /init as init process'
# What a kernel prints when the root or /init is not usable.  (After the
# /init line, "Attempted to kill init" is what an emulating host's user
# space ends with; it is not a failure to run /init.)
LINUX_ROOT_FAIL='Failed to execute /init|No working init found|VFS: Cannot open root device|VFS: Unable to mount root|Initramfs unpacking failed|Kernel panic - not syncing: (VFS|No working init)'

# What shows that /init was executed: its first line where user space runs;
# on emulating hosts the kernel's report that PID 1 faulted at its first
# system call ("init[1]: segfault at <syscall entry>", then "Attempted to
# kill init"), which needs /init and busybox read from the root first.
LINUX_INIT_RAN='hyve-init: started|init\[1\]: segfault|Attempted to kill init'

# wait_linux_init DEADLINE: wait for the /init line, then for /init to have
# run; sets LINUX_INIT_WALL, LINUX_INIT_GUEST (seconds).
wait_linux_init() {
	wait_serial "$1" "$LINUX_INIT_LINE|$LINUX_ROOT_FAIL" || return 1
	if grep -qE "$LINUX_ROOT_FAIL" "$OUT"; then
		echo "    the kernel could not run /init:"
		show_serial 30
		return 1
	fi
	LINUX_INIT_WALL=$((SECONDS - VM_START))
	LINUX_INIT_GUEST=$(grep -m1 "$LINUX_INIT_LINE" "$OUT" | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
	wait_serial "$1" "$LINUX_INIT_RAN|$LINUX_ROOT_FAIL" || return 1
	if grep -qE "$LINUX_ROOT_FAIL" "$OUT"; then
		echo "    the kernel could not run /init:"
		show_serial 30
		return 1
	fi
}

# expect_no_out REGEX WHAT: fail listing the serial lines that match.
expect_no_out() {
	if grep -qE -- "$1" "$OUT"; then
		echo "    unexpected $2 in the serial log:"
		grep -E -- "$1" "$OUT" | tr -d '\r' | head -n 10 | sed 's/^/    | /'
		return 1
	fi
}

# has_model NAME: does "hyve -s help" list device model NAME?
has_model() {
	"$HYVE" -s help 2>&1 | grep -qE "^ +$1 "
}

# --- boot 1: devices ---------------------------------------------------------

LX_NS_ADDR=10.0.3.1 LX_GUEST_ADDR=10.0.3.2
LX_DEV_DONE="" LX_DEV_RC=1 LX_DEV_SKIP="" LX_NET_SKIP="" LX_CON_SKIP="" LX_NS=""

# lx_netns_up: network namespace hyve-linux-PID with tap0 = 10.0.3.1/24;
# returns 77 with SKIP_REASON where that is not permitted.
lx_netns_up() {
	command -v ip >/dev/null || { SKIP_REASON="ip (iproute2) not installed"; return 77; }
	[ -c /dev/net/tun ] || { SKIP_REASON="/dev/net/tun missing"; return 77; }
	LX_NS=hyve-linux-$$
	ip netns del "$LX_NS" 2>/dev/null
	if ! ip netns add "$LX_NS" 2>"$TMP/netns.err"; then
		SKIP_REASON="cannot create a network namespace (needs root): $(head -n1 "$TMP/netns.err")"
		LX_NS=""
		return 77
	fi
	if ! { ip -n "$LX_NS" link set lo up && ip -n "$LX_NS" tuntap add dev tap0 mode tap &&
		ip -n "$LX_NS" addr add "$LX_NS_ADDR/24" dev tap0 && ip -n "$LX_NS" link set tap0 up; } 2>"$TMP/netns.err"; then
		SKIP_REASON="cannot set up tap0 in a network namespace: $(head -n1 "$TMP/netns.err")"
		lx_netns_down
		return 77
	fi
}

lx_netns_down() {
	[ -n "$LX_NS" ] && ip netns del "$LX_NS" 2>/dev/null
	LX_NS=""
}

# lx_ping: from the namespace, ping the guest with busybox (the kit already
# needs busybox-static; Debian's iputils-ping is not always installed).
# Three echoes, each its own ping with the full timeout: busybox's
# `ping -c 3 -W 30` waits only about twice the slowest round trip for the
# last reply once one has come back, which a guest kernel running under
# emulation (1000x slower) can overshoot: by reading the code, the likely
# end of the one flaky run seen ("2 of 3"), with the guest stopping after
# /init as the other.  The tap counters and the neighbour entry go in the
# log, so a real loss would show where it happened.
lx_ping() {
	local i n=0
	for i in 1 2 3; do
		ip netns exec "$LX_NS" "$LX_BUSYBOX" ping -c 1 -W 60 "$LX_GUEST_ADDR" && n=$((n + 1))
	done
	echo "lx_ping: $n of 3 echoes answered"
	ip -n "$LX_NS" -s link show tap0
	ip -n "$LX_NS" neigh show dev tap0
	[ "$n" = 3 ]
}

lx_dev_boot() {
	if [ -n "$LX_DEV_DONE" ]; then
		OUT=$LX_DEV_OUT ERR=$LX_DEV_ERR SKIP_REASON=$LX_DEV_SKIP
		[ "$LX_DEV_RC" = 1 ] && echo "    (the shared devices boot failed: see the first t_linux_ test above)"
		return "$LX_DEV_RC"
	fi
	LX_DEV_DONE=1
	lx_dev_boot_once
	LX_DEV_RC=$? LX_DEV_OUT=$OUT LX_DEV_ERR=$ERR LX_DEV_SKIP=$SKIP_REASON
	return "$LX_DEV_RC"
}

lx_dev_boot_once() {
	OUT=/dev/null ERR=/dev/null
	linux_test_kit || return $?
	local img=$TMP/linux-root.img share=$TMP/linux-share
	sh tests/linux/mkrootfs.sh "$img" 2>"$TMP/mkrootfs.log" || {
		echo "    mkrootfs.sh failed:"; tail -20 "$TMP/mkrootfs.log" | sed 's/^/    | /'; return 1; }
	mkdir -p "$share" && echo "hyve 9p share" >"$share/hello"
	LX_IMG=$img
	LX_BUSYBOX=$(ls "$LINUX_CACHE"/busybox/*/bin/busybox 2>/dev/null | tail -n1)

	# initcall_debug + loglevel=8: the driver core prints "probe of DEV
	# returned N" for every device it binds (~550 more lines, a few seconds).
	local cmdline="console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/init hyve.hold=60 initcall_debug loglevel=8 $(linux_cmdline_extra)"
	local args="-s 3,virtio-blk,$img -s 4,virtio-rnd -s 5,virtio-9p,hyveshare=$share"
	local ns=""
	LX_NET_SKIP="" LX_CON_SKIP=""
	if ! has_model virtio-net; then
		LX_NET_SKIP="virtio-net is not a device model yet ('hyve -s help' does not list it)"
	elif [ ! -x "$LX_BUSYBOX" ]; then
		LX_NET_SKIP="no busybox (for ping) in $LINUX_CACHE/busybox"
	elif lx_netns_up; then
		ns=$LX_NS
		args="$args -s 6,virtio-net,tap0"
		# rootdelay: the kernel idles (interrupts on) between ip= autoconfig
		# and mounting root, so the echoes are answered before /init starts
		# (on emulating hosts /init cannot run and the guest stops there).
		cmdline="$cmdline ip=$LX_GUEST_ADDR::$LX_NS_ADDR:255.255.255.0::eth0:off rootdelay=20"
	else
		LX_NET_SKIP=$SKIP_REASON
		SKIP_REASON=""
	fi
	if has_model virtio-console; then
		args="$args -s 7,virtio-console,port1=$TMP/linux-console.sock"
	else
		LX_CON_SKIP="virtio-console is not a device model yet ('hyve -s help' does not list it)"
	fi
	# The framebuffer (boot/linux.c describes it in screen_info) and its VNC server.
	LX_FB_PORT=""
	if has_model fbuf; then
		LX_FB_PORT=$(free_port)
		args="$args -s 8,fbuf,tcp=127.0.0.1:$LX_FB_PORT,w=800,h=600"
	fi
	# bhyve's USB tablet; pointer events from VNC go to it once usbhid has it.
	LX_XHCI=""
	has_model xhci && { LX_XHCI=1; args="$args -s 9,xhci,tablet"; }
	LX_DEV_ARGS=$args LX_DEV_CMDLINE=$cmdline

	# shellcheck disable=SC2086
	vm_start ${ns:+-n "$ns"} -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" \
		-o boot.cmdline="$cmdline" -o control.socket="$TMP/linuxdev.sock" $args "linuxdev$$"
	local rc=0 ping_pid=""
	LX_PING_RC="" LX_PING_LOG=$TMP/linux-ping.log
	if [ -n "$ns" ]; then
		# The kernel configures eth0 (ip=) late in boot, before mounting
		# root; ping while it goes on booting.
		# (Its first "IP-Config:" line is "Complete:" or what went wrong.)
		if ! wait_serial "$LINUX_TIMEOUT" "IP-Config: |$LINUX_INIT_LINE|$LINUX_ROOT_FAIL"; then
			rc=1
		elif grep -q 'IP-Config: Complete' "$OUT"; then
			LX_IPCONFIG_WALL=$((SECONDS - VM_START))
			lx_ping >"$LX_PING_LOG" 2>&1 &
			ping_pid=$!
		fi
	fi
	# What the VNC server shows once Linux has taken the framebuffer (t_linux_fbuf_simplefb),
	# and Alt+SysRq+m typed over VNC into the PS/2 keyboard (t_linux_ps2_keyboard_sysrq),
	# while the kernel still boots (the root delay): on an emulating host
	# /init's first system call ends in a kernel panic, after which the
	# kernel takes no more keyboard or USB interrupts.
	# (The VM may run in a network namespace: its 127.0.0.1 is there.  The
	# screen is black: -allowblank, or vncsnapshot waits for a picture.)
	LX_FB_SHOT="" LX_SYSRQ=""
	local in_ns=""
	[ -n "$ns" ] && in_ns="ip netns exec $ns"
	if [ -n "$LX_FB_PORT" ] && [ $rc = 0 ] &&
		wait_serial "$LINUX_TIMEOUT" 'input: AT Translated Set 2 keyboard' >/dev/null; then
		if command -v vncsnapshot >/dev/null; then
			$in_ns timeout -k 5 60 vncsnapshot -quiet -allowblank 127.0.0.1::"$LX_FB_PORT" "$TMP/linux-fb.jpg" >/dev/null 2>&1 &&
				LX_FB_SHOT=$TMP/linux-fb.jpg
		fi
		$in_ns timeout -k 5 30 python3 tests/rfb_keys.py "$LX_FB_PORT" 0xffe9+0xff15+m >"$TMP/linux-keys.log" 2>&1 &&
			wait_serial $((SECONDS - VM_START + 30)) 'sysrq: Show Memory' >/dev/null && LX_SYSRQ=seen
	fi
	# A click at (400,300) of the 800x600 screen, once usbhid has the tablet:
	# evbug (loglevel 8) logs the absolute X the HID report carried
	# (400 * 32767 / 799) and the left button (t_linux_xhci_tablet).
	LX_TABLET=""
	if [ -n "$LX_FB_PORT" ] && [ -n "$LX_XHCI" ] && [ $rc = 0 ] &&
		wait_serial $((SECONDS - VM_START + 120)) 'hid-generic .*: input: USB HID .*\[hyve HID Tablet\]' >/dev/null; then
		$in_ns timeout -k 5 30 python3 tests/rfb_keys.py "$LX_FB_PORT" ptr:400,300,1 ptr:400,300,0 \
			>"$TMP/linux-tablet.log" 2>&1 &&
			wait_serial $((SECONDS - VM_START + 30)) 'evbug: Event\. Dev: input[0-9]+, Type: 3, Code: 0, Value: 16404' \
				>/dev/null && LX_TABLET=seen
	fi
	[ $rc = 0 ] && { wait_linux_init "$LINUX_TIMEOUT" || rc=1; }
	if [ -n "$ping_pid" ]; then
		wait "$ping_pid"
		LX_PING_RC=$?
	fi
	# Interrupt and kick paths the drivers used (t_linux_virtio_irqfd_ioeventfd).
	LX_STATS=$TMP/linux-stats.txt
	"$(dirname -- "$HYVE")/hyvectl" --socket="$TMP/linuxdev.sock" --get-stats >"$LX_STATS" 2>&1 || true
	vm_stop
	lx_netns_down
	echo "    /init at guest ${LINUX_INIT_GUEST:-?}s, wall ${LINUX_INIT_WALL:-?}s${LX_IPCONFIG_WALL:+ (IP-Config at wall ${LX_IPCONFIG_WALL}s)} (-c 2); VM stopped after ${VM_SECONDS}s"
	return $rc
}

# ACPI S3 with Linux's own suspend path: test_suspend=mem (PM_TEST_SUSPEND)
# sets an RTC wake alarm 10 s ahead and suspends to RAM during boot; hyve
# parks the vCPUs, the alarm (rtc-cmos armed RTC_EN) wakes them, Linux
# comes back through its real-mode wakeup code, brings CPU 1 up again and
# resumes its devices.  Not on emulating hosts (no real mode: no \_S3).
t_linux_s3_rtc_resume() {
	linux_test_kit || return $?
	linux_pvm && { SKIP_REASON="S3 resumes in real mode, which PVM cannot run (hyve offers no _S3 there)"; return 77; }
	vm_start -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" -s 3,virtio-rnd \
		-o boot.cmdline="console=ttyS0 test_suspend=mem no_console_suspend $(linux_cmdline_extra)" "$(vm_name s3linux)"
	wait_serial 600 'PM: suspend exit|suspend test failed|Kernel panic' >/dev/null
	wait_serial 30 'VFS: |Kernel panic|Freeing unused' >/dev/null
	vm_stop
	expect_out "PM: test RTC wakeup from 'mem' suspend" && expect_out 'ACPI: PM: Preparing to enter system sleep state S3' &&
		expect_out 'ACPI: PM: Waking up from system sleep state S3' && expect_out 'PM: suspend exit' &&
		expect_out 'CPU1 is up' && expect_no_out 'suspend test failed|PM: Some devices failed' "suspend errors" &&
		expect_err 'ACPI: guest suspended to RAM' && expect_err 'woken from S3 \(RTC alarm\)'
}

# Probe: every virtio function gets virtio-pci bound (the kernel enables it)
# and no driver probe fails; ext4 root on virtio-blk, mounted read-write,
# runs /init; the guest wrote the image (mount count in the superblock).
t_linux_ext4_root_virtio_blk() {
	lx_dev_boot || return $?
	expect_out 'smpboot: Total of 2 processors activated' &&
	expect_out 'ACPI: .*MADT|ACPI: APIC' &&
	expect_out 'virtio_blk virtio[0-9]+: \[vda\] 65536 512-byte logical blocks' &&
	expect_out 'EXT4-fs \(vda\): mounted filesystem' &&
	expect_out 'VFS: Mounted root \(ext4 filesystem\) on device 254:0\.' &&
	expect_out "$LINUX_INIT_LINE" || return 1
	expect_no_out 'EXT4-fs (error|warning)|I/O error|blk_update_request|Buffer I/O' "block/ext4 errors" || return 1
	if ! linux_pvm; then
		expect_out 'hyve-init: root: /dev/root / ext4 rw' || return 1
	fi
	# The rw mount updated the superblock through virtio-blk.
	local sb
	sb=$(dumpe2fs -h "$LX_IMG" 2>/dev/null)
	if ! printf '%s\n' "$sb" | grep -qE '^Mount count: +[1-9]'; then
		echo "    the guest's rw mount did not reach the image (superblock mount count):"
		printf '%s\n' "$sb" | grep -E 'Mount count|Last mount time|state' | sed 's/^/    | /'
		return 1
	fi
}

# Linux's virtio drivers (MSI-X, modern interface) kicked their queues
# through ioeventfds and got their interrupts through irqfds: counters read
# with hyvectl --get-stats at the end of the devices boot.
t_linux_virtio_irqfd_ioeventfd() {
	lx_dev_boot || return $?
	local irqfd ioctl kicks
	irqfd=$(sed -n 's/^msix_irqfd //p' "$LX_STATS")
	ioctl=$(sed -n 's/^msix_signal_ioctl //p' "$LX_STATS")
	kicks=$(sed -n 's/^virtio_kicks_ioeventfd //p' "$LX_STATS")
	if [ -z "$irqfd" ] || [ -z "$kicks" ]; then
		echo "    no counters from hyvectl --get-stats:"; sed 's/^/    | /' "$LX_STATS"; return 1
	fi
	echo "    MSI-X through irqfd $irqfd, through KVM_SIGNAL_MSI $ioctl; kicks through ioeventfd $kicks"
	[ "$irqfd" -gt 0 ] || { echo "    no interrupt went through an irqfd"; return 1; }
	[ "$ioctl" -eq 0 ] || { echo "    some interrupts fell back to KVM_SIGNAL_MSI"; return 1; }
	[ "$kicks" -gt 0 ] || { echo "    no kick came through an ioeventfd"; return 1; }
}

# Every virtio function: virtio-pci binds it ("probe of 0000:00:SS.0
# returned 0") and a virtio driver binds the virtio device it creates
# ("probe of virtioN returned 0"; N counts the functions in slot order).
# No probe fails, no virtio/9p error, no kernel bug report, and hyve logs
# no device error.
t_linux_virtio_probe() {
	lx_dev_boot || return $?
	local slot n=0
	for slot in $(printf '%s\n' "$LX_DEV_ARGS" | grep -oE -- '-s [0-9]+,virtio' | grep -oE '[0-9]+'); do
		slot=$(printf '%02x' "$slot")
		expect_out "probe of 0000:00:$slot\.0 returned 0 " &&
		expect_out "probe of virtio$n returned 0 " || return 1
		n=$((n + 1))
	done
	expect_no_out 'probe of .* failed|probe of (virtio[0-9]+|0000:00:[0-9a-f.]+) returned -|virtio.*([Ee]rror|[Ff]ail)|9pnet.*([Ee]rror|[Ff]ail)|hwrng.*fail' "virtio probe errors" || return 1
	expect_no_out 'BUG:|Oops|WARNING: CPU' "kernel bug reports" || return 1
	# hyve's side: no device reset or I/O error logged.
	if grep -qE 'hyve: (error|warning): .*(virtio|9p|blk|net|tap|rnd|console)' "$ERR"; then
		echo "    hyve logged device errors:"
		grep -E 'hyve: (error|warning):' "$ERR" | head -n 10 | sed 's/^/    | /'
		return 1
	fi
}

# The fbuf device as Linux's boot framebuffer: sysfb turns hyve's
# screen_info into a simple-framebuffer at BAR1 and simplefb binds it
# (800x600x32, 3200-byte lines); a VNC client gets the 800x600 screen.
t_linux_fbuf_simplefb() {
	lx_dev_boot || return $?
	[ -n "$LX_FB_PORT" ] || { SKIP_REASON="no fbuf device model"; return 77; }
	expect_out 'simple-framebuffer simple-framebuffer\.0: framebuffer at 0x[0-9a-f]+, 0x[0-9a-f]+ bytes' &&
		expect_out 'simple-framebuffer simple-framebuffer\.0: format=x8r8g8b8, mode=800x600x32, linelength=3200' &&
		expect_out 'fb0: simplefb registered' || return 1
	if ! command -v vncsnapshot >/dev/null; then
		echo "    (no vncsnapshot: the screen size over VNC is not checked)"
	elif [ -z "$LX_FB_SHOT" ]; then
		echo "    vncsnapshot got no screenshot from the VM"
		return 1
	else
		local size
		size=$(djpeg -pnm "$LX_FB_SHOT" 2>/dev/null | head -c 20 | tr '\n' ' ' | awk '{ print $2 "x" $3 }')
		[ "$size" = 800x600 ] || { echo "    VNC screenshot is '$size', expected 800x600"; return 1; }
	fi
}

# The i8042's PS/2 devices as Linux's atkbd and psmouse find them, and
# Alt+SysRq+m typed into the VNC server reaching the kernel's SysRq handler
# through the keyboard (scancodes, IRQ 1, the controller's translation).
t_linux_ps2_keyboard_sysrq() {
	lx_dev_boot || return $?
	[ -n "$LX_FB_PORT" ] || { SKIP_REASON="no fbuf device model"; return 77; }
	expect_out 'input: AT Translated Set 2 keyboard as /devices/platform/i8042/serio0/input/input' &&
		expect_out 'input: .*PS/2 .*Mouse as /devices/platform/i8042/serio1/input/input' || return 1
	if [ -z "$LX_SYSRQ" ]; then
		echo "    Alt+SysRq+m over VNC: no 'sysrq: Show Memory' in the guest's log"
		sed 's/^/    | /' "$TMP/linux-keys.log"
		return 1
	fi
}

# The xHCI controller and its tablet as Linux's xhci_hcd, hub driver and
# usbhid find them, and a VNC click reaching the input layer as an absolute
# position (the HID report over the interrupt endpoint; evbug logs it).
t_linux_xhci_tablet() {
	lx_dev_boot || return $?
	[ -n "$LX_XHCI" ] || { SKIP_REASON="no xhci device model"; return 77; }
	expect_out 'xhci_hcd 0000:00:09\.0: hcc params 0x[0-9a-f]+ hci version 0x100' &&
		expect_out 'usb 1-1: new high-speed USB device number [0-9]+ using xhci_hcd' &&
		expect_out 'input: hyve HID Tablet as /devices/pci0000:00/0000:00:09\.0/usb1/1-1/' &&
		expect_out 'hid-generic 0003:FB5D:0001\.[0-9A-F]+: input: USB HID v1\.11 Mouse \[hyve HID Tablet\]' || return 1
	expect_no_out 'xhci_hcd .*(error|Error|ERROR|timeout|not responding)|usb 1-1: device descriptor read' "USB errors" ||
		return 1
	[ -n "$LX_FB_PORT" ] || { SKIP_REASON="no fbuf device model to send pointer events"; return 77; }
	if [ -z "$LX_TABLET" ]; then
		echo "    a click at 400,300 over VNC: no evbug line with ABS_X 16404 in the guest's log"
		sed 's/^/    | /' "$TMP/linux-tablet.log" 2>/dev/null
		grep 'evbug' "$OUT" | tail -5 | sed 's/^/    | /'
		return 1
	fi
	expect_out 'evbug: Event\. Dev: input[0-9]+, Type: 3, Code: 1, Value: 16410' &&
		expect_out 'evbug: Event\. Dev: input[0-9]+, Type: 1, Code: 272, Value: 1'
}

# SMBIOS (boot/smbios.c) as Linux reads it from 0xF0000 on a direct boot:
# the 3.0 entry point, and bhyve's strings in its DMI line.
t_linux_dmi_smbios() {
	lx_dev_boot || return $?
	expect_out 'SMBIOS 3\.0\.0 present' && expect_out 'DMI: .*BHYVE, BIOS 1\.00 03/14/2014' &&
		expect_no_out 'DMI: .*(not present|invalid)' "SMBIOS errors"
}

t_linux_virtio_net_ping() {
	local rc=0
	lx_dev_boot || rc=$?
	if [ $rc != 77 ] && [ -n "$LX_NET_SKIP" ]; then
		SKIP_REASON=$LX_NET_SKIP
		return 77
	fi
	[ $rc = 0 ] || return $rc
	expect_out 'IP-Config: Complete' &&
	expect_out "device=eth0, hwaddr=[0-9a-f:]+, ipaddr=$LX_GUEST_ADDR, mask=255.255.255.0, gw=$LX_NS_ADDR" || return 1
	if [ "$LX_PING_RC" != 0 ] || ! grep -q '^lx_ping: 3 of 3 echoes answered' "$LX_PING_LOG"; then
		echo "    the guest did not answer the host's ping (status ${LX_PING_RC:-none}):"
		sed 's/^/    | /' "$LX_PING_LOG"
		echo "    --- hyve's virtio-net counters:"
		grep 'virtio-net' "$LX_STATS" | sed 's/^/    | /'
		show_serial
		return 1
	fi
	echo "    $(grep '^lx_ping:' "$LX_PING_LOG"); $(grep 'round-trip' "$LX_PING_LOG" | tr '\n' ' ')"
}

# --- boot 2: 9p root -----------------------------------------------------------

# lx_9p_root_boot CACHE: root over virtio-9p with v9fs cache=CACHE.
lx_9p_root_boot() {
	local cache=$1
	linux_test_kit || return $?
	local root=$TMP/linux-9proot initrd=$TMP/linux-marker.cpio
	sh tests/linux/mk9proot.sh "$root" 2>"$TMP/mk9proot.log" || {
		echo "    mk9proot.sh failed:"; tail -20 "$TMP/mk9proot.log" | sed 's/^/    | /'; return 1; }
	# A tiny initramfs without /init: the kernel unpacks it and, finding no
	# /init, goes on to mount root=.
	mkdir -p "$TMP/linux-marker" && echo "hyve initrd" >"$TMP/linux-marker/hyve-initrd" &&
		(cd "$TMP/linux-marker" && echo hyve-initrd | cpio --quiet -o -H newc -R 0:0) >"$initrd" || {
		echo "    cannot build $initrd"; return 1; }
	vm_start -l com1,stdio -c 1 -m 256M -o boot.kernel="$TEST_BZIMAGE" -o boot.initrd="$initrd" \
		-o boot.cmdline="console=ttyS0 root=hyveroot rootfstype=9p rootflags=trans=virtio,version=9p2000.L,cache=$cache init=/init $(linux_cmdline_extra)" \
		-s 3,virtio-9p,hyveroot="$root" "linux9p$$"
	local rc=0
	wait_linux_init "$LINUX_TIMEOUT" || rc=1
	vm_stop
	echo "    cache=$cache: /init at guest ${LINUX_INIT_GUEST:-?}s, wall ${LINUX_INIT_WALL:-?}s (-c 1); VM stopped after ${VM_SECONDS}s"
	[ $rc = 0 ] || return 1
	expect_out 'Unpacking initramfs' && expect_out 'Freeing initrd memory: 4K' &&
	expect_out 'VFS: Mounted root \(9p filesystem\)' && expect_out "$LINUX_INIT_LINE" || return 1
	expect_no_out 'probe of .* failed|9pnet.*([Ee]rror|[Ff]ail)|virtio.*([Ee]rror|[Ff]ail)' "9p/virtio errors" || return 1
	if ! linux_pvm; then
		expect_out 'hyve-init: root: hyveroot / 9p' || return 1
	fi
}

# v9fs's two main modes: no cache (every access a 9P request), and
# cache=loose (page cache, cached metadata; also how Linux mounts with
# cache=fscache).
t_linux_9p_root() { lx_9p_root_boot none; }
t_linux_9p_root_cache_loose() { lx_9p_root_boot loose; }

# --- loader errors and the stock kernel ------------------------------------------

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

# Debian's stock kernel, booted once per make check (the reference: the
# longest test by far on emulating hosts, 15-25 minutes there).
t_linux_stock_kernel_to_init() {
	have_kvm || return 77
	local vmlinuz
	vmlinuz=$(sh tests/linux/fetch-stock.sh 2>"$TMP/stock.log") || {
		echo "    fetch-stock.sh failed"; tail "$TMP/stock.log"; return 1; }
	local initrd=$LINUX_CACHE/hyve-stock-initrd.cpio
	[ -s "$initrd" ] || sh tests/linux/initramfs.sh "$initrd" 2>>"$TMP/stock.log" || return 1
	vm_start -l com1,stdio -c 2 -m 512M -o boot.kernel="$vmlinuz" -o boot.initrd="$initrd" \
		-o boot.cmdline="console=ttyS0 $(linux_cmdline_extra)" "linuxstock$$"
	local rc=0
	wait_linux_init 2400 || rc=1
	vm_stop
	echo "    /init at guest ${LINUX_INIT_GUEST:-?}s, wall ${LINUX_INIT_WALL:-?}s (-c 2)"
	[ $rc = 0 ] || return 1
	expect_out 'smpboot: Total of 2 processors activated' &&
	expect_out 'ACPI: (XSDT|RSDP)' && expect_out 'Unpacking initramfs|Trying to unpack rootfs' &&
	expect_out 'Freeing initrd memory' && expect_out "$LINUX_INIT_LINE"
}
