/*
 * blockif: io_uring (or a pthread pool) under the storage models.
 * See blockif.h for the contract.  A raw image goes to the file (or
 * device) directly; a qcow2 image through devices/blk_format.h, on the
 * pool only.
 *
 * io_uring side: submissions are serialized by sq_mtx (vCPU threads submit
 * from their kick handlers), completions by cq_mtx (the main loop's eventfd
 * callback, or blockif_drain()).  Callbacks are invoked after cq_mtx is
 * dropped.  Short reads/writes are resubmitted for the remainder.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../core/log.h"
#include "../core/mevent.h"
#include "../core/sandbox.h"
#include "../core/snapshot.h"
#include "blk_format.h"
#include "blockif.h"

enum { BOP_READ = 1, BOP_WRITE, BOP_FLUSH, BOP_DISCARD, BOP_WZERO };

#define POOL_THREADS_FALLBACK 4   /* when io_uring does all the work: 1 */
#define ZERO_BUF_SIZE (1u << 20)

struct blockif_ctxt {
	int fd;
	struct blk_image *img;   /* a qcow2 image (NULL: raw, straight to fd) */
	char name[64];
	bool ro, isblk, candelete;
	off_t size;
	uint32_t sectsz, psectsz;

	bool uring;
	struct io_uring ring;
	int efd;
	struct mevent *mev;
	pthread_mutex_t sq_mtx, cq_mtx;
	bool submit_warned;
	unsigned plugged;   /* blockif_plug depth (sq_mtx): queue SQEs, submit at unplug */

	int nthreads;
	pthread_t threads[POOL_THREADS_FALLBACK];
	pthread_mutex_t q_mtx;
	pthread_cond_t q_cond;
	struct blockif_req *q_head, **q_tail;
	bool closing;

	pthread_mutex_t if_mtx;
	pthread_cond_t if_cond;
	unsigned inflight;

	void (*batch_done)(void *);
	void *batch_arg;

	struct blockif_ctxt *next_open;   /* all open disks (the "disks" section) */
	char snap_new[32];                /* ID of the snapshot the last save took, "": none */
};

static void *zero_buf;
static pthread_once_t zero_once = PTHREAD_ONCE_INIT;

static void zero_buf_alloc(void)
{
	if (posix_memalign(&zero_buf, 4096, ZERO_BUF_SIZE) == 0)
		memset(zero_buf, 0, ZERO_BUF_SIZE);
	else
		zero_buf = NULL;
}

/* ---- accounting and completion ---- */

/*
 * Requests leave the in-flight count only after their callbacks AND the
 * batch_done hook ran, so a finished blockif_drain() means the model has
 * seen every completion.
 */
static void inflight_sub(struct blockif_ctxt *bc, unsigned n)
{
	pthread_mutex_lock(&bc->if_mtx);
	bc->inflight -= n;
	if (bc->inflight == 0)
		pthread_cond_broadcast(&bc->if_cond);
	pthread_mutex_unlock(&bc->if_mtx);
}

