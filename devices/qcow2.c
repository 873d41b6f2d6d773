/*
 * qcow2 image format, versions 2 and 3 (QEMU's docs/interop/qcow2.txt),
 * under blk_format.h.  Metadata caches, refcounts and allocation live in
 * qcow2_meta.c.
 *
 * Supported: reads and writes with cluster sizes 512 B - 2 MiB; refcount
 * widths 1-64 bits; an L2 table cache of l2cache= bytes; copy-on-write of
 * clusters whose refcount is above 1 (internal snapshots) or that live in
 * a backing file; zero clusters (v3 flag); discard and write-zeroes
 * (v3: zero flag or deallocation; v2: deallocation, or written zeros over
 * a backing file); compressed clusters (read; deflate or zstd; a write
 * moves the cluster to a new uncompressed one); backing chains of any
 * depth (qcow2 or raw, read-only, backing_fmt honoured, loops refused).
 * Refused at open with one line: encryption, external data files,
 * extended L2 entries, unknown incompatible features, and (for writing)
 * an image left dirty by lazy refcounts or marked corrupt.  Unknown
 * autoclear bits (e.g. persistent bitmaps) are cleared when the image is
 * opened for writing, as QEMU does, so QEMU knows they are stale.
 *
 * Crash safety -- the order of writes to the file.  A kill -9 (or a host
 * crash, given the fdatasyncs) at any point leaves an image that
 * `qemu-img check` finds consistent, at worst with leaked clusters:
 *
 *   1. Allocation: the new cluster's refcount is written (0 -> 1) first.
 *      A cluster that needs a new refcount block gets one that is written
 *      whole and synced before the refcount table points to it; a full
 *      refcount table is replaced by a larger copy written elsewhere and
 *      synced before the header points to it (qcow2_meta.c).
 *   2. The data is written to the new cluster -- whole: the guest's bytes
 *      merged with what the cluster read as before (backing file, zeros,
 *      the old compressed or shared cluster).  A new L2 table is written
 *      whole too.
 *   3. fdatasync: refcounts and data are on disk before anything points
 *      at them.
 *   4. The L2 entry (or, for a new L2 table, the L1 entry) is written.
 *   5. If a cluster lost a reference (copy-on-write of a shared or a
 *      compressed cluster, a replaced shared L2 table, discard): fdatasync,
 *      so the entry that pointed to it is gone on disk, then its refcount
 *      is decremented.
 *   Writes into a cluster that is already ours (refcount 1, COPIED flag)
 *   touch no metadata.  A crash between 1 and 4 leaks clusters (refcount 1,
 *   unreferenced); between 4 and 5 leaks the old ones; never a reference
 *   to a cluster with refcount 0, never a cluster with two owners.  Lazy
 *   refcounts are never used, so hyve never sets the dirty bit.
 *
 * Deferred links: an allocating write into an L2 table the image owns,
 * releasing nothing (the common case: a fresh cluster of a new image or
 * an overlay), does 1-2, then puts its entries into the cached table only;
 * the table is marked dirty and stays in the cache.  q2_commit does 3-4
 * for all of them at once -- fdatasync, then each dirty table written --
 * at the guest's flush (then fdatasync again), at 65536 of them, when every
 * cache slot is dirty, before
 * any other metadata write (l2_commit), before a snapshot, reload or
 * close; at once on a "direct" (O_SYNC) disk, which promises every write
 * durable.  The order above holds (data and refcounts reach the disk before
 * the entry); what a crash loses are the writes since the last commit,
 * whose clusters leak -- a volatile write cache, whose durability point is
 * the guest's flush, as with QEMU's cache=writeback.  That turns one
 * fdatasync per allocating write into one per flush.  (A commit on a timer
 * would have to sync too -- the entry must not reach the disk before its
 * refcount -- and stalls the guest's writes behind the page cache's
 * writeback, which QEMU does not do either.)
 *
 * Threading: blockif runs qcow2 requests on its thread pool, each one
 * synchronously, under the image lock -- metadata, reads, and the data of
 * writes that merge with old content.  A write whose every piece is a
 * cluster it alone may touch (a new one written whole, or one the image
 * owns written in place) drops the lock for its data I/O (write_unlocked):
 * its guest clusters go on a busy list first, and every other write or
 * discard waits until none of its own clusters is busy before it looks at
 * the tables.  So no two requests allocate the same guest cluster, and no
 * cluster is freed (and handed out again) under a write.  Reads of
 * allocated clusters drop the lock the same way, their clusters busy, so
 * no discard frees what they read.  Reads do not wait for busy clusters: a
 * read overlapping an in-place write of the same bytes may see part of
 * each, as overlapping requests on a disk may (the guest orders them).
 * A flush's fdatasync runs without the lock.  Backing images have their
 * own locks, always taken top-down.
 *
 * Errors: a corrupt header or table found at open is one line in err; a
 * bad entry met at run time (an offset that is not cluster-aligned or
 * lies beyond the end of the file, a compressed cluster that does not
 * decompress) fails that request with EIO and is logged once.
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
#include <zlib.h>
#include <zstd.h>

#include "../core/log.h"
#include "qcow2_internal.h"

#define DEFAULT_L2_CACHE_MAX (32u << 20)
/* Deferred L2 entries are written by the guest's next flush, or when
 * PENDING_MAX have gathered (or the cache is full of dirty tables). */
#define PENDING_MAX (1u << 16)

/* ---- iovec cursor ---- */

struct cur {
	const struct iovec *iov;
	int cnt, i;
	size_t o;
};

static void cur_next(struct cur *c)
{
	while (c->i < c->cnt && c->o >= c->iov[c->i].iov_len) {
		c->i++;
		c->o = 0;
	}
}

/* The next n bytes as at most cap iovecs in out (advances). */
static int cur_slice_into(struct cur *c, size_t n, struct iovec *out, int cap)
{
	int k = 0;
	while (n > 0) {
		cur_next(c);
		if (c->i >= c->cnt || k >= cap)
			break;
		size_t l = c->iov[c->i].iov_len - c->o;
		if (l > n)
			l = n;
		out[k].iov_base = (uint8_t *)c->iov[c->i].iov_base + c->o;
		out[k].iov_len = l;
		k++;
		c->o += l;
		n -= l;
	}
	return k;
}

/* The next n bytes as iovecs in q->sv (advances). */
static int cur_slice(struct qcow2 *q, struct cur *c, size_t n)
{
	return cur_slice_into(c, n, q->sv, q->svcap);
}

/* Copy n bytes between the cursor and buf (to_iov: buf -> iov), or zero
 * them in the iov (buf NULL). */
static void cur_copy(struct cur *c, uint8_t *buf, size_t n, bool to_iov)
{
	while (n > 0) {
		cur_next(c);
		if (c->i >= c->cnt)
			return;
		size_t l = c->iov[c->i].iov_len - c->o;
		if (l > n)
			l = n;
		uint8_t *p = (uint8_t *)c->iov[c->i].iov_base + c->o;
		if (!buf)
			memset(p, 0, l);
		else if (to_iov)
			memcpy(p, buf, l);
		else
			memcpy(buf, p, l);
		if (buf)
			buf += l;
		c->o += l;
		n -= l;
	}
}

