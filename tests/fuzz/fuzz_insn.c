/*
 * libFuzzer target for the instruction completion layer (core/insn*.c):
 * random instruction bytes, random register state (mode, CPL, control
 * registers, segments, GPRs, flags, CPUID bits, XCR0, the XSAVE area) and
 * a small guest memory whose page tables the input may corrupt.
 *
 *   clang-14 -std=c11 -D_GNU_SOURCE -g -O1 -pthread -I. \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       tests/fuzz/fuzz_insn.c core/insn_decode.c core/insn_mem.c core/insn_complete.c -o /tmp/fuzz_insn
 *
 * (-DFUZZ_MAKE_SEEDS builds a main() that writes seed inputs to a directory.)
 *
 * Input: a fixed header (struct hdr below), then bytes XORed over guest
 * memory, so an all-zero tail is the valid identity-mapped state the
 * header asks for and mutations corrupt code, data and page tables.
 *
 * Besides sanitizer findings, the target aborts when the layer breaks an
 * invariant: an instruction longer than 15 bytes; RIP not advanced by
 * exactly the instruction's length on completion; a fault that changed a
 * register or wrote data; any changed byte of guest memory outside what
 * the layer says it wrote; a data write outside the memory operand the
 * instruction checked for writing; a page-table write that changed more
 * than the accessed and dirty bits; an MXCSR that KVM would refuse.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/insn.h"

#define MEM 0x10000   /* 64 KiB of guest RAM; the rest is MMIO */
#define CODE 0x8000

struct hdr {
	uint8_t mode;        /* enum insn_mode, mod 7 */
	uint8_t cpl;
	uint8_t paging;      /* 0 PG, 1 PAE, 2 PSE, 3 WP, 4 SMAP, 5 SMEP, 6 NXE, 7 LA57 */
	uint8_t ctl;         /* 0 OSFXSR, 1 OSXSAVE, 2 EM, 3 TS, 4 MP, 5 AM, 6 NE, 7 PCIDE */
	uint32_t disabled;   /* CPUID bits the vCPU lacks */
	uint64_t rflags;
	uint64_t gpr_mask;   /* applied to the GPRs, so addresses land in RAM often */
	uint64_t gpr[16];
	uint16_t rip;
	uint8_t seg_type[6], seg_flags[6];   /* flags: 0 unusable, 1 !present, 2 db, 3 big limit */
	uint32_t seg_base[6];
	uint64_t xcr0;
	uint32_t mxcsr_mask;
	uint8_t insn[15];
} __attribute__((packed));

static uint8_t mem[MEM] __attribute__((aligned(4096)));
static uint8_t before[MEM];
static uint8_t xs[4096] __attribute__((aligned(64)));
static uint32_t disabled;

static void *f_map(void *opaque, uint64_t gpa, size_t len)
{
	(void)opaque;
	return gpa < MEM && len <= MEM - gpa ? mem + gpa : NULL;
}

static int f_mmio(void *opaque, bool write, uint64_t gpa, int len, uint64_t *val)
{
	(void)opaque;
	if (len < 1 || len > 8 || gpa < MEM)
		abort();   /* only non-RAM, 1..8 bytes */
	if (!write)
		*val = 0x0123456789abcdefULL;
	return 0;
}

static bool f_cpuid(void *opaque, uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	(void)opaque;
	memset(r, 0, 16);
	switch (leaf) {
	case 1:
		r[2] = ~disabled & ((1u << 23) | (1u << 22) | (1u << 13) | (1u << 26));
		r[3] = ~disabled & ((1u << 8) | (1u << 19) | (1u << 24) | (1u << 25) | (1u << 26));
		return true;
	case 7:
		if (sub == 0) {
			r[1] = ~disabled & ((1u << 20) | (1u << 10) | (1u << 23) | (1u << 24));
			r[2] = ~disabled & (1u << 22);
		}
		return true;
	case 0xd:
		r[0] = sub == 0 ? 0xe7 : (~disabled & 4);
		return true;
	case 0x80000000:
		r[0] = 0x80000008;
		return true;
	case 0x80000001:
		r[3] = ~disabled & ((1u << 26) | (1u << 20));
		return true;
	case 0x80000008:
		r[0] = 40 - (disabled & 7);
		r[1] = ~disabled & (1u << 4);
		r[3] = 1u << 16;
		return true;
	default:
		return false;
	}
}

static int f_rdmsr(void *opaque, uint32_t msr, uint64_t *val)
{
	(void)opaque;
	*val = msr * 0x1234567ULL;
	return msr == 0xe8 && (disabled & 0x100) ? -1 : 0;
}

static uint8_t *f_xsave(void *opaque, size_t *len)
{
	(void)opaque;
	*len = sizeof(xs);
	return xs;
}

