/*
 * Unit test of the shared split virtqueue and the virtio-pci register
 * interface (devices/virtio.c), against fake guest RAM: 1 MiB at GPA 0
 * and 64 KiB at 4 GiB, each an exact-size heap block so AddressSanitizer
 * reports any access outside guest RAM.  No KVM needed.
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -g \
 *      -fsanitize=address,undefined -fno-sanitize-recover=undefined \
 *      tests/unit/test_virtqueue.c devices/virtio.c -o /tmp/test_virtqueue
 *   /tmp/test_virtqueue
 *
 * Prints one line per check and "N passed, N failed"; exits 1 on failure.
 * test-sources: devices/virtio.c
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/log.h"
#include "../../devices/pci_emul.h"
#include "../../devices/virtio.h"
#include "../../vmm/vmm.h"

/* ---- fake guest RAM and the few framework functions virtio.c uses ---- */

#define RAM0_SIZE 0x100000ULL
#define RAM1_BASE 0x100000000ULL
#define RAM1_SIZE 0x10000ULL
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

int log_level_max = LOG_DEBUG;
static int nwarn;
static char lastwarn[512];
void logmsg(enum log_level lvl, const char *fmt, ...)
{
	if (lvl > LOG_WARN)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(lastwarn, sizeof(lastwarn), fmt, ap);
	va_end(ap);
	nwarn++;
	if (getenv("VERBOSE"))
		fprintf(stderr, "    log: %s\n", lastwarn);
}

/* Never reached with vs_pi == NULL; present for the linker. */
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

/* ---- checks ---- */

static int passed, failed;
static void check(bool ok, const char *what, int line)
{
	printf("%s - %s%s\n", ok ? "ok  " : "FAIL", what, ok ? "" : "");
	if (!ok)
		printf("       (line %d; last log: %s)\n", line, lastwarn);
	ok ? passed++ : failed++;
}
#define CHECK(cond, what) check((cond), (what), __LINE__)

/* ---- a device under test ---- */

#define DESC  0x40000ULL
#define AVAIL 0x80000ULL
#define USED  0x90000ULL
#define BUF   0x1000ULL

static int nkicks;
static void t_notify(void *sc, struct vqueue_info *vq) { (void)sc; (void)vq; nkicks++; }
static const struct virtio_consts test_vc = {
	.vc_name = "test", .vc_devtype = VIRTIO_ID_ENTROPY, .vc_nvq = 1, .vc_qnotify = t_notify,
};

static struct {
	struct virtio_softc vs;
	struct vqueue_info vq;
} F;
static bool f_inited;
static uint16_t aidx;   /* driver's avail idx */

static void fx_init(unsigned qsize, uint64_t features)
{
	if (f_inited)
		pthread_mutex_destroy(&F.vs.vs_mtx);
	memset(&F, 0, sizeof(F));
	memset(ram0, 0, RAM0_SIZE);
	memset(ram1, 0, RAM1_SIZE);
	vi_softc_linkup(&F.vs, &test_vc, &F, NULL, &F.vq);
	f_inited = true;
	F.vs.vs_ctx = FAKE_CTX;
	F.vs.vs_hv_caps = VIRTIO_TRANSPORT_FEATURES;
	F.vs.vs_negotiated = features;
	F.vs.vs_status = VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK;
	F.vq.vq_maxsize = (uint16_t)qsize;
	vq_reset(&F.vq);
	aidx = 0;
	nwarn = 0;
	nkicks = 0;
	lastwarn[0] = '\0';
	if (vq_enable(&F.vq, DESC, AVAIL, USED))
		abort();
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct vring_desc d = { addr, len, flags, next };
	memcpy(vm_map_gpa(FAKE_CTX, table + 16ULL * i, 16), &d, 16);
}

static void avail_push(uint16_t head)
{
	struct vring_avail *a = vm_map_gpa(FAKE_CTX, AVAIL, vring_avail_size(F.vq.vq_qsize));
	a->ring[aidx % F.vq.vq_qsize] = head;
	aidx++;
	a->idx = aidx;
}

static struct vring_used *used_ring(void) { return vm_map_gpa(FAKE_CTX, USED, vring_used_size(F.vq.vq_qsize)); }
static struct vring_avail *avail_ring(void) { return vm_map_gpa(FAKE_CTX, AVAIL, vring_avail_size(F.vq.vq_qsize)); }

