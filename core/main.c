/*
 * hyve: command line (bhyve(8)'s flags), configuration, and the start-up
 * sequence: config -> VM + memory + in-kernel chips -> devices by init
 * level -> kernel loader -> vCPU threads -> main event loop.
 */
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../boot/boot.h"
#include "../boot/firmware.h"
#include "../boot/linux.h"
#include "../boot/linux_adapt.h"
#include "../devices/pci_emul.h"
#include "../devices/pci_lpc.h"
#include "checkpoint.h"
#include "config.h"
#include "config_trust.h"
#include "control.h"
#include "migration.h"
#include "exitcode.h"
#include "init.h"
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
	        "Usage: hyve [-AHPSuwx] [-c [[cpus=]n][,sockets=n][,cores=n][,threads=n]]\n"
	        "            [-m size[KMGT]] [-s slot[:func],model[,conf]]... [-l com1,BACKEND]\n"
	        "            [-o key=value]... [-k config_file] vmname\n"
	        "       hyve -r checkpoint_file [-o key=value]... [vmname]\n"
	        "       hyve -R [addr:]port [-o key=value]... [vmname]\n"
	        "  -c  number of vCPUs (default 1)\n"
	        "  -m  guest memory size; a number without suffix is MiB (default 256M)\n"
	        "  -s  PCI slot: '-s help' lists device models\n"
	        "  -l  LPC device: comN,stdio | comN,file=PATH | comN,sock=PATH ('-l help')\n"
	        "  -o  set a configuration key ('-o help' lists keys; config.dump=true prints the tree)\n"
	        "  -k  read key=value lines from a file\n"
	        "  -r  restore a checkpoint (its configuration, overridable with -o)\n"
	        "  -R  receive a migrating VM on [addr:]port (configuration arrives with it)\n"
	        "  -A  generate ACPI tables (always on)   -H/-P  exit on HLT/PAUSE (accepted)\n"
	        "  -S  wire guest memory   -u  RTC keeps UTC   -w  ignore unimplemented MSRs\n"
	        "  -x  x2APIC mode   -h  this help\n"
	        "Exit status: 0 reboot, 1 poweroff, 2 halt, 3 triple fault, 4 error.\n");
}

