/*
 * Unit tests for boot/acpi.c and boot/aml.c, without /dev/kvm: guest RAM is
 * a malloc'd buffer behind a fake vm_copy_to_guest().  When iasl (Debian's
 * acpica-tools) is installed, the tables are dumped to files, disassembled
 * with `iasl -d` and recompiled, and any error or warning fails the test.
 *
 * Build and run:
 *   cc -std=c11 -Wall -Wextra -Werror -I. tests/unit/test_acpi_tables.c boot/acpi.c \
 *      boot/aml.c -o /tmp/t && /tmp/t
 * test-sources: boot/acpi.c boot/aml.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot/acpi.h"
#include "boot/aml.h"
#include "boot/boot.h"
#include "vmm/vmm.h"

/* ---- fake guest RAM ---- */

struct vmctx {
	uint8_t *ram;
	uint64_t size;
};

int vm_copy_to_guest(struct vmctx *ctx, uint64_t gpa, const void *src, size_t len)
{
	if (gpa > ctx->size || len > ctx->size - gpa)
		return -1;
	memcpy(ctx->ram + gpa, src, len);
	return 0;
}

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

static uint16_t r16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t r32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t r64(const uint8_t *p) { return r32(p) | (uint64_t)r32(p + 4) << 32; }

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

/* ---- AML builder ---- */

/* Decode a PkgLength; returns its value and sets *k to its size. */
static size_t pkglen(const uint8_t *p, int *k)
{
	int extra = p[0] >> 6;
	*k = extra + 1;
	if (!extra)
		return p[0] & 0x3f;
	size_t v = p[0] & 0x0f;
	for (int i = 1; i <= extra; i++)
		v |= (size_t)p[i] << (4 + 8 * (i - 1));
	return v;
}

static void test_aml(void)
{
	check(aml_eisaid_value("PNP0A08") == 0x080ad041u, "aml: EISAID PNP0A08 = 0x080AD041");
	check(aml_eisaid_value("PNP0501") == 0x0105d041u, "aml: EISAID PNP0501 = 0x0105D041");
	check(aml_eisaid_value("pnp0a08") == 0 && aml_eisaid_value("PNP0A0") == 0,
	      "aml: malformed EISAID rejected");

	struct aml_buf b;
	aml_init(&b);
	aml_namestring(&b, "\\_SB.PCI0");
	check(b.len == 10 && memcmp(b.data, "\\\x2e_SB_PCI0", 10) == 0,
	      "aml: \\_SB.PCI0 -> RootChar DualNamePrefix");
	aml_free(&b);
	aml_init(&b);
	aml_namestring(&b, "\\_SB.PCI0.ISA.COM1");
	check(b.len == 19 && memcmp(b.data, "\\\x2f\x04_SB_PCI0ISA_COM1", 19) == 0,
	      "aml: 4 segments -> MultiNamePrefix, short segment padded");
	aml_free(&b);
	aml_init(&b);
	aml_namestring(&b, "^^FOO");
	check(b.len == 6 && memcmp(b.data, "^^FOO_", 6) == 0 && !b.failed, "aml: parent prefixes");
	aml_namestring(&b, "TOOLONG");
	check(b.failed, "aml: over-long name segment fails the buffer");
	aml_free(&b);

	static const uint64_t ints[] = { 0, 1, 2, 0xff, 0x100, 0xffff, 0x10000, 0xffffffffULL,
	                                 0x100000000ULL };
	static const uint8_t lens[] = { 1, 1, 2, 2, 3, 3, 5, 5, 9 };
	int ok = 1;
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		aml_init(&b);
		aml_integer(&b, ints[i]);
		ok &= b.len == lens[i];
		aml_free(&b);
	}
	check(ok, "aml: integers use the smallest encoding");

	/* PkgLength at the 1/2/3-byte boundaries, via Buffer objects. */
	static const size_t sizes[] = { 0, 1, 58, 59, 60, 61, 62, 63, 64, 4000, 4093, 4094, 5000,
	                                100000 };
	ok = 1;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		aml_init(&b);
		aml_buffer(&b);
		for (size_t j = 0; j < sizes[i]; j++)
			aml_byte(&b, (uint8_t)j);
		aml_close(&b);
		int k;
		size_t pl = pkglen(b.data + 1, &k);
		/* BufferOp PkgLength BufferSize(integer) bytes */
		ok &= !b.failed && b.data[0] == 0x11 && pl == b.len - 1;
		size_t bs_at = 1 + (size_t)k;
		uint64_t bs = 0;
		switch (b.data[bs_at]) {
		case 0x00: bs = 0; break;
		case 0x01: bs = 1; break;
		case 0x0a: bs = b.data[bs_at + 1]; break;
		case 0x0b: bs = r16(b.data + bs_at + 1); break;
		case 0x0c: bs = r32(b.data + bs_at + 1); break;
		default: ok = 0;
		}
		ok &= bs == sizes[i];
		ok &= b.len >= sizes[i] && memcmp(b.data + b.len - sizes[i], b.data + b.len - sizes[i],
		                                  sizes[i]) == 0;
		if (sizes[i])
			ok &= b.data[b.len - 1] == (uint8_t)(sizes[i] - 1);
		aml_free(&b);
	}
	check(ok, "aml: PkgLength and BufferSize correct around the encoding boundaries");

	aml_init(&b);
	aml_close(&b);
	check(b.failed, "aml: unbalanced close fails the buffer");
	aml_free(&b);
}

