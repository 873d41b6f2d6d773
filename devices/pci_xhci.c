/*
 * An xHCI USB host controller (xHCI 1.0, as bhyve's pci_xhci.c):
 *   -s 30,xhci,tablet        (bhyve_config(5): pci.0.30.0.slot.1.device=tablet)
 * PCI 8086:1e31 (bhyve's ids), class 0c0330, one 64 KiB memory BAR, MSI
 * or INTx.  Eight root hub ports: 1-4 USB 3, 5-8 USB 2; the devices named
 * by slot.N.device are plugged in at start (a USB 2 device in the next
 * free USB 2 port).  Eight device slots, one interrupter, 32-byte
 * contexts, no scratchpad, no streams.
 *
 * Implemented: capability, operational, port, runtime and doorbell
 * registers; the command ring (Enable/Disable Slot, Address Device with
 * and without BSR, Configure Endpoint (and deconfigure), Evaluate Context,
 * Reset/Stop Endpoint, Set TR Dequeue Pointer, Reset Device, No Op; an
 * abort or stop of the ring through CRCR); transfer rings of control and
 * interrupt/bulk endpoints (Setup/Data/Status, Normal chains, Event Data,
 * Link TRBs; short packets with ISP; a STALL halts the endpoint as on
 * hardware); the event ring over a segment table, with EHB and IMAN
 * interrupt gating; port reset, link state writes and change bits with
 * Port Status Change events.  Isochronous transfers, streams, LPM and
 * the debug capability are not.
 *
 * Every address the guest gives (rings, contexts, data buffers, segment
 * table) goes through vm_copy_*_guest, which fails outside RAM: a bad
 * buffer ends its transfer with a TRB error, a bad command with a
 * Parameter error, a bad event ring sets HSE.  A ring made of Link TRBs
 * alone stops after a bounded walk.  Everything runs on the vCPU thread
 * that rang the doorbell, or on the VNC thread delivering a pointer
 * event, under the controller's lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/log.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "pci_emul.h"
#include "usb_emul.h"

#define XHCI_BAR_SIZE   0x10000
#define CAP_LEN         0x20
#define OP              CAP_LEN          /* operational registers */
#define PORTS_OFF       (OP + 0x400)
#define RT_OFF          0x2000           /* runtime registers */
#define DB_OFF          0x3000           /* doorbells */
#define XECP_OFF        0x4000           /* extended capabilities */
#define NPORTS          8
#define USB3_FIRST      1
#define USB2_FIRST      5
#define MAX_SLOTS       8
#define ERST_MAX_LOG2   4
#define MAX_TD_TRBS     64               /* TRBs in one TD we accept */
#define MAX_RING_STEPS  1024             /* TRBs (links included) looked at per doorbell, all TDs together */
#define XFER_MAX        65536            /* bytes of one TD we move (a control transfer's wLength at most) */

/* USBCMD, USBSTS */
#define CMD_RS      (1u << 0)
#define CMD_HCRST   (1u << 1)
#define CMD_INTE    (1u << 2)
#define CMD_MASK    0x00003f0fu
#define STS_HCH     (1u << 0)
#define STS_HSE     (1u << 2)
#define STS_EINT    (1u << 3)
#define STS_PCD     (1u << 4)
#define STS_SRE     (1u << 10)
#define STS_RW1C    (STS_HSE | STS_EINT | STS_PCD | STS_SRE)
/* CRCR */
#define CRCR_RCS    (1u << 0)
#define CRCR_CS     (1u << 1)
#define CRCR_CA     (1u << 2)
#define CRCR_CRR    (1u << 3)
/* PORTSC */
#define PS_CCS      (1u << 0)
#define PS_PED      (1u << 1)
#define PS_PR       (1u << 4)
#define PS_PLS_SHIFT 5
#define PS_PLS      (0xfu << PS_PLS_SHIFT)
#define PS_PP       (1u << 9)
#define PS_SPEED_SHIFT 10
#define PS_PIC      (3u << 14)
#define PS_LWS      (1u << 16)
#define PS_CSC      (1u << 17)
#define PS_PEC      (1u << 18)
#define PS_WRC      (1u << 19)
#define PS_PRC      (1u << 21)
#define PS_PLC      (1u << 22)
#define PS_CHANGE   (0x7fu << 17)        /* CSC..CEC, write 1 to clear */
#define PS_WAKE     (7u << 25)
#define PS_WPR      (1u << 31)
#define PLS_U0      0
#define PLS_U3      3
#define PLS_RXDETECT 5
#define PLS_POLLING 7
#define PLS_RESUME  15
/* IMAN, ERDP */
#define IMAN_IP     (1u << 0)
#define IMAN_IE     (1u << 1)
#define ERDP_EHB    (1u << 3)

/* TRB types */
enum {
	TRB_NORMAL = 1, TRB_SETUP = 2, TRB_DATA = 3, TRB_STATUS = 4, TRB_LINK = 6, TRB_EVENT_DATA = 7,
	TRB_NOOP = 8, CMD_ENABLE_SLOT = 9, CMD_DISABLE_SLOT = 10, CMD_ADDRESS_DEV = 11, CMD_CONFIG_EP = 12,
	CMD_EVAL_CTX = 13, CMD_RESET_EP = 14, CMD_STOP_EP = 15, CMD_SET_TR_DEQ = 16, CMD_RESET_DEV = 17,
	CMD_NOOP = 23, EV_TRANSFER = 32, EV_CMD_DONE = 33, EV_PORT = 34,
};
#define TRB_TYPE(t)  (((t)[3] >> 10) & 0x3f)
#define TRB_C        (1u << 0)
#define TRB_TC       (1u << 1)            /* Link: toggle cycle */
#define TRB_ISP      (1u << 2)
#define TRB_CH       (1u << 4)
#define TRB_IOC      (1u << 5)
#define TRB_IDT      (1u << 6)
#define TRB_BSR      (1u << 9)            /* Address Device */
#define TRB_DC       (1u << 9)            /* Configure Endpoint */
#define TRB_DIR_IN   (1u << 16)           /* Data stage */
#define EV_ED        (1u << 2)

/* Completion codes */
enum {
	CC_SUCCESS = 1, CC_DATA_BUFFER = 2, CC_TRANSACTION = 4, CC_TRB = 5, CC_STALL = 6, CC_NO_SLOTS = 9,
	CC_SLOT_NOT_ENABLED = 11, CC_EP_NOT_ENABLED = 12, CC_SHORT = 13, CC_PARAMETER = 17,
	CC_CONTEXT_STATE = 19, CC_CMD_RING_STOPPED = 24, CC_CMD_ABORTED = 25,
};

/* Slot and endpoint context states */
enum { SLOT_ENABLED = 0, SLOT_DEFAULT = 1, SLOT_ADDRESSED = 2, SLOT_CONFIGURED = 3 };
enum { EP_DISABLED = 0, EP_RUNNING = 1, EP_HALTED = 2, EP_STOPPED = 3 };

struct xhci_ep {
	uint64_t deq;
	bool dcs;
	uint8_t state;
};

struct xhci_slot {
	bool enabled;
	uint8_t port;        /* root hub port the context names, 1-based */
	struct xhci_ep ep[32];   /* by DCI; 1 = control */
};

struct xhci_port {
	uint32_t portsc, pmsc, li;
	int dev;             /* index in devs[], -1 none */
};

struct xhci_usbdev {
	const struct usb_devemu *ue;
	void *sc;
	int port;            /* 1-based */
};

