/*
 * ACPI tables for a legacy-PC-style guest; see acpi.h for the machine they
 * describe.  Table layouts follow the ACPI 6.3 specification (chapter 5.2);
 * the DSDT is generated with the AML builder in aml.c.
 */
#include "boot/acpi.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boot/aml.h"
#include "boot/boot.h"
#include "vmm/vmm.h"

#define ACPI_OEM_ID        "HYVE  "
#define ACPI_OEM_TABLE     "HYVE"
#define ACPI_CREATOR_ID    "HYVE"
#define ACPI_HDR_LEN       36

#define ACPI_MAX_CPUS      4096

/* FADT (ACPI 6.3, table 5-34), revision 6: 276 bytes. */
#define FADT_LEN            276
#define FADT_FIRMWARE_CTRL  36
#define FADT_DSDT           40
#define FADT_PM_PROFILE     45
#define FADT_SCI_INT        46
#define FADT_SMI_CMD        48
#define FADT_PM1A_EVT_BLK   56
#define FADT_PM1A_CNT_BLK   64
#define FADT_PM_TMR_BLK     76
#define FADT_PM1_EVT_LEN    88
#define FADT_PM1_CNT_LEN    89
#define FADT_PM_TMR_LEN     91
#define FADT_P_LVL2_LAT     96
#define FADT_P_LVL3_LAT     98
#define FADT_CENTURY        108
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS          112
#define FADT_RESET_REG      116
#define FADT_RESET_VALUE    128
#define FADT_MINOR_VERSION  131
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT         140
#define FADT_X_PM1A_EVT_BLK 148
#define FADT_X_PM1A_CNT_BLK 172
#define FADT_X_PM_TMR_BLK   208
#define FADT_HYPERVISOR_ID  268

#define FADT_F_WBINVD        (1u << 0)
#define FADT_F_PROC_C1       (1u << 2)
#define FADT_F_SLP_BUTTON    (1u << 5)
#define FADT_F_FIX_RTC       (1u << 6)
#define FADT_F_RESET_REG_SUP (1u << 10)

#define BOOT_ARCH_LEGACY_DEVICES 0x0001
#define BOOT_ARCH_8042           0x0002

#define GAS_SYSTEM_IO  1
#define GAS_ACCESS_BYTE  1
#define GAS_ACCESS_WORD  2
#define GAS_ACCESS_DWORD 3

#define RTC_CENTURY_INDEX 0x32

/* MADT (ACPI 6.3, 5.2.12) */
#define MADT_REVISION        5
#define MADT_PCAT_COMPAT     1
#define MADT_LAPIC           0
#define MADT_IOAPIC          1
#define MADT_ISO             2
#define MADT_LAPIC_NMI       4
#define MADT_X2APIC          9
#define MADT_X2APIC_NMI      10
#define MADT_ENABLED         1
#define MPS_ACTIVE_HIGH      0x1
#define MPS_EDGE             (0x1 << 2)
#define MPS_LEVEL            (0x3 << 2)

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void w8(uint8_t *p, size_t off, uint8_t v) { p[off] = v; }
static void w16(uint8_t *p, size_t off, uint16_t v)
{
	p[off] = (uint8_t)v;
	p[off + 1] = (uint8_t)(v >> 8);
}
static void w32(uint8_t *p, size_t off, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[off + (size_t)i] = (uint8_t)(v >> (8 * i));
}
static void w64(uint8_t *p, size_t off, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[off + (size_t)i] = (uint8_t)(v >> (8 * i));
}

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;
	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return (uint8_t)(0 - s);
}

/* Standard description header; checksum filled by finish_table(). */
static void table_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	w32(t, 4, len);
	w8(t, 8, rev);
	w8(t, 9, 0);
	memcpy(t + 10, ACPI_OEM_ID, 6);
	memcpy(t + 16, ACPI_OEM_TABLE, 4);
	memcpy(t + 20, sig, 4);          /* OEM table id: "HYVE" + signature */
	w32(t, 24, 1);                   /* OEM revision */
	memcpy(t + 28, ACPI_CREATOR_ID, 4);
	w32(t, 32, 1);                   /* creator revision */
}

static void finish_table(uint8_t *t, uint32_t len)
{
	t[9] = 0;
	t[9] = checksum(t, len);
}

