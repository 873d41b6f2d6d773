/*
 * Tests whose work runs at CPL3.  On the PVM host CPL3 runs natively while
 * CPL0 is emulated, so every loop that matters for timing lives here.  The
 * CPL3 code uses in/out directly (IOPL=3) and shares memory with the kernel.
 */
#include "kernel.h"
#include "tests.h"

#define TESTDEV_PORT 0xe0
#define TESTDEV_MMIO 0xff000000UL

static u64 arg_n(void)
{
	u64 n = 100000;
	cmdline_get_u64("n", &n);
	return n;
}

/* ---- pio / mmio: device round trips with read-back check ---- */
USER_TEXT static u64 u_pio(u64 n)
{
	u64 bad = 0;
	u32 v = 0x12345678;
	for (u64 i = 0; i < n; i++) {
		v = v * 1664525u + 1013904223u;
		outl(TESTDEV_PORT, v);
		if (inl(TESTDEV_PORT) != v)
			bad++;
	}
	return bad;
}

USER_TEXT static u64 u_mmio(u64 n)
{
	volatile u32 *page = (volatile u32 *)TESTDEV_MMIO;
	u64 bad = 0;
	u32 v = 0x9abcdef0;
	for (u64 i = 0; i < n; i++) {
		volatile u32 *p = page + (i & 1023);	/* stay in the first 4 KiB */
		v = v * 1664525u + 1013904223u;
		*p = v;
		if (*p != v)
			bad++;
	}
	return bad;
}

static void roundtrip_test(const char *name, user_fn_t fn)
{
	u64 n = arg_n(), khz = tsc_khz();
	u64 t0 = rdtsc();
	u64 bad = user_run(fn, n, 0);
	u64 dt = rdtsc() - t0;
	if (bad == ~0UL)
		test_fail(name, "CPL3 loop took exception %lu at rip %lx",
			  user_fault_vec, user_fault_rip);
	u64 us = dt * 1000 / khz;
	printf("%s: %lu round trips, %lu mismatches, %lu us, %lu ns/round trip\n",
	       name, n, bad, us, n ? dt * 1000000 / khz / n : 0);
	if (bad)
		test_fail(name, "%lu of %lu read-backs differed", bad, n);
	test_pass(name);
}

void t_pio(void)
{
	roundtrip_test("pio", u_pio);
}

void t_mmio(void)
{
	roundtrip_test("mmio", u_mmio);
}

/* ---- user: CPL3 entry/exit and interrupts taken at CPL3 ---- */
USER_TEXT static u64 u_sum(u64 n)
{
	u64 s = 0;
	for (u64 i = 1; i <= n; i++)
		s += i ^ (s >> 7);
	return s;
}

static u64 k_sum(u64 n)	/* same computation, for checking */
{
	u64 s = 0;
	for (u64 i = 1; i <= n; i++)
		s += i ^ (s >> 7);
	return s;
}

struct tickwait {
	u64 deadline;		/* TSC */
	u64 want;
};

/* Spin at CPL3 until the kernel's timer handler has run `want` times. */
USER_TEXT static u64 u_wait_ticks(u64 arg)
{
	struct tickwait *w = (struct tickwait *)arg;
	u64 start = READ_ONCE(lapic_ticks);
	while (READ_ONCE(lapic_ticks) - start < w->want)
		if ((s64)(rdtsc() - w->deadline) > 0)
			break;
	return READ_ONCE(lapic_ticks) - start;
}

