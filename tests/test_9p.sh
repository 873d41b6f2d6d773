# Integration tests for virtio-9p (devices/virtio_9p.c, devices/p9_server.c)
# with the test guest's own 9P2000.L client (guests/testguest/v9p.c).
#
# Each test builds BASE/share (the share) next to BASE/outside (which the
# guest must never reach):
#   share/hello.txt      3000 random bytes (the guest prints their FNV-1a 64)
#   share/readme.txt     two lines of text (shell `cat`)
#   share/sub/up      -> ../..        (relative, leads to BASE)
#   share/etc         -> /etc         (absolute directory)
#   share/abs         -> /etc/passwd  (absolute file)
#   share/rel         -> ../outside   (relative, leads outside)
#   share/dotdot      -> ../../../../../../../../etc
#   outside/secret.txt
# The guest prints one "p9: ..." line per step; the host checks each line
# and then the share and outside/ from its side.

P9_EOL='[[:space:]]*$'   # the serial console ends lines with CR LF

# p9_py fnv FILE | patfnv N | checkpat FILE N
# The write pattern is guests/testguest/v9p.c's u_fill: byte i = i*31 + (i>>8) + 0x5a.
p9_py() {
	python3 - "$@" <<'PY'
import sys
def fnv(b):
    h = 0xcbf29ce484222325
    for c in b:
        h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
    return h
def pat(n):
    return bytes((i * 31 + (i >> 8) + 0x5a) & 0xff for i in range(n))
cmd = sys.argv[1]
if cmd == 'fnv':
    print('0x%016x' % fnv(open(sys.argv[2], 'rb').read()))
elif cmd == 'patfnv':
    print('0x%016x' % fnv(pat(int(sys.argv[2]))))
elif cmd == 'checkpat':
    got, want = open(sys.argv[2], 'rb').read(), pat(int(sys.argv[3]))
    if got != want:
        sys.exit('%s: %d bytes, differs from the pattern (%d bytes)' % (sys.argv[2], len(got), len(want)))
PY
}

p9_need() {
	have_kvm || return 77
	command -v python3 >/dev/null || { SKIP_REASON="python3 not installed"; return 77; }
}

# p9_share NAME: fresh BASE (path on stdout)
p9_share() {
	local base=$TMP/$1
	rm -rf "$base"
	mkdir -p "$base/share/sub" "$base/outside" || return 1
	head -c 3000 /dev/urandom >"$base/share/hello.txt" || return 1
	printf 'hello from the host\nsecond line\n' >"$base/share/readme.txt"
	ln -s ../.. "$base/share/sub/up"
	ln -s /etc "$base/share/etc"
	ln -s /etc/passwd "$base/share/abs"
	ln -s ../outside "$base/share/rel"
	ln -s ../../../../../../../../etc "$base/share/dotdot"
	echo "top secret" >"$base/outside/secret.txt"
	echo "$base"
}

# Everything under DIR: type, size, link target, content hash.
p9_tree() {
	(cd "$1" && find . -printf '%p %y %s %l\n' | sort && find . -type f -exec sha256sum {} + | sort)
}

# Nothing named p9-escape-probe may exist anywhere the guest aimed at.
p9_no_probe() {
	local f
	for f in "$1/p9-escape-probe" "$1/outside/p9-escape-probe" /etc/p9-escape-probe "$TMP/p9-escape-probe"; do
		if [ -e "$f" ] || [ -L "$f" ]; then
			echo "    escape: $f was created"
			return 1
		fi
	done
	if [ -n "$(find "$1" -name 'p9-escape-probe*' -print -quit)" ]; then
		echo "    escape: a p9-escape-probe entry exists under $1"
		return 1
	fi
}

