/*
 * Unit test for core/emulate.c, the glue between KVM and the instruction
 * completion layer, on a fake vCPU (the vmm calls below): what is read from
 * and written back to KVM for completed instructions, faults (#PF with CR2
 * through KVM_SET_SREGS), the XSAVE area and XCR0, and the
 * vmm.unemulated policy with its log line (the format tests/test_guest.sh
 * matches on emulating hosts).
 *
 * test-sources: core/emulate.c core/insn_decode.c core/insn_mem.c core/insn_complete.c core/config.c
 */
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/config.h"
#include "../../core/log.h"
#include "../../core/mmio.h"
#include "../../core/vm.h"

/* ---- the fake vCPU behind the vmm calls ---- */

#define RAM (2u << 20)
static uint8_t ram[RAM] __attribute__((aligned(4096)));

struct vcpu {
	struct kvm_regs r;
	struct kvm_sregs s;
	uint8_t xs[4096] __attribute__((aligned(64)));
	uint64_t xcr0;
	int exc_vec, exc_err, soft_vec, set_regs, set_sregs, set_xsave, set_xcrs;
	bool exc_has_err;
};
static struct vcpu cpu;

struct vmctx *vcpu_ctx(struct vcpu *v) { (void)v; return NULL; }
int vcpu_id(struct vcpu *v) { (void)v; return 0; }
void *vm_map_gpa(struct vmctx *c, uint64_t gpa, size_t len) { (void)c; return gpa < RAM && len <= RAM - gpa ? ram + gpa : NULL; }
void vm_mark_dirty(struct vmctx *c, uint64_t gpa, uint64_t len) { (void)c; (void)gpa; (void)len; }
int mmio_dispatch(struct vcpu *v, bool w, uint64_t a, int s, uint64_t *val)
{
	(void)v; (void)w; (void)a; (void)s;
	*val = ~0ULL;
	return 1;
}
bool vcpu_cpuid_lookup(struct vcpu *v, uint32_t leaf, uint32_t sub, uint32_t out[4])
{
	(void)v; (void)sub;
	memset(out, 0, 16);
	if (leaf == 1) {
		out[2] = (1u << 22) | (1u << 26);   /* MOVBE, XSAVE */
		out[3] = (1u << 24) | (1u << 25) | (1u << 26);
	} else if (leaf == 0xd) {
		out[0] = 7;
	}
	return leaf == 1 || leaf == 0xd;
}
int vcpu_get_msrs(struct vcpu *v, const uint32_t *idx, uint64_t *vals, bool *ok, int n)
{
	(void)v; (void)idx; (void)vals; (void)n;
	*ok = false;
	return 0;
}
size_t vcpu_xsave_size(struct vcpu *v) { (void)v; return 4096; }
int vcpu_get_xsave(struct vcpu *v, void *buf) { memcpy(buf, v->xs, 4096); return 0; }
int vcpu_set_xsave(struct vcpu *v, const void *buf) { memcpy(v->xs, buf, 4096); v->set_xsave++; return 0; }
int vcpu_get_xcrs(struct vcpu *v, struct kvm_xcrs *x)
{
	memset(x, 0, sizeof(*x));
	x->nr_xcrs = 1;
	x->xcrs[0].value = v->xcr0;
	return 0;
}
int vcpu_set_xcrs(struct vcpu *v, const struct kvm_xcrs *x) { v->xcr0 = x->xcrs[0].value; v->set_xcrs++; return 0; }
int vcpu_get_regs(struct vcpu *v, struct kvm_regs *r) { *r = v->r; return 0; }
int vcpu_set_regs(struct vcpu *v, const struct kvm_regs *r) { v->r = *r; v->set_regs++; return 0; }
int vcpu_get_sregs(struct vcpu *v, struct kvm_sregs *s) { *s = v->s; return 0; }
int vcpu_set_sregs(struct vcpu *v, const struct kvm_sregs *s) { v->s = *s; v->set_sregs++; return 0; }
int vcpu_inject_exception(struct vcpu *v, int vec, bool has_err, uint32_t err)
{
	v->exc_vec = vec;
	v->exc_has_err = has_err;
	v->exc_err = (int)err;
	return 0;
}
int vcpu_inject_soft_interrupt(struct vcpu *v, int vec) { v->soft_vec = vec; return 0; }

