#!/bin/sh
# l1run.sh COMMAND...: run COMMAND (a shell command line) on a host that has
# /dev/kvm, when this one has not: an L1 Linux under QEMU TCG with nested
# SVM (-cpu max), Debian's stock kernel with kvm-amd, whose root is this
# host's / over virtio-9p.  hyve and its tests then run on real hardware
# virtualization (as QEMU emulates it), not on an emulating KVM such as
# PVM.  The command runs as root in the current directory with a fresh
# /tmp and /run; its output goes to this terminal; l1run.sh exits with its
# status (125 if the L1 could not run it).
#
# Slow (everything is emulated) but exact: guest CPL0 code runs as on
# VT-x/SVM, so tests that skip on hosts without /dev/kvm can run here.
# HYVE_L1_SMP (2) and HYVE_L1_MEM (8G) size the L1; HYVE_L1_TIMEOUT (3600 s)
# bounds the run; HYVE_L1_QEMU (qemu-system-x86_64) is the QEMU that runs it
# and HYVE_L1_ACCEL (-accel tcg,thread=multi) its accelerator options.
#
# OVMF in the L2: QEMU's TCG (7.2 and 10.0 alike) aborts ("tcg_handle_interrupt:
# assertion failed") when an L2 writes CR8 while a virtual interrupt is
# pending, and OVMF's interrupt handlers write CR8 on every return.  With
# multi-threaded TCG the L2's timer ticks pile up inside its handlers and
# the L1 dies within a minute; under -icount (virtual time follows the
# instructions run, as on hardware) they rarely do (one L1 abort in six
# runs of the OVMF tests).  The OVMF tests therefore run only with
#   HYVE_L1_SMP=1 HYVE_L1_ACCEL='-accel tcg -icount shift=0,sleep=off'
# and skip, saying so, in other L1s; an L1 that aborts says so (status 125).
set -u
PATH=$PATH:/usr/sbin:/sbin
. "$(dirname -- "$0")/../linux/lib.sh"
HYVE_KIT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")/../linux" && pwd)

[ $# -ge 1 ] || die "usage: $PROG COMMAND..."
need_tool qemu-system-x86_64 qemu-system-x86
need_tool modprobe kmod
need_tool cpio cpio
[ "$(id -u)" -eq 0 ] || die "needs root (the L1 shares / with 9p passthrough)"

vmlinuz=$("$HYVE_KIT_DIR/fetch-stock.sh") || exit 125
tree=${vmlinuz%/boot/*}
kver=${vmlinuz##*/vmlinuz-}
[ -s "$tree/lib/modules/$kver/modules.dep" ] || run depmod -b "$tree" "$kver" || die "depmod failed for $tree"
bb=$(find "$HYVE_CACHE/busybox" -path '*/bin/busybox' -type f 2>/dev/null | head -n 1)
[ -n "$bb" ] || die "busybox-static not extracted (fetch-stock.sh does it)"

work=$(cache_dir nested)
initrd=$work/l1-$kver.cpio
# The L1's modules: KVM for AMD (TCG emulates SVM), 9p for the root, and
# what the network tests use (tap, veth, bridges).
mods="kvm_amd 9p 9pnet_virtio virtio_pci tun veth bridge"
if [ ! -s "$initrd" ] || [ "$0" -nt "$initrd" ]; then
	stage=$(mktemp -d "$(cache_dir tmp)/l1.XXXXXX") || die "cannot create a staging dir"
	mkdir -p "$stage/bin" "$stage/proc" "$stage/sys" "$stage/dev" "$stage/newroot" "$stage/lib/modules"
	cp "$bb" "$stage/bin/busybox"
	n=0
	for m in $mods; do modprobe -d "$tree" -S "$kver" --show-depends "$m" || die "module $m not in $tree"; done |
		sed -n 's/^insmod \([^ ]*\).*/\1/p' | awk '!seen[$0]++' >"$stage/order"
	while read -r ko; do
		n=$((n + 1))
		cp "$ko" "$stage/lib/modules/$n.ko"
		echo "$n" >>"$stage/load"
	done <"$stage/order"
	rm -f "$stage/order"
	cat >"$stage/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for n in $(cat /load); do insmod /lib/modules/$n.ko 2>/dev/null; done
dir=$(sed -n 's/.*hyve_l1=\([^ ]*\).*/\1/p' /proc/cmdline)
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,access=any hostroot /newroot; then
	echo "l1: cannot mount the host's root over 9p"
	poweroff -f
fi
for d in proc sys dev; do mount --move /$d /newroot/$d; done
mount -t tmpfs tmp /newroot/tmp
mount -t tmpfs run /newroot/run
mount -t devpts devpts /newroot/dev/pts 2>/dev/null
ip link set lo up
hostname hyve-l1
[ -c /newroot/dev/kvm ] || echo "l1: no /dev/kvm (kvm_amd did not load: does QEMU offer SVM?)"
chroot /newroot /bin/sh -c "cd \"\$(cat $dir/cwd)\" && exec /bin/sh $dir/cmd" </dev/console >/dev/console 2>&1
echo $? >/newroot/$dir/rc
sync
echo o >/newroot/proc/sysrq-trigger
sleep 60
EOF
	chmod +x "$stage/init"
	(cd "$stage" && find . | cpio --quiet -o -H newc -R 0:0) >"$initrd.tmp" && mv "$initrd.tmp" "$initrd" ||
		die "cannot write $initrd"
	rm -rf "$stage"
fi

run_dir=$(mktemp -d "$work/run.XXXXXX") || die "cannot create a run directory"
trap 'rm -rf "$run_dir"' EXIT
pwd >"$run_dir/cwd"
{
	echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb"
	# Tests that only run under some accelerator options (OVMF: -icount) look here.
	printf "export HYVE_L1_ACCEL='%s'\n" "${HYVE_L1_ACCEL:-}"
	printf '%s\n' "$*"
} >"$run_dir/cmd"
timeout "${HYVE_L1_TIMEOUT:-3600}" ${HYVE_L1_QEMU:-qemu-system-x86_64} -M q35 ${HYVE_L1_ACCEL:--accel tcg,thread=multi} -cpu max \
	-smp "${HYVE_L1_SMP:-2}" -m "${HYVE_L1_MEM:-8G}" -nographic -no-reboot -nodefaults -serial stdio \
	-kernel "$vmlinuz" -initrd "$initrd" -append "console=ttyS0 panic=-1 quiet loglevel=3 hyve_l1=$run_dir" \
	-fsdev "local,id=root,path=/,security_model=passthrough,multidevs=remap" \
	-device virtio-9p-pci,fsdev=root,mount_tag=hostroot </dev/null | sed -u 's/\r//g; s/\x1b[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g'
rc=$(cat "$run_dir/rc" 2>/dev/null) || { echo "$PROG: the L1 did not finish the command" >&2; exit 125; }
exit "$rc"
