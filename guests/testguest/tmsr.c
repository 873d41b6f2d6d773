/*
 * test=msr: MSRs that exist only when CPUID announces them (hyve's
 * cpuid_filter_msrs, x86.strictmsr): each is accessed once; it must work
 * when CPUID announces it and raise #GP when it does not, as on hardware.
 * Prints the CPUID words it judged by (tests/test_guest.sh checks them
 * under -o cpu.model=qemu64).
 */
#include "kernel.h"
#include "tests.h"

/* Accesses that survive #GP: 0 done, 1 faulted.  The fault resumes after the instruction. */
extern char rdmsr_resume[], wrmsr_resume[];

static __attribute__((noinline)) int try_rdmsr(u32 msr)
{
	u32 lo = 0, hi = 0;
	int faulted = 1;
	expect_trap(13, (u64)rdmsr_resume);
	__asm__ __volatile__("rdmsr\n\tmovl $0, %2\n\t.globl rdmsr_resume\nrdmsr_resume:"
	                     : "+a"(lo), "+d"(hi), "+r"(faulted) : "c"(msr) : "memory");
	int seen = trap_seen();
	return faulted && seen == 13;
}

static __attribute__((noinline)) int try_wrmsr(u32 msr, u64 v)
{
	u32 lo = (u32)v, hi = (u32)(v >> 32);
	int faulted = 1;
	expect_trap(13, (u64)wrmsr_resume);
	__asm__ __volatile__("wrmsr\n\tmovl $0, %2\n\t.globl wrmsr_resume\nwrmsr_resume:"
	                     : "+a"(lo), "+d"(hi), "+r"(faulted) : "c"(msr) : "memory");
	int seen = trap_seen();
	return faulted && seen == 13;
}

static bool bit(u32 leaf, u32 sub, int reg, int b)
{
	u32 r[4] = { 0, 0, 0, 0 }, max;
	cpuid(leaf & 0x80000000u, 0, &max, &r[1], &r[2], &r[3]);
	if (leaf > max)
		return false;
	cpuid(leaf, sub, &r[0], &r[1], &r[2], &r[3]);
	return (r[reg] >> b) & 1;
}

enum { A, B, C, D };

static void t_msr(void)
{
	u32 a, b, c, d, e7b, e7c, e7d;
	cpuid(7, 0, &a, &e7b, &e7c, &e7d);
	cpuid(1, 0, &a, &b, &c, &d);
	printf("msr: cpuid 1 ecx=0x%x edx=0x%x, 7 ebx=0x%x ecx=0x%x edx=0x%x\n", c, d, e7b, e7c, e7d);
	struct {
		const char *name;
		u32 msr;
		bool write;   /* write-only MSRs: write 0 (no command) */
		bool announced;
	} m[] = {
		{ "SPEC_CTRL", 0x48, false, bit(7, 0, D, 26) || bit(7, 0, D, 31) || bit(0x80000008, 0, B, 14) ||
		                             bit(0x80000008, 0, B, 15) || bit(0x80000008, 0, B, 24) },
		{ "PRED_CMD", 0x49, true, bit(7, 0, D, 26) || bit(0x80000008, 0, B, 12) },
		{ "ARCH_CAPABILITIES", 0x10a, false, bit(7, 0, D, 29) },
		{ "TSC_AUX", 0xc0000103, false, bit(0x80000001, 0, D, 27) || bit(7, 0, C, 22) },
	};
	int bad = 0;
	for (u32 i = 0; i < ARRAY_SIZE(m); i++) {
		int gp = m[i].write ? try_wrmsr(m[i].msr, 0) : try_rdmsr(m[i].msr);
		printf("msr: %s (0x%x) %s, %s\n", m[i].name, m[i].msr, m[i].announced ? "announced" : "not announced",
		       gp ? "#GP" : "accessible");
		if (gp == m[i].announced)
			bad++;
	}
	if (bad)
		test_fail("msr", "%d MSRs disagree with CPUID", bad);
}
GUEST_TEST(msr, t_msr);
