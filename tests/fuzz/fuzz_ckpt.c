/*
 * libFuzzer target for the checkpoint file reader (core/checkpoint.c) and
 * everything restore does with the file: the header and section table
 * (checkpoint_open), the config section (config_from_string, then
 * config_validate and the typed getters, as hyve -r does before it builds
 * the VM), and checkpoint_restore: the memory descriptor checks, eager
 * ("copy") or lazy RAM restore, and vmstate_load with every section decoder
 * of a small VM — vCPU state, in-kernel chips, the PCI framework state,
 * the virtio transport (queue addresses checked against guest RAM) and the
 * models' own state (virtio-rnd, virtio-9p fids reopened in a scratch
 * share, virtio-console ports), the UART, RTC, ACPI PM and i8042 (not
 * pc-testdev: its 64 KiB page would be most of every input).
 *
 *   tests/fuzz/run.sh -t 60 ckpt
 *
 * Only the KVM layer is stubbed (vmm.h: vCPU and chip state are accepted
 * as KVM would take any well-sized blob; guest RAM is two heap blocks),
 * plus the event loop and control socket hooks the devices register with.
 * The devices are real and built once from a fixed configuration
 * (set_fixed_config below) by init_run_all, as hyve does; the file's own
 * config section is parsed and validated but does not rebuild them.
 *
 * Input: byte 0 is a mode, the rest is the checkpoint file.
 *   bit 0: recompute every CRC (file header, each section header, each
 *          section's data; for "memory" its 4 KiB descriptor) before the
 *          file is read, so mutations reach the decoders instead of
 *          stopping at a checksum; clear, CRCs are checked as they are.
 *   bit 1: punch every all-zero 4 KiB page of the file into a hole (the
 *          writer's sparse RAM), which copy_region's SEEK_DATA walk skips.
 *   bit 2: (with core/config_trust.c) the file's host-side keys are
 *          trusted (snapshot.trust_config=true); clear, the harness gives
 *          them itself as -o options would.
 *   bit 3: after a successful restore, vmstate_resume() as hyve does
 *          next (devices look at the restored rings: virtio-rnd fills the
 *          buffers the file's RAM offers), then vmstate_quiesce().
 * The file goes to a memfd opened through /proc/self/fd/N.
 *
 * Properties checked besides the sanitizers: a lazily mapped RAM region
 * lies inside the file (a mapping past EOF would SIGBUS the guest); a
 * state that restore accepted can be saved and loaded again; the devices'
 * initial state (saved at start-up, loaded before each input) always loads.
 *
 * -DFUZZ_MAKE_SEEDS builds a main() that brings the same VM's devices up
 * (virtio-rnd queue enabled; virtio-9p queue enabled and a 9P session with
 * an attached root, a walked directory and an opened file), then writes
 * checkpoints with the real writer (checkpoint_save) as seed inputs
 * into a directory: tests/fuzz/run.sh --make-seeds ckpt refreshes
 * tests/fuzz/corpus/ckpt/.
 * -DFUZZ_STANDALONE builds a main() that replays input files.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "../../core/checkpoint.h"
#include "../../core/config.h"
#include "../../core/control.h"
#include "../../core/exitcode.h"
#include "../../core/init.h"
#include "../../core/log.h"
#include "../../core/mevent.h"
#include "../../core/snapshot.h"
#include "../../core/vm.h"
#include "../../core/vmstate.h"
#include "../../devices/pci_emul.h"
#include "../../devices/virtio.h"
#include "../../vmm/vmm.h"
#if __has_include("../../core/config_trust.h")
#include "../../core/config_trust.h"
#define HAVE_CONFIG_TRUST 1   /* run.sh links core/config_trust.c when it exists */
#endif

/* ---- guest RAM: two regions, as vm_mem_regions reports them ---- */

#define RAM0_SIZE 0x2000ULL
#define RAM1_BASE 0x100000000ULL
#define RAM1_SIZE 0x1000ULL
#define NREGIONS 2
static uint8_t *ram[NREGIONS];
static const uint64_t ram_gpa[NREGIONS] = { 0, RAM1_BASE }, ram_size[NREGIONS] = { RAM0_SIZE, RAM1_SIZE };

static struct vmctx *const FAKE_CTX = (struct vmctx *)0x1;
static char fake_vcpus[HYVE_MAX_VCPUS];
#define NCPUS 1
static struct hyve_vm vm;

/* ---- stubs: the KVM layer (vmm/vmm.h) ---- */

