/*
 * What tests/unit/test_qcow2.c and test_qcow2_state.c share: check
 * reporting, fakes of the core (log, event loop), scratch files and
 * qemu-img helpers, the random workload mirrored in a model, synchronous
 * blockif requests, and the set-up/summary of main().  Each test binary
 * includes it once; not every binary uses every helper.
 */
#ifndef HYVE_TEST_QCOW2_H
#define HYVE_TEST_QCOW2_H

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

#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"

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


#define DISK (3u * 1024 * 1024 + 3 * 512)   /* not a multiple of any cluster size */

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

/* The scratch directory and qemu-img's version line; 77 (skip) without
 * qemu-img, 1 if the directory cannot be made, else 0. */
static int q2t_setup(const char *name)
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
	snprintf(dir, sizeof(dir), "%s/%s.XXXXXX", base, name);
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
	return 0;
}

static int q2t_finish(void)
{
	if (!getenv("QCOW2_TEST_KEEP"))
		sh("rm -rf '%s'", dir);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}

#endif
