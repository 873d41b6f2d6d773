/*
 * virtio-console with VIRTIO_CONSOLE_F_MULTIPORT (virtio 1.2, 5.3) and
 * test=console: an echo service on port 1.
 *
 * The driver sets up the control queues (2: device->driver, 3: driver->
 * device) and port 1's receive/transmit queues (4/5), sends DEVICE_READY,
 * answers every PORT_ADD with PORT_READY and opens port 1 (PORT_OPEN 1).
 * Every PORT_NAME is reported as "console: port ID name 'NAME'" (any
 * port; quotes and bytes outside printable ASCII shown as '?', names
 * longer than 63 bytes cut and flagged), so the host side can check which
 * name arrived for which id.  Each time the host side of port 1 opens (a
 * socket client connects) it sends "vcons: hello N on port 1 'NAME'\n";
 * every line it receives is sent back upper-cased; the line "quit" is
 * answered with "BYE\n" and ends the test.  The host side is
 * tests/test_console.sh.
 *
 * Queues are polled; receive buffers are deliberately few and small so
 * that a bulk write from the host must wait for the guest (the device
 * stops reading the socket and resumes on the guest's kick).  Buffers are
 * one descriptor each: descriptor i always describes buffer i.
 */
#include "virtio.h"
#include "tests.h"

#define VIRTIO_ID_CONSOLE 3
#define VCON_F_MULTIPORT (1UL << 1)

#define VCON_DEVICE_READY 0
#define VCON_PORT_ADD 1
#define VCON_PORT_REMOVE 2
#define VCON_PORT_READY 3
#define VCON_CONSOLE_PORT 4
#define VCON_RESIZE 5
#define VCON_PORT_OPEN 6
#define VCON_PORT_NAME 7

#define GQ_SIZE 16
#define CIN_BUFS 8		/* control receive buffers */
#define CIN_BUFSZ 128		/* a control header and a name of up to 120 bytes */
#define RX_BUFS 4		/* port 1 receive buffers */
#define RX_BUFSZ 128
#define ECHO_PORT 1
#define VCON_NAMEMAX 63		/* hyve's limit; longer names are cut */

struct vcon_ctrl {
	u32 id;
	u16 event;
	u16 value;
} __attribute__((packed));

/* Four polled split queues (struct gvq, virtio.h): control in/out and the echo port's. */
static u8 qmem[4][4096] __attribute__((aligned(4096)));
static u8 cin_buf[CIN_BUFS][CIN_BUFSZ] __attribute__((aligned(64)));
static u8 rx_buf[RX_BUFS][RX_BUFSZ] __attribute__((aligned(64)));
static struct vcon_ctrl cout_msg __attribute__((aligned(64)));
static char tx_buf[512] __attribute__((aligned(64)));

static struct gvq cin, cout, rxq, txq;

static const char *T = "console";

/* Make buffer `id` (descriptor id) available. */
static void gq_post(struct gvq *q, u16 id, void *buf, u32 len, bool writable)
{
	q->desc[id] = (struct vring_desc){ (u64)buf, len, writable ? VRING_DESC_F_WRITE : 0, 0 };
	gvq_put(q, id);
}

static void gq_kick(struct gvq *q)
{
	*q->notify = q->idx;
}

/* Next used element, if any.  The id is checked against the queue size. */
static bool gq_get(struct gvq *q, u32 *id, u32 *len)
{
	if (READ_ONCE(q->used[1]) == q->used_idx)
		return false;
	barrier();
	volatile u32 *e = (volatile u32 *)&q->used[2 + 4 * (q->used_idx & (q->size - 1))];
	*id = e[0];
	*len = e[1];
	q->used_idx++;
	if (*id >= q->size)
		test_fail(T, "queue %u: used id %u out of range", q->idx, *id);
	return true;
}

/* Post one device-readable buffer (descriptor 0) and wait until it is used. */
static void gq_send_sync(struct vdev *d, struct gvq *q, void *buf, u32 len, const char *what)
{
	gq_post(q, 0, buf, len, false);
	gq_kick(q);
	u64 end = rdtsc() + 5000 * tsc_khz();
	u32 id, ulen;
	for (u64 iter = 1; !gq_get(q, &id, &ulen); iter++) {
		if ((s64)(rdtsc() - end) > 0)
			test_fail(T, "%s: not completed within 5 s (status 0x%x)", what, virtio_status(d));
		if ((iter & 1023) == 0 && (virtio_status(d) & VS_NEEDS_RESET))
			test_fail(T, "%s: device needs reset", what);
		cpu_relax();
	}
}

