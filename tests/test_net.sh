# Integration tests for virtio-net (devices/virtio_net.c, devices/net_backend.c)
# with the test guest's driver and small network stack
# (guests/testguest/vnet.c: test=net, test=netbad).
#
# tap tests run hyve inside a fresh network namespace whose tap interface
# hyvetap0 has 10.0.3.1/24: the host kernel answers the guest's ARP and
# ICMP echo, and its interface counters and neighbour table show that it
# saw the guest's frames.  slirp tests need no privileges: libslirp answers
# ARP and ICMP echo for 10.0.2.2, and hostfwd carries a host TCP connection
# to the guest's echo server.  The tap takes checksum/TSO offloads
# (TUNSETOFFLOAD): the offload tests drive them both ways and feed the
# device transmit headers it must refuse.

NET_EOL='[[:space:]]*$'   # serial lines end with CR LF
NET_NS=""

net_need_kvm() {
	have_kvm || return 77
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
}

# Creates NET_NS with the tap hyvetap0 (10.0.3.1/24, MTU $1) in it.
net_need_tap() {
	net_need_kvm || return 77
	command -v ip >/dev/null || { SKIP_REASON="ip (iproute2) not installed"; return 77; }
	[ -c /dev/net/tun ] || { SKIP_REASON="/dev/net/tun missing"; return 77; }
	NET_NS=hyvenet.$$.$RANDOM
	if ! ip netns add "$NET_NS" 2>/dev/null; then
		NET_NS=""
		SKIP_REASON="cannot create a network namespace (needs root or CAP_NET_ADMIN + CAP_SYS_ADMIN)"
		return 77
	fi
	if ! ip netns exec "$NET_NS" sh -c "ip link set lo up &&
		ip tuntap add dev hyvetap0 mode tap &&
		ip addr add 10.0.3.1/24 dev hyvetap0 &&
		ip link set hyvetap0 mtu $1 up &&
		{ sysctl -qw net.ipv6.conf.hyvetap0.disable_ipv6=1 || true; }" >"$TMP/netns.log" 2>&1; then
		SKIP_REASON="cannot set up a tap in a network namespace: $(head -n 1 "$TMP/netns.log")"
		net_cleanup
		return 77
	fi
}

net_cleanup() {
	[ -n "$NET_NS" ] && ip netns del "$NET_NS" 2>/dev/null
	NET_NS=""
}

# net_run TIMEOUT CMDLINE HYVE-ARGS...: the test guest, inside NET_NS if set.
net_run() {
	local t=$1 cmd=$2
	shift 2
	OUT=$TMP/net.$RANDOM.out ERR=$TMP/net.$RANDOM.err
	local pre=()
	[ -n "$NET_NS" ] && pre=(ip netns exec "$NET_NS")
	timeout -k 5 "$t" "${pre[@]}" "$HYVE" -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="$cmd" "$@" testvm </dev/null >"$OUT" 2>"$ERR"
	RC=$?
}

# The MAC hyve derives when mac= is not given: FNV-1a 64 of "VMNAME/B:S:F",
# low byte first, first octet made locally administered and unicast.
net_default_mac() {
	python3 - "$1" <<'PY'
import sys
h = 0xcbf29ce484222325
for c in sys.argv[1].encode():
    h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
m = [(h >> (8 * i)) & 0xff for i in range(6)]
m[0] = (m[0] & 0xfc) | 0x02
print(':'.join('%02x' % b for b in m))
PY
}

net_counter() {   # net_counter rx_packets
	ip netns exec "$NET_NS" cat "/sys/class/net/hyvetap0/statistics/$1"
}

# net_offered: the features the device offered (from the guest's line).
net_offered() {
	tr -d '\r' <"$OUT" | sed -n 's/^net: offered features \(0x[0-9a-f]*\).*/\1/p'
}
NET_OFFLOADS=$(((1 << 0) | (1 << 1) | (1 << 7) | (1 << 8) | (1 << 11) | (1 << 12)))   # CSUM..HOST_TSO6

