/*
 * qcow2 internals shared by devices/qcow2.c (header, read/write paths) and
 * devices/qcow2_meta.c (metadata caches, refcounts, cluster allocation).
 * See the comment at the top of qcow2.c for the on-disk ordering rules.
 */
#ifndef HYVE_QCOW2_INTERNAL_H
#define HYVE_QCOW2_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "blk_format.h"

#define QCOW2_MAGIC          0x514649fbu   /* "QFI\xfb" */
#define QCOW2_MIN_CBITS      9
#define QCOW2_MAX_CBITS      21
#define QCOW2_MAX_L1_BYTES   (32u << 20)    /* as QEMU's QCOW_MAX_L1_SIZE */
#define QCOW2_MAX_RT_BYTES   (8u << 20)     /* as QEMU's QCOW_MAX_REFTABLE_SIZE */

/* L1/L2 entry bits */
#define QCOW2_OFLAG_COPIED     (1ULL << 63)   /* refcount is exactly 1 */
#define QCOW2_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW2_OFLAG_ZERO       1ULL           /* v3 */
#define QCOW2_OFFSET_MASK      0x00fffffffffffe00ULL
#define QCOW2_RT_OFFSET_MASK   0xfffffffffffffe00ULL

/* Header feature bits */
#define QCOW2_INCOMPAT_DIRTY      (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT    (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE  (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESS   (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2      (1ULL << 4)
#define QCOW2_COMPAT_LAZY_REFCNT  (1ULL << 0)

/* A cache of metadata tables (L2 tables or refcount blocks), each one
 * cluster, kept as on disk (big-endian).  Write-through, except for the
 * L2 entries of allocating writes, which wait in their (dirty, pinned)
 * table for the next q2_commit (qcow2.c, "Deferred links").  Found by a
 * hash of the offset; the victim is picked by the clock algorithm. */
struct q2_table {
	uint64_t off;    /* host offset, 0: free slot */
	uint8_t *data;   /* allocated on first use */
	int next;        /* hash chain, -1: end */
	bool ref;        /* used since the clock hand last passed */
	bool dirty;      /* holds L2 entries not written yet (q2_commit); never evicted */
};

struct q2_cache {
	struct q2_table *t;
	unsigned n;      /* slots */
	int *head;       /* hash buckets */
	unsigned hbits;
	unsigned hand;
	uint64_t hits, misses;
};

struct qcow2 {
	struct blk_image *img;
	int fd;
	pthread_mutex_t lock;   /* everything below, for a whole request */

	uint32_t version;
	uint32_t cbits;         /* cluster bits */
	uint64_t csize;         /* cluster size */
	uint32_t l2bits;        /* log2(entries per L2 table) */
	uint32_t rc_order;      /* refcount width is 1 << rc_order bits */
	uint32_t rbbits;        /* log2(refcounts per refcount block) */
	uint64_t rc_max;
	uint64_t incompat, compat, autoclear;
	uint8_t compression;    /* 0 deflate, 1 zstd */
	uint32_t csize_shift;   /* compressed descriptors */
	uint64_t csize_mask, coff_mask;

	uint64_t l1_off;
	uint32_t l1_size;
	uint64_t *l1;           /* host byte order */
	uint64_t rt_off;
	uint64_t rt_clusters;
	uint32_t nsnap;         /* internal snapshots (qcow2_snapshot.c) */
	uint64_t snap_off;
	uint64_t rt_size;       /* entries */
	uint64_t *rt;           /* host byte order */

	uint64_t file_size;     /* bytes; grows as clusters are written */
	uint64_t free_hint;     /* no free cluster below this index */
	uint64_t alloc_end;     /* clusters this process allocated end here */

	struct q2_cache l2c, rbc;
	struct blk_image *backing;

	uint8_t *cbuf;          /* last decompressed cluster */
	uint64_t cbuf_entry;    /* its L2 entry, 0: none */
	uint8_t *zin;           /* compressed bytes */
	void *zstd;             /* ZSTD_DCtx */
	uint8_t *bounce;        /* one cluster: partial-cluster merges */
	uint8_t *zeros;         /* one cluster of zeros */
	struct iovec *sv;       /* scratch iovec slices */
	int svcap;