static void gas(uint8_t *p, size_t off, uint8_t space, uint8_t bits, uint8_t access,
                uint64_t addr)
{
	w8(p, off, space);
	w8(p, off + 1, bits);
	w8(p, off + 2, 0);
	w8(p, off + 3, access);
	w64(p, off + 4, addr);
}

/* ---- DSDT ---- */

static const uint16_t com_port[4] = { 0x3f8, 0x2f8, 0x3e8, 0x2e8 };
static const uint8_t com_irq[4] = { 4, 3, 4, 3 };

static void sta_present(struct aml_buf *b)
{
	aml_method(b, "_STA", 0, false);
	aml_return(b);
	aml_integer(b, 0x0f);
	aml_close(b);
}

static void dsdt_pci_link(struct aml_buf *b, int i)
{
	char name[5];
	snprintf(name, sizeof(name), "GSI%c", 'A' + i);
	uint32_t gsi = (uint32_t)(ACPI_PCI_GSI_BASE + i);
	uint8_t fl = AML_IRQ_CONSUMER | AML_IRQ_SHARED;   /* level, active-high */

	aml_device(b, name);
	aml_name(b, "_HID");
	aml_eisaid(b, "PNP0C0F");
	aml_name(b, "_UID");
	aml_integer(b, (uint64_t)i);
	aml_name(b, "_PRS");
	aml_buffer(b);
	aml_res_ext_irq(b, fl, gsi);
	aml_res_end(b);
	aml_close(b);
	aml_name(b, "_CRS");
	aml_buffer(b);
	aml_res_ext_irq(b, fl, gsi);
	aml_res_end(b);
	aml_close(b);
	aml_method(b, "_STA", 0, false);
	aml_return(b);
	aml_integer(b, 0x0b);
	aml_close(b);
	aml_method(b, "_SRS", 1, false);   /* the routing is fixed */
	aml_close(b);
	aml_method(b, "_DIS", 0, false);
	aml_close(b);
	aml_close(b);
}

static void dsdt_pci0(struct aml_buf *b, const struct acpi_config *cfg)
{
	aml_device(b, "PCI0");
	aml_name(b, "_HID");
	aml_eisaid(b, "PNP0A08");
	aml_name(b, "_CID");
	aml_eisaid(b, "PNP0A03");
	aml_name(b, "_SEG");
	aml_integer(b, 0);
	aml_name(b, "_BBN");
	aml_integer(b, 0);
	aml_name(b, "_UID");
	aml_integer(b, 0);

	const uint8_t prod = AML_ADDR_MIN_FIXED | AML_ADDR_MAX_FIXED;
	aml_name(b, "_CRS");
	aml_buffer(b);
	aml_res_word(b, AML_RES_BUS, prod, 0, 0, (uint16_t)cfg->ecam_end_bus);
	aml_res_io(b, 0xcf8, 0xcf8, 1, 8);
	aml_res_word(b, AML_RES_IO, prod, AML_IO_ENTIRE_RANGE, 0x0000, 0x0cf7);
	aml_res_word(b, AML_RES_IO, prod, AML_IO_ENTIRE_RANGE, 0x0d00, 0xffff);
	aml_res_dword(b, AML_RES_MEM, prod, AML_MEM_RW | AML_MEM_NONCACHEABLE,
	              (uint32_t)cfg->mmio32_base, (uint32_t)(cfg->mmio32_end - 1));
	if (cfg->mmio64_end > cfg->mmio64_base)
		aml_res_qword(b, AML_RES_MEM, prod, AML_MEM_RW | AML_MEM_CACHEABLE,
		              cfg->mmio64_base, cfg->mmio64_end - 1);
	aml_res_end(b);
	aml_close(b);

	/* _PRT: every slot, every pin, through the GSIx link devices. */
	aml_name(b, "_PRT");
	aml_package(b, 32 * 4);
	for (int slot = 0; slot < 32; slot++) {
		for (int pin = 0; pin < 4; pin++) {
			char link[16];
			snprintf(link, sizeof(link), "\\_SB.GSI%c",
			         'A' + (slot + pin) % ACPI_PCI_GSI_COUNT);
			aml_package(b, 4);
			aml_dword(b, ((uint32_t)slot << 16) | 0xffff);
			aml_integer(b, (uint64_t)pin);
			aml_namestring(b, link);
			aml_integer(b, 0);
			aml_close(b);
		}
	}
	aml_close(b);

	/* ISA devices behind the (implicit) LPC bridge. */
	for (int i = 0; i < 4; i++) {
		if (!cfg->com[i])
			continue;
		char name[5];
		snprintf(name, sizeof(name), "COM%d", i + 1);
		aml_device(b, name);
		aml_name(b, "_HID");
		aml_eisaid(b, "PNP0501");
		aml_name(b, "_UID");
		aml_integer(b, (uint64_t)(i + 1));
		sta_present(b);
		aml_name(b, "_CRS");
		aml_buffer(b);
		aml_res_io(b, com_port[i], com_port[i], 1, 8);
		aml_res_irq_noflags(b, (uint16_t)(1u << com_irq[i]));
		aml_res_end(b);
		aml_close(b);
		aml_close(b);
	}

	aml_device(b, "RTC");
	aml_name(b, "_HID");
	aml_eisaid(b, "PNP0B00");
	sta_present(b);
	aml_name(b, "_CRS");
	aml_buffer(b);
	aml_res_io(b, 0x70, 0x70, 1, 2);
	aml_res_irq_noflags(b, 1u << 8);
	aml_res_end(b);
	aml_close(b);
	aml_close(b);

	aml_device(b, "KBD");
	aml_name(b, "_HID");
	aml_eisaid(b, "PNP0303");
	sta_present(b);
	aml_name(b, "_CRS");
	aml_buffer(b);
	aml_res_io(b, 0x60, 0x60, 1, 1);
	aml_res_io(b, 0x64, 0x64, 1, 1);
	aml_res_irq_noflags(b, 1u << 1);
	aml_res_end(b);
	aml_close(b);
	aml_close(b);

	/* The i8042's mouse port: without it Linux takes the AUX port for disabled. */
	aml_device(b, "MOU");
	aml_name(b, "_HID");
	aml_eisaid(b, "PNP0F13");
	sta_present(b);
	aml_name(b, "_CRS");
	aml_buffer(b);
	aml_res_irq_noflags(b, 1u << 12);
	aml_res_end(b);
	aml_close(b);
	aml_close(b);

	aml_close(b);   /* PCI0 */
}

