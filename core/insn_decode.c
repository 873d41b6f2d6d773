/*
 * x86 instruction decoder: prefixes (legacy, REX, VEX, EVEX, XOP), opcode
 * maps (one-byte, 0F, 0F38, 0F3A, 3DNow!), ModRM/SIB, displacement,
 * immediates and RIP-relative addressing, with operand and address size
 * by CPU mode.  It decodes every instruction's length and operand fields,
 * not just the few core/insn_complete.c executes: the completion layer
 * must know exactly where an instruction ends to advance RIP, and the
 * unit test compares the whole decoder against binutils, which catches
 * table mistakes that a narrower decoder would hide.
 *
 * Where Intel and AMD differ, Intel's behaviour is decoded (a 66 prefix
 * does not shorten near branches in 64-bit mode).
 */
#include <string.h>

#include "insn.h"

/* One-byte and 0F opcode properties. */
#define M    0x0001   /* ModRM follows */
#define I8   0x0002   /* 8-bit immediate */
#define IZ   0x0004   /* 16/32-bit immediate (operand size; 32 for 64) */
#define IW   0x0008   /* 16-bit immediate */
#define IV   0x0010   /* 16/32/64-bit immediate (MOV r, imm) */
#define AO   0x0020   /* address-size offset (MOV moffs) */
#define FP   0x0040   /* far pointer: 16-bit selector + 16/32-bit offset */
#define PFX  0x0080   /* legacy prefix */
#define I64  0x0100   /* invalid in 64-bit mode */
#define RZ   0x0200   /* relative branch, 16/32 bits (32 in 64-bit mode) */
#define G3   0x0400   /* group 3: immediate only for /0 and /1 */
#define SPC  0x0800   /* escape: 0F, VEX, EVEX, XOP (handled in code) */
#define BAD  0x1000   /* no instruction */
#define REGF 0x2000   /* ModRM always a register form (MOV CR/DR) */

static const uint16_t map1[256] = {
	/* 00 */ M, M, M, M, I8, IZ, I64, I64, M, M, M, M, I8, IZ, I64, SPC,
	/* 10 */ M, M, M, M, I8, IZ, I64, I64, M, M, M, M, I8, IZ, I64, I64,
	/* 20 */ M, M, M, M, I8, IZ, PFX, I64, M, M, M, M, I8, IZ, PFX, I64,
	/* 30 */ M, M, M, M, I8, IZ, PFX, I64, M, M, M, M, I8, IZ, PFX, I64,
	/* 40 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 50 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 60 */ I64, I64, SPC, M, PFX, PFX, PFX, PFX, IZ, M | IZ, I8, M | I8, 0, 0, 0, 0,
	/* 70 */ I8, I8, I8, I8, I8, I8, I8, I8, I8, I8, I8, I8, I8, I8, I8, I8,
	/* 80 */ M | I8, M | IZ, M | I8 | I64, M | I8, M, M, M, M, M, M, M, M, M, M, M, SPC,
	/* 90 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, FP | I64, 0, 0, 0, 0, 0,
	/* a0 */ AO, AO, AO, AO, 0, 0, 0, 0, I8, IZ, 0, 0, 0, 0, 0, 0,
	/* b0 */ I8, I8, I8, I8, I8, I8, I8, I8, IV, IV, IV, IV, IV, IV, IV, IV,
	/* c0 */ M | I8, M | I8, IW, 0, SPC, SPC, M | I8, M | IZ, IW | I8, 0, IW, 0, 0, I8, I64, 0,
	/* d0 */ M, M, M, M, I8 | I64, I8 | I64, BAD, 0, M, M, M, M, M, M, M, M,
	/* e0 */ I8, I8, I8, I8, I8, I8, I8, I8, RZ, RZ, FP | I64, I8, 0, 0, 0, 0,
	/* f0 */ PFX, 0, PFX, PFX, 0, 0, M | G3, M | G3, 0, 0, 0, 0, 0, 0, M, M,
};

