/*
 * SMBIOS tables (DMTF DSP0134) with bhyve's default strings: BIOS (type 0),
 * system with its UUID (1), chassis (3), one processor per vCPU (4),
 * memory array, devices and mapped ranges (16, 17, 19), boot status (32),
 * end of table (127).  Direct boot puts both entry points (2.x "_SM_" and
 * 3.0 "_SM3_") and the table in guest RAM at BOOT_SMBIOS_BASE, where
 * Linux and other OSes scan for them; under a boot ROM the firmware gets
 * them through fw_cfg (etc/smbios/smbios-anchor, etc/smbios/smbios-tables).
 */
#ifndef HYVE_SMBIOS_H
#define HYVE_SMBIOS_H

#include <stddef.h>
#include <stdint.h>

struct smbios_config {
	uint8_t uuid[16];          /* RFC 4122 byte order (as printed) */
	int ncpus;
	uint64_t lowmem, highmem;  /* RAM below 4 GiB and above it, bytes */
	uint32_t cpuid_eax, cpuid_edx;   /* CPUID leaf 1 signature and features */
};

#define SMBIOS_EP2_LEN 31   /* "_SM_" entry point */
#define SMBIOS_EP3_LEN 24   /* "_SM3_" entry point */

/*
 * The structure table into buf (at most size bytes): its length, or -1 if
 * it does not fit.  *count: number of structures, *maxsize: the largest.
 */
int smbios_build_table(const struct smbios_config *cfg, uint8_t *buf, size_t size, uint16_t *count,
                       uint16_t *maxsize);
/* Entry points for a table of len bytes with count structures at address table_addr. */
void smbios_entry_v2(uint8_t ep[SMBIOS_EP2_LEN], uint32_t table_addr, uint16_t len, uint16_t count,
                     uint16_t maxsize);
void smbios_entry_v3(uint8_t ep[SMBIOS_EP3_LEN], uint64_t table_addr, uint32_t len);

/* "6ba7b810-9dad-11d1-80b4-00c04fd430c8" -> 16 bytes; -1 if malformed. */
int smbios_parse_uuid(const char *s, uint8_t out[16]);
/* A name-based (version 3) UUID from the VM name and host name, as bhyve makes one when -U is not given. */
void smbios_default_uuid(const char *vmname, uint8_t out[16]);

#endif
