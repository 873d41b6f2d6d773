/*
 * hyvectl: control a running hyve VM through its control socket, with
 * bhyvectl's option syntax:
 *
 *   hyvectl --vm=NAME --checkpoint=FILE     save state, keep running
 *   hyvectl --vm=NAME --suspend=FILE        save state, then the VM exits
 *   hyvectl --vm=NAME --pause | --resume
 *   hyvectl --vm=NAME --wakeup              wake a guest suspended to RAM (ACPI S3)
 *   hyvectl --vm=NAME --destroy
 *   hyvectl --vm=NAME --get-stats
 *   hyvectl --vm=NAME --migrate=HOST:PORT | --migrate-live=HOST:PORT
 *   hyvectl --vm=NAME --migrate-status
 *   hyvectl --vm=NAME [--cpu=N] --get-rip --get-rax ... | --get-all
 *   hyvectl --vm=NAME [--cpu=N] --set-rax=VALUE
 *   hyvectl --vm=NAME [--cpu=N] --inject-nmi
 *   hyvectl --vm=NAME --force-reset | --force-poweroff
 *   hyvectl --vm=NAME --get-active-cpus | --get-lowmem | --get-highmem
 *   hyvectl --list                          running VMs in the default socket directory
 *
 * Registers print as bhyvectl prints them ("rip[0]\t\t0x...");
 * register names are GDB's (rflags for eflags; hyvectl --get-all lists them).
 *
 * --socket=PATH talks to a VM started with -o control.socket=PATH.
 * --json prints the answer as one JSON object (docs/cli.md): {"ok": true,
 * "command": C, "result": {KEY: VALUE...}} for "key value" answers (numbers
 * as numbers), "message" for checkpoint and migration summaries, or
 * {"ok": false, "error": TEXT}; the exit status is the same.
 * Exit status: 0 done, 1 the VM refused or failed (its message is printed),
 * 2 usage error, 3 the VM cannot be reached (or its default socket
 * directory is not private to this user: see control_dir_problem).
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../core/control.h"

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

static void usage(FILE *f)
{
	fprintf(f, "usage: hyvectl --vm=NAME [--socket=PATH] COMMAND\n"
	           "commands: --checkpoint=FILE --suspend=FILE --pause --resume --wakeup --destroy --get-stats\n"
	           "          --migrate=HOST:PORT --migrate-live=HOST:PORT --migrate-status\n"
	           "          [--cpu=N] --get-REG... | --get-all | --set-REG=VALUE   (REG: rip, rax, cr3, ...)\n"
	           "          [--cpu=N] --inject-nmi  --force-reset  --force-poweroff\n"
	           "          --get-active-cpus  --get-lowmem  --get-highmem\n"
	           "       hyvectl --list\n"
	           "exit status: 0 done, 1 refused/failed, 2 usage, 3 VM not reachable\n");
}

/* File arguments are resolved here: the VM runs in another directory. */
static char *absolute_path(const char *p)
{
	if (p[0] == '/')
		return strdup(p);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	size_t n = strlen(cwd) + strlen(p) + 2;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s/%s", cwd, p);
	return s;
}

/* ---- --json ---- */

static bool json;

