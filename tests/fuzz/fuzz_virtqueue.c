/*
 * libFuzzer target for the shared split virtqueue and the virtio-pci
 * register interface (devices/virtio.c).
 *
 *   clang-14 -std=c11 -D_GNU_SOURCE -g -O1 -pthread \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       tests/fuzz/fuzz_virtqueue.c devices/virtio.c -o /tmp/fuzz_virtqueue
 *   mkdir -p /tmp/vq-corpus && /tmp/fuzz_virtqueue -max_total_time=30 /tmp/vq-corpus
 *
 * (-DFUZZ_STANDALONE builds a main() that replays input files, for gcc or
 * for reproducing a crash without libFuzzer.)
 *
 * Input byte 0 picks a mode:
 *   even: ring walk.  Bytes 1..12 give the queue size, features, the
 *         caller's iov count and the three ring addresses; the rest is
 *         copied into guest RAM.  The device then takes chains until the
 *         ring is empty or broken, reading every readable byte and writing
 *         every writable one, so AddressSanitizer catches any buffer that
 *         escapes guest RAM; iovecs are also checked against RAM directly.
 *   odd:  register script.  Bytes 1..2 give a length L (<= 16 KiB) and the
 *         next L bytes seed the start of RAM; the rest is a list of 12-byte
 *         BAR accesses (bar, size, offset, value) run through
 *         vi_pci_read/vi_pci_write, whose kick handler walks the queue the
 *         same way.
 * -DFUZZ_MAKE_SEEDS builds a main() that writes well-formed seed inputs
 * (direct + indirect chains with EVENT_IDX, a modern driver bring-up, a
 * legacy one) into a directory, so the fuzzer starts from deep paths.
 * Guest RAM is two exact-size heap blocks: 64 KiB at GPA 0 and 4 KiB at
 * 4 GiB.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/log.h"
#include "../../devices/pci_emul.h"
#include "../../devices/virtio.h"
#include "../../vmm/vmm.h"

#define RAM0_SIZE 0x10000ULL
#define RAM1_BASE 0x100000000ULL
#define RAM1_SIZE 0x1000ULL
static uint8_t *ram0, *ram1;
static struct vmctx *const FAKE_CTX = (struct vmctx *)0x1;

/* Dirty logging stays off here (migration is tested end to end). */
bool vm_dirty_logging(struct vmctx *ctx) { (void)ctx; return false; }
void vm_mark_dirty(struct vmctx *ctx, uint64_t gpa, uint64_t len) { (void)ctx; (void)gpa; (void)len; }

void *vm_map_gpa(struct vmctx *ctx, uint64_t gpa, size_t len)
{
	if (ctx != FAKE_CTX)
		abort();
	if (gpa <= RAM0_SIZE && len <= RAM0_SIZE - gpa)
		return ram0 + gpa;
	if (gpa >= RAM1_BASE && gpa - RAM1_BASE <= RAM1_SIZE && len <= RAM1_SIZE - (gpa - RAM1_BASE))
		return ram1 + (gpa - RAM1_BASE);
	return NULL;
}

int log_level_max = LOG_ERR;
void logmsg(enum log_level lvl, const char *fmt, ...)
{
	(void)lvl;
	(void)fmt;
}

bool pci_msix_enabled(struct pci_devinst *pi) { (void)pi; return false; }
void pci_generate_msix(struct pci_devinst *pi, int index) { (void)pi; (void)index; }
void pci_lintr_assert(struct pci_devinst *pi) { (void)pi; }
void pci_lintr_deassert(struct pci_devinst *pi) { (void)pi; }
int pci_lintr_request(struct pci_devinst *pi) { (void)pi; return 0; }
int pci_emul_alloc_bar(struct pci_devinst *pi, int idx, enum pcibar_type type, uint64_t size)
{ (void)pi; (void)idx; (void)type; (void)size; return -1; }
int pci_emul_add_capability(struct pci_devinst *pi, const uint8_t *cap, int len)
{ (void)pi; (void)cap; (void)len; return -1; }
int pci_emul_add_msixcap(struct pci_devinst *pi, int msgnum, int barnum)
{ (void)pi; (void)msgnum; (void)barnum; return -1; }
int vi_ioeventfd_setup(struct virtio_softc *vs) { (void)vs; return 0; }

#define MAX_IOV 300

