/*
 * Unit tests for core/config.c: tree shape, parsers, validation, files.
 * test-sources: core/config.c core/log.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../core/config.h"
#include "../../core/exitcode.h"

static int failures;

#define CHECK(cond, what)                                             \
	do {                                                          \
		if (cond)                                             \
			printf("ok - %s\n", what);                    \
		else {                                                \
			printf("FAIL - %s (%s:%d)\n", what, __FILE__, __LINE__); \
			failures++;                                   \
		}                                                     \
	} while (0)

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A checkpoint or migration stream with many keys loads in O(N log N): it
 * took a minute for 40,000 keys when every insert scanned every key.  The
 * bound is only there to catch a return to quadratic time (~0.1 s now).
 */
static void test_many_keys(void)
{
	enum { N = 40000 };
	char err[256];
	size_t cap = (size_t)N * 48, len = 0;
	char *s = malloc(cap);
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(s + len, cap - len, "dev.%d.opt%d=value%d\n", i / 8, i % 8, i);
	config_clear();
	double t0 = now_s();
	int rc = config_from_string(s, len, err, sizeof(err));
	double dt = now_s() - t0;
	printf("# %d keys loaded in %.3f s\n", N, dt);
	CHECK(rc == 0, "40,000 keys load");
	CHECK(dt < 10.0, "40,000 keys load in well under 10 s");
	bool all = true;
	char key[64], want[32];
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "dev.%d.opt%d", i / 8, i % 8);
		snprintf(want, sizeof(want), "value%d", i);
		const char *v = get_config_value(key);
		all = all && v && strcmp(v, want) == 0;
	}
	CHECK(all, "every one of them reads back");
	size_t n;
	const char **kids = config_children("dev", &n);
	CHECK(n == N / 8, "children are named once each");
	for (size_t i = 0; i < n; i++)
		free((void *)kids[i]);
	free(kids);
	kids = config_children("", &n);
	CHECK(n == 1 && strcmp(kids[0], "dev") == 0, "top-level children");
	free((void *)kids[0]);
	free(kids);
	CHECK(set_config_value("dev.7", "x") == -1 && set_config_value("dev.7.opt3.x", "x") == -1,
	      "the tree shape still holds with many keys");
	size_t olen;
	char *out = config_to_string(&olen);
	CHECK(out && olen == len, "serialized back to the same size");
	free(out);
	free(s);

	/* Bounds: the key count, a key's length, a value's length. */
	config_clear();
	bool ok = true;
	for (int i = 0; i < CONFIG_MAX_KEYS && ok; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		ok = set_config_value(key, "") == 0;
	}
	CHECK(ok, "CONFIG_MAX_KEYS keys can be set");
	CHECK(config_set_assignment("one.more=1", err, sizeof(err)) == -1 && strstr(err, "too many keys"),
	      "one key more is refused, and the error says why");
	CHECK(config_set_assignment("k7=changed", err, sizeof(err)) == 0, "existing keys can still change at the limit");
	config_clear();
	char *big = malloc(CONFIG_MAX_VALUE + 16);
	memset(big, 'a', CONFIG_MAX_VALUE + 15);
	big[CONFIG_MAX_VALUE + 15] = '\0';
	big[300] = '=';
	CHECK(config_set_assignment(big, err, sizeof(err)) == -1 && strstr(err, "too long (300 bytes") &&
	      strlen(err) < 120, "a long key is refused with a short error");
	memcpy(big, "v=", 2);
	big[300] = 'a';
	CHECK(config_set_assignment(big, err, sizeof(err)) == -1 && strstr(err, "value too long"),
	      "a long value is refused");
	big[CONFIG_MAX_VALUE + 2] = '\0';
	CHECK(config_set_assignment(big, err, sizeof(err)) == 0, "a value of CONFIG_MAX_VALUE bytes is fine");
	free(big);
	config_clear();
}

static int reports, last_level;
static char last_msg[512];

static void collect(int level, const char *msg, void *arg)
{
	(void)arg;
	reports++;
	last_level = level;
	snprintf(last_msg, sizeof(last_msg), "%s", msg);
}