static void ctrl_send(struct vdev *d, u32 id, u16 event, u16 value)
{
	cout_msg = (struct vcon_ctrl){ id, event, value };
	gq_send_sync(d, &cout, &cout_msg, sizeof(cout_msg), "control message");
}

static void port_write(struct vdev *d, const char *s, u32 len)
{
	if (len > sizeof(tx_buf))
		len = sizeof(tx_buf);
	memcpy(tx_buf, s, len);
	gq_send_sync(d, &txq, tx_buf, len, "port 1 transmit");
}

static struct {
	bool host_open, named;
	char name[VCON_NAMEMAX + 1];	/* port 1's */
	u32 conns, lines, bytes_in, ports_added;
	char line[256];
	u32 linelen;
} st;

static void greet(struct vdev *d)
{
	char msg[128];
	int n = snprintf(msg, sizeof(msg), "vcons: hello %u on port %u '%s'\n", st.conns, ECHO_PORT, st.name);
	port_write(d, msg, (u32)n);
}

/* A line from the host (without its newline). */
static void handle_line(struct vdev *d)
{
	char out[sizeof(st.line) + 1];
	u32 n = st.linelen;
	st.linelen = 0;
	if (n == 4 && !memcmp(st.line, "quit", 4)) {
		port_write(d, "BYE\n", 4);
		printf("console: quit after %u connections, %u lines echoed, %u bytes received\n", st.conns,
		       st.lines, st.bytes_in);
		test_pass(T);
	}
	for (u32 i = 0; i < n; i++) {
		char c = st.line[i];
		out[i] = c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
	}
	out[n] = '\n';
	port_write(d, out, n + 1);
	st.lines++;
}

static void handle_ctrl(struct vdev *d, const u8 *buf, u32 len)
{
	struct vcon_ctrl m;
	if (len < sizeof(m) || len > CIN_BUFSZ)
		test_fail(T, "control message of %u bytes", len);
	memcpy(&m, buf, sizeof(m));
	switch (m.event) {
	case VCON_PORT_ADD:
		st.ports_added++;
		printf("console: port %u added\n", m.id);
		ctrl_send(d, m.id, VCON_PORT_READY, 1);
		if (m.id == ECHO_PORT)
			ctrl_send(d, m.id, VCON_PORT_OPEN, 1);	/* the guest side opens it */
		break;
	case VCON_PORT_NAME: {
		/* The name fills the rest of the message; a trailing NUL is allowed, not required. */
		u32 n = len - sizeof(m);
		const u8 *src = buf + sizeof(m);
		char name[VCON_NAMEMAX + 1];
		bool cut = false;
		if (n > 0 && src[n - 1] == 0)
			n--;
		if (n > VCON_NAMEMAX) {
			n = VCON_NAMEMAX;
			cut = true;
		}
		for (u32 i = 0; i < n; i++)
			name[i] = src[i] >= 0x20 && src[i] < 0x7f && src[i] != '\'' ? (char)src[i] : '?';
		name[n] = 0;
		printf("console: port %u name '%s'%s\n", m.id, name, cut ? " (cut)" : "");
		if (m.id == ECHO_PORT) {
			memcpy(st.name, name, n + 1);
			st.named = true;
		}
		break;
	}
	case VCON_PORT_OPEN:
		printf("console: port %u host %s\n", m.id, m.value ? "connected" : "disconnected");
		if (m.id != ECHO_PORT)
			break;
		if (m.value && !st.host_open) {
			st.host_open = true;
			st.conns++;
			st.linelen = 0;
			greet(d);
		} else if (!m.value) {
			st.host_open = false;
		}
		break;
	default:
		printf("console: control event %u for port %u (value %u)\n", m.event, m.id, m.value);
		break;
	}
}

