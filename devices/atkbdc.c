/*
 * i8042 keyboard controller with a PS/2 keyboard and a PS/2 mouse behind
 * it, fed by the VNC server (devices/fbuf.c): ports 0x60/0x64, IRQ 1 and
 * IRQ 12, the controller commands firmware and OS drivers use, the
 * devices' command sets (reset, identify, LEDs, scancode set, typematic,
 * mouse rates and modes, IntelliMouse detection), scancode set 2 with the
 * controller's translation to set 1 when the command byte asks for it.
 * The reset line (command 0xfe, or output port bit 0 cleared via 0xd1)
 * exits hyve with status 0, as bhyve does.
 *
 * Every byte a device sends goes through its own queue into the one
 * output buffer; the controller raises the device's IRQ when a byte
 * enters the buffer and that IRQ is enabled in the command byte.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../core/exitcode.h"
#include "../core/init.h"
#include "../core/inout.h"
#include "../core/log.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "atkbdc.h"

#define KBD_DATA 0x60
#define KBD_STS_CTL 0x64
#define KBD_IRQ 1
#define AUX_IRQ 12

#define STS_OBF 0x01      /* output buffer full */
#define STS_SYS 0x04      /* system flag: self-test passed */
#define STS_CMD 0x08      /* last write was a command */
#define STS_UNLOCKED 0x10 /* keyboard not inhibited */
#define STS_AUXOBF 0x20   /* the byte in the buffer is the mouse's */

#define CB_KBD_INT 0x01
#define CB_AUX_INT 0x02
#define CB_KBD_OFF 0x10
#define CB_AUX_OFF 0x20
#define CB_XLATE 0x40

#define QLEN 64

struct queue {
	uint8_t b[QLEN];
	int head, n;
};

static struct {
	pthread_mutex_t lock;
	struct vmctx *ctx;
	uint8_t status, ctrl_byte, outbuf;
	uint8_t pending_cmd;     /* controller command waiting for its data byte */
	bool outbuf_aux;
	struct queue kq, aq;
	/* keyboard */
	uint8_t kbd_arg_for;     /* device command waiting for its argument */
	bool kbd_scanning;
	uint8_t kbd_set, kbd_last;
	bool xlate_break;        /* translation: an F0 prefix was seen */
	/* mouse */
	uint8_t aux_arg_for;
	bool aux_reporting, aux_remote;
	uint8_t aux_rate, aux_res, aux_scaling, aux_id;
	uint8_t rate_hist[3];    /* the last sample rates: 200, 100, 80 makes an IntelliMouse */
	int aux_x, aux_y;        /* last absolute position from VNC */
	bool aux_have_pos;
	uint8_t aux_buttons;
} kbd = { .lock = PTHREAD_MUTEX_INITIALIZER, .status = STS_SYS | STS_UNLOCKED, .ctrl_byte = 0x30 | CB_XLATE,
          .kbd_scanning = true, .kbd_set = 2, .aux_rate = 100, .aux_res = 2 };

static void q_put(struct queue *q, uint8_t v)
{
	if (q->n == QLEN)
		return;   /* as a device with a full buffer: the byte is lost */
	q->b[(q->head + q->n++) % QLEN] = v;
}

static bool q_get(struct queue *q, uint8_t *v)
{
	if (!q->n)
		return false;
	*v = q->b[q->head];
	q->head = (q->head + 1) % QLEN;
	q->n--;
	return true;
}

/* Set 2 -> set 1 for the 8042's translation (index: set-2 code). */
static const uint8_t xlate[128] = {
	0xff, 0x43, 0x41, 0x3f, 0x3d, 0x3b, 0x3c, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3e, 0x0f, 0x29, 0x59,
	0x65, 0x38, 0x2a, 0x70, 0x1d, 0x10, 0x02, 0x5a, 0x66, 0x71, 0x2c, 0x1f, 0x1e, 0x11, 0x03, 0x5b,
	0x67, 0x2e, 0x2d, 0x20, 0x12, 0x05, 0x04, 0x5c, 0x68, 0x39, 0x2f, 0x21, 0x14, 0x13, 0x06, 0x5d,
	0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5e, 0x6a, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5f,
	0x6b, 0x33, 0x25, 0x17, 0x18, 0x0b, 0x0a, 0x60, 0x6c, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0c, 0x61,
	0x6d, 0x73, 0x28, 0x74, 0x1a, 0x0d, 0x62, 0x6e, 0x3a, 0x36, 0x1c, 0x1b, 0x75, 0x2b, 0x63, 0x76,
	0x55, 0x56, 0x77, 0x78, 0x79, 0x7a, 0x0e, 0x7b, 0x7c, 0x4f, 0x7d, 0x4b, 0x47, 0x7e, 0x7f, 0x6f,
	0x52, 0x53, 0x50, 0x4c, 0x4d, 0x48, 0x01, 0x45, 0x57, 0x4e, 0x51, 0x4a, 0x37, 0x49, 0x46, 0x54,
};

