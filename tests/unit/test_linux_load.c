/*
 * Unit tests for boot/linux.c, without /dev/kvm: guest RAM is a malloc'd
 * buffer behind fake vmm/boot functions defined here.
 *
 * Build and run:
 *   cc -std=c11 -Wall -Wextra -Werror -I. tests/unit/test_linux_load.c boot/linux.c \
 *      $(pkg-config --libs zlib liblzma libzstd liblz4) -o /tmp/t && /tmp/t
 *
 * Real kernels: set HYVE_TEST_KERNEL to one or more bzImage paths separated
 * by ':' (else /boot/vmlinuz-* is tried); skipped with a message if none.
 * test-sources: boot/linux.c
 * test-libs: -lz -llzma -lzstd -llz4
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <elf.h>
#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "boot/boot.h"
#include "boot/linux.h"
#include "vmm/vmm.h"

#define MiB (1024ULL * 1024)

/* ---- fakes ---- */

struct vmctx {
	uint8_t *ram;
	uint64_t size;   /* all of it is "low" memory */
	int gdt_calls, pt_calls;
};

void *vm_map_gpa(struct vmctx *ctx, uint64_t gpa, size_t len)
{
	if (gpa > ctx->size || len > ctx->size - gpa)
		return NULL;
	return ctx->ram + gpa;
}

int vm_copy_to_guest(struct vmctx *ctx, uint64_t gpa, const void *src, size_t len)
{
	void *p = vm_map_gpa(ctx, gpa, len);
	if (!p)
		return -1;
	memcpy(p, src, len);
	return 0;
}

uint64_t vm_get_lowmem_size(struct vmctx *ctx)
{
	return ctx->size;
}

int boot_e820_map(struct vmctx *ctx, struct e820_entry *out, int max)
{
	if (max < 3)
		return -1;
	out[0] = (struct e820_entry){ 0, BOOT_EBDA_START, E820_RAM };
	out[1] = (struct e820_entry){ BOOT_EBDA_START, 0x100000 - BOOT_EBDA_START, E820_RESERVED };
	out[2] = (struct e820_entry){ 0x100000, ctx->size - 0x100000, E820_RAM };
	return 3;
}

int boot_write_gdt(struct vmctx *ctx, struct boot_entry *be)
{
	ctx->gdt_calls++;
	be->gdt_base = BOOT_GDT_ADDR;
	be->gdt_limit = 4 * 8 - 1;
	return 0;
}

int boot_write_identity_pagetables(struct vmctx *ctx, struct boot_entry *be)
{
	ctx->pt_calls++;
	be->cr3 = BOOT_PML4_ADDR;
	return 0;
}

uint8_t *boot_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open", path);
		return NULL;
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
	if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
		snprintf(err, errlen, "%s: cannot read", path);
		free(p);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return p;
}

static struct vmctx *vm_new_fill(uint64_t size, bool fill)
{
	struct vmctx *c = calloc(1, sizeof(*c));
	c->ram = calloc(1, size);     /* lazily zeroed: cheap for big fakes */
	if (fill)
		memset(c->ram, 0xaa, size);   /* so that missing zeroing shows */
	c->size = size;
	return c;
}

static struct vmctx *vm_new(uint64_t size)
{
	return vm_new_fill(size, true);
}

static void vm_free(struct vmctx *c)
{
	free(c->ram);
	free(c);
}

/* ---- checks ---- */

static int npass, nfail;

static void check(int ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s - ", ok ? "ok" : "FAIL");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	if (ok)
		npass++;
	else
		nfail++;
}

/* ---- synthetic kernels ---- */

struct buf {
	uint8_t *p;
	size_t len;
};

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 8;
}

#define SEG0_PADDR 0x1000000ULL
#define SEG0_FILESZ 0x3000
#define SEG0_MEMSZ  0x5000
#define SEG1_PADDR 0x1400000ULL
#define SEG1_FILESZ 0x1800
#define ENTRY_OFF   0x40

/* A vmlinux-like ELF64: two PT_LOAD segments (the first with bss). */
static struct buf make_vmlinux(uint16_t machine, uint64_t seg0_paddr, size_t pad)
{
	size_t data_off = 0x1000;
	size_t len = data_off + SEG0_FILESZ + SEG1_FILESZ + pad;
	uint8_t *p = calloc(1, len);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)p;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = machine;
	eh->e_version = EV_CURRENT;
	eh->e_entry = seg0_paddr + ENTRY_OFF;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 3;
	Elf64_Phdr *ph = (Elf64_Phdr *)(p + eh->e_phoff);
	ph[0] = (Elf64_Phdr){ PT_LOAD, PF_R | PF_X, data_off, 0xffffffff81000000ULL,
	                      seg0_paddr, SEG0_FILESZ, SEG0_MEMSZ, 0x200000 };
	ph[1] = (Elf64_Phdr){ PT_NOTE, PF_R, data_off, 0, 0, 16, 16, 4 };
	ph[2] = (Elf64_Phdr){ PT_LOAD, PF_R | PF_W, data_off + SEG0_FILESZ,
	                      0xffffffff81400000ULL, SEG1_PADDR, SEG1_FILESZ, SEG1_FILESZ, 0x1000 };
	/* Half noise, half text-like, so compressors have something to do. */
	for (size_t i = data_off; i < data_off + SEG0_FILESZ + SEG1_FILESZ; i++)
		p[i] = (i & 0x100) ? (uint8_t)rnd() : (uint8_t)("hyve linux loader "[i % 18]);
	return (struct buf){ p, len };
}

