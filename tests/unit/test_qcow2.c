/*
 * Unit tests for the disk image format layer (devices/blk_format.c,
 * devices/qcow2.c, devices/qcow2_meta.c, devices/qcow2_snapshot.c) and blockif's use of it, with the
 * real qemu-img as the counterpart: images made by qemu-img are read
 * through hyve and compared with `qemu-img convert -O raw`; images written
 * through hyve must pass `qemu-img check` and convert to the expected
 * bytes; processes killed in the middle of writing must leave images that
 * `qemu-img check` does not call corrupt.
 *
 * Exit status 77 (skip) without qemu-img.  No KVM needed.  One line per
 * check ("ok - ..." / "FAIL - ...").  QCOW2_TEST_POINTS=N stops the
 * writers at N points per crash test (default 30; plus every write of a
 * refcount table replacement) and kills 10 instead of 4 random writers;
 * QCOW2_TEST_DIR picks the scratch directory (default /dev/shm), and
 * QCOW2_TEST_KEEP=1 keeps it.
 *
 * test-sources: devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c devices/qcow2_snapshot.c devices/blockif.c core/sandbox.c core/sandbox_landlock.c core/snapshot.c
 * test-libs: -lz -lzstd -luring -lseccomp
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../core/log.h"
#include "../../core/mevent.h"
#include "../../core/snapshot.h"
#include "../../devices/blk_format.h"
#include "../../devices/blockif.h"
#include "../../devices/qcow2_internal.h"

/* ---- reporting ---- */

static int npass, nfail;

static void check(bool ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(bool ok, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ok) {
		npass++;
		printf("ok - %s\n", msg);
	} else {
		nfail++;
		printf("FAIL - %s (test_qcow2.c:%d)\n", msg, line);
	}
	fflush(stdout);
}
#define CHECK(cond, ...) check((cond), __LINE__, __VA_ARGS__)

/* ---- fakes of the core ---- */

static int nwarn;
static char last_warn[512];

void logmsg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (lvl <= LOG_WARN) {
		nwarn++;
		vsnprintf(last_warn, sizeof(last_warn), fmt, ap);
	}
	va_end(ap);
	if (getenv("TEST_VERBOSE")) {
		va_start(ap, fmt);
		fprintf(stderr, "hyve: ");
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	abort();
}

/* blockif's io_uring path wants the event loop: without one it uses its threads. */
struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg)
{
	(void)fd; (void)kind; (void)cb; (void)arg;
	return NULL;
}
int mevent_delete(struct mevent *ev) { (void)ev; return 0; }

/* ---- helpers ---- */

static char dir[256];
static bool have_qemu_io;

static const char *P(const char *name)
{
	static char bufs[8][512];
	static int k;
	char *b = bufs[k++ % 8];
	snprintf(b, 512, "%s/%s", dir, name);
	return b;
}

/* Run a shell command (output to dir/cmd.log); its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048], full[2400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd %s && { %s ; } >cmd.log 2>&1", dir, cmd);
	int st = system(full);
	int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "[%d] %s\n", rc, cmd);
	return rc;
}

static void show_log(void)
{
	char p[600];
	snprintf(p, sizeof(p), "%s/cmd.log", dir);
	FILE *f = fopen(p, "r");
	if (!f)
		return;
	char line[512];
	int n = 0;
	while (fgets(line, sizeof(line), f) && n++ < 15)
		printf("    | %s", line);
	fclose(f);
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(n ? (size_t)n : 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

static void write_file(const char *path, const uint8_t *b, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(b, 1, len, f) != len)
		abort();
	fclose(f);
}

static void patch(const char *path, uint64_t off, const void *b, size_t len)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0 || pwrite(fd, b, len, (off_t)off) != (ssize_t)len)
		abort();
	close(fd);
}

static void patch32(const char *path, uint64_t off, uint32_t v)
{
	uint8_t b[4];
	q2_put32(b, v);
	patch(path, off, b, 4);
}

static void patch64(const char *path, uint64_t off, uint64_t v)
{
	uint8_t b[8];
	q2_put64(b, v);
	patch(path, off, b, 8);
}

static uint64_t peek64(const char *path, uint64_t off)
{
	uint8_t b[8] = { 0 };
	int fd = open(path, O_RDONLY);
	if (fd < 0 || pread(fd, b, 8, (off_t)off) != 8)
		abort();
	close(fd);
	return q2_be64(b);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}
static uint64_t rndn(uint64_t n) { return n ? rnd() % n : 0; }

static void fill_random(uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rnd();
}

/* A raw reference: random data, zero stretches, a repeated pattern. */
static uint8_t *make_reference(const char *name, size_t size)
{
	uint8_t *b = calloc(1, size);
	for (size_t o = 0; o < size;) {
		size_t n = 512 * (1 + rndn(300));
		if (n > size - o)
			n = size - o;
		switch (rndn(3)) {
		case 0: fill_random(b + o, n); break;
		case 1: break;   /* zeros */
		default:
			for (size_t i = 0; i < n; i++)
				b[o + i] = (uint8_t)(i * 7 + o / 512);   /* compresses well */
		}
		o += n;
	}
	write_file(P(name), b, size);
	return b;
}

/* What qemu-img makes of an image, as raw bytes. */
static uint8_t *qemu_raw(const char *img, size_t *len)
{
	if (sh("qemu-img convert -O raw '%s' conv.raw", img)) {
		show_log();
		return NULL;
	}
	return read_file(P("conv.raw"), len);
}

/* `qemu-img check`: 0 clean, 2 corrupt, 3 leaks only. */
static int qemu_check(const char *img)
{
	return sh("qemu-img check '%s'", img);
}

static struct blk_image *open_img(const char *name, const char *fmt, bool ro, uint64_t l2cache, char *err,
                                  size_t errlen)
{
	struct blk_open_opts o = { .ro = ro, .l2cache = l2cache };
	return blk_image_open(P(name), fmt, &o, err, errlen);
}

/* Read the whole image in random pieces with split iovecs; compare. */
static bool read_compare(struct blk_image *img, const uint8_t *want, size_t size, const char **why)
{
	uint8_t *got = malloc(size);
	*why = "";
	for (size_t o = 0; o < size;) {
		size_t n = 1 + rndn(rndn(4) ? 70000 : 600000);
		if (n > size - o)
			n = size - o;
		struct iovec v[3];
		size_t a = rndn(n + 1), b = rndn(n - a + 1);
		v[0] = (struct iovec){ got + o, a };
		v[1] = (struct iovec){ got + o + a, b };
		v[2] = (struct iovec){ got + o + a + b, n - a - b };
		int rc = blk_image_readv(img, v, 3, o);
		if (rc) {
			*why = strerror(rc);
			free(got);
			return false;
		}
		o += n;
	}
	bool same = memcmp(got, want, size) == 0;
	if (!same)
		*why = "content differs";
	free(got);
	return same;
}

/* ---- random workload, mirrored in a model ---- */

enum { OP_WRITE, OP_DISCARD, OP_ZERO_UNMAP, OP_ZERO_KEEP, OP_FLUSH, OP_READ };

struct op {
	int kind;
	uint64_t off, len;
	uint64_t seed;
};

static struct op random_op(uint64_t size, uint64_t cs, bool byte_granular)
{
	struct op op = { 0 };
	uint64_t r = rndn(100);
	op.kind = r < 62 ? OP_WRITE : r < 74 ? OP_DISCARD : r < 82 ? OP_ZERO_UNMAP : r < 90 ? OP_ZERO_KEEP
	        : r < 95 ? OP_FLUSH : OP_READ;
	uint64_t unit = byte_granular && rndn(3) == 0 ? 1 : 512;
	uint64_t maxlen = rndn(8) == 0 ? (1 << 20) : 3 * cs;
	op.len = unit * (1 + rndn(maxlen / unit));
	if (op.len > size)
		op.len = size;
	op.off = unit * rndn((size - op.len) / unit + 1);
	if (rndn(4) == 0) {   /* cluster-aligned */
		op.off &= ~(cs - 1);
		if (op.off + op.len > size)
			op.len = size - op.off;
	}
	op.seed = rnd();
	return op;
}

static void op_data(const struct op *op, uint8_t *b)
{
	uint64_t s = op->seed | 1;
	for (uint64_t i = 0; i < op->len; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		b[i] = (uint8_t)s;
	}
}

static void model_apply(uint8_t *model, const struct op *op)
{
	if (op->kind == OP_WRITE)
		op_data(op, model + op->off);
	else if (op->kind == OP_DISCARD || op->kind == OP_ZERO_UNMAP || op->kind == OP_ZERO_KEEP)
		memset(model + op->off, 0, op->len);
}

/* Run one op through the layer; 0 or an errno (OP_READ compares with model). */
static int op_run(struct blk_image *img, const struct op *op, const uint8_t *model)
{
	uint8_t *b;
	int rc = 0;
	switch (op->kind) {
	case OP_WRITE: {
		b = malloc(op->len);
		op_data(op, b);
		size_t a = (size_t)rndn(op->len + 1);
		struct iovec v[2] = { { b, a }, { b + a, op->len - a } };
		rc = blk_image_writev(img, v, 2, op->off);
		free(b);
		return rc;
	}
	case OP_DISCARD: return blk_image_discard(img, op->off, op->len);
	case OP_ZERO_UNMAP: return blk_image_write_zeroes(img, op->off, op->len, true);
	case OP_ZERO_KEEP: return blk_image_write_zeroes(img, op->off, op->len, false);
	case OP_FLUSH: return blk_image_flush(img);
	default:
		b = malloc(op->len);
		rc = blk_image_read(img, b, op->len, op->off);
		if (!rc && model && memcmp(b, model + op->off, op->len))
			rc = EBADMSG;
		free(b);
		return rc;
	}
}

