/*
 * libFuzzer target for the configuration tree (core/config.c) and what
 * fills it: the checkpoint/migration form (config_from_string), -k files
 * (config_load_file), -o assignments (config_set_assignment), the -s parser
 * (pci_parse_slot with every device model's own option syntax:
 * virtio-blk's bare path, virtio-net's backend and hostfwd rules,
 * virtio-9p's TAG=DIR, virtio-console's NAME=PATH ports), cpu.features,
 * and, when core/config_trust.c exists, the holding back of host-side keys
 * of a foreign configuration.  After each input the tree is validated
 * (config_validate with the device models' key tables) and read back.
 *
 *   tests/fuzz/run.sh -t 60 config
 *
 * Input: byte 0 (mod 4) picks the form of the rest ('0'..'3' keep seeds
 * readable):
 *   0  the whole rest is a serialized tree (config_from_string);
 *   1  the rest is a -k file, read from a memfd by config_load_file;
 *   2, 3  a script, one command per line, like the command line:
 *        -s SPEC     pci_parse_slot          -o KEY=VALUE  config_set_assignment
 *        -u KEY      unset_config_value       -g KEY        get_config_value
 *        -f SPEC     cpuid_check_features     -d            pci_add_default_devices
 *        -b/-n/-z S  config_parse_bool/uint/size (size: default unit 1M, as -m)
 *        -H          config_hold_host_keys    -R0 / -R1     ..._release (untrusted/trusted)
 *        -k          the lines up to "-." are a -k file
 *        anything else: KEY=VALUE as a -k line (config_set_assignment)
 *      In -o and -s arguments, "\n" stands for a newline and "\\" for a
 *      backslash (what a shell can pass in one argument).
 *
 * Properties checked after each input, besides the sanitizers:
 *   - config_to_string lists each key once, sorted, and no key is a dotted
 *     prefix of another (a path is a leaf or an inner node, never both);
 *     get_config_value returns each listed value; config_dump prints the
 *     same text;
 *   - config_children, walked from the root, reaches every key once;
 *   - once config_validate accepts the tree, the typed getters of keys it
 *     checked do not fail (they would exit) and cpuid_build applies
 *     cpu.features;
 *   - the serialized tree loads back (config_from_string, as a checkpoint
 *     restore does) into a tree that serializes to the same text.
 * The tree is cleared (config_clear) after each input.
 *
 * The seeds in tests/fuzz/corpus/config/ are written by hand (text).
 * -DFUZZ_STANDALONE builds a main() that replays input files.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../core/config.h"
#include "../../core/control.h"
#include "../../core/exitcode.h"
#include "../../core/init.h"
#include "../../core/log.h"
#include "../../core/mevent.h"
#include "../../core/sandbox.h"
#include "../../core/vm.h"
#include "../../devices/acpi_pm.h"
#include "../../devices/pci_emul.h"
#include "../../devices/pci_lpc.h"
#include "../../vmm/vmm.h"
#if __has_include("../../core/config_trust.h")
#include "../../core/config_trust.h"
#define HAVE_CONFIG_TRUST 1   /* run.sh links core/config_trust.c when it exists */
#endif

/*
 * Stubs.  No device is initialized here (init_register drops the init
 * functions): nothing below may reach KVM, the event loop or a socket, so
 * every stub that would is a finding.
 */
