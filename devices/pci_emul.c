/*
 * PCI bus emulation: model registry, -s parsing, config space access
 * (mechanism #1 at 0xcf8/0xcfc and ECAM), BAR placement and decoding,
 * capabilities, INTx, MSI and MSI-X.  Bus 0 only.
 */
#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/control.h"
#include "../core/init.h"
#include "../core/inout.h"
#include "../core/log.h"
#include "../core/mmio.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "acpi_pm.h"
#include "pci_emul.h"

#define PCI_MAX_SLOTS 32
#define PCI_MAX_FUNCS 8
#define MAX_MODELS 64

static const struct pci_devemu *models[MAX_MODELS];
static int nmodels;
static struct pci_devinst *devices[PCI_MAX_SLOTS][PCI_MAX_FUNCS];

/* Where BARs go: I/O above the legacy and pc-testdev ports, MMIO in the PCI hole. */
static uint64_t next_io = 0x3000, next_mem32 = VM_PCI_MMIO32_BASE, next_mem64;
static uint32_t cf8_addr;
static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static int gsi_assert_count[24];
static pthread_mutex_t intx_lock = PTHREAD_MUTEX_INITIALIZER;

void pci_emul_register(const struct pci_devemu *pe)
{
	if (nmodels < MAX_MODELS)
		models[nmodels++] = pe;
}

const struct pci_devemu *pci_emul_find(const char *name)
{
	for (int i = 0; i < nmodels; i++)
		if (strcmp(models[i]->pe_emu, name) == 0)
			return models[i];
	return NULL;
}

void pci_print_models(void)
{
	printf("PCI device models (-s slot[:func],model[,options]):\n");
	for (int i = 0; i < nmodels; i++)
		printf("  %-16s %s\n", models[i]->pe_emu, models[i]->pe_help ? models[i]->pe_help : "");
}

/* ---- configuration: -s parsing and key validation ---- */

int pci_parse_options(const char *cfgpath, const char *opts, const char *first_bare_key,
                      char *err, size_t errlen)
{
	char *copy = strdup(opts), *save = NULL;
	int rc = 0;
	bool first = true;
	if (!copy)
		return -1;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save), first = false) {
		char key[256];
		char *eq = strchr(tok, '=');
		const char *val = eq ? eq + 1 : "true";
		if (eq)
			*eq = '\0';
		if (first && !eq && first_bare_key) {
			snprintf(key, sizeof(key), "%s.%s", cfgpath, first_bare_key);
			val = tok;
		} else {
			snprintf(key, sizeof(key), "%s.%s", cfgpath, tok);
		}
		if (set_config_value(key, val)) {
			snprintf(err, errlen, "-s: bad option '%s'", tok);
			rc = -1;
			break;
		}
	}
	free(copy);
	return rc;
}

static int generic_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	return pci_parse_options(cfgpath, opts, NULL, err, errlen);
}

/* Slots the restored configuration (-r/-R) has, and those a -s gave again. */
static bool restored_slot[PCI_MAX_SLOTS][PCI_MAX_FUNCS], respecified[PCI_MAX_SLOTS][PCI_MAX_FUNCS];

void pci_note_restored_slots(void)
{
	for (int s = 0; s < PCI_MAX_SLOTS; s++)
		for (int f = 0; f < PCI_MAX_FUNCS; f++)
			restored_slot[s][f] = get_config_valuef("pci.0.%d.%d.device", s, f) != NULL;
}

struct unknown_opt {
	const char *path, *opt, *model;
	char *err;
	size_t errlen;
	bool found;
};

static void find_unknown_option(const char *key, const char *value, void *arg)
{
	struct unknown_opt *u = arg;
	char why[256];
	if (u->found || config_check_key(key, value, why, sizeof(why)) != 1)
		return;
	snprintf(u->err, u->errlen, "config: %s: unknown option '%s' for device model %s (-s %s)", key,
	         key + strlen(u->path) + 1, u->model, u->opt);
	u->found = true;
}

/* "slot[:func],model[,opts]" or "bus:slot:func,model[,opts]" */
int pci_parse_slot(const char *opt, char *err, size_t errlen)
{
	char nums[64];
	const char *comma = strchr(opt, ',');
	if (!comma || (size_t)(comma - opt) >= sizeof(nums)) {
		snprintf(err, errlen, "-s %s: expected slot[:func],model[,options]", opt);
		return -1;
	}
	memcpy(nums, opt, (size_t)(comma - opt));
	nums[comma - opt] = '\0';
	unsigned b = 0, s = 0, f = 0;
	char extra;
	int n1 = sscanf(nums, "%u:%u:%u%c", &b, &s, &f, &extra);
	if (n1 != 3) {
		b = 0;
		f = 0;
		int n2 = sscanf(nums, "%u:%u%c", &s, &f, &extra);
		if (n2 != 2) {
			f = 0;
			if (sscanf(nums, "%u%c", &s, &extra) != 1) {
				snprintf(err, errlen, "-s %s: bad slot '%s'", opt, nums);
				return -1;
			}
		}
	}
	for (const char *p = nums; *p; p++)
		if (!isdigit((unsigned char)*p) && *p != ':') {
			snprintf(err, errlen, "-s %s: bad slot '%s'", opt, nums);
			return -1;
		}
	if (b != 0 || s >= PCI_MAX_SLOTS || f >= PCI_MAX_FUNCS) {
		snprintf(err, errlen, "-s %s: slot out of range (bus 0, slot 0-31, function 0-7)", opt);
		return -1;
	}
	const char *model = comma + 1;
	const char *mend = strchr(model, ',');
	size_t mlen = mend ? (size_t)(mend - model) : strlen(model);
	char mname[64];
	if (mlen == 0 || mlen >= sizeof(mname)) {
		snprintf(err, errlen, "-s %s: missing device model", opt);
		return -1;
	}
	memcpy(mname, model, mlen);
	mname[mlen] = '\0';
	const struct pci_devemu *pe = pci_emul_find(mname);
	if (!pe) {
		snprintf(err, errlen, "-s %s: unknown device model '%s' (see -s help)", opt, mname);
		return -1;
	}
	char path[64];
	snprintf(path, sizeof(path), "pci.%u.%u.%u", b, s, f);
	char devkey[80];
	snprintf(devkey, sizeof(devkey), "%s.device", path);
	const char *cur = get_config_value(devkey);
	if (cur) {
		/*
		 * bhyve's restore recipe repeats the original -s options: the same
		 * model in a slot the checkpoint (or migration source) configured
		 * replaces that slot's keys.  Anything else is a second device in
		 * one slot.
		 */
		if (!restored_slot[s][f] || respecified[s][f]) {
			snprintf(err, errlen, "config: %s: slot %u:%u already in use", path, s, f);
			return -1;
		}
		if (strcmp(cur, mname) != 0) {
			snprintf(err, errlen, "config: %s: slot %u:%u holds a %s in the restored VM, not a %s", path, s, f,
			         cur, mname);
			return -1;
		}
		config_unset_below(path);
		respecified[s][f] = true;
	}
	set_config_value(devkey, mname);
	if (mend && mend[1]) {
		int (*legacy)(const char *, const char *, char *, size_t) =
		    pe->pe_legacy_config ? pe->pe_legacy_config : generic_legacy_config;
		if (legacy(path, mend + 1, err, errlen)) {
			config_unset_below(path);
			return -1;
		}
	}
	/*
	 * As bhyve's -s parsers, an option the model does not have is a typo on
	 * the command line: an error here (in a -k file or -o it is a warning).
	 */
	struct unknown_opt u = { .path = path, .opt = opt, .model = mname, .err = err, .errlen = errlen };
	config_foreach(path, find_unknown_option, &u);
	if (u.found) {
		config_unset_below(path);
		return -1;
	}
	return 0;
}

