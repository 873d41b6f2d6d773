/*
 * vmm: the only layer of hyve that talks to /dev/kvm (bhyve's libvmmapi).
 *
 * Everything above this header sees a VM (struct vmctx), its vCPUs
 * (struct vcpu), guest memory as host pointers checked against the guest's
 * RAM layout, and exits translated into struct vm_exit.  Nothing above this
 * layer issues an ioctl.  Register state uses the kernel's x86 structures
 * (kvm_regs, kvm_sregs) because they are plain data and are what a
 * checkpoint stores.
 */
#ifndef HYVE_VMM_H
#define HYVE_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

struct vmctx;
struct vcpu;

/* Guest physical layout (as bhyve): RAM below 3 GiB, the rest above 4 GiB. */
#define VM_LOWMEM_LIMIT   0xC0000000ULL
#define VM_HIGHMEM_BASE   0x100000000ULL
#define VM_PCI_MMIO32_BASE 0xC0000000ULL  /* 32-bit BAR window ... */
#define VM_PCI_MMIO32_END  0xE0000000ULL  /* ... up to ECAM */
#define VM_PCI_ECAM_BASE   0xE0000000ULL  /* 256 MiB: buses 0..255 */
#define VM_PCI_ECAM_SIZE   0x10000000ULL
#define VM_IOAPIC_BASE     0xFEC00000ULL
#define VM_LAPIC_BASE      0xFEE00000ULL

/* Host facts found when the VM is created. */
struct vmm_host_info {
	bool emulating;          /* PVM-style KVM: guest CPL0 code is emulated */
	int max_vcpus;           /* KVM_CAP_MAX_VCPUS */
	bool has_irqfd, has_ioeventfd, has_manual_dirty_log;
};

struct vmctx *vm_create(const char *name, char *err, size_t errlen);
void vm_destroy(struct vmctx *ctx);
const struct vmm_host_info *vm_host_info(struct vmctx *ctx);
const char *vm_name(struct vmctx *ctx);

/* Allocate and register guest RAM (anonymous, MAP_NORESERVE). */
int vm_setup_memory(struct vmctx *ctx, uint64_t memsize, char *err, size_t errlen);
/*
 * bhyve's memory.wired (-S: mlock the guest RAM, faulting it all in) and
 * memory.guest_in_core (-C: include it in hyve's core dumps; without it
 * MADV_DONTDUMP keeps guest RAM out of them).  Kept for the RAM mappings a
 * restore puts in place (vm_map_memory_file).
 */
int vm_set_memory_policy(struct vmctx *ctx, bool wired, bool in_core, char *err, size_t errlen);
/*
 * Map host memory at gpa as a firmware region outside guest RAM (never in
 * checkpoints, dirty logs or vm_map_gpa): read-only for a boot ROM (guest
 * writes to it exit as MMIO), writable for a flash variable store.
 */
#define VM_FW_SLOT_BASE 8
#define VM_MAX_FW_SLOTS 4
int vm_map_firmware(struct vmctx *ctx, uint64_t gpa, void *hva, uint64_t size, bool readonly);
/*
 * Device memory (a framebuffer) at the guest-physical address its BAR
 * says: (re)map it at gpa, or unmap it with gpa VM_DEVMEM_UNMAPPED.
 * *slot is -1 before the first mapping.  Not guest RAM: not in
 * checkpoints, dirty logs or vm_map_gpa (its device saves what it needs).
 */
#define VM_DEVMEM_SLOT_BASE (VM_FW_SLOT_BASE + VM_MAX_FW_SLOTS)
#define VM_MAX_DEVMEM_SLOTS 4
#define VM_DEVMEM_UNMAPPED UINT64_MAX
int vm_map_devmem(struct vmctx *ctx, int *slot, uint64_t gpa, void *hva, uint64_t size);
/* The same, read-only: guest writes exit as MMIO (a flash part in read-array mode). */
int vm_map_devmem_readonly(struct vmctx *ctx, int *slot, uint64_t gpa, void *hva, uint64_t size);
uint64_t vm_get_lowmem_size(struct vmctx *ctx);
uint64_t vm_get_highmem_size(struct vmctx *ctx);
/*
 * Host pointer for [gpa, gpa+len) if the whole range is guest RAM in one
 * contiguous region, else NULL.  Every guest-supplied address goes through
 * here (or vm_copy_*) before it is dereferenced.
 */
void *vm_map_gpa(struct vmctx *ctx, uint64_t gpa, size_t len);
int vm_copy_to_guest(struct vmctx *ctx, uint64_t gpa, const void *src, size_t len);
/*
 * While dirty logging is on (migration), guest RAM that hyve writes itself
 * must be reported: KVM only sees the guest's own writes.  vm_copy_to_guest
 * does it; virtio marks every chain it returns; anything else writing
 * through a vm_map_gpa pointer calls this.  Cheap when logging is off.
 */
