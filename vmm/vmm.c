/*
 * vmm: KVM backend.  The only file in hyve that opens /dev/kvm or issues
 * KVM ioctls.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "vmm.h"

/* Signal used to kick vCPU threads out of KVM_RUN. */
#define VCPU_KICK_SIGNAL SIGUSR1

struct mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
	/* Pages written by hyve itself (device DMA), which KVM cannot see. */
	_Atomic uint64_t *udirty;
	bool from_file;      /* vm_map_memory_file: a private mapping of file_off.. */
	uint64_t file_off;
};

struct vmctx {
	char *name;
	int kvm_fd;
	int vm_fd;
	int run_size;
	struct vmm_host_info info;
	struct mem_region mem[2];    /* [0] below 4 GiB, [1] above */
	int nmem;
	int nfw;                     /* vm_map_firmware slots in use */
	int ndevmem;                 /* vm_map_devmem slots handed out */
	int readonly_mem;            /* KVM_CAP_READONLY_MEM: -1 not asked yet, else 0/1 */
	bool devmem_mapped[VM_MAX_DEVMEM_SLOTS];
	bool dirty_log;
	bool wired, in_core;         /* vm_set_memory_policy */
	bool manual_dirty;           /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled */
	uint32_t *msr_idx;           /* KVM_GET_MSR_INDEX_LIST, cached */
	int nmsr;
	/*
	 * KVM_SET_GSI_ROUTING replaces the whole table, so the vmm keeps it:
	 * the fixed PC entries, then one MSI entry per allocated GSI
	 * (VM_MSI_GSI_BASE + i; msi_used says which are live).
	 */
	pthread_mutex_t route_mtx;
	struct kvm_irq_routing_entry pc_routes[40];
	uint32_t npc_routes;
	struct kvm_irq_routing_entry msi_routes[VM_MAX_MSI_ROUTES];
	bool msi_used[VM_MAX_MSI_ROUTES];
};

struct vcpu {
	struct vmctx *ctx;
	int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	atomic_bool thread_known;
	struct kvm_cpuid2 *cpuid;   /* what vcpu_set_cpuid gave KVM, for vcpu_cpuid_lookup */
};

static void kick_handler(int sig)
{
	(void)sig;
}

