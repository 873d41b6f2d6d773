/* Leaving the VM: debug-exit, ACPI S5, reset. */
#include "kernel.h"

const char *current_test;

/* isa-debug-exit at 0xf4: the VMM exits with status (value << 1) | 1. */
noreturn void debug_exit(u32 value)
{
	if (value > 0xff)
		outl(0xf4, value);
	else
		outb(0xf4, (u8)value);
	/* No debug-exit device: power off instead. */
	poweroff();
}

noreturn void poweroff(void)
{
	outw(0x404, (5 << 10) | (1 << 13));	/* hyve/bhyve PM1a_CNT: SLP_TYP=5, SLP_EN */
	outw(0x604, (0 << 10) | (1 << 13));	/* QEMU pc (PIIX4 PM): SLP_TYP=0, SLP_EN */
	/* QEMU acts on the S5 request asynchronously: give it time before
	 * falling back, or the debug-exit below would win the race. */
	udelay(500000);
	outb(0xf4, 0);			/* last resort: debug-exit */
	for (;;) {
		cli();
		hlt();
	}
}

noreturn void reboot(void)
{
	outb(0x64, 0xfe);		/* 8042 pulse reset line */
	outb(0xcf9, 0x06);		/* PCI reset control, if present */
	idt_load_empty();		/* last resort: triple fault */
	__asm__ __volatile__("ud2");
	for (;;)
		hlt();
}

noreturn void test_pass(const char *name)
{
	printf("PASS %s\n", name);
	debug_exit(0);
}

noreturn void test_fail(const char *name, const char *fmt, ...)
{
	char buf[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("FAIL %s: %s\n", name, buf);
	debug_exit(2);
}
