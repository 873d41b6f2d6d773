# The small Linux test kernel checkpointed and migrated in the middle of
# its boot (issues 5 and 6).  One boot serves both, to keep make check
# short: the VM runs in network namespace A ("host A"); it is checkpointed
# (paused, state saved, disk copied, resumed) right after SMP bring-up and
# again while its virtio devices are being probed; then it is live-migrated
# over a veth pair to a hyve in namespace B ("host B"), which must boot on
# to /init from the virtio-blk root.  Finally each checkpoint is restored in
# a new process with its own disk copy and must reach /init too.  Uses
# linux_test_kit/wait_linux_init (test_linux.sh) and mg_port
# (test_migration.sh).
HYVECTL=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}

LXS_A="" LXS_B=""
lxs_netns_up() {
	LXS_A=hyveA$$ LXS_B=hyveB$$
	ip netns add "$LXS_A" 2>/dev/null && ip netns add "$LXS_B" 2>/dev/null &&
	ip link add "va$$" type veth peer name "vb$$" 2>/dev/null &&
	ip link set "va$$" netns "$LXS_A" && ip link set "vb$$" netns "$LXS_B" &&
	ip -n "$LXS_A" addr add 10.99.0.1/24 dev "va$$" && ip -n "$LXS_B" addr add 10.99.0.2/24 dev "vb$$" &&
	ip -n "$LXS_A" link set "va$$" up && ip -n "$LXS_B" link set "vb$$" up &&
	ip -n "$LXS_A" link set lo up && ip -n "$LXS_B" link set lo up
}

lxs_netns_down() {
	[ -n "$LXS_A" ] && ip netns del "$LXS_A" 2>/dev/null
	[ -n "$LXS_B" ] && ip netns del "$LXS_B" 2>/dev/null
	LXS_A="" LXS_B=""
}

# lxs_ckpt SOCK N IMG: pause, checkpoint, copy the disk, resume.
lxs_ckpt() {
	local sock=$1 n=$2 img=$3
	"$HYVECTL" --socket="$sock" --pause >/dev/null &&
	"$HYVECTL" --socket="$sock" --checkpoint="$TMP/lxs$n.ckpt" >/dev/null &&
	cp --sparse=always "$img" "$TMP/lxs$n.img" &&
	"$HYVECTL" --socket="$sock" --resume >/dev/null
}

# The guest clock after a restore goes on from the checkpoint: the first
# kernel timestamp printed by the restored VM is not below the last one
# the saving VM printed before it was saved.
lxs_first_ts() { tr -d '\r' <"$1" | sed -n 's/^\[ *\([0-9]*\)\.[0-9]*\].*/\1/p' | head -1; }

