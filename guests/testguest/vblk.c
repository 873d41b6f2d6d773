/*
 * virtio-blk requests (virtio 1.2, 5.2.6), test=blk, and the shell's
 * `disk` command.  Data patterns and checksums run at CPL3 (user_run),
 * where the PVM host executes natively.
 *
 * Disk pattern (the host test writes the same): 32-bit word j of 512-byte
 * sector s is ((s * 0x9e3779b1 + j * 0x85ebca77) ^ seed ^ 0xa5a5a5a5)
 * mod 2^32, little-endian; the image is created with seed 0 and test=blk
 * writes seed 0x5eed0001.  Checksums are FNV-1a 64 over the bytes.
 */
#include "virtio.h"
#include "shell.h"

struct vblk_hdr {
	u32 type;
	u32 ioprio;
	u64 sector;
};

static struct {
	struct vblk_hdr hdr;
	u8 status;
	u8 pad[7];
	char id[24];
	struct { u64 sector; u32 num; u32 flags; } seg;
} rq __attribute__((aligned(64)));

/* One request: header, optional data (device-writable if `in`), status. */
static int vblk_req(struct vdev *d, u32 type, u64 sector, void *data, u32 len, bool in)
{
	struct vring_desc c[3];
	int n = 0;
	rq.hdr.type = type;
	rq.hdr.ioprio = 0;
	rq.hdr.sector = sector;
	rq.status = 0xff;
	c[n++] = (struct vring_desc){ (u64)&rq.hdr, sizeof(rq.hdr), 0, 0 };
	if (len)
		c[n++] = (struct vring_desc){ (u64)data, len, in ? VRING_DESC_F_WRITE : 0, 0 };
	c[n++] = (struct vring_desc){ (u64)&rq.status, 1, VRING_DESC_F_WRITE, 0 };
	if (virtio_submit(d, c, n, 5000) < 0)
		return -1;
	return READ_ONCE(rq.status);
}

int vblk_rw(struct vdev *d, u32 type, u64 sector, void *buf, u32 len)
{
	return vblk_req(d, type, sector, buf, len, type == VBLK_T_IN);
}

int vblk_simple(struct vdev *d, u32 type)
{
	return vblk_req(d, type, 0, NULL, 0, false);
}

int vblk_get_id(struct vdev *d, char id[21])
{
	memset(rq.id, 0, sizeof(rq.id));
	int st = vblk_req(d, VBLK_T_GET_ID, 0, rq.id, 20, true);
	memcpy(id, rq.id, 20);
	id[20] = 0;
	return st;
}

int vblk_discard(struct vdev *d, u64 sector, u32 nsect)
{
	rq.seg.sector = sector;
	rq.seg.num = nsect;
	rq.seg.flags = 0;
	return vblk_req(d, VBLK_T_DISCARD, 0, &rq.seg, sizeof(rq.seg), false);
}

u64 vblk_capacity(struct vdev *d)
{
	if (!d->devcfg)
		return 0;
	u32 lo = *(volatile u32 *)d->devcfg, hi = *(volatile u32 *)(d->devcfg + 4);
	return (u64)hi << 32 | lo;
}

int vblk_open(struct vdev *d)
{
	return virtio_init(d, VBLK_F_RO | VBLK_F_FLUSH | VBLK_F_DISCARD);
}

/* ---- CPL3 helpers ---- */
#define BLK_SEED_WRITE 0x5eed0001u

USER_TEXT static u64 u_pattern(u64 arg)
{
	struct pjob *j = (struct pjob *)arg;
	u32 *w = (u32 *)j->buf;
	u64 bad = 0, first = ~0UL;
	for (u64 s = 0; s < j->nsect; s++) {
		u32 sec = (u32)(j->sector + s);
		for (u32 k = 0; k < 128; k++, w++) {
			u32 v = j->op == 2 ? 0 : ((sec * 0x9e3779b1u + k * 0x85ebca77u) ^ j->seed ^ 0xa5a5a5a5u);
			if (j->op == 0) {
				*w = v;
			} else if (*w != v) {
				if (!bad)
					first = (u64)((u8 *)w - j->buf);
				bad++;
			}
		}
	}
	u64 h = 0xcbf29ce484222325UL;
	for (u64 i = 0; i < j->nsect * 512; i++)
		h = (h ^ j->buf[i]) * 0x100000001b3UL;
	j->fnv = h;
	j->bad = bad;
	j->first_bad = first;
	return 0;
}

extern const char *current_test;

