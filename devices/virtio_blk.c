/*
 * virtio block device (virtio 1.2, section 5.2) over blockif:
 *
 *   -s N,virtio-blk,PATH[,ro][,nocache][,direct][,sectorsize=L[/P]][,ser=ID]
 *                       [,qsize=N][,aio=auto|io_uring|threads][,legacy=false]
 *                       [,format=raw|qcow2][,l2cache=BYTES]
 *
 * One request queue.  Reads and writes go to blockif with iovecs that point
 * into the guest's buffers; the status byte is written when blockif calls
 * back (main thread or an I/O thread).  Every sector range is checked
 * against the capacity before anything reaches the host file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/log.h"
#include "blockif.h"
#include "pci_emul.h"
#include "virtio.h"

#define VTBLK_DEFAULT_QSIZE 256
#define VTBLK_MAX_SEGS      126                  /* seg_max: data segments per request */
#define VTBLK_MAX_IOV       (VTBLK_MAX_SEGS + 2)  /* + header + status */
#define VTBLK_SIZE_MAX      (1u << 20)           /* size_max: bytes per segment */
#define VTBLK_MAX_DWZ_SECTORS (1u << 22)         /* discard / write zeroes: 2 GiB per request */
#define VTBLK_ID_BYTES      20

/* Feature bits */
#define VTBLK_F_SIZE_MAX     (1ULL << 1)
#define VTBLK_F_SEG_MAX      (1ULL << 2)
#define VTBLK_F_RO           (1ULL << 5)
#define VTBLK_F_BLK_SIZE     (1ULL << 6)
#define VTBLK_F_FLUSH        (1ULL << 9)
#define VTBLK_F_TOPOLOGY     (1ULL << 10)
#define VTBLK_F_DISCARD      (1ULL << 13)
#define VTBLK_F_WRITE_ZEROES (1ULL << 14)

/* Request types and status */
#define VTBLK_T_IN           0
#define VTBLK_T_OUT          1
#define VTBLK_T_FLUSH        4
#define VTBLK_T_FLUSH_OUT    5   /* legacy synonym */
#define VTBLK_T_GET_ID       8
#define VTBLK_T_DISCARD      11
#define VTBLK_T_WRITE_ZEROES 13
#define VTBLK_T_BARRIER      0x80000000u   /* legacy flag bit: ignored */
#define VTBLK_S_OK     0
#define VTBLK_S_IOERR  1
#define VTBLK_S_UNSUPP 2

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio structures are little-endian");

struct vtblk_config {
	uint64_t capacity;            /* 512-byte sectors */
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads, sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp;
	uint8_t alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback;
	uint8_t unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
} __attribute__((packed));
_Static_assert(sizeof(struct vtblk_config) == 60, "virtio_blk_config layout");

struct vtblk_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

struct vtblk_dwz_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;               /* bit 0: unmap */
};

struct vtblk_softc;

struct vtblk_ioreq {
	struct blockif_req io_req;
	struct vtblk_softc *io_sc;
	struct vtblk_ioreq *io_next;   /* free list */
	uint8_t *io_status;            /* in guest RAM (mapped by vq_getchain) */
	uint32_t io_len;               /* used length on success */
	uint32_t io_epoch;             /* device resets since the request started */
	uint16_t io_idx;
	struct iovec io_iov[VTBLK_MAX_IOV];
};

struct vtblk_softc {
	struct virtio_softc vs;        /* first: the transport finds it via pi_arg */
	struct vqueue_info vq;
	struct blockif_ctxt *bc;
	struct vtblk_config cfg;
	char ident[VTBLK_ID_BYTES];    /* NUL-padded, not terminated at 20 */
	uint64_t nsectors;             /* capacity in 512-byte sectors */
	uint32_t epoch;
	bool need_intr;
	bool ioerr_logged;
	unsigned nios, maxios;
	struct vtblk_ioreq *free_ios;
	struct iovec chain[VTBLK_MAX_IOV];   /* scratch for vq_getchain (under vs_mtx) */
};

/* ---- requests ---- */

static struct vtblk_ioreq *vtblk_get_ioreq(struct vtblk_softc *sc)
{
	struct vtblk_ioreq *io = sc->free_ios;
	if (io) {
		sc->free_ios = io->io_next;
		return io;
	}
	/* Allocated on demand: memory follows real queue depth, not qsize. */
	if (sc->nios >= sc->maxios)
		return NULL;
	io = calloc(1, sizeof(*io));
	if (io) {
		io->io_sc = sc;
		sc->nios++;
	}
	return io;
}

