/*
 * Unit test of the process sandbox (core/sandbox.c): each case runs in a
 * forked child that enters the sandbox and then does one thing; the parent
 * checks how the child ended and what it printed.  Checked against the
 * kernel's own view (/proc/.../status: Seccomp, NoNewPrivs) and real
 * system calls, no KVM needed.
 * test-sources: core/sandbox.c core/sandbox_landlock.c
 * test-libs: -lseccomp -pthread
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../core/sandbox.h"

static int npass, nfail;
static char dir[] = "/tmp/hyve-sandbox-test.XXXXXX";

static void check(bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s ", ok ? "ok  " : "FAIL");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	if (ok)
		npass++;
	else
		nfail++;
}

/* The number after "KEY:" in a /proc status file, or -1. */
static int status_value(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	char line[256];
	size_t klen = strlen(key);
	int v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, key, klen) == 0 && line[klen] == ':')
			v = atoi(line + klen + 1);
	if (f)
		fclose(f);
	return v;
}

/* Seccomp 2 (filter mode) and NoNewPrivs 1 in a /proc status file. */
static bool status_sandboxed(const char *path)
{
	return status_value(path, "Seccomp") == 2 && status_value(path, "NoNewPrivs") == 1;
}

static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage;

/* A thread that exists before the filter goes in (TSYNC must cover it). */
static void *early_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mtx);
	while (stage < 1)
		pthread_cond_wait(&cv, &mtx);
	pthread_mutex_unlock(&mtx);
	return (void *)(intptr_t)status_sandboxed("/proc/thread-self/status");
}

static void *late_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)status_sandboxed("/proc/thread-self/status");
}

enum action { A_STATUS, A_EXEC, A_FORK, A_MKNOD_CHR, A_MKNOD_BLK, A_FIFO, A_EXEC_LOG, A_DEV_WORK, A_DEV_OPEN,
	          A_DEV_SOCKET, A_FILES_WORK, A_FILES_SOCKET, A_LISTEN_WORK, A_LISTEN_OPEN, A_DROP_USER, A_LANDLOCK };

/* 0 if PATH opens with FLAGS (O_CREAT: mode 0600), else its errno. */
static int try_open(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

/* A thread that predates the restriction, then restricts itself (as the
 * block, 9P and control threads do) and tries a path outside. */
static pthread_mutex_t ll_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ll_cv = PTHREAD_COND_INITIALIZER;
static int ll_stage;
static void *landlock_late_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&ll_mtx);
	while (ll_stage < 1)
		pthread_cond_wait(&ll_cv, &ll_mtx);
	pthread_mutex_unlock(&ll_mtx);
	sandbox_thread_landlock();
	char path[160];
	snprintf(path, sizeof(path), "%s/denied/t", dir);
	return (void *)(intptr_t)try_open(path, O_CREAT | O_WRONLY);
}

/* Seccomp_filters of thread TID (read by another thread: a device thread
 * may not open the file). */
static int filters_of(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	return status_value(path, "Seccomp_filters");
}

/* A thread in a role: the work a vCPU or block worker does on descriptors
 * opened before, then (per case) one call its list lacks. */
