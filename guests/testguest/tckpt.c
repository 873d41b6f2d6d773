/*
 * test=blkckpt [rounds=N]: a slow virtio-blk write workload for checkpoint
 * tests.  Round r writes sectors 1024+16r .. 1024+16r+15 with the disk
 * pattern, seed 0x5eed1000+r, prints "blkckpt: round r", and waits 100 ms,
 * so a checkpoint taken from the host lands between or inside requests.
 * At the end everything is read back and checked; the host recomputes the
 * same checksum from the image.
 */
#include "kernel.h"
#include "tests.h"
#include "virtio.h"

#define CKPT_FIRST_SECTOR 1024
#define CKPT_SECTORS_PER_ROUND 16
#define CKPT_SEED 0x5eed1000u

static u8 ckbuf[CKPT_SECTORS_PER_ROUND * 512] __attribute__((aligned(4096)));

static void t_blkckpt(void)
{
	u64 rounds = 64;
	cmdline_get_u64("rounds", &rounds);
	struct vdev *d = virtio_find(VIRTIO_ID_BLOCK, 0);
	if (!d || vblk_open(d) < 0)
		test_fail("blkckpt", "no usable virtio-blk device");
	if (vblk_capacity(d) < CKPT_FIRST_SECTOR + rounds * CKPT_SECTORS_PER_ROUND)
		test_fail("blkckpt", "disk too small for %lu rounds", rounds);
	for (u64 r = 0; r < rounds; r++) {
		u64 sector = CKPT_FIRST_SECTOR + r * CKPT_SECTORS_PER_ROUND;
		struct pjob j = { ckbuf, sector, CKPT_SECTORS_PER_ROUND, CKPT_SEED + (u32)r, 0, 0, 0, 0 };
		vblk_pattern(&j);
		int st = vblk_rw(d, VBLK_T_OUT, sector, ckbuf, sizeof(ckbuf));
		if (st != VBLK_S_OK)
			test_fail("blkckpt", "round %lu: write status %d", r, st);
		printf("blkckpt: round %lu\n", r);
		udelay(100000);
	}
	if (vblk_simple(d, VBLK_T_FLUSH) != VBLK_S_OK)
		test_fail("blkckpt", "flush failed");
	u64 h = 0xcbf29ce484222325UL;
	for (u64 r = 0; r < rounds; r++) {
		u64 sector = CKPT_FIRST_SECTOR + r * CKPT_SECTORS_PER_ROUND;
		memset(ckbuf, 0, sizeof(ckbuf));
		if (vblk_rw(d, VBLK_T_IN, sector, ckbuf, sizeof(ckbuf)) != VBLK_S_OK)
			test_fail("blkckpt", "round %lu: read back failed", r);
		struct pjob j = { ckbuf, sector, CKPT_SECTORS_PER_ROUND, CKPT_SEED + (u32)r, 1, 0, 0, 0 };
		vblk_pattern(&j);
		if (j.bad)
			test_fail("blkckpt", "round %lu: %lu words differ", r, j.bad);
		h ^= j.fnv;
	}
	printf("blkckpt: verified %lu rounds xor-fnv 0x%016lx\n", rounds, h);
	test_pass("blkckpt");
}
GUEST_TEST(blkckpt, t_blkckpt);