/*
 * Open NAME with the layer, run n random ops mirrored in a copy of
 * initial, close; then qemu-img check must be clean and qemu-img's raw
 * view equal the model.  Returns the model (caller frees).
 */
static uint8_t *workload(const char *what, const char *name, const uint8_t *initial, size_t size, int nops,
                         uint64_t l2cache, bool byte_granular)
{
	char err[1024];
	struct blk_image *img = open_img(name, "qcow2", false, l2cache, err, sizeof(err));
	CHECK(img != NULL, "%s: open for writing%s%s", what, img ? "" : ": ", img ? "" : err);
	if (!img)
		return NULL;
	uint64_t cs = 1ULL << ((struct qcow2 *)img->priv)->cbits;
	uint8_t *model = malloc(size);
	memcpy(model, initial, size);
	int bad = 0;
	for (int i = 0; i < nops; i++) {
		struct op op = random_op(size, cs, byte_granular);
		int rc = op_run(img, &op, model);
		if (rc && bad++ < 3)
			printf("    op %d (kind %d, %llu+%llu): %s\n", i, op.kind, (unsigned long long)op.off,
			       (unsigned long long)op.len, strerror(rc));
		model_apply(model, &op);
	}
	CHECK(bad == 0, "%s: %d ops through the layer, %d failed", what, nops, bad);
	const char *why = "";
	bool same = read_compare(img, model, size, &why);
	CHECK(same, "%s: reads back as written %s", what, why);
	blk_image_close(img);
	int crc = qemu_check(P(name));
	CHECK(crc == 0, "%s: qemu-img check clean (status %d)", what, crc);
	if (crc)
		show_log();
	size_t len;
	uint8_t *raw = qemu_raw(P(name), &len);
	CHECK(raw && len == size && !memcmp(raw, model, size), "%s: qemu-img convert -O raw equals the expected bytes",
	      what);
	free(raw);
	return model;
}

/* ---- tests ---- */

#define DISK (3u * 1024 * 1024 + 3 * 512)   /* not a multiple of any cluster size */

static void test_read_matrix(void)
{
	uint8_t *ref = make_reference("ref.raw", DISK);
	static const unsigned cls[] = { 512, 4096, 65536, 2 << 20 };
	for (unsigned i = 0; i < 4; i++) {
		for (int v = 2; v <= 3; v++) {
			for (int comp = 0; comp < 3; comp++) {
				if (comp == 2 && v == 2)
					continue;   /* zstd needs v3 */
				char what[128];
				snprintf(what, sizeof(what), "read v%d cluster %u%s", v, cls[i],
				         comp == 0 ? "" : comp == 1 ? " compressed (zlib)" : " compressed (zstd)");
				if (sh("qemu-img convert %s -O qcow2 -o cluster_size=%u,compat=%s%s ref.raw m.qcow2",
				       comp ? "-c" : "", cls[i], v == 2 ? "0.10" : "1.1",
				       comp == 2 ? ",compression_type=zstd" : "")) {
					CHECK(false, "%s: qemu-img convert", what);
					show_log();
					continue;
				}
				char err[1024];
				struct blk_image *img = open_img("m.qcow2", NULL, true, 0, err, sizeof(err));
				CHECK(img && !strcmp(blk_image_format(img), "qcow2") && blk_image_size(img) == DISK,
				      "%s: probed and opened%s%s", what, img ? "" : ": ", img ? "" : err);
				if (!img)
					continue;
				const char *why = "";
				bool same = read_compare(img, ref, DISK, &why);
				CHECK(same, "%s: equals the source %s", what, why);
				blk_image_close(img);
			}
		}
	}
	/* And compared with qemu-img's own view of a preallocated image. */
	if (!sh("qemu-img create -f qcow2 -o preallocation=metadata,cluster_size=4096 pre.qcow2 1M")) {
		char err[1024];
		struct blk_image *img = open_img("pre.qcow2", "qcow2", true, 0, err, sizeof(err));
		size_t len;
		uint8_t *raw = qemu_raw(P("pre.qcow2"), &len);
		const char *why = "open failed";
		bool same = img && raw && len == 1 << 20 && read_compare(img, raw, len, &why);
		CHECK(same, "read preallocation=metadata image: equals qemu-img's view %s", same ? "" : why);
		blk_image_close(img);
		free(raw);
	}
	free(ref);
}

static void test_writes(void)
{
	uint8_t *ref = make_reference("wref.raw", DISK);
	uint8_t *zero = calloc(1, DISK);
	struct {
		const char *what, *create;
		const uint8_t *initial;
		uint64_t l2cache;
		int nops;
	} cases[] = {
		{ "write v3 64K empty", "qemu-img create -f qcow2 w.qcow2 %u", zero, 0, 300 },
		{ "write v2 64K empty", "qemu-img create -f qcow2 -o compat=0.10 w.qcow2 %u", zero, 0, 300 },
		{ "write v3 4K from data, l2cache 2 tables",
		  "qemu-img convert -O qcow2 -o cluster_size=4096 wref.raw w.qcow2 && : %u", ref, 8192, 400 },
		{ "write v3 512B refcount_bits=64 (refcount table grows)",
		  "qemu-img create -f qcow2 -o cluster_size=512,refcount_bits=64 w.qcow2 %u", zero, 0, 400 },
		{ "write v3 4K refcount_bits=1", "qemu-img create -f qcow2 -o cluster_size=4096,refcount_bits=1 w.qcow2 %u",
		  zero, 0, 300 },
		{ "write v3 2M clusters", "qemu-img convert -O qcow2 -o cluster_size=2M wref.raw w.qcow2 && : %u", ref, 0, 60 },
		{ "write over compressed (zlib, v2)",
		  "qemu-img convert -c -O qcow2 -o compat=0.10,cluster_size=4096 wref.raw w.qcow2 && : %u", ref, 0, 300 },
		{ "write over compressed (zstd)",
		  "qemu-img convert -c -O qcow2 -o compression_type=zstd wref.raw w.qcow2 && : %u", ref, 0, 300 },
		{ "write v3 preallocation=metadata",
		  "qemu-img create -f qcow2 -o preallocation=metadata,cluster_size=8192 w.qcow2 %u", zero, 0, 300 },
		{ "write v3 lazy_refcounts (clean)", "qemu-img create -f qcow2 -o lazy_refcounts=on w.qcow2 %u", zero, 0,
		  200 },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unlink(P("w.qcow2"));
		if (sh(cases[i].create, DISK)) {
			CHECK(false, "%s: create", cases[i].what);
			show_log();
			continue;
		}
		uint64_t rt0 = peek64(P("w.qcow2"), 48);
		free(workload(cases[i].what, "w.qcow2", cases[i].initial, DISK, cases[i].nops, cases[i].l2cache,
		              i % 2 == 0));
		if (strstr(cases[i].what, "grows"))
			CHECK(peek64(P("w.qcow2"), 48) != rt0, "%s: the refcount table was replaced", cases[i].what);
	}
	free(ref);
	free(zero);
}

/* Backing chains: raw and qcow2 bases, deep chains, backing smaller than the overlay. */
static void test_backing(void)
{
	uint8_t *base = make_reference("base.raw", DISK);
	/* raw base, qcow2 overlay */
	sh("qemu-img create -f qcow2 -b base.raw -F raw ov.qcow2");
	char err[1024];
	struct blk_image *img = open_img("ov.qcow2", "qcow2", true, 0, err, sizeof(err));
	const char *why = err;
	bool same = img && read_compare(img, base, DISK, &why);
	CHECK(same, "backing raw: overlay reads the base %s", same ? "" : why);
	blk_image_close(img);
	uint8_t *m = workload("write over raw backing", "ov.qcow2", base, DISK, 300, 0, true);
	size_t len;
	uint8_t *b2 = read_file(P("base.raw"), &len);
	CHECK(b2 && len == DISK && !memcmp(b2, base, DISK), "backing raw: base file unchanged");
	free(b2);
	free(m);

	/* A chain: base.raw <- l1 (qcow2, 4K) <- l2 (qcow2 v2, 64K, compressed) <- ... <- top */
	sh("qemu-img convert -O qcow2 -o cluster_size=4096 base.raw c0.qcow2");
	uint8_t *want = malloc(DISK);
	memcpy(want, base, DISK);
	const int depth = 6;
	for (int k = 1; k <= depth; k++) {
		sh("qemu-img create -f qcow2 -o %s -b c%d.qcow2 -F qcow2 c%d.qcow2", k % 2 ? "compat=0.10" : "cluster_size=16k",
		   k - 1, k);
		char name[32];
		snprintf(name, sizeof(name), "c%d.qcow2", k);
		img = open_img(name, "qcow2", false, 0, err, sizeof(err));
		if (!img) {
			CHECK(false, "chain level %d: open: %s", k, err);
			break;
		}
		for (int j = 0; j < 20; j++) {
			struct op op = random_op(DISK, 4096, false);
			op.kind = j % 5 == 4 ? OP_DISCARD : OP_WRITE;
			op_run(img, &op, NULL);
			model_apply(want, &op);
		}
		blk_image_close(img);
	}
	img = open_img("c6.qcow2", "qcow2", true, 0, err, sizeof(err));
	why = err;
	same = img && read_compare(img, want, DISK, &why);
	CHECK(same, "chain of %d qcow2 images over a raw file: reads %s", depth + 1, same ? "" : why);
	blk_image_close(img);
	uint8_t *raw = qemu_raw(P("c6.qcow2"), &len);
	CHECK(raw && len == DISK && !memcmp(raw, want, DISK), "chain: qemu-img agrees");
	free(raw);
	int crc = 0;
	for (int k = 1; k <= depth; k++) {
		char name[32];
		snprintf(name, sizeof(name), "c%d.qcow2", k);
		crc |= qemu_check(P(name));
	}
	CHECK(crc == 0, "chain: every level passes qemu-img check");

	/* A base smaller than the overlay: the rest reads as zeros. */
	sh("head -c 1000000 base.raw >small.raw && qemu-img create -f qcow2 -b small.raw -F raw big.qcow2 %u", DISK);
	memcpy(want, base, 1000000);
	memset(want + 1000000, 0, DISK - 1000000);
	img = open_img("big.qcow2", "qcow2", true, 0, err, sizeof(err));
	why = err;
	same = img && read_compare(img, want, DISK, &why);
	CHECK(same, "backing shorter than the overlay reads zeros past it %s", same ? "" : why);
	blk_image_close(img);
	free(workload("write over a short backing file", "big.qcow2", want, DISK, 200, 0, false));

	/* v2 overlay: discard over backing data must write zeros (no zero flag). */
	sh("qemu-img create -f qcow2 -o compat=0.10 -b base.raw -F raw v2ov.qcow2");
	free(workload("v2 overlay discards over backing data", "v2ov.qcow2", base, DISK, 200, 0, false));
	free(want);
	free(base);
}

