/*
 * test=nvme: a small polled NVMe driver (NVMe 1.4) against the first NVMe
 * controller (class 01:08:02): controller reset and enable, Identify
 * (controller, namespace 1, namespace ID descriptors), Set Features
 * (number of queues), one I/O queue pair, then Write / Read / Flush /
 * Dataset Management (deallocate) / Write Zeroes on namespace 1 with the
 * disk pattern of vblk.c, and the errors a device must report rather than
 * act on: an LBA range past the end, an unknown opcode, an I/O queue
 * larger than CAP.MQES, a PRP list entry that is not page aligned.
 *
 * Lines (the host checks them and the image):
 *   nvme: BB:DD.F (VVVV:DDDD) vs 1.4 mqes N dstrd N
 *   nvme: model '...' serial '...' vwc N oncs 0xN
 *   nvme: ns1 N blocks of N bytes eui64 HEX nguid HEX
 *   nvme: nsid descriptors: eui64 nguid
 *   nvme: queues granted sq N cq N
 *   nvme: wrote lba 256-271 fnv=0x..., read back ok
 *   nvme: flush status 0x0
 *   nvme: dsm lba 512-527 status 0x0, reads zeros
 *   nvme: write zeroes lba 600-607 status 0x0, reads zeros
 *   nvme: read past the end status 0x80 (LBA out of range)
 *   nvme: opcode 0x7f status 0x1 (invalid opcode)
 *   nvme: queue of mqes+2 entries: status sct 1 sc 0x2 (invalid queue size)
 *   nvme: misaligned PRP list entry status 0x13
 * All polled: interrupts stay off (IEN=0), so CPL0 emulation cost stays low.
 */
#include "kernel.h"
#include "nvme.h"
#include "tests.h"
#include "virtio.h"

#define QSIZE 16

static struct sqe asq[QSIZE] __attribute__((aligned(4096)));
static struct cqe acq[QSIZE] __attribute__((aligned(4096)));
static struct sqe iosq[QSIZE] __attribute__((aligned(4096)));
static struct cqe iocq[QSIZE] __attribute__((aligned(4096)));
static u8 idbuf[4096] __attribute__((aligned(4096)));
static u8 dbuf[8192] __attribute__((aligned(4096)));
static u64 prplist[512] __attribute__((aligned(4096)));

struct nq {
	struct sqe *sq;
	volatile struct cqe *cq;
	u16 tail, head, phase, cid, qid;
};

u64 nvme_regs;
u32 nvme_dstrd;
static struct nq adminq, ioq;

static u32 r32(u32 off) { return mmio_read32(nvme_regs + off); }
static void w32(u32 off, u32 v) { mmio_write32(nvme_regs + off, v); }
static u64 r64(u32 off) { return (u64)r32(off) | (u64)r32(off + 4) << 32; }
static void w64(u32 off, u64 v)
{
	w32(off, (u32)v);
	w32(off + 4, (u32)(v >> 32));
}

