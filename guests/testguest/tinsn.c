/*
 * Instructions hyve completes for KVM's emulator on emulating (PVM) hosts
 * (core/insn_complete.c), one test per class, executed at CPL0 where the
 * emulator sees them.  Each test checks the results and, when the vCPU's
 * CPUID does not advertise the feature (hyve -o cpu.features=-NAME), that
 * the instruction raises #UD as on hardware.  Elsewhere the same code runs
 * natively, so the tests also pass under plain KVM and QEMU.
 *
 * CPL3 variants are not needed: on the PVM host CPL3 code runs natively
 * and never reaches hyve.
 *
 * The instructions live in fb_* functions (check.sh allows SSE, x87 and
 * the like only there); a fault resumes at fb_resume, a bare ret.
 */
#include "kernel.h"
#include "tests.h"

#define CR4_OSFXSR (1UL << 9)
#define CR4_OSXSAVE (1UL << 18)

asm(".text\n"
    ".globl fb_resume\n"
    "fb_resume: ret\n"
    /* MOVBE: rdi = address, rsi = value to store; loads return in rax (-1 before). */
    ".globl fb_movbe_ld64, fb_movbe_ld32, fb_movbe_ld16, fb_movbe_st64, fb_movbe_st32, fb_movbe_st16\n"
    "fb_movbe_ld64: movq $-1, %rax; movbe (%rdi), %rax; ret\n"
    "fb_movbe_ld32: movq $-1, %rax; movbe (%rdi), %eax; ret\n"
    "fb_movbe_ld16: movq $-1, %rax; movbe (%rdi), %ax; ret\n"
    "fb_movbe_st64: xorl %eax, %eax; movbe %rsi, (%rdi); ret\n"
    "fb_movbe_st32: xorl %eax, %eax; movbe %esi, (%rdi); ret\n"
    "fb_movbe_st16: xorl %eax, %eax; movbe %si, 1(%rdi); ret\n"
    /* CMPXCHG16B/8B: rdi = slot, rsi = u64[2] expected in / observed out,
     * rdx = u64[2] new.  Returns ZF (0/1), or 2 if it faulted. */
    ".globl fb_cx16, fb_cx16_resume, fb_cx8\n"
    "fb_cx16:\n"
    "	pushq %rbx\n"
    "	movq %rdx, %r8\n"
    "	movq (%rsi), %rax; movq 8(%rsi), %rdx\n"
    "	movq (%r8), %rbx; movq 8(%r8), %rcx\n"
    "	movl $2, %r9d\n"
    "	lock cmpxchg16b (%rdi)\n"
    "	setz %r9b\n"
    "	movq %rax, (%rsi); movq %rdx, 8(%rsi)\n"
    "fb_cx16_resume:\n"
    "	movq %r9, %rax\n"
    "	popq %rbx\n"
    "	ret\n"
    "fb_cx8:\n"
    "	pushq %rbx\n"
    "	movq %rdx, %r8\n"
    "	movl (%rsi), %eax; movl 4(%rsi), %edx\n"
    "	movl (%r8), %ebx; movl 4(%r8), %ecx\n"
    "	movl $2, %r9d\n"
    "	lock cmpxchg8b (%rdi)\n"
    "	setz %r9b\n"
    "	movl %eax, (%rsi); movl %edx, 4(%rsi)\n"
    "	jmp fb_cx16_resume\n"
    /* FXSAVE64/FXRSTOR64 at rdi. */
    ".globl fb_fxsave, fb_fxrstor\n"
    "fb_fxsave: xorl %eax, %eax; fxsave64 (%rdi); ret\n"
    "fb_fxrstor: xorl %eax, %eax; fxrstor64 (%rdi); ret\n"
    /* SSE data moves between rdi (source, 16-byte aligned) and rsi (destination). */
    ".globl fb_sse_moves, fb_movq_rt, fb_movd_rt, fb_movaps_ld\n"
    "fb_sse_moves:\n"
    "	movdqu (%rdi), %xmm1\n"        /* load */
    "	movdqa %xmm1, %xmm2\n"         /* register to register */
    "	movaps %xmm2, (%rsi)\n"        /* aligned store */
    "	movups 16(%rdi), %xmm3\n"
    "	movdqu %xmm3, 17(%rsi)\n"      /* unaligned store */
    "	movq 32(%rdi), %xmm4\n"        /* 8 bytes, upper half zeroed */
    "	movdqa %xmm4, 48(%rsi)\n"
    "	movapd 48(%rdi), %xmm5\n"
    "	movq %xmm5, 64(%rsi)\n"        /* 8-byte store (66 0F D6) */
    "	movss 64(%rdi), %xmm6\n"       /* 4 bytes, rest zeroed */
    "	movups %xmm6, 80(%rsi)\n"
    "	ret\n"
    "fb_movq_rt: movq %rdi, %xmm7; movq %xmm7, %rax; ret\n"
    "fb_movd_rt: movq $-1, %rax; movd %edi, %xmm7; movd %xmm7, %eax; ret\n"
    "fb_movaps_ld: movl $1, %eax; movaps (%rdi), %xmm0; xorl %eax, %eax; ret\n"
    /* XGETBV(ecx = rdi) -> rax = edx:eax; XSETBV(ecx = rdi, value rsi). */
    ".globl fb_xgetbv, fb_xsetbv\n"
    "fb_xgetbv: movl %edi, %ecx; movq $-1, %rax; xgetbv; shlq $32, %rdx; movl %eax, %eax; orq %rdx, %rax; ret\n"
    "fb_xsetbv: movl %edi, %ecx; movl %esi, %eax; movq %rsi, %rdx; shrq $32, %rdx; xsetbv; xorl %eax, %eax; ret\n"
    /* Cache line flushes at rdi. */
    ".globl fb_clflush, fb_clflushopt, fb_clwb\n"
    "fb_clflush: clflush (%rdi); ret\n"
    "fb_clflushopt: clflushopt (%rdi); ret\n"
    "fb_clwb: clwb (%rdi); ret\n"
    /* INVPCID type rdi, descriptor at rsi. */
    ".globl fb_invpcid\n"
    "fb_invpcid: invpcid (%rsi), %rdi; ret\n"
    /* RDPID -> rax; RDPRU(ecx = rdi) -> rax = edx:eax, rdx = CF. */
    ".globl fb_rdpid, fb_rdpru\n"
    "fb_rdpid: movq $-1, %rax; rdpid %rax; ret\n"
    "fb_rdpru: movl %edi, %ecx; movq $-1, %rax; .byte 0x0f, 0x01, 0xfd; setc %cl; shlq $32, %rdx; movl %eax, %eax;"
    "	orq %rdx, %rax; movzbl %cl, %edx; ret\n"
    /* STAC; read RFLAGS; CLAC; read RFLAGS: returns AC after each in bits 0, 1. */
    ".globl fb_stac_clac\n"
    "fb_stac_clac:\n"
    "	movq $-1, %rax\n"
    "	stac\n"
    "	pushfq; popq %rdx; shrq $18, %rdx; andl $1, %edx\n"
    "	clac\n"
    "	pushfq; popq %rcx; shrq $17, %rcx; andl $2, %ecx\n"
    "	leaq (%rdx,%rcx), %rax\n"
    "	ret\n"
    /* test=unemulated: PXOR, an SSE2 instruction hyve deliberately does not
     * complete (arithmetic, not a data move). */
    ".globl fb_unemulated, fb_unemulated_insn\n"
    "fb_unemulated:\n"
    "	movl $1, %eax\n"
    "fb_unemulated_insn:\n"
    "	pxor %xmm0, %xmm0\n"
    "	xorl %eax, %eax\n"
    "	ret\n");

