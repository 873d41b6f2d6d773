/*
 * Userspace completion of instructions that the host KVM's emulator
 * rejects.  Only used on emulating hosts (PVM), where every guest CPL0
 * instruction goes through KVM's emulator and it gives up on a few that
 * ordinary guests execute; on VT-x/SVM hosts these never reach userspace.
 *
 * This file is the glue between KVM and the completion layer
 * (core/insn*.c, which knows nothing of KVM): it fills a struct insn_vcpu
 * from the vCPU, lets the layer complete the instruction, and writes back
 * what changed (registers, CR2, the XSAVE area, XCR0) and the exception or
 * interrupt to deliver.  An instruction the layer does not complete gets
 * one log line and #UD, as a CPU that lacks it would raise, so the guest
 * can handle it (vmm.unemulated=stop keeps the old stop-the-VM behaviour
 * for debugging).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "insn.h"
#include "log.h"
#include "mmio.h"
#include "vm.h"

static int check_unemulated(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	if (strcmp(value, "ud") == 0 || strcmp(value, "stop") == 0)
		return 0;
	snprintf(err, errlen, "expected ud or stop");
	return -1;
}

static const struct config_key emulate_keys[] = {
	{ "vmm.unemulated", CFG_CUSTOM,
	  "emulating hosts: an instruction hyve cannot complete raises #UD in the guest (ud, default) or stops the VM (stop)",
	  check_unemulated },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) emulate_keys_register(void)
{
	config_register_keys(emulate_keys);
}

/* ---- the vCPU behind the layer's callbacks ---- */

struct emu {
	struct vcpu *vcpu;
	uint8_t *xs;
	size_t xs_len;
};

static void *emu_map(void *opaque, uint64_t gpa, size_t len)
{
	struct emu *e = opaque;
	return vm_map_gpa(vcpu_ctx(e->vcpu), gpa, len);
}

static void emu_dirtied(void *opaque, uint64_t gpa, size_t len)
{
	struct emu *e = opaque;
	vm_mark_dirty(vcpu_ctx(e->vcpu), gpa, len);
}

static int emu_mmio(void *opaque, bool write, uint64_t gpa, int len, uint64_t *val)
{
	struct emu *e = opaque;
	/* 1 (no device there) has already made a read all ones. */
	return mmio_dispatch(e->vcpu, write, gpa, len, val) < 0 ? -1 : 0;
}

static bool emu_cpuid(void *opaque, uint32_t leaf, uint32_t sub, uint32_t out[4])
{
	struct emu *e = opaque;
	return vcpu_cpuid_lookup(e->vcpu, leaf, sub, out);
}

static int emu_rdmsr(void *opaque, uint32_t msr, uint64_t *val)
{
	struct emu *e = opaque;
	bool ok = false;
	if (vcpu_get_msrs(e->vcpu, &msr, val, &ok, 1) || !ok)
		return -1;
	return 0;
}

/*
 * One XSAVE buffer per vCPU thread, kept between instructions (FPU-heavy
 * guests come here often) and freed when the thread ends.
 */
static pthread_key_t xsave_key;
static pthread_once_t xsave_once = PTHREAD_ONCE_INIT;

static void xsave_key_init(void)
{
	pthread_key_create(&xsave_key, free);
}

static uint8_t *emu_xsave(void *opaque, size_t *len)
{
	struct emu *e = opaque;
	size_t n = vcpu_xsave_size(e->vcpu);
	pthread_once(&xsave_once, xsave_key_init);
	/* The first 8 bytes hold the buffer's size; the area starts at 64. */
	uint8_t *blk = pthread_getspecific(xsave_key);
	size_t have = 0;
	if (blk)
		memcpy(&have, blk, sizeof(have));
	if (have < n) {
		free(blk);
		blk = aligned_alloc(64, 64 + ((n + 63) & ~(size_t)63));
		pthread_setspecific(xsave_key, blk);
		if (!blk)
			return NULL;
		memcpy(blk, &n, sizeof(n));
	}
	uint8_t *buf = blk + 64;
	if (vcpu_get_xsave(e->vcpu, buf))
		return NULL;
	e->xs = buf;
	e->xs_len = n;
	*len = n;
	return buf;
}

