/*
 * Completing the instructions KVM's emulator rejects on emulating (PVM)
 * hosts, against a struct insn_vcpu (core/insn.h).  Each instruction does
 * what hardware does: the CPUID feature bit of the vCPU gates it (#UD),
 * then CR0/CR4 state (#UD, #NM), privilege (#GP/#UD), memory operands
 * through segmentation and paging (core/insn_mem.c: #GP/#SS/#PF/#AC),
 * and only then registers, flags, memory and FPU/SSE state change.  An
 * instruction that faults changes nothing.
 *
 * Completed: INT3, INT n, INTO, FWAIT, FNINIT, FNCLEX, FLDCW, FNSTCW, FNSTSW,
 * POPCNT, CLAC/STAC, XGETBV, XSETBV,
 * RDPRU, LDMXCSR/STMXCSR, FXSAVE/FXRSTOR, CLFLUSH/CLFLUSHOPT/CLWB,
 * LFENCE/MFENCE/SFENCE, CMPXCHG8B/CMPXCHG16B, RDPID, MOVBE, INVPCID and
 * the SSE/SSE2 data moves (MOVUPS/MOVUPD/MOVAPS/MOVAPD/MOVSS/MOVSD/
 * MOVNTPS/MOVNTPD/MOVDQA/MOVDQU/MOVNTDQ/MOVD/MOVQ).  Everything else is
 * INSN_UNKNOWN; the caller decides (#UD or stop, vmm.unemulated).
 */
#include <string.h>

#include "insn.h"

#define CR0_MP (1ULL << 1)
#define CR0_EM (1ULL << 2)
#define CR0_TS (1ULL << 3)
#define CR0_NE (1ULL << 5)
#define CR4_TSD (1ULL << 2)
#define CR4_OSFXSR (1ULL << 9)
#define CR4_PCIDE (1ULL << 17)
#define CR4_OSXSAVE (1ULL << 18)
#define CR4_LA57 (1ULL << 12)
#define EFER_FFXSR (1ULL << 14)

#define RF_CF 0x0001ULL
#define RF_PF 0x0004ULL
#define RF_AF 0x0010ULL
#define RF_ZF 0x0040ULL
#define RF_SF 0x0080ULL
#define RF_OF 0x0800ULL
#define RF_RF (1ULL << 16)
#define RF_AC (1ULL << 18)
#define RF_IOPL (3ULL << 12)
#define RF_ARITH (RF_CF | RF_PF | RF_AF | RF_ZF | RF_SF | RF_OF)

enum { EAX_, EBX_, ECX_, EDX_ };
enum { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI };

/* Layout of the legacy (FXSAVE) region at the start of the XSAVE area. */
#define XS_FCW 0
#define XS_FTW 4
#define XS_FIP 8
#define XS_FDP 16
#define XS_MXCSR 24
#define XS_MXCSR_MASK 28
#define XS_ST 32
#define XS_XMM 160
#define XS_BV 512
#define XS_X87 1ULL
#define XS_SSE 2ULL

/* 1 (fault) and -1 (error) from a check or access end the instruction. */
#define TRY(x)                                                                 \
	do {                                                                   \
		int rc_ = (x);                                                 \
		if (rc_ > 0)                                                   \
			return INSN_FAULT;                                     \
		if (rc_ < 0)                                                   \
			return INSN_ERROR;                                     \
	} while (0)

static enum insn_result ud(struct insn_vcpu *v)
{
	return insn_fault(v, 6, false, 0);
}

static enum insn_result gp0(struct insn_vcpu *v)
{
	return insn_fault(v, 13, true, 0);
}

static enum insn_result unknown(struct insn_vcpu *v, const char *why)
{
	v->why = why;
	return INSN_UNKNOWN;
}

static enum insn_result error(struct insn_vcpu *v, const char *why)
{
	if (!v->why)
		v->why = why;
	return INSN_ERROR;
}

static bool has(struct insn_vcpu *v, uint32_t leaf, uint32_t sub, int reg, int bit)
{
	return insn_cpuid_bit(v, leaf, sub, reg, bit);
}

static enum insn_mode mode_of(const struct insn_vcpu *v)
{
	return (enum insn_mode)v->insn.mode;
}

/* ---- registers ---- */

static uint64_t gpr_get(const struct insn_vcpu *v, int r, int size)
{
	if (size == 1 && !v->insn.rex && r >= 4 && r < 8)
		return (v->gpr[r - 4] >> 8) & 0xff;   /* AH, CH, DH, BH */
	uint64_t x = v->gpr[r & 15];
	return size >= 8 ? x : x & ((1ULL << (8 * size)) - 1);
}

static void gpr_set(struct insn_vcpu *v, int r, int size, uint64_t val)
{
	uint64_t *p = &v->gpr[r & 15];
	switch (size) {
	case 1:
		if (!v->insn.rex && r >= 4 && r < 8) {
			p = &v->gpr[r - 4];
			*p = (*p & ~0xff00ULL) | ((val & 0xff) << 8);
		} else {
			*p = (*p & ~0xffULL) | (val & 0xff);
		}
		break;
	case 2:
		*p = (*p & ~0xffffULL) | (val & 0xffff);
		break;
	case 4:
		*p = val & 0xffffffffULL;   /* 32-bit results zero-extend */
		break;
	default:
		*p = val;
		break;
	}
}

/* Effective address (offset in the segment) of the ModRM memory operand. */
static uint64_t ea(const struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	uint64_t a = (uint64_t)in->disp;
	if (in->base >= 0)
		a += v->gpr[in->base];
	if (in->index >= 0)
		a += v->gpr[in->index] * in->scale;
	if (in->riprel)
		a += v->rip + in->len;
	if (in->addrsize == 2)
		a &= 0xffff;
	else if (in->addrsize == 4)
		a &= 0xffffffffULL;
	return a;
}

static int memop(struct insn_vcpu *v, uint32_t size, enum insn_acc acc, uint32_t align, struct insn_access **a)
{
	const struct insn *in = &v->insn;
	return insn_mem_prepare(v, in->seg != SEG_NONE ? in->seg : in->default_seg, ea(v), size, acc, align, a);
}

