/*
 * AP bring-up: INIT-SIPI-SIPI, either to each APIC id listed in the ACPI MADT
 * or (no MADT, or sipi=bcast) broadcast to all-excluding-self.  APs take a
 * CPU index with an atomic increment in boot.S, so both ways work.
 */
#include "kernel.h"

#define TRAMP_ADDR 0x8000
extern char trampoline_start[], trampoline_end[];
extern volatile u32 ap_next;

static volatile u32 cpus_online = 1;
static spinlock_t online_lock;

void ap_main(u32 index)
{
	struct cpu *c = &cpus[index];

	cpu_init(c, index);
	lapic_init();
	c->apic_id = lapic_id();
	spin_lock(&online_lock);	/* serialise the announcement and the count */
	printf("cpu %u online (apic id %u)\n", index, c->apic_id);
	cpus_online++;
	spin_unlock(&online_lock);
	for (;;)
		sti_hlt_cli();
}

/* Best guess without starting APs: cpus=, MADT, CPUID. */
int cpu_count_guess(void)
{
	u64 n;
	if (cmdline_get_u64("cpus", &n) && n > 0)
		return (int)n;
	acpi_scan();
	if (acpi.found && acpi.ncpus)
		return acpi.ncpus;
	u32 a, b, c, d;
	cpuid(1, 0, &a, &b, &c, &d);
	if (d & (1 << 28))	/* HTT: EBX[23:16] = max logical processors */
		return (int)((b >> 16) & 0xff);
	return 1;
}

int smp_boot_aps(u64 timeout_ms)
{
	u32 self = lapic_id();
	u64 expected = 0;
	const char *mode = cmdline_get("sipi");
	bool bcast = mode && !strncmp(mode, "bcast", 5);

	if (!cmdline_get_u64("cpus", &expected)) {
		acpi_scan();
		if (acpi.found)
			expected = acpi.ncpus;
	}
	if (!acpi.found && !bcast)
		bcast = true;
	printf("smp: bsp apic id %u, expecting %lu cpus (%s), %s INIT-SIPI-SIPI\n",
	       self, expected, expected ? (acpi.found ? "MADT or cpus=" : "cpus=") : "unknown",
	       bcast ? "broadcast" : "targeted");

	memcpy((void *)TRAMP_ADDR, trampoline_start, trampoline_end - trampoline_start);
	u32 sipi = 0x4600 | (TRAMP_ADDR >> 12);
	for (int round = 0; round < 3; round++) {
		u32 icr = round == 0 ? 0x4500 : sipi;	/* INIT, then SIPI twice */
		if (bcast)
			lapic_send_ipi(0, icr | 0xc0000);	/* all excluding self */
		else
			for (int i = 0; i < acpi.ncpus; i++)
				if (acpi.apic_ids[i] != self)
					lapic_send_ipi(acpi.apic_ids[i], icr);
		udelay(round == 0 ? 10000 : 200);
	}

	/* Wait for check-ins.  Without an exact count (cpus= or MADT), wait for
	 * CPUID's logical-processor count if it has one (only a hint: it may be
	 * rounded up), and in any case stop once nothing new has arrived for 1 s:
	 * on a busy 2-core host 16 emulated APs can arrive slowly. */
	u32 a, b, c, d;
	u64 hint = 0;
	cpuid(1, 0, &a, &b, &c, &d);
	if (!expected && (d & (1 << 28)))
		hint = (b >> 16) & 0xff;
	u64 start = rdtsc(), last = start, khz = tsc_khz();
	u32 seen = READ_ONCE(cpus_online);
	for (;;) {
		u32 now_online = READ_ONCE(cpus_online);
		u64 now = rdtsc();
		if (now_online != seen) {
			seen = now_online;
			last = now;
		}
		if (expected && seen >= expected)
			break;
		if (!expected && hint && seen >= hint)
			break;
		if (!expected && now - last > 1000 * khz)
			break;
		if (now - start > timeout_ms * khz)
			break;
		udelay(1000);
	}
	return (int)READ_ONCE(cpus_online);
}
