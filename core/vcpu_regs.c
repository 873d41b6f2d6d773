/*
 * vCPU register file and guest-virtual memory access (see vcpu_regs.h).
 */
#include <errno.h>
#include <string.h>

#include "vcpu_regs.h"

#define MSR_KERNEL_GS_BASE 0xc0000102u

static const struct {
	const char *name;
	uint8_t size;
} reg_table[] = {
	{ "rax", 8 }, { "rbx", 8 }, { "rcx", 8 }, { "rdx", 8 }, { "rsi", 8 }, { "rdi", 8 }, { "rbp", 8 }, { "rsp", 8 },
	{ "r8", 8 }, { "r9", 8 }, { "r10", 8 }, { "r11", 8 }, { "r12", 8 }, { "r13", 8 }, { "r14", 8 }, { "r15", 8 },
	{ "rip", 8 }, { "eflags", 4 },
	{ "cs", 4 }, { "ss", 4 }, { "ds", 4 }, { "es", 4 }, { "fs", 4 }, { "gs", 4 },
	{ "st0", 10 }, { "st1", 10 }, { "st2", 10 }, { "st3", 10 }, { "st4", 10 }, { "st5", 10 }, { "st6", 10 }, { "st7", 10 },
	{ "fctrl", 4 }, { "fstat", 4 }, { "ftag", 4 }, { "fiseg", 4 }, { "fioff", 4 }, { "foseg", 4 }, { "fooff", 4 }, { "fop", 4 },
	{ "xmm0", 16 }, { "xmm1", 16 }, { "xmm2", 16 }, { "xmm3", 16 }, { "xmm4", 16 }, { "xmm5", 16 }, { "xmm6", 16 }, { "xmm7", 16 },
	{ "xmm8", 16 }, { "xmm9", 16 }, { "xmm10", 16 }, { "xmm11", 16 }, { "xmm12", 16 }, { "xmm13", 16 }, { "xmm14", 16 }, { "xmm15", 16 },
	{ "mxcsr", 4 },
	{ "fs_base", 8 }, { "gs_base", 8 },
	{ "cr0", 8 }, { "cr2", 8 }, { "cr3", 8 }, { "cr4", 8 }, { "cr8", 8 }, { "efer", 8 }, { "k_gs_base", 8 },
};
#define NREGS ((int)(sizeof(reg_table) / sizeof(reg_table[0])))
enum { R_EFLAGS = 17, R_SEG0 = 18, R_ST0 = 24, R_FCTRL = 32, R_XMM0 = 40, R_MXCSR = 56, R_FS_BASE = 57, R_CR0 = 59 };

/*
 * GDB's amd64 description: the core feature (GPRs, segment selectors,
 * x87), SSE, the segment bases, and a feature of our own for the control
 * registers (GDB shows them in "info registers").  The order is the
 * register numbering above.
 */
