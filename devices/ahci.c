/*
 * AHCI SATA controller (Serial ATA AHCI 1.3.1) over blockif, as bhyve's:
 *
 *   -s N,ahci,hd:PATH[,OPTS][,cd:PATH[,OPTS]]...   (ports 0, 1, ... in order, up to 32)
 *   -s N,ahci-hd,PATH[,OPTS]                       (one disk on port 0)
 *   -s N,ahci-cd,PATH[,OPTS]                       (one ATAPI CD-ROM on port 0)
 *
 * OPTS (per port, after its path): nocache, direct, ro, sectorsize=L[/P],
 * ser=S, nmrr=N, rev=R, model=M.  Config keys: pci.B.S.F.port.N.{type,path,
 * nocache,direct,ro,sectorsize,ser,nmrr,rev,model}.
 *
 * The ABAR is BAR 5 (generic host control at 0, port N at 0x100 + 0x80 N).
 * The guest's command lists, command tables, PRDTs and received-FIS areas
 * are reached through vm_map_gpa with every length checked; a command
 * whose header, table or PRD points outside RAM fails with a task file
 * error.  Disks take ATA commands (DMA, PIO, NCQ, flush, TRIM through
 * blockif discard, IDENTIFY, SET FEATURES, ...); CD-ROMs take ATAPI
 * PACKET commands (ahci_atapi.c) on read-only media that is always
 * present.  Interrupts go through MSI (one message) or INTx.  Stopping a
 * port (PxCMD.ST 1->0), COMRESET, HBA reset and checkpoints drain
 * blockif first; completions of commands the guest abandoned are dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/config.h"
#include "../core/log.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "ahci_internal.h"
#include "pci_emul.h"

#define AHCI_VENDOR 0x8086   /* bhyve's ids: Intel ICH8 AHCI */
#define AHCI_DEVICE 0x2821
#define AHCI_BAR 5
#define AHCI_BAR_SIZE 0x2000
#define AHCI_PORT_BASE 0x100
#define AHCI_PORT_SIZE 0x80

/* Generic host control. */
#define HBA_CAP   0x00
#define HBA_GHC   0x04
#define HBA_IS    0x08
#define HBA_PI    0x0c
#define HBA_VS    0x10
#define HBA_CAP2  0x24
#define HBA_BOHC  0x28
#define GHC_HR    0x1u
#define GHC_IE    0x2u
#define GHC_AE    0x80000000u

/* Port registers. */
#define P_CLB  0x00
#define P_CLBU 0x04
#define P_FB   0x08
#define P_FBU  0x0c
#define P_IS   0x10
#define P_IE   0x14
#define P_CMD  0x18
#define P_TFD  0x20
#define P_SIG  0x24
#define P_SSTS 0x28
#define P_SCTL 0x2c
#define P_SERR 0x30
#define P_SACT 0x34
#define P_CI   0x38
#define P_SNTF 0x3c

#define CMD_ST    0x1u
#define CMD_SUD   0x2u
#define CMD_POD   0x4u
#define CMD_CLO   0x8u
#define CMD_FRE   0x10u
#define CMD_CCS_SHIFT 8
#define CMD_FR    0x4000u
#define CMD_CR    0x8000u
#define CMD_ATAPI 0x01000000u

#define IS_DHRS 0x1u
#define IS_PSS  0x2u
#define IS_SDBS 0x8u
#define IS_HBFS 0x20000000u
#define IS_TFES 0x40000000u

#define SIG_ATA   0x00000101u
#define SIG_ATAPI 0xeb140101u

/* ATA commands. */
#define ATA_NOP               0x00
#define ATA_DSM               0x06
#define ATA_DEVICE_RESET      0x08
#define ATA_RECALIBRATE       0x10
#define ATA_READ              0x20
#define ATA_READ_NR           0x21
#define ATA_READ_EXT          0x24
#define ATA_READ_DMA_EXT      0x25
#define ATA_READ_MUL_EXT      0x29
#define ATA_READ_LOG_EXT      0x2f
#define ATA_WRITE             0x30
#define ATA_WRITE_NR          0x31
#define ATA_WRITE_EXT         0x34
#define ATA_WRITE_DMA_EXT     0x35
#define ATA_WRITE_MUL_EXT     0x39
#define ATA_WRITE_DMA_FUA_EXT 0x3d
#define ATA_READ_VERIFY       0x40
#define ATA_READ_VERIFY_NR    0x41
#define ATA_READ_VERIFY_EXT   0x42
#define ATA_READ_FPDMA        0x60
#define ATA_WRITE_FPDMA       0x61
#define ATA_SEEK              0x70
#define ATA_EXEC_DIAG         0x90
#define ATA_INIT_PARAMS       0x91
#define ATA_PACKET            0xa0
#define ATA_IDENTIFY_PACKET   0xa1
#define ATA_READ_MUL          0xc4
#define ATA_WRITE_MUL         0xc5
#define ATA_SET_MULTIPLE      0xc6
#define ATA_READ_DMA          0xc8
#define ATA_READ_DMA_NR       0xc9
#define ATA_WRITE_DMA         0xca
#define ATA_WRITE_DMA_NR      0xcb
#define ATA_STANDBY_IMM       0xe0
#define ATA_IDLE_IMM          0xe1
#define ATA_STANDBY           0xe2
#define ATA_IDLE              0xe3
#define ATA_CHECK_POWER       0xe5
#define ATA_SLEEP             0xe6
#define ATA_FLUSH             0xe7
#define ATA_FLUSH_EXT         0xea
#define ATA_IDENTIFY          0xec
#define ATA_SET_FEATURES      0xef

#define ST_OK (ATA_S_DRDY | ATA_S_DSC)

static uint32_t le32(const uint8_t *b) { uint32_t v; memcpy(&v, b, 4); return v; }

/* ---- received FIS area, interrupts ---- */

static uint8_t *fis_area(struct ahci_port *p)
{
	if (!(p->cmd & CMD_FRE))
		return NULL;
	return vm_map_gpa(p->sc->ctx, p->fb, 256);
}

static void fis_put(struct ahci_port *p, uint32_t off, const uint8_t *fis, size_t len)
{
	uint8_t *fb = fis_area(p);
	if (!fb)
		return;
	memcpy(fb + off, fis, len);
	vm_mark_dirty(p->sc->ctx, p->fb + off, len);
}

static void ahci_update_intx(struct ahci_sc *sc)
{
	bool level = (sc->ghc & GHC_IE) && sc->is && !pci_msi_enabled(sc->pi);
	if (level == sc->intx_level)
		return;
	sc->intx_level = level;
	if (level)
		pci_lintr_assert(sc->pi);
	else
		pci_lintr_deassert(sc->pi);
}

/* Port events happened: reflect them in IS.IPS and interrupt. */
static void ahci_port_intr(struct ahci_port *p)
{
	struct ahci_sc *sc = p->sc;
	if (!(p->is & p->ie))
		return;
	sc->is |= 1u << p->n;
	if (!(sc->ghc & GHC_IE))
		return;
	if (pci_msi_enabled(sc->pi))
		pci_generate_msi(sc->pi, 0);
	else
		ahci_update_intx(sc);
}

static void d2h_fis(struct ahci_port *p, uint8_t status, uint8_t error, uint8_t count, bool irq)
{
	uint8_t f[20] = { 0x34, irq ? 0x40 : 0, status, error };
	f[12] = count;
	fis_put(p, 0x40, f, sizeof(f));
}

/* The signature FIS a device sends after a reset. */
static void sig_fis(struct ahci_port *p)
{
	uint8_t f[20] = { 0x34, 0, (uint8_t)p->tfd, (uint8_t)(p->tfd >> 8) };
	f[4] = (uint8_t)(p->sig >> 8);    /* LBA low */
	f[5] = (uint8_t)(p->sig >> 16);   /* LBA mid */
	f[6] = (uint8_t)(p->sig >> 24);   /* LBA high */
	f[12] = (uint8_t)p->sig;          /* count */
	fis_put(p, 0x40, f, sizeof(f));
	p->reset_fis = false;
}