/* The access's RAM was changed directly (atomic paths): dirty log and write log. */
static void accessed_dirty(struct insn_vcpu *v, const struct insn_access *a)
{
	for (int i = 0; i < a->nchunks; i++) {
		if (!a->chunk[i].hva)
			continue;
		if (v->ops->dirtied)
			v->ops->dirtied(v->opaque, a->chunk[i].gpa, a->chunk[i].len);
		if (v->nwrites < INSN_MAX_WRITES) {
			v->writes[v->nwrites].gpa = a->chunk[i].gpa;
			v->writes[v->nwrites].len = a->chunk[i].len;
			v->writes[v->nwrites].pagetable = false;
			v->nwrites++;
		}
	}
}

/* ---- FPU / SSE state (the XSAVE area) ---- */

static uint8_t *xs_get(struct insn_vcpu *v)
{
	if (!v->xs) {
		size_t len = 0;
		uint8_t *p = v->ops->xsave ? v->ops->xsave(v->opaque, &len) : NULL;
		if (!p || len < 576) {
			v->why = "cannot read the vCPU's XSAVE area";
			return NULL;
		}
		v->xs = p;
		v->xs_len = len;
	}
	return v->xs;
}

static uint64_t xs_bv(const uint8_t *xs)
{
	uint64_t b;
	memcpy(&b, xs + XS_BV, 8);
	return b;
}

/*
 * A component whose XSTATE_BV bit is clear is in its initial state, and
 * the bytes of the area may be stale (older kernels copy the raw buffer).
 * Before changing x87 or SSE state, write the initial values and set the
 * bit, so KVM_SET_XSAVE loads exactly what the guest would see.
 */
static void xs_materialize(uint8_t *xs, uint64_t bits)
{
	uint64_t bv = xs_bv(xs);
	if ((bits & XS_X87) && !(bv & XS_X87)) {
		memset(xs, 0, 24);   /* FSW, FTW, FOP, FIP, FDP; MXCSR stays */
		uint16_t fcw = 0x037f;
		memcpy(xs + XS_FCW, &fcw, 2);
		memset(xs + XS_ST, 0, 128);
	}
	if ((bits & XS_SSE) && !(bv & XS_SSE))
		memset(xs + XS_XMM, 0, 256);
	bv |= bits;
	memcpy(xs + XS_BV, &bv, 8);
}

static void xmm_get(const uint8_t *xs, int i, uint8_t out[16])
{
	if (xs_bv(xs) & XS_SSE)
		memcpy(out, xs + XS_XMM + 16 * (i & 15), 16);
	else
		memset(out, 0, 16);
}

static void xmm_set(struct insn_vcpu *v, uint8_t *xs, int i, const uint8_t val[16])
{
	xs_materialize(xs, XS_SSE);
	memcpy(xs + XS_XMM + 16 * (i & 15), val, 16);
	v->xsave_dirty = true;
}

/*
 * The MXCSR bits the CPU accepts, as the host's XSAVE stored them.  A zero
 * mask in an FXSAVE image means 0xffbf (no DAZ, SDM 10.5.1.2), but here it
 * can only mean the kernel left the field empty: every x86-64 CPU has DAZ,
 * so 0xffff, as before this layer existed.
 */
static uint32_t mxcsr_mask(const uint8_t *xs)
{
	uint32_t m;
	memcpy(&m, xs + XS_MXCSR_MASK, 4);
	return m ? m : 0xffff;
}

/*
 * The checks every SSE instruction makes before touching anything:
 * CR0.EM or no CR4.OSFXSR or no CPUID bit: #UD; CR0.TS: #NM.
 */
static int sse_check(struct insn_vcpu *v, bool sse2)
{
	const struct kvm_sregs *s = &v->sregs;
	if ((s->cr0 & CR0_EM) || !(s->cr4 & CR4_OSFXSR) || !has(v, 1, 0, EDX_, sse2 ? 26 : 25)) {
		ud(v);
		return 1;
	}
	if (s->cr0 & CR0_TS) {
		insn_fault(v, 7, false, 0);
		return 1;
	}
	return 0;
}

/* ---- one-byte opcodes ---- */

static enum insn_result do_int3(struct insn_vcpu *v)
{
	/* #BP is a trap: delivered with RIP past the instruction. */
	v->event.valid = true;
	v->event.vector = 3;
	return INSN_DONE;
}

static enum insn_result do_intn(struct insn_vcpu *v)
{
	if (mode_of(v) == INSN_MODE_VM86 && (v->rflags & RF_IOPL) != RF_IOPL)
		return gp0(v);   /* IOPL-sensitive in virtual-8086 mode */
	v->event.valid = true;
	v->event.soft = true;
	v->event.vector = (uint8_t)v->insn.imm;
	return INSN_DONE;
}

static enum insn_result do_into(struct insn_vcpu *v)
{
	/* 64-bit mode never gets here: the decoder reports it invalid (#UD). */
	if (v->rflags & RF_OF) {
		v->event.valid = true;
		v->event.vector = 4;
	}
	return INSN_DONE;
}

static enum insn_result do_fwait(struct insn_vcpu *v)
{
	const struct kvm_sregs *s = &v->sregs;
	if ((s->cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS))
		return insn_fault(v, 7, false, 0);
	uint8_t *xs = xs_get(v);
	if (!xs)
		return INSN_ERROR;
	/* A pending unmasked x87 exception (FSW.ES) is reported here: #MF
	 * with CR0.NE; without it PCs signal FERR#/IRQ13, not modelled. */
	uint16_t fsw;
	memcpy(&fsw, xs + 2, 2);
	if ((xs_bv(xs) & XS_X87) && (fsw & 0x80) && (s->cr0 & CR0_NE))
		return insn_fault(v, 16, false, 0);
	return INSN_DONE;
}

/* ---- x87 control: FNINIT, FNCLEX, FLDCW, FNSTCW, FNSTSW ---- */

