# Test helpers shared by tests/*.sh (sourced by tests/run.sh).
# Each test is a shell function; it returns 0 (pass), 1 (fail) or 77 (skip,
# with the reason in $SKIP_REASON).  Failures print what was expected and
# the tail of what was seen.

HYVE=${HYVE:-$PWD/hyve}
GUEST=${GUEST:-$PWD/guests/testguest/testguest.elf}
# One directory per run for everything the suite makes, removed at exit.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/hyve-tests.$$.XXXXXX") || exit 1
# VM control sockets default to $HYVE_RUN_DIR/NAME.sock (core/control.h):
# the suite's VMs never meet a user's VMs in /run/hyve, and hyvectl --vm=
# here reaches only them.
export HYVE_RUN_DIR=$TMP/run
mkdir -m 0700 "$HYVE_RUN_DIR"
# Test VM names carry the runner's PID (vm_name BASE).
VM_PREFIX=t$$
vm_name() { echo "$VM_PREFIX-$1"; }

SKIP_REASON=""
OUT="" ERR="" RC=0 SHOWN=0

# At exit (normal or interrupted): stop what a test left running, then
# remove the run's directory.
suite_cleanup() {
	local p
	for p in $VM_PID $DST_PID $(jobs -p 2>/dev/null); do
		kill "$p" 2>/dev/null
	done
	sleep 0.2
	for p in $VM_PID $DST_PID $(jobs -p 2>/dev/null); do
		kill -9 "$p" 2>/dev/null
	done
	# Network namespaces this run made (test_net.sh, test_linux*.sh name them with $$).
	for p in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^(hyvenet\.$$\..*|hyve-linux-$$|hyve[AB]$$)\$"); do
		ip netns del "$p" 2>/dev/null
	done
	rm -rf "$TMP"
}
trap suite_cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on 127.0.0.1 that is free now (the kernel picks it).
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

have_kvm() {
	if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
		SKIP_REASON="/dev/kvm missing or not accessible"
		return 1
	fi
	return 0
}

# run_hyve TIMEOUT ARGS... : runs hyve, stdin from /dev/null unless
# HYVE_STDIN names a file; sets OUT (stdout file), ERR (stderr file), RC.
run_hyve() {
	local t=$1
	shift
	OUT=$TMP/out.$RANDOM ERR=$TMP/err.$RANDOM
	timeout -k 5 "$t" "$HYVE" "$@" <"${HYVE_STDIN:-/dev/null}" >"$OUT" 2>"$ERR"
	RC=$?
}

# run_guest TIMEOUT CMDLINE HYVE-ARGS...: boots the test guest with
# pc-testdev (debug-exit) and com1 on stdio.
run_guest() {
	local t=$1 cmd=$2
	shift 2
	run_hyve "$t" -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="$cmd" "$@" "$(vm_name testvm)"
}

# run_guest_qemu T CMDLINE QEMU-ARGS...: the test guest under QEMU (TCG,
# guests/testguest/qemu.sh) as the reference device for a guest driver;
# fails unless the guest passed (isa-debug-exit: QEMU exits (V << 1) | 1,
# and a PASS writes 0).  OUT/ERR/RC as run_hyve sets them.
run_guest_qemu() {
	local t=$1 cmd=$2
	shift 2
	command -v qemu-system-x86_64 >/dev/null || { SKIP_REASON="qemu-system-x86_64 not installed"; return 77; }
	OUT=$TMP/qemu.$RANDOM.out ERR=$TMP/qemu.$RANDOM.err
	timeout "$t" sh guests/testguest/qemu.sh -c 1 "$cmd" "$@" >"$OUT" 2>"$ERR"
	RC=$?
	[ "$RC" = 1 ] || { echo "    QEMU exited with status $RC, expected 1 (the guest's PASS)"; show; return 1; }
}

show() {
	SHOWN=1
	echo "    --- exit status $RC; stdout (tail):"
	tail -n 15 "$OUT" 2>/dev/null | sed 's/^/    | /'
	echo "    --- stderr (tail):"
	tail -n 8 "$ERR" 2>/dev/null | sed 's/^/    | /'
}

expect_rc() {
	if [ "$RC" -ne "$1" ]; then
		echo "    expected exit status $1, got $RC"
		show
		return 1
	fi
}

expect_out() {
	if ! grep -qE -- "$1" "$OUT"; then
		echo "    expected stdout to match: $1"
		show
		return 1
	fi
}

expect_err() {
	if ! grep -qE -- "$1" "$ERR"; then
		echo "    expected stderr to match: $1"
		show
		return 1
	fi
}

# A bad-input error: exactly one "hyve: error:" line naming $2, status $1.
expect_one_error() {
	expect_rc "$1" || return 1
	local n
	n=$(grep -c '^hyve: error:' "$ERR")
	if [ "$n" -ne 1 ]; then
		echo "    expected exactly one error line, got $n"
		show
		return 1
	fi
	expect_err "$2"
}

