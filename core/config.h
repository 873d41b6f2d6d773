/*
 * The configuration tree (bhyve's config.h model).  Every command-line
 * flag, -k file line and -o option becomes a dotted key, e.g.
 *   cpus=2  memory.size=256M  pci.0.3.0.device=virtio-blk  lpc.com1.path=stdio
 * Keys are validated against patterns registered by the core and by the
 * device models ('*' matches one path component), so an unknown key or a
 * value of the wrong type is reported by name before the VM starts.
 */
#ifndef HYVE_CONFIG_H
#define HYVE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Bounds on what a -k file, a checkpoint or a migration stream may load: a
 * real VM has a few hundred keys; these keep a crafted file from costing
 * more than its own size in memory and time.
 */
#define CONFIG_MAX_KEYS 65536
#define CONFIG_MAX_PATH 255      /* bytes in a dotted key */
#define CONFIG_MAX_VALUE 65536   /* bytes in a value */

enum config_type {
	CFG_STRING,
	CFG_BOOL,      /* true/false/yes/no/on/off/1/0 */
	CFG_UINT,      /* decimal or 0x hex */
	CFG_SIZE,      /* number with optional K/M/G/T suffix */
	CFG_CUSTOM,    /* checked by .check */
};

struct config_key {
	const char *pattern;      /* "memory.size", "pci.*.*.*.device", ... */
	enum config_type type;
	const char *help;         /* one line, shown by -h / -o help */
	/*
	 * CFG_CUSTOM: return 0 if valid, -1 with a reason in err, or 1 (reason
	 * in err) if the pattern matched a key hyve does not know after all
	 * ("pci.0.3.0.colour": no such option of that device model).
	 */
	int (*check)(const char *path, const char *value, char *err, size_t errlen);
};

/* Register a NULL-pattern-terminated table (from a constructor is fine). */
void config_register_keys(const struct config_key *keys);

int set_config_value(const char *path, const char *value);   /* -1: bad path */
int unset_config_value(const char *path);
const char *get_config_value(const char *path);              /* NULL if unset */
/* Same, printf-style path. */
const char *get_config_valuef(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int set_config_valuef(const char *value, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Typed getters.  A value that does not parse is a configuration error: they
 * print "hyve: config: KEY: ..." and exit with status 4.
 */
bool get_config_bool_default(const char *path, bool def);
uint64_t get_config_uint_default(const char *path, uint64_t def);
uint64_t get_config_size_default(const char *path, uint64_t def);

/* Parsers shared with the CLI; 0 on success. */
int config_parse_bool(const char *s, bool *out);
int config_parse_uint(const char *s, uint64_t *out);
int config_parse_size(const char *s, uint64_t *out, uint64_t default_unit);
/*
 * memory.size as bhyve's vm_parse_memsize: a plain number (decimal or 0x
 * hex) is bytes, except that a number below 1 MiB means MiB ("-m 512");
 * otherwise expand_number(3): a K/M/G/T/P/E suffix in either case, with an
 * optional trailing B.
 */
int config_parse_memsize(const char *s, uint64_t *out);

/* Parse "key=value"; -1 with err if malformed. */
int config_set_assignment(const char *kv, char *err, size_t errlen);
/* Read a -k file: key=value lines, '#' comments, blank lines. */
int config_load_file(const char *path, char *err, size_t errlen);
/*
 * One key against the registered patterns and types: 0 known and valid,
 * -1 bad value ("config: KEY: bad value ..." in err), 1 a key hyve does not
 * know (the reason in err).
 */
int config_check_key(const char *path, const char *value, char *err, size_t errlen);
/*
 * Errors, warnings and notes of a whole-tree pass, one line each; level is
 * LOG_ERR, LOG_WARN or LOG_INFO (log.h).
 */
typedef void (*config_report_fn)(int level, const char *msg, void *arg);
/*
 * Check every key.  As bhyve, a key hyve does not know is kept and
 * ignored: it is reported as a warning ("config: unknown key 'KEY' (kept,
 * ignored)"), not an error.  Returns the number of errors.
 */
int config_validate_all(config_report_fn fn, void *arg);
/* The same, stopping at the first error (in err); warnings are not reported. */
int config_validate(char *err, size_t errlen);
/*
 * bhyve_config(5) variable references: every '%(KEY)' in a value is
 * replaced by KEY's value (itself expanded); '%%' and '\%' stand for a
 * literal '%', any other '%' is kept.  Done once, in place, after all
 * options are read, so getters and config.dump see the final values.  A
 * reference to a key that is not set, an unterminated '%(' and a loop are
 * errors (reported through fn; the value is left as it was).  Keys whose
 * "key=value" line is in `already` (a config_to_string text, e.g. a
 * checkpoint's: expanded when it was written) are not expanded again.
 * Returns the number of errors.
 */
int config_expand_all(const char *already, config_report_fn fn, void *arg);
/* Remove every key below prefix ("pci.0.3.0": the whole function). */
void config_unset_below(const char *prefix);
/*
 * Call fn for every key below prefix ("" for all), in key order.  fn may
 * change the value of the key it is given (set_config_value), nothing else.
 */
void config_foreach(const char *prefix, void (*fn)(const char *path, const char *value, void *arg), void *arg);
/* Print "key=value" lines, sorted, for -o config.dump=true and -k. */
void config_dump(FILE *out);
void config_help(FILE *out);

/* Iterate the direct children of a node: returns names, NULL-terminated, caller frees the array. */
const char **config_children(const char *path, size_t *n);

/* Is "key=value" a whole line of TEXT (config_to_string's format)? */
bool config_text_has(const char *text, const char *key, const char *value);

/* Serialize the whole tree (for checkpoints and migration). */
char *config_to_string(size_t *len);
int config_from_string(const char *s, size_t len, char *err, size_t errlen);
void config_clear(void);

#endif