static struct {
	struct virtio_softc vs;
	struct vqueue_info vq[2];
	int niov;
	bool retry_once;
} F;
static struct pci_devinst fake_pi;
static volatile uint8_t sink;

static bool in_ram(const struct iovec *v)
{
	uint8_t *p = v->iov_base;
	size_t l = v->iov_len;
	return (p >= ram0 && p <= ram0 + RAM0_SIZE && l <= (size_t)(ram0 + RAM0_SIZE - p)) ||
	       (p >= ram1 && p <= ram1 + RAM1_SIZE && l <= (size_t)(ram1 + RAM1_SIZE - p));
}

/* What a device does with a queue: take, touch, return, interrupt. */
static void walk(struct vqueue_info *vq)
{
	static struct iovec iov[MAX_IOV];
	struct vq_chain ch;
	for (int iter = 0; iter < 2 * VQ_MAX_SIZE; iter++) {
		int n = vq_getchain(vq, iov, F.niov, &ch);
		if (n <= 0)
			break;
		if (n != ch.readable + ch.writable || n > F.niov)
			abort();
		uint8_t acc = 0;
		for (int i = 0; i < n; i++) {
			if (!in_ram(&iov[i]))
				abort();
			uint8_t *p = iov[i].iov_base;
			if (i < ch.readable)
				for (size_t j = 0; j < iov[i].iov_len; j++)
					acc ^= p[j];
			else
				memset(p, 0xa5, iov[i].iov_len);
		}
		sink = acc;
		if (F.retry_once) {
			F.retry_once = false;
			vq_retchain(vq);
			continue;
		}
		vq_relchain(vq, ch.idx, ch.wlen);
		if (iter % 3 == 0)
			vq_endchains(vq, false);
	}
	vq_endchains(vq, true);
	vq_kick_enable(vq);
	(void)vq_has_descs(vq);
	vq_kick_disable(vq);
}

static void fz_notify(void *sc, struct vqueue_info *vq)
{
	(void)sc;
	walk(vq);
}

static const struct virtio_consts fz_vc = {
	.vc_name = "fuzz", .vc_devtype = VIRTIO_ID_ENTROPY, .vc_nvq = 2, .vc_qnotify = fz_notify,
};

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static void setup(uint16_t qmax, uint64_t caps)
{
	memset(&F, 0, sizeof(F));
	vi_softc_linkup(&F.vs, &fz_vc, &F, NULL, F.vq);
	F.vs.vs_ctx = FAKE_CTX;
	F.vs.vs_hv_caps = caps;
	F.vs.vs_legacy = true;
	for (int i = 0; i < 2; i++) {
		F.vq[i].vq_maxsize = qmax;
		vq_reset(&F.vq[i]);
	}
	fake_pi.pi_arg = &F;
}

/* GPA from 32 fuzz bits: mostly in or just past low RAM, sometimes high RAM. */
static uint64_t fz_gpa(uint32_t v)
{
	if (v & 0x80000000u)
		return RAM1_BASE + (v & 0x1fff);
	return v % (RAM0_SIZE + 0x100);
}

static void ring_walk_mode(const uint8_t *d, size_t n)
{
	if (n < 13)
		return;
	unsigned qsize = 1u << (d[1] % 9);   /* 1..256 */
	uint64_t feats = VIRTIO_F_VERSION_1;
	if (d[2] & 1)
		feats |= VIRTIO_RING_F_INDIRECT_DESC;
	if (d[2] & 2)
		feats |= VIRTIO_RING_F_EVENT_IDX;
	if (d[2] & 4)
		feats |= VIRTIO_F_NOTIFY_ON_EMPTY;
	setup((uint16_t)qsize, VIRTIO_TRANSPORT_FEATURES);
	F.vs.vs_negotiated = feats;
	F.vs.vs_status = VIRTIO_S_DRIVER_OK;
	F.niov = 1 + d[3] % MAX_IOV;
	F.retry_once = d[2] & 8;
	uint64_t desc = fz_gpa(rd32(d + 4)), avail = fz_gpa(rd32(d + 8)) & ~1ULL, used = (avail + 0x1000) & ~3ULL;
	if (d[2] & 16)
		used = fz_gpa(rd32(d + 4) ^ 0x5a5a5a5a);
	size_t body = n - 13;
	memcpy(ram0, d + 13, body < RAM0_SIZE ? body : RAM0_SIZE);
	if (body > RAM0_SIZE)
		memcpy(ram1, d + 13 + RAM0_SIZE, body - RAM0_SIZE < RAM1_SIZE ? body - RAM0_SIZE : RAM1_SIZE);
	F.vq[0].vq_qsize = (uint16_t)qsize;
	if (vq_enable(&F.vq[0], desc & ~15ULL, avail, used) == 0)
		walk(&F.vq[0]);
}

