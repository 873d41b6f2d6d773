/*
 * qcow2 internal snapshots (the "Snapshots" section of QEMU's
 * docs/interop/qcow2.txt): the disk half of a checkpoint.  blockif takes
 * one when a checkpoint is saved and reverts to it when the checkpoint is
 * restored (docs/snapshot.md), the way QEMU's savevm/loadvm treat disks;
 * `qemu-img snapshot -l` lists them.
 *
 * A snapshot is a copy of the L1 table plus one more reference on every
 * cluster it reaches (its L2 tables, and the data clusters they point to,
 * counted once per L1 that reaches them, as `qemu-img check` counts).
 * The active image then shares those clusters; the write path never writes
 * in place into a cluster without the COPIED flag (qcow2.c), so the first
 * write after a snapshot copies.  COPIED must mean "refcount is exactly 1".
 *
 * Order of writes, so that a crash leaves leaked clusters at worst (but
 * for the COPIED flags, below):
 *   create:  L1 copy written -> COPIED cleared in the active L1/L2 tables
 *            -> sync -> references added -> sync -> new snapshot table
 *            -> sync -> header (count, offset) -> sync -> old table freed.
 *            Clearing COPIED first is the safe direction: a shared cluster
 *            that still said COPIED would be overwritten in place.
 *   revert:  references added for the snapshot's tree -> sync -> active L1
 *            overwritten with the snapshot's -> sync -> references of the
 *            old tree dropped -> COPIED set where a refcount is 1 again.
 *   delete:  snapshot table without it -> sync -> header -> sync ->
 *            references dropped -> COPIED set where a refcount is 1 again.
 * A crash between clearing COPIED and adding the references (create), or
 * in the last step of revert/delete, leaves clusters with refcount 1 and
 * no COPIED flag: data is safe (hyve and QEMU copy such a
 * cluster on write), `qemu-img check` reports the flag, `-r all` fixes it.
 *
 * Called through blk_format_ops with no request in flight; each takes the
 * image lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qcow2_internal.h"

#define SNAP_TABLE_MAX (64u << 20)   /* bytes of snapshot table, at most */
#define SNAP_EXTRA_MAX 1024          /* extra data per entry, as QEMU */
#define SNAP_EXTRA_OURS 16           /* vm_state_size_large, disk size */

struct snap {
	uint64_t l1_off;
	uint32_t l1_size;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock;
	uint32_t vmstate_size;
	uint32_t extra_len;
	uint8_t extra[SNAP_EXTRA_MAX];
	char *id, *name;
};

struct snaptab {
	struct snap *s;
	uint32_t n;
	uint64_t bytes;   /* of the table in the file */
};

static void tab_free(struct snaptab *t)
{
	for (uint32_t i = 0; t->s && i < t->n; i++) {
		free(t->s[i].id);
		free(t->s[i].name);
	}
	free(t->s);
	t->s = NULL;
	t->n = 0;
}

static char *read_str(struct qcow2 *q, uint64_t off, uint32_t len, int *rc)
{
	char *p = malloc(len + 1u);
	if (!p) {
		*rc = ENOMEM;
		return NULL;
	}
	if ((*rc = blk_pread_full(q->fd, p, len, off))) {
		free(p);
		return NULL;
	}
	p[len] = 0;
	if (strlen(p) != len) {   /* an embedded NUL */
		free(p);
		*rc = q2_corrupt(q, "snapshot name or ID with a NUL byte");
		return NULL;
	}
	return p;
}

