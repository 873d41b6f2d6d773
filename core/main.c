/*
 * hyve: command line (bhyve(8)'s flags), configuration, and the start-up
 * sequence: config -> VM + memory + in-kernel chips -> devices by init
 * level -> kernel loader -> vCPU threads -> main event loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../boot/boot.h"
#include "../boot/bootrom.h"
#include "../boot/fwcfg_linux.h"
#include "../boot/firmware.h"
#include "../boot/linux.h"
#include "../boot/linux_adapt.h"
#include "../devices/pci_emul.h"
#include "../devices/pci_lpc.h"
#include "bhyve_compat.h"
#include "checkpoint.h"
#include "config.h"
#include "config_trust.h"
#include "control.h"
#include "migration.h"
#include "migration_tls.h"
#include "exitcode.h"
#include "gdbstub.h"
#include "../devices/acpi_pm.h"
#include "sandbox.h"
#include "init.h"
#include "inout.h"
#include "log.h"
#include "mevent.h"
#include "vm.h"
#include "vmstate.h"

#define HYVE_VERSION "0.1"
#define DEFAULT_MEMSIZE (256ULL << 20)
#define DEFAULT_VCPU_LIMIT 64

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: hyve [-aACDeHPSuWwxY] [-c [[cpus=]n][,sockets=n][,cores=n][,threads=n]]\n"
	        "            [-m size[KMGT]] [-s slot[:func],model[,conf]]... [-l comN,BACKEND]\n"
	        "            [-p vcpu:hostcpu]... [-U uuid] [-f name,string=DATA|file=PATH] [-K layout]\n"
	        "            [-o key=value]... [-k config_file] vmname\n"
	        "       hyve -r checkpoint_file [same options as at start] [vmname]\n"
	        "       hyve -R [addr:]port [-o key=value]... [vmname]\n"
	        "  -c  vCPUs (default 1)        -m  RAM: 512M, 2G; a plain number < 1048576 is MiB (default 256M)\n"
	        "  -s  PCI slot ('-s help')     -l  comN,stdio|file=PATH|sock=PATH ('-l help')\n"
	        "  -o  set a key ('-o help'; config.dump=true prints the tree)  -k  read key=value lines\n"
	        "  -r  restore a checkpoint     -R  receive a migrating VM on [addr:]port\n"
	        "  -p  pin a vCPU to host CPUs  -U  SMBIOS UUID   -S  wire (mlock) guest RAM\n"
	        "  -C  guest RAM in core dumps  -e  exit on unhandled I/O ports   -u  RTC keeps UTC\n"
	        "  -A -D -H -P -w -x -a -W -Y -K -f: bhyve's, accepted (hyve(8), docs/cli.md)\n"
	        "Exit status: 0 reboot, 1 poweroff, 2 halt, 3 triple fault, 4 error.\n");
}

static int check_memsize(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	uint64_t sz;
	if (config_parse_memsize(value, &sz)) {
		snprintf(err, errlen, "expected a size like 512M or 2G");
		return -1;
	}
	if (sz < (2ULL << 20)) {
		snprintf(err, errlen, "at least 2M of memory is needed");
		return -1;
	}
	if (sz > (1ULL << 40)) {
		snprintf(err, errlen, "more than 1T of memory");
		return -1;
	}
	return 0;
}

static int check_features(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	return cpuid_check_features(value, err, errlen);
}

static int check_model(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	return cpuid_check_model(value, err, errlen);
}

static int check_emulating(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	bool b;
	if (strcmp(value, "auto") == 0 || config_parse_bool(value, &b) == 0)
		return 0;
	snprintf(err, errlen, "expected auto, true or false");
	return -1;
}

/* Keys whose value is one of two words. */
static int check_two_words(const char *value, const char *a, const char *b, char *err, size_t errlen)
{
	if (strcmp(value, a) == 0 || strcmp(value, b) == 0)
		return 0;
	snprintf(err, errlen, "expected %s or %s", a, b);
	return -1;
}

static int check_restore_mode(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	return check_two_words(value, "lazy", "copy", err, errlen);
}

static int check_compress(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	return check_two_words(value, "none", "lz4", err, errlen);
}

static int check_seccomp(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	if (strcmp(value, "kill") == 0 || strcmp(value, "log") == 0 || strcmp(value, "off") == 0)
		return 0;
	snprintf(err, errlen, "expected kill, log or off");
	return -1;
}

static int check_user(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	return sandbox_user_check(value, err, errlen);
}

