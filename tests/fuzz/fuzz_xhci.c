/*
 * libFuzzer target for the xHCI controller and its USB tablet
 * (devices/pci_xhci.c, devices/usb_tablet.c): register writes, command
 * and transfer TRBs with any fields, contexts and rings anywhere in guest
 * memory (or outside it), pointer events, config space (MSI), checkpoint
 * round trips and the restore parser on raw bytes.
 *
 *   tests/fuzz/run.sh -t 60 xhci
 *
 * One controller with a tablet built by init_run_all with only the KVM
 * layer stubbed (tests/fuzz/nvme_stubs.c) in slot 30.  Guest RAM: 1 MiB at
 * 0 and 64 KiB at 4 GiB.  Before each input the controller is loaded back
 * from the state saved at start-up and RAM is cleared.
 *
 * Input: a sequence of operations, each an opcode byte then its operands
 * (little-endian; a short input ends the sequence):
 *   0 RAM write     u8 region(bit 0: high RAM) u24 offset u8 len, bytes
 *   1 BAR write     u16 offset, u32 value
 *   2 BAR read      u16 offset
 *   3 bring-up      as Linux: reset, DCBAA, command ring, event ring, run,
 *                   port 5 reset, Enable Slot, Address Device, Configure
 *                   Endpoint (EP 1 IN); rings at fixed places below
 *   4 command       u8 type, u32 dword0, u8 slot, u8 dword3 bits 16-23
 *                   (endpoint), u8 flags (bit 0: BSR/DC)
 *   5 transfer TRB  u8 ring (bit 0: EP 1 IN, else EP 0), u32 d0, u32 d1,
 *                   u32 d2, u16 d3 low bits (type, IOC, CH, IDT, DIR...)
 *   6 doorbell      u8 slot, u8 target
 *   7 pointer       u8 buttons, u16 x, u16 y
 *   8 config write  u8 offset, u8 size, u32 value
 *   9 checkpoint    u8 mode: 0 save+restore, else restore the next
 *                   u16-length bytes
 *  10 events        consume the event ring as a driver does (ERDP, EHB)
 *
 * -DFUZZ_MAKE_SEEDS builds a main() that writes seed inputs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../core/snapshot.h"
#include "../../devices/pci_emul.h"
#include "../../devices/usb_emul.h"
#include "fuzz_input.h"
#include "nvme_stubs.h"

#define RAM0 (1ull << 20)
#define SLOT 30
#define DCBAA 0x1000
#define CMDRING 0x2000
#define ERST 0x3000
#define EVRING 0x4000
#define EVN 64
#define INCTX 0x6000
#define OUTCTX 0x7000
#define EP0RING 0x8000
#define EP1RING 0x9000
#define RINGN 64

static struct pci_devinst *pi;
static uint64_t bar;
static struct snap_buf baseline;

struct ring {
	uint64_t base;
	int idx;
	bool cyc;
};
static struct ring rings[3];   /* command, EP0, EP1 IN */
static uint64_t ev_at;
static bool ev_cyc;

static void wr(uint32_t off, uint32_t v) { nh_mmio_write(bar + off, 4, v); }
static uint32_t rd(uint32_t off) { return (uint32_t)nh_mmio_read(bar + off, 4); }

static void ring_init(struct ring *r, uint64_t base)
{
	memset(nh_ptr(base, RINGN * 16), 0, RINGN * 16);
	uint32_t *l = nh_ptr(base + (RINGN - 1) * 16, 16);
	l[0] = (uint32_t)base;
	l[3] = 6u << 10 | 2u;
	*r = (struct ring){ base, 0, true };
}

static void put(struct ring *r, uint32_t d0, uint32_t d1, uint32_t d2, uint32_t d3)
{
	uint32_t *t = nh_ptr(r->base + (uint64_t)r->idx * 16, 16);
	t[0] = d0;
	t[1] = d1;
	t[2] = d2;
	t[3] = (d3 & ~1u) | (r->cyc ? 1 : 0);
	if (++r->idx == RINGN - 1) {
		uint32_t *l = nh_ptr(r->base + (RINGN - 1) * 16, 16);
		l[3] = (l[3] & ~1u) | (r->cyc ? 1 : 0);
		r->idx = 0;
		r->cyc = !r->cyc;
	}
}