static size_t iov_total(const struct iovec *iov, int n)
{
	size_t t = 0;
	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

/* Consume n bytes of a read/write request (after a short transfer). */
static void br_advance(struct blockif_req *br, size_t n)
{
	br->br_offset += (off_t)n;
	br->br_resid -= n;
	while (n > 0 && br->br_iovcnt > 0) {
		if (n >= br->br_iov[0].iov_len) {
			n -= br->br_iov[0].iov_len;
			br->br_iov++;
			br->br_iovcnt--;
		} else {
			br->br_iov[0].iov_base = (uint8_t *)br->br_iov[0].iov_base + n;
			br->br_iov[0].iov_len -= n;
			n = 0;
		}
	}
}

/* ---- synchronous execution (pool threads) ---- */

static int write_zeroes_by_hand(struct blockif_ctxt *bc, off_t off, size_t len)
{
	pthread_once(&zero_once, zero_buf_alloc);
	if (!zero_buf)
		return ENOMEM;
	while (len > 0) {
		size_t c = len < ZERO_BUF_SIZE ? len : ZERO_BUF_SIZE;
		ssize_t r = pwrite(bc->fd, zero_buf, c, off);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return EIO;
		off += r;
		len -= (size_t)r;
	}
	return 0;
}

/* Through the format layer (qcow2): synchronous, the whole request at once. */
static int do_format(struct blockif_ctxt *bc, struct blockif_req *br)
{
	int rc;
	switch (br->br_op) {
	case BOP_READ:
	case BOP_WRITE:
		rc = br->br_op == BOP_READ
		         ? blk_image_readv(bc->img, br->br_iov, br->br_iovcnt, (uint64_t)br->br_offset)
		         : blk_image_writev(bc->img, br->br_iov, br->br_iovcnt, (uint64_t)br->br_offset);
		if (!rc)
			br_advance(br, br->br_resid);
		return rc;
	case BOP_FLUSH:
		return blk_image_flush(bc->img);
	case BOP_DISCARD:
		return blk_image_discard(bc->img, (uint64_t)br->br_offset, br->br_resid);
	case BOP_WZERO:
		return blk_image_write_zeroes(bc->img, (uint64_t)br->br_offset, br->br_resid, br->br_unmap);
	default:
		return EINVAL;
	}
}

static int do_sync(struct blockif_ctxt *bc, struct blockif_req *br)
{
	uint64_t range[2] = { (uint64_t)br->br_offset, br->br_resid };
	if (bc->img)
		return do_format(bc, br);
	switch (br->br_op) {
	case BOP_READ:
	case BOP_WRITE:
		while (br->br_resid > 0) {
			ssize_t r = br->br_op == BOP_READ
			                ? preadv(bc->fd, br->br_iov, br->br_iovcnt, br->br_offset)
			                : pwritev(bc->fd, br->br_iov, br->br_iovcnt, br->br_offset);
			if (r < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (r < 0)
				return errno;
			if (r == 0)
				return EIO;   /* the image shrank under us */
			br_advance(br, (size_t)r);
		}
		return 0;
	case BOP_FLUSH:
		return fdatasync(bc->fd) ? errno : 0;
	case BOP_DISCARD:
		if (bc->isblk)
			return ioctl(bc->fd, BLKDISCARD, range) ? errno : 0;
		return fallocate(bc->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, br->br_offset,
		                 (off_t)br->br_resid) ? errno : 0;
	case BOP_WZERO:
		if (bc->isblk)
			return ioctl(bc->fd, BLKZEROOUT, range) ? errno : 0;
		if (br->br_unmap && bc->candelete &&
		    fallocate(bc->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, br->br_offset,
		              (off_t)br->br_resid) == 0)
			return 0;
		if (fallocate(bc->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, br->br_offset,
		              (off_t)br->br_resid) == 0)
			return 0;
		if (errno != EOPNOTSUPP && errno != EINVAL)
			return errno;
		return write_zeroes_by_hand(bc, br->br_offset, br->br_resid);
	default:
		return EINVAL;
	}
}

static void *pool_thread(void *arg)
{
	struct blockif_ctxt *bc = arg;
	for (;;) {
		pthread_mutex_lock(&bc->q_mtx);
		while (!bc->q_head && !bc->closing)
			pthread_cond_wait(&bc->q_cond, &bc->q_mtx);
		struct blockif_req *br = bc->q_head;
		if (!br) {
			pthread_mutex_unlock(&bc->q_mtx);
			return NULL;
		}
		bc->q_head = br->br_next;
		if (!bc->q_head)
			bc->q_tail = &bc->q_head;
		pthread_mutex_unlock(&bc->q_mtx);
		sandbox_thread_role(SANDBOX_ROLE_DEVICE);   /* once the sandbox is on (core/sandbox.c) */
		br->br_callback(br, do_sync(bc, br));   /* br may be reused from here on */
		if (bc->batch_done)
			bc->batch_done(bc->batch_arg);
		inflight_sub(bc, 1);
	}
}

static void pool_queue(struct blockif_ctxt *bc, struct blockif_req *br)
{
	br->br_next = NULL;
	pthread_mutex_lock(&bc->q_mtx);
	*bc->q_tail = br;
	bc->q_tail = &br->br_next;
	pthread_cond_signal(&bc->q_cond);
	pthread_mutex_unlock(&bc->q_mtx);
}

static int pool_start(struct blockif_ctxt *bc, int n)
{
	sigset_t all, old;
	sigfillset(&all);
	/* Pool threads take no signals (they would interrupt I/O for nothing). */
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = 0;
	for (int i = 0; i < n; i++) {
		if (pthread_create(&bc->threads[i], NULL, pool_thread, bc)) {
			rc = -1;
			break;
		}
		char tname[16];
		snprintf(tname, sizeof(tname), "blk-%d", i);
		pthread_setname_np(bc->threads[i], tname);
		bc->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* ---- io_uring ---- */

/* Call with sq_mtx held: push queued SQEs to the kernel. */
static void uring_submit_locked(struct blockif_ctxt *bc)
{
	int rc;
	do
		rc = io_uring_submit(&bc->ring);
	while (rc == -EINTR);
	if (rc < 0 && !bc->submit_warned) {
		/* The SQEs stay queued; the next reap or drain pushes them again. */
		bc->submit_warned = true;
		log_warn("%s: io_uring_submit: %s", bc->name, strerror(-rc));
	}
}

static int uring_queue(struct blockif_ctxt *bc, struct blockif_req *br)
{
	pthread_mutex_lock(&bc->sq_mtx);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&bc->ring);
	if (!sqe) {
		uring_submit_locked(bc);
		sqe = io_uring_get_sqe(&bc->ring);
	}
	if (!sqe) {
		pthread_mutex_unlock(&bc->sq_mtx);
		return -1;
	}
	switch (br->br_op) {
	case BOP_READ:
		io_uring_prep_readv(sqe, bc->fd, br->br_iov, (unsigned)br->br_iovcnt, (uint64_t)br->br_offset);
		break;
	case BOP_WRITE:
		io_uring_prep_writev(sqe, bc->fd, br->br_iov, (unsigned)br->br_iovcnt, (uint64_t)br->br_offset);
		break;
	default:
		io_uring_prep_fsync(sqe, bc->fd, IORING_FSYNC_DATASYNC);
		break;
	}
	io_uring_sqe_set_data(sqe, br);
	if (!bc->plugged)
		uring_submit_locked(bc);
	pthread_mutex_unlock(&bc->sq_mtx);
	return 0;
}

void blockif_plug(struct blockif_ctxt *bc)
{
	if (!bc->uring)
		return;
	pthread_mutex_lock(&bc->sq_mtx);
	bc->plugged++;
	pthread_mutex_unlock(&bc->sq_mtx);
}

void blockif_unplug(struct blockif_ctxt *bc)
{
	if (!bc->uring)
		return;
	pthread_mutex_lock(&bc->sq_mtx);
	if (bc->plugged && --bc->plugged == 0 && io_uring_sq_ready(&bc->ring))
		uring_submit_locked(bc);
	pthread_mutex_unlock(&bc->sq_mtx);
}

/* What a CQE means for its request: an errno/0, or -1 to resubmit. */
static int uring_result(struct blockif_req *br, int res)
{
	if (res == -EINTR || res == -EAGAIN)
		return -1;
	if (res < 0)
		return -res;
	if (br->br_op == BOP_FLUSH)
		return 0;
	if (res == 0)
		return br->br_resid ? EIO : 0;
	if ((size_t)res > br->br_resid)
		return EIO;
	br_advance(br, (size_t)res);
	return br->br_resid ? -1 : 0;
}

static void uring_reap(struct blockif_ctxt *bc)
{
	struct blockif_req *done = NULL, **dtail = &done, *again = NULL, **atail = &again;
	pthread_mutex_lock(&bc->cq_mtx);
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&bc->ring, head, cqe) {
		struct blockif_req *br = io_uring_cqe_get_data(cqe);
		int r = uring_result(br, cqe->res);
		br->br_next = NULL;
		if (r < 0) {
			*atail = br;
			atail = &br->br_next;
		} else {
			br->br_err = r;
			*dtail = br;
			dtail = &br->br_next;
		}
		n++;
	}
	io_uring_cq_advance(&bc->ring, n);
	pthread_mutex_unlock(&bc->cq_mtx);

	for (struct blockif_req *br = again, *next; br; br = next) {
		next = br->br_next;
		if (uring_queue(bc, br))
			pool_queue(bc, br);
	}
	if (n == 0) {
		/* Nothing completed: make sure nothing sits unsubmitted. */
		pthread_mutex_lock(&bc->sq_mtx);
		if (io_uring_sq_ready(&bc->ring))
			uring_submit_locked(bc);
		pthread_mutex_unlock(&bc->sq_mtx);
	}
	unsigned ndone = 0;
	for (struct blockif_req *br = done, *next; br; br = next) {
		next = br->br_next;
		ndone++;
		br->br_callback(br, br->br_err);   /* br may be reused from here on */
	}
	if (ndone) {
		if (bc->batch_done)
			bc->batch_done(bc->batch_arg);
		inflight_sub(bc, ndone);
	}
}

static void uring_event(int fd, void *arg)
{
	uint64_t cnt;
	ssize_t r = read(fd, &cnt, sizeof(cnt));
	(void)r;
	uring_reap(arg);
}

static int uring_setup(struct blockif_ctxt *bc, unsigned depth, char *why, size_t whylen)
{
	unsigned entries = 8;
	while (entries < depth && entries < 4096)
		entries <<= 1;
	/*
	 * Made disabled, so that restrictions can go in before any use: the
	 * ring then runs readv, writev and fsync only.  io_uring operations do
	 * not pass through seccomp: without this a thread that can submit
	 * could open, connect or send through the ring.  Older kernels (before
	 * 5.10) lack it and get an unrestricted ring.
	 */
	bool restricted = true;
	int rc = io_uring_queue_init(entries, &bc->ring, IORING_SETUP_R_DISABLED);
	if (rc == -EINVAL) {
		restricted = false;
		rc = io_uring_queue_init(entries, &bc->ring, 0);
	}
	if (rc < 0) {
		snprintf(why, whylen, "io_uring_queue_init: %s", strerror(-rc));
		return -1;
	}
	struct io_uring_probe *p = io_uring_get_probe_ring(&bc->ring);
	bool ops = p && io_uring_opcode_supported(p, IORING_OP_READV) &&
	           io_uring_opcode_supported(p, IORING_OP_WRITEV) && io_uring_opcode_supported(p, IORING_OP_FSYNC);
	if (p)
		io_uring_free_probe(p);
	if (!ops) {
		snprintf(why, whylen, "io_uring lacks readv/writev/fsync");
		goto fail;
	}
	bc->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (bc->efd < 0 || (rc = io_uring_register_eventfd(&bc->ring, bc->efd)) < 0) {
		snprintf(why, whylen, "io_uring eventfd: %s", strerror(bc->efd < 0 ? errno : -rc));
		goto fail;
	}
	if (restricted) {
		struct io_uring_restriction res[3] = {
			{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_READV },
			{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_WRITEV },
			{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_FSYNC },
		};
		/* The raw call: Debian's liburing 2.3 does not export its wrappers. */
		if (syscall(__NR_io_uring_register, bc->ring.ring_fd, IORING_REGISTER_RESTRICTIONS, res, 3) < 0 ||
		    syscall(__NR_io_uring_register, bc->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0) {
			snprintf(why, whylen, "io_uring restrictions: %s", strerror(errno));
			goto fail;
		}
	}
	bc->mev = mevent_add(bc->efd, EVF_READ, uring_event, bc);
	if (!bc->mev) {
		snprintf(why, whylen, "cannot watch the completion eventfd");
		goto fail;
	}
	bc->uring = true;
	return 0;
fail:
	if (bc->efd >= 0)
		close(bc->efd);
	bc->efd = -1;
	io_uring_queue_exit(&bc->ring);
	return -1;
}

/* ---- opening ---- */

static bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

static bool blk_can_discard(dev_t rdev)
{
	char p[128];
	const char *fmt[] = { "/sys/dev/block/%u:%u/queue/discard_max_bytes",
	                      "/sys/dev/block/%u:%u/../queue/discard_max_bytes" };   /* partitions */
	for (int i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), fmt[i], major(rdev), minor(rdev));
		FILE *f = fopen(p, "r");
		if (!f)
			continue;
		unsigned long long v = 0;
		int ok = fscanf(f, "%llu", &v);
		fclose(f);
		return ok == 1 && v > 0;
	}
	return false;
}

static bool file_can_punch(int fd, off_t size)
{
	/* Punching a hole past EOF changes nothing but tells us if the fs can. */
	off_t off = ((size >> 20) + 2) << 20;
	return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, 4096) == 0;
}

