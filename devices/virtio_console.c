/*
 * virtio console (virtio 1.2, section 5.3) with multiple ports:
 *
 *   -s N,virtio-console,NAME=PATH[,NAME2=PATH2,...][,legacy=false]
 *
 * As in bhyve, every option NAME=PATH except legacy= is a named port whose
 * backend is a unix stream socket at PATH that hyve listens on, one client
 * at a time; PATH may also be any chardev backend but stdio (chardev.h):
 * sock=PATH, tcp=ADDR:PORT, file=PATH (output only), or a tty (a bare PATH
 * naming a character device, bhyve's nmdm).  NAME is what the guest is
 * told in PORT_NAME (a Linux guest
 * shows it in /sys/class/virtio-ports/vportXpN/name and udev links
 * /dev/virtio-ports/NAME), e.g. org.qemu.guest_agent.0=/run/vm/qga.sock:
 * 1..63 characters from A-Z a-z 0-9 . _ - (not "." or ".."), at most 16
 * ports, names and paths distinct.
 *
 * Port ids follow the option order: the Kth port given is virtio port id K
 * (1-based).  The order has to live in the keys, because the configuration
 * tree does not keep insertion order (dumps and checkpoints sort it), so
 * -s writes bhyve_config(5)'s form, pci.B.S.F.port.K.name and .port.K.path
 * with K = id - 1.  The keys pci.B.S.F.portN=PATH of older hyve versions
 * (-k files, checkpoints) still work: a port named "portN" with id N.
 * Socket files: chardev.h (a stale one is replaced, removed at exit).
 *
 * The device offers VIRTIO_CONSOLE_F_MULTIPORT only.  Queues 0/1 belong to
 * port 0, which hyve never adds: what a driver sends there is dropped.  The
 * control queues (2: device->driver, 3: driver->device) carry the
 * handshake: the driver's DEVICE_READY makes the device announce every
 * port (PORT_ADD); after the driver's PORT_READY for a port the device
 * sends its PORT_NAME and, while the backend is connected (a client of a
 * server; file= and ttys always), PORT_OPEN 1 (PORT_OPEN 0 when the client
 * goes away).  The driver's PORT_OPEN says whether the guest has the port
 * open.
 *
 * Data: bytes from the client go into the port's receive queue, but only
 * while the guest has the port open and has posted buffers; otherwise the
 * backend's input is turned off and the bytes wait in the socket (the
 * guest's kick or PORT_OPEN resumes reading), so nothing is lost.
 * (A client that hangs up meanwhile is noticed when the next one connects.)
 * What the guest transmits goes to the client; with no client connected it
 * is dropped, like a serial line with nothing attached.  A client that
 * does not read throttles the guest (its buffers are returned only once
 * sent).
 *
 * Threads: kicks (vtcon_notify) arrive with vs_mtx held, on a vCPU thread
 * or, when the transport uses an ioeventfd, on the main thread.  They
 * handle the driver's control messages and fill the control receive queue
 * (guest memory only), and hand everything that touches the backend to
 * vtcon_work with mevent_call().  That is right on either thread:
 * mevent_call() only appends to the loop's call queue (its lock is never
 * held while a queued call runs) and wakes the loop, so vtcon_work runs
 * later from the main loop, never nested in the kick that holds vs_mtx
 * (calling it directly from a main-thread kick would deadlock on that
 * non-recursive lock).  Backend I/O runs on the main thread (mevent), also
 * under vs_mtx, which therefore protects all of this device's state.
 * Control messages to the driver are not queued: each port keeps "to send"
 * flags (add, name, open), so the backlog is bounded whatever the guest
 * and the clients do.  Connections are host-side: a checkpoint keeps
 * the driver's view, and a restored driver told "open" hears the close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "../core/config.h"
#include "../core/log.h"
#include "../core/mevent.h"
#include "../core/snapshot.h"
#include "chardev.h"
#include "pci_emul.h"
#include "virtio.h"

#define VTCON_MAXPORTS   16      /* bhyve's limit */
#define VTCON_NAMEMAX    63      /* longest port name */
#define VTCON_DATA_QSIZE 128
#define VTCON_CTRL_QSIZE 64
#define VTCON_MAXIOV     64      /* buffers per chain */
#define VTCON_BUDGET     256     /* chains per port per main-loop pass */
#define VTCON_STATE_VERSION 1

#define VTCON_F_SIZE       (1ULL << 0)
#define VTCON_F_MULTIPORT  (1ULL << 1)

/* Control events (5.3.6.2) */
#define VTCON_DEVICE_READY  0
#define VTCON_PORT_ADD      1
#define VTCON_PORT_REMOVE   2
#define VTCON_PORT_READY    3
#define VTCON_CONSOLE_PORT  4
#define VTCON_RESIZE        5
#define VTCON_PORT_OPEN     6
#define VTCON_PORT_NAME     7

#define VTCON_CTRL_RXQ 2   /* device -> driver */
#define VTCON_CTRL_TXQ 3   /* driver -> device */

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio structures are little-endian");

struct vtcon_control {
	uint32_t id;
	uint16_t event;
	uint16_t value;
} __attribute__((packed));

struct vtcon_config {
	uint16_t cols;
	uint16_t rows;
	uint32_t max_nr_ports;
	uint32_t emerg_wr;
} __attribute__((packed));