static void ctl_output(uint8_t v, bool aux);

/* Move the next queued byte into the empty output buffer; raise its IRQ. */
static void refill(void)
{
	if (kbd.status & STS_OBF)
		return;
	uint8_t v;
	bool aux;
	if (!(kbd.ctrl_byte & CB_KBD_OFF) && q_get(&kbd.kq, &v)) {
		aux = false;
		if (kbd.ctrl_byte & CB_XLATE) {
			if (v == 0xf0) {   /* break prefix: folded into the next code */
				kbd.xlate_break = true;
				refill();
				return;
			}
			if (v < 0x80)
				v = xlate[v];
			else if (v == 0x83)   /* F7 */
				v = 0x41;
			else if (v == 0x84)   /* Alt+SysRq */
				v = 0x54;
			if (kbd.xlate_break && v != 0xe0) {
				v |= 0x80;
				kbd.xlate_break = false;
			}
		}
	} else if (!(kbd.ctrl_byte & CB_AUX_OFF) && q_get(&kbd.aq, &v)) {
		aux = true;
	} else {
		return;
	}
	ctl_output(v, aux);
}

/* A byte into the output buffer (the controller's own answers go here directly, before anything queued). */
static void ctl_output(uint8_t v, bool aux)
{
	kbd.outbuf = v;
	kbd.outbuf_aux = aux;
	kbd.status |= STS_OBF;
	kbd.status = aux ? kbd.status | STS_AUXOBF : kbd.status & (uint8_t)~STS_AUXOBF;
	if (kbd.ctx && (aux ? kbd.ctrl_byte & CB_AUX_INT : kbd.ctrl_byte & CB_KBD_INT))
		vm_irq_pulse(kbd.ctx, aux ? AUX_IRQ : KBD_IRQ);
}

/* ---- the keyboard ---- */

static void kbd_reply(uint8_t v)
{
	q_put(&kbd.kq, v);
	kbd.kbd_last = v;
}

static void kbd_device_write(uint8_t v)
{
	if (kbd.kbd_arg_for) {
		uint8_t cmd = kbd.kbd_arg_for;
		kbd.kbd_arg_for = 0;
		if (cmd == 0xf0 && v == 0) {
			kbd_reply(0xfa);
			kbd_reply(kbd.kbd_set);
		} else {
			if (cmd == 0xf0 && v >= 1 && v <= 3)
				kbd.kbd_set = v;
			kbd_reply(0xfa);   /* LEDs (0xed), typematic (0xf3) */
		}
		return;
	}
	switch (v) {
	case 0xff:   /* reset: ACK, then self-test passed */
		kbd.kbd_scanning = true;
		kbd.kbd_set = 2;
		kbd_reply(0xfa);
		kbd_reply(0xaa);
		break;
	case 0xf2:   /* identify: an MF2 keyboard */
		kbd_reply(0xfa);
		kbd_reply(0xab);
		kbd_reply(0x83);
		break;
	case 0xed: case 0xf3: case 0xf0:
		kbd.kbd_arg_for = v;
		kbd_reply(0xfa);
		break;
	case 0xf4: kbd.kbd_scanning = true; kbd_reply(0xfa); break;
	case 0xf5: kbd.kbd_scanning = false; kbd_reply(0xfa); break;
	case 0xf6: kbd.kbd_scanning = true; kbd.kbd_set = 2; kbd_reply(0xfa); break;
	case 0xee: kbd_reply(0xee); break;   /* echo */
	case 0xfe: q_put(&kbd.kq, kbd.kbd_last); break;   /* resend */
	case 0xf7: case 0xf8: case 0xf9: case 0xfa: case 0xfb: case 0xfc: case 0xfd:
		kbd_reply(0xfa);
		break;
	default:
		kbd_reply(0xfe);   /* not a command: "resend" */
		break;
	}
}

