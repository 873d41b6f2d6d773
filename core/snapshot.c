/*
 * Device-state buffers and the registry of non-PCI device hooks
 * (interface and rules in snapshot.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot.h"

void sb_init(struct snap_buf *sb)
{
	memset(sb, 0, sizeof(*sb));
}

void sb_free(struct snap_buf *sb)
{
	free(sb->data);
	sb_init(sb);
}

void sb_put(struct snap_buf *sb, const void *p, size_t n)
{
	if (sb->failed || n == 0)
		return;
	if (sb->len + n > sb->cap) {
		size_t cap = sb->cap ? sb->cap : 256;
		while (cap < sb->len + n)
			cap *= 2;
		uint8_t *d = realloc(sb->data, cap);
		if (!d) {
			sb->failed = true;
			return;
		}
		sb->data = d;
		sb->cap = cap;
	}
	memcpy(sb->data + sb->len, p, n);
	sb->len += n;
}

/* Fixed-width little-endian: the file is the same on every host. */
static void put_le(struct snap_buf *sb, uint64_t v, int bytes)
{
	uint8_t b[8];
	for (int i = 0; i < bytes; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	sb_put(sb, b, (size_t)bytes);
}

void sb_u8(struct snap_buf *sb, uint8_t v) { put_le(sb, v, 1); }
void sb_u16(struct snap_buf *sb, uint16_t v) { put_le(sb, v, 2); }
void sb_u32(struct snap_buf *sb, uint32_t v) { put_le(sb, v, 4); }
void sb_u64(struct snap_buf *sb, uint64_t v) { put_le(sb, v, 8); }
void sb_bool(struct snap_buf *sb, bool v) { put_le(sb, v ? 1 : 0, 1); }

void sb_str(struct snap_buf *sb, const char *s)
{
	if (!s) {
		sb_u32(sb, 0xffffffffu);
		return;
	}
	size_t n = strlen(s);
	sb_u32(sb, (uint32_t)n);
	sb_put(sb, s, n);
}

void sr_init(struct snap_rd *sr, const void *p, size_t len)
{
	sr->p = p;
	sr->len = len;
	sr->off = 0;
	sr->overrun = false;
}

bool sr_get(struct snap_rd *sr, void *p, size_t n)
{
	if (sr->overrun || n > sr->len - sr->off) {
		sr->overrun = true;
		memset(p, 0, n);
		return false;
	}
	memcpy(p, sr->p + sr->off, n);
	sr->off += n;
	return true;
}

static uint64_t get_le(struct snap_rd *sr, int bytes)
{
	uint8_t b[8];
	uint64_t v = 0;
	if (!sr_get(sr, b, (size_t)bytes))
		return 0;
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

uint8_t sr_u8(struct snap_rd *sr) { return (uint8_t)get_le(sr, 1); }
uint16_t sr_u16(struct snap_rd *sr) { return (uint16_t)get_le(sr, 2); }
uint32_t sr_u32(struct snap_rd *sr) { return (uint32_t)get_le(sr, 4); }
uint64_t sr_u64(struct snap_rd *sr) { return get_le(sr, 8); }

bool sr_bool(struct snap_rd *sr)
{
	uint8_t v = sr_u8(sr);
	if (v > 1)
		sr->overrun = true;   /* not a boolean: treat as corrupt */
	return v == 1;
}

bool sr_str(struct snap_rd *sr, char *buf, size_t buflen, bool *was_null)
{
	uint32_t n = sr_u32(sr);
	if (was_null)
		*was_null = false;
	if (buflen)
		buf[0] = '\0';
	if (sr->overrun)
		return false;
	if (n == 0xffffffffu) {
		if (was_null)
			*was_null = true;
		return false;
	}
	if (n >= buflen || n > sr->len - sr->off) {
		sr->overrun = true;
		return false;
	}
	memcpy(buf, sr->p + sr->off, n);
	buf[n] = '\0';
	sr->off += n;
	/* An embedded NUL would silently shorten the string. */
	if (strlen(buf) != n) {
		sr->overrun = true;
		return false;
	}
	return true;
}

bool sr_done(const struct snap_rd *sr)
{
	return !sr->overrun && sr->off == sr->len;
}

/* ---- registry ---- */
#define SNAPSHOT_MAX_ENTRIES 64
static struct snapshot_entry entries[SNAPSHOT_MAX_ENTRIES];
static int nentries;

int snapshot_register(const char *name, const struct snapshot_ops *ops, void *arg)
{
	if (nentries == SNAPSHOT_MAX_ENTRIES || strlen(name) >= sizeof(entries[0].name) || snapshot_find(name))
		return -1;
	struct snapshot_entry *e = &entries[nentries++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->ops = ops;
	e->arg = arg;
	return 0;
}

int snapshot_count(void)
{
	return nentries;
}

const struct snapshot_entry *snapshot_get(int i)
{
	return i >= 0 && i < nentries ? &entries[i] : NULL;
}

const struct snapshot_entry *snapshot_find(const char *name)
{
	for (int i = 0; i < nentries; i++)
		if (strcmp(entries[i].name, name) == 0)
			return &entries[i];
	return NULL;
}

static char *ckpt_path;

void snapshot_set_checkpoint_path(const char *path)
{
	free(ckpt_path);
	ckpt_path = path ? strdup(path) : NULL;
}

const char *snapshot_checkpoint_path(void)
{
	return ckpt_path;
}

void snapshot_saved(bool kept)
{
	for (int i = 0; i < nentries; i++)
		if (entries[i].ops && entries[i].ops->saved)
			entries[i].ops->saved(entries[i].arg, kept);
}
