#!/usr/bin/env python3
"""hyve vs QEMU benchmarks (see bench/README.md).

Every row is measured on both VMMs in the same run, interleaved (the order
alternates each repeat), with the same guest image.  The table shows the
median and the minimum of each; the ratio is hyve median / QEMU median.

Adding a row: write one function decorated with @metric (see the examples
at the end of the "metrics" section).  It gets a VMM object and returns one
sample (a number), or a dict {row key: number} when it declares several
rows; it raises NotAvailable("reason") when that VMM cannot do it.
"""

import argparse
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BANNER = b"hyve-testguest: hello"
PROMPT = b"hyve> "


class NotAvailable(Exception):
    """This VMM cannot run this metric here; the message says why."""


class RunError(Exception):
    pass


# --------------------------------------------------------------------------
# Running a VMM and watching its serial output


class Run:
    """One VMM process, started with its COM1 on a pipe.

    t0 is taken just before fork/exec; every chunk read from stdout is
    timestamped, so the arrival time of any output byte is known."""

    def __init__(self, argv, tmpdir):
        self.argv = argv
        self.err_path = os.path.join(tmpdir, "stderr.%d" % time.monotonic_ns())
        self.err = open(self.err_path, "wb")
        self.out = bytearray()
        self.chunks = []  # (end offset in self.out, perf_counter())
        self.t_exit = None
        self.rc = None
        self.t0 = time.perf_counter()
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, close_fds=True)
        os.set_blocking(self.p.stdout.fileno(), False)
        self.eof = False

    @property
    def pid(self):
        return self.p.pid

    def _read(self, timeout):
        if self.eof:
            return False
        r, _, _ = select.select([self.p.stdout], [], [], max(timeout, 0))
        if not r:
            return False
        now = time.perf_counter()
        try:
            data = os.read(self.p.stdout.fileno(), 65536)
        except BlockingIOError:
            return False
        if not data:
            self.eof = True
            return False
        self.out += data
        self.chunks.append((len(self.out), now))
        return True

    def time_of_byte(self, offset):
        """perf_counter() at which output byte number `offset` arrived."""
        for end, t in self.chunks:
            if offset < end:
                return t
        raise IndexError(offset)

    def wait_for(self, pattern, timeout):
        """Reads until `pattern` appears; returns its offset in the output."""
        deadline = time.perf_counter() + timeout
        while True:
            i = self.out.find(pattern)
            if i >= 0:
                return i
            if self.eof:
                raise RunError("%r not seen before EOF" % pattern)
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RunError("%r not seen within %gs" % (pattern, timeout))
            self._read(left)

    def wait_exit(self, timeout):
        deadline = time.perf_counter() + timeout
        while not self.eof:
            left = deadline - time.perf_counter()
            if left <= 0:
                self.kill()
                raise RunError("still running after %gs" % timeout)
            self._read(left)
        try:
            self.rc = self.p.wait(max(deadline - time.perf_counter(), 0.1))
        except subprocess.TimeoutExpired:
            self.kill()
            raise RunError("stdout closed but process did not exit")
        self.t_exit = time.perf_counter()
        self.close()
        return self.rc

    def kill(self):
        """Ends this process (by its pid only): SIGTERM, then SIGKILL."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.rc = self.p.returncode
        self.close()

    def close(self):
        for f in (self.p.stdin, self.p.stdout):
            try:
                f.close()
            except OSError:
                pass
        if not self.err.closed:
            self.err.close()

    def stderr_tail(self, n=400):
        try:
            with open(self.err_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def fail(self, what):
        out = bytes(self.out[-400:]).decode(errors="replace")
        return RunError("%s\n  argv: %s\n  stdout tail: %r\n  stderr tail: %r"
                        % (what, " ".join(self.argv), out, self.stderr_tail()))


# --------------------------------------------------------------------------
# The two VMMs


class VMM:
    name = "?"

    def __init__(self, guest, tmpdir):
        self.guest = guest
        self.tmpdir = tmpdir

    def argv(self, cmdline, cpus=1, mem_mib=256, disk=None, disk_model="virtio-blk"):
        """disk: a raw image attached as disk_model (virtio-blk, nvme or
        ahci: PCI devices), O_DIRECT, io_uring."""
        raise NotImplementedError

    def start(self, cmdline, cpus=1, mem_mib=256, disk=None, disk_model="virtio-blk"):
        return Run(self.argv(cmdline, cpus, mem_mib, disk, disk_model), self.tmpdir)

    def run(self, cmdline, expect_rc=1, timeout=120, **kw):
        """Boots the guest with `cmdline`, waits for it to exit and checks
        the exit status ((V<<1)|1 for a debug-exit write of V: 1 = PASS)."""
        r = self.start(cmdline, **kw)
        try:
            r.wait_exit(timeout)
        except RunError as e:
            raise r.fail(str(e))
        if expect_rc is not None and r.rc != expect_rc:
            raise r.fail("exit status %s, expected %s" % (r.rc, expect_rc))
        return r


class Hyve(VMM):
    name = "hyve"

    def __init__(self, binary, guest, tmpdir):
        super().__init__(guest, tmpdir)
        self.binary = binary

    DISK = {"virtio-blk": "3,virtio-blk,%s,nocache,aio=io_uring", "nvme": "3,nvme,%s,nocache",
            "ahci": "3,ahci,hd:%s,nocache"}

    def argv(self, cmdline, cpus=1, mem_mib=256, disk=None, disk_model="virtio-blk"):
        # nocache = O_DIRECT (QEMU's cache=none); aio=io_uring fails rather
        # than falling back to the thread pool (nvme and ahci take blockif's
        # default, io_uring).
        blk = ["-s", self.DISK[disk_model] % disk] if disk else []
        return [self.binary, "-c", str(cpus), "-m", "%dM" % mem_mib,
                "-l", "com1,stdio", "-o", "lpc.pc-testdev=true",
                "-o", "boot.kernel=" + self.guest, "-o", "boot.cmdline=" + cmdline] + blk + [
                "benchvm"]


class Qemu(VMM):
    name = "qemu"
    # Same CPU model for both machines.  +invtsc makes QEMU expose the TSC
    # frequency in CPUID 0x40000010: microvm has no port 0x61 (pcspk), so
    # the guest's PIT calibration fails there and its ns figures would be
    # based on an assumed 2 GHz.  ("-cpu host"/"max" fail on this PVM host.)
    CPU = "qemu64,+invtsc"

    def __init__(self, binary, machine, guest, tmpdir):
        super().__init__(guest, tmpdir)
        self.binary = binary
        self.machine = machine

    # The test guest finds virtio devices with PCI configuration mechanism #1
    # (ports 0xcf8/0xcfc) and BARs the firmware assigned.  microvm has
    # virtio-mmio, or with pcie=on an ECAM-only bus that qboot leaves
    # unconfigured, so disk rows run on "pc": virtio-blk-pci there is the
    # same modern virtio-pci transport hyve offers, and the rates are timed
    # inside the guest, so SeaBIOS's slower boot does not count.
    DISK_MACHINE = "pc"

    DISK = {"virtio-blk": ["-device", "virtio-blk-pci,drive=disk0"],
            "nvme": ["-device", "nvme,drive=disk0,serial=bench"],
            "ahci": ["-device", "ahci,id=ahci0", "-device", "ide-hd,drive=disk0,bus=ahci0.0"]}

    def argv(self, cmdline, cpus=1, mem_mib=256, disk=None, disk_model="virtio-blk"):
        machine = self.DISK_MACHINE if disk else self.machine
        blk = ["-drive", "file=%s,if=none,id=disk0,format=raw,cache=none,aio=io_uring" % disk
               ] + self.DISK[disk_model] if disk else []
        return [self.binary, "-machine", machine, "-accel", "kvm", "-cpu", self.CPU,
                "-nodefaults", "-nographic", "-serial", "stdio",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-device", "pc-testdev",
                "-no-reboot", "-m", str(mem_mib), "-smp", str(cpus),
                "-kernel", self.guest, "-append", cmdline] + blk


# --------------------------------------------------------------------------
# Metric registry

METRICS = []


class Metric:
    def __init__(self, fn, rows, runs, lower_is_better, hyve_only):
        self.fn = fn
        self.name = fn.__name__
        self.rows = rows  # [(key, label, unit)]
        self.runs = runs
        self.lower_is_better = lower_is_better
        self.hyve_only = hyve_only


def metric(key=None, label=None, unit=None, rows=None, runs=7, lower_is_better=True,
           hyve_only=None):
    """Registers a benchmark.  One row: metric("key", "label", "unit") and
    the function returns a number.  Several rows from one measurement:
    metric(rows=[("key", "label", "unit"), ...]) and the function returns
    {key: number}.  hyve_only="reason" skips QEMU (shown as n/a)."""
    def deco(fn):
        rs = rows if rows is not None else [(key, label, unit)]
        METRICS.append(Metric(fn, rs, runs, lower_is_better, hyve_only))
        return fn
    return deco


# --------------------------------------------------------------------------
# Metrics


@metric("first_byte_ms", "process start -> guest's first serial byte", "ms", runs=31)
def first_byte(vm):
    # First byte of the guest's banner (for QEMU pc, SeaBIOS prints first;
    # that output is not the guest's and is skipped).
    r = vm.run("test=hello")
    return (r.time_of_byte(r.out.find(BANNER)) - r.t0) * 1e3


@metric("hello_exit_ms", "tiny guest start -> exit via debug-exit (wall)", "ms", runs=31)
def hello_exit(vm):
    r = vm.run("test=hello")
    return (r.t_exit - r.t0) * 1e3


def round_trip(vm, test, n):
    r = vm.run("test=%s n=%d" % (test, n))
    m = re.search(rb"%s: (\d+) round trips, (\d+) mismatches, (\d+) us, (\d+) ns/round trip"
                  % test.encode(), r.out)
    if not m:
        raise r.fail("no '%s: ... ns/round trip' line" % test)
    if int(m.group(2)):
        raise r.fail("%s: %s mismatches" % (test, m.group(2).decode()))
    # The guest times the loop with its TSC and its own idea of the TSC
    # frequency.  Cross-check against the host clock: the loop lies between
    # the banner and the result line, and is nearly all of that interval.
    guest_us = int(m.group(3))
    host_us = (r.time_of_byte(m.start()) - r.time_of_byte(r.out.find(BANNER))) * 1e6
    if not 0.5 * host_us <= guest_us <= 1.02 * host_us + 2000:
        raise r.fail("guest says the loop took %d us, the host saw %d us between the banner "
                     "and the result: guest TSC frequency wrong?" % (guest_us, host_us))
    return guest_us * 1e3 / int(m.group(1))  # ns, finer than the guest's integer


RT_N = 10000


@metric("pio_rt_ns", "PIO round trip to userspace device (CPL3 outl+inl 0xe0)", "ns", runs=15)
def pio_rt(vm):
    return round_trip(vm, "pio", RT_N)


@metric("mmio_rt_ns", "MMIO round trip to userspace device (CPL3 32-bit, 0xff000000)", "ns",
        runs=15)
def mmio_rt(vm):
    return round_trip(vm, "mmio", RT_N)


def smaps(pid):
    """Yields a dict per mapping of /proc/PID/smaps (size in bytes, kB fields)."""
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                if cur:
                    yield cur
                cur = {"start": m.group(1), "size": int(m.group(2), 16) - int(m.group(1), 16),
                       "perm": m.group(3), "path": m.group(4)}
                continue
            k, _, v = line.partition(":")
            v = v.split()
            if cur is not None and len(v) == 2 and v[1] == "kB":
                cur[k] = int(v[0])
    if cur:
        yield cur


def guest_ram_mapping(maps, mem_bytes):
    """The guest RAM mapping: a writable private mapping of exactly the
    configured RAM size that is anonymous (hyve's mmap; QEMU's default
    pc.ram / microvm.ram RAM block, which QEMU maps separately from its
    PROT_NONE guard page) or a memfd.  Exactly one must exist."""
    c = [m for m in maps if m["size"] == mem_bytes and m["perm"].startswith("rw")
         and (m["path"] == "" or m["path"].startswith("/memfd:"))]
    if len(c) != 1:
        raise RunError("expected one %d-byte rw anonymous mapping, found %d: %s"
                       % (mem_bytes, len(c), [m["start"] for m in c]))
    return c[0]


RSS_SETTLE_S = 1.0


@metric(rows=[("rss_overhead_mib", "VMM RSS overhead (RSS - guest-touched), idle, 1 vCPU, 256 MiB",
               "MiB"),
              ("anon_overhead_mib", "VMM anonymous memory overhead (same, Anonymous only)", "MiB"),
              ("guest_touched_mib", "guest-touched RAM (Rss of the guest RAM mapping)", "MiB")],
        runs=9)
def rss(vm):
    mem_mib = 256
    r = vm.start("test=demo", cpus=1, mem_mib=mem_mib)
    try:
        try:
            r.wait_for(PROMPT, 60)
        except RunError as e:
            raise r.fail(str(e))
        time.sleep(RSS_SETTLE_S)
        maps = list(smaps(r.pid))
        if r.p.poll() is not None:
            raise r.fail("exited while idle")
    finally:
        r.kill()
    ram = guest_ram_mapping(maps, mem_mib << 20)
    total_rss = sum(m.get("Rss", 0) for m in maps)
    total_anon = sum(m.get("Anonymous", 0) for m in maps)
    return {"rss_overhead_mib": (total_rss - ram.get("Rss", 0)) / 1024,
            "anon_overhead_mib": (total_anon - ram.get("Anonymous", 0)) / 1024,
            "guest_touched_mib": ram.get("Rss", 0) / 1024}


BLK_IMAGE_MIB = 256
BLK_MS = 1000
_blk_images = {}


def blk_image(tmpdir):
    """The raw image both VMMs use (created once per run, in tmpdir, which
    must support O_DIRECT: not tmpfs).  Filled with data, not holes, so
    reads reach the disk."""
    path = _blk_images.get(tmpdir)
    if path:
        return path
    path = os.path.join(tmpdir, "blk.img")
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(BLK_IMAGE_MIB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    _blk_images[tmpdir] = path
    return path


def blk_phase(r, phase, test="blkbench"):
    """(requests, bytes per request, guest us) of one phase of test=blkbench
    (or nvmebench, ahcibench: the same lines), with the guest's time checked
    against the host clock."""
    t = test.encode()
    m = re.search(rb"%s: %s: (\d+) requests of (\d+) bytes in (\d+) us, qd (\d+), (\d+) errors"
                  % (t, phase.encode()), r.out)
    start = r.out.find(b"%s: %s start" % (t, phase.encode()))
    if not m or start < 0:
        raise r.fail("no '%s: %s' result" % (test, phase))
    n, size, guest_us = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if int(m.group(5)) or n == 0 or guest_us == 0:
        raise r.fail("%s %s: %d requests, %s errors" % (test, phase, n, m.group(5).decode()))
    host_us = (r.time_of_byte(m.start()) - r.time_of_byte(start)) * 1e6
    if not 0.5 * host_us <= guest_us <= 1.02 * host_us + 2000:
        raise r.fail("%s %s: guest says %d us, the host saw %d us: guest TSC frequency wrong?"
                     % (test, phase, guest_us, host_us))
    return n, size, guest_us


def disk_rows(vm, test, prefix, disk_model):
    """Runs one of the guest's disk benchmarks: MB/s of the sequential
    phases and IOPS of the random reads, keyed PREFIX_seqread_mbs etc."""
    r = vm.run("test=%s ms=%d" % (test, BLK_MS), disk=blk_image(vm.tmpdir), disk_model=disk_model, timeout=180)
    out = {}
    for phase in ("seqread", "seqwrite"):
        n, size, us = blk_phase(r, phase, test)
        out["%s_%s_mbs" % (prefix, phase)] = n * size / us  # bytes/us = MB/s
    n, _, us = blk_phase(r, "randread", test)
    out["%s_randread_iops" % prefix] = n * 1e6 / us
    return out


@metric(rows=[("blk_seqread_mbs", "virtio-blk seq. read, 1 MiB x4 in flight (guest; QEMU on pc)",
               "MB/s"),
              ("blk_seqwrite_mbs", "virtio-blk seq. write, 1 MiB x4 in flight (guest; QEMU on pc)",
               "MB/s"),
              ("blk_randread_iops", "virtio-blk random read, 4 KiB x16 in flight (guest; QEMU on pc)",
               "IOPS")],
        runs=5, lower_is_better=False)
def blk(vm):
    # test=blkbench: each phase runs BLK_MS ms against the same 256 MiB raw
    # image, O_DIRECT + io_uring on both VMMs (hyve nocache,aio=io_uring;
    # QEMU cache=none,aio=io_uring).
    return disk_rows(vm, "blkbench", "blk", "virtio-blk")


@metric(rows=[("nvme_seqread_mbs", "NVMe seq. read, 512 KiB (MDTS) x4 in flight (guest; QEMU nvme on pc)",
               "MB/s"),
              ("nvme_seqwrite_mbs", "NVMe seq. write, 512 KiB (MDTS) x4 in flight (guest; QEMU nvme on pc)",
               "MB/s"),
              ("nvme_randread_iops", "NVMe random read, 4 KiB x16 in flight (guest; QEMU nvme on pc)",
               "IOPS")],
        runs=5, lower_is_better=False)
def nvme(vm):
    # test=nvmebench: one polled I/O queue pair, the same image and phases as
    # blk; 1 MiB requests are cut to the controllers' MDTS (512 KiB on both).
    return disk_rows(vm, "nvmebench", "nvme", "nvme")


@metric(rows=[("ahci_seqread_mbs", "AHCI seq. read, 1 MiB x4 NCQ (guest; QEMU ahci + ide-hd on pc)", "MB/s"),
              ("ahci_seqwrite_mbs", "AHCI seq. write, 1 MiB x4 NCQ (guest; QEMU ahci + ide-hd on pc)", "MB/s"),
              ("ahci_randread_iops", "AHCI random read, 4 KiB x16 NCQ (guest; QEMU ahci + ide-hd on pc)",
               "IOPS")],
        runs=5, lower_is_better=False)
def ahci(vm):
    # test=ahcibench: READ/WRITE FPDMA QUEUED on the first disk port, polled.
    return disk_rows(vm, "ahcibench", "ahci", "ahci")


# Example of a hyve-only row (kept out of the table until the feature exists):
#
# @metric("restore_ms", "restore from checkpoint -> guest running", "ms", runs=5,
#         hyve_only="QEMU's loadvm is not comparable here")
# def restore(vm):
#     ...
#     return ms


# --------------------------------------------------------------------------
# Harness


def stats(xs):
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3),
            "samples": [round(x, 3) for x in xs]}


def measure(m, vmms, runs):
    """Runs m on each VMM `runs` times, interleaved, alternating the order."""
    samples = {v.name: {k: [] for k, _, _ in m.rows} for v in vmms}
    na = {}
    if m.hyve_only:
        na["qemu"] = m.hyve_only
    for i in range(runs):
        order = vmms if i % 2 == 0 else vmms[::-1]
        for v in order:
            if v.name in na:
                continue
            try:
                x = m.fn(v)
            except NotAvailable as e:
                na[v.name] = str(e)
                continue
            except RunError as e:
                na[v.name] = "failed: " + str(e).splitlines()[0]
                print("  %s %s run %d failed:\n%s" % (m.name, v.name, i + 1, e), file=sys.stderr)
                continue
            if not isinstance(x, dict):
                x = {m.rows[0][0]: x}
            for k, _, _ in m.rows:
                samples[v.name][k].append(float(x[k]))
    out = []
    for key, label, unit in m.rows:
        row = {"key": key, "metric": label, "unit": unit, "lower_is_better": m.lower_is_better}
        for v in vmms:
            xs = samples[v.name][key]
            if v.name in na:
                row[v.name] = {"na": na[v.name]}
            else:
                row[v.name] = stats(xs)
        h, q = row.get("hyve", {}), row.get("qemu", {})
        row["ratio"] = (round(h["median"] / q["median"], 4)
                        if "median" in h and "median" in q and q["median"] else None)
        row["runs"] = runs
        out.append(row)
    return out


def fmt(x):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.2f" % x


def table(rows, machine):
    hdr = ["metric", "unit", "hyve median", "hyve min", "QEMU median", "QEMU min",
           "hyve/QEMU", "runs"]
    lines = []
    notes = []
    for r in rows:
        cells = [r["metric"], r["unit"]]
        for v in ("hyve", "qemu"):
            d = r.get(v, {})
            if "na" in d:
                notes.append("%s %s: n/a: %s" % (r["key"], v, d["na"]))
                cells += ["n/a", "n/a"]
            else:
                cells += [fmt(d.get("median")), fmt(d.get("min"))]
        cells += ["n/a" if r["ratio"] is None else "%.2f" % r["ratio"], str(r["runs"])]
        lines.append(cells)
    w = [max(len(c[i]) for c in lines + [hdr]) for i in range(len(hdr))]

    def line(c):
        return "  ".join(x.ljust(w[i]) if i < 2 else x.rjust(w[i]) for i, x in enumerate(c))
    s = ["QEMU machine: %s" % machine, line(hdr), line(["-" * x for x in w])]
    s += [line(c) for c in lines]
    s += notes
    return "\n".join(s)


def compact_json(obj):
    s = json.dumps(obj, indent=2)
    # keep number lists on one line
    return re.sub(r"\[\s+([-0-9.eE,\s]+?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", s)


def git_rev():
    try:
        return subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def qemu_version(binary):
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def select_machine(qemu_bin, guest, tmpdir, machines, runs):
    """Boots test=hello on each candidate machine, interleaved; the one with
    the lowest median wall time is used for every row."""
    res = {}
    vms = [Qemu(qemu_bin, m, guest, tmpdir) for m in machines]
    times = {m: [] for m in machines}
    errors = {}
    for i in range(runs):
        for v in (vms if i % 2 == 0 else vms[::-1]):
            if v.machine in errors:
                continue
            try:
                r = v.run("test=hello")
                times[v.machine].append((r.t_exit - r.t0) * 1e3)
            except RunError as e:
                errors[v.machine] = str(e).splitlines()[0]
    for m in machines:
        res[m] = ({"na": errors[m]} if m in errors else
                  {"hello_exit_ms": stats(times[m])})
    ok = [m for m in machines if m not in errors]
    if not ok:
        return None, res
    return min(ok, key=lambda m: statistics.median(times[m])), res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hyve", default=os.path.join(ROOT, "build/release/hyve"))
    ap.add_argument("--guest", default=os.path.join(ROOT, "guests/testguest/testguest.elf"))
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    ap.add_argument("--machine", help="QEMU machine (default: the faster of microvm and pc)")
    ap.add_argument("--runs", type=int, help="repeats for every metric (default: per metric)")
    ap.add_argument("--only", help="comma-separated metric function names")
    ap.add_argument("--list", action="store_true", help="list the metrics and exit")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench/results/latest.json"))
    a = ap.parse_args()

    if a.list:
        for m in METRICS:
            print("%-12s %s" % (m.name, "; ".join(r[0] for r in m.rows)))
        return 0
    todo = METRICS
    if a.only:
        names = a.only.split(",")
        todo = [m for m in METRICS if m.name in names]
        if len(todo) != len(names):
            ap.error("unknown metric in --only; see --list")

    t_start = time.time()
    tmpdir = tempfile.mkdtemp(prefix="hyve-bench.")
    try:
        # Snapshot the binaries: other people may rebuild the tree meanwhile.
        hyve_bin = os.path.join(tmpdir, "hyve")
        guest = os.path.join(tmpdir, "testguest.elf")
        shutil.copy2(a.hyve, hyve_bin)
        shutil.copy2(a.guest, guest)

        machines = [a.machine] if a.machine else ["microvm", "pc"]
        print("selecting the QEMU machine (test=hello wall time): %s ..." % ", ".join(machines),
              flush=True)
        machine, selection = select_machine(a.qemu, guest, tmpdir, machines,
                                            1 if a.machine else 3)
        for m, d in selection.items():
            print("  %-8s %s" % (m, d.get("na") or "median %.0f ms, min %.0f ms" % (
                d["hello_exit_ms"]["median"], d["hello_exit_ms"]["min"])), flush=True)

        hyve = Hyve(hyve_bin, guest, tmpdir)
        vmms = [hyve]
        if machine:
            vmms.append(Qemu(a.qemu, machine, guest, tmpdir))
        # Warm-up (page cache, lazy binding): one discarded boot each.
        for v in vmms:
            try:
                v.run("test=hello")
            except RunError as e:
                print("warm-up of %s failed: %s" % (v.name, e), file=sys.stderr)

        rows = []
        for m in todo:
            runs = a.runs or m.runs
            t = time.time()
            print("%s (%d runs) ..." % (m.name, runs), end=" ", flush=True)
            got = measure(m, vmms, runs)
            if not machine:
                for r in got:
                    r["qemu"] = {"na": "no QEMU machine could boot the guest: %s" % selection}
            rows += got
            print("%.0f s" % (time.time() - t), flush=True)

        machine_desc = ("%s (-accel kvm -cpu %s; test=hello median: %s)" % (
            machine, Qemu.CPU, ", ".join(
                "%s %.0f ms" % (k, d["hello_exit_ms"]["median"]) if "hello_exit_ms" in d
                else "%s n/a" % k for k, d in selection.items()))
            if machine else "none")
        print()
        print(table(rows, machine_desc))

        result = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "duration_s": round(time.time() - t_start, 1),
            "host": {"kernel": platform.release(), "cpu": cpu_model(), "nproc": os.cpu_count()},
            "hyve": {"git": git_rev(), "binary": os.path.relpath(a.hyve, ROOT)},
            "qemu": {"version": qemu_version(a.qemu), "machine": machine, "cpu": Qemu.CPU,
                     "command": (shlex.join(vmms[-1].argv("CMDLINE")).replace(guest, os.path.relpath(a.guest, ROOT))
                                if machine else None),
                     "machine_selection": selection},
            "metrics": rows,
        }
        disk_tests = [(f, test, model) for f, test, model in
                      ((blk, "blkbench", "virtio-blk"), (nvme, "nvmebench", "nvme"), (ahci, "ahcibench", "ahci"))
                      if any(m.fn is f for m in todo)]
        if disk_tests:
            # The disk rows' command lines (QEMU runs them on DISK_MACHINE).
            result["blk"] = {"image_mib": BLK_IMAGE_MIB, "phase_ms": BLK_MS, "commands": {
                "%s %s" % (v.name, model): shlex.join(v.argv("test=%s ms=%d" % (test, BLK_MS), disk="IMG",
                                                             disk_model=model)).replace(
                    guest, os.path.relpath(a.guest, ROOT)).replace(hyve_bin, os.path.relpath(a.hyve, ROOT))
                for _, test, model in disk_tests for v in vmms}}
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json + ".tmp", "w") as f:
            f.write(compact_json(result) + "\n")
        os.replace(a.json + ".tmp", a.json)
        print("\nwrote %s (%.0f s)" % (os.path.relpath(a.json), time.time() - t_start))
        failed = [r["key"] for r in rows if "na" in r.get("hyve", {})]
        if failed:
            print("hyve could not run: %s" % ", ".join(failed), file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
