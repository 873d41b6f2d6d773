/*
 * virtio network device (virtio 1.2, section 5.1):
 *
 *   -s N,virtio-net,BACKEND[,mac=xx:xx:xx:xx:xx:xx][,mtu=N][,hostfwd=RULE]...[,legacy=false]
 *
 * BACKEND is tapN / a tap interface name, or slirp (net_backend.h).  Queue
 * 0 receives, queue 1 transmits; no control queue, one queue pair.
 *
 * Receive (main thread): the backend descriptor is an mevent; each frame
 * is read into a bounce buffer and copied into the guest's receive chains
 * (several chains per frame with VIRTIO_NET_F_MRG_RXBUF).  When the guest
 * has no room, the frame stays in the bounce buffer, the mevent is
 * disabled and the guest's next receive kick delivers it and re-enables
 * the mevent: the backend's own queue holds the rest, nothing spins.
 * Transmit (vCPU thread, on the kick): each chain is the header and the
 * frame, written to the backend with one writev.
 *
 * The virtio-net header is 12 bytes (with num_buffers) when VERSION_1 or
 * MRG_RXBUF is negotiated, 10 bytes for a legacy driver without mergeable
 * buffers.  Taps carry a 10-byte header (net_backend.h); its checksum/GSO
 * fields pass through only when the matching offload was negotiated: a
 * received frame needing one the driver did not take is dropped (the tap
 * is told what the driver takes, TUNSETOFFLOAD, so that is only frames
 * queued before a renegotiation), and so is a transmitted frame asking for
 * a GSO type that was not negotiated.  Which offloads are on is logged at
 * debug level (test_net.sh's offload test checks it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/control.h"
#include "../core/log.h"
#include "../core/mevent.h"
#include "../core/snapshot.h"
#include "net_backend.h"
#include "pci_emul.h"
#include "virtio.h"

#define VTNET_QSIZE       256
#define VTNET_RXQ         0
#define VTNET_TXQ         1
#define VTNET_MAX_IOV     VTNET_QSIZE   /* buffers per chain we accept */
#define VTNET_MAX_FRAME   (65536 + 64)  /* 64 KiB TSO packet + Ethernet/VLAN headers */
#define VTNET_HDR_MAX     12
#define VTNET_RX_BUDGET   64            /* frames per main-loop wakeup */
#define VTNET_MIN_FRAME   14            /* an Ethernet header */

/* Feature bits (5.1.3) */
#define VTNET_F_CSUM        (1ULL << 0)
#define VTNET_F_GUEST_CSUM  (1ULL << 1)
#define VTNET_F_MTU         (1ULL << 3)
#define VTNET_F_MAC         (1ULL << 5)
#define VTNET_F_GUEST_TSO4  (1ULL << 7)
#define VTNET_F_GUEST_TSO6  (1ULL << 8)
#define VTNET_F_HOST_TSO4   (1ULL << 11)
#define VTNET_F_HOST_TSO6   (1ULL << 12)
#define VTNET_F_MRG_RXBUF   (1ULL << 15)
#define VTNET_F_STATUS      (1ULL << 16)
#define VTNET_OFFLOAD_FEATURES                                                                     \
	(VTNET_F_CSUM | VTNET_F_GUEST_CSUM | VTNET_F_GUEST_TSO4 | VTNET_F_GUEST_TSO6 | VTNET_F_HOST_TSO4 | \
	 VTNET_F_HOST_TSO6)

#define VTNET_S_LINK_UP 1

/* virtio_net_hdr (5.1.6) */
#define VTNET_HDR_F_NEEDS_CSUM 1
#define VTNET_HDR_F_DATA_VALID 2
#define VTNET_HDR_GSO_NONE     0
#define VTNET_HDR_GSO_TCPV4    1
#define VTNET_HDR_GSO_TCPV6    4
#define VTNET_HDR_GSO_ECN      0x80

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio structures are little-endian");

struct vtnet_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
} __attribute__((packed));
_Static_assert(sizeof(struct vtnet_config) == 12, "virtio_net_config layout up to mtu");

struct vtnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len, gso_size, csum_start, csum_offset;
	uint16_t num_buffers;     /* only in the 12-byte form */
} __attribute__((packed));
_Static_assert(sizeof(struct vtnet_hdr) == VTNET_HDR_MAX, "virtio_net_hdr_mrg_rxbuf layout");

/* One chain taken for the frame being delivered. */
struct vtnet_rxbuf {
	uint16_t idx;
	uint32_t len;
};