/* ---- tables ---- */

static struct acpi_config base_config(int ncpus)
{
	struct acpi_config c;
	memset(&c, 0, sizeof(c));
	c.ncpus = ncpus;
	c.ecam_base = VM_PCI_ECAM_BASE;
	c.ecam_end_bus = 255;
	c.mmio32_base = VM_PCI_MMIO32_BASE;
	c.mmio32_end = VM_PCI_MMIO32_END;
	c.mmio64_base = 0x4000000000ULL;
	c.mmio64_end = 0x8000000000ULL;
	c.com[0] = c.com[1] = true;
	return c;
}

struct tables {
	const uint8_t *rsdp, *rsdt, *xsdt, *fadt, *facs, *madt, *mcfg, *dsdt;
};

/* Map a guest address inside the ACPI area, with room for `len` bytes. */
static const uint8_t *acpi_ptr(struct vmctx *vm, uint64_t gpa, size_t len)
{
	if (gpa < BOOT_ACPI_BASE || gpa + len > BOOT_ACPI_BASE + BOOT_ACPI_SIZE ||
	    gpa + len > vm->size)
		return NULL;
	return vm->ram + gpa;
}

/* A table with a valid header and checksum, or NULL. */
static const uint8_t *table_at(struct vmctx *vm, uint64_t gpa, const char *what)
{
	const uint8_t *t = acpi_ptr(vm, gpa, 36);
	if (!t) {
		check(0, "%s: address %#llx inside the ACPI area", what, (unsigned long long)gpa);
		return NULL;
	}
	uint32_t len = r32(t + 4);
	if (len < 36 || !acpi_ptr(vm, gpa, len)) {
		check(0, "%s: length %u fits the ACPI area", what, len);
		return NULL;
	}
	if (sum(t, len) != 0) {
		check(0, "%s: checksum", what);
		return NULL;
	}
	return t;
}

