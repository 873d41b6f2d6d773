/*
 * Unit test of the process sandbox (core/sandbox.c): each case runs in a
 * forked child that enters the sandbox and then does one thing; the parent
 * checks how the child ended and what it printed.  Checked against the
 * kernel's own view (/proc/.../status: Seccomp, NoNewPrivs) and real
 * system calls, no KVM needed.
 * test-sources: core/sandbox.c
 * test-libs: -lseccomp -pthread
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* "Seccomp:\t2" and "NoNewPrivs:\t1" in a /proc status file. */
static bool status_sandboxed(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256];
	bool sec = false, nnp = false;
	while (f && fgets(line, sizeof(line), f)) {
		sec |= strcmp(line, "Seccomp:\t2\n") == 0;
		nnp |= strcmp(line, "NoNewPrivs:\t1\n") == 0;
	}
	if (f)
		fclose(f);
	return sec && nnp;
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

enum action { A_STATUS, A_EXEC, A_FORK, A_MKNOD_CHR, A_MKNOD_BLK, A_FIFO, A_EXEC_LOG };

static int child(enum action a, const char *mode)
{
	pthread_t early;
	if (a == A_STATUS && pthread_create(&early, NULL, early_thread, NULL))
		return 10;
	char err[256];
	if (sandbox_enter(mode, err, sizeof(err))) {
		fprintf(stderr, "sandbox_enter: %s\n", err);
		return 11;
	}
	char path[128];
	switch (a) {
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
	char out[512];
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
	rc = run(A_EXEC_LOG, "log", out, sizeof(out));
	check(rc == 0, "security.seccomp=log lets the call run (status %d: %s)", rc, out);
	char err[256];
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
