#!/bin/sh
# make linux: boot Debian's stock kernel (-c 2 -m 512M) with a busybox
# initramfs on the serial console.  On VT-x/SVM hosts this reaches a shell;
# on emulating hosts (PVM) the kernel gets as far as starting /init
# ("Run /init as init process"), after ~10-15 minutes.
. "$(dirname -- "$0")/lib.sh"
HYVE=${HYVE:-$HYVE_KIT_DIR/../../hyve}
vmlinuz=$(sh "$HYVE_KIT_DIR/fetch-stock.sh") || die "cannot fetch the stock kernel"
initrd=$HYVE_CACHE/hyve-stock-initrd.cpio
[ -s "$initrd" ] || sh "$HYVE_KIT_DIR/initramfs.sh" "$initrd" || die "cannot build $initrd"
exec "$HYVE" -c 2 -m 512M -l com1,stdio -o boot.kernel="$vmlinuz" -o boot.initrd="$initrd" \
	-o boot.cmdline="console=ttyS0 ${HYVE_LINUX_CMDLINE:-}" linux