/* The snapshot table the header points to, every entry checked. */
static int tab_read(struct qcow2 *q, struct snaptab *t)
{
	memset(t, 0, sizeof(*t));
	if (!q->nsnap)
		return 0;
	/* Each entry takes 40 bytes at least: a count the file cannot hold is
	 * refused before anything is allocated for it. */
	if (q->snap_off >= q->file_size || (q->file_size - q->snap_off) / 40 < q->nsnap)
		return q2_corrupt(q, "%u snapshots do not fit in the file", q->nsnap);
	if (!(t->s = calloc(q->nsnap, sizeof(*t->s))))
		return ENOMEM;
	uint64_t off = q->snap_off;
	int rc = 0;
	for (uint32_t i = 0; i < q->nsnap; i++) {
		struct snap *s = &t->s[i];
		t->n = i + 1;   /* tab_free frees what this entry got so far */
		uint8_t h[40];
		if (off - q->snap_off > SNAP_TABLE_MAX || off >= q->file_size || q->file_size - off < sizeof(h)) {
			rc = q2_corrupt(q, "the snapshot table runs past the end of the file");
			break;
		}
		if ((rc = blk_pread_full(q->fd, h, sizeof(h), off)))
			break;
		s->l1_off = q2_be64(h);
		s->l1_size = q2_be32(h + 8);
		uint32_t idlen = (uint32_t)h[12] << 8 | h[13], namelen = (uint32_t)h[14] << 8 | h[15];
		s->date_sec = q2_be32(h + 16);
		s->date_nsec = q2_be32(h + 20);
		s->vm_clock = q2_be64(h + 24);
		s->vmstate_size = q2_be32(h + 32);
		s->extra_len = q2_be32(h + 36);
		off += sizeof(h);
		if (s->extra_len > SNAP_EXTRA_MAX ||
		    (s->extra_len && (rc = blk_pread_full(q->fd, s->extra, s->extra_len, off)))) {
			rc = rc ? rc : q2_corrupt(q, "snapshot %u: %u bytes of extra data", i, s->extra_len);
			break;
		}
		off += s->extra_len;
		if (!(s->id = read_str(q, off, idlen, &rc)) || !(s->name = read_str(q, off + idlen, namelen, &rc)))
			break;
		off += idlen + namelen;
		off = (off + 7) & ~7ULL;
		if ((s->l1_off & (q->csize - 1)) || (uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
		    (s->l1_size && (!s->l1_off || s->l1_off > q->file_size ||
		                    (uint64_t)s->l1_size * 8 > q->file_size - s->l1_off))) {
			rc = q2_corrupt(q, "snapshot '%s': L1 table misaligned or beyond the end of the file", s->id);
			break;
		}
	}
	t->bytes = off - q->snap_off;
	if (rc)
		tab_free(t);
	return rc;
}

static uint8_t *tab_serialize(const struct snaptab *t, uint64_t *len)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < t->n; i++)
		n += (40 + t->s[i].extra_len + strlen(t->s[i].id) + strlen(t->s[i].name) + 7) & ~7ULL;
	uint8_t *b = calloc(1, n ? n : 1), *p = b;
	if (!b)
		return NULL;
	for (uint32_t i = 0; i < t->n; i++) {
		const struct snap *s = &t->s[i];
		size_t idlen = strlen(s->id), namelen = strlen(s->name);
		q2_put64(p, s->l1_off);
		q2_put32(p + 8, s->l1_size);
		p[12] = (uint8_t)(idlen >> 8);
		p[13] = (uint8_t)idlen;
		p[14] = (uint8_t)(namelen >> 8);
		p[15] = (uint8_t)namelen;
		q2_put32(p + 16, s->date_sec);
		q2_put32(p + 20, s->date_nsec);
		q2_put64(p + 24, s->vm_clock);
		q2_put32(p + 32, s->vmstate_size);
		q2_put32(p + 36, s->extra_len);
		memcpy(p + 40, s->extra, s->extra_len);
		memcpy(p + 40 + s->extra_len, s->id, idlen);
		memcpy(p + 40 + s->extra_len + idlen, s->name, namelen);
		p += (40 + s->extra_len + idlen + namelen + 7) & ~7ULL;
	}
	*len = n;
	return b;
}

/* Write t as the new snapshot table, switch the header to it, free the old. */
static int tab_write(struct qcow2 *q, const struct snaptab *t, const struct snaptab *old)
{
	uint64_t len = 0, off = 0;
	uint8_t *b = tab_serialize(t, &len);
	if (!b)
		return ENOMEM;
	int rc = 0;
	if (len > SNAP_TABLE_MAX)
		rc = EFBIG;
	if (!rc && len)
		rc = q2_alloc_run(q, (len + q->csize - 1) >> q->cbits, &off);
	if (!rc && len)
		rc = q2_pwrite(q, b, len, off);
	free(b);
	if (!rc)
		rc = q2_sync(q);
	uint8_t h[12];
	q2_put32(h, t->n);
	q2_put64(h + 4, off);
	if (!rc)
		rc = q2_pwrite(q, h, sizeof(h), 60);
	if (!rc)
		rc = q2_sync(q);
	if (rc)
		return rc;
	uint64_t old_off = q->snap_off;
	q->nsnap = t->n;
	q->snap_off = off;
	return old->n && old->bytes ? q2_unref(q, old_off, old->bytes) : 0;
}

