/*
 * The process sandbox (core/sandbox.c, docs/security.md): no_new_privs and
 * a seccomp filter on every thread, entered once set-up is done.
 */
#ifndef HYVE_SANDBOX_H
#define HYVE_SANDBOX_H

#include <stddef.h>

/* MODE: security.seccomp's value (NULL: kill; log in sanitizer builds).  0, or -1 with err. */
int sandbox_enter(const char *mode, char *err, size_t errlen);

/*
 * security.user: "USER", "USER:GROUP", "UID:GID" (numbers need no passwd
 * entry).  sandbox_user_check resolves SPEC before the VM exists (a typo
 * must not leave a half-started VM); sandbox_drop_user switches every
 * thread to it for good (real, effective and saved ids, supplementary
 * groups; capabilities go with uid 0) and must run before sandbox_enter,
 * whose filter forbids identity changes.  0, or -1 with err.
 */
int sandbox_user_check(const char *spec, char *err, size_t errlen);
int sandbox_drop_user(const char *spec, char *err, size_t errlen);

/*
 * The calling thread narrows itself to its role's allow-list, on top of
 * the process filter (core/sandbox.c lists what each may call).  Does
 * nothing before sandbox_enter or when the thread already did it, so
 * worker threads made during set-up call it before each piece of work.
 */
enum sandbox_role {
	SANDBOX_ROLE_DEVICE,   /* vCPUs, block I/O workers: no files opened, no sockets */
	SANDBOX_ROLE_FILES,    /* the 9P worker: files beneath its share too, no sockets */
	SANDBOX_ROLE_LISTENER, /* the GDB stub: accepts its peers and serves them; no files, no new sockets */
};
void sandbox_thread_role(enum sandbox_role role);

/*
 * Landlock (core/sandbox_landlock.c), with security.landlock=true: after
 * set-up the file system hyve may open is what devices declared with
 * sandbox_allow_path/_parent during set-up (WRITE: make, change, remove
 * beneath it; else read) and the RW and RO lists ("A,B").  The calling
 * thread is restricted; threads made during set-up that open files later
 * call sandbox_thread_landlock first (sandbox_thread_role does).
 */
#include <stdbool.h>
int sandbox_allow_path(const char *path, bool write);
int sandbox_allow_parent(const char *path, bool write);
/* The ruleset, while every path can still be opened (before security.user). */
int sandbox_landlock_prepare(bool on, const char *rw, const char *ro, char *err, size_t errlen);
/* The calling thread restricted to it (nothing without a ruleset). */
int sandbox_landlock_enter(char *err, size_t errlen);
void sandbox_thread_landlock(void);

/* Resource limits once set-up is done: no core file unless CORE (-C). */
void sandbox_limits(int core);

#endif
