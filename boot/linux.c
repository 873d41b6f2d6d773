/*
 * x86 Linux loader: bzImage (boot protocol 2.10+) and vmlinux ELF64.
 * See linux.h; the protocol is Documentation/arch/x86/boot.rst.
 */
#include "boot/linux.h"

#include <elf.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "vmm/vmm.h"

#define MiB (1024ULL * 1024)
#define GiB (1024ULL * MiB)

/* Largest decompressed kernel we accept (a decompression bomb guard). */
#define LINUX_MAX_DECOMPRESSED (1 * GiB)
/* LZ4 legacy frames: each block decompresses to at most 8 MiB. */
#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8 * MiB)

/* Values used when the kernel is a bare vmlinux (no setup header). */
#define VMLINUX_CMDLINE_SIZE    2047         /* COMMAND_LINE_SIZE - 1 */
#define VMLINUX_INITRD_ADDR_MAX 0x7fffffffu
#define VMLINUX_PROTOCOL        0x020f

#define PAGE_SIZE_4K 4096ULL

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static bool is_elf64(const uint8_t *img, size_t len)
{
	return len >= EI_NIDENT && memcmp(img, ELFMAG, SELFMAG) == 0 &&
	       img[EI_CLASS] == ELFCLASS64;
}

static bool has_setup_header(const uint8_t *img, size_t len)
{
	return len >= 0x206 && rd32(img + 0x202) == LINUX_HDR_MAGIC;
}

int linux_probe(const uint8_t *img, size_t len)
{
	if (!img)
		return 0;
	if (has_setup_header(img, len))
		return 1;
	if (is_elf64(img, len))
		return 2;
	return 0;
}

/* ---- decompression ---- */

struct obuf {
	uint8_t *p;
	size_t len, cap;
};

/* Make room for at least `want` more bytes (more if cheap). */
static int obuf_grow(struct obuf *o, size_t want)
{
	if (o->cap - o->len >= want)
		return 0;
	if (want > LINUX_MAX_DECOMPRESSED - o->len)
		return -1;
	size_t ncap = o->cap ? o->cap : 16 * MiB;
	while (ncap - o->len < want)
		ncap *= 2;
	if (ncap > LINUX_MAX_DECOMPRESSED)
		ncap = LINUX_MAX_DECOMPRESSED;
	uint8_t *n = realloc(o->p, ncap);
	if (!n)
		return -1;
	o->p = n;
	o->cap = ncap;
	return 0;
}

static const char *too_big_msg(void)
{
	return "decompressed kernel is larger than 1 GiB (or out of memory)";
}

static int unpack_gzip(const uint8_t *in, size_t len, struct obuf *o, char *err, size_t errlen)
{
	if (len > UINT_MAX) {
		set_err(err, errlen, "gzip payload too large");
		return -1;
	}
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
		set_err(err, errlen, "gzip: cannot initialise zlib");
		return -1;
	}
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	int rc = -1;
	for (;;) {
		if (obuf_grow(o, 1 * MiB) < 0) {
			set_err(err, errlen, "gzip: %s", too_big_msg());
			break;
		}
		size_t room = o->cap - o->len;
		if (room > UINT_MAX)
			room = UINT_MAX;
		zs.next_out = o->p + o->len;
		zs.avail_out = (uInt)room;
		int z = inflate(&zs, Z_NO_FLUSH);
		o->len += room - zs.avail_out;
		if (z == Z_STREAM_END) {
			rc = 0;
			break;
		}
		if (z == Z_OK)
			continue;
		if (z == Z_BUF_ERROR && zs.avail_in == 0) {
			set_err(err, errlen, "gzip: compressed data is truncated");
			break;
		}
		if (z == Z_BUF_ERROR)
			continue;   /* needs more output room */
		set_err(err, errlen, "gzip: corrupt data (%s)", zs.msg ? zs.msg : "zlib error");
		break;
	}
	inflateEnd(&zs);
	return rc;
}

