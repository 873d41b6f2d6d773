/*
 * Checkpoint of a 9P server (see p9_server.h): what a client holds in the
 * server must outlive the hyve process.  A fid is an fd here, so we save
 * what the fd was opened FROM: the path relative to the share (kept up to
 * date by Twalk/renames), the fid's kind and its 9P open flags; the load
 * opens the same names again beneath the share root.
 *
 * Layout (little-endian, via core/snapshot.h):
 *   u32 magic "P9ST", u32 layout version, u32 msize, u32 nfids, then per fid
 *   u32 fid, u32 uid, u8 kind flags, u32 9P open flags, u64 position,
 *   str path.
 *
 * Read offsets: Tread/Twrite carry their offset and Treaddir its directory
 * cookie, and the server seeks to it on every request, so nothing beyond
 * the open file is needed to continue.  The position is saved anyway (it
 * costs nothing and keeps an O_APPEND-less fd exactly as it was).
 *
 * The state file may be corrupt or hostile: counts are checked against the
 * bytes left, strings against PATH_MAX, and a path must be a plain relative
 * path (no "..", ".", empty or absolute components) before it is even
 * resolved; resolution itself is the jailed p9_openat, so a symlink planted
 * in the share after the checkpoint cannot lead outside either.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/snapshot.h"
#include "p9_internal.h"

#define P9_STATE_MAGIC   0x54533950u   /* "P9ST" */
#define P9_STATE_VERSION 1

#define FK_DIR   0x01
#define FK_XATTR 0x02
#define FK_OPEN  0x04
#define FK_ALL   (FK_DIR | FK_XATTR | FK_OPEN)

/* Smallest saved fid: fid, uid, kind, flags, position, empty path. */
#define FID_MIN_BYTES (4 + 4 + 1 + 4 + 8 + 4)


int p9_server_save(struct p9_server *s, struct snap_buf *out)
{
	uint32_t n = 0;
	for (int i = 0; i < FID_BUCKETS; i++)
		for (struct p9_fid *f = s->fids[i]; f; f = f->next)
			n++;
	sb_u32(out, P9_STATE_MAGIC);
	sb_u32(out, P9_STATE_VERSION);
	sb_u32(out, s->msize);
	sb_u32(out, n);
	for (int i = 0; i < FID_BUCKETS; i++) {
		for (struct p9_fid *f = s->fids[i]; f; f = f->next) {
			uint8_t kind = (f->isdir ? FK_DIR : 0) | (f->xattr ? FK_XATTR : 0) | (f->opened ? FK_OPEN : 0);
			off_t pos = f->ofd >= 0 ? lseek(f->ofd, 0, SEEK_CUR) : 0;
			sb_u32(out, f->fid);
			sb_u32(out, f->uid);
			sb_u8(out, kind);
			sb_u32(out, f->lflags);
			sb_u64(out, pos > 0 ? (uint64_t)pos : 0);
			/* A stale fid stays stale after the next restore: its path
			 * is kept, and the load will find the file gone again (or
			 * back, which is as good). */
			sb_str(out, f->path);
		}
	}
	return out->failed ? -1 : 0;
}