/*
 * What firmware runs first at CPL0 (OVMF's SEC starts with FNINIT).  The
 * x87 checks: CR0.EM or CR0.TS raise #NM; FLDCW, the one waiting form
 * here, first raises #MF for a pending unmasked exception.  These control
 * instructions leave FIP/FDP/FOP as they are, except FNINIT, which clears
 * them.
 */
#define FSW_ES 0x0080
#define FSW_B 0x8000

/* ES and B follow the unmasked pending exceptions (FSW & ~FCW, bits 0-5). */
static uint16_t fsw_summary(uint16_t fsw, uint16_t fcw)
{
	fsw &= (uint16_t)~(FSW_ES | FSW_B);
	if (fsw & ~fcw & 0x3f)
		fsw |= FSW_ES | FSW_B;
	return fsw;
}

static enum insn_result x87_control(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	if (v->sregs.cr0 & (CR0_EM | CR0_TS))
		return insn_fault(v, 7, false, 0);
	uint8_t *xs = xs_get(v);
	if (!xs)
		return INSN_ERROR;
	uint16_t fcw = 0x037f, fsw = 0;
	if (xs_bv(xs) & XS_X87) {
		memcpy(&fcw, xs + XS_FCW, 2);
		memcpy(&fsw, xs + 2, 2);
	}
	struct insn_access *a;
	int op = in->opcode, reg = in->reg & 7;
	if (op == 0xdb && in->modrm == 0xe3) {           /* FNINIT */
		xs_materialize(xs, XS_X87);
		memset(xs, 0, 24);                       /* FSW, FTW (all empty), FOP, FIP, FDP */
		fcw = 0x037f;
		memcpy(xs + XS_FCW, &fcw, 2);
	} else if (op == 0xdb && in->modrm == 0xe2) {    /* FNCLEX */
		xs_materialize(xs, XS_X87);
		fsw &= (uint16_t)~(0x3f | 0x40 | FSW_ES | FSW_B);
		memcpy(xs + 2, &fsw, 2);
	} else if (op == 0xdf && in->modrm == 0xe0) {    /* FNSTSW AX */
		gpr_set(v, RAX, 2, fsw);
		return INSN_DONE;
	} else if (op == 0xd9 && in->mod != 3 && reg == 5) {   /* FLDCW m16 */
		uint16_t val;
		/* A waiting instruction: a pending unmasked exception is #MF first (as FWAIT). */
		if ((xs_bv(xs) & XS_X87) && (fsw & FSW_ES) && (v->sregs.cr0 & CR0_NE))
			return insn_fault(v, 16, false, 0);
		TRY(memop(v, 2, ACC_READ, 0, &a));
		if (insn_mem_read(v, a, &val))
			return INSN_ERROR;
		xs_materialize(xs, XS_X87);
		val = (uint16_t)((val & 0x1f3f) | 0x0040);   /* reserved bits: 6 reads as one, 7 and 13-15 as zero */
		fsw = fsw_summary(fsw, val);
		memcpy(xs + XS_FCW, &val, 2);
		memcpy(xs + 2, &fsw, 2);
	} else if ((op == 0xd9 && in->mod != 3 && reg == 7) ||   /* FNSTCW m16 */
	           (op == 0xdd && in->mod != 3 && reg == 7)) {   /* FNSTSW m16 */
		uint16_t val = op == 0xd9 ? fcw : fsw;
		TRY(memop(v, 2, ACC_WRITE, 0, &a));
		return insn_mem_write(v, a, &val) ? INSN_ERROR : INSN_DONE;
	} else {
		return unknown(v, "x87 instructions other than FNINIT/FNCLEX/FLDCW/FNSTCW/FNSTSW are not completed");
	}
	v->xsave_dirty = true;
	return INSN_DONE;
}

/* ---- 0F 01: CLAC, STAC, XGETBV, XSETBV, RDPRU ---- */

static enum insn_result do_clac_stac(struct insn_vcpu *v, bool set)
{
	if (!has(v, 7, 0, EBX_, 20) || insn_cpl(v) > 0)
		return ud(v);
	if (set)
		v->rflags |= RF_AC;
	else
		v->rflags &= ~RF_AC;
	return INSN_DONE;
}

static int get_xcr0(struct insn_vcpu *v)
{
	if (!v->xcr0_known) {
		if (!v->ops->xcr0 || v->ops->xcr0(v->opaque, &v->xcr0)) {
			v->why = "cannot read XCR0";
			return -1;
		}
		v->xcr0_known = true;
	}
	return 0;
}

static enum insn_result do_xgetbv(struct insn_vcpu *v)
{
	if (!has(v, 1, 0, ECX_, 26) || !(v->sregs.cr4 & CR4_OSXSAVE))
		return ud(v);
	uint32_t ecx = (uint32_t)v->gpr[RCX];
	uint64_t val;
	if (get_xcr0(v))
		return INSN_ERROR;
	if (ecx == 0) {
		val = v->xcr0;
	} else if (ecx == 1 && has(v, 0xd, 1, EAX_, 2)) {
		/* XINUSE: the enabled components not in their initial state. */
		uint8_t *xs = xs_get(v);
		if (!xs)
			return INSN_ERROR;
		val = v->xcr0 & xs_bv(xs);
	} else {
		return gp0(v);
	}
	gpr_set(v, RAX, 4, val);
	gpr_set(v, RDX, 4, val >> 32);
	return INSN_DONE;
}

