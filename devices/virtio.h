/*
 * virtio over PCI (virtio 1.2, section 4.1) and the shared split virtqueue.
 *
 * A device model embeds struct virtio_softc as the FIRST member of its
 * softc, describes itself with a struct virtio_consts, and at init:
 *
 *	vi_softc_linkup(&sc->vs, &my_consts, sc, pi, sc->queues);
 *	sc->vs.vs_hv_caps = MY_FEATURE_BITS;       (transport bits are added)
 *	sc->queues[i].vq_maxsize = N;               (power of two)
 *	vi_pci_setup(&sc->vs, legacy);
 *
 * and puts VI_PCI_DEVEMU_HOOKS in its struct pci_devemu (BAR and config
 * space access, checkpoint hooks).
 *
 * The PCI function is transitional by default: legacy registers in I/O
 * BAR 0, MSI-X table in BAR 1, and the modern capabilities (common cfg,
 * ISR, device cfg, notify) in the 64-bit memory BAR 4.  With legacy=false
 * it is modern-only (device id 0x1040 + type, revision 1, no I/O BAR).
 *
 * Locking: vs_mtx protects the transport state and the virtqueues.  The
 * transport holds it while calling every virtio_consts hook except
 * vc_quiesce; device code that touches a queue from elsewhere (I/O
 * completions) takes it too.  The vq_* functions expect it held.
 *
 * Guest errors: anything malformed that the guest supplies (ring addresses,
 * descriptor indices, chain shapes, buffer addresses) makes the device set
 * DEVICE_NEEDS_RESET, raise a configuration-change interrupt if the driver
 * is running, log one line (once per device), and stop processing its
 * queues until the driver resets it.  Guest memory is only reached through
 * vm_map_gpa() with the full length of what is accessed.
 *
 * Notifications: every "queue available" kick enters via
 * vi_queue_notify(vs, qidx): on the main thread from the queue's ioeventfd
 * where KVM has them (virtio_ioeventfd.c), else on the vCPU thread from
 * the MMIO/PIO handlers.  Models must not assume either thread.
 * Interrupts go out through pci_generate_msix (an irqfd write where KVM
 * has them) or INTx.
 */
#ifndef HYVE_VIRTIO_H
#define HYVE_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct pci_devinst;
struct snap_buf;
struct snap_rd;
struct vmctx;
struct vcpu;

/* ---- PCI identity ---- */
#define VIRTIO_VENDOR            0x1af4
#define VIRTIO_DEV_MODERN_BASE   0x1040   /* + device type */

/* Device types (virtio 1.2, section 5) */
#define VIRTIO_ID_NET      1
#define VIRTIO_ID_BLOCK    2
#define VIRTIO_ID_CONSOLE  3
#define VIRTIO_ID_ENTROPY  4
#define VIRTIO_ID_BALLOON  5
#define VIRTIO_ID_SCSI     8
#define VIRTIO_ID_9P       9

/* ---- device status ---- */
#define VIRTIO_S_ACKNOWLEDGE  0x01
#define VIRTIO_S_DRIVER       0x02
#define VIRTIO_S_DRIVER_OK    0x04
#define VIRTIO_S_FEATURES_OK  0x08
#define VIRTIO_S_NEEDS_RESET  0x40
#define VIRTIO_S_FAILED       0x80

/* ISR status bits */
#define VIRTIO_ISR_QUEUE   0x1
#define VIRTIO_ISR_CONFIG  0x2

/* ---- transport feature bits ---- */
#define VIRTIO_F_NOTIFY_ON_EMPTY     (1ULL << 24)   /* legacy */
#define VIRTIO_F_ANY_LAYOUT          (1ULL << 27)   /* legacy; implied by VERSION_1 */
#define VIRTIO_RING_F_INDIRECT_DESC  (1ULL << 28)
#define VIRTIO_RING_F_EVENT_IDX      (1ULL << 29)
#define VIRTIO_F_VERSION_1           (1ULL << 32)
/* What the transport and the shared virtqueue implement. */
#define VIRTIO_TRANSPORT_FEATURES \
	(VIRTIO_F_ANY_LAYOUT | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX | VIRTIO_F_VERSION_1)

