/*
 * LPC (PCI-ISA) bridge.  Its presence turns on the legacy ISA devices that
 * hang off it in a PC: the UARTs (lpc.comN.path), the pc-testdev
 * (lpc.pc-testdev).  Those devices register themselves at INIT_PLATFORM
 * and check lpc_present() here, so a VM without an lpc has no ISA devices,
 * as in bhyve.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "chardev.h"
#include "pci_emul.h"
#include "pci_lpc.h"

bool lpc_present(void)
{
	for (int s = 0; s < 32; s++)
		for (int f = 0; f < 8; f++) {
			const char *m = get_config_valuef("pci.0.%d.%d.device", s, f);
			if (m && strcmp(m, "lpc") == 0)
				return true;
		}
	return false;
}

static int lpc_init(struct pci_devinst *pi, const char *cfgpath)
{
	(void)cfgpath;
	/* Intel 82371SB PIIX3 ISA bridge: what guests expect to find. */
	pci_set_cfgdata16(pi, PCIR_VENDOR, 0x8086);
	pci_set_cfgdata16(pi, PCIR_DEVICE, 0x7000);
	pci_set_cfgdata8(pi, PCIR_CLASS, 0x06);
	pci_set_cfgdata8(pi, PCIR_SUBCLASS, 0x01);
	return 0;
}

static const char *const lpc_options[] = { NULL };

static const struct pci_devemu pci_de_lpc = {
	.pe_emu = "lpc",
	.pe_help = "LPC/ISA bridge hosting com1-com4 (-l), RTC, i8042, ACPI PM, pc-testdev",
	.pe_options = lpc_options,
	.pe_init = lpc_init,
	.pe_snapshot = pci_emul_snapshot_none,
	.pe_restore = pci_emul_restore_none,
};
PCI_EMUL_REGISTER(pci_de_lpc)

/* The backend spec (devices/chardev.h), checked without touching the host. */
static int check_lpc_com(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	struct chardev_spec ps;
	return chardev_parse(value, CHARDEV_F_STDIO, &ps, err, errlen);
}

static int check_fwcfg(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	if (strcmp(value, "qemu") == 0 || strcmp(value, "off") == 0)
		return 0;
	snprintf(err, errlen, "expected qemu (QEMU's fw_cfg, the default) or off%s",
	         strcmp(value, "bhyve") == 0 ? "; bhyve's own fwctl interface is not supported" : "");
	return -1;
}

static int check_chipset(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	if (strcmp(value, "auto") == 0 || strcmp(value, "i440fx") == 0 || strcmp(value, "bhyve") == 0)
		return 0;
	snprintf(err, errlen, "expected auto (the default), i440fx or bhyve");
	return -1;
}

static const struct config_key lpc_keys[] = {
	{ "lpc.chipset", CFG_CUSTOM, "auto (default: i440fx under a UEFI boot ROM, else bhyve), i440fx (host bridge 8086:1237 and PIIX4 PM at 1:3, as QEMU's pc machine, which OVMF needs) or bhyve", check_chipset },
	{ "lpc.fwcfg", CFG_CUSTOM, "firmware configuration interface: qemu (fw_cfg at I/O 0x510, default) or off", check_fwcfg },
	{ "lpc.bootrom", CFG_STRING, "boot ROM (-l bootrom,ROM): SeaBIOS or OVMF code, mapped read-only below 4 GiB", NULL },
	{ "lpc.bootvars", CFG_STRING, "UEFI variable store (-l bootrom,ROM,VARS): a CFI flash below the ROM, written back to this file", NULL },
	{ "lpc.pc-testdev", CFG_BOOL, "QEMU-compatible pc-testdev and debug-exit (port 0xf4)", NULL },
	{ "lpc.com1.path", CFG_CUSTOM, "com1 backend: stdio, file=PATH, sock=PATH, tcp=ADDR:PORT or a tty path", check_lpc_com },
	{ "lpc.com2.path", CFG_CUSTOM, "com2 backend", check_lpc_com },
	{ "lpc.com3.path", CFG_CUSTOM, "com3 backend", check_lpc_com },
	{ "lpc.com4.path", CFG_CUSTOM, "com4 backend", check_lpc_com },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) lpc_keys_register(void)
{
	config_register_keys(lpc_keys);
}