const char vcpu_target_xml[] =
	"<?xml version=\"1.0\"?>\n"
	"<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n"
	"<target version=\"1.0\">\n"
	"<architecture>i386:x86-64</architecture>\n"
	"<feature name=\"org.gnu.gdb.i386.core\">\n"
	"<flags id=\"i386_eflags\" size=\"4\">"
	"<field name=\"CF\" start=\"0\" end=\"0\"/><field name=\"PF\" start=\"2\" end=\"2\"/>"
	"<field name=\"AF\" start=\"4\" end=\"4\"/><field name=\"ZF\" start=\"6\" end=\"6\"/>"
	"<field name=\"SF\" start=\"7\" end=\"7\"/><field name=\"TF\" start=\"8\" end=\"8\"/>"
	"<field name=\"IF\" start=\"9\" end=\"9\"/><field name=\"DF\" start=\"10\" end=\"10\"/>"
	"<field name=\"OF\" start=\"11\" end=\"11\"/><field name=\"RF\" start=\"16\" end=\"16\"/>"
	"<field name=\"VM\" start=\"17\" end=\"17\"/><field name=\"AC\" start=\"18\" end=\"18\"/>"
	"<field name=\"ID\" start=\"21\" end=\"21\"/></flags>\n"
	"<reg name=\"rax\" bitsize=\"64\" type=\"int64\"/><reg name=\"rbx\" bitsize=\"64\" type=\"int64\"/>\n"
	"<reg name=\"rcx\" bitsize=\"64\" type=\"int64\"/><reg name=\"rdx\" bitsize=\"64\" type=\"int64\"/>\n"
	"<reg name=\"rsi\" bitsize=\"64\" type=\"int64\"/><reg name=\"rdi\" bitsize=\"64\" type=\"int64\"/>\n"
	"<reg name=\"rbp\" bitsize=\"64\" type=\"data_ptr\"/><reg name=\"rsp\" bitsize=\"64\" type=\"data_ptr\"/>\n"
	"<reg name=\"r8\" bitsize=\"64\" type=\"int64\"/><reg name=\"r9\" bitsize=\"64\" type=\"int64\"/>\n"
	"<reg name=\"r10\" bitsize=\"64\" type=\"int64\"/><reg name=\"r11\" bitsize=\"64\" type=\"int64\"/>\n"
	"<reg name=\"r12\" bitsize=\"64\" type=\"int64\"/><reg name=\"r13\" bitsize=\"64\" type=\"int64\"/>\n"
	"<reg name=\"r14\" bitsize=\"64\" type=\"int64\"/><reg name=\"r15\" bitsize=\"64\" type=\"int64\"/>\n"
	"<reg name=\"rip\" bitsize=\"64\" type=\"code_ptr\"/><reg name=\"eflags\" bitsize=\"32\" type=\"i386_eflags\"/>\n"
	"<reg name=\"cs\" bitsize=\"32\" type=\"int32\"/><reg name=\"ss\" bitsize=\"32\" type=\"int32\"/>\n"
	"<reg name=\"ds\" bitsize=\"32\" type=\"int32\"/><reg name=\"es\" bitsize=\"32\" type=\"int32\"/>\n"
	"<reg name=\"fs\" bitsize=\"32\" type=\"int32\"/><reg name=\"gs\" bitsize=\"32\" type=\"int32\"/>\n"
	"<reg name=\"st0\" bitsize=\"80\" type=\"i387_ext\"/><reg name=\"st1\" bitsize=\"80\" type=\"i387_ext\"/>\n"
	"<reg name=\"st2\" bitsize=\"80\" type=\"i387_ext\"/><reg name=\"st3\" bitsize=\"80\" type=\"i387_ext\"/>\n"
	"<reg name=\"st4\" bitsize=\"80\" type=\"i387_ext\"/><reg name=\"st5\" bitsize=\"80\" type=\"i387_ext\"/>\n"
	"<reg name=\"st6\" bitsize=\"80\" type=\"i387_ext\"/><reg name=\"st7\" bitsize=\"80\" type=\"i387_ext\"/>\n"
	"<reg name=\"fctrl\" bitsize=\"32\" type=\"int\" group=\"float\"/><reg name=\"fstat\" bitsize=\"32\" type=\"int\" group=\"float\"/>\n"
	"<reg name=\"ftag\" bitsize=\"32\" type=\"int\" group=\"float\"/><reg name=\"fiseg\" bitsize=\"32\" type=\"int\" group=\"float\"/>\n"
	"<reg name=\"fioff\" bitsize=\"32\" type=\"int\" group=\"float\"/><reg name=\"foseg\" bitsize=\"32\" type=\"int\" group=\"float\"/>\n"
	"<reg name=\"fooff\" bitsize=\"32\" type=\"int\" group=\"float\"/><reg name=\"fop\" bitsize=\"32\" type=\"int\" group=\"float\"/>\n"
	"</feature>\n"
	"<feature name=\"org.gnu.gdb.i386.sse\">\n"
	"<vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>\n"
	"<vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/><vector id=\"v16i8\" type=\"int8\" count=\"16\"/>\n"
	"<vector id=\"v8i16\" type=\"int16\" count=\"8\"/><vector id=\"v4i32\" type=\"int32\" count=\"4\"/>\n"
	"<vector id=\"v2i64\" type=\"int64\" count=\"2\"/>\n"
	"<union id=\"vec128\"><field name=\"v4_float\" type=\"v4f\"/><field name=\"v2_double\" type=\"v2d\"/>"
	"<field name=\"v16_int8\" type=\"v16i8\"/><field name=\"v8_int16\" type=\"v8i16\"/>"
	"<field name=\"v4_int32\" type=\"v4i32\"/><field name=\"v2_int64\" type=\"v2i64\"/>"
	"<field name=\"uint128\" type=\"uint128\"/></union>\n"
	"<flags id=\"i386_mxcsr\" size=\"4\">"
	"<field name=\"IE\" start=\"0\" end=\"0\"/><field name=\"DE\" start=\"1\" end=\"1\"/>"
	"<field name=\"ZE\" start=\"2\" end=\"2\"/><field name=\"OE\" start=\"3\" end=\"3\"/>"
	"<field name=\"UE\" start=\"4\" end=\"4\"/><field name=\"PE\" start=\"5\" end=\"5\"/>"
	"<field name=\"DAZ\" start=\"6\" end=\"6\"/><field name=\"IM\" start=\"7\" end=\"7\"/>"
	"<field name=\"DM\" start=\"8\" end=\"8\"/><field name=\"ZM\" start=\"9\" end=\"9\"/>"
	"<field name=\"OM\" start=\"10\" end=\"10\"/><field name=\"UM\" start=\"11\" end=\"11\"/>"
	"<field name=\"PM\" start=\"12\" end=\"12\"/><field name=\"FZ\" start=\"15\" end=\"15\"/></flags>\n"
	"<reg name=\"xmm0\" bitsize=\"128\" type=\"vec128\"/><reg name=\"xmm1\" bitsize=\"128\" type=\"vec128\"/>\n"
	"<reg name=\"xmm2\" bitsize=\"128\" type=\"vec128\"/><reg name=\"xmm3\" bitsize=\"128\" type=\"vec128\"/>\n"
	"<reg name=\"xmm4\" bitsize=\"128\" type=\"vec128\"/><reg name=\"xmm5\" bitsize=\"128\" type=\"vec128\"/>\n"
	"<reg name=\"xmm6\" bitsize=\"128\" type=\"vec128\"/><reg name=\"xmm7\" bitsize=\"128\" type=\"vec128\"/>\n"
	"<reg name=\"xmm8\" bitsize=\"128\" type=\"vec128\"/><reg name=\"xmm9\" bitsize=\"128\" type=\"vec128\"/>\n"
	"<reg name=\"xmm10\" bitsize=\"128\" type=\"vec128\"/><reg name=\"xmm11\" bitsize=\"128\" type=\"vec128\"/>\n"
	"<reg name=\"xmm12\" bitsize=\"128\" type=\"vec128\"/><reg name=\"xmm13\" bitsize=\"128\" type=\"vec128\"/>\n"
	"<reg name=\"xmm14\" bitsize=\"128\" type=\"vec128\"/><reg name=\"xmm15\" bitsize=\"128\" type=\"vec128\"/>\n"
	"<reg name=\"mxcsr\" bitsize=\"32\" type=\"i386_mxcsr\" group=\"vector\"/>\n"
	"</feature>\n"
	"<feature name=\"org.gnu.gdb.i386.segments\">\n"
	"<reg name=\"fs_base\" bitsize=\"64\" type=\"int\"/><reg name=\"gs_base\" bitsize=\"64\" type=\"int\"/>\n"
	"</feature>\n"
	"<feature name=\"org.hyve.x86.control\">\n"
	"<reg name=\"cr0\" bitsize=\"64\" type=\"uint64\" group=\"system\"/><reg name=\"cr2\" bitsize=\"64\" type=\"uint64\" group=\"system\"/>\n"
	"<reg name=\"cr3\" bitsize=\"64\" type=\"uint64\" group=\"system\"/><reg name=\"cr4\" bitsize=\"64\" type=\"uint64\" group=\"system\"/>\n"
	"<reg name=\"cr8\" bitsize=\"64\" type=\"uint64\" group=\"system\"/><reg name=\"efer\" bitsize=\"64\" type=\"uint64\" group=\"system\"/>\n"
	"<reg name=\"k_gs_base\" bitsize=\"64\" type=\"uint64\" group=\"system\"/>\n"
	"</feature>\n"
	"</target>\n";

