/*
 * test=demo (the default): an interactive prompt on COM1.  Input comes from
 * the COM1 interrupt (IOAPIC pin 4); between keystrokes the CPU sits in hlt,
 * which matters on the PVM host where a CPL0 polling loop is emulated.
 */
#include "kernel.h"
#include "shell.h"
#include "tests.h"

extern const struct shell_command __start_shell_cmds[], __stop_shell_cmds[];

static void cmd_help(int argc, char **argv)
{
	(void)argc, (void)argv;
	const char *prev = "";

	/* Print in name order (link order is arbitrary). */
	printf("commands:\n");
	for (;;) {
		const struct shell_command *next = NULL;
		for (const struct shell_command *c = __start_shell_cmds; c < __stop_shell_cmds; c++)
			if (strcmp(c->name, prev) > 0 && (!next || strcmp(c->name, next->name) < 0))
				next = c;
		if (!next)
			break;
		printf("  %s\n", next->help);
		prev = next->name;
	}
}
SHELL_COMMAND(help, "help          this list", cmd_help);

void shell_info(void)
{
	char vendor[13];
	u32 a, b, c, d;

	cpuid(0, 0, &a, (u32 *)&vendor[0], (u32 *)&vendor[8], (u32 *)&vendor[4]);
	vendor[12] = 0;
	printf("cpus:    %d (bsp apic id %u, %s)\n", cpu_count_guess(), lapic_id(), vendor);
	if (acpi.found)
		printf("acpi:    MADT from '%s', %d local APICs\n", acpi.oem, acpi.ncpus);
	else
		printf("acpi:    no RSDP/MADT found\n");
	printf("memory:  %lu MiB usable (lower %lu KiB, upper %lu KiB)\n",
	       boot.ram_total >> 20, boot.mem_lower_kb, boot.mem_upper_kb);
	for (int i = 0; i < boot.nram; i++)
		printf("  ram 0x%010lx-0x%010lx (%lu KiB)\n", boot.ram[i].base,
		       boot.ram[i].base + boot.ram[i].len - 1, boot.ram[i].len >> 10);
	printf("image:   0x%lx-0x%lx, boot data up to 0x%lx, %d modules\n",
	       (u64)_image_start, (u64)_image_end, boot.reserved_end, boot.nmods);
	printf("cmdline: %s\n", boot.cmdline);
	cpuid(1, 0, &a, &b, &c, &d);
	printf("cpuid.1: eax=%08x ecx=%08x edx=%08x%s\n", a, c, d,
	       c & (1u << 31) ? " (hypervisor)" : "");
	u64 khz = tsc_khz();	/* before reading tsc_source */
	printf("tsc:     %lu kHz (%s)\n", khz, tsc_source);
	printf("com1:    %lu receive interrupts so far\n", com1_irqs);
}

static void cmd_info(int argc, char **argv)
{
	(void)argc, (void)argv;
	shell_info();
}
SHELL_COMMAND(info, "info          cpus, memory, command line", cmd_info);

static void cmd_poweroff(int argc, char **argv)
{
	(void)argc, (void)argv;
	printf("powering off\n");
	poweroff();
}
SHELL_COMMAND(poweroff, "poweroff      ACPI S5 (hyve: port 0x404, QEMU: 0x604)", cmd_poweroff);

static void cmd_reboot(int argc, char **argv)
{
	(void)argc, (void)argv;
	printf("rebooting\n");
	reboot();
}
SHELL_COMMAND(reboot, "reboot        reset through the keyboard controller", cmd_reboot);

static void cmd_run(int argc, char **argv)
{
	if (argc < 2) {
		list_tests();
		return;
	}
	run_test(argv[1]);	/* does not return: tests end the VM */
}
SHELL_COMMAND(run, "run TEST      run a test (ends the VM like test=TEST)", cmd_run);

static void cmd_echo(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		printf("%s%s", argv[i], i + 1 < argc ? " " : "");
	printf("\n");
}
SHELL_COMMAND(echo, "echo ARGS     print ARGS", cmd_echo);

static int getc_wait(void)
{
	int ch;
	while ((ch = serial_getc()) < 0) {
		sti_hlt_cli();	/* sti;hlt: no wakeup lost between check and sleep */
		serial_rx_isr();	/* backstop poll (10 Hz tick) if IRQ4 never comes */
	}
	return ch;
}

static int readline(char *buf, int cap)
{
	int n = 0;
	for (;;) {
		int ch = getc_wait();
		if (ch == '\r' || ch == '\n') {
			serial_putc('\n');
			buf[n] = 0;
			return n;
		}
		if (ch == 0x7f || ch == 0x08) {
			if (n > 0) {
				n--;
				puts_nolock("\b \b");
			}
			continue;
		}
		if (ch == 0x03) {	/* ^C */
			puts_nolock("^C\n");
			n = 0;
			buf[0] = 0;
			return 0;
		}
		if (ch >= 0x20 && ch < 0x7f && n < cap - 1) {
			buf[n++] = (char)ch;
			serial_putc((char)ch);
		}
	}
}

static void execute(char *line)
{
	char *argv[16];
	int argc = 0;

	for (char *p = line; *p && argc < (int)ARRAY_SIZE(argv);) {
		while (*p == ' ')
			*p++ = 0;
		if (!*p)
			break;
		argv[argc++] = p;
		while (*p && *p != ' ')
			p++;
	}
	if (!argc)
		return;
	for (const struct shell_command *c = __start_shell_cmds; c < __stop_shell_cmds; c++) {
		if (!strcmp(c->name, argv[0])) {
			c->fn(argc, argv);
			return;
		}
	}
	printf("unknown command '%s' (try help)\n", argv[0]);
}

void shell_run(void)
{
	char line[128];

	serial_enable_rx_irq();
	/* A slow tick so that input still gets through (polled) if the COM1
	 * interrupt path is broken; `info` shows how many COM1 IRQs arrived. */
	start_lapic_ticks(10);
	printf("hyve-testguest demo: type 'help'\n");
	for (;;) {
		puts_nolock("hyve> ");
		readline(line, sizeof(line));
		execute(line);
	}
}