void vm_mark_dirty(struct vmctx *ctx, uint64_t gpa, uint64_t len);
bool vm_dirty_logging(struct vmctx *ctx);
int vm_copy_from_guest(struct vmctx *ctx, uint64_t gpa, void *dst, size_t len);

/* In-kernel interrupt controllers and timers. */
int vm_create_irqchip(struct vmctx *ctx);   /* LAPIC + IOAPIC + PIC */
int vm_create_pit(struct vmctx *ctx);
/* Drive a GSI line.  Edge-triggered sources call vm_irq_pulse. */
int vm_set_irq_line(struct vmctx *ctx, int gsi, int level);
int vm_irq_pulse(struct vmctx *ctx, int gsi);
int vm_signal_msi(struct vmctx *ctx, uint64_t addr, uint32_t data);
/* The guest TSC rate in kHz (KVM_GET_TSC_KHZ on the VM), or 0 if unknown. */
unsigned vm_get_tsc_khz(struct vmctx *ctx);

/*
 * MSI routes and irqfds (host_info.has_irqfd): a device that raises an
 * MSI often gets a GSI routed to that address/data pair and an eventfd
 * bound to the GSI; writing the eventfd then injects without an ioctl
 * per interrupt, and from any thread.  GSIs from vm_msi_route_add start at
 * VM_MSI_GSI_BASE (below are the PC pins).  -1 on failure (table full or
 * KVM refused).
 */
#define VM_MSI_GSI_BASE   24
#define VM_MAX_MSI_ROUTES 1024
int vm_msi_route_add(struct vmctx *ctx, uint64_t addr, uint32_t data);
int vm_msi_route_update(struct vmctx *ctx, int gsi, uint64_t addr, uint32_t data);
void vm_msi_route_del(struct vmctx *ctx, int gsi);
/* Bind (assign) or unbind an eventfd to a GSI.  Unbinding waits until an
 * injection the eventfd already triggered has been delivered. */
int vm_irqfd(struct vmctx *ctx, int fd, int gsi, bool assign);

/*
 * ioeventfd (host_info.has_ioeventfd): a guest write to [addr, addr+len)
 * in MMIO or port space signals fd inside KVM instead of exiting to hyve.
 * len 0 matches a write of any size at addr; match limits it to writes of
 * exactly `datamatch` (len must then be 1, 2, 4 or 8).
 */
struct vm_ioeventfd {
	int fd;
	uint64_t addr;
	int len;
	bool pio;
	bool match;
	uint64_t datamatch;
};
int vm_ioeventfd(struct vmctx *ctx, const struct vm_ioeventfd *io, bool assign);

/*
 * Make guest RDMSR/WRMSR of these MSRs raise #GP (KVM_X86_SET_MSR_FILTER;
 * accesses from hyve itself are not filtered).  -1 with ENOTSUP when KVM
 * has no MSR filter.  Before the vCPUs run.
 */
int vm_deny_msrs(struct vmctx *ctx, const uint32_t *msrs, int n);

/* CPUID: what KVM supports, edited by the caller, then set on each vCPU. */
struct kvm_cpuid2 *vm_get_supported_cpuid(struct vmctx *ctx);

/* vCPUs */
struct vcpu *vm_vcpu_create(struct vmctx *ctx, int id);
void vm_vcpu_destroy(struct vcpu *vcpu);
int vcpu_id(struct vcpu *vcpu);
struct vmctx *vcpu_ctx(struct vcpu *vcpu);
int vcpu_set_cpuid(struct vcpu *vcpu, struct kvm_cpuid2 *cpuid);
/* A leaf of the table last set with vcpu_set_cpuid (false and zeros if absent). */
bool vcpu_cpuid_lookup(struct vcpu *vcpu, uint32_t leaf, uint32_t sub, uint32_t out[4]);
int vcpu_get_regs(struct vcpu *vcpu, struct kvm_regs *regs);
int vcpu_set_regs(struct vcpu *vcpu, const struct kvm_regs *regs);
int vcpu_get_sregs(struct vcpu *vcpu, struct kvm_sregs *sregs);
int vcpu_set_sregs(struct vcpu *vcpu, const struct kvm_sregs *sregs);
int vcpu_get_events(struct vcpu *vcpu, struct kvm_vcpu_events *ev);
int vcpu_set_events(struct vcpu *vcpu, const struct kvm_vcpu_events *ev);
int vcpu_get_mp_state(struct vcpu *vcpu, uint32_t *state);
int vcpu_set_mp_state(struct vcpu *vcpu, uint32_t state);
/* Queue an exception (vector, optional error code) for the next entry. */
int vcpu_inject_exception(struct vcpu *vcpu, int vector, bool has_err, uint32_t err);
/* Queue an NMI (KVM_NMI, through the in-kernel LAPIC). */
int vcpu_inject_nmi(struct vcpu *vcpu);
/* Queue a software interrupt (INT n) for the next entry. */
int vcpu_inject_soft_interrupt(struct vcpu *vcpu, int vector);
/*
 * Guest debugging (the GDB stub): KVM_GUESTDBG_* flags (0 turns it off),
 * with the four breakpoint addresses and DR7 used when the flags include
 * KVM_GUESTDBG_USE_HW_BP.  Stops come back as VM_EXITCODE_DEBUG.
 */
