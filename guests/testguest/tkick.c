/*
 * test=kicks [n=N]: write the entropy device's queue-0 notify register N
 * times (default 2000) with nothing new in the ring; then move the modern
 * BAR (4) by 1 MiB, as an OS reassigning resources would, and write the
 * notify register at its new address N more times.  After each batch the
 * device must still answer entropy requests.  Then print "kicks: 2N
 * written" and wait with interrupts on so that the host can read hyve's
 * exit counters (hyvectl --get-stats) and end the VM.  With ioeventfds the
 * writes never reach hyve as MMIO exits, also after the move (the
 * bindings follow the BAR); without, each one does.
 */
#include "kernel.h"
#include "tests.h"
#include "virtio.h"

int vrnd_check(const char *name);

static void t_kicks(void)
{
	u64 n = 2000;
	cmdline_get_u64("n", &n);
	struct vdev *d = virtio_find(VIRTIO_ID_ENTROPY, 0);
	if (!d)
		test_fail("kicks", "no virtio-rnd device");
	if (virtio_init(d, 0))
		test_fail("kicks", "virtio-rnd initialization failed");
	for (u64 i = 0; i < n; i++)
		*d->qnotify = 0;
	virtio_reset(d);
	vrnd_check("kicks");

	/* Move BAR 4 (64-bit, registers 0x20/0x24) with memory decode off. */
	const u64 delta = 1 << 20;
	struct pci_func *f = d->pci;
	u16 cmd = pci_cfg_read16(f, 0x04);
	u32 lo = pci_cfg_read32(f, 0x20);
	pci_cfg_write16(f, 0x04, cmd & ~2);
	pci_cfg_write32(f, 0x20, lo + (u32)delta);
	pci_cfg_write16(f, 0x04, cmd);
	if (pci_cfg_read32(f, 0x20) != lo + (u32)delta)
		test_fail("kicks", "BAR 4 did not move (0x%x)", pci_cfg_read32(f, 0x20));
	d->common += delta;
	d->isr += delta;
	d->devcfg += delta;
	d->notify += delta;
	f->bar[4] += delta;
	if (virtio_init(d, 0))
		test_fail("kicks", "virtio-rnd initialization failed after moving BAR 4");
	for (u64 i = 0; i < n; i++)
		*d->qnotify = 0;
	virtio_reset(d);
	vrnd_check("kicks");
	printf("kicks: BAR 4 moved to 0x%lx\n", f->bar[4]);
	printf("kicks: %lu written\n", 2 * n);
	for (;;)
		sti_hlt_cli();
}
GUEST_TEST(kicks, t_kicks);
