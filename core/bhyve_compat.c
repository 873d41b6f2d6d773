/*
 * bhyve compatibility: keys from bhyve_config(5) that hyve accepts, the
 * flags that only set such keys (-p, -f), and the checks and notes about
 * them.  A bhyve setting hyve implements is implemented where it belongs
 * (memory.wired/guest_in_core in vmm/vmm.c, x86.strictio in core/inout.c,
 * vcpu.N.cpuset in core/vcpu.c); one it accepts without acting on it gets
 * a one-line note at start, so a bhyve command line runs and says what it
 * does not get.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bhyve_compat.h"
#include "config.h"
#include "log.h"

/* fw_cfg file names: QEMU's FW_CFG_MAX_FILE_PATH is 56 bytes with the NUL. */
#define FWCFG_NAME_MAX 55
#define FWCFG_MAX_FILES 64

static long host_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_CONF);
	return n > 0 ? n : 1;
}

int compat_parse_cpulist(const char *s, cpu_set_t *set, char *err, size_t errlen)
{
	long ncpu = host_cpus();
	CPU_ZERO(set);
	const char *p = s;
	do {
		char *end;
		if (!isdigit((unsigned char)*p))
			goto bad;
		unsigned long lo = strtoul(p, &end, 10), hi = lo;
		p = end;
		if (*p == '-') {
			if (!isdigit((unsigned char)p[1]))
				goto bad;
			hi = strtoul(p + 1, &end, 10);
			p = end;
		}
		if (hi < lo)
			goto bad;
		if (hi >= (unsigned long)ncpu || hi >= CPU_SETSIZE) {
			snprintf(err, errlen, "host CPU %lu does not exist (this host has CPUs 0-%ld)", hi, ncpu - 1);
			return -1;
		}
		for (unsigned long c = lo; c <= hi; c++)
			CPU_SET(c, set);
	} while (*p++ == ',');
	if (p[-1] == '\0')
		return 0;
bad:
	snprintf(err, errlen, "expected host CPU numbers like 3, 0,2 or 4-7");
	return -1;
}

int compat_add_pin(const char *opt, char *err, size_t errlen)
{
	unsigned vcpu, cpu;
	int end = 0;
	const char *colon = strchr(opt, ':');
	if (!isdigit((unsigned char)opt[0]) || !colon || !isdigit((unsigned char)colon[1]) ||
	    sscanf(opt, "%u:%u%n", &vcpu, &cpu, &end) != 2 || opt[end]) {
		snprintf(err, errlen, "-p %s: expected vcpu:hostcpu, e.g. -p 0:2", opt);
		return -1;
	}
	/* bhyve accumulates: -p 0:1 -p 0:2 lets vCPU 0 run on host CPUs 1 and 2. */
	char val[CONFIG_MAX_VALUE < 4096 ? CONFIG_MAX_VALUE : 4096];
	const char *old = get_config_valuef("vcpu.%u.cpuset", vcpu);
	int n = old ? snprintf(val, sizeof(val), "%s,%u", old, cpu) : snprintf(val, sizeof(val), "%u", cpu);
	if (n < 0 || (size_t)n >= sizeof(val) || set_config_valuef(val, "vcpu.%u.cpuset", vcpu)) {
		snprintf(err, errlen, "-p %s: cannot store vcpu.%u.cpuset", opt, vcpu);
		return -1;
	}
	return 0;
}

int compat_add_fwcfg(const char *opt, char *err, size_t errlen)
{
	const char *comma = strchr(opt, ',');
	const char *data = comma ? comma + 1 : NULL;
	bool file = data && strncmp(data, "file=", 5) == 0;
	if (!comma || comma == opt || !(file || strncmp(data, "string=", 7) == 0)) {
		snprintf(err, errlen, "-f %s: expected name,string=DATA or name,file=PATH", opt);
		return -1;
	}
	size_t nlen = (size_t)(comma - opt);
	if (nlen > FWCFG_NAME_MAX) {
		snprintf(err, errlen, "-f %s: fw_cfg file name longer than %d bytes", opt, FWCFG_NAME_MAX);
		return -1;
	}
	const char *value = data + (file ? 5 : 7);
	if (file && (!*value || access(value, R_OK))) {
		snprintf(err, errlen, "-f %s: %s: %s", opt, value, *value ? strerror(errno) : "no file given");
		return -1;
	}
	/* Names like opt/org.example/x do not fit in a key: indexed keys hold them. */
	int k = 0;
	for (const char *name; k < FWCFG_MAX_FILES && (name = get_config_valuef("fw_cfg.file.%d.name", k)); k++)
		if (strlen(name) == nlen && strncmp(name, opt, nlen) == 0) {
			snprintf(err, errlen, "-f %s: fw_cfg file '%s' given twice", opt, name);
			return -1;
		}
	if (k == FWCFG_MAX_FILES) {
		snprintf(err, errlen, "-f %s: more than %d fw_cfg files", opt, FWCFG_MAX_FILES);
		return -1;
	}
	char name[FWCFG_NAME_MAX + 1];
	memcpy(name, opt, nlen);
	name[nlen] = '\0';
	if (set_config_valuef(name, "fw_cfg.file.%d.name", k) ||
	    set_config_valuef(value, "fw_cfg.file.%d.%s", k, file ? "path" : "string")) {
		snprintf(err, errlen, "-f %s: cannot store it", opt);
		return -1;
	}
	return 0;
}

