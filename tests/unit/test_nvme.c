/*
 * Unit test for the NVMe controller (devices/nvme.c, devices/nvme_admin.c)
 * with only the KVM layer stubbed (tests/fuzz/nvme_stubs.c): three
 * controllers built by init_run_all from a configuration, as hyve builds
 * them, each on an image file; the test is the guest driver.  It enables
 * them like Linux's nvme driver (CC/AQA/ASQ/ACQ, MSI-X table), identifies,
 * sets the queue count, creates I/O queues, reads and writes through PRP1,
 * PRP2 and PRP lists (chained, unaligned, in RAM above 4 GiB) and checks
 * the data against the image on the host; flush, write zeroes, dataset
 * management; features, log pages (SMART counters), AER; error statuses
 * for nonsense (queue ids, sizes, vectors, PRPs outside RAM or misaligned,
 * LBAs past the end, transfers over MDTS, unknown opcodes, namespaces);
 * CQ-full back-pressure and I/O slot exhaustion; INTx; checkpoint save and
 * restore of a live controller, which then continues; shutdown and reset.
 * test-sources: tests/fuzz/nvme_stubs.c devices/nvme.c devices/nvme_admin.c devices/pci_emul.c devices/blockif.c devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c devices/qcow2_snapshot.c core/config.c core/snapshot.c core/init.c core/inout.c core/mmio.c
 * test-libs: -luring -lz -lzstd
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../core/snapshot.h"
#include "../../devices/nvme_internal.h"
#include "../../devices/pci_emul.h"
#include "../fuzz/nvme_stubs.h"

#include "check.h"

/* Status field without DNR/More/CRD: (SCT << 8) | SC. */
#define SCODE(st) ((st) & 0x7ff)
#define S_OK 0x000
#define S_INVALID_OPCODE 0x001
#define S_INVALID_FIELD 0x002
#define S_DATA_XFER 0x004
#define S_INVALID_NS 0x00b
#define S_SEQ_ERROR 0x00c
#define S_PRP_OFFSET 0x013
#define S_WRITE_PROTECTED 0x020
#define S_LBA_RANGE 0x080
#define S_CQ_INVALID 0x100
#define S_INVALID_QID 0x101
#define S_INVALID_QSIZE 0x102
#define S_AER_LIMIT 0x105
#define S_INVALID_IV 0x108
#define S_INVALID_LOG 0x109
#define S_INVALID_QDELETE 0x10c
#define S_NOT_SAVEABLE 0x10d

/* Guest memory layout (RAM0 is 4 MiB). */
#define ASQ_GPA   0x00000
#define ACQ_GPA   0x01000
#define IOQ_GPA(q) (0x10000 + (uint64_t)(q) * 0x4000)      /* SQ q, CQ q at +0x2000 */
#define LIST_GPA  0x40000                                   /* PRP list pages */
#define ID_GPA    0x60000                                   /* identify / log buffers */
#define DATA_GPA  0x100000                                  /* data: 2 MiB */
#define DATA2_GPA 0x300000                                  /* compare buffer: 1 MiB */

struct q {
	uint64_t sq, cq;
	uint32_t sqsize, cqsize, tail, head;
	int phase;
};

struct dev {
	int slot;
	struct pci_devinst *pi;
	uint64_t bar0, bar4;
	struct q q[4];
	uint16_t cid;
	const char *img;
};

static char tmpdir[64], img4[96], img5[96], img6[96];

static uint32_t reg32(struct dev *d, uint64_t off) { return (uint32_t)nh_mmio_read(d->bar0 + off, 4); }
static uint64_t reg64(struct dev *d, uint64_t off) { return nh_mmio_read(d->bar0 + off, 8); }
static void wreg32(struct dev *d, uint64_t off, uint32_t v) { nh_mmio_write(d->bar0 + off, 4, v); }
static void wreg64(struct dev *d, uint64_t off, uint64_t v) { nh_mmio_write(d->bar0 + off, 8, v); }
static void sq_doorbell(struct dev *d, int qid, uint32_t v) { wreg32(d, 0x1000 + 8 * (uint64_t)qid, v); }
static void cq_doorbell(struct dev *d, int qid, uint32_t v) { wreg32(d, 0x1000 + 8 * (uint64_t)qid + 4, v); }

static struct nvme_cmd mkcmd(uint8_t opc, uint32_t nsid)
{
	struct nvme_cmd c = { .cdw0 = opc, .nsid = nsid };
	return c;
}

/* Queue a command without ringing; returns its CID. */
static uint16_t put_cmd(struct dev *d, int qid, struct nvme_cmd c)
{
	struct q *q = &d->q[qid];
	uint16_t cid = ++d->cid;
	c.cdw0 = (c.cdw0 & 0xffff) | (uint32_t)cid << 16;
	memcpy(nh_ptr(q->sq + (uint64_t)q->tail * 64, 64), &c, 64);
	q->tail = (q->tail + 1) % q->sqsize;
	return cid;
}

static uint16_t submit(struct dev *d, int qid, struct nvme_cmd c)
{
	uint16_t cid = put_cmd(d, qid, c);
	sq_doorbell(d, qid, d->q[qid].tail);
	return cid;
}

/* Next completion on queue qid within 5 s (io_uring completions run in nh_poll). */
static bool poll_cqe(struct dev *d, int qid, struct nvme_cqe *e, bool ring, int ms)
{
	struct q *q = &d->q[qid];
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct nvme_cqe c;
		memcpy(&c, nh_ptr(q->cq + (uint64_t)q->head * 16, 16), 16);
		if ((c.status & 1) == q->phase) {
			*e = c;
			if (++q->head == q->cqsize) {
				q->head = 0;
				q->phase ^= 1;
			}
			if (ring)
				cq_doorbell(d, qid, q->head);
			return true;
		}
		if (nh_poll() == 0)
			usleep(200);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > ms)
			return false;
	}
}

static uint16_t cmd_sync(struct dev *d, int qid, struct nvme_cmd c, uint32_t *dw0)
{
	uint16_t cid = submit(d, qid, c);
	struct nvme_cqe e;
	if (!poll_cqe(d, qid, &e, true, 5000)) {
		printf("# no completion for CID %u on queue %d\n", cid, qid);
		return 0xffff;
	}
	if (e.cid != cid)
		printf("# completion for CID %u (dw0 0x%x status 0x%x), expected %u\n", e.cid, e.dw0, e.status, cid);
	if (dw0)
		*dw0 = e.dw0;
	return SCODE(e.status >> 1);
}

static uint16_t admin(struct dev *d, struct nvme_cmd c, uint32_t *dw0) { return cmd_sync(d, 0, c, dw0); }

static void dev_open(struct dev *d, int slot, const char *img)
{
	memset(d, 0, sizeof(*d));
	d->slot = slot;
	d->img = img;
	d->pi = nh_slot(slot);
	if (!d->pi) {
		printf("FAIL - no device in slot %d\n", slot);
		exit(1);
	}
	d->bar0 = d->pi->pi_bar[0].addr;
	d->bar4 = d->pi->pi_bar[4].addr;
}

/* MSI-X on, vector i -> data 0x30 + i, all unmasked. */
static void msix_on(struct dev *d)
{
	int cap = d->pi->pi_msix.capoff;
	for (int i = 0; i < d->pi->pi_msix.table_count; i++) {
		nh_mmio_write(d->bar4 + 16 * (uint64_t)i, 4, 0xfee00000);
		nh_mmio_write(d->bar4 + 16 * (uint64_t)i + 4, 4, 0);
		nh_mmio_write(d->bar4 + 16 * (uint64_t)i + 8, 4, 0x30 + (uint32_t)i);
		nh_mmio_write(d->bar4 + 16 * (uint64_t)i + 12, 4, 0);
	}
	nh_cfg_write(d->slot, cap + 2, 2, 0x8000);
}

static bool wait_reg(struct dev *d, uint64_t off, uint32_t mask, uint32_t val)
{
	for (int i = 0; i < 1000; i++) {
		if ((reg32(d, off) & mask) == val)
			return true;
		usleep(1000);
	}
	return false;
}