static bool iov_in_ram(const struct iovec *iov, int n)
{
	for (int i = 0; i < n; i++) {
		uint8_t *p = iov[i].iov_base;
		size_t l = iov[i].iov_len;
		bool in0 = p >= ram0 && p <= ram0 + RAM0_SIZE && l <= (size_t)(ram0 + RAM0_SIZE - p);
		bool in1 = p >= ram1 && p <= ram1 + RAM1_SIZE && l <= (size_t)(ram1 + RAM1_SIZE - p);
		if (!in0 && !in1)
			return false;
	}
	return true;
}

static bool needs_reset(void)
{
	return (F.vs.vs_status & VIRTIO_S_NEEDS_RESET) && F.vs.vs_broken;
}

/* A malformed chain: getchain fails, NEEDS_RESET, config interrupt, one log line. */
static void expect_bad(const char *what, struct iovec *iov, int niov)
{
	struct vq_chain ch;
	F.vs.vs_isr = 0;
	int n = vq_getchain(&F.vq, iov, niov, &ch);
	char msg[200];
	snprintf(msg, sizeof(msg), "%s -> NEEDS_RESET, config interrupt, one log line", what);
	CHECK(n == -1 && needs_reset() && (F.vs.vs_isr & VIRTIO_ISR_CONFIG) && nwarn == 1, msg);
	/* Stays stopped, logs nothing more, never touches the used ring. */
	uint16_t used_before = used_ring()->idx;
	n = vq_getchain(&F.vq, iov, niov, &ch);
	vq_relchain(&F.vq, 0, 1);
	vq_endchains(&F.vq, true);
	snprintf(msg, sizeof(msg), "%s -> queue stays stopped, no second log line", what);
	CHECK(n == -1 && nwarn == 1 && used_ring()->idx == used_before, msg);
}

static uint64_t mmio_read(int bar, uint64_t off, int size);
static void mmio_write(int bar, uint64_t off, int size, uint64_t val);