void vblk_pattern(struct pjob *j)
{
	if (user_run(u_pattern, (u64)j, 0) != 0)
		test_fail(current_test, "CPL3 pattern code took exception %lu at %lx", user_fault_vec, user_fault_rip);
}
#define pattern vblk_pattern

static u8 bufa[64 * 512] __attribute__((aligned(4096)));
static u8 bufb[64 * 512] __attribute__((aligned(4096)));

#define CHUNK 16		/* sectors per request */

static void xfer(struct vdev *d, u32 type, u64 sector, u8 *buf, u64 nsect)
{
	for (u64 s = 0; s < nsect; s += CHUNK) {
		u64 n = nsect - s < CHUNK ? nsect - s : CHUNK;
		int st = vblk_rw(d, type, sector + s, buf + s * 512, (u32)(n * 512));
		if (st != VBLK_S_OK)
			test_fail("blk", "%s sectors %lu-%lu: status %d (status reg 0x%x)",
				  type == VBLK_T_IN ? "read" : "write", sector + s, sector + s + n - 1, st,
				  virtio_status(d));
	}
}

static void check(struct pjob *j, const char *what)
{
	pattern(j);
	if (j->bad)
		test_fail("blk", "%s: %lu words differ, first at sector %lu byte %lu", what, j->bad,
			  j->sector + j->first_bad / 512, j->first_bad % 512);
}

void t_blk(void)
{
	struct vdev *d = virtio_find(VIRTIO_ID_BLOCK, 0);
	if (!d)
		test_fail("blk", "no virtio-blk device (%d virtio functions on bus 0)", nvdevs);
	if (vblk_open(d))
		test_fail("blk", "driver initialization failed");
	u64 cap = vblk_capacity(d);
	bool ro = d->features & VBLK_F_RO;
	printf("blk: %02x:%02x.%x (%04x:%04x) capacity %lu sectors, offered 0x%lx, using 0x%lx%s\n",
	       d->pci->bus, d->pci->dev, d->pci->fn, d->pci->vendor, d->pci->device, cap, d->offered,
	       d->features, ro ? " (read-only)" : "");
	if (cap < 1024)
		test_fail("blk", "capacity %lu: the test needs at least 1024 sectors", cap);

	char id[21];
	int st = vblk_get_id(d, id);
	if (st != VBLK_S_OK)
		test_fail("blk", "GET_ID status %d", st);
	printf("blk: id '%s'\n", id);

	/* Read sectors 0-63 and the last one: host pattern, seed 0. */
	struct pjob j = { .buf = bufa, .sector = 0, .nsect = 64, .seed = 0, .op = 1 };
	xfer(d, VBLK_T_IN, 0, bufa, 64);
	check(&j, "read 0-63");
	printf("blk: read sectors 0-63 fnv=0x%016lx\n", j.fnv);
	j = (struct pjob){ .buf = bufa, .sector = cap - 1, .nsect = 1, .seed = 0, .op = 1 };
	xfer(d, VBLK_T_IN, cap - 1, bufa, 1);
	check(&j, "read last sector");
	printf("blk: read last sector %lu fnv=0x%016lx\n", cap - 1, j.fnv);

	/* Past the end: IOERR. */
	st = vblk_rw(d, VBLK_T_IN, cap, bufa, 512);
	printf("blk: read past the end (sector %lu): status %d\n", cap, st);
	if (st != VBLK_S_IOERR)
		test_fail("blk", "read past the end: status %d, expected %d (IOERR)", st, VBLK_S_IOERR);

	st = vblk_simple(d, VBLK_T_FLUSH);
	printf("blk: flush: status %d\n", st);
	if (st != VBLK_S_OK)
		test_fail("blk", "flush: status %d", st);

	if (ro) {
		/* devices/virtio_blk.c: VIRTIO_BLK_T_OUT on a read-only backend -> IOERR. */
		j = (struct pjob){ .buf = bufb, .sector = 256, .nsect = 16, .seed = BLK_SEED_WRITE, .op = 0 };
		pattern(&j);
		st = vblk_rw(d, VBLK_T_OUT, 256, bufb, 16 * 512);
		printf("blk: write on read-only disk: status %d\n", st);
		if (st != VBLK_S_IOERR)
			test_fail("blk", "write on a read-only disk: status %d, expected %d (IOERR)", st, VBLK_S_IOERR);
		st = vblk_discard(d, 512, 16);
		printf("blk: discard on read-only disk (not negotiated): status %d\n", st);
		if (st != VBLK_S_UNSUPP)
			test_fail("blk", "discard without the feature: status %d, expected %d (UNSUPP)", st, VBLK_S_UNSUPP);
		/* The data is still the original. */
		j = (struct pjob){ .buf = bufa, .sector = 256, .nsect = 16, .seed = 0, .op = 1 };
		xfer(d, VBLK_T_IN, 256, bufa, 16);
		check(&j, "read-only sectors 256-271 after the refused write");
		printf("blk: sectors 256-271 unchanged\n");
		test_pass("blk");
	}

	/* Write 256-319 with another seed, read back, compare. */
	j = (struct pjob){ .buf = bufb, .sector = 256, .nsect = 64, .seed = BLK_SEED_WRITE, .op = 0 };
	pattern(&j);
	xfer(d, VBLK_T_OUT, 256, bufb, 64);
	j = (struct pjob){ .buf = bufa, .sector = 256, .nsect = 64, .seed = BLK_SEED_WRITE, .op = 1 };
	xfer(d, VBLK_T_IN, 256, bufa, 64);
	check(&j, "read back 256-319");
	printf("blk: wrote sectors 256-319 fnv=0x%016lx, read back ok\n", j.fnv);
	st = vblk_simple(d, VBLK_T_FLUSH);
	if (st != VBLK_S_OK)
		test_fail("blk", "flush after write: status %d", st);

	if (d->features & VBLK_F_DISCARD) {
		st = vblk_discard(d, 512, 16);
		printf("blk: discard sectors 512-527: status %d\n", st);
		if (st != VBLK_S_OK)
			test_fail("blk", "discard: status %d", st);
		j = (struct pjob){ .buf = bufa, .sector = 512, .nsect = 16, .op = 2 };
		xfer(d, VBLK_T_IN, 512, bufa, 16);
		check(&j, "sectors 512-527 after discard are not zero");
		printf("blk: sectors 512-527 read back as zeros\n");
	} else {
		st = vblk_discard(d, 512, 16);
		printf("blk: DISCARD not offered; discard request: status %d\n", st);
		if (st != VBLK_S_UNSUPP)
			test_fail("blk", "discard without the feature: status %d, expected UNSUPP", st);
	}
	st = vblk_simple(d, VBLK_T_FLUSH);
	if (st != VBLK_S_OK)
		test_fail("blk", "final flush: status %d", st);
	test_pass("blk");
}