static void enable(struct dev *d, uint32_t asz, uint32_t csz, uint64_t asq, uint64_t acq)
{
	memset(d->q, 0, sizeof(d->q));
	wreg32(d, NVME_REG_CC, 0);
	wreg32(d, NVME_REG_AQA, (csz - 1) << 16 | (asz - 1));
	wreg64(d, NVME_REG_ASQ, asq);
	wreg64(d, NVME_REG_ACQ, acq);
	memset(nh_ptr(acq, csz * 16), 0, csz * 16);
	d->q[0] = (struct q){ .sq = asq, .cq = acq, .sqsize = asz, .cqsize = csz, .phase = 1 };
	wreg32(d, NVME_REG_CC, NVME_CC_EN | (6u << 16) | (4u << 20));
}

static uint16_t create_pair(struct dev *d, int qid, uint32_t sqsize, uint32_t cqsize, uint16_t iv, bool ien)
{
	uint64_t sq = IOQ_GPA(qid), cq = IOQ_GPA(qid) + 0x2000;
	memset(nh_ptr(cq, cqsize * 16), 0, cqsize * 16);
	struct nvme_cmd c = mkcmd(0x05, 0);
	c.prp1 = cq;
	c.cdw10 = (cqsize - 1) << 16 | (uint32_t)qid;
	c.cdw11 = (uint32_t)iv << 16 | (ien ? 2 : 0) | 1;
	uint16_t st = admin(d, c, NULL);
	if (st)
		return st;
	c = mkcmd(0x01, 0);
	c.prp1 = sq;
	c.cdw10 = (sqsize - 1) << 16 | (uint32_t)qid;
	c.cdw11 = (uint32_t)qid << 16 | 1;
	st = admin(d, c, NULL);
	if (!st)
		d->q[qid] = (struct q){ .sq = sq, .cq = cq, .sqsize = sqsize, .cqsize = cqsize, .phase = 1 };
	return st;
}

static uint16_t identify(struct dev *d, uint8_t cns, uint32_t nsid, uint8_t *out)
{
	struct nvme_cmd c = mkcmd(0x06, nsid);
	c.prp1 = ID_GPA;
	c.prp2 = ID_GPA + 0x1000;   /* unused: 4096 bytes from a page-aligned PRP1 */
	c.cdw10 = cns;
	memset(nh_ptr(ID_GPA, 4096), 0xee, 4096);
	uint16_t st = admin(d, c, NULL);
	memcpy(out, nh_ptr(ID_GPA, 4096), 4096);
	return st;
}

static uint16_t get_log(struct dev *d, uint8_t lid, uint32_t bytes, uint64_t lpo, bool rae, uint8_t *out)
{
	struct nvme_cmd c = mkcmd(0x02, NVME_NSID_ALL);
	c.prp1 = ID_GPA;
	c.prp2 = ID_GPA + 0x1000;
	uint32_t numd = bytes / 4 - 1;
	c.cdw10 = lid | (rae ? 1u << 15 : 0) | (numd & 0xffff) << 16;
	c.cdw11 = numd >> 16;
	c.cdw12 = (uint32_t)lpo;
	c.cdw13 = (uint32_t)(lpo >> 32);
	memset(nh_ptr(ID_GPA, 8192), 0xee, 8192);
	uint16_t st = admin(d, c, NULL);
	memcpy(out, nh_ptr(ID_GPA, bytes), bytes);
	return st;
}

static uint16_t features(struct dev *d, bool set, uint32_t cdw10, uint32_t cdw11, uint32_t *dw0)
{
	struct nvme_cmd c = mkcmd(set ? 0x09 : 0x0a, 0);
	c.cdw10 = cdw10;
	c.cdw11 = cdw11;
	return admin(d, c, dw0);
}

/* Build a PRP list for `len` bytes at data (page aligned after the first) into list pages at lgpa. */
static void prps_for(uint64_t data, uint64_t len, uint64_t lgpa, struct nvme_cmd *c)
{
	c->prp1 = data;
	uint64_t first = 4096 - (data & 4095);
	if (len <= first) {
		c->prp2 = 0;
		return;
	}
	uint64_t rest = len - first, p = data + first;
	if (rest <= 4096) {
		c->prp2 = p;
		return;
	}
	c->prp2 = lgpa;
	uint64_t *l = nh_ptr(lgpa, 4096);
	for (int i = 0; rest > 0; i++, p += 4096, rest -= rest < 4096 ? rest : 4096)
		l[i] = p;
}

static struct nvme_cmd rw(bool write, uint64_t slba, uint32_t nlb)
{
	struct nvme_cmd c = mkcmd(write ? 0x01 : 0x02, 1);
	c.cdw10 = (uint32_t)slba;
	c.cdw11 = (uint32_t)(slba >> 32);
	c.cdw12 = nlb - 1;
	return c;
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 9)) ^ seed);
}

static bool file_equals(const char *img, uint64_t off, const void *buf, size_t n)
{
	uint8_t *t = malloc(n);
	int fd = open(img, O_RDONLY);
	bool ok = fd >= 0 && pread(fd, t, n, (off_t)off) == (ssize_t)n && memcmp(t, buf, n) == 0;
	if (fd >= 0)
		close(fd);
	free(t);
	return ok;
}

static bool file_zero(const char *img, uint64_t off, size_t n)
{
	uint8_t *z = calloc(1, n);
	bool ok = file_equals(img, off, z, n);
	free(z);
	return ok;
}

static void make_image(const char *path, uint64_t size, uint32_t seed)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	uint8_t *b = malloc(size);
	fill(b, size, seed);
	if (fd < 0 || !b || write(fd, b, size) != (ssize_t)size) {
		printf("FAIL - cannot write %s\n", path);
		exit(1);
	}
	close(fd);
	free(b);
}

static bool msi_seen(uint32_t data, unsigned from)
{
	for (unsigned i = from; i < nh_msi_count(); i++)
		if (nh_msi_data(i) == data)
			return true;
	return false;
}

/* ---- the tests ---- */

