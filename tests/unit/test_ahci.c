/*
 * Unit test for the AHCI HBA (devices/ahci.c, ahci_atapi.c, ahci_config.c) with
 * only the KVM layer stubbed (tests/fuzz/nvme_stubs.c): one HBA with a
 * disk on port 0 and a CD-ROM on port 1, built by init_run_all from a
 * configuration as hyve builds it, and an ahci-hd on a read-only image.
 * The test is the guest driver and goes the way Linux's ahci/libata does:
 * HBA reset, port start (CLB/FB/FRE/ST, signature FIS), IDENTIFY, DMA,
 * PIO and NCQ reads and writes checked against the image file on the
 * host, FLUSH, TRIM, SET FEATURES; errors (LBAs past the end, PRDs
 * outside RAM or too short, command tables outside RAM, unknown
 * commands, writes to a read-only disk) with the port restart a driver
 * does after them; the NCQ error log; ATAPI INQUIRY, READ CAPACITY,
 * READ(10) of an ISO 9660 image (genisoimage, or a data file with the
 * volume descriptor written by hand), READ TOC, sense data; MSI and
 * INTx; checkpoint save and restore, after which the HBA goes on.
 * test-sources: tests/fuzz/nvme_stubs.c devices/ahci.c devices/ahci_atapi.c devices/ahci_config.c devices/pci_emul.c devices/blockif.c devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c devices/qcow2_snapshot.c core/config.c core/snapshot.c core/init.c core/inout.c core/mmio.c
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
#include "../../devices/pci_emul.h"
#include "../fuzz/nvme_stubs.h"

#include "check.h"

#define DISK_SECTORS 16384u            /* 8 MiB */
#define CLB(p)  (0x10000ull + (uint64_t)(p) * 0x2000)
#define FB(p)   (0x11000ull + (uint64_t)(p) * 0x2000)
#define CTBA(p, s) (0x40000ull + (uint64_t)(p) * 0x20000 + (uint64_t)(s) * 0x1000)
#define BUF     0x100000ull
#define BUF2    0x200000ull

static uint64_t abar;
static int slot_no = 4;
static char tmpdir[64], disk[96], iso[96], rodisk[96];

static uint32_t hba_rd(uint32_t off) { return (uint32_t)nh_mmio_read(abar + off, 4); }
static void hba_wr(uint32_t off, uint32_t v) { nh_mmio_write(abar + off, 4, v); }
static uint32_t prd(int p, uint32_t off) { return hba_rd(0x100 + 0x80 * (uint32_t)p + off); }
static void pwr(int p, uint32_t off, uint32_t v) { hba_wr(0x100 + 0x80 * (uint32_t)p + off, v); }

struct prd { uint64_t gpa; uint32_t len; };

static void h2d(uint8_t f[20], uint8_t cmd, uint64_t lba, uint32_t count, uint16_t feat)
{
	memset(f, 0, 20);
	f[0] = 0x27;
	f[1] = 0x80;
	f[2] = cmd;
	f[3] = (uint8_t)feat;
	f[4] = (uint8_t)lba;
	f[5] = (uint8_t)(lba >> 8);
	f[6] = (uint8_t)(lba >> 16);
	f[7] = 0x40;
	f[8] = (uint8_t)(lba >> 24);
	f[9] = (uint8_t)(lba >> 32);
	f[10] = (uint8_t)(lba >> 40);
	f[11] = (uint8_t)(feat >> 8);
	f[12] = (uint8_t)count;
	f[13] = (uint8_t)(count >> 8);
}

static void build(int port, int slot, const uint8_t cfis[20], const uint8_t *acmd, const struct prd *prds, int n,
                  bool write)
{
	uint8_t *hdr = nh_ptr(CLB(port) + 32u * (uint32_t)slot, 32);
	uint32_t dw0 = 5 | (acmd ? 0x20 : 0) | (write ? 0x40 : 0) | (uint32_t)n << 16, z = 0;
	uint64_t ctba = CTBA(port, slot);
	memcpy(hdr, &dw0, 4);
	memcpy(hdr + 4, &z, 4);
	memcpy(hdr + 8, &ctba, 8);
	uint8_t *t = nh_ptr(ctba, 0x80 + 16 * (size_t)n);
	memset(t, 0, 0x80);
	memcpy(t, cfis, 20);
	if (acmd)
		memcpy(t + 0x40, acmd, 16);
	for (int i = 0; i < n; i++) {
		uint8_t *e = t + 0x80 + 16 * i;
		uint32_t dw3 = (prds[i].len - 1) | (i == n - 1 ? 1u << 31 : 0);
		memset(e, 0, 16);
		memcpy(e, &prds[i].gpa, 8);
		memcpy(e + 12, &dw3, 4);
	}
}

static uint32_t prdbc(int port, int slot)
{
	uint32_t v;
	memcpy(&v, nh_ptr(CLB(port) + 32u * (uint32_t)slot + 4, 4), 4);
	return v;
}

