/*
 * Interrupt entry stubs and the CPL0 <-> CPL3 switch.
 *
 * Each vector has a 16-byte stub at trap_stubs + 16*vec that pushes a dummy
 * error code where the CPU does not push one, then the vector number.
 */
#define UDATA 0x28
#define UCODE64 0x30

	.text
	.balign 16
	.globl trap_stubs
trap_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp trap_common
	.set vec, vec + 1
	.endr

	.globl trap_common	/* tpic.c points a gate at its own stub */
trap_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	cld
	call trap_dispatch
	.globl trap_return
trap_return:
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp
	iretq

/*
 * u64 user_enter(rip, arg, ursp, rflags, u64 *save_ksp, u64 *tss_rsp0)
 * Saves the callee-saved registers, records the kernel stack pointer (also as
 * TSS.RSP0, so traps from CPL3 land just below this frame) and irets to CPL3.
 * It "returns" when a trap handler calls user_return(saved ksp, value).
 */
	.globl user_enter
user_enter:
	pushq %rbx
	pushq %rbp
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, (%r8)
	movq %rsp, (%r9)
	pushq $(UDATA | 3)
	pushq %rdx
	pushq %rcx
	pushq $(UCODE64 | 3)
	pushq %rdi
	movq %rsi, %rdi
	xorl %eax, %eax
	xorl %ebx, %ebx
	xorl %ecx, %ecx
	xorl %edx, %edx
	xorl %esi, %esi
	xorl %ebp, %ebp
	xorl %r8d, %r8d
	xorl %r9d, %r9d
	xorl %r10d, %r10d
	xorl %r11d, %r11d
	xorl %r12d, %r12d
	xorl %r13d, %r13d
	xorl %r14d, %r14d
	xorl %r15d, %r15d
	iretq

/* noreturn void user_return(u64 ksp, u64 value) */
	.globl user_return
user_return:
	movq %rdi, %rsp
	movq %rsi, %rax
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbp
	popq %rbx
	ret

/*
 * CPL3 code returns here when the user function returns: ask the kernel to
 * leave user mode.  ud2 is the request mechanism (INT n from CPL3 raises #UD
 * on the PVM host anyway, and SYSCALL is broken there): the #UD handler sees
 * CS.RPL == 3, rax = request number, rdi = argument.
 */
	.section .text.user, "ax"
	.globl user_exit_stub, uexit
user_exit_stub:
	movq %rax, %rdi
uexit:
	movl $1, %eax		/* UREQ_EXIT */
	ud2
	jmp uexit

	.text
	.globl idt_load, idt_load_empty
idt_load:
	lidt idtr
	ret
idt_load_empty:
	lidt empty_idtr
	ret

	.data
	.balign 8
	.word 0, 0, 0
	.globl idtr
idtr:
	.word 256 * 16 - 1
	.quad idt
	.word 0, 0, 0
empty_idtr:
	.word 0
	.quad 0

	.bss
	.balign 4096
	.globl idt
idt:
	.fill 256 * 16, 1, 0

	.section .note.GNU-stack, "", @progbits
