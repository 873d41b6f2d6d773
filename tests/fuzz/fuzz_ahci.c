/*
 * libFuzzer target for the AHCI HBA (devices/ahci.c, devices/ahci_atapi.c):
 * ABAR register writes, command headers, command FISes (every ATA
 * command, NCQ), ATAPI packets, PRDTs pointing anywhere, config space
 * (MSI), checkpoint round trips and the restore parser on raw bytes.
 *
 *   tests/fuzz/run.sh -t 60 ahci
 *
 * One real HBA built by init_run_all with only the KVM layer stubbed
 * (tests/fuzz/nvme_stubs.c) in slot 4: a 1 MiB disk on port 0 and a
 * 128 KiB CD image on port 1; blockif is real.  Guest RAM: 1 MiB at 0 and
 * 64 KiB at 4 GiB.  Before each input the HBA is loaded back from the
 * state saved at start-up and RAM is cleared; after it the HBA is paused
 * as for a checkpoint and nothing may be left in flight.
 *
 * Input: a sequence of operations, each an opcode byte then its operands
 * (little-endian; a short input ends the sequence):
 *   0 RAM write    u8 region(bit 0: high RAM) u24 offset u8 len, bytes
 *   1 ABAR write   u16 offset, u32 value
 *   2 ABAR read    u16 offset
 *   3 port start   u8 port (CLB/FB at fixed places, FRE, IE, ST, GHC.IE)
 *   4 command      u8 port, u8 slot, u8 flags (bit 0: NCQ, set SACT too; bit 1: ATAPI, bit 2: write),
 *                  u8 PRD count (0-7), 20-byte command FIS, 16-byte ATAPI command,
 *                  per PRD: u32 address, u32 DW3 (byte count - 1, I)
 *   5 drain        (main-loop callbacks, then pause/resume)
 *   6 config write u8 offset, u8 size, u32 value
 *   7 checkpoint   u8 mode: 0 save+restore, else restore the next u16-length bytes
 *
 * -DFUZZ_MAKE_SEEDS builds a main() that writes seed inputs (Linux-like
 * bring-up and IDENTIFY, DMA/NCQ/PIO I/O, TRIM, errors, ATAPI commands, a
 * checkpoint) into a directory: tests/fuzz/run.sh --make-seeds ahci.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/snapshot.h"
#include "../../devices/ahci_internal.h"
#include "../../devices/pci_emul.h"
#include "fuzz_input.h"
#include "nvme_stubs.h"

#define RAM0 (1ull << 20)
#define SLOT 4
#define CLB(p) (0x10000ull + (uint64_t)(p) * 0x2000)
#define FB(p) (0x11000ull + (uint64_t)(p) * 0x2000)
#define CTBA(p, s) (0x40000ull + (uint64_t)(p) * 0x20000 + (uint64_t)(s) * 0x1000)

static struct pci_devinst *pi;
static uint64_t abar;
static struct snap_buf baseline;
static char tmpdir[64];

static void cleanup(void)
{
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (tmpdir[0] && system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/fuzz_ahci.XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
	atexit(cleanup);
	static char k0[128], k1[128];
	char img[96];
	for (int d = 0; d < 2; d++) {
		snprintf(img, sizeof(img), "%s/%d.img", tmpdir, d);
		int fd = open(img, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, d ? 128 << 10 : 1 << 20))
			abort();
		if (pwrite(fd, "CD001 hyve ahci fuzz", 20, d ? 16 * 2048 : 0) != 20)
			abort();
		close(fd);
		snprintf(d ? k1 : k0, 128, "pci.0.4.0.port.%d.path=%s", d, img);
	}
	const char *kv[] = {
		"name=fuzz", "pci.0.4.0.device=ahci", "pci.0.4.0.port.0.type=hd", k0, "pci.0.4.0.port.1.type=cd", k1,
		NULL,
	};
	nh_ram0_size = RAM0;
	nh_setup(kv);
	if (!(pi = nh_slot(SLOT)))
		abort();
	abar = pi->pi_bar[5].addr;
	nh_save_state(pi, &baseline);
}

static void wr(uint32_t off, uint32_t v) { nh_mmio_write(abar + off, 4, v); }
static uint32_t rd(uint32_t off) { return (uint32_t)nh_mmio_read(abar + off, 4); }
static void pwr(int p, uint32_t off, uint32_t v) { wr(0x100 + 0x80 * (uint32_t)p + off, v); }
static uint32_t prd(int p, uint32_t off) { return rd(0x100 + 0x80 * (uint32_t)p + off); }

static void drain(void)
{
	for (int i = 0; i < 100 && nh_poll() > 0; i++)
		;
	pi->pi_d->pe_pause(pi);
	nh_poll();
	pi->pi_d->pe_resume(pi);
}

static void run(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size, false };
	while (!in.eof && in.n > 0) {
		switch (fuzz_take(&in, 1) % 8) {
		case 0:
			nh_fuzz_ram_write(&in);
			break;
		case 1: {
			uint32_t off = (uint32_t)fuzz_take(&in, 2) & 0x1ffc, v = (uint32_t)fuzz_take(&in, 4);
			if (!in.eof)
				wr(off, v);
			break;
		}
		case 2: {
			uint32_t off = (uint32_t)fuzz_take(&in, 2) & 0x1fff;
			if (!in.eof)
				(void)nh_mmio_read(abar + off, 1 << (off & 2 ? 1 : 2));
			break;
		}
		case 3: {
			int p = (int)fuzz_take(&in, 1) & 1;
			if (in.eof)
				break;
			pwr(p, 0x18, prd(p, 0x18) & ~0x11u);
			pwr(p, 0x00, (uint32_t)CLB(p));
			pwr(p, 0x08, (uint32_t)FB(p));
			pwr(p, 0x18, prd(p, 0x18) | 0x10);
			pwr(p, 0x30, 0xffffffff);
			pwr(p, 0x14, 0x7d40003f);
			pwr(p, 0x18, prd(p, 0x18) | 0x1);
			wr(0x04, 0x80000002);
			break;
		}
		case 4: {
			int p = (int)fuzz_take(&in, 1) & 1, s = (int)fuzz_take(&in, 1) & 31, fl = (int)fuzz_take(&in, 1);
			int n = (int)fuzz_take(&in, 1) & 7;
			if (in.eof || in.n < 36 + 8u * (unsigned)n)
				return;
			uint8_t *t = nh_ptr(CTBA(p, s), 0x80 + 16 * 8);
			memset(t, 0, 0x80 + 16 * 8);
			memcpy(t, in.p, 20);
			memcpy(t + 0x40, in.p + 20, 16);
			in.p += 36;
			in.n -= 36;
			for (int i = 0; i < n; i++) {
				uint32_t a = (uint32_t)fuzz_take(&in, 4), dw3 = (uint32_t)fuzz_take(&in, 4);
				memcpy(t + 0x80 + 16 * i, &a, 4);
				memcpy(t + 0x80 + 16 * i + 12, &dw3, 4);
			}
			uint8_t *h = nh_ptr(CLB(p) + 32u * (uint32_t)s, 32);
			uint32_t dw0 = 5 | (fl & 2 ? 0x20 : 0) | (fl & 4 ? 0x40 : 0) | (uint32_t)n << 16;
			uint64_t ctba = CTBA(p, s);
			memcpy(h, &dw0, 4);
			memset(h + 4, 0, 4);
			memcpy(h + 8, &ctba, 8);
			if (fl & 1)
				pwr(p, 0x34, 1u << s);
			pwr(p, 0x38, 1u << s);
			break;
		}
		case 5:
			drain();
			break;
		case 6:
			nh_fuzz_cfg_write(&in, SLOT);
			break;
		case 7:
			nh_fuzz_checkpoint(&in, pi);
			break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		setup();
		ready = true;
	}
	nh_fuzz_reset(pi, &baseline);
	run(data, size);
	nh_poll();
	pi->pi_d->pe_pause(pi);
	struct ahci_sc *sc = pi->pi_arg;
	for (int p = 0; p < sc->nports; p++)
		if (sc->port[p].pending)
			abort();   /* drained: nothing may be in flight */
	pi->pi_d->pe_resume(pi);
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
static void s_cmd(struct fuzz_seed *s, int port, int slot, int flags, uint8_t cmd, uint64_t lba, uint16_t count,
                  uint16_t feat, const uint8_t *cdb, uint32_t buf, uint32_t len)
{
	uint8_t f[36] = { 0x27, 0x80, cmd, (uint8_t)feat };
	f[4] = (uint8_t)lba;
	f[5] = (uint8_t)(lba >> 8);
	f[6] = (uint8_t)(lba >> 16);
	f[7] = 0x40;
	f[8] = (uint8_t)(lba >> 24);
	f[11] = (uint8_t)(feat >> 8);
	f[12] = (uint8_t)count;
	f[13] = (uint8_t)(count >> 8);
	if (flags & 1)
		f[12] = (uint8_t)(slot << 3);
	if (cdb)
		memcpy(f + 20, cdb, 12);
	seed_u(s, 4, 1);
	seed_u(s, (uint64_t)port, 1);
	seed_u(s, (uint64_t)slot, 1);
	seed_u(s, (uint64_t)flags, 1);
	seed_u(s, len ? 1 : 0, 1);
	seed_bytes(s, f, sizeof(f));
	if (len) {
		seed_u(s, buf, 4);
		seed_u(s, len - 1, 4);
	}
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	struct fuzz_seed s;

	s.n = 0;
	seed_u(&s, 3, 1); seed_u(&s, 0, 1);
	s_cmd(&s, 0, 0, 0, 0xec, 0, 0, 0, NULL, 0x80000, 512);
	s_cmd(&s, 0, 1, 0, 0x35, 8, 8, 0, NULL, 0x81000, 4096);
	seed_u(&s, 5, 1);
	s_cmd(&s, 0, 2, 0, 0x25, 8, 8, 0, NULL, 0x82000, 4096);
	s_cmd(&s, 0, 3, 0, 0x24, 2000, 1, 0, NULL, 0x83000, 512);
	s_cmd(&s, 0, 4, 0, 0xea, 0, 0, 0, NULL, 0, 0);
	seed_u(&s, 5, 1);
	seed_write(dir, "identify_dma_pio", &s);

	s.n = 0;
	seed_u(&s, 3, 1); seed_u(&s, 0, 1);
	s_cmd(&s, 0, 1, 1, 0x61, 16, 0, 8, NULL, 0x81000, 4096);
	s_cmd(&s, 0, 2, 1, 0x60, 16, 0, 8, NULL, 0x82000, 4096);
	s_cmd(&s, 0, 3, 1, 0x60, 4000, 0, 200, NULL, 0x82000, 4096);
	seed_u(&s, 5, 1);
	s_cmd(&s, 0, 0, 0, 0x2f, 0x10, 1, 0, NULL, 0x83000, 512);
	seed_u(&s, 7, 1); seed_u(&s, 0, 1);
	seed_write(dir, "ncq_errlog_ckpt", &s);

	s.n = 0;
	uint8_t r[8] = { 32, 0, 0, 0, 0, 0, 8, 0 };
	seed_u(&s, 0, 1); seed_u(&s, 0, 1); seed_u(&s, 0x84000, 3); seed_u(&s, 8, 1); seed_bytes(&s, r, 8);
	seed_u(&s, 3, 1); seed_u(&s, 0, 1);
	s_cmd(&s, 0, 0, 4, 0x06, 0, 1, 1, NULL, 0x84000, 512);
	s_cmd(&s, 0, 1, 0, 0xef, 0, 0x46, 3, NULL, 0, 0);
	s_cmd(&s, 0, 2, 0, 0xc6, 0, 16, 0, NULL, 0, 0);
	s_cmd(&s, 0, 3, 0, 0x25, 0x7fffff, 8, 0, NULL, 0x300000, 4096);
	seed_u(&s, 5, 1);
	seed_write(dir, "trim_features_errors", &s);

	s.n = 0;
	seed_u(&s, 3, 1); seed_u(&s, 1, 1);
	static const uint8_t cdbs[][12] = {
		{ 0x12, 0, 0, 0, 36 }, { 0x00 }, { 0x25 }, { 0x28, 0, 0, 0, 0, 16, 0, 0, 1 },
		{ 0x43, 0, 0, 0, 0, 0, 0, 0, 100 }, { 0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8 },
		{ 0x46, 0, 0, 0, 0, 0, 0, 0, 64 }, { 0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 64 }, { 0x03, 0, 0, 0, 18 },
	};
	s_cmd(&s, 1, 0, 0, 0xa1, 0, 0, 0, NULL, 0x80000, 512);
	for (size_t i = 0; i < sizeof(cdbs) / sizeof(cdbs[0]); i++)
		s_cmd(&s, 1, (int)i + 1, 2, 0xa0, 0, 0, 1, cdbs[i], 0x81000 + 0x1000 * (uint32_t)i, 2048);
	seed_u(&s, 5, 1);
	seed_write(dir, "atapi", &s);
	return 0;
}
#endif
