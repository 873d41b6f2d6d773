/*
 * The PIIX4 power-management function (Intel 82371AB, 8086:7113), as in
 * QEMU's i440FX machine: "-s 1:3,piix4-pm".  UEFI firmware built for QEMU
 * (Debian's OVMF) reads PCI 0:1.3 on an i440FX host bridge (8086:1237) to
 * find the ACPI PM I/O block: PMBA (0x40) holds its base and PMREGMISC
 * (0x80) bit 0 says whether it is decoded.  They come preset as OVMF would
 * set them (0xb000, decoding on), and the registers there are a copy of
 * the ones at the ports the FADT announces (0x400, devices/acpi_pm.c):
 * OVMF runs its timer from PMBA + 8 and powers off through 0xb004 (a fixed
 * address in its reset library), an OS follows the FADT.  A guest that
 * moves PMBA (SeaBIOS does) moves the copy; the FADT's ports stay, since
 * the ACPI tables were written before the firmware ran.  lpc.chipset=
 * i440fx (boot/bootrom.c) adds this function and the host bridge ids.
 *
 * Not emulated: SMBus (its base register reads as unassigned), SMI
 * generation (DEVACTB's APMC enable stays 0).
 */
#include <stdio.h>

#include "../boot/acpi.h"
#include "../core/log.h"
#include "acpi_pm.h"
#include "pci_emul.h"

#define PIIX4_PMBA          0x40
#define PIIX4_PMBA_MASK     0xffc0u   /* 64 ports, I/O space */
#define PIIX4_PMBA_OVMF     0xb000u   /* OvmfPlatforms.h's PIIX4_PMBA_VALUE */
#define PIIX4_PMREGMISC     0x80
#define PIIX4_PMIOSE        0x01
#define PIIX4_SMBBA         0x90

/* Make the decoded copy agree with PMBA and PMIOSE. */
static void update_alias(struct pci_devinst *pi)
{
	uint16_t base = (uint16_t)(pci_get_cfgdata32(pi, PIIX4_PMBA) & PIIX4_PMBA_MASK);
	bool on = (pci_get_cfgdata8(pi, PIIX4_PMREGMISC) & PIIX4_PMIOSE) != 0;
	if (acpi_pm_set_alias(on ? base : 0))
		log_warn("%s: PMBA %#x overlaps another device's ports; the ACPI PM registers are at %#x only",
		         pi->pi_name, base, ACPI_PM1A_EVT_PORT);
}

static int piix4_pm_cfgwrite(struct pci_devinst *pi, int off, int bytes, uint32_t val)
{
	bool pmba = off < PIIX4_PMBA + 4 && off + bytes > PIIX4_PMBA;
	bool misc = off <= PIIX4_PMREGMISC && off + bytes > PIIX4_PMREGMISC;
	if (!pmba && !misc)
		return 1;   /* the framework's rules for the rest */
	for (int i = 0; i < bytes; i++) {
		int o = off + i;
		if ((o >= PIIX4_PMBA && o < PIIX4_PMBA + 4) || o == PIIX4_PMREGMISC)
			pci_set_cfgdata8(pi, o, (uint8_t)(val >> (8 * i)));
	}
	uint32_t v = pci_get_cfgdata32(pi, PIIX4_PMBA);
	pci_set_cfgdata32(pi, PIIX4_PMBA, (v & PIIX4_PMBA_MASK) | 1);   /* bit 0: I/O space, read-only */
	pci_set_cfgdata8(pi, PIIX4_PMREGMISC, pci_get_cfgdata8(pi, PIIX4_PMREGMISC) & PIIX4_PMIOSE);
	update_alias(pi);
	return 0;
}

static int piix4_pm_init(struct pci_devinst *pi, const char *cfgpath)
{
	(void)cfgpath;
	if (pi->pi_bus != 0 || pi->pi_slot != 1 || pi->pi_func != 3)
		log_warn("%s: firmware looks for the PIIX4 PM function at 0:1.3 only", pi->pi_name);
	pci_set_cfgdata16(pi, PCIR_VENDOR, 0x8086);
	pci_set_cfgdata16(pi, PCIR_DEVICE, 0x7113);
	pci_set_cfgdata8(pi, PCIR_REVID, 0x03);
	pci_set_cfgdata8(pi, PCIR_CLASS, 0x06);      /* bridge */
	pci_set_cfgdata8(pi, PCIR_SUBCLASS, 0x80);   /* other */
	pci_set_cfgdata8(pi, PCIR_INTLINE, 9);       /* the SCI, as the FADT says */
	pci_set_cfgdata32(pi, PIIX4_PMBA, PIIX4_PMBA_OVMF | 1);
	pci_set_cfgdata8(pi, PIIX4_PMREGMISC, PIIX4_PMIOSE);
	pci_set_cfgdata32(pi, PIIX4_SMBBA, 1);
	update_alias(pi);
	return 0;
}

/* Config space (PMBA, PMREGMISC) travels with the framework's state. */
static int piix4_pm_snapshot(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen)
{
	(void)pi; (void)out; (void)err; (void)errlen;
	return 0;
}

static int piix4_pm_restore(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)in; (void)version; (void)err; (void)errlen;
	update_alias(pi);
	return 0;
}

static const char *const piix4_pm_options[] = { NULL };

static const struct pci_devemu pci_de_piix4_pm = {
	.pe_emu = "piix4-pm",
	.pe_help = "PIIX4 power management (8086:7113) at 1:3, for OVMF on an i440FX host bridge",
	.pe_options = piix4_pm_options,
	.pe_standalone_func = true,   /* OVMF reads 0:1.3 whatever sits at 1:0 */
	.pe_init = piix4_pm_init,
	.pe_cfgwrite = piix4_pm_cfgwrite,
	.pe_snapshot_version = 1,
	.pe_snapshot = piix4_pm_snapshot,
	.pe_restore = piix4_pm_restore,
};
PCI_EMUL_REGISTER(pci_de_piix4_pm)