static void t_pci_and_registers(struct dev *d)
{
	CHECK(nh_cfg_read(d->slot, 0, 2) == 0xfb5d && nh_cfg_read(d->slot, 2, 2) == 0x0a0a, "vendor/device fb5d:0a0a");
	CHECK(nh_cfg_read(d->slot, 0x09, 1) == 0x02 && nh_cfg_read(d->slot, 0x0a, 1) == 0x08 &&
	      nh_cfg_read(d->slot, 0x0b, 1) == 0x01, "class 01/08/02");
	CHECK((nh_cfg_read(d->slot, 0x10, 4) & 0x6) == 0x4, "BAR0 is 64-bit memory");
	int pm = 0, pcie = 0, msix = 0;
	for (int p = (int)nh_cfg_read(d->slot, 0x34, 1), n = 0; p && n < 16; p = (int)nh_cfg_read(d->slot, p + 1, 1), n++) {
		int id = (int)nh_cfg_read(d->slot, p, 1);
		if (id == 0x01) pm = p;
		if (id == 0x10) pcie = p;
		if (id == 0x11) msix = p;
	}
	CHECK(pm && pcie && msix, "capabilities: PM, PCI Express, MSI-X");
	CHECK(((nh_cfg_read(d->slot, pcie + 2, 2) >> 4) & 0xf) == 0x9, "PCIe: integrated root-complex endpoint");
	CHECK((nh_cfg_read(d->slot, msix + 2, 2) & 0x7ff) + 1 == 3 && (nh_cfg_read(d->slot, msix + 4, 4) & 7) == 4,
	      "MSI-X: 3 vectors (maxq 2 + admin) in BAR 4");
	nh_cfg_write(d->slot, pm + 4, 2, 3);
	CHECK((nh_cfg_read(d->slot, pm + 4, 2) & 3) == 3, "PMCSR: D3hot");
	nh_cfg_write(d->slot, pm + 4, 2, 0);
	uint64_t cap = reg64(d, NVME_REG_CAP);
	CHECK((cap & 0xffff) == 2047 && (cap >> 16 & 1) && ((cap >> 32) & 0xf) == 0 && (cap >> 37 & 1) &&
	      ((cap >> 48) & 0xff) == 0, "CAP: MQES 2047, CQR, DSTRD 0, NVM command set, 4 KiB pages (0x%llx)",
	      (unsigned long long)cap);
	CHECK(reg32(d, NVME_REG_CAP + 4) == (uint32_t)(cap >> 32), "CAP readable as two dwords");
	CHECK(reg32(d, NVME_REG_VS) == 0x00010400, "VS 1.4");
	CHECK(reg32(d, NVME_REG_CSTS) == 0, "CSTS: not ready before enable");

	/* A bad admin queue: controller fatal, then a reset clears it. */
	wreg32(d, NVME_REG_AQA, 0);
	wreg64(d, NVME_REG_ASQ, ASQ_GPA);
	wreg64(d, NVME_REG_ACQ, ACQ_GPA);
	wreg32(d, NVME_REG_CC, 1);
	CHECK(reg32(d, NVME_REG_CSTS) == NVME_CSTS_CFS, "1-entry admin queue: CSTS.CFS");
	wreg32(d, NVME_REG_CC, 0);
	wreg32(d, NVME_REG_AQA, 31 << 16 | 31);
	wreg64(d, NVME_REG_ASQ, 0x80000000);   /* not RAM */
	wreg32(d, NVME_REG_CC, 1);
	CHECK(reg32(d, NVME_REG_CSTS) == NVME_CSTS_CFS, "admin queue outside RAM: CSTS.CFS");
	wreg32(d, NVME_REG_CC, 0);
	CHECK(reg32(d, NVME_REG_CSTS) == 0, "reset clears CSTS");
	CHECK(reg64(d, NVME_REG_ASQ) == 0x80000000 && reg32(d, NVME_REG_AQA) == (31u << 16 | 31), "AQA/ASQ read back");

	msix_on(d);
	enable(d, 32, 32, ASQ_GPA, ACQ_GPA);
	CHECK(wait_reg(d, NVME_REG_CSTS, 1, 1), "enabled: CSTS.RDY");
}

static void t_identify(struct dev *d, struct dev *d5, struct dev *d6)
{
	uint8_t b[4096], b5[4096];
	char sn[21];
	unsigned m0 = nh_msi_count();
	CHECK(identify(d, 1, 0, b) == S_OK, "Identify controller");
	CHECK(msi_seen(0x30, m0), "admin completion raised MSI-X vector 0");
	memcpy(sn, b + 4, 20);
	sn[20] = 0;
	CHECK(!strncmp(sn, "HYVE-", 5) && strstr(sn, "-040") && sn[19] == ' ', "default serial from the VM name and slot: '%s'", sn);
	CHECK(!memcmp(b + 24, "hyve NVMe ", 10) && b[77] == NVME_MDTS && b[512] == 0x66 && b[513] == 0x44,
	      "model, MDTS, SQES/CQES");
	uint32_t nn, ver;
	memcpy(&nn, b + 516, 4);
	memcpy(&ver, b + 80, 4);
	CHECK(nn == 1 && ver == 0x00010400 && b[111] == 1, "NN 1, VER 1.4, I/O controller");
	uint16_t oncs;
	memcpy(&oncs, b + 520, 2);
	CHECK(oncs & (1u << 3), "ONCS: Write Zeroes");
	printf("# slot 4 image %s deallocation: ONCS 0x%x\n", (oncs & 4) ? "supports" : "does not support", oncs);
	CHECK(b[525] == 0x07, "VWC present, broadcast flush");
	CHECK(!strncmp((char *)b + 768, "nqn.2024-01.org.hyve:nvme:", 26), "SUBNQN %s", (char *)b + 768);
	CHECK(b[259] == NVME_AERL && b[258] == NVME_ACL && b[262] == NVME_ELPE, "AERL, ACL, ELPE");

	CHECK(identify(d, 0, 1, b) == S_OK, "Identify namespace 1");
	uint64_t nsze;
	memcpy(&nsze, b, 8);
	CHECK(nsze == (8u << 20) / 512 && ((b[128 + 2]) == 9) && b[26] == 0, "NSZE %llu, LBA format 512",
	      (unsigned long long)nsze);
	CHECK(b[120] == 0x02 && b[121] == 0x68 && b[122] == 0x79, "default EUI64 02:68:79:...");
	uint8_t eui4[8], nguid4[16];
	memcpy(eui4, b + 120, 8);
	memcpy(nguid4, b + 104, 16);
	CHECK(identify(d, 0, 2, b) == S_INVALID_NS, "Identify namespace 2: Invalid Namespace");
	CHECK(identify(d, 0, NVME_NSID_ALL, b) == S_INVALID_NS, "Identify namespace FFFFFFFFh: Invalid Namespace");
	CHECK(identify(d, 2, 0, b) == S_OK && b[0] == 1 && b[1] == 0 && b[4] == 0, "active namespace list: [1]");
	CHECK(identify(d, 2, 1, b) == S_OK && b[0] == 0, "active namespaces above 1: none");
	CHECK(identify(d, 3, 1, b) == S_OK && b[0] == 1 && b[1] == 8 && !memcmp(b + 4, eui4, 8) && b[12] == 2 &&
	      b[13] == 16 && !memcmp(b + 16, nguid4, 16) && b[32] == 0, "descriptors: EUI64, NGUID, no UUID");
	CHECK(identify(d, 0x07, 0, b) == S_INVALID_FIELD, "Identify CNS 07h: Invalid Field");
	CHECK(identify(d, 0x06, 0, b) == S_OK, "Identify CNS 06h CSI NVM (zeroes)");

	/* Slot 5: ser=, eui64=, ro, dsm=disable. */
	CHECK(identify(d5, 1, 0, b5) == S_OK && !memcmp(b5 + 4, "MYSERIAL            ", 20), "ser= is the serial");
	memcpy(&oncs, b5 + 520, 2);
	CHECK(!(oncs & 4), "dsm=disable: no Dataset Management in ONCS");
	CHECK(identify(d5, 0, 1, b5) == S_OK && !memcmp(b5 + 120, "\x01\x23\x45\x67\x89\xab\xcd\xef", 8) && b5[99] == 1,
	      "eui64=0x0123456789abcdef; NSATTR write protected");
	CHECK(memcmp(b5 + 104, nguid4, 16) != 0, "NGUIDs differ between slots");
	uint8_t b6[4096];
	CHECK(identify(d6, 0, 1, b6) == S_OK && b6[128 + 2] == 12, "sectsz=4096: LBADS 12");
	CHECK(memcmp(b6 + 120, eui4, 8) != 0, "default EUI64s differ between slots");
}

