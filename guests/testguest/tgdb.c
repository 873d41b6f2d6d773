/*
 * test=gdb: the target of hyve's GDB stub tests (tests/test_gdb.sh).
 * Debian's gdb breaks in gdb_step(), rewrites a register and gdb_answer,
 * watches gdb_counter, then detaches; the guest prints what it ended with,
 * so the test sees that the debugger's writes reached the guest.
 */
#include "kernel.h"
#include "tests.h"

volatile u64 gdb_counter;
volatile u64 gdb_answer = 1;

__attribute__((noinline)) void gdb_step(u64 i)
{
	gdb_counter += i;
	asm volatile("" ::: "memory");
}

static void t_gdb(void)
{
	for (u64 i = 1; i <= 5; i++)
		gdb_step(i);
	printf("gdb: counter=%lu answer=%lu\n", gdb_counter, gdb_answer);
}
GUEST_TEST(gdb, t_gdb);
