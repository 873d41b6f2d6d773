/* Interrupt controllers and time: LAPIC, IOAPIC, 8259 PIC, PIT, TSC. */
#include "kernel.h"

#define LAPIC_ID 0x020
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0b0
#define LAPIC_SVR 0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0

/* xAPIC (MMIO) unless the LAPIC was handed over in x2APIC mode (MSRs). */
static bool x2apic;

static u32 lapic_read(u32 reg)
{
	if (x2apic)
		return (u32)rdmsr(0x800 + (reg >> 4));
	return mmio_read32(LAPIC_BASE + reg);
}

static void lapic_write(u32 reg, u32 v)
{
	if (x2apic)
		wrmsr(0x800 + (reg >> 4), v);
	else
		mmio_write32(LAPIC_BASE + reg, v);
}

/* Remap the 8259s away from the exception vectors, then mask everything:
 * all interrupts go through the IOAPIC. */
void pic_disable(void)
{
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	outb(0x21, 0xf0);
	outb(0xa1, 0xf8);
	outb(0x21, 0x04);
	outb(0xa1, 0x02);
	outb(0x21, 0x01);
	outb(0xa1, 0x01);
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
}

/* Switch this CPU's LAPIC to x2APIC mode (test option x2apic=1). */
bool lapic_enable_x2apic(void)
{
	u32 a, b, c, d;
	cpuid(1, 0, &a, &b, &c, &d);
	if (!(c & (1 << 21)))
		return false;
	wrmsr(0x1b, rdmsr(0x1b) | (1 << 11) | (1 << 10));	/* EN | EXTD */
	x2apic = true;
	return true;
}

void lapic_init(void)
{
	if (rdmsr(0x1b) & (1 << 10))	/* IA32_APIC_BASE.EXTD: handed over in x2APIC mode */
		x2apic = true;
	else if (x2apic)		/* an AP (xAPIC after INIT) following the BSP */
		lapic_enable_x2apic();
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_LVT_TIMER, 1 << 16);
	lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);
}

u32 lapic_id(void)
{
	return x2apic ? lapic_read(LAPIC_ID) : lapic_read(LAPIC_ID) >> 24;
}

void lapic_set_tpr(u32 tpr)
{
	lapic_write(LAPIC_TPR, tpr);
}

/* In-service register bit of a vector (ISR at 0x100, 8 x 32 bits, 16 apart). */
bool lapic_in_service(u32 vec)
{
	return lapic_read(0x100 + (vec / 32) * 0x10) >> (vec % 32) & 1;
}

void lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}

void lapic_send_ipi(u32 apic_id, u32 icr_low)
{
	if (x2apic) {	/* one 64-bit ICR write, no delivery status */
		wrmsr(0x830, (u64)apic_id << 32 | icr_low);
		return;
	}
	lapic_write(LAPIC_ICR_HI, apic_id << 24);
	lapic_write(LAPIC_ICR_LO, icr_low);
	for (int i = 0; i < 1000 && (lapic_read(LAPIC_ICR_LO) & (1 << 12)); i++)
		;
}

void lapic_timer_start(u32 initial, u32 vec)
{
	lapic_write(LAPIC_TIMER_DIV, 0x3);	/* divide by 16 */
	lapic_write(LAPIC_LVT_TIMER, vec | (1 << 17));	/* periodic */
	lapic_write(LAPIC_TIMER_INIT, initial);
}

static u64 lapic_rate;

/* Count the timer down for ~10 ms of TSC time (CPL0 is slow on the PVM host,
 * so this is measured, not assumed from a 1 GHz bus). */
u64 lapic_timer_rate(void)
{
	if (lapic_rate)
		return lapic_rate;
	u64 khz = tsc_khz();
	lapic_write(LAPIC_TIMER_DIV, 0x3);
	lapic_write(LAPIC_LVT_TIMER, 1 << 16);	/* masked, one-shot */
	lapic_write(LAPIC_TIMER_INIT, 0xffffffff);
	u64 t0 = rdtsc(), end = t0 + 10 * khz;
	while ((s64)(rdtsc() - end) < 0)
		;
	u32 cur = lapic_read(LAPIC_TIMER_CUR);
	u64 t1 = rdtsc();
	lapic_write(LAPIC_TIMER_INIT, 0);
	lapic_rate = (u64)(0xffffffffu - cur) * khz * 1000 / (t1 - t0);
	if (!lapic_rate)
		lapic_rate = 62500000;	/* 1 GHz bus / 16 */
	return lapic_rate;
}

void lapic_timer_start_hz(u32 hz, u32 vec)
{
	u64 init = lapic_timer_rate() / hz;
	lapic_timer_start(init ? (u32)init : 1, vec);
}

void lapic_timer_stop(void)
{
	lapic_write(LAPIC_LVT_TIMER, 1 << 16);
	lapic_write(LAPIC_TIMER_INIT, 0);
}

static spinlock_t ioapic_lock;

static void ioapic_write(u32 reg, u32 v)
{
	mmio_write32(IOAPIC_BASE, reg);
	mmio_write32(IOAPIC_BASE + 0x10, v);
}

/* Edge-triggered, active-high, fixed delivery, physical destination. */
void ioapic_route(int pin, int vec, u32 dest_apic_id)
{
	spin_lock(&ioapic_lock);
	ioapic_write(0x10 + 2 * pin, 1 << 16);
	ioapic_write(0x11 + 2 * pin, dest_apic_id << 24);
	ioapic_write(0x10 + 2 * pin, (u32)vec);
	spin_unlock(&ioapic_lock);
}

void ioapic_mask(int pin)
{
	spin_lock(&ioapic_lock);
	ioapic_write(0x10 + 2 * pin, 1 << 16);
	spin_unlock(&ioapic_lock);
}

