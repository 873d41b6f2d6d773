/*
 * Checkpoint file writer and reader (docs/snapshot.md has the format).
 *
 * Layout: a 64-byte file header, then sections, each a 64-byte section
 * header followed by its data: "config", the vmstate sections, "memory",
 * and "end".  Every header carries a CRC32 of itself, and every section a
 * CRC32 of its data — except RAM, whose CRC covers only its descriptor so
 * that restore can map the file lazily instead of reading it all.  RAM is
 * stored page-aligned and zero pages are left as holes in a sparse file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "checkpoint.h"
#include "config.h"
#include "log.h"
#include "vmstate.h"

#define CKPT_MAGIC "HYVECKPT"
#define CKPT_MAJOR 1          /* incompatible changes */
#define CKPT_MINOR 0          /* compatible additions */
#define CKPT_HDR_SIZE 64
#define SEC_HDR_SIZE 64
#define SEC_F_ALIGNED 0x1     /* data starts on a 4 KiB boundary */
#define SEC_F_CRC_PREFIX 0x2  /* CRC covers the first MEM_DESC_SIZE bytes only */
#define MEM_PAGE 4096
#define MEM_DESC_SIZE 4096
#define MEM_MAX_REGIONS 8
#define MAX_SECTION_BYTES (64u << 20)   /* any non-RAM section; a bound for corrupt lengths */
#define HYVE_VERSION_STRING "hyve 0.2"

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

static uint32_t crc(const void *p, size_t n)
{
	return (uint32_t)crc32_z(0, p, n);
}

