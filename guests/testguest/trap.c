/* IDT, exception/IRQ dispatch, per-CPU setup. */
#include "kernel.h"
#include <stdarg.h>

extern u8 trap_stubs[];
extern u64 idt[];

struct cpu cpus[MAX_CPUS];
u8 kstacks[MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(KSTACK_SIZE)));
static irq_handler_t irq_handlers[256];
extern const char *current_test;

static const char *const exc_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
	"#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

void idt_init(void)
{
	for (int v = 0; v < 256; v++) {
		u64 off = (u64)trap_stubs + 16 * v;
		/* DPL3 on #BP, #OF and 0x80 so CPL3 may try INT3/INTO/INT n. */
		u64 dpl = (v == 3 || v == 4 || v == VEC_INTN) ? 3 : 0;
		idt[2 * v] = (off & 0xffff) | ((u64)KCODE64 << 16) |
			     ((0x8eUL | dpl << 5) << 40) | ((off >> 16) & 0xffff) << 48;
		idt[2 * v + 1] = off >> 32;
	}
}

void set_irq_handler(int vec, irq_handler_t h)
{
	irq_handlers[vec] = h;
}

void cpu_init(struct cpu *c, u32 index)
{
	u64 base = (u64)&c->tss;
	int slot = 7 + 2 * index;

	c->index = index;
	c->expect_vec = -1;
	c->seen_vec = -1;
	*(struct cpu **)kstacks[index] = c;	/* found via RSP & ~(KSTACK_SIZE-1) */
	u64 limit = sizeof(struct tss) + sizeof(c->iobitmap) - 1;

	c->tss.iomap_base = sizeof(struct tss);	/* bitmap follows the TSS */
	c->iobitmap[8192] = 0xff;
	gdt[slot] = limit | (base & 0xffffff) << 16 |
		    0x89UL << 40 | ((base >> 24) & 0xff) << 56;
	gdt[slot + 1] = base >> 32;
	__asm__ __volatile__("ltr %w0" :: "r"(TSS_SEL(index)));
	idt_load();
}

void expect_trap(int vec, u64 resume)
{
	struct cpu *c = this_cpu();
	c->seen_vec = -1;
	c->expect_resume = resume;
	barrier();
	c->expect_vec = vec;
}

int trap_seen(void)
{
	struct cpu *c = this_cpu();
	c->expect_vec = -1;
	return c->seen_vec;
}

static noreturn void fatal_trap(struct trapframe *tf)
{
	u64 cr2;
	__asm__ __volatile__("mov %%cr2, %0" : "=r"(cr2));
	printf_nolock("\nFAIL %s: unexpected %s (vector %lu) err=%lx rip=%lx cs=%lx "
		      "rflags=%lx rsp=%lx cr2=%lx cpu=%u\n",
		      current_test ? current_test : "boot",
		      tf->vector < 32 && exc_names[tf->vector] ? exc_names[tf->vector] : "irq",
		      tf->vector, tf->err, tf->rip, tf->cs, tf->rflags, tf->rsp, cr2,
		      this_cpu()->index);
	printf_nolock("  rax=%lx rbx=%lx rcx=%lx rdx=%lx rsi=%lx rdi=%lx\n",
		      tf->rax, tf->rbx, tf->rcx, tf->rdx, tf->rsi, tf->rdi);
	debug_exit(2);
}

void trap_dispatch(struct trapframe *tf)
{
	u64 vec = tf->vector;

	/* Hardware interrupts (and an NMI a test takes) first: the common, cheap path. */
	if ((vec >= 32 || vec == 2) && irq_handlers[vec]) {
		irq_handlers[vec](tf);
		return;
	}
	struct cpu *c = this_cpu();
	if (c->expect_vec == (int)vec) {	/* a fallback test's trap */
		c->seen_vec = (int)vec;
		c->seen_rip = tf->rip;
		c->seen_cs = tf->cs;
		c->expect_vec = -1;
		if (c->expect_resume)
			tf->rip = c->expect_resume;
		return;
	}
	if ((tf->cs & 3) == 3 && user_trap(tf))	/* request or fault from CPL3 */
		return;
	if (vec == VEC_SPURIOUS)
		return;
	if (vec >= 32) {
		/* Unknown hardware interrupt: acknowledge and carry on. */
		printf_nolock("warning: unexpected interrupt vector %lu\n", vec);
		lapic_eoi();
		return;
	}
	fatal_trap(tf);
}

noreturn void panic(const char *fmt, ...)
{
	char buf[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf_nolock("FAIL %s: panic: %s\n", current_test ? current_test : "boot", buf);
	debug_exit(2);
}
