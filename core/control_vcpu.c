/*
 * bhyvectl's verbs on vCPUs and guest memory, as control-socket commands
 * (protocol in control.h; hyvectl spells them as bhyvectl does):
 *   get-reg CPU NAME[,NAME...]|all   "NAME VALUE" lines (--get-rip, --get-all)
 *   set-reg CPU NAME=VALUE           registers of at most 8 bytes (--set-rax=V)
 *   inject-nmi CPU                   (--inject-nmi)
 *   active-cpus                      "active_cpus 0,1" (--get-active-cpus)
 *   memory                           "lowmem 0x..", "highmem 0x.." (--get-lowmem/--get-highmem)
 * Registers go through core/vcpu_regs.c, the GDB stub's access path; the
 * VM is paused for each access.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "log.h"
#include "vcpu_regs.h"

/* "CPU REST": the vCPU number and what follows it. */
static struct vcpu *parse_cpu(struct hyve_vm *vm, const char *arg, const char **rest, char *err, size_t errlen)
{
	char *end;
	if (!arg) {
		snprintf(err, errlen, "expected CPU and register names");
		return NULL;
	}
	errno = 0;
	unsigned long cpu = strtoul(arg, &end, 10);
	if (end == arg || errno || *end != ' ' || cpu >= (unsigned long)vm->ncpus) {
		snprintf(err, errlen, "no vCPU %.20s (this VM has %d)", arg, vm->ncpus);
		return NULL;
	}
	*rest = end + 1;
	return vm->vcpu[cpu];
}

static void reply_reg(struct control_conn *c, struct vcpu_regfile *rf, int n)
{
	uint8_t v[16];
	int size = vcpu_reg_get(rf, n, v);
	if (size < 0) {
		control_reply(c, "%s unavailable", vcpu_reg_name(n));
	} else if (size <= 8) {
		control_reply(c, "%s 0x%016llx", vcpu_reg_name(n), (unsigned long long)vcpu_reg_get_le(v, size));
	} else {
		char hex[40] = "0x";
		for (int i = size - 1, o = 2; i >= 0; i--, o += 2)
			snprintf(hex + o, sizeof(hex) - (size_t)o, "%02x", v[i]);
		control_reply(c, "%s %s", vcpu_reg_name(n), hex);
	}
}

/* get-reg CPU NAME[,NAME...]|all */
static int cmd_get_reg(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	const char *names;
	struct vcpu *vcpu = parse_cpu(vm, arg, &names, err, errlen);
	if (!vcpu)
		return -1;
	int want[128], nwant = 0;
	if (strcmp(names, "all") == 0) {
		for (int n = 0; n < vcpu_reg_count(); n++)
			want[nwant++] = n;
	} else {
		char buf[512];
		snprintf(buf, sizeof(buf), "%s", names);
		for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			int n = vcpu_reg_lookup(t);
			if (n < 0) {
				snprintf(err, errlen, "unknown register '%.40s'", t);
				return -1;
			}
			if (nwant < (int)(sizeof(want) / sizeof(want[0])))
				want[nwant++] = n;
		}
	}
	struct vcpu_regfile rf;
	vcpus_pause(vm);
	int rc = vcpu_regfile_read(vcpu, &rf);
	vcpus_resume(vm);
	if (rc) {
		snprintf(err, errlen, "cannot read the registers: %s", strerror(errno));
		return -1;
	}
	for (int i = 0; i < nwant; i++)
		reply_reg(c, &rf, want[i]);
	return 0;
}

/* set-reg CPU NAME=VALUE (registers of at most 8 bytes) */
static int cmd_set_reg(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	const char *assign;
	struct vcpu *vcpu = parse_cpu(vm, arg, &assign, err, errlen);
	if (!vcpu)
		return -1;
	char name[32];
	const char *eq = strchr(assign, '=');
	if (!eq || (size_t)(eq - assign) >= sizeof(name)) {
		snprintf(err, errlen, "expected NAME=VALUE");
		return -1;
	}
	memcpy(name, assign, (size_t)(eq - assign));
	name[eq - assign] = '\0';
	int n = vcpu_reg_lookup(name);
	if (n < 0 || vcpu_reg_size(n) > 8) {
		snprintf(err, errlen, n < 0 ? "unknown register '%s'" : "%s: set it with the debugger (-G)", name);
		return -1;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(eq + 1, &end, 0);
	if (end == eq + 1 || *end || errno) {
		snprintf(err, errlen, "%s: bad value '%.40s'", name, eq + 1);
		return -1;
	}
	uint8_t val[8];
	vcpu_reg_put_le(val, v, 8);
	struct vcpu_regfile rf;
	vcpus_pause(vm);
	int rc = vcpu_regfile_read(vcpu, &rf);
	if (rc == 0)
		rc = vcpu_reg_set(&rf, n, val);
	if (rc == 0)
		rc = vcpu_regfile_write(vcpu, &rf);
	vcpus_resume(vm);
	if (rc) {
		snprintf(err, errlen, "cannot set %s: %s", name, errno == EINVAL ? "value refused" : strerror(errno));
		return -1;
	}
	reply_reg(c, &rf, n);
	return 0;
}

/* inject-nmi CPU */
static int cmd_inject_nmi(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)c;
	char buf[32];
	snprintf(buf, sizeof(buf), "%s ", arg ? arg : "");
	const char *rest;
	struct vcpu *vcpu = parse_cpu(vm, buf, &rest, err, errlen);
	if (!vcpu)
		return -1;
	if (*rest) {
		snprintf(err, errlen, "expected a vCPU number");
		return -1;
	}
	if (vcpu_inject_nmi(vcpu)) {
		snprintf(err, errlen, "cannot inject an NMI: %s", strerror(errno));
		return -1;
	}
	log_info("NMI injected into vCPU %d by hyvectl", vcpu_id(vcpu));
	return 0;
}

/* active-cpus: the vCPUs that have started (the BSP, and APs after their INIT-SIPI). */
static int cmd_active_cpus(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)arg;
	char list[4 * HYVE_MAX_VCPUS + 8] = "";
	size_t o = 0;
	vcpus_pause(vm);
	for (int i = 0; i < vm->ncpus; i++) {
		uint32_t mp;
		if (vcpu_get_mp_state(vm->vcpu[i], &mp)) {
			vcpus_resume(vm);
			snprintf(err, errlen, "vCPU %d: %s", i, strerror(errno));
			return -1;
		}
		if (mp != KVM_MP_STATE_UNINITIALIZED && mp != KVM_MP_STATE_INIT_RECEIVED)
			o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%d", o ? "," : "", i);
	}
	vcpus_resume(vm);
	control_reply(c, "active_cpus %s", o ? list : "none");
	return 0;
}

/* memory: guest RAM below and above 4 GiB (bhyvectl --get-lowmem, --get-highmem). */
static int cmd_memory(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)arg; (void)err; (void)errlen;
	control_reply(c, "lowmem 0x%016llx", (unsigned long long)vm_get_lowmem_size(vm->ctx));
	control_reply(c, "highmem 0x%016llx", (unsigned long long)vm_get_highmem_size(vm->ctx));
	return 0;
}

void control_vcpu_register_commands(void)
{
	control_register("get-reg", cmd_get_reg);
	control_register("set-reg", cmd_set_reg);
	control_register("inject-nmi", cmd_inject_nmi);
	control_register("active-cpus", cmd_active_cpus);
	control_register("memory", cmd_memory);
}
