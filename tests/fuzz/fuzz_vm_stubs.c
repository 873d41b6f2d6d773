/*
 * The stubbed KVM layer and the fixed small VM shared by fuzz_ckpt.c and
 * fuzz_migration.c (interface and VM in fuzz_vm_stubs.h).
 */
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/config.h"
#include "../../core/control.h"
#include "../../core/sandbox.h"
#include "../../core/init.h"
#include "../../core/log.h"
#include "../../core/mevent.h"
#include "../../devices/pci_emul.h"
#include "../../devices/virtio.h"
#include "../../vmm/vmm.h"
#include "fuzz_vm_stubs.h"

uint8_t *fz_ram[FZ_NREGIONS];
const uint64_t fz_ram_gpa[FZ_NREGIONS] = { 0, FZ_RAM1_BASE }, fz_ram_size[FZ_NREGIONS] = { FZ_RAM0_SIZE, FZ_RAM1_SIZE };
struct hyve_vm fz_vm;
static char fake_vcpus[HYVE_MAX_VCPUS];

/* ---- stubs: the KVM layer (vmm/vmm.h) ---- */

static const struct vmm_host_info host_info = { .max_vcpus = HYVE_MAX_VCPUS };
const struct vmm_host_info *vm_host_info(struct vmctx *ctx) { (void)ctx; return &host_info; }
/* Not an emulating host: cpuid_build never asks. */
int vmm_probe_forced_cpuid(uint32_t forced[VMM_FORCED_CPUID_REGS]) { (void)forced; abort(); }
uint64_t vm_get_lowmem_size(struct vmctx *ctx) { (void)ctx; return FZ_RAM0_SIZE; }
uint64_t vm_get_highmem_size(struct vmctx *ctx) { (void)ctx; return FZ_RAM1_SIZE; }
bool vm_dirty_logging(struct vmctx *ctx) { (void)ctx; return false; }
void vm_mark_dirty(struct vmctx *ctx, uint64_t gpa, uint64_t len) { (void)ctx; (void)gpa; (void)len; }
/* Source side of migration (linked, never run by the destination; weak:
 * bench/mig_pipeline.c runs a source and brings its own). */
__attribute__((weak)) int vm_dirty_log_enable(struct vmctx *ctx, bool on) { (void)ctx; (void)on; errno = ENOSYS; return -1; }
__attribute__((weak)) int vm_dirty_log_get(struct vmctx *ctx, int i, uint64_t *bitmap) { (void)ctx; (void)i; (void)bitmap; errno = ENOSYS; return -1; }
__attribute__((weak)) int vm_dirty_log_clear(struct vmctx *ctx, int i, uint64_t first_page, uint32_t npages, uint64_t *bitmap)
{ (void)ctx; (void)i; (void)first_page; (void)npages; (void)bitmap; errno = ENOSYS; return -1; }

void *vm_map_gpa(struct vmctx *ctx, uint64_t gpa, size_t len)
{
	if (ctx != FZ_CTX)
		abort();
	for (int i = 0; i < FZ_NREGIONS; i++)
		if (gpa >= fz_ram_gpa[i] && gpa - fz_ram_gpa[i] <= fz_ram_size[i] && len <= fz_ram_size[i] - (gpa - fz_ram_gpa[i]))
			return fz_ram[i] + (gpa - fz_ram_gpa[i]);
	return NULL;
}

int vm_set_irq_line(struct vmctx *ctx, int gsi, int level) { (void)ctx; (void)gsi; (void)level; return 0; }
int vm_irq_pulse(struct vmctx *ctx, int gsi) { (void)ctx; (void)gsi; return 0; }
int vm_signal_msi(struct vmctx *ctx, uint64_t addr, uint32_t data) { (void)ctx; (void)addr; (void)data; return 0; }
int vm_msi_route_add(struct vmctx *ctx, uint64_t addr, uint32_t data) { (void)ctx; (void)addr; (void)data; return -1; }
int vm_msi_route_update(struct vmctx *ctx, int gsi, uint64_t addr, uint32_t data)
{ (void)ctx; (void)gsi; (void)addr; (void)data; return -1; }
void vm_msi_route_del(struct vmctx *ctx, int gsi) { (void)ctx; (void)gsi; }
int vm_irqfd(struct vmctx *ctx, int fd, int gsi, bool assign) { (void)ctx; (void)fd; (void)gsi; (void)assign; return -1; }
int vm_ioeventfd(struct vmctx *ctx, const struct vm_ioeventfd *io, bool assign)
{ (void)ctx; (void)io; (void)assign; return -1; }

