/*
 * test=fbuf: draws on hyve's (bhyve's) framebuffer device (PCI
 * 0xfb5d:0x40fb): reads the mode from BAR0, fills BAR1 with four
 * quadrants (red, green / blue, white), says so, and waits with
 * interrupts on (the VM stays up) for tests/test_fbuf.sh to take a
 * screenshot with a VNC client.
 */
#include "kernel.h"
#include "tests.h"
#include "virtio.h"

static void t_fbuf(void)
{
	pci_scan();
	const struct pci_func *f = NULL;
	for (int i = 0; i < pci_nfuncs; i++)
		if (pci_funcs[i].vendor == 0xfb5d && pci_funcs[i].device == 0x40fb)
			f = &pci_funcs[i];
	if (!f || !f->bar[0] || !f->bar[1])
		test_fail("fbuf", "no framebuffer device with both BARs");
	volatile u8 *regs = (volatile u8 *)f->bar[0];
	u32 fbsize = *(volatile u32 *)regs;
	u32 w = *(volatile u16 *)(regs + 4), h = *(volatile u16 *)(regs + 6);
	u32 scan = *(volatile u16 *)(regs + 12);
	if (scan < w)
		scan = w;
	if (!w || !h || (u64)scan * h * 4 > fbsize)
		test_fail("fbuf", "mode %ux%u (scan %u) does not fit %u bytes", w, h, scan, fbsize);
	volatile u32 *fb = (volatile u32 *)f->bar[1];
	for (u32 y = 0; y < h; y++)
		for (u32 x = 0; x < w; x++) {
			bool right = x >= w / 2, bottom = y >= h / 2;
			fb[y * scan + x] = !right && !bottom ? 0xff0000 : right && !bottom ? 0x00ff00 : !right ? 0x0000ff : 0xffffff;
		}
	printf("fbuf: pattern drawn %ux%u at 0x%lx\n", w, h, f->bar[1]);
	for (;;) {
		sti();
		hlt();
	}
}
GUEST_TEST(fbuf, t_fbuf);
