/*
 * Userspace completion of instructions that the host KVM's emulator
 * rejects.  Only used on emulating hosts (PVM), where every guest CPL0
 * instruction goes through KVM's emulator and it gives up on a few that
 * ordinary guests execute: INT3 / INT n / INTO, FWAIT, POPCNT, CLAC/STAC
 * and LDMXCSR/STMXCSR (Linux's kernel_fpu_begin() loads MXCSR even when the
 * code that follows avoids SSE).  On
 * VT-x/SVM hosts these never reach userspace.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "vm.h"

enum cpu_mode { MODE_REAL, MODE_PROT16, MODE_PROT32, MODE_LONG64, MODE_COMPAT };

static const char *const mode_names[] = { "real", "protected 16-bit", "protected 32-bit",
                                          "64-bit", "compatibility" };

static enum cpu_mode cpu_mode(const struct kvm_sregs *s)
{
	if (!(s->cr0 & 1))
		return MODE_REAL;
	if (s->efer & 0x400)  /* LMA */
		return s->cs.l ? MODE_LONG64 : MODE_COMPAT;
	return s->cs.db ? MODE_PROT32 : MODE_PROT16;
}

/*
 * Guest-virtual to guest-physical by walking the guest's page tables.
 * Handles no paging, 32-bit, PAE and 4-level paging with large pages.
 */
static int gva_to_gpa(struct vmctx *ctx, const struct kvm_sregs *s, uint64_t gva, uint64_t *gpa)
{
	if (!(s->cr0 & 0x80000000u)) {
		*gpa = gva & 0xffffffffu;
		return 0;
	}
	if (!(s->cr4 & 0x20)) {   /* 32-bit paging */
		uint32_t pde, pte;
		uint64_t a = (s->cr3 & ~0xfffULL) + ((gva >> 22) & 0x3ff) * 4;
		if (vm_copy_from_guest(ctx, a, &pde, 4) || !(pde & 1))
			return -1;
		if ((pde & 0x80) && (s->cr4 & 0x10)) {
			*gpa = (pde & 0xffc00000u) | (gva & 0x3fffff);
			return 0;
		}
		a = (pde & ~0xfffu) + ((gva >> 12) & 0x3ff) * 4;
		if (vm_copy_from_guest(ctx, a, &pte, 4) || !(pte & 1))
			return -1;
		*gpa = (pte & ~0xfffu) | (gva & 0xfff);
		return 0;
	}
	int levels = (s->efer & 0x400) ? 4 : 3;
	uint64_t table = levels == 4 ? (s->cr3 & 0x000ffffffffff000ULL) : (s->cr3 & 0xffffffe0u);
	for (int lvl = levels; lvl >= 1; lvl--) {
		int shift = 12 + 9 * (lvl - 1);
		uint64_t idx = lvl == 3 && levels == 3 ? (gva >> 30) & 3 : (gva >> shift) & 0x1ff;
		uint64_t e;
		if (vm_copy_from_guest(ctx, table + idx * 8, &e, 8) || !(e & 1))
			return -1;
		uint64_t addr = e & 0x000ffffffffff000ULL;
		if (lvl == 1 || (lvl <= 3 && (e & 0x80) && !(lvl == 3 && levels == 3))) {
			uint64_t mask = (1ULL << shift) - 1;
			*gpa = (addr & ~mask) | (gva & mask);
			return 0;
		}
		table = addr;
	}
	return -1;
}

/* Read up to 15 instruction bytes at CS:RIP, stopping at unmapped pages. */
static int fetch_insn(struct vcpu *vcpu, const struct kvm_regs *r, const struct kvm_sregs *s,
                      uint8_t *buf)
{
	uint64_t lin = r->rip + (cpu_mode(s) == MODE_LONG64 ? 0 : s->cs.base);
	int n = 0;
	while (n < 15) {
		uint64_t gpa;
		if (gva_to_gpa(vcpu_ctx(vcpu), s, lin + (uint64_t)n, &gpa))
			break;
		if (vm_copy_from_guest(vcpu_ctx(vcpu), gpa, &buf[n], 1))
			break;
		n++;
	}
	return n;
}

