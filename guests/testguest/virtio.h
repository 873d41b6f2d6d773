/*
 * PCI enumeration (configuration mechanism #1, bus 0) and a minimal
 * virtio-pci modern driver: one split virtqueue per device, requests are
 * submitted one at a time and completed by polling the used ring.
 */
#ifndef TESTGUEST_VIRTIO_H
#define TESTGUEST_VIRTIO_H

#include "kernel.h"

/* ---- pci.c ---- */
struct pci_func {
	u8 bus, dev, fn;
	u16 vendor, device;
	u8 class, subclass, revision, irq_pin;
	u64 bar[6];		/* decoded addresses (0 if unused / upper half) */
	bool bar_io[6], bar_64[6];
};
#define PCI_MAX_FUNCS 32
extern struct pci_func pci_funcs[PCI_MAX_FUNCS];
extern int pci_nfuncs;
u32 pci_cfg_read32(const struct pci_func *f, u8 off);
u16 pci_cfg_read16(const struct pci_func *f, u8 off);
u8 pci_cfg_read8(const struct pci_func *f, u8 off);
void pci_cfg_write16(const struct pci_func *f, u8 off, u16 v);
void pci_cfg_write32(const struct pci_func *f, u8 off, u32 v);
int pci_scan(void);		/* bus 0, once; returns the number of functions */

/* ---- virtio.c ---- */
#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_ENTROPY 4

#define VS_ACK 0x01
#define VS_DRIVER 0x02
#define VS_DRIVER_OK 0x04
#define VS_FEATURES_OK 0x08
#define VS_NEEDS_RESET 0x40
#define VS_FAILED 0x80

#define VF_VERSION_1 (1UL << 32)

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

struct vring_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

#define VQ_SIZE 16

struct vdev {
	struct pci_func *pci;
	u16 type;		/* VIRTIO_ID_* */
	volatile u8 *common, *isr, *devcfg, *notify;
	u32 notify_mult;
	u64 offered, features;
	u16 qsize;
	volatile struct vring_desc *desc;
	volatile u16 *avail;	/* flags, idx, ring[qsize] */
	volatile u16 *used;	/* flags, idx, then {u32 id, u32 len}[qsize] */
	volatile u16 *qnotify;	/* notify address of queue 0 */
	u16 avail_idx, used_idx;
	void *mem;		/* 4 KiB ring page */
	bool ready;
};

#define VDEV_MAX 8
extern struct vdev vdevs[VDEV_MAX];
extern int nvdevs;

int virtio_probe(void);		/* scan PCI and map the modern capabilities */
struct vdev *virtio_find(u16 type, int nth);
/* Reset, negotiate (VERSION_1 | (offered & want)), set up queue 0, DRIVER_OK.
 * 0 or a negative error (message printed). */
int virtio_init(struct vdev *d, u64 want);

/*
 * The steps every driver here repeats.  virtio_begin (after a reset):
 * ACKNOWLEDGE, DRIVER, then the offered features (also in d->offered).
 * virtio_set_features: write d->features, set FEATURES_OK; 0, or -1 if the
 * device refused them.
 */
u64 virtio_begin(struct vdev *d);
int virtio_set_features(struct vdev *d);

/*
 * A split virtqueue a driver keeps itself, in one zeroed 4 KiB page:
 * descriptors at 0, avail at 2048, used at 2560 (room for GVQ_MAX
 * entries).  gvq_setup selects queue qidx, sizes it min(device max, want)
 * (want a power of two), programs and enables it: 0, -1 if the device has
 * no such queue, -2 if it did not enable it.  gvq_put publishes a head
 * (no kick); kick through q->notify (modern) or the legacy port.
 */
