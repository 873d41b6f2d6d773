/*
 * Configuration tree.  Stored flat as (dotted path, value) pairs: the tree
 * shape is enforced on insert (a path is either a leaf or an inner node,
 * never both), which is all bhyve's nvlist tree gives its users, and keeps
 * dumping, iterating and serializing trivial.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "exitcode.h"
#include "log.h"

struct config_entry {
	char *path;
	char *value;
};

static struct config_entry *entries;
static size_t nentries, capentries;

#define MAX_KEY_TABLES 64
static const struct config_key *key_tables[MAX_KEY_TABLES];
static int nkey_tables;

void config_register_keys(const struct config_key *keys)
{
	if (nkey_tables < MAX_KEY_TABLES)
		key_tables[nkey_tables++] = keys;
}

static int find_entry(const char *path)
{
	for (size_t i = 0; i < nentries; i++)
		if (strcmp(entries[i].path, path) == 0)
			return (int)i;
	return -1;
}

/* Is 'prefix' a proper dotted prefix of 'path'? */
static int is_path_prefix(const char *prefix, const char *path)
{
	size_t n = strlen(prefix);
	return strncmp(prefix, path, n) == 0 && path[n] == '.';
}

static int valid_path(const char *path)
{
	if (*path == '\0' || *path == '.')
		return 0;
	for (const char *p = path; *p; p++) {
		if (*p == '.' && (p[1] == '.' || p[1] == '\0'))
			return 0;
		if (!isalnum((unsigned char)*p) && !strchr("._-", *p))
			return 0;
	}
	return 1;
}

int set_config_value(const char *path, const char *value)
{
	if (!valid_path(path))
		return -1;
	for (size_t i = 0; i < nentries; i++) {
		/* "a.b" cannot be set when "a" is a leaf or "a.b.c" exists. */
		if (is_path_prefix(entries[i].path, path) || is_path_prefix(path, entries[i].path))
			return -1;
	}
	int i = find_entry(path);
	char *v = strdup(value);
	if (!v)
		return -1;
	if (i >= 0) {
		free(entries[i].value);
		entries[i].value = v;
		return 0;
	}
	if (nentries == capentries) {
		size_t nc = capentries ? capentries * 2 : 32;
		struct config_entry *ne = realloc(entries, nc * sizeof(*ne));
		if (!ne) {
			free(v);
			return -1;
		}
		entries = ne;
		capentries = nc;
	}
	entries[nentries].path = strdup(path);
	entries[nentries].value = v;
	if (!entries[nentries].path) {
		free(v);
		return -1;
	}
	nentries++;
	return 0;
}

int unset_config_value(const char *path)
{
	int i = find_entry(path);
	if (i < 0)
		return -1;
	free(entries[i].path);
	free(entries[i].value);
	entries[i] = entries[--nentries];
	return 0;
}

const char *get_config_value(const char *path)
{
	int i = find_entry(path);
	return i >= 0 ? entries[i].value : NULL;
}

const char *get_config_valuef(const char *fmt, ...)
{
	char path[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	return get_config_value(path);
}

int set_config_valuef(const char *value, const char *fmt, ...)
{
	char path[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	return set_config_value(path, value);
}

void config_clear(void)
{
	for (size_t i = 0; i < nentries; i++) {
		free(entries[i].path);
		free(entries[i].value);
	}
	nentries = 0;
}

int config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

int config_parse_uint(const char *s, uint64_t *out)
{
	char *end;
	if (*s == '\0' || *s == '-' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* "512" (in default_unit), "512M", "2G", "4096K", "1T", "100B". */
int config_parse_size(const char *s, uint64_t *out, uint64_t default_unit)
{
	char *end;
	if (*s == '\0' || *s == '-' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	uint64_t mult = default_unit;
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'B': mult = 1; break;
		case 'K': mult = 1ULL << 10; break;
		case 'M': mult = 1ULL << 20; break;
		case 'G': mult = 1ULL << 30; break;
		case 'T': mult = 1ULL << 40; break;
		default: return -1;
		}
		end++;
		/* accept "MB"/"MiB"-free forms only: "512M" or "512MB" */
		if (*end == 'B' || *end == 'b')
			end++;
		if (*end)
			return -1;
	}
	if (v > UINT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

static void __attribute__((noreturn)) config_value_error(const char *path, const char *value,
                                                          const char *what)
{
	log_err("config: %s: bad value '%s' (expected %s)", path, value, what);
	exit(HYVE_EXIT_ERROR);
}

bool get_config_bool_default(const char *path, bool def)
{
	const char *v = get_config_value(path);
	bool b;
	if (!v)
		return def;
	if (config_parse_bool(v, &b))
		config_value_error(path, v, "true or false");
	return b;
}

uint64_t get_config_uint_default(const char *path, uint64_t def)
{
	const char *v = get_config_value(path);
	uint64_t u;
	if (!v)
		return def;
	if (config_parse_uint(v, &u))
		config_value_error(path, v, "an unsigned number");
	return u;
}

uint64_t get_config_size_default(const char *path, uint64_t def)
{
	const char *v = get_config_value(path);
	uint64_t u;
	if (!v)
		return def;
	if (config_parse_size(v, &u, 1))
		config_value_error(path, v, "a size with K/M/G/T suffix");
	return u;
}

int config_set_assignment(const char *kv, char *err, size_t errlen)
{
	const char *eq = strchr(kv, '=');
	if (!eq || eq == kv) {
		snprintf(err, errlen, "malformed option '%s' (expected key=value)", kv);
		return -1;
	}
	char key[256];
	size_t klen = (size_t)(eq - kv);
	if (klen >= sizeof(key)) {
		snprintf(err, errlen, "option key too long in '%s'", kv);
		return -1;
	}
	memcpy(key, kv, klen);
	key[klen] = '\0';
	if (set_config_value(key, eq + 1)) {
		snprintf(err, errlen, "%s: invalid key (bad characters, or conflicts with an existing key)", key);
		return -1;
	}
	return 0;
}

int config_load_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	char line[4096];
	int lineno = 0, rc = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		size_t n = strlen(line);
		if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
			snprintf(err, errlen, "%s:%d: line too long", path, lineno);
			rc = -1;
			break;
		}
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
			line[--n] = '\0';
		char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0' || *s == '#')
			continue;
		char e2[512];
		if (config_set_assignment(s, e2, sizeof(e2))) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, e2);
			rc = -1;
			break;
		}
	}
	fclose(f);
	return rc;
}