struct vmctx *vm_create(const char *name, char *err, size_t errlen)
{
	struct vmctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctx->name = strdup(name);
	ctx->readonly_mem = -1;
	pthread_mutex_init(&ctx->route_mtx, NULL);
	ctx->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (ctx->kvm_fd < 0) {
		snprintf(err, errlen, "/dev/kvm: %s", strerror(errno));
		goto fail;
	}
	int ver = ioctl(ctx->kvm_fd, KVM_GET_API_VERSION, 0);
	if (ver != KVM_API_VERSION) {
		snprintf(err, errlen, "/dev/kvm: API version %d, need %d", ver, KVM_API_VERSION);
		goto fail;
	}
	ctx->vm_fd = ioctl(ctx->kvm_fd, KVM_CREATE_VM, 0);
	if (ctx->vm_fd < 0) {
		snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
		goto fail;
	}
	ctx->run_size = ioctl(ctx->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (ctx->run_size <= 0) {
		snprintf(err, errlen, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
		goto fail;
	}
	/*
	 * PVM ("kvm_pvm") runs guest kernel code through KVM's instruction
	 * emulator; the module's presence is the only reliable sign, since it
	 * answers the usual capability queries like VT-x KVM does.
	 */
	ctx->info.emulating = access("/sys/module/kvm_pvm", F_OK) == 0;
	int m = ioctl(ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (m <= 0)
		m = ioctl(ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	ctx->info.max_vcpus = m > 0 ? m : 1;
	ctx->info.has_irqfd = ioctl(ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) > 0;
	ctx->info.has_ioeventfd = ioctl(ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IOEVENTFD) > 0;
	ctx->info.has_manual_dirty_log =
	    ioctl(ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0;

	/* VMX needs these three pages below 4 GiB; other backends ignore them.
	 * QEMU's addresses: below the 16 MiB flash window under 4 GiB, where a
	 * boot ROM (OVMF: 4 MiB) would overlap them. */
	(void)ioctl(ctx->vm_fd, KVM_SET_TSS_ADDR, 0xfeffd000UL);
	uint64_t idmap = 0xfeffc000ULL;
	(void)ioctl(ctx->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
	return ctx;
fail:
	if (ctx->kvm_fd >= 0)
		close(ctx->kvm_fd);
	free(ctx->msr_idx);
	free(ctx->name);
	free(ctx);
	return NULL;
}

void vm_destroy(struct vmctx *ctx)
{
	for (int i = 0; i < ctx->nmem; i++) {
		munmap(ctx->mem[i].hva, ctx->mem[i].size);
		free((void *)ctx->mem[i].udirty);
	}
	close(ctx->vm_fd);
	close(ctx->kvm_fd);
	free(ctx->name);
	free(ctx);
}

const struct vmm_host_info *vm_host_info(struct vmctx *ctx)
{
	return &ctx->info;
}

const char *vm_name(struct vmctx *ctx)
{
	return ctx->name;
}

static int set_slot(struct vmctx *ctx, int slot)
{
	struct kvm_userspace_memory_region r = {
		.slot = (uint32_t)slot,
		.flags = ctx->dirty_log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
		.guest_phys_addr = ctx->mem[slot].gpa,
		.memory_size = ctx->mem[slot].size,
		.userspace_addr = (uint64_t)(uintptr_t)ctx->mem[slot].hva,
	};
	return ioctl(ctx->vm_fd, KVM_SET_USER_MEMORY_REGION, &r);
}

int vm_setup_memory(struct vmctx *ctx, uint64_t memsize, char *err, size_t errlen)
{
	uint64_t low = memsize < VM_LOWMEM_LIMIT ? memsize : VM_LOWMEM_LIMIT;
	uint64_t high = memsize - low;
	uint64_t sizes[2] = { low, high }, bases[2] = { 0, VM_HIGHMEM_BASE };
	for (int i = 0; i < 2; i++) {
		if (!sizes[i])
			continue;
		void *p = mmap(NULL, sizes[i], PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			snprintf(err, errlen, "cannot allocate %llu bytes of guest memory: %s",
			         (unsigned long long)sizes[i], strerror(errno));
			return -1;
		}
		/* Transparent huge pages cut EPT/NPT walk costs; advisory only. */
		madvise(p, sizes[i], MADV_HUGEPAGE);
		ctx->mem[i].gpa = bases[i];
		ctx->mem[i].size = sizes[i];
		ctx->mem[i].hva = p;
		ctx->nmem = i + 1;
		if (set_slot(ctx, i)) {
			snprintf(err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* The memory policy on region i; -1 with errno if mlock fails. */
static int apply_memory_policy(struct vmctx *ctx, int i)
{
	struct mem_region *m = &ctx->mem[i];
	/* Advisory: a kernel without MADV_DONTDUMP still runs the guest. */
	madvise(m->hva, m->size, ctx->in_core ? MADV_DODUMP : MADV_DONTDUMP);
	return ctx->wired ? mlock(m->hva, m->size) : 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14 */
#endif

struct prefetch_job {
	int fd;             /* the checkpoint, dup'ed: the restore closes its own */
	uint8_t *hva[2];
	uint64_t size[2], file_off[2];
	int n;
};

/* Copy in [lo, hi) of a region, 2 MiB at a time; false when madvise fails. */
static bool populate(uint8_t *hva, uint64_t lo, uint64_t hi)
{
	const uint64_t chunk = 2ull << 20;
	for (uint64_t off = lo; off < hi; off += chunk)
		if (madvise(hva + off, hi - off < chunk ? hi - off : chunk, MADV_POPULATE_WRITE))
			return false;   /* an older kernel (EINVAL), or the mapping is gone */
	return true;
}

static void *prefetch_thread(void *arg)
{
	struct prefetch_job *j = arg;
	/* Below the vCPUs: the guest runs first, the prefetch takes what is left. */
	setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
	for (int i = 0; i < j->n; i++) {
		/* Only the file's data: its holes are zero pages, which stay unallocated. */
		uint64_t off = 0;
		while (off < j->size[i]) {
			off_t data = lseek(j->fd, (off_t)(j->file_off[i] + off), SEEK_DATA);
			if (data < 0 || (uint64_t)data >= j->file_off[i] + j->size[i])
				break;
			off_t hole = lseek(j->fd, data, SEEK_HOLE);
			uint64_t lo = ((uint64_t)data - j->file_off[i]) & ~4095ull;
			uint64_t hi = hole < 0 ? j->size[i] : (uint64_t)hole - j->file_off[i];
			hi = hi > j->size[i] ? j->size[i] : (hi + 4095) & ~4095ull;
			if (!populate(j->hva[i], lo, hi))
				goto out;
			off = hi;
		}
	}
out:
	close(j->fd);
	free(j);
	return NULL;
}

void vm_prefetch_memory(struct vmctx *ctx, int fd)
{
	struct prefetch_job *j = calloc(1, sizeof(*j));
	pthread_attr_t a;
	pthread_t t;
	if (!j || (j->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		free(j);
		return;
	}
	for (int i = 0; i < ctx->nmem && j->n < 2; i++)
		if (ctx->mem[i].size && ctx->mem[i].from_file) {
			j->hva[j->n] = ctx->mem[i].hva;
			j->file_off[j->n] = ctx->mem[i].file_off;
			j->size[j->n++] = ctx->mem[i].size;
		}
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &a, prefetch_thread, j)) {
		close(j->fd);
		free(j);
	}
	pthread_attr_destroy(&a);
}

int vm_set_memory_policy(struct vmctx *ctx, bool wired, bool in_core, char *err, size_t errlen)
{
	ctx->wired = wired;
	ctx->in_core = in_core;
	for (int i = 0; i < ctx->nmem; i++) {
		if (!ctx->mem[i].size || apply_memory_policy(ctx, i) == 0)
			continue;
		struct rlimit rl;
		int e = errno;
		if ((e == ENOMEM || e == EPERM) && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
			snprintf(err, errlen, "memory.wired (-S): cannot lock %llu MiB of guest RAM: %s (RLIMIT_MEMLOCK is "
			         "%llu KiB: raise it with ulimit -l, or give hyve CAP_IPC_LOCK)",
			         (unsigned long long)(ctx->mem[i].size >> 20), strerror(e), (unsigned long long)rl.rlim_cur >> 10);
		else
			snprintf(err, errlen, "memory.wired (-S): cannot lock %llu MiB of guest RAM: %s",
			         (unsigned long long)(ctx->mem[i].size >> 20), strerror(e));
		return -1;
	}
	return 0;
}

/* Asked once: a flash part maps its read-only slot again after every write sequence. */
static bool has_readonly_mem(struct vmctx *ctx)
{
	if (ctx->readonly_mem < 0)
		ctx->readonly_mem = ioctl(ctx->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;
	return ctx->readonly_mem;
}

static int map_devmem(struct vmctx *ctx, int *slot, uint64_t gpa, void *hva, uint64_t size, uint32_t flags)
{
	if ((flags & KVM_MEM_READONLY) && !has_readonly_mem(ctx)) {
		errno = ENOTSUP;
		return -1;
	}
	if (*slot < 0) {
		if (ctx->ndevmem >= VM_MAX_DEVMEM_SLOTS) {
			errno = ENOSPC;
			return -1;
		}
		*slot = VM_DEVMEM_SLOT_BASE + ctx->ndevmem++;
	}
	/* A slot moves by being deleted (size 0) and made again; KVM refuses
	 * to delete a slot that does not exist. */
	bool *mapped = &ctx->devmem_mapped[*slot - VM_DEVMEM_SLOT_BASE];
	struct kvm_userspace_memory_region r = { .slot = (uint32_t)*slot };
	if (*mapped && ioctl(ctx->vm_fd, KVM_SET_USER_MEMORY_REGION, &r))
		return -1;
	*mapped = false;
	if (gpa == VM_DEVMEM_UNMAPPED)
		return 0;
	r.flags = flags;
	r.guest_phys_addr = gpa;
	r.memory_size = size;
	r.userspace_addr = (uint64_t)(uintptr_t)hva;
	if (ioctl(ctx->vm_fd, KVM_SET_USER_MEMORY_REGION, &r))
		return -1;
	*mapped = true;
	return 0;
}

int vm_map_devmem(struct vmctx *ctx, int *slot, uint64_t gpa, void *hva, uint64_t size)
{
	return map_devmem(ctx, slot, gpa, hva, size, 0);
}

int vm_map_devmem_readonly(struct vmctx *ctx, int *slot, uint64_t gpa, void *hva, uint64_t size)
{
	return map_devmem(ctx, slot, gpa, hva, size, KVM_MEM_READONLY);
}

int vm_map_firmware(struct vmctx *ctx, uint64_t gpa, void *hva, uint64_t size, bool readonly)
{
	if (ctx->nfw >= VM_MAX_FW_SLOTS) {
		errno = ENOSPC;
		return -1;
	}
	if (readonly && !has_readonly_mem(ctx)) {
		errno = ENOTSUP;
		return -1;
	}
	struct kvm_userspace_memory_region r = {
		.slot = (uint32_t)(VM_FW_SLOT_BASE + ctx->nfw),
		.flags = readonly ? KVM_MEM_READONLY : 0,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)hva,
	};
	if (ioctl(ctx->vm_fd, KVM_SET_USER_MEMORY_REGION, &r))
		return -1;
	ctx->nfw++;
	return 0;
}

uint64_t vm_get_lowmem_size(struct vmctx *ctx)
{
	return ctx->nmem > 0 ? ctx->mem[0].size : 0;
}

uint64_t vm_get_highmem_size(struct vmctx *ctx)
{
	return ctx->nmem > 1 ? ctx->mem[1].size : 0;
}

void *vm_map_gpa(struct vmctx *ctx, uint64_t gpa, size_t len)
{
	for (int i = 0; i < ctx->nmem; i++) {
		const struct mem_region *r = &ctx->mem[i];
		/* Written to avoid overflow: gpa and len are guest-controlled. */
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

int vm_copy_to_guest(struct vmctx *ctx, uint64_t gpa, const void *src, size_t len)
{
	void *p = vm_map_gpa(ctx, gpa, len);
	if (!p)
		return -1;
	memcpy(p, src, len);
	vm_mark_dirty(ctx, gpa, len);
	return 0;
}

bool vm_dirty_logging(struct vmctx *ctx)
{
	return __atomic_load_n(&ctx->dirty_log, __ATOMIC_ACQUIRE);
}

void vm_mark_dirty(struct vmctx *ctx, uint64_t gpa, uint64_t len)
{
	if (!__atomic_load_n(&ctx->dirty_log, __ATOMIC_ACQUIRE) || len == 0)
		return;
	for (int i = 0; i < ctx->nmem; i++) {
		struct mem_region *m = &ctx->mem[i];
		if (!m->udirty || gpa + len <= m->gpa || gpa >= m->gpa + m->size)
			continue;
		uint64_t lo = gpa < m->gpa ? 0 : gpa - m->gpa;
		uint64_t hi = gpa + len - m->gpa > m->size ? m->size : gpa + len - m->gpa;
		for (uint64_t p = lo >> 12; p <= (hi - 1) >> 12; p++)
			atomic_fetch_or(&m->udirty[p / 64], 1ULL << (p % 64));
	}
}

int vm_copy_from_guest(struct vmctx *ctx, uint64_t gpa, void *dst, size_t len)
{
	void *p = vm_map_gpa(ctx, gpa, len);
	if (!p)
		return -1;
	memcpy(dst, p, len);
	return 0;
}

/* Hand KVM the whole table (route_mtx held). */
static int commit_routes(struct vmctx *ctx)
{
	size_t max = ctx->npc_routes + VM_MAX_MSI_ROUTES;
	struct kvm_irq_routing *r = calloc(1, sizeof(*r) + max * sizeof(r->entries[0]));
	if (!r)
		return -1;
	uint32_t n = 0;
	for (uint32_t i = 0; i < ctx->npc_routes; i++)
		r->entries[n++] = ctx->pc_routes[i];
	for (uint32_t i = 0; i < VM_MAX_MSI_ROUTES; i++)
		if (ctx->msi_used[i])
			r->entries[n++] = ctx->msi_routes[i];
	r->nr = n;
	int rc = ioctl(ctx->vm_fd, KVM_SET_GSI_ROUTING, r) < 0 ? -1 : 0;
	free(r);
	return rc;
}

static void fill_msi_route(struct kvm_irq_routing_entry *e, uint32_t gsi, uint64_t addr, uint32_t data)
{
	memset(e, 0, sizeof(*e));
	e->gsi = gsi;
	e->type = KVM_IRQ_ROUTING_MSI;
	e->u.msi.address_lo = (uint32_t)addr;
	e->u.msi.address_hi = (uint32_t)(addr >> 32);
	e->u.msi.data = data;
}

int vm_msi_route_add(struct vmctx *ctx, uint64_t addr, uint32_t data)
{
	pthread_mutex_lock(&ctx->route_mtx);
	int gsi = -1;
	for (uint32_t i = 0; i < VM_MAX_MSI_ROUTES; i++) {
		if (ctx->msi_used[i])
			continue;
		fill_msi_route(&ctx->msi_routes[i], VM_MSI_GSI_BASE + i, addr, data);
		ctx->msi_used[i] = true;
		if (commit_routes(ctx) == 0) {
			gsi = (int)(VM_MSI_GSI_BASE + i);
		} else {
			ctx->msi_used[i] = false;
		}
		break;
	}
	pthread_mutex_unlock(&ctx->route_mtx);
	return gsi;
}

static bool msi_gsi_valid(struct vmctx *ctx, int gsi)
{
	return gsi >= VM_MSI_GSI_BASE && gsi < VM_MSI_GSI_BASE + VM_MAX_MSI_ROUTES &&
	       ctx->msi_used[gsi - VM_MSI_GSI_BASE];
}

int vm_msi_route_update(struct vmctx *ctx, int gsi, uint64_t addr, uint32_t data)
{
	pthread_mutex_lock(&ctx->route_mtx);
	int rc = -1;
	if (msi_gsi_valid(ctx, gsi)) {
		struct kvm_irq_routing_entry *e = &ctx->msi_routes[gsi - VM_MSI_GSI_BASE];
		struct kvm_irq_routing_entry old = *e;
		fill_msi_route(e, (uint32_t)gsi, addr, data);
		rc = commit_routes(ctx);
		if (rc)
			*e = old;
	}
	pthread_mutex_unlock(&ctx->route_mtx);
	return rc;
}

void vm_msi_route_del(struct vmctx *ctx, int gsi)
{
	pthread_mutex_lock(&ctx->route_mtx);
	if (msi_gsi_valid(ctx, gsi)) {
		ctx->msi_used[gsi - VM_MSI_GSI_BASE] = false;
		(void)commit_routes(ctx);
	}
	pthread_mutex_unlock(&ctx->route_mtx);
}

int vm_irqfd(struct vmctx *ctx, int fd, int gsi, bool assign)
{
	struct kvm_irqfd req = {
		.fd = (uint32_t)fd,
		.gsi = (uint32_t)gsi,
		.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN,
	};
	return ioctl(ctx->vm_fd, KVM_IRQFD, &req) < 0 ? -1 : 0;
}

int vm_ioeventfd(struct vmctx *ctx, const struct vm_ioeventfd *io, bool assign)
{
	struct kvm_ioeventfd req = {
		.datamatch = io->datamatch,
		.addr = io->addr,
		.len = (uint32_t)io->len,
		.fd = io->fd,
		.flags = (io->pio ? KVM_IOEVENTFD_FLAG_PIO : 0) |
		         (io->match ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
		         (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
	};
	return ioctl(ctx->vm_fd, KVM_IOEVENTFD, &req) < 0 ? -1 : 0;
}

/*
 * PC interrupt routing: ISA IRQs 0-15 reach the 8259s, and GSIs 0-23 reach
 * IOAPIC pins, except that IRQ0 (the PIT) is wired to IOAPIC pin 2 as on
 * real chipsets and as the MADT's interrupt source override says.  KVM's
 * default table sends GSI 0 to pin 0, which guests do not expect.
 */
static int set_pc_irq_routing(struct vmctx *ctx)
{
	struct kvm_irq_routing_entry *e = ctx->pc_routes;
	uint32_t n = 0;
	memset(ctx->pc_routes, 0, sizeof(ctx->pc_routes));
	for (uint32_t gsi = 0; gsi < 16; gsi++) {
		if (gsi == 2)
			continue;   /* the cascade */
		e[n].gsi = gsi;
		e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
		e[n].u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
		e[n].u.irqchip.pin = gsi % 8;
		n++;
	}
	for (uint32_t gsi = 0; gsi < 24; gsi++) {
		if (gsi == 2)
			continue;
		e[n].gsi = gsi;
		e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
		e[n].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		e[n].u.irqchip.pin = gsi == 0 ? 2 : gsi;
		n++;
	}
	ctx->npc_routes = n;
	pthread_mutex_lock(&ctx->route_mtx);
	int rc = commit_routes(ctx);
	pthread_mutex_unlock(&ctx->route_mtx);
	return rc;
}

int vm_create_irqchip(struct vmctx *ctx)
{
	if (ioctl(ctx->vm_fd, KVM_CREATE_IRQCHIP, 0))
		return -1;
	return set_pc_irq_routing(ctx);
}

int vm_create_pit(struct vmctx *ctx)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	return ioctl(ctx->vm_fd, KVM_CREATE_PIT2, &pit);
}

int vm_set_irq_line(struct vmctx *ctx, int gsi, int level)
{
	struct kvm_irq_level irq = { .irq = (uint32_t)gsi, .level = (uint32_t)level };
	return ioctl(ctx->vm_fd, KVM_IRQ_LINE, &irq);
}

int vm_irq_pulse(struct vmctx *ctx, int gsi)
{
	if (vm_set_irq_line(ctx, gsi, 1))
		return -1;
	return vm_set_irq_line(ctx, gsi, 0);
}

unsigned vm_get_tsc_khz(struct vmctx *ctx)
{
	int khz = ioctl(ctx->vm_fd, KVM_GET_TSC_KHZ, 0);
	return khz > 0 ? (unsigned)khz : 0;
}

int vm_signal_msi(struct vmctx *ctx, uint64_t addr, uint32_t data)
{
	struct kvm_msi msi = {
		.address_lo = (uint32_t)addr,
		.address_hi = (uint32_t)(addr >> 32),
		.data = data,
	};
	return ioctl(ctx->vm_fd, KVM_SIGNAL_MSI, &msi) < 0 ? -1 : 0;
}

struct kvm_cpuid2 *vm_get_supported_cpuid(struct vmctx *ctx)
{
	for (int n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)n * sizeof(c->entries[0]));
		if (!c)
			return NULL;
		c->nent = (uint32_t)n;
		if (ioctl(ctx->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		free(c);
		if (errno != E2BIG)
			return NULL;
	}
	return NULL;
}

struct vcpu *vm_vcpu_create(struct vmctx *ctx, int id)
{
	struct vcpu *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->ctx = ctx;
	v->id = id;
	v->fd = ioctl(ctx->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0) {
		free(v);
		return NULL;
	}
	v->run = mmap(NULL, (size_t)ctx->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		close(v->fd);
		free(v);
		return NULL;
	}
	return v;
}

void vm_vcpu_destroy(struct vcpu *v)
{
	munmap(v->run, (size_t)v->ctx->run_size);
	close(v->fd);
	free(v->cpuid);
	free(v);
}

int vcpu_id(struct vcpu *vcpu) { return vcpu->id; }
struct vmctx *vcpu_ctx(struct vcpu *vcpu) { return vcpu->ctx; }

int vcpu_set_cpuid(struct vcpu *vcpu, struct kvm_cpuid2 *cpuid)
{
	if (ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid))
		return -1;
	/* Keep a copy: userspace completion of instructions checks the
	 * vCPU's own feature bits, as the CPU would. */
	size_t len = sizeof(*cpuid) + cpuid->nent * sizeof(cpuid->entries[0]);
	struct kvm_cpuid2 *copy = malloc(len);
	if (copy) {
		memcpy(copy, cpuid, len);
		free(vcpu->cpuid);
		vcpu->cpuid = copy;
	}
	return 0;
}

bool vcpu_cpuid_lookup(struct vcpu *vcpu, uint32_t leaf, uint32_t sub, uint32_t out[4])
{
	const struct kvm_cpuid2 *c = vcpu->cpuid;
	for (uint32_t i = 0; c && i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == leaf && (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == sub)) {
			out[0] = e->eax;
			out[1] = e->ebx;
			out[2] = e->ecx;
			out[3] = e->edx;
			return true;
		}
	}
	out[0] = out[1] = out[2] = out[3] = 0;
	return false;
}

int vcpu_get_regs(struct vcpu *v, struct kvm_regs *r) { return ioctl(v->fd, KVM_GET_REGS, r); }
int vcpu_set_regs(struct vcpu *v, const struct kvm_regs *r) { return ioctl(v->fd, KVM_SET_REGS, r); }
int vcpu_get_sregs(struct vcpu *v, struct kvm_sregs *s) { return ioctl(v->fd, KVM_GET_SREGS, s); }
int vcpu_set_sregs(struct vcpu *v, const struct kvm_sregs *s) { return ioctl(v->fd, KVM_SET_SREGS, s); }
int vcpu_get_events(struct vcpu *v, struct kvm_vcpu_events *e) { return ioctl(v->fd, KVM_GET_VCPU_EVENTS, e); }
int vcpu_set_events(struct vcpu *v, const struct kvm_vcpu_events *e) { return ioctl(v->fd, KVM_SET_VCPU_EVENTS, e); }

int vcpu_get_mp_state(struct vcpu *v, uint32_t *state)
{
	struct kvm_mp_state mp;
	if (ioctl(v->fd, KVM_GET_MP_STATE, &mp))
		return -1;
	*state = mp.mp_state;
	return 0;
}

int vcpu_set_mp_state(struct vcpu *v, uint32_t state)
{
	struct kvm_mp_state mp = { .mp_state = state };
	return ioctl(v->fd, KVM_SET_MP_STATE, &mp);
}

int vcpu_inject_exception(struct vcpu *v, int vector, bool has_err, uint32_t err)
{
	struct kvm_vcpu_events ev;
	if (vcpu_get_events(v, &ev))
		return -1;
	ev.exception.injected = 1;
	ev.exception.nr = (uint8_t)vector;
	ev.exception.has_error_code = has_err;
	ev.exception.error_code = err;
	ev.flags = 0;
	return vcpu_set_events(v, &ev);
}

int vcpu_inject_soft_interrupt(struct vcpu *v, int vector)
{
	struct kvm_vcpu_events ev;
	if (vcpu_get_events(v, &ev))
		return -1;
	ev.interrupt.injected = 1;
	ev.interrupt.nr = (uint8_t)vector;
	ev.interrupt.soft = 1;
	ev.flags = 0;
	return vcpu_set_events(v, &ev);
}

void vcpu_kick(struct vcpu *v)
{
	/* immediate_exit covers a kick that lands just before KVM_RUN. */
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (atomic_load(&v->thread_known))
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

int vcpu_run(struct vcpu *v, struct vm_exit *vme)
{
	struct kvm_run *run = v->run;
	if (!atomic_load(&v->thread_known)) {
		v->thread = pthread_self();
		atomic_store(&v->thread_known, true);
	}
	memset(vme, 0, sizeof(*vme));
	if (ioctl(v->fd, KVM_RUN, 0) < 0) {
		if (errno == EINTR || errno == EAGAIN) {
			__atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
			vme->exitcode = VM_EXITCODE_KICKED;
			return 0;
		}
		return -1;
	}
	vme->kvm_reason = run->exit_reason;
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		vme->exitcode = VM_EXITCODE_INOUT;
		vme->u.inout.port = run->io.port;
		vme->u.inout.bytes = run->io.size;
		vme->u.inout.in = run->io.direction == KVM_EXIT_IO_IN;
		vme->u.inout.count = run->io.count;
		vme->u.inout.data = (uint8_t *)run + run->io.data_offset;
		break;
	case KVM_EXIT_MMIO:
		vme->exitcode = VM_EXITCODE_MMIO;
		vme->u.mmio.gpa = run->mmio.phys_addr;
		vme->u.mmio.len = (uint8_t)run->mmio.len;
		vme->u.mmio.write = run->mmio.is_write;
		vme->u.mmio.data = run->mmio.data;
		break;
	case KVM_EXIT_HLT:
		vme->exitcode = VM_EXITCODE_HLT;
		break;
	case KVM_EXIT_SHUTDOWN:
		vme->exitcode = VM_EXITCODE_SHUTDOWN;
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		vme->exitcode = VM_EXITCODE_SYSTEM_EVENT;
		vme->u.sysevent.type = run->system_event.type;
		break;
	case KVM_EXIT_INTR:
		vme->exitcode = VM_EXITCODE_KICKED;
		break;
	case KVM_EXIT_DEBUG:
		vme->exitcode = VM_EXITCODE_DEBUG;
		vme->u.debug.exception = run->debug.arch.exception;
		vme->u.debug.pc = run->debug.arch.pc;
		vme->u.debug.dr6 = run->debug.arch.dr6;
		vme->u.debug.dr7 = run->debug.arch.dr7;
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		vme->u.emul.suberror = run->internal.suberror;
		if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) {
			vme->exitcode = VM_EXITCODE_EMUL_FAIL;
			if (run->emulation_failure.ndata >= 3 &&
			    (run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
				uint8_t n = run->emulation_failure.insn_size;
				if (n > sizeof(vme->u.emul.insn))
					n = sizeof(vme->u.emul.insn);
				vme->u.emul.insn_len = n;
				memcpy(vme->u.emul.insn, run->emulation_failure.insn_bytes, n);
			}
		} else {
			vme->exitcode = VM_EXITCODE_OTHER;
		}
		break;
	default:
		vme->exitcode = VM_EXITCODE_OTHER;
		break;
	}
	return 0;
}

int vm_mem_regions(struct vmctx *ctx, struct vm_mem_region *out, int max)
{
	int n = 0;
	for (int i = 0; i < ctx->nmem && n < max; i++) {
		if (!ctx->mem[i].size)
			continue;
		out[n].gpa = ctx->mem[i].gpa;
		out[n].size = ctx->mem[i].size;
		out[n].hva = ctx->mem[i].hva;
		n++;
	}
	return n;
}

int vm_map_memory_file(struct vmctx *ctx, int i, int fd, uint64_t off)
{
	if (i < 0 || i >= ctx->nmem || !ctx->mem[i].size) {
		errno = EINVAL;
		return -1;
	}
	/*
	 * MAP_FIXED over the registered range: the memslot keeps its host
	 * address, and KVM's MMU notifier drops any mapping of the old pages.
	 */
	void *p = mmap(ctx->mem[i].hva, ctx->mem[i].size, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, (off_t)off);
	if (p == MAP_FAILED)
		return -1;
	ctx->mem[i].from_file = true;
	ctx->mem[i].file_off = off;
	/* A new mapping: madvise and mlock do not carry over from the old one. */
	return apply_memory_policy(ctx, i);
}

static int vcpu_ioctl(struct vcpu *v, unsigned long req, const void *arg)
{
	return ioctl(v->fd, req, arg);
}

size_t vcpu_xsave_size(struct vcpu *v)
{
	int n = ioctl(v->ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return n > (int)sizeof(struct kvm_xsave) ? (size_t)n : sizeof(struct kvm_xsave);
}

int vcpu_get_xsave(struct vcpu *v, void *buf)
{
	if (vcpu_xsave_size(v) > sizeof(struct kvm_xsave))
		return vcpu_ioctl(v, KVM_GET_XSAVE2, buf);
	return vcpu_ioctl(v, KVM_GET_XSAVE, buf);
}

int vcpu_set_xsave(struct vcpu *v, const void *buf) { return vcpu_ioctl(v, KVM_SET_XSAVE, buf); }

int vcpu_get_xcrs(struct vcpu *v, struct kvm_xcrs *x)
{
	if (ioctl(v->ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) <= 0) {
		errno = ENOTSUP;
		return -1;
	}
	return vcpu_ioctl(v, KVM_GET_XCRS, x);
}

int vcpu_set_xcrs(struct vcpu *v, const struct kvm_xcrs *x) { return vcpu_ioctl(v, KVM_SET_XCRS, x); }
int vcpu_get_lapic(struct vcpu *v, struct kvm_lapic_state *l) { return vcpu_ioctl(v, KVM_GET_LAPIC, l); }
int vcpu_set_lapic(struct vcpu *v, const struct kvm_lapic_state *l) { return vcpu_ioctl(v, KVM_SET_LAPIC, l); }
int vcpu_get_debugregs(struct vcpu *v, struct kvm_debugregs *d) { return vcpu_ioctl(v, KVM_GET_DEBUGREGS, d); }
int vcpu_set_debugregs(struct vcpu *v, const struct kvm_debugregs *d) { return vcpu_ioctl(v, KVM_SET_DEBUGREGS, d); }

int vm_deny_msrs(struct vmctx *ctx, const uint32_t *msrs, int n)
{
	static const uint8_t deny = 0;   /* one MSR per range, its bit 0: denied */
	struct kvm_msr_filter f;
	if (ioctl(ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_MSR_FILTER) <= 0) {
		errno = ENOTSUP;
		return -1;
	}
	if (n > KVM_MSR_FILTER_MAX_RANGES) {
		errno = E2BIG;
		return -1;
	}
	memset(&f, 0, sizeof(f));
	f.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
	for (int i = 0; i < n; i++) {
		f.ranges[i].flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
		f.ranges[i].nmsrs = 1;
		f.ranges[i].base = msrs[i];
		f.ranges[i].bitmap = (uint8_t *)&deny;
	}
	return ioctl(ctx->vm_fd, KVM_X86_SET_MSR_FILTER, &f) < 0 ? -1 : 0;
}

int vcpu_set_guest_debug(struct vcpu *v, uint32_t flags, const uint64_t dr[4], uint64_t dr7)
{
	struct kvm_guest_debug dbg;
	memset(&dbg, 0, sizeof(dbg));
	dbg.control = flags;
	if (dr)
		memcpy(dbg.arch.debugreg, dr, 4 * sizeof(uint64_t));
	dbg.arch.debugreg[7] = dr7;
	return vcpu_ioctl(v, KVM_SET_GUEST_DEBUG, &dbg);
}

uint32_t vm_guest_debug_flags(struct vmctx *ctx)
{
	int n = ioctl(ctx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG2);
	return n > 0 ? (uint32_t)n : 0;
}

int vcpu_translate(struct vcpu *v, uint64_t lin, uint64_t *gpa)
{
	struct kvm_translation t;
	memset(&t, 0, sizeof(t));
	t.linear_address = lin;
	if (vcpu_ioctl(v, KVM_TRANSLATE, &t) < 0)
		return -1;
	if (!t.valid) {
		errno = EFAULT;
		return -1;
	}
	*gpa = t.physical_address;
	return 0;
}

int vcpu_inject_nmi(struct vcpu *v) { return vcpu_ioctl(v, KVM_NMI, NULL); }
int vcpu_get_fpu(struct vcpu *v, struct kvm_fpu *fpu) { return vcpu_ioctl(v, KVM_GET_FPU, fpu); }
int vcpu_set_fpu(struct vcpu *v, const struct kvm_fpu *fpu) { return vcpu_ioctl(v, KVM_SET_FPU, fpu); }

int vm_msr_index_list(struct vmctx *ctx, const uint32_t **idx)
{
	if (!ctx->msr_idx) {
		struct kvm_msr_list probe = { .nmsrs = 0 };
		if (ioctl(ctx->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
			return -1;
		struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
		if (!l)
			return -1;
		l->nmsrs = probe.nmsrs;
		if (ioctl(ctx->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
			free(l);
			return -1;
		}
		ctx->msr_idx = malloc(l->nmsrs * sizeof(uint32_t) + 1);
		if (!ctx->msr_idx) {
			free(l);
			return -1;
		}
		memcpy(ctx->msr_idx, l->indices, l->nmsrs * sizeof(uint32_t));
		ctx->nmsr = (int)l->nmsrs;
		free(l);
	}
	*idx = ctx->msr_idx;
	return ctx->nmsr;
}

static struct kvm_msrs *msrs_alloc(int n)
{
	return calloc(1, sizeof(struct kvm_msrs) + (size_t)n * sizeof(struct kvm_msr_entry));
}

int vcpu_get_msrs(struct vcpu *v, const uint32_t *idx, uint64_t *vals, bool *ok, int n)
{
	struct kvm_msrs *m = msrs_alloc(n);
	if (!m)
		return -1;
	/* KVM_GET_MSRS stops at the first MSR it cannot read: go on after it. */
	int done = 0;
	while (done < n) {
		m->nmsrs = (uint32_t)(n - done);
		for (int i = 0; i < n - done; i++)
			m->entries[i] = (struct kvm_msr_entry){ .index = idx[done + i] };
		int got = ioctl(v->fd, KVM_GET_MSRS, m);
		if (got < 0) {
			free(m);
			return -1;
		}
		for (int i = 0; i < got; i++) {
			vals[done + i] = m->entries[i].data;
			ok[done + i] = true;
		}
		done += got;
		if (done < n) {
			vals[done] = 0;
			ok[done] = false;
			done++;
		}
	}
	free(m);
	return 0;
}

int vcpu_set_msrs(struct vcpu *v, const uint32_t *idx, const uint64_t *vals, int n)
{
	struct kvm_msrs *m = msrs_alloc(n);
	if (!m)
		return -1;
	m->nmsrs = (uint32_t)n;
	for (int i = 0; i < n; i++)
		m->entries[i] = (struct kvm_msr_entry){ .index = idx[i], .data = vals[i] };
	int rc = ioctl(v->fd, KVM_SET_MSRS, m);
	free(m);
	return rc;
}

int vm_get_irqchip(struct vmctx *ctx, struct kvm_irqchip *c) { return ioctl(ctx->vm_fd, KVM_GET_IRQCHIP, c); }
int vm_set_irqchip(struct vmctx *ctx, const struct kvm_irqchip *c) { return ioctl(ctx->vm_fd, KVM_SET_IRQCHIP, c); }
int vm_get_pit(struct vmctx *ctx, struct kvm_pit_state2 *p) { return ioctl(ctx->vm_fd, KVM_GET_PIT2, p); }
int vm_set_pit(struct vmctx *ctx, const struct kvm_pit_state2 *p) { return ioctl(ctx->vm_fd, KVM_SET_PIT2, p); }
int vm_get_clock(struct vmctx *ctx, struct kvm_clock_data *c) { return ioctl(ctx->vm_fd, KVM_GET_CLOCK, c); }
int vm_set_clock(struct vmctx *ctx, const struct kvm_clock_data *c) { return ioctl(ctx->vm_fd, KVM_SET_CLOCK, c); }

int vm_dirty_log_enable(struct vmctx *ctx, bool on)
{
	if (on && !ctx->manual_dirty && ctx->info.has_manual_dirty_log) {
		struct kvm_enable_cap cap = {
			.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
			.args = { KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE },
		};
		if (ioctl(ctx->vm_fd, KVM_ENABLE_CAP, &cap) == 0)
			ctx->manual_dirty = true;
	}
	for (int i = 0; on && i < ctx->nmem; i++) {
		/* Never freed while the VM lives: device threads may be marking. */
		if (ctx->mem[i].size && !ctx->mem[i].udirty) {
			ctx->mem[i].udirty = calloc((ctx->mem[i].size / 4096 + 63) / 64, sizeof(uint64_t));
			if (!ctx->mem[i].udirty)
				return -1;
		}
	}
	__atomic_store_n(&ctx->dirty_log, on, __ATOMIC_RELEASE);
	for (int i = 0; i < ctx->nmem; i++)
		if (ctx->mem[i].size && set_slot(ctx, i))
			return -1;
	return 0;
}

int vm_dirty_log_get(struct vmctx *ctx, int i, uint64_t *bitmap)
{
	struct kvm_dirty_log log = { .slot = (uint32_t)i, .dirty_bitmap = bitmap };
	if (i < 0 || i >= ctx->nmem || ioctl(ctx->vm_fd, KVM_GET_DIRTY_LOG, &log))
		return -1;
	if (ctx->mem[i].udirty)
		for (uint64_t w = 0; w < (ctx->mem[i].size / 4096 + 63) / 64; w++)
			bitmap[w] |= atomic_exchange(&ctx->mem[i].udirty[w], 0);
	return 0;
}

int vm_dirty_log_clear(struct vmctx *ctx, int i, uint64_t first_page, uint32_t npages, uint64_t *bitmap)
{
	if (!ctx->manual_dirty)
		return 0;   /* KVM_GET_DIRTY_LOG already re-protected everything */
	struct kvm_clear_dirty_log c = {
		.slot = (uint32_t)i, .first_page = first_page, .num_pages = npages, .dirty_bitmap = bitmap,
	};
	return ioctl(ctx->vm_fd, KVM_CLEAR_DIRTY_LOG, &c);
}
