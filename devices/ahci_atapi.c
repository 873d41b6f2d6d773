/*
 * ATAPI CD-ROM behind an AHCI port (devices/ahci.c): the PACKET command's
 * SCSI/MMC commands on read-only media that is always present.
 * Implemented: TEST UNIT READY, REQUEST SENSE, INQUIRY, START STOP UNIT,
 * PREVENT ALLOW MEDIUM REMOVAL, READ CAPACITY, READ(10), READ(12), READ
 * TOC/PMA/ATIP (formats 0 and 1), GET CONFIGURATION, GET EVENT STATUS
 * NOTIFICATION (polled, media class), MODE SENSE(10) (pages 01h, 2Ah,
 * 3Fh).  Anything else, a transfer past the end of the medium or a PRDT
 * too short for the data fails with CHECK CONDITION and sense data
 * (ILLEGAL REQUEST ...) that REQUEST SENSE returns.
 */
#include <errno.h>
#include <string.h>

#include "../core/log.h"
#include "../vmm/vmm.h"
#include "ahci_internal.h"
#include "blockif.h"

#define ATAPI_TUR            0x00
#define ATAPI_REQUEST_SENSE  0x03
#define ATAPI_INQUIRY        0x12
#define ATAPI_START_STOP     0x1b
#define ATAPI_PREVENT_ALLOW  0x1e
#define ATAPI_READ_CAPACITY  0x25
#define ATAPI_READ10         0x28
#define ATAPI_READ_TOC       0x43
#define ATAPI_GET_CONFIG     0x46
#define ATAPI_GET_EVENT      0x4a
#define ATAPI_MODE_SENSE10   0x5a
#define ATAPI_READ12         0xa8

/* Interrupt reason (in the count register): command/data = 1, I/O = 1. */
#define ATAPI_IREASON_DONE 0x03

static void be16(uint8_t *b, uint32_t v) { b[0] = (uint8_t)(v >> 8); b[1] = (uint8_t)v; }
static void be32(uint8_t *b, uint32_t v) { be16(b, v >> 16); be16(b + 2, v); }
static uint32_t rbe16(const uint8_t *b) { return (uint32_t)b[0] << 8 | b[1]; }
static uint32_t rbe32(const uint8_t *b) { return rbe16(b) << 16 | rbe16(b + 2); }

static void atapi_ok(struct ahci_port *p, int slot, uint32_t bytes)
{
	p->sense_key = p->asc = p->ascq = 0;
	ahci_finish(p, slot, ATA_S_DRDY | ATA_S_DSC, 0, bytes, false, ATAPI_IREASON_DONE);
}

/* CHECK CONDITION: the sense key in the error register's high nibble. */
static void atapi_fail(struct ahci_port *p, int slot, uint8_t sk, uint8_t asc, uint8_t ascq)
{
	p->sense_key = sk;
	p->asc = asc;
	p->ascq = ascq;
	ahci_finish(p, slot, ATA_S_DRDY | ATA_S_ERR, (uint8_t)(sk << 4 | ATA_E_ABRT), 0, false, ATAPI_IREASON_DONE);
}

/* Data-in of a response: at most the allocation length, into the PRDT. */
static void atapi_reply(struct ahci_port *p, const struct ahci_cmd *c, const void *buf, size_t len, size_t alloc)
{
	if (len > alloc)
		len = alloc;
	int64_t n = ahci_prdt_out(p, c, buf, len);
	if (n < 0) {
		atapi_fail(p, c->slot, SK_ABORTED_COMMAND, 0x00, 0x00);
		return;
	}
	atapi_ok(p, c->slot, (uint32_t)n);
}

static void atapi_inquiry(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *cdb = c->acmd;
	uint8_t buf[36] = { 0x05, 0x80, 0x05, 0x32, sizeof(buf) - 5 };
	if (cdb[1] & 1) {   /* EVPD: no vital product data pages */
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x24, 0x00);
		return;
	}
	memcpy(buf + 8, "HYVE    ", 8);
	memcpy(buf + 16, p->model, 16);
	memcpy(buf + 32, p->rev, 4);
	atapi_reply(p, c, buf, sizeof(buf), rbe16(cdb + 3));
}

static void atapi_request_sense(struct ahci_port *p, const struct ahci_cmd *c)
{
	uint8_t buf[18] = { 0x70, 0, p->sense_key };
	buf[7] = 10;
	buf[12] = p->asc;
	buf[13] = p->ascq;
	atapi_reply(p, c, buf, sizeof(buf), c->acmd[4]);
}