int vm_mem_regions(struct vmctx *ctx, struct vm_mem_region *out, int max)
{
	(void)ctx;
	int n = max < FZ_NREGIONS ? max : FZ_NREGIONS;
	for (int i = 0; i < n; i++)
		out[i] = (struct vm_mem_region){ fz_ram_gpa[i], fz_ram_size[i], fz_ram[i] };
	return n;
}

int vm_copy_from_guest(struct vmctx *ctx, uint64_t gpa, void *dst, size_t len)
{
	void *p = vm_map_gpa(ctx, gpa, len);
	if (!p)
		return -1;
	memcpy(dst, p, len);
	return 0;
}

void vm_prefetch_memory(struct vmctx *ctx, int fd) { (void)ctx; (void)fd; }   /* advisory: nothing to prefetch here */

/* A private file mapping, emulated by reading: the range must be in the file. */
int vm_map_memory_file(struct vmctx *ctx, int i, int fd, uint64_t off)
{
	struct stat st;
	(void)ctx;
	if (i < 0 || i >= FZ_NREGIONS || fstat(fd, &st))
		abort();
	if ((off & 4095) || off > (uint64_t)st.st_size || fz_ram_size[i] > (uint64_t)st.st_size - off) {
		fprintf(stderr, "region %d mapped from file offset 0x%llx + 0x%llx past EOF 0x%llx\n", i,
		        (unsigned long long)off, (unsigned long long)fz_ram_size[i], (unsigned long long)st.st_size);
		abort();
	}
	memset(fz_ram[i], 0, fz_ram_size[i]);
	if (pread(fd, fz_ram[i], fz_ram_size[i], (off_t)off) < 0)
		abort();
	return 0;
}

/*
 * What KVM_GET_SUPPORTED_CPUID gives (a plausible subset): cpuid_build
 * adapts it and build_compat sends the feature leaves; a source claiming a
 * bit not here is refused.
 */
const struct kvm_cpuid_entry2 fz_cpuid[] = {
	{ .function = 0, .eax = 0xd, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
	{ .function = 1, .eax = 0x000906ea, .ebx = 0x00000800, .ecx = 0xf7fa3223, .edx = 0x0f8bfbff },
	{ .function = 7, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 0x029c6fbf, .ecx = 0x40000000 },
	{ .function = 0xb, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 1, .ebx = 1, .ecx = 0x100 },
	{ .function = 0x80000000, .eax = 0x80000008 },
	{ .function = 0x80000001, .ecx = 0x00000121, .edx = 0x2c100800 },
};
const int fz_ncpuid = (int)(sizeof(fz_cpuid) / sizeof(fz_cpuid[0]));

struct kvm_cpuid2 *vm_get_supported_cpuid(struct vmctx *ctx)
{
	if (ctx != FZ_CTX)
		abort();
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)fz_ncpuid * sizeof(c->entries[0]));
	if (!c)
		return NULL;
	c->nent = (uint32_t)fz_ncpuid;
	memcpy(c->entries, fz_cpuid, sizeof(fz_cpuid));
	return c;
}

static int vcpu_index(struct vcpu *v)
{
	int i = (int)((char *)v - fake_vcpus);
	if (i < 0 || i >= FZ_NCPUS)
		abort();
	return i;
}
int vcpu_id(struct vcpu *v) { return vcpu_index(v); }
size_t vcpu_xsave_size(struct vcpu *v) { (void)vcpu_index(v); return sizeof(struct kvm_xsave); }