static void append_le32(struct buf *b, uint32_t v)
{
	b->p = realloc(b->p, b->len + 4);
	for (int i = 0; i < 4; i++)
		b->p[b->len + (size_t)i] = (uint8_t)(v >> (8 * i));
	b->len += 4;
}

enum fmt { F_GZIP, F_XZ, F_ZSTD, F_LZ4, F_NONE, F_BZIP2, NFMT };
static const char *fmt_name[NFMT] = { "gzip", "xz", "zstd", "lz4", "uncompressed", "bzip2" };

static int fast_compress;   /* quick levels for the 60 MB real kernels */

/* Compress like the kernel build does: the payload ends in the
 * uncompressed size (gzip carries it as ISIZE). */
static struct buf compress_as(enum fmt f, const uint8_t *in, size_t len)
{
	struct buf o = { NULL, 0 };
	switch (f) {
	case F_GZIP: {
		z_stream zs;
		memset(&zs, 0, sizeof(zs));
		deflateInit2(&zs, fast_compress ? 1 : 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
		size_t cap = deflateBound(&zs, (uLong)len) + 64;
		o.p = malloc(cap);
		zs.next_in = (Bytef *)(uintptr_t)in;
		zs.avail_in = (uInt)len;
		zs.next_out = o.p;
		zs.avail_out = (uInt)cap;
		deflate(&zs, Z_FINISH);
		o.len = cap - zs.avail_out;
		deflateEnd(&zs);
		return o;
	}
	case F_XZ: {
		lzma_options_lzma opt;
		lzma_lzma_preset(&opt, fast_compress ? 0 : 6);
		lzma_filter filters[] = { { LZMA_FILTER_X86, NULL }, { LZMA_FILTER_LZMA2, &opt },
		                          { LZMA_VLI_UNKNOWN, NULL } };
		size_t cap = lzma_stream_buffer_bound(len);
		o.p = malloc(cap);
		size_t pos = 0;
		if (lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, NULL, in, len, o.p, &pos,
		                              cap) != LZMA_OK)
			abort();
		o.len = pos;
		break;
	}
	case F_ZSTD: {
		/* like the zstd tool: content size and checksum in the frame */
		size_t cap = ZSTD_compressBound(len);
		o.p = malloc(cap);
		ZSTD_CCtx *z = ZSTD_createCCtx();
		ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, fast_compress ? 3 : 19);
		ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
		o.len = ZSTD_compress2(z, o.p, cap, in, len);
		ZSTD_freeCCtx(z);
		if (ZSTD_isError(o.len))
			abort();
		break;
	}
	case F_LZ4: {
		size_t chunk = 8 * MiB;
		size_t cap = 4 + (len / chunk + 1) * (4 + (size_t)LZ4_compressBound((int)chunk));
		o.p = malloc(cap);
		o.p[0] = 0x02; o.p[1] = 0x21; o.p[2] = 0x4c; o.p[3] = 0x18;
		o.len = 4;
		for (size_t off = 0; off < len; off += chunk) {
			size_t n = len - off < chunk ? len - off : chunk;
			int c = LZ4_compress_default((const char *)in + off, (char *)o.p + o.len + 4,
			                             (int)n, LZ4_compressBound((int)n));
			for (int i = 0; i < 4; i++)
				o.p[o.len + (size_t)i] = (uint8_t)((uint32_t)c >> (8 * i));
			o.len += 4 + (size_t)c;
		}
		break;
	}
	case F_NONE:
		o.p = malloc(len);
		memcpy(o.p, in, len);
		o.len = len;
		return o;
	case F_BZIP2:
		o.p = malloc(64);
		memcpy(o.p, "BZh91AY&SY", 10);
		memset(o.p + 10, 0x5a, 54);
		o.len = 64;
		break;
	default:
		abort();
	}
	append_le32(&o, (uint32_t)len);
	return o;
}

#define SETUP_SECTS 4
#define HEAD_LEN 0x100   /* stand-in for the decompressor code before the payload */
#define TAIL_LEN 0x40

struct bz_opts {
	uint16_t version;
	uint32_t init_size;
	uint64_t pref;
	uint8_t loadflags;
};