void t_user(void)
{
	u64 n = 10000000;
	cmdline_get_u64("n", &n);

	u64 t0 = rdtsc();
	u64 r = user_run(u_sum, n, 0);
	u64 us = tsc_to_us(rdtsc() - t0);
	if (r == ~0UL)
		test_fail("user", "CPL3 loop took exception %lu at rip %lx",
			  user_fault_vec, user_fault_rip);
	printf("user: %lu iterations at CPL3 in %lu us\n", n, us);
	/* Check on a short prefix at CPL0 (the full loop would be slow there). */
	u64 m = 1000;
	if (user_run(u_sum, m, 0) != k_sum(m))
		test_fail("user", "CPL3 result differs from CPL0 result");

	/* Round-trip cost: enter CPL3, leave through ud2. */
	t0 = rdtsc();
	for (int i = 0; i < 100; i++)
		user_run(u_sum, 0, 0);
	printf("user: CPL0->CPL3->CPL0 round trip %lu us\n", tsc_to_us(rdtsc() - t0) / 100);

	/* Timer interrupts (LAPIC timer: no IOAPIC routing involved) must reach
	 * CPL3 code and return to it. */
	struct tickwait w = { rdtsc() + 2000 * tsc_khz(), 5 };
	start_lapic_ticks(100);
	u64 got = user_run(u_wait_ticks, (u64)&w, 0);
	lapic_timer_stop();
	printf("user: %lu timer interrupts taken at CPL3\n", got);
	if (got == ~0UL)
		test_fail("user", "exception %lu at CPL3", user_fault_vec);
	if (got < w.want)
		test_fail("user", "only %lu of %lu timer ticks reached CPL3 in 2 s", got, w.want);
	test_pass("user");
}

/* ---- counter: runs forever, for checkpoint/restore ---- */
static volatile u64 counter_value;

USER_TEXT static u64 u_counter(u64 shift)
{
	u64 mask = (1UL << shift) - 1;
	for (;;) {
		u64 v = counter_value + 1;
		counter_value = v;
		if (!(v & mask))
			printf("counter: %lu ticks: %lu\n", v, READ_ONCE(lapic_ticks));
	}
	return 0;
}

void t_counter(void)
{
	u64 shift = 28;
	cmdline_get_u64("shift", &shift);
	if (shift < 1 || shift > 62)
		shift = 28;
	start_lapic_ticks(100);
	printf("counter: counting at CPL3, printing every 2^%lu, ticks: LAPIC timer at 100 Hz\n", shift);
	user_run(u_counter, shift, 0);
	test_fail("counter", "CPL3 counter stopped: exception %lu at rip %lx",
		  user_fault_vec, user_fault_rip);
}

/* ---- worker: memory dirtier with verification, for live migration ----
 *
 * Region layout: gens[npages] (u32 generation of each page), then npages
 * data pages.  Page P at generation G holds
 *   w[0] = P ^ MAGIC, w[1] = G, w[2..510] = seed(P,G) + k*GOLD,
 *   w[511] = checksum(w[0..510]).
 * Each round rewrites `dirty` pseudo-randomly chosen pages with G+1, then
 * verifies every page and that the sum of all w[1] equals the running sum.
 */
#define WMAGIC 0x6879766577726b00UL	/* "hyvewrk" */
#define GOLD 0x9e3779b97f4a7c15UL

struct worker {
	u64 *pages;
	u32 *gens;
	u64 npages, dirty, pause_us, interval_ms, khz;
	u64 corrupt_round;	/* self-test: flip a bit behind our back in this round */
	u64 round, sum;
};
static struct worker wk;

USER_TEXT static u64 mix(u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdUL;
	x ^= x >> 33;
	return x;
}

USER_TEXT static void page_fill(u64 *w, u64 idx, u64 gen)
{
	u64 x = mix(idx << 32 | gen), c = 0;
	w[0] = idx ^ WMAGIC;
	w[1] = gen;
	for (int k = 2; k < 511; k++, x += GOLD)
		w[k] = x;
	for (int k = 0; k < 511; k++)
		c = (c << 1 | c >> 63) ^ w[k];
	w[511] = c;
}

/* -1 if the page is right, else the index of the first bad word. */
USER_TEXT static int page_check(const u64 *w, u64 idx, u64 gen)
{
	u64 x = mix(idx << 32 | gen), c = 0;
	if (w[0] != (idx ^ WMAGIC))
		return 0;
	if (w[1] != gen)
		return 1;
	for (int k = 2; k < 511; k++, x += GOLD)
		if (w[k] != x)
			return k;
	for (int k = 0; k < 511; k++)
		c = (c << 1 | c >> 63) ^ w[k];
	return w[511] == c ? -1 : 511;
}

