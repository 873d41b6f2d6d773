#ifndef HYVE_LINUX_ADAPT_H
#define HYVE_LINUX_ADAPT_H

#include <stddef.h>

struct emulator_probe;

/* Kernel parameters for a Linux guest on an emulating host (space-separated). */
void linux_adapt_cmdline(const struct emulator_probe *p, int ncpus, unsigned tsc_khz, char *buf, size_t n);

#endif