#define NEVER(...) { fprintf(stderr, "unexpected call: %s\n", __func__); abort(); }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
void sandbox_thread_role(enum sandbox_role role) { (void)role; }
void init_register(enum init_level level, const char *name, init_fn_t fn) { (void)level; (void)name; (void)fn; }
/* cpuid_build asks whether the host emulates (it does not here). */
static const struct vmm_host_info fz_host_info;
const struct vmm_host_info *vm_host_info(struct vmctx *ctx) { return &fz_host_info; }
int vmm_probe_forced_cpuid(uint32_t forced[VMM_FORCED_CPUID_REGS]) NEVER()
uint64_t vm_get_highmem_size(struct vmctx *ctx) NEVER()
bool vm_dirty_logging(struct vmctx *ctx) NEVER()
void vm_mark_dirty(struct vmctx *ctx, uint64_t gpa, uint64_t len) NEVER()
void *vm_map_gpa(struct vmctx *ctx, uint64_t gpa, size_t len) NEVER()
int vm_set_irq_line(struct vmctx *ctx, int gsi, int level) NEVER()
int vm_signal_msi(struct vmctx *ctx, uint64_t addr, uint32_t data) NEVER()
int vm_msi_route_add(struct vmctx *ctx, uint64_t addr, uint32_t data) NEVER()
int vm_msi_route_update(struct vmctx *ctx, int gsi, uint64_t addr, uint32_t data) NEVER()
void vm_msi_route_del(struct vmctx *ctx, int gsi) NEVER()
int vm_irqfd(struct vmctx *ctx, int fd, int gsi, bool assign) NEVER()
int vm_ioeventfd(struct vmctx *ctx, const struct vm_ioeventfd *io, bool assign) NEVER()
int acpi_reset_port_access(bool in, uint32_t *val) NEVER()
struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg) NEVER()
struct mevent *mevent_add_timer(uint64_t first_ns, uint64_t period_ns, mevent_cb_t cb, void *arg) NEVER()
int mevent_timer_set(struct mevent *ev, uint64_t first_ns, uint64_t period_ns) NEVER()
int mevent_enable(struct mevent *ev) NEVER()
int mevent_disable(struct mevent *ev) NEVER()
int mevent_delete(struct mevent *ev) NEVER()
int mevent_call(void (*fn)(void *), void *arg) NEVER()
void control_reply(struct control_conn *c, const char *fmt, ...) NEVER()
void control_register_stats(void (*fn)(struct control_conn *c)) { (void)fn; }
bool vcpu_cpuid_lookup(struct vcpu *vcpu, uint32_t leaf, uint32_t sub, uint32_t out[4]) NEVER()
int vm_deny_msrs(struct vmctx *ctx, const uint32_t *msrs, int n) NEVER()
#pragma GCC diagnostic pop

/* A fake KVM_GET_SUPPORTED_CPUID: the leaves cpu.features edits. */
struct kvm_cpuid2 *vm_get_supported_cpuid(struct vmctx *ctx)
{
	static const uint32_t leaves[][2] = { { 0, 0 }, { 1, 0 }, { 7, 0 }, { 0xb, 0 }, { 0xd, 1 }, { 0x80000001, 0 } };
	size_t n = sizeof(leaves) / sizeof(leaves[0]);
	(void)ctx;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
	if (!c)
		return NULL;
	c->nent = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		c->entries[i].function = leaves[i][0];
		c->entries[i].index = leaves[i][1];
		c->entries[i].flags = leaves[i][0] == 0xd ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
		c->entries[i].ecx = c->entries[i].edx = 0x55555555u;
	}
	return c;
}

int log_level_max = LOG_ERR;
void logmsg(enum log_level lvl, const char *fmt, ...) { (void)lvl; (void)fmt; }
void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fatal: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

/* main.c's key table is static there: the same keys and types, for
 * config_validate (the CFG_CUSTOM ones as main.c checks them). */