static const uint16_t map0f[256] = {
	/* 00 */ M, M, M, M, BAD, 0, 0, 0, 0, 0, BAD, 0, BAD, M, 0, SPC,
	/* 10 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* 20 */ M | REGF, M | REGF, M | REGF, M | REGF, BAD, BAD, BAD, BAD, M, M, M, M, M, M, M, M,
	/* 30 */ 0, 0, 0, 0, 0, 0, BAD, 0, SPC, BAD, SPC, BAD, BAD, BAD, BAD, BAD,
	/* 40 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* 50 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* 60 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* 70 */ M | I8, M | I8, M | I8, M | I8, M, M, M, 0, M, M, BAD, BAD, M, M, M, M,
	/* 80 */ RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ, RZ,
	/* 90 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* a0 */ 0, 0, 0, M, M | I8, M, BAD, BAD, 0, 0, 0, M, M | I8, M, M, M,
	/* b0 */ M, M, M, M, M, M, M, M, M, M, M | I8, M, M, M, M, M,
	/* c0 */ M, M, M | I8, M, M | I8, M | I8, M | I8, M, 0, 0, 0, 0, 0, 0, 0, 0,
	/* d0 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* e0 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* f0 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
};

static const char *const mode_names[] = { "real", "virtual-8086", "protected 16-bit", "protected 32-bit",
	                                      "compatibility", "64-bit", "compatibility 16-bit" };

const char *insn_mode_name(enum insn_mode m)
{
	return (unsigned)m < sizeof(mode_names) / sizeof(mode_names[0]) ? mode_names[m] : "?";
}

enum insn_mode insn_cpu_mode(const struct kvm_sregs *s, uint64_t rflags)
{
	if (!(s->cr0 & 1))
		return INSN_MODE_REAL;
	if (s->efer & 0x400)   /* LMA */
		return s->cs.l ? INSN_MODE_LONG64 : s->cs.db ? INSN_MODE_COMPAT : INSN_MODE_COMPAT16;
	if (rflags & 0x20000)  /* VM */
		return INSN_MODE_VM86;
	return s->cs.db ? INSN_MODE_PROT32 : INSN_MODE_PROT16;
}

/* Default operand/address size of code in this mode. */
static int default_size(enum insn_mode mode)
{
	switch (mode) {
	case INSN_MODE_REAL:
	case INSN_MODE_VM86:
	case INSN_MODE_PROT16:
	case INSN_MODE_COMPAT16:
		return 2;
	default:
		return 4;
	}
}

struct cursor {
	const uint8_t *buf;
	int n, pos;
};

/* Room for k more bytes?  0, or the decode result that says why not. */
static int need(const struct cursor *c, int k)
{
	if (c->pos + k > 15)
		return INSN_DEC_TOOLONG;
	if (c->pos + k > c->n)
		return INSN_DEC_TRUNCATED;
	return 0;
}

static uint64_t take(struct cursor *c, int k)
{
	uint64_t v = 0;
	for (int i = 0; i < k; i++)
		v |= (uint64_t)c->buf[c->pos + i] << (8 * i);
	c->pos += k;
	return v;
}

static int64_t sext(uint64_t v, int bytes)
{
	int sh = 64 - 8 * bytes;
	return bytes >= 8 ? (int64_t)v : (int64_t)(v << sh) >> sh;
}