struct xhci {
	struct pci_devinst *pi;
	struct vmctx *ctx;
	pthread_mutex_t lock;
	bool paused;
	uint32_t usbcmd, usbsts, dnctrl, config;
	uint64_t dcbaap;
	/* Command ring */
	uint64_t crcr_latch;   /* what the guest last wrote, both halves */
	bool crcr_lo_taken;    /* the low half set the pointer: the high half may too */
	uint64_t cr_deq;
	bool cr_ccs, cr_running;
	/* Interrupter 0 and its event ring */
	uint32_t iman, imod, erstsz;
	uint64_t erstba, erdp;
	bool er_valid;
	uint32_t er_seg, er_left;
	uint64_t er_enq;
	bool er_pcs, warned_full;
	struct timespec mf_start;
	struct xhci_port port[NPORTS + 1];
	struct xhci_slot slot[MAX_SLOTS + 1];
	struct xhci_usbdev devs[NPORTS];
	int ndevs;
	struct xhci *next;
	/* A transfer's TRBs and data: one at a time (under lock). */
	struct td *td;
	uint8_t *buf;        /* XFER_MAX bytes */
	uint32_t len[MAX_TD_TRBS];
};

static struct xhci *all_xhci;
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t u64_of(const uint32_t t[2]) { return t[0] | (uint64_t)t[1] << 32; }

static uint32_t mfindex(const struct xhci *x)
{
	if (!(x->usbcmd & CMD_RS))
		return 0;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ns = (now.tv_sec - x->mf_start.tv_sec) * 1000000000LL + (now.tv_nsec - x->mf_start.tv_nsec);
	return (uint32_t)(ns / 125000) & 0x3fff;   /* microframes */
}

/* ---- interrupts and the event ring ---- */

static void update_intx(struct xhci *x)
{
	bool level = (x->iman & IMAN_IP) && (x->iman & IMAN_IE) && (x->usbcmd & CMD_INTE) && !pci_msi_enabled(x->pi);
	if (level)
		pci_lintr_assert(x->pi);
	else
		pci_lintr_deassert(x->pi);
}

/* Events are waiting and the driver is not busy with the ring: interrupt. */
static void raise_interrupt(struct xhci *x)
{
	if (x->erdp & ERDP_EHB)
		return;   /* the driver writes ERDP when done; we look again then */
	x->erdp |= ERDP_EHB;
	x->iman |= IMAN_IP;
	x->usbsts |= STS_EINT;
	if ((x->iman & IMAN_IE) && (x->usbcmd & CMD_INTE) && pci_msi_enabled(x->pi))
		pci_generate_msi(x->pi, 0);
	update_intx(x);
}

/* Load segment seg of the event ring segment table. */
static bool er_load_seg(struct xhci *x, uint32_t seg)
{
	uint32_t e[4];
	x->er_valid = false;
	if (x->erstsz == 0 || seg >= x->erstsz || vm_copy_from_guest(x->ctx, x->erstba + 16ull * seg, e, sizeof(e)))
		return false;
	uint64_t base = u64_of(e) & ~0x3full;
	uint32_t size = e[2] & 0xffff;
	if (size < 16 || size > 4096 || !vm_map_gpa(x->ctx, base, (size_t)size * 16))
		return false;
	x->er_seg = seg;
	x->er_enq = base;
	x->er_left = size;
	x->er_valid = true;
	return true;
}

static void er_reset(struct xhci *x)
{
	x->er_pcs = true;
	er_load_seg(x, 0);   /* not valid (HSE at the first event) if the table is not in RAM */
}

static void post_event(struct xhci *x, uint32_t ev[4])
{
	if (!(x->usbcmd & CMD_RS))
		return;
	if (!x->er_valid) {
		if (!(x->usbsts & STS_HSE))
			log_warn("%s: event ring segment table at %#" PRIx64 " (%u entries) is not in guest RAM",
			         x->pi->pi_name, x->erstba, x->erstsz);
		x->usbsts |= STS_HSE;
		return;
	}
	/* Full when the next slot is where the driver will read next. */
	uint64_t at = x->er_enq, next = at + 16;
	bool last_in_seg = x->er_left == 1;
	uint32_t next_seg = x->er_seg + 1 < x->erstsz ? x->er_seg + 1 : 0;
	if (last_in_seg) {
		uint32_t e[4];
		next = vm_copy_from_guest(x->ctx, x->erstba + 16ull * next_seg, e, sizeof(e)) ? 0 : u64_of(e) & ~0x3full;
	}
	if (next == (x->erdp & ~0xfull)) {
		if (!x->warned_full)   /* once: a guest that never reads its events must not flood the log */
			log_warn("%s: event ring full, events are lost", x->pi->pi_name);
		x->warned_full = true;
		return;
	}
	uint32_t *p = vm_map_gpa(x->ctx, at, 16);
	if (!p) {
		x->usbsts |= STS_HSE;
		return;
	}
	p[0] = ev[0];
	p[1] = ev[1];
	p[2] = ev[2];
	/* The cycle bit hands the TRB over: written last. */
	__atomic_store_n(&p[3], (ev[3] & ~TRB_C) | (x->er_pcs ? TRB_C : 0), __ATOMIC_RELEASE);
	vm_mark_dirty(x->ctx, at, 16);
	if (last_in_seg) {
		if (next_seg == 0)
			x->er_pcs = !x->er_pcs;
		if (!er_load_seg(x, next_seg))
			x->usbsts |= STS_HSE;
	} else {
		x->er_enq += 16;
		x->er_left--;
	}
	raise_interrupt(x);
}

static void cmd_done(struct xhci *x, uint64_t trb, int cc, int slot)
{
	uint32_t ev[4] = { (uint32_t)trb, (uint32_t)(trb >> 32), (uint32_t)cc << 24,
	                   (uint32_t)EV_CMD_DONE << 10 | (uint32_t)slot << 24 };
	post_event(x, ev);
}

static void xfer_event(struct xhci *x, uint64_t trb, uint32_t residual, int cc, int slot, int dci, bool ed)
{
	uint32_t ev[4] = { (uint32_t)trb, (uint32_t)(trb >> 32), (residual & 0xffffff) | (uint32_t)cc << 24,
	                   (uint32_t)EV_TRANSFER << 10 | (uint32_t)dci << 16 | (uint32_t)slot << 24 | (ed ? EV_ED : 0) };
	post_event(x, ev);
}

static void port_event(struct xhci *x, int port)
{
	x->usbsts |= STS_PCD;
	uint32_t ev[4] = { (uint32_t)port << 24, 0, (uint32_t)CC_SUCCESS << 24, (uint32_t)EV_PORT << 10 };
	post_event(x, ev);
}

/* ---- rings ---- */

struct cursor {
	uint64_t deq;
	bool cyc;
	int steps;
};

/* The next TRB the driver handed over, following Link TRBs: 1, with its
 * address in *at; 0 none yet; -1 the ring is broken (not RAM, endless). */
static int ring_next(struct xhci *x, struct cursor *c, uint32_t t[4], uint64_t *at)
{
	for (;;) {
		if (++c->steps > MAX_RING_STEPS || vm_copy_from_guest(x->ctx, c->deq, t, 16))
			return -1;
		if ((t[3] & TRB_C) != (c->cyc ? TRB_C : 0))
			return 0;
		if (TRB_TYPE(t) != TRB_LINK) {
			*at = c->deq;
			c->deq += 16;
			return 1;
		}
		if (t[3] & TRB_TC)
			c->cyc = !c->cyc;
		c->deq = u64_of(t) & ~0xfull;
	}
}

/* ---- contexts ---- */

static uint64_t dev_ctx(struct xhci *x, int slot)
{
	uint64_t p;
	if (vm_copy_from_guest(x->ctx, x->dcbaap + 8ull * (unsigned)slot, &p, 8))
		return 0;
	return p & ~0x3full;
}

static int ctx_rd(struct xhci *x, uint64_t gpa, uint32_t c[8]) { return vm_copy_from_guest(x->ctx, gpa, c, 32); }
static int ctx_wr(struct xhci *x, uint64_t gpa, const uint32_t c[8]) { return vm_copy_to_guest(x->ctx, gpa, c, 32); }

