/*
 * What the guest's disk benchmarks share (vblkbench.c, nvmebench.c,
 * ahcibench.c): their options, their data buffers, where the next request
 * goes, and the result line bench/bench.py reads:
 *
 *   TEST: PHASE start
 *   TEST: PHASE: N requests of B bytes in T us, qd Q, E errors
 */
#ifndef TG_BENCH_H
#define TG_BENCH_H

#include "kernel.h"

#define BENCH_RAND_BS 4096   /* random reads: 4 KiB */

struct bench_opts {
	u64 ms;        /* ms= per phase (1000) */
	u64 bs;        /* bs= KiB of the sequential phases (1024), in bytes */
	u64 qd, rqd;   /* qd= / rqd=: requests in flight, sequential (4) and random (16) */
	u64 base;      /* the data buffers: enough for qd * bs and rqd * 4 KiB */
};

/* Options checked (depth 1..maxdepth, bs a power of two from 4 to 1024
 * KiB) and buffers placed after the image, at 16 MiB or above, below
 * 3 GiB; fails test t otherwise.  bs_max (0: none) cuts bs first. */
void bench_setup(const char *t, u32 maxdepth, u64 bs_max, struct bench_opts *o);

/* Where the next request goes, in units of `unit` bytes on a device of
 * `units`: sequential from *state, or uniformly random (an LCG in *state),
 * aligned to the request.  Called at CPL3. */
struct bench_pos {
	u64 state, units;
	u32 unit, bs;
	bool random;
};
USER_TEXT u64 bench_next(struct bench_pos *p);

/* The three phases in order: seqread (bs, qd), randread (4 KiB, rqd) and,
 * when writes, seqwrite (bs, qd).  pos (the job's) is set for each; fn runs
 * one with the given depth. */
typedef void (*bench_phase_fn)(const char *name, bool write, u32 depth, void *arg);
void bench_phases(const struct bench_opts *o, bool writes, struct bench_pos *pos, bench_phase_fn fn, void *arg);

/* "T: PHASE start", then fn(job) at CPL3: its return value (test t
 * fails if the loop took an exception). */
u64 bench_run(const char *t, const char *phase, u64 (*fn)(u64), void *job);

/* The phase's result line; fails test t when some requests failed. */
void bench_report(const char *t, const char *phase, u64 done, u32 bs, u64 ticks, u32 depth, u64 errors);

#endif
