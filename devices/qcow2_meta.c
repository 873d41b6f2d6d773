/*
 * qcow2 metadata: the L2 / refcount-block caches, refcounts, cluster
 * allocation (with new refcount blocks and a growing refcount table) and
 * freeing.  Called with the image lock held.  The write ordering these
 * functions keep is described at the top of qcow2.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/log.h"
#include "qcow2_internal.h"

void (*qcow2_io_hook)(const char *what);

int q2_pwrite(struct qcow2 *q, const void *buf, size_t len, uint64_t off)
{
	if (qcow2_io_hook)
		qcow2_io_hook("write");
	int rc = blk_pwrite_full(q->fd, buf, len, off);
	if (!rc && off + len > q->file_size)
		q->file_size = off + len;
	return rc;
}

int q2_sync(struct qcow2 *q)
{
	if (qcow2_io_hook)
		qcow2_io_hook("sync");
	return fdatasync(q->fd) ? errno : 0;
}

int q2_corrupt(struct qcow2 *q, const char *fmt, ...)
{
	if (!q->warned) {
		char msg[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		q->warned = true;
		log_warn("%s: corrupt qcow2 image: %s (I/O error to the guest; 'qemu-img check' tells more)",
		         q->img->path, msg);
	}
	return EIO;
}

/* ---- table cache ---- */

int q2_cache_init(struct q2_cache *c, unsigned slots)
{
	memset(c, 0, sizeof(*c));
	while ((1u << c->hbits) < 2 * slots)
		c->hbits++;
	c->t = calloc(slots, sizeof(*c->t));
	c->head = malloc(sizeof(*c->head) << c->hbits);
	if (!c->t || !c->head)
		return ENOMEM;
	for (unsigned i = 0; i < slots; i++)
		c->t[i].next = -1;
	for (unsigned i = 0; i < 1u << c->hbits; i++)
		c->head[i] = -1;
	c->n = slots;
	return 0;
}

void q2_cache_free(struct q2_cache *c)
{
	for (unsigned i = 0; c->t && i < c->n; i++)
		free(c->t[i].data);
	free(c->t);
	free(c->head);
	c->t = NULL;
	c->head = NULL;
}

static unsigned cache_hash(const struct q2_cache *c, uint64_t off)
{
	return c->hbits ? (unsigned)(((off >> 9) * 0x9e3779b97f4a7c15ULL) >> (64 - c->hbits)) : 0;
}

static struct q2_table *cache_find(struct q2_cache *c, uint64_t off)
{
	for (int i = c->head[cache_hash(c, off)]; i >= 0; i = c->t[i].next)
		if (c->t[i].off == off)
			return &c->t[i];
	return NULL;
}

static void cache_unlink(struct q2_cache *c, struct q2_table *t)
{
	t->dirty = false;
	int idx = (int)(t - c->t);
	for (int *p = &c->head[cache_hash(c, t->off)]; *p >= 0; p = &c->t[*p].next) {
		if (*p == idx) {
			*p = t->next;
			break;
		}
	}
	t->next = -1;
	t->off = 0;
}

static void cache_link(struct q2_cache *c, struct q2_table *t, uint64_t off)
{
	unsigned h = cache_hash(c, off);
	t->off = off;
	t->ref = true;
	t->next = c->head[h];
	c->head[h] = (int)(t - c->t);
}

/* The slot to (re)use, unlinked: a free one, else the clock's pick.  Its
 * buffer is allocated on first use, so a large cache costs nothing until
 * the tables are read. */
static struct q2_table *cache_victim(struct qcow2 *q, struct q2_cache *c)
{
	struct q2_table *v;
	for (unsigned seen = 0;; seen++) {
		if (seen == 2 * c->n && q2_commit(q))   /* every slot dirty: write them, then pick */
			return NULL;
		v = &c->t[c->hand];
		c->hand = (c->hand + 1) % c->n;
		if (v->dirty)
			continue;
		if (!v->off || !v->ref)
			break;
		v->ref = false;
	}
	if (v->off)
		cache_unlink(c, v);
	if (!v->data)
		v->data = malloc(q->csize);
	return v->data ? v : NULL;
}

