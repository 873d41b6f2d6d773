/*
 * Checkpoint hooks shared by every virtio-pci model: the transport's
 * registers and each virtqueue's guest addresses and ring indices, then the
 * model's own vc_snapshot/vc_restore.  Ring contents live in guest RAM and
 * travel with it; only the device-side cursors are saved here.
 */
#include <stdio.h>
#include <string.h>

#include "../core/snapshot.h"
#include "pci_emul.h"
#include "virtio.h"

static struct virtio_softc *vs_of(struct pci_devinst *pi)
{
	return pi->pi_arg;   /* the softc starts with its virtio_softc */
}

int vi_pci_snapshot(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen)
{
	struct virtio_softc *vs = vs_of(pi);
	int rc = 0;
	pthread_mutex_lock(&vs->vs_mtx);
	sb_u16(out, vs->vs_vc->vc_devtype);
	sb_u16(out, (uint16_t)vs->vs_nvq);
	sb_u64(out, vs->vs_negotiated);
	sb_u32(out, vs->vs_dfselect);
	sb_u32(out, vs->vs_gfselect);
	sb_u16(out, vs->vs_curq);
	sb_u16(out, vs->vs_msix_cfg_idx);
	sb_u8(out, vs->vs_status);
	sb_u8(out, vs->vs_isr);
	sb_u8(out, vs->vs_cfggen);
	sb_bool(out, vs->vs_legacy_mode);
	sb_bool(out, vs->vs_broken);
	for (int i = 0; i < vs->vs_nvq; i++) {
		struct vqueue_info *vq = &vs->vs_queues[i];
		sb_u32(out, vq->vq_flags);
		sb_u16(out, vq->vq_qsize);
		sb_u16(out, vq->vq_msix_idx);
		sb_u16(out, vq->vq_last_avail);
		sb_u16(out, vq->vq_next_used);
		sb_u16(out, vq->vq_save_used);
		sb_u64(out, vq->vq_desc_gpa);
		sb_u64(out, vq->vq_avail_gpa);
		sb_u64(out, vq->vq_used_gpa);
	}
	if (vs->vs_vc->vc_snapshot && vs->vs_vc->vc_snapshot(vs->vs_sc, out)) {
		snprintf(err, errlen, "%s: device state cannot be saved", vs->vs_name);
		rc = -1;
	}
	pthread_mutex_unlock(&vs->vs_mtx);
	return rc;
}