void vcpu_report_failure(struct vcpu *vcpu, const char *what, const struct vm_exit *vme)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	uint8_t insn[15];
	int n = 0;
	char bytes[64] = "";

	if (vcpu_get_regs(vcpu, &r) || vcpu_get_sregs(vcpu, &s)) {
		log_err("vcpu%d: %s (exit reason %u); registers unavailable", vcpu_id(vcpu), what,
		        vme->kvm_reason);
		return;
	}
	if (vme->exitcode == VM_EXITCODE_EMUL_FAIL && vme->u.emul.insn_len) {
		n = vme->u.emul.insn_len;
		memcpy(insn, vme->u.emul.insn, (size_t)n);
	} else {
		n = fetch_insn(vcpu, &r, &s, insn);
	}
	for (int i = 0; i < n; i++)
		snprintf(bytes + 3 * i, sizeof(bytes) - 3 * (size_t)i, "%02x ", insn[i]);
	log_err("vcpu%d: %s (exit reason %u): rip 0x%llx cpl %d mode %s insn [%s]", vcpu_id(vcpu),
	        what, vme->kvm_reason, (unsigned long long)r.rip, s.cs.selector & 3,
	        mode_names[cpu_mode(&s)], n ? bytes : "unreadable");
}

static __u64 *gpr(struct kvm_regs *r, int n)
{
	__u64 *const regs[16] = { &r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp,
	                             &r->rsi, &r->rdi, &r->r8,  &r->r9,  &r->r10, &r->r11,
	                             &r->r12, &r->r13, &r->r14, &r->r15 };
	return regs[n & 15];
}

#define RFLAGS_CF 0x0001
#define RFLAGS_PF 0x0004
#define RFLAGS_AF 0x0010
#define RFLAGS_ZF 0x0040
#define RFLAGS_SF 0x0080
#define RFLAGS_OF 0x0800
#define RFLAGS_AC 0x40000

/* POPCNT r, r/m with a register source (F3 [66] [REX] 0F B8 /r, mod=11). */
static int emulate_popcnt(struct kvm_regs *r, int opsize, int rex, uint8_t modrm)
{
	if ((modrm >> 6) != 3)
		return -1;
	int reg = ((modrm >> 3) & 7) | ((rex & 4) ? 8 : 0);
	int rm = (modrm & 7) | ((rex & 1) ? 8 : 0);
	uint64_t src = *gpr(r, rm);
	if (opsize == 2)
		src &= 0xffff;
	else if (opsize == 4)
		src &= 0xffffffffu;
	uint64_t cnt = (uint64_t)__builtin_popcountll(src);
	__u64 *dst = gpr(r, reg);
	if (opsize == 2)
		*dst = (*dst & ~0xffffULL) | cnt;
	else
		*dst = cnt;   /* 32-bit writes zero-extend */
	r->rflags &= ~(uint64_t)(RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF);
	if (src == 0)
		r->rflags |= RFLAGS_ZF;
	return 0;
}

/*
 * Effective address of a ModRM memory operand in 64-bit mode (p points at
 * the ModRM byte).  Returns the bytes used by ModRM/SIB/displacement, or
 * -1 for a register operand or truncated bytes.  *riprel says the address
 * is relative to the end of the instruction (the caller adds it).
 */
static int modrm_ea64(const uint8_t *p, int n, int rex, struct kvm_regs *r, uint64_t *ea, bool *riprel)
{
	if (n < 1)
		return -1;
	int mod = p[0] >> 6, rm = p[0] & 7, used = 1;
	uint64_t addr = 0;
	*riprel = false;
	if (mod == 3)
		return -1;
	if (rm == 4) {   /* SIB */
		if (n < 2)
			return -1;
		uint8_t sib = p[1];
		used = 2;
		int scale = sib >> 6, index = ((sib >> 3) & 7) | ((rex & 2) ? 8 : 0), base = sib & 7;
		if (index != 4)
			addr += *gpr(r, index) << scale;
		if (base == 5 && mod == 0) {
			if (n < used + 4)
				return -1;
			int32_t d;
			memcpy(&d, p + used, 4);
			*ea = addr + (uint64_t)(int64_t)d;   /* no base register */
			return used + 4;
		}
		addr += *gpr(r, base | ((rex & 1) ? 8 : 0));
	} else if (rm == 5 && mod == 0) {
		if (n < 5)
			return -1;
		int32_t d;
		memcpy(&d, p + 1, 4);
		*riprel = true;
		*ea = (uint64_t)(int64_t)d;
		return 5;
	} else {
		addr = *gpr(r, rm | ((rex & 1) ? 8 : 0));
	}
	if (mod == 1) {
		if (n < used + 1)
			return -1;
		addr += (uint64_t)(int64_t)(int8_t)p[used];
		used += 1;
	} else if (mod == 2) {
		if (n < used + 4)
			return -1;
		int32_t d;
		memcpy(&d, p + used, 4);
		addr += (uint64_t)(int64_t)d;
		used += 4;
	}
	*ea = addr;
	return used;
}