int vcpu_set_guest_debug(struct vcpu *vcpu, uint32_t flags, const uint64_t dr[4], uint64_t dr7);
/* KVM_GUESTDBG_* flags this KVM accepts beyond the basic ones (KVM_CAP_SET_GUEST_DEBUG2), or 0. */
uint32_t vm_guest_debug_flags(struct vmctx *ctx);
/* Translate a linear address with the vCPU's current paging (KVM_TRANSLATE); -1 if unmapped. */
int vcpu_translate(struct vcpu *vcpu, uint64_t lin, uint64_t *gpa);
/* x87/SSE registers in KVM's FXSAVE-like layout. */
int vcpu_get_fpu(struct vcpu *vcpu, struct kvm_fpu *fpu);
int vcpu_set_fpu(struct vcpu *vcpu, const struct kvm_fpu *fpu);
/* Make a vCPU blocked in vcpu_run() return VM_EXITCODE_KICKED soon. */
void vcpu_kick(struct vcpu *vcpu);

/* Exits, translated from struct kvm_run. */
enum vm_exitcode {
	VM_EXITCODE_INOUT,
	VM_EXITCODE_MMIO,
	VM_EXITCODE_HLT,
	VM_EXITCODE_SHUTDOWN,     /* triple fault */
	VM_EXITCODE_SYSTEM_EVENT, /* reset/shutdown requested via KVM */
	VM_EXITCODE_EMUL_FAIL,    /* KVM's instruction emulator gave up */
	VM_EXITCODE_KICKED,       /* vcpu_kick() or a signal */
	VM_EXITCODE_DEBUG,
	VM_EXITCODE_OTHER,        /* anything else: fatal */
};

struct vm_exit {
	enum vm_exitcode exitcode;
	uint32_t kvm_reason;     /* raw KVM exit reason, for messages */
	union {
		struct {
			uint16_t port;
			uint8_t bytes;   /* 1, 2 or 4 */
			bool in;
			uint32_t count;  /* >1 for string I/O */
			uint8_t *data;   /* count*bytes; inputs written here */
		} inout;
		struct {
			uint64_t gpa;
			uint8_t len;
			bool write;
			uint8_t *data;   /* 8 bytes; reads written here */
		} mmio;
		struct {
			uint32_t suberror;
			uint8_t insn_len;    /* 0 when KVM gave no bytes */
			uint8_t insn[15];
		} emul;
		struct {
			uint32_t type;
		} sysevent;
		struct {                 /* KVM_SET_GUEST_DEBUG stops (vcpu_set_guest_debug) */
			uint32_t exception;  /* 1: #DB (step, debug register), 3: #BP (INT3) */
			uint64_t pc;         /* linear address of the instruction */
			uint64_t dr6, dr7;
		} debug;
	} u;
};

/* Enter the guest until the next exit that needs userspace. */
int vcpu_run(struct vcpu *vcpu, struct vm_exit *vme);

/*
 * Which instructions the host's emulator rejects at CPL0 (emulating hosts
 * only): runs each in a throwaway VM.  names[i] is the probe's name.
 */
#define EMULATOR_PROBE_MAX 32
struct emulator_probe {
	int count;
	const char *names[EMULATOR_PROBE_MAX];
	bool rejected[EMULATOR_PROBE_MAX];   /* did not complete in the probe VM */
	bool faulted[EMULATOR_PROBE_MAX];    /* of those: the host raised an exception itself (no exit to hyve) */
};
int vmm_probe_emulator(struct emulator_probe *out);
/*
 * Feature flags an emulating host shows its guests whatever KVM_SET_CPUID2
 * says: a throwaway VM with every flag of CPUID 1 and 7.0 cleared runs
 * CPUID at CPL0.  forced[]: 1.ECX, 1.EDX, 7.0.EBX, 7.0.ECX, 7.0.EDX, 0xd.1.EAX.
 */