/*
 * A command is done: PRDBC, task file, the FIS, CI/SACT, PxIS and the
 * interrupt.  status with ERR set makes it a task file error: the port
 * takes nothing new until software stops it (PxCMD.ST 1->0).
 */
void ahci_finish(struct ahci_port *p, int slot, uint8_t status, uint8_t error, uint32_t bytes, bool pio,
                 uint8_t count)
{
	struct ahci_sc *sc = p->sc;
	uint32_t bit = 1u << slot;
	p->pending &= ~bit;
	if (!(p->cmd & CMD_ST))
		return;
	uint8_t *hdr = vm_map_gpa(sc->ctx, p->clb + 32u * (uint32_t)slot, 32);
	if (hdr) {
		memcpy(hdr + 4, &bytes, 4);   /* PRDBC */
		vm_mark_dirty(sc->ctx, p->clb + 32u * (uint32_t)slot + 4, 4);
	}
	p->tfd = (uint32_t)error << 8 | status;
	if (pio && !(status & ATA_S_ERR)) {
		uint8_t f[20] = { 0x5f, 0x20 | 0x40, ATA_S_DRDY | ATA_S_DSC | ATA_S_DRQ, error };
		f[12] = count;
		f[15] = status;   /* E_Status */
		f[16] = (uint8_t)bytes;
		f[17] = (uint8_t)(bytes >> 8);
		fis_put(p, 0x20, f, sizeof(f));
		p->is |= IS_PSS;
	}
	d2h_fis(p, status, error, count, true);
	p->ci &= ~bit;
	p->is |= IS_DHRS;
	if (status & ATA_S_ERR) {
		p->is |= IS_TFES;
		p->waitforclear = true;
	}
	ahci_port_intr(p);
}

/* NCQ completion: a Set Device Bits FIS clearing the tag in SActive. */
static void ahci_finish_ncq(struct ahci_port *p, int slot, uint8_t tag, uint8_t status, uint8_t error)
{
	uint32_t bit = 1u << slot;
	p->pending &= ~bit;
	if (!(p->cmd & CMD_ST))
		return;
	uint8_t f[8] = { 0xa1, 0x40, (uint8_t)(status & 0x77), error };
	uint32_t done = 1u << tag;
	if (status & ATA_S_ERR) {
		/* SActive stays set for a failed command: the driver reads the NCQ error log. */
		p->ncq_err = true;
		p->ncq_err_tag = tag;
		p->ncq_err_status = status;
		p->ncq_err_error = error;
		p->tfd = (uint32_t)error << 8 | status;
		p->is |= IS_TFES;
		p->waitforclear = true;
		done = 0;
	} else {
		p->sact &= ~done;
	}
	memcpy(f + 4, &done, 4);
	fis_put(p, 0x58, f, sizeof(f));
	p->is |= IS_SDBS;
	ahci_port_intr(p);
}

/* ---- PRDT ---- */

/* One PRD: data base address (word aligned) and byte count. */
static int prd_get(const struct ahci_cmd *c, uint32_t i, uint64_t *dba, uint32_t *dbc)
{
	uint8_t e[16];
	memcpy(e, c->prdt + 16 * (size_t)i, 16);   /* read once: the guest may change it */
	*dba = le32(e) | (uint64_t)le32(e + 4) << 32;
	*dbc = (le32(e + 12) & 0x3fffff) + 1;
	return (*dba & 1) ? -1 : 0;
}

int ahci_prdt_map(struct ahci_port *p, const struct ahci_cmd *c, uint64_t len, struct ahci_ioreq *io)
{
	io->niov = 0;
	for (uint32_t i = 0; i < c->prdtl && len > 0; i++) {
		uint64_t dba;
		uint32_t dbc;
		if (prd_get(c, i, &dba, &dbc))
			return -1;
		uint64_t n = dbc < len ? dbc : len;
		void *h = vm_map_gpa(p->sc->ctx, dba, n);
		if (!h)
			return -1;
		int k = io->niov;
		if (k > 0 && io->gpa[k - 1] + io->glen[k - 1] == dba &&
		    (uint8_t *)io->iov[k - 1].iov_base + io->iov[k - 1].iov_len == h) {
			io->iov[k - 1].iov_len += n;
			io->glen[k - 1] += (uint32_t)n;
		} else {
			if (k >= AHCI_MAX_PRD)
				return -1;
			io->iov[k].iov_base = h;
			io->iov[k].iov_len = n;
			io->gpa[k] = dba;
			io->glen[k] = (uint32_t)n;
			io->niov = k + 1;
		}
		len -= n;
	}
	return len ? -1 : 0;
}

/*
 * Copy between a host buffer and the command's PRDT regions, to the guest
 * (to_guest) or from it; returns the bytes copied (less than len when the
 * PRDT is shorter), or -1 for a region outside guest RAM.
 */
static int64_t prdt_copy(struct ahci_port *p, const struct ahci_cmd *c, uint8_t *buf, size_t len, bool to_guest)
{
	size_t off = 0;
	for (uint32_t i = 0; i < c->prdtl && off < len; i++) {
		uint64_t dba;
		uint32_t dbc;
		if (prd_get(c, i, &dba, &dbc))
			return -1;
		size_t n = dbc < len - off ? dbc : len - off;
		void *h = vm_map_gpa(p->sc->ctx, dba, n);
		if (!h)
			return -1;
		if (to_guest) {
			memcpy(h, buf + off, n);
			vm_mark_dirty(p->sc->ctx, dba, n);
		} else {
			memcpy(buf + off, h, n);
		}
		off += n;
	}
	return (int64_t)off;
}

int64_t ahci_prdt_out(struct ahci_port *p, const struct ahci_cmd *c, const void *buf, size_t len)
{
	return prdt_copy(p, c, (uint8_t *)(uintptr_t)buf, len, true);   /* only read on this path */
}

static int64_t prdt_in(struct ahci_port *p, const struct ahci_cmd *c, void *buf, size_t len)
{
	return prdt_copy(p, c, buf, len, false);
}

/* ---- I/O through blockif ---- */

static void ahci_io_done(struct blockif_req *br, int err);

void ahci_io_prepare(struct ahci_port *p, struct ahci_ioreq *io, int slot, uint8_t cmd)
{
	io->p = p;
	io->slot = slot;
	io->gen = p->gen;
	io->cmd = cmd;
	io->ncq = io->pio = io->write = io->flush_after = io->flushing = false;
	io->tag = 0;
	io->bytes = 0;
	io->niov = 0;
	io->dsm_n = io->dsm_next = 0;
	io->br = (struct blockif_req){ .br_iov = io->iov, .br_callback = ahci_io_done, .br_param = io };
}

static void io_complete(struct ahci_port *p, struct ahci_ioreq *io, int err)
{
	if (io->gen != p->gen) {        /* the port was stopped or reset meanwhile */
		p->pending &= ~(1u << io->slot);
		return;
	}
	if (io->cmd == ATA_PACKET) {
		atapi_read_done(p, io, err);
		return;
	}
	if (!err && !io->write)
		for (int i = 0; i < io->niov; i++)
			vm_mark_dirty(p->sc->ctx, io->gpa[i], io->glen[i]);
	uint8_t st = err ? ATA_S_DRDY | ATA_S_ERR : ST_OK;
	uint8_t er = !err ? 0 : err == EROFS ? ATA_E_ABRT : io->write ? ATA_E_ABRT : ATA_E_UNC;
	if (err)
		log_debug("%s: command 0x%02x: %s", p->name, io->cmd, strerror(err));
	if (io->ncq)
		ahci_finish_ncq(p, io->slot, io->tag, st, er);
	else
		ahci_finish(p, io->slot, st, er, err ? 0 : io->bytes, io->pio, 0);
}

