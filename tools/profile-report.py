#!/usr/bin/env python3
"""Fold hyve's RIP samples (-o debug.profile=FILE) into functions.

usage: tools/profile-report.py PROFILE VMLINUX|System.map [TOP]
Symbols come from `nm -n` of an ELF, or a System.map file as is.
"""
import bisect
import subprocess
import sys


def load_symbols(path):
    try:
        text = subprocess.run(["nm", "-n", path], check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError:
        text = open(path).read()
    addrs, names = [], []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "tTwW":
            addrs.append(int(parts[0], 16))
            names.append(parts[2])
    return addrs, names


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    addrs, names = load_symbols(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    per_fn, total = {}, 0
    for line in open(sys.argv[1]):
        count, rip = line.split()
        count, rip = int(count), int(rip, 16)
        i = bisect.bisect_right(addrs, rip) - 1
        fn = names[i] if i >= 0 else "?"
        if rip < 0xffff800000000000:
            fn = "(user)" if rip < 0x800000000000 else "?"
        per_fn[fn] = per_fn.get(fn, 0) + count
        total += count
    for fn, c in sorted(per_fn.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{c:7d} {100.0 * c / total:5.1f}%  {fn}")
    print(f"{total:7d} samples")


if __name__ == "__main__":
    main()
