#!/bin/sh
# check-config.sh DOTCONFIG [FRAGMENT]
# Verify a final kernel .config honours every line of the fragment
# (default: hyve-test.config beside this script). olddefconfig silently drops
# symbols whose dependencies are missing; this catches that.
#   CONFIG_X=v             must appear verbatim in DOTCONFIG
#   # CONFIG_X is not set  CONFIG_X must not be =y or =m in DOTCONFIG
# Prints the confirmed symbols; fails listing the missing/wrong ones.
set -u
. "$(dirname -- "$0")/lib.sh"

[ $# -ge 1 ] || die "usage: $PROG DOTCONFIG [FRAGMENT]"
cfg=$1
frag=${2:-$HYVE_KIT_DIR/hyve-test.config}
[ -r "$cfg" ] || die "cannot read $cfg"
[ -r "$frag" ] || die "cannot read $frag"

bad='' ok='' n=0
while IFS= read -r line; do
	case $line in
	CONFIG_*=*)
		sym=${line%%=*}
		if grep -qxF -- "$line" "$cfg"; then
			ok="$ok $sym"
		else
			have=$(grep -E "^(# )?${sym}[= ]" "$cfg" | head -n1)
			bad="$bad
  want $line, have: ${have:-(absent)}"
		fi ;;
	"# CONFIG_"*" is not set")
		sym=${line#\# }; sym=${sym%% *}
		if grep -qE "^$sym=[ym]\$" "$cfg"; then
			bad="$bad
  want $sym off, have: $(grep -E "^$sym=" "$cfg")"
		else
			ok="$ok !$sym"
		fi ;;
	*) continue ;;
	esac
	n=$((n + 1))
done <"$frag"

if [ -n "$bad" ]; then
	printf '%s: %s does not honour %s:%s\n' "$PROG" "$cfg" "$frag" "$bad" >&2
	die "kernel config check failed (see list above)"
fi
say "all $n fragment lines confirmed in $cfg (! = off):"
printf '%s\n' "$ok" | fold -s -w 78 | sed 's/^ */  /' >&2
