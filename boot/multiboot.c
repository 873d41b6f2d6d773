/*
 * Multiboot v1 loader, as QEMU's -kernel: an ELF image (or the a.out
 * kludge address fields) with a Multiboot header in its first 8 KiB; one
 * module (the initrd) and a command line.  The kernel is entered in flat
 * 32-bit protected mode with EAX = 0x2BADB002 and EBX = the info block.
 */
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../vmm/vmm.h"
#include "boot.h"

#define MB_HEADER_MAGIC 0x1BADB002u
#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_SEARCH 8192
#define MB_FLAG_AOUT_KLUDGE (1u << 16)

#define MBI_MEM (1u << 0)
#define MBI_CMDLINE (1u << 2)
#define MBI_MODS (1u << 3)
#define MBI_MMAP (1u << 6)
#define MBI_LOADER (1u << 9)

struct mb_header {
	uint32_t magic, flags, checksum;
	uint32_t header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr;
};

struct mb_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
	uint32_t drives_length, drives_addr, config_table, boot_loader_name;
	uint32_t apm_table, vbe[6];
} __attribute__((packed));

struct mb_mmap_entry {
	uint32_t size;
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

struct mb_module {
	uint32_t mod_start, mod_end, string, reserved;
};

/* Sub-layout of the info area at BOOT_MBINFO_ADDR. */
#define MBI_MMAP_OFF 0x100
#define MBI_MODS_OFF 0x400
#define MBI_STR_OFF 0x800

static const struct mb_header *find_header(const uint8_t *img, size_t len, size_t *off)
{
	size_t lim = len < MB_SEARCH ? len : MB_SEARCH;
	for (size_t o = 0; o + sizeof(struct mb_header) <= lim; o += 4) {
		uint32_t m, f, c;
		memcpy(&m, img + o, 4);
		if (m != MB_HEADER_MAGIC)
			continue;
		memcpy(&f, img + o + 4, 4);
		memcpy(&c, img + o + 8, 4);
		if ((uint32_t)(m + f + c) != 0)
			continue;
		*off = o;
		return (const struct mb_header *)(img + o);
	}
	return NULL;
}

int multiboot_probe(const uint8_t *img, size_t len)
{
	size_t off;
	return find_header(img, len, &off) != NULL;
}

/* Copy [src, src+filesz) to gpa and zero up to memsz, after bounds checks. */
static int load_segment(struct vmctx *ctx, uint64_t gpa, const uint8_t *src, uint64_t filesz,
                        uint64_t memsz, uint64_t *top)
{
	if (memsz < filesz || gpa + memsz < gpa)
		return -1;
	uint8_t *dst = vm_map_gpa(ctx, gpa, memsz);
	if (!dst)
		return -1;
	memcpy(dst, src, filesz);
	memset(dst + filesz, 0, memsz - filesz);
	if (gpa + memsz > *top)
		*top = gpa + memsz;
	return 0;
}

static int load_elf(struct vmctx *ctx, const uint8_t *img, size_t len, const char *path,
                    uint64_t *entry, uint64_t *top, char *err, size_t errlen)
{
	if (len < EI_NIDENT || memcmp(img, ELFMAG, SELFMAG) != 0) {
		snprintf(err, errlen, "%s: not an ELF file and no a.out kludge in the Multiboot header", path);
		return -1;
	}
	bool is64 = img[EI_CLASS] == ELFCLASS64;
	size_t ehsz = is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
	if ((!is64 && img[EI_CLASS] != ELFCLASS32) || len < ehsz) {
		snprintf(err, errlen, "%s: truncated or invalid ELF header", path);
		return -1;
	}
	uint64_t phoff, phnum, phentsize;
	if (is64) {
		Elf64_Ehdr eh;
		memcpy(&eh, img, sizeof(eh));
		phoff = eh.e_phoff; phnum = eh.e_phnum; phentsize = eh.e_phentsize; *entry = eh.e_entry;
		if (eh.e_machine != EM_X86_64)
			goto badmachine;
	} else {
		Elf32_Ehdr eh;
		memcpy(&eh, img, sizeof(eh));
		phoff = eh.e_phoff; phnum = eh.e_phnum; phentsize = eh.e_phentsize; *entry = eh.e_entry;
		if (eh.e_machine != EM_386 && eh.e_machine != EM_X86_64)
			goto badmachine;
	}
	if (phentsize != (is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr)) || phnum == 0 ||
	    phoff > len || phnum * phentsize > len - phoff) {
		snprintf(err, errlen, "%s: truncated ELF (program headers beyond end of file)", path);
		return -1;
	}
	int loaded = 0;
	for (uint64_t i = 0; i < phnum; i++) {
		uint64_t type, off, paddr, filesz, memsz;
		const uint8_t *ph = img + phoff + i * phentsize;
		if (is64) {
			Elf64_Phdr p;
			memcpy(&p, ph, sizeof(p));
			type = p.p_type; off = p.p_offset; paddr = p.p_paddr; filesz = p.p_filesz; memsz = p.p_memsz;
		} else {
			Elf32_Phdr p;
			memcpy(&p, ph, sizeof(p));
			type = p.p_type; off = p.p_offset; paddr = p.p_paddr; filesz = p.p_filesz; memsz = p.p_memsz;
		}
		if (type != PT_LOAD || memsz == 0)
			continue;
		if (off > len || filesz > len - off) {
			snprintf(err, errlen, "%s: truncated ELF (segment %llu extends beyond end of file)", path,
			         (unsigned long long)i);
			return -1;
		}
		if (load_segment(ctx, paddr, img + off, filesz, memsz, top)) {
			snprintf(err, errlen, "%s: segment %llu at 0x%llx (+0x%llx) does not fit in guest RAM", path,
			         (unsigned long long)i, (unsigned long long)paddr, (unsigned long long)memsz);
			return -1;
		}
		loaded++;
	}
	if (!loaded) {
		snprintf(err, errlen, "%s: ELF has no loadable segments", path);
		return -1;
	}
	return 0;
badmachine:
	snprintf(err, errlen, "%s: ELF is not for x86", path);
	return -1;
}

