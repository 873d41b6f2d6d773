/*
 * linux: x86 Linux kernel loader (bzImage, boot protocol 2.10+, or a plain
 * vmlinux ELF64), following Documentation/arch/x86/boot.rst and
 * zero-page.rst.
 *
 * Default path: the bzImage's compressed payload is decompressed on the
 * host (gzip, xz, zstd, lz4 legacy, or an uncompressed ELF payload), its
 * PT_LOAD segments are placed at their physical addresses and the vCPU
 * enters the ELF entry in 64-bit mode (rsi = boot_params).  Classic path
 * (guest_decompress): the protected-mode part is loaded at 1 MiB and the
 * vCPU enters code32_start in flat 32-bit protected mode (esi = boot_params),
 * letting the kernel's own decompressor run.
 *
 * Guest memory used: boot_params at BOOT_ZEROPAGE_ADDR, the command line at
 * BOOT_CMDLINE_ADDR, GDT and page tables via boot_write_gdt() and
 * boot_write_identity_pagetables(), the kernel at its physical load address
 * (>= 1 MiB), the initrd as high as possible below min(initrd_addr_max,
 * low RAM top) and above the kernel's end (including init_size).
 *
 * Link with: pkg-config --libs zlib liblzma libzstd liblz4
 */
#ifndef HYVE_LINUX_H
#define HYVE_LINUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "boot/boot.h"

struct vmctx;

struct linux_boot_opts {
	bool guest_decompress;   /* classic path: the kernel decompresses itself */
	uint64_t acpi_rsdp;      /* 0: let the kernel scan for the RSDP */
};

/* 1 bzImage, 2 vmlinux ELF64, 0 neither. */
int linux_probe(const uint8_t *img, size_t len);

/* Reads in->kernel_path and in->initrd_path with boot_read_file(). */
int linux_load(struct vmctx *ctx, const struct boot_params_in *in,
               const struct linux_boot_opts *o, struct boot_entry *be,
               char *err, size_t errlen);

/* Same, with the kernel image already in memory (in->kernel_path only names
 * it in messages; the initrd is still read from in->initrd_path). */
int linux_load_image(struct vmctx *ctx, const uint8_t *img, size_t len,
                     const struct boot_params_in *in, const struct linux_boot_opts *o,
                     struct boot_entry *be, char *err, size_t errlen);

/*
 * Decompress a bzImage payload, detecting the format from its magic.
 * *out is malloc'd; *fmt names the format ("gzip", "xz", ...).  Returns 0,
 * or -1 with a message (without the file name) in err.
 */
int linux_decompress(const uint8_t *in, size_t len, uint8_t **out, size_t *outlen,
                     const char **fmt, char *err, size_t errlen);

/* ---- boot protocol structures (x86 is little-endian, like the host) ---- */

#define LINUX_HDR_OFFSET      0x1f1
#define LINUX_HDR_MAGIC       0x53726448u   /* "HdrS" */
#define LINUX_BOOT_FLAG       0xaa55
#define LINUX_MIN_PROTOCOL    0x020a
#define LINUX_LOADED_HIGH     0x01
#define LINUX_KASLR_FLAG      0x02
#define LINUX_QUIET_FLAG      0x20
#define LINUX_KEEP_SEGMENTS   0x40
#define LINUX_CAN_USE_HEAP    0x80
#define LINUX_XLF_KERNEL_64   0x0001
#define LINUX_LOADER_UNDEFINED 0xff
#define LINUX_E820_MAX        128
#define LINUX_PM_LOAD_ADDR    0x100000ULL

struct __attribute__((packed)) linux_setup_header {
	uint8_t  setup_sects;          /* 0x1f1 */
	uint16_t root_flags;
	uint32_t syssize;
	uint16_t ram_size;
	uint16_t vid_mode;             /* 0x1fa */
	uint16_t root_dev;
	uint16_t boot_flag;            /* 0x1fe */
	uint16_t jump;                 /* 0x200 */
	uint32_t header;               /* 0x202 */
	uint16_t version;              /* 0x206 */
	uint32_t realmode_swtch;
	uint16_t start_sys_seg;
	uint16_t kernel_version;
	uint8_t  type_of_loader;       /* 0x210 */
	uint8_t  loadflags;            /* 0x211 */
	uint16_t setup_move_size;
	uint32_t code32_start;         /* 0x214 */
	uint32_t ramdisk_image;        /* 0x218 */
	uint32_t ramdisk_size;         /* 0x21c */
	uint32_t bootsect_kludge;
	uint16_t heap_end_ptr;         /* 0x224 */
	uint8_t  ext_loader_ver;
	uint8_t  ext_loader_type;
	uint32_t cmd_line_ptr;         /* 0x228 */
	uint32_t initrd_addr_max;      /* 0x22c */
	uint32_t kernel_alignment;     /* 0x230 */
	uint8_t  relocatable_kernel;
	uint8_t  min_alignment;
	uint16_t xloadflags;           /* 0x236 */
	uint32_t cmdline_size;         /* 0x238 */
	uint32_t hardware_subarch;
	uint64_t hardware_subarch_data;
	uint32_t payload_offset;       /* 0x248 */
	uint32_t payload_length;       /* 0x24c */
	uint64_t setup_data;           /* 0x250 */
	uint64_t pref_address;         /* 0x258 */
	uint32_t init_size;            /* 0x260 */
	uint32_t handover_offset;      /* 0x264 */
	uint32_t kernel_info_offset;   /* 0x268 */
};

struct __attribute__((packed)) linux_e820_entry {
	uint64_t addr, size;
	uint32_t type;
};