static int dsm_next(struct ahci_port *p, struct ahci_ioreq *io)
{
	while (io->dsm_next < io->dsm_n) {
		uint64_t *r = io->dsm[io->dsm_next++];
		io->br = (struct blockif_req){ .br_offset = (off_t)r[0], .br_resid = (size_t)r[1],
		                               .br_callback = ahci_io_done, .br_param = io };
		int err = blockif_discard(p->bc, &io->br);
		if (err != EOPNOTSUPP)
			return err;
	}
	return -1;
}

/* blockif completion: main thread, an I/O thread, or a drain. */
static void ahci_io_done(struct blockif_req *br, int err)
{
	struct ahci_ioreq *io = br->br_param;
	struct ahci_port *p = io->p;
	pthread_mutex_lock(&p->sc->mtx);
	if (!err && io->gen == p->gen && io->flush_after && !io->flushing) {
		io->flushing = true;   /* FUA, or the write cache is off */
		io->br = (struct blockif_req){ .br_callback = ahci_io_done, .br_param = io };
		if ((err = blockif_flush(p->bc, &io->br)) == 0)
			goto out;
	}
	if (!err && io->cmd == ATA_DSM && io->gen == p->gen) {
		err = dsm_next(p, io);
		if (err == 0)
			goto out;
		if (err < 0)
			err = 0;
	}
	io_complete(p, io, err);
out:
	pthread_mutex_unlock(&p->sc->mtx);
}

/* ---- ATA commands ---- */

void ahci_pad_copy(char *dst, size_t n, const char *src)
{
	size_t l = strlen(src);
	memset(dst, ' ', n);
	memcpy(dst, src, l < n ? l : n);
	dst[n] = '\0';
}

/* ATA strings: two characters per word, the first in the high byte. */
static void ata_string(uint16_t *w, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i += 2)
		w[i / 2] = (uint16_t)((uint8_t)s[i] << 8 | (uint8_t)s[i + 1]);
}

static void ata_checksum(uint16_t id[256])
{
	uint8_t sum = 0xa5;
	id[255] = 0xa5;
	const uint8_t *b = (const uint8_t *)id;
	for (int i = 0; i < 511; i++)
		sum = (uint8_t)(sum + (i == 510 ? 0 : b[i]));
	id[255] = (uint16_t)(0xa5 | (uint8_t)(-sum) << 8);
}

static void ata_identify(struct ahci_port *p, uint16_t id[256])
{
	memset(id, 0, 512);
	uint64_t n = p->nsect;
	uint64_t cyl = n / (16 * 63);
	id[0] = 0x0040;
	id[1] = (uint16_t)(cyl > 16383 ? 16383 : cyl);
	id[3] = 16;
	id[6] = 63;
	ata_string(&id[10], p->ser, 20);
	ata_string(&id[23], p->rev, 8);
	ata_string(&id[27], p->model, 40);
	id[47] = 0x8000 | 128;
	id[49] = 0x0b00;            /* IORDY, LBA, DMA */
	id[50] = 0x4000;
	id[53] = 0x0006;            /* words 64-70 and 88 valid */
	id[54] = id[1];
	id[55] = 16;
	id[56] = 63;
	uint32_t chs = (uint32_t)id[1] * 16 * 63;
	id[57] = (uint16_t)chs;
	id[58] = (uint16_t)(chs >> 16);
	id[59] = (uint16_t)(p->mult ? 0x100 | p->mult : 0);
	uint32_t l28 = n > 0x0fffffff ? 0x0fffffff : (uint32_t)n;
	id[60] = (uint16_t)l28;
	id[61] = (uint16_t)(l28 >> 16);
	id[63] = 0x0007 | ((p->xfermode & 0xf8) == 0x20 ? 0x100 << (p->xfermode & 7) : 0);
	id[64] = 0x0003;
	id[65] = id[66] = id[67] = id[68] = 120;
	id[69] = p->candelete ? 0x4020 : 0;   /* deterministic, zeroed after TRIM */
	id[75] = 31;                          /* queue depth - 1 */
	id[76] = 0x010e;                      /* NCQ, Gen 1/2/3 */
	id[80] = 0x01f0;                      /* ATA/ATAPI-4 .. ACS-2 */
	id[81] = 0x0028;
	id[82] = 0x4000 | 0x0040 | 0x0020 | 0x0008;   /* NOP, look-ahead, write cache, power management */
	id[83] = 0x4000 | 0x2000 | 0x1000 | 0x0400;   /* flush ext, flush, 48-bit */
	id[84] = 0x4000 | 0x0040;                     /* WRITE DMA FUA EXT */
	id[85] = (uint16_t)(0x0040 | 0x0008 | (p->wce ? 0x0020 : 0));
	id[86] = 0x2000 | 0x1000 | 0x0400;
	id[87] = 0x4000 | 0x0040;
	id[88] = 0x007f | ((p->xfermode & 0xf8) == 0x40 ? 0x100 << (p->xfermode & 7) : 0);
	id[93] = 0;
	id[100] = (uint16_t)n;
	id[101] = (uint16_t)(n >> 16);
	id[102] = (uint16_t)(n >> 32);
	id[103] = (uint16_t)(n >> 48);
	id[105] = p->candelete ? AHCI_DSM_BLOCKS : 0;
	uint16_t w106 = 0x4000;
	uint32_t ratio = p->psectsz / p->sectsz;
	if (ratio > 1) {
		int l = 0;
		while ((1u << l) < ratio && l < 15)
			l++;
		w106 |= (uint16_t)(0x2000 | l);
	}
	if (p->sectsz > 512) {
		w106 |= 0x1000;
		id[117] = (uint16_t)(p->sectsz / 2);
		id[118] = (uint16_t)((p->sectsz / 2) >> 16);
	}
	id[106] = w106;
	id[169] = p->candelete ? 1 : 0;       /* TRIM */
	id[217] = p->nmrr;
	id[222] = 0x1000 | 0x003f;            /* SATA 1.0a .. 3.1 */
	ata_checksum(id);
}

void atapi_identify(struct ahci_port *p, uint16_t id[256])
{
	memset(id, 0, 512);
	id[0] = 2 << 14 | 5 << 8 | 1 << 7 | 2 << 5;   /* ATAPI, CD-ROM, removable, 12-byte packets */
	ata_string(&id[10], p->ser, 20);
	ata_string(&id[23], p->rev, 8);
	ata_string(&id[27], p->model, 40);
	id[49] = 0x0300;                              /* LBA, DMA */
	id[53] = 0x0006;
	id[62] = 0x0007 | ((p->xfermode & 0xf8) == 0x20 ? 0x100 << (p->xfermode & 7) : 0);
	id[63] = 0x0007;
	id[64] = 0x0003;
	id[65] = id[66] = id[67] = id[68] = 120;
	id[76] = 0x000e;
	id[80] = 0x01f0;
	id[82] = 0x4000 | 0x0200 | 0x0010 | 0x0008;   /* NOP, DEVICE RESET, PACKET, power management */
	id[83] = 0x4000;
	id[84] = 0x4000;
	id[85] = id[82];
	id[87] = 0x4000;
	id[88] = 0x007f | ((p->xfermode & 0xf8) == 0x40 ? 0x100 << (p->xfermode & 7) : 0);
	id[222] = 0x1000 | 0x003f;
	ata_checksum(id);
}

static void ata_abort(struct ahci_port *p, int slot)
{
	ahci_finish(p, slot, ATA_S_DRDY | ATA_S_ERR, ATA_E_ABRT, 0, false, 0);
}

