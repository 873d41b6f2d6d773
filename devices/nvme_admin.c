/*
 * NVMe admin command set for devices/nvme.c: Identify (controller,
 * namespace, active namespace list, namespace identification descriptors),
 * Get/Set Features, Get Log Page (error information, SMART / health with
 * the controller's counters, firmware slot), I/O queue creation and
 * deletion, Abort, Asynchronous Event Request and Keep Alive.  Everything
 * runs under the controller lock from the admin submission queue.
 */
#include <stdio.h>
#include <string.h>

#include "../core/log.h"
#include "nvme_internal.h"
#include "pci_emul.h"

#define ADM_DELETE_SQ    0x00
#define ADM_CREATE_SQ    0x01
#define ADM_GET_LOG_PAGE 0x02
#define ADM_DELETE_CQ    0x04
#define ADM_CREATE_CQ    0x05
#define ADM_IDENTIFY     0x06
#define ADM_ABORT        0x08
#define ADM_SET_FEATURES 0x09
#define ADM_GET_FEATURES 0x0a
#define ADM_AER          0x0c
#define ADM_KEEP_ALIVE   0x18

#define FEAT_ARBITRATION   0x01
#define FEAT_POWER_MGMT    0x02
#define FEAT_TEMP_THRESH   0x04
#define FEAT_ERROR_RECOV   0x05
#define FEAT_VWC           0x06
#define FEAT_NUM_QUEUES    0x07
#define FEAT_INT_COALESCE  0x08
#define FEAT_INT_VECTOR    0x09
#define FEAT_WRITE_ATOMIC  0x0a
#define FEAT_ASYNC_EVENT   0x0b

/* Not completed now: a deferred Delete I/O SQ or an AER. */
#define ST_PENDING 0xffff

static void put16(uint8_t *b, size_t off, uint16_t v) { memcpy(b + off, &v, 2); }
static void put32(uint8_t *b, size_t off, uint32_t v) { memcpy(b + off, &v, 4); }
static void put64(uint8_t *b, size_t off, uint64_t v) { memcpy(b + off, &v, 8); }

/* ---- Identify ---- */

static void identify_ctrl(struct nvme_sc *sc, uint8_t *b)
{
	put16(b, 0, pci_get_cfgdata16(sc->pi, PCIR_VENDOR));    /* VID */
	put16(b, 2, pci_get_cfgdata16(sc->pi, PCIR_SUBVEND));   /* SSVID */
	memcpy(b + 4, sc->serial, 20);                          /* SN */
	memcpy(b + 24, sc->model, 40);                          /* MN */
	memcpy(b + 64, sc->fwrev, 8);                           /* FR */
	b[72] = 6;                                              /* RAB: 64 commands */
	b[77] = NVME_MDTS;
	put16(b, 78, 0);                                        /* CNTLID */
	put32(b, 80, 0x00010400);                               /* VER 1.4 */
	b[111] = 1;                                             /* CNTRLTYPE: I/O controller */
	put16(b, 256, 0);                                       /* OACS: none optional */
	b[258] = NVME_ACL;
	b[259] = NVME_AERL;
	b[260] = 0x03;                                          /* FRMW: 1 slot, slot 1 read-only */
	b[261] = 0x04;                                          /* LPA: extended Get Log Page data */
	b[262] = NVME_ELPE;
	b[263] = 0;                                             /* NPSS: one power state */
	put16(b, 266, NVME_WCTEMP);
	put16(b, 268, NVME_CCTEMP);
	b[512] = (NVME_SQES << 4) | NVME_SQES;                  /* SQES */
	b[513] = (NVME_CQES << 4) | NVME_CQES;                  /* CQES */
	put32(b, 516, 1);                                       /* NN */
	uint16_t oncs = 1u << 3;                                /* Write Zeroes */
	if (sc->dsm)
		oncs |= 1u << 2;                                    /* Dataset Management */
	put16(b, 520, oncs);
	/* VWC: present (when not O_SYNC); Flush with NSID FFFFFFFFh supported. */
	b[525] = (sc->vwc_present ? 1 : 0) | 0x06;
	b[530] = 1;                                             /* NVSCC: standard format */
	snprintf((char *)b + 768, 256, "%s", sc->subnqn);       /* SUBNQN */
	/* Power state 0: 25 W, operational. */
	put16(b, 2048, 2500);
}