static enum insn_result do_xsetbv(struct insn_vcpu *v)
{
	if (!has(v, 1, 0, ECX_, 26) || !(v->sregs.cr4 & CR4_OSXSAVE))
		return ud(v);
	if (insn_cpl(v) > 0 || (uint32_t)v->gpr[RCX] != 0)
		return gp0(v);
	uint64_t val = (v->gpr[RAX] & 0xffffffffULL) | (v->gpr[RDX] << 32);
	uint32_t r[4] = { 0, 0, 0, 0 };
	if (v->ops->cpuid)
		v->ops->cpuid(v->opaque, 0xd, 0, r);
	uint64_t supported = r[0] | ((uint64_t)r[3] << 32);
	/* The SDM's XSETBV rules: x87 always on, AVX needs SSE, AVX-512 all
	 * or nothing on top of AVX, MPX both or neither, AMX both or neither. */
	if (!(val & 1) || (val & ~supported) || ((val & 4) && !(val & 2)) ||
	    ((val & 0xe0) && ((val & 0xe0) != 0xe0 || !(val & 4))) ||
	    (((val >> 3) & 1) != ((val >> 4) & 1)) || (((val >> 17) & 1) != ((val >> 18) & 1)))
		return gp0(v);
	v->xcr0 = val;
	v->xcr0_known = true;
	v->xcr0_dirty = true;
	return INSN_DONE;
}

static enum insn_result do_rdpru(struct insn_vcpu *v)
{
	uint32_t r[4] = { 0, 0, 0, 0 };
	if (!has(v, 0x80000008, 0, EBX_, 4))
		return ud(v);
	if (insn_cpl(v) > 0 && (v->sregs.cr4 & CR4_TSD))
		return ud(v);
	v->ops->cpuid(v->opaque, 0x80000008, 0, r);
	uint32_t id = (uint32_t)v->gpr[RCX], max = r[3] >> 16;
	uint64_t val = 0;
	bool ok = false;
	/* 0: MPERF, 1: APERF; an unsupported register reads 0 with CF clear. */
	if (id <= 1 && id <= max && v->ops->rdmsr && v->ops->rdmsr(v->opaque, id == 0 ? 0xe7 : 0xe8, &val) == 0)
		ok = true;
	else
		val = 0;
	gpr_set(v, RAX, 4, val);
	gpr_set(v, RDX, 4, val >> 32);
	v->rflags &= ~RF_ARITH;
	if (ok)
		v->rflags |= RF_CF;
	return INSN_DONE;
}

static enum insn_result grp7(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	if (in->mod != 3)
		return unknown(v, "0F 01 memory form");
	switch (in->modrm) {
	case 0xca: case 0xcb: case 0xd0: case 0xd1: case 0xfd:
		break;
	default:
		return unknown(v, "0F 01 form not completed");
	}
	if (in->lock || in->p66 || in->rep || in->repne)
		return ud(v);
	switch (in->modrm) {
	case 0xca: return do_clac_stac(v, false);
	case 0xcb: return do_clac_stac(v, true);
	case 0xd0: return do_xgetbv(v);
	case 0xd1: return do_xsetbv(v);
	default: return do_rdpru(v);
	}
}

/* ---- 0F AE: FXSAVE, FXRSTOR, LDMXCSR, STMXCSR, CLFLUSH(OPT), CLWB, fences ---- */

static enum insn_result do_ldst_mxcsr(struct insn_vcpu *v, bool load)
{
	struct insn_access *a;
	uint32_t val;
	TRY(sse_check(v, false));
	TRY(memop(v, 4, load ? ACC_READ : ACC_WRITE, 0, &a));
	uint8_t *xs = xs_get(v);
	if (!xs)
		return INSN_ERROR;
	if (load) {
		if (insn_mem_read(v, a, &val))
			return INSN_ERROR;
		if (val & ~mxcsr_mask(xs))
			return gp0(v);   /* reserved bits */
		/* KVM takes MXCSR only with x87, SSE or AVX marked in use. */
		xs_materialize(xs, XS_SSE);
		memcpy(xs + XS_MXCSR, &val, 4);
		v->xsave_dirty = true;
	} else {
		memcpy(&val, xs + XS_MXCSR, 4);
		if (insn_mem_write(v, a, &val))
			return INSN_ERROR;
	}
	return INSN_DONE;
}

/* FXSAVE/FXRSTOR's checks: CPUID.FXSR and CR0.EM (#UD), CR0.TS (#NM). */
static int fx_check(struct insn_vcpu *v)
{
	if (!has(v, 1, 0, EDX_, 24) || (v->sregs.cr0 & CR0_EM)) {
		ud(v);
		return 1;
	}
	if (v->sregs.cr0 & CR0_TS) {
		insn_fault(v, 7, false, 0);
		return 1;
	}
	return 0;
}

/* XMM state is skipped with CR4.OSFXSR clear and by AMD's fast FXSAVE/FXRSTOR. */
static int fx_nxmm(struct insn_vcpu *v)
{
	if (!(v->sregs.cr4 & CR4_OSFXSR))
		return 0;
	if ((v->sregs.efer & EFER_FFXSR) && insn_cpl(v) == 0 && mode_of(v) == INSN_MODE_LONG64)
		return 0;
	return mode_of(v) == INSN_MODE_LONG64 ? 16 : 8;
}

static enum insn_result do_fxsave(struct insn_vcpu *v)
{
	struct insn_access *a;
	uint8_t img[512];
	bool w64 = (v->insn.rex & 8) != 0;   /* FXSAVE64: 64-bit FIP/FDP */
	TRY(fx_check(v));
	TRY(memop(v, 512, ACC_WRITE, 16, &a));
	uint8_t *xs = xs_get(v);
	if (!xs)
		return INSN_ERROR;
	memset(img, 0, sizeof(img));
	uint64_t bv = xs_bv(xs);
	if (bv & XS_X87) {
		memcpy(img, xs, 24);
		memcpy(img + XS_ST, xs + XS_ST, 128);
	} else {
		uint16_t fcw = 0x037f;
		memcpy(img + XS_FCW, &fcw, 2);
	}
	if (!w64) {
		/* 32-bit format: FIP, FCS, FDP, FDS.  The selectors are not kept
		 * by KVM (and deprecated on current CPUs): stored as 0. */
		memset(img + XS_FIP + 4, 0, 4);
		memset(img + XS_FDP + 4, 0, 4);
	}
	memcpy(img + XS_MXCSR, xs + XS_MXCSR, 4);
	uint32_t mask = mxcsr_mask(xs);
	memcpy(img + XS_MXCSR_MASK, &mask, 4);
	int nxmm = fx_nxmm(v);
	for (int i = 0; i < nxmm; i++)
		xmm_get(xs, i, img + XS_XMM + 16 * i);
	/* Bytes past the saved registers (464..511 are the software's) stay. */
	if (insn_mem_write_part(v, a, 0, (uint32_t)(XS_XMM + 16 * nxmm), img))
		return INSN_ERROR;
	return INSN_DONE;
}

