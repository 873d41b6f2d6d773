/*
 * bootsect.bin: the smallest guest a PC BIOS boots (tests/test_firmware.sh).
 * Loaded at 0x7c00 by the firmware from a disk's first sector or from an
 * El Torito no-emulation CD image.  It reads the disk's second sector
 * through the BIOS (INT 13h AH=42h, so the firmware's own driver for the
 * controller does real I/O) unless the firmware already loaded it (a CD
 * boot image of 4 sectors), prints the NUL-terminated tag found there on
 * COM1 as "hyve-bootsect: TAG", then powers the VM off through the ACPI
 * PM1a control register (SLP_TYP 5, SLP_EN) described in hyve's FADT.
 * A tag "wait:TEXT" prints "hyve-bootsect: waiting", lets three RTC
 * seconds pass, then prints TEXT.  A tag "screen:TEXT" sets text mode 3
 * and writes TEXT on the screen through the video BIOS (INT 10h AH=0Eh),
 * then prints "hyve-bootsect: on screen" and waits with interrupts on
 * (tests take a VNC screenshot).  Failures print "hyve-bootsect: FAIL ..." and halt.
 */
	.code16
	.text
	.globl _start
_start:
	cli
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	$0x7c00, %sp
	ljmp	$0, $1f
1:	movb	%dl, drive
	cmpl	$0x47415448, tagsec	/* "HTAG": second sector already here (CD image) */
	je	have_tag
	movw	$dap, %si
	movb	$0x42, %ah
	movb	drive, %dl
	int	$0x13
	jc	read_failed
	cmpl	$0x47415448, tagsec
	jne	no_tag
have_tag:
	/* A tag starting "wait:" first says so and lets ~3 RTC seconds pass
	 * (tests checkpoint the VM meanwhile), then prints the rest. */
	movw	$tagsec + 4, %si
	cmpl	$0x65726373, (%si)	/* "scre" */
	jne	1f
	cmpw	$0x6e65, 4(%si)		/* "en" */
	jne	1f
	cmpb	$':', 6(%si)
	je	screen
1:	cmpl	$0x74696177, (%si)	/* "wait" */
	jne	print_tag
	cmpb	$':', 4(%si)
	jne	print_tag
	movw	$msg_wait, %si
	call	puts
	movw	$3, %cx
1:	call	rtc_sec
	movb	%al, %bl
2:	call	rtc_sec
	cmpb	%al, %bl
	je	2b
	loop	1b
	movw	$tagsec + 9, %si
	jmp	3f
print_tag:
	movw	$tagsec + 4, %si
3:	pushw	%si
	movw	$prefix, %si
	call	puts
	popw	%si
	call	puts
	movw	$crlf, %si
	call	puts
	/* ACPI S5: PM1a_CNT (0x404) = SLP_TYP 5 << 10 | SLP_EN (1 << 13) */
	movw	$0x404, %dx
	movw	$(5 << 10) | (1 << 13), %ax
	outw	%ax, %dx
	jmp	halt
read_failed:
	movw	$msg_read, %si
	call	puts
	jmp	halt
no_tag:
	movw	$msg_tag, %si
	call	puts
halt:
	hlt
	jmp	halt

/* "screen:TEXT": TEXT through the video BIOS, then say so on COM1. */
screen:
	movw	$0x0003, %ax		/* set mode 3: 80x25 text, screen cleared */
	int	$0x10
	movb	$0x01, %ah		/* cursor off (CH bit 5): a blinking one is timing on screen */
	movw	$0x2000, %cx
	int	$0x10
	movw	$tagsec + 11, %si
1:	lodsb
	testb	%al, %al
	jz	2f
	movb	$0x0e, %ah		/* teletype output, page 0 */
	movw	$0x0007, %bx
	int	$0x10
	jmp	1b
2:	movw	$msg_screen, %si
	call	puts
	sti			/* halted, not stopped: hyve ends a VM whose vCPUs all halt with IF=0 */
	jmp	halt

/* puts: the NUL-terminated string at %si to COM1, polling LSR.THRE. */
puts:
	lodsb
	testb	%al, %al
	jz	2f
	movb	%al, %ah
	movw	$0x3fd, %dx
1:	inb	%dx, %al
	testb	$0x20, %al
	jz	1b
	movw	$0x3f8, %dx
	movb	%ah, %al
	outb	%al, %dx
	jmp	puts
2:	ret

/* rtc_sec: the RTC's seconds register in %al. */
rtc_sec:
	movb	$0, %al
	outb	%al, $0x70
	inb	$0x71, %al
	ret

prefix:	.asciz	"hyve-bootsect: "
crlf:	.asciz	"\r\n"
msg_wait: .asciz "hyve-bootsect: waiting\r\n"
msg_screen: .asciz "hyve-bootsect: on screen\r\n"
msg_read: .asciz "hyve-bootsect: FAIL INT 13h read of sector 1\r\n"
msg_tag:  .asciz "hyve-bootsect: FAIL no HTAG in sector 1\r\n"
drive:	.byte	0
	.balign	4
dap:	.byte	16, 0		/* disk address packet: size, reserved */
	.word	1		/* sectors */
	.word	0x7e00, 0	/* buffer offset, segment */
	.quad	1		/* LBA */

	.org	510
	.byte	0x55, 0xaa
/* Sector 1: "HTAG", then the tag text (tests write their own). */
tagsec:	.ascii	"HTAG"
	.asciz	"no tag written"
	.org	1024
