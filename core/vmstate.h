/*
 * The VM's state outside guest RAM as a list of named, versioned sections:
 * one per vCPU, the in-kernel chips, and every device.  Checkpoint files
 * and the migration stream both carry these sections; this file knows what
 * is in them, not how they travel.
 *
 * Order of operations (the bhyve calls' lesson): vcpus_pause() first, then
 * vmstate_quiesce() so in-flight device I/O completes while no vCPU can
 * touch a descriptor, then vmstate_save(), then vmstate_resume() and
 * vcpus_resume().
 */
#ifndef HYVE_VMSTATE_H
#define HYVE_VMSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"
#include "vm.h"

#define VMSTATE_NAME_MAX 32

struct vm_section {
	char name[VMSTATE_NAME_MAX];
	uint32_t version;
	struct snap_buf data;
};

struct vm_sections {
	struct vm_section *s;
	int n, cap;
};

void vm_sections_free(struct vm_sections *l);
struct vm_section *vm_sections_add(struct vm_sections *l, const char *name, uint32_t version);
const struct vm_section *vm_sections_find(const struct vm_sections *l, const char *name);

/* 0, or -1 naming the first device that has no save support (or the blocker that says no). */
int vmstate_check_supported(char *err, size_t errlen);
/*
 * Something that forbids saving while it lasts (an attached debugger):
 * fn returns true and says why in err.  Checked when a checkpoint or a
 * migration starts.
 */
void vmstate_add_blocker(bool (*fn)(char *err, size_t errlen));
/* Devices: stop taking new requests, finish in-flight ones / start again. */
void vmstate_quiesce(void);
void vmstate_resume(void);
/* Everything but RAM, vCPUs paused and devices quiesced. */
int vmstate_save(struct hyve_vm *vm, struct vm_sections *out, char *err, size_t errlen);
/*
 * Load into a VM configured from the same config, vCPUs created but not
 * started.  Every section must be present and every device accounted for;
 * err names the section that failed.
 */
int vmstate_load(struct hyve_vm *vm, const struct vm_sections *in, char *err, size_t errlen);

#endif