/* Write an endpoint's state (and with deq, its dequeue pointer) into the output context. */
static void ep_writeback(struct xhci *x, int slot, int dci, bool deq)
{
	uint64_t out = dev_ctx(x, slot);
	uint32_t c[8];
	struct xhci_ep *ep = &x->slot[slot].ep[dci];
	if (!out || ctx_rd(x, out + 32ull * (unsigned)dci, c))
		return;
	c[0] = (c[0] & ~7u) | ep->state;
	if (deq) {
		c[2] = (uint32_t)ep->deq | (ep->dcs ? 1 : 0);
		c[3] = (uint32_t)(ep->deq >> 32);
	}
	ctx_wr(x, out + 32ull * (unsigned)dci, c);
}

static void ep_from_ctx(struct xhci_ep *ep, const uint32_t c[8])
{
	ep->deq = (c[2] | (uint64_t)c[3] << 32) & ~0xfull;
	ep->dcs = c[2] & 1;
	ep->state = EP_RUNNING;
}

static struct xhci_usbdev *slot_dev(struct xhci *x, int slot)
{
	uint8_t p = x->slot[slot].port;
	if (p < 1 || p > NPORTS || x->port[p].dev < 0 || !(x->port[p].portsc & PS_PED))
		return NULL;
	return &x->devs[x->port[p].dev];
}

/* ---- transfers ---- */

struct td {
	uint32_t trb[MAX_TD_TRBS][4];
	uint64_t at[MAX_TD_TRBS];
	int n;
};

/* The halted endpoint's state goes to the output context; the driver resets it. */
static void ep_halt(struct xhci *x, int slot, int dci, struct cursor *c)
{
	struct xhci_ep *ep = &x->slot[slot].ep[dci];
	ep->deq = c->deq;
	ep->dcs = c->cyc;
	ep->state = EP_HALTED;
	ep_writeback(x, slot, dci, true);
}

/* Gather one TD from the cursor: returns 1 complete, 0 not all there yet, -1 broken. */
static int read_td(struct xhci *x, struct cursor *c, struct td *td, bool control)
{
	td->n = 0;
	for (;;) {
		if (td->n == MAX_TD_TRBS)
			return -1;
		int r = ring_next(x, c, td->trb[td->n], &td->at[td->n]);
		if (r <= 0)
			return r;
		uint32_t *t = td->trb[td->n++];
		if (control ? TRB_TYPE(t) == TRB_STATUS : !(t[3] & TRB_CH))
			return 1;
	}
}

/* Copy between the TD's data TRBs and buf: n bytes; per-TRB lengths
 * in len[]; false if a buffer is not guest RAM. */
static bool td_copy(struct xhci *x, struct td *td, int first, uint8_t *buf, size_t n, bool in, uint32_t len[])
{
	size_t done = 0;
	for (int i = first; i < td->n; i++) {
		uint32_t *t = td->trb[i];
		int ty = TRB_TYPE(t);
		len[i] = 0;
		if (ty != TRB_NORMAL && ty != TRB_DATA)
			continue;
		uint32_t want = t[2] & 0x1ffff;
		size_t k = n - done < want ? n - done : want;
		if (t[3] & TRB_IDT) {   /* immediate data: OUT only, at most 8 bytes */
			if (want > 8 || in)
				return false;
			memcpy(buf + done, t, k);
		} else if (k && (in ? vm_copy_to_guest(x->ctx, u64_of(t), buf + done, k)
		                    : vm_copy_from_guest(x->ctx, u64_of(t), buf + done, k))) {
			return false;
		}
		len[i] = (uint32_t)k;
		done += k;
	}
	return true;
}

static size_t td_total(const struct td *td, int first)
{
	size_t n = 0;
	for (int i = first; i < td->n; i++)
		if (TRB_TYPE(td->trb[i]) == TRB_NORMAL || TRB_TYPE(td->trb[i]) == TRB_DATA)
			n += td->trb[i][2] & 0x1ffff;
	return n;
}

/* Events for a TD whose data TRBs moved len[i] bytes each; stops after the first short TRB. */
static void td_events(struct xhci *x, int slot, int dci, struct td *td, int first, const uint32_t len[])
{
	uint32_t edtla = 0;
	for (int i = first; i < td->n; i++) {
		uint32_t *t = td->trb[i];
		int ty = TRB_TYPE(t);
		if (ty == TRB_EVENT_DATA) {
			if (t[3] & TRB_IOC)
				xfer_event(x, u64_of(t), edtla, CC_SUCCESS, slot, dci, true);
			edtla = 0;
			continue;
		}
		if (ty == TRB_STATUS) {
			if (t[3] & TRB_IOC)
				xfer_event(x, td->at[i], 0, CC_SUCCESS, slot, dci, false);
			continue;
		}
		if (ty != TRB_NORMAL && ty != TRB_DATA)
			continue;
		uint32_t want = t[2] & 0x1ffff;
		edtla += len[i];
		if (len[i] < want) {
			if (t[3] & (TRB_ISP | TRB_IOC))
				xfer_event(x, td->at[i], want - len[i], CC_SHORT, slot, dci, false);
			/* The rest of the data stage is skipped; a control TD still has its status stage. */
			for (i++; i < td->n && TRB_TYPE(td->trb[i]) != TRB_STATUS; i++)
				;
			i--;
			continue;
		}
		if (t[3] & TRB_IOC)
			xfer_event(x, td->at[i], 0, CC_SUCCESS, slot, dci, false);
	}
}

/* Run the control TDs on endpoint 0 of a slot. */
static void run_control(struct xhci *x, int slot, struct xhci_usbdev *d)
{
	struct xhci_ep *ep = &x->slot[slot].ep[1];
	struct td *td = x->td;
	uint8_t *buf = x->buf;
	uint32_t *len = x->len;
	struct cursor c = { ep->deq, ep->dcs, 0 };
	while (ep->state == EP_RUNNING) {
		int r = read_td(x, &c, td, true);
		if (r == 0)
			return;   /* the rest is not queued yet */
		uint32_t *s = td->trb[0];
		if (r < 0 || TRB_TYPE(s) != TRB_SETUP || !(s[3] & TRB_IDT) || (s[2] & 0x1ffff) != 8) {
			xfer_event(x, r < 0 ? c.deq : td->at[0], 0, CC_TRB, slot, 1, false);
			ep_halt(x, slot, 1, &c);
			return;
		}
		struct usb_setup su = { (uint8_t)s[0], (uint8_t)(s[0] >> 8), (uint16_t)(s[0] >> 16), (uint16_t)s[1],
		                        (uint16_t)(s[1] >> 16) };
		bool in = su.type & 0x80;
		memset(len, 0, sizeof(x->len));
		size_t total = td_total(td, 1);
		int n = 0;
		bool ok = true;
		if (!in && su.length) {
			ok = td_copy(x, td, 1, buf, total < su.length ? total : su.length, false, len);
			memset(buf + (total < su.length ? total : su.length), 0, su.length - (total < su.length ? total : su.length));
		}
		if (ok)
			n = d->ue->ue_request(d->sc, &su, buf);
		if (ok && n >= 0 && in)
			ok = td_copy(x, td, 1, buf, (size_t)n < total ? (size_t)n : total, true, len);
		if (!ok || n < 0) {
			xfer_event(x, td->at[td->n > 1 ? 1 : 0], 0, ok ? CC_STALL : CC_DATA_BUFFER, slot, 1, false);
			ep_halt(x, slot, 1, &c);
			return;
		}
		ep->deq = c.deq;
		ep->dcs = c.cyc;
		td_events(x, slot, 1, td, 1, len);
	}
}