/* Wait until (reg & mask) == 0, running blockif completions. */
static bool wait_clear(int port, uint32_t reg, uint32_t mask)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (!(prd(port, reg) & mask))
			return true;
		if (nh_poll() == 0)
			usleep(200);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > 5000)
			return false;
	}
}

/* Issue slot and wait for it; returns PxTFD. */
static uint32_t run(int port, int slot)
{
	pwr(port, 0x38, 1u << slot);
	if (!wait_clear(port, 0x38, 1u << slot))
		printf("# slot %d on port %d did not complete\n", slot, port);
	return prd(port, 0x20);
}

static uint32_t ata(int port, uint8_t cmd, uint64_t lba, uint32_t count, uint16_t feat, const struct prd *prds, int n,
                    bool write)
{
	uint8_t f[20];
	h2d(f, cmd, lba, count, feat);
	build(port, 0, f, NULL, prds, n, write);
	return run(port, 0);
}

static void port_start(int p)
{
	pwr(p, 0x18, prd(p, 0x18) & ~0x11u);   /* ST, FRE off */
	pwr(p, 0x00, (uint32_t)CLB(p));
	pwr(p, 0x04, 0);
	pwr(p, 0x08, (uint32_t)FB(p));
	pwr(p, 0x0c, 0);
	memset(nh_ptr(FB(p), 256), 0, 256);
	pwr(p, 0x18, prd(p, 0x18) | 0x10);     /* FRE */
	pwr(p, 0x30, 0xffffffff);              /* SERR */
	pwr(p, 0x10, 0xffffffff);              /* IS */
	pwr(p, 0x14, 0x7d40003f);              /* IE: Linux's default mask */
	pwr(p, 0x18, prd(p, 0x18) | 0x1);      /* ST */
}

/* After a task file error: stop, clear, start (libata EH). */
static void port_restart(int p)
{
	pwr(p, 0x18, prd(p, 0x18) & ~0x1u);
	pwr(p, 0x30, 0xffffffff);
	pwr(p, 0x10, 0xffffffff);
	hba_wr(0x08, 0xffffffff);
	pwr(p, 0x18, prd(p, 0x18) | 0x1);
}

static uint8_t pattern(uint64_t lba, uint32_t i) { return (uint8_t)(lba * 7 + i * 13 + (i >> 9)); }

static bool file_matches(const char *path, uint64_t off, const void *want, size_t len)
{
	uint8_t *b = malloc(len);
	int fd = open(path, O_RDONLY);
	bool ok = fd >= 0 && pread(fd, b, len, (off_t)off) == (ssize_t)len && memcmp(b, want, len) == 0;
	if (fd >= 0)
		close(fd);
	free(b);
	return ok;
}

static void t_hba(void)
{
	uint32_t cap = hba_rd(0x00);
	CHECK((cap & 0x1f) == 1 && ((cap >> 8) & 0x1f) == 31 && (cap & (1u << 30)) && (cap & (1u << 31)),
	      "CAP: 2 ports, 32 slots, NCQ, 64-bit (0x%08x)", cap);
	CHECK(hba_rd(0x0c) == 0x3, "PI: ports 0 and 1");
	CHECK(hba_rd(0x10) == 0x00010300, "VS 1.3");
	CHECK(hba_rd(0x04) & 0x80000000u, "GHC.AE");
	CHECK(nh_cfg_read(slot_no, 0x08, 4) >> 8 == 0x010601, "class: mass storage, SATA, AHCI");
	hba_wr(0x04, 1);
	CHECK((hba_rd(0x04) & 1) == 0, "HBA reset done at once");
	CHECK((prd(0, 0x28) & 0xf) == 3 && prd(0, 0x24) == 0x101, "port 0: device present, ATA signature");
	CHECK((prd(1, 0x28) & 0xf) == 3 && prd(1, 0x24) == 0xeb140101, "port 1: ATAPI signature");
	/* MSI: one message, data 0x41. */
	int cap_off = 0;
	for (int p = nh_cfg_read(slot_no, 0x34, 1); p; p = nh_cfg_read(slot_no, p + 1, 1))
		if (nh_cfg_read(slot_no, p, 1) == 0x05)
			cap_off = p;
	CHECK(cap_off != 0, "MSI capability");
	nh_cfg_write(slot_no, cap_off + 4, 4, 0xfee00000);
	nh_cfg_write(slot_no, cap_off + 8, 4, 0);
	nh_cfg_write(slot_no, cap_off + 12, 2, 0x41);
	nh_cfg_write(slot_no, cap_off + 2, 2, 1);
	for (int p = 0; p < 2; p++) {
		port_start(p);
		const uint8_t *fis = nh_ptr(FB(p) + 0x40, 20);
		CHECK(fis[0] == 0x34 && fis[12] == 1 && fis[4] == 1 && fis[6] == (p ? 0xeb : 0),
		      "port %d: signature FIS when FRE is set", p);
		CHECK((prd(p, 0x18) & 0xc011) == 0xc011, "port %d: ST, FRE, CR, FR", p);
	}
	hba_wr(0x04, 0x80000002);   /* GHC.IE */
}