int main(void)
{
	ram0 = malloc(RAM0_SIZE);
	ram1 = malloc(RAM1_SIZE);
	struct iovec iov[64];
	struct vq_chain ch;
	int n;

	/* ---- well-formed rings ---- */
	fx_init(256, VIRTIO_F_VERSION_1);
	CHECK(vq_getchain(&F.vq, iov, 64, &ch) == 0, "empty ring: no chain");
	put_desc(DESC, 0, BUF, 64, 0, 0);
	avail_push(0);
	n = vq_getchain(&F.vq, iov, 64, &ch);
	CHECK(n == 1 && ch.idx == 0 && ch.readable == 1 && ch.writable == 0 && ch.rlen == 64 &&
	      iov[0].iov_base == ram0 + BUF && iov[0].iov_len == 64, "single readable descriptor");
	vq_relchain(&F.vq, ch.idx, 0);
	F.vs.vs_isr = 0;
	vq_endchains(&F.vq, true);
	CHECK(used_ring()->idx == 1 && used_ring()->ring[0].id == 0 && (F.vs.vs_isr & VIRTIO_ISR_QUEUE),
	      "relchain publishes used entry and endchains interrupts");

	put_desc(DESC, 5, BUF, 16, VRING_DESC_F_NEXT, 9);
	put_desc(DESC, 9, BUF + 0x100, 512, VRING_DESC_F_NEXT, 2);
	put_desc(DESC, 2, BUF + 0x400, 1, VRING_DESC_F_WRITE, 0);
	avail_push(5);
	n = vq_getchain(&F.vq, iov, 64, &ch);
	CHECK(n == 3 && ch.idx == 5 && ch.readable == 2 && ch.writable == 1 && ch.rlen == 528 &&
	      ch.wlen == 1 && iov[2].iov_base == ram0 + BUF + 0x400 && iov_in_ram(iov, n),
	      "readable,readable,writable chain");
	vq_relchain(&F.vq, ch.idx, 1);
	avail_ring()->flags = VRING_AVAIL_F_NO_INTERRUPT;
	F.vs.vs_isr = 0;
	vq_endchains(&F.vq, true);
	CHECK(used_ring()->idx == 2 && used_ring()->ring[1].id == 5 && used_ring()->ring[1].len == 1 &&
	      F.vs.vs_isr == 0, "VRING_AVAIL_F_NO_INTERRUPT suppresses the interrupt");
	avail_ring()->flags = 0;

	put_desc(DESC, 7, BUF, 8, 0, 0);
	avail_push(7);
	n = vq_getchain(&F.vq, iov, 64, &ch);
	vq_retchain(&F.vq);
	n = vq_getchain(&F.vq, iov, 64, &ch);
	CHECK(n == 1 && ch.idx == 7 && vq_getchain(&F.vq, iov, 64, &ch) == 0, "retchain returns the chain once");

	/* Boundaries: last byte of RAM, and the high region. */
	put_desc(DESC, 3, RAM0_SIZE - 16, 16, 0, 1);
	avail_push(3);
	n = vq_getchain(&F.vq, iov, 64, &ch);
	CHECK(n == 1 && iov[0].iov_base == ram0 + RAM0_SIZE - 16, "buffer ending at the last byte of RAM");
	put_desc(DESC, 4, RAM1_BASE + 0x100, 0x200, VRING_DESC_F_WRITE, 0);
	avail_push(4);
	n = vq_getchain(&F.vq, iov, 64, &ch);
	CHECK(n == 1 && iov[0].iov_base == ram1 + 0x100 && ch.writable == 1, "buffer in RAM above 4 GiB");
	CHECK(nwarn == 0 && !F.vs.vs_broken, "no errors so far");

	/* Indirect table with three entries (readable, writable, writable). */
	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	uint64_t tbl = 0x20000;
	put_desc(tbl, 0, BUF, 16, VRING_DESC_F_NEXT, 2);
	put_desc(tbl, 2, BUF + 0x1000, 4096, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
	put_desc(tbl, 1, BUF + 0x3000, 1, VRING_DESC_F_WRITE, 0);
	put_desc(DESC, 0, tbl, 48, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	n = vq_getchain(&F.vq, iov, 64, &ch);
	CHECK(n == 3 && ch.readable == 1 && ch.writable == 2 && ch.wlen == 4097 && iov_in_ram(iov, n),
	      "indirect table");
	/* Direct descriptors followed by an indirect one (allowed by the spec). */
	put_desc(DESC, 1, BUF, 16, VRING_DESC_F_NEXT, 2);
	uint64_t tbl2 = 0x21000;
	put_desc(DESC, 2, tbl2, 32, VRING_DESC_F_INDIRECT, 0);
	put_desc(tbl2, 0, BUF + 0x2000, 8, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
	put_desc(tbl2, 1, BUF + 0x2100, 8, VRING_DESC_F_WRITE, 0);
	avail_push(1);
	n = vq_getchain(&F.vq, iov, 64, &ch);
	CHECK(n == 3 && ch.readable == 1 && ch.writable == 2 && nwarn == 0, "direct chain ending in an indirect table");

	/* ---- EVENT_IDX ---- */
	fx_init(8, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX);
	uint16_t *used_event = &avail_ring()->ring[8];
	uint16_t *avail_event = (uint16_t *)&used_ring()->ring[8];
	for (int i = 0; i < 3; i++) {
		put_desc(DESC, i, BUF + 0x100 * i, 16, VRING_DESC_F_WRITE, 0);
		avail_push((uint16_t)i);
	}
	*used_event = 2;   /* interrupt when used idx passes 2, i.e. after the 3rd */
	int nint = 0;
	for (int i = 0; i < 3; i++) {
		n = vq_getchain(&F.vq, iov, 64, &ch);
		vq_relchain(&F.vq, ch.idx, 16);
		F.vs.vs_isr = 0;
		vq_endchains(&F.vq, false);
		if (F.vs.vs_isr & VIRTIO_ISR_QUEUE)
			nint += 1 << i;
	}
	CHECK(nint == 4, "EVENT_IDX: interrupt only when used_event is crossed");
	CHECK(vq_getchain(&F.vq, iov, 64, &ch) == 0 && *avail_event == 3,
	      "EVENT_IDX: empty ring re-arms avail_event at last_avail");
	*used_event = 10;
	put_desc(DESC, 3, BUF, 16, VRING_DESC_F_WRITE, 0);
	avail_push(3);
	put_desc(DESC, 4, BUF, 16, VRING_DESC_F_WRITE, 0);
	avail_push(4);
	vq_getchain(&F.vq, iov, 64, &ch);
	vq_relchain(&F.vq, ch.idx, 16);
	vq_getchain(&F.vq, iov, 64, &ch);
	vq_relchain(&F.vq, ch.idx, 16);
	F.vs.vs_isr = 0;
	vq_endchains(&F.vq, true);
	CHECK(F.vs.vs_isr == 0, "EVENT_IDX: no interrupt while used_event is ahead");

	/* ---- malformed rings: each must stop the device safely ---- */
	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, RAM0_SIZE - 8, 16, 0, 0);
	avail_push(0);
	expect_bad("buffer crossing the end of RAM", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, 0xfee00000ULL, 4, 0, 0);
	avail_push(0);
	expect_bad("buffer address outside RAM (LAPIC page)", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, 0xfffffffffffff000ULL, 0x2000, 0, 0);
	avail_push(0);
	expect_bad("buffer address wrapping 2^64", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, BUF, 0xffffffffu, VRING_DESC_F_WRITE, 0);
	avail_push(0);
	expect_bad("huge descriptor length", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	avail_push(16);
	expect_bad("head index >= queue size", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, BUF, 16, VRING_DESC_F_NEXT, 0x8000);
	avail_push(0);
	expect_bad("next index >= queue size", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, BUF, 16, VRING_DESC_F_NEXT, 1);
	put_desc(DESC, 1, BUF, 16, VRING_DESC_F_NEXT, 0);
	avail_push(0);
	expect_bad("descriptor loop", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, BUF, 16, VRING_DESC_F_NEXT, 0);
	avail_push(0);
	expect_bad("descriptor pointing at itself", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, BUF, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	put_desc(DESC, 1, BUF, 16, 0, 0);
	avail_push(0);
	expect_bad("readable after writable", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	for (int i = 0; i < 16; i++)
		put_desc(DESC, i, BUF, 16, i < 15 ? VRING_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	avail_push(0);
	expect_bad("chain with more buffers than the caller's iov", iov, 8);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	avail_push(0);
	avail_ring()->idx = 17;   /* 17 new entries in a 16-entry ring */
	expect_bad("avail idx jump larger than the queue", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1);
	put_desc(DESC, 0, 0x20000, 32, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("indirect descriptor not negotiated", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(DESC, 0, RAM0_SIZE - 16, 32, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("indirect table crossing the end of RAM", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(DESC, 0, 0x7ffffff00000ULL, 32, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("indirect table outside RAM", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(DESC, 0, 0x20000, 24, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("indirect length not a multiple of 16", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(DESC, 0, 0x20000, 0, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("empty indirect table", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(0x20000, 0, 0x21000, 16, VRING_DESC_F_INDIRECT, 0);
	put_desc(DESC, 0, 0x20000, 16, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("nested indirect table", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(0x20000, 0, BUF, 16, 0, 0);
	put_desc(DESC, 0, 0x20000, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
	avail_push(0);
	expect_bad("indirect descriptor with NEXT", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(0x20000, 0, BUF, 16, VRING_DESC_F_NEXT, 1);
	put_desc(0x20000, 1, BUF, 16, VRING_DESC_F_NEXT, 0);
	put_desc(DESC, 0, 0x20000, 32, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("loop inside an indirect table", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(0x20000, 0, BUF, 16, VRING_DESC_F_NEXT, 2);
	put_desc(DESC, 0, 0x20000, 32, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("indirect next index beyond the table", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(0x20000, 0, BUF, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	put_desc(0x20000, 1, BUF, 16, 0, 0);
	put_desc(DESC, 0, 0x20000, 32, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("readable after writable inside an indirect table", iov, 64);

	fx_init(16, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(0x20000, 0, 0x1000000, 16, 0, 0);
	put_desc(DESC, 0, 0x20000, 16, VRING_DESC_F_INDIRECT, 0);
	avail_push(0);
	expect_bad("indirect entry pointing outside RAM", iov, 64);

	/* Total length > 4 GiB from 4097 in-RAM buffers of 1 MiB each. */
	{
		enum { Q = 8192 };
		fx_init(Q, VIRTIO_F_VERSION_1);
		for (int i = 0; i < 4097; i++)
			put_desc(DESC, i, 0, (uint32_t)RAM0_SIZE, VRING_DESC_F_NEXT, (uint16_t)(i + 1));
		avail_push(0);
		struct iovec *big = calloc(Q, sizeof(*big));
		expect_bad("chain longer than 4 GiB in total", big, Q);
		free(big);
	}

	/* ---- ring placement at enable ---- */
	fx_init(16, VIRTIO_F_VERSION_1);
	vq_reset(&F.vq);
	CHECK(vq_enable(&F.vq, RAM0_SIZE - 128, AVAIL, USED) == -1 && needs_reset() && nwarn == 1,
	      "descriptor table crossing the end of RAM -> NEEDS_RESET");
	fx_init(16, VIRTIO_F_VERSION_1);
	vq_reset(&F.vq);
	CHECK(vq_enable(&F.vq, DESC, 0xe0000000ULL, USED) == -1 && needs_reset(), "avail ring outside RAM -> NEEDS_RESET");
	fx_init(16, VIRTIO_F_VERSION_1);
	vq_reset(&F.vq);
	CHECK(vq_enable(&F.vq, DESC, AVAIL, RAM1_BASE + RAM1_SIZE - 100) == -1 && needs_reset(),
	      "used ring crossing the end of high RAM -> NEEDS_RESET");
	fx_init(16, VIRTIO_F_VERSION_1);
	vq_reset(&F.vq);
	CHECK(vq_enable(&F.vq, DESC + 8, AVAIL, USED) == -1 && needs_reset(), "misaligned descriptor table -> NEEDS_RESET");
	fx_init(16, VIRTIO_F_VERSION_1);
	vq_reset(&F.vq);
	F.vq.vq_qsize = 12;
	CHECK(vq_enable(&F.vq, DESC, AVAIL, USED) == -1 && needs_reset(), "queue size not a power of two -> NEEDS_RESET");
	fx_init(16, VIRTIO_F_VERSION_1);
	vq_reset(&F.vq);
	F.vq.vq_qsize = 32;
	CHECK(vq_enable(&F.vq, DESC, AVAIL, USED) == -1 && needs_reset(), "queue size above the maximum -> NEEDS_RESET");

	/* ---- the register interface, through the BAR handlers ---- */
	fx_init(16, 0);
	F.vs.vs_status = 0;
	vq_reset(&F.vq);
	F.vs.vs_legacy = true;
	CHECK(mmio_read(4, 0x12, 2) == 1 && mmio_read(4, 0x18, 2) == 16, "common cfg: num_queues and queue_size");
	mmio_write(4, 0x00, 4, 1);
	CHECK(mmio_read(4, 0x04, 4) == (VIRTIO_TRANSPORT_FEATURES >> 32), "common cfg: device_feature high word");
	mmio_write(4, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
	mmio_write(4, 0x08, 4, 0);
	mmio_write(4, 0x0c, 4, (uint32_t)VIRTIO_RING_F_EVENT_IDX);
	mmio_write(4, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	CHECK(!(mmio_read(4, 0x14, 1) & VIRTIO_S_FEATURES_OK), "FEATURES_OK refused without VERSION_1");
	mmio_write(4, 0x08, 4, 1);
	mmio_write(4, 0x0c, 4, 1 | 0x80);   /* VERSION_1 + a bit never offered */
	mmio_write(4, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	CHECK(!(mmio_read(4, 0x14, 1) & VIRTIO_S_FEATURES_OK), "FEATURES_OK refused with an unoffered feature");
	mmio_write(4, 0x0c, 4, 1);
	mmio_write(4, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	CHECK(mmio_read(4, 0x14, 1) & VIRTIO_S_FEATURES_OK, "FEATURES_OK accepted with VERSION_1");
	mmio_write(4, 0x16, 2, 0);
	mmio_write(4, 0x18, 2, 8);
	mmio_write(4, 0x20, 4, (uint32_t)DESC);
	mmio_write(4, 0x24, 4, 0);
	mmio_write(4, 0x28, 8, AVAIL);
	mmio_write(4, 0x30, 4, (uint32_t)USED);
	mmio_write(4, 0x1c, 2, 1);
	CHECK(mmio_read(4, 0x1c, 2) == 1 && F.vq.vq_qsize == 8 && F.vq.vq_avail_gpa == AVAIL,
	      "queue configured and enabled through common cfg");
	put_desc(DESC, 0, BUF, 16, 0, 0);
	avail_push(0);
	mmio_write(4, VI_NOTIFY_OFF, 2, 0);
	CHECK(nkicks == 0 && (F.vq.vq_flags & VQ_KICKED), "kick before DRIVER_OK is deferred");
	mmio_write(4, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK);
	CHECK(nkicks == 1, "deferred kick runs at DRIVER_OK");
	mmio_write(4, VI_NOTIFY_OFF + 4 * 3, 2, 3);
	CHECK(nkicks == 1, "kick for a queue that does not exist is ignored");
	mmio_write(4, VI_NOTIFY_OFF, 2, 0);
	CHECK(nkicks == 2, "kick through the notify region");
	/* A guest error, then reset through device_status. */
	put_desc(DESC, 0, 0xdead0000000ULL, 16, 0, 0);
	F.vs.vs_isr = 0;
	n = vq_getchain(&F.vq, iov, 64, &ch);
	CHECK(n == -1 && (mmio_read(4, 0x14, 1) & VIRTIO_S_NEEDS_RESET) && mmio_read(4, VI_ISR_OFF, 1) == VIRTIO_ISR_CONFIG,
	      "guest error visible as NEEDS_RESET plus ISR config bit");
	CHECK(mmio_read(4, VI_ISR_OFF, 1) == 0, "ISR read clears it");
	mmio_write(4, 0x14, 1, VIRTIO_S_ACKNOWLEDGE);   /* driver cannot clear NEEDS_RESET */
	CHECK(mmio_read(4, 0x14, 1) & VIRTIO_S_NEEDS_RESET, "NEEDS_RESET survives a status write");
	mmio_write(4, 0x14, 1, 0);
	CHECK(mmio_read(4, 0x14, 1) == 0 && !F.vs.vs_broken && mmio_read(4, 0x1c, 2) == 0 &&
	      mmio_read(4, 0x18, 2) == 16 && F.vs.vs_negotiated == 0, "reset clears status, queues and features");

	/* Legacy interface: PFN layout, 32-bit features, notify register. */
	memset(ram0, 0, RAM0_SIZE);
	mmio_write(0, 18, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
	CHECK(mmio_read(0, 0, 4) == (uint32_t)VIRTIO_TRANSPORT_FEATURES && mmio_read(0, 12, 2) == 16,
	      "legacy: features bits 0..31 and queue size");
	mmio_write(0, 4, 4, (uint32_t)(VIRTIO_RING_F_INDIRECT_DESC | 0x1));
	CHECK(F.vs.vs_negotiated == VIRTIO_RING_F_INDIRECT_DESC, "legacy: guest features masked to offered bits");
	mmio_write(0, 14, 2, 0);
	mmio_write(0, 8, 4, 0x50);   /* ring at 0x50000 */
	uint64_t ldesc = 0x50000, lavail = ldesc + 16 * 16, lused = (lavail + 6 + 2 * 16 + 4095) & ~4095ULL;
	CHECK(F.vq.vq_desc_gpa == ldesc && F.vq.vq_avail_gpa == lavail && F.vq.vq_used_gpa == lused &&
	      mmio_read(0, 8, 4) == 0x50, "legacy: PFN gives the 4096-aligned legacy layout");
	mmio_write(0, 18, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_DRIVER_OK);
	mmio_write(0, 16, 2, 0);
	CHECK(nkicks == 3, "legacy: notify register kicks the queue");
	mmio_write(0, 8, 4, 0xfffff);   /* ring at 4 GiB - 4 KiB: not RAM */
	CHECK(needs_reset(), "legacy: ring PFN outside RAM -> NEEDS_RESET");

	printf("%d passed, %d failed\n", passed, failed);
	pthread_mutex_destroy(&F.vs.vs_mtx);
	free(ram0);
	free(ram1);
	return failed ? 1 : 0;
}

/* BAR accesses as a vCPU would make them (pi_arg is the softc). */
static struct pci_devinst fake_pi;
static uint64_t mmio_read(int bar, uint64_t off, int size)
{
	fake_pi.pi_arg = &F;
	return vi_pci_read(NULL, &fake_pi, bar, off, size);
}
static void mmio_write(int bar, uint64_t off, int size, uint64_t val)
{
	fake_pi.pi_arg = &F;
	vi_pci_write(NULL, &fake_pi, bar, off, size, val);
}
