/*
 * vCPU threads: one per vCPU, each looping on KVM_RUN and dispatching the
 * exits that need userspace (port I/O, MMIO, emulation fallbacks).  APs
 * start in KVM's "uninitialized" MP state and wait in the kernel for the
 * BSP's INIT/SIPI through the in-kernel LAPIC.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bhyve_compat.h"
#include "config.h"
#include "exitcode.h"
#include "gdbstub.h"
#include "inout.h"
#include "log.h"
#include "mevent.h"
#include "mmio.h"
#include "sandbox.h"
#include "vm.h"

struct hyve_vm the_vm;

static pthread_t vcpu_threads[HYVE_MAX_VCPUS];
static atomic_ullong stat_exits, stat_io, stat_mmio, stat_fallback;

void vcpus_get_stats(struct vcpu_stats *st)
{
	st->exits = atomic_load(&stat_exits);
	st->io = atomic_load(&stat_io);
	st->mmio = atomic_load(&stat_mmio);
	st->fallback = atomic_load(&stat_fallback);
}
static atomic_int exit_status = -1;

/*
 * Halt detection (exit status 2).  With the in-kernel LAPIC, HLT never
 * reaches userspace: a vCPU that halts with interrupts disabled just sleeps
 * in KVM_RUN.  The main thread periodically kicks the vCPUs; each one
 * reports whether it is halted with IF=0 (or was never started).  When all
 * are, nothing can wake the VM again and hyve exits like bhyve's
 * VM_SUSPEND_HALT.
 */
#define HALT_PROBE_NS 500000000ULL
static atomic_int halt_probe_generation;
static atomic_int halt_votes;
static atomic_int halt_probe_answers;

/* Pause state (see vcpus_pause below). */
static pthread_mutex_t pause_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pause_cv = PTHREAD_COND_INITIALIZER;

void vm_request_exit(int status)
{
	int expected = -1;
	if (atomic_compare_exchange_strong(&exit_status, &expected, status)) {
		vcpus_kick_all(&the_vm);
		/* Parked vCPUs wake and leave too. */
		pthread_mutex_lock(&pause_mtx);
		pthread_cond_broadcast(&pause_cv);
		pthread_mutex_unlock(&pause_mtx);
		mevent_wakeup();
	}
}

int vm_exit_requested(void)
{
	return atomic_load(&exit_status);
}

void vcpus_kick_all(struct hyve_vm *vm)
{
	for (int i = 0; i < vm->ncpus; i++)
		if (vm->vcpu[i])
			vcpu_kick(vm->vcpu[i]);
}

static void set_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = 0;
	s->s = 1;
	s->g = 1;
	s->l = code64;
	s->db = !code64;
}

/* Put a vCPU in the entry state a loader asked for. */
static int vcpu_set_boot_state(struct vcpu *vcpu, const struct boot_entry *be)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	bool lm = be->mode == BOOT_MODE_LONG64;

	if (vcpu_get_sregs(vcpu, &sregs))
		return -1;
	set_seg(&sregs.cs, 0x10, 0xb, lm);
	set_seg(&sregs.ds, 0x18, 0x3, false);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.gdt.base = be->gdt_base;
	sregs.gdt.limit = be->gdt_limit;
	sregs.cr0 = 0x11;                        /* PE | ET */
	if (lm) {
		sregs.cr0 |= 0x80000000u | 0x20;  /* PG | NE */
		sregs.cr3 = be->cr3;
		sregs.cr4 = 0x20;                /* PAE */
		sregs.efer = 0x500;              /* LME | LMA */
	} else {
		sregs.cr4 = 0;
		sregs.efer = 0;
	}
	if (vcpu_set_sregs(vcpu, &sregs))
		return -1;

	memset(&regs, 0, sizeof(regs));
	regs.rip = be->rip;
	regs.rsp = be->rsp;
	regs.rax = be->rax;
	regs.rbx = be->rbx;
	regs.rsi = be->rsi;
	regs.rflags = 0x2;
	return vcpu_set_regs(vcpu, &regs);
}