#define GVQ_MAX 128
struct gvq {
	u16 idx, size;
	volatile struct vring_desc *desc;
	volatile u16 *avail;	/* flags, idx, ring[size] */
	volatile u16 *used;	/* flags, idx, {u32 id, u32 len}[size] */
	volatile u16 *notify;
	u16 avail_idx, used_idx;
};
int gvq_setup(struct vdev *d, struct gvq *q, u16 qidx, u16 want, u8 *page);
void gvq_put(struct gvq *q, u16 head);
void virtio_reset(struct vdev *d);
u8 virtio_status(struct vdev *d);
/* Put descriptors d[0..n) on the queue as one chain (NEXT is set here),
 * kick, and poll for the used element.  Returns the used length, or -1 on
 * timeout / NEEDS_RESET. */
s64 virtio_submit(struct vdev *d, const struct vring_desc *chain, int n, u64 timeout_ms);
/* Raw access for the malformed-ring test: place descriptors as given
 * (no NEXT fixups) and publish head `head`; kick. */
void virtio_submit_raw(struct vdev *d, const struct vring_desc *descs, int n, u16 head);
bool virtio_wait_status(struct vdev *d, u8 bit, u64 timeout_ms);
u16 virtio_used_idx(struct vdev *d);

/* common configuration registers */
#define VC_DFSELECT 0x00
#define VC_DF 0x04
#define VC_GFSELECT 0x08
#define VC_GF 0x0c
#define VC_MSIX 0x10
#define VC_NUMQ 0x12
#define VC_STATUS 0x14
#define VC_CFGGEN 0x15
#define VC_QSELECT 0x16
#define VC_QSIZE 0x18
#define VC_QMSIX 0x1a
#define VC_QENABLE 0x1c
#define VC_QNOFF 0x1e
#define VC_QDESC 0x20
#define VC_QAVAIL 0x28
#define VC_QUSED 0x30

static inline u8 vc_r8(struct vdev *d, u32 o) { return *(volatile u8 *)(d->common + o); }
static inline u16 vc_r16(struct vdev *d, u32 o) { return *(volatile u16 *)(d->common + o); }
static inline u32 vc_r32(struct vdev *d, u32 o) { return *(volatile u32 *)(d->common + o); }
static inline void vc_w8(struct vdev *d, u32 o, u8 v) { *(volatile u8 *)(d->common + o) = v; }
static inline void vc_w16(struct vdev *d, u32 o, u16 v) { *(volatile u16 *)(d->common + o) = v; }
static inline void vc_w32(struct vdev *d, u32 o, u32 v) { *(volatile u32 *)(d->common + o) = v; }

/* ---- vblk.c ---- */
#define VBLK_F_RO (1UL << 5)
#define VBLK_F_BLK_SIZE (1UL << 6)
#define VBLK_F_FLUSH (1UL << 9)
#define VBLK_F_DISCARD (1UL << 13)
#define VBLK_F_WRITE_ZEROES (1UL << 14)
#define VBLK_T_IN 0
#define VBLK_T_OUT 1
#define VBLK_T_FLUSH 4
#define VBLK_T_GET_ID 8
#define VBLK_T_DISCARD 11
#define VBLK_S_OK 0
#define VBLK_S_IOERR 1
#define VBLK_S_UNSUPP 2
/* Status byte of the request, or -1 if the device did not complete it. */
int vblk_rw(struct vdev *d, u32 type, u64 sector, void *buf, u32 len);
int vblk_simple(struct vdev *d, u32 type);	/* FLUSH */
int vblk_get_id(struct vdev *d, char id[21]);
int vblk_discard(struct vdev *d, u64 sector, u32 nsect);
u64 vblk_capacity(struct vdev *d);
int vblk_open(struct vdev *d);
/* The disk pattern (see vblk.c), filled or checked at CPL3. */
struct pjob {
	u8 *buf;
	u64 sector;
	u64 nsect;
	u32 seed;
	u32 op;			/* 0: fill, 1: check pattern, 2: check zero */
	u64 fnv;		/* FNV-1a 64 of the buffer afterwards */
	u64 bad;		/* mismatching words */
	u64 first_bad;		/* byte offset of the first mismatch */
};
void vblk_pattern(struct pjob *j);	/* virtio_init with the blk features we use */

void t_blk(void);
void t_rnd(void);
void t_badring(void);

#endif
