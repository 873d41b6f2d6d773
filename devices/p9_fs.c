/*
 * The 9P server's side of the host: the fid table, jailed resolution of
 * names beneath the share, and the policy for opening what they name (see
 * p9_server.h).  The wire side (decoding, handlers) is p9_server.c.
 */
#include "p9_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- fids ---- */

struct p9_fid **p9_fid_slot(struct p9_server *s, uint32_t fid)
{
	struct p9_fid **pp = &s->fids[fid % FID_BUCKETS];
	while (*pp && (*pp)->fid != fid)
		pp = &(*pp)->next;
	return pp;
}

/*
 * Fids in this process, over every server.  Each holds up to two fds (its
 * O_PATH fd and its open file), and the guest picks how many it makes: a
 * guest holding fids without end would leave hyve no fd for a disk, a
 * socket or a checkpoint file.  So fids may use the fd limit (read each
 * time: it may be raised while running) less a reserve for the rest of
 * hyve; past that, new fids are refused with EMFILE.
 */
static atomic_uint fids_live;

unsigned p9_fid_room(void)
{
	struct rlimit rl;
	rlim_t lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
	if (lim == RLIM_INFINITY || lim > (rlim_t)1 << 21)
		lim = (rlim_t)1 << 21;
	rlim_t reserve = lim / 2 < 256 ? lim / 2 : 256;
	unsigned cap = (unsigned)((lim - reserve) / 2), live = atomic_load(&fids_live);
	return live < cap ? cap - live : 0;
}

static void fid_destroy(struct p9_fid *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->ofd >= 0)
		close(f->ofd);
	free(f->path);
	free(f);
	atomic_fetch_sub(&fids_live, 1);
}

/* Make f stale (see struct p9_fid) while the server runs: its fds go. */
static void fid_make_stale(struct p9_fid *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->ofd >= 0)
		close(f->ofd);
	f->fd = f->ofd = -1;
	f->stale = true;
}

int p9_fid_clunk(struct p9_server *s, uint32_t fid)
{
	struct p9_fid **pp = p9_fid_slot(s, fid);
	struct p9_fid *f = *pp;
	if (!f)
		return -EBADF;
	*pp = f->next;
	fid_destroy(f);
	return 0;
}

/* New fid; takes ownership of fd and path.  NULL with errno EBADF (fid in
 * use or NOFID), EMFILE (p9_fid_room) or ENOMEM. */
struct p9_fid *p9_fid_new(struct p9_server *s, uint32_t fid, int fd, char *path, bool isdir, uint32_t uid)
{
	struct p9_fid **pp = p9_fid_slot(s, fid);
	struct p9_fid *f = NULL;
	int e = fid == P9_NOFID || *pp ? EBADF : p9_fid_room() == 0 ? EMFILE : 0;
	if (e || !path || !(f = calloc(1, sizeof(*f)))) {
		if (fd >= 0)
			close(fd);
		free(path);
		errno = e ? e : ENOMEM;
		return NULL;
	}
	atomic_fetch_add(&fids_live, 1);
	*f = (struct p9_fid){ .fid = fid, .fd = fd, .ofd = -1, .isdir = isdir, .uid = uid, .path = path };
	*pp = f;
	return f;
}

void p9_fids_clear(struct p9_server *s)
{
	for (int i = 0; i < FID_BUCKETS; i++) {
		while (s->fids[i]) {
			struct p9_fid *f = s->fids[i];
			s->fids[i] = f->next;
			fid_destroy(f);
		}
	}
}

/*
 * Open rel (a '/'-separated path of plain names, "" for dirfd itself)
 * beneath dirfd, following no symlink at all.  Returns an fd or -errno.
 */
