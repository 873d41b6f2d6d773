/*
 * test=mxcsr: LDMXCSR/STMXCSR at CPL0.  On emulating hosts KVM's emulator
 * rejects them and hyve completes them (core/emulate.c); Linux executes
 * LDMXCSR in every kernel_fpu_begin().  Checks the stack (SIB), static
 * (RIP-relative or absolute) and register-indirect forms, and that a
 * reserved bit raises #GP(0) as on hardware.
 */
#include "kernel.h"
#include "tests.h"

#define CR4_OSFXSR (1UL << 9)
#define MXCSR_DEFAULT 0x1f80
#define MXCSR_RC_ZERO 0x6000   /* rounding control: toward zero */

/*
 * The instructions live in fb_* functions: check.sh allows SSE state
 * instructions at CPL0 only in the deliberate fallback tests.
 * Register-indirect load with a known resume point for the #GP case:
 */
asm(".text\n"
    ".globl fb_mx_load_indirect, fb_mx_load_indirect_resume\n"
    "fb_mx_load_indirect:\n"
    "	movl $1, %eax\n"
    "	ldmxcsr (%rdi)\n"
    "	xorl %eax, %eax\n"
    "fb_mx_load_indirect_resume:\n"
    "	ret\n");
extern int fb_mx_load_indirect(const u32 *p);
extern char fb_mx_load_indirect_resume[];

static u32 static_word;

static __attribute__((noinline)) u32 fb_stmxcsr_stack(void)
{
	u32 v = 0;
	asm volatile("stmxcsr %0" : "=m"(v));
	return v;
}

static __attribute__((noinline)) void fb_ldmxcsr_stack(u32 v)
{
	asm volatile("ldmxcsr %0" : : "m"(v));            /* stack operand */
}

static __attribute__((noinline)) void fb_mxcsr_static_roundtrip(void)
{
	asm volatile("ldmxcsr %0" : : "m"(static_word));     /* static operand */
	asm volatile("stmxcsr %0" : "=m"(static_word));
}

static void t_mxcsr(void)
{
	u64 cr4;
	asm volatile("mov %%cr4, %0" : "=r"(cr4));
	asm volatile("mov %0, %%cr4" : : "r"(cr4 | CR4_OSFXSR));

	u32 orig = fb_stmxcsr_stack();
	u32 want = MXCSR_DEFAULT | MXCSR_RC_ZERO;
	fb_ldmxcsr_stack(want);
	u32 got = fb_stmxcsr_stack();
	if (got != want)
		test_fail("mxcsr", "stack form: stored 0x%x after loading 0x%x", got, want);

	static_word = MXCSR_DEFAULT;
	fb_mxcsr_static_roundtrip();
	if (static_word != MXCSR_DEFAULT)
		test_fail("mxcsr", "static form: read back 0x%x, expected 0x%x", static_word, MXCSR_DEFAULT);

	/* mxcsr_gp=no: the CPU under the host is QEMU's TCG, which loads
	 * reserved bits instead of raising #GP (the test script says so). */
	const char *gp = cmdline_get("mxcsr_gp");
	bool check_gp = !gp || strcmp(gp, "no") != 0;
	if (check_gp) {
		u32 bad = 0x10000 | MXCSR_DEFAULT;
		expect_trap(13, (u64)fb_mx_load_indirect_resume);
		int faulted = fb_mx_load_indirect(&bad);
		if (trap_seen() != 13 || !faulted)
			test_fail("mxcsr", "reserved bit 16: trap %d, expected #GP (13)", trap_seen());
		if (fb_stmxcsr_stack() != MXCSR_DEFAULT)
			test_fail("mxcsr", "a refused load changed MXCSR to 0x%x", fb_stmxcsr_stack());
	}

	fb_ldmxcsr_stack(orig);
	printf("mxcsr: ok (initial 0x%x, loaded 0x%x, reserved bit %s)\n", orig, want, check_gp ? "#GP" : "not checked");
	test_pass("mxcsr");
}
GUEST_TEST(mxcsr, t_mxcsr);