/* Saved state: a fixed pattern per structure (what a seed carries). */
static void pattern(void *p, size_t n, uint8_t tag)
{
	uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(tag + i * 7);
}
int vcpu_get_regs(struct vcpu *v, struct kvm_regs *r)
{
	(void)vcpu_index(v);
	memset(r, 0, sizeof(*r));
	r->rip = 0x100000;
	r->rflags = 2;
	return 0;
}
int vcpu_get_sregs(struct vcpu *v, struct kvm_sregs *s)
{
	(void)vcpu_index(v);
	memset(s, 0, sizeof(*s));
	s->cr0 = 0x80050033;
	s->apic_base = 0xfee00900;
	return 0;
}
int vcpu_get_xsave(struct vcpu *v, void *buf) { pattern(buf, vcpu_xsave_size(v), 1); return 0; }
int vcpu_get_xcrs(struct vcpu *v, struct kvm_xcrs *x)
{
	(void)vcpu_index(v);
	memset(x, 0, sizeof(*x));
	x->nr_xcrs = 1;
	x->xcrs[0].value = 7;
	return 0;
}
int vcpu_get_lapic(struct vcpu *v, struct kvm_lapic_state *l) { (void)vcpu_index(v); pattern(l, sizeof(*l), 2); return 0; }
int vcpu_get_events(struct vcpu *v, struct kvm_vcpu_events *e) { (void)vcpu_index(v); memset(e, 0, sizeof(*e)); return 0; }
int vcpu_get_mp_state(struct vcpu *v, uint32_t *mp) { (void)vcpu_index(v); *mp = KVM_MP_STATE_RUNNABLE; return 0; }
int vcpu_get_debugregs(struct vcpu *v, struct kvm_debugregs *d) { (void)vcpu_index(v); memset(d, 0, sizeof(*d)); return 0; }

static const uint32_t msr_list[] = { 0x10, 0x174, 0x175, 0x176, 0x1b, 0xc0000080, 0xc0000081, 0x6e0 };
#define NMSRS (int)(sizeof(msr_list) / sizeof(msr_list[0]))
int vm_msr_index_list(struct vmctx *ctx, const uint32_t **idx) { (void)ctx; *idx = msr_list; return NMSRS; }
int vcpu_get_msrs(struct vcpu *v, const uint32_t *idx, uint64_t *vals, bool *ok, int n)
{
	(void)vcpu_index(v);
	for (int i = 0; i < n; i++) {
		vals[i] = (uint64_t)idx[i] * 0x10001;
		ok[i] = idx[i] != 0x6e0;   /* one the host cannot read */
	}
	return 0;
}
/* KVM stops at the first MSR it refuses: here any index with bit 30 set. */
int vcpu_set_msrs(struct vcpu *v, const uint32_t *idx, const uint64_t *vals, int n)
{
	(void)vcpu_index(v);
	(void)vals;
	int i = 0;
	while (i < n && !(idx[i] & 0x40000000u))
		i++;
	return i;
}

int vcpu_set_regs(struct vcpu *v, const struct kvm_regs *r) { (void)vcpu_index(v); (void)r; return 0; }
int vcpu_set_sregs(struct vcpu *v, const struct kvm_sregs *s) { (void)vcpu_index(v); (void)s; return 0; }
int vcpu_set_xsave(struct vcpu *v, const void *buf) { (void)vcpu_index(v); (void)buf; return 0; }
int vcpu_set_xcrs(struct vcpu *v, const struct kvm_xcrs *x) { (void)vcpu_index(v); return x->nr_xcrs > KVM_MAX_XCRS ? -1 : 0; }
int vcpu_set_lapic(struct vcpu *v, const struct kvm_lapic_state *l) { (void)vcpu_index(v); (void)l; return 0; }
int vcpu_set_events(struct vcpu *v, const struct kvm_vcpu_events *e) { (void)vcpu_index(v); (void)e; return 0; }
int vcpu_set_mp_state(struct vcpu *v, uint32_t mp) { (void)vcpu_index(v); return mp > KVM_MP_STATE_AP_RESET_HOLD ? -1 : 0; }
int vcpu_set_debugregs(struct vcpu *v, const struct kvm_debugregs *d) { (void)vcpu_index(v); (void)d; return 0; }

