/*
 * Configuration tree.  Every leaf and every inner node is a node in one
 * balanced search tree keyed by its dotted path (tsearch: red-black in
 * glibc, so no input makes it degrade, unlike a hash a crafted checkpoint
 * or migration stream could flood).  An inner node counts the leaves below
 * it, which makes the tree-shape check on insert (a path is either a leaf or
 * an inner node, never both) a few lookups instead of a scan: loading N keys
 * is O(N log N).  The leaves are also kept in a flat array for dumping,
 * validating and serializing.
 */
#include <ctype.h>
#include <errno.h>
#include <search.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "exitcode.h"
#include "log.h"

struct config_node {
	char *path;
	char *value;          /* NULL: an inner node */
	size_t nleaves;       /* inner node: leaves below it */
	size_t idx;           /* leaf: its index in leaves[] */
	unsigned seen;        /* config_children's de-duplication mark */
};

static void *tree;                        /* struct config_node *, by path */
static struct config_node **leaves;
static size_t nleaves, capleaves;

#define MAX_KEY_TABLES 64
static const struct config_key *key_tables[MAX_KEY_TABLES];
static int nkey_tables;

void config_register_keys(const struct config_key *keys)
{
	if (nkey_tables < MAX_KEY_TABLES)
		key_tables[nkey_tables++] = keys;
}

static int node_cmp(const void *a, const void *b)
{
	return strcmp(((const struct config_node *)a)->path, ((const struct config_node *)b)->path);
}

static struct config_node *lookup(const char *path)
{
	struct config_node key = { .path = (char *)path };
	void *r = tfind(&key, &tree, node_cmp);
	return r ? *(struct config_node **)r : NULL;
}

