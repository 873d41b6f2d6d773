/* virtio-rnd (entropy device, virtio 1.2 5.4) and test=rnd. */
#include "virtio.h"

static u8 rbuf[2][64] __attribute__((aligned(64)));

/* Fill buf (device-writable) from device d: bytes returned or -1. */
static s64 vrnd_get(struct vdev *d, void *buf, u32 len)
{
	struct vring_desc c = { (u64)buf, len, VRING_DESC_F_WRITE, 0 };
	return virtio_submit(d, &c, 1, 5000);
}

/* Used by test=badring: the entropy device must still work. */
int vrnd_check(const char *name)
{
	struct vdev *d = virtio_find(VIRTIO_ID_ENTROPY, 0);
	if (!d)
		test_fail(name, "no virtio-rnd device");
	if (virtio_init(d, 0))
		test_fail(name, "virtio-rnd initialization failed");
	for (int i = 0; i < 2; i++) {
		memset(rbuf[i], 0, sizeof(rbuf[i]));
		s64 n = vrnd_get(d, rbuf[i], sizeof(rbuf[i]));
		if (n != (s64)sizeof(rbuf[i]))
			test_fail(name, "entropy request %d returned %ld bytes (status 0x%x)", i, n, virtio_status(d));
		bool nz = false;
		for (u32 k = 0; k < sizeof(rbuf[i]); k++)
			nz |= rbuf[i][k] != 0;
		if (!nz)
			test_fail(name, "entropy request %d: all zero", i);
	}
	if (!memcmp(rbuf[0], rbuf[1], sizeof(rbuf[0])))
		test_fail(name, "two entropy reads are identical");
	char hex[2][17];
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < 8; k++)
			snprintf(hex[i] + 2 * k, 3, "%02x", rbuf[i][k]);
	printf("%s: virtio-rnd %02x:%02x.%x: 2 x %u bytes, not zero, different (%s... %s...)\n", name,
	       d->pci->bus, d->pci->dev, d->pci->fn, (u32)sizeof(rbuf[0]), hex[0], hex[1]);
	virtio_reset(d);
	return 0;
}

void t_rnd(void)
{
	vrnd_check("rnd");
	test_pass("rnd");
}