static bool model_in_use(const char *name)
{
	for (int s = 0; s < PCI_MAX_SLOTS; s++)
		for (int f = 0; f < PCI_MAX_FUNCS; f++) {
			const char *m = get_config_valuef("pci.0.%d.%d.device", s, f);
			if (m && (strcmp(m, name) == 0 || (strstr(name, "hostbridge") && strstr(m, "hostbridge"))))
				return true;
		}
	return false;
}

void pci_add_default_devices(void)
{
	/* As every bhyve example: hostbridge at 0:0, lpc at 0:31, unless given. */
	if (!model_in_use("hostbridge") && !get_config_value("pci.0.0.0.device"))
		set_config_value("pci.0.0.0.device", "hostbridge");
	if (!model_in_use("lpc") && !get_config_value("pci.0.31.0.device"))
		set_config_value("pci.0.31.0.device", "lpc");
}

/*
 * Options every model takes (bhyve's): bootindex (the firmware boot order;
 * hyve boots boot.kernel directly, so it is kept and noted) and pcireg.*
 * (config-space id overrides, applied after the model's init).
 */
static const char *const generic_options[] = { "bootindex", NULL };

/*
 * bhyve_config(5) block-device option names a model spells differently:
 * `canonical` is what the model reads (copied there at init), or NULL
 * when the option is accepted and has no effect (warned about).
 */
static const struct {
	const char *model, *option, *canonical, *missing;
	bool boolean;
} option_aliases[] = {
	{ "virtio-blk", "sync", "direct", NULL, true },   /* bhyve: direct is an alias for sync (O_SYNC) */
	{ "virtio-blk", "nodelete", NULL, "guest discards still deallocate on the host", true },
	{ "virtio-9p", "sharename", "tag", NULL, false },  /* bhyve's key for the mount tag */
};
#define N_ALIASES (sizeof(option_aliases) / sizeof(option_aliases[0]))

static const struct {
	const char *name;
	int off, bytes;
} pcireg_fields[] = {
	{ "vendor", PCIR_VENDOR, 2 }, { "device", PCIR_DEVICE, 2 }, { "revid", PCIR_REVID, 1 },
	{ "subvendor", PCIR_SUBVEND, 2 }, { "subdevice", PCIR_SUBDEV, 2 },
};
#define N_PCIREG (sizeof(pcireg_fields) / sizeof(pcireg_fields[0]))

static bool model_has_option(const char *model, const char *opt)
{
	const struct pci_devemu *pe = pci_emul_find(model);
	for (const char *const *o = generic_options; *o; o++)
		if (strcmp(*o, opt) == 0)
			return true;
	if (pe && pe->pe_options)
		for (const char *const *o = pe->pe_options; *o; o++)
			if (strcmp(*o, opt) == 0)
				return true;
	for (size_t i = 0; i < N_ALIASES; i++)
		if (strcmp(option_aliases[i].model, model) == 0 && strcmp(option_aliases[i].option, opt) == 0)
			return true;
	return false;
}

/* pci.B.S.F.OPT; returns 1 (unknown, kept) for what bhyve would ignore. */
static int check_pci_key(const char *path, const char *value, char *err, size_t errlen)
{
	unsigned b, s, f;
	char opt[64];
	if (sscanf(path, "pci.%u.%u.%u.%63s", &b, &s, &f, opt) != 4) {
		snprintf(err, errlen, "not a pci.BUS.SLOT.FUNCTION key");
		return 1;
	}
	if (b != 0 || s >= PCI_MAX_SLOTS || f >= PCI_MAX_FUNCS) {
		snprintf(err, errlen, "slot out of range (bus 0, slot 0-31, function 0-7)");
		return -1;
	}
	const char *model = get_config_valuef("pci.%u.%u.%u.device", b, s, f);
	if (strcmp(opt, "device") == 0) {
		if (!pci_emul_find(value)) {
			snprintf(err, errlen, "unknown device model (see -s help)");
			return -1;
		}
		return 0;
	}
	if (!model) {
		snprintf(err, errlen, "option for an empty slot (no pci.%u.%u.%u.device)", b, s, f);
		return 1;
	}
	if (!model_has_option(model, opt)) {
		snprintf(err, errlen, "unknown option '%s' for device model %s", opt, model);
		return 1;
	}
	uint64_t u;
	bool bv;
	if (strcmp(opt, "bootindex") == 0 && config_parse_uint(value, &u)) {
		snprintf(err, errlen, "expected a number");
		return -1;
	}
	for (size_t i = 0; i < N_ALIASES; i++)
		if (option_aliases[i].boolean && strcmp(option_aliases[i].model, model) == 0 &&
		    strcmp(option_aliases[i].option, opt) == 0 && config_parse_bool(value, &bv)) {
			snprintf(err, errlen, "expected true or false");
			return -1;
		}
	return 0;
}

/* pci.B.S.F.pcireg.FIELD and lpc.pcireg.FIELD (bhyve keeps the lpc's there). */
static int check_pcireg_key(const char *path, const char *value, char *err, size_t errlen)
{
	const char *field = strrchr(path, '.') + 1;
	for (size_t i = 0; i < N_PCIREG; i++) {
		if (strcmp(field, pcireg_fields[i].name))
			continue;
		uint64_t u, max = pcireg_fields[i].bytes == 1 ? 0xff : 0xffff;
		if (strcmp(value, "host") == 0) {
			snprintf(err, errlen, "hyve does not copy the host's PCI ids ('host' is for bhyve's GVT-d)");
			return -1;
		}
		if (config_parse_uint(value, &u) || u > max) {
			snprintf(err, errlen, "expected a number up to 0x%llx", (unsigned long long)max);
			return -1;
		}
		unsigned b, s, f;
		if (strncmp(path, "lpc.", 4) == 0)
			return 0;
		if (sscanf(path, "pci.%u.%u.%u.", &b, &s, &f) != 3 || b != 0 || s >= PCI_MAX_SLOTS || f >= PCI_MAX_FUNCS) {
			snprintf(err, errlen, "slot out of range (bus 0, slot 0-31, function 0-7)");
			return -1;
		}
		if (!get_config_valuef("pci.%u.%u.%u.device", b, s, f)) {
			snprintf(err, errlen, "option for an empty slot (no pci.%u.%u.%u.device)", b, s, f);
			return 1;
		}
		return 0;
	}
	snprintf(err, errlen, "not a PCI id register (vendor, device, revid, subvendor, subdevice)");
	return 1;
}

/* Override config-space ids from pcireg.* after the model set its own. */
static void pci_apply_pcireg(struct pci_devinst *pi, const char *cfgpath)
{
	bool lpc = strcmp(pi->pi_d->pe_emu, "lpc") == 0;
	for (size_t i = 0; i < N_PCIREG; i++) {
		const char *v = get_config_valuef("%s.pcireg.%s", cfgpath, pcireg_fields[i].name);
		if (!v && lpc)
			v = get_config_valuef("lpc.pcireg.%s", pcireg_fields[i].name);
		uint64_t u;
		if (!v || config_parse_uint(v, &u))
			continue;
		if (pcireg_fields[i].bytes == 1)
			pci_set_cfgdata8(pi, pcireg_fields[i].off, (uint8_t)u);
		else
			pci_set_cfgdata16(pi, pcireg_fields[i].off, (uint16_t)u);
	}
}

/* bhyve's option names become the model's before its init reads them. */
static void pci_apply_aliases(const char *model, const char *cfgpath)
{
	for (size_t i = 0; i < N_ALIASES; i++) {
		if (strcmp(option_aliases[i].model, model) || !option_aliases[i].canonical)
			continue;
		const char *v = get_config_valuef("%s.%s", cfgpath, option_aliases[i].option);
		if (v && !get_config_valuef("%s.%s", cfgpath, option_aliases[i].canonical))
			set_config_valuef(v, "%s.%s", cfgpath, option_aliases[i].canonical);
	}
}

