/* I/O ports of the ACPI fixed hardware; the FADT builder uses the same. */
#ifndef HYVE_ACPI_PM_H
#define HYVE_ACPI_PM_H

#define ACPI_PM1A_EVT_PORT 0x400
#define ACPI_PM1A_CNT_PORT 0x404
#define ACPI_PM_TMR_PORT 0x408
#define ACPI_RESET_PORT 0xcf9
#define ACPI_RESET_VALUE 0x06
#define ACPI_SCI_IRQ 9
#define ACPI_S5_SLP_TYP 5

#include <stdbool.h>
#include <stdint.h>

/*
 * The reset register shares its dword with PCI config address port 0xcf8;
 * the PCI code forwards byte accesses to 0xcf9 here.
 */
int acpi_reset_port_access(bool in, uint32_t *val);

#endif
