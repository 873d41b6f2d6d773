/*
 * Unit tests for core/config.c: tree shape, parsers, validation, files.
 * test-sources: core/config.c core/log.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

	CHECK(config_parse_size("512M", &u, 1) == 0 && u == 512ULL << 20, "size 512M");
	CHECK(config_parse_size("2G", &u, 1) == 0 && u == 2ULL << 30, "size 2G");
	CHECK(config_parse_size("256", &u, 1 << 20) == 0 && u == 256ULL << 20, "size without suffix uses the default unit");
	CHECK(config_parse_size("1Q", &u, 1) == -1, "size 1Q refused");
	CHECK(config_parse_size("-1G", &u, 1) == -1, "negative size refused");
	CHECK(config_parse_size("99999999999T", &u, 1) == -1, "overflowing size refused");
	CHECK(config_parse_size("", &u, 1) == -1, "empty size refused");
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
	CHECK(config_validate(err, sizeof(err)) == -1 && strstr(err, "pci.0.3.0.bogus: unknown key"),
	      "unknown key named in the error");
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

	printf("%s\n", failures ? "FAILED" : "all ok");
	return failures ? 1 : 0;
}
