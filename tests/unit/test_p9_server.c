/*
 * Unit test of the 9P2000.L server (devices/p9_server.c): hand-built
 * messages against a temporary share directory, results checked against
 * the host directory; escape attempts, read-only shares and malformed
 * messages; checkpoint of the fid table (p9_server_save/load into a new
 * server, as a restore in a new process does) and corrupt or truncated
 * saved state; the guest-versus-host rules (no setuid bits, no guest
 * ownership, no device nodes, nothing but files and directories opened,
 * no blocking on a FIFO, a bounded fid count).  No KVM needed.
 *
 * Prints one line per check and "N passed, N failed"; exits 1 on failure.
 * Run it also with HYVE_P9_NO_OPENAT2=1 to exercise the fallback resolver
 * (the test does that itself in a second pass).
 * test-sources: devices/p9_server.c devices/p9_fs.c devices/p9_state.c core/snapshot.c
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "../../core/snapshot.h"
#include "../../devices/p9_server.h"

static int npass, nfail;
static const char *pass_name = "";

static void check(bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s %s", ok ? "ok  " : "FAIL", pass_name);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	if (ok)
		npass++;
	else
		nfail++;
}

/* ---- message building ---- */

struct msg {
	uint8_t b[70000];
	size_t n;
};

static void p8(struct msg *m, uint8_t v) { m->b[m->n++] = v; }
static void p16(struct msg *m, uint16_t v) { p8(m, (uint8_t)v); p8(m, (uint8_t)(v >> 8)); }
static void p32(struct msg *m, uint32_t v) { p16(m, (uint16_t)v); p16(m, (uint16_t)(v >> 16)); }
static void p64(struct msg *m, uint64_t v) { p32(m, (uint32_t)v); p32(m, (uint32_t)(v >> 32)); }
static void ps(struct msg *m, const char *s)
{
	size_t l = strlen(s);
	p16(m, (uint16_t)l);
	memcpy(m->b + m->n, s, l);
	m->n += l;
}
static void pbytes(struct msg *m, const void *d, size_t l)
{
	memcpy(m->b + m->n, d, l);
	m->n += l;
}

static void begin(struct msg *m, uint8_t type)
{
	m->n = 0;
	p32(m, 0);
	p8(m, type);
	p16(m, 0x1234);
}

static void finish(struct msg *m)
{
	uint32_t n = (uint32_t)m->n;
	memcpy(m->b, &n, 4);
}

static uint8_t rep[P9_MAX_MSIZE];
static size_t replen;
static struct p9_server *srv;

static uint32_t g32(size_t off) { uint32_t v; memcpy(&v, rep + off, 4); return v; }
static uint64_t g64(size_t off) { uint64_t v; memcpy(&v, rep + off, 8); return v; }
static uint16_t g16(size_t off) { uint16_t v; memcpy(&v, rep + off, 2); return v; }

/* Send; returns the reply type; *err = Rlerror errno or 0. */
static int send_raw(const uint8_t *b, size_t n, size_t repcap, int *err)
{
	replen = p9_handle(srv, b, n, rep, repcap);
	*err = 0;
	if (replen < 7 || g32(0) != replen)
		return -1;
	if (rep[4] == 7)
		*err = (int)g32(7);
	return rep[4];
}

static int xfer(struct msg *m, int *err)
{
	finish(m);
	return send_raw(m->b, m->n, sizeof(rep), err);
}

/* Expect success (type+1); returns true if so. */
static bool ok_reply(struct msg *m, const char *what)
{
	int err, t = xfer(m, &err);
	bool ok = t == m->b[4] + 1;
	check(ok, "%s (reply %d, errno %d)", what, t, err);
	return ok;
}

static int expect_err(struct msg *m)
{
	int err, t = xfer(m, &err);
	return t == 7 ? err : 0;
}

/* ---- operations ---- */

enum { Tstatfs = 8, Tlopen = 12, Tlcreate = 14, Tsymlink = 16, Tmknod = 18, Trename = 20, Treadlink = 22,
       Tgetattr = 24, Tsetattr = 26, Txattrwalk = 30, Treaddir = 40, Tfsync = 50, Tlock = 52, Tlink = 70,
       Tmkdir = 72, Trenameat = 74, Tunlinkat = 76, Tversion = 100, Tattach = 104, Tflush = 108,
       Twalk = 110, Tread = 116, Twrite = 118, Tclunk = 120, Tremove = 122 };

static struct msg m;

static void mk_walk(uint32_t fid, uint32_t newfid, int n, const char **names)
{
	begin(&m, Twalk);
	p32(&m, fid);
	p32(&m, newfid);
	p16(&m, (uint16_t)n);
	for (int i = 0; i < n; i++)
		ps(&m, names[i]);
}

static int walk(uint32_t fid, uint32_t newfid, int n, const char **names)
{
	mk_walk(fid, newfid, n, names);
	int err, t = xfer(&m, &err);
	if (t == 111 && g16(7) != n)
		return -ENOENT;   /* partial walk */
	return t == 111 ? 0 : -err;
}

static int walk1(uint32_t fid, uint32_t newfid, const char *name)
{
	return walk(fid, newfid, 1, &name);
}

static void clunk(uint32_t fid)
{
	begin(&m, Tclunk);
	p32(&m, fid);
	int err;
	xfer(&m, &err);
}

static char root[PATH_MAX];

static char *hp(const char *rel)
{
	static char buf[PATH_MAX * 2];
	snprintf(buf, sizeof(buf), "%s/%s", root, rel);
	return buf;
}