/* bhyve_config(5) %(KEY) references, expanded in place. */
static void test_expansion(void)
{
	config_clear();
	set_config_value("name", "vm1");
	set_config_value("disk", "/dev/zvol/bhyve/%(name)");
	set_config_value("twice", "%(disk).%(name)");
	set_config_value("pct", "100%% %done \\%(name) 5%");
	reports = 0;
	CHECK(config_expand_all(NULL, collect, NULL) == 0 && reports == 0, "references expand without errors");
	CHECK(strcmp(get_config_value("disk"), "/dev/zvol/bhyve/vm1") == 0, "%(name) expands");
	CHECK(strcmp(get_config_value("twice"), "/dev/zvol/bhyve/vm1.vm1") == 0, "nested references expand");
	CHECK(strcmp(get_config_value("pct"), "100% %done %(name) 5%") == 0, "%% and \\% are a literal %, a lone % stays");
	CHECK(config_expand_all(NULL, collect, NULL) == 0 && strcmp(get_config_value("disk"), "/dev/zvol/bhyve/vm1") == 0,
	      "expanded values stay as they are");

	config_clear();
	set_config_value("a", "%(b)");
	set_config_value("b", "x%(c)");
	set_config_value("c", "%(a)");
	set_config_value("d", "%(a)");
	set_config_value("e", "%(nothing)");
	set_config_value("f", "%(unterminated");
	set_config_value("g", "%(e)");
	reports = 0;
	int n = config_expand_all(NULL, collect, NULL);
	CHECK(n == 3 && reports == 3, "a loop, an undefined and an unterminated reference: one error each");
	CHECK(strcmp(get_config_value("a"), "%(b)") == 0, "a value with an error is left as it was");

	config_clear();
	set_config_value("name", "new");
	set_config_value("kept", "%(name)");
	set_config_value("mine", "%(name)");
	n = config_expand_all("kept=%(name)\nother=1\n", collect, NULL);
	CHECK(n == 0 && strcmp(get_config_value("kept"), "%(name)") == 0 && strcmp(get_config_value("mine"), "new") == 0,
	      "values already expanded (a checkpoint's) are not expanded again");
	config_clear();
}

/* config.c's getters exit through these on fatal errors; not reached here. */
void vm_request_exit(int status) { (void)status; }
int vm_exit_requested(void) { return -1; }

static int check_even(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	if (strlen(value) % 2) {
		snprintf(err, errlen, "odd length");
		return -1;
	}
	return 0;
}

static const struct config_key test_keys[] = {
	{ "cpus", CFG_UINT, "", NULL },
	{ "memory.size", CFG_SIZE, "", NULL },
	{ "flag", CFG_BOOL, "", NULL },
	{ "pci.*.*.*.device", CFG_STRING, "", NULL },
	{ "even", CFG_CUSTOM, "", check_even },
	{ NULL, 0, NULL, NULL },
};

