#!/bin/sh
# build-kernel.sh [--force]
# Build hyve's small test kernel from Debian's linux-source-6.1:
#   make tinyconfig + hyve-test.config (merge_config.sh -m) + make olddefconfig,
#   check the result with check-config.sh, make bzImage, and copy
#   $HYVE_CACHE/hyve-test-bzImage, hyve-test-vmlinux, hyve-test-config.
# Rebuilds only when the fragment (or the kernel source version) changed.
set -u
. "$(dirname -- "$0")/lib.sh"

force=
case ${1:-} in
--force) force=1 ;;
"") ;;
*) die "usage: $PROG [--force]" ;;
esac

frag=$HYVE_KIT_DIR/hyve-test.config
[ -r "$frag" ] || die "missing config fragment $frag"

need_pkgs linux-source-6.1 build-essential bc flex bison libelf-dev \
	libssl-dev dwarves cpio kmod xz-utils lz4

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1) || die "linux-source-6.1 not installed"
tarball=/usr/src/linux-source-6.1.tar.xz
[ -r "$tarball" ] || die "missing $tarball (reinstall linux-source-6.1)"

out=$(cache_dir .)
out=${out%/.}
stamp=$out/hyve-test.stamp
want=$(cat "$frag" | sha256sum | cut -d' ' -f1)
want="$want linux-source-6.1=$srcver"

if [ -z "$force" ] && [ -s "$out/hyve-test-bzImage" ] && [ -s "$out/hyve-test-vmlinux" ] &&
	[ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	say "up to date (fragment hash + source version match $stamp)"
	ls -l "$out/hyve-test-bzImage" "$out/hyve-test-vmlinux" >&2
	printf '%s\n' "$out/hyve-test-bzImage"
	exit 0
fi

# Unpack the source once per source version.
srcroot=$(cache_dir src)
src=$srcroot/linux-source-6.1_$srcver
if [ ! -f "$src/.hyve-unpacked" ]; then
	say "unpacking $tarball ($srcver) into $src"
	rm -rf "$src" "$srcroot/linux-source-6.1"
	(cd "$srcroot" && run tar -xf "$tarball") || die "cannot unpack $tarball"
	mv "$srcroot/linux-source-6.1" "$src" || die "cannot move source into $src"
	: >"$src/.hyve-unpacked"
fi

# Out-of-tree build dir, kept across fragment changes so rebuilds are incremental.
obj=$(cache_dir "build/hyve-test_$srcver")
export KBUILD_BUILD_USER=hyve KBUILD_BUILD_HOST=hyve
jobs=$(nproc 2>/dev/null || echo 2)
start=$(date +%s)

cd "$src" || die "cannot cd to $src"
# stdout carries only the result path: tool output goes to logs in $obj.
: >"$obj/config.log"
runlog "$obj/config.log" make O="$obj" tinyconfig || die "make tinyconfig failed"
runlog "$obj/config.log" scripts/kconfig/merge_config.sh -m -O "$obj" "$obj/.config" "$frag" ||
	die "merge_config.sh failed"
runlog "$obj/config.log" make O="$obj" olddefconfig || die "make olddefconfig failed"
"$HYVE_KIT_DIR/check-config.sh" "$obj/.config" "$frag" || exit 1

say "building bzImage with -j$jobs"
: >"$obj/build.log"
runlog "$obj/build.log" make O="$obj" -j"$jobs" bzImage || die "kernel build failed (log: $obj/build.log)"
end=$(date +%s)

cp "$obj/arch/x86/boot/bzImage" "$out/hyve-test-bzImage.tmp" &&
	cp "$obj/vmlinux" "$out/hyve-test-vmlinux.tmp" &&
	cp "$obj/.config" "$out/hyve-test-config" &&
	mv "$out/hyve-test-bzImage.tmp" "$out/hyve-test-bzImage" &&
	mv "$out/hyve-test-vmlinux.tmp" "$out/hyve-test-vmlinux" ||
	die "cannot copy kernel images into $out"
printf '%s\n' "$want" >"$stamp"

say "built $(cat "$obj/include/config/kernel.release" 2>/dev/null) in $((end - start))s:"
ls -l "$out/hyve-test-bzImage" "$out/hyve-test-vmlinux" "$out/hyve-test-config" >&2
printf '%s\n' "$out/hyve-test-bzImage"