# attach/walk/lcreate/write/read/readdir/mkdir/renameat/unlinkat/symlink
# round trips, checked against the host directory; escape attempts refused.
t_9p_rw() {
	p9_need || return 77
	local base share outside_before hello_sum
	base=$(p9_share p9rw) || return 1
	share=$base/share
	outside_before=$(p9_tree "$base/outside")
	hello_sum=$(sha256sum <"$share/hello.txt")
	run_guest 120 "test=p9" -s 5,virtio-9p,hostshare="$share"
	expect_rc 1 && expect_out '^PASS p9'"$P9_EOL" || return 1
	expect_out "^p9: 00:05\.0 \(1af4:10[04]9\) mount tag 'hostshare'$P9_EOL" || return 1
	expect_out "^p9: version 9P2000\.L msize 8192, attached \(root qid type 0x80\)$P9_EOL" || return 1
	expect_out "^p9: read hello\.txt 3000 bytes fnv=$(p9_py fnv "$share/hello.txt")$P9_EOL" || return 1
	expect_out "^p9: lcreate new\.txt, wrote 2000 bytes fnv=$(p9_py patfnv 2000)$P9_EOL" || return 1
	expect_out "^p9: read back new\.txt 2000 bytes, fnv matches$P9_EOL" || return 1
	expect_out "^p9: mkdir newdir ok$P9_EOL" || return 1
	expect_out "^p9: renameat new\.txt -> newdir/moved\.txt ok \(size 2000, old name ENOENT\)$P9_EOL" || return 1
	expect_out "^p9: symlink link -> newdir/moved\.txt ok, readlink 'newdir/moved\.txt'$P9_EOL" || return 1
	expect_out "^p9: unlinkat gone\.txt ok \(walk now ENOENT\)$P9_EOL" || return 1
	expect_out "^p9: unlinkat tmpdir \(AT_REMOVEDIR\) ok$P9_EOL" || return 1

	# The host's view of what the guest did.
	[ -d "$share/newdir" ] || { echo "    newdir is not a directory on the host"; return 1; }
	[ ! -e "$share/new.txt" ] || { echo "    new.txt still exists after renameat"; return 1; }
	p9_py checkpat "$share/newdir/moved.txt" 2000 || return 1
	[ "$(readlink "$share/link")" = newdir/moved.txt ] || { echo "    link: $(readlink "$share/link")"; return 1; }
	local f
	for f in gone.txt tmpdir p9-evil; do
		if [ -e "$share/$f" ] || [ -L "$share/$f" ]; then
			echo "    $f should be gone"
			return 1
		fi
	done
	[ "$(sha256sum <"$share/hello.txt")" = "$hello_sum" ] || { echo "    hello.txt changed"; return 1; }

	# readdir of the root = the host's listing (the escape steps leave the
	# root as readdir saw it).
	local guest host n
	guest=$(sed -n 's/^p9: dirent \(.*\) type [0-9]*[[:space:]]*$/\1/p' "$OUT" | sort)
	host=$(ls -A "$share" | sort)
	if [ "$guest" != "$host" ]; then
		echo "    readdir listing differs from the host directory:"
		diff <(echo "$guest") <(echo "$host") | sed 's/^/    | /'
		return 1
	fi
	n=$(echo "$host" | wc -l)
	expect_out "^p9: readdir /: $n entries in [0-9]+ requests$P9_EOL" || return 1

	# Escapes: each refused by the server, nothing outside touched.
	local what
	for what in 'walk \.\. and \.\./\.\./\.\.: stay at the share root' \
		'walk \.\./\.\./outside/secret\.txt \(\.\. above the root\): refused' \
		'walk etc/passwd \(etc -> /etc\): refused' \
		'walk rel/secret\.txt \(rel -> \.\./outside\): refused' \
		'walk dotdot/passwd \(dotdot -> [./]*etc\): refused' \
		'walk sub/up/outside/secret\.txt \(sub/up -> \.\./\.\.\): refused' \
		'open abs \(abs -> /etc/passwd\): refused \(ELOOP\), read EBADF' \
		'lcreate rel/p9-escape-probe \(rel -> \.\./outside\): refused \(ENOTDIR\)' \
		'mkdir \.\./p9-escape-probe: refused \(EINVAL\)' \
		'renameat hello\.txt -> \.\./p9-escape-probe: refused \(EINVAL\)' \
		'lcreate /etc/p9-escape-probe: refused \(EINVAL\)' \
		'walk p9-evil/passwd \(guest-made p9-evil -> /etc\): refused'; do
		expect_out "^p9: escape $what" || return 1
	done
	p9_no_probe "$base" || return 1
	if [ "$(p9_tree "$base/outside")" != "$outside_before" ]; then
		echo "    the directory outside the share changed"
		return 1
	fi
}

