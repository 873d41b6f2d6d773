/*
 * libFuzzer target for the NVMe controller's parsers (devices/nvme.c,
 * devices/nvme_admin.c): register and doorbell writes, submission queue
 * entries (admin and NVM commands, every field), PRP entries and lists in
 * guest memory, completion queue head updates, config space (MSI-X, PM),
 * checkpoint save/restore round trips and the restore parser on raw bytes.
 *
 *   tests/fuzz/run.sh -t 60 nvme
 *
 * Two real controllers built by init_run_all with only the KVM layer
 * stubbed (tests/fuzz/nvme_stubs.c): slot 4 (maxq=2, qsz=64, ioslots=4,
 * MSI-X) and slot 5 (sectsz=4096, maxq=1, qsz=8, ioslots=1, INTx), each on
 * a 1 MiB image in a scratch directory; blockif is real.  Guest RAM: 1 MiB
 * at 0 and 64 KiB at 4 GiB.  Before each input both controllers are reset
 * (CC.EN=0) and loaded back from the state saved at start-up, and RAM is
 * cleared; after it each controller is paused as for a checkpoint (every
 * request drained) and its bookkeeping is checked (no command, CQ slot
 * reservation or I/O slot left in flight, heads and tails inside their
 * queues).
 *
 * Input: a sequence of operations, each an opcode byte then its operands
 * (little-endian; a short input ends the sequence):
 *   0 RAM write     u8 region(bit 0: high RAM) u24 offset u8 len, bytes
 *   1 BAR 0 write   u8 dev, u16 offset, u8 size(4|8), u64 value
 *   2 BAR 0 read    u8 dev, u16 offset, u8 size
 *   3 enable        u8 dev, u8 admin SQ size, u8 admin CQ size (queues at fixed places)
 *   4 command       u8 dev, u8 queue, 64-byte entry: written at that queue's tail, doorbell rung
 *   5 queue pair    u8 dev, u8 qid, u8 SQ size, u8 CQ size, u8 vector (Create CQ + SQ commands)
 *   6 CQ head       u8 dev, u8 queue, u16 value
 *   7 drain         (main-loop callbacks, then pause/resume: every request completes)
 *   8 config write  u8 dev, u8 offset, u8 size, u32 value
 *   9 checkpoint    u8 dev, u8 mode: 0 save+restore, else restore the next u16-length bytes
 *  10 MSI-X on      u8 dev (table programmed, unmasked, enabled)
 *
 * -DFUZZ_MAKE_SEEDS builds a main() that writes seed inputs (a Linux-like
 * bring-up, I/O through PRP lists, DSM, AER and temperature events, a
 * checkpoint mid-I/O, shutdown, bad doorbells) into a directory:
 * tests/fuzz/run.sh --make-seeds nvme refreshes tests/fuzz/corpus/nvme/.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/snapshot.h"
#include "../../devices/nvme_internal.h"
#include "../../devices/pci_emul.h"
#include "fuzz_input.h"
#include "nvme_stubs.h"

#define NDEV 2
#define RAM0 (1ull << 20)
/* Fixed places of the harness's queues: dev d, queue q. */
#define SQ_GPA(d, q) (0x10000ull * (uint64_t)(1 + (d)) + 0x2000ull * (uint64_t)(q))
#define CQ_GPA(d, q) (SQ_GPA(d, q) + 0x1000)

static const int slots[NDEV] = { 4, 5 };
static struct pci_devinst *pis[NDEV];
static struct snap_buf baseline[NDEV];
static char tmpdir[64];

/* What the harness, as the driver, knows of each queue. */
static struct { uint32_t size, tail; uint16_t cid; } dq[NDEV][3];

