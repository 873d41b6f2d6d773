/*
 * i8042 keyboard controller, just enough for a PC guest: the controller
 * self-test and command byte so drivers probe cleanly, no keyboard or
 * mouse attached, and the reset line (command 0xfe, or output port bit 0
 * cleared via 0xd1) that guests use to reboot.  Reset exits hyve with
 * status 0, as bhyve does.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "../core/exitcode.h"
#include "../core/init.h"
#include "../core/inout.h"
#include "../core/log.h"
#include "../core/snapshot.h"

#define KBD_DATA 0x60
#define KBD_STS_CTL 0x64

#define STS_OBF 0x01      /* output buffer full */
#define STS_SYS 0x04      /* system flag: self-test passed */
#define STS_CMD 0x08      /* last write was a command */

static struct {
	pthread_mutex_t lock;
	uint8_t status;
	uint8_t ctrl_byte;    /* "command byte" read/written with 0x20/0x60 */
	uint8_t outbuf;
	uint8_t pending_cmd;  /* command waiting for its data byte */
} kbd = { PTHREAD_MUTEX_INITIALIZER, STS_SYS, 0x30, 0, 0 };

static void kbd_output(uint8_t v)
{
	kbd.outbuf = v;
	kbd.status |= STS_OBF;
}

static int kbd_data_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)port; (void)bytes; (void)arg;
	pthread_mutex_lock(&kbd.lock);
	if (in) {
		*val = kbd.outbuf;
		kbd.status &= (uint8_t)~STS_OBF;
	} else {
		kbd.status &= (uint8_t)~STS_CMD;
		switch (kbd.pending_cmd) {
		case 0x60:
			kbd.ctrl_byte = (uint8_t)*val;
			break;
		case 0xd1:   /* output port: bit 0 low holds the CPU in reset */
			if (!(*val & 1)) {
				pthread_mutex_unlock(&kbd.lock);
				log_info("i8042: reset requested");
				vm_request_exit(HYVE_EXIT_REBOOT);
				return 0;
			}
			break;
		case 0:
			/* No keyboard: answer device commands with "resend"-free ack-less silence. */
			break;
		default:
			break;
		}
		kbd.pending_cmd = 0;
	}
	pthread_mutex_unlock(&kbd.lock);
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
	case 0x20: kbd_output(kbd.ctrl_byte); break;
	case 0x60: case 0xd1: kbd.pending_cmd = cmd; break;
	case 0xaa: kbd_output(0x55); kbd.status |= STS_SYS; break;   /* self-test OK */
	case 0xab: kbd_output(0x00); break;                          /* port test OK */
	case 0xa9: kbd_output(0xff); break;                          /* no aux port */
	case 0xd0: kbd_output(0x01); break;                          /* output port */
	case 0xad: kbd.ctrl_byte |= 0x10; break;
	case 0xae: kbd.ctrl_byte &= (uint8_t)~0x10; break;
	case 0xa7: kbd.ctrl_byte |= 0x20; break;
	case 0xa8: kbd.ctrl_byte &= (uint8_t)~0x20; break;
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

static int kbd_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	(void)arg; (void)err; (void)errlen;
	pthread_mutex_lock(&kbd.lock);
	sb_u8(out, kbd.status);
	sb_u8(out, kbd.ctrl_byte);
	sb_u8(out, kbd.outbuf);
	sb_u8(out, kbd.pending_cmd);
	pthread_mutex_unlock(&kbd.lock);
	return 0;
}

static int kbd_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)arg;
	uint8_t status = sr_u8(in), ctrl = sr_u8(in), outbuf = sr_u8(in), pending = sr_u8(in);
	if (version != 1 || !sr_ok(in)) {
		snprintf(err, errlen, "i8042 state is not valid");
		return -1;
	}
	pthread_mutex_lock(&kbd.lock);
	kbd.status = status;
	kbd.ctrl_byte = ctrl;
	kbd.outbuf = outbuf;
	kbd.pending_cmd = pending == 0x60 || pending == 0xd1 ? pending : 0;
	pthread_mutex_unlock(&kbd.lock);
	return 0;
}

static const struct snapshot_ops kbd_snapshot_ops = { .version = 1, .save = kbd_save, .load = kbd_load };

static int atkbdc_init(struct vmctx *ctx)
{
	(void)ctx;
	struct inout_port d = { "i8042-data", KBD_DATA, 1, kbd_data_handler, NULL };
	struct inout_port c = { "i8042-ctl", KBD_STS_CTL, 1, kbd_ctl_handler, NULL };
	if (register_inout(&d) || register_inout(&c))
		return -1;
	return snapshot_register("i8042", &kbd_snapshot_ops, NULL);
}
hyve_init(INIT_PLATFORM, atkbdc_init)
