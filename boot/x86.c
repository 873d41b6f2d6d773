/* Structures every x86 loader needs: e820, a flat GDT, identity page tables. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../vmm/vmm.h"
#include "boot.h"

int boot_e820_map(struct vmctx *ctx, struct e820_entry *out, int max)
{
	uint64_t low = vm_get_lowmem_size(ctx), high = vm_get_highmem_size(ctx);
	struct e820_entry map[8];
	int n = 0;
	uint64_t base_top = low < BOOT_EBDA_START ? low : BOOT_EBDA_START;
	map[n++] = (struct e820_entry){ 0, base_top, E820_RAM };
	/* EBDA, VGA hole, option ROMs and the BIOS area (ACPI tables live there). */
	map[n++] = (struct e820_entry){ BOOT_EBDA_START, 0x100000 - BOOT_EBDA_START, E820_RESERVED };
	if (low > 0x100000)
		map[n++] = (struct e820_entry){ 0x100000, low - 0x100000, E820_RAM };
	/* Linux only trusts an MCFG window that the e820 map reserves. */
	map[n++] = (struct e820_entry){ VM_PCI_ECAM_BASE, VM_PCI_ECAM_SIZE, E820_RESERVED };
	/* IOAPIC, LAPIC and the top-of-4G firmware area. */
	map[n++] = (struct e820_entry){ VM_IOAPIC_BASE, 0x100000000ULL - VM_IOAPIC_BASE, E820_RESERVED };
	if (high)
		map[n++] = (struct e820_entry){ VM_HIGHMEM_BASE, high, E820_RAM };
	if (n > max)
		n = max;
	memcpy(out, map, (size_t)n * sizeof(map[0]));
	return n;
}

int boot_write_gdt(struct vmctx *ctx, struct boot_entry *be)
{
	/* null, null, code (0x10), data (0x18): Linux's __BOOT_CS/__BOOT_DS. */
	uint64_t gdt[4] = {
		0,
		0,
		be->mode == BOOT_MODE_LONG64 ? 0x00af9b000000ffffULL : 0x00cf9b000000ffffULL,
		0x00cf93000000ffffULL,
	};
	if (vm_copy_to_guest(ctx, BOOT_GDT_ADDR, gdt, sizeof(gdt)))
		return -1;
	be->gdt_base = BOOT_GDT_ADDR;
	be->gdt_limit = sizeof(gdt) - 1;
	return 0;
}

int boot_write_identity_pagetables(struct vmctx *ctx, struct boot_entry *be)
{
	/* PML4 -> one PDPT -> four PDs of 2 MiB pages: the first 4 GiB. */
	uint64_t pml4 = BOOT_PML4_ADDR, pdpt = pml4 + 0x1000, pd = pml4 + 0x2000;
	uint64_t *p = vm_map_gpa(ctx, pml4, 0x6000);
	if (!p)
		return -1;
	memset(p, 0, 0x6000);
	p[0] = pdpt | 0x3;
	for (int i = 0; i < 4; i++)
		p[512 + i] = (pd + (uint64_t)i * 0x1000) | 0x3;
	for (int i = 0; i < 4 * 512; i++)
		p[1024 + i] = ((uint64_t)i << 21) | 0x83;   /* present, writable, 2 MiB */
	be->cr3 = pml4;
	return 0;
}

uint8_t *boot_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if (st.st_size > (off_t)(1ULL << 32)) {
		snprintf(err, errlen, "%s: too large (%lld bytes)", path, (long long)st.st_size);
		close(fd);
		return NULL;
	}
	size_t n = (size_t)st.st_size;
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", path);
		close(fd);
		return NULL;
	}
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0) {
			snprintf(err, errlen, "%s: read error: %s", path, r < 0 ? strerror(errno) : "short read");
			free(buf);
			close(fd);
			return NULL;
		}
		got += (size_t)r;
	}
	close(fd);
	*len = n;
	return buf;
}
