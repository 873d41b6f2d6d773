/*
 * Unit tests for devices/atkbdc.c (#included): the i8042 and its PS/2
 * keyboard and mouse driven through ports 0x60/0x64 the way Linux's i8042,
 * atkbd and psmouse drivers and SeaBIOS do, with the answers the PS/2 and
 * 8042 specifications give, the set-1 translation, and keys and pointer
 * events from the VNC side (devices/ps2_keymap.c).  Linux binding the
 * devices is checked in tests/test_linux.sh (t_linux_ps2_keyboard_sysrq).
 * test-sources: devices/ps2_keymap.c core/snapshot.c
 */
#include "../../devices/atkbdc.c"

#include <stdarg.h>
#include <stdlib.h>

#include "check.h"

/* ---- fakes of the core ---- */

void logmsg(enum log_level lvl, const char *fmt, ...) { (void)lvl; (void)fmt; }
void fatal(const char *fmt, ...) { (void)fmt; abort(); }
void init_register(enum init_level level, const char *name, init_fn_t fn) { (void)level; (void)name; (void)fn; }
static int exits = -1;
void vm_request_exit(int status) { exits = status; }
static int irqs[16];
int vm_irq_pulse(struct vmctx *ctx, int gsi) { (void)ctx; if (gsi >= 0 && gsi < 16) irqs[gsi]++; return 0; }
static inout_func_t data_h, ctl_h;
int register_inout(const struct inout_port *iop)
{
	if (iop->port == 0x60)
		data_h = iop->handler;
	else
		ctl_h = iop->handler;
	return 0;
}

static uint8_t inb(uint16_t port)
{
	uint32_t v = 0;
	(port == 0x60 ? data_h : ctl_h)(NULL, true, port, 1, &v, NULL);
	return (uint8_t)v;
}

static void outb(uint16_t port, uint8_t b)
{
	uint32_t v = b;
	(port == 0x60 ? data_h : ctl_h)(NULL, false, port, 1, &v, NULL);
}

/* Read what the controller has, as a driver polling OBF does; n bytes or fewer. */
static int drain(uint8_t *out, int max, bool *aux_seen)
{
	int n = 0;
	while (n < max && (inb(0x64) & STS_OBF)) {
		if (aux_seen)
			*aux_seen = (inb(0x64) & STS_AUXOBF) != 0;
		out[n++] = inb(0x60);
	}
	return n;
}

static bool got(const uint8_t *b, int n, const uint8_t *want, int wn)
{
	return n == wn && memcmp(b, want, (size_t)n) == 0;
}