/* LBA and count of a (non-NCQ) read/write command; false: out of range. */
static bool ata_lba(struct ahci_port *p, const uint8_t *f, bool ext, bool ncq, uint64_t *lba, uint32_t *count)
{
	if (ext || ncq) {
		*lba = f[4] | (uint64_t)f[5] << 8 | (uint64_t)f[6] << 16 | (uint64_t)f[8] << 24 | (uint64_t)f[9] << 32 |
		       (uint64_t)f[10] << 40;
		*count = ncq ? (uint32_t)(f[3] | f[11] << 8) : (uint32_t)(f[12] | f[13] << 8);
		if (*count == 0)
			*count = 65536;
	} else {
		*lba = f[4] | (uint64_t)f[5] << 8 | (uint64_t)f[6] << 16 | (uint64_t)(f[7] & 0xf) << 24;
		*count = f[12] ? f[12] : 256;
	}
	return *lba < p->nsect && *count <= p->nsect - *lba;
}

static void ata_rw(struct ahci_port *p, const struct ahci_cmd *c, uint8_t cmd, bool write, bool ext, bool ncq, bool pio)
{
	const uint8_t *f = c->cfis;
	uint64_t lba;
	uint32_t count;
	if (!ata_lba(p, f, ext, ncq, &lba, &count)) {
		if (ncq)
			ahci_finish_ncq(p, c->slot, (uint8_t)(f[12] >> 3), ATA_S_DRDY | ATA_S_ERR, ATA_E_IDNF);
		else
			ahci_finish(p, c->slot, ATA_S_DRDY | ATA_S_ERR, ATA_E_IDNF, 0, false, 0);
		return;
	}
	struct ahci_ioreq *io = &p->io[c->slot];
	ahci_io_prepare(p, io, c->slot, cmd);
	io->ncq = ncq;
	io->tag = (uint8_t)(f[12] >> 3);
	io->pio = pio;
	io->write = write;
	io->flush_after = write && (!p->wce || (ncq && (f[7] & 0x80)) || cmd == ATA_WRITE_DMA_FUA_EXT);
	uint64_t bytes = (uint64_t)count * p->sectsz;
	if ((write && p->ro) || ahci_prdt_map(p, c, bytes, io)) {
		if (ncq)
			ahci_finish_ncq(p, c->slot, io->tag, ATA_S_DRDY | ATA_S_ERR, ATA_E_ABRT);
		else
			ata_abort(p, c->slot);
		return;
	}
	if (ncq)
		p->ci &= ~(1u << c->slot);   /* queued: the command slot is free again */
	io->bytes = (uint32_t)bytes;
	io->br.br_iovcnt = io->niov;
	io->br.br_offset = (off_t)(lba * p->sectsz);
	int err = write ? blockif_write(p->bc, &io->br) : blockif_read(p->bc, &io->br);
	if (err)
		io_complete(p, io, err);
}

static void ata_dsm(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *f = c->cfis;
	uint32_t blocks = f[12] | f[13] << 8;
	if (!(f[3] & 1) || !p->candelete || p->ro || blocks == 0 || blocks > AHCI_DSM_BLOCKS) {
		ata_abort(p, c->slot);
		return;
	}
	uint8_t buf[AHCI_DSM_BLOCKS * 512];
	if (prdt_in(p, c, buf, blocks * 512u) != (int64_t)(blocks * 512u)) {
		ata_abort(p, c->slot);
		return;
	}
	struct ahci_ioreq *io = &p->io[c->slot];
	ahci_io_prepare(p, io, c->slot, ATA_DSM);
	io->write = true;
	for (uint32_t i = 0; i < blocks * 64; i++) {
		uint64_t e;
		memcpy(&e, buf + 8 * i, 8);
		uint64_t lba = e & 0xffffffffffffull, n = e >> 48;
		if (n == 0)
			continue;
		if (lba >= p->nsect || n > p->nsect - lba) {
			ahci_finish(p, c->slot, ATA_S_DRDY | ATA_S_ERR, ATA_E_IDNF, 0, false, 0);
			return;
		}
		io->dsm[io->dsm_n][0] = lba * p->sectsz;
		io->dsm[io->dsm_n][1] = n * p->sectsz;
		io->dsm_n++;
	}
	int err = dsm_next(p, io);
	if (err != 0)
		io_complete(p, io, err < 0 ? 0 : err);
}

static void ata_flush(struct ahci_port *p, const struct ahci_cmd *c, uint8_t cmd)
{
	struct ahci_ioreq *io = &p->io[c->slot];
	ahci_io_prepare(p, io, c->slot, cmd);
	io->write = true;
	io->br.br_iovcnt = 0;
	int err = blockif_flush(p->bc, &io->br);
	if (err)
		io_complete(p, io, err);
}

static void ata_read_log(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *f = c->cfis;
	uint8_t log = f[4];
	uint32_t pages = f[12] | f[13] << 8;
	uint8_t buf[512] = { 0 };
	if (pages != 1 || (log != 0x00 && log != 0x10) || (f[5] | f[9]) != 0) {
		ata_abort(p, c->slot);
		return;
	}
	if (log == 0x00) {
		buf[0] = 1;          /* log directory version */
		buf[0x10 * 2] = 1;   /* NCQ command error log: one page */
	} else {
		/* Reading it clears the NCQ error condition: the failed command is done. */
		buf[0] = p->ncq_err ? p->ncq_err_tag : 0x80;   /* NQ: not an NCQ error */
		buf[2] = p->ncq_err_status;
		buf[3] = p->ncq_err_error;
		if (p->ncq_err)
			p->sact &= ~(1u << p->ncq_err_tag);
		p->ncq_err = false;
		uint8_t sum = 0;
		for (int i = 0; i < 511; i++)
			sum = (uint8_t)(sum + buf[i]);
		buf[511] = (uint8_t)-sum;
	}
	int64_t n = ahci_prdt_out(p, c, buf, sizeof(buf));
	if (n != (int64_t)sizeof(buf)) {
		ata_abort(p, c->slot);
		return;
	}
	ahci_finish(p, c->slot, ST_OK, 0, 512, true, 0);
}

static void ata_set_features(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *f = c->cfis;
	switch (f[3]) {
	case 0x02:   /* enable write cache */
	case 0x82:
		if (p->atapi) {
			ata_abort(p, c->slot);
			return;
		}
		p->wce = f[3] == 0x02;
		break;
	case 0x03: { /* transfer mode */
		uint8_t m = f[12];
		if (!(m <= 0x01 || (m >= 0x08 && m <= 0x0c) || (m >= 0x20 && m <= 0x22) || (m >= 0x40 && m <= 0x46))) {
			ata_abort(p, c->slot);
			return;
		}
		p->xfermode = m;
		break;
	}
	case 0x10: case 0x90:   /* SATA features */
	case 0x55: case 0xaa:   /* read look-ahead */
	case 0x66: case 0xcc:   /* revert to power-on defaults */
		break;
	default:
		ata_abort(p, c->slot);
		return;
	}
	ahci_finish(p, c->slot, ST_OK, 0, 0, false, 0);
}

static void ata_identify_cmd(struct ahci_port *p, const struct ahci_cmd *c, bool packet)
{
	uint16_t id[256];
	if (packet)
		atapi_identify(p, id);
	else
		ata_identify(p, id);
	if (ahci_prdt_out(p, c, id, sizeof(id)) != (int64_t)sizeof(id)) {
		ata_abort(p, c->slot);
		return;
	}
	ahci_finish(p, c->slot, ST_OK, 0, sizeof(id), true, 0);
}

static void ata_verify(struct ahci_port *p, const struct ahci_cmd *c, bool ext)
{
	uint64_t lba;
	uint32_t count;
	if (!ata_lba(p, c->cfis, ext, false, &lba, &count))
		ahci_finish(p, c->slot, ATA_S_DRDY | ATA_S_ERR, ATA_E_IDNF, 0, false, 0);
	else
		ahci_finish(p, c->slot, ST_OK, 0, 0, false, 0);
}

