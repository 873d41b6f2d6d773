/*
 * Test selection (test=NAME on the command line) and the tests that run at
 * CPL0.  Every test prints "PASS <name>" or "FAIL <name>: reason" and exits
 * through isa-debug-exit: 0 on success, 2 on failure.
 */
#include "kernel.h"
#include "tests.h"
#include "virtio.h"

extern const char *current_test;

/* ---- timers: shared tick counters, also used by the CPL3 tests ---- */
volatile u64 pit_ticks, lapic_ticks;

static void pit_irq(struct trapframe *tf)
{
	(void)tf;
	pit_ticks++;
	lapic_eoi();
}

static void lapic_timer_irq(struct trapframe *tf)
{
	(void)tf;
	lapic_ticks++;
	lapic_eoi();
}

static int pit_pin = -1;

void start_pit_ticks(u32 hz)
{
	const char *why;
	if (pit_pin < 0)
		pit_pin = pit_gsi(&why);
	set_irq_handler(VEC_PIT, pit_irq);
	ioapic_route(pit_pin, VEC_PIT, lapic_id());
	pit_start_periodic(hz);
}

void stop_pit_ticks(void)
{
	pit_stop();
	ioapic_mask(pit_pin);
}

void start_lapic_ticks(u32 hz)
{
	set_irq_handler(VEC_LAPIC_TIMER, lapic_timer_irq);
	lapic_timer_start_hz(hz, VEC_LAPIC_TIMER);
}

/* Poll (not hlt) for ms milliseconds with interrupts on: a dead timer must
 * not hang the test. */
static void wait_ms_polling(u64 ms)
{
	u64 end = rdtsc() + ms * tsc_khz();
	sti();
	while ((s64)(rdtsc() - end) < 0)
		cpu_relax();
	cli();
}

/* ---- tests ---- */
static void t_hello(void)
{
	test_pass("hello");
}

static void t_exit(u64 code)
{
	printf("exit: writing 0x%lx to port 0xf4\n", code);
	debug_exit((u32)code);
}

static void t_smp(void)
{
	int n = smp_boot_aps(5000);
	int want = 0;
	u64 v;

	if (cmdline_get_u64("cpus", &v))
		want = (int)v;
	else if (acpi.found)
		want = acpi.ncpus;
	printf("smp: %d cpus online\n", n);
	if (want && n != want)
		test_fail("smp", "%d cpus online, expected %d", n, want);
	test_pass("smp");
}

static void t_timer(void)
{
	u64 ms = 300, hz = 100;
	const char *why;

	/* 100 Hz: each interrupt costs a few hundred emulated CPL0 instructions
	 * on the PVM host; at 1000 Hz per timer ticks were being dropped. */
	cmdline_get_u64("ms", &ms);
	cmdline_get_u64("hz", &hz);
	pit_pin = pit_gsi(&why);
	u64 rate = lapic_timer_rate();
	printf("timer: PIT on IOAPIC pin %d (%s); LAPIC timer %lu kHz at divide 16\n",
	       pit_pin, why, rate / 1000);
	start_pit_ticks((u32)hz);
	start_lapic_ticks((u32)hz);
	u64 t0 = rdtsc();
	wait_ms_polling(ms);
	u64 elapsed = tsc_to_us(rdtsc() - t0) / 1000;
	stop_pit_ticks();
	lapic_timer_stop();
	u64 pit = pit_ticks, lapic = lapic_ticks;
	printf("timer: pit=%lu lapic=%lu in %lu ms (both at %lu Hz: ~%lu expected)\n",
	       pit, lapic, elapsed, hz, hz * elapsed / 1000);
	if (!pit) {
		/* Say where the PIT interrupt goes instead, if anywhere. */
		int other = pit_pin == 2 ? 0 : 2;
		ioapic_route(other, VEC_PIT, lapic_id());
		pit_start_periodic((u32)hz);
		wait_ms_polling(100);
		pit_stop();
		ioapic_mask(other);
		if (pit_ticks)
			printf("timer: PIT interrupts arrive on IOAPIC pin %d, not pin %d\n",
			       other, pit_pin);
	}
	if (!pit || !lapic)
		test_fail("timer", "pit=%lu lapic=%lu", pit, lapic);
	test_pass("timer");
}

static u32 bcd2bin(u8 v)
{
	return (v & 0x0f) + (v >> 4) * 10;
}