/* ---- the mouse ---- */

static void aux_device_write(uint8_t v)
{
	if (kbd.aux_arg_for) {
		uint8_t cmd = kbd.aux_arg_for;
		kbd.aux_arg_for = 0;
		if (cmd == 0xf3) {
			kbd.aux_rate = v;
			kbd.rate_hist[0] = kbd.rate_hist[1];
			kbd.rate_hist[1] = kbd.rate_hist[2];
			kbd.rate_hist[2] = v;
			if (kbd.rate_hist[0] == 200 && kbd.rate_hist[1] == 100 && kbd.rate_hist[2] == 80)
				kbd.aux_id = 3;   /* IntelliMouse: 4-byte packets with a wheel */
		} else if (cmd == 0xe8) {
			kbd.aux_res = v & 3;
		}
		q_put(&kbd.aq, 0xfa);
		return;
	}
	switch (v) {
	case 0xff:   /* reset: ACK, self-test passed, ID */
		kbd.aux_reporting = kbd.aux_remote = false;
		kbd.aux_rate = 100;
		kbd.aux_res = 2;
		kbd.aux_scaling = 0;
		kbd.aux_id = 0;
		q_put(&kbd.aq, 0xfa);
		q_put(&kbd.aq, 0xaa);
		q_put(&kbd.aq, 0x00);
		break;
	case 0xf2: q_put(&kbd.aq, 0xfa); q_put(&kbd.aq, kbd.aux_id); break;
	case 0xf3: case 0xe8: kbd.aux_arg_for = v; q_put(&kbd.aq, 0xfa); break;
	case 0xf4: kbd.aux_reporting = true; q_put(&kbd.aq, 0xfa); break;
	case 0xf5: kbd.aux_reporting = false; q_put(&kbd.aq, 0xfa); break;
	case 0xf6: kbd.aux_rate = 100; kbd.aux_res = 2; kbd.aux_scaling = 0; q_put(&kbd.aq, 0xfa); break;
	case 0xe6: kbd.aux_scaling = 0; q_put(&kbd.aq, 0xfa); break;
	case 0xe7: kbd.aux_scaling = 1; q_put(&kbd.aq, 0xfa); break;
	case 0xea: kbd.aux_remote = false; q_put(&kbd.aq, 0xfa); break;
	case 0xf0: kbd.aux_remote = true; q_put(&kbd.aq, 0xfa); break;
	case 0xe9:   /* status: mode, resolution, rate */
		q_put(&kbd.aq, 0xfa);
		q_put(&kbd.aq, (uint8_t)((kbd.aux_remote ? 0x40 : 0) | (kbd.aux_reporting ? 0x20 : 0) |
		                         (kbd.aux_scaling ? 0x10 : 0) | (kbd.aux_buttons & 7)));
		q_put(&kbd.aq, kbd.aux_res);
		q_put(&kbd.aq, kbd.aux_rate);
		break;
	case 0xeb:   /* read data: a packet without motion */
		q_put(&kbd.aq, 0xfa);
		q_put(&kbd.aq, (uint8_t)(0x08 | (kbd.aux_buttons & 7)));
		q_put(&kbd.aq, 0);
		q_put(&kbd.aq, 0);
		if (kbd.aux_id == 3)
			q_put(&kbd.aq, 0);
		break;
	case 0xec: case 0xee: q_put(&kbd.aq, 0xfa); break;   /* wrap mode: not echoed */
	default: q_put(&kbd.aq, 0xfe); break;
	}
}

/* ---- ports ---- */

static int kbd_data_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)port; (void)bytes; (void)arg;
	bool reset = false;
	pthread_mutex_lock(&kbd.lock);
	if (in) {
		*val = kbd.outbuf;
		kbd.status &= (uint8_t)~(STS_OBF | STS_AUXOBF);
		refill();
		pthread_mutex_unlock(&kbd.lock);
		return 0;
	}
	uint8_t v = (uint8_t)*val;
	kbd.status &= (uint8_t)~STS_CMD;
	uint8_t cmd = kbd.pending_cmd;
	kbd.pending_cmd = 0;
	switch (cmd) {
	case 0x60:
		kbd.ctrl_byte = v;
		kbd.status = (uint8_t)((kbd.status & ~STS_SYS) | (v & STS_SYS));
		break;
	case 0xd1:   /* output port: bit 0 low holds the CPU in reset */
		reset = !(v & 1);
		break;
	/* As if from the keyboard or the mouse, whether or not that port is
	 * enabled (Linux's mouse-port loop test runs with it disabled). */
	case 0xd2: ctl_output(v, false); break;
	case 0xd3: ctl_output(v, true); break;
	case 0xd4: aux_device_write(v); break;
	default:
		kbd_device_write(v);
		break;
	}
	refill();
	pthread_mutex_unlock(&kbd.lock);
	if (reset) {
		log_info("i8042: reset requested");
		vm_request_exit(HYVE_EXIT_REBOOT);
	}
	return 0;
}

