#!/bin/sh
# fetch-stock.sh
# Download Debian 12's stock kernel (the real linux-image-6.1.0-*-amd64 that
# the linux-image-amd64 meta package currently depends on) and busybox-static
# with apt-get download, extract them with dpkg-deb -x into the cache, and
# print the path of the vmlinuz on stdout. $HYVE_CACHE/stock-vmlinuz and
# $HYVE_CACHE/stock-config are kept pointing at the current one.
set -u
. "$(dirname -- "$0")/lib.sh"

[ $# -eq 0 ] || die "usage: $PROG (no arguments)"
need_tool dpkg-deb dpkg
need_tool apt-get apt

apt_known linux-image-amd64 || apt_update_once
apt_known linux-image-amd64 || die "apt knows no linux-image-amd64 (check sources.list)"
# Resolve the meta package to the real image package.
pkg=$(apt-cache show --no-all-versions linux-image-amd64 | sed -n 's/^Depends: //p' |
	tr ',|' '\n\n' | sed 's/^ *//; s/ .*//' | grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' | head -n1)
[ -n "$pkg" ] || die "cannot resolve linux-image-amd64 to a linux-image-6.1.0-*-amd64 package"
say "linux-image-amd64 -> $pkg"

debs=$(cache_dir debs)
deb=$(apt_download "$pkg" "$debs") || exit 1
dir=$HYVE_CACHE/stock/$(basename -- "$deb" .deb)
extract_deb "$deb" "$dir"

kver=${pkg#linux-image-}
vmlinuz=$dir/boot/vmlinuz-$kver
[ -s "$vmlinuz" ] || die "no boot/vmlinuz-$kver in $deb"
ln -sfn "$vmlinuz" "$HYVE_CACHE/stock-vmlinuz"
ln -sfn "$dir/boot/config-$kver" "$HYVE_CACHE/stock-config"

hyve_busybox >/dev/null || exit 1

say "stock kernel $kver: $vmlinuz ($(wc -c <"$vmlinuz") bytes)"
printf '%s\n' "$vmlinuz"