static enum insn_result do_fxrstor(struct insn_vcpu *v)
{
	struct insn_access *a;
	uint8_t img[512];
	bool w64 = (v->insn.rex & 8) != 0;
	TRY(fx_check(v));
	TRY(memop(v, 512, ACC_READ, 16, &a));
	uint8_t *xs = xs_get(v);
	if (!xs)
		return INSN_ERROR;
	if (insn_mem_read(v, a, img))
		return INSN_ERROR;
	uint32_t mxcsr;
	memcpy(&mxcsr, img + XS_MXCSR, 4);
	if (mxcsr & ~mxcsr_mask(xs))
		return gp0(v);
	int nxmm = fx_nxmm(v);
	xs_materialize(xs, XS_X87 | (nxmm ? XS_SSE : 0));
	memcpy(xs, img, 8);   /* FCW, FSW, FTW (abridged), FOP */
	if (w64) {
		memcpy(xs + XS_FIP, img + XS_FIP, 16);
	} else {
		uint32_t fip, fdp;
		memcpy(&fip, img + XS_FIP, 4);
		memcpy(&fdp, img + XS_FDP, 4);
		uint64_t f = fip, d = fdp;
		memcpy(xs + XS_FIP, &f, 8);
		memcpy(xs + XS_FDP, &d, 8);
	}
	memcpy(xs + XS_ST, img + XS_ST, 128);
	if (v->sregs.cr4 & CR4_OSFXSR)
		memcpy(xs + XS_MXCSR, &mxcsr, 4);
	for (int i = 0; i < nxmm; i++)
		memcpy(xs + XS_XMM + 16 * i, img + XS_XMM + 16 * i, 16);
	v->xsave_dirty = true;
	return INSN_DONE;
}

static enum insn_result do_clflush(struct insn_vcpu *v, int which)
{
	/* which: 0 CLFLUSH, 1 CLFLUSHOPT, 2 CLWB. */
	static const struct { uint32_t leaf; int reg, bit; } feat[3] = {
		{ 1, EDX_, 19 }, { 7, EBX_, 23 }, { 7, EBX_, 24 },
	};
	if (!has(v, feat[which].leaf, 0, feat[which].reg, feat[which].bit))
		return ud(v);
	/* Checked like a one-byte load (execute-only segments allowed), then
	 * nothing to do: guest RAM is ordinary write-back host memory,
	 * coherent for every observer. */
	TRY(memop(v, 1, ACC_FLUSH, 0, NULL));
	return INSN_DONE;
}

static enum insn_result grp15(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	int op = (in->modrm >> 3) & 7;
	if (in->mod == 3) {
		/* LFENCE (/5), MFENCE (/6), SFENCE (/7): the exit to hyve and
		 * back already orders every memory access around them. */
		if (op < 5 || in->p66 || in->rep || in->repne)
			return unknown(v, "0F AE register form not completed");
		if (in->lock)
			return ud(v);
		if (!has(v, 1, 0, EDX_, op == 7 ? 25 : 26))
			return ud(v);
		return INSN_DONE;
	}
	if (in->rep || in->repne)
		return unknown(v, "0F AE form not completed");
	if (in->p66) {
		if (op != 6 && op != 7)
			return unknown(v, "66 0F AE form not completed");
		if (in->lock)
			return ud(v);
		return do_clflush(v, op == 7 ? 1 : 2);
	}
	switch (op) {
	case 0: case 1: case 2: case 3: case 7:
		break;
	default:
		return unknown(v, "XSAVE family not completed");
	}
	if (in->lock)
		return ud(v);
	switch (op) {
	case 0: return do_fxsave(v);
	case 1: return do_fxrstor(v);
	case 2: return do_ldst_mxcsr(v, true);
	case 3: return do_ldst_mxcsr(v, false);
	default: return do_clflush(v, 0);
	}
}

/* ---- 0F C7: CMPXCHG8B/16B, RDPID ---- */

/* The guest's LOCK semantics on the host mapping: other vCPUs access the same memory. */
static bool cas16(void *p, uint64_t *lo, uint64_t *hi, uint64_t nlo, uint64_t nhi)
{
	bool ok;
	__asm__ __volatile__("lock cmpxchg16b %1\n\tsete %0"
	                     : "=q"(ok), "+m"(*(volatile uint64_t(*)[2])p), "+a"(*lo), "+d"(*hi)
	                     : "b"(nlo), "c"(nhi)
	                     : "memory", "cc");
	return ok;
}

static bool cas8(void *p, uint64_t *old, uint64_t nval)
{
	bool ok;
	/* lock cmpxchg with a 64-bit operand: also right for unaligned (split) addresses. */
	__asm__ __volatile__("lock cmpxchgq %3, %1\n\tsete %0"
	                     : "=q"(ok), "+m"(*(volatile uint64_t *)p), "+a"(*old)
	                     : "r"(nval)
	                     : "memory", "cc");
	return ok;
}

