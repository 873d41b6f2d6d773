/*
 * Test selection (test=NAME on the command line) and the tests that run at
 * CPL0.  Every test prints "PASS <name>" or "FAIL <name>: reason" and exits
 * through isa-debug-exit: 0 on success, 2 on failure.
 */
#include "kernel.h"
#include "tests.h"

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

void start_pit_ticks(u32 hz)
{
	set_irq_handler(VEC_PIT, pit_irq);
	ioapic_route(2, VEC_PIT, lapic_id());
	pit_start_periodic(hz);
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
	u64 ms = 200, khz = tsc_khz();

	cmdline_get_u64("ms", &ms);
	set_irq_handler(VEC_LAPIC_TIMER, lapic_timer_irq);
	start_pit_ticks(1000);
	lapic_timer_start(62500, VEC_LAPIC_TIMER);	/* 1 ms with a 1 GHz bus */
	/* Poll rather than hlt so that a dead timer cannot hang the test. */
	u64 t0 = rdtsc(), end = t0 + ms * khz;
	sti();
	while ((s64)(rdtsc() - end) < 0)
		cpu_relax();
	cli();
	u64 elapsed = tsc_to_us(rdtsc() - t0) / 1000;
	pit_stop();
	lapic_timer_stop();
	printf("timer: pit=%lu lapic=%lu in %lu ms (pit at 1000 Hz, lapic period 62500*16 bus cycles)\n",
	       pit_ticks, lapic_ticks, elapsed);
	if (!pit_ticks || !lapic_ticks)
		test_fail("timer", "pit=%lu lapic=%lu", pit_ticks, lapic_ticks);
	test_pass("timer");
}

static u8 cmos_read(u8 reg)
{
	outb(0x70, reg);
	return inb(0x71);
}

static u32 bcd2bin(u8 v)
{
	return (v & 0x0f) + (v >> 4) * 10;
}

static void t_rtc(void)
{
	u8 r[7], prev[7];
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
	{ "demo", shell_run },
};

/* Compare a command-line value (ends at space/NUL) with a name. */
static bool token_eq(const char *tok, const char *name)
{
	size_t n = strlen(name);
	return !strncmp(tok, name, n) && (tok[n] == 0 || tok[n] == ' ');
}

void list_tests(void)
{
	printf("tests:");
	for (u32 i = 0; i < ARRAY_SIZE(tests); i++)
		printf(" %s", tests[i].name);
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
	current_test = "test";
	list_tests();
	test_fail("test", "unknown test '%s'", name);
}
