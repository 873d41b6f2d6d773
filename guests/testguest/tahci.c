/*
 * test=ahci: a small polled AHCI 1.3 driver on the first AHCI HBA (class
 * 01:06:01): HBA reset and AHCI enable, then every implemented port with a
 * device.  A disk (signature 0x101): IDENTIFY DEVICE, WRITE/READ DMA EXT of
 * sectors 256-271 with the disk pattern of vblk.c, FLUSH CACHE EXT, DATA
 * SET MANAGEMENT (TRIM) of 512-527 (must read zeros), an NCQ READ FPDMA
 * QUEUED, and a read past the end, which must fail with a task file error
 * (then the port is recovered).  A CD (signature 0xeb140101): IDENTIFY
 * PACKET DEVICE, then PACKET commands INQUIRY, READ CAPACITY and READ(10)
 * of block 16 (an ISO 9660 primary volume descriptor: "CD001").
 *
 * Lines:
 *   ahci: BB:DD.F (VVVV:DDDD) vs 1.N ports N slots N ncq N
 *   ahci: port N disk 'MODEL' serial 'S' N sectors ncq depth N trim N
 *   ahci: port N wrote 256-271 fnv=0x..., read back ok
 *   ahci: port N flush ok
 *   ahci: port N trim 512-527 ok, reads zeros
 *   ahci: port N ncq read ok
 *   ahci: port N read past the end: task file error (status 0xNN error 0xNN)
 *   ahci: port N cd 'VENDOR PRODUCT' N blocks of N bytes, block 16 'CD001'
 * All polled (interrupts off).
 */
#include "ahci.h"
#include "kernel.h"
#include "tests.h"
#include "virtio.h"

struct cmdhdr ahci_clist[32] __attribute__((aligned(1024)));
u8 ahci_rfis[256] __attribute__((aligned(256)));
static struct cmdtbl ctbl __attribute__((aligned(128)));
static u8 buf[8192] __attribute__((aligned(4096)));

u64 abar;
static u32 hr(u32 off) { return mmio_read32(abar + off); }
static void hw(u32 off, u32 v) { mmio_write32(abar + off, v); }

static bool wait_clear(u32 off, u32 mask)
{
	for (u64 i = 0; i < 100000000ULL; i++) {
		if (!(hr(off) & mask))
			return true;
		cpu_relax();
	}
	return false;
}

void ahci_port_stop(int p)
{
	hw(PR(p, P_CMD), hr(PR(p, P_CMD)) & ~1u);          /* ST */
	wait_clear(PR(p, P_CMD), 1u << 15);                 /* CR */
	hw(PR(p, P_CMD), hr(PR(p, P_CMD)) & ~(1u << 4));   /* FRE */
	wait_clear(PR(p, P_CMD), 1u << 14);                 /* FR */
}

void ahci_port_start(int p)
{
	hw(PR(p, P_SERR), 0xffffffffu);
	hw(PR(p, P_IS), 0xffffffffu);
	hw(PR(p, P_CMD), hr(PR(p, P_CMD)) | 1u << 4);
	hw(PR(p, P_CMD), hr(PR(p, P_CMD)) | 1u);
}

/* Shared with test=ahcibench's CPL3 loop, hence user text (CPL0 may run it: no SMEP here). */
USER_TEXT void ahci_fis(u8 *f, u8 cmd, u16 feat, u64 lba, u16 count)
{
	f[0] = 0x27;   /* register FIS, host to device */
	f[1] = 0x80;   /* command */
	f[2] = cmd;
	f[3] = (u8)feat;
	f[4] = (u8)lba;
	f[5] = (u8)(lba >> 8);
	f[6] = (u8)(lba >> 16);
	f[7] = 0x40;   /* LBA mode */
	f[8] = (u8)(lba >> 24);
	f[9] = (u8)(lba >> 32);
	f[10] = (u8)(lba >> 40);
	f[11] = (u8)(feat >> 8);
	f[12] = (u8)count;
	f[13] = (u8)(count >> 8);
}

/*
 * One command in slot 0 (or an NCQ one with tag 0): FIS command, its
 * feature, LBA and count; data of len bytes at data (write: to the device);
 * atapi: the 12-byte packet.  0 when it completed without error, else the
 * task file register (status | error << 8).
 */