static const char *lzma_msg(lzma_ret r)
{
	switch (r) {
	case LZMA_MEM_ERROR: return "out of memory";
	case LZMA_MEMLIMIT_ERROR: return "memory limit reached";
	case LZMA_FORMAT_ERROR: return "not an xz stream";
	case LZMA_OPTIONS_ERROR: return "unsupported options";
	case LZMA_DATA_ERROR: return "corrupt data";
	case LZMA_BUF_ERROR: return "compressed data is truncated";
	case LZMA_UNSUPPORTED_CHECK: return "unsupported integrity check";
	default: return "liblzma error";
	}
}

static int unpack_xz(const uint8_t *in, size_t len, struct obuf *o, char *err, size_t errlen)
{
	lzma_stream s = LZMA_STREAM_INIT;
	lzma_ret r = lzma_stream_decoder(&s, UINT64_MAX, 0);
	if (r != LZMA_OK) {
		set_err(err, errlen, "xz: %s", lzma_msg(r));
		return -1;
	}
	s.next_in = in;
	s.avail_in = len;
	int rc = -1;
	for (;;) {
		if (obuf_grow(o, 1 * MiB) < 0) {
			set_err(err, errlen, "xz: %s", too_big_msg());
			break;
		}
		size_t room = o->cap - o->len;
		s.next_out = o->p + o->len;
		s.avail_out = room;
		/* Stop at the end of the first stream: the kernel appends the
		 * uncompressed size after it. */
		r = lzma_code(&s, LZMA_FINISH);
		o->len += room - s.avail_out;
		if (r == LZMA_STREAM_END) {
			rc = 0;
			break;
		}
		if (r == LZMA_OK)
			continue;
		if (r == LZMA_BUF_ERROR && s.avail_out == 0)
			continue;
		set_err(err, errlen, "xz: %s", lzma_msg(r));
		break;
	}
	lzma_end(&s);
	return rc;
}

static int unpack_zstd(const uint8_t *in, size_t len, struct obuf *o, char *err, size_t errlen)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	if (!d) {
		set_err(err, errlen, "zstd: out of memory");
		return -1;
	}
	ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 30);
	ZSTD_inBuffer ib = { in, len, 0 };
	int rc = -1;
	for (;;) {
		if (obuf_grow(o, 1 * MiB) < 0) {
			set_err(err, errlen, "zstd: %s", too_big_msg());
			break;
		}
		ZSTD_outBuffer ob = { o->p + o->len, o->cap - o->len, 0 };
		size_t z = ZSTD_decompressStream(d, &ob, &ib);
		o->len += ob.pos;
		if (ZSTD_isError(z)) {
			set_err(err, errlen, "zstd: %s", ZSTD_getErrorName(z));
			break;
		}
		if (z == 0) {   /* frame complete; the size trailer follows */
			rc = 0;
			break;
		}
		if (ib.pos == ib.size && ob.pos < ob.size) {
			set_err(err, errlen, "zstd: compressed data is truncated");
			break;
		}
	}
	ZSTD_freeDCtx(d);
	return rc;
}

static int unpack_lz4_legacy(const uint8_t *in, size_t len, struct obuf *o,
                             uint32_t expect, char *err, size_t errlen)
{
	size_t pos = 4;   /* past the magic */
	int blocks = 0;
	const size_t bound = (size_t)LZ4_compressBound((int)LZ4_LEGACY_BLOCK);
	while (len - pos >= 4) {
		uint32_t csize = rd32(in + pos);
		if (csize == LZ4_LEGACY_MAGIC) {   /* concatenated frame */
			pos += 4;
			continue;
		}
		/* The kernel appends the uncompressed size after the last block. */
		if (blocks > 0 && len - pos == 4 && (csize == expect || csize == (uint32_t)o->len))
			break;
		pos += 4;
		if (csize == 0 || csize > bound) {
			set_err(err, errlen, "lz4: corrupt block size %u", csize);
			return -1;
		}
		if (csize > len - pos) {
			set_err(err, errlen, "lz4: compressed data is truncated");
			return -1;
		}
		if (obuf_grow(o, LZ4_LEGACY_BLOCK) < 0) {
			set_err(err, errlen, "lz4: %s", too_big_msg());
			return -1;
		}
		int n = LZ4_decompress_safe((const char *)in + pos, (char *)o->p + o->len,
		                            (int)csize, (int)LZ4_LEGACY_BLOCK);
		if (n < 0) {
			set_err(err, errlen, "lz4: corrupt data in block %d", blocks);
			return -1;
		}
		o->len += (size_t)n;
		pos += csize;
		blocks++;
	}
	if (blocks == 0) {
		set_err(err, errlen, "lz4: no data");
		return -1;
	}
	return 0;
}

