/*
 * NVMe controller model: what devices/nvme.c (registers, queues, I/O
 * commands, configuration, checkpoint) and devices/nvme_admin.c (admin
 * commands: Identify, features, log pages, queue management, AER) share.
 * Facts from NVM Express Base Specification 1.4; numbers below are the
 * spec's field values.
 */
#ifndef HYVE_NVME_INTERNAL_H
#define HYVE_NVME_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blockif.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "NVMe structures are little-endian");

struct pci_devinst;
struct vmctx;

#define NVME_PAGE          4096u        /* CAP.MPSMIN = MPSMAX = 0: 4 KiB only */
#define NVME_MDTS          7            /* 2^7 pages: 512 KiB per command */
#define NVME_MAX_XFER      (NVME_PAGE << NVME_MDTS)
#define NVME_MAX_IOV       ((NVME_MAX_XFER / NVME_PAGE) + 1)
#define NVME_MAX_IOQ       256          /* maxq= limit */
#define NVME_MAX_QSZ       65536        /* CAP.MQES is 16 bits, 0's based */
#define NVME_MAX_AQ        4096         /* AQA fields are 12 bits, 0's based */
#define NVME_AERL          3            /* 0's based: 4 AERs outstanding */
#define NVME_ACL           3            /* 0's based: 4 Aborts */
#define NVME_ELPE          3            /* 0's based: 4 error log entries */
#define NVME_MAX_EVENTS    8            /* queued asynchronous events */
#define NVME_NSID          1            /* the one namespace */
#define NVME_NSID_ALL      0xffffffffu
#define NVME_SQES          6            /* 64-byte SQ entries */
#define NVME_CQES          4            /* 16-byte CQ entries */
#define NVME_TEMP_K        311          /* composite temperature reported (38 C) */
#define NVME_WCTEMP        343          /* warning threshold (70 C) */
#define NVME_CCTEMP        358          /* critical threshold (85 C) */
#define NVME_DSM_MAX_RANGES 256

/* Controller registers (BAR 0). */
#define NVME_REG_CAP     0x00
#define NVME_REG_VS      0x08
#define NVME_REG_INTMS   0x0c
#define NVME_REG_INTMC   0x10
#define NVME_REG_CC      0x14
#define NVME_REG_CSTS    0x1c
#define NVME_REG_NSSR    0x20
#define NVME_REG_AQA     0x24
#define NVME_REG_ASQ     0x28
#define NVME_REG_ACQ     0x30
#define NVME_REG_DBS     0x1000       /* doorbells, stride 4 (CAP.DSTRD = 0) */

#define NVME_CC_EN       0x1u
#define NVME_CC_CSS(cc)  (((cc) >> 4) & 7)
#define NVME_CC_MPS(cc)  (((cc) >> 7) & 0xf)
#define NVME_CC_AMS(cc)  (((cc) >> 11) & 7)
#define NVME_CC_SHN(cc)  (((cc) >> 14) & 3)
#define NVME_CC_IOSQES(cc) (((cc) >> 16) & 0xf)
#define NVME_CC_IOCQES(cc) (((cc) >> 20) & 0xf)
#define NVME_CSTS_RDY    0x1u
#define NVME_CSTS_CFS    0x2u
#define NVME_CSTS_SHST_MASK 0xcu
#define NVME_CSTS_SHST_DONE 0x8u