static void t_features(struct dev *d)
{
	uint32_t v = 0;
	CHECK(features(d, true, 0x07, 0x00070007, &v) == S_OK && v == 0x00010001, "Number of Queues: 2 allocated");
	CHECK(features(d, false, 0x07, 0, &v) == S_OK && v == 0x00010001, "Get Number of Queues");
	CHECK(features(d, true, 0x07, 0xffff, &v) == S_INVALID_FIELD, "Number of Queues 65536: Invalid Field");
	CHECK(features(d, false, 0x06, 0, &v) == S_OK && v == 1, "volatile write cache on");
	CHECK(features(d, true, 0x06, 0, NULL) == S_OK && features(d, false, 0x06, 0, &v) == S_OK && v == 0,
	      "write cache off");
	features(d, true, 0x06, 1, NULL);
	CHECK(features(d, true, 0x01, 0x01020304, NULL) == S_OK && features(d, false, 0x01, 0, &v) == S_OK &&
	      v == 0x01020304, "arbitration kept");
	CHECK(features(d, true, 0x02, 1, NULL) == S_INVALID_FIELD, "power state 1: Invalid Field");
	CHECK(features(d, true, 0x02, 0, NULL) == S_OK, "power state 0");
	CHECK(features(d, false, 0x04, 0, &v) == S_OK && v == NVME_WCTEMP, "over-temperature threshold default %u", v);
	CHECK(features(d, false, 0x04, 1u << 20, &v) == S_OK && v == 0, "under-temperature threshold 0");
	CHECK(features(d, true, 0x04, 3u << 16 | 300, NULL) == S_INVALID_FIELD, "temperature sensor 3: Invalid Field");
	CHECK(features(d, true, 0x08, 0x0a05, NULL) == S_OK && features(d, false, 0x08, 0, &v) == S_OK && v == 0x0a05,
	      "interrupt coalescing kept");
	CHECK(features(d, true, 0x09, 1 | 1u << 16, NULL) == S_OK && features(d, false, 0x09, 1, &v) == S_OK &&
	      v == (1 | 1u << 16), "interrupt vector configuration");
	CHECK(features(d, true, 0x09, 3, NULL) == S_INVALID_FIELD, "interrupt vector 3: Invalid Field");
	CHECK(features(d, true, 0x0b, 0x2, NULL) == S_OK && features(d, false, 0x0b, 0, &v) == S_OK && v == 2,
	      "async event configuration: temperature");
	CHECK(features(d, false, 0x0b | 3u << 8, 0, &v) == S_OK && v == 4, "SEL=3: changeable");
	CHECK(features(d, true, 0x0b | 1u << 31, 0x2, NULL) == S_NOT_SAVEABLE, "SV=1: not saveable");
	CHECK(features(d, true, 0x80, 0, NULL) == S_INVALID_FIELD, "unknown feature: Invalid Field");
	CHECK(admin(d, mkcmd(0x18, 0), NULL) == S_OK, "Keep Alive");
	struct nvme_cmd ab = mkcmd(0x08, 0);
	ab.cdw10 = 1 | 77u << 16;
	CHECK(admin(d, ab, &v) == S_OK && (v & 1), "Abort: not aborted");
	CHECK(admin(d, mkcmd(0x80, 0), NULL) == S_INVALID_OPCODE, "Format NVM: Invalid Opcode");
	CHECK(admin(d, mkcmd(0x7c, 0), NULL) == S_INVALID_OPCODE, "Doorbell Buffer Config: Invalid Opcode");
	struct nvme_cmd fu = mkcmd(0x06, 0);
	fu.cdw0 |= 1u << 8;
	CHECK(admin(d, fu, NULL) == S_INVALID_FIELD, "fused admin command: Invalid Field");
}

static uint16_t create_cq_raw(struct dev *d, uint16_t qid, uint32_t size, uint64_t prp1, uint32_t flags, uint16_t iv)
{
	struct nvme_cmd c = mkcmd(0x05, 0);
	c.prp1 = prp1;
	c.cdw10 = (size - 1) << 16 | qid;
	c.cdw11 = (uint32_t)iv << 16 | flags;
	return admin(d, c, NULL);
}

static uint16_t create_sq_raw(struct dev *d, uint16_t qid, uint32_t size, uint64_t prp1, uint32_t pc, uint16_t cqid)
{
	struct nvme_cmd c = mkcmd(0x01, 0);
	c.prp1 = prp1;
	c.cdw10 = (size - 1) << 16 | qid;
	c.cdw11 = (uint32_t)cqid << 16 | pc;
	return admin(d, c, NULL);
}

static uint16_t delete_q(struct dev *d, bool sq, uint16_t qid)
{
	struct nvme_cmd c = mkcmd(sq ? 0x00 : 0x04, 0);
	c.cdw10 = qid;
	return admin(d, c, NULL);
}

static void t_queues(struct dev *d)
{
	CHECK(create_cq_raw(d, 0, 16, IOQ_GPA(1) + 0x2000, 3, 1) == S_INVALID_QID, "create CQ 0: Invalid QID");
	CHECK(create_cq_raw(d, 3, 16, IOQ_GPA(1) + 0x2000, 3, 1) == S_INVALID_QID, "create CQ 3 (maxq 2): Invalid QID");
	CHECK(create_cq_raw(d, 1, 1, IOQ_GPA(1) + 0x2000, 3, 1) == S_INVALID_QSIZE, "CQ of 1 entry: Invalid Queue Size");
	CHECK(create_cq_raw(d, 1, 2049, IOQ_GPA(1) + 0x2000, 3, 1) == S_INVALID_QSIZE, "CQ above MQES: Invalid Queue Size");
	CHECK(create_cq_raw(d, 1, 16, IOQ_GPA(1) + 0x2000, 2, 1) == S_INVALID_FIELD, "CQ without PC: Invalid Field");
	CHECK(create_cq_raw(d, 1, 16, IOQ_GPA(1) + 0x2000, 3, 3) == S_INVALID_IV, "CQ vector 3: Invalid Interrupt Vector");
	CHECK(create_cq_raw(d, 1, 16, 0x80000000, 3, 1) == S_INVALID_FIELD, "CQ outside RAM: Invalid Field");
	CHECK(create_cq_raw(d, 1, 16, NH_RAM1_BASE + NH_RAM1_SIZE - 0x100, 3, 1) == S_PRP_OFFSET,
	      "CQ base not page aligned: PRP Offset Invalid");
	CHECK(create_cq_raw(d, 1, 512, NH_RAM1_BASE + NH_RAM1_SIZE - 0x1000, 3, 1) == S_INVALID_FIELD,
	      "CQ running past the end of RAM: Invalid Field");
	CHECK(create_sq_raw(d, 1, 16, IOQ_GPA(1), 1, 1) == S_CQ_INVALID, "SQ on a missing CQ: Completion Queue Invalid");
	CHECK(create_sq_raw(d, 1, 16, IOQ_GPA(1), 1, 0) == S_CQ_INVALID, "SQ on the admin CQ: Completion Queue Invalid");
	CHECK(create_pair(d, 1, 64, 64, 1, true) == S_OK, "create I/O queue pair 1 (vector 1)");
	CHECK(create_pair(d, 2, 64, 64, 2, true) == S_OK, "create I/O queue pair 2 (vector 2)");
	CHECK(create_cq_raw(d, 1, 16, IOQ_GPA(1) + 0x2000, 3, 1) == S_INVALID_QID, "CQ 1 again: Invalid QID");
	CHECK(create_sq_raw(d, 2, 16, IOQ_GPA(2), 1, 2) == S_INVALID_QID, "SQ 2 again: Invalid QID");
	CHECK(delete_q(d, false, 1) == S_INVALID_QDELETE, "delete CQ 1 with its SQ: Invalid Queue Deletion");
	CHECK(delete_q(d, true, 0) == S_INVALID_QID && delete_q(d, false, 0) == S_INVALID_QID, "delete queue 0: Invalid QID");
	CHECK(delete_q(d, true, 3) == S_INVALID_QID, "delete SQ 3: Invalid QID");
	uint32_t v;
	CHECK(features(d, true, 0x07, 0x00010001, &v) == S_SEQ_ERROR, "Number of Queues after creation: Command Sequence Error");
}

