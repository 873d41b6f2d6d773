/* Tests implemented outside tests.c. */
#ifndef TESTGUEST_TESTS_H
#define TESTGUEST_TESTS_H
extern volatile u64 pit_ticks, lapic_ticks;
void start_pit_ticks(u32 hz);	/* PIT via the IOAPIC, counts pit_ticks */
void stop_pit_ticks(void);
void start_lapic_ticks(u32 hz);	/* LAPIC timer, counts lapic_ticks */
void list_tests(void);
void t_pio(void);
void t_mmio(void);
void t_user(void);
void t_counter(void);
void t_worker(void);
void t_probe(void);

/*
 * Tests in their own files register themselves (listed after the built-in
 * table, in link order):
 *   static void t_net(void) { ... }
 *   GUEST_TEST(net, t_net);          -> test=net
 */
struct guest_test {
	const char *name;
	void (*fn)(void);
};
#define GUEST_TEST(tname, func)                                               \
	static const struct guest_test guest_test_##tname                      \
	__attribute__((used, section("guest_tests"), aligned(8))) = { #tname, func }
#endif