static void vtblk_put_ioreq(struct vtblk_softc *sc, struct vtblk_ioreq *io)
{
	io->io_next = sc->free_ios;
	sc->free_ios = io;
}

/* Finish a request now (vs_mtx held). */
static void vtblk_finish(struct vtblk_softc *sc, struct vtblk_ioreq *io, uint8_t status, uint32_t len)
{
	*io->io_status = status;
	vq_relchain(&sc->vq, io->io_idx, len);
	vtblk_put_ioreq(sc, io);
}

/* blockif completion: main thread, an I/O thread, or a drain. */
static void vtblk_done(struct blockif_req *br, int err)
{
	struct vtblk_ioreq *io = br->br_param;
	struct vtblk_softc *sc = io->io_sc;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	if (err && !sc->ioerr_logged) {
		sc->ioerr_logged = true;
		log_warn("%s: I/O error: %s (reported to the guest; further errors not logged)", sc->vs.vs_name,
		         strerror(err));
	}
	if (io->io_epoch == sc->epoch && vq_ring_ready(&sc->vq) && !sc->vs.vs_broken) {
		uint8_t st = !err ? VTBLK_S_OK : err == EOPNOTSUPP ? VTBLK_S_UNSUPP : VTBLK_S_IOERR;
		*io->io_status = st;
		vq_relchain(&sc->vq, io->io_idx, err ? 1 : io->io_len);
		sc->need_intr = true;
	}
	vtblk_put_ioreq(sc, io);
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

static void vtblk_batch_done(void *arg)
{
	struct vtblk_softc *sc = arg;
	pthread_mutex_lock(&sc->vs.vs_mtx);
	if (sc->need_intr) {
		sc->need_intr = false;
		vq_endchains(&sc->vq, false);
	}
	pthread_mutex_unlock(&sc->vs.vs_mtx);
}

/* [sector, sector + bytes) inside the disk, whole sectors. */
static bool vtblk_range_ok(struct vtblk_softc *sc, uint64_t sector, uint64_t bytes)
{
	return bytes % 512 == 0 && sector <= sc->nsectors && bytes / 512 <= sc->nsectors - sector;
}

static uint8_t vtblk_dwz(struct vtblk_softc *sc, struct vtblk_ioreq *io, uint32_t type,
                         const struct iovec *rd, int nrd, size_t dout, int *submit_err)
{
	bool discard = type == VTBLK_T_DISCARD;
	if (!vi_negotiated(&sc->vs, discard ? VTBLK_F_DISCARD : VTBLK_F_WRITE_ZEROES))
		return VTBLK_S_UNSUPP;
	if (dout == 0 || dout % sizeof(struct vtblk_dwz_seg))
		return VTBLK_S_IOERR;
	if (dout / sizeof(struct vtblk_dwz_seg) > 1)   /* max_*_seg = 1 */
		return VTBLK_S_UNSUPP;
	struct vtblk_dwz_seg seg;
	iov_to_buf(rd, nrd, sizeof(struct vtblk_hdr), &seg, sizeof(seg));
	if ((seg.flags & ~1u) || (discard && (seg.flags & 1)))
		return VTBLK_S_UNSUPP;
	if (seg.num_sectors > VTBLK_MAX_DWZ_SECTORS ||
	    !vtblk_range_ok(sc, seg.sector, (uint64_t)seg.num_sectors * 512))
		return VTBLK_S_IOERR;
	if (seg.num_sectors == 0)
		return VTBLK_S_OK;
	io->io_req.br_offset = (off_t)(seg.sector * 512);
	io->io_req.br_resid = (size_t)seg.num_sectors * 512;
	*submit_err = discard ? blockif_discard(sc->bc, &io->io_req)
	                      : blockif_write_zeroes(sc->bc, &io->io_req, seg.flags & 1);
	return VTBLK_S_OK;
}

/* One chain: 1 taken, 0 none left, -1 guest error. */
static int vtblk_proc(struct vtblk_softc *sc, struct vqueue_info *vq)
{
	struct vq_chain ch;
	int n = vq_getchain(vq, sc->chain, VTBLK_MAX_IOV, &ch);
	if (n <= 0)
		return n;
	if (ch.rlen < sizeof(struct vtblk_hdr) || ch.wlen < 1) {
		vi_error(&sc->vs, "block request without a header or a status byte");
		return -1;
	}
	struct vtblk_ioreq *io = vtblk_get_ioreq(sc);
	if (!io) {
		vi_error(&sc->vs, "more block requests in flight than the queue holds");
		return -1;
	}
	struct iovec *rd = sc->chain, *wr = sc->chain + ch.readable;
	struct vtblk_hdr hdr;
	iov_to_buf(rd, ch.readable, 0, &hdr, sizeof(hdr));
	int last = ch.writable - 1;
	while (wr[last].iov_len == 0)   /* wlen >= 1: some writable byte exists */
		last--;
	io->io_status = (uint8_t *)wr[last].iov_base + wr[last].iov_len - 1;
	io->io_idx = ch.idx;
	io->io_epoch = sc->epoch;
	io->io_len = 1;
	io->io_req = (struct blockif_req){ .br_iov = io->io_iov, .br_callback = vtblk_done, .br_param = io };

	uint32_t type = hdr.type & ~VTBLK_T_BARRIER;
	size_t din = ch.wlen - 1;                             /* device-writable data */
	size_t dout = ch.rlen - sizeof(struct vtblk_hdr);     /* device-readable data */
	uint8_t status = VTBLK_S_OK;
	int err = -1;   /* -1: finished here; else blockif's answer */
	switch (type) {
	case VTBLK_T_IN:
	case VTBLK_T_OUT: {
		bool in = type == VTBLK_T_IN;
		size_t len = in ? din : dout;
		if ((!in && blockif_is_ro(sc->bc)) || !vtblk_range_ok(sc, hdr.sector, len)) {
			status = VTBLK_S_IOERR;
			break;
		}
		int k = in ? iov_slice(wr, ch.writable, 0, len, io->io_iov, VTBLK_MAX_IOV)
		           : iov_slice(rd, ch.readable, sizeof(hdr), len, io->io_iov, VTBLK_MAX_IOV);
		if (k < 0) {
			status = VTBLK_S_IOERR;
			break;
		}
		io->io_req.br_iovcnt = k;
		io->io_req.br_offset = (off_t)(hdr.sector * 512);
		io->io_len = in ? (uint32_t)len + 1 : 1;
		err = in ? blockif_read(sc->bc, &io->io_req) : blockif_write(sc->bc, &io->io_req);
		break;
	}
	case VTBLK_T_FLUSH:
	case VTBLK_T_FLUSH_OUT:
		err = blockif_flush(sc->bc, &io->io_req);
		break;
	case VTBLK_T_GET_ID: {
		size_t c = din < VTBLK_ID_BYTES ? din : VTBLK_ID_BYTES;
		buf_to_iov(sc->ident, c, wr, ch.writable, 0);
		io->io_len = (uint32_t)c + 1;
		break;
	}
	case VTBLK_T_DISCARD:
	case VTBLK_T_WRITE_ZEROES:
		status = vtblk_dwz(sc, io, type, rd, ch.readable, dout, &err);
		break;
	default:
		status = VTBLK_S_UNSUPP;
		break;
	}
	if (err == 0)
		return 1;   /* vtblk_done finishes it */
	if (err > 0)
		status = err == EOPNOTSUPP ? VTBLK_S_UNSUPP : VTBLK_S_IOERR;
	vtblk_finish(sc, io, status, status == VTBLK_S_OK ? io->io_len : 1);
	sc->need_intr = true;
	return 1;
}

static void vtblk_notify(void *arg, struct vqueue_info *vq)
{
	struct vtblk_softc *sc = arg;
	/* Everything this kick made available goes to the kernel in one submission. */
	blockif_plug(sc->bc);
	while (vtblk_proc(sc, vq) > 0)
		;
	blockif_unplug(sc->bc);
	if (sc->need_intr) {
		sc->need_intr = false;
		vq_endchains(vq, true);
	}
}

static void vtblk_reset(void *arg)
{
	struct vtblk_softc *sc = arg;
	sc->epoch++;   /* completions of older requests no longer touch the ring */
	sc->need_intr = false;
}

static void vtblk_quiesce(void *arg)
{
	struct vtblk_softc *sc = arg;
	blockif_drain(sc->bc);
}

static int vtblk_cfgread(void *arg, uint32_t off, int size, uint32_t *val)
{
	struct vtblk_softc *sc = arg;
	if (off + (uint32_t)size > sizeof(sc->cfg))
		return -1;
	*val = 0;
	memcpy(val, (uint8_t *)&sc->cfg + off, (size_t)size);
	return 0;
}

static const struct virtio_consts vtblk_consts = {
	.vc_name = "virtio-blk",
	.vc_devtype = VIRTIO_ID_BLOCK,
	.vc_class = 0x01,        /* mass storage */
	.vc_subclass = 0x00,     /* SCSI, as other hypervisors present it */
	.vc_nvq = 1,
	.vc_cfgsize = sizeof(struct vtblk_config),
	.vc_reset = vtblk_reset,
	.vc_qnotify = vtblk_notify,
	.vc_cfgread = vtblk_cfgread,
	.vc_quiesce = vtblk_quiesce,
};

/* ---- configuration ---- */

/* bhyve syntax: the first bare token is the image path. */
static int vtblk_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	return pci_parse_options(cfgpath, opts, "path", err, errlen);
}

