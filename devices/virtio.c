/*
 * virtio-pci transport (modern capabilities in BAR 4, legacy registers in
 * I/O BAR 0, MSI-X with INTx fallback) and the split virtqueue shared by
 * every virtio model.  See virtio.h for the model-facing contract.
 *
 * Everything in guest memory is untrusted and may change under us while
 * we read it: descriptors are copied out once before they are checked,
 * every index is range-checked before use, and every address goes
 * through vm_map_gpa() with the full length that will be touched.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/log.h"
#include "../vmm/vmm.h"
#include "pci_emul.h"
#include "virtio.h"

/* ---- iovec helpers ---- */

size_t iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len)
{
	size_t done = 0;
	for (int i = 0; i < n && done < len; i++) {
		size_t l = iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		size_t c = l - skip < len - done ? l - skip : len - done;
		memcpy((uint8_t *)buf + done, (uint8_t *)iov[i].iov_base + skip, c);
		done += c;
		skip = 0;
	}
	return done;
}

size_t buf_to_iov(const void *buf, size_t len, const struct iovec *iov, int n, size_t skip)
{
	size_t done = 0;
	for (int i = 0; i < n && done < len; i++) {
		size_t l = iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		size_t c = l - skip < len - done ? l - skip : len - done;
		memcpy((uint8_t *)iov[i].iov_base + skip, (const uint8_t *)buf + done, c);
		done += c;
		skip = 0;
	}
	return done;
}

int iov_slice(const struct iovec *iov, int n, size_t skip, size_t len, struct iovec *dst, int maxdst)
{
	int k = 0;
	for (int i = 0; i < n && len > 0; i++) {
		size_t l = iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		if (k == maxdst)
			return -1;
		size_t c = l - skip < len ? l - skip : len;
		dst[k].iov_base = (uint8_t *)iov[i].iov_base + skip;
		dst[k].iov_len = c;
		k++;
		len -= c;
		skip = 0;
	}
	return len == 0 ? k : -1;
}

/* ---- interrupts ---- */

static void vi_intr(struct virtio_softc *vs, uint8_t isrbit, uint16_t vector)
{
	struct pci_devinst *pi = vs->vs_pi;
	if (!pi) {
		vs->vs_isr |= isrbit;   /* unit tests look at the ISR */
		return;
	}
	if (pci_msix_enabled(pi)) {
		/* The config bit is set even with MSI-X; the queue bit is not. */
		if (isrbit == VIRTIO_ISR_CONFIG)
			vs->vs_isr |= isrbit;
		if (vector != VIRTIO_MSI_NO_VECTOR)
			pci_generate_msix(pi, vector);
	} else {
		vs->vs_isr |= isrbit;
		pci_lintr_assert(pi);
	}
}

static void vi_config_intr(struct virtio_softc *vs)
{
	vi_intr(vs, VIRTIO_ISR_CONFIG, vs->vs_msix_cfg_idx);
}

void vi_config_changed(struct virtio_softc *vs)
{
	pthread_mutex_lock(&vs->vs_mtx);
	vs->vs_cfggen++;
	if (vs->vs_status & VIRTIO_S_DRIVER_OK)
		vi_config_intr(vs);
	pthread_mutex_unlock(&vs->vs_mtx);
}

void vi_error(struct virtio_softc *vs, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!vs->vs_error_logged) {
		vs->vs_error_logged = true;
		log_warn("%s: guest driver error: %s; device needs reset", vs->vs_name, msg);
	} else {
		log_debug("%s: guest driver error: %s", vs->vs_name, msg);
	}
	bool was = vs->vs_broken;
	vs->vs_broken = true;
	vs->vs_status |= VIRTIO_S_NEEDS_RESET;
	for (int i = 0; i < vs->vs_nvq; i++)
		vs->vs_queues[i].vq_flags |= VQ_BROKEN;
	if (!was && (vs->vs_status & VIRTIO_S_DRIVER_OK))
		vi_config_intr(vs);
}

/* ---- split virtqueue ---- */

void vq_reset(struct vqueue_info *vq)
{
	vq->vq_flags = 0;
	vq->vq_qsize = vq->vq_maxsize;
	vq->vq_msix_idx = VIRTIO_MSI_NO_VECTOR;
	vq->vq_last_avail = vq->vq_next_used = vq->vq_save_used = 0;
	vq->vq_desc_gpa = vq->vq_avail_gpa = vq->vq_used_gpa = 0;
	vq->vq_desc = NULL;
	vq->vq_avail = NULL;
	vq->vq_used = NULL;
}

int vq_enable(struct vqueue_info *vq, uint64_t desc, uint64_t avail, uint64_t used)
{
	struct virtio_softc *vs = vq->vq_vs;
	unsigned q = vq->vq_qsize;
	if (q == 0 || (q & (q - 1)) || q > vq->vq_maxsize) {
		vi_error(vs, "queue %u: size %u is not a power of two in 1..%u", vq->vq_num, q, vq->vq_maxsize);
		return -1;
	}
	if ((desc & 15) || (avail & 1) || (used & 3)) {
		vi_error(vs, "queue %u: misaligned ring (desc 0x%llx, avail 0x%llx, used 0x%llx)", vq->vq_num,
		         (unsigned long long)desc, (unsigned long long)avail, (unsigned long long)used);
		return -1;
	}
	void *d = vm_map_gpa(vs->vs_ctx, desc, vring_desc_size(q));
	void *a = vm_map_gpa(vs->vs_ctx, avail, vring_avail_size(q));
	void *u = vm_map_gpa(vs->vs_ctx, used, vring_used_size(q));
	if (!d || !a || !u) {
		vi_error(vs, "queue %u: ring not in guest RAM (desc 0x%llx, avail 0x%llx, used 0x%llx, size %u)",
		         vq->vq_num, (unsigned long long)desc, (unsigned long long)avail,
		         (unsigned long long)used, q);
		return -1;
	}
	vq->vq_desc_gpa = desc;
	vq->vq_avail_gpa = avail;
	vq->vq_used_gpa = used;
	vq->vq_desc = d;
	vq->vq_avail = a;
	vq->vq_used = u;
	vq->vq_last_avail = vq->vq_next_used = vq->vq_save_used = 0;
	vq->vq_flags = (vq->vq_flags & ~VQ_KICKED) | VQ_ENABLED;
	return 0;
}

