/*
 * Debug console (QEMU's isa-debugcon): bytes the guest writes to I/O port
 * 0x402 go to the file lpc.debugcon.path.  SeaBIOS and OVMF print their
 * debug log there; reads return 0xe9, the value firmware checks to see
 * that the port is present.  Port 0x402 is also the PM1 enable register
 * in hyve's (bhyve's) ACPI layout: the PM1 event block hands byte
 * accesses to it here while the debug console is on, word accesses (what
 * an ACPI OS does) stay PM1_EN (devices/acpi_pm.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/init.h"
#include "../core/log.h"
#include "debugcon.h"
#include "pci_lpc.h"

static int debugcon_fd = -1;

bool debugcon_access(bool in, uint32_t *val)
{
	if (debugcon_fd < 0)
		return false;
	if (in) {
		*val = 0xe9;
		return true;
	}
	uint8_t b = (uint8_t)*val;
	/* Best effort: a full disk must not stop the guest. */
	if (write(debugcon_fd, &b, 1) < 0)
		log_debug("debugcon: %s", strerror(errno));
	return true;
}

static int debugcon_init(struct vmctx *ctx)
{
	(void)ctx;
	const char *path = get_config_value("lpc.debugcon.path");
	if (!path)
		return 0;
	if (!lpc_present()) {
		log_err("config: lpc.debugcon.path: needs an lpc device");
		return -1;
	}
	debugcon_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (debugcon_fd < 0) {
		log_err("lpc.debugcon.path: %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}
hyve_init(INIT_PLATFORM, debugcon_init)

static const struct config_key debugcon_keys[] = {
	{ "lpc.debugcon.path", CFG_STRING, "file that receives what the guest writes to I/O port 0x402 (firmware debug log)", NULL },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) debugcon_keys_register(void)
{
	config_register_keys(debugcon_keys);
}
