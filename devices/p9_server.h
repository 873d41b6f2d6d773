/*
 * A 9P2000.L file server over one host directory, independent of any
 * transport: p9_handle() takes one request message and writes one reply.
 *
 * The share is a jail.  Every fid holds an O_PATH fd; names are resolved
 * one component at a time relative to a directory fd with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)
 * (or an O_NOFOLLOW component walk where openat2 is missing), so neither
 * "..", absolute symlinks nor symlinks leading outside can reach past the
 * root.  Symlinks are never followed by the server: the client resolves
 * them itself after Treadlink.  Names containing '/' or equal to "." or
 * ".." are refused where they would create or name an entry.
 *
 * The guest gets no more of the host than a share of plain files: hyve
 * often runs as root, and a guest's files are hyve's.  So (security model
 * "none", as QEMU calls it):
 *  - files, directories, FIFOs and sockets made by the guest belong to
 *    hyve's user and group: the gid of Tlcreate/Tmkdir/Tmknod/Tsymlink is
 *    ignored, and Tsetattr may set uid/gid only to hyve's own or to what
 *    the file has already (EPERM otherwise, nothing changed);
 *  - modes carry rwx and sticky only: setuid and setgid are dropped
 *    (silently) by Tlcreate, Tmkdir, Tmknod and Tsetattr;
 *  - Tmknod makes no device nodes (EPERM);
 *  - only regular files and directories are ever opened (Tlopen, Tlcreate
 *    of an existing name, a checkpoint restore): a FIFO, socket or device
 *    node is ENXIO (a restored fid of one is stale), and no open waits, so
 *    a request never blocks the device (nor its quiesce for a checkpoint);
 *  - fids are limited by the process fd limit, less a reserve for the rest
 *    of hyve (EMFILE).
 *
 * Every field of a request is bounds-checked against the message; a
 * malformed request gets Rlerror(EPROTO/EINVAL), never an out-of-bounds
 * access.  Not thread-safe: one caller at a time per server.
 */
#ifndef HYVE_P9_SERVER_H
#define HYVE_P9_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define P9_HDR_SIZE   7              /* size[4] type[1] tag[2] */
#define P9_MIN_MSIZE  4096
#define P9_MAX_MSIZE  (1024 * 1024)  /* largest msize we negotiate */
#define P9_NOTAG      0xffff
#define P9_NOFID      0xffffffffu

struct p9_server;
struct snap_buf;
struct snap_rd;

/* Open the share (a directory).  NULL with errno set on failure. */
struct p9_server *p9_server_new(const char *root, bool readonly);
void p9_server_free(struct p9_server *s);
/* Drop every fid and go back to the pre-Tversion state (device reset). */
void p9_server_reset(struct p9_server *s);
/* msize in force (P9_MAX_MSIZE before Tversion). */
uint32_t p9_server_msize(const struct p9_server *s);

/*
 * Handle one request of reqlen bytes; write the reply (at most repcap
 * bytes, repcap >= 11 so an Rlerror always fits) to rep.  Returns the
 * reply length (always > 0 when repcap >= 11).
 */
size_t p9_handle(struct p9_server *s, const uint8_t *req, size_t reqlen, uint8_t *rep, size_t repcap);

/*
 * Checkpoint (devices/p9_state.c, core/snapshot.h).  The state is the
 * negotiated msize and, per fid, its path relative to the share, its kind
 * (file, directory, xattr list), its open flags and file position: contents,
 * never fds.  Call only between requests.
 *
 * p9_server_save: 0, or -1 if the buffer could not grow.
 * p9_server_load: replaces every fid of s (a server over the same share,
 * possibly in another process).  Paths are resolved again beneath the share
 * with the same jailed resolution as Twalk and files reopened with the
 * saved flags (never truncating or creating); a fid whose file is gone
 * becomes stale (ESTALE on use) instead of failing the load.  A truncated
 * or corrupt state, including any path that is not a plain relative path
 * ("..", absolute, empty components), gives -1 with a reason in err, and
 * leaves s reset (no fids).
 */
int p9_server_save(struct p9_server *s, struct snap_buf *out);
int p9_server_load(struct p9_server *s, struct snap_rd *in, char *err, size_t errlen);

#endif
