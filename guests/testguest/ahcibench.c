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
#include "kernel.h"
#include "tests.h"

#define MAXDEPTH 32
#define RAND_BS  4096

static struct cmdtbl tbl[MAXDEPTH] __attribute__((aligned(128)));
static u16 ident[256] __attribute__((aligned(4096)));

struct ajob {
	u64 sact, ci, is;	/* the port's register addresses */
	u8 *bufs;		/* depth * bs */
	u32 bs, depth;
	u8 cmd;			/* 0x60 read, 0x61 write FPDMA QUEUED */
	bool random;
	u64 sectors;
	u64 duration;		/* TSC ticks */
	u64 next;		/* sequential: next sector; random: LCG state */
	/* results */
	u64 done, errors, ticks;
};

static const char *T = "ahcibench";

/* ---- CPL3: submit and poll ---- */

USER_TEXT static u64 next_lba(struct ajob *j)
{
	u64 per = j->bs / 512;
	if (j->random) {
		j->next = j->next * 6364136223846793005UL + 1442695040888963407UL;
		return ((j->next >> 17) % (j->sectors / per)) * per;
	}
	u64 l = j->next;
	if (l + per > j->sectors)
		l = 0;
	j->next = l + per;
	return l;
}

USER_TEXT static void prepare(struct ajob *j, u32 slot)
{
	u64 lba = next_lba(j);
	u32 count = j->bs / 512;
	u8 *f = tbl[slot].cfis;
	f[0] = 0x27;			/* register FIS, host to device */
	f[1] = 0x80;			/* command */
	f[2] = j->cmd;
	f[3] = (u8)count;		/* FPDMA: the sector count is in the feature field */
	f[4] = (u8)lba;
	f[5] = (u8)(lba >> 8);
	f[6] = (u8)(lba >> 16);
	f[7] = 0x40;
	f[8] = (u8)(lba >> 24);
	f[9] = (u8)(lba >> 32);
	f[10] = (u8)(lba >> 40);
	f[11] = (u8)(count >> 8);
	f[12] = (u8)(slot << 3);	/* NCQ tag */
	f[13] = 0;
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

static void phase(const char *name, struct ajob *j)
{
	printf("%s: %s start\n", T, name);
	j->done = j->errors = j->ticks = 0;
	for (u32 s = 0; s < j->depth; s++) {
		memset(&tbl[s], 0, sizeof(tbl[s]));
		tbl[s].prdt[0].dba = (u32)(u64)(j->bufs + (u64)s * j->bs);
		tbl[s].prdt[0].dbc = j->bs - 1;		/* one PRD: up to 4 MiB */
		ahci_clist[s].ctba = (u32)(u64)&tbl[s];
		ahci_clist[s].ctbau = 0;
	}
	u64 r = user_run(u_bench, (u64)j, 0);
	if (r == ~0UL)
		test_fail(T, "%s: CPL3 loop took exception %lu at rip %lx", name, user_fault_vec, user_fault_rip);
	if (r)
		j->errors++;
	printf("%s: %s: %lu requests of %u bytes in %lu us, qd %u, %lu errors\n", T, name, j->done, j->bs,
	       tsc_to_us(j->ticks), j->depth, j->errors);
	if (j->errors)
		test_fail(T, "%s: a command failed (task file 0x%x)", name, mmio_read32(j->is - P_IS + P_TFD));
}

static void t_ahcibench(void)
{
	u64 ms = 1000, bs_kib = 1024, qd = 4, rqd = 16;
	cmdline_get_u64("ms", &ms);
	cmdline_get_u64("bs", &bs_kib);
	cmdline_get_u64("qd", &qd);
	cmdline_get_u64("rqd", &rqd);
	if (qd < 1 || qd > MAXDEPTH || rqd < 1 || rqd > MAXDEPTH)
		test_fail(T, "qd/rqd must be 1..%u", MAXDEPTH);
	if (bs_kib < 4 || bs_kib > 1024 || (bs_kib & (bs_kib - 1)))
		test_fail(T, "bs=%lu: a power of two from 4 to 1024 KiB", bs_kib);

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
	if (qd > depth || rqd > depth)
		test_fail(T, "NCQ queue depth %u: qd/rqd larger", depth);

	u64 bs = bs_kib << 10;
	u64 need = qd * bs > rqd * RAND_BS ? qd * bs : rqd * RAND_BS;
	u64 base = ALIGN_UP(boot.reserved_end, 2UL << 20);
	if (base < (16UL << 20))
		base = 16UL << 20;
	if (!ram_range_ok(base, need) || base + need > 0xc0000000UL)
		test_fail(T, "%lu KiB of buffers at 0x%lx is not RAM", need >> 10, base);
	printf("%s: port %d: %lu sectors (%lu MiB), ncq depth %u, %lu ms per phase, buffers at 0x%lx\n", T, port,
	       sectors, sectors >> 11, depth, ms, base);
	if (sectors < bs / 512 * qd)
		test_fail(T, "disk too small");

	struct ajob j = { .sact = abar + PR(port, P_SACT), .ci = abar + PR(port, P_CI), .is = abar + PR(port, P_IS),
	                  .bufs = (u8 *)base, .sectors = sectors, .duration = ms * tsc_khz() };
	j.cmd = 0x60;
	j.bs = (u32)bs;
	j.depth = (u32)qd;
	phase("seqread", &j);
	j.bs = RAND_BS;
	j.depth = (u32)rqd;
	j.random = true;
	j.next = 0x9e3779b97f4a7c15UL;
	phase("randread", &j);
	j.cmd = 0x61;
	j.bs = (u32)bs;
	j.depth = (u32)qd;
	j.random = false;
	j.next = 0;
	phase("seqwrite", &j);
	ahci_port_stop(port);
}
GUEST_TEST(ahcibench, t_ahcibench);
