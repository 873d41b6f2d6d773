/*
 * test=pic: the 8259 PICs as hyve leaves them for a kernel it boots
 * directly, which is how a PC BIOS leaves them (boot/pic.c): device lines
 * masked, the cascade (master IRQ2) open, the master at vectors
 * 0x08-0x0f and the slave at 0x70-0x77.  kmain skips its own PIC set-up
 * for this test; the test unmasks IRQ0 (PIT) and IRQ8 (RTC periodic
 * interrupt) and checks that each arrives through LINT0 (ExtINT) at its
 * BIOS vector.  Under QEMU + SeaBIOS the masks differ (SeaBIOS unmasks
 * the lines it uses) and pic_masks=any accepts that.
 */
#include "kernel.h"
#include "tests.h"

u16 boot_pic_imr;

/* Vector 8 is #DF in the IDT, whose stub expects an error code: IRQ0 at
 * vector 8 gets its own stub, which hands it on as vector 0x48. */
#define VEC_IRQ0_SHIM 0x48
asm(".text\n"
    ".globl pic_irq0_stub\n"
    "pic_irq0_stub:\n"
    "	pushq $0\n"
    "	pushq $0x48\n"
    "	jmp trap_common\n");
extern char pic_irq0_stub[];
extern u64 idt[];

static volatile u64 irq0_count, irq8_count;

static void on_irq0(struct trapframe *tf)
{
	(void)tf;
	irq0_count++;
	outb(0x20, 0x20);   /* EOI to the master */
}

static void on_irq8(struct trapframe *tf)
{
	(void)tf;
	irq8_count++;
	outb(0x70, 0x0c);   /* reading RTC register C acknowledges it */
	(void)inb(0x71);
	outb(0xa0, 0x20);   /* EOI to the slave, then the master */
	outb(0x20, 0x20);
}

static void set_gate(int v, u64 off)
{
	idt[2 * v] = (off & 0xffff) | ((u64)KCODE64 << 16) | (0x8eUL << 40) | ((off >> 16) & 0xffff) << 48;
	idt[2 * v + 1] = off >> 32;
}

/* LINT0 as ExtINT (what KVM resets the BSP's to) or masked. */
static void lvt0(bool extint)
{
	u32 v = extint ? 0x700 : 0x10700;
	if (rdmsr(0x1b) & (1 << 10))
		wrmsr(0x835, v);
	else
		mmio_write32(LAPIC_BASE + 0x350, v);
}

static void wait_irqs(volatile u64 *count, u64 n, u64 ms)
{
	u64 end = rdtsc() + ms * tsc_khz();
	sti();
	while (*count < n && (s64)(rdtsc() - end) < 0)
		cpu_relax();
	cli();
}


static void t_pic(void)
{
	u8 m = (u8)boot_pic_imr, s = (u8)(boot_pic_imr >> 8);
	const char *any = cmdline_get("pic_masks");
	printf("pic: masks at entry: master 0x%02x, slave 0x%02x\n", m, s);
	if ((m != 0xfb || s != 0xff) && !(any && !strncmp(any, "any", 3)))
		test_fail("pic", "masks at entry 0x%02x/0x%02x, expected 0xfb/0xff", m, s);
	outb(0x21, 0xfb);
	outb(0xa1, 0xff);
	(void)tsc_khz();   /* calibrate before the PIT is reprogrammed */
	lvt0(true);

	/* IRQ0: the PIT through the master, at vector 0x08. */
	u64 saved[2] = { idt[16], idt[17] };
	set_gate(8, (u64)pic_irq0_stub);
	set_irq_handler(VEC_IRQ0_SHIM, on_irq0);
	pit_start_periodic(100);
	outb(0x21, 0xfa);
	wait_irqs(&irq0_count, 3, 1000);
	outb(0x21, 0xfb);
	pit_stop();
	idt[16] = saved[0];
	idt[17] = saved[1];

	/* IRQ8: the RTC's periodic interrupt through the slave and the cascade, at vector 0x70. */
	set_irq_handler(0x70, on_irq8);
	u8 a = cmos_read(0x0a), b = cmos_read(0x0b);
	cmos_write(0x0a, (u8)((a & 0xf0) | 0x06));   /* 1024 Hz */
	cmos_write(0x0b, (u8)(b | 0x40));            /* PIE */
	(void)cmos_read(0x0c);
	outb(0xa1, 0xfe);
	wait_irqs(&irq8_count, 3, 1000);
	outb(0xa1, 0xff);
	cmos_write(0x0b, (u8)(b & ~0x40));
	cmos_write(0x0a, a);
	lvt0(false);
	printf("pic: %lu timer interrupts at vector 0x08, %lu RTC interrupts at vector 0x70\n", irq0_count, irq8_count);
	if (!irq0_count)
		test_fail("pic", "no IRQ0 at vector 0x08 within 1 s");
	if (!irq8_count)
		test_fail("pic", "no IRQ8 at vector 0x70 within 1 s");
	pic_disable();
	test_pass("pic");
}
GUEST_TEST(pic, t_pic);
