/*
 * NVMe controller (NVM Express Base Specification 1.4) over blockif:
 *
 *   -s N,nvme,PATH[,maxq=N][,qsz=N][,ioslots=N][,sectsz=512|4096][,ser=S]
 *                 [,eui64=N][,dsm=auto|enable|disable][,ro][,nocache][,direct]
 *                 [,format=raw|qcow2][,l2cache=BYTES]
 *
 * One namespace (NSID 1) on the disk image.  BAR 0 (64-bit) holds the
 * controller registers and the doorbells (stride 4); the MSI-X table and
 * PBA are in BAR 4, one vector per queue pair (admin on vector 0).  The
 * function is an integrated root-complex endpoint with a power-management
 * capability; without MSI-X it falls back to INTx.
 *
 * Doorbell writes exit to hyve: the vCPU thread that wrote a submission
 * queue's tail fetches its commands under the controller lock, checks
 * every field (queue ids, namespace, LBA range, transfer size against
 * MDTS, each PRP entry against guest RAM through vm_map_gpa) and hands
 * reads, writes, flushes, write-zeroes and deallocations to blockif with
 * iovecs that point into guest memory.  Completions (blockif's callback,
 * any thread) post the completion entry with its phase bit and raise the
 * CQ's vector.  A command is fetched only when its CQ has room for its
 * completion and an I/O slot (ioslots=) is free; otherwise the queue waits
 * for a CQ head doorbell or a finished request.
 *
 * Admin commands are in nvme_admin.c.  Controller reset (CC.EN 1->0),
 * shutdown (CC.SHN) and checkpoints drain blockif first.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../core/config.h"
#include "../core/log.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "nvme_internal.h"
#include "pci_emul.h"

#define NVME_VENDOR   0xfb5d     /* bhyve's NVMe ids */
#define NVME_DEVICE   0x0a0a
#define NVME_MSIX_BAR 4
#define NVME_DEFAULT_QSZ     2048
#define NVME_DEFAULT_IOSLOTS 128
#define NVME_MAX_IOSLOTS     4096

/* NVM command set opcodes. */
#define NVM_FLUSH        0x00
#define NVM_WRITE        0x01
#define NVM_READ         0x02
#define NVM_WRITE_ZEROES 0x08
#define NVM_DSM          0x09

/* What the I/O command helpers return once blockif has the command. */
#define ST_SUBMITTED 0xffff

uint64_t nvme_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool nvme_running(const struct nvme_sc *sc)
{
	return (sc->cc & NVME_CC_EN) && (sc->csts & NVME_CSTS_RDY) &&
	       !(sc->csts & (NVME_CSTS_CFS | NVME_CSTS_SHST_MASK)) && !sc->paused && !sc->resetting;
}

/* ---- rings, completions, interrupts ---- */

int nvme_map_ring(struct nvme_sc *sc, uint64_t gpa, uint32_t entries, uint32_t esize, uint8_t **ring)
{
	if (gpa & (NVME_PAGE - 1))
		return -1;
	*ring = vm_map_gpa(sc->ctx, gpa, (size_t)entries * esize);
	return *ring ? 0 : -1;
}

static uint32_t cq_used(const struct nvme_cq *cq)
{
	return (cq->tail + cq->size - cq->head) % cq->size;
}

uint32_t nvme_cq_free(const struct nvme_cq *cq)
{
	uint32_t taken = cq_used(cq) + cq->reserved;
	return taken >= cq->size - 1 ? 0 : cq->size - 1 - taken;
}

/* INTx: asserted while a CQ with interrupts enabled holds entries (vector 0 unmasked). */
void nvme_update_intx(struct nvme_sc *sc)
{
	bool level = false;
	if (!pci_msix_enabled(sc->pi) && !(sc->intms & 1))
		for (uint32_t q = 0; q <= sc->maxq && !level; q++)
			level = sc->cq[q].exists && sc->cq[q].ien && cq_used(&sc->cq[q]) > 0;
	if (level == sc->intx_level)
		return;
	sc->intx_level = level;
	if (level)
		pci_lintr_assert(sc->pi);
	else
		pci_lintr_deassert(sc->pi);
}

static void cq_post(struct nvme_sc *sc, uint16_t cqid, uint16_t sqid, uint16_t cid, uint32_t dw0, uint16_t status)
{
	struct nvme_cq *cq = &sc->cq[cqid];
	if (!cq->exists)
		return;
	uint8_t *slot = cq->ring + (size_t)cq->tail * sizeof(struct nvme_cqe);
	struct nvme_cqe e = {
		.dw0 = dw0,
		.sqhd = (uint16_t)sc->sq[sqid].head,
		.sqid = sqid,
		.cid = cid,
		.status = (uint16_t)((status & 0x7fff) << 1) | cq->phase,
	};
	uint32_t dw3;
	memcpy(slot, &e, 12);
	memcpy(&dw3, (uint8_t *)&e + 12, 4);
	/* The phase bit goes last: the driver polls it. */
	__atomic_store_n((uint32_t *)(void *)(slot + 12), dw3, __ATOMIC_RELEASE);
	vm_mark_dirty(sc->ctx, cq->gpa + (uint64_t)cq->tail * sizeof(struct nvme_cqe), sizeof(struct nvme_cqe));
	if (++cq->tail == cq->size) {
		cq->tail = 0;
		cq->phase ^= 1;
	}
	if (!cq->ien)
		return;
	if (pci_msix_enabled(sc->pi)) {
		if (!cq->irq_queued) {
			cq->irq_queued = true;
			sc->irq_list[sc->nirq++] = cqid;
		}
	} else {
		nvme_update_intx(sc);
	}
}

void nvme_complete(struct nvme_sc *sc, uint16_t sqid, uint16_t cid, uint32_t dw0, uint16_t status)
{
	struct nvme_sq *sq = &sc->sq[sqid];
	struct nvme_cq *cq = &sc->cq[sq->cqid];
	if (cq->reserved)
		cq->reserved--;
	if (sq->inflight)
		sq->inflight--;
	cq_post(sc, sq->cqid, sqid, cid, dw0, status);
	if (sq->deleting && sq->inflight == 0)
		nvme_delete_sq_finish(sc, sqid);
}

bool nvme_post_unreserved(struct nvme_sc *sc, uint16_t sqid, uint16_t cid, uint32_t dw0, uint16_t status)
{
	struct nvme_cq *cq = &sc->cq[sc->sq[sqid].cqid];
	if (!cq->exists || nvme_cq_free(cq) == 0)
		return false;
	cq_post(sc, sc->sq[sqid].cqid, sqid, cid, dw0, status);
	return true;
}

/* Raise the MSI-X vectors of the CQs that got entries (outside the lock). */
static void nvme_fire(struct nvme_sc *sc)
{
	uint16_t vec[NVME_MAX_IOQ + 1];
	uint64_t seen[(NVME_MAX_IOQ + 64) / 64] = { 0 };
	int n = 0;
	pthread_mutex_lock(&sc->mtx);
	for (uint32_t i = 0; i < sc->nirq; i++) {
		struct nvme_cq *cq = &sc->cq[sc->irq_list[i]];
		cq->irq_queued = false;
		if (!cq->exists || !cq->ien || cq->iv >= sc->nvec || (seen[cq->iv / 64] & (1ull << (cq->iv % 64))))
			continue;
		seen[cq->iv / 64] |= 1ull << (cq->iv % 64);
		vec[n++] = cq->iv;
	}
	sc->nirq = 0;
	pthread_mutex_unlock(&sc->mtx);
	for (int i = 0; i < n; i++)
		pci_generate_msix(sc->pi, vec[i]);
}

static void nvme_batch_done(void *arg)
{
	nvme_fire(arg);
}

/* ---- events ---- */

void nvme_queue_event(struct nvme_sc *sc, uint8_t type, uint8_t info, uint8_t lid)
{
	for (uint32_t i = 0; i < sc->nevents; i++)
		if (sc->events[i].type == type && sc->events[i].info == info)
			return;   /* already waiting */
	if (sc->nevents < NVME_MAX_EVENTS) {
		sc->events[sc->nevents].type = type;
		sc->events[sc->nevents].info = info;
		sc->events[sc->nevents].lid = lid;
		sc->nevents++;
	}
	nvme_aen_deliver(sc);
}

