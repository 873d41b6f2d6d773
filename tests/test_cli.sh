# Command line and configuration: bhyve-compatible flags, the config tree,
# and bad input (one error line naming the key, exit status 4).

t_cli_help() {
	run_hyve 10 -h
	expect_rc 0 && expect_out 'Usage: hyve' && expect_out 'Exit status: 0 reboot, 1 poweroff'
}

t_cli_slot_help_lists_models() {
	run_hyve 10 -s help
	expect_rc 0 && expect_out 'hostbridge' && expect_out 'amd_hostbridge' && expect_out 'lpc'
}

t_cli_option_help_lists_keys() {
	run_hyve 10 -o help
	expect_rc 0 && expect_out 'memory.size' && expect_out 'lpc.pc-testdev' && expect_out 'cpu.features'
}

t_cli_config_dump_flags_become_keys() {
	run_hyve 10 -c 2 -m 512M -s 3,amd_hostbridge,vendor=0x1234 -l com1,stdio \
		-o boot.kernel=/k -o config.dump=true vm1
	expect_rc 0 &&
	expect_out '^cpus=2$' && expect_out '^memory.size=512M$' &&
	expect_out '^pci.0.3.0.device=amd_hostbridge$' && expect_out '^pci.0.3.0.vendor=0x1234$' &&
	expect_out '^pci.0.31.0.device=lpc$' && expect_out '^lpc.com1.path=stdio$' &&
	expect_out '^name=vm1$' || return 1
	# -s 3,amd_hostbridge replaced the default hostbridge at slot 0.
	if grep -q '^pci.0.0.0.device' "$OUT"; then
		echo "    default hostbridge added although one was given"; show; return 1
	fi
}

t_cli_config_dump_defaults() {
	run_hyve 10 -o config.dump=true vm1
	expect_rc 0 && expect_out '^pci.0.0.0.device=hostbridge$' && expect_out '^pci.0.31.0.device=lpc$'
}

t_cli_config_file_roundtrip() {
	local k=$TMP/vm.conf
	printf '# a comment\n\ncpus=3\nmemory.size=64M\n  lpc.com1.path=file=/tmp/x.log\nname=fromfile\n' >"$k"
	run_hyve 10 -k "$k" -o config.dump=true
	expect_rc 0 && expect_out '^cpus=3$' && expect_out '^name=fromfile$' &&
	expect_out '^lpc.com1.path=file=/tmp/x.log$' || return 1
	# The dump is itself a valid -k file and dumps identically.
	cp "$OUT" "$k.2"
	run_hyve 10 -k "$k.2" -o config.dump=true
	expect_rc 0 && diff -u "$k.2" "$OUT" >/dev/null || { echo "    dump of dump differs"; show; return 1; }
}

t_cli_bad_cpus_zero() {
	run_hyve 10 -c 0 -o boot.kernel=/k vm1
	expect_one_error 4 'cpus'
}

t_cli_bad_cpus_over_limit() {
	run_hyve 10 -c 17 -o maxcpus=16 -o boot.kernel=/k vm1
	expect_one_error 4 'cpus: 17 vCPUs not in 1..16'
}

t_cli_bad_memory_zero() {
	run_hyve 10 -m 0 -o boot.kernel=/k vm1
	expect_one_error 4 'memory.size'
}

t_cli_bad_memory_suffix() {
	run_hyve 10 -m 1Q -o boot.kernel=/k vm1
	expect_one_error 4 "memory.size: bad value '1Q'"
}

t_cli_unknown_slot_model() {
	run_hyve 10 -s 3,frobnicator -o boot.kernel=/k vm1
	expect_one_error 4 "unknown device model 'frobnicator'"
}

t_cli_duplicate_slot() {
	run_hyve 10 -s 3,hostbridge -s 3,amd_hostbridge -o boot.kernel=/k vm1
	expect_one_error 4 'pci.0.3.0: slot 3:0 already in use'
}

t_cli_malformed_option() {
	run_hyve 10 -o justakey -o boot.kernel=/k vm1
	expect_one_error 4 "malformed option 'justakey'"
}

