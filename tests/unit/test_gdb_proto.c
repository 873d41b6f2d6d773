/*
 * Unit tests for core/gdb_proto.c, the GDB remote protocol without
 * sockets: framing (checksums, escapes, ^C, overlong packets) and the
 * commands against a made-up two-vCPU target whose registers and memory
 * are arrays here.  The packet layouts checked are the GDB manual's
 * ("Remote Protocol", "Packets" and "Stop Reply Packets").
 * test-sources: core/gdb_proto.c
 */
#include <errno.h>
#include <string.h>

#include "../../core/gdb_proto.h"
#include "check.h"

#define NREG 3   /* sizes 8, 4, 10 */
static const int reg_size[NREG] = { 8, 4, 10 };
static uint8_t regs[2][NREG][16];
static uint8_t mem[0x2000];   /* virtual 0x1000..0x2fff */
static enum gdb_run last_run[2];
static int resumes, kills, detaches, bp_calls;
static enum gdb_bp_type last_bp_type;
static uint64_t last_bp_addr;

static int reg_read(void *o, int cpu, int n, uint8_t *val)
{
	(void)o;
	if (n < 0 || n >= NREG)
		return 0;
	if (cpu >= 0)
		memcpy(val, regs[cpu][n], (size_t)reg_size[n]);
	return reg_size[n];
}

static int reg_write(void *o, int cpu, int n, const uint8_t *val, int size)
{
	(void)o;
	if (n < 0 || n >= NREG || size != reg_size[n])
		return -1;
	memcpy(regs[cpu][n], val, (size_t)size);
	return 0;
}

static size_t mem_read(void *o, int cpu, uint64_t addr, uint8_t *buf, size_t len)
{
	(void)o;
	(void)cpu;
	size_t n = 0;
	while (n < len && addr + n >= 0x1000 && addr + n < 0x3000) {
		buf[n] = mem[addr + n - 0x1000];
		n++;
	}
	return n;
}

static size_t mem_write(void *o, int cpu, uint64_t addr, const uint8_t *buf, size_t len)
{
	(void)o;
	(void)cpu;
	size_t n = 0;
	while (n < len && addr + n >= 0x1000 && addr + n < 0x3000) {
		mem[addr + n - 0x1000] = buf[n];
		n++;
	}
	return n;
}