/* log.h, captured. */
static char logbuf[8192];
int log_level_max = LOG_INFO;
void logmsg(enum log_level lvl, const char *fmt, ...)
{
	static const char *const prefix[] = { "error: ", "warning: ", "", "debug: " };
	size_t n = strlen(logbuf);
	va_list ap;
	va_start(ap, fmt);
	snprintf(logbuf + n, sizeof(logbuf) - n, "hyve: %s", prefix[lvl]);
	n = strlen(logbuf);
	vsnprintf(logbuf + n, sizeof(logbuf) - n, fmt, ap);
	va_end(ap);
	n = strlen(logbuf);
	snprintf(logbuf + n, sizeof(logbuf) - n, "\n");
}
void fatal(const char *fmt, ...)
{
	(void)fmt;
	abort();
}

static int failed;
static void check(bool ok, const char *msg)
{
	printf("%s - %s\n", ok ? "ok" : "FAIL", msg);
	if (!ok) {
		failed++;
		printf("    log: %s", logbuf);
	}
}

static bool log_matches(const char *re)
{
	regex_t rx;
	if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB))
		return false;
	bool m = regexec(&rx, logbuf, 0, NULL, 0) == 0;
	regfree(&rx);
	return m;
}

/* 64-bit mode, CPL0, the first 2 MiB identity-mapped; code at 0x8000. */
static void reset(const uint8_t *code, size_t n)
{
	memset(&cpu, 0, sizeof(cpu));
	memset(ram, 0, 0x10000);
	memcpy(ram + 0x1000, &(uint64_t){ 0x2000 | 3 }, 8);   /* PML4 -> PDPT */
	memcpy(ram + 0x2000, &(uint64_t){ 0x3000 | 3 }, 8);   /* PDPT -> PD */
	memcpy(ram + 0x3000, &(uint64_t){ 0x83 }, 8);         /* PD[0]: 2 MiB at 0 */
	cpu.s.cr0 = 0x80050033;
	cpu.s.cr3 = 0x1000;
	cpu.s.cr4 = 0x20 | 0x200 | 0x40000;
	cpu.s.efer = 0xd00;
	cpu.s.cs.l = 1;
	cpu.s.cs.present = 1;
	cpu.s.cs.type = 0xb;
	cpu.s.cs.selector = 8;
	cpu.s.ds.present = 1;
	cpu.s.ds.type = 3;
	cpu.r.rip = 0x8000;
	cpu.r.rflags = 2;
	memcpy(ram + 0x8000, code, n);
	uint32_t mxcsr = 0x1f80, mask = 0xffff;
	memcpy(cpu.xs + 24, &mxcsr, 4);
	memcpy(cpu.xs + 28, &mask, 4);
	cpu.xs[512] = 3;
	cpu.xcr0 = 3;
	logbuf[0] = 0;
}

