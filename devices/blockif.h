/*
 * blockif: asynchronous block backend for storage models (virtio-blk now,
 * NVMe/AHCI later) over a disk image (raw or qcow2: devices/blk_format.h)
 * in a file or a host block device.
 *
 * Requests carry iovecs that point straight into guest memory (zero copy).
 * Reads, writes and flushes go through io_uring (liburing) whose
 * completion eventfd is watched by the main event loop; if io_uring cannot
 * be set up -- or blockif_opts.force_threads / HYVE_BLOCKIF_THREADS=1 asks
 * for it -- a small pthread pool does preadv/pwritev/fdatasync instead.
 * Discard and write-zeroes always run on the pool (fallocate / BLKDISCARD
 * / BLKZEROOUT).  A qcow2 image runs every request on the pool, through
 * the format layer (devices/qcow2.c says why).
 *
 * Completion callbacks run on the main thread (io_uring), on a pool thread,
 * or on a thread inside blockif_drain(): they must take the model's own
 * lock, and blockif_drain() must not be called with that lock held.  After
 * the callback returns, blockif no longer touches the request.
 */
#ifndef HYVE_BLOCKIF_H
#define HYVE_BLOCKIF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct blockif_ctxt;

struct blockif_req {
	/* Filled by the caller. */
	struct iovec *br_iov;        /* data (read/write); blockif may advance it in place */
	int br_iovcnt;
	off_t br_offset;             /* byte offset on the disk */
	size_t br_resid;             /* discard/write-zeroes: byte count (read/write: set by blockif) */
	void (*br_callback)(struct blockif_req *br, int err);   /* err: 0 or an errno */
	void *br_param;
	/* Private to blockif. */
	int br_op;
	int br_err;
	bool br_unmap;
	struct blockif_req *br_next;
};

struct blockif_opts {
	bool ro;              /* open read-only */
	bool nocache;         /* O_DIRECT */
	bool sync;            /* O_SYNC ("direct" in bhyve's options) */
	bool force_threads;   /* don't use io_uring */
	uint32_t sectsz;      /* logical sector size, 0: from the device / 512 */
	uint32_t psectsz;     /* physical sector size, 0: from the device / st_blksize */
	unsigned depth;       /* requests in flight at most (io_uring ring size) */
	const char *name;     /* for log lines */
	const char *format;   /* "raw" or "qcow2"; NULL: probe (a probed qcow2 may not name a backing file) */
	uint64_t l2cache;     /* qcow2 L2 cache bytes, 0: default */
	/* Called after a batch of completion callbacks (e.g. to interrupt once). */
	void (*batch_done)(void *arg);
	void *batch_arg;
};

/* NULL with a reason ("PATH: No such file or directory") in err. */
struct blockif_ctxt *blockif_open(const char *path, const struct blockif_opts *opts, char *err,
                                  size_t errlen);
/* Drains, then frees everything.  Call it on the main thread (the event
 * loop must not be inside this blockif's completion callback). */
void blockif_close(struct blockif_ctxt *bc);

off_t blockif_size(const struct blockif_ctxt *bc);          /* bytes, whole logical sectors */
uint32_t blockif_sectsz(const struct blockif_ctxt *bc);
uint32_t blockif_psectsz(const struct blockif_ctxt *bc);
bool blockif_is_ro(const struct blockif_ctxt *bc);
bool blockif_candelete(const struct blockif_ctxt *bc);      /* discard deallocates */
bool blockif_is_blockdev(const struct blockif_ctxt *bc);
const char *blockif_backend(const struct blockif_ctxt *bc); /* "io_uring" or "threads" */
const char *blockif_format(const struct blockif_ctxt *bc);  /* "raw" or "qcow2" */

/* Submit; 0 (the callback will run) or an errno (it will not). */
int blockif_read(struct blockif_ctxt *bc, struct blockif_req *br);
int blockif_write(struct blockif_ctxt *bc, struct blockif_req *br);
int blockif_flush(struct blockif_ctxt *bc, struct blockif_req *br);    /* fdatasync */
int blockif_discard(struct blockif_ctxt *bc, struct blockif_req *br);  /* [br_offset, +br_resid) */
int blockif_write_zeroes(struct blockif_ctxt *bc, struct blockif_req *br, bool unmap);

/*
 * Batch submissions: between plug and unplug, io_uring requests are queued
 * but not handed to the kernel; unplug submits them all with one system
 * call (and lets the host block layer merge and notify its device once).
 * Nests; a no-op for the thread pool.  Call both from the same thread.
 */
void blockif_plug(struct blockif_ctxt *bc);
void blockif_unplug(struct blockif_ctxt *bc);

/* Wait until every submitted request has completed (callbacks included). */
void blockif_drain(struct blockif_ctxt *bc);
unsigned blockif_inflight(struct blockif_ctxt *bc);

#endif
