/*
 * -o boot.kernel under firmware (-l bootrom): the kernel travels through
 * fw_cfg as with QEMU's -kernel, so SeaBIOS boots it.  hyve splits the
 * bzImage into its real-mode setup (the first (setup_sects + 1) * 512
 * bytes) and the protected-mode kernel, patches the setup header as a
 * boot loader does (Linux boot protocol, Documentation/x86/boot.rst),
 * and offers QEMU's option ROM linuxboot_dma.bin as genroms/ first in
 * bootorder.  SeaBIOS runs that ROM, which reads the pieces over fw_cfg
 * DMA to the addresses below and jumps to the setup code in real mode.
 *
 *   setup   0x10000 (64 KiB real-mode segment: code, heap, stack)
 *   cmdline 0x20000
 *   kernel  0x100000
 *   initrd  as high as the header and low RAM allow (the ROM may move it
 *           below its own top of memory)
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/config.h"
#include "../devices/fw_cfg.h"
#include "../vmm/vmm.h"
#include "boot.h"
#include "fwcfg_linux.h"

#define SETUP_ADDR   0x10000u
#define CMDLINE_ADDR 0x20000u
#define KERNEL_ADDR  0x100000u
#define DEFAULT_OPTION_ROM "/usr/share/qemu/linuxboot_dma.bin"

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }

const char *fwcfg_linux_option_rom(void)
{
	const char *rom = get_config_value("boot.linuxboot_rom");
	return rom ? rom : DEFAULT_OPTION_ROM;
}

/* A bzImage the real-mode entry can take: protocol 2.02+, loaded high (any bzImage since 2.4). */
static bool usable_header(const uint8_t *k, size_t len)
{
	return len >= 0x400 && get32(k + 0x202) == 0x53726448 && get16(k + 0x206) >= 0x202 && (k[0x211] & 0x01);
}

static const char not_bzimage[] = "boot.kernel %s: under a boot ROM hyve passes only a Linux bzImage "
                                  "(boot protocol 2.02 or later) to the firmware";

int fwcfg_linux_check(char *err, size_t errlen)
{
	const char *path = get_config_value("boot.kernel"), *rom = fwcfg_linux_option_rom();
	uint8_t hdr[0x400];
	FILE *f = fopen(path, "rb");
	size_t n = f ? fread(hdr, 1, sizeof(hdr), f) : 0;
	if (f)
		fclose(f);
	if (!f) {
		snprintf(err, errlen, "boot.kernel %s: %s", path, strerror(errno));
		return -1;
	}
	if (!usable_header(hdr, n)) {
		snprintf(err, errlen, not_bzimage, path);
		return -1;
	}
	if (access(rom, R_OK)) {
		snprintf(err, errlen, "boot.kernel under -l bootrom needs QEMU's Linux loader option ROM %s: %s "
		         "(Debian: qemu-system-data; or -o boot.linuxboot_rom=PATH)", rom, strerror(errno));
		return -1;
	}
	return 0;
}

static int set_u32(uint16_t key, uint32_t v, char *err, size_t errlen)
{
	uint8_t b[4];
	put32(b, v);
	return fw_cfg_set_item(key, b, 4, err, errlen);
}

static char *cmdline_override;

void fwcfg_linux_set_cmdline(const char *cmdline)
{
	free(cmdline_override);
	cmdline_override = cmdline ? strdup(cmdline) : NULL;
}

