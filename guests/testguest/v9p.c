/*
 * virtio-9p (virtio 1.2 5.15 "9P transport"): a minimal 9P2000.L client,
 * test=p9, and the shell's `ls` and `cat`.
 *
 * One request at a time: the T-message in a device-readable buffer, room
 * for the R-message in a device-writable one (virtio_submit polls).  The
 * client checks every reply (length, tag, type) before reading fields from
 * it, so a wrong reply fails the step instead of reading garbage.  All of
 * this runs at CPL0, which the PVM host emulates, so messages are few and
 * small; bulk bytes (the write pattern, checksums) are handled at CPL3.
 *
 * test=p9 [p9ro=1] on a share prepared by tests/test_9p.sh (see there for
 * the host side), printing one line per step for the host to check:
 *   writable share: read a host file (FNV-1a 64), lcreate + write a pattern
 *   + read back, mkdir, renameat, symlink + readlink, unlinkat (file and
 *   directory), readdir of the root, then escape attempts (.., symlinks to
 *   /etc, an absolute symlink, a relative symlink leading outside, names
 *   with '/' or '..'), each of which must fail;
 *   p9ro=1 (share with ,ro): reads work, every modifying request -> EROFS.
 * test=p9work: a long 9P workload to checkpoint in the middle (below).
 */
#include "virtio.h"
#include "shell.h"
#include "tests.h"

#define VIRTIO_ID_9P 9
#define V9P_F_MOUNT_TAG (1UL << 0)
#define V9P_MSIZE 8192
#define V9P_HDR 7
#define V9P_NOFID 0xffffffffu

enum {
	Rlerror = 7, Tlopen = 12, Tlcreate = 14, Tsymlink = 16, Treadlink = 22, Tgetattr = 24,
	Tsetattr = 26, Treaddir = 40, Tlink = 70, Tmkdir = 72, Trenameat = 74, Tunlinkat = 76,
	Tversion = 100, Tattach = 104, Twalk = 110, Tread = 116, Twrite = 118, Tclunk = 120,
};

/* Linux errno values the checks name. */
#define E_NOENT 2
#define E_BADF 9
#define E_ROFS 30
/* Not an errno: the transport failed or the reply was malformed. */
#define E_LOCAL 1000
/* Not an errno: Twalk walked fewer names than asked (no newfid). */
#define E_PARTIAL 1001

#define O_RDONLY_ 0
#define O_WRONLY_ 01
#define O_RDWR_ 02
#define O_CREAT_ 0100
#define O_TRUNC_ 01000
#define AT_REMOVEDIR_ 0x200
#define QT_DIR 0x80
#define QT_SYMLINK 0x02

#define ROOT_FID 0

static struct {
	struct vdev *d;
	bool up;			/* Tversion + Tattach done */
	u32 msize;
	u16 tag;
	u32 len;			/* request being built */
	bool over;			/* request did not fit */
	u32 rlen, roff;			/* reply length, parse cursor */
	bool rbad;			/* parse went past the reply */
	u8 qtype;			/* qid of the last Rattach/Rwalk/Rlcreate... */
	u64 qpath;
	u16 nwqid;			/* last Rwalk */
	u64 root_qpath;
} c9;

static u8 req[V9P_MSIZE] __attribute__((aligned(64)));
static u8 rep[V9P_MSIZE] __attribute__((aligned(64)));

/* ---- request building (little-endian) ---- */
static void put(const void *p, u32 n)
{
	if (c9.over || n > sizeof(req) - c9.len) {
		c9.over = true;
		return;
	}
	memcpy(req + c9.len, p, n);
	c9.len += n;
}
static void p16(u16 v) { put(&v, 2); }
static void p32(u32 v) { put(&v, 4); }
static void p64(u64 v) { put(&v, 8); }
static void pstr(const char *s) { u32 n = strlen(s); p16((u16)n); put(s, n); }

static void begin(u8 type)
{
	c9.len = V9P_HDR;
	c9.over = false;
	req[4] = type;
}

/* ---- reply parsing: reads past rlen give 0 and set rbad ---- */
static const u8 *take(u32 n)
{
	if (c9.rbad || n > c9.rlen - c9.roff) {
		c9.rbad = true;
		return NULL;
	}
	const u8 *p = rep + c9.roff;
	c9.roff += n;
	return p;
}
static u8 g8(void) { const u8 *p = take(1); return p ? p[0] : 0; }
static u16 g16(void) { const u8 *p = take(2); return p ? (u16)(p[0] | p[1] << 8) : 0; }
static u32 g32(void) { u32 v = 0; const u8 *p = take(4); if (p) memcpy(&v, p, 4); return v; }
static u64 g64(void) { u64 v = 0; const u8 *p = take(8); if (p) memcpy(&v, p, 8); return v; }
/* A string into buf (NUL-terminated, truncated to cap-1). */
static u16 gstr(char *buf, u32 cap)
{
	u16 n = g16();
	const u8 *p = take(n);
	u32 k = p ? (n < cap - 1 ? n : cap - 1) : 0;
	if (k)
		memcpy(buf, p, k);
	buf[k] = 0;
	return n;
}
static void gqid(void)
{
	c9.qtype = g8();
	(void)g32();
	c9.qpath = g64();
}

