/*
 * Registers and memory of a stopped vCPU, by name or by GDB register
 * number: the one access path the GDB stub (core/gdbstub.c) and the
 * control socket's get-reg/set-reg (hyvectl --get-rip, --get-all,
 * --set-rax=...) share.  The caller keeps the vCPU out of KVM_RUN (paused,
 * or held by the debugger) while it reads and writes.
 *
 * Register numbers follow vcpu_target_xml (GDB's amd64 layout: the core
 * and SSE features, fs_base/gs_base, then hyve's control-register
 * feature), so the GDB stub passes its numbers straight through.
 */
#ifndef HYVE_VCPU_REGS_H
#define HYVE_VCPU_REGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

#include "../vmm/vmm.h"

/* One fetch of a vCPU's state; setters mark what to write back. */
struct vcpu_regfile {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;
	uint64_t kernel_gs_base;
	bool have_fpu, have_kgs;
	unsigned dirty;   /* VCPU_REGS_* bits */
};
#define VCPU_REGS_GPR  1u
#define VCPU_REGS_SREG 2u
#define VCPU_REGS_FPU  4u
#define VCPU_REGS_KGS  8u

int vcpu_regfile_read(struct vcpu *vcpu, struct vcpu_regfile *rf);
/* Write back what a setter changed; -1 with errno if KVM refused. */
int vcpu_regfile_write(struct vcpu *vcpu, struct vcpu_regfile *rf);

/* GDB's register numbers. */
#define VCPU_REG_RIP 16
int vcpu_reg_count(void);
const char *vcpu_reg_name(int n);
int vcpu_reg_size(int n);                 /* bytes; 0 if no such register */
/* By name, as GDB and bhyvectl spell them (rflags = eflags, fsbase = fs_base). -1 if unknown. */
int vcpu_reg_lookup(const char *name);
/* Value (little-endian, vcpu_reg_size bytes): its size, or -1 if unavailable. */
int vcpu_reg_get(struct vcpu_regfile *rf, int n, uint8_t *val);
/* 0, or -1 with errno EINVAL (a value this layer will not set, e.g. a
 * protected-mode segment selector without its descriptor). */
int vcpu_reg_set(struct vcpu_regfile *rf, int n, const uint8_t *val);

/*
 * Guest memory at virtual addresses of this vCPU (its page tables, or
 * physical addresses while paging is off).  Bytes done: short at the first
 * page that is not mapped or not RAM.  Writes are reported dirty.
 */
size_t vcpu_mem_read(struct vcpu *vcpu, uint64_t addr, void *buf, size_t len);
size_t vcpu_mem_write(struct vcpu *vcpu, uint64_t addr, const void *buf, size_t len);

/* Little-endian values of 1..8 bytes, as registers are passed around. */
void vcpu_reg_put_le(uint8_t *val, uint64_t v, int size);
uint64_t vcpu_reg_get_le(const uint8_t *val, int size);

/* The amd64 target description GDB reads (qXfer:features:read:target.xml). */
extern const char vcpu_target_xml[];

#endif
