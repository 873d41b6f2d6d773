#!/bin/sh
# mk9proot.sh DIR
# Populate DIR as a 9p root: busybox-static plus the kit's /init (/sbin/init ->
# /init). Share DIR with virtio-9p and boot with e.g.
#   root=TAG rootfstype=9p rootflags=trans=virtio,version=9p2000.L rw
# Re-running refreshes DIR. Refuses a non-empty DIR it did not make.
set -u
. "$(dirname -- "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $PROG DIR"
mkdir -p "$1" || die "cannot create $1"
dir=$(CDPATH='' cd -- "$1" && pwd -P) || die "cannot enter $1"
[ "$dir" != / ] || die "refusing to populate /"
if [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/.hyve-9proot" ]; then
	die "$dir is not empty and has no .hyve-9proot marker; refusing to populate it"
fi
stage_root "$dir"
: >"$dir/.hyve-9proot"
say "done: $dir"