static void json_string(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* A decimal number stays a JSON number; anything else (hex included) is a string. */
static void json_value(FILE *f, const char *v)
{
	size_t n = strlen(v), i = v[0] == '-' ? 1 : 0, digits = 0, dots = 0;
	for (; i < n; i++) {
		if (v[i] >= '0' && v[i] <= '9')
			digits++;
		else if (v[i] == '.' && digits && dots++ == 0)
			continue;
		else
			break;
	}
	if (i == n && digits && v[n - 1] != '.' && !(v[0] == '0' && n > 1 && v[1] != '.') &&
	    !(v[0] == '-' && v[1] == '0' && n > 2 && v[2] != '.'))
		fputs(v, f);
	else
		json_string(f, v, n);
}

static void json_error(const char *msg)
{
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		n--;
	fputs("{\"ok\": false, \"error\": ", stdout);
	json_string(stdout, msg, n);
	fputs("}\n", stdout);
}

/* The answer lines of a successful command as one object. */
static void json_result(const char *cmd, char **lines, int nlines)
{
	bool message = !strcmp(cmd, "checkpoint") || !strcmp(cmd, "suspend") || !strncmp(cmd, "migrate", 7) ||
	               !strcmp(cmd, "migrate-live");
	printf("{\"ok\": true, \"command\": ");
	json_string(stdout, cmd, strlen(cmd));
	if (message && nlines) {
		printf(", \"message\": ");
		json_string(stdout, lines[0], strcspn(lines[0], "\n"));
	} else {
		printf(", \"result\": {");
		for (int i = 0; i < nlines; i++) {
			char *l = lines[i];
			l[strcspn(l, "\n")] = '\0';
			size_t k = strcspn(l, " ");
			printf("%s", i ? ", " : "");
			json_string(stdout, l, k);
			fputs(": ", stdout);
			if (l[k])
				json_value(stdout, l + k + 1);
			else
				fputs("null", stdout);
		}
		printf("}");
	}
	printf("}\n");
}

/*
 * On a terminal, while a migration runs: one progress line on stderr,
 * redrawn from migrate-status every half second (round, MiB sent, rate).
 */
static void show_progress(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	char req[64];
	int n = snprintf(req, sizeof(req), "HYVECTL %d migrate-status\n", CONTROL_PROTO_VERSION);
	FILE *f = NULL;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 && send(fd, req, (size_t)n, MSG_NOSIGNAL) == n)
		f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return;
	}
	char line[512], state[32] = "?";
	long round = 0;
	unsigned long long bytes = 0;
	double rate = 0;
	while (fgets(line, sizeof(line), f) && strncmp(line, "OK", 2) && strncmp(line, "ERR", 3)) {
		sscanf(line, "state %31s", state);
		sscanf(line, "round %ld", &round);
		sscanf(line, "bytes_sent %llu", &bytes);
		sscanf(line, "bandwidth_mib_per_s %lf", &rate);
	}
	fclose(f);
	fprintf(stderr, "\rhyvectl: %s, round %ld, %.1f MiB sent, %.1f MiB/s   ", state, round,
	        (double)bytes / (1 << 20), rate);
}

/* --get-X options that are not registers. */
static bool not_a_register(const char *x)
{
	return !strcmp(x, "stats") || !strcmp(x, "active-cpus") || !strcmp(x, "lowmem") || !strcmp(x, "highmem");
}

/* --list: the VMs whose sockets answer in the default directory. */
static int list_vms(void)
{
	char dir[108];
	control_default_dir(dir, sizeof(dir));
	DIR *d = opendir(dir);
	int nvms = 0;
	if (!d) {   /* no directory: no VM ever ran */
		if (json)
			printf("{\"ok\": true, \"command\": \"list\", \"vms\": []}\n");
		return EXIT_OK;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n < 6 || strcmp(e->d_name + n - 5, ".sock") != 0)
			continue;
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, e->d_name) >= (int)sizeof(sa.sun_path))
			continue;
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			if (json) {
				printf("%s", nvms++ ? ", " : "{\"ok\": true, \"command\": \"list\", \"vms\": [");
				json_string(stdout, e->d_name, n - 5);
			} else {
				printf("%.*s\n", (int)(n - 5), e->d_name);
			}
		}
		if (fd >= 0)
			close(fd);
	}
	closedir(d);
	if (json)
		printf("%s]}\n", nvms ? "" : "{\"ok\": true, \"command\": \"list\", \"vms\": [");
	return EXIT_OK;
}

/*
 * bhyvectl's register options (--get-rip, --get-all, --set-rax=V, --cpu=N)
 * are one option per register: take them out of argv before getopt.
 * Returns 0, or EXIT_USAGE with a message printed.
 */
static int take_register_options(int *argc, char **argv, char *regs, size_t rlen, const char **set, const char **cpu)
{
	int out = 1;
	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--cpu=", 6) == 0) {
			*cpu = a + 6;
		} else if (strcmp(a, "--get-all") == 0 || (strncmp(a, "--get-", 6) == 0 && !strchr(a, '=') &&
		                                             !not_a_register(a + 6))) {
			const char *name = strcmp(a, "--get-all") == 0 ? "all" : a + 6;
			size_t used = strlen(regs);
			if (used + strlen(name) + 2 > rlen || (used && (!strcmp(name, "all") || !strncmp(regs, "all", 3)))) {
				fprintf(stderr, "hyvectl: too many registers asked for (or --get-all with others)\n");
				return EXIT_USAGE;
			}
			snprintf(regs + used, rlen - used, "%s%s", used ? "," : "", name);
		} else if (strncmp(a, "--set-", 6) == 0 && strchr(a, '=')) {
			if (*set) {
				fprintf(stderr, "hyvectl: one --set-REG=VALUE at a time\n");
				return EXIT_USAGE;
			}
			*set = a + 6;
		} else {
			argv[out++] = argv[i];
		}
	}
	*argc = out;
	argv[out] = NULL;
	return 0;
}

/* The request's argument; freed at exit whichever way main returns. */
static char *arg;

