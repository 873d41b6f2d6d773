/*
 * Probe which instructions the host's KVM emulator rejects at CPL0.
 *
 * On emulating hosts (PVM) every guest kernel instruction goes through
 * KVM's x86 emulator.  Rather than hard-coding what it lacks, hyve runs
 * each candidate once in a throwaway VM (64-bit mode, CPL0) and records
 * whether it completes (the stub then writes to port 0x80) or fails with an
 * emulation error.  Boot code uses the result to steer Linux away from
 * those instructions with kernel parameters.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

#define PROBE_MEM (4ULL << 20)
#define PROBE_CODE 0x100000ULL
#define PROBE_DATA 0x200000ULL
#define PROBE_PML4 0x1000ULL

struct probe_insn {
	const char *name;
	uint8_t bytes[16];
	uint8_t len;
};

/*
 * Each stub: the instruction under test, then "out %al, $0x80".  RDI
 * points at 64-byte-aligned scratch memory; EAX/EDX = 1 (XSAVE mask).
 */
static const struct probe_insn probes[] = {
	{ "popcnt", { 0xf3, 0x48, 0x0f, 0xb8, 0xc0 }, 5 },          /* popcnt %rax,%rax */
	{ "cmpxchg16b", { 0x48, 0x0f, 0xc7, 0x0f }, 4 },            /* cmpxchg16b (%rdi) */
	{ "xsave", { 0x0f, 0xae, 0x27 }, 3 },                       /* xsave (%rdi) */
	{ "xgetbv", { 0x31, 0xc9, 0x0f, 0x01, 0xd0 }, 5 },          /* xor ecx; xgetbv */
	{ "fxsave", { 0x0f, 0xae, 0x07 }, 3 },                      /* fxsave (%rdi) */
	{ "sse", { 0x0f, 0x29, 0x07 }, 3 },                         /* movaps %xmm0,(%rdi) */
	{ "sse2", { 0x66, 0x0f, 0xef, 0xc0 }, 4 },                  /* pxor %xmm0,%xmm0 */
	{ "avx", { 0xc5, 0xfc, 0x29, 0x07 }, 4 },                   /* vmovaps %ymm0,(%rdi) */
	{ "rdrand", { 0x48, 0x0f, 0xc7, 0xf0 }, 4 },                /* rdrand %rax */
	{ "rdseed", { 0x48, 0x0f, 0xc7, 0xf8 }, 4 },                /* rdseed %rax */
	{ "fwait", { 0x9b }, 1 },
	{ "int3", { 0xcc }, 1 },
	{ "clflush", { 0x0f, 0xae, 0x3f }, 3 },                     /* clflush (%rdi) */
	{ "rdtscp", { 0x0f, 0x01, 0xf9 }, 3 },
	{ "movbe", { 0x48, 0x0f, 0x38, 0xf0, 0x07 }, 5 },           /* movbe (%rdi),%rax */
	{ "clac", { 0x0f, 0x01, 0xca }, 3 },                        /* SMAP: clac */
	{ "stac", { 0x0f, 0x01, 0xcb }, 3 },
};

#define NPROBES (sizeof(probes) / sizeof(probes[0]))

static int setup_long_mode(struct vcpu *v)
{
	struct kvm_sregs s;
	if (vcpu_get_sregs(v, &s))
		return -1;
	struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = 0x8, .type = 0xb,
	                            .present = 1, .s = 1, .l = 1, .g = 1 };
	struct kvm_segment data = { .base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 0x3,
	                            .present = 1, .s = 1, .db = 1, .g = 1 };
	s.cs = code;
	s.ds = s.es = s.fs = s.gs = s.ss = data;
	s.cr0 = 0x80050033;           /* PG WP NE ET MP PE */
	s.cr3 = PROBE_PML4;
	/* PAE OSFXSR OSXMMEXCPT OSXSAVE SMAP; drop what the host refuses. */
	static const uint64_t optional[] = { 0x200000, 0x40000 };
	s.cr4 = 0x20 | 0x200 | 0x400 | 0x40000 | 0x200000;
	s.efer = 0x500;
	for (size_t i = 0; vcpu_set_sregs(v, &s); i++) {
		if (i == sizeof(optional) / sizeof(optional[0]))
			return -1;
		s.cr4 &= ~optional[i];
	}
	return 0;
}

/* A throwaway VM with one vCPU in 64-bit mode, the first 1 GiB identity-mapped. */
struct probe_vm {
	struct vmctx *ctx;
	struct vcpu *v;
};

static int probe_vm_create(struct probe_vm *p)
{
	char err[256];
	p->v = NULL;
	p->ctx = vm_create("emulator-probe", err, sizeof(err));
	if (!p->ctx)
		return -1;
	if (vm_setup_memory(p->ctx, PROBE_MEM, err, sizeof(err)) || !(p->v = vm_vcpu_create(p->ctx, 0)))
		return -1;
	/* Identity-map the first 1 GiB with 2 MiB pages. */
	uint64_t *pt = vm_map_gpa(p->ctx, PROBE_PML4, 0x3000);
	memset(pt, 0, 0x3000);
	pt[0] = (PROBE_PML4 + 0x1000) | 3;
	pt[512] = (PROBE_PML4 + 0x2000) | 3;
	for (int i = 0; i < 512; i++)
		pt[1024 + i] = ((uint64_t)i << 21) | 0x83;
	return 0;
}

static void probe_vm_destroy(struct probe_vm *p)
{
	if (p->v)
		vm_vcpu_destroy(p->v);
	if (p->ctx)
		vm_destroy(p->ctx);
}