static void t_io(struct dev *d)
{
	uint8_t *data = nh_ptr(DATA_GPA, 2u << 20), *back = nh_ptr(DATA2_GPA, 1u << 20);
	unsigned m0 = nh_msi_count();

	/* One page, PRP1 only, on queue 1. */
	fill(data, 4096, 1);
	struct nvme_cmd c = rw(true, 8, 8);
	c.prp1 = DATA_GPA;
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && file_equals(d->img, 8 * 512, data, 4096), "write 4 KiB (PRP1) reaches the image");
	CHECK(msi_seen(0x31, m0), "I/O queue 1 completion raised vector 1");

	/* Two pages: PRP1 + PRP2, on queue 2. */
	fill(data, 8192, 2);
	c = rw(true, 100, 16);
	prps_for(DATA_GPA, 8192, LIST_GPA, &c);
	m0 = nh_msi_count();
	CHECK(cmd_sync(d, 2, c, NULL) == S_OK && file_equals(d->img, 100 * 512, data, 8192), "write 8 KiB (PRP1+PRP2)");
	CHECK(msi_seen(0x32, m0) && !msi_seen(0x31, m0), "I/O queue 2 completion raised vector 2 only");

	/* Unaligned PRP1 (offset 512): 3 pages through a PRP list; read back with another layout. */
	fill(data + 512, 8192, 3);
	c = rw(true, 1000, 16);
	prps_for(DATA_GPA + 512, 8192, LIST_GPA, &c);
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && file_equals(d->img, 1000 * 512, data + 512, 8192),
	      "write 8 KiB from offset 512 (PRP list)");
	memset(back, 0, 8192);
	c = rw(false, 1000, 16);
	prps_for(DATA2_GPA + 1024, 8192, LIST_GPA + 4096, &c);
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && !memcmp(back + 1024, data + 512, 8192), "read it back at offset 1024");

	/* The largest transfer (MDTS, 512 KiB): PRP list of 127 entries; data checked against the host file. */
	fill(data, NVME_MAX_XFER, 4);
	c = rw(true, 4096, NVME_MAX_XFER / 512);
	prps_for(DATA_GPA, NVME_MAX_XFER, LIST_GPA, &c);
	CHECK(cmd_sync(d, 2, c, NULL) == S_OK && file_equals(d->img, 4096 * 512, data, NVME_MAX_XFER), "write 512 KiB (MDTS)");
	c = rw(false, 4096, NVME_MAX_XFER / 512);
	memset(back, 0, NVME_MAX_XFER);
	prps_for(DATA2_GPA, NVME_MAX_XFER, LIST_GPA, &c);
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && !memcmp(back, data, NVME_MAX_XFER), "read 512 KiB back");

	/* A chained PRP list: the list starts 16 bytes before a page end (one data entry, then the chain). */
	c = rw(false, 0, 64);   /* 32 KiB: PRP1 + 7 list entries */
	c.prp1 = DATA2_GPA;
	uint64_t *l1 = nh_ptr(LIST_GPA + 4096 - 16, 16), *l2 = nh_ptr(LIST_GPA + 8192, 4096);
	l1[0] = DATA2_GPA + 4096;
	l1[1] = LIST_GPA + 8192;
	for (int i = 0; i < 6; i++)
		l2[i] = DATA2_GPA + 8192 + 4096 * (uint64_t)i;
	c.prp2 = LIST_GPA + 4096 - 16;
	memset(back, 0, 32768);
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && file_equals(d->img, 0, back, 32768), "read 32 KiB through a chained PRP list");

	/* A buffer in RAM above 4 GiB. */
	uint8_t *hi = nh_ptr(NH_RAM1_BASE + 0x4000, 8192);
	memset(hi, 0, 8192);
	c = rw(false, 100, 16);
	prps_for(NH_RAM1_BASE + 0x4000, 8192, LIST_GPA, &c);
	CHECK(cmd_sync(d, 2, c, NULL) == S_OK && file_equals(d->img, 100 * 512, hi, 8192), "read into RAM above 4 GiB");

	/* Flush (NSID 1 and all), write with FUA. */
	CHECK(cmd_sync(d, 1, mkcmd(0x00, 1), NULL) == S_OK, "Flush");
	CHECK(cmd_sync(d, 1, mkcmd(0x00, NVME_NSID_ALL), NULL) == S_OK, "Flush of every namespace");
	fill(data, 512, 5);
	c = rw(true, 7, 1);
	c.cdw12 |= 1u << 30;
	c.prp1 = DATA_GPA;
	CHECK(cmd_sync(d, 2, c, NULL) == S_OK && file_equals(d->img, 7 * 512, data, 512), "write with FUA");
	features(d, true, 0x06, 0, NULL);
	fill(data, 512, 6);
	c = rw(true, 6, 1);
	c.prp1 = DATA_GPA;
	CHECK(cmd_sync(d, 2, c, NULL) == S_OK && file_equals(d->img, 6 * 512, data, 512), "write with the write cache off");
	features(d, true, 0x06, 1, NULL);

	/* Write Zeroes. */
	c = mkcmd(0x08, 1);
	c.cdw10 = 200;
	c.cdw12 = 31;
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && file_zero(d->img, 200 * 512, 32 * 512), "Write Zeroes 16 KiB");
	c.cdw10 = 300;
	c.cdw12 = 7 | 1u << 25;
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && file_zero(d->img, 300 * 512, 8 * 512), "Write Zeroes with DEAC");

	/* Dataset Management: deallocate two ranges (8 KiB aligned), one empty. */
	uint8_t id[4096];
	identify(d, 1, 0, id);
	uint16_t oncs;
	memcpy(&oncs, id + 520, 2);
	uint8_t *r = nh_ptr(ID_GPA + 0x2000, 48);
	memset(r, 0, 48);
	uint32_t n1 = 16, n2 = 0, n3 = 32;
	uint64_t s1 = 2048, s2 = 5, s3 = 3072;
	memcpy(r + 4, &n1, 4); memcpy(r + 8, &s1, 8);
	memcpy(r + 20, &n2, 4); memcpy(r + 24, &s2, 8);
	memcpy(r + 36, &n3, 4); memcpy(r + 40, &s3, 8);
	c = mkcmd(0x09, 1);
	c.prp1 = ID_GPA + 0x2000;
	c.cdw10 = 2;
	c.cdw11 = 4;
	if (oncs & 4)
		CHECK(cmd_sync(d, 2, c, NULL) == S_OK && file_zero(d->img, 2048 * 512, 16 * 512) &&
		      file_zero(d->img, 3072 * 512, 32 * 512), "DSM deallocate: ranges read back as zeroes");
	else
		CHECK(cmd_sync(d, 2, c, NULL) == S_INVALID_OPCODE, "DSM without host deallocation (dsm=auto): Invalid Opcode");
	c.cdw11 = 3;   /* attributes only */
	CHECK(cmd_sync(d, 2, c, NULL) == ((oncs & 4) ? S_OK : S_INVALID_OPCODE), "DSM hints only");
	memcpy(r + 8, &(uint64_t){ (8u << 20) / 512 - 8 }, 8);
	c.cdw11 = 4;
	CHECK(cmd_sync(d, 2, c, NULL) == ((oncs & 4) ? S_LBA_RANGE : S_INVALID_OPCODE), "DSM range past the end: LBA Out of Range");
}