struct vtnet_softc {
	struct virtio_softc vs;          /* first: the transport finds it via pi_arg */
	struct vqueue_info queues[2];
	struct vtnet_config cfg;
	uint8_t mac_default[6];          /* the configured MAC (reset restores it) */
	struct net_backend *be;
	struct mevent *rx_ev;
	size_t hdrlen;                   /* guest header: 10 or 12 */
	bool mrg_rxbuf;
	bool rx_stalled;                 /* rx_ev disabled until the guest adds buffers */
	bool paused;                     /* checkpoint: no backend reads */
	bool rx_dead;                    /* the backend failed (tap deleted): never read again */
	bool rx_drop_logged, tx_drop_logged;
	/*
	 * Bounce buffer: bytes [0, 12) receive the header, the frame follows
	 * at VTNET_HDR_MAX.  rx_pending > 0: a frame of that length waits for
	 * guest buffers.
	 */
	uint8_t *rx_buf;
	size_t rx_pending;
	uint64_t rx_frames, rx_dropped, tx_frames, tx_dropped;
	/* Scratch, under vs_mtx. */
	struct iovec rx_iov[VTNET_MAX_IOV], rx_first_iov[VTNET_MAX_IOV];
	struct iovec tx_iov[VTNET_MAX_IOV], tx_out[VTNET_MAX_IOV + 1];
	struct vtnet_rxbuf rx_bufs[VTNET_QSIZE];
};

/* ---- receive ---- */

/*
 * Used-ring entries for a merged frame are written first and published
 * with one used->idx store: a driver that sees the first buffer (with
 * num_buffers = N) must find the other N-1 already there.  vq_relchain
 * publishes each one, so these two mirror it for the batch.
 */
static void vtnet_used_stage(struct vqueue_info *vq, uint16_t k, uint16_t idx, uint32_t len)
{
	struct vring_used_elem *e = &vq->vq_used->ring[(uint16_t)(vq->vq_next_used + k) & (vq->vq_qsize - 1)];
	__atomic_store_n(&e->id, (uint32_t)idx, __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, len, __ATOMIC_RELAXED);
}

static void vtnet_used_publish(struct vqueue_info *vq, uint16_t n)
{
	vq->vq_next_used = (uint16_t)(vq->vq_next_used + n);
	__atomic_store_n(&vq->vq_used->idx, vq->vq_next_used, __ATOMIC_RELEASE);
}

static void vtnet_rx_drop(struct vtnet_softc *sc, size_t len, const char *why)
{
	sc->rx_dropped++;
	if (!sc->rx_drop_logged) {
		sc->rx_drop_logged = true;
		log_info("%s: dropped a received %zu-byte frame: %s (further drops not logged)", sc->vs.vs_name, len,
		         why);
	}
}

/*
 * Turn the backend's header (if any) into the guest's, once per frame, in
 * place: it ends where the frame starts (rx_buf + VTNET_HDR_MAX).  false if
 * the frame needs an offload the guest did not accept.
 */
static bool vtnet_rx_header(struct vtnet_softc *sc)
{
	struct vtnet_hdr h;
	memset(&h, 0, sizeof(h));
	if (sc->be->be_vnet_hdr)
		memcpy(&h, sc->rx_buf, NETBE_VNET_HDR_LEN);
	if (!vi_negotiated(&sc->vs, VTNET_F_GUEST_CSUM)) {
		/* The tap checksums for us unless told otherwise (TUNSETOFFLOAD). */
		if (h.flags & VTNET_HDR_F_NEEDS_CSUM || h.gso_type != VTNET_HDR_GSO_NONE)
			return false;
		memset(&h, 0, sizeof(h));
	} else {
		/* GSO_ECN needs GUEST_ECN, which is not offered: the kernel segments such packets itself. */
		uint8_t gso = h.gso_type;
		if ((gso == VTNET_HDR_GSO_TCPV4 && !vi_negotiated(&sc->vs, VTNET_F_GUEST_TSO4)) ||
		    (gso == VTNET_HDR_GSO_TCPV6 && !vi_negotiated(&sc->vs, VTNET_F_GUEST_TSO6)) ||
		    (gso != VTNET_HDR_GSO_NONE && gso != VTNET_HDR_GSO_TCPV4 && gso != VTNET_HDR_GSO_TCPV6))
			return false;
		/* Only the flags GUEST_CSUM allows (RSC_INFO needs GUEST_RSC4/6). */
		h.flags &= VTNET_HDR_F_NEEDS_CSUM | VTNET_HDR_F_DATA_VALID;
	}
	h.num_buffers = 1;   /* the merged path rewrites it in guest memory */
	memcpy(sc->rx_buf + VTNET_HDR_MAX - sc->hdrlen, &h, sc->hdrlen);
	return true;
}