static int fz_check_memsize(const char *path, const char *value, char *err, size_t errlen)
{
	uint64_t sz;
	(void)path;
	if (config_parse_size(value, &sz, 1ULL << 20) || sz < (2ULL << 20) || sz > (1ULL << 40)) {
		snprintf(err, errlen, "expected a size from 2M to 1T");
		return -1;
	}
	return 0;
}
static int fz_check_features(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	return cpuid_check_features(value, err, errlen);
}
static int fz_check_words(const char *path, const char *value, char *err, size_t errlen)
{
	static const char *const ok[] = { "auto", "true", "false", "lazy", "copy", "none", "lz4", NULL };
	(void)path;
	for (int i = 0; ok[i]; i++)
		if (strcmp(value, ok[i]) == 0)
			return 0;
	snprintf(err, errlen, "not one of the words");
	return -1;
}
static const struct config_key fz_core_keys[] = {
	{ "name", CFG_STRING, NULL, NULL },
	{ "cpus", CFG_UINT, NULL, NULL },
	{ "sockets", CFG_UINT, NULL, NULL },
	{ "cores", CFG_UINT, NULL, NULL },
	{ "threads", CFG_UINT, NULL, NULL },
	{ "maxcpus", CFG_UINT, NULL, NULL },
	{ "memory.size", CFG_CUSTOM, NULL, fz_check_memsize },
	{ "memory.wired", CFG_BOOL, NULL, NULL },
	{ "cpu.features", CFG_CUSTOM, NULL, fz_check_features },
	{ "boot.kernel", CFG_STRING, NULL, NULL },
	{ "boot.linux_adapt", CFG_BOOL, NULL, NULL },
	{ "boot.guest_decompress", CFG_BOOL, NULL, NULL },
	{ "boot.initrd", CFG_STRING, NULL, NULL },
	{ "boot.cmdline", CFG_STRING, NULL, NULL },
	{ "vmm.emulating", CFG_CUSTOM, NULL, fz_check_words },
	{ "config.dump", CFG_BOOL, NULL, NULL },
	{ "log.level", CFG_UINT, NULL, NULL },
	{ "debug.profile", CFG_STRING, NULL, NULL },
	{ "debug.profile_ms", CFG_UINT, NULL, NULL },
	{ "acpi_tables", CFG_BOOL, NULL, NULL },
	{ "x86.vmexit_on_hlt", CFG_BOOL, NULL, NULL },
	{ "x86.x2apic", CFG_BOOL, NULL, NULL },
	{ "rtc.use_localtime", CFG_BOOL, NULL, NULL },
	{ "uuid", CFG_STRING, NULL, NULL },
	{ "migration.streams", CFG_UINT, NULL, NULL },
	{ "migration.compress", CFG_CUSTOM, NULL, fz_check_words },
	{ "migration.trust_source", CFG_BOOL, NULL, NULL },
	{ "boot.paused", CFG_BOOL, NULL, NULL },
	{ "control.socket", CFG_STRING, NULL, NULL },
	{ "snapshot.trust_config", CFG_BOOL, NULL, NULL },
	{ "snapshot.restore_memory", CFG_CUSTOM, NULL, fz_check_words },
	{ NULL, 0, NULL, NULL },
};

/* Keys config_validate checked as a type, whose getter must then succeed. */
static const char *const uint_keys[] = { "cpus", "sockets", "cores", "threads", "maxcpus", "log.level",
	                                 "debug.profile_ms", "migration.streams", NULL };
static const char *const bool_keys[] = { "memory.wired", "boot.linux_adapt", "config.dump", "acpi_tables",
	                                 "x86.x2apic", "rtc.use_localtime", "boot.paused", "pci.irqfd",
	                                 "virtio.ioeventfd", "lpc.pc-testdev", "snapshot.trust_config", NULL };

static struct vmctx *const FAKE_CTX = (struct vmctx *)0x1;
static int memfd = -1;
static char memfd_path[64];
static volatile uint64_t sink;
static bool verbose;   /* FUZZ_VERBOSE=1: print each refusal */

static void note(int rc, const char *what, const char *err)
{
	if (verbose && rc)
		fprintf(stderr, "config: %s: %s\n", what, err);
}

static void load_k_file(const char *text, size_t len)
{
	char err[512];
	if (ftruncate(memfd, 0) || (len && pwrite(memfd, text, len, 0) != (ssize_t)len))
		abort();
	note(config_load_file(memfd_path, err, sizeof(err)), "-k", err);
}


