/*
 * Port I/O dispatch: a 64K table of handler pointers, so a PIO exit costs
 * one array lookup.  Registration can happen while vCPUs run (PCI I/O BARs
 * move when the guest reprograms them), hence the rwlock.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "inout.h"
#include "log.h"

static struct inout_port *handlers[65536];
static bool strict;

void inout_set_strict(bool on)
{
	strict = on;
}
static pthread_rwlock_t inout_lock = PTHREAD_RWLOCK_INITIALIZER;

int register_inout(const struct inout_port *iop)
{
	if (iop->size == 0 || (uint32_t)iop->port + iop->size > 65536)
		return -1;
	struct inout_port *copy = malloc(sizeof(*copy));
	if (!copy)
		return -1;
	*copy = *iop;
	pthread_rwlock_wrlock(&inout_lock);
	for (uint32_t p = iop->port; p < (uint32_t)iop->port + iop->size; p++) {
		if (handlers[p]) {
			pthread_rwlock_unlock(&inout_lock);
			log_err("I/O port 0x%x: %s overlaps %s", p, iop->name, handlers[p]->name);
			free(copy);
			return -1;
		}
	}
	for (uint32_t p = iop->port; p < (uint32_t)iop->port + iop->size; p++)
		handlers[p] = copy;
	pthread_rwlock_unlock(&inout_lock);
	return 0;
}

int unregister_inout(uint16_t port, uint16_t size)
{
	struct inout_port *h;
	pthread_rwlock_wrlock(&inout_lock);
	h = handlers[port];
	if (!h || h->port != port || h->size != size) {
		pthread_rwlock_unlock(&inout_lock);
		return -1;
	}
	for (uint32_t p = port; p < (uint32_t)port + size; p++)
		handlers[p] = NULL;
	pthread_rwlock_unlock(&inout_lock);
	free(h);
	return 0;
}

int inout_dispatch(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val)
{
	/*
	 * Copy the entry and drop the lock before calling: a handler may
	 * (un)register ports itself, e.g. a PCI config write moving an I/O BAR.
	 */
	struct inout_port h = { 0 };
	pthread_rwlock_rdlock(&inout_lock);
	if (handlers[port])
		h = *handlers[port];
	pthread_rwlock_unlock(&inout_lock);
	/* An access straddling two handlers is treated as unclaimed. */
	if (h.handler && (uint32_t)port + (uint32_t)bytes <= (uint32_t)h.port + h.size) {
		return h.handler(vcpu, in, port, bytes, val, h.arg);
	} else if (strict) {
		log_err("unhandled %s%c 0x%x (x86.strictio)", in ? "in" : "out", "bw?l"[bytes - 1], port);
		return -1;
	} else if (in) {
		*val = bytes == 4 ? 0xffffffffu : (1u << (bytes * 8)) - 1;
		log_debug("unhandled in%c 0x%x", "bw?l"[bytes - 1], port);
	} else {
		log_debug("unhandled out%c 0x%x <- 0x%x", "bw?l"[bytes - 1], port, *val);
	}
	return 0;
}
