/*
 * Unit test for the xHCI controller and its USB tablet (devices/pci_xhci.c,
 * devices/usb_tablet.c) with only the KVM layer stubbed (tests/fuzz/
 * nvme_stubs.c): the controller is built by init_run_all from bhyve's
 * "-s 30,xhci,tablet" keys and the test is the guest driver, doing what
 * Linux's xhci_hcd and usbhid do in their order: reset, DCBAA, command
 * ring, a two-segment event ring, MSI; the port's connect change, port
 * reset, Enable Slot, Address Device with BSR then without, descriptors
 * over EP0 (short packets), Configure Endpoint, SET_CONFIGURATION, an
 * interrupt IN transfer that completes when a VNC pointer event arrives;
 * STALL and the halted-endpoint recovery (Reset Endpoint, Set TR Dequeue),
 * Stop Endpoint, Evaluate Context; nonsense (buffers, contexts and rings
 * outside RAM, a ring of Link TRBs, unknown commands) ends in error
 * completions or HSE, never a crash or a hang; a checkpoint of the live
 * controller restored into a reset one, which then goes on; INTx.
 * test-sources: tests/fuzz/nvme_stubs.c devices/pci_xhci.c devices/usb_tablet.c devices/pci_emul.c core/config.c core/snapshot.c core/init.c core/inout.c core/mmio.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/snapshot.h"
#include "../../devices/pci_emul.h"
#include "../../devices/usb_emul.h"
#include "../fuzz/nvme_stubs.h"

#include "check.h"

#define SLOT_NO 30
/* Guest memory (RAM0 is 4 MiB). */
#define DCBAA   0x1000
#define CMDRING 0x2000
#define ERST    0x3000
#define EVSEG0  0x4000
#define EVSEG1  0x5000
#define EVSEGN  16        /* TRBs per event segment */
#define INCTX   0x6000
#define OUTCTX  0x7000
#define EP0RING 0x8000
#define EP1RING 0x9000
#define RINGN   16        /* TRBs per command/EP0 ring, the last a Link */
#define EP1N    128       /* TRBs of the interrupt endpoint's ring */
#define BUF     0x10000
#define OUTSIDE 0x7fff0000ull   /* not RAM */

static uint64_t bar;
static uint32_t rd(uint64_t off) { return (uint32_t)nh_mmio_read(bar + off, 4); }
static void wr(uint64_t off, uint32_t v) { nh_mmio_write(bar + off, 4, v); }
static uint32_t op, rt, db;

struct ring {
	uint64_t base;
	int idx, n;
	bool cyc;
};
static struct ring cmdr, ep0r, ep1r;
static uint64_t ev_at = EVSEG0;
static int ev_left = EVSEGN, ev_seg;
static bool ev_cyc = true;

static void ring_init(struct ring *r, uint64_t base)
{
	int n = base == EP1RING ? EP1N : RINGN;
	memset(nh_ptr(base, (size_t)n * 16), 0, (size_t)n * 16);
	uint32_t *l = nh_ptr(base + (uint64_t)(n - 1) * 16, 16);   /* Link back, toggle cycle */
	l[0] = (uint32_t)base;
	l[1] = 0;
	l[3] = 6u << 10 | 2u;
	*r = (struct ring){ base, 0, n, true };
}

/* Put a TRB on a ring (the cycle bit last), following the Link. */
static uint64_t put(struct ring *r, uint32_t d0, uint32_t d1, uint32_t d2, uint32_t d3)
{
	uint32_t *t = nh_ptr(r->base + (uint64_t)r->idx * 16, 16);
	uint64_t at = r->base + (uint64_t)r->idx * 16;
	t[0] = d0;
	t[1] = d1;
	t[2] = d2;
	t[3] = (d3 & ~1u) | (r->cyc ? 1 : 0);
	if (++r->idx == r->n - 1) {
		uint32_t *l = nh_ptr(r->base + (uint64_t)(r->n - 1) * 16, 16);
		l[3] = (l[3] & ~1u) | (r->cyc ? 1 : 0);
		r->idx = 0;
		r->cyc = !r->cyc;
	}
	return at;
}