static int read_l1(struct qcow2 *q, uint64_t off, uint32_t n, uint64_t **out)
{
	uint8_t *raw = malloc(n ? (size_t)n * 8 : 1);
	uint64_t *l1 = calloc(n ? n : 1, 8);
	int rc = raw && l1 ? (n ? blk_pread_full(q->fd, raw, (size_t)n * 8, off) : 0) : ENOMEM;
	for (uint32_t i = 0; !rc && i < n; i++)
		l1[i] = q2_be64(raw + 8 * i);
	free(raw);
	if (rc)
		free(l1);
	else
		*out = l1;
	return rc;
}

/*
 * One reference more (delta +1) or less (-1) on every cluster the L1 table
 * reaches: data clusters first, then the L2 table (which may be freed).
 */
static int walk_refs(struct qcow2 *q, const uint64_t *l1, uint32_t l1_size, int delta)
{
	uint8_t *t = malloc(q->csize);
	int rc = t ? 0 : ENOMEM;
	for (uint32_t i = 0; !rc && i < l1_size; i++) {
		uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK;
		if (!l2off)
			continue;
		uint8_t *c = q2_cache_get(q, &q->l2c, l2off, &rc);
		if (!c)
			break;
		memcpy(t, c, q->csize);
		for (uint64_t j = 0; !rc && j < q->csize / 8; j++) {
			struct relist r;
			uint64_t e = q2_be64(t + 8 * j);
			if (e && !(rc = q2_entry_refs(q, e, &r)) && r.len)
				rc = delta > 0 ? q2_ref(q, r.off, r.len) : q2_unref(q, r.off, r.len);
		}
		if (!rc)
			rc = delta > 0 ? q2_ref(q, l2off, q->csize) : q2_unref(q, l2off, q->csize);
	}
	free(t);
	return rc;
}

/*
 * Make the active tables' COPIED flags true again: set exactly where the
 * refcount is 1 (from_rc), or clear them all (before references are added).
 */
static int fix_copied(struct qcow2 *q, bool from_rc)
{
	uint8_t *t = malloc(q->csize);
	int rc = t ? 0 : ENOMEM;
	for (uint32_t i = 0; !rc && i < q->l1_size; i++) {
		uint64_t l2off = q->l1[i] & QCOW2_OFFSET_MASK, cnt = 0;
		if (!l2off)
			continue;
		if (from_rc && (rc = q2_rc_get(q, l2off >> q->cbits, &cnt)))
			break;
		uint64_t l1e = l2off | (cnt == 1 ? QCOW2_OFLAG_COPIED : 0);
		if (l1e != q->l1[i]) {
			uint8_t ent[8];
			q2_put64(ent, l1e);
			if ((rc = q2_pwrite(q, ent, 8, q->l1_off + 8ULL * i)))
				break;
			q->l1[i] = l1e;
		}
		uint8_t *c = q2_cache_get(q, &q->l2c, l2off, &rc);
		if (!c)
			break;
		memcpy(t, c, q->csize);
		bool changed = false;
		for (uint64_t j = 0; !rc && j < q->csize / 8; j++) {
			uint64_t e = q2_be64(t + 8 * j), host = e & QCOW2_OFFSET_MASK, ne = e & ~QCOW2_OFLAG_COPIED;
			if (e & QCOW2_OFLAG_COMPRESSED)
				continue;
			if (host && from_rc && !(rc = q2_rc_get(q, host >> q->cbits, &cnt)) && cnt == 1)
				ne |= QCOW2_OFLAG_COPIED;
			if (ne != e) {
				q2_put64(t + 8 * j, ne);
				changed = true;
			}
		}
		if (!rc && changed && !(rc = q2_pwrite(q, t, q->csize, l2off)))
			q2_cache_put(q, &q->l2c, l2off, t);
	}
	free(t);
	return rc;
}

static struct snap *tab_find(const struct snaptab *t, const char *id, const char *name)
{
	for (uint32_t i = 0; i < t->n; i++)
		if (!strcmp(t->s[i].id, id) && (!name || !strcmp(t->s[i].name, name)))
			return &t->s[i];
	return NULL;
}