/* Run the TDs of an IN/OUT endpoint other than 0 while the device has data. */
static void run_data(struct xhci *x, int slot, int dci, struct xhci_usbdev *d)
{
	struct xhci_ep *ep = &x->slot[slot].ep[dci];
	struct td *td = x->td;
	uint8_t *buf = x->buf;
	uint32_t *len = x->len;
	bool in = dci & 1;
	int steps = 0;   /* one budget for all the TDs of a doorbell: a ring of endless TDs ends */
	while (ep->state == EP_RUNNING && !x->paused) {
		struct cursor c = { ep->deq, ep->dcs, steps };
		int r = read_td(x, &c, td, false);
		steps = c.steps;
		if (r == 0)
			return;
		if (r < 0) {
			xfer_event(x, c.deq, 0, CC_TRB, slot, dci, false);
			ep_halt(x, slot, dci, &c);
			return;
		}
		size_t total = td_total(td, 0);
		if (total > XFER_MAX)
			total = XFER_MAX;
		memset(len, 0, sizeof(x->len));
		bool ok = true;
		if (in) {
			int n = d->ue->ue_data_in ? d->ue->ue_data_in(d->sc, dci / 2, buf, (int)total) : 0;
			if (n <= 0)
				return;   /* NAK: the TD waits for data */
			ok = td_copy(x, td, 0, buf, (size_t)n, true, len);
		} else {
			ok = td_copy(x, td, 0, buf, total, false, len);   /* no device takes OUT data yet: accepted */
		}
		if (!ok) {
			xfer_event(x, td->at[0], 0, CC_DATA_BUFFER, slot, dci, false);
			ep_halt(x, slot, dci, &c);
			return;
		}
		ep->deq = c.deq;
		ep->dcs = c.cyc;
		td_events(x, slot, dci, td, 0, len);
	}
}

static void ring_doorbell(struct xhci *x, int slot, int dci)
{
	if (slot < 1 || slot > MAX_SLOTS || !x->slot[slot].enabled || dci < 1 || dci > 31)
		return;
	struct xhci_usbdev *d = slot_dev(x, slot);
	struct xhci_ep *ep = &x->slot[slot].ep[dci];
	if (!d)
		return;
	if (ep->state == EP_STOPPED) {   /* a doorbell restarts a stopped endpoint (a halted one waits for Reset Endpoint) */
		ep->state = EP_RUNNING;
		ep_writeback(x, slot, dci, false);
	}
	if (ep->state != EP_RUNNING)
		return;
	if (dci == 1)
		run_control(x, slot, d);
	else
		run_data(x, slot, dci, d);
}

/* ---- commands ---- */

static int cmd_address(struct xhci *x, const uint32_t t[4], int slot)
{
	uint64_t in = u64_of(t) & ~0xfull, out = dev_ctx(x, slot);
	uint32_t icc[8], sc[8], ep0[8], cur[8];
	if (!out || ctx_rd(x, in, icc) || ctx_rd(x, in + 32, sc) || ctx_rd(x, in + 64, ep0) || ctx_rd(x, out, cur))
		return CC_PARAMETER;
	if ((icc[1] & 3) != 3)
		return CC_PARAMETER;
	int state = (int)(cur[3] >> 27);
	struct xhci_slot *s = &x->slot[slot];
	if (s->ep[1].state != EP_DISABLED && state >= SLOT_ADDRESSED)
		return CC_CONTEXT_STATE;
	uint8_t port = (uint8_t)(sc[1] >> 16);
	if (port < 1 || port > NPORTS || x->port[port].dev < 0 || !(x->port[port].portsc & PS_PED))
		return CC_TRANSACTION;
	bool bsr = t[3] & TRB_BSR;
	s->port = port;
	sc[3] = (sc[3] & 0x07ffff00u) | (uint32_t)(bsr ? SLOT_DEFAULT : SLOT_ADDRESSED) << 27 | (bsr ? 0 : (uint32_t)slot);
	ep_from_ctx(&s->ep[1], ep0);
	ep0[0] = (ep0[0] & ~7u) | EP_RUNNING;
	if (ctx_wr(x, out, sc) || ctx_wr(x, out + 32, ep0))
		return CC_PARAMETER;
	return CC_SUCCESS;
}

static int cmd_configure(struct xhci *x, const uint32_t t[4], int slot)
{
	uint64_t in = u64_of(t) & ~0xfull, out = dev_ctx(x, slot);
	uint32_t icc[8], sc[8], c[8];
	struct xhci_slot *s = &x->slot[slot];
	if (!out || ctx_rd(x, out, sc))
		return CC_PARAMETER;
	int state = (int)(sc[3] >> 27);
	if (state != SLOT_ADDRESSED && state != SLOT_CONFIGURED)
		return CC_CONTEXT_STATE;
	if (t[3] & TRB_DC) {
		for (int i = 2; i < 32; i++) {
			s->ep[i].state = EP_DISABLED;
			ep_writeback(x, slot, i, false);
		}
		sc[3] = (sc[3] & 0x07ffffffu) | (uint32_t)SLOT_ADDRESSED << 27;
		return ctx_wr(x, out, sc) ? CC_PARAMETER : CC_SUCCESS;
	}
	if (ctx_rd(x, in, icc))
		return CC_PARAMETER;
	/* Check every context first: a failed command changes nothing. */
	for (int i = 2; i < 32; i++)
		if ((icc[1] >> i & 1) && ctx_rd(x, in + 32ull * (unsigned)(i + 1), c))
			return CC_PARAMETER;
	bool any = false;
	for (int i = 2; i < 32; i++) {
		if (icc[0] >> i & 1) {
			s->ep[i].state = EP_DISABLED;
			ep_writeback(x, slot, i, false);
		}
		if (icc[1] >> i & 1) {
			ctx_rd(x, in + 32ull * (unsigned)(i + 1), c);
			ep_from_ctx(&s->ep[i], c);
			c[0] = (c[0] & ~7u) | EP_RUNNING;
			if (ctx_wr(x, out + 32ull * (unsigned)i, c))
				return CC_PARAMETER;
		}
		any |= s->ep[i].state != EP_DISABLED;
	}
	if (icc[1] & 1) {   /* the slot context: its Context Entries */
		uint32_t isc[8];
		if (ctx_rd(x, in + 32, isc))
			return CC_PARAMETER;
		sc[0] = (sc[0] & 0x07ffffffu) | (isc[0] & 0xf8000000u);
	}
	sc[3] = (sc[3] & 0x07ffffffu) | (uint32_t)(any ? SLOT_CONFIGURED : SLOT_ADDRESSED) << 27;
	return ctx_wr(x, out, sc) ? CC_PARAMETER : CC_SUCCESS;
}

static int cmd_evaluate(struct xhci *x, const uint32_t t[4], int slot)
{
	uint64_t in = u64_of(t) & ~0xfull, out = dev_ctx(x, slot);
	uint32_t icc[8], isc[8], iep[8], sc[8], ep0[8];
	if (!out || ctx_rd(x, in, icc) || ctx_rd(x, in + 32, isc) || ctx_rd(x, in + 64, iep) || ctx_rd(x, out, sc) ||
	    ctx_rd(x, out + 32, ep0))
		return CC_PARAMETER;
	if (icc[1] & 1) {   /* max exit latency, interrupter target */
		sc[1] = (sc[1] & ~0xffffu) | (isc[1] & 0xffff);
		sc[2] = (sc[2] & 0x003fffffu) | (isc[2] & 0xffc00000u);
	}
	if (icc[1] & 2)     /* EP0's max packet size */
		ep0[1] = (ep0[1] & 0xffffu) | (iep[1] & 0xffff0000u);
	return ctx_wr(x, out, sc) || ctx_wr(x, out + 32, ep0) ? CC_PARAMETER : CC_SUCCESS;
}

