/*
 * Device state for checkpoint/restore and migration.
 *
 * Every device that has state outside guest RAM keeps a save hook and a
 * load hook beside its own code and registers them (non-PCI devices with
 * snapshot_register(), PCI models through pe_snapshot/pe_restore in their
 * struct pci_devemu, virtio models through vc_snapshot/vc_restore).  A
 * checkpoint refuses, naming the device, if any device lacks them.
 *
 * Hooks write CONTENTS, never host pointers or fds: explicit fixed-width
 * little-endian fields through the sb_* writer, read back through the sr_*
 * reader.  The reader never reads past the section: an overrun makes every
 * later read return 0 and sr_ok() false, so a load hook can read all its
 * fields and check once at the end.  A load hook validates what it reads
 * as it would validate guest input (the file may be corrupt or hostile).
 *
 * Each section carries a version chosen by the device.  A load hook gets
 * the saved version and must refuse versions it does not know.
 */
#ifndef HYVE_SNAPSHOT_H
#define HYVE_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Growable output buffer.  Allocation failure is sticky (sb->failed). */
struct snap_buf {
	uint8_t *data;
	size_t len, cap;
	bool failed;
};

void sb_init(struct snap_buf *sb);
void sb_free(struct snap_buf *sb);
void sb_put(struct snap_buf *sb, const void *p, size_t n);
void sb_u8(struct snap_buf *sb, uint8_t v);
void sb_u16(struct snap_buf *sb, uint16_t v);
void sb_u32(struct snap_buf *sb, uint32_t v);
void sb_u64(struct snap_buf *sb, uint64_t v);
void sb_bool(struct snap_buf *sb, bool v);
/* Length-prefixed (u32) string; NULL is stored as length 0xffffffff. */
void sb_str(struct snap_buf *sb, const char *s);

/* Bounded input reader over one section's bytes. */
struct snap_rd {
	const uint8_t *p;
	size_t len, off;
	bool overrun;
};

void sr_init(struct snap_rd *sr, const void *p, size_t len);
bool sr_get(struct snap_rd *sr, void *p, size_t n);
uint8_t sr_u8(struct snap_rd *sr);
uint16_t sr_u16(struct snap_rd *sr);
uint32_t sr_u32(struct snap_rd *sr);
uint64_t sr_u64(struct snap_rd *sr);
bool sr_bool(struct snap_rd *sr);
/* Copy a string written by sb_str into buf (NUL-terminated); false if it
 * does not fit, was NULL, or overran.  *was_null, if given, says NULL. */
bool sr_str(struct snap_rd *sr, char *buf, size_t buflen, bool *was_null);
/* True if nothing overran and every byte was consumed. */
bool sr_done(const struct snap_rd *sr);
static inline bool sr_ok(const struct snap_rd *sr) { return !sr->overrun; }
static inline size_t sr_left(const struct snap_rd *sr) { return sr->overrun ? 0 : sr->len - sr->off; }

/*
 * A non-PCI device's hooks.  save: 0 or -1 (with err).  load: 0, or -1
 * with err saying what was wrong (the caller prefixes the section name).
 * quiesce/resume (optional): stop taking new work and wait for in-flight
 * work to finish before a save; start again after it.
 */
struct snapshot_ops {
	uint32_t version;
	int (*save)(void *arg, struct snap_buf *out, char *err, size_t errlen);
	int (*load)(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen);
	void (*quiesce)(void *arg);
	void (*resume)(void *arg);
	/* A device newer than the checkpoint format: a checkpoint without its
	 * section restores, and the device keeps its initial state. */
	bool optional;
	/* Optional: the save this device took part in was kept (the
	 * checkpoint file is in place) or dropped (it failed). */
	void (*saved)(void *arg, bool kept);
};

/*
 * What the save in progress is for: a checkpoint to this file (absolute
 * path), or NULL for a migration.  Set by the checkpoint writer around
 * vmstate_save; a save hook may record more than device state for a
 * checkpoint (blockif: a qcow2 disk's internal snapshot).
 */
void snapshot_set_checkpoint_path(const char *path);
const char *snapshot_checkpoint_path(void);
/* Tell every device whether the last save was kept (its saved hook). */
void snapshot_saved(bool kept);

/* Register a device instance under a unique section name ("uart.com1"). */
int snapshot_register(const char *name, const struct snapshot_ops *ops, void *arg);

/* Iterate registered devices (used by the checkpoint writer/reader). */
struct snapshot_entry {
	char name[32];   /* the section name: 31 characters at most */
	const struct snapshot_ops *ops;
	void *arg;
};
int snapshot_count(void);
const struct snapshot_entry *snapshot_get(int i);
const struct snapshot_entry *snapshot_find(const char *name);

#endif