/* ---- data pointers (PRP) ---- */

static uint16_t prp_add(struct nvme_sc *sc, uint64_t gpa, uint64_t len, struct iovec *iov, uint64_t *gpas, int *niov)
{
	void *p = vm_map_gpa(sc->ctx, gpa, len);
	if (!p)
		return NVME_DATA_XFER_ERROR;
	int n = *niov;
	if (n > 0 && gpas[n - 1] + iov[n - 1].iov_len == gpa && (uint8_t *)iov[n - 1].iov_base + iov[n - 1].iov_len == p) {
		iov[n - 1].iov_len += len;
		return NVME_OK;
	}
	if (n >= (int)NVME_MAX_IOV)
		return NVME_DATA_XFER_ERROR;
	iov[n].iov_base = p;
	iov[n].iov_len = len;
	gpas[n] = gpa;
	*niov = n + 1;
	return NVME_OK;
}

/*
 * PRP1 holds the first (possibly offset, dword-aligned) page; PRP2 the
 * second page, or for more than two pages a PRP list whose entries are
 * page addresses and whose last entry per list page points to the next
 * list page.  Every entry is checked; nothing is dereferenced outside RAM.
 */
uint16_t nvme_map_prp(struct nvme_sc *sc, uint64_t prp1, uint64_t prp2, uint64_t len, struct iovec *iov,
                      uint64_t *gpa, int *niov)
{
	*niov = 0;
	if (len == 0)
		return NVME_OK;
	if (len > NVME_MAX_XFER)
		return NVME_INVALID_FIELD;
	if (prp1 & 3)
		return NVME_PRP_OFFSET_INVALID;
	uint64_t first = NVME_PAGE - (prp1 & (NVME_PAGE - 1));
	if (first > len)
		first = len;
	uint16_t st = prp_add(sc, prp1, first, iov, gpa, niov);
	if (st)
		return st;
	len -= first;
	if (len == 0)
		return NVME_OK;
	if (len <= NVME_PAGE) {
		if (prp2 & (NVME_PAGE - 1))
			return NVME_PRP_OFFSET_INVALID;
		return prp_add(sc, prp2, len, iov, gpa, niov);
	}
	uint64_t list = prp2;
	if (list & 7)
		return NVME_PRP_OFFSET_INVALID;
	while (len > 0) {
		uint32_t nent = (NVME_PAGE - (uint32_t)(list & (NVME_PAGE - 1))) / 8;
		const uint8_t *ents = vm_map_gpa(sc->ctx, list, (size_t)nent * 8);
		if (!ents)
			return NVME_DATA_XFER_ERROR;
		uint64_t next = 0;
		for (uint32_t i = 0; i < nent && len > 0; i++) {
			uint64_t e;
			memcpy(&e, ents + 8 * i, 8);   /* read once: the guest may change it */
			if (i == nent - 1 && len > NVME_PAGE) {
				next = e;
				break;
			}
			if (e & (NVME_PAGE - 1))
				return NVME_PRP_OFFSET_INVALID;
			uint64_t c = len < NVME_PAGE ? len : NVME_PAGE;
			if ((st = prp_add(sc, e, c, iov, gpa, niov)))
				return st;
			len -= c;
		}
		if (len == 0)
			break;
		if (next & (NVME_PAGE - 1))
			return NVME_PRP_OFFSET_INVALID;
		list = next;
	}
	return NVME_OK;
}

static uint16_t cmd_xfer_check(const struct nvme_cmd *cmd)
{
	/* PSDT: PRPs only (SGLS = 0). */
	return (cmd->cdw0 >> 14) & 3 ? NVME_INVALID_FIELD : NVME_OK;
}

uint16_t nvme_data_out(struct nvme_sc *sc, const struct nvme_cmd *cmd, const void *buf, size_t len, size_t xfer)
{
	struct iovec iov[NVME_MAX_IOV];
	uint64_t gpa[NVME_MAX_IOV];
	int n;
	uint16_t st = cmd_xfer_check(cmd);
	if (!st)
		st = nvme_map_prp(sc, cmd->prp1, cmd->prp2, xfer, iov, gpa, &n);
	if (st)
		return st;
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		size_t c = iov[i].iov_len, d = off < len ? (len - off < c ? len - off : c) : 0;
		memcpy(iov[i].iov_base, (const uint8_t *)buf + off, d);
		memset((uint8_t *)iov[i].iov_base + d, 0, c - d);
		off += c;
		vm_mark_dirty(sc->ctx, gpa[i], c);
	}
	return NVME_OK;
}