static void run_commands(struct xhci *x)
{
	struct cursor c = { x->cr_deq, x->cr_ccs, 0 };
	uint32_t t[4];
	uint64_t at;
	int r;
	while (x->cr_running && (x->usbcmd & CMD_RS) && (r = ring_next(x, &c, t, &at)) != 0) {
		if (r < 0) {   /* not RAM, or more than a doorbell's budget of TRBs (a ring that never ends) */
			if (!(x->usbsts & STS_HSE))
				log_warn("%s: command ring at %#" PRIx64 " is not usable", x->pi->pi_name, c.deq);
			x->usbsts |= STS_HSE;
			x->cr_running = false;
			break;
		}
		int type = TRB_TYPE(t), slot = (int)(t[3] >> 24), cc = CC_SUCCESS, ret_slot = slot;
		bool slot_ok = slot >= 1 && slot <= MAX_SLOTS && x->slot[slot].enabled;
		int dci = (int)(t[3] >> 16) & 0x1f;
		switch (type) {
		case CMD_ENABLE_SLOT: {
			int max = (int)(x->config & 0xff) < MAX_SLOTS ? (int)(x->config & 0xff) : MAX_SLOTS;
			ret_slot = 0;
			for (int i = 1; i <= max && !ret_slot; i++)
				if (!x->slot[i].enabled)
					ret_slot = i;
			if (ret_slot) {
				memset(&x->slot[ret_slot], 0, sizeof(x->slot[ret_slot]));
				x->slot[ret_slot].enabled = true;
			} else {
				cc = CC_NO_SLOTS;
			}
			break;
		}
		case CMD_DISABLE_SLOT:
			if (slot_ok)
				memset(&x->slot[slot], 0, sizeof(x->slot[slot]));
			else
				cc = CC_SLOT_NOT_ENABLED;
			break;
		case CMD_ADDRESS_DEV:
			cc = slot_ok ? cmd_address(x, t, slot) : CC_SLOT_NOT_ENABLED;
			break;
		case CMD_CONFIG_EP:
			cc = slot_ok ? cmd_configure(x, t, slot) : CC_SLOT_NOT_ENABLED;
			break;
		case CMD_EVAL_CTX:
			cc = slot_ok ? cmd_evaluate(x, t, slot) : CC_SLOT_NOT_ENABLED;
			break;
		case CMD_RESET_EP:
		case CMD_STOP_EP:
		case CMD_SET_TR_DEQ: {
			if (!slot_ok) {
				cc = CC_SLOT_NOT_ENABLED;
				break;
			}
			struct xhci_ep *ep = &x->slot[slot].ep[dci];
			if (dci < 1 || ep->state == EP_DISABLED) {
				cc = CC_EP_NOT_ENABLED;
			} else if (type == CMD_RESET_EP) {
				if (ep->state != EP_HALTED)
					cc = CC_CONTEXT_STATE;
				else
					ep->state = EP_STOPPED;
			} else if (type == CMD_STOP_EP) {
				if (ep->state != EP_RUNNING)
					cc = CC_CONTEXT_STATE;
				else
					ep->state = EP_STOPPED;
			} else if (ep->state != EP_STOPPED) {
				cc = CC_CONTEXT_STATE;
			} else {
				ep->deq = u64_of(t) & ~0xfull;
				ep->dcs = t[0] & 1;
			}
			if (cc == CC_SUCCESS)
				ep_writeback(x, slot, dci, true);
			break;
		}
		case CMD_RESET_DEV: {
			uint64_t out = slot_ok ? dev_ctx(x, slot) : 0;
			uint32_t sc[8];
			if (!slot_ok) {
				cc = CC_SLOT_NOT_ENABLED;
			} else if (!out || ctx_rd(x, out, sc)) {
				cc = CC_PARAMETER;
			} else {
				for (int i = 2; i < 32; i++)
					x->slot[slot].ep[i].state = EP_DISABLED;
				sc[3] = (sc[3] & 0x07ffff00u) | (uint32_t)SLOT_DEFAULT << 27;
				sc[0] = (sc[0] & 0x07ffffffu) | 1u << 27;
				if (ctx_wr(x, out, sc))
					cc = CC_PARAMETER;
			}
			break;
		}
		case CMD_NOOP:
			break;
		default:
			cc = CC_TRB;
			break;
		}
		x->cr_deq = c.deq;
		x->cr_ccs = c.cyc;
		cmd_done(x, at, cc, ret_slot);
	}
}

/* ---- ports ---- */

static void port_connect(struct xhci *x, int p)
{
	struct xhci_port *pt = &x->port[p];
	pt->portsc = PS_PP;
	if (pt->dev < 0) {
		pt->portsc |= (uint32_t)PLS_RXDETECT << PS_PLS_SHIFT;
		return;
	}
	int speed = x->devs[pt->dev].ue->ue_speed;
	pt->portsc |= PS_CCS | PS_CSC | (uint32_t)speed << PS_SPEED_SHIFT;
	if (speed == USB_SPEED_SUPER)   /* link training done: enabled, in U0 */
		pt->portsc |= PS_PED | (uint32_t)PLS_U0 << PS_PLS_SHIFT;
	else
		pt->portsc |= (uint32_t)PLS_POLLING << PS_PLS_SHIFT;
}

static void port_write(struct xhci *x, int p, uint32_t v)
{
	struct xhci_port *pt = &x->port[p];
	pt->portsc &= ~(v & PS_CHANGE);
	if (v & PS_PED)   /* write 1: disable */
		pt->portsc &= ~PS_PED;
	/* PP stays set: no port power control (HCCPARAMS1.PPC 0). */
	pt->portsc = (pt->portsc & ~(PS_PIC | PS_WAKE)) | (v & (PS_PIC | PS_WAKE));
	if ((v & (PS_PR | PS_WPR)) && (pt->portsc & PS_CCS)) {
		struct xhci_usbdev *d = &x->devs[pt->dev];
		d->ue->ue_reset(d->sc);
		pt->portsc = (pt->portsc & ~PS_PLS) | PS_PED | PS_PRC | (uint32_t)PLS_U0 << PS_PLS_SHIFT;
		if (v & PS_WPR)
			pt->portsc |= PS_WRC;
		port_event(x, p);
	} else if ((v & PS_LWS) && (pt->portsc & PS_PED)) {
		uint32_t pls = (v & PS_PLS) >> PS_PLS_SHIFT;
		if (pls == PLS_U0 || pls == PLS_U3 || pls == PLS_RESUME) {
			bool resume = pls != PLS_U3 && ((pt->portsc & PS_PLS) >> PS_PLS_SHIFT) == PLS_U3;
			pt->portsc = (pt->portsc & ~PS_PLS) | (uint32_t)(pls == PLS_U3 ? PLS_U3 : PLS_U0) << PS_PLS_SHIFT;
			if (resume) {
				pt->portsc |= PS_PLC;
				port_event(x, p);
			}
		}
	}
}

/* ---- registers ---- */

static void hc_reset(struct xhci *x)
{
	x->usbcmd = 0;
	x->usbsts = STS_HCH;
	x->dnctrl = x->config = 0;
	x->dcbaap = x->crcr_latch = x->cr_deq = 0;
	x->crcr_lo_taken = x->cr_ccs = x->cr_running = false;
	x->iman = 0;
	x->imod = 4000;
	x->erstsz = 0;
	x->erstba = x->erdp = 0;
	x->er_valid = false;
	memset(x->slot, 0, sizeof(x->slot));
	for (int p = 1; p <= NPORTS; p++)
		port_connect(x, p);
	update_intx(x);
}