/* The next event, if any (the driver's consumer side); ERDP written back with EHB. */
static bool event(uint32_t ev[4])
{
	const uint32_t *e = nh_ptr(ev_at, 16);
	if ((e[3] & 1) != (ev_cyc ? 1u : 0u))
		return false;
	memcpy(ev, e, 16);
	if (--ev_left == 0) {
		ev_seg = !ev_seg;
		if (ev_seg == 0)
			ev_cyc = !ev_cyc;
		ev_at = ev_seg ? EVSEG1 : EVSEG0;
		ev_left = EVSEGN;
	} else {
		ev_at += 16;
	}
	wr(rt + 0x38, (uint32_t)ev_at | 8);
	wr(rt + 0x3c, 0);
	return true;
}

static int ev_type(const uint32_t ev[4]) { return (int)(ev[3] >> 10) & 0x3f; }
static int ev_cc(const uint32_t ev[4]) { return (int)(ev[2] >> 24); }
static uint64_t ev_ptr(const uint32_t ev[4]) { return ev[0] | (uint64_t)ev[1] << 32; }

/* Run a command; its completion code (0: no completion event), slot ID in *slot. */
static int cmd(uint32_t d0, uint32_t d1, uint32_t d3, int *slot)
{
	uint64_t at = put(&cmdr, d0, d1, 0, d3);
	wr(db, 0);
	uint32_t ev[4];
	while (event(ev))
		if (ev_type(ev) == 33 && ev_ptr(ev) == at) {
			if (slot)
				*slot = (int)(ev[3] >> 24);
			return ev_cc(ev);
		}
	return 0;
}

static uint32_t *out_ctx(int dci) { return nh_ptr(OUTCTX + 32ull * (unsigned)dci, 32); }

/* A control transfer on EP0 of slot 1: setup, optional IN/OUT data at BUF, status. */
struct ctl {
	int cc;           /* completion code of the data stage (or status stage if none) */
	uint32_t residual;
	int stall_cc;     /* the first error event's code, 0 none */
	int events;       /* transfer events seen */
};
static struct ctl control(uint8_t type, uint8_t req, uint16_t value, uint16_t index, uint16_t len, uint64_t buf)
{
	struct ctl r = { 0, 0, 0, 0 };
	bool in = type & 0x80;
	uint32_t trt = len ? (in ? 3u : 2u) : 0u;
	put(&ep0r, (uint32_t)type | (uint32_t)req << 8 | (uint32_t)value << 16, (uint32_t)index | (uint32_t)len << 16, 8,
	    2u << 10 | 1u << 6 | trt << 16);
	uint64_t data_at = 0;
	if (len)
		data_at = put(&ep0r, (uint32_t)buf, (uint32_t)(buf >> 32), len, 3u << 10 | (in ? 1u << 16 | 1u << 2 : 0));
	uint64_t st_at = put(&ep0r, 0, 0, 0, 4u << 10 | 1u << 5 | (in && len ? 0 : 1u << 16));
	wr(db + 4, 1);
	uint32_t ev[4];
	while (event(ev)) {
		if (ev_type(ev) != 32)
			continue;
		r.events++;
		if (ev_cc(ev) != 1 && ev_cc(ev) != 13 && !r.stall_cc)
			r.stall_cc = ev_cc(ev);
		if (data_at && ev_ptr(ev) == data_at) {
			r.cc = ev_cc(ev);
			r.residual = ev[2] & 0xffffff;
		}
		if (ev_ptr(ev) == st_at && !r.cc)
			r.cc = ev_cc(ev);
	}
	if (len && r.events && !r.cc && !r.stall_cc)
		r.cc = 1;   /* a full data stage has no event of its own (no IOC) */
	return r;
}

static int msi_since(unsigned *mark)
{
	unsigned n = nh_msi_count(), d = n - *mark;
	*mark = n;
	return (int)d;
}

static void hc_start(void)
{
	wr(op + 0x00, 2);   /* HCRST */
	CHECK((rd(op + 0x04) & 0x801) == 1, "HCRST done at once: halted, controller ready (USBSTS 0x%x)", rd(op + 0x04));
	wr(op + 0x38, 8);
	memset(nh_ptr(DCBAA, 0x100), 0, 0x100);
	wr(op + 0x30, DCBAA);
	wr(op + 0x34, 0);
	ring_init(&cmdr, CMDRING);
	wr(op + 0x18, CMDRING | 1);
	wr(op + 0x1c, 0);
	memset(nh_ptr(EVSEG0, 0x2000), 0, 0x2000);
	uint32_t *erst = nh_ptr(ERST, 32);
	erst[0] = EVSEG0; erst[1] = 0; erst[2] = EVSEGN; erst[3] = 0;
	erst[4] = EVSEG1; erst[5] = 0; erst[6] = EVSEGN; erst[7] = 0;
	ev_at = EVSEG0;
	ev_left = EVSEGN;
	ev_seg = 0;
	ev_cyc = true;
	wr(rt + 0x28, 2);
	wr(rt + 0x30, ERST);
	wr(rt + 0x34, 0);
	wr(rt + 0x38, EVSEG0);
	wr(rt + 0x3c, 0);
	wr(rt + 0x20, 2);    /* IMAN.IE */
	wr(op + 0x00, 5);    /* RS | INTE */
}

