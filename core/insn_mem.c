/*
 * Memory operands of completed instructions, checked as the CPU checks
 * them: segment type and limit (or canonical form in 64-bit mode),
 * alignment, then the guest's page tables with the access's permissions.
 * A failed check becomes the exception hardware raises (#GP/#SS with error
 * code 0, #PF with its error code and CR2), so a guest that relies on
 * faults (copy_from_user's exception tables, demand paging) sees the same
 * behaviour whether an instruction ran natively or here.
 *
 * Every page of an access is translated before any byte is written: an
 * instruction that faults leaves memory unchanged, as on hardware.
 */
#include <string.h>

#include "insn.h"

#define CR0_PG   0x80000000ULL
#define CR0_WP   (1ULL << 16)
#define CR0_AM   (1ULL << 18)
#define CR4_PSE  (1ULL << 4)
#define CR4_PAE  (1ULL << 5)
#define CR4_LA57 (1ULL << 12)
#define CR4_SMEP (1ULL << 20)
#define CR4_SMAP (1ULL << 21)
#define EFER_LMA (1ULL << 10)
#define EFER_NXE (1ULL << 11)
#define RFLAGS_AC (1ULL << 18)

#define PTE_P   1ULL
#define PTE_RW  2ULL
#define PTE_US  4ULL
#define PTE_A   0x20ULL
#define PTE_D   0x40ULL
#define PTE_PS  0x80ULL
#define PTE_NX  (1ULL << 63)

#define PF_P    1u
#define PF_W    2u
#define PF_U    4u
#define PF_RSVD 8u
#define PF_I    16u

int insn_cpl(const struct insn_vcpu *v)
{
	switch (insn_cpu_mode(&v->sregs, v->rflags)) {
	case INSN_MODE_REAL:
		return 0;
	case INSN_MODE_VM86:
		return 3;
	default:
		return v->sregs.cs.selector & 3;   /* CS.RPL is the CPL */
	}
}

enum insn_result insn_fault(struct insn_vcpu *v, int vector, bool has_err, uint32_t err)
{
	memset(&v->event, 0, sizeof(v->event));
	v->event.valid = true;
	v->event.vector = (uint8_t)vector;
	v->event.has_err = has_err;
	v->event.err = err;
	return INSN_FAULT;
}

bool insn_cpuid_bit(struct insn_vcpu *v, uint32_t leaf, uint32_t sub, int reg, int bit)
{
	uint32_t r[4] = { 0, 0, 0, 0 };
	if (!v->ops->cpuid || !v->ops->cpuid(v->opaque, leaf, sub, r))
		return false;
	return (r[reg & 3] >> bit) & 1;
}

static int page_fault(struct insn_vcpu *v, uint64_t lin, uint32_t err)
{
	insn_fault(v, 14, true, err);
	v->event.cr2 = lin;
	return 1;
}

static void log_write(struct insn_vcpu *v, uint64_t gpa, uint32_t len, bool pt)
{
	if (v->nwrites < INSN_MAX_WRITES) {
		v->writes[v->nwrites].gpa = gpa;
		v->writes[v->nwrites].len = len;
		v->writes[v->nwrites].pagetable = pt;
		v->nwrites++;
	}
}

/* MAXPHYADDR from CPUID 0x80000008 (36 when the leaf is absent, as the SDM says). */
static int maxphyaddr(struct insn_vcpu *v)
{
	uint32_t r[4] = { 0, 0, 0, 0 };
	if (v->ops->cpuid && v->ops->cpuid(v->opaque, 0x80000000, 0, r) && r[0] >= 0x80000008 &&
	    v->ops->cpuid(v->opaque, 0x80000008, 0, r) && (r[0] & 0xff) >= 32 && (r[0] & 0xff) <= 52)
		return (int)(r[0] & 0xff);
	return 36;
}

/* A paging-structure entry: its host address, so accessed/dirty bits can be set. */
struct pte_ref {
	uint64_t gpa;
	void *hva;
	int size;
};

/* Read an entry; false if the table is not guest RAM (treated as not present). */
static bool read_entry(struct insn_vcpu *v, uint64_t gpa, int size, uint64_t *e, struct pte_ref *ref)
{
	void *p = v->ops->map(v->opaque, gpa, (size_t)size);
	if (!p)
		return false;
	if (size == 4)
		*e = __atomic_load_n((uint32_t *)p, __ATOMIC_ACQUIRE);
	else
		*e = __atomic_load_n((uint64_t *)p, __ATOMIC_ACQUIRE);
	ref->gpa = gpa;
	ref->hva = p;
	ref->size = size;
	return true;
}