int vcpu_regfile_read(struct vcpu *vcpu, struct vcpu_regfile *rf)
{
	memset(rf, 0, sizeof(*rf));
	if (vcpu_get_regs(vcpu, &rf->regs) || vcpu_get_sregs(vcpu, &rf->sregs))
		return -1;
	rf->have_fpu = vcpu_get_fpu(vcpu, &rf->fpu) == 0;
	uint32_t idx = MSR_KERNEL_GS_BASE;
	bool ok = false;
	rf->have_kgs = vcpu_get_msrs(vcpu, &idx, &rf->kernel_gs_base, &ok, 1) == 0 && ok;
	return 0;
}

int vcpu_regfile_write(struct vcpu *vcpu, struct vcpu_regfile *rf)
{
	if ((rf->dirty & VCPU_REGS_SREG) && vcpu_set_sregs(vcpu, &rf->sregs))
		return -1;
	if ((rf->dirty & VCPU_REGS_GPR) && vcpu_set_regs(vcpu, &rf->regs))
		return -1;
	if ((rf->dirty & VCPU_REGS_FPU) && vcpu_set_fpu(vcpu, &rf->fpu))
		return -1;
	if (rf->dirty & VCPU_REGS_KGS) {
		uint32_t idx = MSR_KERNEL_GS_BASE;
		if (vcpu_set_msrs(vcpu, &idx, &rf->kernel_gs_base, 1) != 1) {
			errno = EINVAL;
			return -1;
		}
	}
	rf->dirty = 0;
	return 0;
}