/* ModRM, SIB and displacement; the ModRM byte is at c->pos. */
static int decode_modrm(struct cursor *c, struct insn *in, bool regform, int rex_x)
{
	int rc = need(c, 1);
	if (rc)
		return rc;
	in->has_modrm = true;
	in->modrm = (uint8_t)take(c, 1);
	in->mod = in->modrm >> 6;
	in->reg = (uint8_t)(((in->modrm >> 3) & 7) | ((in->rex & 4) ? 8 : 0));
	in->rm = (uint8_t)((in->modrm & 7) | ((in->rex & 1) ? 8 : 0));
	in->base = in->index = -1;
	in->scale = 1;
	in->default_seg = SEG_DS;
	if (regform)           /* MOV CR/DR: mod is ignored, always registers */
		in->mod = 3;
	if (in->mod == 3)
		return 0;
	int rm = in->modrm & 7, dsize = in->mod == 1 ? 1 : in->mod == 2 ? (in->addrsize == 2 ? 2 : 4) : 0;
	if (in->addrsize == 2) {
		static const int8_t b16[8] = { 3, 3, 5, 5, 6, 7, 5, 3 };     /* BX BX BP BP SI DI BP BX */
		static const int8_t x16[8] = { 6, 7, 6, 7, -1, -1, -1, -1 };  /* SI DI SI DI */
		if (in->mod == 0 && rm == 6) {
			dsize = 2;
		} else {
			in->base = b16[rm];
			in->index = x16[rm];
			if (rm == 2 || rm == 3 || rm == 6)
				in->default_seg = SEG_SS;
		}
	} else {
		if (rm == 4) {
			if ((rc = need(c, 1)))
				return rc;
			in->has_sib = true;
			in->sib = (uint8_t)take(c, 1);
			int idx = ((in->sib >> 3) & 7) | (rex_x ? 8 : 0), base = in->sib & 7;
			in->scale = (uint8_t)(1u << (in->sib >> 6));
			if (idx != 4)
				in->index = (int8_t)idx;
			if (base == 5 && in->mod == 0) {
				dsize = 4;
			} else {
				in->base = (int8_t)(base | ((in->rex & 1) ? 8 : 0));
				if (in->base == 4 || in->base == 5)
					in->default_seg = SEG_SS;
			}
		} else if (rm == 5 && in->mod == 0) {
			dsize = 4;
			in->riprel = in->mode == INSN_MODE_LONG64;
		} else {
			in->base = (int8_t)in->rm;
			if (in->base == 4 || in->base == 5)
				in->default_seg = SEG_SS;
		}
	}
	if (dsize) {
		if ((rc = need(c, dsize)))
			return rc;
		in->disp_size = (uint8_t)dsize;
		in->disp = sext(take(c, dsize), dsize);
	}
	return 0;
}

static int take_imm(struct cursor *c, struct insn *in, int size, bool second)
{
	int rc = need(c, size);
	if (rc)
		return rc;
	uint64_t v = take(c, size);
	if (second) {
		in->imm2 = v;
		in->imm2_size = (uint8_t)size;
	} else {
		in->imm = v;
		in->imm_size = (uint8_t)size;
	}
	return 0;
}

/* VEX/EVEX/XOP-encoded instruction from its opcode byte on. */
static int decode_vex_body(struct cursor *c, struct insn *in, int rex_x)
{
	int rc = need(c, 1);
	if (rc)
		return rc;
	in->opcode = (uint8_t)take(c, 1);
	/* VEX.0F 77 (VZEROUPPER/VZEROALL) is the only one without ModRM. */
	if (!(in->map == MAP_0F && in->opcode == 0x77 && in->vex != 4)) {
		if ((rc = decode_modrm(c, in, false, rex_x)))
			return rc;
	}
	int imm = 0;
	switch (in->map) {
	case MAP_0F:
		if ((in->opcode >= 0x70 && in->opcode <= 0x73) || in->opcode == 0xc2 ||
		    (in->opcode >= 0xc4 && in->opcode <= 0xc6))
			imm = 1;
		break;
	case MAP_0F3A:
	case MAP_XOP8:
		imm = 1;
		break;
	case MAP_XOPA:
		imm = 4;
		break;
	default:
		break;
	}
	return imm ? take_imm(c, in, imm, false) : 0;
}

enum insn_decode_result insn_decode(const uint8_t *buf, int n, enum insn_mode mode, struct insn *in)
{
	struct cursor c = { buf, n > 15 ? 15 : n, 0 };
	bool m64 = mode == INSN_MODE_LONG64;
	int rc;

	memset(in, 0, sizeof(*in));
	in->mode = (uint8_t)mode;
	in->seg = SEG_NONE;
	in->base = in->index = -1;
	in->default_seg = SEG_DS;
	int defsz = default_size(mode);
	int osz = defsz, asz = m64 ? 8 : defsz;