static void t_rtc(void)
{
	u8 r[7] = { 0 }, prev[7];
	static const u8 regs[7] = { 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32 };
	int tries = 0;

	/* Read twice with UIP clear until two reads agree (no update raced us). */
	do {
		for (int i = 0; i < 7; i++)
			prev[i] = r[i];
		for (int i = 0; i < 1000 && (cmos_read(0x0a) & 0x80); i++)
			;
		for (int i = 0; i < 7; i++)
			r[i] = cmos_read(regs[i]);
	} while ((tries++ < 1 || memcmp(r, prev, 7)) && tries < 10);

	u8 regb = cmos_read(0x0b);
	bool bcd = !(regb & 0x04), pm = false;
	u32 v[7];
	if (!(regb & 0x02)) {	/* 12-hour mode: bit 7 of the hour is PM */
		pm = r[2] & 0x80;
		r[2] &= 0x7f;
	}
	for (int i = 0; i < 7; i++)
		v[i] = bcd ? bcd2bin(r[i]) : r[i];
	if (!(regb & 0x02))
		v[2] = (v[2] % 12) + (pm ? 12 : 0);
	u32 century = (v[6] >= 19 && v[6] <= 30) ? v[6] : 20;
	u32 year = century * 100 + v[5];
	printf("rtc: %04u-%02u-%02u %02u:%02u:%02u\n", year, v[4], v[3], v[2], v[1], v[0]);
	for (int i = 0; bcd && i < 6; i++)
		if ((r[i] & 0x0f) > 9 || (r[i] >> 4) > 9)
			test_fail("rtc", "register 0x%x = 0x%x is not BCD (regB=0x%x)", regs[i], r[i], regb);
	if (v[0] > 59 || v[1] > 59 || v[2] > 23 || v[3] < 1 || v[3] > 31 ||
	    v[4] < 1 || v[4] > 12 || v[5] > 99)
		test_fail("rtc", "field out of range (regB=0x%x)", regb);
	if (year < 2024)
		test_fail("rtc", "year %u < 2024 (regB=0x%x)", year, regb);
	test_pass("rtc");
}

/* ---- instructions the VMM must complete at CPL0 ---- */
static void check_trap(const char *name, int vec, u64 rip, u64 cs)
{
	struct cpu *c = this_cpu();
	int seen = trap_seen();
	if (seen != vec)
		test_fail(name, "expected vector %d, saw %d", vec, seen);
	if (c->seen_rip != rip || c->seen_cs != cs)
		test_fail(name, "trap frame rip=%lx cs=%lx, expected rip=%lx cs=%lx",
			  c->seen_rip, c->seen_cs, rip, cs);
	printf("%s: vector %d delivered, rip=%lx cs=%lx\n", name, vec, rip, cs);
}

static void t_int3(void)
{
	expect_trap(3, 0);
	fb_int3();
	check_trap("int3", 3, (u64)fb_int3_after, KCODE64);
	test_pass("int3");
}

static void t_intn(void)
{
	expect_trap(VEC_INTN, 0);
	fb_intn();
	check_trap("intn", VEC_INTN, (u64)fb_intn_after, KCODE64);
	test_pass("intn");
}

static void t_into(void)
{
	expect_trap(4, 0);
	fb_into();
	check_trap("into", 4, (u64)fb_into_after, KCODE32);
	test_pass("into");
}

static void t_fwait(void)
{
	fb_fwait();
	printf("fwait: completed\n");
	test_pass("fwait");
}

static void t_popcnt(void)
{
	static const u64 in[] = { 0, ~0UL, 0x8000000000000001UL,
				  0x123456789abcdef0UL, 0xdeadbeefcafebabeUL };
	static const u64 want[] = { 0, 64, 2, 32, 46 };
	u32 a, b, c, d;

	cpuid(1, 0, &a, &b, &c, &d);
	for (u32 i = 0; i < ARRAY_SIZE(in); i++) {
		expect_trap(6, (u64)fb_popcnt_resume);
		u64 r = fb_popcnt(in[i]);
		if (trap_seen() == 6)
			test_fail("popcnt", "#UD (CPUID.1:ECX.POPCNT=%u)", (c >> 23) & 1);
		if (r != want[i])
			test_fail("popcnt", "popcnt(0x%lx) = %lu, expected %lu", in[i], r, want[i]);
	}
	printf("popcnt: %u values correct\n", (u32)ARRAY_SIZE(in));
	test_pass("popcnt");
}

