/*
 * libFuzzer target for the GDB remote protocol (core/gdb_proto.c): what a
 * debugger (or anyone who reaches the -G port) sends, byte by byte through
 * the packet reader, each complete packet through the command handler
 * against a made-up target (4 vCPUs, 66 registers of the amd64 sizes, 64
 * KiB of memory at 0x10000).
 *
 *   tests/fuzz/run.sh -t 60 gdb
 *
 * (-DFUZZ_MAKE_SEEDS builds a main() that writes seed inputs to a directory.)
 *
 * Besides sanitizer findings, the target aborts when the handler breaks an
 * invariant: a reply longer than GDB_PACKET_MAX or not NUL-terminated; a
 * framed reply the reader does not take back as one packet; a register
 * or memory access outside the target's ranges; a resume naming a run
 * state that does not exist.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/gdb_proto.h"

#define NCPU 4
#define NREG 66
#define MEMBASE 0x10000
#define MEMSIZE 0x10000

static uint8_t regs[NCPU][NREG][16];
static uint8_t mem[MEMSIZE];

static int size_of(int n)
{
	if (n < 0 || n >= NREG)
		return 0;
	return n >= 24 && n < 32 ? 10 : n >= 40 && n < 56 ? 16 : (n == 17 || (n >= 18 && n < 24) || (n >= 32 && n < 40) || n == 56) ? 4 : 8;
}

static void check_cpu(int cpu)
{
	if (cpu < 0 || cpu >= NCPU)
		abort();
}

static int reg_read(void *o, int cpu, int n, uint8_t *val)
{
	(void)o;
	int size = size_of(n);
	if (cpu < 0 || size == 0)
		return size;
	check_cpu(cpu);
	memcpy(val, regs[cpu][n], (size_t)size);
	return size;
}

static int reg_write(void *o, int cpu, int n, const uint8_t *val, int size)
{
	(void)o;
	check_cpu(cpu);
	if (size != size_of(n) || size == 0)
		abort();
	memcpy(regs[cpu][n], val, (size_t)size);
	return 0;
}

static size_t access_mem(int cpu, uint64_t addr, uint8_t *buf, size_t len, bool write)
{
	check_cpu(cpu);
	if (len > GDB_MEM_MAX)
		abort();
	size_t n = 0;
	while (n < len && addr + n >= MEMBASE && addr + n < MEMBASE + MEMSIZE && addr + n >= addr) {
		if (write)
			mem[addr + n - MEMBASE] = buf[n];
		else
			buf[n] = mem[addr + n - MEMBASE];
		n++;
	}
	return n;
}

static size_t mem_read(void *o, int cpu, uint64_t addr, uint8_t *buf, size_t len)
{
	(void)o;
	return access_mem(cpu, addr, buf, len, false);
}

static size_t mem_write(void *o, int cpu, uint64_t addr, const uint8_t *buf, size_t len)
{
	(void)o;
	return access_mem(cpu, addr, (uint8_t *)buf, len, true);
}

static int bp(void *o, int cpu, enum gdb_bp_type type, uint64_t addr, uint64_t kind)
{
	(void)o;
	(void)addr;
	(void)kind;
	check_cpu(cpu);
	if ((int)type < GDB_BP_SW || type > GDB_WP_ACCESS)
		abort();
	return 0;
}

static void resume(void *o, const enum gdb_run *run)
{
	(void)o;
	for (int i = 0; i < NCPU; i++)
		if ((int)run[i] < GDB_RUN_STOP || run[i] > GDB_RUN_STEP)
			abort();
}

static void nothing(void *o) { (void)o; }

static const struct gdb_target_ops ops = {
	.ncpus = NCPU, .reg_read = reg_read, .reg_write = reg_write, .mem_read = mem_read, .mem_write = mem_write,
	.bp_insert = bp, .bp_remove = bp, .resume = resume, .detach = nothing, .kill = nothing,
	.target_xml = "<target><architecture>i386:x86-64</architecture></target>",
};

static struct gdb_reader rd, back;
static struct gdb_session s;
static char reply[GDB_PACKET_MAX + 1];
static char framed[2 * GDB_PACKET_MAX + 8];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gdb_reader_init(&rd);
	gdb_session_init(&s, &ops, NULL);
	for (size_t i = 0; i < size; i++) {
		if (gdb_reader_feed(&rd, data[i]) != GDB_IN_PACKET)
			continue;
		if (rd.len > GDB_PACKET_MAX || rd.buf[rd.len] != '\0')
			abort();
		memset(reply, 0x55, sizeof(reply));
		enum gdb_action a = gdb_handle_packet(&s, rd.buf, rd.len, reply);
		if (a == GDB_RESUMED || a == GDB_KILLED)
			continue;
		if (!memchr(reply, '\0', sizeof(reply)))
			abort();
		size_t n = strlen(reply);
		size_t f = gdb_frame(reply, n, framed);
		if (f > sizeof(framed) - 1)
			abort();
		/* What we send must read back as exactly one packet. */
		gdb_reader_init(&back);
		int packets = 0;
		for (size_t j = 0; j < f; j++)
			if (gdb_reader_feed(&back, (uint8_t)framed[j]) == GDB_IN_PACKET)
				packets++;
		if (packets != 1)
			abort();
	}
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
/* Seeds: the session Debian's gdb opens, then reads, writes, breakpoints and resumes. */
static void put(FILE *f, const char *p)
{
	unsigned sum = 0;
	for (const char *c = p; *c; c++)
		sum += (unsigned char)*c;
	fprintf(f, "+$%s#%02x", p, sum & 0xff);
}

int main(int argc, char **argv)
{
	static const char *const sessions[][12] = {
		{ "qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;vContSupported+",
		  "vMustReplyEmpty", "QStartNoAckMode", "Hgp0.0", "qXfer:features:read:target.xml:0,ffb", "qTStatus", "?",
		  "qfThreadInfo", "qsThreadInfo", "qAttached", "Hc-1", "qOffsets" },
		{ "g", "m10000,40", "M10000,4:01020304", "X10010,2:}]a", "p10", "P10=0000010000000000", "Hg2", "G00", "qC",
		  "T3", "qThreadExtraInfo,2", "D" },
		{ "Z0,10020,1", "Z1,10020,1", "Z2,10040,8", "Z3,10048,4", "Z4,10050,2", "vCont?", "vCont;s:1;c", "z0,10020,1",
		  "vCont;c", "s", "c", "k" },
	};
	if (argc != 2)
		return 2;
	for (size_t i = 0; i < sizeof(sessions) / sizeof(sessions[0]); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/session%zu", argv[1], i);
		FILE *f = fopen(path, "w");
		if (!f)
			return 1;
		for (int j = 0; j < 12 && sessions[i][j]; j++)
			put(f, sessions[i][j]);
		fputc(0x03, f);
		fclose(f);
	}
	return 0;
}
#endif