int pci_check_config(config_report_fn fn, void *arg)
{
	char msg[320];
	int nerr = 0;
	for (int s = 0; s < PCI_MAX_SLOTS; s++) {
		for (int f = 0; f < PCI_MAX_FUNCS; f++) {
			const char *model = get_config_valuef("pci.0.%d.%d.device", s, f);
			if (!model)
				continue;
			/* The PCI bus reads functions > 0 only behind a function 0 (cfg_access). */
			const struct pci_devemu *pe = pci_emul_find(model);
			if (f > 0 && !get_config_valuef("pci.0.%d.0.device", s) && !(pe && pe->pe_standalone_func)) {
				snprintf(msg, sizeof(msg),
				         "config: pci.0.%d.%d: function %d of slot %d has no function 0 beside it: the guest "
				         "will not see it (add -s %d:0,...)", s, f, f, s, s);
				fn(LOG_WARN, msg, arg);
			}
			for (size_t i = 0; i < N_ALIASES; i++) {
				if (strcmp(option_aliases[i].model, model))
					continue;
				const char *v = get_config_valuef("pci.0.%d.%d.%s", s, f, option_aliases[i].option);
				bool bv = false, cv = false;
				if (!v || (option_aliases[i].boolean && config_parse_bool(v, &bv)))
					continue;   /* a bad value is the key check's error */
				if (!option_aliases[i].canonical) {
					if (bv) {
						snprintf(msg, sizeof(msg), "config: pci.0.%d.%d.%s: not implemented by hyve's %s (%s)",
						         s, f, option_aliases[i].option, model, option_aliases[i].missing);
						fn(LOG_WARN, msg, arg);
					}
					continue;
				}
				const char *c = get_config_valuef("pci.0.%d.%d.%s", s, f, option_aliases[i].canonical);
				bool differ = c && (option_aliases[i].boolean ? config_parse_bool(c, &cv) == 0 && cv != bv
				                                               : strcmp(c, v) != 0);
				if (differ) {
					snprintf(msg, sizeof(msg), "config: pci.0.%d.%d.%s: contradicts .%s (the same option in %s)",
					         s, f, option_aliases[i].option, option_aliases[i].canonical, model);
					fn(LOG_ERR, msg, arg);
					nerr++;
				}
			}
			if (get_config_valuef("pci.0.%d.%d.bootindex", s, f) && !get_config_value("lpc.bootrom")) {
				snprintf(msg, sizeof(msg), "note: pci.0.%d.%d.bootindex: without -l bootrom hyve boots "
				         "boot.kernel directly; no firmware reads the boot order (kept, ignored)", s, f);
				fn(LOG_INFO, msg, arg);
			}
		}
	}
	return nerr;
}

static const struct config_key pci_keys[] = {
	{ "pci.*.*.*.*", CFG_CUSTOM, "PCI device model (.device) and its options", check_pci_key },
	{ "pci.*.*.*.pcireg.*", CFG_CUSTOM, "PCI id override: vendor, device, revid, subvendor, subdevice", check_pcireg_key },
	{ "lpc.pcireg.*", CFG_CUSTOM, "the lpc bridge's PCI id overrides (bhyve's place for them)", check_pcireg_key },
	{ "pci.irqfd", CFG_BOOL, "raise MSI-X interrupts through KVM irqfds where available (default true)", NULL },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) pci_keys_register(void)
{
	config_register_keys(pci_keys);
}

/* ---- BAR decoding ---- */

static struct pci_devinst *bar_owner_lookup(void *arg, uint64_t addr, bool io, int *idx)
{
	struct pci_devinst *pi = arg;
	for (int i = 0; i <= PCI_ROM_IDX; i++) {
		struct pcibar *b = &pi->pi_bar[i];
		bool is_io = b->type == PCIBAR_IO;
		if (b->type == PCIBAR_NONE || b->type == PCIBAR_MEMHI64 || is_io != io)
			continue;
		if (addr >= b->addr && addr - b->addr < b->size) {
			*idx = i;
			return pi;
		}
	}
	return NULL;
}

static int bar_io_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	int idx;
	struct pci_devinst *pi = bar_owner_lookup(arg, port, true, &idx);
	if (!pi)
		return 0;
	uint64_t off = port - pi->pi_bar[idx].addr;
	if (in)
		*val = pi->pi_d->pe_barread ? (uint32_t)pi->pi_d->pe_barread(vcpu, pi, idx, off, bytes) : ~0u;
	else if (pi->pi_d->pe_barwrite)
		pi->pi_d->pe_barwrite(vcpu, pi, idx, off, bytes, *val);
	return 0;
}

static int bar_mem_handler(struct vcpu *vcpu, bool write, uint64_t addr, int size, uint64_t *val, void *arg)
{
	int idx;
	struct pci_devinst *pi = bar_owner_lookup(arg, addr, false, &idx);
	if (!pi)
		return 1;
	uint64_t off = addr - pi->pi_bar[idx].addr;
	if (idx == PCI_ROM_IDX) {   /* read-only; the handler never sees it */
		if (!write) {
			*val = 0;
			for (int i = 0; i < size && off + (uint64_t)i < pi->pi_bar[idx].size; i++)
				*val |= (uint64_t)pi->pi_rom[off + (uint64_t)i] << (8 * i);
		}
		return 0;
	}
	if (pci_emul_msix_bar_access(pi, idx, off, size, write, val))
		return 0;
	if (!write)
		*val = pi->pi_d->pe_barread ? pi->pi_d->pe_barread(vcpu, pi, idx, off, size) : ~0ULL;
	else if (pi->pi_d->pe_barwrite)
		pi->pi_d->pe_barwrite(vcpu, pi, idx, off, size, *val);
	return 0;
}

static void bar_set_decode(struct pci_devinst *pi, int idx, bool on)
{
	struct pcibar *b = &pi->pi_bar[idx];
	if (b->type == PCIBAR_NONE || b->type == PCIBAR_MEMHI64 || b->registered == on)
		return;
	int rc;
	if (b->type == PCIBAR_IO) {
		if (on) {
			struct inout_port iop = { pi->pi_name, (uint16_t)b->addr, (uint16_t)b->size,
			                          bar_io_handler, pi };
			rc = b->addr + b->size <= 0x10000 ? register_inout(&iop) : -1;
		} else {
			rc = unregister_inout((uint16_t)b->addr, (uint16_t)b->size);
		}
	} else {
		if (on) {
			struct mmio_range mr = { pi->pi_name, b->addr, b->size, bar_mem_handler, pi };
			rc = register_mmio(&mr);
		} else {
			rc = unregister_mmio(b->addr);
		}
	}
	/* A guest placing a BAR over another device is its own problem: not decoded. */
	if (rc == 0) {
		b->registered = on;
		if (pi->pi_d->pe_baraddr)
			pi->pi_d->pe_baraddr(pi, idx, on, b->addr);
	} else if (on)
		log_warn("%s: BAR %d at 0x%llx not decoded (overlap)", pi->pi_name, idx,
		         (unsigned long long)b->addr);
}

static bool bar_decode_enabled(struct pci_devinst *pi, int idx)
{
	uint16_t cmd = pci_get_cfgdata16(pi, PCIR_COMMAND);
	if (idx == PCI_ROM_IDX)   /* memory decoding and the ROM's own enable bit, at a real address */
		return (cmd & PCIM_CMD_MEMEN) && (pci_get_cfgdata32(pi, PCIR_BIOS) & PCIM_BIOS_ENABLE) &&
		       pi->pi_bar[idx].addr != 0 && pi->pi_bar[idx].addr != (0xffffffffULL & ~(pi->pi_bar[idx].size - 1));
	return pi->pi_bar[idx].type == PCIBAR_IO ? (cmd & PCIM_CMD_PORTEN) : (cmd & PCIM_CMD_MEMEN);
}