/*
 * Send the request built since begin(); 0 with the reply's body ready to
 * parse, -errno for Rlerror, -E_LOCAL if the exchange itself failed.
 */
static int xchg(void)
{
	if (c9.over)
		return -E_LOCAL;
	u8 type = req[4];
	/* Tversion goes with NOTAG (9P intro(5)); everything else numbered. */
	c9.tag = type == Tversion ? 0xffff : (u16)((c9.tag + 1) & 0x7fff);
	memcpy(req, &c9.len, 4);
	memcpy(req + 5, &c9.tag, 2);
	struct vring_desc ch[2] = {
		{ (u64)req, c9.len, 0, 0 },
		{ (u64)rep, c9.msize, VRING_DESC_F_WRITE, 0 },
	};
	s64 n = virtio_submit(c9.d, ch, 2, 5000);
	if (n < V9P_HDR || n > c9.msize)
		return -E_LOCAL;
	u32 size;
	u16 tag;
	memcpy(&size, rep, 4);
	memcpy(&tag, rep + 5, 2);
	if (size != (u32)n || tag != c9.tag)
		return -E_LOCAL;
	c9.rlen = size;
	c9.roff = V9P_HDR;
	c9.rbad = false;
	if (rep[4] == Rlerror) {
		u32 e = g32();
		return c9.rbad || e == 0 || e >= E_LOCAL ? -E_LOCAL : -(int)e;
	}
	return rep[4] == type + 1 ? 0 : -E_LOCAL;
}

/* After parsing a successful reply: -E_LOCAL if it was too short. */
static int done(int rc)
{
	return rc == 0 && c9.rbad ? -E_LOCAL : rc;
}

/* ---- operations: 0 or -errno ---- */
static int p9_version(u32 msize)
{
	begin(Tversion);
	p32(msize);
	pstr("9P2000.L");
	c9.msize = V9P_MSIZE;   /* room for the reply */
	int rc = xchg();
	if (rc)
		return rc;
	u32 m = g32();
	char ver[16];
	gstr(ver, sizeof(ver));
	if (c9.rbad || strcmp(ver, "9P2000.L") || m < 4096 || m > V9P_MSIZE)
		return -E_LOCAL;
	c9.msize = m;
	return 0;
}

static int p9_attach(u32 fid)
{
	begin(Tattach);
	p32(fid);
	p32(V9P_NOFID);
	pstr("root");
	pstr("");
	p32(0);
	int rc = xchg();
	if (!rc)
		gqid();
	return done(rc);
}

/* Walk fid -> newfid through "a/b/c" ("" clones).  -E_PARTIAL if only
 * c9.nwqid of the names were walked (newfid is then not created). */
static int p9_walk(u32 fid, u32 newfid, const char *path)
{
	char buf[256];
	u32 n = strlen(path);
	if (n >= sizeof(buf))
		return -E_LOCAL;
	memcpy(buf, path, n + 1);
	char *names[16];
	int nn = 0;
	for (char *p = buf; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		if (nn == 16)
			return -E_LOCAL;
		names[nn++] = p;
		while (*p && *p != '/')
			p++;
		if (*p)
			*p++ = 0;
	}
	begin(Twalk);
	p32(fid);
	p32(newfid);
	p16((u16)nn);
	for (int i = 0; i < nn; i++)
		pstr(names[i]);
	int rc = xchg();
	if (rc)
		return rc;
	c9.nwqid = g16();
	if (c9.nwqid > nn)
		return -E_LOCAL;
	for (int i = 0; i < c9.nwqid; i++)
		gqid();
	if (c9.rbad)
		return -E_LOCAL;
	return c9.nwqid == nn ? 0 : -E_PARTIAL;
}

static int p9_clunk(u32 fid)
{
	begin(Tclunk);
	p32(fid);
	return xchg();
}

static int p9_lopen(u32 fid, u32 flags)
{
	begin(Tlopen);
	p32(fid);
	p32(flags);
	int rc = xchg();
	if (!rc)
		gqid();
	return done(rc);
}

static int p9_lcreate(u32 fid, const char *name, u32 flags, u32 mode)
{
	begin(Tlcreate);
	p32(fid);
	pstr(name);
	p32(flags);
	p32(mode);
	p32(0);
	int rc = xchg();
	if (!rc)
		gqid();
	return done(rc);
}