static void vtblk_default_ident(const char *path, char *ident)
{
	uint64_t h = 0xcbf29ce484222325ULL;   /* FNV-1a: stable across runs */
	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	char buf[VTBLK_ID_BYTES + 1];
	snprintf(buf, sizeof(buf), "HYVE-%04X-%04X-%04X", (unsigned)(h >> 48), (unsigned)(h >> 32) & 0xffff,
	         (unsigned)(h >> 16) & 0xffff);
	memcpy(ident, buf, strlen(buf));
}

static int vtblk_init(struct pci_devinst *pi, const char *cfgpath)
{
	char key[128];
#define KEY(k) (snprintf(key, sizeof(key), "%s.%s", cfgpath, (k)), key)
	const char *path = get_config_value(KEY("path"));
	if (!path || !*path)
		fatal("config: %s: virtio-blk needs a disk image (-s %u,virtio-blk,PATH)", KEY("path"), pi->pi_slot);
	struct blockif_opts o = { .name = pi->pi_name };
	o.ro = get_config_bool_default(KEY("ro"), false);
	o.nocache = get_config_bool_default(KEY("nocache"), false);
	o.sync = get_config_bool_default(KEY("direct"), false);
	uint64_t qsize = get_config_uint_default(KEY("qsize"), VTBLK_DEFAULT_QSIZE);
	if (qsize < 4 || qsize > VQ_MAX_SIZE || (qsize & (qsize - 1)))
		fatal("config: %s: queue size %llu is not a power of two in 4..%u", KEY("qsize"),
		      (unsigned long long)qsize, VQ_MAX_SIZE);
	const char *ss = get_config_value(KEY("sectorsize"));
	if (ss) {
		char *end;
		unsigned long l = strtoul(ss, &end, 0), p = l;
		if (*end == '/')
			p = strtoul(end + 1, &end, 0);
		if (*end || end == ss || l < 512 || p < l || p > 65536 || (l & (l - 1)) || (p & (p - 1)))
			fatal("config: %s: bad value '%s' (expected L or L/P, powers of two with "
			      "512 <= L <= P <= 65536, e.g. 4096 or 512/4096)", key, ss);
		o.sectsz = (uint32_t)l;
		o.psectsz = (uint32_t)p;
	}
	const char *ser = get_config_value(KEY("ser"));
	if (ser && strlen(ser) > VTBLK_ID_BYTES)
		fatal("config: %s: serial '%s' is longer than %d characters", key, ser, VTBLK_ID_BYTES);
	const char *aio = get_config_value(KEY("aio"));
	if (aio && strcmp(aio, "auto") && strcmp(aio, "io_uring") && strcmp(aio, "threads"))
		fatal("config: %s: bad value '%s' (expected auto, io_uring or threads)", key, aio);
	o.force_threads = aio && !strcmp(aio, "threads");
	/* Without format= the image's first bytes decide; a probed qcow2
	 * image may not name a backing file (blk_format.h). */
	o.format = get_config_value(KEY("format"));
	if (o.format && strcmp(o.format, "raw") && strcmp(o.format, "qcow2"))
		fatal("config: %s: bad value '%s' (expected raw or qcow2)", key, o.format);
	o.l2cache = get_config_size_default(KEY("l2cache"), 0);
	bool legacy = get_config_bool_default(KEY("legacy"), true);

	struct vtblk_softc *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -1;
	o.depth = (unsigned)qsize;
	o.batch_done = vtblk_batch_done;
	o.batch_arg = sc;
	char err[512];
	sc->bc = blockif_open(path, &o, err, sizeof(err));
	if (!sc->bc)
		fatal("config: %s: %s", KEY("path"), err);
	if (aio && !strcmp(aio, "io_uring") && strcmp(blockif_format(sc->bc), "raw"))
		fatal("config: %s: aio=io_uring is for raw images (a %s image runs on I/O threads)", KEY("aio"),
		      blockif_format(sc->bc));
	if (aio && !strcmp(aio, "io_uring") && strcmp(blockif_backend(sc->bc), "io_uring"))
		fatal("config: %s: io_uring is not available (try aio=threads; -o log.level=3 says why)", KEY("aio"));
	if (ser)
		memcpy(sc->ident, ser, strlen(ser));
	else
		vtblk_default_ident(path, sc->ident);

	uint32_t sect = blockif_sectsz(sc->bc), psect = blockif_psectsz(sc->bc);
	bool ro = blockif_is_ro(sc->bc);
	sc->nsectors = (uint64_t)blockif_size(sc->bc) / 512;
	sc->maxios = (unsigned)qsize;
	uint8_t pexp = 0;
	while ((sect << pexp) < psect)
		pexp++;
	sc->cfg = (struct vtblk_config){
		.capacity = sc->nsectors,
		.size_max = VTBLK_SIZE_MAX,
		.seg_max = qsize - 2 < VTBLK_MAX_SEGS ? (uint32_t)qsize - 2 : VTBLK_MAX_SEGS,
		.blk_size = sect,
		.physical_block_exp = pexp,
		.min_io_size = (uint16_t)(psect / sect),
		.writeback = o.sync ? 0 : 1,
		.num_queues = 1,
		.max_discard_sectors = VTBLK_MAX_DWZ_SECTORS,
		.max_discard_seg = 1,
		.discard_sector_alignment = psect / 512,
		.max_write_zeroes_sectors = VTBLK_MAX_DWZ_SECTORS,
		.max_write_zeroes_seg = 1,
		.write_zeroes_may_unmap = blockif_candelete(sc->bc),
	};

	vi_softc_linkup(&sc->vs, &vtblk_consts, sc, pi, &sc->vq);
	sc->vq.vq_maxsize = (uint16_t)qsize;
	sc->vs.vs_hv_caps = VTBLK_F_SIZE_MAX | VTBLK_F_SEG_MAX | VTBLK_F_BLK_SIZE | VTBLK_F_TOPOLOGY | VTBLK_F_FLUSH;
	if (ro)
		sc->vs.vs_hv_caps |= VTBLK_F_RO;
	else
		sc->vs.vs_hv_caps |= VTBLK_F_WRITE_ZEROES | (blockif_candelete(sc->bc) ? VTBLK_F_DISCARD : 0);
	log_debug("%s: %s: %s, %llu sectors, %u/%u-byte blocks, %s%s, %s backend", pi->pi_name, path,
	          blockif_format(sc->bc), (unsigned long long)sc->nsectors, sect, psect, ro ? "read-only" : "read-write",
	          blockif_candelete(sc->bc) ? ", discard" : "", blockif_backend(sc->bc));
	return vi_pci_setup(&sc->vs, legacy);
#undef KEY
}

static const char *const vtblk_options[] = {
	"path", "ro", "nocache", "direct", "sectorsize", "ser", "qsize", "aio", "legacy", "format", "l2cache", NULL,
};

static const struct pci_devemu pci_de_vtblk = {
	.pe_emu = "virtio-blk",
	.pe_help = "virtio disk: PATH[,ro][,nocache][,direct][,sectorsize=L[/P]][,ser=ID][,qsize=N]"
	           "[,aio=threads][,legacy=false][,format=raw|qcow2][,l2cache=BYTES]",
	.pe_options = vtblk_options,
	.pe_legacy_config = vtblk_legacy_config,
	.pe_init = vtblk_init,
	VI_PCI_DEVEMU_HOOKS,
};
PCI_EMUL_REGISTER(pci_de_vtblk)
