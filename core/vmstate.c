/*
 * VM state sections (see vmstate.h): vCPUs, in-kernel chips, devices.
 * KVM's x86 state structures are plain fixed-layout data, so they are
 * stored as size-prefixed blobs; a size that does not match this build's
 * structure is refused rather than reinterpreted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../devices/pci_emul.h"
#include "log.h"
#include "vmstate.h"

#define VCPU_STATE_VERSION 1
#define CHIP_STATE_VERSION 1

/* ---- section lists ---- */

void vm_sections_free(struct vm_sections *l)
{
	for (int i = 0; i < l->n; i++)
		sb_free(&l->s[i].data);
	free(l->s);
	memset(l, 0, sizeof(*l));
}

struct vm_section *vm_sections_add(struct vm_sections *l, const char *name, uint32_t version)
{
	if (strlen(name) >= VMSTATE_NAME_MAX)
		return NULL;
	if (l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 16;
		struct vm_section *s = realloc(l->s, (size_t)cap * sizeof(*s));
		if (!s)
			return NULL;
		l->s = s;
		l->cap = cap;
	}
	struct vm_section *s = &l->s[l->n++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->version = version;
	sb_init(&s->data);
	return s;
}

const struct vm_section *vm_sections_find(const struct vm_sections *l, const char *name)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->s[i].name, name) == 0)
			return &l->s[i];
	return NULL;
}

static void sb_blob(struct snap_buf *sb, const void *p, size_t n)
{
	sb_u32(sb, (uint32_t)n);
	sb_put(sb, p, n);
}

/* Exactly n bytes or nothing: a size from another build is not guessed at. */
static bool sr_blob(struct snap_rd *in, void *p, size_t n)
{
	uint32_t len = sr_u32(in);
	if (!sr_ok(in) || len != n) {
		in->overrun = true;
		return false;
	}
	return sr_get(in, p, n);
}

/* ---- vCPUs ---- */

static int save_vcpu(struct vmctx *ctx, struct vcpu *v, struct snap_buf *sb, char *err, size_t errlen)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dbg;
	struct kvm_xcrs xcrs;
	uint32_t mp;
	size_t xsz = vcpu_xsave_size(v);
	void *xsave = calloc(1, xsz);
	if (!xsave)
		return -1;
	const char *what = NULL;
	if (vcpu_get_regs(v, &regs))
		what = "registers";
	else if (vcpu_get_sregs(v, &sregs))
		what = "system registers";
	else if (vcpu_get_xsave(v, xsave))
		what = "XSAVE state";
	else if (vcpu_get_lapic(v, &lapic))
		what = "local APIC";
	else if (vcpu_get_events(v, &ev))
		what = "pending events";
	else if (vcpu_get_mp_state(v, &mp))
		what = "MP state";
	if (what) {
		snprintf(err, errlen, "vcpu%d: cannot read its %s: %s", vcpu_id(v), what, strerror(errno));
		free(xsave);
		return -1;
	}
	sb_blob(sb, &regs, sizeof(regs));
	sb_blob(sb, &sregs, sizeof(sregs));
	sb_u32(sb, (uint32_t)xsz);
	sb_put(sb, xsave, xsz);
	free(xsave);
	bool have_xcrs = vcpu_get_xcrs(v, &xcrs) == 0;
	sb_bool(sb, have_xcrs);
	if (have_xcrs)
		sb_blob(sb, &xcrs, sizeof(xcrs));
	sb_blob(sb, &lapic, sizeof(lapic));
	sb_blob(sb, &ev, sizeof(ev));
	sb_u32(sb, mp);
	bool have_dbg = vcpu_get_debugregs(v, &dbg) == 0;
	sb_bool(sb, have_dbg);
	if (have_dbg)
		sb_blob(sb, &dbg, sizeof(dbg));

	/* Every MSR KVM migrates (TSC, SYSCALL/SYSENTER, PAT, TSC deadline, ...). */
	const uint32_t *idx;
	int n = vm_msr_index_list(ctx, &idx);
	if (n < 0) {
		snprintf(err, errlen, "vcpu%d: cannot list MSRs: %s", vcpu_id(v), strerror(errno));
		return -1;
	}
	uint64_t *vals = calloc((size_t)n + 1, sizeof(*vals));
	bool *ok = calloc((size_t)n + 1, sizeof(*ok));
	if (!vals || !ok || vcpu_get_msrs(v, idx, vals, ok, n)) {
		snprintf(err, errlen, "vcpu%d: cannot read MSRs: %s", vcpu_id(v), strerror(errno));
		free(vals);
		free(ok);
		return -1;
	}
	uint32_t nok = 0;
	for (int i = 0; i < n; i++)
		nok += ok[i];
	sb_u32(sb, nok);
	for (int i = 0; i < n; i++)
		if (ok[i]) {
			sb_u32(sb, idx[i]);
			sb_u64(sb, vals[i]);
		}
	free(vals);
	free(ok);
	return sb->failed ? -1 : 0;
}