/* Read up to count bytes at off: bytes (data at rep + 11) or -errno. */
static s64 p9_read(u32 fid, u64 off, u32 count)
{
	begin(Tread);
	p32(fid);
	p64(off);
	p32(count);
	int rc = xchg();
	if (rc)
		return rc;
	u32 n = g32();
	if (c9.rbad || n > count || n > c9.rlen - 11)
		return -E_LOCAL;
	return n;
}

/* Twrite whose data the caller placed at req + 23 (see write_begin). */
#define WRITE_DATA_OFF (V9P_HDR + 4 + 8 + 4)
static u8 *write_begin(u32 fid, u64 off, u32 count)
{
	begin(Twrite);
	p32(fid);
	p64(off);
	p32(count);
	if (count > sizeof(req) - WRITE_DATA_OFF || count > c9.msize - WRITE_DATA_OFF) {
		c9.over = true;
		return req + WRITE_DATA_OFF;
	}
	c9.len += count;
	return req + WRITE_DATA_OFF;
}

static s64 write_end(void)
{
	int rc = xchg();
	if (rc)
		return rc;
	u32 n = g32();
	return c9.rbad ? -E_LOCAL : (s64)n;
}

static s64 p9_write(u32 fid, u64 off, const void *data, u32 count)
{
	u8 *p = write_begin(fid, off, count);
	if (!c9.over)
		memcpy(p, data, count);
	return write_end();
}

static int p9_mkdir(u32 dfid, const char *name, u32 mode)
{
	begin(Tmkdir);
	p32(dfid);
	pstr(name);
	p32(mode);
	p32(0);
	int rc = xchg();
	if (!rc)
		gqid();
	return done(rc);
}

static int p9_renameat(u32 ofid, const char *on, u32 nfid, const char *nn)
{
	begin(Trenameat);
	p32(ofid);
	pstr(on);
	p32(nfid);
	pstr(nn);
	return xchg();
}

static int p9_unlinkat(u32 dfid, const char *name, u32 flags)
{
	begin(Tunlinkat);
	p32(dfid);
	pstr(name);
	p32(flags);
	return xchg();
}

static int p9_symlink(u32 dfid, const char *name, const char *target)
{
	begin(Tsymlink);
	p32(dfid);
	pstr(name);
	pstr(target);
	p32(0);
	int rc = xchg();
	if (!rc)
		gqid();
	return done(rc);
}

static int p9_link(u32 dfid, u32 fid, const char *name)
{
	begin(Tlink);
	p32(dfid);
	p32(fid);
	pstr(name);
	return xchg();
}

static int p9_readlink(u32 fid, char *buf, u32 cap)
{
	begin(Treadlink);
	p32(fid);
	int rc = xchg();
	if (!rc)
		gstr(buf, cap);
	return done(rc);
}

/* Size (and qid) of fid. */
static int p9_getattr(u32 fid, u64 *size)
{
	begin(Tgetattr);
	p32(fid);
	p64(0x7ff);
	int rc = xchg();
	if (rc)
		return rc;
	(void)g64();		/* valid */
	gqid();
	(void)g32();		/* mode */
	(void)g32();		/* uid */
	(void)g32();		/* gid */
	(void)g64();		/* nlink */
	(void)g64();		/* rdev */
	*size = g64();
	return done(0);
}

static int p9_truncate(u32 fid, u64 size)
{
	begin(Tsetattr);
	p32(fid);
	p32(1u << 3);		/* P9_SETATTR_SIZE */
	p32(0);
	p32(0);
	p32(0);
	p64(size);
	for (int i = 0; i < 4; i++)
		p64(0);
	return xchg();
}

/*
 * Treaddir at *off; calls fn(name, type) per entry, advances *off.
 * Returns entries seen (0 at the end) or -errno.
 */
static int p9_readdir(u32 fid, u64 *off, u32 count, void (*fn)(const char *name, u8 dtype))
{
	begin(Treaddir);
	p32(fid);
	p64(*off);
	p32(count);
	int rc = xchg();
	if (rc)
		return rc;
	u32 n = g32();
	if (c9.rbad || n > c9.rlen - 11)
		return -E_LOCAL;
	u32 end = 11 + n;
	int k = 0;
	while (c9.roff < end) {
		char name[256];
		gqid();
		u64 o = g64();
		u8 t = g8();
		gstr(name, sizeof(name));
		if (c9.rbad || c9.roff > end)
			return -E_LOCAL;
		*off = o;
		fn(name, t);
		k++;
	}
	return k;
}

