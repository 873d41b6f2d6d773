/*
 * Kernel parameters that keep a Linux guest off what an emulating host
 * (PVM) cannot do, computed from the emulator probe rather than a fixed
 * list, so a host whose emulator learns an instruction stops paying for
 * the workaround.  Shown in the log; -o boot.linux_adapt=false disables it.
 */
#include <stdio.h>
#include <string.h>

#include "../vmm/vmm.h"
#include "linux_adapt.h"

/* Probe name -> clearcpuid= feature name (Linux's /proc/cpuinfo names). */
static const struct {
	const char *probe;
	const char *feature;
} cpuid_clears[] = {
	{ "popcnt", "popcnt" },
	{ "cmpxchg16b", "cx16" },
	{ "rdtscp", "rdtscp" },   /* rdtsc_ordered() patches itself to RDTSCP */
	{ "movbe", "movbe" },
	{ "rdrand", "rdrand" },
	{ "rdseed", "rdseed" },
	{ "avx", "avx" },         /* clears avx2/fma/avx512* through cpuid_deps */
	{ "clac", "smap" },       /* uaccess paths run CLAC/STAC */
	/*
	 * SIMD at CPL0: x86-64 Linux requires SSE2 and cannot drop it, but its
	 * kernel_fpu_begin() users pick SSSE3-and-later code paths (measured:
	 * the RNG's blake2s_compress_ssse3 right after the initramfs starts to
	 * unpack; crc32c, sha, aesni in modules).  Without these they use
	 * their generic C versions.  (LDMXCSR itself is completed by hyve.)
	 */
	{ "sse2", "ssse3" },
	{ "sse2", "sse4_1" },
	{ "sse2", "sse4_2" },
	{ "sse2", "pclmulqdq" },
	{ "sse2", "aes" },
};

static void append(char *buf, size_t n, const char *s)
{
	size_t len = strlen(buf);
	snprintf(buf + len, n - len, "%s%s", len ? " " : "", s);
}

void linux_adapt_cmdline(const struct emulator_probe *p, int ncpus, unsigned tsc_khz, char *buf, size_t n)
{
	buf[0] = '\0';
	/* Hypercalls (PV IPIs, PV yield, kvmclock setup) never return on PVM. */
	append(buf, n, "nopv");
	/*
	 * Everything at CPL0 costs ~1000x: skip work a VM does not need.
	 * Mitigations add MSR writes and retpolines on every entry; page
	 * zeroing on allocation and crypto self-tests are pure CPL0 loops;
	 * the ftrace weak-function scan and the certificate parse are the
	 * longest initcalls measured on such hosts.
	 */
	append(buf, n, "mitigations=off init_on_alloc=0 cryptomgr.notests");
	/*
	 * Emulated CPL0 makes every vCPU look stalled to RCU and makes the
	 * TSC look unstable to the clocksource watchdog; the stall reports
	 * (NMI backtraces) and a fallback to PIO-based clocksources only add
	 * more emulated work.
	 */
	append(buf, n, "rcupdate.rcu_cpu_stall_suppress=1 tsc=reliable nowatchdog");
	/*
	 * check_timer() gives the IO-APIC timer a few emulated milliseconds to
	 * tick; on a loaded emulating host it misses and the kernel panics
	 * ("IO-APIC + timer doesn't work!", seen here with 6 VMs on 2 cores).
	 * The in-kernel PIT/IOAPIC route is known to work.
	 */
	append(buf, n, "no_timer_check");
	/*
	 * Until clocksource_done_booting() the kernel keeps time with jiffies;
	 * a vCPU starved of host CPU drops ticks, so the switch to tsc-early
	 * then jumps the clock forward and the periodic tick re-arms once per
	 * missed period, each costing emulated CPL0 time: measured, boots
	 * stuck for 8+ minutes after "Switched to clocksource tsc-early" with
	 * 4-6 VMs on 2 cores.  Staying on jiffies removes the jump (the guest
	 * clock runs slow while the host is busy).
	 */
	append(buf, n, "clocksource=jiffies");
	/*
	 * Early TSC calibration times the TSC against the PIT and the ACPI PM
	 * timer, both emulated port reads here; measured on this host, it
	 * failed in about half of the boots ("Marking TSC unstable due to
	 * could not calculate TSC khz"), and those boots took twice as long
	 * to reach /init.  KVM knows the guest's TSC rate: hand it over.
	 */
	if (tsc_khz) {
		char khz[40];
		snprintf(khz, sizeof(khz), "tsc_early_khz=%u", tsc_khz);
		append(buf, n, khz);
	}
	/*
	 * Measured with Debian's 6.1 kernel: after freeing init memory,
	 * mark_rodata_ro() ends with the CONFIG_DEBUG_WX page-table walk over
	 * the whole kernel address space, which took over 10 minutes emulated.
	 * rodata=off skips both (the guest's kernel text then stays writable:
	 * a hardening loss accepted on emulating hosts only; boot.linux_adapt
	 * =false restores it).
	 */
	append(buf, n, "rodata=off");
	/*
	 * Measured with Debian's 6.1 kernel at -c 2: one pass of the
	 * scheduler's load balancing (SCHED_SOFTIRQ, rebalance_domains) takes
	 * longer than a tick when emulated, so ksoftirqd on every CPU
	 * livelocks in it and boot stops.  Keeping the APs out of the
	 * scheduler domains removes the balancing; they still come up and run
	 * their per-CPU work.
	 */
	if (ncpus > 1) {
		char iso[64];
		snprintf(iso, sizeof(iso), ncpus == 2 ? "isolcpus=domain,1" : "isolcpus=domain,1-%d", ncpus - 1);
		append(buf, n, iso);
	}
	append(buf, n, "initcall_blacklist=ftrace_check_for_weak_functions,ftrace_check_sync,"
	               "load_system_certificate_list");
	if (emulator_probe_rejects(p, "xsave") || emulator_probe_rejects(p, "xgetbv"))
		append(buf, n, "noxsave");
	char clear[256] = "";
	for (size_t i = 0; i < sizeof(cpuid_clears) / sizeof(cpuid_clears[0]); i++) {
		if (!emulator_probe_rejects(p, cpuid_clears[i].probe))
			continue;
		size_t len = strlen(clear);
		snprintf(clear + len, sizeof(clear) - len, "%s%s", len ? "," : "clearcpuid=",
		         cpuid_clears[i].feature);
	}
	if (clear[0])
		append(buf, n, clear);
}
