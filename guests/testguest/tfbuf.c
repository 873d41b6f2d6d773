/*
 * test=fbuf: draws on the framebuffer: hyve's (bhyve's) device (PCI
 * 0xfb5d:0x40fb: the mode from BAR0, pixels in BAR1) or QEMU's interface
 * (1234:1111, hyve's fbuf variant=bochs or QEMU's bochs-display/-vga std:
 * an 800x600x32 mode set through the DISPI registers at BAR2 + 0x500,
 * pixels in BAR0).  Fills the screen with four quadrants (red, green /
 * blue, white), says so, and waits with interrupts on (the VM stays up)
 * for tests/test_fbuf.sh to take a screenshot with a VNC client.
 *
 * test=fbanim: the same screen, then whole frames of changing colour, as
 * fast as the guest can write them, for bench/vnc_bench.py to count how
 * many full-screen updates a VNC client gets.
 */
#include "kernel.h"
#include "tests.h"
#include "virtio.h"

struct screen {
	volatile u32 *fb;
	u32 w, h, scan;
};

static void dispi(volatile u16 *regs, int index, u16 v)
{
	regs[index] = v;
}

static void find_screen(const char *name, struct screen *s)
{
	pci_scan();
	for (int i = 0; i < pci_nfuncs; i++) {
		const struct pci_func *f = &pci_funcs[i];
		if (f->vendor == 0xfb5d && f->device == 0x40fb) {
			if (!f->bar[0] || !f->bar[1])
				test_fail(name, "bhyve framebuffer without both BARs");
			volatile u8 *regs = (volatile u8 *)f->bar[0];
			u32 fbsize = *(volatile u32 *)regs;
			s->w = *(volatile u16 *)(regs + 4);
			s->h = *(volatile u16 *)(regs + 6);
			s->scan = *(volatile u16 *)(regs + 12);
			if (s->scan < s->w)
				s->scan = s->w;
			if (!s->w || !s->h || (u64)s->scan * s->h * 4 > fbsize)
				test_fail(name, "mode %ux%u (scan %u) does not fit %u bytes", s->w, s->h, s->scan, fbsize);
			s->fb = (volatile u32 *)f->bar[1];
			return;
		}
		if (f->vendor == 0x1234 && f->device == 0x1111) {
			if (!f->bar[0] || !f->bar[2] || f->bar_io[2])
				test_fail(name, "QEMU display without its framebuffer and MMIO BARs");
			volatile u16 *regs = (volatile u16 *)(f->bar[2] + 0x500);
			if ((regs[0] & 0xfff0) != 0xb0c0)
				test_fail(name, "DISPI id %x", regs[0]);
			dispi(regs, 4, 0);            /* ENABLE: off while the mode is set */
			dispi(regs, 3, 32);           /* BPP */
			dispi(regs, 1, 800);          /* XRES */
			dispi(regs, 6, 800);          /* VIRT_WIDTH */
			dispi(regs, 2, 600);          /* YRES */
			dispi(regs, 8, 0);            /* X_OFFSET */
			dispi(regs, 9, 0);            /* Y_OFFSET */
			dispi(regs, 4, 0x41);         /* ENABLE | LFB */
			s->w = regs[1];
			s->h = regs[2];
			s->scan = s->w;
			s->fb = (volatile u32 *)f->bar[0];
			return;
		}
	}
	test_fail(name, "no framebuffer device");
}

static void quadrants(const struct screen *s)
{
	for (u32 y = 0; y < s->h; y++)
		for (u32 x = 0; x < s->w; x++) {
			bool right = x >= s->w / 2, bottom = y >= s->h / 2;
			s->fb[y * s->scan + x] = !right && !bottom ? 0xff0000 : right && !bottom ? 0x00ff00 : !right ? 0x0000ff : 0xffffff;
		}
}

static void t_fbuf(void)
{
	struct screen s;
	find_screen("fbuf", &s);
	quadrants(&s);
	printf("fbuf: pattern drawn %ux%u at 0x%lx\n", s.w, s.h, (unsigned long)s.fb);
	for (;;) {
		sti();
		hlt();
	}
}
GUEST_TEST(fbuf, t_fbuf);

/* The frames are drawn at CPL3, which an emulating host (PVM) runs
 * natively: at CPL0 it emulates every store (~10 s a frame there). */
USER_TEXT static u64 u_anim(u64 arg)
{
	const struct screen *s = (const struct screen *)arg;
	for (u32 n = 1;; n++) {
		u32 c = (n * 0x2f1b3d) & 0xffffff;   /* every frame another colour, all over the screen */
		for (u32 y = 0; y < s->h; y++)
			for (u32 x = 0; x < s->w; x++)
				s->fb[y * s->scan + x] = c;
	}
	return 0;
}

static void t_fbanim(void)
{
	static struct screen s;
	find_screen("fbanim", &s);
	quadrants(&s);
	printf("fbanim: drawing frames %ux%u\n", s.w, s.h);
	user_run(u_anim, (u64)&s, 0x200);   /* interrupts on: the VM keeps its timers */
	test_fail("fbanim", "the drawing loop ended (exception %lu at rip %lx)", user_fault_vec, user_fault_rip);
}
GUEST_TEST(fbanim, t_fbanim);
