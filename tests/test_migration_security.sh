# Migration port security (docs/security.md): the destination's side of the
# handshake runs before any VM exists, so these need no /dev/kvm.  Peers are
# real tools: openssl s_client (TLS 1.3 with a pre-shared key) and a Python
# client speaking the plain protocol of docs/migration.md.

# ms_dest ARGS...: hyve -R 127.0.0.1:0 in the background; waits for its
# "waiting for an incoming VM on ADDR:PORT" line and sets MS_PORT, DST_PID,
# DST_OUT, DST_ERR.
ms_dest() {
	DST_OUT=$TMP/msd.$RANDOM.out DST_ERR=$TMP/msd.$RANDOM.err MS_PORT=""
	"$HYVE" -R 127.0.0.1:0 "$@" </dev/null >"$DST_OUT" 2>"$DST_ERR" &
	DST_PID=$!
	local i=0
	while [ $i -lt 100 ] && kill -0 "$DST_PID" 2>/dev/null; do
		MS_PORT=$(sed -n 's/.*waiting for an incoming VM on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$DST_ERR")
		[ -n "$MS_PORT" ] && return 0
		sleep 0.1
		i=$((i + 1))
	done
	echo "    destination did not start listening:"
	sed 's/^/    | /' "$DST_ERR"
	return 1
}

ms_need() {
	command -v openssl >/dev/null || { SKIP_REASON="openssl not installed"; return 77; }
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
}

# ms_key FILE: a fresh 256-bit key, mode 0600.
ms_key() { (umask 077 && openssl rand -hex 32 >"$1"); }

# ms_s_client KEYFILE: a TLS 1.3 PSK client to the destination; sends stdin.
ms_s_client() {
	timeout 20 openssl s_client -connect 127.0.0.1:"$MS_PORT" -tls1_3 -psk "$(tr -d '\n' <"$1")" \
		-psk_identity hyve-migration -ciphersuites TLS_AES_128_GCM_SHA256 -quiet
}

ms_wait_dest() {   # let the destination exit by itself (at most $1 s); DST_RC
	local i=0
	while kill -0 "$DST_PID" 2>/dev/null && [ $i -lt $(($1 * 10)) ]; do
		sleep 0.1
		i=$((i + 1))
	done
	kill -9 "$DST_PID" 2>/dev/null
	wait "$DST_PID" 2>/dev/null
	DST_RC=$?
}

ms_show() {
	SHOWN=1
	echo "    --- destination stderr:"
	tail -n 10 "$DST_ERR" | sed 's/^/    | /'
}

# With migration.psk_file: a peer with another key, or none, gets no
# further than the TLS handshake and the destination goes on waiting; a
# peer with the key gets to the protocol (here it sends garbage: exit 4).
t_migsec_psk_refuses_wrong_key() {
	ms_need || return 77
	local key=$TMP/ms.key wrong=$TMP/ms-wrong.key
	ms_key "$key" && ms_key "$wrong" || { echo "    openssl rand failed"; return 1; }
	ms_dest -o migration.psk_file="$key" -o control.socket=none "$(vm_name msvm)" || return 1
	grep -q "TLS, pre-shared key" "$DST_ERR" || { echo "    destination does not say it uses TLS"; ms_show; return 1; }
	# Another key: the handshake fails on both sides.
	echo "should never arrive" | ms_s_client "$wrong" >"$TMP/ms-wrong.out" 2>&1
	# No key at all: a plain HELLO.
	python3 - "$MS_PORT" <<'PY' >/dev/null 2>&1
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
hello = b"HYVEMIGR" + struct.pack("<IIIQ", 2, 1, 0, 1) + b"hyve".ljust(32, b"\0")
s.sendall(struct.pack("<IIQ", 1, 0, len(hello)) + hello)
try:
    s.recv(100)
except OSError:
    pass
PY
	local i=0
	while [ "$(grep -c 'refused a connection from 127\.0\.0\.1' "$DST_ERR")" -lt 2 ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ "$(grep -c 'refused a connection from 127\.0\.0\.1:[0-9]*: authentication failed' "$DST_ERR")" -eq 2 ] || {
		echo "    expected two refused connections"; ms_show; kill "$DST_PID"; return 1; }
	kill -0 "$DST_PID" 2>/dev/null || { echo "    destination gave up after a bad peer"; ms_show; return 1; }
	grep -q 'source .* connected' "$DST_ERR" && { echo "    a peer without the key was accepted"; ms_show; return 1; }
	# The right key: authenticated, then a stream that is not a migration.
	echo "0123456789abcdef0123456789abcdef: not a hyve migration" | ms_s_client "$key" >"$TMP/ms-right.out" 2>&1
	ms_wait_dest 20
	[ "$DST_RC" -eq 4 ] && [ "$(grep -c '^hyve: error:' "$DST_ERR")" -eq 1 ] &&
		grep -q 'migration source 127\.0\.0\.1:[0-9]* connected' "$DST_ERR" && grep -q 'protocol error' "$DST_ERR" || {
		echo "    right key + garbage: destination status $DST_RC (want 4, one error line)"; ms_show; return 1; }
	echo "    wrong key and plain peer refused at the handshake; right key reached the protocol"
}

# Key files: a key others can read, a short key, a missing file: one line, 4.
t_migsec_psk_file_checks() {
	ms_need || return 77
	local key=$TMP/ms-bad.key
	openssl rand -hex 32 >"$key" && chmod 644 "$key"
	run_hyve 10 -R 127.0.0.1:0 -o migration.psk_file="$key" "$(vm_name msvm)"
	expect_one_error 4 'readable or writable by other users \(chmod 600 it\)' || return 1
	rm -f "$key" && (umask 077 && echo abcdef >"$key")
	run_hyve 10 -R 127.0.0.1:0 -o migration.psk_file="$key" "$(vm_name msvm)"
	expect_one_error 4 'expected 16 to 64 bytes as hex digits' || return 1
	run_hyve 10 -R 127.0.0.1:0 -o migration.psk_file="$TMP/none.key" "$(vm_name msvm)"
	expect_one_error 4 'none\.key: No such file' || return 1
	# Beyond loopback only with a key (or an explicit migration.insecure).
	run_hyve 10 -R 0.0.0.0:0 "$(vm_name msvm)"
	expect_one_error 4 'listening beyond loopback needs -o migration.psk_file' || return 1
}

# ms_fake_source DIR: a plain-protocol source (docs/migration.md) whose
# configuration names files, a socket and a profile in DIR; prints the
# destination's reply to its CONFIG.
ms_fake_source() {
	python3 - "$MS_PORT" "$1" <<'PY'
import socket, struct, sys
port, evil = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=20)
def msg(t, p):
    s.sendall(struct.pack("<IIQ", t, 0, len(p)) + p)
def recv(n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise SystemExit("connection closed")
        b += d
    return b
def reply():
    t, aux, n = struct.unpack("<IIQ", recv(16))
    return t, recv(n)
hello = b"HYVEMIGR" + struct.pack("<IIIQ", 2, 1, 0, 7) + b"fake source".ljust(32, b"\0")
msg(1, hello)
t, p = reply()
assert t == 3, t                      # ACCEPT
cfg = "\n".join([
    "name=msvm", "memory.size=64M", "cpus=1", "pci.0.31.0.device=lpc",
    "lpc.com1.path=file=%s/serial.log" % evil,
    "pci.0.4.0.device=virtio-blk", "pci.0.4.0.path=%s/disk.img" % evil,
    "control.socket=%s/ctl.sock" % evil, "debug.profile=%s/profile" % evil,
]) + "\n"
msg(5, cfg.encode())                  # CONFIG
t, p = reply()
print("reply type %d: %s" % (t, p.decode(errors="replace")))
PY
}

# The source's configuration may not choose files, sockets or profiles on
# the destination: host-side keys from the wire are refused unless given
# here (or migration.trust_source=true), the source is told why, and
# nothing named by them is created.
t_migsec_untrusted_config() {
	ms_need || return 77
	local evil=$TMP/evil
	mkdir -p "$evil"
	ms_dest -o control.socket=none "$(vm_name msvm)" || return 1
	ms_fake_source "$evil" >"$TMP/ms-src.out" 2>&1
	ms_wait_dest 20
	[ "$DST_RC" -eq 4 ] && [ "$(grep -c '^hyve: error:' "$DST_ERR")" -eq 1 ] || {
		echo "    destination status $DST_RC (want 4, one error line)"; ms_show; return 1; }
	grep -q "names host resources that are not taken from it: lpc\.com1\.path, pci\.0\.4\.0\.path" "$DST_ERR" || {
		echo "    error does not name the host-side keys"; ms_show; return 1; }
	grep -q '^reply type 4: .*migration\.trust_source=true' "$TMP/ms-src.out" || {
		echo "    the source was not told why:"; sed 's/^/    | /' "$TMP/ms-src.out"; ms_show; return 1; }
	[ -z "$(ls -A "$evil")" ] || { echo "    created on the destination: $(ls "$evil")"; return 1; }
	# Given here, the devices' host keys come from this host; the source's
	# control socket and profile are still not taken (config.dump shows the
	# configuration the VM would be built from).
	: >"$TMP/local.img"
	ms_dest -o lpc.com1.path=stdio -o pci.0.4.0.path="$TMP/local.img" -o config.dump=true "$(vm_name msvm)" || return 1
	ms_fake_source "$evil" >"$TMP/ms-src2.out" 2>&1
	ms_wait_dest 20
	[ "$DST_RC" -eq 0 ] && grep -q '^pci\.0\.4\.0\.path='"$TMP"'/local\.img$' "$DST_OUT" &&
		grep -q '^lpc\.com1\.path=stdio$' "$DST_OUT" && grep -q '^memory\.size=64M$' "$DST_OUT" || {
		echo "    with local keys: status $DST_RC, configuration:"; sed 's/^/    | /' "$DST_OUT"; ms_show; return 1; }
	if grep -E "^(control\.socket|debug\.profile)=|$evil" "$DST_OUT"; then
		echo "    the source's control socket or profile was taken"; return 1
	fi
	[ -z "$(ls -A "$evil")" ] || { echo "    created on the destination: $(ls "$evil")"; return 1; }
}

# SIGTERM (or SIGINT) while hyve -R waits for a VM: exit status 1, as a
# power-off (nothing arrived, nothing to keep); the port is closed.
t_migsec_sigterm_while_waiting() {
	ms_dest "$(vm_name waitterm)" || return 1
	kill -TERM "$DST_PID"
	ms_wait_dest 10
	if [ "$DST_RC" -ne 1 ]; then
		echo "    expected exit status 1 after SIGTERM, got $DST_RC"
		ms_show
		return 1
	fi
	ms_dest "$(vm_name waitint)" || return 1
	kill -INT "$DST_PID"
	ms_wait_dest 10
	[ "$DST_RC" -eq 1 ] || { echo "    expected exit status 1 after SIGINT, got $DST_RC"; ms_show; return 1; }
}