int fwcfg_linux_add(struct vmctx *ctx, char *err, size_t errlen)
{
	const char *path = get_config_value("boot.kernel");
	const char *initrd_path = get_config_value("boot.initrd");
	const char *cmdline = cmdline_override ? cmdline_override : get_config_value("boot.cmdline");
	size_t klen = 0, ilen = 0, romlen = 0;
	uint8_t *k = NULL, *initrd = NULL, *rom = NULL;
	int rc = -1;
	if (!cmdline)
		cmdline = "";
	if (!(k = boot_read_file(path, &klen, err, errlen)))
		goto out;
	/* The real-mode entry needs protocol 2.02+ with the kernel loaded high (any bzImage since 2.4). */
	if (!usable_header(k, klen)) {
		snprintf(err, errlen, not_bzimage, path);
		goto out;
	}
	uint16_t version = get16(k + 0x206);
	size_t setup_len = ((size_t)(k[0x1f1] ? k[0x1f1] : 4) + 1) * 512;
	if (setup_len >= klen || setup_len > CMDLINE_ADDR - SETUP_ADDR) {
		snprintf(err, errlen, "boot.kernel %s: setup code of %zu bytes does not fit the %zu-byte file", path,
		         setup_len, klen);
		goto out;
	}
	size_t cmdline_len = strlen(cmdline) + 1;
	if (cmdline_len > 0x10000) {
		snprintf(err, errlen, "boot.cmdline: %zu bytes, at most 65535", cmdline_len - 1);
		goto out;
	}
	if (initrd_path && !(initrd = boot_read_file(initrd_path, &ilen, err, errlen)))
		goto out;
	const char *rom_path = fwcfg_linux_option_rom();
	if (!(rom = boot_read_file(rom_path, &romlen, err, errlen)))
		goto out;

	/* The header a boot loader fills in. */
	k[0x210] = 0xb0;                                       /* type_of_loader: "other" (QEMU's value) */
	k[0x211] |= 0x80;                                      /* CAN_USE_HEAP */
	put16(k + 0x224, (uint16_t)(CMDLINE_ADDR - SETUP_ADDR - 0x200));   /* heap_end_ptr */
	put32(k + 0x228, CMDLINE_ADDR);                        /* cmd_line_ptr */
	uint32_t initrd_addr = 0;
	if (initrd) {
		uint64_t max = version >= 0x203 ? get32(k + 0x22c) : 0x37ffffffu;
		uint64_t low = vm_get_lowmem_size(ctx);
		/* Leave the top MiB of low RAM to the firmware (its tables and high allocations). */
		if (low < (2u << 20) || max > low - (1u << 20) - 1)
			max = low < (2u << 20) ? 0 : low - (1u << 20) - 1;
		if (ilen > max || (max + 1 - ilen) < KERNEL_ADDR + (klen - setup_len)) {
			snprintf(err, errlen, "boot.initrd %s: %zu bytes do not fit below %#llx with the kernel", initrd_path,
			         ilen, (unsigned long long)max);
			goto out;
		}
		initrd_addr = (uint32_t)((max + 1 - ilen) & ~4095ull);
		put32(k + 0x218, initrd_addr);                 /* ramdisk_image */
		put32(k + 0x21c, (uint32_t)ilen);              /* ramdisk_size */
	}
	if (set_u32(FW_CFG_SETUP_ADDR, SETUP_ADDR, err, errlen) ||
	    set_u32(FW_CFG_SETUP_SIZE, (uint32_t)setup_len, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_SETUP_DATA, k, setup_len, err, errlen) ||
	    set_u32(FW_CFG_KERNEL_ADDR, KERNEL_ADDR, err, errlen) ||
	    set_u32(FW_CFG_KERNEL_SIZE, (uint32_t)(klen - setup_len), err, errlen) ||
	    fw_cfg_set_item(FW_CFG_KERNEL_DATA, k + setup_len, klen - setup_len, err, errlen) ||
	    set_u32(FW_CFG_INITRD_ADDR, initrd_addr, err, errlen) ||
	    set_u32(FW_CFG_INITRD_SIZE, (uint32_t)ilen, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_INITRD_DATA, initrd, ilen, err, errlen) ||
	    set_u32(FW_CFG_CMDLINE_ADDR, CMDLINE_ADDR, err, errlen) ||
	    set_u32(FW_CFG_CMDLINE_SIZE, (uint32_t)cmdline_len, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_CMDLINE_DATA, cmdline, cmdline_len, err, errlen) ||
	    fw_cfg_add_file("genroms/linuxboot_dma.bin", rom, romlen, err, errlen))
		goto out;
	rc = 0;
out:
	free(k);
	free(initrd);
	free(rom);
	return rc;
}
