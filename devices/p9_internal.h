/*
 * Internals shared by the 9P server (p9_server.c: wire and handlers), its
 * host side (p9_fs.c: fid table, jailed resolution, open policy) and its
 * checkpoint code (p9_state.c).  Nothing outside those files includes this.
 */
#ifndef HYVE_P9_INTERNAL_H
#define HYVE_P9_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "p9_server.h"

#define P9_MAXWELEM  16
#define FID_BUCKETS  256
#define NAMEMAX      256   /* NAME_MAX + NUL */

/* Tlopen / Tlcreate flags (Linux generic O_* values, as the client sends them) */
#define P9_DOTL_ACCMODE   00000003
#define P9_DOTL_CREATE    00000100
#define P9_DOTL_EXCL      00000200
#define P9_DOTL_TRUNC     00001000
#define P9_DOTL_APPEND    00002000
#define P9_DOTL_NONBLOCK  00004000
#define P9_DOTL_DSYNC     00010000
#define P9_DOTL_DIRECTORY 00200000
#define P9_DOTL_SYNC      04000000
/* The Tlopen flags a fid remembers for a checkpoint: those p9_open_flags
 * honours, minus the one-shot ones (create, exclusive, truncate). */
#define P9_LFLAGS_KEPT (P9_DOTL_ACCMODE | P9_DOTL_APPEND | P9_DOTL_DSYNC | P9_DOTL_DIRECTORY | P9_DOTL_SYNC)

struct p9_fid {
	uint32_t fid;
	int fd;             /* O_PATH, O_NOFOLLOW; -1 if stale */
	int ofd;            /* opened by Tlopen/Tlcreate, or -1 */
	uint32_t lflags;    /* 9P open flags of ofd (checkpoint reopens with them) */
	bool opened;        /* Tlopen/Tlcreate succeeded (ofd may be -1 if stale) */
	bool isdir;
	bool xattr;         /* from Txattrwalk: reads as empty */
	/*
	 * Restored from a checkpoint, but its file is gone (or now unreachable
	 * inside the share): every use fails with ESTALE until it is clunked.
	 */
	bool stale;
	uint32_t uid;       /* n_uname of the attach (kept, never applied to files) */
	char *path;         /* relative to the root, "" for the root */
	struct p9_fid *next;
};

struct p9_server {
	int rootfd;         /* O_PATH of the share */
	int procfd;         /* /proc/self/fd, or -1 */
	bool readonly;
	bool have_openat2;
	bool stale_hit;     /* this request named a stale fid (EBADF -> ESTALE) */
	uint32_t msize;
	dev_t rootdev;
	ino_t rootino;
	struct p9_fid *fids[FID_BUCKETS];
	char wnames[P9_MAXWELEM][NAMEMAX];   /* Twalk names (P9_MAXWELEM x NAMEMAX) */
	_Alignas(8) char dirbuf[32768];   /* getdents64 scratch */
};

/* The slot holding fid (or where it would go): *slot is NULL if unused. */
struct p9_fid **p9_fid_slot(struct p9_server *s, uint32_t fid);
/* New fid; takes ownership of fd (may be -1) and path.  NULL with errno
 * EBADF (fid in use or NOFID), EMFILE (no p9_fid_room) or ENOMEM. */
struct p9_fid *p9_fid_new(struct p9_server *s, uint32_t fid, int fd, char *path, bool isdir, uint32_t uid);
/* How many more fids this process may hold (all servers together): its
 * fd limit less a reserve for the rest of hyve, two fds a fid. */
unsigned p9_fid_room(void);
/* Clunk: 0, or -EBADF if fid is not in use. */
int p9_fid_clunk(struct p9_server *s, uint32_t fid);
void p9_fids_clear(struct p9_server *s);
/* Open rel ("a/b", "" = dirfd) beneath dirfd following no symlink: fd or -errno. */
int p9_openat(struct p9_server *s, int dirfd, const char *rel, int flags, mode_t mode);
/* A fresh open file description for the object behind f->fd: fd or -errno.
 * Never blocks, and opens only regular files and directories (anything
 * else: ENXIO, a symlink: ELOOP). */
int p9_reopen(struct p9_server *s, struct p9_fid *f, int flags);
/* fstat of fd itself (an O_PATH fd of a symlink included): 0 or -errno. */
int p9_fstat(int fd, struct stat *st);
/* p9_openat, then p9_fstat of what it opened: fd or -errno. */
int p9_open_stat(struct p9_server *s, int dirfd, const char *rel, int flags, struct stat *st);
/* For an fd just opened O_NONBLOCK | O_NOCTTY: keep it only if it is a
 * regular file or a directory (else -ENXIO, fd closed), O_NONBLOCK off. */
int p9_open_finish(int fd);
/* dir "/" name as a share path (name alone if dir is ""), or NULL if it
 * would not fit PATH_MAX (or no memory). */
char *p9_path_join(const char *dir, const char *name);
/* Rename entry on of directory ofd, at share path oldp (NULL: too long to
 * name, so no fid lies below it), to nn in directory fid nd: fids at or
 * below oldp follow.  0 or -errno (ENAMETOOLONG if a fid path would not
 * fit PATH_MAX: then nothing is renamed). */
int p9_rename(struct p9_server *s, int ofd, const char *on, const char *oldp, struct p9_fid *nd, const char *nn);
/* Host open(2) flags for 9P Tlopen flags. */
int p9_open_flags(uint32_t lflags);
/* True if host open flags o would modify the file. */
bool p9_open_modifies(int o);

#endif