struct vtcon_softc;

struct vtcon_port {
	struct vtcon_softc *sc;
	unsigned id;                  /* virtio port id: position in the option list */
	char name[VTCON_NAMEMAX + 1];
	char cdname[96];              /* "DEVICE: NAME", for the backend's messages */
	struct chardev *cd;
	bool connected;               /* the backend takes output (a client is connected...) */
	bool rx_stalled;              /* backend input off until the guest can take bytes */
	bool tx_waiting;              /* the backend was full: its writable resumes */
	/* Driver-side state; cleared by a device reset. */
	bool ready;                   /* PORT_READY 1 received */
	bool guest_open;              /* driver said PORT_OPEN 1 */
	bool pend_add, pend_name;     /* control messages still to send */
	bool told_open;               /* the driver was last told PORT_OPEN 1 */
	bool pend_close;              /* ...and must hear PORT_OPEN 0 before the next 1 */
	/* The transmit chain being written to the client (main thread). */
	bool tx_active;
	uint16_t tx_idx;
	int tx_niov;
	uint32_t tx_len, tx_off;
	uint32_t tx_skip;             /* restored: bytes of the first chain already sent */
	struct iovec tx_iov[VTCON_MAXIOV];
};

struct vtcon_softc {
	struct virtio_softc vs;       /* first: the transport finds it via pi_arg */
	struct virtio_consts consts;  /* per instance: the queue count depends on the ports */
	struct vqueue_info *queues;
	int nvq;
	struct vtcon_config cfg;
	int nports;
	struct vtcon_port ports[VTCON_MAXPORTS];
	bool device_ready;            /* DEVICE_READY 1 received */
	bool paused;                  /* checkpoint: touch neither guest memory nor backends */
	bool work_queued;             /* vtcon_work is in the main thread's call queue */
	bool call_failed_logged;
	struct iovec iov[VTCON_MAXIOV];   /* scratch for vq_getchain (vs_mtx) */
};

/* ---- queues and ports ---- */

static int vtcon_rxq(const struct vtcon_port *p) { return 2 + 2 * (int)p->id; }
static int vtcon_txq(const struct vtcon_port *p) { return 3 + 2 * (int)p->id; }

static struct vtcon_port *vtcon_port_by_id(struct vtcon_softc *sc, uint32_t id)
{
	for (int i = 0; i < sc->nports; i++)
		if (sc->ports[i].id == id)
			return &sc->ports[i];
	return NULL;
}

/* Which port's data queue is q (NULL: a control queue or port 0). */
static struct vtcon_port *vtcon_port_by_queue(struct vtcon_softc *sc, int q, bool *is_rx)
{
	if (q < 4)
		return NULL;
	*is_rx = (q & 1) == 0;
	return vtcon_port_by_id(sc, (uint32_t)(q - 2) / 2);
}

/* The driver is running and speaks the multiport protocol. */
static bool vtcon_live(struct vtcon_softc *sc)
{
	return !sc->paused && !sc->vs.vs_broken && (sc->vs.vs_status & VIRTIO_S_DRIVER_OK) &&
	       vi_negotiated(&sc->vs, VTCON_F_MULTIPORT);
}

static void vtcon_work(void *arg);

/* vs_mtx held: have the main thread run vtcon_work (once per batch of requests). */
static void vtcon_schedule(struct vtcon_softc *sc)
{
	if (sc->work_queued)
		return;
	if (mevent_call(vtcon_work, sc) == 0) {
		sc->work_queued = true;
	} else if (!sc->call_failed_logged) {
		sc->call_failed_logged = true;
		log_warn("%s: cannot queue backend work (out of memory)", sc->vs.vs_name);
	}
}

/* ---- control messages to the driver ---- */

/* One message into the control receive queue: 1 sent, 0 no buffer, -1 guest error. */
static int vtcon_ctrl_send(struct vtcon_softc *sc, uint32_t id, uint16_t event, uint16_t value,
                           const char *extra)
{
	struct vqueue_info *vq = &sc->queues[VTCON_CTRL_RXQ];
	struct vq_chain ch;
	int n = vq_getchain(vq, sc->iov, VTCON_MAXIOV, &ch);
	if (n <= 0)
		return n;
	if (ch.readable) {
		vi_error(&sc->vs, "control receive buffer is device-readable");
		return -1;
	}
	struct vtcon_control m = { .id = id, .event = event, .value = value };
	if (ch.wlen < sizeof(m)) {
		vi_error(&sc->vs, "control receive buffer of %u bytes (a message needs %zu)", ch.wlen, sizeof(m));
		return -1;
	}
	size_t len = buf_to_iov(&m, sizeof(m), sc->iov, n, 0);
	if (extra) {
		/* The name fills the rest of the message; a smaller buffer truncates it. */
		size_t el = strlen(extra);
		if (el > ch.wlen - sizeof(m))
			el = ch.wlen - sizeof(m);
		len += buf_to_iov(extra, el, sc->iov, n, sizeof(m));
	}
	vq_relchain(vq, ch.idx, (uint32_t)len);
	return 1;
}

/*
 * vs_mtx held.  Send what the ports have pending, in protocol order: every
 * PORT_ADD first (the driver answers each with PORT_READY), then per ready
 * port its name and its host-side open state.  Stops when the driver has
 * no control buffers; its next kick on queue 2 continues.
 */