extern char fb_resume[], fb_cx16_resume[], fb_unemulated_insn[];
u64 fb_movbe_ld64(const void *p), fb_movbe_ld32(const void *p), fb_movbe_ld16(const void *p);
u64 fb_movbe_st64(void *p, u64 v), fb_movbe_st32(void *p, u64 v), fb_movbe_st16(void *p, u64 v);
u64 fb_cx16(void *slot, u64 *cmp, const u64 *newv), fb_cx8(void *slot, u64 *cmp, const u64 *newv);
u64 fb_fxsave(void *p), fb_fxrstor(const void *p);
void fb_sse_moves(const void *src, void *dst);
u64 fb_movq_rt(u64 v), fb_movd_rt(u64 v), fb_movaps_ld(const void *p);
u64 fb_xgetbv(u64 ecx), fb_xsetbv(u64 ecx, u64 v);
void fb_clflush(void *p), fb_clflushopt(void *p), fb_clwb(void *p);
void fb_invpcid(u64 type, const void *desc);
u64 fb_rdpid(void), fb_rdpru(u64 ecx);
u64 fb_stac_clac(void);
u64 fb_unemulated(void);

static bool has(u32 leaf, u32 sub, int reg, int bit)
{
	u32 r[4];
	cpuid(leaf & 0x80000000, 0, &r[0], &r[1], &r[2], &r[3]);
	if (r[0] < leaf)
		return false;   /* beyond the highest leaf: Intel answers with another leaf */
	cpuid(leaf, sub, &r[0], &r[1], &r[2], &r[3]);
	return (r[reg] >> bit) & 1;
}

