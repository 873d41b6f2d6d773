/*
 * test=kicks [n=N]: write the entropy device's queue-0 notify register N
 * times (default 2000) with nothing new in the ring, then check the device
 * still answers requests, print "kicks: N written", and wait with
 * interrupts on so that the host can read hyve's exit counters
 * (hyvectl --get-stats) and end the VM.  With ioeventfds the writes never
 * reach hyve as MMIO exits; without, each one does.
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
	printf("kicks: %lu written\n", n);
	for (;;)
		sti_hlt_cli();
}
GUEST_TEST(kicks, t_kicks);