#define PIT_HZ 1193182

/* Channel 0, mode 2 (rate generator): ISA IRQ0 = IOAPIC pin 2. */
void pit_start_periodic(u32 hz)
{
	u32 div = PIT_HZ / hz;
	outb(0x43, 0x34);
	outb(0x40, div & 0xff);
	outb(0x40, div >> 8);
}

void pit_stop(void)
{
	outb(0x43, 0x30);	/* mode 0, count not loaded: stays idle */
}

static u64 khz;
const char *tsc_source = "not calibrated";

/* kvmclock: KVM publishes the exact TSC->ns scale in the pvclock page. */
struct pvclock {
	u32 version, pad0;
	u64 tsc_timestamp, system_time;
	u32 tsc_to_system_mul;
	signed char tsc_shift;
	u8 flags, pad[2];
} __attribute__((packed));
static struct pvclock pvclock __attribute__((aligned(64)));

static u64 tsc_khz_kvmclock(void)
{
	u32 a, b, c, d;
	char sig[13];

	cpuid(0x40000000, 0, &a, (u32 *)&sig[0], (u32 *)&sig[4], (u32 *)&sig[8]);
	sig[12] = 0;
	if (strcmp(sig, "KVMKVMKVM") || a < 0x40000001)
		return 0;
	cpuid(0x40000001, 0, &a, &b, &c, &d);
	if (!(a & (1 << 3)))	/* KVM_FEATURE_CLOCKSOURCE2 */
		return 0;
	wrmsr(0x4b564d01, (u64)&pvclock | 1);	/* MSR_KVM_SYSTEM_TIME_NEW, enable */
	for (int i = 0; i < 1000 && !READ_ONCE(pvclock.tsc_to_system_mul); i++)
		cpu_relax();
	u32 mul = READ_ONCE(pvclock.tsc_to_system_mul);
	int shift = pvclock.tsc_shift;
	wrmsr(0x4b564d01, 0);	/* stop KVM from updating guest memory */
	if (!mul)
		return 0;
	u64 k = (1000000UL << 32) / mul;
	return shift < 0 ? k << -shift : k >> shift;
}

/*
 * PIT channel 2 as a reference: latch and read the counter between two
 * rdtsc's, so each sample's uncertainty is known; accept a ~30 ms
 * measurement whose error bound is under 0.5%, else keep the best of a few.
 * (Polling OUT2 instead was off by up to 40% on the busy PVM host, where each
 * emulated CPL0 poll can be delayed by milliseconds.)
 */

static void pit2_sample(u64 *tsc, u32 *count, u64 *span)
{
	u64 a = rdtsc();
	outb(0x43, 0x80);	/* latch channel 2 */
	u32 lo = inb(0x42);
	u32 hi = inb(0x42);
	u64 b = rdtsc();
	*tsc = a + (b - a) / 2;
	*span = b - a;
	*count = lo | hi << 8;
}

static u64 tsc_khz_pit(void)
{
	u64 best = 0, best_err = ~0UL;

	outb(0x61, (inb(0x61) & ~0x02) | 0x01);	/* gate on, speaker off */
	for (int attempt = 0; attempt < 5; attempt++) {
		u64 t0, t1, sp0, sp1;
		u32 c0, c1;
		outb(0x43, 0xb0);	/* channel 2, lo/hi, mode 0 */
		outb(0x42, 0xff);
		outb(0x42, 0xff);
		pit2_sample(&t0, &c0, &sp0);
		u32 polls = 0;
		do {
			pit2_sample(&t1, &c1, &sp1);
		} while (c1 <= c0 && c0 - c1 < PIT_HZ / 33 && ++polls < 1000000);
		if (c1 > c0 || c0 - c1 < PIT_HZ / 100)
			continue;	/* wrapped or stuck: no usable reference */
		u64 ticks = c0 - c1, dt = t1 - t0, err = (sp0 + sp1) / 2;
		u64 k = dt * PIT_HZ / ticks / 1000;
		if (err * 1000 / dt < best_err) {
			best_err = err * 1000 / dt;
			best = k;
		}
		if (best_err < 5)	/* < 0.5% */
			break;
	}
	outb(0x61, inb(0x61) & ~0x01);
	return best;
}

static u64 tsc_calibrate(void)
{
	u32 a, b, c, d;
	u64 k;

	const char *force = cmdline_get("tsc");	/* tsc=pit: skip the hypervisor leaves */

	cpuid(1, 0, &a, &b, &c, &d);
	if ((c & (1u << 31)) && !(force && !strncmp(force, "pit", 3))) {
		cpuid(0x40000000, 0, &a, &b, &c, &d);
		if (a >= 0x40000010) {	/* VMware-style timing leaf */
			cpuid(0x40000010, 0, &a, &b, &c, &d);
			if (a) {
				tsc_source = "CPUID 0x40000010";
				return a;
			}
		}
		if ((k = tsc_khz_kvmclock())) {
			tsc_source = "kvmclock";
			return k;
		}
	}
	if ((k = tsc_khz_pit())) {
		tsc_source = "PIT channel 2";
		return k;
	}
	tsc_source = "guess (calibration failed)";
	printf("warning: TSC calibration failed, assuming 2 GHz\n");
	return 2000000;
}

u64 tsc_khz(void)
{
	if (!khz)
		khz = tsc_calibrate();
	return khz;
}

u64 tsc_to_us(u64 delta)
{
	return delta * 1000 / tsc_khz();
}

void udelay(u64 us)
{
	u64 end = rdtsc() + us * tsc_khz() / 1000;
	while ((s64)(rdtsc() - end) < 0)
		cpu_relax();
}
