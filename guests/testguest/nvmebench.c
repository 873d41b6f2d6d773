/*
 * test=nvmebench: NVMe throughput from the guest, for bench/bench.py, as
 * test=blkbench is for virtio-blk, with the same phases and lines:
 * sequential reads of `bs=` KiB (default 1024, cut to the controller's
 * MDTS) with `qd=` commands in flight (default 4), random 4 KiB reads over
 * the namespace with `rqd=` in flight (default 16), sequential writes like
 * the reads, each for `ms=` milliseconds (default 1000):
 *
 *   nvmebench: PHASE start
 *   nvmebench: PHASE: N requests of B bytes in T us, qd Q, E errors
 *
 * One I/O queue pair of 64 entries, interrupts off (IEN=0), submitted and
 * polled at CPL3, where the PVM host runs the guest natively; doorbells
 * are written once per batch of completions.  Command identifier = slot;
 * slot s reads into its own buffer, with its own PRP list past 8 KiB.
 */
#include "bench.h"
#include "kernel.h"
#include "nvme.h"
#include "tests.h"

#define NQ        64
#define MAXDEPTH  32
#define PAGE      4096

static struct sqe sq[NQ] __attribute__((aligned(4096)));
static struct cqe cq[NQ] __attribute__((aligned(4096)));
static u64 prpl[MAXDEPTH][512] __attribute__((aligned(4096)));
static u8 idbuf[4096] __attribute__((aligned(4096)));

struct njob {
	u64 sq_db, cq_db;	/* doorbell addresses */
	u8 *bufs;		/* depth * bs */
	u32 opc, bs, depth;	/* read 0x02 or write 0x01 */
	struct bench_pos pos;	/* in blocks */
	u64 duration;		/* TSC ticks */
	u16 tail, head, phase;
	/* results */
	u64 done, errors, ticks;
};

static const char *T = "nvmebench";

/* ---- CPL3: submit and poll ---- */

USER_TEXT static void submit(struct njob *j, u32 slot)
{
	u64 buf = (u64)(j->bufs + (u64)slot * j->bs), lba = bench_next(&j->pos);
	struct sqe *e = &sq[j->tail];
	e->cdw0 = j->opc | slot << 16;
	e->nsid = 1;
	e->rsvd = e->mptr = 0;
	e->prp1 = buf;
	e->prp2 = j->bs <= PAGE ? 0 : j->bs <= 2 * PAGE ? buf + PAGE : (u64)prpl[slot];
	e->cdw10 = (u32)lba;
	e->cdw11 = (u32)(lba >> 32);
	e->cdw12 = j->bs / j->pos.unit - 1;
	e->cdw13 = e->cdw14 = e->cdw15 = 0;
	j->tail = (u16)((j->tail + 1) % NQ);
}

USER_TEXT static u64 u_bench(u64 arg)
{
	struct njob *j = (struct njob *)arg;
	u64 t0 = rdtsc(), end = t0 + j->duration, last = t0;
	u32 inflight = 0;
	for (u32 s = 0; s < j->depth; s++, inflight++)
		submit(j, s);
	barrier();
	*(volatile u32 *)j->sq_db = j->tail;
	while (inflight) {
		bool completed = false, resubmitted = false;
		for (;;) {
			volatile struct cqe *e = &cq[j->head];
			u16 st = e->status;
			if ((st & 1) != j->phase)
				break;
			barrier();
			u32 slot = e->cid;
			if (slot >= j->depth)
				return 1;	/* not ours: the run is void */
			j->head = (u16)((j->head + 1) % NQ);
			if (j->head == 0)
				j->phase ^= 1;
			completed = true;
			last = rdtsc();
			j->done++;
			if (st >> 1)
				j->errors++;
			if ((s64)(last - end) < 0) {
				submit(j, slot);
				resubmitted = true;
			} else {
				inflight--;
			}
		}
		if (completed)
			*(volatile u32 *)j->cq_db = j->head;
		if (resubmitted) {
			barrier();
			*(volatile u32 *)j->sq_db = j->tail;
		}
		if (!completed)
			__asm__ __volatile__("pause" ::: "memory");
	}
	j->ticks = last - t0;
	return 0;
}

static void phase(const char *name, bool write, u32 depth, void *arg)
{
	struct njob *j = arg;
	j->opc = write ? 0x01 : 0x02;
	j->bs = j->pos.bs;
	j->depth = depth;
	j->done = j->errors = j->ticks = 0;
	/* PRP lists for requests past two pages: the slot's buffer, page by page. */
	for (u32 s = 0; s < j->depth && j->bs > 2 * PAGE; s++)
		for (u32 i = 0; i + 1 < j->bs / PAGE; i++)
			prpl[s][i] = (u64)(j->bufs + (u64)s * j->bs) + (u64)(i + 1) * PAGE;
	if (bench_run(T, name, u_bench, j))
		test_fail(T, "%s: a completion for a command identifier never used", name);
	bench_report(T, name, j->done, j->bs, j->ticks, j->depth, j->errors);
}

static void t_nvmebench(void)
{
	u32 mqes = nvme_bringup(T);
	if (mqes < NQ - 1)
		test_fail(T, "CAP.MQES %u: queues of %u entries needed", mqes, NQ);
	int st = nvme_admin(0x06, 0, (u64)idbuf, 1, 0, NULL);
	if (st)
		test_fail(T, "identify controller: status 0x%x", st);
	struct bench_opts o;
	bench_setup(T, MAXDEPTH, idbuf[77] ? (u64)PAGE << idbuf[77] : 0, &o);	/* MDTS: the largest transfer */
	if ((st = nvme_admin(0x06, 1, (u64)idbuf, 0, 0, NULL)))
		test_fail(T, "identify namespace 1: status 0x%x", st);
	u64 nsze = *(u64 *)idbuf;
	u32 lbs = 1u << idbuf[128 + 4 * (idbuf[26] & 0xf) + 2];
	if ((st = nvme_admin(0x09, 0, 0, 0x07, 0, NULL)))   /* number of queues: 1 + 1 */
		test_fail(T, "set features (number of queues): status 0x%x", st);
	memset(cq, 0, sizeof(cq));
	if ((st = nvme_admin(0x05, 0, (u64)cq, (NQ - 1) << 16 | 1, 1, NULL)))   /* PC, IEN=0 */
		test_fail(T, "create I/O CQ: status 0x%x", st);
	if ((st = nvme_admin(0x01, 0, (u64)sq, (NQ - 1) << 16 | 1, 1u << 16 | 1, NULL)))
		test_fail(T, "create I/O SQ: status 0x%x", st);

	printf("%s: namespace 1: %lu blocks of %u bytes (%lu MiB), %lu ms per phase, buffers at 0x%lx\n", T, nsze,
	       lbs, nsze * lbs >> 20, o.ms, o.base);
	if (lbs > BENCH_RAND_BS || nsze * lbs < o.bs * o.qd)
		test_fail(T, "namespace too small or blocks larger than 4 KiB");

	struct njob j = { .sq_db = nvme_regs + 0x1000 + 2 * (4u << nvme_dstrd),
	                  .cq_db = nvme_regs + 0x1000 + 3 * (4u << nvme_dstrd),
	                  .bufs = (u8 *)o.base, .duration = o.ms * tsc_khz(), .phase = 1,
	                  .pos = { .units = nsze, .unit = lbs } };
	bench_phases(&o, true, &j.pos, phase, &j);
}
GUEST_TEST(nvmebench, t_nvmebench);