int main(void)
{
	struct vm_exit vme;
	memset(&vme, 0, sizeof(vme));
	vme.exitcode = VM_EXITCODE_EMUL_FAIL;
	vme.kvm_reason = KVM_EXIT_INTERNAL_ERROR;

	reset((const uint8_t[]){ 0xcc }, 1);
	check(emulate_fallback(&cpu, &vme) == 0 && cpu.r.rip == 0x8001 && cpu.exc_vec == 3 && cpu.set_regs == 1,
	      "INT3: RIP written back past it, #BP injected");
	reset((const uint8_t[]){ 0xcd, 0x80 }, 2);
	check(emulate_fallback(&cpu, &vme) == 0 && cpu.r.rip == 0x8002 && cpu.soft_vec == 0x80,
	      "INT 0x80: software interrupt injected");
	reset((const uint8_t[]){ 0x48, 0x0f, 0x38, 0xf0, 0x06 }, 5);   /* movbe (%rsi),%rax */
	cpu.r.rsi = 0x1234;
	memcpy(ram + 0x1234, &(uint64_t){ 0x0102030405060708ULL }, 8);
	check(emulate_fallback(&cpu, &vme) == 0 && cpu.r.rax == 0x0807060504030201ULL && cpu.r.rip == 0x8005,
	      "MOVBE: RAX written back");
	reset((const uint8_t[]){ 0x48, 0x0f, 0x38, 0xf0, 0x06 }, 5);
	cpu.r.rsi = 0x300000;   /* beyond the mapped 2 MiB */
	check(emulate_fallback(&cpu, &vme) == 0 && cpu.exc_vec == 14 && cpu.exc_has_err && cpu.exc_err == 0 &&
	      cpu.s.cr2 == 0x300000 && cpu.set_sregs == 1 && cpu.r.rip == 0x8000,
	      "#PF: CR2 through KVM_SET_SREGS, error code 0, RIP unchanged");
	reset((const uint8_t[]){ 0x0f, 0xae, 0x16 }, 3);   /* ldmxcsr (%rsi) */
	cpu.r.rsi = 0x4000;
	memcpy(ram + cpu.r.rsi, &(uint32_t){ 0x7f80 }, 4);
	uint32_t mx;
	int rc = emulate_fallback(&cpu, &vme);
	memcpy(&mx, cpu.xs + 24, 4);
	check(rc == 0 && cpu.set_xsave == 1 && mx == 0x7f80, "LDMXCSR: MXCSR written back with KVM_SET_XSAVE");
	reset((const uint8_t[]){ 0x0f, 0x01, 0xd1 }, 3);   /* xsetbv */
	cpu.r.rax = 7;
	check(emulate_fallback(&cpu, &vme) == 0 && cpu.set_xcrs == 1 && cpu.xcr0 == 7, "XSETBV: XCR0 written back");

	/* Not completed: #UD by default, with one log line. */
	reset((const uint8_t[]){ 0x66, 0x0f, 0xef, 0xc0 }, 4);   /* pxor */
	check(emulate_fallback(&cpu, &vme) == 0 && cpu.exc_vec == 6 && cpu.r.rip == 0x8000 &&
	      log_matches("instruction not emulated \\(#UD injected\\): rip 0x[0-9a-f]+ cpl 0 mode 64-bit insn "
	                  "\\[66 0f ef c0\\]"),
	      "PXOR: #UD injected, logged with RIP, CPL, mode and bytes");
	char err[256];
	check(config_check_key("vmm.unemulated", "bogus", err, sizeof(err)) == -1 &&
	      config_check_key("vmm.unemulated", "stop", err, sizeof(err)) == 0, "vmm.unemulated takes ud or stop");
	set_config_value("vmm.unemulated", "stop");
	reset((const uint8_t[]){ 0x66, 0x0f, 0xef, 0xc0 }, 4);
	check(emulate_fallback(&cpu, &vme) == -1 && cpu.exc_vec == 0 &&
	      log_matches("instruction not emulated.*rip 0x[0-9a-f]+ cpl 0 mode 64-bit insn \\[66 0f ef c0"),
	      "vmm.unemulated=stop: the VM stops, the same line says why");
	set_config_value("vmm.unemulated", "ud");
	/* Invalid in 64-bit mode: the CPU's #UD, not an unknown instruction. */
	reset((const uint8_t[]){ 0xce }, 1);
	check(emulate_fallback(&cpu, &vme) == 0 && cpu.exc_vec == 6 && logbuf[0] == 0, "INTO in 64-bit mode: #UD, nothing logged");
	/* The failure report the other fatal exits use. */
	reset((const uint8_t[]){ 0x0f, 0x0b }, 2);
	vme.exitcode = VM_EXITCODE_OTHER;
	vcpu_report_failure(&cpu, "unhandled exit", &vme);
	check(log_matches("unhandled exit \\(exit reason [0-9]+\\): rip 0x8000 cpl 0 mode 64-bit insn \\[0f 0b"),
	      "vcpu_report_failure: RIP, CPL, mode and the bytes at RIP");
	return failed ? 1 : 0;
}