static uint32_t cap_read(uint64_t off)
{
	switch (off) {
	case 0x00: return CAP_LEN | 0x0100u << 16;   /* CAPLENGTH, HCIVERSION 1.0 */
	case 0x04: return MAX_SLOTS | 1u << 8 | (uint32_t)NPORTS << 24;   /* slots, interrupters, ports */
	case 0x08: return (uint32_t)ERST_MAX_LOG2 << 4;   /* IST 0, no scratchpad */
	case 0x0c: return 0;
	case 0x10: return 1u | (uint32_t)(XECP_OFF / 4) << 16;   /* AC64, 32-byte contexts, xECP */
	case 0x14: return DB_OFF;
	case 0x18: return RT_OFF;
	default: return 0;
	}
}

/* Supported Protocol capabilities: USB 3.0 on ports 1-4, USB 2.0 on 5-8. */
static uint32_t xecp_read(uint64_t off)
{
	switch (off) {
	case 0x00: return 2u | 4u << 8 | 0x00u << 16 | 0x03u << 24;   /* ID 2, next +16 bytes, 3.0 */
	case 0x04: return 0x20425355;                                   /* "USB " */
	case 0x08: return USB3_FIRST | 4u << 8;
	case 0x10: return 2u | 0x00u << 16 | 0x02u << 24;              /* last, 2.0 */
	case 0x14: return 0x20425355;
	case 0x18: return USB2_FIRST | 4u << 8;
	default: return 0;
	}
}

static uint32_t reg_read(struct xhci *x, uint64_t off)
{
	if (off < CAP_LEN)
		return cap_read(off);
	if (off >= XECP_OFF && off < XECP_OFF + 0x20)
		return xecp_read(off - XECP_OFF);
	if (off >= PORTS_OFF && off < PORTS_OFF + 0x10 * NPORTS) {
		struct xhci_port *pt = &x->port[(off - PORTS_OFF) / 0x10 + 1];
		switch ((off - PORTS_OFF) % 0x10) {
		case 0: return pt->portsc;
		case 4: return pt->pmsc;
		case 8: return pt->li;
		default: return 0;
		}
	}
	switch (off) {
	case OP + 0x00: return x->usbcmd;
	case OP + 0x04: return x->usbsts;
	case OP + 0x08: return 1;   /* 4 KiB pages */
	case OP + 0x14: return x->dnctrl;
	case OP + 0x18: return x->cr_running ? CRCR_CRR : 0;
	case OP + 0x1c: return 0;
	case OP + 0x30: return (uint32_t)x->dcbaap;
	case OP + 0x34: return (uint32_t)(x->dcbaap >> 32);
	case OP + 0x38: return x->config;
	case RT_OFF: return mfindex(x);
	case RT_OFF + 0x20: return x->iman;
	case RT_OFF + 0x24: return x->imod;
	case RT_OFF + 0x28: return x->erstsz;
	case RT_OFF + 0x30: return (uint32_t)x->erstba;
	case RT_OFF + 0x34: return (uint32_t)(x->erstba >> 32);
	case RT_OFF + 0x38: return (uint32_t)x->erdp;
	case RT_OFF + 0x3c: return (uint32_t)(x->erdp >> 32);
	default: return 0;
	}
}

static void usbcmd_write(struct xhci *x, uint32_t v)
{
	if (v & CMD_HCRST) {
		for (int i = 0; i < x->ndevs; i++)
			x->devs[i].ue->ue_reset(x->devs[i].sc);
		hc_reset(x);
		return;
	}
	bool was = x->usbcmd & CMD_RS;
	x->usbcmd = v & CMD_MASK;
	if ((v & CMD_RS) && !was) {
		x->usbsts &= ~STS_HCH;
		clock_gettime(CLOCK_MONOTONIC, &x->mf_start);
		for (int p = 1; p <= NPORTS; p++)
			if (x->port[p].portsc & PS_CHANGE)
				port_event(x, p);
	} else if (!(v & CMD_RS) && was) {
		x->usbsts |= STS_HCH;
		x->cr_running = false;
	}
	update_intx(x);
}

static void crcr_write(struct xhci *x, bool hi, uint32_t v)
{
	if (!hi) {
		x->crcr_latch = (x->crcr_latch & ~0xffffffffull) | v;
		if (x->cr_running) {
			x->crcr_lo_taken = false;
			if (v & (CRCR_CA | CRCR_CS)) {
				x->cr_running = false;
				cmd_done(x, x->cr_deq, v & CRCR_CA ? CC_CMD_ABORTED : CC_CMD_RING_STOPPED, 0);
			}
			return;
		}
		x->crcr_lo_taken = true;
	} else {
		x->crcr_latch = (x->crcr_latch & 0xffffffffull) | (uint64_t)v << 32;
		if (x->cr_running || !x->crcr_lo_taken)
			return;
	}
	x->cr_deq = x->crcr_latch & ~0x3full;
	x->cr_ccs = x->crcr_latch & CRCR_RCS;
}

static void reg_write(struct xhci *x, uint64_t off, uint32_t v)
{
	if (off >= PORTS_OFF && off < PORTS_OFF + 0x10 * NPORTS) {
		int p = (int)((off - PORTS_OFF) / 0x10) + 1;
		switch ((off - PORTS_OFF) % 0x10) {
		case 0: port_write(x, p, v); break;
		case 4: x->port[p].pmsc = v; break;
		default: break;
		}
		return;
	}
	if (off >= DB_OFF && off < DB_OFF + 4 * (MAX_SLOTS + 1)) {
		int slot = (int)(off - DB_OFF) / 4;
		if (!(x->usbcmd & CMD_RS))
			return;
		if (slot == 0) {
			if ((v & 0xff) == 0) {
				x->cr_running = true;
				run_commands(x);
			}
		} else {
			ring_doorbell(x, slot, (int)(v & 0xff));
		}
		return;
	}
	switch (off) {
	case OP + 0x00: usbcmd_write(x, v); break;
	case OP + 0x04: x->usbsts &= ~(v & STS_RW1C); break;
	case OP + 0x14: x->dnctrl = v & 0xffff; break;
	case OP + 0x18: crcr_write(x, false, v); break;
	case OP + 0x1c: crcr_write(x, true, v); break;
	case OP + 0x30: x->dcbaap = (x->dcbaap & ~0xffffffffull) | (v & ~0x3fu); break;
	case OP + 0x34: x->dcbaap = (x->dcbaap & 0xffffffffull) | (uint64_t)v << 32; break;
	case OP + 0x38: x->config = v & 0x3ff; break;
	case RT_OFF + 0x20:
		x->iman = (x->iman & ~IMAN_IE & ~(v & IMAN_IP)) | (v & IMAN_IE);
		update_intx(x);
		break;
	case RT_OFF + 0x24: x->imod = v; break;
	case RT_OFF + 0x28: x->erstsz = v & 0xffff; break;
	case RT_OFF + 0x30:
		x->erstba = (x->erstba & ~0xffffffffull) | (v & ~0x3fu);
		er_reset(x);
		break;
	case RT_OFF + 0x34:
		x->erstba = (x->erstba & 0xffffffffull) | (uint64_t)v << 32;
		er_reset(x);
		break;
	case RT_OFF + 0x38: {
		bool busy = (x->erdp & ERDP_EHB) && !(v & ERDP_EHB);
		x->erdp = (x->erdp & ~0xffffffffull) | (v & ~(uint32_t)ERDP_EHB) | (busy ? ERDP_EHB : 0);
		/* The driver is done: more events behind its pointer interrupt again. */
		if (!busy && x->er_valid && (x->erdp & ~0xfull) != x->er_enq && (x->usbcmd & CMD_RS))
			raise_interrupt(x);
		break;
	}
	case RT_OFF + 0x3c: x->erdp = (x->erdp & 0xffffffffull) | (uint64_t)v << 32; break;
	default: break;
	}
}

