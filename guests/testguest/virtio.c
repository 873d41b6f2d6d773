/*
 * Minimal virtio-pci modern driver (virtio 1.2, 4.1.4): vendor capabilities
 * locate common cfg / notify / ISR / device cfg in a memory BAR; one split
 * virtqueue (queue 0) of VQ_SIZE entries; one request in flight, completed
 * by polling the used ring (the INTx line is acknowledged through the ISR
 * but never routed).  All of this runs at CPL0, so it is kept short.
 */
#include "virtio.h"

struct vdev vdevs[VDEV_MAX];
int nvdevs = -1;

/* One page per device: descriptors at 0, avail at 256, used at 1024. */
static u8 vq_pages[VDEV_MAX][4096] __attribute__((aligned(4096)));

static const char *vtype_name(u16 t)
{
	return t == VIRTIO_ID_BLOCK ? "blk" : t == VIRTIO_ID_ENTROPY ? "rnd" : "other";
}

static bool map_caps(struct vdev *d)
{
	struct pci_func *f = d->pci;
	if (!(pci_cfg_read16(f, 0x06) & 0x10))	/* no capability list */
		return false;
	u8 p = pci_cfg_read8(f, 0x34) & 0xfc;
	for (int guard = 0; p && guard < 48; guard++) {
		u8 id = pci_cfg_read8(f, p), next = pci_cfg_read8(f, p + 1) & 0xfc;
		if (id == 0x09) {
			u8 type = pci_cfg_read8(f, p + 3), bar = pci_cfg_read8(f, p + 4);
			u32 off = pci_cfg_read32(f, p + 8);
			if (bar < 6 && !f->bar_io[bar] && f->bar[bar] && f->bar[bar] + off < (4UL << 30)) {
				volatile u8 *a = (volatile u8 *)(f->bar[bar] + off);
				switch (type) {
				case 1: if (!d->common) d->common = a; break;
				case 2:
					if (!d->notify) {
						d->notify = a;
						d->notify_mult = pci_cfg_read32(f, p + 16);
					}
					break;
				case 3: if (!d->isr) d->isr = a; break;
				case 4: if (!d->devcfg) d->devcfg = a; break;
				}
			}
		}
		p = next;
	}
	return d->common && d->notify && d->isr;
}

int virtio_probe(void)
{
	if (nvdevs >= 0)
		return nvdevs;
	nvdevs = 0;
	pci_scan();
	for (int i = 0; i < pci_nfuncs && nvdevs < VDEV_MAX; i++) {
		struct pci_func *f = &pci_funcs[i];
		if (f->vendor != VIRTIO_VENDOR || f->device < 0x1000 || f->device > 0x107f)
			continue;
		struct vdev *d = &vdevs[nvdevs];
		memset(d, 0, sizeof(*d));
		d->pci = f;
		d->type = f->device >= 0x1040 ? f->device - 0x1040 : pci_cfg_read16(f, 0x2e);
		if (!map_caps(d)) {
			printf("virtio: %02x:%02x.%x (%04x): no usable modern capabilities\n",
			       f->bus, f->dev, f->fn, f->device);
			continue;
		}
		/* Memory decoding on (the VMM normally leaves it on). */
		u16 cmd = pci_cfg_read16(f, 0x04);
		if ((cmd & 0x6) != 0x6)
			pci_cfg_write16(f, 0x04, cmd | 0x6);
		d->mem = vq_pages[nvdevs];
		nvdevs++;
	}
	return nvdevs;
}

struct vdev *virtio_find(u16 type, int nth)
{
	virtio_probe();
	for (int i = 0; i < nvdevs; i++)
		if (vdevs[i].type == type && nth-- == 0)
			return &vdevs[i];
	return NULL;
}

u8 virtio_status(struct vdev *d)
{
	return vc_r8(d, VC_STATUS);
}

void virtio_reset(struct vdev *d)
{
	vc_w8(d, VC_STATUS, 0);
	for (int i = 0; i < 1000 && vc_r8(d, VC_STATUS); i++)
		cpu_relax();
	d->ready = false;
}

u64 virtio_begin(struct vdev *d)
{
	vc_w8(d, VC_STATUS, VS_ACK);
	vc_w8(d, VC_STATUS, VS_ACK | VS_DRIVER);
	vc_w32(d, VC_DFSELECT, 0);
	u64 offered = vc_r32(d, VC_DF);
	vc_w32(d, VC_DFSELECT, 1);
	offered |= (u64)vc_r32(d, VC_DF) << 32;
	d->offered = offered;
	return offered;
}

int virtio_set_features(struct vdev *d)
{
	vc_w32(d, VC_GFSELECT, 0);
	vc_w32(d, VC_GF, (u32)d->features);
	vc_w32(d, VC_GFSELECT, 1);
	vc_w32(d, VC_GF, (u32)(d->features >> 32));
	vc_w8(d, VC_STATUS, VS_ACK | VS_DRIVER | VS_FEATURES_OK);
	return (vc_r8(d, VC_STATUS) & VS_FEATURES_OK) ? 0 : -1;
}