int q2_snapshot_list(struct blk_image *img, struct blk_snapinfo **out, unsigned *n)
{
	struct qcow2 *q = img->priv;
	struct snaptab t;
	pthread_mutex_lock(&q->lock);
	int rc = tab_read(q, &t);
	pthread_mutex_unlock(&q->lock);
	if (rc)
		return rc;
	struct blk_snapinfo *s = calloc(t.n ? t.n : 1, sizeof(*s));
	for (uint32_t i = 0; s && i < t.n; i++) {
		snprintf(s[i].id, sizeof(s[i].id), "%s", t.s[i].id);
		s[i].date_sec = t.s[i].date_sec;
		s[i].name = t.s[i].name;
		t.s[i].name = NULL;
	}
	if (s)
		*n = t.n;
	tab_free(&t);
	*out = s;
	return s ? 0 : ENOMEM;
}

static int create_locked(struct qcow2 *q, const char *name, char *id, size_t idlen)
{
	struct snaptab old, nt = { 0 };
	if (q->rc_max < 2)
		return EOVERFLOW;   /* refcount_bits=1: no cluster can have two owners */
	int rc = q2_commit(q);
	if (rc || (rc = tab_read(q, &old)))
		return rc;
	if (rc)
		return rc;
	if (strlen(name) > 0xffff || old.n >= 65536) {
		tab_free(&old);
		return EINVAL;
	}
	unsigned long long next = 1;
	for (uint32_t i = 0; i < old.n; i++) {
		char *end;
		unsigned long long v = strtoull(old.s[i].id, &end, 10);
		if (!*end && v >= next)
			next = v + 1;
	}
	uint64_t l1bytes = (uint64_t)q->l1_size * 8, l1off = 0;
	uint8_t *raw = calloc(1, l1bytes ? l1bytes : 1);
	rc = raw ? 0 : ENOMEM;
	/* 1. The L1 copy (COPIED means nothing in a snapshot's table). */
	for (uint32_t i = 0; i < q->l1_size && raw; i++)
		q2_put64(raw + 8 * i, q->l1[i] & ~QCOW2_OFLAG_COPIED);
	if (!rc && l1bytes && !(rc = q2_alloc_run(q, (l1bytes + q->csize - 1) >> q->cbits, &l1off)))
		rc = q2_pwrite(q, raw, l1bytes, l1off);
	free(raw);
	/* 2. No cluster of the active image is ours alone any more. */
	if (!rc && !(rc = fix_copied(q, false)))
		rc = q2_sync(q);
	if (!rc && !(rc = walk_refs(q, q->l1, q->l1_size, +1)))
		rc = q2_sync(q);
	/* 3. The table with the new entry. */
	if (!rc && !(nt.s = calloc(old.n + 1, sizeof(*nt.s))))
		rc = ENOMEM;
	if (!rc) {
		if (old.n)
			memcpy(nt.s, old.s, old.n * sizeof(*nt.s));
		struct snap *s = &nt.s[old.n];
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		char idbuf[24];
		snprintf(idbuf, sizeof(idbuf), "%llu", next);
		*s = (struct snap){ .l1_off = l1off, .l1_size = q->l1_size, .date_sec = (uint32_t)ts.tv_sec,
		                    .date_nsec = (uint32_t)ts.tv_nsec, .extra_len = SNAP_EXTRA_OURS,
		                    .id = idbuf, .name = (char *)name };
		q2_put64(s->extra + 8, q->img->size);
		nt.n = old.n + 1;
		rc = tab_write(q, &nt, &old);
		if (!rc)
			snprintf(id, idlen, "%s", idbuf);
		free(nt.s);   /* the strings belong to old (and to the caller) */
	}
	tab_free(&old);
	return rc;
}

int q2_snapshot_create(struct blk_image *img, const char *name, char *id, size_t idlen)
{
	struct qcow2 *q = img->priv;
	pthread_mutex_lock(&q->lock);
	int rc = create_locked(q, name, id, idlen);
	pthread_mutex_unlock(&q->lock);
	return rc;
}