static void handle_rx(struct vdev *d, const u8 *buf, u32 len)
{
	if (len > RX_BUFSZ)
		test_fail(T, "receive length %u > buffer size %u", len, RX_BUFSZ);
	st.bytes_in += len;
	for (u32 i = 0; i < len; i++) {
		if (buf[i] == '\n' || st.linelen == sizeof(st.line)) {
			handle_line(d);
			if (buf[i] == '\n')
				continue;
		}
		st.line[st.linelen++] = (char)buf[i];
	}
}

static void t_console(void)
{
	struct vdev *d = virtio_find(VIRTIO_ID_CONSOLE, 0);
	if (!d)
		test_fail(T, "no virtio-console device (%d virtio functions on bus 0)", nvdevs);
	virtio_reset(d);
	u64 offered = virtio_begin(d);
	if ((offered & (VF_VERSION_1 | VCON_F_MULTIPORT)) != (VF_VERSION_1 | VCON_F_MULTIPORT))
		test_fail(T, "VERSION_1 and MULTIPORT not both offered (0x%lx)", offered);
	d->features = VF_VERSION_1 | VCON_F_MULTIPORT;
	if (virtio_set_features(d))
		test_fail(T, "features refused");
	if (!d->devcfg)
		test_fail(T, "no device configuration capability");
	u32 maxports = *(volatile u32 *)(d->devcfg + 4);
	u16 nq = vc_r16(d, VC_NUMQ);
	printf("console: %02x:%02x.%x (%04x:%04x) max_nr_ports %u, %u queues, offered 0x%lx\n", d->pci->bus,
	       d->pci->dev, d->pci->fn, d->pci->vendor, d->pci->device, maxports, nq, offered);
	if (maxports <= ECHO_PORT || nq < 2 * ECHO_PORT + 4)
		test_fail(T, "port %u does not exist (max_nr_ports %u, %u queues)", ECHO_PORT, maxports, nq);
	if (gvq_setup(d, &cin, 2, GQ_SIZE, qmem[0]) || gvq_setup(d, &cout, 3, GQ_SIZE, qmem[1]) ||
	    gvq_setup(d, &rxq, 2 + 2 * ECHO_PORT, GQ_SIZE, qmem[2]) || gvq_setup(d, &txq, 3 + 2 * ECHO_PORT, GQ_SIZE, qmem[3]))
		test_fail(T, "queue setup failed (status 0x%x)", virtio_status(d));
	vc_w8(d, VC_STATUS, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
	d->ready = true;

	for (u16 i = 0; i < CIN_BUFS; i++)
		gq_post(&cin, i, cin_buf[i], CIN_BUFSZ, true);
	gq_kick(&cin);
	for (u16 i = 0; i < RX_BUFS; i++)
		gq_post(&rxq, i, rx_buf[i], RX_BUFSZ, true);
	gq_kick(&rxq);
	ctrl_send(d, 0, VCON_DEVICE_READY, 1);

	u64 limit_s = 120;
	cmdline_get_u64("timeout", &limit_s);
	u64 end = rdtsc() + limit_s * 1000 * tsc_khz();
	for (u64 iter = 0;; iter++) {
		u32 id, len;
		bool any = false;
		while (gq_get(&cin, &id, &len)) {
			handle_ctrl(d, cin_buf[id], len);
			gq_post(&cin, (u16)id, cin_buf[id], CIN_BUFSZ, true);
			any = true;
		}
		if (any)
			gq_kick(&cin);
		any = false;
		while (gq_get(&rxq, &id, &len)) {
			handle_rx(d, rx_buf[id], len);
			gq_post(&rxq, (u16)id, rx_buf[id], RX_BUFSZ, true);
			any = true;
		}
		if (any)
			gq_kick(&rxq);
		/* The status register is an exit to the VMM: look now and then. */
		if ((iter & 1023) == 0 && (virtio_status(d) & VS_NEEDS_RESET))
			test_fail(T, "device needs reset (status 0x%x)", virtio_status(d));
		if ((s64)(rdtsc() - end) > 0)
			test_fail(T, "no 'quit' within %lu s (%u ports added, %u connections, %u lines)", limit_s,
				  st.ports_added, st.conns, st.lines);
		cpu_relax();
	}
}
GUEST_TEST(console, t_console);