static void t_identify(void)
{
	nh_msi_reset();
	struct prd pr = { BUF, 512 };
	memset(nh_ptr(BUF, 512), 0xcc, 512);
	uint32_t tfd = ata(0, 0xec, 0, 0, 0, &pr, 1, false);
	const uint16_t *id = nh_ptr(BUF, 512);
	uint8_t sum = 0;
	for (int i = 0; i < 512; i++)
		sum = (uint8_t)(sum + ((const uint8_t *)id)[i]);
	CHECK((tfd & 0xff) == 0x50 && prdbc(0, 0) == 512, "IDENTIFY DEVICE: status 0x%x, 512 bytes", tfd);
	CHECK(id[0] == 0x40 && sum == 0 && (id[255] & 0xff) == 0xa5, "IDENTIFY: fixed disk, checksum");
	uint64_t n = id[100] | (uint64_t)id[101] << 16 | (uint64_t)id[102] << 32;
	CHECK(n == DISK_SECTORS && (id[83] & 0x400) && (id[76] & 0x100) && id[75] == 31,
	      "IDENTIFY: %llu sectors, 48-bit, NCQ depth 32", (unsigned long long)n);
	CHECK(memcmp(&id[27], "YHEV", 4) == 0 || memcmp(&id[27], "YM", 2) == 0, "IDENTIFY: model string (byte-swapped)");
	CHECK(id[10] == ('S' << 8 | 'E') || id[10] == ('H' << 8 | 'Y'), "IDENTIFY: serial");
	CHECK(prd(0, 0x10) & 0x3, "PxIS: DHRS and PSS");
	CHECK(hba_rd(0x08) & 1, "IS: port 0");
	CHECK(nh_msi_count() >= 1 && nh_msi_data(0) == 0x41, "MSI raised (%u)", nh_msi_count());
	pwr(0, 0x10, 0xffffffff);
	hba_wr(0x08, 1);
	CHECK(hba_rd(0x08) == 0, "IS cleared");
}

static void t_dma(void)
{
	/* WRITE DMA EXT, 16 sectors at LBA 100 from three PRDs. */
	uint8_t *src = nh_ptr(BUF, 8192);
	for (uint32_t i = 0; i < 8192; i++)
		src[i] = pattern(100, i);
	struct prd w[3] = { { BUF, 4096 }, { BUF + 4096, 2048 }, { BUF + 6144, 2048 } };
	uint32_t tfd = ata(0, 0x35, 100, 16, 0, w, 3, true);
	CHECK((tfd & 0xff) == 0x50 && prdbc(0, 0) == 8192, "WRITE DMA EXT: status 0x%x, PRDBC %u", tfd, prdbc(0, 0));
	CHECK(file_matches(disk, 100 * 512, src, 8192), "written data in the image");
	/* READ DMA EXT into two PRDs, one of them in RAM above 4 GiB. */
	memset(nh_ptr(BUF2, 8192), 0, 8192);
	memset(nh_ptr(NH_RAM1_BASE, 4096), 0, 4096);
	struct prd r[2] = { { BUF2, 4096 }, { NH_RAM1_BASE, 4096 } };
	tfd = ata(0, 0x25, 100, 16, 0, r, 2, false);
	CHECK((tfd & 0xff) == 0x50 && memcmp(nh_ptr(BUF2, 4096), src, 4096) == 0 &&
	      memcmp(nh_ptr(NH_RAM1_BASE, 4096), src + 4096, 4096) == 0, "READ DMA EXT: data back (above 4 GiB too)");
	/* READ DMA (28-bit), one sector. */
	struct prd r1 = { BUF2, 512 };
	tfd = ata(0, 0xc8, 101, 1, 0, &r1, 1, false);
	CHECK((tfd & 0xff) == 0x50 && memcmp(nh_ptr(BUF2, 512), src + 512, 512) == 0, "READ DMA (LBA28)");
	/* PIO READ SECTOR(S) EXT: PIO setup FIS. */
	memset(nh_ptr(FB(0) + 0x20, 20), 0, 20);
	tfd = ata(0, 0x24, 102, 1, 0, &r1, 1, false);
	const uint8_t *ps = nh_ptr(FB(0) + 0x20, 20);
	CHECK((tfd & 0xff) == 0x50 && memcmp(nh_ptr(BUF2, 512), src + 1024, 512) == 0 && ps[0] == 0x5f && ps[15] == 0x50,
	      "READ SECTOR(S) EXT: data and PIO setup FIS");
	/* PIO WRITE SECTOR(S), a PRD larger than the transfer. */
	uint8_t *s2 = nh_ptr(BUF, 1024);
	memset(s2, 0x5a, 1024);
	struct prd big = { BUF, 1024 };
	tfd = ata(0, 0x30, 5, 1, 0, &big, 1, true);
	CHECK((tfd & 0xff) == 0x50 && prdbc(0, 0) == 512 && file_matches(disk, 5 * 512, s2, 512),
	      "WRITE SECTOR(S): 512 of a 1024-byte PRD");
	tfd = ata(0, 0xea, 0, 0, 0, NULL, 0, false);
	CHECK((tfd & 0xff) == 0x50, "FLUSH CACHE EXT");
	tfd = ata(0, 0x42, DISK_SECTORS - 8, 8, 0, NULL, 0, false);
	CHECK((tfd & 0xff) == 0x50, "READ VERIFY SECTOR(S) EXT at the end");
}