static int walk(struct vmctx *vm, uint64_t rsdp, struct tables *T, const char *tag)
{
	memset(T, 0, sizeof(*T));
	T->rsdp = acpi_ptr(vm, rsdp, 36);
	check(T->rsdp && rsdp % 16 == 0 && memcmp(T->rsdp, "RSD PTR ", 8) == 0 &&
	      sum(T->rsdp, 20) == 0 && sum(T->rsdp, 36) == 0 && T->rsdp[15] == 2 &&
	      r32(T->rsdp + 20) == 36,
	      "%s: RSDP at %#llx: signature, revision 2, both checksums", tag,
	      (unsigned long long)rsdp);
	if (!T->rsdp)
		return -1;
	T->xsdt = table_at(vm, r64(T->rsdp + 24), "XSDT");
	T->rsdt = table_at(vm, r32(T->rsdp + 16), "RSDT");
	if (!T->xsdt || !T->rsdt)
		return -1;
	uint32_t xn = (r32(T->xsdt + 4) - 36) / 8, rn = (r32(T->rsdt + 4) - 36) / 4;
	int same = xn == rn && memcmp(T->xsdt, "XSDT", 4) == 0 && memcmp(T->rsdt, "RSDT", 4) == 0;
	for (uint32_t i = 0; i < xn && same; i++) {
		uint64_t a = r64(T->xsdt + 36 + 8 * i);
		same &= a == r32(T->rsdt + 36 + 4 * i);
		const uint8_t *t = table_at(vm, a, "XSDT entry");
		if (!t)
			return -1;
		if (!memcmp(t, "FACP", 4))
			T->fadt = t;
		else if (!memcmp(t, "APIC", 4))
			T->madt = t;
		else if (!memcmp(t, "MCFG", 4))
			T->mcfg = t;
	}
	check(same && xn == 3 && T->fadt && T->madt && T->mcfg,
	      "%s: XSDT and RSDT list the same FADT, MADT, MCFG, all checksums valid", tag);
	if (!T->fadt || !T->madt || !T->mcfg)
		return -1;
	uint64_t dsdt = r64(T->fadt + 140);
	check(dsdt == r32(T->fadt + 40), "%s: FADT DSDT == X_DSDT", tag);
	T->dsdt = table_at(vm, dsdt, "DSDT");
	uint64_t facs = r32(T->fadt + 36);
	T->facs = acpi_ptr(vm, facs, 64);
	check(T->facs && facs % 64 == 0 && memcmp(T->facs, "FACS", 4) == 0 &&
	      r32(T->facs + 4) == 64 && r64(T->fadt + 132) == 0,
	      "%s: FACS 64-byte aligned, via FIRMWARE_CTRL only", tag);
	return T->dsdt && T->facs ? 0 : -1;
}

static void check_fadt(const uint8_t *f, const char *tag)
{
	check(r32(f + 4) == 276 && f[8] >= 5, "%s: FADT revision %u, 276 bytes", tag, f[8]);
	uint32_t flags = r32(f + 112);
	check(!(flags & (1u << 20)) && (flags & (1u << 10)) && !(flags & (1u << 4)),
	      "%s: FADT not hardware-reduced, RESET_REG_SUP, fixed power button", tag);
	check(r16(f + 46) == 9 && r32(f + 48) == 0, "%s: SCI IRQ 9, no SMI_CMD", tag);
	check(r32(f + 56) == 0x400 && f[88] == 4 && r32(f + 64) == 0x404 && f[89] == 2 &&
	      r32(f + 76) == 0x408 && f[91] == 4 && !(flags & (1u << 8)),
	      "%s: PM1a_EVT 0x400/4, PM1a_CNT 0x404/2, PM_TMR 0x408/4 (24-bit)", tag);
	check(f[148] == 1 && f[149] == 32 && r64(f + 152) == 0x400 &&
	      f[172] == 1 && f[173] == 16 && r64(f + 176) == 0x404 &&
	      f[208] == 1 && f[209] == 32 && r64(f + 212) == 0x408,
	      "%s: X_PM1a_EVT/X_PM1a_CNT/X_PM_TMR match the 32-bit blocks", tag);
	check(f[116] == 1 && f[117] == 8 && r64(f + 120) == 0xcf9 && f[128] == 6,
	      "%s: RESET_REG I/O 0xcf9, value 6", tag);
	check((r16(f + 109) & 3) == 3 && f[108] == 0x32,
	      "%s: IAPC_BOOT_ARCH legacy+8042, century 0x32", tag);
}