static bool host_content(const char *rel, const char *want)
{
	char buf[256] = { 0 };
	int fd = open(hp(rel), O_RDONLY);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

static void version_attach(uint32_t fid)
{
	begin(&m, Tversion);
	p32(&m, 65536);
	ps(&m, "9P2000.L");
	if (ok_reply(&m, "Tversion"))
		check(g32(7) == 65536 && g16(11) == 8 && memcmp(rep + 13, "9P2000.L", 8) == 0,
		      "Rversion msize 65536 and 9P2000.L");
	begin(&m, Tattach);
	p32(&m, fid);
	p32(&m, 0xffffffffu);
	ps(&m, "root");
	ps(&m, "");
	p32(&m, 0);
	if (ok_reply(&m, "Tattach"))
		check(rep[7] == 0x80, "attach qid is a directory");
}

static void run_functional(void)
{
	version_attach(1);

	/* lcreate + write + read */
	check(walk(1, 2, 0, NULL) == 0, "clone root fid");
	begin(&m, Tlcreate);
	p32(&m, 2);
	ps(&m, "hello.txt");
	p32(&m, 02 | 0100);   /* O_RDWR|O_CREAT */
	p32(&m, 0644);
	p32(&m, getgid());
	if (ok_reply(&m, "Tlcreate hello.txt"))
		check(rep[7] == 0, "lcreate qid is a file");
	struct stat st;
	check(stat(hp("hello.txt"), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0644,
	      "hello.txt exists on the host, mode 0644");
	begin(&m, Twrite);
	p32(&m, 2);
	p64(&m, 0);
	p32(&m, 11);
	pbytes(&m, "hello world", 11);
	if (ok_reply(&m, "Twrite"))
		check(g32(7) == 11, "Rwrite count 11");
	check(host_content("hello.txt", "hello world"), "host file holds 'hello world'");
	begin(&m, Tread);
	p32(&m, 2);
	p64(&m, 6);
	p32(&m, 100);
	if (ok_reply(&m, "Tread"))
		check(g32(7) == 5 && memcmp(rep + 11, "world", 5) == 0, "Rread at 6 gives 'world'");
	/* read clamped to reply room */
	begin(&m, Tread);
	p32(&m, 2);
	p64(&m, 0);
	p32(&m, 1000000);
	finish(&m);
	int err, t = send_raw(m.b, m.n, 16, &err);
	check(t == 117 && g32(7) == 5 && replen == 16, "Tread count clamped to the reply buffer");
	begin(&m, Tfsync);
	p32(&m, 2);
	p32(&m, 0);
	ok_reply(&m, "Tfsync");
	begin(&m, Tlock);
	p32(&m, 2);
	p8(&m, 1);
	p32(&m, 0);
	p64(&m, 0);
	p64(&m, 0);
	p32(&m, 42);
	ps(&m, "client");
	if (ok_reply(&m, "Tlock write lock"))
		check(rep[7] == 0, "lock granted");
	clunk(2);

	/* getattr / setattr */
	check(walk1(1, 3, "hello.txt") == 0, "walk to hello.txt");
	begin(&m, Tgetattr);
	p32(&m, 3);
	p64(&m, 0x7ff);
	stat(hp("hello.txt"), &st);
	if (ok_reply(&m, "Tgetattr"))
		check(g64(7 + 8 + 5) == (uint64_t)st.st_ino && g64(7 + 8 + 13 + 12 + 16) == 11 &&
		      (g32(7 + 8 + 13) & 07777) == 0644,
		      "getattr ino, size 11, mode 0644 match the host");
	begin(&m, Tsetattr);
	p32(&m, 3);
	p32(&m, 1 | 8 | 32 | 256);   /* MODE | SIZE | MTIME | MTIME_SET */
	p32(&m, 0600);
	p32(&m, 0);
	p32(&m, 0);
	p64(&m, 5);
	p64(&m, 0);
	p64(&m, 0);
	p64(&m, 1000000000);
	p64(&m, 0);
	ok_reply(&m, "Tsetattr mode, size, mtime");
	stat(hp("hello.txt"), &st);
	check((st.st_mode & 0777) == 0600 && st.st_size == 5 && st.st_mtime == 1000000000,
	      "host file now 0600, 5 bytes, mtime 1e9");

	/* statfs */
	begin(&m, Tstatfs);
	p32(&m, 1);
	if (ok_reply(&m, "Tstatfs"))
		check(g32(11) > 0 && g32(7 + 4 + 4 + 40 + 8) > 0, "statfs bsize and namelen nonzero");

	/* mkdir + readdir */
	begin(&m, Tmkdir);
	p32(&m, 1);
	ps(&m, "sub");
	p32(&m, 0755);
	p32(&m, getgid());
	ok_reply(&m, "Tmkdir sub");
	check(stat(hp("sub"), &st) == 0 && S_ISDIR(st.st_mode), "sub is a directory on the host");
	check(walk1(1, 4, "sub") == 0, "walk to sub");
	begin(&m, Tlcreate);
	p32(&m, 4);
	ps(&m, "inner");
	p32(&m, 01 | 0100);
	p32(&m, 0644);
	p32(&m, getgid());
	ok_reply(&m, "Tlcreate sub/inner");
	clunk(4);
	check(walk(1, 5, 0, NULL) == 0, "clone root for readdir");
	begin(&m, Tlopen);
	p32(&m, 5);
	p32(&m, 0);
	ok_reply(&m, "Tlopen root for reading");
	int seen_hello = 0, seen_sub = 0, entries = 0;
	uint64_t off = 0;
	for (int round = 0; round < 10; round++) {
		begin(&m, Treaddir);
		p32(&m, 5);
		p64(&m, off);
		p32(&m, 40);   /* small: forces several rounds */
		if (xfer(&m, &err) != 41)
			break;
		uint32_t cnt = g32(7);
		if (cnt == 0)
			break;
		size_t p = 11, end = 11 + cnt;
		while (p + 24 <= end) {
			uint16_t nl = g16(p + 22);
			if (p + 24 + nl > end)
				break;
			off = g64(p + 13);
			if (nl == 9 && memcmp(rep + p + 24, "hello.txt", 9) == 0)
				seen_hello++;
			if (nl == 3 && memcmp(rep + p + 24, "sub", 3) == 0)
				seen_sub += rep[p] == 0x80;
			entries++;
			p += 24 + nl;
		}
	}
	check(seen_hello == 1 && seen_sub == 1 && entries == 4, "readdir lists ., .., hello.txt, sub once (%d)",
	      entries);
	clunk(5);

	/* renameat */
	begin(&m, Trenameat);
	p32(&m, 1);
	ps(&m, "hello.txt");
	p32(&m, 1);
	ps(&m, "renamed.txt");
	ok_reply(&m, "Trenameat hello.txt -> renamed.txt");
	check(access(hp("hello.txt"), F_OK) != 0 && access(hp("renamed.txt"), F_OK) == 0, "renamed on the host");
	/* fid 3 still names the file after the rename */
	begin(&m, Tlopen);
	p32(&m, 3);
	p32(&m, 0);
	ok_reply(&m, "Tlopen of a renamed file's fid");
	clunk(3);
	/* Trename */
	check(walk1(1, 6, "renamed.txt") == 0, "walk to renamed.txt");
	begin(&m, Trename);
	p32(&m, 6);
	p32(&m, 1);
	ps(&m, "again.txt");
	ok_reply(&m, "Trename renamed.txt -> again.txt");
	check(access(hp("again.txt"), F_OK) == 0, "again.txt on the host");
	/* link */
	begin(&m, Tlink);
	p32(&m, 1);
	p32(&m, 6);
	ps(&m, "hard.txt");
	ok_reply(&m, "Tlink hard.txt");
	struct stat a, b;
	check(stat(hp("again.txt"), &a) == 0 && stat(hp("hard.txt"), &b) == 0 && a.st_ino == b.st_ino,
	      "hard.txt is a hard link of again.txt");
	clunk(6);

	/* symlink + readlink */
	begin(&m, Tsymlink);
	p32(&m, 1);
	ps(&m, "lnk");
	ps(&m, "sub/inner");
	p32(&m, getgid());
	if (ok_reply(&m, "Tsymlink lnk -> sub/inner"))
		check(rep[7] == 0x02, "symlink qid type");
	char lb[64] = { 0 };
	check(readlink(hp("lnk"), lb, sizeof(lb)) == 9 && strcmp(lb, "sub/inner") == 0, "host symlink target");
	check(walk1(1, 7, "lnk") == 0, "walk to lnk");
	begin(&m, Treadlink);
	p32(&m, 7);
	if (ok_reply(&m, "Treadlink"))
		check(g16(7) == 9 && memcmp(rep + 9, "sub/inner", 9) == 0, "readlink gives sub/inner");
	clunk(7);

	/* xattrwalk */
	begin(&m, Txattrwalk);
	p32(&m, 1);
	p32(&m, 8);
	ps(&m, "user.foo");
	check(expect_err(&m) == ENODATA, "Txattrwalk of a name: ENODATA");
	begin(&m, Txattrwalk);
	p32(&m, 1);
	p32(&m, 8);
	ps(&m, "");
	if (ok_reply(&m, "Txattrwalk list"))
		check(g64(7) == 0, "xattr list is empty");
	clunk(8);

	/* unlinkat */
	begin(&m, Tunlinkat);
	p32(&m, 1);
	ps(&m, "hard.txt");
	p32(&m, 0);
	ok_reply(&m, "Tunlinkat hard.txt");
	check(access(hp("hard.txt"), F_OK) != 0, "hard.txt gone");
	begin(&m, Tunlinkat);
	p32(&m, 1);
	ps(&m, "sub");
	p32(&m, 0x200);
	check(expect_err(&m) == ENOTEMPTY, "unlinkat of a non-empty dir: ENOTEMPTY");
	/* Tremove */
	const char *si[] = { "sub", "inner" };
	check(walk(1, 9, 2, si) == 0, "walk sub/inner");
	begin(&m, Tremove);
	p32(&m, 9);
	ok_reply(&m, "Tremove sub/inner");
	check(access(hp("sub/inner"), F_OK) != 0, "sub/inner gone");
	begin(&m, Tunlinkat);
	p32(&m, 1);
	ps(&m, "sub");
	p32(&m, 0x200);
	ok_reply(&m, "Tunlinkat sub (AT_REMOVEDIR)");
	check(access(hp("sub"), F_OK) != 0, "sub gone");
	begin(&m, Tflush);
	p16(&m, 1);
	ok_reply(&m, "Tflush");
}

static void run_escapes(void)
{
	char outside[PATH_MAX * 2];
	snprintf(outside, sizeof(outside), "%s/../outside-secret", root);
	symlink("/etc", hp("etc"));
	symlink("/etc/passwd", hp("abs"));
	symlink("../../../../../../../../etc", hp("rel"));
	mkdir(hp("d"), 0755);
	symlink("../..", hp("d/up"));

	check(walk1(1, 20, "..") == 0, "walk .. from the root succeeds");
	begin(&m, Tgetattr);
	p32(&m, 20);
	p64(&m, 0x7ff);
	struct stat st;
	stat(root, &st);
	check(ok_reply(&m, "getattr of root/..") && g64(7 + 8 + 5) == (uint64_t)st.st_ino,
	      "root/.. is the root itself");
	clunk(20);
	const char *upup[] = { "..", "..", "..", "etc", "passwd" };
	check(walk(1, 21, 5, upup) != 0, "walk ../../../etc/passwd fails");
	const char *dup2[] = { "d", "..", "..", "etc", "passwd" };
	check(walk(1, 21, 5, dup2) != 0, "walk d/../../etc/passwd fails");
	const char *upl[] = { "..", "..", "etc" };
	check(walk(1, 21, 3, upl) == 0 && rep[9 + 26] == 0x02, "walk ../../etc names the share's own symlink");
	clunk(21);
	const char *ep[] = { "etc", "passwd" };
	check(walk(1, 21, 2, ep) != 0, "walk through symlink to /etc fails");
	const char *rp[] = { "rel", "passwd" };
	check(walk(1, 21, 2, rp) != 0, "walk through ../../ symlink fails");
	const char *up[] = { "d", "up", "etc" };
	check(walk(1, 21, 3, up) != 0, "walk through d/up (../..) fails");
	check(walk1(1, 21, "abs") == 0, "walk to the absolute symlink itself is fine");
	begin(&m, Tlopen);
	p32(&m, 21);
	p32(&m, 0);
	check(expect_err(&m) != 0, "Tlopen of an absolute symlink fails (no follow)");
	clunk(21);
	check(walk1(1, 21, "a/b") == -EINVAL, "walk name with '/' refused");
	check(walk1(1, 21, "/etc") == -EINVAL, "walk name '/etc' refused");
	begin(&m, Tlcreate);
	p32(&m, 1);
	ps(&m, "..");
	p32(&m, 0100 | 1);
	p32(&m, 0644);
	p32(&m, 0);
	check(expect_err(&m) == EINVAL, "lcreate '..' refused");
	begin(&m, Tmkdir);
	p32(&m, 1);
	ps(&m, "x/y");
	p32(&m, 0755);
	p32(&m, 0);
	check(expect_err(&m) == EINVAL, "mkdir 'x/y' refused");
	/* create through a symlink name: O_NOFOLLOW */
	check(walk1(1, 22, "d") == 0, "walk d");
	begin(&m, Tlcreate);
	p32(&m, 22);
	ps(&m, "up");
	p32(&m, 0100 | 1);
	p32(&m, 0644);
	p32(&m, 0);
	check(expect_err(&m) != 0, "lcreate over a symlink name fails");
	clunk(22);
	begin(&m, Trenameat);
	p32(&m, 1);
	ps(&m, "d");
	p32(&m, 1);
	ps(&m, "../escaped");
	check(expect_err(&m) == EINVAL, "renameat to '../escaped' refused");
	check(access(outside, F_OK) != 0, "nothing created outside the share");
}

static void run_malformed(void)
{
	uint8_t b[64] = { 0 };
	int err, t;
	t = send_raw(b, 3, sizeof(rep), &err);
	check(t == 7 && err == EPROTO, "3-byte message: Rlerror EPROTO");
	begin(&m, Tgetattr);
	p32(&m, 1);
	finish(&m);   /* request_mask missing */
	t = send_raw(m.b, m.n, sizeof(rep), &err);
	check(t == 7 && err == EPROTO, "truncated Tgetattr: EPROTO");
	begin(&m, Tgetattr);
	p32(&m, 1);
	p64(&m, 0x7ff);
	finish(&m);
	t = send_raw(m.b, m.n - 3, sizeof(rep), &err);
	check(t == 7 && err == EPROTO, "size field beyond the buffer: EPROTO");
	begin(&m, Twalk);
	p32(&m, 1);
	p32(&m, 30);
	p16(&m, 1);
	p16(&m, 60000);   /* huge string length */
	pbytes(&m, "abc", 3);
	t = xfer(&m, &err);
	check(t == 7 && err == EPROTO, "walk name with huge length: EPROTO");
	const char *names[17];
	for (int i = 0; i < 17; i++)
		names[i] = ".";
	mk_walk(1, 30, 17, names);
	t = xfer(&m, &err);
	check(t == 7 && err == EINVAL, "nwname 17: EINVAL");
	begin(&m, Twrite);
	p32(&m, 1);
	p64(&m, 0);
	p32(&m, 1000);
	pbytes(&m, "short", 5);
	t = xfer(&m, &err);
	check(t == 7 && err == EPROTO, "Twrite count beyond the data: EPROTO");
	begin(&m, Tversion);
	p32(&m, 8192);
	p16(&m, 100);
	t = xfer(&m, &err);
	check(t == 7 && err == EPROTO, "Tversion string past the end: EPROTO");
	begin(&m, 250);
	t = xfer(&m, &err);
	check(t == 7 && err == EOPNOTSUPP, "unknown type: EOPNOTSUPP");
	begin(&m, Tclunk);
	p32(&m, 777);
	t = xfer(&m, &err);
	check(t == 7 && err == EBADF, "clunk of an unknown fid: EBADF");
	memset(b, 0xff, sizeof(b));
	t = send_raw(b, sizeof(b), sizeof(rep), &err);
	check(t == 7 && err == EPROTO, "all-0xff message: EPROTO");
	begin(&m, Tattach);
	p32(&m, 1);   /* fid in use */
	p32(&m, 0xffffffffu);
	ps(&m, "");
	ps(&m, "");
	p32(&m, 0);
	check(expect_err(&m) == EBADF, "attach to a fid in use: EBADF");
}

/* ---- checkpoint ---- */

static void host_write(const char *rel, const char *data)
{
	int fd = open(hp(rel), O_CREAT | O_TRUNC | O_WRONLY, 0644);
	if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data))
		check(false, "host write %s", rel);
	if (fd >= 0)
		close(fd);
}