static void t_io_errors(struct dev *d)
{
	uint64_t nsze = (8u << 20) / 512;
	struct nvme_cmd c = rw(false, nsze - 1, 2);
	c.prp1 = DATA_GPA;
	CHECK(cmd_sync(d, 1, c, NULL) == S_LBA_RANGE, "read across the end: LBA Out of Range");
	c = rw(false, nsze, 1);
	c.prp1 = DATA_GPA;
	CHECK(cmd_sync(d, 1, c, NULL) == S_LBA_RANGE, "read at NSZE: LBA Out of Range");
	c = rw(true, ~0ull, 1);
	c.prp1 = DATA_GPA;
	CHECK(cmd_sync(d, 1, c, NULL) == S_LBA_RANGE, "write at LBA 2^64-1: LBA Out of Range");
	c = mkcmd(0x08, 1);
	c.cdw10 = (uint32_t)nsze - 4;
	c.cdw12 = 7;
	CHECK(cmd_sync(d, 1, c, NULL) == S_LBA_RANGE, "Write Zeroes past the end: LBA Out of Range");
	c = rw(false, 0, NVME_MAX_XFER / 512 + 1);
	prps_for(DATA_GPA, NVME_MAX_XFER + 512, LIST_GPA, &c);
	CHECK(cmd_sync(d, 1, c, NULL) == S_INVALID_FIELD, "transfer over MDTS: Invalid Field");
	c = rw(false, 0, 1);
	c.nsid = 2;
	c.prp1 = DATA_GPA;
	CHECK(cmd_sync(d, 1, c, NULL) == S_INVALID_NS, "namespace 2: Invalid Namespace");
	c.nsid = 0;
	CHECK(cmd_sync(d, 1, c, NULL) == S_INVALID_NS, "namespace 0: Invalid Namespace");
	c = rw(false, 0, 1);
	c.prp1 = 0x80000000;
	CHECK(cmd_sync(d, 1, c, NULL) == S_DATA_XFER, "PRP1 outside RAM: Data Transfer Error");
	c = rw(false, 0, 2);
	c.prp1 = NH_RAM0_SIZE - 256;
	c.prp2 = NH_RAM0_SIZE;
	CHECK(cmd_sync(d, 1, c, NULL) == S_DATA_XFER, "PRP2 right after the end of RAM: Data Transfer Error");
	c.prp1 = DATA_GPA + 2;
	CHECK(cmd_sync(d, 1, c, NULL) == S_PRP_OFFSET, "PRP1 not dword aligned: PRP Offset Invalid");
	c = rw(false, 0, 16);
	c.prp1 = DATA_GPA;
	c.prp2 = DATA_GPA + 4096 + 8;
	CHECK(cmd_sync(d, 1, c, NULL) == S_PRP_OFFSET, "PRP2 with an offset: PRP Offset Invalid");
	c.prp2 = 0xc0000000;
	CHECK(cmd_sync(d, 1, c, NULL) == S_DATA_XFER, "PRP2 outside RAM: Data Transfer Error");
	c = rw(false, 0, 32);
	c.prp1 = DATA_GPA;
	c.prp2 = 0x90000000;
	CHECK(cmd_sync(d, 1, c, NULL) == S_DATA_XFER, "PRP list outside RAM: Data Transfer Error");
	uint64_t *l = nh_ptr(LIST_GPA, 32);
	l[0] = DATA_GPA + 4096;
	l[1] = 0x90000000;
	l[2] = DATA_GPA + 3 * 4096;
	c.prp2 = LIST_GPA;
	CHECK(cmd_sync(d, 1, c, NULL) == S_DATA_XFER, "PRP list entry outside RAM: Data Transfer Error");
	l[1] = DATA_GPA + 2 * 4096 + 512;
	CHECK(cmd_sync(d, 1, c, NULL) == S_PRP_OFFSET, "PRP list entry with an offset: PRP Offset Invalid");
	c.prp2 = LIST_GPA + 4;
	CHECK(cmd_sync(d, 1, c, NULL) == S_PRP_OFFSET, "PRP list pointer not qword aligned: PRP Offset Invalid");
	CHECK(cmd_sync(d, 1, mkcmd(0x05, 1), NULL) == S_INVALID_OPCODE, "Compare: Invalid Opcode");
	CHECK(cmd_sync(d, 1, mkcmd(0x7f, 1), NULL) == S_INVALID_OPCODE, "opcode 7Fh: Invalid Opcode");
	c = rw(false, 0, 1);
	c.prp1 = DATA_GPA;
	c.cdw0 |= 1u << 14;
	CHECK(cmd_sync(d, 1, c, NULL) == S_INVALID_FIELD, "SGL data pointer: Invalid Field");
	c.cdw0 = (c.cdw0 & ~(3u << 14)) | 1u << 8;
	CHECK(cmd_sync(d, 1, c, NULL) == S_INVALID_FIELD, "fused read: Invalid Field");
	CHECK(cmd_sync(d, 1, mkcmd(0x00, 5), NULL) == S_INVALID_NS, "Flush of namespace 5: Invalid Namespace");
}

static uint16_t pending_aer;   /* left outstanding by t_logs_and_events */

static void t_logs_and_events(struct dev *d)
{
	uint8_t b[4096];
	uint64_t u;
	CHECK(get_log(d, 2, 512, 0, false, b) == S_OK, "SMART / health log");
	memcpy(&u, b + 32, 8);
	uint64_t dur = u;
	memcpy(&u, b + 48, 8);
	uint64_t duw = u;
	uint64_t rc, wc, poh, cycles, unsafe;
	memcpy(&rc, b + 64, 8);
	memcpy(&wc, b + 80, 8);
	memcpy(&cycles, b + 112, 8);
	memcpy(&poh, b + 128, 8);
	memcpy(&unsafe, b + 144, 8);
	/* Reads so far: 4 (560 KiB: 2 data units), writes 6 (532 KiB) + 2 Write Zeroes; failed commands do not count. */
	CHECK(dur == 2 && duw == 2 && rc == 4 && wc == 8, "SMART counters: %llu/%llu data units read/written, %llu reads, %llu writes",
	      (unsigned long long)dur, (unsigned long long)duw, (unsigned long long)rc, (unsigned long long)wc);
	CHECK(cycles == 1 && poh == 0 && unsafe == 0 && b[3] == 100, "power cycles 1, power-on hours 0, unsafe shutdowns 0");
	uint16_t t;
	memcpy(&t, b + 1, 2);
	CHECK(t == NVME_TEMP_K && b[0] == 0, "composite temperature %u K, no warning", t);
	CHECK(get_log(d, 2, 8, 32, false, b) == S_OK && !memcmp(b, &dur, 8), "SMART log at offset 32 (LPO)");
	CHECK(get_log(d, 2, 4096, 0, false, b) == S_OK && b[600] == 0 && b[4095] == 0, "reading past the log: zeroes");
	CHECK(get_log(d, 1, 256, 0, false, b) == S_OK && b[0] == 0, "error information log");
	CHECK(get_log(d, 3, 512, 0, false, b) == S_OK && b[0] == 1 && !memcmp(b + 8, "1.0     ", 8), "firmware slot log");
	CHECK(get_log(d, 0x40, 512, 0, false, b) == S_INVALID_LOG, "log page 40h: Invalid Log Page");
	CHECK(get_log(d, 2, 512, 512, false, b) == S_INVALID_FIELD, "LPO at the end: Invalid Field");
	CHECK(get_log(d, 2, 512, 2, false, b) == S_INVALID_FIELD, "LPO not dword aligned: Invalid Field");

	/* AERs wait; a fifth is over the limit. */
	uint16_t aer[4];
	for (int i = 0; i < 4; i++)
		aer[i] = submit(d, 0, mkcmd(0x0c, 0));
	struct nvme_cqe e;
	CHECK(!poll_cqe(d, 0, &e, true, 50), "4 AERs stay pending");
	uint16_t lim = submit(d, 0, mkcmd(0x0c, 0));
	CHECK(poll_cqe(d, 0, &e, true, 1000) && e.cid == lim && SCODE(e.status >> 1) == S_AER_LIMIT,
	      "5th AER: Asynchronous Event Request Limit Exceeded");
	/* A doorbell for a queue that does not exist: an error event completes the oldest AER. */
	sq_doorbell(d, 2, 200);   /* beyond SQ 2's 64 entries */
	CHECK(poll_cqe(d, 0, &e, true, 1000) && e.cid == aer[0] && (e.dw0 & 0xff) == 0 && ((e.dw0 >> 8) & 0xff) == 1 &&
	      ((e.dw0 >> 16) & 0xff) == 1, "invalid doorbell value: error event (dw0 0x%x)", e.dw0);
	/* Temperature threshold below the temperature: SMART event (AEC has it enabled); the
	 * AER may complete before the Set Features that caused it. */
	struct nvme_cmd sf = mkcmd(0x09, 0);
	sf.cdw10 = 0x04;
	sf.cdw11 = 300;
	uint16_t sfcid = submit(d, 0, sf);
	struct nvme_cqe e1, e2;
	CHECK(poll_cqe(d, 0, &e1, true, 1000) && poll_cqe(d, 0, &e2, true, 1000), "threshold 300 K: two completions");
	if (e1.cid == sfcid) {
		struct nvme_cqe t = e1;
		e1 = e2;
		e2 = t;
	}
	CHECK(e2.cid == sfcid && SCODE(e2.status >> 1) == 0, "Set Features temperature threshold");
	CHECK(e1.cid == aer[1] && e1.dw0 == (1u | 1u << 8 | 2u << 16), "temperature event (dw0 0x%x)", e1.dw0);
	CHECK(get_log(d, 2, 512, 0, true, b) == S_OK && b[0] == 0x02, "SMART critical warning: temperature");
	features(d, true, 0x04, NVME_WCTEMP, NULL);
	features(d, true, 0x04, 300, NULL);   /* again: masked until the log is read without RAE */
	CHECK(!poll_cqe(d, 0, &e, true, 50), "second temperature event waits (SMART events masked)");
	features(d, true, 0x04, NVME_WCTEMP, NULL);
	/* Reading the log without RAE delivers it to the next AER. */
	struct nvme_cmd gl = mkcmd(0x02, NVME_NSID_ALL);
	gl.prp1 = ID_GPA;
	gl.cdw10 = 2 | 127u << 16;
	uint16_t glcid = submit(d, 0, gl);
	CHECK(poll_cqe(d, 0, &e1, true, 1000) && poll_cqe(d, 0, &e2, true, 1000) &&
	      ((e1.cid == glcid && e2.cid == aer[2]) || (e2.cid == glcid && e1.cid == aer[2])),
	      "log read without RAE: the masked event completes the next AER");
	pending_aer = aer[3];
}

