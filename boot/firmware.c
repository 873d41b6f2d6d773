/*
 * Firmware tables for every guest: ACPI (RSDP in the BIOS area, so both
 * Linux and the Multiboot test guest find it by scanning), describing the
 * vCPUs, the PC platform devices and the PCI root built at earlier init
 * levels.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/init.h"
#include "../core/log.h"
#include "../core/vm.h"
#include "../devices/fw_cfg.h"
#include "../devices/pci_lpc.h"
#include "../vmm/vmm.h"
#include "acpi.h"
#include "boot.h"
#include "bootrom.h"
#include "firmware.h"
#include "smbios.h"

static uint64_t rsdp_gpa;
static int firmware_ncpus = 1;

void firmware_set_ncpus(int ncpus)
{
	firmware_ncpus = ncpus;
}

int firmware_get_ncpus(void)
{
	return firmware_ncpus;
}

uint64_t firmware_rsdp(void)
{
	return rsdp_gpa;
}

/*
 * Under a boot ROM the firmware places the tables itself: they go to
 * fw_cfg as etc/acpi/rsdp and etc/acpi/tables, built at address 0, with
 * the table-loader script that allocates, links and checksums them.
 */
static int acpi_to_fw_cfg(const struct acpi_config *cfg, char *err, size_t errlen)
{
	uint8_t *buf = calloc(1, BOOT_ACPI_SIZE);
	struct acpi_links *links = calloc(1, sizeof(*links));
	struct fw_cfg_loader *ld = fw_cfg_loader_new();
	int rc = -1;
	size_t used, script_len;
	if (!buf || !links || !ld) {
		snprintf(err, errlen, "ACPI tables: out of memory");
		goto out;
	}
	if (acpi_build_tables_linked(cfg, 0, buf, BOOT_ACPI_SIZE, &used, links, err, errlen))
		goto out;
	static const char rsdp[] = "etc/acpi/rsdp", tables[] = "etc/acpi/tables";
	if (fw_cfg_add_file(rsdp, buf, ACPI_RSDP_LEN, err, errlen))
		goto out;
	memset(buf, 0, links->tables_start);   /* no stray RSDP signature in the tables blob */
	if (fw_cfg_add_file(tables, buf, used, err, errlen))
		goto out;
	fw_cfg_loader_allocate(ld, rsdp, 16, FW_CFG_ZONE_FSEG);
	fw_cfg_loader_allocate(ld, tables, 64, FW_CFG_ZONE_HIGH);   /* FACS: 64-byte aligned */
	fw_cfg_loader_add_pointer(ld, rsdp, tables, 16, 4);          /* RsdtAddress */
	fw_cfg_loader_add_pointer(ld, rsdp, tables, 24, 8);          /* XsdtAddress */
	for (int i = 0; i < links->nptr; i++)
		fw_cfg_loader_add_pointer(ld, tables, tables, links->ptr[i].offset, links->ptr[i].size);
	for (int i = 0; i < links->ncks; i++)
		fw_cfg_loader_add_checksum(ld, tables, links->cks[i].offset, links->cks[i].start, links->cks[i].length);
	fw_cfg_loader_add_checksum(ld, rsdp, 8, 0, 20);
	fw_cfg_loader_add_checksum(ld, rsdp, 32, 0, ACPI_RSDP_LEN);
	const uint8_t *script = fw_cfg_loader_data(ld, &script_len);
	if (!script) {
		snprintf(err, errlen, "ACPI table loader: out of memory");
		goto out;
	}
	rc = fw_cfg_add_file("etc/table-loader", script, script_len, err, errlen);
out:
	fw_cfg_loader_free(ld);
	free(links);
	free(buf);
	return rc;
}

/*
 * SMBIOS from the configuration: -U's UUID (checked when the key was
 * set), else one derived from the VM and host names as bhyve derives it.
 */