static const struct config_key core_keys[] = {
	{ "name", CFG_STRING, "VM name (the positional argument)", NULL },
	{ "cpus", CFG_UINT, "number of vCPUs (-c)", NULL },
	{ "sockets", CFG_UINT, "CPU topology: sockets", NULL },
	{ "cores", CFG_UINT, "CPU topology: cores per socket", NULL },
	{ "threads", CFG_UINT, "CPU topology: threads per core", NULL },
	{ "maxcpus", CFG_UINT, "upper bound for cpus (default 64, capped by KVM)", NULL },
	{ "memory.size", CFG_CUSTOM, "guest RAM (-m): 512M, 2G; a plain number is bytes, or MiB below 1M (bhyve)", check_memsize },
	{ "memory.wired", CFG_BOOL, "-S: lock guest RAM in host memory (mlock; RLIMIT_MEMLOCK)", NULL },
	{ "cpu.features", CFG_CUSTOM, "CPUID edits: -name,+name (Linux flag names); what the host lacks is dropped with a warning", check_features },
	{ "cpu.model", CFG_CUSTOM, "CPU model the guest sees: host (default), qemu64, x86-64-v2, x86-64-v3", check_model },
	{ "boot.kernel", CFG_STRING, "kernel to boot: Multiboot ELF, Linux bzImage or vmlinux", NULL },
	{ "boot.linux_adapt", CFG_BOOL, "on emulating hosts, add Linux parameters that avoid what the host cannot run (default true)", NULL },
	{ "boot.guest_decompress", CFG_BOOL, "Linux bzImage: let the guest decompress itself (classic entry) instead of the host", NULL },
	{ "boot.initrd", CFG_STRING, "initrd / Multiboot module", NULL },
	{ "boot.cmdline", CFG_STRING, "kernel command line", NULL },
	{ "boot.linuxboot_rom", CFG_STRING, "boot.kernel under -l bootrom: QEMU's linuxboot_dma.bin option ROM (default /usr/share/qemu/linuxboot_dma.bin)", NULL },
	{ "vmm.emulating", CFG_CUSTOM, "host KVM emulates guest kernel code: auto|true|false", check_emulating },
	{ "vmm.probe_report", CFG_BOOL, "emulating hosts: log at start what the host's emulator does with each instruction hyve probes (runs it, hands it to hyve, or raises an exception itself)", NULL },
	{ "config.dump", CFG_BOOL, "print the configuration and exit", NULL },
	{ "log.level", CFG_UINT, "0 errors .. 3 debug (default 2)", NULL },
	{ "debug.profile", CFG_STRING, "sample vCPU RIPs; write 'count rip' lines to this file at exit", NULL },
	{ "debug.profile_ms", CFG_UINT, "sampling period in ms (default 10)", NULL },
	{ "gdb.port", CFG_UINT, "-G: GDB remote stub on this TCP port (0: none)", NULL },
	{ "gdb.address", CFG_STRING, "-G: address the GDB stub listens on (default 127.0.0.1)", NULL },
	{ "gdb.wait", CFG_BOOL, "-G w: hold the vCPUs until a debugger attaches", NULL },
	{ "acpi_tables", CFG_BOOL, "generate ACPI tables (-A; always on)", NULL },
	{ "acpi.s3", CFG_BOOL, "offer ACPI S3 (suspend to RAM) to a directly booted guest (default true; never on emulating hosts)", NULL },
	{ "x86.vmexit_on_hlt", CFG_BOOL, "-H: always so (a halted vCPU sleeps in KVM)", NULL },
	{ "x86.vmexit_on_pause", CFG_BOOL, "-P: always so (KVM exits on PAUSE loops)", NULL },
	{ "x86.strictmsr", CFG_BOOL, "MSRs the guest's CPUID does not announce raise #GP (default true; -w clears it)", NULL },
	{ "x86.x2apic", CFG_BOOL, "-x sets, -a clears; the APICs start in xAPIC mode either way", NULL },
	{ "rtc.use_localtime", CFG_BOOL, "RTC in local time (default true, as bhyve; -u: UTC)", NULL },
	{ "migration.streams", CFG_UINT, "TCP streams for live migration (1..8, default: host CPUs, at most 8)", NULL },
	{ "migration.downtime_ms", CFG_UINT, "pre-copy stops when the rest fits in this downtime (default 300)", NULL },
	{ "migration.max_rounds", CFG_UINT, "pre-copy rounds before vCPUs are throttled (default 30)", NULL },
	{ "migration.verify", CFG_CUSTOM, "re-hash RAM at stop-and-copy and resend pages the dirty log missed: auto (emulating hosts), true, false", check_emulating },
	{ "migration.compress", CFG_CUSTOM, "page compression: none (default) or lz4", check_compress },
	{ "boot.paused", CFG_BOOL, "start with vCPUs paused until hyvectl --resume", NULL },
	{ "control.socket", CFG_STRING, "hyvectl control socket path (default /run/hyve/NAME.sock; none disables)", NULL },
	{ "migration.psk_file", CFG_STRING, "pre-shared key (hex) for TLS-authenticated, encrypted migration; give it to both ends", NULL },
	{ "migration.trust_source", CFG_BOOL, "-R: take host-side keys (disk paths, sockets, ...) from the source's configuration (default false)", NULL },
	{ "migration.insecure", CFG_BOOL, "-R: allow listening beyond loopback without migration.psk_file (unsafe)", NULL },
	{ "security.user", CFG_CUSTOM, "as root: after set-up, run as USER[:GROUP] or UID:GID (devices, sockets and the key stay open)", check_user },
	{ "security.landlock", CFG_BOOL, "after set-up, open only the paths devices declared and security.landlock_rw/_ro (default false)", NULL },
	{ "security.landlock_rw", CFG_STRING, "with security.landlock: more paths hyve may write beneath, comma-separated (checkpoint directories)", NULL },
	{ "security.landlock_ro", CFG_STRING, "with security.landlock: more paths hyve may read beneath, comma-separated (CD images to insert)", NULL },
	{ "security.seccomp", CFG_CUSTOM, "seccomp filter after set-up: kill (default), log (kernel logs, calls run) or off (unsafe)", check_seccomp },
	{ "snapshot.trust_config", CFG_BOOL, "-r: take host-side keys (disk paths, sockets, ...) from the checkpoint (default false)", NULL },
	{ "snapshot.restore_memory", CFG_CUSTOM, "restore RAM lazily from the file (lazy, default) or read it all first (copy)", check_restore_mode },
	{ "snapshot.prefetch", CFG_BOOL, "lazy restore: copy the file's data pages in the background while the guest runs (default true)", NULL },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) core_keys_register(void)
{
	config_register_keys(core_keys);
}

