# bhyve drop-in: bhyve(8) and vm-bhyve command lines, bhyve_config(5)
# files and keys, the restore recipe, warnings, make install and the man
# pages.  Everything here runs without /dev/kvm: hyve checks its whole
# configuration (and -o config.dump=true prints it) before it opens KVM.

# bhyve_dump ARGS...: hyve ARGS -o config.dump=true, expecting status 0.
bhyve_dump() {
	run_hyve 10 "$@" -o config.dump=true
	expect_rc 0
}

# The number of lines of stderr matching a regular expression.
err_count() { grep -cE -- "$1" "$ERR"; }

expect_no_err() {
	if grep -qE -- "$1" "$ERR"; then
		echo "    expected stderr not to match: $1"
		show
		return 1
	fi
}

# bhyve(8)'s EXAMPLES, as they are (with a Linux kernel to boot).
t_bhyve_man_example_vm1() {
	bhyve_dump -c 2 -m 1G -H -P -A -s 0,hostbridge -s 31,lpc -s 2,virtio-blk,/path/disk.img \
		-s 3,virtio-net,tap0 -l com1,stdio vm || return 1
	expect_out '^cpus=2$' && expect_out '^memory.size=1G$' && expect_out '^x86.vmexit_on_hlt=true$' &&
	expect_out '^x86.vmexit_on_pause=true$' && expect_out '^acpi_tables=true$' &&
	expect_out '^pci.0.0.0.device=hostbridge$' && expect_out '^pci.0.31.0.device=lpc$' &&
	expect_out '^pci.0.2.0.device=virtio-blk$' && expect_out '^pci.0.2.0.path=/path/disk.img$' &&
	expect_out '^pci.0.3.0.device=virtio-net$' && expect_out '^pci.0.3.0.backend=tap0$' &&
	expect_out '^lpc.com1.path=stdio$' && expect_out '^name=vm$' || return 1
	[ ! -s "$ERR" ] || { echo "    expected no messages"; show; return 1; }
}

t_bhyve_man_example_bigvm() {
	# Three functions of slot 2, the lpc at slot 1 (no default one at 31).
	bhyve_dump -s 0,hostbridge -s 1,lpc -s 2:0,virtio-net,tap0 -s 2:1,virtio-net,tap1 \
		-s 2:2,virtio-net,tap2,mac=00:be:fa:76:45:00 -s 3,virtio-blk,/my/image -l com1,stdio \
		-H -P -m 2G bigvm || return 1
	expect_out '^pci.0.1.0.device=lpc$' && expect_out '^pci.0.2.1.backend=tap1$' &&
	expect_out '^pci.0.2.2.mac=00:be:fa:76:45:00$' && expect_out '^pci.0.3.0.path=/my/image$' || return 1
	if grep -q '^pci.0.31.0' "$OUT"; then
		echo "    a default lpc was added beside -s 1,lpc"; show; return 1
	fi
}

# What vm-bhyve runs (vm-bhyve's lib/vm-run: -AHP, -U, -u for utctime, -w
# for ignore_bad_msr, -S for wired memory, -p for cpu pinning).
t_bhyve_vm_bhyve_line() {
	local uuid=9a1fa8f1-4b4c-11ee-a1b2-589cfc0b2a41
	bhyve_dump -c 2 -m 512M -AHP -U $uuid -u -w -S -p 0:0 -p 1:1 \
		-s 0,hostbridge -s 31,lpc -s 4:0,virtio-blk,/vm/guest/disk0.img \
		-s 5:0,virtio-net,tap0,mac=58:9c:fc:0b:2a:41 -l com1,stdio guest || return 1
	expect_out "^uuid=$uuid\$" && expect_out '^rtc.use_localtime=false$' && expect_out '^x86.strictmsr=false$' &&
	expect_out '^memory.wired=true$' && expect_out '^vcpu.0.cpuset=0$' && expect_out '^vcpu.1.cpuset=1$' &&
	expect_out '^pci.0.4.0.path=/vm/guest/disk0.img$' && expect_out '^pci.0.5.0.mac=58:9c:fc:0b:2a:41$' || return 1
	# -w gets its note (KVM decides about MSRs); nothing is an error.
	expect_err '^hyve: note: x86.strictmsr=false' && expect_no_err 'error'
}