# Host kernel as the peer: ARP, a 56-byte ping whose ICMP checksum is left
# to the device (VIRTIO_NET_F_CSUM: the tap takes offloads, so all six
# offload features are offered); the default MAC is the derived one; the
# tap's counters show the host side.
net_tap_ping_body() {
	local mac tapmac rx0 tx0
	mac=$(net_default_mac testvm/0:3:0)
	tapmac=$(ip netns exec "$NET_NS" cat /sys/class/net/hyvetap0/address)
	rx0=$(net_counter rx_packets) tx0=$(net_counter tx_packets)
	net_run 120 "test=net ip=10.0.3.2 peer=10.0.3.1 csum=1" -s 3,virtio-net,hyvetap0
	expect_rc 1 && expect_out '^PASS net'"$NET_EOL" || return 1
	local off
	off=$(net_offered)
	if [ -z "$off" ] || [ $((off & NET_OFFLOADS)) -ne $NET_OFFLOADS ]; then
		echo "    offered features ${off:-?}: expected the offload bits $(printf 0x%x $NET_OFFLOADS) with a tap"
		show
		return 1
	fi
	expect_out '^net: offered features 0x[0-9a-f]+, pings use tx checksum offload' || return 1
	expect_out "^net: 00:03.0 \(1af4:1000\) mac $mac link up mtu 1500 " || return 1
	expect_out "^net: arp: 10.0.3.1 is at $tapmac$NET_EOL" || return 1
	expect_out '^net: ping 10.0.3.1: 56 bytes, reply ok \(payload verified\), rtt [0-9]+ us, 1 rx buffer'"$NET_EOL" ||
		return 1
	local rx tx
	rx=$(net_counter rx_packets) tx=$(net_counter tx_packets)
	if [ $((rx - rx0)) -lt 2 ] || [ $((tx - tx0)) -lt 2 ]; then
		echo "    tap counters: host received $((rx - rx0)), sent $((tx - tx0)) packets (expected >= 2 each)"
		return 1
	fi
	echo "    $(grep -o 'ping 10.0.3.1: 56 bytes.*' "$OUT" | tr -d '\r'); host tap rx $((rx - rx0)) tx $((tx - tx0))"
}

t_net_tap_ping() {
	net_need_tap 1500 || return 77
	net_tap_ping_body
	local rc=$?
	net_cleanup
	return $rc
}

# mtu=9000 on the tap and the device, an explicit mac=: an 8000-byte echo
# each way (the reply spread over several 2 KiB mergeable receive buffers),
# then the host kernel's TCP talks to the guest's echo server (port 7) with
# 8 KiB segments, while the host's neighbour table shows the guest's MAC.
net_tap_jumbo_body() {
	vm_start -n "$NET_NS" -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="test=net ip=10.0.3.2 peer=10.0.3.1 big=8000 listen=7 wait=90" \
		-s 3,virtio-net,hyvetap0,mtu=9000,mac=52:54:00:12:34:56 testvm
	wait_serial 90 '^net: tcp: listening on 10.0.3.2 port 7' || { vm_stop; return 1; }
	if ! ip -n "$NET_NS" neigh show 10.0.3.2 | grep -q 'lladdr 52:54:00:12:34:56'; then
		echo "    host neighbour table: $(ip -n "$NET_NS" neigh show)"
		vm_stop
		return 1
	fi
	local msg
	if ! msg=$(ip netns exec "$NET_NS" python3 - 10.0.3.2 7 <<'PY'
import os, socket, sys, time
data = os.urandom(40000)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
t0 = time.time()
s.sendall(data)
got = b""
while len(got) < len(data):
    d = s.recv(65536)
    if not d:
        break
    got += d
dt = time.time() - t0
s.close()
if got != data:
    sys.exit("echo mismatch: sent %d bytes, got %d (first difference at %d)" % (len(data), len(got),
             next((i for i in range(min(len(got), len(data))) if got[i] != data[i]), min(len(got), len(data)))))
print("host: %d bytes echoed over tcp (mss %d) in %.0f ms" % (len(data), mss, dt * 1000))
PY
	); then
		echo "    $msg"
		vm_stop
		show_serial
		return 1
	fi
	wait_serial 150 '^PASS net' || { vm_stop; return 1; }
	vm_stop
	expect_rc 1 || return 1
	expect_out '^net: 00:03.0 \(1af4:1000\) mac 52:54:00:12:34:56 link up mtu 9000 ' || return 1
	expect_out '^net: ping 10.0.3.1: 56 bytes, reply ok' || return 1
	expect_out '^net: ping 10.0.3.1: 8000 bytes, reply ok \(payload verified\), rtt [0-9]+ us, [2-9] rx buffers'"$NET_EOL" ||
		return 1
	expect_out '^net: tcp: echoed 40000 bytes, connection closed'"$NET_EOL" || return 1
	echo "    $(grep -o 'ping 10.0.3.1: 8000 bytes.*' "$OUT" | tr -d '\r'); $msg"
}