static void ata_command(struct ahci_port *p, const struct ahci_cmd *c)
{
	const uint8_t *f = c->cfis;
	uint8_t cmd = f[2];
	if (p->atapi) {
		switch (cmd) {
		case ATA_PACKET:
			atapi_packet(p, c);
			return;
		case ATA_IDENTIFY_PACKET:
			ata_identify_cmd(p, c, true);
			return;
		case ATA_DEVICE_RESET:
		case ATA_EXEC_DIAG:
			p->tfd = 0x150;
			p->reset_fis = true;
			p->pending &= ~(1u << c->slot);
			p->ci &= ~(1u << c->slot);
			sig_fis(p);
			p->is |= IS_DHRS;
			ahci_port_intr(p);
			return;
		case ATA_IDENTIFY:
			/* ATAPI devices abort IDENTIFY DEVICE with their signature in the task file. */
			p->pending &= ~(1u << c->slot);
			p->tfd = (uint32_t)ATA_E_ABRT << 8 | ATA_S_DRDY | ATA_S_ERR;
			p->ci &= ~(1u << c->slot);
			sig_fis(p);
			p->is |= IS_DHRS | IS_TFES;
			p->waitforclear = true;
			ahci_port_intr(p);
			return;
		case ATA_SET_FEATURES:
			ata_set_features(p, c);
			return;
		case ATA_CHECK_POWER:
			ahci_finish(p, c->slot, ST_OK, 0, 0, false, 0xff);
			return;
		case ATA_STANDBY_IMM: case ATA_IDLE_IMM: case ATA_STANDBY: case ATA_IDLE: case ATA_SLEEP:
		case ATA_FLUSH:
			ahci_finish(p, c->slot, ST_OK, 0, 0, false, 0);
			return;
		default:
			ata_abort(p, c->slot);
			return;
		}
	}
	switch (cmd) {
	case ATA_READ_DMA: case ATA_READ_DMA_NR:
		ata_rw(p, c, cmd, false, false, false, false);
		break;
	case ATA_READ_DMA_EXT:
		ata_rw(p, c, cmd, false, true, false, false);
		break;
	case ATA_WRITE_DMA: case ATA_WRITE_DMA_NR:
		ata_rw(p, c, cmd, true, false, false, false);
		break;
	case ATA_WRITE_DMA_EXT: case ATA_WRITE_DMA_FUA_EXT:
		ata_rw(p, c, cmd, true, true, false, false);
		break;
	case ATA_READ_FPDMA:
	case ATA_WRITE_FPDMA:
		ata_rw(p, c, cmd, cmd == ATA_WRITE_FPDMA, true, true, false);
		break;
	case ATA_READ: case ATA_READ_NR: case ATA_READ_MUL:
		ata_rw(p, c, cmd, false, false, false, true);
		break;
	case ATA_READ_EXT: case ATA_READ_MUL_EXT:
		ata_rw(p, c, cmd, false, true, false, true);
		break;
	case ATA_WRITE: case ATA_WRITE_NR: case ATA_WRITE_MUL:
		ata_rw(p, c, cmd, true, false, false, true);
		break;
	case ATA_WRITE_EXT: case ATA_WRITE_MUL_EXT:
		ata_rw(p, c, cmd, true, true, false, true);
		break;
	case ATA_FLUSH:
	case ATA_FLUSH_EXT:
		ata_flush(p, c, cmd);
		break;
	case ATA_DSM:
		ata_dsm(p, c);
		break;
	case ATA_IDENTIFY:
		ata_identify_cmd(p, c, false);
		break;
	case ATA_SET_FEATURES:
		ata_set_features(p, c);
		break;
	case ATA_SET_MULTIPLE: {
		uint8_t n = f[12];
		if (n > 128 || (n & (n - 1))) {
			ata_abort(p, c->slot);
			return;
		}
		p->mult = n;
		ahci_finish(p, c->slot, ST_OK, 0, 0, false, 0);
		break;
	}
	case ATA_READ_VERIFY: case ATA_READ_VERIFY_NR:
		ata_verify(p, c, false);
		break;
	case ATA_READ_VERIFY_EXT:
		ata_verify(p, c, true);
		break;
	case ATA_READ_LOG_EXT:
		ata_read_log(p, c);
		break;
	case ATA_CHECK_POWER:
		ahci_finish(p, c->slot, ST_OK, 0, 0, false, 0xff);
		break;
	case ATA_EXEC_DIAG:
		ahci_finish(p, c->slot, ATA_S_DRDY | ATA_S_DSC, 0x01, 0, false, 1);
		break;
	case ATA_RECALIBRATE: case ATA_SEEK: case ATA_INIT_PARAMS:
	case ATA_STANDBY_IMM: case ATA_IDLE_IMM: case ATA_STANDBY: case ATA_IDLE: case ATA_SLEEP:
		ahci_finish(p, c->slot, ST_OK, 0, 0, false, 0);
		break;
	default:   /* NOP, PACKET, IDENTIFY PACKET, SMART, security, ... */
		ata_abort(p, c->slot);
		break;
	}
}

/* Fetch and start command `slot` (lock held). */
static void ahci_handle_slot(struct ahci_port *p, int slot)
{
	struct ahci_sc *sc = p->sc;
	uint8_t cfis[64], acmd[16];
	p->cmd = (p->cmd & ~(0x1fu << CMD_CCS_SHIFT)) | (uint32_t)slot << CMD_CCS_SHIFT;
	p->pending |= 1u << slot;
	const uint8_t *hdr = vm_map_gpa(sc->ctx, p->clb + 32u * (uint32_t)slot, 32);
	if (!hdr) {
		p->is |= IS_HBFS;
		ata_abort(p, slot);
		return;
	}
	uint32_t dw0 = le32(hdr);
	uint32_t prdtl = dw0 >> 16;
	uint64_t ctba = le32(hdr + 8) | (uint64_t)le32(hdr + 12) << 32;
	const uint8_t *tbl = (ctba & 0x7f) || prdtl > AHCI_MAX_PRD ? NULL
	                     : vm_map_gpa(sc->ctx, ctba, 0x80 + 16 * (size_t)prdtl);
	if (!tbl) {
		p->is |= IS_HBFS;
		ata_abort(p, slot);
		return;
	}
	memcpy(cfis, tbl, sizeof(cfis));
	memcpy(acmd, tbl + 0x40, sizeof(acmd));
	struct ahci_cmd c = { .slot = slot, .cfis = cfis, .acmd = acmd, .prdt = tbl + 0x80, .prdtl = prdtl };
	if (cfis[0] != 0x27 || !(cfis[1] & 0x80)) {
		/* Not a command (a device control FIS, SRST): done, nothing to report. */
		if (cfis[0] == 0x27 && (cfis[15] & 0x04)) {
			p->tfd = 0x150;
			p->reset_fis = true;
		}
		p->pending &= ~(1u << slot);
		p->ci &= ~(1u << slot);
		if (!(cfis[15] & 0x04) && p->reset_fis && cfis[0] == 0x27)
			sig_fis(p);
		return;
	}
	ata_command(p, &c);
}

static bool port_running(const struct ahci_port *p)
{
	return p->present && (p->cmd & CMD_ST) && !p->waitforclear && !p->sc->paused;
}

static void ahci_process(struct ahci_port *p)
{
	for (int s = 0; s < AHCI_MAX_SLOTS && port_running(p); s++) {
		uint32_t bit = 1u << s;
		if ((p->ci & bit) && !(p->pending & bit))
			ahci_handle_slot(p, s);
	}
}

/* ---- resets ---- */

/* COMRESET or HBA reset done: the device is there with its signature. */
static void port_reset_regs(struct ahci_port *p)
{
	p->ssts = p->present ? 0x133 : 0;   /* DET 3 (device, PHY up), Gen 3, IPM active */
	p->sig = p->atapi ? SIG_ATAPI : SIG_ATA;
	p->tfd = 0x150;                      /* error 1 (diagnostics passed), DRDY | DSC */
	p->sact = p->ci = 0;
	p->xfermode = 0x46;
	p->mult = 0;
	p->wce = true;
	p->sense_key = p->asc = p->ascq = 0;
	p->ncq_err = false;
	p->waitforclear = false;
	p->reset_fis = true;
	if (p->cmd & CMD_FRE)
		sig_fis(p);
}

