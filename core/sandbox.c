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
 * On top of it, the threads that serve guest requests narrow themselves
 * to allow-lists by role (sandbox_thread_role, below).
 *
 * security.seccomp=kill (default): a forbidden call never runs; hyve logs
 * which one and exits with status 4.  =log: the kernel logs it and lets it
 * run (debugging; the default of sanitizer builds, below).  =off: no
 * filter (unsafe).
 */
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
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
/* Set by sandbox_enter: the thread-role layers (below) follow its mode. */
static volatile int sandbox_on;   /* 0 off, 1 kill, 2 log */
static _Thread_local int role_installed;
/* Every call's name, resolved before the filters go in, for the SIGSYS
 * handler's message (a role layer refuses any call not on its list). */
#define MAX_NR 512
static char *all_names[MAX_NR];

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
	if (si->si_syscall >= 0 && si->si_syscall < MAX_NR && all_names[si->si_syscall])
		name = all_names[si->si_syscall];
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

/*
 * glibc opens /proc/sys/vm/overcommit_memory the first time it shrinks the
 * heap of a thread's arena (malloc-sysdep.h, check_may_shrink_heap) and
 * keeps the answer.  In a role thread that openat would stop the VM, at
 * whatever moment some thread's frees first shrink its arena.  A thread
 * that fills and empties its own arena here makes glibc look it up now.
 */
static void *shrink_an_arena(void *arg)
{
	(void)arg;
	void *chunks[48];
	for (int i = 0; i < 48; i++)
		chunks[i] = malloc(100 << 10);   /* below the mmap threshold: heap */
	for (int i = 47; i >= 0; i--)
		free(chunks[i]);
	return NULL;
}

static void warm_libc(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, shrink_an_arena, NULL) == 0)
		pthread_join(t, NULL);
}

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
	for (int nr = 0; nr < MAX_NR; nr++)
		if (!all_names[nr])
			all_names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	/* The time zone now, while /etc/localtime can be opened: role layers
	 * forbid opening files, and localtime_r loads it on first use. */
	tzset();
	warm_libc();
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
	sandbox_on = log_only ? 2 : 1;
	return 0;
}

/*
 * Thread roles: the threads that act on guest requests as they come —
 * vCPUs (every port and MMIO access: PCI config, AHCI/NVMe registers,
 * UART, RTC, fw_cfg, ...), the block I/O workers, the 9P worker — each
 * add an allow-list of their own on top of the process filter.  A guest
 * that takes one of them over cannot open a host file (vCPU, block), make
 * a socket or connect anywhere (all three): those calls are not on the
 * lists.  Files are the 9P worker's job, beneath its share.
 *
 * Derived from what these threads call (KVM ioctls, reads and writes on
 * the descriptors set-up opened, eventfds, timers, futexes, memory) and
 * checked by running the test suites on a KVM host with the kill action.
 * VNC client threads take the device role too (devices/rfb.c): they parse
 * what a remote peer sends.  The GDB stub's thread (core/gdbstub.c) parses
 * a remote peer's packets and acts on vCPUs and guest memory: the device
 * list plus accepting connections on the socket set-up opened and setting
 * their options.  Threads that serve the host side keep the process filter
 * only: the main event loop (slirp, socket consoles), control and
 * migration open checkpoint files and connect to peers by design, and the
 * VNC accept thread starts before the sandbox and reads nothing from the
 * network (its client threads do, under the device role).
 */
static const char *const role_device[] = {
	/* memory, threads, time */
	"brk", "mmap", "munmap", "mprotect", "madvise", "mremap", "msync", "futex", "sched_yield", "nanosleep",
	"clock_nanosleep", "clock_gettime", "gettimeofday", "time", "getrandom", "rt_sigprocmask", "rt_sigreturn",
	"rt_sigtimedwait", "rt_sigaction", "sigaltstack", "restart_syscall", "gettid", "getpid", "tgkill", "tkill",
	"exit", "exit_group", "set_robust_list", "rseq", "sched_getaffinity", "getrusage", "membarrier",
	/* KVM, tap offloads; I/O on descriptors opened at set-up */
	"ioctl", "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
	"pwritev2", "lseek", "fsync", "fdatasync", "fallocate", "ftruncate", "sync_file_range", "close", "dup",
	"dup3", "fcntl", "fstat", "newfstatat", "statx", "poll", "ppoll", "sendto", "sendmsg", "recvfrom",
	"recvmsg", "shutdown", "eventfd2", "timerfd_create", "timerfd_settime", "timerfd_gettime", "epoll_ctl",
	"io_uring_enter",
	NULL,
};

