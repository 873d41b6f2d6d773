/* QEMU's isa-debugcon at I/O 0x402 (devices/debugcon.c). */
#ifndef HYVE_DEBUGCON_H
#define HYVE_DEBUGCON_H

#include <stdbool.h>
#include <stdint.h>

#define DEBUGCON_PORT 0x402

/* A byte access to DEBUGCON_PORT: true if the debug console took it. */
bool debugcon_access(bool in, uint32_t *val);

#endif