static const char *errname(int rc)
{
	switch (-rc) {
	case 0: return "ok";
	case E_NOENT: return "ENOENT";
	case 1: return "EPERM";
	case E_BADF: return "EBADF";
	case 13: return "EACCES";
	case 17: return "EEXIST";
	case 18: return "EXDEV";
	case 20: return "ENOTDIR";
	case 21: return "EISDIR";
	case 22: return "EINVAL";
	case E_ROFS: return "EROFS";
	case 39: return "ENOTEMPTY";
	case 40: return "ELOOP";
	case 71: return "EPROTO";
	case 116: return "ESTALE";
	case E_LOCAL: return "transport/protocol failure";
	case E_PARTIAL: return "partial walk";
	default: return "error";
	}
}

/* ---- device ---- */

/* Find the nth virtio-9p device, start it, Tversion + Tattach(ROOT_FID). */
static int v9p_mount(int nth, bool quiet)
{
	struct vdev *d = virtio_find(VIRTIO_ID_9P, nth);
	if (!d) {
		if (!quiet)
			printf("no virtio-9p device (%d virtio functions on bus 0)\n", nvdevs);
		return -1;
	}
	c9.d = d;
	c9.up = false;
	if (virtio_init(d, V9P_F_MOUNT_TAG))
		return -1;
	char tag[64] = "";
	if (d->devcfg && (d->features & V9P_F_MOUNT_TAG)) {
		u32 tl = d->devcfg[0] | (u32)d->devcfg[1] << 8;
		u32 k = tl < sizeof(tag) - 1 ? tl : sizeof(tag) - 1;
		for (u32 i = 0; i < k; i++)
			tag[i] = (char)d->devcfg[2 + i];
		tag[k] = 0;
	}
	if (!quiet)
		printf("p9: %02x:%02x.%x (%04x:%04x) mount tag '%s'\n", d->pci->bus, d->pci->dev, d->pci->fn,
		       d->pci->vendor, d->pci->device, tag);
	int rc = p9_version(V9P_MSIZE);
	if (rc) {
		printf("p9: Tversion failed: %s (%d)\n", errname(rc), -rc);
		return -1;
	}
	rc = p9_attach(ROOT_FID);
	if (rc) {
		printf("p9: Tattach failed: %s (%d)\n", errname(rc), -rc);
		return -1;
	}
	c9.root_qpath = c9.qpath;
	c9.up = true;
	if (!quiet)
		printf("p9: version 9P2000.L msize %u, attached (root qid type 0x%x)\n", c9.msize, c9.qtype);
	return 0;
}

/* The running test, for FAIL lines. */
static const char *tname = "p9";

/* ---- CPL3 helpers: pattern and FNV-1a 64 ---- */
struct bjob {
	u8 *buf;
	u64 n;
	u64 start;		/* pattern: byte offset in the file */
	u64 h;			/* fnv: running hash in and out */
};

/* Byte i of the test pattern (tests/test_9p.sh has the same formula). */
USER_TEXT static u64 u_fill(u64 arg)
{
	struct bjob *j = (struct bjob *)arg;
	for (u64 k = 0; k < j->n; k++) {
		u64 i = j->start + k;
		j->buf[k] = (u8)(i * 31 + (i >> 8) + 0x5a);
	}
	return 0;
}

USER_TEXT static u64 u_fnv(u64 arg)
{
	struct bjob *j = (struct bjob *)arg;
	u64 h = j->h;
	for (u64 k = 0; k < j->n; k++)
		h = (h ^ j->buf[k]) * 0x100000001b3UL;
	j->h = h;
	return 0;
}

#define FNV_INIT 0xcbf29ce484222325UL

static void cpl3(user_fn_t fn, struct bjob *j)
{
	if (user_run(fn, (u64)j, 0) != 0)
		test_fail(tname, "CPL3 helper took exception %lu at %lx", user_fault_vec, user_fault_rip);
}

/* ---- test=p9 ---- */

static void must(int rc, const char *what)
{
	if (rc)
		test_fail(tname, "%s: %s (%d)", what, errname(rc), -rc);
}

/* Read all of fid (opened) in `chunk`-byte requests: FNV and size. */
static u64 read_fnv(u32 fid, u32 chunk, u64 *total, const char *what)
{
	struct bjob j = { .h = FNV_INIT };
	u64 off = 0;
	for (;;) {
		s64 n = p9_read(fid, off, chunk);
		if (n < 0)
			test_fail(tname, "%s: Tread at %lu: %s (%ld)", what, off, errname((int)n), -n);
		if (n == 0)
			break;
		j.buf = rep + 11;
		j.n = (u64)n;
		cpl3(u_fnv, &j);
		off += (u64)n;
		if (off > (1UL << 20))
			test_fail(tname, "%s: more than 1 MiB", what);
	}
	*total = off;
	return j.h;
}