static int revert_locked(struct qcow2 *q, const char *id, const char *name, char *err, size_t errlen)
{
	const char *P = q->img->path;
	struct snaptab t;
	int rc = q2_commit(q);
	if (!rc)
		rc = tab_read(q, &t);
	if (rc) {
		snprintf(err, errlen, "%s: cannot read the snapshot table: %s", P, strerror(rc));
		return rc;
	}
	struct snap *s = tab_find(&t, id, name);
	uint64_t *l1 = NULL;
	if (!s) {
		snprintf(err, errlen, "%s: has no snapshot '%s' (ID %s); the image is not the one the checkpoint was "
		         "taken with, or the snapshot was deleted", P, name, id);
		rc = ENOENT;
	} else if (s->l1_size > q->l1_size ||
	           (s->extra_len >= SNAP_EXTRA_OURS && q2_be64(s->extra + 8) != q->img->size)) {
		snprintf(err, errlen, "%s: snapshot '%s' has another disk size than the image", P, name);
		rc = EINVAL;
	} else if ((rc = read_l1(q, s->l1_off, s->l1_size, &l1))) {
		snprintf(err, errlen, "%s: cannot read snapshot '%s': %s", P, name, strerror(rc));
	}
	uint64_t *nl1 = NULL;
	if (!rc && !(nl1 = calloc(q->l1_size ? q->l1_size : 1, 8)))
		rc = ENOMEM;
	uint8_t *raw = NULL;
	if (!rc && !(raw = calloc(q->l1_size ? q->l1_size : 1, 8)))
		rc = ENOMEM;
	if (!rc) {
		for (uint32_t i = 0; i < s->l1_size; i++)
			nl1[i] = l1[i] & ~QCOW2_OFLAG_COPIED;
		for (uint32_t i = 0; i < q->l1_size; i++)
			q2_put64(raw + 8 * i, nl1[i]);
		/* The snapshot's tree gets the active image's references ... */
		if (!(rc = walk_refs(q, nl1, q->l1_size, +1)) && !(rc = q2_sync(q)) &&
		    !(rc = q2_pwrite(q, raw, (size_t)q->l1_size * 8, q->l1_off)) && !(rc = q2_sync(q))) {
			/* ... which the old tree loses. */
			uint64_t *old = q->l1;
			q->l1 = nl1;
			nl1 = old;
			q->cbuf_entry = 0;
			rc = walk_refs(q, nl1, q->l1_size, -1);
			if (!rc && !(rc = fix_copied(q, true)))
				rc = q2_sync(q);
		}
		if (rc)
			snprintf(err, errlen, "%s: reverting to snapshot '%s' failed: %s", P, name, strerror(rc));
	}
	free(raw);
	free(nl1);
	free(l1);
	tab_free(&t);
	return rc;
}

int q2_snapshot_revert(struct blk_image *img, const char *id, const char *name, char *err, size_t errlen)
{
	struct qcow2 *q = img->priv;
	pthread_mutex_lock(&q->lock);
	int rc = revert_locked(q, id, name, err, errlen);
	pthread_mutex_unlock(&q->lock);
	return rc;
}

static int delete_locked(struct qcow2 *q, const char *id)
{
	struct snaptab t, nt = { 0 };
	int rc = q2_commit(q);
	if (rc || (rc = tab_read(q, &t)))
		return rc;
	struct snap *s = tab_find(&t, id, NULL);
	uint64_t *l1 = NULL;
	if (!s)
		rc = ENOENT;
	else if (!(rc = read_l1(q, s->l1_off, s->l1_size, &l1)) && !(nt.s = calloc(t.n, sizeof(*nt.s))))
		rc = ENOMEM;
	if (!rc) {
		for (uint32_t i = 0; i < t.n; i++)
			if (&t.s[i] != s)
				nt.s[nt.n++] = t.s[i];
		uint64_t l1off = s->l1_off, l1bytes = (uint64_t)s->l1_size * 8;
		if (!(rc = tab_write(q, &nt, &t)) && !(rc = walk_refs(q, l1, s->l1_size, -1)) &&
		    !(rc = l1bytes ? q2_unref(q, l1off, l1bytes) : 0) && !(rc = fix_copied(q, true)))
			rc = q2_sync(q);
	}
	free(nt.s);
	free(l1);
	tab_free(&t);
	return rc;
}

int q2_snapshot_delete(struct blk_image *img, const char *id)
{
	struct qcow2 *q = img->priv;
	pthread_mutex_lock(&q->lock);
	int rc = delete_locked(q, id);
	pthread_mutex_unlock(&q->lock);
	return rc;
}
