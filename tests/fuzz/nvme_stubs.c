/*
 * The stubbed KVM layer, event loop and logging under the NVMe unit test
 * and fuzz target (interface in nvme_stubs.h).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/config.h"
#include "../../core/init.h"
#include "../../core/log.h"
#include "../../core/mevent.h"
#include "../../core/mmio.h"
#include "../../devices/pci_emul.h"
#include "../../core/sandbox.h"
#include "../../core/snapshot.h"
#include "../../vmm/vmm.h"
#include "fuzz_input.h"
#include "nvme_stubs.h"

uint8_t *nh_ram[2];
uint64_t nh_ram0_size = NH_RAM0_SIZE;
static const uint64_t ram_gpa[2] = { 0, NH_RAM1_BASE };
static uint64_t ram_size[2] = { NH_RAM0_SIZE, NH_RAM1_SIZE };
bool nh_verbose;

/* ---- vmm.h ---- */

static const struct vmm_host_info host_info = { .max_vcpus = 64 };
const struct vmm_host_info *vm_host_info(struct vmctx *ctx) { (void)ctx; return &host_info; }
uint64_t vm_get_lowmem_size(struct vmctx *ctx) { (void)ctx; return ram_size[0]; }
uint64_t vm_get_highmem_size(struct vmctx *ctx) { (void)ctx; return NH_RAM1_SIZE; }
bool vm_dirty_logging(struct vmctx *ctx) { (void)ctx; return false; }
const char *vm_name(struct vmctx *ctx) { (void)ctx; return get_config_value("name"); }

void vm_mark_dirty(struct vmctx *ctx, uint64_t gpa, uint64_t len)
{
	/* Whatever a device marks must be RAM it could write. */
	if (ctx != NH_CTX || (len && !vm_map_gpa(ctx, gpa, len)))
		abort();
}

void *vm_map_gpa(struct vmctx *ctx, uint64_t gpa, size_t len)
{
	if (ctx != NH_CTX)
		abort();
	for (int i = 0; i < 2; i++)
		if (gpa >= ram_gpa[i] && gpa - ram_gpa[i] <= ram_size[i] && len <= ram_size[i] - (gpa - ram_gpa[i]))
			return nh_ram[i] + (gpa - ram_gpa[i]);
	return NULL;
}

int vm_copy_to_guest(struct vmctx *ctx, uint64_t gpa, const void *src, size_t len)
{
	void *p = vm_map_gpa(ctx, gpa, len);
	if (!p)
		return -1;
	memcpy(p, src, len);
	return 0;
}

int vm_copy_from_guest(struct vmctx *ctx, uint64_t gpa, void *dst, size_t len)
{
	void *p = vm_map_gpa(ctx, gpa, len);
	if (!p)
		return -1;
	memcpy(dst, p, len);
	return 0;
}

void *nh_ptr(uint64_t gpa, size_t len)
{
	void *p = vm_map_gpa(NH_CTX, gpa, len);
	if (!p)
		abort();
	return p;
}

static pthread_mutex_t irq_mtx = PTHREAD_MUTEX_INITIALIZER;
static uint32_t msi_data[NH_MAX_MSI];
static unsigned nmsi;
static int irq_level[64];

int vm_set_irq_line(struct vmctx *ctx, int gsi, int level)
{
	(void)ctx;
	pthread_mutex_lock(&irq_mtx);
	if (gsi >= 0 && gsi < 64)
		irq_level[gsi] = level;
	pthread_mutex_unlock(&irq_mtx);
	return 0;
}

int vm_signal_msi(struct vmctx *ctx, uint64_t addr, uint32_t data)
{
	(void)ctx;
	(void)addr;
	pthread_mutex_lock(&irq_mtx);
	if (nmsi < NH_MAX_MSI)
		msi_data[nmsi] = data;
	nmsi++;
	pthread_mutex_unlock(&irq_mtx);
	return 0;
}

unsigned nh_msi_count(void)
{
	pthread_mutex_lock(&irq_mtx);
	unsigned n = nmsi;
	pthread_mutex_unlock(&irq_mtx);
	return n;
}

uint32_t nh_msi_data(unsigned i)
{
	pthread_mutex_lock(&irq_mtx);
	uint32_t d = i < NH_MAX_MSI && i < nmsi ? msi_data[i] : 0xffffffffu;
	pthread_mutex_unlock(&irq_mtx);
	return d;
}

