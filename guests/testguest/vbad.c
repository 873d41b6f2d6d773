/*
 * test=badring: malformed virtqueues given to virtio-blk.  Each case must
 * make the device set DEVICE_NEEDS_RESET (0x40) without completing the
 * request; the VMM keeps running, a reset brings the device back, and the
 * virtio-rnd device is unaffected.
 */
#include "virtio.h"

int vrnd_check(const char *name);

static struct {
	struct { u32 type, ioprio; u64 sector; } hdr;
	u8 status;
} brq __attribute__((aligned(64)));
static u8 bbuf[512] __attribute__((aligned(512)));

#define BAD_ADDR 0x7fffffff0000UL

static void expect_needs_reset(struct vdev *d, const char *what, u16 used_before)
{
	if (!virtio_wait_status(d, VS_NEEDS_RESET, 2000))
		test_fail("badring", "%s: status 0x%x, DEVICE_NEEDS_RESET not set", what, virtio_status(d));
	if (virtio_used_idx(d) != used_before)
		test_fail("badring", "%s: the device completed the request", what);
	printf("badring: %s -> status 0x%x (NEEDS_RESET)\n", what, virtio_status(d));
}

/* Reset, re-initialize, and read sector 0 successfully. */
static void recover(struct vdev *d, const char *after)
{
	virtio_reset(d);
	if (virtio_status(d) != 0)
		test_fail("badring", "after %s: status 0x%x after reset", after, virtio_status(d));
	if (vblk_open(d))
		test_fail("badring", "after %s: re-initialization failed", after);
	int st = vblk_rw(d, VBLK_T_IN, 0, bbuf, 512);
	if (st != VBLK_S_OK)
		test_fail("badring", "after %s: read of sector 0 gave status %d (status reg 0x%x)", after, st,
			  virtio_status(d));
}

static void bad_chain(struct vdev *d, const char *what, const struct vring_desc *c, int n)
{
	if (vblk_open(d))
		test_fail("badring", "%s: initialization failed", what);
	brq.hdr.type = VBLK_T_IN;
	brq.hdr.ioprio = 0;
	brq.hdr.sector = 0;
	brq.status = 0xff;
	u16 used = virtio_used_idx(d);
	virtio_submit_raw(d, c, n, 0);
	expect_needs_reset(d, what, used);
	if (brq.status != 0xff)
		test_fail("badring", "%s: status byte written (%u)", what, brq.status);
	recover(d, what);
}

void t_badring(void)
{
	struct vdev *d = virtio_find(VIRTIO_ID_BLOCK, 0);
	if (!d)
		test_fail("badring", "no virtio-blk device");
	u64 hdr = (u64)&brq.hdr, st = (u64)&brq.status, buf = (u64)bbuf;

	/* 1. A data buffer outside guest RAM. */
	struct vring_desc c1[3] = {
		{ hdr, 16, VRING_DESC_F_NEXT, 1 },
		{ BAD_ADDR, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2 },
		{ st, 1, VRING_DESC_F_WRITE, 0 },
	};
	bad_chain(d, "buffer at 0x7fffffff0000", c1, 3);

	/* 2. A descriptor loop: 0 -> 1 -> 0. */
	struct vring_desc c2[2] = {
		{ hdr, 16, VRING_DESC_F_NEXT, 1 },
		{ buf, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0 },
	};
	bad_chain(d, "descriptor loop", c2, 2);

	/* 3. A huge length from a valid address. */
	struct vring_desc c3[3] = {
		{ hdr, 16, VRING_DESC_F_NEXT, 1 },
		{ buf, 0xffff0000u, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2 },
		{ st, 1, VRING_DESC_F_WRITE, 0 },
	};
	bad_chain(d, "length 0xffff0000", c3, 3);

	/* 4. A next index beyond the queue size. */
	struct vring_desc c4[2] = {
		{ hdr, 16, VRING_DESC_F_NEXT, 200 },
		{ st, 1, VRING_DESC_F_WRITE, 0 },
	};
	bad_chain(d, "next index 200", c4, 2);

	/* 5. The descriptor table itself outside guest RAM, at queue enable. */
	virtio_reset(d);
	vc_w8(d, VC_STATUS, VS_ACK | VS_DRIVER);
	vc_w32(d, VC_GFSELECT, 0);
	vc_w32(d, VC_GF, 0);
	vc_w32(d, VC_GFSELECT, 1);
	vc_w32(d, VC_GF, 1);	/* VERSION_1 */
	vc_w8(d, VC_STATUS, VS_ACK | VS_DRIVER | VS_FEATURES_OK);
	vc_w16(d, VC_QSELECT, 0);
	vc_w16(d, VC_QSIZE, VQ_SIZE);
	vc_w32(d, VC_QDESC, (u32)BAD_ADDR);
	vc_w32(d, VC_QDESC + 4, (u32)(BAD_ADDR >> 32));
	vc_w16(d, VC_QENABLE, 1);
	expect_needs_reset(d, "descriptor table at 0x7fffffff0000", virtio_used_idx(d));
	if (vc_r16(d, VC_QENABLE) != 0)
		test_fail("badring", "queue with a ring outside RAM reads as enabled");
	recover(d, "bad ring address");
	printf("badring: virtio-blk works again after reset\n");

	vrnd_check("badring");
	test_pass("badring");
}