int main(void)
{
	char err[256];
	uint64_t u;
	bool b;

	config_register_keys(test_keys);

	CHECK(set_config_value("a.b.c", "1") == 0, "set a nested key");
	CHECK(strcmp(get_config_value("a.b.c"), "1") == 0, "read it back");
	CHECK(set_config_value("a.b", "x") == -1, "a leaf cannot replace an inner node");
	CHECK(set_config_value("a.b.c.d", "x") == -1, "an inner node cannot replace a leaf");
	CHECK(set_config_value("a..b", "x") == -1 && set_config_value(".a", "x") == -1 &&
	      set_config_value("a b", "x") == -1, "malformed paths are refused");
	CHECK(set_config_value("a.b.c", "2") == 0 && strcmp(get_config_value("a.b.c"), "2") == 0,
	      "later settings override earlier ones");
	CHECK(unset_config_value("a.b.c") == 0 && get_config_value("a.b.c") == NULL, "unset");
	CHECK(unset_config_value("a.b") == -1, "an inner node is not unset");
	CHECK(set_config_value("a.x", "1") == 0 && set_config_value("a.y.z", "1") == 0 && unset_config_value("a.y.z") == 0 &&
	      set_config_value("a.y", "2") == 0, "after an unset, the emptied inner node can become a leaf");
	CHECK(set_config_value("a", "1") == -1, "but its parent still has a leaf below it");
	CHECK(unset_config_value("a.x") == 0 && unset_config_value("a.y") == 0 && set_config_value("a", "1") == 0 &&
	      unset_config_value("a") == 0, "and becomes a leaf once it has none");
	CHECK(set_config_valuef("v", "%0300d", 1) == -1 && get_config_valuef("%0300d", 1) == NULL,
	      "printf-style paths too long for a key are refused, not cut off");

	CHECK(config_parse_size("512M", &u, 1) == 0 && u == 512ULL << 20, "size 512M");
	CHECK(config_parse_size("2G", &u, 1) == 0 && u == 2ULL << 30, "size 2G");
	CHECK(config_parse_size("256", &u, 1 << 20) == 0 && u == 256ULL << 20, "size without suffix uses the default unit");
	CHECK(config_parse_size("1Q", &u, 1) == -1, "size 1Q refused");
	CHECK(config_parse_size("-1G", &u, 1) == -1, "negative size refused");
	CHECK(config_parse_size("99999999999T", &u, 1) == -1, "overflowing size refused");
	CHECK(config_parse_size("", &u, 1) == -1, "empty size refused");
	CHECK(config_parse_memsize("512", &u) == 0 && u == 512ULL << 20, "memsize: a plain number under 1M is MiB (-m 512)");
	CHECK(config_parse_memsize("1048576", &u) == 0 && u == 1048576, "memsize: a plain number from 1M up is bytes");
	CHECK(config_parse_memsize("2147483648", &u) == 0 && u == 2ULL << 30, "memsize: 2 GiB in bytes");
	CHECK(config_parse_memsize("0x80000000", &u) == 0 && u == 2ULL << 30, "memsize: hex bytes");
	CHECK(config_parse_memsize("1g", &u) == 0 && u == 1ULL << 30, "memsize: lower-case suffix");
	CHECK(config_parse_memsize("512MB", &u) == 0 && u == 512ULL << 20, "memsize: 512MB");
	CHECK(config_parse_memsize("4096k", &u) == 0 && u == 4ULL << 20, "memsize: k");
	CHECK(config_parse_memsize("1Q", &u) == -1 && config_parse_memsize("", &u) == -1 &&
	      config_parse_memsize("-1G", &u) == -1 && config_parse_memsize("20E", &u) == -1, "memsize: bad sizes refused");
	CHECK(config_parse_uint("0x10", &u) == 0 && u == 16, "hex uint");
	CHECK(config_parse_uint("12abc", &u) == -1, "trailing garbage refused");
	CHECK(config_parse_bool("yes", &b) == 0 && b, "bool yes");
	CHECK(config_parse_bool("OFF", &b) == 0 && !b, "bool OFF");
	CHECK(config_parse_bool("maybe", &b) == -1, "bool maybe refused");

	config_clear();
	CHECK(config_set_assignment("cpus=4", err, sizeof(err)) == 0, "assignment");
	CHECK(config_set_assignment("novalue", err, sizeof(err)) == -1 && strstr(err, "novalue"),
	      "assignment without = names the option");
	CHECK(config_set_assignment("=x", err, sizeof(err)) == -1, "assignment without key refused");
	set_config_value("pci.0.3.0.device", "virtio-blk");
	set_config_value("memory.size", "1G");
	set_config_value("even", "ab");
	CHECK(config_validate(err, sizeof(err)) == 0, "known keys validate");
	set_config_value("pci.0.3.0.bogus", "1");
	/* As bhyve: a key nobody registered is kept and ignored, with a warning. */
	CHECK(config_validate(err, sizeof(err)) == 0, "an unknown key is not an error");
	CHECK(config_check_key("pci.0.3.0.bogus", "1", err, sizeof(err)) == 1, "config_check_key: unknown is 1");
	reports = 0;
	CHECK(config_validate_all(collect, NULL) == 0 && reports == 1 && last_level == 1 &&
	      strcmp(last_msg, "config: unknown key 'pci.0.3.0.bogus' (kept, ignored)") == 0,
	      "config_validate_all warns about it in one line");
	set_config_value("cpus", "x");
	set_config_value("flag", "maybe");
	reports = 0;
	CHECK(config_validate_all(collect, NULL) == 2 && reports == 3, "every error of a tree is reported, not only the first");
	set_config_value("cpus", "4");
	unset_config_value("flag");
	unset_config_value("pci.0.3.0.bogus");
	set_config_value("cpus", "four");
	CHECK(config_validate(err, sizeof(err)) == -1 && strstr(err, "cpus: bad value 'four'"),
	      "wrong type named in the error");
	set_config_value("cpus", "4");
	set_config_value("even", "abc");
	CHECK(config_validate(err, sizeof(err)) == -1 && strstr(err, "odd length"),
	      "custom checks give their reason");
	set_config_value("even", "ab");

	size_t n;
	const char **kids = config_children("pci.0", &n);
	CHECK(n == 1 && strcmp(kids[0], "3") == 0, "children of an inner node");
	for (size_t i = 0; i < n; i++)
		free((void *)kids[i]);
	free(kids);

	/* Serialize and restore: same tree. */
	size_t len;
	char *s = config_to_string(&len);
	config_clear();
	CHECK(get_config_value("cpus") == NULL, "cleared");
	CHECK(config_from_string(s, len, err, sizeof(err)) == 0 &&
	      strcmp(get_config_value("memory.size"), "1G") == 0 &&
	      strcmp(get_config_value("pci.0.3.0.device"), "virtio-blk") == 0, "string round trip");
	free(s);

	/* -k files: comments, blank lines, whitespace, errors with line numbers. */
	char path[] = "/tmp/hyve-config-test.XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	fprintf(f, "# comment\n\n   cpus = 2\nflag=true\n");
	fclose(f);
	config_clear();
	int rc = config_load_file(path, err, sizeof(err));
	/* "cpus " (with a space) is not a valid key: whitespace around '=' is not allowed. */
	CHECK(rc == -1 && strstr(err, ":3:"), "file errors carry the line number");
	f = fopen(path, "w");
	fprintf(f, "# comment\n\n   cpus=2\nflag=true\n");
	fclose(f);
	config_clear();
	CHECK(config_load_file(path, err, sizeof(err)) == 0 && strcmp(get_config_value("cpus"), "2") == 0 &&
	      get_config_bool_default("flag", false), "file loaded");
	unlink(path);
	CHECK(config_load_file("/nonexistent/x", err, sizeof(err)) == -1 && strstr(err, "/nonexistent/x"),
	      "missing file named");

	test_expansion();
	test_many_keys();

	printf("%s\n", failures ? "FAILED" : "all ok");
	return failures ? 1 : 0;
}