static int load_aout_kludge(struct vmctx *ctx, const struct mb_header *h, size_t hoff, const uint8_t *img,
                            size_t len, const char *path, uint64_t *entry, uint64_t *top, char *err,
                            size_t errlen)
{
	if (h->load_addr > h->header_addr || h->header_addr - h->load_addr > hoff) {
		snprintf(err, errlen, "%s: inconsistent Multiboot load address fields", path);
		return -1;
	}
	uint64_t file_off = hoff - (h->header_addr - h->load_addr);
	uint64_t load_end = h->load_end_addr ? h->load_end_addr : h->load_addr + (len - file_off);
	uint64_t bss_end = h->bss_end_addr ? h->bss_end_addr : load_end;
	if (load_end < h->load_addr || bss_end < load_end || load_end - h->load_addr > len - file_off) {
		snprintf(err, errlen, "%s: truncated kernel (Multiboot load range beyond end of file)", path);
		return -1;
	}
	if (load_segment(ctx, h->load_addr, img + file_off, load_end - h->load_addr, bss_end - h->load_addr, top)) {
		snprintf(err, errlen, "%s: kernel does not fit in guest RAM", path);
		return -1;
	}
	*entry = h->entry_addr;
	return 0;
}

int multiboot_load(struct vmctx *ctx, const struct boot_params_in *in, struct boot_entry *be, char *err,
                   size_t errlen)
{
	size_t len, hoff;
	int rc = -1;
	uint8_t *img = boot_read_file(in->kernel_path, &len, err, errlen);
	uint8_t *initrd = NULL;
	if (!img)
		return -1;
	const struct mb_header *h = find_header(img, len, &hoff);
	if (!h) {
		snprintf(err, errlen, "%s: not a Multiboot kernel (no Multiboot header in the first 8 KiB)",
		         in->kernel_path);
		goto out;
	}
	uint64_t entry = 0, top = 0;
	if (h->flags & MB_FLAG_AOUT_KLUDGE) {
		if (hoff + sizeof(*h) > len) {
			snprintf(err, errlen, "%s: truncated Multiboot header", in->kernel_path);
			goto out;
		}
		if (load_aout_kludge(ctx, h, hoff, img, len, in->kernel_path, &entry, &top, err, errlen))
			goto out;
	} else if (load_elf(ctx, img, len, in->kernel_path, &entry, &top, err, errlen)) {
		goto out;
	}
	if (entry >= 0x100000000ULL || !vm_map_gpa(ctx, entry, 1)) {
		snprintf(err, errlen, "%s: entry point 0x%llx is outside guest RAM", in->kernel_path,
		         (unsigned long long)entry);
		goto out;
	}

	struct mb_info mbi;
	memset(&mbi, 0, sizeof(mbi));
	uint64_t low = vm_get_lowmem_size(ctx);
	mbi.flags = MBI_MEM | MBI_CMDLINE | MBI_MMAP | MBI_LOADER;
	mbi.mem_lower = 640;
	mbi.mem_upper = (uint32_t)((low - 0x100000) / 1024);

	size_t cl = strlen(in->cmdline);
	if (cl + 1 > BOOT_CMDLINE_MAX) {
		snprintf(err, errlen, "boot.cmdline: too long (%zu bytes, max %llu)", cl,
		         (unsigned long long)BOOT_CMDLINE_MAX - 1);
		goto out;
	}
	vm_copy_to_guest(ctx, BOOT_CMDLINE_ADDR, in->cmdline, cl + 1);
	mbi.cmdline = (uint32_t)BOOT_CMDLINE_ADDR;

	static const char loader[] = "hyve";
	vm_copy_to_guest(ctx, BOOT_MBINFO_ADDR + MBI_STR_OFF + 0x700, loader, sizeof(loader));
	mbi.boot_loader_name = (uint32_t)(BOOT_MBINFO_ADDR + MBI_STR_OFF + 0x700);

	struct e820_entry e820[16];
	int ne = boot_e820_map(ctx, e820, 16);
	struct mb_mmap_entry mm[16];
	for (int i = 0; i < ne; i++)
		mm[i] = (struct mb_mmap_entry){ 20, e820[i].addr, e820[i].size, e820[i].type };
	vm_copy_to_guest(ctx, BOOT_MBINFO_ADDR + MBI_MMAP_OFF, mm, (size_t)ne * sizeof(mm[0]));
	mbi.mmap_addr = (uint32_t)(BOOT_MBINFO_ADDR + MBI_MMAP_OFF);
	mbi.mmap_length = (uint32_t)((size_t)ne * sizeof(mm[0]));

	if (in->initrd_path) {
		size_t ilen;
		initrd = boot_read_file(in->initrd_path, &ilen, err, errlen);
		if (!initrd)
			goto out;
		uint64_t start = (top + 0xfff) & ~0xfffULL;
		if (start + ilen > low || start + ilen < start) {
			snprintf(err, errlen, "%s: module does not fit in guest RAM below %llu MiB", in->initrd_path,
			         (unsigned long long)(low >> 20));
			goto out;
		}
		vm_copy_to_guest(ctx, start, initrd, ilen);
		struct mb_module mod = { (uint32_t)start, (uint32_t)(start + ilen),
		                         (uint32_t)(BOOT_MBINFO_ADDR + MBI_STR_OFF), 0 };
		size_t pl = strlen(in->initrd_path);
		if (pl > 0x6ff)
			pl = 0x6ff;
		vm_copy_to_guest(ctx, BOOT_MBINFO_ADDR + MBI_STR_OFF, in->initrd_path, pl);
		vm_copy_to_guest(ctx, BOOT_MBINFO_ADDR + MBI_STR_OFF + pl, "", 1);
		vm_copy_to_guest(ctx, BOOT_MBINFO_ADDR + MBI_MODS_OFF, &mod, sizeof(mod));
		mbi.flags |= MBI_MODS;
		mbi.mods_count = 1;
		mbi.mods_addr = (uint32_t)(BOOT_MBINFO_ADDR + MBI_MODS_OFF);
	}
	vm_copy_to_guest(ctx, BOOT_MBINFO_ADDR, &mbi, sizeof(mbi));

	memset(be, 0, sizeof(*be));
	be->mode = BOOT_MODE_PROT32;
	be->rip = entry;
	be->rsp = BOOT_STACK_TOP;
	be->rax = MB_BOOT_MAGIC;
	be->rbx = BOOT_MBINFO_ADDR;
	if (boot_write_gdt(ctx, be)) {
		snprintf(err, errlen, "guest RAM too small for boot structures");
		goto out;
	}
	rc = 0;
out:
	free(img);
	free(initrd);
	return rc;
}
