/*
 * The running VM as the core sees it: the vmm context, the vCPUs and their
 * threads, and run control (exit requests, pause/resume).
 */
#ifndef HYVE_VM_H
#define HYVE_VM_H

#include <stdbool.h>
#include <stdint.h>

#include "../boot/boot.h"
#include "../vmm/vmm.h"

#define HYVE_MAX_VCPUS 64

struct hyve_vm {
	struct vmctx *ctx;
	int ncpus;
	struct vcpu *vcpu[HYVE_MAX_VCPUS];
	bool emulating;    /* host KVM emulates guest CPL0 code: use fallbacks */
	int nrunning;      /* vCPU threads started */
};

extern struct hyve_vm the_vm;

/* Create vCPUs, apply CPUID, put the BSP in the loader's entry state. */
int vcpus_create(struct hyve_vm *vm, const struct boot_entry *be);
/* One thread per vCPU; returns once all are started. */
int vcpus_start(struct hyve_vm *vm);
void vcpus_join(struct hyve_vm *vm);
void vcpus_kick_all(struct hyve_vm *vm);
/*
 * Stop every vCPU outside KVM_RUN and wait until all have stopped (they
 * keep their state in KVM); vcpus_resume lets them go.  Pauses nest.
 */
void vcpus_pause(struct hyve_vm *vm);
void vcpus_resume(struct hyve_vm *vm);
bool vcpus_paused(void);
/*
 * The debugger's all-stop (core/gdbstub.c): hold parks every vCPU except
 * runner (-1: none) until released, composing with vcpus_pause.  Safe
 * from vCPU threads.  wait_parked waits until those held are out of the
 * guest; false if the VM is exiting.
 */
void vcpus_debug_hold(struct hyve_vm *vm, bool hold, int runner);
bool vcpus_debug_wait_parked(struct hyve_vm *vm, int runner);
/*
 * ACPI S3 (suspend to RAM, devices/acpi_pm.c): vcpus_suspend, on the vCPU
 * thread that wrote SLP_EN, parks every vCPU (composing with
 * vcpus_pause).  vcpus_wake, from any other thread, puts the vCPUs in
 * their reset state (vCPU 0 in real mode at the 20-bit waking vector,
 * CS = vector >> 4; the others waiting for INIT/SIPI) and lets them run;
 * -1 with err if not suspended or the host refuses the state.
 */
void vcpus_suspend(void);
int vcpus_wake(uint32_t vector, char *err, size_t errlen);
bool vcpus_suspended(void);
/* Slow the vCPUs to pct% sleep (migration auto-converge); 0 stops it. */
void vcpus_set_throttle(struct hyve_vm *vm, int pct);
/* Exit counters since start (hyvectl --get-stats). */
struct vcpu_stats {
	uint64_t exits, io, mmio, fallback;
};
void vcpus_get_stats(struct vcpu_stats *st);
/* Exit with status 2 once every vCPU sits in HLT with interrupts off. */
int vcpus_watch_halt(struct hyve_vm *vm);

/* RIP sampling profiler: start sampling; write "count rip" lines at exit. */
int vcpus_profile_start(struct hyve_vm *vm, uint64_t period_ms);
void vcpus_profile_write(const char *path);

/* CPUID table for the VM (core/cpuid.c). */
struct kvm_cpuid2 *cpuid_build(struct vmctx *ctx, int vcpu_id, int ncpus);
int cpuid_check_features(const char *spec, char *err, size_t errlen);
int cpuid_check_model(const char *name, char *err, size_t errlen);
/* Deny the guest the MSRs its CPUID does not announce (x86.strictmsr); 0 or -1 (logged). */
int cpuid_filter_msrs(struct hyve_vm *vm);

/*
 * Complete in userspace an instruction KVM's emulator gave up on (only on
 * emulating hosts).  0: done, resume the vCPU; -1: fatal, message printed.
 */
int emulate_fallback(struct vcpu *vcpu, const struct vm_exit *vme);
/* Print RIP, CPL, mode and instruction bytes of a vCPU for a fatal error. */
void vcpu_report_failure(struct vcpu *vcpu, const char *what, const struct vm_exit *vme);

#endif