/* A request that must be refused; returns its error. */
static int refused(int rc, const char *what)
{
	if (rc == 0)
		test_fail(tname, "%s succeeded", what);
	if (rc == -E_LOCAL)
		test_fail(tname, "%s: transport/protocol failure", what);
	return rc;
}

/* Escape attempt by walking `path` from the root: it must not create fid
 * 30, whether the server answers Rlerror or a partial Rwalk. */
static void escape_walk(const char *path, const char *why)
{
	int rc = refused(p9_walk(ROOT_FID, 30, path), path);
	u64 sz;
	if (p9_getattr(30, &sz) != -E_BADF)
		test_fail(tname, "escape walk %s: newfid exists after a failed walk", path);
	if (rc == -E_PARTIAL)
		printf("p9: escape walk %s (%s): refused (walked %u of the names)\n", path, why, c9.nwqid);
	else
		printf("p9: escape walk %s (%s): refused (%s)\n", path, why, errname(rc));
}

static int dir_entries;
static void print_dirent(const char *name, u8 dtype)
{
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return;
	printf("p9: dirent %s type %u\n", name, dtype);
	dir_entries++;
}

/* Root listing in small requests (several Treaddir round trips). */
static void list_root(void)
{
	must(p9_walk(ROOT_FID, 9, ""), "clone root for readdir");
	must(p9_lopen(9, O_RDONLY_), "Tlopen root directory");
	u64 off = 0;
	int rounds = 0, k;
	dir_entries = 0;
	while ((k = p9_readdir(9, &off, 128, print_dirent)) > 0)
		if (++rounds > 200)
			test_fail(tname, "readdir does not end");
	if (k < 0)
		test_fail(tname, "Treaddir: %s", errname(k));
	printf("p9: readdir /: %d entries in %d requests\n", dir_entries, rounds + 1);
	must(p9_clunk(9), "clunk readdir fid");
}

static void read_hello(void)
{
	u64 size, total;
	must(p9_walk(ROOT_FID, 1, "hello.txt"), "walk hello.txt");
	must(p9_getattr(1, &size), "getattr hello.txt");
	must(p9_lopen(1, O_RDONLY_), "lopen hello.txt");
	u64 h = read_fnv(1, 1000, &total, "hello.txt");
	if (total != size)
		test_fail(tname, "hello.txt: read %lu bytes, getattr says %lu", total, size);
	printf("p9: read hello.txt %lu bytes fnv=0x%016lx\n", total, h);
	must(p9_clunk(1), "clunk hello.txt");
}

#define PAT_LEN 2000

static void rw_steps(void)
{
	/* lcreate + write the pattern in two requests + read back */
	must(p9_walk(ROOT_FID, 2, ""), "clone root");
	must(p9_lcreate(2, "new.txt", O_RDWR_ | O_CREAT_, 0644), "lcreate new.txt");
	struct bjob j = { .h = FNV_INIT };
	for (u64 off = 0; off < PAT_LEN;) {
		u32 n = PAT_LEN - off < 1024 ? (u32)(PAT_LEN - off) : 1024;
		u8 *p = write_begin(2, off, n);
		if (c9.over)
			test_fail(tname, "Twrite of %u bytes does not fit msize %u", n, c9.msize);
		struct bjob f = { .buf = p, .n = n, .start = off };
		cpl3(u_fill, &f);
		j.buf = p;
		j.n = n;
		cpl3(u_fnv, &j);
		s64 w = write_end();
		if (w != n)
			test_fail(tname, "Twrite new.txt at %lu: %ld (%s)", off, w, w < 0 ? errname((int)w) : "short");
		off += n;
	}
	printf("p9: lcreate new.txt, wrote %u bytes fnv=0x%016lx\n", PAT_LEN, j.h);
	u64 total;
	u64 h = read_fnv(2, 700, &total, "new.txt read back");
	if (total != PAT_LEN || h != j.h)
		test_fail(tname, "new.txt read back %lu bytes fnv=0x%016lx", total, h);
	printf("p9: read back new.txt %lu bytes, fnv matches\n", total);
	must(p9_clunk(2), "clunk new.txt");

	must(p9_mkdir(ROOT_FID, "newdir", 0755), "mkdir newdir");
	if (c9.qtype != QT_DIR)
		test_fail(tname, "mkdir newdir: qid type 0x%x", c9.qtype);
	printf("p9: mkdir newdir ok\n");

	must(p9_walk(ROOT_FID, 3, "newdir"), "walk newdir");
	must(p9_renameat(ROOT_FID, "new.txt", 3, "moved.txt"), "renameat new.txt -> newdir/moved.txt");
	int rc = p9_walk(ROOT_FID, 4, "new.txt");
	if (rc != -E_NOENT)
		test_fail(tname, "walk new.txt after the rename: %s", errname(rc));
	u64 size;
	must(p9_walk(3, 4, "moved.txt"), "walk newdir/moved.txt");
	must(p9_getattr(4, &size), "getattr newdir/moved.txt");
	printf("p9: renameat new.txt -> newdir/moved.txt ok (size %lu, old name ENOENT)\n", size);
	must(p9_clunk(4), "clunk moved.txt");
	must(p9_clunk(3), "clunk newdir");

	must(p9_symlink(ROOT_FID, "link", "newdir/moved.txt"), "symlink link");
	if (c9.qtype != QT_SYMLINK)
		test_fail(tname, "symlink: qid type 0x%x", c9.qtype);
	must(p9_walk(ROOT_FID, 5, "link"), "walk link");
	char target[128];
	must(p9_readlink(5, target, sizeof(target)), "readlink link");
	printf("p9: symlink link -> newdir/moved.txt ok, readlink '%s'\n", target);
	must(p9_clunk(5), "clunk link");

	must(p9_walk(ROOT_FID, 6, ""), "clone root");
	must(p9_lcreate(6, "gone.txt", O_WRONLY_ | O_CREAT_, 0600), "lcreate gone.txt");
	if (p9_write(6, 0, "bye\n", 4) != 4)
		test_fail(tname, "write gone.txt");
	must(p9_clunk(6), "clunk gone.txt");
	must(p9_unlinkat(ROOT_FID, "gone.txt", 0), "unlinkat gone.txt");
	rc = p9_walk(ROOT_FID, 6, "gone.txt");
	if (rc != -E_NOENT)
		test_fail(tname, "walk gone.txt after unlinkat: %s", errname(rc));
	printf("p9: unlinkat gone.txt ok (walk now ENOENT)\n");
	must(p9_mkdir(ROOT_FID, "tmpdir", 0700), "mkdir tmpdir");
	must(p9_unlinkat(ROOT_FID, "tmpdir", AT_REMOVEDIR_), "unlinkat tmpdir AT_REMOVEDIR");
	printf("p9: unlinkat tmpdir (AT_REMOVEDIR) ok\n");

	list_root();
}

