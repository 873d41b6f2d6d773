/* Shared pieces of the guest's disk benchmarks (bench.h). */
#include "bench.h"
#include "tests.h"

void bench_setup(const char *t, u32 maxdepth, u64 bs_max, struct bench_opts *o)
{
	u64 bs_kib = 1024;
	o->ms = 1000;
	o->qd = 4;
	o->rqd = 16;
	cmdline_get_u64("ms", &o->ms);
	cmdline_get_u64("bs", &bs_kib);
	cmdline_get_u64("qd", &o->qd);
	cmdline_get_u64("rqd", &o->rqd);
	if (o->qd < 1 || o->qd > maxdepth || o->rqd < 1 || o->rqd > maxdepth)
		test_fail(t, "qd/rqd must be 1..%u", maxdepth);
	if (bs_kib < 4 || bs_kib > 1024 || (bs_kib & (bs_kib - 1)))
		test_fail(t, "bs=%lu: a power of two from 4 to 1024 KiB", bs_kib);
	o->bs = bs_kib << 10;
	if (bs_max && o->bs > bs_max)
		o->bs = bs_max;
	u64 need = o->qd * o->bs > o->rqd * BENCH_RAND_BS ? o->qd * o->bs : o->rqd * BENCH_RAND_BS;
	o->base = ALIGN_UP(boot.reserved_end, 2UL << 20);
	if (o->base < (16UL << 20))
		o->base = 16UL << 20;
	if (!ram_range_ok(o->base, need) || o->base + need > 0xc0000000UL)
		test_fail(t, "%lu KiB of buffers at 0x%lx is not RAM", need >> 10, o->base);
	/* Not filled: a CPL0 loop over megabytes is slow on PVM, and the
	 * written bytes do not matter (neither VMM looks for zeros). */
}

USER_TEXT u64 bench_next(struct bench_pos *p)
{
	u64 per = p->bs / p->unit;
	if (p->random) {
		p->state = p->state * 6364136223846793005UL + 1442695040888963407UL;
		return ((p->state >> 17) % (p->units / per)) * per;
	}
	u64 at = p->state;
	if (at + per > p->units)
		at = 0;
	p->state = at + per;
	return at;
}

void bench_phases(const struct bench_opts *o, bool writes, struct bench_pos *pos, bench_phase_fn fn, void *arg)
{
	pos->bs = (u32)o->bs;
	pos->random = false;
	pos->state = 0;
	fn("seqread", false, (u32)o->qd, arg);
	pos->bs = BENCH_RAND_BS;
	pos->random = true;
	pos->state = 0x9e3779b97f4a7c15UL;
	fn("randread", false, (u32)o->rqd, arg);
	if (!writes)
		return;
	pos->bs = (u32)o->bs;
	pos->random = false;
	pos->state = 0;
	fn("seqwrite", true, (u32)o->qd, arg);
}

u64 bench_run(const char *t, const char *phase, u64 (*fn)(u64), void *job)
{
	printf("%s: %s start\n", t, phase);
	u64 r = user_run(fn, (u64)job, 0);
	if (r == ~0UL)
		test_fail(t, "%s: CPL3 loop took exception %lu at rip %lx", phase, user_fault_vec, user_fault_rip);
	return r;
}

void bench_report(const char *t, const char *phase, u64 done, u32 bs, u64 ticks, u32 depth, u64 errors)
{
	printf("%s: %s: %lu requests of %u bytes in %lu us, qd %u, %lu errors\n", t, phase, done, bs, tsc_to_us(ticks),
	       depth, errors);
	if (errors)
		test_fail(t, "%s: %lu requests failed", phase, errors);
}