/* A path as p9_walk builds it: "" or name("/"name)*, no "." or "..". */
static bool plain_relpath(const char *p)
{
	if (!p[0])
		return true;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 0 || n >= NAMEMAX || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

static int fail(struct p9_server *s, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(struct p9_server *s, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	p9_server_reset(s);   /* nothing half-restored */
	return -1;
}

/*
 * Open the saved object again; on any failure the fid is left stale (fd
 * and ofd -1).  Only the share's own contents are consulted, so none of
 * this is an error of the state file.
 *
 * Nothing here can block: the O_PATH open never does, and p9_reopen opens
 * only regular files and directories, without waiting.  An opened fid
 * whose name is now a FIFO, socket or device node is stale like one whose
 * file was replaced by a directory: the restore goes on and that fid
 * answers ESTALE.  (Opening a FIFO would wait for a writer that never
 * comes, and `hyve -r` with it.)
 */
static void reattach(struct p9_server *s, struct p9_fid *f, uint8_t kind, uint64_t pos)
{
	int fd = p9_openat(s, s->rootfd, f->path, O_PATH, 0);
	struct stat st;
	if (fd < 0 || fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ||
	    (S_ISDIR(st.st_mode) != !!(kind & FK_DIR))) {
		/* Gone, unreachable, or replaced by something of another kind. */
		if (fd >= 0)
			close(fd);
		f->stale = true;
		return;
	}
	f->fd = fd;
	if (!(kind & FK_OPEN))
		return;
	int o = p9_open_flags(f->lflags);
	if ((s->readonly && p9_open_modifies(o)) || S_ISLNK(st.st_mode)) {
		/* The share became read-only (config override), or the name is now
		 * a symlink: Tlopen would refuse this now, so the fid is dead. */
		f->stale = true;
	} else if ((f->ofd = p9_reopen(s, f, o)) < 0) {   /* gone, or not openable */
		f->ofd = -1;
		f->stale = true;
	} else if (pos <= INT64_MAX && lseek(f->ofd, (off_t)pos, SEEK_SET) < 0) {
		/* best effort: every I/O request carries its own offset */
	}
	if (f->stale) {
		close(f->fd);
		f->fd = -1;
	}
}

int p9_server_load(struct p9_server *s, struct snap_rd *in, char *err, size_t errlen)
{
	p9_server_reset(s);
	uint32_t magic = sr_u32(in), version = sr_u32(in), msize = sr_u32(in), n = sr_u32(in);
	if (!sr_ok(in))
		return fail(s, err, errlen, "9p state truncated (header)");
	if (magic != P9_STATE_MAGIC)
		return fail(s, err, errlen, "9p state: bad magic 0x%08x", magic);
	if (version != P9_STATE_VERSION)
		return fail(s, err, errlen, "9p state: unknown layout version %u", version);
	if (msize < P9_MIN_MSIZE || msize > P9_MAX_MSIZE)
		return fail(s, err, errlen, "9p state: msize %u out of range", msize);
	if (n > sr_left(in) / FID_MIN_BYTES)
		return fail(s, err, errlen, "9p state: %u fids cannot fit in %zu bytes", n, sr_left(in));
	if (n > p9_fid_room())
		return fail(s, err, errlen, "9p state: %u fids, more than this process may hold (%u; RLIMIT_NOFILE)", n,
		            p9_fid_room());
	char *path = malloc(PATH_MAX);
	if (!path)
		return fail(s, err, errlen, "9p state: out of memory");
	int rc = 0;
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		uint32_t fid = sr_u32(in), uid = sr_u32(in);
		uint8_t kind = sr_u8(in);
		uint32_t lflags = sr_u32(in);
		uint64_t pos = sr_u64(in);
		bool was_null = false;
		bool str_ok = sr_str(in, path, PATH_MAX, &was_null);
		if (!sr_ok(in))
			rc = fail(s, err, errlen, "9p state truncated (fid %u of %u)", i, n);
		else if (!str_ok || was_null)
			rc = fail(s, err, errlen, "9p state: fid %u: bad path string", fid);
		else if (fid == P9_NOFID || (kind & ~FK_ALL) || ((kind & FK_XATTR) && (kind & FK_OPEN)) ||
		         (lflags & ~(uint32_t)P9_LFLAGS_KEPT) ||
		         ((kind & FK_DIR) && (kind & FK_OPEN) && (lflags & P9_DOTL_ACCMODE) != 0))
			rc = fail(s, err, errlen, "9p state: fid %u: bad kind 0x%x / flags 0x%x", fid, kind, lflags);
		else if (!plain_relpath(path))
			rc = fail(s, err, errlen, "9p state: fid %u: path '%.64s' is not a plain path inside the share",
			          fid, path);
		else if (*p9_fid_slot(s, fid))
			rc = fail(s, err, errlen, "9p state: fid %u saved twice", fid);
		if (rc)
			break;
		struct p9_fid *f = p9_fid_new(s, fid, -1, strdup(path), kind & FK_DIR, uid);
		if (!f) {
			rc = fail(s, err, errlen, "9p state: out of memory");
			break;
		}
		f->xattr = kind & FK_XATTR;
		f->opened = kind & FK_OPEN;
		f->lflags = lflags;
		reattach(s, f, kind, pos);
	}
	free(path);
	if (rc)
		return rc;
	s->msize = msize;
	return 0;
}
