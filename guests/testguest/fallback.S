/*
 * Instructions that KVM's emulator on the PVM host cannot handle at CPL0 and
 * that the VMM has to complete itself.  These are the ONLY places where the
 * guest uses them on purpose; `make check` verifies no other CPL0 code does.
 */
#define KCODE64 0x08
#define KCODE32 0x18

	.text
	.globl fb_int3, fb_intn, fb_into, fb_fwait, fb_popcnt
	.globl fb_popcnt_resume, fb_int3_after, fb_intn_after, fb_into_after

/* #BP is a trap: the handler returns right after the int3. */
fb_int3:
	int3
fb_int3_after:
	xorl %eax, %eax
	ret

fb_intn:
	int $0x80
fb_intn_after:
	xorl %eax, %eax
	ret

/*
 * INTO is invalid in 64-bit mode, so drop to a 32-bit compatibility-mode code
 * segment (still CPL0, same stack below 4 GiB), set OF, execute INTO (#OF is
 * delivered through the 64-bit IDT and iretq returns to compat mode), and far
 * return to 64-bit mode.
 */
fb_into:
	pushq $KCODE32
	pushq $into32
	lretq
	.code32
into32:
	movb $0x7f, %al
	addb $1, %al		/* 0x7f + 1 overflows: OF = 1 */
	into
fb_into_after:
	pushl $KCODE64
	pushl $into_back
	lretl
	.code64
into_back:
	xorl %eax, %eax
	ret

/* FWAIT with no pending x87 exception is a no-op that must just complete. */
fb_fwait:
	fwait
	xorl %eax, %eax
	ret

/* Register form; returns -1 if it faulted (#UD handler resumes below). */
fb_popcnt:
	movq $-1, %rax
	popcntq %rdi, %rax
fb_popcnt_resume:
	ret

	.section .note.GNU-stack, "", @progbits