static int sv_reserve(struct qcow2 *q, int cnt)
{
	if (cnt <= q->svcap)
		return 0;
	struct iovec *v = realloc(q->sv, sizeof(*v) * (size_t)cnt);
	if (!v)
		return ENOMEM;
	q->sv = v;
	q->svcap = cnt;
	return 0;
}

/* ---- lookups ---- */

/* The L2 entry of guest cluster gc (0: unallocated). */
static int l2_entry(struct qcow2 *q, uint64_t gc, uint64_t *e)
{
	uint64_t l1i = gc >> q->l2bits;
	*e = 0;
	if (l1i >= q->l1_size)
		return q2_corrupt(q, "guest cluster %llu is past the L1 table", (unsigned long long)gc);
	uint64_t l2off = q->l1[l1i] & QCOW2_OFFSET_MASK;
	if (!l2off)
		return 0;
	int err;
	uint8_t *t = q2_cache_get(q, &q->l2c, l2off, &err);
	if (!t)
		return err;
	*e = q2_be64(t + 8 * (gc & ((1ULL << q->l2bits) - 1)));
	return 0;
}

/* Host offset of a standard (or zero-allocated) entry, checked. */
static int entry_host(struct qcow2 *q, uint64_t e, uint64_t *host)
{
	*host = e & QCOW2_OFFSET_MASK;
	if (*host & (q->csize - 1))
		return q2_corrupt(q, "L2 entry 0x%llx: offset not cluster-aligned", (unsigned long long)e);
	if (*host && *host >= q->file_size)
		return q2_corrupt(q, "L2 entry 0x%llx: cluster beyond the end of the file", (unsigned long long)e);
	return 0;
}

static void compressed_range(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len)
{
	uint64_t coff = e & q->coff_mask;
	uint64_t nsec = ((e >> q->csize_shift) & q->csize_mask) + 1;
	*off = coff;
	*len = nsec * 512 - (coff & 511);
}

/* Decompress the cluster of compressed entry e into q->cbuf. */
static int decompress(struct qcow2 *q, uint64_t e)
{
	if (q->cbuf_entry == e)
		return 0;
	uint64_t coff, clen;
	compressed_range(q, e, &coff, &clen);
	if (!q->cbuf && !(q->cbuf = malloc(q->csize)))
		return ENOMEM;
	if (!q->zin && !(q->zin = malloc(2 * q->csize)))
		return ENOMEM;
	if (coff >= q->file_size)
		return q2_corrupt(q, "compressed cluster at 0x%llx beyond the end of the file", (unsigned long long)coff);
	if (clen > q->file_size - coff)   /* the last one may end early */
		clen = q->file_size - coff;
	struct iovec v = { q->zin, (size_t)clen };
	int rc = blk_preadv_zfill(q->fd, &v, 1, coff);
	if (rc)
		return rc;
	bool ok = false;
	q->cbuf_entry = 0;
	if (q->compression == 0) {
		z_stream s;
		memset(&s, 0, sizeof(s));
		if (inflateInit2(&s, -15) != Z_OK)
			return ENOMEM;
		s.next_in = q->zin;
		s.avail_in = (uInt)clen;
		s.next_out = q->cbuf;
		s.avail_out = (uInt)q->csize;
		int r = inflate(&s, Z_FINISH);
		ok = (r == Z_STREAM_END || r == Z_BUF_ERROR) && s.avail_out == 0;
		inflateEnd(&s);
	} else {
		if (!q->zstd && !(q->zstd = ZSTD_createDCtx()))
			return ENOMEM;
		ZSTD_DCtx_reset(q->zstd, ZSTD_reset_session_only);
		ZSTD_inBuffer in = { q->zin, (size_t)clen, 0 };
		ZSTD_outBuffer out = { q->cbuf, q->csize, 0 };
		while (out.pos < out.size) {
			size_t before_in = in.pos, before_out = out.pos;
			size_t r = ZSTD_decompressStream(q->zstd, &out, &in);
			if (ZSTD_isError(r) || (in.pos == before_in && out.pos == before_out))
				break;
		}
		ok = out.pos == out.size;
	}
	if (!ok)
		return q2_corrupt(q, "compressed cluster at 0x%llx does not decompress", (unsigned long long)coff);
	q->cbuf_entry = e;
	return 0;
}

/* Read [off, off + n) of the backing file into the cursor; zeros past its end. */
static int backing_read(struct qcow2 *q, struct cur *c, uint64_t off, size_t n)
{
	size_t m = 0;
	if (q->backing && off < q->backing->size)
		m = q->backing->size - off < n ? (size_t)(q->backing->size - off) : n;
	if (m) {
		int k = cur_slice(q, c, m);
		int rc = blk_image_readv(q->backing, q->sv, k, off);
		if (rc)
			return rc;
	}
	cur_copy(c, NULL, n - m, true);
	return 0;
}

/* What guest cluster gc (entry e) reads as, into buf (one cluster). */
static int cluster_content(struct qcow2 *q, uint64_t gc, uint64_t e, uint8_t *buf)
{
	if (e & QCOW2_OFLAG_COMPRESSED) {
		int rc = decompress(q, e);
		if (!rc)
			memcpy(buf, q->cbuf, q->csize);
		return rc;
	}
	uint64_t host;
	int rc = entry_host(q, e, &host);
	if (rc)
		return rc;
	struct iovec v = { buf, q->csize };
	if (e & QCOW2_OFLAG_ZERO) {
		memset(buf, 0, q->csize);
		return 0;
	}
	if (host)
		return blk_preadv_zfill(q->fd, &v, 1, host);
	struct cur c = { &v, 1, 0, 0 };
	return backing_read(q, &c, gc << q->cbits, q->csize);
}

/* ---- read ---- */

/* Wait (the lock released meanwhile) until no unlocked write covers any
 * guest cluster of [gc0, gc0 + n). */
static void busy_wait(struct qcow2 *q, uint64_t gc0, uint64_t n)
{
	for (unsigned i = 0; i < q->nbusy;) {
		if (q->busy[i].gc0 < gc0 + n && gc0 < q->busy[i].gc0 + q->busy[i].n) {
			pthread_cond_wait(&q->busy_cv, &q->lock);
			i = 0;
			continue;
		}
		i++;
	}
}

/* Mark guest clusters [gc0, gc0 + n) busy (the lock held); the entry's ID. */
static uint64_t busy_add(struct qcow2 *q, uint64_t gc0, uint64_t n)
{
	uint64_t id = ++q->busy_ids;
	q->busy[q->nbusy].gc0 = gc0;
	q->busy[q->nbusy].n = n;
	q->busy[q->nbusy++].id = id;
	return id;
}

static void busy_del(struct qcow2 *q, uint64_t id)
{
	for (unsigned i = 0; i < q->nbusy; i++)   /* entries move as others leave: find ours */
		if (q->busy[i].id == id) {
			q->busy[i] = q->busy[--q->nbusy];
			break;
		}
	pthread_cond_broadcast(&q->busy_cv);
}