static void put16(uint8_t *p, size_t off, uint16_t v) { memcpy(p + off, &v, 2); }
static void put32(uint8_t *p, size_t off, uint32_t v) { memcpy(p + off, &v, 4); }
static void put64(uint8_t *p, size_t off, uint64_t v) { memcpy(p + off, &v, 8); }

static struct buf make_bzimage(const struct buf *payload, const struct bz_opts *o)
{
	size_t setup = (SETUP_SECTS + 1) * 512;
	size_t pm = HEAD_LEN + payload->len + TAIL_LEN;
	pm = (pm + 15) & ~(size_t)15;
	size_t len = setup + pm;
	uint8_t *p = calloc(1, len);
	p[0x1f1] = SETUP_SECTS;
	put32(p, 0x1f4, (uint32_t)(pm / 16));
	put16(p, 0x1fa, 0xfffd);
	put16(p, 0x1fe, 0xaa55);
	p[0x200] = 0xeb;
	p[0x201] = 0x6a;                       /* header ends at 0x26c */
	memcpy(p + 0x202, "HdrS", 4);
	put16(p, 0x206, o->version);
	p[0x211] = o->loadflags;
	put32(p, 0x214, 0x100000);
	put32(p, 0x22c, 0x7fffffff);
	put32(p, 0x230, 0x200000);
	p[0x234] = 1;
	p[0x235] = 21;
	put16(p, 0x236, 0x7f);
	put32(p, 0x238, 2047);
	put32(p, 0x248, HEAD_LEN);
	put32(p, 0x24c, (uint32_t)payload->len);
	put64(p, 0x258, o->pref);
	put32(p, 0x260, o->init_size);
	for (size_t i = 0; i < HEAD_LEN; i++)
		p[setup + i] = (uint8_t)(0x90 + i % 7);
	memcpy(p + setup + HEAD_LEN, payload->p, payload->len);
	return (struct buf){ p, len };
}

static const struct bz_opts default_bz = { 0x020f, 0x800000, 0x1000000, 0x01 };

static char tmpdir[64];

static const char *write_tmp(const char *name, const uint8_t *p, size_t len)
{
	static char path[4][128];
	static int k;
	char *s = path[k++ % 4];
	snprintf(s, 128, "%s/%s", tmpdir, name);
	FILE *f = fopen(s, "wb");
	fwrite(p, 1, len, f);
	fclose(f);
	return s;
}

static const struct linux_boot_params *zp(struct vmctx *c)
{
	return (const struct linux_boot_params *)(c->ram + BOOT_ZEROPAGE_ADDR);
}

/* Everything a successful load must leave behind. */
static void check_common(struct vmctx *c, const struct boot_entry *be, const char *tag,
                         const char *cmdline, const uint8_t *initrd, size_t initrd_len,
                         uint64_t kernel_end)
{
	const struct linux_boot_params *bp = zp(c);
	check(be->rsi == BOOT_ZEROPAGE_ADDR, "%s: rsi = boot_params", tag);
	check(c->gdt_calls == 1, "%s: GDT written", tag);
	check(bp->hdr.header == LINUX_HDR_MAGIC && bp->hdr.boot_flag == 0xaa55,
	      "%s: zero page has HdrS and boot flag", tag);
	check(bp->hdr.type_of_loader == 0xff, "%s: type_of_loader 0xff", tag);
	check(bp->hdr.loadflags == (LINUX_LOADED_HIGH | LINUX_CAN_USE_HEAP),
	      "%s: loadflags LOADED_HIGH|CAN_USE_HEAP (%#x)", tag, bp->hdr.loadflags);
	check(bp->hdr.vid_mode == 0xffff && bp->screen_info[0x0f] == 0, "%s: no video", tag);
	check(bp->hdr.cmd_line_ptr == BOOT_CMDLINE_ADDR &&
	      strcmp((char *)c->ram + BOOT_CMDLINE_ADDR, cmdline) == 0,
	      "%s: command line at %#x", tag, bp->hdr.cmd_line_ptr);
	check(bp->e820_entries == 3 && bp->e820_table[2].addr == 0x100000 &&
	      bp->e820_table[2].size == c->size - 0x100000 && bp->e820_table[1].type == E820_RESERVED,
	      "%s: e820 table (%u entries)", tag, bp->e820_entries);
	check(bp->acpi_rsdp_addr == BOOT_ACPI_BASE, "%s: acpi_rsdp_addr", tag);
	if (initrd) {
		uint64_t a = bp->hdr.ramdisk_image;
		check(bp->hdr.ramdisk_size == initrd_len && (a & 0xfff) == 0 && a >= kernel_end &&
		      a + initrd_len <= c->size && a + initrd_len > c->size - 4096 &&
		      memcmp(c->ram + a, initrd, initrd_len) == 0,
		      "%s: initrd at %#llx (page aligned, above kernel end %#llx, top of RAM)", tag,
		      (unsigned long long)a, (unsigned long long)kernel_end);
	}
}