static void identify_ns(struct nvme_sc *sc, uint8_t *b)
{
	put64(b, 0, sc->nsze);                                  /* NSZE */
	put64(b, 8, sc->nsze);                                  /* NCAP */
	put64(b, 16, sc->nsze);                                 /* NUSE */
	b[24] = 1u << 4;                                        /* NSFEAT: NPWG..NOWS valid */
	b[25] = 0;                                              /* NLBAF: one format */
	b[26] = 0;                                              /* FLBAS: format 0, no metadata */
	/* DLFEAT: deallocated blocks read as zeroes, Write Zeroes may deallocate (files). */
	if (sc->candelete && !blockif_is_blockdev(sc->bc))
		b[33] = 0x09;
	uint16_t pg = (uint16_t)(sc->psect_lbas - 1);
	put16(b, 64, pg);                                       /* NPWG */
	put16(b, 66, pg);                                       /* NPWA */
	put16(b, 68, pg);                                       /* NPDG */
	put16(b, 70, pg);                                       /* NPDA */
	put16(b, 72, pg);                                       /* NOWS */
	uint64_t bytes = sc->nsze << sc->lbads;
	put64(b, 48, bytes);                                    /* NVMCAP (low 64 bits) */
	b[99] = sc->ro ? 1 : 0;                                 /* NSATTR: write protected */
	memcpy(b + 104, sc->nguid, 16);
	memcpy(b + 120, sc->eui64, 8);
	put32(b, 128, (uint32_t)sc->lbads << 16);               /* LBAF0: no metadata, best performance */
}

static bool is_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

static void identify_ns_descs(struct nvme_sc *sc, uint8_t *b)
{
	size_t o = 0;
	if (!is_zero(sc->eui64, 8)) {
		b[o] = 1;   /* EUI64 */
		b[o + 1] = 8;
		memcpy(b + o + 4, sc->eui64, 8);
		o += 12;
	}
	b[o] = 2;       /* NGUID */
	b[o + 1] = 16;
	memcpy(b + o + 4, sc->nguid, 16);
}

static uint16_t adm_identify(struct nvme_sc *sc, const struct nvme_cmd *cmd)
{
	uint8_t b[4096] = { 0 };
	uint8_t cns = cmd->cdw10 & 0xff, csi = (uint8_t)(cmd->cdw11 >> 24);
	switch (cns) {
	case 0x00:
		if (cmd->nsid != NVME_NSID)
			return NVME_INVALID_NS;
		identify_ns(sc, b);
		break;
	case 0x01:
		identify_ctrl(sc, b);
		break;
	case 0x02:   /* active namespaces above NSID */
		if (cmd->nsid >= 0xfffffffeu)
			return NVME_INVALID_NS;
		if (cmd->nsid < NVME_NSID)
			put32(b, 0, NVME_NSID);
		break;
	case 0x03:
		if (cmd->nsid != NVME_NSID)
			return NVME_INVALID_NS;
		identify_ns_descs(sc, b);
		break;
	case 0x06:   /* I/O command set specific controller (NVMe 2.0), NVM: no extra limits */
		if (csi != 0)
			return NVME_INVALID_FIELD;
		break;
	default:
		return NVME_INVALID_FIELD;
	}
	return nvme_data_out(sc, cmd, b, sizeof(b), sizeof(b));
}

/* ---- log pages ---- */

