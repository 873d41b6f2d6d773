/*
 * libFuzzer target for the qcow2 format layer (devices/qcow2.c,
 * devices/qcow2_meta.c, devices/blk_format.c): header and table parsing
 * at open, then a few reads and writes through whatever the image's
 * tables say, then its snapshot table (list, revert, create, delete) and
 * a metadata reload.
 *
 *   clang-14 -std=c11 -D_GNU_SOURCE -g -O1 -pthread -I. \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       tests/fuzz/fuzz_qcow2.c devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c devices/qcow2_snapshot.c \
 *       core/log.c -lz -lzstd -o /tmp/fuzz_qcow2
 *
 * (-DFUZZ_STANDALONE builds a main() that replays input files.)
 *
 * Input: byte 0 is flags -- bit 0: open as a declared qcow2 (format=qcow2:
 * backing files are followed) instead of probing; bit 1: read-only; bits
 * 2-3: L2 cache size (2 tables, 8 KiB, 64 KiB, default); bits 4-7 seed the
 * operations.  The rest is the image file, written to a scratch directory
 * that also holds "raw" (a raw file) and "q" (a qcow2 whose backing file
 * is "raw"), so images may name those as backing files.  A declared image
 * whose backing name is absolute or has ".." in it is probed instead: the
 * fuzzer opens nothing outside its directory.
 *
 * Any errno is fine; a crash, leak, hang, sanitizer report or an open
 * error that is not one line is a finding.  FUZZ_QCOW2_READBACK=1 also
 * aborts when a write (or write-zeroes, discard) that succeeded does not
 * read back: true of every consistent image, but a damaged one (two L2
 * entries sharing a cluster, a live table with refcount 0) breaks it
 * legitimately, so it is for checking seeds and hand-made images.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/log.h"
#include "../../devices/blk_format.h"
#include "../../devices/qcow2_internal.h"

static char dir[128], imgpath[160];
static bool readback;

/* A small v3 qcow2 by hand (512-byte clusters, 64 KiB disk, all
 * unallocated) with backing file `backing` (format raw). */
static void make_q(const char *path, const char *backing)
{
	uint8_t f[2048] = { 0 };
	q2_put32(f, QCOW2_MAGIC);
	q2_put32(f + 4, 3);
	q2_put64(f + 8, 256);                          /* backing name */
	q2_put32(f + 16, (uint32_t)strlen(backing));
	q2_put32(f + 20, 9);                           /* cluster bits */
	q2_put64(f + 24, 65536);                       /* size */
	q2_put32(f + 36, 2);                           /* L1 entries */
	q2_put64(f + 40, 3 * 512);                     /* L1 */
	q2_put64(f + 48, 1 * 512);                     /* refcount table */
	q2_put32(f + 56, 1);
	q2_put32(f + 96, 4);                           /* 16-bit refcounts */
	q2_put32(f + 100, 104);
	q2_put32(f + 104, 0xe2792acau);                /* backing format "raw" */
	q2_put32(f + 108, 3);
	memcpy(f + 112, "raw", 3);
	memcpy(f + 256, backing, strlen(backing));
	q2_put64(f + 512, 2 * 512);                    /* refcount block */
	for (int c = 0; c < 4; c++)
		f[1024 + 2 * c + 1] = 1;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, f, sizeof(f)) != (ssize_t)sizeof(f))
		abort();
	close(fd);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/fuzz_qcow2.XXXXXX");
	if (!mkdtemp(dir))
		abort();
	char p[200];
	snprintf(p, sizeof(p), "%s/raw", dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	uint8_t b[65536];
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (uint8_t)(i * 13 + (i >> 9));
	if (fd < 0 || write(fd, b, sizeof(b)) != (ssize_t)sizeof(b))
		abort();
	close(fd);
	snprintf(p, sizeof(p), "%s/q", dir);
	make_q(p, "raw");
	snprintf(imgpath, sizeof(imgpath), "%s/img", dir);
	log_level_max = getenv("FUZZ_VERBOSE") ? LOG_DEBUG : -1;
	readback = getenv("FUZZ_QCOW2_READBACK") && strcmp(getenv("FUZZ_QCOW2_READBACK"), "0");
}

/* The backing file name an image names, if it is one we allow. */
static bool backing_name_ok(const uint8_t *d, size_t n)
{
	if (n < 20)
		return true;
	uint64_t off = q2_be64(d + 8);
	uint32_t len = q2_be32(d + 16);
	if (!off || !len)
		return true;
	if (off >= n || len > n - off || len > 1023)
		return true;   /* the parser refuses it (or reads it past the input: zeros) */
	char name[1024];
	memcpy(name, d + off, len);
	name[len] = 0;
	return name[0] != '/' && !strstr(name, "..");
}

