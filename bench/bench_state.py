#!/usr/bin/env python3
"""hyve vs QEMU: checkpoint, restore and live migration (see bench/README.md).

Same conventions as bench/bench.py, whose harness this imports (Run, the
table, the JSON layout): every row is measured on both VMMs in the same
run, the repeats are interleaved (the order alternates each repeat), the
table shows the median and the minimum of each, and the ratio is hyve
median / QEMU median.  Results go to bench/results/state-latest.json.

Rows:
  checkpoint  1 GiB guest with 1000 MiB of non-zero memory (test=worker
              dirty=0): GB/s of non-zero RAM and wall time.  hyve: hyvectl
              --checkpoint.  QEMU: QMP "stop", then "migrate exec:cat > F".
  restore     256 MiB, 1 GiB and 4 GiB guests: process start -> state
              loaded, vCPUs paused, VMM answering its control channel.
              hyve -r F -o boot.paused=true (lazy, and a second row with
              snapshot.restore_memory=copy) vs QEMU -incoming "exec:cat F".
              For 1 GiB also: -> the guest has read all of its RAM again.
  migration   idle (dirty=0) and dirtying (default dirty: 1/4 of the pages
              per round) 1 GiB guests, two processes over loopback: total
              time and downtime as each VMM reports them, and source
              paused -> destination resumed (QEMU: STOP/RESUME events).
"""

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (the harness shared with bench.py)
from bench import RunError  # noqa: E402

ROOT = B.ROOT
ROUND_OK = b"sum OK"          # worker: "worker: round R sum OK (S)" after each full verify pass
FAILED = b"FAIL"

# Guest sizes: RAM MiB -> worker region MiB.  The worker region starts at
# 16 MiB and must stay in RAM below 3 GiB, so the 4 GiB guest holds 3000 MiB
# of data; the others are filled up to 24 MiB short of the end.
SIZES = [(256, 232), (1024, 1000), (4096, 3000)]
CKPT_SIZE = 1024
MIGRATE_SIZE = 1024

# QEMU settings, and why.
# - "qemu64" without bench.py's +invtsc: QEMU refuses to migrate (or save) a
#   VM with invtsc unless tsc-frequency is pinned.  The guest takes the TSC
#   frequency from kvmclock instead (the worker uses it only to pace its
#   output lines).
# - max-bandwidth: QEMU 7.2 caps migration at 128 MiB/s by default (8 s for
#   1 GiB); hyve has no cap.  Lifted for both file and TCP, as libvirt does
#   for "virsh save".  downtime-limit stays at its default, 300 ms (hyve's
#   migration.downtime_ms default is also 300).
QEMU_CPU = "qemu64"
QEMU_MAX_BANDWIDTH = 100 << 30  # bytes/s, i.e. no cap
POLL_S = 0.002                  # readiness polling period (both VMMs alike)


class Skip(Exception):
    """This VMM cannot do this here (shown as n/a with the reason)."""


# --------------------------------------------------------------------------
# Control channels: hyve's control socket and QEMU's QMP