static void escapes(void)
{
	/* ".." at the root is the root (walking never goes above it). */
	must(p9_walk(ROOT_FID, 20, ".."), "walk ..");
	if (c9.qpath != c9.root_qpath)
		test_fail(tname, "walk .. from the root: qid path 0x%lx, root 0x%lx", c9.qpath, c9.root_qpath);
	must(p9_walk(20, 21, "../.."), "walk ../..");
	if (c9.qpath != c9.root_qpath)
		test_fail(tname, "walk ../../.. : qid path 0x%lx, root 0x%lx", c9.qpath, c9.root_qpath);
	printf("p9: escape walk .. and ../../..: stay at the share root\n");
	p9_clunk(21);
	p9_clunk(20);
	escape_walk("../../outside/secret.txt", ".. above the root");
	escape_walk("etc/passwd", "etc -> /etc");
	escape_walk("rel/secret.txt", "rel -> ../outside");
	escape_walk("dotdot/passwd", "dotdot -> ../../../../../../../../etc");
	escape_walk("sub/up/outside/secret.txt", "sub/up -> ../..");

	/* The absolute symlink itself can be walked to, never followed. */
	must(p9_walk(ROOT_FID, 22, "abs"), "walk abs");
	if (c9.qtype != QT_SYMLINK)
		test_fail(tname, "abs: qid type 0x%x, expected a symlink", c9.qtype);
	int rc = refused(p9_lopen(22, O_RDONLY_), "lopen abs");
	s64 n = p9_read(22, 0, 64);
	if (n >= 0)
		test_fail(tname, "read through abs returned %ld bytes", n);
	printf("p9: escape open abs (abs -> /etc/passwd): refused (%s), read %s\n", errname(rc), errname((int)n));
	p9_clunk(22);

	/* Create through a symlink to outside: the fid is the link, not a dir. */
	must(p9_walk(ROOT_FID, 23, "rel"), "walk rel");
	rc = refused(p9_lcreate(23, "p9-escape-probe", O_RDWR_ | O_CREAT_, 0644), "lcreate through rel");
	printf("p9: escape lcreate rel/p9-escape-probe (rel -> ../outside): refused (%s)\n", errname(rc));
	p9_clunk(23);
	rc = refused(p9_mkdir(ROOT_FID, "../p9-escape-probe", 0755), "mkdir ../p9-escape-probe");
	printf("p9: escape mkdir ../p9-escape-probe: refused (%s)\n", errname(rc));
	rc = refused(p9_renameat(ROOT_FID, "hello.txt", ROOT_FID, "../p9-escape-probe"), "renameat to ..");
	printf("p9: escape renameat hello.txt -> ../p9-escape-probe: refused (%s)\n", errname(rc));
	rc = refused(p9_lcreate(ROOT_FID, "/etc/p9-escape-probe", O_RDWR_ | O_CREAT_, 0644), "lcreate /etc/...");
	printf("p9: escape lcreate /etc/p9-escape-probe: refused (%s)\n", errname(rc));

	/* A symlink the guest makes may point anywhere; following it may not. */
	must(p9_symlink(ROOT_FID, "p9-evil", "/etc"), "symlink p9-evil -> /etc");
	escape_walk("p9-evil/passwd", "guest-made p9-evil -> /etc");
	must(p9_unlinkat(ROOT_FID, "p9-evil", 0), "unlinkat p9-evil");
}