static inline uint16_t *vq_used_event(struct vqueue_info *vq)
{
	return &vq->vq_avail->ring[vq->vq_qsize];
}

static inline uint16_t *vq_avail_event(struct vqueue_info *vq)
{
	return (uint16_t *)&vq->vq_used->ring[vq->vq_qsize];
}

static inline uint16_t vq_avail_idx(struct vqueue_info *vq)
{
	/* Acquire: ring entries and descriptors are read after the index. */
	return __atomic_load_n(&vq->vq_avail->idx, __ATOMIC_ACQUIRE);
}

/* Copy a descriptor out of guest memory once; checks use the copy. */
static inline void vq_load_desc(const void *src, struct vring_desc *d)
{
	memcpy(d, src, sizeof(*d));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

struct chain_walk {
	struct vqueue_info *vq;
	struct iovec *iov;
	int niov;
	int n;
	bool seen_write;
	uint64_t total;
	struct vq_chain *ch;
};

static int walk_add(struct chain_walk *w, const struct vring_desc *d)
{
	struct virtio_softc *vs = w->vq->vq_vs;
	unsigned qn = w->vq->vq_num;
	bool wr = d->flags & VRING_DESC_F_WRITE;
	if (wr)
		w->seen_write = true;
	else if (w->seen_write) {
		vi_error(vs, "queue %u: device-readable buffer after a device-writable one", qn);
		return -1;
	}
	w->total += d->len;
	if (w->total > UINT32_MAX) {
		vi_error(vs, "queue %u: descriptor chain longer than 4 GiB", qn);
		return -1;
	}
	if (w->n >= w->niov) {
		vi_error(vs, "queue %u: descriptor chain has more than %d buffers", qn, w->niov);
		return -1;
	}
	void *p = vm_map_gpa(vs->vs_ctx, d->addr, d->len);
	if (!p) {
		vi_error(vs, "queue %u: buffer 0x%llx+%u not in guest RAM", qn, (unsigned long long)d->addr,
		         d->len);
		return -1;
	}
	w->iov[w->n].iov_base = p;
	w->iov[w->n].iov_len = d->len;
	w->n++;
	if (wr) {
		w->ch->writable++;
		w->ch->wlen += d->len;
	} else {
		w->ch->readable++;
		w->ch->rlen += d->len;
	}
	return 0;
}

static int walk_indirect(struct chain_walk *w, const struct vring_desc *ind)
{
	struct virtio_softc *vs = w->vq->vq_vs;
	unsigned qn = w->vq->vq_num;
	if (!vi_negotiated(vs, VIRTIO_RING_F_INDIRECT_DESC)) {
		vi_error(vs, "queue %u: indirect descriptor without VIRTIO_F_INDIRECT_DESC", qn);
		return -1;
	}
	if (ind->flags & VRING_DESC_F_NEXT) {
		vi_error(vs, "queue %u: indirect descriptor with NEXT set", qn);
		return -1;
	}
	if (ind->len == 0 || ind->len % sizeof(struct vring_desc) ||
	    ind->len / sizeof(struct vring_desc) > VQ_MAX_INDIRECT) {
		vi_error(vs, "queue %u: bad indirect table length %u", qn, ind->len);
		return -1;
	}
	unsigned nent = ind->len / sizeof(struct vring_desc);
	const uint8_t *table = vm_map_gpa(vs->vs_ctx, ind->addr, ind->len);
	if (!table) {
		vi_error(vs, "queue %u: indirect table 0x%llx+%u not in guest RAM", qn,
		         (unsigned long long)ind->addr, ind->len);
		return -1;
	}
	unsigned i = 0, walked = 0;
	for (;;) {
		struct vring_desc d;
		if (i >= nent) {
			vi_error(vs, "queue %u: indirect descriptor index %u out of range (table of %u)", qn, i, nent);
			return -1;
		}
		if (++walked > nent) {
			vi_error(vs, "queue %u: indirect descriptor chain loops", qn);
			return -1;
		}
		vq_load_desc(table + (size_t)i * sizeof(d), &d);
		if (d.flags & VRING_DESC_F_INDIRECT) {
			vi_error(vs, "queue %u: nested indirect descriptor", qn);
			return -1;
		}
		if (walk_add(w, &d))
			return -1;
		if (!(d.flags & VRING_DESC_F_NEXT))
			return 0;
		i = d.next;
	}
}

int vq_getchain(struct vqueue_info *vq, struct iovec *iov, int niov, struct vq_chain *ch)
{
	struct virtio_softc *vs = vq->vq_vs;
	if (vs->vs_broken || (vq->vq_flags & VQ_BROKEN))
		return -1;
	if (!(vq->vq_flags & VQ_ENABLED))
		return 0;
	unsigned qsize = vq->vq_qsize;
	uint16_t avail = vq_avail_idx(vq);
	uint16_t pending = (uint16_t)(avail - vq->vq_last_avail);
	if (pending == 0) {
		if (!vi_negotiated(vs, VIRTIO_RING_F_EVENT_IDX))
			return 0;
		/* Ask for a kick on the next buffer, then look once more. */
		__atomic_store_n(vq_avail_event(vq), vq->vq_last_avail, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		avail = vq_avail_idx(vq);
		pending = (uint16_t)(avail - vq->vq_last_avail);
		if (pending == 0)
			return 0;
	}
	if (pending > qsize) {
		vi_error(vs, "queue %u: available index moved from %u to %u (queue size %u)", vq->vq_num,
		         vq->vq_last_avail, avail, qsize);
		return -1;
	}
	uint16_t head = __atomic_load_n(&vq->vq_avail->ring[vq->vq_last_avail & (qsize - 1)],
	                                __ATOMIC_RELAXED);
	memset(ch, 0, sizeof(*ch));
	ch->idx = head;
	struct chain_walk w = { .vq = vq, .iov = iov, .niov = niov, .ch = ch };
	unsigned i = head, walked = 0;
	for (;;) {
		struct vring_desc d;
		if (i >= qsize) {
			vi_error(vs, "queue %u: descriptor index %u out of range (queue size %u)", vq->vq_num, i,
			         qsize);
			return -1;
		}
		if (++walked > qsize) {
			vi_error(vs, "queue %u: descriptor chain longer than the queue (loop)", vq->vq_num);
			return -1;
		}
		vq_load_desc(&vq->vq_desc[i], &d);
		if (d.flags & VRING_DESC_F_INDIRECT) {
			/* An indirect descriptor ends the chain (NEXT is refused). */
			if (walk_indirect(&w, &d))
				return -1;
			break;
		}
		if (walk_add(&w, &d))
			return -1;
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		i = d.next;
	}
	vq->vq_last_avail++;
	return w.n;
}

void vq_retchain(struct vqueue_info *vq)
{
	vq->vq_last_avail--;
}

/*
 * Migration: the device wrote this chain's device-writable buffers and the
 * used ring from userspace, which KVM's dirty log cannot see.  The chain
 * was validated when taken; this walk is bounded again anyway (the guest
 * may have rewritten the table) and vm_mark_dirty ignores non-RAM ranges.
 */
static void vq_mark_written(struct vqueue_info *vq, uint16_t head)
{
	struct vmctx *ctx = vq->vq_vs->vs_ctx;
	unsigned q = vq->vq_qsize, i = head, steps = 0;
	struct vring_desc d;
	while (i < q && steps++ < q) {
		vq_load_desc(&vq->vq_desc[i], &d);
		if (d.flags & VRING_DESC_F_INDIRECT) {
			unsigned nent = d.len / sizeof(d), j = 0, k = 0;
			const uint8_t *t = nent && nent <= VQ_MAX_INDIRECT ? vm_map_gpa(ctx, d.addr, nent * sizeof(d)) : NULL;
			while (t && j < nent && k++ < nent) {
				struct vring_desc e;
				vq_load_desc(t + (size_t)j * sizeof(e), &e);
				if (e.flags & VRING_DESC_F_WRITE)
					vm_mark_dirty(ctx, e.addr, e.len);
				if (!(e.flags & VRING_DESC_F_NEXT))
					break;
				j = e.next;
			}
			break;
		}
		if (d.flags & VRING_DESC_F_WRITE)
			vm_mark_dirty(ctx, d.addr, d.len);
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		i = d.next;
	}
	vm_mark_dirty(ctx, vq->vq_used_gpa, vring_used_size(q));
}

void vq_relchain(struct vqueue_info *vq, uint16_t idx, uint32_t len)
{
	if (!vq_ring_ready(vq) || vq->vq_vs->vs_broken)
		return;
	if (vm_dirty_logging(vq->vq_vs->vs_ctx))
		vq_mark_written(vq, idx);
	struct vring_used_elem *e = &vq->vq_used->ring[vq->vq_next_used & (vq->vq_qsize - 1)];
	__atomic_store_n(&e->id, (uint32_t)idx, __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, len, __ATOMIC_RELAXED);
	vq->vq_next_used++;
	/* Release: the element is visible before the index that covers it. */
	__atomic_store_n(&vq->vq_used->idx, vq->vq_next_used, __ATOMIC_RELEASE);
}

void vq_endchains(struct vqueue_info *vq, bool used_all_avail)
{
	struct virtio_softc *vs = vq->vq_vs;
	if (!vq_ring_ready(vq) || vs->vs_broken)
		return;
	/* Our used->idx store must be visible before we read the driver's
	 * suppression state, or both sides can decide not to signal. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint16_t old = vq->vq_save_used, new = vq->vq_next_used;
	vq->vq_save_used = new;
	bool intr;
	if (vi_negotiated(vs, VIRTIO_RING_F_EVENT_IDX)) {
		uint16_t ev = __atomic_load_n(vq_used_event(vq), __ATOMIC_RELAXED);
		/* Signal if used_event lies in (old, new]. */
		intr = (uint16_t)(new - ev - 1) < (uint16_t)(new - old);
	} else {
		uint16_t flags = __atomic_load_n(&vq->vq_avail->flags, __ATOMIC_RELAXED);
		intr = new != old && !(flags & VRING_AVAIL_F_NO_INTERRUPT);
		if (!intr && used_all_avail && vi_negotiated(vs, VIRTIO_F_NOTIFY_ON_EMPTY))
			intr = true;
	}
	if (intr)
		vi_intr(vs, VIRTIO_ISR_QUEUE, vq->vq_msix_idx);
}

bool vq_has_descs(struct vqueue_info *vq)
{
	return vq_ring_ready(vq) && !vq->vq_vs->vs_broken && vq_avail_idx(vq) != vq->vq_last_avail;
}

void vq_kick_enable(struct vqueue_info *vq)
{
	if (!vq_ring_ready(vq))
		return;
	if (vi_negotiated(vq->vq_vs, VIRTIO_RING_F_EVENT_IDX))
		__atomic_store_n(vq_avail_event(vq), vq->vq_last_avail, __ATOMIC_RELAXED);
	else
		__atomic_and_fetch(&vq->vq_used->flags, (uint16_t)~VRING_USED_F_NO_NOTIFY, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void vq_kick_disable(struct vqueue_info *vq)
{
	if (!vq_ring_ready(vq))
		return;
	/* With EVENT_IDX, avail_event is simply left behind. */
	if (!vi_negotiated(vq->vq_vs, VIRTIO_RING_F_EVENT_IDX))
		__atomic_or_fetch(&vq->vq_used->flags, (uint16_t)VRING_USED_F_NO_NOTIFY, __ATOMIC_RELAXED);
}

/* ---- device state ---- */

void vi_softc_linkup(struct virtio_softc *vs, const struct virtio_consts *vc, void *sc,
                     struct pci_devinst *pi, struct vqueue_info *queues)
{
	vs->vs_vc = vc;
	vs->vs_sc = sc;
	vs->vs_pi = pi;
	vs->vs_ctx = pi ? pi->pi_vmctx : NULL;
	snprintf(vs->vs_name, sizeof(vs->vs_name), "%s", pi ? pi->pi_name : vc->vc_name);
	pthread_mutex_init(&vs->vs_mtx, NULL);
	vs->vs_queues = queues;
	vs->vs_nvq = vc->vc_nvq;
	vs->vs_msix_cfg_idx = VIRTIO_MSI_NO_VECTOR;
	for (int i = 0; i < vc->vc_nvq; i++) {
		queues[i].vq_vs = vs;
		queues[i].vq_num = (uint16_t)i;
		queues[i].vq_msix_idx = VIRTIO_MSI_NO_VECTOR;
		queues[i].vq_kickfd = -1;
	}
	if (pi)
		pi->pi_arg = sc;
}

static void vi_reset(struct virtio_softc *vs)
{
	if (vs->vs_vc->vc_reset)
		vs->vs_vc->vc_reset(vs->vs_sc);
	for (int i = 0; i < vs->vs_nvq; i++)
		vq_reset(&vs->vs_queues[i]);
	vs->vs_negotiated = 0;
	vs->vs_dfselect = vs->vs_gfselect = 0;
	vs->vs_curq = 0;
	vs->vs_msix_cfg_idx = VIRTIO_MSI_NO_VECTOR;
	vs->vs_status = 0;
	vs->vs_isr = 0;
	vs->vs_legacy_mode = false;
	vs->vs_broken = false;
	if (vs->vs_pi)
		pci_lintr_deassert(vs->vs_pi);
}

static void vi_run_notify(struct virtio_softc *vs, struct vqueue_info *vq)
{
	void (*fn)(void *, struct vqueue_info *) = vq->vq_notify ? vq->vq_notify : vs->vs_vc->vc_qnotify;
	if (fn)
		fn(vs->vs_sc, vq);
}

static void vi_queue_notify_locked(struct virtio_softc *vs, unsigned qidx)
{
	if (qidx >= (unsigned)vs->vs_nvq) {
		log_debug("%s: kick for queue %u of %d", vs->vs_name, qidx, vs->vs_nvq);
		return;
	}
	struct vqueue_info *vq = &vs->vs_queues[qidx];
	/* Paused for a checkpoint: vi_pci_resume looks at every queue again. */
	if (!vq_ring_ready(vq) || vs->vs_broken || vs->vs_paused)
		return;
	/* A device consumes nothing before DRIVER_OK (legacy drivers were lax). */
	if (!vs->vs_legacy_mode && !(vs->vs_status & VIRTIO_S_DRIVER_OK)) {
		vq->vq_flags |= VQ_KICKED;
		return;
	}
	vi_run_notify(vs, vq);
}

void vi_queue_notify(struct virtio_softc *vs, int qidx)
{
	pthread_mutex_lock(&vs->vs_mtx);
	vi_queue_notify_locked(vs, (unsigned)qidx);
	pthread_mutex_unlock(&vs->vs_mtx);
}

static void vi_set_status(struct virtio_softc *vs, uint8_t val)
{
	if (val == 0) {
		vi_reset(vs);
		return;
	}
	uint8_t old = vs->vs_status;
	if ((val & VIRTIO_S_FEATURES_OK) && !(old & VIRTIO_S_FEATURES_OK) && !vs->vs_legacy_mode) {
		bool ok = !(vs->vs_negotiated & ~vs->vs_hv_caps) && (vs->vs_negotiated & VIRTIO_F_VERSION_1);
		if (!ok) {
			log_debug("%s: refusing features 0x%llx (offered 0x%llx)", vs->vs_name,
			          (unsigned long long)vs->vs_negotiated, (unsigned long long)vs->vs_hv_caps);
			val &= (uint8_t)~VIRTIO_S_FEATURES_OK;
		} else if (vs->vs_vc->vc_apply_features) {
			vs->vs_vc->vc_apply_features(vs->vs_sc, vs->vs_negotiated);
		}
	}
	/* NEEDS_RESET belongs to the device. */
	vs->vs_status = (uint8_t)((val & ~VIRTIO_S_NEEDS_RESET) | (old & VIRTIO_S_NEEDS_RESET));
	if ((val & VIRTIO_S_DRIVER_OK) && !(old & VIRTIO_S_DRIVER_OK)) {
		for (int i = 0; i < vs->vs_nvq; i++) {
			struct vqueue_info *vq = &vs->vs_queues[i];
			if (vq->vq_flags & VQ_KICKED) {
				vq->vq_flags &= ~VQ_KICKED;
				if (vq_ring_ready(vq) && !vs->vs_broken)
					vi_run_notify(vs, vq);
			}
		}
	}
}

static uint16_t vi_msix_vector(struct virtio_softc *vs, uint32_t val)
{
	int n = vs->vs_pi ? vs->vs_pi->pi_msix.table_count : 0;
	return val < (uint32_t)n ? (uint16_t)val : VIRTIO_MSI_NO_VECTOR;
}

static struct vqueue_info *vi_curq(struct virtio_softc *vs)
{
	return vs->vs_curq < vs->vs_nvq ? &vs->vs_queues[vs->vs_curq] : NULL;
}

static uint32_t vi_isr_read(struct virtio_softc *vs)
{
	uint32_t v = vs->vs_isr;
	vs->vs_isr = 0;
	if (vs->vs_pi)
		pci_lintr_deassert(vs->vs_pi);
	return v;
}

static uint64_t vi_devcfg_read(struct virtio_softc *vs, uint64_t off, int size)
{
	const struct virtio_consts *vc = vs->vs_vc;
	uint32_t v = 0;
	if (size > 4 || off + (uint64_t)size > vc->vc_cfgsize || !vc->vc_cfgread)
		return 0;
	if (vc->vc_cfgread(vs->vs_sc, (uint32_t)off, size, &v))
		return 0;
	return v;
}

static void vi_devcfg_write(struct virtio_softc *vs, uint64_t off, int size, uint64_t val)
{
	const struct virtio_consts *vc = vs->vs_vc;
	if (size > 4 || off + (uint64_t)size > vc->vc_cfgsize || !vc->vc_cfgwrite)
		return;
	vc->vc_cfgwrite(vs->vs_sc, (uint32_t)off, size, (uint32_t)val);
}

/* ---- modern common configuration (BAR 4, offset 0) ---- */

#define FIELD(o, s) (off == (o) && size == (s))

static uint64_t *vi_q64(struct vqueue_info *vq, uint64_t base)
{
	return base == 0x20 ? &vq->vq_desc_gpa : base == 0x28 ? &vq->vq_avail_gpa : &vq->vq_used_gpa;
}

static uint64_t vi_common_read(struct virtio_softc *vs, uint64_t off, int size)
{
	struct vqueue_info *vq = vi_curq(vs);
	if (FIELD(0x00, 4))
		return vs->vs_dfselect;
	if (FIELD(0x04, 4))
		return vs->vs_dfselect < 2 ? (uint32_t)(vs->vs_hv_caps >> (32 * vs->vs_dfselect)) : 0;
	if (FIELD(0x08, 4))
		return vs->vs_gfselect;
	if (FIELD(0x0c, 4))
		return vs->vs_gfselect < 2 ? (uint32_t)(vs->vs_negotiated >> (32 * vs->vs_gfselect)) : 0;
	if (FIELD(0x10, 2))
		return vs->vs_msix_cfg_idx;
	if (FIELD(0x12, 2))
		return (uint64_t)vs->vs_nvq;
	if (FIELD(0x14, 1))
		return vs->vs_status;
	if (FIELD(0x15, 1))
		return vs->vs_cfggen;
	if (FIELD(0x16, 2))
		return vs->vs_curq;
	if (FIELD(0x18, 2))
		return vq ? vq->vq_qsize : 0;
	if (FIELD(0x1a, 2))
		return vq ? vq->vq_msix_idx : VIRTIO_MSI_NO_VECTOR;
	if (FIELD(0x1c, 2))
		return vq && (vq->vq_flags & VQ_ENABLED) ? 1 : 0;
	if (FIELD(0x1e, 2))
		return vq ? vs->vs_curq : 0;
	if (off >= 0x20 && off < 0x38 && vq) {
		uint64_t base = off & ~7ULL;
		uint64_t v = *vi_q64(vq, base);
		if (size == 8 && off == base)
			return v;
		if (size == 4)
			return (uint32_t)(v >> (off == base ? 0 : 32));
	}
	return 0;
}

static void vi_common_write(struct virtio_softc *vs, uint64_t off, int size, uint64_t val)
{
	struct vqueue_info *vq = vi_curq(vs);
	if (FIELD(0x00, 4)) {
		vs->vs_dfselect = (uint32_t)val;
	} else if (FIELD(0x08, 4)) {
		vs->vs_gfselect = (uint32_t)val;
	} else if (FIELD(0x0c, 4)) {
		/* Checked when the driver sets FEATURES_OK; frozen after. */
		if (!(vs->vs_status & VIRTIO_S_FEATURES_OK) && vs->vs_gfselect < 2) {
			int sh = 32 * (int)vs->vs_gfselect;
			vs->vs_negotiated = (vs->vs_negotiated & ~(0xffffffffULL << sh)) | ((val & 0xffffffffULL) << sh);
		}
	} else if (FIELD(0x10, 2)) {
		vs->vs_msix_cfg_idx = vi_msix_vector(vs, (uint32_t)val);
	} else if (FIELD(0x14, 1)) {
		vi_set_status(vs, (uint8_t)val);
	} else if (FIELD(0x16, 2)) {
		vs->vs_curq = (uint16_t)val;
	} else if (!vq) {
		return;
	} else if (FIELD(0x18, 2)) {
		if (!(vq->vq_flags & VQ_ENABLED))
			vq->vq_qsize = (uint16_t)val;   /* checked at enable */
	} else if (FIELD(0x1a, 2)) {
		vq->vq_msix_idx = vi_msix_vector(vs, (uint32_t)val);
	} else if (FIELD(0x1c, 2)) {
		/* Writing 0 is not allowed to the driver; ignore it. */
		if (val == 1 && !(vq->vq_flags & VQ_ENABLED) && !vs->vs_broken)
			vq_enable(vq, vq->vq_desc_gpa, vq->vq_avail_gpa, vq->vq_used_gpa);
	} else if (off >= 0x20 && off < 0x38 && !(vq->vq_flags & VQ_ENABLED)) {
		uint64_t base = off & ~7ULL;
		uint64_t *p = vi_q64(vq, base);
		if (size == 8 && off == base)
			*p = val;
		else if (size == 4 && off == base)
			*p = (*p & ~0xffffffffULL) | (val & 0xffffffffULL);
		else if (size == 4)
			*p = (*p & 0xffffffffULL) | (val << 32);
	}
}

/* ---- legacy registers (I/O BAR 0) ---- */

static uint64_t vi_legacy_cfgbase(struct virtio_softc *vs)
{
	return vs->vs_pi && pci_msix_enabled(vs->vs_pi) ? 24 : 20;
}

static uint64_t vi_legacy_read(struct virtio_softc *vs, uint64_t off, int size)
{
	struct vqueue_info *vq = vi_curq(vs);
	uint64_t cfgbase = vi_legacy_cfgbase(vs);
	if (off >= cfgbase)
		return vi_devcfg_read(vs, off - cfgbase, size);
	if (FIELD(0, 4))
		return (uint32_t)vs->vs_hv_caps;
	if (FIELD(4, 4))
		return (uint32_t)vs->vs_negotiated;
	if (FIELD(8, 4))
		return vq && (vq->vq_flags & VQ_ENABLED) ? (uint32_t)(vq->vq_desc_gpa >> 12) : 0;
	if (FIELD(12, 2))
		return vq ? vq->vq_maxsize : 0;
	if (FIELD(14, 2))
		return vs->vs_curq;
	if (FIELD(18, 1))
		return vs->vs_status;
	if (FIELD(19, 1))
		return vi_isr_read(vs);
	if (FIELD(20, 2))
		return vs->vs_msix_cfg_idx;
	if (FIELD(22, 2))
		return vq ? vq->vq_msix_idx : VIRTIO_MSI_NO_VECTOR;
	return 0;
}

static void vi_legacy_write(struct virtio_softc *vs, uint64_t off, int size, uint64_t val)
{
	struct vqueue_info *vq = vi_curq(vs);
	uint64_t cfgbase = vi_legacy_cfgbase(vs);
	if (off >= cfgbase) {
		vi_devcfg_write(vs, off - cfgbase, size, val);
	} else if (FIELD(4, 4)) {
		if (!(vs->vs_status & VIRTIO_S_FEATURES_OK)) {
			/* Legacy: bits 0..31 only, no FEATURES_OK step. */
			vs->vs_legacy_mode = true;
			vs->vs_negotiated = val & (uint32_t)vs->vs_hv_caps;
			if (vs->vs_vc->vc_apply_features)
				vs->vs_vc->vc_apply_features(vs->vs_sc, vs->vs_negotiated);
		}
	} else if (FIELD(8, 4)) {
		if (!vq)
			return;
		if (val == 0) {
			uint16_t vec = vq->vq_msix_idx;
			vq_reset(vq);
			vq->vq_msix_idx = vec;
			return;
		}
		if (vs->vs_broken)
			return;
		vs->vs_legacy_mode = true;
		unsigned q = vq->vq_maxsize;   /* legacy queues have the device's size */
		uint64_t desc = (uint64_t)(uint32_t)val << 12;
		uint64_t avail = desc + vring_desc_size(q);
		uint64_t used = (avail + vring_avail_size(q) + VRING_LEGACY_ALIGN - 1) &
		                ~(uint64_t)(VRING_LEGACY_ALIGN - 1);
		vq->vq_flags &= ~VQ_ENABLED;
		vq->vq_qsize = (uint16_t)q;
		vq_enable(vq, desc, avail, used);
	} else if (FIELD(14, 2)) {
		vs->vs_curq = (uint16_t)val;
	} else if (FIELD(16, 2)) {
		vi_queue_notify_locked(vs, (uint16_t)val);
	} else if (FIELD(18, 1)) {
		if (val)
			vs->vs_legacy_mode = true;
		vi_set_status(vs, (uint8_t)val);
	} else if (FIELD(20, 2)) {
		vs->vs_msix_cfg_idx = vi_msix_vector(vs, (uint32_t)val);
	} else if (FIELD(22, 2)) {
		if (vq)
			vq->vq_msix_idx = vi_msix_vector(vs, (uint32_t)val);
	}
}

/* ---- BAR dispatch ---- */

static uint64_t vi_modern_read(struct virtio_softc *vs, uint64_t off, int size)
{
	if (off < VI_COMMON_OFF + VI_COMMON_LEN)
		return vi_common_read(vs, off - VI_COMMON_OFF, size);
	if (off == VI_ISR_OFF)
		return vi_isr_read(vs);
	if (off >= VI_DEVCFG_OFF && off < VI_DEVCFG_OFF + 0x1000)
		return vi_devcfg_read(vs, off - VI_DEVCFG_OFF, size);
	return 0;
}

static void vi_modern_write(struct virtio_softc *vs, uint64_t off, int size, uint64_t val)
{
	if (off < VI_COMMON_OFF + VI_COMMON_LEN)
		vi_common_write(vs, off - VI_COMMON_OFF, size, val);
	else if (off >= VI_DEVCFG_OFF && off < VI_DEVCFG_OFF + 0x1000)
		vi_devcfg_write(vs, off - VI_DEVCFG_OFF, size, val);
	else if (off >= VI_NOTIFY_OFF && off < VI_NOTIFY_OFF + 0x1000)
		vi_queue_notify_locked(vs, (unsigned)((off - VI_NOTIFY_OFF) / VI_NOTIFY_MULT));
}

static struct virtio_softc *vi_from_pi(struct pci_devinst *pi)
{
	return pi->pi_arg;   /* the model's softc starts with its virtio_softc */
}

uint64_t vi_pci_read(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size)
{
	(void)vcpu;
	struct virtio_softc *vs = vi_from_pi(pi);
	uint64_t v = 0;
	pthread_mutex_lock(&vs->vs_mtx);
	if (baridx == VI_LEGACY_BAR && vs->vs_legacy)
		v = vi_legacy_read(vs, off, size);
	else if (baridx == VI_MODERN_BAR)
		v = vi_modern_read(vs, off, size);
	pthread_mutex_unlock(&vs->vs_mtx);
	return v;
}

void vi_pci_write(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size,
                  uint64_t val)
{
	(void)vcpu;
	struct virtio_softc *vs = vi_from_pi(pi);
	bool is_reset = size == 1 && (val & 0xff) == 0 &&
	                ((baridx == VI_LEGACY_BAR && vs->vs_legacy && off == 18) ||
	                 (baridx == VI_MODERN_BAR && off == VI_COMMON_OFF + 0x14));
	/* Let in-flight I/O finish before the rings go away (outside the lock:
	 * completions need it). */
	if (is_reset && vs->vs_vc->vc_quiesce)
		vs->vs_vc->vc_quiesce(vs->vs_sc);
	pthread_mutex_lock(&vs->vs_mtx);
	if (baridx == VI_LEGACY_BAR && vs->vs_legacy)
		vi_legacy_write(vs, off, size, val);
	else if (baridx == VI_MODERN_BAR)
		vi_modern_write(vs, off, size, val);
	pthread_mutex_unlock(&vs->vs_mtx);
}

/*
 * VIRTIO_PCI_CAP_PCI_CFG: cap.bar, cap.offset and cap.length are writable,
 * and pci_cfg_data is a window onto the selected BAR.
 */
#define PCICFG_BAR 4
#define PCICFG_OFFSET 8
#define PCICFG_LENGTH 12
#define PCICFG_DATA 16
#define PCICFG_CAPLEN 20

static bool vi_pcicfg_target(struct pci_devinst *pi, int c, uint64_t *boff, int *len)
{
	uint8_t bar = pci_get_cfgdata8(pi, c + PCICFG_BAR);
	uint32_t l = pci_get_cfgdata32(pi, c + PCICFG_LENGTH);
	uint32_t o = pci_get_cfgdata32(pi, c + PCICFG_OFFSET);
	if (bar != VI_MODERN_BAR || (l != 1 && l != 2 && l != 4) || o % l || o >= VI_MODERN_BAR_SIZE)
		return false;
	*boff = o;
	*len = (int)l;
	return true;
}

int vi_pci_cfgread(struct pci_devinst *pi, int off, int bytes, uint32_t *val)
{
	(void)val;
	struct virtio_softc *vs = vi_from_pi(pi);
	int c = vs->vs_pcicfg_off;
	if (!c || off + bytes <= c + PCICFG_DATA || off >= c + PCICFG_CAPLEN)
		return 1;
	uint64_t boff;
	int len;
	if (vi_pcicfg_target(pi, c, &boff, &len)) {
		uint64_t v = vi_pci_read(NULL, pi, VI_MODERN_BAR, boff, len);
		pci_set_cfgdata32(pi, c + PCICFG_DATA, (uint32_t)v);
	}
	return 1;   /* the framework returns the bytes from config space */
}

int vi_pci_cfgwrite(struct pci_devinst *pi, int off, int bytes, uint32_t val)
{
	struct virtio_softc *vs = vi_from_pi(pi);
	int c = vs->vs_pcicfg_off;
	if (!c || off + bytes <= c || off >= c + PCICFG_CAPLEN)
		return 1;
	for (int i = 0; i < bytes; i++) {
		int o = off + i;
		if (o == c + PCICFG_BAR || (o >= c + PCICFG_OFFSET && o < c + PCICFG_CAPLEN))
			pi->pi_cfg[o] = (uint8_t)(val >> (8 * i));
	}
	uint64_t boff;
	int len;
	if (off + bytes > c + PCICFG_DATA && vi_pcicfg_target(pi, c, &boff, &len)) {
		uint32_t v = pci_get_cfgdata32(pi, c + PCICFG_DATA);
		if (len < 4)
			v &= (1u << (8 * len)) - 1;
		vi_pci_write(NULL, pi, VI_MODERN_BAR, boff, len, v);
	}
	return 0;
}

/* ---- PCI function setup ---- */

static uint16_t vi_transitional_id(uint16_t type)
{
	switch (type) {
	case VIRTIO_ID_NET: return 0x1000;
	case VIRTIO_ID_BLOCK: return 0x1001;
	case VIRTIO_ID_BALLOON: return 0x1002;
	case VIRTIO_ID_CONSOLE: return 0x1003;
	case VIRTIO_ID_SCSI: return 0x1004;
	case VIRTIO_ID_ENTROPY: return 0x1005;
	case VIRTIO_ID_9P: return 0x1009;
	default: return 0;
	}
}

static int vi_add_cap(struct pci_devinst *pi, uint8_t type, uint32_t off, uint32_t len, int extra,
                      uint32_t extra_val)
{
	uint8_t cap[20] = { 0x09 /* vendor-specific */ };
	int caplen = 16 + extra;
	cap[2] = (uint8_t)caplen;
	cap[3] = type;
	cap[4] = VI_MODERN_BAR;
	memcpy(&cap[8], &off, 4);
	memcpy(&cap[12], &len, 4);
	if (extra)
		memcpy(&cap[16], &extra_val, 4);
	return pci_emul_add_capability(pi, cap, caplen);
}

int vi_pci_setup(struct virtio_softc *vs, bool legacy)
{
	struct pci_devinst *pi = vs->vs_pi;
	const struct virtio_consts *vc = vs->vs_vc;
	uint16_t tid = vi_transitional_id(vc->vc_devtype);
	if (!tid)
		legacy = false;
	vs->vs_legacy = legacy;
	vs->vs_hv_caps |= VIRTIO_TRANSPORT_FEATURES;
	for (int i = 0; i < vs->vs_nvq; i++) {
		struct vqueue_info *vq = &vs->vs_queues[i];
		if (!vq->vq_maxsize || (vq->vq_maxsize & (vq->vq_maxsize - 1)) || vq->vq_maxsize > VQ_MAX_SIZE) {
			log_err("%s: queue %d: bad size %u", vs->vs_name, i, vq->vq_maxsize);
			return -1;
		}
		vq_reset(vq);
	}

	uint16_t modern_id = (uint16_t)(VIRTIO_DEV_MODERN_BASE + vc->vc_devtype);
	pci_set_cfgdata16(pi, PCIR_VENDOR, VIRTIO_VENDOR);
	pci_set_cfgdata16(pi, PCIR_DEVICE, legacy ? tid : modern_id);
	pci_set_cfgdata8(pi, PCIR_REVID, legacy ? 0 : 1);
	pci_set_cfgdata16(pi, PCIR_SUBVEND, VIRTIO_VENDOR);
	/* Transitional: subsystem id = device type (legacy drivers match on it). */
	pci_set_cfgdata16(pi, PCIR_SUBDEV, legacy ? vc->vc_devtype : modern_id);
	pci_set_cfgdata8(pi, PCIR_CLASS, vc->vc_class);
	pci_set_cfgdata8(pi, PCIR_SUBCLASS, vc->vc_subclass);
	pci_set_cfgdata8(pi, PCIR_HDRTYPE, 0);

	/* Before the BARs exist: allocating them decodes them, which binds these. */
	if (vi_ioeventfd_setup(vs))
		return -1;
	if (pci_emul_add_msixcap(pi, vs->vs_nvq + 1, VI_MSIX_BAR))
		return -1;
	if (legacy) {
		uint64_t sz = 32;
		while (sz < 24 + (uint64_t)vc->vc_cfgsize)
			sz <<= 1;
		if (pci_emul_alloc_bar(pi, VI_LEGACY_BAR, PCIBAR_IO, sz))
			return -1;
	}
	if (pci_emul_alloc_bar(pi, VI_MODERN_BAR, PCIBAR_MEM64, VI_MODERN_BAR_SIZE))
		return -1;
	/* In order of preference: common, notify, ISR, device, PCI cfg access. */
	if (vi_add_cap(pi, 1, VI_COMMON_OFF, VI_COMMON_LEN, 0, 0) < 0 ||
	    vi_add_cap(pi, 2, VI_NOTIFY_OFF, (uint32_t)vs->vs_nvq * VI_NOTIFY_MULT, 4, VI_NOTIFY_MULT) < 0 ||
	    vi_add_cap(pi, 3, VI_ISR_OFF, 1, 0, 0) < 0 ||
	    (vc->vc_cfgsize && vi_add_cap(pi, 4, VI_DEVCFG_OFF, vc->vc_cfgsize, 0, 0) < 0))
		return -1;
	int c = vi_add_cap(pi, 5, 0, 0, 4, 0);
	if (c < 0)
		return -1;
	pci_set_cfgdata8(pi, c + PCICFG_BAR, 0);
	vs->vs_pcicfg_off = c;
	return pci_lintr_request(pi);
}
