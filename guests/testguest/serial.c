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
	outb(COM1 + FCR, 0x07);	/* enable + clear FIFOs */
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
