/*
 * Checkpoint files (format: docs/snapshot.md).  A checkpoint holds the
 * configuration, every vmstate section and guest RAM; restore rebuilds the
 * VM from the configuration in the file and then loads the sections.
 */
#ifndef HYVE_CHECKPOINT_H
#define HYVE_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>

#include "vm.h"

/*
 * Pause the vCPUs, quiesce devices, write PATH (atomically: a new temporary
 * file, mode 0600, renamed into place), then resume unless `suspend`.  0
 * (err then has a one-line summary: size, pause time) or -1 with err; on
 * any error, a suspend's included, the VM keeps running.
 * PATH must be a regular file if it exists (not a device, FIFO, directory).
 */
int checkpoint_save(struct hyve_vm *vm, const char *path, bool suspend, char *err, size_t errlen);

/*
 * Restore, step 1: read and verify the whole file except RAM contents
 * (header, every section's checksum) and load its configuration into the
 * config tree.  Nothing is created yet, so a bad file changes nothing.
 */
int checkpoint_open(const char *path, char *err, size_t errlen);
/*
 * Step 2, once the VM is built from that configuration and its vCPUs
 * exist: map or copy RAM and load the vCPU, chip and device state.
 */
int checkpoint_restore(struct hyve_vm *vm, char *err, size_t errlen);

#endif