/* Port 5 reset, slot enabled and addressed, EP0 ring ready; the slot ID. */
static int attach(void)
{
	uint32_t ev[4];
	while (event(ev))
		;
	wr(op + 0x400 + 0x10 * 4, (1u << 9) | 0x10);   /* PR */
	int slot = 0;
	cmd(0, 0, 9u << 10, &slot);
	memset(nh_ptr(INCTX, 0x440), 0, 0x440);
	memset(nh_ptr(OUTCTX, 0x400), 0, 0x400);
	*(uint64_t *)nh_ptr(DCBAA + 8ull * (unsigned)slot, 8) = OUTCTX;
	uint32_t *icc = nh_ptr(INCTX, 32), *isc = nh_ptr(INCTX + 32, 32), *iep0 = nh_ptr(INCTX + 64, 32);
	icc[1] = 3;
	isc[0] = 1u << 27 | 3u << 20;   /* one context entry, high speed */
	isc[1] = 5u << 16;              /* root hub port 5 */
	ring_init(&ep0r, EP0RING);
	iep0[1] = 3u << 1 | 4u << 3 | 64u << 16;   /* CErr 3, control, 64 bytes */
	iep0[2] = EP0RING | 1;
	iep0[4] = 8;
	cmd(INCTX, 0, 11u << 10 | (uint32_t)slot << 24, NULL);
	return slot;
}

static void t_caps(void)
{
	CHECK(nh_cfg_read(SLOT_NO, 0x08, 4) >> 8 == 0x0c0330, "class: serial bus, USB, xHCI");
	CHECK(nh_cfg_read(SLOT_NO, 0x00, 4) == 0x1e318086, "ids 8086:1e31 (bhyve's)");
	uint32_t c0 = rd(0);
	op = c0 & 0xff;
	CHECK(op == 0x20 && c0 >> 16 == 0x100, "CAPLENGTH 0x20, HCIVERSION 1.0 (0x%08x)", c0);
	uint32_t hcs1 = rd(4), hcc1 = rd(0x10);
	CHECK((hcs1 & 0xff) == 8 && (hcs1 >> 24) == 8 && ((hcs1 >> 8) & 0x7ff) == 1, "8 slots, 1 interrupter, 8 ports");
	CHECK((hcc1 & 1) && !(hcc1 & 4), "64-bit addressing, 32-byte contexts");
	db = rd(0x14);
	rt = rd(0x18);
	int usb3 = 0, usb2 = 0, first3 = 0, first2 = 0;
	for (uint32_t x = (hcc1 >> 16) * 4, n = 0; x && n < 16; n++) {
		uint32_t h = rd(x);
		if ((h & 0xff) == 2 && rd(x + 4) == 0x20425355) {
			uint32_t p = rd(x + 8);
			if (h >> 24 == 3) { usb3 = (int)(p >> 8 & 0xff); first3 = (int)(p & 0xff); }
			if (h >> 24 == 2) { usb2 = (int)(p >> 8 & 0xff); first2 = (int)(p & 0xff); }
		}
		x = (h >> 8 & 0xff) ? x + (h >> 8 & 0xff) * 4 : 0;
	}
	CHECK(usb3 == 4 && first3 == 1 && usb2 == 4 && first2 == 5, "supported protocols: USB 3 ports 1-4, USB 2 ports 5-8");
}