	bool warned;            /* one log line about corruption per image */
	unsigned pending;       /* L2 entries waiting in dirty tables */
	bool writethrough;      /* O_SYNC ("direct"): commit at once, every write is durable */
	/* Guest clusters whose allocating write runs its data I/O without the
	 * lock (qcow2.c, write_chunk): other writes and zeroing of them wait. */
	struct { uint64_t gc0, n, id; } busy[16];
	unsigned nbusy;
	uint64_t busy_ids;
	pthread_cond_t busy_cv;
};

/* ---- qcow2_meta.c ---- */
int q2_cache_init(struct q2_cache *c, unsigned slots);
void q2_cache_free(struct q2_cache *c);
/* The table at host offset off (loaded if needed); NULL with *err. */
uint8_t *q2_cache_get(struct qcow2 *q, struct q2_cache *c, uint64_t off, int *err);
/* Put a table just written to the file into the cache. */
void q2_cache_put(struct qcow2 *q, struct q2_cache *c, uint64_t off, const uint8_t *data);
void q2_cache_drop(struct q2_cache *c, uint64_t off);
void q2_cache_set_dirty(struct q2_cache *c, uint64_t off);

int q2_rc_get(struct qcow2 *q, uint64_t cluster, uint64_t *rc);
/* Allocate one cluster: refcount 1 written (not flushed). */
int q2_alloc(struct qcow2 *q, uint64_t *off);
/* Up to want clusters in a row (at least one; *got says how many), their
 * refcounts written with one write. */
int q2_alloc_n(struct qcow2 *q, uint64_t want, uint64_t *off, uint64_t *got);
/* Drop one reference to each cluster of [off, off + len) (after the
 * references are gone from the file). */
int q2_unref(struct qcow2 *q, uint64_t off, uint64_t len);
/* Add one reference to each cluster of [off, off + len) (each must be in
 * use already: a reference to a free cluster is corruption). */
int q2_ref(struct qcow2 *q, uint64_t off, uint64_t len);
/* n clusters in a row, refcounts 1 (not flushed). */
int q2_alloc_run(struct qcow2 *q, uint64_t n, uint64_t *off);
void q2_cache_clear(struct q2_cache *c);

/* ---- qcow2.c ---- */
/* The host clusters L2 entry e holds a reference to (len 0: none). */
struct relist {
	uint64_t off, len;
};
int q2_entry_refs(struct qcow2 *q, uint64_t e, struct relist *r);
/* Write the deferred L2 entries: sync (their data and refcounts reach the
 * disk first), then every dirty table.  0 or an errno. */
int q2_commit(struct qcow2 *q);
/* Re-read the header and tables from the file (another process wrote it). */
int q2_reload(struct qcow2 *q, char *err, size_t errlen);

/* ---- qcow2_snapshot.c ---- */
int q2_snapshot_list(struct blk_image *img, struct blk_snapinfo **out, unsigned *n);
int q2_snapshot_create(struct blk_image *img, const char *name, char *id, size_t idlen);
int q2_snapshot_revert(struct blk_image *img, const char *id, const char *name, char *err, size_t errlen);
int q2_snapshot_delete(struct blk_image *img, const char *id);

/* Write to / sync the image file (every metadata write goes through here). */
int q2_pwrite(struct qcow2 *q, const void *buf, size_t len, uint64_t off);
int q2_sync(struct qcow2 *q);
/* Reports corruption found at run time (logged once), returns EIO. */
int q2_corrupt(struct qcow2 *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline uint64_t q2_be64(const uint8_t *p)
{
	return (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 | (uint64_t)p[2] << 40 | (uint64_t)p[3] << 32 |
	       (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 | (uint64_t)p[6] << 8 | p[7];
}
static inline uint32_t q2_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void q2_put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline void q2_put32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/*
 * Test hook: when set, called before every write and sync of the image
 * file (tests/unit/test_qcow2.c ends the process there to check that every
 * prefix of the write sequence leaves a consistent image; "grow" marks
 * the start of a refcount table replacement).  NULL in hyve.
 */
extern void (*qcow2_io_hook)(const char *what);

#endif
