#!/bin/sh
# Run the test guest under QEMU with the devices hyve's tests expect
# (COM1 on stdio, isa-debug-exit at 0xf4, pc-testdev).  The exit status is
# QEMU's: (V<<1)|1 for a debug-exit write of V, 0 for ACPI poweroff.
#
# usage: qemu.sh [-a tcg|kvm] [-c CPUS] [-m MiB] "CMDLINE" [extra qemu args...]
# e.g.   guests/testguest/qemu.sh -a kvm "test=pio n=10000"
set -eu
accel=tcg cpus=4 mem=256
while getopts a:c:m: o; do
	case $o in
	a) accel=$OPTARG ;;
	c) cpus=$OPTARG ;;
	m) mem=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
cmdline=${1:-}
[ $# -gt 0 ] && shift
dir=$(cd "$(dirname "$0")" && pwd)
# TCG: -cpu max (the default qemu64 model lacks POPCNT).  KVM: QEMU's default
# model; "-cpu host" trips an MSR assertion in QEMU 7.2 on the PVM host.
cpuopt="-cpu max"
[ "$accel" = kvm ] && cpuopt=
# shellcheck disable=SC2086
exec qemu-system-x86_64 -machine pc -accel "$accel" $cpuopt -nodefaults -nographic \
	-serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4 -device pc-testdev \
	-no-reboot -m "$mem" -smp "$cpus" -kernel "$dir/testguest.elf" -append "$cmdline" "$@"