static void bar_write_cfg(struct pci_devinst *pi, int idx)
{
	struct pcibar *b = &pi->pi_bar[idx];
	uint32_t lo;
	switch (b->type) {
	case PCIBAR_IO:
		lo = (uint32_t)b->addr | 1;
		break;
	case PCIBAR_MEM32:
		lo = (uint32_t)b->addr;
		break;
	case PCIBAR_MEM64:
		lo = (uint32_t)b->addr | 0x4;
		pci_set_cfgdata32(pi, PCIR_BAR0 + 4 * (idx + 1), (uint32_t)(b->addr >> 32));
		break;
	default:
		return;
	}
	pci_set_cfgdata32(pi, PCIR_BAR0 + 4 * idx, lo);
}

int pci_emul_alloc_bar(struct pci_devinst *pi, int idx, enum pcibar_type type, uint64_t size)
{
	if (idx < 0 || idx >= PCI_MAX_BARS || (type == PCIBAR_MEM64 && idx == PCI_MAX_BARS - 1))
		return -1;
	uint64_t min = type == PCIBAR_IO ? 4 : 4096;
	if (size < min)
		size = min;
	if (size & (size - 1))
		return -1;
	uint64_t *next = type == PCIBAR_IO ? &next_io : type == PCIBAR_MEM32 ? &next_mem32 : &next_mem64;
	/*
	 * 64-bit BARs go above guest RAM (and above 4 GiB) where nothing
	 * else lives; small ones stay in the 32-bit hole so 32-bit guests work.
	 */
	if (type == PCIBAR_MEM64 && size <= 0x1000000) {
		next = &next_mem32;
	}
	uint64_t base = (*next + size - 1) & ~(size - 1);
	uint64_t limit = type == PCIBAR_IO ? 0x10000 : next == &next_mem32 ? VM_PCI_MMIO32_END : UINT64_MAX;
	if (base + size > limit || base + size < base) {
		log_err("%s: no room for a %llu-byte BAR", pi->pi_name, (unsigned long long)size);
		return -1;
	}
	*next = base + size;
	pi->pi_bar[idx].type = type;
	pi->pi_bar[idx].addr = base;
	pi->pi_bar[idx].size = size;
	if (type == PCIBAR_MEM64)
		pi->pi_bar[idx + 1].type = PCIBAR_MEMHI64;
	bar_write_cfg(pi, idx);
	uint16_t cmd = pci_get_cfgdata16(pi, PCIR_COMMAND);
	cmd |= type == PCIBAR_IO ? PCIM_CMD_PORTEN : PCIM_CMD_MEMEN;
	pci_set_cfgdata16(pi, PCIR_COMMAND, cmd);
	bar_set_decode(pi, idx, true);
	return 0;
}

int pci_emul_alloc_rom(struct pci_devinst *pi, const void *data, size_t len)
{
	uint64_t size = 2048;   /* the smallest a ROM BAR can be: address bits 31:11 */
	while (size < len && size < (16u << 20))
		size <<= 1;
	if (len > size || pi->pi_rom)
		return -1;
	uint64_t base = (next_mem32 + size - 1) & ~(size - 1);
	if (base + size > VM_PCI_MMIO32_END || !(pi->pi_rom = malloc(size))) {
		log_err("%s: no room for a %llu-byte expansion ROM", pi->pi_name, (unsigned long long)size);
		return -1;
	}
	memcpy(pi->pi_rom, data, len);
	memset(pi->pi_rom + len, 0xff, size - len);
	next_mem32 = base + size;
	struct pcibar *b = &pi->pi_bar[PCI_ROM_IDX];
	b->type = PCIBAR_MEM32;
	b->addr = base;
	b->size = size;
	pci_set_cfgdata32(pi, PCIR_BIOS, (uint32_t)base);   /* placed, not enabled: as after reset */
	return 0;
}

/* Guest wrote the expansion ROM register: size probing, placement, enable. */
static void rom_cfgwrite(struct pci_devinst *pi, uint32_t val)
{
	struct pcibar *b = &pi->pi_bar[PCI_ROM_IDX];
	if (b->type == PCIBAR_NONE)
		return;   /* no ROM: the register reads as zero */
	bar_set_decode(pi, PCI_ROM_IDX, false);
	b->addr = val & 0xfffff800u & ~(b->size - 1);
	pci_set_cfgdata32(pi, PCIR_BIOS, (uint32_t)b->addr | (val & PCIM_BIOS_ENABLE));
	if (bar_decode_enabled(pi, PCI_ROM_IDX))
		bar_set_decode(pi, PCI_ROM_IDX, true);
}

/* Guest wrote a BAR register: size probing or relocation. */
static void bar_cfgwrite(struct pci_devinst *pi, int reg, uint32_t val)
{
	int idx = (reg - PCIR_BAR0) / 4;
	struct pcibar *b = &pi->pi_bar[idx];
	if (b->type == PCIBAR_NONE) {
		pci_set_cfgdata32(pi, reg, 0);
		return;
	}
	int base_idx = b->type == PCIBAR_MEMHI64 ? idx - 1 : idx;
	struct pcibar *bb = &pi->pi_bar[base_idx];
	bool decoded = bb->registered;
	uint64_t addr = bb->addr;
	if (b->type == PCIBAR_MEMHI64)
		addr = (addr & 0xffffffffULL) | ((uint64_t)val << 32);
	else
		addr = (addr & ~0xffffffffULL) | (val & (b->type == PCIBAR_IO ? ~3u : ~0xfu));
	addr &= ~(bb->size - 1);   /* size probing: the low bits read back as zero */
	/* I/O BARs keep all 32 bits, as QEMU's: firmware that sizes them with a
	 * 32-bit complement (SeaBIOS) would see 0xffc1 as a 4 GiB request.
	 * Only addresses inside the 64 KiB port space are decoded. */
	if (bb->type == PCIBAR_MEM32 || bb->type == PCIBAR_IO)
		addr &= 0xffffffffULL;
	if (addr == bb->addr)
		goto out;
	if (decoded)
		bar_set_decode(pi, base_idx, false);
	bb->addr = addr;
	if (decoded || bar_decode_enabled(pi, base_idx)) {
		/* All-ones while sizing is not a real placement: don't decode it. */
		uint64_t probe = 0xffffffffULL & ~(bb->size - 1);
		bool in_space = bb->type != PCIBAR_IO || addr + bb->size <= 0x10000;
		if ((addr & 0xffffffffULL) != probe && addr != 0 && in_space)
			bar_set_decode(pi, base_idx, true);
	}
out:
	bar_write_cfg(pi, base_idx);
}

static void command_cfgwrite(struct pci_devinst *pi, uint16_t newcmd)
{
	uint16_t old = pci_get_cfgdata16(pi, PCIR_COMMAND);
	pci_set_cfgdata16(pi, PCIR_COMMAND, newcmd);
	for (int i = 0; i < PCI_MAX_BARS; i++) {
		if (pi->pi_bar[i].type == PCIBAR_NONE || pi->pi_bar[i].type == PCIBAR_MEMHI64)
			continue;
		uint16_t bit = pi->pi_bar[i].type == PCIBAR_IO ? PCIM_CMD_PORTEN : PCIM_CMD_MEMEN;
		if ((old ^ newcmd) & bit)
			bar_set_decode(pi, i, (newcmd & bit) != 0);
	}
	if (pi->pi_bar[PCI_ROM_IDX].type != PCIBAR_NONE)
		bar_set_decode(pi, PCI_ROM_IDX, bar_decode_enabled(pi, PCI_ROM_IDX));
	if ((old ^ newcmd) & PCIM_CMD_INTxDIS) {
		pthread_mutex_lock(&intx_lock);
		bool asserted = pi->pi_lintr_asserted;
		pthread_mutex_unlock(&intx_lock);
		if (asserted) {
			/* Re-evaluate the line with the new disable bit. */
			pci_lintr_deassert(pi);
			pi->pi_lintr_asserted = false;
			if (!(newcmd & PCIM_CMD_INTxDIS))
				pci_lintr_assert(pi);
		}
	}
}