static void t_ncq(void)
{
	uint8_t f[20];
	/* Two queued writes, then two queued reads of what they wrote. */
	for (int s = 1; s <= 2; s++) {
		uint8_t *b = nh_ptr(BUF + (uint64_t)s * 0x10000, 4096);
		for (uint32_t i = 0; i < 4096; i++)
			b[i] = pattern(1000u * (uint32_t)s, i);
		h2d(f, 0x61, 1000u * (uint32_t)s, 0, 8);
		f[12] = (uint8_t)(s << 3);
		struct prd pr = { BUF + (uint64_t)s * 0x10000, 4096 };
		build(0, s, f, NULL, &pr, 1, true);
	}
	memset(nh_ptr(FB(0) + 0x58, 8), 0, 8);
	pwr(0, 0x34, 0x6);
	pwr(0, 0x38, 0x6);
	CHECK(wait_clear(0, 0x34, 0x6), "NCQ writes: SActive clears");
	CHECK(((const uint8_t *)nh_ptr(FB(0) + 0x58, 8))[0] == 0xa1 && (prd(0, 0x10) & 0x8), "Set Device Bits FIS, PxIS.SDBS");
	CHECK(file_matches(disk, 1000 * 512, nh_ptr(BUF + 0x10000, 4096), 4096) &&
	      file_matches(disk, 2000 * 512, nh_ptr(BUF + 0x20000, 4096), 4096), "NCQ writes in the image");
	for (int s = 3; s <= 4; s++) {
		h2d(f, 0x60, 1000u * (uint32_t)(s - 2), 0, 8);
		f[12] = (uint8_t)(s << 3);
		struct prd pr = { BUF2 + (uint64_t)s * 0x10000, 4096 };
		memset(nh_ptr(pr.gpa, 4096), 0, 4096);
		build(0, s, f, NULL, &pr, 1, false);
	}
	pwr(0, 0x34, 0x18);
	pwr(0, 0x38, 0x18);
	CHECK(wait_clear(0, 0x34, 0x18) && (prd(0, 0x20) & 0x1) == 0, "NCQ reads complete");
	CHECK(memcmp(nh_ptr(BUF2 + 0x30000, 4096), nh_ptr(BUF + 0x10000, 4096), 4096) == 0 &&
	      memcmp(nh_ptr(BUF2 + 0x40000, 4096), nh_ptr(BUF + 0x20000, 4096), 4096) == 0, "NCQ reads: data");
	/* NCQ past the end: TFES, the tag stays in SActive, the NCQ error log names it. */
	h2d(f, 0x60, DISK_SECTORS - 1, 0, 2);
	f[12] = 7 << 3;
	struct prd pr = { BUF2, 1024 };
	build(0, 7, f, NULL, &pr, 1, false);
	pwr(0, 0x10, 0xffffffff);
	pwr(0, 0x34, 1u << 7);
	pwr(0, 0x38, 1u << 7);
	nh_poll();
	CHECK((prd(0, 0x10) & 0x40000000u) && (prd(0, 0x20) & 0x1) && ((prd(0, 0x20) >> 8) & 0x10),
	      "NCQ read past the end: TFES, IDNF (TFD 0x%x)", prd(0, 0x20));
	CHECK(prd(0, 0x34) & (1u << 7), "failed tag still in SActive");
	port_restart(0);
	CHECK(prd(0, 0x34) == 0, "port restart clears SActive");
	/* libata's EH then reads the NCQ command error log. */
	struct prd lp = { BUF2, 512 };
	const uint8_t *log = nh_ptr(BUF2, 512);
	uint32_t tfd = ata(0, 0x2f, 0x10, 1, 0, &lp, 1, false);
	uint8_t sum = 0;
	for (int i = 0; i < 512; i++)
		sum = (uint8_t)(sum + log[i]);
	CHECK((tfd & 0xff) == 0x50 && log[0] == 7 && (log[2] & 1) && log[3] == 0x10 && sum == 0,
	      "READ LOG EXT 10h: tag 7, ERR, IDNF, checksum");
}