int linux_decompress(const uint8_t *in, size_t len, uint8_t **out, size_t *outlen,
                     const char **fmt, char *err, size_t errlen)
{
	static const uint8_t gz[] = { 0x1f, 0x8b };
	static const uint8_t xz[] = { 0xfd, '7', 'z', 'X', 'Z', 0x00 };
	static const uint8_t zs[] = { 0x28, 0xb5, 0x2f, 0xfd };
	static const uint8_t lz4[] = { 0x02, 0x21, 0x4c, 0x18 };
	static const uint8_t bz2[] = { 'B', 'Z', 'h' };
	static const uint8_t lzo[] = { 0x89, 'L', 'Z', 'O' };
	static const uint8_t lzma[] = { 0x5d, 0x00, 0x00 };
#define MAGIC(m) (len >= sizeof(m) && memcmp(in, m, sizeof(m)) == 0)

	*out = NULL;
	*outlen = 0;
	*fmt = "unknown";
	struct obuf o = { NULL, 0, 0 };
	/* Every kernel payload format ends in the uncompressed size (gzip's
	 * ISIZE, or the 4 bytes the kernel build appends): use it to size the
	 * buffer when it is plausible (kernels compress 3-10x). */
	uint32_t hint = len >= 8 ? rd32(in + len - 4) : 0;
	if (hint >= len && hint / 32 <= len && hint <= LINUX_MAX_DECOMPRESSED - 2 * MiB) {
		o.cap = align_up(hint, MiB) + 2 * MiB;
		o.p = malloc(o.cap);
		if (!o.p)
			o.cap = 0;
	}
	int rc;
	if (MAGIC(gz)) {
		*fmt = "gzip";
		rc = unpack_gzip(in, len, &o, err, errlen);
	} else if (MAGIC(xz)) {
		*fmt = "xz";
		rc = unpack_xz(in, len, &o, err, errlen);
	} else if (MAGIC(zs)) {
		*fmt = "zstd";
		rc = unpack_zstd(in, len, &o, err, errlen);
	} else if (MAGIC(lz4)) {
		*fmt = "lz4";
		rc = unpack_lz4_legacy(in, len, &o, hint, err, errlen);
	} else if (len >= SELFMAG && memcmp(in, ELFMAG, SELFMAG) == 0) {
		*fmt = "uncompressed";
		free(o.p);
		o.p = malloc(len ? len : 1);
		if (!o.p) {
			set_err(err, errlen, "out of memory");
			return -1;
		}
		memcpy(o.p, in, len);
		o.len = len;
		rc = 0;
	} else {
		if (MAGIC(bz2))
			*fmt = "bzip2";
		else if (MAGIC(lzo))
			*fmt = "lzo";
		else if (MAGIC(lzma))
			*fmt = "lzma";
		if (strcmp(*fmt, "unknown") != 0)
			set_err(err, errlen, "%s-compressed kernel payload is not supported "
			        "(use a gzip/xz/zstd/lz4 kernel, or let the guest decompress it)", *fmt);
		else
			set_err(err, errlen, "kernel payload has an unknown compression format "
			        "(magic %02x %02x %02x %02x)", len > 0 ? in[0] : 0,
			        len > 1 ? in[1] : 0, len > 2 ? in[2] : 0, len > 3 ? in[3] : 0);
		rc = -1;
	}
#undef MAGIC
	if (rc < 0) {
		free(o.p);
		return -1;
	}
	*out = o.p;
	*outlen = o.len;
	return 0;
}

/* ---- ELF64 loading ---- */

struct elf_info {
	uint64_t entry;      /* physical */
	uint64_t start, end; /* lowest/highest physical address loaded */
};