static void xhci_barwrite(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size, uint64_t val)
{
	(void)vcpu;
	struct xhci *x = pi->pi_arg;
	if (baridx != 0)
		return;
	pthread_mutex_lock(&x->lock);
	if (size == 8) {
		reg_write(x, off, (uint32_t)val);
		reg_write(x, off + 4, (uint32_t)(val >> 32));
	} else if (size == 4 && !(off & 3)) {
		reg_write(x, off, (uint32_t)val);
	}   /* narrower writes: the spec has drivers write whole dwords; dropped */
	pthread_mutex_unlock(&x->lock);
}

static uint64_t xhci_barread(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size)
{
	(void)vcpu;
	struct xhci *x = pi->pi_arg;
	if (baridx != 0)
		return ~0ull;
	pthread_mutex_lock(&x->lock);
	uint64_t v = reg_read(x, off & ~3ull);
	if (size == 8)
		v |= (uint64_t)reg_read(x, (off & ~3ull) + 4) << 32;
	pthread_mutex_unlock(&x->lock);
	if (size < 8)
		v = (v >> ((off & 3) * 8)) & (size >= 4 ? 0xffffffffull : (1ull << (8 * size)) - 1);
	return v;
}

/* ---- pointer events from the VNC server ---- */

/* Complete the IN transfers of the device's endpoints that have data now. */
static void kick_device(struct xhci *x, struct xhci_usbdev *d)
{
	for (int s = 1; s <= MAX_SLOTS; s++)
		if (x->slot[s].enabled && slot_dev(x, s) == d)
			for (int dci = 3; dci < 32; dci += 2)
				if (x->slot[s].ep[dci].state == EP_RUNNING && (x->usbcmd & CMD_RS))
					run_data(x, s, dci, d);
}

bool xhci_pointer_event(uint8_t buttons, int px, int py, int w, int h)
{
	bool taken = false;
	pthread_mutex_lock(&all_lock);
	for (struct xhci *x = all_xhci; x; x = x->next) {
		pthread_mutex_lock(&x->lock);
		for (int i = 0; i < x->ndevs; i++) {
			struct xhci_usbdev *d = &x->devs[i];
			if (d->ue->ue_pointer && d->ue->ue_pointer(d->sc, buttons, px, py, w, h)) {
				taken = true;
				if (!x->paused)
					kick_device(x, d);
			}
		}
		pthread_mutex_unlock(&x->lock);
	}
	pthread_mutex_unlock(&all_lock);
	return taken;
}

/* ---- configuration and init ---- */

static const struct usb_devemu *usb_find(const char *name)
{
	static const struct usb_devemu *const known[] = { &usb_tablet_emu };
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(known[i]->ue_name, name) == 0)
			return known[i];
	return NULL;
}

/* pci.B.S.F.slot.N.device: N 1..8, on an xhci, a device hyve has. */
static int xhci_check_key(const char *path, const char *value, char *err, size_t errlen)
{
	unsigned b, s, f, n;
	int end = 0;
	if (sscanf(path, "pci.%u.%u.%u.slot.%u.device%n", &b, &s, &f, &n, &end) != 4 || path[end]) {
		snprintf(err, errlen, "not a pci.BUS.SLOT.FUNCTION.slot.N.device key");
		return 1;
	}
	const char *model = get_config_valuef("pci.%u.%u.%u.device", b, s, f);
	if (!model || strcmp(model, "xhci")) {
		snprintf(err, errlen, "unknown option 'slot.%u.device' for device model %s", n, model ? model : "(none)");
		return 1;
	}
	if (n < 1 || n > NPORTS) {
		snprintf(err, errlen, "USB device slot %u: expected 1 to %d", n, NPORTS);
		return -1;
	}
	if (!usb_find(value)) {
		snprintf(err, errlen, "unknown USB device '%s' (known: tablet)", value);
		return -1;
	}
	return 0;
}

static const struct config_key xhci_keys[] = {
	{ "pci.*.*.*.slot.*.device", CFG_CUSTOM, "xHCI: the USB device in slot N (1..8): tablet", xhci_check_key },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) xhci_keys_register(void)
{
	config_register_keys(xhci_keys);
}

/* "-s 30,xhci,tablet[,tablet...]": each name a device, slot.1 upwards. */
static int xhci_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	if (!opts || !*opts)
		return 0;
	char *dup = strdup(opts), *save = NULL;
	int n = 0, rc = 0;
	for (char *tok = strtok_r(dup, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		if (strchr(tok, '=')) {
			char *eq = strchr(tok, '=');
			*eq = '\0';
			set_config_valuef(eq + 1, "%s.%s", cfgpath, tok);
			continue;
		}
		if (++n > NPORTS) {
			snprintf(err, errlen, "xhci: at most %d USB devices", NPORTS);
			rc = -1;
			break;
		}
		if (!usb_find(tok)) {
			snprintf(err, errlen, "xhci: unknown USB device '%s' (known: tablet)", tok);
			rc = -1;
			break;
		}
		set_config_valuef(tok, "%s.slot.%d.device", cfgpath, n);
	}
	free(dup);
	return rc;
}

static int plug(struct xhci *x, const struct usb_devemu *ue, int n)
{
	bool usb3 = ue->ue_speed == USB_SPEED_SUPER;
	int first = usb3 ? USB3_FIRST : USB2_FIRST;
	for (int p = first; p < first + 4; p++) {
		if (x->port[p].dev >= 0)
			continue;
		void *sc = ue->ue_init();
		if (!sc) {
			log_err("%s: slot.%d: out of memory", x->pi->pi_name, n);
			return -1;
		}
		x->devs[x->ndevs] = (struct xhci_usbdev){ ue, sc, p };
		x->port[p].dev = x->ndevs++;
		return 0;
	}
	log_err("%s: slot.%d.device=%s: no free USB %d port (4 of each kind)", x->pi->pi_name, n, ue->ue_name,
	        usb3 ? 3 : 2);
	return -1;
}

static int xhci_init(struct pci_devinst *pi, const char *cfgpath)
{
	struct xhci *x = calloc(1, sizeof(*x));
	if (!x)
		return -1;
	x->td = malloc(sizeof(*x->td));
	x->buf = malloc(XFER_MAX);
	if (!x->td || !x->buf) {
		log_err("%s: out of memory", pi->pi_name);
		return -1;
	}
	x->pi = pi;
	x->ctx = pi->pi_vmctx;
	pthread_mutex_init(&x->lock, NULL);
	pi->pi_arg = x;
	for (int p = 0; p <= NPORTS; p++)
		x->port[p].dev = -1;
	for (int n = 1; n <= NPORTS; n++) {
		const char *name = get_config_valuef("%s.slot.%d.device", cfgpath, n);
		if (!name)
			continue;
		const struct usb_devemu *ue = usb_find(name);
		if (!ue) {
			log_err("%s: slot.%d.device=%s: unknown USB device (known: tablet)", pi->pi_name, n, name);
			return -1;
		}
		if (plug(x, ue, n))
			return -1;
	}
	pci_set_cfgdata16(pi, PCIR_VENDOR, 0x8086);
	pci_set_cfgdata16(pi, PCIR_DEVICE, 0x1e31);
	pci_set_cfgdata8(pi, PCIR_CLASS, 0x0c);      /* serial bus */
	pci_set_cfgdata8(pi, PCIR_SUBCLASS, 0x03);   /* USB */
	pci_set_cfgdata8(pi, PCIR_PROGIF, 0x30);     /* xHCI */
	pci_set_cfgdata8(pi, 0x60, 0x30);            /* SBRN: USB 3.0 */
	if (pci_emul_add_msicap(pi, 1) || pci_emul_alloc_bar(pi, 0, PCIBAR_MEM64, XHCI_BAR_SIZE) ||
	    pci_lintr_request(pi)) {
		log_err("%s: no room for its BAR or capabilities", pi->pi_name);
		return -1;
	}
	hc_reset(x);
	pthread_mutex_lock(&all_lock);
	x->next = all_xhci;
	all_xhci = x;
	pthread_mutex_unlock(&all_lock);
	return 0;
}