/* ---- capabilities ---- */

int pci_emul_add_capability(struct pci_devinst *pi, const uint8_t *cap, int len)
{
	int off = pi->pi_capend ? pi->pi_capend : 0x40;
	off = (off + 3) & ~3;
	if (off + len > 256)
		return -1;
	memcpy(&pi->pi_cfg[off], cap, (size_t)len);
	pi->pi_cfg[off + 1] = 0;
	if (!pi->pi_capend) {
		pci_set_cfgdata8(pi, PCIR_CAP_PTR, (uint8_t)off);
		pci_set_cfgdata16(pi, PCIR_STATUS, pci_get_cfgdata16(pi, PCIR_STATUS) | PCIM_STATUS_CAPPRESENT);
	} else {
		/* Link from the previous capability. */
		int p = pci_get_cfgdata8(pi, PCIR_CAP_PTR);
		while (pi->pi_cfg[p + 1])
			p = pi->pi_cfg[p + 1];
		pi->pi_cfg[p + 1] = (uint8_t)off;
	}
	pi->pi_capend = off + len;
	return off;
}

int pci_emul_add_pciecap(struct pci_devinst *pi, int port_type)
{
	uint8_t cap[0x3c] = { 0x10 };   /* PCI Express, version 2 */
	cap[2] = (uint8_t)(0x02 | (port_type << 4));
	return pci_emul_add_capability(pi, cap, sizeof(cap)) < 0 ? -1 : 0;
}

int pci_emul_add_msicap(struct pci_devinst *pi, int msgnum)
{
	int mmc = 0;
	while ((1 << mmc) < msgnum && mmc < 5)
		mmc++;
	uint8_t cap[14] = { 0x05 };
	cap[2] = (uint8_t)(0x80 | (mmc << 1));   /* 64-bit capable, MMC */
	int off = pci_emul_add_capability(pi, cap, sizeof(cap));
	if (off < 0)
		return -1;
	pi->pi_msi.capoff = off;
	pi->pi_msi.maxmsgnum = msgnum;
	return 0;
}

int pci_emul_add_msixcap(struct pci_devinst *pi, int msgnum, int barnum)
{
	if (msgnum < 1 || msgnum > 2048 || barnum < 0 || barnum >= PCI_MAX_BARS)
		return -1;
	uint32_t table_size = (uint32_t)msgnum * 16;
	uint32_t pba_off = (table_size + 4095) & ~4095u;
	uint32_t pba_size = ((uint32_t)msgnum + 63) / 64 * 8;
	uint8_t cap[12] = { 0x11 };
	cap[2] = (uint8_t)(msgnum - 1);
	cap[3] = (uint8_t)((msgnum - 1) >> 8);
	uint32_t t = 0 | (uint32_t)barnum, p = pba_off | (uint32_t)barnum;
	memcpy(&cap[4], &t, 4);
	memcpy(&cap[8], &p, 4);
	int off = pci_emul_add_capability(pi, cap, sizeof(cap));
	if (off < 0)
		return -1;
	pi->pi_msix.capoff = off;
	pi->pi_msix.table_bar = barnum;
	pi->pi_msix.pba_bar = barnum;
	pi->pi_msix.table_off = 0;
	pi->pi_msix.pba_off = pba_off;
	pi->pi_msix.table_count = msgnum;
	pi->pi_msix.table = calloc((size_t)msgnum, sizeof(*pi->pi_msix.table));
	pi->pi_msix.pba = calloc(((size_t)msgnum + 63) / 64, sizeof(uint64_t));
	pi->pi_msix.irqfd = calloc((size_t)msgnum, sizeof(*pi->pi_msix.irqfd));
	if (!pi->pi_msix.table || !pi->pi_msix.pba || !pi->pi_msix.irqfd)
		return -1;
	bool irqfd = get_config_bool_default("pci.irqfd", true) && pi->pi_vmctx &&
	             vm_host_info(pi->pi_vmctx)->has_irqfd;
	for (int i = 0; i < msgnum; i++) {
		pi->pi_msix.table[i].ctrl = 1;   /* masked at reset */
		pi->pi_msix.irqfd[i] = (struct msix_irqfd){ .fd = -1, .gsi = irqfd ? -1 : -2 };
	}
	uint64_t barsize = pba_off + pba_size;
	uint64_t sz = 4096;
	while (sz < barsize)
		sz <<= 1;
	return pci_emul_alloc_bar(pi, barnum, PCIBAR_MEM32, sz);
}

static bool in_cap(int capoff, int len, int off)
{
	return capoff && off >= capoff && off < capoff + len;
}

/* ---- interrupts ---- */

int pci_lintr_request(struct pci_devinst *pi)
{
	pi->pi_lintr_pin = 1;   /* INTA: routing rotates by slot */
	pi->pi_lintr_gsi = pci_intx_gsi(pi->pi_slot, 0);
	pci_set_cfgdata8(pi, PCIR_INTPIN, 1);
	pci_set_cfgdata8(pi, PCIR_INTLINE, (uint8_t)pi->pi_lintr_gsi);
	return 0;
}

/* Level-triggered and shared: the line is high while any device asserts it. */
void pci_lintr_assert(struct pci_devinst *pi)
{
	if (!pi->pi_lintr_pin)
		return;
	pthread_mutex_lock(&intx_lock);
	if (!pi->pi_lintr_asserted) {
		pi->pi_lintr_asserted = true;
		pci_set_cfgdata16(pi, PCIR_STATUS, pci_get_cfgdata16(pi, PCIR_STATUS) | PCIM_STATUS_INTxSTATE);
		if (!(pci_get_cfgdata16(pi, PCIR_COMMAND) & PCIM_CMD_INTxDIS) &&
		    gsi_assert_count[pi->pi_lintr_gsi]++ == 0)
			vm_set_irq_line(pi->pi_vmctx, pi->pi_lintr_gsi, 1);
	}
	pthread_mutex_unlock(&intx_lock);
}

void pci_lintr_deassert(struct pci_devinst *pi)
{
	if (!pi->pi_lintr_pin)
		return;
	pthread_mutex_lock(&intx_lock);
	if (pi->pi_lintr_asserted) {
		pi->pi_lintr_asserted = false;
		pci_set_cfgdata16(pi, PCIR_STATUS, pci_get_cfgdata16(pi, PCIR_STATUS) & ~PCIM_STATUS_INTxSTATE);
		if (!(pci_get_cfgdata16(pi, PCIR_COMMAND) & PCIM_CMD_INTxDIS) &&
		    gsi_assert_count[pi->pi_lintr_gsi] > 0 && --gsi_assert_count[pi->pi_lintr_gsi] == 0)
			vm_set_irq_line(pi->pi_vmctx, pi->pi_lintr_gsi, 0);
	}
	pthread_mutex_unlock(&intx_lock);
}

bool pci_msi_enabled(struct pci_devinst *pi)
{
	return pi->pi_msi.capoff && (pci_get_cfgdata16(pi, pi->pi_msi.capoff + 2) & 1);
}

void pci_generate_msi(struct pci_devinst *pi, int index)
{
	int c = pi->pi_msi.capoff;
	if (!pci_msi_enabled(pi))
		return;
	uint64_t addr = pci_get_cfgdata32(pi, c + 4) | (uint64_t)pci_get_cfgdata32(pi, c + 8) << 32;
	uint16_t data = pci_get_cfgdata16(pi, c + 12);
	int mme = (pci_get_cfgdata16(pi, c + 2) >> 4) & 7;
	if (index >= (1 << mme))
		return;
	vm_signal_msi(pi->pi_vmctx, addr, data | (uint32_t)index);
}

