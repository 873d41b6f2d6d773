/*
 * The GDB remote serial protocol, without sockets or vCPUs: packet framing
 * and the commands hyve's stub answers (core/gdbstub.c supplies the target
 * through struct gdb_target_ops).  Kept apart so a fuzz target and unit
 * tests drive it with made-up targets.
 *
 * Threads are vCPUs: GDB thread id N+1 is vCPU N (0 and -1 are GDB's
 * "any" and "all").  All-stop: every stop reply stands for the whole VM.
 */
#ifndef HYVE_GDB_PROTO_H
#define HYVE_GDB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest packet payload we accept and announce (qSupported PacketSize). */
#define GDB_PACKET_MAX 16384
/* Largest memory transfer per m/M/X packet (binary worst case fits). */
#define GDB_MEM_MAX 4096

/* ---- framing ---- */

enum gdb_input {
	GDB_IN_NONE,       /* byte consumed, nothing complete yet */
	GDB_IN_PACKET,     /* a packet with a good checksum: r->buf[0..r->len) */
	GDB_IN_BAD,        /* a packet with a bad checksum or too long: answer '-' */
	GDB_IN_INTERRUPT,  /* ^C outside a packet */
	GDB_IN_ACK,        /* '+' */
	GDB_IN_NACK,       /* '-': resend the last reply */
};

struct gdb_reader {
	int state;
	bool overflow;
	uint8_t sum, got;
	size_t len;
	char buf[GDB_PACKET_MAX + 1];   /* NUL-terminated payload */
};
void gdb_reader_init(struct gdb_reader *r);
enum gdb_input gdb_reader_feed(struct gdb_reader *r, uint8_t byte);

/* "$payload#cs" with '#', '$', '}' and '*' escaped, into out (size >= 2*len+5). Returns its length. */
size_t gdb_frame(const char *payload, size_t len, char *out);

/* ---- the target ---- */

enum gdb_bp_type { GDB_BP_SW = 0, GDB_BP_HW = 1, GDB_WP_WRITE = 2, GDB_WP_READ = 3, GDB_WP_ACCESS = 4 };

/* Why the VM stopped. */
enum gdb_stop_kind {
	GDB_STOP_SIGNAL,    /* attach, ^C (signal 2), or a step (signal 5) */
	GDB_STOP_SWBREAK,
	GDB_STOP_HWBREAK,
	GDB_STOP_WATCH,     /* addr: the watched address; wtype: GDB_WP_* */
	GDB_STOP_EXITED,    /* the VM ended with status */
};

struct gdb_stop {
	enum gdb_stop_kind kind;
	int cpu;
	int signal;
	uint64_t addr;
	int wtype;
	int status;
};

/* What to do with each vCPU on resume. */
enum gdb_run { GDB_RUN_STOP = 0, GDB_RUN_CONTINUE, GDB_RUN_STEP };

struct gdb_target_ops {
	int ncpus;
	/* Register n of the vCPU in GDB's target-description order into val
	 * (little-endian); returns its size in bytes, 0 if there is no such
	 * register, -1 if it cannot be read.  cpu -1: only the size. */
	int (*reg_read)(void *o, int cpu, int n, uint8_t *val);
	int (*reg_write)(void *o, int cpu, int n, const uint8_t *val, int size);
	/* Guest memory by the vCPU's virtual addresses: bytes done (short at an unmapped page). */
	size_t (*mem_read)(void *o, int cpu, uint64_t addr, uint8_t *buf, size_t len);
	size_t (*mem_write)(void *o, int cpu, uint64_t addr, const uint8_t *buf, size_t len);
	/* 0, or -1 with errno (ENOSPC: no free debug register, EINVAL: bad length/alignment). */
	int (*bp_insert)(void *o, int cpu, enum gdb_bp_type type, uint64_t addr, uint64_t kind);
	int (*bp_remove)(void *o, int cpu, enum gdb_bp_type type, uint64_t addr, uint64_t kind);
	/* Let the VM go on: run[i] for each vCPU.  The stub replies when it stops again. */
	void (*resume)(void *o, const enum gdb_run *run);
	void (*detach)(void *o);
	void (*kill)(void *o);
	/* The target description (XML) GDB reads through qXfer:features:read. */
	const char *target_xml;
};

struct gdb_session {
	const struct gdb_target_ops *ops;
	void *opaque;
	int g_cpu;             /* Hg: registers and memory */
	int c_cpu;             /* Hc: plain c/s packets */
	bool no_ack;           /* QStartNoAckMode accepted */
	struct gdb_stop last;  /* for '?' */
};

enum gdb_action {
	GDB_REPLY,      /* send reply (possibly empty: "not supported") */
	GDB_RESUMED,    /* the VM runs: no reply until it stops */
	GDB_DETACHED,   /* send reply, then drop the client */
	GDB_KILLED,     /* drop the client, no reply */
};

void gdb_session_init(struct gdb_session *s, const struct gdb_target_ops *ops, void *opaque);
/* Handle one packet payload (NUL-terminated, len bytes); reply is NUL-terminated, at most GDB_PACKET_MAX. */
enum gdb_action gdb_handle_packet(struct gdb_session *s, const char *pkt, size_t len, char *reply);
/* The stop reply for st ("T05thread:01;swbreak:;", "W01"); remembered for '?'. */
void gdb_stop_reply(struct gdb_session *s, const struct gdb_stop *st, char *reply, size_t n);

#endif