/* Slot 5: read-only, dsm=disable. */
static void t_readonly(struct dev *d)
{
	enable(d, 16, 16, 0x200000, 0x201000);
	CHECK(wait_reg(d, NVME_REG_CSTS, 1, 1), "slot 5 enabled (INTx)");
	d->q[1] = (struct q){ 0 };
	CHECK(create_pair(d, 1, 16, 16, 0, true) == S_OK, "slot 5: queue pair 1");
	d->q[1].sq = IOQ_GPA(1);
	uint8_t *data = nh_ptr(0x210000, 4096);
	struct nvme_cmd c = rw(true, 0, 1);
	c.prp1 = 0x210000;
	fill(data, 512, 9);
	CHECK(cmd_sync(d, 1, c, NULL) == S_WRITE_PROTECTED && !file_equals(d->img, 0, data, 512),
	      "write to a read-only namespace: Namespace is Write Protected");
	c = mkcmd(0x08, 1);
	CHECK(cmd_sync(d, 1, c, NULL) == S_WRITE_PROTECTED, "Write Zeroes to it: Namespace is Write Protected");
	c = mkcmd(0x09, 1);
	c.prp1 = 0x210000;
	c.cdw11 = 4;
	CHECK(cmd_sync(d, 1, c, NULL) == S_INVALID_OPCODE, "DSM with dsm=disable: Invalid Opcode");
	c = rw(false, 1, 1);
	c.prp1 = 0x210000;
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && file_equals(d->img, 512, data, 512), "read works");
}

/* Slot 6: INTx, 4096-byte sectors, one I/O slot, CQ back-pressure, deferred SQ deletion. */
static void t_small(struct dev *d)
{
	int gsi = d->pi->pi_lintr_gsi;
	enable(d, 4, 4, 0x220000, 0x221000);
	CHECK(wait_reg(d, NVME_REG_CSTS, 1, 1), "slot 6 enabled");
	uint32_t v;
	CHECK(features(d, true, 0x07, 0, &v) == S_OK && v == 0, "maxq=1: one queue pair");
	CHECK(create_cq_raw(d, 1, 9, IOQ_GPA(1) + 0x2000, 3, 0) == S_INVALID_QSIZE, "qsz=8: 9 entries refused");
	/* CQ of 2 entries (1 usable), SQ of 8. */
	memset(nh_ptr(IOQ_GPA(1) + 0x2000, 64), 0, 64);
	CHECK(create_cq_raw(d, 1, 2, IOQ_GPA(1) + 0x2000, 3, 0) == S_OK &&
	      create_sq_raw(d, 1, 8, IOQ_GPA(1), 1, 1) == S_OK, "queue pair: CQ of 2, SQ of 8");
	d->q[1] = (struct q){ .sq = IOQ_GPA(1), .cq = IOQ_GPA(1) + 0x2000, .sqsize = 8, .cqsize = 2, .phase = 1 };
	uint8_t *data = nh_ptr(0x230000, 4 * 4096);
	for (int i = 0; i < 3; i++) {
		struct nvme_cmd c = rw(false, (uint64_t)i, 1);
		c.prp1 = 0x230000 + 4096 * (uint64_t)i;
		put_cmd(d, 1, c);
	}
	sq_doorbell(d, 1, d->q[1].tail);
	struct nvme_cqe e;
	CHECK(poll_cqe(d, 1, &e, false, 2000) && SCODE(e.status >> 1) == S_OK, "first of 3 reads completes");
	CHECK(nh_irq_level(gsi) == 1, "INTx asserted while the CQ holds an entry");
	CHECK(!poll_cqe(d, 1, &e, false, 100), "the CQ is full: the next read waits");
	cq_doorbell(d, 1, d->q[1].head);
	CHECK(poll_cqe(d, 1, &e, false, 2000), "CQ head doorbell: the second completes");
	cq_doorbell(d, 1, d->q[1].head);
	CHECK(poll_cqe(d, 1, &e, true, 2000), "and the third");
	CHECK(nh_irq_level(gsi) == 0, "INTx deasserted once the CQ is empty");
	CHECK(file_equals(d->img, 0, data, 3 * 4096), "the reads' data (4096-byte sectors)");
	/* A head beyond what was posted is refused. */
	cq_doorbell(d, 1, (d->q[1].head + 1) % 2);
	/* ioslots=1: five commands at once all complete. */
	CHECK(delete_q(d, true, 1) == S_OK && delete_q(d, false, 1) == S_OK, "delete queue pair 1");
	memset(nh_ptr(IOQ_GPA(1) + 0x2000, 128), 0, 128);
	CHECK(create_cq_raw(d, 1, 8, IOQ_GPA(1) + 0x2000, 3, 0) == S_OK && create_sq_raw(d, 1, 8, IOQ_GPA(1), 1, 1) == S_OK,
	      "queue pair of 8");
	d->q[1] = (struct q){ .sq = IOQ_GPA(1), .cq = IOQ_GPA(1) + 0x2000, .sqsize = 8, .cqsize = 8, .phase = 1 };
	for (int i = 0; i < 5; i++) {
		struct nvme_cmd c = rw(i % 2 == 0, (uint64_t)i, 1);
		c.prp1 = 0x230000;
		put_cmd(d, 1, c);
	}
	sq_doorbell(d, 1, d->q[1].tail);
	int n = 0;
	while (n < 5 && poll_cqe(d, 1, &e, true, 2000) && SCODE(e.status >> 1) == S_OK)
		n++;
	CHECK(n == 5, "5 commands through 1 I/O slot: %d completed", n);
	/* Delete the SQ right after a read went out: done once the read is. */
	struct nvme_cmd c = rw(false, 3, 1);
	c.prp1 = 0x230000;
	uint16_t rcid = submit(d, 1, c);
	struct nvme_cmd del = mkcmd(0x00, 0);
	del.cdw10 = 1;
	uint16_t dcid = submit(d, 0, del);
	struct nvme_cqe e2;
	bool got_del = poll_cqe(d, 0, &e2, true, 2000);
	CHECK(poll_cqe(d, 1, &e, true, 2000) && e.cid == rcid && got_del && e2.cid == dcid && SCODE(e2.status >> 1) == 0,
	      "Delete I/O SQ with a read in flight completes after it");
	CHECK(delete_q(d, false, 1) == S_OK, "then its CQ");
	/* Shutdown, then reset. */
	wreg32(d, NVME_REG_CC, reg32(d, NVME_REG_CC) | 1u << 14);
	CHECK((reg32(d, NVME_REG_CSTS) & NVME_CSTS_SHST_MASK) == NVME_CSTS_SHST_DONE, "CC.SHN: shutdown complete");
	submit(d, 0, mkcmd(0x18, 0));
	CHECK(!poll_cqe(d, 0, &e, true, 100), "no commands after shutdown");
	d->q[0].tail = (d->q[0].tail + d->q[0].sqsize - 1) % d->q[0].sqsize;
	wreg32(d, NVME_REG_CC, 0);
	CHECK(reg32(d, NVME_REG_CSTS) == 0, "reset: CSTS 0");
	enable(d, 4, 4, 0x220000, 0x221000);
	CHECK(wait_reg(d, NVME_REG_CSTS, 1, 1) && admin(d, mkcmd(0x18, 0), NULL) == S_OK, "enabled again after shutdown");
	CHECK(create_sq_raw(d, 1, 8, IOQ_GPA(1), 1, 1) == S_CQ_INVALID, "reset deleted the I/O queues");
}