/* Treaddir fid from *off (advanced to the last entry's offset); counts
 * ".", ".." and "a".."e" in seen[0], seen[1], seen[2..6]; returns the
 * number of entries, or -errno. */
static int readdir_collect(uint32_t fid, uint64_t *off, uint32_t count, int seen[7])
{
	begin(&m, Treaddir);
	p32(&m, fid);
	p64(&m, *off);
	p32(&m, count);
	int err;
	if (xfer(&m, &err) != 41)
		return -err;
	uint32_t cnt = g32(7);
	size_t p = 11, end = 11 + cnt;
	int n = 0;
	while (p + 24 <= end) {
		uint16_t nl = g16(p + 22);
		if (p + 24 + nl > end)
			break;
		*off = g64(p + 13);
		const char *nm = (const char *)rep + p + 24;
		if (nl == 1 && nm[0] == '.')
			seen[0]++;
		else if (nl == 2 && nm[0] == '.' && nm[1] == '.')
			seen[1]++;
		else if (nl == 1 && nm[0] >= 'a' && nm[0] <= 'e')
			seen[2 + nm[0] - 'a']++;
		n++;
		p += 24 + nl;
	}
	return n;
}

static int getattr_err(uint32_t fid)
{
	begin(&m, Tgetattr);
	p32(&m, fid);
	p64(&m, 0x7ff);
	return expect_err(&m);
}

