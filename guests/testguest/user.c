/*
 * Running code at CPL3.  user_run() irets to `fn(arg)` on this CPU's user
 * stack with IOPL=3 (so the loop can use in/out directly) and IF=1 (timer
 * interrupts reach it).  It returns when the CPL3 code leaves through ud2
 * with rax=UREQ_EXIT (user_exit_stub does that when fn returns), or when
 * the CPL3 code takes any other exception (then ~0 is returned and
 * user_fault_* say what happened).
 */
#include "kernel.h"

u8 ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(4096)));

volatile u64 user_fault_vec, user_fault_rip, user_fault_err;

u64 user_run(user_fn_t fn, u64 arg, u64 rflags)
{
	struct cpu *c = this_cpu();
	u64 top = (u64)ustacks[c->index] + USTACK_SIZE - 8;

	*(u64 *)top = (u64)user_exit_stub;	/* fn's return address */
	user_fault_vec = ~0UL;
	return user_enter((u64)fn, arg, top, rflags ? rflags : USER_RFLAGS,
			  &c->user_ksp, (u64 *)((u8 *)&c->tss + 4));	/* TSS.RSP0 */
}

bool user_trap(struct trapframe *tf)
{
	struct cpu *c = this_cpu();

	if (tf->vector == 6 && tf->rax == UREQ_EXIT)
		user_return(c->user_ksp, tf->rdi);
	user_fault_vec = tf->vector;
	user_fault_rip = tf->rip;
	user_fault_err = tf->err;
	user_return(c->user_ksp, ~0UL);
}
