/*
 * CPUID for each vCPU: KVM_GET_SUPPORTED_CPUID, cut down to a CPU model
 * (cpu.model), per-vCPU topology fields, then the user's edits from
 * cpu.features ("-name,+name", Linux's /proc/cpuinfo flag names); a
 * feature the host cannot provide is dropped with a warning, as QEMU does.
 * The MSRs whose existence CPUID announces are then denied to a guest
 * whose CPUID does not announce them (x86.strictmsr, KVM's MSR filter).
 */
#include <cpuid.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
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

/*
 * CPU models: the feature flags each advertises (as far as the host has
 * them); "host" is everything KVM supports.  The leaves below are cut to
 * the model's flags; other leaves (vendor, family, caches, topology) stay
 * the host's.
 */
static const struct {
	const char *name;
	const char *flags;
} models[] = {
	{ "host", NULL },
	{ "qemu64", "fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
	            "pni cx16 x2apic hypervisor syscall nx lm lahf_lm" },
	{ "x86-64-v2", "fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
	               "pni cx16 x2apic hypervisor syscall nx lm lahf_lm ssse3 sse4_1 sse4_2 popcnt" },
	{ "x86-64-v3", "fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
	               "pni cx16 x2apic hypervisor syscall nx lm lahf_lm ssse3 sse4_1 sse4_2 popcnt "
	               "avx avx2 bmi1 bmi2 fma f16c movbe xsave abm" },
};

int cpuid_check_model(const char *name, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
		if (strcmp(models[i].name, name) == 0)
			return 0;
	snprintf(err, errlen, "unknown CPU model '%s' (host, qemu64, x86-64-v2, x86-64-v3)", name);
	return -1;
}

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

/* The leaves a model cuts down: only its flags survive there. */
static const struct { uint32_t leaf, sub; enum reg reg; } model_regs[] = {
	{ 1, 0, ECX }, { 1, 0, EDX }, { 7, 0, EBX }, { 7, 0, ECX }, { 7, 0, EDX },
	{ 0x80000001, 0, ECX }, { 0x80000001, 0, EDX }, { 0xd, 1, EAX },
};

static bool model_has(const char *flags, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = flags; (p = strstr(p, name)); p += n)
		if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return true;
	return false;
}

static void apply_model(struct kvm_cpuid2 *c, const char *model)
{
	const char *flags = NULL;
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
		if (model && strcmp(models[i].name, model) == 0)
			flags = models[i].flags;
	if (!flags)
		return;   /* host */
	struct kvm_cpuid_entry2 *l1 = find_leaf(c, 1, 0), *ext = find_leaf(c, 0x80000001, 0);
	uint32_t ext_edx = ext ? ext->edx : 0;
	for (size_t i = 0; i < sizeof(model_regs) / sizeof(model_regs[0]); i++) {
		struct kvm_cpuid_entry2 *e = find_leaf(c, model_regs[i].leaf, model_regs[i].sub);
		if (!e)
			continue;
		uint32_t *r = entry_reg(e, model_regs[i].reg), keep = 0;
		for (const struct cpu_feature *f = features; f->name; f++)
			if (f->leaf == model_regs[i].leaf && f->subleaf == model_regs[i].sub && f->reg == model_regs[i].reg &&
			    model_has(flags, f->name))
				keep |= 1u << f->bit;
		*r &= keep;
	}
	/* AMD repeats leaf 1's EDX flags in 0x80000001 EDX: they follow the model there too. */
	if (l1 && ext)
		ext->edx |= ext_edx & l1->edx & 0x0183f3ffu;
}