void nh_msi_reset(void)
{
	pthread_mutex_lock(&irq_mtx);
	nmsi = 0;
	pthread_mutex_unlock(&irq_mtx);
}

int nh_irq_level(int gsi)
{
	pthread_mutex_lock(&irq_mtx);
	int l = gsi >= 0 && gsi < 64 ? irq_level[gsi] : 0;
	pthread_mutex_unlock(&irq_mtx);
	return l;
}

int vm_msi_route_add(struct vmctx *ctx, uint64_t addr, uint32_t data) { (void)ctx; (void)addr; (void)data; return -1; }
int vm_msi_route_update(struct vmctx *ctx, int gsi, uint64_t addr, uint32_t data)
{ (void)ctx; (void)gsi; (void)addr; (void)data; return -1; }
void vm_msi_route_del(struct vmctx *ctx, int gsi) { (void)ctx; (void)gsi; }
int vm_irqfd(struct vmctx *ctx, int fd, int gsi, bool assign) { (void)ctx; (void)fd; (void)gsi; (void)assign; return -1; }
int vm_ioeventfd(struct vmctx *ctx, const struct vm_ioeventfd *io, bool assign)
{ (void)ctx; (void)io; (void)assign; errno = ENOSYS; return -1; }

/* devices/acpi_pm.c is not linked: the reset port shares 0xcf9 with PCI's 0xcf8 range. */
int acpi_reset_port_access(bool in, uint32_t *val)
{
	if (in)
		*val = 0;
	return 0;
}

/* ---- core/control.c hooks ---- */

struct control_conn;
void control_register_stats(void (*fn)(struct control_conn *c)) { (void)fn; }
void control_reply(struct control_conn *c, const char *fmt, ...) { (void)c; (void)fmt; }

/* ---- event loop: fds only, run by nh_poll() ---- */

struct mevent {
	int fd;
	mevent_cb_t cb;
	void *arg;
	bool used;
};
static struct mevent events[64];
static pthread_mutex_t ev_mtx = PTHREAD_MUTEX_INITIALIZER;

struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg)
{
	(void)kind;
	pthread_mutex_lock(&ev_mtx);
	for (int i = 0; i < 64; i++)
		if (!events[i].used) {
			events[i] = (struct mevent){ fd, cb, arg, true };
			pthread_mutex_unlock(&ev_mtx);
			return &events[i];
		}
	pthread_mutex_unlock(&ev_mtx);
	return NULL;
}

int mevent_delete(struct mevent *ev)
{
	pthread_mutex_lock(&ev_mtx);
	if (ev)
		ev->used = false;
	pthread_mutex_unlock(&ev_mtx);
	return 0;
}

int nh_poll(void)
{
	int ran = 0;
	for (int i = 0; i < 64; i++) {
		pthread_mutex_lock(&ev_mtx);
		struct mevent ev = events[i];
		pthread_mutex_unlock(&ev_mtx);
		if (!ev.used)
			continue;
		struct pollfd p = { .fd = ev.fd, .events = POLLIN };
		if (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
			ev.cb(ev.fd, ev.arg);
			ran++;
		}
	}
	return ran;
}

/* ---- logging ---- */

int log_level_max = LOG_WARN;
static char last_log[512];

void logmsg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	if (lvl <= LOG_WARN) {
		va_start(ap, fmt);
		vsnprintf(last_log, sizeof(last_log), fmt, ap);
		va_end(ap);
	}
	if (nh_verbose) {
		va_start(ap, fmt);
		fprintf(stderr, "log(%d): ", lvl);
		vfprintf(stderr, fmt, ap);
		fprintf(stderr, "\n");
		va_end(ap);
	}
}

const char *nh_last_log(void) { return last_log; }

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fatal: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

/* ---- the VM ---- */

void nh_setup(const char *const *kv)
{
	char err[256];
	ram_size[0] = nh_ram0_size;
	for (int i = 0; i < 2; i++)
		if (!(nh_ram[i] = calloc(1, ram_size[i])))
			abort();
	for (int i = 0; kv[i]; i++)
		if (config_set_assignment(kv[i], err, sizeof(err)))
			fatal("config %s: %s", kv[i], err);
	if (init_run_all(NH_CTX))
		fatal("init_run_all failed");
}

static struct pci_devinst *slot_pi[32];
static void find_cb(struct pci_devinst *pi, void *arg)
{
	(void)arg;
	slot_pi[pi->pi_slot] = pi;
}