static void t_enumerate(void)
{
	unsigned mark = nh_msi_count();
	hc_start();
	CHECK(!(rd(op + 0x04) & 1), "running");
	uint32_t p5 = rd(op + 0x400 + 0x10 * 4), p1 = rd(op + 0x400);
	CHECK((p5 & 1) && (p5 & (1u << 17)) && (p5 & (1u << 9)) && ((p5 >> 10) & 0xf) == 3 && !(p5 & 2),
	      "port 5: tablet connected (CCS, CSC, PP), high speed, not enabled (0x%08x)", p5);
	CHECK(!(p1 & 1) && (p1 & (1u << 9)), "port 1: empty, powered");
	uint32_t ev[4];
	bool got = event(ev) && ev_type(ev) == 34 && ev[0] >> 24 == 5;
	CHECK(got && msi_since(&mark) >= 1 && (rd(op + 0x04) & 8), "port status change event for port 5, MSI, EINT");
	wr(op + 0x04, 8);
	wr(op + 0x400 + 0x10 * 4, (1u << 17) | (1u << 9));   /* clear CSC */
	wr(op + 0x400 + 0x10 * 4, (1u << 9) | 0x10);          /* PR */
	p5 = rd(op + 0x400 + 0x10 * 4);
	CHECK((p5 & 2) && (p5 & (1u << 21)) && !(p5 & 0x10) && ((p5 >> 5) & 0xf) == 0,
	      "port reset: enabled, PRC, U0 (0x%08x)", p5);
	CHECK(event(ev) && ev_type(ev) == 34, "port status change event after the reset");
	wr(op + 0x400 + 0x10 * 4, (1u << 21) | (1u << 9));

	int slot = 0;
	CHECK(cmd(0, 0, 9u << 10, &slot) == 1 && slot == 1, "Enable Slot: slot 1");
	*(uint64_t *)nh_ptr(DCBAA + 8, 8) = OUTCTX;
	memset(nh_ptr(INCTX, 0x440), 0, 0x440);
	memset(nh_ptr(OUTCTX, 0x400), 0, 0x400);
	uint32_t *icc = nh_ptr(INCTX, 32), *isc = nh_ptr(INCTX + 32, 32), *iep0 = nh_ptr(INCTX + 64, 32);
	icc[1] = 3;
	isc[0] = 1u << 27 | 3u << 20;
	isc[1] = 5u << 16;
	ring_init(&ep0r, EP0RING);
	iep0[1] = 3u << 1 | 4u << 3 | 64u << 16;
	iep0[2] = EP0RING | 1;
	CHECK(cmd(INCTX, 0, 11u << 10 | 1u << 9 | 1u << 24, NULL) == 1 && out_ctx(0)[3] >> 27 == 1 &&
	      (out_ctx(1)[0] & 7) == 1, "Address Device with BSR: slot Default, EP0 running");
	struct ctl r = control(0x80, 6, 0x0100, 0, 64, BUF);
	const uint8_t *b = nh_ptr(BUF, 64);
	CHECK(r.cc == 13 && r.residual == 64 - 18 && b[0] == 18 && b[1] == 1 && b[7] == 64,
	      "GET_DESCRIPTOR(device, 64) at the default address: 18 bytes, short packet (cc %d, residual %u)", r.cc,
	      r.residual);
	CHECK(cmd(INCTX, 0, 11u << 10 | 1u << 24, NULL) == 1 && out_ctx(0)[3] >> 27 == 2 && (out_ctx(0)[3] & 0xff) == 1,
	      "Address Device: slot Addressed, USB address 1");
	CHECK(cmd(INCTX, 0, 11u << 10 | 1u << 24, NULL) == 19, "a second Address Device: context state error");
	r = control(0x80, 6, 0x0200, 0, 9, BUF);
	uint16_t total = (uint16_t)(b[2] | b[3] << 8);
	CHECK(r.cc == 1 && b[1] == 2 && total == 34, "GET_DESCRIPTOR(config, 9): total length 34");
	r = control(0x80, 6, 0x0200, 0, total, BUF);
	uint16_t rlen = (uint16_t)(b[25] | b[26] << 8);
	CHECK(r.cc == 1 && b[9 + 5] == 3 && b[18 + 1] == 0x21 && b[27 + 2] == 0x81 && (b[27 + 3] & 3) == 3,
	      "configuration: HID interface, HID descriptor, interrupt IN endpoint 0x81");
	r = control(0x81, 6, 0x2200, 0, rlen, BUF);
	CHECK(r.cc == 1 && b[0] == 0x05 && b[1] == 0x01 && b[rlen - 1] == 0xc0, "report descriptor (%u bytes)", rlen);
	r = control(0x80, 6, 0x0302, 0x0409, 255, BUF);
	CHECK(r.cc == 13 && b[1] == 3 && b[0] == 2 + 2 * 10 && b[2] == 'H' && b[4] == 'I', "string 2: \"HID Tablet\"");

	/* Configure Endpoint: EP 1 IN (DCI 3), interrupt. */
	memset(nh_ptr(INCTX, 0x440), 0, 0x440);
	icc[1] = 1u | 1u << 3;
	isc[0] = 3u << 27 | 3u << 20;
	isc[1] = 5u << 16;
	ring_init(&ep1r, EP1RING);
	uint32_t *iep3 = nh_ptr(INCTX + 32 * 4, 32);
	iep3[0] = 3u << 16;
	iep3[1] = 3u << 1 | 7u << 3 | 8u << 16;
	iep3[2] = EP1RING | 1;
	CHECK(cmd(INCTX, 0, 12u << 10 | 1u << 24, NULL) == 1 && out_ctx(0)[3] >> 27 == 3 && (out_ctx(3)[0] & 7) == 1 &&
	      out_ctx(0)[0] >> 27 == 3, "Configure Endpoint: slot Configured, EP 1 IN running, 3 context entries");
	CHECK(control(0x00, 9, 1, 0, 0, 0).cc == 1, "SET_CONFIGURATION 1");
	CHECK(control(0x21, 0x0a, 0, 0, 0, 0).cc == 1, "HID SET_IDLE 0");

	/* An interrupt IN transfer waits for the pointer. */
	uint64_t at = put(&ep1r, BUF + 0x100, 0, 8, 1u << 10 | 1u << 2 | 1u << 5);
	wr(db + 4, 3);
	CHECK(!event(ev), "interrupt IN: nothing to report, no event (NAK)");
	mark = nh_msi_count();
	CHECK(xhci_pointer_event(1, 400, 300, 800, 600), "pointer event taken by the configured tablet");
	const uint8_t *rep = nh_ptr(BUF + 0x100, 8);
	uint16_t x = (uint16_t)(rep[1] | rep[2] << 8), y = (uint16_t)(rep[3] | rep[4] << 8);
	CHECK(event(ev) && ev_type(ev) == 32 && ev_ptr(ev) == at && ev_cc(ev) == 13 && (ev[2] & 0xffffff) == 2 &&
	      ((ev[3] >> 16) & 0x1f) == 3 && msi_since(&mark) == 1,
	      "the report completes the transfer: short packet, 6 of 8 bytes, EP DCI 3, MSI");
	CHECK(rep[0] == 1 && x == 400 * 32767 / 799 && y == 300 * 32767 / 599 && rep[5] == 0,
	      "report: left button, x %u, y %u scaled to 0..32767", x, y);
	CHECK(xhci_pointer_event(4 | 8, 799, 599, 800, 600), "right button and wheel up at the corner");
	at = put(&ep1r, BUF + 0x100, 0, 8, 1u << 10 | 1u << 2 | 1u << 5);
	wr(db + 4, 3);
	x = (uint16_t)(rep[1] | rep[2] << 8);
	CHECK(event(ev) && ev_ptr(ev) == at && rep[0] == 2 && x == 32767 && rep[5] == 1,
	      "a change made before the transfer was queued goes out when it is (buttons 0x%x, x %u, wheel %d)", rep[0],
	      x, (int8_t)rep[5]);
}