# As bhyve (bhyve_config(5)): a key hyve does not know is kept and ignored,
# with a one-line warning (a typo in an -s option is still an error).
t_cli_unknown_key() {
	run_hyve 10 -o memory.colour=blue -o config.dump=true vm1
	expect_rc 0 && expect_out '^memory.colour=blue$' &&
	expect_err "^hyve: warning: config: unknown key 'memory.colour' \(kept, ignored\)$"
}

t_cli_bad_bool() {
	run_hyve 10 -o lpc.pc-testdev=maybe -o boot.kernel=/k vm1
	expect_one_error 4 "lpc.pc-testdev: bad value 'maybe'"
}

t_cli_unknown_device_option() {
	run_hyve 10 -s 4,hostbridge,colour=red -o boot.kernel=/k vm1
	expect_one_error 4 "pci.0.4.0.colour: .*unknown option 'colour'"
}

t_cli_bad_cpu_feature() {
	run_hyve 10 -o cpu.features=-avx,+warpdrive -o boot.kernel=/k vm1
	expect_one_error 4 "cpu.features: .*unknown CPU feature '\\+warpdrive'"
}

t_cli_bad_com_backend() {
	run_hyve 10 -l com1,telepathy -o boot.kernel=/k vm1
	expect_one_error 4 'lpc.com1.path'
}

t_cli_missing_vmname() {
	run_hyve 10 -o boot.kernel=/k
	expect_one_error 4 'no VM name'
}

t_cli_missing_kernel_key() {
	run_hyve 10 vm1
	expect_one_error 4 'boot.kernel'
}

t_cli_missing_kernel_file() {
	have_kvm || return 77
	run_hyve 10 -o boot.kernel=$TMP/does-not-exist vm1
	expect_one_error 4 'boot.kernel: .*does-not-exist: No such file'
}

t_cli_garbage_kernel() {
	have_kvm || return 77
	head -c 65536 /dev/urandom >"$TMP/garbage"
	run_hyve 10 -o boot.kernel=$TMP/garbage vm1
	expect_one_error 4 'not a kernel hyve can boot'
}

t_cli_truncated_kernel() {
	have_kvm || return 77
	# Keep the Multiboot header, cut the segments off.
	head -c 6000 "$GUEST" >"$TMP/trunc.elf"
	run_hyve 10 -o boot.kernel=$TMP/trunc.elf vm1
	expect_one_error 4 'truncated'
}

t_cli_topology_mismatch() {
	run_hyve 10 -c 3,sockets=2,cores=1 -o boot.kernel=/k vm1
	expect_one_error 4 'sockets\*cores\*threads \(2\) does not match cpus \(3\)'
}

t_cli_topology_gives_cpus() {
	have_kvm || return 77
	run_guest 60 "test=smp" -c sockets=2,cores=2
	expect_rc 1 && expect_out '^smp: 4 cpus online'
}

# A default control socket directory others could write to (or that is not
# ours, or a symlink): hyvectl will not send it a request (status 3), and
# hyve will not put its socket there (status 4); both name the problem.
t_cli_control_dir_not_private() {
	local hyvectl=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl} out=$TMP/ctldir.out rc
	[ -x "$hyvectl" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	mkdir -p "$TMP/ctldir.open" && chmod 0777 "$TMP/ctldir.open"
	ln -sfn "$TMP/ctldir.open" "$TMP/ctldir.link"
	HYVE_RUN_DIR=$TMP/ctldir.open "$hyvectl" --vm=x --get-stats >"$out" 2>&1
	rc=$?
	[ $rc -eq 3 ] && grep -q "ctldir.open is writable by group or others (mode 777)" "$out" || {
		echo "    world-writable directory: hyvectl status $rc"; cat "$out"; return 1; }
	HYVE_RUN_DIR=$TMP/ctldir.link "$hyvectl" --vm=x --get-stats >"$out" 2>&1
	rc=$?
	[ $rc -eq 3 ] && grep -q "ctldir.link is a symlink" "$out" || {
		echo "    symlinked directory: hyvectl status $rc"; cat "$out"; return 1; }
	have_kvm || return 0
	HYVE_RUN_DIR=$TMP/ctldir.open run_hyve 20 -l com1,stdio -o boot.kernel="$GUEST" ctldirvm
	expect_one_error 4 'control socket directory .*ctldir.open is writable by group or others' || return 1
	[ -e "$TMP/ctldir.open/ctldirvm.sock" ] && { echo "    hyve created its socket there"; return 1; }
	return 0
}