# A guest that keeps running while the test acts on it (waits for a serial
# line, then pings it, ...):
#   vm_start [-n NETNS] HYVE-ARGS...   start hyve in the background (inside
#                                      network namespace NETNS with -n); sets
#                                      VM_PID, OUT (serial/stdout), ERR
#   wait_serial DEADLINE REGEX         wait for a stdout line matching REGEX
#                                      (grep -E); DEADLINE is in seconds since
#                                      vm_start
#   vm_stop                            kill hyve (if still running), set RC and
#                                      VM_SECONDS (wall time since vm_start)
# wait_serial fails, showing the last serial lines, when the deadline passes
# or hyve exits first.
VM_PID="" VM_START=0 VM_SECONDS=0
vm_start() {
	local ns="" wrap=""
	if [ "$1" = -n ]; then
		ns=$2
		shift 2
	fi
	# -w "CMD ARGS": run hyve through a wrapper that execs it (setpriv), so
	# VM_PID is still hyve's.
	if [ "$1" = -w ]; then
		wrap=$2
		shift 2
	fi
	OUT=$TMP/vm.$RANDOM.out ERR=$TMP/vm.$RANDOM.err
	: >"$OUT"
	if [ -n "$ns" ]; then
		ip netns exec "$ns" "$HYVE" "$@" <"${HYVE_STDIN:-/dev/null}" >"$OUT" 2>"$ERR" &
	else
		# shellcheck disable=SC2086
		$wrap "$HYVE" "$@" <"${HYVE_STDIN:-/dev/null}" >"$OUT" 2>"$ERR" &
	fi
	VM_PID=$! VM_START=$SECONDS RC=0
}

wait_serial() {
	local deadline=$1 re=$2
	while :; do
		grep -qE -- "$re" "$OUT" && return 0
		if ! kill -0 "$VM_PID" 2>/dev/null; then
			grep -qE -- "$re" "$OUT" && return 0
			wait "$VM_PID" 2>/dev/null
			RC=$?
			echo "    hyve exited (status $RC) after $((SECONDS - VM_START))s before a serial line matched: $re"
			show_serial
			return 1
		fi
		if [ $((SECONDS - VM_START)) -ge "$deadline" ]; then
			echo "    timeout: no serial line matched within ${deadline}s: $re"
			show_serial
			return 1
		fi
		sleep 1
	done
}

# show_serial [N]: the last N (25) serial lines and the end of stderr.
show_serial() {
	SHOWN=1
	echo "    --- last serial lines:"
	tail -n "${1:-25}" "$OUT" 2>/dev/null | tr -d '\r' | sed 's/^/    | /'
	echo "    --- stderr (tail):"
	tail -n 8 "$ERR" 2>/dev/null | sed 's/^/    | /'
}

vm_stop() {
	VM_SECONDS=$((SECONDS - VM_START))
	[ -n "$VM_PID" ] || return 0
	if kill -0 "$VM_PID" 2>/dev/null; then
		# SIGTERM presses the guest's power button; a guest that hears it
		# but does not power off gets the second SIGTERM (stop at once).
		kill "$VM_PID" 2>/dev/null
		local i=0
		while kill -0 "$VM_PID" 2>/dev/null && [ $i -lt 10 ]; do
			[ $i -eq 5 ] && kill "$VM_PID" 2>/dev/null
			sleep 1
			i=$((i + 1))
		done
		kill -9 "$VM_PID" 2>/dev/null
	fi
	wait "$VM_PID" 2>/dev/null
	RC=$?
	VM_PID=""
}

# wait_vm_exit SECONDS: wait for hyve to exit on its own (then vm_stop
# stops it); RC is its status.
wait_vm_exit() {
	local i=0
	while kill -0 "$VM_PID" 2>/dev/null && [ $i -lt "$1" ]; do
		sleep 1
		i=$((i + 1))
	done
	vm_stop
}

# guest_shell TIMEOUT CMD... -- HYVE-ARGS...: the test guest's interactive
# shell on stdin/stdout: each CMD is typed once the shell has printed its
# prompt for it (the Nth "hyve> " for the Nth command), so a slow guest is
# waited for rather than typed at too early.  The last CMD should end the
# VM (poweroff).  Sets OUT, ERR, RC like run_hyve.
guest_shell() {
	local t=$1 cmds=() fifo pid wfd n=0 c start=$SECONDS
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		cmds+=("$1")
		shift
	done
	shift
	fifo=$TMP/shell.$RANDOM.in OUT=$TMP/shell.$RANDOM.out ERR=$TMP/shell.$RANDOM.err
	mkfifo "$fifo" || return 1
	: >"$OUT"
	timeout -k 5 "$t" "$HYVE" "$@" <"$fifo" >"$OUT" 2>"$ERR" &
	pid=$!
	exec {wfd}>"$fifo"   # meets hyve's open of its stdin
	for c in "${cmds[@]}"; do
		n=$((n + 1))
		while [ "$(grep -o 'hyve> ' "$OUT" | wc -l)" -lt "$n" ]; do
			if ! kill -0 "$pid" 2>/dev/null || [ $((SECONDS - start)) -ge "$t" ]; then
				break 2
			fi
			sleep 0.1
		done
		printf '%s\r' "$c" >&"$wfd"
	done
	wait "$pid"
	RC=$?
	exec {wfd}>&-
	rm -f "$fifo"
}