/* -c [[cpus=]n][,sockets=n][,cores=n][,threads=n][,maxcpus=n] */
static int parse_cpus(const char *opt, char *err, size_t errlen)
{
	char *copy = strdup(opt), *save = NULL;
	int rc = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		const char *key = "cpus", *val = tok;
		if (eq) {
			*eq = '\0';
			key = tok;
			val = eq + 1;
		}
		if (strcmp(key, "cpus") && strcmp(key, "sockets") && strcmp(key, "cores") &&
		    strcmp(key, "threads") && strcmp(key, "maxcpus")) {
			snprintf(err, errlen, "-c: unknown field '%s'", key);
			rc = -1;
			break;
		}
		set_config_value(key, val);
	}
	free(copy);
	return rc;
}

/* -l comN,BACKEND */
static int parse_lpc(const char *opt, char *err, size_t errlen)
{
	if (strcmp(opt, "help") == 0) {
		printf("LPC devices (-l): com1..com4 with backend stdio, file=PATH, sock=PATH, tcp=ADDR:PORT\n"
		       "or a tty path (/dev/nmdm0A, /dev/pts/N); bootrom,ROMFILE[,VARSFILE]; fwcfg,qemu|off;\n"
		       "pc-testdev\n");
		exit(0);
	}
	/* bhyve's other LPC devices: the test device hyve has, the rest said so. */
	if (strcmp(opt, "pc-testdev") == 0)
		return set_config_value("lpc.pc-testdev", "true");
	size_t dl = strcspn(opt, ",");
	const char *conf = opt[dl] ? opt + dl + 1 : "";
	if (dl == 7 && strncmp(opt, "bootrom", 7) == 0) {
		/* bootrom,ROM[,VARS] */
		size_t rl = strcspn(conf, ",");
		if (!rl) {
			snprintf(err, errlen, "-l %s: expected bootrom,ROMFILE[,VARSFILE]", opt);
			return -1;
		}
		char rom[PATH_MAX];
		snprintf(rom, sizeof(rom), "%.*s", (int)rl, conf);
		if (set_config_value("lpc.bootrom", rom) ||
		    (conf[rl] && set_config_value("lpc.bootvars", conf + rl + 1)))
			return -1;
		return 0;
	}
	if (dl == 5 && strncmp(opt, "fwcfg", 5) == 0)
		return set_config_value("lpc.fwcfg", conf);
	if (dl == 3 && strncmp(opt, "tpm", 3) == 0) {
		snprintf(err, errlen, "bhyve option -l tpm is not supported by hyve (no TPM)");
		return -1;
	}
	const char *comma = strchr(opt, ',');
	if (!comma || comma == opt || !comma[1]) {
		snprintf(err, errlen, "-l %s: expected comN,BACKEND", opt);
		return -1;
	}
	char dev[16];
	size_t n = (size_t)(comma - opt);
	if (n >= sizeof(dev) || strncmp(opt, "com", 3) != 0 || n != 4 || opt[3] < '1' || opt[3] > '4') {
		snprintf(err, errlen, "-l %s: unknown LPC device '%.*s' (com1..com4)", opt, (int)n, opt);
		return -1;
	}
	memcpy(dev, opt, n);
	dev[n] = '\0';
	set_config_valuef(comma + 1, "lpc.%s.path", dev);
	return 0;
}

static void __attribute__((noreturn)) config_fail(const char *msg)
{
	log_err("%s", msg);
	exit(HYVE_EXIT_ERROR);
}