static bool busy_room(const struct qcow2 *q)
{
	return q->nbusy < sizeof(q->busy) / sizeof(q->busy[0]);
}

/*
 * Read n bytes at host offset host, guest clusters [gc0, gc0 + ncl), with
 * the lock dropped: the clusters are busy meanwhile, so no write or
 * discard of them can free them (nothing else frees clusters while the
 * guest runs); several reads proceed in parallel.
 */
static int read_unlocked(struct qcow2 *q, struct cur *c, uint64_t gc0, uint64_t ncl, uint64_t host, size_t n)
{
	struct iovec stackv[16], *v = c->cnt < 16 ? stackv : malloc(sizeof(*v) * (size_t)(c->cnt + 1));
	if (!v)
		return ENOMEM;
	int k = cur_slice_into(c, n, v, c->cnt < 16 ? 16 : c->cnt + 1);
	uint64_t id = busy_add(q, gc0, ncl);
	pthread_mutex_unlock(&q->lock);
	int rc = blk_preadv_zfill(q->fd, v, k, host);
	pthread_mutex_lock(&q->lock);
	busy_del(q, id);
	if (v != stackv)
		free(v);
	return rc;
}

static int q2_readv_locked(struct qcow2 *q, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len)
{
	struct cur c = { iov, iovcnt, 0, 0 };
	while (len > 0) {
		uint64_t gc = off >> q->cbits, in = off & (q->csize - 1), e, host;
		uint64_t n = q->csize - in < len ? q->csize - in : len;
		int rc = l2_entry(q, gc, &e);
		if (rc)
			return rc;
		if (e & QCOW2_OFLAG_COMPRESSED) {
			if ((rc = decompress(q, e)))
				return rc;
			cur_copy(&c, q->cbuf + in, n, true);
		} else if ((rc = entry_host(q, e, &host))) {
			return rc;
		} else if (e & QCOW2_OFLAG_ZERO) {
			if (q->version < 3)
				return q2_corrupt(q, "zero cluster flag in a version 2 image");
			cur_copy(&c, NULL, n, true);
		} else if (!host) {
			if ((rc = backing_read(q, &c, off, n)))
				return rc;
		} else {
			/* Coalesce clusters that follow each other on the host too. */
			while (n < len) {
				uint64_t e2, h2;
				if (l2_entry(q, gc + 1, &e2) || (e2 & (QCOW2_OFLAG_COMPRESSED | QCOW2_OFLAG_ZERO)))
					break;
				if (entry_host(q, e2, &h2) || h2 != host + (gc + 1 - (off >> q->cbits)) * q->csize)
					break;
				n += q->csize < len - n ? q->csize : len - n;
				gc++;
			}
			if (busy_room(q)) {
				if ((rc = read_unlocked(q, &c, off >> q->cbits, gc - (off >> q->cbits) + 1, host + in, n)))
					return rc;
			} else {
				int k = cur_slice(q, &c, n);
				if ((rc = blk_preadv_zfill(q->fd, q->sv, k, host + in)))
					return rc;
			}
		}
		off += n;
		len -= n;
	}
	return 0;
}