static const struct vmm_host_info host_info = { .max_vcpus = HYVE_MAX_VCPUS };
const struct vmm_host_info *vm_host_info(struct vmctx *ctx) { (void)ctx; return &host_info; }
uint64_t vm_get_lowmem_size(struct vmctx *ctx) { (void)ctx; return RAM0_SIZE; }
uint64_t vm_get_highmem_size(struct vmctx *ctx) { (void)ctx; return RAM1_SIZE; }
bool vm_dirty_logging(struct vmctx *ctx) { (void)ctx; return false; }
void vm_mark_dirty(struct vmctx *ctx, uint64_t gpa, uint64_t len) { (void)ctx; (void)gpa; (void)len; }

void *vm_map_gpa(struct vmctx *ctx, uint64_t gpa, size_t len)
{
	if (ctx != FAKE_CTX)
		abort();
	for (int i = 0; i < NREGIONS; i++)
		if (gpa >= ram_gpa[i] && gpa - ram_gpa[i] <= ram_size[i] && len <= ram_size[i] - (gpa - ram_gpa[i]))
			return ram[i] + (gpa - ram_gpa[i]);
	return NULL;
}

int vm_set_irq_line(struct vmctx *ctx, int gsi, int level) { (void)ctx; (void)gsi; (void)level; return 0; }
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
	int n = max < NREGIONS ? max : NREGIONS;
	for (int i = 0; i < n; i++)
		out[i] = (struct vm_mem_region){ ram_gpa[i], ram_size[i], ram[i] };
	return n;
}

/* A private file mapping, emulated by reading: the range must be in the file. */
int vm_map_memory_file(struct vmctx *ctx, int i, int fd, uint64_t off)
{
	struct stat st;
	(void)ctx;
	if (i < 0 || i >= NREGIONS || fstat(fd, &st))
		abort();
	if ((off & 4095) || off > (uint64_t)st.st_size || ram_size[i] > (uint64_t)st.st_size - off) {
		fprintf(stderr, "region %d mapped from file offset 0x%llx + 0x%llx past EOF 0x%llx\n", i,
		        (unsigned long long)off, (unsigned long long)ram_size[i], (unsigned long long)st.st_size);
		abort();
	}
	memset(ram[i], 0, ram_size[i]);
	if (pread(fd, ram[i], ram_size[i], (off_t)off) < 0)
		abort();
	return 0;
}

static int vcpu_index(struct vcpu *v)
{
	int i = (int)((char *)v - fake_vcpus);
	if (i < 0 || i >= NCPUS)
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

void vcpus_pause(struct hyve_vm *v) { (void)v; }
void vcpus_resume(struct hyve_vm *v) { (void)v; }
void vm_request_exit(int status) { (void)status; }

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

void control_register_stats(void (*fn)(struct control_conn *c)) { (void)fn; }
void control_reply(struct control_conn *c, const char *fmt, ...) { (void)c; (void)fmt; }

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

static char tmpdir[64];
static char share_file[128], share_dir[128], share[96], con_sock[128];

/* main.c's key table is static there; what config_validate needs of it to
 * walk a checkpoint's whole tree (types as in core/main.c). */
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

/* The share may hold what restored 9P requests made (bit 3). */
static void cleanup(void)
{
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The keys naming host resources (what -o gives when the file is not trusted). */
static void set_host_keys(void)
{
	if (set_config_value("pci.0.4.0.path", share) || set_config_value("pci.0.5.0.port.0.path", con_sock) ||
	    set_config_value("lpc.com1.path", "file=/dev/null"))
		fatal("fixed config: host keys");
}

static void set_fixed_config(void)
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
	set_host_keys();
}

static struct vm_sections baseline;

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/fuzz_ckpt.XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
	snprintf(share, sizeof(share), "%s/share", tmpdir);
	snprintf(share_dir, sizeof(share_dir), "%s/d", share);
	snprintf(share_file, sizeof(share_file), "%s/f", share);
	snprintf(con_sock, sizeof(con_sock), "%s/con.sock", tmpdir);
	if (mkdir(share, 0755) || mkdir(share_dir, 0755))
		abort();
	FILE *f = fopen(share_file, "w");
	if (!f)
		abort();
	fputs("some file content\n", f);
	fclose(f);
	atexit(cleanup);
	for (int i = 0; i < NREGIONS; i++)
		if (!(ram[i] = calloc(1, ram_size[i])))
			abort();
	config_register_keys(fz_core_keys);
	set_fixed_config();
	if (init_run_all(FAKE_CTX))
		fatal("init_run_all failed");
	vm.ctx = FAKE_CTX;
	vm.ncpus = NCPUS;
	for (int i = 0; i < NCPUS; i++)
		vm.vcpu[i] = (struct vcpu *)&fake_vcpus[i];
}