#define VIRTIO_MSI_NO_VECTOR 0xffff

/* ---- split virtqueue layout (guest memory, little-endian) ---- */
#define VRING_DESC_F_NEXT      1
#define VRING_DESC_F_WRITE     2
#define VRING_DESC_F_INDIRECT  4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY     1

#define VQ_MAX_SIZE     32768   /* largest split queue */
#define VQ_MAX_INDIRECT 32768   /* largest indirect table we walk (entries) */
#define VRING_LEGACY_ALIGN 4096

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];        /* [qsize], then used_event */
};

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};

struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[];   /* [qsize], then avail_event */
};

static inline size_t vring_desc_size(unsigned qsize) { return 16u * qsize; }
static inline size_t vring_avail_size(unsigned qsize) { return 6u + 2u * qsize; }
static inline size_t vring_used_size(unsigned qsize) { return 6u + 8u * qsize; }

/* ---- the shared virtqueue ---- */
struct virtio_softc;

struct vqueue_info {
	struct virtio_softc *vq_vs;
	uint16_t vq_num;          /* index in the device */
	uint16_t vq_maxsize;      /* device limit, power of two; set by the model */
	uint16_t vq_qsize;        /* current size (the driver may lower it) */
	uint16_t vq_msix_idx;     /* MSI-X vector or VIRTIO_MSI_NO_VECTOR */
	uint32_t vq_flags;        /* VQ_* */
	uint16_t vq_last_avail;   /* next avail ring slot to consume */
	uint16_t vq_next_used;    /* shadow of used->idx */
	uint16_t vq_save_used;    /* used->idx at the last vq_endchains */
	uint64_t vq_desc_gpa, vq_avail_gpa, vq_used_gpa;
	struct vring_desc *vq_desc;      /* host views, valid while VQ_ENABLED */
	struct vring_avail *vq_avail;
	struct vring_used *vq_used;
	/* Per-queue kick handler; NULL means virtio_consts.vc_qnotify. */
	void (*vq_notify)(void *sc, struct vqueue_info *vq);
	int vq_kickfd;            /* ioeventfd for this queue's kicks, or -1 */
};

#define VQ_ENABLED 0x1   /* addresses validated and mapped */
#define VQ_BROKEN  0x2   /* guest error seen: no more processing until reset */
#define VQ_KICKED  0x4   /* kicked before DRIVER_OK: run once it is set */

/* What vq_getchain found: iov[0..readable) are device-readable, the
 * following `writable` entries device-writable. */
struct vq_chain {
	uint16_t idx;             /* head descriptor: pass to vq_relchain */
	uint16_t readable, writable;
	uint32_t rlen, wlen;      /* total bytes of each kind */
};

/*
 * Take the next available chain.  Returns the number of buffers (>0) and
 * fills iov and *ch; 0 when the ring is empty (with EVENT_IDX, avail_event
 * is then re-armed, so "loop until 0" never misses a kick); -1 on a guest
 * error (the device is now NEEDS_RESET) or when the queue is not usable.
 * A chain with more than niov buffers is a guest error.
 */
int vq_getchain(struct vqueue_info *vq, struct iovec *iov, int niov, struct vq_chain *ch);
/* Give back the chain just taken (e.g. no resources), to retry later. */
void vq_retchain(struct vqueue_info *vq);
/* Return a chain to the driver with `len` bytes written into it. */
void vq_relchain(struct vqueue_info *vq, uint16_t idx, uint32_t len);
/* After one or more vq_relchain: interrupt the driver unless it suppressed
 * it (VRING_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX). */