/* Set the over-temperature threshold; the resulting event must complete AER aer_cid. */
static bool set_temp_expect_aer(struct dev *d, uint16_t th, uint16_t aer_cid)
{
	struct nvme_cmd sf = mkcmd(0x09, 0);
	sf.cdw10 = 0x04;
	sf.cdw11 = th;
	uint16_t sfcid = submit(d, 0, sf);
	struct nvme_cqe e1, e2;
	if (!poll_cqe(d, 0, &e1, true, 1000) || !poll_cqe(d, 0, &e2, true, 1000))
		return false;
	return (e1.cid == sfcid && e2.cid == aer_cid) || (e2.cid == sfcid && e1.cid == aer_cid);
}

/* Save a live controller, reset it, restore it: it goes on where it was. */
static void t_checkpoint(struct dev *d)
{
	struct pci_devinst *pi = d->pi;
	char err[256] = "";
	uint16_t aer = submit(d, 0, mkcmd(0x0c, 0));   /* pending across the checkpoint */
	struct nvme_cqe e;
	CHECK(!poll_cqe(d, 0, &e, true, 20), "an AER pending before the checkpoint");
	struct q saved[4];
	memcpy(saved, d->q, sizeof(saved));
	struct snap_buf sb;
	sb_init(&sb);
	pi->pi_d->pe_pause(pi);
	int rc = pci_emul_save_state(pi, &sb) || pi->pi_d->pe_snapshot(pi, &sb, err, sizeof(err));
	pi->pi_d->pe_resume(pi);
	CHECK(rc == 0 && !sb.failed, "snapshot of a live controller (%zu bytes) %s", sb.len, err);
	if (rc || sb.failed) {
		sb_free(&sb);
		return;
	}

	/* Reset it (queues gone), and do some I/O the restore will forget. */
	wreg32(d, NVME_REG_CC, 0);
	CHECK(reg32(d, NVME_REG_CSTS) == 0, "controller reset");

	/* Truncated and corrupted states are refused. */
	struct snap_rd rd;
	sr_init(&rd, sb.data, sb.len - 7);
	err[0] = 0;
	rc = pci_emul_load_state(pi, &rd, err, sizeof(err)) || pi->pi_d->pe_restore(pi, &rd, pi->pi_d->pe_snapshot_version, err, sizeof(err));
	CHECK(rc != 0, "truncated state refused: %s", err);
	sr_init(&rd, sb.data, sb.len);
	rc = pci_emul_load_state(pi, &rd, err, sizeof(err)) || pi->pi_d->pe_restore(pi, &rd, 99, err, sizeof(err));
	CHECK(rc != 0, "unknown version refused: %s", err);
	uint8_t *bad = malloc(sb.len);
	memcpy(bad, sb.data, sb.len);
	size_t model = sb.len;
	{
		/* Find the model's part: it starts right after the framework's. */
		struct snap_rd r2;
		sr_init(&r2, sb.data, sb.len);
		pci_emul_load_state(pi, &r2, err, sizeof(err));
		model = r2.off;
	}
	if (model + 8 > sb.len)
		model = sb.len - 8;
	bad[model + 4] ^= 0x40;   /* qsz */
	sr_init(&rd, bad, sb.len);
	rc = pci_emul_load_state(pi, &rd, err, sizeof(err)) || pi->pi_d->pe_restore(pi, &rd, 1, err, sizeof(err));
	CHECK(rc != 0 && strstr(err, "qsz"), "state of another configuration refused: %s", err);
	free(bad);

	sr_init(&rd, sb.data, sb.len);
	err[0] = 0;
	rc = pci_emul_load_state(pi, &rd, err, sizeof(err)) || pi->pi_d->pe_restore(pi, &rd, 1, err, sizeof(err));
	CHECK(rc == 0 && sr_done(&rd), "restore %s", err);
	pi->pi_d->pe_resume(pi);
	memcpy(d->q, saved, sizeof(saved));
	CHECK(reg32(d, NVME_REG_CSTS) == NVME_CSTS_RDY, "restored: ready");
	uint8_t *data = nh_ptr(DATA_GPA, 8192);
	fill(data, 8192, 11);
	struct nvme_cmd c = rw(true, 5000, 16);
	prps_for(DATA_GPA, 8192, LIST_GPA, &c);
	unsigned m0 = nh_msi_count();
	CHECK(cmd_sync(d, 2, c, NULL) == S_OK && file_equals(d->img, 5000 * 512, data, 8192), "restored queue 2 carries a write");
	CHECK(msi_seen(0x32, m0), "with its vector");
	c = rw(false, 5000, 16);
	prps_for(DATA2_GPA, 8192, LIST_GPA, &c);
	CHECK(cmd_sync(d, 1, c, NULL) == S_OK && !memcmp(nh_ptr(DATA2_GPA, 8192), data, 8192), "and queue 1 a read");
	/* Both AERs outstanding at the checkpoint are still there: two events complete them in order. */
	uint8_t b[512];
	CHECK(get_log(d, 2, 512, 0, false, b) == S_OK, "SMART log read: SMART events unmasked (they were when saved)");
	CHECK(set_temp_expect_aer(d, 300, pending_aer), "event after restore completes the older saved AER (CID %u)",
	      pending_aer);
	get_log(d, 2, 512, 0, false, b);   /* unmask SMART events */
	features(d, true, 0x04, NVME_WCTEMP, NULL);
	CHECK(set_temp_expect_aer(d, 300, aer), "the next event completes the other (CID %u)", aer);
	get_log(d, 2, 512, 0, false, b);
	features(d, true, 0x04, NVME_WCTEMP, NULL);
	sb_free(&sb);
}

int main(void)
{
	nh_verbose = getenv("NVME_TEST_VERBOSE") != NULL;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_nvme.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		printf("SKIP: cannot make a scratch directory\n");
		return 77;
	}
	snprintf(img4, sizeof(img4), "%s/a.img", tmpdir);
	snprintf(img5, sizeof(img5), "%s/b.img", tmpdir);
	snprintf(img6, sizeof(img6), "%s/c.img", tmpdir);
	make_image(img4, 8u << 20, 1);
	make_image(img5, 1u << 20, 2);
	make_image(img6, 1u << 20, 3);
	char k4[128], k5[128], k6[128];
	snprintf(k4, sizeof(k4), "pci.0.4.0.path=%s", img4);
	snprintf(k5, sizeof(k5), "pci.0.5.0.path=%s", img5);
	snprintf(k6, sizeof(k6), "pci.0.6.0.path=%s", img6);
	const char *kv[] = {
		"name=nvmetest", "cpus=2",
		"pci.0.4.0.device=nvme", k4,
		"pci.0.5.0.device=nvme", k5, "pci.0.5.0.ro=true", "pci.0.5.0.dsm=disable", "pci.0.5.0.ser=MYSERIAL",
		"pci.0.5.0.eui64=0x0123456789abcdef",
		"pci.0.6.0.device=nvme", k6, "pci.0.6.0.sectsz=4096", "pci.0.6.0.maxq=1", "pci.0.6.0.qsz=8",
		"pci.0.6.0.ioslots=1",
		NULL,
	};
	nh_setup(kv);
	struct dev d4, d5, d6;
	dev_open(&d4, 4, img4);
	dev_open(&d5, 5, img5);
	dev_open(&d6, 6, img6);

	t_pci_and_registers(&d4);
	enable(&d5, 16, 16, 0x200000, 0x201000);
	enable(&d6, 4, 4, 0x220000, 0x221000);
	t_identify(&d4, &d5, &d6);
	t_features(&d4);
	t_queues(&d4);
	t_io(&d4);
	t_io_errors(&d4);
	t_logs_and_events(&d4);
	t_readonly(&d5);
	t_small(&d6);
	t_checkpoint(&d4);

	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmpdir);
	return check_summary();
}