#define MAX_SAVED_MSRS 4096

static int load_vcpu(struct vcpu *v, struct snap_rd *in, char *err, size_t errlen)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dbg;
	struct kvm_xcrs xcrs;
	int rc = -1;
	sr_blob(in, &regs, sizeof(regs));
	sr_blob(in, &sregs, sizeof(sregs));
	uint32_t xsz = sr_u32(in);
	if (!sr_ok(in) || xsz != vcpu_xsave_size(v)) {
		snprintf(err, errlen, "XSAVE area of %u bytes, this host uses %zu", xsz, vcpu_xsave_size(v));
		return -1;
	}
	void *xsave = malloc(xsz);
	uint32_t *msr_idx = NULL;
	uint64_t *msr_val = NULL;
	if (!xsave)
		goto out;
	sr_get(in, xsave, xsz);
	bool have_xcrs = sr_bool(in);
	if (have_xcrs)
		sr_blob(in, &xcrs, sizeof(xcrs));
	sr_blob(in, &lapic, sizeof(lapic));
	sr_blob(in, &ev, sizeof(ev));
	uint32_t mp = sr_u32(in);
	bool have_dbg = sr_bool(in);
	if (have_dbg)
		sr_blob(in, &dbg, sizeof(dbg));
	uint32_t nmsr = sr_u32(in);
	if (!sr_ok(in) || nmsr > MAX_SAVED_MSRS) {
		snprintf(err, errlen, "vCPU state truncated or malformed");
		goto out;
	}
	msr_idx = calloc(nmsr + 1, sizeof(*msr_idx));
	msr_val = calloc(nmsr + 1, sizeof(*msr_val));
	if (!msr_idx || !msr_val)
		goto out;
	for (uint32_t i = 0; i < nmsr; i++) {
		msr_idx[i] = sr_u32(in);
		msr_val[i] = sr_u64(in);
	}
	if (!sr_done(in)) {
		snprintf(err, errlen, "vCPU state %s", sr_ok(in) ? "has trailing bytes" : "truncated");
		goto out;
	}
	if (mp > KVM_MP_STATE_AP_RESET_HOLD) {
		snprintf(err, errlen, "MP state %u is not valid", mp);
		goto out;
	}

	/* Control registers and APIC base first: later state is interpreted under them. */
	const char *what = NULL;
	if (vcpu_set_sregs(v, &sregs))
		what = "system registers";
	else if (vcpu_set_regs(v, &regs))
		what = "registers";
	else if (vcpu_set_xsave(v, xsave))
		what = "XSAVE state";
	else if (have_xcrs && vcpu_set_xcrs(v, &xcrs))
		what = "XCRs";
	else if (vcpu_set_lapic(v, &lapic))
		what = "local APIC";
	if (what) {
		snprintf(err, errlen, "cannot set %s: %s", what, strerror(errno));
		goto out;
	}
	/* KVM stops at the first MSR it refuses; skip that one and go on. */
	int skipped = 0;
	for (uint32_t done = 0; done < nmsr;) {
		int set = vcpu_set_msrs(v, msr_idx + done, msr_val + done, (int)(nmsr - done));
		if (set < 0) {
			snprintf(err, errlen, "cannot set MSRs: %s", strerror(errno));
			goto out;
		}
		done += (uint32_t)set;
		if (done < nmsr) {
			log_debug("vcpu%d: MSR 0x%x not restored", vcpu_id(v), msr_idx[done]);
			skipped++;
			done++;
		}
	}
	if (skipped)
		log_debug("vcpu%d: %d of %u MSRs not accepted by this host", vcpu_id(v), skipped, nmsr);
	ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
	if (vcpu_set_mp_state(v, mp))
		what = "MP state";
	else if (vcpu_set_events(v, &ev))
		what = "pending events";
	else if (have_dbg && vcpu_set_debugregs(v, &dbg))
		what = "debug registers";
	if (what) {
		snprintf(err, errlen, "cannot set %s: %s", what, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(xsave);
	free(msr_idx);
	free(msr_val);
	return rc;
}

/* ---- in-kernel chips ---- */

static int save_chips(struct vmctx *ctx, struct vm_sections *out, char *err, size_t errlen)
{
	struct vm_section *s = vm_sections_add(out, "irqchip", CHIP_STATE_VERSION);
	if (!s)
		return -1;
	for (uint32_t id = 0; id < 3; id++) {
		struct kvm_irqchip chip = { .chip_id = id };
		if (vm_get_irqchip(ctx, &chip)) {
			snprintf(err, errlen, "cannot read interrupt controller %u: %s", id, strerror(errno));
			return -1;
		}
		sb_blob(&s->data, &chip, sizeof(chip));
	}
	struct kvm_pit_state2 pit;
	if (vm_get_pit(ctx, &pit)) {
		snprintf(err, errlen, "cannot read the PIT: %s", strerror(errno));
		return -1;
	}
	s = vm_sections_add(out, "pit", CHIP_STATE_VERSION);
	if (!s)
		return -1;
	sb_blob(&s->data, &pit, sizeof(pit));
	struct kvm_clock_data clk;
	memset(&clk, 0, sizeof(clk));
	s = vm_sections_add(out, "clock", CHIP_STATE_VERSION);
	if (!s)
		return -1;
	bool have_clock = vm_get_clock(ctx, &clk) == 0;
	sb_bool(&s->data, have_clock);
	sb_u64(&s->data, clk.clock);
	return 0;
}

static int load_chips(struct vmctx *ctx, const struct vm_sections *in, char *err, size_t errlen)
{
	static const char *const names[] = { "irqchip", "pit", "clock" };
	const struct vm_section *sec[3];
	for (int i = 0; i < 3; i++) {
		sec[i] = vm_sections_find(in, names[i]);
		if (!sec[i] || sec[i]->version != CHIP_STATE_VERSION) {
			snprintf(err, errlen, "section %s: %s", names[i], sec[i] ? "unknown version" : "missing");
			return -1;
		}
	}
	struct snap_rd rd;
	struct kvm_irqchip chips[3];
	sr_init(&rd, sec[0]->data.data, sec[0]->data.len);
	for (uint32_t id = 0; id < 3; id++)
		if (sr_blob(&rd, &chips[id], sizeof(chips[id])) && chips[id].chip_id != id)
			rd.overrun = true;
	if (!sr_done(&rd)) {
		snprintf(err, errlen, "section irqchip: malformed");
		return -1;
	}
	for (uint32_t id = 0; id < 3; id++)
		if (vm_set_irqchip(ctx, &chips[id])) {
			snprintf(err, errlen, "section irqchip: chip %u refused: %s", id, strerror(errno));
			return -1;
		}
	struct kvm_pit_state2 pit;
	sr_init(&rd, sec[1]->data.data, sec[1]->data.len);
	sr_blob(&rd, &pit, sizeof(pit));
	if (!sr_done(&rd)) {
		snprintf(err, errlen, "section pit: malformed");
		return -1;
	}
	if (vm_set_pit(ctx, &pit)) {
		snprintf(err, errlen, "section pit: refused: %s", strerror(errno));
		return -1;
	}
	sr_init(&rd, sec[2]->data.data, sec[2]->data.len);
	bool have_clock = sr_bool(&rd);
	struct kvm_clock_data clk = { .clock = sr_u64(&rd) };
	if (!sr_done(&rd)) {
		snprintf(err, errlen, "section clock: malformed");
		return -1;
	}
	/* kvmclock goes on from the saved value: no jump over the time saved. */
	if (have_clock && vm_set_clock(ctx, &clk))
		log_warn("section clock: host refused the saved kvmclock: %s", strerror(errno));
	return 0;
}

/* ---- devices ---- */

struct dev_walk {
	struct vm_sections *out;
	const struct vm_sections *in;
	char *err;
	size_t errlen;
	int rc;
	int found;        /* PCI sections matched on load */
	enum { WALK_CHECK, WALK_QUIESCE, WALK_RESUME, WALK_SAVE, WALK_LOAD } op;
};

static void pci_section_name(struct pci_devinst *pi, char *buf, size_t n)
{
	snprintf(buf, n, "pci.%d.%d.%d", pi->pi_bus, pi->pi_slot, pi->pi_func);
}

static void pci_walk_cb(struct pci_devinst *pi, void *arg)
{
	struct dev_walk *w = arg;
	const struct pci_devemu *pe = pi->pi_d;
	char name[VMSTATE_NAME_MAX], e[384];
	if (w->rc)
		return;
	pci_section_name(pi, name, sizeof(name));
	switch (w->op) {
	case WALK_CHECK:
		if (!pe->pe_snapshot || !pe->pe_restore) {
			snprintf(w->err, w->errlen, "device %s (%s) does not support checkpoints", pi->pi_name, name);
			w->rc = -1;
		}
		break;
	case WALK_QUIESCE:
		if (pe->pe_pause)
			pe->pe_pause(pi);
		/* Interrupts it raised must be in the LAPIC state saved next. */
		pci_emul_irqfd_flush(pi);
		break;
	case WALK_RESUME:
		if (pe->pe_resume)
			pe->pe_resume(pi);
		break;
	case WALK_SAVE: {
		struct vm_section *s = vm_sections_add(w->out, name, pe->pe_snapshot_version);
		e[0] = '\0';
		if (!s || pci_emul_save_state(pi, &s->data) || pe->pe_snapshot(pi, &s->data, e, sizeof(e)) ||
		    s->data.failed) {
			snprintf(w->err, w->errlen, "device %s: %s", pi->pi_name, e[0] ? e : "cannot save");
			w->rc = -1;
		}
		break;
	}
	case WALK_LOAD: {
		const struct vm_section *s = vm_sections_find(w->in, name);
		if (!s) {
			snprintf(w->err, w->errlen, "section %s: missing (configured device %s)", name, pi->pi_name);
			w->rc = -1;
			break;
		}
		w->found++;
		struct snap_rd rd;
		sr_init(&rd, s->data.data, s->data.len);
		e[0] = '\0';
		if (pci_emul_load_state(pi, &rd, e, sizeof(e)) ||
		    pe->pe_restore(pi, &rd, s->version, e, sizeof(e))) {
			snprintf(w->err, w->errlen, "section %s (%s): %s", name, pi->pi_name, e[0] ? e : "malformed");
			w->rc = -1;
		} else if (!sr_done(&rd)) {
			snprintf(w->err, w->errlen, "section %s (%s): %s", name, pi->pi_name,
			         sr_ok(&rd) ? "trailing bytes" : "truncated");
			w->rc = -1;
		}
		break;
	}
	}
}

#define MAX_BLOCKERS 4
static bool (*blockers[MAX_BLOCKERS])(char *err, size_t errlen);

void vmstate_add_blocker(bool (*fn)(char *err, size_t errlen))
{
	for (int i = 0; i < MAX_BLOCKERS; i++) {
		if (!blockers[i]) {
			blockers[i] = fn;
			return;
		}
	}
}

int vmstate_check_supported(char *err, size_t errlen)
{
	for (int i = 0; i < MAX_BLOCKERS && blockers[i]; i++)
		if (blockers[i](err, errlen))
			return -1;
	struct dev_walk w = { .err = err, .errlen = errlen, .op = WALK_CHECK };
	pci_walk_devices(pci_walk_cb, &w);
	if (w.rc)
		return -1;
	for (int i = 0; i < snapshot_count(); i++) {
		const struct snapshot_entry *e = snapshot_get(i);
		if (!e->ops || !e->ops->save || !e->ops->load) {
			snprintf(err, errlen, "device %s does not support checkpoints", e->name);
			return -1;
		}
	}
	return 0;
}

void vmstate_quiesce(void)
{
	struct dev_walk w = { .op = WALK_QUIESCE };
	pci_walk_devices(pci_walk_cb, &w);
	for (int i = 0; i < snapshot_count(); i++) {
		const struct snapshot_entry *e = snapshot_get(i);
		if (e->ops && e->ops->quiesce)
			e->ops->quiesce(e->arg);
	}
}

void vmstate_resume(void)
{
	for (int i = 0; i < snapshot_count(); i++) {
		const struct snapshot_entry *e = snapshot_get(i);
		if (e->ops && e->ops->resume)
			e->ops->resume(e->arg);
	}
	struct dev_walk w = { .op = WALK_RESUME };
	pci_walk_devices(pci_walk_cb, &w);
}

int vmstate_save(struct hyve_vm *vm, struct vm_sections *out, char *err, size_t errlen)
{
	char name[VMSTATE_NAME_MAX];
	if (vmstate_check_supported(err, errlen))
		return -1;
	for (int i = 0; i < vm->ncpus; i++) {
		snprintf(name, sizeof(name), "vcpu.%d", i);
		struct vm_section *s = vm_sections_add(out, name, VCPU_STATE_VERSION);
		if (!s || save_vcpu(vm->ctx, vm->vcpu[i], &s->data, err, errlen))
			return -1;
	}
	if (save_chips(vm->ctx, out, err, errlen))
		return -1;
	struct dev_walk w = { .out = out, .err = err, .errlen = errlen, .op = WALK_SAVE };
	pci_walk_devices(pci_walk_cb, &w);
	if (w.rc)
		return -1;
	for (int i = 0; i < snapshot_count(); i++) {
		const struct snapshot_entry *e = snapshot_get(i);
		char e2[256] = "";
		struct vm_section *s = vm_sections_add(out, e->name, e->ops->version);
		if (!s || e->ops->save(e->arg, &s->data, e2, sizeof(e2)) || s->data.failed) {
			snprintf(err, errlen, "device %s: %s", e->name, e2[0] ? e2 : "cannot save");
			return -1;
		}
	}
	return 0;
}

static bool is_vcpu_section(const char *name, int *id)
{
	char *end;
	if (strncmp(name, "vcpu.", 5) != 0)
		return false;
	long v = strtol(name + 5, &end, 10);
	*id = (int)v;
	return *end == '\0' && end != name + 5 && v >= 0 && v < HYVE_MAX_VCPUS;
}

int vmstate_load(struct hyve_vm *vm, const struct vm_sections *in, char *err, size_t errlen)
{
	char e[384];
	/* Every section must belong to something configured here. */
	int nvcpu = 0, nregistry = 0, npci = 0;
	for (int i = 0; i < in->n; i++) {
		const char *n = in->s[i].name;
		int id;
		if (is_vcpu_section(n, &id)) {
			if (id >= vm->ncpus) {
				snprintf(err, errlen, "section %s: the VM has %d vCPUs", n, vm->ncpus);
				return -1;
			}
			nvcpu++;
		} else if (strncmp(n, "pci.", 4) == 0) {
			npci++;
		} else if (snapshot_find(n)) {
			nregistry++;
		} else if (strcmp(n, "irqchip") && strcmp(n, "pit") && strcmp(n, "clock") && strcmp(n, "config")) {
			snprintf(err, errlen, "section %s: no such device in this configuration", n);
			return -1;
		}
	}
	if (nvcpu != vm->ncpus) {
		snprintf(err, errlen, "checkpoint has %d vCPU sections, the VM has %d vCPUs", nvcpu, vm->ncpus);
		return -1;
	}
	/* Devices first: lines they raise settle into the chips restored next. */
	struct dev_walk w = { .in = in, .err = err, .errlen = errlen, .op = WALK_LOAD };
	pci_walk_devices(pci_walk_cb, &w);
	if (w.rc)
		return -1;
	if (w.found != npci) {
		snprintf(err, errlen, "checkpoint has %d PCI device sections, the configuration %d", npci, w.found);
		return -1;
	}
	for (int i = 0; i < snapshot_count(); i++) {
		const struct snapshot_entry *ent = snapshot_get(i);
		const struct vm_section *s = vm_sections_find(in, ent->name);
		if (!s && ent->ops->optional)
			continue;
		if (!s) {
			snprintf(err, errlen, "section %s: missing (configured device)", ent->name);
			return -1;
		}
		struct snap_rd rd;
		sr_init(&rd, s->data.data, s->data.len);
		e[0] = '\0';
		if (ent->ops->load(ent->arg, &rd, s->version, e, sizeof(e)) || !sr_done(&rd)) {
			snprintf(err, errlen, "section %s: %s", ent->name, e[0] ? e : "malformed");
			return -1;
		}
	}
	(void)nregistry;
	if (load_chips(vm->ctx, in, err, errlen))
		return -1;
	for (int i = 0; i < vm->ncpus; i++) {
		char name[VMSTATE_NAME_MAX];
		snprintf(name, sizeof(name), "vcpu.%d", i);
		const struct vm_section *s = vm_sections_find(in, name);
		struct snap_rd rd;
		if (!s) {
			snprintf(err, errlen, "section %s: missing", name);
			return -1;
		}
		if (s->version != VCPU_STATE_VERSION) {
			snprintf(err, errlen, "section %s: version %u (this hyve reads %u)", name, s->version,
			         VCPU_STATE_VERSION);
			return -1;
		}
		sr_init(&rd, s->data.data, s->data.len);
		e[0] = '\0';
		if (load_vcpu(vm->vcpu[i], &rd, e, sizeof(e))) {
			snprintf(err, errlen, "section %s: %s", name, e[0] ? e : "malformed");
			return -1;
		}
	}
	return 0;
}