static uint64_t xcr0;
static int f_xcr0(void *opaque, uint64_t *val)
{
	(void)opaque;
	*val = xcr0;
	return 0;
}

static const struct insn_ops ops = { f_map, NULL, f_mmio, f_cpuid, f_rdmsr, f_xsave, f_xcr0 };

static void put(uint64_t gpa, uint64_t v, int size)
{
	memcpy(mem + gpa, &v, (size_t)size);
}

/* Identity-map the first 2 MiB (4 KiB pages, all permissions) for the paging mode. */
static uint64_t build_tables(const struct hdr *h)
{
	bool pae = h->paging & 2, la57 = h->paging & 0x80;
	bool lma = h->mode == INSN_MODE_LONG64 || h->mode == INSN_MODE_COMPAT || h->mode == INSN_MODE_COMPAT16;
	if (!pae && !lma) {
		put(0x1000, 0x2000 | 7, 4);
		for (int i = 0; i < 512; i++)
			put(0x2000 + 4 * (uint64_t)i, (4096 * (uint64_t)i) | 7, 4);
		return 0x1000;
	}
	uint64_t top;
	if (!lma) {
		put(0x1000, 0x2000 | 1, 8);   /* PDPTE: present only */
		top = 0x1000;
	} else {
		put(0x1000, 0x4000 | 7, 8);   /* PML4 -> PDPT at 0x4000 */
		put(0x4000, 0x2000 | 7, 8);
		top = 0x1000;
		if (la57) {
			put(0x5000, 0x1000 | 7, 8);
			top = 0x5000;
		}
	}
	put(0x2000, 0x3000 | 7, 8);   /* PD -> PT */
	for (int i = 0; i < 512; i++)
		put(0x3000 + 8 * (uint64_t)i, (4096 * (uint64_t)i) | 7, 8);
	return top;
}

static void fail(const char *why, const struct insn_vcpu *v)
{
	fprintf(stderr, "fuzz_insn: %s (len %d, result why %s)\n", why, v->insn.len, v->why ? v->why : "-");
	abort();
}