int vcpu_reg_count(void) { return NREGS; }

const char *vcpu_reg_name(int n)
{
	return n >= 0 && n < NREGS ? reg_table[n].name : NULL;
}

int vcpu_reg_size(int n)
{
	return n >= 0 && n < NREGS ? reg_table[n].size : 0;
}

int vcpu_reg_lookup(const char *name)
{
	static const struct { const char *alias, *name; } aliases[] = {
		{ "rflags", "eflags" }, { "fsbase", "fs_base" }, { "gsbase", "gs_base" },
		{ "fs-base", "fs_base" }, { "gs-base", "gs_base" }, { "kgsbase", "k_gs_base" },
	};
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (strcmp(name, aliases[i].alias) == 0)
			name = aliases[i].name;
	for (int n = 0; n < NREGS; n++)
		if (strcmp(name, reg_table[n].name) == 0)
			return n;
	return -1;
}

static __u64 *gpr(struct kvm_regs *r, int n)
{
	/* GDB's order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15. */
	__u64 *const map[16] = { &r->rax, &r->rbx, &r->rcx, &r->rdx, &r->rsi, &r->rdi, &r->rbp, &r->rsp,
	                         &r->r8, &r->r9, &r->r10, &r->r11, &r->r12, &r->r13, &r->r14, &r->r15 };
	return map[n];
}

static struct kvm_segment *seg(struct kvm_sregs *s, int n)
{
	struct kvm_segment *const map[6] = { &s->cs, &s->ss, &s->ds, &s->es, &s->fs, &s->gs };
	return map[n];
}

