# Integration tests for virtio-console (devices/virtio_console.c) with the
# test guest's multiport driver (guests/testguest/vcons.c, test=console):
# the guest reports every port name it is sent ("console: port ID name
# 'NAME'"), echoes every line it gets on port id 1 upper-cased, greets each
# new connection with "vcons: hello N on port 1 'NAME'", and ends the test
# on "quit" (answering "BYE").  The host side is a python3 client.
# Port ids follow the order of the -s options, whatever the names.

vc_need() {
	have_kvm || return 77
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
}

# vc_client SOCK NLINES NAME: talks to the guest through the socket of
# port id 1, whose name is NAME.
vc_client() {
	python3 - "$@" <<'PY'
import socket, sys, time
path, nlines, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()

def connect(timeout=90):
    # hyve creates the socket during start-up; a stale file refuses connections.
    end = time.time() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(60)
            return s
        except OSError:
            s.close()
            if time.time() > end:
                sys.exit("cannot connect to %s within %ds" % (path, timeout))
            time.sleep(0.05)

class Lines:
    def __init__(self, s):
        self.s, self.buf = s, b""
    def get(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                sys.exit("end of stream; partial line %r" % self.buf)
            self.buf += d
        line, _, self.buf = self.buf.partition(b"\n")
        return line

def expect(got, want, what):
    if got != want:
        sys.exit("%s: expected %r, got %r" % (what, want, got))

# First connection: greeting, one echo, then a bulk write far larger than
# the guest's receive buffers (4 x 128 bytes), so the device has to stop
# reading the socket and resume on the guest's kicks.
s = connect()
r = Lines(s)
expect(r.get(), b"vcons: hello 1 on port 1 '%s'" % name, "greeting on the first connection")
s.sendall(b"ping one\n")
expect(r.get(), b"PING ONE", "echo")
lines = [b"%04d the quick brown fox jumps over the lazy dog 0123456789" % i for i in range(nlines)]
s.sendall(b"\n".join(lines) + b"\n")
for i, l in enumerate(lines):
    expect(r.get(), l.upper(), "bulk line %d" % i)
print("host: %d bulk lines (%d bytes) echoed" % (nlines, sum(len(l) + 1 for l in lines)))

# One client at a time: a second connection is accepted and closed at once.
s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s2.settimeout(30)
s2.connect(path)
expect(s2.recv(100), b"", "second simultaneous client")
s2.close()
s.sendall(b"still here\n")
expect(r.get(), b"STILL HERE", "echo after a refused second client")
print("host: second client refused, first one still served")
s.close()

# Reconnect: the guest sees the host side close and open again.
s = connect()
r = Lines(s)
expect(r.get(), b"vcons: hello 2 on port 1 '%s'" % name, "greeting after reconnecting")
s.sendall(b"again\nquit\n")
expect(r.get(), b"AGAIN", "echo after reconnecting")
expect(r.get(), b"BYE", "answer to quit")
s.close()
print("host: reconnect ok")
PY
}

# Bytes both ways through a port with a bhyve-style name (the first option,
# so id 1; "port1" given second is id 2), flow control, one client at a
# time, disconnect and reconnect; a stale socket file is replaced; the
# sockets are removed at exit.
t_console_echo() {
	vc_need || return 77
	local sock=$TMP/vcon1.sock sock2=$TMP/vcon2.sock cout=$TMP/vcon_client.out
	# A stale socket (bound, nobody listening) where port1 goes.
	python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$sock" || return 1
	OUT=$TMP/vcon.out ERR=$TMP/vcon.err
	timeout -k 5 150 "$HYVE" -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="test=console" -o control.socket=none \
		-s 5,virtio-console,org.hyve.test-0="$sock",port1="$sock2" vcontest \
		</dev/null >"$OUT" 2>"$ERR" &
	local pid=$!
	vc_client "$sock" 200 org.hyve.test-0 >"$cout" 2>&1
	local crc=$?
	wait $pid
	RC=$?
	if [ $crc -ne 0 ]; then
		echo "    client failed:"
		sed 's/^/    | /' "$cout"
		show
		return 1
	fi
	expect_rc 1 && expect_out '^PASS console' || return 1
	expect_out "^console: 00:05.0 \(1af4:1003\) max_nr_ports 3, 8 queues" || return 1
	expect_out "^console: port 1 name 'org\.hyve\.test-0'[[:space:]]*$" || return 1
	expect_out "^console: port 2 name 'port1'[[:space:]]*$" || return 1
	expect_out '^console: port 1 host disconnected' || return 1
	[ "$(grep -c '^console: port 1 host connected' "$OUT")" -eq 2 ] ||
		{ echo "    expected two 'host connected' messages"; show; return 1; }
	expect_out '^console: quit after 2 connections, 203 lines echoed' || return 1
	if [ -e "$sock" ] || [ -e "$sock2" ]; then
		echo "    socket files left behind after exit"
		return 1
	fi
}

# Many ports: 15 named by -s (one name of the maximum 63 characters, and
# "port3" given 15th, so id 15) plus an old-style key pci.0.5.0.port16
# (name port16, id 16): every name reaches the guest under the id of its
# position, and the echo port (id 1, the long name) carries data.
t_console_names() {
	vc_need || return 77
	local long=a.b-c_d.$(printf 'x%.0s' $(seq 1 55)) opts="" i
	[ ${#long} -eq 63 ] || { echo "    test bug: name of ${#long} characters"; return 1; }
	local names=("$long" org.qemu.guest_agent.0 com.redhat.spice.0 A-Z_az.09 p5 p6 p7 p8 p9 p10 p11 p12 p13 p14 port3)
	for i in "${!names[@]}"; do
		opts="$opts,${names[$i]}=$TMP/vcn$i.sock"
	done
	OUT=$TMP/vcn.out ERR=$TMP/vcn.err
	timeout -k 5 150 "$HYVE" -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="test=console" -o control.socket=none \
		-s "5,virtio-console$opts" -o pci.0.5.0.port16="$TMP/vcn-old.sock" vcnames \
		</dev/null >"$OUT" 2>"$ERR" &
	local pid=$!
	vc_client "$TMP/vcn0.sock" 20 "$long" >"$TMP/vcn.client" 2>&1
	local crc=$?
	wait $pid
	RC=$?
	if [ $crc -ne 0 ]; then
		echo "    client failed:"
		sed 's/^/    | /' "$TMP/vcn.client"
		show
		return 1
	fi
	expect_rc 1 && expect_out '^PASS console' || return 1
	expect_out "^console: 00:05.0 \(1af4:1003\) max_nr_ports 17, 36 queues" || return 1
	for i in "${!names[@]}"; do
		expect_out "^console: port $((i + 1)) name '${names[$i]//./\\.}'[[:space:]]*$" || return 1
	done
	expect_out "^console: port 16 name 'port16'[[:space:]]*$" || return 1
	[ "$(grep -c '^console: port [0-9]* name' "$OUT")" -eq 16 ] ||
		{ echo "    expected 16 port names"; show; return 1; }
	ls "$TMP"/vcn*.sock >/dev/null 2>&1 && { echo "    socket files left behind after exit"; return 1; }
	return 0
}

# Bad options: one error line, exit status 4.
t_console_bad_options() {
	local long name64 many="" i
	long=$TMP/$(printf 'x%.0s' $(seq 1 120)).sock
	name64=$(printf 'n%.0s' $(seq 1 64))
	for i in $(seq 1 17); do
		many="$many,p$i=$TMP/p$i.sock"
	done
	local base=(-o boot.kernel="$GUEST" -o control.socket=none)
	# Caught by the -s parser.
	run_hyve 20 "${base[@]}" -s 5,virtio-console,port1= vm
	expect_one_error 4 "port 'port1'\): empty socket path" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,port1="$long" vm
	expect_one_error 4 "port 'port1'\): socket path too long" || return 1
	run_hyve 20 "${base[@]}" -s "5,virtio-console$many" vm
	expect_one_error 4 "too many ports at 'p17' \(at most 16\)" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,org.x="$TMP/a.sock",b="$TMP/b.sock",org.x="$TMP/c.sock" vm
	expect_one_error 4 "port name 'org\.x' given twice" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,bad/name="$TMP/a.sock" vm
	expect_one_error 4 "port name 'bad/name': bad character" || return 1
	run_hyve 20 "${base[@]}" -s "5,virtio-console,a b=$TMP/a.sock" vm
	expect_one_error 4 "port name 'a b': bad character" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,"$name64"="$TMP/a.sock" vm
	expect_one_error 4 "port name 'n+': too long" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,..="$TMP/a.sock" vm
	expect_one_error 4 "port name '\.\.': may not be" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,=/"$TMP/a.sock" vm
	expect_one_error 4 "port name '': empty" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,org.qemu.guest_agent.0 vm
	expect_one_error 4 "port 'org\.qemu\.guest_agent\.0' has no socket path" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,port1="$TMP/same.sock",port3="$TMP/same.sock" vm
	expect_one_error 4 'also the socket of port1' || return 1
	# From -o, an option the model does not have is kept and ignored with a
	# warning, as bhyve_config(5) keys (-s refuses it: test_bhyve_cli.sh).
	run_hyve 20 "${base[@]}" -s 5,virtio-console,port1="$TMP/a.sock" -o pci.0.5.0.speed=9600 -o config.dump=true vm
	expect_rc 0 && expect_err "warning: config: unknown key 'pci.0.5.0.speed' \(kept, ignored\)" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console -o pci.0.5.0.port17="$TMP/p17.sock" -o config.dump=true vm
	expect_rc 0 && expect_err "warning: config: unknown key 'pci.0.5.0.port17' \(kept, ignored\)" || return 1
	# Caught by key validation: every bad key is reported (here .name and .path).
	run_hyve 20 "${base[@]}" -s 5,virtio-console -o pci.0.5.0.port.16.name=x -o pci.0.5.0.port.16.path="$TMP/x" vm
	expect_rc 4 && expect_err 'port\.16\.name: .*port index 16 out of range' &&
	expect_err 'port\.16\.path: .*port index 16 out of range' || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-rnd -o pci.0.5.0.port.0.name=x -o pci.0.5.0.port.0.path="$TMP/x" vm
	expect_rc 4 && expect_err 'port.K keys belong to a virtio-console' || return 1
	# -o skips the -s parser: the device checks again at start-up.
	have_kvm || return 0
	run_hyve 20 "${base[@]}" -s 5,virtio-console -o pci.0.5.0.port2= vm
	expect_one_error 4 "pci\.0\.5\.0\.port2 \(port 'port2'\): empty socket path" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console -o pci.0.5.0.port.0.name=a.b vm
	expect_one_error 4 'pci\.0\.5\.0\.port\.0: \.name set but no \.path' || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console -o pci.0.5.0.port.3.name=a:b -o pci.0.5.0.port.3.path="$TMP/x" vm
	expect_one_error 4 "port name 'a:b': bad character" || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,a="$TMP/a.sock" -o pci.0.5.0.port1="$TMP/b.sock" vm
	expect_one_error 4 'both give virtio port id 1' || return 1
	run_hyve 20 "${base[@]}" -s 5,virtio-console,a="$TMP/a.sock" -o pci.0.5.0.port.1.name=a -o pci.0.5.0.port.1.path="$TMP/b.sock" vm
	expect_one_error 4 "port name 'a' given twice" || return 1
	: >"$TMP/regular.file"
	run_hyve 20 "${base[@]}" -s 5,virtio-console,port1="$TMP/regular.file" vm
	expect_one_error 4 'exists and is not a socket' || return 1
	[ -f "$TMP/regular.file" ] || { echo "    the regular file was removed"; return 1; }
}

# Checkpoint with a client connected (hyvectl --suspend), restore in a new
# process: the guest hears the old connection close (PORT_OPEN 0), a new
# client gets a fresh greeting, and the echo service carries on.  A second,
# bhyve-named port (id 2) checks that names and ids survive the restore
# (the restored device refuses a checkpoint whose port ids differ).
t_console_checkpoint() {
	vc_need || return 77
	local hyvectl=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}
	[ -x "$hyvectl" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	local sock=$TMP/vcck.sock qga=$TMP/vcck-qga.sock ctl=$TMP/vcck.ctl ck=$TMP/vcck.ckpt ready=$TMP/vcck.ready
	vm_start -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o boot.cmdline="test=console" \
		-o control.socket="$ctl" -s 5,virtio-console,port1="$sock",org.qemu.guest_agent.0="$qga" vcckvm
	# First client: one echo, then it stays connected until hyve goes away.
	python3 - "$sock" "$ready" >"$TMP/vcck.a" 2>&1 <<'PY' &
import socket, sys, time
path, ready = sys.argv[1], sys.argv[2]
end = time.time() + 90
while True:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        break
    except OSError:
        s.close()
        if time.time() > end:
            sys.exit("cannot connect")
        time.sleep(0.05)
s.settimeout(60)
f = s.makefile("rb")
got = f.readline()
if got != b"vcons: hello 1 on port 1 'port1'\n":
    sys.exit("greeting %r" % got)
s.sendall(b"before\n")
got = f.readline()
if got != b"BEFORE\n":
    sys.exit("echo %r" % got)
open(ready, "w").close()
rest = s.recv(100)
sys.exit(0 if rest == b"" else "after the checkpoint: %r" % rest)
PY
	local apid=$! i=0
	while [ ! -e "$ready" ] && [ $i -lt 900 ] && kill -0 $apid 2>/dev/null; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ ! -e "$ready" ]; then
		echo "    first client did not get its echo:"; sed 's/^/    | /' "$TMP/vcck.a"
		vm_stop; show; return 1
	fi
	if ! "$hyvectl" --socket="$ctl" --suspend="$ck" >"$TMP/vcck.hctl" 2>&1; then
		echo "    hyvectl --suspend failed:"; sed 's/^/    | /' "$TMP/vcck.hctl"
		vm_stop; kill $apid 2>/dev/null; return 1
	fi
	wait "$VM_PID"
	RC=$?
	VM_PID=""
	expect_rc 1 || { kill $apid 2>/dev/null; return 1; }
	wait $apid || { echo "    first client:"; sed 's/^/    | /' "$TMP/vcck.a"; return 1; }
	[ -e "$sock" ] || [ -e "$qga" ] && { echo "    socket left behind by the suspended VM"; return 1; }
	expect_out "^console: port 2 name 'org\.qemu\.guest_agent\.0'[[:space:]]*$" || return 1

	OUT=$TMP/vcck.out ERR=$TMP/vcck.err
	timeout -k 5 120 "$HYVE" -r "$ck" -o control.socket=none -o snapshot.trust_config=true </dev/null >"$OUT" 2>"$ERR" &
	local pid=$!
	python3 - "$sock" >"$TMP/vcck.b" 2>&1 <<'PY'
import socket, sys, time
path = sys.argv[1]
end = time.time() + 90
while True:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        break
    except OSError:
        s.close()
        if time.time() > end:
            sys.exit("cannot connect to the restored VM")
        time.sleep(0.05)
s.settimeout(60)
f = s.makefile("rb")
for send, want in ((None, b"vcons: hello 2 on port 1 'port1'\n"), (b"after\n", b"AFTER\n"), (b"quit\n", b"BYE\n")):
    if send:
        s.sendall(send)
    got = f.readline()
    if got != want:
        sys.exit("expected %r, got %r" % (want, got))
PY
	local crc=$?
	wait $pid
	RC=$?
	if [ $crc -ne 0 ]; then
		echo "    client of the restored VM:"; sed 's/^/    | /' "$TMP/vcck.b"; show; return 1
	fi
	expect_rc 1 && expect_out '^PASS console' || return 1
	expect_out '^console: port 1 host disconnected' || return 1
	expect_out '^console: quit after 2 connections, 2 lines echoed' || return 1
	[ -e "$sock" ] || [ -e "$qga" ] && { echo "    socket left behind by the restored VM"; return 1; }
	return 0
}
