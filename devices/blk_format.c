/*
 * blk_format: probing, opening, and the raw format.  See blk_format.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blk_format.h"

/* ---- I/O helpers ---- */

int blk_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return EIO;
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

int blk_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t r = pwrite(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return EIO;
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

static void iov_skip(struct iovec **iov, int *cnt, size_t n)
{
	while (n > 0 && *cnt > 0) {
		if (n >= (*iov)->iov_len) {
			n -= (*iov)->iov_len;
			(*iov)++;
			(*cnt)--;
		} else {
			(*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
			(*iov)->iov_len -= n;
			n = 0;
		}
	}
	while (*cnt > 0 && (*iov)->iov_len == 0) {
		(*iov)++;
		(*cnt)--;
	}
}

int blk_preadv_zfill(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
	while (iovcnt > 0 && iov->iov_len == 0) {
		iov++;
		iovcnt--;
	}
	while (iovcnt > 0) {
		ssize_t r = preadv(fd, iov, iovcnt, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0) {   /* end of file: the rest reads as zeros */
			for (int i = 0; i < iovcnt; i++)
				memset(iov[i].iov_base, 0, iov[i].iov_len);
			return 0;
		}
		off += (uint64_t)r;
		iov_skip(&iov, &iovcnt, (size_t)r);
	}
	return 0;
}

int blk_pwritev_full(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
	while (iovcnt > 0 && iov->iov_len == 0) {
		iov++;
		iovcnt--;
	}
	while (iovcnt > 0) {
		ssize_t r = pwritev(fd, iov, iovcnt, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return EIO;
		off += (uint64_t)r;
		iov_skip(&iov, &iovcnt, (size_t)r);
	}
	return 0;
}

/* ---- raw ---- */

static int raw_open(struct blk_image *img, const struct blk_open_opts *o, char *err, size_t errlen)
{
	(void)o;
	struct stat st;
	if (fstat(img->fd, &st)) {
		snprintf(err, errlen, "%s: %s", img->path, strerror(errno));
		return -1;
	}
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		if (ioctl(img->fd, BLKGETSIZE64, &sz)) {
			snprintf(err, errlen, "%s: BLKGETSIZE64: %s", img->path, strerror(errno));
			return -1;
		}
		img->size = sz;
	} else {
		img->size = (uint64_t)st.st_size;
	}
	return 0;
}

static void raw_close(struct blk_image *img) { (void)img; }

/* The caller's iovec is const: copy it (bounded by IOV_MAX in practice). */
static int raw_rw(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off, bool wr)
{
	struct iovec stackv[64], *v = stackv;
	if (iovcnt > 64 && !(v = malloc(sizeof(*v) * (size_t)iovcnt)))
		return ENOMEM;
	memcpy(v, iov, sizeof(*v) * (size_t)iovcnt);
	int rc = wr ? blk_pwritev_full(img->fd, v, iovcnt, off) : blk_preadv_zfill(img->fd, v, iovcnt, off);
	if (v != stackv)
		free(v);
	return rc;
}

static int raw_readv(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off)
{
	return raw_rw(img, iov, iovcnt, off, false);
}

static int raw_writev(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off)
{
	return raw_rw(img, iov, iovcnt, off, true);
}

static int raw_flush(struct blk_image *img) { return fdatasync(img->fd) ? errno : 0; }

static int raw_write_zeroes(struct blk_image *img, uint64_t off, uint64_t len, bool unmap)
{
	int mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	if (fallocate(img->fd, mode, (off_t)off, (off_t)len) == 0)
		return 0;
	static const uint8_t zeros[65536];
	while (len > 0) {
		size_t c = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
		int rc = blk_pwrite_full(img->fd, zeros, c, off);
		if (rc)
			return rc;
		off += c;
		len -= c;
	}
	return 0;
}

static int raw_discard(struct blk_image *img, uint64_t off, uint64_t len)
{
	return raw_write_zeroes(img, off, len, true);
}

const struct blk_format_ops blk_format_raw = {
	.name = "raw",
	.open = raw_open,
	.close = raw_close,
	.readv = raw_readv,
	.writev = raw_writev,
	.flush = raw_flush,
	.discard = raw_discard,
	.write_zeroes = raw_write_zeroes,
};

/* ---- probing and opening ---- */

const char *blk_format_probe(int fd)
{
	/* One aligned 4 KiB block: the descriptor may be O_DIRECT. */
	uint8_t *m;
	if (posix_memalign((void **)&m, 4096, 4096))
		return NULL;
	ssize_t r;
	do
		r = pread(fd, m, 4096, 0);
	while (r < 0 && errno == EINTR);
	const char *f = r < 0 ? NULL
	                : r >= 4 && m[0] == 'Q' && m[1] == 'F' && m[2] == 'I' && m[3] == 0xfb ? "qcow2" : "raw";
	int e = errno;
	free(m);
	errno = e;
	return f;
}

const struct blk_format_ops *blk_format_find(const char *name)
{
	if (!strcmp(name, "raw"))
		return &blk_format_raw;
	if (!strcmp(name, "qcow2"))
		return &blk_format_qcow2;
	return NULL;
}

struct blk_image *blk_image_open_fd(int fd, bool own_fd, const char *path, const char *format,
                                    const struct blk_open_opts *o, char *err, size_t errlen)
{
	struct blk_open_opts oo = *o;
	struct stat st;
	if (fstat(fd, &st)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail_fd;
	}
	if (o->depth > BLK_MAX_CHAIN) {
		snprintf(err, errlen, "%s: backing chain deeper than %d images", path, BLK_MAX_CHAIN);
		goto fail_fd;
	}
	for (const struct blk_chain *c = o->chain; c; c = c->up) {
		if (c->dev == st.st_dev && c->ino == st.st_ino) {
			snprintf(err, errlen, "%s: backing file loop (the file is already in the chain above it)", path);
			goto fail_fd;
		}
	}
	if (!format) {
		format = blk_format_probe(fd);
		if (!format) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto fail_fd;
		}
		oo.probed = true;
	}
	const struct blk_format_ops *ops = blk_format_find(format);
	if (!ops) {
		snprintf(err, errlen, "%s: unknown image format '%s' (raw or qcow2)", path, format);
		goto fail_fd;
	}
	struct blk_image *img = calloc(1, sizeof(*img));
	if (!img || !(img->path = strdup(path))) {
		free(img);
		snprintf(err, errlen, "%s: out of memory", path);
		goto fail_fd;
	}
	img->ops = ops;
	img->fd = fd;
	img->own_fd = own_fd;
	img->ro = o->ro;
	img->dev = st.st_dev;
	img->ino = st.st_ino;
	if (ops->open(img, &oo, err, errlen)) {
		if (own_fd)
			close(fd);
		free(img->path);
		free(img);
		return NULL;
	}
	return img;
fail_fd:
	if (own_fd)
		close(fd);
	return NULL;
}

struct blk_image *blk_image_open(const char *path, const char *format, const struct blk_open_opts *o,
                                 char *err, size_t errlen)
{
	int fd = open(path, (o->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	return blk_image_open_fd(fd, true, path, format, o, err, errlen);
}

void blk_image_close(struct blk_image *img)
{
	if (!img)
		return;
	img->ops->close(img);
	if (img->own_fd)
		close(img->fd);
	free(img->path);
	free(img);
}

/* Ranges are checked here once for every format. */
static int range_ok(const struct blk_image *img, uint64_t off, uint64_t len)
{
	return off <= img->size && len <= img->size - off;
}

static size_t iov_len(const struct iovec *iov, int n)
{
	size_t t = 0;
	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

int blk_image_readv(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off)
{
	if (!range_ok(img, off, iov_len(iov, iovcnt)))
		return EIO;
	return img->ops->readv(img, iov, iovcnt, off);
}

int blk_image_writev(struct blk_image *img, const struct iovec *iov, int iovcnt, uint64_t off)
{
	if (img->ro)
		return EROFS;
	if (!range_ok(img, off, iov_len(iov, iovcnt)))
		return EIO;
	return img->ops->writev(img, iov, iovcnt, off);
}

int blk_image_read(struct blk_image *img, void *buf, size_t len, uint64_t off)
{
	struct iovec v = { buf, len };
	return blk_image_readv(img, &v, 1, off);
}

int blk_image_write(struct blk_image *img, const void *buf, size_t len, uint64_t off)
{
	struct iovec v = { (void *)buf, len };
	return blk_image_writev(img, &v, 1, off);
}

int blk_image_flush(struct blk_image *img) { return img->ops->flush(img); }

int blk_image_discard(struct blk_image *img, uint64_t off, uint64_t len)
{
	if (img->ro)
		return EROFS;
	if (!range_ok(img, off, len))
		return EIO;
	return len ? img->ops->discard(img, off, len) : 0;
}

int blk_image_write_zeroes(struct blk_image *img, uint64_t off, uint64_t len, bool unmap)
{
	if (img->ro)
		return EROFS;
	if (!range_ok(img, off, len))
		return EIO;
	return len ? img->ops->write_zeroes(img, off, len, unmap) : 0;
}

int blk_image_snapshot_create(struct blk_image *img, const char *name, char *id, size_t idlen)
{
	if (!img->ops->snapshot_create)
		return ENOTSUP;
	return img->ro ? EROFS : img->ops->snapshot_create(img, name, id, idlen);
}

int blk_image_snapshot_revert(struct blk_image *img, const char *id, const char *name, char *err, size_t errlen)
{
	if (!img->ops->snapshot_revert) {
		snprintf(err, errlen, "%s: a %s image has no snapshots", img->path, img->ops->name);
		return ENOTSUP;
	}
	if (img->ro) {
		snprintf(err, errlen, "%s: opened read-only, cannot revert it to a snapshot", img->path);
		return EROFS;
	}
	return img->ops->snapshot_revert(img, id, name, err, errlen);
}

int blk_image_snapshot_delete(struct blk_image *img, const char *id)
{
	if (!img->ops->snapshot_delete)
		return ENOTSUP;
	return img->ro ? EROFS : img->ops->snapshot_delete(img, id);
}

int blk_image_snapshot_list(struct blk_image *img, struct blk_snapinfo **out, unsigned *n)
{
	*out = NULL;
	*n = 0;
	return img->ops->snapshot_list ? img->ops->snapshot_list(img, out, n) : 0;
}

void blk_snapinfo_free(struct blk_snapinfo *s, unsigned n)
{
	for (unsigned i = 0; s && i < n; i++)
		free(s[i].name);
	free(s);
}

int blk_image_reload(struct blk_image *img, char *err, size_t errlen)
{
	return img->ops->reload ? img->ops->reload(img, err, errlen) : 0;
}