int vcpus_create(struct hyve_vm *vm, const struct boot_entry *be)
{
	for (int i = 0; i < vm->ncpus; i++) {
		vm->vcpu[i] = vm_vcpu_create(vm->ctx, i);
		if (!vm->vcpu[i]) {
			log_err("cannot create vCPU %d: %s", i, strerror(errno));
			return -1;
		}
		struct kvm_cpuid2 *cpuid = cpuid_build(vm->ctx, i, vm->ncpus);
		if (!cpuid || vcpu_set_cpuid(vm->vcpu[i], cpuid)) {
			log_err("vCPU %d: cannot set CPUID: %s", i, strerror(errno));
			free(cpuid);
			return -1;
		}
		free(cpuid);
	}
	if (be && vcpu_set_boot_state(vm->vcpu[0], be)) {
		log_err("cannot set the boot vCPU's registers: %s", strerror(errno));
		return -1;
	}
	if (cpuid_filter_msrs(vm))
		return -1;
	/* A direct kernel boot (no firmware): the PICs as a BIOS leaves them.
	 * A restore (be NULL) brings the saved irqchip state instead. */
	if (be && boot_setup_pics(vm->ctx)) {
		log_err("cannot program the PICs: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static int handle_inout(struct vcpu *vcpu, struct vm_exit *vme)
{
	uint8_t *p = vme->u.inout.data;
	int bytes = vme->u.inout.bytes;
	for (uint32_t i = 0; i < vme->u.inout.count; i++, p += bytes) {
		uint32_t val = 0;
		if (!vme->u.inout.in)
			memcpy(&val, p, (size_t)bytes);
		if (inout_dispatch(vcpu, vme->u.inout.in, vme->u.inout.port, bytes, &val))
			return -1;
		if (vme->u.inout.in)
			memcpy(p, &val, (size_t)bytes);
	}
	return 0;
}

static int handle_mmio(struct vcpu *vcpu, struct vm_exit *vme)
{
	uint64_t val = 0;
	int len = vme->u.mmio.len;
	if (len < 1 || len > 8)
		return -1;
	if (vme->u.mmio.write)
		memcpy(&val, vme->u.mmio.data, (size_t)len);
	if (mmio_dispatch(vcpu, vme->u.mmio.write, vme->u.mmio.gpa, len, &val) < 0)
		return -1;
	if (!vme->u.mmio.write)
		memcpy(vme->u.mmio.data, &val, (size_t)len);
	return 0;
}

/*
 * RIP sampling profiler (-o debug.profile=PATH): the main thread kicks the
 * vCPUs every debug.profile_ms; each records where it was.  Cheap from the
 * VMM and enough to find where a guest's boot spends its time (symbolize
 * with the guest's System.map or nm).
 */
#define PROFILE_SLOTS 65536
static struct { uint64_t rip; uint64_t count; } profile_tab[PROFILE_SLOTS];
static pthread_mutex_t profile_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int profile_generation;
static bool profiling;

static void profile_sample(struct vcpu *vcpu, int *seen)
{
	int gen = atomic_load(&profile_generation);
	if (!profiling || gen == *seen)
		return;
	*seen = gen;
	struct kvm_regs regs;
	if (vcpu_get_regs(vcpu, &regs))
		return;
	pthread_mutex_lock(&profile_lock);
	uint64_t h = (regs.rip * 0x9e3779b97f4a7c15ULL) >> 48;
	for (uint64_t i = 0; i < PROFILE_SLOTS; i++) {
		uint64_t k = (h + i) % PROFILE_SLOTS;
		if (profile_tab[k].count == 0 || profile_tab[k].rip == regs.rip) {
			profile_tab[k].rip = regs.rip;
			profile_tab[k].count++;
			break;
		}
	}
	pthread_mutex_unlock(&profile_lock);
}

static void profile_timer(int fd, void *arg)
{
	(void)fd;
	atomic_fetch_add(&profile_generation, 1);
	vcpus_kick_all(arg);
}

static int profile_cmp(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;
	return x[1] < y[1] ? 1 : x[1] > y[1] ? -1 : 0;
}

int vcpus_profile_start(struct hyve_vm *vm, uint64_t period_ms)
{
	profiling = true;
	return mevent_add_timer(period_ms * 1000000ULL, period_ms * 1000000ULL, profile_timer, vm) ? 0 : -1;
}

void vcpus_profile_write(const char *path)
{
	if (!profiling)
		return;
	FILE *f = fopen(path, "w");
	if (!f) {
		log_err("debug.profile: %s: %s", path, strerror(errno));
		return;
	}
	qsort(profile_tab, PROFILE_SLOTS, sizeof(profile_tab[0]), profile_cmp);
	for (int i = 0; i < PROFILE_SLOTS && profile_tab[i].count; i++)
		fprintf(f, "%llu %016llx\n", (unsigned long long)profile_tab[i].count,
		        (unsigned long long)profile_tab[i].rip);
	fclose(f);
}

static void halt_probe_answer(struct vcpu *vcpu, int *seen)
{
	int gen = atomic_load(&halt_probe_generation);
	if (gen == *seen)
		return;
	*seen = gen;
	uint32_t mp;
	struct kvm_regs regs;
	bool halted = false;
	if (vcpu_get_mp_state(vcpu, &mp) == 0) {
		if (mp == KVM_MP_STATE_UNINITIALIZED || mp == KVM_MP_STATE_INIT_RECEIVED)
			halted = true;
		else if (mp == KVM_MP_STATE_HALTED && vcpu_get_regs(vcpu, &regs) == 0)
			halted = !(regs.rflags & 0x200);
	}
	if (halted)
		atomic_fetch_add(&halt_votes, 1);
	atomic_fetch_add(&halt_probe_answers, 1);
}

static void halt_probe_timer(int fd, void *arg)
{
	struct hyve_vm *vm = arg;
	(void)fd;
	/* Judge the previous round: every vCPU answered and all were halted. */
	if (atomic_load(&halt_probe_generation) > 0 && atomic_load(&halt_probe_answers) == vm->ncpus &&
	    atomic_load(&halt_votes) == vm->ncpus) {
		log_info("all vCPUs halted with interrupts disabled");
		vm_request_exit(HYVE_EXIT_HALT);
		return;
	}
	atomic_store(&halt_votes, 0);
	atomic_store(&halt_probe_answers, 0);
	atomic_fetch_add(&halt_probe_generation, 1);
	vcpus_kick_all(vm);
}

int vcpus_watch_halt(struct hyve_vm *vm)
{
	return mevent_add_timer(HALT_PROBE_NS, HALT_PROBE_NS, halt_probe_timer, vm) ? 0 : -1;
}

/*
 * Pause: every vCPU thread parks outside KVM_RUN (checkpoint, migration,
 * hyvectl --pause).  A kick gets each one out of the kernel; the thread
 * sees pause_requested at the top of its loop and waits on pause_cv.
 * Nested pauses are counted so a checkpoint inside a user's --pause does
 * not resume the guest behind the user's back.
 */
static int pause_depth;
static int parked;
static atomic_bool pause_requested;

/*
 * The debugger's all-stop (core/gdbstub.c): while debug_stopped, every
 * vCPU but debug_runner (the one single-stepping, or -1) parks the same
 * way, so a pause and a debugger stop compose: a vCPU runs only when
 * neither holds it.  Under pause_mtx; debug_hold is the lock-free hint.
 */
static bool debug_stopped;
static int debug_runner = -1;
static atomic_bool debug_hold;

/* Waits for parked vCPUs are timed: a vCPU thread that died with the VM never parks. */
static void pause_wait_50ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 50000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&pause_cv, &pause_mtx, &ts);
}

static bool must_park(int id)
{
	return pause_depth > 0 || (debug_stopped && debug_runner != id);
}

static void vcpu_park_if_paused(int id)
{
	if (!atomic_load(&pause_requested) && !atomic_load(&debug_hold))
		return;
	pthread_mutex_lock(&pause_mtx);
	if (must_park(id)) {
		parked++;
		pthread_cond_broadcast(&pause_cv);
		while (must_park(id) && vm_exit_requested() < 0)
			pthread_cond_wait(&pause_cv, &pause_mtx);
		parked--;
	}
	pthread_mutex_unlock(&pause_mtx);
}

void vcpus_debug_hold(struct hyve_vm *vm, bool hold, int runner)
{
	pthread_mutex_lock(&pause_mtx);
	debug_stopped = hold;
	debug_runner = hold ? runner : -1;
	atomic_store(&debug_hold, hold);
	pthread_cond_broadcast(&pause_cv);
	pthread_mutex_unlock(&pause_mtx);
	if (hold)
		for (int i = 0; i < vm->ncpus; i++)
			if (vm->vcpu[i] && i != runner)
				vcpu_kick(vm->vcpu[i]);
}

bool vcpus_debug_wait_parked(struct hyve_vm *vm, int runner)
{
	pthread_mutex_lock(&pause_mtx);
	int want = vm->nrunning - (runner >= 0 && runner < vm->nrunning ? 1 : 0);
	while (parked < want && vm_exit_requested() < 0)
		pause_wait_50ms();
	bool ok = parked >= want;
	pthread_mutex_unlock(&pause_mtx);
	return ok;
}

void vcpus_pause(struct hyve_vm *vm)
{
	pthread_mutex_lock(&pause_mtx);
	if (pause_depth++ == 0) {
		atomic_store(&pause_requested, true);
		vcpus_kick_all(vm);
		while (parked < vm->nrunning && vm_exit_requested() < 0)
			pause_wait_50ms();
	}
	pthread_mutex_unlock(&pause_mtx);
}

void vcpus_resume(struct hyve_vm *vm)
{
	(void)vm;
	pthread_mutex_lock(&pause_mtx);
	if (pause_depth > 0 && --pause_depth == 0) {
		atomic_store(&pause_requested, false);
		pthread_cond_broadcast(&pause_cv);
	}
	pthread_mutex_unlock(&pause_mtx);
}

bool vcpus_paused(void)
{
	pthread_mutex_lock(&pause_mtx);
	bool p = pause_depth > 0;
	pthread_mutex_unlock(&pause_mtx);
	return p;
}

/* ---- ACPI S3: a suspend is one more pause, released by vcpus_wake ---- */

static bool s3_suspended;   /* under pause_mtx */

void vcpus_suspend(void)
{
	struct hyve_vm *vm = &the_vm;
	pthread_mutex_lock(&pause_mtx);
	bool first = !s3_suspended;
	if (first) {
		s3_suspended = true;
		pause_depth++;
		atomic_store(&pause_requested, true);
	}
	pthread_mutex_unlock(&pause_mtx);
	/* The others leave the guest; the caller parks when its exit returns. */
	if (first)
		vcpus_kick_all(vm);
}

bool vcpus_suspended(void)
{
	pthread_mutex_lock(&pause_mtx);
	bool s = s3_suspended;
	pthread_mutex_unlock(&pause_mtx);
	return s;
}

static void real_mode_seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->base = (uint64_t)sel << 4;
	s->limit = 0xffff;
	s->type = type;
	s->present = 1;
	s->s = type != 0x2 && type != 0xb;   /* LDT and TSS are system segments */
}