/* ---- the "disks" section: a disk's state at a checkpoint or a migration ----
 *
 * Raw disks record nothing (docs/snapshot.md: their contents are the
 * user's to copy).  A writable qcow2 disk, with the VM paused and every
 * request drained:
 *   checkpoint  takes an internal snapshot named after the checkpoint file
 *               (devices/qcow2_snapshot.c); restoring the checkpoint
 *               reverts the disk to it, so RAM and disk come back from the
 *               same instant.  Once the file is in place, older snapshots
 *               of the same name (an earlier checkpoint to that file) are
 *               deleted; if the checkpoint failed, the new one is.
 *   migration   flushes; the destination, which opened the image (shared
 *               storage) before the source's last writes, re-reads its
 *               metadata before the guest runs.
 */
enum { DISK_NOTHING = 0, DISK_SNAPSHOT = 1, DISK_RELOAD = 2 };

static pthread_mutex_t disks_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct blockif_ctxt *disks;

static int disks_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	(void)arg;
	const char *ckpt = snapshot_checkpoint_path();
	int rc = 0;
	uint32_t n = 0;
	pthread_mutex_lock(&disks_mtx);
	for (struct blockif_ctxt *bc = disks; bc; bc = bc->next_open)
		n++;
	sb_u32(out, n);
	for (struct blockif_ctxt *bc = disks; bc && !rc; bc = bc->next_open) {
		sb_str(out, bc->name);
		bc->snap_new[0] = 0;
		if (!bc->img || bc->ro) {
			sb_u8(out, DISK_NOTHING);
		} else if (!ckpt) {
			if ((rc = blk_image_flush(bc->img)))
				snprintf(err, errlen, "%s: flush: %s", bc->name, strerror(rc));
			sb_u8(out, DISK_RELOAD);
		} else if ((rc = blk_image_snapshot_create(bc->img, ckpt, bc->snap_new, sizeof(bc->snap_new)))) {
			snprintf(err, errlen, "%s: %s: cannot take a snapshot of the disk: %s", bc->name, bc->img->path,
			         rc == EOVERFLOW ? "refcount_bits is too small (1)" : strerror(rc));
		} else {
			sb_u8(out, DISK_SNAPSHOT);
			sb_str(out, bc->snap_new);
			sb_str(out, ckpt);
			log_info("%s: %s: snapshot %s '%s' taken", bc->name, bc->img->path, bc->snap_new, ckpt);
		}
	}
	pthread_mutex_unlock(&disks_mtx);
	return rc ? -1 : 0;
}