static void check_madt(const uint8_t *m, int ncpus, const char *tag)
{
	uint32_t len = r32(m + 4);
	check(r32(m + 36) == 0xfee00000u && (r32(m + 40) & 1), "%s: MADT LAPIC 0xfee00000, "
	      "PCAT_COMPAT", tag);
	int ncpu = 0, ids_ok = 1, ioapic = 0, iso0 = 0, iso9 = 0, nmi = 0, walk_ok = 1;
	uint32_t p = 44;
	while (p < len) {
		uint8_t type = m[p], l = m[p + 1];
		if (l < 2 || p + l > len) {
			walk_ok = 0;
			break;
		}
		switch (type) {
		case 0:
			ids_ok &= l == 8 && m[p + 3] == ncpu && m[p + 2] == ncpu && (r32(m + p + 4) & 1);
			ncpu++;
			break;
		case 9:
			ids_ok &= l == 16 && r32(m + p + 4) == (uint32_t)ncpu &&
			          r32(m + p + 12) == (uint32_t)ncpu && (r32(m + p + 8) & 1) &&
			          ncpu >= 255;
			ncpu++;
			break;
		case 1:
			ioapic += l == 12 && m[p + 2] == (ncpus <= 254 ? ncpus : 254) &&
			          r32(m + p + 4) == 0xfec00000u && r32(m + p + 8) == 0;
			break;
		case 2:
			if (m[p + 2] == 0 && m[p + 3] == 0 && r32(m + p + 4) == 2)
				iso0++;
			if (m[p + 2] == 0 && m[p + 3] == 9 && r32(m + p + 4) == 9 &&
			    r16(m + p + 8) == 0x000d)
				iso9++;
			break;
		case 4:
			nmi += m[p + 2] == 0xff && m[p + 5] == 1;
			break;
		case 10:
			nmi += r32(m + p + 4) == 0xffffffffu && m[p + 8] == 1 && ncpus > 255;
			break;
		default:
			walk_ok = 0;
		}
		p += l;
	}
	check(walk_ok && p == len, "%s: MADT entries fill the table exactly", tag);
	check(ncpu == ncpus && ids_ok, "%s: MADT has %d processor entries (want %d), APIC id = "
	      "UID = index, enabled", tag, ncpu, ncpus);
	check(ioapic == 1 && iso0 == 1 && iso9 == 1 && nmi == (ncpus > 255 ? 2 : 1),
	      "%s: IOAPIC id %d at 0xfec00000, IRQ0->GSI2, IRQ9 level/high, NMI on LINT1", tag,
	      ncpus <= 254 ? ncpus : 254);
}

static bool has(const uint8_t *p, size_t n, const void *pat, size_t m)
{
	return memmem(p, n, pat, m) != NULL;
}

/* ---- iasl ---- */

static char tmpdir[64];
static bool have_iasl;

static void dump(const char *name, const uint8_t *p, size_t len)
{
	char path[160];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	fwrite(p, 1, len, f);
	fclose(f);
}

/* Run a shell command in tmpdir; returns its exit status and output. */
static int run(const char *cmd, char *out, size_t outlen)
{
	char full[512];
	snprintf(full, sizeof(full), "cd '%s' && %s 2>&1", tmpdir, cmd);
	FILE *p = popen(full, "r");
	if (!p)
		return -1;
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = 0;
	return pclose(p);
}

static char *slurp(const char *name)
{
	char path[160];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *s = malloc((size_t)n + 1);
	size_t got = fread(s, 1, (size_t)n, f);
	s[got] = 0;
	fclose(f);
	return s;
}