static void t_trim(bool trim)
{
	if (!trim) {
		printf("ok - # SKIP TRIM: the image's file system cannot deallocate\n");
		return;
	}
	uint64_t *r = nh_ptr(BUF, 512);
	memset(r, 0, 512);
	r[0] = 1000 | (uint64_t)8 << 48;
	r[1] = 0;   /* zero-length entries are ignored */
	struct prd pr = { BUF, 512 };
	uint32_t tfd = ata(0, 0x06, 0, 1, 1, &pr, 1, true);
	uint8_t zero[4096] = { 0 };
	CHECK((tfd & 0xff) == 0x50 && file_matches(disk, 1000 * 512, zero, 4096), "DATA SET MANAGEMENT (TRIM): zeroes");
	r[0] = (DISK_SECTORS - 1) | (uint64_t)8 << 48;
	tfd = ata(0, 0x06, 0, 1, 1, &pr, 1, true);
	CHECK((tfd & 0x01) && ((tfd >> 8) & 0x10), "TRIM past the end: IDNF");
	port_restart(0);
}

static void t_errors(void)
{
	struct prd pr = { BUF2, 4096 };
	uint32_t tfd = ata(0, 0x25, DISK_SECTORS - 4, 8, 0, &pr, 1, false);
	CHECK((tfd & 0x01) && ((tfd >> 8) & 0x10) && (prd(0, 0x10) & 0x40000000u), "READ DMA EXT past the end: IDNF, TFES");
	/* The port takes nothing until it is restarted. */
	uint8_t f[20];
	h2d(f, 0xea, 0, 0, 0);
	build(0, 1, f, NULL, NULL, 0, false);
	pwr(0, 0x38, 2);
	nh_poll();
	CHECK(prd(0, 0x38) & 2, "no new command after an error");
	port_restart(0);
	CHECK(prd(0, 0x38) == 0 && (prd(0, 0x20) & 1), "restart clears CI");
	h2d(f, 0xea, 0, 0, 0);
	build(0, 0, f, NULL, NULL, 0, false);
	CHECK((run(0, 0) & 0xff) == 0x50, "commands again after the restart");

	tfd = ata(0, 0xb0, 0, 0, 0xd0, NULL, 0, false);
	CHECK((tfd & 1) && ((tfd >> 8) & 0x04), "SMART (not supported): ABRT");
	port_restart(0);
	struct prd out = { 0x80000000ull, 4096 };
	tfd = ata(0, 0x25, 0, 8, 0, &out, 1, false);
	CHECK((tfd & 1) && ((tfd >> 8) & 0x04), "PRD outside RAM: ABRT");
	port_restart(0);
	struct prd odd = { BUF2 + 1, 4096 };
	tfd = ata(0, 0x25, 0, 8, 0, &odd, 1, false);
	CHECK((tfd & 1), "PRD at an odd address: error");
	port_restart(0);
	struct prd shortp = { BUF2, 512 };
	tfd = ata(0, 0x25, 0, 8, 0, &shortp, 1, false);
	CHECK((tfd & 1) && ((tfd >> 8) & 0x04), "PRDT shorter than the transfer: ABRT");
	port_restart(0);
	struct prd edge = { NH_RAM0_SIZE - 2048, 4096 };
	tfd = ata(0, 0x25, 0, 8, 0, &edge, 1, false);
	CHECK((tfd & 1), "PRD crossing the end of RAM: error");
	port_restart(0);
	/* Command table outside RAM. */
	h2d(f, 0x25, 0, 1, 0);
	build(0, 0, f, NULL, &pr, 1, false);
	uint64_t bad = 0x7fffff80ull;
	memcpy(nh_ptr(CLB(0) + 8, 8), &bad, 8);
	tfd = run(0, 0);
	CHECK((tfd & 1) && (prd(0, 0x10) & 0x20000000u), "command table outside RAM: HBFS and an error");
	port_restart(0);
	/* Command list outside RAM. */
	pwr(0, 0x18, prd(0, 0x18) & ~0x1u);
	pwr(0, 0x00, 0x7ffffc00);
	pwr(0, 0x18, prd(0, 0x18) | 0x1);
	tfd = run(0, 0);
	CHECK(tfd & 1, "command list outside RAM: error");
	pwr(0, 0x18, prd(0, 0x18) & ~0x1u);
	pwr(0, 0x00, (uint32_t)CLB(0));
	port_restart(0);
	tfd = ata(0, 0xef, 0, 0x46, 0x03, NULL, 0, false);
	CHECK((tfd & 0xff) == 0x50, "SET FEATURES: transfer mode UDMA6");
	tfd = ata(0, 0xef, 0, 0, 0x77, NULL, 0, false);
	CHECK(tfd & 1, "SET FEATURES 0x77: ABRT");
	port_restart(0);
	tfd = ata(0, 0xc6, 0, 16, 0, NULL, 0, false);
	CHECK((tfd & 0xff) == 0x50, "SET MULTIPLE 16");
	tfd = ata(0, 0xc6, 0, 3, 0, NULL, 0, false);
	CHECK(tfd & 1, "SET MULTIPLE 3: ABRT");
	port_restart(0);
	tfd = ata(0, 0xa0, 0, 0, 0, NULL, 0, false);
	CHECK(tfd & 1, "PACKET to a disk: ABRT");
	port_restart(0);
	/* The NCQ error log was read in t_ncq: now NQ (no queued command failed). */
	struct prd lp = { BUF2, 512 };
	tfd = ata(0, 0x2f, 0x10, 1, 0, &lp, 1, false);
	CHECK((tfd & 0xff) == 0x50 && (((const uint8_t *)nh_ptr(BUF2, 1))[0] & 0x80), "READ LOG EXT 10h");
}