/* Internal snapshots: clusters with refcount 2 are copied on write; the snapshot keeps its data. */
static void test_snapshots(void)
{
	uint8_t *ref = make_reference("sref.raw", DISK);
	sh("qemu-img convert -O qcow2 -o cluster_size=4096 sref.raw s.qcow2 && qemu-img snapshot -c snap1 s.qcow2");
	free(workload("write with an internal snapshot (copy-on-write of shared clusters)", "s.qcow2", ref, DISK, 300, 0,
	              false));
	size_t len = 0;
	uint8_t *raw = NULL;
	if (!sh("qemu-img convert -l snapshot.name=snap1 -O raw s.qcow2 snap.raw"))
		raw = read_file(P("snap.raw"), &len);
	CHECK(raw && len == DISK && !memcmp(raw, ref, DISK), "the snapshot still holds the original data");
	free(raw);
	free(ref);
}

/* n random ops on an open image, mirrored in model; the number that failed. */
static int run_ops(struct blk_image *img, uint8_t *model, size_t size, int n)
{
	uint64_t cs = 1ULL << ((struct qcow2 *)img->priv)->cbits;
	int bad = 0;
	for (int i = 0; i < n; i++) {
		struct op op = random_op(size, cs, false);
		if (op_run(img, &op, model))
			bad++;
		model_apply(model, &op);
	}
	return bad;
}

/* qemu-img's raw view of snapshot ID of an image equals want. */
static bool snapshot_equals(const char *name, const char *id, const uint8_t *want, size_t size)
{
	size_t len = 0;
	uint8_t *raw = NULL;
	if (!sh("qemu-img convert -l snapshot.id=%s -O raw '%s' snap.raw", id, P(name)))
		raw = read_file(P("snap.raw"), &len);
	bool same = raw && len == size && !memcmp(raw, want, size);
	free(raw);
	return same;
}

/* `qemu-img snapshot -l` shows a snapshot with this ID and name. */
static bool qemu_lists(const char *name, const char *id, const char *sname)
{
	return !sh("qemu-img snapshot -l '%s' | awk '$1 == \"%s\" && $2 == \"%s\" { f = 1 } END { exit !f }'",
	           P(name), id, sname);
}

/*
 * Snapshots made, reverted and deleted by hyve (a checkpoint's disk half):
 * QEMU must list them, read them back as they were, find the image clean
 * after each step; reverting brings the disk back, deleting restores the
 * COPIED flags (qemu-img check counts a wrong one as corruption).
 */
static void hyve_snapshot_case(const char *what, const char *create)
{
	uint8_t *m0 = make_reference("hs.raw", DISK);
	if (sh("%s", create)) {
		show_log();
		CHECK(false, "%s: image created", what);
		free(m0);
		return;
	}
	size_t len = 0;
	uint8_t *base = qemu_raw(P("hs.qcow2"), &len);   /* the image as created (a backing file may show through) */
	char err[1024], id1[32] = "", id2[32] = "";
	struct blk_image *img = open_img("hs.qcow2", "qcow2", false, 0, err, sizeof(err));
	CHECK(img && base, "%s: opened%s%s", what, img ? "" : ": ", img ? "" : err);
	if (!img || !base) {
		free(m0);
		free(base);
		return;
	}
	uint8_t *m1 = malloc(DISK), *m2 = malloc(DISK);
	memcpy(m1, base, DISK);
	int bad = run_ops(img, m1, DISK, 60);
	int rc = blk_image_snapshot_create(img, "/ckpt/one.ckpt", id1, sizeof(id1));
	memcpy(m2, m1, DISK);
	bad += run_ops(img, m2, DISK, 150);
	CHECK(rc == 0 && bad == 0, "%s: snapshot '%s' taken between writes (%s, %d ops failed)", what, id1, strerror(rc),
	      bad);
	const char *why = "";
	CHECK(read_compare(img, m2, DISK, &why), "%s: the active disk reads as written after it %s", what, why);
	blk_image_close(img);
	int crc = qemu_check(P("hs.qcow2"));
	CHECK(crc == 0, "%s: qemu-img check clean with the snapshot (status %d)", what, crc);
	if (crc)
		show_log();
	CHECK(qemu_lists("hs.qcow2", id1, "/ckpt/one.ckpt"), "%s: qemu-img snapshot -l lists it", what);
	CHECK(snapshot_equals("hs.qcow2", id1, m1, DISK), "%s: QEMU reads the snapshot as the disk was", what);
	uint8_t *raw = qemu_raw(P("hs.qcow2"), &len);
	CHECK(raw && len == DISK && !memcmp(raw, m2, DISK), "%s: QEMU reads the active disk as written", what);
	free(raw);

	/* A second snapshot, more writes, then back to the first. */
	img = open_img("hs.qcow2", "qcow2", false, 0, err, sizeof(err));
	uint8_t *m3 = malloc(DISK);
	memcpy(m3, m2, DISK);
	rc = img ? blk_image_snapshot_create(img, "/ckpt/two.ckpt", id2, sizeof(id2)) : EIO;
	bad = img ? run_ops(img, m3, DISK, 150) : 1;
	CHECK(rc == 0 && bad == 0 && strcmp(id1, id2), "%s: a second snapshot '%s' (%s)", what, id2, strerror(rc));
	rc = img ? blk_image_snapshot_revert(img, id1, "/ckpt/two.ckpt", err, sizeof(err)) : EIO;
	CHECK(rc == ENOENT && strstr(err, "has no snapshot"), "%s: revert with the wrong name refused: %s", what, err);
	rc = img ? blk_image_snapshot_revert(img, id1, "/ckpt/one.ckpt", err, sizeof(err)) : EIO;
	CHECK(rc == 0, "%s: reverted to the first%s%s", what, rc ? ": " : "", rc ? err : "");
	why = "";
	CHECK(img && read_compare(img, m1, DISK, &why), "%s: the disk reads as at the first snapshot %s", what, why);
	memcpy(m3, m1, DISK);
	bad = img ? run_ops(img, m3, DISK, 100) : 1;
	CHECK(bad == 0, "%s: writes after the revert", what);
	blk_image_close(img);
	crc = qemu_check(P("hs.qcow2"));
	CHECK(crc == 0, "%s: qemu-img check clean after the revert (status %d)", what, crc);
	if (crc)
		show_log();
	raw = qemu_raw(P("hs.qcow2"), &len);
	CHECK(raw && len == DISK && !memcmp(raw, m3, DISK), "%s: QEMU reads the reverted disk as written", what);
	free(raw);
	CHECK(snapshot_equals("hs.qcow2", id1, m1, DISK) && snapshot_equals("hs.qcow2", id2, m2, DISK),
	      "%s: both snapshots unchanged", what);

	/* Delete both: every cluster is the active image's alone again. */
	img = open_img("hs.qcow2", "qcow2", false, 0, err, sizeof(err));
	rc = img ? blk_image_snapshot_delete(img, id1) : EIO;
	int rc2 = img ? blk_image_snapshot_delete(img, id2) : EIO;
	int rc3 = img ? blk_image_snapshot_delete(img, id2) : EIO;
	struct blk_snapinfo *si = NULL;
	unsigned nsi = 99;
	if (img)
		blk_image_snapshot_list(img, &si, &nsi);
	blk_snapinfo_free(si, nsi);
	CHECK(rc == 0 && rc2 == 0 && rc3 == ENOENT && nsi == 0, "%s: both deleted (%s, %s), none left", what,
	      strerror(rc), strerror(rc2));
	bad = img ? run_ops(img, m3, DISK, 100) : 1;
	blk_image_close(img);
	crc = qemu_check(P("hs.qcow2"));
	CHECK(crc == 0 && bad == 0, "%s: qemu-img check clean after deleting them (status %d)", what, crc);
	if (crc)
		show_log();
	raw = qemu_raw(P("hs.qcow2"), &len);
	CHECK(raw && len == DISK && !memcmp(raw, m3, DISK), "%s: QEMU reads the disk as written", what);
	free(raw);
	free(m0);
	free(m1);
	free(m2);
	free(m3);
	free(base);
}