static int load_elf64(struct vmctx *ctx, const uint8_t *elf, size_t len, const char *name,
                      const char *what, struct elf_info *info, char *err, size_t errlen)
{
	Elf64_Ehdr eh;
	if (len < sizeof(eh) || memcmp(elf, ELFMAG, SELFMAG) != 0) {
		set_err(err, errlen, "%s: %s is not an ELF file", name, what);
		return -1;
	}
	memcpy(&eh, elf, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB) {
		set_err(err, errlen, "%s: %s is not a little-endian 64-bit ELF file", name, what);
		return -1;
	}
	if (eh.e_machine != EM_X86_64) {
		set_err(err, errlen, "%s: %s is an ELF file for machine %u, not x86-64", name,
		        what, eh.e_machine);
		return -1;
	}
	if (eh.e_type != ET_EXEC) {
		set_err(err, errlen, "%s: %s is not an executable ELF file (type %u)", name, what,
		        eh.e_type);
		return -1;
	}
	if (eh.e_phnum == 0 || eh.e_phentsize < sizeof(Elf64_Phdr) ||
	    eh.e_phoff > len || (uint64_t)eh.e_phnum * eh.e_phentsize > len - eh.e_phoff) {
		set_err(err, errlen, "%s: %s has a bad or truncated program header table", name, what);
		return -1;
	}

	/* Pass 1: validate everything; pass 2: copy. */
	uint64_t lo = UINT64_MAX, hi = 0;
	int nload = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < eh.e_phnum; i++) {
			Elf64_Phdr ph;
			memcpy(&ph, elf + eh.e_phoff + (uint64_t)i * eh.e_phentsize, sizeof(ph));
			if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
				continue;
			if (pass == 0) {
				if (ph.p_filesz > ph.p_memsz || ph.p_offset > len ||
				    ph.p_filesz > len - ph.p_offset) {
					set_err(err, errlen, "%s: %s segment %u lies beyond the end of the "
					        "file", name, what, i);
					return -1;
				}
				if (ph.p_paddr < LINUX_PM_LOAD_ADDR || ph.p_paddr >= 4 * GiB ||
				    ph.p_memsz > 4 * GiB - ph.p_paddr) {
					set_err(err, errlen, "%s: %s segment %u at [%#llx, +%#llx) is not "
					        "between 1 MiB and 4 GiB", name, what, i,
					        (unsigned long long)ph.p_paddr,
					        (unsigned long long)ph.p_memsz);
					return -1;
				}
				if (!vm_map_gpa(ctx, ph.p_paddr, ph.p_memsz)) {
					set_err(err, errlen, "%s: %s segment %u at [%#llx, %#llx) is outside "
					        "guest RAM (give the VM more memory)", name, what, i,
					        (unsigned long long)ph.p_paddr,
					        (unsigned long long)(ph.p_paddr + ph.p_memsz));
					return -1;
				}
				if (ph.p_paddr < lo)
					lo = ph.p_paddr;
				if (ph.p_paddr + ph.p_memsz > hi)
					hi = ph.p_paddr + ph.p_memsz;
				nload++;
			} else {
				uint8_t *dst = vm_map_gpa(ctx, ph.p_paddr, ph.p_memsz);
				if (!dst) {
					set_err(err, errlen, "%s: guest RAM vanished", name);
					return -1;
				}
				memcpy(dst, elf + ph.p_offset, ph.p_filesz);
				memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
			}
		}
		if (pass == 0 && nload == 0) {
			set_err(err, errlen, "%s: %s has no loadable segments", name, what);
			return -1;
		}
		if (pass == 0) {
			/* Entry: a physical address inside a segment, or a virtual one
			 * that we translate through its segment. */
			bool found = false;
			for (unsigned i = 0; i < eh.e_phnum && !found; i++) {
				Elf64_Phdr ph;
				memcpy(&ph, elf + eh.e_phoff + (uint64_t)i * eh.e_phentsize, sizeof(ph));
				if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
					continue;
				if (eh.e_entry >= ph.p_paddr && eh.e_entry - ph.p_paddr < ph.p_memsz) {
					info->entry = eh.e_entry;
					found = true;
				}
			}
			for (unsigned i = 0; i < eh.e_phnum && !found; i++) {
				Elf64_Phdr ph;
				memcpy(&ph, elf + eh.e_phoff + (uint64_t)i * eh.e_phentsize, sizeof(ph));
				if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
					continue;
				if (eh.e_entry >= ph.p_vaddr && eh.e_entry - ph.p_vaddr < ph.p_memsz) {
					info->entry = eh.e_entry - ph.p_vaddr + ph.p_paddr;
					found = true;
				}
			}
			if (!found) {
				set_err(err, errlen, "%s: %s entry point %#llx is not inside a loaded "
				        "segment", name, what, (unsigned long long)eh.e_entry);
				return -1;
			}
		}
	}
	info->start = lo;
	info->end = hi;
	return 0;
}