#define VMM_FORCED_CPUID_REGS 6
int vmm_probe_forced_cpuid(uint32_t forced[VMM_FORCED_CPUID_REGS]);
bool emulator_probe_rejects(const struct emulator_probe *p, const char *name);

/* ---- Full state, for checkpoint and migration ---- */

/* Guest RAM regions as host mappings (index 0: below 4 GiB, 1: above). */
struct vm_mem_region {
	uint64_t gpa, size;
	uint8_t *hva;
};
int vm_mem_regions(struct vmctx *ctx, struct vm_mem_region *out, int max);
/*
 * Replace region i's memory with a private (copy-on-write) mapping of
 * [off, off+size) of fd: pages are read from the file on first touch and
 * guest writes never reach it.  Before any vCPU runs.
 */
int vm_map_memory_file(struct vmctx *ctx, int i, int fd, uint64_t off);
/*
 * After vm_map_memory_file (fd: that file): a low-priority thread copies
 * the file's data pages into the private mappings in the background
 * (MADV_POPULATE_WRITE per 2 MiB, skipping the file's holes, which are
 * zero pages), so the guest's first pass over its RAM after a lazy
 * restore finds them in place instead of faulting each one in.  The VM's
 * memory then grows to what a copy restore uses.  Advisory: errors end it.
 */
void vm_prefetch_memory(struct vmctx *ctx, int fd);

/*
 * vCPU state beyond regs/sregs/events.  XSAVE area size: vcpu_xsave_size()
 * bytes (4096 unless the host has larger state components).
 */
size_t vcpu_xsave_size(struct vcpu *vcpu);
int vcpu_get_xsave(struct vcpu *vcpu, void *buf);
int vcpu_set_xsave(struct vcpu *vcpu, const void *buf);
int vcpu_get_xcrs(struct vcpu *vcpu, struct kvm_xcrs *x);   /* -1/ENOTSUP without XCRs */
int vcpu_set_xcrs(struct vcpu *vcpu, const struct kvm_xcrs *x);
int vcpu_get_lapic(struct vcpu *vcpu, struct kvm_lapic_state *l);
int vcpu_set_lapic(struct vcpu *vcpu, const struct kvm_lapic_state *l);
int vcpu_get_debugregs(struct vcpu *vcpu, struct kvm_debugregs *d);
int vcpu_set_debugregs(struct vcpu *vcpu, const struct kvm_debugregs *d);
/* MSRs KVM saves and restores (KVM_GET_MSR_INDEX_LIST), cached. */
int vm_msr_index_list(struct vmctx *ctx, const uint32_t **idx);
/* Read n MSRs into vals; 0, or -1.  Unreadable ones are flagged in ok[]. */
int vcpu_get_msrs(struct vcpu *vcpu, const uint32_t *idx, uint64_t *vals, bool *ok, int n);
/* Write n MSRs; returns how many KVM accepted (in order), or -1. */
int vcpu_set_msrs(struct vcpu *vcpu, const uint32_t *idx, const uint64_t *vals, int n);

/* In-kernel chips: chip 0 = PIC master, 1 = PIC slave, 2 = IOAPIC. */
int vm_get_irqchip(struct vmctx *ctx, struct kvm_irqchip *chip);
int vm_set_irqchip(struct vmctx *ctx, const struct kvm_irqchip *chip);
int vm_get_pit(struct vmctx *ctx, struct kvm_pit_state2 *pit);
int vm_set_pit(struct vmctx *ctx, const struct kvm_pit_state2 *pit);
int vm_get_clock(struct vmctx *ctx, struct kvm_clock_data *c);
int vm_set_clock(struct vmctx *ctx, const struct kvm_clock_data *c);

/*
 * Dirty page tracking (migration).  With manual protect (KVM 5.8+) the
 * bitmap fetch does not re-protect pages; vm_dirty_log_clear() does, for
 * exactly the pages about to be sent, so a page written after its bit was
 * read is caught in the next round.
 */
int vm_dirty_log_enable(struct vmctx *ctx, bool on);
/* Bitmap of region i (one bit per 4 KiB page, 64-bit words), including
 * pages marked with vm_mark_dirty since the last call. */
int vm_dirty_log_get(struct vmctx *ctx, int i, uint64_t *bitmap);
/* Re-protect pages [first, first+64*nwords) of region i whose bits are set. */
int vm_dirty_log_clear(struct vmctx *ctx, int i, uint64_t first_page, uint32_t npages, uint64_t *bitmap);

#endif