/* bhyve's flags (-n: not supported, said so), hyve's -R and -h. */
#define HYVE_OPTSTRING ":aACDeHhPSuWwxYc:f:G:k:K:l:m:n:o:p:r:R:s:U:"

/*
 * Configuration errors: each is printed as one line when found and
 * parsing goes on, so one run reports all of them; then hyve exits with
 * status 4 before anything is created.
 */
static int config_errors;

static void config_error(const char *msg)
{
	log_err("%s", msg);
	config_errors++;
}

static void report(int level, const char *msg, void *arg)
{
	(void)arg;
	if (level == LOG_ERR)
		config_error(msg);
	else
		logmsg((enum log_level)level, "%s", msg);
}

/* The checkpoint's (or migration source's) configuration as it arrived. */
static char *foreign_config;

/*
 * -r FILE / -R [ADDR:]PORT: the checkpoint's (or the incoming VM's)
 * configuration goes in first, so the other options (in any position)
 * override it; its host-side keys are held back (core/config_trust.c) until
 * the local options decide about them.  The -o migration.* options are
 * applied before -R listens: they say how (key, trust, address rules).
 * Returns the source or NULL; *incoming says which.
 */
static const char *restore_source(int argc, char **argv, bool *incoming)
{
	const char *file = NULL, *listen = NULL;
	char err[768];
	int c;
	/* glibc's getopt permutes the array it scans: scan a copy, so that
	 * parse_args() sees the arguments in their order (a trailing "-c"
	 * must not take the VM name as its value there). */
	char **copy = calloc((size_t)argc + 1, sizeof(*copy));
	if (!copy)
		config_fail("out of memory");
	memcpy(copy, argv, (size_t)argc * sizeof(*copy));
	opterr = 0;
	while ((c = getopt(argc, copy, HYVE_OPTSTRING)) != -1) {
		if (c == 'r')
			file = optarg;
		else if (c == 'R')
			listen = optarg;
		else if (c == 'o' && strncmp(optarg, "migration.", 10) == 0 &&
		         config_set_assignment(optarg, err, sizeof(err)))
			config_fail(err);
	}
	free(copy);   /* optarg points into the strings, not the array */
	optind = 0;   /* glibc: rescan from the start */
	if (file && listen)
		config_fail("-r and -R exclude each other");
	*incoming = listen != NULL;
	if (file && checkpoint_open(file, err, sizeof(err)))
		config_fail(err);
	if (listen && migration_accept(listen, err, sizeof(err)))
		config_fail(err);
	if (file || listen) {
		size_t len;
		/* Its values were expanded and made absolute where it was written. */
		foreign_config = config_to_string(&len);
		/* bhyve's restore recipe gives the original -s options again. */
		pci_note_restored_slots();
		char from[300];
		snprintf(from, sizeof(from), listen ? "the migration source's configuration" : "checkpoint %s", file);
		if (config_hold_host_keys(from, err, sizeof(err))) {
			if (listen)
				migration_refuse(err);
			config_fail(err);
		}
	}
	return file ? file : listen;
}

/* -X VALUE that is one key; a value the tree refuses (a line break, too long) is an error. */
static void flag_value(int flag, const char *key, const char *value, char *err, size_t errlen)
{
	char why[512];
	size_t n = strlen(key) + strlen(value) + 2;
	char *assign = malloc(n);
	if (!assign) {
		snprintf(err, errlen, "-%c: out of memory", flag);
		return;
	}
	snprintf(assign, n, "%s=%s", key, value);
	if (config_set_assignment(assign, why, sizeof(why)))
		snprintf(err, errlen, "-%c: %s", flag, why);
	free(assign);
}

