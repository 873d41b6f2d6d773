#!/bin/sh
# initramfs.sh [--stock-modules] OUT.cpio.gz|OUT.cpio
# Build a tiny initramfs (newc cpio, gzip unless OUT ends in .cpio):
# busybox-static plus the kit's /init.
# --stock-modules also packs the Debian stock kernel's modules for the devices
# hyve tests (virtio-pci/blk/net/console/rng, 9p, NVMe, AHCI, ext4) with their
# dependencies; /init modprobes them. Not needed for hyve-test-bzImage (all =y).
set -u
. "$(dirname -- "$0")/lib.sh"

STOCK_MODULES="virtio_pci virtio_blk virtio_net virtio_console virtio_rng
	9pnet_virtio 9p nvme ahci sd_mod ext4"

mods=
case ${1:-} in
--stock-modules) mods=1; shift ;;
esac
[ $# -eq 1 ] || die "usage: $PROG [--stock-modules] OUT.cpio.gz"
out=$1
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
[ -d "$(dirname -- "$out")" ] || die "output directory $(dirname -- "$out") does not exist"
need_tool cpio cpio
need_tool gzip gzip

stage=$(mktemp -d "$(cache_dir tmp)/initramfs.XXXXXX") || die "cannot create a staging dir"
trap 'rm -rf "$stage"' EXIT
stage_root "$stage"

if [ -n "$mods" ]; then
	need_tool depmod kmod
	vmlinuz=$("$HYVE_KIT_DIR/fetch-stock.sh") || exit 1
	tree=${vmlinuz%/boot/*}
	kver=${vmlinuz##*/vmlinuz-}
	if [ ! -s "$tree/lib/modules/$kver/modules.dep" ]; then
		run depmod -b "$tree" "$kver" || die "depmod failed for $tree"
	fi
	say "adding stock $kver modules: $(echo $STOCK_MODULES)"
	for m in $STOCK_MODULES; do
		modprobe -d "$tree" -S "$kver" --show-depends "$m" >>"$stage/.deps" ||
			die "cannot resolve module $m in $tree"
	done
	for ko in $(sed -n 's/^insmod \([^ ]*\).*/\1/p' "$stage/.deps" | sort -u); do
		rel=${ko#"$tree"/}
		mkdir -p "$stage/${rel%/*}" && cp "$ko" "$stage/$rel" || die "cannot copy $ko"
	done
	rm -f "$stage/.deps"
	for f in modules.order modules.builtin modules.builtin.modinfo; do
		cp "$tree/lib/modules/$kver/$f" "$stage/lib/modules/$kver/" || die "cannot copy $f"
	done
	run depmod -b "$stage" "$kver" || die "depmod failed for the initramfs"
	echo $STOCK_MODULES >"$stage/lib/modules/hyve-load"
fi

# OUT ending in .cpio is left uncompressed: on emulating hosts the guest
# kernel's inflate runs instruction by instruction (~100 s for 1 MB), while
# an uncompressed archive is only copied.
compress="gzip -9n"
case $out in *.cpio) compress=cat ;; esac
say "writing $out"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 | $compress) >"$out.tmp" ||
	{ rm -f "$out.tmp"; die "cpio/gzip failed writing $out"; }
mv "$out.tmp" "$out" || die "cannot write $out"
say "done: $out ($(wc -c <"$out") bytes)"
