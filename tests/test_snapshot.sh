# Checkpoint / restore (issue 5): hyvectl against running test guests,
# restore in new processes, and bad checkpoint files.
HYVECTL=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}
CKPT_PY=${CKPT_PY:-$PWD/tools/ckpt.py}

ck_need() {
	have_kvm || return 77
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
	[ -x "$HYVECTL" ] || { SKIP_REASON="hyvectl not built"; return 77; }
}

# ck_guest SOCK CMDLINE ARGS...: the test guest in the background, with a
# control socket at SOCK.
ck_guest() {
	local sock=$1 cmd=$2
	shift 2
	vm_start -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" -o boot.cmdline="$cmd" \
		-o control.socket="$sock" "$@" ckvm
}

# ck_check_image IMG ROUNDS: every sector test=blkckpt writes holds its pattern.
ck_check_image() {
	python3 - "$1" "$2" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
M = 0xffffffff
for r in range(int(sys.argv[2])):
    for s in range(1024 + 16 * r, 1024 + 16 * r + 16):
        want = struct.pack('<128I', *[((s * 0x9e3779b1 + j * 0x85ebca77) ^ (0x5eed1000 + r) ^ 0xa5a5a5a5) & M for j in range(128)])
        if data[s * 512:(s + 1) * 512] != want:
            sys.exit("    image: sector %d (round %d) does not hold the pattern" % (s, r))
PY
}

ck_kill() {   # the saving process dies abruptly: nothing is left to clean up but the file
	kill -9 "$VM_PID" 2>/dev/null
	wait "$VM_PID" 2>/dev/null
	VM_PID=""
}

# counter lines "counter: V ticks: T" -> "V T"
ck_counters() { tr -d '\r' <"$1" | sed -n 's/^counter: \([0-9]*\) ticks: \([0-9]*\)$/\1 \2/p'; }

# The CPL3 counter carries on after a restore in a new process: the first
# value is the next multiple of the step after a value the saved VM printed
# (not 0, not beyond where the saving VM got), and its LAPIC tick count
# follows that line's (no lost or invented ticks beyond a few periods).
t_ckpt_counter_restore() {
	ck_need || return 77
	local sock=$TMP/ck1.sock ck=$TMP/ck1.ckpt step=$((1 << 26))
	ck_guest "$sock" "test=counter shift=26" || return 1
	wait_serial 30 '^counter: [0-9]+ ticks: [0-9]+.$' || { vm_stop; return 1; }
	sleep 1
	if ! "$HYVECTL" --socket="$sock" --checkpoint="$ck" >"$TMP/ck1.ctl" 2>&1; then
		echo "    hyvectl --checkpoint failed:"; sed 's/^/    | /' "$TMP/ck1.ctl"; vm_stop; return 1
	fi
	# hyvectl says what it did (bhyvectl is silent; a user wants to know).
	grep -qE "^checkpoint $ck: [0-9.]+ MiB of RAM written, vCPUs paused [0-9]+ ms" "$TMP/ck1.ctl" ||
		{ echo "    no summary from hyvectl --checkpoint:"; sed 's/^/    | /' "$TMP/ck1.ctl"; vm_stop; return 1; }
	sleep 0.5
	ck_kill
	local orig=$OUT
	ck_counters "$orig" >"$TMP/ck1.orig"
	run_hyve 8 -r "$ck" -o control.socket=none
	ck_counters "$OUT" >"$TMP/ck1.rest"
	if [ "$(wc -l <"$TMP/ck1.rest")" -lt 3 ]; then
		echo "    the restored guest printed fewer than 3 counter lines"; show; return 1
	fi
	python3 - "$TMP/ck1.orig" "$TMP/ck1.rest" "$step" <<'PY' || { show; return 1; }
import sys
orig = [tuple(map(int, l.split())) for l in open(sys.argv[1])]
rest = [tuple(map(int, l.split())) for l in open(sys.argv[2])]
step = int(sys.argv[3])
v, t = rest[0]
byval = dict(orig)
prev = byval.get(v - step)
ok = v % step == 0 and v >= 3 * step and v <= orig[-1][0] + step and prev is not None
print("    saved VM printed %d..%d, restored starts at %d (ticks %d, previous line ticks %s)"
      % (orig[0][0], orig[-1][0], v, t, prev))
if not ok:
    sys.exit("    restored counter does not continue the saved one")
if not (prev <= t <= prev + 100):
    sys.exit("    LAPIC ticks jumped: %d after %d" % (t, prev))
if any(b[0] != a[0] + step for a, b in zip(rest, rest[1:])):
    sys.exit("    restored counter skips values")
PY
}