static void disks_saved(void *arg, bool kept)
{
	(void)arg;
	const char *what = kept ? "replaced" : "left by a failed checkpoint";
	pthread_mutex_lock(&disks_mtx);
	for (struct blockif_ctxt *bc = disks; bc; bc = bc->next_open) {
		if (!bc->snap_new[0])
			continue;
		struct blk_snapinfo *si = NULL, *mine = NULL;
		unsigned n = 0;
		blk_image_snapshot_list(bc->img, &si, &n);
		for (unsigned i = 0; i < n; i++)
			if (!strcmp(si[i].id, bc->snap_new))
				mine = &si[i];
		for (unsigned i = 0; mine && i < n; i++) {
			if (kept ? &si[i] == mine || strcmp(si[i].name, mine->name) : &si[i] != mine)
				continue;
			int rc = blk_image_snapshot_delete(bc->img, si[i].id);
			if (rc)
				log_warn("%s: %s: cannot delete snapshot %s (%s): %s", bc->name, bc->img->path, si[i].id,
				         what, strerror(rc));
			else
				log_info("%s: %s: snapshot %s deleted (%s)", bc->name, bc->img->path, si[i].id, what);
		}
		blk_snapinfo_free(si, n);
		bc->snap_new[0] = 0;
	}
	pthread_mutex_unlock(&disks_mtx);
}

