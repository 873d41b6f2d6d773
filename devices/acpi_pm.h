/* ACPI fixed hardware; the port numbers are the ones the FADT announces. */
#ifndef HYVE_ACPI_PM_H
#define HYVE_ACPI_PM_H

#include <stdbool.h>
#include <stdint.h>

#include "boot/acpi.h"   /* ACPI_PM1A_*_PORT, ACPI_PM_TMR_PORT, ACPI_RESET_PORT, ... */

/*
 * The reset register shares its dword with PCI config address port 0xcf8;
 * the PCI code forwards byte accesses to 0xcf9 here.
 */
int acpi_reset_port_access(bool in, uint32_t *val);

/*
 * Press the fixed power button (SIGTERM, as bhyve): sets PWRBTN_STS and
 * raises the SCI if the guest enabled it.  Returns whether the guest
 * listens (PWRBTN_EN set): if not, nothing will act on the press.
 */
bool acpi_pm_power_button(void);

/*
 * S3 wake-ups (the guest suspended with SLP_TYP = ACPI_S3_SLP_TYP):
 * acpi_pm_wake resumes it at its FACS waking vector (hyvectl --wakeup;
 * -1 with err if it is not suspended); acpi_pm_rtc_alarm, called by the
 * RTC when its alarm fires, sets RTC_STS and wakes it if RTC_EN is set.
 */
int acpi_pm_wake(const char *why, char *err, size_t errlen);
void acpi_pm_rtc_alarm(void);

/*
 * A second copy of the PM1a event/control and PM timer blocks at base,
 * where a guest moved a PIIX4 power-management function's PMBA
 * (devices/pci_piix4_pm.c); 0 or the FADT's base removes it.  The FADT's
 * ports stay: the ACPI tables were written before the firmware ran.
 * -1 if something else has those ports (the copy is then absent).  The
 * copy's PM1 control takes sleep type 0 for S5, as QEMU's PIIX4 does.
 */
int acpi_pm_set_alias(uint16_t base);

#endif