/* ---- boot_params ---- */

static int place_initrd(struct vmctx *ctx, const struct boot_params_in *in,
                        struct linux_boot_params *bp, uint64_t kernel_end,
                        const struct e820_entry *map, int nmap, char *err, size_t errlen)
{
	if (!in->initrd_path)
		return 0;
	size_t size;
	uint8_t *data = boot_read_file(in->initrd_path, &size, err, errlen);
	if (!data)
		return -1;
	if (size == 0) {
		free(data);
		return 0;
	}
	uint64_t limit = (uint64_t)bp->hdr.initrd_addr_max + 1;
	uint64_t lowtop = vm_get_lowmem_size(ctx);
	if (lowtop < limit)
		limit = lowtop;
	if (limit > 4 * GiB)
		limit = 4 * GiB;
	uint64_t floor = align_up(kernel_end, PAGE_SIZE_4K);
	uint64_t best = 0;
	bool found = false;
	for (int i = 0; i < nmap; i++) {
		if (map[i].type != E820_RAM)
			continue;
		uint64_t a = map[i].addr, b = map[i].addr + map[i].size;
		if (a < floor)
			a = floor;
		if (b > limit)
			b = limit;
		if (b <= a || b - a < size)
			continue;
		uint64_t start = (b - size) & ~(PAGE_SIZE_4K - 1);
		if (start < a)
			continue;
		if (!found || start > best) {
			best = start;
			found = true;
		}
	}
	if (!found || vm_copy_to_guest(ctx, best, data, size) < 0) {
		set_err(err, errlen, "%s: initrd (%zu MiB) does not fit in guest RAM between the "
		        "kernel's end (%#llx) and %#llx (give the VM more memory)",
		        in->initrd_path, (size_t)((size + MiB - 1) / MiB),
		        (unsigned long long)floor, (unsigned long long)limit);
		free(data);
		return -1;
	}
	free(data);
	bp->hdr.ramdisk_image = (uint32_t)best;
	bp->hdr.ramdisk_size = (uint32_t)size;
	bp->ext_ramdisk_image = (uint32_t)(best >> 32);
	bp->ext_ramdisk_size = (uint32_t)((uint64_t)size >> 32);
	return 0;
}

/* Everything after the kernel itself is in memory: cmdline, initrd, e820,
 * zero page, vCPU state. */
static int finish_boot(struct vmctx *ctx, const struct boot_params_in *in,
                       const struct linux_boot_opts *o, struct linux_boot_params *bp,
                       uint64_t kernel_end, bool long64, uint64_t entry,
                       struct boot_entry *be, char *err, size_t errlen)
{
	const char *name = in->kernel_path ? in->kernel_path : "kernel";
	const char *cmdline = in->cmdline ? in->cmdline : "";
	size_t clen = strlen(cmdline);
	uint64_t cmax = bp->hdr.cmdline_size;
	if (cmax > BOOT_CMDLINE_MAX - 1)
		cmax = BOOT_CMDLINE_MAX - 1;
	if (clen > cmax) {
		set_err(err, errlen, "%s: command line is %zu bytes, the kernel accepts at most %llu",
		        name, clen, (unsigned long long)cmax);
		return -1;
	}
	if (vm_copy_to_guest(ctx, BOOT_CMDLINE_ADDR, cmdline, clen + 1) < 0) {
		set_err(err, errlen, "%s: cannot write the command line at %#llx", name,
		        (unsigned long long)BOOT_CMDLINE_ADDR);
		return -1;
	}
	bp->hdr.cmd_line_ptr = (uint32_t)BOOT_CMDLINE_ADDR;
	bp->ext_cmd_line_ptr = 0;