# A bhyve_config(5) file, with keys hyve implements, keys it accepts, and
# bhyve keys it does not know (kept, warned about).
t_bhyve_config_file() {
	local k=$TMP/bhyve.conf
	cat >"$k" <<-'EOF'
	# written for bhyve
	name=vm7
	cpus=2
	memory.size=1073741824
	x86.vmexit_on_hlt=true
	x86.strictmsr=false
	x86.mptable=false
	destroy_on_poweroff=true
	virtio_msix=true
	uuid=6ba7b810-9dad-11d1-80b4-00c04fd430c8
	rtc.use_localtime=false
	pci.0.0.0.device=hostbridge
	pci.0.0.0.pcireg.vendor=0x1275
	pci.0.0.0.pcireg.device=0x1275
	pci.0.4.0.device=virtio-blk
	pci.0.4.0.path=/dev/zvol/tank/%(name)
	pci.0.4.0.sync=true
	pci.0.4.0.nocache=false
	pci.0.5.0.device=virtio-9p
	pci.0.5.0.sharename=src
	pci.0.5.0.path=/usr/src
	pci.0.5.0.ro=true
	pci.0.31.0.device=lpc
	lpc.com1.path=stdio
	lpc.pcireg.vendor=0x8086
	bios.vendor=BHYVE
	gdb.port=0
	EOF
	bhyve_dump -k "$k" || return 1
	expect_out '^pci.0.4.0.path=/dev/zvol/tank/vm7$' && expect_out '^memory.size=1073741824$' &&
	expect_out '^pci.0.5.0.sharename=src$' && expect_out '^pci.0.4.0.sync=true$' &&
	expect_out '^bios.vendor=BHYVE$' && expect_out '^gdb.port=0$' || return 1
	# gdb.port=0 is bhyve's "no debugger" (hyve's -G key), so only bios.vendor is unknown.
	expect_err "^hyve: warning: config: unknown key 'bios.vendor' \\(kept, ignored\\)$" || return 1
	[ "$(err_count 'warning')" -eq 1 ] && [ "$(err_count 'error')" -eq 0 ] ||
		{ echo "    expected exactly the one unknown-key warning"; show; return 1; }
}

t_bhyve_unknown_keys_kept() {
	bhyve_dump -o some.future.key=1 -o other=x vm || return 1
	expect_out '^some.future.key=1$' && expect_out '^other=x$' &&
	expect_err "^hyve: warning: config: unknown key 'some.future.key' \\(kept, ignored\\)$" &&
	expect_err "^hyve: warning: config: unknown key 'other' \\(kept, ignored\\)$"
}

# The decision for "a typo in a key hyve knows the prefix of": as bhyve, an
# option the model does not have is refused by the -s parser, and kept with
# a warning as a -k/-o key (bhyve ignores unknown variables).  Bad values of
# known keys stay errors either way.
t_bhyve_unknown_option_s_vs_o() {
	run_hyve 10 -s 4,virtio-rnd,colour=red -o boot.kernel=/k vm
	expect_one_error 4 "pci.0.4.0.colour: unknown option 'colour' for device model virtio-rnd \\(-s 4,virtio-rnd,colour=red\\)" || return 1
	bhyve_dump -s 4,virtio-rnd -o pci.0.4.0.colour=red vm || return 1
	expect_err "^hyve: warning: config: unknown key 'pci.0.4.0.colour' \\(kept, ignored\\)$" || return 1
	# An option for an empty slot: kept, warned about.
	bhyve_dump -o pci.0.9.0.path=/x vm || return 1
	expect_err "unknown key 'pci.0.9.0.path'" || return 1
	run_hyve 10 -s 4,virtio-rnd -o pci.0.4.0.bootindex=first -o boot.kernel=/k vm
	expect_one_error 4 "pci.0.4.0.bootindex: bad value 'first'"
}

