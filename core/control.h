/*
 * The per-VM control socket that hyvectl talks to (bhyvectl's role).
 *
 * Protocol, version 1: the client connects to the unix stream socket and
 * sends one request line
 *	HYVECTL 1 <command> [argument]\n
 * and the VM answers with zero or more "key value" lines and a final line
 *	OK [text]\n   or   ERR <message>\n
 * then closes.  The line is text (a NUL byte makes it malformed), its
 * fields separated by blanks: no command runs for "HYVECTL 1stats" or a
 * version of more than 9 digits.  A client speaking another version gets
 *	ERR protocol version N not supported (this VM speaks 1)
 * Commands: checkpoint PATH, suspend PATH, pause, resume, destroy,
 * force-reset, force-poweroff, stats, the migration commands in
 * core/migration.h and the vCPU ones in core/control_vcpu.c.
 *
 * Only a peer with our uid or root is served (SO_PEERCRED), at most 16 at a
 * time (then "ERR busy: too many control connections"); the request line
 * (at most CONTROL_MAX_REQUEST bytes) must arrive within 5 s.
 */
#ifndef HYVE_CONTROL_H
#define HYVE_CONTROL_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm.h"

#define CONTROL_PROTO_VERSION 1
/* Longest request line, newline included: room for a PATH_MAX argument. */
#define CONTROL_MAX_REQUEST 4200

/*
 * Default socket directory: $HYVE_RUN_DIR when set (a test run or a user
 * keeping its VMs apart), else /run/hyve for root, else
 * $XDG_RUNTIME_DIR/hyve (or /tmp/hyve-UID).  Sockets are DIR/NAME.sock.
 * Shared by hyve and hyvectl so both agree without configuration.
 */
static inline void control_default_dir(char *buf, size_t n)
{
	const char *run = getenv("HYVE_RUN_DIR");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (run && run[0])
		snprintf(buf, n, "%s", run);
	else if (geteuid() == 0)
		snprintf(buf, n, "/run/hyve");
	else if (xdg && xdg[0])
		snprintf(buf, n, "%s/hyve", xdg);
	else
		snprintf(buf, n, "/tmp/hyve-%u", (unsigned)geteuid());
}

/*
 * Is the socket directory private?  It must be a directory (not a symlink
 * to one), owned by our euid, not writable by group or others: else a
 * local user could put a socket of theirs where hyvectl looks, or replace
 * ours.  NULL if fine or missing (nothing to connect to), else the problem
 * ("is owned by uid 1001, not 1000") in buf.
 */
static inline const char *control_dir_problem(const char *dir, char *buf, size_t n)
{
	struct stat st;
	if (lstat(dir, &st) != 0)
		return NULL;
	if (S_ISLNK(st.st_mode))
		snprintf(buf, n, "is a symlink");
	else if (!S_ISDIR(st.st_mode))
		snprintf(buf, n, "is not a directory");
	else if (st.st_uid != geteuid())
		snprintf(buf, n, "is owned by uid %u, not %u", (unsigned)st.st_uid, (unsigned)geteuid());
	else if (st.st_mode & 022)
		snprintf(buf, n, "is writable by group or others (mode %03o)", (unsigned)(st.st_mode & 0777));
	else
		return NULL;
	return buf;
}

/* Start listening (config key control.socket, "none" disables). 0 or -1. */
int control_start(struct hyve_vm *vm);
/* Remove the socket (at exit). */
void control_stop(void);

/*
 * Run fn(arg) on the main event-loop thread and wait for it: device state
 * is only ever touched from the threads that own it.
 */
void control_run_on_main(void (*fn)(void *), void *arg);

/* One handler per command; reply with control_reply() lines, then return
 * 0 (the server adds "OK") or -1 with err (it sends "ERR err"). */
struct control_conn;
void control_reply(struct control_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Stop the VM with this status once the reply is sent (suspend, destroy,
 * migration: the client must hear that it worked before we vanish). */
void control_exit_after_reply(struct control_conn *c, int status);
typedef int (*control_handler_t)(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err,
                                 size_t errlen);
void control_register(const char *command, control_handler_t fn);
/* bhyvectl's vCPU and memory verbs (core/control_vcpu.c). */
void control_vcpu_register_commands(void);
/* Extra "key value" lines for the stats command, from the layers that
 * count them (interrupt and kick paths). */
void control_register_stats(void (*fn)(struct control_conn *c));

#endif