static void apply_feature_edits(struct kvm_cpuid2 *c, const struct kvm_cpuid2 *supported, const char *spec, bool warn)
{
	const char *p = spec;
	while (p && *p) {
		size_t len = strcspn(p, ",");
		bool on = *p != '-';
		const char *name = (*p == '+' || *p == '-') ? p + 1 : p;
		size_t nlen = len - (size_t)(name - p);
		const struct cpu_feature *f = find_feature(name, nlen);
		struct kvm_cpuid_entry2 *e = f ? find_leaf(c, f->leaf, f->subleaf) : NULL;
		const struct kvm_cpuid_entry2 *s = f ? find_leaf((struct kvm_cpuid2 *)supported, f->leaf, f->subleaf) : NULL;
		/* The hypervisor bit is hyve's to give; any other the host must have. */
		bool host_has = s && (*entry_reg((struct kvm_cpuid_entry2 *)s, f->reg) & (1u << f->bit));
		if (on && e && !host_has && strcmp(f->name, "hypervisor") != 0) {
			if (warn)
				log_warn("cpu.features: +%.*s: this host cannot provide it; dropped", (int)nlen, name);
		} else if (e) {
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

/*
 * An emulating host (PVM) shows the guest some flags of CPUID 1, 7.0 and 0xd.1
 * from its own CPU whatever KVM_SET_CPUID2 said (measured once per
 * process by a throwaway VM, vmm_probe_forced_cpuid).  The table gets them
 * too: what hyve completes (core/insn_complete.c asks this table) must be
 * what the guest was told, or an instruction its CPUID promises would
 * raise #UD.  A model or a cpu.features edit that removed one cannot take
 * effect there: said once.
 */
static pthread_once_t forced_once = PTHREAD_ONCE_INIT;
static uint32_t forced_flags[VMM_FORCED_CPUID_REGS];
static bool forced_known;

static void probe_forced(void)
{
	forced_known = vmm_probe_forced_cpuid(forced_flags) == 0;
	if (!forced_known)
		log_warn("cpu: cannot measure which CPUID flags this emulating host forces on guests");
}

static void add_forced_flags(struct kvm_cpuid2 *c, bool warn)
{
	static const struct { uint32_t leaf, sub; enum reg reg; } where[VMM_FORCED_CPUID_REGS] = {
		{ 1, 0, ECX }, { 1, 0, EDX }, { 7, 0, EBX }, { 7, 0, ECX }, { 7, 0, EDX }, { 0xd, 1, EAX } };
	pthread_once(&forced_once, probe_forced);
	if (!forced_known)
		return;
	char lost[256] = "";
	for (int i = 0; i < VMM_FORCED_CPUID_REGS; i++) {
		struct kvm_cpuid_entry2 *e = find_leaf(c, where[i].leaf, where[i].sub);
		if (!e)
			continue;
		uint32_t *r = entry_reg(e, where[i].reg), added = forced_flags[i] & ~*r;
		*r |= forced_flags[i];
		for (const struct cpu_feature *f = features; f->name; f++)
			if (f->leaf == where[i].leaf && f->subleaf == where[i].sub && f->reg == where[i].reg &&
			    (added >> f->bit & 1))
				snprintf(lost + strlen(lost), sizeof(lost) - strlen(lost), "%s%s", lost[0] ? " " : "", f->name);
	}
	const char *model = get_config_value("cpu.model"), *edits = get_config_value("cpu.features");
	bool restricted = (model && strcmp(model, "host") != 0) || (edits && strchr(edits, '-'));
	if (warn && restricted && lost[0])
		log_warn("cpu: this emulating host shows the guest its own CPUID flags whatever hyve sets; still shown, "
		         "and completed: %s", lost);
}

struct kvm_cpuid2 *cpuid_build(struct vmctx *ctx, int vcpu_id, int ncpus)
{
	struct kvm_cpuid2 *c = vm_get_supported_cpuid(ctx), *supported = vm_get_supported_cpuid(ctx);
	if (!c || !supported) {
		free(c);
		free(supported);
		return NULL;
	}
	apply_model(c, get_config_value("cpu.model"));
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
	apply_feature_edits(c, supported, get_config_value("cpu.features"), vcpu_id == 0);
	if (vm_host_info(ctx)->emulating)
		add_forced_flags(c, vcpu_id == 0);
	free(supported);
	return c;
}

/*
 * MSRs that exist only when CPUID says so.  With x86.strictmsr (default,
 * bhyve's -w clears it) the guest gets #GP for those its CPUID does not
 * announce, as on hardware.  On emulating hosts the guest sees parts of
 * the host's CPUID whatever hyve sets, so an MSR the host's CPUID announces
 * stays allowed there.
 */
static const struct {
	uint32_t msr;
	const char *name;
	struct { uint32_t leaf, sub; enum reg reg; int bit; } by[5];   /* any of these announces it */
} cpuid_msrs[] = {
	{ 0x48, "SPEC_CTRL", { { 7, 0, EDX, 26 }, { 7, 0, EDX, 31 }, { 0x80000008, 0, EBX, 14 },
	                       { 0x80000008, 0, EBX, 15 }, { 0x80000008, 0, EBX, 24 } } },
	{ 0x49, "PRED_CMD", { { 7, 0, EDX, 26 }, { 0x80000008, 0, EBX, 12 } } },
	{ 0x10a, "ARCH_CAPABILITIES", { { 7, 0, EDX, 29 } } },
	{ 0x10b, "FLUSH_CMD", { { 7, 0, EDX, 28 } } },
	{ 0x6e0, "TSC_DEADLINE", { { 1, 0, ECX, 24 } } },
	{ 0xda0, "XSS", { { 0xd, 1, EAX, 3 } } },
	{ 0xc0000103, "TSC_AUX", { { 0x80000001, 0, EDX, 27 }, { 7, 0, ECX, 22 } } },
};

static bool announced(struct vcpu *vcpu, uint32_t leaf, uint32_t sub, enum reg reg, int bit, bool host_too)
{
	uint32_t r[4] = { 0, 0, 0, 0 };
	if (vcpu_cpuid_lookup(vcpu, leaf, sub, r) && (r[reg] & (1u << bit)))
		return true;
	if (!host_too)
		return false;
	unsigned h[4] = { 0, 0, 0, 0 };
	return __get_cpuid_count(leaf, sub, &h[0], &h[1], &h[2], &h[3]) && (h[reg] & (1u << bit));
}

int cpuid_filter_msrs(struct hyve_vm *vm)
{
	if (!get_config_bool_default("x86.strictmsr", true) || vm->ncpus < 1)
		return 0;
	uint32_t deny[sizeof(cpuid_msrs) / sizeof(cpuid_msrs[0])];
	char names[256] = "";
	int n = 0;
	for (size_t i = 0; i < sizeof(cpuid_msrs) / sizeof(cpuid_msrs[0]); i++) {
		bool yes = false;
		for (int k = 0; k < 5 && cpuid_msrs[i].by[k].leaf; k++)
			yes = yes || announced(vm->vcpu[0], cpuid_msrs[i].by[k].leaf, cpuid_msrs[i].by[k].sub,
			                       cpuid_msrs[i].by[k].reg, cpuid_msrs[i].by[k].bit, vm->emulating);
		if (!yes) {
			deny[n++] = cpuid_msrs[i].msr;
			size_t l = strlen(names);
			snprintf(names + l, sizeof(names) - l, "%s%s", l ? " " : "", cpuid_msrs[i].name);
		}
	}
	if (n == 0)
		return 0;
	if (vm_deny_msrs(vm->ctx, deny, n)) {
		if (errno == ENOTSUP) {
			log_info("KVM has no MSR filter: MSRs the guest's CPUID does not announce (%s) are KVM's to refuse", names);
			return 0;
		}
		log_err("cannot set the MSR filter: %s", strerror(errno));
		return -1;
	}
	log_debug("MSRs the guest's CPUID does not announce raise #GP: %s", names);
	return 0;
}