static void script_mode(const uint8_t *d, size_t n)
{
	if (n < 3)
		return;
	setup(1u << (d[0] >> 1 & 7), VIRTIO_TRANSPORT_FEATURES);
	F.niov = 64;
	size_t seed = (size_t)(d[1] | d[2] << 8) % 0x4001;
	if (seed > n - 3)
		seed = n - 3;
	memcpy(ram0, d + 3, seed);
	for (size_t off = 3 + seed; off + 12 <= n; off += 12) {
		const uint8_t *op = d + off;
		int bar = op[0] & 1 ? VI_MODERN_BAR : VI_LEGACY_BAR;
		static const int sizes[4] = { 1, 2, 4, 8 };
		int size = sizes[op[1] & 3];
		uint64_t boff = (uint64_t)(op[2] | op[3] << 8) % (bar == VI_MODERN_BAR ? VI_MODERN_BAR_SIZE : 64);
		uint64_t val = rd32(op + 4) | (uint64_t)rd32(op + 8) << 32;
		if (op[0] & 2)
			(void)vi_pci_read(NULL, &fake_pi, bar, boff, size);
		else
			vi_pci_write(NULL, &fake_pi, bar, boff, size, val);
		/* Guest memory edits between register accesses. */
		if (op[1] & 0x80)
			ram0[(op[2] | op[3] << 8) % RAM0_SIZE] = op[4];
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ram0) {
		ram0 = malloc(RAM0_SIZE);
		ram1 = malloc(RAM1_SIZE);
	}
	memset(ram0, 0, RAM0_SIZE);
	memset(ram1, 0, RAM1_SIZE);
	if (size < 2)
		return 0;
	if (data[0] & 1)
		script_mode(data, size);
	else
		ring_walk_mode(data, size);
	pthread_mutex_destroy(&F.vs.vs_mtx);
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
static uint8_t sbuf[0x8000];
static size_t slen;

static void put(size_t off, const void *p, size_t n) { memcpy(sbuf + off, p, n); if (off + n > slen) slen = off + n; }
static void put_desc(size_t off, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct vring_desc d = { addr, len, flags, next };
	put(off + 16 * i, &d, 16);
}
static void u16at(size_t off, uint16_t v) { put(off, &v, 2); }
static void emit(const char *dir, const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(sbuf, 1, slen, f) != slen)
		abort();
	fclose(f);
}
/* A 16-entry ring at RAM 0x0 / 0x1000 / 0x2000 with a direct chain, an
 * indirect one and a chain ending in an indirect table; `base` is where
 * RAM starts in the input. */