def hyve_ctl(path, command, timeout=10.0):
    """One request on hyve's control socket (core/control.h); returns the
    reply lines, raises RunError on ERR."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"HYVECTL 1 %s\n" % command.encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    lines = data.decode(errors="replace").splitlines()
    if not lines or not lines[-1].startswith("OK"):
        raise RunError("hyve control %r: %s" % (command, lines[-1] if lines else "no answer"))
    return lines


class Qmp:
    """A QMP client that keeps asynchronous events (with arrival times)."""

    def __init__(self, path, proc, timeout):
        deadline = time.perf_counter() + timeout
        while True:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.s.close()
                if proc.poll() is not None:
                    raise RunError("QEMU exited (status %s) before QMP came up" % proc.returncode)
                if time.perf_counter() > deadline:
                    raise RunError("QMP socket %s not up within %gs" % (path, timeout))
                time.sleep(POLL_S)
        self.buf = b""
        self.lines = []   # [(perf_counter at arrival, message)]
        self.events = []
        self._next(deadline)  # greeting
        self.cmd("qmp_capabilities")

    def _next(self, deadline):
        while not self.lines:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RunError("QMP: no message in time")
            self.s.settimeout(left)
            try:
                d = self.s.recv(1 << 20)
            except socket.timeout:
                raise RunError("QMP: no message in time")
            if not d:
                raise RunError("QMP: connection closed (QEMU exited?)")
            now = time.perf_counter()
            self.buf += d
            while b"\n" in self.buf:
                line, _, self.buf = self.buf.partition(b"\n")
                if line.strip():
                    self.lines.append((now, json.loads(line)))
        return self.lines.pop(0)

    def cmd(self, name, timeout=30, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.perf_counter() + timeout
        while True:
            t, m = self._next(deadline)
            if "event" in m:
                self.events.append((t, m))
            elif "error" in m:
                raise RunError("QMP %s: %s" % (name, m["error"].get("desc")))
            elif "return" in m:
                return m["return"]

    def wait_event(self, pred, timeout):
        """The first event (queued or arriving) for which pred(msg) holds:
        (arrival time, msg)."""
        deadline = time.perf_counter() + timeout
        while True:
            for i, (t, m) in enumerate(self.events):
                if pred(m):
                    del self.events[i]
                    return t, m
            t, m = self._next(deadline)
            if "event" in m:
                self.events.append((t, m))

    def close(self):
        self.s.close()


def migration_event(*states):
    return lambda m: m.get("event") == "MIGRATION" and m["data"]["status"] in states


def completed_info(r):
    """query-migrate after the "completed" event.  QEMU 7.2 emits the event
    before its migration thread computes total-time and downtime (they
    read 0 until then), so ask again until they are there."""
    deadline = time.perf_counter() + 10
    while True:
        info = r.qmp.cmd("query-migrate")
        if info.get("total-time"):
            return info
        if time.perf_counter() > deadline:
            raise RunError("query-migrate: no total-time 10 s after completion: %s" % info)
        time.sleep(0.01)


def event_time(m):
    """QEMU's own timestamp of an event (host wall clock, microseconds)."""
    return m["timestamp"]["seconds"] + m["timestamp"]["microseconds"] / 1e6


# --------------------------------------------------------------------------
# The two VMMs: boot a worker guest, save it, restore it, migrate it


def worker_cmdline(region_mib, dirty=None):
    # interval=0: a line after every full verify pass (the restore rows count them)
    return "test=worker mem=%d interval=0%s" % (region_mib, "" if dirty is None else " dirty=%d" % dirty)


def wait_nth(r, pattern, n, timeout):
    """Offset of the n-th occurrence of pattern in r's output (waits for it)."""
    deadline = time.perf_counter() + timeout
    while True:
        i = -1
        for _ in range(n):
            i = r.out.find(pattern, i + 1)
            if i < 0:
                break
        if i >= 0:
            return i
        if r.eof or time.perf_counter() > deadline:
            raise r.fail("%r not seen %d times within %gs" % (pattern, n, timeout))
        r._read(deadline - time.perf_counter())


