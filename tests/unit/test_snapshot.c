/*
 * Unit tests for core/snapshot.c: the writer/reader every device's save and
 * load hook uses.  The reader must never read past a section and must make
 * a corrupt section detectable with one check at the end.
 * test-sources: core/snapshot.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/snapshot.h"

static int failures;
#define CHECK(cond, what)                                                                   \
	do {                                                                                \
		if (cond)                                                                   \
			printf("ok - %s\n", what);                                          \
		else {                                                                      \
			printf("FAIL - %s (line %d)\n", what, __LINE__);                    \
			failures++;                                                         \
		}                                                                           \
	} while (0)

static int dummy_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	(void)arg; (void)out; (void)err; (void)errlen;
	return 0;
}

static int dummy_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)arg; (void)in; (void)version; (void)err; (void)errlen;
	return 0;
}

int main(void)
{
	struct snap_buf sb;
	sb_init(&sb);
	sb_u8(&sb, 0xab);
	sb_u16(&sb, 0x1234);
	sb_u32(&sb, 0xdeadbeef);
	sb_u64(&sb, 0x0102030405060708ULL);
	sb_bool(&sb, true);
	sb_str(&sb, "hello");
	sb_str(&sb, NULL);
	CHECK(!sb.failed && sb.len == 1 + 2 + 4 + 8 + 1 + 4 + 5 + 4, "writer lengths");
	CHECK(sb.data[1] == 0x34 && sb.data[2] == 0x12, "little-endian on every host");

	struct snap_rd rd;
	char s[16];
	bool was_null;
	sr_init(&rd, sb.data, sb.len);
	CHECK(sr_u8(&rd) == 0xab && sr_u16(&rd) == 0x1234 && sr_u32(&rd) == 0xdeadbeef &&
	      sr_u64(&rd) == 0x0102030405060708ULL && sr_bool(&rd), "fields read back");
	CHECK(sr_str(&rd, s, sizeof(s), &was_null) && strcmp(s, "hello") == 0 && !was_null, "string read back");
	CHECK(!sr_str(&rd, s, sizeof(s), &was_null) && was_null && sr_ok(&rd), "NULL string read back");
	CHECK(sr_done(&rd), "all bytes consumed");
	CHECK(sr_u32(&rd) == 0 && !sr_ok(&rd) && !sr_done(&rd), "reading past the end: 0 and overrun");
	CHECK(sr_u64(&rd) == 0 && !sr_ok(&rd), "overrun is sticky");

	/* Every truncation of the buffer is caught by one check at the end. */
	int caught = 0;
	for (size_t n = 0; n < sb.len; n++) {
		sr_init(&rd, sb.data, n);
		sr_u8(&rd); sr_u16(&rd); sr_u32(&rd); sr_u64(&rd); sr_bool(&rd);
		sr_str(&rd, s, sizeof(s), NULL);
		sr_str(&rd, s, sizeof(s), NULL);
		caught += !sr_done(&rd);
	}
	CHECK(caught == (int)sb.len, "every truncated length is detected");

	/* A string longer than the caller's buffer, or with a NUL inside, is corrupt. */
	sr_init(&rd, sb.data + 16, 9);
	CHECK(!sr_str(&rd, s, 4, NULL) && !sr_ok(&rd), "string longer than the buffer refused");
	uint8_t evil[] = { 3, 0, 0, 0, 'a', 0, 'b' };
	sr_init(&rd, evil, sizeof(evil));
	CHECK(!sr_str(&rd, s, sizeof(s), NULL) && !sr_ok(&rd), "embedded NUL refused");
	uint8_t huge[] = { 0xfe, 0xff, 0xff, 0xff, 'x' };
	sr_init(&rd, huge, sizeof(huge));
	CHECK(!sr_str(&rd, s, sizeof(s), NULL) && !sr_ok(&rd), "length beyond the section refused");
	uint8_t notbool = 2;
	sr_init(&rd, &notbool, 1);
	sr_bool(&rd);
	CHECK(!sr_ok(&rd), "a boolean other than 0/1 is corrupt");
	sb_free(&sb);

	/* Registry: unique names, bounded length. */
	static const struct snapshot_ops ops = { .version = 1, .save = dummy_save, .load = dummy_load };
	CHECK(snapshot_register("uart.com1", &ops, NULL) == 0, "register a device");
	CHECK(snapshot_register("uart.com1", &ops, NULL) != 0, "duplicate name refused");
	CHECK(snapshot_register("a-name-that-is-far-too-long-for-a-section-header-field", &ops, NULL) != 0,
	      "over-long name refused");
	CHECK(snapshot_count() == 1 && snapshot_find("uart.com1") && !snapshot_find("rtc"), "lookup");

	printf("%s\n", failures ? "FAILED" : "all passed");
	return failures ? 1 : 0;
}