/*
 * Deliver the frame in the bounce buffer.  1 delivered (or dropped),
 * 0 not enough guest buffers (nothing consumed), -1 guest error.
 */
static int vtnet_rx_deliver(struct vtnet_softc *sc)
{
	struct vqueue_info *vq = &sc->queues[VTNET_RXQ];
	size_t framelen = sc->rx_pending;
	const uint8_t *src = sc->rx_buf + VTNET_HDR_MAX - sc->hdrlen;
	size_t total = sc->hdrlen + framelen, copied = 0;
	uint16_t nbufs = 0;
	struct vq_chain ch;
	int nfirst = 0;
	while (copied < total) {
		int n = vq_getchain(vq, sc->rx_iov, VTNET_MAX_IOV, &ch);
		if (n < 0)
			return -1;
		if (n == 0) {
			/* Not enough room yet: give back what we took, in reverse. */
			for (uint16_t k = 0; k < nbufs; k++)
				vq_retchain(vq);
			return 0;
		}
		if (ch.readable) {
			vi_error(&sc->vs, "receive buffer with a device-readable descriptor");
			return -1;
		}
		if (ch.wlen < sc->hdrlen) {
			vi_error(&sc->vs, "receive buffer of %u bytes, smaller than the %zu-byte header", ch.wlen,
			         sc->hdrlen);
			return -1;
		}
		if (nbufs == 0) {
			nfirst = n;
			memcpy(sc->rx_first_iov, sc->rx_iov, (size_t)n * sizeof(struct iovec));
		}
		size_t c = total - copied < ch.wlen ? total - copied : ch.wlen;
		if (!sc->mrg_rxbuf && c < total) {
			/* Without mergeable buffers one chain must hold it all; the
			 * buffer stays with us for the next (smaller) frame. */
			vq_retchain(vq);
			vtnet_rx_drop(sc, framelen, "larger than the driver's receive buffers");
			return 1;
		}
		buf_to_iov(src + copied, c, sc->rx_iov, n, 0);
		sc->rx_bufs[nbufs].idx = ch.idx;
		sc->rx_bufs[nbufs].len = (uint32_t)c;
		nbufs++;
		copied += c;
		if (copied < total && nbufs == vq->vq_qsize) {
			/* The whole ring cannot hold it: give everything back and drop. */
			for (uint16_t k = 0; k < nbufs; k++)
				vq_retchain(vq);
			vtnet_rx_drop(sc, framelen, "larger than the whole receive ring");
			return 1;
		}
	}
	if (sc->hdrlen == VTNET_HDR_MAX) {
		uint16_t nb = nbufs;
		buf_to_iov(&nb, sizeof(nb), sc->rx_first_iov, nfirst, offsetof(struct vtnet_hdr, num_buffers));
	}
	for (uint16_t k = 0; k < nbufs; k++)
		vtnet_used_stage(vq, k, sc->rx_bufs[k].idx, sc->rx_bufs[k].len);
	vtnet_used_publish(vq, nbufs);
	sc->rx_frames++;
	return 1;
}

static void vtnet_rx_stall(struct vtnet_softc *sc)
{
	if (!sc->rx_stalled) {
		sc->rx_stalled = true;
		mevent_disable(sc->rx_ev);
	}
}

static void vtnet_rx_unstall(struct vtnet_softc *sc)
{
	sc->rx_stalled = false;
	if (!sc->paused && !sc->rx_dead)
		mevent_enable(sc->rx_ev);
}

static bool vtnet_rx_ready(struct vtnet_softc *sc)
{
	return !sc->paused && !sc->vs.vs_broken && vq_ring_ready(&sc->queues[VTNET_RXQ]) &&
	       (sc->vs.vs_legacy_mode || (sc->vs.vs_status & VIRTIO_S_DRIVER_OK));
}

/* Deliver the pending frame, if any: false if it still waits (vs_mtx held). */
static bool vtnet_rx_flush_pending(struct vtnet_softc *sc, bool *delivered)
{
	if (!sc->rx_pending)
		return true;
	int r = vtnet_rx_deliver(sc);
	if (r == 0)
		return false;
	sc->rx_pending = 0;
	if (r > 0)
		*delivered = true;
	return r > 0;
}