/* The saved state as devices/p9_state.c lays it out (for hand-made states). */
static void state_header(struct snap_buf *sb, uint32_t magic, uint32_t version, uint32_t msize, uint32_t n)
{
	sb_init(sb);
	sb_u32(sb, magic);
	sb_u32(sb, version);
	sb_u32(sb, msize);
	sb_u32(sb, n);
}

static void state_fid(struct snap_buf *sb, uint32_t fid, uint8_t kind, uint32_t lflags, const char *path)
{
	sb_u32(sb, fid);
	sb_u32(sb, 0);
	sb_u8(sb, kind);
	sb_u32(sb, lflags);
	sb_u64(sb, 0);
	sb_str(sb, path);
}

#define ST_MAGIC 0x54533950u

static int load_buf(const void *p, size_t n, char *err, size_t errlen)
{
	struct snap_rd rd;
	sr_init(&rd, p, n);
	err[0] = 0;
	return p9_server_load(srv, &rd, err, errlen);
}

/* ---- guest versus host: modes, owners, special files, limits ---- */

#define GUEST_ID 12345u   /* a host uid/gid the guest has no business giving */
#define SETID_BITS (S_ISUID | S_ISGID)
enum { A_MODE = 1, A_UID = 2, A_GID = 4, A_SIZE = 8 };   /* Tsetattr valid bits */

static void hung(int sig)
{
	(void)sig;
	static const char msg[] = "FAIL a 9P request or restore blocked (watchdog alarm)\n";
	if (write(2, msg, sizeof(msg) - 1) < 0) { /* exiting anyway */ }
	_exit(1);
}

/* Until watchdog_off, a request that blocks fails the test instead of
 * hanging it. */
static void watchdog_on(void)
{
	signal(SIGALRM, hung);
	alarm(10);
}