int ahci_cmd(int p, u8 cmd, u16 feat, u64 lba, u16 count, void *data, u32 len, bool write, const u8 *atapi)
{
	memset(&ctbl, 0, sizeof(ctbl));
	bool ncq = cmd == 0x60 || cmd == 0x61;
	ahci_fis(ctbl.cfis, cmd, feat, lba, count);
	if (atapi)
		memcpy(ctbl.acmd, atapi, 12);
	u32 n = 0;
	for (u32 off = 0; off < len; off += 4096, n++) {
		ctbl.prdt[n].dba = (u32)((u64)data + off);
		ctbl.prdt[n].dbc = (len - off < 4096 ? len - off : 4096) - 1;
	}
	ahci_clist[0] = (struct cmdhdr){ .dw0 = 5 | (atapi ? 1u << 5 : 0) | (write ? 1u << 6 : 0) | n << 16,
	                            .ctba = (u32)(u64)&ctbl };
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (ncq)
		hw(PR(p, P_SACT), 1);
	hw(PR(p, P_CI), 1);
	for (u64 i = 0; i < 200000000ULL; i++) {
		u32 is = hr(PR(p, P_IS));
		if (is & (1u << 30))   /* TFES */
			return (int)(hr(PR(p, P_TFD)) & 0xffff);
		if (!(hr(PR(p, P_CI)) & 1) && !(ncq && (hr(PR(p, P_SACT)) & 1)))
			return (hr(PR(p, P_TFD)) & 1) ? (int)(hr(PR(p, P_TFD)) & 0xffff) : 0;
		cpu_relax();
	}
	test_fail("ahci", "port %d: command 0x%x did not complete", p, cmd);
	return -1;
}

static void ata_string(const u8 *id, int word, int words, char *out)
{
	int n = 0;
	for (int i = 0; i < words; i++) {
		out[n++] = (char)id[2 * (word + i) + 1];
		out[n++] = (char)id[2 * (word + i)];
	}
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = 0;
}

static void disk(int p)
{
	int st = ahci_cmd(p, 0xec, 0, 0, 0, buf, 512, false, NULL);
	if (st)
		test_fail("ahci", "port %d: IDENTIFY DEVICE: task file 0x%x", p, st);
	const u16 *w = (const u16 *)buf;
	char model[41], serial[21];
	ata_string(buf, 27, 20, model);
	ata_string(buf, 10, 10, serial);
	u64 sectors = (u64)w[100] | (u64)w[101] << 16 | (u64)w[102] << 32 | (u64)w[103] << 48;
	bool ncq = w[76] & (1u << 8), trim = w[169] & 1;
	printf("ahci: port %d disk '%s' serial '%s' %lu sectors ncq depth %u trim %u\n", p, model, serial, sectors,
	       ncq ? (w[75] & 31) + 1 : 0, trim);

	struct pjob j = { buf, 256, 16, 0x5eed0003u, 0, 0, 0, 0 };
	vblk_pattern(&j);
	u64 fnv = j.fnv;
	if ((st = ahci_cmd(p, 0x35, 0, 256, 16, buf, 8192, true, NULL)))
		test_fail("ahci", "port %d: WRITE DMA EXT: task file 0x%x", p, st);
	memset(buf, 0, sizeof(buf));
	if ((st = ahci_cmd(p, 0x25, 0, 256, 16, buf, 8192, false, NULL)))
		test_fail("ahci", "port %d: READ DMA EXT: task file 0x%x", p, st);
	j = (struct pjob){ buf, 256, 16, 0x5eed0003u, 1, 0, 0, 0 };
	vblk_pattern(&j);
	if (j.bad)
		test_fail("ahci", "port %d: read back: %lu words differ", p, j.bad);
	printf("ahci: port %d wrote 256-271 fnv=0x%016lx, read back ok\n", p, fnv);
	if ((st = ahci_cmd(p, 0xea, 0, 0, 0, NULL, 0, false, NULL)))
		test_fail("ahci", "port %d: FLUSH CACHE EXT: task file 0x%x", p, st);
	printf("ahci: port %d flush ok\n", p);
	if (trim) {
		memset(buf, 0, 512);
		*(u64 *)buf = 512 | (u64)16 << 48;   /* LBA 512, 16 sectors */
		if ((st = ahci_cmd(p, 0x06, 1, 0, 1, buf, 512, true, NULL)))
			test_fail("ahci", "port %d: DATA SET MANAGEMENT: task file 0x%x", p, st);
		memset(buf, 0xaa, 8192);
		st = ahci_cmd(p, 0x25, 0, 512, 16, buf, 8192, false, NULL);
		bool zero = true;
		for (int i = 0; i < 8192; i++)
			zero = zero && !buf[i];
		printf("ahci: port %d trim 512-527 ok, %s\n", p, !st && zero ? "reads zeros" : "reads data");
	}
	if (ncq && (hr(0) & (1u << 30))) {
		memset(buf, 0, 8192);
		st = ahci_cmd(p, 0x60, 16, 256, 0 << 3, buf, 8192, false, NULL);   /* count in FEATURES, tag 0 */
		j = (struct pjob){ buf, 256, 16, 0x5eed0003u, 1, 0, 0, 0 };
		vblk_pattern(&j);
		if (st || j.bad)
			test_fail("ahci", "port %d: READ FPDMA QUEUED: task file 0x%x, %lu words differ", p, st, j.bad);
		printf("ahci: port %d ncq read ok\n", p);
	}
	st = ahci_cmd(p, 0x25, 0, sectors - 4, 8, buf, 4096, false, NULL);
	printf("ahci: port %d read past the end: %s (status 0x%x error 0x%x)\n", p,
	       st > 0 && (st & 1) ? "task file error" : "no error", st & 0xff, (st >> 8) & 0xff);
	ahci_port_stop(p);   /* recovery: the port runs again after an error */
	ahci_port_start(p);
	if ((st = ahci_cmd(p, 0x25, 0, 256, 1, buf, 512, false, NULL)))
		test_fail("ahci", "port %d: no recovery after the error: task file 0x%x", p, st);
}