static void cleanup(void)
{
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (tmpdir[0] && system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/fuzz_nvme.XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
	atexit(cleanup);
	static char k4[128], k5[128];
	char img[96];
	for (int d = 0; d < NDEV; d++) {
		snprintf(img, sizeof(img), "%s/%d.img", tmpdir, d);
		int fd = open(img, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, 1 << 20))
			abort();
		if (pwrite(fd, "hyve nvme fuzz image", 20, 0) != 20)
			abort();
		close(fd);
		snprintf(d ? k5 : k4, 128, "pci.0.%d.0.path=%s", slots[d], img);
	}
	const char *kv[] = {
		"name=fuzz", "cpus=2",
		"pci.0.4.0.device=nvme", k4, "pci.0.4.0.maxq=2", "pci.0.4.0.qsz=64", "pci.0.4.0.ioslots=4",
		"pci.0.5.0.device=nvme", k5, "pci.0.5.0.sectsz=4096", "pci.0.5.0.maxq=1", "pci.0.5.0.qsz=8",
		"pci.0.5.0.ioslots=1",
		NULL,
	};
	nh_ram0_size = RAM0;
	nh_setup(kv);
	for (int d = 0; d < NDEV; d++) {
		if (!(pis[d] = nh_slot(slots[d])))
			abort();
		nh_save_state(pis[d], &baseline[d]);
	}
}

static uint64_t bar0(int d) { return pis[d]->pi_bar[0].addr; }
static void wr32(int d, uint64_t off, uint32_t v) { nh_mmio_write(bar0(d) + off, 4, v); }

static void drain(int d)
{
	nh_poll();
	pis[d]->pi_d->pe_pause(pis[d]);
	pis[d]->pi_d->pe_resume(pis[d]);
}

/* The controller's bookkeeping after a drain. */
static void check_invariants(int d)
{
	struct nvme_sc *sc = pis[d]->pi_arg;
	char why[160] = "";
	pthread_mutex_lock(&sc->mtx);
	if (sc->io_busy || sc->nirq > sc->maxq + 1 || sc->naer > NVME_AERL + 1 || sc->nevents > NVME_MAX_EVENTS)
		snprintf(why, sizeof(why), "io_busy %u nirq %u naer %u nevents %u", sc->io_busy, sc->nirq, sc->naer,
		         sc->nevents);
	for (uint32_t q = 0; q <= sc->maxq && !why[0]; q++) {
		const struct nvme_sq *sq = &sc->sq[q];
		const struct nvme_cq *cq = &sc->cq[q];
		if (sq->exists && (sq->head >= sq->size || sq->tail >= sq->size || sq->inflight || sq->deleting ||
		                   !sc->cq[sq->cqid].exists))
			snprintf(why, sizeof(why), "SQ %u: head %u tail %u size %u inflight %u deleting %d CQ %u", q, sq->head,
			         sq->tail, sq->size, sq->inflight, sq->deleting, sq->cqid);
		else if (cq->exists && (cq->head >= cq->size || cq->tail >= cq->size || cq->reserved || cq->phase > 1))
			snprintf(why, sizeof(why), "CQ %u: head %u tail %u size %u reserved %u phase %u", q, cq->head,
			         cq->tail, cq->size, cq->reserved, cq->phase);
	}
	uint32_t nfree = 0;
	for (struct nvme_ioreq *io = sc->free_io; io && nfree <= sc->ioslots; io = io->next)
		nfree++;
	if (!why[0] && nfree != sc->ioslots)
		snprintf(why, sizeof(why), "%u of %u I/O slots free", nfree, sc->ioslots);
	pthread_mutex_unlock(&sc->mtx);
	if (why[0]) {
		fprintf(stderr, "%s: inconsistent after drain: %s\n", pis[d]->pi_name, why);
		abort();
	}
}

static void put_entry(int d, int q, const uint8_t *e)
{
	uint32_t size = dq[d][q].size ? dq[d][q].size : 2;
	memcpy(nh_ptr(SQ_GPA(d, q) + (uint64_t)dq[d][q].tail * 64, 64), e, 64);
	dq[d][q].tail = (dq[d][q].tail + 1) % size;
	wr32(d, 0x1000 + 8 * (uint64_t)q, dq[d][q].tail);
}

static void admin_cmd(int d, uint8_t opc, uint32_t cdw10, uint32_t cdw11, uint64_t prp1)
{
	struct nvme_cmd c = { .cdw0 = opc | (uint32_t)(++dq[d][0].cid) << 16, .prp1 = prp1, .cdw10 = cdw10,
	                      .cdw11 = cdw11 };
	put_entry(d, 0, (const uint8_t *)&c);
}

