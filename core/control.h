/*
 * The per-VM control socket that hyvectl talks to (bhyvectl's role).
 *
 * Protocol, version 1: the client connects to the unix stream socket and
 * sends one request line
 *	HYVECTL 1 <command> [argument]\n
 * and the VM answers with zero or more "key value" lines and a final line
 *	OK [text]\n   or   ERR <message>\n
 * then closes.  A client speaking another version gets
 *	ERR protocol version N not supported (this VM speaks 1)
 * Commands: checkpoint PATH, suspend PATH, pause, resume, destroy, stats,
 * and the migration commands in core/migration.h.
 */
#ifndef HYVE_CONTROL_H
#define HYVE_CONTROL_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vm.h"

#define CONTROL_PROTO_VERSION 1

/*
 * Default socket path for a VM name: /run/hyve/NAME.sock for root, else
 * $XDG_RUNTIME_DIR/hyve/NAME.sock (or /tmp/hyve-UID/NAME.sock).  Shared by
 * hyve and hyvectl so both agree without configuration.
 */
static inline void control_default_dir(char *buf, size_t n)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (geteuid() == 0)
		snprintf(buf, n, "/run/hyve");
	else if (xdg && xdg[0])
		snprintf(buf, n, "%s/hyve", xdg);
	else
		snprintf(buf, n, "/tmp/hyve-%u", (unsigned)geteuid());
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
/* Extra "key value" lines for the stats command, from the layers that
 * count them (interrupt and kick paths). */
void control_register_stats(void (*fn)(struct control_conn *c));

#endif
