# The xHCI controller and its USB tablet (devices/pci_xhci.c, usb_tablet.c):
# bhyve's "-s 30,xhci,tablet" on the command line and in config files, and a
# checkpoint of a Linux guest whose usbhid drives the tablet.  The controller
# under Linux's own drivers is t_linux_xhci_tablet (tests/test_linux.sh);
# u_xhci drives it register by register.

# bhyve's syntax becomes bhyve_config(5)'s keys; no KVM needed.
t_xhci_cli_options() {
	run_hyve 10 -s 30,xhci,tablet -o config.dump=true "$(vm_name xhcicli)"
	expect_rc 0 && expect_out '^pci.0.30.0.device=xhci$' && expect_out '^pci.0.30.0.slot.1.device=tablet$' || return 1
	run_hyve 10 -s 30,xhci,tablet,tablet -o config.dump=true "$(vm_name xhcicli)"
	expect_rc 0 && expect_out '^pci.0.30.0.slot.2.device=tablet$' || return 1
	run_hyve 10 -s 30,xhci -o pci.0.30.0.slot.3.device=tablet -o config.dump=true "$(vm_name xhcicli)"
	expect_rc 0 && expect_out '^pci.0.30.0.slot.3.device=tablet$' || return 1
	run_hyve 10 -s help
	expect_rc 0 && expect_out '^ +xhci +xHCI USB controller'
}

# One error line, exit status 4, for each bad value.
t_xhci_cli_bad_options() {
	local name
	name=$(vm_name xhcibad)
	run_hyve 10 -s 30,xhci,mouse -o boot.kernel="$GUEST" "$name"
	expect_one_error 4 "xhci: unknown USB device 'mouse' \\(known: tablet\\)" || return 1
	run_hyve 10 -s 30,xhci,tablet,tablet,tablet,tablet,tablet,tablet,tablet,tablet,tablet -o boot.kernel="$GUEST" "$name"
	expect_one_error 4 'xhci: at most 8 USB devices' || return 1
	run_hyve 10 -s 30,xhci -o pci.0.30.0.slot.9.device=tablet -o boot.kernel="$GUEST" "$name"
	expect_one_error 4 'slot.9.device.*USB device slot 9: expected 1 to 8' || return 1
	run_hyve 10 -s 30,xhci -o pci.0.30.0.slot.1.device=kbd -o boot.kernel="$GUEST" "$name"
	expect_one_error 4 "slot.1.device.*unknown USB device 'kbd'" || return 1
	run_hyve 10 -s 30,xhci,speed=9 -o boot.kernel="$GUEST" "$name"
	expect_one_error 4 "unknown option 'speed'" || return 1
	# A config file (-k) with the same mistake.
	printf 'name=%s\nboot.kernel=\npci.0.30.0.device=xhci\npci.0.30.0.slot.1.device=joystick\n' "$name" >"$TMP/xhci-bad.conf"
	run_hyve 10 -k "$TMP/xhci-bad.conf"
	expect_one_error 4 "unknown USB device 'joystick'"
}

# A Linux guest with usbhid bound to the tablet is suspended to a file and
# restored: the controller's state (rings, slots, the endpoint usbhid keeps
# a transfer queued on) comes back, and a click over VNC on the restored
# VM reaches the guest's input layer (evbug logs it, loglevel 8).
t_xhci_linux_checkpoint_restore() {
	linux_test_kit || return $?
	command -v python3 >/dev/null || { SKIP_REASON="python3 missing (tests/rfb_keys.py)"; return 77; }
	local name ck=$TMP/xhci.ckpt port port2 initrd=$TMP/xhci-initrd.cpio.gz
	sh tests/linux/initramfs.sh "$initrd" 2>"$TMP/xhci-initrd.log" || {
		echo "    initramfs.sh failed:"; tail -5 "$TMP/xhci-initrd.log" | sed 's/^/    | /'; return 1; }
	name=$(vm_name xhcick)
	port=$(free_port)
	vm_start -l com1,stdio -c 1 -m 256M -o boot.kernel="$TEST_BZIMAGE" -o boot.initrd="$initrd" \
		-o boot.cmdline="console=ttyS0 loglevel=8 hyve.hold=600 $(linux_cmdline_extra)" \
		-s 8,fbuf,tcp=127.0.0.1:"$port",w=800,h=600 -s 9,xhci,tablet "$name"
	wait_serial "$LINUX_TIMEOUT" 'hid-generic .*: input: USB HID .*\[hyve HID Tablet\]' || { vm_stop; return 1; }
	./hyvectl --vm="$name" --suspend="$ck" >"$TMP/xhcick.ctl" 2>&1 || {
		sed 's/^/    | /' "$TMP/xhcick.ctl"; vm_stop; return 1; }
	wait_vm_exit 120
	[ "$RC" = 1 ] || { echo "    hyve exited with $RC after --suspend (1 expected)"; show_serial; return 1; }
	port2=$(free_port)
	vm_start -r "$ck" -s 8,fbuf,tcp=127.0.0.1:"$port2",w=800,h=600 "$name"
	local i=0
	while ! grep -q 'restored' "$ERR" && kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
	timeout -k 5 60 python3 tests/rfb_keys.py "$port2" ptr:200,150,1 ptr:200,150,0 >"$TMP/xhcick.keys" 2>&1 || {
		echo "    rfb_keys.py:"; sed 's/^/    | /' "$TMP/xhcick.keys"; vm_stop; return 1; }
	# 200 * 32767 / 799 = 8202
	wait_serial 300 'evbug: Event\. Dev: input[0-9]+, Type: 3, Code: 0, Value: 8202' || { vm_stop; return 1; }
	vm_stop
	expect_no_out 'xhci_hcd .*(error|Error|ERROR|timeout|not responding|HC died)' "xHCI errors after the restore"
}
