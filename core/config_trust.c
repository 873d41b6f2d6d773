/*
 * A configuration that arrives from elsewhere (a checkpoint file, a
 * migration source) describes the guest, but some of its keys name things
 * on *this* host: files to open or create, sockets to bind, tap devices,
 * host ports.  Applied as is, whoever wrote the file or holds the other end
 * of the connection chooses what hyve (often root) opens here.
 *
 * So host-side keys from a foreign configuration are taken out as soon as it
 * is loaded.  Afterwards (the local -o/-k options applied) they are either
 * put back because the user trusts the source (snapshot.trust_config /
 * migration.trust_source), or the user must have given each needed one
 * locally.  Per-host operational keys (control socket, profiles, migration
 * and snapshot settings) never come from elsewhere unless trusted.
 * docs/security.md has the rule for users.
 */
#include <fnmatch.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_trust.h"

/* Dropped unless trusted: they only describe the host the file came from. */
static const char *const host_only[] = {
	"control.socket", "debug.*", "boot.kernel", "boot.initrd", "boot.linuxboot_rom", "migration.*", "snapshot.*",
	"config.dump", "vmm.emulating", "security.*",
	"gdb.*",                /* a debugger port on this host */
	"vcpu.*.cpuset",        /* host CPU numbers */
	NULL,
};

/*
 * Needed by a device and naming a host resource: dropped unless trusted,
 * and then required from the local options.  `safe` is a value that names
 * nothing on the host and may stay.
 */
static const struct {
	const char *pattern;
	const char *safe;
} host_resources[] = {
	{ "lpc.com*.path", "stdio" },
	{ "pci.*.*.*.path", NULL },           /* disk images, 9p shares */
	{ "pci.*.*.*.backend", "slirp" },     /* tap devices */
	{ "pci.*.*.*.hostfwd", NULL },        /* host ports */
	{ "pci.*.*.*.tcp", NULL },            /* the framebuffer's VNC server */
	{ "pci.*.*.*.rfb", NULL },
	{ "pci.*.*.*.unix", NULL },
	{ "pci.*.*.*.port[0-9]*", NULL },     /* virtio-console sockets */
	{ "pci.*.*.*.port.*.path", NULL },
	{ "fw_cfg.file.*.path", NULL },       /* host files the guest reads through fw_cfg */
	{ "lpc.bootrom", NULL },              /* firmware files */
	{ "lpc.bootvars", NULL },
	{ "lpc.debugcon.path", NULL },
	{ NULL, NULL },
};

static struct held {
	char *key, *value;
	bool required;
} *held;   /* grows: a tree may hold up to CONFIG_MAX_KEYS host-side keys */
static int nheld, cap_held;
/* A copy: the caller's text (often on its stack) is gone by the release. */
static char held_from[320];

static int components(const char *s)
{
	int n = 1;
	for (; *s; s++)
		n += *s == '.';
	return n;
}

/* fnmatch without FNM_PATHNAME lets '*' cross dots: also require as many
 * components as the pattern has, so '*' stands for one of them. */
static bool match(const char *pattern, const char *key)
{
	return components(pattern) == components(key) && fnmatch(pattern, key, 0) == 0;
}

/* 1: drop silently, 2: drop and require locally, 0: keep. */
static int classify(const char *key, const char *value)
{
	for (int i = 0; host_only[i]; i++)
		if (fnmatch(host_only[i], key, 0) == 0)   /* "debug.*": everything under debug */
			return 1;
	for (int i = 0; host_resources[i].pattern; i++)
		if (match(host_resources[i].pattern, key))
			return host_resources[i].safe && strcmp(value, host_resources[i].safe) == 0 ? 0 : 2;
	return 0;
}

int config_hold_host_keys(const char *from, char *err, size_t errlen)
{
	size_t len;
	char *all = config_to_string(&len);
	if (!all) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(held_from, sizeof(held_from), "%s", from);
	for (char *line = all, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char *eq = strchr(line, '=');
		if (!eq)
			continue;
		*eq = '\0';
		int cls = classify(line, eq + 1);
		if (!cls)
			continue;
		if (nheld == cap_held) {
			int cap = cap_held ? 2 * cap_held : 64;
			struct held *h = realloc(held, (size_t)cap * sizeof(*h));
			if (!h) {
				snprintf(err, errlen, "out of memory");
				free(all);
				return -1;
			}
			held = h;
			cap_held = cap;
		}
		held[nheld].key = strdup(line);
		held[nheld].value = strdup(eq + 1);
		held[nheld].required = cls == 2;
		if (!held[nheld].key || !held[nheld].value) {
			snprintf(err, errlen, "out of memory");
			free(all);
			return -1;
		}
		unset_config_value(line);
		nheld++;
	}
	free(all);
	return 0;
}

int config_release_host_keys(bool trusted, const char *trust_key, char *err, size_t errlen)
{
	char missing[400] = "";
	int nmissing = 0;
	for (int i = 0; i < nheld; i++) {
		/* A key the user gave here wins either way. */
		if (!get_config_value(held[i].key)) {
			if (trusted) {
				set_config_value(held[i].key, held[i].value);
			} else if (held[i].required) {
				size_t n = strlen(missing);
				if (nmissing < 6)
					snprintf(missing + n, sizeof(missing) - n, "%s%s", nmissing ? ", " : "", held[i].key);
				else if (nmissing == 6)
					snprintf(missing + n, sizeof(missing) - n, ", ...");
				nmissing++;
			}
		}
		free(held[i].key);
		free(held[i].value);
	}
	nheld = 0;
	if (nmissing) {
		snprintf(err, errlen,
		         "%s names host resources that are not taken from it: %s; give %s here with -o KEY=VALUE, or "
		         "-o %s=true if you trust it (docs/security.md)",
		         held_from[0] ? held_from : "the configuration", missing, nmissing > 1 ? "them" : "it", trust_key);
		return -1;
	}
	return 0;
}