t_net_tap_jumbo() {
	net_need_tap 9000 || return 77
	net_tap_jumbo_body
	local rc=$?
	net_cleanup
	return $rc
}

# Offload both ways over a tap (gso=1 tso=1): the guest negotiates
# GUEST_CSUM + GUEST_TSO4 (the host kernel sends it TCP in GSO frames of many
# MSS with the checksum left to it: NEEDS_CSUM) and CSUM + HOST_TSO4 (its
# echo goes out as 16 KiB TSO frames the host kernel takes whole).  The host
# streams 1 MiB of random bytes to the guest's echo server while reading the
# echo; the bytes must come back intact, and the guest's counters, hyve's
# debug line and the tap's packet counter must show that offload carried
# them, not plain 1500-byte frames.
net_tap_offload_body() {
	local n=1048576 rx0 rxb0
	rx0=$(net_counter rx_packets) rxb0=$(net_counter rx_bytes)
	vm_start -n "$NET_NS" -l com1,stdio -o lpc.pc-testdev=true -o log.level=3 -o boot.kernel="$GUEST" \
		-o boot.cmdline="test=net ip=10.0.3.2 peer=10.0.3.1 listen=7 wait=120 gso=1 tso=1" \
		-s 3,virtio-net,hyvetap0 testvm
	wait_serial 90 '^net: tcp: listening on 10.0.3.2 port 7' || { vm_stop; return 1; }
	local msg
	if ! msg=$(ip netns exec "$NET_NS" python3 - 10.0.3.2 7 $n <<'PY'
import os, socket, sys, threading, time
n = int(sys.argv[3])
data = os.urandom(n)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
err = []
def sender():   # concurrently with the reads: the echo must not fill our receive buffer
    try:
        s.sendall(data)
    except OSError as e:
        err.append(e)
t0 = time.time()
th = threading.Thread(target=sender)
th.start()
got = bytearray()
while len(got) < n:
    d = s.recv(262144)
    if not d:
        break
    got += d
th.join()
dt = time.time() - t0
s.close()
if err:
    sys.exit("send failed: %s" % err[0])
if got != data:
    i = next((i for i in range(min(len(got), n)) if got[i] != data[i]), min(len(got), n))
    sys.exit("echo mismatch: sent %d bytes, got %d (first difference at %d)" % (n, len(got), i))
print("host: %d bytes echoed intact over tcp (mss %d) in %.0f ms" % (n, mss, dt * 1000))
PY
	); then
		echo "    $msg"
		vm_stop
		show_serial
		return 1
	fi
	wait_serial 60 '^PASS net' || { vm_stop; return 1; }
	vm_stop
	expect_rc 1 || return 1
	expect_out "^net: tcp: echoed $n bytes, connection closed$NET_EOL" || return 1
	# Both sides agree on the offload features.
	local feat want=$(((1 << 0) | (1 << 1) | (1 << 7) | (1 << 11)))   # CSUM GUEST_CSUM GUEST_TSO4 HOST_TSO4
	feat=$(tr -d '\r' <"$OUT" | sed -n 's/^net: negotiated features \(0x[0-9a-f]*\).*/\1/p')
	if [ -z "$feat" ] || [ $((feat & want)) -ne $want ]; then
		echo "    negotiated features ${feat:-?}: expected the bits $(printf 0x%x $want)"
		show
		return 1
	fi
	expect_err "virtio-net@3:0: features $feat: to the guest: csum tso4; from the guest: csum tso4$" || return 1
	# Host to guest: GSO frames larger than the MTU, checksums completed by the guest.
	local rx gso gmax needs
	rx=$(tr -d '\r' <"$OUT" | grep '^net: rx offload:')
	gso=$(sed -n 's/^net: rx offload: \([0-9]*\) gso frames.*/\1/p' <<<"$rx")
	gmax=$(sed -n 's/.*(largest \([0-9]*\) bytes.*/\1/p' <<<"$rx")
	needs=$(sed -n 's/.*, \([0-9]*\) needs_csum.*/\1/p' <<<"$rx")
	if [ -z "$gso" ] || [ "$gso" -lt 1 ] || [ "${gmax:-0}" -le 1514 ] || [ "${needs:-0}" -lt "$gso" ]; then
		echo "    guest: '${rx:-no rx offload line}': expected GSO frames over 1514 bytes, each NEEDS_CSUM"
		show
		return 1
	fi
	# Guest to host: TSO frames, which the host kernel counts as one packet each.
	local tx tso tmax rxp rxb
	tx=$(tr -d '\r' <"$OUT" | grep '^net: tx offload:')
	tso=$(sed -n 's/^net: tx offload: \([0-9]*\) tso frames.*/\1/p' <<<"$tx")
	tmax=$(sed -n 's/.*(largest \([0-9]*\) bytes.*/\1/p' <<<"$tx")
	rxp=$(($(net_counter rx_packets) - rx0)) rxb=$(($(net_counter rx_bytes) - rxb0))
	if [ -z "$tso" ] || [ "$tso" -lt 1 ] || [ "${tmax:-0}" -le 1514 ]; then
		echo "    guest: '${tx:-no tx offload line}': expected TSO frames over 1514 bytes"
		show
		return 1
	fi
	if [ "$rxb" -lt $n ] || [ "$rxp" -ge $((n / 1460)) ]; then
		echo "    host tap: received $rxp packets, $rxb bytes: expected >= $n bytes in fewer than $((n / 1460)) packets"
		return 1
	fi
	if grep -q 'dropped a' "$ERR"; then
		echo "    hyve dropped frames:"; show; return 1
	fi
	echo "    $msg; guest: $(sed 's/^net: //' <<<"$rx"); $(sed 's/^net: //' <<<"$tx"); host tap: $rxp packets in"
}

