/*
 * MMIO dispatch (bhyve's mem.h).  Ranges are kept sorted; lookups are a
 * binary search under a read lock so vCPUs do not serialize on it.
 */
#ifndef HYVE_MMIO_H
#define HYVE_MMIO_H

#include <stdbool.h>
#include <stdint.h>

struct vcpu;

typedef int (*mmio_func_t)(struct vcpu *vcpu, bool write, uint64_t addr,
                           int size, uint64_t *val, void *arg);

struct mmio_range {
	const char *name;
	uint64_t base;
	uint64_t size;
	mmio_func_t handler;
	void *arg;
};

int register_mmio(const struct mmio_range *mr);   /* -1 on overlap */
int unregister_mmio(uint64_t base);
/* Returns 0 handled, 1 no device there (reads give all ones), -1 fatal. */
int mmio_dispatch(struct vcpu *vcpu, bool write, uint64_t addr, int size, uint64_t *val);

#endif