static void test_probe(void)
{
	struct buf v = make_vmlinux(EM_X86_64, SEG0_PADDR, 0);
	struct buf pl = compress_as(F_GZIP, v.p, v.len);
	struct buf bz = make_bzimage(&pl, &default_bz);
	check(linux_probe(bz.p, bz.len) == 1, "probe: bzImage -> 1");
	check(linux_probe(v.p, v.len) == 2, "probe: vmlinux -> 2");
	uint8_t junk[4096];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)rnd();
	check(linux_probe(junk, sizeof(junk)) == 0, "probe: garbage -> 0");
	v.p[EI_CLASS] = ELFCLASS32;
	check(linux_probe(v.p, v.len) == 0, "probe: ELF32 -> 0");
	check(linux_probe(bz.p, 0x205) == 0 && linux_probe(NULL, 0) == 0, "probe: short -> 0");
	free(v.p); free(pl.p); free(bz.p);
}

static void test_formats(void)
{
	struct buf v = make_vmlinux(EM_X86_64, SEG0_PADDR, 0);
	uint8_t initrd[100000];
	for (size_t i = 0; i < sizeof(initrd); i++)
		initrd[i] = (uint8_t)(i * 7);
	const char *initrd_path = write_tmp("initrd", initrd, sizeof(initrd));
	const char *cmdline = "console=ttyS0 root=/dev/vda1";
	for (int f = F_GZIP; f <= F_NONE; f++) {
		struct buf pl = compress_as((enum fmt)f, v.p, v.len);
		struct buf bz = make_bzimage(&pl, &default_bz);
		struct vmctx *c = vm_new(64 * MiB);
		struct boot_params_in in = { "bzImage-test", initrd_path, cmdline, 1 };
		struct linux_boot_opts o = { false, BOOT_ACPI_BASE };
		struct boot_entry be;
		char err[256] = "";
		char tag[64];
		snprintf(tag, sizeof(tag), "bzImage/%s", fmt_name[f]);
		int rc = linux_load_image(c, bz.p, bz.len, &in, &o, &be, err, sizeof(err));
		check(rc == 0, "%s: loads (%zu-byte payload) %s", tag, pl.len, err);
		if (rc == 0) {
			check(be.mode == BOOT_MODE_LONG64 && be.rip == SEG0_PADDR + ENTRY_OFF &&
			      be.cr3 == BOOT_PML4_ADDR && c->pt_calls == 1,
			      "%s: 64-bit entry at e_entry %#llx with page tables", tag,
			      (unsigned long long)be.rip);
			check(memcmp(c->ram + SEG0_PADDR, v.p + 0x1000, SEG0_FILESZ) == 0 &&
			      memcmp(c->ram + SEG1_PADDR, v.p + 0x1000 + SEG0_FILESZ, SEG1_FILESZ) == 0,
			      "%s: segments at p_paddr", tag);
			int bss0 = 1;
			for (size_t i = SEG0_FILESZ; i < SEG0_MEMSZ; i++)
				bss0 &= c->ram[SEG0_PADDR + i] == 0;
			check(bss0, "%s: bss zeroed", tag);
			const struct linux_boot_params *bp = zp(c);
			check(bp->hdr.init_size == default_bz.init_size &&
			      bp->hdr.payload_length == pl.len && bp->hdr.version == 0x020f &&
			      bp->hdr.kernel_alignment == 0x200000,
			      "%s: setup header copied", tag);
			check_common(c, &be, tag, cmdline, initrd, sizeof(initrd),
			             default_bz.pref + default_bz.init_size);
		}
		vm_free(c);
		free(pl.p);
		free(bz.p);
	}
	free(v.p);
}

/* linux_load(): the kernel comes from a file. */
static void test_from_file(void)
{
	struct buf v = make_vmlinux(EM_X86_64, SEG0_PADDR, 0);
	struct buf pl = compress_as(F_ZSTD, v.p, v.len);
	struct buf bz = make_bzimage(&pl, &default_bz);
	const char *kp = write_tmp("bzImage-file", bz.p, bz.len);
	struct vmctx *c = vm_new(64 * MiB);
	struct boot_params_in in = { kp, NULL, "console=ttyS0", 1 };
	struct linux_boot_opts o = { false, 0 };
	struct boot_entry be;
	char err[256] = "";
	int rc = linux_load(c, &in, &o, &be, err, sizeof(err));
	check(rc == 0 && be.rip == SEG0_PADDR + ENTRY_OFF && zp(c)->acpi_rsdp_addr == 0,
	      "linux_load: bzImage read from a file, no RSDP given -> acpi_rsdp_addr 0 %s", err);
	struct boot_params_in none = { NULL, NULL, "", 1 };
	err[0] = 0;
	check(linux_load(c, &none, &o, &be, err, sizeof(err)) == -1 && err[0],
	      "linux_load: no kernel path refused: %s", err);
	struct boot_params_in missing = { "/nonexistent/bzImage", NULL, "", 1 };
	err[0] = 0;
	check(linux_load(c, &missing, &o, &be, err, sizeof(err)) == -1 &&
	      strstr(err, "/nonexistent/bzImage"), "linux_load: missing file refused: %s", err);
	vm_free(c);
	free(v.p); free(pl.p); free(bz.p);
}