static uint32_t packet(int port, const uint8_t cdb[12], uint64_t buf, uint32_t len)
{
	uint8_t f[20], acmd[16] = { 0 };
	h2d(f, 0xa0, (uint64_t)(len & 0xffff) << 8, 0, 1);
	memcpy(acmd, cdb, 12);
	struct prd pr = { buf, len };
	build(port, 0, f, acmd, &pr, len ? 1 : 0, false);
	return run(port, 0);
}

static void t_atapi(uint64_t iso_blocks, bool real_iso)
{
	struct prd pr = { BUF, 512 };
	uint32_t tfd = ata(1, 0xec, 0, 0, 0, &pr, 1, false);
	const uint8_t *fis = nh_ptr(FB(1) + 0x40, 20);
	CHECK((tfd & 1) && fis[5] == 0x14 && fis[6] == 0xeb, "CD: IDENTIFY DEVICE aborts with the ATAPI signature");
	port_restart(1);
	tfd = ata(1, 0xa1, 0, 0, 0, &pr, 1, false);
	const uint16_t *id = nh_ptr(BUF, 512);
	CHECK((tfd & 0xff) == 0x50 && (id[0] >> 14) == 2 && ((id[0] >> 8) & 0x1f) == 5, "IDENTIFY PACKET DEVICE: CD-ROM");

	uint8_t inq[12] = { 0x12, 0, 0, 0, 36 };
	tfd = packet(1, inq, BUF, 512);
	const uint8_t *b = nh_ptr(BUF, 64);
	CHECK((tfd & 1) == 0 && b[0] == 5 && (b[1] & 0x80) && memcmp(b + 8, "HYVE", 4) == 0 && prdbc(1, 0) == 36,
	      "INQUIRY: CD-ROM, removable, 36 bytes");
	uint8_t tur[12] = { 0 };
	CHECK((packet(1, tur, BUF, 0) & 1) == 0, "TEST UNIT READY");
	uint8_t cap[12] = { 0x25 };
	tfd = packet(1, cap, BUF, 8);
	uint32_t last = (uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3], bs = (uint32_t)b[4] << 24 | b[5] << 16 | b[6] << 8 | b[7];
	CHECK((tfd & 1) == 0 && last == iso_blocks - 1 && bs == 2048, "READ CAPACITY: last block %u, 2048 bytes", last);
	uint8_t rd[12] = { 0x28, 0, 0, 0, 0, 16, 0, 0, 2 };
	memset(nh_ptr(BUF2, 4096), 0, 4096);
	tfd = packet(1, rd, BUF2, 4096);
	const uint8_t *pvd = nh_ptr(BUF2, 4096);
	CHECK((tfd & 1) == 0 && pvd[0] == 1 && memcmp(pvd + 1, "CD001", 5) == 0 && prdbc(1, 0) == 4096,
	      "READ(10) of blocks 16-17: primary volume descriptor%s", real_iso ? " (genisoimage)" : " (hand-made)");
	CHECK(file_matches(iso, 16 * 2048, pvd, 4096), "READ(10): the image's bytes");
	uint8_t rd12[12] = { 0xa8, 0, 0, 0, 0, 16, 0, 0, 0, 1 };
	CHECK((packet(1, rd12, BUF2, 2048) & 1) == 0, "READ(12)");
	uint8_t past[12] = { 0x28, 0, 0, 0, 0, 0, 0, 0, 2 };
	past[2] = (uint8_t)((iso_blocks - 1) >> 24);
	past[3] = (uint8_t)((iso_blocks - 1) >> 16);
	past[4] = (uint8_t)((iso_blocks - 1) >> 8);
	past[5] = (uint8_t)(iso_blocks - 1);
	tfd = packet(1, past, BUF2, 4096);
	CHECK((tfd & 1) && ((tfd >> 12) & 0xf) == 5, "READ(10) past the end: CHECK CONDITION, ILLEGAL REQUEST");
	port_restart(1);
	uint8_t rs[12] = { 0x03, 0, 0, 0, 18 };
	tfd = packet(1, rs, BUF, 18);
	CHECK((tfd & 1) == 0 && b[0] == 0x70 && (b[2] & 0xf) == 5 && b[12] == 0x21, "REQUEST SENSE: 5/21h");
	uint8_t shortrd[12] = { 0x28, 0, 0, 0, 0, 16, 0, 0, 2 };
	tfd = packet(1, shortrd, BUF2, 2048);
	CHECK(tfd & 1, "READ(10) into a PRDT too short: error");
	port_restart(1);
	uint8_t toc[12] = { 0x43, 0, 0, 0, 0, 0, 0, 0, 100 };
	tfd = packet(1, toc, BUF, 100);
	CHECK((tfd & 1) == 0 && b[2] == 1 && b[3] == 1 && b[6] == 1 && b[14] == 0xaa, "READ TOC format 0: track 1, lead-out");
	toc[2] = 1;
	tfd = packet(1, toc, BUF, 100);
	CHECK((tfd & 1) == 0 && b[1] == 10, "READ TOC format 1: session info");
	toc[2] = 5;
	CHECK(packet(1, toc, BUF, 100) & 1, "READ TOC format 5: ILLEGAL REQUEST");
	port_restart(1);
	uint8_t gesn[12] = { 0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8 };
	tfd = packet(1, gesn, BUF, 8);
	CHECK((tfd & 1) == 0 && b[2] == 4 && b[5] == 2, "GET EVENT STATUS NOTIFICATION: media present");
	uint8_t gc[12] = { 0x46, 0, 0, 0, 0, 0, 0, 0, 64 };
	tfd = packet(1, gc, BUF, 64);
	CHECK((tfd & 1) == 0 && b[7] == 0x08, "GET CONFIGURATION: CD-ROM profile");
	uint8_t ms[12] = { 0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 64 };
	tfd = packet(1, ms, BUF, 64);
	CHECK((tfd & 1) == 0 && b[8] == 0x2a, "MODE SENSE(10) page 2Ah");
	uint8_t ssu[12] = { 0x1b, 0, 0, 0, 2 }, pa[12] = { 0x1e, 0, 0, 0, 1 };
	CHECK((packet(1, ssu, BUF, 0) & 1) == 0 && (packet(1, pa, BUF, 0) & 1) == 0, "START STOP UNIT, PREVENT ALLOW");
	uint8_t bogus[12] = { 0xff };
	tfd = packet(1, bogus, BUF, 0);
	CHECK((tfd & 1) && ((tfd >> 12) & 0xf) == 5, "unknown opcode: ILLEGAL REQUEST");
	port_restart(1);
	tfd = packet(1, rs, BUF, 18);
	CHECK(b[12] == 0x20, "sense: invalid command operation code");
}

