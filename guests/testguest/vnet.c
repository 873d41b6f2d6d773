/*
 * virtio-net (virtio 1.2, 5.1) for the test guest: test=net, test=netbad
 * and the shell's `net` command.
 *
 * Two split queues (0 receive, 1 transmit) of VNET_Q entries, polled.  The
 * driver negotiates VERSION_1, MAC, STATUS, MTU and MRG_RXBUF, so every
 * frame has the 12-byte header and a received frame may span several
 * 2 KiB buffers (num_buffers in the first one's header).  A transmit is one
 * descriptor (header + frame); the device completes it during the kick.
 *
 * On top sits just enough of a network stack to test the device against a
 * real peer: ARP (ask and answer), IPv4 with ICMP echo (ask and answer),
 * and a one-connection TCP echo server (SYN, data echoed back, FIN, with
 * retransmission) for slirp's hostfwd.  The test body runs at CPL3
 * (user_run), where the PVM host runs natively; only the PCI scan is CPL0.
 *
 * legacy=1 drives the transitional function's legacy interface instead
 * (I/O BAR 0, virtio 0.9.5): without mrg=1 the header is then 10 bytes and
 * a frame must fit one buffer.
 *
 * rxlimit=N posts only N receive buffers at first: the big ping's reply
 * cannot fit, the device must hold it (and stop reading its backend) until
 * the rest are posted and kicked.
 *
 * Offloads (tap backends offer them, test_net.sh's offload test uses them):
 *   csum=1  VIRTIO_NET_F_CSUM: pings leave their ICMP checksum to the device.
 *   gso=1   GUEST_CSUM + GUEST_TSO4 (required): received frames may carry
 *           NEEDS_CSUM (the checksum field holds only the pseudo-header sum;
 *           we complete it over csum_start/csum_offset and then verify the
 *           TCP checksum as for any frame) and gso_type TCPV4 (one frame of
 *           up to 64 KiB carrying many MSS of TCP payload, spread over
 *           mergeable buffers).  Counted and printed ("rx offload:").
 *   tso=1   CSUM + HOST_TSO4 (required): the echo server leaves its TCP
 *           checksums to the device and echoes in segments of up to
 *           TSO_SEG bytes, gso_type TCPV4, gso_size the peer's MSS.
 *   txbad=1 (needs CSUM) after the first ping: UDP datagrams to the peer's
 *           port 9999 with offload headers that must not reach it
 *           (csum_start past the packet, GSO types not negotiated), then a
 *           good one and another ping; the host checks what arrived.
 * The negotiated feature bits are printed ("negotiated features").
 *
 * Command line: ip=A.B.C.D (ours), peer=A.B.C.D (ARP + ping target),
 * big=N (also ping with an N-byte payload: jumbo frames), listen=PORT
 * (then serve one TCP echo connection), wait=S (seconds to wait for it,
 * default 60).
 */
#include "virtio.h"
#include "shell.h"
#include "tests.h"

#define VIRTIO_ID_NET 1
#define VNET_F_CSUM (1UL << 0)
#define VNET_F_GUEST_CSUM (1UL << 1)
#define VNET_F_MTU (1UL << 3)
#define VNET_F_MAC (1UL << 5)
#define VNET_F_GUEST_TSO4 (1UL << 7)
#define VNET_F_HOST_TSO4 (1UL << 11)
#define VNET_F_MRG_RXBUF (1UL << 15)
#define VNET_F_STATUS (1UL << 16)
#define VNET_HDR 12		/* largest header: virtio_net_hdr + num_buffers */
#define VNET_Q 64
#define RXBUF_SIZE 2048
/* A GSO frame from the device: 64 KiB of IP packet plus Ethernet/VLAN headers. */
#define FRAME_MAX (65536 + 64)
/* Our TSO segments: well under the peer's receive window (we do not track it). */
#define TSO_SEG 16384

/* virtio_net_hdr (5.1.6) */
#define HDR_F_NEEDS_CSUM 1
#define HDR_F_DATA_VALID 2
#define HDR_GSO_NONE 0
#define HDR_GSO_TCPV4 1

#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define IP_ICMP 1
#define IP_TCP 6
#define IP_UDP 17
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define ICMP_ID 0x4879		/* "Hy" */


enum tcp_state { TCP_CLOSED, TCP_LISTEN, TCP_SYN_RCVD, TCP_ESTABLISHED, TCP_LAST_ACK, TCP_DONE };

static struct {
	struct vdev *d;
	struct gvq rx, tx;
	u16 legacy_port;	/* I/O BAR 0 when driving the legacy interface */
	u32 hdrlen;		/* 12, or 10 for legacy without MRG_RXBUF */
	bool mrg;
	bool tx_csum;		/* CSUM negotiated: pings leave the checksum to the device */
	bool tx_tso;		/* CSUM + HOST_TSO4 negotiated (tso=1): TCP uses both */
	bool rx_csum, rx_tso;	/* GUEST_CSUM, GUEST_TSO4 negotiated (gso=1) */
	/* For the next tx_send: NEEDS_CSUM if csum_start != 0; GSO if gso_type != 0. */
	u16 tx_csum_start, tx_csum_offset, tx_gso_size, tx_hdr_len;
	u8 tx_gso_type;
	u8 rx_hdr[VNET_HDR];	/* the last received frame's header */
	bool rx_completed;	/* ... was NEEDS_CSUM: we filled in its checksum */
	/* offload counters */
	u64 rx_gso, rx_needs_csum, rx_data_valid, tx_tso_frames;
	u32 rx_gso_max, rx_gso_size, tx_tso_max;	/* largest frames (and the MSS of that rx one) */
	u8 mac[6];
	u16 mtu, status;
	u64 khz;
	u32 ip, peer;		/* host byte order */
	u8 peer_mac[6];
	bool peer_known;
	u32 last_nbufs;		/* buffers the last received frame spanned */
	u16 rx_posted;		/* buffers 0..rx_posted-1 are ours to recycle (rxlimit=) */
	u64 rx_frames, tx_frames;
	/* ping */
	u16 ping_seq;
	u32 ping_len;
	int ping_result;	/* 0 waiting, 1 ok, -1 payload/checksum wrong */
	u32 ping_nbufs;
	/* tcp echo server */
	enum tcp_state tcp;
	u16 lport, rport;
	u32 rip;
	u8 rmac[6];
	u32 snd_una, snd_nxt, rcv_nxt, peer_mss;
	u32 unacked_len;	/* bytes from snd_una not yet acknowledged */
	u64 rto_deadline;
	u32 echoed;
	u32 last_wnd;		/* receive window in the last segment we sent */
	bool fin_sent;
} net;

