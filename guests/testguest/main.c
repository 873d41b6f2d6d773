/* Entry from boot.S on the BSP, in long mode on kstacks[0]. */
#include "kernel.h"

void kmain(u32 magic, u32 mbi)
{
	serial_init();
	printf("hyve-testguest: hello\n");	/* first sign of life */
	idt_init();
	cpu_init(&cpus[0], 0);
	multiboot_parse(magic, mbi);
	/* The 8259s as the loader left them (test=pic checks), then ours. */
	boot_pic_imr = (u16)(inb(0x21) | inb(0xa1) << 8);
	if (!cmdline_get("test") || strncmp(cmdline_get("test"), "pic", 3))
		pic_disable();
	if (cmdline_get("x2apic") && !strncmp(cmdline_get("x2apic"), "1", 1) &&
	    !lapic_enable_x2apic())
		printf("warning: x2apic=1 but CPUID has no x2APIC\n");
	lapic_init();
	cpus[0].apic_id = lapic_id();

	const char *test = cmdline_get("test");
	u64 code;
	if (!test && cmdline_get_u64("exit", &code))
		test = "exit";
	if (!test)
		test = "demo";
	run_test(test);
}