/* Does a dotted path match a pattern where '*' matches one component? */
static int pattern_match(const char *pat, const char *path)
{
	while (*pat && *path) {
		if (pat[0] == '*' && (pat[1] == '.' || pat[1] == '\0')) {
			while (*path && *path != '.')
				path++;
			pat++;
		} else {
			while (*pat && *pat != '.' && *path && *path != '.') {
				if (*pat != *path)
					return 0;
				pat++;
				path++;
			}
			if ((*pat == '.' || *pat == '\0') != (*path == '.' || *path == '\0'))
				return 0;
		}
		if (*pat == '.' && *path == '.') {
			pat++;
			path++;
		} else if (*pat != *path) {
			return 0;
		}
	}
	return *pat == '\0' && *path == '\0';
}

static const struct config_key *config_find_key(const char *path)
{
	for (int t = 0; t < nkey_tables; t++)
		for (const struct config_key *k = key_tables[t]; k->pattern; k++)
			if (pattern_match(k->pattern, path))
				return k;
	return NULL;
}

int config_validate(char *err, size_t errlen)
{
	for (size_t i = 0; i < nentries; i++) {
		const char *path = entries[i].path, *v = entries[i].value;
		const struct config_key *k = config_find_key(path);
		if (!k) {
			snprintf(err, errlen, "config: %s: unknown key", path);
			return -1;
		}
		bool b;
		uint64_t u;
		const char *want = NULL;
		char reason[256] = "";
		switch (k->type) {
		case CFG_STRING:
			break;
		case CFG_BOOL:
			if (config_parse_bool(v, &b))
				want = "true or false";
			break;
		case CFG_UINT:
			if (config_parse_uint(v, &u))
				want = "an unsigned number";
			break;
		case CFG_SIZE:
			if (config_parse_size(v, &u, 1))
				want = "a size with K/M/G/T suffix";
			break;
		case CFG_CUSTOM:
			if (k->check && k->check(path, v, reason, sizeof(reason))) {
				snprintf(err, errlen, "config: %s: bad value '%s': %s", path, v, reason);
				return -1;
			}
			break;
		}
		if (want) {
			snprintf(err, errlen, "config: %s: bad value '%s' (expected %s)", path, v, want);
			return -1;
		}
	}
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct config_entry *x = a, *y = b;
	return strcmp(x->path, y->path);
}

void config_dump(FILE *out)
{
	qsort(entries, nentries, sizeof(*entries), entry_cmp);
	for (size_t i = 0; i < nentries; i++)
		fprintf(out, "%s=%s\n", entries[i].path, entries[i].value);
}

static int key_cmp(const void *a, const void *b)
{
	const struct config_key *const *x = a, *const *y = b;
	return strcmp((*x)->pattern, (*y)->pattern);
}

void config_help(FILE *out)
{
	const struct config_key *all[512];
	size_t n = 0;
	for (int t = 0; t < nkey_tables; t++)
		for (const struct config_key *k = key_tables[t]; k->pattern && n < 512; k++)
			all[n++] = k;
	qsort(all, n, sizeof(all[0]), key_cmp);
	for (size_t i = 0; i < n; i++)
		fprintf(out, "  %-28s %s\n", all[i]->pattern, all[i]->help ? all[i]->help : "");
}

const char **config_children(const char *path, size_t *n)
{
	size_t plen = strlen(path), cnt = 0;
	const char **names = calloc(nentries + 1, sizeof(*names));
	if (!names) {
		*n = 0;
		return NULL;
	}
	for (size_t i = 0; i < nentries; i++) {
		const char *p = entries[i].path;
		if (plen && !is_path_prefix(path, p))
			continue;
		const char *c = plen ? p + plen + 1 : p;
		size_t clen = strcspn(c, ".");
		int dup = 0;
		for (size_t j = 0; j < cnt; j++)
			if (strlen(names[j]) == clen && strncmp(names[j], c, clen) == 0)
				dup = 1;
		if (!dup)
			names[cnt++] = strndup(c, clen);
	}
	*n = cnt;
	return names;
}

char *config_to_string(size_t *len)
{
	qsort(entries, nentries, sizeof(*entries), entry_cmp);
	size_t total = 1;
	for (size_t i = 0; i < nentries; i++)
		total += strlen(entries[i].path) + strlen(entries[i].value) + 2;
	char *s = malloc(total), *p = s;
	if (!s)
		return NULL;
	for (size_t i = 0; i < nentries; i++)
		p += sprintf(p, "%s=%s\n", entries[i].path, entries[i].value);
	*p = '\0';
	*len = (size_t)(p - s);
	return s;
}

int config_from_string(const char *s, size_t len, char *err, size_t errlen)
{
	const char *end = s + len;
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
		if (n) {
			char *line = strndup(s, n);
			if (!line || config_set_assignment(line, err, errlen)) {
				free(line);
				return -1;
			}
			free(line);
		}
		s += n + 1;
	}
	return 0;
}
