#!/bin/sh
# Install what hyve needs to build and test on Debian 12 (idempotent).
set -e
PKGS="build-essential pkg-config binutils clang libclang-rt-14-dev
      zlib1g-dev liblzma-dev libzstd-dev liblz4-dev liburing-dev libslirp-dev libglib2.0-dev libseccomp-dev libssl-dev openssl
      acpica-tools qemu-system-x86 qemu-utils seabios ovmf kmod grub-pc-bin xorriso mtools busybox-static cpio e2fsprogs genisoimage dmidecode vncsnapshot libjpeg-turbo-progs edid-decode
      iproute2 socat python3 procps mandoc"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