/* fs_base .. k_gs_base, by register number. */
static uint64_t *sysreg(struct vcpu_regfile *rf, int n)
{
	switch (n) {
	case R_FS_BASE: return (uint64_t *)&rf->sregs.fs.base;
	case R_FS_BASE + 1: return (uint64_t *)&rf->sregs.gs.base;
	case R_CR0: return (uint64_t *)&rf->sregs.cr0;
	case R_CR0 + 1: return (uint64_t *)&rf->sregs.cr2;
	case R_CR0 + 2: return (uint64_t *)&rf->sregs.cr3;
	case R_CR0 + 3: return (uint64_t *)&rf->sregs.cr4;
	case R_CR0 + 4: return (uint64_t *)&rf->sregs.cr8;
	case R_CR0 + 5: return (uint64_t *)&rf->sregs.efer;
	default: return &rf->kernel_gs_base;
	}
}

/* The full x87 tag word from FXSAVE's abridged one (SDM "FXSAVE"): per physical register. */
static uint32_t full_tag(const struct kvm_fpu *f)
{
	int top = (f->fsw >> 11) & 7;
	uint32_t tag = 0;
	for (int i = 0; i < 8; i++) {
		uint32_t t = 3;   /* empty */
		if (f->ftwx & (1u << i)) {
			const uint8_t *st = f->fpr[(i - top) & 7];
			uint64_t mant;
			memcpy(&mant, st, 8);
			unsigned exp = (st[8] | st[9] << 8) & 0x7fff;
			if (exp == 0x7fff)
				t = 2;
			else if (exp == 0)
				t = mant ? 2 : 1;
			else
				t = (mant >> 63) ? 0 : 2;
		}
		tag |= t << (2 * i);
	}
	return tag;
}

void vcpu_reg_put_le(uint8_t *val, uint64_t v, int size)
{
	for (int i = 0; i < size; i++)
		val[i] = (uint8_t)(v >> (8 * i));
}

uint64_t vcpu_reg_get_le(const uint8_t *val, int size)
{
	uint64_t v = 0;
	for (int i = 0; i < size; i++)
		v |= (uint64_t)val[i] << (8 * i);
	return v;
}

int vcpu_reg_get(struct vcpu_regfile *rf, int n, uint8_t *val)
{
	int size = vcpu_reg_size(n);
	if (size == 0)
		return -1;
	const struct kvm_fpu *f = &rf->fpu;
	if (n < 16)
		vcpu_reg_put_le(val, *gpr(&rf->regs, n), 8);
	else if (n == VCPU_REG_RIP)
		vcpu_reg_put_le(val, rf->regs.rip, 8);
	else if (n == R_EFLAGS)
		vcpu_reg_put_le(val, rf->regs.rflags, 4);
	else if (n < R_ST0)
		vcpu_reg_put_le(val, seg(&rf->sregs, n - R_SEG0)->selector, 4);
	else if (n < R_FS_BASE && !rf->have_fpu)
		return -1;
	else if (n < R_FCTRL)
		memcpy(val, f->fpr[n - R_ST0], 10);
	else if (n < R_XMM0) {
		uint64_t v[8] = { f->fcw, f->fsw, full_tag(f), (f->last_ip >> 32) & 0xffff, (uint32_t)f->last_ip,
		                  (f->last_dp >> 32) & 0xffff, (uint32_t)f->last_dp, f->last_opcode };
		vcpu_reg_put_le(val, v[n - R_FCTRL], 4);
	} else if (n < R_MXCSR)
		memcpy(val, f->xmm[n - R_XMM0], 16);
	else if (n == R_MXCSR)
		vcpu_reg_put_le(val, f->mxcsr, 4);
	else if (n == NREGS - 1 && !rf->have_kgs)
		return -1;
	else
		vcpu_reg_put_le(val, *sysreg(rf, n), 8);
	return size;
}