static void parse_args(int argc, char **argv)
{
	char err[768];
	int c;
	opterr = 0;   /* our own one-line messages */
	while ((c = getopt(argc, argv, HYVE_OPTSTRING)) != -1) {
		err[0] = '\0';
		switch (c) {
		case 'r': case 'R': break;   /* handled by restore_source() */
		case 'a': set_config_value("x86.x2apic", "false"); break;
		case 'A': set_config_value("acpi_tables", "true"); break;
		case 'C': set_config_value("memory.guest_in_core", "true"); break;
		case 'D': set_config_value("destroy_on_poweroff", "true"); break;
		case 'e': set_config_value("x86.strictio", "true"); break;
		case 'H': set_config_value("x86.vmexit_on_hlt", "true"); break;
		case 'P': set_config_value("x86.vmexit_on_pause", "true"); break;
		case 'S': set_config_value("memory.wired", "true"); break;
		case 'u': set_config_value("rtc.use_localtime", "false"); break;
		case 'W': set_config_value("virtio_msix", "false"); break;
		case 'w': set_config_value("x86.strictmsr", "false"); break;
		case 'x': set_config_value("x86.x2apic", "true"); break;
		case 'Y': set_config_value("x86.mptable", "false"); break;
		case 'K': flag_value(c, "keyboard.layout", optarg, err, sizeof(err)); break;
		case 'U': flag_value(c, "uuid", optarg, err, sizeof(err)); break;
		case 'm': flag_value(c, "memory.size", optarg, err, sizeof(err)); break;
		case 'c': parse_cpus(optarg, err, sizeof(err)); break;
		case 'l': parse_lpc(optarg, err, sizeof(err)); break;
		case 'p': compat_add_pin(optarg, err, sizeof(err)); break;
		case 'f': compat_add_fwcfg(optarg, err, sizeof(err)); break;
		case 'k': config_load_file(optarg, err, sizeof(err)); break;
		case 'G': gdb_parse_option(optarg, err, sizeof(err)); break;
		case 'n':
			snprintf(err, sizeof(err), "bhyve option -n is not supported by hyve (no guest NUMA domains)");
			break;
		case 's':
			if (strcmp(optarg, "help") == 0) {
				pci_print_models();
				exit(0);
			}
			pci_parse_slot(optarg, err, sizeof(err));
			break;
		case 'o':
			if (strcmp(optarg, "help") == 0) {
				printf("Configuration keys (-o key=value, -k file):\n");
				config_help(stdout);
				exit(0);
			}
			config_set_assignment(optarg, err, sizeof(err));
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			snprintf(err, sizeof(err), "option -%c needs an argument (hyve -h)", optopt);
			break;
		default:
			snprintf(err, sizeof(err), "unknown option -%c (hyve -h lists the options)", optopt);
			break;
		}
		if (err[0])
			config_error(err);
	}
	if (optind < argc)
		set_config_value("name", argv[optind++]);
	if (optind < argc) {
		snprintf(err, sizeof(err), "unexpected argument '%s'", argv[optind]);
		config_error(err);
	}
}

/* A number from a key, or def if unset or malformed (config_validate_all reports that). */
static uint64_t cfg_uint(const char *key, uint64_t def)
{
	const char *v = get_config_value(key);
	uint64_t u;
	return v && config_parse_uint(v, &u) == 0 ? u : def;
}

static void memsize_text(uint64_t b, char *buf, size_t len)
{
	if (b % (1ULL << 30) == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(b >> 30));
	else
		snprintf(buf, len, "%lluM", (unsigned long long)(b >> 20));
}

/* Has this process CAP_IPC_LOCK (mlock beyond RLIMIT_MEMLOCK)? */
static bool can_lock_any(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long long eff = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	if (f)
		fclose(f);
	return eff & (1ULL << 14);   /* CAP_IPC_LOCK */
}

/*
 * The whole configuration, before anything is created (and before
 * config.dump prints it): every key, then the checks that span several.
 * All problems are reported; any error exits with status 4.
 */
static void check_config(struct hyve_vm *vm, uint64_t *memsize, bool restoring, bool dumping)
{
	char err[512];
	log_level_max = (int)cfg_uint("log.level", LOG_INFO);
	config_errors += config_validate_all(report, NULL);
	config_errors += pci_check_config(report, NULL);
	if (!get_config_value("name"))
		config_error("no VM name given (hyve [options] vmname)");
	uint64_t limit = cfg_uint("maxcpus", DEFAULT_VCPU_LIMIT);
	if (limit > HYVE_MAX_VCPUS)
		limit = HYVE_MAX_VCPUS;
	/* As bhyve: a topology without cpus= gives sockets*cores*threads vCPUs. */
	uint64_t s = cfg_uint("sockets", 1), co = cfg_uint("cores", 1), t = cfg_uint("threads", 1);
	bool topology = get_config_value("sockets") || get_config_value("cores") || get_config_value("threads");
	uint64_t ncpus = cfg_uint("cpus", topology ? s * co * t : 1);
	if (ncpus < 1 || ncpus > limit) {
		snprintf(err, sizeof(err), "config: cpus: %llu vCPUs not in 1..%llu", (unsigned long long)ncpus,
		         (unsigned long long)limit);
		config_error(err);
		ncpus = 1;
	} else if (topology && s * co * t != ncpus) {
		snprintf(err, sizeof(err), "config: cpus: sockets*cores*threads (%llu) does not match cpus (%llu)",
		         (unsigned long long)(s * co * t), (unsigned long long)ncpus);
		config_error(err);
	}
	vm->ncpus = (int)ncpus;
	config_errors += compat_check(vm->ncpus, report, NULL);
	const char *ms = get_config_value("memory.size");
	*memsize = DEFAULT_MEMSIZE;
	if (ms && config_parse_memsize(ms, memsize))
		*memsize = DEFAULT_MEMSIZE;   /* reported by the key check */
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t host = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
	if (host && *memsize > host) {
		char want[32], have[32];
		memsize_text(*memsize, want, sizeof(want));
		memsize_text(host, have, sizeof(have));
		log_warn("config: memory.size: %s is more than this host's RAM (%s); the guest can be killed when "
		         "it uses it", want, have);
	}
	for (int i = 1; i <= 4; i++)
		if (get_config_valuef("lpc.com%d.path", i) && !lpc_present()) {
			snprintf(err, sizeof(err), "config: lpc.com%d.path: needs an lpc device (-s 31,lpc)", i);
			config_error(err);
		}
	char rom_err[400];
	if (bootrom_check(rom_err, sizeof(rom_err))) {
		snprintf(err, sizeof(err), "config: %s", rom_err);
		config_error(err);
	}
	if (!restoring && bootrom_configured() && get_config_value("boot.kernel") && fwcfg_linux_check(rom_err, sizeof(rom_err))) {
		snprintf(err, sizeof(err), "config: %s", rom_err);
		config_error(err);
	}
	if (!restoring && !dumping && !get_config_value("boot.kernel") && !bootrom_configured())
		config_error("config: boot.kernel: no kernel given (-o boot.kernel=PATH, or a boot ROM: -l bootrom,ROM)");
	/* -S: say now, not after the guest was built, that mlock will be refused. */
	struct rlimit ml;
	if (!dumping && get_config_bool_default("memory.wired", false) && getrlimit(RLIMIT_MEMLOCK, &ml) == 0 &&
	    ml.rlim_cur != RLIM_INFINITY && ml.rlim_cur < *memsize && !can_lock_any()) {
		char want[32];
		memsize_text(*memsize, want, sizeof(want));
		snprintf(err, sizeof(err),
		         "config: memory.wired (-S): cannot lock %s of guest RAM: RLIMIT_MEMLOCK is %llu KiB (raise "
		         "it with ulimit -l, or run hyve with CAP_IPC_LOCK)", want, (unsigned long long)ml.rlim_cur >> 10);
		config_error(err);
	}
	if (config_errors)
		exit(HYVE_EXIT_ERROR);
}