static size_t iov_total(const struct iovec *iov, int n)
{
	size_t t = 0;
	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

static int q2_readv(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct qcow2 *q = img->priv;
	pthread_mutex_lock(&q->lock);
	int rc = sv_reserve(q, iovcnt);
	if (!rc)
		rc = q2_readv_locked(q, iov, iovcnt, off, iov_total(iov, iovcnt));
	pthread_mutex_unlock(&q->lock);
	return rc;
}

/* ---- write ---- */

enum { W_INPLACE, W_ZERO_INPLACE, W_ALLOC };

struct wpiece {
	uint64_t gc;
	uint32_t in, n;   /* bytes [in, in + n) of the cluster */
	uint64_t old;     /* L2 entry before */
	uint64_t host;    /* where the data goes */
	int kind;
};

/* L2 entry idx of a table becomes val. */
struct l2update {
	unsigned idx;
	uint64_t val;
};

int q2_commit(struct qcow2 *q)
{
	if (!q->pending)
		return 0;
	int rc = q2_sync(q);
	for (unsigned i = 0; !rc && i < q->l2c.n; i++) {
		struct q2_table *t = &q->l2c.t[i];
		if (t->dirty && !(rc = q2_pwrite(q, t->data, q->csize, t->off)))
			t->dirty = false;
	}
	if (!rc)
		q->pending = 0;
	return rc;
}

/*
 * Apply L2 changes to the table of L1 index l1i: in place if the table is
 * ours, else into new_l2 (allocated by the caller; filled with a copy of
 * the old table, or zeros), linked into L1 after a sync.  Old clusters in
 * rel[] (and a replaced table) lose a reference after another sync.
 * Steps 3-5 of the ordering above; the caller did 1-2 (need_sync: it
 * allocated or wrote data that the entries will expose).
 */
static int l2_commit(struct qcow2 *q, uint64_t l1i, const struct l2update *u, unsigned nu, uint64_t new_l2,
                     const struct relist *rel, unsigned nrel, bool need_sync)
{
	uint64_t l1e = q->l1[l1i], l2off = l1e & QCOW2_OFFSET_MASK;
	if (!new_l2 && !nu && !nrel)
		return 0;
	int rc = q2_commit(q), err;   /* no table is written ahead of deferred links */
	if (rc)
		return rc;
	if (new_l2) {
		uint8_t *buf = malloc(q->csize);
		if (!buf)
			return ENOMEM;
		if (l2off) {
			uint8_t *t = q2_cache_get(q, &q->l2c, l2off, &err);
			if (!t) {
				free(buf);
				return err;
			}
			memcpy(buf, t, q->csize);
		} else {
			memset(buf, 0, q->csize);
		}
		for (unsigned i = 0; i < nu; i++)
			q2_put64(buf + 8 * u[i].idx, u[i].val);
		rc = q2_pwrite(q, buf, q->csize, new_l2);
		if (!rc)
			rc = q2_sync(q);
		uint8_t ent[8];
		q2_put64(ent, new_l2 | QCOW2_OFLAG_COPIED);
		if (!rc)
			rc = q2_pwrite(q, ent, 8, q->l1_off + 8 * l1i);
		if (!rc) {
			q->l1[l1i] = new_l2 | QCOW2_OFLAG_COPIED;
			q2_cache_put(q, &q->l2c, new_l2, buf);
		}
		free(buf);
	} else if (nu) {
		if (need_sync && (rc = q2_sync(q)))
			return rc;
		uint8_t *t = q2_cache_get(q, &q->l2c, l2off, &err);
		if (!t)
			return err;
		unsigned lo = u[0].idx, hi = u[0].idx;
		for (unsigned i = 0; i < nu; i++) {
			q2_put64(t + 8 * u[i].idx, u[i].val);
			lo = u[i].idx < lo ? u[i].idx : lo;
			hi = u[i].idx > hi ? u[i].idx : hi;
		}
		rc = q2_pwrite(q, t + 8 * lo, 8 * (hi - lo + 1), l2off + 8 * lo);
		if (rc)
			q2_cache_drop(&q->l2c, l2off);   /* the file is the truth */
	}
	if (rc)
		return rc;
	if (nrel == 0 && !(new_l2 && l2off))
		return 0;
	if ((rc = q2_sync(q)))
		return rc;
	if (new_l2 && l2off)
		rc = q2_unref(q, l2off, q->csize);
	for (unsigned i = 0; i < nrel; i++) {
		int r = q2_unref(q, rel[i].off, rel[i].len);
		rc = rc ? rc : r;
	}
	return rc;
}

int q2_entry_refs(struct qcow2 *q, uint64_t e, struct relist *r)
{
	r->off = r->len = 0;
	if (e & QCOW2_OFLAG_COMPRESSED) {
		compressed_range(q, e, &r->off, &r->len);
		r->off &= ~511ULL;
		r->len = (r->len + 511) & ~511ULL;
		return 0;
	}
	uint64_t host;
	int rc = entry_host(q, e, &host);
	if (!rc && host) {
		r->off = host;
		r->len = q->csize;
	}
	return rc;
}

/*
 * Step 2 without the lock, for a write whose every piece goes into a
 * cluster this request alone may touch: a new one (refcount 1, linked
 * nowhere, written whole) or one the image owns (COPIED), written in
 * place.  The busy list keeps other writes and discards of these guest
 * clusters out until the request is done (so an owned cluster cannot be
 * freed and handed out under it); nothing else frees clusters while the
 * guest runs.  Several such writes copy guest data into the page cache in
 * parallel, as QEMU's thread pool does.
 */
static int write_unlocked(struct qcow2 *q, struct cur *c, const struct wpiece *p, uint64_t np)
{
	struct iovec *v = malloc(sizeof(*v) * (size_t)(c->cnt + 1));
	if (!v)
		return ENOMEM;
	uint64_t id = busy_add(q, p[0].gc, np);
	pthread_mutex_unlock(&q->lock);
	int rc = 0;
	uint64_t end = 0;
	for (uint64_t i = 0; i < np && !rc;) {
		uint64_t j = i + 1, bytes = p[i].n;
		while (j < np && p[j].host == p[i].host + (j - i) * q->csize && j - i < 256) {
			bytes += p[j].n;
			j++;
		}
		int k = cur_slice_into(c, bytes, v, c->cnt + 1);
		if (qcow2_io_hook)
			qcow2_io_hook("data");
		rc = blk_pwritev_full(q->fd, v, k, p[i].host + p[i].in);
		end = p[i].host + p[i].in + bytes > end ? p[i].host + p[i].in + bytes : end;
		i = j;
	}
	pthread_mutex_lock(&q->lock);
	busy_del(q, id);
	if (end > q->file_size)
		q->file_size = end;
	free(v);
	return rc;
}

/* Write [off, off + len), inside one L2 table's range, from the cursor. */
static int write_chunk(struct qcow2 *q, struct cur *c, uint64_t off, uint64_t len)
{
	uint64_t l1i = (off >> q->cbits) >> q->l2bits;
	uint64_t gc0 = off >> q->cbits, np = ((off + len - 1) >> q->cbits) - gc0 + 1;
	if (l1i >= q->l1_size)
		return q2_corrupt(q, "write past the L1 table");
	uint64_t l1e = q->l1[l1i], l2off = l1e & QCOW2_OFFSET_MASK;
	if (l2off & (q->csize - 1))
		return q2_corrupt(q, "L1 entry 0x%llx: offset not cluster-aligned", (unsigned long long)l1e);
	struct wpiece *p = calloc(np, sizeof(*p));
	struct l2update *u = calloc(np, sizeof(*u));
	struct relist *rel = calloc(np, sizeof(*rel));
	int rc = ENOMEM;
	unsigned nu = 0, nrel = 0;
	uint64_t new_l2 = 0;
	if (!p || !u || !rel)
		goto out;
	busy_wait(q, gc0, np);
	l1e = q->l1[l1i];
	l2off = l1e & QCOW2_OFFSET_MASK;

	/* Classify. */
	uint8_t *t = NULL;
	if (l2off && !(t = q2_cache_get(q, &q->l2c, l2off, &rc)))
		goto out;
	bool need_update = false;
	uint64_t o = off, left = len;
	for (uint64_t i = 0; i < np; i++) {
		struct wpiece *w = &p[i];
		w->gc = gc0 + i;
		w->in = (uint32_t)(o & (q->csize - 1));
		w->n = (uint32_t)(q->csize - w->in < left ? q->csize - w->in : left);
		o += w->n;
		left -= w->n;
		w->old = t ? q2_be64(t + 8 * (w->gc & ((1ULL << q->l2bits) - 1))) : 0;
		w->kind = W_ALLOC;
		if (!(w->old & QCOW2_OFLAG_COMPRESSED)) {
			if ((rc = entry_host(q, w->old, &w->host)))
				goto out;
			if ((w->old & QCOW2_OFLAG_ZERO) && q->version < 3) {
				rc = q2_corrupt(q, "zero cluster flag in a version 2 image");
				goto out;
			}
			if (w->host && (w->old & QCOW2_OFLAG_COPIED))
				w->kind = (w->old & QCOW2_OFLAG_ZERO) ? W_ZERO_INPLACE : W_INPLACE;
		}
		if (w->kind != W_INPLACE)
			need_update = true;
	}

	/* 1. Allocate (refcounts written). */
	if (need_update && !(l2off && (l1e & QCOW2_OFLAG_COPIED)) && (rc = q2_alloc(q, &new_l2)))
		goto out;
	uint64_t run_off = 0, run_left = 0, nalloc = 0;
	for (uint64_t i = 0; i < np; i++)
		nalloc += p[i].kind == W_ALLOC;
	for (uint64_t i = 0; i < np; i++) {
		if (p[i].kind == W_ALLOC) {
			if (p[i].host || (p[i].old & QCOW2_OFLAG_COMPRESSED))
				if ((rc = q2_entry_refs(q, p[i].old, &rel[nrel++])))
					goto out;
			/* In runs: contiguous clusters, one refcount write, one data write. */
			if (!run_left && (rc = q2_alloc_n(q, nalloc, &run_off, &run_left)))
				goto out;
			p[i].host = run_off;
			run_off += q->csize;
			run_left--;
			nalloc--;
		}
	}

	/* 2. Data: runs of pieces written straight from the guest's buffers,
	 * whole clusters merged in the bounce buffer for the rest. */
	bool alone = !new_l2 && !nrel && busy_room(q);
	for (uint64_t i = 0; alone && i < np; i++)
		alone = p[i].kind == W_INPLACE || (p[i].kind == W_ALLOC && p[i].in == 0 && p[i].n == q->csize);
	if (alone && (rc = write_unlocked(q, c, p, np)))
		goto out;
	for (uint64_t i = alone ? np : 0; i < np;) {
		struct wpiece *w = &p[i];
		bool whole = w->in == 0 && w->n == q->csize;
		if (w->kind == W_INPLACE || whole) {
			uint64_t j = i + 1, bytes = w->n;
			while (j < np && (p[j].kind == W_INPLACE || (p[j].in == 0 && p[j].n == q->csize)) &&
			       p[j].host == w->host + (j - i) * q->csize && j - i < 256) {
				bytes += p[j].n;
				j++;
			}
			int k = cur_slice(q, c, bytes);
			if (qcow2_io_hook)
				qcow2_io_hook("data");
			if ((rc = blk_pwritev_full(q->fd, q->sv, k, w->host + w->in)))
				goto out;
			if (w->host + w->in + bytes > q->file_size)
				q->file_size = w->host + w->in + bytes;
			i = j;
			continue;
		}
		if (w->kind == W_ZERO_INPLACE)
			memset(q->bounce, 0, q->csize);
		else if ((rc = cluster_content(q, w->gc, w->old, q->bounce)))
			goto out;
		cur_copy(c, q->bounce + w->in, w->n, false);
		if (qcow2_io_hook)
			qcow2_io_hook("data");
		if ((rc = blk_pwrite_full(q->fd, q->bounce, q->csize, w->host)))
			goto out;
		if (w->host + q->csize > q->file_size)
			q->file_size = w->host + q->csize;
		i++;
	}

	/* 3-5. Sync, link, release -- or, when nothing is released and the
	 * table is ours, link in the cached table only (deferred links). */
	for (uint64_t i = 0; i < np; i++)
		if (p[i].kind != W_INPLACE)
			u[nu++] = (struct l2update){ (unsigned)(p[i].gc & ((1ULL << q->l2bits) - 1)),
			                             p[i].host | QCOW2_OFLAG_COPIED };
	if (nu && !nrel && !new_l2 && (t = q2_cache_get(q, &q->l2c, l2off, &rc))) {
		for (unsigned i = 0; i < nu; i++)
			q2_put64(t + 8 * u[i].idx, u[i].val);
		q2_cache_set_dirty(&q->l2c, l2off);
		q->pending += nu;
		rc = q->writethrough || q->pending >= PENDING_MAX ? q2_commit(q) : 0;
	} else if (!rc) {
		rc = l2_commit(q, l1i, u, nu, new_l2, rel, nrel, need_update);
	}
out:
	free(p);
	free(u);
	free(rel);
	return rc;
}

static int write_locked(struct qcow2 *q, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len)
{
	struct cur c = { iov, iovcnt, 0, 0 };
	uint64_t span = q->csize << q->l2bits;   /* guest bytes per L2 table */
	while (len > 0) {
		uint64_t n = span - (off & (span - 1));
		if (n > len)
			n = len;
		int rc = write_chunk(q, &c, off, n);
		if (rc)
			return rc;
		off += n;
		len -= n;
	}
	return 0;
}

static int q2_writev(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off)
{
	struct qcow2 *q = img->priv;
	pthread_mutex_lock(&q->lock);
	int rc = sv_reserve(q, iovcnt);
	if (!rc)
		rc = write_locked(q, iov, iovcnt, off, iov_total(iov, iovcnt));
	pthread_mutex_unlock(&q->lock);
	return rc;
}

/* ---- discard / write zeroes ---- */

static bool backed(const struct qcow2 *q, uint64_t gc)
{
	return q->backing && (gc << q->cbits) < q->backing->size;
}

/* Zeros over part of one cluster: nothing if it reads as zeros already. */
static int zero_partial(struct qcow2 *q, uint64_t off, uint64_t n)
{
	uint64_t e, gc = off >> q->cbits;
	int rc = l2_entry(q, gc, &e);
	if (rc)
		return rc;
	if (!(e & QCOW2_OFLAG_COMPRESSED) &&
	    (((e & QCOW2_OFLAG_ZERO) && q->version >= 3) || (!(e & QCOW2_OFFSET_MASK) && !backed(q, gc))))
		return 0;
	struct iovec v = { q->zeros, (size_t)n };
	return write_locked(q, &v, 1, off, n);
}

/* Whole clusters [gc0, gc0 + np), inside one L2 table's range. */
static int zero_clusters(struct qcow2 *q, uint64_t gc0, uint64_t np, bool unmap)
{
	uint64_t l1i = gc0 >> q->l2bits, l1e = q->l1[l1i], l2off = l1e & QCOW2_OFFSET_MASK;
	if (l2off & (q->csize - 1))
		return q2_corrupt(q, "L1 entry 0x%llx: offset not cluster-aligned", (unsigned long long)l1e);
	struct l2update *u = calloc(np, sizeof(*u));
	struct relist *rel = calloc(np, sizeof(*rel));
	uint64_t *explicit = calloc(np, sizeof(*explicit));
	int rc = ENOMEM;
	unsigned nu = 0, nrel = 0, nexp = 0;
	uint64_t new_l2 = 0;
	if (!u || !rel || !explicit)
		goto out;
	uint8_t *t = NULL;
	if (l2off && !(t = q2_cache_get(q, &q->l2c, l2off, &rc)))
		goto out;
	for (uint64_t i = 0; i < np; i++) {
		uint64_t gc = gc0 + i, idx = gc & ((1ULL << q->l2bits) - 1);
		uint64_t old = t ? q2_be64(t + 8 * idx) : 0, host = 0, nw;
		bool comp = old & QCOW2_OFLAG_COMPRESSED;
		if (!comp && (rc = entry_host(q, old, &host)))
			goto out;
		bool ours = host && (old & QCOW2_OFLAG_COPIED);
		if (q->version < 3) {
			if (!comp && (old & QCOW2_OFLAG_ZERO)) {
				rc = q2_corrupt(q, "zero cluster flag in a version 2 image");
				goto out;
			}
			if (!unmap && ours) {   /* keep the allocation, zero the data */
				if (fallocate(q->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)host, (off_t)q->csize) &&
				    (rc = blk_pwrite_full(q->fd, q->zeros, q->csize, host)))
					goto out;
				continue;
			}
			if (backed(q, gc)) {    /* no zero flag: write zeros */
				explicit[nexp++] = gc;
				continue;
			}
			nw = 0;
		} else if (!unmap && ours) {
			nw = host | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO;
		} else {
			nw = backed(q, gc) ? QCOW2_OFLAG_ZERO : 0;
		}
		if (nw == old)
			continue;
		if ((comp || host) && !(nw & QCOW2_OFFSET_MASK) && (rc = q2_entry_refs(q, old, &rel[nrel++])))
			goto out;
		u[nu++] = (struct l2update){ (unsigned)idx, nw };
	}
	if (nu && !(l2off && (l1e & QCOW2_OFLAG_COPIED)) && (rc = q2_alloc(q, &new_l2)))
		goto out;
	if ((rc = l2_commit(q, l1i, u, nu, new_l2, rel, nrel, false)))
		goto out;
	for (unsigned i = 0; i < nexp; i++) {
		struct iovec v = { q->zeros, q->csize };
		if ((rc = write_locked(q, &v, 1, explicit[i] << q->cbits, q->csize)))
			goto out;
	}
	rc = 0;
out:
	free(u);
	free(rel);
	free(explicit);
	return rc;
}