static int bp_insert(void *o, int cpu, enum gdb_bp_type type, uint64_t addr, uint64_t kind)
{
	(void)o;
	(void)cpu;
	bp_calls++;
	last_bp_type = type;
	last_bp_addr = addr;
	if (type != GDB_BP_SW && kind == 3) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

static int bp_remove(void *o, int cpu, enum gdb_bp_type type, uint64_t addr, uint64_t kind)
{
	return bp_insert(o, cpu, type, addr, kind);
}

static void resume(void *o, const enum gdb_run *run)
{
	(void)o;
	memcpy(last_run, run, sizeof(last_run));
	resumes++;
}

static void detach(void *o) { (void)o; detaches++; }
static void kill_vm(void *o) { (void)o; kills++; }

static const char xml[] = "<target><architecture>i386:x86-64</architecture></target>";
static const struct gdb_target_ops ops = {
	.ncpus = 2, .reg_read = reg_read, .reg_write = reg_write, .mem_read = mem_read, .mem_write = mem_write,
	.bp_insert = bp_insert, .bp_remove = bp_remove, .resume = resume, .detach = detach, .kill = kill_vm,
	.target_xml = xml,
};

static struct gdb_session s;
static char reply[GDB_PACKET_MAX + 1];

static enum gdb_action cmd(const char *pkt)
{
	return gdb_handle_packet(&s, pkt, strlen(pkt), reply);
}

static bool says(const char *pkt, const char *want)
{
	enum gdb_action a = cmd(pkt);
	return a == GDB_REPLY && strcmp(reply, want) == 0;
}

/* Feed a string to a reader; the last non-NONE result. */
static enum gdb_input feed(struct gdb_reader *r, const char *bytes, size_t n)
{
	enum gdb_input last = GDB_IN_NONE;
	for (size_t i = 0; i < n; i++) {
		enum gdb_input in = gdb_reader_feed(r, (uint8_t)bytes[i]);
		if (in != GDB_IN_NONE)
			last = in;
	}
	return last;
}

static void test_framing(void)
{
	struct gdb_reader r;
	gdb_reader_init(&r);
	CHECK(feed(&r, "$g#67", 5) == GDB_IN_PACKET && r.len == 1 && r.buf[0] == 'g', "$g#67 is the packet 'g'");
	CHECK(feed(&r, "$g#66", 5) == GDB_IN_BAD, "a wrong checksum is refused ('-')");
	CHECK(feed(&r, "$g#zz", 5) == GDB_IN_BAD, "a checksum that is not hex is refused");
	CHECK(feed(&r, "\x03", 1) == GDB_IN_INTERRUPT, "^C between packets is an interrupt");
	CHECK(feed(&r, "+", 1) == GDB_IN_ACK && feed(&r, "-", 1) == GDB_IN_NACK, "+ and - are acks");
	CHECK(feed(&r, "$m1,2$?#3f", 10) == GDB_IN_PACKET && strcmp(r.buf, "?") == 0,
	      "a '$' inside a packet starts a new one");
	static char big[GDB_PACKET_MAX + 10];
	big[0] = '$';
	memset(big + 1, 'A', GDB_PACKET_MAX + 1);
	uint8_t sum = (uint8_t)((GDB_PACKET_MAX + 1) * 'A');
	size_t n = (size_t)GDB_PACKET_MAX + 2;
	n += (size_t)snprintf(big + n, sizeof(big) - n, "#%02x", sum);
	CHECK(feed(&r, big, n) == GDB_IN_BAD, "a packet longer than %d bytes is refused, not overflowed", GDB_PACKET_MAX);

	char out[64];
	size_t len = gdb_frame("a#b$c}d*e", 9, out);
	CHECK(len == 17 && memcmp(out, "$a}\x03" "b}\x04" "c}]d}\ne#", 15) == 0,
	      "frame escapes # $ } * as '}' and the byte xor 0x20");
	gdb_reader_init(&r);
	CHECK(feed(&r, out, len) == GDB_IN_PACKET && r.len == 13, "the reader takes a framed reply back (escapes left in)");
}

static void test_registers(void)
{
	memset(regs, 0, sizeof(regs));
	regs[0][0][0] = 0x11;
	regs[0][1][3] = 0x22;
	regs[0][2][9] = 0x33;
	CHECK(cmd("g") == GDB_REPLY &&
	          strcmp(reply, "1100000000000000" "00000022" "00000000000000000033") == 0,
	      "g: every register, little-endian hex, in description order (%s)", reply);
	CHECK(says("p1", "00000022"), "p1 reads one register");
	CHECK(says("P1=01020304", "OK") && regs[0][1][0] == 1 && regs[0][1][3] == 4, "P1= writes it");
	CHECK(says("P1=0102", "E22") && regs[0][1][0] == 1, "P with the wrong size is refused, nothing written");
	CHECK(cmd("p9") == GDB_REPLY && reply[0] == 'E', "p of a register the description lacks: error");
	CHECK(says("Hg2", "OK") && says("p0", "0000000000000000"), "Hg2 selects vCPU 1 for registers");
	CHECK(says("Hg3", "E22") && says("Hgzz", "E22"), "Hg of a thread that does not exist: E22");
	CHECK(says("G" "2200000000000000" "05000000" "00000000000000000044", "OK") && regs[1][0][0] == 0x22 &&
	          regs[1][1][0] == 5 && regs[1][2][9] == 0x44,
	      "G writes the whole file of the Hg vCPU");
	CHECK(says("Hg1", "OK"), "back to vCPU 0");
}

static void test_memory(void)
{
	for (int i = 0; i < 16; i++)
		mem[i] = (uint8_t)i;
	CHECK(says("m1000,4", "00010203"), "m reads memory as hex");
	CHECK(says("m2ffe,10", "0000"), "m stops short at the end of what is mapped");
	CHECK(says("m5000,4", "E14"), "m of unmapped memory: E14");
	CHECK(cmd("m1000,ffffffffffff") == GDB_REPLY && strlen(reply) == 2 * GDB_MEM_MAX,
	      "an absurd m length is capped at %d bytes", GDB_MEM_MAX);
	CHECK(says("M1000,2:aabb", "OK") && mem[0] == 0xaa && mem[1] == 0xbb, "M writes");
	CHECK(says("M1000,2:aa", "E22") && mem[0] == 0xaa, "M whose data is shorter than its length: refused");
	CHECK(says("M1000,99999999:00", "E22"), "M longer than a packet can carry: refused");
	const char x[] = "X1004,3:}\x03}]z";   /* '#', '}' escaped, then 'z' */
	CHECK(gdb_handle_packet(&s, x, sizeof(x) - 1, reply) == GDB_REPLY && strcmp(reply, "OK") == 0 &&
	          mem[4] == '#' && mem[5] == '}' && mem[6] == 'z',
	      "X writes binary data with '}' escapes");
	CHECK(says("X1004,0:", "OK"), "X of length 0 (GDB's probe) is OK");
	CHECK(says("X1004,5:ab", "E22"), "X whose data length differs from its count: refused");
	CHECK(says("m,", "E22") && says("mzz,1", "E22") && says("m1", "E22") && says("m11111111111111111,1", "E22"),
	      "malformed m packets: E22");
}

static void test_breakpoints(void)
{
	bp_calls = 0;
	CHECK(says("Z0,1000,1", "OK") && last_bp_type == GDB_BP_SW && last_bp_addr == 0x1000, "Z0 inserts a software breakpoint");
	CHECK(says("z2,1008,8", "OK") && last_bp_type == GDB_WP_WRITE, "z2 removes a write watchpoint");
	CHECK(says("Z2,1008,3", "E16"), "a target error comes back as its errno (EINVAL = E16)");
	CHECK(says("Z9,1000,1", "") && bp_calls == 3, "an unknown breakpoint type is unsupported (empty), not passed on");
	CHECK(says("Z0,1000", "E22") && bp_calls == 3, "Z without a kind: E22");
}

static void test_run_control(void)
{
	resumes = 0;
	CHECK(cmd("vCont;s:2;c") == GDB_RESUMED && resumes == 1 && last_run[1] == GDB_RUN_STEP &&
	          last_run[0] == GDB_RUN_CONTINUE,
	      "vCont;s:2;c steps vCPU 1, continues the others");
	CHECK(cmd("vCont;c") == GDB_RESUMED && last_run[0] == GDB_RUN_CONTINUE && last_run[1] == GDB_RUN_CONTINUE,
	      "vCont;c continues all");
	CHECK(cmd("vCont;C05:1") == GDB_RESUMED && last_run[0] == GDB_RUN_CONTINUE && last_run[1] == GDB_RUN_STOP,
	      "vCont;C05:1 continues vCPU 0 only (the signal is ignored)");
	CHECK(says("vCont;s:9", "E22") && resumes == 3, "vCont naming a thread that does not exist: E22, nothing runs");
	CHECK(says("vCont;x", "") && resumes == 3, "an unknown vCont action: unsupported");
	CHECK(says("vCont?", "vCont;c;C;s;S"), "vCont? lists c, C, s, S");
	CHECK(says("Hc2", "OK") && cmd("s") == GDB_RESUMED && last_run[1] == GDB_RUN_STEP, "s steps the Hc thread");

	struct gdb_stop st = { .kind = GDB_STOP_SWBREAK, .cpu = 1 };
	gdb_stop_reply(&s, &st, reply, sizeof(reply));
	CHECK(strcmp(reply, "T05thread:2;swbreak:;") == 0, "stop reply for a breakpoint on vCPU 1 (%s)", reply);
	CHECK(says("?", "T05thread:2;swbreak:;"), "? repeats the last stop");
	CHECK(says("qC", "QC2"), "the stopped vCPU is the current thread");
	st = (struct gdb_stop){ .kind = GDB_STOP_WATCH, .cpu = 0, .wtype = GDB_WP_ACCESS, .addr = 0x1008 };
	gdb_stop_reply(&s, &st, reply, sizeof(reply));
	CHECK(strcmp(reply, "T05thread:1;awatch:1008;") == 0, "stop reply for an access watchpoint (%s)", reply);
	st = (struct gdb_stop){ .kind = GDB_STOP_SIGNAL, .cpu = 0, .signal = 2 };
	gdb_stop_reply(&s, &st, reply, sizeof(reply));
	CHECK(strcmp(reply, "T02thread:1;") == 0, "^C stops with SIGINT");
	st = (struct gdb_stop){ .kind = GDB_STOP_EXITED, .status = 3 };
	gdb_stop_reply(&s, &st, reply, sizeof(reply));
	CHECK(strcmp(reply, "W03") == 0, "the VM's exit is W with its status");

	CHECK(cmd("D") == GDB_DETACHED && strcmp(reply, "OK") == 0 && detaches == 1, "D detaches with OK");
	CHECK(cmd("k") == GDB_KILLED && kills == 1, "k kills without a reply");
}

static void test_queries(void)
{
	CHECK(cmd("qSupported:multiprocess+;swbreak+") == GDB_REPLY && strstr(reply, "PacketSize=") &&
	          strstr(reply, "qXfer:features:read+") && strstr(reply, "swbreak+"),
	      "qSupported names packet size, target description and swbreak (%s)", reply);
	CHECK(says("qfThreadInfo", "m1,2") && says("qsThreadInfo", "l"), "two vCPUs are threads 1 and 2");
	CHECK(says("qAttached", "1"), "qAttached: attached to an existing VM");
	CHECK(says("T2", "OK") && says("T3", "E22"), "T: thread alive or not");
	CHECK(says("qThreadExtraInfo,2", "764350552031"), "thread 2 is described as 'vCPU 1' (hex)");
	char want[128];
	snprintf(want, sizeof(want), "l%s", xml);
	CHECK(says("qXfer:features:read:target.xml:0,1000", want), "the whole description in one 'l' reply");
	CHECK(says("qXfer:features:read:target.xml:0,5", "m<targ"), "part of it: 'm' and the bytes asked for");
	CHECK(says("qXfer:features:read:target.xml:ffff,10", "l"), "past its end: an empty 'l'");
	CHECK(says("qXfer:features:read:other.xml:0,10", "E00"), "another annex: E00");
	CHECK(says("QStartNoAckMode", "OK") && s.no_ack, "no-ack mode");
	CHECK(says("qTStatus", "") && says("vMustReplyEmpty", "") && says("!", ""), "unknown packets: empty reply");
	CHECK(cmd("") == GDB_REPLY && reply[0] == 0, "an empty packet: empty reply");
}

int main(void)
{
	gdb_session_init(&s, &ops, NULL);
	test_framing();
	test_registers();
	test_memory();
	test_breakpoints();
	test_run_control();
	test_queries();
	return check_summary();
}
