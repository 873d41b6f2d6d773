/*
 * CFI flash for the UEFI variable store (Intel/Sharp command set, the
 * subset QEMU's pflash_cfi01 gives OVMF).  OVMF's variable driver
 * (QemuFlashFvbServicesRuntimeDxe) probes the part and then programs it a
 * byte at a time:
 *
 *   probe    0x50 (clear status) at a byte, read: the byte must not read
 *            back as 0x50 (that would be RAM); 0x70 (read status), read:
 *            0x00 means flash.  Then 0x10 + the original byte, 0x70, read
 *            the status (bit 4: program error), 0xff.
 *   program  0x10 then the data byte, for each byte; 0xff at the end
 *   erase    0x20 then 0xd0 at an address in the 4 KiB block; 0xff
 *
 * In read-array mode the store is a read-only KVM memory slot: reads cost
 * no exit and writes exit here.  Any other mode makes reads answer the
 * status (or ID/CFI data), so the slot is taken away until 0xff (or 0x00)
 * puts the part back in read-array mode.  A write sequence of n bytes
 * therefore costs 2n exits and two slot changes, as QEMU's ROM-device
 * mode does under KVM.
 *
 * Programs and erases go to the file through its shared mapping; msync
 * when the part goes back to read-array mode and at a checkpoint or
 * migration stop.  The file is host-side state, like a disk image: it is
 * not in checkpoints (docs/snapshot.md).
 */
#include "pflash.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "../core/log.h"
#include "../core/mmio.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"

/* Command bytes and status bits (Intel StrataFlash / QEMU pflash_cfi01). */
#define CMD_READ_ARRAY      0xff
#define CMD_READ_ARRAY_ALT  0x00
#define CMD_PROGRAM         0x10
#define CMD_PROGRAM_ALT     0x40
#define CMD_ERASE_SETUP     0x20
#define CMD_ERASE_CONFIRM   0xd0
#define CMD_CLEAR_STATUS    0x50
#define CMD_READ_STATUS     0x70
#define CMD_READ_ID         0x90
#define CMD_CFI_QUERY       0x98

#define ST_READY            0x80
#define ST_ERASE_ERROR      0x20
#define ST_PROGRAM_ERROR    0x10

/* Mode: what the next write means and what reads answer. */
enum pflash_mode {
	MODE_READ_ARRAY = 0,   /* reads: the data (the memory slot) */
	MODE_PROGRAM = 1,      /* next write is data; reads: status */
	MODE_ERASE = 2,        /* next write must be 0xd0; reads: status */
	MODE_STATUS = 3,       /* reads: status */
	MODE_ID = 4,           /* reads: manufacturer/device id */
	MODE_CFI = 5,          /* reads: the CFI query table */
};

static struct pflash {
	struct vmctx *ctx;
	pthread_mutex_t mtx;
	uint8_t *mem;
	uint64_t gpa, size;
	int slot;               /* devmem slot, -1 until first mapped */
	enum pflash_mode mode;
	uint8_t status;
	bool dirty;             /* programmed or erased since the last msync */
	bool warned;
} fl = { .mtx = PTHREAD_MUTEX_INITIALIZER, .slot = -1, .status = ST_READY };

static void sync_file(bool wait)
{
	if (fl.dirty && msync(fl.mem, fl.size, wait ? MS_SYNC : MS_ASYNC) == 0)
		fl.dirty = false;
}

/* Enter a mode; the memory slot is there exactly in read-array mode. */
static void set_mode(enum pflash_mode m)
{
	bool was_array = fl.mode == MODE_READ_ARRAY, array = m == MODE_READ_ARRAY;
	fl.mode = m;
	if (array)
		sync_file(false);
	if (was_array == array || !fl.ctx)
		return;
	int r = array ? vm_map_devmem_readonly(fl.ctx, &fl.slot, fl.gpa, fl.mem, fl.size)
	              : vm_map_devmem(fl.ctx, &fl.slot, VM_DEVMEM_UNMAPPED, NULL, 0);
	/* Without the slot every read exits and pflash_mmio serves it: slower, still right. */
	if (r && !fl.warned) {
		log_warn("pflash: cannot %s the variable store's memory slot; reads go through exits",
		         array ? "map" : "unmap");
		fl.warned = true;
	}
}

static void command(uint8_t cmd)
{
	switch (cmd) {
	case CMD_READ_ARRAY:
	case CMD_READ_ARRAY_ALT:
		set_mode(MODE_READ_ARRAY);
		break;
	case CMD_PROGRAM:
	case CMD_PROGRAM_ALT:
		set_mode(MODE_PROGRAM);
		break;
	case CMD_ERASE_SETUP:
		set_mode(MODE_ERASE);
		break;
	case CMD_CLEAR_STATUS:
		/* QEMU clears every bit, ready included, and OVMF's probe relies on
		 * it (a status read then answers 0x00); the part stays readable. */
		fl.status = 0;
		set_mode(MODE_READ_ARRAY);
		break;
	case CMD_READ_STATUS:
		set_mode(MODE_STATUS);
		break;
	case CMD_READ_ID:
		set_mode(MODE_ID);
		break;
	case CMD_CFI_QUERY:
		set_mode(MODE_CFI);
		break;
	default:
		/* Buffered writes, lock bits, suspend: nothing OVMF uses. */
		log_debug("pflash: command %#x not supported; back to read-array mode", cmd);
		fl.status |= ST_PROGRAM_ERROR | ST_ERASE_ERROR;
		set_mode(MODE_READ_ARRAY);
		break;
	}
}