/* The backend has frames (main thread). */
static void vtnet_rx_event(int fd, void *arg)
{
	struct vtnet_softc *sc = arg;
	bool delivered = false;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	if (!vtnet_rx_ready(sc)) {
		/* No rings (yet): leave frames in the backend until a kick. */
		vtnet_rx_stall(sc);
		goto out;
	}
	if (!vtnet_rx_flush_pending(sc, &delivered)) {
		vtnet_rx_stall(sc);
		goto done;
	}
	for (int i = 0; i < VTNET_RX_BUDGET && !sc->vs.vs_broken; i++) {
		struct iovec in[2];
		int nin = 0;
		if (sc->be->be_vnet_hdr)
			in[nin++] = (struct iovec){ sc->rx_buf, NETBE_VNET_HDR_LEN };
		in[nin++] = (struct iovec){ sc->rx_buf + VTNET_HDR_MAX, VTNET_MAX_FRAME };
		ssize_t r = readv(fd, in, nin);
		if (r < 0 && errno == EINTR)
			continue;
		if ((r < 0 && errno != EAGAIN) || r == 0) {
			/* An error or end of file stays readable (level-triggered):
			 * it would wake us forever, so stop for good. */
			log_warn("%s: %s: %s; nothing more is received", sc->vs.vs_name, sc->be->be_name,
			         r ? strerror(errno) : "end of file");
			sc->rx_dead = true;
			vtnet_rx_stall(sc);
			break;
		}
		if (r < 0)
			break;   /* drained: the mevent stays armed */
		size_t hl = sc->be->be_vnet_hdr ? NETBE_VNET_HDR_LEN : 0;
		if ((size_t)r < hl + VTNET_MIN_FRAME)
			continue;   /* a runt from the backend: nothing to give the guest */
		if (!vtnet_rx_header(sc)) {
			vtnet_rx_drop(sc, (size_t)r - hl, "it needs an offload the driver did not negotiate");
			continue;
		}
		sc->rx_pending = (size_t)r - hl;
		if (!vtnet_rx_flush_pending(sc, &delivered)) {
			vtnet_rx_stall(sc);   /* keeps the frame until the guest kicks */
			break;
		}
	}
done:
	if (delivered)
		vq_endchains(&sc->queues[VTNET_RXQ], false);
out:
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

/* The guest added receive buffers (vCPU thread, vs_mtx held). */
static void vtnet_rx_kick(struct vtnet_softc *sc)
{
	if (!sc->rx_stalled || sc->paused)
		return;
	bool delivered = false;
	if (vtnet_rx_ready(sc) && !vtnet_rx_flush_pending(sc, &delivered))
		return;   /* still too little room for the waiting frame */
	if (delivered)
		vq_endchains(&sc->queues[VTNET_RXQ], false);
	vtnet_rx_unstall(sc);
}

/* ---- transmit ---- */

static void vtnet_tx_drop(struct vtnet_softc *sc, size_t len, const char *why)
{
	sc->tx_dropped++;
	if (!sc->tx_drop_logged) {
		sc->tx_drop_logged = true;
		log_info("%s: dropped a transmitted %zu-byte frame: %s (further drops not logged)", sc->vs.vs_name, len,
		         why);
	}
}

static void vtnet_tx_kick(struct vtnet_softc *sc, struct vqueue_info *vq)
{
	struct vq_chain ch;
	int n;
	bool any = false;
	while ((n = vq_getchain(vq, sc->tx_iov, VTNET_MAX_IOV, &ch)) > 0) {
		if (ch.writable) {
			vi_error(&sc->vs, "transmit chain with a device-writable descriptor");
			return;
		}
		if (ch.rlen < sc->hdrlen) {
			vi_error(&sc->vs, "transmit chain of %u bytes, shorter than the %zu-byte header", ch.rlen,
			         sc->hdrlen);
			return;
		}
		size_t framelen = ch.rlen - sc->hdrlen;
		struct vtnet_hdr h;
		memset(&h, 0, sizeof(h));
		iov_to_buf(sc->tx_iov, n, 0, &h, NETBE_VNET_HDR_LEN);
		int nout = 0;
		/*
		 * Without CSUM the header's offload fields mean nothing (5.1.6.2).
		 * With it, only NEEDS_CSUM is a transmit flag (DATA_VALID would
		 * make the host trust a checksum nobody checked), and a GSO type
		 * must have been negotiated: a frame larger than the MTU sent
		 * without it is not a frame the wire could carry.  The kernel
		 * checks csum_start/csum_offset/gso_size against the frame.
		 */
		bool gso_ok = true;
		if (!vi_negotiated(&sc->vs, VTNET_F_CSUM)) {
			memset(&h, 0, sizeof(h));
		} else {
			h.flags &= VTNET_HDR_F_NEEDS_CSUM;
			gso_ok = h.gso_type == VTNET_HDR_GSO_NONE ||
			         (h.gso_type == VTNET_HDR_GSO_TCPV4 && vi_negotiated(&sc->vs, VTNET_F_HOST_TSO4)) ||
			         (h.gso_type == VTNET_HDR_GSO_TCPV6 && vi_negotiated(&sc->vs, VTNET_F_HOST_TSO6));
		}
		if (sc->be->be_vnet_hdr)
			sc->tx_out[nout++] = (struct iovec){ &h, NETBE_VNET_HDR_LEN };
		int k = iov_slice(sc->tx_iov, n, sc->hdrlen, framelen, sc->tx_out + nout, VTNET_MAX_IOV);
		if (framelen < VTNET_MIN_FRAME || framelen > VTNET_MAX_FRAME || k < 0)
			vtnet_tx_drop(sc, framelen, "not an Ethernet frame size");
		else if (!gso_ok)
			vtnet_tx_drop(sc, framelen, "GSO type the driver did not negotiate");
		else if (!sc->be->be_vnet_hdr && (h.flags & VTNET_HDR_F_NEEDS_CSUM || h.gso_type))
			vtnet_tx_drop(sc, framelen, "offload requested that the backend cannot do");
		else if (netbe_send(sc->be, sc->tx_out, nout + k))
			vtnet_tx_drop(sc, framelen, strerror(errno));
		else
			sc->tx_frames++;
		vq_relchain(vq, ch.idx, 0);
		any = true;
	}
	if (any)
		vq_endchains(vq, true);
}

static void vtnet_notify(void *arg, struct vqueue_info *vq)
{
	struct vtnet_softc *sc = arg;
	if (vq->vq_num == VTNET_RXQ)
		vtnet_rx_kick(sc);
	else
		vtnet_tx_kick(sc, vq);
}

/* ---- device state ---- */

static void vtnet_set_hdrlen(struct vtnet_softc *sc, uint64_t features)
{
	sc->mrg_rxbuf = (features & VTNET_F_MRG_RXBUF) != 0;
	sc->hdrlen = (features & (VIRTIO_F_VERSION_1 | VTNET_F_MRG_RXBUF)) ? 12 : 10;
}

static void vtnet_apply_offload(struct vtnet_softc *sc, uint64_t features)
{
	unsigned off = 0;
	if (features & VTNET_F_GUEST_CSUM)
		off |= NETBE_OFFLOAD_CSUM;
	if (features & VTNET_F_GUEST_TSO4)
		off |= NETBE_OFFLOAD_TSO4;
	if (features & VTNET_F_GUEST_TSO6)
		off |= NETBE_OFFLOAD_TSO6;
	if (sc->be->be_offload && netbe_set_offload(sc->be, off))
		log_warn("%s: %s: cannot set offloads 0x%x: %s", sc->vs.vs_name, sc->be->be_name, off, strerror(errno));
}

static void vtnet_apply_features(void *arg, uint64_t features)
{
	struct vtnet_softc *sc = arg;
	vtnet_set_hdrlen(sc, features);
	vtnet_apply_offload(sc, features);
	/* What the offload tests look for (log.level=3): the device's view, not the driver's. */
	if (features & VTNET_OFFLOAD_FEATURES)
		log_debug("%s: features 0x%llx: to the guest:%s%s%s; from the guest:%s%s%s", sc->vs.vs_name,
		          (unsigned long long)features, (features & VTNET_F_GUEST_CSUM) ? " csum" : " -",
		          (features & VTNET_F_GUEST_TSO4) ? " tso4" : "", (features & VTNET_F_GUEST_TSO6) ? " tso6" : "",
		          (features & VTNET_F_CSUM) ? " csum" : " -", (features & VTNET_F_HOST_TSO4) ? " tso4" : "",
		          (features & VTNET_F_HOST_TSO6) ? " tso6" : "");
}

static void vtnet_reset(void *arg)
{
	struct vtnet_softc *sc = arg;
	sc->rx_pending = 0;
	vtnet_set_hdrlen(sc, 0);
	vtnet_apply_offload(sc, 0);
	memcpy(sc->cfg.mac, sc->mac_default, sizeof(sc->cfg.mac));
	/* The rings are gone: read nothing until the driver kicks again. */
	vtnet_rx_stall(sc);
}

static int vtnet_cfgread(void *arg, uint32_t off, int size, uint32_t *val)
{
	struct vtnet_softc *sc = arg;
	if (size < 1 || size > 4 || off + (uint32_t)size > sizeof(sc->cfg))
		return -1;
	*val = 0;
	memcpy(val, (uint8_t *)&sc->cfg + off, (size_t)size);
	return 0;
}

static int vtnet_cfgwrite(void *arg, uint32_t off, int size, uint32_t val)
{
	struct vtnet_softc *sc = arg;
	/* Legacy drivers set the MAC by writing it (no VERSION_1 control queue). */
	if (!sc->vs.vs_legacy_mode || size < 1 || size > 4 || off + (uint32_t)size > sizeof(sc->cfg.mac))
		return -1;
	memcpy(sc->cfg.mac + off, &val, (size_t)size);
	return 0;
}

#define VTNET_SNAP_VERSION 1

static int vtnet_snapshot(void *arg, struct snap_buf *out)
{
	struct vtnet_softc *sc = arg;
	sb_u32(out, VTNET_SNAP_VERSION);
	sb_put(out, sc->cfg.mac, sizeof(sc->cfg.mac));
	sb_u16(out, sc->cfg.status);
	/* A frame waiting in the bounce buffer is not saved: the wire lost it. */
	return 0;
}

static int vtnet_restore(void *arg, struct snap_rd *in, char *err, size_t errlen)
{
	struct vtnet_softc *sc = arg;
	uint32_t version = sr_u32(in);
	uint8_t mac[6];
	sr_get(in, mac, sizeof(mac));
	uint16_t status = sr_u16(in);
	if (!sr_ok(in) || version != VTNET_SNAP_VERSION || (status & ~VTNET_S_LINK_UP)) {
		snprintf(err, errlen, "virtio-net state: version %u, status 0x%x (expected version %u)", version, status,
		         VTNET_SNAP_VERSION);
		return -1;
	}
	memcpy(sc->cfg.mac, mac, sizeof(mac));
	sc->cfg.status = status;
	/* The transport restored the negotiated features; derive the rest. */
	vtnet_set_hdrlen(sc, sc->vs.vs_negotiated);
	vtnet_apply_offload(sc, sc->vs.vs_negotiated);
	sc->rx_pending = 0;
	vtnet_rx_unstall(sc);   /* the next backend read finds out if there is room */
	return 0;
}

static void vtnet_pause(void *arg)
{
	struct vtnet_softc *sc = arg;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	/* Backend reads hold vs_mtx, so none is in flight once we have it. */
	sc->paused = true;
	mevent_disable(sc->rx_ev);
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

static void vtnet_resume(void *arg)
{
	struct vtnet_softc *sc = arg;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	sc->paused = false;
	bool delivered = false;
	if (vtnet_rx_ready(sc) && !vtnet_rx_flush_pending(sc, &delivered)) {
		sc->rx_stalled = true;   /* still waiting for guest buffers */
	} else {
		if (delivered)
			vq_endchains(&sc->queues[VTNET_RXQ], false);
		vtnet_rx_unstall(sc);
	}
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

static const struct virtio_consts vtnet_consts = {
	.vc_name = "virtio-net",
	.vc_devtype = VIRTIO_ID_NET,
	.vc_class = 0x02,          /* network */
	.vc_subclass = 0x00,       /* Ethernet */
	.vc_nvq = 2,
	.vc_cfgsize = sizeof(struct vtnet_config),
	.vc_reset = vtnet_reset,
	.vc_qnotify = vtnet_notify,
	.vc_cfgread = vtnet_cfgread,
	.vc_cfgwrite = vtnet_cfgwrite,
	.vc_apply_features = vtnet_apply_features,
	.vc_snapshot = vtnet_snapshot,
	.vc_restore = vtnet_restore,
	.vc_pause = vtnet_pause,
	.vc_resume = vtnet_resume,
};

/* ---- configuration ---- */

#define VTNET_MTU_MIN 68
#define VTNET_MTU_MAX 65535

static int vtnet_parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char end;
	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &end) != 6 ||
	    strlen(s) != 17)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	if ((mac[0] & 1) || !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]))
		return -1;   /* multicast/broadcast or all zeros: not a station address */
	return 0;
}