uint8_t *q2_cache_get(struct qcow2 *q, struct q2_cache *c, uint64_t off, int *err)
{
	struct q2_table *t = cache_find(c, off);
	if (t) {
		c->hits++;
		t->ref = true;
		return t->data;
	}
	c->misses++;
	if (!off || (off & (q->csize - 1))) {
		*err = q2_corrupt(q, "metadata table offset 0x%llx is not cluster-aligned", (unsigned long long)off);
		return NULL;
	}
	if (off >= q->file_size) {
		*err = q2_corrupt(q, "metadata table at 0x%llx lies beyond the end of the file", (unsigned long long)off);
		return NULL;
	}
	t = cache_victim(q, c);
	if (!t) {
		*err = ENOMEM;
		return NULL;
	}
	struct iovec v = { t->data, q->csize };
	int rc = blk_preadv_zfill(q->fd, &v, 1, off);
	if (rc) {
		*err = rc;
		return NULL;
	}
	cache_link(c, t, off);
	return t->data;
}

void q2_cache_put(struct qcow2 *q, struct q2_cache *c, uint64_t off, const uint8_t *data)
{
	struct q2_table *t = cache_find(c, off);
	if (t)
		cache_unlink(c, t);
	else if (!(t = cache_victim(q, c)))
		return;   /* not cached: read again when needed */
	memcpy(t->data, data, q->csize);
	cache_link(c, t, off);
}

void q2_cache_set_dirty(struct q2_cache *c, uint64_t off)
{
	struct q2_table *t = cache_find(c, off);
	if (t)
		t->dirty = true;
}

void q2_cache_drop(struct q2_cache *c, uint64_t off)
{
	struct q2_table *t = cache_find(c, off);
	if (t)
		cache_unlink(c, t);
}

/* ---- refcounts ---- */

/* Entry i of a refcount block.  Widths under 8 bits pack from the least
 * significant bit of each byte up; wider ones are big-endian. */