static void t_errors(void)
{
	uint32_t ev[4];
	/* STALL, then the recovery Linux does. */
	struct ctl r = control(0x80, 0x33, 0, 0, 8, BUF);
	CHECK(r.stall_cc == 6 && (out_ctx(1)[0] & 7) == 2, "unknown request: STALL, EP0 halted");
	CHECK(control(0x80, 0, 0, 0, 2, BUF).events == 0, "a halted endpoint does nothing on its doorbell");
	ring_init(&ep0r, EP0RING);
	CHECK(cmd(0, 0, 14u << 10 | 1u << 16 | 1u << 24, NULL) == 1 && (out_ctx(1)[0] & 7) == 3,
	      "Reset Endpoint: stopped");
	ring_init(&ep0r, EP0RING);
	CHECK(cmd(EP0RING | 1, 0, 16u << 10 | 1u << 16 | 1u << 24, NULL) == 1 && (out_ctx(1)[2] & ~0xfu) == EP0RING,
	      "Set TR Dequeue Pointer");
	CHECK(cmd(0, 0, 14u << 10 | 1u << 16 | 1u << 24, NULL) == 19, "Reset Endpoint on a stopped endpoint: context state error");
	r = control(0x80, 0, 0, 0, 2, BUF);
	CHECK(r.cc == 1 && (out_ctx(1)[0] & 7) == 1, "GET_STATUS after the recovery: the doorbell restarted EP0");
	/* Data outside RAM. */
	r = control(0x80, 6, 0x0100, 0, 18, OUTSIDE);
	CHECK(r.stall_cc == 2 && (out_ctx(1)[0] & 7) == 2, "data stage buffer outside RAM: data buffer error, halted");
	cmd(0, 0, 14u << 10 | 1u << 16 | 1u << 24, NULL);
	ring_init(&ep0r, EP0RING);
	cmd(EP0RING | 1, 0, 16u << 10 | 1u << 16 | 1u << 24, NULL);
	/* Commands with nonsense. */
	CHECK(cmd((uint32_t)OUTSIDE, 0, 13u << 10 | 1u << 24, NULL) == 17, "Evaluate Context from outside RAM: parameter error");
	CHECK(cmd(0, 0, 12u << 10 | 7u << 24, NULL) == 11, "Configure Endpoint on a disabled slot: slot not enabled");
	CHECK(cmd(0, 0, 63u << 10, NULL) == 5, "unknown command type: TRB error");
	CHECK(cmd(0, 0, 15u << 10 | 9u << 16 | 1u << 24, NULL) == 12, "Stop Endpoint of a disabled endpoint");
	/* Stop the interrupt endpoint with a transfer queued: its dequeue pointer is in the context. */
	uint64_t at = put(&ep1r, BUF + 0x100, 0, 8, 1u << 10 | 1u << 2 | 1u << 5);
	wr(db + 4, 3);
	CHECK(cmd(0, 0, 15u << 10 | 3u << 16 | 1u << 24, NULL) == 1 && (out_ctx(3)[0] & 7) == 3 &&
	      (out_ctx(3)[2] & ~0xfu) == at, "Stop Endpoint: stopped, dequeue pointer at the pending transfer");
	xhci_pointer_event(0, 10, 10, 800, 600);
	CHECK(!event(ev), "a stopped endpoint takes no report");
	wr(db + 4, 3);   /* the doorbell restarts it */
	CHECK(event(ev) && ev_ptr(ev) == at && ev_cc(ev) == 13, "the doorbell restarts it; the report goes out");
	/* A TD longer than the controller takes, a transfer ring of Link TRBs. */
	for (int i = 0; i < 70; i++)
		put(&ep1r, BUF + 0x100, 0, 1, 1u << 10 | 1u << 4);
	xhci_pointer_event(1, 10, 10, 800, 600);
	wr(db + 4, 3);
	CHECK(event(ev) && ev_cc(ev) == 5 && (out_ctx(3)[0] & 7) == 2, "a TD of 70 chained TRBs: TRB error, halted");
}