/* Stop what the port has in flight (unlocks to drain; reset_mtx held). */
static void port_quiesce(struct ahci_port *p)
{
	struct ahci_sc *sc = p->sc;
	p->gen++;
	if (p->pending && p->bc) {
		pthread_mutex_unlock(&sc->mtx);
		blockif_drain(p->bc);
		pthread_mutex_lock(&sc->mtx);
	}
	p->pending = 0;
}

static void hba_reset(struct ahci_sc *sc)
{
	for (int i = 0; i < sc->nports; i++) {
		struct ahci_port *p = &sc->port[i];
		if (!p->present)
			continue;
		port_quiesce(p);
		p->clb = p->fb = 0;
		p->is = p->ie = p->serr = p->sctl = 0;
		p->cmd = CMD_SUD | CMD_POD | (p->atapi ? CMD_ATAPI : 0);
		port_reset_regs(p);
	}
	sc->ghc = GHC_AE;
	sc->is = 0;
	ahci_update_intx(sc);
}

/* ---- registers ---- */

static uint32_t port_read(struct ahci_port *p, uint32_t off)
{
	switch (off) {
	case P_CLB: return (uint32_t)p->clb;
	case P_CLBU: return (uint32_t)(p->clb >> 32);
	case P_FB: return (uint32_t)p->fb;
	case P_FBU: return (uint32_t)(p->fb >> 32);
	case P_IS: return p->is;
	case P_IE: return p->ie;
	case P_CMD: return p->cmd;
	case P_TFD: return p->tfd;
	case P_SIG: return p->sig;
	case P_SSTS: return p->ssts;
	case P_SCTL: return p->sctl;
	case P_SERR: return p->serr;
	case P_SACT: return p->sact;
	case P_CI: return p->ci;
	default: return 0;
	}
}

static void port_cmd_write(struct ahci_port *p, uint32_t val)
{
	uint32_t old = p->cmd;
	uint32_t rw = CMD_ST | CMD_SUD | CMD_POD | CMD_FRE | CMD_ATAPI | 0x0ffe0000u;   /* + ICC, ASP, ALPE, DLAE, ... */
	p->cmd = (old & ~rw) | (val & rw) | CMD_SUD | CMD_POD;
	if ((val & CMD_CLO) && !(val & CMD_ST))
		p->tfd &= ~(uint32_t)(ATA_S_BSY | ATA_S_DRQ);
	if (p->cmd & CMD_FRE) {
		p->cmd |= CMD_FR;
		if (!(old & CMD_FRE) && p->reset_fis)
			sig_fis(p);
	} else {
		p->cmd &= ~CMD_FR;
	}
	if ((p->cmd & CMD_ST) && !(old & CMD_ST)) {
		p->cmd |= CMD_CR;
		p->waitforclear = false;
		ahci_process(p);
	} else if (!(p->cmd & CMD_ST) && (old & CMD_ST)) {
		p->ci = p->sact = 0;
		p->cmd &= ~(CMD_CR | (0x1fu << CMD_CCS_SHIFT));
		p->waitforclear = false;
		port_quiesce(p);   /* the NCQ error log stays until it is read (or a reset) */
	}
}

static void port_write(struct ahci_port *p, uint32_t off, uint32_t val)
{
	switch (off) {
	case P_CLB:
		p->clb = (p->clb & ~0xffffffffull) | (val & ~0x3ffu);
		break;
	case P_CLBU:
		p->clb = (p->clb & 0xffffffffull) | (uint64_t)val << 32;
		break;
	case P_FB:
		p->fb = (p->fb & ~0xffffffffull) | (val & ~0xffu);
		break;
	case P_FBU:
		p->fb = (p->fb & 0xffffffffull) | (uint64_t)val << 32;
		break;
	case P_IS:
		p->is &= ~val;
		break;
	case P_IE:
		p->ie = val & 0xfdc000ffu;
		ahci_port_intr(p);
		break;
	case P_CMD:
		port_cmd_write(p, val);
		break;
	case P_SCTL:
		if (p->cmd & CMD_ST) {
			/* DET may only change while the port is stopped; SPD and IPM any time. */
			p->sctl = (p->sctl & 0xf) | (val & 0xff0);
			break;
		}
		if ((val & 0xf) == 1) {
			p->ssts = 0;   /* COMRESET asserted */
		} else if ((p->sctl & 0xf) == 1 && (val & 0xf) == 0) {
			port_quiesce(p);
			port_reset_regs(p);
		}
		p->sctl = val & 0xfff;
		break;
	case P_SERR:
		p->serr &= ~val;
		break;
	case P_SACT:
		if (p->cmd & CMD_ST)
			p->sact |= val;
		break;
	case P_CI:
		if (p->cmd & CMD_ST) {
			p->ci |= val;
			ahci_process(p);
		}
		break;
	default:
		break;   /* TFD, SIG, SSTS read-only; SNTF, FBS, DEVSLP: not implemented */
	}
}

static uint32_t hba_read(struct ahci_sc *sc, uint32_t off)
{
	if (off >= AHCI_PORT_BASE) {
		uint32_t n = (off - AHCI_PORT_BASE) / AHCI_PORT_SIZE;
		if (n >= AHCI_MAX_PORTS || !sc->port[n].present)
			return 0;
		return port_read(&sc->port[n], (off - AHCI_PORT_BASE) % AHCI_PORT_SIZE);
	}
	switch (off) {
	case HBA_CAP: return sc->cap;
	case HBA_GHC: return sc->ghc;
	case HBA_IS: return sc->is;
	case HBA_PI: return sc->pi_mask;
	case HBA_VS: return 0x00010300;
	default: return 0;   /* CCC, enclosure management, CAP2, BOHC: not implemented */
	}
}

static void hba_write(struct ahci_sc *sc, uint32_t off, uint32_t val)
{
	if (off >= AHCI_PORT_BASE) {
		uint32_t n = (off - AHCI_PORT_BASE) / AHCI_PORT_SIZE;
		if (n < AHCI_MAX_PORTS && sc->port[n].present)
			port_write(&sc->port[n], (off - AHCI_PORT_BASE) % AHCI_PORT_SIZE, val);
		ahci_update_intx(sc);
		return;
	}
	switch (off) {
	case HBA_GHC:
		if (val & GHC_HR) {
			hba_reset(sc);
			break;
		}
		sc->ghc = GHC_AE | (val & GHC_IE);
		/* Interrupts that were waiting for GHC.IE. */
		if ((sc->ghc & GHC_IE) && sc->is && pci_msi_enabled(sc->pi))
			pci_generate_msi(sc->pi, 0);
		ahci_update_intx(sc);
		break;
	case HBA_IS:
		sc->is &= ~val;
		/* A port with events still pending keeps its bit (and the interrupt). */
		for (int i = 0; i < sc->nports; i++)
			if ((val & (1u << i)) && (sc->port[i].is & sc->port[i].ie)) {
				sc->is |= 1u << i;
				if ((sc->ghc & GHC_IE) && pci_msi_enabled(sc->pi))
					pci_generate_msi(sc->pi, 0);
			}
		ahci_update_intx(sc);
		break;
	default:
		break;
	}
}

static uint64_t ahci_barread(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size)
{
	(void)vcpu;
	struct ahci_sc *sc = pi->pi_arg;
	if (baridx != AHCI_BAR || off >= AHCI_BAR_SIZE)
		return 0;
	pthread_mutex_lock(&sc->mtx);
	uint64_t v = hba_read(sc, (uint32_t)off & ~3u);
	if (size == 8)
		v |= (uint64_t)hba_read(sc, ((uint32_t)off & ~3u) + 4) << 32;
	pthread_mutex_unlock(&sc->mtx);
	if (size == 8)
		return (off & 3) ? 0 : v;
	if ((off & 3) + (uint64_t)size > 4)
		return 0;
	v >>= 8 * (off & 3);
	return size == 4 ? v : v & ((1ull << (8 * size)) - 1);
}

