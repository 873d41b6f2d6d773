/*
 * fw_cfg: QEMU's firmware configuration device (see fw_cfg.h), on the LPC
 * bus at I/O 0x510-0x51b.  What firmware reads here:
 *   signature "QEMU", ID (traditional + DMA interface), UUID (-U),
 *   RAM size, CPU count, the file directory;
 *   files: etc/e820, ACPI tables and their loader script (boot/firmware.c),
 *   bootorder (boot/bootrom.c), etc/sercon-port (SeaBIOS copies its screen
 *   to COM1 when there is no display), and the user's -f files.
 * Everything the guest hands us (selector, DMA descriptor address, length,
 * buffer address) is checked against the item and guest RAM before use.
 */
#include "fw_cfg.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../boot/boot.h"
#include "../boot/firmware.h"
#include "../core/config.h"
#include "../core/init.h"
#include "../core/inout.h"
#include "../core/log.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "pci_lpc.h"

#define FW_CFG_ID_TRADITIONAL 1u
#define FW_CFG_ID_DMA         2u
#define FW_CFG_ARCH_LOCAL     0x8000u
#define FW_CFG_WRITE_FLAG     0x4000u
#define FW_CFG_INVALID        0xffffu

#define DMA_CTL_ERROR  0x01u
#define DMA_CTL_READ   0x02u
#define DMA_CTL_SKIP   0x04u
#define DMA_CTL_SELECT 0x08u
#define DMA_CTL_WRITE  0x10u

/* The DMA address register reads back as this (big-endian "QEMU CFG"). */
static const uint8_t dma_signature[8] = { 'Q', 'E', 'M', 'U', ' ', 'C', 'F', 'G' };

struct fw_cfg_item {
	uint16_t key;
	char name[FW_CFG_NAME_LEN];   /* "" for fixed keys */
	uint8_t *data;
	uint32_t len;
};

static struct {
	pthread_mutex_t mtx;
	struct vmctx *ctx;
	bool enabled;
	struct fw_cfg_item *items;
	size_t nitems;
	uint16_t nfiles;
	uint16_t selector;
	uint32_t offset;
	uint32_t dma_hi;
	uint8_t *dir;       /* FILE_DIR, rebuilt when a file is added */
	uint32_t dir_len;
} fwc = { .mtx = PTHREAD_MUTEX_INITIALIZER, .selector = FW_CFG_INVALID };

bool fw_cfg_enabled(void)
{
	return fwc.enabled;
}

static struct fw_cfg_item *find_key(uint16_t key)
{
	for (size_t i = 0; i < fwc.nitems; i++)
		if (fwc.items[i].key == key)
			return &fwc.items[i];
	return NULL;
}

static int put_item(uint16_t key, const char *name, const void *data, size_t len, char *err, size_t errlen)
{
	if (len > UINT32_MAX) {
		snprintf(err, errlen, "fw_cfg: item %s is larger than 4 GiB", name && *name ? name : "");
		return -1;
	}
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy) {
		snprintf(err, errlen, "fw_cfg: out of memory");
		return -1;
	}
	if (len)
		memcpy(copy, data, len);
	struct fw_cfg_item *it = find_key(key);
	if (!it) {
		struct fw_cfg_item *n = realloc(fwc.items, (fwc.nitems + 1) * sizeof(*n));
		if (!n) {
			free(copy);
			snprintf(err, errlen, "fw_cfg: out of memory");
			return -1;
		}
		fwc.items = n;
		it = &fwc.items[fwc.nitems++];
		memset(it, 0, sizeof(*it));
		it->key = key;
	}
	free(it->data);
	it->data = copy;
	it->len = (uint32_t)len;
	snprintf(it->name, sizeof(it->name), "%s", name ? name : "");
	return 0;
}

/* The directory: be32 count, then { be32 size, be16 select, be16 0, name[56] }. */
static int rebuild_dir(char *err, size_t errlen)
{
	size_t len = 4 + (size_t)fwc.nfiles * 64;
	uint8_t *d = calloc(1, len);
	if (!d) {
		snprintf(err, errlen, "fw_cfg: out of memory");
		return -1;
	}
	uint32_t be = htobe32(fwc.nfiles);
	memcpy(d, &be, 4);
	uint8_t *e = d + 4;
	for (size_t i = 0; i < fwc.nitems; i++) {
		const struct fw_cfg_item *it = &fwc.items[i];
		if (!it->name[0])
			continue;
		uint32_t size = htobe32(it->len);
		uint16_t sel = htobe16(it->key);
		memcpy(e, &size, 4);
		memcpy(e + 4, &sel, 2);
		memcpy(e + 8, it->name, strlen(it->name));
		e += 64;
	}
	free(fwc.dir);
	fwc.dir = d;
	fwc.dir_len = (uint32_t)len;
	return 0;
}