static int kbd_ctl_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)port; (void)bytes; (void)arg;
	pthread_mutex_lock(&kbd.lock);
	if (in) {
		*val = kbd.status;
		pthread_mutex_unlock(&kbd.lock);
		return 0;
	}
	uint8_t cmd = (uint8_t)*val;
	kbd.status |= STS_CMD;
	switch (cmd) {
	case 0x20: ctl_output(kbd.ctrl_byte, false); break;
	case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4: kbd.pending_cmd = cmd; break;
	case 0xaa: ctl_output(0x55, false); kbd.status |= STS_SYS; break;   /* self-test OK */
	case 0xab: ctl_output(0x00, false); break;                          /* keyboard port OK */
	case 0xa9: ctl_output(0x00, false); break;                          /* mouse port OK */
	case 0xc0: ctl_output(0x00, false); break;                          /* input port */
	case 0xd0: ctl_output(0x01, false); break;                          /* output port */
	case 0xad: kbd.ctrl_byte |= CB_KBD_OFF; break;
	case 0xae: kbd.ctrl_byte &= (uint8_t)~CB_KBD_OFF; refill(); break;
	case 0xa7: kbd.ctrl_byte |= CB_AUX_OFF; break;
	case 0xa8: kbd.ctrl_byte &= (uint8_t)~CB_AUX_OFF; refill(); break;
	case 0xfe:
		pthread_mutex_unlock(&kbd.lock);
		log_info("i8042: reset requested");
		vm_request_exit(HYVE_EXIT_REBOOT);
		return 0;
	default:
		break;
	}
	pthread_mutex_unlock(&kbd.lock);
	return 0;
}

/* ---- input from the VNC server ---- */

void atkbdc_key(const uint8_t *codes, int n)
{
	pthread_mutex_lock(&kbd.lock);
	if (kbd.kbd_scanning)
		for (int i = 0; i < n; i++)
			q_put(&kbd.kq, codes[i]);
	refill();
	pthread_mutex_unlock(&kbd.lock);
}

void atkbdc_pointer(uint8_t buttons, int x, int y)
{
	pthread_mutex_lock(&kbd.lock);
	int dx = kbd.aux_have_pos ? x - kbd.aux_x : 0, dy = kbd.aux_have_pos ? kbd.aux_y - y : 0;
	kbd.aux_x = x;
	kbd.aux_y = y;
	kbd.aux_have_pos = true;
	uint8_t b = (uint8_t)((buttons & 1) | (buttons & 4) >> 1 | (buttons & 2) << 1);   /* RFB: 1 left, 2 middle, 4 right */
	int wheel = buttons & 8 ? -1 : buttons & 16 ? 1 : 0;
	if (kbd.aux_reporting && !kbd.aux_remote && (dx || dy || b != kbd.aux_buttons || wheel)) {
		/* Packets carry at most 255 in each direction: split larger moves. */
		do {
			int sx = dx > 255 ? 255 : dx < -255 ? -255 : dx, sy = dy > 255 ? 255 : dy < -255 ? -255 : dy;
			q_put(&kbd.aq, (uint8_t)(0x08 | b | (sx < 0 ? 0x10 : 0) | (sy < 0 ? 0x20 : 0)));
			q_put(&kbd.aq, (uint8_t)sx);
			q_put(&kbd.aq, (uint8_t)sy);
			if (kbd.aux_id == 3)
				q_put(&kbd.aq, (uint8_t)wheel);
			dx -= sx;
			dy -= sy;
			wheel = 0;
		} while (dx || dy);
	}
	kbd.aux_buttons = b;
	refill();
	pthread_mutex_unlock(&kbd.lock);
}

/* ---- checkpoint ---- */