static void ahci_write32(struct ahci_sc *sc, uint32_t off, uint32_t val)
{
	pthread_mutex_lock(&sc->reset_mtx);
	pthread_mutex_lock(&sc->mtx);
	hba_write(sc, off, val);
	pthread_mutex_unlock(&sc->mtx);
	pthread_mutex_unlock(&sc->reset_mtx);
}

static void ahci_barwrite(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size,
                          uint64_t val)
{
	(void)vcpu;
	struct ahci_sc *sc = pi->pi_arg;
	if (baridx != AHCI_BAR || off >= AHCI_BAR_SIZE || (off & 3))
		return;
	if (size == 8) {
		ahci_write32(sc, (uint32_t)off, (uint32_t)val);
		ahci_write32(sc, (uint32_t)off + 4, (uint32_t)(val >> 32));
	} else if (size == 4) {
		ahci_write32(sc, (uint32_t)off, (uint32_t)val);
	}
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	for (const uint8_t *b = p; n--; b++)
		h = (h ^ *b) * 0x100000001b3ull;
	return h;
}

static int ahci_init(struct pci_devinst *pi, const char *cfgpath)
{
	struct ahci_port_opts o[AHCI_MAX_PORTS];
	char err[512];
	if (ahci_read_opts(cfgpath, false, o, err, sizeof(err)))
		fatal("%s", err);
	struct ahci_sc *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -1;
	sc->pi = pi;
	sc->ctx = pi->pi_vmctx;
	pthread_mutex_init(&sc->mtx, NULL);
	pthread_mutex_init(&sc->reset_mtx, NULL);
	const char *vm = get_config_value("name");
	uint64_t hv = fnv1a(0xcbf29ce484222325ull, vm ? vm : "", vm ? strlen(vm) + 1 : 1);
	for (int n = 0; n < AHCI_MAX_PORTS; n++) {
		struct ahci_port *p = &sc->port[n];
		struct ahci_port_opts *po = &o[n];
		p->sc = sc;
		p->n = n;
		if (!po->present)
			continue;
		p->present = true;
		p->atapi = po->atapi;
		sc->pi_mask |= 1u << n;
		sc->nports = n + 1;
		snprintf(p->name, sizeof(p->name), "%s port %d", pi->pi_name, n);
		struct blockif_opts bo = { .name = p->name, .ro = po->ro || po->atapi, .nocache = po->nocache,
		                           .sync = po->direct, .sectsz = (uint32_t)po->sectsz,
		                           .psectsz = (uint32_t)po->psectsz, .depth = AHCI_MAX_SLOTS };
		p->bc = blockif_open(po->path, &bo, err, sizeof(err));
		if (!p->bc)
			fatal("config: %s.port.%d.path: %s", cfgpath, n, err);
		p->ro = blockif_is_ro(p->bc) || po->atapi;
		if (p->atapi) {
			p->sectsz = p->psectsz = ATAPI_SECTSZ;
		} else {
			p->sectsz = blockif_sectsz(p->bc);
			p->psectsz = blockif_psectsz(p->bc);
			if (p->sectsz != 512 && p->sectsz != 4096)
				fatal("config: %s.port.%d.path: %s: %u-byte sectors (add sectorsize=512 or 4096)", cfgpath, n,
				      po->path, p->sectsz);
			if (p->psectsz < p->sectsz || p->psectsz > 65536 || (p->psectsz & (p->psectsz - 1)))
				p->psectsz = p->sectsz;
		}
		p->nsect = (uint64_t)blockif_size(p->bc) / p->sectsz;
		if (p->nsect == 0 && !p->atapi)
			fatal("config: %s.port.%d.path: %s is smaller than one %u-byte sector", cfgpath, n, po->path,
			      p->sectsz);
		p->candelete = !p->ro && blockif_candelete(p->bc);
		p->nmrr = (uint16_t)(po->have_nmrr ? po->nmrr : 0);
		char ser[32];
		if (po->ser)
			snprintf(ser, sizeof(ser), "%s", po->ser);
		else
			snprintf(ser, sizeof(ser), "HYVE-%08X-%02u%02d", (unsigned)(hv >> 32), pi->pi_slot, n);
		ahci_pad_copy(p->ser, 20, ser);
		ahci_pad_copy(p->model, 40, po->model ? po->model : p->atapi ? "HYVE SATA DVD ROM" : "HYVE SATA DISK");
		ahci_pad_copy(p->rev, 8, po->rev ? po->rev : "001");
		for (int s = 0; s < AHCI_MAX_SLOTS; s++) {
			struct ahci_ioreq *io = &p->io[s];
			io->iov = calloc(AHCI_MAX_PRD, sizeof(*io->iov));
			io->gpa = calloc(AHCI_MAX_PRD, sizeof(*io->gpa));
			io->glen = calloc(AHCI_MAX_PRD, sizeof(*io->glen));
			if (!io->iov || !io->gpa || !io->glen)
				fatal("%s: out of memory", pi->pi_name);
			io->p = p;
		}
		log_debug("%s: %s: %s, %llu %u-byte sectors%s%s", p->name, po->path, p->atapi ? "ATAPI CD-ROM" : "disk",
		          (unsigned long long)p->nsect, p->sectsz, p->ro ? ", read-only" : "",
		          p->candelete ? ", TRIM" : "");
	}
	sc->cap = 1u << 31 |   /* S64A */
	          1u << 30 |   /* SNCQ */
	          1u << 27 |   /* SSS */
	          1u << 24 |   /* SCLO */
	          3u << 20 |   /* ISS: Gen 3 */
	          1u << 18 |   /* SAM: AHCI only */
	          1u << 14 |   /* SSC */
	          1u << 13 |   /* PSC */
	          31u << 8 |   /* NCS: 32 slots */
	          (uint32_t)(sc->nports - 1);
	pi->pi_arg = sc;
	hba_reset(sc);

	pci_set_cfgdata16(pi, PCIR_VENDOR, AHCI_VENDOR);
	pci_set_cfgdata16(pi, PCIR_DEVICE, AHCI_DEVICE);
	pci_set_cfgdata8(pi, PCIR_CLASS, 0x01);      /* mass storage */
	pci_set_cfgdata8(pi, PCIR_SUBCLASS, 0x06);   /* SATA */
	pci_set_cfgdata8(pi, PCIR_PROGIF, 0x01);     /* AHCI 1.0 */
	if (pci_emul_add_msicap(pi, 1) || pci_emul_alloc_bar(pi, AHCI_BAR, PCIBAR_MEM32, AHCI_BAR_SIZE) ||
	    pci_lintr_request(pi))
		return -1;
	return 0;
}

/* ---- checkpoint ---- */

#define AHCI_SNAPSHOT_VERSION 1

static int ahci_snapshot(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen)
{
	struct ahci_sc *sc = pi->pi_arg;
	pthread_mutex_lock(&sc->mtx);
	for (int i = 0; i < sc->nports; i++)
		if (sc->port[i].pending) {
			pthread_mutex_unlock(&sc->mtx);
			snprintf(err, errlen, "port %d: commands still in flight (not quiesced)", i);
			return -1;
		}
	sb_u32(out, sc->pi_mask);
	sb_u32(out, sc->ghc);
	sb_u32(out, sc->is);
	for (int i = 0; i < sc->nports; i++) {
		const struct ahci_port *p = &sc->port[i];
		if (!p->present)
			continue;
		sb_bool(out, p->atapi);
		sb_u64(out, p->nsect);
		sb_u32(out, p->sectsz);
		sb_u64(out, p->clb);
		sb_u64(out, p->fb);
		sb_u32(out, p->is);
		sb_u32(out, p->ie);
		sb_u32(out, p->cmd);
		sb_u32(out, p->tfd);
		sb_u32(out, p->sig);
		sb_u32(out, p->ssts);
		sb_u32(out, p->sctl);
		sb_u32(out, p->serr);
		sb_u32(out, p->sact);
		sb_u32(out, p->ci);
		sb_bool(out, p->waitforclear);
		sb_bool(out, p->reset_fis);
		sb_bool(out, p->wce);
		sb_u8(out, p->xfermode);
		sb_u8(out, p->mult);
		sb_u8(out, p->sense_key);
		sb_u8(out, p->asc);
		sb_u8(out, p->ascq);
		sb_bool(out, p->ncq_err);
		sb_u8(out, p->ncq_err_tag);
		sb_u8(out, p->ncq_err_status);
		sb_u8(out, p->ncq_err_error);
	}
	pthread_mutex_unlock(&sc->mtx);
	return 0;
}