static void put_units(uint8_t *b, size_t off, uint64_t v)
{
	put64(b, off, v);   /* 128-bit counters: the high half stays 0 */
}

static void smart_log(struct nvme_sc *sc, uint8_t *b)
{
	uint64_t now = nvme_now_ns();
	uint64_t busy = sc->busy_ns + (sc->io_busy ? now - sc->busy_since : 0);
	uint64_t on_s = sc->poweron_base_s + (now - sc->poweron_start_ns) / 1000000000ull;
	b[0] = sc->smart_warning;
	put16(b, 1, NVME_TEMP_K);                      /* composite temperature */
	b[3] = 100;                                    /* available spare */
	b[4] = 10;                                     /* available spare threshold */
	b[5] = 0;                                      /* percentage used */
	/* Data units: thousands of 512-byte units, rounded up. */
	put_units(b, 32, (sc->bytes_read / 512 + 999) / 1000);
	put_units(b, 48, (sc->bytes_written / 512 + 999) / 1000);
	put_units(b, 64, sc->read_cmds);
	put_units(b, 80, sc->write_cmds);
	put_units(b, 96, busy / 60000000000ull);       /* controller busy time, minutes */
	put_units(b, 112, sc->power_cycles);
	put_units(b, 128, on_s / 3600);                /* power-on hours */
	put_units(b, 144, 0);                          /* unsafe shutdowns */
	put_units(b, 160, 0);                          /* media and data integrity errors */
	put_units(b, 176, 0);                          /* error information log entries */
}

static uint16_t adm_get_log_page(struct nvme_sc *sc, const struct nvme_cmd *cmd)
{
	uint8_t lid = cmd->cdw10 & 0xff;
	bool rae = cmd->cdw10 & (1u << 15);
	uint64_t numd = ((uint64_t)(cmd->cdw11 & 0xffff) << 16 | cmd->cdw10 >> 16) + 1;
	uint64_t len = numd * 4, lpo = cmd->cdw12 | (uint64_t)cmd->cdw13 << 32;
	uint8_t log[512] = { 0 };
	size_t size;
	switch (lid) {
	case NVME_LOG_ERROR:
		size = (NVME_ELPE + 1) * 64;   /* no entries: all zeroes */
		break;
	case NVME_LOG_SMART:
		if (cmd->nsid != 0 && cmd->nsid != NVME_NSID && cmd->nsid != NVME_NSID_ALL)
			return NVME_INVALID_NS;
		smart_log(sc, log);
		size = 512;
		break;
	case NVME_LOG_FW_SLOT:
		log[0] = 1;                    /* AFI: slot 1 active */
		memcpy(log + 8, sc->fwrev, 8); /* FRS1 */
		size = 512;
		break;
	default:
		return NVME_INVALID_LOG_PAGE;
	}
	if ((lpo & 3) || lpo >= size || len > NVME_MAX_XFER)
		return NVME_INVALID_FIELD;
	uint16_t st = nvme_data_out(sc, cmd, log + lpo, size - (size_t)lpo, (size_t)len);
	if (!st && !rae) {
		/* Reading the log re-arms events of its type. */
		if (lid == NVME_LOG_ERROR)
			sc->aen_masked &= (uint8_t)~(1u << NVME_AE_ERROR);
		else if (lid == NVME_LOG_SMART)
			sc->aen_masked &= (uint8_t)~(1u << NVME_AE_SMART);
		nvme_aen_deliver(sc);
	}
	return st;
}

/* ---- features ---- */

void nvme_check_temperature(struct nvme_sc *sc)
{
	bool alarm = NVME_TEMP_K >= sc->tmpth_over || NVME_TEMP_K <= sc->tmpth_under;
	bool was = sc->smart_warning & 0x02;
	if (alarm)
		sc->smart_warning |= 0x02;
	else
		sc->smart_warning &= (uint8_t)~0x02;
	if (alarm && !was && (sc->feat_aec & 0x02))
		nvme_queue_event(sc, NVME_AE_SMART, NVME_AE_INFO_TEMP_THRESHOLD, NVME_LOG_SMART);
}