int fw_cfg_add_file(const char *name, const void *data, size_t len, char *err, size_t errlen)
{
	if (!fwc.enabled) {
		snprintf(err, errlen, "fw_cfg: file %s: the VM has no fw_cfg device (lpc.fwcfg)", name);
		return -1;
	}
	if (!*name || strlen(name) >= FW_CFG_NAME_LEN) {
		snprintf(err, errlen, "fw_cfg: file name '%s' must have 1 to %d bytes", name, FW_CFG_NAME_LEN - 1);
		return -1;
	}
	pthread_mutex_lock(&fwc.mtx);
	int rc = -1;
	for (size_t i = 0; i < fwc.nitems; i++)
		if (fwc.items[i].name[0] && strcmp(fwc.items[i].name, name) == 0) {
			snprintf(err, errlen, "fw_cfg: file %s added twice", name);
			goto out;
		}
	if (fwc.nfiles >= FW_CFG_FILE_MAX) {
		snprintf(err, errlen, "fw_cfg: more than %d files", FW_CFG_FILE_MAX);
		goto out;
	}
	if (put_item((uint16_t)(FW_CFG_FILE_FIRST + fwc.nfiles), name, data, len, err, errlen) == 0) {
		fwc.nfiles++;
		rc = rebuild_dir(err, errlen);
	}
out:
	pthread_mutex_unlock(&fwc.mtx);
	return rc;
}

int fw_cfg_set_item(uint16_t key, const void *data, size_t len, char *err, size_t errlen)
{
	pthread_mutex_lock(&fwc.mtx);
	int rc = put_item(key, NULL, data, len, err, errlen);
	pthread_mutex_unlock(&fwc.mtx);
	return rc;
}

/* The selected item's bytes; the directory lives outside the item table. */
static const uint8_t *selected(uint32_t *len)
{
	if (fwc.selector == FW_CFG_FILE_DIR) {
		*len = fwc.dir_len;
		return fwc.dir;
	}
	const struct fw_cfg_item *it = find_key(fwc.selector);
	*len = it ? it->len : 0;
	return it ? it->data : NULL;
}

static void do_select(uint16_t key)
{
	/* The write flag is ignored: no item is writable (as QEMU >= 2.4). */
	fwc.selector = (uint16_t)(key & ~FW_CFG_WRITE_FLAG);
	fwc.offset = 0;
}

/*
 * One DMA descriptor at gpa: { be32 control, be32 length, be64 address }.
 * On return control is 0, or DMA_CTL_ERROR when a buffer is not in RAM or
 * the guest asked to write.
 */
static void do_dma(uint64_t gpa)
{
	struct { uint32_t control, length; uint64_t address; } d;
	if (vm_copy_from_guest(fwc.ctx, gpa, &d, sizeof(d)) != 0) {
		log_debug("fw_cfg: DMA descriptor at %#llx is not in RAM", (unsigned long long)gpa);
		return;   /* nowhere to report the error */
	}
	uint32_t control = be32toh(d.control), length = be32toh(d.length);
	uint64_t address = be64toh(d.address);
	bool error = false;
	if (control & DMA_CTL_SELECT)
		do_select((uint16_t)(control >> 16));
	if (control & DMA_CTL_WRITE) {
		error = true;
	} else if (control & (DMA_CTL_READ | DMA_CTL_SKIP)) {
		uint32_t ilen;
		const uint8_t *data = selected(&ilen);
		uint32_t avail = fwc.offset < ilen ? ilen - fwc.offset : 0;
		uint32_t n = length < avail ? length : avail;
		if (control & DMA_CTL_READ) {
			uint8_t *dst = vm_map_gpa(fwc.ctx, address, length);
			if (!dst) {
				error = true;
			} else {
				if (n)
					memcpy(dst, data + fwc.offset, n);
				memset(dst + n, 0, length - n);   /* past the end reads as zeros */
				vm_mark_dirty(fwc.ctx, address, length);
			}
		}
		if (!error)
			fwc.offset += n;
	}
	uint32_t status = htobe32(error ? DMA_CTL_ERROR : 0);
	vm_copy_to_guest(fwc.ctx, gpa, &status, sizeof(status));
}