static void t_readonly(void)
{
	/* Slot 5: ahci-hd on a read-only image. */
	struct pci_devinst *pi = nh_slot(5);
	uint64_t save = abar;
	abar = pi->pi_bar[5].addr;
	port_start(0);
	struct prd pr = { BUF, 512 };
	uint32_t tfd = ata(0, 0x35, 0, 1, 0, &pr, 1, true);
	CHECK((tfd & 1) && ((tfd >> 8) & 4), "ahci-hd,ro: WRITE DMA EXT aborted");
	port_restart(0);
	tfd = ata(0, 0xec, 0, 0, 0, &pr, 1, false);
	const uint16_t *id = nh_ptr(BUF, 512);
	CHECK((tfd & 0xff) == 0x50 && memcmp(&id[10], "YMES", 4) == 0 && id[217] == 1, "ahci-hd: ser= and nmrr=1");
	abar = save;
}

static void t_intx(void)
{
	struct pci_devinst *pi = nh_slot(slot_no);
	int cap_off = 0;
	for (int p = nh_cfg_read(slot_no, 0x34, 1); p; p = nh_cfg_read(slot_no, p + 1, 1))
		if (nh_cfg_read(slot_no, p, 1) == 0x05)
			cap_off = p;
	nh_cfg_write(slot_no, cap_off + 2, 2, 0);
	pwr(0, 0x10, 0xffffffff);
	pwr(1, 0x10, 0xffffffff);
	hba_wr(0x08, 0xffffffff);
	CHECK(nh_irq_level(pi->pi_lintr_gsi) == 0, "INTx low with nothing pending");
	uint32_t tfd = ata(0, 0xe7, 0, 0, 0, NULL, 0, false);
	CHECK((tfd & 0xff) == 0x50 && nh_irq_level(pi->pi_lintr_gsi) == 1, "INTx asserted without MSI");
	pwr(0, 0x10, 0xffffffff);
	CHECK(nh_irq_level(pi->pi_lintr_gsi) == 1, "INTx stays while IS.IPS is set");
	hba_wr(0x08, 1);
	CHECK(nh_irq_level(pi->pi_lintr_gsi) == 0, "INTx deasserted once IS is cleared");
	nh_cfg_write(slot_no, cap_off + 2, 2, 1);
}

