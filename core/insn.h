/*
 * Instruction completion for emulating hosts: an x86 decoder
 * (core/insn_decode.c) and an executor for the instructions KVM's emulator
 * rejects (core/insn_complete.c, address translation in core/insn_mem.c).
 *
 * The layer never talks to KVM.  It works on a struct insn_vcpu: a
 * snapshot of the registers the caller fills (core/emulate.c from KVM, the
 * unit tests and the fuzz target by hand) plus callbacks for what is too
 * costly to snapshot every time (guest memory, the CPUID table, MSRs, the
 * XSAVE area, XCR0).  The caller writes back what the layer says changed.
 */
#ifndef HYVE_INSN_H
#define HYVE_INSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

/* ---- decoder ---- */

enum insn_mode {
	INSN_MODE_REAL,
	INSN_MODE_VM86,
	INSN_MODE_PROT16,
	INSN_MODE_PROT32,
	INSN_MODE_COMPAT,   /* long mode, 32-bit code segment */
	INSN_MODE_LONG64,
	INSN_MODE_COMPAT16, /* long mode, 16-bit code segment */
};
const char *insn_mode_name(enum insn_mode m);
enum insn_mode insn_cpu_mode(const struct kvm_sregs *s, uint64_t rflags);

/* Segment registers, in the hardware's encoding (ModRM.reg of MOV Sreg). */
enum { SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS, SEG_NONE = -1 };

/* Opcode maps. */
enum insn_map {
	MAP_1B,      /* one-byte opcodes */
	MAP_0F,
	MAP_0F38,
	MAP_0F3A,
	MAP_3DNOW,   /* 0F 0F modrm ... ib: the opcode is the trailing byte */
	MAP_XOP8, MAP_XOP9, MAP_XOPA,   /* AMD XOP (8F escape) */
	MAP_EVEX5, MAP_EVEX6,           /* AVX512-FP16 maps */
};

struct insn {
	uint8_t len;
	uint8_t mode;         /* enum insn_mode */
	uint8_t opsize;       /* 2, 4 or 8 */
	uint8_t addrsize;     /* 2, 4 or 8 */
	/* Legacy prefixes. */
	bool lock, rep /* F3 */, repne /* F2 */, p66, p67;
	uint8_t last_f2f3;    /* the later of F2/F3 (the mandatory prefix), 0 if none */
	int8_t seg;           /* segment override (last one wins), SEG_NONE if none */
	uint8_t rex;          /* REX byte in effect, 0 if none (VEX/EVEX/XOP: their W/R/X/B as REX) */
	/* VEX (2 or 3 byte), EVEX (4) or XOP ('x'): 0 for legacy encodings. */
	uint8_t vex;
	bool vex_w, vex_l;
	uint8_t vex_pp, vex_vvvv;
	uint8_t map;          /* enum insn_map */
	uint8_t opcode;
	/* ModRM: reg and rm include REX.R / REX.B. */
	bool has_modrm;
	uint8_t modrm, mod, reg, rm;
	/* Memory operand (mod != 3): base/index are GPR numbers or -1. */
	bool has_sib;
	uint8_t sib, scale;   /* scale 1, 2, 4, 8 */
	int8_t base, index;
	bool riprel;          /* disp is relative to the next instruction */
	int64_t disp;
	uint8_t disp_size;
	int8_t default_seg;   /* SEG_SS for RSP/RBP-based addressing, else SEG_DS */
	uint64_t imm, imm2;   /* imm2: ENTER's second and SSE4a/far pointer parts */
	uint8_t imm_size, imm2_size;
};

enum insn_decode_result {
	INSN_DEC_OK,
	INSN_DEC_TRUNCATED,   /* needs more than the n bytes given (and n < 15) */
	INSN_DEC_TOOLONG,     /* longer than 15 bytes: #GP(0) */
	INSN_DEC_INVALID,     /* not an instruction in this mode: #UD */
};
/*
 * Decode one instruction from buf[0..n).  Lengths and operand fields are
 * checked against binutils by tests/unit/test_insn.c.
 */
enum insn_decode_result insn_decode(const uint8_t *buf, int n, enum insn_mode mode, struct insn *out);
/* True if the instruction has a memory operand (ModRM with mod != 3). */
static inline bool insn_has_mem(const struct insn *in)
{
	return in->has_modrm && in->mod != 3;
}

/* ---- vCPU state ---- */

struct insn_ops {
	/* Host pointer for [gpa, gpa+len) if that is guest RAM in one mapping, else NULL. */
	void *(*map)(void *opaque, uint64_t gpa, size_t len);
	/* hyve wrote guest RAM through a map() pointer (dirty logging). */
	void (*dirtied)(void *opaque, uint64_t gpa, size_t len);
	/* 1..8 bytes of non-RAM (MMIO); 0 done, -1 fatal.  NULL: reads all ones, writes dropped. */
	int (*mmio)(void *opaque, bool write, uint64_t gpa, int len, uint64_t *val);
	/* The vCPU's CPUID leaf (EAX..EDX); false if the table has no such leaf. */
	bool (*cpuid)(void *opaque, uint32_t leaf, uint32_t sub, uint32_t out[4]);
	/* Read one MSR: 0, or -1 if the vCPU has no such MSR. */
	int (*rdmsr)(void *opaque, uint32_t msr, uint64_t *val);
	/* The XSAVE area (KVM_GET_XSAVE layout: FXSAVE64 legacy region, header
	 * at 512), fetched on first use; NULL on failure. */
	uint8_t *(*xsave)(void *opaque, size_t *len);
	/* XCR0 (KVM_GET_XCRS), fetched on first use; -1 on failure. */
	int (*xcr0)(void *opaque, uint64_t *val);
};