static void t_checkpoint(struct pci_devinst *pi)
{
	struct snap_buf sb;
	sb_init(&sb);
	char err[256] = "";
	int rc = pi->pi_d->pe_snapshot(pi, &sb, err, sizeof(err));
	CHECK(rc == 0 && sb.len > 100, "snapshot of the live controller (%zu bytes)", sb.len);
	uint64_t saved_ev = ev_at;
	int saved_left = ev_left, saved_seg = ev_seg;
	bool saved_cyc = ev_cyc;
	wr(op + 0x00, 2);   /* everything lost */
	CHECK((out_ctx(0)[3] >> 27) == 3, "(guest memory keeps the contexts)");
	struct snap_rd rd_;
	sr_init(&rd_, sb.data, sb.len);
	rc = pi->pi_d->pe_restore(pi, &rd_, 1, err, sizeof(err));
	CHECK(rc == 0, "restore into the reset controller%s%s", rc ? ": " : "", err);
	ev_at = saved_ev;
	ev_left = saved_left;
	ev_seg = saved_seg;
	ev_cyc = saved_cyc;
	CHECK(!(rd(op + 0x04) & 1) && (rd(op + 0x400 + 0x10 * 4) & 3) == 3, "running again, port 5 enabled");
	/* EP1 is halted from t_errors: recover, queue, report. */
	CHECK(cmd(0, 0, 14u << 10 | 3u << 16 | 1u << 24, NULL) == 1, "commands go on after the restore");
	ring_init(&ep1r, EP1RING);
	cmd(EP1RING | 1, 0, 16u << 10 | 3u << 16 | 1u << 24, NULL);
	/* The report left pending before the checkpoint merges with this event. */
	xhci_pointer_event(2, 0, 0, 800, 600);
	uint64_t at = put(&ep1r, BUF + 0x200, 0, 8, 1u << 10 | 1u << 2 | 1u << 5);
	wr(db + 4, 3);
	uint32_t ev[4];
	const uint8_t *rep = nh_ptr(BUF + 0x200, 8);
	CHECK(event(ev) && ev_ptr(ev) == at && rep[0] == 4 && rep[1] == 0 && rep[2] == 0,
	      "interrupt transfers go on after the restore (middle button at 0,0)");
	/* A client that spins the wheel 5000 steps while the guest reads nothing: at most 1024 are kept. */
	for (int i = 0; i < 5000; i++)
		xhci_pointer_event(8, 0, 0, 800, 600);
	int wheel = 0, reports = 0;
	for (; reports < 20; reports++) {
		at = put(&ep1r, BUF + 0x200, 0, 8, 1u << 10 | 1u << 2 | 1u << 5);
		wr(db + 4, 3);
		if (!event(ev) || ev_ptr(ev) != at)
			break;
		wheel += (int8_t)rep[5];
	}
	CHECK(wheel == 1024 && reports == 9, "wheel steps kept: %d in %d reports (1024 at most, 127 a report)", wheel,
	      reports);
	xhci_pointer_event(0, 0, 0, 800, 600);   /* (the button up; its report waits for the next transfer) */
	/* A truncated or altered state is refused. */
	sr_init(&rd_, sb.data, sb.len / 2);
	CHECK(pi->pi_d->pe_restore(pi, &rd_, 1, err, sizeof(err)) != 0, "a truncated state is refused: %s", err);
	sr_init(&rd_, sb.data, sb.len);
	CHECK(pi->pi_d->pe_restore(pi, &rd_, 2, err, sizeof(err)) != 0, "an unknown state version is refused: %s", err);
	CHECK(cmd(0, 0, 23u << 10, NULL) == 1, "a refused state changed nothing: commands go on");
	sb_free(&sb);
}