static u8 qmem[2][4096] __attribute__((aligned(4096)));
/* Legacy rings have the device's size (256): desc 4 KiB, avail, used on the next page. */
static u8 lqmem[2][3 * 4096] __attribute__((aligned(4096)));
static u8 rxbufs[VNET_Q][RXBUF_SIZE] __attribute__((aligned(64)));
static u8 txbuf[VNET_HDR + FRAME_MAX] __attribute__((aligned(64)));
static u8 frame[FRAME_MAX] __attribute__((aligned(64)));
/* Echoed bytes until acknowledged; also our receive window (no scaling: < 64 KiB). */
static u8 unacked[49152];

static const char *tname = "net";

/* ---- byte helpers ---- */
static u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static u32 get32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }
static void put16(u8 *p, u16 v) { p[0] = (u8)(v >> 8); p[1] = (u8)v; }
static void put32(u8 *p, u32 v) { put16(p, (u16)(v >> 16)); put16(p + 2, (u16)v); }

static u32 csum_add(u32 sum, const u8 *p, u32 len)
{
	for (; len > 1; p += 2, len -= 2)
		sum += get16(p);
	if (len)
		sum += (u32)p[0] << 8;
	return sum;
}

static u16 csum_fold(u32 sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (u16)~sum;
}

static bool parse_ip(const char *s, u32 *out)
{
	u32 ip = 0;
	for (int i = 0; i < 4; i++) {
		u32 v = 0;
		int digits = 0;
		while (*s >= '0' && *s <= '9' && digits < 4) {
			v = v * 10 + (u32)(*s++ - '0');
			digits++;
		}
		if (!digits || v > 255 || (i < 3 && *s++ != '.'))
			return false;
		ip = ip << 8 | v;
	}
	if (*s && *s != ' ')
		return false;
	*out = ip;
	return true;
}

