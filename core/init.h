/*
 * Init-level registration (kvmtool's model): each subsystem or device
 * registers a function with a level from its own file, through a
 * constructor, and main() runs them level by level.  Nobody keeps a
 * hand-written list of devices.
 */
#ifndef HYVE_INIT_H
#define HYVE_INIT_H

struct vmctx;

enum init_level {
	INIT_PLATFORM = 1,   /* PIO/MMIO devices of the PC platform (UART, RTC, ...) */
	INIT_PCI = 2,        /* PCI bus and the devices from pci.* keys */
	INIT_FIRMWARE = 3,   /* tables that describe what the levels above built */
	INIT_LATE = 4,
};

typedef int (*init_fn_t)(struct vmctx *ctx);

void init_register(enum init_level level, const char *name, init_fn_t fn);
/* Run all registered functions in level order; first failure is returned. */
int init_run_all(struct vmctx *ctx);

#define hyve_init(level, fn)                                              \
	static void __attribute__((constructor)) fn##_register(void)      \
	{ init_register(level, #fn, fn); }

#endif
