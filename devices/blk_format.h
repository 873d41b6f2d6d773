/*
 * blk_format: disk image formats under blockif (and under every disk model
 * that sits on blockif: virtio-blk now, NVMe/AHCI later).
 *
 *   raw    the file's bytes are the disk's.  blockif keeps its own io_uring
 *          fast path for a raw disk; the "raw" ops here serve raw backing
 *          files (and tests).
 *   qcow2  v2 and v3 (devices/qcow2*.c): read/write, backing chains,
 *          zero clusters, discard, compressed clusters (read).
 *
 * Format selection: a declared format ("format=raw|qcow2") is used as is;
 * without one the first bytes decide (blk_format_probe).  A probed qcow2
 * image must not name a backing file: a guest can write a qcow2 header to
 * its raw disk, and hyve must never follow it to host files.  The open
 * fails and tells the user to say format=qcow2.  Backing files are opened
 * read-only, with the format their parent's backing_fmt names (probed if
 * it names none, under the same rule).
 *
 * Every call returns 0 or a positive errno; I/O calls are synchronous and
 * may be called from several threads at once (each format locks what it
 * must).  Errors at open are one line in err: "PATH: what is wrong".
 */
#ifndef HYVE_BLK_FORMAT_H
#define HYVE_BLK_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct blk_image;

/* Images already open in a chain (loop detection). */
struct blk_chain {
	dev_t dev;
	ino_t ino;
	const struct blk_chain *up;
};

#define BLK_MAX_CHAIN 1024   /* backing files below one image, at most */

struct blk_open_opts {
	bool ro;
	bool probed;         /* the format came from the magic, not from format= */
	uint64_t l2cache;    /* qcow2: L2 table cache in bytes; 0: the default */
	bool writethrough;   /* every write durable when it completes (no deferred metadata) */
	/* Internal to the chain walk. */
	unsigned depth;
	const struct blk_chain *chain;
};

/* An internal snapshot (qcow2's snapshot table). */
struct blk_snapinfo {
	char id[32];
	char *name;
	uint64_t date_sec;
};

struct blk_format_ops {
	const char *name;
	int (*open)(struct blk_image *img, const struct blk_open_opts *o, char *err, size_t errlen);
	void (*close)(struct blk_image *img);
	int (*readv)(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off);
	int (*writev)(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off);
	int (*flush)(struct blk_image *img);
	/* Afterwards the range reads as zeros (both). */
	int (*discard)(struct blk_image *img, uint64_t off, uint64_t len);
	int (*write_zeroes)(struct blk_image *img, uint64_t off, uint64_t len, bool unmap);
	/*
	 * Optional (NULL: the format has none; the wrappers return ENOTSUP).
	 * Internal snapshots, called with no request in flight: create one
	 * holding the disk as it is now (its ID back in id), revert the disk
	 * to one (its ID and name must both match), delete one, list them.
	 * reload: re-read the metadata after another process wrote the image
	 * (the source of a migration on shared storage).
	 */
	int (*snapshot_create)(struct blk_image *img, const char *name, char *id, size_t idlen);
	int (*snapshot_revert)(struct blk_image *img, const char *id, const char *name, char *err, size_t errlen);
	int (*snapshot_delete)(struct blk_image *img, const char *id);
	int (*snapshot_list)(struct blk_image *img, struct blk_snapinfo **out, unsigned *n);
	int (*reload)(struct blk_image *img, char *err, size_t errlen);
};

struct blk_image {
	const struct blk_format_ops *ops;
	int fd;
	bool own_fd;         /* close(fd) at blk_image_close */
	bool ro;
	uint64_t size;       /* virtual disk size, bytes */
	char *path;
	dev_t dev;           /* of the file (loop detection) */
	ino_t ino;
	void *priv;          /* the format's state */
};

/* "qcow2" when the first bytes are qcow's magic, else "raw"; NULL with
 * errno if the file cannot be read. */
const char *blk_format_probe(int fd);
const struct blk_format_ops *blk_format_find(const char *name);   /* NULL: unknown */

/*
 * Open PATH (read-only if o->ro) with FORMAT, or probe when FORMAT is NULL.
 * blk_image_open_fd uses an already open descriptor (closed at
 * blk_image_close only if own_fd).
 */
struct blk_image *blk_image_open(const char *path, const char *format, const struct blk_open_opts *o,
                                 char *err, size_t errlen);
struct blk_image *blk_image_open_fd(int fd, bool own_fd, const char *path, const char *format,
                                    const struct blk_open_opts *o, char *err, size_t errlen);
void blk_image_close(struct blk_image *img);

static inline uint64_t blk_image_size(const struct blk_image *img) { return img->size; }
static inline const char *blk_image_format(const struct blk_image *img) { return img->ops->name; }
int blk_image_readv(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off);
int blk_image_writev(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off);
int blk_image_read(struct blk_image *img, void *buf, size_t len, uint64_t off);
int blk_image_write(struct blk_image *img, const void *buf, size_t len, uint64_t off);
int blk_image_flush(struct blk_image *img);
int blk_image_discard(struct blk_image *img, uint64_t off, uint64_t len);
int blk_image_write_zeroes(struct blk_image *img, uint64_t off, uint64_t len, bool unmap);

/* Internal snapshots and reload (see struct blk_format_ops): 0 or an errno;
 * ENOTSUP for a format without them.  err (revert, reload): one line. */
int blk_image_snapshot_create(struct blk_image *img, const char *name, char *id, size_t idlen);
int blk_image_snapshot_revert(struct blk_image *img, const char *id, const char *name, char *err, size_t errlen);
int blk_image_snapshot_delete(struct blk_image *img, const char *id);
int blk_image_snapshot_list(struct blk_image *img, struct blk_snapinfo **out, unsigned *n);
void blk_snapinfo_free(struct blk_snapinfo *s, unsigned n);
int blk_image_reload(struct blk_image *img, char *err, size_t errlen);

/* Helpers shared by the formats. */
int blk_pread_full(int fd, void *buf, size_t len, uint64_t off);          /* EIO at EOF */
int blk_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* Reads iov (modified in place); bytes past EOF read as zeros. */
int blk_preadv_zfill(int fd, struct iovec *iov, int iovcnt, uint64_t off);
int blk_pwritev_full(int fd, struct iovec *iov, int iovcnt, uint64_t off);

extern const struct blk_format_ops blk_format_raw, blk_format_qcow2;

#endif
