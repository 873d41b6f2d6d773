/*
 * test=probe: find out which CPL3 -> CPL0 transitions work on this host.
 * Each probe runs a tiny CPL3 function and reports what came back to the
 * kernel (an exception vector, an interrupt, or a plain return via ud2).
 * SYSCALL is only tried with probe=syscall (it is known to misbehave on the
 * PVM host and may take the VM down).
 */
#include "kernel.h"
#include "tests.h"

USER_TEXT static u64 p_ud2(u64 a) { (void)a; __asm__ __volatile__("xor %%eax,%%eax; ud2" ::: "rax"); return 0; }
USER_TEXT static u64 p_hlt(u64 a) { (void)a; __asm__ __volatile__("hlt"); return 0; }
USER_TEXT static u64 p_int3(u64 a) { (void)a; __asm__ __volatile__("int3"); return 0x33; }
USER_TEXT static u64 p_int80(u64 a) { (void)a; __asm__ __volatile__("int $0x80"); return 0x80; }
USER_TEXT static u64 p_int81(u64 a) { (void)a; __asm__ __volatile__("int $0x81"); return 0x81; }
USER_TEXT static u64 p_noncanon(u64 a) { (void)a; return *(volatile u64 *)0x8000000000000000UL; }
USER_TEXT static u64 p_unmapped(u64 a) { (void)a; return *(volatile u64 *)0x100000000UL; }
USER_TEXT static u64 p_cli(u64 a) { (void)a; __asm__ __volatile__("cli; sti"); return 0xc1; }
USER_TEXT static u64 p_inb(u64 a) { (void)a; return inb(0x3f8 + 5); }
USER_TEXT static u64 p_syscall(u64 a) { (void)a; __asm__ __volatile__("syscall" ::: "rcx", "r11", "memory"); return 0x5c; }
USER_TEXT static u64 p_ret(u64 a) { return a; }

/* SYSCALL lands here at CPL0 on the user stack: switch to the kernel stack
 * saved by user_enter (BSP only) and leave user mode with value 0x5ca11. */
__asm__(".text\n"
	"probe_syscall_entry:\n"
	"	movq cpus+8(%rip), %rsp\n"
	"	movq %rsp, %rdi\n"
	"	movl $0x5ca11, %esi\n"
	"	jmp user_return\n");
extern char probe_syscall_entry[];

struct tickwait { u64 deadline, want; };
USER_TEXT static u64 p_ticks(u64 arg)
{
	struct tickwait *w = (struct tickwait *)arg;
	u64 start = READ_ONCE(lapic_ticks);
	while (READ_ONCE(lapic_ticks) - start < w->want && (s64)(rdtsc() - w->deadline) < 0)
		;
	return READ_ONCE(lapic_ticks) - start;
}

static void probe(const char *name, user_fn_t fn, u64 arg, u64 rflags)
{
	u64 t0 = rdtsc();
	u64 r = user_run(fn, arg, rflags);
	u64 us = tsc_to_us(rdtsc() - t0);
	if (r == ~0UL)
		printf("probe: %-10s -> vector %lu (err 0x%lx) at rip 0x%lx, %lu us\n",
		       name, user_fault_vec, user_fault_err, user_fault_rip, us);
	else
		printf("probe: %-10s -> returned 0x%lx, %lu us\n", name, r, us);
}

void t_probe(void)
{
	const char *which = cmdline_get("probe");

	probe("ret", p_ret, 0x42, 0);
	probe("ud2", p_ud2, 0, 0);
	probe("hlt", p_hlt, 0, 0);
	probe("int3", p_int3, 0, 0);
	probe("int80", p_int80, 0, 0);
	probe("int81", p_int81, 0, 0);
	probe("cli-iopl3", p_cli, 0, 0);
	probe("cli-iopl0", p_cli, 0, 0x202);
	probe("inb-iopl3", p_inb, 0, 0);
	probe("inb-iopl0", p_inb, 0, 0x202);	/* allowed by the TSS I/O bitmap */
	probe("noncanon", p_noncanon, 0, 0);
	probe("unmapped", p_unmapped, 0, 0);

	start_lapic_ticks(1000);
	struct tickwait w = { rdtsc() + 1000 * tsc_khz(), 10 };
	probe("lapic-irq", p_ticks, (u64)&w, 0);
	lapic_timer_stop();

	/* Does hlt wake up on an interrupt at CPL0? */
	lapic_ticks = 0;
	u64 t0 = rdtsc();
	start_lapic_ticks(1000);
	printf("probe: hlt at CPL0 ...\n");
	for (int i = 0; i < 5; i++)
		sti_hlt_cli();
	lapic_timer_stop();
	printf("probe: 5 x sti;hlt woke with %lu lapic ticks in %lu us\n", lapic_ticks,
	       tsc_to_us(rdtsc() - t0));

	t0 = rdtsc();
	for (int i = 0; i < 100; i++)
		user_run(p_ret, 0, 0);
	printf("probe: CPL0->CPL3->CPL0 (iretq + ud2) %lu us\n", tsc_to_us(rdtsc() - t0) / 100);

	if (which && !strncmp(which, "syscall", 7)) {
		wrmsr(0xc0000080, rdmsr(0xc0000080) | 1);	/* EFER.SCE */
		wrmsr(0xc0000081, (0x20UL << 48) | ((u64)KCODE64 << 32));	/* STAR */
		wrmsr(0xc0000082, (u64)probe_syscall_entry);	/* LSTAR */
		wrmsr(0xc0000084, 0x700);	/* FMASK: IF TF DF */
		probe("syscall", p_syscall, 0, 0);
	}
	test_pass("probe");
}