static void msix_on(int d)
{
	struct pci_devinst *pi = pis[d];
	uint64_t t = pi->pi_bar[4].addr;
	for (int i = 0; i < pi->pi_msix.table_count; i++) {
		nh_mmio_write(t + 16 * (uint64_t)i, 8, 0xfee00000);
		nh_mmio_write(t + 16 * (uint64_t)i + 8, 4, 0x40 + (uint32_t)i);
		nh_mmio_write(t + 16 * (uint64_t)i + 12, 4, 0);
	}
	nh_cfg_write(slots[d], pi->pi_msix.capoff + 2, 2, 0x8000);
}

static void run(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size, false };
	while (!in.eof && in.n > 0) {
		uint8_t op = (uint8_t)(fuzz_take(&in, 1) % 11);
		int d = 0;
		switch (op) {
		case 0: {
			uint8_t r = (uint8_t)fuzz_take(&in, 1);
			uint64_t off = fuzz_take(&in, 3);
			uint8_t len = (uint8_t)fuzz_take(&in, 1);
			uint64_t base = (r & 1) ? NH_RAM1_BASE : 0, lim = (r & 1) ? NH_RAM1_SIZE : RAM0;
			off %= lim - 256;
			for (uint8_t i = 0; i < len && !in.eof; i++)
				((uint8_t *)nh_ptr(base + off, 256))[i] = (uint8_t)fuzz_take(&in, 1);
			break;
		}
		case 1: {
			d = (int)(fuzz_take(&in, 1) % NDEV);
			uint64_t off = fuzz_take(&in, 2) % pis[d]->pi_bar[0].size;
			int sz = (fuzz_take(&in, 1) & 1) ? 8 : 4;
			uint64_t v = fuzz_take(&in, 8);
			if (!in.eof)
				nh_mmio_write(bar0(d) + off, sz, v);
			break;
		}
		case 2: {
			d = (int)(fuzz_take(&in, 1) % NDEV);
			uint64_t off = fuzz_take(&in, 2) % pis[d]->pi_bar[0].size;
			static const int sizes[4] = { 1, 2, 4, 8 };
			int sz = sizes[fuzz_take(&in, 1) & 3];
			if (!in.eof && off + (uint64_t)sz <= pis[d]->pi_bar[0].size)
				(void)nh_mmio_read(bar0(d) + off, sz);
			break;
		}
		case 3: {
			d = (int)(fuzz_take(&in, 1) % NDEV);
			uint32_t asz = 2 + (uint32_t)(fuzz_take(&in, 1) % 31), csz = 2 + (uint32_t)(fuzz_take(&in, 1) % 31);
			wr32(d, NVME_REG_CC, 0);
			wr32(d, NVME_REG_AQA, (csz - 1) << 16 | (asz - 1));
			nh_mmio_write(bar0(d) + NVME_REG_ASQ, 8, SQ_GPA(d, 0));
			nh_mmio_write(bar0(d) + NVME_REG_ACQ, 8, CQ_GPA(d, 0));
			memset(dq[d], 0, sizeof(dq[d]));
			dq[d][0].size = asz;
			wr32(d, NVME_REG_CC, NVME_CC_EN | 6u << 16 | 4u << 20);
			break;
		}
		case 4: {
			d = (int)(fuzz_take(&in, 1) % NDEV);
			int q = (int)(fuzz_take(&in, 1) % 3);
			uint8_t e[64];
			for (int i = 0; i < 64; i++)
				e[i] = (uint8_t)fuzz_take(&in, 1);
			if (!in.eof)
				put_entry(d, q, e);
			break;
		}
		case 5: {
			d = (int)(fuzz_take(&in, 1) % NDEV);
			int q = 1 + (int)(fuzz_take(&in, 1) % 2);
			uint32_t ssz = 2 + (uint32_t)(fuzz_take(&in, 1) % 63), csz = 2 + (uint32_t)(fuzz_take(&in, 1) % 63);
			uint32_t iv = (uint32_t)(fuzz_take(&in, 1) % 4);
			if (in.eof)
				break;
			memset(nh_ptr(CQ_GPA(d, q), 4096), 0, 4096);
			admin_cmd(d, 0x05, (csz - 1) << 16 | (uint32_t)q, iv << 16 | 3, CQ_GPA(d, q));
			admin_cmd(d, 0x01, (ssz - 1) << 16 | (uint32_t)q, (uint32_t)q << 16 | 1, SQ_GPA(d, q));
			dq[d][q].size = ssz;
			dq[d][q].tail = 0;
			break;
		}
		case 6: {
			d = (int)(fuzz_take(&in, 1) % NDEV);
			int q = (int)(fuzz_take(&in, 1) % 3);
			uint32_t v = (uint32_t)fuzz_take(&in, 2);
			if (!in.eof)
				wr32(d, 0x1000 + 8 * (uint64_t)q + 4, v);
			break;
		}
		case 7:
			for (d = 0; d < NDEV; d++)
				drain(d);
			break;
		case 8: {
			d = (int)(fuzz_take(&in, 1) % NDEV);
			int off = (int)fuzz_take(&in, 1);
			static const int sizes[3] = { 1, 2, 4 };
			int sz = sizes[fuzz_take(&in, 1) % 3];
			uint32_t v = (uint32_t)fuzz_take(&in, 4);
			if (!in.eof && (off & (sz - 1)) == 0)
				nh_cfg_write(slots[d], off, sz, v);
			break;
		}
		case 9: {
			d = (int)(fuzz_take(&in, 1) % NDEV);
			uint8_t mode = (uint8_t)fuzz_take(&in, 1);
			if (in.eof)
				break;
			if (mode == 0) {
				struct snap_buf sb;
				nh_save_state(pis[d], &sb);
				/* Its own state always loads back. */
				pis[d]->pi_d->pe_pause(pis[d]);
				if (nh_load_state(pis[d], sb.data, sb.len, true)) {
					fprintf(stderr, "%s: saved state does not load\n", pis[d]->pi_name);
					abort();
				}
				pis[d]->pi_d->pe_resume(pis[d]);
				sb_free(&sb);
			} else {
				size_t n = (size_t)fuzz_take(&in, 2);
				if (n > in.n)
					n = in.n;
				pis[d]->pi_d->pe_pause(pis[d]);
				(void)nh_load_state(pis[d], in.p, n, false);
				pis[d]->pi_d->pe_resume(pis[d]);
				in.p += n;
				in.n -= n;
			}
			break;
		}
		case 10:
			d = (int)(fuzz_take(&in, 1) % NDEV);
			if (!in.eof)
				msix_on(d);
			break;
		}
	}
}

