/*
 * AHCI configuration (devices/ahci.c has the controller): bhyve's -s
 * syntax for ahci, ahci-hd and ahci-cd, the pci.B.S.F.port.N.* keys and
 * their checks, and reading a port's options when the device is built.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/config.h"
#include "../core/log.h"
#include "ahci_internal.h"
#include "pci_emul.h"

/* ---- configuration ---- */

static const char *const port_opt_names[AHCI_PORT_OPTS] = {
	"type", "path", "nocache", "direct", "ro", "sectorsize", "ser", "nmrr", "rev", "model",
};
static char ahci_opt_buf[AHCI_MAX_PORTS * AHCI_PORT_OPTS][24];
const char *ahci_options[AHCI_MAX_PORTS * AHCI_PORT_OPTS + 1];

static void __attribute__((constructor)) ahci_options_init(void)
{
	int k = 0;
	for (int n = 0; n < AHCI_MAX_PORTS; n++)
		for (int i = 0; i < AHCI_PORT_OPTS; i++, k++) {
			snprintf(ahci_opt_buf[k], sizeof(ahci_opt_buf[k]), "port.%d.%s", n, port_opt_names[i]);
			ahci_options[k] = ahci_opt_buf[k];
		}
	ahci_options[k] = NULL;
}

/*
 * pci.B.S.F.port.N.OPT keys (port.N.path shares virtio-console's pattern,
 * whose check lets a model that lists the key have it).
 */
static int ahci_check_key(const char *path, const char *value, char *err, size_t errlen)
{
	(void)value;
	unsigned b, s, f;
	char opt[64];
	if (sscanf(path, "pci.%u.%u.%u.%63s", &b, &s, &f, opt) != 4) {
		snprintf(err, errlen, "not a pci.BUS.SLOT.FUNCTION key");
		return 1;
	}
	const char *model = get_config_valuef("pci.%u.%u.%u.device", b, s, f);
	if (model && !strncmp(model, "ahci", 4))
		for (const char *const *o = ahci_options; *o; o++)
			if (!strcmp(*o, opt))
				return 0;
	snprintf(err, errlen, "unknown option '%s' for device model %s", opt, model ? model : "(none)");
	return 1;
}

static const struct config_key ahci_keys[] = {
	{ "pci.*.*.*.port.*.type", CFG_CUSTOM, "AHCI port N (0..31): hd (SATA disk) or cd (ATAPI CD-ROM)", ahci_check_key },
	{ "pci.*.*.*.port.*.nocache", CFG_CUSTOM, "AHCI port N: open the image with O_DIRECT", ahci_check_key },
	{ "pci.*.*.*.port.*.direct", CFG_CUSTOM, "AHCI port N: open the image with O_SYNC", ahci_check_key },
	{ "pci.*.*.*.port.*.ro", CFG_CUSTOM, "AHCI port N: read-only disk", ahci_check_key },
	{ "pci.*.*.*.port.*.sectorsize", CFG_CUSTOM, "AHCI port N: logical[/physical] sector size", ahci_check_key },
	{ "pci.*.*.*.port.*.ser", CFG_CUSTOM, "AHCI port N: IDENTIFY serial number", ahci_check_key },
	{ "pci.*.*.*.port.*.nmrr", CFG_CUSTOM, "AHCI port N: nominal media rotation rate (1: solid state)", ahci_check_key },
	{ "pci.*.*.*.port.*.rev", CFG_CUSTOM, "AHCI port N: IDENTIFY firmware revision", ahci_check_key },
	{ "pci.*.*.*.port.*.model", CFG_CUSTOM, "AHCI port N: IDENTIFY model number", ahci_check_key },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) ahci_keys_register(void)
{
	config_register_keys(ahci_keys);
}