int vm_get_irqchip(struct vmctx *ctx, struct kvm_irqchip *c)
{
	(void)ctx;
	uint32_t id = c->chip_id;
	pattern(&c->chip, sizeof(c->chip), (uint8_t)(3 + id));
	c->chip_id = id;
	c->pad = 0;
	return 0;
}
int vm_set_irqchip(struct vmctx *ctx, const struct kvm_irqchip *c) { (void)ctx; return c->chip_id > 2 ? -1 : 0; }
int vm_get_pit(struct vmctx *ctx, struct kvm_pit_state2 *p) { (void)ctx; pattern(p, sizeof(*p), 9); return 0; }
int vm_set_pit(struct vmctx *ctx, const struct kvm_pit_state2 *p) { (void)ctx; (void)p; return 0; }
int vm_get_clock(struct vmctx *ctx, struct kvm_clock_data *c) { (void)ctx; memset(c, 0, sizeof(*c)); c->clock = 123456789; return 0; }
int vm_set_clock(struct vmctx *ctx, const struct kvm_clock_data *c) { (void)ctx; (void)c; return 0; }

/* ---- stubs: vCPU run control (core/vcpu.c) ---- */

/* Weak: bench/mig_pipeline.c parks and throttles its guest stand-in here. */
__attribute__((weak)) void vcpus_pause(struct hyve_vm *v) { (void)v; }
__attribute__((weak)) void vcpus_resume(struct hyve_vm *v) { (void)v; }
__attribute__((weak)) void vcpus_set_throttle(struct hyve_vm *v, int pct) { (void)v; (void)pct; }
void vm_request_exit(int status) { (void)status; }
/* ACPI S3: never entered here (no table build, so no FACS). */
void vcpus_suspend(void) { }
int vcpus_wake(uint32_t vector, char *err, size_t errlen) { (void)vector; snprintf(err, errlen, "not suspended"); return -1; }
bool vcpus_suspended(void) { return false; }
uint64_t acpi_facs_gpa(void) { return 0; }

/* ---- stubs: event loop, control socket, log ---- */

static char mevent_dummy;
struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg)
{ (void)fd; (void)kind; (void)cb; (void)arg; return (struct mevent *)&mevent_dummy; }
struct mevent *mevent_add_timer(uint64_t first_ns, uint64_t period_ns, mevent_cb_t cb, void *arg)
{ (void)first_ns; (void)period_ns; (void)cb; (void)arg; return (struct mevent *)&mevent_dummy; }
int mevent_timer_set(struct mevent *ev, uint64_t first_ns, uint64_t period_ns) { (void)ev; (void)first_ns; (void)period_ns; return 0; }
int mevent_enable(struct mevent *ev) { (void)ev; return 0; }
int mevent_disable(struct mevent *ev) { (void)ev; return 0; }
int mevent_delete(struct mevent *ev) { (void)ev; return 0; }
/* Work for the main loop (virtio-console's socket work) is not run: no VM runs here. */
int mevent_call(void (*fn)(void *), void *arg) { (void)fn; (void)arg; return 0; }

/* core/control.c is not linked: its hooks for the devices and migration. */
void control_register_stats(void (*fn)(struct control_conn *c)) { (void)fn; }
void control_reply(struct control_conn *c, const char *fmt, ...) { (void)c; (void)fmt; }
__attribute__((weak)) void control_register(const char *command, control_handler_t fn) { (void)command; (void)fn; }
void control_exit_after_reply(struct control_conn *c, int status) { (void)c; (void)status; }
void control_run_on_main(void (*fn)(void *), void *arg) { fn(arg); }   /* no loop: this is the main thread */