static int emu_xcr0(void *opaque, uint64_t *val)
{
	struct emu *e = opaque;
	struct kvm_xcrs x;
	if (vcpu_get_xcrs(e->vcpu, &x))
		return -1;
	for (uint32_t i = 0; i < x.nr_xcrs && i < KVM_MAX_XCRS; i++) {
		if (x.xcrs[i].xcr == 0) {
			*val = x.xcrs[i].value;
			return 0;
		}
	}
	*val = 1;   /* x87 only: what XCR0 holds before any XSETBV */
	return 0;
}

static const struct insn_ops emu_ops = {
	.map = emu_map,
	.dirtied = emu_dirtied,
	.mmio = emu_mmio,
	.cpuid = emu_cpuid,
	.rdmsr = emu_rdmsr,
	.xsave = emu_xsave,
	.xcr0 = emu_xcr0,
};

static void regs_to_state(const struct kvm_regs *r, struct insn_vcpu *v)
{
	const __u64 src[16] = { r->rax, r->rcx, r->rdx, r->rbx, r->rsp, r->rbp, r->rsi, r->rdi,
		                    r->r8,  r->r9,  r->r10, r->r11, r->r12, r->r13, r->r14, r->r15 };
	for (int i = 0; i < 16; i++)
		v->gpr[i] = src[i];
	v->rip = r->rip;
	v->rflags = r->rflags;
}

static void state_to_regs(const struct insn_vcpu *v, struct kvm_regs *r)
{
	__u64 *const dst[16] = { &r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp, &r->rsi, &r->rdi,
		                     &r->r8,  &r->r9,  &r->r10, &r->r11, &r->r12, &r->r13, &r->r14, &r->r15 };
	for (int i = 0; i < 16; i++)
		*dst[i] = v->gpr[i];
	r->rip = v->rip;
	r->rflags = v->rflags;
}

static void format_bytes(const uint8_t *b, int n, char *out, size_t len)
{
	out[0] = 0;
	for (int i = 0; i < n && 3 * (size_t)i + 3 < len; i++)
		snprintf(out + 3 * i, len - 3 * (size_t)i, "%02x ", b[i]);
	size_t l = strlen(out);
	if (l)
		out[l - 1] = 0;
}

void vcpu_report_failure(struct vcpu *vcpu, const char *what, const struct vm_exit *vme)
{
	struct kvm_regs r;
	struct insn_vcpu v;
	struct emu e = { vcpu, NULL, 0 };
	char bytes[64];

	memset(&v, 0, sizeof(v));
	if (vcpu_get_regs(vcpu, &r) || vcpu_get_sregs(vcpu, &v.sregs)) {
		log_err("vcpu%d: %s (exit reason %u); registers unavailable", vcpu_id(vcpu), what, vme->kvm_reason);
		return;
	}
	regs_to_state(&r, &v);
	v.ops = &emu_ops;
	v.opaque = &e;
	if (vme->exitcode == VM_EXITCODE_EMUL_FAIL && vme->u.emul.insn_len) {
		v.nbytes = vme->u.emul.insn_len;
		memcpy(v.bytes, vme->u.emul.insn, (size_t)v.nbytes);
	} else if (insn_fetch(&v)) {
		v.nbytes = 0;
	}
	format_bytes(v.bytes, v.nbytes, bytes, sizeof(bytes));
	log_err("vcpu%d: %s (exit reason %u): rip 0x%llx cpl %d mode %s insn [%s]", vcpu_id(vcpu), what,
	        vme->kvm_reason, (unsigned long long)r.rip, insn_cpl(&v),
	        insn_mode_name(insn_cpu_mode(&v.sregs, v.rflags)), v.nbytes ? bytes : "unreadable");
}

/* Deliver the layer's event; for #PF, CR2 first (KVM takes it from sregs). */
static int deliver(struct vcpu *vcpu, const struct insn_vcpu *v, struct kvm_sregs *s)
{
	const struct insn_event *ev = &v->event;
	if (!ev->valid)
		return 0;
	if (ev->soft)
		return vcpu_inject_soft_interrupt(vcpu, ev->vector);
	if (ev->vector == 14) {
		s->cr2 = ev->cr2;
		if (vcpu_set_sregs(vcpu, s))
			return -1;
	}
	return vcpu_inject_exception(vcpu, ev->vector, ev->has_err, ev->err);
}