struct pci_devinst *nh_slot(int slot)
{
	if (slot < 0 || slot >= 32)
		return NULL;
	if (!slot_pi[slot])
		pci_walk_devices(find_cb, NULL);
	return slot_pi[slot];
}

void nh_mmio_write(uint64_t addr, int size, uint64_t val)
{
	mmio_dispatch(NULL, true, addr, size, &val);
}

uint64_t nh_mmio_read(uint64_t addr, int size)
{
	uint64_t v = 0;
	mmio_dispatch(NULL, false, addr, size, &v);
	return v;
}

void nh_cfg_write(int slot, int off, int bytes, uint32_t val)
{
	nh_mmio_write(VM_PCI_ECAM_BASE + ((uint64_t)slot << 15) + (uint64_t)off, bytes, val);
}

uint32_t nh_cfg_read(int slot, int off, int bytes)
{
	return (uint32_t)nh_mmio_read(VM_PCI_ECAM_BASE + ((uint64_t)slot << 15) + (uint64_t)off, bytes);
}

/* No seccomp in the fuzzers: libFuzzer forks and reads files as it likes. */
void sandbox_thread_role(enum sandbox_role role) { (void)role; }

void nh_save_state(struct pci_devinst *pi, struct snap_buf *sb)
{
	char err[256] = "";
	sb_init(sb);
	pi->pi_d->pe_pause(pi);
	if (pci_emul_save_state(pi, sb) || pi->pi_d->pe_snapshot(pi, sb, err, sizeof(err)) || sb->failed) {
		fprintf(stderr, "%s: state cannot be saved: %s\n", pi->pi_name, err);
		abort();
	}
	pi->pi_d->pe_resume(pi);
}

int nh_load_state(struct pci_devinst *pi, const uint8_t *p, size_t n, bool framework)
{
	char err[256];
	struct snap_rd rd;
	sr_init(&rd, p, n);
	if (framework && pci_emul_load_state(pi, &rd, err, sizeof(err)))
		return -1;
	return pi->pi_d->pe_restore(pi, &rd, pi->pi_d->pe_snapshot_version, err, sizeof(err)) ? -1 : 0;
}

void nh_fuzz_ram_write(struct fuzz_input *in)
{
	int hi = (int)fuzz_take(in, 1) & 1;
	uint64_t off = fuzz_take(in, 3), len = fuzz_take(in, 1);
	if (in->eof || len > in->n) {
		in->eof = true;
		return;
	}
	uint64_t base = hi ? NH_RAM1_BASE : 0, size = hi ? NH_RAM1_SIZE : nh_ram0_size;
	off %= size;
	if (len > size - off)
		len = size - off;
	memcpy(nh_ptr(base + off, len), in->p, len);
	in->p += len;
	in->n -= len;
}

void nh_fuzz_cfg_write(struct fuzz_input *in, int slot)
{
	int off = (int)fuzz_take(in, 1), sz = 1 << (fuzz_take(in, 1) % 3);
	uint32_t v = (uint32_t)fuzz_take(in, 4);
	if (!in->eof && off + sz <= 256)
		nh_cfg_write(slot, off & ~(sz - 1), sz, v);
}

void nh_fuzz_checkpoint(struct fuzz_input *in, struct pci_devinst *pi)
{
	int mode = (int)fuzz_take(in, 1);
	if (in->eof)
		return;
	pi->pi_d->pe_pause(pi);
	if (mode == 0) {
		struct snap_buf sb;
		char err[256];
		sb_init(&sb);
		if (pi->pi_d->pe_snapshot(pi, &sb, err, sizeof(err)) == 0 && !sb.failed &&
		    nh_load_state(pi, sb.data, sb.len, false) != 0)
			abort();   /* a state just saved must load */
		sb_free(&sb);
	} else {
		size_t len = (size_t)fuzz_take(in, 2);
		if (len > in->n)
			len = in->n;
		(void)nh_load_state(pi, in->p, len, false);
		in->p += len;
		in->n -= len;
	}
	pi->pi_d->pe_resume(pi);
}

void nh_fuzz_reset(struct pci_devinst *pi, const struct snap_buf *baseline)
{
	pi->pi_d->pe_pause(pi);
	if (nh_load_state(pi, baseline->data, baseline->len, true))
		abort();   /* what was saved at start-up must load */
	pi->pi_d->pe_resume(pi);
	memset(nh_ram[0], 0, nh_ram0_size);
	memset(nh_ram[1], 0, NH_RAM1_SIZE);
}
