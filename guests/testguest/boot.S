/*
 * Multiboot v1 entry, GDT, page tables and the switch to long mode.
 *
 * The page tables are built at assembly time (.rept) rather than by a loop at
 * run time: on the PVM host every CPL0 instruction is emulated, so static data
 * is the cheapest way to identity-map 4 GiB.
 */
#define ASM 1
#define KCODE64 0x08
#define KDATA 0x10
#define KCODE32 0x18
#define MAX_CPUS 32
#define KSTACK_SHIFT 14
#define TRAMP_ADDR 0x8000

#define MB_MAGIC 0x1BADB002
/* bit0: page-align modules, bit1: memory info, bit16: address fields valid
 * (so loaders that only do the "a.out kludge" work as well as ELF loaders). */
#define MB_FLAGS 0x00010003

	.section .multiboot, "a"
	.balign 4
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long mb_header		/* header_addr */
	.long _image_start	/* load_addr */
	.long _load_end		/* load_end_addr */
	.long _bss_end		/* bss_end_addr */
	.long _start		/* entry_addr */

	.section .text.boot, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	movl %eax, mb_magic
	movl %ebx, mb_info
	lgdtl gdtr
	ljmpl $KCODE32, $1f
1:	movw $KDATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorl %ebp, %ebp		/* ebp = 0: bootstrap processor */
	jmp enter_long_mode

/* APs arrive here from the real-mode trampoline, already in protected mode. */
	.globl ap_entry32
ap_entry32:
	movw $KDATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movl $1, %ebp

enter_long_mode:
	movl %cr4, %eax
	orl $0x20, %eax		/* PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xC0000080, %ecx	/* EFER */
	rdmsr
	orl $0x100, %eax	/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax	/* PG | PE */
	andl $~0x0000000c, %eax	/* clear EM, TS: no #NM surprises */
	movl %eax, %cr0
	ljmpl $KCODE64, $long_mode_entry

	.code64
long_mode_entry:
	movw $KDATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorl %eax, %eax
	movw %ax, %fs
	movw %ax, %gs
	testl %ebp, %ebp
	jnz 2f
	movq $kstacks + (1 << KSTACK_SHIFT), %rsp
	movl mb_magic, %edi
	movl mb_info, %esi
	call kmain
	jmp halt_forever
2:	movl $1, %eax
	lock xaddl %eax, ap_next
	cmpl $MAX_CPUS, %eax
	jae halt_forever
	movl %eax, %edi
	leaq 1(%rax), %rsp
	shlq $KSTACK_SHIFT, %rsp
	addq $kstacks, %rsp
	call ap_main
halt_forever:
	cli
	hlt
	jmp halt_forever

/*
 * Real-mode AP trampoline, copied to TRAMP_ADDR (SIPI vector 0x08).  It only
 * switches to protected mode and jumps into the kernel image, which shares the
 * long-mode switch above with the BSP.
 */
	.section .rodata
	.code16
	.globl trampoline_start, trampoline_end
trampoline_start:
	cli
	cld
	xorw %ax, %ax
	movw %ax, %ds
	lgdtl TRAMP_ADDR + (tramp_gdtr - trampoline_start)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $KCODE32, $ap_entry32
	.balign 8
tramp_gdtr:
	.word gdt_end - gdt - 1
	.long gdt
trampoline_end:
	.code64

	.data
	.balign 8
	.globl mb_magic, mb_info, ap_next
mb_magic: .long 0
mb_info: .long 0
ap_next: .long 1

/*
 * GDT.  Layout (see kernel.h): null, kernel code64, kernel data, kernel code32
 * (boot + compatibility-mode tests), user code32, user data, user code64
 * (the SYSCALL/SYSRET ordering), then one 16-byte TSS descriptor per CPU,
 * filled in at run time by cpu_init().
 */
	.balign 16
	.globl gdt, gdt_end, gdtr
gdt:
	.quad 0
	.quad 0x00af9a000000ffff	/* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff	/* 0x10 kernel data */
	.quad 0x00cf9a000000ffff	/* 0x18 kernel code, 32-bit */
	.quad 0x00cffa000000ffff	/* 0x20 user code, 32-bit */
	.quad 0x00cff2000000ffff	/* 0x28 user data */
	.quad 0x00affa000000ffff	/* 0x30 user code, 64-bit */
	.fill MAX_CPUS * 2, 8, 0	/* 0x38.. TSS descriptors */
gdt_end:
	.balign 8
	.word 0, 0, 0
gdtr:
	.word gdt_end - gdt - 1
	.quad gdt

/*
 * Identity map of 0..4 GiB with 2 MiB pages, user-accessible (U) so that CPL3
 * loops share the kernel's address space.  3..4 GiB (LAPIC, IOAPIC, the
 * pc-testdev MMIO page at 0xff000000) is mapped uncached (PCD|PWT).
 */
	.balign 4096
	.globl pml4
pml4:
	.quad pdpt + 0x7
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x0000 + 0x7
	.quad pd + 0x1000 + 0x7
	.quad pd + 0x2000 + 0x7
	.quad pd + 0x3000 + 0x7
	.fill 508, 8, 0
pd:
	.set i, 0
	.rept 2048
	.if i < 1536
	.quad (i << 21) | 0x87		/* P RW U PS */
	.else
	.quad (i << 21) | 0x9f		/* P RW U PWT PCD PS */
	.endif
	.set i, i + 1
	.endr

	.section .note.GNU-stack, "", @progbits