static void smbios_config_get(struct vmctx *ctx, struct smbios_config *sc)
{
	memset(sc, 0, sizeof(*sc));
	const char *uuid = get_config_value("uuid");
	if (!uuid || smbios_parse_uuid(uuid, sc->uuid))
		smbios_default_uuid(get_config_value("name") ? get_config_value("name") : "", sc->uuid);
	sc->ncpus = firmware_ncpus;
	sc->lowmem = vm_get_lowmem_size(ctx);
	sc->highmem = vm_get_highmem_size(ctx);
	struct kvm_cpuid2 *c = vm_get_supported_cpuid(ctx);
	for (uint32_t i = 0; c && i < c->nent; i++) {
		if (c->entries[i].function == 1) {
			sc->cpuid_eax = c->entries[i].eax;
			sc->cpuid_edx = c->entries[i].edx;
		}
	}
	free(c);
}

/* Direct boot: both entry points and the table where an OS scans for them (0xF0000). */
static int smbios_to_guest(struct vmctx *ctx, const struct smbios_config *sc, char *err, size_t errlen)
{
	uint8_t *base = vm_map_gpa(ctx, BOOT_SMBIOS_BASE, BOOT_SMBIOS_SIZE);
	uint16_t count, maxsize;
	const size_t table_off = 0x40;   /* after the 2.x (31 bytes) and 3.0 (24 bytes, at 0x20) anchors */
	int len = base ? smbios_build_table(sc, base + table_off, BOOT_SMBIOS_SIZE - table_off, &count, &maxsize) : -1;
	if (len < 0) {
		snprintf(err, errlen, "SMBIOS tables do not fit below 1 MiB");
		return -1;
	}
	smbios_entry_v2(base, (uint32_t)(BOOT_SMBIOS_BASE + table_off), (uint16_t)len, count, maxsize);
	smbios_entry_v3(base + 0x20, BOOT_SMBIOS_BASE + table_off, (uint32_t)len);
	return 0;
}

/* Under a boot ROM: SeaBIOS and OVMF place them; the anchor's table address is theirs to fill. */
static int smbios_to_fw_cfg(const struct smbios_config *sc, char *err, size_t errlen)
{
	static uint8_t table[16384];
	uint8_t ep[SMBIOS_EP2_LEN];
	uint16_t count, maxsize;
	int len = smbios_build_table(sc, table, sizeof(table), &count, &maxsize);
	if (len < 0) {
		snprintf(err, errlen, "SMBIOS tables too large");
		return -1;
	}
	smbios_entry_v2(ep, 0, (uint16_t)len, count, maxsize);
	if (fw_cfg_add_file("etc/smbios/smbios-tables", table, (size_t)len, err, errlen) ||
	    fw_cfg_add_file("etc/smbios/smbios-anchor", ep, sizeof(ep), err, errlen))
		return -1;
	return 0;
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
	bool tables = get_config_bool_default("acpi_tables", true);
	struct smbios_config sc;
	smbios_config_get(ctx, &sc);
	if (bootrom_configured()) {
		if (bootrom_load(ctx, err, sizeof(err)) || (tables && acpi_to_fw_cfg(&cfg, err, sizeof(err))) ||
		    smbios_to_fw_cfg(&sc, err, sizeof(err))) {
			log_err("%s", err);
			return -1;
		}
		return 0;
	}
	if (smbios_to_guest(ctx, &sc, err, sizeof(err))) {
		log_err("%s", err);
		return -1;
	}
	if (!tables)
		return 0;
	/* S3 resumes in real mode at the guest's waking vector: hyve does what a
	 * BIOS would, so only without firmware (above), and not where the host
	 * cannot run real-mode code (PVM). */
	cfg.s3 = !the_vm.emulating && get_config_bool_default("acpi.s3", true);
	if (acpi_build(ctx, &cfg, &rsdp_gpa, err, sizeof(err))) {
		log_err("ACPI tables: %s", err);
		return -1;
	}
	return 0;
}
hyve_init(INIT_FIRMWARE, firmware_init)