static void reset_all(void)
{
	for (int d = 0; d < NDEV; d++) {
		wr32(d, NVME_REG_CC, 0);
		if (nh_load_state(pis[d], baseline[d].data, baseline[d].len, true)) {
			fprintf(stderr, "%s: baseline does not load\n", pis[d]->pi_name);
			abort();
		}
		pis[d]->pi_d->pe_resume(pis[d]);
	}
	memset(nh_ptr(0, RAM0), 0, RAM0);
	memset(nh_ptr(NH_RAM1_BASE, NH_RAM1_SIZE), 0, NH_RAM1_SIZE);
	memset(dq, 0, sizeof(dq));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		setup();
		ready = true;
	}
	reset_all();
	run(data, size);
	/* Paused, as for a checkpoint: nothing may be in flight.  (Resuming
	 * may start more: entries that waited for a CQ slot or an I/O slot.) */
	for (int d = 0; d < NDEV; d++) {
		nh_poll();
		pis[d]->pi_d->pe_pause(pis[d]);
		check_invariants(d);
		pis[d]->pi_d->pe_resume(pis[d]);
	}
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
/* ---- seed inputs ---- */

static void s_enable(struct fuzz_seed *s, int d, int asz, int csz) { seed_u(s, 3, 1); seed_u(s, (uint64_t)d, 1); seed_u(s, (uint64_t)asz - 2, 1); seed_u(s, (uint64_t)csz - 2, 1); }
static void s_msix(struct fuzz_seed *s, int d) { seed_u(s, 10, 1); seed_u(s, (uint64_t)d, 1); }
static void s_drain(struct fuzz_seed *s) { seed_u(s, 7, 1); }
static void s_cmd(struct fuzz_seed *s, int d, int q, struct nvme_cmd c)
{
	seed_u(s, 4, 1);
	seed_u(s, (uint64_t)d, 1);
	seed_u(s, (uint64_t)q, 1);
	seed_bytes(s, &c, 64);
}
static void s_pair(struct fuzz_seed *s, int d, int q, int ssz, int csz, int iv)
{
	seed_u(s, 5, 1); seed_u(s, (uint64_t)d, 1); seed_u(s, (uint64_t)q - 1, 1);
	seed_u(s, (uint64_t)ssz - 2, 1); seed_u(s, (uint64_t)csz - 2, 1); seed_u(s, (uint64_t)iv, 1);
}
static void s_ram(struct fuzz_seed *s, uint64_t off, const void *p, uint8_t n)
{
	seed_u(s, 0, 1); seed_u(s, 0, 1); seed_u(s, off, 3); seed_u(s, n, 1);
	seed_bytes(s, p, n);
}
static void s_reg(struct fuzz_seed *s, int d, uint16_t off, uint32_t v)
{
	seed_u(s, 1, 1); seed_u(s, (uint64_t)d, 1); seed_u(s, off, 2); seed_u(s, 0, 1); seed_u(s, v, 8);
}
static struct nvme_cmd mk(uint8_t opc, uint32_t nsid, uint64_t prp1, uint64_t prp2, uint32_t c10, uint32_t c11, uint32_t c12)
{
	return (struct nvme_cmd){ .cdw0 = opc | 7u << 16, .nsid = nsid, .prp1 = prp1, .prp2 = prp2, .cdw10 = c10,
	                          .cdw11 = c11, .cdw12 = c12 };
}
/* Linux's bring-up: MSI-X, enable, identify, queue count, one queue pair per vector. */
static void s_bringup(struct fuzz_seed *s, int d)
{
	s_msix(s, d);
	s_enable(s, d, 32, 32);
	s_cmd(s, d, 0, mk(0x06, 0, 0x80000, 0, 1, 0, 0));
	s_cmd(s, d, 0, mk(0x09, 0, 0, 0, 0x07, 0x00010001, 0));
	s_cmd(s, d, 0, mk(0x0c, 0, 0, 0, 0, 0, 0));
	s_cmd(s, d, 0, mk(0x06, 0, 0x80000, 0, 2, 0, 0));
	s_cmd(s, d, 0, mk(0x06, 1, 0x80000, 0, 3, 0, 0));
	s_cmd(s, d, 0, mk(0x06, 1, 0x80000, 0, 0, 0, 0));
	s_pair(s, d, 1, 32, 32, 1);
	s_pair(s, d, 2, 32, 32, 2);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	struct fuzz_seed s;

	s.n = 0;
	s_bringup(&s, 0);
	s_drain(&s);
	seed_write(dir, "bringup", &s);

	/* Writes and reads: PRP1, PRP1+PRP2, a PRP list at 0x90000; flush; FUA. */
	s.n = 0;
	s_bringup(&s, 0);
	uint64_t list[4] = { 0xa2000, 0xa3000, 0xa4000, 0xa5000 };
	s_ram(&s, 0x90000, list, sizeof(list));
	s_cmd(&s, 0, 1, mk(0x01, 1, 0xa0000, 0, 0, 0, 7));
	s_cmd(&s, 0, 2, mk(0x02, 1, 0xa0200, 0xa1000, 8, 0, 7));
	s_cmd(&s, 0, 1, mk(0x02, 1, 0xa1000, 0x90000, 16, 0, 39));
	s_cmd(&s, 0, 1, mk(0x00, 1, 0, 0, 0, 0, 0));
	s_cmd(&s, 0, 2, mk(0x01, 1, 0xa0000, 0, 3, 0, 1u << 30));
	s_drain(&s);
	seed_write(dir, "io_prp", &s);

	/* Dataset Management (2 ranges), Write Zeroes with DEAC, errors: range, NSID, opcode. */
	s.n = 0;
	s_bringup(&s, 0);
	uint8_t r[32] = { 0 };
	uint32_t nlb = 8;
	uint64_t slba = 64;
	memcpy(r + 4, &nlb, 4);
	memcpy(r + 8, &slba, 8);
	slba = 128;
	memcpy(r + 20, &nlb, 4);
	memcpy(r + 24, &slba, 8);
	s_ram(&s, 0x98000, r, sizeof(r));
	s_cmd(&s, 0, 1, mk(0x09, 1, 0x98000, 0, 1, 4, 0));
	s_cmd(&s, 0, 1, mk(0x08, 1, 0, 0, 256, 0, 15 | 1u << 25));
	s_cmd(&s, 0, 2, mk(0x02, 1, 0xa0000, 0, 2047, 0, 1));
	s_cmd(&s, 0, 2, mk(0x02, 2, 0xa0000, 0, 0, 0, 0));
	s_cmd(&s, 0, 2, mk(0x7e, 1, 0, 0, 0, 0, 0));
	s_drain(&s);
	seed_write(dir, "dsm_errors", &s);

	/* AERs, a temperature event, log pages, features. */
	s.n = 0;
	s_bringup(&s, 0);
	s_cmd(&s, 0, 0, mk(0x09, 0, 0, 0, 0x0b, 0x02, 0));
	s_cmd(&s, 0, 0, mk(0x09, 0, 0, 0, 0x04, 300, 0));
	s_cmd(&s, 0, 0, mk(0x02, 0xffffffffu, 0x80000, 0, 2 | 127u << 16, 0, 0));
	s_cmd(&s, 0, 0, mk(0x02, 0, 0x80000, 0, 1 | 63u << 16, 0, 0));
	s_cmd(&s, 0, 0, mk(0x02, 0, 0x80000, 0, 3 | 127u << 16, 0, 0));
	s_cmd(&s, 0, 0, mk(0x0a, 0, 0, 0, 0x04 | 3u << 8, 0, 0));
	s_cmd(&s, 0, 0, mk(0x08, 0, 0, 0, 1 | 5u << 16, 0, 0));
	s_drain(&s);
	seed_write(dir, "aer_logs", &s);

	/* A checkpoint with I/O queued, then more I/O; then one of the INTx controller. */
	s.n = 0;
	s_bringup(&s, 0);
	s_cmd(&s, 0, 1, mk(0x02, 1, 0xa0000, 0, 0, 0, 7));
	seed_u(&s, 9, 1); seed_u(&s, 0, 1); seed_u(&s, 0, 1);
	s_cmd(&s, 0, 1, mk(0x01, 1, 0xa0000, 0, 8, 0, 7));
	s_enable(&s, 1, 4, 4);
	s_pair(&s, 1, 1, 8, 2, 0);
	s_cmd(&s, 1, 1, mk(0x02, 1, 0xa0000, 0, 0, 0, 0));
	s_cmd(&s, 1, 1, mk(0x02, 1, 0xa1000, 0, 1, 0, 0));
	seed_u(&s, 9, 1); seed_u(&s, 1, 1); seed_u(&s, 0, 1);
	seed_u(&s, 6, 1); seed_u(&s, 1, 1); seed_u(&s, 1, 1); seed_u(&s, 1, 2);
	s_drain(&s);
	seed_write(dir, "checkpoint", &s);

	/* Bad doorbells, delete queues, shutdown, reset. */
	s.n = 0;
	s_bringup(&s, 0);
	s_reg(&s, 0, 0x1000 + 8 * 7, 1);
	s_reg(&s, 0, 0x1000 + 8 * 1, 999);
	s_reg(&s, 0, 0x1000 + 8 * 1 + 4, 5);
	s_cmd(&s, 0, 0, mk(0x00, 0, 0, 0, 1, 0, 0));
	s_cmd(&s, 0, 0, mk(0x04, 0, 0, 0, 1, 0, 0));
	s_cmd(&s, 0, 0, mk(0x04, 0, 0, 0, 2, 0, 0));
	s_reg(&s, 0, NVME_REG_CC, NVME_CC_EN | 6u << 16 | 4u << 20 | 1u << 14);
	s_reg(&s, 0, NVME_REG_CC, 0);
	seed_write(dir, "doorbells_shutdown", &s);
	return 0;
}
#endif