static bool bad_output(const char *out)
{
	return strcasestr(out, "error") && !strstr(out, "0 Errors") ? true :
	       strcasestr(out, "warning") && !strstr(out, "0 Warnings") ? true :
	       strcasestr(out, "invalid") || strcasestr(out, "incorrect");
}

static void iasl_check(const struct tables *T, const struct acpi_config *cfg, const char *tag)
{
	if (!have_iasl)
		return;
	struct { const char *name; const uint8_t *t; } tabs[] = {
		{ "dsdt", T->dsdt }, { "facp", T->fadt }, { "apic", T->madt }, { "mcfg", T->mcfg },
		{ "xsdt", T->xsdt }, { "rsdt", T->rsdt }, { "facs", T->facs },
	};
	char *out = malloc(65536);
	for (size_t i = 0; i < sizeof(tabs) / sizeof(tabs[0]); i++) {
		char file[32], cmd[160];
		snprintf(file, sizeof(file), "%s.dat", tabs[i].name);
		dump(file, tabs[i].t, r32(tabs[i].t + 4));
		snprintf(cmd, sizeof(cmd), "rm -f %s.dsl && iasl -d %s", tabs[i].name, file);
		int rc = run(cmd, out, 65536);
		char *dsl = NULL;
		char dslname[32];
		snprintf(dslname, sizeof(dslname), "%s.dsl", tabs[i].name);
		if (rc == 0)
			dsl = slurp(dslname);
		bool ok = rc == 0 && dsl && !bad_output(out) && !strcasestr(dsl, "incorrect") &&
		          !strcasestr(dsl, "invalid") && !strcasestr(dsl, "**** ");
		check(ok, "%s: iasl -d %s: clean disassembly", tag, file);
		if (!ok)
			printf("%s\n", out);
		/* and it compiles back without errors or warnings */
		snprintf(cmd, sizeof(cmd), "iasl -p %s-re %s", tabs[i].name, dslname);
		rc = run(cmd, out, 65536);
		ok = rc == 0 && strstr(out, "0 Errors") && strstr(out, "0 Warnings");
		check(ok, "%s: iasl recompiles %s: 0 errors, 0 warnings", tag, dslname);
		if (!ok)
			printf("%s\n", out);

		if (dsl && i == 0) {
			int com_ok = 1;
			for (int c = 0; c < 4; c++) {
				char dev[16];
				snprintf(dev, sizeof(dev), "Device (COM%d)", c + 1);
				com_ok &= (strstr(dsl, dev) != NULL) == cfg->com[c];
			}
			check((strstr(dsl, "Name (\\_S3, Package (0x04)") != NULL) == cfg->s3 &&
			      strstr(dsl, "Name (\\_S5, Package (0x04)") &&
			      strstr(dsl, "EisaId (\"PNP0A08\")") && strstr(dsl, "EisaId (\"PNP0A03\")") &&
			      strstr(dsl, "EisaId (\"PNP0B00\")") && strstr(dsl, "EisaId (\"PNP0303\")") &&
			      strstr(dsl, "EisaId (\"PNP0C02\")") && strstr(dsl, "WordBusNumber") &&
			      strstr(dsl, "Interrupt (ResourceConsumer, Level, ActiveHigh, Shared") &&
			      strstr(dsl, "Name (_PRT, Package (0x80)") && com_ok &&
			      (strstr(dsl, "QWordMemory (ResourceProducer") != NULL) ==
			      (cfg->mmio64_end > cfg->mmio64_base),
			      "%s: disassembled DSDT has _S5, PCI0 (PNP0A08/PNP0A03), _PRT x128, links, "
			      "RTC, KBD, motherboard resources, the configured COMs and 64-bit window",
			      tag);
		}
		free(dsl);
	}
	free(out);
}

