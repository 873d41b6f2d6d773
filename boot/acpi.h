/*
 * acpi: the firmware tables of a legacy-PC-style guest (RSDP, RSDT, XSDT,
 * FADT, FACS, MADT, MCFG, DSDT), written into guest RAM at BOOT_ACPI_BASE.
 *
 * The machine they describe (what the device models must implement):
 *   PM1a event block  I/O 0x400-0x403 (PM1_STS 16 bit, PM1_EN 16 bit;
 *                     write-1-to-clear status).  Fixed power button:
 *                     setting PWRBTN_STS (bit 8) with PWRBTN_EN set raises
 *                     the SCI and Linux shuts down cleanly
 *   PM1a control      I/O 0x404-0x405 (SCI_EN reads as 1; writing SLP_EN with
 *                     SLP_TYP = ACPI_S5_SLP_TYP powers the VM off, with
 *                     ACPI_S3_SLP_TYP suspends it when cfg.s3 offered \_S3)
 *   PM timer          I/O 0x408-0x40b, 24-bit, 3.579545 MHz
 *   SCI               ISA IRQ 9 = GSI 9, level, active-high
 *   RTC               CMOS 0x70/0x71, IRQ 8, century byte at CMOS index 0x32
 *   reset             write 0x06 to I/O 0xcf9 (FADT RESET_REG); i8042 at
 *                     0x60/0x64 (pulse reset line on command 0xfe)
 *   LAPIC 0xfee00000, IOAPIC (id = min(ncpus, 254)) 0xfec00000 GSI 0-23,
 *   ISA IRQ0 -> GSI 2, other ISA IRQs identity-mapped, edge/high,
 *   PCI INTx: slot S pin P -> GSI 16 + (S + P) % 8, level, active-high
 *             (DSDT link devices \_SB.GSIA..GSIH, fixed, carry the polarity),
 *   PCIe ECAM at ecam_base for buses 0..ecam_end_bus.
 */
#ifndef HYVE_ACPI_H
#define HYVE_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmctx;

#define ACPI_PM1A_EVT_PORT  0x400
#define ACPI_PM1A_EVT_LEN   4
#define ACPI_PM1A_CNT_PORT  0x404
#define ACPI_PM1A_CNT_LEN   2
#define ACPI_PM_TMR_PORT    0x408
#define ACPI_PM_TMR_LEN     4
#define ACPI_SCI_IRQ        9
#define ACPI_RESET_PORT     0xcf9
#define ACPI_RESET_VALUE    0x06
#define ACPI_S5_SLP_TYP     5      /* PM1_CNT bits 12:10 */
#define ACPI_S3_SLP_TYP     1      /* as QEMU's PIIX4 */
#define ACPI_PCI_GSI_BASE   16
#define ACPI_PCI_GSI_COUNT  8
/* GSI of PCI slot `slot`, pin 0..3 (INTA..INTD) */
#define ACPI_PCI_INTX_GSI(slot, pin) (ACPI_PCI_GSI_BASE + ((slot) + (pin)) % ACPI_PCI_GSI_COUNT)

struct acpi_config {
	int ncpus;                     /* MADT: one Local APIC (or x2APIC) entry per vCPU, APIC id = index */
	uint64_t ecam_base;            /* MCFG + PCI root _CRS bus range */
	int ecam_end_bus;              /* 0..255 */
	uint64_t mmio32_base, mmio32_end;   /* PCI root _CRS; end exclusive */
	uint64_t mmio64_base, mmio64_end;   /* end exclusive; 0 size -> omitted */
	bool com[4];                   /* COM1..4 present: PNP0501, IO 0x3f8/0x2f8/0x3e8/0x2e8, IRQ 4/3/4/3 */
	bool s3;                       /* DSDT offers \_S3 (suspend to RAM) */
};

/* Guest physical address of the FACS acpi_build wrote (0: none); its waking vector is at +12. */
uint64_t acpi_facs_gpa(void);

/*
 * Build all tables and copy them into guest RAM at BOOT_ACPI_BASE (RSDP
 * first, at BOOT_ACPI_BASE itself).  Returns 0 and the RSDP's address, or
 * -1 with one line in err.
 */
int acpi_build(struct vmctx *ctx, const struct acpi_config *cfg, uint64_t *rsdp_gpa,
               char *err, size_t errlen);

/*
 * Same, into a host buffer that stands for guest physical [base, base+size):
 * used by acpi_build and by tests.  *used is the number of bytes written.
 */
int acpi_build_tables(const struct acpi_config *cfg, uint64_t base, uint8_t *buf,
                      size_t size, size_t *used, char *err, size_t errlen);

/*
 * Where the tables point at each other and carry checksums, for firmware
 * that places them itself (QEMU's table loader through fw_cfg): built at
 * base 0, every pointer field holds an offset into the buffer.  The RSDP
 * is the first 36 bytes (its pointers at 16 and 24, checksums at 8 and
 * 32); the other tables start at tables_start.
 */
#define ACPI_RSDP_LEN 36
#define ACPI_LINKS_MAX 32
struct acpi_link_ptr { uint32_t offset; uint8_t size; };
struct acpi_link_cksum { uint32_t offset, start, length; };
struct acpi_links {
	uint32_t tables_start;
	struct acpi_link_ptr ptr[ACPI_LINKS_MAX];      /* outside the RSDP */
	int nptr;
	struct acpi_link_cksum cks[ACPI_LINKS_MAX];    /* outside the RSDP */
	int ncks;
};
int acpi_build_tables_linked(const struct acpi_config *cfg, uint64_t base, uint8_t *buf, size_t size,
                             size_t *used, struct acpi_links *links, char *err, size_t errlen);

/* The DSDT's AML body alone (no table header); malloc'd, NULL on error. */
uint8_t *acpi_build_dsdt_aml(const struct acpi_config *cfg, size_t *len,
                             char *err, size_t errlen);

#endif