/* What a platform reset leaves (SDM 9.1.1, 10.4.7.1): real mode, CR0 as at power-on, APIC reset. */
static int vcpu_reset_state(struct vcpu *v, int id, uint32_t vector)
{
	struct kvm_sregs sr;
	struct kvm_regs r;
	struct kvm_lapic_state l;
	if (vcpu_get_sregs(v, &sr) || vcpu_get_lapic(v, &l))
		return -1;
	uint16_t cs = (uint16_t)(vector >> 4);
	real_mode_seg(&sr.cs, id == 0 ? cs : 0, 0xb);
	real_mode_seg(&sr.ds, 0, 0x3);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	real_mode_seg(&sr.tr, 0, 0xb);
	real_mode_seg(&sr.ldt, 0, 0x2);
	sr.gdt.base = sr.idt.base = 0;
	sr.gdt.limit = sr.idt.limit = 0xffff;
	sr.cr0 = 0x60000010;   /* CD | NW | ET */
	sr.cr2 = sr.cr3 = sr.cr4 = sr.efer = 0;
	sr.cr8 = 0;
	sr.apic_base = 0xfee00000 | 0x800 | (id == 0 ? 0x100 : 0);   /* enabled, xAPIC, BSP */
	memset(sr.interrupt_bitmap, 0, sizeof(sr.interrupt_bitmap));
	if (vcpu_set_sregs(v, &sr))
		return -1;
	/* Keep the APIC ID and version; mask every LVT, software-disable. */
	uint32_t id_reg, ver;
	memcpy(&id_reg, l.regs + 0x20, 4);
	memcpy(&ver, l.regs + 0x30, 4);
	memset(l.regs, 0, sizeof(l.regs));
	memcpy(l.regs + 0x20, &id_reg, 4);
	memcpy(l.regs + 0x30, &ver, 4);
	uint32_t ones = 0xffffffff, svr = 0xff, masked = 0x10000;
	memcpy(l.regs + 0xe0, &ones, 4);
	memcpy(l.regs + 0xf0, &svr, 4);
	for (int off = 0x320; off <= 0x370; off += 0x10)
		memcpy(l.regs + off, &masked, 4);
	memcpy(l.regs + 0x2f0, &masked, 4);
	if (vcpu_set_lapic(v, &l))
		return -1;
	memset(&r, 0, sizeof(r));
	r.rip = id == 0 ? (vector & 0xf) : 0xfff0;
	r.rflags = 0x2;
	r.rdx = 0x600;   /* family 6 in the reset signature */
	if (vcpu_set_regs(v, &r))
		return -1;
	return vcpu_set_mp_state(v, id == 0 ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_INIT_RECEIVED);
}