/* Stable across runs: FNV-1a of the VM name and the PCI address. */
static void vtnet_default_mac(const char *vmname, const struct pci_devinst *pi, uint8_t mac[6])
{
	char id[160];
	snprintf(id, sizeof(id), "%s/%u:%u:%u", vmname ? vmname : "", pi->pi_bus, pi->pi_slot, pi->pi_func);
	uint64_t h = 0xcbf29ce484222325ULL;
	for (const unsigned char *p = (const unsigned char *)id; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)(h >> (8 * i));
	mac[0] = (uint8_t)((mac[0] & 0xfc) | 0x02);   /* locally administered, unicast */
}

/* Check the keys under cfgpath; 0, or -1 with "KEY: reason" in err. */
static int vtnet_check_config(const char *cfgpath, char *err, size_t errlen)
{
	char key[128], why[256];
	const char *v;
	snprintf(key, sizeof(key), "%s.backend", cfgpath);
	const char *backend = get_config_value(key);
	char hfkey[128];
	snprintf(hfkey, sizeof(hfkey), "%s.hostfwd", cfgpath);
	if (netbe_check(backend, get_config_value(hfkey), why, sizeof(why))) {
		snprintf(err, errlen, "config: %s: %s", strstr(why, "hostfwd") ? hfkey : key, why);
		return -1;
	}
	snprintf(key, sizeof(key), "%s.mac", cfgpath);
	uint8_t mac[6];
	if ((v = get_config_value(key)) && vtnet_parse_mac(v, mac)) {
		snprintf(err, errlen, "config: %s: bad MAC address '%s' (expected six hex octets xx:xx:xx:xx:xx:xx, unicast)",
		         key, v);
		return -1;
	}
	snprintf(key, sizeof(key), "%s.mtu", cfgpath);
	uint64_t mtu;
	if ((v = get_config_value(key)) &&
	    (config_parse_uint(v, &mtu) || mtu < VTNET_MTU_MIN || mtu > VTNET_MTU_MAX)) {
		snprintf(err, errlen, "config: %s: bad MTU '%s' (expected %d..%d)", key, v, VTNET_MTU_MIN, VTNET_MTU_MAX);
		return -1;
	}
	return 0;
}