struct __attribute__((packed)) linux_boot_params {
	uint8_t  screen_info[0x40];    /* 0x000; orig_video_isVGA at 0x0f */
	uint8_t  apm_bios_info[0x14];  /* 0x040 */
	uint8_t  _pad2[4];
	uint64_t tboot_addr;           /* 0x058 */
	uint8_t  ist_info[0x10];       /* 0x060 */
	uint64_t acpi_rsdp_addr;       /* 0x070 */
	uint8_t  _pad3[8];
	uint8_t  hd0_info[16];         /* 0x080 */
	uint8_t  hd1_info[16];
	uint8_t  sys_desc_table[16];   /* 0x0a0 */
	uint8_t  olpc_ofw_header[16];  /* 0x0b0 */
	uint32_t ext_ramdisk_image;    /* 0x0c0 */
	uint32_t ext_ramdisk_size;     /* 0x0c4 */
	uint32_t ext_cmd_line_ptr;     /* 0x0c8 */
	uint8_t  _pad4[0x70];
	uint32_t cc_blob_address;      /* 0x13c */
	uint8_t  edid_info[0x80];      /* 0x140 */
	uint8_t  efi_info[0x20];       /* 0x1c0 */
	uint32_t alt_mem_k;            /* 0x1e0 */
	uint32_t scratch;              /* 0x1e4 */
	uint8_t  e820_entries;         /* 0x1e8 */
	uint8_t  eddbuf_entries;
	uint8_t  edd_mbr_sig_buf_entries;
	uint8_t  kbd_status;
	uint8_t  secure_boot;          /* 0x1ec */
	uint8_t  _pad5[2];
	uint8_t  sentinel;             /* 0x1ef */
	uint8_t  _pad6[1];
	struct linux_setup_header hdr; /* 0x1f1 */
	uint8_t  _pad7[0x290 - 0x26c];
	uint32_t edd_mbr_sig_buffer[16];               /* 0x290 */
	struct linux_e820_entry e820_table[LINUX_E820_MAX]; /* 0x2d0 */
	uint8_t  _pad8[0x30];                          /* 0xcd0 */
	uint8_t  eddbuf[0x1ec];                        /* 0xd00 */
	uint8_t  _pad9[0x114];                         /* 0xeec */
};

_Static_assert(sizeof(struct linux_setup_header) == 0x26c - 0x1f1, "setup header size");
_Static_assert(sizeof(struct linux_e820_entry) == 20, "e820 entry size");
_Static_assert(sizeof(struct linux_boot_params) == 0x1000, "boot_params size");
_Static_assert(offsetof(struct linux_boot_params, acpi_rsdp_addr) == 0x070, "acpi_rsdp_addr");
_Static_assert(offsetof(struct linux_boot_params, ext_ramdisk_image) == 0x0c0, "ext_ramdisk_image");
_Static_assert(offsetof(struct linux_boot_params, ext_cmd_line_ptr) == 0x0c8, "ext_cmd_line_ptr");
_Static_assert(offsetof(struct linux_boot_params, cc_blob_address) == 0x13c, "cc_blob_address");
_Static_assert(offsetof(struct linux_boot_params, edid_info) == 0x140, "edid_info");
_Static_assert(offsetof(struct linux_boot_params, efi_info) == 0x1c0, "efi_info");
_Static_assert(offsetof(struct linux_boot_params, e820_entries) == 0x1e8, "e820_entries");
_Static_assert(offsetof(struct linux_boot_params, sentinel) == 0x1ef, "sentinel");
_Static_assert(offsetof(struct linux_boot_params, hdr) == 0x1f1, "hdr");
_Static_assert(offsetof(struct linux_boot_params, hdr.vid_mode) == 0x1fa, "vid_mode");
_Static_assert(offsetof(struct linux_boot_params, hdr.header) == 0x202, "header");
_Static_assert(offsetof(struct linux_boot_params, hdr.type_of_loader) == 0x210, "type_of_loader");
_Static_assert(offsetof(struct linux_boot_params, hdr.code32_start) == 0x214, "code32_start");
_Static_assert(offsetof(struct linux_boot_params, hdr.ramdisk_image) == 0x218, "ramdisk_image");
_Static_assert(offsetof(struct linux_boot_params, hdr.heap_end_ptr) == 0x224, "heap_end_ptr");
_Static_assert(offsetof(struct linux_boot_params, hdr.cmd_line_ptr) == 0x228, "cmd_line_ptr");
_Static_assert(offsetof(struct linux_boot_params, hdr.initrd_addr_max) == 0x22c, "initrd_addr_max");
_Static_assert(offsetof(struct linux_boot_params, hdr.xloadflags) == 0x236, "xloadflags");
_Static_assert(offsetof(struct linux_boot_params, hdr.cmdline_size) == 0x238, "cmdline_size");
_Static_assert(offsetof(struct linux_boot_params, hdr.payload_offset) == 0x248, "payload_offset");
_Static_assert(offsetof(struct linux_boot_params, hdr.pref_address) == 0x258, "pref_address");
_Static_assert(offsetof(struct linux_boot_params, hdr.init_size) == 0x260, "init_size");
_Static_assert(offsetof(struct linux_boot_params, hdr.kernel_info_offset) == 0x268, "kernel_info_offset");
_Static_assert(offsetof(struct linux_boot_params, edd_mbr_sig_buffer) == 0x290, "edd_mbr_sig_buffer");
_Static_assert(offsetof(struct linux_boot_params, e820_table) == 0x2d0, "e820_table");
_Static_assert(offsetof(struct linux_boot_params, eddbuf) == 0xd00, "eddbuf");

#endif
