/*
 * Live migration over TCP (protocol and failure rules: docs/migration.md).
 *
 * Source: control commands "migrate HOST:PORT" (stop-and-copy),
 * "migrate-live HOST:PORT" (pre-copy with KVM dirty logging) and
 * "migrate-status", run from hyvectl.
 * Destination: hyve -R [ADDR:]PORT: migration_accept() before the VM is
 * built (the configuration arrives with the connection), then
 * migration_receive() once it is.
 */
#ifndef HYVE_MIGRATION_H
#define HYVE_MIGRATION_H

#include <stddef.h>

#include "vm.h"

/* Register the source-side control commands. */
void migration_register_commands(void);

/*
 * Destination, step 1: listen on [ADDR:]PORT, accept one source, check its
 * protocol version, and load the configuration it sends into the config
 * tree.  0, or -1 with err.
 */
int migration_accept(const char *addrport, char *err, size_t errlen);
/* Step 1 on a stream already connected (and authenticated): one stream only. */
int migration_accept_fd(int fd, char *err, size_t errlen);
/*
 * Step 2, with the VM built from that configuration and vCPUs created:
 * compatibility check, RAM, device and vCPU state; confirms to the source
 * when the VM is ready to run.  On failure the source is told why (when it
 * is still there) and the caller exits with status 4.
 */
int migration_receive(struct hyve_vm *vm, char *err, size_t errlen);
/* Refuse an incoming VM between the two steps (e.g. the control socket is taken). */
void migration_refuse(const char *reason);

#endif