int main(void)
{
	uint8_t b[32];
	int n;
	bool aux;
	CHECK(atkbdc_init((struct vmctx *)1) == 0 && data_h && ctl_h, "the i8042 registers ports 0x60 and 0x64");

	outb(0x64, 0xaa);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0x55 }, 1), "controller self-test: 0x55");
	outb(0x64, 0xab);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0x00 }, 1), "keyboard port test: 0x00");
	outb(0x64, 0xa9);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0x00 }, 1), "mouse port test: 0x00 (a mouse port exists)");
	/* Linux's command byte: both interrupts on, translation on, both ports enabled. */
	outb(0x64, 0x60);
	outb(0x60, CB_KBD_INT | CB_AUX_INT | STS_SYS | CB_XLATE);
	outb(0x64, 0x20);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0x47 }, 1), "the command byte reads back");
	outb(0x64, 0xa7);
	outb(0x64, 0xd3);
	outb(0x60, 0x5a);
	n = drain(b, 4, &aux);
	CHECK(got(b, n, (uint8_t[]){ 0x5a }, 1) && aux, "mouse loop (0xd3) answers from the mouse side even with it disabled");
	outb(0x64, 0xa8);

	memset(irqs, 0, sizeof(irqs));
	outb(0x60, 0xff);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0xfa, 0xaa }, 2) && irqs[1] == 2, "keyboard reset: ACK, self-test passed, IRQ 1 each");
	outb(0x60, 0xf2);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0xfa, 0xab, 0x41 }, 3), "identify through the translation: ab 83 becomes ab 41");
	outb(0x60, 0xf0);
	outb(0x60, 0x00);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0xfa, 0xfa, 0x41 }, 3), "scancode set query: set 2 (translated to 0x41)");
	outb(0x60, 0xed);
	outb(0x60, 0x07);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0xfa, 0xfa }, 2), "LEDs: ACK, ACK");
	outb(0x60, 0x12);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0xfe }, 1), "a byte that is no command: resend (0xfe)");

	/* Keys from VNC: 'a' press and release, then Right (an E0 key). */
	uint8_t codes[8];
	int k = ps2_keysym_to_set2('a', true, codes);
	atkbdc_key(codes, k);
	k = ps2_keysym_to_set2('A', false, codes);
	atkbdc_key(codes, k);
	n = drain(b, 8, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0x1e, 0x9e }, 2), "'a' press/release arrive as set 1 1e/9e (translated)");
	k = ps2_keysym_to_set2(0xff53, false, codes);
	CHECK(got(codes, k, (uint8_t[]){ 0xe0, 0xf0, 0x74 }, 3), "Right arrow released: set 2 e0 f0 74");
	atkbdc_key(codes, k);
	n = drain(b, 8, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0xe0, 0xcd }, 2), "... translated to e0 cd");
	CHECK(ps2_keysym_to_set2(0x12345, true, codes) == 0, "an unknown keysym makes no scancode");
	k = ps2_keysym_to_set2(0xff15, true, codes);
	atkbdc_key(codes, k);
	n = drain(b, 8, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0x54 }, 1), "Sys_Req (set 2 0x84) translates to set 1 0x54, as the 8042 does");
	outb(0x64, 0x60);
	outb(0x60, CB_KBD_INT | CB_AUX_INT | STS_SYS);   /* translation off: raw set 2 */
	k = ps2_keysym_to_set2('a', false, codes);
	atkbdc_key(codes, k);
	n = drain(b, 8, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0xf0, 0x1c }, 2), "without translation the guest sees set 2 (f0 1c)");

	/* The mouse, as psmouse probes it: reset, ID, IntelliMouse knock, enable. */
	memset(irqs, 0, sizeof(irqs));
	outb(0x64, 0xd4);
	outb(0x60, 0xff);
	n = drain(b, 8, &aux);
	CHECK(got(b, n, (uint8_t[]){ 0xfa, 0xaa, 0x00 }, 3) && aux && irqs[12] == 3, "mouse reset: fa aa 00 on IRQ 12");
	static const uint8_t knock[] = { 0xf3, 200, 0xf3, 100, 0xf3, 80, 0xf2 };
	for (size_t i = 0; i < sizeof(knock); i++) {
		outb(0x64, 0xd4);
		outb(0x60, knock[i]);
	}
	n = drain(b, 16, NULL);
	CHECK(n == 8 && b[6] == 0xfa && b[7] == 3, "sample rates 200, 100, 80 make an IntelliMouse (ID 3)");
	outb(0x64, 0xd4);
	outb(0x60, 0xf4);
	n = drain(b, 4, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0xfa }, 1), "enable reporting: ACK");
	atkbdc_pointer(0, 100, 100);
	atkbdc_pointer(1, 110, 90);   /* left button, 10 right, 10 up */
	n = drain(b, 8, NULL);
	CHECK(got(b, n, (uint8_t[]){ 0x09, 10, 10, 0 }, 4), "a move with the left button: 4-byte packet 09 0a 0a 00");
	atkbdc_pointer(0, 0, 500);    /* 110 left, 410 down: two packets */
	n = drain(b, 16, NULL);
	CHECK(n == 8 && b[0] == 0x38 && (int8_t)b[1] == -110 && b[2] == 0x01 && b[4] == 0x28 && b[6] == (uint8_t)-155,
	      "a long move is split: at most 255 per packet, sign bits set");
	outb(0x64, 0xd4);
	outb(0x60, 0xe9);
	n = drain(b, 8, NULL);
	CHECK(n == 4 && b[0] == 0xfa && b[1] == 0x20 && b[2] == 2 && b[3] == 80, "status: reporting on, resolution 2, rate 80");

	/* Checkpoint: a queued key survives save and load. */
	atkbdc_key((uint8_t[]){ 0x1c }, 1);
	struct snap_buf sb;
	sb_init(&sb);
	char err[128];
	CHECK(kbd_save(NULL, &sb, err, sizeof(err)) == 0, "state saved");
	kbd.kq.n = 0;
	kbd.status = 0;
	struct snap_rd rd;
	sr_init(&rd, sb.data, sb.len);
	CHECK(kbd_load(NULL, &rd, 2, err, sizeof(err)) == 0 && (inb(0x64) & STS_OBF) && inb(0x60) == 0x1c,
	      "the pending key is there after a load");
	uint8_t junk[4] = { 0, 0, 0, 0 };
	sr_init(&rd, junk, sizeof(junk));
	CHECK(kbd_load(NULL, &rd, 2, err, sizeof(err)) == -1, "a truncated state is refused");
	sb_free(&sb);

	outb(0x64, 0xfe);
	CHECK(exits == HYVE_EXIT_REBOOT, "command 0xfe resets (exit status 0)");
	return check_summary();
}