static void test_config(const struct acpi_config *cfg, const char *tag)
{
	struct vmctx vm = { calloc(1, 2 << 20), 2 << 20 };
	uint64_t rsdp = 0;
	char err[256] = "";
	int rc = acpi_build(&vm, cfg, &rsdp, err, sizeof(err));
	check(rc == 0 && rsdp == BOOT_ACPI_BASE, "%s: acpi_build ok, RSDP at BOOT_ACPI_BASE %s",
	      tag, err);
	struct tables T;
	if (rc == 0 && walk(&vm, rsdp, &T, tag) == 0) {
		check_fadt(T.fadt, tag);
		check_madt(T.madt, cfg->ncpus, tag);
		check(r32(T.mcfg + 4) == 60 && r64(T.mcfg + 44) == cfg->ecam_base &&
		      r16(T.mcfg + 52) == 0 && T.mcfg[54] == 0 && T.mcfg[55] == cfg->ecam_end_bus,
		      "%s: MCFG: ECAM %#llx, buses 0..%d", tag, (unsigned long long)cfg->ecam_base,
		      cfg->ecam_end_bus);
		uint32_t dl = r32(T.dsdt + 4);
		check(T.dsdt[8] == 2 && has(T.dsdt, dl, "_S5_", 4) && has(T.dsdt, dl, "_PRT", 4) &&
		      has(T.dsdt, dl, "PCI0", 4), "%s: DSDT rev 2 with _S5, PCI0, _PRT (%u bytes)", tag,
		      dl);
		check(has(T.dsdt, dl, "_S3_", 4) == cfg->s3, "%s: \\_S3 %s", tag, cfg->s3 ? "offered" : "absent");
		check(acpi_facs_gpa() == r32(T.fadt + 36), "%s: acpi_facs_gpa() %#llx is the FADT's FACS", tag,
		      (unsigned long long)acpi_facs_gpa());
		iasl_check(&T, cfg, tag);
	}
	free(vm.ram);
}

static void test_errors(void)
{
	struct vmctx vm = { calloc(1, 2 << 20), 2 << 20 };
	uint64_t rsdp;
	char err[256];
	struct acpi_config c = base_config(0);
	err[0] = 0;
	check(acpi_build(&vm, &c, &rsdp, err, sizeof(err)) == -1 && strstr(err, "vCPUs"),
	      "error: 0 vCPUs refused: %s", err);
	c = base_config(2);
	c.ecam_end_bus = 256;
	err[0] = 0;
	check(acpi_build(&vm, &c, &rsdp, err, sizeof(err)) == -1 && strstr(err, "bus"),
	      "error: end bus 256 refused: %s", err);
	c = base_config(2);
	c.mmio32_end = c.mmio32_base;
	err[0] = 0;
	check(acpi_build(&vm, &c, &rsdp, err, sizeof(err)) == -1 && strstr(err, "MMIO"),
	      "error: empty 32-bit window refused: %s", err);
	c = base_config(2);
	c.ecam_base = 0xe0001000;
	err[0] = 0;
	check(acpi_build(&vm, &c, &rsdp, err, sizeof(err)) == -1 && strstr(err, "ECAM"),
	      "error: misaligned ECAM refused: %s", err);
	free(vm.ram);

	struct vmctx small = { calloc(1, 512 << 10), 512 << 10 };
	c = base_config(2);
	err[0] = 0;
	check(acpi_build(&small, &c, &rsdp, err, sizeof(err)) == -1 && strstr(err, "guest RAM"),
	      "error: RAM not covering the ACPI area: %s", err);
	free(small.ram);

	uint8_t tiny[256];
	size_t used;
	err[0] = 0;
	check(acpi_build_tables(&c, BOOT_ACPI_BASE, tiny, sizeof(tiny), &used, err,
	                        sizeof(err)) == -1 && strstr(err, "bytes"),
	      "error: table area too small: %s", err);
}

/*
 * Tables for firmware that places them itself (QEMU's table loader): built
 * at 0 with their links, then patched as SeaBIOS's loader would for the
 * RSDP at one address and the tables at another; the result must be the
 * tables built directly at that address, byte for byte.
 */