static void watchdog_off(void)
{
	alarm(0);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The request in m: 0 if it succeeded, else its Rlerror errno (-1: neither). */
static int result(void)
{
	int err, t = xfer(&m, &err);
	return t == m.b[4] + 1 ? 0 : t == 7 ? err : -1;
}

static int lcreate(uint32_t dfid, const char *name, uint32_t flags, uint32_t mode, uint32_t gid)
{
	begin(&m, Tlcreate);
	p32(&m, dfid);
	ps(&m, name);
	p32(&m, flags);
	p32(&m, mode);
	p32(&m, gid);
	return result();
}

static int lopen(uint32_t fid, uint32_t flags)
{
	begin(&m, Tlopen);
	p32(&m, fid);
	p32(&m, flags);
	return result();
}

/* Tsetattr of the given valid bits; times left alone. */
static int setattr(uint32_t fid, uint32_t valid, uint32_t mode, uint32_t uid, uint32_t gid, uint64_t size)
{
	begin(&m, Tsetattr);
	p32(&m, fid);
	p32(&m, valid);
	p32(&m, mode);
	p32(&m, uid);
	p32(&m, gid);
	p64(&m, size);
	for (int i = 0; i < 4; i++)
		p64(&m, 0);
	return result();
}

static int mknod9(uint32_t dfid, const char *name, uint32_t mode, uint32_t major, uint32_t minor)
{
	begin(&m, Tmknod);
	p32(&m, dfid);
	ps(&m, name);
	p32(&m, mode);
	p32(&m, major);
	p32(&m, minor);
	p32(&m, GUEST_ID);
	return result();
}

static int renameat9(uint32_t ofid, const char *on, uint32_t nfid, const char *nn)
{
	begin(&m, Trenameat);
	p32(&m, ofid);
	ps(&m, on);
	p32(&m, nfid);
	ps(&m, nn);
	return result();
}

static int read9(uint32_t fid)
{
	begin(&m, Tread);
	p32(&m, fid);
	p64(&m, 0);
	p32(&m, 16);
	return result();
}

/* lstat of a share entry; st zeroed if there is none. */
static bool host_stat(const char *rel, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	return lstat(hp(rel), st) == 0;
}

static unsigned perm(const struct stat *st)
{
	return (unsigned)(st->st_mode & 07777);
}

/* No setuid/setgid from the guest, and the guest's ids never reach the host. */
static void run_modes_owners(void)
{
	struct stat st;
	uid_t me = geteuid();
	gid_t mygid = getegid();
	check(walk(1, 60, 0, NULL) == 0, "modes: clone root fid");
	int e = lcreate(60, "suid.bin", 2 | 0100, 06755, GUEST_ID);
	bool there = host_stat("suid.bin", &st);   /* before check(): its arguments come in no set order */
	check(e == 0 && there && !(st.st_mode & SETID_BITS) && perm(&st) == 0755,
	      "Tlcreate mode 06755: host file 0%o, no setuid/setgid (errno %d)", perm(&st), e);
	check(st.st_uid == me && st.st_gid == mygid, "Tlcreate gid %u ignored: host file %u:%u is hyve's own", GUEST_ID,
	      (unsigned)st.st_uid, (unsigned)st.st_gid);
	e = setattr(60, A_MODE, 04755, 0, 0, 0);
	there = host_stat("suid.bin", &st);
	check(e == 0 && there && !(st.st_mode & SETID_BITS) && perm(&st) == 0755,
	      "mode-only Tsetattr 04755: accepted, host file 0%o has no setuid (errno %d)", perm(&st), e);
	e = setattr(60, A_MODE, 02711, 0, 0, 0);
	there = host_stat("suid.bin", &st);
	check(e == 0 && there && perm(&st) == 0711,
	      "mode-only Tsetattr 02711: host file 0%o has no setgid (errno %d)", perm(&st), e);
	clunk(60);
	begin(&m, Tmkdir);
	p32(&m, 1);
	ps(&m, "setid.d");
	p32(&m, 07755);
	p32(&m, GUEST_ID);
	e = result();
	there = host_stat("setid.d", &st);
	check(e == 0 && there && S_ISDIR(st.st_mode) && perm(&st) == 01755 && st.st_uid == me &&
	      st.st_gid == mygid,
	      "Tmkdir mode 07755 gid %u: host dir 0%o (sticky kept, no setuid/setgid), %u:%u (errno %d)", GUEST_ID,
	      perm(&st), (unsigned)st.st_uid, (unsigned)st.st_gid, e);
	e = mknod9(1, "setid.fifo", S_IFIFO | 06644, 0, 0);
	there = host_stat("setid.fifo", &st);
	check(e == 0 && there && S_ISFIFO(st.st_mode) && perm(&st) == 0644 && st.st_uid == me &&
	      st.st_gid == mygid,
	      "Tmknod FIFO mode 06644: host FIFO 0%o, hyve's own (errno %d)", perm(&st), e);
	begin(&m, Tsymlink);
	p32(&m, 1);
	ps(&m, "setid.lnk");
	ps(&m, "suid.bin");
	p32(&m, GUEST_ID);
	e = result();
	there = host_stat("setid.lnk", &st);
	check(e == 0 && there && st.st_uid == me && st.st_gid == mygid,
	      "Tsymlink gid %u ignored: host symlink %u:%u (errno %d)", GUEST_ID, (unsigned)st.st_uid,
	      (unsigned)st.st_gid, e);

	struct stat before;
	host_stat("suid.bin", &before);
	check(walk1(1, 61, "suid.bin") == 0, "owners: walk suid.bin");
	e = setattr(61, A_UID, 0, GUEST_ID, 0, 0);
	there = host_stat("suid.bin", &st);
	check(e == EPERM && there && st.st_uid == before.st_uid,
	      "Tsetattr uid %u: Rlerror EPERM, host owner still %u (errno %d)", GUEST_ID, (unsigned)st.st_uid, e);
	e = setattr(61, A_GID, 0, 0, GUEST_ID, 0);
	there = host_stat("suid.bin", &st);
	check(e == EPERM && there && st.st_gid == before.st_gid,
	      "Tsetattr gid %u: Rlerror EPERM, host group still %u (errno %d)", GUEST_ID, (unsigned)st.st_gid, e);
	e = setattr(61, A_MODE | A_UID, 0600, GUEST_ID, 0, 0);
	there = host_stat("suid.bin", &st);
	check(e == EPERM && there && perm(&st) == perm(&before),
	      "Tsetattr mode+uid %u: EPERM and the mode unchanged too (0%o)", GUEST_ID, perm(&st));
	e = setattr(61, A_UID | A_GID, 0, (uint32_t)before.st_uid, (uint32_t)before.st_gid, 0);
	there = host_stat("suid.bin", &st);
	check(e == 0 && there && st.st_uid == before.st_uid && st.st_gid == before.st_gid,
	      "Tsetattr to the current owner: no-op success (errno %d)", e);
	if (me == 0 && chown(hp("suid.bin"), GUEST_ID, GUEST_ID) == 0) {
		e = setattr(61, A_UID | A_GID, 0, me, mygid, 0);
		there = host_stat("suid.bin", &st);
		check(e == 0 && there && st.st_uid == me && st.st_gid == mygid,
		      "Tsetattr of a foreign-owned file to hyve's own uid/gid: applied (%u:%u, errno %d)",
		      (unsigned)st.st_uid, (unsigned)st.st_gid, e);
	}
	clunk(61);
}

/* Device nodes are never made; nothing but files and directories is ever
 * opened, and nothing blocks. */
static void run_special_files(void)
{
	struct stat st;
	watchdog_on();
	double t0 = now_s();
	int e = mknod9(1, "null", S_IFCHR | 0666, 1, 3);
	check(e == EPERM && !host_stat("null", &st), "Tmknod char device 1:3: Rlerror EPERM, nothing on the host (errno %d)",
	      e);
	e = mknod9(1, "disk", S_IFBLK | 0660, 8, 0);
	check(e == EPERM && !host_stat("disk", &st), "Tmknod block device 8:0: Rlerror EPERM, nothing on the host (errno %d)",
	      e);
	e = mknod9(1, "fifo", S_IFIFO | 0644, 0, 0);
	check(e == 0 && host_stat("fifo", &st) && S_ISFIFO(st.st_mode), "Tmknod FIFO: made (errno %d)", e);
	check(walk1(1, 62, "fifo") == 0, "walk to the FIFO");
	static const char *const acc[] = { "O_RDONLY", "O_WRONLY", "O_RDWR" };
	for (uint32_t a = 0; a < 3; a++) {
		e = lopen(62, a);
		check(e == ENXIO, "Tlopen of a FIFO %s: Rlerror ENXIO at once (errno %d)", acc[a], e);
	}
	check(getattr_err(62) == 0, "Tgetattr of the FIFO still works");
	e = setattr(62, A_SIZE, 0, 0, 0, 0);
	check(e == EINVAL, "Tsetattr size of a FIFO: EINVAL, never opened to truncate (errno %d)", e);
	clunk(62);
	check(walk(1, 63, 0, NULL) == 0, "clone root for Tlcreate over the FIFO");
	for (uint32_t a = 0; a < 3; a++) {
		e = lcreate(63, "fifo", a | 0100, 0644, 0);
		check(e == ENXIO, "Tlcreate %s without O_EXCL over an existing FIFO: ENXIO (errno %d)", acc[a], e);
	}
	clunk(63);
	e = mknod9(1, "sock", S_IFSOCK | 0644, 0, 0);
	check(e == 0 && host_stat("sock", &st) && S_ISSOCK(st.st_mode), "Tmknod socket: made (errno %d)", e);
	check(walk1(1, 64, "sock") == 0, "walk to the socket");
	e = lopen(64, 2);
	check(e == ENXIO, "Tlopen of a socket: ENXIO (errno %d)", e);
	clunk(64);
	if (geteuid() == 0 && mknod(hp("hostnull"), S_IFCHR | 0666, makedev(1, 3)) == 0) {
		check(walk1(1, 65, "hostnull") == 0, "walk to a host-made char device in the share");
		e = lopen(65, 0);
		check(e == ENXIO, "Tlopen of a host-made char device: ENXIO, never opened (errno %d)", e);
		clunk(65);
		check(walk(1, 65, 0, NULL) == 0, "clone root for Tlcreate over the char device");
		e = lcreate(65, "hostnull", 2 | 0100, 0644, 0);
		check(e == ENXIO, "Tlcreate without O_EXCL over a host-made char device: ENXIO (errno %d)", e);
		clunk(65);
	}
	double dt = now_s() - t0;
	watchdog_off();
	check(dt < 2.0, "special files: every request answered promptly (%.3f s)", dt);
}

/* Walk in place of an opened fid; renames that would push a fid path past
 * PATH_MAX; the fid count limit. */
static void run_walk_limits(void)
{
	check(walk(1, 66, 0, NULL) == 0 && lopen(66, 0) == 0, "clone and open the root");
	check(walk1(66, 66, "suid.bin") == -EINVAL, "Twalk of an opened fid onto itself: EINVAL");
	check(walk1(66, 67, "suid.bin") == 0, "Twalk of an opened fid to a new fid works");
	clunk(66);
	clunk(67);

	/* t/x200 (19 times)/y250: a share path of 4071 bytes, made with *at()
	 * since the host path is longer than PATH_MAX. */
	char big[201], leaf[251];
	memset(big, 'x', 200);
	big[200] = 0;
	memset(leaf, 'y', 250);
	leaf[250] = 0;
	const char *names[21] = { "t" };
	int cur = open(root, O_PATH | O_DIRECTORY);
	bool made = cur >= 0 && mkdirat(cur, "t", 0755) == 0;
	for (int i = 0; i <= 19 && made; i++) {
		const char *n = i == 0 ? "t" : big;
		if (i > 0)
			made = mkdirat(cur, big, 0755) == 0;
		int next = made ? openat(cur, n, O_PATH | O_DIRECTORY) : -1;
		close(cur);
		cur = next;
		made = cur >= 0;
		if (i > 0)
			names[i] = big;
	}
	int fd = made ? openat(cur, leaf, O_CREAT | O_WRONLY, 0644) : -1;
	names[20] = leaf;
	check(fd >= 0, "deep tree on the host");
	if (fd >= 0)
		close(fd);
	if (cur >= 0)
		close(cur);
	check(walk(1, 68, 16, names) == 0 && walk(68, 68, 5, names + 16) == 0, "walk to a file 4071 bytes deep");
	char longname[256];
	memset(longname, 'z', 255);
	longname[255] = 0;
	int e = renameat9(1, "t", 1, longname);
	check(e == ENAMETOOLONG && access(hp("t"), F_OK) == 0,
	      "Trenameat that would make a fid path >= PATH_MAX: ENAMETOOLONG, nothing renamed (errno %d)", e);
	check(getattr_err(68) == 0, "the deep fid still works");
	e = renameat9(1, "t", 1, "u");
	check(e == 0 && getattr_err(68) == 0, "a shorter rename goes through, the deep fid follows (errno %d)", e);
	struct snap_buf sb;
	sb_init(&sb);
	char err[200] = "";
	int rc = p9_server_save(srv, &sb) == 0 ? load_buf(sb.data, sb.len, err, sizeof(err)) : -2;
	check(rc == 0 && getattr_err(68) == 0, "checkpoint with the deep fid loads, fid works (%s)", err);
	sb_free(&sb);
	clunk(68);

	/* RLIMIT_NOFILE 300: 150 fds kept for the rest of hyve, so 75 fids. */
	struct rlimit old, low;
	if (getrlimit(RLIMIT_NOFILE, &old) != 0 || old.rlim_cur < 300)
		return;
	low = old;
	low.rlim_cur = 300;
	check(setrlimit(RLIMIT_NOFILE, &low) == 0, "fid limit: RLIMIT_NOFILE 300");
	int n = 0;
	e = 0;
	for (uint32_t f = 100; f < 400 && e == 0; f++)
		if ((e = walk(1, f, 0, NULL)) == 0)
			n++;
	fd = open("/dev/null", O_RDONLY);
	check(e == -EMFILE && n > 0 && n < 75, "fid limit: %d fids cloned, then Rlerror EMFILE (errno %d)", n, -e);
	check(fd >= 0, "fid limit: fds left for the rest of the process");
	if (fd >= 0)
		close(fd);
	state_header(&sb, ST_MAGIC, 1, 8192, 100);
	for (uint32_t i = 0; i < 100; i++)
		state_fid(&sb, 1000 + i, 0, 0, "");
	rc = load_buf(sb.data, sb.len, err, sizeof(err));
	check(rc == -1 && strstr(err, "RLIMIT_NOFILE"), "fid limit: state with 100 fids refused: %s", err);
	sb_free(&sb);
	setrlimit(RLIMIT_NOFILE, &old);
	version_attach(1);   /* the refused load reset the server */
}

/* A checkpoint's opened fids whose files became a FIFO or a device node:
 * the restore must neither block nor open them.  It succeeds; those fids
 * are stale (ESTALE), as for a file replaced by a directory. */
static void run_restore_special(void)
{
	host_write("cpfifo", "data");
	host_write("cpdev", "data");
	check(walk1(1, 70, "cpfifo") == 0 && lopen(70, 0) == 0, "restore special: open cpfifo (a file, for now)");
	check(walk1(1, 71, "cpfifo") == 0, "restore special: walk cpfifo, not opened");
	check(walk1(1, 72, "cpdev") == 0 && lopen(72, 2) == 0, "restore special: open cpdev O_RDWR");
	struct snap_buf sb;
	sb_init(&sb);
	check(p9_server_save(srv, &sb) == 0, "restore special: save");
	unlink(hp("cpfifo"));
	unlink(hp("cpdev"));
	bool dev = geteuid() == 0 && mknod(hp("cpdev"), S_IFCHR | 0666, makedev(1, 3)) == 0;
	check(mkfifo(hp("cpfifo"), 0666) == 0 && (dev || mkfifo(hp("cpdev"), 0666) == 0),
	      "restore special: cpfifo now a FIFO, cpdev a %s", dev ? "char device" : "FIFO");
	char err[200] = "";
	watchdog_on();
	double t0 = now_s();
	int rc = load_buf(sb.data, sb.len, err, sizeof(err));
	double dt = now_s() - t0;
	watchdog_off();
	check(rc == 0 && dt < 2.0, "restore special: load returns at once (%.3f s, rc %d %s)", dt, rc, err);
	int e70 = read9(70), e72 = read9(72);
	check(e70 == ESTALE && e72 == ESTALE, "restore special: the opened fids are stale (errno %d, %d)", e70, e72);
	check(getattr_err(71) == 0, "restore special: the unopened fid is a name and still works");
	check(lopen(71, 0) == ENXIO, "restore special: Tlopen of it now: ENXIO");
	check(getattr_err(1) == 0, "restore special: root fid works");
	sb_free(&sb);
	/* The same from a hand-made state: an opened fid on a FIFO. */
	state_header(&sb, ST_MAGIC, 1, 8192, 1);
	state_fid(&sb, 7, 0x04, 1, "cpfifo");   /* opened O_WRONLY: would wait for a reader */
	watchdog_on();
	rc = load_buf(sb.data, sb.len, err, sizeof(err));
	watchdog_off();
	check(rc == 0 && read9(7) == ESTALE, "restore special: state with an O_WRONLY fid on a FIFO: loads, fid stale");
	sb_free(&sb);
	version_attach(1);
}

static void run_checkpoint(void)
{
	p9_server_free(srv);
	srv = p9_server_new(root, false);
	check(srv != NULL, "checkpoint: server opens");
	host_write("cp.txt", "0123456789abcdefghij");
	host_write("gone.txt", "soon gone");
	mkdir(hp("cpdir"), 0755);
	const char *ents[] = { "cpdir/a", "cpdir/b", "cpdir/c", "cpdir/d", "cpdir/e" };
	for (int i = 0; i < 5; i++)
		host_write(ents[i], "x");

	begin(&m, Tversion);
	p32(&m, 12345);
	ps(&m, "9P2000.L");
	ok_reply(&m, "checkpoint: Tversion msize 12345");
	begin(&m, Tattach);
	p32(&m, 1);
	p32(&m, 0xffffffffu);
	ps(&m, "");
	ps(&m, "");
	p32(&m, 0);
	ok_reply(&m, "checkpoint: Tattach");
	check(walk1(1, 40, "cp.txt") == 0, "checkpoint: walk cp.txt");
	begin(&m, Tlopen);
	p32(&m, 40);
	p32(&m, 2 | 01000);   /* O_RDWR | O_TRUNC: the restore must not truncate again */
	ok_reply(&m, "checkpoint: Tlopen cp.txt O_RDWR|O_TRUNC");
	begin(&m, Twrite);
	p32(&m, 40);
	p64(&m, 0);
	p32(&m, 20);
	pbytes(&m, "0123456789abcdefghij", 20);
	ok_reply(&m, "checkpoint: Twrite 20 bytes");
	begin(&m, Tread);
	p32(&m, 40);
	p64(&m, 0);
	p32(&m, 10);
	check(ok_reply(&m, "checkpoint: Tread 10") && g32(7) == 10 && memcmp(rep + 11, "0123456789", 10) == 0,
	      "checkpoint: first 10 bytes before the save");
	check(walk1(1, 41, "cpdir") == 0, "checkpoint: walk cpdir");
	begin(&m, Tlopen);
	p32(&m, 41);
	p32(&m, 0);
	ok_reply(&m, "checkpoint: Tlopen cpdir");
	int seen[7] = { 0 };
	uint64_t doff = 0;
	int first = readdir_collect(41, &doff, 60, seen);   /* 60 bytes: two entries of seven */
	check(first >= 1 && first < 7, "checkpoint: first Treaddir returns part of the directory (%d)", first);
	check(walk1(1, 42, "gone.txt") == 0, "checkpoint: walk gone.txt");
	check(walk1(1, 43, "gone.txt") == 0, "checkpoint: walk gone.txt again");
	begin(&m, Tlopen);
	p32(&m, 43);
	p32(&m, 0);
	ok_reply(&m, "checkpoint: Tlopen gone.txt");
	check(walk1(1, 44, "cpdir") == 0, "checkpoint: walk cpdir (not opened)");
	begin(&m, Txattrwalk);
	p32(&m, 1);
	p32(&m, 45);
	ps(&m, "");
	ok_reply(&m, "checkpoint: Txattrwalk fid 45");

	struct snap_buf sb;
	sb_init(&sb);
	check(p9_server_save(srv, &sb) == 0 && !sb.failed && sb.len > 16, "checkpoint: save (%zu bytes)", sb.len);

	/* The old process goes away; the host removes a file meanwhile. */
	p9_server_free(srv);
	unlink(hp("gone.txt"));
	srv = p9_server_new(root, false);
	char err[200];
	struct snap_rd rd;
	sr_init(&rd, sb.data, sb.len);
	err[0] = 0;
	int rc = p9_server_load(srv, &rd, err, sizeof(err));
	check(rc == 0, "checkpoint: load into a new server (%s)", err);
	check(sr_done(&rd), "checkpoint: load consumed the whole state");
	check(p9_server_msize(srv) == 12345, "checkpoint: msize 12345 restored (%u)", p9_server_msize(srv));
	begin(&m, Tread);
	p32(&m, 40);
	p64(&m, 10);
	p32(&m, 100);
	check(ok_reply(&m, "restored: Tread cp.txt from 10") && g32(7) == 10 && memcmp(rep + 11, "abcdefghij", 10) == 0,
	      "restored: read goes on with 'abcdefghij'");
	begin(&m, Twrite);
	p32(&m, 40);
	p64(&m, 20);
	p32(&m, 3);
	pbytes(&m, "XYZ", 3);
	ok_reply(&m, "restored: Twrite on the reopened O_RDWR fid");
	check(host_content("cp.txt", "0123456789abcdefghijXYZ"), "restored: host file appended, not truncated");
	int more = 0, r;
	for (int i = 0; i < 10 && (r = readdir_collect(41, &doff, 60, seen)) > 0; i++)
		more += r;
	bool once = true;
	for (int i = 0; i < 7; i++)
		once &= seen[i] == 1;
	check(once && first + more == 7, "restored: Treaddir continues: each of . .. a-e exactly once (%d + %d)",
	      first, more);
	check(getattr_err(42) == ESTALE, "restored: fid of a removed file: getattr ESTALE");
	begin(&m, Tread);
	p32(&m, 43);
	p64(&m, 0);
	p32(&m, 10);
	check(expect_err(&m) == ESTALE, "restored: open fid of a removed file: read ESTALE");
	check(walk1(42, 50, "x") == -ESTALE, "restored: walk from a stale fid: ESTALE");
	begin(&m, Tattach);
	p32(&m, 42);
	p32(&m, 0xffffffffu);
	ps(&m, "");
	ps(&m, "");
	p32(&m, 0);
	check(expect_err(&m) == EBADF, "restored: a stale fid's number is still in use");
	clunk(42);
	check(getattr_err(42) == EBADF, "restored: stale fid clunked");
	begin(&m, Tremove);
	p32(&m, 43);
	check(expect_err(&m) == ESTALE && getattr_err(43) == EBADF, "restored: Tremove of a stale fid clunks it");
	check(walk1(44, 46, "c") == 0, "restored: walk cpdir/c from a restored fid");
	begin(&m, Tread);
	p32(&m, 45);
	p64(&m, 0);
	p32(&m, 100);
	check(ok_reply(&m, "restored: xattr fid read") && g32(7) == 0, "restored: xattr fid reads empty");
	check(getattr_err(1) == 0, "restored: root fid works");

	/* Truncated at every length: clean error, no fids left, no crash. */
	int bad = 0;
	for (size_t n = 0; n < sb.len; n++) {
		if (load_buf(sb.data, n, err, sizeof(err)) != -1 || !err[0] || getattr_err(1) != EBADF)
			bad++;
	}
	check(bad == 0, "truncated state (every length < %zu): error, server reset (%d bad)", sb.len, bad);
	/* Every byte flipped three ways: loads or fails, never crashes. */
	uint8_t *copy = malloc(sb.len);
	int loaded = 0, refused = 0;
	static const uint8_t masks[] = { 0x01, 0x80, 0xff };
	for (size_t i = 0; copy && i < sb.len; i++) {
		for (size_t k = 0; k < sizeof(masks); k++) {
			memcpy(copy, sb.data, sb.len);
			copy[i] ^= masks[k];
			if (load_buf(copy, sb.len, err, sizeof(err)) == 0) {
				loaded++;
				for (uint32_t f = 40; f <= 46; f++)
					getattr_err(f);   /* whatever came back must be usable */
			} else {
				refused += err[0] != 0;
			}
		}
	}
	free(copy);
	check(loaded + refused == (int)sb.len * 3, "corrupted state: %d loaded, %d refused with a reason", loaded,
	      refused);
	sb_free(&sb);

	/* Hand-made states. */
	static const char *const escapes[] = { "..", "../outside-secret", "/etc", "/", "a//b", "cpdir/../..",
	                                       ".", "cpdir/", "cpdir/./a" };
	for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++) {
		state_header(&sb, ST_MAGIC, 1, 8192, 1);
		state_fid(&sb, 7, 0, 0, escapes[i]);
		rc = load_buf(sb.data, sb.len, err, sizeof(err));
		check(rc == -1 && strstr(err, "not a plain path") && getattr_err(7) == EBADF,
		      "state with path '%s' refused: %s", escapes[i], err);
		sb_free(&sb);
	}
	/* Plain paths through symlinks that lead out: loads, but the fid is dead. */
	static const char *const links[] = { "etc/passwd", "rel/etc", "d/up/share", "abs" };
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		state_header(&sb, ST_MAGIC, 1, 8192, 1);
		state_fid(&sb, 7, 0x04, 0, links[i]);   /* opened for reading */
		rc = load_buf(sb.data, sb.len, err, sizeof(err));
		begin(&m, Tread);
		p32(&m, 7);
		p64(&m, 0);
		p32(&m, 64);
		int e = expect_err(&m);
		check(rc == 0 && e == ESTALE, "state path '%s' through a symlink: fid stale (rc %d, errno %d)",
		      links[i], rc, e);
		sb_free(&sb);
	}
	struct {
		uint32_t magic, version, msize, n;
		uint32_t fid;
		uint8_t kind;
		uint32_t lflags;
		const char *what;
	} hdrs[] = {
		{ 0x12345678, 1, 8192, 1, 7, 0, 0, "wrong magic" },
		{ ST_MAGIC, 99, 8192, 1, 7, 0, 0, "unknown version" },
		{ ST_MAGIC, 1, 100, 1, 7, 0, 0, "msize too small" },
		{ ST_MAGIC, 1, 1u << 30, 1, 7, 0, 0, "msize too large" },
		{ ST_MAGIC, 1, 8192, 0xffffffffu, 7, 0, 0, "4G fids" },
		{ ST_MAGIC, 1, 8192, 2, 7, 0, 0, "fewer fids than counted" },
		{ ST_MAGIC, 1, 8192, 1, 0xffffffffu, 0, 0, "NOFID" },
		{ ST_MAGIC, 1, 8192, 1, 7, 0x80, 0, "unknown kind bit" },
		{ ST_MAGIC, 1, 8192, 1, 7, 0x06, 0, "opened xattr fid" },
		{ ST_MAGIC, 1, 8192, 1, 7, 0x04, 01000 | 2, "O_TRUNC in the open flags" },
		{ ST_MAGIC, 1, 8192, 1, 7, 0x04, 0100 | 2, "O_CREAT in the open flags" },
	};
	for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
		state_header(&sb, hdrs[i].magic, hdrs[i].version, hdrs[i].msize, hdrs[i].n);
		state_fid(&sb, hdrs[i].fid, hdrs[i].kind, hdrs[i].lflags, "cp.txt");
		rc = load_buf(sb.data, sb.len, err, sizeof(err));
		check(rc == -1 && err[0], "state with %s refused: %s", hdrs[i].what, err);
		sb_free(&sb);
	}
	check(host_content("cp.txt", "0123456789abcdefghijXYZ"), "refused states truncated nothing");
	state_header(&sb, ST_MAGIC, 1, 8192, 2);
	state_fid(&sb, 7, 0, 0, "cp.txt");
	state_fid(&sb, 7, 0, 0, "cpdir");
	check(load_buf(sb.data, sb.len, err, sizeof(err)) == -1 && strstr(err, "twice"), "duplicate fid refused: %s",
	      err);
	sb_free(&sb);
	/* A writable open fid restored onto a read-only share: dead, not writable. */
	p9_server_free(srv);
	srv = p9_server_new(root, true);
	state_header(&sb, ST_MAGIC, 1, 8192, 2);
	state_fid(&sb, 7, 0x04, 2, "cp.txt");
	state_fid(&sb, 8, 0x04, 0, "cp.txt");
	rc = load_buf(sb.data, sb.len, err, sizeof(err));
	begin(&m, Tread);
	p32(&m, 7);
	p64(&m, 0);
	p32(&m, 4);
	int e7 = expect_err(&m);
	begin(&m, Tread);
	p32(&m, 8);
	p64(&m, 0);
	p32(&m, 4);
	check(rc == 0 && e7 == ESTALE && ok_reply(&m, "ro restore: read-only fid reads") && g32(7) == 4,
	      "ro share: restored O_RDWR fid is stale, O_RDONLY fid works");
	sb_free(&sb);
	p9_server_free(srv);
	srv = p9_server_new(root, false);
	version_attach(1);
}