# ,ro: reads and readdir work, every modifying request gets EROFS, and the
# share is unchanged on the host.
t_9p_ro() {
	p9_need || return 77
	local base share before
	base=$(p9_share p9ro) || return 1
	share=$base/share
	before=$(p9_tree "$base")
	run_guest 120 "test=p9 p9ro=1" -s 5,virtio-9p,hostshare="$share",ro
	expect_rc 1 && expect_out '^PASS p9'"$P9_EOL" || return 1
	expect_out "^p9: read hello\.txt 3000 bytes fnv=$(p9_py fnv "$share/hello.txt")$P9_EOL" || return 1
	local n
	n=$(ls -A "$share" | wc -l)
	expect_out "^p9: readdir /: $n entries in [0-9]+ requests$P9_EOL" || return 1
	local op
	for op in lcreate mkdir renameat unlinkat symlink link 'setattr size 0' 'lopen O_RDWR' \
		'lopen O_WRONLY\|O_TRUNC' write; do
		expect_out "^p9: ro: $op refused \(EROFS\)$P9_EOL" || return 1
	done
	expect_out "^p9: ro: hello\.txt still 3000 bytes$P9_EOL" || return 1
	if [ "$(p9_tree "$base")" != "$before" ]; then
		echo "    read-only share modified"
		return 1
	fi
}

# The demo shell's ls and cat on the share.
t_9p_shell() {
	p9_need || return 77
	local base
	base=$(p9_share p9shell) || return 1
	guest_shell 90 ls 'ls sub' 'cat readme.txt' 'cat nothere' poweroff -- -m 128M -l com1,stdio \
		-o boot.kernel="$GUEST" -s 5,virtio-9p,hostshare="$base/share" "$(vm_name vm)"
	expect_rc 1 || return 1
	local line
	for line in 'hello\.txt' 'readme\.txt' 'sub/' 'etc@' 'abs@' 'up@' 'hello from the host' 'second line' \
		'cat: nothere: ENOENT'; do
		expect_out "^$line$P9_EOL" || return 1
	done
}

# test=p9work (the checkpoint workload) runs to the end on its own: one
# open fid written and read back per round, the file's FNV at the end.
t_9p_work() {
	p9_need || return 77
	local base
	base=$(p9_share p9work) || return 1
	run_guest 120 "test=p9work rounds=6 pause_ms=0" -s 5,virtio-9p,work="$base/share"
	expect_rc 1 && expect_out '^PASS p9work'"$P9_EOL" || return 1
	expect_out "^p9work: round 5 ok$P9_EOL" || return 1
	expect_out "^p9work: work\.txt 1536 bytes fnv=$(p9_py patfnv 1536)$P9_EOL" || return 1
	p9_py checkpat "$base/share/work.txt" 1536
}