static void test_linked(const struct acpi_config *c, const char *tag)
{
	enum { SZ = 0x20000 };
	static uint8_t linked[SZ], direct[SZ];
	struct acpi_links l;
	size_t used, dused;
	char err[256] = "";
	const uint64_t tables_at = 0x7fe0000;   /* a 64-byte aligned HIGH allocation */
	if (acpi_build_tables_linked(c, 0, linked, SZ, &used, &l, err, sizeof(err))) {
		check(0, "%s: linked build: %s", tag, err);
		return;
	}
	check(l.nptr > 4 && l.ncks >= 6 && l.tables_start >= ACPI_RSDP_LEN && l.tables_start % 16 == 0,
	      "%s: %d pointers, %d checksums, tables from %u", tag, l.nptr, l.ncks, l.tables_start);
	uint8_t rsdp[ACPI_RSDP_LEN];
	memcpy(rsdp, linked, sizeof(rsdp));
	/* The loader: pointers += the tables' address, then the checksums. */
	uint32_t v32 = r32(rsdp + 16) + (uint32_t)tables_at;
	memcpy(rsdp + 16, &v32, 4);
	uint64_t v64 = r64(rsdp + 24) + tables_at;
	memcpy(rsdp + 24, &v64, 8);
	for (int i = 0; i < l.nptr; i++) {
		uint8_t *f = linked + l.ptr[i].offset;
		if (l.ptr[i].size == 4) {
			v32 = r32(f) + (uint32_t)tables_at;
			memcpy(f, &v32, 4);
		} else {
			v64 = r64(f) + tables_at;
			memcpy(f, &v64, 8);
		}
	}
	for (int i = 0; i < l.ncks; i++)
		linked[l.cks[i].offset] -= sum(linked + l.cks[i].start, l.cks[i].length);
	rsdp[8] -= sum(rsdp, 20);
	rsdp[32] -= sum(rsdp, 36);
	/* Built directly: the RSDP at tables_at, the rest after it, as linked. */
	if (acpi_build_tables(c, tables_at, direct, SZ, &dused, err, sizeof(err))) {
		check(0, "%s: direct build: %s", tag, err);
		return;
	}
	check(dused == used, "%s: same size linked and direct (%zu, %zu)", tag, used, dused);
	check(memcmp(rsdp, direct, sizeof(rsdp)) == 0, "%s: patched RSDP == RSDP built in place", tag);
	check(memcmp(linked + l.tables_start, direct + l.tables_start, used - l.tables_start) == 0,
	      "%s: patched tables == tables built in place", tag);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hyve-test-acpi-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	have_iasl = system("command -v iasl >/dev/null 2>&1") == 0;
	if (!have_iasl)
		printf("skip - iasl not installed (apt-get install acpica-tools): no disassembly checks\n");

	test_aml();

	struct acpi_config c = base_config(4);
	c.s3 = true;
	test_config(&c, "4 vCPUs, COM1+2, 64-bit window, S3");
	c = base_config(1);
	c.mmio64_base = c.mmio64_end = 0;
	memset(c.com, 0, sizeof(c.com));
	test_config(&c, "1 vCPU, no COM, no 64-bit window");
	c = base_config(16);
	c.com[2] = c.com[3] = true;
	c.ecam_end_bus = 15;
	test_config(&c, "16 vCPUs, COM1-4, 16 buses");
	c = base_config(254);
	test_config(&c, "254 vCPUs");
	c = base_config(300);
	test_config(&c, "300 vCPUs (x2APIC entries)");
	test_errors();
	c = base_config(4);
	test_linked(&c, "linked, 4 vCPUs");
	c = base_config(300);
	test_linked(&c, "linked, 300 vCPUs");

	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("note - could not remove %s\n", tmpdir);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