/* Copy guest-virtual memory byte by byte (operands may cross a page). */
static int gva_access(struct vcpu *vcpu, const struct kvm_sregs *s, uint64_t gva, void *buf, int len, bool write)
{
	for (int k = 0; k < len; k++) {
		uint64_t gpa;
		if (gva_to_gpa(vcpu_ctx(vcpu), s, gva + (uint64_t)k, &gpa))
			return -1;
		int rc = write ? vm_copy_to_guest(vcpu_ctx(vcpu), gpa, (uint8_t *)buf + k, 1)
		               : vm_copy_from_guest(vcpu_ctx(vcpu), gpa, (uint8_t *)buf + k, 1);
		if (rc)
			return -1;
	}
	return 0;
}

/* LDMXCSR m32 / STMXCSR m32 (0F AE /2, /3) in 64-bit mode. */
static int emulate_mxcsr(struct vcpu *vcpu, struct kvm_regs *r, const struct kvm_sregs *s, const uint8_t *insn,
                         int i, int n, int rex, uint64_t segbase)
{
	uint64_t ea;
	bool riprel;
	int op = (insn[i + 2] >> 3) & 7;
	int used = modrm_ea64(insn + i + 2, n - i - 2, rex, r, &ea, &riprel);
	if (used < 0)
		return -1;
	uint64_t next = r->rip + (uint64_t)(i + 2 + used);
	ea = (riprel ? next + ea : ea) + segbase;
	/* The CPU's own checks first: no SSE state enabled means #UD, TS means #NM. */
	if (!(s->cr4 & 0x200) || (s->cr0 & 0x4))
		return vcpu_inject_exception(vcpu, 6, false, 0);
	if (s->cr0 & 0x8)
		return vcpu_inject_exception(vcpu, 7, false, 0);
	/* MXCSR lives at byte 24 of the (FXSAVE-layout) legacy XSAVE region. */
	struct kvm_xsave xs;
	if (vcpu_xsave_size(vcpu) != sizeof(xs) || vcpu_get_xsave(vcpu, &xs))
		return -1;
	uint32_t v;
	if (op == 2) {
		if (gva_access(vcpu, s, ea, &v, 4, false))
			return -1;
		if (v & ~0xffffu)   /* reserved bits: #GP(0), as the CPU would */
			return vcpu_inject_exception(vcpu, 13, true, 0);
		memcpy((uint8_t *)xs.region + 24, &v, 4);
		/*
		 * The kernel takes MXCSR from the legacy area only when XSTATE_BV
		 * (byte 512) marks SSE state present; while SSE is in its init
		 * state the bit is clear and the new value would be dropped.  The
		 * XMM registers in the area are then loaded too: they hold the
		 * current (or init, all-zero) values, so that changes nothing.
		 */
		xs.region[512 / 4] |= 0x2;
		if (vcpu_set_xsave(vcpu, &xs))
			return -1;
	} else {
		memcpy(&v, (uint8_t *)xs.region + 24, 4);
		if (gva_access(vcpu, s, ea, &v, 4, true))
			return -1;
	}
	r->rip = next;
	return vcpu_set_regs(vcpu, r);
}