bool pci_msix_enabled(struct pci_devinst *pi)
{
	return pi->pi_msix.capoff && (pci_get_cfgdata16(pi, pi->pi_msix.capoff + 2) & 0x8000);
}

/* Interrupts raised each way, for hyvectl --get-stats. */
static atomic_ullong stat_msix_irqfd, stat_msix_ioctl;

/*
 * The eventfd that raises MSI-X vector `index` with the entry's current
 * address/data, or -1 to use KVM_SIGNAL_MSI (pi_lock held).  Made on the
 * vector's first interrupt; a vector the guest reprogrammed gets its
 * route rewritten on the next one, so table writes stay cheap.
 */
static int msix_irqfd(struct pci_devinst *pi, int index, uint64_t addr, uint32_t data)
{
	struct msix_irqfd *f = &pi->pi_msix.irqfd[index];
	struct vmctx *ctx = pi->pi_vmctx;
	if (f->gsi == -2)
		return -1;
	if (f->gsi == -1) {
		f->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		f->gsi = f->fd >= 0 ? vm_msi_route_add(ctx, addr, data) : -1;
		if (f->gsi < 0 || vm_irqfd(ctx, f->fd, f->gsi, true)) {
			log_warn("%s: MSI-X vector %d: no irqfd (%s); using KVM_SIGNAL_MSI", pi->pi_name, index,
			         strerror(errno));
			if (f->gsi >= 0)
				vm_msi_route_del(ctx, f->gsi);
			if (f->fd >= 0)
				close(f->fd);
			*f = (struct msix_irqfd){ .fd = -1, .gsi = -2 };
			return -1;
		}
		f->stale = false;
	} else if (f->stale) {
		if (vm_msi_route_update(ctx, f->gsi, addr, data))
			return -1;
		f->stale = false;
	}
	return f->fd;
}

void pci_emul_irqfd_flush(struct pci_devinst *pi)
{
	pthread_mutex_lock(&pi->pi_lock);
	for (int i = 0; pi->pi_msix.irqfd && i < pi->pi_msix.table_count; i++) {
		struct msix_irqfd *f = &pi->pi_msix.irqfd[i];
		/* Unbinding waits for injections in flight; then bind again. */
		if (f->gsi >= 0 && (vm_irqfd(pi->pi_vmctx, f->fd, f->gsi, false) ||
		                    vm_irqfd(pi->pi_vmctx, f->fd, f->gsi, true))) {
			log_warn("%s: MSI-X vector %d: cannot rebind irqfd; using KVM_SIGNAL_MSI", pi->pi_name, i);
			vm_msi_route_del(pi->pi_vmctx, f->gsi);
			close(f->fd);
			*f = (struct msix_irqfd){ .fd = -1, .gsi = -2 };
		}
	}
	pthread_mutex_unlock(&pi->pi_lock);
}

void pci_generate_msix(struct pci_devinst *pi, int index)
{
	if (!pci_msix_enabled(pi) || index < 0 || index >= pi->pi_msix.table_count)
		return;
	pthread_mutex_lock(&pi->pi_lock);
	struct msix_entry *e = &pi->pi_msix.table[index];
	bool fmask = pci_get_cfgdata16(pi, pi->pi_msix.capoff + 2) & 0x4000;
	if ((e->ctrl & 1) || fmask) {
		pi->pi_msix.pba[index / 64] |= 1ULL << (index % 64);   /* pending */
		pthread_mutex_unlock(&pi->pi_lock);
		return;
	}
	uint64_t addr = e->addr;
	uint32_t data = e->data;
	int fd = msix_irqfd(pi, index, addr, data);
	pthread_mutex_unlock(&pi->pi_lock);
	uint64_t one = 1;
	/* A full counter (EAGAIN) means an injection is already on its way. */
	if (fd >= 0 && (write(fd, &one, sizeof(one)) == sizeof(one) || errno == EAGAIN)) {
		atomic_fetch_add_explicit(&stat_msix_irqfd, 1, memory_order_relaxed);
		return;
	}
	atomic_fetch_add_explicit(&stat_msix_ioctl, 1, memory_order_relaxed);
	vm_signal_msi(pi->pi_vmctx, addr, data);
}

static void msix_stats(struct control_conn *c)
{
	control_reply(c, "msix_irqfd %llu", (unsigned long long)atomic_load(&stat_msix_irqfd));
	control_reply(c, "msix_signal_ioctl %llu", (unsigned long long)atomic_load(&stat_msix_ioctl));
}

static void __attribute__((constructor)) msix_stats_register(void)
{
	control_register_stats(msix_stats);
}

bool pci_emul_msix_bar_access(struct pci_devinst *pi, int baridx, uint64_t off, int size,
                              bool write, uint64_t *val)
{
	if (!pi->pi_msix.capoff || baridx != pi->pi_msix.table_bar)
		return false;
	uint64_t tsize = (uint64_t)pi->pi_msix.table_count * 16;
	if (off >= pi->pi_msix.table_off && off < pi->pi_msix.table_off + tsize) {
		uint64_t o = off - pi->pi_msix.table_off;
		int idx = (int)(o / 16), field = (int)(o % 16);
		if (size != 4 && size != 8) {
			if (!write)
				*val = 0;
			return true;
		}
		pthread_mutex_lock(&pi->pi_lock);
		struct msix_entry *e = &pi->pi_msix.table[idx];
		uint32_t words[4] = { (uint32_t)e->addr, (uint32_t)(e->addr >> 32), e->data, e->ctrl };
		int w = field / 4;
		bool unmasked = false;
		if (write) {
			words[w] = (uint32_t)*val;
			if (size == 8 && w < 3)
				words[w + 1] = (uint32_t)(*val >> 32);
			uint64_t naddr = words[0] | (uint64_t)words[1] << 32;
			if (naddr != e->addr || words[2] != e->data)
				pi->pi_msix.irqfd[idx].stale = true;
			e->addr = naddr;
			e->data = words[2];
			unmasked = (e->ctrl & 1) && !(words[3] & 1);
			e->ctrl = words[3] & 1;
		} else {
			*val = words[w];
			if (size == 8 && w < 3)
				*val |= (uint64_t)words[w + 1] << 32;
		}
		bool pending = pi->pi_msix.pba[idx / 64] & (1ULL << (idx % 64));
		if (unmasked && pending)
			pi->pi_msix.pba[idx / 64] &= ~(1ULL << (idx % 64));
		pthread_mutex_unlock(&pi->pi_lock);
		if (unmasked && pending)
			pci_generate_msix(pi, idx);
		return true;
	}
	uint64_t psize = ((uint64_t)pi->pi_msix.table_count + 63) / 64 * 8;
	if (off >= pi->pi_msix.pba_off && off < pi->pi_msix.pba_off + psize) {
		if (!write) {
			uint64_t o = off - pi->pi_msix.pba_off;
			uint64_t q = pi->pi_msix.pba[o / 8] >> ((o % 8) * 8);
			*val = size == 8 ? q : q & ((1ULL << (size * 8)) - 1);
		}
		return true;
	}
	return false;
}

/* ---- config space access ---- */

static void msix_deliver_pending(struct pci_devinst *pi)
{
	for (int idx = 0; idx < pi->pi_msix.table_count; idx++) {
		pthread_mutex_lock(&pi->pi_lock);
		uint64_t bit = 1ULL << (idx % 64);
		bool deliver = (pi->pi_msix.pba[idx / 64] & bit) && !(pi->pi_msix.table[idx].ctrl & 1);
		if (deliver)
			pi->pi_msix.pba[idx / 64] &= ~bit;
		pthread_mutex_unlock(&pi->pi_lock);
		if (deliver)
			pci_generate_msix(pi, idx);
	}
}

