#!/usr/bin/env python3
"""Inspect hyve checkpoint files (format: docs/snapshot.md).

  ckpt.py list FILE              sections: name, version, flags, length, offset
  ckpt.py config FILE            the saved configuration (key=value lines)
  ckpt.py compare A B            compare vCPU, chip and device sections,
                                 ignoring fields that are clocks (TSC, LAPIC
                                 current count, PIT load times, kvmclock, RTC)
  ckpt.py corrupt FILE SECTION   flip one byte in SECTION's data (for tests)
  ckpt.py set-major FILE N       rewrite the format major version (for tests)
Exit status: 0 ok / identical, 1 differences, 2 bad file or usage.
"""
import struct
import sys
import zlib

HDR = 64
SEC = 64


def die(msg):
    print("ckpt.py: " + msg, file=sys.stderr)
    sys.exit(2)


def sections(data):
    if data[:8] != b"HYVECKPT":
        die("not a hyve checkpoint")
    off = struct.unpack_from("<I", data, 12)[0]
    out = []
    while True:
        if off + SEC > len(data):
            die("truncated at offset %d" % off)
        h = data[off:off + SEC]
        name = h[:32].rstrip(b"\0").decode()
        version, flags, length, doff, dcrc = struct.unpack_from("<IIQQI", h, 32)
        out.append(dict(name=name, version=version, flags=flags, length=length, off=doff, hdr=off, crc=dcrc))
        if name == "end":
            return out
        off = doff + length


def payload(data, s):
    return data[s["off"]:s["off"] + s["length"]]


def blob(b, p):
    n = struct.unpack_from("<I", b, p)[0]
    return b[p + 4:p + 4 + n], p + 4 + n


CLOCK_MSRS = {0x10, 0xe7, 0xe8,   # TSC, MPERF, APERF
              0x40000010, 0x40000020}   # Hyper-V VP_RUNTIME, TIME_REF_COUNT (KVM lists them)


def vcpu_msrs(b):
    """The (index, value) MSR list at the end of a vCPU section."""
    return MSR_LISTS.get(bytes(b), [])


MSR_LISTS = {}


def mask_vcpu(b):
    """The vCPU section with clock-driven fields zeroed (layout: core/vmstate.c)."""
    out = bytearray()
    p = 0
    for _ in range(2):                      # regs, sregs
        x, p = blob(b, p)
        out += x
    n = struct.unpack_from("<I", b, p)[0]  # xsave
    out += b[p + 4:p + 4 + n]
    p += 4 + n
    if b[p]:                                # xcrs
        x, p = blob(b, p + 1)
        out += x
    else:
        p += 1
    lapic, p = blob(b, p)
    lapic = bytearray(lapic)
    lapic[0x390:0x394] = b"\0\0\0\0"        # timer current count
    out += lapic
    ev, p = blob(b, p)
    out += ev
    out += b[p:p + 4]                       # MP state
    p += 4
    if b[p]:
        x, p = blob(b, p + 1)
        out += x
    else:
        p += 1
    nmsr = struct.unpack_from("<I", b, p)[0]
    p += 4
    msrs = []
    for _ in range(nmsr):
        idx, val = struct.unpack_from("<IQ", b, p)
        p += 12
        msrs.append((idx, val))
        out += struct.pack("<IQ", idx, 0 if idx in CLOCK_MSRS else val)
    MSR_LISTS[bytes(out)] = msrs
    return bytes(out)


def mask_pit(b):
    x, _ = blob(b, 0)
    x = bytearray(x)
    for ch in range(3):                     # kvm_pit_channel_state.count_load_time
        x[ch * 24 + 16:ch * 24 + 24] = bytes(8)
    return bytes(x)


def comparable(name, b):
    if name.startswith("vcpu."):
        return mask_vcpu(b)
    if name == "pit":
        return mask_pit(b)
    if name in ("clock", "rtc", "config"):
        return None
    return b


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        sys.exit(2)
    cmd, path = argv[1], argv[2]
    data = open(path, "rb").read()
    secs = sections(data)
    if cmd == "list":
        for s in secs:
            print("%-16s v%-3d flags %d len %12d off %d" % (s["name"], s["version"], s["flags"], s["length"], s["off"]))
    elif cmd == "config":
        sys.stdout.write(payload(data, [s for s in secs if s["name"] == "config"][0]).decode())
    elif cmd == "compare":
        other = open(argv[3], "rb").read()
        a = {s["name"]: s for s in secs if s["name"] not in ("memory", "end")}
        b = {s["name"]: s for s in sections(other) if s["name"] not in ("memory", "end")}
        diff = sorted(set(a) ^ set(b))
        for n in diff:
            print("only in one file: %s" % n)
        compared = 0
        for n in sorted(set(a) & set(b)):
            x, y = comparable(n, payload(data, a[n])), comparable(n, payload(other, b[n]))
            if x is None:
                continue
            compared += 1
            if x != y or a[n]["version"] != b[n]["version"]:
                pos = next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), min(len(x), len(y)))
                print("differs: %s (first at byte %d of %d/%d)" % (n, pos, len(x), len(y)))
                if n.startswith("vcpu."):   # name the MSRs, the usual suspects
                    mx, my = dict(vcpu_msrs(x)), dict(vcpu_msrs(y))
                    for idx in sorted(set(mx) | set(my)):
                        if idx not in CLOCK_MSRS and mx.get(idx) != my.get(idx):
                            print("  MSR %#x: %s -> %s" % (idx, mx.get(idx), my.get(idx)))
                diff.append(n)
        print("%d sections compared, %d differ" % (compared, len(diff)))
        sys.exit(1 if diff else 0)
    elif cmd == "corrupt":
        s = [s for s in secs if s["name"] == argv[3]]
        if not s or s[0]["length"] == 0:
            die("no section %s with data" % argv[3])
        pos = s[0]["off"] + s[0]["length"] // 2
        buf = bytearray(data)
        buf[pos] ^= 0x40
        open(path, "wb").write(buf)
    elif cmd == "set-major":
        buf = bytearray(data)
        struct.pack_into("<H", buf, 8, int(argv[3]))
        struct.pack_into("<I", buf, 60, zlib.crc32(bytes(buf[:60])))
        open(path, "wb").write(buf)
    else:
        die("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