static void vtcon_ctrl_flush(struct vtcon_softc *sc)
{
	if (!vtcon_live(sc) || !vq_ring_ready(&sc->queues[VTCON_CTRL_RXQ]))
		return;
	int sent = 0, r = 1;
	for (int i = 0; i < sc->nports && r > 0; i++) {
		struct vtcon_port *p = &sc->ports[i];
		if (p->pend_add && (r = vtcon_ctrl_send(sc, p->id, VTCON_PORT_ADD, 0, NULL)) > 0) {
			p->pend_add = false;
			sent++;
		}
	}
	for (int i = 0; i < sc->nports && r > 0; i++) {
		struct vtcon_port *p = &sc->ports[i];
		if (!p->ready)
			continue;
		if (p->pend_name && (r = vtcon_ctrl_send(sc, p->id, VTCON_PORT_NAME, 0, p->name)) > 0) {
			p->pend_name = false;
			sent++;
		}
		/* Host side: every connection the driver hears of is closed before the next. */
		if (r > 0 && p->told_open && (p->pend_close || !p->connected) &&
		    (r = vtcon_ctrl_send(sc, p->id, VTCON_PORT_OPEN, 0, NULL)) > 0) {
			p->told_open = p->pend_close = false;
			sent++;
		}
		if (r > 0 && !p->told_open && p->connected &&
		    (r = vtcon_ctrl_send(sc, p->id, VTCON_PORT_OPEN, 1, NULL)) > 0) {
			p->told_open = true;
			sent++;
		}
	}
	if (sent)
		vq_endchains(&sc->queues[VTCON_CTRL_RXQ], false);
}

/* vs_mtx held: a control message from the driver. */
static void vtcon_ctrl_handle(struct vtcon_softc *sc, const struct vtcon_control *m)
{
	if (m->event == VTCON_DEVICE_READY) {
		if (m->value != 1) {
			log_debug("%s: driver failed to initialize (DEVICE_READY %u)", sc->vs.vs_name, m->value);
			return;
		}
		/* A repeated DEVICE_READY announces the ports again; duplicates are the driver's to ignore. */
		sc->device_ready = true;
		for (int i = 0; i < sc->nports; i++)
			sc->ports[i].pend_add = true;
		return;
	}
	struct vtcon_port *p = vtcon_port_by_id(sc, m->id);
	if (!p) {
		log_debug("%s: control event %u for unknown port %u", sc->vs.vs_name, m->event, m->id);
		return;
	}
	switch (m->event) {
	case VTCON_PORT_READY:
		if (m->value != 1) {
			log_debug("%s: %s: driver could not add the port", sc->vs.vs_name, p->name);
			p->ready = false;
			break;
		}
		log_debug("%s: %s: driver added the port", sc->vs.vs_name, p->name);
		p->ready = true;
		p->pend_name = true;
		p->told_open = p->pend_close = false;   /* a new port: its state is sent afresh */
		break;
	case VTCON_PORT_OPEN:
		p->guest_open = m->value != 0;
		log_debug("%s: %s: guest %s the port", sc->vs.vs_name, p->name, p->guest_open ? "opened" : "closed");
		if (p->guest_open && p->connected && p->rx_stalled)
			vtcon_schedule(sc);   /* bytes may be waiting in the backend */
		break;
	default:
		log_debug("%s: %s: ignoring control event %u", sc->vs.vs_name, p->name, m->event);
		break;
	}
}

/* vs_mtx held (a kick): the driver's control transmit queue. */
static void vtcon_ctrl_tx(struct vtcon_softc *sc, struct vqueue_info *vq)
{
	struct vq_chain ch;
	int n;
	while ((n = vq_getchain(vq, sc->iov, VTCON_MAXIOV, &ch)) > 0) {
		if (ch.writable) {
			vi_error(&sc->vs, "control transmit buffer is device-writable");
			return;
		}
		struct vtcon_control m;
		if (ch.rlen >= sizeof(m)) {
			iov_to_buf(sc->iov, n, 0, &m, sizeof(m));
			vtcon_ctrl_handle(sc, &m);
		} else {
			log_debug("%s: short control message (%u bytes) ignored", sc->vs.vs_name, ch.rlen);
		}
		vq_relchain(vq, ch.idx, 0);
	}
	vq_endchains(vq, true);
	vtcon_ctrl_flush(sc);
}

/* ---- backend I/O (main thread, vs_mtx held unless noted) ---- */

static void vtcon_rx_stall(struct vtcon_port *p)
{
	if (!p->rx_stalled && p->connected) {
		p->rx_stalled = true;
		chardev_set_rx(p->cd, false);
	}
}

/* Can the guest take bytes for this port now? */
static bool vtcon_rx_possible(struct vtcon_port *p)
{
	struct vtcon_softc *sc = p->sc;
	return vtcon_live(sc) && p->ready && p->guest_open && vq_ring_ready(&sc->queues[vtcon_rxq(p)]);
}

