# shellcheck shell=sh
# Common helpers for the hyve Linux guest kit. Sourced, not executed.
#
# Everything downloaded or built lives in the cache, outside the repo:
#   ${HYVE_CACHE:-/var/cache/hyve}

HYVE_CACHE=${HYVE_CACHE:-/var/cache/hyve}
HYVE_KIT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
PROG=$(basename -- "$0")

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

# run CMD...: print the command, then run it.
run() { printf '%s: + %s\n' "$PROG" "$*" >&2; "$@"; }

# runlog LOG CMD...: print the command, run it with its output appended to LOG;
# on failure show the end of LOG.
runlog() {
	rl_log=$1; shift
	printf '%s: + %s >>%s\n' "$PROG" "$*" "$rl_log" >&2
	"$@" >>"$rl_log" 2>&1 && return 0
	tail -n 30 "$rl_log" >&2
	return 1
}

cache_dir() {
	mkdir -p "$HYVE_CACHE/$1" 2>/dev/null ||
		die "cannot create $HYVE_CACHE/$1 (set HYVE_CACHE to a writable directory)"
	printf '%s\n' "$HYVE_CACHE/$1"
}

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"
	elif command -v sudo >/dev/null 2>&1; then sudo "$@"
	else die "need root to run: $*"
	fi
}

apt_updated=
apt_update_once() {
	[ -n "$apt_updated" ] && return 0
	run as_root apt-get update -q >&2 || die "apt-get update failed"
	apt_updated=1
}

# apt_known PKG: does apt have a candidate for PKG?
apt_known() {
	apt-cache show --no-all-versions "$1" >/dev/null 2>&1
}

# need_pkgs PKG...: apt-get install the packages that are not installed yet.
need_pkgs() {
	missing=
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
			missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	say "installing missing packages:$missing"
	apt_known "${missing# }" || apt_update_once
	# shellcheck disable=SC2086
	run as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends $missing >&2 ||
		die "apt-get install failed for:$missing"
}

# need_tool CMD PKG: make sure CMD exists, installing PKG if not.
need_tool() {
	command -v "$1" >/dev/null 2>&1 && return 0
	need_pkgs "$2"
	command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

# apt_download PKG DIR: download PKG's candidate .deb into DIR (cached by
# file name), print the .deb path.
apt_download() {
	apt_known "$1" || apt_update_once
	apt_known "$1" || die "apt knows no package $1"
	ver=$(apt-cache show --no-all-versions "$1" | sed -n 's/^Version: //p' | head -n1)
	file=$(apt-cache show --no-all-versions "$1" | sed -n 's/^Filename: //p' | head -n1)
	deb="$2/$(basename -- "$file")"
	if [ -s "$deb" ]; then
		say "cached: $deb"
	else
		say "downloading $1 $ver"
		# Own temp dir: apt-get download names files with %3a for epochs.
		dl=$(mktemp -d "$2/.dl.XXXXXX") || die "cannot create a temp dir in $2"
		(cd "$dl" && run apt-get download -q -o APT::Sandbox::User=root "$1=$ver" >&2) ||
			{ rm -rf "$dl"; die "apt-get download $1=$ver failed"; }
		set -- "$dl"/*.deb
		[ $# -eq 1 ] && [ -s "$1" ] && mv "$1" "$deb" ||
			{ rm -rf "$dl"; die "apt-get download did not produce one .deb for $deb"; }
		rm -rf "$dl"
	fi
	printf '%s\n' "$deb"
}

# extract_deb DEB DIR: dpkg-deb -x DEB into DIR once (marker file).
extract_deb() {
	if [ -f "$2/.hyve-extracted" ]; then
		say "already extracted: $2"
		return 0
	fi
	rm -rf "$2"; mkdir -p "$2"
	run dpkg-deb -x "$1" "$2" || die "dpkg-deb -x $1 failed"
	basename -- "$1" >"$2/.hyve-extracted"
}

# hyve_busybox: fetch + extract busybox-static, print the binary's path.
hyve_busybox() {
	need_tool dpkg-deb dpkg
	bb_debs=$(cache_dir debs)
	bb_deb=$(apt_download busybox-static "$bb_debs") || exit 1
	bb_dir="$HYVE_CACHE/busybox/$(basename -- "$bb_deb" .deb)"
	extract_deb "$bb_deb" "$bb_dir"
	[ -x "$bb_dir/bin/busybox" ] || die "no bin/busybox in $bb_deb"
	printf '%s\n' "$bb_dir/bin/busybox"
}

# stage_root DIR: populate DIR as a minimal busybox root with the kit's /init.
# /sbin/init points at /init, so disk and 9p roots need no init= argument.
stage_root() {
	root=$1
	bb=$(hyve_busybox) || exit 1
	say "staging busybox root in $root"
	mkdir -p "$root" || die "cannot create $root"
	for d in bin sbin usr/bin usr/sbin dev proc sys tmp run root etc mnt; do
		mkdir -p "$root/$d"
	done
	chmod 1777 "$root/tmp"
	cp "$bb" "$root/bin/busybox" && chmod 755 "$root/bin/busybox" ||
		die "cannot copy busybox into $root"
	# Applet links, made on the build host so the guest needs no --install.
	"$bb" --list-full | while read -r applet; do
		case $applet in
		sbin/init | linuxrc | bin/busybox) continue ;;
		esac
		ln -sfn /bin/busybox "$root/$applet"
	done
	ln -sfn /init "$root/sbin/init"
	cp "$HYVE_KIT_DIR/init" "$root/init" && chmod 755 "$root/init" ||
		die "cannot install /init into $root"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"
	printf 'hyve\n' >"$root/etc/hostname"
}
