/*
 * Just enough ACPI to count CPUs: find the RSDP (EBDA, then the BIOS area),
 * walk the RSDT/XSDT to the MADT and collect enabled local APIC ids.
 * Only done on demand (smp test, `info`): the scan is ~10k emulated
 * instructions at CPL0 on the PVM host.
 */
#include "kernel.h"

struct acpi_info acpi;

struct sdt_hdr {
	char sig[4];
	u32 len;
	u8 rev, csum;
	char oem[6], oem_table[8];
	u32 oem_rev, creator, creator_rev;
} __attribute__((packed));

static u64 find_rsdp(u64 start, u64 len)
{
	const u64 sig = 0x2052545020445352UL;	/* "RSD PTR " */
	for (u64 p = start; p < start + len; p += 16)
		if (*(volatile u64 *)p == sig)
			return p;
	return 0;
}

static void parse_madt(struct sdt_hdr *h)
{
	u8 *p = (u8 *)h + 44, *end = (u8 *)h + h->len;
	while (p + 2 <= end && p[1] >= 2) {
		u32 id = ~0u, flags = 0;
		if (p[0] == 0) {	/* processor local APIC */
			id = p[3];
			flags = *(u32 *)(p + 4);
		} else if (p[0] == 9) {	/* processor local x2APIC */
			id = *(u32 *)(p + 4);
			flags = *(u32 *)(p + 8);
		}
		if (id != ~0u && (flags & 1) && acpi.ncpus < MAX_CPUS)
			acpi.apic_ids[acpi.ncpus++] = id;
		if (p[0] == 2 && p[2] == 0 && p[3] == 0)	/* ISA IRQ0 override */
			acpi.irq0_gsi = (int)*(u32 *)(p + 4);
		p += p[1];
	}
}

void acpi_scan(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	acpi.irq0_gsi = -1;

	u64 ebda = (u64)*(volatile u16 *)0x40e << 4;
	u64 rsdp = 0;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		rsdp = find_rsdp(ebda, 1024);
	if (!rsdp)
		rsdp = find_rsdp(0xe0000, 0x20000);
	if (!rsdp)
		return;

	u8 rev = *(u8 *)(rsdp + 15);
	u64 root = *(u32 *)(rsdp + 16);
	int esize = 4;
	if (rev >= 2 && *(u64 *)(rsdp + 24)) {
		root = *(u64 *)(rsdp + 24);
		esize = 8;
	}
	if (!root || root >= 0x100000000UL)
		return;
	struct sdt_hdr *r = (struct sdt_hdr *)root;
	memcpy(acpi.oem, r->oem, 6);
	int n = (int)((r->len - sizeof(*r)) / esize);
	for (int i = 0; i < n; i++) {
		u8 *ent = (u8 *)r + sizeof(*r) + i * esize;
		u64 a = esize == 8 ? *(u64 *)ent : *(u32 *)ent;
		struct sdt_hdr *h = (struct sdt_hdr *)a;
		if (a && a < 0x100000000UL && !memcmp(h->sig, "APIC", 4)) {
			acpi.found = true;
			parse_madt(h);
		}
		if (a && a < 0x100000000UL && !memcmp(h->sig, "FACP", 4)) {
			acpi.facs = *(u32 *)((u8 *)h + 36);
			if (h->len >= 140 && *(u64 *)((u8 *)h + 132))
				acpi.facs = *(u64 *)((u8 *)h + 132);
		}
	}
}

u64 acpi_facs(void)
{
	acpi_scan();
	return acpi.facs;
}

/*
 * Where the PIT interrupt arrives: as an OS would do it, the MADT's override
 * for ISA IRQ0 if there is one, identity (GSI 0) if the MADT has none, and
 * the PC convention (pin 2) when there is no MADT at all.
 */
int pit_gsi(const char **why)
{
	acpi_scan();
	if (acpi.found && acpi.irq0_gsi >= 0) {
		*why = "MADT interrupt source override";
		return acpi.irq0_gsi;
	}
	if (acpi.found) {
		*why = "MADT without an IRQ0 override: identity";
		return 0;
	}
	*why = "no MADT: PC convention";
	return 2;
}