/* ---- shell: disk [read N [DISK]] ---- */
static struct vdev *disk_get(int n)
{
	struct vdev *d = virtio_find(VIRTIO_ID_BLOCK, n);
	if (d && !d->ready && vblk_open(d))
		return NULL;
	return d;
}

static void cmd_disk(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "read")) {
		u64 sec, n = 0;
		if (!parse_u64(argv[2], &sec) || (argc >= 4 && !parse_u64(argv[3], &n))) {
			printf("usage: disk read SECTOR [DISK]\n");
			return;
		}
		struct vdev *d = disk_get((int)n);
		if (!d) {
			printf("disk%lu: no such disk\n", n);
			return;
		}
		int st = vblk_rw(d, VBLK_T_IN, sec, bufa, 512);
		if (st != VBLK_S_OK) {
			printf("disk%lu: read sector %lu: status %d\n", n, sec, st);
			return;
		}
		for (int o = 0; o < 512; o += 16) {
			char line[80];
			int k = snprintf(line, sizeof(line), "%03x:", o);
			for (int i = 0; i < 16; i++)
				k += snprintf(line + k, sizeof(line) - k, " %02x", bufa[o + i]);
			k += snprintf(line + k, sizeof(line) - k, "  ");
			for (int i = 0; i < 16; i++) {
				u8 c = bufa[o + i];
				line[k++] = c >= 0x20 && c < 0x7f ? (char)c : '.';
			}
			line[k] = 0;
			printf("%s\n", line);
		}
		return;
	}
	if (argc > 1) {
		printf("usage: disk | disk read SECTOR [DISK]\n");
		return;
	}
	int found = 0;
	for (int i = 0; i < VDEV_MAX; i++) {
		struct vdev *d = disk_get(i);
		if (!d)
			break;
		char id[21] = "";
		if (vblk_get_id(d, id) != VBLK_S_OK)
			id[0] = 0;
		u64 cap = vblk_capacity(d);
		printf("disk%d: pci %02x:%02x.%x virtio-blk, %lu sectors (%lu KiB), serial '%s'%s\n", i,
		       d->pci->bus, d->pci->dev, d->pci->fn, cap, cap / 2, id,
		       d->features & VBLK_F_RO ? ", read-only" : "");
		found++;
	}
	if (!found)
		printf("no virtio-blk devices\n");
}
SHELL_COMMAND(disk, "disk [read N] list virtio-blk disks / hexdump sector N", cmd_disk);