int vcpu_reg_set(struct vcpu_regfile *rf, int n, const uint8_t *val)
{
	int size = vcpu_reg_size(n);
	if (size == 0) {
		errno = EINVAL;
		return -1;
	}
	uint64_t v = size <= 8 ? vcpu_reg_get_le(val, size) : 0;
	struct kvm_fpu *f = &rf->fpu;
	if (n <= VCPU_REG_RIP) {
		if (n < 16)
			*gpr(&rf->regs, n) = v;
		else
			rf->regs.rip = v;
		rf->dirty |= VCPU_REGS_GPR;
	} else if (n == R_EFLAGS) {
		rf->regs.rflags = (rf->regs.rflags & ~0xffffffffULL) | v | 2;   /* bit 1 is always set */
		rf->dirty |= VCPU_REGS_GPR;
	} else if (n < R_ST0) {
		struct kvm_segment *s = seg(&rf->sregs, n - R_SEG0);
		if (v == s->selector)
			return 0;
		/* Only where a selector alone defines the segment (real and
		 * virtual-8086 mode); elsewhere the descriptor would be stale. */
		if (v > 0xffff || ((rf->sregs.cr0 & 1) && !(rf->regs.rflags & (1u << 17)))) {
			errno = EINVAL;
			return -1;
		}
		s->selector = (uint16_t)v;
		s->base = v << 4;
		rf->dirty |= VCPU_REGS_SREG;
	} else if (n < R_FS_BASE) {
		if (!rf->have_fpu) {
			errno = EINVAL;
			return -1;
		}
		if (n < R_FCTRL) {
			memcpy(f->fpr[n - R_ST0], val, 10);
		} else if (n < R_XMM0) {
			switch (n - R_FCTRL) {
			case 0: f->fcw = (uint16_t)v; break;
			case 1: f->fsw = (uint16_t)v; break;
			case 2:
				f->ftwx = 0;
				for (int i = 0; i < 8; i++)
					if (((v >> (2 * i)) & 3) != 3)
						f->ftwx |= (uint8_t)(1u << i);
				break;
			case 3: f->last_ip = (f->last_ip & 0xffffffffULL) | (v & 0xffff) << 32; break;
			case 4: f->last_ip = (f->last_ip & ~0xffffffffULL) | (uint32_t)v; break;
			case 5: f->last_dp = (f->last_dp & 0xffffffffULL) | (v & 0xffff) << 32; break;
			case 6: f->last_dp = (f->last_dp & ~0xffffffffULL) | (uint32_t)v; break;
			default: f->last_opcode = (uint16_t)v; break;
			}
		} else if (n < R_MXCSR) {
			memcpy(f->xmm[n - R_XMM0], val, 16);
		} else {
			f->mxcsr = (uint32_t)v;
		}
		rf->dirty |= VCPU_REGS_FPU;
	} else if (n == NREGS - 1) {
		if (!rf->have_kgs) {
			errno = EINVAL;
			return -1;
		}
		rf->kernel_gs_base = v;
		rf->dirty |= VCPU_REGS_KGS;
	} else {
		*sysreg(rf, n) = v;
		rf->dirty |= VCPU_REGS_SREG;
	}
	return 0;
}

static size_t mem_access(struct vcpu *vcpu, uint64_t addr, uint8_t *buf, size_t len, bool write)
{
	struct vmctx *ctx = vcpu_ctx(vcpu);
	size_t done = 0;
	while (done < len) {
		uint64_t lin = addr + done, gpa;
		size_t chunk = 4096 - (size_t)(lin & 4095);
		if (chunk > len - done)
			chunk = len - done;
		if (vcpu_translate(vcpu, lin, &gpa))
			break;
		void *p = vm_map_gpa(ctx, gpa, chunk);
		if (!p)
			break;
		if (write) {
			memcpy(p, buf + done, chunk);
			vm_mark_dirty(ctx, gpa, chunk);
		} else {
			memcpy(buf + done, p, chunk);
		}
		done += chunk;
	}
	return done;
}

size_t vcpu_mem_read(struct vcpu *vcpu, uint64_t addr, void *buf, size_t len)
{
	return mem_access(vcpu, addr, buf, len, false);
}

size_t vcpu_mem_write(struct vcpu *vcpu, uint64_t addr, const void *buf, size_t len)
{
	return mem_access(vcpu, addr, (uint8_t *)buf, len, true);
}
