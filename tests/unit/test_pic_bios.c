/*
 * Unit test for boot/pic.c: the 8259 state a direct kernel boot starts
 * with, set through the vmm layer's irqchip calls (faked here with KVM's
 * state after KVM_CREATE_IRQCHIP: vector base 0, all lines unmasked).
 *
 * test-sources: boot/pic.c
 */
#include <stdio.h>
#include <string.h>
#include <linux/kvm.h>

#include "../../boot/boot.h"
#include "../../vmm/vmm.h"

static struct kvm_irqchip chips[2];
static int sets;

int vm_get_irqchip(struct vmctx *ctx, struct kvm_irqchip *c)
{
	(void)ctx;
	*c = chips[c->chip_id];
	return 0;
}

int vm_set_irqchip(struct vmctx *ctx, const struct kvm_irqchip *c)
{
	(void)ctx;
	chips[c->chip_id] = *c;
	sets++;
	return 0;
}

static int failed;
#define CHECK(c, msg)                                                   \
	do {                                                            \
		int ok_ = (c);                                          \
		printf("%s - %s\n", ok_ ? "ok" : "FAIL", msg);          \
		failed += !ok_;                                         \
	} while (0)

int main(void)
{
	/* What KVM_CREATE_IRQCHIP leaves (kvm_create_pic). */
	for (int i = 0; i < 2; i++) {
		memset(&chips[i], 0, sizeof(chips[i]));
		chips[i].chip_id = (uint32_t)i;
		chips[i].chip.pic.elcr_mask = i ? 0xde : 0xf8;
		chips[i].chip.pic.elcr = i ? 0x0c : 0x00;   /* as if IRQ 10/11 were level (PCI) */
		chips[i].chip.pic.last_irr = i ? 0 : 0x01;  /* the PIT line is high */
	}
	CHECK(boot_setup_pics(NULL) == 0 && sets == 2, "both PICs written through the irqchip calls");
	const struct kvm_pic_state *m = &chips[KVM_IRQCHIP_PIC_MASTER].chip.pic;
	const struct kvm_pic_state *s = &chips[KVM_IRQCHIP_PIC_SLAVE].chip.pic;
	CHECK(m->irq_base == 0x08 && s->irq_base == 0x70, "vector bases 0x08 (master) and 0x70 (slave)");
	CHECK(m->imr == 0xfb && s->imr == 0xff, "device lines masked, master IRQ2 (cascade) open");
	CHECK(m->init_state == 0 && s->init_state == 0 && m->init4 && s->init4,
	      "initialisation complete, 8086 mode (ICW4)");
	CHECK(!m->auto_eoi && !s->auto_eoi && !m->special_fully_nested_mode && m->isr == 0 && s->isr == 0,
	      "normal EOI, nothing in service");
	CHECK(m->elcr_mask == 0xf8 && s->elcr_mask == 0xde && s->elcr == 0x0c, "ELCR and its mask kept");
	CHECK(m->last_irr == 0x01, "line levels kept (edge detection)");
	return failed ? 1 : 0;
}
