/*
 * Queue kicks through KVM ioeventfds.
 *
 * Without them every "queue available" notification is a guest write that
 * exits KVM_RUN to hyve's MMIO/PIO handler on the vCPU thread, which waits
 * while the device model runs.  With them KVM signals an eventfd and lets
 * the vCPU go on at once; the device model runs on the main thread (mevent)
 * when the eventfd becomes readable, so the guest and the device overlap.
 *
 * One eventfd per queue, bound to both places a driver may kick it:
 *   - modern: BAR 4 + VI_NOTIFY_OFF + VI_NOTIFY_MULT * q, any write size
 *     (each queue has its own address, so no data match is needed);
 *   - legacy: I/O BAR 0 + 16, a 2-byte write of the queue index.
 * The bindings follow the BARs: pci_emul calls vi_pci_baraddr whenever a
 * BAR starts or stops being decoded (the guest moving it, disabling
 * decode in the command register, a checkpoint restore placing it).
 *
 * Kicks that arrive while the device is paused for a checkpoint are
 * dropped: vi_pci_resume looks at every queue for buffers the device has
 * not taken, which covers them.  virtio.ioeventfd=false keeps kicks on
 * the exit path (for comparison, or hosts where binding fails).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/control.h"
#include "../core/log.h"
#include "../core/mevent.h"
#include "../vmm/vmm.h"
#include "pci_emul.h"
#include "virtio.h"

/* The legacy queue-notify register (virtio 1.2, 4.1.4.8). */
#define VI_LEGACY_NOTIFY 16

static const struct config_key virtio_keys[] = {
	{ "virtio.ioeventfd", CFG_BOOL, "virtio queue kicks through KVM ioeventfds, not exits (default true)", NULL },
	{ NULL, 0, NULL, NULL },
};

/* Guest kicks counted by the eventfds (several may fold into one wakeup). */
static atomic_ullong stat_kicks;

static void kick_stats(struct control_conn *c)
{
	control_reply(c, "virtio_kicks_ioeventfd %llu", (unsigned long long)atomic_load(&stat_kicks));
}

static void __attribute__((constructor)) virtio_keys_register(void)
{
	config_register_keys(virtio_keys);
	control_register_stats(kick_stats);
}

static void vi_kick_event(int fd, void *arg)
{
	struct vqueue_info *vq = arg;
	struct virtio_softc *vs = vq->vq_vs;
	uint64_t n;
	if (read(fd, &n, sizeof(n)) == sizeof(n)) {
		atomic_fetch_add_explicit(&stat_kicks, n, memory_order_relaxed);
		vi_queue_notify(vs, vq->vq_num);   /* ignored while paused */
	}
}

/* vq_kickfd is -1 from vi_softc_linkup: queues keep exiting unless set up here. */
int vi_ioeventfd_setup(struct virtio_softc *vs)
{
	if (!vs->vs_pi || !get_config_bool_default("virtio.ioeventfd", true) ||
	    !vm_host_info(vs->vs_ctx)->has_ioeventfd)
		return 0;
	for (int i = 0; i < vs->vs_nvq; i++) {
		struct vqueue_info *vq = &vs->vs_queues[i];
		vq->vq_kickfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vq->vq_kickfd < 0 || !mevent_add(vq->vq_kickfd, EVF_READ, vi_kick_event, vq)) {
			log_err("%s: queue %d: cannot set up its kick eventfd: %s", vs->vs_name, i, strerror(errno));
			return -1;
		}
	}
	vs->vs_ioeventfd = true;
	log_debug("%s: queue kicks through ioeventfds", vs->vs_name);
	return 0;
}

void vi_pci_baraddr(struct pci_devinst *pi, int baridx, bool decoded, uint64_t addr)
{
	struct virtio_softc *vs = pi->pi_arg;
	if (!vs->vs_ioeventfd || (baridx != VI_MODERN_BAR && !(baridx == VI_LEGACY_BAR && vs->vs_legacy)))
		return;
	for (int q = 0; q < vs->vs_nvq; q++) {
		struct vm_ioeventfd io = { .fd = vs->vs_queues[q].vq_kickfd };
		if (baridx == VI_MODERN_BAR) {
			io.addr = addr + VI_NOTIFY_OFF + (uint64_t)q * VI_NOTIFY_MULT;
		} else {
			io.addr = addr + VI_LEGACY_NOTIFY;
			io.len = 2;
			io.pio = true;
			io.match = true;
			io.datamatch = (uint64_t)q;
		}
		/*
		 * Not bound (KVM refused, e.g. out of io-bus slots): the write
		 * still exits to vi_pci_write, which kicks the queue the slow way.
		 */
		if (vm_ioeventfd(vs->vs_ctx, &io, decoded) && decoded)
			log_warn("%s: queue %d: no ioeventfd at 0x%llx (%s); kicks will exit", vs->vs_name, q,
			         (unsigned long long)io.addr, strerror(errno));
	}
}
