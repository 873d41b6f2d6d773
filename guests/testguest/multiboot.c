/*
 * Multiboot v1 info: everything we need is copied into `boot` right away so
 * that low memory (where loaders like to put the info structure) can be
 * reused, e.g. for the AP trampoline at 0x8000.
 */
#include "kernel.h"

struct bootinfo boot;

struct mb_info {
	u32 flags, mem_lower, mem_upper, boot_device, cmdline;
	u32 mods_count, mods_addr;
	u32 syms[4];
	u32 mmap_length, mmap_addr;
} __attribute__((packed));

struct mb_mmap {
	u32 size;
	u64 base, len;
	u32 type;
} __attribute__((packed));

struct mb_mod {
	u32 start, end, string, rsvd;
};

static void reserve(u64 end)
{
	if (end > boot.reserved_end)
		boot.reserved_end = end;
}

void multiboot_parse(u32 magic, u32 mbi_addr)
{
	boot.reserved_end = (u64)_image_end;
	if (magic != 0x2BADB002 || !mbi_addr) {
		printf("warning: not booted by a multiboot loader (eax=%x)\n", magic);
		return;
	}
	struct mb_info *mbi = (struct mb_info *)(u64)mbi_addr;
	reserve(mbi_addr + sizeof(*mbi));

	if (mbi->flags & (1 << 2) && mbi->cmdline) {
		const char *s = (const char *)(u64)mbi->cmdline;
		size_t i;
		for (i = 0; s[i] && i < sizeof(boot.cmdline) - 1; i++)
			boot.cmdline[i] = s[i];
		boot.cmdline[i] = 0;
		reserve(mbi->cmdline + i + 1);
	}
	if (mbi->flags & (1 << 0)) {
		boot.mem_lower_kb = mbi->mem_lower;
		boot.mem_upper_kb = mbi->mem_upper;
	}
	if (mbi->flags & (1 << 3)) {
		struct mb_mod *m = (struct mb_mod *)(u64)mbi->mods_addr;
		boot.nmods = (int)mbi->mods_count;
		reserve(mbi->mods_addr + mbi->mods_count * sizeof(*m));
		for (u32 i = 0; i < mbi->mods_count; i++)
			reserve(m[i].end);
	}
	if (mbi->flags & (1 << 6)) {
		u64 p = mbi->mmap_addr, end = p + mbi->mmap_length;
		reserve(end);
		while (p < end && boot.nram < (int)ARRAY_SIZE(boot.ram)) {
			struct mb_mmap *e = (struct mb_mmap *)p;
			if (e->type == 1 && e->len) {
				boot.ram[boot.nram].base = e->base;
				boot.ram[boot.nram].len = e->len;
				boot.nram++;
				boot.ram_total += e->len;
			}
			p += e->size + 4;
		}
	} else if (mbi->flags & (1 << 0)) {
		boot.ram[0].base = 0;
		boot.ram[0].len = boot.mem_lower_kb << 10;
		boot.ram[1].base = 0x100000;
		boot.ram[1].len = boot.mem_upper_kb << 10;
		boot.nram = 2;
		boot.ram_total = boot.ram[0].len + boot.ram[1].len;
	}
}

/* True if [base, base+len) lies inside one RAM region. */
bool ram_range_ok(u64 base, u64 len)
{
	for (int i = 0; i < boot.nram; i++)
		if (base >= boot.ram[i].base &&
		    base + len <= boot.ram[i].base + boot.ram[i].len)
			return true;
	return false;
}

/*
 * Command line: whitespace-separated key=value tokens.  QEMU prepends the
 * kernel file name; tokens without '=' are ignored.
 */
const char *cmdline_get(const char *key)
{
	size_t klen = strlen(key);
	const char *s = boot.cmdline;

	while (*s) {
		while (*s == ' ')
			s++;
		if (!strncmp(s, key, klen) && s[klen] == '=')
			return s + klen + 1;
		while (*s && *s != ' ')
			s++;
	}
	return NULL;
}

bool cmdline_get_u64(const char *key, u64 *out)
{
	const char *v = cmdline_get(key);
	return v && parse_u64(v, out);
}
