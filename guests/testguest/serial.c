/*
 * COM1 16550A.  Output is polled (usable from CPL3 too, given IOPL=3);
 * input arrives by IRQ4 through the IOAPIC into a ring buffer so the shell
 * can sleep in hlt instead of busy-polling at CPL0 (emulated, so slow).
 */
#include "kernel.h"

#define THR 0
#define RBR 0
#define IER 1
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5

void serial_init(void)
{
	outb(COM1 + IER, 0x00);
	outb(COM1 + LCR, 0x80);	/* DLAB */
	outb(COM1 + 0, 0x01);	/* 115200 */
	outb(COM1 + 1, 0x00);
	outb(COM1 + LCR, 0x03);	/* 8n1 */
	/* FCR is left alone on purpose: changing it resets the receive FIFO,
	 * which drops keystrokes typed before the guest came up (and QEMU then
	 * stops feeding the UART until RBR is read). */
	outb(COM1 + MCR, 0x0b);	/* DTR RTS OUT2 (OUT2 gates the IRQ on PCs) */
}

static void raw_putc(char c)
{
	/* Bounded: a VMM UART is normally always ready; never hang on it. */
	for (int i = 0; i < 100000 && !(inb(COM1 + LSR) & 0x20); i++)
		;
	outb(COM1 + THR, (u8)c);
}

void serial_putc(char c)
{
	if (c == '\n')
		raw_putc('\r');
	raw_putc(c);
}

static volatile u8 rxbuf[256];
static volatile u32 rx_head, rx_tail;
volatile u64 com1_irqs;

void serial_rx_isr(void)
{
	int n = 0;
	while ((inb(COM1 + LSR) & 0x01) && n++ < 64) {
		u8 ch = inb(COM1 + RBR);
		if (rx_head - rx_tail < sizeof(rxbuf))
			rxbuf[rx_head++ % sizeof(rxbuf)] = ch;
	}
}

int serial_getc(void)
{
	if (rx_tail == rx_head)
		return -1;
	return rxbuf[rx_tail++ % sizeof(rxbuf)];
}

static void com1_irq(struct trapframe *tf)
{
	(void)tf;
	com1_irqs++;
	serial_rx_isr();
	lapic_eoi();
}

void serial_enable_rx_irq(void)
{
	set_irq_handler(VEC_COM1, com1_irq);
	ioapic_route(4, VEC_COM1, lapic_id());
	outb(COM1 + IER, 0x01);	/* received-data-available */
	serial_rx_isr();	/* drain anything already pending */
}

/* test=serial: IRQ4 -> IOAPIC pin 4 without needing input, through the
 * transmitter-holding-register-empty interrupt. */
static volatile u8 thri_iir;

static void com1_thri_irq(struct trapframe *tf)
{
	(void)tf;
	u8 iir = inb(COM1 + 2);
	if ((iir & 0x0f) == 0x02)
		thri_iir = iir;
	outb(COM1 + IER, 0);	/* one is enough */
	com1_irqs++;
	lapic_eoi();
}

int serial_irq_selftest(u64 timeout_ms)
{
	com1_irqs = 0;
	thri_iir = 0;
	set_irq_handler(VEC_COM1, com1_thri_irq);
	ioapic_route(4, VEC_COM1, lapic_id());
	outb(COM1 + IER, 0x02);	/* THRE interrupt: fires at once, THR is empty */
	u64 end = rdtsc() + timeout_ms * tsc_khz();
	sti();
	while (!com1_irqs && (s64)(rdtsc() - end) < 0)
		cpu_relax();
	cli();
	outb(COM1 + IER, 0);
	ioapic_mask(4);
	return com1_irqs ? (int)(thri_iir ? 1 : 2) : 0;
}