int emulate_fallback(struct vcpu *vcpu, const struct vm_exit *vme)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	uint8_t insn[15];
	int n;

	if (vcpu_get_regs(vcpu, &r) || vcpu_get_sregs(vcpu, &s))
		goto fail;
	/* Decode from guest memory: KVM's copy may be absent or partial. */
	n = fetch_insn(vcpu, &r, &s, insn);
	if (n == 0)
		goto fail;
	enum cpu_mode mode = cpu_mode(&s);
	int i = 0, opsize = mode == MODE_PROT16 || mode == MODE_REAL ? 2 : 4, rex = 0;
	bool rep = false, other_prefix = false;
	uint64_t segbase = 0;

	/* Legacy prefixes, then REX (64-bit mode only, must be last). */
	for (; i < n; i++) {
		uint8_t b = insn[i];
		if (b == 0x66)
			opsize = opsize == 2 ? 4 : 2, other_prefix = true;
		else if (b == 0xf3)
			rep = true;
		else if (b == 0x64 || b == 0x65)   /* FS/GS: the only bases long mode keeps */
			segbase = b == 0x64 ? s.fs.base : s.gs.base;
		else if (b == 0xf2 || b == 0xf0 || b == 0x67 || b == 0x2e || b == 0x36 ||
		         b == 0x3e || b == 0x26)
			other_prefix = true;
		else
			break;
	}
	if (mode == MODE_LONG64 && i < n && (insn[i] & 0xf0) == 0x40) {
		rex = insn[i++];
		if (rex & 8)
			opsize = 8;
	}
	if (i >= n)
		goto fail;

	switch (insn[i]) {
	case 0xcc:   /* INT3: a trap, so RIP points past it when #BP is delivered */
		r.rip += (uint64_t)i + 1;
		if (vcpu_set_regs(vcpu, &r) || vcpu_inject_exception(vcpu, 3, false, 0))
			goto fail;
		return 0;
	case 0xcd:   /* INT n */
		if (i + 1 >= n)
			goto fail;
		r.rip += (uint64_t)i + 2;
		if (vcpu_set_regs(vcpu, &r) || vcpu_inject_soft_interrupt(vcpu, insn[i + 1]))
			goto fail;
		return 0;
	case 0xce:   /* INTO: #UD in 64-bit mode, else #OF if OF is set */
		if (mode == MODE_LONG64) {
			if (vcpu_inject_exception(vcpu, 6, false, 0))
				goto fail;
			return 0;
		}
		r.rip += (uint64_t)i + 1;
		if (vcpu_set_regs(vcpu, &r))
			goto fail;
		if ((r.rflags & RFLAGS_OF) && vcpu_inject_exception(vcpu, 4, false, 0))
			goto fail;
		return 0;
	case 0x9b:   /* FWAIT: no x87 exceptions are ever pending for our guests */
		r.rip += (uint64_t)i + 1;
		if (vcpu_set_regs(vcpu, &r))
			goto fail;
		return 0;
	case 0x0f:
		/* CLAC / STAC: clear / set RFLAGS.AC (SMAP user-access window). */
		if (i + 2 < n && insn[i + 1] == 0x01 && (insn[i + 2] == 0xca || insn[i + 2] == 0xcb)) {
			if (insn[i + 2] == 0xca)
				r.rflags &= ~(uint64_t)RFLAGS_AC;
			else
				r.rflags |= RFLAGS_AC;
			r.rip += (uint64_t)i + 3;
			if (vcpu_set_regs(vcpu, &r))
				goto fail;
			return 0;
		}
		if (i + 2 < n && insn[i + 1] == 0xae && mode == MODE_LONG64 && !rep && !other_prefix &&
		    (((insn[i + 2] >> 3) & 7) == 2 || ((insn[i + 2] >> 3) & 7) == 3) && (insn[i + 2] >> 6) != 3) {
			if (emulate_mxcsr(vcpu, &r, &s, insn, i, n, rex, segbase))
				goto fail;
			return 0;
		}
		if (rep && i + 2 < n && insn[i + 1] == 0xb8) {
			if (emulate_popcnt(&r, opsize, rex, insn[i + 2]))
				break;
			r.rip += (uint64_t)i + 3;
			if (vcpu_set_regs(vcpu, &r))
				goto fail;
			return 0;
		}
		break;
	default:
		break;
	}
fail:
	vcpu_report_failure(vcpu, "instruction not emulated", vme);
	return -1;
}
