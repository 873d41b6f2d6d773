/*
 * Landlock (security.landlock=true): once set-up is done, the file system
 * hyve may still open is the paths its devices declared (a 9p share, the
 * control socket's directory, the profile's) and those the user lists in
 * security.landlock_rw / security.landlock_ro (where checkpoints go, CD
 * images to insert).  Everything opened during set-up stays open.  On
 * kernels with Landlock ABI 4 (Linux 6.7), no TCP port can be bound after
 * set-up either.
 *
 * Landlock restricts the calling thread and the threads it makes later,
 * not the threads that already exist: the main thread restricts itself in
 * sandbox_landlock_enter, and each thread made during set-up that opens
 * files afterwards (block and 9P workers, control connections, VNC
 * clients) calls sandbox_thread_landlock before its work, as it does for
 * its seccomp role.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "exitcode.h"
#include "sandbox.h"

/* Linux 6.2 (ABI 3) and 6.7 (ABI 4, TCP); Debian 12's headers predate them. */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#define LL_ACCESS_NET_BIND_TCP (1ULL << 0)
struct ll_ruleset_attr_v4 {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
};

#define MAX_PATHS 64

static struct {
	char *path;
	bool write;
} paths[MAX_PATHS];
static int npaths;
static bool too_many;   /* a declaration that did not fit: an error once Landlock is asked for */
static int ruleset_fd = -1;
static _Thread_local bool thread_done;

int sandbox_allow_path(const char *path, bool write)
{
	if (!path || !*path)
		return 0;
	if (npaths == MAX_PATHS || !(paths[npaths].path = strdup(path))) {
		too_many = true;
		return -1;
	}
	paths[npaths++].write = write;
	return 0;
}

/* The directory a path is in ("." for a bare name), for what is made or removed there. */
int sandbox_allow_parent(const char *path, bool write)
{
	if (!path || !*path)
		return 0;
	char *dup = strdup(path), *slash = dup ? strrchr(dup, '/') : NULL;
	if (!dup)
		return -1;
	int rc = sandbox_allow_path(!slash ? "." : slash == dup ? "/" : (*slash = '\0', dup), write);
	free(dup);
	return rc;
}

/* "A,B,C" from a configuration value (what does not fit sets too_many). */
static void allow_list(const char *list, bool write)
{
	char *dup = list ? strdup(list) : NULL, *save = NULL;
	if (list && !dup)
		too_many = true;
	for (char *p = dup ? strtok_r(dup, ",", &save) : NULL; p; p = strtok_r(NULL, ",", &save))
		sandbox_allow_path(p, write);
	free(dup);
}

static int restrict_thread(void)
{
	/* Per thread, and needed without CAP_SYS_ADMIN (the seccomp filter's TSYNC set it on most). */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -1;
	return (int)syscall(__NR_landlock_restrict_self, ruleset_fd, 0);
}

int sandbox_landlock_prepare(bool on, const char *rw, const char *ro, char *err, size_t errlen)
{
	if (!on)
		return 0;
	allow_list(rw, true);
	allow_list(ro, false);
	if (too_many) {
		snprintf(err, errlen, "security.landlock: more than %d paths to allow", MAX_PATHS);
		return -1;
	}
	long abi = syscall(__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1) {
		snprintf(err, errlen, "security.landlock: this kernel has no Landlock (%s); security.landlock=false runs "
		         "without it", strerror(errno));
		return -1;
	}
	uint64_t all = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
	               LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
	               LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
	               LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
	               LANDLOCK_ACCESS_FS_MAKE_SYM;
	if (abi >= 2)
		all |= LANDLOCK_ACCESS_FS_REFER;   /* renames and links across directories */
	if (abi >= 3)
		all |= LANDLOCK_ACCESS_FS_TRUNCATE;
	const uint64_t file_rights = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
	                             LANDLOCK_ACCESS_FS_READ_FILE | (abi >= 3 ? LANDLOCK_ACCESS_FS_TRUNCATE : 0);
	const uint64_t read_rights = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
	/*
	 * ABI 4: no TCP port may be bound any more -- every listener (VNC,
	 * gdb, consoles, hostfwd, the migration destination) is bound during
	 * set-up.  Connecting stays allowed: slirp connects wherever the guest
	 * does, a migration source to where hyvectl says.
	 */
	struct ll_ruleset_attr_v4 attr = { .handled_access_fs = all, .handled_access_net = LL_ACCESS_NET_BIND_TCP };
	size_t attr_size = abi >= 4 ? sizeof(attr) : sizeof(struct landlock_ruleset_attr);
	int fd = (int)syscall(__NR_landlock_create_ruleset, &attr, attr_size, 0);
	if (fd < 0) {
		snprintf(err, errlen, "security.landlock: cannot create the ruleset: %s", strerror(errno));
		return -1;
	}
	for (int i = 0; i < npaths; i++) {
		struct landlock_path_beneath_attr pb = { 0 };
		struct stat st;
		pb.parent_fd = open(paths[i].path, O_PATH | O_CLOEXEC);
		if (pb.parent_fd < 0 || fstat(pb.parent_fd, &st)) {
			snprintf(err, errlen, "security.landlock: %s: %s", paths[i].path, strerror(errno));
			if (pb.parent_fd >= 0)
				close(pb.parent_fd);
			close(fd);
			return -1;
		}
		pb.allowed_access = paths[i].write ? all : read_rights;
		if (!S_ISDIR(st.st_mode))
			pb.allowed_access &= file_rights;   /* a file: only what applies to files */
		int rc = (int)syscall(__NR_landlock_add_rule, fd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
		int e = errno;
		close(pb.parent_fd);
		if (rc) {
			snprintf(err, errlen, "security.landlock: %s: %s", paths[i].path, strerror(e));
			close(fd);
			return -1;
		}
	}
	ruleset_fd = fd;
	return 0;
}

int sandbox_landlock_enter(char *err, size_t errlen)
{
	if (ruleset_fd < 0)
		return 0;
	thread_done = true;
	if (restrict_thread()) {
		snprintf(err, errlen, "security.landlock: cannot restrict hyve: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void sandbox_thread_landlock(void)
{
	if (ruleset_fd < 0 || thread_done)
		return;
	thread_done = true;
	if (restrict_thread()) {
		char msg[160];
		int n = snprintf(msg, sizeof(msg), "hyve: error: landlock: cannot restrict a thread: %s\n", strerror(errno));
		(void)!write(STDERR_FILENO, msg, (size_t)n);
		_exit(HYVE_EXIT_ERROR);   /* a thread left with the whole file system: not run at all */
	}
}