def run_tool(argv, timeout):
    """Runs hyvectl; a timeout is a failed run, not a crash of the bench."""
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunError("%s: no answer within %gs" % (" ".join(argv), timeout))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_file(path, pattern, timeout, proc=None):
    """Waits until the file (a VMM's stderr) matches the regex; returns the match."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            with open(path, "rb") as f:
                m = re.search(pattern, f.read())
            if m:
                return m
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RunError("process exited (status %s) before %r appeared" % (proc.returncode, pattern))
        if time.perf_counter() > deadline:
            raise RunError("%r not in %s within %gs" % (pattern, path, timeout))
        time.sleep(0.01)


class StateVMM:
    name = "?"

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.seq = 0

    def path(self, what):
        self.seq += 1
        return os.path.join(self.tmpdir, "%s-%s%d" % (self.name, what, self.seq))

    def boot_worker(self, mem_mib, region_mib, dirty=None, timeout=180):
        """A running worker guest that has filled its region and verified it
        once (so all the region is non-zero)."""
        r = self.start(worker_cmdline(region_mib, dirty), mem_mib)
        r.cmdline, r.mem_mib = worker_cmdline(region_mib, dirty), mem_mib
        try:
            r.wait_for(ROUND_OK, timeout)
        except RunError as e:
            kill(r)
            raise r.fail(str(e))
        return r


class HyveState(StateVMM):
    name = "hyve"

    def __init__(self, binary, hyvectl, guest, tmpdir):
        super().__init__(tmpdir)
        self.binary, self.hyvectl, self.guest = binary, hyvectl, guest

    def start(self, cmdline, mem_mib):
        sock = self.path("ctl") + ".sock"
        argv = B.Hyve(self.binary, self.guest, self.tmpdir).argv(cmdline, cpus=1, mem_mib=mem_mib)
        argv[-1:-1] = ["-o", "control.socket=" + sock]   # before the VM name
        r = B.Run(argv, self.tmpdir)
        r.ctl = sock
        return r

    def checkpoint(self, r, path):
        """hyvectl --checkpoint; the VM is paused for all of it.  Returns
        (wall ms, non-zero RAM bytes written)."""
        t0 = time.perf_counter()
        p = run_tool([self.hyvectl, "--socket=" + r.ctl, "--checkpoint=" + path], 300)
        wall = (time.perf_counter() - t0) * 1e3
        if p.returncode:
            raise r.fail("hyvectl --checkpoint: status %d: %s"
                         % (p.returncode, (p.stdout + p.stderr).decode(errors="replace").strip()))
        m = wait_file(r.err_path, rb"checkpoint %s: ([\d.]+) MiB of RAM written"
                      % re.escape(path.encode()), 10)
        return wall, float(m.group(1)) * (1 << 20)

    def restore(self, path, ref, copy=False):
        """hyve -r with vCPUs held paused: t0 -> the control socket answers
        'state paused' (its main loop runs: RAM, devices and vCPU state are
        loaded).  Returns the running Run (caller kills it) and ms."""
        sock = self.path("rctl") + ".sock"
        argv = [self.binary, "-r", path, "-o", "boot.paused=true", "-o", "control.socket=" + sock]
        if copy:
            argv += ["-o", "snapshot.restore_memory=copy"]
        r = B.Run(argv, self.tmpdir)
        r.ctl = sock
        try:
            deadline = r.t0 + 120
            while True:
                try:
                    lines = hyve_ctl(sock, "stats")
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if r.p.poll() is not None:
                        raise r.fail("hyve -r exited with status %s" % r.p.returncode)
                    if time.perf_counter() > deadline:
                        raise r.fail("control socket not up within 120 s")
                    time.sleep(POLL_S)
            ms = (time.perf_counter() - r.t0) * 1e3
            if "state paused" not in lines:
                raise r.fail("restored VM not paused: %s" % lines)
        except BaseException:
            kill(r)
            raise
        return r, ms

    def resume(self, r):
        hyve_ctl(r.ctl, "resume")

    def migrate(self, src, timeout):
        """Live migration to a second hyve on loopback.  Returns the
        destination Run and hyve's own figures."""
        port = free_port()
        dst = B.Run([self.binary, "-R", "127.0.0.1:%d" % port, "-o", "control.socket=none"], self.tmpdir)
        try:
            wait_file(dst.err_path, rb"waiting for an incoming VM", 30, dst.p)
            t0 = time.perf_counter()
            p = run_tool([self.hyvectl, "--socket=" + src.ctl, "--migrate-live=127.0.0.1:%d" % port],
                         timeout)
            wall = (time.perf_counter() - t0) * 1e3
            if p.returncode:
                raise src.fail("hyvectl --migrate-live: status %d: %s"
                               % (p.returncode, (p.stdout + p.stderr).decode(errors="replace").strip()))
            m = wait_file(src.err_path, rb"migrated to [^:]+:\d+: (\d+) rounds, ([\d.]+) MiB sent, "
                          rb"total (\d+) ms, downtime (\d+) ms", 10)
        except BaseException:
            kill(dst)
            raise
        # hyve's downtime already ends when the destination has loaded
        # everything and is about to start its vCPUs.
        return dst, {"total_ms": float(m.group(3)), "downtime_ms": float(m.group(4)),
                     "pause_to_resume_ms": float(m.group(4)),
                     "rounds": int(m.group(1)), "mib_sent": float(m.group(2)), "hyvectl_wall_ms": wall}