static void t_hostile_rings(struct pci_devinst *pi)
{
	/* INTx when MSI is off. */
	int cap = 0;
	for (int p = nh_cfg_read(SLOT_NO, 0x34, 1); p; p = nh_cfg_read(SLOT_NO, p + 1, 1))
		if (nh_cfg_read(SLOT_NO, p, 1) == 0x05)
			cap = p;
	nh_cfg_write(SLOT_NO, cap + 2, 2, 0);
	uint32_t ev[4];
	while (event(ev))
		;
	wr(rt + 0x20, 3);
	CHECK(cmd(0, 0, 23u << 10, NULL) == 1 && nh_irq_level(pi->pi_lintr_gsi) == 1, "No Op; INTx asserted without MSI");
	wr(rt + 0x20, 3);   /* IP written 1: cleared */
	CHECK(nh_irq_level(pi->pi_lintr_gsi) == 0, "IMAN.IP cleared: INTx deasserted");
	/* A command ring that is one Link to itself. */
	uint32_t *t = nh_ptr(cmdr.base + (uint64_t)cmdr.idx * 16, 16);
	t[0] = (uint32_t)(cmdr.base + (uint64_t)cmdr.idx * 16);
	t[1] = 0;
	t[3] = 6u << 10 | (cmdr.cyc ? 1 : 0);
	wr(db, 0);
	CHECK((rd(op + 0x04) & 4) && !(rd(op + 0x18) & 8), "a command ring of endless Links: HSE, ring stopped");
	/* An event ring segment table outside RAM. */
	hc_start();
	wr(rt + 0x30, (uint32_t)OUTSIDE);
	int slot;
	CHECK(cmd(0, 0, 9u << 10, &slot) == 0 && (rd(op + 0x04) & 4), "event ring outside RAM: HSE, no event written");
	/* Everything again from the start works: the tablet enumerates after a reset. */
	hc_start();
	slot = attach();
	CHECK(slot == 1 && out_ctx(0)[3] >> 27 == 2, "after HCRST the tablet is addressed again");
}