void vq_endchains(struct vqueue_info *vq, bool used_all_avail);
/* True if the driver made buffers available that we have not taken. */
bool vq_has_descs(struct vqueue_info *vq);
/* Ask for / suppress kicks (used->flags or avail_event with EVENT_IDX). */
void vq_kick_enable(struct vqueue_info *vq);
void vq_kick_disable(struct vqueue_info *vq);

static inline bool vq_ring_ready(const struct vqueue_info *vq)
{
	return (vq->vq_flags & (VQ_ENABLED | VQ_BROKEN)) == VQ_ENABLED;
}

/*
 * Validate and map a queue whose vq_qsize is set: size a power of two
 * <= vq_maxsize, the three areas aligned and wholly in guest RAM.  0, or
 * -1 after vi_error().  Used by the transport (and by tests).
 */
int vq_enable(struct vqueue_info *vq, uint64_t desc, uint64_t avail, uint64_t used);
/* Back to the reset state (disabled, size = max, no vector). */
void vq_reset(struct vqueue_info *vq);

/* ---- device model description ---- */
struct virtio_consts {
	const char *vc_name;      /* "virtio-blk" */
	uint16_t vc_devtype;      /* VIRTIO_ID_* */
	uint8_t vc_class, vc_subclass;   /* PCI class code */
	int vc_nvq;               /* number of virtqueues */
	uint32_t vc_cfgsize;      /* bytes of device-specific config */
	/* Device reset (vs_mtx held); the transport then resets the queues. */
	void (*vc_reset)(void *sc);
	/* Default kick handler (vs_mtx held). */
	void (*vc_qnotify)(void *sc, struct vqueue_info *vq);
	/* Device config space; 0 handled.  NULL: reads 0, writes ignored. */
	int (*vc_cfgread)(void *sc, uint32_t off, int size, uint32_t *val);
	int (*vc_cfgwrite)(void *sc, uint32_t off, int size, uint32_t val);
	/* Features accepted (FEATURES_OK, or the legacy features write). */
	void (*vc_apply_features)(void *sc, uint64_t features);
	/*
	 * Before a reset, WITHOUT vs_mtx: wait for in-flight work (DMA into
	 * guest memory) to finish so nothing lands after the reset.
	 */
	void (*vc_quiesce)(void *sc);
	/*
	 * Checkpoint (core/snapshot.h), vs_mtx held.  The transport saves its
	 * own registers and every queue's addresses and indices; these save
	 * what the model keeps beyond that (NULL: nothing).  vc_restore runs
	 * after the transport state and queues are back.
	 */
	int (*vc_snapshot)(void *sc, struct snap_buf *out);
	int (*vc_restore)(void *sc, struct snap_rd *in, char *err, size_t errlen);
	/* Checkpoint quiesce/resume, WITHOUT vs_mtx: stop taking requests and
	 * wait for in-flight ones (NULL: vc_quiesce, then nothing). */
	void (*vc_pause)(void *sc);
	void (*vc_resume)(void *sc);
};

struct virtio_softc {
	const struct virtio_consts *vs_vc;
	void *vs_sc;                    /* the model's softc (hook argument) */
	struct pci_devinst *vs_pi;      /* NULL in unit tests */
	struct vmctx *vs_ctx;           /* for vm_map_gpa */
	char vs_name[40];               /* for log lines */
	pthread_mutex_t vs_mtx;
	struct vqueue_info *vs_queues;
	int vs_nvq;
	uint64_t vs_hv_caps;            /* offered (transport bits included by setup) */
	uint64_t vs_negotiated;         /* driver-written / accepted features */
	uint32_t vs_dfselect, vs_gfselect;
	uint16_t vs_curq;
	uint16_t vs_msix_cfg_idx;
	uint8_t vs_status;
	uint8_t vs_isr;
	uint8_t vs_cfggen;
	bool vs_legacy;                 /* transitional function (I/O BAR 0) */
	bool vs_legacy_mode;            /* driver is using the legacy interface */
	bool vs_broken;                 /* guest error: NEEDS_RESET */
	bool vs_error_logged;
	bool vs_ioeventfd;              /* kicks arrive through vq_kickfd */
	bool vs_paused;                 /* checkpoint pause: kicks wait for resume */
	int vs_pcicfg_off;              /* VIRTIO_PCI_CAP_PCI_CFG capability */
};