int vcpus_wake(uint32_t vector, char *err, size_t errlen)
{
	struct hyve_vm *vm = &the_vm;
	pthread_mutex_lock(&pause_mtx);
	if (!s3_suspended) {
		pthread_mutex_unlock(&pause_mtx);
		snprintf(err, errlen, "the guest is not suspended");
		return -1;
	}
	while (parked < vm->nrunning && vm_exit_requested() < 0)
		pause_wait_50ms();
	int rc = 0;
	for (int i = 0; i < vm->ncpus && rc == 0; i++)
		if (vm->vcpu[i] && vcpu_reset_state(vm->vcpu[i], i, vector)) {
			snprintf(err, errlen, "vCPU %d: the host refused the reset state: %s", i, strerror(errno));
			rc = -1;
		}
	if (rc == 0) {
		s3_suspended = false;
		if (pause_depth > 0 && --pause_depth == 0) {
			atomic_store(&pause_requested, false);
			pthread_cond_broadcast(&pause_cv);
		}
	}
	pthread_mutex_unlock(&pause_mtx);
	return rc;
}

/*
 * Migration auto-converge: a vCPU that dirties memory faster than it can be
 * sent sleeps pct% of every 10 ms.  vCPUs at CPL3 rarely exit, so a timer
 * kicks them; the sleep happens at the top of the run loop.
 */