static int check_memsize(const char *path, const char *value, char *err, size_t errlen)
{
	(void)path;
	uint64_t sz;
	if (config_parse_size(value, &sz, 1ULL << 20)) {
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

static const struct config_key core_keys[] = {
	{ "name", CFG_STRING, "VM name (the positional argument)", NULL },
	{ "cpus", CFG_UINT, "number of vCPUs (-c)", NULL },
	{ "sockets", CFG_UINT, "CPU topology: sockets", NULL },
	{ "cores", CFG_UINT, "CPU topology: cores per socket", NULL },
	{ "threads", CFG_UINT, "CPU topology: threads per core", NULL },
	{ "maxcpus", CFG_UINT, "upper bound for cpus (default 64, capped by KVM)", NULL },
	{ "memory.size", CFG_CUSTOM, "guest RAM (-m); plain numbers are MiB", check_memsize },
	{ "memory.wired", CFG_BOOL, "lock guest RAM in host memory (-S)", NULL },
	{ "cpu.features", CFG_CUSTOM, "CPUID edits: -name,+name (Linux flag names)", check_features },
	{ "boot.kernel", CFG_STRING, "kernel to boot: Multiboot ELF, Linux bzImage or vmlinux", NULL },
	{ "boot.linux_adapt", CFG_BOOL, "on emulating hosts, add Linux parameters that avoid what the host cannot run (default true)", NULL },
	{ "boot.guest_decompress", CFG_BOOL, "Linux bzImage: let the guest decompress itself (classic entry) instead of the host", NULL },
	{ "boot.initrd", CFG_STRING, "initrd / Multiboot module", NULL },
	{ "boot.cmdline", CFG_STRING, "kernel command line", NULL },
	{ "vmm.emulating", CFG_CUSTOM, "host KVM emulates guest kernel code: auto|true|false", check_emulating },
	{ "config.dump", CFG_BOOL, "print the configuration and exit", NULL },
	{ "log.level", CFG_UINT, "0 errors .. 3 debug (default 2)", NULL },
	{ "debug.profile", CFG_STRING, "sample vCPU RIPs; write 'count rip' lines to this file at exit", NULL },
	{ "debug.profile_ms", CFG_UINT, "sampling period in ms (default 10)", NULL },
	{ "acpi_tables", CFG_BOOL, "generate ACPI tables (-A; always on)", NULL },
	{ "x86.vmexit_on_hlt", CFG_BOOL, "-H (accepted; KVM handles HLT)", NULL },
	{ "x86.vmexit_on_pause", CFG_BOOL, "-P (accepted)", NULL },
	{ "x86.strictmsr", CFG_BOOL, "-w clears it (accepted)", NULL },
	{ "x86.x2apic", CFG_BOOL, "-x (accepted)", NULL },
	{ "rtc.use_localtime", CFG_BOOL, "RTC in local time (-u clears it)", NULL },
	{ "uuid", CFG_STRING, "SMBIOS UUID (-U)", NULL },
	{ "migration.streams", CFG_UINT, "TCP streams for live migration (1..8, default 1)", NULL },
	{ "migration.downtime_ms", CFG_UINT, "pre-copy stops when the rest fits in this downtime (default 300)", NULL },
	{ "migration.max_rounds", CFG_UINT, "pre-copy rounds before vCPUs are throttled (default 30)", NULL },
	{ "migration.verify", CFG_CUSTOM, "re-hash RAM at stop-and-copy and resend pages the dirty log missed: auto (emulating hosts), true, false", check_emulating },
	{ "migration.compress", CFG_CUSTOM, "page compression: none (default) or lz4", check_compress },
	{ "boot.paused", CFG_BOOL, "start with vCPUs paused until hyvectl --resume", NULL },
	{ "control.socket", CFG_STRING, "hyvectl control socket path (default /run/hyve/NAME.sock; none disables)", NULL },
	{ "migration.psk_file", CFG_STRING, "pre-shared key (hex) for TLS-authenticated, encrypted migration; give it to both ends", NULL },
	{ "migration.trust_source", CFG_BOOL, "-R: take host-side keys (disk paths, sockets, ...) from the source's configuration (default false)", NULL },
	{ "migration.insecure", CFG_BOOL, "-R: allow listening beyond loopback without migration.psk_file (unsafe)", NULL },
	{ "snapshot.trust_config", CFG_BOOL, "-r: take host-side keys (disk paths, sockets, ...) from the checkpoint (default false)", NULL },
	{ "snapshot.restore_memory", CFG_CUSTOM, "restore RAM lazily from the file (lazy, default) or read it all first (copy)", check_restore_mode },
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
		printf("LPC devices (-l): com1..com4 with backend stdio, file=PATH or sock=PATH\n");
		exit(0);
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

#define HYVE_OPTSTRING "AHPSuwxhc:m:s:l:o:k:U:r:R:"

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
	opterr = 0;
	while ((c = getopt(argc, argv, HYVE_OPTSTRING)) != -1) {
		if (c == 'r')
			file = optarg;
		else if (c == 'R')
			listen = optarg;
		else if (c == 'o' && strncmp(optarg, "migration.", 10) == 0 &&
		         config_set_assignment(optarg, err, sizeof(err)))
			config_fail(err);
	}
	opterr = 1;
	optind = 0;   /* glibc: rescan from the start */
	if (file && listen)
		config_fail("-r and -R exclude each other");
	*incoming = listen != NULL;
	if (file && checkpoint_open(file, err, sizeof(err)))
		config_fail(err);
	if (listen && migration_accept(listen, err, sizeof(err)))
		config_fail(err);
	if (file || listen) {
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

static void parse_args(int argc, char **argv)
{
	char err[512];
	int c;
	while ((c = getopt(argc, argv, HYVE_OPTSTRING)) != -1) {
		switch (c) {
		case 'r': case 'R': break;   /* handled by restore_source() */
		case 'A': set_config_value("acpi_tables", "true"); break;
		case 'H': set_config_value("x86.vmexit_on_hlt", "true"); break;
		case 'P': set_config_value("x86.vmexit_on_pause", "true"); break;
		case 'S': set_config_value("memory.wired", "true"); break;
		case 'u': set_config_value("rtc.use_localtime", "false"); break;
		case 'w': set_config_value("x86.strictmsr", "false"); break;
		case 'x': set_config_value("x86.x2apic", "true"); break;
		case 'U': set_config_value("uuid", optarg); break;
		case 'c':
			if (parse_cpus(optarg, err, sizeof(err)))
				config_fail(err);
			break;
		case 'm':
			set_config_value("memory.size", optarg);
			break;
		case 's':
			if (strcmp(optarg, "help") == 0) {
				pci_print_models();
				exit(0);
			}
			if (pci_parse_slot(optarg, err, sizeof(err)))
				config_fail(err);
			break;
		case 'l':
			if (parse_lpc(optarg, err, sizeof(err)))
				config_fail(err);
			break;
		case 'o':
			if (strcmp(optarg, "help") == 0) {
				printf("Configuration keys (-o key=value, -k file):\n");
				config_help(stdout);
				exit(0);
			}
			if (config_set_assignment(optarg, err, sizeof(err)))
				config_fail(err);
			break;
		case 'k':
			if (config_load_file(optarg, err, sizeof(err)))
				config_fail(err);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(HYVE_EXIT_ERROR);
		}
	}
	if (optind < argc)
		set_config_value("name", argv[optind++]);
	if (optind < argc) {
		snprintf(err, sizeof(err), "unexpected argument '%s'", argv[optind]);
		config_fail(err);
	}
}

/* Post-parse checks that span several keys. */
static void check_config(struct hyve_vm *vm, uint64_t *memsize, bool restoring)
{
	char err[512];
	if (config_validate(err, sizeof(err)))
		config_fail(err);
	if (!get_config_value("name"))
		config_fail("no VM name given (hyve [options] vmname)");
	uint64_t limit = get_config_uint_default("maxcpus", DEFAULT_VCPU_LIMIT);
	if (limit > HYVE_MAX_VCPUS)
		limit = HYVE_MAX_VCPUS;
	/* As bhyve: a topology without cpus= gives sockets*cores*threads vCPUs. */
	uint64_t s = get_config_uint_default("sockets", 1), co = get_config_uint_default("cores", 1),
	         t = get_config_uint_default("threads", 1);
	bool topology = get_config_value("sockets") || get_config_value("cores") || get_config_value("threads");
	uint64_t ncpus = get_config_uint_default("cpus", topology ? s * co * t : 1);
	if (ncpus < 1 || ncpus > limit) {
		snprintf(err, sizeof(err), "config: cpus: %llu vCPUs not in 1..%llu", (unsigned long long)ncpus,
		         (unsigned long long)limit);
		config_fail(err);
	}
	if (topology && s * co * t != ncpus) {
		snprintf(err, sizeof(err), "config: cpus: sockets*cores*threads (%llu) does not match cpus (%llu)",
		         (unsigned long long)(s * co * t), (unsigned long long)ncpus);
		config_fail(err);
	}
	vm->ncpus = (int)ncpus;
	const char *ms = get_config_value("memory.size");
	*memsize = DEFAULT_MEMSIZE;
	if (ms)
		config_parse_size(ms, memsize, 1ULL << 20);
	for (int i = 1; i <= 4; i++)
		if (get_config_valuef("lpc.com%d.path", i) && !lpc_present()) {
			snprintf(err, sizeof(err), "config: lpc.com%d.path: needs an lpc device (-s 31,lpc)", i);
			config_fail(err);
		}
	if (!restoring && !get_config_value("boot.kernel"))
		config_fail("config: boot.kernel: no kernel given (-o boot.kernel=PATH)");
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

static void on_signal(int sig)
{
	/* SIGTERM/SIGINT/SIGHUP: stop the VM like a poweroff request from the host. */
	(void)sig;
	vm_request_exit(HYVE_EXIT_POWEROFF);
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

	bool incoming;
	const char *restore = restore_source(argc, argv, &incoming);
	parse_args(argc, argv);
	if (restore) {
		const char *trust_key = incoming ? "migration.trust_source" : "snapshot.trust_config";
		if (config_release_host_keys(get_config_bool_default(trust_key, false), trust_key, err, sizeof(err))) {
			if (incoming)
				migration_refuse(err);
			config_fail(err);
		}
	}
	if (!restore)
		pci_add_default_devices();
	if (get_config_bool_default("config.dump", false)) {
		config_dump(stdout);
		return 0;
	}
	log_level_max = (int)get_config_uint_default("log.level", LOG_INFO);
	check_config(vm, &memsize, restore != NULL);

	vm->ctx = vm_create(get_config_value("name"), err, sizeof(err));
	if (!vm->ctx)
		fatal("cannot create VM: %s", err);
	decide_emulation(vm);
	if (vm_setup_memory(vm->ctx, memsize, err, sizeof(err)))
		fatal("%s", err);
	if (vm_create_irqchip(vm->ctx))
		fatal("cannot create the in-kernel irqchip: %s", strerror(errno));
	if (vm_create_pit(vm->ctx))
		fatal("cannot create the in-kernel PIT: %s", strerror(errno));
	if (mevent_init())
		fatal("cannot start the event loop: %s", strerror(errno));
	firmware_set_ncpus(vm->ncpus);
	if (init_run_all(vm->ctx))
		return HYVE_EXIT_ERROR;
	migration_register_commands();
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
		if (load_kernel(vm, &be))
			return HYVE_EXIT_ERROR;
		if (vcpus_create(vm, &be))
			return HYVE_EXIT_ERROR;
	}
	if (!incoming && control_start(vm))
		return HYVE_EXIT_ERROR;
	atexit(control_stop);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (vcpus_start(vm) || vcpus_watch_halt(vm))
		return HYVE_EXIT_ERROR;
	const char *profile = get_config_value("debug.profile");
	if (profile && vcpus_profile_start(vm, get_config_uint_default("debug.profile_ms", 10)))
		return HYVE_EXIT_ERROR;
	int status = mevent_dispatch();
	vcpus_join(vm);
	if (profile)
		vcpus_profile_write(profile);
	mevent_fini();
	fflush(stdout);
	return status;
}