static void run_readonly(void)
{
	p9_server_free(srv);
	srv = p9_server_new(root, true);
	check(srv != NULL, "read-only server opens");
	version_attach(1);
	int fd = open(hp("ro.txt"), O_CREAT | O_WRONLY, 0644);
	check(fd >= 0 && write(fd, "data", 4) == 4, "host file for ro test");
	close(fd);
	begin(&m, Tlcreate);
	p32(&m, 1);
	ps(&m, "new");
	p32(&m, 0100 | 1);
	p32(&m, 0644);
	p32(&m, 0);
	check(expect_err(&m) == EROFS, "ro: lcreate EROFS");
	begin(&m, Tmkdir);
	p32(&m, 1);
	ps(&m, "newd");
	p32(&m, 0755);
	p32(&m, 0);
	check(expect_err(&m) == EROFS, "ro: mkdir EROFS");
	begin(&m, Tunlinkat);
	p32(&m, 1);
	ps(&m, "ro.txt");
	p32(&m, 0);
	check(expect_err(&m) == EROFS, "ro: unlinkat EROFS");
	check(walk1(1, 2, "ro.txt") == 0, "ro: walk ro.txt");
	begin(&m, Tlopen);
	p32(&m, 2);
	p32(&m, 2);
	check(expect_err(&m) == EROFS, "ro: lopen O_RDWR EROFS");
	begin(&m, Tsetattr);
	p32(&m, 2);
	p32(&m, 8);
	for (int i = 0; i < 3; i++)
		p32(&m, 0);
	for (int i = 0; i < 5; i++)
		p64(&m, 0);
	check(expect_err(&m) == EROFS, "ro: setattr EROFS");
	begin(&m, Tlopen);
	p32(&m, 2);
	p32(&m, 0);
	ok_reply(&m, "ro: lopen O_RDONLY works");
	begin(&m, Twrite);
	p32(&m, 2);
	p64(&m, 0);
	p32(&m, 1);
	p8(&m, 'x');
	check(expect_err(&m) == EROFS, "ro: write EROFS");
	begin(&m, Tread);
	p32(&m, 2);
	p64(&m, 0);
	p32(&m, 10);
	check(ok_reply(&m, "ro: read") && g32(7) == 4, "ro: read gives 4 bytes");
	check(host_content("ro.txt", "data"), "ro: host file unchanged");
}

static void one_pass(void)
{
	char parent[64] = "/tmp/p9test.XXXXXX";
	if (!mkdtemp(parent)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(root, sizeof(root), "%s/share", parent);
	mkdir(root, 0755);
	srv = p9_server_new(root, false);
	check(srv != NULL, "server opens %s", root);
	if (!srv)
		return;
	run_functional();
	run_escapes();
	run_malformed();
	run_modes_owners();
	run_special_files();
	run_walk_limits();
	run_checkpoint();
	run_restore_special();
	run_readonly();
	p9_server_free(srv);
	char cmd[PATH_MAX * 2 + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", parent);
	if (system(cmd) != 0)
		printf("warning: cleanup of %s failed\n", parent);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);   /* every line out before a watchdog _exit */
	errno = 0;
	struct p9_server *bad = p9_server_new("/nonexistent/share", false);
	check(bad == NULL, "nonexistent share refused");
	bad = p9_server_new("/etc/passwd", false);
	check(bad == NULL, "non-directory share refused");
	pass_name = "[openat2] ";
	unsetenv("HYVE_P9_NO_OPENAT2");
	one_pass();
	pass_name = "[fallback] ";
	setenv("HYVE_P9_NO_OPENAT2", "1", 1);
	one_pass();
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