/* Backend -> guest: read straight into the receive buffers. */
static void vtcon_rx(struct vtcon_port *p)
{
	struct vtcon_softc *sc = p->sc;
	struct vqueue_info *vq = &sc->queues[vtcon_rxq(p)];
	if (!vtcon_rx_possible(p)) {
		vtcon_rx_stall(p);
		return;
	}
	bool used = false;
	for (int budget = VTCON_BUDGET; budget > 0; budget--) {
		struct vq_chain ch;
		int n = vq_getchain(vq, sc->iov, VTCON_MAXIOV, &ch);
		if (n < 0)
			break;
		if (n == 0) {
			vtcon_rx_stall(p);   /* the driver's next kick resumes */
			break;
		}
		if (ch.readable) {
			vi_error(&sc->vs, "%s: receive buffer is device-readable", p->name);
			break;
		}
		if (ch.wlen == 0) {
			/* Nothing fits. */
			vq_relchain(vq, ch.idx, 0);
			used = true;
			continue;
		}
		ssize_t r = chardev_readv(p->cd, sc->iov, n);
		if (r > 0) {
			vq_relchain(vq, ch.idx, (uint32_t)r);
			used = true;
			continue;
		}
		/* Nothing waiting, or the input ended (a client's disconnected follows). */
		vq_retchain(vq);
		break;
	}
	if (used)
		vq_endchains(vq, false);
}

static void vtcon_cd_readable(void *arg)
{
	struct vtcon_port *p = arg;
	pthread_mutex_lock(&p->sc->vs.vs_mtx);
	vtcon_rx(p);
	pthread_mutex_unlock(&p->sc->vs.vs_mtx);
}

/* Resume reading a stalled backend if the guest can take bytes again. */
static void vtcon_rx_resume(struct vtcon_port *p)
{
	if (!p->connected || !p->rx_stalled || !vtcon_rx_possible(p))
		return;
	if (!vq_has_descs(&p->sc->queues[vtcon_rxq(p)]))
		return;
	p->rx_stalled = false;
	chardev_set_rx(p->cd, true);
}

/* Guest -> backend.  Chains are returned once sent (or dropped: no client). */
static void vtcon_tx(struct vtcon_port *p)
{
	struct vtcon_softc *sc = p->sc;
	struct vqueue_info *vq = &sc->queues[vtcon_txq(p)];
	if (!vtcon_live(sc) || !vq_ring_ready(vq) || p->tx_waiting)
		return;
	bool used = false;
	int budget = VTCON_BUDGET;
	for (;;) {
		if (!p->tx_active) {
			if (budget-- == 0) {
				vtcon_schedule(sc);   /* let other events in; continue later */
				break;
			}
			struct vq_chain ch;
			int n = vq_getchain(vq, p->tx_iov, VTCON_MAXIOV, &ch);
			if (n <= 0)
				break;
			if (ch.writable) {
				vi_error(&sc->vs, "%s: transmit buffer is device-writable", p->name);
				break;
			}
			p->tx_active = true;
			p->tx_idx = ch.idx;
			p->tx_niov = n;
			p->tx_len = ch.rlen;
			p->tx_off = p->tx_skip < ch.rlen ? p->tx_skip : ch.rlen;
			p->tx_skip = 0;
		}
		if (p->connected && p->tx_off < p->tx_len) {
			struct iovec part[VTCON_MAXIOV];
			int k = iov_slice(p->tx_iov, p->tx_niov, p->tx_off, p->tx_len - p->tx_off, part, VTCON_MAXIOV);
			ssize_t w = k > 0 ? chardev_writev(p->cd, part, k) : -1;
			if (w > 0) {
				p->tx_off += (uint32_t)w;
				continue;
			}
			if (w == 0) {
				p->tx_waiting = true;   /* writable resumes */
				break;
			}
			/* -1: nowhere to write (disconnected follows): the chain is dropped */
		}
		/* Sent, empty, or nobody to send to. */
		vq_relchain(vq, p->tx_idx, 0);
		p->tx_active = false;
		used = true;
	}
	if (used)
		vq_endchains(vq, true);
}

static void vtcon_cd_writable(void *arg)
{
	struct vtcon_port *p = arg;
	pthread_mutex_lock(&p->sc->vs.vs_mtx);
	p->tx_waiting = false;
	vtcon_tx(p);
	pthread_mutex_unlock(&p->sc->vs.vs_mtx);
}