static void decide_emulation(struct hyve_vm *vm)
{
	const char *v = get_config_value("vmm.emulating");
	bool detected = vm_host_info(vm->ctx)->emulating;
	bool b;
	if (v && strcmp(v, "auto") != 0 && config_parse_bool(v, &b) == 0)
		vm->emulating = b;
	else
		vm->emulating = detected;
	if (vm->emulating)
		log_info("host KVM emulates guest kernel code (PVM%s): completing INT3/INT n/INTO/FWAIT/POPCNT/CLAC/STAC "
		         "in userspace", detected ? ", detected" : ", forced");
	struct emulator_probe probe;
	if (vm->emulating && get_config_bool_default("vmm.probe_report", false) && vmm_probe_emulator(&probe) == 0) {
		/* What this host's emulator does with each probed instruction at CPL0. */
		char lists[3][256] = { "", "", "" };
		static const char *const what[3] = { "runs itself", "hands to hyve", "raises an exception for itself" };
		for (int i = 0; i < probe.count; i++) {
			int k = !probe.rejected[i] ? 0 : probe.faulted[i] ? 2 : 1;
			snprintf(lists[k] + strlen(lists[k]), sizeof(lists[k]) - strlen(lists[k]), "%s%s", lists[k][0] ? " " : "",
			         probe.names[i]);
		}
		for (int k = 0; k < 3; k++)
			log_info("vmm.probe_report: the host's emulator %s: %s", what[k], lists[k][0] ? lists[k] : "-");
	}
}

/* Linux: the user's command line plus, on emulating hosts, the adaptations. */
static char *linux_cmdline(struct hyve_vm *vm, const char *user)
{
	char adapt[1024] = "";
	if (vm->emulating && get_config_bool_default("boot.linux_adapt", true)) {
		struct emulator_probe probe;
		if (vmm_probe_emulator(&probe) == 0) {
			char rejected[256] = "";
			for (int i = 0; i < probe.count; i++)
				if (probe.rejected[i])
					snprintf(rejected + strlen(rejected), sizeof(rejected) - strlen(rejected), "%s%s",
					         rejected[0] ? "," : "", probe.names[i]);
			log_info("host emulator rejects at CPL0: %s", rejected[0] ? rejected : "nothing probed");
			linux_adapt_cmdline(&probe, vm->ncpus, vm_get_tsc_khz(vm->ctx), adapt, sizeof(adapt));
			log_info("appending Linux parameters for this host: %s", adapt);
		} else {
			log_warn("emulator probe failed; booting Linux without adapted parameters");
		}
	}
	size_t n = strlen(user) + strlen(adapt) + 2;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s%s%s", user, user[0] && adapt[0] ? " " : "", adapt);
	return s;
}

