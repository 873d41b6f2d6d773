/*
 * test=blkbench: virtio-blk throughput from the guest, for bench/bench.py.
 *
 * Three phases on the first virtio-blk disk, each for `ms=` milliseconds
 * (default 1000): sequential reads of `bs=` KiB (default 1024) with `qd=`
 * requests in flight (default 4), random 4 KiB reads over the whole disk
 * with `rqd=` in flight (default 16), and sequential writes like the reads
 * (skipped on a read-only disk).  Each phase prints
 *
 *   blkbench: PHASE start
 *   blkbench: PHASE: N requests of B bytes in T us, qd Q, E errors
 *
 * and bench.py turns N, B and T into MB/s or IOPS.  T runs from the first
 * submission to the last completion, timed with the TSC (calibrated as for
 * every other test; bench.py cross-checks it against the host clock).
 *
 * The driver in virtio.c keeps one request in flight on a 16-entry ring;
 * this test sets up queue 0 itself with a 64-entry ring so that several
 * requests are in flight, and submits/polls at CPL3, where the PVM host
 * runs the guest natively (CPL0 is emulated there, which would swamp the
 * numbers).  The driver polls: avail->flags has NO_INTERRUPT set.
 * Request slot s uses descriptors 3s (header), 3s+1 (data), 3s+2 (status).
 * Data buffers live in RAM after the image (as test=worker's region).
 */
#include "virtio.h"
#include "tests.h"

#define BQ_SIZE 64
#define BQ_MAXDEPTH (BQ_SIZE / 3)
#define RAND_BS 4096

struct breq {
	u32 type, ioprio;
	u64 sector;
	u8 status;
	u8 pad[47];
} __attribute__((aligned(64)));

struct bjob {
	struct gvq *q;
	struct breq *rq;	/* [depth] */
	u8 *bufs;		/* depth * bs */
	u32 type, bs, depth;
	bool random;
	u64 cap;		/* sectors */
	u64 duration;		/* TSC ticks */
	u64 next;		/* sequential: next sector; random: LCG state */
	/* results */
	u64 done, errors, bad_used, ticks;
};

static u8 ring_mem[4096] __attribute__((aligned(4096)));
static struct breq reqs[BQ_MAXDEPTH];
static struct gvq bq;	/* fields read by the CPL3 loop */

static const char *T = "blkbench";

static int bq_setup(struct vdev *d)
{
	if (gvq_setup(d, &bq, 0, BQ_SIZE, ring_mem))
		return -1;
	if (bq.size != BQ_SIZE) {
		printf("blkbench: queue 0 has %u entries, need %u\n", bq.size, BQ_SIZE);
		return -1;
	}
	bq.avail[0] = 1;	/* VRING_AVAIL_F_NO_INTERRUPT: we poll */
	return 0;
}

/* ---- CPL3: submit and poll ---- */

USER_TEXT static u64 next_sector(struct bjob *j)
{
	u64 spr = j->bs / 512;
	if (j->random) {
		j->next = j->next * 6364136223846793005UL + 1442695040888963407UL;
		return ((j->next >> 17) % (j->cap / spr)) * spr;
	}
	u64 s = j->next;
	if (s + spr > j->cap)
		s = 0;
	j->next = s + spr;
	return s;
}

USER_TEXT static void submit(struct bjob *j, u32 slot)
{
	struct gvq *q = j->q;
	struct breq *r = &j->rq[slot];
	u16 h = (u16)(3 * slot);
	r->type = j->type;
	r->ioprio = 0;
	r->sector = next_sector(j);
	r->status = 0xff;
	q->desc[h] = (struct vring_desc){ (u64)r, 16, VRING_DESC_F_NEXT, (u16)(h + 1) };
	q->desc[h + 1] = (struct vring_desc){ (u64)(j->bufs + (u64)slot * j->bs), j->bs,
					      VRING_DESC_F_NEXT | (j->type == VBLK_T_IN ? VRING_DESC_F_WRITE : 0),
					      (u16)(h + 2) };
	q->desc[h + 2] = (struct vring_desc){ (u64)&r->status, 1, VRING_DESC_F_WRITE, 0 };
	q->avail[2 + (q->avail_idx & (BQ_SIZE - 1))] = h;
	barrier();		/* x86: descriptors and entry visible before the index */
	q->avail_idx++;
	q->avail[1] = q->avail_idx;
}

USER_TEXT static u64 u_bench(u64 arg)
{
	struct bjob *j = (struct bjob *)arg;
	struct gvq *q = j->q;
	u64 t0 = rdtsc(), end = t0 + j->duration, last = t0;
	u32 inflight = 0;
	for (u32 s = 0; s < j->depth; s++, inflight++)
		submit(j, s);
	barrier();
	*q->notify = 0;
	while (inflight) {
		bool resubmitted = false;
		while (READ_ONCE(q->used[1]) != q->used_idx) {
			barrier();
			volatile u32 *e = (volatile u32 *)&q->used[2 + 4 * (q->used_idx & (BQ_SIZE - 1))];
			u32 id = e[0];
			q->used_idx++;
			last = rdtsc();
			u32 slot = id / 3;
			if (id % 3 || slot >= j->depth) {
				j->bad_used++;	/* not ours: the run is void */
				return 1;
			}
			j->done++;
			if (j->rq[slot].status != VBLK_S_OK)
				j->errors++;
			if ((s64)(last - end) < 0) {
				submit(j, slot);
				resubmitted = true;
			} else {
				inflight--;
			}
		}
		if (resubmitted) {
			barrier();
			*q->notify = 0;
		} else {
			__asm__ __volatile__("pause" ::: "memory");
		}
	}
	j->ticks = last - t0;
	return 0;
}