static void cfg_write(struct pci_devinst *pi, int off, int bytes, uint32_t val)
{
	if (pi->pi_d->pe_cfgwrite && pi->pi_d->pe_cfgwrite(pi, off, bytes, val) == 0)
		return;
	if (off >= PCIR_BAR0 && off < PCIR_BAR0 + 24) {
		if (bytes == 4 && (off & 3) == 0)
			bar_cfgwrite(pi, off, val);
		return;
	}
	if (off >= PCIR_BIOS && off < PCIR_BIOS + 4) {
		if (bytes == 4 && off == PCIR_BIOS)
			rom_cfgwrite(pi, val);
		return;
	}
	if (off == PCIR_COMMAND && bytes >= 2) {
		command_cfgwrite(pi, (uint16_t)val);
		return;
	}
	if (off == PCIR_COMMAND && bytes == 1) {
		command_cfgwrite(pi, (uint16_t)((pci_get_cfgdata16(pi, PCIR_COMMAND) & 0xff00) | (val & 0xff)));
		return;
	}
	if (off == PCIR_COMMAND + 1 && bytes == 1) {
		command_cfgwrite(pi, (uint16_t)((pci_get_cfgdata16(pi, PCIR_COMMAND) & 0xff) | (val & 0xff) << 8));
		return;
	}
	bool writable = off == PCIR_INTLINE || off == 0x0c || off == 0x0d;
	if (in_cap(pi->pi_msi.capoff, 14, off) && off >= pi->pi_msi.capoff + 2)
		writable = true;
	if (in_cap(pi->pi_msix.capoff, 12, off) && off >= pi->pi_msix.capoff + 2 &&
	    off < pi->pi_msix.capoff + 4) {
		/* Only enable and function-mask are writable in MSI-X control. */
		uint16_t ctrl = pci_get_cfgdata16(pi, pi->pi_msix.capoff + 2);
		uint16_t nv = bytes >= 2 ? (uint16_t)val :
		              off == pi->pi_msix.capoff + 3 ? (uint16_t)((ctrl & 0xff) | (val & 0xff) << 8)
		                                             : (uint16_t)((ctrl & 0xff00) | (val & 0xff));
		uint16_t old = ctrl;
		ctrl = (uint16_t)((ctrl & 0x3fff) | (nv & 0xc000));
		pci_set_cfgdata16(pi, pi->pi_msix.capoff + 2, ctrl);
		/* Clearing the function mask delivers what became pending while it
		 * was set, for every vector not masked on its own (as a per-vector
		 * unmask does): the guest would otherwise miss those interrupts. */
		if ((old & 0x4000) && (ctrl & 0xc000) == 0x8000)
			msix_deliver_pending(pi);
		return;
	}
	if (!writable)
		return;
	uint16_t msictrl = pi->pi_msi.capoff ? pci_get_cfgdata16(pi, pi->pi_msi.capoff + 2) : 0;
	for (int i = 0; i < bytes && off + i < PCI_CFG_SIZE; i++)
		pi->pi_cfg[off + i] = (uint8_t)(val >> (8 * i));
	if (pi->pi_msi.capoff) {
		/* Only MSI enable and MME are writable in the control word. */
		int c = pi->pi_msi.capoff + 2;
		uint16_t nv = pci_get_cfgdata16(pi, c);
		pci_set_cfgdata16(pi, c, (uint16_t)((msictrl & ~0x71u) | (nv & 0x71u)));
	}
}

static uint32_t cfg_read(struct pci_devinst *pi, int off, int bytes)
{
	uint32_t v = 0;
	if (pi->pi_d->pe_cfgread && pi->pi_d->pe_cfgread(pi, off, bytes, &v) == 0)
		return v;
	for (int i = 0; i < bytes; i++)
		v |= (uint32_t)pi->pi_cfg[off + i] << (8 * i);
	return v;
}

static void cfg_access(int bus, int slot, int func, int off, int bytes, bool write, uint32_t *val)
{
	struct pci_devinst *pi = NULL;
	if (bus == 0 && slot < PCI_MAX_SLOTS && func < PCI_MAX_FUNCS)
		pi = devices[slot][func];
	/* Functions > 0 exist only if function 0 does. */
	if (pi && func > 0 && !devices[slot][0] && !pi->pi_d->pe_standalone_func)
		pi = NULL;
	if (!pi || off + bytes > PCI_CFG_SIZE) {
		if (!write)
			*val = bytes == 4 ? 0xffffffffu : (1u << (8 * bytes)) - 1;
		return;
	}
	pthread_mutex_lock(&cfg_lock);
	if (write)
		cfg_write(pi, off, bytes, *val);
	else
		*val = cfg_read(pi, off, bytes);
	pthread_mutex_unlock(&cfg_lock);
}

static int pci_cf8_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu;
	(void)arg;
	if (port == ACPI_RESET_PORT && bytes == 1)
		return acpi_reset_port_access(in, val);
	if (bytes != 4 || port != 0xcf8) {
		if (in)
			*val = 0xffffffffu;
		return 0;
	}
	if (in)
		*val = cf8_addr;
	else
		cf8_addr = *val & 0x80fffffcu;
	return 0;
}

static int pci_cfc_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu;
	(void)arg;
	uint32_t a = cf8_addr;
	int off = (int)((a & 0xfc) | (port & 3));
	if (!(a & 0x80000000u) || (port & 3) + bytes > 4) {
		if (in)
			*val = bytes == 4 ? 0xffffffffu : (1u << (8 * bytes)) - 1;
		return 0;
	}
	cfg_access((a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7, off, bytes, !in, val);
	return 0;
}

static int pci_ecam_handler(struct vcpu *vcpu, bool write, uint64_t addr, int size, uint64_t *val, void *arg)
{
	(void)vcpu;
	(void)arg;
	uint64_t o = addr - VM_PCI_ECAM_BASE;
	int off = (int)(o & 0xfff);
	if (size > 4 || (off & (size - 1))) {
		if (!write)
			*val = ~0ULL;
		return 0;
	}
	uint32_t v = (uint32_t)*val;
	cfg_access((int)(o >> 20) & 0xff, (int)(o >> 15) & 0x1f, (int)(o >> 12) & 7, off, size, write, &v);
	if (!write)
		*val = v;
	return 0;
}

void pci_walk_devices(pci_walk_fn fn, void *arg)
{
	for (int s = 0; s < PCI_MAX_SLOTS; s++)
		for (int f = 0; f < PCI_MAX_FUNCS; f++)
			if (devices[s][f])
				fn(devices[s][f], arg);
}

static int pci_init(struct vmctx *ctx)
{
	struct inout_port cf8 = { "pci-cf8", 0xcf8, 4, pci_cf8_handler, NULL };
	struct inout_port cfc = { "pci-cfc", 0xcfc, 4, pci_cfc_handler, NULL };
	struct mmio_range ecam = { "pci-ecam", VM_PCI_ECAM_BASE, VM_PCI_ECAM_SIZE, pci_ecam_handler, NULL };
	if (register_inout(&cf8) || register_inout(&cfc) || register_mmio(&ecam))
		return -1;
	uint64_t top = VM_HIGHMEM_BASE + vm_get_highmem_size(ctx);
	next_mem64 = (top + (1ULL << 30) - 1) & ~((1ULL << 30) - 1);   /* 1 GiB aligned */

	for (int s = 0; s < PCI_MAX_SLOTS; s++) {
		for (int f = 0; f < PCI_MAX_FUNCS; f++) {
			const char *model = get_config_valuef("pci.0.%d.%d.device", s, f);
			if (!model)
				continue;
			const struct pci_devemu *pe = pci_emul_find(model);
			if (!pe) {
				log_err("config: pci.0.%d.%d.device: unknown device model '%s'", s, f, model);
				return -1;
			}
			struct pci_devinst *pi = calloc(1, sizeof(*pi));
			if (!pi)
				return -1;
			pi->pi_d = pe;
			pi->pi_vmctx = ctx;
			pi->pi_slot = (uint8_t)s;
			pi->pi_func = (uint8_t)f;
			snprintf(pi->pi_name, sizeof(pi->pi_name), "%s@%d:%d", model, s, f);
			pthread_mutex_init(&pi->pi_lock, NULL);
			char path[64];
			snprintf(path, sizeof(path), "pci.0.%d.%d", s, f);
			pci_apply_aliases(model, path);
			if (pe->pe_init(pi, path)) {
				log_err("%s: initialization failed", pi->pi_name);
				return -1;
			}
			pci_apply_pcireg(pi, path);
			devices[s][f] = pi;
		}
	}
	/* Multi-function bit on function 0 of slots with several functions. */
	for (int s = 0; s < PCI_MAX_SLOTS; s++) {
		int n = 0;
		for (int f = 0; f < PCI_MAX_FUNCS; f++)
			n += devices[s][f] != NULL;
		if (n > 1 && devices[s][0])
			devices[s][0]->pi_cfg[PCIR_HDRTYPE] |= 0x80;
	}
	return 0;
}
hyve_init(INIT_PCI, pci_init)