/* Fill in the softc (no PCI side effects; tests use it with pi == NULL). */
void vi_softc_linkup(struct virtio_softc *vs, const struct virtio_consts *vc, void *sc,
                     struct pci_devinst *pi, struct vqueue_info *queues);
/* PCI ids, BARs, capabilities, MSI-X and INTx.  0 or -1. */
int vi_pci_setup(struct virtio_softc *vs, bool legacy);

/* A kick for queue qidx (takes vs_mtx). */
void vi_queue_notify(struct virtio_softc *vs, int qidx);
/* Guest error: NEEDS_RESET, config interrupt, one log line (vs_mtx held). */
void vi_error(struct virtio_softc *vs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Device config changed (e.g. capacity): bump generation, interrupt. */
void vi_config_changed(struct virtio_softc *vs);
static inline bool vi_negotiated(const struct virtio_softc *vs, uint64_t bit)
{
	return (vs->vs_negotiated & bit) != 0;
}

/* pci_devemu hooks shared by every virtio model. */
uint64_t vi_pci_read(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size);
void vi_pci_write(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size,
                  uint64_t val);
int vi_pci_cfgread(struct pci_devinst *pi, int off, int bytes, uint32_t *val);
int vi_pci_cfgwrite(struct pci_devinst *pi, int off, int bytes, uint32_t val);
/* Kicks through ioeventfds (virtio_ioeventfd.c): setup makes one eventfd
 * per queue (called by vi_pci_setup); baraddr binds them where the BARs are. */
int vi_ioeventfd_setup(struct virtio_softc *vs);
void vi_pci_baraddr(struct pci_devinst *pi, int baridx, bool decoded, uint64_t addr);
/* Checkpoint hooks shared by every virtio model (VI_PCI_DEVEMU_HOOKS sets them). */
#define VI_SNAPSHOT_VERSION 1
int vi_pci_snapshot(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen);
int vi_pci_restore(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen);
void vi_pci_pause(struct pci_devinst *pi);
void vi_pci_resume(struct pci_devinst *pi);
/* Every virtio model's pci_devemu: BAR/config access and checkpoint hooks. */
#define VI_PCI_DEVEMU_HOOKS                                                     \
	.pe_barread = vi_pci_read, .pe_barwrite = vi_pci_write,                 \
	.pe_cfgread = vi_pci_cfgread, .pe_cfgwrite = vi_pci_cfgwrite,           \
	.pe_baraddr = vi_pci_baraddr,                                           \
	.pe_snapshot_version = VI_SNAPSHOT_VERSION, .pe_snapshot = vi_pci_snapshot, \
	.pe_restore = vi_pci_restore, .pe_pause = vi_pci_pause, .pe_resume = vi_pci_resume

/* BAR layout of the modern interface (BAR 4). */
#define VI_LEGACY_BAR   0
#define VI_MSIX_BAR     1
#define VI_MODERN_BAR   4
#define VI_COMMON_OFF   0x0000
#define VI_COMMON_LEN   0x38
#define VI_ISR_OFF      0x1000
#define VI_DEVCFG_OFF   0x2000
#define VI_NOTIFY_OFF   0x3000
#define VI_NOTIFY_MULT  4
#define VI_MODERN_BAR_SIZE 0x4000

/* Helpers for models: copy between a flat buffer and an iovec list. */
size_t iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len);
size_t buf_to_iov(const void *buf, size_t len, const struct iovec *iov, int n, size_t skip);
/* Describe bytes [skip, skip+len) of iov in dst (at most maxdst entries): count or -1. */
int iov_slice(const struct iovec *iov, int n, size_t skip, size_t len, struct iovec *dst, int maxdst);

#endif