/* Status: (SCT << 8) | SC, plus DNR (bit 14 of the 15-bit field). */
#define NVME_DNR              0x4000u
#define NVME_SC(sct, sc)      ((uint16_t)(((sct) << 8) | (sc)))
#define NVME_OK               0
#define NVME_INVALID_OPCODE   (NVME_SC(0, 0x01) | NVME_DNR)
#define NVME_INVALID_FIELD    (NVME_SC(0, 0x02) | NVME_DNR)
#define NVME_DATA_XFER_ERROR  (NVME_SC(0, 0x04) | NVME_DNR)
#define NVME_INTERNAL_ERROR   NVME_SC(0, 0x06)
#define NVME_INVALID_NS       (NVME_SC(0, 0x0b) | NVME_DNR)
#define NVME_CMD_SEQ_ERROR    (NVME_SC(0, 0x0c) | NVME_DNR)
#define NVME_PRP_OFFSET_INVALID (NVME_SC(0, 0x13) | NVME_DNR)
#define NVME_NS_WRITE_PROTECTED (NVME_SC(0, 0x20) | NVME_DNR)
#define NVME_LBA_OUT_OF_RANGE (NVME_SC(0, 0x80) | NVME_DNR)
#define NVME_CAPACITY_EXCEEDED (NVME_SC(0, 0x81) | NVME_DNR)
#define NVME_CQ_INVALID       (NVME_SC(1, 0x00) | NVME_DNR)
#define NVME_INVALID_QID      (NVME_SC(1, 0x01) | NVME_DNR)
#define NVME_INVALID_QSIZE    (NVME_SC(1, 0x02) | NVME_DNR)
#define NVME_AER_LIMIT        (NVME_SC(1, 0x05) | NVME_DNR)
#define NVME_INVALID_IV       (NVME_SC(1, 0x08) | NVME_DNR)
#define NVME_INVALID_LOG_PAGE (NVME_SC(1, 0x09) | NVME_DNR)
#define NVME_INVALID_QDELETE  (NVME_SC(1, 0x0c) | NVME_DNR)
#define NVME_FEAT_NOT_SAVEABLE (NVME_SC(1, 0x0d) | NVME_DNR)
#define NVME_WRITE_FAULT      NVME_SC(2, 0x80)
#define NVME_UNRECOVERED_READ NVME_SC(2, 0x81)

/* Asynchronous event types and what the completion's DW0 carries. */
#define NVME_AE_ERROR  0
#define NVME_AE_SMART  1
#define NVME_AE_INFO_INVALID_DB       0x00
#define NVME_AE_INFO_INVALID_DB_VALUE 0x01
#define NVME_AE_INFO_TEMP_THRESHOLD   0x01
#define NVME_LOG_ERROR    0x01
#define NVME_LOG_SMART    0x02
#define NVME_LOG_FW_SLOT  0x03

struct nvme_cmd {
	uint32_t cdw0;       /* OPC 7:0, FUSE 9:8, PSDT 15:14, CID 31:16 */
	uint32_t nsid;
	uint32_t cdw2, cdw3;
	uint64_t mptr;
	uint64_t prp1, prp2;
	uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
};
_Static_assert(sizeof(struct nvme_cmd) == 64, "submission queue entry");

struct nvme_cqe {
	uint32_t dw0, dw1;
	uint16_t sqhd, sqid;
	uint16_t cid;
	uint16_t status;     /* phase in bit 0, status field above */
};
_Static_assert(sizeof(struct nvme_cqe) == 16, "completion queue entry");

struct nvme_sq {
	bool exists;
	bool deleting;       /* Delete I/O SQ waits for its commands in flight */
	bool blocked;        /* entries left: CQ full or no I/O slot */
	bool busy;           /* being processed (recursion guard) */
	uint16_t cqid;
	uint8_t qprio;
	uint16_t del_cid;    /* the Delete I/O SQ command to complete */
	uint32_t size, head, tail;
	uint32_t inflight;   /* fetched, not completed */
	uint64_t gpa;
	uint8_t *ring;
};

struct nvme_cq {
	bool exists;
	bool ien;
	bool irq_queued;     /* in sc->irq_list */
	uint8_t phase;
	uint16_t iv;
	uint32_t size, head, tail;
	uint32_t reserved;   /* completions owed by commands already fetched */
	uint32_t nsq;        /* submission queues posting here */
	uint64_t gpa;
	uint8_t *ring;
};

struct nvme_sc;

struct nvme_ioreq {
	struct blockif_req br;
	struct nvme_sc *sc;
	struct nvme_ioreq *next;          /* free list */
	uint16_t sqid, cid;
	uint8_t opc;
	bool flush_after;                 /* FUA or write cache off: flush once written */
	bool flushing;
	uint32_t dsm_n, dsm_next;         /* Dataset Management: ranges to deallocate */
	uint64_t (*dsm)[2];               /* [first LBA, blocks], allocated on first use */
	uint64_t bytes;
	int niov;
	struct iovec iov[NVME_MAX_IOV];
	uint64_t gpa[NVME_MAX_IOV];       /* guest address and length of each iov (blockif */
	uint32_t glen[NVME_MAX_IOV];      /* advances iov in place): dirty marking on reads */
};

struct nvme_sc {
	struct pci_devinst *pi;
	struct vmctx *ctx;
	pthread_mutex_t mtx;
	pthread_mutex_t cc_mtx;           /* serializes CC writes (they drain unlocked) */
	struct blockif_ctxt *bc;
	char name[40];