static void cd(int p)
{
	int st = ahci_cmd(p, 0xa1, 0, 0, 0, buf, 512, false, NULL);
	if (st)
		test_fail("ahci", "port %d: IDENTIFY PACKET DEVICE: task file 0x%x", p, st);
	u8 pkt[12] = { 0x12, 0, 0, 0, 36 };   /* INQUIRY */
	if ((st = ahci_cmd(p, 0xa0, 1, 0, 0, buf, 36, false, pkt)))
		test_fail("ahci", "port %d: INQUIRY: task file 0x%x", p, st);
	char vp[26];
	memcpy(vp, buf + 8, 8);
	vp[8] = ' ';
	memcpy(vp + 9, buf + 16, 16);
	int n = 25;
	while (n > 0 && vp[n - 1] == ' ')
		n--;
	vp[n] = 0;
	u8 rc[12] = { 0x25 };   /* READ CAPACITY(10) */
	if ((st = ahci_cmd(p, 0xa0, 1, 0, 0, buf, 8, false, rc)))
		test_fail("ahci", "port %d: READ CAPACITY: task file 0x%x", p, st);
	u32 last = (u32)buf[0] << 24 | (u32)buf[1] << 16 | (u32)buf[2] << 8 | buf[3];
	u32 bsz = (u32)buf[4] << 24 | (u32)buf[5] << 16 | (u32)buf[6] << 8 | buf[7];
	u8 rd[12] = { 0x28, 0, 0, 0, 0, 16, 0, 0, 1 };   /* READ(10): block 16, 1 block */
	memset(buf, 0, 4096);
	if ((st = ahci_cmd(p, 0xa0, 1, 0, 0, buf, 2048, false, rd)))
		test_fail("ahci", "port %d: READ(10): task file 0x%x", p, st);
	char id[6];
	memcpy(id, buf + 1, 5);
	id[5] = 0;
	printf("ahci: port %d cd '%s' %u blocks of %u bytes, block 16 '%s'\n", p, vp, last + 1, bsz, id);
}

u32 ahci_bringup(const char *t)
{
	pci_scan();
	const struct pci_func *f = NULL;
	for (int i = 0; i < pci_nfuncs && !f; i++)
		if (pci_funcs[i].class == 0x01 && pci_funcs[i].subclass == 0x06 &&
		    pci_cfg_read8(&pci_funcs[i], 0x09) == 0x01)
			f = &pci_funcs[i];
	if (!f || !f->bar[5] || f->bar_io[5])
		test_fail(t, "no AHCI HBA with a memory BAR 5");
	pci_cfg_write16(f, 0x04, pci_cfg_read16(f, 0x04) | 0x6);
	abar = f->bar[5];
	hw(0x04, 1u << 31);
	hw(0x04, 1u << 31 | 1);   /* HBA reset */
	if (!wait_clear(0x04, 1))
		test_fail(t, "HBA reset does not finish");
	hw(0x04, 1u << 31);       /* AHCI enable, interrupts off */
	u32 cap = hr(0x00), vs = hr(0x10);
	printf("%s: %02x:%02x.%x (%04x:%04x) vs %u.%u ports %u slots %u ncq %u\n", t, f->bus, f->dev, f->fn,
	       f->vendor, f->device, vs >> 16, (vs >> 8) & 0xff, (cap & 31) + 1, ((cap >> 8) & 31) + 1, (cap >> 30) & 1);
	return hr(0x0c);
}

u32 ahci_port_attach(int p)
{
	ahci_port_stop(p);
	hw(PR(p, P_CLB), (u32)(u64)ahci_clist);
	hw(PR(p, P_CLBU), 0);
	hw(PR(p, P_FB), (u32)(u64)ahci_rfis);
	hw(PR(p, P_FBU), 0);
	if ((hr(PR(p, P_SSTS)) & 0xf) != 3)
		return 0;
	ahci_port_start(p);
	return hr(PR(p, P_SIG));
}

static void t_ahci(void)
{
	u32 pi = ahci_bringup("ahci");
	int found = 0;
	for (int p = 0; p < 32; p++) {
		if (!(pi & (1u << p)))
			continue;
		u32 sig = ahci_port_attach(p);
		if (sig == 0x101)
			disk(p);
		else if (sig == 0xeb140101u)
			cd(p);
		else
			continue;
		found++;
		ahci_port_stop(p);
	}
	if (!found)
		test_fail("ahci", "no device on any port");
	test_pass("ahci");
}
GUEST_TEST(ahci, t_ahci);