static int load_kernel(struct hyve_vm *vm, struct boot_entry *be)
{
	char err[512];
	struct boot_params_in in = {
		.kernel_path = get_config_value("boot.kernel"),
		.initrd_path = get_config_value("boot.initrd"),
		.cmdline = get_config_value("boot.cmdline") ? get_config_value("boot.cmdline") : "",
		.ncpus = vm->ncpus,
	};
	size_t len;
	uint8_t *img = boot_read_file(in.kernel_path, &len, err, sizeof(err));
	if (!img) {
		log_err("boot.kernel: %s", err);
		return -1;
	}
	int rc = -1;
	if (multiboot_probe(img, len)) {
		if (multiboot_load(vm->ctx, &in, be, err, sizeof(err)) == 0)
			rc = 0;
	} else if (linux_probe(img, len)) {
		struct linux_boot_opts opts = {
			.guest_decompress = get_config_bool_default("boot.guest_decompress", false),
			.acpi_rsdp = firmware_rsdp(),
		};
		char *cmdline = linux_cmdline(vm, in.cmdline);
		in.cmdline = cmdline ? cmdline : in.cmdline;
		if (linux_load_image(vm->ctx, img, len, &in, &opts, be, err, sizeof(err)) == 0)
			rc = 0;
		free(cmdline);
	} else {
		snprintf(err, sizeof(err), "%s: not a kernel hyve can boot (no Multiboot header, not a Linux bzImage or vmlinux)",
		         in.kernel_path);
	}
	free(img);
	if (rc)
		log_err("boot.kernel: %s", err);
	return rc;
}

/*
 * Signals (docs/cli.md, exit status): SIGTERM presses the ACPI power
 * button, as bhyve does, when the guest listens to it (it then shuts down
 * and powers off: status 1); a guest that does not listen, or a second
 * SIGTERM, stops the VM at once (status 1).  SIGINT and SIGHUP stop it at
 * once.  The handler only writes the signal to a pipe: the main loop acts.
 */
static int signal_pipe[2] = { -1, -1 };
static int sigterm_count;

static void on_signal(int sig)
{
	unsigned char b = (unsigned char)sig;
	int saved = errno;
	if (write(signal_pipe[1], &b, 1) != 1)
		vm_request_exit(HYVE_EXIT_POWEROFF);   /* pipe full: stop anyway */
	errno = saved;
}

static void on_signal_event(int fd, void *arg)
{
	unsigned char b;
	(void)arg;
	while (read(fd, &b, 1) == 1) {
		if (b != SIGTERM) {
			log_info("%s: stopping the VM", b == SIGINT ? "SIGINT" : "SIGHUP");
			vm_request_exit(HYVE_EXIT_POWEROFF);
		} else if (sigterm_count++ == 0 && acpi_pm_power_button()) {
			log_info("SIGTERM: pressed the ACPI power button (another SIGTERM stops the VM at once)");
		} else {
			log_info(sigterm_count > 1 ? "SIGTERM again: stopping the VM"
			                           : "SIGTERM: the guest does not listen to the ACPI power button; stopping the VM");
			vm_request_exit(HYVE_EXIT_POWEROFF);
		}
	}
}

/* Until the VM runs (an incoming migration may wait long): these signals end hyve with status 1. */
static void on_early_signal(int sig)
{
	(void)sig;
	_exit(HYVE_EXIT_POWEROFF);
}

