/*
 * 9P2000.L server over a host directory (see p9_server.h).
 *
 * Wire format: little-endian integers, strings as len[2] bytes[len],
 * qid = type[1] version[4] path[8].  Each request is parsed through a
 * cursor that flags (instead of performing) any read past the message;
 * each reply through a writer that flags any write past the reply buffer,
 * so a reply that would not fit becomes Rlerror(EMSGSIZE).  The fid table,
 * jailed name resolution and the policy for opening files are p9_fs.c.
 */
#include "p9_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "9P is little-endian; host assumed LE");

/* Message types */
enum {
	Tlerror = 6, Rlerror, Tstatfs = 8, Rstatfs, Tlopen = 12, Rlopen, Tlcreate = 14, Rlcreate,
	Tsymlink = 16, Rsymlink, Tmknod = 18, Rmknod, Trename = 20, Rrename, Treadlink = 22, Rreadlink,
	Tgetattr = 24, Rgetattr, Tsetattr = 26, Rsetattr, Txattrwalk = 30, Rxattrwalk,
	Txattrcreate = 32, Rxattrcreate, Treaddir = 40, Rreaddir, Tfsync = 50, Rfsync,
	Tlock = 52, Rlock, Tgetlock = 54, Rgetlock, Tlink = 70, Rlink, Tmkdir = 72, Rmkdir,
	Trenameat = 74, Rrenameat, Tunlinkat = 76, Runlinkat, Tversion = 100, Rversion,
	Tauth = 102, Rauth, Tattach = 104, Rattach, Tflush = 108, Rflush, Twalk = 110, Rwalk,
	Tread = 116, Rread, Twrite = 118, Rwrite, Tclunk = 120, Rclunk, Tremove = 122, Rremove,
};

#define P9_QTDIR     0x80
#define P9_QTSYMLINK 0x02
#define P9_QTFILE    0x00
#define P9_IOHDR     11          /* size type tag count: Rread / Rreaddir header */

/* Tsetattr valid bits */
#define P9_ATTR_MODE      (1u << 0)
#define P9_ATTR_UID       (1u << 1)
#define P9_ATTR_GID       (1u << 2)
#define P9_ATTR_SIZE      (1u << 3)
#define P9_ATTR_ATIME     (1u << 4)
#define P9_ATTR_MTIME     (1u << 5)
#define P9_ATTR_CTIME     (1u << 6)
#define P9_ATTR_ATIME_SET (1u << 7)
#define P9_ATTR_MTIME_SET (1u << 8)

/*
 * Permission bits a guest may give (Tlcreate, Tmkdir, Tmknod, Tsetattr):
 * rwx and sticky, never setuid or setgid, which are silently dropped.  A
 * root hyve would otherwise make setuid-root programs on the host for the
 * guest.  Ownership is not the guest's either (security model "none", as
 * QEMU calls it): what the server makes belongs to hyve's own user and
 * group, the guest's gid is ignored, and Tsetattr may set uid/gid only to
 * hyve's own (or to what the file already has), else EPERM.
 */
#define P9_MODE_BITS (S_IRWXU | S_IRWXG | S_IRWXO | S_ISVTX)

#define P9_GETATTR_BASIC  0x7ffULL
#define P9_DOTL_AT_REMOVEDIR 0x200

#define P9_LOCK_SUCCESS 0
#define P9_LOCK_BLOCKED 1
#define P9_LOCK_ERROR   2
#define P9_LOCK_RDLCK   0
#define P9_LOCK_WRLCK   1
#define P9_LOCK_UNLCK   2

/* ---- message cursor / writer ---- */