int gvq_setup(struct vdev *d, struct gvq *q, u16 qidx, u16 want, u8 *page)
{
	vc_w16(d, VC_QSELECT, qidx);
	u16 max = vc_r16(d, VC_QSIZE);
	if (max == 0)
		return -1;
	if (want > GVQ_MAX)
		want = GVQ_MAX;
	q->idx = qidx;
	q->size = max < want ? max : want;	/* both powers of two */
	memset(page, 0, 4096);
	q->desc = (volatile struct vring_desc *)page;
	q->avail = (volatile u16 *)(page + 2048);
	q->used = (volatile u16 *)(page + 2560);
	q->avail_idx = q->used_idx = 0;
	vc_w16(d, VC_QSIZE, q->size);
	u64 a[3] = { (u64)q->desc, (u64)q->avail, (u64)q->used };
	for (int i = 0; i < 3; i++) {
		vc_w32(d, VC_QDESC + 8 * i, (u32)a[i]);
		vc_w32(d, VC_QDESC + 8 * i + 4, (u32)(a[i] >> 32));
	}
	q->notify = (volatile u16 *)(d->notify + (u64)vc_r16(d, VC_QNOFF) * d->notify_mult);
	vc_w16(d, VC_QENABLE, 1);
	return vc_r16(d, VC_QENABLE) == 1 ? 0 : -2;
}

void gvq_put(struct gvq *q, u16 head)
{
	q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
	barrier();		/* x86: the ring entry is visible before the index */
	q->avail_idx++;
	q->avail[1] = q->avail_idx;
	barrier();
}

int virtio_init(struct vdev *d, u64 want)
{
	struct pci_func *f = d->pci;
	virtio_reset(d);
	if (vc_r8(d, VC_STATUS)) {
		printf("virtio-%s %02x:%02x.%x: reset did not complete\n", vtype_name(d->type), f->bus, f->dev, f->fn);
		return -1;
	}
	u64 offered = virtio_begin(d);
	if (!(offered & VF_VERSION_1)) {
		printf("virtio-%s: VERSION_1 not offered (0x%lx)\n", vtype_name(d->type), offered);
		vc_w8(d, VC_STATUS, VS_FAILED);
		return -2;
	}
	d->features = offered & (want | VF_VERSION_1);
	if (virtio_set_features(d)) {
		printf("virtio-%s: features 0x%lx refused\n", vtype_name(d->type), d->features);
		vc_w8(d, VC_STATUS, VS_FAILED);
		return -3;
	}

	struct gvq q;
	int r = gvq_setup(d, &q, 0, VQ_SIZE, d->mem);
	if (r == -1) {
		printf("virtio-%s: queue 0 not available\n", vtype_name(d->type));
		return -4;
	}
	d->qsize = q.size;
	d->desc = q.desc;
	d->avail = q.avail;
	d->used = q.used;
	d->qnotify = q.notify;
	d->avail_idx = d->used_idx = 0;
	if (r) {
		printf("virtio-%s: queue 0 not enabled (status 0x%x)\n", vtype_name(d->type), virtio_status(d));
		return -5;
	}
	vc_w8(d, VC_STATUS, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
	d->ready = true;
	return 0;
}

u16 virtio_used_idx(struct vdev *d)
{
	return READ_ONCE(d->used[1]);
}

static void publish(struct vdev *d, u16 head)
{
	d->avail[2 + (d->avail_idx & (d->qsize - 1))] = head;
	barrier();		/* x86: stores stay in order; UC MMIO after WB stores too */
	d->avail_idx++;
	d->avail[1] = d->avail_idx;
	barrier();
	*d->qnotify = 0;	/* queue index 0 */
}

void virtio_submit_raw(struct vdev *d, const struct vring_desc *descs, int n, u16 head)
{
	for (int i = 0; i < n && i < d->qsize; i++)
		d->desc[i] = descs[i];
	publish(d, head);
}

bool virtio_wait_status(struct vdev *d, u8 bit, u64 timeout_ms)
{
	u64 end = rdtsc() + timeout_ms * tsc_khz();
	while (!(virtio_status(d) & bit))
		if ((s64)(rdtsc() - end) > 0)
			return false;
	return true;
}

s64 virtio_submit(struct vdev *d, const struct vring_desc *chain, int n, u64 timeout_ms)
{
	if (!d->ready || n > d->qsize)
		return -1;
	for (int i = 0; i < n; i++) {
		d->desc[i] = chain[i];
		d->desc[i].flags = (chain[i].flags & ~VRING_DESC_F_NEXT) | (i + 1 < n ? VRING_DESC_F_NEXT : 0);
		d->desc[i].next = i + 1 < n ? i + 1 : 0;
	}
	publish(d, 0);
	u64 end = rdtsc() + timeout_ms * tsc_khz();
	while (virtio_used_idx(d) == d->used_idx) {
		if ((s64)(rdtsc() - end) > 0 || (virtio_status(d) & VS_NEEDS_RESET))
			return -1;
		cpu_relax();
	}
	barrier();
	volatile u32 *elem = (volatile u32 *)&d->used[2 + 4 * (d->used_idx & (d->qsize - 1))];
	u32 id = elem[0], len = elem[1];
	d->used_idx++;
	(void)*d->isr;		/* acknowledge (deasserts INTx) */
	if (id != 0)
		return -1;
	return len;
}