void nvme_features_reset(struct nvme_sc *sc)
{
	sc->feat_arb = 0;
	sc->feat_pm = 0;
	sc->feat_errrec = 0;
	sc->feat_ic = 0;
	sc->feat_wan = 0;
	sc->feat_aec = 0;
	sc->tmpth_over = NVME_WCTEMP;
	sc->tmpth_under = 0;
	sc->wce = sc->vwc_present;
	memset(sc->ivc_cd, 0, (size_t)sc->nvec);
	nvme_check_temperature(sc);
}

static uint16_t temp_select(const struct nvme_cmd *cmd, bool *under)
{
	uint32_t tmpsel = (cmd->cdw11 >> 16) & 0xf, thsel = (cmd->cdw11 >> 20) & 3;
	/* Only the composite temperature (0, or Fh for all sensors). */
	if ((tmpsel != 0 && tmpsel != 0xf) || thsel > 1)
		return NVME_INVALID_FIELD;
	*under = thsel == 1;
	return NVME_OK;
}

static bool io_queues_exist(const struct nvme_sc *sc)
{
	for (uint32_t q = 1; q <= sc->maxq; q++)
		if (sc->sq[q].exists || sc->cq[q].exists)
			return true;
	return false;
}

static uint16_t adm_set_features(struct nvme_sc *sc, const struct nvme_cmd *cmd, uint32_t *dw0)
{
	uint8_t fid = cmd->cdw10 & 0xff;
	uint32_t v = cmd->cdw11;
	bool under;
	uint16_t st;
	if (cmd->cdw10 & (1u << 31))
		return NVME_FEAT_NOT_SAVEABLE;
	switch (fid) {
	case FEAT_ARBITRATION:
		sc->feat_arb = v;
		return NVME_OK;
	case FEAT_POWER_MGMT:
		if (v & 0x1f)
			return NVME_INVALID_FIELD;   /* power state 0 only */
		sc->feat_pm = v & 0xff;
		return NVME_OK;
	case FEAT_TEMP_THRESH:
		if ((st = temp_select(cmd, &under)))
			return st;
		if (under)
			sc->tmpth_under = (uint16_t)v;
		else
			sc->tmpth_over = (uint16_t)v;
		nvme_check_temperature(sc);
		return NVME_OK;
	case FEAT_ERROR_RECOV:
		if (v & (1u << 16))
			return NVME_INVALID_FIELD;   /* DULBE: no deallocated-block errors */
		sc->feat_errrec = v & 0xffff;
		return NVME_OK;
	case FEAT_VWC:
		if (!sc->vwc_present)
			return NVME_INVALID_FIELD;
		sc->wce = v & 1;
		return NVME_OK;
	case FEAT_NUM_QUEUES:
		if ((v & 0xffff) == 0xffff || (v >> 16) == 0xffff)
			return NVME_INVALID_FIELD;
		if (io_queues_exist(sc))
			return NVME_CMD_SEQ_ERROR;
		*dw0 = (sc->maxq - 1) | (sc->maxq - 1) << 16;
		return NVME_OK;
	case FEAT_INT_COALESCE:
		sc->feat_ic = v & 0xffff;   /* kept; every completion interrupts */
		return NVME_OK;
	case FEAT_INT_VECTOR:
		if ((v & 0xffff) >= (uint32_t)sc->nvec)
			return NVME_INVALID_FIELD;
		sc->ivc_cd[v & 0xffff] = (v >> 16) & 1;
		return NVME_OK;
	case FEAT_WRITE_ATOMIC:
		sc->feat_wan = v & 1;
		return NVME_OK;
	case FEAT_ASYNC_EVENT:
		sc->feat_aec = v & 0xff;   /* SMART warnings; no notices (OAES = 0) */
		return NVME_OK;
	default:
		return NVME_INVALID_FIELD;
	}
}