static void free_arg(void)
{
	free(arg);
	arg = NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vm", required_argument, NULL, 'v' },
		{ "socket", required_argument, NULL, 'S' },
		{ "checkpoint", required_argument, NULL, 'c' },
		{ "suspend", required_argument, NULL, 's' },
		{ "pause", no_argument, NULL, 'p' },
		{ "resume", no_argument, NULL, 'r' },
		{ "wakeup", no_argument, NULL, 'w' },
		{ "destroy", no_argument, NULL, 'd' },
		{ "get-stats", no_argument, NULL, 'g' },
		{ "migrate", required_argument, NULL, 'm' },
		{ "migrate-live", required_argument, NULL, 'l' },
		{ "migrate-status", no_argument, NULL, 'M' },
		{ "inject-nmi", no_argument, NULL, 'N' },
		{ "force-reset", no_argument, NULL, 'R' },
		{ "force-poweroff", no_argument, NULL, 'P' },
		{ "get-active-cpus", no_argument, NULL, 'A' },
		{ "get-lowmem", no_argument, NULL, 'L' },
		{ "get-highmem", no_argument, NULL, 'H' },
		{ "list", no_argument, NULL, 'x' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *vm = NULL, *sock = NULL, *cmd = NULL, *cpu = NULL, *setreg = NULL;
	char regs[1024] = "";
	int c;
	atexit(free_arg);   /* every early return of a usage error included */
	if (take_register_options(&argc, argv, regs, sizeof(regs), &setreg, &cpu))
		return EXIT_USAGE;
	if (cpu && (!*cpu || strspn(cpu, "0123456789") != strlen(cpu) || strlen(cpu) > 4)) {
		fprintf(stderr, "hyvectl: --cpu=%s: expected a vCPU number\n", cpu);
		return EXIT_USAGE;
	}
	if (regs[0] || setreg) {
		size_t n = strlen(regs) + (setreg ? strlen(setreg) : 0) + 16;
		arg = malloc(n);
		if (!arg)
			return EXIT_USAGE;
		snprintf(arg, n, "%s %s", cpu ? cpu : "0", regs[0] ? regs : setreg);
		cmd = regs[0] && setreg ? "" : regs[0] ? "get-reg" : "set-reg";
		if (!cmd[0]) {
			fprintf(stderr, "hyvectl: one command at a time (--get-REG and --set-REG)\n");
			return EXIT_USAGE;
		}
	}
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		const char *this = NULL;
		switch (c) {
		case 'v': vm = optarg; continue;
		case 'S': sock = optarg; continue;
		case 'j': json = true; continue;
		case 'c': this = "checkpoint"; break;
		case 's': this = "suspend"; break;
		case 'p': this = "pause"; break;
		case 'r': this = "resume"; break;
		case 'w': this = "wakeup"; break;
		case 'd': this = "destroy"; break;
		case 'g': this = "stats"; break;
		case 'm': this = "migrate"; break;
		case 'l': this = "migrate-live"; break;
		case 'M': this = "migrate-status"; break;
		case 'N': this = "inject-nmi"; break;
		case 'R': this = "force-reset"; break;
		case 'P': this = "force-poweroff"; break;
		case 'A': this = "active-cpus"; break;
		case 'L': this = "lowmem"; break;
		case 'H': this = "highmem"; break;
		case 'x': this = "list"; break;
		case 'h': usage(stdout); return EXIT_OK;
		default: usage(stderr); return EXIT_USAGE;
		}
		if (cmd) {
			fprintf(stderr, "hyvectl: one command at a time (--%s and --%s)\n", cmd, this);
			return EXIT_USAGE;
		}
		cmd = this;
		free(arg);
		arg = NULL;
		if (c == 'c' || c == 's') {
			arg = absolute_path(optarg);
			if (!arg) {
				fprintf(stderr, "hyvectl: %s: %s\n", optarg, strerror(errno));
				return EXIT_USAGE;
			}
		} else if (optarg) {
			arg = strdup(optarg);
		}
	}
	if (cmd && strcmp(cmd, "list") == 0 && optind == argc)
		return list_vms();
	/* --get-lowmem/--get-highmem are one request (memory); --inject-nmi names its vCPU. */
	const char *only = NULL;
	if (cmd && (!strcmp(cmd, "lowmem") || !strcmp(cmd, "highmem"))) {
		only = cmd;
		cmd = "memory";
	}
	if (cmd && !strcmp(cmd, "inject-nmi"))
		arg = strdup(cpu ? cpu : "0");
	if (optind < argc || !cmd || (!vm && !sock)) {
		fprintf(stderr, "hyvectl: %s\n", optind < argc ? "unexpected argument" : !cmd ? "no command given" : "--vm=NAME is required");
		usage(stderr);
		return EXIT_USAGE;
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[108];
	control_default_dir(dir, sizeof(dir));
	int n = sock ? snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock)
	             : snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.sock", dir, vm);
	if (n >= (int)sizeof(sa.sun_path) || (vm && strchr(vm, '/'))) {
		fprintf(stderr, "hyvectl: bad VM name or socket path\n");
		return EXIT_USAGE;
	}
	/* In a directory others can write to, the socket could be anyone's: do not hand it a request. */
	char why[160];
	if (!sock && control_dir_problem(dir, why, sizeof(why))) {
		fprintf(stderr, "hyvectl: control socket directory %s %s; refusing to use it (or give --socket=PATH)\n",
		        dir, why);
		return EXIT_UNREACHABLE;
	}
	char req[CONTROL_MAX_REQUEST + 1];
	n = snprintf(req, sizeof(req), "HYVECTL %d %s%s%s\n", CONTROL_PROTO_VERSION, cmd, arg ? " " : "", arg ? arg : "");
	if (n < 0 || n > CONTROL_MAX_REQUEST) {
		size_t alen = arg ? strlen(arg) : 0;
		fprintf(stderr, "hyvectl: --%s argument too long (%zu bytes; a request line takes at most %zu)\n", cmd, alen,
		        alen - ((size_t)n - CONTROL_MAX_REQUEST));
		return EXIT_USAGE;
	}
	free_arg();
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		char msg[300];
		snprintf(msg, sizeof(msg), "VM %s is not running or not reachable (%s: %s)", vm ? vm : "", sa.sun_path,
		         strerror(errno));
		if (json)
			json_error(msg);
		fprintf(stderr, "hyvectl: %s\n", msg);
		return EXIT_UNREACHABLE;
	}
	/* Read the reply even if sending failed: a VM that refuses a connection ("busy") says why first. */
	int send_errno = send(fd, req, (size_t)n, MSG_NOSIGNAL) == n ? 0 : errno;
	/* A migration answers when it is over: meanwhile, on a terminal, its progress. */
	if (!json && !send_errno && isatty(STDERR_FILENO) && !strncmp(cmd, "migrate", 7) && strcmp(cmd, "migrate-status")) {
		struct pollfd pf = { fd, POLLIN, 0 };
		bool shown = false;
		while (poll(&pf, 1, 500) == 0) {
			show_progress(&sa);
			shown = true;
		}
		if (shown)
			fputc('\n', stderr);
	}
	/* Print the reply; its last line says how it went. */
	bool regcmd = strcmp(cmd, "get-reg") == 0 || strcmp(cmd, "set-reg") == 0;
	FILE *f = fdopen(fd, "r");
	char line[2048], last[2048] = "";
	char *lines[256];
	int nlines = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "OK", 2) == 0 || strncmp(line, "ERR", 3) == 0) {
			snprintf(last, sizeof(last), "%s", line);
			break;
		}
		if (json) {
			if (nlines < (int)(sizeof(lines) / sizeof(lines[0])) && (lines[nlines] = strdup(line)))
				nlines++;
			continue;
		}
		char name[64], value[128];
		bool pair = sscanf(line, "%63s %127s", name, value) == 2;
		if (regcmd && pair)
			printf("%s[%s]\t\t%s\n", name, cpu ? cpu : "0", value);
		else if (only && pair && !strcmp(name, only))
			printf("%s\t\t%s\n", name, value);
		else if (!strcmp(cmd, "active-cpus") && pair)
			printf("active cpus:\t%s\n", value);
		else if (!only)
			fputs(line, stdout);
	}
	if (f)
		fclose(f);
	bool ok = strncmp(last, "OK", 2) == 0;
	if (ok && json)
		json_result(cmd, lines, nlines);
	for (int i = 0; i < nlines; i++)
		free(lines[i]);
	if (ok) {
		if (!json && strlen(last) > 3)
			fputs(last + 3, stdout);
		return EXIT_OK;
	}
	if (strncmp(last, "ERR ", 4) == 0) {
		if (json)
			json_error(last + 4);
		else
			fprintf(stderr, "hyvectl: %s", last + 4);
		return EXIT_REFUSED;
	}
	if (json)
		json_error(send_errno ? "cannot send the request" : "the VM closed the connection without an answer");
	if (send_errno)
		fprintf(stderr, "hyvectl: cannot send the request: %s\n", strerror(send_errno));
	else
		fprintf(stderr, "hyvectl: the VM closed the connection without an answer\n");
	return EXIT_UNREACHABLE;
}