static int ahci_restore(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	struct ahci_sc *sc = pi->pi_arg;
	struct ahci_port *saved = NULL;
	if (version != AHCI_SNAPSHOT_VERSION) {
		snprintf(err, errlen, "AHCI state version %u (this hyve reads %u)", version, AHCI_SNAPSHOT_VERSION);
		return -1;
	}
	uint32_t mask = sr_u32(in), ghc = sr_u32(in), is = sr_u32(in);
	if (!sr_ok(in) || mask != sc->pi_mask || (ghc & ~(GHC_AE | GHC_IE)) || (is & ~mask)) {
		snprintf(err, errlen, "saved HBA has ports 0x%x, this one 0x%x (or its registers are inconsistent)",
		         mask, sc->pi_mask);
		return -1;
	}
	/* Only the register part of each is used (a port is large: its requests). */
	if (!(saved = calloc((size_t)sc->nports, sizeof(*saved)))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int i = 0; i < sc->nports; i++) {
		struct ahci_port *p = &saved[i];
		if (!sc->port[i].present)
			continue;
		bool atapi = sr_bool(in);
		uint64_t nsect = sr_u64(in);
		uint32_t sectsz = sr_u32(in);
		p->clb = sr_u64(in);
		p->fb = sr_u64(in);
		p->is = sr_u32(in);
		p->ie = sr_u32(in);
		p->cmd = sr_u32(in);
		p->tfd = sr_u32(in);
		p->sig = sr_u32(in);
		p->ssts = sr_u32(in);
		p->sctl = sr_u32(in);
		p->serr = sr_u32(in);
		p->sact = sr_u32(in);
		p->ci = sr_u32(in);
		p->waitforclear = sr_bool(in);
		p->reset_fis = sr_bool(in);
		p->wce = sr_bool(in);
		p->xfermode = sr_u8(in);
		p->mult = sr_u8(in);
		p->sense_key = sr_u8(in);
		p->asc = sr_u8(in);
		p->ascq = sr_u8(in);
		p->ncq_err = sr_bool(in);
		p->ncq_err_tag = sr_u8(in);
		p->ncq_err_status = sr_u8(in);
		p->ncq_err_error = sr_u8(in);
		if (!sr_ok(in)) {
			snprintf(err, errlen, "AHCI port %d state truncated", i);
			free(saved);
			return -1;
		}
		if (atapi != sc->port[i].atapi || nsect != sc->port[i].nsect || sectsz != sc->port[i].sectsz) {
			snprintf(err, errlen, "port %d: saved %s of %llu %u-byte sectors; the configured one differs", i,
			         atapi ? "CD" : "disk", (unsigned long long)nsect, sectsz);
			free(saved);
			return -1;
		}
		if ((p->clb & 0x3ff) || (p->fb & 0xff) || p->ncq_err_tag > 31 || p->sense_key > 0xf) {
			snprintf(err, errlen, "port %d: registers are inconsistent", i);
			free(saved);
			return -1;
		}
	}
	pthread_mutex_lock(&sc->reset_mtx);
	pthread_mutex_lock(&sc->mtx);
	for (int i = 0; i < sc->nports; i++) {
		struct ahci_port *p = &sc->port[i], *s = &saved[i];
		if (!p->present)
			continue;
		port_quiesce(p);
		p->clb = s->clb;
		p->fb = s->fb;
		p->is = s->is;
		p->ie = s->ie;
		p->cmd = s->cmd;
		p->tfd = s->tfd;
		p->sig = s->sig;
		p->ssts = s->ssts;
		p->sctl = s->sctl;
		p->serr = s->serr;
		p->sact = s->sact;
		p->ci = s->ci;
		p->waitforclear = s->waitforclear;
		p->reset_fis = s->reset_fis;
		p->wce = s->wce;
		p->xfermode = s->xfermode;
		p->mult = s->mult;
		p->sense_key = s->sense_key;
		p->asc = s->asc;
		p->ascq = s->ascq;
		p->ncq_err = s->ncq_err;
		p->ncq_err_tag = s->ncq_err_tag;
		p->ncq_err_status = s->ncq_err_status;
		p->ncq_err_error = s->ncq_err_error;
	}
	sc->ghc = ghc | GHC_AE;
	sc->is = is;
	sc->intx_level = pi->pi_lintr_asserted;
	ahci_update_intx(sc);
	pthread_mutex_unlock(&sc->mtx);
	pthread_mutex_unlock(&sc->reset_mtx);
	free(saved);
	return 0;
}

/* Checkpoint/migration: no new commands, wait for what blockif holds. */
static void ahci_pause(struct pci_devinst *pi)
{
	struct ahci_sc *sc = pi->pi_arg;
	pthread_mutex_lock(&sc->mtx);
	sc->paused = true;
	pthread_mutex_unlock(&sc->mtx);
	for (int i = 0; i < sc->nports; i++)
		if (sc->port[i].present)
			blockif_drain(sc->port[i].bc);
}

static void ahci_resume(struct pci_devinst *pi)
{
	struct ahci_sc *sc = pi->pi_arg;
	pthread_mutex_lock(&sc->mtx);
	sc->paused = false;
	/* Commands issued while paused (or that a restored VM's old process had not fetched). */
	for (int i = 0; i < sc->nports; i++)
		if (sc->port[i].present)
			ahci_process(&sc->port[i]);
	pthread_mutex_unlock(&sc->mtx);
}

#define AHCI_DEVEMU(var, name, help, legacy)                                                   \
	static const struct pci_devemu var = {                                                 \
		.pe_emu = name,                                                                \
		.pe_help = help,                                                               \
		.pe_options = ahci_options,                                                    \
		.pe_legacy_config = legacy,                                                    \
		.pe_init = ahci_init,                                                          \
		.pe_barwrite = ahci_barwrite,                                                  \
		.pe_barread = ahci_barread,                                                    \
		.pe_snapshot_version = AHCI_SNAPSHOT_VERSION,                                  \
		.pe_snapshot = ahci_snapshot,                                                  \
		.pe_restore = ahci_restore,                                                    \
		.pe_pause = ahci_pause,                                                        \
		.pe_resume = ahci_resume,                                                      \
	};                                                                                     \
	PCI_EMUL_REGISTER(var)

#define AHCI_PORT_HELP "[,nocache][,direct][,ro][,sectorsize=L[/P]][,ser=S][,nmrr=N][,rev=R][,model=M]"
AHCI_DEVEMU(pci_de_ahci, "ahci", "AHCI SATA controller: hd:PATH" AHCI_PORT_HELP "[,cd:PATH[,...]]...",
            ahci_legacy_config)
AHCI_DEVEMU(pci_de_ahci_hd, "ahci-hd", "AHCI SATA disk: PATH" AHCI_PORT_HELP, ahci_hd_legacy_config)
AHCI_DEVEMU(pci_de_ahci_cd, "ahci-cd", "AHCI ATAPI CD-ROM: PATH" AHCI_PORT_HELP, ahci_cd_legacy_config)
