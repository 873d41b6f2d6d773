/*
 * AML byte-code builder; see aml.h.  Encodings follow the ACPI 6.x
 * specification, chapter 20 (AML grammar) and 6.4 (resource data types).
 */
#include "boot/aml.h"

#include <stdlib.h>
#include <string.h>

enum {
	OP_ZERO = 0x00, OP_ONE = 0x01, OP_NAME = 0x08,
	OP_BYTE = 0x0a, OP_WORD = 0x0b, OP_DWORD = 0x0c, OP_STRING = 0x0d,
	OP_QWORD = 0x0e, OP_SCOPE = 0x10, OP_BUFFER = 0x11, OP_PACKAGE = 0x12,
	OP_METHOD = 0x14, OP_DUAL_NAME = 0x2e, OP_MULTI_NAME = 0x2f,
	OP_EXT = 0x5b, OP_EXT_DEVICE = 0x82, OP_ROOT = 0x5c, OP_PARENT = 0x5e,
	OP_RETURN = 0xa4,
};

enum { KIND_PLAIN, KIND_BUFFER };

void aml_init(struct aml_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void aml_free(struct aml_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static bool reserve(struct aml_buf *b, size_t more)
{
	if (b->failed)
		return false;
	if (more > SIZE_MAX / 2 - b->len) {
		b->failed = true;
		return false;
	}
	if (b->len + more <= b->cap)
		return true;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < b->len + more)
		ncap *= 2;
	uint8_t *n = realloc(b->data, ncap);
	if (!n) {
		b->failed = true;
		return false;
	}
	b->data = n;
	b->cap = ncap;
	return true;
}

void aml_bytes(struct aml_buf *b, const void *p, size_t n)
{
	if (!reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void aml_byte(struct aml_buf *b, uint8_t v)
{
	aml_bytes(b, &v, 1);
}

static void put_le(struct aml_buf *b, uint64_t v, int n)
{
	uint8_t t[8];
	for (int i = 0; i < n; i++)
		t[i] = (uint8_t)(v >> (8 * i));
	aml_bytes(b, t, (size_t)n);
}

void aml_integer(struct aml_buf *b, uint64_t v)
{
	if (v == 0) {
		aml_byte(b, OP_ZERO);
	} else if (v == 1) {
		aml_byte(b, OP_ONE);
	} else if (v <= 0xff) {
		aml_byte(b, OP_BYTE);
		put_le(b, v, 1);
	} else if (v <= 0xffff) {
		aml_byte(b, OP_WORD);
		put_le(b, v, 2);
	} else if (v <= 0xffffffffULL) {
		aml_byte(b, OP_DWORD);
		put_le(b, v, 4);
	} else {
		aml_byte(b, OP_QWORD);
		put_le(b, v, 8);
	}
}

void aml_dword(struct aml_buf *b, uint32_t v)
{
	aml_byte(b, OP_DWORD);
	put_le(b, v, 4);
}

void aml_string(struct aml_buf *b, const char *s)
{
	for (const char *p = s; *p; p++) {
		if ((unsigned char)*p > 0x7f) {   /* AsciiCharList: 0x01-0x7f */
			b->failed = true;
			return;
		}
	}
	aml_byte(b, OP_STRING);
	aml_bytes(b, s, strlen(s) + 1);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

uint32_t aml_eisaid_value(const char *id)
{
	if (strlen(id) != 7)
		return 0;
	unsigned l[3];
	for (int i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z')
			return 0;
		l[i] = (unsigned)(id[i] - '@');           /* 'A' = 1 */
	}
	unsigned h[4];
	for (int i = 0; i < 4; i++) {
		int v = hexval(id[3 + i]);
		if (v < 0)
			return 0;
		h[i] = (unsigned)v;
	}
	/* Bytes in memory: the three 5-bit letters big-endian, then the
	 * product number as two bytes, most significant digit first. */
	uint8_t by[4];
	by[0] = (uint8_t)((l[0] << 2) | (l[1] >> 3));
	by[1] = (uint8_t)(((l[1] & 7) << 5) | l[2]);
	by[2] = (uint8_t)((h[0] << 4) | h[1]);
	by[3] = (uint8_t)((h[2] << 4) | h[3]);
	return (uint32_t)by[0] | (uint32_t)by[1] << 8 | (uint32_t)by[2] << 16 |
	       (uint32_t)by[3] << 24;
}

void aml_eisaid(struct aml_buf *b, const char *id)
{
	uint32_t v = aml_eisaid_value(id);
	if (!v) {
		b->failed = true;
		return;
	}
	aml_dword(b, v);
}

static bool seg_char_ok(char c, bool first)
{
	if ((c >= 'A' && c <= 'Z') || c == '_')
		return true;
	return !first && c >= '0' && c <= '9';
}

void aml_namestring(struct aml_buf *b, const char *path)
{
	const char *p = path;
	if (*p == '\\') {
		aml_byte(b, OP_ROOT);
		p++;
	} else {
		while (*p == '^') {
			aml_byte(b, OP_PARENT);
			p++;
		}
	}
	if (!*p) {
		aml_byte(b, 0x00);   /* NullName */
		return;
	}
	char segs[255][4];
	int n = 0;
	for (;;) {
		if (n == 255) {
			b->failed = true;
			return;
		}
		int k = 0;
		while (*p && *p != '.') {
			if (k == 4 || !seg_char_ok(*p, k == 0)) {
				b->failed = true;
				return;
			}
			segs[n][k++] = *p++;
		}
		if (k == 0) {
			b->failed = true;
			return;
		}
		while (k < 4)
			segs[n][k++] = '_';
		n++;
		if (!*p)
			break;
		p++;   /* '.' */
	}
	if (n == 2)
		aml_byte(b, OP_DUAL_NAME);
	else if (n > 2) {
		aml_byte(b, OP_MULTI_NAME);
		aml_byte(b, (uint8_t)n);
	}
	aml_bytes(b, segs, (size_t)n * 4);
}

void aml_name(struct aml_buf *b, const char *name)
{
	aml_byte(b, OP_NAME);
	aml_namestring(b, name);
}

void aml_return(struct aml_buf *b)
{
	aml_byte(b, OP_RETURN);
}

static void push(struct aml_buf *b, int kind)
{
	if (b->depth == AML_MAX_DEPTH) {
		b->failed = true;
		return;
	}
	b->open[b->depth].pos = b->len;
	b->open[b->depth].kind = kind;
	b->depth++;
}

void aml_scope(struct aml_buf *b, const char *name)
{
	aml_byte(b, OP_SCOPE);
	push(b, KIND_PLAIN);
	aml_namestring(b, name);
}

void aml_device(struct aml_buf *b, const char *name)
{
	aml_byte(b, OP_EXT);
	aml_byte(b, OP_EXT_DEVICE);
	push(b, KIND_PLAIN);
	aml_namestring(b, name);
}

void aml_method(struct aml_buf *b, const char *name, int nargs, bool serialized)
{
	if (nargs < 0 || nargs > 7)
		b->failed = true;
	aml_byte(b, OP_METHOD);
	push(b, KIND_PLAIN);
	aml_namestring(b, name);
	aml_byte(b, (uint8_t)((nargs & 7) | (serialized ? 0x08 : 0)));
}

void aml_package(struct aml_buf *b, unsigned nelems)
{
	if (nelems > 255)
		b->failed = true;
	aml_byte(b, OP_PACKAGE);
	push(b, KIND_PLAIN);
	aml_byte(b, (uint8_t)nelems);
}

void aml_buffer(struct aml_buf *b)
{
	aml_byte(b, OP_BUFFER);
	push(b, KIND_BUFFER);
}

/* PkgLength for a body of n bytes (the encoding counts itself). */
static int pkglen_encode(size_t n, uint8_t out[4])
{
	int k;
	if (n + 1 < 0x40)
		k = 1;
	else if (n + 2 < 0x1000)
		k = 2;
	else if (n + 3 < 0x100000)
		k = 3;
	else if (n + 4 < 0x10000000)
		k = 4;
	else
		return 0;
	size_t v = n + (size_t)k;
	if (k == 1) {
		out[0] = (uint8_t)v;
	} else {
		out[0] = (uint8_t)(((k - 1) << 6) | (v & 0x0f));
		for (int i = 1; i < k; i++)
			out[i] = (uint8_t)(v >> (4 + 8 * (i - 1)));
	}
	return k;
}

void aml_close(struct aml_buf *b)
{
	if (b->failed)
		return;
	if (b->depth == 0) {
		b->failed = true;
		return;
	}
	b->depth--;
	size_t pos = b->open[b->depth].pos;
	int kind = b->open[b->depth].kind;
	size_t body = b->len - pos;

	uint8_t pre[16];
	size_t npre = 0;
	uint8_t size_enc[9];
	size_t nsize = 0;
	if (kind == KIND_BUFFER) {
		/* BufferSize: an integer term holding the byte-list length. */
		struct aml_buf t;
		aml_init(&t);
		aml_integer(&t, body);
		if (t.failed || t.len > sizeof(size_enc)) {
			aml_free(&t);
			b->failed = true;
			return;
		}
		memcpy(size_enc, t.data, t.len);
		nsize = t.len;
		aml_free(&t);
	}
	int k = pkglen_encode(body + nsize, pre);
	if (k == 0) {
		b->failed = true;
		return;
	}
	npre = (size_t)k;
	memcpy(pre + npre, size_enc, nsize);
	npre += nsize;
	if (!reserve(b, npre))
		return;
	memmove(b->data + pos + npre, b->data + pos, body);
	memcpy(b->data + pos, pre, npre);
	b->len += npre;
}

/* ---- resource descriptors ---- */

void aml_res_io(struct aml_buf *b, uint16_t min, uint16_t max, uint8_t align, uint8_t len)
{
	aml_byte(b, 0x47);        /* small item 0x08, length 7 */
	aml_byte(b, 0x01);        /* 16-bit decode */
	put_le(b, min, 2);
	put_le(b, max, 2);
	aml_byte(b, align);
	aml_byte(b, len);
}

void aml_res_irq_noflags(struct aml_buf *b, uint16_t mask)
{
	aml_byte(b, 0x22);        /* small item 0x04, length 2 */
	put_le(b, mask, 2);
}

void aml_res_mem32_fixed(struct aml_buf *b, bool rw, uint32_t base, uint32_t len)
{
	aml_byte(b, 0x86);        /* large item 0x06 */
	put_le(b, 9, 2);
	aml_byte(b, rw ? 1 : 0);
	put_le(b, base, 4);
	put_le(b, len, 4);
}

static void res_addr(struct aml_buf *b, uint8_t tag, int w, uint8_t type,
                     uint8_t gflags, uint8_t tflags, uint64_t min, uint64_t max)
{
	uint64_t len = max - min + 1;
	if (max < min)
		b->failed = true;
	aml_byte(b, tag);
	put_le(b, (uint64_t)(3 + 5 * w), 2);
	aml_byte(b, type);
	aml_byte(b, gflags);
	aml_byte(b, tflags);
	put_le(b, 0, w);          /* granularity */
	put_le(b, min, w);
	put_le(b, max, w);
	put_le(b, 0, w);          /* translation offset */
	put_le(b, len, w);
}

void aml_res_word(struct aml_buf *b, uint8_t type, uint8_t gflags, uint8_t tflags,
                  uint16_t min, uint16_t max)
{
	res_addr(b, 0x88, 2, type, gflags, tflags, min, max);
}

void aml_res_dword(struct aml_buf *b, uint8_t type, uint8_t gflags, uint8_t tflags,
                   uint32_t min, uint32_t max)
{
	res_addr(b, 0x87, 4, type, gflags, tflags, min, max);
}

void aml_res_qword(struct aml_buf *b, uint8_t type, uint8_t gflags, uint8_t tflags,
                   uint64_t min, uint64_t max)
{
	res_addr(b, 0x8a, 8, type, gflags, tflags, min, max);
}

void aml_res_ext_irq(struct aml_buf *b, uint8_t flags, uint32_t gsi)
{
	aml_byte(b, 0x89);        /* large item 0x09 */
	put_le(b, 6, 2);          /* flags, count, one 32-bit interrupt */
	aml_byte(b, flags);
	aml_byte(b, 1);
	put_le(b, gsi, 4);
}

void aml_res_end(struct aml_buf *b)
{
	aml_byte(b, 0x79);        /* small item 0x0f, length 1 */
	aml_byte(b, 0x00);        /* checksum 0: treated as valid */
}