/* Motherboard resources: ECAM (Linux uses MMCONFIG only if it is reserved
 * here or in e820) and the PM register block. */
static void dsdt_motherboard(struct aml_buf *b, const struct acpi_config *cfg)
{
	uint64_t ecam_len = (uint64_t)(cfg->ecam_end_bus + 1) << 20;
	aml_device(b, "MBRS");
	aml_name(b, "_HID");
	aml_eisaid(b, "PNP0C02");
	aml_name(b, "_UID");
	aml_integer(b, 0);
	aml_name(b, "_CRS");
	aml_buffer(b);
	if (cfg->ecam_base + ecam_len <= 0x100000000ULL)
		aml_res_mem32_fixed(b, true, (uint32_t)cfg->ecam_base, (uint32_t)ecam_len);
	else
		aml_res_qword(b, AML_RES_MEM, AML_ADDR_CONSUMER | AML_ADDR_MIN_FIXED |
		              AML_ADDR_MAX_FIXED, AML_MEM_RW, cfg->ecam_base,
		              cfg->ecam_base + ecam_len - 1);
	aml_res_io(b, ACPI_PM1A_EVT_PORT, ACPI_PM1A_EVT_PORT, 1,
	           ACPI_PM_TMR_PORT + ACPI_PM_TMR_LEN - ACPI_PM1A_EVT_PORT);
	aml_res_end(b);
	aml_close(b);
	aml_close(b);
}