static void test_hyve_snapshots(void)
{
	hyve_snapshot_case("snapshots, v3 4K", "qemu-img convert -O qcow2 -o cluster_size=4096 hs.raw hs.qcow2");
	hyve_snapshot_case("snapshots, v2 64K", "qemu-img convert -O qcow2 -o compat=0.10 hs.raw hs.qcow2");
	hyve_snapshot_case("snapshots, v3 512B compressed, refcount_bits=8",
	                   "qemu-img convert -c -O qcow2 -o cluster_size=512,refcount_bits=8 hs.raw hs.qcow2");
	hyve_snapshot_case("snapshots, v3 64K overlay on a raw backing file",
	                   "qemu-img create -f qcow2 -b hs.raw -F raw hs.qcow2");

	/* Next to a snapshot QEMU made; reverting to QEMU's. */
	uint8_t *m0 = make_reference("hq.raw", DISK);
	sh("qemu-img convert -O qcow2 -o cluster_size=4096 hq.raw hq.qcow2 && qemu-img snapshot -c qemu1 hq.qcow2");
	char err[1024], id[32] = "";
	struct blk_image *img = open_img("hq.qcow2", "qcow2", false, 0, err, sizeof(err));
	uint8_t *m1 = malloc(DISK);
	memcpy(m1, m0, DISK);
	int bad = img ? run_ops(img, m1, DISK, 100) : 1;
	int rc = img ? blk_image_snapshot_create(img, "hyve1", id, sizeof(id)) : EIO;
	CHECK(rc == 0 && !strcmp(id, "2"), "QEMU's snapshot has ID 1, hyve's gets ID '%s'", id);
	struct blk_snapinfo *si = NULL;
	unsigned nsi = 0;
	if (img)
		blk_image_snapshot_list(img, &si, &nsi);
	CHECK(nsi == 2 && !strcmp(si[0].id, "1") && !strcmp(si[0].name, "qemu1") && !strcmp(si[1].name, "hyve1"),
	      "hyve lists QEMU's snapshot and its own");
	blk_snapinfo_free(si, nsi);
	rc = img ? blk_image_snapshot_revert(img, "1", "qemu1", err, sizeof(err)) : EIO;
	const char *why = "";
	CHECK(rc == 0 && read_compare(img, m0, DISK, &why), "reverted to QEMU's snapshot: reads as then %s", why);
	blk_image_close(img);
	int crc = qemu_check(P("hq.qcow2"));
	CHECK(crc == 0 && bad == 0 && snapshot_equals("hq.qcow2", "2", m1, DISK),
	      "qemu-img check clean (status %d), hyve's snapshot holds what was written", crc);

	/* One-bit refcounts cannot count a second reference: refused, image untouched. */
	sh("qemu-img convert -O qcow2 -o refcount_bits=1 hq.raw h1.qcow2");
	img = open_img("h1.qcow2", "qcow2", false, 0, err, sizeof(err));
	rc = img ? blk_image_snapshot_create(img, "x", id, sizeof(id)) : EIO;
	blk_image_close(img);
	crc = qemu_check(P("h1.qcow2"));
	CHECK(rc == EOVERFLOW && crc == 0, "refcount_bits=1: snapshot refused (%s), qemu-img check clean (status %d)",
	      strerror(rc), crc);
	/* raw has none */
	struct blk_image *r = open_img("hq.raw", "raw", false, 0, err, sizeof(err));
	rc = r ? blk_image_snapshot_create(r, "x", id, sizeof(id)) : EIO;
	blk_image_close(r);
	CHECK(rc == ENOTSUP, "a raw image has no snapshots (%s)", strerror(rc));
	free(m0);
	free(m1);
}

/*
 * Migration on shared storage: the destination opened the image before the
 * source's last writes; reload makes it see them, and its own writes then
 * keep the image clean.
 */
static void test_reload(void)
{
	uint8_t *m = make_reference("rl.raw", DISK);
	sh("qemu-img convert -O qcow2 -o cluster_size=4096 rl.raw rl.qcow2");
	char err[1024];
	struct blk_image *dst = open_img("rl.qcow2", "qcow2", false, 0, err, sizeof(err));
	uint8_t *probe = malloc(DISK);
	if (dst)
		blk_image_read(dst, probe, DISK, 0);   /* fills its caches with what will go stale */
	struct blk_image *src = open_img("rl.qcow2", "qcow2", false, 0, err, sizeof(err));
	int bad = src ? run_ops(src, m, DISK, 300) : 1;
	blk_image_close(src);
	int rc = dst ? blk_image_reload(dst, err, sizeof(err)) : EIO;
	const char *why = "";
	CHECK(rc == 0 && bad == 0 && read_compare(dst, m, DISK, &why), "after reload the destination reads the "
	      "source's writes %s", why);
	bad = dst ? run_ops(dst, m, DISK, 200) : 1;
	blk_image_close(dst);
	int crc = qemu_check(P("rl.qcow2"));
	size_t len = 0;
	uint8_t *raw = qemu_raw(P("rl.qcow2"), &len);
	CHECK(bad == 0 && crc == 0 && raw && len == DISK && !memcmp(raw, m, DISK),
	      "the destination's writes after reload: qemu-img check clean (status %d), content as written", crc);
	free(raw);
	free(probe);
	free(m);
}

/* Zero clusters and discards made by QEMU itself (qemu-io), read by hyve. */
static void test_qemu_zero_clusters(void)
{
	if (!have_qemu_io) {
		printf("ok - (qemu-io not installed: QEMU-made zero clusters not tested)\n");
		return;
	}
	uint8_t *ref = make_reference("zref.raw", DISK);
	sh("qemu-img convert -O qcow2 -o cluster_size=4096 zref.raw z.qcow2");
	sh("qemu-io -f qcow2 -c 'write -z 65536 131072' -c 'write -z -u 262144 65536' -c 'discard 524288 65536' "
	   "z.qcow2");
	size_t len;
	uint8_t *raw = qemu_raw(P("z.qcow2"), &len);
	char err[1024];
	struct blk_image *img = open_img("z.qcow2", NULL, true, 0, err, sizeof(err));
	const char *why = err;
	bool same = raw && img && read_compare(img, raw, len, &why);
	CHECK(same, "QEMU's zero clusters read as zeros %s", same ? "" : why);
	blk_image_close(img);
	free(workload("write over QEMU's zero clusters", "z.qcow2", raw, DISK, 200, 0, false));
	free(raw);
	free(ref);
}

/* ---- crash safety ---- */

static long hook_count, hook_die_at, grow_at[8];
static int ngrow;
static void die_hook(const char *what)
{
	if (++hook_count == hook_die_at)
		_exit(0);
	if (!strcmp(what, "grow") && ngrow < 8)
		grow_at[ngrow++] = hook_count;
}

#define CRASH_OPS 40

static void crash_ops(struct op *ops, uint64_t size, uint64_t cs, bool big)
{
	for (int i = 0; i < CRASH_OPS; i++) {
		ops[i] = random_op(size, cs, false);
		if (ops[i].kind == OP_READ || ops[i].kind == OP_FLUSH)
			ops[i].kind = OP_WRITE;
		if (big && i % 8 == 0) {   /* 640 KiB writes: the file outgrows its refcount table */
			ops[i].kind = OP_WRITE;
			ops[i].len = 640 << 10;
			ops[i].off = (uint64_t)(i / 8) * (size / 5);
		}
	}
}

/* Child: run ops with the hook armed; never returns. */
static void crash_child(const char *name, const struct op *ops, long die_at)
{
	hook_count = 0;
	hook_die_at = die_at;
	qcow2_io_hook = die_hook;
	char err[1024];
	struct blk_image *img = open_img(name, "qcow2", false, 0, err, sizeof(err));
	if (!img)
		_exit(2);
	for (int i = 0; i < CRASH_OPS; i++)
		if (op_run(img, &ops[i], NULL))
			_exit(3);
	blk_image_close(img);
	printf("HOOKS %ld", hook_count);
	for (int i = 0; i < ngrow; i++)
		printf(" %ld", grow_at[i]);
	printf("\n");
	fflush(stdout);
	_exit(0);
}

/*
 * Stop a writer at every k-th write/sync of the image file (the process
 * ends there, as with kill -9): qemu-img check must find no corruption,
 * and every guest cluster must read as it was after some prefix of the
 * operations (the one in flight is all or nothing per cluster).
 */