/* v little-endian in n bytes at p (also patches a count written earlier) */
static void put_le(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

struct rd {
	const uint8_t *p;
	size_t len, off;
	bool bad;
};

static const uint8_t *rd_take(struct rd *r, size_t n)
{
	if (r->bad || n > r->len - r->off) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *q = r->p + r->off;
	r->off += n;
	return q;
}

/* An n-byte little-endian integer; 0 once the message has gone bad. */
static uint64_t rd_le(struct rd *r, size_t n)
{
	const uint8_t *q = rd_take(r, n);
	uint64_t v = 0;
	for (size_t i = 0; q && i < n; i++)
		v |= (uint64_t)q[i] << (8 * i);
	return v;
}

static uint8_t rd8(struct rd *r) { return (uint8_t)rd_le(r, 1); }
static uint16_t rd16(struct rd *r) { return (uint16_t)rd_le(r, 2); }
static uint32_t rd32(struct rd *r) { return (uint32_t)rd_le(r, 4); }
static uint64_t rd64(struct rd *r) { return rd_le(r, 8); }

/* A string as a NUL-terminated copy in buf (cap bytes).  Strings with an
 * embedded NUL or longer than cap-1 make the message bad. */
static void rdstr(struct rd *r, char *buf, size_t cap)
{
	uint16_t n = rd16(r);
	const uint8_t *q = rd_take(r, n);
	buf[0] = 0;
	if (!q)
		return;
	if (n >= cap || memchr(q, 0, n)) {
		r->bad = true;
		return;
	}
	memcpy(buf, q, n);
	buf[n] = 0;
}

/* fid[4] name[s]: the head of most requests that name a directory entry. */
static uint32_t rd_fid_name(struct rd *r, char name[NAMEMAX])
{
	uint32_t fid = rd32(r);
	rdstr(r, name, NAMEMAX);
	return fid;
}

struct wr {
	uint8_t *p;
	size_t cap, off;
	bool over;
};

static uint8_t *wr_take(struct wr *w, size_t n)
{
	if (w->over || n > w->cap - w->off) {
		w->over = true;
		return NULL;
	}
	uint8_t *q = w->p + w->off;
	w->off += n;
	return q;
}

static void wr_le(struct wr *w, uint64_t v, size_t n)
{
	uint8_t *q = wr_take(w, n);
	if (q)
		put_le(q, v, n);
}

static void wr8(struct wr *w, uint8_t v) { wr_le(w, v, 1); }
static void wr16(struct wr *w, uint16_t v) { wr_le(w, v, 2); }
static void wr32(struct wr *w, uint32_t v) { wr_le(w, v, 4); }
static void wr64(struct wr *w, uint64_t v) { wr_le(w, v, 8); }

static void wrstr(struct wr *w, const char *s, size_t n)
{
	if (n > 0xffff) {
		w->over = true;
		return;
	}
	wr16(w, (uint16_t)n);
	uint8_t *q = wr_take(w, n);
	if (q && n)
		memcpy(q, s, n);
}

static void wrqid(struct wr *w, const struct stat *st)
{
	uint8_t t = S_ISDIR(st->st_mode) ? P9_QTDIR : S_ISLNK(st->st_mode) ? P9_QTSYMLINK : P9_QTFILE;
	wr8(w, t);
	wr32(w, (uint32_t)(st->st_mtim.tv_sec ^ (st->st_mtim.tv_nsec << 2) ^ st->st_size));
	wr64(w, (uint64_t)st->st_ino);
}

/* ---- fids ---- */

/*
 * The fid a request names, or NULL.  A stale fid (restored from a
 * checkpoint whose file is gone) also gives NULL, so every handler fails
 * as for an unknown fid; p9_handle() then answers ESTALE instead of EBADF.
 */
static struct p9_fid *fid_get(struct p9_server *s, uint32_t fid)
{
	struct p9_fid *f = *p9_fid_slot(s, fid);
	if (f && f->stale) {
		s->stale_hit = true;
		return NULL;
	}
	return f;
}

/* What a request needs of the fid it names (req_fid). */
enum {
	FID_ANY = 0,
	FID_NO_XATTR = 1 << 0,   /* not a Txattrwalk fid: those only read as empty */
	FID_OPEN = 1 << 1,       /* has an open file (Tlopen/Tlcreate) */
};

/*
 * Where a handler's decoding ends (it reads its whole request before acting
 * on any of it, so a malformed message is EPROTO whatever it names): then
 * the fid it names, if that meets need, else EBADF (which p9_handle turns
 * into ESTALE for a stale fid, see fid_get).
 */
static int req_fid(struct p9_server *s, const struct rd *r, uint32_t fid, unsigned need, struct p9_fid **out)
{
	if (r->bad)
		return -EPROTO;
	struct p9_fid *f = fid_get(s, fid);
	if (!f || ((need & FID_NO_XATTR) && f->xattr) || ((need & FID_OPEN) && f->ofd < 0))
		return -EBADF;
	*out = f;
	return 0;
}

/* ---- server lifetime ---- */

struct p9_server *p9_server_new(const char *root, bool readonly)
{
	int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	struct p9_server *s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	s->rootfd = fd;
	s->rootdev = st.st_dev;
	s->rootino = st.st_ino;
	s->readonly = readonly;
	s->msize = P9_MAX_MSIZE;
	s->procfd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
	s->have_openat2 = getenv("HYVE_P9_NO_OPENAT2") == NULL;
	return s;
}

void p9_server_free(struct p9_server *s)
{
	if (!s)
		return;
	p9_fids_clear(s);
	close(s->rootfd);
	if (s->procfd >= 0)
		close(s->procfd);
	free(s);
}

void p9_server_reset(struct p9_server *s)
{
	p9_fids_clear(s);
	s->msize = P9_MAX_MSIZE;
}

uint32_t p9_server_msize(const struct p9_server *s)
{
	return s->msize;
}

/* ---- request handlers: return 0 (reply in w) or -errno ---- */

static int h_version(struct p9_server *s, struct rd *r, struct wr *w)
{
	uint32_t msize = rd32(r);
	char ver[32];
	rdstr(r, ver, sizeof(ver));
	if (r->bad)
		return -EPROTO;
	if (msize < P9_MIN_MSIZE)
		return -EINVAL;
	p9_fids_clear(s);
	s->msize = msize < P9_MAX_MSIZE ? msize : P9_MAX_MSIZE;
	wr32(w, s->msize);
	if (strncmp(ver, "9P2000.L", 8) == 0)
		wrstr(w, "9P2000.L", 8);
	else
		wrstr(w, "unknown", 7);
	return 0;
}

static int h_attach(struct p9_server *s, struct rd *r, struct wr *w)
{
	uint32_t fid = rd32(r);
	(void)rd32(r);   /* afid */
	char uname[NAMEMAX], aname[PATH_MAX];
	rdstr(r, uname, sizeof(uname));
	rdstr(r, aname, sizeof(aname));
	uint32_t n_uname = rd32(r);
	if (r->bad)
		return -EPROTO;
	struct stat st;
	int fd = p9_open_stat(s, s->rootfd, "", O_PATH | O_DIRECTORY, &st);
	if (fd < 0)
		return fd;
	if (!p9_fid_new(s, fid, fd, strdup(""), true, n_uname))
		return -errno;
	wrqid(w, &st);
	return 0;
}

static int h_walk(struct p9_server *s, struct rd *r, struct wr *w)
{
	uint32_t fid = rd32(r), newfid = rd32(r);
	uint16_t nw = rd16(r);
	if (r->bad)
		return -EPROTO;
	if (nw > P9_MAXWELEM)
		return -EINVAL;
	char (*names)[NAMEMAX] = s->wnames;
	for (int i = 0; i < nw; i++) {
		rdstr(r, names[i], NAMEMAX);
		if (r->bad)
			return -EPROTO;
		if (!names[i][0] || strchr(names[i], '/'))
			return -EINVAL;
	}
	struct p9_fid *f;
	int e = req_fid(s, r, fid, FID_NO_XATTR, &f);
	if (e < 0)
		return e;
	if (newfid != fid && *p9_fid_slot(s, newfid))
		return -EBADF;
	/* An opened fid stays on its file (as QEMU has it): walked in place,
	 * its path and its open file would name different objects. */
	if (newfid == fid && f->ofd >= 0)
		return -EINVAL;
	if (newfid != fid && p9_fid_room() == 0)
		return -EMFILE;
	char *path = strdup(f->path);
	int cur = dup(f->fd);
	if (!path || cur < 0) {
		free(path);
		if (cur >= 0)
			close(cur);
		return -ENOMEM;
	}
	bool curdir = f->isdir;
	size_t qpos = w->off;
	wr16(w, 0);
	int done = 0, err = 0;
	struct stat st;
	for (; done < nw; done++) {
		const char *nm = names[done];
		char *np;
		int fd;
		if (!curdir) {
			err = -ENOTDIR;
			break;
		}
		if (strcmp(nm, ".") == 0) {
			np = strdup(path);
			fd = dup(cur);
			if (fd < 0)
				fd = -errno;
		} else if (strcmp(nm, "..") == 0) {
			/* Walk up by name from the root: never above it. */
			char *slash = strrchr(path, '/');
			np = slash ? strndup(path, (size_t)(slash - path)) : strdup("");
			fd = np ? p9_openat(s, s->rootfd, np, O_PATH | O_DIRECTORY, 0) : -ENOMEM;
		} else {
			np = p9_path_join(path, nm);
			fd = np ? p9_openat(s, cur, nm, O_PATH, 0) : -ENAMETOOLONG;
		}
		if (np && fd >= 0)
			err = p9_fstat(fd, &st);
		else
			err = fd < 0 ? fd : -ENOMEM;
		if (err < 0) {
			free(np);
			if (fd >= 0)
				close(fd);
			break;
		}
		close(cur);
		free(path);
		cur = fd;
		path = np;
		curdir = S_ISDIR(st.st_mode);
		wrqid(w, &st);
	}
	if (done < nw || w->over) {
		close(cur);
		free(path);
		if (done == nw)
			return -EMSGSIZE;
		if (done == 0)
			return err;
		/* Partial walk: Rwalk with the qids found, newfid not made. */
		put_le(w->p + qpos, (uint64_t)done, 2);
		return 0;
	}
	put_le(w->p + qpos, nw, 2);
	if (newfid == fid) {
		close(f->fd);
		free(f->path);
		f->fd = cur;
		f->path = path;
		f->isdir = curdir;
		return 0;
	}
	if (!p9_fid_new(s, newfid, cur, path, curdir, f->uid))
		return -errno;
	return 0;
}

/* Tlopen/Tlcreate succeeded: f now holds the open file fd (lflags are the
 * 9P flags a restore may repeat); reply qid[13] iounit[4]. */
static int fid_opened(struct p9_server *s, struct p9_fid *f, int fd, uint32_t lflags,
                      const struct stat *st, struct wr *w)
{
	f->ofd = fd;
	f->opened = true;
	f->lflags = lflags;
	wrqid(w, st);
	wr32(w, s->msize - 24);
	return 0;
}

static int h_lopen(struct p9_server *s, struct rd *r, struct wr *w)
{
	uint32_t fid = rd32(r), flags = rd32(r);
	struct p9_fid *f;
	int e = req_fid(s, r, fid, FID_NO_XATTR, &f);
	if (e < 0)
		return e;
	if (f->ofd >= 0)
		return -EBUSY;
	int o = p9_open_flags(flags);
	if (s->readonly && p9_open_modifies(o))
		return -EROFS;
	struct stat st;
	e = p9_fstat(f->fd, &st);
	if (e < 0)
		return e;
	if (S_ISLNK(st.st_mode))
		return -ELOOP;
	if (f->isdir && (o & O_ACCMODE) != O_RDONLY)
		return -EISDIR;
	int fd = p9_reopen(s, f, o);
	if (fd < 0)
		return fd;
	return fid_opened(s, f, fd, flags & P9_LFLAGS_KEPT, &st, w);
}

static bool name_ok(const char *name)
{
	return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* dfid + name of an entry to make, remove or rename: the fid (req_fid) of
 * what should be its directory; name_ok keeps the operation inside that. */
static int entry_dir_fid(struct p9_server *s, const struct rd *r, uint32_t dfid, const char *name,
                         struct p9_fid **out)
{
	if (r->bad)
		return -EPROTO;
	if (!name_ok(name))
		return -EINVAL;
	return req_fid(s, r, dfid, FID_NO_XATTR, out);
}

/* entry_dir_fid, and it must be a directory on a writable share. */
static int dir_and_name(struct p9_server *s, const struct rd *r, uint32_t dfid, const char *name,
                        struct p9_fid **out)
{
	struct p9_fid *d;
	int e = entry_dir_fid(s, r, dfid, name, &d);
	if (e < 0)
		return e;
	if (!d->isdir)
		return -ENOTDIR;
	if (s->readonly)
		return -EROFS;
	*out = d;
	return 0;
}

static int h_lcreate(struct p9_server *s, struct rd *r, struct wr *w)
{
	char name[NAMEMAX];
	uint32_t fid = rd_fid_name(r, name);
	uint32_t flags = rd32(r), mode = rd32(r);
	(void)rd32(r);   /* gid: see P9_MODE_BITS */
	struct p9_fid *f;
	int e = entry_dir_fid(s, r, fid, name, &f);
	if (e < 0)
		return e;
	/* Not dir_and_name: a read-only share answers EROFS before ENOTDIR here. */
	if (s->readonly)
		return -EROFS;
	if (!f->isdir)
		return -ENOTDIR;
	if (f->ofd >= 0)
		return -EBUSY;
	int o = p9_open_flags(flags) & ~O_DIRECTORY;
	if (flags & P9_DOTL_EXCL)
		o |= O_EXCL;
	char *np = p9_path_join(f->path, name);
	if (!np)
		return -ENAMETOOLONG;
	/* The name may exist already, as anything: only a regular file is
	 * opened (ENXIO otherwise), as for Tlopen (p9_reopen).  The O_PATH
	 * look first keeps an existing device node's open routine from ever
	 * running; p9_open_finish checks what the open really got. */
	struct stat st;
	int fd = p9_open_stat(s, f->fd, name, O_PATH, &st);
	bool special = fd >= 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode);
	if (fd >= 0)
		close(fd);
	/* (a directory or symlink gets the open's own EISDIR / ELOOP) */
	fd = special ? -ENXIO : p9_openat(s, f->fd, name, o | O_CREAT | O_NONBLOCK | O_NOCTTY, mode & P9_MODE_BITS);
	if (fd >= 0)
		fd = p9_open_finish(fd);
	if (fd < 0) {
		free(np);
		return fd;
	}
	int pfd = p9_openat(s, f->fd, name, O_PATH, 0);
	e = pfd < 0 ? pfd : p9_fstat(fd, &st);
	if (e < 0) {
		if (pfd >= 0)
			close(pfd);
		close(fd);
		free(np);
		return e;
	}
	/* The fid moves from the directory to the new file. */
	close(f->fd);
	free(f->path);
	f->fd = pfd;
	f->path = np;
	f->isdir = false;
	return fid_opened(s, f, fd, flags & P9_LFLAGS_KEPT & ~(uint32_t)P9_DOTL_DIRECTORY, &st, w);
}

struct io_req {
	struct p9_fid *f;
	uint64_t off;
	uint32_t count;
};

/* Tread, Treaddir: fid[4] offset[8] count[4]; Twrite: the same, then count
 * bytes of data (*data).  Decoded, and the fid looked up (req_fid). */
static int io_request(struct p9_server *s, struct rd *r, unsigned need, struct io_req *q, const uint8_t **data)
{
	uint32_t fid = rd32(r);
	q->off = rd64(r);
	q->count = rd32(r);
	if (data)
		*data = rd_take(r, q->count);
	return req_fid(s, r, fid, need, &q->f);
}

/* Clamp a Tread/Treaddir count to what fits in the reply after count[4]
 * and in msize.  The guest's count is never trusted beyond that. */
static int clamp_count(const struct p9_server *s, const struct wr *w, uint32_t *count)
{
	size_t room = w->cap - w->off;   /* after the header */
	if (room < 4)
		return -EMSGSIZE;
	room -= 4;
	if (*count > room)
		*count = (uint32_t)room;
	if (*count > s->msize - P9_IOHDR)
		*count = s->msize - P9_IOHDR;
	return 0;
}

/* pread (into rbuf) or pwrite (from wbuf) on the regular file f has open,
 * at a guest-given offset, retried on EINTR: bytes moved or -errno. */
static ssize_t file_io(struct p9_fid *f, void *rbuf, const void *wbuf, uint32_t count, uint64_t off)
{
	if (f->ofd < 0 || f->isdir)
		return -EBADF;
	if (off > INT64_MAX)
		return -EINVAL;
	ssize_t n;
	do
		n = wbuf ? pwrite(f->ofd, wbuf, count, (off_t)off) : pread(f->ofd, rbuf, count, (off_t)off);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

static int h_read(struct p9_server *s, struct rd *r, struct wr *w)
{
	struct io_req q;
	int e = io_request(s, r, FID_ANY, &q, NULL);
	if (e < 0 || (e = clamp_count(s, w, &q.count)) < 0)
		return e;
	if (q.f->xattr) {
		wr32(w, 0);
		return 0;
	}
	/* Straight into the reply, after its count[4] (clamp_count made room). */
	ssize_t n = file_io(q.f, w->p + w->off + 4, NULL, q.count, q.off);
	if (n < 0)
		return (int)n;
	wr32(w, (uint32_t)n);
	w->off += (size_t)n;
	return 0;
}

static int h_write(struct p9_server *s, struct rd *r, struct wr *w)
{
	struct io_req q;
	const uint8_t *data;
	int e = io_request(s, r, FID_NO_XATTR, &q, &data);
	if (e < 0)
		return e;
	if (s->readonly)
		return -EROFS;
	ssize_t n = file_io(q.f, NULL, data, q.count, q.off);
	if (n < 0)
		return (int)n;
	wr32(w, (uint32_t)n);
	return 0;
}

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static int h_readdir(struct p9_server *s, struct rd *r, struct wr *w)
{
	struct io_req q;
	int e = io_request(s, r, FID_NO_XATTR | FID_OPEN, &q, NULL);
	if (e < 0)
		return e;
	struct p9_fid *f = q.f;
	if (!f->isdir)
		return -EBADF;
	if ((e = clamp_count(s, w, &q.count)) < 0)
		return e;
	if (lseek(f->ofd, (off_t)q.off, SEEK_SET) < 0)
		return -errno;
	size_t cntpos = w->off;
	wr32(w, 0);
	struct wr body = { .p = w->p + w->off, .cap = q.count, .off = 0 };
	char *buf = s->dirbuf;
	bool full = false;
	while (!full) {
		long n = syscall(SYS_getdents64, f->ofd, buf, sizeof(s->dirbuf));
		if (n < 0) {
			if (body.off)
				break;
			return -errno;
		}
		if (n == 0)
			break;
		for (long pos = 0; pos < n;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + pos);
			size_t hdr = offsetof(struct linux_dirent64, d_name);
			if (d->d_reclen <= hdr || pos + d->d_reclen > n)
				break;
			pos += d->d_reclen;
			size_t nl = strnlen(d->d_name, d->d_reclen - hdr);   /* within the record */
			size_t need = 13 + 8 + 1 + 2 + nl;
			if (need > body.cap - body.off) {
				full = true;
				break;
			}
			uint8_t qt = d->d_type == DT_DIR ? P9_QTDIR : d->d_type == DT_LNK ? P9_QTSYMLINK : P9_QTFILE;
			wr8(&body, qt);
			wr32(&body, 0);
			wr64(&body, d->d_ino);
			wr64(&body, (uint64_t)d->d_off);
			wr8(&body, d->d_type);
			wrstr(&body, d->d_name, nl);
		}
	}
	w->off += body.off;
	put_le(w->p + cntpos, body.off, 4);
	return 0;
}

static int h_getattr(struct p9_server *s, struct rd *r, struct wr *w)
{
	uint32_t fid = rd32(r);
	(void)rd64(r);   /* request_mask: we always fill the basic set */
	struct p9_fid *f;
	int e = req_fid(s, r, fid, FID_NO_XATTR, &f);
	if (e < 0)
		return e;
	struct stat st;
	e = p9_fstat(f->fd, &st);
	if (e < 0)
		return e;
	wr64(w, P9_GETATTR_BASIC);
	wrqid(w, &st);
	wr32(w, st.st_mode);
	wr32(w, st.st_uid);
	wr32(w, st.st_gid);
	wr64(w, st.st_nlink);
	wr64(w, st.st_rdev);
	wr64(w, (uint64_t)st.st_size);
	wr64(w, (uint64_t)st.st_blksize);
	wr64(w, (uint64_t)st.st_blocks);
	wr64(w, (uint64_t)st.st_atim.tv_sec);
	wr64(w, (uint64_t)st.st_atim.tv_nsec);
	wr64(w, (uint64_t)st.st_mtim.tv_sec);
	wr64(w, (uint64_t)st.st_mtim.tv_nsec);
	wr64(w, (uint64_t)st.st_ctim.tv_sec);
	wr64(w, (uint64_t)st.st_ctim.tv_nsec);
	wr64(w, 0);   /* btime */
	wr64(w, 0);
	wr64(w, 0);   /* gen */
	wr64(w, 0);   /* data_version */
	return 0;
}

static int proc_path(struct p9_server *s, int fd, char *buf, size_t cap)
{
	if (s->procfd < 0)
		return -EOPNOTSUPP;
	snprintf(buf, cap, "/proc/self/fd/%d", fd);
	return 0;
}

/* One Tsetattr time: left alone, now, or the time given. */
static struct timespec attr_time(uint32_t valid, uint32_t bit, uint32_t set_bit, uint64_t sec, uint64_t nsec)
{
	if (!(valid & bit))
		return (struct timespec){ .tv_nsec = UTIME_OMIT };
	if (!(valid & set_bit))
		return (struct timespec){ .tv_nsec = UTIME_NOW };
	return (struct timespec){ .tv_sec = (time_t)sec, .tv_nsec = (long)(nsec % 1000000000) };
}

/*
 * The ids a Tsetattr may set (see P9_MODE_BITS): hyve's own, applied, or
 * the file's current ones, nothing to do (*u, *g stay -1).  Any other is
 * EPERM, as chown(2) answers an unprivileged caller.
 */
static int owner_change(const struct stat *st, uint32_t valid, uint32_t uid, uint32_t gid, uid_t *u, gid_t *g)
{
	*u = (uid_t)-1;
	*g = (gid_t)-1;
	if ((valid & P9_ATTR_UID) && uid != st->st_uid) {
		if (uid != geteuid())
			return -EPERM;
		*u = uid;
	}
	if ((valid & P9_ATTR_GID) && gid != st->st_gid) {
		if (gid != getegid())
			return -EPERM;
		*g = gid;
	}
	return 0;
}

static int h_setattr(struct p9_server *s, struct rd *r, struct wr *w)
{
	(void)w;
	uint32_t fid = rd32(r), valid = rd32(r), mode = rd32(r), uid = rd32(r), gid = rd32(r);
	uint64_t size = rd64(r), asec = rd64(r), ansec = rd64(r), msec = rd64(r), mnsec = rd64(r);
	struct p9_fid *f;
	int e = req_fid(s, r, fid, FID_NO_XATTR, &f);
	if (e < 0)
		return e;
	if (s->readonly)
		return -EROFS;
	struct stat st;
	e = p9_fstat(f->fd, &st);
	if (e < 0)
		return e;
	bool lnk = S_ISLNK(st.st_mode);
	/* Refused before anything changes: a refused Tsetattr changes nothing. */
	uid_t u;
	gid_t g;
	if ((e = owner_change(&st, valid, uid, gid, &u, &g)) < 0)
		return e;
	/* Only a regular file has a size; reopening anything else to truncate
	 * it would open a FIFO or a device (openable). */
	if ((valid & P9_ATTR_SIZE) && !S_ISREG(st.st_mode))
		return -EINVAL;
	char pp[64];
	if (valid & P9_ATTR_MODE && !lnk) {
		if ((e = proc_path(s, f->fd, pp, sizeof(pp))) < 0)
			return e;
		if (chmod(pp, mode & P9_MODE_BITS) < 0)
			return -errno;
	}
	if ((u != (uid_t)-1 || g != (gid_t)-1) && fchownat(f->fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (valid & P9_ATTR_SIZE) {
		if (size > INT64_MAX)
			return -EFBIG;
		int fd = f->ofd;
		if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
			fd = p9_reopen(s, f, O_WRONLY);
			if (fd < 0)
				return fd;
			int rc = ftruncate(fd, (off_t)size);
			e = errno;
			close(fd);
			if (rc < 0)
				return -e;
		}
	}
	if (valid & (P9_ATTR_ATIME | P9_ATTR_MTIME) && !lnk) {
		struct timespec ts[2] = {
			attr_time(valid, P9_ATTR_ATIME, P9_ATTR_ATIME_SET, asec, ansec),
			attr_time(valid, P9_ATTR_MTIME, P9_ATTR_MTIME_SET, msec, mnsec),
		};
		if ((e = proc_path(s, f->fd, pp, sizeof(pp))) < 0)
			return e;
		if (utimensat(AT_FDCWD, pp, ts, 0) < 0)
			return -errno;
	}
	return 0;
}

static int h_statfs(struct p9_server *s, struct rd *r, struct wr *w)
{
	struct p9_fid *f;
	int e = req_fid(s, r, rd32(r), FID_ANY, &f);
	if (e < 0)
		return e;
	struct statfs sf;
	if (fstatfs(f->fd, &sf) < 0)
		return -errno;
	wr32(w, 0x01021997);   /* V9FS_MAGIC */
	wr32(w, (uint32_t)sf.f_bsize);
	wr64(w, sf.f_blocks);
	wr64(w, sf.f_bfree);
	wr64(w, sf.f_bavail);
	wr64(w, sf.f_files);
	wr64(w, sf.f_ffree);
	uint64_t fsid;
	memcpy(&fsid, &sf.f_fsid, sizeof(fsid));
	wr64(w, fsid);
	wr32(w, (uint32_t)sf.f_namelen);
	return 0;
}

/* Tmkdir:   dfid[4] name[s] mode[4] gid[4]
 * Tsymlink: dfid[4] name[s] target[s] gid[4]
 * Tmknod:   dfid[4] name[s] mode[4] major[4] minor[4] gid[4]
 * Each makes one entry in the directory and replies with its qid.  The
 * gid is ignored and the mode limited to P9_MODE_BITS. */
static int h_newentry(struct p9_server *s, uint8_t type, struct rd *r, struct wr *w)
{
	char name[NAMEMAX], target[PATH_MAX];
	uint32_t dfid = rd_fid_name(r, name);
	uint32_t mode = 0;
	if (type == Tsymlink)
		rdstr(r, target, sizeof(target));
	else
		mode = rd32(r);
	if (type == Tmknod) {
		(void)rd32(r);   /* major, minor: only FIFOs, sockets and files are made */
		(void)rd32(r);
	}
	(void)rd32(r);   /* gid */
	struct p9_fid *d;
	int e = dir_and_name(s, r, dfid, name, &d);
	if (e < 0)
		return e;
	if (type == Tmkdir) {
		e = mkdirat(d->fd, name, mode & P9_MODE_BITS);
	} else if (type == Tsymlink) {
		/* The target is stored, never followed: fids open nothing by symlink. */
		e = symlinkat(target, d->fd, name);
	} else {
		/* No device nodes on the host: a root hyve opening a guest-made
		 * node for a host disk would read that disk.  EPERM, as mknod(2)
		 * answers without CAP_MKNOD.  FIFOs and sockets are only names
		 * here: the server never opens them (openable). */
		if (!S_ISFIFO(mode) && !S_ISSOCK(mode) && !S_ISREG(mode))
			return -EPERM;
		e = mknodat(d->fd, name, (mode & S_IFMT) | (mode & P9_MODE_BITS), 0);
	}
	if (e < 0)
		return -errno;
	struct stat st;
	int fd = p9_open_stat(s, d->fd, name, O_PATH, &st);
	if (fd < 0)
		return fd;
	close(fd);
	wrqid(w, &st);
	return 0;
}

static int h_readlink(struct p9_server *s, struct rd *r, struct wr *w)
{
	struct p9_fid *f;
	int e = req_fid(s, r, rd32(r), FID_NO_XATTR, &f);
	if (e < 0)
		return e;
	char buf[PATH_MAX];
	ssize_t n = readlinkat(f->fd, "", buf, sizeof(buf));
	if (n < 0)
		return -errno;
	wrstr(w, buf, (size_t)n);
	return 0;
}

static int h_link(struct p9_server *s, struct rd *r, struct wr *w)
{
	(void)w;
	uint32_t dfid = rd32(r), fid = rd32(r);
	char name[NAMEMAX];
	rdstr(r, name, sizeof(name));
	struct p9_fid *d;
	int e = dir_and_name(s, r, dfid, name, &d);
	if (e < 0)
		return e;
	struct p9_fid *f;
	if ((e = req_fid(s, r, fid, FID_NO_XATTR, &f)) < 0)
		return e;
	if (f->isdir)
		return -EPERM;
	char pp[64];
	if ((e = proc_path(s, f->fd, pp, sizeof(pp))) < 0)
		return e;
	if (linkat(AT_FDCWD, pp, d->fd, name, AT_SYMLINK_FOLLOW) < 0)
		return -errno;
	return 0;
}

static int h_renameat(struct p9_server *s, struct rd *r, struct wr *w)
{
	(void)w;
	char on[NAMEMAX], nn[NAMEMAX];
	uint32_t ofid = rd_fid_name(r, on);
	uint32_t nfid = rd_fid_name(r, nn);
	struct p9_fid *od, *nd;
	int e = dir_and_name(s, r, ofid, on, &od);
	if (e < 0 || (e = dir_and_name(s, r, nfid, nn, &nd)) < 0)
		return e;
	char *op = p9_path_join(od->path, on);
	e = p9_rename(s, od->fd, on, op, nd, nn);
	free(op);
	return e;
}

/* Parent directory fid-like view of a fid's path: fd + basename. */
static int open_parent(struct p9_server *s, struct p9_fid *f, int *pfd, const char **base)
{
	if (!f->path[0])
		return -EBUSY;   /* the root itself */
	char *slash = strrchr(f->path, '/');
	char *dir = slash ? strndup(f->path, (size_t)(slash - f->path)) : strdup("");
	if (!dir)
		return -ENOMEM;
	int fd = p9_openat(s, s->rootfd, dir, O_PATH | O_DIRECTORY, 0);
	free(dir);
	if (fd < 0)
		return fd;
	*pfd = fd;
	*base = slash ? slash + 1 : f->path;
	return 0;
}

static int h_rename(struct p9_server *s, struct rd *r, struct wr *w)
{
	(void)w;
	uint32_t fid = rd32(r);
	char nn[NAMEMAX];
	uint32_t dfid = rd_fid_name(r, nn);
	struct p9_fid *nd;
	int e = dir_and_name(s, r, dfid, nn, &nd);
	if (e < 0)
		return e;
	struct p9_fid *f;
	if ((e = req_fid(s, r, fid, FID_NO_XATTR, &f)) < 0)
		return e;
	int pfd;
	const char *base;
	if ((e = open_parent(s, f, &pfd, &base)) < 0)
		return e;
	/* A copy: p9_rename replaces f->path (and base points into it). */
	char *oldpath = strdup(f->path);
	e = oldpath ? p9_rename(s, pfd, base, oldpath, nd, nn) : -ENOMEM;
	close(pfd);
	free(oldpath);
	return e;
}

static int h_unlinkat(struct p9_server *s, struct rd *r, struct wr *w)
{
	(void)w;
	char name[NAMEMAX];
	uint32_t dfid = rd_fid_name(r, name);
	uint32_t flags = rd32(r);
	struct p9_fid *d;
	int e = dir_and_name(s, r, dfid, name, &d);
	if (e < 0)
		return e;
	if (unlinkat(d->fd, name, (flags & P9_DOTL_AT_REMOVEDIR) ? AT_REMOVEDIR : 0) < 0)
		return -errno;
	return 0;
}

static int h_remove(struct p9_server *s, struct rd *r, struct wr *w)
{
	(void)w;
	uint32_t fid = rd32(r);
	struct p9_fid *f;
	int e = req_fid(s, r, fid, FID_ANY, &f);
	if (e < 0) {
		if (s->stale_hit)
			p9_fid_clunk(s, fid);   /* the client forgets the fid either way */
		return e;
	}
	int pfd;
	const char *base;
	if (s->readonly)
		e = -EROFS;
	else if (f->xattr)
		e = -EINVAL;
	else if ((e = open_parent(s, f, &pfd, &base)) == 0) {
		if (unlinkat(pfd, base, f->isdir ? AT_REMOVEDIR : 0) < 0)
			e = -errno;
		close(pfd);
	}
	p9_fid_clunk(s, fid);   /* clunked even when the remove fails */
	return e;
}

static int h_fsync(struct p9_server *s, struct rd *r, struct wr *w)
{
	(void)w;
	struct p9_fid *f;
	int e = req_fid(s, r, rd32(r), FID_ANY, &f);
	if (e < 0)
		return e;
	if (f->ofd >= 0 && fsync(f->ofd) < 0)
		return -errno;
	return 0;
}

/* Tlock:    fid[4] type[1] flags[4] start[8] length[8] proc_id[4] client_id[s]
 * Tgetlock: fid[4] type[1]          start[8] length[8] proc_id[4] client_id[s]
 * Open-file-description locks: one per fid's open file, never blocking
 * (the client polls on BLOCKED). */
static int h_lock(struct p9_server *s, uint8_t op, struct rd *r, struct wr *w)
{
	uint32_t fid = rd32(r);
	uint8_t type = rd8(r);
	if (op == Tlock)
		(void)rd32(r);   /* flags */
	uint64_t start = rd64(r), length = rd64(r);
	uint32_t proc_id = rd32(r);
	char client[NAMEMAX];
	rdstr(r, client, sizeof(client));
	struct p9_fid *f;
	int e = req_fid(s, r, fid, FID_NO_XATTR | FID_OPEN, &f);
	if (e < 0)
		return e;
	int lt = type == P9_LOCK_RDLCK ? F_RDLCK : type == P9_LOCK_WRLCK ? F_WRLCK : type == P9_LOCK_UNLCK ? F_UNLCK : -1;
	if (lt < 0 || start > INT64_MAX || length > INT64_MAX)
		return -EINVAL;
	struct flock fl = { .l_type = (short)lt, .l_whence = SEEK_SET, .l_start = (off_t)start,
	                    .l_len = (off_t)length };
	if (op == Tlock) {
		uint8_t st = P9_LOCK_SUCCESS;
		if (fcntl(f->ofd, F_OFD_SETLK, &fl) < 0)
			st = (errno == EAGAIN || errno == EACCES) ? P9_LOCK_BLOCKED : P9_LOCK_ERROR;
		wr8(w, st);
		return 0;
	}
	if (fcntl(f->ofd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	uint8_t rt = fl.l_type == F_RDLCK ? P9_LOCK_RDLCK : fl.l_type == F_WRLCK ? P9_LOCK_WRLCK : P9_LOCK_UNLCK;
	wr8(w, rt);
	if (fl.l_type == F_UNLCK) {   /* no conflicting lock: the request comes back */
		wr64(w, start);
		wr64(w, length);
		wr32(w, proc_id);
	} else {
		wr64(w, (uint64_t)fl.l_start);
		wr64(w, (uint64_t)fl.l_len);
		wr32(w, (uint32_t)fl.l_pid);
	}
	wrstr(w, client, strlen(client));
	return 0;
}

static int h_xattrwalk(struct p9_server *s, struct rd *r, struct wr *w)
{
	uint32_t fid = rd32(r), newfid = rd32(r);
	char name[NAMEMAX];
	rdstr(r, name, sizeof(name));
	struct p9_fid *f;
	int e = req_fid(s, r, fid, FID_NO_XATTR, &f);
	if (e < 0)
		return e;
	if (name[0])
		return -ENODATA;   /* no extended attributes exported */
	/* listxattr: an empty list */
	if (newfid == fid || *p9_fid_slot(s, newfid))
		return -EBADF;
	int fd = dup(f->fd);
	if (fd < 0)
		return -errno;
	struct p9_fid *x = p9_fid_new(s, newfid, fd, strdup(f->path), f->isdir, f->uid);
	if (!x)
		return -errno;
	x->xattr = true;
	wr64(w, 0);
	return 0;
}

/* ---- dispatch ---- */

static size_t rlerror(uint8_t *rep, uint16_t tag, int err)
{
	struct wr w = { .p = rep, .cap = 11 };
	wr32(&w, 11);
	wr8(&w, Rlerror);
	wr16(&w, tag);
	wr32(&w, (uint32_t)err);
	return 11;
}

size_t p9_handle(struct p9_server *s, const uint8_t *req, size_t reqlen, uint8_t *rep, size_t repcap)
{
	if (repcap < 11)
		return 0;
	if (reqlen < P9_HDR_SIZE)
		return rlerror(rep, P9_NOTAG, EPROTO);
	struct rd r = { .p = req, .len = reqlen };
	uint32_t size = rd32(&r);
	uint8_t type = rd8(&r);
	uint16_t tag = rd16(&r);
	if (size < P9_HDR_SIZE || size > reqlen || size > s->msize)
		return rlerror(rep, tag, EPROTO);
	r.len = size;   /* trailing bytes beyond size are not part of the message */
	if (repcap > s->msize)
		repcap = s->msize;
	struct wr w = { .p = rep, .cap = repcap, .off = P9_HDR_SIZE };
	int e;
	s->stale_hit = false;
	switch (type) {
	case Tversion: e = h_version(s, &r, &w); break;
	case Tauth: e = -EOPNOTSUPP; break;
	case Tattach: e = h_attach(s, &r, &w); break;
	case Tflush:   /* requests are answered in order: nothing in flight */
		(void)rd16(&r);
		e = r.bad ? -EPROTO : 0;
		break;
	case Twalk: e = h_walk(s, &r, &w); break;
	case Tlopen: e = h_lopen(s, &r, &w); break;
	case Tlcreate: e = h_lcreate(s, &r, &w); break;
	case Tread: e = h_read(s, &r, &w); break;
	case Twrite: e = h_write(s, &r, &w); break;
	case Treaddir: e = h_readdir(s, &r, &w); break;
	case Tgetattr: e = h_getattr(s, &r, &w); break;
	case Tsetattr: e = h_setattr(s, &r, &w); break;
	case Tstatfs: e = h_statfs(s, &r, &w); break;
	case Tmkdir: case Tsymlink: case Tmknod: e = h_newentry(s, type, &r, &w); break;
	case Treadlink: e = h_readlink(s, &r, &w); break;
	case Tlink: e = h_link(s, &r, &w); break;
	case Trenameat: e = h_renameat(s, &r, &w); break;
	case Trename: e = h_rename(s, &r, &w); break;
	case Tunlinkat: e = h_unlinkat(s, &r, &w); break;
	case Tremove: e = h_remove(s, &r, &w); break;
	case Tfsync: e = h_fsync(s, &r, &w); break;
	case Tlock: case Tgetlock: e = h_lock(s, type, &r, &w); break;
	case Txattrwalk: e = h_xattrwalk(s, &r, &w); break;
	case Txattrcreate: e = s->readonly ? -EROFS : -EOPNOTSUPP; break;
	case Tclunk: {
		uint32_t fid = rd32(&r);
		e = r.bad ? -EPROTO : p9_fid_clunk(s, fid);
		break;
	}
	default: e = -EOPNOTSUPP; break;
	}
	if (e == -EBADF && s->stale_hit)
		e = -ESTALE;
	if (e == 0 && w.over)
		e = -EMSGSIZE;
	if (e < 0)
		return rlerror(rep, tag, -e);
	struct wr h = { .p = rep, .cap = P9_HDR_SIZE };
	wr32(&h, (uint32_t)w.off);
	wr8(&h, (uint8_t)(type + 1));
	wr16(&h, tag);
	return w.off;
}
