/*
 * aml: a small builder for ACPI Machine Language byte code (ACPI 6.x,
 * chapter 20 "ACPI Machine Language Specification") and for the resource
 * descriptors (chapter 6.4) that _CRS/_PRS buffers hold.
 *
 * Everything is appended to a growable byte buffer.  Objects that carry a
 * PkgLength (Scope, Device, Method, Package, Buffer) are opened, filled and
 * closed; the close computes and inserts the minimal PkgLength encoding.
 * Allocation failures and misuse (bad names, unbalanced open/close) set
 * b->failed; the caller checks it once at the end.
 */
#ifndef HYVE_AML_H
#define HYVE_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AML_MAX_DEPTH 16

struct aml_buf {
	uint8_t *data;
	size_t len, cap;
	bool failed;
	int depth;
	struct {
		size_t pos;     /* where the PkgLength goes */
		int kind;
	} open[AML_MAX_DEPTH];
};

void aml_init(struct aml_buf *b);
void aml_free(struct aml_buf *b);

/* Raw bytes. */
void aml_byte(struct aml_buf *b, uint8_t v);
void aml_bytes(struct aml_buf *b, const void *p, size_t n);

/* Data objects. */
void aml_integer(struct aml_buf *b, uint64_t v);   /* smallest encoding */
void aml_dword(struct aml_buf *b, uint32_t v);     /* always DWordConst */
void aml_string(struct aml_buf *b, const char *s);
/* Compressed EISA id ("PNP0A08") as the integer ACPI expects; 0 if malformed. */
uint32_t aml_eisaid_value(const char *id);
void aml_eisaid(struct aml_buf *b, const char *id);

/*
 * NameString: "\\_SB.PCI0", "_HID", "^PCI0.FOO".  Segments shorter than
 * four characters are padded with '_'.
 */
void aml_namestring(struct aml_buf *b, const char *path);

/* Name(name, <object that the caller appends next>) */
void aml_name(struct aml_buf *b, const char *name);
/* Return(<object that the caller appends next>) */
void aml_return(struct aml_buf *b);

/* Nested objects: open, append the contents, aml_close(). */
void aml_scope(struct aml_buf *b, const char *name);
void aml_device(struct aml_buf *b, const char *name);
void aml_method(struct aml_buf *b, const char *name, int nargs, bool serialized);
void aml_package(struct aml_buf *b, unsigned nelems);
void aml_buffer(struct aml_buf *b);                 /* BufferSize computed at close */
void aml_close(struct aml_buf *b);

/* Resource descriptors (to be placed inside aml_buffer ... aml_close). */
void aml_res_io(struct aml_buf *b, uint16_t min, uint16_t max, uint8_t align, uint8_t len);
void aml_res_irq_noflags(struct aml_buf *b, uint16_t mask);
void aml_res_mem32_fixed(struct aml_buf *b, bool rw, uint32_t base, uint32_t len);

/* Address space descriptors: resource types and flags. */
#define AML_RES_MEM  0
#define AML_RES_IO   1
#define AML_RES_BUS  2
#define AML_ADDR_CONSUMER  0x01   /* general flags: bit0 consumer (else producer) */
#define AML_ADDR_MIN_FIXED 0x04
#define AML_ADDR_MAX_FIXED 0x08
#define AML_MEM_RW           0x01  /* memory type-specific flags */
#define AML_MEM_NONCACHEABLE 0x00
#define AML_MEM_CACHEABLE    0x02
#define AML_IO_ENTIRE_RANGE  0x03  /* I/O type-specific flags */
/* min..max inclusive; length = max - min + 1 (0 if that overflows). */
void aml_res_word(struct aml_buf *b, uint8_t type, uint8_t gflags, uint8_t tflags,
                  uint16_t min, uint16_t max);
void aml_res_dword(struct aml_buf *b, uint8_t type, uint8_t gflags, uint8_t tflags,
                   uint32_t min, uint32_t max);
void aml_res_qword(struct aml_buf *b, uint8_t type, uint8_t gflags, uint8_t tflags,
                   uint64_t min, uint64_t max);

/* Extended interrupt descriptor flags. */
#define AML_IRQ_CONSUMER    0x01
#define AML_IRQ_EDGE        0x02   /* else level */
#define AML_IRQ_ACTIVE_LOW  0x04   /* else active-high */
#define AML_IRQ_SHARED      0x08
void aml_res_ext_irq(struct aml_buf *b, uint8_t flags, uint32_t gsi);
void aml_res_end(struct aml_buf *b);

#endif