static void events(void)
{
	for (int n = 0; n < 2 * EVN; n++) {
		const uint32_t *e = nh_ptr(ev_at, 16);
		if ((e[3] & 1) != (ev_cyc ? 1u : 0u))
			break;
		ev_at += 16;
		if (ev_at == EVRING + EVN * 16) {
			ev_at = EVRING;
			ev_cyc = !ev_cyc;
		}
	}
	wr(0x2038, (uint32_t)ev_at | 8);
	wr(0x203c, 0);
	wr(0x2020, 3);
}

static void bring_up(void)
{
	wr(0x20, 2);
	wr(0x58, 8);
	memset(nh_ptr(DCBAA, 0x100), 0, 0x100);
	wr(0x50, DCBAA);
	wr(0x54, 0);
	ring_init(&rings[0], CMDRING);
	wr(0x38, CMDRING | 1);
	wr(0x3c, 0);
	memset(nh_ptr(EVRING, EVN * 16), 0, EVN * 16);
	uint32_t *erst = nh_ptr(ERST, 16);
	erst[0] = EVRING;
	erst[1] = 0;
	erst[2] = EVN;
	ev_at = EVRING;
	ev_cyc = true;
	wr(0x2028, 1);
	wr(0x2030, ERST);
	wr(0x2034, 0);
	wr(0x2038, EVRING);
	wr(0x203c, 0);
	wr(0x2020, 2);
	wr(0x20, 5);
	wr(0x420 + 0x10 * 4, 1u << 9 | 0x10);   /* port 5 reset */
	put(&rings[0], 0, 0, 0, 9u << 10);       /* Enable Slot: slot 1 */
	wr(0x3000, 0);
	*(uint64_t *)nh_ptr(DCBAA + 8, 8) = OUTCTX;
	memset(nh_ptr(INCTX, 0x440), 0, 0x440);
	memset(nh_ptr(OUTCTX, 0x400), 0, 0x400);
	uint32_t *icc = nh_ptr(INCTX, 32), *isc = nh_ptr(INCTX + 32, 32), *iep0 = nh_ptr(INCTX + 64, 32);
	icc[1] = 3;
	isc[0] = 1u << 27 | 3u << 20;
	isc[1] = 5u << 16;
	ring_init(&rings[1], EP0RING);
	iep0[1] = 3u << 1 | 4u << 3 | 64u << 16;
	iep0[2] = EP0RING | 1;
	put(&rings[0], INCTX, 0, 0, 11u << 10 | 1u << 24);
	wr(0x3000, 0);
	memset(nh_ptr(INCTX, 0x440), 0, 0x440);
	icc[1] = 1u | 1u << 3;
	isc[0] = 3u << 27 | 3u << 20;
	isc[1] = 5u << 16;
	ring_init(&rings[2], EP1RING);
	uint32_t *iep3 = nh_ptr(INCTX + 32 * 4, 32);
	iep3[1] = 3u << 1 | 7u << 3 | 8u << 16;
	iep3[2] = EP1RING | 1;
	put(&rings[0], INCTX, 0, 0, 12u << 10 | 1u << 24);
	wr(0x3000, 0);
	events();
}

static void setup(void)
{
	const char *kv[] = { "name=fuzz", "pci.0.30.0.device=xhci", "pci.0.30.0.slot.1.device=tablet", NULL };
	nh_ram0_size = RAM0;
	nh_setup(kv);
	if (!(pi = nh_slot(SLOT)))
		abort();
	bar = pi->pi_bar[0].addr;
	nh_cfg_write(SLOT, 0x04, 2, 0x06);
	nh_save_state(pi, &baseline);
}