static int role_fd = -1, role_ready[2], role_go[2];
static int listen_fd = -1, peer_fd = -1;   /* a listening socket and a client already connected to it */
static pid_t role_tid;
static void *role_thread(void *arg)
{
	enum action a = (enum action)(intptr_t)arg;
	sandbox_thread_role(a == A_FILES_WORK || a == A_FILES_SOCKET ? SANDBOX_ROLE_FILES
	                    : a == A_LISTEN_WORK || a == A_LISTEN_OPEN ? SANDBOX_ROLE_LISTENER : SANDBOX_ROLE_DEVICE);
	sandbox_thread_role(SANDBOX_ROLE_DEVICE);   /* a second call adds nothing */
	role_tid = (pid_t)syscall(SYS_gettid);
	char path[128];
	switch (a) {
	case A_DEV_WORK: {
		int efd = eventfd(0, EFD_CLOEXEC);
		uint64_t one = 1;
		struct timespec ts;
		void *big = malloc(8 << 20);   /* mmap */
		/* Heap in this thread's own arena, then freed: glibc shrinks the
		 * arena's heap, and the first shrink in a process reads
		 * /proc/sys/vm/overcommit_memory (sandbox_enter has it read). */
		void *chunks[48];
		for (int i = 0; i < 48; i++)
			chunks[i] = malloc(100 << 10);
		for (int i = 47; i >= 0; i--)
			free(chunks[i]);
		bool ok = efd >= 0 && write(efd, &one, 8) == 8 && read(efd, &one, 8) == 8 &&
		          pwrite(role_fd, "data", 4, 0) == 4 && fdatasync(role_fd) == 0 && clock_gettime(CLOCK_MONOTONIC, &ts) == 0 && big;
		free(big);
		close(efd);
		/* Hold on while the parent thread reads this one's status. */
		char c = 0;
		ok = ok && write(role_ready[1], &c, 1) == 1 && read(role_go[0], &c, 1) == 1;
		return (void *)(intptr_t)(ok ? 1 : 2);
	}
	case A_LISTEN_WORK: {   /* what the GDB stub does with a debugger */
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC), one = 1;
		char c = 0;
		bool ok = fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 &&
		          write(peer_fd, "$", 1) == 1 && read(fd, &c, 1) == 1 && c == '$' && write(fd, "+", 1) == 1;
		if (fd >= 0)
			close(fd);
		return (void *)(intptr_t)(ok ? 1 : 2);
	}
	case A_DEV_OPEN:
	case A_LISTEN_OPEN:
		snprintf(path, sizeof(path), "%s/file", dir);
		open(path, O_RDONLY);
		return (void *)3;
	case A_DEV_SOCKET:
	case A_FILES_SOCKET:
		socket(AF_INET, SOCK_STREAM, 0);
		return (void *)3;
	case A_FILES_WORK: {
		snprintf(path, sizeof(path), "%s/sub", dir);
		bool ok = mkdir(path, 0700) == 0;
		snprintf(path, sizeof(path), "%s/sub/f", dir);
		int fd = open(path, O_CREAT | O_WRONLY, 0600);
		ok = ok && fd >= 0 && write(fd, "x", 1) == 1 && unlink(path) == 0;
		if (fd >= 0)
			close(fd);
		return (void *)(intptr_t)(ok ? 1 : 2);
	}
	default:
		return (void *)4;
	}
}

