/*
 * Firmware tables for every guest: ACPI (RSDP in the BIOS area, so both
 * Linux and the Multiboot test guest find it by scanning), describing the
 * vCPUs, the PC platform devices and the PCI root built at earlier init
 * levels.
 */
#include <stdio.h>
#include <string.h>

#include "../core/config.h"
#include "../core/init.h"
#include "../core/log.h"
#include "../devices/pci_lpc.h"
#include "../vmm/vmm.h"
#include "acpi.h"
#include "firmware.h"

static uint64_t rsdp_gpa;
static int firmware_ncpus = 1;

void firmware_set_ncpus(int ncpus)
{
	firmware_ncpus = ncpus;
}

uint64_t firmware_rsdp(void)
{
	return rsdp_gpa;
}

static int firmware_init(struct vmctx *ctx)
{
	char err[256];
	struct acpi_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.ncpus = firmware_ncpus;
	cfg.ecam_base = VM_PCI_ECAM_BASE;
	cfg.ecam_end_bus = 255;
	cfg.mmio32_base = VM_PCI_MMIO32_BASE;
	cfg.mmio32_end = VM_PCI_MMIO32_END;
	/* 64-bit BARs go above RAM; describe a 64 GiB window there. */
	uint64_t top = VM_HIGHMEM_BASE + vm_get_highmem_size(ctx);
	cfg.mmio64_base = (top + (1ULL << 30) - 1) & ~((1ULL << 30) - 1);
	cfg.mmio64_end = cfg.mmio64_base + (64ULL << 30);
	for (int i = 0; i < 4; i++)
		cfg.com[i] = lpc_present() && get_config_valuef("lpc.com%d.path", i + 1) != NULL;
	if (!get_config_bool_default("acpi_tables", true))
		return 0;
	if (acpi_build(ctx, &cfg, &rsdp_gpa, err, sizeof(err))) {
		log_err("ACPI tables: %s", err);
		return -1;
	}
	return 0;
}
hyve_init(INIT_FIRMWARE, firmware_init)
