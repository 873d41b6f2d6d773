/*
 * The two 8259 PICs as a PC BIOS leaves them, for kernels hyve boots
 * directly (there is no firmware to program them).  KVM creates its PIC
 * model un-initialised: vector base 0 and every line unmasked, so a guest
 * that enables interrupts before reprogramming the PICs would take the
 * timer as vector 0 (#DE).  Multiboot and real-mode guests are entitled to
 * the BIOS state: master at vectors 0x08-0x0f, slave at 0x70-0x77,
 * cascaded on IRQ2, device lines masked until the guest unmasks them.
 * Linux and the test guest reinitialise the PICs themselves, so for them
 * this changes nothing.
 */
#include <string.h>
#include <linux/kvm.h>

#include "../vmm/vmm.h"
#include "boot.h"

void boot_pic_bios_state(struct kvm_pic_state *p, bool slave)
{
	/* Keep the line levels (edge detection) and the ELCR of the chip. */
	uint8_t last_irr = p->last_irr, irr = p->irr, elcr = p->elcr, elcr_mask = p->elcr_mask;
	memset(p, 0, sizeof(*p));
	p->last_irr = last_irr;
	p->irr = irr;
	p->elcr = elcr;
	p->elcr_mask = elcr_mask;
	p->irq_base = slave ? 0x70 : 0x08;
	/* Every device line masked.  The master's IRQ2 carries the slave and
	 * is left open, as SeaBIOS leaves it: unmasking a slave line on the
	 * slave is then enough, as on a PC. */
	p->imr = slave ? 0xff : 0xfb;
	p->init4 = 1;           /* initialised with ICW4: 8086 mode, normal EOI */
	p->init_state = 0;      /* initialisation sequence complete */
	p->read_reg_select = 0; /* OCW3 reads return IRR */
}

int boot_setup_pics(struct vmctx *ctx)
{
	for (int i = 0; i < 2; i++) {
		struct kvm_irqchip chip;
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = i == 0 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
		if (vm_get_irqchip(ctx, &chip))
			return -1;
		boot_pic_bios_state(&chip.chip.pic, i == 1);
		if (vm_set_irqchip(ctx, &chip))
			return -1;
	}
	return 0;
}