/* Submit one command, poll its completion; the status field (bits 15:1), or -1 on timeout. */
static int nvme_cmd(struct nq *q, struct sqe *c, u32 *dw0)
{
	c->cdw0 = (c->cdw0 & 0xffff) | (u32)q->cid++ << 16;
	u16 cid = (u16)(c->cdw0 >> 16);
	q->sq[q->tail] = *c;
	q->tail = (u16)((q->tail + 1) % QSIZE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	w32(0x1000 + (2 * q->qid) * (4u << nvme_dstrd), q->tail);
	for (u64 spins = 0; spins < 200000000ULL; spins++) {
		volatile struct cqe *e = &q->cq[q->head];
		if ((e->status & 1) == q->phase) {
			u16 st = e->status >> 1;
			if (dw0)
				*dw0 = e->dw0;
			bool mine = e->cid == cid;
			q->head = (u16)((q->head + 1) % QSIZE);
			if (q->head == 0)
				q->phase ^= 1;
			w32(0x1000 + (2 * q->qid + 1) * (4u << nvme_dstrd), q->head);
			if (!mine)
				test_fail("nvme", "completion for command %u, expected %u", e->cid, cid);
			return st;
		}
		cpu_relax();
	}
	return -1;
}

int nvme_admin(u8 opc, u32 nsid, u64 prp1, u32 cdw10, u32 cdw11, u32 *dw0)
{
	struct sqe c = { .cdw0 = opc, .nsid = nsid, .prp1 = prp1, .cdw10 = cdw10, .cdw11 = cdw11 };
	return nvme_cmd(&adminq, &c, dw0);
}

static int io(u8 opc, u64 lba, u32 nblocks, void *buf, u32 cdw10_dsm, u32 cdw11_dsm)
{
	struct sqe c = { .cdw0 = opc, .nsid = 1, .prp1 = (u64)buf, .prp2 = (u64)buf + 4096,
	                 .cdw10 = (u32)lba, .cdw11 = (u32)(lba >> 32), .cdw12 = nblocks ? nblocks - 1 : 0 };
	if (opc == 0x09) {   /* DSM: range count and attributes, not an LBA */
		c.cdw10 = cdw10_dsm;
		c.cdw11 = cdw11_dsm;
		c.cdw12 = 0;
	}
	return nvme_cmd(&ioq, &c, NULL);
}

static bool all_zero(const u8 *b, u64 n)
{
	for (u64 i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static void hex(const u8 *b, int n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (int i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = 0;
}

static void str_field(const u8 *b, int n, char *out)
{
	int len = n;
	while (len > 0 && (b[len - 1] == ' ' || b[len - 1] == 0))
		len--;
	memcpy(out, b, (size_t)len);
	out[len] = 0;
}

u32 nvme_bringup(const char *t)
{
	pci_scan();
	const struct pci_func *f = NULL;
	for (int i = 0; i < pci_nfuncs && !f; i++)
		if (pci_funcs[i].class == 0x01 && pci_funcs[i].subclass == 0x08 &&
		    pci_cfg_read8(&pci_funcs[i], 0x09) == 0x02)
			f = &pci_funcs[i];
	if (!f || !f->bar[0] || f->bar_io[0])
		test_fail(t, "no NVMe controller with a memory BAR 0");
	pci_cfg_write16(f, 0x04, pci_cfg_read16(f, 0x04) | 0x6);   /* memory space, bus master */
	nvme_regs = f->bar[0];
	u64 cap = r64(0x00);
	u32 vs = r32(0x08), mqes = (u32)(cap & 0xffff);
	nvme_dstrd = (u32)(cap >> 32) & 0xf;
	printf("%s: %02x:%02x.%x (%04x:%04x) vs %u.%u mqes %u dstrd %u\n", t, f->bus, f->dev, f->fn, f->vendor,
	       f->device, vs >> 16, (vs >> 8) & 0xff, mqes, nvme_dstrd);
	if (!(cap & (1ULL << 37)))
		test_fail(t, "CAP.CSS does not offer the NVM command set");

	/* Reset, admin queues, enable. */
	w32(0x14, 0);
	for (u64 i = 0; r32(0x1c) & 1; i++)
		if (i > 100000000ULL)
			test_fail(t, "CSTS.RDY stays 1 after CC.EN=0");
	memset(asq, 0, sizeof(asq));
	memset((void *)acq, 0, sizeof(acq));
	w32(0x24, (QSIZE - 1) << 16 | (QSIZE - 1));
	w64(0x28, (u64)asq);
	w64(0x30, (u64)acq);
	w32(0x14, 1 | 6u << 16 | 4u << 20);   /* EN, IOSQES 64 B, IOCQES 16 B, MPS 4 KiB */
	for (u64 i = 0; !(r32(0x1c) & 1); i++)
		if (i > 100000000ULL || (r32(0x1c) & 2))
			test_fail(t, "controller not ready (CSTS 0x%x)", r32(0x1c));
	adminq = (struct nq){ asq, acq, 0, 0, 1, 0, 0 };
	return mqes;
}

static void t_nvme(void)
{
	u32 mqes = nvme_bringup("nvme");

	/* Identify controller, namespace 1, namespace ID descriptors. */
	int st = nvme_admin(0x06, 0, (u64)idbuf, 1, 0, NULL);
	if (st)
		test_fail("nvme", "identify controller: status 0x%x", st);
	char model[41], serial[21];
	str_field(idbuf + 24, 40, model);
	str_field(idbuf + 4, 20, serial);
	u16 oncs = (u16)(idbuf[520] | idbuf[521] << 8);
	printf("nvme: model '%s' serial '%s' vwc %u oncs 0x%x\n", model, serial, idbuf[525] & 1, oncs);
	if ((st = nvme_admin(0x06, 1, (u64)idbuf, 0, 0, NULL)))
		test_fail("nvme", "identify namespace 1: status 0x%x", st);
	u64 nsze = *(u64 *)idbuf;
	u8 flbas = idbuf[26] & 0xf;
	u32 lbads = idbuf[128 + 4 * flbas + 2], bs = 1u << lbads;
	char eui[17], nguid[33];
	hex(idbuf + 120, 8, eui);
	hex(idbuf + 104, 16, nguid);
	printf("nvme: ns1 %lu blocks of %u bytes eui64 %s nguid %s\n", nsze, bs, eui, nguid);
	if (bs != 512)
		test_fail("nvme", "this test wants 512-byte blocks, the namespace has %u", bs);
	if ((st = nvme_admin(0x06, 1, (u64)idbuf, 3, 0, NULL)))
		test_fail("nvme", "namespace ID descriptors: status 0x%x", st);
	printf("nvme: nsid descriptors:");
	for (u32 o = 0; o + 4 <= sizeof(idbuf) && idbuf[o]; o += 4u + idbuf[o + 1])
		printf(" %s", idbuf[o] == 1 ? "eui64" : idbuf[o] == 2 ? "nguid" : idbuf[o] == 3 ? "uuid" : "other");
	printf("\n");
	u32 dw0 = 0;
	if ((st = nvme_admin(0x09, 0, 0, 0x07, 0, &dw0)))   /* Set Features: number of queues, 1 + 1 */
		test_fail("nvme", "set features (number of queues): status 0x%x", st);
	printf("nvme: queues granted sq %u cq %u\n", (dw0 & 0xffff) + 1, (dw0 >> 16) + 1);

	/* An I/O queue larger than CAP.MQES allows is refused... */
	st = nvme_admin(0x05, 0, (u64)iocq, (mqes + 1) << 16 | 1, 1, NULL);
	printf("nvme: queue of mqes+2 entries: status sct %u sc 0x%x\n", (st >> 8) & 7, st & 0xff);
	/* ... the real pair is created (polled: IEN=0). */
	memset((void *)iocq, 0, sizeof(iocq));
	if ((st = nvme_admin(0x05, 0, (u64)iocq, (QSIZE - 1) << 16 | 1, 1, NULL)))
		test_fail("nvme", "create I/O CQ: status 0x%x", st);
	if ((st = nvme_admin(0x01, 0, (u64)iosq, (QSIZE - 1) << 16 | 1, 1u << 16 | 1, NULL)))
		test_fail("nvme", "create I/O SQ: status 0x%x", st);
	ioq = (struct nq){ iosq, iocq, 0, 0, 1, 0, 1 };

	/* Write 16 blocks (two pages: PRP1 + PRP2), read back, check. */
	struct pjob j = { dbuf, 256, 16, 0x5eed0002u, 0, 0, 0, 0 };
	vblk_pattern(&j);
	u64 fnv = j.fnv;
	if ((st = io(0x01, 256, 16, dbuf, 0, 0)))
		test_fail("nvme", "write: status 0x%x", st);
	memset(dbuf, 0, sizeof(dbuf));
	if ((st = io(0x02, 256, 16, dbuf, 0, 0)))
		test_fail("nvme", "read: status 0x%x", st);
	j = (struct pjob){ dbuf, 256, 16, 0x5eed0002u, 1, 0, 0, 0 };
	vblk_pattern(&j);
	if (j.bad)
		test_fail("nvme", "read back: %lu words differ", j.bad);
	printf("nvme: wrote lba 256-271 fnv=0x%016lx, read back ok\n", fnv);
	printf("nvme: flush status 0x%x\n", io(0x00, 0, 0, dbuf, 0, 0));

	/* Dataset Management, deallocate: lba 512-527 then read as zeros. */
	if (oncs & (1 << 2)) {
		u32 *range = (u32 *)idbuf;
		memset(idbuf, 0, 16);
		range[1] = 16;   /* blocks */
		*(u64 *)(idbuf + 8) = 512;
		st = io(0x09, 0, 0, idbuf, 0, 1u << 2);
		memset(dbuf, 0xaa, sizeof(dbuf));
		int rs = io(0x02, 512, 16, dbuf, 0, 0);
		printf("nvme: dsm lba 512-527 status 0x%x, %s\n", st, !rs && all_zero(dbuf, 8192) ? "reads zeros" : "reads data");
	}
	if (oncs & (1 << 3)) {
		st = io(0x08, 600, 8, dbuf, 0, 0);
		memset(dbuf, 0xaa, sizeof(dbuf));
		int rs = io(0x02, 600, 8, dbuf, 0, 0);
		printf("nvme: write zeroes lba 600-607 status 0x%x, %s\n", st,
		       !rs && all_zero(dbuf, 4096) ? "reads zeros" : "reads data");
	}

	/* Errors the device must report. */
	st = io(0x02, nsze - 4, 8, dbuf, 0, 0);
	printf("nvme: read past the end status 0x%x\n", st & 0xff);
	struct sqe bad = { .cdw0 = 0x7f, .nsid = 1, .prp1 = (u64)dbuf };
	st = nvme_cmd(&ioq, &bad, NULL);
	printf("nvme: opcode 0x7f status 0x%x\n", st & 0xff);
	/* 3 pages: PRP2 points to a list whose entry is not page aligned. */
	static u8 big[3 * 4096] __attribute__((aligned(4096)));
	prplist[0] = (u64)big + 4096 + 8;
	prplist[1] = (u64)big + 8192;
	struct sqe pl = { .cdw0 = 0x02, .nsid = 1, .prp1 = (u64)big, .prp2 = (u64)prplist, .cdw10 = 0, .cdw12 = 23 };
	st = nvme_cmd(&ioq, &pl, NULL);
	printf("nvme: misaligned PRP list entry status 0x%x\n", st & 0xff);
	test_pass("nvme");
}
GUEST_TEST(nvme, t_nvme);