static void atapi_read_capacity(struct ahci_port *p, const struct ahci_cmd *c)
{
	uint8_t buf[8];
	be32(buf, p->nsect ? (uint32_t)(p->nsect > 0xffffffffull ? 0xffffffff : p->nsect - 1) : 0);
	be32(buf + 4, ATAPI_SECTSZ);
	atapi_reply(p, c, buf, sizeof(buf), sizeof(buf));
}

static void lba_to_msf(uint8_t *b, uint64_t lba)
{
	lba += 150;
	b[0] = 0;
	b[1] = (uint8_t)(lba / (60 * 75));
	b[2] = (uint8_t)(lba / 75 % 60);
	b[3] = (uint8_t)(lba % 75);
}

static void atapi_read_toc(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *cdb = c->acmd;
	bool msf = cdb[1] & 2;
	uint8_t format = cdb[2] & 0xf;
	uint8_t buf[32] = { 0 };
	size_t len;
	if (format == 0 && cdb[9] >> 6)
		format = cdb[9] >> 6;   /* the older place of the format field */
	if (format == 0) {
		uint8_t track = cdb[6];
		if (track > 1 && track != 0xaa) {
			atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x24, 0x00);
			return;
		}
		uint8_t *d = buf + 4;
		if (track <= 1) {
			d[1] = 0x14;   /* ADR 1, data track */
			d[2] = 1;
			if (msf)
				lba_to_msf(d + 4, 0);
			d += 8;
		}
		d[1] = 0x14;
		d[2] = 0xaa;       /* lead-out */
		if (msf)
			lba_to_msf(d + 4, p->nsect);
		else
			be32(d + 4, (uint32_t)p->nsect);
		d += 8;
		len = (size_t)(d - buf);
		buf[2] = 1;
		buf[3] = 1;
	} else if (format == 1) {
		buf[2] = 1;   /* first and last complete session */
		buf[3] = 1;
		buf[5] = 0x14;
		buf[6] = 1;   /* first track of the last session */
		if (msf)
			lba_to_msf(buf + 8, 0);
		len = 12;
	} else {
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x24, 0x00);
		return;
	}
	be16(buf, (uint32_t)len - 2);
	atapi_reply(p, c, buf, len, rbe16(cdb + 7));
}

static void atapi_get_config(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *cdb = c->acmd;
	uint8_t rt = cdb[1] & 3;
	uint32_t start = rbe16(cdb + 2);
	/* DVD-ROM for media larger than a CD holds. */
	uint16_t profile = p->nsect * ATAPI_SECTSZ > 900ull << 20 ? 0x0010 : 0x0008;
	uint8_t buf[64] = { 0 };
	size_t len = 8;
	be16(buf + 6, profile);
	if (rt != 3 && (start == 0 || rt == 0)) {
		/* Feature 0: profile list. */
		uint8_t *f = buf + len;
		be16(f, 0x0000);
		f[2] = 0x03;   /* persistent, current */
		f[3] = 4;
		be16(f + 4, profile);
		f[6] = 1;      /* current */
		len += 8;
	}
	if (rt != 3 && start <= 1) {
		/* Feature 1: core (ATAPI physical interface). */
		uint8_t *f = buf + len;
		be16(f, 0x0001);
		f[2] = 0x0b;   /* version 2, persistent, current */
		f[3] = 8;
		be32(f + 4, 2);   /* ATAPI */
		f[8] = 1;         /* DBE */
		len += 12;
	} else if (rt == 3 && start == 0) {
		uint8_t *f = buf + len;
		be16(f, 0x0000);
		f[2] = 0x03;
		f[3] = 4;
		be16(f + 4, profile);
		f[6] = 1;
		len += 8;
	}
	be32(buf, (uint32_t)len - 4);
	atapi_reply(p, c, buf, len, rbe16(cdb + 7));
}

static void atapi_get_event(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *cdb = c->acmd;
	uint8_t buf[8] = { 0 };
	size_t len;
	if (!(cdb[1] & 1)) {   /* asynchronous notification: not supported */
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x24, 0x00);
		return;
	}
	if (cdb[4] & 0x10) {
		be16(buf, 6);
		buf[2] = 0x04;     /* media class */
		buf[3] = 0x10;     /* supported: media */
		buf[4] = 0x00;     /* no change */
		buf[5] = 0x02;     /* media present, tray closed */
		len = 8;
	} else {
		be16(buf, 2);
		buf[2] = 0x80;     /* no event available */
		buf[3] = 0x10;
		len = 4;
	}
	atapi_reply(p, c, buf, len, rbe16(cdb + 7));
}