# Checkpoint in the middle of test=p9work (requests back to back, so the
# checkpoint usually lands with one in flight), then restore twice from the
# same file in new processes: the open fid and the directory fid carry on
# (devices/p9_state.c), the workload ends with the right file.
t_9p_checkpoint() {
	p9_need || return 77
	local hyvectl=${HYVECTL:-$(dirname -- "$HYVE")/hyvectl}
	[ -x "$hyvectl" ] || { SKIP_REASON="hyvectl not built"; return 77; }
	local base sock=$TMP/p9ck.sock ck=$TMP/p9ck.ckpt out1=$TMP/p9ck1.out rounds=1000 i last pid
	base=$(p9_share p9ck) || return 1
	timeout -k 5 120 "$HYVE" -l com1,stdio -o lpc.pc-testdev=true -o boot.kernel="$GUEST" \
		-o boot.cmdline="test=p9work rounds=$rounds pause_ms=0" -o control.socket="$sock" \
		-s 5,virtio-9p,work="$base/share" p9ck </dev/null >"$out1" 2>"$TMP/p9ck1.err" &
	pid=$!
	for i in $(seq 1 600); do
		grep -q '^p9work: round 10 ok' "$out1" && break
		sleep 0.1
	done
	if ! "$hyvectl" --socket="$sock" --suspend="$ck" >"$TMP/p9ck.hctl" 2>&1; then
		echo "    hyvectl --suspend failed:"
		sed 's/^/    | /' "$TMP/p9ck.hctl"
		kill "$pid" 2>/dev/null
		wait "$pid"
		return 1
	fi
	wait "$pid"
	RC=$? OUT=$out1 ERR=$TMP/p9ck1.err
	expect_rc 1 || return 1
	if grep -q '^PASS p9work' "$out1"; then
		echo "    the workload ended before the checkpoint"
		return 1
	fi
	last=$(sed -n 's/^p9work: round \([0-9]*\) ok.*/\1/p' "$out1" | tail -n 1)
	[ -n "$last" ] || { echo "    no round completed before the checkpoint"; show; return 1; }
	# The checkpoint may have cut a line in two ("p9work: roun" | "d 16 ok"):
	# the restored guest prints the rest of it, so join them.
	local n cut=""
	[ -n "$(tail -c 1 "$out1")" ] && cut=$(tail -n 1 "$out1")
	for n in 1 2; do
		run_hyve 120 -r "$ck" -o control.socket=none -o snapshot.trust_config=true
		expect_rc 1 && expect_out '^PASS p9work'"$P9_EOL" || return 1
		# Goes on from the next round, without booting again.
		if ! { printf '%s' "$cut"; cat "$OUT"; } | grep -qE "round $((last + 1)) ok$P9_EOL"; then
			echo "    restore $n: no 'round $((last + 1)) ok' after the checkpoint's round $last"
			show
			return 1
		fi
		if grep -q 'hyve-testguest: hello' "$OUT"; then
			echo "    restore $n: the guest booted again"
			return 1
		fi
		expect_out "^p9work: work\.txt $((rounds * 256)) bytes fnv=$(p9_py patfnv $((rounds * 256)))$P9_EOL" || return 1
		p9_py checkpat "$base/share/work.txt" $((rounds * 256)) || return 1
	done
	echo "    checkpoint after round $last, restored twice"
}

# -o security.landlock: after set-up hyve opens only what its devices
# declared (the share) and security.landlock_rw (a checkpoint directory).
# The guest keeps writing the share; a checkpoint into the allowed
# directory works, one elsewhere is refused (Permission denied) and the
# VM runs on.
t_9p_landlock() {
	p9_need || return 77
	# The control socket in a directory of its own: hyve may remove files there.
	local base sock=$TMP/p9ll-run/ctl.sock ckdir=$TMP/p9ll-ck other=$TMP/p9ll-other n
	base=$(p9_share p9ll) || return 1
	mkdir -p "$ckdir" "$other" "$TMP/p9ll-run"
	vm_start -l com1,stdio -o boot.kernel="$GUEST" -o boot.cmdline="test=p9work rounds=2000 pause_ms=20" \
		-o control.socket="$sock" -o security.landlock=true -o security.landlock_rw="$ckdir" \
		-s 5,virtio-9p,work="$base/share" "$(vm_name p9ll)"
	wait_serial 60 '^p9work: round 3 ok' || { vm_stop; return 1; }
	local ok=1
	if "$HYVECTL" --socket="$sock" --checkpoint="$other/x.ck" >"$TMP/p9ll.ctl" 2>&1 || ! grep -qi 'permission denied' "$TMP/p9ll.ctl"; then
		echo "    a checkpoint outside security.landlock_rw was not refused:"; sed 's/^/    | /' "$TMP/p9ll.ctl"; ok=0
	fi
	[ -z "$(ls -A "$other")" ] || { echo "    files appeared in $other: $(ls -A "$other")"; ok=0; }
	"$HYVECTL" --socket="$sock" --checkpoint="$ckdir/ok.ck" >"$TMP/p9ll.ctl" 2>&1 && [ -s "$ckdir/ok.ck" ] ||
		{ echo "    a checkpoint into security.landlock_rw failed:"; sed 's/^/    | /' "$TMP/p9ll.ctl"; ok=0; }
	n=$(grep -c '^p9work: round [0-9]* ok' "$OUT")
	mg_wait_lines "$OUT" 0 '^p9work: round [0-9]+ ok' $((n + 3)) 60 ||
		{ echo "    the guest stopped writing its share"; show_serial; ok=0; }
	vm_stop
	grep -q 'FAIL' "$OUT" && { show_serial; ok=0; }
	[ $ok = 1 ] && p9_py checkpat "$base/share/work.txt" "$(stat -c %s "$base/share/work.txt")" &&
		echo "    share written, checkpoint in the allowed directory, the other refused; guest ran on"
}