/* ---- absolute paths ---- */

/* realpath of the directory part, the last component as given; NULL: keep the value. */
static char *absolute(const char *p)
{
	char cwd[PATH_MAX], dir[PATH_MAX], res[PATH_MAX];
	if (!*p || *p == '/' || strlen(p) >= sizeof(dir) || !getcwd(cwd, sizeof(cwd)))
		return NULL;
	snprintf(dir, sizeof(dir), "%s", p);
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		dir[--n] = '\0';
	char *slash = strrchr(dir, '/');
	const char *base = slash ? slash + 1 : dir;
	char *out = NULL;
	if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
		/* "." or "share/..": the directory itself. */
		if (realpath(dir, res))
			out = strdup(res);
	} else {
		if (slash)
			*slash = '\0';
		if (realpath(slash ? (dir[0] ? dir : "/") : ".", res) &&
		    asprintf(&out, "%s%s%s", res, strcmp(res, "/") ? "/" : "", base) < 0)
			out = NULL;
	}
	/* A directory that does not exist (yet): relative to here, unresolved. */
	if (!out && asprintf(&out, "%s/%s", cwd, p) < 0)
		out = NULL;
	return out;
}

static bool is_path_key(const char *key)
{
	unsigned b, s, f, k;
	char opt[32];
	int end = 0;
	if (sscanf(key, "pci.%u.%u.%u.%31[a-z0-9]%n", &b, &s, &f, opt, &end) == 4 && !key[end])
		/* disks and shares; virtio-console's old portN=PATH keys */
		return strcmp(opt, "path") == 0 || (strncmp(opt, "port", 4) == 0 && isdigit((unsigned char)opt[4]));
	end = 0;
	if (sscanf(key, "pci.%u.%u.%u.port.%u.path%n", &b, &s, &f, &k, &end) == 4 && !key[end])
		return true;
	end = 0;
	return (sscanf(key, "fw_cfg.file.%u.path%n", &k, &end) == 1 && !key[end]);
}

/* A chardev backend key (devices/chardev.h): a UART's or a console port's. */
static bool is_chardev_key(const char *key)
{
	unsigned b, s, f, k;
	int com, end = 0;
	if (sscanf(key, "lpc.com%d.path%n", &com, &end) == 1 && !key[end])
		return true;
	end = 0;
	if (sscanf(key, "pci.%u.%u.%u.port.%u.path%n", &b, &s, &f, &k, &end) == 4 && !key[end])
		return true;
	end = 0;
	return sscanf(key, "pci.%u.%u.%u.port%u%n", &b, &s, &f, &k, &end) == 4 && !key[end];
}

static void absolutize(const char *key, const char *value, void *arg)
{
	const char *already = arg;
	const char *prefix = "", *p = value;
	if (is_chardev_key(key)) {
		/*
		 * file=PATH, sock=PATH, a bare PATH (a port's socket, or a tty);
		 * tcp= names no file, nor does stdio or a UART's bare word
		 * without '/' (not a tty path: an error for the check to report).
		 */
		if (!strncmp(value, "tcp=", 4))
			return;
		if (!strncmp(value, "file=", 5) || !strncmp(value, "sock=", 5)) {
			prefix = value[0] == 'f' ? "file=" : "sock=";
			p = value + 5;
		} else if (!strncmp(key, "lpc.", 4) && !strchr(value, '/')) {
			return;
		}
	} else if (!is_path_key(key)) {
		return;
	}
	if ((already && config_text_has(already, key, value)) || strstr(p, "%("))
		return;
	char *abs = absolute(p);
	if (!abs)
		return;
	char *v = NULL;
	if (asprintf(&v, "%s%s", prefix, abs) >= 0 && strlen(v) <= CONFIG_MAX_VALUE)
		set_config_value(key, v);
	free(v);
	free(abs);
}

void compat_absolute_paths(const char *already)
{
	config_foreach("", absolutize, (void *)already);
}

/* ---- keys and notes ---- */

/* RFC 4122 text form: 8-4-4-4-12 hex digits. */
static int check_uuid(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	static const int dash[] = { 8, 13, 18, 23 };
	bool ok = strlen(value) == 36;
	for (int i = 0; ok && i < 36; i++) {
		bool want_dash = i == dash[0] || i == dash[1] || i == dash[2] || i == dash[3];
		ok = want_dash ? value[i] == '-' : isxdigit((unsigned char)value[i]) != 0;
	}
	if (!ok) {
		snprintf(err, errlen, "expected a UUID like 6ba7b810-9dad-11d1-80b4-00c04fd430c8");
		return -1;
	}
	return 0;
}