static void test_classic(void)
{
	struct buf v = make_vmlinux(EM_X86_64, SEG0_PADDR, 0);
	struct buf pl = compress_as(F_XZ, v.p, v.len);
	struct buf bz = make_bzimage(&pl, &default_bz);
	struct vmctx *c = vm_new(64 * MiB);
	struct boot_params_in in = { "bzImage-classic", NULL, "quiet", 1 };
	struct linux_boot_opts o = { true, BOOT_ACPI_BASE };
	struct boot_entry be;
	char err[256] = "";
	int rc = linux_load_image(c, bz.p, bz.len, &in, &o, &be, err, sizeof(err));
	check(rc == 0, "classic: loads %s", err);
	size_t setup = (SETUP_SECTS + 1) * 512;
	check(be.mode == BOOT_MODE_PROT32 && be.rip == 0x100000 && c->pt_calls == 0,
	      "classic: 32-bit entry at code32_start 0x100000, no page tables");
	check(memcmp(c->ram + 0x100000, bz.p + setup, bz.len - setup) == 0,
	      "classic: protected-mode part at 1 MiB");
	check(zp(c)->hdr.code32_start == 0x100000 && zp(c)->hdr.ramdisk_image == 0,
	      "classic: code32_start set, no initrd");
	check_common(c, &be, "classic", "quiet", NULL, 0, 0);
	vm_free(c);
	free(pl.p); free(bz.p); free(v.p);
}

static void test_vmlinux(void)
{
	struct buf v = make_vmlinux(EM_X86_64, SEG0_PADDR, 0);
	uint8_t initrd[5000];
	memset(initrd, 0x3c, sizeof(initrd));
	const char *ip = write_tmp("initrd2", initrd, sizeof(initrd));
	struct vmctx *c = vm_new(32 * MiB);
	struct boot_params_in in = { "vmlinux-test", ip, "", 1 };
	struct linux_boot_opts o = { false, BOOT_ACPI_BASE };
	struct boot_entry be;
	char err[256] = "";
	int rc = linux_load_image(c, v.p, v.len, &in, &o, &be, err, sizeof(err));
	check(rc == 0, "vmlinux: loads %s", err);
	check(be.mode == BOOT_MODE_LONG64 && be.rip == SEG0_PADDR + ENTRY_OFF,
	      "vmlinux: 64-bit entry at e_entry");
	check(zp(c)->hdr.version == 0x020f && zp(c)->hdr.cmdline_size == 2047 &&
	      zp(c)->hdr.initrd_addr_max == 0x7fffffff, "vmlinux: header built from scratch");
	check_common(c, &be, "vmlinux", "", initrd, sizeof(initrd), SEG1_PADDR + SEG1_FILESZ);
	vm_free(c);

	/* virtual e_entry is translated through its segment */
	Elf64_Ehdr *eh = (Elf64_Ehdr *)v.p;
	eh->e_entry = 0xffffffff81000000ULL + ENTRY_OFF;
	c = vm_new(32 * MiB);
	rc = linux_load_image(c, v.p, v.len, &in, &o, &be, err, sizeof(err));
	check(rc == 0 && be.rip == SEG0_PADDR + ENTRY_OFF, "vmlinux: virtual e_entry translated");
	vm_free(c);
	free(v.p);
}

/* Expect failure with a one-line message naming the file and containing `want`. */
static void expect_fail(const char *tag, const uint8_t *img, size_t len, uint64_t ram,
                        const struct boot_params_in *in, bool guest, const char *want)
{
	struct vmctx *c = vm_new(ram);
	struct linux_boot_opts o = { guest, 0 };
	struct boot_entry be;
	char err[256] = "";
	int rc = linux_load_image(c, img, len, in, &o, &be, err, sizeof(err));
	const char *name = in->kernel_path;
	check(rc == -1 && strstr(err, want) && !strchr(err, '\n') &&
	      (strstr(err, name) || (in->initrd_path && strstr(err, in->initrd_path))),
	      "%s: refused: %s", tag, err);
	vm_free(c);
}

