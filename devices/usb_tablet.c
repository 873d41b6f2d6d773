/*
 * A USB HID tablet: absolute pointer with three buttons and a wheel, as
 * bhyve's usb_mouse.c ("-s 30,xhci,tablet").  A VNC client's pointer
 * lands where the guest's cursor is, which a relative PS/2 mouse cannot
 * promise.  High speed, one interface (HID, no boot protocol), one
 * interrupt IN endpoint (0x81) carrying a 6-byte report: buttons, X and Y
 * in 0..32767, wheel.  Reports go out when something changed (SET_IDLE 0,
 * what every driver asks for); changes the guest has not fetched yet are
 * merged into one report, the wheel steps summed.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/snapshot.h"
#include "usb_emul.h"

#define TABLET_VENDOR  0xfb5d   /* bhyve's ids */
#define TABLET_PRODUCT 0x0001
#define REPORT_LEN     6
#define ABS_MAX        0x7fff
#define WHEEL_MAX      1024     /* wheel steps kept while the guest does not read */

static const uint8_t dev_desc[18] = {
	18, 1,            /* bLength, DEVICE */
	0x00, 0x02,       /* bcdUSB 2.00 */
	0, 0, 0,          /* class per interface */
	64,               /* bMaxPacketSize0 */
	TABLET_VENDOR & 0xff, TABLET_VENDOR >> 8, TABLET_PRODUCT & 0xff, TABLET_PRODUCT >> 8,
	0x00, 0x01,       /* bcdDevice 1.00 */
	1, 2, 3,          /* manufacturer, product, serial strings */
	1,                /* one configuration */
};

static const uint8_t report_desc[] = {
	0x05, 0x01, 0x09, 0x02, 0xa1, 0x01,   /* Generic Desktop, Mouse, Collection (Application) */
	0x09, 0x01, 0xa1, 0x00,               /*   Pointer, Collection (Physical) */
	0x05, 0x09, 0x19, 0x01, 0x29, 0x03,   /*     Buttons 1..3 */
	0x15, 0x00, 0x25, 0x01, 0x95, 0x03, 0x75, 0x01, 0x81, 0x02,   /* 3 x 1 bit, Input (Var) */
	0x95, 0x01, 0x75, 0x05, 0x81, 0x01,   /*     5 bits padding */
	0x05, 0x01, 0x09, 0x30, 0x09, 0x31,   /*     X, Y */
	0x15, 0x00, 0x26, 0xff, 0x7f, 0x35, 0x00, 0x46, 0xff, 0x7f,   /* 0..32767 */
	0x75, 0x10, 0x95, 0x02, 0x81, 0x02,   /*     2 x 16 bits, Input (Var, Abs) */
	0x05, 0x01, 0x09, 0x38,               /*     Wheel */
	0x15, 0x81, 0x25, 0x7f, 0x35, 0x00, 0x45, 0x00,
	0x75, 0x08, 0x95, 0x01, 0x81, 0x06,   /*     8 bits, Input (Var, Rel) */
	0xc0, 0xc0,
};

#define CONF_LEN (9 + 9 + 9 + 7)
static const uint8_t conf_desc[CONF_LEN] = {
	9, 2, CONF_LEN, 0, 1, 1, 0, 0xa0, 50,           /* config 1: bus powered, remote wakeup, 100 mA */
	9, 4, 0, 0, 1, 3, 0, 0, 0,                      /* interface 0: HID, 1 endpoint */
	9, 0x21, 0x11, 0x01, 0, 1, 0x22, sizeof(report_desc), 0,   /* HID 1.11, one report descriptor */
	7, 5, 0x81, 3, 8, 0, 4,                         /* EP 1 IN, interrupt, 8 bytes, every 8 microframes */
};

static const char *const strings[] = { NULL, "hyve", "HID Tablet", "1" };

struct tablet {
	uint8_t config, protocol, idle;
	uint8_t buttons;
	uint16_t x, y;
	int wheel;       /* steps not yet reported */
	bool changed;    /* a report is due */
};