static void cr4_set(u64 bits)
{
	u64 cr4;
	asm volatile("mov %%cr4, %0" : "=r"(cr4));
	asm volatile("mov %0, %%cr4" : : "r"(cr4 | bits));
}

/* Expect exception vec (or nothing: -1) around a call; returns the vector seen. */
#define TRY(vec, resume, call)                                                  \
	({                                                                      \
		expect_trap((vec), (u64)(resume));                              \
		call;                                                           \
		trap_seen();                                                    \
	})

/*
 * The instruction must raise #UD when CPUID does not advertise it -- on an
 * emulating host, where hyve (or KVM's emulator) sees it.  A CPU running
 * the guest natively executes it regardless of the CPUID it shows the
 * guest, so only strict_ud=1 (set by the tests for emulating hosts) makes
 * that a failure.  Returns whether the instruction ran.
 */
static bool feature_check(const char *name, const char *insn, bool advertised, int seen)
{
	if (advertised) {
		if (seen == 6)
			test_fail(name, "%s advertised by CPUID but raised #UD", insn);
		return true;
	}
	if (seen == 6)
		return false;
	const char *strict = cmdline_get("strict_ud");
	if (strict && *strict == '1')
		test_fail(name, "%s not advertised by CPUID but raised %d, not #UD", insn, seen);
	printf("%s: %s not advertised by CPUID but executed natively (not an emulating host)\n", name, insn);
	return true;
}

static void t_movbe(void)
{
	static u64 buf = 0x0102030405060708UL, out[2];
	bool adv = has(1, 0, 2, 22);
	u64 r = 0;
	int t = TRY(6, fb_resume, r = fb_movbe_ld64(&buf));
	if (!feature_check("movbe", "MOVBE", adv, t)) {
		printf("movbe: #UD (not advertised)\n");
		test_pass("movbe");
	}
	if (r != 0x0807060504030201UL)
		test_fail("movbe", "64-bit load: 0x%lx", r);
	if ((r = fb_movbe_ld32(&buf)) != 0x08070605UL)
		test_fail("movbe", "32-bit load (zero-extends): 0x%lx", r);
	if ((r = fb_movbe_ld16(&buf)) != 0xffffffffffff0807UL)
		test_fail("movbe", "16-bit load (keeps bits 63:16): 0x%lx", r);
	fb_movbe_st64(out, 0x1122334455667788UL);
	if (out[0] != 0x8877665544332211UL)
		test_fail("movbe", "64-bit store: 0x%lx", out[0]);
	fb_movbe_st32(out, 0xaabbccddUL);
	if (out[0] != 0x88776655ddccbbaaUL)
		test_fail("movbe", "32-bit store: 0x%lx", out[0]);
	fb_movbe_st16(out, 0x1234);
	if (out[0] != 0x88776655dd3412aaUL)
		test_fail("movbe", "16-bit store at offset 1: 0x%lx", out[0]);
	t = TRY(14, fb_resume, fb_movbe_ld64((void *)0x7ffffffff000UL));
	if (t != 14)
		test_fail("movbe", "load from an unmapped address: vector %d, expected #PF", t);
	printf("movbe: ok (loads, stores, #PF on an unmapped address)\n");
	test_pass("movbe");
}
GUEST_TEST(movbe, t_movbe);

