/*
 * The process sandbox, installed once set-up is done (every device open,
 * every thread that exists so far): no_new_privs and a seccomp filter on
 * all threads (TSYNC; threads created later inherit it).
 *
 * What the filter is: a deny-list of the system calls that turn a
 * compromised device model into a compromised host — running programs
 * (execve, fork: hyve never does either), debugging or writing other
 * processes, loading kernel code (modules, BPF, kexec), mounting and
 * namespace games, keyrings, raw port I/O, clock and identity changes, and
 * device nodes (mknod of a char/block device: the 9p server never makes
 * one). Everything else a VMM needs (KVM ioctls, I/O, sockets for
 * migration and the control socket, threads) stays allowed.
 *
 * Why not an allow-list per thread role yet: the allow-lists must be
 * derived from and verified on a machine with /dev/kvm (every exit path,
 * checkpoint, migration, 9p), and a wrong allow-list kills a working VM.
 * This deny-list cannot: nothing in hyve makes these calls.
 *
 * security.seccomp=kill (default): a forbidden call never runs; hyve logs
 * which one and exits with status 4.  =log: the kernel logs it and lets it
 * run (debugging; the default of sanitizer builds, below).  =off: no
 * filter (unsafe).
 */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exitcode.h"
#include "sandbox.h"

static const char *const denied[] = {
	/* other programs and processes */
	"execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
	"pidfd_getfd", "kcmp",
	/* kernel code */
	"init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
	/* mounts, namespaces, root */
	"mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "fsopen", "fsmount", "fsconfig",
	"move_mount", "open_tree", "mount_setattr",
	/* identity */
	"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
	"setgroups", "capset",
	/* host state */
	"reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"sethostname", "setdomainname", "syslog", "quotactl", "iopl", "ioperm", "personality",
	"open_by_handle_at", "name_to_handle_at", "keyctl", "add_key", "request_key", "perf_event_open",
	"lookup_dcookie", "userfaultfd",
	NULL,
};

static char trap_msg[160];
/* Numbers of the calls above (and clone, mknod, mknodat), resolved before
 * the filter goes in, for the SIGSYS handler's message. */
static struct {
	int nr;
	const char *name;
} names[96];
static int nnames;

static void remember(const char *name)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr != __NR_SCMP_ERROR && nnames < (int)(sizeof(names) / sizeof(names[0]))) {
		names[nnames].nr = nr;
		names[nnames].name = name;
		nnames++;
	}
}

/*
 * SIGSYS from a denied call (SCMP_ACT_TRAP): the call did not run.  Say
 * which one (only async-signal-safe calls here) and exit.
 */
static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	char num[16];
	int n = 0, v = si->si_syscall;
	char rev[16];
	do {
		rev[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n < (int)sizeof(rev));
	for (int i = 0; i < n; i++)
		num[i] = rev[n - 1 - i];
	num[n] = '\0';
	const char *name = "?";
	for (int i = 0; i < nnames; i++)
		if (names[i].nr == si->si_syscall)
			name = names[i].name;
	size_t len = 0;
	const char *parts[] = { "hyve: error: seccomp: forbidden system call ", name, " (", num,
		                    "); the VM is stopped (docs/security.md)\n", NULL };
	for (int i = 0; parts[i]; i++)
		for (const char *p = parts[i]; *p && len < sizeof(trap_msg) - 1; p++)
			trap_msg[len++] = *p;
	(void)!write(STDERR_FILENO, trap_msg, len);
	_exit(HYVE_EXIT_ERROR);
}

/*
 * ASan's leak check at exit stops the process's threads with a forked
 * tracer (clone without CLONE_THREAD, ptrace): in a sanitizer build
 * (make SANITIZE=1) the default is "log" so that check can run.
 */
#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_MODE "log"
#else
#define DEFAULT_MODE "kill"
#endif

int sandbox_enter(const char *mode, char *err, size_t errlen)
{
	if (!mode)
		mode = DEFAULT_MODE;
	if (strcmp(mode, "off") == 0)
		return 0;
	bool log_only = strcmp(mode, "log") == 0;
	if (!log_only && strcmp(mode, "kill") != 0) {
		snprintf(err, errlen, "security.seccomp: expected kill, log or off, not '%s'", mode);
		return -1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		snprintf(err, errlen, "no_new_privs: %s", strerror(errno));
		return -1;
	}
	nnames = 0;
	for (int i = 0; denied[i]; i++)
		remember(denied[i]);
	remember("clone");
	remember("mknod");
	remember("mknodat");
	if (!log_only) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_sigsys;
		sa.sa_flags = SA_SIGINFO;
		sigaction(SIGSYS, &sa, NULL);
	}
	uint32_t deny = log_only ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int rc = ctx ? 0 : -ENOMEM;
	for (int i = 0; denied[i] && rc == 0; i++) {
		int nr = seccomp_syscall_resolve_name(denied[i]);
		if (nr != __NR_SCMP_ERROR)
			rc = seccomp_rule_add(ctx, deny, nr, 0);
	}
	/* Threads only: clone without CLONE_THREAD is a fork.  clone3 hides
	 * its flags in memory a filter cannot read, so it answers ENOSYS and
	 * glibc's pthread_create falls back to clone. */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	/* Device nodes: regular files, FIFOs and sockets only. */
	for (int t = 0; t < 2 && rc == 0; t++) {
		unsigned type = t ? S_IFBLK : S_IFCHR;
		rc = seccomp_rule_add(ctx, deny, SCMP_SYS(mknod), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, S_IFMT, type));
		if (rc == 0)
			rc = seccomp_rule_add(ctx, deny, SCMP_SYS(mknodat), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, S_IFMT, type));
	}
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc == 0)
		rc = seccomp_load(ctx);
	if (ctx)
		seccomp_release(ctx);
	if (rc) {
		snprintf(err, errlen, "cannot install the seccomp filter: %s (security.seccomp=off runs without it)",
		         strerror(-rc));
		return -1;
	}
	return 0;
}
