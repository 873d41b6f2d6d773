/*
 * CPUID for each vCPU: KVM_GET_SUPPORTED_CPUID, per-vCPU topology fields,
 * then the user's edits from cpu.features ("-name,+name", Linux's
 * /proc/cpuinfo flag names).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "log.h"
#include "vm.h"

enum reg { EAX, EBX, ECX, EDX };

struct cpu_feature {
	const char *name;
	uint32_t leaf, subleaf;
	enum reg reg;
	int bit;
};

static const struct cpu_feature features[] = {
	{ "fpu", 1, 0, EDX, 0 },        { "vme", 1, 0, EDX, 1 },     { "de", 1, 0, EDX, 2 },
	{ "pse", 1, 0, EDX, 3 },        { "tsc", 1, 0, EDX, 4 },     { "msr", 1, 0, EDX, 5 },
	{ "pae", 1, 0, EDX, 6 },        { "mce", 1, 0, EDX, 7 },     { "cx8", 1, 0, EDX, 8 },
	{ "apic", 1, 0, EDX, 9 },       { "sep", 1, 0, EDX, 11 },    { "mtrr", 1, 0, EDX, 12 },
	{ "pge", 1, 0, EDX, 13 },       { "mca", 1, 0, EDX, 14 },    { "cmov", 1, 0, EDX, 15 },
	{ "pat", 1, 0, EDX, 16 },       { "pse36", 1, 0, EDX, 17 },  { "clflush", 1, 0, EDX, 19 },
	{ "mmx", 1, 0, EDX, 23 },       { "fxsr", 1, 0, EDX, 24 },   { "sse", 1, 0, EDX, 25 },
	{ "sse2", 1, 0, EDX, 26 },      { "ht", 1, 0, EDX, 28 },
	{ "pni", 1, 0, ECX, 0 },        { "pclmulqdq", 1, 0, ECX, 1 }, { "monitor", 1, 0, ECX, 3 },
	{ "vmx", 1, 0, ECX, 5 },        { "ssse3", 1, 0, ECX, 9 },   { "fma", 1, 0, ECX, 12 },
	{ "cx16", 1, 0, ECX, 13 },      { "pdcm", 1, 0, ECX, 15 },   { "pcid", 1, 0, ECX, 17 },
	{ "sse4_1", 1, 0, ECX, 19 },    { "sse4_2", 1, 0, ECX, 20 }, { "x2apic", 1, 0, ECX, 21 },
	{ "movbe", 1, 0, ECX, 22 },     { "popcnt", 1, 0, ECX, 23 }, { "tsc_deadline_timer", 1, 0, ECX, 24 },
	{ "aes", 1, 0, ECX, 25 },       { "xsave", 1, 0, ECX, 26 },  { "avx", 1, 0, ECX, 28 },
	{ "f16c", 1, 0, ECX, 29 },      { "rdrand", 1, 0, ECX, 30 }, { "hypervisor", 1, 0, ECX, 31 },
	{ "fsgsbase", 7, 0, EBX, 0 },   { "bmi1", 7, 0, EBX, 3 },    { "hle", 7, 0, EBX, 4 },
	{ "avx2", 7, 0, EBX, 5 },       { "smep", 7, 0, EBX, 7 },    { "bmi2", 7, 0, EBX, 8 },
	{ "erms", 7, 0, EBX, 9 },       { "invpcid", 7, 0, EBX, 10 }, { "rtm", 7, 0, EBX, 11 },
	{ "mpx", 7, 0, EBX, 14 },       { "avx512f", 7, 0, EBX, 16 }, { "rdseed", 7, 0, EBX, 18 },
	{ "adx", 7, 0, EBX, 19 },       { "smap", 7, 0, EBX, 20 },   { "clflushopt", 7, 0, EBX, 23 },
	{ "clwb", 7, 0, EBX, 24 },      { "sha_ni", 7, 0, EBX, 29 },
	{ "umip", 7, 0, ECX, 2 },       { "pku", 7, 0, ECX, 3 },     { "vaes", 7, 0, ECX, 9 },
	{ "vpclmulqdq", 7, 0, ECX, 10 }, { "rdpid", 7, 0, ECX, 22 }, { "la57", 7, 0, ECX, 16 },
	{ "md_clear", 7, 0, EDX, 10 },  { "serialize", 7, 0, EDX, 14 }, { "arch_capabilities", 7, 0, EDX, 29 },
	{ "lahf_lm", 0x80000001, 0, ECX, 0 }, { "abm", 0x80000001, 0, ECX, 5 },
	{ "sse4a", 0x80000001, 0, ECX, 6 }, { "3dnowprefetch", 0x80000001, 0, ECX, 8 },
	{ "syscall", 0x80000001, 0, EDX, 11 }, { "nx", 0x80000001, 0, EDX, 20 },
	{ "pdpe1gb", 0x80000001, 0, EDX, 26 }, { "rdtscp", 0x80000001, 0, EDX, 27 },
	{ "lm", 0x80000001, 0, EDX, 29 },
	{ "xsaveopt", 0xd, 1, EAX, 0 }, { "xsavec", 0xd, 1, EAX, 1 }, { "xsaves", 0xd, 1, EAX, 3 },
	{ NULL, 0, 0, EAX, 0 },
};

static const struct cpu_feature *find_feature(const char *name, size_t len)
{
	for (const struct cpu_feature *f = features; f->name; f++)
		if (strlen(f->name) == len && strncasecmp(f->name, name, len) == 0)
			return f;
	return NULL;
}

/* Validate "-a,+b,c" (no sign means +). */
int cpuid_check_features(const char *spec, char *err, size_t errlen)
{
	const char *p = spec;
	while (*p) {
		size_t len = strcspn(p, ",");
		const char *name = p;
		size_t nlen = len;
		if (*name == '+' || *name == '-') {
			name++;
			nlen--;
		}
		if (nlen == 0 || !find_feature(name, nlen)) {
			snprintf(err, errlen, "unknown CPU feature '%.*s'", (int)len, p);
			return -1;
		}
		p += len;
		if (*p == ',')
			p++;
	}
	return 0;
}