class QemuState(StateVMM):
    name = "qemu"

    def __init__(self, binary, machine, guest, tmpdir):
        super().__init__(tmpdir)
        self.binary, self.machine, self.guest = binary, machine, guest

    def argv(self, cmdline, mem_mib, qmp, extra=()):
        argv = B.Qemu(self.binary, self.machine, self.guest, self.tmpdir).argv(cmdline, cpus=1,
                                                                             mem_mib=mem_mib)
        argv[argv.index("-cpu") + 1] = QEMU_CPU
        return argv + ["-qmp", "unix:%s,server=on,wait=off" % qmp] + list(extra)

    def _run(self, cmdline, mem_mib, extra=()):
        qmp = self.path("qmp") + ".sock"
        r = B.Run(self.argv(cmdline, mem_mib, qmp, extra), self.tmpdir)
        try:
            r.qmp = Qmp(qmp, r.p, 120)
        except RunError as e:
            r.kill()
            raise r.fail(str(e))
        return r

    def start(self, cmdline, mem_mib):
        r = self._run(cmdline, mem_mib)
        r.qmp.cmd("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
        r.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": QEMU_MAX_BANDWIDTH})
        return r

    def checkpoint(self, r, path):
        """stop (hyve also pauses the vCPUs for the whole save), then
        migrate to a file; the clock runs from "stop" to the MIGRATION
        completed event.  Returns (wall ms, non-zero RAM bytes)."""
        t0 = time.perf_counter()
        r.qmp.cmd("stop")
        r.qmp.cmd("migrate", uri="exec:cat > %s" % shlex.quote(path))
        t1, ev = r.qmp.wait_event(migration_event("completed", "failed", "cancelled"), 300)
        if ev["data"]["status"] != "completed":
            raise r.fail("migrate to file: %s" % ev["data"]["status"])
        info = completed_info(r)
        # normal pages = pages QEMU sent with contents (not detected as zero)
        return (t1 - t0) * 1e3, float(info["ram"]["normal-bytes"])

    def restore(self, path, ref, copy=False):
        """-incoming "exec:cat F" (ref: the saved VM's command line and
        size, which QEMU needs again): t0 -> query-status no longer says
        "inmigrate" (the saved VM was stopped, so QEMU ends "paused")."""
        assert not copy
        cmdline, mem_mib = ref
        r = self._run(cmdline, mem_mib, ["-incoming", "exec:cat %s" % shlex.quote(path)])
        try:
            deadline = r.t0 + 120
            while True:
                st = r.qmp.cmd("query-status", timeout=120)["status"]
                if st != "inmigrate":
                    break
                if time.perf_counter() > deadline:
                    raise r.fail("still inmigrate after 120 s")
                time.sleep(POLL_S)
            ms = (time.perf_counter() - r.t0) * 1e3
            if st not in ("paused", "running"):
                raise r.fail("after -incoming, status %s" % st)
        except BaseException:
            kill(r)
            raise
        return r, ms

    def resume(self, r):
        r.qmp.cmd("cont")

    def migrate(self, src, timeout):
        port = free_port()
        dst = self._run(src.cmdline, src.mem_mib, ["-incoming", "tcp:127.0.0.1:%d" % port])
        try:
            t0, t0_wall = time.perf_counter(), time.time()
            src.qmp.cmd("migrate", uri="tcp:127.0.0.1:%d" % port)
            try:
                t1, ev = src.qmp.wait_event(migration_event("completed", "failed", "cancelled"), timeout)
            except RunError:
                info = src.qmp.cmd("query-migrate")
                src.qmp.cmd("migrate_cancel")
                raise Skip("did not converge within %d s (%d dirty-sync rounds, %.0f MiB sent, %s "
                           "dirty pages/s; auto-converge is off by default)" % (
                               timeout, info["ram"]["dirty-sync-count"],
                               info["ram"]["transferred"] / (1 << 20),
                               info["ram"].get("dirty-pages-rate")))
            if ev["data"]["status"] != "completed":
                raise src.fail("migrate: %s" % ev["data"]["status"])
            info = completed_info(src)
            # Host-side view as well: source STOP -> destination RESUME
            # (QEMU's own event timestamps, same host clock).
            _, stop = src.qmp.wait_event(lambda m: m.get("event") == "STOP", 10)
            _, resume = dst.qmp.wait_event(lambda m: m.get("event") == "RESUME", 30)
        except BaseException:
            kill(dst)
            raise
        return dst, {"total_ms": float(info["total-time"]), "downtime_ms": float(info["downtime"]),
                     "rounds": info["ram"]["dirty-sync-count"],
                     "mib_sent": info["ram"]["transferred"] / (1 << 20),
                     "pause_to_resume_ms": (event_time(resume) - event_time(stop)) * 1e3,
                     "cmd_to_completed_ms": (t1 - t0) * 1e3,
                     "cmd_to_resume_ms": (event_time(resume) - t0_wall) * 1e3}


# --------------------------------------------------------------------------
# Measurements


class Row:
    """One table row: samples per VMM, or the reason it is n/a."""

    def __init__(self, key, label, unit, lower_is_better=True):
        self.key, self.label, self.unit, self.lower = key, label, unit, lower_is_better
        self.samples = {"hyve": [], "qemu": []}
        self.extra = {"hyve": [], "qemu": []}   # per-sample details for the JSON
        self.na = {}
        self.notes = []

    def add(self, vmm, x, extra=None):
        self.samples[vmm].append(float(x))
        if extra is not None:
            self.extra[vmm].append(extra)

    def as_dict(self, runs):
        row = {"key": self.key, "metric": self.label, "unit": self.unit,
               "lower_is_better": self.lower}
        for v in ("hyve", "qemu"):
            xs = self.samples[v]
            if v in self.na or not xs:
                row[v] = {"na": self.na.get(v, "no samples")}
            else:
                row[v] = B.stats(xs)
                if self.extra[v]:
                    row[v]["details"] = self.extra[v]
        h, q = row["hyve"], row["qemu"]
        row["ratio"] = (round(h["median"] / q["median"], 4)
                        if "median" in h and "median" in q and q["median"] else None)
        row["runs"] = runs
        if self.notes:
            row["notes"] = self.notes
        return row


def interleaved(runs, items):
    """(repeat index, item) in bench.py's order: as given, then reversed."""
    for i in range(runs):
        for it in (items if i % 2 == 0 else items[::-1]):
            yield i, it


def failed(row_list, vmm, e):
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    for row in row_list:
        row.na.setdefault(vmm, msg if isinstance(e, Skip) else "failed: " + msg)
    if not isinstance(e, Skip):
        print("  %s failed:\n%s" % (vmm, e), file=sys.stderr)


def kill(*runs):
    for r in runs:
        if r is None:
            continue
        q = getattr(r, "qmp", None)
        if q:
            q.close()
        r.kill()


class Images:
    """Checkpoint files, one per (VMM, size), made by booting a worker guest
    and saving it.  The checkpoint rows make the 1 GiB ones; restore reuses
    the newest."""

    def __init__(self):
        self.files = {}

    def make(self, vm, mem_mib, region_mib):
        """Returns (wall ms, non-zero bytes)."""
        path = vm.path("ckpt%d" % mem_mib) + (".ckpt" if vm.name == "hyve" else ".mig")
        r = vm.boot_worker(mem_mib, region_mib, dirty=0)
        try:
            res = vm.checkpoint(r, path)
        finally:
            kill(r)
        old = self.files.get((vm.name, mem_mib))
        if old:
            os.unlink(old[0])   # keep one file per size (4 GiB ones are large)
        # QEMU's -incoming needs the same command line as the saved VM.
        self.files[(vm.name, mem_mib)] = (path, (r.cmdline, mem_mib))
        return res

    def get(self, vm, mem_mib, region_mib):
        if (vm.name, mem_mib) not in self.files:
            self.make(vm, mem_mib, region_mib)
        return self.files[(vm.name, mem_mib)]


def bench_checkpoint(vmms, runs, images):
    region = dict(SIZES)[CKPT_SIZE]
    gbs = Row("ckpt_1g_gbs", "checkpoint, 1 GiB guest (%d MiB non-zero): non-zero RAM / wall time"
              % region, "GB/s", lower_is_better=False)
    ms = Row("ckpt_1g_ms", "checkpoint, 1 GiB guest: wall time, VM paused throughout", "ms")
    rows = [gbs, ms]
    for _, vm in interleaved(runs, vmms):
        if vm.name in gbs.na:
            continue
        try:
            wall, nbytes = images.make(vm, CKPT_SIZE, region)
        except (RunError, Skip) as e:
            failed(rows, vm.name, e)
            continue
        gbs.add(vm.name, nbytes / (wall / 1e3) / 1e9, {"nonzero_mib": round(nbytes / (1 << 20), 1)})
        ms.add(vm.name, wall)
    return rows


def bench_restore(vmms, runs, images):
    """Per size: hyve lazy, hyve copy and QEMU, interleaved."""
    hyve, qemu = vmms[0], (vmms[1] if len(vmms) > 1 else None)
    rows = []
    for mem, region in SIZES:
        size = "%d MiB" % mem if mem < 1024 else "%d GiB" % (mem >> 10)
        lazy = Row("restore_%dm_ms" % mem, "restore %s (%d MiB data) -> loaded, paused (hyve lazy)"
                   % (size, region), "ms")
        copy = Row("restore_%dm_copy_ms" % mem, "restore %s -> loaded, paused (hyve restore_memory=copy)"
                   % size, "ms")
        touch = touch_copy = None
        if mem == CKPT_SIZE:
            touch = Row("restore_%dm_touch_ms" % mem, "restore %s -> guest re-verified all its data "
                        "(hyve lazy)" % size, "ms")
            touch_copy = Row("restore_%dm_touch_copy_ms" % mem, "restore %s -> guest re-verified all "
                             "its data (hyve copy)" % size, "ms")
        size_rows = [x for x in (lazy, copy, touch, touch_copy) if x]
        # (VMM, eager copy, its row, its "re-verified" row); QEMU's samples
        # go to both hyve rows.
        variants = [(hyve, False, lazy, touch), (hyve, True, copy, touch_copy)]
        if qemu:
            variants.append((qemu, False, None, None))
        else:
            for row in size_rows:
                row.na["qemu"] = "QEMU not available"
        print("  restore %s ..." % size, end=" ", flush=True)
        t = time.time()
        files = {}
        for vm in vmms:
            try:
                files[vm.name] = images.get(vm, mem, region)
            except (RunError, Skip) as e:
                failed(size_rows, vm.name, e)
        qemu_samples = []
        qemu_touch = []
        for _, (vm, cp, row, trow) in interleaved(runs, variants):
            if vm.name not in files or (row and vm.name in row.na) or (not row and "qemu" in lazy.na):
                continue
            path, ref = files[vm.name]
            r = None
            try:
                r, ready = vm.restore(path, ref, copy=cp)
                touched = None
                if trow is not None or (vm.name == "qemu" and touch is not None):
                    # The guest was saved mid-pass: after "resume" its first
                    # line ends that pass, the second one a full pass over
                    # its whole region (every page read, so faulted in).
                    vm.resume(r)
                    end = wait_nth(r, ROUND_OK, 2, 60)
                    if FAILED in r.out:
                        raise r.fail("restored guest failed verification")
                    touched = (r.time_of_byte(end) - r.t0) * 1e3
            except (RunError, Skip) as e:
                failed([row] if row else [lazy, copy] + ([touch, touch_copy] if touch else []),
                       vm.name, e)
                continue
            finally:
                kill(r)
            if vm.name == "qemu":
                qemu_samples.append(ready)
                if touched is not None:
                    qemu_touch.append(touched)
            else:
                row.add("hyve", ready)
                if trow is not None:
                    trow.add("hyve", touched)
        # One set of QEMU samples, compared with both hyve rows.
        for row in (lazy, copy):
            row.samples["qemu"] = list(qemu_samples)
        if touch:
            for row in (touch, touch_copy):
                row.samples["qemu"] = list(qemu_touch)
        rows += size_rows
        print("%.0f s" % (time.time() - t), flush=True)
    return rows


def machine_limits(hyve_binary):
    """memcpy and loopback TCP GiB/s on this machine now (bench/mig_pipeline.c),
    or None when the tool is not built."""
    tool = os.path.join(os.path.dirname(hyve_binary), "mig_pipeline")
    try:
        out = subprocess.run([tool, "--limits-only"], capture_output=True, text=True, timeout=120).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def bench_migrate(vmms, runs, timeout, limits=None):
    rows = []
    for kind, dirty in (("idle", 0), ("dirty", None)):
        region = dict(SIZES)[MIGRATE_SIZE]
        what = ("live migration, idle 1 GiB" if dirty == 0 else "live migration, dirtying 1 GiB")
        total = Row("migrate_%s_total_ms" % kind, "%s (%s): total time" % (
            what, "%d MiB data, only read" % region if dirty == 0 else
            "1/4 of %d MiB rewritten per pass" % region), "ms")
        down = Row("migrate_%s_downtime_ms" % kind, "%s: downtime as the VMM reports it" % what, "ms")
        # QEMU's own downtime ends when the source has sent the last byte;
        # hyve's when the destination has loaded it.  The same end point
        # for QEMU: its STOP (source) and RESUME (destination) events.
        resumed = Row("migrate_%s_resumed_ms" % kind, "%s: source paused -> destination resumed"
                      % what, "ms")
        rate = Row("migrate_%s_gib_s" % kind, "%s: data GiB / total time" % what, "GiB/s",
                   lower_is_better=False)
        print("  migrate %s ..." % kind, end=" ", flush=True)
        t = time.time()
        bad = {"hyve": 0, "qemu": 0}
        for _, vm in interleaved(runs, vmms):
            if vm.name in total.na:
                continue
            src = dst = None
            try:
                src = vm.boot_worker(MIGRATE_SIZE, region, dirty=dirty)
                dst, res = vm.migrate(src, timeout)
                # The guest carries on at the destination.  Its first line
                # ends the pass the move interrupted, the second one a full
                # pass that verified every page after the move.
                try:
                    wait_nth(dst, ROUND_OK, 2, 60)
                    verified = True
                except RunError:
                    verified = False
                if FAILED in dst.out or not verified:
                    bad[vm.name] += 1
                    res["destination_guest"] = (bytes(dst.out[-300:]).decode(errors="replace")
                                                if FAILED in dst.out else "no verified pass in 60 s")
                else:
                    res["destination_guest"] = "verified"
            except (RunError, Skip) as e:
                failed([total, down, resumed, rate], vm.name, e)
                continue
            finally:
                kill(src, dst)
            total.add(vm.name, res["total_ms"], res)
            down.add(vm.name, res["downtime_ms"])
            resumed.add(vm.name, res["pause_to_resume_ms"])
            rate.add(vm.name, region / 1024 / (res["total_ms"] / 1e3) if res["total_ms"] > 0 else 0)
        for v, n in bad.items():
            if n:
                note = ("%s: the destination guest's verification FAILED (or never passed) after %d of "
                        "the migrations: those samples are of a broken migration" % (v, n))
                total.notes.append(note)
        if limits:
            frac = ", ".join("%s %.0f %%" % (v, 100 * statistics.median(rate.samples[v]) / limits["loopback_gib_s"])
                             for v in ("hyve", "qemu") if rate.samples[v] and limits["loopback_gib_s"] > 0)
            rate.notes.append("limits in this run: loopback TCP %.2f GiB/s, memcpy %.2f GiB/s; median rate as a "
                              "share of loopback TCP: %s" % (limits["loopback_gib_s"], limits["memcpy_gib_s"],
                                                              frac or "n/a"))
        rows += [total, down, resumed, rate]
        print("%.0f s" % (time.time() - t), flush=True)
    return rows


# --------------------------------------------------------------------------


def state_dir(requested):
    """Checkpoint files live in tmpfs when it has room, so both VMMs are
    measured writing/reading memory rather than this shared disk (hyve
    fsyncs its file, QEMU's exec:cat does not; on tmpfs fsync is free)."""
    if requested:
        return tempfile.mkdtemp(prefix="hyve-state.", dir=requested)
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= 12 << 30:
            return tempfile.mkdtemp(prefix="hyve-state.", dir="/dev/shm")
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="hyve-state.")


