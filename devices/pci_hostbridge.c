/*
 * Host bridge: "hostbridge" (bhyve's NetApp ids) and "amd_hostbridge"
 * (AMD ids, for guests that expect one).  Vendor and device ids can be
 * overridden with the vendor= and devid= options, as the bhyve calls
 * discussed for guests that check for specific chipsets.
 */
#include <stdio.h>

#include "../core/config.h"
#include "../core/log.h"
#include "pci_emul.h"

static const char *const hostbridge_options[] = { "vendor", "devid", NULL };

static int hostbridge_init_ids(struct pci_devinst *pi, const char *cfgpath,
                               uint16_t vendor, uint16_t devid)
{
	char key[96];
	snprintf(key, sizeof(key), "%s.vendor", cfgpath);
	uint64_t v = get_config_uint_default(key, vendor);
	snprintf(key, sizeof(key), "%s.devid", cfgpath);
	uint64_t d = get_config_uint_default(key, devid);
	if (v > 0xffff || d > 0xffff) {
		log_err("config: %s: vendor/devid must fit in 16 bits", cfgpath);
		return -1;
	}
	pci_set_cfgdata16(pi, PCIR_VENDOR, (uint16_t)v);
	pci_set_cfgdata16(pi, PCIR_DEVICE, (uint16_t)d);
	pci_set_cfgdata8(pi, PCIR_CLASS, 0x06);     /* bridge */
	pci_set_cfgdata8(pi, PCIR_SUBCLASS, 0x00);  /* host */
	pci_set_cfgdata8(pi, PCIR_HDRTYPE, 0x00);
	return pci_emul_add_pciecap(pi, 0x4 /* root port */);
}

static int hostbridge_init(struct pci_devinst *pi, const char *cfgpath)
{
	return hostbridge_init_ids(pi, cfgpath, 0x1275, 0x1275);
}

static int amd_hostbridge_init(struct pci_devinst *pi, const char *cfgpath)
{
	return hostbridge_init_ids(pi, cfgpath, 0x1022, 0x7432);
}

static const struct pci_devemu pci_de_hostbridge = {
	.pe_emu = "hostbridge",
	.pe_help = "PCI host bridge [,vendor=ID][,devid=ID]",
	.pe_options = hostbridge_options,
	.pe_init = hostbridge_init,
	.pe_snapshot = pci_emul_snapshot_none,
	.pe_restore = pci_emul_restore_none,
};
PCI_EMUL_REGISTER(pci_de_hostbridge)

static const struct pci_devemu pci_de_amd_hostbridge = {
	.pe_emu = "amd_hostbridge",
	.pe_help = "PCI host bridge with AMD ids [,vendor=ID][,devid=ID]",
	.pe_options = hostbridge_options,
	.pe_init = amd_hostbridge_init,
	.pe_snapshot = pci_emul_snapshot_none,
	.pe_restore = pci_emul_restore_none,
};
PCI_EMUL_REGISTER(pci_de_amd_hostbridge)
