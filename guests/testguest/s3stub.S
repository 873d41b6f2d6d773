/*
 * test=s3's resume code (guests/testguest/ts3.c copies it to S3_STUB_ADDR
 * and makes that the FACS firmware waking vector).  hyve starts vCPU 0
 * here in real mode, CS = S3_STUB_ADDR >> 4, IP = 0, as a BIOS resume
 * does.  It checks CS, the magic word the guest left before sleeping, and
 * PM1_STS (WAK_STS plus the wake source in s3_want), prints its verdict on
 * COM1 and ends the test through isa-debug-exit (0: PASS, 1: FAIL).
 * Position-independent: every address is an offset from the stub's start.
 */
	.section .rodata
	.code16
	.globl s3_stub_start, s3_stub_end, s3_stub_magic, s3_stub_want
s3_stub_start:
	cli
	cld
	movw %cs, %ax
	movw %ax, %ds
	cmpw $0x600, %ax			/* S3_STUB_ADDR >> 4 */
	jne 1f
	cmpl $0x53335a17, s3_stub_magic - s3_stub_start
	jne 1f
	movw $0x400, %dx			/* PM1_STS */
	inw %dx, %ax
	movw %ax, %cx
	orw s3_stub_want - s3_stub_start, %ax	/* WAK_STS and the wake source: all set? */
	cmpw %ax, %cx
	jne 1f
	movw $(s3_ok - s3_stub_start), %si
	call 2f
	movb $0, %al
	outb %al, $0xf4
	hlt
1:	movw $(s3_bad - s3_stub_start), %si
	call 2f
	movb $1, %al
	outb %al, $0xf4
	hlt
	/* puts DS:SI on COM1, polling LSR.THRE */
2:	lodsb
	testb %al, %al
	jz 4f
	movb %al, %bl
	movw $0x3fd, %dx
3:	inb %dx, %al
	testb $0x20, %al
	jz 3b
	movw $0x3f8, %dx
	movb %bl, %al
	outb %al, %dx
	jmp 2b
4:	ret
s3_ok:	.asciz "s3: resumed in real mode at the waking vector, RAM kept, WAK_STS set\r\nPASS s3\r\n"
s3_bad:	.asciz "s3: resumed, but CS, the magic word or PM1_STS is wrong\r\nFAIL s3\r\n"
	.balign 4
s3_stub_magic:	.long 0
s3_stub_want:	.word 0
s3_stub_end:
	.code64