static void test_errors(void)
{
	struct boot_params_in in = { "bad-kernel", NULL, "", 1 };
	struct buf v = make_vmlinux(EM_X86_64, SEG0_PADDR, 0);
	struct buf pl = compress_as(F_GZIP, v.p, v.len);

	struct bz_opts old = default_bz;
	old.version = 0x0209;
	struct buf bz = make_bzimage(&pl, &old);
	expect_fail("protocol 2.09", bz.p, bz.len, 64 * MiB, &in, false, "too old");
	free(bz.p);

	struct bz_opts big = default_bz;
	big.init_size = 100 * MiB;
	bz = make_bzimage(&pl, &big);
	expect_fail("init_size beyond RAM", bz.p, bz.len, 64 * MiB, &in, false, "needs RAM");
	expect_fail("init_size beyond RAM (classic)", bz.p, bz.len, 64 * MiB, &in, true,
	            "needs RAM");
	free(bz.p);

	struct bz_opts low = default_bz;
	low.loadflags = 0;
	bz = make_bzimage(&pl, &low);
	expect_fail("zImage", bz.p, bz.len, 64 * MiB, &in, false, "zImage");
	free(bz.p);

	uint8_t junk[8192];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)rnd();
	expect_fail("garbage", junk, sizeof(junk), 64 * MiB, &in, false, "not a Linux kernel");

	struct buf arm = make_vmlinux(EM_AARCH64, SEG0_PADDR, 0);
	expect_fail("aarch64 ELF", arm.p, arm.len, 64 * MiB, &in, false, "not x86-64");
	struct buf armpl = compress_as(F_ZSTD, arm.p, arm.len);
	bz = make_bzimage(&armpl, &default_bz);
	expect_fail("bzImage with aarch64 payload", bz.p, bz.len, 64 * MiB, &in, false,
	            "not x86-64");
	free(bz.p); free(armpl.p); free(arm.p);

	struct buf far = make_vmlinux(EM_X86_64, 0x8000000, 0);  /* 128 MiB */
	expect_fail("segment outside RAM", far.p, far.len, 64 * MiB, &in, false,
	            "outside guest RAM");
	free(far.p);
	struct buf lowseg = make_vmlinux(EM_X86_64, 0x10000, 0);
	expect_fail("segment below 1 MiB", lowseg.p, lowseg.len, 64 * MiB, &in, false,
	            "between 1 MiB and 4 GiB");
	free(lowseg.p);

	struct buf bzp = compress_as(F_BZIP2, v.p, v.len);
	bz = make_bzimage(&bzp, &default_bz);
	expect_fail("bzip2 payload", bz.p, bz.len, 64 * MiB, &in, false, "bzip2-compressed");
	free(bz.p); free(bzp.p);

	/* corrupt payloads: flip bytes in the middle of each format (caught by
	 * the integrity checks of gzip/xz/zstd; lz4 legacy has none, so break
	 * its first block header instead) */
	for (int f = F_GZIP; f <= F_LZ4; f++) {
		struct buf p2 = compress_as((enum fmt)f, v.p, v.len);
		if (f == F_LZ4)
			memset(p2.p + 4, 0xff, 4);
		else
			for (size_t i = p2.len / 3; i < p2.len / 3 + 16; i++)
				p2.p[i] ^= 0x5a;
		bz = make_bzimage(&p2, &default_bz);
		char tag[64];
		snprintf(tag, sizeof(tag), "corrupt %s payload", fmt_name[f]);
		expect_fail(tag, bz.p, bz.len, 64 * MiB, &in, false, fmt_name[f]);
		free(bz.p); free(p2.p);
	}

	/* initrd too large for RAM */
	size_t isz = 60 * MiB;
	uint8_t *big_initrd = calloc(1, isz);
	const char *ip = write_tmp("initrd-big", big_initrd, isz);
	free(big_initrd);
	bz = make_bzimage(&pl, &default_bz);
	struct boot_params_in in2 = { "bad-kernel", ip, "", 1 };
	expect_fail("initrd too large", bz.p, bz.len, 64 * MiB, &in2, false, "does not fit");
	unlink(ip);
	struct boot_params_in in3 = { "bad-kernel", "/nonexistent/initrd", "", 1 };
	expect_fail("missing initrd", bz.p, bz.len, 64 * MiB, &in3, false, "cannot open");

	/* command line longer than cmdline_size */
	char *longcl = malloc(3000);
	memset(longcl, 'x', 2999);
	longcl[2999] = 0;
	struct boot_params_in in4 = { "bad-kernel", NULL, longcl, 1 };
	expect_fail("command line too long", bz.p, bz.len, 64 * MiB, &in4, false, "command line");
	free(longcl);
	free(bz.p);
	free(pl.p);
	free(v.p);
}

/* Run a load that must not crash; failures must come with a message. */
static int try_load(const uint8_t *img, size_t len, bool guest, int *bad_msg)
{
	uint8_t *copy = malloc(len ? len : 1);   /* exact size: overreads show under ASan */
	memcpy(copy, img, len);
	static struct vmctx *c;   /* one fake reused: contents are not checked here */
	if (!c)
		c = vm_new_fill(64 * MiB, false);
	c->gdt_calls = c->pt_calls = 0;
	struct boot_params_in in = { "fuzz-kernel", NULL, "", 1 };
	struct linux_boot_opts o = { guest, 0 };
	struct boot_entry be;
	char err[256] = "";
	int rc = linux_load_image(c, copy, len, &in, &o, &be, err, sizeof(err));
	if (rc != 0 && (rc != -1 || !strstr(err, "fuzz-kernel") || strchr(err, '\n')))
		(*bad_msg)++;
	free(copy);
	return rc;
}

