/*
 * QEMU-compatible test devices, enabled with -o lpc.pc-testdev=true, so
 * kvm-unit-tests-style guests and our test guest run unchanged:
 *   0xf4     isa-debug-exit: writing V exits hyve with status (V << 1) | 1
 *   0xe0     4-byte scratch register (PIO round trips)
 *   0xe4     page-flush request (accepted, nothing to flush)
 *   0xe8     4 byte-addressable scratch bytes
 *   0x2000   24 IRQ lines: writing L sets ISA IRQ n (port 0x2000 + n) to L
 *   0xff000000  64 KiB byte-addressable scratch memory (MMIO round trips)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../core/config.h"
#include "../core/exitcode.h"
#include "../core/init.h"
#include "../core/inout.h"
#include "../core/log.h"
#include "../core/mmio.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "pci_lpc.h"

#define TESTDEV_IOMEM_BASE 0xff000000ULL
#define TESTDEV_IOMEM_SIZE 0x10000

static struct vmctx *testdev_ctx;
static uint32_t ioport_data;
static uint8_t ioport_bytes[4];
static uint8_t iomem[TESTDEV_IOMEM_SIZE];

static int debug_exit_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)port; (void)bytes; (void)arg;
	if (in) {
		*val = 0xffffffffu;
		return 0;
	}
	int status = (int)(((*val & 0x7f) << 1) | 1);
	log_debug("debug-exit: guest wrote 0x%x, exit status %d", *val, status);
	vm_request_exit(status);
	return 0;
}

static int ioport_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)port; (void)arg;
	/* Reads return the last value written, truncated to the access size. */
	uint32_t mask = bytes == 4 ? 0xffffffffu : (1u << (8 * bytes)) - 1;
	if (in)
		*val = __atomic_load_n(&ioport_data, __ATOMIC_RELAXED) & mask;
	else
		__atomic_store_n(&ioport_data, *val & mask, __ATOMIC_RELAXED);
	return 0;
}

static int ioport_byte_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)arg;
	int off = port - 0xe8;
	for (int i = 0; i < bytes && off + i < 4; i++) {
		if (in)
			((uint8_t *)val)[i] = ioport_bytes[off + i];
		else
			ioport_bytes[off + i] = ((uint8_t *)val)[i];
	}
	return 0;
}

static int flush_page_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)port; (void)bytes; (void)arg;
	if (in)
		*val = 0;
	return 0;
}

static int irq_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)bytes; (void)arg;
	if (in)
		*val = 0;
	else
		vm_set_irq_line(testdev_ctx, port - 0x2000, *val ? 1 : 0);
	return 0;
}

static int iomem_handler(struct vcpu *vcpu, bool write, uint64_t addr, int size, uint64_t *val, void *arg)
{
	(void)vcpu; (void)arg;
	uint64_t off = addr - TESTDEV_IOMEM_BASE;
	if (write)
		memcpy(&iomem[off], val, (size_t)size);
	else {
		*val = 0;
		memcpy(val, &iomem[off], (size_t)size);
	}
	return 0;
}

/* Scratch registers and the 4 KiB MMIO page (the guest can leave data there). */
static int testdev_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	(void)arg; (void)err; (void)errlen;
	sb_u32(out, ioport_data);
	sb_put(out, ioport_bytes, sizeof(ioport_bytes));
	sb_put(out, iomem, sizeof(iomem));
	return 0;
}

static int testdev_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)arg;
	uint32_t data = sr_u32(in);
	uint8_t bytes[sizeof(ioport_bytes)];
	sr_get(in, bytes, sizeof(bytes));
	if (version != 1 || !sr_ok(in) || sr_left(in) != sizeof(iomem)) {
		snprintf(err, errlen, "pc-testdev state is not valid");
		return -1;
	}
	ioport_data = data;
	memcpy(ioport_bytes, bytes, sizeof(bytes));
	sr_get(in, iomem, sizeof(iomem));
	return 0;
}

static const struct snapshot_ops testdev_snapshot_ops = { .version = 1, .save = testdev_save, .load = testdev_load };

static int pc_testdev_init(struct vmctx *ctx)
{
	if (!get_config_bool_default("lpc.pc-testdev", false))
		return 0;
	if (!lpc_present()) {
		log_err("config: lpc.pc-testdev: needs an lpc device");
		return -1;
	}
	testdev_ctx = ctx;
	struct inout_port ports[] = {
		{ "debug-exit", 0xf4, 4, debug_exit_handler, NULL },
		{ "pc-testdev-ioport", 0xe0, 4, ioport_handler, NULL },
		{ "pc-testdev-flush-page", 0xe4, 4, flush_page_handler, NULL },
		{ "pc-testdev-ioport-byte", 0xe8, 4, ioport_byte_handler, NULL },
		{ "pc-testdev-irq", 0x2000, 24, irq_handler, NULL },
	};
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++)
		if (register_inout(&ports[i]))
			return -1;
	struct mmio_range mr = { "pc-testdev-iomem", TESTDEV_IOMEM_BASE, TESTDEV_IOMEM_SIZE, iomem_handler, NULL };
	if (register_mmio(&mr))
		return -1;
	return snapshot_register("pc-testdev", &testdev_snapshot_ops, NULL);
}
hyve_init(INIT_PLATFORM, pc_testdev_init)