static int check_cpuset(const char *path, const char *value, char *err, size_t errlen)
{
	unsigned v;
	int end = 0;
	char canon[48];
	if (sscanf(path, "vcpu.%u.cpuset%n", &v, &end) != 1 || path[end] ||
	    (snprintf(canon, sizeof(canon), "vcpu.%u.cpuset", v), strcmp(canon, path))) {
		snprintf(err, errlen, "not a vcpu.N.cpuset key");
		return 1;
	}
	cpu_set_t set;
	return compat_parse_cpulist(value, &set, err, errlen);
}

static int check_fwcfg_name(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	if (!*value || strlen(value) > FWCFG_NAME_MAX) {
		snprintf(err, errlen, "a fw_cfg file name has 1 to %d bytes", FWCFG_NAME_MAX);
		return -1;
	}
	return 0;
}

static const struct config_key compat_keys[] = {
	{ "uuid", CFG_CUSTOM, "SMBIOS system UUID (-U), RFC 4122 text form (default: derived from the VM and host names)", check_uuid },
	{ "destroy_on_poweroff", CFG_BOOL, "-D: destroy the VM at guest power-off (always: the VM ends with hyve)", NULL },
	{ "x86.strictio", CFG_BOOL, "-e: exit (status 4) when the guest touches an I/O port nothing emulates", NULL },
	{ "x86.mptable", CFG_BOOL, "-Y clears it; hyve builds no MP table either way (ACPI MADT)", NULL },
	{ "virtio_msix", CFG_BOOL, "-W clears it; hyve's virtio devices use MSI-X either way", NULL },
	{ "memory.guest_in_core", CFG_BOOL, "-C: include guest RAM in hyve's core dumps (default false)", NULL },
	{ "keyboard.layout", CFG_STRING, "-K: VNC keyboard layout (stored; hyve's VNC server types the US layout)", NULL },
	{ "vcpu.*.cpuset", CFG_CUSTOM, "-p N:CPU: host CPUs vCPU N's thread may run on (list: 0,2,4-7)", check_cpuset },
	{ "fw_cfg.file.*.name", CFG_CUSTOM, "-f NAME,...: fw_cfg file name (the guest reads it through fw_cfg)", check_fwcfg_name },
	{ "fw_cfg.file.*.string", CFG_STRING, "-f NAME,string=DATA: its contents", NULL },
	{ "fw_cfg.file.*.path", CFG_STRING, "-f NAME,file=PATH: the host file with its contents", NULL },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) compat_keys_register(void)
{
	config_register_keys(compat_keys);
}

/* A bool key set to `value` (a bad value is the key check's error, not ours). */
static bool is_set_to(const char *key, bool value)
{
	const char *v = get_config_value(key);
	bool b;
	return v && config_parse_bool(v, &b) == 0 && b == value;
}

struct cpuset_check {
	int ncpus, nerr;
	config_report_fn fn;
	void *arg;
};

static void check_vcpu_exists(const char *key, const char *value, void *arg)
{
	struct cpuset_check *c = arg;
	unsigned v;
	char msg[CONFIG_MAX_PATH + 96];
	(void)value;
	if (sscanf(key, "vcpu.%u.", &v) == 1 && v >= (unsigned)c->ncpus) {
		snprintf(msg, sizeof(msg), "config: %s: the VM has no vCPU %u (cpus=%d, vCPUs count from 0)", key, v,
		         c->ncpus);
		c->fn(LOG_ERR, msg, c->arg);
		c->nerr++;
	}
}

int compat_check(int ncpus, config_report_fn fn, void *arg)
{
	struct cpuset_check c = { .ncpus = ncpus, .fn = fn, .arg = arg };
	config_foreach("vcpu", check_vcpu_exists, &c);
	static const struct {
		const char *key;
		bool value;
		const char *note;
	} notes[] = {
		{ "virtio_msix", false, "virtio_msix=false (-W): hyve's virtio devices use MSI-X (kept, ignored)" },
		{ "x86.x2apic", true, "x86.x2apic=true (-x): the local APICs start in xAPIC mode; the guest switches "
		                      "to x2APIC itself (CPUID offers it)" },
		{ "x86.strictmsr", false, "x86.strictmsr=false (-w): no MSR filter from hyve; KVM decides about MSRs the "
		                          "guest's CPUID does not announce (module parameter kvm.ignore_msrs for unknown ones)" },
		{ "x86.mptable", true, "x86.mptable=true: hyve builds no MP table; ACPI's MADT describes the CPUs" },
	};
	char msg[300];
	for (size_t i = 0; i < sizeof(notes) / sizeof(notes[0]); i++)
		if (is_set_to(notes[i].key, notes[i].value)) {
			snprintf(msg, sizeof(msg), "note: %s", notes[i].note);
			fn(LOG_INFO, msg, arg);
		}
	if (get_config_value("keyboard.layout"))
		fn(LOG_INFO, "note: keyboard.layout (-K): hyve's VNC server types the US layout (kept, ignored)", arg);
	return c.nerr;
}