static const char *const role_files_extra[] = {
	"openat", "openat2", "open_tree", "mkdirat", "mknodat", "unlinkat", "renameat", "renameat2", "linkat",
	"symlinkat", "readlinkat", "fchmod", "fchmodat", "fchown", "fchownat", "utimensat", "getdents64",
	"fstatfs", "statfs", "fsetxattr", "fgetxattr", "flistxattr", "fremovexattr", "lsetxattr", "lgetxattr",
	"llistxattr", "lremovexattr", "setxattr", "getxattr", "listxattr", "removexattr", "flock", "faccessat",
	"faccessat2", "truncate", "copy_file_range", "umask", "getuid", "getgid", "geteuid", "getegid",
	/* the same through libc's older entry points */
	"open", "creat", "mkdir", "rmdir", "unlink", "rename", "link", "symlink", "readlink", "chmod", "chown",
	"lchown", "utimes", "utime", "futimesat", "stat", "lstat", "access", "getdents",
	NULL,
};

static const char *const role_listener_extra[] = {
	"accept", "accept4", "setsockopt", "getsockopt", "getsockname", "getpeername",
	NULL,
};

static int add_allowed(scmp_filter_ctx ctx, const char *const *list)
{
	for (int i = 0; list[i]; i++) {
		int nr = seccomp_syscall_resolve_name(list[i]);
		if (nr == __NR_SCMP_ERROR)
			continue;   /* not a call on this architecture */
		int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (rc)
			return rc;
	}
	return 0;
}

void sandbox_thread_role(enum sandbox_role role)
{
	sandbox_thread_landlock();
	if (!sandbox_on || role_installed)
		return;
	role_installed = 1;
	scmp_filter_ctx ctx = seccomp_init(sandbox_on == 2 ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
	int rc = ctx ? add_allowed(ctx, role_device) : -ENOMEM;
	if (rc == 0 && role == SANDBOX_ROLE_FILES)
		rc = add_allowed(ctx, role_files_extra);
	if (rc == 0 && role == SANDBOX_ROLE_LISTENER)
		rc = add_allowed(ctx, role_listener_extra);
	/* getrlimit (the 9P server sizes its descriptor cache by it): reading a limit, never setting one. */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1, SCMP_A2(SCMP_CMP_EQ, 0));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(getrlimit), 0);
	/* Threads, not processes (as the process filter); clone3's flags are out of a filter's reach. */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (rc == 0)
		rc = seccomp_load(ctx);
	if (ctx)
		seccomp_release(ctx);
	if (rc) {
		char msg[160];
		int n = snprintf(msg, sizeof(msg), "hyve: error: seccomp: cannot narrow a thread to its role: %s\n",
		                 strerror(-rc));
		(void)!write(STDERR_FILENO, msg, (size_t)n);
		_exit(HYVE_EXIT_ERROR);   /* a guest-facing thread without its filter: not run at all */
	}
}

/* A decimal id, or -1 (names are looked up instead). */
static long long parse_id(const char *s)
{
	if (!*s || strlen(s) > 10)
		return -1;
	for (const char *p = s; *p; p++)
		if (*p < '0' || *p > '9')
			return -1;
	long long v = strtoll(s, NULL, 10);
	return v < 0xffffffffLL ? v : -1;
}

struct target_user {
	uid_t uid;
	gid_t gid;
	char name[64];   /* empty: a bare uid, no supplementary groups */
};

