/*
 * Port I/O dispatch (bhyve's inout.h).  Devices register handlers for port
 * ranges; the vCPU loop calls inout_dispatch() for every PIO exit.  Reads
 * of unclaimed ports return all ones and writes are dropped, as on a PC.
 */
#ifndef HYVE_INOUT_H
#define HYVE_INOUT_H

#include <stdbool.h>
#include <stdint.h>

struct vcpu;

/*
 * in: true for IN.  bytes: 1, 2 or 4.  *val: the value written, or where
 * the handler stores the value read.  Return 0, or -1 for a fatal error.
 */
typedef int (*inout_func_t)(struct vcpu *vcpu, bool in, uint16_t port,
                            int bytes, uint32_t *val, void *arg);

struct inout_port {
	const char *name;
	uint16_t port;
	uint16_t size;       /* number of ports */
	inout_func_t handler;
	void *arg;
};

int register_inout(const struct inout_port *iop);     /* -1 on overlap */
int unregister_inout(uint16_t port, uint16_t size);
int inout_dispatch(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val);
/*
 * x86.strictio (-e): an access to a port nothing emulates makes
 * inout_dispatch fail (the VM exits with status 4) instead of reading
 * all-ones / dropping the write.
 */
void inout_set_strict(bool strict);

#endif