uint16_t nvme_data_in(struct nvme_sc *sc, const struct nvme_cmd *cmd, void *buf, size_t len)
{
	struct iovec iov[NVME_MAX_IOV];
	uint64_t gpa[NVME_MAX_IOV];
	int n;
	uint16_t st = cmd_xfer_check(cmd);
	if (!st)
		st = nvme_map_prp(sc, cmd->prp1, cmd->prp2, len, iov, gpa, &n);
	if (st)
		return st;
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		memcpy((uint8_t *)buf + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	return NVME_OK;
}

/* ---- I/O commands ---- */

static struct nvme_ioreq *io_get(struct nvme_sc *sc)
{
	struct nvme_ioreq *io = sc->free_io;
	if (!io)
		return NULL;
	sc->free_io = io->next;
	if (sc->io_busy++ == 0)
		sc->busy_since = nvme_now_ns();
	return io;
}

static void io_put(struct nvme_sc *sc, struct nvme_ioreq *io)
{
	io->next = sc->free_io;
	sc->free_io = io;
	if (--sc->io_busy == 0)
		sc->busy_ns += nvme_now_ns() - sc->busy_since;
}

static uint16_t errno_status(struct nvme_sc *sc, uint8_t opc, int err)
{
	if (!sc->ioerr_logged) {
		sc->ioerr_logged = true;
		log_warn("%s: I/O error: %s (reported to the guest; further errors not logged)", sc->name, strerror(err));
	}
	if (err == ENOSPC)
		return NVME_CAPACITY_EXCEEDED;
	if (err == EROFS)
		return NVME_NS_WRITE_PROTECTED;
	switch (opc) {
	case NVM_READ:
		return NVME_UNRECOVERED_READ;
	case NVM_WRITE:
	case NVM_WRITE_ZEROES:
		return NVME_WRITE_FAULT;
	default:
		return NVME_INTERNAL_ERROR;
	}
}

static void nvme_io_done(struct blockif_req *br, int err);

static void io_prepare(struct nvme_sc *sc, struct nvme_ioreq *io, uint16_t sqid, uint16_t cid, uint8_t opc)
{
	io->sc = sc;
	io->sqid = sqid;
	io->cid = cid;
	io->opc = opc;
	io->flush_after = io->flushing = false;
	io->dsm_n = io->dsm_next = 0;
	io->bytes = 0;
	io->niov = 0;
	io->br = (struct blockif_req){ .br_iov = io->iov, .br_callback = nvme_io_done, .br_param = io };
}

/* The next range to deallocate: 0 submitted, -1 none left, else an errno. */
static int dsm_next(struct nvme_sc *sc, struct nvme_ioreq *io)
{
	while (io->dsm_next < io->dsm_n) {
		uint64_t *r = io->dsm[io->dsm_next++];
		io->br = (struct blockif_req){ .br_offset = (off_t)(r[0] << sc->lbads), .br_resid = (size_t)(r[1] << sc->lbads),
		                               .br_callback = nvme_io_done, .br_param = io };
		int err = blockif_discard(sc->bc, &io->br);
		if (err != EOPNOTSUPP)
			return err;
	}
	return -1;
}

static void io_finish(struct nvme_sc *sc, struct nvme_ioreq *io, int err)
{
	uint16_t status = err ? errno_status(sc, io->opc, err) : NVME_OK;
	if (!err) {
		switch (io->opc) {
		case NVM_READ:
			sc->bytes_read += io->bytes;
			sc->read_cmds++;
			for (int i = 0; i < io->niov; i++)
				vm_mark_dirty(sc->ctx, io->gpa[i], io->glen[i]);
			break;
		case NVM_WRITE:
			sc->bytes_written += io->bytes;
			sc->write_cmds++;
			break;
		case NVM_WRITE_ZEROES:
			sc->write_cmds++;
			break;
		}
	}
	uint16_t sqid = io->sqid, cid = io->cid;
	io_put(sc, io);
	nvme_complete(sc, sqid, cid, 0, status);
}

/* blockif completion: main thread, an I/O thread, or a drain. */
static void nvme_io_done(struct blockif_req *br, int err)
{
	struct nvme_ioreq *io = br->br_param;
	struct nvme_sc *sc = io->sc;
	pthread_mutex_lock(&sc->mtx);
	if (!err && io->flush_after && !io->flushing) {
		io->flushing = true;   /* FUA, or the write cache is off: make it durable */
		io->br.br_iovcnt = 0;
		if ((err = blockif_flush(sc->bc, &io->br)) == 0)
			goto out;
	}
	if (!err && io->opc == NVM_DSM) {
		err = dsm_next(sc, io);
		if (err == 0)
			goto out;
		if (err < 0)
			err = 0;
	}
	io_finish(sc, io, err);
	/* A slot is free: queues that waited for one go on (not while draining). */
	nvme_process_blocked(sc, -1);
out:
	pthread_mutex_unlock(&sc->mtx);
}

static uint16_t lba_check(struct nvme_sc *sc, uint64_t slba, uint64_t nlb)
{
	return slba >= sc->nsze || nlb > sc->nsze - slba ? NVME_LBA_OUT_OF_RANGE : NVME_OK;
}

/* Submit io to blockif; on refusal finish it with the errno's status. */
static void io_submit(struct nvme_sc *sc, struct nvme_ioreq *io, int err)
{
	if (err)
		io_finish(sc, io, err);
}

static uint16_t io_rw(struct nvme_sc *sc, uint16_t sqid, uint16_t cid, const struct nvme_cmd *cmd, bool write)
{
	uint64_t slba = cmd->cdw10 | (uint64_t)cmd->cdw11 << 32;
	uint64_t nlb = (cmd->cdw12 & 0xffff) + 1u;
	uint16_t st = lba_check(sc, slba, nlb);
	if (st)
		return st;
	uint64_t len = nlb << sc->lbads;
	if (len > NVME_MAX_XFER)
		return NVME_INVALID_FIELD;   /* more than MDTS */
	if (write && sc->ro)
		return NVME_NS_WRITE_PROTECTED;
	if ((st = cmd_xfer_check(cmd)))
		return st;
	struct nvme_ioreq *io = io_get(sc);
	io_prepare(sc, io, sqid, cid, write ? NVM_WRITE : NVM_READ);
	st = nvme_map_prp(sc, cmd->prp1, cmd->prp2, len, io->iov, io->gpa, &io->niov);
	if (st) {
		io->niov = 0;
		io_put(sc, io);
		return st;
	}
	for (int i = 0; i < io->niov; i++)
		io->glen[i] = io->iov[i].iov_len;
	io->bytes = len;
	io->br.br_iovcnt = io->niov;
	io->br.br_offset = (off_t)(slba << sc->lbads);
	io->flush_after = write && sc->vwc_present && ((cmd->cdw12 & (1u << 30)) || !sc->wce);
	io_submit(sc, io, write ? blockif_write(sc->bc, &io->br) : blockif_read(sc->bc, &io->br));
	return ST_SUBMITTED;
}

static uint16_t io_write_zeroes(struct nvme_sc *sc, uint16_t sqid, uint16_t cid, const struct nvme_cmd *cmd)
{
	uint64_t slba = cmd->cdw10 | (uint64_t)cmd->cdw11 << 32;
	uint64_t nlb = (cmd->cdw12 & 0xffff) + 1u;
	uint16_t st = lba_check(sc, slba, nlb);
	if (st)
		return st;
	if (sc->ro)
		return NVME_NS_WRITE_PROTECTED;
	struct nvme_ioreq *io = io_get(sc);
	io_prepare(sc, io, sqid, cid, NVM_WRITE_ZEROES);
	io->br.br_offset = (off_t)(slba << sc->lbads);
	io->br.br_resid = (size_t)(nlb << sc->lbads);
	io->flush_after = sc->vwc_present && ((cmd->cdw12 & (1u << 30)) || !sc->wce);
	bool deac = (cmd->cdw12 & (1u << 25)) && sc->candelete;
	io_submit(sc, io, blockif_write_zeroes(sc->bc, &io->br, deac));
	return ST_SUBMITTED;
}

static uint16_t io_dsm(struct nvme_sc *sc, uint16_t sqid, uint16_t cid, const struct nvme_cmd *cmd)
{
	uint32_t nr = (cmd->cdw10 & 0xff) + 1;
	if (!(cmd->cdw11 & 4))
		return NVME_OK;   /* integral read/write hints only: nothing to do */
	if (sc->ro)
		return NVME_NS_WRITE_PROTECTED;
	uint8_t buf[NVME_DSM_MAX_RANGES * 16];
	uint16_t st = nvme_data_in(sc, cmd, buf, nr * 16);
	if (st)
		return st;
	struct nvme_ioreq *io = io_get(sc);
	if (!io->dsm && !(io->dsm = calloc(NVME_DSM_MAX_RANGES, sizeof(*io->dsm)))) {
		io_put(sc, io);
		return NVME_INTERNAL_ERROR;
	}
	io_prepare(sc, io, sqid, cid, NVM_DSM);
	for (uint32_t i = 0; i < nr; i++) {
		uint32_t nlb;
		uint64_t slba;
		memcpy(&nlb, buf + 16 * i + 4, 4);
		memcpy(&slba, buf + 16 * i + 8, 8);
		if (nlb == 0)
			continue;
		if ((st = lba_check(sc, slba, nlb))) {
			io_put(sc, io);
			return st;
		}
		io->dsm[io->dsm_n][0] = slba;
		io->dsm[io->dsm_n][1] = nlb;
		io->dsm_n++;
	}
	/* Deallocation is advisory: without host support it does nothing. */
	int err = sc->candelete ? dsm_next(sc, io) : -1;
	io_submit(sc, io, err < 0 ? 0 : err);
	if (err < 0)
		io_finish(sc, io, 0);
	return ST_SUBMITTED;
}

/* One I/O command: submitted (completes later) or completed here. */
static void nvme_io_cmd(struct nvme_sc *sc, uint16_t sqid, const struct nvme_cmd *cmd)
{
	uint8_t opc = cmd->cdw0 & 0xff;
	uint16_t cid = (uint16_t)(cmd->cdw0 >> 16);
	uint16_t st;
	bool known = opc == NVM_FLUSH || opc == NVM_WRITE || opc == NVM_READ || opc == NVM_WRITE_ZEROES ||
	             (opc == NVM_DSM && sc->dsm);
	if (!known)
		st = NVME_INVALID_OPCODE;
	else if (cmd->cdw0 & 0x300)
		st = NVME_INVALID_FIELD;   /* fused operations: FUSES = 0 */
	else if (cmd->nsid != NVME_NSID && !(opc == NVM_FLUSH && cmd->nsid == NVME_NSID_ALL))
		st = NVME_INVALID_NS;
	else {
		switch (opc) {
		case NVM_FLUSH: {
			if (!sc->vwc_present) {
				st = NVME_OK;   /* nothing volatile to write back */
				break;
			}
			struct nvme_ioreq *io = io_get(sc);
			io_prepare(sc, io, sqid, cid, NVM_FLUSH);
			io_submit(sc, io, blockif_flush(sc->bc, &io->br));
			return;
		}
		case NVM_WRITE:
		case NVM_READ:
			st = io_rw(sc, sqid, cid, cmd, opc == NVM_WRITE);
			break;
		case NVM_WRITE_ZEROES:
			st = io_write_zeroes(sc, sqid, cid, cmd);
			break;
		default:
			st = io_dsm(sc, sqid, cid, cmd);
			break;
		}
	}
	if (st != ST_SUBMITTED)
		nvme_complete(sc, sqid, cid, 0, st);
}

/* ---- submission queues ---- */

void nvme_process_sq(struct nvme_sc *sc, uint16_t sqid)
{
	struct nvme_sq *sq = &sc->sq[sqid];
	if (!sq->exists || sq->deleting || sq->busy || !nvme_running(sc))
		return;
	sq->busy = true;
	sq->blocked = false;
	/* Everything this doorbell made available goes to the kernel in one submission. */
	if (sqid != 0)
		blockif_plug(sc->bc);
	while (sq->exists && !sq->deleting && sq->head != sq->tail && nvme_running(sc)) {
		struct nvme_cq *cq = &sc->cq[sq->cqid];
		if (nvme_cq_free(cq) == 0 || (sqid != 0 && !sc->free_io)) {
			sq->blocked = true;   /* a CQ head doorbell or a finished request resumes it */
			break;
		}
		struct nvme_cmd cmd;
		memcpy(&cmd, sq->ring + (size_t)sq->head * sizeof(cmd), sizeof(cmd));
		sq->head = (sq->head + 1) % sq->size;
		cq->reserved++;
		sq->inflight++;
		if (sqid == 0)
			nvme_admin_cmd(sc, &cmd);
		else
			nvme_io_cmd(sc, sqid, &cmd);
	}
	if (sqid != 0)
		blockif_unplug(sc->bc);
	sq->busy = false;
}

void nvme_process_blocked(struct nvme_sc *sc, int cqid)
{
	if (!nvme_running(sc))
		return;
	for (uint32_t q = 0; q <= sc->maxq; q++)
		if (sc->sq[q].exists && sc->sq[q].blocked && (cqid < 0 || sc->sq[q].cqid == cqid))
			nvme_process_sq(sc, (uint16_t)q);
}

/* ---- controller registers ---- */

static void nvme_queues_clear(struct nvme_sc *sc)
{
	for (uint32_t q = 0; q <= sc->maxq; q++) {
		sc->sq[q] = (struct nvme_sq){ 0 };
		sc->cq[q] = (struct nvme_cq){ 0 };
	}
	sc->nirq = 0;
}

/* Controller level reset: queues deleted, AERs dropped, features to defaults. */
static void nvme_ctrl_reset(struct nvme_sc *sc)
{
	nvme_queues_clear(sc);
	sc->naer = sc->nevents = 0;
	sc->aen_masked = 0;
	sc->csts = 0;
	sc->intms = 0;
	nvme_features_reset(sc);
	nvme_update_intx(sc);
}

static void nvme_enable(struct nvme_sc *sc)
{
	uint32_t asqs = (sc->aqa & 0xfff) + 1, acqs = ((sc->aqa >> 16) & 0xfff) + 1;
	uint8_t *sring = NULL, *cring = NULL;
	const char *why = NULL;
	if (NVME_CC_CSS(sc->cc) != 0)
		why = "command set is not NVM";
	else if (NVME_CC_MPS(sc->cc) != 0)
		why = "memory page size is not 4 KiB";
	else if (NVME_CC_AMS(sc->cc) != 0)
		why = "arbitration is not round robin";
	else if (asqs < 2 || acqs < 2)
		why = "admin queue with fewer than 2 entries";
	else if (nvme_map_ring(sc, sc->asq, asqs, sizeof(struct nvme_cmd), &sring) ||
	         nvme_map_ring(sc, sc->acq, acqs, sizeof(struct nvme_cqe), &cring))
		why = "admin queue not in guest RAM";
	if (why) {
		log_debug("%s: enable refused (%s): controller fatal status", sc->name, why);
		sc->csts = NVME_CSTS_CFS;
		return;
	}
	sc->sq[0] = (struct nvme_sq){ .exists = true, .size = asqs, .gpa = sc->asq, .ring = sring };
	sc->cq[0] = (struct nvme_cq){ .exists = true, .ien = true, .phase = 1, .size = acqs, .gpa = sc->acq,
	                              .ring = cring, .nsq = 1 };
	sc->csts = NVME_CSTS_RDY;
}

static void nvme_sync_done(struct blockif_req *br, int err)
{
	struct nvme_sc *sc = br->br_param;
	if (err)
		log_warn("%s: flush at shutdown: %s", sc->name, strerror(err));
}

static void nvme_cc_write(struct nvme_sc *sc, uint32_t val)
{
	pthread_mutex_lock(&sc->cc_mtx);
	pthread_mutex_lock(&sc->mtx);
	uint32_t old = sc->cc;
	bool was = old & NVME_CC_EN, now = val & NVME_CC_EN;
	if (was && !now) {
		/* Reset: finish what blockif holds (its completions still post), then forget it all. */
		sc->cc = val;
		sc->resetting = true;
		pthread_mutex_unlock(&sc->mtx);
		blockif_drain(sc->bc);
		pthread_mutex_lock(&sc->mtx);
		nvme_ctrl_reset(sc);
		sc->resetting = false;
	} else if (!was && now) {
		sc->cc = val;
		sc->csts = 0;
		nvme_enable(sc);
	} else if (now) {
		/* Enabled: only the shutdown and I/O queue entry size fields change. */
		uint32_t m = (3u << 14) | (0xffu << 16);
		sc->cc = (old & ~m) | (val & m);
		if (NVME_CC_SHN(val) && !(sc->csts & NVME_CSTS_SHST_MASK)) {
			sc->csts |= 0x4;   /* shutdown processing occurring */
			sc->resetting = true;
			pthread_mutex_unlock(&sc->mtx);
			blockif_drain(sc->bc);
			if (sc->vwc_present && !sc->ro) {
				sc->sync_req = (struct blockif_req){ .br_callback = nvme_sync_done, .br_param = sc };
				if (blockif_flush(sc->bc, &sc->sync_req) == 0)
					blockif_drain(sc->bc);
			}
			pthread_mutex_lock(&sc->mtx);
			sc->resetting = false;
			sc->csts = (sc->csts & ~NVME_CSTS_SHST_MASK) | NVME_CSTS_SHST_DONE;
		}
	} else {
		sc->cc = val;
		if (NVME_CC_SHN(val))
			sc->csts = (sc->csts & ~NVME_CSTS_SHST_MASK) | NVME_CSTS_SHST_DONE;
	}
	pthread_mutex_unlock(&sc->mtx);
	pthread_mutex_unlock(&sc->cc_mtx);
	nvme_fire(sc);
}

static void nvme_doorbell(struct nvme_sc *sc, uint64_t off, uint32_t val)
{
	if (!nvme_running(sc))
		return;
	uint32_t idx = (uint32_t)((off - NVME_REG_DBS) / 4), qid = idx / 2;
	if (qid > sc->maxq) {
		nvme_queue_event(sc, NVME_AE_ERROR, NVME_AE_INFO_INVALID_DB, NVME_LOG_ERROR);
		return;
	}
	if (idx % 2 == 0) {
		struct nvme_sq *sq = &sc->sq[qid];
		if (!sq->exists || sq->deleting) {
			nvme_queue_event(sc, NVME_AE_ERROR, NVME_AE_INFO_INVALID_DB, NVME_LOG_ERROR);
			return;
		}
		if (val >= sq->size) {
			nvme_queue_event(sc, NVME_AE_ERROR, NVME_AE_INFO_INVALID_DB_VALUE, NVME_LOG_ERROR);
			return;
		}
		sq->tail = val;
		nvme_process_sq(sc, (uint16_t)qid);
		return;
	}
	struct nvme_cq *cq = &sc->cq[qid];
	if (!cq->exists) {
		nvme_queue_event(sc, NVME_AE_ERROR, NVME_AE_INFO_INVALID_DB, NVME_LOG_ERROR);
		return;
	}
	/* The new head may only consume entries the controller posted. */
	if (val >= cq->size || (val + cq->size - cq->head) % cq->size > cq_used(cq)) {
		nvme_queue_event(sc, NVME_AE_ERROR, NVME_AE_INFO_INVALID_DB_VALUE, NVME_LOG_ERROR);
		return;
	}
	cq->head = val;
	nvme_update_intx(sc);
	nvme_process_blocked(sc, (int)qid);
	if (qid == 0)
		nvme_aen_deliver(sc);
}

static uint32_t nvme_reg_read32(struct nvme_sc *sc, uint64_t off)
{
	switch (off) {
	case NVME_REG_CAP: return (uint32_t)sc->cap;
	case NVME_REG_CAP + 4: return (uint32_t)(sc->cap >> 32);
	case NVME_REG_VS: return 0x00010400;
	case NVME_REG_INTMS:
	case NVME_REG_INTMC: return sc->intms;
	case NVME_REG_CC: return sc->cc;
	case NVME_REG_CSTS: return sc->csts;
	case NVME_REG_AQA: return sc->aqa;
	case NVME_REG_ASQ: return (uint32_t)sc->asq;
	case NVME_REG_ASQ + 4: return (uint32_t)(sc->asq >> 32);
	case NVME_REG_ACQ: return (uint32_t)sc->acq;
	case NVME_REG_ACQ + 4: return (uint32_t)(sc->acq >> 32);
	default: return 0;   /* CMB, boot partitions, PMR: not implemented; doorbells read 0 */
	}
}

static uint64_t nvme_barread(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size)
{
	(void)vcpu;
	struct nvme_sc *sc = pi->pi_arg;
	if (baridx != 0)
		return 0;
	pthread_mutex_lock(&sc->mtx);
	uint64_t a = off & ~3ull, v = nvme_reg_read32(sc, a);
	if (size == 8)
		v |= (uint64_t)nvme_reg_read32(sc, a + 4) << 32;
	pthread_mutex_unlock(&sc->mtx);
	if (size == 8)
		return (off & 3) ? 0 : v;
	if ((off & 3) + (uint64_t)size > 4)
		return 0;
	v >>= 8 * (off & 3);
	return size == 4 ? v : v & ((1ull << (8 * size)) - 1);
}

static void nvme_reg_write32(struct nvme_sc *sc, uint64_t off, uint32_t val)
{
	if (off == NVME_REG_CC) {
		nvme_cc_write(sc, val);
		return;
	}
	pthread_mutex_lock(&sc->mtx);
	bool disabled = !(sc->cc & NVME_CC_EN);
	if (off >= NVME_REG_DBS) {
		nvme_doorbell(sc, off, val);
	} else {
		switch (off) {
		case NVME_REG_INTMS:
			sc->intms |= val;
			nvme_update_intx(sc);
			break;
		case NVME_REG_INTMC:
			sc->intms &= ~val;
			nvme_update_intx(sc);
			break;
		case NVME_REG_AQA:
			if (disabled)
				sc->aqa = val & 0x0fff0fff;
			break;
		case NVME_REG_ASQ:
			if (disabled)
				sc->asq = (sc->asq & ~0xffffffffull) | (val & ~0xfffu);
			break;
		case NVME_REG_ASQ + 4:
			if (disabled)
				sc->asq = (sc->asq & 0xffffffffull) | (uint64_t)val << 32;
			break;
		case NVME_REG_ACQ:
			if (disabled)
				sc->acq = (sc->acq & ~0xffffffffull) | (val & ~0xfffu);
			break;
		case NVME_REG_ACQ + 4:
			if (disabled)
				sc->acq = (sc->acq & 0xffffffffull) | (uint64_t)val << 32;
			break;
		default:
			break;   /* read-only, NSSR (no subsystem reset), CMB/PMR controls */
		}
	}
	pthread_mutex_unlock(&sc->mtx);
	nvme_fire(sc);
}

static void nvme_barwrite(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size,
                          uint64_t val)
{
	(void)vcpu;
	struct nvme_sc *sc = pi->pi_arg;
	if (baridx != 0 || (off & 3))
		return;
	if (size == 8) {
		nvme_reg_write32(sc, off, (uint32_t)val);
		nvme_reg_write32(sc, off + 4, (uint32_t)(val >> 32));
	} else if (size == 4) {
		nvme_reg_write32(sc, off, (uint32_t)val);
	}
}

/* ---- PCI config space: the power management capability's PMCSR ---- */

static int nvme_pm_capoff(struct pci_devinst *pi)
{
	for (int p = pci_get_cfgdata8(pi, PCIR_CAP_PTR), n = 0; p && n < 48; p = pci_get_cfgdata8(pi, p + 1), n++)
		if (pci_get_cfgdata8(pi, p) == 0x01)
			return p;
	return 0;
}

static int nvme_cfgwrite(struct pci_devinst *pi, int off, int bytes, uint32_t val)
{
	int pm = nvme_pm_capoff(pi);
	if (!pm || off != pm + 4 || bytes < 1)
		return 1;
	/* D0 and D3hot (NoSoftReset: the controller keeps its state). */
	uint32_t ps = val & 3;
	if (ps == 0 || ps == 3)
		pci_set_cfgdata16(pi, pm + 4, (uint16_t)((pci_get_cfgdata16(pi, pm + 4) & ~3u) | ps));
	return 0;
}

/* ---- configuration ---- */

static const char *const nvme_options[] = {
	"path", "maxq", "qsz", "ioslots", "sectsz", "ser", "eui64", "dsm", "ro", "nocache", "direct", "format",
	"l2cache", NULL,
};

struct nvme_opts {
	const char *path, *ser, *format;
	uint64_t maxq, qsz, ioslots, sectsz, eui64, l2cache;
	bool have_eui64, ro, nocache, direct;
	int dsm;   /* 0 auto, 1 enable, 2 disable */
};

/* The VM's vCPU count as core/main.c computes it (default I/O queue count). */
static uint64_t nvme_ncpus(void)
{
	uint64_t s = 1, c = 1, t = 1, n;
	const char *v;
	bool topo = false;
	if ((v = get_config_value("sockets")) && !config_parse_uint(v, &s))
		topo = true;
	if ((v = get_config_value("cores")) && !config_parse_uint(v, &c))
		topo = true;
	if ((v = get_config_value("threads")) && !config_parse_uint(v, &t))
		topo = true;
	if (!(v = get_config_value("cpus")) || config_parse_uint(v, &n))
		n = topo ? s * c * t : 1;
	/* At least two: UEFI's NVMe driver (edk2 NvmExpressDxe, in OVMF) creates
	 * a synchronous and an asynchronous I/O queue pair and gives up on a
	 * controller that refuses the second. */
	return n < 2 ? 2 : n > NVME_MAX_IOQ ? NVME_MAX_IOQ : n;
}

/* Every option of one nvme function; at -s time the image must exist too. */
static int nvme_read_opts(const char *cfgpath, bool parse_time, struct nvme_opts *o, char *err, size_t errlen)
{
	char key[160];
	const char *v;
#define KEY(k) (snprintf(key, sizeof(key), "%s.%s", cfgpath, (k)), key)
#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)
	*o = (struct nvme_opts){ .maxq = nvme_ncpus(), .qsz = NVME_DEFAULT_QSZ, .ioslots = NVME_DEFAULT_IOSLOTS };
	o->path = get_config_value(KEY("path"));
	if (!o->path || !*o->path)
		BAD("config: %s: nvme needs a disk image (-s N,nvme,PATH)", key);
	struct stat st;
	if (parse_time && !strstr(o->path, "%(") && stat(o->path, &st))
		BAD("config: %s: %s: %s", key, o->path, strerror(errno));
	static const struct { const char *k; uint64_t lo, hi; const char *what; } nums[] = {
		{ "maxq", 1, NVME_MAX_IOQ, "a number of I/O queue pairs" },
		{ "qsz", 2, NVME_MAX_QSZ, "a queue size" },
		{ "ioslots", 1, NVME_MAX_IOSLOTS, "a number of I/O slots" },
	};
	uint64_t *dst[] = { &o->maxq, &o->qsz, &o->ioslots };
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		if (!(v = get_config_value(KEY(nums[i].k))))
			continue;
		if (config_parse_uint(v, dst[i]) || *dst[i] < nums[i].lo || *dst[i] > nums[i].hi)
			BAD("config: %s: bad value '%s' (expected %s in %llu..%llu)", key, v, nums[i].what,
			    (unsigned long long)nums[i].lo, (unsigned long long)nums[i].hi);
	}
	if ((v = get_config_value(KEY("sectsz"))) &&
	    (config_parse_uint(v, &o->sectsz) || (o->sectsz != 512 && o->sectsz != 4096)))
		BAD("config: %s: bad value '%s' (expected 512 or 4096)", key, v);
	if ((o->ser = get_config_value(KEY("ser")))) {
		if (!*o->ser || strlen(o->ser) > 20)
			BAD("config: %s: bad value '%s' (expected 1 to 20 characters)", key, o->ser);
		for (const char *p = o->ser; *p; p++)
			if (*p < 0x20 || *p > 0x7e)
				BAD("config: %s: bad value (expected printable ASCII)", key);
	}
	if ((v = get_config_value(KEY("eui64")))) {
		if (config_parse_uint(v, &o->eui64))
			BAD("config: %s: bad value '%s' (expected a 64-bit number, e.g. 0x0123456789abcdef)", key, v);
		o->have_eui64 = true;
	}
	if ((v = get_config_value(KEY("dsm")))) {
		if (!strcmp(v, "auto"))
			o->dsm = 0;
		else if (!strcmp(v, "enable"))
			o->dsm = 1;
		else if (!strcmp(v, "disable"))
			o->dsm = 2;
		else
			BAD("config: %s: bad value '%s' (expected auto, enable or disable)", key, v);
	}
	static const char *const bools[] = { "ro", "nocache", "direct" };
	bool *bdst[] = { &o->ro, &o->nocache, &o->direct };
	for (size_t i = 0; i < 3; i++)
		if ((v = get_config_value(KEY(bools[i]))) && config_parse_bool(v, bdst[i]))
			BAD("config: %s: bad value '%s' (expected true or false)", key, v);
	if ((o->format = get_config_value(KEY("format"))) && strcmp(o->format, "raw") && strcmp(o->format, "qcow2"))
		BAD("config: %s: bad value '%s' (expected raw or qcow2)", key, o->format);
	if ((v = get_config_value(KEY("l2cache"))) && config_parse_size(v, &o->l2cache, 1))
		BAD("config: %s: bad value '%s' (expected a size with K/M/G suffix)", key, v);
	return 0;
#undef BAD
#undef KEY
}