int p9_openat(struct p9_server *s, int dirfd, const char *rel, int flags, mode_t mode)
{
	if (!rel[0])
		rel = ".";
	flags |= O_NOFOLLOW | O_CLOEXEC;
	if (s->have_openat2) {
		struct open_how how = {
			.flags = (uint64_t)flags,
			.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
			.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS,
		};
		long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno != ENOSYS)
			return -errno;
		s->have_openat2 = false;
	}
	/* Fallback: component by component, O_NOFOLLOW, no ".." */
	char buf[PATH_MAX];
	if (strlen(rel) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, rel);
	int cur = dirfd;
	char *save = NULL;
	char *comp = strtok_r(buf, "/", &save);
	while (comp) {
		char *next = strtok_r(NULL, "/", &save);
		if (strcmp(comp, "..") == 0) {
			if (cur != dirfd)
				close(cur);
			return -EXDEV;
		}
		int fl = next ? (O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : flags;
		int fd = openat(cur, comp, fl, mode);
		int e = errno;
		if (cur != dirfd)
			close(cur);
		if (fd < 0)
			return -e;
		cur = fd;
		comp = next;
	}
	if (cur == dirfd) {   /* "." */
		int fd = openat(dirfd, ".", flags & ~O_NOFOLLOW, mode);
		return fd < 0 ? -errno : fd;
	}
	return cur;
}

int p9_fstat(int fd, struct stat *st)
{
	return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/*
 * Only regular files and directories are ever opened for I/O; anything
 * else is ENXIO (what open(2) answers for a socket).  Opening a FIFO
 * blocks until a peer shows up, and the device worker blocked in open
 * stalls every quiesce, checkpoint and restore with it; a device node
 * opened by a root hyve reaches host hardware (a block device node for a
 * host disk reads that disk).  Well-behaved clients never ask: Linux v9fs
 * serves FIFOs and device nodes guest-side and never sends Tlopen for them.
 */
static bool openable(mode_t m)
{
	return S_ISREG(m) || S_ISDIR(m);
}

/*
 * fd was just opened O_NONBLOCK | O_NOCTTY (so that not even the open
 * waits): keep it only if what was opened (fstat of the fd, not of a name
 * that may have changed since) is openable, and drop O_NONBLOCK again,
 * which only served the open.  fd, or -errno with fd closed.
 */
int p9_open_finish(int fd)
{
	struct stat st;
	int e = p9_fstat(fd, &st);
	if (e == 0 && !openable(st.st_mode))
		e = -ENXIO;
	int fl = e == 0 ? fcntl(fd, F_GETFL) : 0;
	if (e == 0 && (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0))
		e = -errno;
	if (e < 0) {
		close(fd);
		return e;
	}
	return fd;
}

/*
 * A fresh open file description for the object behind an O_PATH fd.  That
 * fd pins the inode, so its type is checked before anything is opened (no
 * device's open routine ever runs); open_finish checks again what was
 * opened, since without /proc the file is reopened by name.
 */
int p9_reopen(struct p9_server *s, struct p9_fid *f, int flags)
{
	struct stat st;
	int fd = p9_fstat(f->fd, &st);
	if (fd < 0)
		return fd;
	if (!openable(st.st_mode))
		return S_ISLNK(st.st_mode) ? -ELOOP : -ENXIO;
	flags &= ~(O_CREAT | O_EXCL);
	flags |= O_NONBLOCK | O_NOCTTY;
	if (f->isdir) {
		fd = p9_openat(s, f->fd, "", flags | O_DIRECTORY, 0);
	} else if (s->procfd >= 0) {
		char n[16];
		snprintf(n, sizeof(n), "%d", f->fd);
		/* Our own magic link: it names exactly the inode the fid holds. */
		fd = openat(s->procfd, n, flags | O_CLOEXEC);
		fd = fd < 0 ? -errno : fd;
	} else {
		fd = p9_openat(s, s->rootfd, f->path, flags, 0);
	}
	return fd < 0 ? fd : p9_open_finish(fd);
}

/* dir "/" name as a share path (just name for the root): NULL if it would
 * not fit PATH_MAX, or out of memory. */
char *p9_path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	if (a + b + 2 > PATH_MAX)
		return NULL;
	char *p = malloc(a + b + 2);
	if (!p)
		return NULL;
	if (a) {
		memcpy(p, dir, a);
		p[a++] = '/';
	}
	memcpy(p + a, name, b + 1);
	return p;
}

