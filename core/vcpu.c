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

#include "exitcode.h"
#include "inout.h"
#include "log.h"
#include "mevent.h"
#include "mmio.h"
#include "vm.h"

struct hyve_vm the_vm;

static pthread_t vcpu_threads[HYVE_MAX_VCPUS];
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

void vm_request_exit(int status)
{
	int expected = -1;
	if (atomic_compare_exchange_strong(&exit_status, &expected, status)) {
		vcpus_kick_all(&the_vm);
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

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm_exit vme;
	char name[16];
	int probe_seen = 0, profile_seen = 0;

	snprintf(name, sizeof(name), "vcpu%d", vcpu_id(vcpu));
	pthread_setname_np(pthread_self(), name);

	while (vm_exit_requested() < 0) {
		if (vcpu_run(vcpu, &vme)) {
			log_err("vcpu%d: KVM_RUN: %s", vcpu_id(vcpu), strerror(errno));
			vm_request_exit(HYVE_EXIT_ERROR);
			break;
		}
		switch (vme.exitcode) {
		case VM_EXITCODE_INOUT:
			if (handle_inout(vcpu, &vme))
				vm_request_exit(HYVE_EXIT_ERROR);
			break;
		case VM_EXITCODE_MMIO:
			if (handle_mmio(vcpu, &vme))
				vm_request_exit(HYVE_EXIT_ERROR);
			break;
		case VM_EXITCODE_KICKED:
			halt_probe_answer(vcpu, &probe_seen);
			profile_sample(vcpu, &profile_seen);
			break;
		case VM_EXITCODE_HLT:
			break;
		case VM_EXITCODE_SHUTDOWN:
			log_info("vcpu%d: triple fault", vcpu_id(vcpu));
			vm_request_exit(HYVE_EXIT_TRIPLEFAULT);
			break;
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
			if (the_vm.emulating && emulate_fallback(vcpu, &vme) == 0)
				break;
			if (!the_vm.emulating)
				vcpu_report_failure(vcpu, "KVM could not emulate an instruction", &vme);
			vm_request_exit(HYVE_EXIT_ERROR);
			break;
		case VM_EXITCODE_DEBUG:
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
	for (int i = 0; i < vm->ncpus; i++) {
		int rc = pthread_create(&vcpu_threads[i], NULL, vcpu_thread, vm->vcpu[i]);
		if (rc) {
			log_err("cannot start vCPU thread %d: %s", i, strerror(rc));
			vm_request_exit(HYVE_EXIT_ERROR);
			vm->ncpus = i;
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