static int fw_cfg_port(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)arg;
	pthread_mutex_lock(&fwc.mtx);
	switch (port) {
	case FW_CFG_PORT_SEL:
		if (in)
			*val = fwc.selector;
		else
			do_select((uint16_t)*val);
		break;
	case FW_CFG_PORT_DATA:
		if (in) {
			/* Byte-wide: wider reads return the following bytes too (as QEMU). */
			uint32_t ilen, v = 0;
			const uint8_t *data = selected(&ilen);
			for (int i = 0; i < bytes; i++)
				if (fwc.offset < ilen)
					v |= (uint32_t)data[fwc.offset++] << (8 * i);
			*val = v;
		}
		break;
	default: {
		/* DMA address: 0x514 high half, 0x518 low half (starts the transfer). */
		unsigned off = port - FW_CFG_PORT_DMA;
		if (in) {
			uint32_t v = 0;
			for (int i = 0; i < bytes && off + (unsigned)i < 8; i++)
				v |= (uint32_t)dma_signature[off + (unsigned)i] << (8 * i);
			*val = v;
		} else if (bytes == 4 && off == 0) {
			fwc.dma_hi = be32toh(*val);
		} else if (bytes == 4 && off == 4) {
			do_dma(((uint64_t)fwc.dma_hi << 32) | be32toh(*val));
			fwc.dma_hi = 0;
		}
		break;
	}
	}
	pthread_mutex_unlock(&fwc.mtx);
	return 0;
}

static int fw_cfg_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	(void)arg; (void)err; (void)errlen;
	pthread_mutex_lock(&fwc.mtx);
	sb_u16(out, fwc.selector);
	sb_u32(out, fwc.offset);
	sb_u32(out, fwc.dma_hi);
	pthread_mutex_unlock(&fwc.mtx);
	return 0;
}

static int fw_cfg_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)arg;
	uint16_t sel = sr_u16(in);
	uint32_t off = sr_u32(in), hi = sr_u32(in);
	if (version != 1 || !sr_ok(in) || sr_left(in)) {
		snprintf(err, errlen, "fw_cfg state is not valid");
		return -1;
	}
	pthread_mutex_lock(&fwc.mtx);
	fwc.selector = sel;
	fwc.offset = off;   /* past the end only reads zeros */
	fwc.dma_hi = hi;
	pthread_mutex_unlock(&fwc.mtx);
	return 0;
}

/* Optional: checkpoints from before fw_cfg existed restore with it idle. */
static const struct snapshot_ops fw_cfg_snapshot_ops = {
	.version = 1, .save = fw_cfg_save, .load = fw_cfg_load, .optional = true,
};

/* RFC 4122 text -> 16 bytes in text order (what SMBIOS and QEMU use). */
static bool parse_uuid(const char *s, uint8_t out[16])
{
	int n = 0;
	for (const char *p = s; *p; p++) {
		if (*p == '-')
			continue;
		unsigned v;
		if (n >= 32 || sscanf(p, "%1x", &v) != 1)
			return false;
		out[n / 2] = (uint8_t)(n % 2 ? out[n / 2] | v : v << 4);
		n++;
	}
	return n == 32;
}

static int add_user_files(char *err, size_t errlen)
{
	for (int k = 0;; k++) {
		const char *name = get_config_valuef("fw_cfg.file.%d.name", k);
		if (!name)
			return 0;
		const char *path = get_config_valuef("fw_cfg.file.%d.path", k);
		const char *str = get_config_valuef("fw_cfg.file.%d.string", k);
		if (path) {
			size_t len;
			char why[160];
			uint8_t *data = boot_read_file(path, &len, why, sizeof(why));
			if (!data) {
				snprintf(err, errlen, "fw_cfg file %.56s: %s", name, why);
				return -1;
			}
			int rc = fw_cfg_add_file(name, data, len, err, errlen);
			free(data);
			if (rc)
				return -1;
		} else if (fw_cfg_add_file(name, str ? str : "", str ? strlen(str) : 0, err, errlen)) {
			return -1;
		}
	}
}

static int add_fixed_items(struct vmctx *ctx, int ncpus, char *err, size_t errlen)
{
	uint32_t id = htole32(FW_CFG_ID_TRADITIONAL | FW_CFG_ID_DMA);
	uint64_t ram = htole64(vm_get_lowmem_size(ctx) + vm_get_highmem_size(ctx));
	uint16_t cpus = htole16((uint16_t)ncpus), nographic = htole16(1), menu = 0;
	uint8_t uuid[16] = { 0 };
	const char *u = get_config_value("uuid");
	if (u && !parse_uuid(u, uuid)) {
		snprintf(err, errlen, "fw_cfg: uuid '%s' is not an RFC 4122 UUID", u);
		return -1;
	}
	if (fw_cfg_set_item(FW_CFG_SIGNATURE, "QEMU", 4, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_ID, &id, 4, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_UUID, uuid, 16, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_RAM_SIZE, &ram, 8, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_NOGRAPHIC, &nographic, 2, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_NB_CPUS, &cpus, 2, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_MAX_CPUS, &cpus, 2, err, errlen) ||
	    fw_cfg_set_item(FW_CFG_BOOT_MENU, &menu, 2, err, errlen))
		return -1;

	/* etc/e820: packed { le64 address, le64 length, le32 type }. */
	struct e820_entry map[16];
	int n = boot_e820_map(ctx, map, 16);
	uint8_t e820[16 * 20];
	for (int i = 0; i < n; i++) {
		uint64_t a = htole64(map[i].addr), l = htole64(map[i].size);
		uint32_t t = htole32(map[i].type);
		memcpy(e820 + 20 * i, &a, 8);
		memcpy(e820 + 20 * i + 8, &l, 8);
		memcpy(e820 + 20 * i + 16, &t, 4);
	}
	if (n < 0 || fw_cfg_add_file("etc/e820", e820, (size_t)n * 20, err, errlen))
		return -1;

	/* No display: SeaBIOS mirrors its text screen to COM1 (QEMU -nographic). */
	if (get_config_value("lpc.com1.path")) {
		uint16_t port = htole16(0x3f8);
		if (fw_cfg_add_file("etc/sercon-port", &port, 2, err, errlen))
			return -1;
	}
	return add_user_files(err, errlen);
}