# hyvectl --json: a stand-in VM socket (python) answers as the protocol in
# core/control.h says; Python's json module must parse what hyvectl prints,
# with numbers as numbers and hex as strings, and errors as {"ok": false}.
t_cli_hyvectl_json() {
	local sock=$TMP/json.sock out=$TMP/json.out
	python3 - "$sock" >"$TMP/json.srv" 2>&1 <<'EOF2' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
answers = [b"name vm \"q\"\nvcpus 2\nuptime_s 1.5\nexits_total 0012\nrip 0x0000000000100020\nflag\nOK\n",
           b"ERR busy: checkpoint in progress\n",
           b"checkpoint /tmp/x: 1.0 MiB of RAM written, vCPUs paused 3 ms (devices saved in 1 ms)\nOK\n"]
for a in answers:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(a)
    c.close()
EOF2
	local srv=$! i=0
	while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	./hyvectl --json --socket="$sock" --get-stats >"$out.1"
	local rc1=$?
	./hyvectl --json --socket="$sock" --pause >"$out.2"
	local rc2=$?
	./hyvectl --json --socket="$sock" --checkpoint=/tmp/x >"$out.3"
	local rc3=$?
	wait "$srv"
	if [ $rc1 -ne 0 ] || [ $rc2 -ne 1 ] || [ $rc3 -ne 0 ]; then
		echo "    hyvectl statuses $rc1 $rc2 $rc3 (want 0 1 0)"; cat "$out".*; return 1
	fi
	python3 - "$out" <<'EOF2' || return 1
import json, sys
p = sys.argv[1]
a, b, c = (json.load(open(p + "." + n)) for n in "123")
r = a["result"]
assert a["ok"] is True and a["command"] == "stats", a
assert r["name"] == 'vm "q"' and r["vcpus"] == 2 and r["uptime_s"] == 1.5, r
assert r["exits_total"] == "0012" and r["rip"] == "0x0000000000100020" and r["flag"] is None, r
assert b == {"ok": False, "error": "busy: checkpoint in progress"}, b
assert c["ok"] and c["message"].startswith("checkpoint /tmp/x: 1.0 MiB"), c
EOF2
}

# hyvectl --migrate-live on a terminal (script(1) gives it a pty): while
# the migration runs it redraws a progress line from migrate-status.  The
# stand-in VM answers the migration after 1.5 s and the status meanwhile.
t_cli_hyvectl_migration_progress() {
	command -v script >/dev/null || { SKIP_REASON="script (util-linux) not installed"; return 77; }
	local sock=$TMP/prog.sock out=$TMP/prog.out
	python3 - "$sock" >"$TMP/prog.srv" 2>&1 <<'EOF2' &
import socket, sys, threading, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
def serve(c):
    req = c.recv(4096)
    if b"migrate-status" in req:
        c.sendall(b"state active\nround 0\nbytes_sent 52428800\nbandwidth_mib_per_s 25.0\nOK\n")
    else:
        time.sleep(1.5)
        c.sendall(b"migrated to 127.0.0.1:1: 3 rounds, 50.0 MiB sent, total 1500 ms, downtime 20 ms\nOK\n")
        done.set()
    c.close()
done = threading.Event()
s.settimeout(0.2)
end = time.time() + 20
while not done.is_set() and time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,)).start()
EOF2
	local srv=$! i=0
	while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	script -qfec "./hyvectl --socket=$sock --migrate-live=127.0.0.1:1" /dev/null >"$out" 2>&1
	local rc=$?
	wait "$srv"
	OUT=$out ERR=$out RC=$rc
	expect_rc 0 && expect_out 'hyvectl: active, round 0, 50\.0 MiB sent, 25\.0 MiB/s' &&
		expect_out 'migrated to 127\.0\.0\.1:1: 3 rounds'
}
