/*
 * boot: kernel loaders and firmware tables.  Loaders write the kernel,
 * modules and boot structures into guest RAM through the vmm memory
 * accessors and describe the initial vCPU state in struct boot_entry; the
 * core applies that state to the boot vCPU.  No loader issues ioctls.
 */
#ifndef HYVE_BOOT_H
#define HYVE_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmctx;
struct kvm_pic_state;

enum boot_cpu_mode {
	BOOT_MODE_PROT32,   /* flat 32-bit protected mode, paging off */
	BOOT_MODE_LONG64,   /* 64-bit, identity-mapped page tables at cr3 */
};

struct boot_entry {
	enum boot_cpu_mode mode;
	uint64_t rip;
	uint64_t rsp;
	uint64_t rax, rbx, rsi;
	uint64_t cr3;       /* BOOT_MODE_LONG64 only */
	uint64_t gdt_base;  /* GDT in guest RAM: 0x08 unused, 0x10 code, 0x18 data */
	uint16_t gdt_limit;
};

/* Fixed low-memory layout used by all loaders (below 1 MiB). */
#define BOOT_GDT_ADDR        0x0500ULL
#define BOOT_ZEROPAGE_ADDR   0x7000ULL   /* Linux boot_params */
#define BOOT_PML4_ADDR       0x9000ULL   /* + PDPT at 0xa000, PDs at 0xb000.. */
#define BOOT_CMDLINE_ADDR    0x20000ULL
#define BOOT_CMDLINE_MAX     0x10000ULL
#define BOOT_STACK_TOP       0x8ff0ULL
#define BOOT_MBINFO_ADDR     0x30000ULL  /* multiboot info + mmap + module list */
#define BOOT_EBDA_START      0x9fc00ULL  /* e820: [EBDA, 1 MiB) is reserved */
#define BOOT_ACPI_BASE       0xe0000ULL  /* ACPI tables, RSDP first */
#define BOOT_ACPI_SIZE       0x10000ULL
#define BOOT_SMBIOS_BASE     0xf0000ULL  /* SMBIOS entry points, then the table (boot/smbios.h) */
#define BOOT_SMBIOS_SIZE     0x10000ULL

/* What a loader needs to know about the machine. */
struct boot_params_in {
	const char *kernel_path;
	const char *initrd_path;   /* NULL if none */
	const char *cmdline;       /* "" if none */
	int ncpus;
};

/*
 * A linear framebuffer (32 bpp XRGB) the display device offers: a loader
 * describes it to the kernel (Linux: screen_info, VIDEO_TYPE_VLFB).
 * NULL until a display device registers one.
 */
struct boot_display {
	uint64_t base;
	uint32_t size, stride;
	uint16_t width, height;
};
void boot_set_display(const struct boot_display *d);
const struct boot_display *boot_get_display(void);

/* e820 map derived from the VM's memory layout (for multiboot and Linux). */
struct e820_entry {
	uint64_t addr, size;
	uint32_t type;   /* 1 RAM, 2 reserved, 3 ACPI */
};
#define E820_RAM 1
#define E820_RESERVED 2
#define E820_ACPI 3
int boot_e820_map(struct vmctx *ctx, struct e820_entry *out, int max);

/* Write a flat GDT (code32/data32 or code64/data) at BOOT_GDT_ADDR. */
int boot_write_gdt(struct vmctx *ctx, struct boot_entry *be);
/* Identity-map the first 4 GiB with 2 MiB pages at BOOT_PML4_ADDR. */
int boot_write_identity_pagetables(struct vmctx *ctx, struct boot_entry *be);

/*
 * Loaders return 0, or -1 after writing one line to err naming the file
 * and what is wrong with it.
 */
int multiboot_probe(const uint8_t *img, size_t len);   /* 1 if multiboot v1 */
int multiboot_load(struct vmctx *ctx, const struct boot_params_in *in,
                   struct boot_entry *be, char *err, size_t errlen);

/*
 * The 8259 pair as a PC BIOS leaves it (boot/pic.c): master vectors 0x08,
 * slave 0x70, cascade on IRQ2, device lines masked.  For direct kernel
 * boots, through the in-kernel irqchip.
 */
void boot_pic_bios_state(struct kvm_pic_state *p, bool slave);
int boot_setup_pics(struct vmctx *ctx);

/* Read a whole file (for kernels/initrds); NULL + err on failure. */
uint8_t *boot_read_file(const char *path, size_t *len, char *err, size_t errlen);

#endif