static void *tablet_init(void)
{
	struct tablet *t = calloc(1, sizeof(*t));
	if (t)
		t->protocol = 1;   /* report protocol */
	return t;
}

static void tablet_free(void *sc) { free(sc); }

static void tablet_reset(void *sc)
{
	struct tablet *t = sc;
	t->config = 0;
	t->protocol = 1;
	t->idle = 0;
	t->changed = false;
	t->wheel = 0;
}

static int copy_out(uint8_t *data, const void *src, size_t n, uint16_t max)
{
	if (n > max)
		n = max;
	memcpy(data, src, n);
	return (int)n;
}

static void report(struct tablet *t, uint8_t r[REPORT_LEN])
{
	int w = t->wheel < -127 ? -127 : t->wheel > 127 ? 127 : t->wheel;
	r[0] = t->buttons;
	r[1] = (uint8_t)t->x;
	r[2] = (uint8_t)(t->x >> 8);
	r[3] = (uint8_t)t->y;
	r[4] = (uint8_t)(t->y >> 8);
	r[5] = (uint8_t)(int8_t)w;
	t->wheel -= w;
	t->changed = t->wheel != 0;
}

static int get_descriptor(const struct usb_setup *s, uint8_t *data)
{
	uint8_t type = (uint8_t)(s->value >> 8), idx = (uint8_t)s->value;
	if (s->type == 0x81) {   /* interface: HID class descriptors */
		if (s->index != 0)
			return -1;
		if (type == 0x22)
			return copy_out(data, report_desc, sizeof(report_desc), s->length);
		if (type == 0x21)
			return copy_out(data, conf_desc + 18, 9, s->length);
		return -1;
	}
	switch (type) {
	case 1:
		return copy_out(data, dev_desc, sizeof(dev_desc), s->length);
	case 2:
		return idx == 0 ? copy_out(data, conf_desc, sizeof(conf_desc), s->length) : -1;
	case 3: {
		uint8_t d[64];
		size_t n;
		if (idx == 0) {
			d[2] = 0x09;   /* English (US) */
			d[3] = 0x04;
			n = 4;
		} else if (idx < sizeof(strings) / sizeof(strings[0])) {
			n = 2;
			for (const char *c = strings[idx]; *c && n + 2 <= sizeof(d); c++) {
				d[n++] = (uint8_t)*c;   /* UTF-16LE of ASCII */
				d[n++] = 0;
			}
		} else {
			return -1;
		}
		d[0] = (uint8_t)n;
		d[1] = 3;
		return copy_out(data, d, n, s->length);
	}
	default:   /* device qualifier, BOS, other speed: a USB 2.0-only device has none */
		return -1;
	}
}

static int tablet_request(void *sc, const struct usb_setup *s, uint8_t *data)
{
	struct tablet *t = sc;
	uint16_t rq = (uint16_t)(s->type << 8 | s->request);
	switch (rq) {
	case 0x8006: case 0x8106:   /* GET_DESCRIPTOR */
		return get_descriptor(s, data);
	case 0x0009:                /* SET_CONFIGURATION */
		if (s->value > 1)
			return -1;
		t->config = (uint8_t)s->value;
		return 0;
	case 0x8008:                /* GET_CONFIGURATION */
		return copy_out(data, &t->config, 1, s->length);
	case 0x8000: case 0x8100: case 0x8200: {   /* GET_STATUS: bus powered, no halts */
		static const uint8_t st[2];
		return copy_out(data, st, 2, s->length);
	}
	case 0x0001: case 0x0003:   /* CLEAR/SET_FEATURE (remote wakeup) */
	case 0x0201: case 0x0203:   /* CLEAR/SET_FEATURE (endpoint halt) */
	case 0x0005:                /* SET_ADDRESS (the controller's Address Device did it) */
		return 0;
	case 0x010b:                /* SET_INTERFACE */
		return s->value == 0 && s->index == 0 ? 0 : -1;
	case 0x810a: {              /* GET_INTERFACE */
		static const uint8_t alt;
		return copy_out(data, &alt, 1, s->length);
	}
	case 0x210a:                /* HID SET_IDLE */
		t->idle = (uint8_t)(s->value >> 8);
		return 0;
	case 0xa102:                /* HID GET_IDLE */
		return copy_out(data, &t->idle, 1, s->length);
	case 0x210b:                /* HID SET_PROTOCOL */
		t->protocol = (uint8_t)(s->value & 1);
		return 0;
	case 0xa103:                /* HID GET_PROTOCOL */
		return copy_out(data, &t->protocol, 1, s->length);
	case 0xa101: {              /* HID GET_REPORT */
		uint8_t r[REPORT_LEN];
		report(t, r);
		return copy_out(data, r, sizeof(r), s->length);
	}
	case 0x2109:                /* HID SET_REPORT: no output reports, accepted */
		return 0;
	default:
		return -1;
	}
}