static int fw_cfg_init(struct vmctx *ctx)
{
	const char *mode = get_config_value("lpc.fwcfg");
	if (!lpc_present() || (mode && strcmp(mode, "qemu") != 0))
		return 0;
	fwc.ctx = ctx;
	fwc.enabled = true;
	char err[256];
	if (rebuild_dir(err, sizeof(err)) || add_fixed_items(ctx, firmware_get_ncpus(), err, sizeof(err))) {
		log_err("%s", err);
		return -1;
	}
	struct inout_port ports[] = {
		{ "fw_cfg", FW_CFG_PORT_SEL, 2, fw_cfg_port, NULL },
		{ "fw_cfg-dma", FW_CFG_PORT_DMA, 8, fw_cfg_port, NULL },
	};
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++)
		if (register_inout(&ports[i]))
			return -1;
	return snapshot_register("fw_cfg", &fw_cfg_snapshot_ops, NULL);
}
hyve_init(INIT_PLATFORM, fw_cfg_init)

/* ---- the table-loader script ---- */

#define LOADER_ALLOCATE     1
#define LOADER_ADD_POINTER  2
#define LOADER_ADD_CHECKSUM 3
#define LOADER_ENTRY_LEN    128

struct fw_cfg_loader {
	uint8_t *buf;
	size_t len;
	bool failed;
};

struct fw_cfg_loader *fw_cfg_loader_new(void)
{
	return calloc(1, sizeof(struct fw_cfg_loader));
}

void fw_cfg_loader_free(struct fw_cfg_loader *l)
{
	if (l)
		free(l->buf);
	free(l);
}

static uint8_t *loader_entry(struct fw_cfg_loader *l, uint32_t command)
{
	uint8_t *n = realloc(l->buf, l->len + LOADER_ENTRY_LEN);
	if (!n) {
		l->failed = true;
		return NULL;
	}
	l->buf = n;
	uint8_t *e = n + l->len;
	l->len += LOADER_ENTRY_LEN;
	memset(e, 0, LOADER_ENTRY_LEN);
	uint32_t c = htole32(command);
	memcpy(e, &c, 4);
	return e;
}

static int loader_name(uint8_t *dst, const char *name)
{
	size_t n = strlen(name);
	if (!n || n >= FW_CFG_NAME_LEN)
		return -1;
	memcpy(dst, name, n);
	return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

int fw_cfg_loader_allocate(struct fw_cfg_loader *l, const char *file, uint32_t align, enum fw_cfg_zone zone)
{
	uint8_t *e = loader_entry(l, LOADER_ALLOCATE);
	if (!e || loader_name(e + 4, file))
		return -1;
	put_le32(e + 60, align);
	e[64] = (uint8_t)zone;
	return 0;
}

int fw_cfg_loader_add_pointer(struct fw_cfg_loader *l, const char *dest, const char *src, uint32_t offset,
                              uint8_t size)
{
	uint8_t *e = loader_entry(l, LOADER_ADD_POINTER);
	if (!e || loader_name(e + 4, dest) || loader_name(e + 60, src))
		return -1;
	put_le32(e + 116, offset);
	e[120] = size;
	return 0;
}

int fw_cfg_loader_add_checksum(struct fw_cfg_loader *l, const char *file, uint32_t offset, uint32_t start,
                               uint32_t length)
{
	uint8_t *e = loader_entry(l, LOADER_ADD_CHECKSUM);
	if (!e || loader_name(e + 4, file))
		return -1;
	put_le32(e + 60, offset);
	put_le32(e + 64, start);
	put_le32(e + 68, length);
	return 0;
}

const uint8_t *fw_cfg_loader_data(const struct fw_cfg_loader *l, size_t *len)
{
	*len = l->len;
	return l->failed ? NULL : l->buf;
}