/* bhyve syntax: the first bare token is the image; options are checked now. */
static int nvme_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	struct nvme_opts o;
	if (pci_parse_options(cfgpath, opts, "path", err, errlen))
		return -1;
	return nvme_read_opts(cfgpath, true, &o, err, errlen);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	for (const uint8_t *b = p; n--; b++)
		h = (h ^ *b) * 0x100000001b3ull;
	return h;
}

static void put_be64(uint8_t *d, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		d[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void pad_copy(char *dst, size_t n, const char *src)
{
	size_t l = strlen(src);
	memset(dst, ' ', n);
	memcpy(dst, src, l < n ? l : n);
	dst[n] = '\0';
}

/*
 * Identifiers from the VM name and the PCI address: the same on every start,
 * different for every VM and device.  EUI-64: 02:68:79 ("hy", the
 * locally administered bit set) and 40 bits of hash; NGUID: 128 bits.
 */
static void nvme_identity(struct nvme_sc *sc, const struct nvme_opts *o)
{
	const char *vm = get_config_value("name");
	uint8_t where[3] = { sc->pi->pi_bus, sc->pi->pi_slot, sc->pi->pi_func };
	uint64_t h = fnv1a(0xcbf29ce484222325ull, vm ? vm : "", vm ? strlen(vm) + 1 : 1);
	uint64_t hv = h;
	h = fnv1a(h, where, sizeof(where));
	if (o->have_eui64)
		put_be64(sc->eui64, o->eui64);
	else
		put_be64(sc->eui64, 0x0268790000000000ull | (h & 0xffffffffffull));
	put_be64(sc->nguid, fnv1a(h, "nguid-hi", 8));
	put_be64(sc->nguid + 8, fnv1a(h, "nguid-lo", 8));
	char ser[32];
	if (o->ser)
		snprintf(ser, sizeof(ser), "%s", o->ser);
	else
		snprintf(ser, sizeof(ser), "HYVE-%08X-%02u%u", (unsigned)(hv >> 32), sc->pi->pi_slot, sc->pi->pi_func);
	pad_copy(sc->serial, 20, ser);
	pad_copy(sc->model, 40, "hyve NVMe");
	pad_copy(sc->fwrev, 8, "1.0");
	snprintf(sc->subnqn, sizeof(sc->subnqn), "nqn.2024-01.org.hyve:nvme:%016llx:%u.%u.%u", (unsigned long long)h,
	         sc->pi->pi_bus, sc->pi->pi_slot, sc->pi->pi_func);
}

static int nvme_init(struct pci_devinst *pi, const char *cfgpath)
{
	struct nvme_opts o;
	char err[512];
	if (nvme_read_opts(cfgpath, false, &o, err, sizeof(err)))
		fatal("%s", err);
	struct nvme_sc *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -1;
	sc->pi = pi;
	sc->ctx = pi->pi_vmctx;
	snprintf(sc->name, sizeof(sc->name), "%s", pi->pi_name);
	pthread_mutex_init(&sc->mtx, NULL);
	pthread_mutex_init(&sc->cc_mtx, NULL);
	sc->maxq = (uint32_t)o.maxq;
	sc->qsz = (uint32_t)o.qsz;
	sc->ioslots = (uint32_t)o.ioslots;
	sc->nvec = (int)sc->maxq + 1;

	struct blockif_opts bo = { .name = pi->pi_name, .ro = o.ro, .nocache = o.nocache, .sync = o.direct,
	                           .sectsz = (uint32_t)o.sectsz, .depth = sc->ioslots, .format = o.format,
	                           .l2cache = o.l2cache, .batch_done = nvme_batch_done, .batch_arg = sc };
	sc->bc = blockif_open(o.path, &bo, err, sizeof(err));
	if (!sc->bc)
		fatal("config: %s.path: %s", cfgpath, err);
	sc->sectsz = blockif_sectsz(sc->bc);
	if (sc->sectsz != 512 && sc->sectsz != 4096 && !o.sectsz)
		fatal("config: %s.path: %s: %u-byte sectors (the nvme model has 512 or 4096: add sectsz=)", cfgpath,
		      o.path, sc->sectsz);
	while ((1u << sc->lbads) < sc->sectsz)
		sc->lbads++;
	sc->nsze = (uint64_t)blockif_size(sc->bc) >> sc->lbads;
	if (sc->nsze == 0)
		fatal("config: %s.path: %s is smaller than one %u-byte sector", cfgpath, o.path, sc->sectsz);
	sc->psect_lbas = blockif_psectsz(sc->bc) / sc->sectsz;
	if (sc->psect_lbas == 0 || sc->psect_lbas > 65536)
		sc->psect_lbas = 1;
	sc->ro = blockif_is_ro(sc->bc);
	sc->candelete = blockif_candelete(sc->bc);
	sc->dsm = o.dsm == 1 || (o.dsm == 0 && sc->candelete);
	sc->vwc_present = !o.direct;
	nvme_identity(sc, &o);
	sc->cap = (uint64_t)(sc->qsz - 1) |   /* MQES */
	          1ull << 16 |                /* CQR: contiguous queues */
	          15ull << 24 |               /* TO: 7.5 s */
	          1ull << 37;                 /* CSS: NVM command set */

	sc->sq = calloc(sc->maxq + 1, sizeof(*sc->sq));
	sc->cq = calloc(sc->maxq + 1, sizeof(*sc->cq));
	sc->irq_list = calloc(sc->maxq + 1, sizeof(*sc->irq_list));
	sc->ivc_cd = calloc((size_t)sc->nvec, 1);
	sc->ioreqs = calloc(sc->ioslots, sizeof(*sc->ioreqs));
	if (!sc->sq || !sc->cq || !sc->irq_list || !sc->ivc_cd || !sc->ioreqs)
		fatal("%s: out of memory", pi->pi_name);
	for (uint32_t i = 0; i < sc->ioslots; i++) {
		sc->ioreqs[i].sc = sc;
		sc->ioreqs[i].next = sc->free_io;
		sc->free_io = &sc->ioreqs[i];
	}
	nvme_features_reset(sc);
	sc->poweron_start_ns = nvme_now_ns();
	sc->power_cycles = 1;
	pi->pi_arg = sc;

	pci_set_cfgdata16(pi, PCIR_VENDOR, NVME_VENDOR);
	pci_set_cfgdata16(pi, PCIR_DEVICE, NVME_DEVICE);
	pci_set_cfgdata16(pi, PCIR_SUBVEND, NVME_VENDOR);
	pci_set_cfgdata16(pi, PCIR_SUBDEV, NVME_DEVICE);
	pci_set_cfgdata8(pi, PCIR_CLASS, 0x01);      /* mass storage */
	pci_set_cfgdata8(pi, PCIR_SUBCLASS, 0x08);   /* non-volatile memory */
	pci_set_cfgdata8(pi, PCIR_PROGIF, 0x02);     /* NVM Express */
	uint64_t bar0 = 0x4000;
	while (bar0 < NVME_REG_DBS + 8ull * (sc->maxq + 1))
		bar0 <<= 1;
	/* PM 1.2, D3hot without soft reset. */
	const uint8_t pmcap[8] = { 0x01, 0, 0x03, 0x00, 0x08, 0x00, 0, 0 };
	if (pci_emul_alloc_bar(pi, 0, PCIBAR_MEM64, bar0) || pci_emul_add_capability(pi, pmcap, sizeof(pmcap)) < 0 ||
	    pci_emul_add_msixcap(pi, sc->nvec, NVME_MSIX_BAR) || pci_emul_add_pciecap(pi, 0x9 /* RCiEP */) ||
	    pci_lintr_request(pi))
		return -1;
	log_debug("%s: %s: %s, %llu %u-byte blocks, %u I/O queue pairs of %u, %u slots, %s%s%s, serial %.20s", pi->pi_name,
	          o.path, blockif_format(sc->bc), (unsigned long long)sc->nsze, sc->sectsz, sc->maxq, sc->qsz,
	          sc->ioslots, sc->ro ? "read-only" : "read-write", sc->dsm ? ", deallocate" : "",
	          sc->vwc_present ? ", write cache" : "", sc->serial);
	return 0;
}

/* ---- checkpoint ---- */

#define NVME_SNAPSHOT_VERSION 1

static bool nvme_busy(const struct nvme_sc *sc)
{
	if (sc->io_busy)
		return true;
	for (uint32_t q = 0; q <= sc->maxq; q++)
		if (sc->sq[q].deleting || (q > 0 && sc->sq[q].inflight))
			return true;
	return false;
}

static int nvme_snapshot(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen)
{
	struct nvme_sc *sc = pi->pi_arg;
	pthread_mutex_lock(&sc->mtx);
	if (nvme_busy(sc)) {
		pthread_mutex_unlock(&sc->mtx);
		snprintf(err, errlen, "commands still in flight (not quiesced)");
		return -1;
	}
	sb_u32(out, sc->maxq);
	sb_u32(out, sc->qsz);
	sb_u32(out, sc->sectsz);
	sb_u64(out, sc->nsze);
	sb_u32(out, sc->cc);
	sb_u32(out, sc->csts);
	sb_u32(out, sc->aqa);
	sb_u32(out, sc->intms);
	sb_u64(out, sc->asq);
	sb_u64(out, sc->acq);
	sb_u32(out, sc->feat_arb);
	sb_u32(out, sc->feat_pm);
	sb_u32(out, sc->feat_errrec);
	sb_u32(out, sc->feat_ic);
	sb_u32(out, sc->feat_wan);
	sb_u32(out, sc->feat_aec);
	sb_u16(out, sc->tmpth_over);
	sb_u16(out, sc->tmpth_under);
	sb_bool(out, sc->wce);
	sb_put(out, sc->ivc_cd, (size_t)sc->nvec);
	sb_u32(out, sc->naer);
	for (uint32_t i = 0; i < sc->naer; i++)
		sb_u16(out, sc->aer_cid[i]);
	sb_u32(out, sc->nevents);
	for (uint32_t i = 0; i < sc->nevents; i++) {
		sb_u8(out, sc->events[i].type);
		sb_u8(out, sc->events[i].info);
		sb_u8(out, sc->events[i].lid);
	}
	sb_u8(out, sc->aen_masked);
	sb_u8(out, sc->smart_warning);
	sb_u64(out, sc->bytes_read);
	sb_u64(out, sc->bytes_written);
	sb_u64(out, sc->read_cmds);
	sb_u64(out, sc->write_cmds);
	sb_u64(out, sc->busy_ns);
	sb_u64(out, sc->poweron_base_s + (nvme_now_ns() - sc->poweron_start_ns) / 1000000000ull);
	sb_u32(out, sc->power_cycles);
	for (uint32_t q = 0; q <= sc->maxq; q++) {
		const struct nvme_sq *sq = &sc->sq[q];
		const struct nvme_cq *cq = &sc->cq[q];
		sb_bool(out, sq->exists);
		if (sq->exists) {
			sb_u64(out, sq->gpa);
			sb_u32(out, sq->size);
			sb_u32(out, sq->head);
			sb_u32(out, sq->tail);
			sb_u16(out, sq->cqid);
			sb_u8(out, sq->qprio);
		}
		sb_bool(out, cq->exists);
		if (cq->exists) {
			sb_u64(out, cq->gpa);
			sb_u32(out, cq->size);
			sb_u32(out, cq->head);
			sb_u32(out, cq->tail);
			sb_u8(out, cq->phase);
			sb_bool(out, cq->ien);
			sb_u16(out, cq->iv);
		}
	}
	pthread_mutex_unlock(&sc->mtx);
	return 0;
}

/* Everything a checkpoint holds, read and checked before any of it is applied. */
struct nvme_saved {
	uint32_t cc, csts, aqa, intms, arb, pm, errrec, ic, wan, aec, naer, nevents, power_cycles;
	uint64_t asq, acq, bytes_read, bytes_written, read_cmds, write_cmds, busy_ns, poweron_s;
	uint16_t over, under, aer_cid[NVME_AERL + 1];
	uint8_t masked, warning;
	bool wce;
	struct { uint8_t type, info, lid; } events[NVME_MAX_EVENTS];
};

static int nvme_restore(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	struct nvme_sc *sc = pi->pi_arg;
#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto fail; } while (0)
	struct nvme_sq *sqs = calloc(sc->maxq + 1, sizeof(*sqs));
	struct nvme_cq *cqs = calloc(sc->maxq + 1, sizeof(*cqs));
	uint8_t *cd = calloc((size_t)sc->nvec, 1);
	struct nvme_saved s = { 0 };
	if (!sqs || !cqs || !cd) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (version != NVME_SNAPSHOT_VERSION)
		FAIL("NVMe state version %u (this hyve reads %u)", version, NVME_SNAPSHOT_VERSION);
	uint32_t maxq = sr_u32(in), qsz = sr_u32(in), sectsz = sr_u32(in);
	uint64_t nsze = sr_u64(in);
	if (!sr_ok(in))
		FAIL("NVMe state truncated");
	if (maxq != sc->maxq || qsz != sc->qsz || sectsz != sc->sectsz || nsze != sc->nsze)
		FAIL("saved controller has maxq=%u qsz=%u and %llu %u-byte blocks; the configured one maxq=%u qsz=%u "
		     "and %llu %u-byte blocks", maxq, qsz, (unsigned long long)nsze, sectsz, sc->maxq, sc->qsz,
		     (unsigned long long)sc->nsze, sc->sectsz);
	s.cc = sr_u32(in);
	s.csts = sr_u32(in);
	s.aqa = sr_u32(in);
	s.intms = sr_u32(in);
	s.asq = sr_u64(in);
	s.acq = sr_u64(in);
	s.arb = sr_u32(in);
	s.pm = sr_u32(in);
	s.errrec = sr_u32(in);
	s.ic = sr_u32(in);
	s.wan = sr_u32(in);
	s.aec = sr_u32(in);
	s.over = sr_u16(in);
	s.under = sr_u16(in);
	s.wce = sr_bool(in);
	sr_get(in, cd, (size_t)sc->nvec);
	s.naer = sr_u32(in);
	if (s.naer > NVME_AERL + 1)
		FAIL("%u asynchronous event requests outstanding (at most %u)", s.naer, NVME_AERL + 1);
	for (uint32_t i = 0; i < s.naer; i++)
		s.aer_cid[i] = sr_u16(in);
	s.nevents = sr_u32(in);
	if (s.nevents > NVME_MAX_EVENTS)
		FAIL("%u queued events (at most %u)", s.nevents, NVME_MAX_EVENTS);
	for (uint32_t i = 0; i < s.nevents; i++) {
		s.events[i].type = sr_u8(in);
		s.events[i].info = sr_u8(in);
		s.events[i].lid = sr_u8(in);
		if (s.events[i].type > 7)
			FAIL("event type %u", s.events[i].type);
	}
	s.masked = sr_u8(in);
	s.warning = sr_u8(in);
	s.bytes_read = sr_u64(in);
	s.bytes_written = sr_u64(in);
	s.read_cmds = sr_u64(in);
	s.write_cmds = sr_u64(in);
	s.busy_ns = sr_u64(in);
	s.poweron_s = sr_u64(in);
	s.power_cycles = sr_u32(in);
	if (!sr_ok(in))
		FAIL("NVMe state truncated");
	bool enabled = s.csts & NVME_CSTS_RDY;
	if ((s.csts & ~(NVME_CSTS_RDY | NVME_CSTS_CFS | NVME_CSTS_SHST_MASK)) || (enabled && !(s.cc & NVME_CC_EN)) ||
	    (s.aqa & ~0x0fff0fffu) || ((s.asq | s.acq) & 0xfff))
		FAIL("controller registers are inconsistent (CC 0x%x CSTS 0x%x AQA 0x%x)", s.cc, s.csts, s.aqa);
	if ((s.pm & 0x1f) != 0 || (s.wce && !sc->vwc_present))
		FAIL("saved features do not fit this controller");
	for (int i = 0; i < sc->nvec; i++)
		if (cd[i] > 1)
			FAIL("interrupt vector configuration");
	for (uint32_t q = 0; q <= sc->maxq; q++) {
		struct nvme_sq *sq = &sqs[q];
		struct nvme_cq *cq = &cqs[q];
		uint32_t max = q == 0 ? NVME_MAX_AQ : sc->qsz;
		sq->exists = sr_bool(in);
		if (sq->exists) {
			sq->gpa = sr_u64(in);
			sq->size = sr_u32(in);
			sq->head = sr_u32(in);
			sq->tail = sr_u32(in);
			sq->cqid = sr_u16(in);
			sq->qprio = sr_u8(in);
		}
		cq->exists = sr_bool(in);
		if (cq->exists) {
			cq->gpa = sr_u64(in);
			cq->size = sr_u32(in);
			cq->head = sr_u32(in);
			cq->tail = sr_u32(in);
			cq->phase = sr_u8(in);
			cq->ien = sr_bool(in);
			cq->iv = sr_u16(in);
		}
		if (!sr_ok(in))
			FAIL("NVMe queue state truncated");
		if ((sq->exists || cq->exists) && !enabled)
			FAIL("queue %u exists on a disabled controller", q);
		if (q == 0 && enabled && (!sq->exists || !cq->exists || sq->gpa != s.asq || cq->gpa != s.acq ||
		                          sq->size != (s.aqa & 0xfff) + 1 || cq->size != ((s.aqa >> 16) & 0xfff) + 1 ||
		                          sq->cqid != 0))
			FAIL("admin queues do not match AQA/ASQ/ACQ");
		if (sq->exists && (sq->size < 2 || sq->size > max || sq->head >= sq->size || sq->tail >= sq->size ||
		                   (q > 0 && (sq->cqid == 0 || sq->cqid > sc->maxq)) ||
		                   nvme_map_ring(sc, sq->gpa, sq->size, sizeof(struct nvme_cmd), &sq->ring)))
			FAIL("submission queue %u: size %u head %u tail %u at 0x%llx does not fit", q, sq->size, sq->head,
			     sq->tail, (unsigned long long)sq->gpa);
		if (cq->exists && (cq->size < 2 || cq->size > max || cq->head >= cq->size || cq->tail >= cq->size ||
		                   cq->phase > 1 || cq->iv >= sc->nvec ||
		                   nvme_map_ring(sc, cq->gpa, cq->size, sizeof(struct nvme_cqe), &cq->ring)))
			FAIL("completion queue %u: size %u head %u tail %u at 0x%llx does not fit", q, cq->size, cq->head,
			     cq->tail, (unsigned long long)cq->gpa);
	}
	for (uint32_t q = 0; q <= sc->maxq; q++) {
		if (!sqs[q].exists)
			continue;
		if (!cqs[sqs[q].cqid].exists)
			FAIL("submission queue %u posts to completion queue %u, which does not exist", q, sqs[q].cqid);
		cqs[sqs[q].cqid].nsq++;
	}

	/* Valid: nothing of the old state may complete into the new one. */
	blockif_drain(sc->bc);
	pthread_mutex_lock(&sc->mtx);
	memcpy(sc->sq, sqs, (sc->maxq + 1) * sizeof(*sqs));
	memcpy(sc->cq, cqs, (sc->maxq + 1) * sizeof(*cqs));
	memcpy(sc->ivc_cd, cd, (size_t)sc->nvec);
	sc->nirq = 0;
	sc->cc = s.cc;
	sc->csts = s.csts;
	sc->aqa = s.aqa;
	sc->intms = s.intms;
	sc->asq = s.asq;
	sc->acq = s.acq;
	sc->feat_arb = s.arb;
	sc->feat_pm = s.pm;
	sc->feat_errrec = s.errrec & 0xffff;
	sc->feat_ic = s.ic & 0xffff;
	sc->feat_wan = s.wan & 1;
	sc->feat_aec = s.aec & 0xff;
	sc->tmpth_over = s.over;
	sc->tmpth_under = s.under;
	sc->wce = s.wce;
	sc->naer = s.naer;
	memcpy(sc->aer_cid, s.aer_cid, sizeof(s.aer_cid));
	sc->nevents = s.nevents;
	memcpy(sc->events, s.events, sizeof(s.events));
	sc->aen_masked = s.masked;
	sc->smart_warning = s.warning;
	sc->bytes_read = s.bytes_read;
	sc->bytes_written = s.bytes_written;
	sc->read_cmds = s.read_cmds;
	sc->write_cmds = s.write_cmds;
	sc->busy_ns = s.busy_ns;
	sc->poweron_base_s = s.poweron_s;
	sc->poweron_start_ns = nvme_now_ns();
	sc->power_cycles = s.power_cycles;
	sc->intx_level = pi->pi_lintr_asserted;   /* as the framework restored the line */
	nvme_update_intx(sc);
	pthread_mutex_unlock(&sc->mtx);
	free(sqs);
	free(cqs);
	free(cd);
	return 0;
fail:
	free(sqs);
	free(cqs);
	free(cd);
	return -1;
#undef FAIL
}

static void nvme_pause(struct pci_devinst *pi)
{
	struct nvme_sc *sc = pi->pi_arg;
	pthread_mutex_lock(&sc->mtx);
	sc->paused = true;
	pthread_mutex_unlock(&sc->mtx);
	blockif_drain(sc->bc);
}

static void nvme_resume(struct pci_devinst *pi)
{
	struct nvme_sc *sc = pi->pi_arg;
	pthread_mutex_lock(&sc->mtx);
	sc->paused = false;
	/* Entries the driver queued that were not fetched yet (or that a restored VM's old process saw). */
	for (uint32_t q = 0; q <= sc->maxq; q++)
		if (sc->sq[q].exists && sc->sq[q].head != sc->sq[q].tail)
			nvme_process_sq(sc, (uint16_t)q);
	if (nvme_running(sc))
		nvme_aen_deliver(sc);
	pthread_mutex_unlock(&sc->mtx);
	nvme_fire(sc);
}

static const struct pci_devemu pci_de_nvme = {
	.pe_emu = "nvme",
	.pe_help = "NVMe disk: PATH[,maxq=N][,qsz=N][,ioslots=N][,sectsz=512|4096][,ser=S][,eui64=N]"
	           "[,dsm=auto|enable|disable][,ro][,nocache][,direct][,format=raw|qcow2][,l2cache=BYTES]",
	.pe_options = nvme_options,
	.pe_legacy_config = nvme_legacy_config,
	.pe_init = nvme_init,
	.pe_cfgwrite = nvme_cfgwrite,
	.pe_barwrite = nvme_barwrite,
	.pe_barread = nvme_barread,
	.pe_snapshot_version = NVME_SNAPSHOT_VERSION,
	.pe_snapshot = nvme_snapshot,
	.pe_restore = nvme_restore,
	.pe_pause = nvme_pause,
	.pe_resume = nvme_resume,
};
PCI_EMUL_REGISTER(pci_de_nvme)