static int q2_zero_range(struct blk_image *img, uint64_t off, uint64_t len, bool unmap)
{
	struct qcow2 *q = img->priv;
	int rc = 0;
	pthread_mutex_lock(&q->lock);
	if ((rc = sv_reserve(q, 1)))
		goto out;
	while (len > 0 && !rc) {
		uint64_t in = off & (q->csize - 1), n = q->csize - in < len ? q->csize - in : len;
		/* A piece reaching the end of the disk counts as whole. */
		if (in || (n < q->csize && off + n < img->size)) {
			rc = zero_partial(q, off, n);
		} else {
			uint64_t gc = off >> q->cbits, tbl_left = (1ULL << q->l2bits) - (gc & ((1ULL << q->l2bits) - 1));
			uint64_t whole = len >> q->cbits;
			if (whole == 0)   /* the disk's last, short cluster */
				whole = 1;
			if (whole > tbl_left)
				whole = tbl_left;
			busy_wait(q, gc, whole);
			rc = zero_clusters(q, gc, whole, unmap);
			n = whole << q->cbits < len ? whole << q->cbits : len;
		}
		off += n;
		len -= n;
	}
out:
	pthread_mutex_unlock(&q->lock);
	return rc;
}

static int q2_discard(struct blk_image *img, uint64_t off, uint64_t len)
{
	return q2_zero_range(img, off, len, true);
}