	struct e820_entry map[LINUX_E820_MAX];
	int n = boot_e820_map(ctx, map, LINUX_E820_MAX);
	if (n < 0 || n > LINUX_E820_MAX) {
		set_err(err, errlen, "%s: cannot build the e820 memory map", name);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		bp->e820_table[i].addr = map[i].addr;
		bp->e820_table[i].size = map[i].size;
		bp->e820_table[i].type = map[i].type;
	}
	bp->e820_entries = (uint8_t)n;

	if (place_initrd(ctx, in, bp, kernel_end, map, n, err, errlen) < 0)
		return -1;

	if (o && o->acpi_rsdp && bp->hdr.version >= 0x020e)
		bp->acpi_rsdp_addr = o->acpi_rsdp;

	if (vm_copy_to_guest(ctx, BOOT_ZEROPAGE_ADDR, bp, sizeof(*bp)) < 0) {
		set_err(err, errlen, "%s: cannot write boot_params at %#llx", name,
		        (unsigned long long)BOOT_ZEROPAGE_ADDR);
		return -1;
	}

	memset(be, 0, sizeof(*be));
	be->mode = long64 ? BOOT_MODE_LONG64 : BOOT_MODE_PROT32;
	be->rip = entry;
	be->rsp = BOOT_STACK_TOP;
	be->rsi = BOOT_ZEROPAGE_ADDR;
	if (long64 && boot_write_identity_pagetables(ctx, be) < 0) {
		set_err(err, errlen, "%s: cannot write the boot page tables", name);
		return -1;
	}
	if (boot_write_gdt(ctx, be) < 0) {
		set_err(err, errlen, "%s: cannot write the boot GDT", name);
		return -1;
	}
	return 0;
}

static struct boot_display display;
static bool have_display;

void boot_set_display(const struct boot_display *d)
{
	display = *d;
	have_display = true;
}

const struct boot_display *boot_get_display(void)
{
	return have_display ? &display : NULL;
}

/* Fields every loader sets, whatever the kernel's header said. */
static void common_hdr(struct linux_boot_params *bp)
{
	bp->hdr.vid_mode = 0xffff;                 /* "normal"; no video set up */
	bp->hdr.type_of_loader = LINUX_LOADER_UNDEFINED;
	bp->hdr.ext_loader_ver = 0;
	bp->hdr.ext_loader_type = 0;
	bp->hdr.loadflags = LINUX_LOADED_HIGH | LINUX_CAN_USE_HEAP;
	bp->hdr.heap_end_ptr = 0xfe00;
	bp->hdr.ramdisk_image = 0;
	bp->hdr.ramdisk_size = 0;
	bp->hdr.setup_data = 0;
	bp->hdr.hardware_subarch = 0;              /* X86_SUBARCH_PC */
	bp->hdr.hardware_subarch_data = 0;
	bp->screen_info[0x0f] = 0;                 /* orig_video_isVGA: none */
	const struct boot_display *d = boot_get_display();
	if (d && d->base + d->size <= 0x100000000ULL) {
		/* A VESA-style linear framebuffer, x8r8g8b8: Linux's sysfb/simplefb takes it. */
		uint8_t *si = bp->screen_info;
		si[0x0f] = 0x23;                           /* VIDEO_TYPE_VLFB */
		memcpy(si + 0x12, &d->width, 2);           /* lfb_width, lfb_height */
		memcpy(si + 0x14, &d->height, 2);
		uint16_t depth = 32, line = (uint16_t)d->stride;
		uint32_t base = (uint32_t)d->base, size64k = d->size >> 16;
		memcpy(si + 0x16, &depth, 2);              /* lfb_depth */
		memcpy(si + 0x18, &base, 4);               /* lfb_base */
		memcpy(si + 0x1c, &size64k, 4);            /* lfb_size, 64 KiB units for VLFB */
		memcpy(si + 0x24, &line, 2);               /* lfb_linelength */
		si[0x26] = 8; si[0x27] = 16;               /* red size, position */
		si[0x28] = 8; si[0x29] = 8;                /* green */
		si[0x2a] = 8; si[0x2b] = 0;                /* blue */
		si[0x2c] = 0; si[0x2d] = 0;                /* no alpha */
	}
}