/*
 * Rings a guest made to never end (valid TRBs, a Link back without
 * toggling the cycle): a doorbell does a bounded amount of work and
 * returns (alarm() in main fails the test if it does not).
 */
static void t_endless_rings(void)
{
	uint32_t ev[4];
	while (event(ev))
		;
	/* An interrupt OUT endpoint (DCI 2) whose ring is one Normal TRB and a Link back to it. */
	uint32_t *t = nh_ptr(0xb000, 32);
	t[0] = BUF; t[1] = 0; t[2] = 1; t[3] = 1u << 10 | 1;
	t[4] = 0xb000; t[5] = 0; t[6] = 0; t[7] = 6u << 10 | 1;   /* Link, no toggle */
	memset(nh_ptr(INCTX, 0x440), 0, 0x440);
	uint32_t *icc = nh_ptr(INCTX, 32), *isc = nh_ptr(INCTX + 32, 32), *iep2 = nh_ptr(INCTX + 32 * 3, 32);
	icc[1] = 1u | 1u << 2;
	isc[0] = 2u << 27 | 3u << 20;
	isc[1] = 5u << 16;
	iep2[1] = 3u << 1 | 3u << 3 | 8u << 16;   /* interrupt OUT, 8 bytes */
	iep2[2] = 0xb000 | 1;
	CHECK(cmd(INCTX, 0, 12u << 10 | 1u << 24, NULL) == 1 && (out_ctx(2)[0] & 7) == 1, "an OUT endpoint configured");
	wr(db + 4, 2);
	bool trb_error = false;
	while (event(ev))
		trb_error |= ev_type(ev) == 32 && ev_cc(ev) == 5 && ((ev[3] >> 16) & 0x1f) == 2;
	CHECK(trb_error && (out_ctx(2)[0] & 7) == 2, "an OUT ring of endless TDs: the doorbell returns, TRB error, halted");
	/* A command ring that loops over a No Op forever. */
	uint64_t at = cmdr.base + (uint64_t)cmdr.idx * 16;
	if (cmdr.idx + 2 < RINGN - 1) {
		uint32_t *c = nh_ptr(at, 32);
		uint32_t cyc = cmdr.cyc ? 1 : 0;
		c[0] = c[1] = c[2] = 0; c[3] = 23u << 10 | cyc;
		c[4] = (uint32_t)at; c[5] = 0; c[6] = 0; c[7] = 6u << 10 | cyc;
		wr(db, 0);
		CHECK((rd(op + 0x04) & 4) && !(rd(op + 0x18) & 8), "a command ring of endless No Ops: HSE, ring stopped");
	}
}

int main(void)
{
	alarm(120);   /* a doorbell that never returns fails the test instead of hanging it */
	const char *kv[] = { "name=xhcitest", "pci.0.30.0.device=xhci", "pci.0.30.0.slot.1.device=tablet", NULL };
	nh_setup(kv);
	struct pci_devinst *pi = nh_slot(SLOT_NO);
	if (!pi) {
		printf("FAIL - no xHCI in slot 30\n");
		return 1;
	}
	bar = pi->pi_bar[0].addr;
	CHECK(bar != 0 && pi->pi_bar[0].size == 0x10000, "BAR 0: 64 KiB at 0x%llx", (unsigned long long)bar);
	nh_cfg_write(SLOT_NO, 0x04, 2, 0x06);   /* memory, bus master */
	int cap = 0;
	for (int p = nh_cfg_read(SLOT_NO, 0x34, 1); p; p = nh_cfg_read(SLOT_NO, p + 1, 1))
		if (nh_cfg_read(SLOT_NO, p, 1) == 0x05)
			cap = p;
	CHECK(cap != 0, "MSI capability");
	nh_cfg_write(SLOT_NO, cap + 4, 4, 0xfee00000);
	nh_cfg_write(SLOT_NO, cap + 8, 4, 0);
	nh_cfg_write(SLOT_NO, cap + 12, 2, 0x41);
	nh_cfg_write(SLOT_NO, cap + 2, 2, 1);
	t_caps();
	t_enumerate();
	t_errors();
	t_checkpoint(pi);
	t_hostile_rings(pi);
	t_endless_rings();
	return check_summary();
}