/* ---- checkpoint ---- */

static void xhci_pause(struct pci_devinst *pi)
{
	struct xhci *x = pi->pi_arg;
	pthread_mutex_lock(&x->lock);
	x->paused = true;   /* pointer events wait; the vCPUs are stopped already */
	pthread_mutex_unlock(&x->lock);
}

static void xhci_resume(struct pci_devinst *pi)
{
	struct xhci *x = pi->pi_arg;
	pthread_mutex_lock(&x->lock);
	x->paused = false;
	for (int i = 0; i < x->ndevs; i++)
		kick_device(x, &x->devs[i]);
	pthread_mutex_unlock(&x->lock);
}

static int xhci_snapshot(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen)
{
	(void)err; (void)errlen;
	struct xhci *x = pi->pi_arg;
	pthread_mutex_lock(&x->lock);
	sb_u32(out, x->usbcmd);
	sb_u32(out, x->usbsts);
	sb_u32(out, x->dnctrl);
	sb_u32(out, x->config);
	sb_u64(out, x->dcbaap);
	sb_u64(out, x->crcr_latch);
	sb_bool(out, x->crcr_lo_taken);
	sb_u64(out, x->cr_deq);
	sb_bool(out, x->cr_ccs);
	sb_bool(out, x->cr_running);
	sb_u32(out, x->iman);
	sb_u32(out, x->imod);
	sb_u32(out, x->erstsz);
	sb_u64(out, x->erstba);
	sb_u64(out, x->erdp);
	sb_bool(out, x->er_valid);
	sb_u32(out, x->er_seg);
	sb_u32(out, x->er_left);
	sb_u64(out, x->er_enq);
	sb_bool(out, x->er_pcs);
	sb_u32(out, mfindex(x));
	for (int p = 1; p <= NPORTS; p++) {
		sb_u32(out, x->port[p].portsc);
		sb_u32(out, x->port[p].pmsc);
	}
	for (int s = 1; s <= MAX_SLOTS; s++) {
		sb_bool(out, x->slot[s].enabled);
		sb_u8(out, x->slot[s].port);
		for (int i = 1; i < 32; i++) {
			sb_u64(out, x->slot[s].ep[i].deq);
			sb_bool(out, x->slot[s].ep[i].dcs);
			sb_u8(out, x->slot[s].ep[i].state);
		}
	}
	sb_u8(out, (uint8_t)x->ndevs);
	for (int i = 0; i < x->ndevs; i++) {
		sb_str(out, x->devs[i].ue->ue_name);
		sb_u8(out, (uint8_t)x->devs[i].port);
		x->devs[i].ue->ue_save(x->devs[i].sc, out);
	}
	pthread_mutex_unlock(&x->lock);
	return 0;
}

/* Read the saved state into x; with scratch, x is a copy and the devices'
 * states are checked on throwaway instances. */
static bool load_state(struct xhci *x, struct snap_rd *in, bool scratch)
{
	x->usbcmd = sr_u32(in) & CMD_MASK;
	x->usbsts = sr_u32(in);
	x->dnctrl = sr_u32(in);
	x->config = sr_u32(in);
	x->dcbaap = sr_u64(in);
	x->crcr_latch = sr_u64(in);
	x->crcr_lo_taken = sr_bool(in);
	x->cr_deq = sr_u64(in);
	x->cr_ccs = sr_bool(in);
	x->cr_running = sr_bool(in);
	x->iman = sr_u32(in);
	x->imod = sr_u32(in);
	x->erstsz = sr_u32(in) & 0xffff;
	x->erstba = sr_u64(in);
	x->erdp = sr_u64(in);
	x->er_valid = sr_bool(in);
	x->er_seg = sr_u32(in);
	x->er_left = sr_u32(in);
	x->er_enq = sr_u64(in);
	x->er_pcs = sr_bool(in);
	uint32_t mf = sr_u32(in) & 0x3fff;
	clock_gettime(CLOCK_MONOTONIC, &x->mf_start);
	int64_t ns = x->mf_start.tv_nsec - (int64_t)mf * 125000;   /* MFINDEX goes on from where it was */
	while (ns < 0) {
		ns += 1000000000;
		x->mf_start.tv_sec--;
	}
	x->mf_start.tv_nsec = ns;
	for (int p = 1; p <= NPORTS; p++) {
		x->port[p].portsc = sr_u32(in);
		x->port[p].pmsc = sr_u32(in);
	}
	bool bad = false;
	for (int s = 1; s <= MAX_SLOTS; s++) {
		x->slot[s].enabled = sr_bool(in);
		x->slot[s].port = sr_u8(in);
		bad |= x->slot[s].port > NPORTS;
		for (int i = 1; i < 32; i++) {
			x->slot[s].ep[i].deq = sr_u64(in);
			x->slot[s].ep[i].dcs = sr_bool(in);
			x->slot[s].ep[i].state = sr_u8(in);
			bad |= x->slot[s].ep[i].state > EP_STOPPED;
		}
	}
	int n = sr_u8(in);
	bad |= n != x->ndevs;
	for (int i = 0; i < n && !bad; i++) {
		char name[32];
		bool null;
		const struct usb_devemu *ue = x->devs[i].ue;
		bad |= !sr_str(in, name, sizeof(name), &null) || null || strcmp(name, ue->ue_name) || sr_u8(in) != x->devs[i].port;
		void *sc = scratch ? ue->ue_init() : x->devs[i].sc;
		bad |= bad || !sc || !ue->ue_load(sc, in);
		if (scratch && sc)
			ue->ue_free(sc);
	}
	if (x->er_valid && x->er_seg < x->erstsz)
		x->er_valid = vm_map_gpa(x->ctx, x->er_enq, (size_t)x->er_left * 16) != NULL;
	else
		x->er_valid = false;
	return !bad && sr_ok(in);
}

static int xhci_restore(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	struct xhci *x = pi->pi_arg;
	if (version != 1) {
		snprintf(err, errlen, "%s: state version %u, this hyve reads 1", pi->pi_name, version);
		return -1;
	}
	/* Checked on a copy first: a refused state leaves the controller as it was. */
	struct xhci *copy = malloc(sizeof(*copy));
	struct snap_rd probe = *in;
	pthread_mutex_lock(&x->lock);
	bool ok = false;
	if (copy) {
		memcpy(copy, x, sizeof(*copy));
		ok = load_state(copy, &probe, true);
		free(copy);
	}
	if (ok) {
		load_state(x, in, false);
		update_intx(x);
	}
	pthread_mutex_unlock(&x->lock);
	if (!ok) {
		snprintf(err, errlen, "%s: saved state does not match this controller (its USB devices, ports, "
		         "or values out of range)", pi->pi_name);
		return -1;
	}
	return 0;
}

static const char *const xhci_options[] = {
	"slot.1.device", "slot.2.device", "slot.3.device", "slot.4.device",
	"slot.5.device", "slot.6.device", "slot.7.device", "slot.8.device", NULL,
};

static const struct pci_devemu pci_de_xhci = {
	.pe_emu = "xhci",
	.pe_help = "xHCI USB controller with USB devices: -s N,xhci,tablet",
	.pe_options = xhci_options,
	.pe_legacy_config = xhci_legacy_config,
	.pe_init = xhci_init,
	.pe_barwrite = xhci_barwrite,
	.pe_barread = xhci_barread,
	.pe_snapshot_version = 1,
	.pe_snapshot = xhci_snapshot,
	.pe_restore = xhci_restore,
	.pe_pause = xhci_pause,
	.pe_resume = xhci_resume,
};
PCI_EMUL_REGISTER(pci_de_xhci)