static void t_cmpxchg16b(void)
{
	static u64 slot[4] __attribute__((aligned(16)));
	u64 cmp[2], nv[2];
	bool adv = has(1, 0, 2, 13);
	slot[0] = 1, slot[1] = 2;
	cmp[0] = 1, cmp[1] = 2, nv[0] = 0x5678, nv[1] = 0x1234;
	u64 z = 0;
	int t = TRY(6, fb_cx16_resume, z = fb_cx16(slot, cmp, nv));
	adv = feature_check("cmpxchg16b", "CMPXCHG16B", adv, t);
	if (adv) {
		if (z != 1 || slot[0] != 0x5678 || slot[1] != 0x1234)
			test_fail("cmpxchg16b", "match: ZF %lu, memory %lx:%lx", z, slot[1], slot[0]);
		cmp[0] = 9, cmp[1] = 9, nv[0] = nv[1] = 0;
		z = fb_cx16(slot, cmp, nv);
		if (z != 0 || cmp[0] != 0x5678 || cmp[1] != 0x1234 || slot[0] != 0x5678)
			test_fail("cmpxchg16b", "mismatch: ZF %lu, RDX:RAX %lx:%lx", z, cmp[1], cmp[0]);
		t = TRY(13, fb_cx16_resume, z = fb_cx16(&slot[1], cmp, nv));
		if (t != 13)
			test_fail("cmpxchg16b", "8-byte aligned operand: vector %d, expected #GP", t);
	}
	/* CMPXCHG8B, unaligned on purpose. */
	u8 *b = (u8 *)slot + 3;
	u64 v = 0x1111111122222222UL;
	memcpy(b, &v, 8);
	cmp[0] = 0x1111111122222222UL, nv[0] = 0x3333333344444444UL;
	z = fb_cx8(b, cmp, nv);
	memcpy(&v, b, 8);
	if (z != 1 || v != 0x3333333344444444UL)
		test_fail("cmpxchg16b", "CMPXCHG8B match: ZF %lu, memory %lx", z, v);
	printf("cmpxchg16b: %s, CMPXCHG8B ok\n", adv ? "match, mismatch and #GP ok" : "#UD (not advertised)");
	test_pass("cmpxchg16b");
}
GUEST_TEST(cmpxchg16b, t_cmpxchg16b);

static void t_fxsave(void)
{
	static u8 a[512] __attribute__((aligned(16))), b[512 + 16] __attribute__((aligned(16)));
	if (!has(1, 0, 3, 24)) {
		int t = TRY(6, fb_resume, fb_fxsave(b));
		if (!feature_check("fxsave", "FXSAVE", false, t)) {
			printf("fxsave: #UD (not advertised)\n");
			test_pass("fxsave");
		}
	}
	cr4_set(CR4_OSFXSR);
	fb_fxsave(a);   /* the current state, for a valid image */
	u32 mxcsr = 0x1f80 | 0x6000;   /* round toward zero */
	memcpy(a + 24, &mxcsr, 4);
	for (int i = 0; i < 256; i++)
		a[160 + i] = (u8)(i * 7 + 3);
	fb_fxrstor(a);
	memset(b, 0, sizeof(b));
	fb_fxsave(b);
	if (memcmp(a + 160, b + 160, 256))
		test_fail("fxsave", "XMM registers after FXRSTOR/FXSAVE differ");
	if (memcmp(a + 24, b + 24, 4) || memcmp(a, b, 2))
		test_fail("fxsave", "MXCSR or FCW after FXRSTOR/FXSAVE differ");
	int t = TRY(13, fb_resume, fb_fxsave(b + 8));
	if (t != 13)
		test_fail("fxsave", "misaligned FXSAVE: vector %d, expected #GP", t);
	mxcsr = 0x1f80;
	memcpy(a + 24, &mxcsr, 4);
	fb_fxrstor(a);
	printf("fxsave: ok (XMM0-15, MXCSR and FCW round trip, #GP when misaligned)\n");
	test_pass("fxsave");
}
GUEST_TEST(fxsave, t_fxsave);