static atomic_int throttle_pct;
static struct mevent *throttle_timer;

static void throttle_kick(int fd, void *arg)
{
	(void)fd;
	vcpus_kick_all(arg);
}

void vcpus_set_throttle(struct hyve_vm *vm, int pct)
{
	pct = pct < 0 ? 0 : pct > 95 ? 95 : pct;
	atomic_store(&throttle_pct, pct);
	if (pct && !throttle_timer)
		throttle_timer = mevent_add_timer(10000000ULL, 10000000ULL, throttle_kick, vm);
	else if (throttle_timer && pct)
		mevent_enable(throttle_timer);
	else if (throttle_timer)
		mevent_disable(throttle_timer);
}

static void vcpu_throttle(void)
{
	int pct = atomic_load(&throttle_pct);
	if (pct > 0) {
		struct timespec ts = { 0, pct * 100000L };
		nanosleep(&ts, NULL);
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm_exit vme;
	char name[16];
	int probe_seen = 0, profile_seen = 0;

	snprintf(name, sizeof(name), "vcpu%d", vcpu_id(vcpu));
	pthread_setname_np(pthread_self(), name);
	/* -p N:CPU (bhyve): this vCPU's thread runs only on those host CPUs. */
	const char *cpus = get_config_valuef("vcpu.%d.cpuset", vcpu_id(vcpu));
	if (cpus) {
		cpu_set_t set;
		char err[256];
		int rc = compat_parse_cpulist(cpus, &set, err, sizeof(err));
		if (rc == 0 && (rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set)) != 0)
			snprintf(err, sizeof(err), "%s", strerror(rc));
		if (rc) {
			log_err("vcpu.%d.cpuset=%s: cannot pin the vCPU thread: %s", vcpu_id(vcpu), cpus, err);
			vm_request_exit(HYVE_EXIT_ERROR);
			return NULL;
		}
	}

	/* From here on this thread only serves the guest (core/sandbox.c). */
	sandbox_thread_role(SANDBOX_ROLE_DEVICE);
	while (vm_exit_requested() < 0) {
		vcpu_park_if_paused(vcpu_id(vcpu));
		vcpu_throttle();
		if (vm_exit_requested() >= 0)
			break;
		if (vcpu_run(vcpu, &vme)) {
			log_err("vcpu%d: KVM_RUN: %s", vcpu_id(vcpu), strerror(errno));
			vm_request_exit(HYVE_EXIT_ERROR);
			break;
		}
		atomic_fetch_add_explicit(&stat_exits, 1, memory_order_relaxed);
		switch (vme.exitcode) {
		case VM_EXITCODE_INOUT:
			atomic_fetch_add_explicit(&stat_io, 1, memory_order_relaxed);
			if (handle_inout(vcpu, &vme))
				vm_request_exit(HYVE_EXIT_ERROR);
			break;
		case VM_EXITCODE_MMIO:
			atomic_fetch_add_explicit(&stat_mmio, 1, memory_order_relaxed);
			if (handle_mmio(vcpu, &vme))
				vm_request_exit(HYVE_EXIT_ERROR);
			break;
		case VM_EXITCODE_KICKED:
			halt_probe_answer(vcpu, &probe_seen);
			profile_sample(vcpu, &profile_seen);
			break;
		case VM_EXITCODE_HLT:
			break;
		case VM_EXITCODE_SHUTDOWN: {
			/* Where it happened: the one clue a guest that resets gives. */
			struct kvm_regs r;
			struct kvm_sregs sr;
			if (vcpu_get_regs(vcpu, &r) == 0 && vcpu_get_sregs(vcpu, &sr) == 0)
				log_info("vcpu%d: triple fault (rip %#llx, cs %#x base %#llx, cr0 %#llx)", vcpu_id(vcpu),
				         (unsigned long long)r.rip, sr.cs.selector, (unsigned long long)sr.cs.base,
				         (unsigned long long)sr.cr0);
			else
				log_info("vcpu%d: triple fault", vcpu_id(vcpu));
			vm_request_exit(HYVE_EXIT_TRIPLEFAULT);
			break;
		}
		case VM_EXITCODE_SYSTEM_EVENT:
			if (vme.u.sysevent.type == KVM_SYSTEM_EVENT_RESET)
				vm_request_exit(HYVE_EXIT_REBOOT);
			else if (vme.u.sysevent.type == KVM_SYSTEM_EVENT_SHUTDOWN)
				vm_request_exit(HYVE_EXIT_POWEROFF);
			else {
				vcpu_report_failure(vcpu, "unexpected system event", &vme);
				vm_request_exit(HYVE_EXIT_ERROR);
			}
			break;
		case VM_EXITCODE_EMUL_FAIL:
			if (gdb_vcpu_emul_fail(vcpu, &vme))
				break;
			if (the_vm.emulating && emulate_fallback(vcpu, &vme) == 0) {
				atomic_fetch_add_explicit(&stat_fallback, 1, memory_order_relaxed);
				break;
			}
			if (!the_vm.emulating)
				vcpu_report_failure(vcpu, "KVM could not emulate an instruction", &vme);
			vm_request_exit(HYVE_EXIT_ERROR);
			break;
		case VM_EXITCODE_DEBUG:
			if (gdb_vcpu_debug_exit(vcpu, &vme) == 0)
				break;
			/* A debug stop nobody asked for. */
			__attribute__((fallthrough));
		case VM_EXITCODE_OTHER:
		default:
			vcpu_report_failure(vcpu, "unhandled exit", &vme);
			vm_request_exit(HYVE_EXIT_ERROR);
			break;
		}
	}
	return NULL;
}

int vcpus_start(struct hyve_vm *vm)
{
	vm->nrunning = vm->ncpus;
	for (int i = 0; i < vm->ncpus; i++) {
		int rc = pthread_create(&vcpu_threads[i], NULL, vcpu_thread, vm->vcpu[i]);
		if (rc) {
			log_err("cannot start vCPU thread %d: %s", i, strerror(rc));
			vm_request_exit(HYVE_EXIT_ERROR);
			vm->ncpus = vm->nrunning = i;
			return -1;
		}
	}
	return 0;
}

void vcpus_join(struct hyve_vm *vm)
{
	for (int i = 0; i < vm->ncpus; i++) {
		vcpu_kick(vm->vcpu[i]);
		pthread_join(vcpu_threads[i], NULL);
	}
}