static int disks_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)arg;
	if (version != 1) {
		snprintf(err, errlen, "unknown version %u", version);
		return -1;
	}
	uint32_t n = sr_u32(in);
	int rc = 0;
	pthread_mutex_lock(&disks_mtx);
	for (uint32_t i = 0; i < n && !rc && sr_ok(in); i++) {
		char name[64], id[32], sname[4096];
		struct blockif_ctxt *bc = NULL;
		bool ok = sr_str(in, name, sizeof(name), NULL);
		uint8_t kind = sr_u8(in);
		if (kind == DISK_SNAPSHOT)
			ok = sr_str(in, id, sizeof(id), NULL) && sr_str(in, sname, sizeof(sname), NULL) && ok;
		if (!ok || kind > DISK_RELOAD) {
			snprintf(err, errlen, "malformed disk record %u", i);
			rc = -1;
			break;
		}
		for (bc = disks; bc && strcmp(bc->name, name); bc = bc->next_open)
			;
		if (!bc) {
			if (kind == DISK_NOTHING)
				continue;
			snprintf(err, errlen, "disk %s: not in this configuration", name);
			rc = -1;
		} else if (kind == DISK_SNAPSHOT) {
			if (!bc->img) {
				snprintf(err, errlen, "%s: the checkpoint holds this disk as a qcow2 snapshot ('%s'), "
				         "the configured image is raw", name, sname);
				rc = -1;
			} else if (blk_image_snapshot_revert(bc->img, id, sname, err, errlen)) {
				rc = -1;
			} else {
				log_info("%s: %s: reverted to snapshot %s '%s'", name, bc->img->path, id, sname);
			}
		} else if (kind == DISK_RELOAD && bc->img && blk_image_reload(bc->img, err, errlen)) {
			rc = -1;
		}
	}
	pthread_mutex_unlock(&disks_mtx);
	return rc;
}

