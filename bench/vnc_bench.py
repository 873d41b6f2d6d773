#!/usr/bin/env python3
"""VNC frame throughput, hyve vs QEMU, same guest, same client, same run.

The test guest's test=fbanim finds QEMU's display interface (PCI 1234:1111:
hyve's fbuf with variant=bochs, QEMU's bochs-display), sets 800x600x32 and
redraws the whole screen in a new colour as fast as it can.  A VNC client
(this script, RFB 3.8, Raw encoding only, so neither server can win by
compressing) asks for incremental updates back to back for --seconds and
counts the updates that cover the whole screen, and the bytes.  Both VMMs
run with KVM when /dev/kvm is there (QEMU falls back to TCG without it;
hyve needs KVM and is skipped).  Prints a table and writes
bench/results/vnc-latest.json.

usage: bench/vnc_bench.py [--hyve build/release/hyve] [--seconds 10] [--runs 3]
"""
import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST = os.path.join(ROOT, "guests", "testguest", "testguest.elf")


def have_kvm():
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def free_vnc_port():
    for port in range(5900, 6000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise SystemExit("no free port in 5900-5999")


def recv(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(min(n - len(b), 1 << 20))
        if not c:
            raise EOFError("server closed the connection")
        b += c
    return bytes(b)


def measure(port, seconds):
    """Full-screen updates and bytes received in `seconds` of back-to-back requests."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    ver = recv(s, 12)
    s.sendall(b"RFB 003.008\n")
    n = recv(s, 1)[0]
    if n == 0 or 1 not in recv(s, n):
        raise SystemExit(f"server ({ver!r}) offers no security type None")
    s.sendall(b"\x01")
    if struct.unpack(">I", recv(s, 4))[0] != 0:
        raise SystemExit("security handshake failed")
    s.sendall(b"\x01")
    w, h = struct.unpack(">HH", recv(s, 4))
    pf = recv(s, 16)
    recv(s, struct.unpack(">I", recv(s, 4))[0])
    bpp = pf[0] // 8
    s.sendall(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: Raw only
    frames = total = 0
    t0 = time.monotonic()
    end = t0 + seconds
    s.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, w, h))  # the first request: the whole screen
    while time.monotonic() < end:
        typ = recv(s, 1)[0]
        if typ == 0:
            nrects = struct.unpack(">xH", recv(s, 3))[0]
            area = 0
            for _ in range(nrects):
                x, y, rw, rh, enc = struct.unpack(">HHHHi", recv(s, 12))
                if enc == 0:
                    recv(s, rw * rh * bpp)
                    total += rw * rh * bpp
                    area += rw * rh
                elif enc == -223:  # DesktopSize
                    w, h = rw, rh
            if area >= w * h:
                frames += 1
            s.sendall(struct.pack(">BBHHHH", 3, 1, 0, 0, w, h))
        elif typ == 2:  # Bell
            pass
        elif typ == 3:  # ServerCutText
            recv(s, 3)
            recv(s, struct.unpack(">I", recv(s, 4))[0])
        else:
            raise SystemExit(f"unexpected server message {typ}")
    elapsed = time.monotonic() - t0
    s.close()
    return {"fps": frames / elapsed, "mib_s": total / elapsed / (1 << 20), "frames": frames, "w": w, "h": h}


def wait_line(path, text, proc, timeout):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if proc.poll() is not None:
            return False
        try:
            with open(path, "rb") as f:
                if text.encode() in f.read():
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    return False


def run_vm(kind, hyve, seconds, tmp):
    port = free_vnc_port()
    out = os.path.join(tmp, f"{kind}.out")
    if kind == "hyve":
        cmd = [hyve, "-m", "128M", "-l", "com1,stdio", "-o", "lpc.pc-testdev=true", "-o", "control.socket=none",
               "-o", f"boot.kernel={GUEST}", "-o", "boot.cmdline=test=fbanim",
               "-s", f"29,fbuf,tcp=127.0.0.1:{port},w=800,h=600,variant=bochs", f"vncbench{os.getpid()}"]
    else:
        accel = ["-accel", "kvm"] if have_kvm() else ["-accel", "tcg", "-cpu", "max"]
        cmd = ["qemu-system-x86_64", "-machine", "pc", *accel, "-m", "128", "-nodefaults", "-display", "none",
               "-serial", "stdio", "-device", "pc-testdev", "-kernel", GUEST, "-append", "test=fbanim",
               "-device", "bochs-display", "-vnc", f"127.0.0.1:{port - 5900}"]
    with open(out, "wb") as o:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT)
    try:
        if not wait_line(out, "fbanim: drawing", p, 120):
            with open(out, "rb") as f:
                tail = f.read()[-400:].decode(errors="replace")
            raise SystemExit(f"{kind}: the guest did not start drawing:\n{tail}")
        return measure(port, seconds)
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hyve", default=os.path.join(ROOT, "build", "release", "hyve"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    kinds = ["qemu"] + (["hyve"] if have_kvm() else [])
    results = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="hyve-vncbench.") as tmp:
        for _ in range(a.runs):
            for k in kinds:  # interleaved: the machine's noise hits both
                results[k].append(run_vm(k, a.hyve, a.seconds, tmp))
    best = {k: max(v, key=lambda r: r["fps"]) for k, v in results.items()}
    print("VNC full-screen updates, 800x600x32, Raw encoding, best of %d x %gs" % (a.runs, a.seconds))
    for k in kinds:
        b = best[k]
        print(f"  {k:5s} {b['fps']:8.1f} frames/s {b['mib_s']:9.1f} MiB/s")
    row = {"test": "vnc_fullscreen_fps", "seconds": a.seconds, "runs": results,
           "accel": "kvm" if have_kvm() else "tcg (QEMU only: hyve needs /dev/kvm)"}
    if "hyve" in best and best["qemu"]["fps"] > 0:
        row["ratio_hyve_to_qemu"] = best["hyve"]["fps"] / best["qemu"]["fps"]
        print(f"  hyve/QEMU: {row['ratio_hyve_to_qemu']:.2f}x the frames")
    else:
        print("  hyve: skipped (no /dev/kvm)")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "vnc-latest.json"), "w") as f:
        json.dump(row, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
