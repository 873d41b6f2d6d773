#!/bin/sh
# mkrootfs.sh [--size MiB] OUT.img
# Build an ext4 image (mkfs.ext4 -d from a staging dir: no root, no loop
# mounts) holding busybox-static and the kit's /init (/sbin/init -> /init),
# for virtio-blk / NVMe / AHCI root tests: root=/dev/vda rw (or /dev/nvme0n1,
# /dev/sda), or from an initramfs with hyve.root=/dev/vda.  An OUT ending in
# .iso is an ISO 9660 image with Rock Ridge instead (genisoimage), for a
# read-only root on a CD (rootfstype=iso9660).
set -u
. "$(dirname -- "$0")/lib.sh"

size=32
if [ "${1:-}" = --size ]; then
	size=${2:-}; shift 2 2>/dev/null || shift
fi
case $size in '' | *[!0-9]*) die "--size wants a number of MiB" ;; esac
[ $# -eq 1 ] || die "usage: $PROG [--size MiB] OUT.img"
out=$1
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
[ -d "$(dirname -- "$out")" ] || die "output directory $(dirname -- "$out") does not exist"
case $out in
*.iso) need_tool genisoimage genisoimage ;;
*) need_tool mkfs.ext4 e2fsprogs ;;
esac

stage=$(mktemp -d "$(cache_dir tmp)/rootfs.XXXXXX") || die "cannot create a staging dir"
trap 'rm -rf "$stage" "$out.tmp"' EXIT
stage_root "$stage"

case $out in
*.iso)
	say "writing $out (ISO 9660, Rock Ridge)"
	run genisoimage -quiet -R -V hyve-root -o "$out.tmp" "$stage" || die "genisoimage failed for $out"
	mv "$out.tmp" "$out" || die "cannot write $out"
	exit 0
	;;
esac
say "writing $out (${size} MiB ext4)"
rm -f "$out.tmp"
run truncate -s "${size}M" "$out.tmp" || die "cannot create $out.tmp"
run mkfs.ext4 -q -F -L hyve-root -E root_owner=0:0 -d "$stage" "$out.tmp" ||
	die "mkfs.ext4 -d failed for $out"
mv "$out.tmp" "$out" || die "cannot write $out"
say "done: $out"
