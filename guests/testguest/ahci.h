/*
 * The test guest's AHCI pieces shared by test=ahci (tahci.c, which owns
 * them) and test=ahcibench (ahcibench.c): command list and table layouts,
 * port registers, HBA and port bring-up.
 */
#ifndef TG_AHCI_H
#define TG_AHCI_H

#include "kernel.h"

struct cmdhdr {
	u32 dw0, prdbc, ctba, ctbau, rsvd[4];
};

struct cmdtbl {
	u8 cfis[64], acmd[16], rsvd[48];
	struct {
		u32 dba, dbau, rsvd, dbc;
	} prdt[8];
};

#define PR(p, off) (0x100u + (u32)(p) * 0x80u + (off))   /* port p's register */
enum { P_CLB = 0, P_CLBU = 4, P_FB = 8, P_FBU = 0xc, P_IS = 0x10, P_CMD = 0x18, P_TFD = 0x20, P_SIG = 0x24,
       P_SSTS = 0x28, P_SERR = 0x30, P_SACT = 0x34, P_CI = 0x38 };

extern u64 abar;   /* BAR 5 */
extern struct cmdhdr ahci_clist[32];   /* the command list and received FISes test=ahci's ports use */
extern u8 ahci_rfis[256];

/* The first AHCI HBA (class 01:06:01): reset, AHCI mode, interrupts off;
 * prints "T: BB:DD.F (VVVV:DDDD) vs ..." and fails test T on errors.
 * Returns PI (implemented ports). */
u32 ahci_bringup(const char *t);
/* Port p on ahci_clist and ahci_rfis, started if a device is present:
 * its signature (0x101 disk, 0xeb140101 ATAPI), 0 when the link is down. */
u32 ahci_port_attach(int p);
void ahci_port_stop(int p);
/* A host-to-device register FIS (command, feature, 48-bit LBA, count) at f. */
USER_TEXT void ahci_fis(u8 *f, u8 cmd, u16 feat, u64 lba, u16 count);
/* One polled command in slot 0 of ahci_clist (ATA command, feature, LBA,
 * count; len bytes at data; atapi: the packet): 0, or the task file
 * (status | error << 8) on an error. */
int ahci_cmd(int p, u8 cmd, u16 feat, u64 lba, u16 count, void *data, u32 len, bool write, const u8 *atapi);
void ahci_port_start(int p);

#endif