/* "\n" and "\\" in a command's argument. */
static void unescape(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && (s[1] == 'n' || s[1] == '\\')) {
			*o++ = s[1] == 'n' ? '\n' : '\\';
			s++;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

static void run_script(char *text, size_t len)
{
	char err[512];
	char *end = text + len, *line = text;
	while (line < end) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		if (nl)
			*nl = '\0';
		char *next = nl ? nl + 1 : end;
		char *arg = line[0] && line[1] ? line + 2 + (line[2] == ' ') : line + strlen(line);
		bool b;
		uint64_t u;
		if (line[0] != '-') {
			if (line[0] && line[0] != '#')
				note(config_set_assignment(line, err, sizeof(err)), line, err);
		} else if (line[1] == 'k') {
			/* A -k file: the lines up to "-." */
			char *stop = next;
			while (stop < end && !(stop[0] == '-' && stop[1] == '.' && (stop + 2 == end || stop[2] == '\n'))) {
				char *n2 = memchr(stop, '\n', (size_t)(end - stop));
				stop = n2 ? n2 + 1 : end;
			}
			load_k_file(next, (size_t)(stop - next));
			next = stop;
		} else {
			switch (line[1]) {
			case 's': unescape(arg); note(pci_parse_slot(arg, err, sizeof(err)), line, err); break;
			case 'o': unescape(arg); note(config_set_assignment(arg, err, sizeof(err)), line, err); break;
			case 'u': (void)unset_config_value(arg); break;
			case 'g': sink += get_config_value(arg) != NULL; break;
			case 'f': sink += cpuid_check_features(arg, err, sizeof(err)); break;
			case 'd': pci_add_default_devices(); break;
			case 'b': sink += config_parse_bool(arg, &b) == 0 && b; break;
			case 'n': sink += config_parse_uint(arg, &u) == 0 ? u : 0; break;
			case 'z': sink += config_parse_size(arg, &u, 1ULL << 20) == 0 ? u : 0; break;
#ifdef HAVE_CONFIG_TRUST
			case 'H': note(config_hold_host_keys("fuzz", err, sizeof(err)), line, err); break;
			case 'R': note(config_release_host_keys(arg[0] == '1', "snapshot.trust_config", err, sizeof(err)), line, err); break;
#endif
			default: break;
			}
		}
		line = next;
	}
}

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "config: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

/* Every key below path, through config_children; returns how many. */
static size_t walk(const char *path, int depth)
{
	size_t n, total = 0;
	if (depth > CONFIG_MAX_PATH)
		fail("config_children recursion deeper than any key", path);
	const char **c = config_children(path, &n);
	if (!c)
		fail("config_children returned NULL", path);
	for (size_t i = 0; i < n; i++) {
		if (!c[i] || !c[i][0] || strchr(c[i], '.'))
			fail("config_children: empty or dotted child name under", path);
		for (size_t j = 0; j < i; j++)
			if (strcmp(c[i], c[j]) == 0)
				fail("config_children: duplicate child", c[i]);
		char child[CONFIG_MAX_PATH + 2];
		int l = snprintf(child, sizeof(child), "%s%s%s", path, path[0] ? "." : "", c[i]);
		if (l < 0 || (size_t)l >= sizeof(child))
			fail("config_children: child path longer than any key", child);
		total += get_config_value(child) ? 1 : walk(child, depth + 1);
	}
	for (size_t i = 0; i < n; i++)
		free((void *)c[i]);
	free(c);
	return total;
}