/* Run code (then "out %al, $0x80; hlt") at CPL0: 1 if it reached the OUT,
 * 0 if not (*faulted: the guest took an exception, not an emulation
 * failure: without an IDT that ends in a triple fault), -1 on an error. */
static int probe_run(struct probe_vm *p, const uint8_t *bytes, size_t len, bool *faulted)
{
	*faulted = false;
	uint8_t *code = vm_map_gpa(p->ctx, PROBE_CODE, 64);
	if (len > 61)
		return -1;
	memset(code, 0x90, 64);
	memcpy(code, bytes, len);
	code[len] = 0xe6;       /* out %al, $0x80 */
	code[len + 1] = 0x80;
	code[len + 2] = 0xf4;   /* hlt */
	if (setup_long_mode(p->v))
		return -1;
	struct kvm_regs r = { 0 };
	r.rip = PROBE_CODE;
	r.rdi = PROBE_DATA;
	r.rsp = PROBE_DATA + 0x10000;
	r.rax = 1;
	r.rdx = 0;
	r.rflags = 2;
	if (vcpu_set_regs(p->v, &r))
		return -1;
	struct vm_exit vme;
	for (int tries = 0; tries < 4; tries++) {
		if (vcpu_run(p->v, &vme))
			return 0;
		if (vme.exitcode == VM_EXITCODE_KICKED)
			continue;
		*faulted = vme.exitcode == VM_EXITCODE_SHUTDOWN;
		return vme.exitcode == VM_EXITCODE_INOUT && vme.u.inout.port == 0x80;
	}
	return 0;
}

int vmm_probe_emulator(struct emulator_probe *out)
{
	memset(out, 0, sizeof(*out));
	struct probe_vm p;
	int rc = -1;
	if (probe_vm_create(&p))
		goto out;
	struct kvm_cpuid2 *cpuid = vm_get_supported_cpuid(p.ctx);
	if (cpuid) {
		vcpu_set_cpuid(p.v, cpuid);
		free(cpuid);
	}
	for (size_t i = 0; i < NPROBES; i++) {
		int ok = probe_run(&p, probes[i].bytes, probes[i].len, &out->faulted[i]);
		if (ok < 0)
			goto out;
		/* A fault (#UD from a missing feature) shows as anything but the OUT. */
		out->rejected[i] = !ok;
		out->names[i] = probes[i].name;
	}
	out->count = (int)NPROBES;
	rc = 0;
out:
	probe_vm_destroy(&p);
	return rc;
}

int vmm_probe_forced_cpuid(uint32_t forced[VMM_FORCED_CPUID_REGS])
{
	/* CPUID 1 -> ECX, EDX, CPUID 7.0 -> EBX, ECX, EDX and CPUID 0xd.1 -> EAX stored at (%rdi). */
	static const uint8_t stub[] = {
		0xb8, 0x01, 0x00, 0x00, 0x00,   /* mov $1, %eax */
		0x31, 0xc9,                     /* xor %ecx, %ecx */
		0x0f, 0xa2,                     /* cpuid */
		0x89, 0x0f,                     /* mov %ecx, (%rdi) */
		0x89, 0x57, 0x04,               /* mov %edx, 4(%rdi) */
		0xb8, 0x07, 0x00, 0x00, 0x00,   /* mov $7, %eax */
		0x31, 0xc9,                     /* xor %ecx, %ecx */
		0x0f, 0xa2,                     /* cpuid */
		0x89, 0x5f, 0x08,               /* mov %ebx, 8(%rdi) */
		0x89, 0x4f, 0x0c,               /* mov %ecx, 12(%rdi) */
		0x89, 0x57, 0x10,               /* mov %edx, 16(%rdi) */
		0xb8, 0x0d, 0x00, 0x00, 0x00,   /* mov $0xd, %eax */
		0xb9, 0x01, 0x00, 0x00, 0x00,   /* mov $1, %ecx */
		0x0f, 0xa2,                     /* cpuid */
		0x89, 0x47, 0x14,               /* mov %eax, 20(%rdi) */
	};
	memset(forced, 0, VMM_FORCED_CPUID_REGS * sizeof(forced[0]));
	struct probe_vm p;
	int rc = -1;
	if (probe_vm_create(&p))
		goto out;
	/* Every feature flag of leaves 1, 7.0 and 0xd.1 cleared: what still shows is the host's to decide. */
	struct kvm_cpuid2 *cpuid = vm_get_supported_cpuid(p.ctx);
	if (!cpuid)
		goto out;
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		if (e->function == 1)
			e->ecx = e->edx = 0;
		else if (e->function == 7 && e->index == 0)
			e->ebx = e->ecx = e->edx = 0;
		else if (e->function == 0xd && e->index == 1)
			e->eax = 0;
	}
	int set = vcpu_set_cpuid(p.v, cpuid);
	free(cpuid);
	bool faulted;
	if (set || probe_run(&p, stub, sizeof(stub), &faulted) != 1)
		goto out;
	memcpy(forced, vm_map_gpa(p.ctx, PROBE_DATA, 4 * VMM_FORCED_CPUID_REGS), 4 * VMM_FORCED_CPUID_REGS);
	rc = 0;
out:
	probe_vm_destroy(&p);
	return rc;
}

bool emulator_probe_rejects(const struct emulator_probe *p, const char *name)
{
	for (int i = 0; i < p->count; i++)
		if (strcmp(p->names[i], name) == 0)
			return p->rejected[i];
	return false;
}
