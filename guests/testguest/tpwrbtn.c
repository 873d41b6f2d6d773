/*
 * test=pwrbtn: the guest side of bhyve's SIGTERM: it enables the ACPI
 * fixed power button (PM1 PWRBTN_EN), takes the SCI (ISA IRQ 9, IOAPIC
 * pin 9), and powers off (S5) when the status says the button was
 * pressed, as an ACPI OS does.  tests/test_cli.sh sends the SIGTERM.
 */
#include "kernel.h"
#include "tests.h"

#define PM1_STS 0x400   /* hyve's PM1a event block (the FADT says so) */
#define PM1_EN 0x402    /* word accesses only: a byte at 0x402 is the debug console */
#define PWRBTN 0x0100

static volatile u32 sci_count;
static volatile u16 sci_status;

static void sci_irq(struct trapframe *tf)
{
	(void)tf;
	u16 sts = inw(PM1_STS);
	sci_status |= sts;
	outw(PM1_STS, sts);   /* write one to clear: the SCI line drops */
	sci_count++;
	lapic_eoi();
}

static void t_pwrbtn(void)
{
	set_irq_handler(VEC_SCI, sci_irq);
	ioapic_route(9, VEC_SCI, lapic_id());
	outw(PM1_STS, PWRBTN);   /* a stale press does not count */
	outw(PM1_EN, PWRBTN);
	printf("pwrbtn: armed, waiting for the power button\n");
	sti();
	while (!(sci_status & PWRBTN))
		hlt();
	cli();
	printf("pwrbtn: power button pressed (%u SCI), powering off\n", sci_count);
	poweroff();
}
GUEST_TEST(pwrbtn, t_pwrbtn);