	/* Configuration. */
	uint32_t maxq, qsz, ioslots, sectsz, lbads, psect_lbas;
	uint64_t nsze;                    /* namespace size in logical blocks */
	bool ro, dsm, candelete, vwc_present;
	uint8_t eui64[8], nguid[16];
	char serial[21], model[41], fwrev[9], subnqn[224];
	int nvec;                         /* MSI-X vectors: maxq + 1 */

	/* Registers. */
	uint64_t cap, asq, acq;
	uint32_t cc, csts, aqa, intms;
	bool resetting;                   /* CC.EN 1->0 or shutdown draining: no new work */
	bool paused;                      /* checkpoint: no new work */
	bool intx_level;

	struct nvme_sq *sq;               /* [0..maxq] */
	struct nvme_cq *cq;

	/* Features (current values). */
	uint32_t feat_arb, feat_pm, feat_errrec, feat_ic, feat_wan, feat_aec;
	uint16_t tmpth_over, tmpth_under;
	bool wce;
	uint8_t *ivc_cd;                  /* Interrupt Vector Configuration: CD per vector */

	/* Asynchronous events. */
	uint16_t aer_cid[NVME_AERL + 1];
	uint32_t naer;
	struct { uint8_t type, info, lid; } events[NVME_MAX_EVENTS];
	uint32_t nevents;
	uint8_t aen_masked;               /* bit per event type: reported, log not read yet */
	uint8_t smart_warning;            /* SMART critical warning byte */

	/* SMART / health counters. */
	uint64_t bytes_read, bytes_written, read_cmds, write_cmds;
	uint64_t busy_ns, busy_since;     /* time with I/O outstanding */
	uint64_t poweron_base_s, poweron_start_ns;
	uint32_t power_cycles;

	/* I/O slots (blockif requests). */
	struct nvme_ioreq *ioreqs, *free_io;
	uint32_t io_busy;
	bool ioerr_logged;
	struct blockif_req sync_req;      /* flush at shutdown */
	bool sync_done;

	/* CQs with an MSI-X interrupt to raise once the lock is dropped. */
	uint16_t *irq_list;
	uint32_t nirq;
};

/* nvme.c */
uint64_t nvme_now_ns(void);
bool nvme_running(const struct nvme_sc *sc);
/* Map [prp1, prp2] for len bytes into iov (at most NVME_MAX_IOV); status. */
uint16_t nvme_map_prp(struct nvme_sc *sc, uint64_t prp1, uint64_t prp2, uint64_t len, struct iovec *iov,
                      uint64_t *gpa, int *niov);
/* Copy to/from a command's data buffer (admin data); status. */
uint16_t nvme_data_out(struct nvme_sc *sc, const struct nvme_cmd *cmd, const void *buf, size_t len,
                       size_t xfer);
uint16_t nvme_data_in(struct nvme_sc *sc, const struct nvme_cmd *cmd, void *buf, size_t len);
/* Post the completion of a fetched command (its CQ slot was reserved). */
void nvme_complete(struct nvme_sc *sc, uint16_t sqid, uint16_t cid, uint32_t dw0, uint16_t status);
/* Post a completion that reserved nothing (AER): false if the CQ is full. */
bool nvme_post_unreserved(struct nvme_sc *sc, uint16_t sqid, uint16_t cid, uint32_t dw0, uint16_t status);
uint32_t nvme_cq_free(const struct nvme_cq *cq);
void nvme_process_sq(struct nvme_sc *sc, uint16_t sqid);
void nvme_process_blocked(struct nvme_sc *sc, int cqid);   /* -1: every blocked SQ */
void nvme_queue_event(struct nvme_sc *sc, uint8_t type, uint8_t info, uint8_t lid);
void nvme_update_intx(struct nvme_sc *sc);
int nvme_map_ring(struct nvme_sc *sc, uint64_t gpa, uint32_t entries, uint32_t esize, uint8_t **ring);

/* nvme_admin.c */
void nvme_admin_cmd(struct nvme_sc *sc, const struct nvme_cmd *cmd);
void nvme_features_reset(struct nvme_sc *sc);
void nvme_aen_deliver(struct nvme_sc *sc);
void nvme_delete_sq_finish(struct nvme_sc *sc, uint16_t qid);
void nvme_check_temperature(struct nvme_sc *sc);

#endif