def git_rev():
    """HEAD and whether the tree differs, without `git describe --dirty`,
    which rewrites the index (others work in this tree concurrently)."""
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "diff-index", "--quiet", "HEAD", "--"],
                               capture_output=True, timeout=30).returncode
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


GROUPS = ["checkpoint", "restore", "migrate"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hyve", default=os.path.join(ROOT, "build/release/hyve"))
    ap.add_argument("--hyvectl", help="default: hyvectl next to --hyve")
    ap.add_argument("--guest", default=os.path.join(ROOT, "guests/testguest/testguest.elf"))
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    ap.add_argument("--machine", default="microvm",
                    help="QEMU machine (default microvm: no firmware boot; bench.py picks it on this host)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", help="comma-separated: " + ",".join(GROUPS))
    ap.add_argument("--migrate-timeout", type=int, default=60,
                    help="seconds before a migration that does not converge is cancelled")
    ap.add_argument("--dir", help="where checkpoint files go (default: /dev/shm if it has 12 GiB free)")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench/results/state-latest.json"))
    a = ap.parse_args()
    groups = a.only.split(",") if a.only else GROUPS
    if set(groups) - set(GROUPS):
        ap.error("--only takes %s" % ",".join(GROUPS))
    hyvectl = a.hyvectl or os.path.join(os.path.dirname(a.hyve), "hyvectl")

    t_start = time.time()
    tmpdir = state_dir(a.dir)
    try:
        # Snapshot the binaries: other people may rebuild the tree meanwhile.
        for src, name in ((a.hyve, "hyve"), (hyvectl, "hyvectl"), (a.guest, "testguest.elf")):
            shutil.copy2(src, os.path.join(tmpdir, name))
        guest = os.path.join(tmpdir, "testguest.elf")
        hyve = HyveState(os.path.join(tmpdir, "hyve"), os.path.join(tmpdir, "hyvectl"), guest, tmpdir)
        vmms = [hyve]
        qemu_note = None
        if shutil.which(a.qemu) or os.path.exists(a.qemu):
            vmms.append(QemuState(a.qemu, a.machine, guest, tmpdir))
        else:
            qemu_note = "%s not found" % a.qemu
        print("state bench: files in %s, %d runs, QEMU -machine %s -cpu %s" % (
            tmpdir, a.runs, a.machine, QEMU_CPU), flush=True)

        images = Images()
        rows = []
        limits = None
        for g in groups:
            t = time.time()
            print("%s (%d runs) ..." % (g, a.runs), flush=True)
            if g == "checkpoint":
                got = bench_checkpoint(vmms, a.runs, images)
            elif g == "restore":
                got = bench_restore(vmms, a.runs, images)
            else:
                limits = machine_limits(a.hyve)
                print("  limits: %s" % (limits or "bench/mig_pipeline not built (make bench-pipeline)"), flush=True)
                got = bench_migrate(vmms, a.runs, a.migrate_timeout, limits)
            if qemu_note:
                for r in got:
                    r.na["qemu"] = qemu_note
            rows += got
            print("%s: %.0f s" % (g, time.time() - t), flush=True)
        # Drop files before writing results (4 GiB ones are large).
        for path, _ in images.files.values():
            try:
                os.unlink(path)
            except OSError:
                pass

        out = [r.as_dict(a.runs) for r in rows]
        machine_desc = "%s (-accel kvm -cpu %s, max-bandwidth uncapped, downtime-limit default 300 ms)" % (
            a.machine, QEMU_CPU)
        print()
        print(B.table(out, machine_desc))
        for r in out:
            for n in r.get("notes", []):
                print("%s: %s" % (r["key"], n))
        for r in out:
            if r["key"].startswith("migrate_") and r["key"].endswith("_total_ms"):
                for v in ("hyve", "qemu"):
                    d = r[v].get("details")
                    if d:
                        print("%s %s: rounds %s, MiB sent %s%s" % (
                            r["key"][:-len("_total_ms")], v,
                            "/".join(str(x["rounds"]) for x in d),
                            "/".join("%.0f" % x["mib_sent"] for x in d),
                            ", migrate command -> destination RESUME event %s ms" % "/".join(
                                "%.0f" % x["cmd_to_resume_ms"] for x in d)
                            if "cmd_to_resume_ms" in d[0] else ""))

        result = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "duration_s": round(time.time() - t_start, 1),
            "host": {"kernel": platform.release(), "cpu": B.cpu_model(), "nproc": os.cpu_count()},
            "hyve": {"git": git_rev(), "binary": os.path.relpath(a.hyve, ROOT)},
            "qemu": {"version": B.qemu_version(a.qemu), "machine": a.machine, "cpu": QEMU_CPU,
                     "max_bandwidth": QEMU_MAX_BANDWIDTH, "downtime_limit_ms": 300},
            "files": "tmpfs" if tmpdir.startswith("/dev/shm/") else "disk",
            "limits": limits,
            "sizes": [{"ram_mib": m, "data_mib": d} for m, d in SIZES],
            "metrics": out,
        }
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json + ".tmp", "w") as f:
            f.write(B.compact_json(result) + "\n")
        os.replace(a.json + ".tmp", a.json)
        print("\nwrote %s (%.0f s)" % (os.path.relpath(a.json), time.time() - t_start))
        failed_rows = [r["key"] for r in out if "na" in r["hyve"]]
        if failed_rows:
            print("hyve could not run: %s" % ", ".join(failed_rows), file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