static void t_triple(void)
{
	printf("triple: loading an empty IDT and executing ud2\n");
	idt_load_empty();
	__asm__ __volatile__("ud2");
	test_fail("triple", "still running after the fault");
}

static void t_serial(void)
{
	int r = serial_irq_selftest(500);
	if (r == 0)
		test_fail("serial", "no COM1 interrupt (IRQ4, IOAPIC pin 4) within 500 ms of enabling THRE");
	if (r == 2)
		test_fail("serial", "COM1 interrupt arrived but IIR did not say THR empty");
	printf("serial: COM1 THRE interrupt on IOAPIC pin 4\n");
	test_pass("serial");
}

/* ---- VM exits other than debug-exit ---- */
static void t_poweroff(void)
{
	printf("poweroff: ACPI S5 request\n");
	outw(0x404, (5 << 10) | (1 << 13));	/* hyve/bhyve */
	outw(0x604, (0 << 10) | (1 << 13));	/* QEMU pc */
	udelay(500000);
	test_fail("poweroff", "still running 500 ms after the ACPI S5 request");
}

static void t_reboot(void)
{
	printf("reboot: keyboard controller reset (0xfe to port 0x64)\n");
	outb(0x64, 0xfe);
	udelay(500000);
	test_fail("reboot", "still running 500 ms after the reset request");
}

static void t_halt(void)
{
	printf("halt: cli; hlt\n");
	for (;;) {
		cli();
		hlt();
	}
}

static void t_info(void)
{
	extern void shell_info(void);
	shell_info();
	test_pass("info");
}

/* ---- dispatch ---- */
struct test {
	const char *name;
	void (*fn)(void);
};

static const struct test tests[] = {
	{ "hello", t_hello },
	{ "smp", t_smp },
	{ "timer", t_timer },
	{ "pio", t_pio },
	{ "mmio", t_mmio },
	{ "rtc", t_rtc },
	{ "serial", t_serial },
	{ "int3", t_int3 },
	{ "intn", t_intn },
	{ "into", t_into },
	{ "fwait", t_fwait },
	{ "popcnt", t_popcnt },
	{ "triple", t_triple },
	{ "user", t_user },
	{ "counter", t_counter },
	{ "worker", t_worker },
	{ "probe", t_probe },
	{ "info", t_info },
	{ "blk", t_blk },
	{ "rnd", t_rnd },
	{ "badring", t_badring },
	{ "poweroff", t_poweroff },
	{ "reboot", t_reboot },
	{ "halt", t_halt },
	{ "demo", shell_run },
};

/* Compare a command-line value (ends at space/NUL) with a name. */
static bool token_eq(const char *tok, const char *name)
{
	size_t n = strlen(name);
	return !strncmp(tok, name, n) && (tok[n] == 0 || tok[n] == ' ');
}

extern const struct guest_test __start_guest_tests[], __stop_guest_tests[];

void list_tests(void)
{
	printf("tests:");
	for (u32 i = 0; i < ARRAY_SIZE(tests); i++)
		printf(" %s", tests[i].name);
	for (const struct guest_test *t = __start_guest_tests; t < __stop_guest_tests; t++)
		printf(" %s", t->name);
	printf(" exit=0xNN\n");
}

void run_test(const char *name)
{
	u64 code;

	if (!strncmp(name, "exit=", 5)) {	/* test=exit=0xNN */
		current_test = "exit";
		if (!parse_u64(name + 5, &code))
			test_fail("exit", "bad exit code");
		t_exit(code);
	}
	if (token_eq(name, "exit")) {		/* test=exit code=0xNN */
		current_test = "exit";
		if (!cmdline_get_u64("code", &code) && !cmdline_get_u64("exit", &code))
			code = 0;
		t_exit(code);
	}
	for (u32 i = 0; i < ARRAY_SIZE(tests); i++) {
		if (token_eq(name, tests[i].name)) {
			current_test = tests[i].name;
			tests[i].fn();
			test_pass(tests[i].name);
		}
	}
	for (const struct guest_test *t = __start_guest_tests; t < __stop_guest_tests; t++) {
		if (token_eq(name, t->name)) {
			current_test = t->name;
			t->fn();
			test_pass(t->name);
		}
	}
	current_test = "test";
	list_tests();
	test_fail("test", "unknown test '%s'", name);
}