static void t_sse(void)
{
	static u8 src[96] __attribute__((aligned(16))), dst[112] __attribute__((aligned(16)));
	cr4_set(CR4_OSFXSR);
	for (int i = 0; i < 96; i++)
		src[i] = (u8)(0x40 + i);
	memset(dst, 0xee, sizeof(dst));
	fb_sse_moves(src, dst);
	static const u8 zero[16];
	if (memcmp(dst, src, 16))
		test_fail("sse", "MOVDQU/MOVDQA/MOVAPS round trip");
	if (memcmp(dst + 17, src + 16, 16))
		test_fail("sse", "MOVUPS load, MOVDQU unaligned store");
	if (memcmp(dst + 48, src + 32, 8) || memcmp(dst + 56, zero, 8))
		test_fail("sse", "MOVQ load must zero the upper half");
	if (memcmp(dst + 64, src + 48, 8) || dst[72] != 0xee)
		test_fail("sse", "MOVQ store must write 8 bytes");
	if (memcmp(dst + 80, src + 64, 4) || memcmp(dst + 84, zero, 12))
		test_fail("sse", "MOVSS load must zero bits 127:32");
	u64 r = fb_movq_rt(0x0123456789abcdefUL);
	if (r != 0x0123456789abcdefUL)
		test_fail("sse", "MOVQ r64 <-> xmm: 0x%lx", r);
	r = fb_movd_rt(0xfedcba9876543210UL);
	if (r != 0x76543210UL)
		test_fail("sse", "MOVD r32 <-> xmm: 0x%lx", r);
	int t = TRY(13, fb_resume, fb_movaps_ld(src + 4));
	if (t != 13)
		test_fail("sse", "misaligned MOVAPS: vector %d, expected #GP", t);
	printf("sse: ok (MOVAPS/MOVAPD/MOVUPS/MOVDQA/MOVDQU/MOVQ/MOVD/MOVSS, #GP when misaligned)\n");
	test_pass("sse");
}
GUEST_TEST(sse, t_sse);

static void t_xgetbv(void)
{
	bool adv = has(1, 0, 2, 26);
	if (!adv) {
		/* Without XSAVE the guest cannot set CR4.OSXSAVE: #UD on any CPU. */
		int t = TRY(6, fb_resume, fb_xgetbv(0));
		if (t != 6)
			test_fail("xgetbv", "XGETBV without XSAVE: vector %d, expected #UD", t);
		printf("xgetbv: #UD (no XSAVE)\n");
		test_pass("xgetbv");
	}
	cr4_set(CR4_OSXSAVE);
	u64 xcr0 = fb_xgetbv(0);
	if (!(xcr0 & 1))
		test_fail("xgetbv", "XCR0 = 0x%lx lacks x87", xcr0);
	fb_xsetbv(0, xcr0 | 3);
	u64 again = fb_xgetbv(0);
	if (again != (xcr0 | 3))
		test_fail("xgetbv", "XSETBV 0x%lx then XGETBV 0x%lx", xcr0 | 3, again);
	int t = TRY(13, fb_resume, fb_xsetbv(0, 2));
	if (t != 13)
		test_fail("xgetbv", "XSETBV without x87: vector %d, expected #GP", t);
	t = TRY(13, fb_resume, fb_xgetbv(2));
	if (t != 13)
		test_fail("xgetbv", "XGETBV(2): vector %d, expected #GP", t);
	if (has(0xd, 1, 0, 2)) {
		u64 inuse = fb_xgetbv(1);
		if (inuse & ~again)
			test_fail("xgetbv", "XINUSE 0x%lx not within XCR0 0x%lx", inuse, again);
	}
	printf("xgetbv: ok (XCR0 0x%lx, XSETBV round trip, #GP cases)\n", again);
	test_pass("xgetbv");
}
GUEST_TEST(xgetbv, t_xgetbv);