static uint64_t rb_get(const struct qcow2 *q, const uint8_t *rb, uint64_t i)
{
	switch (q->rc_order) {
	case 0:
	case 1:
	case 2: {
		unsigned bits = 1u << q->rc_order, per = 8 / bits;
		return (uint64_t)(rb[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
	}
	case 3: return rb[i];
	case 4: return (uint64_t)rb[2 * i] << 8 | rb[2 * i + 1];
	case 5: return q2_be32(rb + 4 * i);
	default: return q2_be64(rb + 8 * i);
	}
}

/* Set entry i; report in boff, blen the bytes that changed. */
static void rb_set(const struct qcow2 *q, uint8_t *rb, uint64_t i, uint64_t v, size_t *boff, size_t *blen)
{
	switch (q->rc_order) {
	case 0:
	case 1:
	case 2: {
		unsigned bits = 1u << q->rc_order, per = 8 / bits, sh = (unsigned)(i % per) * bits;
		uint8_t m = (uint8_t)(((1u << bits) - 1) << sh);
		rb[i / per] = (uint8_t)((rb[i / per] & ~m) | ((v << sh) & m));
		*boff = i / per;
		*blen = 1;
		return;
	}
	case 3:
		rb[i] = (uint8_t)v;
		*boff = i;
		*blen = 1;
		return;
	case 4:
		rb[2 * i] = (uint8_t)(v >> 8);
		rb[2 * i + 1] = (uint8_t)v;
		*boff = 2 * i;
		*blen = 2;
		return;
	case 5:
		q2_put32(rb + 4 * i, (uint32_t)v);
		*boff = 4 * i;
		*blen = 4;
		return;
	default:
		q2_put64(rb + 8 * i, v);
		*boff = 8 * i;
		*blen = 8;
		return;
	}
}

/* Host offset of the refcount block for refcount table index ri (0: none). */
static int rb_offset(struct qcow2 *q, uint64_t ri, uint64_t *off)
{
	*off = 0;
	if (ri >= q->rt_size)
		return 0;
	uint64_t o = q->rt[ri] & QCOW2_RT_OFFSET_MASK;
	if (o & (q->csize - 1))
		return q2_corrupt(q, "refcount block offset 0x%llx is not cluster-aligned", (unsigned long long)o);
	*off = o;
	return 0;
}

int q2_rc_get(struct qcow2 *q, uint64_t cluster, uint64_t *rc)
{
	uint64_t rbo;
	int err = rb_offset(q, cluster >> q->rbbits, &rbo);
	*rc = 0;
	if (err || !rbo)
		return err;
	uint8_t *rb = q2_cache_get(q, &q->rbc, rbo, &err);
	if (!rb)
		return err;
	*rc = rb_get(q, rb, cluster & ((1ULL << q->rbbits) - 1));
	return 0;
}

/* Set a refcount (its block exists) and write the changed bytes through. */
static int rc_set(struct qcow2 *q, uint64_t cluster, uint64_t v)
{
	uint64_t rbo;
	int err = rb_offset(q, cluster >> q->rbbits, &rbo);
	if (err)
		return err;
	if (!rbo)
		return q2_corrupt(q, "no refcount block for cluster 0x%llx", (unsigned long long)cluster);
	uint8_t *rb = q2_cache_get(q, &q->rbc, rbo, &err);
	if (!rb)
		return err;
	size_t bo, bl;
	rb_set(q, rb, cluster & ((1ULL << q->rbbits) - 1), v, &bo, &bl);
	return q2_pwrite(q, rb + bo, bl, rbo + bo);
}

/* Clusters never handed out, whatever the refcounts say: the header and
 * the tables the header points to (a corrupt refcount of 0 there must not
 * turn them into data). */
static bool protected_cluster(const struct qcow2 *q, uint64_t c)
{
	uint64_t o = c << q->cbits;
	if (c == 0)
		return true;
	if (q->l1_size && o + q->csize > q->l1_off && o < q->l1_off + (uint64_t)q->l1_size * 8)
		return true;
	return o + q->csize > q->rt_off && o < q->rt_off + (q->rt_clusters << q->cbits);
}

/*
 * A refcount block for table index ri, placed in the (all free) range it
 * covers, at cluster c, counting itself.  Written and synced before the
 * refcount table entry points to it.
 */
static int new_refblock(struct qcow2 *q, uint64_t ri, uint64_t c)
{
	uint64_t base = ri << q->rbbits;
	/* A range with no refcount block must be unused: in a crafted image
	 * whose table entry is 0 over live clusters, a new block here would
	 * overwrite them and let their clusters be handed out again. */
	uint64_t end = (base + (1ULL << q->rbbits)) << q->cbits;
	for (uint64_t o = base << q->cbits; o < q->file_size && o < end; o += q->csize)
		if (!protected_cluster(q, o >> q->cbits))
			return q2_corrupt(q, "a refcount table entry is 0 over clusters in use");
	while (protected_cluster(q, c))
		c++;
	if ((c >> q->rbbits) != ri)
		return q2_corrupt(q, "no room for a refcount block");
	uint8_t *rb = calloc(1, q->csize);
	if (!rb)
		return ENOMEM;
	size_t bo, bl;
	rb_set(q, rb, c - base, 1, &bo, &bl);
	uint64_t off = c << q->cbits;
	uint8_t ent[8];
	q2_put64(ent, off);
	int rc = q2_pwrite(q, rb, q->csize, off);
	if (!rc)
		rc = q2_sync(q);
	if (!rc)
		rc = q2_pwrite(q, ent, 8, q->rt_off + ri * 8);
	if (!rc) {
		q->rt[ri] = off;
		q2_cache_drop(&q->l2c, off);
		q2_cache_put(q, &q->rbc, off, rb);
	}
	free(rb);
	return rc;
}

/*
 * The refcount table is full (cluster c is past what it covers): write a
 * larger one after the end of the file, with new refcount blocks covering
 * itself and them, then switch the header to it and free the old one.
 *   new blocks + new table written -> sync -> header (offset, clusters)
 *   -> sync -> old table's refcounts dropped.
 * A crash before the header write leaks the new clusters, never more.
 */
static int grow_reftable(struct qcow2 *q, uint64_t c)
{
	if (qcow2_io_hook)
		qcow2_io_hook("grow");
	uint64_t start = (q->file_size + q->csize - 1) >> q->cbits;
	if (start < c)
		start = c;
	uint64_t ntc = q->rt_clusters * 2, nrb = 0, total;
	uint64_t per_tc = q->csize / 8;   /* entries per table cluster */
	for (;;) {
		for (int it = 0; it < 64; it++) {
			total = ntc + nrb;
			uint64_t need = ((start + total - 1) >> q->rbbits) - (start >> q->rbbits) + 1;
			if (need == nrb)
				break;
			nrb = need;
		}
		total = ntc + nrb;
		uint64_t last_ri = (start + total - 1) >> q->rbbits;
		if (ntc * per_tc > last_ri)
			break;
		ntc = (last_ri + 1 + per_tc - 1) / per_tc;
	}
	if (ntc << q->cbits > QCOW2_MAX_RT_BYTES || (start + total) >> (56 - q->cbits))
		return ENOSPC;
	uint64_t nents = ntc * per_tc, first_ri = start >> q->rbbits;
	uint64_t *nrt = calloc(nents, 8);
	uint8_t *tbuf = calloc(ntc, q->csize);
	uint8_t *rbs = calloc(nrb, q->csize);
	int rc = ENOMEM;
	if (!nrt || !tbuf || !rbs)
		goto out;
	memcpy(nrt, q->rt, q->rt_size * 8);
	for (uint64_t x = start; x < start + total; x++) {
		size_t bo, bl;
		rb_set(q, rbs + (((x >> q->rbbits) - first_ri) << q->cbits), x & ((1ULL << q->rbbits) - 1), 1, &bo, &bl);
	}
	for (uint64_t k = 0; k < nrb; k++)
		nrt[first_ri + k] = (start + ntc + k) << q->cbits;
	for (uint64_t i = 0; i < nents; i++)
		q2_put64(tbuf + 8 * i, nrt[i]);
	rc = q2_pwrite(q, rbs, nrb << q->cbits, (start + ntc) << q->cbits);
	if (!rc)
		rc = q2_pwrite(q, tbuf, ntc << q->cbits, start << q->cbits);
	if (!rc)
		rc = q2_sync(q);
	uint8_t hdr[12];
	q2_put64(hdr, start << q->cbits);
	q2_put32(hdr + 8, (uint32_t)ntc);
	if (!rc)
		rc = q2_pwrite(q, hdr, sizeof(hdr), 48);
	if (!rc)
		rc = q2_sync(q);
	if (rc)
		goto out;
	uint64_t old_off = q->rt_off, old_clusters = q->rt_clusters;
	free(q->rt);
	q->rt = nrt;
	nrt = NULL;
	q->rt_off = start << q->cbits;
	q->rt_clusters = ntc;
	q->rt_size = nents;
	for (uint64_t k = 0; k < nrb; k++)
		q2_cache_put(q, &q->rbc, (start + ntc + k) << q->cbits, rbs + (k << q->cbits));
	rc = q2_unref(q, old_off, old_clusters << q->cbits);
out:
	free(nrt);
	free(tbuf);
	free(rbs);
	return rc;
}

/*
 * First free cluster from free_hint on.  Past the end of the file (and of
 * what this process allocated) every cluster should be free: a damaged
 * image whose refcounts claim more than a refcount block's worth there
 * gets EIO, not an endless scan.
 */
int q2_alloc(struct qcow2 *q, uint64_t *off)
{
	uint64_t n;
	return q2_alloc_n(q, 1, off, &n);
}

int q2_alloc_n(struct qcow2 *q, uint64_t want, uint64_t *off, uint64_t *got)
{
	uint64_t c = q->free_hint ? q->free_hint : 1;
	for (;;) {
		uint64_t ri = c >> q->rbbits, rbo;
		uint64_t end_c = (q->file_size + q->csize - 1) >> q->cbits;
		uint64_t limit = (end_c > q->alloc_end ? end_c : q->alloc_end) + (1ULL << q->rbbits) + 1;
		if (c >> (56 - q->cbits))
			return ENOSPC;   /* offsets have 56 bits */
		if (c > limit)
			return q2_corrupt(q, "no free cluster: refcounts claim the space past the end of the file");
		if (ri >= q->rt_size) {
			int rc = grow_reftable(q, c);
			if (rc)
				return rc;
			continue;
		}
		int err = rb_offset(q, ri, &rbo);
		if (err)
			return err;
		if (!rbo) {
			err = new_refblock(q, ri, c);
			if (err)
				return err;
			continue;
		}
		uint8_t *rb = q2_cache_get(q, &q->rbc, rbo, &err);
		if (!rb)
			return err;
		uint64_t end = (ri + 1) << q->rbbits, mask = (1ULL << q->rbbits) - 1;
		while (c < end && c <= limit && (rb_get(q, rb, c & mask) || protected_cluster(q, c)))
			c++;
		if (c == end || c > limit)
			continue;
		/* A run of free clusters from c, inside this block: one write of its refcounts. */
		uint64_t n = 1;
		while (n < want && c + n < end && c + n <= limit && !rb_get(q, rb, (c + n) & mask) &&
		       !protected_cluster(q, c + n))
			n++;
		size_t lo = SIZE_MAX, hi = 0;
		for (uint64_t i = 0; i < n; i++) {
			size_t bo, bl;
			rb_set(q, rb, (c + i) & mask, 1, &bo, &bl);
			lo = bo < lo ? bo : lo;
			hi = bo + bl > hi ? bo + bl : hi;
		}
		err = q2_pwrite(q, rb + lo, hi - lo, rbo + lo);
		if (err) {
			q2_cache_drop(&q->rbc, rbo);   /* the file is the truth */
			return err;
		}
		q->free_hint = c + n;
		if (c + n > q->alloc_end)
			q->alloc_end = c + n;
		*off = c << q->cbits;
		*got = n;
		for (uint64_t i = 0; i < n; i++) {
			q2_cache_drop(&q->l2c, (c + i) << q->cbits);
			q2_cache_drop(&q->rbc, (c + i) << q->cbits);
		}
		return 0;
	}
}

int q2_unref(struct qcow2 *q, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	int ret = 0;
	for (uint64_t c = off >> q->cbits; c <= (off + len - 1) >> q->cbits; c++) {
		uint64_t rc;
		int err = q2_rc_get(q, c, &rc);
		if (!err && rc == 0)
			err = q2_corrupt(q, "freeing cluster 0x%llx whose refcount is 0",
			                 (unsigned long long)(c << q->cbits));
		if (!err)
			err = rc_set(q, c, rc - 1);
		if (err) {
			ret = ret ? ret : err;
			continue;
		}
		if (rc == 1) {
			if (c < q->free_hint)
				q->free_hint = c;
			q2_cache_drop(&q->l2c, c << q->cbits);
			q->cbuf_entry = 0;
		}
	}
	return ret;
}

int q2_ref(struct qcow2 *q, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	for (uint64_t c = off >> q->cbits; c <= (off + len - 1) >> q->cbits; c++) {
		uint64_t rc;
		int err = q2_rc_get(q, c, &rc);
		if (err)
			return err;
		if (rc == 0)
			return q2_corrupt(q, "cluster 0x%llx is in use but its refcount is 0",
			                  (unsigned long long)(c << q->cbits));
		if (rc >= q->rc_max)
			return EOVERFLOW;   /* refcount_bits too narrow for one more snapshot */
		if ((err = rc_set(q, c, rc + 1)))
			return err;
	}
	return 0;
}

/* Past the end of the file every cluster is free, so a run starts there;
 * a refcount block the allocator has to place inside the run breaks it,
 * and the run starts again after it (the clusters before are freed). */
int q2_alloc_run(struct qcow2 *q, uint64_t n, uint64_t *off)
{
	uint64_t end_c = (q->file_size + q->csize - 1) >> q->cbits;
	uint64_t first = 0, got = 0, o, hint = q->free_hint;
	q->free_hint = end_c > q->alloc_end ? end_c : q->alloc_end;
	while (got < n) {
		int rc = q2_alloc(q, &o);
		if (!rc && got && o != first + (got << q->cbits)) {
			rc = q2_unref(q, first, got << q->cbits);
			got = 0;
		}
		if (rc) {
			q->free_hint = hint;
			return rc;
		}
		if (!got)
			first = o;
		got++;
		q->free_hint = (o >> q->cbits) + 1;   /* q2_unref may have lowered it */
	}
	*off = first;
	q->free_hint = hint;   /* nothing below the run was freed */
	return 0;
}

void q2_cache_clear(struct q2_cache *c)
{
	for (unsigned i = 0; c->t && i < c->n; i++)
		if (c->t[i].off)
			cache_unlink(c, &c->t[i]);
}