int main(int argc, char **argv)
{
	struct hyve_vm *vm = &the_vm;
	char err[512];
	uint64_t memsize;
	struct boot_entry be;

	/* Every virtqueue, irqfd, disk and 9p fid holds a descriptor: use the
	 * hard limit the host grants rather than the 1024 soft default. */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}

	struct sigaction early;
	memset(&early, 0, sizeof(early));
	early.sa_handler = on_early_signal;
	sigaction(SIGTERM, &early, NULL);
	sigaction(SIGINT, &early, NULL);
	sigaction(SIGHUP, &early, NULL);

	bool incoming;
	const char *restore = restore_source(argc, argv, &incoming);
	parse_args(argc, argv);
	if (restore) {
		const char *trust_key = incoming ? "migration.trust_source" : "snapshot.trust_config";
		bool b, trusted = config_parse_bool(get_config_value(trust_key) ? get_config_value(trust_key) : "false", &b) == 0 && b;
		if (config_release_host_keys(trusted, trust_key, err, sizeof(err))) {
			if (incoming) {
				migration_refuse(err);
				config_fail(err);
			}
			config_error(err);
		}
	}
	/* bhyve_config(5)'s %(KEY) references, then paths the checkpoint can keep. */
	config_errors += config_expand_all(foreign_config, report, NULL);
	compat_absolute_paths(foreign_config);
	if (!restore) {
		pci_add_default_devices();
		bootrom_add_chipset_devices();
	}
	bool b, dump = config_parse_bool(get_config_value("config.dump") ? get_config_value("config.dump") : "false",
	                                 &b) == 0 && b;
	check_config(vm, &memsize, restore != NULL, dump);
	if (dump) {
		config_dump(stdout);
		return 0;
	}
	inout_set_strict(get_config_bool_default("x86.strictio", false));
	if (gdb_listen(err, sizeof(err)))
		config_fail(err);

	vm->ctx = vm_create(get_config_value("name"), err, sizeof(err));
	if (!vm->ctx)
		fatal("cannot create VM: %s", err);
	decide_emulation(vm);
	if (vm_setup_memory(vm->ctx, memsize, err, sizeof(err)))
		fatal("%s", err);
	if (vm_set_memory_policy(vm->ctx, get_config_bool_default("memory.wired", false),
	                         get_config_bool_default("memory.guest_in_core", false), err, sizeof(err)))
		fatal("%s", err);
	if (vm_create_irqchip(vm->ctx))
		fatal("cannot create the in-kernel irqchip: %s", strerror(errno));
	if (vm_create_pit(vm->ctx))
		fatal("cannot create the in-kernel PIT: %s", strerror(errno));
	if (mevent_init())
		fatal("cannot start the event loop: %s", strerror(errno));
	firmware_set_ncpus(vm->ncpus);
	if (!restore && bootrom_configured() && get_config_value("boot.kernel")) {
		/* The firmware loads the kernel (fw_cfg): same parameters as a direct boot. */
		const char *user_cmdline = get_config_value("boot.cmdline");
		char *cmdline = linux_cmdline(vm, user_cmdline ? user_cmdline : "");
		fwcfg_linux_set_cmdline(cmdline);
		free(cmdline);
	}
	if (init_run_all(vm->ctx))
		return HYVE_EXIT_ERROR;
	migration_register_commands();
	control_vcpu_register_commands();
	if (restore) {
		if (vcpus_create(vm, NULL))
			return HYVE_EXIT_ERROR;
		/* The control socket first: an incoming VM must not be confirmed and then fail here. */
		if (incoming && control_start(vm)) {
			migration_refuse("the destination cannot set up its control socket (see its log; control.socket sets it)");
			return HYVE_EXIT_ERROR;
		}
		if (incoming ? migration_receive(vm, err, sizeof(err)) : checkpoint_restore(vm, err, sizeof(err))) {
			log_err("%s %s: %s", incoming ? "incoming migration on" : "restore", restore, err);
			return HYVE_EXIT_ERROR;
		}
		/* Devices look at rings whose kicks happened in the saving process. */
		vmstate_resume();
	} else {
		/* Under a boot ROM the vCPUs start in KVM's reset state, at the reset vector. */
		bool rom = bootrom_configured();
		if (!rom && load_kernel(vm, &be))
			return HYVE_EXIT_ERROR;
		if (vcpus_create(vm, rom ? NULL : &be))
			return HYVE_EXIT_ERROR;
	}
	if (!incoming && control_start(vm))
		return HYVE_EXIT_ERROR;
	atexit(control_stop);

	struct sigaction sa;
	if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) || !mevent_add(signal_pipe[0], EVF_READ, on_signal_event, NULL))
		fatal("cannot set up signal handling: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Set-up is over: what a compromised device model could still do to
	 * the host is bounded from here on (core/sandbox.c).  The migration
	 * key is read now: a bad key file is an error at start, not at the
	 * first migration, and security.user may not be able to read it. */
	const char *user = get_config_value("security.user");
	if (mig_tls_setup(get_config_value("migration.psk_file"), err, sizeof(err))) {
		log_err("%s", err);
		return HYVE_EXIT_ERROR;
	}
	/* Landlock's paths are opened as root, the user's name is looked up
	 * before Landlock hides /etc/passwd: prepare, drop, restrict. */
	const char *profile = get_config_value("debug.profile");
	if (profile)
		sandbox_allow_parent(profile, true);   /* written at exit */
	if (sandbox_landlock_prepare(get_config_bool_default("security.landlock", false),
	                             get_config_value("security.landlock_rw"), get_config_value("security.landlock_ro"), err,
	                             sizeof(err)) ||
	    (user && sandbox_drop_user(user, err, sizeof(err))) || sandbox_landlock_enter(err, sizeof(err))) {
		log_err("%s", err);
		return HYVE_EXIT_ERROR;
	}
	sandbox_limits(get_config_bool_default("memory.guest_in_core", false));
	if (sandbox_enter(get_config_value("security.seccomp"), err, sizeof(err))) {
		log_err("%s", err);
		return HYVE_EXIT_ERROR;
	}
	/* Not dumpable: other processes of this user cannot ptrace hyve or read
	 * its memory (the guest's) through /proc; -C asks for core dumps. */
	if (!get_config_bool_default("memory.guest_in_core", false))
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (gdb_start(vm))
		return HYVE_EXIT_ERROR;
	if (vcpus_start(vm) || vcpus_watch_halt(vm))
		return HYVE_EXIT_ERROR;
	if (profile && vcpus_profile_start(vm, get_config_uint_default("debug.profile_ms", 10)))
		return HYVE_EXIT_ERROR;
	int status = mevent_dispatch();
	vcpus_join(vm);
	gdb_stop();
	if (profile)
		vcpus_profile_write(profile);
	mevent_fini();
	fflush(stdout);
	return status;
}