static const struct snapshot_ops disks_ops = {
	.version = 1,
	.save = disks_save,
	.load = disks_load,
	.saved = disks_saved,
	.optional = true,   /* checkpoints from before it: disks as they are */
};

static void disks_add(struct blockif_ctxt *bc)
{
	pthread_mutex_lock(&disks_mtx);
	if (!disks && !snapshot_find("disks"))
		snapshot_register("disks", &disks_ops, NULL);
	struct blockif_ctxt **p = &disks;   /* in open order: the same order on restore */
	while (*p)
		p = &(*p)->next_open;
	*p = bc;
	pthread_mutex_unlock(&disks_mtx);
}

static void disks_remove(struct blockif_ctxt *bc)
{
	pthread_mutex_lock(&disks_mtx);
	for (struct blockif_ctxt **p = &disks; *p; p = &(*p)->next_open)
		if (*p == bc) {
			*p = bc->next_open;
			break;
		}
	pthread_mutex_unlock(&disks_mtx);
}

struct blockif_ctxt *blockif_open(const char *path, const struct blockif_opts *o, char *err, size_t errlen)
{
	struct blockif_ctxt *bc = calloc(1, sizeof(*bc));
	if (!bc) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	bc->fd = bc->efd = -1;
	snprintf(bc->name, sizeof(bc->name), "%s", o->name ? o->name : "blockif");
	pthread_mutex_init(&bc->sq_mtx, NULL);
	pthread_mutex_init(&bc->cq_mtx, NULL);
	pthread_mutex_init(&bc->q_mtx, NULL);
	pthread_cond_init(&bc->q_cond, NULL);
	pthread_mutex_init(&bc->if_mtx, NULL);
	pthread_cond_init(&bc->if_cond, NULL);
	bc->q_tail = &bc->q_head;
	bc->batch_done = o->batch_done;
	bc->batch_arg = o->batch_arg;

