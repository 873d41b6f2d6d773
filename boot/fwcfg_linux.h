/* boot.kernel under -l bootrom: the kernel through fw_cfg for the firmware (boot/fwcfg_linux.c). */
#ifndef HYVE_FWCFG_LINUX_H
#define HYVE_FWCFG_LINUX_H

#include <stddef.h>

struct vmctx;

/* Before the VM exists: the kernel is a bzImage the firmware path takes, the option ROM is there. */
int fwcfg_linux_check(char *err, size_t errlen);
/* The command line to give instead of boot.cmdline (main.c's, with the
 * parameters an emulating host needs, as for a direct boot); copied. */
void fwcfg_linux_set_cmdline(const char *cmdline);
/* The fw_cfg items and the option ROM; 0, or -1 with one line in err. */
int fwcfg_linux_add(struct vmctx *ctx, char *err, size_t errlen);
/* The option ROM's path (boot.linuxboot_rom, else QEMU's in Debian); its bootorder entry. */
const char *fwcfg_linux_option_rom(void);
#define FWCFG_LINUX_BOOTORDER "/rom@genroms/linuxboot_dma.bin"

#endif