t_net_tap_offload() {
	net_need_tap 1500 || return 77
	net_tap_offload_body
	local rc=$?
	net_cleanup
	return $rc
}

# Transmit headers the guest controls (csum=1 txbad=1, HOST_TSO4 not
# negotiated): UDP datagrams to the host's port 9999 whose header has a
# checksum offset past the packet (the host kernel refuses it) or a GSO type
# that was not negotiated (UDP/UFO, TCPV4|ECN, TCPV4: hyve drops them,
# rather than passing them on or clearing the type), then a good one.
# The host must receive only the good datagram, and the device keeps working.
net_tap_tx_badhdr_body() {
	ip netns exec "$NET_NS" python3 - >"$TMP/udp9999.log" 2>&1 <<'PY' &
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.0.3.1", 9999))
s.settimeout(1)
end = time.time() + 60
while time.time() < end:
    try:
        d = s.recv(65536)
    except socket.timeout:
        continue
    print(d.decode(errors="replace"), flush=True)
    if d.startswith(b"good"):
        break
PY
	local lpid=$!
	sleep 0.5   # bound before the guest sends
	net_run 120 "test=net ip=10.0.3.2 peer=10.0.3.1 csum=1 txbad=1" -s 3,virtio-net,hyvetap0
	wait $lpid
	expect_rc 1 && expect_out '^PASS net'"$NET_EOL" || return 1
	expect_out '^net: txbad: bad offload headers sent, then a good datagram' || return 1
	if [ "$(grep -c '^net: ping 10.0.3.1: 56 bytes, reply ok' "$OUT")" != 2 ]; then
		echo "    expected a good ping before and after the bad headers"
		show
		return 1
	fi
	if [ "$(cat "$TMP/udp9999.log")" != 'good: checksum offload' ]; then
		echo "    host received on port 9999 (expected only the good datagram):"
		sed 's/^/    | /' "$TMP/udp9999.log"
		return 1
	fi
	expect_err 'virtio-net@3:0: dropped a transmitted [0-9]+-byte frame: ' || return 1
	echo "    host received only '$(cat "$TMP/udp9999.log")'; hyve: $(grep -o 'dropped a transmitted.*' "$ERR")"
}