static int q2_write_zeroes(struct blk_image *img, uint64_t off, uint64_t len, bool unmap)
{
	return q2_zero_range(img, off, len, unmap);
}

static int q2_flush(struct blk_image *img)
{
	struct qcow2 *q = img->priv;
	pthread_mutex_lock(&q->lock);
	int rc = q2_commit(q);
	pthread_mutex_unlock(&q->lock);
	return rc ? rc : fdatasync(q->fd) ? errno : 0;
}

/* ---- open / close ---- */

static void q2_free(struct qcow2 *q)
{
	if (!q)
		return;
	blk_image_close(q->backing);
	q2_cache_free(&q->l2c);
	q2_cache_free(&q->rbc);
	free(q->l1);
	free(q->rt);
	free(q->cbuf);
	free(q->zin);
	free(q->bounce);
	free(q->zeros);
	free(q->sv);
	if (q->zstd)
		ZSTD_freeDCtx(q->zstd);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->busy_cv);
	free(q);
}

static void q2_close(struct blk_image *img)
{
	struct qcow2 *q = img->priv;
	if (q && q2_commit(q))
		log_warn("%s: cannot write the last L2 entries: the clusters written since the last flush leak",
		         img->path);
	q2_free(img->priv);
	img->priv = NULL;
}

static int oerr(char *err, size_t errlen, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int oerr(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
	int n = snprintf(err, errlen, "%s: ", path);
	if (n >= 0 && (size_t)n < errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static int read_table(int fd, uint64_t off, uint64_t n, uint64_t **out)
{
	uint8_t *raw = malloc(n ? n * 8 : 1);
	uint64_t *t = calloc(n ? n : 1, 8);
	int rc = raw && t ? blk_pread_full(fd, raw, n * 8, off) : ENOMEM;
	for (uint64_t i = 0; !rc && i < n; i++)
		t[i] = q2_be64(raw + 8 * i);
	free(raw);
	if (rc) {
		free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* Opens the backing file named in the header (already checked). */
static int open_backing(struct blk_image *img, struct qcow2 *q, const struct blk_open_opts *o, const char *name,
                        const char *fmt, char *err, size_t errlen)
{
	char path[PATH_MAX];
	const char *slash = strrchr(img->path, '/');
	if (name[0] == '/' || !slash)
		snprintf(path, sizeof(path), "%s", name);
	else
		snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - img->path), img->path, name);
	struct blk_chain self = { img->dev, img->ino, o->chain };
	struct blk_open_opts bo = { .ro = true, .depth = o->depth + 1, .chain = &self };
	char berr[1024];
	/* O_NONBLOCK: a FIFO named by the image must not hang the open. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return oerr(err, errlen, img->path, "backing file '%s': %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
		close(fd);
		return oerr(err, errlen, img->path, "backing file '%s' is not a regular file or a block device", path);
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	q->backing = blk_image_open_fd(fd, true, path, fmt[0] ? fmt : NULL, &bo, berr, sizeof(berr));
	if (!q->backing)
		return oerr(err, errlen, img->path, "backing file: %s", berr);
	return 0;
}

/* The tables the header points to: sizes sane, aligned, inside the file. */
static int check_layout(struct qcow2 *q, uint64_t size, char *err, size_t errlen)
{
	const char *P = q->img->path;
	uint64_t l2span_bits = q->cbits + q->l2bits;
	if (size > (1ULL << 62))
		return oerr(err, errlen, P, "qcow2 virtual size %llu is too large", (unsigned long long)size);
	uint64_t need_l1 = (size + (1ULL << l2span_bits) - 1) >> l2span_bits;
	if ((uint64_t)q->l1_size * 8 > QCOW2_MAX_L1_BYTES || q->l1_size < need_l1)
		return oerr(err, errlen, P, "bad qcow2 L1 table size %u (the disk needs %llu entries)", q->l1_size,
		            (unsigned long long)need_l1);
	if (q->l1_size && ((q->l1_off & (q->csize - 1)) || !q->l1_off || q->l1_off > q->file_size ||
	                   (uint64_t)q->l1_size * 8 > q->file_size - q->l1_off))
		return oerr(err, errlen, P, "qcow2 L1 table (offset 0x%llx, %u entries) is misaligned or beyond the end "
		            "of the file", (unsigned long long)q->l1_off, q->l1_size);
	if (!q->rt_clusters || q->rt_clusters << q->cbits > QCOW2_MAX_RT_BYTES || (q->rt_off & (q->csize - 1)) ||
	    !q->rt_off || q->rt_off > q->file_size || (q->rt_clusters << q->cbits) > q->file_size - q->rt_off)
		return oerr(err, errlen, P, "qcow2 refcount table (offset 0x%llx, %llu clusters) is misaligned, too "
		            "large or beyond the end of the file", (unsigned long long)q->rt_off,
		            (unsigned long long)q->rt_clusters);
	if (q->nsnap > 65536 || (q->nsnap && ((q->snap_off & (q->csize - 1)) || q->snap_off >= q->file_size)))
		return oerr(err, errlen, P, "bad qcow2 snapshot table (%u snapshots at 0x%llx)", q->nsnap,
		            (unsigned long long)q->snap_off);
	return 0;
}

static int q2_open(struct blk_image *img, const struct blk_open_opts *o, char *err, size_t errlen)
{
	const char *P = img->path;
	struct qcow2 *q = calloc(1, sizeof(*q));
	uint8_t *hc = NULL;
	if (!q)
		return oerr(err, errlen, P, "out of memory");
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->busy_cv, NULL);
	q->img = img;
	q->fd = img->fd;
	q->writethrough = o->writethrough;
	img->priv = q;
	off_t fsz = lseek(img->fd, 0, SEEK_END);
	if (fsz < 0) {
		oerr(err, errlen, P, "%s", strerror(errno));
		goto fail;
	}
	q->file_size = (uint64_t)fsz;
	uint8_t h[112] = { 0 };
	if (q->file_size < 72 || blk_pread_full(img->fd, h, q->file_size < sizeof(h) ? q->file_size : sizeof(h), 0)) {
		oerr(err, errlen, P, "too short for a qcow2 header");
		goto fail;
	}
	if (q2_be32(h) != QCOW2_MAGIC) {
		oerr(err, errlen, P, "not a qcow2 image (no QFI\\xfb magic)");
		goto fail;
	}
	q->version = q2_be32(h + 4);
	if (q->version != 2 && q->version != 3) {
		oerr(err, errlen, P, "qcow2 version %u is not supported (2 or 3; convert with qemu-img convert -O qcow2)",
		     q->version);
		goto fail;
	}
	uint64_t bf_off = q2_be64(h + 8);
	uint32_t bf_len = q2_be32(h + 16);
	q->cbits = q2_be32(h + 20);
	uint64_t size = q2_be64(h + 24);
	uint32_t crypt = q2_be32(h + 32);
	q->l1_size = q2_be32(h + 36);
	q->l1_off = q2_be64(h + 40);
	q->rt_off = q2_be64(h + 48);
	q->rt_clusters = q2_be32(h + 56);
	uint32_t nsnap = q2_be32(h + 60);
	uint64_t snap_off = q2_be64(h + 64);
	uint32_t hlen = 72;
	q->rc_order = 4;
	if (q->version == 3) {
		q->incompat = q2_be64(h + 72);
		q->compat = q2_be64(h + 80);
		q->autoclear = q2_be64(h + 88);
		q->rc_order = q2_be32(h + 96);
		hlen = q2_be32(h + 100);
		if (hlen > 104 && q->file_size > 104)
			q->compression = h[104];
	}
	if (q->cbits < QCOW2_MIN_CBITS || q->cbits > QCOW2_MAX_CBITS) {
		oerr(err, errlen, P, "bad qcow2 cluster size 2^%u (512 B to 2 MiB)", q->cbits);
		goto fail;
	}
	q->csize = 1ULL << q->cbits;
	q->l2bits = q->cbits - 3;
	if (q->version == 3 && (hlen < 104 || hlen > q->csize || hlen % 8)) {
		oerr(err, errlen, P, "bad qcow2 header length %u", hlen);
		goto fail;
	}
	if (q->rc_order > 6) {
		oerr(err, errlen, P, "bad qcow2 refcount width 2^%u bits (at most 64)", q->rc_order);
		goto fail;
	}
	q->rbbits = q->cbits + 3 - q->rc_order;
	q->rc_max = q->rc_order == 6 ? ~0ULL : (1ULL << (1u << q->rc_order)) - 1;
	q->csize_shift = 62 - (q->cbits - 8);
	q->csize_mask = (1ULL << (q->cbits - 8)) - 1;
	q->coff_mask = (1ULL << q->csize_shift) - 1;

	/* Features. */
	if (crypt) {
		oerr(err, errlen, P, "encrypted qcow2 images are not supported (decrypt with qemu-img convert)");
		goto fail;
	}
	if (q->incompat & QCOW2_INCOMPAT_DATA_FILE) {
		oerr(err, errlen, P, "qcow2 images with an external data file are not supported");
		goto fail;
	}
	if (q->incompat & QCOW2_INCOMPAT_EXTL2) {
		oerr(err, errlen, P, "qcow2 extended L2 entries (subclusters) are not supported "
		                     "(convert with qemu-img convert -O qcow2 -o extended_l2=off)");
		goto fail;
	}
	uint64_t known = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_COMPRESS;
	if (q->incompat & ~known) {
		oerr(err, errlen, P, "unsupported qcow2 incompatible feature bits 0x%llx",
		     (unsigned long long)(q->incompat & ~known));
		goto fail;
	}
	if (!(q->incompat & QCOW2_INCOMPAT_COMPRESS) ? q->compression != 0 : q->compression > 1) {
		oerr(err, errlen, P, "unsupported qcow2 compression type %u (zlib or zstd)", q->compression);
		goto fail;
	}
	if ((q->incompat & QCOW2_INCOMPAT_DIRTY) && !img->ro) {
		oerr(err, errlen, P, "qcow2 image is dirty (lazy refcounts not written back): run "
		                     "'qemu-img check -r all %s' first, or open it read-only", P);
		goto fail;
	}
	if ((q->incompat & QCOW2_INCOMPAT_CORRUPT) && !img->ro) {
		oerr(err, errlen, P, "qcow2 image is marked corrupt: run 'qemu-img check -r all %s' first, "
		                     "or open it read-only", P);
		goto fail;
	}

	q->nsnap = nsnap;
	q->snap_off = snap_off;
	if (check_layout(q, size, err, errlen))
		goto fail;

	/* Backing file name and header extensions, all in the first cluster. */
	uint64_t hcl = q->csize < q->file_size ? q->csize : q->file_size;
	if (!(hc = calloc(1, q->csize)) || blk_pread_full(img->fd, hc, hcl, 0)) {
		oerr(err, errlen, P, "cannot read the qcow2 header cluster");
		goto fail;
	}
	char bname[1024] = "", bfmt[32] = "";
	if (bf_off && bf_len) {
		if (bf_len > 1023 || bf_off >= q->csize || bf_len > q->csize - bf_off) {
			oerr(err, errlen, P, "bad qcow2 backing file name (offset %llu, %u bytes)", (unsigned long long)bf_off,
			     bf_len);
			goto fail;
		}
		memcpy(bname, hc + bf_off, bf_len);
		bname[bf_len] = 0;
	}
	uint64_t ext_end = bf_off && bf_off < q->csize ? bf_off : q->csize;
	for (uint64_t eo = hlen; eo + 8 <= ext_end;) {
		uint32_t type = q2_be32(hc + eo), elen = q2_be32(hc + eo + 4);
		eo += 8;
		if (type == 0)
			break;
		if (elen > ext_end - eo) {
			oerr(err, errlen, P, "qcow2 header extension 0x%08x overflows the header cluster", type);
			goto fail;
		}
		if (type == 0xe2792acau) {   /* backing file format */
			if (elen >= sizeof(bfmt)) {
				oerr(err, errlen, P, "qcow2 backing format name too long");
				goto fail;
			}
			memcpy(bfmt, hc + eo, elen);
			bfmt[elen] = 0;
		} else if (type == 0x0537be77u) {
			oerr(err, errlen, P, "encrypted qcow2 images are not supported");
			goto fail;
		} else if (type == 0x44415441u) {
			oerr(err, errlen, P, "qcow2 images with an external data file are not supported");
			goto fail;
		}
		eo += (elen + 7ULL) & ~7ULL;
	}

	int rc = read_table(img->fd, q->l1_off, q->l1_size, &q->l1);
	if (!rc)
		rc = read_table(img->fd, q->rt_off, (q->rt_clusters << q->cbits) / 8, &q->rt);
	if (rc) {
		oerr(err, errlen, P, "cannot read the qcow2 tables: %s", strerror(rc));
		goto fail;
	}
	q->rt_size = (q->rt_clusters << q->cbits) / 8;

	if (bname[0]) {
		if (o->probed) {
			if (o->depth == 0)
				oerr(err, errlen, P, "qcow2 image found by probing names a backing file ('%s'): "
				     "add format=qcow2 to the disk's options to open its backing chain", bname);
			else
				oerr(err, errlen, P, "qcow2 image whose format was probed (its parent names no backing "
				     "format) names a backing file ('%s'): set the parent's with "
				     "'qemu-img rebase -u -F qcow2'", bname);
			goto fail;
		}
		if (bfmt[0] && strcmp(bfmt, "raw") && strcmp(bfmt, "qcow2")) {
			oerr(err, errlen, P, "backing file format '%s' is not supported (raw or qcow2)", bfmt);
			goto fail;
		}
		if (open_backing(img, q, o, bname, bfmt, err, errlen))
			goto fail;
	}

	/* Caches and buffers. */
	uint64_t l2bytes = o->l2cache;
	if (!l2bytes) {
		l2bytes = (uint64_t)q->l1_size << q->cbits;   /* all of the disk ... */
		if (l2bytes > DEFAULT_L2_CACHE_MAX)           /* ... up to 32 MiB */
			l2bytes = DEFAULT_L2_CACHE_MAX;
	}
	uint64_t slots = l2bytes >> q->cbits;
	if (slots > q->l1_size)
		slots = q->l1_size;
	if (slots < 2)
		slots = 2;
	uint64_t rslots = slots / 4 < 4 ? 4 : slots / 4 > 256 ? 256 : slots / 4;
	if (q2_cache_init(&q->l2c, (unsigned)slots) || q2_cache_init(&q->rbc, (unsigned)rslots) ||
	    !(q->bounce = malloc(q->csize)) || !(q->zeros = calloc(1, q->csize)) || sv_reserve(q, 16)) {
		oerr(err, errlen, P, "out of memory");
		goto fail;
	}
	q->free_hint = 1;

	/* Writable: clear the autoclear bits we do not keep up to date. */
	if (!img->ro && q->version == 3 && q->autoclear) {
		uint8_t z[8] = { 0 };
		int wrc = q2_pwrite(q, z, 8, 88);
		if (wrc || (wrc = q2_sync(q))) {
			oerr(err, errlen, P, "cannot update the qcow2 header: %s", strerror(wrc));
			goto fail;
		}
		q->autoclear = 0;
	}
	img->size = size;
	free(hc);
	return 0;
fail:
	free(hc);
	q2_free(q);
	img->priv = NULL;
	return -1;
}

/*
 * The source of a migration on shared storage wrote the image after this
 * process opened it: read the header's tables again and forget every
 * cached table.  The geometry (and the backing file, read-only) cannot
 * have changed; if the header says otherwise the image is not the one
 * that was opened.
 */
int q2_reload(struct qcow2 *q, char *err, size_t errlen)
{
	const char *P = q->img->path;
	uint8_t h[104] = { 0 };
	if (q2_commit(q))
		return oerr(err, errlen, P, "cannot write its pending L2 entries");
	off_t fsz = lseek(q->fd, 0, SEEK_END);
	if (fsz < 72 || blk_pread_full(q->fd, h, q->version == 3 ? 104 : 72, 0))
		return oerr(err, errlen, P, "cannot read the qcow2 header again");
	if (q2_be32(h) != QCOW2_MAGIC || q2_be32(h + 4) != q->version || q2_be32(h + 20) != q->cbits ||
	    q2_be64(h + 24) != q->img->size || (q->version == 3 && q2_be32(h + 96) != q->rc_order))
		return oerr(err, errlen, P, "the qcow2 header changed under hyve (not the image it opened)");
	uint64_t *l1 = NULL, *rt = NULL;
	/* The layout fields go back if the new ones are bad (the old tables stay in use). */
	const uint64_t fsz0 = q->file_size, l1o = q->l1_off, rto = q->rt_off, rtc = q->rt_clusters, so = q->snap_off;
	const uint32_t l1s = q->l1_size, ns = q->nsnap;
#define RELOAD_UNDO()                                                                          \
	(q->file_size = fsz0, q->l1_off = l1o, q->rt_off = rto, q->rt_clusters = rtc, q->snap_off = so, \
	 q->l1_size = l1s, q->nsnap = ns)
	q->file_size = (uint64_t)fsz;
	q->l1_size = q2_be32(h + 36);
	q->l1_off = q2_be64(h + 40);
	q->rt_off = q2_be64(h + 48);
	q->rt_clusters = q2_be32(h + 56);
	q->nsnap = q2_be32(h + 60);
	q->snap_off = q2_be64(h + 64);
	if (check_layout(q, q->img->size, err, errlen)) {
		RELOAD_UNDO();
		return -1;
	}
	int rc = read_table(q->fd, q->l1_off, q->l1_size, &l1);
	if (!rc)
		rc = read_table(q->fd, q->rt_off, (q->rt_clusters << q->cbits) / 8, &rt);
	if (rc) {
		free(l1);
		RELOAD_UNDO();
		return oerr(err, errlen, P, "cannot read the qcow2 tables: %s", strerror(rc));
	}
#undef RELOAD_UNDO
	free(q->l1);
	free(q->rt);
	q->l1 = l1;
	q->rt = rt;
	q->rt_size = (q->rt_clusters << q->cbits) / 8;
	q2_cache_clear(&q->l2c);
	q2_cache_clear(&q->rbc);
	q->cbuf_entry = 0;
	q->free_hint = 1;
	q->alloc_end = 0;
	return 0;
}

static int q2_reload_op(struct blk_image *img, char *err, size_t errlen)
{
	struct qcow2 *q = img->priv;
	pthread_mutex_lock(&q->lock);
	int rc = q2_reload(q, err, errlen);
	pthread_mutex_unlock(&q->lock);
	return rc ? EIO : 0;
}

const struct blk_format_ops blk_format_qcow2 = {
	.name = "qcow2",
	.open = q2_open,
	.close = q2_close,
	.readv = q2_readv,
	.writev = q2_writev,
	.flush = q2_flush,
	.discard = q2_discard,
	.write_zeroes = q2_write_zeroes,
	.snapshot_create = q2_snapshot_create,
	.snapshot_revert = q2_snapshot_revert,
	.snapshot_delete = q2_snapshot_delete,
	.snapshot_list = q2_snapshot_list,
	.reload = q2_reload_op,
};