static void test_crash_points(const char *what, const char *create, const char *base_raw, uint64_t size, bool big)
{
	uint8_t *initial = calloc(1, size);
	if (base_raw) {
		size_t l;
		uint8_t *b = read_file(P(base_raw), &l);
		memcpy(initial, b, l < size ? l : size);
		free(b);
	}
	if (sh("%s", create)) {
		CHECK(false, "%s: create", what);
		show_log();
		free(initial);
		return;
	}
	char err[1024];
	struct blk_image *probe = open_img("crash0.qcow2", "qcow2", true, 0, err, sizeof(err));
	if (!probe) {
		CHECK(false, "%s: open: %s", what, err);
		free(initial);
		return;
	}
	uint64_t cs = ((struct qcow2 *)probe->priv)->csize;
	blk_image_close(probe);
	struct op ops[CRASH_OPS];
	crash_ops(ops, size, cs, big);
	/* Prefix models. */
	uint8_t **pre = calloc(CRASH_OPS + 1, sizeof(*pre));
	pre[0] = malloc(size);
	memcpy(pre[0], initial, size);
	for (int i = 0; i < CRASH_OPS; i++) {
		pre[i + 1] = malloc(size);
		memcpy(pre[i + 1], pre[i], size);
		model_apply(pre[i + 1], &ops[i]);
	}
	/* Count the hook calls of a complete run. */
	sh("cp crash0.qcow2 crash.qcow2");
	fflush(stdout);
	int pfd[2];
	if (pipe(pfd))
		abort();
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pfd[1], 1);
		crash_child("crash.qcow2", ops, -1);
	}
	close(pfd[1]);
	char buf[256] = "", *end;
	ssize_t r = read(pfd[0], buf, sizeof(buf) - 1);
	close(pfd[0]);
	int st;
	waitpid(pid, &st, 0);
	long total = r > 6 ? strtol(buf + 6, &end, 10) : 0, grows[8];
	int ng = 0;
	while (r > 6 && ng < 8 && *end == ' ')
		grows[ng++] = strtol(end + 1, &end, 10);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && total > 0, "%s: complete run makes %ld writes/syncs, "
	      "%d refcount table replacements", what, total, ng);
	if (total <= 0)
		goto out;
	long step = 1, maxpts = getenv("QCOW2_TEST_POINTS") ? atol(getenv("QCOW2_TEST_POINTS")) : 30;
	if (maxpts < 1)
		maxpts = 1;
	if (total > maxpts)
		step = (total + maxpts - 1) / maxpts;
	int corrupt = 0, badcontent = 0, points = 0, leaky = 0, npts = 0;
	uint8_t *got = malloc(size);
	/* Every write/sync of the first refcount table replacements, then every step-th. */
	long pts[400];
	for (int g = 0; g < ng && g < 2; g++)
		for (int k = 0; k < 9; k++)
			pts[npts++] = grows[g] + k;
	for (long n = 1; n <= total && npts < 400; n += step)
		pts[npts++] = n;
	for (int pi = 0; pi < npts; pi++) {
		long n = pts[pi];
		if (n > total)
			continue;
		sh("cp crash0.qcow2 crash.qcow2");
		fflush(stdout);
		pid = fork();
		if (pid == 0) {
			int devnull = open("/dev/null", O_WRONLY);
			dup2(devnull, 1);
			crash_child("crash.qcow2", ops, n);
		}
		waitpid(pid, &st, 0);
		points++;
		int crc = qemu_check(P("crash.qcow2"));
		if (crc == 3)
			leaky++;
		if (crc != 0 && crc != 3) {
			if (corrupt++ < 2) {
				printf("    crash at write/sync %ld of %ld: qemu-img check status %d\n", n, total, crc);
				show_log();
			}
			continue;
		}
		struct blk_image *img = open_img("crash.qcow2", "qcow2", true, 0, err, sizeof(err));
		if (!img || blk_image_read(img, got, size, 0)) {
			badcontent++;
			blk_image_close(img);
			continue;
		}
		blk_image_close(img);
		for (uint64_t c = 0; c < size; c += cs) {
			uint64_t l = size - c < cs ? size - c : cs;
			bool ok = false;
			for (int k = 0; k <= CRASH_OPS && !ok; k++)
				ok = !memcmp(got + c, pre[k] + c, l);
			if (!ok) {
				if (badcontent++ < 2)
					printf("    crash at %ld: cluster at %llu matches no prefix of the operations\n", n,
					       (unsigned long long)c);
				break;
			}
		}
	}
	free(got);
	CHECK(corrupt == 0, "%s: %d crash points, qemu-img check: %d corrupt, %d with leaks only", what, points, corrupt,
	      leaky);
	CHECK(badcontent == 0, "%s: after each crash every cluster reads as after some prefix of the writes", what);
out:
	for (int i = 0; i <= CRASH_OPS; i++)
		free(pre[i]);
	free(pre);
	free(initial);
}

/* kill -9 at random moments of an endless random write loop. */
static void test_kill9(void)
{
	struct {
		const char *what, *create;
	} cases[] = {
		{ "kill -9: v3 4K over a raw backing file",
		  "qemu-img create -f qcow2 -o cluster_size=4096 -b kbase.raw -F raw k.qcow2" },
		{ "kill -9: v3 512B refcount_bits=64", "qemu-img create -f qcow2 -o cluster_size=512,refcount_bits=64 k.qcow2 8M" },
		{ "kill -9: v2 64K compressed",
		  "qemu-img convert -c -O qcow2 -o compat=0.10 kbase.raw k.qcow2" },
	};
	free(make_reference("kbase.raw", 8 << 20));
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int corrupt = 0, runs = getenv("QCOW2_TEST_POINTS") ? 10 : 4;
		for (int run = 0; run < runs; run++) {
			unlink(P("k.qcow2"));
			if (sh("%s", cases[i].create)) {
				show_log();
				corrupt++;
				continue;
			}
			uint64_t seed = rnd();
			fflush(stdout);
			pid_t pid = fork();
			if (pid == 0) {
				rng_state = seed | 1;
				char err[1024];
				struct blk_image *img = open_img("k.qcow2", "qcow2", false, 0, err, sizeof(err));
				if (!img)
					_exit(2);
				for (;;) {
					struct op op = random_op(8 << 20, 4096, false);
					op_run(img, &op, NULL);
				}
			}
			struct timespec ts = { 0, (long)(20 + rndn(250)) * 1000000L };
			nanosleep(&ts, NULL);
			kill(pid, SIGKILL);
			int st;
			waitpid(pid, &st, 0);
			int crc = qemu_check(P("k.qcow2"));
			if (crc != 0 && crc != 3) {
				if (corrupt++ < 2) {
					printf("    run %d: qemu-img check status %d (child status 0x%x)\n", run, crc, st);
					show_log();
				}
			}
		}
		CHECK(corrupt == 0, "%s: %d kills, no corruption (%d)", cases[i].what, runs, corrupt);
	}
}

/*
 * Deferred links: an allocating write's L2 entry waits for the next commit
 * (a flush, PENDING_MAX entries, a full cache).  What a flush returned for
 * survives a kill -9; what came after it may be lost, cluster by cluster,
 * never the image's consistency.
 */
static void test_flush_durability(void)
{
	sh("rm -f fd.qcow2 && qemu-img create -f qcow2 -o cluster_size=4096 fd.qcow2 4M");
	uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
	fill_random(a, 1 << 20);
	fill_random(b, 1 << 20);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		char err[1024];
		struct blk_image *img = open_img("fd.qcow2", "qcow2", false, 0, err, sizeof(err));
		if (!img)
			_exit(2);
		/* 4 KiB pieces every 8 KiB: each allocates a cluster of its own */
		for (int i = 0; i < 128; i++)
			if (blk_image_write(img, a + i * 8192, 4096, (uint64_t)i * 8192))
				_exit(3);
		if (blk_image_flush(img))
			_exit(4);
		for (int i = 0; i < 128; i++)
			if (blk_image_write(img, b + i * 8192, 4096, (1 << 20) + (uint64_t)i * 8192))
				_exit(5);
		raise(SIGKILL);   /* no close: the unflushed links die with the process */
	}
	int st;
	waitpid(pid, &st, 0);
	int crc = qemu_check(P("fd.qcow2"));
	size_t len = 0;
	uint8_t *raw = qemu_raw(P("fd.qcow2"), &len);
	bool flushed = raw && len == 4 << 20, after = raw != NULL;
	for (int i = 0; flushed && i < 128; i++)
		flushed = !memcmp(raw + i * 8192, a + i * 8192, 4096);
	int lost = 0;
	for (int i = 0; after && i < 128; i++) {
		const uint8_t *got = raw + (1 << 20) + i * 8192;
		bool zero = got[0] == 0 && !memcmp(got, got + 1, 4095);
		lost += zero;
		after = zero || !memcmp(got, b + i * 8192, 4096);
	}
	CHECK(WIFSIGNALED(st) && (crc == 0 || crc == 3) && flushed && after,
	      "deferred links: writes before a flush survive kill -9 (%s), later ones are whole or absent (%d of 128 "
	      "absent), qemu-img check status %d", flushed ? "yes" : "no", lost, crc);
	free(raw);
	free(a);
	free(b);
}

/* ---- errors ---- */

static void expect_open_error(const char *what, const char *name, const char *fmt, bool ro, const char *needle)
{
	char err[1024] = "";
	struct blk_image *img = open_img(name, fmt, ro, 0, err, sizeof(err));
	bool ok = !img && strstr(err, needle) && !strchr(err, '\n') && !strncmp(err, dir, strlen(dir));
	CHECK(ok, "%s: refused with one line: %s", what, img ? "(opened!)" : err);
	blk_image_close(img);
}

static void expect_open_ok(const char *what, const char *name, const char *fmt, bool ro)
{
	char err[1024] = "";
	struct blk_image *img = open_img(name, fmt, ro, 0, err, sizeof(err));
	CHECK(img != NULL, "%s: opens%s%s", what, img ? "" : ": ", err);
	blk_image_close(img);
}

static void fresh(const char *opts)
{
	unlink(P("e.qcow2"));
	if (sh("qemu-img create -f qcow2 %s e.qcow2 1M", opts))
		show_log();
}