int ahci_read_opts(const char *cfgpath, bool parse_time, struct ahci_port_opts o[AHCI_MAX_PORTS], char *err,
                          size_t errlen)
{
	char key[160];
	const char *v;
	const char *model = get_config_valuef("%s.device", cfgpath);
	const char *fixed = model && !strcmp(model, "ahci-hd") ? "hd" : model && !strcmp(model, "ahci-cd") ? "cd" : NULL;
	int nports = 0;
#define KEY(n, k) (snprintf(key, sizeof(key), "%s.port.%d.%s", cfgpath, (n), (k)), key)
#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)
	for (int n = 0; n < AHCI_MAX_PORTS; n++) {
		struct ahci_port_opts *po = &o[n];
		*po = (struct ahci_port_opts){ 0 };
		const char *type = get_config_value(KEY(n, "type"));
		po->path = get_config_value(KEY(n, "path"));
		if (!type && fixed && n == 0)
			type = fixed;
		if (!type && !po->path)
			continue;
		if (!type)
			BAD("config: %s.port.%d.type: missing (hd or cd)", cfgpath, n);
		if (strcmp(type, "hd") && strcmp(type, "cd"))
			BAD("config: %s: bad value '%s' (expected hd or cd)", KEY(n, "type"), type);
		if (fixed && (n != 0 || strcmp(type, fixed)))
			BAD("config: %s.port.%d: %s has one %s port (port 0)", cfgpath, n, model, fixed);
		po->present = true;
		po->atapi = !strcmp(type, "cd");
		nports++;
		if (!po->path || !*po->path)
			BAD("config: %s: the port needs an image (hd:PATH or cd:PATH)", KEY(n, "path"));
		struct stat st;
		if (parse_time && !strstr(po->path, "%(") && stat(po->path, &st))
			BAD("config: %s: %s: %s", KEY(n, "path"), po->path, strerror(errno));
		static const char *const bools[] = { "nocache", "direct", "ro" };
		bool *bdst[] = { &po->nocache, &po->direct, &po->ro };
		for (size_t i = 0; i < 3; i++)
			if ((v = get_config_value(KEY(n, bools[i]))) && config_parse_bool(v, bdst[i]))
				BAD("config: %s: bad value '%s' (expected true or false)", key, v);
		if ((v = get_config_value(KEY(n, "sectorsize")))) {
			char buf[64];
			snprintf(buf, sizeof(buf), "%s", v);
			char *slash = strchr(buf, '/');
			if (slash)
				*slash++ = '\0';
			bool ok = !config_parse_uint(buf, &po->sectsz) && (po->sectsz == 512 || po->sectsz == 4096);
			po->psectsz = po->sectsz;
			if (ok && slash)
				ok = !config_parse_uint(slash, &po->psectsz) && po->psectsz >= po->sectsz &&
				     po->psectsz <= 65536 && !(po->psectsz & (po->psectsz - 1));
			if (!ok)
				BAD("config: %s: bad value '%s' (expected 512 or 4096, optionally /PHYSICAL: a power of two "
				    "up to 65536)", key, v);
			if (po->atapi)
				BAD("config: %s: a CD has 2048-byte sectors", key);
		}
		static const struct { const char *k; size_t max; } strs[] = { { "ser", 20 }, { "rev", 8 }, { "model", 40 } };
		const char **sdst[] = { &po->ser, &po->rev, &po->model };
		for (size_t i = 0; i < 3; i++) {
			if (!(*sdst[i] = get_config_value(KEY(n, strs[i].k))))
				continue;
			if (!**sdst[i] || strlen(*sdst[i]) > strs[i].max)
				BAD("config: %s: bad value '%s' (expected 1 to %zu characters)", key, *sdst[i], strs[i].max);
			for (const char *c = *sdst[i]; *c; c++)
				if (*c < 0x20 || *c > 0x7e)
					BAD("config: %s: bad value (expected printable ASCII)", key);
		}
		if ((v = get_config_value(KEY(n, "nmrr")))) {
			if (config_parse_uint(v, &po->nmrr) || po->nmrr > 0xfffe)
				BAD("config: %s: bad value '%s' (expected 0, 1 for non-rotating media, or a speed in rpm up to "
				    "65534)", key, v);
			po->have_nmrr = true;
		}
	}
	if (nports == 0)
		BAD("config: %s: ahci needs a port (-s N,ahci,hd:PATH or cd:PATH)", cfgpath);
	return 0;
#undef BAD
#undef KEY
}

/* bhyve: "hd:PATH[,opt...][,cd:PATH[,opt...]]...", ports 0, 1, ... */
int ahci_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	struct ahci_port_opts o[AHCI_MAX_PORTS];
	char *copy = strdup(opts), *save = NULL;
	int n = -1, rc = 0;
	if (!copy)
		return -1;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char key[256];
		if (!strncmp(tok, "hd:", 3) || !strncmp(tok, "cd:", 3)) {
			if (++n >= AHCI_MAX_PORTS) {
				snprintf(err, errlen, "config: %s: more than %d ports", cfgpath, AHCI_MAX_PORTS);
				rc = -1;
				break;
			}
			tok[2] = '\0';
			snprintf(key, sizeof(key), "%s.port.%d.type", cfgpath, n);
			set_config_value(key, tok);
			snprintf(key, sizeof(key), "%s.port.%d.path", cfgpath, n);
			set_config_value(key, tok + 3);
			continue;
		}
		if (n < 0) {
			snprintf(err, errlen, "config: %s: '%s': expected hd:PATH or cd:PATH", cfgpath, tok);
			rc = -1;
			break;
		}
		char *eq = strchr(tok, '=');
		if (eq)
			*eq = '\0';
		snprintf(key, sizeof(key), "%s.port.%d.%s", cfgpath, n, tok);
		set_config_value(key, eq ? eq + 1 : "true");
	}
	free(copy);
	if (rc == 0 && n < 0) {
		snprintf(err, errlen, "config: %s: ahci needs a port (-s N,ahci,hd:PATH or cd:PATH)", cfgpath);
		rc = -1;
	}
	return rc ? rc : ahci_read_opts(cfgpath, true, o, err, errlen);
}

/* ahci-hd / ahci-cd: "PATH[,opt...]" is port 0. */
static int ahci_one_legacy_config(const char *cfgpath, const char *opts, bool cd, char *err, size_t errlen)
{
	struct ahci_port_opts o[AHCI_MAX_PORTS];
	char path[192], key[256];
	snprintf(path, sizeof(path), "%s.port.0", cfgpath);
	snprintf(key, sizeof(key), "%s.type", path);
	set_config_value(key, cd ? "cd" : "hd");
	if (pci_parse_options(path, opts, "path", err, errlen))
		return -1;
	return ahci_read_opts(cfgpath, true, o, err, errlen);
}

int ahci_hd_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	return ahci_one_legacy_config(cfgpath, opts, false, err, errlen);
}

int ahci_cd_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	return ahci_one_legacy_config(cfgpath, opts, true, err, errlen);
}