static enum insn_result do_cmpxchg8b16b(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	bool wide = (in->rex & 8) != 0;
	struct insn_access *a;
	if (wide ? !has(v, 1, 0, ECX_, 13) : !has(v, 1, 0, EDX_, 8))
		return ud(v);
	/* Always a write for the permission checks: the CPU writes the old
	 * value back when the comparison fails.  CMPXCHG16B needs 16-byte
	 * alignment (#GP(0)). */
	TRY(memop(v, wide ? 16 : 8, ACC_WRITE, wide ? 16 : 0, &a));
	uint64_t lo, hi = 0, nlo, nhi = 0;
	if (wide) {
		lo = v->gpr[RAX];
		hi = v->gpr[RDX];
		nlo = v->gpr[RBX];
		nhi = v->gpr[RCX];
	} else {
		lo = (v->gpr[RAX] & 0xffffffffULL) | (v->gpr[RDX] << 32);
		nlo = (v->gpr[RBX] & 0xffffffffULL) | (v->gpr[RCX] << 32);
	}
	bool ok;
	void *h = a->chunk[0].hva;
	bool contiguous = h && (a->nchunks == 1 ||
	                        (a->chunk[1].hva && (uint8_t *)a->chunk[1].hva == (uint8_t *)h + a->chunk[0].len));
	if (contiguous) {
		ok = wide ? cas16(h, &lo, &hi, nlo, nhi) : cas8(h, &lo, nlo);
		if (ok)
			accessed_dirty(v, a);
	} else {
		/* MMIO, or an unaligned CMPXCHG8B across pages that are not
		 * adjacent in host memory: not atomic (no other agent can
		 * take a lock on such an operand either). */
		uint64_t cur[2] = { 0, 0 }, nv[2] = { nlo, nhi };
		if (insn_mem_read(v, a, cur))
			return INSN_ERROR;
		ok = cur[0] == lo && (!wide || cur[1] == hi);
		if (insn_mem_write(v, a, ok ? nv : cur))
			return INSN_ERROR;
		lo = cur[0];
		hi = cur[1];
	}
	if (ok) {
		v->rflags |= RF_ZF;
	} else {
		v->rflags &= ~RF_ZF;
		if (wide) {
			v->gpr[RAX] = lo;
			v->gpr[RDX] = hi;
		} else {
			gpr_set(v, RAX, 4, lo);
			gpr_set(v, RDX, 4, lo >> 32);
		}
	}
	return INSN_DONE;
}

static enum insn_result do_rdpid(struct insn_vcpu *v)
{
	uint64_t aux;
	if (!has(v, 7, 0, ECX_, 22))
		return ud(v);
	if (!v->ops->rdmsr || v->ops->rdmsr(v->opaque, 0xc0000103, &aux))   /* IA32_TSC_AUX */
		return error(v, "cannot read IA32_TSC_AUX");
	/* 64-bit register in 64-bit mode (REX.W or not), else 32-bit. */
	gpr_set(v, v->insn.rm, mode_of(v) == INSN_MODE_LONG64 ? 8 : 4, aux);
	return INSN_DONE;
}

static enum insn_result grp9(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	int op = (in->modrm >> 3) & 7;
	if (in->mod != 3 && op == 1 && !in->rep && !in->repne) {
		/* LOCK is allowed (and implied here) for CMPXCHG8B/16B. */
		return do_cmpxchg8b16b(v);
	}
	if (in->mod == 3 && op == 7 && in->last_f2f3 == 0xf3) {
		if (in->lock)
			return ud(v);
		return do_rdpid(v);
	}
	return unknown(v, "0F C7 form not completed");
}

/* ---- POPCNT, MOVBE, INVPCID ---- */

static enum insn_result do_popcnt(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	int size = in->opsize;
	uint64_t src;
	if (!has(v, 1, 0, ECX_, 23) || in->lock)
		return ud(v);
	if (in->mod == 3) {
		src = gpr_get(v, in->rm, size);
	} else {
		struct insn_access *a;
		src = 0;
		TRY(memop(v, (uint32_t)size, ACC_READ, 0, &a));
		if (insn_mem_read(v, a, &src))
			return INSN_ERROR;
	}
	gpr_set(v, in->reg, size, (uint64_t)__builtin_popcountll(src));
	v->rflags &= ~RF_ARITH;
	if (src == 0)
		v->rflags |= RF_ZF;
	return INSN_DONE;
}

static uint64_t bswap(uint64_t x, int size)
{
	switch (size) {
	case 2: return __builtin_bswap16((uint16_t)x);
	case 4: return __builtin_bswap32((uint32_t)x);
	default: return __builtin_bswap64(x);
	}
}

static enum insn_result do_movbe(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	int size = in->opsize;
	bool load = in->opcode == 0xf0;
	struct insn_access *a;
	if (!has(v, 1, 0, ECX_, 22) || in->mod == 3 || in->lock)
		return ud(v);
	TRY(memop(v, (uint32_t)size, load ? ACC_READ : ACC_WRITE, 0, &a));
	uint64_t val = 0;
	if (load) {
		if (insn_mem_read(v, a, &val))
			return INSN_ERROR;
		gpr_set(v, in->reg, size, bswap(val, size));
	} else {
		val = bswap(gpr_get(v, in->reg, size), size);
		if (insn_mem_write(v, a, &val))
			return INSN_ERROR;
	}
	return INSN_DONE;
}

/*
 * INVPCID: every check of the SDM, then nothing.  The guest's TLB is not
 * hyve's: translations live in the CPU (tagged by VPID/ASID and PCID) or
 * in KVM's shadow MMU, and userspace has no per-address or per-PCID flush
 * for a vCPU.  This layer itself caches no translation (every access walks
 * the guest's tables), so its own view is always current.  What a no-op
 * leaves out is KVM dropping stale entries early; see docs/architecture.md.
 */
static enum insn_result do_invpcid(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	struct insn_access *a;
	uint64_t desc[2];
	if (!has(v, 7, 0, EBX_, 10) || in->mod == 3 || in->lock)
		return ud(v);
	if (insn_cpl(v) > 0)
		return gp0(v);
	uint64_t type = gpr_get(v, in->reg, mode_of(v) == INSN_MODE_LONG64 ? 8 : 4);
	TRY(memop(v, 16, ACC_READ, 0, &a));
	if (insn_mem_read(v, a, desc))
		return INSN_ERROR;
	if (type > 3)
		return gp0(v);
	uint64_t pcid = desc[0] & 0xfff;
	if (type <= 1) {
		if (desc[0] & ~0xfffULL)
			return gp0(v);   /* reserved descriptor bits */
		if (pcid && !(v->sregs.cr4 & CR4_PCIDE))
			return gp0(v);
		int bits = (v->sregs.cr4 & CR4_LA57) ? 57 : 48;
		int64_t x = (int64_t)(desc[1] << (64 - bits)) >> (64 - bits);
		if (type == 0 && (uint64_t)x != desc[1])
			return gp0(v);   /* non-canonical address */
	}
	return INSN_DONE;
}

