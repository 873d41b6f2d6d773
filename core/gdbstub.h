/*
 * GDB remote stub (bhyve's -G [w][ADDR:]PORT; keys gdb.port, gdb.address,
 * gdb.wait).  One debugger at a time, all-stop: a stop of one vCPU stops
 * every vCPU.  Protocol handling is in core/gdb_proto.c, register and
 * memory access in core/vcpu_regs.c; this file owns the socket, the
 * breakpoints and the vCPUs' run control.
 */
#ifndef HYVE_GDBSTUB_H
#define HYVE_GDBSTUB_H

#include <stdbool.h>

#include "vm.h"

/* -G's value into gdb.* keys; 0, or -1 with a one-line error. */
int gdb_parse_option(const char *opt, char *err, size_t errlen);
/* Bind gdb.address:gdb.port if set, before the VM is created (a port in use is a configuration error). */
int gdb_listen(char *err, size_t errlen);
/* Serve it (before the vCPUs start; gdb.wait holds them). 0 or -1 (error logged). */
int gdb_start(struct hyve_vm *vm);
/* At exit, after the vCPUs stopped: a debugger waiting for a stop hears that the VM exited. */
void gdb_stop(void);
/* A debugger is connected: checkpoint and migration refuse (a vmstate blocker). */
bool gdb_attached(void);

/* vCPU threads: a KVM_EXIT_DEBUG stop.  0 handled, -1 not the debugger's. */
int gdb_vcpu_debug_exit(struct vcpu *vcpu, const struct vm_exit *vme);
/* vCPU threads on emulating hosts: an INT3 KVM's emulator rejected; true if it was a debugger breakpoint (now a stop). */
bool gdb_vcpu_emul_fail(struct vcpu *vcpu, const struct vm_exit *vme);

#endif