/*
 * Unknown instructions are logged, at most this many lines per run: a
 * guest whose #UD handler skips the instruction in a loop must not fill
 * the host's disk.
 */
#define UNEMULATED_LOG_MAX 100
static atomic_int unemulated_logged;

int emulate_fallback(struct vcpu *vcpu, const struct vm_exit *vme)
{
	struct kvm_regs r;
	struct insn_vcpu v;
	struct emu e = { vcpu, NULL, 0 };
	char bytes[64];

	memset(&v, 0, sizeof(v));
	if (vcpu_get_regs(vcpu, &r) || vcpu_get_sregs(vcpu, &v.sregs)) {
		vcpu_report_failure(vcpu, "instruction not emulated", vme);
		return -1;
	}
	regs_to_state(&r, &v);
	v.ops = &emu_ops;
	v.opaque = &e;
	if (vme->exitcode == VM_EXITCODE_EMUL_FAIL) {
		v.hint = vme->u.emul.insn;
		v.hint_len = vme->u.emul.insn_len;
	}

	enum insn_result res = insn_complete(&v);
	switch (res) {
	case INSN_DONE:
		if (v.xsave_dirty && vcpu_set_xsave(vcpu, e.xs)) {
			log_err("vcpu%d: KVM_SET_XSAVE: %s", vcpu_id(vcpu), strerror(errno));
			return -1;
		}
		if (v.xcr0_dirty) {
			struct kvm_xcrs x;
			memset(&x, 0, sizeof(x));
			x.nr_xcrs = 1;
			x.xcrs[0].xcr = 0;
			x.xcrs[0].value = v.xcr0;
			if (vcpu_set_xcrs(vcpu, &x)) {
				log_err("vcpu%d: KVM_SET_XCRS: %s", vcpu_id(vcpu), strerror(errno));
				return -1;
			}
		}
		state_to_regs(&v, &r);
		if (vcpu_set_regs(vcpu, &r) || deliver(vcpu, &v, &v.sregs)) {
			log_err("vcpu%d: cannot write back a completed instruction: %s", vcpu_id(vcpu), strerror(errno));
			return -1;
		}
		return 0;
	case INSN_FAULT:
		if (deliver(vcpu, &v, &v.sregs)) {
			log_err("vcpu%d: cannot inject exception %d: %s", vcpu_id(vcpu), v.event.vector, strerror(errno));
			return -1;
		}
		return 0;
	case INSN_UNKNOWN: {
		const char *policy = get_config_value("vmm.unemulated");
		bool stop = policy && strcmp(policy, "stop") == 0;
		/* The instruction's bytes when it decoded, else all that were fetched. */
		format_bytes(v.bytes, v.insn.len ? v.insn.len : v.nbytes, bytes, sizeof(bytes));
		int n = stop ? 0 : atomic_fetch_add(&unemulated_logged, 1);
		if (stop || n < UNEMULATED_LOG_MAX)
			logmsg(stop ? LOG_ERR : LOG_WARN,
			       "vcpu%d: instruction not emulated (%s): rip 0x%llx cpl %d mode %s insn [%s]: %s", vcpu_id(vcpu),
			       stop ? "vmm.unemulated=stop" : "#UD injected", (unsigned long long)r.rip, insn_cpl(&v),
			       insn_mode_name(insn_cpu_mode(&v.sregs, r.rflags)), v.nbytes ? bytes : "unreadable",
			       v.why ? v.why : "not completed");
		if (!stop && n == UNEMULATED_LOG_MAX)
			log_warn("further instructions not emulated are not logged");
		if (stop)
			return -1;
		if (vcpu_inject_exception(vcpu, 6, false, 0)) {
			log_err("vcpu%d: cannot inject #UD: %s", vcpu_id(vcpu), strerror(errno));
			return -1;
		}
		return 0;
	}
	case INSN_ERROR:
	default:
		log_err("vcpu%d: completing an instruction failed: %s", vcpu_id(vcpu), v.why ? v.why : "?");
		vcpu_report_failure(vcpu, "instruction not emulated", vme);
		return -1;
	}
}