t_net_tap_tx_badhdr() {
	net_need_tap 1500 || return 77
	net_tap_tx_badhdr_body
	local rc=$?
	net_cleanup
	return $rc
}

# slirp answers ARP and ICMP echo for its host address 10.0.2.2; it offers
# no offload, so csum=1 changes nothing.
t_net_slirp_ping() {
	net_need_kvm || return 77
	net_run 120 "test=net ip=10.0.2.15 peer=10.0.2.2 csum=1" -s 3,virtio-net,slirp
	expect_rc 1 && expect_out '^PASS net'"$NET_EOL" || return 1
	local off
	off=$(net_offered)
	if [ -z "$off" ] || [ $((off & NET_OFFLOADS)) -ne 0 ] || grep -q 'pings use tx checksum offload' "$OUT"; then
		echo "    offered features ${off:-?}: slirp must offer no offload"
		show
		return 1
	fi
	expect_out "^net: arp: 10.0.2.2 is at 52:55:0a:00:02:02$NET_EOL" || return 1
	expect_out '^net: ping 10.0.2.2: 56 bytes, reply ok \(payload verified\)' || return 1
	echo "    $(grep -o 'ping 10.0.2.2: 56 bytes.*' "$OUT" | tr -d '\r')"
}

# The transitional function's legacy interface (I/O BAR 0): without
# MRG_RXBUF the header is 10 bytes, with it 12 (num_buffers); and the
# modern interface of a legacy=false (modern-only, 1af4:1041) function.
t_net_legacy_and_modern_only() {
	net_need_kvm || return 77
	local mrg hdr
	for mrg in 0 1; do
		hdr=$((mrg ? 12 : 10))
		net_run 60 "test=net ip=10.0.2.15 peer=10.0.2.2 legacy=1 mrg=$mrg" -s 3,virtio-net,slirp
		expect_rc 1 && expect_out '^PASS net'"$NET_EOL" || return 1
		expect_out "^net: legacy interface, $hdr-byte header, mergeable rx buffers $([ $mrg = 1 ] && echo on || echo off)" ||
			return 1
		expect_out '^net: ping 10.0.2.2: 56 bytes, reply ok \(payload verified\)' || return 1
	done
	net_run 60 "test=net ip=10.0.2.15 peer=10.0.2.2" -s 3,virtio-net,slirp,legacy=false
	expect_rc 1 && expect_out '^PASS net'"$NET_EOL" || return 1
	expect_out '^net: 00:03.0 \(1af4:1041\) mac ' || return 1
	expect_out '^net: ping 10.0.2.2: 56 bytes, reply ok \(payload verified\)' || return 1
}

# Too few receive buffers for a frame: the device keeps it (no drop, no
# spinning: it stops reading the backend) and delivers it, merged over 4
# buffers, on the kick that adds buffers.  Also slirp with mtu=9000.
t_net_rx_stall() {
	net_need_kvm || return 77
	net_run 60 "test=net ip=10.0.2.15 peer=10.0.2.2 big=8000 rxlimit=2" -s 3,virtio-net,slirp,mtu=9000
	expect_rc 1 && expect_out '^PASS net'"$NET_EOL" || return 1
	expect_out '^net: rx: 2 buffers posted, the 8000-byte reply waits in the device'"$NET_EOL" || return 1
	expect_out '^net: ping 10.0.2.2: 8000 bytes, reply ok \(payload verified\) once buffers were added, 4 rx buffers'"$NET_EOL" ||
		return 1
	if grep -q 'dropped' "$ERR"; then
		echo "    hyve dropped a frame:"; show; return 1
	fi
}