/*
 * bhyve syntax: the first bare token is the backend.  hostfwd may be
 * given several times; the rules are kept in one key, ';'-separated.
 */
static int vtnet_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	size_t n = strlen(opts) + 1;
	char *rest = calloc(1, n), *fwd = calloc(1, n), *copy = strdup(opts), *save = NULL;
	int rc = -1;
	if (!rest || !fwd || !copy)
		goto out;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strncmp(tok, "hostfwd=", 8)) {
			if (*fwd)
				strcat(fwd, ";");
			strcat(fwd, tok + 8);
		} else {
			if (*rest)
				strcat(rest, ",");
			strcat(rest, tok);
		}
	}
	/* A bare first token stays first: it is the backend. */
	if (pci_parse_options(cfgpath, rest, "backend", err, errlen))
		goto out;
	char key[128];
	snprintf(key, sizeof(key), "%s.hostfwd", cfgpath);
	if (*fwd && set_config_value(key, fwd)) {
		snprintf(err, errlen, "-s: bad option 'hostfwd'");
		goto out;
	}
	rc = vtnet_check_config(cfgpath, err, errlen);
out:
	free(rest);
	free(fwd);
	free(copy);
	return rc;
}

/*
 * Frame counters in hyvectl --get-stats ("virtio-net@3:0.rx_frames N"): with
 * the tap's own counters they tell whether a lost packet died in the host,
 * in hyve, or in the guest.
 */
