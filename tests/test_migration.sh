# Live migration (issue 6) over loopback: both ends are hyve processes on
# this machine.  Destination: hyve -R 127.0.0.1:PORT; source: hyvectl.
HYVECTL=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}

mg_port() { free_port; }

# mg_dest PORT ARGS...: the destination in the background; sets DST_PID,
# DST_OUT, DST_ERR.
mg_dest() {
	local port=$1
	shift
	DST_OUT=$TMP/dst.$RANDOM.out DST_ERR=$TMP/dst.$RANDOM.err
	"$HYVE" -R 127.0.0.1:"$port" "$@" </dev/null >"$DST_OUT" 2>"$DST_ERR" &
	DST_PID=$!
	local i=0
	while ! grep -q 'waiting for an incoming VM' "$DST_ERR" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
}

mg_dest_stop() {   # status in DST_RC
	if kill -0 "$DST_PID" 2>/dev/null; then
		kill "$DST_PID" 2>/dev/null
		sleep 1
		kill -9 "$DST_PID" 2>/dev/null
	fi
	wait "$DST_PID" 2>/dev/null
	DST_RC=$?
}

# mg_dest_wait [SECONDS]: let the destination exit by itself, then collect it.
mg_dest_wait() {
	local i=0
	while kill -0 "$DST_PID" 2>/dev/null && [ $i -lt $((${1:-10} * 10)) ]; do
		sleep 0.1
		i=$((i + 1))
	done
	mg_dest_stop
}

mg_show_dest() {
	echo "    --- destination serial (tail):"
	tail -n 8 "$DST_OUT" | tr -d '\r' | sed 's/^/    | /'
	echo "    --- destination stderr (tail):"
	tail -n 6 "$DST_ERR" | sed 's/^/    | /'
}