# memory.size as bhyve: expand_number, a plain number is bytes, but one
# under 1 MiB is MiB (so -m 512 is 512 MiB).
t_bhyve_memory_size_units() {
	bhyve_dump -m 512 vm && expect_out '^memory.size=512$' || return 1
	bhyve_dump -o memory.size=2097152 vm || return 1   # 2 MiB in bytes: the minimum
	bhyve_dump -o memory.size=0x80000000 vm || return 1
	bhyve_dump -m 2g vm || return 1
	run_hyve 10 -o memory.size=1048576 -o boot.kernel=/k vm   # 1 MiB in bytes
	expect_one_error 4 "memory.size: bad value '1048576': at least 2M" || return 1
	bhyve_dump -m 1048575 vm || return 1   # MiB: 1 TiB - 1 MiB is fine ...
	expect_out '^memory\.size=1048575$' || return 1
	run_hyve 10 -m 1025G -o boot.kernel=/k vm     # ... more than 1 TiB is not
	expect_one_error 4 "memory.size: bad value '1025G': more than 1T"
}

t_bhyve_memory_more_than_host() {
	local kib
	kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
	if [ -z "$kib" ] || [ "$kib" -ge $((1024 * 1024 * 1024)) ]; then
		SKIP_REASON="host has 1 TiB of RAM or more"; return 77
	fi
	bhyve_dump -m 1T vm || return 1
	expect_err "^hyve: warning: config: memory.size: 1024G is more than this host's RAM" || return 1
	[ "$(wc -l <"$ERR")" -eq 1 ] || { echo "    expected one line"; show; return 1; }
	bhyve_dump -m 64M vm && expect_no_err 'more than this host'
}