static void save_baseline(void)
{
	char err[512];
	if (vmstate_save(&vm, &baseline, err, sizeof(err)))
		fatal("initial state cannot be saved: %s", err);
}

/* ---- input handling ---- */

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }
static uint32_t crc(const uint8_t *p, size_t n) { return (uint32_t)crc32_z(0, p, n); }

/* Walk the sections as the reader does and make every checksum right. */
static void fix_crcs(uint8_t *b, size_t n)
{
	if (n < 64)
		return;
	put32(b + 60, crc(b, 60));
	uint64_t off = get32(b + 12);
	for (int i = 0; i < 4096 && off <= n && n - off >= 64; i++) {
		uint8_t *s = b + off;
		uint64_t len = get64(s + 40), data = get64(s + 48);
		bool fits = data >= off + 64 && data <= n && len <= n - data;
		if (fits) {
			size_t clen = strncmp((char *)s, "memory", 32) == 0 ? (len >= 4096 ? 4096 : 0) : (size_t)len;
			put32(s + 56, crc(b + data, clen));
		}
		put32(s + 60, crc(s, 60));
		if (!fits || strncmp((char *)s, "end", 32) == 0)
			break;
		off = data + len;
	}
}

static int memfd = -1;
static char memfd_path[64];

static void write_file(const uint8_t *d, size_t n, bool holes)
{
	if (memfd < 0) {
		memfd = memfd_create("fuzz_ckpt", MFD_CLOEXEC);
		if (memfd < 0)
			abort();
		snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
	}
	if (ftruncate(memfd, 0) || (n && pwrite(memfd, d, n, 0) != (ssize_t)n))
		abort();
	if (!holes)
		return;
	static const uint8_t zero[4096];
	for (size_t p = 0; p + 4096 <= n; p += 4096)
		if (memcmp(d + p, zero, 4096) == 0)
			fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)p, 4096);
}

static volatile uint64_t sink;
static bool verbose;   /* FUZZ_VERBOSE=1: say how far each input got */

static void check_bars(struct pci_devinst *pi, void *arg)
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