USER_TEXT static u64 u_worker(u64 arg)
{
	struct worker *s = (struct worker *)arg;
	u64 rng = 0x243f6a8885a308d3UL, last = rdtsc();

	for (u64 i = 0; i < s->npages; i++) {
		s->gens[i] = 0;
		page_fill(s->pages + i * 512, i, 0);
	}
	printf("worker: filled %lu pages\n", s->npages);
	for (;;) {
		s->round++;
		for (u64 d = 0; d < s->dirty; d++) {
			rng = rng * 6364136223846793005UL + 1442695040888963407UL;
			u64 i = (rng >> 24) % s->npages;
			u32 g = s->gens[i] + 1;
			s->gens[i] = g;
			s->sum++;
			page_fill(s->pages + i * 512, i, g);
		}
		if (s->round == s->corrupt_round) {
			u64 i = (rng >> 17) % s->npages;
			s->pages[i * 512 + 1 + (rng >> 40) % 510] ^= 1UL << (rng % 64);
			printf("worker: corrupted one bit of page %lu (self-test)\n", i);
		}
		u64 total = 0;
		for (u64 i = 0; i < s->npages; i++) {
			const u64 *w = s->pages + i * 512;
			int bad = page_check(w, i, s->gens[i]);
			if (bad >= 0) {
				printf("worker: round %lu page %lu (addr 0x%lx) word %d = 0x%lx, "
				       "generation %u expected\n", s->round, i, (u64)w, bad,
				       w[bad], s->gens[i]);
				return 1;
			}
			total += w[1];
		}
		if (total != s->sum) {
			printf("worker: round %lu sum %lu != expected %lu\n", s->round, total, s->sum);
			return 2;
		}
		u64 now = rdtsc();
		if (now - last >= s->interval_ms * s->khz) {
			last = now;
			printf("worker: round %lu sum OK (%lu)\n", s->round, total);
		}
		if (s->pause_us) {
			u64 end = rdtsc() + s->pause_us * s->khz / 1000;
			while ((s64)(rdtsc() - end) < 0)
				;
		}
	}
}

void t_worker(void)
{
	u64 mib = 64, base;

	cmdline_get_u64("mem", &mib);
	base = ALIGN_UP(boot.reserved_end, 2UL << 20);
	if (base < (16UL << 20))
		base = 16UL << 20;	/* keep clear of low memory */
	u64 len = mib << 20;
	if (!ram_range_ok(base, len) || base + len > 0xc0000000UL)
		test_fail("worker", "%lu MiB at 0x%lx is not RAM below 3 GiB (RAM %lu MiB)",
			  mib, base, boot.ram_total >> 20);
	u64 total_pages = len >> 12;
	wk.npages = total_pages * 1024 / 1025;	/* 4 bytes of gens per 4 KiB page */
	wk.gens = (u32 *)base;
	wk.pages = (u64 *)(base + ALIGN_UP(wk.npages * 4, 4096));
	wk.dirty = wk.npages / 4;
	cmdline_get_u64("dirty", &wk.dirty);
	wk.interval_ms = 1000;
	cmdline_get_u64("interval", &wk.interval_ms);
	cmdline_get_u64("pause", &wk.pause_us);
	cmdline_get_u64("corrupt", &wk.corrupt_round);
	wk.khz = tsc_khz();
	printf("worker: %lu MiB at 0x%lx, %lu data pages, %lu dirtied per round\n",
	       mib, base, wk.npages, wk.dirty);
	u64 r = user_run(u_worker, (u64)&wk, 0);
	if (r == ~0UL)
		test_fail("worker", "exception %lu at rip %lx", user_fault_vec, user_fault_rip);
	test_fail("worker", "verification failed in round %lu", wk.round);
}