/* Event to deliver, set on INSN_FAULT and on INSN_DONE for traps (INT n, INT3, INTO). */
struct insn_event {
	bool valid;
	bool soft;            /* INT n: a software interrupt, not an exception */
	uint8_t vector;
	bool has_err;
	uint32_t err;
	uint64_t cr2;         /* vector 14: the faulting linear address */
};

/* A guest-physical range the layer wrote (for tests and the fuzz target). */
struct insn_write {
	uint64_t gpa;
	uint32_t len;
	bool pagetable;       /* accessed/dirty bits set by a page walk */
};

/* A memory operand as checked: linear address, size, where it landed. */
struct insn_access {
	uint64_t lin;
	uint32_t size;
	bool write;
	int nchunks;
	struct { uint64_t gpa; uint32_t len; void *hva; } chunk[2];
};

#define INSN_MAX_WRITES 64   /* A/D bits of up to 5 levels x (fetch + 4 accesses) x 2 pages, data */
#define INSN_MAX_ACCESSES 4

struct insn_vcpu {
	/* In (filled by the caller), out (as completed). */
	uint64_t gpr[16];     /* RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 */
	uint64_t rip, rflags;
	struct kvm_sregs sregs;
	const struct insn_ops *ops;
	void *opaque;
	/* Bytes KVM reported, used when CS:RIP is not readable guest RAM. */
	const uint8_t *hint;
	int hint_len;

	/* Out. */
	struct insn insn;             /* what was decoded (len 0: nothing) */
	uint8_t bytes[15];            /* fetched bytes */
	int nbytes;
	struct insn_event event;
	bool xsave_dirty;             /* the XSAVE area changed: KVM_SET_XSAVE */
	bool xcr0_dirty;              /* xcr0 changed: KVM_SET_XCRS */
	uint64_t xcr0;
	struct insn_write writes[INSN_MAX_WRITES];
	int nwrites;
	struct insn_access access[INSN_MAX_ACCESSES];
	int naccess;
	const char *why;              /* INSN_UNKNOWN / INSN_ERROR: a short reason */

	/* Private: the XSAVE area once fetched, a fetch fault to raise if needed. */
	uint8_t *xs;
	size_t xs_len;
	bool xcr0_known;
	struct insn_event fetch_fault;
};

enum insn_result {
	INSN_DONE,      /* completed, RIP advanced; deliver event if valid (a trap) */
	INSN_FAULT,     /* nothing changed; deliver event (RIP at the instruction) */
	INSN_UNKNOWN,   /* not an instruction this layer completes (why says so) */
	INSN_ERROR,     /* a callback failed (host trouble); why says which */
};

/* Fetch, decode and complete the instruction at CS:RIP. */
enum insn_result insn_complete(struct insn_vcpu *v);

/* ---- used by insn_complete.c, exported for the tests (core/insn_mem.c) ---- */

/* ACC_FLUSH: CLFLUSH & co., a read that execute-only code segments allow. */
enum insn_acc { ACC_READ, ACC_WRITE, ACC_FETCH, ACC_FLUSH };
int insn_cpl(const struct insn_vcpu *v);
/* A CPUID bit of the vCPU (reg 0..3 = EAX..EDX). */
bool insn_cpuid_bit(struct insn_vcpu *v, uint32_t leaf, uint32_t sub, int reg, int bit);
/*
 * Linear to guest-physical through the guest's page tables with the
 * permission checks of an access by the current CPL.  0, 1 with v->event
 * set to #PF (error code, CR2), or -1 (callback trouble, v->why).
 */
int insn_translate(struct insn_vcpu *v, uint64_t lin, enum insn_acc acc, uint64_t *gpa);
/*
 * Check an access of size bytes at seg:off (segment type/limit or
 * canonical form, alignment, paging) and record it in v->access[].  align:
 * the operand must be aligned to it (#GP(0)), 0 for none.  0 ok, 1 fault
 * (v->event), -1 error.
 */
int insn_mem_prepare(struct insn_vcpu *v, int seg, uint64_t off, uint32_t size, enum insn_acc acc,
                     uint32_t align, struct insn_access **out);
int insn_mem_read(struct insn_vcpu *v, const struct insn_access *a, void *buf);
int insn_mem_write(struct insn_vcpu *v, const struct insn_access *a, const void *buf);
/* Bytes [from, from+len) of a prepared access only. */
int insn_mem_write_part(struct insn_vcpu *v, const struct insn_access *a, uint32_t from, uint32_t len,
                        const void *buf);
/* Fetch up to 15 bytes at CS:RIP into v->bytes (stops at the first page that faults). */
int insn_fetch(struct insn_vcpu *v);
/* Raise an exception (INSN_FAULT). */
enum insn_result insn_fault(struct insn_vcpu *v, int vector, bool has_err, uint32_t err);

#endif