	/* Legacy prefixes; in 64-bit mode REX counts only right before the opcode. */
	for (;;) {
		if ((rc = need(&c, 1)))
			return (enum insn_decode_result)rc;
		uint8_t b = c.buf[c.pos];
		if (m64 && (b & 0xf0) == 0x40) {
			in->rex = b;
			c.pos++;
			continue;
		}
		if (!(map1[b] & PFX) && b != 0xf0 && b != 0xf2 && b != 0xf3)
			break;
		in->rex = 0;   /* a legacy prefix after REX cancels it */
		c.pos++;
		switch (b) {
		case 0xf0: in->lock = true; break;
		case 0xf2: in->repne = true; in->last_f2f3 = b; break;
		case 0xf3: in->rep = true; in->last_f2f3 = b; break;
		case 0x66: in->p66 = true; break;
		case 0x67: in->p67 = true; break;
		case 0x26: in->seg = m64 ? in->seg : SEG_ES; break;   /* ignored in 64-bit mode */
		case 0x2e: in->seg = m64 ? in->seg : SEG_CS; break;
		case 0x36: in->seg = m64 ? in->seg : SEG_SS; break;
		case 0x3e: in->seg = m64 ? in->seg : SEG_DS; break;
		case 0x64: in->seg = SEG_FS; break;
		case 0x65: in->seg = SEG_GS; break;
		}
	}
	if (in->p66)
		osz = osz == 2 ? 4 : 2;
	if (in->rex & 8)
		osz = 8;
	if (in->p67)
		asz = m64 ? 4 : (asz == 2 ? 4 : 2);
	in->opsize = (uint8_t)osz;
	in->addrsize = (uint8_t)asz;
	int rex_x = (in->rex & 2) != 0;

	uint8_t op = (uint8_t)take(&c, 1);
	uint16_t f = map1[op];
	in->map = MAP_1B;
	in->opcode = op;

	/* VEX (C4/C5), EVEX (62), XOP (8F).  Outside 64-bit mode C4/C5/62 are
	 * LES/LDS/BOUND unless the next byte has mod = 11. */
	if (op == 0xc4 || op == 0xc5 || op == 0x62 || op == 0x8f) {
		if ((rc = need(&c, 1)))
			return (enum insn_decode_result)rc;
		uint8_t b1 = c.buf[c.pos];
		bool esc;
		if (op == 0x8f)
			esc = (b1 & 0x1f) >= 8;
		else
			esc = m64 || (b1 >> 6) == 3;
		if (!esc) {
			if (op == 0x8f)
				f = M;
			else if (m64)
				return INSN_DEC_INVALID;
			else
				f = M;   /* LES, LDS, BOUND */
		} else {
			/* A VEX/EVEX/XOP instruction takes no 66/F2/F3/LOCK/REX prefix. */
			bool bad_prefix = in->p66 || in->rep || in->repne || in->lock || in->rex;
			int vlen = op == 0xc5 ? 2 : op == 0x62 ? 4 : 3;
			if ((rc = need(&c, vlen - 1)))
				return (enum insn_decode_result)rc;
			const uint8_t *v = c.buf + c.pos;
			c.pos += vlen - 1;
			uint8_t rxb = 0;
			if (op == 0xc5) {
				in->vex = 2;
				rxb = (uint8_t)((~v[0] >> 7) & 1) << 2;
				in->vex_vvvv = (uint8_t)((~v[0] >> 3) & 15);
				in->vex_l = (v[0] >> 2) & 1;
				in->vex_pp = v[0] & 3;
				in->map = MAP_0F;
			} else {
				in->vex = op == 0x62 ? 4 : op == 0x8f ? 'x' : 3;
				rxb = (uint8_t)((~v[0] >> 5) & 7);
				in->vex_w = v[1] >> 7;
				in->vex_vvvv = (uint8_t)((~v[1] >> 3) & 15);
				in->vex_pp = v[1] & 3;
				int mm = op == 0x62 ? (v[0] & 7) : (v[0] & 0x1f);
				if (op == 0x62) {
					in->vex_l = (v[2] >> 5) & 1;
					static const int8_t emap[8] = { -1, MAP_0F, MAP_0F38, MAP_0F3A, -1, MAP_EVEX5, MAP_EVEX6, -1 };
					if (emap[mm] < 0 || (v[1] & 4) == 0)
						return INSN_DEC_INVALID;
					in->map = (uint8_t)emap[mm];
				} else if (op == 0x8f) {
					in->vex_l = (v[1] >> 2) & 1;
					if (mm > 10)
						return INSN_DEC_INVALID;
					in->map = (uint8_t)(MAP_XOP8 + (mm - 8));
				} else {
					in->vex_l = (v[1] >> 2) & 1;
					if (mm < 1 || mm > 3)
						return INSN_DEC_INVALID;
					in->map = (uint8_t)(mm == 1 ? MAP_0F : mm == 2 ? MAP_0F38 : MAP_0F3A);
				}
			}
			if (!m64)
				rxb = 0;   /* R/X/B are ignored outside 64-bit mode */
			in->rex = (uint8_t)(rxb ? 0x40 | rxb : 0);
			if (in->vex_w && m64 && in->vex != 2)
				in->rex |= 0x48;
			if (in->vex_w && (in->rex & 8))
				in->opsize = 8;
			if ((rc = decode_vex_body(&c, in, (rxb & 2) != 0)))
				return (enum insn_decode_result)rc;
			in->len = (uint8_t)c.pos;
			return bad_prefix ? INSN_DEC_INVALID : INSN_DEC_OK;
		}
	}

