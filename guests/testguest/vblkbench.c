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
#include "bench.h"
#include "virtio.h"
#include "tests.h"

#define BQ_SIZE 64
#define BQ_MAXDEPTH (BQ_SIZE / 3)

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
	struct bench_pos pos;	/* in sectors */
	u64 duration;		/* TSC ticks */
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

USER_TEXT static void submit(struct bjob *j, u32 slot)
{
	struct gvq *q = j->q;
	struct breq *r = &j->rq[slot];
	u16 h = (u16)(3 * slot);
	r->type = j->type;
	r->ioprio = 0;
	r->sector = bench_next(&j->pos);
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

static void phase(const char *name, bool write, u32 depth, void *arg)
{
	struct bjob *j = arg;
	j->type = write ? VBLK_T_OUT : VBLK_T_IN;
	j->bs = j->pos.bs;
	j->depth = depth;
	j->done = j->errors = j->bad_used = j->ticks = 0;
	if (bench_run(T, name, u_bench, j))
		test_fail(T, "%s: the device returned a descriptor that was not a request head", name);
	bench_report(T, name, j->done, j->bs, j->ticks, j->depth, j->errors);
}

static void t_blkbench(void)
{
	struct vdev *d = virtio_find(VIRTIO_ID_BLOCK, 0);
	if (!d)
		test_fail(T, "no virtio-blk device (%d virtio functions on bus 0)", nvdevs);
	struct bench_opts o;
	bench_setup(T, BQ_MAXDEPTH, 0, &o);

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
	       cap >> 11, ro ? ", read-only" : "", o.ms, o.base);
	if (cap < o.bs / 512 * o.qd || cap < 8)
		test_fail(T, "disk of %lu sectors is too small", cap);

	struct bjob j = { .q = &bq, .rq = reqs, .bufs = (u8 *)o.base, .duration = o.ms * tsc_khz(),
	                  .pos = { .units = cap, .unit = 512 } };
	bench_phases(&o, !ro, &j.pos, phase, &j);
	virtio_reset(d);
}
GUEST_TEST(blkbench, t_blkbench);