/*
 * Accessed and dirty bits, set the way the CPU sets them: with a locked OR
 * on the entry (another vCPU may be updating it) and only once the walk
 * succeeded.
 */
static void set_bits(struct insn_vcpu *v, const struct pte_ref *ref, uint64_t e, uint64_t bits)
{
	if ((e & bits) == bits)
		return;
	if (ref->size == 4)
		__atomic_fetch_or((uint32_t *)ref->hva, (uint32_t)bits, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_or((uint64_t *)ref->hva, bits, __ATOMIC_SEQ_CST);
	if (v->ops->dirtied)
		v->ops->dirtied(v->opaque, ref->gpa, (size_t)ref->size);
	log_write(v, ref->gpa, (uint32_t)ref->size, true);
}

int insn_translate(struct insn_vcpu *v, uint64_t lin, enum insn_acc acc, uint64_t *gpa)
{
	const struct kvm_sregs *s = &v->sregs;
	bool lma = (s->efer & EFER_LMA) != 0;

	if (!(s->cr0 & CR0_PG)) {
		*gpa = lma ? lin : (lin & 0xffffffffu);
		return 0;
	}
	bool user = insn_cpl(v) == 3, write = acc == ACC_WRITE, fetch = acc == ACC_FETCH;   /* ACC_FLUSH: a read */
	bool pae = (s->cr4 & CR4_PAE) != 0, nxe = pae && (s->efer & EFER_NXE);
	uint32_t err = (write ? PF_W : 0) | (user ? PF_U : 0);
	if (fetch && ((pae && (s->efer & EFER_NXE)) || (s->cr4 & CR4_SMEP)))
		err |= PF_I;

	struct pte_ref refs[5];
	uint64_t ents[5];
	int nref = 0;
	bool rw = true, us = true, nx = false;
	uint64_t leaf_gpa;

	if (!pae) {
		/* 32-bit paging: 4-byte entries, 4 MiB pages with CR4.PSE (PSE-36 bits). */
		uint64_t e;
		if (!read_entry(v, (s->cr3 & 0xfffff000u) | ((lin >> 20) & 0xffc), 4, &e, &refs[nref]) || !(e & PTE_P))
			return page_fault(v, lin, err);
		ents[nref++] = e;
		rw = e & PTE_RW;
		us = e & PTE_US;
		if ((e & PTE_PS) && (s->cr4 & CR4_PSE)) {
			int mp = maxphyaddr(v);
			uint64_t hi = (e >> 13) & 0xff;
			if ((e & (1u << 21)) || (mp < 40 && (hi >> (mp - 32))))
				return page_fault(v, lin, err | PF_P | PF_RSVD);
			leaf_gpa = (e & 0xffc00000u) | (hi << 32) | (lin & 0x3fffff);
		} else {
			if (!read_entry(v, (e & 0xfffff000u) | ((lin >> 10) & 0xffc), 4, &e, &refs[nref]) || !(e & PTE_P))
				return page_fault(v, lin, err);
			ents[nref++] = e;
			rw = rw && (e & PTE_RW);
			us = us && (e & PTE_US);
			leaf_gpa = (e & 0xfffff000u) | (lin & 0xfff);
		}
	} else {
		int mp = maxphyaddr(v);
		uint64_t addr_mask = ((1ULL << mp) - 1) & ~0xfffULL;
		/* Bits 51:MAXPHYADDR of an entry's address, and XD without EFER.NXE. */
		uint64_t rsvd = (0x000ffffffffff000ULL & ~addr_mask) | (nxe ? 0 : PTE_NX);
		uint64_t table;
		int level;
		if (lma) {
			level = (s->cr4 & CR4_LA57) ? 5 : 4;
			table = s->cr3 & addr_mask;
		} else {
			/* PAE: the PDPTE (the CPU caches the four at MOV CR3; read here). */
			uint64_t e;
			struct pte_ref r;
			if (!read_entry(v, (s->cr3 & 0xffffffe0u) + ((lin >> 30) & 3) * 8, 8, &e, &r) || !(e & PTE_P))
				return page_fault(v, lin, err);
			if (e & ((0x000ffffffffff000ULL & ~addr_mask) | 0x1e6ULL | (0xfffULL << 52)))
				return page_fault(v, lin, err | PF_P | PF_RSVD);
			table = e & addr_mask;
			level = 2;
		}
		bool gb_pages = insn_cpuid_bit(v, 0x80000001, 0, 3, 26);
		for (;; level--) {
			int shift = 12 + 9 * (level - 1);
			uint64_t e;
			if (!read_entry(v, table + ((lin >> shift) & 0x1ff) * 8, 8, &e, &refs[nref]) || !(e & PTE_P))
				return page_fault(v, lin, err);
			ents[nref++] = e;
			bool large = level > 1 && (e & PTE_PS);
			uint64_t bad = e & rsvd;
			if (level >= 4 && (e & PTE_PS))
				bad = 1;   /* PS is reserved in PML4E/PML5E */
			if (level == 3 && large && !gb_pages)
				bad = 1;
			if (large)
				bad |= e & (((1ULL << shift) - 1) & ~0x1fffULL);   /* frame bits below the page size, except PAT */
			if (bad)
				return page_fault(v, lin, err | PF_P | PF_RSVD);
			rw = rw && (e & PTE_RW);
			us = us && (e & PTE_US);
			nx = nx || (nxe && (e & PTE_NX));
			if (level == 1 || large) {
				uint64_t mask = (1ULL << shift) - 1;
				leaf_gpa = (e & addr_mask & ~mask) | (lin & mask);
				break;
			}
			table = e & addr_mask;
		}
	}

	/* Permissions, combined over all levels (SDM 4.6). */
	bool deny;
	if (user)
		deny = !us || (write && !rw) || (fetch && nx);
	else if (fetch)
		deny = nx || (us && (s->cr4 & CR4_SMEP));
	else
		deny = (us && (s->cr4 & CR4_SMAP) && !(v->rflags & RFLAGS_AC)) ||
		       (write && !rw && (s->cr0 & CR0_WP));
	if (deny)
		return page_fault(v, lin, err | PF_P);

	for (int i = 0; i < nref; i++)
		set_bits(v, &refs[i], ents[i], PTE_A | (write && i == nref - 1 ? PTE_D : 0));
	*gpa = leaf_gpa;
	return 0;
}

static const struct kvm_segment *segment(const struct kvm_sregs *s, int seg)
{
	switch (seg) {
	case SEG_ES: return &s->es;
	case SEG_CS: return &s->cs;
	case SEG_SS: return &s->ss;
	case SEG_FS: return &s->fs;
	case SEG_GS: return &s->gs;
	default: return &s->ds;
	}
}

static int seg_fault(struct insn_vcpu *v, int seg)
{
	insn_fault(v, seg == SEG_SS ? 12 : 13, true, 0);
	return 1;
}

static bool canonical(uint64_t a, int bits)
{
	int64_t x = (int64_t)(a << (64 - bits)) >> (64 - bits);
	return (uint64_t)x == a;
}

int insn_mem_prepare(struct insn_vcpu *v, int seg, uint64_t off, uint32_t size, enum insn_acc acc,
                     uint32_t align, struct insn_access **out)
{
	const struct kvm_sregs *s = &v->sregs;
	enum insn_mode mode = insn_cpu_mode(s, v->rflags);
	uint64_t lin;

	if (size == 0 || size > 4096 || v->naccess >= INSN_MAX_ACCESSES) {
		v->why = "bad access size";
		return -1;
	}
	if (mode == INSN_MODE_LONG64) {
		/* Only FS and GS have bases; no limits; the address must be canonical. */
		lin = off + (seg == SEG_FS ? s->fs.base : seg == SEG_GS ? s->gs.base : 0);
		int bits = (s->cr4 & CR4_LA57) ? 57 : 48;
		if (!canonical(lin, bits) || !canonical(lin + size - 1, bits))
			return seg_fault(v, seg);
	} else {
		const struct kvm_segment *sg = segment(s, seg);
		bool prot = mode != INSN_MODE_REAL && mode != INSN_MODE_VM86;
		if (prot) {
			if (sg->unusable || !sg->present)
				return seg_fault(v, seg);
			bool code = sg->type & 8;
			if (acc == ACC_WRITE && (code || !(sg->type & 2)))
				return seg_fault(v, seg);
			if (acc == ACC_READ && code && !(sg->type & 2))
				return seg_fault(v, seg);
		}
		uint64_t last = off + size - 1;
		if (prot && !(sg->type & 8) && (sg->type & 4)) {
			/* Expand-down data segment: valid offsets are (limit, 64K or 4G). */
			uint64_t upper = sg->db ? 0xffffffffULL : 0xffffULL;
			if (off <= sg->limit || last > upper)
				return seg_fault(v, seg);
		} else if (last > sg->limit) {
			return seg_fault(v, seg);
		}
		lin = (sg->base + off) & 0xffffffffULL;
	}
	if (align && (lin & (align - 1))) {
		insn_fault(v, 13, true, 0);
		return 1;
	}

	struct insn_access *a = &v->access[v->naccess];
	memset(a, 0, sizeof(*a));
	a->lin = lin;
	a->size = size;
	a->write = acc == ACC_WRITE;
	uint32_t done = 0;
	while (done < size) {
		uint64_t l = lin + done;
		if (mode != INSN_MODE_LONG64)
			l &= 0xffffffffULL;   /* linear addresses wrap at 4 GiB outside 64-bit mode */
		uint32_t n = 4096 - (uint32_t)(l & 0xfff);
		if (n > size - done)
			n = size - done;
		if (a->nchunks == 2) {
			v->why = "access spans more than two pages";
			return -1;
		}
		uint64_t gpa;
		int rc = insn_translate(v, l, acc, &gpa);
		if (rc)
			return rc;
		a->chunk[a->nchunks].gpa = gpa;
		a->chunk[a->nchunks].len = n;
		a->chunk[a->nchunks].hva = v->ops->map(v->opaque, gpa, n);
		a->nchunks++;
		done += n;
	}
	/* Alignment check (#AC(0)): CPL3 with CR0.AM and RFLAGS.AC; after #PF in priority. */
	if (acc != ACC_FETCH && insn_cpl(v) == 3 && (s->cr0 & CR0_AM) && (v->rflags & RFLAGS_AC) &&
	    (size == 2 || size == 4 || size == 8 || size == 16) && (lin & (size - 1))) {
		insn_fault(v, 17, true, 0);
		return 1;
	}
	v->naccess++;
	if (out)
		*out = a;
	return 0;
}

/* Non-RAM in pieces of at most 8 bytes; without an mmio callback reads float high. */
static int mmio_rw(struct insn_vcpu *v, bool write, uint64_t gpa, uint8_t *buf, uint32_t len)
{
	for (uint32_t k = 0; k < len;) {
		int n = len - k >= 8 ? 8 : len - k >= 4 ? 4 : len - k >= 2 ? 2 : 1;
		uint64_t val = 0;
		if (write)
			memcpy(&val, buf + k, (size_t)n);
		if (!v->ops->mmio) {
			val = ~0ULL;
		} else if (v->ops->mmio(v->opaque, write, gpa + k, n, &val)) {
			v->why = "MMIO access failed";
			return -1;
		}
		if (!write)
			memcpy(buf + k, &val, (size_t)n);
		k += (uint32_t)n;
	}
	return 0;
}

int insn_mem_read(struct insn_vcpu *v, const struct insn_access *a, void *buf)
{
	uint8_t *p = buf;
	for (int i = 0; i < a->nchunks; i++) {
		if (a->chunk[i].hva)
			memcpy(p, a->chunk[i].hva, a->chunk[i].len);
		else if (mmio_rw(v, false, a->chunk[i].gpa, p, a->chunk[i].len))
			return -1;
		p += a->chunk[i].len;
	}
	return 0;
}

/* Write bytes [from, from+len) of an access (FXSAVE leaves some of its area alone). */
static int write_part(struct insn_vcpu *v, const struct insn_access *a, uint32_t from, uint32_t len, const uint8_t *src)
{
	uint32_t pos = 0;
	for (int i = 0; i < a->nchunks; i++) {
		uint32_t clen = a->chunk[i].len;
		uint32_t s = from > pos ? from - pos : 0, e = from + len - pos;
		if (e > clen)
			e = clen;
		if (from + len > pos && from < pos + clen && s < e) {
			const uint8_t *q = src + (pos + s - from);
			if (a->chunk[i].hva) {
				memcpy((uint8_t *)a->chunk[i].hva + s, q, e - s);
				if (v->ops->dirtied)
					v->ops->dirtied(v->opaque, a->chunk[i].gpa + s, e - s);
			} else if (mmio_rw(v, true, a->chunk[i].gpa + s, (uint8_t *)q, e - s)) {
				return -1;
			}
			log_write(v, a->chunk[i].gpa + s, e - s, false);
		}
		pos += clen;
	}
	return 0;
}

int insn_mem_write(struct insn_vcpu *v, const struct insn_access *a, const void *buf)
{
	return write_part(v, a, 0, a->size, buf);
}

int insn_mem_write_part(struct insn_vcpu *v, const struct insn_access *a, uint32_t from, uint32_t len,
                        const void *buf)
{
	return write_part(v, a, from, len, buf);
}