static void test_errors(void)
{
	fresh("");
	expect_open_ok("fresh image", "e.qcow2", NULL, false);

	/* Probed qcow2 naming a backing file: refused; declared: followed. */
	free(make_reference("eb.raw", 1 << 20));
	sh("qemu-img create -f qcow2 -b eb.raw -F raw eov.qcow2");
	expect_open_error("probed qcow2 with a backing file", "eov.qcow2", NULL, false, "add format=qcow2");
	expect_open_ok("the same with format=qcow2", "eov.qcow2", "qcow2", false);
	/* format=raw: the bytes as they are. */
	char err[1024];
	struct blk_image *img = open_img("eov.qcow2", "raw", true, 0, err, sizeof(err));
	uint8_t m[4] = { 0 };
	CHECK(img && !strcmp(blk_image_format(img), "raw") && !blk_image_read(img, m, 4, 0) && m[0] == 'Q',
	      "format=raw on a qcow2 file reads the file's bytes");
	blk_image_close(img);
	/* A probed qcow2 backing file naming its own backing file (no backing_fmt). */
	sh("qemu-img create -f qcow2 -b eb.raw -F raw mid.qcow2 && qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2"
	   " && qemu-img rebase -u -b mid.qcow2 top.qcow2 2>/dev/null; true");
	/* (rebase -u without -F drops backing_fmt on this qemu-img, or the image keeps it) */
	img = open_img("top.qcow2", "qcow2", true, 0, err, sizeof(err));
	CHECK(img || strstr(err, "rebase -u -F qcow2"), "probed backing qcow2 with its own backing: %s",
	      img ? "backing_fmt kept, opened" : err);
	blk_image_close(img);

	expect_open_error("format=qcow2 on a raw file", "eb.raw", "qcow2", false, "not a qcow2 image");

	fresh("");
	patch32(P("e.qcow2"), 4, 4);
	expect_open_error("version 4", "e.qcow2", NULL, false, "version 4");
	fresh("");
	patch32(P("e.qcow2"), 4, 1);
	expect_open_error("qcow version 1", "e.qcow2", NULL, false, "version 1");
	fresh("");
	patch32(P("e.qcow2"), 20, 30);
	expect_open_error("cluster_bits 30", "e.qcow2", NULL, false, "cluster size");
	fresh("");
	patch32(P("e.qcow2"), 20, 8);
	expect_open_error("cluster_bits 8", "e.qcow2", NULL, false, "cluster size");
	fresh("");
	patch64(P("e.qcow2"), 40, 1ULL << 40);
	expect_open_error("L1 table beyond the file", "e.qcow2", NULL, false, "L1 table");
	fresh("");
	patch64(P("e.qcow2"), 40, 0x10200);
	expect_open_error("L1 table misaligned", "e.qcow2", NULL, false, "L1 table");
	fresh("");
	patch32(P("e.qcow2"), 36, 0);
	expect_open_error("L1 table too small for the disk", "e.qcow2", NULL, false, "L1 table size");
	fresh("");
	patch64(P("e.qcow2"), 48, 1ULL << 40);
	expect_open_error("refcount table beyond the file", "e.qcow2", NULL, false, "refcount table");
	fresh("");
	patch32(P("e.qcow2"), 56, 1u << 20);
	expect_open_error("refcount table too large", "e.qcow2", NULL, false, "refcount table");
	fresh("");
	patch64(P("e.qcow2"), 24, 1ULL << 63);
	expect_open_error("virtual size 2^63", "e.qcow2", NULL, false, "too large");
	fresh("");
	patch32(P("e.qcow2"), 32, 1);
	expect_open_error("encryption (crypt_method 1)", "e.qcow2", NULL, false, "encrypted");
	fresh("");
	patch32(P("e.qcow2"), 96, 7);
	expect_open_error("refcount_order 7", "e.qcow2", NULL, false, "refcount width");
	fresh("");
	patch32(P("e.qcow2"), 100, 50);
	expect_open_error("header length 50", "e.qcow2", NULL, false, "header length");
	fresh("");
	patch64(P("e.qcow2"), 72, 1ULL << 20);
	expect_open_error("unknown incompatible feature", "e.qcow2", NULL, false, "incompatible feature");
	fresh("");
	patch64(P("e.qcow2"), 72, QCOW2_INCOMPAT_DIRTY);
	expect_open_error("dirty (lazy refcounts) for writing", "e.qcow2", NULL, false, "qemu-img check -r all");
	expect_open_ok("dirty image read-only", "e.qcow2", NULL, true);
	fresh("");
	patch64(P("e.qcow2"), 72, QCOW2_INCOMPAT_CORRUPT);
	expect_open_error("marked corrupt", "e.qcow2", NULL, false, "qemu-img check -r all");
	fresh("");
	patch64(P("e.qcow2"), 72, QCOW2_INCOMPAT_COMPRESS);
	uint8_t ct = 7;
	patch(P("e.qcow2"), 104, &ct, 1);
	expect_open_error("compression type 7", "e.qcow2", NULL, false, "compression type");
	fresh("-o extended_l2=on");
	expect_open_error("extended L2 entries", "e.qcow2", NULL, false, "extended L2");
	unlink(P("e.data"));
	fresh("-o data_file=e.data");
	expect_open_error("external data file", "e.qcow2", "qcow2", false, "external data file");
	fresh("");
	patch64(P("e.qcow2"), 8, 0xff00);   /* backing name offset past the cluster */
	patch32(P("e.qcow2"), 16, 0x200);
	expect_open_error("backing file name beyond the header cluster", "e.qcow2", "qcow2", false, "backing file name");
	write_file(P("short.qcow2"), (const uint8_t *)"QFI\xfb\0\0\0\3", 8);
	expect_open_error("8-byte file", "short.qcow2", NULL, false, "too short");

	/* Backing problems. */
	sh("qemu-img create -f qcow2 -b eb.raw -F raw miss.qcow2 && rm -f eb.raw");
	expect_open_error("missing backing file", "miss.qcow2", "qcow2", false, "No such file");
	sh("qemu-img create -f qcow2 loopa.qcow2 1M && qemu-img create -f qcow2 -b loopa.qcow2 -F qcow2 loopb.qcow2 && "
	   "qemu-img rebase -u -b loopb.qcow2 -F qcow2 loopa.qcow2");
	expect_open_error("backing loop a -> b -> a", "loopa.qcow2", "qcow2", true, "loop");
	sh("qemu-img create -f qcow2 self.qcow2 1M && qemu-img rebase -u -b self.qcow2 -F qcow2 self.qcow2");
	expect_open_error("image that is its own backing file", "self.qcow2", "qcow2", true, "loop");
	sh("qemu-img create -f raw vb.raw 1M && qemu-img create -f qcow2 -b vb.raw -F raw fmt.qcow2");
	/* Rename the backing format extension's value to "vmdk" (same length as "raw"+1: patch in place). */
	{
		size_t len;
		uint8_t *b = read_file(P("fmt.qcow2"), &len);
		for (size_t i = 0; b && i + 8 < 65536 && i + 8 < len; i++)
			if (q2_be32(b + i) == 0xe2792acau && q2_be32(b + i + 4) == 3) {
				patch(P("fmt.qcow2"), i + 8, "vpc", 3);
				break;
			}
		free(b);
	}
	expect_open_error("unsupported backing_fmt", "fmt.qcow2", "qcow2", true, "backing file format 'vpc'");
}

/* Damage met at run time: I/O errors, logged once, no crash. */
static void test_runtime_corruption(void)
{
	sh("qemu-img create -f qcow2 -o cluster_size=4096 rc.qcow2 1M");
	char err[1024];
	struct blk_image *img = open_img("rc.qcow2", "qcow2", false, 0, err, sizeof(err));
	uint8_t buf[8192];
	memset(buf, 0xab, sizeof(buf));
	int rc = img ? blk_image_write(img, buf, sizeof(buf), 0) : -1;
	blk_image_close(img);
	CHECK(rc == 0, "runtime: seed data written");
	uint64_t l1 = peek64(P("rc.qcow2"), 40);
	uint64_t l2 = peek64(P("rc.qcow2"), l1) & QCOW2_OFFSET_MASK;
	/* Entry 0: beyond the end of the file; entry 1: not aligned. */
	patch64(P("rc.qcow2"), l2, QCOW2_OFLAG_COPIED | (1ULL << 40));
	patch64(P("rc.qcow2"), l2 + 8, QCOW2_OFLAG_COPIED | 0x1200);
	patch64(P("rc.qcow2"), l2 + 16, QCOW2_OFLAG_COMPRESSED | 0x3000);   /* garbage, not deflate */
	img = open_img("rc.qcow2", "qcow2", false, 0, err, sizeof(err));
	CHECK(img != NULL, "runtime: damaged image opens (damage is in an L2 table)");
	if (!img)
		return;
	nwarn = 0;
	CHECK(blk_image_read(img, buf, 512, 0) == EIO, "runtime: read of a cluster beyond EOF -> EIO");
	CHECK(blk_image_read(img, buf, 512, 4096) == EIO, "runtime: read of a misaligned cluster -> EIO");
	CHECK(blk_image_read(img, buf, 512, 8192) == EIO, "runtime: read of an undecompressable cluster -> EIO");
	CHECK(blk_image_write(img, buf, 512, 0) == EIO, "runtime: write into a cluster beyond EOF -> EIO");
	CHECK(blk_image_read(img, buf, 512, 65536) == 0, "runtime: other clusters still read");
	CHECK(nwarn == 1 && strstr(last_warn, "corrupt qcow2"), "runtime: one warning logged (%d): %s", nwarn, last_warn);
	blk_image_close(img);
	/* An L1 entry pointing past the file. */
	sh("qemu-img create -f qcow2 -o cluster_size=4096 rc2.qcow2 1M");
	patch64(P("rc2.qcow2"), peek64(P("rc2.qcow2"), 40), QCOW2_OFLAG_COPIED | (1ULL << 40));
	img = open_img("rc2.qcow2", "qcow2", false, 0, err, sizeof(err));
	CHECK(img && blk_image_read(img, buf, 512, 0) == EIO && blk_image_write(img, buf, 512, 0) == EIO,
	      "runtime: L1 entry beyond EOF -> EIO for reads and writes");
	blk_image_close(img);
}

/* ---- blockif over qcow2 ---- */

struct waiter {
	pthread_mutex_t m;
	pthread_cond_t c;
	int done, err;
};

static void wcb(struct blockif_req *br, int err)
{
	struct waiter *w = br->br_param;
	pthread_mutex_lock(&w->m);
	w->done = 1;
	w->err = err;
	pthread_cond_signal(&w->c);
	pthread_mutex_unlock(&w->m);
}

static int bsync(struct blockif_ctxt *bc, int (*fn)(struct blockif_ctxt *, struct blockif_req *), void *buf,
                 size_t len, off_t off)
{
	struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
	struct iovec v = { buf, len };
	struct blockif_req br = { .br_iov = &v, .br_iovcnt = 1, .br_offset = off, .br_resid = len,
	                          .br_callback = wcb, .br_param = &w };
	int rc = fn(bc, &br);
	if (rc)
		return rc;
	pthread_mutex_lock(&w.m);
	while (!w.done)
		pthread_cond_wait(&w.c, &w.m);
	pthread_mutex_unlock(&w.m);
	return w.err;
}

static int bdiscard(struct blockif_ctxt *bc, struct blockif_req *br) { return blockif_discard(bc, br); }