static int child(enum action a, const char *mode)
{
	pthread_t early;
	if (a == A_STATUS && pthread_create(&early, NULL, early_thread, NULL))
		return 10;
	char err[256];
	if (a == A_LANDLOCK) {
		char ok_dir[160], ro_dir[160], path[200];
		snprintf(ok_dir, sizeof(ok_dir), "%s/allowed", dir);
		snprintf(ro_dir, sizeof(ro_dir), "%s/readonly", dir);
		pthread_t t;
		if (pthread_create(&t, NULL, landlock_late_thread, NULL))
			return 60;
		sandbox_allow_path(ok_dir, true);
		if (sandbox_landlock_prepare(true, NULL, ro_dir, err, sizeof(err)) || sandbox_landlock_enter(err, sizeof(err))) {
			fprintf(stderr, "%s", err);
			return 61;
		}
		pthread_mutex_lock(&ll_mtx);
		ll_stage = 1;
		pthread_cond_broadcast(&ll_cv);
		pthread_mutex_unlock(&ll_mtx);
		void *late;
		pthread_join(t, &late);
		snprintf(path, sizeof(path), "%s/new", ok_dir);
		int made = try_open(path, O_CREAT | O_WRONLY), removed = made ? made : (unlink(path) ? errno : 0);
		snprintf(path, sizeof(path), "%s/denied/f", dir);
		int outside = try_open(path, O_CREAT | O_WRONLY);
		int etc = try_open("/etc/hostname", O_RDONLY);
		snprintf(path, sizeof(path), "%s/file", ro_dir);
		int ro_read = try_open(path, O_RDONLY), ro_write = try_open(path, O_WRONLY);
		/* ABI 4: binding a TCP port is refused, connecting is not. */
		long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, 1);
		int s1 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), s2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int bound = bind(s1, (struct sockaddr *)&sa, sizeof(sa)) ? errno : 0;
		sa.sin_port = htons(1);   /* nothing listens there: refused by TCP, not by Landlock */
		int conn = connect(s2, (struct sockaddr *)&sa, sizeof(sa)) ? errno : 0;
		close(s1);
		close(s2);
		fprintf(stderr, "allowed: create %d remove %d; outside: %d; /etc/hostname: %d; read-only dir: read %d write %d; "
		        "thread made before: %d; ABI %ld: TCP bind %d, connect %d", made, removed, outside, etc, ro_read,
		        ro_write, (int)(intptr_t)late, abi, bound, conn);
		bool net_ok = abi < 4 ? bound == 0 : bound == EACCES && conn == ECONNREFUSED;
		return made == 0 && removed == 0 && outside == EACCES && etc == EACCES && ro_read == 0 && ro_write == EACCES &&
		               (intptr_t)late == EACCES && net_ok ? 0 : 62;
	}
	/* As hyve: the user changes before the filter, which forbids it. */
	if (a == A_DROP_USER && sandbox_drop_user("65534:65534", err, sizeof(err))) {
		fprintf(stderr, "%s", err);
		return 50;
	}
	if (sandbox_enter(mode, err, sizeof(err))) {
		fprintf(stderr, "sandbox_enter: %s\n", err);
		return 11;
	}
	char path[128];
	switch (a) {
	case A_DEV_WORK:
	case A_DEV_OPEN:
	case A_DEV_SOCKET:
	case A_FILES_WORK:
	case A_FILES_SOCKET:
	case A_LISTEN_WORK:
	case A_LISTEN_OPEN: {
		if (a == A_LISTEN_WORK) {   /* made before the role, as gdb_listen does at set-up */
			struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
			socklen_t sl = sizeof(sa);
			listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			peer_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (listen_fd < 0 || peer_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) ||
			    listen(listen_fd, 1) || getsockname(listen_fd, (struct sockaddr *)&sa, &sl) ||
			    connect(peer_fd, (struct sockaddr *)&sa, sizeof(sa)))
				return 46;
		}
		snprintf(path, sizeof(path), "%s/disk", dir);
		role_fd = open(path, O_CREAT | O_RDWR, 0600);
		pthread_t t;
		void *r;
		if (role_fd < 0 || pipe(role_ready) || pipe(role_go) || pthread_create(&t, NULL, role_thread, (void *)(intptr_t)a))
			return 40;
		if (a == A_DEV_WORK) {
			char c = 0;
			if (read(role_ready[0], &c, 1) != 1)
				return 43;
			/* The kernel's view: the role thread has its own filter on top of the process's. */
			int mine = filters_of((pid_t)syscall(SYS_gettid)), its = filters_of(role_tid);
			if (write(role_go[1], &c, 1) != 1)
				return 44;
			if (mine != 1 || its != 2) {
				fprintf(stderr, "Seccomp_filters: this thread %d, the role thread %d (want 1 and 2)", mine, its);
				return 45;
			}
		}
		pthread_join(t, &r);
		if (r != (void *)1)
			return 41;
		/* This thread is not in the role: it still opens files. */
		snprintf(path, sizeof(path), "%s/after", dir);
		int fd = open(path, O_CREAT | O_WRONLY, 0600);
		if (fd < 0)
			return 42;
		close(fd);
		return 0;
	}
	case A_LANDLOCK:
		return 31;   /* handled before the filter */
	case A_DROP_USER: {
		uid_t r, e, sv;
		gid_t groups[4];
		if (getresuid(&r, &e, &sv) || r != 65534 || e != 65534 || sv != 65534 || getgid() != 65534)
			return 51;
		/* initgroups: the user's own group, and only it (nobody is in no other). */
		int ng = getgroups(4, groups);
		if (ng < 0 || (ng == 1 && groups[0] != 65534) || ng > 1)
			return 52;
		return 0;   /* sandbox_drop_user checked that setuid(0) fails; the filter forbids trying here */
	}
	case A_STATUS: {
		pthread_mutex_lock(&mtx);
		stage = 1;
		pthread_cond_broadcast(&cv);
		pthread_mutex_unlock(&mtx);
		void *r1, *r2;
		pthread_t late;
		if (pthread_create(&late, NULL, late_thread, NULL))   /* clone3 -> ENOSYS -> clone(CLONE_THREAD) */
			return 12;
		pthread_join(early, &r1);
		pthread_join(late, &r2);
		if (!status_sandboxed("/proc/self/status"))
			return 13;
		snprintf(path, sizeof(path), "%s/file", dir);
		int fd = open(path, O_CREAT | O_WRONLY, 0600);
		if (fd < 0 || write(fd, "x", 1) != 1)
			return 14;
		close(fd);
		return r1 && r2 ? 0 : 15;
	}
	case A_EXEC:
	case A_EXEC_LOG:
		execl("/bin/true", "true", (char *)NULL);
		return 20;
	case A_FORK: {
		pid_t p = fork();
		if (p == 0)
			_exit(0);
		return 21;
	}
	case A_MKNOD_CHR:
	case A_MKNOD_BLK:
		snprintf(path, sizeof(path), "%s/dev", dir);
		mknod(path, (a == A_MKNOD_CHR ? S_IFCHR : S_IFBLK) | 0600, makedev(1, 3));
		return 22;
	case A_FIFO:
		snprintf(path, sizeof(path), "%s/fifo", dir);
		return mkfifo(path, 0600) == 0 ? 0 : 23;
	}
	return 30;
}