static void test_truncation(void)
{
	struct buf v = make_vmlinux(EM_X86_64, SEG0_PADDR, 0);
	for (int f = F_GZIP; f <= F_NONE; f++) {
		struct buf pl = compress_as((enum fmt)f, v.p, v.len);
		struct buf bz = make_bzimage(&pl, &default_bz);
		int ok = 0, bad = 0;
		for (size_t n = 0; n < bz.len; n++)
			ok += try_load(bz.p, n, false, &bad) == 0;
		check(ok == 0 && bad == 0, "truncated %s bzImage at every offset 0..%zu: all refused "
		      "with a message (%d accepted, %d bad messages)", fmt_name[f], bz.len - 1, ok, bad);

		/* the payload itself cut short, header adjusted to match */
		ok = bad = 0;
		int accepted = 0;
		for (size_t n = 1; n < pl.len; n++) {
			struct buf cut = { pl.p, n };
			struct buf b2 = make_bzimage(&cut, &default_bz);
			int r = try_load(b2.p, b2.len, false, &bad);
			accepted += r == 0;
			free(b2.p);
		}
		/* Cutting only the 4-byte size trailer (or ELF padding) may still load. */
		check(bad == 0 && accepted <= 8, "%s payload cut at every offset: no crash, "
		      "%d bad messages, %d still loadable", fmt_name[f], bad, accepted);
		free(pl.p);
		free(bz.p);
	}
	int ok = 0, bad = 0;
	for (size_t n = 0; n < v.len; n++)
		ok += try_load(v.p, n, false, &bad) == 0;
	check(bad == 0 && ok == 0, "truncated vmlinux at every offset: all refused (%d accepted)",
	      ok);
	free(v.p);
}

static void test_fuzz(void)
{
	struct buf v = make_vmlinux(EM_X86_64, SEG0_PADDR, 0);
	int bad = 0, loaded = 0, runs = 0;
	for (int f = F_GZIP; f <= F_NONE; f++) {
		struct buf pl = compress_as((enum fmt)f, v.p, v.len);
		struct buf bz = make_bzimage(&pl, &default_bz);
		for (int it = 0; it < 400; it++) {
			uint8_t *m = malloc(bz.len);
			memcpy(m, bz.p, bz.len);
			int nflip = 1 + (int)(rnd() % 4);
			for (int k = 0; k < nflip; k++) {
				size_t at;
				switch (rnd() % 3) {
				case 0: at = 0x1f1 + rnd() % (0x270 - 0x1f1); break;   /* header */
				case 1: at = (SETUP_SECTS + 1) * 512 + HEAD_LEN + rnd() % 64; break;
				default: at = rnd() % bz.len; break;
				}
				if (at < bz.len)
					m[at] = (uint8_t)rnd();
			}
			loaded += try_load(m, bz.len, it & 1, &bad) == 0;
			runs++;
			free(m);
		}
		free(pl.p);
		free(bz.p);
	}
	check(bad == 0, "fuzz: %d mutated images, no crash, %d loaded, %d bad messages", runs,
	      loaded, bad);
	free(v.p);
}

/* ---- real kernels ---- */