static void t_checkpoint(void)
{
	struct pci_devinst *pi = nh_slot(slot_no);
	char err[256] = "";
	struct snap_buf sb;
	sb_init(&sb);
	pi->pi_d->pe_pause(pi);
	/* A command issued while paused waits for the resume. */
	uint8_t f[20];
	h2d(f, 0xe7, 0, 0, 0);
	build(0, 2, f, NULL, NULL, 0, false);
	pwr(0, 0x38, 4);
	CHECK(prd(0, 0x38) & 4, "paused: a command waits");
	int rc = pci_emul_save_state(pi, &sb) || pi->pi_d->pe_snapshot(pi, &sb, err, sizeof(err));
	CHECK(rc == 0, "snapshot %s", err);
	struct snap_rd rd;
	sr_init(&rd, sb.data, sb.len - 5);
	rc = pci_emul_load_state(pi, &rd, err, sizeof(err)) ||
	     pi->pi_d->pe_restore(pi, &rd, pi->pi_d->pe_snapshot_version, err, sizeof(err));
	CHECK(rc != 0, "truncated state refused: %s", err);
	sr_init(&rd, sb.data, sb.len);
	rc = pci_emul_load_state(pi, &rd, err, sizeof(err)) || pi->pi_d->pe_restore(pi, &rd, 77, err, sizeof(err));
	CHECK(rc != 0, "unknown version refused: %s", err);
	sr_init(&rd, sb.data, sb.len);
	rc = pci_emul_load_state(pi, &rd, err, sizeof(err)) ||
	     pi->pi_d->pe_restore(pi, &rd, pi->pi_d->pe_snapshot_version, err, sizeof(err));
	CHECK(rc == 0, "restore %s", err);
	pi->pi_d->pe_resume(pi);
	CHECK(wait_clear(0, 0x38, 4), "after resume the waiting command completes");
	struct prd pr = { BUF2, 4096 };
	uint32_t tfd = ata(0, 0x25, 100, 8, 0, &pr, 1, false);
	CHECK((tfd & 0xff) == 0x50 && file_matches(disk, 100 * 512, nh_ptr(BUF2, 4096), 4096),
	      "restored HBA reads on");
	sb_free(&sb);
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hyve-ahci-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(disk, sizeof(disk), "%s/disk.img", tmpdir);
	snprintf(rodisk, sizeof(rodisk), "%s/ro.img", tmpdir);
	snprintf(iso, sizeof(iso), "%s/cd.iso", tmpdir);
	int fd = open(disk, O_CREAT | O_RDWR | O_TRUNC, 0644);
	uint8_t sec[512];
	for (uint32_t l = 0; l < DISK_SECTORS; l++) {
		for (uint32_t i = 0; i < 512; i++)
			sec[i] = (uint8_t)(l ^ i);
		if (fd < 0 || pwrite(fd, sec, 512, (off_t)l * 512) != 512)
			return 1;
	}
	close(fd);
	fd = open(rodisk, O_CREAT | O_RDWR | O_TRUNC, 0444);
	if (fd < 0 || ftruncate(fd, 1 << 20))
		return 1;
	close(fd);
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
	         "mkdir -p %s/iso && echo hello >%s/iso/hello.txt && genisoimage -quiet -V HYVE -o %s %s/iso 2>/dev/null",
	         tmpdir, tmpdir, iso, tmpdir);
	bool real_iso = system(cmd) == 0;
	if (!real_iso) {
		/* A data file with a primary volume descriptor where ISO 9660 has it. */
		fd = open(iso, O_CREAT | O_RDWR | O_TRUNC, 0644);
		uint8_t pvd[2048] = { 1, 'C', 'D', '0', '0', '1', 1 };
		if (fd < 0 || ftruncate(fd, 64 * 2048) || pwrite(fd, pvd, sizeof(pvd), 16 * 2048) != sizeof(pvd))
			return 1;
		close(fd);
	}
	struct stat st;
	stat(iso, &st);
	uint64_t iso_blocks = (uint64_t)st.st_size / 2048;

	char k0[160], k1[160], k2[160];
	snprintf(k0, sizeof(k0), "pci.0.4.0.port.0.path=%s", disk);
	snprintf(k1, sizeof(k1), "pci.0.4.0.port.1.path=%s", iso);
	snprintf(k2, sizeof(k2), "pci.0.5.0.port.0.path=%s", rodisk);
	const char *kv[] = {
		"name=ahcitest",
		"pci.0.4.0.device=ahci", "pci.0.4.0.port.0.type=hd", k0, "pci.0.4.0.port.1.type=cd", k1,
		"pci.0.5.0.device=ahci-hd", k2, "pci.0.5.0.port.0.ro=true", "pci.0.5.0.port.0.ser=MYSERIAL",
		"pci.0.5.0.port.0.nmrr=1",
		NULL,
	};
	nh_setup(kv);
	struct pci_devinst *pi = nh_slot(slot_no);
	if (!pi) {
		printf("FAIL - no AHCI in slot 4\n");
		return 1;
	}
	abar = pi->pi_bar[5].addr;
	CHECK(abar != 0 && pi->pi_bar[5].size >= 0x1100, "ABAR in BAR 5 at 0x%llx", (unsigned long long)abar);

	t_hba();
	t_identify();
	const uint16_t *id = nh_ptr(BUF, 512);
	struct prd pr = { BUF, 512 };
	ata(0, 0xec, 0, 0, 0, &pr, 1, false);
	bool trim = id[169] & 1;
	t_dma();
	t_ncq();
	t_trim(trim);
	t_errors();
	t_atapi(iso_blocks, real_iso);
	t_readonly();
	t_intx();
	t_checkpoint();

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmpdir);
	return check_summary();
}