static void vtcon_cd_connected(void *arg)
{
	struct vtcon_port *p = arg;
	struct vtcon_softc *sc = p->sc;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	p->connected = true;
	p->rx_stalled = p->tx_waiting = false;
	log_debug("%s: %s: client connected", sc->vs.vs_name, p->name);
	if (p->ready)
		vtcon_ctrl_flush(sc);
	/* Anything the guest queued while nobody was connected was dropped already. */
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

static void vtcon_cd_disconnected(void *arg)
{
	struct vtcon_port *p = arg;
	struct vtcon_softc *sc = p->sc;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	p->connected = false;
	p->tx_waiting = false;
	log_debug("%s: %s: backend disconnected", sc->vs.vs_name, p->name);
	if (p->told_open) {
		p->pend_close = true;
		vtcon_ctrl_flush(sc);
	}
	/* A partly sent chain is finished (dropped) by the next transmit pass. */
	vtcon_schedule(sc);
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

static const struct chardev_ops vtcon_cd_ops = {
	.readable = vtcon_cd_readable,
	.writable = vtcon_cd_writable,
	.connected = vtcon_cd_connected,
	.disconnected = vtcon_cd_disconnected,
};

/* Main thread: backend work queued by kicks, resumes and budgets. */
static void vtcon_work(void *arg)
{
	struct vtcon_softc *sc = arg;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	sc->work_queued = false;
	if (!sc->paused) {
		for (int i = 0; i < sc->nports; i++) {
			vtcon_tx(&sc->ports[i]);
			vtcon_rx_resume(&sc->ports[i]);
		}
		vtcon_ctrl_flush(sc);
	}
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

/* ---- transport hooks ---- */

/* vs_mtx held; a vCPU thread or the main thread (ioeventfd), see "Threads" above. */
static void vtcon_notify(void *arg, struct vqueue_info *vq)
{
	struct vtcon_softc *sc = arg;
	int q = vq->vq_num;
	/* (While paused for a checkpoint the transport does not call this.) */
	if (q == VTCON_CTRL_TXQ) {
		vtcon_ctrl_tx(sc, vq);
		return;
	}
	if (q == VTCON_CTRL_RXQ) {
		vtcon_ctrl_flush(sc);
		return;
	}
	bool is_rx = false;
	struct vtcon_port *p = vtcon_port_by_queue(sc, q, &is_rx);
	if (p) {
		/* New receive buffers matter only to a stalled client; transmit always goes to the main thread. */
		if (!is_rx || (p->connected && p->rx_stalled))
			vtcon_schedule(sc);
		return;
	}
	if (q == 1) {
		/* Port 0 has no backend: give its transmit buffers back. */
		struct vq_chain ch;
		int n;
		while ((n = vq_getchain(vq, sc->iov, VTCON_MAXIOV, &ch)) > 0)
			vq_relchain(vq, ch.idx, 0);
		vq_endchains(vq, true);
	}
	/* Queue 0 (port 0 receive), and queues of unconfigured ids: never filled. */
}

/* vs_mtx held.  The driver's view of every port starts over; clients stay. */
static void vtcon_reset(void *arg)
{
	struct vtcon_softc *sc = arg;
	sc->device_ready = false;
	for (int i = 0; i < sc->nports; i++) {
		struct vtcon_port *p = &sc->ports[i];
		p->ready = p->guest_open = false;
		p->pend_add = p->pend_name = false;
		p->told_open = p->pend_close = false;
		p->tx_active = false;   /* its ring is gone: nothing to return */
		p->tx_skip = 0;
		/* A waiting client stays stalled until the new driver opens the port. */
	}
}

static int vtcon_cfgread(void *arg, uint32_t off, int size, uint32_t *val)
{
	struct vtcon_softc *sc = arg;
	if (off + (uint32_t)size > sizeof(sc->cfg))
		return -1;
	*val = 0;
	memcpy(val, (uint8_t *)&sc->cfg + off, (size_t)size);
	return 0;
}

/* Checkpoint: what the transport does not save (it has the rings). */
static int vtcon_snapshot(void *arg, struct snap_buf *out)
{
	struct vtcon_softc *sc = arg;
	sb_u32(out, VTCON_STATE_VERSION);
	sb_u32(out, (uint32_t)sc->nports);
	sb_bool(out, sc->device_ready);
	for (int i = 0; i < sc->nports; i++) {
		struct vtcon_port *p = &sc->ports[i];
		sb_u32(out, p->id);
		sb_bool(out, p->ready);
		sb_bool(out, p->guest_open);
		sb_bool(out, p->pend_add);
		sb_bool(out, p->pend_name);
		sb_bool(out, p->told_open);
		sb_bool(out, p->pend_close);
		/* A chain taken but not fully sent is the last one taken from its queue. */
		sb_bool(out, p->tx_active);
		sb_u32(out, p->tx_active ? p->tx_off : p->tx_skip);
	}
	return out->failed ? -1 : 0;
}

static int vtcon_restore(void *arg, struct snap_rd *in, char *err, size_t errlen)
{
	struct vtcon_softc *sc = arg;
	uint32_t ver = sr_u32(in), n = sr_u32(in);
	if (!sr_ok(in) || ver != VTCON_STATE_VERSION) {
		snprintf(err, errlen, "virtio-console state version %u unknown", ver);
		return -1;
	}
	if (n != (uint32_t)sc->nports) {
		snprintf(err, errlen, "checkpoint has %u console ports, this VM %d", n, sc->nports);
		return -1;
	}
	bool device_ready = sr_bool(in);
	struct { bool ready, gopen, padd, pname, told, pclose, txa; uint32_t txoff; } st[VTCON_MAXPORTS];
	for (int i = 0; i < sc->nports; i++) {
		uint32_t id = sr_u32(in);
		st[i].ready = sr_bool(in);
		st[i].gopen = sr_bool(in);
		st[i].padd = sr_bool(in);
		st[i].pname = sr_bool(in);
		st[i].told = sr_bool(in);
		st[i].pclose = sr_bool(in);
		st[i].txa = sr_bool(in);
		st[i].txoff = sr_u32(in);
		if (sr_ok(in) && id != sc->ports[i].id) {
			snprintf(err, errlen, "checkpoint port %d has id %u, this VM's %s has %u", i, id,
			         sc->ports[i].name, sc->ports[i].id);
			return -1;
		}
	}
	if (!sr_done(in)) {
		snprintf(err, errlen, "virtio-console state truncated or too long");
		return -1;
	}
	sc->device_ready = device_ready;
	for (int i = 0; i < sc->nports; i++) {
		struct vtcon_port *p = &sc->ports[i];
		struct vqueue_info *txq = &sc->queues[vtcon_txq(p)];
		p->ready = st[i].ready;
		p->guest_open = st[i].gopen;
		p->pend_add = st[i].padd;
		p->pend_name = st[i].pname;
		/* The saved process's client is gone: a driver told "open" hears the close. */
		p->told_open = st[i].told;
		p->pend_close = st[i].pclose || st[i].told;
		p->tx_active = false;
		p->tx_skip = 0;
		if (st[i].txa && vq_ring_ready(txq)) {
			/* Take that chain again and skip what the client already got. */
			vq_retchain(txq);
			p->tx_skip = st[i].txoff;
		}
	}
	vtcon_schedule(sc);
	return 0;
}

static void vtcon_pause(void *arg)
{
	struct vtcon_softc *sc = arg;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	sc->paused = true;   /* every path into guest memory checks it under this lock */
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

static void vtcon_resume(void *arg)
{
	struct vtcon_softc *sc = arg;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	sc->paused = false;
	vtcon_schedule(sc);
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

/* ---- setup ---- */

#define VTCON_RULES "1..63 characters from A-Z a-z 0-9 . _ -"
#define VTCON_PATH_HINT "expected NAME=/path/to/socket (at most 107 bytes), NAME=tcp=ADDR:PORT, NAME=file=PATH or NAME=/dev/TTY"
_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) == 108, "VTCON_PATH_HINT's 107");

/* A port's backend: 0 if usable, else -1 and why not (one line) in why. */
static int vtcon_path_problem(const char *path, char *why, size_t len)
{
	struct chardev_spec ps;
	if (!*path)
		snprintf(why, len, "empty socket path (%s)", VTCON_PATH_HINT);
	else if (chardev_parse(path, CHARDEV_F_BARE_SOCK, &ps, why, len) == 0)
		return 0;
	else if (ps.bare)
		snprintf(why, len, "socket path too long (%s)", VTCON_PATH_HINT);
	return -1;
}

/*
 * A port name: NULL if usable, else why not.  The character set is the
 * config tree's key alphabet (so a name never needs quoting anywhere) and
 * keeps udev's /dev/virtio-ports/NAME link a plain file name.
 */
static const char *vtcon_name_problem(const char *name)
{
	size_t n = strlen(name);
	if (n == 0)
		return "empty";
	if (n > VTCON_NAMEMAX)
		return "too long";
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return "may not be . or ..";
	for (const char *c = name; *c; c++)
		if (!(*c >= 'a' && *c <= 'z') && !(*c >= 'A' && *c <= 'Z') && !(*c >= '0' && *c <= '9') &&
		    !strchr("._-", *c))
			return "bad character";
	return NULL;
}

/* A user-supplied string, shortened and made printable, for one error line. */
static const char *vtcon_quote(const char *s, char *buf, size_t len)
{
	size_t i = 0;
	for (; s[i] && i + 4 < len; i++)
		buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	if (s[i])
		buf[i++] = '.', buf[i++] = '.', buf[i++] = '.';   /* i + 4 < len left room */
	buf[i] = '\0';
	return buf;
}


/* Options of this model that are not ports (-s NAME=... with these names sets the option). */
static const char *const vtcon_nonport[] = { "legacy", NULL };

static bool vtcon_is_nonport(const char *opt)
{
	for (const char *const *o = vtcon_nonport; *o; o++)
		if (!strcmp(*o, opt))
			return true;
	return false;
}

/* A port as configured; index id - 1 in vtcon_read_ports' table. */
struct vtcon_portcfg {
	const char *name, *path;      /* path NULL: no port with this id */
	char key[96];                 /* where it came from, for messages */
	char oldname[8];              /* "portN" of an old-style key */
};

/*
 * Read and check the ports of the device at cfgpath: 0, or -1 with one
 * line in err.  Port id K+1 comes from pci.B.S.F.port.K.{name,path}, or
 * from the old key pci.B.S.F.port<K+1> (named "port<K+1>"); both for one
 * id is an error.  Everything is checked here so that a bad -s is
 * reported while parsing and a bad -k/-o key before the VM starts.
 */
static int vtcon_read_ports(const char *cfgpath, struct vtcon_portcfg cfg[VTCON_MAXPORTS], char *err,
                            size_t errlen)
{
	char q[VTCON_NAMEMAX + 8];
	memset(cfg, 0, VTCON_MAXPORTS * sizeof(*cfg));
	for (unsigned k = 0; k < VTCON_MAXPORTS; k++) {
		struct vtcon_portcfg *c = &cfg[k];
		const char *name = get_config_valuef("%s.port.%u.name", cfgpath, k);
		const char *path = get_config_valuef("%s.port.%u.path", cfgpath, k);
		const char *old = get_config_valuef("%s.port%u", cfgpath, k + 1);
		if (name || path) {
			snprintf(c->key, sizeof(c->key), "%s.port.%u", cfgpath, k);
			if (old) {
				snprintf(err, errlen, "config: %s and %s.port%u both give virtio port id %u", c->key,
				         cfgpath, k + 1, k + 1);
				return -1;
			}
			if (!name || !path) {
				snprintf(err, errlen, "config: %s: .%s set but no .%s (a port needs both)", c->key,
				         name ? "name" : "path", name ? "path" : "name");
				return -1;
			}
		} else if (old) {
			snprintf(c->key, sizeof(c->key), "%s.port%u", cfgpath, k + 1);
			snprintf(c->oldname, sizeof(c->oldname), "port%u", k + 1);
			name = c->oldname;
			path = old;
		} else {
			continue;
		}
		const char *why = vtcon_name_problem(name);
		if (why) {
			snprintf(err, errlen, "config: %s: port name '%s': %s (%s)", c->key, vtcon_quote(name, q, sizeof(q)),
			         why, VTCON_RULES);
			return -1;
		}
		char pwhy[320];
		if (vtcon_path_problem(path, pwhy, sizeof(pwhy))) {
			snprintf(err, errlen, "config: %s (port '%s'): %s", c->key, name, pwhy);
			return -1;
		}
		for (unsigned j = 0; j < k; j++) {
			if (!cfg[j].path)
				continue;
			if (!strcmp(cfg[j].name, name)) {
				snprintf(err, errlen, "config: %s: port name '%s' given twice (also %s)", c->key, name,
				         cfg[j].key);
				return -1;
			}
			if (!strcmp(cfg[j].path, path)) {
				snprintf(err, errlen, "config: %s (port '%s'): %s is also the socket of %s", c->key, name,
				         vtcon_quote(path, q, sizeof(q)), cfg[j].name);
				return -1;
			}
		}
		c->name = name;
		c->path = path;
	}
	return 0;
}

/*
 * -s N,virtio-console,NAME=PATH,...: ports get ids in the order given,
 * written as port.K.name/port.K.path (see the head comment for why).
 */
static int vtcon_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	char *copy = strdup(opts), *save = NULL;
	char q[VTCON_NAMEMAX + 8];
	unsigned k = 0;
	int rc = 0;
	if (!copy)
		return -1;
	for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (eq)
			*eq = '\0';
		if (vtcon_is_nonport(tok)) {
			if (set_config_valuef(eq ? eq + 1 : "true", "%s.%s", cfgpath, tok)) {
				snprintf(err, errlen, "-s: bad option '%s'", tok);
				rc = -1;
			}
			continue;
		}
		const char *why = vtcon_name_problem(tok);
		if (why) {
			snprintf(err, errlen, "config: %s: port name '%s': %s (ports are NAME=PATH, NAME %s)", cfgpath,
			         vtcon_quote(tok, q, sizeof(q)), why, VTCON_RULES);
			rc = -1;
		} else if (!eq) {
			snprintf(err, errlen, "config: %s: port '%s' has no socket path (%s)", cfgpath, tok,
			         VTCON_PATH_HINT);
			rc = -1;
		} else if (k == VTCON_MAXPORTS) {
			snprintf(err, errlen, "config: %s: too many ports at '%s' (at most %d)", cfgpath, tok,
			         VTCON_MAXPORTS);
			rc = -1;
		} else if (set_config_valuef(tok, "%s.port.%u.name", cfgpath, k) ||
		           set_config_valuef(eq + 1, "%s.port.%u.path", cfgpath, k)) {
			snprintf(err, errlen, "config: %s: cannot store port '%s'", cfgpath, tok);
			rc = -1;
		} else {
			k++;
		}
	}
	free(copy);
	if (rc)
		return rc;
	struct vtcon_portcfg cfg[VTCON_MAXPORTS];
	return vtcon_read_ports(cfgpath, cfg, err, errlen);
}

static int vtcon_init(struct pci_devinst *pi, const char *cfgpath)
{
	char key[128], err[512];
	struct vtcon_portcfg cfg[VTCON_MAXPORTS];
	if (vtcon_read_ports(cfgpath, cfg, err, sizeof(err)))
		fatal("%s", err);
	struct vtcon_softc *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -1;
	sc->vs.vs_pi = pi;
	snprintf(sc->vs.vs_name, sizeof(sc->vs.vs_name), "%s", pi->pi_name);
	unsigned maxid = 0;
	/* By id, so the checkpoint's per-port records have one order for one configuration. */
	for (unsigned k = 0; k < VTCON_MAXPORTS; k++) {
		if (!cfg[k].path)
			continue;
		struct vtcon_port *p = &sc->ports[sc->nports++];
		p->sc = sc;
		p->id = k + 1;
		snprintf(p->name, sizeof(p->name), "%s", cfg[k].name);   /* length checked */
		maxid = k + 1;
	}
	bool legacy = get_config_bool_default((snprintf(key, sizeof(key), "%s.legacy", cfgpath), key), true);

	/* Port ids 0..maxid: queues 0/1 (port 0), 2/3 (control), then two per port. */
	sc->cfg.max_nr_ports = maxid + 1;
	sc->nvq = 2 * (int)sc->cfg.max_nr_ports + 2;
	sc->queues = calloc((size_t)sc->nvq, sizeof(*sc->queues));
	if (!sc->queues)
		return -1;
	sc->consts = (struct virtio_consts){
		.vc_name = "virtio-console",
		.vc_devtype = VIRTIO_ID_CONSOLE,
		.vc_class = 0x07,      /* communication controller */
		.vc_subclass = 0x80,   /* other */
		.vc_nvq = sc->nvq,
		.vc_cfgsize = sizeof(struct vtcon_config),
		.vc_reset = vtcon_reset,
		.vc_qnotify = vtcon_notify,
		.vc_cfgread = vtcon_cfgread,
		.vc_snapshot = vtcon_snapshot,
		.vc_restore = vtcon_restore,
		.vc_pause = vtcon_pause,
		.vc_resume = vtcon_resume,
	};
	vi_softc_linkup(&sc->vs, &sc->consts, sc, pi, sc->queues);
	for (int q = 0; q < sc->nvq; q++)
		sc->queues[q].vq_maxsize = (q == VTCON_CTRL_RXQ || q == VTCON_CTRL_TXQ) ? VTCON_CTRL_QSIZE
		                                                                         : VTCON_DATA_QSIZE;
	sc->vs.vs_hv_caps = VTCON_F_MULTIPORT;

	/* The backends: fatal (one line, status 4) on failure; chardev removes socket files at exit. */
	for (int i = 0; i < sc->nports; i++) {
		struct vtcon_port *p = &sc->ports[i];
		const struct vtcon_portcfg *c = &cfg[p->id - 1];
		snprintf(p->cdname, sizeof(p->cdname), "%s: %s", pi->pi_name, p->name);
		p->cd = chardev_open(c->path, CHARDEV_F_BARE_SOCK, p->cdname, &vtcon_cd_ops, p, err, sizeof(err));
		if (!p->cd)
			fatal("config: %s: %s", c->key, err);
		p->connected = chardev_connected(p->cd);
		log_debug("%s (virtio port %u): backend %s", p->cdname, p->id, c->path);
	}
	return vi_pci_setup(&sc->vs, legacy);
}

/* Keys for check_pci_key (pci.B.S.F.OPT): the non-port options and the old portN. */
static const char *const vtcon_options[] = {
	"legacy",   /* keep in step with vtcon_nonport */
	"port1", "port2", "port3", "port4", "port5", "port6", "port7", "port8",
	"port9", "port10", "port11", "port12", "port13", "port14", "port15", "port16",
	NULL,
};
_Static_assert(VTCON_MAXPORTS == 16, "vtcon_options lists port1..port16");

/*
 * pci.B.S.F.port.K.name/.path have two more components than the PCI
 * framework's pci.*.*.*.* pattern, so they get their own: the key belongs
 * to a virtio-console and K is a port index.  The values are checked by
 * vtcon_read_ports (names and paths depend on each other).
 */
static int vtcon_check_key(const char *path, const char *value, char *err, size_t errlen)
{
	(void)value;
	unsigned b, s, f, k;
	int end = 0;
	char canon[64];
	/* Canonical numbers only: "port.01" would be a key nobody reads. */
	bool ok = sscanf(path, "pci.%u.%u.%u.port.%u.%*[a-z]%n", &b, &s, &f, &k, &end) == 4 && !path[end];
	if (ok) {
		int n = snprintf(canon, sizeof(canon), "pci.%u.%u.%u.port.%u.", b, s, f, k);
		ok = n > 0 && (size_t)n < sizeof(canon) && !strncmp(path, canon, (size_t)n);
	}
	if (!ok) {
		snprintf(err, errlen, "malformed console port key");
		return -1;
	}
	const char *model = get_config_valuef("pci.%u.%u.%u.device", b, s, f);
	/* Another model with port.K keys of its own (ahci: port.N.path) checks them itself. */
	const struct pci_devemu *pe = model ? pci_emul_find(model) : NULL;
	const char *opt = strstr(path, ".port.");
	if (pe && pe->pe_options && opt && strcmp(model, "virtio-console"))
		for (const char *const *o = pe->pe_options; *o; o++)
			if (!strcmp(*o, opt + 1))
				return 0;
	if (!model || strcmp(model, "virtio-console")) {
		snprintf(err, errlen, "port.K keys belong to a virtio-console, pci.%u.%u.%u is %s", b, s, f,
		         model ? model : "empty");
		return -1;
	}
	if (k >= VTCON_MAXPORTS) {
		snprintf(err, errlen, "port index %u out of range (0..%d: virtio port ids 1..%d)", k,
		         VTCON_MAXPORTS - 1, VTCON_MAXPORTS);
		return -1;
	}
	return 0;
}

static const struct config_key vtcon_keys[] = {
	{ "pci.*.*.*.port.*.name", CFG_CUSTOM, "virtio-console port K (0..15, virtio port id K+1): name", vtcon_check_key },
	{ "pci.*.*.*.port.*.path", CFG_CUSTOM, "virtio-console port K: backend (unix socket path, sock=, tcp=, file=, tty)", vtcon_check_key },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) vtcon_keys_register(void)
{
	config_register_keys(vtcon_keys);
}

static const struct pci_devemu pci_de_vtcon = {
	.pe_emu = "virtio-console",
	.pe_help = "virtio console ports: NAME=PATH (unix socket; or sock=, tcp=ADDR:PORT, file=, a tty)[,NAME2=...] (up to 16, ids in order) [,legacy=false]",
	.pe_options = vtcon_options,
	.pe_legacy_config = vtcon_legacy_config,
	.pe_init = vtcon_init,
	VI_PCI_DEVEMU_HOOKS,
};
PCI_EMUL_REGISTER(pci_de_vtcon)