static int pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = pwrite(fd, b, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

static int pread_all(int fd, void *p, size_t n, uint64_t off)
{
	uint8_t *b = p;
	while (n) {
		ssize_t r = pread(fd, b, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* ---- writer ---- */

struct writer {
	int fd;
	uint64_t off;
};

static int write_section(struct writer *w, const char *name, uint32_t version, uint32_t flags,
                         const void *data, uint64_t len, uint64_t data_off, uint32_t data_crc)
{
	uint8_t h[SEC_HDR_SIZE];
	memset(h, 0, sizeof(h));
	snprintf((char *)h, 32, "%s", name);
	put32(h + 32, version);
	put32(h + 36, flags);
	put64(h + 40, len);
	put64(h + 48, data_off);
	put32(h + 56, data_crc);
	put32(h + 60, crc(h, 60));
	if (pwrite_all(w->fd, h, sizeof(h), w->off))
		return -1;
	if (data && len && pwrite_all(w->fd, data, (size_t)len, data_off))
		return -1;
	w->off = data_off + len;
	return 0;
}

static int write_plain(struct writer *w, const char *name, uint32_t version, const void *data, size_t len)
{
	return write_section(w, name, version, 0, data, len, w->off + SEC_HDR_SIZE, crc(data, len));
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)(const void *)p;
	for (int i = 0; i < MEM_PAGE / 8; i += 4)
		if (q[i] | q[i + 1] | q[i + 2] | q[i + 3])
			return false;
	return true;
}

/* RAM: descriptor page, then each region's pages; zero pages stay holes. */
static int write_memory(struct writer *w, struct vmctx *ctx, uint64_t *written)
{
	struct vm_mem_region r[MEM_MAX_REGIONS];
	int n = vm_mem_regions(ctx, r, MEM_MAX_REGIONS);
	uint8_t desc[MEM_DESC_SIZE];
	memset(desc, 0, sizeof(desc));
	put32(desc, (uint32_t)n);
	put32(desc + 4, MEM_PAGE);
	uint64_t rel = MEM_DESC_SIZE;
	for (int i = 0; i < n; i++) {
		put64(desc + 8 + 24 * i, r[i].gpa);
		put64(desc + 16 + 24 * i, r[i].size);
		put64(desc + 24 + 24 * i, rel);
		rel += r[i].size;
	}
	uint64_t data_off = (w->off + SEC_HDR_SIZE + MEM_PAGE - 1) & ~(uint64_t)(MEM_PAGE - 1);
	if (pwrite_all(w->fd, desc, sizeof(desc), data_off))
		return -1;
	*written = 0;
	for (int i = 0; i < n; i++) {
		uint64_t base = data_off + get64(desc + 24 + 24 * i);
		/* Runs of non-zero pages go out as one large write. */
		uint64_t run = 0, p;
		for (p = 0; p < r[i].size; p += MEM_PAGE) {
			if (!page_is_zero(r[i].hva + p))
				continue;
			if (p > run && pwrite_all(w->fd, r[i].hva + run, (size_t)(p - run), base + run))
				return -1;
			*written += p - run;
			run = p + MEM_PAGE;
		}
		if (p > run && pwrite_all(w->fd, r[i].hva + run, (size_t)(p - run), base + run))
			return -1;
		*written += p > run ? p - run : 0;
	}
	if (write_section(w, "memory", 1, SEC_F_ALIGNED | SEC_F_CRC_PREFIX, NULL, rel, data_off, crc(desc, sizeof(desc))))
		return -1;
	/* Trailing zero pages: extend the file so they read back as zeros. */
	return ftruncate(w->fd, (off_t)w->off);
}

static int write_file(struct hyve_vm *vm, int fd, const struct vm_sections *secs, uint64_t *memwritten)
{
	struct writer w = { .fd = fd, .off = CKPT_HDR_SIZE };
	uint8_t h[CKPT_HDR_SIZE];
	memset(h, 0, sizeof(h));
	memcpy(h, CKPT_MAGIC, 8);
	put16(h + 8, CKPT_MAJOR);
	put16(h + 10, CKPT_MINOR);
	put32(h + 12, CKPT_HDR_SIZE);
	snprintf((char *)h + 16, 32, "%s", HYVE_VERSION_STRING);
	put64(h + 48, (uint64_t)time(NULL));
	put32(h + 60, crc(h, 60));
	if (pwrite_all(fd, h, sizeof(h), 0))
		return -1;
	size_t clen;
	char *cfg = config_to_string(&clen);
	if (!cfg)
		return -1;
	int rc = write_plain(&w, "config", 1, cfg, clen);
	free(cfg);
	for (int i = 0; rc == 0 && i < secs->n; i++)
		rc = write_plain(&w, secs->s[i].name, secs->s[i].version, secs->s[i].data.data, secs->s[i].data.len);
	if (rc == 0)
		rc = write_memory(&w, vm->ctx, memwritten);
	if (rc == 0)
		rc = write_section(&w, "end", 1, 0, NULL, 0, w.off + SEC_HDR_SIZE, crc("", 0));
	return rc;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A checkpoint may only replace a regular file (or a symlink to one, which
 * rename() replaces, never following it): renaming over a device node or a
 * FIFO would swap the node for guest RAM.  0, or -1 with err.
 */
static int check_target(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0;   /* nothing there (or a dangling symlink): a new file */
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (S_ISREG(st.st_mode))
		return 0;
	const char *what = S_ISDIR(st.st_mode) ? "a directory" : S_ISCHR(st.st_mode) ? "a character device" :
	                   S_ISBLK(st.st_mode) ? "a block device" : S_ISFIFO(st.st_mode) ? "a FIFO" :
	                   S_ISSOCK(st.st_mode) ? "a socket" : "not a regular file";
	snprintf(err, errlen, "%s: is %s; a checkpoint only replaces a regular file", path, what);
	return -1;
}

/*
 * The temporary file next to the target (so that rename() is atomic):
 * always a new file of ours, mode 0600.  O_EXCL|O_NOFOLLOW: a name someone
 * else created first (a symlink to another file, a world-readable file) is
 * never opened; another name is tried instead.  fd, or -1 with err.
 */
static int create_temp(const char *path, char *tmp, size_t tmplen, char *err, size_t errlen)
{
	for (int attempt = 0; attempt < 16; attempt++) {
		uint32_t r = 0;
		if (attempt && getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (uint32_t)attempt * 2654435761u ^ (uint32_t)time(NULL);
		int n = attempt ? snprintf(tmp, tmplen, "%s.tmp.%d.%08x", path, (int)getpid(), r)
		                : snprintf(tmp, tmplen, "%s.tmp.%d", path, (int)getpid());
		if (n < 0 || (size_t)n >= tmplen) {
			snprintf(err, errlen, "%s: path too long", path);
			return -1;
		}
		int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0)
			return fd;
		if (errno != EEXIST) {
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			return -1;
		}
	}
	snprintf(err, errlen, "%s: cannot create a temporary file next to it (16 names taken)", path);
	return -1;
}

static void fsync_dir(const char *path)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int checkpoint_save(struct hyve_vm *vm, const char *path, bool suspend, char *err, size_t errlen)
{
	if (vmstate_check_supported(err, errlen) || check_target(path, err, errlen))
		return -1;
	char tmp[4096];
	int fd = create_temp(path, tmp, sizeof(tmp), err, errlen);
	if (fd < 0)
		return -1;
	double t0 = now_s();
	/* vCPUs out of the guest before devices drain: no descriptor changes under I/O. */
	vcpus_pause(vm);
	vmstate_quiesce();
	double t1 = now_s();
	struct vm_sections secs = { 0 };
	uint64_t memw = 0;
	char abs[8200], cwd[4096];
	if (path[0] != '/' && getcwd(cwd, sizeof(cwd)))
		snprintf(abs, sizeof(abs), "%s/%s", cwd, path);
	else
		snprintf(abs, sizeof(abs), "%s", path);
	snapshot_set_checkpoint_path(abs);   /* qcow2 disks name their snapshot after it */
	int rc = vmstate_save(vm, &secs, err, errlen);
	snapshot_set_checkpoint_path(NULL);
	if (rc == 0 && write_file(vm, fd, &secs, &memw)) {
		snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
		rc = -1;
	}
	vm_sections_free(&secs);
	if (rc == 0 && fsync(fd)) {
		snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
		rc = -1;
	}
	double t2 = now_s();
	close(fd);
	/*
	 * A plain checkpoint lets the guest go on before the rename (it has
	 * what it needs).  A suspend keeps it paused until the file is in
	 * place: if the rename fails too, the VM resumes and keeps running
	 * rather than staying paused for good.
	 */
	if (!suspend) {
		vmstate_resume();
		vcpus_resume(vm);
	}
	if (rc == 0 && rename(tmp, path)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		rc = -1;
	}
	/* The rename itself on disk: after a suspend the file is all there is of the VM. */
	if (rc == 0 && suspend)
		fsync_dir(path);
	/* Disk snapshots of an older checkpoint to this file go; a failed one's too. */
	snapshot_saved(rc == 0);
	if (rc) {
		unlink(tmp);
		if (suspend) {
			vmstate_resume();
			vcpus_resume(vm);
		}
		return -1;
	}
	/* On success err carries the summary (hyvectl prints it). */
	snprintf(err, errlen, "%s %s: %.1f MiB of RAM written, vCPUs paused %.0f ms (devices saved in %.0f ms)",
	         suspend ? "suspended to" : "checkpoint", path, (double)memw / (1 << 20), (t2 - t0) * 1e3,
	         (t2 - t1) * 1e3);
	log_info("%s", err);
	return 0;
}

/* ---- reader ---- */

static struct {
	int fd;
	char path[4096];
	struct vm_sections secs;
	uint64_t mem_off, mem_len;
	uint8_t mem_desc[MEM_DESC_SIZE];
} rd = { .fd = -1 };

static int read_fail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
	snprintf(err, errlen, fmt, a, b);
	vm_sections_free(&rd.secs);
	if (rd.fd >= 0)
		close(rd.fd);
	rd.fd = -1;
	return -1;
}

int checkpoint_open(const char *path, char *err, size_t errlen)
{
	uint8_t h[CKPT_HDR_SIZE];
	struct stat st;
	snprintf(rd.path, sizeof(rd.path), "%s", path);
	rd.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (rd.fd < 0 || fstat(rd.fd, &st))
		return read_fail(err, errlen, "%s: %s", path, strerror(errno));
	if (pread_all(rd.fd, h, sizeof(h), 0) || memcmp(h, CKPT_MAGIC, 8))
		return read_fail(err, errlen, "%s: %s", path, "not a hyve checkpoint (bad magic)");
	if (get32(h + 60) != crc(h, 60))
		return read_fail(err, errlen, "%s: %s", path, "file header is corrupted (checksum mismatch)");
	if (get16(h + 8) != CKPT_MAJOR) {
		char v[64];
		snprintf(v, sizeof(v), "format version %u.%u; this hyve reads %u.x", get16(h + 8), get16(h + 10), CKPT_MAJOR);
		return read_fail(err, errlen, "%s: %s", path, v);
	}
	uint64_t off = get32(h + 12);
	bool seen_end = false, seen_cfg = false;
	rd.mem_len = 0;
	while (!seen_end) {
		uint8_t s[SEC_HDR_SIZE];
		char name[33];
		if (off + SEC_HDR_SIZE > (uint64_t)st.st_size || pread_all(rd.fd, s, sizeof(s), off))
			return read_fail(err, errlen, "%s: %s", path, "truncated (no end section)");
		if (get32(s + 60) != crc(s, 60))
			return read_fail(err, errlen, "%s: %s", path, "a section header is corrupted (checksum mismatch)");
		memcpy(name, s, 32);
		name[32] = '\0';
		uint32_t version = get32(s + 32), flags = get32(s + 36), want_crc = get32(s + 56);
		uint64_t len = get64(s + 40), data_off = get64(s + 48);
		if (data_off < off + SEC_HDR_SIZE || data_off > (uint64_t)st.st_size ||
		    len > (uint64_t)st.st_size - data_off)
			return read_fail(err, errlen, "%s: section %s: truncated", path, name);
		if (strcmp(name, "end") == 0) {
			seen_end = true;
		} else if (strcmp(name, "memory") == 0) {
			if (!(flags & SEC_F_CRC_PREFIX) || len < MEM_DESC_SIZE || (data_off & (MEM_PAGE - 1)) || rd.mem_len)
				return read_fail(err, errlen, "%s: section %s: malformed", path, name);
			if (pread_all(rd.fd, rd.mem_desc, MEM_DESC_SIZE, data_off) || crc(rd.mem_desc, MEM_DESC_SIZE) != want_crc)
				return read_fail(err, errlen, "%s: section %s: corrupted (checksum mismatch)", path, name);
			(void)version;
			rd.mem_off = data_off;
			rd.mem_len = len;
		} else {
			if (len > MAX_SECTION_BYTES)
				return read_fail(err, errlen, "%s: section %s: implausible length", path, name);
			if (vm_sections_find(&rd.secs, name))
				return read_fail(err, errlen, "%s: section %s: appears twice", path, name);
			struct vm_section *sec = vm_sections_add(&rd.secs, name, version);
			if (!sec)
				return read_fail(err, errlen, "%s: section %s: bad name or out of memory", path, name);
			sec->data.data = malloc(len ? len : 1);
			sec->data.cap = sec->data.len = len;
			if (!sec->data.data || (len && pread_all(rd.fd, sec->data.data, len, data_off)))
				return read_fail(err, errlen, "%s: section %s: truncated", path, name);
			if (crc(sec->data.data, len) != want_crc)
				return read_fail(err, errlen, "%s: section %s: corrupted (checksum mismatch)", path, name);
			if (strcmp(name, "config") == 0)
				seen_cfg = true;
		}
		off = data_off + len;
	}
	if (!seen_cfg || !rd.mem_len)
		return read_fail(err, errlen, "%s: %s", path, seen_cfg ? "no memory section" : "no config section");
	const struct vm_section *cfg = vm_sections_find(&rd.secs, "config");
	char e[256];
	if (cfg->version != 1 || config_from_string((const char *)cfg->data.data, cfg->data.len, e, sizeof(e)))
		return read_fail(err, errlen, "%s: section config: %s", path, cfg->version != 1 ? "unknown version" : e);
	return 0;
}

/* Eager restore: read the file's data extents; holes stay zero. */
static int copy_region(int fd, uint8_t *dst, uint64_t size, uint64_t off)
{
	uint64_t p = 0;
	while (p < size) {
		off_t d = lseek(fd, (off_t)(off + p), SEEK_DATA);
		if (d < 0 || (uint64_t)d >= off + size)
			break;
		off_t hole = lseek(fd, d, SEEK_HOLE);
		uint64_t end = hole < 0 || (uint64_t)hole > off + size ? off + size : (uint64_t)hole;
		if (pread_all(fd, dst + ((uint64_t)d - off), (size_t)(end - (uint64_t)d), (uint64_t)d))
			return -1;
		p = end - off;
	}
	return 0;
}

int checkpoint_restore(struct hyve_vm *vm, char *err, size_t errlen)
{
	struct vm_mem_region r[MEM_MAX_REGIONS];
	int n = vm_mem_regions(vm->ctx, r, MEM_MAX_REGIONS);
	int rc = -1;
	if (rd.fd < 0) {
		snprintf(err, errlen, "no checkpoint open");
		return -1;
	}
	if (get32(rd.mem_desc) != (uint32_t)n || get32(rd.mem_desc + 4) != MEM_PAGE) {
		snprintf(err, errlen, "section memory: %u regions, the configured VM has %d", get32(rd.mem_desc), n);
		goto out;
	}
	const char *mode = get_config_value("snapshot.restore_memory");
	bool lazy = !mode || strcmp(mode, "copy") != 0;
	double t0 = now_s();
	for (int i = 0; i < n; i++) {
		uint64_t gpa = get64(rd.mem_desc + 8 + 24 * i), size = get64(rd.mem_desc + 16 + 24 * i);
		uint64_t rel = get64(rd.mem_desc + 24 + 24 * i);
		if (gpa != r[i].gpa || size != r[i].size || (rel & (MEM_PAGE - 1)) || rel > rd.mem_len ||
		    size > rd.mem_len - rel) {
			snprintf(err, errlen, "section memory: region %d does not match the configured RAM", i);
			goto out;
		}
		int ok = lazy ? vm_map_memory_file(vm->ctx, i, rd.fd, rd.mem_off + rel)
		              : copy_region(rd.fd, r[i].hva, size, rd.mem_off + rel);
		if (ok) {
			snprintf(err, errlen, "section memory: %s: %s", lazy ? "mmap" : "read", strerror(errno));
			goto out;
		}
	}
	double t1 = now_s();
	if (vmstate_load(vm, &rd.secs, err, errlen))
		goto out;
	/* After the state: the prefetch must not slow the restore itself. */
	if (lazy && get_config_bool_default("snapshot.prefetch", true))
		vm_prefetch_memory(vm->ctx, rd.fd);
	log_info("restored %s: RAM %s in %.1f ms, state in %.1f ms", rd.path, lazy ? "mapped" : "copied",
	         (t1 - t0) * 1e3, (now_s() - t1) * 1e3);
	rc = 0;
out:
	vm_sections_free(&rd.secs);
	/* A private file mapping keeps its own reference to the file. */
	close(rd.fd);
	rd.fd = -1;
	return rc;
}