static uint64_t st;
static uint64_t rnd(void)
{
	st ^= st << 13;
	st ^= st >> 7;
	st ^= st << 17;
	return st;
}

static uint8_t wbuf[65536], rbuf[65536];

static void op_pair(struct blk_image *img, uint64_t size, int kind)
{
	uint64_t len = 1 + rnd() % (kind == 0 ? 9000 : 40000);
	if (len > size)
		len = size;
	uint64_t off = rnd() % (size - len + 1);
	if (rnd() & 1)
		off &= ~511ULL;
	int rc;
	if (kind == 0) {
		for (uint64_t i = 0; i < len; i++)
			wbuf[i] = (uint8_t)rnd();
		rc = blk_image_write(img, wbuf, len, off);
	} else if (kind == 1) {
		rc = blk_image_write_zeroes(img, off, len, rnd() & 1);
		memset(wbuf, 0, len);
	} else {
		rc = blk_image_discard(img, off, len);
		memset(wbuf, 0, len);
	}
	if (rc || !readback)
		return;
	if (blk_image_read(img, rbuf, len, off) == 0 && memcmp(rbuf, wbuf, len)) {
		fprintf(stderr, "fuzz_qcow2: op %d at %llu+%llu succeeded but reads back differently\n", kind,
		        (unsigned long long)off, (unsigned long long)len);
		abort();
	}
}

/* The snapshot table as the image has it: list, revert to one, take one,
 * write, delete it, re-read the metadata (a checkpoint's and a migration's
 * paths through the format). */
static void snapshot_ops(struct blk_image *img, uint64_t vsize)
{
	struct blk_snapinfo *si = NULL;
	unsigned n = 0;
	char err[1024], id[32];
	if (blk_image_snapshot_list(img, &si, &n) == 0 && n) {
		const struct blk_snapinfo *s = &si[rnd() % n];
		if (blk_image_snapshot_revert(img, s->id, s->name, err, sizeof(err)) && (strchr(err, '\n') || !err[0]))
			abort();
	}
	blk_snapinfo_free(si, n);
	if (blk_image_snapshot_create(img, "fuzz", id, sizeof(id)) == 0) {
		op_pair(img, vsize, 0);
		if (rnd() & 1)
			blk_image_snapshot_delete(img, id);
	}
	if (blk_image_reload(img, err, sizeof(err)) && (strchr(err, '\n') || !err[0]))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!dir[0])
		setup();
	if (size < 1 || size > (4u << 20))
		return 0;
	uint8_t flags = data[0];
	data++;
	size--;
	int fd = open(imgpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	close(fd);

	static const uint64_t l2c[4] = { 1, 8192, 65536, 0 };
	struct blk_open_opts o = { .ro = flags & 2, .l2cache = l2c[(flags >> 2) & 3] };
	bool declared = (flags & 1) && backing_name_ok(data, size);
	char err[1024];
	struct blk_image *img = blk_image_open(imgpath, declared ? "qcow2" : NULL, &o, err, sizeof(err));
	if (!img) {
		if (log_level_max >= LOG_DEBUG)
			fprintf(stderr, "fuzz_qcow2: %s open: %s\n", declared ? "declared" : "probed", err);
		if (strchr(err, '\n') || !err[0])
			abort();   /* errors are one line */
		return 0;
	}
	if (log_level_max >= LOG_DEBUG)
		fprintf(stderr, "fuzz_qcow2: %s open: %s, %llu bytes%s\n", declared ? "declared" : "probed",
		        blk_image_format(img), (unsigned long long)blk_image_size(img), o.ro ? ", read-only" : "");
	uint64_t vsize = blk_image_size(img);
	st = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(flags >> 4) ^ (uint64_t)size << 8;
	if (vsize) {
		uint64_t n = vsize < sizeof(rbuf) ? vsize : sizeof(rbuf);
		blk_image_read(img, rbuf, n, 0);
		blk_image_read(img, rbuf, n, vsize - n);
		uint64_t off = rnd() % vsize, len = 1 + rnd() % sizeof(rbuf);
		if (len > vsize - off)
			len = vsize - off;
		blk_image_read(img, rbuf, len, off);
		if (!o.ro) {
			for (int i = 0; i < 4; i++)
				op_pair(img, vsize, (int)(rnd() % 3));
			blk_image_flush(img);
			snapshot_ops(img, vsize);
		}
	}
	blk_image_close(img);
	return 0;
}

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f)
			continue;
		static uint8_t buf[4 << 20];
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
		printf("%s: ok\n", argv[i]);
	}
	return 0;
}
#endif