static void ro_steps(void)
{
	u64 size;
	int rc;
#define RO(call, what)                                                          \
	do {                                                                    \
		rc = (call);                                                    \
		if (rc != -E_ROFS)                                              \
			test_fail(tname, "ro: %s: %s, expected EROFS", what, errname(rc)); \
		printf("p9: ro: %s refused (EROFS)\n", what);                   \
	} while (0)
	must(p9_walk(ROOT_FID, 2, ""), "clone root");
	RO(p9_lcreate(2, "ro-new.txt", O_RDWR_ | O_CREAT_, 0644), "lcreate");
	p9_clunk(2);
	RO(p9_mkdir(ROOT_FID, "ro-dir", 0755), "mkdir");
	RO(p9_renameat(ROOT_FID, "hello.txt", ROOT_FID, "ro-renamed.txt"), "renameat");
	RO(p9_unlinkat(ROOT_FID, "hello.txt", 0), "unlinkat");
	RO(p9_symlink(ROOT_FID, "ro-link", "hello.txt"), "symlink");
	must(p9_walk(ROOT_FID, 3, "hello.txt"), "walk hello.txt");
	RO(p9_link(ROOT_FID, 3, "ro-hard.txt"), "link");
	RO(p9_truncate(3, 0), "setattr size 0");
	RO(p9_lopen(3, O_RDWR_), "lopen O_RDWR");
	RO(p9_lopen(3, O_WRONLY_ | O_TRUNC_), "lopen O_WRONLY|O_TRUNC");
	must(p9_lopen(3, O_RDONLY_), "lopen hello.txt O_RDONLY");
	RO((int)p9_write(3, 0, "x", 1), "write");
	must(p9_getattr(3, &size), "getattr hello.txt");
	printf("p9: ro: hello.txt still %lu bytes\n", size);
	p9_clunk(3);
#undef RO
}

static void t_p9(void)
{
	u64 ro = 0;
	cmdline_get_u64("p9ro", &ro);
	if (v9p_mount(0, false))
		test_fail(tname, "no usable virtio-9p device");
	read_hello();
	if (ro) {
		list_root();
		ro_steps();
	} else {
		rw_steps();
		escapes();
	}
	must(p9_clunk(ROOT_FID), "clunk root");
	test_pass("p9");
}
GUEST_TEST(p9, t_p9);

/*
 * test=p9work [rounds=N] [pause_ms=MS]: a long-running 9P workload for
 * checkpoint/restore tests.  One fid stays open on work.txt the whole run;
 * each round writes the next 256 bytes of the pattern through it, reads
 * them back and prints "p9work: round R ok", then pauses.  At the end the
 * whole file is read through a fresh walk from a directory fid taken at
 * the start: "p9work: work.txt N bytes fnv=0x...".  Restored in the middle,
 * the open fid and the directory fid must carry on.
 */
#define WORK_CHUNK 256

