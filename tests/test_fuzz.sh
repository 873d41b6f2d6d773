# libFuzzer targets (tests/fuzz/) run briefly as part of every test run, with
# the corpora that `make fuzz` keeps in build/fuzz/ (seeded from
# tests/fuzz/corpus/), after the reproducers in tests/fuzz/regress/: 10 s
# each, or FUZZ_TEST_SECONDS for all.  A crash, leak, sanitizer report,
# hang or failing reproducer fails the test; a missing clang/libFuzzer
# skips it.  `make fuzz` runs longer.

fz_run() {
	local name=$1 secs=${FUZZ_TEST_SECONDS:-${2:-10}} out
	out=$TMP/fuzz_$name.out
	nice -n 10 ./tests/fuzz/run.sh -t "$secs" "$name" >"$out" 2>&1
	local rc=$?
	if [ $rc -eq 77 ]; then
		SKIP_REASON=$(head -1 "$out")
		return 77
	fi
	# The summary line (exec count, coverage) shows in the test log either way.
	sed 's/^/    /' "$out"
	return $rc
}

t_fuzz_virtqueue() {
	fz_run virtqueue
}

t_fuzz_p9() {
	fz_run p9
}

# The checkpoint reader and the restore path (core/checkpoint.c, vmstate,
# every device's load hook) on mutated checkpoint files.
t_fuzz_ckpt() {
	fz_run ckpt 10
}

# The configuration tree, -k files, -o and the -s parsers of every model.
t_fuzz_config() {
	fz_run config 10
}

# The qcow2 format layer (devices/qcow2*.c): header, tables, reads and
# writes on mutated images.
t_fuzz_qcow2() {
	fz_run qcow2 10
}

# The migration destination (core/migration.c) on one incoming stream:
# handshake, config, compatibility, pages, device state.
t_fuzz_migration() {
	fz_run migration 10
}

# The control socket server (core/control.c): request lines from up to 4
# clients, commands on recording stubs.
t_fuzz_control() {
	fz_run control 10
}

# The NVMe controller (devices/nvme*.c): registers, doorbells, admin and
# NVM commands, PRP lists in guest memory, checkpoint round trips.
t_fuzz_nvme() {
	fz_run nvme 10
}

# The xHCI controller and tablet (devices/pci_xhci.c, usb_tablet.c):
# registers, command and transfer rings, contexts anywhere, pointer events,
# checkpoint round trips and raw restore input.
t_fuzz_xhci() {
	fz_run xhci 10
}

# The AHCI HBA (devices/ahci*.c): ABAR registers, command lists, FISes,
# ATA and ATAPI commands, PRDTs in guest memory, checkpoint round trips.
t_fuzz_ahci() {
	fz_run ahci 10
}

# The instruction completion layer (core/insn*.c): random instruction
# bytes, register state and page tables; no crash, no write outside the
# instruction's checked operands, no state change by a faulting one.
t_fuzz_insn() {
	fz_run insn 10
}

# The GDB stub's packet reader and command handler (core/gdb_proto.c).
t_fuzz_gdb() {
	fz_run gdb 10
}