static void flash_write(uint64_t off, int size, uint64_t val)
{
	switch (fl.mode) {
	case MODE_PROGRAM:
		for (int i = 0; i < size && off + (uint64_t)i < fl.size; i++)
			fl.mem[off + (uint64_t)i] = (uint8_t)(val >> (8 * i));
		fl.status |= ST_READY;
		fl.dirty = true;
		set_mode(MODE_STATUS);
		return;
	case MODE_ERASE:
		if ((uint8_t)val == CMD_ERASE_CONFIRM) {
			memset(fl.mem + (off & ~(uint64_t)(PFLASH_BLOCK_SIZE - 1)), 0xff, PFLASH_BLOCK_SIZE);
			fl.dirty = true;
		} else {
			fl.status |= ST_PROGRAM_ERROR | ST_ERASE_ERROR;   /* command sequence error */
		}
		fl.status |= ST_READY;
		set_mode(MODE_STATUS);
		return;
	default:
		command((uint8_t)val);
		return;
	}
}

static uint64_t flash_read(uint64_t off, int size)
{
	uint64_t v = 0;
	for (int i = 0; i < size; i++) {
		uint64_t o = off + (uint64_t)i;
		uint8_t b;
		switch (fl.mode) {
		case MODE_READ_ARRAY:
			b = o < fl.size ? fl.mem[o] : 0xff;
			break;
		case MODE_ID:   /* Intel, 28F128J3 */
			b = o == 0 ? 0x89 : o == 1 ? 0x18 : 0;
			break;
		case MODE_CFI:   /* the "QRY" signature; no geometry (nothing asks) */
			b = o == 0x10 ? 'Q' : o == 0x11 ? 'R' : o == 0x12 ? 'Y' : 0;
			break;
		default:
			b = fl.status;
			break;
		}
		v |= (uint64_t)b << (8 * i);
	}
	return v;
}

static int pflash_mmio(struct vcpu *vcpu, bool write, uint64_t addr, int size, uint64_t *val, void *arg)
{
	(void)vcpu; (void)arg;
	if (size < 1 || size > 8 || addr < fl.gpa || addr - fl.gpa >= fl.size) {
		if (!write)
			*val = ~0ULL;
		return 0;
	}
	pthread_mutex_lock(&fl.mtx);
	if (write)
		flash_write(addr - fl.gpa, size, *val);
	else
		*val = flash_read(addr - fl.gpa, size);
	pthread_mutex_unlock(&fl.mtx);
	return 0;
}

/* ---- checkpoint: the mode and status; the content is the file ---- */

static int pflash_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	(void)arg; (void)err; (void)errlen;
	pthread_mutex_lock(&fl.mtx);
	sb_u8(out, (uint8_t)fl.mode);
	sb_u8(out, fl.status);
	pthread_mutex_unlock(&fl.mtx);
	return 0;
}

static int pflash_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)arg; (void)version;
	uint8_t mode = sr_u8(in), status = sr_u8(in);
	if (!sr_ok(in) || mode > MODE_CFI) {
		snprintf(err, errlen, "flash state is not valid (mode %u)", mode);
		return -1;
	}
	pthread_mutex_lock(&fl.mtx);
	fl.status = status;
	set_mode((enum pflash_mode)mode);
	pthread_mutex_unlock(&fl.mtx);
	return 0;
}

/* vCPUs are stopped: what the firmware wrote is in the file before a
 * checkpoint file or a migration destination can rely on it. */
static void pflash_quiesce(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&fl.mtx);
	fl.dirty = true;
	sync_file(true);
	pthread_mutex_unlock(&fl.mtx);
}

static void pflash_resume(void *arg)
{
	(void)arg;
}

static const struct snapshot_ops pflash_ops = {
	.version = 1,
	.save = pflash_save,
	.load = pflash_load,
	.quiesce = pflash_quiesce,
	.resume = pflash_resume,
	.optional = true,
};

int pflash_attach(struct vmctx *ctx, uint64_t gpa, uint8_t *mem, uint64_t size, char *err, size_t errlen)
{
	if (fl.ctx) {
		snprintf(err, errlen, "pflash: one flash variable store per VM");
		return -1;
	}
	if (!size || size % PFLASH_BLOCK_SIZE) {
		snprintf(err, errlen, "pflash: %llu bytes is not a whole number of %u-byte blocks",
		         (unsigned long long)size, PFLASH_BLOCK_SIZE);
		return -1;
	}
	fl.gpa = gpa;
	fl.size = size;
	fl.mem = mem;
	fl.mode = MODE_READ_ARRAY;
	fl.status = ST_READY;
	if (vm_map_devmem_readonly(ctx, &fl.slot, gpa, mem, size)) {
		snprintf(err, errlen, "pflash: cannot map the variable store read-only at %#llx: %s",
		         (unsigned long long)gpa, strerror(errno));
		return -1;
	}
	struct mmio_range mr = { "pflash", gpa, size, pflash_mmio, NULL };
	if (register_mmio(&mr)) {
		snprintf(err, errlen, "pflash: [%#llx, +%#llx) is taken by a device", (unsigned long long)gpa,
		         (unsigned long long)size);
		return -1;
	}
	fl.ctx = ctx;
	return snapshot_register("pflash", &pflash_ops, NULL);
}