	int extra = O_CLOEXEC | (o->nocache ? O_DIRECT : 0) | (o->sync ? O_SYNC : 0);
	bool ro = o->ro;
	bc->fd = open(path, (ro ? O_RDONLY : O_RDWR) | extra);
	if (bc->fd < 0 && !ro && (errno == EACCES || errno == EROFS || errno == EPERM)) {
		int e = errno;
		bc->fd = open(path, O_RDONLY | extra);
		if (bc->fd >= 0) {
			ro = true;
			log_warn("%s: %s: %s; using it read-only", bc->name, path, strerror(e));
		}
	}
	if (bc->fd < 0) {
		if (errno == EINVAL && o->nocache)
			snprintf(err, errlen, "%s: cannot open with O_DIRECT (nocache): %s", path, strerror(errno));
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	struct stat st;
	if (fstat(bc->fd, &st)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	const char *fmt = o->format;
	bool probed = !fmt;
	if (fmt && strcmp(fmt, "raw") && strcmp(fmt, "qcow2")) {
		snprintf(err, errlen, "%s: unknown image format '%s' (raw or qcow2)", path, fmt);
		goto fail;
	}
	if (!fmt && !(fmt = blk_format_probe(bc->fd))) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (strcmp(fmt, "qcow2") && o->l2cache) {
		snprintf(err, errlen, "%s: l2cache= applies to qcow2 images only (this one is raw)", path);
		goto fail;
	}
	if (!strcmp(fmt, "qcow2")) {
		if (o->nocache) {
			snprintf(err, errlen, "%s: nocache (O_DIRECT) is not supported with qcow2 images", path);
			goto fail;
		}
		struct blk_open_opts bo = { .ro = ro, .probed = probed, .l2cache = o->l2cache, .writethrough = o->sync };
		bc->img = blk_image_open_fd(bc->fd, false, path, "qcow2", &bo, err, errlen);
		if (!bc->img)
			goto fail;
	}
	uint32_t dev_sect = 512, dev_psect;
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		int lss = 512;
		unsigned int pss = 0;
		if (ioctl(bc->fd, BLKGETSIZE64, &sz)) {
			snprintf(err, errlen, "%s: BLKGETSIZE64: %s", path, strerror(errno));
			goto fail;
		}
		if (ioctl(bc->fd, BLKSSZGET, &lss) || lss < 512)
			lss = 512;
		if (ioctl(bc->fd, BLKPBSZGET, &pss) || pss < (unsigned)lss)
			pss = (unsigned)lss;
		bc->isblk = true;
		bc->size = (off_t)sz;
		dev_sect = (uint32_t)lss;
		dev_psect = pss;
	} else if (S_ISREG(st.st_mode)) {
		bc->size = st.st_size;
		dev_psect = is_pow2((uint32_t)st.st_blksize) && st.st_blksize <= 65536 && st.st_blksize >= 512
		                ? (uint32_t)st.st_blksize : 512;
	} else {
		snprintf(err, errlen, "%s: not a regular file or a block device", path);
		goto fail;
	}
	bc->sectsz = o->sectsz ? o->sectsz : dev_sect;
	bc->psectsz = o->psectsz ? o->psectsz : (dev_psect > bc->sectsz ? dev_psect : bc->sectsz);
	if (!is_pow2(bc->sectsz) || bc->sectsz < 512 || bc->sectsz > 65536 || !is_pow2(bc->psectsz) ||
	    bc->psectsz < bc->sectsz || bc->psectsz > 65536) {
		snprintf(err, errlen, "%s: bad sector sizes %u/%u (powers of two, 512 <= logical <= physical <= 65536)",
		         path, bc->sectsz, bc->psectsz);
		goto fail;
	}
	if (bc->isblk && bc->sectsz % dev_sect) {
		snprintf(err, errlen, "%s: sector size %u is not a multiple of the device's %u", path, bc->sectsz,
		         dev_sect);
		goto fail;
	}
	if (bc->img)
		bc->size = (off_t)blk_image_size(bc->img);   /* the virtual disk's */
	bc->size -= bc->size % bc->sectsz;
	bc->ro = ro;
	if (!ro && bc->img)
		bc->candelete = true;   /* deallocation or the zero flag */
	else if (!ro)
		bc->candelete = bc->isblk ? blk_can_discard(st.st_rdev) : file_can_punch(bc->fd, st.st_size);

	disks_add(bc);
	const char *env = getenv("HYVE_BLOCKIF_THREADS");
	bool force = o->force_threads || (env && *env && strcmp(env, "0") != 0) || bc->img;
	char why[128] = "forced by configuration";
	if (bc->img)
		snprintf(why, sizeof(why), "a %s image runs on the format layer", blk_image_format(bc->img));
	if (!force && uring_setup(bc, o->depth ? o->depth : 128, why, sizeof(why)) == 0) {
		if (pool_start(bc, 1))
			goto nothreads;
	} else {
		log_debug("%s: %s: I/O threads instead of io_uring (%s)", bc->name, path, why);
		if (pool_start(bc, POOL_THREADS_FALLBACK))
			goto nothreads;
	}
	return bc;
nothreads:
	snprintf(err, errlen, "%s: cannot start I/O threads", path);
	blockif_close(bc);
	return NULL;
fail:
	blk_image_close(bc->img);
	if (bc->fd >= 0)
		close(bc->fd);
	free(bc);
	return NULL;
}

void blockif_close(struct blockif_ctxt *bc)
{
	if (!bc)
		return;
	disks_remove(bc);
	blockif_drain(bc);
	pthread_mutex_lock(&bc->q_mtx);
	bc->closing = true;
	pthread_cond_broadcast(&bc->q_cond);
	pthread_mutex_unlock(&bc->q_mtx);
	for (int i = 0; i < bc->nthreads; i++)
		pthread_join(bc->threads[i], NULL);
	if (bc->uring) {
		mevent_delete(bc->mev);
		io_uring_queue_exit(&bc->ring);
		close(bc->efd);
	}
	blk_image_close(bc->img);
	close(bc->fd);
	free(bc);
}

/* ---- requests ---- */

static int submit(struct blockif_ctxt *bc, struct blockif_req *br, int op)
{
	if (bc->ro && op != BOP_READ && op != BOP_FLUSH)
		return EROFS;
	br->br_op = op;
	br->br_next = NULL;
	if (op == BOP_READ || op == BOP_WRITE)
		br->br_resid = iov_total(br->br_iov, br->br_iovcnt);
	pthread_mutex_lock(&bc->if_mtx);
	bc->inflight++;
	pthread_mutex_unlock(&bc->if_mtx);
	bool uring_op = op == BOP_FLUSH || ((op == BOP_READ || op == BOP_WRITE) && br->br_resid > 0);
	if (bc->uring && uring_op && uring_queue(bc, br) == 0)
		return 0;
	pool_queue(bc, br);
	return 0;
}

int blockif_read(struct blockif_ctxt *bc, struct blockif_req *br) { return submit(bc, br, BOP_READ); }
int blockif_write(struct blockif_ctxt *bc, struct blockif_req *br) { return submit(bc, br, BOP_WRITE); }
int blockif_flush(struct blockif_ctxt *bc, struct blockif_req *br) { return submit(bc, br, BOP_FLUSH); }

int blockif_discard(struct blockif_ctxt *bc, struct blockif_req *br)
{
	if (!bc->candelete)
		return EOPNOTSUPP;
	return submit(bc, br, BOP_DISCARD);
}

int blockif_write_zeroes(struct blockif_ctxt *bc, struct blockif_req *br, bool unmap)
{
	br->br_unmap = unmap;
	return submit(bc, br, BOP_WZERO);
}

void blockif_drain(struct blockif_ctxt *bc)
{
	pthread_mutex_lock(&bc->if_mtx);
	while (bc->inflight > 0) {
		pthread_mutex_unlock(&bc->if_mtx);
		/* The main loop may be the caller, so reap here too. */
		if (bc->uring)
			uring_reap(bc);
		pthread_mutex_lock(&bc->if_mtx);
		if (bc->inflight == 0)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&bc->if_cond, &bc->if_mtx, &ts);
	}
	pthread_mutex_unlock(&bc->if_mtx);
}

unsigned blockif_inflight(struct blockif_ctxt *bc)
{
	pthread_mutex_lock(&bc->if_mtx);
	unsigned n = bc->inflight;
	pthread_mutex_unlock(&bc->if_mtx);
	return n;
}

off_t blockif_size(const struct blockif_ctxt *bc) { return bc->size; }
uint32_t blockif_sectsz(const struct blockif_ctxt *bc) { return bc->sectsz; }
uint32_t blockif_psectsz(const struct blockif_ctxt *bc) { return bc->psectsz; }
bool blockif_is_ro(const struct blockif_ctxt *bc) { return bc->ro; }
bool blockif_candelete(const struct blockif_ctxt *bc) { return bc->candelete; }
bool blockif_is_blockdev(const struct blockif_ctxt *bc) { return bc->isblk; }
const char *blockif_backend(const struct blockif_ctxt *bc) { return bc->uring ? "io_uring" : "threads"; }
const char *blockif_format(const struct blockif_ctxt *bc) { return bc->img ? blk_image_format(bc->img) : "raw"; }