/* ---- SSE/SSE2 data moves ---- */

struct sse_form {
	bool sse2;
	uint8_t size;     /* memory operand bytes */
	bool aligned;     /* 16-byte alignment or #GP(0) */
	bool store;       /* r/m <- xmm(reg) */
	bool memonly;     /* non-temporal stores */
	bool merge;       /* MOVSS/MOVSD register form keeps the upper bytes */
	bool zero_upper;  /* register form writes size bytes, zeroes the rest */
	bool gpr;         /* the r/m operand is a general register (MOVD/MOVQ) */
};

/* The form of a 0F opcode with its mandatory prefix (0, 66, F3, F2), or false. */
static bool sse_form(const struct insn *in, struct sse_form *f)
{
	uint8_t pfx = in->last_f2f3 ? in->last_f2f3 : in->p66 ? 0x66 : 0;
	bool w = (in->rex & 8) != 0;
	memset(f, 0, sizeof(*f));
	switch (in->opcode) {
	case 0x10: case 0x11:   /* MOVUPS, MOVUPD, MOVSS, MOVSD */
		f->store = in->opcode == 0x11;
		f->sse2 = pfx == 0x66 || pfx == 0xf2;
		f->size = pfx == 0xf3 ? 4 : pfx == 0xf2 ? 8 : 16;
		f->merge = f->size < 16;
		return true;
	case 0x28: case 0x29:   /* MOVAPS, MOVAPD */
		if (pfx != 0 && pfx != 0x66)
			return false;
		f->store = in->opcode == 0x29;
		f->sse2 = pfx == 0x66;
		f->size = 16;
		f->aligned = true;
		return true;
	case 0x2b:              /* MOVNTPS, MOVNTPD */
		if (pfx != 0 && pfx != 0x66)
			return false;
		f->store = f->memonly = f->aligned = true;
		f->sse2 = pfx == 0x66;
		f->size = 16;
		return true;
	case 0x6f: case 0x7f:   /* MOVDQA, MOVDQU */
		if (pfx != 0x66 && pfx != 0xf3)
			return false;
		f->store = in->opcode == 0x7f;
		f->sse2 = true;
		f->size = 16;
		f->aligned = pfx == 0x66;
		return true;
	case 0xe7:              /* MOVNTDQ */
		if (pfx != 0x66)
			return false;
		f->sse2 = f->store = f->memonly = f->aligned = true;
		f->size = 16;
		return true;
	case 0x6e:              /* MOVD/MOVQ xmm, r/m32/64 */
		if (pfx != 0x66)
			return false;
		f->sse2 = f->gpr = true;
		f->size = w ? 8 : 4;
		return true;
	case 0x7e:
		if (pfx == 0x66) {       /* MOVD/MOVQ r/m32/64, xmm */
			f->sse2 = f->gpr = f->store = true;
			f->size = w ? 8 : 4;
			return true;
		}
		if (pfx == 0xf3) {       /* MOVQ xmm, xmm/m64 */
			f->sse2 = f->zero_upper = true;
			f->size = 8;
			return true;
		}
		return false;
	case 0xd6:              /* MOVQ xmm/m64, xmm */
		if (pfx != 0x66)
			return false;
		f->sse2 = f->store = f->zero_upper = true;
		f->size = 8;
		return true;
	default:
		return false;
	}
}

static enum insn_result sse_move(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	struct sse_form f;
	if (!sse_form(in, &f))
		return unknown(v, "MMX or SSE form not completed");
	if (in->lock)
		return ud(v);
	TRY(sse_check(v, f.sse2));
	if (f.memonly && in->mod == 3)
		return ud(v);
	struct insn_access *a = NULL;
	if (in->mod != 3)
		TRY(memop(v, f.size, f.store ? ACC_WRITE : ACC_READ, f.aligned ? 16 : 0, &a));
	uint8_t *xs = xs_get(v);
	if (!xs)
		return INSN_ERROR;

	uint8_t x[16], y[16];
	xmm_get(xs, in->reg, x);
	if (f.store) {
		if (a)
			return insn_mem_write(v, a, x) ? INSN_ERROR : INSN_DONE;
		if (f.gpr) {
			uint64_t q;
			memcpy(&q, x, 8);
			gpr_set(v, in->rm, f.size, q);
			return INSN_DONE;
		}
		/* xmm(rm) <- xmm(reg) */
		xmm_get(xs, in->rm, y);
		if (f.zero_upper)
			memset(x + f.size, 0, 16 - f.size);
		else if (f.merge)
			memcpy(x + f.size, y + f.size, 16 - f.size);
		xmm_set(v, xs, in->rm, x);
		return INSN_DONE;
	}
	/* Loads: xmm(reg) <- r/m. */
	memset(y, 0, sizeof(y));
	if (a) {
		if (insn_mem_read(v, a, y))
			return INSN_ERROR;   /* the bytes past size stay 0: loads zero-extend */
	} else if (f.gpr) {
		uint64_t q = gpr_get(v, in->rm, f.size);
		memcpy(y, &q, 8);
	} else {
		xmm_get(xs, in->rm, y);
		if (f.zero_upper)
			memset(y + f.size, 0, 16 - f.size);
		else if (f.merge)
			memcpy(y + f.size, x + f.size, 16 - f.size);
	}
	xmm_set(v, xs, in->reg, y);
	return INSN_DONE;
}

/* ---- fetch, decode, dispatch ---- */

static bool code16(enum insn_mode m)
{
	return m == INSN_MODE_REAL || m == INSN_MODE_VM86 || m == INSN_MODE_PROT16 || m == INSN_MODE_COMPAT16;
}