static void test_blockif(void)
{
	sh("qemu-img create -f qcow2 -o cluster_size=16k bi.qcow2 4M");
	struct blockif_opts o = { .name = "test", .depth = 16 };
	char err[1024];
	struct blockif_ctxt *bc = blockif_open(P("bi.qcow2"), &o, err, sizeof(err));
	CHECK(bc && !strcmp(blockif_format(bc), "qcow2") && blockif_size(bc) == 4 << 20 &&
	      !strcmp(blockif_backend(bc), "threads") && blockif_candelete(bc),
	      "blockif: probed qcow2, 4 MiB, on threads, can discard%s%s", bc ? "" : ": ", bc ? "" : err);
	if (!bc)
		return;
	uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
	fill_random(a, 1 << 20);
	int rc = bsync(bc, blockif_write, a, 1 << 20, 512 * 1000);
	rc |= bsync(bc, blockif_read, b, 1 << 20, 512 * 1000);
	CHECK(!rc && !memcmp(a, b, 1 << 20), "blockif: 1 MiB written and read back through qcow2");
	rc = bsync(bc, bdiscard, NULL, 65536, 512 * 1000);
	rc |= bsync(bc, blockif_read, b, 65536, 512 * 1000);
	CHECK(!rc && b[0] == 0 && !memcmp(b, b + 1, 65535), "blockif: discard reads back as zeros");
	rc = bsync(bc, blockif_flush, NULL, 0, 0);
	CHECK(rc == 0, "blockif: flush");
	/* concurrency: many requests in flight on the pool */
	struct waiter w[32];
	struct blockif_req br[32];
	struct iovec v[32];
	uint8_t *big = malloc(32 * 70000);
	fill_random(big, 32 * 70000);
	for (int i = 0; i < 32; i++) {
		w[i] = (struct waiter){ PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
		v[i] = (struct iovec){ big + i * 70000, 70000 };
		br[i] = (struct blockif_req){ .br_iov = &v[i], .br_iovcnt = 1, .br_offset = (off_t)i * 70000,
		                              .br_callback = wcb, .br_param = &w[i] };
		blockif_write(bc, &br[i]);
	}
	blockif_drain(bc);
	int errs = 0;
	for (int i = 0; i < 32; i++)
		errs += !w[i].done || w[i].err;
	uint8_t *back = malloc(32 * 70000);
	rc = bsync(bc, blockif_read, back, 32 * 70000, 0);
	CHECK(!errs && !rc && !memcmp(back, big, 32 * 70000), "blockif: 32 concurrent writes, then read back");
	blockif_close(bc);
	int crc = qemu_check(P("bi.qcow2"));
	CHECK(crc == 0, "blockif: qemu-img check clean after blockif writes (%d)", crc);
	free(a);
	free(b);
	free(big);
	free(back);

	/* Probed qcow2 with a backing file: refused by blockif too. */
	sh("qemu-img create -f raw bib.raw 1M && qemu-img create -f qcow2 -b bib.raw -F raw bio.qcow2");
	bc = blockif_open(P("bio.qcow2"), &o, err, sizeof(err));
	CHECK(!bc && strstr(err, "format=qcow2"), "blockif: probed qcow2 with backing refused: %s", bc ? "opened" : err);
	blockif_close(bc);
	o.format = "qcow2";
	bc = blockif_open(P("bio.qcow2"), &o, err, sizeof(err));
	CHECK(bc != NULL, "blockif: format=qcow2 follows the backing file");
	blockif_close(bc);
	o.format = "raw";
	o.l2cache = 1 << 20;
	bc = blockif_open(P("bib.raw"), &o, err, sizeof(err));
	CHECK(!bc && strstr(err, "l2cache"), "blockif: l2cache on a raw image refused: %s", bc ? "opened" : err);
	blockif_close(bc);
	o.format = NULL;
	o.l2cache = 0;
	o.nocache = true;
	bc = blockif_open(P("bi.qcow2"), &o, err, sizeof(err));
	CHECK(!bc && strstr(err, "nocache"), "blockif: nocache with qcow2 refused: %s", bc ? "opened" : err);
	blockif_close(bc);
	/* A raw image is still raw (and a small file with no magic is raw). */
	o.nocache = false;
	bc = blockif_open(P("bib.raw"), &o, err, sizeof(err));
	CHECK(bc && !strcmp(blockif_format(bc), "raw") && blockif_size(bc) == 1 << 20, "blockif: raw stays raw");
	blockif_close(bc);
}

/*
 * Allocating writes of whole clusters run their data I/O without the image
 * lock: many in flight on blockif's threads, overlapping each other, into a
 * fresh image.  Every byte written is a function of its position, so any
 * order of the overlapping writes leaves the same content; a cluster linked
 * twice, linked before its data, or lost shows up in the content or in
 * qemu-img check.
 */
static void test_blockif_parallel_alloc(void)
{
	sh("rm -f pa.qcow2 && qemu-img create -f qcow2 -o cluster_size=16k pa.qcow2 8M");
	struct blockif_opts o = { .name = "par", .format = "qcow2", .depth = 64 };
	char err[1024];
	struct blockif_ctxt *bc = blockif_open(P("pa.qcow2"), &o, err, sizeof(err));
	CHECK(bc != NULL, "parallel allocation: opened%s%s", bc ? "" : ": ", bc ? "" : err);
	if (!bc)
		return;
	size_t disk = 8 << 20;
	uint8_t *want = calloc(1, disk), *src = malloc(disk);
	for (size_t i = 0; i < disk; i++)
		src[i] = (uint8_t)((i >> 14) * 31 + (i & 0xff) + 1);
	enum { N = 400 };
	static struct waiter w[N];
	static struct blockif_req br[N];
	static struct iovec v[N][2];
	static struct waiter fw[N / 64];
	static struct blockif_req fr[N / 64];
	for (int i = 0; i < N; i++) {
		/* Every other request repeats the one before it: the same clusters, both in flight. */
		static size_t prev_off, prev_len;   /* blockif advances a request's own fields in flight */
		size_t len = (size_t)(1 + rndn(8)) << 14, off = (size_t)rndn((disk - len) >> 14) << 14;
		if (i % 2) {
			off = prev_off;
			len = prev_len;
		}
		prev_off = off;
		prev_len = len;
		size_t split = (size_t)rndn(len + 1);
		v[i][0] = (struct iovec){ src + off, split };
		v[i][1] = (struct iovec){ src + off + split, len - split };
		memcpy(want + off, src + off, len);
		w[i] = (struct waiter){ PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
		br[i] = (struct blockif_req){ .br_iov = v[i], .br_iovcnt = 2, .br_offset = (off_t)off, .br_callback = wcb,
		                              .br_param = &w[i] };
		blockif_write(bc, &br[i]);
		if (i % 64 == 63) {   /* a guest flush now and then, while writes are in flight */
			int k = i / 64;
			fw[k] = (struct waiter){ PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
			fr[k] = (struct blockif_req){ .br_callback = wcb, .br_param = &fw[k] };
			blockif_flush(bc, &fr[k]);
		}
	}
	blockif_drain(bc);
	int errs = 0;
	for (int i = 0; i < N; i++)
		errs += !w[i].done || w[i].err;
	for (int k = 0; k < N / 64; k++)
		errs += !fw[k].done || fw[k].err;
	uint8_t *back = malloc(disk);
	int rc = bsync(bc, blockif_read, back, disk, 0);
	CHECK(!errs && !rc && !memcmp(back, want, disk), "parallel allocation: %d overlapping writes in flight read back "
	      "(%d failed)", N, errs);
	rc = bsync(bc, blockif_flush, NULL, 0, 0);   /* the deferred links on disk: QEMU may look now */
	int crc = qemu_check(P("pa.qcow2"));
	size_t len = 0;
	uint8_t *raw = qemu_raw(P("pa.qcow2"), &len);
	CHECK(!rc && crc == 0 && raw && len == disk && !memcmp(raw, want, disk),
	      "parallel allocation: after a flush, qemu-img check clean (status %d), QEMU reads the same", crc);
	free(raw);
	/*
	 * Reads racing discards of the same clusters, while other writes
	 * allocate (and may reuse what the discards free): each cluster a read
	 * returns is the old data or zeros, never another write's.
	 */
	uint8_t *src2 = malloc(disk), *rbuf = malloc((size_t)N * (64 << 10));
	for (size_t i = 0; i < disk; i++)
		src2[i] = (uint8_t)~src[i];
	static struct iovec rv[N], wv[N];
	static struct waiter rw[N], dw[N], ww[N];
	static struct blockif_req rr[N], dr[N], wr[N];
	static size_t roff[N];
	for (int i = 0; i < N; i++) {
		roff[i] = (size_t)rndn((disk - (64 << 10)) >> 14) << 14;
		size_t woff = (size_t)rndn((disk - (64 << 10)) >> 14) << 14;
		rv[i] = (struct iovec){ rbuf + (size_t)i * (64 << 10), 64 << 10 };
		wv[i] = (struct iovec){ src2 + woff, 64 << 10 };
		rw[i] = dw[i] = ww[i] = (struct waiter){ PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
		rr[i] = (struct blockif_req){ .br_iov = &rv[i], .br_iovcnt = 1, .br_offset = (off_t)roff[i],
		                              .br_callback = wcb, .br_param = &rw[i] };
		dr[i] = (struct blockif_req){ .br_offset = (off_t)roff[i], .br_resid = 64 << 10, .br_callback = wcb,
		                              .br_param = &dw[i] };
		wr[i] = (struct blockif_req){ .br_iov = &wv[i], .br_iovcnt = 1, .br_offset = (off_t)woff,
		                              .br_callback = wcb, .br_param = &ww[i] };
		blockif_read(bc, &rr[i]);
		blockif_discard(bc, &dr[i]);
		blockif_write(bc, &wr[i]);
	}
	blockif_drain(bc);
	int bad = 0;
	for (int i = 0; i < N; i++) {
		errs += !rw[i].done || rw[i].err || !dw[i].done || dw[i].err || !ww[i].done || ww[i].err;
		for (size_t o = 0; o < 64 << 10; o += 16 << 10) {
			const uint8_t *got = rbuf + (size_t)i * (64 << 10) + o;
			bool zero = got[0] == 0 && !memcmp(got, got + 1, (16 << 10) - 1);
			/* old: what the first phase left (or a later write of src2 there, also "old" for this race) */
			bad += !zero && memcmp(got, want + roff[i] + o, 16 << 10) && memcmp(got, src2 + roff[i] + o, 16 << 10);
		}
	}
	CHECK(!errs && !bad, "parallel allocation: reads racing discards return old data or zeros (%d bad clusters, "
	      "%d failed)", bad, errs);
	free(src2);
	free(rbuf);
	blockif_close(bc);
	crc = qemu_check(P("pa.qcow2"));
	CHECK(crc == 0, "parallel allocation: qemu-img check clean after it all (status %d)", crc);
	free(back);
	free(want);
	free(src);
}

/* Save blockif's "disks" section (a checkpoint to ckpt, or a migration). */
static int disks_save(const char *ckpt, struct snap_buf *sb)
{
	const struct snapshot_entry *e = snapshot_find("disks");
	char err[512] = "";
	sb_init(sb);
	snapshot_set_checkpoint_path(ckpt);
	int rc = e ? e->ops->save(e->arg, sb, err, sizeof(err)) : -1;
	snapshot_set_checkpoint_path(NULL);
	if (rc)
		printf("    disks save: %s\n", err);
	return rc;
}

static int disks_load(const struct snap_buf *sb, char *err, size_t errlen)
{
	const struct snapshot_entry *e = snapshot_find("disks");
	struct snap_rd rd;
	sr_init(&rd, sb->data, sb->len);
	err[0] = 0;
	int rc = e ? e->ops->load(e->arg, &rd, e->ops->version, err, errlen) : -1;
	return rc || !sr_done(&rd) ? -1 : 0;
}

/*
 * The checkpoint glue (blockif's "disks" section): a checkpoint takes a
 * snapshot named after its file, a second checkpoint to the same file
 * replaces it, a failed one leaves none, loading the section reverts the
 * disk; a migration's section makes the other side reload.
 */
static void test_blockif_checkpoint(void)
{
	sh("rm -f ck.qcow2 && qemu-img create -f qcow2 -o cluster_size=4k ck.qcow2 2M");
	struct blockif_opts o = { .name = "virtio-blk@4:0", .format = "qcow2" };
	char err[1024];
	struct blockif_ctxt *bc = blockif_open(P("ck.qcow2"), &o, err, sizeof(err));
	CHECK(bc != NULL, "checkpoint glue: opened%s%s", bc ? "" : ": ", bc ? "" : err);
	if (!bc)
		return;
	size_t n = 256 << 10;
	uint8_t *a = malloc(n), *b = malloc(n), *c = malloc(n), *back = malloc(n);
	fill_random(a, n);
	fill_random(b, n);
	fill_random(c, n);
	struct snap_buf s1, s2, s3, mig;
	int rc = bsync(bc, blockif_write, a, n, 4096);
	rc |= disks_save("/ckpt/vm.ckpt", &s1);
	snapshot_saved(true);
	rc |= bsync(bc, blockif_write, b, n, 4096);
	rc |= disks_save("/ckpt/vm.ckpt", &s2);   /* the same file again */
	snapshot_saved(true);
	rc |= bsync(bc, blockif_write, c, n, 4096);
	rc |= disks_save("/ckpt/other.ckpt", &s3);   /* a checkpoint that fails */
	snapshot_saved(false);
	CHECK(rc == 0, "checkpoint glue: writes and three saves");
	blockif_drain(bc);
	int nsnap = sh("qemu-img snapshot -l %s | grep -c ckpt", P("ck.qcow2"));
	bool listed = !sh("qemu-img snapshot -l %s | grep -q ' /ckpt/vm.ckpt '", P("ck.qcow2"));
	bool other = !sh("qemu-img snapshot -l %s | grep -q other.ckpt", P("ck.qcow2"));
	CHECK(listed && !other, "checkpoint glue: one snapshot for vm.ckpt, none for the failed checkpoint (%d)", nsnap);
	rc = disks_load(&s1, err, sizeof(err));
	CHECK(rc != 0 && strstr(err, "has no snapshot"), "checkpoint glue: the replaced checkpoint cannot restore: %s",
	      err);
	rc = disks_load(&s2, err, sizeof(err));
	rc |= bsync(bc, blockif_read, back, n, 4096);
	CHECK(rc == 0 && !memcmp(back, b, n), "checkpoint glue: loading the second checkpoint's section brings its "
	      "disk back%s%s", err[0] ? ": " : "", err);
	rc = disks_save(NULL, &mig);
	rc |= disks_load(&mig, err, sizeof(err));
	rc |= bsync(bc, blockif_read, back, n, 4096);
	CHECK(rc == 0 && !memcmp(back, b, n), "checkpoint glue: a migration's section reloads the image%s%s",
	      err[0] ? ": " : "", err);
	blockif_close(bc);
	int crc = qemu_check(P("ck.qcow2"));
	size_t len = 0;
	uint8_t *raw = qemu_raw(P("ck.qcow2"), &len);
	CHECK(crc == 0 && raw && len == 2 << 20 && !memcmp(raw + 4096, b, n),
	      "checkpoint glue: qemu-img check clean (status %d), QEMU reads the restored disk", crc);
	/* A raw disk records nothing, and a missing disk that had a snapshot is an error. */
	sh("qemu-img create -f raw ck.raw 1M");
	struct blockif_opts ro = { .name = "ahci@5:0 port 0", .format = "raw" };
	struct blockif_ctxt *rb = blockif_open(P("ck.raw"), &ro, err, sizeof(err));
	struct snap_buf s4;
	rc = rb ? disks_save("/ckpt/raw.ckpt", &s4) : -1;
	snapshot_saved(true);
	blockif_close(rb);
	CHECK(rc == 0 && disks_load(&s4, err, sizeof(err)) == 0, "checkpoint glue: a raw disk gone from the VM is "
	      "no error");
	rc = disks_load(&s2, err, sizeof(err));
	CHECK(rc != 0 && strstr(err, "not in this configuration"), "checkpoint glue: a qcow2 disk gone from the VM: %s",
	      err);
	sb_free(&s1);
	sb_free(&s2);
	sb_free(&s3);
	sb_free(&s4);
	sb_free(&mig);
	free(raw);
	free(a);
	free(b);
	free(c);
	free(back);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
/* QCOW2_TEST_ONLY=WORD runs only the tests whose call contains WORD. */
#define TIMED(call)                                                                  \
	do {                                                                         \
		const char *only_ = getenv("QCOW2_TEST_ONLY");                       \
		if (only_ && !strstr(#call, only_))                                   \
			break;                                                       \
		double t0_ = now();                                                  \
		call;                                                                \
		printf("# %.30s...: %.1f s\n", #call, now() - t0_);                   \
	} while (0)

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("SKIP: qemu-img not installed (apt-get install qemu-utils)\n");
		return 77;
	}
	have_qemu_io = system("qemu-io --version >/dev/null 2>&1") == 0;
	/* tmpfs by default: thousands of fdatasyncs cost nothing there, and the
	 * crash tests end processes, not the machine. */
	const char *base = getenv("QCOW2_TEST_DIR");
	if (!base)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dir, sizeof(dir), "%s/test_qcow2.XXXXXX", base);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	FILE *v = popen("qemu-img --version | head -1", "r");
	char ver[128] = "";
	if (v && fgets(ver, sizeof(ver), v))
		printf("# %s", ver);
	if (v)
		pclose(v);

	TIMED(test_read_matrix());
	TIMED(test_writes());
	TIMED(test_backing());
	TIMED(test_snapshots());
	TIMED(test_hyve_snapshots());
	TIMED(test_reload());
	TIMED(test_qemu_zero_clusters());
	TIMED(test_errors());
	TIMED(test_runtime_corruption());
	TIMED(test_blockif());
	TIMED(test_blockif_checkpoint());
	TIMED(test_blockif_parallel_alloc());
	free(make_reference("cbase.raw", 2 << 20));
	TIMED(test_crash_points("crash points: v3 512B refcount_bits=64 over a raw backing file",
	                  "qemu-img create -f qcow2 -o cluster_size=512,refcount_bits=64 -b cbase.raw -F raw crash0.qcow2",
	                  "cbase.raw", 2 << 20, false));
	TIMED(test_crash_points("crash points: v3 4K compressed, refcount_bits=64",
	                  "qemu-img convert -c -O qcow2 -o cluster_size=4096,refcount_bits=64 cbase.raw crash0.qcow2",
	                  "cbase.raw", 2 << 20, false));
	TIMED(test_crash_points("crash points: v2 64K with an internal snapshot",
	                  "qemu-img convert -O qcow2 -o compat=0.10 cbase.raw crash0.qcow2 && "
	                  "qemu-img snapshot -c s crash0.qcow2",
	                  "cbase.raw", 2 << 20, false));
	TIMED(test_crash_points("crash points: v3 512B refcount_bits=64, large writes (refcount table grows)",
	                  "qemu-img create -f qcow2 -o cluster_size=512,refcount_bits=64 crash0.qcow2 6M", NULL, 6 << 20, true));
	TIMED(test_kill9());
	TIMED(test_flush_durability());

	if (!getenv("QCOW2_TEST_KEEP"))
		sh("rm -rf '%s'", dir);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