static int check_config(const struct acpi_config *cfg, char *err, size_t errlen)
{
	if (cfg->ncpus < 1 || cfg->ncpus > ACPI_MAX_CPUS) {
		set_err(err, errlen, "acpi: %d vCPUs: must be 1..%d", cfg->ncpus, ACPI_MAX_CPUS);
		return -1;
	}
	if (cfg->ecam_end_bus < 0 || cfg->ecam_end_bus > 255) {
		set_err(err, errlen, "acpi: ECAM end bus %d: must be 0..255", cfg->ecam_end_bus);
		return -1;
	}
	uint64_t ecam_len = (uint64_t)(cfg->ecam_end_bus + 1) << 20;
	if (cfg->ecam_base == 0 || (cfg->ecam_base & 0xfffff) ||
	    cfg->ecam_base + ecam_len < cfg->ecam_base) {
		set_err(err, errlen, "acpi: ECAM base %#llx: must be nonzero and 1 MiB aligned",
		        (unsigned long long)cfg->ecam_base);
		return -1;
	}
	if (cfg->mmio32_end <= cfg->mmio32_base || cfg->mmio32_end > 0x100000000ULL) {
		set_err(err, errlen, "acpi: 32-bit MMIO window [%#llx, %#llx) is empty or above 4 GiB",
		        (unsigned long long)cfg->mmio32_base, (unsigned long long)cfg->mmio32_end);
		return -1;
	}
	if (cfg->mmio64_end < cfg->mmio64_base) {
		set_err(err, errlen, "acpi: 64-bit MMIO window [%#llx, %#llx) ends before it starts",
		        (unsigned long long)cfg->mmio64_base, (unsigned long long)cfg->mmio64_end);
		return -1;
	}
	return 0;
}

/* Where the last table build put the FACS (acpi_build turns it into a guest address). */
static size_t last_facs_off;

uint8_t *acpi_build_dsdt_aml(const struct acpi_config *cfg, size_t *len,
                             char *err, size_t errlen)
{
	if (check_config(cfg, err, errlen) < 0)
		return NULL;
	struct aml_buf b;
	aml_init(&b);

	/* \_S5: SLP_TYPa = SLP_TYPb = 5 (PM1a_CNT SLP_TYP field). */
	aml_name(&b, "\\_S5");
	aml_package(&b, 4);
	aml_integer(&b, ACPI_S5_SLP_TYP);
	aml_integer(&b, ACPI_S5_SLP_TYP);
	aml_integer(&b, 0);
	aml_integer(&b, 0);
	aml_close(&b);
	if (cfg->s3) {
		aml_name(&b, "\\_S3");
		aml_package(&b, 4);
		aml_integer(&b, ACPI_S3_SLP_TYP);
		aml_integer(&b, ACPI_S3_SLP_TYP);
		aml_integer(&b, 0);
		aml_integer(&b, 0);
		aml_close(&b);
	}

	aml_scope(&b, "\\_SB");
	for (int i = 0; i < ACPI_PCI_GSI_COUNT; i++)
		dsdt_pci_link(&b, i);
	dsdt_pci0(&b, cfg);
	dsdt_motherboard(&b, cfg);
	aml_close(&b);

	if (b.failed || b.depth != 0) {
		aml_free(&b);
		set_err(err, errlen, "acpi: building the DSDT failed (out of memory)");
		return NULL;
	}
	*len = b.len;
	return b.data;
}

/* ---- all tables ---- */

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static void link_ptr(struct acpi_links *l, uint32_t off, uint8_t size)
{
	if (l && l->nptr < ACPI_LINKS_MAX)
		l->ptr[l->nptr++] = (struct acpi_link_ptr){ off, size };
}

static void link_cksum(struct acpi_links *l, uint32_t table, uint32_t len)
{
	if (l && l->ncks < ACPI_LINKS_MAX)
		l->cks[l->ncks++] = (struct acpi_link_cksum){ table + 9, table, len };
}

int acpi_build_tables(const struct acpi_config *cfg, uint64_t base, uint8_t *buf,
                      size_t size, size_t *used, char *err, size_t errlen)
{
	return acpi_build_tables_linked(cfg, base, buf, size, used, NULL, err, errlen);
}