static void t_p9work(void)
{
	u64 rounds = 50, pause = 100;
	tname = "p9work";
	cmdline_get_u64("rounds", &rounds);
	cmdline_get_u64("pause_ms", &pause);
	if (rounds > 2000)
		rounds = 2000;
	if (pause > 10000)
		pause = 10000;
	if (v9p_mount(0, false))
		test_fail(tname, "no usable virtio-9p device");
	must(p9_walk(ROOT_FID, 1, ""), "clone root");
	must(p9_lcreate(1, "work.txt", O_RDWR_ | O_CREAT_ | O_TRUNC_, 0644), "lcreate work.txt");
	must(p9_walk(ROOT_FID, 2, ""), "clone root (kept)");
	for (u64 r = 0; r < rounds; r++) {
		u64 off = r * WORK_CHUNK;
		u8 *p = write_begin(1, off, WORK_CHUNK);
		struct bjob f = { .buf = p, .n = WORK_CHUNK, .start = off };
		struct bjob h = { .buf = p, .n = WORK_CHUNK, .h = FNV_INIT };
		cpl3(u_fill, &f);
		cpl3(u_fnv, &h);
		s64 w = write_end();
		if (w != WORK_CHUNK)
			test_fail(tname, "round %lu: Twrite: %ld (%s)", r, w, w < 0 ? errname((int)w) : "short");
		s64 n = p9_read(1, off, WORK_CHUNK);
		if (n != WORK_CHUNK)
			test_fail(tname, "round %lu: Tread: %ld (%s)", r, n, n < 0 ? errname((int)n) : "short");
		struct bjob g = { .buf = rep + 11, .n = WORK_CHUNK, .h = FNV_INIT };
		cpl3(u_fnv, &g);
		if (g.h != h.h)
			test_fail(tname, "round %lu: read back differs", r);
		printf("p9work: round %lu ok\n", r);
		udelay(pause * 1000);
	}
	must(p9_clunk(1), "clunk work.txt");
	u64 size, total;
	must(p9_walk(2, 3, "work.txt"), "walk work.txt");
	must(p9_getattr(3, &size), "getattr work.txt");
	must(p9_lopen(3, O_RDONLY_), "lopen work.txt");
	u64 fnv = read_fnv(3, 1000, &total, "work.txt");
	if (total != size || total != rounds * WORK_CHUNK)
		test_fail(tname, "work.txt: %lu bytes read, size %lu, expected %lu", total, size, rounds * WORK_CHUNK);
	printf("p9work: work.txt %lu bytes fnv=0x%016lx\n", total, fnv);
	p9_clunk(3);
	p9_clunk(2);
	p9_clunk(ROOT_FID);
	test_pass(tname);
}
GUEST_TEST(p9work, t_p9work);

/* ---- shell: ls [PATH], cat PATH (first virtio-9p share) ---- */
#define SH_FID 100

static bool sh_mount(void)
{
	if (c9.up)
		return true;
	if (v9p_mount(0, true)) {
		printf("no usable virtio-9p share\n");
		return false;
	}
	return true;
}

static void print_ls(const char *name, u8 dtype)
{
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return;
	printf("%s%s\n", name, dtype == 4 ? "/" : dtype == 10 ? "@" : "");
	dir_entries++;
}

static void cmd_ls(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "";
	if (!sh_mount())
		return;
	int rc = p9_walk(ROOT_FID, SH_FID, path);
	if (rc) {
		printf("ls: %s: %s\n", path, errname(rc));
		return;
	}
	bool dir = path[0] == 0 || c9.nwqid == 0 || c9.qtype == QT_DIR;
	if (!dir) {
		printf("%s\n", path);
	} else if ((rc = p9_lopen(SH_FID, O_RDONLY_)) != 0) {
		printf("ls: %s: %s\n", path, errname(rc));
	} else {
		u64 off = 0;
		int k, rounds = 0;
		dir_entries = 0;
		while ((k = p9_readdir(SH_FID, &off, c9.msize - 11, print_ls)) > 0 && ++rounds < 1000)
			;
		if (k < 0)
			printf("ls: %s: %s\n", path, errname(k));
	}
	p9_clunk(SH_FID);
}
SHELL_COMMAND(ls, "ls [PATH]     list a directory of the virtio-9p share", cmd_ls);

static void cmd_cat(int argc, char **argv)
{
	if (argc < 2) {
		printf("usage: cat PATH\n");
		return;
	}
	if (!sh_mount())
		return;
	const char *path = argv[1];
	int rc = p9_walk(ROOT_FID, SH_FID, path);
	if (!rc)
		rc = p9_lopen(SH_FID, O_RDONLY_);
	if (rc) {
		printf("cat: %s: %s\n", path, errname(rc));
		p9_clunk(SH_FID);
		return;
	}
	/* Print line by line (printf's buffer is 256 bytes), at most 64 KiB. */
	char line[128];
	u32 ll = 0;
	u64 off = 0;
	s64 n = 0;
	while (off < 65536 && (n = p9_read(SH_FID, off, 1024)) > 0) {
		for (s64 i = 0; i < n; i++) {
			char ch = (char)rep[11 + i];
			if (ch == '\n' || ll == sizeof(line) - 1) {
				line[ll] = 0;
				printf("%s\n", line);
				ll = 0;
				if (ch == '\n')
					continue;
			}
			line[ll++] = (ch >= 0x20 && ch < 0x7f) || ch == '\t' ? ch : '.';
		}
		off += (u64)n;
	}
	if (ll) {
		line[ll] = 0;
		printf("%s\n", line);
	}
	if (n < 0)
		printf("cat: %s: %s\n", path, errname((int)n));
	p9_clunk(SH_FID);
}
SHELL_COMMAND(cat, "cat PATH      print a file of the virtio-9p share", cmd_cat);