static void t_clflush(void)
{
	static u64 line[8] __attribute__((aligned(64))) = { 0x1234 };
	int t = TRY(6, fb_resume, fb_clflush(line));
	bool a = feature_check("clflush", "CLFLUSH", has(1, 0, 3, 19), t);
	t = TRY(6, fb_resume, fb_clflushopt(line));
	bool b = feature_check("clflush", "CLFLUSHOPT", has(7, 0, 1, 23), t);
	t = TRY(6, fb_resume, fb_clwb(line));
	bool c = feature_check("clflush", "CLWB", has(7, 0, 1, 24), t);
	if (line[0] != 0x1234)
		test_fail("clflush", "a flush changed memory");
	printf("clflush: ok (clflush %s, clflushopt %s, clwb %s)\n", a ? "ran" : "#UD", b ? "ran" : "#UD",
	       c ? "ran" : "#UD");
	test_pass("clflush");
}
GUEST_TEST(clflush, t_clflush);

static void t_invpcid(void)
{
	static u64 desc[2] __attribute__((aligned(16)));
	bool adv = has(7, 0, 1, 10);
	int t = TRY(6, fb_resume, fb_invpcid(2, desc));
	adv = feature_check("invpcid", "INVPCID", adv, t);
	if (adv) {
		t = TRY(13, fb_resume, fb_invpcid(4, desc));
		if (t != 13)
			test_fail("invpcid", "type 4: vector %d, expected #GP", t);
		desc[1] = 0x0000800000000000UL;
		t = TRY(13, fb_resume, fb_invpcid(0, desc));
		if (t != 13)
			test_fail("invpcid", "type 0, non-canonical address: vector %d, expected #GP", t);
	}
	printf("invpcid: %s\n", adv ? "ok (type 2, #GP for type 4 and a non-canonical address)" : "#UD (not advertised)");
	test_pass("invpcid");
}
GUEST_TEST(invpcid, t_invpcid);

static void t_rdpid(void)
{
	bool adv = has(7, 0, 2, 22);
	u64 r = 0;
	if (adv)
		wrmsr(0xc0000103, 0x5a5a);   /* IA32_TSC_AUX */
	int t = TRY(6, fb_resume, r = fb_rdpid());
	bool ran = feature_check("rdpid", "RDPID", adv, t);
	if (adv && ran && r != 0x5a5a)
		test_fail("rdpid", "RDPID = 0x%lx, IA32_TSC_AUX is 0x5a5a", r);
	/* RDPRU (AMD): CF set for a supported register, clear otherwise. */
	bool pru = has(0x80000008, 0, 1, 4);
	t = TRY(6, fb_resume, fb_rdpru(0x1000));
	bool pran = feature_check("rdpid", "RDPRU", pru, t);
	printf("rdpid: %s, rdpru: %s\n", ran ? "ok" : "#UD (not advertised)", pran ? "ok" : "#UD (not advertised)");
	test_pass("rdpid");
}
GUEST_TEST(rdpid, t_rdpid);

static void t_clac(void)
{
	bool adv = has(7, 0, 1, 20);
	u64 r = 0;
	int t = TRY(6, fb_resume, r = fb_stac_clac());
	adv = feature_check("clac", "STAC", adv, t);
	if (adv && r != 1)
		test_fail("clac", "AC after STAC, CLAC: %lu (expected set, then clear)", r);
	printf("clac: %s\n", adv ? "ok (STAC sets AC, CLAC clears it)" : "#UD (not advertised)");
	test_pass("clac");
}
GUEST_TEST(clac, t_clac);

/*
 * test=unemulated: an instruction hyve does not complete.  On an emulating
 * host the guest gets #UD at the instruction (vmm.unemulated=ud, the
 * default) or the VM stops (vmm.unemulated=stop).  Elsewhere it just runs.
 */
static void t_unemulated(void)
{
	cr4_set(CR4_OSFXSR);
	printf("unemulated: pxor at CPL0\n");
	int t = TRY(6, fb_resume, fb_unemulated());
	if (t == 6) {
		if (this_cpu()->seen_rip != (u64)fb_unemulated_insn)
			test_fail("unemulated", "#UD at rip %lx, expected %lx", this_cpu()->seen_rip,
			          (u64)fb_unemulated_insn);
		printf("unemulated: #UD delivered at the instruction\n");
	} else {
		printf("unemulated: completed (not an emulating host)\n");
	}
	test_pass("unemulated");
}
GUEST_TEST(unemulated, t_unemulated);