static int load_vmlinux(struct vmctx *ctx, const uint8_t *img, size_t len,
                        const struct boot_params_in *in, const struct linux_boot_opts *o,
                        struct boot_entry *be, char *err, size_t errlen)
{
	const char *name = in->kernel_path ? in->kernel_path : "kernel";
	struct elf_info ei;
	if (load_elf64(ctx, img, len, name, "the ELF kernel", &ei, err, errlen) < 0)
		return -1;
	struct linux_boot_params *bp = calloc(1, sizeof(*bp));
	if (!bp) {
		set_err(err, errlen, "%s: out of memory", name);
		return -1;
	}
	bp->hdr.boot_flag = LINUX_BOOT_FLAG;
	bp->hdr.header = LINUX_HDR_MAGIC;
	bp->hdr.version = VMLINUX_PROTOCOL;
	bp->hdr.kernel_alignment = 0x200000;
	bp->hdr.initrd_addr_max = VMLINUX_INITRD_ADDR_MAX;
	bp->hdr.cmdline_size = VMLINUX_CMDLINE_SIZE;
	bp->hdr.xloadflags = LINUX_XLF_KERNEL_64;
	bp->hdr.code32_start = (uint32_t)ei.start;
	common_hdr(bp);
	int rc = finish_boot(ctx, in, o, bp, ei.end, true, ei.entry, be, err, errlen);
	free(bp);
	return rc;
}

static int load_bzimage(struct vmctx *ctx, const uint8_t *img, size_t len,
                        const struct boot_params_in *in, const struct linux_boot_opts *o,
                        struct boot_entry *be, char *err, size_t errlen)
{
	const char *name = in->kernel_path ? in->kernel_path : "kernel";
	struct linux_setup_header h;
	memset(&h, 0, sizeof(h));
	size_t avail = len - LINUX_HDR_OFFSET;
	memcpy(&h, img + LINUX_HDR_OFFSET, avail < sizeof(h) ? avail : sizeof(h));

	if (h.boot_flag != LINUX_BOOT_FLAG) {
		set_err(err, errlen, "%s: bad boot flag %#x in the Linux setup header", name,
		        h.boot_flag);
		return -1;
	}
	if (h.version < LINUX_MIN_PROTOCOL) {
		set_err(err, errlen, "%s: Linux boot protocol %u.%02u is too old (2.10 or later "
		        "needed)", name, h.version >> 8, h.version & 0xff);
		return -1;
	}
	size_t hdr_end = 0x202 + (size_t)img[0x201];   /* the protocol's header length */
	if (hdr_end > 0x290)
		hdr_end = 0x290;
	if (hdr_end > len) {
		set_err(err, errlen, "%s: truncated bzImage (setup header beyond the end of the file)",
		        name);
		return -1;
	}
	if (!(h.loadflags & LINUX_LOADED_HIGH)) {
		set_err(err, errlen, "%s: zImage (loaded low) kernels are not supported", name);
		return -1;
	}
	size_t setup_sects = h.setup_sects ? h.setup_sects : 4;
	size_t setup_size = (setup_sects + 1) * 512;
	if (setup_size >= len) {
		set_err(err, errlen, "%s: truncated bzImage (%zu setup sectors run past the end of "
		        "the %zu-byte file)", name, setup_sects, len);
		return -1;
	}
	const uint8_t *pm = img + setup_size;
	size_t pm_len = len - setup_size;
	if (h.syssize) {
		uint64_t sys = (uint64_t)h.syssize * 16;
		if (sys > pm_len) {
			set_err(err, errlen, "%s: truncated bzImage (kernel is %llu bytes, file has %zu "
			        "after the setup code)", name, (unsigned long long)sys, pm_len);
			return -1;
		}
		pm_len = (size_t)sys;   /* anything after it is e.g. a signature */
	}
	if (h.payload_length == 0 || h.payload_offset > pm_len ||
	    h.payload_length > pm_len - h.payload_offset) {
		set_err(err, errlen, "%s: truncated bzImage (payload [%#x, +%#x) beyond the kernel's "
		        "%zu bytes)", name, h.payload_offset, h.payload_length, pm_len);
		return -1;
	}

