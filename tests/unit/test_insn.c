/*
 * Unit tests for the instruction completion layer (core/insn*.c), without
 * /dev/kvm:
 *  (a) the decoder against binutils: a table of encodings across modes and
 *      thousands of random prefix/opcode/ModRM/SIB/displacement/immediate
 *      combinations are disassembled by objdump (-m i386:x86-64, i386,
 *      i8086); instruction lengths and memory operands must agree;
 *  (b) completion of each instruction on a hand-filled vCPU (registers,
 *      flags, memory, the XSAVE area), with the expected results computed
 *      by running the same instruction on the host CPU where it has it
 *      (POPCNT, MOVBE, CMPXCHG8B/16B, the SSE moves, FXSAVE);
 *  (c) the exceptions: #UD when the vCPU's CPUID lacks the feature, #GP,
 *      #SS, #PF (error codes, CR2), #NM, #AC.
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -I. \
 *      tests/unit/test_insn.c core/insn_decode.c core/insn_mem.c core/insn_complete.c
 *
 * One line per check ("ok - ..." / "FAIL - ..."), exit status 1 on failure.
 * test-sources: core/insn_decode.c core/insn_mem.c core/insn_complete.c
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/insn.h"

static int nchecks, nfailed;
static bool verbose;

static void check(bool ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(bool ok, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	nchecks++;
	if (ok) {
		if (verbose)
			printf("ok - %s\n", msg);
	} else {
		nfailed++;
		printf("FAIL - %s (test_insn.c:%d)\n", msg, line);
	}
	fflush(stdout);
}
#define CHECK(cond, ...) check((cond), __LINE__, __VA_ARGS__)

/* A summary "ok" line for a group of checks that passed silently. */
static void group_done(const char *what, int before_failed, int before_checks)
{
	if (nfailed == before_failed)
		printf("ok - %s (%d checks)\n", what, nchecks - before_checks);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Set when the real counterpart is missing: the test then skips (77). */
static bool objdump_missing;

#include "test_insn_decode.inc"
#include "test_insn_exec.inc"

int main(int argc, char **argv)
{
	verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
	test_decoder();
	test_execution();
	printf("%d checks, %d failed\n", nchecks, nfailed);
	return nfailed ? 1 : objdump_missing ? 77 : 0;
}
