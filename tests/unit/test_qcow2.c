/*
 * Unit tests for the disk image format layer (devices/blk_format.c,
 * devices/qcow2.c, devices/qcow2_meta.c) and blockif's use of it, with the
 * real qemu-img as the counterpart: images made by qemu-img are read
 * through hyve and compared with `qemu-img convert -O raw`; images written
 * through hyve must pass `qemu-img check` and convert to the expected
 * bytes; processes killed in the middle of writing must leave images that
 * `qemu-img check` does not call corrupt.  Snapshots, reload and
 * blockif's checkpoint glue are in test_qcow2_state.c.
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
#include "qcow2_test.h"

/* ---- tests ---- */


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

int main(void)
{
	int rc = q2t_setup("test_qcow2");
	if (rc)
		return rc;
	TIMED(test_read_matrix());
	TIMED(test_writes());
	TIMED(test_backing());
	TIMED(test_snapshots());
	TIMED(test_qemu_zero_clusters());
	TIMED(test_errors());
	TIMED(test_runtime_corruption());
	TIMED(test_blockif());
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

	return q2t_finish();
}