static void fmt_ip(char *b, u32 ip)
{
	snprintf(b, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

static void fmt_mac(char *b, const u8 *m)
{
	snprintf(b, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static u64 now_us(void) { return rdtsc() / (net.khz / 1000 ? net.khz / 1000 : 1); }

/* ---- device ---- */

static void vq_kick(struct gvq *vq, u16 qidx)
{
	if (net.legacy_port)
		outw(net.legacy_port + 16, qidx);
	else
		*vq->notify = qidx;
}

static u8 net_status(void)
{
	return net.legacy_port ? inb(net.legacy_port + 18) : virtio_status(net.d);
}

static void rx_post(u16 i)
{
	net.rx.desc[i] = (struct vring_desc){ (u64)rxbufs[i], RXBUF_SIZE, VRING_DESC_F_WRITE, 0 };
	gvq_put(&net.rx, i);
}

/* Reset, negotiate, both queues, DRIVER_OK, receive buffers posted. */
static int vnet_open(struct vdev *d)
{
	virtio_reset(d);
	u64 offered = virtio_begin(d);
	u64 csum = 0, gso = 0, tso = 0;
	cmdline_get_u64("csum", &csum);
	cmdline_get_u64("gso", &gso);
	cmdline_get_u64("tso", &tso);
	/* gso= and tso= must get what they ask for: the test is about that path. */
	u64 need = (gso ? VNET_F_GUEST_CSUM | VNET_F_GUEST_TSO4 : 0) | (tso ? VNET_F_CSUM | VNET_F_HOST_TSO4 : 0);
	d->features = offered & (VF_VERSION_1 | VNET_F_MAC | VNET_F_STATUS | VNET_F_MTU | VNET_F_MRG_RXBUF |
				 (csum ? VNET_F_CSUM : 0) | need);
	net.tx_csum = (d->features & VNET_F_CSUM) != 0;
	net.tx_tso = tso && (d->features & VNET_F_HOST_TSO4);
	net.rx_csum = (d->features & VNET_F_GUEST_CSUM) != 0;
	net.rx_tso = (d->features & VNET_F_GUEST_TSO4) != 0;
	if (!(d->features & VF_VERSION_1) || !(d->features & VNET_F_MRG_RXBUF)) {
		printf("%s: device offers 0x%lx, without VERSION_1 or MRG_RXBUF\n", tname, offered);
		return -1;
	}
	if ((d->features & need) != need) {
		printf("%s: device offers 0x%lx, without the offloads 0x%lx that gso=/tso= ask for\n", tname, offered,
		       need & ~d->features);
		return -1;
	}
	if (virtio_set_features(d)) {
		printf("%s: features 0x%lx refused\n", tname, d->features);
		return -1;
	}
	if (gvq_setup(d, &net.rx, 0, VNET_Q, qmem[0]) || gvq_setup(d, &net.tx, 1, VNET_Q, qmem[1])) {
		printf("%s: queue setup failed (status 0x%x)\n", tname, virtio_status(d));
		return -1;
	}
	vc_w8(d, VC_STATUS, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
	for (int i = 0; i < 6; i++)
		net.mac[i] = d->devcfg ? d->devcfg[i] : 0;
	net.status = d->devcfg && (d->features & VNET_F_STATUS) ? *(volatile u16 *)(d->devcfg + 6) : 1;
	net.mtu = d->devcfg && (d->features & VNET_F_MTU) ? *(volatile u16 *)(d->devcfg + 10) : 1500;
	net.hdrlen = VNET_HDR;
	net.mrg = true;
	u64 limit = net.rx.size;
	cmdline_get_u64("rxlimit", &limit);
	net.rx_posted = limit && limit < net.rx.size ? (u16)limit : net.rx.size;
	for (u16 i = 0; i < net.rx_posted; i++)
		rx_post(i);
	vq_kick(&net.rx, 0);
	d->ready = true;
	return 0;
}

/*
 * The same through the legacy registers: features (32 bits), queue
 * select/size/PFN, no FEATURES_OK; with MSI-X off the device config
 * starts at port + 20.
 */
static int vnet_open_legacy(struct vdev *d, bool mrg)
{
	if (!d->pci->bar_io[0] || !d->pci->bar[0]) {
		printf("%s: no legacy I/O BAR (legacy=false device?)\n", tname);
		return -1;
	}
	u16 port = (u16)d->pci->bar[0];
	net.legacy_port = port;
	outb(port + 18, 0);
	outb(port + 18, VS_ACK);
	outb(port + 18, VS_ACK | VS_DRIVER);
	d->offered = inl(port);
	d->features = d->offered & (VNET_F_MAC | VNET_F_STATUS | VNET_F_MTU | (mrg ? VNET_F_MRG_RXBUF : 0));
	outl(port + 4, (u32)d->features);
	for (u16 q = 0; q < 2; q++) {
		struct gvq *vq = q ? &net.tx : &net.rx;
		outw(port + 14, q);
		u16 size = inw(port + 12);
		if (size == 0 || size > 256 || (size & (size - 1))) {
			printf("%s: legacy queue %u has size %u\n", tname, q, size);
			return -1;
		}
		u8 *mem = lqmem[q];
		memset(mem, 0, sizeof(lqmem[q]));
		vq->idx = q;
		vq->size = size;
		vq->desc = (volatile struct vring_desc *)mem;
		vq->avail = (volatile u16 *)(mem + 16 * size);
		vq->used = (volatile u16 *)(mem + ALIGN_UP(16 * size + 6 + 2 * size, 4096));
		vq->avail_idx = vq->used_idx = 0;
		outl(port + 8, (u32)((u64)mem >> 12));
	}
	outb(port + 18, VS_ACK | VS_DRIVER | VS_DRIVER_OK);
	for (int i = 0; i < 6; i++)
		net.mac[i] = inb(port + 20 + i);
	net.status = (d->features & VNET_F_STATUS) ? inw(port + 26) : 1;
	net.mtu = (d->features & VNET_F_MTU) ? inw(port + 30) : 1500;
	net.mrg = (d->features & VNET_F_MRG_RXBUF) != 0;
	net.hdrlen = net.mrg ? 12 : 10;
	net.rx_posted = VNET_Q;
	for (u16 i = 0; i < VNET_Q; i++)	/* 64 of the 256 entries are enough */
		rx_post(i);
	vq_kick(&net.rx, 0);
	return 0;
}

/* Transmit the frame at txbuf + VNET_HDR (its header just before it); the
 * device completes it in the kick. */
static void tx_send(u32 len)
{
	struct gvq *q = &net.tx;
	if (len < 60) {		/* Ethernet minimum, as hardware pads */
		memset(txbuf + VNET_HDR + len, 0, 60 - len);
		len = 60;
	}
	memset(txbuf, 0, VNET_HDR);
	/* virtio_net_hdr, little-endian: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset */
	u8 *h = txbuf + VNET_HDR - net.hdrlen;
	if (net.tx_csum_start) {
		h[0] = HDR_F_NEEDS_CSUM;
		h[6] = (u8)net.tx_csum_start;
		h[7] = (u8)(net.tx_csum_start >> 8);
		h[8] = (u8)net.tx_csum_offset;
		h[9] = (u8)(net.tx_csum_offset >> 8);
	}
	if (net.tx_gso_type) {
		h[1] = net.tx_gso_type;
		h[2] = (u8)net.tx_hdr_len;
		h[3] = (u8)(net.tx_hdr_len >> 8);
		h[4] = (u8)net.tx_gso_size;
		h[5] = (u8)(net.tx_gso_size >> 8);
	}
	net.tx_csum_start = net.tx_csum_offset = net.tx_gso_size = net.tx_hdr_len = 0;
	net.tx_gso_type = HDR_GSO_NONE;
	u16 slot = q->avail_idx & (q->size - 1);
	q->desc[slot] = (struct vring_desc){ (u64)(txbuf + VNET_HDR - net.hdrlen), net.hdrlen + len, 0, 0 };
	gvq_put(q, slot);
	vq_kick(q, 1);
	u64 end = now_us() + 1000000;
	while (READ_ONCE(q->used[1]) == q->used_idx) {
		if (now_us() > end || (net_status() & VS_NEEDS_RESET))
			test_fail(tname, "transmit of %u bytes not completed (status 0x%x)", len, net_status());
		cpu_relax();
	}
	q->used_idx = READ_ONCE(q->used[1]);
	net.tx_frames++;
}

/*
 * The offload half of the received header (5.1.6.4): anything the device
 * may only send after GUEST_CSUM/GUEST_TSO4 is a device bug without them.
 * A NEEDS_CSUM frame is completed here, as a NIC would on transmit: the
 * field at csum_start + csum_offset holds the pseudo-header sum, the sum
 * from csum_start to the end of the packet goes into it.  tcp_input then
 * checks that checksum like any other, and fails the test if it is wrong:
 * the header pointed at the wrong bytes, or the frame was corrupted.
 */
static void rx_offload(u32 len)
{
	const u8 *h = net.rx_hdr;
	u8 flags = h[0], gso = h[1];
	u32 gso_size = h[4] | (u32)h[5] << 8, cstart = h[6] | (u32)h[7] << 8, coff = h[8] | (u32)h[9] << 8;
	if (flags & ~(HDR_F_NEEDS_CSUM | HDR_F_DATA_VALID))
		test_fail(tname, "received header flags 0x%x: unknown bits", flags);
	if (flags && !net.rx_csum)
		test_fail(tname, "received header flags 0x%x without GUEST_CSUM negotiated", flags);
	if (gso != HDR_GSO_NONE) {
		if (gso != HDR_GSO_TCPV4 || !net.rx_tso)
			test_fail(tname, "received gso_type 0x%x, not negotiated", gso);
		if (gso_size == 0 || gso_size > len)
			test_fail(tname, "received TCPV4 frame of %u bytes with gso_size %u", len, gso_size);
		net.rx_gso++;
		if (len > net.rx_gso_max) {
			net.rx_gso_max = len;
			net.rx_gso_size = gso_size;
		}
	}
	if (flags & HDR_F_DATA_VALID)
		net.rx_data_valid++;
	net.rx_completed = false;
	if (!(flags & HDR_F_NEEDS_CSUM))
		return;
	/* The end of the IPv4 packet, not of the frame (Ethernet padding is not summed). */
	u32 end = len;
	if (len >= 14 + 20 && get16(frame + 12) == ETH_IP && 14 + (u32)get16(frame + 16) <= len)
		end = 14 + get16(frame + 16);
	if (cstart + coff + 2 > end)
		test_fail(tname, "received NEEDS_CSUM with csum_start %u + csum_offset %u beyond the %u-byte packet",
			  cstart, coff, end);
	put16(frame + cstart + coff, csum_fold(csum_add(0, frame + cstart, end - cstart)));
	net.rx_needs_csum++;
	net.rx_completed = true;
}

/* Next received frame into `frame`: its length, or 0 if none. */
static u32 rx_poll(void)
{
	struct gvq *q = &net.rx;
	if (READ_ONCE(q->used[1]) == q->used_idx)
		return 0;
	barrier();
	u32 total = 0, nbufs = 1;
	bool toolong = false;
	for (u32 k = 0; k < nbufs; k++) {
		u64 end = now_us() + 100000;
		while (READ_ONCE(q->used[1]) == q->used_idx)	/* rest of a merged frame */
			if (now_us() > end)
				test_fail(tname, "merged frame: buffer %u of %u missing", k + 1, nbufs);
		volatile u32 *e = (volatile u32 *)&q->used[2 + 4 * (q->used_idx & (q->size - 1))];
		u32 id = e[0], len = e[1];
		q->used_idx++;
		if (id >= q->size || len > RXBUF_SIZE)
			test_fail(tname, "used element id %u len %u out of range", id, len);
		const u8 *b = rxbufs[id];
		u32 off = 0;
		if (k == 0) {
			if (len < net.hdrlen)
				test_fail(tname, "received buffer of %u bytes, shorter than the header", len);
			nbufs = net.mrg ? (b[10] | (u32)b[11] << 8) : 1;
			if (nbufs == 0 || nbufs > q->size)
				test_fail(tname, "num_buffers %u", nbufs);
			memcpy(net.rx_hdr, b, net.hdrlen);
			off = net.hdrlen;
		}
		if (total + len - off > FRAME_MAX)
			toolong = true;
		else
			memcpy(frame + total, b + off, len - off);
		total += len - off;
		rx_post((u16)id);
	}
	vq_kick(q, 0);
	net.last_nbufs = nbufs;
	net.rx_frames++;
	if (toolong)
		test_fail(tname, "received a frame of %u bytes (more than %u)", total, (u32)FRAME_MAX);
	rx_offload(total);
	return total;
}

/* ---- Ethernet, ARP, IPv4, ICMP ---- */

static u8 *eth_payload(void) { return txbuf + VNET_HDR + 14; }

static void eth_send(const u8 *dst, u16 type, u32 plen)
{
	u8 *e = txbuf + VNET_HDR;
	memcpy(e, dst, 6);
	memcpy(e + 6, net.mac, 6);
	put16(e + 12, type);
	tx_send(14 + plen);
}

static void arp_send(u16 op, const u8 *dst_mac, u32 tip)
{
	static const u8 bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	u8 *a = eth_payload();
	put16(a, 1);
	put16(a + 2, ETH_IP);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, op);
	memcpy(a + 8, net.mac, 6);
	put32(a + 14, net.ip);
	if (op == 1)
		memset(a + 18, 0, 6);
	else
		memcpy(a + 18, dst_mac, 6);
	put32(a + 24, tip);
	eth_send(op == 1 ? bcast : dst_mac, ETH_ARP, 28);
}

/* IPv4 header at p for `plen` payload bytes; returns the payload. */
static u8 *ip_header(u8 *p, u8 proto, u32 dst, u32 plen)
{
	static u16 ip_id;
	p[0] = 0x45;
	p[1] = 0;
	put16(p + 2, (u16)(20 + plen));
	put16(p + 4, ++ip_id);
	put16(p + 6, 0);
	p[8] = 64;
	p[9] = proto;
	put16(p + 10, 0);
	put32(p + 12, net.ip);
	put32(p + 16, dst);
	put16(p + 10, csum_fold(csum_add(0, p, 20)));
	return p + 20;
}

static u8 ping_byte(u32 i, u16 seq) { return (u8)(i * 7 + seq); }

static void ping_send(u32 len)
{
	u8 *icmp = ip_header(eth_payload(), IP_ICMP, net.peer, 8 + len);
	icmp[0] = 8;
	icmp[1] = 0;
	put16(icmp + 2, 0);
	put16(icmp + 4, ICMP_ID);
	put16(icmp + 6, net.ping_seq);
	for (u32 i = 0; i < len; i++)
		icmp[8 + i] = ping_byte(i, net.ping_seq);
	if (net.tx_csum) {	/* the device (the host kernel) fills it in */
		net.tx_csum_start = 14 + 20;
		net.tx_csum_offset = 2;
	} else
		put16(icmp + 2, csum_fold(csum_add(0, icmp, 8 + len)));
	eth_send(net.peer_mac, ETH_IP, 20 + 8 + len);
}

static void icmp_input(const u8 *eth, const u8 *ip, const u8 *icmp, u32 len)
{
	if (len < 8 || csum_fold(csum_add(0, icmp, len)) != 0)
		return;
	if (icmp[0] == 8 && icmp[1] == 0) {	/* echo request: answer it */
		u8 *r = ip_header(eth_payload(), IP_ICMP, get32(ip + 12), len);
		memcpy(r, icmp, len);
		r[0] = 0;
		put16(r + 2, 0);
		put16(r + 2, csum_fold(csum_add(0, r, len)));
		eth_send(eth + 6, ETH_IP, 20 + len);
		return;
	}
	if (icmp[0] != 0 || get16(icmp + 4) != ICMP_ID || get16(icmp + 6) != net.ping_seq || net.ping_result)
		return;
	bool ok = len == 8 + net.ping_len;
	for (u32 i = 0; ok && i < net.ping_len; i++)
		ok = icmp[8 + i] == ping_byte(i, net.ping_seq);
	net.ping_result = ok ? 1 : -1;
	net.ping_nbufs = net.last_nbufs;
}

/* ---- TCP: one echo connection ---- */

static u16 tcp_csum(u32 src, u32 dst, const u8 *seg, u32 len)
{
	u8 ph[12];
	put32(ph, src);
	put32(ph + 4, dst);
	ph[8] = 0;
	ph[9] = IP_TCP;
	put16(ph + 10, (u16)len);
	return csum_fold(csum_add(csum_add(0, ph, 12), seg, len));
}

static void tcp_send(u32 seq, u8 flags, const u8 *data, u32 len)
{
	u32 optlen = (flags & TCP_SYN) ? 4 : 0;
	u8 *t = ip_header(eth_payload(), IP_TCP, net.rip, 20 + optlen + len);
	put16(t, net.lport);
	put16(t + 2, net.rport);
	put32(t + 4, seq);
	put32(t + 8, (flags & TCP_ACK) ? net.rcv_nxt : 0);
	t[12] = (u8)((20 + optlen) / 4) << 4;
	t[13] = flags;
	/* Window: what the echo buffer can still take (we keep echoed bytes until acknowledged). */
	net.last_wnd = (u32)sizeof(unacked) - net.unacked_len;
	put16(t + 14, (u16)net.last_wnd);
	put16(t + 16, 0);
	put16(t + 18, 0);
	if (optlen) {			/* MSS */
		t[20] = 2;
		t[21] = 4;
		put16(t + 22, (u16)(net.mtu - 40));
	}
	memcpy(t + 20 + optlen, data, len);
	u32 tlen = 20 + optlen + len;
	if (net.tx_tso) {
		/* The device sums from csum_start; the field starts as the pseudo-header sum. */
		u8 ph[12];
		put32(ph, net.ip);
		put32(ph + 4, net.rip);
		ph[8] = 0;
		ph[9] = IP_TCP;
		put16(ph + 10, (u16)tlen);
		put16(t + 16, (u16)~csum_fold(csum_add(0, ph, 12)));
		net.tx_csum_start = 14 + 20;
		net.tx_csum_offset = 16;
		if (len > net.peer_mss) {	/* the device cuts it into peer_mss segments */
			net.tx_gso_type = HDR_GSO_TCPV4;
			net.tx_gso_size = (u16)net.peer_mss;
			net.tx_hdr_len = (u16)(14 + 20 + 20 + optlen);
			net.tx_tso_frames++;
			if (14 + 20 + tlen > net.tx_tso_max)
				net.tx_tso_max = 14 + 20 + tlen;
		}
	} else {
		put16(t + 16, tcp_csum(net.ip, net.rip, t, tlen));
	}
	eth_send(net.rmac, ETH_IP, 20 + tlen);
}

/* Data from seq on: in peer_mss segments, or TSO_SEG ones the device cuts up (tso=1). */
static void tcp_send_data(u32 seq, const u8 *data, u32 len)
{
	u32 seg = net.tx_tso ? TSO_SEG : net.peer_mss;
	for (u32 off = 0; off < len;) {
		u32 n = len - off < seg ? len - off : seg;
		tcp_send(seq + off, TCP_ACK | TCP_PSH, data + off, n);
		off += n;
	}
}

/* (Re)send everything from snd_una: unacknowledged data, then our FIN. */
static void tcp_output(void)
{
	if (net.tcp == TCP_SYN_RCVD) {
		tcp_send(net.snd_una, TCP_SYN | TCP_ACK, NULL, 0);
	} else {
		tcp_send_data(net.snd_una, unacked, net.unacked_len);
		if (net.fin_sent)
			tcp_send(net.snd_una + net.unacked_len, TCP_FIN | TCP_ACK, NULL, 0);
	}
	net.rto_deadline = now_us() + 500000;
}

static void tcp_input(const u8 *eth, const u8 *ip, const u8 *t, u32 len)
{
	u32 src = get32(ip + 12);
	if (len < 20 || get16(t + 2) != net.lport)
		return;
	if (tcp_csum(src, net.ip, t, len) != 0) {
		/* No wire between the host kernel and us: a checksum we completed
		 * ourselves can only be wrong if the header pointed elsewhere. */
		if (net.rx_completed)
			test_fail(tname, "tcp: %u-byte segment: checksum wrong after completing NEEDS_CSUM "
				  "(csum_start %u, csum_offset %u)", len, net.rx_hdr[6] | net.rx_hdr[7] << 8,
				  net.rx_hdr[8] | net.rx_hdr[9] << 8);
		return;
	}
	u32 hl = (u32)(t[12] >> 4) * 4, seq = get32(t + 4), ack = get32(t + 8);
	u8 fl = t[13];
	if (hl < 20 || hl > len)
		return;
	const u8 *data = t + hl;
	u32 dlen = len - hl;
	char a[16];
	if (net.tcp == TCP_LISTEN) {
		if (!(fl & TCP_SYN) || (fl & (TCP_ACK | TCP_RST)))
			return;
		net.rip = src;
		net.rport = get16(t);
		memcpy(net.rmac, eth + 6, 6);
		net.rcv_nxt = seq + 1;
		net.snd_una = 0x68790000;	/* any initial sequence number will do */
		net.snd_nxt = net.snd_una + 1;
		net.peer_mss = 536;
		for (u32 o = 20; o + 1 < hl;) {	/* the peer's MSS option */
			if (t[o] == 0)
				break;
			if (t[o] == 1) {
				o++;
				continue;
			}
			if (t[o] == 2 && t[o + 1] == 4 && o + 4 <= hl)
				net.peer_mss = get16(t + o + 2);
			if (t[o + 1] < 2)
				break;
			o += t[o + 1];
		}
		if (net.peer_mss > (u32)net.mtu - 40)
			net.peer_mss = net.mtu - 40;
		net.tcp = TCP_SYN_RCVD;
		tcp_output();
		return;
	}
	if (src != net.rip || get16(t) != net.rport)
		return;
	if (fl & TCP_RST) {
		fmt_ip(a, src);
		test_fail(tname, "tcp: connection from %s reset by the peer", a);
	}
	if (fl & TCP_SYN) {			/* our SYN/ACK was lost */
		if (net.tcp == TCP_SYN_RCVD)
			tcp_output();
		return;
	}
	if (!(fl & TCP_ACK))
		return;
	if (net.tcp == TCP_SYN_RCVD) {
		if (ack != net.snd_nxt)
			return;
		net.snd_una = ack;
		net.tcp = TCP_ESTABLISHED;
		fmt_ip(a, src);
		printf("%s: tcp: connection from %s:%u\n", tname, a, net.rport);
	}
	u32 acked = ack - net.snd_una;
	if (acked && acked <= net.unacked_len + (net.fin_sent ? 1 : 0)) {
		u32 d = acked > net.unacked_len ? net.unacked_len : acked;
		memcpy(unacked, unacked + d, net.unacked_len - d);	/* forward copy: safe */
		net.unacked_len -= d;
		net.snd_una = ack;
		if (net.fin_sent && acked > d) {
			net.tcp = TCP_DONE;
			return;
		}
		/* Room again after a (nearly) closed window: say so, or the peer waits for its probe timer. */
		if (net.last_wnd < net.peer_mss && !dlen && !(fl & TCP_FIN))
			tcp_send(net.snd_nxt, TCP_ACK, NULL, 0);
	}
	bool fin = fl & TCP_FIN;
	if (dlen || fin) {
		if (seq != net.rcv_nxt || net.fin_sent) {
			tcp_send(net.snd_nxt, TCP_ACK, NULL, 0);	/* duplicate or out of order */
			return;
		}
		if (net.unacked_len + dlen > sizeof(unacked))
			test_fail(tname, "tcp: more than %u bytes unacknowledged", (u32)sizeof(unacked));
		net.rcv_nxt += dlen;
		memcpy(unacked + net.unacked_len, data, dlen);
		u32 from = net.unacked_len;
		net.unacked_len += dlen;
		net.echoed += dlen;
		tcp_send_data(net.snd_una + from, unacked + from, dlen);	/* echo the new bytes */
		net.snd_nxt = net.snd_una + net.unacked_len;
		if (fin) {			/* their FIN: ours goes right back (no half-close) */
			net.rcv_nxt++;
			net.fin_sent = true;
			net.tcp = TCP_LAST_ACK;
			tcp_send(net.snd_nxt, TCP_FIN | TCP_ACK, NULL, 0);
			net.snd_nxt++;
		}
		net.rto_deadline = now_us() + 500000;
	}
}

/* ---- dispatch ---- */

static void handle_frame(u32 len)
{
	const u8 *f = frame;
	if (len < 14)
		return;
	u16 type = get16(f + 12);
	if (type == ETH_ARP && len >= 14 + 28) {
		const u8 *a = f + 14;
		u16 op = get16(a + 6);
		u32 spa = get32(a + 14), tpa = get32(a + 24);
		if (spa == net.peer && (op == 1 || op == 2) && !net.peer_known) {
			memcpy(net.peer_mac, a + 8, 6);
			net.peer_known = true;
		}
		if (op == 1 && tpa == net.ip)
			arp_send(2, a + 8, spa);
		return;
	}
	if (type != ETH_IP || len < 14 + 20)
		return;
	const u8 *ip = f + 14;
	u32 ihl = (u32)(ip[0] & 15) * 4, tot = get16(ip + 2);
	if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl || tot > len - 14 || get32(ip + 16) != net.ip ||
	    csum_fold(csum_add(0, ip, ihl)) != 0 || (get16(ip + 6) & 0x3fff))	/* no fragments */
		return;
	if (ip[9] == IP_ICMP)
		icmp_input(f, ip, ip + ihl, tot - ihl);
	else if (ip[9] == IP_TCP && net.tcp != TCP_CLOSED)
		tcp_input(f, ip, ip + ihl, tot - ihl);
}

/* Handle frames until done() or the deadline; false on timeout. */
static bool poll_until(bool (*done)(void), u64 timeout_us)
{
	u64 end = now_us() + timeout_us;
	for (u32 spins = 0; !done(); spins++) {
		if (now_us() > end)
			return false;
		u32 len = rx_poll();
		if (len)
			handle_frame(len);
		else
			cpu_relax();
		/* A status read is a VM exit: only now and then. */
		if ((spins & 4095) == 0 && (net_status() & VS_NEEDS_RESET))
			test_fail(tname, "device set NEEDS_RESET (status 0x%x)", net_status());
		if (net.tcp >= TCP_SYN_RCVD && net.tcp < TCP_DONE && now_us() > net.rto_deadline)
			tcp_output();	/* retransmit */
	}
	return true;
}

static bool peer_known(void) { return net.peer_known; }
static bool ping_done(void) { return net.ping_result != 0; }
static bool tcp_done(void) { return net.tcp == TCP_DONE; }

/* ---- txbad=1: offload headers that must not reach the host ---- */

#define TXBAD_PORT 9999

/* A UDP datagram to the peer's TXBAD_PORT, its checksum left to the device. */
static void udp_offload_send(const char *msg, u16 csum_start, u8 gso_type, u16 gso_size)
{
	u32 n = strlen(msg);
	u8 *u = ip_header(eth_payload(), IP_UDP, net.peer, 8 + n);
	put16(u, TXBAD_PORT);
	put16(u + 2, TXBAD_PORT);
	put16(u + 4, (u16)(8 + n));
	memcpy(u + 8, msg, n);
	u8 ph[12];
	put32(ph, net.ip);
	put32(ph + 4, net.peer);
	ph[8] = 0;
	ph[9] = IP_UDP;
	put16(ph + 10, (u16)(8 + n));
	put16(u + 6, (u16)~csum_fold(csum_add(0, ph, 12)));
	net.tx_csum_start = csum_start;
	net.tx_csum_offset = 6;
	net.tx_gso_type = gso_type;
	net.tx_gso_size = gso_size;
	net.tx_hdr_len = 14 + 20 + 8;
	eth_send(net.peer_mac, ETH_IP, 20 + 8 + n);
}

/*
 * Each bad datagram names itself; the host's listener on TXBAD_PORT must
 * see only the good one.  Every transmit must still complete (tx_send
 * waits for it), and the device must keep working (the ping after).
 */
static void tx_bad_headers(void)
{
	if (!net.tx_csum)
		test_fail(tname, "txbad=1 needs CSUM (csum=1 or tso=1)");
	/* The kernel refuses a checksum field past the end of the packet. */
	udp_offload_send("bad: csum_start past the end", 14 + 20 + 200, HDR_GSO_NONE, 0);
	/* UDP fragmentation offload (UFO, 3) is not offered: the device must not pass it on. */
	udp_offload_send("bad: gso_type UDP (not negotiated)", 14 + 20, 3, 8);
	/* TCPV4 with ECN needs HOST_ECN, not offered either. */
	udp_offload_send("bad: gso_type TCPV4|ECN (not negotiated)", 14 + 20, 0x81, 8);
	if (!net.tx_tso)	/* TCPV4 itself, when HOST_TSO4 is not negotiated */
		udp_offload_send("bad: gso_type TCPV4 (not negotiated)", 14 + 20, HDR_GSO_TCPV4, 8);
	udp_offload_send("good: checksum offload", 14 + 20, HDR_GSO_NONE, 0);
	printf("net: txbad: bad offload headers sent, then a good datagram\n");
}

static bool arp_resolve(void)
{
	for (int i = 0; i < 10 && !net.peer_known; i++) {
		arp_send(1, NULL, net.peer);
		poll_until(peer_known, 500000);
	}
	return net.peer_known;
}

/* rxlimit=: the reply does not fit what is posted; it must arrive once the rest is. */
static void ping_held_reply(u32 len)
{
	char a[16];
	fmt_ip(a, net.peer);
	u16 used = READ_ONCE(net.rx.used[1]);
	net.ping_seq++;
	net.ping_len = len;
	net.ping_result = 0;
	ping_send(len);
	poll_until(ping_done, 500000);
	if (net.ping_result || READ_ONCE(net.rx.used[1]) != used)
		test_fail(tname, "rxlimit: a %u-byte reply came with %u buffers of %u bytes posted", len, net.rx_posted,
			  RXBUF_SIZE);
	printf("net: rx: %u buffers posted, the %u-byte reply waits in the device\n", net.rx_posted, len);
	for (u16 i = net.rx_posted; i < net.rx.size; i++)
		rx_post(i);
	net.rx_posted = net.rx.size;
	vq_kick(&net.rx, 0);
	if (!poll_until(ping_done, 2000000) || net.ping_result < 0)
		test_fail(tname, "rxlimit: no valid %u-byte reply after posting more buffers", len);
	printf("net: ping %s: %u bytes, reply ok (payload verified) once buffers were added, %u rx buffers\n", a, len,
	       net.ping_nbufs);
}

static void ping(u32 len)
{
	char a[16];
	fmt_ip(a, net.peer);
	if (net.rx_posted < net.rx.size && len + 42 + net.hdrlen > (u32)net.rx_posted * RXBUF_SIZE) {
		ping_held_reply(len);
		return;
	}
	for (int tries = 0; tries < 3; tries++) {
		net.ping_seq++;
		net.ping_len = len;
		net.ping_result = 0;
		u64 t0 = rdtsc();
		ping_send(len);
		if (!poll_until(ping_done, 2000000))
			continue;
		u64 us = (rdtsc() - t0) * 1000 / net.khz;
		if (net.ping_result < 0)
			test_fail(tname, "ping %s: %u-byte reply with a wrong payload", a, len);
		printf("%s: ping %s: %u bytes, reply ok (payload verified), rtt %lu us, %u rx buffer%s\n", tname, a, len,
		       us, net.ping_nbufs, net.ping_nbufs == 1 ? "" : "s");
		return;
	}
	test_fail(tname, "ping %s: no reply to a %u-byte echo request", a, len);
}

static void describe(struct vdev *d, const char *prefix)
{
	char m[18];
	fmt_mac(m, net.mac);
	printf("%s%02x:%02x.%x (%04x:%04x) mac %s link %s mtu %u features 0x%lx\n", prefix, d->pci->bus, d->pci->dev,
	       d->pci->fn, d->pci->vendor, d->pci->device, m, (net.status & 1) ? "up" : "down", net.mtu, d->features);
}

/* The test body, at CPL3. */
static u64 net_main(u64 arg)
{
	(void)arg;
	struct vdev *d = net.d;
	u64 legacy = 0, mrg = 0;
	cmdline_get_u64("legacy", &legacy);
	cmdline_get_u64("mrg", &mrg);
	if (legacy ? vnet_open_legacy(d, mrg) : vnet_open(d))
		test_fail(tname, "virtio-net initialization failed");
	describe(d, "net: ");
	if (legacy)
		printf("net: legacy interface, %u-byte header, mergeable rx buffers %s\n", net.hdrlen,
		       net.mrg ? "on" : "off");
	printf("net: offered features 0x%lx%s\n", d->offered, net.tx_csum ? ", pings use tx checksum offload" : "");
	printf("net: negotiated features 0x%lx%s%s\n", d->features, net.rx_tso ? ", rx csum+tso4 offload" : "",
	       net.tx_tso ? ", tx tso4 offload" : "");
	if (!(net.status & 1))
		test_fail(tname, "link is down");
	char a[16], m[18];
	if (net.peer) {
		fmt_ip(a, net.peer);
		if (!arp_resolve())
			test_fail(tname, "arp: no reply from %s", a);
		fmt_mac(m, net.peer_mac);
		printf("net: arp: %s is at %s\n", a, m);
		ping(56);
		u64 txbad = 0;
		if (cmdline_get_u64("txbad", &txbad) && txbad) {
			tx_bad_headers();
			ping(56);	/* still transmitting and receiving */
		}
		u64 big = 0;
		if (cmdline_get_u64("big", &big) && big) {
			if (big + 28 > net.mtu || big + 28 + 14 > (net.mrg ? FRAME_MAX : RXBUF_SIZE - net.hdrlen))
				test_fail(tname, "big=%lu does not fit the MTU %u", big, net.mtu);
			ping((u32)big);
		}
	}
	u64 port = 0, wait = 60;
	cmdline_get_u64("wait", &wait);
	if (cmdline_get_u64("listen", &port) && port && port < 65536) {
		net.lport = (u16)port;
		net.tcp = TCP_LISTEN;
		fmt_ip(a, net.ip);
		printf("net: tcp: listening on %s port %lu\n", a, port);
		if (!poll_until(tcp_done, wait * 1000000))
			test_fail(tname, "tcp: no complete echo connection within %lu s (state %d, %u bytes echoed)", wait,
				  net.tcp, net.echoed);
		printf("net: tcp: echoed %u bytes, connection closed\n", net.echoed);
	}
	printf("net: rx %lu frames, tx %lu frames\n", net.rx_frames, net.tx_frames);
	if (net.rx_csum)
		printf("net: rx offload: %lu gso frames (largest %u bytes, gso_size %u), %lu needs_csum, %lu data_valid\n",
		       net.rx_gso, net.rx_gso_max, net.rx_gso_size, net.rx_needs_csum, net.rx_data_valid);
	if (net.tx_tso)
		printf("net: tx offload: %lu tso frames (largest %u bytes)\n", net.tx_tso_frames, net.tx_tso_max);
	return 0;
}

static void net_setup(const char *name)
{
	tname = name;
	memset(&net, 0, sizeof(net));
	net.khz = tsc_khz();
	net.d = virtio_find(VIRTIO_ID_NET, 0);
	if (!net.d)
		test_fail(name, "no virtio-net device");
	const char *s = cmdline_get("ip");
	if (!s || !parse_ip(s, &net.ip))
		test_fail(name, "needs ip=A.B.C.D on the command line");
	s = cmdline_get("peer");
	if (s && !parse_ip(s, &net.peer))
		test_fail(name, "bad peer= address");
}

static void run_user(const char *name, user_fn_t fn)
{
	if (user_run(fn, 0, 0) == ~0UL)
		test_fail(name, "CPL3 code took exception %lu at rip %lx", user_fault_vec, user_fault_rip);
}

static void t_net(void)
{
	net_setup("net");
	run_user("net", net_main);
}
GUEST_TEST(net, t_net);

/* ---- test=netbad: malformed transmit chains ---- */

static void bad_tx(const char *what, const struct vring_desc *descs, int n)
{
	struct vdev *d = net.d;
	if (vnet_open(d))
		test_fail(tname, "%s: initialization failed", what);
	struct gvq *q = &net.tx;
	for (int i = 0; i < n; i++)
		q->desc[i] = descs[i];
	gvq_put(q, 0);
	vq_kick(q, 1);
	if (!virtio_wait_status(d, VS_NEEDS_RESET, 2000))
		test_fail(tname, "%s: status 0x%x, DEVICE_NEEDS_RESET not set", what, virtio_status(d));
	if (READ_ONCE(q->used[1]) != 0)
		test_fail(tname, "%s: the device completed the chain", what);
	printf("netbad: %s -> status 0x%x (NEEDS_RESET)\n", what, virtio_status(d));
	virtio_reset(d);
	if (virtio_status(d) != 0)
		test_fail(tname, "%s: status 0x%x after reset", what, virtio_status(d));
}

static u64 netbad_main(u64 arg)
{
	(void)arg;
	u64 buf = (u64)txbuf;
	struct vring_desc c1[2] = {
		{ buf, 64, VRING_DESC_F_NEXT, 1 },
		{ buf + 64, 64, VRING_DESC_F_WRITE, 0 },
	};
	bad_tx("transmit chain with a device-writable buffer", c1, 2);
	struct vring_desc c2[1] = { { buf, 4, 0, 0 } };
	bad_tx("transmit chain of 4 bytes (shorter than the header)", c2, 1);
	if (vnet_open(net.d))
		test_fail(tname, "re-initialization failed");
	char a[16];
	fmt_ip(a, net.peer);
	if (!net.peer || !arp_resolve())
		test_fail(tname, "after reset: no arp reply from %s", a);
	printf("netbad: virtio-net works again after reset (arp reply from %s)\n", a);
	return 0;
}

static void t_netbad(void)
{
	net_setup("netbad");
	run_user("netbad", netbad_main);
}
GUEST_TEST(netbad, t_netbad);

/* ---- shell ---- */

static void cmd_net(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	int n = 0;
	for (struct vdev *d; (d = virtio_find(VIRTIO_ID_NET, n)); n++) {
		/* Read the config without taking the device over: features as offered. */
		vc_w32(d, VC_DFSELECT, 0);
		d->features = vc_r32(d, VC_DF);
		for (int i = 0; i < 6; i++)
			net.mac[i] = d->devcfg ? d->devcfg[i] : 0;
		net.status = d->devcfg && (d->features & VNET_F_STATUS) ? *(volatile u16 *)(d->devcfg + 6) : 1;
		net.mtu = d->devcfg && (d->features & VNET_F_MTU) ? *(volatile u16 *)(d->devcfg + 10) : 1500;
		char prefix[8];
		snprintf(prefix, sizeof(prefix), "net%d: ", n);
		describe(d, prefix);
	}
	if (!n)
		printf("no virtio-net devices\n");
}
SHELL_COMMAND(net, "net           virtio-net devices: MAC, link, MTU", cmd_net);