static void ring16(size_t base)
{
	put_desc(base, 0, 0x3000, 64, VRING_DESC_F_NEXT, 1);
	put_desc(base, 1, 0x3100, 32, VRING_DESC_F_WRITE, 0);
	put_desc(base, 2, 0x3800, 48, VRING_DESC_F_INDIRECT, 0);
	put_desc(base, 3, 0x3200, 16, VRING_DESC_F_NEXT, 4);
	put_desc(base, 4, 0x3840, 32, VRING_DESC_F_INDIRECT, 0);
	put_desc(base + 0x3800, 0, 0x3300, 16, VRING_DESC_F_NEXT, 2);
	put_desc(base + 0x3800, 2, 0x3400, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
	put_desc(base + 0x3800, 1, RAM1_BASE + 0x10, 1, VRING_DESC_F_WRITE, 0);
	put_desc(base + 0x3840, 0, 0x3500, 8, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
	put_desc(base + 0x3840, 1, 0x3600, 8, VRING_DESC_F_WRITE, 0);
	u16at(base + 0x1000 + 2, 3);                 /* avail idx */
	u16at(base + 0x1000 + 4, 0);
	u16at(base + 0x1000 + 6, 2);
	u16at(base + 0x1000 + 8, 3);
	u16at(base + 0x1000 + 4 + 2 * 16, 1);        /* used_event */
	put(base + 0x3900, "", 1);
}
static size_t op(size_t off, int bar_modern, int read, int size_log2, uint16_t boff, uint64_t val)
{
	uint8_t o[12] = { (uint8_t)((bar_modern ? 1 : 0) | (read ? 2 : 0)), (uint8_t)size_log2,
	                  (uint8_t)boff, (uint8_t)(boff >> 8) };
	memcpy(o + 4, &val, 8);
	put(off, o, 12);
	return off + 12;
}
int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : ".";
	/* 1. ring walk */
	memset(sbuf, 0, sizeof(sbuf));
	slen = 0;
	uint8_t h[13] = { 0, 4, 3, 63 };
	uint32_t desc = 0, avail = 0x1000;
	memcpy(h + 4, &desc, 4);
	memcpy(h + 8, &avail, 4);
	put(0, h, 13);
	ring16(13);
	emit(dir, "seed-ring");
	/* 2. modern bring-up script over the same ring */
	memset(sbuf, 0, sizeof(sbuf));
	slen = 0;
	uint8_t sh[3] = { 1 | 4 << 1, 0x00, 0x40 };   /* qmax 16, 16 KiB of RAM */
	put(0, sh, 3);
	ring16(3);
	size_t o = 3 + 0x4000;
	o = op(o, 1, 0, 0, 0x14, 1);
	o = op(o, 1, 0, 0, 0x14, 3);
	o = op(o, 1, 0, 2, 0x00, 1);
	o = op(o, 1, 1, 2, 0x04, 0);
	o = op(o, 1, 0, 2, 0x08, 0);
	o = op(o, 1, 0, 2, 0x0c, (uint32_t)(VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX));
	o = op(o, 1, 0, 2, 0x08, 1);
	o = op(o, 1, 0, 2, 0x0c, 1);
	o = op(o, 1, 0, 0, 0x14, 0xb);
	o = op(o, 1, 0, 1, 0x16, 0);
	o = op(o, 1, 0, 1, 0x18, 16);
	o = op(o, 1, 0, 2, 0x20, 0);
	o = op(o, 1, 0, 2, 0x28, 0x1000);
	o = op(o, 1, 0, 3, 0x30, 0x2000);
	o = op(o, 1, 0, 1, 0x1c, 1);
	o = op(o, 1, 0, 1, VI_NOTIFY_OFF, 0);
	o = op(o, 1, 0, 0, 0x14, 0xf);
	o = op(o, 1, 1, 0, VI_ISR_OFF, 0);
	o = op(o, 1, 0, 1, VI_NOTIFY_OFF, 0);
	o = op(o, 1, 0, 0, 0x14, 0);
	emit(dir, "seed-modern");
	/* 3. legacy bring-up: ring at PFN 2 in the legacy layout */
	memset(sbuf, 0, sizeof(sbuf));
	slen = 0;
	put(0, sh, 3);
	slen = 3 + 0x4000;   /* PFN 2: desc 0x2000, avail 0x2100, used 0x3000 */
	put_desc(3 + 0x2000, 0, 0x3800, 64, VRING_DESC_F_NEXT, 1);
	put_desc(3 + 0x2000, 1, 0x3900, 32, VRING_DESC_F_WRITE, 0);
	u16at(3 + 0x2100 + 2, 1);
	o = 3 + 0x4000;
	o = op(o, 0, 0, 0, 18, 3);
	o = op(o, 0, 1, 2, 0, 0);
	o = op(o, 0, 0, 2, 4, (uint32_t)VIRTIO_RING_F_INDIRECT_DESC);
	o = op(o, 0, 0, 1, 14, 0);
	o = op(o, 0, 0, 2, 8, 2);
	o = op(o, 0, 0, 0, 18, 7);
	o = op(o, 0, 0, 1, 16, 0);
	o = op(o, 0, 1, 0, 19, 0);
	o = op(o, 0, 0, 2, 8, 0);
	emit(dir, "seed-legacy");
	printf("wrote 3 seeds to %s\n", dir);
	return 0;
}
#endif

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f)
			continue;
		static uint8_t buf[1 << 20];
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("replayed %d inputs\n", argc - 1);
	return 0;
}
#endif