# hostfwd: a host TCP client reaches the guest's echo server on port 7
# through 127.0.0.1:PORT (a second, UDP rule checks the list syntax).
t_net_slirp_hostfwd() {
	net_need_kvm || return 77
	local port uport
	port=$(free_port) uport=$(free_port)
	vm_start -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="test=net ip=10.0.2.15 peer=10.0.2.2 listen=7 wait=90" \
		-s 3,virtio-net,slirp,hostfwd=tcp:127.0.0.1:$port-:7,hostfwd=udp:127.0.0.1:$uport-:9 testvm
	if ! wait_serial 90 '^net: tcp: listening on 10.0.2.15 port 7'; then
		vm_stop
		return 1
	fi
	local msg
	if ! msg=$(python3 - "$port" <<'PY'
import os, socket, sys, time
port = int(sys.argv[1])
data = b"hyve virtio-net hostfwd echo " + os.urandom(8).hex().encode() + b"\n"
s = socket.create_connection(("127.0.0.1", port), timeout=60)
t0 = time.time()
s.sendall(data)
got = b""
while len(got) < len(data):
    d = s.recv(4096)
    if not d:
        break
    got += d
dt = time.time() - t0
s.close()
if got != data:
    sys.exit("echo mismatch: sent %r, got %r" % (data, got))
print("host: %d bytes echoed through hostfwd in %.0f ms" % (len(data), dt * 1000))
PY
	); then
		echo "    $msg"
		vm_stop
		show_serial
		return 1
	fi
	if ! wait_serial 150 '^PASS net'; then
		vm_stop
		return 1
	fi
	vm_stop
	expect_rc 1 || return 1
	expect_out '^net: tcp: connection from 10\.0\.2\.2:[0-9]+'"$NET_EOL" || return 1
	expect_out '^net: tcp: echoed [0-9]+ bytes, connection closed'"$NET_EOL" || return 1
	echo "    $msg"
}

# Checkpoint with the guest's echo server waiting, kill, restore in a new
# process (slirp and its hostfwd are recreated from the saved config): the
# restored device receives again and the host's connection is echoed.
t_net_checkpoint_restore() {
	net_need_kvm || return 77
	local ctl=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}
	[ -x "$ctl" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	local port sock=$TMP/netck.sock ck=$TMP/net.ckpt
	port=$(free_port)
	vm_start -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o control.socket="$sock" \
		-o boot.cmdline="test=net ip=10.0.2.15 peer=10.0.2.2 listen=7 wait=120" \
		-s 3,virtio-net,slirp,hostfwd=tcp:127.0.0.1:$port-:7 netck
	wait_serial 90 '^net: tcp: listening on 10.0.2.15 port 7' || { vm_stop; return 1; }
	if ! "$ctl" --socket="$sock" --checkpoint="$ck" >"$TMP/netck.ctl" 2>&1; then
		echo "    hyvectl --checkpoint failed:"; sed 's/^/    | /' "$TMP/netck.ctl"; vm_stop; return 1
	fi
	kill -9 "$VM_PID" 2>/dev/null
	wait "$VM_PID" 2>/dev/null
	VM_PID=""
	vm_start -r "$ck" -o control.socket=none -o snapshot.trust_config=true
	sleep 1
	local msg
	if ! msg=$(python3 - "$port" <<'PY'
import socket, sys, time
data = b"echo after restore\n"
end = time.time() + 30
while True:   # the restored process binds the port during start-up
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
        break
    except OSError:
        if time.time() > end:
            raise
        time.sleep(0.2)
s.sendall(data)
got = b""
while len(got) < len(data):
    d = s.recv(4096)
    if not d:
        break
    got += d
s.close()
if got != data:
    sys.exit("echo mismatch after restore: %r" % got)
print("host: echo from the restored guest")
PY
	); then
		echo "    $msg"; vm_stop; show_serial; return 1
	fi
	wait_serial 60 '^PASS net' || { vm_stop; return 1; }
	vm_stop
	expect_rc 1 && expect_out '^net: tcp: echoed [0-9]+ bytes, connection closed' || return 1
	echo "    $msg"
}

# Malformed transmit chains: NEEDS_RESET (logged once), hyve keeps running,
# and the device works after a reset.
t_net_badchain() {
	net_need_kvm || return 77
	net_run 60 "test=netbad ip=10.0.2.15 peer=10.0.2.2" -s 3,virtio-net,slirp
	expect_rc 1 && expect_out '^PASS netbad'"$NET_EOL" || return 1
	local what
	for what in 'transmit chain with a device-writable buffer' \
		'transmit chain of 4 bytes \(shorter than the header\)'; do
		expect_out "^netbad: $what -> status 0x[4-7c-f][0-9a-f] \(NEEDS_RESET\)$NET_EOL" || return 1
	done
	expect_out '^netbad: virtio-net works again after reset \(arp reply from 10.0.2.2\)' || return 1
	expect_err 'virtio-net@3:0: guest driver error: transmit chain with a device-writable descriptor; device needs reset' ||
		return 1
	[ "$(grep -c 'guest driver error' "$ERR")" -eq 1 ] ||
		{ echo "    expected one logged guest driver error (once per device)"; show; return 1; }
}