static void atapi_mode_sense(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *cdb = c->acmd;
	uint8_t page = cdb[2] & 0x3f, pc = cdb[2] >> 6;
	uint8_t buf[8 + 12 + 30] = { 0 };
	size_t len = 8;
	if (pc == 3) {     /* saved values */
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x39, 0x00);
		return;
	}
	if (page != 0x01 && page != 0x2a && page != 0x3f) {
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x24, 0x00);
		return;
	}
	if (page == 0x01 || page == 0x3f) {   /* read error recovery */
		uint8_t *m = buf + len;
		m[0] = 0x01;
		m[1] = 10;
		m[3] = pc == 1 ? 0 : 5;   /* read retry count */
		len += 12;
	}
	if (page == 0x2a || page == 0x3f) {   /* capabilities and mechanical status */
		uint8_t *m = buf + len;
		m[0] = 0x2a;
		m[1] = 28;
		if (pc != 1) {
			m[2] = 0x3b;      /* reads CD-R/RW, DVD-ROM/R/RAM */
			m[4] = 0x71;      /* multi-session, mode 2 form 1/2, audio play */
			m[5] = 0xff;
			m[6] = 0x29;      /* tray loader, eject, lock */
			be16(m + 8, 706); /* max read speed (obsolete) */
			be16(m + 10, 2);  /* volume levels */
			be16(m + 12, 512);
		}
		len += 30;
	}
	be16(buf, (uint32_t)len - 2);
	atapi_reply(p, c, buf, len, rbe16(cdb + 7));
}

static void atapi_read(struct ahci_port *p, const struct ahci_cmd *c, bool r12)
{
	const uint8_t *cdb = c->acmd;
	uint64_t lba = rbe32(cdb + 2);
	uint64_t n = r12 ? rbe32(cdb + 6) : rbe16(cdb + 7);
	if (lba > p->nsect || n > p->nsect - lba) {
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x21, 0x00);   /* LBA out of range */
		return;
	}
	if (n == 0) {
		atapi_ok(p, c->slot, 0);
		return;
	}
	uint64_t bytes = n * ATAPI_SECTSZ;
	if (bytes > 0xffffffffull) {
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x24, 0x00);
		return;
	}
	struct ahci_ioreq *io = &p->io[c->slot];
	ahci_io_prepare(p, io, c->slot, 0xa0);
	if (ahci_prdt_map(p, c, bytes, io)) {
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x24, 0x00);
		return;
	}
	io->bytes = (uint32_t)bytes;
	io->br.br_iovcnt = io->niov;
	io->br.br_offset = (off_t)(lba * ATAPI_SECTSZ);
	int err = blockif_read(p->bc, &io->br);
	if (err)
		atapi_read_done(p, io, err);
}

void atapi_read_done(struct ahci_port *p, struct ahci_ioreq *io, int err)
{
	if (err) {
		log_debug("%s: ATAPI read: %s", p->name, strerror(err));
		atapi_fail(p, io->slot, SK_MEDIUM_ERROR, 0x11, 0x00);   /* unrecovered read error */
		return;
	}
	for (int i = 0; i < io->niov; i++)
		vm_mark_dirty(p->sc->ctx, io->gpa[i], io->glen[i]);
	atapi_ok(p, io->slot, io->bytes);
}

void atapi_packet(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *cdb = c->acmd;
	switch (cdb[0]) {
	case ATAPI_TUR:
	case ATAPI_PREVENT_ALLOW:
	case ATAPI_START_STOP:   /* the medium stays: eject and load do nothing */
		atapi_ok(p, c->slot, 0);
		break;
	case ATAPI_REQUEST_SENSE:
		atapi_request_sense(p, c);
		break;
	case ATAPI_INQUIRY:
		atapi_inquiry(p, c);
		break;
	case ATAPI_READ_CAPACITY:
		atapi_read_capacity(p, c);
		break;
	case ATAPI_READ10:
		atapi_read(p, c, false);
		break;
	case ATAPI_READ12:
		atapi_read(p, c, true);
		break;
	case ATAPI_READ_TOC:
		atapi_read_toc(p, c);
		break;
	case ATAPI_GET_CONFIG:
		atapi_get_config(p, c);
		break;
	case ATAPI_GET_EVENT:
		atapi_get_event(p, c);
		break;
	case ATAPI_MODE_SENSE10:
		atapi_mode_sense(p, c);
		break;
	default:
		atapi_fail(p, c->slot, SK_ILLEGAL_REQUEST, 0x20, 0x00);   /* invalid command operation code */
		break;
	}
}
