/*
 * AHCI HBA model: what devices/ahci.c (HBA and port registers, command
 * list, FIS, ATA commands, configuration, checkpoint) and
 * devices/ahci_atapi.c (ATAPI CD-ROM: PACKET commands) share.  Numbers
 * are from Serial ATA AHCI 1.3.1, ACS-3 and MMC-6 / SPC-4.
 */
#ifndef HYVE_AHCI_INTERNAL_H
#define HYVE_AHCI_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blockif.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "AHCI structures are little-endian");

struct pci_devinst;
struct vmctx;

#define AHCI_MAX_PORTS  32
#define AHCI_MAX_SLOTS  32
#define AHCI_MAX_PRD    1024          /* PRDT entries per command accepted */
#define AHCI_DSM_BLOCKS 8             /* DATA SET MANAGEMENT: 512-byte range blocks at most */
#define ATAPI_SECTSZ    2048

/* ATA status and error bits. */
#define ATA_S_ERR   0x01
#define ATA_S_DRQ   0x08
#define ATA_S_DSC   0x10
#define ATA_S_DF    0x20
#define ATA_S_DRDY  0x40
#define ATA_S_BSY   0x80
#define ATA_E_ABRT  0x04
#define ATA_E_IDNF  0x10
#define ATA_E_UNC   0x40

/* SCSI sense keys. */
#define SK_NONE            0x0
#define SK_NOT_READY       0x2
#define SK_MEDIUM_ERROR    0x3
#define SK_ILLEGAL_REQUEST 0x5
#define SK_UNIT_ATTENTION  0x6
#define SK_ABORTED_COMMAND 0xb

struct ahci_port;
struct ahci_sc;

struct ahci_ioreq {
	struct blockif_req br;
	struct ahci_port *p;
	int slot;
	uint32_t gen;            /* port generation when issued: stale completions are dropped */
	uint8_t cmd;             /* ATA command (0xa0: ATAPI READ) */
	uint8_t tag;             /* NCQ tag */
	bool ncq, pio, write, flush_after, flushing;
	uint32_t bytes;
	int niov;
	struct iovec *iov;       /* [AHCI_MAX_PRD] */
	uint64_t *gpa;
	uint32_t *glen;
	uint32_t dsm_n, dsm_next;
	uint64_t dsm[AHCI_DSM_BLOCKS * 64][2];   /* TRIM ranges: [offset, bytes] */
};

struct ahci_port {
	struct ahci_sc *sc;
	int n;
	bool present, atapi;
	struct blockif_ctxt *bc;
	char name[48];

	/* Configuration and identity. */
	uint32_t sectsz, psectsz;
	uint64_t nsect;          /* logical sectors (disk) or 2048-byte blocks (CD) */
	bool ro, candelete;
	uint16_t nmrr;
	char ser[21], model[41], rev[9];

	/* Port registers. */
	uint64_t clb, fb;
	uint32_t is, ie, cmd, tfd, sig, ssts, sctl, serr, sact, ci;

	/* State. */
	uint32_t pending;        /* slots accepted, not completed */
	uint32_t gen;
	bool waitforclear;       /* an error: no new commands until PxCMD.ST goes 0 */
	bool reset_fis;          /* the signature FIS goes out when FRE is set */
	bool wce;
	uint8_t xfermode, mult;
	uint8_t sense_key, asc, ascq;
	uint8_t ncq_err_tag;     /* NCQ command error log (READ LOG EXT 10h) */
	bool ncq_err;
	uint8_t ncq_err_status, ncq_err_error;

	struct ahci_ioreq io[AHCI_MAX_SLOTS];
};

struct ahci_sc {
	struct pci_devinst *pi;
	struct vmctx *ctx;
	pthread_mutex_t mtx;
	pthread_mutex_t reset_mtx;        /* serializes register writes that drain unlocked */
	int nports;                       /* CAP.NP + 1: the highest port + 1 */
	uint32_t pi_mask;                 /* ports implemented */
	uint32_t cap, ghc, is;
	bool paused;
	bool intx_level;
	struct ahci_port port[AHCI_MAX_PORTS];
};

/* A command as decoded from its command FIS, for the ATAPI half. */
struct ahci_cmd {
	int slot;
	const uint8_t *cfis;              /* 64 bytes, copied */
	const uint8_t *acmd;              /* 16 bytes, copied */
	const uint8_t *prdt;              /* guest's PRDT (mapped) */
	uint32_t prdtl;
};

/* ahci.c */
void ahci_finish(struct ahci_port *p, int slot, uint8_t status, uint8_t error, uint32_t bytes, bool pio,
                 uint8_t count);
/* Copy buf to the command's PRDT (data-in), at most len bytes; bytes copied or -1 (bad PRD). */
int64_t ahci_prdt_out(struct ahci_port *p, const struct ahci_cmd *c, const void *buf, size_t len);
/* Map the PRDT to iovecs for len bytes; 0 or -1 (PRD outside RAM, too short, too many). */
int ahci_prdt_map(struct ahci_port *p, const struct ahci_cmd *c, uint64_t len, struct ahci_ioreq *io);
void ahci_io_prepare(struct ahci_port *p, struct ahci_ioreq *io, int slot, uint8_t cmd);
void ahci_pad_copy(char *dst, size_t n, const char *src);

/* ahci_atapi.c */
void atapi_packet(struct ahci_port *p, const struct ahci_cmd *c);
void atapi_identify(struct ahci_port *p, uint16_t id[256]);
void atapi_read_done(struct ahci_port *p, struct ahci_ioreq *io, int err);

/* ---- configuration (ahci_config.c) ---- */

#define AHCI_PORT_OPTS 10
/* One port's options as read from the configuration. */
struct ahci_port_opts {
	const char *path, *ser, *rev, *model;
	bool present, atapi, nocache, direct, ro;
	uint64_t sectsz, psectsz, nmrr;
	bool have_nmrr;
};

/* "port.N.OPT" for every port: the model's option list. */
extern const char *ahci_options[AHCI_MAX_PORTS * AHCI_PORT_OPTS + 1];
/* The ports of one ahci function; at -s time (parse_time) the images must exist too. */
int ahci_read_opts(const char *cfgpath, bool parse_time, struct ahci_port_opts o[AHCI_MAX_PORTS], char *err,
                   size_t errlen);
/* bhyve's -s syntax: ahci (hd:/cd: ports), ahci-hd and ahci-cd (one port). */
int ahci_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen);
int ahci_hd_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen);
int ahci_cd_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen);

#endif