# Wait until FILE has N lines matching REGEX (after line SKIP), at most T s.
mg_wait_lines() {
	local file=$1 skip=$2 re=$3 n=$4 t=$5 i=0
	while [ "$(tail -n +"$((skip + 1))" "$file" | tr -d '\r' | grep -cE -- "$re")" -lt "$n" ]; do
		[ $i -ge $((t * 10)) ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# mg_worker MEMSIZE WORKER_MIB SOCK NAME: the CPL3 worker guest (rewriting
# and verifying its pages) running in the background, past its first round.
mg_worker() {
	vm_start -m "$1" -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="test=worker mem=$2" -o control.socket="$3" "$4" || return 1
	wait_serial 60 '^worker: round [0-9]+ sum OK' || { vm_stop; return 1; }
}

mg_need() {
	have_kvm || return 77
	[ -x "$HYVECTL" ] || { SKIP_REASON="hyvectl not built"; return 77; }
}

# The whole page path without a VM (bench/mig_pipeline.c, no /dev/kvm
# needed): hyve's real source and destination in two processes, the KVM
# layer stubbed, a writer thread as the guest.  Each run must end with the
# destination's RAM equal to the source's: one stream; three streams with
# lz4; a dirtying guest over two streams with the verify pass.
t_migpipe_page_path() {
	local bin
	bin=$(dirname -- "$(readlink -f -- "$HYVE")")/mig_pipeline
	[ -x "$bin" ] || { SKIP_REASON="$bin not built (make check builds it)"; return 77; }
	local args
	for args in "--streams 1" "--streams 3 --compress lz4" "--dirty --streams 2 --verify"; do
		# shellcheck disable=SC2086
		"$bin" --no-limits --data 128 $args >"$TMP/migpipe.out" 2>&1
		local rc=$?
		if [ $rc -ne 0 ] || ! grep -qE '^migrated to 127\.0\.0\.1:[0-9]+: [0-9]+ rounds' "$TMP/migpipe.out"; then
			echo "    mig_pipeline $args: status $rc (want 0: destination RAM equal to the source's)"
			sed 's/^/    | /' "$TMP/migpipe.out"
			return 1
		fi
		sed "s/^/    [$args] /" "$TMP/migpipe.out"
	done
}

# 1 GiB of CPL3 worker memory being rewritten while it moves: the
# destination's guest keeps verifying every page and the generation sum.
t_migrate_live_worker_1g() {
	mg_need || return 77
	local port sock=$TMP/mg1.sock dsock=$TMP/mg1d.sock ctl=$TMP/mg1.ctl
	port=$(mg_port)
	mg_worker 1100M 1024 "$sock" mgvm || return 1
	mg_dest "$port" -o control.socket="$dsock"
	"$HYVECTL" --socket="$sock" --migrate-live=127.0.0.1:"$port" >"$ctl" 2>&1
	local rc=$?
	local i=0
	while kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	vm_stop
	if [ $rc -ne 0 ] || [ "$RC" -ne 0 ]; then
		echo "    hyvectl status $rc, source exit status $RC (want 0 and 0)"; sed 's/^/    | /' "$ctl"
		show_serial; mg_dest_stop; mg_show_dest; return 1
	fi
	grep 'migrated to\|verify pass' "$ERR" | sed 's/^/    /'
	grep -qE '^migrated to 127\.0\.0\.1:[0-9]+: [0-9]+ rounds, [0-9.]+ MiB sent' "$ctl" ||
		{ echo "    no summary from hyvectl --migrate-live:"; sed 's/^/    | /' "$ctl"; mg_dest_stop; return 1; }
	# The guest on the destination: two more verified rounds, no failure.
	if ! mg_wait_lines "$DST_OUT" 0 '^worker: round [0-9]+ sum OK' 2 60; then
		echo "    destination guest did not carry on verifying"; mg_dest_stop; mg_show_dest; return 1
	fi
	"$HYVECTL" --socket="$dsock" --get-stats | grep -q '^state running' || {
		echo "    destination not running"; mg_dest_stop; mg_show_dest; return 1; }
	mg_dest_stop
	if grep -q 'FAIL' "$DST_OUT"; then
		mg_show_dest; return 1
	fi
	grep -q 'downtime [0-9]* ms' "$ERR" || { echo "    no downtime reported"; return 1; }
}

# The test guest in the middle of virtio-blk writes moves (over 3 streams,
# lz4) and finishes them there; the host checks the image.
t_migrate_blk_midway() {
	mg_need || return 77
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
	local port sock=$TMP/mg2.sock img
	port=$(mg_port)
	img=$(vt_image mgblk) || return 1
	# Three TCP streams and lz4 here, so those paths are covered too.
	vm_start -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o boot.cmdline="test=blkckpt rounds=48" \
		-s 4,virtio-blk,"$img" -o control.socket="$sock" -o migration.streams=3 -o migration.compress=lz4 mgvm2 || return 1
	wait_serial 60 '^blkckpt: round 8.$' || { vm_stop; return 1; }
	# The disk path is host-side: the destination names it (docs/security.md).
	mg_dest "$port" -o control.socket=none -o pci.0.4.0.path="$img"
	"$HYVECTL" --socket="$sock" --migrate-live=127.0.0.1:"$port" >"$TMP/mg2.ctl" 2>&1 || {
		sed 's/^/    | /' "$TMP/mg2.ctl"; vm_stop; mg_dest_stop; mg_show_dest; return 1; }
	vm_stop
	local i=0
	while kill -0 "$DST_PID" 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
	mg_dest_stop
	grep -q 'over 3 streams, compression lz4' "$DST_ERR" || { echo "    streams/compression not used"; mg_show_dest; return 1; }
	[ "$DST_RC" -eq 1 ] && grep -q '^PASS blkckpt' "$DST_OUT" && grep -q '^blkckpt: verified 48 rounds' "$DST_OUT" || {
		echo "    destination: status $DST_RC, expected the guest's PASS (1)"; mg_show_dest; return 1; }
	ck_check_image "$img" 48
}

# The same on a qcow2 image (shared storage): the destination opens it at
# set-up, while the source goes on allocating clusters for its rounds; it
# must re-read the image's metadata before its guest writes and verifies.
t_migrate_qcow2_shared_storage() {
	mg_need || return 77
	command -v qemu-img >/dev/null || { SKIP_REASON="qemu-img not installed (qemu-utils)"; return 77; }
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
	local port sock=$TMP/mgq.sock img=$TMP/mgq.qcow2
	port=$(mg_port)
	qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 1M || return 1
	vm_start -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o boot.cmdline="test=blkckpt rounds=48" \
		-s 4,virtio-blk,"$img",format=qcow2 -o control.socket="$sock" mgvmq || return 1
	wait_serial 60 '^blkckpt: round 8.$' || { vm_stop; return 1; }
	mg_dest "$port" -o control.socket=none -o pci.0.4.0.path="$img"
	"$HYVECTL" --socket="$sock" --migrate-live=127.0.0.1:"$port" >"$TMP/mgq.ctl" 2>&1 || {
		sed 's/^/    | /' "$TMP/mgq.ctl"; vm_stop; mg_dest_stop; mg_show_dest; return 1; }
	vm_stop
	local i=0
	while kill -0 "$DST_PID" 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
	mg_dest_stop
	[ "$DST_RC" -eq 1 ] && grep -q '^PASS blkckpt' "$DST_OUT" && grep -q '^blkckpt: verified 48 rounds' "$DST_OUT" || {
		echo "    destination: status $DST_RC, expected the guest's PASS (1)"; mg_show_dest; return 1; }
	qemu-img check "$img" >"$TMP/mgq.check" 2>&1 || { sed 's/^/    | /' "$TMP/mgq.check"; return 1; }
	qemu-img convert -O raw "$img" "$TMP/mgq.raw" || return 1
	ck_check_image "$TMP/mgq.raw" 48
}

# The destination dies at about half of the first round: the source says
# why, keeps running, and its guest is unharmed.
t_migrate_destination_killed() {
	mg_need || return 77
	local port sock=$TMP/mg3.sock ctl=$TMP/mg3.ctl
	port=$(mg_port)
	mg_worker 1100M 1024 "$sock" mgvm3 || return 1
	mg_dest "$port" -o control.socket=none
	"$HYVECTL" --socket="$sock" --migrate-live=127.0.0.1:"$port" >"$ctl" 2>&1 &
	local ctl_pid=$! i=0 sent=0 status=""
	while [ $i -lt 300 ]; do
		status=$("$HYVECTL" --socket="$sock" --migrate-status 2>/dev/null)
		sent=$(printf '%s\n' "$status" | sed -n 's/^bytes_sent //p')
		[ "${sent:-0}" -ge $((512 << 20)) ] && break
		sleep 0.05
		i=$((i + 1))
	done
	# Still in round 0: the rate is the average so far, not 0.
	if printf '%s\n' "$status" | grep -q '^round 0$' &&
		printf '%s\n' "$status" | grep -q '^bandwidth_mib_per_s 0\.0$'; then
		echo "    --migrate-status says 0 MiB/s in round 0 after ${sent} bytes"; kill -9 "$DST_PID"; vm_stop; return 1
	fi
	kill -9 "$DST_PID"
	wait "$ctl_pid"
	local rc=$?
	wait "$DST_PID" 2>/dev/null
	echo "    destination killed after ${sent:-0} bytes; hyvectl: $(tr '\n' ' ' <"$ctl")"
	[ $rc -eq 1 ] || { echo "    hyvectl status $rc, expected 1"; vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --migrate-status | grep -q '^state failed' || { echo "    status not failed"; vm_stop; return 1; }
	local before
	before=$(grep -c 'sum OK' "$OUT")
	mg_wait_lines "$OUT" 0 'sum OK' $((before + 2)) 30 || { echo "    source guest stopped"; show_serial; vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --get-stats | grep -q '^state running' || { vm_stop; return 1; }
	vm_stop
	! grep -q FAIL "$OUT" || { show_serial; return 1; }
}

# Refusals and broken streams: the destination says why (source keeps
# running), a cut stream or garbage makes the destination exit 4.
t_migrate_refusals() {
	mg_need || return 77
	local port sock=$TMP/mg4.sock ctl=$TMP/mg4.ctl
	port=$(mg_port)
	mg_worker 256M 64 "$sock" mgvm4 || return 1
	# An override that makes the destination different is refused before any page moves.
	mg_dest "$port" -o control.socket=none -m 512M
	"$HYVECTL" --socket="$sock" --migrate-live=127.0.0.1:"$port" >"$ctl" 2>&1
	local rc=$?
	mg_dest_wait 10
	grep -q 'memory size differs' "$ctl" && [ $rc -eq 1 ] && [ "$DST_RC" -eq 4 ] || {
		echo "    hyvectl $rc / destination $DST_RC:"; cat "$ctl"; mg_show_dest; vm_stop; return 1; }
	# Nobody listening.
	"$HYVECTL" --socket="$sock" --migrate=127.0.0.1:1 >"$ctl" 2>&1
	[ $? -eq 1 ] && grep -q 'cannot connect' "$ctl" || { cat "$ctl"; vm_stop; return 1; }
	kill -0 "$VM_PID" && "$HYVECTL" --socket="$sock" --get-stats | grep -q '^state running' || { vm_stop; return 1; }
	vm_stop
	# Garbage instead of a migration stream.
	port=$(mg_port)
	mg_dest "$port" -o control.socket=none
	head -c 4096 /dev/urandom | python3 -c "
import socket, sys
s = socket.create_connection(('127.0.0.1', $port)); s.sendall(sys.stdin.buffer.read()); s.shutdown(1); s.recv(100)" 2>/dev/null
	mg_dest_wait 10
	[ "$DST_RC" -eq 4 ] && [ "$(grep -c '^hyve: error:' "$DST_ERR")" -eq 1 ] || {
		echo "    garbage stream: destination status $DST_RC"; mg_show_dest; return 1; }
	# A source that dies mid-stream: the destination discards the VM.
	port=$(mg_port)
	mg_worker 1100M 1024 "$sock" mgvm5 || return 1
	mg_dest "$port" -o control.socket=none
	"$HYVECTL" --socket="$sock" --migrate-live=127.0.0.1:"$port" >/dev/null 2>&1 &
	sleep 0.5
	kill -9 "$VM_PID"
	wait "$VM_PID" 2>/dev/null
	VM_PID=""
	mg_dest_wait 90
	[ "$DST_RC" -eq 4 ] && grep -q 'connection lost' "$DST_ERR" || {
		echo "    source killed: destination status $DST_RC"; mg_show_dest; return 1; }
}