static void phase(const char *name, struct bjob *j)
{
	printf("blkbench: %s start\n", name);
	j->done = j->errors = j->bad_used = j->ticks = 0;
	u64 r = user_run(u_bench, (u64)j, 0);
	if (r == ~0UL)
		test_fail(T, "%s: CPL3 loop took exception %lu at rip %lx", name, user_fault_vec, user_fault_rip);
	if (r)
		test_fail(T, "%s: the device returned a descriptor that was not a request head", name);
	u64 us = tsc_to_us(j->ticks);
	printf("blkbench: %s: %lu requests of %u bytes in %lu us, qd %u, %lu errors\n", name, j->done, j->bs, us,
	       j->depth, j->errors);
	if (j->errors)
		test_fail(T, "%s: %lu requests failed", name, j->errors);
}

static void t_blkbench(void)
{
	struct vdev *d = virtio_find(VIRTIO_ID_BLOCK, 0);
	if (!d)
		test_fail(T, "no virtio-blk device (%d virtio functions on bus 0)", nvdevs);
	u64 ms = 1000, bs_kib = 1024, qd = 4, rqd = 16;
	cmdline_get_u64("ms", &ms);
	cmdline_get_u64("bs", &bs_kib);
	cmdline_get_u64("qd", &qd);
	cmdline_get_u64("rqd", &rqd);
	if (qd < 1 || qd > BQ_MAXDEPTH || rqd < 1 || rqd > BQ_MAXDEPTH)
		test_fail(T, "qd/rqd must be 1..%u", BQ_MAXDEPTH);
	if (bs_kib < 4 || bs_kib > 1024 || (bs_kib & (bs_kib - 1)))
		test_fail(T, "bs=%lu: a power of two from 4 to 1024 KiB", bs_kib);

	/* Data buffers: after the image, at least at 16 MiB, below 3 GiB. */
	u64 bs = bs_kib << 10;
	u64 need = qd * bs > rqd * RAND_BS ? qd * bs : rqd * RAND_BS;
	u64 base = ALIGN_UP(boot.reserved_end, 2UL << 20);
	if (base < (16UL << 20))
		base = 16UL << 20;
	if (!ram_range_ok(base, need) || base + need > 0xc0000000UL)
		test_fail(T, "%lu KiB of buffers at 0x%lx is not RAM", need >> 10, base);
	/* Not filled: a CPL0 loop over megabytes is slow on PVM, and the
	 * written bytes do not matter (neither VMM looks for zeros). */

	virtio_reset(d);
	u64 offered = virtio_begin(d);
	if (!(offered & VF_VERSION_1))
		test_fail(T, "VERSION_1 not offered (0x%lx)", offered);
	d->features = VF_VERSION_1 | (offered & VBLK_F_RO);
	if (virtio_set_features(d))
		test_fail(T, "features refused");
	if (bq_setup(d))
		test_fail(T, "queue setup failed (status 0x%x)", virtio_status(d));
	vc_w8(d, VC_STATUS, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
	d->ready = false;	/* virtio.c's ring is not the one in use */

	u64 cap = vblk_capacity(d);
	bool ro = d->features & VBLK_F_RO;
	printf("blkbench: %02x:%02x.%x (%04x:%04x) capacity %lu sectors (%lu MiB)%s, %lu ms per phase, "
	       "buffers at 0x%lx\n", d->pci->bus, d->pci->dev, d->pci->fn, d->pci->vendor, d->pci->device, cap,
	       cap >> 11, ro ? ", read-only" : "", ms, base);
	if (cap < bs / 512 * qd || cap < 8)
		test_fail(T, "disk of %lu sectors is too small", cap);

	u64 ticks = ms * tsc_khz();
	struct bjob j = { .q = &bq, .rq = reqs, .bufs = (u8 *)base, .cap = cap, .duration = ticks };
	j.type = VBLK_T_IN;
	j.bs = (u32)bs;
	j.depth = (u32)qd;
	phase("seqread", &j);
	j.bs = RAND_BS;
	j.depth = (u32)rqd;
	j.random = true;
	j.next = 0x9e3779b97f4a7c15UL;
	phase("randread", &j);
	if (!ro) {
		j.type = VBLK_T_OUT;
		j.bs = (u32)bs;
		j.depth = (u32)qd;
		j.random = false;
		j.next = 0;
		phase("seqwrite", &j);
	}
	virtio_reset(d);
}
GUEST_TEST(blkbench, t_blkbench);