	if (op == 0x0f) {
		if ((rc = need(&c, 1)))
			return (enum insn_decode_result)rc;
		op = (uint8_t)take(&c, 1);
		in->opcode = op;
		in->map = MAP_0F;
		f = map0f[op];
		if (op == 0x38 || op == 0x3a) {
			if ((rc = need(&c, 1)))
				return (enum insn_decode_result)rc;
			in->map = op == 0x38 ? MAP_0F38 : MAP_0F3A;
			in->opcode = (uint8_t)take(&c, 1);
			f = op == 0x38 ? M : M | I8;
		} else if (op == 0x0f) {   /* 3DNow!: ModRM operands, then the opcode */
			if ((rc = decode_modrm(&c, in, false, rex_x)))
				return (enum insn_decode_result)rc;
			if ((rc = need(&c, 1)))
				return (enum insn_decode_result)rc;
			in->map = MAP_3DNOW;
			in->opcode = (uint8_t)take(&c, 1);
			in->len = (uint8_t)c.pos;
			return INSN_DEC_OK;
		} else if (op == 0x78 && (in->p66 || in->last_f2f3 == 0xf2)) {
			f = M | I8;   /* AMD SSE4a EXTRQ/INSERTQ imm8, imm8 (second below) */
		}
	}
	if (f & BAD)
		return INSN_DEC_INVALID;
	if ((f & I64) && m64)
		return INSN_DEC_INVALID;

	if (f & M) {
		if ((rc = decode_modrm(&c, in, (f & REGF) != 0, rex_x)))
			return (enum insn_decode_result)rc;
	}
	int isz = 0, isz2 = 0;
	if (f & I8)
		isz = 1;
	if (f & IZ)
		isz = osz == 2 ? 2 : 4;
	if (f & IW)
		isz = 2;
	if ((f & (IW | I8)) == (IW | I8)) {   /* ENTER iw, ib */
		isz = 2;
		isz2 = 1;
	}
	if (f & IV)
		isz = osz;
	if (f & AO)
		isz = asz;
	if (f & RZ)
		isz = m64 ? 4 : (osz == 2 ? 2 : 4);
	if (f & FP) {   /* offset, then selector */
		isz = osz == 2 ? 2 : 4;
		isz2 = 2;
	}
	if ((f & G3) && ((in->modrm >> 3) & 7) < 2)
		isz = op == 0xf6 ? 1 : (osz == 2 ? 2 : 4);
	if (in->map == MAP_0F && op == 0x78 && (f & I8))
		isz2 = 1;
	if (isz && (rc = take_imm(&c, in, isz, false)))
		return (enum insn_decode_result)rc;
	if (isz2 && (rc = take_imm(&c, in, isz2, true)))
		return (enum insn_decode_result)rc;
	in->len = (uint8_t)c.pos;
	return INSN_DEC_OK;
}