static void save_q(struct snap_buf *out, const struct queue *q)
{
	sb_u8(out, (uint8_t)q->n);
	for (int i = 0; i < q->n; i++)
		sb_u8(out, q->b[(q->head + i) % QLEN]);
}

static bool load_q(struct snap_rd *in, struct queue *q)
{
	q->head = 0;
	q->n = sr_u8(in);
	if (q->n > QLEN)
		return false;
	for (int i = 0; i < q->n; i++)
		q->b[i] = sr_u8(in);
	return sr_ok(in);
}

static int kbd_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	(void)arg; (void)err; (void)errlen;
	pthread_mutex_lock(&kbd.lock);
	sb_u8(out, kbd.status);
	sb_u8(out, kbd.ctrl_byte);
	sb_u8(out, kbd.outbuf);
	sb_u8(out, kbd.pending_cmd);
	/* version 2: the devices */
	sb_bool(out, kbd.outbuf_aux);
	save_q(out, &kbd.kq);
	save_q(out, &kbd.aq);
	uint8_t dev[] = { kbd.kbd_arg_for, kbd.kbd_scanning, kbd.kbd_set, kbd.kbd_last, kbd.xlate_break,
	                  kbd.aux_arg_for, kbd.aux_reporting, kbd.aux_remote, kbd.aux_rate, kbd.aux_res,
	                  kbd.aux_scaling, kbd.aux_id, kbd.rate_hist[0], kbd.rate_hist[1], kbd.rate_hist[2],
	                  kbd.aux_buttons };
	sb_put(out, dev, sizeof(dev));
	pthread_mutex_unlock(&kbd.lock);
	return 0;
}

static int kbd_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)arg;
	uint8_t status = sr_u8(in), ctrl = sr_u8(in), outbuf = sr_u8(in), pending = sr_u8(in);
	uint8_t dev[16] = { 0, 1, 2, 0xfa, 0, 0, 0, 0, 100, 2, 0, 0, 0, 0, 0, 0 };
	bool aux = false;
	struct queue kq = { .n = 0 }, aq = { .n = 0 };
	bool ok = (version == 1 || version == 2) && sr_ok(in);
	if (ok && version == 2) {
		aux = sr_bool(in);
		ok = load_q(in, &kq) && load_q(in, &aq) && sr_get(in, dev, sizeof(dev));
	}
	if (!ok) {
		snprintf(err, errlen, "i8042 state is not valid");
		return -1;
	}
	pthread_mutex_lock(&kbd.lock);
	kbd.status = status;
	kbd.ctrl_byte = ctrl;
	kbd.outbuf = outbuf;
	static const uint8_t takes_data[] = { 0x60, 0xd1, 0xd2, 0xd3, 0xd4 };
	kbd.pending_cmd = memchr(takes_data, pending, sizeof(takes_data)) ? pending : 0;
	kbd.outbuf_aux = aux;
	kbd.kq = kq;
	kbd.aq = aq;
	kbd.kbd_arg_for = dev[0];
	kbd.kbd_scanning = dev[1];
	kbd.kbd_set = dev[2];
	kbd.kbd_last = dev[3];
	kbd.xlate_break = dev[4];
	kbd.aux_arg_for = dev[5];
	kbd.aux_reporting = dev[6];
	kbd.aux_remote = dev[7];
	kbd.aux_rate = dev[8];
	kbd.aux_res = dev[9];
	kbd.aux_scaling = dev[10];
	kbd.aux_id = dev[11];
	memcpy(kbd.rate_hist, dev + 12, 3);
	kbd.aux_buttons = dev[15];
	kbd.aux_have_pos = false;
	pthread_mutex_unlock(&kbd.lock);
	return 0;
}

static const struct snapshot_ops kbd_snapshot_ops = { .version = 2, .save = kbd_save, .load = kbd_load };

static int atkbdc_init(struct vmctx *ctx)
{
	kbd.ctx = ctx;
	struct inout_port d = { "i8042-data", KBD_DATA, 1, kbd_data_handler, NULL };
	struct inout_port c = { "i8042-ctl", KBD_STS_CTL, 1, kbd_ctl_handler, NULL };
	if (register_inout(&d) || register_inout(&c))
		return -1;
	return snapshot_register("i8042", &kbd_snapshot_ops, NULL);
}
hyve_init(INIT_PLATFORM, atkbdc_init)