static uint8_t *read_all(const char *path, size_t *len)
{
	char err[256];
	return boot_read_file(path, len, err, sizeof(err));
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A bzImage like `img` whose payload is replaced by `pl`. */
static struct buf repack(const uint8_t *img, size_t len, const struct buf *pl)
{
	struct linux_setup_header h;
	memcpy(&h, img + 0x1f1, sizeof(h));
	size_t setup = ((size_t)(h.setup_sects ? h.setup_sects : 4) + 1) * 512;
	size_t pm_len = (size_t)h.syssize * 16;
	size_t tail_off = setup + h.payload_offset + h.payload_length;
	size_t tail = setup + pm_len - tail_off;
	size_t nlen = setup + h.payload_offset + pl->len + tail;
	nlen = (nlen + 15) & ~(size_t)15;
	uint8_t *p = calloc(1, nlen);
	memcpy(p, img, setup + h.payload_offset);
	memcpy(p + setup + h.payload_offset, pl->p, pl->len);
	memcpy(p + setup + h.payload_offset + pl->len, img + tail_off, tail);
	put32(p, 0x1f4, (uint32_t)((nlen - setup) / 16));
	put32(p, 0x24c, (uint32_t)pl->len);
	(void)len;
	return (struct buf){ p, nlen };
}

static void test_real_kernel(const char *path)
{
	size_t len;
	uint8_t *img = read_all(path, &len);
	if (!img) {
		printf("skip - %s: cannot read\n", path);
		return;
	}
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if (linux_probe(img, len) != 1) {
		check(0, "%s: probed as bzImage", base);
		free(img);
		return;
	}
	struct linux_setup_header h;
	memcpy(&h, img + 0x1f1, sizeof(h));
	size_t setup = ((size_t)(h.setup_sects ? h.setup_sects : 4) + 1) * 512;
	uint8_t *elf;
	size_t elf_len;
	const char *fmt;
	char err[256] = "";
	double t0 = now();
	int rc = linux_decompress(img + setup + h.payload_offset, h.payload_length, &elf, &elf_len,
	                          &fmt, err, sizeof(err));
	check(rc == 0, "%s: %zu bytes, protocol %u.%02u, %s payload %u -> %zu bytes in %.2fs, "
	      "init_size %u MiB %s", base, len, h.version >> 8, h.version & 0xff,
	      rc == 0 ? fmt : "?", h.payload_length, rc == 0 ? elf_len : 0, now() - t0,
	      h.init_size >> 20, err);
	if (rc != 0) {
		free(img);
		return;
	}

	uint64_t ram = 512 * MiB;
	struct vmctx *c = vm_new_fill(ram, false);
	struct boot_params_in in = { path, NULL, "console=ttyS0 earlyprintk=serial", 1 };
	struct linux_boot_opts o = { false, BOOT_ACPI_BASE };
	struct boot_entry be;
	rc = linux_load_image(c, img, len, &in, &o, &be, err, sizeof(err));
	check(rc == 0 && be.mode == BOOT_MODE_LONG64 && be.rip >= 0x100000 && be.rip < ram,
	      "%s: host-decompressed load, 64-bit entry at %#llx %s", base,
	      (unsigned long long)be.rip, err);
	Elf64_Ehdr eh;
	memcpy(&eh, elf, sizeof(eh));
	check(eh.e_machine == EM_X86_64 && be.rip == eh.e_entry,
	      "%s: entry is the decompressed ELF's e_entry", base);

	/* Recompress the kernel in every supported format; each must load to
	 * the same guest memory image (from 1 MiB up: the zero page below
	 * differs in payload_length and syssize). */
	fast_compress = 1;
	for (int f = F_GZIP; f <= F_NONE && rc == 0; f++) {
		if (strcmp(fmt_name[f], fmt) == 0)
			continue;
		t0 = now();
		struct buf pl = compress_as((enum fmt)f, elf, elf_len);
		struct buf re = repack(img, len, &pl);
		struct vmctx *c2 = vm_new_fill(ram, false);
		struct boot_entry be2;
		char err2[256] = "";
		int rc2 = linux_load_image(c2, re.p, re.len, &in, &o, &be2, err2, sizeof(err2));
		check(rc2 == 0 && be2.rip == be.rip &&
		      memcmp(c->ram + 0x100000, c2->ram + 0x100000, ram - 0x100000) == 0,
		      "%s: recompressed as %s (%zu bytes): identical guest memory (%.1fs) %s", base,
		      fmt_name[f], pl.len, now() - t0, err2);
		vm_free(c2);
		free(pl.p);
		free(re.p);
	}
	fast_compress = 0;
	vm_free(c);

	c = vm_new(ram);
	o.guest_decompress = true;
	rc = linux_load_image(c, img, len, &in, &o, &be, err, sizeof(err));
	check(rc == 0 && be.mode == BOOT_MODE_PROT32 && be.rip == 0x100000,
	      "%s: classic load, 32-bit entry at 0x100000 %s", base, err);
	vm_free(c);

	c = vm_new(64 * MiB);
	o.guest_decompress = false;
	rc = linux_load_image(c, img, len, &in, &o, &be, err, sizeof(err));
	check(rc == -1 && strstr(err, "needs RAM"), "%s: 64 MiB guest refused: %s", base, err);
	vm_free(c);
	free(elf);
	free(img);
}

static void test_real_kernels(void)
{
	const char *env = getenv("HYVE_TEST_KERNEL");
	int n = 0;
	if (env && *env) {
		char *list = strdup(env);
		for (char *s = strtok(list, ":"); s; s = strtok(NULL, ":")) {
			test_real_kernel(s);
			n++;
		}
		free(list);
	} else {
		glob_t g;
		if (glob("/boot/vmlinuz-*", 0, NULL, &g) == 0) {
			for (size_t i = 0; i < g.gl_pathc; i++) {
				if (access(g.gl_pathv[i], R_OK) == 0) {
					test_real_kernel(g.gl_pathv[i]);
					n++;
				}
			}
			globfree(&g);
		}
	}
	if (n == 0)
		printf("skip - real kernels: none found (set HYVE_TEST_KERNEL=/path/to/bzImage)\n");
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hyve-test-linux-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_probe();
	test_formats();
	test_from_file();
	test_classic();
	test_vmlinux();
	test_errors();
	test_truncation();
	test_fuzz();
	test_real_kernels();

	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("note - could not remove %s\n", tmpdir);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