static uint16_t adm_get_features(struct nvme_sc *sc, const struct nvme_cmd *cmd, uint32_t *dw0)
{
	uint8_t fid = cmd->cdw10 & 0xff;
	uint32_t sel = (cmd->cdw10 >> 8) & 7;
	bool def = sel == 1 || sel == 2;   /* default; nothing is saved, so saved = default */
	bool under;
	uint16_t st;
	if (sel > 3)
		return NVME_INVALID_FIELD;
	switch (fid) {
	case FEAT_ARBITRATION:
	case FEAT_POWER_MGMT:
	case FEAT_TEMP_THRESH:
	case FEAT_ERROR_RECOV:
	case FEAT_NUM_QUEUES:
	case FEAT_INT_COALESCE:
	case FEAT_INT_VECTOR:
	case FEAT_WRITE_ATOMIC:
	case FEAT_ASYNC_EVENT:
		break;
	case FEAT_VWC:
		if (!sc->vwc_present)
			return NVME_INVALID_FIELD;
		break;
	default:
		return NVME_INVALID_FIELD;
	}
	if (sel == 3) {
		*dw0 = 1u << 2;   /* changeable, not saveable, not namespace specific */
		return NVME_OK;
	}
	switch (fid) {
	case FEAT_ARBITRATION: *dw0 = def ? 0 : sc->feat_arb; break;
	case FEAT_POWER_MGMT: *dw0 = def ? 0 : sc->feat_pm; break;
	case FEAT_TEMP_THRESH:
		if ((st = temp_select(cmd, &under)))
			return st;
		*dw0 = under ? (def ? 0 : sc->tmpth_under) : (def ? NVME_WCTEMP : sc->tmpth_over);
		break;
	case FEAT_ERROR_RECOV: *dw0 = def ? 0 : sc->feat_errrec; break;
	case FEAT_VWC: *dw0 = def ? 1 : sc->wce; break;
	case FEAT_NUM_QUEUES: *dw0 = (sc->maxq - 1) | (sc->maxq - 1) << 16; break;
	case FEAT_INT_COALESCE: *dw0 = def ? 0 : sc->feat_ic; break;
	case FEAT_INT_VECTOR: {
		uint32_t iv = cmd->cdw11 & 0xffff;
		if (iv >= (uint32_t)sc->nvec)
			return NVME_INVALID_FIELD;
		*dw0 = iv | (def ? 0 : (uint32_t)sc->ivc_cd[iv] << 16);
		break;
	}
	case FEAT_WRITE_ATOMIC: *dw0 = def ? 0 : sc->feat_wan; break;
	case FEAT_ASYNC_EVENT: *dw0 = def ? 0 : sc->feat_aec; break;
	}
	return NVME_OK;
}

/* ---- queues ---- */

static uint16_t adm_create_cq(struct nvme_sc *sc, const struct nvme_cmd *cmd)
{
	uint32_t qid = cmd->cdw10 & 0xffff, size = (cmd->cdw10 >> 16) + 1;
	uint32_t iv = cmd->cdw11 >> 16;
	bool pc = cmd->cdw11 & 1, ien = cmd->cdw11 & 2;
	uint8_t *ring;
	if (qid == 0 || qid > sc->maxq || sc->cq[qid].exists)
		return NVME_INVALID_QID;
	if (size < 2 || size > sc->qsz)
		return NVME_INVALID_QSIZE;
	if (!pc || NVME_CC_IOCQES(sc->cc) != NVME_CQES)
		return NVME_INVALID_FIELD;   /* CAP.CQR: contiguous queues only */
	if (iv >= (uint32_t)sc->nvec)
		return NVME_INVALID_IV;
	if (cmd->prp1 & (NVME_PAGE - 1))
		return NVME_PRP_OFFSET_INVALID;
	if (nvme_map_ring(sc, cmd->prp1, size, sizeof(struct nvme_cqe), &ring))
		return NVME_INVALID_FIELD;   /* not in guest RAM */
	struct nvme_cq *cq = &sc->cq[qid];
	bool queued = cq->irq_queued;
	*cq = (struct nvme_cq){ .exists = true, .ien = ien, .irq_queued = queued, .phase = 1, .iv = (uint16_t)iv,
	                        .size = size, .gpa = cmd->prp1, .ring = ring };
	return NVME_OK;
}

