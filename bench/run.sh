#!/bin/sh
# Entry point of `make bench` (the Makefile builds hyve and the test guest
# first): installs QEMU from Debian if it is missing, then runs
# bench/bench.py, which prints the table and writes bench/results/latest.json.
# Arguments are passed on, e.g. bench/run.sh --only rss --runs 3
set -eu
cd "$(dirname "$0")/.."
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO=sudo
	echo "bench: installing qemu-system-x86 (Debian)"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		qemu-system-x86 >/dev/null
fi
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	echo "bench: /dev/kvm is missing or not accessible" >&2
	exit 1
fi
python3 bench/bench.py --hyve "${HYVE_BIN:-build/release/hyve}" "$@"
[ $# -gt 0 ] || python3 bench/bench_state.py --hyve "${HYVE_BIN:-build/release/hyve}"  # checkpoint/restore/migration -> results/state-latest.json (bench/README.md); full runs only