# The shell's net command shows MAC, link and MTU.
t_net_shell() {
	net_need_kvm || return 77
	guest_shell 60 net poweroff -- -m 128M -l com1,stdio -o boot.kernel="$GUEST" \
		-s 4,virtio-net,slirp,mac=52:54:00:ab:cd:ef,mtu=4000 "$(vm_name vm)"
	expect_rc 1 || return 1
	expect_out '^net0: 00:04.0 \(1af4:1000\) mac 52:54:00:ab:cd:ef link up mtu 4000 ' || return 1
}

# Bad options: one error line naming the key, status 4, before any VM
# exists (the -s parser checks them).
t_net_bad_config() {
	# boot.kernel: the only error is the one under test (all errors of a run are reported).
	run_hyve 20 -s 3,virtio-net,slirp,mac=zz -o boot.kernel=/k testvm
	expect_one_error 4 "pci\.0\.3\.0\.mac: bad MAC address 'zz'" || return 1
	run_hyve 20 -s 3,virtio-net,tap0,mac=01:00:5e:00:00:01 -o boot.kernel=/k testvm
	expect_one_error 4 "pci\.0\.3\.0\.mac: bad MAC address '01:00:5e:00:00:01'" || return 1
	run_hyve 20 -s 3,virtio-net,vde:/tmp/switch -o boot.kernel=/k testvm
	expect_one_error 4 "pci\.0\.3\.0\.backend: unknown backend 'vde:/tmp/switch'" || return 1
	run_hyve 20 -s 3,virtio-net,slirp,mtu=40 -o boot.kernel=/k testvm
	expect_one_error 4 "pci\.0\.3\.0\.mtu: bad MTU '40'" || return 1
	run_hyve 20 -s 3,virtio-net,slirp,hostfwd=tcp::80 -o boot.kernel=/k testvm
	expect_one_error 4 "pci\.0\.3\.0\.hostfwd: bad hostfwd rule 'tcp::80'" || return 1
	run_hyve 20 -s 3,virtio-net,tap0,hostfwd=tcp::8080-:80 -o boot.kernel=/k testvm
	expect_one_error 4 "pci\.0\.3\.0\.hostfwd: hostfwd needs the slirp backend" || return 1
	run_hyve 20 -s 3,virtio-net,slirp,speed=10 -o boot.kernel=/k testvm
	expect_one_error 4 "speed" || return 1
	# Keys set with -o are checked when the device is created (needs KVM).
	have_kvm || return 0
	run_hyve 20 -o pci.0.3.0.device=virtio-net -o pci.0.3.0.backend=slirp -o pci.0.3.0.mac=zz \
		-o boot.kernel="$GUEST" testvm
	expect_one_error 4 "pci\.0\.3\.0\.mac: bad MAC address 'zz'" || return 1
	run_hyve 20 -s 3,virtio-net -o boot.kernel="$GUEST" testvm
	expect_one_error 4 "pci\.0\.3\.0\.backend: missing backend" || return 1
	run_hyve 20 -s 3,virtio-net,notatap0 -o boot.kernel="$GUEST" testvm
	expect_one_error 4 "pci\.0\.3\.0\.backend: no interface 'notatap0'" || return 1
}

# Several hostfwd= options end up in one ';'-separated key.
t_net_hostfwd_config() {
	run_hyve 20 -s 3,virtio-net,slirp,hostfwd=tcp::8080-:80,mtu=9000,hostfwd=udp:127.0.0.1:5353-10.0.2.15:53 \
		-o config.dump=true testvm
	expect_rc 0 || return 1
	expect_out '^pci\.0\.3\.0\.backend=slirp$' || return 1
	expect_out '^pci\.0\.3\.0\.hostfwd=tcp::8080-:80;udp:127\.0\.0\.1:5353-10\.0\.2\.15:53$' || return 1
	expect_out '^pci\.0\.3\.0\.mtu=9000$' || return 1
}