# The test guest in the middle of virtio-blk writes: checkpoint, kill,
# restore; the guest finishes, reads everything back, and the host checks
# the image against the same pattern.
t_ckpt_blk_midway() {
	ck_need || return 77
	local sock=$TMP/ck2.sock ck=$TMP/ck2.ckpt img rounds=48
	img=$(vt_image ckblk) || return 1
	ck_guest "$sock" "test=blkckpt rounds=$rounds" -s 4,virtio-blk,"$img" || return 1
	wait_serial 60 '^blkckpt: round 8.$' || { vm_stop; return 1; }
	if ! "$HYVECTL" --socket="$sock" --checkpoint="$ck" >"$TMP/ck2.ctl" 2>&1; then
		echo "    hyvectl --checkpoint failed:"; sed 's/^/    | /' "$TMP/ck2.ctl"; vm_stop; return 1
	fi
	ck_kill
	local before
	before=$(grep -c '^blkckpt: round' "$OUT")
	# The disk path is host-side: not taken from the file unless given or trusted.
	run_hyve 20 -r "$ck" -o control.socket=none
	expect_one_error 4 "checkpoint .* names host resources that are not taken from it: pci\.0\.4\.0\.path; give it here" ||
		return 1
	run_hyve 120 -r "$ck" -o control.socket=none -o pci.0.4.0.path="$img"
	expect_rc 1 || return 1   # the test guest's "passed" debug exit
	expect_out '^PASS blkckpt' && expect_out '^blkckpt: verified 48 rounds' || return 1
	local first
	first=$(tr -d '\r' <"$OUT" | sed -n 's/^blkckpt: round \([0-9]*\)$/\1/p' | head -1)
	echo "    saved VM had printed $before rounds; restored VM went on from round $first"
	[ -n "$first" ] && [ "$first" -gt 0 ] && [ "$first" -le "$before" ] || {
		echo "    restored run should continue from a round the saved VM reached"; show; return 1; }
	ck_check_image "$img" "$rounds"
}