static uint16_t adm_create_sq(struct nvme_sc *sc, const struct nvme_cmd *cmd)
{
	uint32_t qid = cmd->cdw10 & 0xffff, size = (cmd->cdw10 >> 16) + 1;
	uint32_t cqid = cmd->cdw11 >> 16;
	bool pc = cmd->cdw11 & 1;
	uint8_t *ring;
	if (qid == 0 || qid > sc->maxq || sc->sq[qid].exists)
		return NVME_INVALID_QID;
	if (size < 2 || size > sc->qsz)
		return NVME_INVALID_QSIZE;
	if (cqid == 0 || cqid > sc->maxq || !sc->cq[cqid].exists)
		return NVME_CQ_INVALID;
	if (!pc || NVME_CC_IOSQES(sc->cc) != NVME_SQES)
		return NVME_INVALID_FIELD;
	if (cmd->prp1 & (NVME_PAGE - 1))
		return NVME_PRP_OFFSET_INVALID;
	if (nvme_map_ring(sc, cmd->prp1, size, sizeof(struct nvme_cmd), &ring))
		return NVME_INVALID_FIELD;
	sc->sq[qid] = (struct nvme_sq){ .exists = true, .cqid = (uint16_t)cqid, .qprio = (cmd->cdw11 >> 1) & 3,
	                                .size = size, .gpa = cmd->prp1, .ring = ring };
	sc->cq[cqid].nsq++;
	return NVME_OK;
}

void nvme_delete_sq_finish(struct nvme_sc *sc, uint16_t qid)
{
	struct nvme_sq *sq = &sc->sq[qid];
	uint16_t cid = sq->del_cid;
	bool deferred = sq->deleting;
	if (sc->cq[sq->cqid].nsq)
		sc->cq[sq->cqid].nsq--;
	*sq = (struct nvme_sq){ 0 };
	if (deferred)
		nvme_complete(sc, 0, cid, 0, NVME_OK);
}

static uint16_t adm_delete_sq(struct nvme_sc *sc, const struct nvme_cmd *cmd)
{
	uint32_t qid = cmd->cdw10 & 0xffff;
	if (qid == 0 || qid > sc->maxq || !sc->sq[qid].exists || sc->sq[qid].deleting)
		return NVME_INVALID_QID;
	struct nvme_sq *sq = &sc->sq[qid];
	if (sq->inflight) {
		/* Its commands still run in blockif: complete once they have. */
		sq->deleting = true;
		sq->del_cid = (uint16_t)(cmd->cdw0 >> 16);
		return ST_PENDING;
	}
	nvme_delete_sq_finish(sc, (uint16_t)qid);
	return NVME_OK;
}

static uint16_t adm_delete_cq(struct nvme_sc *sc, const struct nvme_cmd *cmd)
{
	uint32_t qid = cmd->cdw10 & 0xffff;
	if (qid == 0 || qid > sc->maxq || !sc->cq[qid].exists)
		return NVME_INVALID_QID;
	if (sc->cq[qid].nsq)
		return NVME_INVALID_QDELETE;
	bool queued = sc->cq[qid].irq_queued;   /* still listed in irq_list */
	sc->cq[qid] = (struct nvme_cq){ .irq_queued = queued };
	nvme_update_intx(sc);
	return NVME_OK;
}

