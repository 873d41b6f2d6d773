/*
 * test=ahcibench: AHCI disk throughput from the guest, for bench/bench.py,
 * as test=blkbench is for virtio-blk, with the same phases and lines
 * (prefix "ahcibench"): sequential reads of `bs=` KiB (default 1024) with
 * `qd=` commands in flight (default 4), random 4 KiB reads with `rqd=` in
 * flight (default 16), sequential writes like the reads, `ms=` each.
 *
 * The first disk port of the first HBA, NCQ (READ/WRITE FPDMA QUEUED):
 * the tag is the command slot, each slot has its own command table with
 * one PRD over its buffer.  Submitted and polled at CPL3: new commands
 * are issued with one PxSACT and one PxCI write per batch, completions
 * seen as PxSACT bits clearing (a register read, as a driver's interrupt
 * handler does; interrupts stay off).
 */
#include "ahci.h"
#include "bench.h"
#include "kernel.h"
#include "tests.h"

#define MAXDEPTH 32

static struct cmdtbl tbl[MAXDEPTH] __attribute__((aligned(128)));
static u16 ident[256] __attribute__((aligned(4096)));

struct ajob {
	u64 sact, ci, is;	/* the port's register addresses */
	u8 *bufs;		/* depth * bs */
	u32 bs, depth;
	u8 cmd;			/* 0x60 read, 0x61 write FPDMA QUEUED */
	struct bench_pos pos;	/* in sectors */
	u64 duration;		/* TSC ticks */
	/* results */
	u64 done, errors, ticks;
};

static const char *T = "ahcibench";

/* ---- CPL3: submit and poll ---- */

USER_TEXT static void prepare(struct ajob *j, u32 slot)
{
	u64 lba = bench_next(&j->pos);
	u32 count = j->bs / 512;
	/* FPDMA: the sector count goes in the feature field, the NCQ tag in the count field. */
	ahci_fis(tbl[slot].cfis, j->cmd, (u16)count, lba, (u16)(slot << 3));
	ahci_clist[slot].dw0 = 5 | (j->cmd == 0x61 ? 1u << 6 : 0) | 1u << 16;	/* 5-dword FIS, one PRD */
	ahci_clist[slot].prdbc = 0;
}

USER_TEXT static u64 u_bench(u64 arg)
{
	struct ajob *j = (struct ajob *)arg;
	u64 t0 = rdtsc(), end = t0 + j->duration, last = t0;
	u32 outstanding = 0, issue = 0;
	for (u32 s = 0; s < j->depth; s++) {
		prepare(j, s);
		issue |= 1u << s;
	}
	while (issue || outstanding) {
		if (issue) {
			barrier();
			*(volatile u32 *)j->sact = issue;
			*(volatile u32 *)j->ci = issue;
			outstanding |= issue;
			issue = 0;
		}
		u32 done = outstanding & ~*(volatile u32 *)j->sact;
		if (!done) {
			if (*(volatile u32 *)j->is & (1u << 30))
				return 1;	/* task file error: NCQ stops on it */
			__asm__ __volatile__("pause" ::: "memory");
			continue;
		}
		last = rdtsc();
		outstanding &= ~done;
		for (u32 s = 0; s < j->depth; s++) {
			if (!(done & (1u << s)))
				continue;
			j->done++;
			if ((s64)(last - end) < 0) {
				prepare(j, s);
				issue |= 1u << s;
			}
		}
	}
	j->ticks = last - t0;
	return 0;
}

static void phase(const char *name, bool write, u32 depth, void *arg)
{
	struct ajob *j = arg;
	j->cmd = write ? 0x61 : 0x60;
	j->bs = j->pos.bs;
	j->depth = depth;
	j->done = j->errors = j->ticks = 0;
	for (u32 s = 0; s < j->depth; s++) {
		memset(&tbl[s], 0, sizeof(tbl[s]));
		tbl[s].prdt[0].dba = (u32)(u64)(j->bufs + (u64)s * j->bs);
		tbl[s].prdt[0].dbc = j->bs - 1;		/* one PRD: up to 4 MiB */
		ahci_clist[s].ctba = (u32)(u64)&tbl[s];
		ahci_clist[s].ctbau = 0;
	}
	if (bench_run(T, name, u_bench, j)) {
		j->errors++;
		printf("%s: %s: a command failed (task file 0x%x)\n", T, name, mmio_read32(j->is - P_IS + P_TFD));
	}
	bench_report(T, name, j->done, j->bs, j->ticks, j->depth, j->errors);
}

static void t_ahcibench(void)
{
	struct bench_opts o;
	bench_setup(T, MAXDEPTH, 0, &o);
	u32 pi = ahci_bringup(T);
	int port = -1;
	for (int p = 0; p < 32 && port < 0; p++)
		if ((pi & (1u << p)) && ahci_port_attach(p) == 0x101)
			port = p;
	if (port < 0)
		test_fail(T, "no disk on any port");
	int st = ahci_cmd(port, 0xec, 0, 0, 0, ident, 512, false, NULL);   /* IDENTIFY DEVICE */
	if (st)
		test_fail(T, "IDENTIFY DEVICE: task file 0x%x", st);
	u64 sectors = (u64)ident[100] | (u64)ident[101] << 16 | (u64)ident[102] << 32 | (u64)ident[103] << 48;
	u32 depth = (ident[75] & 31) + 1;
	if (!(ident[76] & (1u << 8)))
		test_fail(T, "the disk does not offer NCQ (IDENTIFY word 76: 0x%x)", ident[76]);
	if (o.qd > depth || o.rqd > depth)
		test_fail(T, "NCQ queue depth %u: qd/rqd larger", depth);
	printf("%s: port %d: %lu sectors (%lu MiB), ncq depth %u, %lu ms per phase, buffers at 0x%lx\n", T, port,
	       sectors, sectors >> 11, depth, o.ms, o.base);
	if (sectors < o.bs / 512 * o.qd)
		test_fail(T, "disk too small");

	struct ajob j = { .sact = abar + PR(port, P_SACT), .ci = abar + PR(port, P_CI), .is = abar + PR(port, P_IS),
	                  .bufs = (u8 *)o.base, .duration = o.ms * tsc_khz(), .pos = { .units = sectors, .unit = 512 } };
	bench_phases(&o, true, &j.pos, phase, &j);
	ahci_port_stop(port);
}
GUEST_TEST(ahcibench, t_ahcibench);