int log_level_max = LOG_ERR;
void logmsg(enum log_level lvl, const char *fmt, ...) { (void)lvl; (void)fmt; }
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

/* ---- the fixed VM ---- */

char fz_tmpdir[64], fz_share[96], fz_share_file[128], fz_share_dir[128], fz_con_sock[128];

/* main.c's key table is static there; what config_validate needs of it to
 * walk a foreign configuration's whole tree (types as in core/main.c). */
static const struct config_key fz_core_keys[] = {
	{ "name", CFG_STRING, NULL, NULL },
	{ "cpus", CFG_UINT, NULL, NULL },
	{ "sockets", CFG_UINT, NULL, NULL },
	{ "cores", CFG_UINT, NULL, NULL },
	{ "threads", CFG_UINT, NULL, NULL },
	{ "maxcpus", CFG_UINT, NULL, NULL },
	{ "memory.size", CFG_SIZE, NULL, NULL },
	{ "memory.wired", CFG_BOOL, NULL, NULL },
	{ "boot.kernel", CFG_STRING, NULL, NULL },
	{ "boot.cmdline", CFG_STRING, NULL, NULL },
	{ "log.level", CFG_UINT, NULL, NULL },
	{ "rtc.use_localtime", CFG_BOOL, NULL, NULL },
	{ "snapshot.restore_memory", CFG_STRING, NULL, NULL },
	{ NULL, 0, NULL, NULL },
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	remove(path);
	return 0;
}