static uint32_t *entry_reg(struct kvm_cpuid_entry2 *e, enum reg r)
{
	switch (r) {
	case EAX: return &e->eax;
	case EBX: return &e->ebx;
	case ECX: return &e->ecx;
	default: return &e->edx;
	}
}

static struct kvm_cpuid_entry2 *find_leaf(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t sub)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == leaf &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == sub))
			return e;
	}
	return NULL;
}

static void apply_feature_edits(struct kvm_cpuid2 *c, const char *spec)
{
	const char *p = spec;
	while (p && *p) {
		size_t len = strcspn(p, ",");
		bool on = *p != '-';
		const char *name = (*p == '+' || *p == '-') ? p + 1 : p;
		size_t nlen = len - (size_t)(name - p);
		const struct cpu_feature *f = find_feature(name, nlen);
		struct kvm_cpuid_entry2 *e = f ? find_leaf(c, f->leaf, f->subleaf) : NULL;
		if (e) {
			if (on)
				*entry_reg(e, f->reg) |= 1u << f->bit;
			else
				*entry_reg(e, f->reg) &= ~(1u << f->bit);
		}
		p += len;
		if (*p == ',')
			p++;
	}
}

struct kvm_cpuid2 *cpuid_build(struct vmctx *ctx, int vcpu_id, int ncpus)
{
	struct kvm_cpuid2 *c = vm_get_supported_cpuid(ctx);
	if (!c)
		return NULL;
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		switch (e->function) {
		case 1:
			/* Initial APIC id and logical processor count. */
			e->ebx = (e->ebx & 0x0000ffffu) | ((uint32_t)vcpu_id << 24) |
			         ((uint32_t)(ncpus > 255 ? 255 : ncpus) << 16);
			if (ncpus > 1)
				e->edx |= 1u << 28;   /* HTT: the count above is valid */
			/* Guests look for the hypervisor bit before they read leaf
			 * 0x40000000; KVM leaves setting it to the VMM (QEMU sets it
			 * too), and only a host that is itself a guest reports it. */
			e->ecx |= 1u << 31;
			break;
		case 0xb:
		case 0x1f:
			e->edx = (uint32_t)vcpu_id;   /* x2APIC id */
			break;
		default:
			break;
		}
	}
	apply_feature_edits(c, get_config_value("cpu.features"));
	return c;
}