t_linux_checkpoint_and_migrate_midboot() {
	linux_test_kit || return $?
	[ -x "$HYVECTL" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	if ! lxs_netns_up; then
		lxs_netns_down
		SKIP_REASON="cannot create network namespaces and a veth pair (needs root and iproute2)"
		return 77
	fi
	local img=$TMP/lxs-root.img sock=$TMP/lxs.sock dsock=$TMP/lxsd.sock port rc=0
	port=$(mg_port)
	sh tests/linux/mkrootfs.sh "$img" 2>"$TMP/lxs-mkrootfs.log" || {
		echo "    mkrootfs.sh failed:"; tail -5 "$TMP/lxs-mkrootfs.log" | sed 's/^/    | /'; lxs_netns_down; return 1; }
	local cmdline="console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/init $(linux_cmdline_extra)"
	# The move crosses a (veth) network: TLS with a pre-shared key on both ends.
	local key=$TMP/lxs.psk
	(umask 077 && openssl rand -hex 32 >"$key") || { echo "    openssl rand failed"; lxs_netns_down; return 1; }
	vm_start -n "$LXS_A" -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" -o boot.cmdline="$cmdline" \
		-s 3,virtio-blk,"$img" -s 4,virtio-rnd -o control.socket="$sock" -o migration.psk_file="$key" \
		"$(vm_name lxstate)"
	local src_pid=$VM_PID src_out=$OUT src_err=$ERR src_start=$VM_START
	local marks="smpboot: Total of 2 processors activated|virtio_blk virtio[0-9]+: \\[vda\\]"
	local n=0 ts=""
	while [ $n -lt 2 ]; do
		n=$((n + 1))
		local re
		re=$(echo "$marks" | cut -d'|' -f$n)
		wait_serial "$LINUX_TIMEOUT" "$re|Kernel panic" || { rc=1; break; }
		if grep -q 'Kernel panic' "$OUT"; then
			show_serial 10
			rc=1
			break
		fi
		lxs_ckpt "$sock" $n "$img" || { echo "    checkpoint $n failed"; rc=1; break; }
		ts="$ts $(tr -d '\r' <"$OUT" | sed -n 's/^\[ *\([0-9]*\)\.[0-9]*\].*/\1/p' | tail -1)"
		echo "    checkpoint $n at wall $((SECONDS - VM_START))s after: $re"
	done
	if [ $rc = 0 ]; then
		# Host B waits; host A's VM moves over the veth pair, still booting.
		vm_start -n "$LXS_B" -R 10.99.0.2:"$port" -o control.socket="$dsock" -o migration.psk_file="$key" \
			-o pci.0.3.0.path="$img"
		local dst_pid=$VM_PID dst_out=$OUT dst_err=$ERR dst_start=$VM_START
		local w=0
		while ! grep -q 'waiting for an incoming VM' "$ERR" && kill -0 "$VM_PID" 2>/dev/null && [ $w -lt 100 ]; do
			sleep 0.1
			w=$((w + 1))
		done
		if ! "$HYVECTL" --socket="$sock" --migrate-live=10.99.0.2:"$port" >"$TMP/lxs-mig.log" 2>&1; then
			echo "    migration failed:"; sed 's/^/    | /' "$TMP/lxs-mig.log"; rc=1
		fi
		VM_PID=$src_pid OUT=$src_out ERR=$src_err VM_START=$src_start
		local i=0
		while kill -0 "$src_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		vm_stop
		grep 'migrated to\|verify pass' "$src_err" | sed 's/^/    source: /'
		[ "$RC" -eq 0 ] || { echo "    source exit status $RC, expected 0 after migrating"; rc=1; }
		VM_PID=$dst_pid OUT=$dst_out ERR=$dst_err VM_START=$dst_start
		if [ $rc = 0 ] && wait_linux_init "$LINUX_TIMEOUT"; then
			echo "    migrated VM reached /init at guest ${LINUX_INIT_GUEST}s"
			expect_no_out 'EXT4-fs (error|warning)|I/O error|Buffer I/O|BUG:|Oops' "errors after migration" || rc=1
		else
			rc=1
		fi
		vm_stop
	else
		vm_stop
	fi
	lxs_netns_down
	[ $rc = 0 ] || return 1
	# Each checkpoint restores in a new process, with the disk as it was.
	for n in 1 2; do
		vm_start -r "$TMP/lxs$n.ckpt" -o pci.0.3.0.path="$TMP/lxs$n.img" -o control.socket=none
		if ! wait_linux_init "$LINUX_TIMEOUT"; then
			vm_stop
			echo "    restore of checkpoint $n did not reach /init"
			return 1
		fi
		local first saved
		first=$(lxs_first_ts "$OUT")
		saved=$(echo "$ts" | cut -d' ' -f$((n + 1)))
		echo "    restore $n: first kernel timestamp ${first}s (saved VM's last before the checkpoint: ${saved}s), /init at guest ${LINUX_INIT_GUEST}s"
		vm_stop
		expect_no_out 'EXT4-fs (error|warning)|I/O error|Buffer I/O|BUG:|Oops' "errors after restore $n" || return 1
		[ -z "$first" ] || [ "$first" -ge "$saved" ] || { echo "    guest clock went backwards"; return 1; }
	done
}

# Checkpoint while Linux probes an NVMe controller (root) and an AHCI HBA
# (a disk and a CD): the checkpoint drains both (the bhyve calls' AHCI
# lesson), the saving VM dies, and a new process restores it with copies
# of the disks taken while it was paused; the boot goes on to /init with
# no I/O errors, both controllers working.
t_linux_checkpoint_nvme_ahci_midboot() {
	linux_test_kit || return $?
	[ -x "$HYVECTL" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	command -v genisoimage >/dev/null || command -v xorriso >/dev/null || {
		SKIP_REASON="no genisoimage/xorriso for the CD image"; return 77; }
	local root=$TMP/lxna-root.img data=$TMP/lxna-data.img iso=$TMP/lxna.iso sock=$TMP/lxna.sock ck=$TMP/lxna.ckpt
	sh tests/linux/mkrootfs.sh "$root" 2>"$TMP/lxna-mkrootfs.log" &&
		sh tests/linux/mkrootfs.sh "$iso" 2>>"$TMP/lxna-mkrootfs.log" || {
		echo "    mkrootfs.sh failed:"; tail -5 "$TMP/lxna-mkrootfs.log" | sed 's/^/    | /'; return 1; }
	truncate -s 16M "$data"
	local cmdline="console=ttyS0 root=/dev/nvme0n1 rootwait rw rootfstype=ext4 init=/init $(linux_cmdline_extra)"
	vm_start -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" -o boot.cmdline="$cmdline" \
		-s 4,nvme,"$root" -s 5,ahci,hd:"$data",cd:"$iso" -o control.socket="$sock" "$(vm_name lxna)"
	local rc=0
	wait_serial "$LINUX_TIMEOUT" 'ata[0-9]+: SATA link up|nvme nvme0: [0-9]+/0/0 default|Kernel panic' || rc=1
	grep -q 'Kernel panic' "$OUT" && { show_serial 10; rc=1; }
	if [ $rc = 0 ]; then
		"$HYVECTL" --socket="$sock" --pause >/dev/null &&
		"$HYVECTL" --socket="$sock" --checkpoint="$ck" >"$TMP/lxna-ckpt.log" 2>&1 &&
		cp --sparse=always "$root" "$root.ck" && cp --sparse=always "$data" "$data.ck" || {
			echo "    checkpoint failed:"; sed 's/^/    | /' "$TMP/lxna-ckpt.log"; rc=1; }
	fi
	local saved_at src_out=$OUT
	saved_at=$(grep -aoE 'ata[0-9]+: SATA link up|nvme nvme0: [0-9]+/0/0 default' "$OUT" | head -1)
	kill -9 "$VM_PID" 2>/dev/null
	wait "$VM_PID" 2>/dev/null
	VM_PID=""
	[ $rc = 0 ] || return 1
	echo "    checkpoint taken after '$saved_at': $(cat "$TMP/lxna-ckpt.log")"
	vm_start -r "$ck" -o pci.0.4.0.path="$root.ck" -o pci.0.5.0.port.0.path="$data.ck" \
		-o pci.0.5.0.port.1.path="$iso" -o control.socket=none
	wait_linux_init "$LINUX_TIMEOUT" || rc=1
	vm_stop
	[ $rc = 0 ] || return 1
	# The probe lines come before or after the checkpoint, depending on when
	# it was taken: the boot's log is both VMs' together.
	local restored_out=$OUT
	cat "$src_out" "$OUT" >"$TMP/lxna-both.out"
	OUT=$TMP/lxna-both.out
	expect_out 'EXT4-fs \(nvme0n1\): mounted filesystem' &&
	expect_out 'ata[0-9]+\.00: ATA-[0-9]+: HYVE SATA DISK' &&
	expect_out 'ata[0-9]+\.00: ATAPI: HYVE SATA DVD ROM' || return 1
	OUT=$restored_out
	expect_no_out "$NVME_LINUX_ERRORS|$AHCI_LINUX_ERRORS|BUG:|Oops" "errors after the restore" || return 1
	if grep -qE 'hyve: (error|warning):' "$ERR"; then
		echo "    hyve logged errors after the restore:"; grep -E 'hyve: (error|warning):' "$ERR" | head | sed 's/^/    | /'
		return 1
	fi
}

# Live migration (loopback, shared images) while Linux probes an NVMe
# controller (root) and an AHCI HBA (a disk and a CD): the source drains
# both before its last copy, the destination loads their state and the boot
# goes on there to /init with no I/O errors.
t_linux_migrate_nvme_ahci_midboot() {
	linux_test_kit || return $?
	[ -x "$HYVECTL" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	command -v genisoimage >/dev/null || command -v xorriso >/dev/null || {
		SKIP_REASON="no genisoimage/xorriso for the CD image"; return 77; }
	local root=$TMP/lxnm-root.img data=$TMP/lxnm-data.img iso=$TMP/lxnm.iso sock=$TMP/lxnm.sock port
	sh tests/linux/mkrootfs.sh "$root" 2>"$TMP/lxnm-mkrootfs.log" &&
		sh tests/linux/mkrootfs.sh "$iso" 2>>"$TMP/lxnm-mkrootfs.log" || {
		echo "    mkrootfs.sh failed:"; tail -5 "$TMP/lxnm-mkrootfs.log" | sed 's/^/    | /'; return 1; }
	truncate -s 16M "$data"
	DST_PID=""
	port=$(mg_port)
	local cmdline="console=ttyS0 root=/dev/nvme0n1 rootwait rw rootfstype=ext4 init=/init $(linux_cmdline_extra)"
	vm_start -l com1,stdio -c 2 -m 256M -o boot.kernel="$TEST_BZIMAGE" -o boot.cmdline="$cmdline" \
		-s 4,nvme,"$root" -s 5,ahci,hd:"$data",cd:"$iso" -o control.socket="$sock" "$(vm_name lxnm)"
	local rc=0
	wait_serial "$LINUX_TIMEOUT" 'ata[0-9]+: SATA link up|nvme nvme0: [0-9]+/0/0 default|Kernel panic' || rc=1
	grep -q 'Kernel panic' "$OUT" && { show_serial 10; rc=1; }
	if [ $rc = 0 ]; then
		# Held while the destination starts, so the migration begins mid-probe
		# however slow the host is; the guest runs again during the copy.
		"$HYVECTL" --socket="$sock" --pause >/dev/null || rc=1
		mg_dest "$port" -o control.socket=none -o pci.0.4.0.path="$root" -o pci.0.5.0.port.0.path="$data" \
			-o pci.0.5.0.port.1.path="$iso"
		if [ $rc = 0 ] && ! { "$HYVECTL" --socket="$sock" --resume >/dev/null &&
			"$HYVECTL" --socket="$sock" --migrate-live=127.0.0.1:"$port" >"$TMP/lxnm-mig.log" 2>&1; }; then
			echo "    migration failed:"; sed 's/^/    | /' "$TMP/lxnm-mig.log"; mg_show_dest; rc=1
		fi
	fi
	vm_stop
	[ $rc = 0 ] || { [ -n "$DST_PID" ] && mg_dest_stop; return 1; }
	echo "    $(grep -a 'migrated' "$ERR" | tail -1 | sed 's/^hyve: //')"
	# The destination's serial log is the test's from here on.
	local src_out=$OUT
	VM_PID=$DST_PID OUT=$DST_OUT ERR=$DST_ERR VM_START=$SECONDS
	DST_PID=""
	if grep -qE "$LINUX_INIT_LINE" "$src_out"; then
		# The kernel started /init before the cut (a slow host): the
		# destination goes on from there, with /init's own lines.
		wait_serial "$LINUX_TIMEOUT" "hyve-init: |$LINUX_INIT_RAN|$LINUX_ROOT_FAIL" || rc=1
	else
		wait_linux_init "$LINUX_TIMEOUT" || rc=1
	fi
	vm_stop
	[ $rc = 0 ] || return 1
	cat "$src_out" "$OUT" >"$TMP/lxnm-both.out"
	OUT=$TMP/lxnm-both.out
	expect_out 'EXT4-fs \(nvme0n1\): mounted filesystem' &&
	expect_out 'ata[0-9]+\.00: ATA-[0-9]+: HYVE SATA DISK' &&
	expect_out 'ata[0-9]+\.00: ATAPI: HYVE SATA DVD ROM' || return 1
	expect_no_out "$NVME_LINUX_ERRORS|$AHCI_LINUX_ERRORS|BUG:|Oops" "errors across the migration" || return 1
}