static int resolve_user(const char *spec, struct target_user *t, char *err, size_t errlen)
{
	char user[64], group[64] = "";
	const char *colon = strchr(spec, ':');
	size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
	if (ulen == 0 || ulen >= sizeof(user) || (colon && (!colon[1] || strlen(colon + 1) >= sizeof(group)))) {
		snprintf(err, errlen, "expected USER, USER:GROUP or UID:GID");
		return -1;
	}
	memcpy(user, spec, ulen);
	user[ulen] = '\0';
	if (colon)
		snprintf(group, sizeof(group), "%s", colon + 1);
	memset(t, 0, sizeof(*t));
	bool have_gid = false;
	long long id = parse_id(user);
	struct passwd *pw = id >= 0 ? getpwuid((uid_t)id) : getpwnam(user);
	if (pw) {
		t->uid = pw->pw_uid;
		t->gid = pw->pw_gid;
		have_gid = true;
		snprintf(t->name, sizeof(t->name), "%s", pw->pw_name);
	} else if (id >= 0) {
		t->uid = (uid_t)id;   /* a uid without a passwd entry: fine, with an explicit group */
	} else {
		snprintf(err, errlen, "no user named '%s'", user);
		return -1;
	}
	if (group[0]) {
		long long g = parse_id(group);
		struct group *gr = g >= 0 ? NULL : getgrnam(group);
		if (g < 0 && !gr) {
			snprintf(err, errlen, "no group named '%s'", group);
			return -1;
		}
		t->gid = g >= 0 ? (gid_t)g : gr->gr_gid;
		have_gid = true;
	}
	if (!have_gid) {
		snprintf(err, errlen, "uid %s has no passwd entry: give its group too (UID:GID)", user);
		return -1;
	}
	if (t->uid == 0) {
		snprintf(err, errlen, "that is root: nothing to drop to");
		return -1;
	}
	return 0;
}

/* SPEC resolved, and reachable: only root changes user (a non-root hyve may name itself). */
static int resolve_target(const char *spec, struct target_user *t, char *err, size_t errlen)
{
	if (resolve_user(spec, t, err, errlen))
		return -1;
	if (geteuid() != 0 && (t->uid != geteuid() || t->gid != getegid())) {
		snprintf(err, errlen, "only a hyve started as root can change to another user");
		return -1;
	}
	return 0;
}

int sandbox_user_check(const char *spec, char *err, size_t errlen)
{
	struct target_user t;
	return resolve_target(spec, &t, err, errlen);
}

int sandbox_drop_user(const char *spec, char *err, size_t errlen)
{
	struct target_user t;
	char why[160];
	if (resolve_target(spec, &t, why, sizeof(why))) {
		snprintf(err, errlen, "security.user=%s: %s", spec, why);
		return -1;
	}
	if (geteuid() != 0)
		return 0;   /* already that user */
	/* Groups first: after setresuid there is no privilege left to change them. */
	int rc = t.name[0] ? initgroups(t.name, t.gid) : setgroups(0, NULL);
	/* glibc applies these to every thread of the process, not just this one. */
	if (rc == 0)
		rc = setresgid(t.gid, t.gid, t.gid);
	if (rc == 0)
		rc = setresuid(t.uid, t.uid, t.uid);
	if (rc) {
		snprintf(err, errlen, "security.user=%s: cannot change to uid %u gid %u: %s", spec, (unsigned)t.uid,
		         (unsigned)t.gid, strerror(errno));
		return -1;
	}
	/* For good: no way back to root (the kernel cleared the capabilities). */
	uid_t r, e, sv;
	if (getresuid(&r, &e, &sv) || r != t.uid || e != t.uid || sv != t.uid || setuid(0) == 0) {
		snprintf(err, errlen, "security.user=%s: the change of user did not hold", spec);
		return -1;
	}
	return 0;
}

void sandbox_limits(int core)
{
	/* Guest RAM in a core file is readable by whoever reads the file. */
	if (!core) {
		struct rlimit rl = { 0, 0 };
		setrlimit(RLIMIT_CORE, &rl);
	}
}