	/* The kernel runs (or decompresses itself) at pref_address and needs
	 * init_size bytes from there. */
	uint64_t lowmem = vm_get_lowmem_size(ctx);
	uint64_t run_at = h.pref_address;
	if (run_at < LINUX_PM_LOAD_ADDR)
		run_at = LINUX_PM_LOAD_ADDR;
	uint64_t need_end = run_at + h.init_size;
	if (run_at >= 4 * GiB || need_end > lowmem ||
	    !vm_map_gpa(ctx, run_at, h.init_size ? h.init_size : 1)) {
		set_err(err, errlen, "%s: kernel needs RAM up to %llu MiB (loads at %#llx, init_size "
		        "%llu MiB) but the VM has %llu MiB below 4 GiB", name,
		        (unsigned long long)((need_end + MiB - 1) / MiB), (unsigned long long)run_at,
		        (unsigned long long)((h.init_size + MiB - 1) / MiB),
		        (unsigned long long)(lowmem / MiB));
		return -1;
	}

	bool guest = o && o->guest_decompress;
	uint64_t entry, kernel_end = need_end;
	if (guest) {
		if (!vm_map_gpa(ctx, LINUX_PM_LOAD_ADDR, pm_len) ||
		    vm_copy_to_guest(ctx, LINUX_PM_LOAD_ADDR, pm, pm_len) < 0) {
			set_err(err, errlen, "%s: kernel (%zu bytes at 1 MiB) does not fit in guest RAM",
			        name, pm_len);
			return -1;
		}
		entry = LINUX_PM_LOAD_ADDR;
		if (LINUX_PM_LOAD_ADDR + pm_len > kernel_end)
			kernel_end = LINUX_PM_LOAD_ADDR + pm_len;
	} else {
		uint8_t *elf;
		size_t elf_len;
		const char *fmt;
		char msg[200];
		if (linux_decompress(pm + h.payload_offset, h.payload_length, &elf, &elf_len, &fmt,
		                     msg, sizeof(msg)) < 0) {
			set_err(err, errlen, "%s: %s", name, msg);
			return -1;
		}
		char what[64];
		snprintf(what, sizeof(what), "the %s payload", fmt);
		struct elf_info ei;
		int rc = load_elf64(ctx, elf, elf_len, name, what, &ei, err, errlen);
		free(elf);
		if (rc < 0)
			return -1;
		entry = ei.entry;
		if (ei.end > kernel_end)
			kernel_end = ei.end;
	}

	struct linux_boot_params *bp = calloc(1, sizeof(*bp));
	if (!bp) {
		set_err(err, errlen, "%s: out of memory", name);
		return -1;
	}
	memcpy((uint8_t *)bp + LINUX_HDR_OFFSET, img + LINUX_HDR_OFFSET,
	       hdr_end - LINUX_HDR_OFFSET);
	common_hdr(bp);
	bp->hdr.code32_start = (uint32_t)LINUX_PM_LOAD_ADDR;
	if (bp->hdr.version < 0x0206)
		bp->hdr.cmdline_size = 255;
	int rc = finish_boot(ctx, in, o, bp, kernel_end, !guest, entry, be, err, errlen);
	free(bp);
	return rc;
}

int linux_load_image(struct vmctx *ctx, const uint8_t *img, size_t len,
                     const struct boot_params_in *in, const struct linux_boot_opts *o,
                     struct boot_entry *be, char *err, size_t errlen)
{
	const char *name = in->kernel_path ? in->kernel_path : "kernel";
	switch (linux_probe(img, len)) {
	case 1:
		return load_bzimage(ctx, img, len, in, o, be, err, errlen);
	case 2:
		return load_vmlinux(ctx, img, len, in, o, be, err, errlen);
	default:
		set_err(err, errlen, "%s: not a Linux kernel (no bzImage header, not an ELF64 file)",
		        name);
		return -1;
	}
}

int linux_load(struct vmctx *ctx, const struct boot_params_in *in,
               const struct linux_boot_opts *o, struct boot_entry *be,
               char *err, size_t errlen)
{
	size_t len;
	if (!in->kernel_path) {
		set_err(err, errlen, "linux: no kernel file given");
		return -1;
	}
	uint8_t *img = boot_read_file(in->kernel_path, &len, err, errlen);
	if (!img)
		return -1;
	int rc = linux_load_image(ctx, img, len, in, o, be, err, errlen);
	free(img);
	return rc;
}