static bool in_write_access(const struct insn_vcpu *v, uint64_t gpa, uint32_t len)
{
	for (int i = 0; i < v->naccess; i++) {
		const struct insn_access *a = &v->access[i];
		if (!a->write)
			continue;
		for (int k = 0; k < a->nchunks; k++)
			if (gpa >= a->chunk[k].gpa && gpa + len <= a->chunk[k].gpa + a->chunk[k].len)
				return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hdr h;
	if (size < sizeof(h))
		return 0;
	memcpy(&h, data, sizeof(h));

	/* Decoder alone, every mode, on the raw instruction bytes. */
	for (int m = 0; m <= INSN_MODE_COMPAT16; m++) {
		struct insn in, again;
		enum insn_decode_result r = insn_decode(h.insn, 15, (enum insn_mode)m, &in);
		if (r == INSN_DEC_OK) {
			if (in.len < 1 || in.len > 15)
				abort();
			if (insn_decode(h.insn, in.len, (enum insn_mode)m, &again) != INSN_DEC_OK || again.len != in.len)
				abort();   /* the length must not depend on bytes past the end */
			if (in.len > 1 && insn_decode(h.insn, in.len - 1, (enum insn_mode)m, &again) != INSN_DEC_TRUNCATED)
				abort();
		}
	}

	memset(mem, 0, sizeof(mem));
	struct insn_vcpu v;
	memset(&v, 0, sizeof(v));
	v.ops = &ops;
	disabled = h.disabled;
	xcr0 = h.xcr0;
	enum insn_mode mode = (enum insn_mode)(h.mode % 7);
	h.mode = (uint8_t)mode;
	struct kvm_sregs *s = &v.sregs;
	struct kvm_segment *segs[6] = { &s->es, &s->cs, &s->ss, &s->ds, &s->fs, &s->gs };
	for (int i = 0; i < 6; i++) {
		struct kvm_segment *g = segs[i];
		g->base = h.seg_base[i] & 0xffff;
		g->type = h.seg_type[i] & 15;
		g->present = !(h.seg_flags[i] & 2);
		g->unusable = h.seg_flags[i] & 1;
		g->db = (h.seg_flags[i] >> 2) & 1;
		g->limit = (h.seg_flags[i] & 8) ? 0xffffffff : 0xffff;
		g->s = 1;
		g->dpl = h.cpl & 3;
		g->selector = (uint16_t)(8 * (i + 1) | (h.cpl & 3));
	}
	s->cs.type |= 8;   /* a code segment */
	s->cs.l = mode == INSN_MODE_LONG64;
	s->cs.db = mode == INSN_MODE_PROT32 || mode == INSN_MODE_COMPAT;
	v.rflags = (h.rflags & 0x3f7fd5) | 2;
	v.rflags &= ~0x20000ULL;
	s->cr0 = 0x10 | ((h.ctl & 4) ? 4 : 0) | ((h.ctl & 8) ? 8 : 0) | ((h.ctl & 16) ? 2 : 0) | ((h.ctl & 32) ? 1u << 18 : 0) |
	         ((h.ctl & 64) ? 0x20 : 0) | ((h.paging & 8) ? 1u << 16 : 0);
	s->cr4 = ((h.ctl & 1) ? 0x200 : 0) | ((h.ctl & 2) ? 0x40000 : 0) | ((h.ctl & 128) ? 0x20000 : 0) |
	         ((h.paging & 4) ? 0x10 : 0) | ((h.paging & 16) ? 1u << 21 : 0) | ((h.paging & 32) ? 1u << 20 : 0);
	switch (mode) {
	case INSN_MODE_REAL:
		s->cs.selector = 0;
		break;
	case INSN_MODE_VM86:
		s->cr0 |= 1;
		v.rflags |= 0x20000;
		break;
	case INSN_MODE_PROT16:
	case INSN_MODE_PROT32:
		s->cr0 |= 1;
		if (h.paging & 1) {
			s->cr0 |= 0x80000000u;
			if (h.paging & 2)
				s->cr4 |= 0x20;
			s->efer = (h.paging & 64) ? 0x800 : 0;
			s->cr3 = build_tables(&h);
		}
		break;
	default:   /* long mode: paging with PAE, optionally 5 levels */
		s->cr0 |= 0x80000001u;
		s->cr4 |= 0x20 | ((h.paging & 0x80) ? 0x1000 : 0);
		s->efer = 0x500 | ((h.paging & 64) ? 0x800 : 0);
		s->cr3 = build_tables(&h);
		break;
	}
	v.rip = CODE + (h.rip & 0xfff);
	for (int i = 0; i < 16; i++)
		v.gpr[i] = h.gpr[i] & (h.gpr_mask | 0xffff);
	/* Code: the header's bytes at CS:RIP (when that is in RAM). */
	uint64_t code_at = ((mode == INSN_MODE_LONG64 ? 0 : s->cs.base) + v.rip) & 0xffffffffULL;
	if (code_at + 15 <= MEM)
		memcpy(mem + code_at, h.insn, 15);
	/* The tail corrupts memory, page tables included. */
	size_t tail = size - sizeof(h);
	for (size_t i = 0; i < tail && i < MEM; i++)
		mem[i] ^= data[sizeof(h) + i];
	/* XSAVE area: from the tail's end, else a valid initial state. */
	memset(xs, 0, sizeof(xs));
	uint32_t mx = 0x1f80;
	memcpy(xs + 24, &mx, 4);
	memcpy(xs + 28, &h.mxcsr_mask, 4);
	if (tail > 2 * 4096)
		memcpy(xs, data + size - 576, 576);
	/* KVM's area always holds a valid MXCSR; the layer must keep it so. */
	uint32_t m0, k0;
	memcpy(&m0, xs + 24, 4);
	memcpy(&k0, xs + 28, 4);
	m0 &= k0 ? k0 : 0xffff;
	memcpy(xs + 24, &m0, 4);

	memcpy(before, mem, sizeof(mem));
	struct insn_vcpu v0 = v;
	enum insn_result r = insn_complete(&v);
	if (getenv("FUZZ_INSN_VERBOSE"))   /* for checking seeds: what became of the input */
		fprintf(stderr, "fuzz_insn: mode %s, %d bytes, result %d, vector %d, len %d, %s\n", insn_mode_name(mode),
		        v.nbytes, r, v.event.valid ? v.event.vector : -1, v.insn.len, v.why ? v.why : "-");

	if (v.insn.len > 15 || v.nbytes > 15)
		fail("instruction longer than 15 bytes", &v);
	if (r == INSN_DONE) {
		uint64_t next = v0.rip + v.insn.len;
		if (mode != INSN_MODE_LONG64)
			next &= (mode == INSN_MODE_PROT32 || mode == INSN_MODE_COMPAT) ? 0xffffffffULL : 0xffffULL;
		if (v.rip != next)
			fail("RIP not advanced by the instruction's length", &v);
		if (v.xsave_dirty) {
			uint32_t m, mask;
			memcpy(&m, xs + 24, 4);
			memcpy(&mask, xs + 28, 4);
			if (m & ~(mask ? mask : 0xffff))
				fail("MXCSR with reserved bits written back", &v);
		}
	} else {
		if (memcmp(v.gpr, v0.gpr, sizeof(v.gpr)) || v.rip != v0.rip || v.rflags != v0.rflags)
			fail("registers changed by an instruction that did not complete", &v);
		if (v.xsave_dirty || v.xcr0_dirty)
			fail("FPU state marked changed by an instruction that did not complete", &v);
		if (r == INSN_FAULT && !v.event.valid)
			fail("fault without an exception", &v);
	}
	/* Every write the layer logged is inside an access it checked for writing
	 * (data) or an 8/4-byte page-table entry whose change is A/D only. */
	for (int i = 0; i < v.nwrites; i++) {
		const struct insn_write *w = &v.writes[i];
		if (w->pagetable) {
			if ((w->len != 4 && w->len != 8) || w->gpa + w->len > MEM)
				fail("odd page-table write", &v);
			uint64_t a = 0, b = 0;
			memcpy(&a, before + w->gpa, w->len);
			memcpy(&b, mem + w->gpa, w->len);
			bool overlapped = false;   /* the instruction's own data write may cover the entry */
			for (int j = 0; j < v.nwrites; j++)
				overlapped |= !v.writes[j].pagetable && v.writes[j].gpa < w->gpa + w->len &&
				              w->gpa < v.writes[j].gpa + v.writes[j].len;
			if (!overlapped && ((a ^ b) & ~0x60ULL))
				fail("page-table write changed more than A/D", &v);
		} else {
			if (r != INSN_DONE)
				fail("data written by an instruction that did not complete", &v);
			if (!in_write_access(&v, w->gpa, w->len))
				fail("data written outside the checked operand", &v);
		}
	}
	/* And nothing else changed. */
	for (size_t k = 0; k < MEM; k++) {
		if (mem[k] == before[k])
			continue;
		bool logged = false;
		for (int i = 0; i < v.nwrites && !logged; i++)
			logged = k >= v.writes[i].gpa && k < v.writes[i].gpa + v.writes[i].len;
		if (!logged)
			fail("guest memory changed outside the logged writes", &v);
	}
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
/* Seeds: the completed instructions in 64-bit and 32-bit mode with valid state. */
int main(int argc, char **argv)
{
	static const struct { const char *name; uint8_t mode; uint8_t b[15]; } seeds[] = {
		{ "int3", INSN_MODE_LONG64, { 0xcc } },
		{ "popcnt", INSN_MODE_LONG64, { 0xf3, 0x48, 0x0f, 0xb8, 0x06 } },
		{ "movbe", INSN_MODE_LONG64, { 0x0f, 0x38, 0xf1, 0x06 } },
		{ "cmpxchg16b", INSN_MODE_LONG64, { 0xf0, 0x48, 0x0f, 0xc7, 0x0e } },
		{ "fxsave", INSN_MODE_LONG64, { 0x0f, 0xae, 0x06 } },
		{ "fxrstor", INSN_MODE_PROT32, { 0x0f, 0xae, 0x0e } },
		{ "ldmxcsr", INSN_MODE_LONG64, { 0x0f, 0xae, 0x56, 0x08 } },
		{ "movdqu", INSN_MODE_LONG64, { 0xf3, 0x0f, 0x7f, 0x46, 0x07 } },
		{ "movaps16", INSN_MODE_REAL, { 0x0f, 0x29, 0x00 } },
		{ "xsetbv", INSN_MODE_LONG64, { 0x0f, 0x01, 0xd1 } },
		{ "invpcid", INSN_MODE_COMPAT, { 0x66, 0x0f, 0x38, 0x82, 0x0e } },
		{ "rdpid", INSN_MODE_LONG64, { 0xf3, 0x0f, 0xc7, 0xf8 } },
	};
	if (argc < 2)
		return 2;
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		struct hdr h;
		memset(&h, 0, sizeof(h));
		h.mode = seeds[i].mode;
		h.paging = 1 | 2 | 8 | 64;
		h.ctl = 1 | 2 | 64;
		h.gpr_mask = 0x7fff;
		for (int k = 0; k < 16; k++)
			h.gpr[k] = 0x9000 + 0x40 * (uint64_t)k;
		h.gpr[0] = 7;   /* XCR0 for XSETBV */
		h.gpr[1] = 0;   /* ECX: XCR0; INVPCID type 0 */
		for (int k = 0; k < 6; k++) {
			h.seg_type[k] = 3;
			h.seg_flags[k] = 4 | 8;
		}
		h.xcr0 = 7;
		h.mxcsr_mask = 0xffff;
		memcpy(h.insn, seeds[i].b, 15);
		char path[512];
		snprintf(path, sizeof(path), "%s/seed-%s", argv[1], seeds[i].name);
		FILE *f = fopen(path, "wb");
		if (!f)
			return 1;
		fwrite(&h, sizeof(h), 1, f);
		fclose(f);
	}
	return 0;
}
#endif