int acpi_build_tables_linked(const struct acpi_config *cfg, uint64_t base, uint8_t *buf, size_t size,
                             size_t *used, struct acpi_links *links, char *err, size_t errlen)
{
	if (links)
		memset(links, 0, sizeof(*links));
	if (base & 15) {
		set_err(err, errlen, "acpi: table base %#llx is not 16-byte aligned",
		        (unsigned long long)base);
		return -1;
	}
	if (base + size > 0x100000000ULL) {
		set_err(err, errlen, "acpi: tables must lie below 4 GiB");
		return -1;
	}
	size_t aml_len;
	uint8_t *aml = acpi_build_dsdt_aml(cfg, &aml_len, err, errlen);
	if (!aml)
		return -1;

	int n_x2 = cfg->ncpus > 255 ? cfg->ncpus - 255 : 0;   /* APIC ids >= 255 */
	int n_l = cfg->ncpus - n_x2;
	size_t madt_len = 44 + (size_t)n_l * 8 + (size_t)n_x2 * 16 + 12 + 2 * 10 + 6 +
	                  (n_x2 ? 12 : 0);
	const int ntables = 3;   /* FADT, MADT, MCFG */

	size_t o_rsdp = 0;
	size_t o_rsdt = align_up(o_rsdp + 36, 16);
	size_t o_xsdt = align_up(o_rsdt + ACPI_HDR_LEN + 4 * ntables, 16);
	size_t o_fadt = align_up(o_xsdt + ACPI_HDR_LEN + 8 * ntables, 16);
	size_t o_facs = align_up(o_fadt + FADT_LEN, 64);
	last_facs_off = o_facs;
	size_t o_madt = align_up(o_facs + 64, 16);
	size_t o_mcfg = align_up(o_madt + madt_len, 16);
	size_t mcfg_len = ACPI_HDR_LEN + 8 + 16;
	size_t o_dsdt = align_up(o_mcfg + mcfg_len, 16);
	size_t dsdt_len = ACPI_HDR_LEN + aml_len;
	size_t total = o_dsdt + dsdt_len;
	if (total > size) {
		free(aml);
		set_err(err, errlen, "acpi: tables need %zu bytes, only %zu available", total, size);
		return -1;
	}
	memset(buf, 0, total);
#define GPA(off) ((uint64_t)(base + (off)))

	/* DSDT */
	uint8_t *t = buf + o_dsdt;
	table_header(t, "DSDT", (uint32_t)dsdt_len, 2);
	memcpy(t + ACPI_HDR_LEN, aml, aml_len);
	finish_table(t, (uint32_t)dsdt_len);
	link_cksum(links, (uint32_t)o_dsdt, (uint32_t)dsdt_len);
	free(aml);

	/* FACS: no checksum; version 2. */
	t = buf + o_facs;
	memcpy(t, "FACS", 4);
	w32(t, 4, 64);
	w8(t, 32, 2);

	/* FADT */
	t = buf + o_fadt;
	table_header(t, "FACP", FADT_LEN, 6);
	w32(t, FADT_FIRMWARE_CTRL, (uint32_t)GPA(o_facs));
	w32(t, FADT_DSDT, (uint32_t)GPA(o_dsdt));
	link_ptr(links, (uint32_t)(o_fadt + FADT_FIRMWARE_CTRL), 4);
	link_ptr(links, (uint32_t)(o_fadt + FADT_DSDT), 4);
	link_ptr(links, (uint32_t)(o_fadt + FADT_X_DSDT), 8);
	w8(t, FADT_PM_PROFILE, 0);                      /* unspecified */
	w16(t, FADT_SCI_INT, ACPI_SCI_IRQ);
	w32(t, FADT_SMI_CMD, 0);                        /* ACPI mode always on */
	w32(t, FADT_PM1A_EVT_BLK, ACPI_PM1A_EVT_PORT);
	w32(t, FADT_PM1A_CNT_BLK, ACPI_PM1A_CNT_PORT);
	w32(t, FADT_PM_TMR_BLK, ACPI_PM_TMR_PORT);
	w8(t, FADT_PM1_EVT_LEN, ACPI_PM1A_EVT_LEN);
	w8(t, FADT_PM1_CNT_LEN, ACPI_PM1A_CNT_LEN);
	w8(t, FADT_PM_TMR_LEN, ACPI_PM_TMR_LEN);
	w16(t, FADT_P_LVL2_LAT, 101);                   /* > 100: no C2 */
	w16(t, FADT_P_LVL3_LAT, 1001);                  /* > 1000: no C3 */
	w8(t, FADT_CENTURY, RTC_CENTURY_INDEX);
	w16(t, FADT_IAPC_BOOT_ARCH, BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042);
	/* Fixed-hardware power button (PM1 PWRBTN_STS/EN, bit 8) so the host
	 * can ask for a clean shutdown; no sleep button. */
	w32(t, FADT_FLAGS, FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON |
	    FADT_F_FIX_RTC | FADT_F_RESET_REG_SUP);
	gas(t, FADT_RESET_REG, GAS_SYSTEM_IO, 8, GAS_ACCESS_BYTE, ACPI_RESET_PORT);
	w8(t, FADT_RESET_VALUE, ACPI_RESET_VALUE);
	w8(t, FADT_MINOR_VERSION, 3);
	w64(t, FADT_X_FIRMWARE_CTRL, 0);                /* FACS is below 4 GiB */
	w64(t, FADT_X_DSDT, GPA(o_dsdt));
	gas(t, FADT_X_PM1A_EVT_BLK, GAS_SYSTEM_IO, ACPI_PM1A_EVT_LEN * 8, GAS_ACCESS_WORD,
	    ACPI_PM1A_EVT_PORT);
	gas(t, FADT_X_PM1A_CNT_BLK, GAS_SYSTEM_IO, ACPI_PM1A_CNT_LEN * 8, GAS_ACCESS_WORD,
	    ACPI_PM1A_CNT_PORT);
	gas(t, FADT_X_PM_TMR_BLK, GAS_SYSTEM_IO, ACPI_PM_TMR_LEN * 8, GAS_ACCESS_DWORD,
	    ACPI_PM_TMR_PORT);
	memcpy(t + FADT_HYPERVISOR_ID, "HYVE\0\0\0\0", 8);
	finish_table(t, FADT_LEN);
	link_cksum(links, (uint32_t)o_fadt, FADT_LEN);

	/* MADT */
	t = buf + o_madt;
	table_header(t, "APIC", (uint32_t)madt_len, MADT_REVISION);
	w32(t, 36, (uint32_t)VM_LAPIC_BASE);
	w32(t, 40, MADT_PCAT_COMPAT);
	size_t p = 44;
	for (int i = 0; i < cfg->ncpus; i++) {
		if (i < 255) {
			w8(t, p, MADT_LAPIC);
			w8(t, p + 1, 8);
			w8(t, p + 2, (uint8_t)i);           /* ACPI processor UID */
			w8(t, p + 3, (uint8_t)i);           /* APIC id */
			w32(t, p + 4, MADT_ENABLED);
			p += 8;
		} else {
			w8(t, p, MADT_X2APIC);
			w8(t, p + 1, 16);
			w32(t, p + 4, (uint32_t)i);         /* x2APIC id */
			w32(t, p + 8, MADT_ENABLED);
			w32(t, p + 12, (uint32_t)i);        /* ACPI processor UID */
			p += 16;
		}
	}
	w8(t, p, MADT_IOAPIC);
	w8(t, p + 1, 12);
	w8(t, p + 2, (uint8_t)(cfg->ncpus <= 0xfe ? cfg->ncpus : 0xfe));
	w32(t, p + 4, (uint32_t)VM_IOAPIC_BASE);
	w32(t, p + 8, 0);                               /* GSI base */
	p += 12;
	/* ISA IRQ0 (PIT) -> GSI 2 */
	w8(t, p, MADT_ISO);
	w8(t, p + 1, 10);
	w8(t, p + 2, 0);                                /* bus: ISA */
	w8(t, p + 3, 0);
	w32(t, p + 4, 2);
	w16(t, p + 8, 0);                               /* conforms to bus: edge, high */
	p += 10;
	/* ISA IRQ9 (SCI) -> GSI 9, level, active-high */
	w8(t, p, MADT_ISO);
	w8(t, p + 1, 10);
	w8(t, p + 2, 0);
	w8(t, p + 3, ACPI_SCI_IRQ);
	w32(t, p + 4, ACPI_SCI_IRQ);
	w16(t, p + 8, MPS_ACTIVE_HIGH | MPS_LEVEL);
	p += 10;
	/* NMI on LINT1 of every local APIC */
	w8(t, p, MADT_LAPIC_NMI);
	w8(t, p + 1, 6);
	w8(t, p + 2, 0xff);                             /* all processors */
	w16(t, p + 3, MPS_ACTIVE_HIGH | MPS_EDGE);
	w8(t, p + 5, 1);                                /* LINT1 */
	p += 6;
	if (n_x2) {
		w8(t, p, MADT_X2APIC_NMI);
		w8(t, p + 1, 12);
		w16(t, p + 2, MPS_ACTIVE_HIGH | MPS_EDGE);
		w32(t, p + 4, 0xffffffffu);             /* all processors */
		w8(t, p + 8, 1);
		p += 12;
	}
	if (p != madt_len) {
		set_err(err, errlen, "acpi: internal error: MADT length %zu != %zu", p, madt_len);
		return -1;
	}
	finish_table(t, (uint32_t)madt_len);
	link_cksum(links, (uint32_t)o_madt, (uint32_t)madt_len);

	/* MCFG */
	t = buf + o_mcfg;
	table_header(t, "MCFG", (uint32_t)mcfg_len, 1);
	w64(t, 44, cfg->ecam_base);
	w16(t, 52, 0);                                  /* segment */
	w8(t, 54, 0);                                   /* start bus */
	w8(t, 55, (uint8_t)cfg->ecam_end_bus);
	finish_table(t, (uint32_t)mcfg_len);
	link_cksum(links, (uint32_t)o_mcfg, (uint32_t)mcfg_len);

	/* RSDT and XSDT */
	const size_t offs[3] = { o_fadt, o_madt, o_mcfg };
	t = buf + o_rsdt;
	table_header(t, "RSDT", ACPI_HDR_LEN + 4 * ntables, 1);
	for (int i = 0; i < ntables; i++) {
		w32(t, ACPI_HDR_LEN + 4 * (size_t)i, (uint32_t)GPA(offs[i]));
		link_ptr(links, (uint32_t)(o_rsdt + ACPI_HDR_LEN + 4 * (size_t)i), 4);
	}
	finish_table(t, ACPI_HDR_LEN + 4 * ntables);
	link_cksum(links, (uint32_t)o_rsdt, ACPI_HDR_LEN + 4 * ntables);
	t = buf + o_xsdt;
	table_header(t, "XSDT", ACPI_HDR_LEN + 8 * ntables, 1);
	for (int i = 0; i < ntables; i++) {
		w64(t, ACPI_HDR_LEN + 8 * (size_t)i, GPA(offs[i]));
		link_ptr(links, (uint32_t)(o_xsdt + ACPI_HDR_LEN + 8 * (size_t)i), 8);
	}
	finish_table(t, ACPI_HDR_LEN + 8 * ntables);
	link_cksum(links, (uint32_t)o_xsdt, ACPI_HDR_LEN + 8 * ntables);

	/* RSDP (ACPI 2.0+ layout, 36 bytes) */
	t = buf + o_rsdp;
	memcpy(t, "RSD PTR ", 8);
	memcpy(t + 9, ACPI_OEM_ID, 6);
	w8(t, 15, 2);
	w32(t, 16, (uint32_t)GPA(o_rsdt));
	w32(t, 20, 36);
	w64(t, 24, GPA(o_xsdt));
	w8(t, 8, checksum(t, 20));
	w8(t, 32, checksum(t, 36));
#undef GPA
	if (links)
		links->tables_start = (uint32_t)o_rsdt;
	*used = total;
	return 0;
}

static uint64_t facs_gpa;

uint64_t acpi_facs_gpa(void)
{
	return facs_gpa;
}

int acpi_build(struct vmctx *ctx, const struct acpi_config *cfg, uint64_t *rsdp_gpa,
               char *err, size_t errlen)
{
	uint8_t *buf = calloc(1, BOOT_ACPI_SIZE);
	if (!buf) {
		set_err(err, errlen, "acpi: out of memory");
		return -1;
	}
	size_t used;
	if (acpi_build_tables(cfg, BOOT_ACPI_BASE, buf, BOOT_ACPI_SIZE, &used, err, errlen) < 0) {
		free(buf);
		return -1;
	}
	if (vm_copy_to_guest(ctx, BOOT_ACPI_BASE, buf, used) < 0) {
		free(buf);
		set_err(err, errlen, "acpi: guest RAM does not cover [%#llx, %#llx) for the tables",
		        (unsigned long long)BOOT_ACPI_BASE,
		        (unsigned long long)(BOOT_ACPI_BASE + used));
		return -1;
	}
	free(buf);
	*rsdp_gpa = BOOT_ACPI_BASE;
	facs_gpa = BOOT_ACPI_BASE + last_facs_off;
	return 0;
}