/* p9_openat, then p9_fstat of what it opened: fd or -errno. */
int p9_open_stat(struct p9_server *s, int dirfd, const char *rel, int flags, struct stat *st)
{
	int fd = p9_openat(s, dirfd, rel, flags, 0);
	int e = fd < 0 ? fd : p9_fstat(fd, st);
	if (e < 0 && fd >= 0)
		close(fd);
	return e < 0 ? e : fd;
}

/* Is share path p at or below share path dir (of length dl)? */
static bool path_below(const char *p, const char *dir, size_t dl)
{
	return strncmp(p, dir, dl) == 0 && (p[dl] == 0 || p[dl] == '/');
}

/*
 * Would every fid at or below oldp keep a path shorter than PATH_MAX once
 * oldp is renamed to newp?  A longer one could not be resolved by name nor
 * loaded from a checkpoint (which would then fail as a whole), so such a
 * rename is refused instead (ENAMETOOLONG).
 */
static bool fids_rename_fits(struct p9_server *s, const char *oldp, const char *newp)
{
	size_t ol = strlen(oldp), nl = strlen(newp);
	for (int i = 0; i < FID_BUCKETS && nl > ol; i++)
		for (struct p9_fid *f = s->fids[i]; f; f = f->next)
			if (path_below(f->path, oldp, ol) && strlen(f->path) - ol + nl >= PATH_MAX)
				return false;
	return true;
}

/* After a rename of share path oldp to newp, fix fid paths. */
static void fids_renamed(struct p9_server *s, const char *oldp, const char *newp)
{
	size_t ol = strlen(oldp);
	for (int i = 0; i < FID_BUCKETS; i++) {
		for (struct p9_fid *f = s->fids[i]; f; f = f->next) {
			if (!path_below(f->path, oldp, ol))
				continue;
			size_t nl = strlen(newp), rl = strlen(f->path + ol);
			char *np = malloc(nl + rl + 1);
			if (!np) {
				/* Its old path now names something else (or nothing):
				 * better dead than resolving to that. */
				fid_make_stale(f);
				continue;
			}
			memcpy(np, newp, nl);
			memcpy(np + nl, f->path + ol, rl + 1);
			free(f->path);
			f->path = np;
		}
	}
}

int p9_open_flags(uint32_t fl)
{
	int o = (int)(fl & P9_DOTL_ACCMODE);
	if (o == 3)
		o = O_RDWR;
	if (fl & P9_DOTL_TRUNC)
		o |= O_TRUNC;
	if (fl & P9_DOTL_APPEND)
		o |= O_APPEND;
	if (fl & P9_DOTL_DSYNC)
		o |= O_DSYNC;
	if ((fl & P9_DOTL_SYNC) == P9_DOTL_SYNC)
		o |= O_SYNC;
	if (fl & P9_DOTL_DIRECTORY)
		o |= O_DIRECTORY;
	return o;
}

bool p9_open_modifies(int o)
{
	return (o & O_ACCMODE) != O_RDONLY || (o & O_TRUNC);
}

int p9_rename(struct p9_server *s, int ofd, const char *on, const char *oldp, struct p9_fid *nd, const char *nn)
{
	char *np = p9_path_join(nd->path, nn);
	int e = 0;
	if (!np || (oldp && !fids_rename_fits(s, oldp, np)))
		e = -ENAMETOOLONG;
	else if (renameat(ofd, on, nd->fd, nn) < 0)
		e = -errno;
	else if (oldp)
		fids_renamed(s, oldp, np);
	free(np);
	return e;
}
