/*
 * The test guest's NVMe pieces shared by test=nvme (tnvme.c, which owns
 * them) and test=nvmebench (nvmebench.c): queue entry layouts, the
 * controller bring-up and polled admin commands.
 */
#ifndef TG_NVME_H
#define TG_NVME_H

#include "kernel.h"

struct sqe {
	u32 cdw0, nsid;
	u64 rsvd, mptr, prp1, prp2;
	u32 cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
};

struct cqe {
	u32 dw0, dw1;
	u16 sqhd, sqid, cid, status;
};

extern u64 nvme_regs;   /* BAR 0 */
extern u32 nvme_dstrd;  /* CAP.DSTRD: doorbell i at 0x1000 + i * (4 << dstrd) */

/* The first NVMe controller (class 01:08:02): reset, a 16-entry admin
 * queue pair, enabled; prints "T: BB:DD.F (VVVV:DDDD) vs ..." and fails
 * test T on any error.  Returns CAP.MQES. */
u32 nvme_bringup(const char *t);
/* One admin command, polled: its status field (bits 15:1), -1 on a timeout. */
int nvme_admin(u8 opc, u32 nsid, u64 prp1, u32 cdw10, u32 cdw11, u32 *dw0);

#endif
