#!/usr/bin/env python3
"""Seeds for tests/fuzz/fuzz_qcow2.c: small qcow2 images made by qemu-img
(and qemu-io when present), each prefixed with the harness's flag byte.

    python3 tests/fuzz/make_qcow2_seeds.py DIR

Flag byte: bit 0 declared format=qcow2 (backing files followed), bit 1
read-only, bits 2-3 L2 cache size, bits 4-7 operation seed.  Backing files
are named "raw" and "q", as in the harness's scratch directory.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def run(*cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    if not shutil.which("qemu-img"):
        sys.exit("qemu-img not installed (qemu-utils)")
    have_io = shutil.which("qemu-io") is not None
    t = tempfile.mkdtemp()
    try:
        pattern = bytes((i * 13 + (i >> 9)) & 0xff for i in range(65536))
        with open(os.path.join(t, "raw"), "wb") as f:
            f.write(pattern)
        with open(os.path.join(t, "data.raw"), "wb") as f:
            f.write(bytes(range(256)) * 64 + bytes(16384) + pattern[:32768])
        run("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=512", "-b", "raw", "-F", "raw", "q", cwd=t)
        seeds = [
            ("empty-v3", 0x00, ["create", "-f", "qcow2", "-o", "cluster_size=512", "{}", "64K"]),
            ("empty-v2", 0x10, ["create", "-f", "qcow2", "-o", "cluster_size=512,compat=0.10", "{}", "64K"]),
            ("data-v3", 0x20, ["convert", "-O", "qcow2", "-o", "cluster_size=512", "data.raw", "{}"]),
            ("data-v2-ro", 0x32, ["convert", "-O", "qcow2", "-o", "cluster_size=512,compat=0.10", "data.raw", "{}"]),
            ("zlib", 0x40, ["convert", "-c", "-O", "qcow2", "-o", "cluster_size=512", "data.raw", "{}"]),
            ("zstd", 0x54, ["convert", "-c", "-O", "qcow2", "-o", "cluster_size=512,compression_type=zstd",
                            "data.raw", "{}"]),
            ("backing-raw", 0x61, ["create", "-f", "qcow2", "-o", "cluster_size=512", "-b", "raw", "-F", "raw",
                                   "{}"]),
            ("backing-q", 0x71, ["create", "-f", "qcow2", "-o", "cluster_size=512", "-b", "q", "-F", "qcow2", "{}"]),
            ("refcount1", 0x8a, ["create", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=1", "{}", "64K"]),
            ("refcount64", 0x98, ["create", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64", "{}", "64K"]),
            ("cluster4k", 0xa0, ["create", "-f", "qcow2", "-o", "cluster_size=4096", "{}", "64K"]),
            ("prealloc", 0xb0, ["create", "-f", "qcow2", "-o", "cluster_size=512,preallocation=metadata", "{}",
                                "16K"]),
            ("extl2", 0xc0, ["create", "-f", "qcow2", "-o", "cluster_size=16K,extended_l2=on", "{}", "64K"]),
        ]
        for name, flags, args in seeds:
            img = os.path.join(t, name + ".qcow2")
            run("qemu-img", *[a.replace("{}", name + ".qcow2") for a in args], cwd=t)
            if name == "data-v3":
                run("qemu-img", "snapshot", "-c", "s1", name + ".qcow2", cwd=t)
                if have_io:
                    run("qemu-io", "-f", "qcow2", "-c", "write -z 4096 8192", "-c", "discard 20480 4096",
                        "-c", "write -P 0x5a 30000 3000", name + ".qcow2", cwd=t)
            if name == "refcount1":
                # lazy-refcount style dirty bit: refused for writing, read-only opens it
                with open(img, "r+b") as f:
                    f.seek(72)
                    f.write(struct.pack(">Q", 1))
            with open(img, "rb") as f:
                body = f.read()
            with open(os.path.join(out, "seed-" + name), "wb") as f:
                f.write(bytes([flags]) + body)
            print("seed-%s: %d bytes" % (name, len(body) + 1))
    finally:
        shutil.rmtree(t)


if __name__ == "__main__":
    main()