/* ---- asynchronous events ---- */

void nvme_aen_deliver(struct nvme_sc *sc)
{
	while (sc->naer > 0 && sc->nevents > 0 && sc->cq[0].exists) {
		uint32_t i = 0;
		while (i < sc->nevents && (sc->aen_masked & (1u << sc->events[i].type)))
			i++;
		if (i == sc->nevents)
			return;
		uint32_t dw0 = sc->events[i].type | (uint32_t)sc->events[i].info << 8 | (uint32_t)sc->events[i].lid << 16;
		if (!nvme_post_unreserved(sc, 0, sc->aer_cid[0], dw0, NVME_OK))
			return;   /* admin CQ full: the next head doorbell retries */
		sc->aen_masked |= (uint8_t)(1u << sc->events[i].type);
		memmove(&sc->aer_cid[0], &sc->aer_cid[1], (sc->naer - 1) * sizeof(sc->aer_cid[0]));
		sc->naer--;
		memmove(&sc->events[i], &sc->events[i + 1], (sc->nevents - i - 1) * sizeof(sc->events[0]));
		sc->nevents--;
	}
}

static uint16_t adm_aer(struct nvme_sc *sc, uint16_t cid)
{
	if (sc->naer > NVME_AERL)
		return NVME_AER_LIMIT;
	sc->aer_cid[sc->naer++] = cid;
	/* It may wait forever: it holds no CQ slot and does not count as in flight. */
	if (sc->cq[0].reserved)
		sc->cq[0].reserved--;
	if (sc->sq[0].inflight)
		sc->sq[0].inflight--;
	nvme_aen_deliver(sc);
	return ST_PENDING;
}

/* ---- dispatch ---- */

void nvme_admin_cmd(struct nvme_sc *sc, const struct nvme_cmd *cmd)
{
	uint8_t opc = cmd->cdw0 & 0xff;
	uint16_t cid = (uint16_t)(cmd->cdw0 >> 16), st;
	uint32_t dw0 = 0;
	switch (opc) {
	case ADM_DELETE_SQ: case ADM_CREATE_SQ: case ADM_GET_LOG_PAGE: case ADM_DELETE_CQ: case ADM_CREATE_CQ:
	case ADM_IDENTIFY: case ADM_ABORT: case ADM_SET_FEATURES: case ADM_GET_FEATURES: case ADM_AER:
	case ADM_KEEP_ALIVE:
		break;
	default:
		nvme_complete(sc, 0, cid, 0, NVME_INVALID_OPCODE);
		return;
	}
	if (cmd->cdw0 & 0x300) {   /* fused operations are NVM commands */
		nvme_complete(sc, 0, cid, 0, NVME_INVALID_FIELD);
		return;
	}
	switch (opc) {
	case ADM_DELETE_SQ: st = adm_delete_sq(sc, cmd); break;
	case ADM_CREATE_SQ: st = adm_create_sq(sc, cmd); break;
	case ADM_GET_LOG_PAGE: st = adm_get_log_page(sc, cmd); break;
	case ADM_DELETE_CQ: st = adm_delete_cq(sc, cmd); break;
	case ADM_CREATE_CQ: st = adm_create_cq(sc, cmd); break;
	case ADM_IDENTIFY: st = adm_identify(sc, cmd); break;
	case ADM_ABORT:
		/* Commands are fetched as soon as they are queued and blockif cannot cancel: not aborted. */
		dw0 = 1;
		st = NVME_OK;
		break;
	case ADM_SET_FEATURES: st = adm_set_features(sc, cmd, &dw0); break;
	case ADM_GET_FEATURES: st = adm_get_features(sc, cmd, &dw0); break;
	case ADM_AER: st = adm_aer(sc, cid); break;
	default: st = NVME_OK; break;   /* Keep Alive */
	}
	if (st != ST_PENDING)
		nvme_complete(sc, 0, cid, dw0, st);
}
