/*
 * Boot ROM (-l bootrom,ROMFILE[,VARSFILE], keys lpc.bootrom and
 * lpc.bootvars): firmware such as SeaBIOS or OVMF instead of a kernel
 * loaded by hyve.  Layout and rules in bootrom.c.
 */
#ifndef HYVE_BOOTROM_H
#define HYVE_BOOTROM_H

#include <stdbool.h>
#include <stddef.h>

struct vmctx;

bool bootrom_configured(void);
/* Sizes and access of the ROM and variable files, before a VM exists. */
int bootrom_check(char *err, size_t errlen);
/* Map the ROM and variable store, copy the ROM's end below 1 MiB, add the
 * bootorder fw_cfg file.  At INIT_FIRMWARE, after fw_cfg and the PCI devices. */
int bootrom_load(struct vmctx *ctx, char *err, size_t errlen);

/*
 * lpc.chipset: i440fx (QEMU's PC, what OVMF built for QEMU expects: host
 * bridge 8086:1237 and a PIIX4 PM function at 0:1.3), bhyve (hyve's own
 * ids), or auto (the default: i440fx when the boot ROM is UEFI firmware,
 * i.e. starts with a firmware volume header).
 */
bool bootrom_chipset_i440fx(void);
/* The boot ROM is UEFI firmware (a PI firmware volume), not a legacy BIOS. */
bool bootrom_is_uefi(void);
/* Add what lpc.chipset=i440fx needs to the config (new VMs, not restores). */
void bootrom_add_chipset_devices(void);

#endif