/* ---- checkpoint: the framework's part of every PCI function ---- */

#define PCI_FRAMEWORK_STATE_VERSION 1

int pci_emul_save_state(struct pci_devinst *pi, struct snap_buf *out)
{
	sb_u32(out, PCI_FRAMEWORK_STATE_VERSION);
	pthread_mutex_lock(&cfg_lock);
	sb_put(out, pi->pi_cfg, PCI_CFG_SIZE);
	pthread_mutex_unlock(&cfg_lock);
	for (int i = 0; i < PCI_MAX_BARS; i++) {
		sb_u8(out, (uint8_t)pi->pi_bar[i].type);
		sb_u64(out, pi->pi_bar[i].addr);
		sb_u64(out, pi->pi_bar[i].size);
	}
	sb_bool(out, pi->pi_lintr_asserted);
	pthread_mutex_lock(&pi->pi_lock);
	sb_u32(out, (uint32_t)pi->pi_msix.table_count);
	for (int i = 0; i < pi->pi_msix.table_count; i++) {
		sb_u64(out, pi->pi_msix.table[i].addr);
		sb_u32(out, pi->pi_msix.table[i].data);
		sb_u32(out, pi->pi_msix.table[i].ctrl);
	}
	for (int i = 0; i < (pi->pi_msix.table_count + 63) / 64; i++)
		sb_u64(out, pi->pi_msix.pba[i]);
	pthread_mutex_unlock(&pi->pi_lock);
	return out->failed ? -1 : 0;
}

int pci_emul_load_state(struct pci_devinst *pi, struct snap_rd *in, char *err, size_t errlen)
{
	static uint8_t cfg[PCI_CFG_SIZE];
	struct pcibar bars[PCI_MAX_BARS];
	uint32_t v = sr_u32(in);
	if (sr_ok(in) && v != PCI_FRAMEWORK_STATE_VERSION) {
		snprintf(err, errlen, "PCI state version %u (this hyve reads %u)", v, PCI_FRAMEWORK_STATE_VERSION);
		return -1;
	}
	sr_get(in, cfg, sizeof(cfg));
	for (int i = 0; i < PCI_MAX_BARS; i++) {
		bars[i].type = (enum pcibar_type)sr_u8(in);
		bars[i].addr = sr_u64(in);
		bars[i].size = sr_u64(in);
	}
	bool asserted = sr_bool(in);
	uint32_t nmsix = sr_u32(in);
	if (!sr_ok(in)) {
		snprintf(err, errlen, "PCI state truncated");
		return -1;
	}
	/* The configured device must be the one that was saved. */
	if (memcmp(cfg, pi->pi_cfg, 4) || cfg[PCIR_CLASS] != pi->pi_cfg[PCIR_CLASS] ||
	    nmsix != (uint32_t)pi->pi_msix.table_count) {
		snprintf(err, errlen, "saved PCI function %04x:%04x does not match the configured %s",
		         cfg[0] | cfg[1] << 8, cfg[2] | cfg[3] << 8, pi->pi_name);
		return -1;
	}
	for (int i = 0; i < PCI_MAX_BARS; i++) {
		const struct pcibar *b = &bars[i];
		/* The whole BAR inside its address space, written so nothing wraps. */
		uint64_t limit = b->type == PCIBAR_IO ? 0x10000 : b->type == PCIBAR_MEM32 ? 1ULL << 32 : UINT64_MAX;
		bool fits = b->size <= limit && b->addr <= limit - b->size;
		bool aligned = b->size == 0 || (b->addr & (b->size - 1)) == 0;
		if (b->type != pi->pi_bar[i].type || b->size != pi->pi_bar[i].size || !fits || !aligned) {
			snprintf(err, errlen, "BAR %d: saved type/size/address does not fit the configured %s", i,
			         pi->pi_name);
			return -1;
		}
	}
	struct msix_entry *tab = calloc(nmsix ? nmsix : 1, sizeof(*tab));
	uint64_t *pba = calloc((nmsix + 63) / 64 + 1, sizeof(*pba));
	if (!tab || !pba) {
		free(tab);
		free(pba);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < nmsix; i++) {
		tab[i].addr = sr_u64(in);
		tab[i].data = sr_u32(in);
		tab[i].ctrl = sr_u32(in);
	}
	for (uint32_t i = 0; i < (nmsix + 63) / 64; i++)
		pba[i] = sr_u64(in);
	if (!sr_ok(in)) {
		free(tab);
		free(pba);
		snprintf(err, errlen, "PCI MSI-X state truncated");
		return -1;
	}
	/* Move the BARs: stop decoding the init-time placement, decode the saved one. */
	for (int i = 0; i <= PCI_ROM_IDX; i++)
		bar_set_decode(pi, i, false);
	pthread_mutex_lock(&cfg_lock);
	memcpy(pi->pi_cfg, cfg, sizeof(cfg));
	/* The expansion ROM's placement is its config register, made to fit the ROM this function has. */
	struct pcibar *rom = &pi->pi_bar[PCI_ROM_IDX];
	uint32_t romreg = pci_get_cfgdata32(pi, PCIR_BIOS);
	rom->addr = rom->type == PCIBAR_NONE ? 0 : romreg & 0xfffff800u & ~(rom->size - 1);
	pci_set_cfgdata32(pi, PCIR_BIOS, rom->type == PCIBAR_NONE ? 0 : (uint32_t)rom->addr | (romreg & PCIM_BIOS_ENABLE));
	pthread_mutex_unlock(&cfg_lock);
	for (int i = 0; i < PCI_MAX_BARS; i++) {
		pi->pi_bar[i].addr = bars[i].addr;
		if (bars[i].type != PCIBAR_NONE && bars[i].type != PCIBAR_MEMHI64 && bar_decode_enabled(pi, i))
			bar_set_decode(pi, i, true);
	}
	if (rom->type != PCIBAR_NONE && bar_decode_enabled(pi, PCI_ROM_IDX))
		bar_set_decode(pi, PCI_ROM_IDX, true);
	pthread_mutex_lock(&pi->pi_lock);
	if (nmsix) {
		memcpy(pi->pi_msix.table, tab, nmsix * sizeof(*tab));
		memcpy(pi->pi_msix.pba, pba, (nmsix + 63) / 64 * sizeof(*pba));
		for (uint32_t i = 0; i < nmsix; i++)
			pi->pi_msix.irqfd[i].stale = true;
	}
	pthread_mutex_unlock(&pi->pi_lock);
	free(tab);
	free(pba);
	pi->pi_lintr_asserted = false;
	if (asserted)
		pci_lintr_assert(pi);
	return 0;
}

int pci_emul_snapshot_none(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen)
{
	(void)pi; (void)out; (void)err; (void)errlen;
	return 0;
}

int pci_emul_restore_none(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)pi; (void)in; (void)version; (void)err; (void)errlen;
	return 0;
}