int insn_fetch(struct insn_vcpu *v)
{
	const struct kvm_sregs *s = &v->sregs;
	enum insn_mode mode = insn_cpu_mode(s, v->rflags);
	struct insn_event saved = v->event;
	uint64_t page = ~0ULL, gpa = 0;
	bool stopped_nonram = false;

	v->nbytes = 0;
	memset(&v->fetch_fault, 0, sizeof(v->fetch_fault));
	for (int i = 0; i < 15; i++) {
		uint64_t lin;
		if (mode == INSN_MODE_LONG64) {
			lin = v->rip + (uint64_t)i;
			int bits = (s->cr4 & CR4_LA57) ? 57 : 48;
			int64_t x = (int64_t)(lin << (64 - bits)) >> (64 - bits);
			if ((uint64_t)x != lin) {
				v->fetch_fault.valid = true;
				v->fetch_fault.vector = 13;
				v->fetch_fault.has_err = true;
				break;
			}
		} else {
			uint64_t off = (v->rip & (code16(mode) ? 0xffffULL : 0xffffffffULL)) + (uint64_t)i;
			if (off > s->cs.limit) {
				v->fetch_fault.valid = true;
				v->fetch_fault.vector = 13;
				v->fetch_fault.has_err = true;
				break;
			}
			lin = (s->cs.base + off) & 0xffffffffULL;
		}
		if ((lin & ~0xfffULL) != page) {
			int rc = insn_translate(v, lin, ACC_FETCH, &gpa);
			if (rc < 0)
				return -1;
			if (rc > 0) {
				v->fetch_fault = v->event;
				break;
			}
			page = lin & ~0xfffULL;
			gpa &= ~0xfffULL;
		}
		const uint8_t *p = v->ops->map(v->opaque, gpa | (lin & 0xfff), 1);
		if (!p) {
			stopped_nonram = true;
			break;
		}
		v->bytes[v->nbytes++] = *p;
	}
	v->event = saved;
	/* Code outside guest RAM (or not readable here): the bytes KVM gave. */
	if ((stopped_nonram || v->nbytes == 0) && v->hint && v->hint_len > v->nbytes) {
		v->nbytes = v->hint_len > 15 ? 15 : v->hint_len;
		memcpy(v->bytes, v->hint, (size_t)v->nbytes);
		memset(&v->fetch_fault, 0, sizeof(v->fetch_fault));
	}
	return 0;
}

static enum insn_result execute(struct insn_vcpu *v)
{
	const struct insn *in = &v->insn;
	if (in->vex)
		return unknown(v, "VEX/EVEX/XOP-encoded instructions are not completed");
	switch (in->map) {
	case MAP_1B:
		if (in->lock && (in->opcode == 0xcc || in->opcode == 0xcd || in->opcode == 0xce || in->opcode == 0x9b))
			return ud(v);   /* LOCK on an instruction that cannot take it */
		switch (in->opcode) {
		case 0xcc: return do_int3(v);
		case 0xcd: return do_intn(v);
		case 0xce: return do_into(v);
		case 0x9b: return do_fwait(v);
		case 0xd9: case 0xdb: case 0xdd: case 0xdf:
			if (in->lock)
				return ud(v);
			return x87_control(v);
		default: break;
		}
		break;
	case MAP_0F:
		switch (in->opcode) {
		case 0x01: return grp7(v);
		case 0xae: return grp15(v);
		case 0xc7: return grp9(v);
		case 0xb8:
			if (in->last_f2f3 == 0xf3)
				return do_popcnt(v);
			break;
		case 0x10: case 0x11: case 0x28: case 0x29: case 0x2b: case 0x6e:
		case 0x6f: case 0x7e: case 0x7f: case 0xd6: case 0xe7:
			return sse_move(v);
		default:
			break;
		}
		break;
	case MAP_0F38:
		if ((in->opcode == 0xf0 || in->opcode == 0xf1) && !in->rep && !in->repne)
			return do_movbe(v);
		if (in->opcode == 0x82 && in->p66 && !in->rep && !in->repne)
			return do_invpcid(v);
		break;
	default:
		break;
	}
	return unknown(v, "not an instruction hyve completes");
}

enum insn_result insn_complete(struct insn_vcpu *v)
{
	memset(&v->insn, 0, sizeof(v->insn));
	memset(&v->event, 0, sizeof(v->event));
	v->xsave_dirty = v->xcr0_dirty = false;
	v->nwrites = v->naccess = 0;
	v->why = NULL;

	if (insn_fetch(v))
		return INSN_ERROR;
	enum insn_mode mode = insn_cpu_mode(&v->sregs, v->rflags);
	if (v->nbytes == 0) {
		if (v->fetch_fault.valid) {
			v->event = v->fetch_fault;
			return INSN_FAULT;
		}
		return unknown(v, "instruction bytes are not in guest RAM");
	}
	switch (insn_decode(v->bytes, v->nbytes, mode, &v->insn)) {
	case INSN_DEC_OK:
		break;
	case INSN_DEC_TRUNCATED:
		if (v->fetch_fault.valid) {
			v->event = v->fetch_fault;
			return INSN_FAULT;
		}
		return unknown(v, "instruction continues outside guest RAM");
	case INSN_DEC_TOOLONG:
		return gp0(v);
	case INSN_DEC_INVALID:
		return ud(v);   /* not an instruction in this mode: what the CPU raises */
	}

	uint64_t rflags0 = v->rflags;
	uint64_t gpr0[16];
	memcpy(gpr0, v->gpr, sizeof(gpr0));
	enum insn_result r = execute(v);
	if (r == INSN_DONE) {
		uint64_t next = v->rip + v->insn.len;
		if (mode != INSN_MODE_LONG64)
			next &= code16(mode) ? 0xffffULL : 0xffffffffULL;
		v->rip = next;
		v->rflags &= ~RF_RF;   /* the instruction completed */
	} else {
		/* Belt and braces: nothing may change unless it completed. */
		v->rflags = rflags0;
		memcpy(v->gpr, gpr0, sizeof(gpr0));
		v->xsave_dirty = v->xcr0_dirty = false;
	}
	return r;
}