#define VTNET_MAX_STATS 16
static struct vtnet_softc *stats_devs[VTNET_MAX_STATS];
static int nstats_devs;

static void vtnet_stats(struct control_conn *c)
{
	for (int i = 0; i < nstats_devs; i++) {
		struct vtnet_softc *sc = stats_devs[i];
		pthread_mutex_lock(&sc->vs.vs_mtx);
		uint64_t rf = sc->rx_frames, rd = sc->rx_dropped, tf = sc->tx_frames, td = sc->tx_dropped;
		pthread_mutex_unlock(&sc->vs.vs_mtx);
		const char *n = sc->vs.vs_pi->pi_name;
		control_reply(c, "%s.rx_frames %llu", n, (unsigned long long)rf);
		control_reply(c, "%s.rx_dropped %llu", n, (unsigned long long)rd);
		control_reply(c, "%s.tx_frames %llu", n, (unsigned long long)tf);
		control_reply(c, "%s.tx_dropped %llu", n, (unsigned long long)td);
	}
}

static void __attribute__((constructor)) vtnet_stats_register(void)
{
	control_register_stats(vtnet_stats);
}

static int vtnet_init(struct pci_devinst *pi, const char *cfgpath)
{
	char key[128], err[512];
#define KEY(k) (snprintf(key, sizeof(key), "%s.%s", cfgpath, (k)), key)
	if (vtnet_check_config(cfgpath, err, sizeof(err)))   /* -o / -k keys skip the -s check */
		fatal("%s", err);
	const char *backend = get_config_value(KEY("backend"));
	const char *hostfwd = get_config_value(KEY("hostfwd"));
	unsigned mtu = (unsigned)get_config_uint_default(KEY("mtu"), 0);
	bool legacy = get_config_bool_default(KEY("legacy"), true);

	struct vtnet_softc *sc = calloc(1, sizeof(*sc));
	if (!sc || !(sc->rx_buf = malloc(VTNET_HDR_MAX + VTNET_MAX_FRAME)))
		return -1;
	const char *macstr = get_config_value(KEY("mac"));
	if (macstr)
		vtnet_parse_mac(macstr, sc->mac_default);
	else
		vtnet_default_mac(get_config_value("name"), pi, sc->mac_default);
	sc->be = netbe_open(backend, hostfwd, mtu, err, sizeof(err));
	if (!sc->be)
		fatal("config: %s: %s", KEY(strncmp(err, "hostfwd", 7) ? "backend" : "hostfwd"), err);
	memcpy(sc->cfg.mac, sc->mac_default, sizeof(sc->cfg.mac));
	sc->cfg.status = VTNET_S_LINK_UP;
	sc->cfg.max_virtqueue_pairs = 1;
	sc->cfg.mtu = (uint16_t)mtu;
	vtnet_set_hdrlen(sc, 0);

	vi_softc_linkup(&sc->vs, &vtnet_consts, sc, pi, sc->queues);
	sc->queues[VTNET_RXQ].vq_maxsize = VTNET_QSIZE;
	sc->queues[VTNET_TXQ].vq_maxsize = VTNET_QSIZE;
	sc->vs.vs_hv_caps = VTNET_F_MAC | VTNET_F_STATUS | VTNET_F_MRG_RXBUF | (mtu ? VTNET_F_MTU : 0);
	if (sc->be->be_vnet_hdr && sc->be->be_offload)
		sc->vs.vs_hv_caps |= VTNET_OFFLOAD_FEATURES;
	/* Read nothing until the driver has receive buffers (first RX kick). */
	sc->rx_stalled = true;
	sc->rx_ev = mevent_add(sc->be->be_fd, EVF_READ, vtnet_rx_event, sc);
	if (!sc->rx_ev)
		fatal("%s: cannot poll backend %s", pi->pi_name, sc->be->be_name);
	mevent_disable(sc->rx_ev);
	if (nstats_devs < VTNET_MAX_STATS)
		stats_devs[nstats_devs++] = sc;
	log_debug("%s: %s, mac %02x:%02x:%02x:%02x:%02x:%02x%s%s", pi->pi_name, sc->be->be_name, sc->cfg.mac[0],
	          sc->cfg.mac[1], sc->cfg.mac[2], sc->cfg.mac[3], sc->cfg.mac[4], sc->cfg.mac[5],
	          mtu ? ", jumbo/explicit mtu" : "", (sc->vs.vs_hv_caps & VTNET_F_CSUM) ? ", offloads" : "");
	return vi_pci_setup(&sc->vs, legacy);
#undef KEY
}

static const char *const vtnet_options[] = { "backend", "mac", "mtu", "hostfwd", "legacy", NULL };

static const struct pci_devemu pci_de_vtnet = {
	.pe_emu = "virtio-net",
	.pe_help = "virtio network: tapN|TAPNAME|slirp[,mac=xx:xx:xx:xx:xx:xx][,mtu=N]"
	           "[,hostfwd=tcp::HOSTPORT-:GUESTPORT]...[,legacy=false]",
	.pe_options = vtnet_options,
	.pe_legacy_config = vtnet_legacy_config,
	.pe_init = vtnet_init,
	VI_PCI_DEVEMU_HOOKS,
};
PCI_EMUL_REGISTER(pci_de_vtnet)