/* The share may hold what restored 9P requests made. */
static void cleanup(void)
{
	nftw(fz_tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int fz_set_host_keys(void)
{
	if (set_config_value("pci.0.4.0.path", fz_share) || set_config_value("pci.0.5.0.port.0.path", fz_con_sock) ||
	    set_config_value("lpc.com1.path", "file=/dev/null"))
		return -1;
	return 0;
}

void fz_set_fixed_config(void)
{
	static const char *const kv[] = {
		"name=fuzz",
		"cpus=1",
		"memory.size=8K",
		"pci.0.31.0.device=lpc",
		"pci.0.3.0.device=virtio-rnd",
		"pci.0.4.0.device=virtio-9p",
		"pci.0.4.0.tag=fz",
		"pci.0.5.0.device=virtio-console",
		"pci.0.5.0.port.0.name=fz",
		NULL,
	};
	char err[256];
	for (int i = 0; kv[i]; i++)
		if (config_set_assignment(kv[i], err, sizeof(err)))
			fatal("fixed config: %s", err);
	if (fz_set_host_keys())
		fatal("fixed config: host keys");
}

void fz_setup(const char *name)
{
	snprintf(fz_tmpdir, sizeof(fz_tmpdir), "/tmp/%s.XXXXXX", name);
	if (!mkdtemp(fz_tmpdir))
		abort();
	snprintf(fz_share, sizeof(fz_share), "%s/share", fz_tmpdir);
	snprintf(fz_share_dir, sizeof(fz_share_dir), "%s/d", fz_share);
	snprintf(fz_share_file, sizeof(fz_share_file), "%s/f", fz_share);
	snprintf(fz_con_sock, sizeof(fz_con_sock), "%s/con.sock", fz_tmpdir);
	if (mkdir(fz_share, 0755) || mkdir(fz_share_dir, 0755))
		abort();
	FILE *f = fopen(fz_share_file, "w");
	if (!f)
		abort();
	fputs("some file content\n", f);
	fclose(f);
	atexit(cleanup);
	for (int i = 0; i < FZ_NREGIONS; i++)
		if (!(fz_ram[i] = calloc(1, fz_ram_size[i])))
			abort();
	config_register_keys(fz_core_keys);
	fz_set_fixed_config();
	if (init_run_all(FZ_CTX))
		fatal("init_run_all failed");
	fz_vm.ctx = FZ_CTX;
	fz_vm.ncpus = FZ_NCPUS;
	for (int i = 0; i < FZ_NCPUS; i++)
		fz_vm.vcpu[i] = (struct vcpu *)&fake_vcpus[i];
}

static struct vm_sections baseline;

void fz_save_baseline(void)
{
	char err[512];
	if (vmstate_save(&fz_vm, &baseline, err, sizeof(err)))
		fatal("initial state cannot be saved: %s", err);
}

void fz_load_baseline(void)
{
	char err[512];
	if (vmstate_load(&fz_vm, &baseline, err, sizeof(err)))
		fatal("initial device state does not load: %s", err);
}

static void check_bar(struct pci_devinst *pi, void *arg)
{
	(void)arg;
	for (int i = 0; i < PCI_MAX_BARS; i++) {
		const struct pcibar *b = &pi->pi_bar[i];
		bool ok = (b->type != PCIBAR_IO || (b->addr <= 0x10000 && b->size <= 0x10000 - b->addr)) &&
		          (b->type != PCIBAR_MEM32 || (b->addr <= 1ULL << 32 && b->size <= (1ULL << 32) - b->addr));
		if (!ok) {
			fprintf(stderr, "%s: restored BAR %d (type %d) at 0x%llx size 0x%llx does not fit its type\n",
			        pi->pi_name, i, b->type, (unsigned long long)b->addr, (unsigned long long)b->size);
			abort();
		}
	}
}

void fz_check_bars(void)
{
	pci_walk_devices(check_bar, NULL);
}

/* ---- driving the devices (seed modes) ---- */

static struct pci_devinst *slot_pi[32];
static void find_cb(struct pci_devinst *pi, void *arg)
{
	(void)arg;
	slot_pi[pi->pi_slot] = pi;
}

struct pci_devinst *fz_slot(int slot)
{
	if (slot < 0 || slot >= 32)
		return NULL;
	if (!slot_pi[slot])
		pci_walk_devices(find_cb, NULL);
	return slot_pi[slot];
}

void fz_vi_write(struct pci_devinst *pi, uint64_t off, int size, uint64_t val)
{
	vi_pci_write(NULL, pi, VI_MODERN_BAR, off, size, val);
}

void fz_bring_up(struct pci_devinst *pi, uint16_t qsize, uint64_t desc, uint64_t avail, uint64_t used)
{
	fz_vi_write(pi, 0x14, 1, 0);
	fz_vi_write(pi, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
	uint64_t offered = 0;
	for (uint32_t sel = 0; sel < 2; sel++) {
		fz_vi_write(pi, 0x00, 4, sel);
		offered |= vi_pci_read(NULL, pi, VI_MODERN_BAR, 0x04, 4) << (32 * sel);
	}
	uint64_t want = offered & (VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | VIRTIO_RING_F_INDIRECT_DESC |
	                           0xffffff);
	for (uint32_t sel = 0; sel < 2; sel++) {
		fz_vi_write(pi, 0x08, 4, sel);
		fz_vi_write(pi, 0x0c, 4, (uint32_t)(want >> (32 * sel)));
	}
	fz_vi_write(pi, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	fz_vi_write(pi, 0x16, 2, 0);
	fz_vi_write(pi, 0x18, 2, qsize);
	fz_vi_write(pi, 0x20, 8, desc);
	fz_vi_write(pi, 0x28, 8, avail);
	fz_vi_write(pi, 0x30, 8, used);
	fz_vi_write(pi, 0x1c, 2, 1);
	fz_vi_write(pi, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK);
}
bool vcpu_cpuid_lookup(struct vcpu *vcpu, uint32_t leaf, uint32_t sub, uint32_t out[4])
{
	(void)vcpu; (void)leaf; (void)sub;
	out[0] = out[1] = out[2] = out[3] = 0;
	return false;
}
int vm_deny_msrs(struct vmctx *ctx, const uint32_t *msrs, int n) { (void)ctx; (void)msrs; (void)n; return 0; }
/* No seccomp in the fuzzers: libFuzzer forks and reads files as it likes. */
void sandbox_thread_role(enum sandbox_role role) { (void)role; }