int vi_pci_restore(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	struct virtio_softc *vs = vs_of(pi);
	if (version != VI_SNAPSHOT_VERSION) {
		snprintf(err, errlen, "virtio state version %u (this hyve reads %u)", version, VI_SNAPSHOT_VERSION);
		return -1;
	}
	int rc = -1;
	pthread_mutex_lock(&vs->vs_mtx);
	uint16_t type = sr_u16(in), nvq = sr_u16(in);
	if (!sr_ok(in) || type != vs->vs_vc->vc_devtype || nvq != vs->vs_nvq) {
		snprintf(err, errlen, "saved device is type %u with %u queues; configured %s has type %u with %d",
		         type, nvq, vs->vs_name, vs->vs_vc->vc_devtype, vs->vs_nvq);
		goto out;
	}
	vs->vs_negotiated = sr_u64(in);
	vs->vs_dfselect = sr_u32(in);
	vs->vs_gfselect = sr_u32(in);
	vs->vs_curq = sr_u16(in);
	vs->vs_msix_cfg_idx = sr_u16(in);
	vs->vs_status = sr_u8(in);
	vs->vs_isr = sr_u8(in);
	vs->vs_cfggen = sr_u8(in);
	vs->vs_legacy_mode = sr_bool(in);
	vs->vs_broken = sr_bool(in);
	if (vs->vs_negotiated & ~vs->vs_hv_caps) {
		snprintf(err, errlen, "saved features 0x%llx are not all offered by this device (0x%llx)",
		         (unsigned long long)vs->vs_negotiated, (unsigned long long)vs->vs_hv_caps);
		goto out;
	}
	if (vs->vs_curq >= vs->vs_nvq && vs->vs_curq != 0)
		vs->vs_curq = 0;
	for (int i = 0; i < vs->vs_nvq && sr_ok(in); i++) {
		struct vqueue_info *vq = &vs->vs_queues[i];
		uint32_t flags = sr_u32(in);
		vq->vq_qsize = sr_u16(in);
		vq->vq_msix_idx = sr_u16(in);
		uint16_t last_avail = sr_u16(in), next_used = sr_u16(in), save_used = sr_u16(in);
		uint64_t desc = sr_u64(in), avail = sr_u64(in), used = sr_u64(in);
		if (!sr_ok(in))
			break;
		vq->vq_desc_gpa = desc;
		vq->vq_avail_gpa = avail;
		vq->vq_used_gpa = used;
		vq->vq_flags = 0;
		/* The same checks as when the driver enabled it: the file is input too. */
		if ((flags & VQ_ENABLED) && vq_enable(vq, desc, avail, used)) {
			snprintf(err, errlen, "queue %d: saved ring is not valid in this guest's memory", i);
			goto out;
		}
		vq->vq_last_avail = last_avail;
		vq->vq_next_used = next_used;
		vq->vq_save_used = save_used;
		vq->vq_flags = flags & (VQ_ENABLED | VQ_BROKEN | VQ_KICKED);
	}
	if (!sr_ok(in)) {
		snprintf(err, errlen, "virtio transport state truncated");
		goto out;
	}
	/* Models derive settings from the accepted features (e.g. write-back). */
	bool accepted = (vs->vs_status & VIRTIO_S_FEATURES_OK) || (vs->vs_legacy_mode && vs->vs_negotiated);
	if (accepted && vs->vs_vc->vc_apply_features)
		vs->vs_vc->vc_apply_features(vs->vs_sc, vs->vs_negotiated);
	if (vs->vs_vc->vc_restore && vs->vs_vc->vc_restore(vs->vs_sc, in, err, errlen))
		goto out;
	if (!sr_done(in)) {
		snprintf(err, errlen, "%s state: %s", vs->vs_name, sr_ok(in) ? "trailing bytes" : "truncated");
		goto out;
	}
	rc = 0;
out:
	pthread_mutex_unlock(&vs->vs_mtx);
	return rc;
}

void vi_pci_pause(struct pci_devinst *pi)
{
	struct virtio_softc *vs = vs_of(pi);
	pthread_mutex_lock(&vs->vs_mtx);
	vs->vs_paused = true;
	pthread_mutex_unlock(&vs->vs_mtx);
	if (vs->vs_vc->vc_pause)
		vs->vs_vc->vc_pause(vs->vs_sc);
	else if (vs->vs_vc->vc_quiesce)
		vs->vs_vc->vc_quiesce(vs->vs_sc);
}

void vi_pci_resume(struct pci_devinst *pi)
{
	struct virtio_softc *vs = vs_of(pi);
	if (vs->vs_vc->vc_resume)
		vs->vs_vc->vc_resume(vs->vs_sc);
	/*
	 * Buffers the driver made available that the device had not taken yet
	 * (it was out of resources when the checkpoint stopped it, or this is
	 * a restored VM whose kicks happened in another process): look again.
	 * Models loop until the ring is empty, so an extra look is harmless.
	 * This also covers ioeventfd kicks dropped while paused.
	 */
	pthread_mutex_lock(&vs->vs_mtx);
	vs->vs_paused = false;
	if ((vs->vs_status & VIRTIO_S_DRIVER_OK) && !vs->vs_broken) {
		for (int i = 0; i < vs->vs_nvq; i++) {
			struct vqueue_info *vq = &vs->vs_queues[i];
			if (vq_ring_ready(vq) && vq_has_descs(vq)) {
				void (*fn)(void *, struct vqueue_info *) =
				        vq->vq_notify ? vq->vq_notify : vs->vs_vc->vc_qnotify;
				if (fn)
					fn(vs->vs_sc, vq);
			}
		}
	}
	pthread_mutex_unlock(&vs->vs_mtx);
}