/* The tree as config_to_string has it, checked line by line. */
static size_t check_serialized(const char *s, size_t len)
{
	size_t nkeys = 0;
	const char *prev = NULL;
	size_t prevlen = 0;
	if (strlen(s) != len)
		fail("config_to_string: length or embedded NUL", NULL);
	for (const char *p = s; p < s + len;) {
		const char *nl = strchr(p, '\n');
		if (!nl)
			fail("config_to_string: unterminated line", p);
		const char *eq = memchr(p, '=', (size_t)(nl - p));
		if (!eq || eq == p)
			fail("config_to_string: line without key=", p);
		size_t klen = (size_t)(eq - p);
		char key[CONFIG_MAX_PATH + 2];
		if (klen > CONFIG_MAX_PATH)
			fail("config_to_string: key longer than CONFIG_MAX_PATH", p);
		memcpy(key, p, klen);
		key[klen] = '\0';
		const char *v = get_config_value(key);
		if (!v || strlen(v) != (size_t)(nl - eq - 1) || memcmp(v, eq + 1, strlen(v)))
			fail("get_config_value differs from config_to_string for", key);
		if (prev) {
			int c = strncmp(prev, p, prevlen < klen ? prevlen : klen);
			if (c > 0 || (c == 0 && prevlen >= klen))
				fail("config_to_string: keys not sorted or repeated at", key);
			if (c == 0 && p[prevlen] == '.')
				fail("a key is both a leaf and an inner node", key);
		}
		prev = p;
		prevlen = klen;
		nkeys++;
		p = nl + 1;
	}
	return nkeys;
}

static void check_tree(void)
{
	char err[512];
	size_t len;
	char *s = config_to_string(&len);
	if (!s)
		fail("config_to_string failed", NULL);
	/* Values with line breaks are refused (regress/config/crash-newline-value). */
	size_t nkeys = check_serialized(s, len);

	char *dump = NULL;
	size_t dlen = 0;
	FILE *f = open_memstream(&dump, &dlen);
	if (!f)
		abort();
	config_dump(f);
	fclose(f);
	if (dlen != len || memcmp(dump, s, len))
		fail("config_dump differs from config_to_string", NULL);
	free(dump);

	size_t walked = walk("", 0);
	if (walked != nkeys) {
		char m[64];
		snprintf(m, sizeof(m), "%zu keys, config_children reaches %zu", nkeys, walked);
		fail("config_children", m);
	}

	int vrc = config_validate(err, sizeof(err));
	if (verbose)
		fprintf(stderr, "config: %zu keys, %s\n", nkeys, vrc ? err : "valid");
	if (vrc == 0) {
		for (int i = 0; uint_keys[i]; i++)
			sink += get_config_uint_default(uint_keys[i], 1);
		for (int i = 0; bool_keys[i]; i++)
			sink += get_config_bool_default(bool_keys[i], false);
		sink += get_config_size_default("memory.size", 0) + lpc_present();
		struct kvm_cpuid2 *c = cpuid_build(FAKE_CTX, 0, 2);
		if (!c)
			abort();
		sink += c->entries[1].ecx;
		free(c);
	}

	/* A checkpoint or migration stream carries s: it must load back as is. */
	config_clear();
	if (config_from_string(s, len, err, sizeof(err)))
		fail("the serialized tree does not load back", err);
	size_t len2;
	char *s2 = config_to_string(&len2);
	if (!s2 || len2 != len || memcmp(s, s2, len))
		fail("the serialized tree loads back different", NULL);
	free(s2);
	free(s);
}

static void setup(void)
{
	memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
	if (memfd < 0)
		abort();
	snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
	config_register_keys(fz_core_keys);
	verbose = getenv("FUZZ_VERBOSE") != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	if (memfd < 0)
		setup();
	if (size < 1)
		return 0;
	size_t n = size - 1;
	char *text = malloc(n + 1);
	if (!text)
		abort();
	memcpy(text, data + 1, n);
	text[n] = '\0';
	switch (data[0] % 4) {
	case 0: note(config_from_string(text, n, err, sizeof(err)), "config_from_string", err); break;
	case 1: load_k_file(text, n); break;
	default: run_script(text, n); break;
	}
#ifdef HAVE_CONFIG_TRUST
	/* Nothing stays held for the next input. */
	(void)config_release_host_keys(false, "snapshot.trust_config", err, sizeof(err));
#endif
	free(text);
	check_tree();
	config_clear();
	return 0;
}

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f)
			continue;
		static uint8_t buf[1 << 20];
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
		printf("%s: ok\n", argv[i]);
	}
	return 0;
}
#endif