# --suspend stops the VM after saving; the same file restores twice, and
# both restores start from the same counter value.
t_ckpt_suspend_restore_twice() {
	ck_need || return 77
	local sock=$TMP/ck3.sock ck=$TMP/ck3.ckpt
	ck_guest "$sock" "test=counter shift=26" || return 1
	wait_serial 30 '^counter: [0-9]+ ticks' || { vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --suspend="$ck" >"$TMP/ck3.ctl" 2>&1 || {
		echo "    hyvectl --suspend failed:"; sed 's/^/    | /' "$TMP/ck3.ctl"; vm_stop; return 1; }
	local i=0
	while kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	if kill -0 "$VM_PID" 2>/dev/null; then
		echo "    hyve still running 5 s after --suspend"; vm_stop; return 1
	fi
	vm_stop
	expect_rc 1 || return 1
	[ -e "$sock" ] && { echo "    control socket $sock left behind"; return 1; }
	# Each restore runs until it prints its first counter line.
	local a b
	vm_start -r "$ck" -o control.socket=none
	wait_serial 60 '^counter: [0-9]+ ticks'
	vm_stop
	a=$(ck_counters "$OUT" | head -1)
	vm_start -r "$ck" -o control.socket=none
	wait_serial 60 '^counter: [0-9]+ ticks'
	vm_stop
	b=$(ck_counters "$OUT" | head -1)
	echo "    first counter line after each restore: '$a' / '$b'"
	[ -n "$a" ] && [ "${a%% *}" = "${b%% *}" ] || { echo "    restores disagree"; show; return 1; }
}

# checkpoint -> restore (vCPUs held paused) -> checkpoint: every vCPU, chip
# and device section is identical apart from clock readings.
t_ckpt_roundtrip_identical() {
	ck_need || return 77
	local sock=$TMP/ck4.sock a=$TMP/ck4a.ckpt b=$TMP/ck4b.ckpt img
	img=$(vt_image ck4) || return 1
	ck_guest "$sock" "test=blkckpt rounds=60" -m 64M -c 2 -s 4,virtio-blk,"$img" -s 5,virtio-rnd || return 1
	wait_serial 60 '^blkckpt: round 3.$' || { vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --checkpoint="$a" >/dev/null 2>&1 || { echo "    first checkpoint failed"; vm_stop; return 1; }
	vm_stop
	vm_start -r "$a" -o boot.paused=true -o control.socket="$sock" -o snapshot.trust_config=true
	local i=0
	while [ ! -S "$sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	"$HYVECTL" --socket="$sock" --checkpoint="$b" >"$TMP/ck4.ctl" 2>&1 || {
		echo "    second checkpoint failed:"; sed 's/^/    | /' "$TMP/ck4.ctl"; vm_stop; return 1; }
	vm_stop
	local out n sec
	out=$(python3 "$CKPT_PY" compare "$a" "$b") || { echo "$out" | sed 's/^/    /'; return 1; }
	echo "$out" | sed 's/^/    /'
	# An empty or partial save would compare equal too: the sections must be there.
	local list
	list=$(python3 "$CKPT_PY" list "$a")
	for sec in vcpu.0 vcpu.1 irqchip pit pci.0.4.0 pci.0.5.0 uart.com1; do
		echo "$list" | grep -q "^$sec " || { echo "    section $sec missing"; return 1; }
	done
	n=$(echo "$out" | sed -n 's/^\([0-9]*\) sections compared.*/\1/p')
	[ "${n:-0}" -ge 10 ] || { echo "    only ${n:-0} sections compared"; return 1; }
}

# Bad files: one clear error naming what is wrong, exit 4, no VM runs.
t_ckpt_bad_files() {
	ck_need || return 77
	local sock=$TMP/ck5.sock ck=$TMP/ck5.ckpt bad=$TMP/ck5.bad
	ck_guest "$sock" "test=counter shift=26" || return 1
	wait_serial 30 '^counter: ' || { vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --checkpoint="$ck" >/dev/null 2>&1 || { echo "    checkpoint failed"; vm_stop; return 1; }
	vm_stop
	cp "$ck" "$bad" && python3 "$CKPT_PY" corrupt "$bad" vcpu.0
	run_hyve 10 -r "$bad"
	expect_one_error 4 'section vcpu.0: corrupted' || return 1
	cp "$ck" "$bad" && python3 "$CKPT_PY" corrupt "$bad" pci.0.0.0
	run_hyve 10 -r "$bad"
	expect_one_error 4 'section pci.0.0.0: corrupted' || return 1
	cp "$ck" "$bad" && python3 "$CKPT_PY" set-major "$bad" 2
	run_hyve 10 -r "$bad"
	expect_one_error 4 'format version 2.0; this hyve reads 1' || return 1
	head -c 3000 "$ck" >"$bad"
	run_hyve 10 -r "$bad"
	expect_one_error 4 'truncated' || return 1
	head -c 100000 /dev/urandom >"$bad"
	run_hyve 10 -r "$bad"
	expect_one_error 4 'not a hyve checkpoint' || return 1
	run_hyve 10 -r "$TMP/does-not-exist.ckpt"
	expect_one_error 4 'does-not-exist.ckpt: No such file' || return 1
	# -o overrides apply on top of the saved configuration, and are checked.
	run_hyve 10 -r "$ck" -m 128M
	expect_one_error 4 'section memory: region 0 does not match' || return 1
}

# hyvectl errors: documented statuses, and a failed checkpoint leaves the
# VM running.
t_ckpt_hyvectl_errors() {
	ck_need || return 77
	local sock=$TMP/ck6.sock out=$TMP/ck6.out
	"$HYVECTL" --socket="$TMP/nothing.sock" --get-stats >"$out" 2>&1
	[ $? -eq 3 ] || { echo "    unreachable VM: expected status 3"; cat "$out"; return 1; }
	"$HYVECTL" --get-stats >"$out" 2>&1
	[ $? -eq 2 ] || { echo "    no --vm: expected status 2"; cat "$out"; return 1; }
	ck_guest "$sock" "test=counter shift=26" || return 1
	wait_serial 30 '^counter: ' || { vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --checkpoint=/proc/nonexistent/x.ckpt >"$out" 2>&1
	local rc=$?
	[ $rc -eq 1 ] && grep -q 'hyvectl: /proc/nonexistent' "$out" || {
		echo "    checkpoint to an unwritable path: status $rc"; cat "$out"; vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --get-stats >"$out" 2>&1 || { cat "$out"; vm_stop; return 1; }
	grep -q '^state running' "$out" || { echo "    VM not running after the failed checkpoint"; cat "$out"; vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --pause >/dev/null && "$HYVECTL" --socket="$sock" --get-stats | grep -q '^state paused' &&
		"$HYVECTL" --socket="$sock" --resume >/dev/null || { echo "    pause/resume failed"; vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --resume >"$out" 2>&1
	[ $? -eq 1 ] && grep -q 'not paused' "$out" || { echo "    resume of a running VM should be refused"; vm_stop; return 1; }
	# A second VM with the same control socket is refused while the first runs.
	run_hyve 10 -l com1,stdio -o boot.kernel="$GUEST" -o control.socket="$sock" ckvm2
	expect_one_error 4 'already running' || { vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --destroy >/dev/null || { vm_stop; return 1; }
	local i=0
	while kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	vm_stop
	expect_rc 1
}

# A checkpoint or suspend that cannot replace its target (a directory, a
# FIFO) is refused with the reason and the VM keeps running (a failed
# suspend used to leave it paused for good); a symlink planted at the
# temporary file's first name (PATH.tmp.PID) is neither followed nor
# reused, and the checkpoint is mode 0600.
t_ckpt_refused_targets() {
	ck_need || return 77
	local sock=$TMP/ck7.sock out=$TMP/ck7.out ck=$TMP/ck7.ckpt victim=$TMP/ck7.victim rc
	mkdir "$TMP/ck7.dir" && mkfifo "$TMP/ck7.fifo" || return 1
	ck_guest "$sock" "test=counter shift=26" || return 1
	wait_serial 30 '^counter: ' || { vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --suspend="$TMP/ck7.dir" >"$out" 2>&1
	rc=$?
	[ $rc -eq 1 ] && grep -q "hyvectl: $TMP/ck7.dir: is a directory" "$out" || {
		echo "    suspend to a directory: status $rc (expected 1 and the reason)"; cat "$out"; vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --get-stats >"$out" 2>&1 && grep -q '^state running' "$out" || {
		echo "    VM not running after the failed suspend"; cat "$out"; vm_stop; return 1; }
	local n0 i=0
	n0=$(grep -c '^counter: ' "$OUT")
	while [ "$(grep -c '^counter: ' "$OUT")" -le "$n0" ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
	[ "$(grep -c '^counter: ' "$OUT")" -gt "$n0" ] || {
		echo "    the guest printed nothing for 15 s after the failed suspend"; vm_stop; return 1; }
	"$HYVECTL" --socket="$sock" --checkpoint="$TMP/ck7.fifo" >"$out" 2>&1
	rc=$?
	[ $rc -eq 1 ] && grep -q 'is a FIFO' "$out" && [ -p "$TMP/ck7.fifo" ] || {
		echo "    checkpoint to a FIFO: status $rc, expected a refusal and the FIFO left alone"; cat "$out"; vm_stop
		return 1; }
	echo precious >"$victim"
	local planted=$ck.tmp.$VM_PID   # the name hyve tries first (vm_stop clears VM_PID)
	ln -s "$victim" "$planted"
	"$HYVECTL" --socket="$sock" --checkpoint="$ck" >"$out" 2>&1 || {
		echo "    checkpoint next to a planted symlink failed"; cat "$out"; vm_stop; return 1; }
	vm_stop
	[ "$(cat "$victim")" = precious ] && [ -L "$planted" ] || {
		echo "    the planted symlink was followed or replaced"; return 1; }
	[ "$(stat -c %a "$ck")" = 600 ] || { echo "    checkpoint mode $(stat -c %a "$ck"), expected 600"; return 1; }
	ls "$TMP" | grep -q '^ck7\.ckpt\.tmp\.[0-9]*\.' && { echo "    a temporary file was left behind"; return 1; }
	return 0
}