/* What hyve -r does with the configuration before it builds the VM. */
static void check_file_config(void)
{
	char err[512];
	if (config_validate(err, sizeof(err))) {
		if (verbose)
			fprintf(stderr, "ckpt: %s\n", err);
		return;
	}
	/* Validated: the typed getters must not fail (they would exit). */
	sink += get_config_uint_default("cpus", 1) + get_config_uint_default("log.level", 2) +
	        get_config_size_default("memory.size", 0) + get_config_bool_default("memory.wired", false) +
	        get_config_bool_default("lpc.pc-testdev", false);
	size_t n;
	const char **c = config_children("pci.0", &n);
	if (c) {
		for (size_t i = 0; i < n; i++)
			free((void *)c[i]);
		free(c);
	}
	char *s = config_to_string(&n);
	if (!s)
		abort();
	/* What was serialized loads back (a checkpoint of a restored VM). */
	config_clear();
	if (config_from_string(s, n, err, sizeof(err))) {
		fprintf(stderr, "config of a valid checkpoint does not reload: %s\n", err);
		abort();
	}
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	if (!ram[0]) {
		setup();
		save_baseline();
		verbose = getenv("FUZZ_VERBOSE") != NULL;
	}
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	size_t n = size - 1;
	uint8_t *file = malloc(n ? n : 1);
	if (!file)
		abort();
	memcpy(file, data + 1, n);
	if (mode & 1)
		fix_crcs(file, n);
	write_file(file, n, mode & 2);
	free(file);

	config_clear();
	const char *stage = "open";
	if (checkpoint_open(memfd_path, err, sizeof(err)) == 0) {
#ifdef HAVE_CONFIG_TRUST
		/* hyve -r: host-side keys held back, then trusted or given locally. */
		int hrc = config_hold_host_keys("checkpoint", err, sizeof(err));
		if (!(mode & 4))
			set_host_keys();
		if (config_release_host_keys(mode & 4, "snapshot.trust_config", err, sizeof(err)) == 0 && hrc == 0)
			check_file_config();
		else if (verbose)
			fprintf(stderr, "ckpt: host keys: %s\n", err);
#else
		check_file_config();
#endif
		stage = "restore";
		if (checkpoint_restore(&vm, err, sizeof(err)) == 0) {
			pci_walk_devices(check_bars, NULL);   /* regress/ckpt/crash-io-bar-wrap */
			struct vm_sections again = { 0 };
			if (vmstate_save(&vm, &again, err, sizeof(err)) || vmstate_load(&vm, &again, err, sizeof(err))) {
				fprintf(stderr, "restored state does not save and load again: %s\n", err);
				abort();
			}
			vm_sections_free(&again);
			if (mode & 8) {
				vmstate_resume();
				vmstate_quiesce();
			}
			stage = NULL;
		}
	}
	if (verbose)
		fprintf(stderr, "ckpt: %s%s%s\n", stage ? stage : "restored", stage ? ": " : "", stage ? err : "");
	config_clear();
	set_fixed_config();
	if (vmstate_load(&vm, &baseline, err, sizeof(err))) {
		fprintf(stderr, "initial device state does not load: %s\n", err);
		abort();
	}
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
/* ---- seeds: the devices brought up by a "driver", saved by checkpoint_save ---- */

static struct pci_devinst *slot_pi[32];
static void find_cb(struct pci_devinst *pi, void *arg)
{
	(void)arg;
	slot_pi[pi->pi_slot] = pi;
}

static void wr(struct pci_devinst *pi, uint64_t off, int size, uint64_t val)
{
	vi_pci_write(NULL, pi, VI_MODERN_BAR, off, size, val);
}

/* Modern bring-up of queue 0 with the rings at desc/avail/used. */
static void bring_up(struct pci_devinst *pi, uint16_t qsize, uint64_t desc, uint64_t avail, uint64_t used)
{
	wr(pi, 0x14, 1, 0);
	wr(pi, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
	uint64_t offered = 0;
	for (uint32_t sel = 0; sel < 2; sel++) {
		wr(pi, 0x00, 4, sel);
		offered |= vi_pci_read(NULL, pi, VI_MODERN_BAR, 0x04, 4) << (32 * sel);
	}
	uint64_t want = offered & (VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | VIRTIO_RING_F_INDIRECT_DESC |
	                           0xffffff);
	for (uint32_t sel = 0; sel < 2; sel++) {
		wr(pi, 0x08, 4, sel);
		wr(pi, 0x0c, 4, (uint32_t)(want >> (32 * sel)));
	}
	wr(pi, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	wr(pi, 0x16, 2, 0);
	wr(pi, 0x18, 2, qsize);
	wr(pi, 0x20, 8, desc);
	wr(pi, 0x28, 8, avail);
	wr(pi, 0x30, 8, used);
	wr(pi, 0x1c, 2, 1);
	wr(pi, 0x14, 1, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK);
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/*
 * RAM0 (8 KiB): virtio-rnd's 16-entry queue at 0x0/0x100/0x140 with a
 * buffer at 0x300; virtio-9p's at 0x400/0x500/0x540, a request at 0x600
 * and a reply buffer at 0x1000.  9P goes over it synchronously: each
 * message waits for the worker's reply.
 */
#define QR_DESC 0x000
#define QR_AVAIL 0x100
#define QR_USED 0x140
#define QR_BUF 0x300
#define Q9_DESC 0x400
#define Q9_AVAIL 0x500
#define Q9_USED 0x540
#define Q9_REQ 0x600
#define Q9_REP 0x1000
#define QSIZE 16
static uint16_t p9_avail;

static void p9_msg(struct pci_devinst *pi, uint8_t type, const uint8_t *body, size_t blen)
{
	uint8_t *r = ram[0];
	uint32_t len = (uint32_t)(7 + blen);
	put32(r + Q9_REQ, len);
	r[Q9_REQ + 4] = type;
	put16(r + Q9_REQ + 5, 1);
	memcpy(r + Q9_REQ + 7, body, blen);
	struct vring_desc d[2] = {
		{ Q9_REQ, len, VRING_DESC_F_NEXT, 1 },
		{ Q9_REP, 0x1000, VRING_DESC_F_WRITE, 0 },
	};
	memcpy(r + Q9_DESC, d, sizeof(d));
	put16(r + Q9_AVAIL + 4 + 2 * (p9_avail % QSIZE), 0);
	p9_avail++;
	__atomic_store_n((uint16_t *)(r + Q9_AVAIL + 2), p9_avail, __ATOMIC_RELEASE);
	wr(pi, VI_NOTIFY_OFF, 2, 0);
	for (int i = 0; i < 2000 && __atomic_load_n((uint16_t *)(r + Q9_USED + 2), __ATOMIC_ACQUIRE) != p9_avail; i++)
		usleep(1000);
	if (get16(r + Q9_USED + 2) != p9_avail || r[Q9_REP + 4] != type + 1)
		fatal("9P message %u: no reply or an error (type %u)", type, r[Q9_REP + 4]);
}

static size_t s9(uint8_t *b, const char *s)
{
	put16(b, (uint16_t)strlen(s));
	memcpy(b + 2, s, strlen(s));
	return 2 + strlen(s);
}

static void p9_session(struct pci_devinst *pi)
{
	uint8_t b[128];
	size_t n;
	bring_up(pi, QSIZE, Q9_DESC, Q9_AVAIL, Q9_USED);
	put32(b, 8192);                 /* Tversion msize */
	n = 4 + s9(b + 4, "9P2000.L");
	p9_msg(pi, 100, b, n);
	put32(b, 0);                    /* Tattach fid 0, afid NOFID, uname, aname, n_uname */
	put32(b + 4, 0xffffffffu);
	n = 8 + s9(b + 8, "");
	n += s9(b + n, "");
	put32(b + n, 0);
	p9_msg(pi, 104, b, n + 4);
	put32(b, 0);                    /* Twalk 0 -> 1 "f" */
	put32(b + 4, 1);
	put16(b + 8, 1);
	n = 10 + s9(b + 10, "f");
	p9_msg(pi, 110, b, n);
	put32(b, 1);                    /* Tlopen fid 1 O_RDONLY */
	put32(b + 4, 0);
	p9_msg(pi, 12, b, 8);
	put32(b, 0);                    /* Twalk 0 -> 2 "d" */
	put32(b + 4, 2);
	put16(b + 8, 1);
	n = 10 + s9(b + 10, "d");
	p9_msg(pi, 110, b, n);
}

static void emit(const char *dir, const char *name, uint8_t mode)
{
	char tmp[256], path[512], err[512];
	snprintf(tmp, sizeof(tmp), "%s/ckpt", tmpdir);
	if (checkpoint_save(&vm, tmp, false, err, sizeof(err)))
		fatal("checkpoint_save: %s", err);
	FILE *in = fopen(tmp, "rb");
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *out = fopen(path, "wb");
	if (!in || !out)
		abort();
	fputc(mode, out);
	int c;
	while ((c = fgetc(in)) != EOF)
		fputc(c, out);
	fclose(in);
	fclose(out);
	unlink(tmp);
	/* The seed must restore (fatal here, not a fuzzer finding later). */
	FILE *chk = fopen(path, "rb");
	static uint8_t buf[1 << 20];
	size_t n = fread(buf, 1, sizeof(buf), chk);
	fclose(chk);
	write_file(buf + 1, n - 1, false);
	config_clear();
	if (checkpoint_open(memfd_path, err, sizeof(err)) || checkpoint_restore(&vm, err, sizeof(err)))
		fatal("seed %s does not restore: %s", name, err);
	printf("%s: %zu bytes\n", path, n);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : ".";
	setup();
	pci_walk_devices(find_cb, NULL);
	if (!slot_pi[3] || !slot_pi[4] || !slot_pi[5] || !slot_pi[31])
		fatal("devices missing");
	emit(dir, "seed-initial", 1);
	/* virtio-rnd: one buffer posted, not yet taken. */
	struct vring_desc d = { QR_BUF, 64, VRING_DESC_F_WRITE, 0 };
	memcpy(ram[0] + QR_DESC, &d, sizeof(d));
	put16(ram[0] + QR_AVAIL + 2, 1);
	bring_up(slot_pi[3], QSIZE, QR_DESC, QR_AVAIL, QR_USED);
	/* virtio-9p: a session with fids 0 (root), 1 (open file), 2 (directory). */
	p9_session(slot_pi[4]);
	memset(ram[1], 0x5a, 16);
	config_clear();
	set_fixed_config();
	emit(dir, "seed-running", 13);
	config_clear();
	set_fixed_config();
	set_config_value("snapshot.restore_memory", "copy");
	emit(dir, "seed-copy-holes", 7);
	config_clear();
	set_fixed_config();
	emit(dir, "seed-raw-crc", 0);
	return 0;
}
#endif

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f)
			continue;
		static uint8_t buf[1 << 20];
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
		printf("%s: ok\n", argv[i]);
	}
	return 0;
}
#endif
