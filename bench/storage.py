#!/usr/bin/env python3
"""hyve's disk path vs QEMU's block layer on qcow2, no guest needed.

hyve: build/release/blk_bench (blockif over devices/qcow2*.c, the code a
virtio-blk/NVMe/AHCI request runs through after the device model).
QEMU: `qemu-img bench -t writeback -i threads` (its block layer and qcow2
driver, page cache as hyve's qcow2 path uses it).  Both get the same
options on the same image in the same run, alternating, --runs times each;
the table shows the median times and the ratio hyve/QEMU (below 1: hyve
faster).  This compares the format layers only: a guest's IOPS also pay
for the device model and the exits, which needs a KVM host (make bench).

Before each timed run the page cache is written back (sync), so no run
pays for the one before it.  Rows: a fully allocated image (preallocation=full) and a fresh overlay on
a raw backing file (each write run gets a new overlay: allocating writes,
copy-on-write from the backing file); 4 KiB requests every 52 KiB
("strided": a new cluster almost every request) and 1 MiB sequential.

  bench/storage.py [--runs N] [--size MiB] [--dir DIR]
Prints the table on stderr and one JSON line per row on stdout.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BLK_BENCH = os.environ.get("BLK_BENCH", os.path.join(HERE, "..", "build", "release", "blk_bench"))


def run(cmd):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout


def hyve_time(img, args):
    out = run([BLK_BENCH, "-f", "qcow2"] + args + [img])
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def qemu_time(img, args):
    out = run(["qemu-img", "bench", "-f", "qcow2", "-t", "writeback", "-i", "threads"] + args + [img])
    m = re.search(r"Run completed in ([0-9.]+) seconds", out)
    if not m:
        raise RuntimeError("qemu-img bench: no time in: " + out)
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=1024, help="image size, MiB")
    ap.add_argument("--dir", default=os.environ.get("TMPDIR", "/var/tmp"))
    a = ap.parse_args()
    if not shutil.which("qemu-img"):
        sys.exit("storage.py: qemu-img not installed (apt-get install qemu-utils)")
    size = a.size << 20
    d = tempfile.mkdtemp(prefix="hyve-bench-storage.", dir=a.dir)
    try:
        full = os.path.join(d, "full.qcow2")
        base = os.path.join(d, "base.raw")
        ovl = os.path.join(d, "overlay.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full", full, str(size)])
        with open(base, "wb") as f:   # a backing file with data in it, not holes
            block = bytes(range(256)) * 4096
            for _ in range(size // len(block)):
                f.write(block)

        def fresh_overlay():
            if os.path.exists(ovl):
                os.unlink(ovl)
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", ovl])

        stride = 52 << 10
        n4k = min(20000, (size - 4096) // stride + 1)
        n1m = size >> 20
        pat = ["--pattern=0x5a"]
        rows = [
            ("allocated: 4 KiB strided read, depth 16", full, ["-c", str(n4k), "-d", "16", "-s", "4096", "-S", str(stride)], None),
            ("allocated: 4 KiB strided write, depth 16", full, ["-w"] + pat + ["-c", str(n4k), "-d", "16", "-s", "4096", "-S", str(stride)], None),
            ("allocated: 1 MiB sequential read, depth 4", full, ["-c", str(n1m), "-d", "4", "-s", "1M"], None),
            ("allocated: 1 MiB sequential write, depth 4", full, ["-w"] + pat + ["-c", str(n1m), "-d", "4", "-s", "1M"], None),
            ("overlay: 4 KiB strided read (backing file), depth 16", ovl, ["-c", str(n4k), "-d", "16", "-s", "4096", "-S", str(stride)], "once"),
            ("overlay: 4 KiB strided write (allocating), depth 16", ovl, ["-w"] + pat + ["-c", str(n4k), "-d", "16", "-s", "4096", "-S", str(stride)], "each"),
            ("overlay: 1 MiB sequential write (allocating), depth 4", ovl, ["-w"] + pat + ["-c", str(n1m), "-d", "4", "-s", "1M"], "each"),
        ]
        print("%-56s %10s %10s %7s" % ("row (%d MiB image, %d runs each)" % (a.size, a.runs), "hyve s", "QEMU s", "ratio"),
              file=sys.stderr)
        for name, img, args, overlay in rows:
            if overlay:
                fresh_overlay()
            h, q = [], []
            for i in range(a.runs):
                order = [("h", hyve_time), ("q", qemu_time)] if i % 2 == 0 else [("q", qemu_time), ("h", hyve_time)]
                for who, fn in order:
                    if overlay == "each":
                        fresh_overlay()
                    os.sync()   # the last run's dirty pages are not this run's writeback
                    (h if who == "h" else q).append(fn(img, args))
            hm, qm = statistics.median(h), statistics.median(q)
            reqs = int(args[args.index("-c") + 1])
            bs = 4096 if "4096" in args else 1 << 20
            print("%-56s %10.3f %10.3f %7.2f" % (name, hm, qm, hm / qm), file=sys.stderr)
            print(json.dumps({"row": name, "hyve_s": h, "qemu_s": q, "hyve_median_s": hm, "qemu_median_s": qm,
                              "ratio": round(hm / qm, 3), "hyve_iops": round(reqs / hm), "qemu_iops": round(reqs / qm),
                              "hyve_mib_s": round(reqs * bs / hm / 2**20, 1),
                              "qemu_mib_s": round(reqs * bs / qm / 2**20, 1)}), flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