static void run(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size, false };
	while (!in.eof && in.n > 0) {
		switch (fuzz_take(&in, 1) % 11) {
		case 0:
			nh_fuzz_ram_write(&in);
			break;
		case 1: {
			uint32_t off = (uint32_t)fuzz_take(&in, 2) & 0xfffc, v = (uint32_t)fuzz_take(&in, 4);
			if (!in.eof)
				wr(off, v);
			break;
		}
		case 2: {
			uint32_t off = (uint32_t)fuzz_take(&in, 2);
			if (!in.eof)
				(void)nh_mmio_read(bar + off, 1 << (off % 3));
			break;
		}
		case 3:
			bring_up();
			break;
		case 4: {
			uint32_t type = (uint32_t)fuzz_take(&in, 1) & 0x3f, d0 = (uint32_t)fuzz_take(&in, 4);
			uint32_t slot = (uint32_t)fuzz_take(&in, 1), ep = (uint32_t)fuzz_take(&in, 1), fl = (uint32_t)fuzz_take(&in, 1);
			if (in.eof)
				break;
			put(&rings[0], d0, 0, 0, type << 10 | slot << 24 | (ep & 0x1f) << 16 | (fl & 1) << 9);
			wr(0x3000, 0);
			break;
		}
		case 5: {
			int r = (int)fuzz_take(&in, 1) & 1;
			uint32_t d0 = (uint32_t)fuzz_take(&in, 4), d1 = (uint32_t)fuzz_take(&in, 4), d2 = (uint32_t)fuzz_take(&in, 4);
			uint32_t d3 = (uint32_t)fuzz_take(&in, 2);
			uint32_t d3hi = (uint32_t)fuzz_take(&in, 1);
			if (in.eof)
				break;
			put(&rings[1 + r], d0, d1, d2, d3 | d3hi << 16);
			break;
		}
		case 6: {
			uint32_t slot = (uint32_t)fuzz_take(&in, 1) % 10, target = (uint32_t)fuzz_take(&in, 1);
			if (!in.eof)
				wr(0x3000 + 4 * slot, target);
			break;
		}
		case 7: {
			uint8_t b = (uint8_t)fuzz_take(&in, 1);
			int x = (int)fuzz_take(&in, 2), y = (int)fuzz_take(&in, 2);
			if (!in.eof)
				xhci_pointer_event(b, x, y, 1024, 768);
			break;
		}
		case 8:
			nh_fuzz_cfg_write(&in, SLOT);
			break;
		case 9:
			nh_fuzz_checkpoint(&in, pi);
			break;
		case 10:
			events();
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
	memset(rings, 0, sizeof(rings));
	rings[0].base = CMDRING;
	rings[1].base = EP0RING;
	rings[2].base = EP1RING;
	rings[0].cyc = rings[1].cyc = rings[2].cyc = true;
	ev_at = EVRING;
	ev_cyc = true;
	run(data, size);
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
/* A control transfer on EP0: setup, data stage at BUF (IN), status; doorbell. */
static void s_control(struct fuzz_seed *s, uint8_t type, uint8_t req, uint16_t value, uint16_t len)
{
	seed_u(s, 5, 1); seed_u(s, 0, 1);
	seed_u(s, (uint32_t)type | (uint32_t)req << 8 | (uint32_t)value << 16, 4); seed_u(s, (uint32_t)len << 16, 4);
	seed_u(s, 8, 4); seed_u(s, 2u << 10 | 1u << 6, 2); seed_u(s, len ? 3 : 0, 1);
	if (len) {
		seed_u(s, 5, 1); seed_u(s, 0, 1);
		seed_u(s, 0x10000, 4); seed_u(s, 0, 4); seed_u(s, len, 4); seed_u(s, 3u << 10 | 1u << 2, 2); seed_u(s, 1, 1);
	}
	seed_u(s, 5, 1); seed_u(s, 0, 1);
	seed_u(s, 0, 4); seed_u(s, 0, 4); seed_u(s, 0, 4); seed_u(s, 4u << 10 | 1u << 5, 2); seed_u(s, 0, 1);
	seed_u(s, 6, 1); seed_u(s, 1, 1); seed_u(s, 1, 1);
	seed_u(s, 10, 1);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	struct fuzz_seed s;

	/* Descriptors, SET_CONFIGURATION, an interrupt transfer completed by the pointer. */
	s.n = 0;
	seed_u(&s, 3, 1);
	s_control(&s, 0x80, 6, 0x0100, 18);
	s_control(&s, 0x80, 6, 0x0200, 34);
	s_control(&s, 0x81, 6, 0x2200, 80);
	s_control(&s, 0x80, 6, 0x0302, 64);
	s_control(&s, 0x00, 9, 1, 0);
	s_control(&s, 0x21, 0x0a, 0, 0);
	seed_u(&s, 5, 1); seed_u(&s, 1, 1); seed_u(&s, 0x11000, 4); seed_u(&s, 0, 4); seed_u(&s, 8, 4);
	seed_u(&s, 1u << 10 | 1u << 5 | 1u << 2, 2); seed_u(&s, 0, 1);
	seed_u(&s, 6, 1); seed_u(&s, 1, 1); seed_u(&s, 3, 1);
	seed_u(&s, 7, 1); seed_u(&s, 1, 1); seed_u(&s, 512, 2); seed_u(&s, 384, 2);
	seed_u(&s, 10, 1);
	seed_u(&s, 9, 1); seed_u(&s, 0, 1);
	seed_write(dir, "enumerate_report_ckpt", &s);

	/* STALL, Reset Endpoint, Set TR Dequeue, Stop Endpoint, Evaluate Context, Reset Device, Disable Slot. */
	s.n = 0;
	seed_u(&s, 3, 1);
	s_control(&s, 0x80, 0x33, 0, 8);
	seed_u(&s, 4, 1); seed_u(&s, 14, 1); seed_u(&s, 0, 4); seed_u(&s, 1, 1); seed_u(&s, 1, 1); seed_u(&s, 0, 1);
	seed_u(&s, 4, 1); seed_u(&s, 16, 1); seed_u(&s, 0x8001, 4); seed_u(&s, 1, 1); seed_u(&s, 1, 1); seed_u(&s, 0, 1);
	seed_u(&s, 4, 1); seed_u(&s, 15, 1); seed_u(&s, 0, 4); seed_u(&s, 1, 1); seed_u(&s, 3, 1); seed_u(&s, 0, 1);
	seed_u(&s, 4, 1); seed_u(&s, 13, 1); seed_u(&s, 0x6000, 4); seed_u(&s, 1, 1); seed_u(&s, 0, 1); seed_u(&s, 0, 1);
	seed_u(&s, 4, 1); seed_u(&s, 12, 1); seed_u(&s, 0, 4); seed_u(&s, 1, 1); seed_u(&s, 0, 1); seed_u(&s, 1, 1);
	seed_u(&s, 4, 1); seed_u(&s, 17, 1); seed_u(&s, 0, 4); seed_u(&s, 1, 1); seed_u(&s, 0, 1); seed_u(&s, 0, 1);
	seed_u(&s, 4, 1); seed_u(&s, 10, 1); seed_u(&s, 0, 4); seed_u(&s, 1, 1); seed_u(&s, 0, 1); seed_u(&s, 0, 1);
	seed_u(&s, 10, 1);
	seed_write(dir, "stall_recovery_commands", &s);

	/* Ports: reset, link state, change bits; interrupter registers; MSI. */
	s.n = 0;
	seed_u(&s, 3, 1);
	seed_u(&s, 8, 1); seed_u(&s, 0x50, 1); seed_u(&s, 1, 1); seed_u(&s, 0x0081, 4);
	seed_u(&s, 1, 1); seed_u(&s, 0x460, 2); seed_u(&s, 1u << 16 | 3u << 5 | 1u << 9, 4);
	seed_u(&s, 1, 1); seed_u(&s, 0x460, 2); seed_u(&s, 1u << 16 | 15u << 5 | 1u << 9, 4);
	seed_u(&s, 1, 1); seed_u(&s, 0x460, 2); seed_u(&s, 0x00fe0000, 4);
	seed_u(&s, 1, 1); seed_u(&s, 0x420, 2); seed_u(&s, 1u << 31 | 1u << 9, 4);
	seed_u(&s, 2, 1); seed_u(&s, 0x2000, 2);
	seed_u(&s, 1, 1); seed_u(&s, 0x38, 2); seed_u(&s, 0x2004, 4);
	seed_u(&s, 10, 1);
	seed_write(dir, "ports_registers", &s);
	return 0;
}
#endif