static int tablet_data_in(void *sc, int ep, uint8_t *buf, int len)
{
	struct tablet *t = sc;
	if (ep != 1 || !t->config || !t->changed || len <= 0)
		return 0;
	uint8_t r[REPORT_LEN];
	report(t, r);
	int n = len < REPORT_LEN ? len : REPORT_LEN;
	memcpy(buf, r, (size_t)n);
	return n;
}

static uint16_t scale(int v, int size)
{
	if (size <= 1 || v <= 0)
		return 0;
	if (v >= size - 1)
		return ABS_MAX;
	return (uint16_t)((int64_t)v * ABS_MAX / (size - 1));
}

static bool tablet_pointer(void *sc, uint8_t buttons, int x, int y, int w, int h)
{
	struct tablet *t = sc;
	if (!t->config)
		return false;
	/* RFB: 1 left, 2 middle, 4 right, 8/16 wheel up/down; HID: 1 left, 2 right, 4 middle. */
	uint8_t b = (uint8_t)((buttons & 1) | (buttons & 4) >> 1 | (buttons & 2) << 1);
	uint16_t nx = scale(x, w), ny = scale(y, h);
	int wheel = buttons & 8 ? 1 : buttons & 16 ? -1 : 0;
	if (b != t->buttons || nx != t->x || ny != t->y || wheel) {
		t->buttons = b;
		t->x = nx;
		t->y = ny;
		/* Steps the guest has not fetched yet: bounded, however many a client sends. */
		if (t->wheel + wheel >= -WHEEL_MAX && t->wheel + wheel <= WHEEL_MAX)
			t->wheel += wheel;
		t->changed = true;
	}
	return true;
}

static void tablet_save(void *sc, struct snap_buf *out)
{
	struct tablet *t = sc;
	sb_u8(out, t->config);
	sb_u8(out, t->protocol);
	sb_u8(out, t->idle);
	sb_u8(out, t->buttons);
	sb_u16(out, t->x);
	sb_u16(out, t->y);
	sb_u32(out, (uint32_t)t->wheel);
	sb_bool(out, t->changed);
}

static bool tablet_load(void *sc, struct snap_rd *in)
{
	struct tablet n;
	n.config = sr_u8(in);
	n.protocol = sr_u8(in);
	n.idle = sr_u8(in);
	n.buttons = sr_u8(in);
	n.x = sr_u16(in);
	n.y = sr_u16(in);
	n.wheel = (int32_t)sr_u32(in);
	n.changed = sr_bool(in);
	if (!sr_ok(in) || n.config > 1 || n.x > ABS_MAX || n.y > ABS_MAX || n.wheel < -WHEEL_MAX || n.wheel > WHEEL_MAX)
		return false;
	*(struct tablet *)sc = n;
	return true;
}

const struct usb_devemu usb_tablet_emu = {
	.ue_name = "tablet",
	.ue_speed = USB_SPEED_HIGH,
	.ue_init = tablet_init,
	.ue_free = tablet_free,
	.ue_request = tablet_request,
	.ue_data_in = tablet_data_in,
	.ue_reset = tablet_reset,
	.ue_pointer = tablet_pointer,
	.ue_save = tablet_save,
	.ue_load = tablet_load,
};