static void node_free(void *p)
{
	struct config_node *n = p;
	free(n->path);
	free(n->value);
	free(n);
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

/*
 * The inner nodes above a path ("a" and "a.b" for "a.b.c"), shortest
 * first: for (dot = strchr(path, '.'); dot; dot = strchr(dot + 1, '.'))
 * visits each, and prefix() copies the one ending at dot into buf.
 */
static const char *prefix(char *buf, const char *path, const char *dot)
{
	memcpy(buf, path, (size_t)(dot - path));
	buf[dot - path] = '\0';
	return buf;
}

/* Remove the inner nodes above path that no longer have leaves (after an unset or a failure). */
static void prune_prefixes(const char *path)
{
	char buf[CONFIG_MAX_PATH + 1];
	for (const char *dot = strchr(path, '.'); dot; dot = strchr(dot + 1, '.')) {
		struct config_node *n = lookup(prefix(buf, path, dot));
		if (n && !n->value && n->nleaves == 0) {
			tdelete(n, &tree, node_cmp);
			node_free(n);
		}
	}
}

static struct config_node *node_new(const char *path, char *value)
{
	struct config_node *n = calloc(1, sizeof(*n));
	if (n && !(n->path = strdup(path))) {
		free(n);
		n = NULL;
	}
	if (n && !tsearch(n, &tree, node_cmp)) {
		node_free(n);
		n = NULL;
	}
	if (n)
		n->value = value;
	return n;
}

/* set_config_value, with the reason for a refusal. */
static int set_value(const char *path, const char *value, const char **why)
{
	char buf[CONFIG_MAX_PATH + 1];
	if (strlen(path) > CONFIG_MAX_PATH) {
		*why = "key too long";
		return -1;
	}
	if (!valid_path(path)) {
		*why = "bad characters";
		return -1;
	}
	if (strlen(value) > CONFIG_MAX_VALUE) {
		*why = "value too long";
		return -1;
	}
	/* Checkpoints and migration carry the tree as key=value lines: a line
	 * break inside a value would split it into other keys there. */
	if (strpbrk(value, "\n\r")) {
		*why = "line break in the value";
		return -1;
	}
	struct config_node *n = lookup(path);
	if (n && !n->value) {
		*why = "conflicts with existing keys below it";   /* "a.b" when "a.b.c" is set */
		return -1;
	}
	for (const char *dot = strchr(path, '.'); dot; dot = strchr(dot + 1, '.')) {
		struct config_node *p = lookup(prefix(buf, path, dot));
		if (p && p->value) {
			*why = "conflicts with an existing key above it";   /* "a.b" when "a" is set */
			return -1;
		}
	}
	*why = "out of memory";
	char *v = strdup(value);
	if (!v)
		return -1;
	if (n) {
		free(n->value);
		n->value = v;
		return 0;
	}
	if (nleaves >= CONFIG_MAX_KEYS) {
		*why = "too many keys";
		free(v);
		return -1;
	}
	if (nleaves == capleaves) {
		size_t nc = capleaves ? capleaves * 2 : 64;
		struct config_node **nl = realloc(leaves, nc * sizeof(*nl));
		if (!nl) {
			free(v);
			return -1;
		}
		leaves = nl;
		capleaves = nc;
	}
	/* Inner nodes first, with no leaves yet, so that a failure can prune them. */
	for (const char *dot = strchr(path, '.'); dot; dot = strchr(dot + 1, '.')) {
		if (!lookup(prefix(buf, path, dot)) && !node_new(buf, NULL)) {
			prune_prefixes(path);
			free(v);
			return -1;
		}
	}
	n = node_new(path, v);
	if (!n) {
		prune_prefixes(path);
		free(v);
		return -1;
	}
	n->idx = nleaves;
	leaves[nleaves++] = n;
	for (const char *dot = strchr(path, '.'); dot; dot = strchr(dot + 1, '.'))
		lookup(prefix(buf, path, dot))->nleaves++;
	return 0;
}

int set_config_value(const char *path, const char *value)
{
	const char *why;
	return set_value(path, value, &why);
}

int unset_config_value(const char *path)
{
	char buf[CONFIG_MAX_PATH + 1];
	struct config_node *n = lookup(path);
	if (!n || !n->value)
		return -1;
	tdelete(n, &tree, node_cmp);
	leaves[n->idx] = leaves[--nleaves];
	leaves[n->idx]->idx = n->idx;
	for (const char *dot = strchr(path, '.'); dot; dot = strchr(dot + 1, '.'))
		lookup(prefix(buf, path, dot))->nleaves--;
	prune_prefixes(path);
	node_free(n);
	return 0;
}

const char *get_config_value(const char *path)
{
	struct config_node *n = lookup(path);
	return n ? n->value : NULL;
}

const char *get_config_valuef(const char *fmt, ...)
{
	char path[CONFIG_MAX_PATH + 2];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	/* A cut-off path would name another key. */
	return n >= 0 && (size_t)n < sizeof(path) ? get_config_value(path) : NULL;
}

int set_config_valuef(const char *value, const char *fmt, ...)
{
	char path[CONFIG_MAX_PATH + 2];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	return n >= 0 && (size_t)n < sizeof(path) ? set_config_value(path, value) : -1;
}

void config_clear(void)
{
	tdestroy(tree, node_free);
	tree = NULL;
	nleaves = 0;
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

int config_parse_memsize(const char *s, uint64_t *out)
{
	/* bhyve: a plain number (decimal or 0x hex) under a megabyte means
	 * megabytes, "for the sake of backward compatibility"; larger ones are
	 * bytes.  With a suffix, as every other size. */
	uint64_t v;
	if (config_parse_uint(s, &v) == 0) {
		if (v < (1ULL << 20))
			v <<= 20;
		*out = v;
		return 0;
	}
	return config_parse_size(s, out, 1);
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
		snprintf(err, errlen, "malformed option '%.80s' (expected key=value)", kv);
		return -1;
	}
	char key[CONFIG_MAX_PATH + 1];
	size_t klen = (size_t)(eq - kv);
	if (klen >= sizeof(key)) {
		snprintf(err, errlen, "key '%.40s...' too long (%zu bytes, at most %d)", kv, klen, CONFIG_MAX_PATH);
		return -1;
	}
	memcpy(key, kv, klen);
	key[klen] = '\0';
	const char *why;
	if (set_value(key, eq + 1, &why)) {
		if (strcmp(why, "too many keys") == 0)
			snprintf(err, errlen, "%s: too many keys (at most %d)", key, CONFIG_MAX_KEYS);
		else if (strcmp(why, "value too long") == 0)
			snprintf(err, errlen, "%s: value too long (%zu bytes, at most %d)", key, strlen(eq + 1), CONFIG_MAX_VALUE);
		else
			snprintf(err, errlen, "%s: invalid key (%s)", key, why);
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

int config_check_key(const char *path, const char *value, char *err, size_t errlen)
{
	const struct config_key *k = config_find_key(path);
	if (!k) {
		snprintf(err, errlen, "no such key");
		return 1;
	}
	bool b;
	uint64_t u;
	const char *want = NULL;
	char reason[256] = "";
	switch (k->type) {
	case CFG_STRING:
		break;
	case CFG_BOOL:
		if (config_parse_bool(value, &b))
			want = "true or false";
		break;
	case CFG_UINT:
		if (config_parse_uint(value, &u))
			want = "an unsigned number";
		break;
	case CFG_SIZE:
		if (config_parse_size(value, &u, 1))
			want = "a size with K/M/G/T suffix";
		break;
	case CFG_CUSTOM:
		if (k->check) {
			int r = k->check(path, value, reason, sizeof(reason));
			if (r == 1) {
				snprintf(err, errlen, "%s", reason);
				return 1;
			}
			if (r) {
				snprintf(err, errlen, "config: %s: bad value '%s': %s", path, value, reason);
				return -1;
			}
		}
		break;
	}
	if (want) {
		snprintf(err, errlen, "config: %s: bad value '%s' (expected %s)", path, value, want);
		return -1;
	}
	return 0;
}

static void sort_leaves(void);

int config_validate_all(config_report_fn fn, void *arg)
{
	int nerr = 0;
	char err[768], msg[CONFIG_MAX_PATH + 64];
	sort_leaves();   /* reports in key order, whatever order the options came in */
	for (size_t i = 0; i < nleaves; i++) {
		int r = config_check_key(leaves[i]->path, leaves[i]->value, err, sizeof(err));
		if (r == 1) {
			snprintf(msg, sizeof(msg), "config: unknown key '%s' (kept, ignored)", leaves[i]->path);
			fn(LOG_WARN, msg, arg);
		} else if (r) {
			fn(LOG_ERR, err, arg);
			nerr++;
		}
	}
	return nerr;
}

int config_validate(char *err, size_t errlen)
{
	for (size_t i = 0; i < nleaves; i++)
		if (config_check_key(leaves[i]->path, leaves[i]->value, err, errlen) < 0)
			return -1;
	return 0;
}

/* ---- %(KEY) references ---- */

#define EXPAND_MAX_DEPTH 16

struct expansion {
	const char *already;          /* "\nkey=value\n..." lines not to expand again, or NULL */
	const char *chain[EXPAND_MAX_DEPTH + 1];   /* chain[0] references chain[1] ... */
	char err[CONFIG_MAX_PATH * 2 + 400];
	bool report;                  /* the error belongs to the key being expanded */
};

bool config_text_has(const char *text, const char *key, const char *value)
{
	size_t kl = strlen(key), vl = strlen(value);
	for (const char *p = text; p && (p = strstr(p, key)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[kl] == '=' && strncmp(p + kl + 1, value, vl) == 0 &&
		    (p[kl + 1 + vl] == '\n' || p[kl + 1 + vl] == '\0'))
			return true;
	return false;
}

/* Was key=value given already expanded (a checkpoint's line)? */
static bool expanded_before(const struct expansion *x, const char *key, const char *value)
{
	return x->already && config_text_has(x->already, key, value);
}

/* "a -> b -> a" for a loop message. */
static void chain_text(const struct expansion *x, int from, int depth, const char *back, char *buf, size_t len)
{
	size_t n = 0;
	buf[0] = '\0';
	for (int i = from; i < depth && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s -> ", x->chain[i]);
	if (n < len)
		snprintf(buf + n, len - n, "%s", back);
}

/*
 * Write the expansion of value (the value of x->chain[depth - 1]) to out.
 * Each problem is reported once: an undefined or malformed reference by
 * the key whose own value has it, a loop by the smallest key on it.
 */
static int expand_into(struct expansion *x, int depth, const char *value, FILE *out)
{
	const char *key = x->chain[depth - 1];
	for (const char *p = value; *p; p++) {
		if ((p[0] == '%' || p[0] == '\\') && p[1] == '%') {
			fputc('%', out);
			p++;
			continue;
		}
		if (p[0] != '%' || p[1] != '(') {
			fputc(*p, out);
			continue;
		}
		const char *close = strchr(p + 2, ')');
		size_t n = close ? (size_t)(close - (p + 2)) : 0;
		if (!close || n == 0 || n > CONFIG_MAX_PATH) {
			snprintf(x->err, sizeof(x->err), "config: %s: %s in '%.200s' ('%%%%' is a literal %%)", key,
			         !close ? "unterminated %(" : n ? "reference too long" : "empty reference %()", value);
			x->report = depth == 1;
			return -1;
		}
		char ref[CONFIG_MAX_PATH + 1];
		memcpy(ref, p + 2, n);
		ref[n] = '\0';
		p = close;
		for (int i = 0; i < depth; i++) {
			if (strcmp(x->chain[i], ref))
				continue;
			char loop[sizeof(x->err) - 64];
			chain_text(x, i, depth, ref, loop, sizeof(loop));
			snprintf(x->err, sizeof(x->err), "config: %s: reference loop %s", x->chain[i], loop);
			/* Reported once, by the smallest key on the loop, when it is the one being expanded. */
			x->report = i == 0;
			for (int j = i; j < depth; j++)
				x->report = x->report && strcmp(x->chain[0], x->chain[j]) <= 0;
			return -1;
		}
		struct config_node *r = lookup(ref);
		if (!r || !r->value) {
			snprintf(x->err, sizeof(x->err), "config: %s: %%(%s) is not set", key, ref);
			x->report = depth == 1;
			return -1;
		}
		if (depth == EXPAND_MAX_DEPTH) {
			snprintf(x->err, sizeof(x->err), "config: %s: references nested deeper than %d", x->chain[0],
			         EXPAND_MAX_DEPTH);
			x->report = true;
			return -1;
		}
		if (!strchr(r->value, '%') || expanded_before(x, r->path, r->value)) {
			fputs(r->value, out);
			continue;
		}
		x->chain[depth] = r->path;
		if (expand_into(x, depth + 1, r->value, out))
			return -1;
	}
	return 0;
}

int config_expand_all(const char *already, config_report_fn fn, void *arg)
{
	struct expansion x = { .already = already };
	char **results = calloc(nleaves ? nleaves : 1, sizeof(*results));
	int nerr = 0;
	if (!results) {
		fn(LOG_ERR, "config: out of memory", arg);
		return 1;
	}
	sort_leaves();
	/* Every expansion from the values as given; then all are written back. */
	for (size_t i = 0; i < nleaves; i++) {
		struct config_node *n = leaves[i];
		if (!strchr(n->value, '%') || expanded_before(&x, n->path, n->value))
			continue;
		char *buf = NULL;
		size_t len = 0;
		FILE *out = open_memstream(&buf, &len);
		if (!out) {
			fn(LOG_ERR, "config: out of memory", arg);
			nerr++;
			break;
		}
		x.chain[0] = n->path;
		int rc = expand_into(&x, 1, n->value, out);
		fclose(out);
		if (rc) {
			free(buf);
			if (x.report) {
				fn(LOG_ERR, x.err, arg);
				nerr++;
			}
		} else if (len > CONFIG_MAX_VALUE) {
			free(buf);
			char msg[CONFIG_MAX_PATH + 80];
			snprintf(msg, sizeof(msg), "config: %s: value too long once expanded (at most %d bytes)", n->path,
			         CONFIG_MAX_VALUE);
			fn(LOG_ERR, msg, arg);
			nerr++;
		} else {
			results[i] = buf;
		}
	}
	for (size_t i = 0; i < nleaves; i++) {
		if (results[i]) {
			free(leaves[i]->value);
			leaves[i]->value = results[i];
		}
	}
	free(results);
	return nerr;
}

void config_unset_below(const char *prefix)
{
	char **doomed = calloc(nleaves + 1, sizeof(*doomed));
	size_t n = 0;
	if (!doomed)
		return;
	for (size_t i = 0; i < nleaves; i++)
		if (is_path_prefix(prefix, leaves[i]->path))
			doomed[n++] = strdup(leaves[i]->path);
	for (size_t i = 0; i < n; i++) {
		if (doomed[i])
			unset_config_value(doomed[i]);
		free(doomed[i]);
	}
	free(doomed);
}

void config_foreach(const char *prefix, void (*fn)(const char *path, const char *value, void *arg), void *arg)
{
	sort_leaves();
	/* fn may replace a value (not add or remove keys): leaves[] keeps its order. */
	for (size_t i = 0; i < nleaves; i++)
		if (!*prefix || is_path_prefix(prefix, leaves[i]->path))
			fn(leaves[i]->path, leaves[i]->value, arg);
}

static int leaf_cmp(const void *a, const void *b)
{
	const struct config_node *const *x = a, *const *y = b;
	return strcmp((*x)->path, (*y)->path);
}

/* Leaves in path order, for output that does not depend on the order of settings. */
static void sort_leaves(void)
{
	if (nleaves > 1)   /* qsort(NULL, 0, ...) is undefined */
		qsort(leaves, nleaves, sizeof(*leaves), leaf_cmp);
	for (size_t i = 0; i < nleaves; i++)
		leaves[i]->idx = i;
}

void config_dump(FILE *out)
{
	sort_leaves();
	for (size_t i = 0; i < nleaves; i++)
		fprintf(out, "%s=%s\n", leaves[i]->path, leaves[i]->value);
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
	static unsigned generation;
	size_t plen = strlen(path), cnt = 0;
	const char **names = calloc(nleaves + 1, sizeof(*names));
	*n = 0;
	if (!names || plen > CONFIG_MAX_PATH)
		return names;
	/* Each child is named once: its node is marked with this call's generation. */
	generation++;
	for (size_t i = 0; i < nleaves; i++) {
		const char *p = leaves[i]->path;
		if (plen && !is_path_prefix(path, p))
			continue;
		const char *c = plen ? p + plen + 1 : p;
		size_t clen = (size_t)(c - p) + strcspn(c, ".");
		char child[CONFIG_MAX_PATH + 1];
		memcpy(child, p, clen);
		child[clen] = '\0';
		struct config_node *node = lookup(child);
		if (!node || node->seen == generation)
			continue;
		node->seen = generation;
		if (!(names[cnt] = strdup(child + (c - p))))
			break;
		cnt++;
	}
	*n = cnt;
	return names;
}

char *config_to_string(size_t *len)
{
	sort_leaves();
	size_t total = 1;
	for (size_t i = 0; i < nleaves; i++)
		total += strlen(leaves[i]->path) + strlen(leaves[i]->value) + 2;
	char *s = malloc(total), *p = s;
	if (!s)
		return NULL;
	for (size_t i = 0; i < nleaves; i++)
		p += sprintf(p, "%s=%s\n", leaves[i]->path, leaves[i]->value);
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