/* Run a case; returns the exit status (or 128+signal) and the child's stderr. */
static int run(enum action a, const char *mode, char *out, size_t outlen)
{
	int pfd[2];
	if (pipe(pfd))
		return -1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pfd[1], STDERR_FILENO);
		close(pfd[0]);
		_exit(child(a, mode));
	}
	close(pfd[1]);
	size_t n = 0;
	ssize_t r;
	while (n < outlen - 1 && (r = read(pfd[0], out + n, outlen - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(pfd[0]);
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(void)
{
	char out[512], err[256];
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	int rc = run(A_STATUS, "kill", out, sizeof(out));
	check(rc == 0, "every thread (made before and after) shows Seccomp 2 and NoNewPrivs 1; files still work (status %d) %s",
	      rc, out);
	rc = run(A_EXEC, "kill", out, sizeof(out));
	check(rc == 4 && strstr(out, "forbidden system call execve ("), "execve is stopped, named, exit 4 (status %d: %s)",
	      rc, out);
	rc = run(A_FORK, "kill", out, sizeof(out));
	check(rc == 4 && strstr(out, "forbidden system call clone ("), "fork (clone without CLONE_THREAD) is stopped (status %d: %s)",
	      rc, out);
	rc = run(A_MKNOD_CHR, "kill", out, sizeof(out));
	check(rc == 4 && strstr(out, "forbidden system call mknod"), "a character device node is refused (status %d: %s)", rc,
	      out);
	rc = run(A_MKNOD_BLK, "kill", out, sizeof(out));
	check(rc == 4 && strstr(out, "forbidden system call mknod"), "a block device node is refused (status %d: %s)", rc, out);
	char dev[160];
	snprintf(dev, sizeof(dev), "%s/dev", dir);
	check(access(dev, F_OK) != 0, "no device node was made");
	rc = run(A_FIFO, "kill", out, sizeof(out));
	check(rc == 0, "a FIFO may still be made (9p shares) (status %d: %s)", rc, out);
	rc = run(A_DEV_WORK, "kill", out, sizeof(out));
	check(rc == 0, "a device-role thread has a second filter (Seccomp_filters 2) and does its work (eventfd, "
	      "pwrite/fdatasync on a descriptor it had, memory, time); "
	      "other threads still open files (status %d: %s)", rc, out);
	rc = run(A_DEV_OPEN, "kill", out, sizeof(out));
	check(rc == 4 && strstr(out, "forbidden system call openat ("), "a device-role thread cannot open a file: stopped, "
	      "named, exit 4 (status %d: %s)", rc, out);
	rc = run(A_DEV_SOCKET, "kill", out, sizeof(out));
	check(rc == 4 && strstr(out, "forbidden system call socket ("), "a device-role thread cannot make a socket "
	      "(status %d: %s)", rc, out);
	rc = run(A_FILES_WORK, "kill", out, sizeof(out));
	check(rc == 0, "the files role (9P worker) makes, writes and removes files (status %d: %s)", rc, out);
	rc = run(A_FILES_SOCKET, "kill", out, sizeof(out));
	check(rc == 4 && strstr(out, "forbidden system call socket ("), "the files role cannot make a socket (status %d: %s)",
	      rc, out);
	rc = run(A_LISTEN_WORK, "kill", out, sizeof(out));
	check(rc == 0, "the listener role (GDB stub) accepts a peer, sets its socket options, talks with it "
	      "(status %d: %s)", rc, out);
	rc = run(A_LISTEN_OPEN, "kill", out, sizeof(out));
	check(rc == 4 && strstr(out, "forbidden system call openat ("), "the listener role cannot open a file "
	      "(status %d: %s)", rc, out);
	rc = run(A_DEV_OPEN, "log", out, sizeof(out));
	check(rc == 41, "security.seccomp=log: the role's refusals are logged, the call runs (status %d: %s)", rc, out);
	if (geteuid() == 0) {
		rc = run(A_DROP_USER, "kill", out, sizeof(out));
		check(rc == 0, "security.user=65534:65534: real/effective/saved uid and gid changed, no other groups, no way back "
		      "(status %d: %s)", rc, out);
	} else {
		printf("skip security.user drop: needs root\n");
	}
	check(sandbox_user_check("no-such-user-here", err, sizeof(err)) == -1 && strstr(err, "no user named"),
	      "an unknown user is refused before the VM exists: %s", err);
	check(sandbox_user_check("4242", err, sizeof(err)) == -1 && strstr(err, "give its group too"),
	      "a uid without a passwd entry needs its group: %s", err);
	check(sandbox_user_check("0:0", err, sizeof(err)) == -1 && strstr(err, "root"), "root is no user to drop to: %s", err);
	check(sandbox_user_check("nobody:no-such-group", err, sizeof(err)) == -1 && strstr(err, "no group named"),
	      "an unknown group is refused: %s", err);
	char sub[200];
	const char *subs[] = { "allowed", "denied", "readonly", NULL };
	for (int i = 0; subs[i]; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, subs[i]);
		mkdir(sub, 0700);
	}
	snprintf(sub, sizeof(sub), "%s/readonly/file", dir);
	close(open(sub, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
	if (syscall(SYS_landlock_create_ruleset, NULL, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */) < 1) {
		printf("skip security.landlock: this kernel has no Landlock\n");
	} else {
		rc = run(A_LANDLOCK, "kill", out, sizeof(out));
		check(rc == 0, "security.landlock: a declared directory is writable, a read-only one readable only, the rest "
		      "(another directory, /etc) refused, also to a thread made before that restricts itself; no TCP bind "
		      "(ABI 4), connect allowed (status %d: %s)",
		      rc, out);
	}
	rc = run(A_EXEC_LOG, "log", out, sizeof(out));
	check(rc == 0, "security.seccomp=log lets the call run (status %d: %s)", rc, out);
	check(sandbox_enter("sometimes", err, sizeof(err)) == -1 && strstr(err, "expected kill, log or off"),
	      "a bad mode is refused: %s", err);
	check(sandbox_enter("off", err, sizeof(err)) == 0 && !status_sandboxed("/proc/self/status"),
	      "security.seccomp=off installs nothing");
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