t_bhyve_variable_expansion() {
	bhyve_dump -o pool=tank -o disk=/dev/zvol/%\(pool\)/%\(name\) -o both=%\(disk\):%\(name\) \
		-o pct=100%%%%-%\(name\) -o plain=50% web1 || return 1
	expect_out '^disk=/dev/zvol/tank/web1$' && expect_out '^both=/dev/zvol/tank/web1:web1$' &&
	expect_out '^pct=100%%-web1$' && expect_out '^plain=50%$' || return 1
	# In a device option too.
	bhyve_dump -o dir=/vm -s 2,virtio-blk,%\(dir\)/%\(name\).img db || return 1
	expect_out '^pci.0.2.0.path=/vm/db.img$' || return 1
	run_hyve 10 -o disk=/dev/%\(nothere\) -o boot.kernel=/k vm
	expect_one_error 4 "config: disk: %\\(nothere\\) is not set" || return 1
	run_hyve 10 -o a=%\(b\) -o b=x%\(c\) -o c=%\(a\) -o d=%\(a\) -o boot.kernel=/k vm
	expect_one_error 4 "config: a: reference loop a -> b -> c -> a" || return 1
	run_hyve 10 -o a=%\(open -o boot.kernel=/k vm
	expect_one_error 4 "config: a: unterminated %\\("
}

t_bhyve_all_errors_reported() {
	run_hyve 10 -c 0 -m 1Q -s 3,frobnicator -U not-a-uuid -o lpc.pc-testdev=maybe vm
	expect_rc 4 || return 1
	local n
	n=$(grep -c '^hyve: error:' "$ERR")
	[ "$n" -eq 6 ] || { echo "    expected 6 error lines (one per problem), got $n"; show; return 1; }
	expect_err "unknown device model 'frobnicator'" && expect_err "memory.size: bad value '1Q'" &&
	expect_err "uuid: bad value 'not-a-uuid'" && expect_err "lpc.pc-testdev: bad value 'maybe'" &&
	expect_err 'cpus: 0 vCPUs' && expect_err 'boot.kernel: no kernel given'
}

t_bhyve_config_dump_validates_first() {
	run_hyve 10 -o x86.strictio=sometimes -o config.dump=true vm
	expect_one_error 4 "x86.strictio: bad value 'sometimes'" || return 1
	[ ! -s "$OUT" ] || { echo "    a configuration with errors was dumped"; show; return 1; }
}

t_bhyve_flags_become_keys() {
	echo data >"$TMP/fwcfg.bin"
	bhyve_dump -a -C -D -e -W -Y -K de -u -f opt/org.test/a,string=hello \
		-f opt/org.test/b,file="$TMP/fwcfg.bin" vm || return 1
	expect_out '^x86.x2apic=false$' && expect_out '^memory.guest_in_core=true$' &&
	expect_out '^destroy_on_poweroff=true$' && expect_out '^x86.strictio=true$' &&
	expect_out '^virtio_msix=false$' && expect_out '^x86.mptable=false$' && expect_out '^keyboard.layout=de$' &&
	expect_out '^rtc.use_localtime=false$' && expect_out '^fw_cfg.file.0.name=opt/org.test/a$' &&
	expect_out '^fw_cfg.file.0.string=hello$' && expect_out '^fw_cfg.file.1.name=opt/org.test/b$' &&
	expect_out "^fw_cfg.file.1.path=$(realpath "$TMP")/fwcfg.bin\$" || return 1
	# What hyve does not act on is said once each, as a note.
	expect_err '^hyve: note: virtio_msix=false' && expect_err '^hyve: note: keyboard.layout' || return 1
	bhyve_dump -x vm && expect_out '^x86.x2apic=true$' && expect_err '^hyve: note: x86.x2apic=true'
}

t_bhyve_fwcfg_bad() {
	run_hyve 10 -f opt/x,file="$TMP/does-not-exist" -o boot.kernel=/k vm
	expect_one_error 4 '-f opt/x,file=.*does-not-exist: No such file' || return 1
	run_hyve 10 -f opt/x,string=a -f opt/x,string=b -o boot.kernel=/k vm
	expect_one_error 4 "fw_cfg file 'opt/x' given twice" || return 1
	run_hyve 10 -f justaname -o boot.kernel=/k vm
	expect_one_error 4 'expected name,string=DATA or name,file=PATH'
}

t_bhyve_unsupported_flags() {
	run_hyve 10 -n 0,1G,0 -o boot.kernel=/k vm
	expect_one_error 4 '^hyve: error: bhyve option -n is not supported by hyve' || return 1
	[ "$(wc -l <"$ERR")" -eq 1 ] || { echo "    expected one line, not a usage text"; show; return 1; }
	run_hyve 10 -l tpm,swtpm,/var/run/swtpm.sock -o boot.kernel=/k vm
	expect_one_error 4 'bhyve option -l tpm is not supported by hyve' || return 1
	# vm-bhyve's UEFI line: a ROM that is not on this host is named.
	run_hyve 10 -l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd vm
	expect_one_error 4 'boot ROM /usr/local/share/uefi-firmware/BHYVE_UEFI.fd: No such file or directory' || return 1
	bhyve_dump -l pc-testdev vm && expect_out '^lpc.pc-testdev=true$' || return 1
	run_hyve 10 -Z -o boot.kernel=/k vm
	expect_one_error 4 'unknown option -Z' || return 1
	[ "$(wc -l <"$ERR")" -eq 1 ] || { echo "    expected one line, not a usage text"; show; return 1; }
	run_hyve 10 -o boot.kernel=/k vm -c
	expect_one_error 4 'option -c needs an argument'
}

t_bhyve_uuid_checked() {
	bhyve_dump -U 6BA7B810-9DAD-11D1-80B4-00C04FD430C8 vm || return 1
	local bad
	for bad in 6ba7b810-9dad-11d1-80b4-00c04fd430c 6ba7b8109dad11d180b400c04fd430c8 \
		6ba7b810-9dad-11d1-80b4-00c04fd430cg "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}"; do
		run_hyve 10 -U "$bad" -o boot.kernel=/k vm
		expect_one_error 4 "uuid: bad value" || return 1
	done
}

t_bhyve_cpu_pinning() {
	local ncpu
	ncpu=$(getconf _NPROCESSORS_CONF)
	bhyve_dump -c 2 -p 0:0 -p 1:0 -p 1:$((ncpu - 1)) vm || return 1
	expect_out '^vcpu.0.cpuset=0$' && expect_out "^vcpu.1.cpuset=0,$((ncpu - 1))\$" || return 1
	bhyve_dump -c 2 -o vcpu.1.cpuset=0-$((ncpu - 1)) vm || return 1
	run_hyve 10 -p 0:$ncpu -o boot.kernel=/k vm
	expect_one_error 4 "vcpu.0.cpuset: bad value '$ncpu': host CPU $ncpu does not exist" || return 1
	run_hyve 10 -c 2 -p 2:0 -o boot.kernel=/k vm
	expect_one_error 4 'vcpu.2.cpuset: the VM has no vCPU 2' || return 1
	run_hyve 10 -p 0-1 -o boot.kernel=/k vm
	expect_one_error 4 '-p 0-1: expected vcpu:hostcpu' || return 1
	run_hyve 10 -o vcpu.0.cpuset=1-0 -o boot.kernel=/k vm
	expect_one_error 4 'vcpu.0.cpuset: bad value'
}

# -S: RLIMIT_MEMLOCK too small (and no CAP_IPC_LOCK) is one clear error
# before anything is created.
t_bhyve_wired_memlock() {
	local pre=()
	if [ "$(id -u)" -eq 0 ]; then
		if ! command -v setpriv >/dev/null; then
			SKIP_REASON="root without setpriv (cannot drop CAP_IPC_LOCK)"; return 77
		fi
		pre=(setpriv --bounding-set -ipc_lock --inh-caps -ipc_lock)
	fi
	OUT=$TMP/out.$RANDOM ERR=$TMP/err.$RANDOM
	(ulimit -l 1024 && exec "${pre[@]}" "$HYVE" -S -m 512M -o boot.kernel=/k vm) </dev/null >"$OUT" 2>"$ERR"
	RC=$?
	expect_one_error 4 'memory.wired \(-S\): cannot lock 512M of guest RAM: RLIMIT_MEMLOCK is 1024 KiB'
}

t_bhyve_function_without_zero() {
	bhyve_dump -s 3:1,virtio-rnd vm || return 1
	expect_err "^hyve: warning: config: pci.0.3.1: function 1 of slot 3 has no function 0 beside it: the guest will not see it" || return 1
	bhyve_dump -s 3:0,virtio-rnd -s 3:1,virtio-rnd vm && expect_no_err 'no function 0'
}

t_bhyve_block_options() {
	bhyve_dump -s 2,virtio-blk,/d.img,sync,nocache,ro,sectorsize=4096,bootindex=1 vm || return 1
	expect_out '^pci.0.2.0.sync=true$' && expect_out '^pci.0.2.0.bootindex=1$' &&
	expect_err '^hyve: note: pci.0.2.0.bootindex: without -l bootrom hyve boots boot.kernel directly' || return 1
	bhyve_dump -s 2,virtio-blk,/d.img,nodelete vm || return 1
	expect_err '^hyve: warning: config: pci.0.2.0.nodelete: not implemented' || return 1
	run_hyve 10 -s 2,virtio-blk,/d.img,sync=true,direct=false -o boot.kernel=/k vm
	expect_one_error 4 'pci.0.2.0.sync: contradicts .direct' || return 1
	run_hyve 10 -s 2,virtio-blk,/d.img,bootindex=first -o boot.kernel=/k vm
	expect_one_error 4 "pci.0.2.0.bootindex: bad value 'first'"
}

t_bhyve_9p_sharename() {
	bhyve_dump -s 5,virtio-9p,sharename=/usr/src vm || return 1
	expect_out '^pci.0.5.0.tag=sharename$' && expect_out '^pci.0.5.0.path=/usr/src$' || return 1
	bhyve_dump -o pci.0.5.0.device=virtio-9p -o pci.0.5.0.sharename=src -o pci.0.5.0.path=/usr/src vm || return 1
	run_hyve 10 -s 5,virtio-9p,src=/usr/src -o pci.0.5.0.sharename=other -o boot.kernel=/k vm
	expect_one_error 4 'pci.0.5.0.sharename: contradicts .tag'
}

t_bhyve_pcireg() {
	bhyve_dump -s 3,virtio-rnd,pcireg.subvendor=0x1af4,pcireg.revid=2 -o lpc.pcireg.device=0x7000 vm || return 1
	expect_out '^pci.0.3.0.pcireg.subvendor=0x1af4$' && expect_out '^pci.0.3.0.pcireg.revid=2$' || return 1
	run_hyve 10 -s 3,virtio-rnd,pcireg.vendor=0x12345 -o boot.kernel=/k vm
	expect_one_error 4 "pcireg.vendor: bad value '0x12345': expected a number up to 0xffff" || return 1
	run_hyve 10 -s 3,virtio-rnd,pcireg.revid=256 -o boot.kernel=/k vm
	expect_one_error 4 "pcireg.revid: bad value '256'" || return 1
	run_hyve 10 -o lpc.pcireg.vendor=host -o boot.kernel=/k vm
	expect_one_error 4 "lpc.pcireg.vendor: bad value 'host'" || return 1
	run_hyve 10 -s 3,virtio-rnd,pcireg.colour=1 -o boot.kernel=/k vm
	expect_one_error 4 "unknown option 'pcireg.colour'"
}

# Paths from the command line become absolute (directory part resolved):
# a checkpoint keeps them and may be restored from elsewhere.
t_bhyve_paths_absolute() {
	local d=$TMP/work.$RANDOM
	mkdir -p "$d/sub" "$d/share"
	ln -s "$d/sub" "$d/link"
	pushd "$d" >/dev/null || return 1
	bhyve_dump -s 2,virtio-blk,link/disk.img -s 3,virtio-9p,src=share/ -s 4,virtio-9p,here=. \
		-s 5,virtio-console,c1=sock.1,c2=sock=sock.2,c3=tcp=127.0.0.1:5555 -l com1,file=logs/com1.log \
		-l com2,stdio -l com3,tcp=:4444 -l com4,sub/tty -o pci.0.6.0.device=virtio-blk \
		-o pci.0.6.0.path=/abs/x.img vm
	local rc=$?
	popd >/dev/null || return 1
	[ $rc -eq 0 ] || return 1
	local r
	r=$(realpath "$d")
	expect_out "^pci.0.2.0.path=$r/sub/disk.img\$" && expect_out "^pci.0.3.0.path=$r/share\$" &&
	expect_out "^pci.0.4.0.path=$r\$" && expect_out "^pci.0.5.0.port.0.path=$r/sock.1\$" &&
	expect_out "^pci.0.5.0.port.1.path=sock=$r/sock.2\$" && expect_out '^pci.0.5.0.port.2.path=tcp=127.0.0.1:5555$' &&
	expect_out "^lpc.com1.path=file=$r/logs/com1.log\$" && expect_out '^lpc.com2.path=stdio$' &&
	expect_out '^lpc.com3.path=tcp=:4444$' && expect_out "^lpc.com4.path=$r/sub/tty\$" &&
	expect_out '^pci.0.6.0.path=/abs/x.img$'
}

# Backends beyond bhyve(8)'s stdio and tty paths (devices/chardev.h):
# -l com1,tcp=ADDR:PORT, bhyve's -l com1,/dev/nmdm0A form (/dev/pts/N on
# Linux), the same for virtio-console ports; stored as given (nothing is
# opened for a dump).  Bad ones: one error line naming the key.
t_bhyve_com_tcp_and_tty() {
	local port
	port=$(free_port)
	bhyve_dump -l com1,tcp=127.0.0.1:$port -l com2,/dev/pts/7 -l "com3,tcp=[::1]:$port" \
		-s 5,virtio-console,a=tcp=127.0.0.1:$((port + 1)),b=/dev/pts/8 -o boot.kernel=/k vm || return 1
	expect_out "^lpc.com1.path=tcp=127.0.0.1:$port\$" && expect_out '^lpc.com2.path=/dev/pts/7$' &&
	expect_out "^lpc.com3.path=tcp=\\[::1\\]:$port\$" &&
	expect_out "^pci.0.5.0.port.0.path=tcp=127.0.0.1:$((port + 1))\$" &&
	expect_out '^pci.0.5.0.port.1.path=/dev/pts/8$' || return 1
	run_hyve 10 -l com1,tcp=127.0.0.1 -o boot.kernel=/k vm
	expect_one_error 4 "lpc.com1.path: bad value 'tcp=127.0.0.1': expected tcp=ADDR:PORT" || return 1
	run_hyve 10 -l com1,tcp=localhost.example:23 -o boot.kernel=/k vm
	expect_one_error 4 "lpc.com1.path: .*bad address 'localhost.example'" || return 1
	run_hyve 10 -l com2,tcp=127.0.0.1:65536 -o boot.kernel=/k vm
	expect_one_error 4 "lpc.com2.path: .*bad port '65536'" || return 1
	run_hyve 10 -l com1,nmdm0A -o boot.kernel=/k vm
	expect_one_error 4 "lpc.com1.path: bad value 'nmdm0A': expected stdio, .*tcp=ADDR:PORT or a tty path" || return 1
	run_hyve 10 -s 5,virtio-console,a=tcp=:0 -o boot.kernel=/k vm
	expect_one_error 4 "pci.0.5.0.port.0 \\(port 'a'\\): bad port '0'"
}

# A checkpoint with the given configuration (config section, an empty
# memory section and end), enough for hyve -r to read its configuration.
make_checkpoint() {
	python3 - "$1" "$2" <<-'EOF'
	import struct, sys, zlib
	def crc(b): return zlib.crc32(b) & 0xffffffff
	out, cfg = sys.argv[1], open(sys.argv[2], 'rb').read()
	f = bytearray()
	h = b'HYVECKPT' + struct.pack('<HHI', 1, 0, 64) + b'test'.ljust(32, b'\0') + struct.pack('<QI', 0, 0)
	f += h + struct.pack('<I', crc(h))
	def section(name, data, flags=0, align=False):
	    off = len(f) + 64
	    if align:
	        off = (off + 4095) & ~4095
	    s = name.encode().ljust(32, b'\0') + struct.pack('<IIQQI', 1, flags, len(data), off, crc(data))
	    f.extend(s + struct.pack('<I', crc(s)))
	    f.extend(b'\0' * (off - len(f)) + data)
	section('config', cfg)
	section('memory', struct.pack('<II', 0, 4096).ljust(4096, b'\0'), flags=3, align=True)
	section('end', b'')
	open(out, 'wb').write(f)
	EOF
}

# bhyve's restore recipe: the same -s/-l/-c/-m options again, from any
# directory; the checkpoint's slots are re-specified, not doubled.
t_bhyve_restore_recipe() {
	local d=$TMP/restore.$RANDOM
	mkdir -p "$d/vm" "$d/elsewhere"
	local vmdir
	vmdir=$(realpath "$d/vm")
	cat >"$d/cfg" <<-EOF
	name=vm
	cpus=2
	memory.size=1G
	pci.0.0.0.device=hostbridge
	pci.0.2.0.device=virtio-blk
	pci.0.2.0.path=$vmdir/disk.img
	pci.0.3.0.device=virtio-net
	pci.0.3.0.backend=tap0
	pci.0.31.0.device=lpc
	lpc.com1.path=stdio
	vcpu.1.cpuset=0
	EOF
	make_checkpoint "$d/vm.ckpt" "$d/cfg" || { echo "    cannot write the checkpoint"; return 1; }
	pushd "$d/elsewhere" >/dev/null || return 1
	bhyve_dump -r ../vm.ckpt -c 2 -m 1G -s 0,hostbridge -s 31,lpc -s 2,virtio-blk,../vm/disk.img \
		-s 3,virtio-net,tap0 -l com1,stdio -p 0:0 vm
	local rc=$?
	popd >/dev/null || return 1
	[ $rc -eq 0 ] || return 1
	expect_out "^pci.0.2.0.path=$vmdir/disk.img\$" && expect_out '^pci.0.3.0.backend=tap0$' &&
	expect_out '^cpus=2$' && expect_no_err 'error' || return 1
	# Host CPU numbers are this host's: the checkpoint's pinning is not taken, -p is.
	expect_out '^vcpu.0.cpuset=0$' || return 1
	if grep -q '^vcpu.1.cpuset' "$OUT"; then
		echo "    the checkpoint's vcpu.1.cpuset was taken"; show; return 1
	fi
	# Another model in a slot of the checkpoint, or one slot twice: errors.
	run_hyve 10 -r "$d/vm.ckpt" -s 2,virtio-net,tap1 -o pci.0.2.0.path=/a.img -o pci.0.3.0.backend=tap0 vm
	expect_one_error 4 'pci.0.2.0: slot 2:0 holds a virtio-blk in the restored VM, not a virtio-net' || return 1
	run_hyve 10 -r "$d/vm.ckpt" -s 2,virtio-blk,/a.img -s 2,virtio-blk,/b.img -o pci.0.3.0.backend=tap0 vm
	expect_one_error 4 'pci.0.2.0: slot 2:0 already in use' || return 1
	# Without the options, the host-side keys are still asked for (docs/security.md).
	run_hyve 10 -r "$d/vm.ckpt" vm
	expect_one_error 4 'names host resources that are not taken from it: pci.0.2.0.path, pci.0.3.0.backend'
}

t_bhyve_make_install_man() {
	local inst=$TMP/inst
	if ! make -s install PREFIX="$inst" >"$TMP/install.log" 2>&1; then
		echo "    make install failed:"; tail -5 "$TMP/install.log" | sed 's/^/    | /'; return 1
	fi
	local f
	for f in sbin/hyve sbin/hyvectl share/man/man8/hyve.8 share/man/man8/hyvectl.8 share/man/man5/hyve_config.5; do
		[ -f "$inst/$f" ] || { echo "    $inst/$f not installed"; return 1; }
	done
	[ -x "$inst/sbin/hyve" ] || { echo "    hyve not executable"; return 1; }
	OUT=$TMP/man.$RANDOM ERR=$TMP/man.err.$RANDOM
	if command -v man >/dev/null; then
		MANWIDTH=80 MANPAGER=cat man -M "$inst/share/man" hyve >"$OUT" 2>"$ERR"
	elif command -v mandoc >/dev/null; then
		mandoc -T utf8 "$inst/share/man/man8/hyve.8" >"$OUT" 2>"$ERR"
	else
		SKIP_REASON="neither man nor mandoc"; return 77
	fi
	RC=$?
	expect_rc 0 && expect_out '^HYVE\(8\)' || return 1
	local flag
	for flag in -c -m -s -l -o -k -r -p -U -S; do
		grep -qE -- "^ +$flag( |$)" "$OUT" || { echo "    hyve(8) does not describe $flag"; show; return 1; }
	done
	# No warnings from the formatter, for every page.
	for f in "$inst"/share/man/man8/*.8 "$inst"/share/man/man5/*.5; do
		if command -v mandoc >/dev/null; then
			mandoc -T lint -W warning "$f" >"$TMP/lint" 2>&1
		else
			groff -mdoc -ww -z "$f" >"$TMP/lint" 2>&1
		fi
		if [ -s "$TMP/lint" ]; then
			echo "    $f has formatter warnings:"; sed 's/^/    | /' "$TMP/lint"; return 1
		fi
	done
}

# -p and -S on a running VM, as the kernel sees them: each vCPU thread's
# Cpus_allowed_list is its -p host CPU, and the guest's RAM is locked
# (VmLck covers -m).
t_bhyve_pinning_and_wired_running() {
	have_kvm || return 77
	[ "$(id -u)" -eq 0 ] || { SKIP_REASON="needs root (CAP_IPC_LOCK for -S)"; return 77; }
	local last=$(($(getconf _NPROCESSORS_ONLN) - 1))
	vm_start -c 2 -m 64M -S -p 0:0 -p 1:"$last" -l com1,stdio -o boot.kernel="$GUEST" \
		-o control.socket="$TMP/pin.sock" "$(vm_name pin)"
	wait_serial 60 'hyve> ' || { vm_stop; return 1; }
	local t comm want got seen=0 ok=1 lck
	for t in /proc/"$VM_PID"/task/*; do
		comm=$(cat "$t/comm")
		case $comm in vcpu0) want=0 ;; vcpu1) want=$last ;; *) continue ;; esac
		seen=$((seen + 1))
		got=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "$t/status")
		[ "$got" = "$want" ] || { echo "    $comm may run on CPUs $got, want $want"; ok=0; }
	done
	lck=$(sed -n 's/^VmLck:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/"$VM_PID"/status)
	vm_stop
	[ "$seen" = 2 ] || { echo "    $seen vCPU threads seen"; ok=0; }
	# ASan's interceptors make mlock a no-op (make check-sanitize): nothing to see there.
	if [ "${SANITIZE:-0}" = 1 ]; then
		echo "    sanitizer build: ASan turns mlock into a no-op, VmLck not checked"
	else
		[ "${lck:-0}" -ge $((64 * 1024)) ] || { echo "    VmLck ${lck:-?} kB: 64 MiB of guest RAM not locked"; ok=0; }
	fi
	[ $ok = 1 ] && echo "    vcpu0 on CPU 0, vcpu1 on CPU $last; VmLck ${lck} kB"
}
