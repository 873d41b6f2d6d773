/*
 * Control socket server (protocol in control.h).  One thread accepts; each
 * connection gets its own short-lived thread so a long request (a live
 * migration) does not block --migrate-status, --get-stats or --destroy.
 * Requests that change the VM's run state are serialized by op_lock (a
 * second one is answered "busy", it does not wait).
 *
 * Who may talk to it: the socket is mode 0600 (set before bind, so there is
 * no moment it is more open), the default directory is 0700 and must be
 * ours, and each peer's SO_PEERCRED uid must be ours or root.  What a peer
 * can cost: at most MAX_CONNS threads at a time, and one that does not send
 * its request line within the request timeout is dropped.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "checkpoint.h"
#include "config.h"
#include "control.h"
#include "exitcode.h"
#include "log.h"
#include "mevent.h"
#include "sandbox.h"

#define MAX_COMMANDS 32
#define MAX_CONNS 16                 /* connection threads at a time */
#define REPLY_TIMEOUT_S 5            /* a peer that stops reading its reply */

/* A peer's whole request line must arrive within this (ms; tests shorten it). */
static int request_timeout_ms = 5000;

struct control_conn {
	int fd;
	int exit_status;   /* >= 0: stop the VM after replying */
};

void control_exit_after_reply(struct control_conn *c, int status)
{
	c->exit_status = status;
}

static struct {
	const char *name;
	control_handler_t fn;
} commands[MAX_COMMANDS];
static int ncommands;
static char sock_path[108];
static int listen_fd = -1;
static struct hyve_vm *ctl_vm;
static pthread_mutex_t op_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(const char *) op_running;   /* the command holding op_lock, for "busy" */
static atomic_int nconns;                   /* connection threads alive */
static struct timespec started;

void control_register(const char *command, control_handler_t fn)
{
	if (ncommands < MAX_COMMANDS) {
		commands[ncommands].name = command;
		commands[ncommands].fn = fn;
		ncommands++;
	}
}

void control_reply(struct control_conn *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)!send(c->fd, buf, (size_t)n, MSG_NOSIGNAL);
}

/* ---- run on the main thread ---- */

struct main_call {
	void (*fn)(void *);
	void *arg;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool done;
};

static void main_call_trampoline(void *p)
{
	struct main_call *mc = p;
	mc->fn(mc->arg);
	pthread_mutex_lock(&mc->mtx);
	mc->done = true;
	pthread_cond_signal(&mc->cv);
	pthread_mutex_unlock(&mc->mtx);
}

void control_run_on_main(void (*fn)(void *), void *arg)
{
	struct main_call mc = { .fn = fn, .arg = arg, .done = false };
	pthread_mutex_init(&mc.mtx, NULL);
	pthread_cond_init(&mc.cv, NULL);
	if (mevent_call(main_call_trampoline, &mc)) {
		fn(arg);   /* no loop to ask: nothing else is running */
	} else {
		pthread_mutex_lock(&mc.mtx);
		while (!mc.done)
			pthread_cond_wait(&mc.cv, &mc.mtx);
		pthread_mutex_unlock(&mc.mtx);
	}
	pthread_mutex_destroy(&mc.mtx);
	pthread_cond_destroy(&mc.cv);
}

/* ---- built-in commands ---- */

struct ckpt_call {
	struct hyve_vm *vm;
	const char *path;
	bool suspend;
	int rc;
	char err[512];
};

static void ckpt_on_main(void *p)
{
	struct ckpt_call *c = p;
	c->rc = checkpoint_save(c->vm, c->path, c->suspend, c->err, sizeof(c->err));
}

static int do_checkpoint(struct hyve_vm *vm, struct control_conn *conn, const char *path, bool suspend, char *err,
                         size_t errlen)
{
	if (!path || path[0] != '/') {
		snprintf(err, errlen, "checkpoint needs an absolute file path");
		return -1;
	}
	struct ckpt_call c = { .vm = vm, .path = path, .suspend = suspend };
	control_run_on_main(ckpt_on_main, &c);
	if (c.rc) {
		log_warn("%s to %s failed, the VM keeps running: %s", suspend ? "suspend" : "checkpoint", path, c.err);
		snprintf(err, errlen, "%s", c.err);
		return -1;
	}
	control_reply(conn, "%s", c.err);   /* the summary */
	if (suspend) {
		log_info("suspended to %s; exiting", path);
		control_exit_after_reply(conn, HYVE_EXIT_POWEROFF);
	}
	return 0;
}

static int cmd_checkpoint(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	return do_checkpoint(vm, c, arg, false, err, errlen);
}

static int cmd_suspend(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	return do_checkpoint(vm, c, arg, true, err, errlen);
}

static bool user_paused;

static int cmd_pause(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)c; (void)arg;
	if (user_paused) {
		snprintf(err, errlen, "already paused");
		return -1;
	}
	vcpus_pause(vm);
	user_paused = true;
	return 0;
}

static int cmd_resume(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)c; (void)arg;
	if (!user_paused) {
		snprintf(err, errlen, "not paused");
		return -1;
	}
	user_paused = false;
	vcpus_resume(vm);
	return 0;
}

static int cmd_destroy(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)vm; (void)arg; (void)err; (void)errlen;
	log_info("destroyed by hyvectl");
	control_exit_after_reply(c, HYVE_EXIT_POWEROFF);
	return 0;
}

/* bhyvectl --force-reset / --force-poweroff: stop now with a reset's (0) or a power-off's (1) status. */
static int cmd_force_reset(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)vm; (void)arg; (void)err; (void)errlen;
	log_info("reset by hyvectl (--force-reset)");
	control_exit_after_reply(c, HYVE_EXIT_REBOOT);
	return 0;
}

static int cmd_force_poweroff(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)vm; (void)arg; (void)err; (void)errlen;
	log_info("powered off by hyvectl (--force-poweroff)");
	control_exit_after_reply(c, HYVE_EXIT_POWEROFF);
	return 0;
}

#define MAX_STATS_FNS 8
static void (*stats_fns[MAX_STATS_FNS])(struct control_conn *c);
static int nstats_fns;

void control_register_stats(void (*fn)(struct control_conn *c))
{
	if (nstats_fns < MAX_STATS_FNS)
		stats_fns[nstats_fns++] = fn;
}

static int cmd_stats(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)arg; (void)err; (void)errlen;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double up = (double)(now.tv_sec - started.tv_sec) + (now.tv_nsec - started.tv_nsec) / 1e9;
	struct vcpu_stats st;
	vcpus_get_stats(&st);
	control_reply(c, "name %s", get_config_value("name"));
	control_reply(c, "state %s", vcpus_suspended() ? "suspended" : vcpus_paused() ? "paused" : "running");
	control_reply(c, "uptime_s %.1f", up);
	control_reply(c, "vcpus %d", vm->ncpus);
	control_reply(c, "memory_bytes %llu",
	              (unsigned long long)(vm_get_lowmem_size(vm->ctx) + vm_get_highmem_size(vm->ctx)));
	control_reply(c, "exits_total %llu", (unsigned long long)st.exits);
	control_reply(c, "exits_io %llu", (unsigned long long)st.io);
	control_reply(c, "exits_mmio %llu", (unsigned long long)st.mmio);
	control_reply(c, "exits_emulation_fallback %llu", (unsigned long long)st.fallback);
	for (int i = 0; i < nstats_fns; i++)
		stats_fns[i](c);
	return 0;
}

/* ---- server ---- */

/*
 * Commands that only read (they run alongside anything, a stuck migration
 * included), and destroy, which must work when something else is stuck:
 * none of them takes op_lock.
 */
static bool takes_op_lock(const char *cmd)
{
	return strcmp(cmd, "stats") != 0 && strcmp(cmd, "migrate-status") != 0 && strcmp(cmd, "destroy") != 0 &&
	       strncmp(cmd, "force-", 6) != 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Read one request line into req (NUL-terminated, without the newline).
 * The deadline covers the whole line: a peer trickling a byte at a time
 * does not hold the thread any longer than one that sends nothing.
 * 0, or -1 with the reason in err.
 */
static int read_request(int fd, char *req, size_t cap, char *err, size_t errlen)
{
	size_t n = 0;
	int64_t deadline = now_ms() + request_timeout_ms;
	for (;;) {
		char *nl = memchr(req, '\n', n);
		if (nl) {
			/* Text only: a NUL would cut the command or its argument short. */
			if (memchr(req, '\0', (size_t)(nl - req))) {
				snprintf(err, errlen, "malformed request (a NUL byte in the line)");
				return -1;
			}
			*nl = '\0';
			return 0;
		}
		if (n == cap - 1) {
			snprintf(err, errlen, "request too long (a request line is at most %d bytes)", CONTROL_MAX_REQUEST);
			return -1;
		}
		int64_t left = deadline - now_ms();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = left > 0 ? poll(&p, 1, (int)left) : 0;
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0) {
			snprintf(err, errlen, "no complete request line within %d ms", request_timeout_ms);
			return -1;
		}
		ssize_t got = r > 0 ? recv(fd, req + n, cap - 1 - n, MSG_DONTWAIT) : -1;
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got <= 0) {
			snprintf(err, errlen, "request must be one line ending in a newline");
			return -1;
		}
		n += (size_t)got;
		req[n] = '\0';
	}
}

static void *conn_thread(void *p)
{
	struct control_conn c = { .fd = (int)(intptr_t)p, .exit_status = -1 };
	char req[CONTROL_MAX_REQUEST + 1] = "", err[600] = "";
	pthread_setname_np(pthread_self(), "hyve-ctl");
	sandbox_thread_landlock();   /* made by a thread that predates the sandbox */
	/* Replies are small; a peer that does not read them is dropped. */
	struct timeval tv = { REPLY_TIMEOUT_S, 0 };
	setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (read_request(c.fd, req, sizeof(req), err, sizeof(err))) {
		control_reply(&c, "ERR %s", err);
		goto out;
	}
	/* "HYVECTL", blanks, the version (at most 9 digits: no overflow), blanks, the command. */
	int ver, vend = 0, off = 0;
	if (sscanf(req, "HYVECTL %9d%n %n", &ver, &vend, &off) < 1 || off == 0 || off == vend ||
	    !isspace((unsigned char)req[7])) {
		control_reply(&c, "ERR malformed request (expected: HYVECTL <version> <command> [arg])");
		goto out;
	}
	if (ver != CONTROL_PROTO_VERSION) {
		control_reply(&c, "ERR protocol version %d not supported (this VM speaks %d)", ver, CONTROL_PROTO_VERSION);
		goto out;
	}
	char cmd[32];
	size_t cmdlen = strcspn(req + off, " ");
	if (cmdlen == 0 || cmdlen >= sizeof(cmd)) {
		control_reply(&c, cmdlen ? "ERR command name too long" : "ERR malformed request (no command)");
		goto out;
	}
	memcpy(cmd, req + off, cmdlen);
	cmd[cmdlen] = '\0';
	const char *arg = req + off + cmdlen;
	arg += strspn(arg, " ");
	for (int i = 0; i < ncommands; i++) {
		if (strcmp(commands[i].name, cmd))
			continue;
		bool locked = takes_op_lock(cmd);
		if (locked && pthread_mutex_trylock(&op_lock)) {
			const char *running = atomic_load(&op_running);
			control_reply(&c, "ERR busy: %s in progress (--destroy still works)", running ? running : "another request");
			goto out;
		}
		if (locked)
			atomic_store(&op_running, commands[i].name);
		int rc = commands[i].fn(ctl_vm, &c, arg[0] ? arg : NULL, err, sizeof(err));
		if (locked) {
			atomic_store(&op_running, NULL);
			pthread_mutex_unlock(&op_lock);
		}
		if (rc)
			control_reply(&c, "ERR %s", err[0] ? err : "failed");
		else
			control_reply(&c, "OK");
		goto out;
	}
	control_reply(&c, "ERR unknown command '%s'", cmd);
out:
	close(c.fd);
	if (c.exit_status >= 0)
		vm_request_exit(c.exit_status);
	atomic_fetch_sub(&nconns, 1);
	return NULL;
}

/* A one-line refusal to a peer we will not serve; never blocks the accept thread. */
static void refuse(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(int fd, const char *fmt, ...)
{
	char buf[256] = "ERR ";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf + 4, sizeof(buf) - 5, fmt, ap);
	va_end(ap);
	strcat(buf, "\n");
	(void)!send(fd, buf, strlen(buf), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

static void *accept_thread(void *p)
{
	(void)p;
	pthread_setname_np(pthread_self(), "hyve-ctl-accept");
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				struct timespec ts = { 0, 100000000 };   /* out of descriptors: let some close */
				nanosleep(&ts, NULL);
				continue;
			}
			return NULL;
		}
		/* Only our own user and root: the socket's mode says so too, this holds if it is loosened. */
		struct ucred cred;
		socklen_t credlen = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) ||
		    (cred.uid != 0 && cred.uid != geteuid())) {
			refuse(fd, "permission denied: uid %u may not control this VM", (unsigned)cred.uid);
			continue;
		}
		if (atomic_fetch_add(&nconns, 1) >= MAX_CONNS) {
			atomic_fetch_sub(&nconns, 1);
			refuse(fd, "busy: too many control connections (at most %d at a time)", MAX_CONNS);
			continue;
		}
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &a, conn_thread, (void *)(intptr_t)fd)) {
			atomic_fetch_sub(&nconns, 1);
			refuse(fd, "busy: cannot start a thread for this connection");
		}
		pthread_attr_destroy(&a);
	}
}

/*
 * Is something answering on the socket (a live VM of the same name)?
 * Non-blocking: a listener with a full backlog answers EAGAIN, and is live.
 */
static bool socket_alive(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	int r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	bool alive = r == 0 || errno == EAGAIN || errno == EINPROGRESS;
	close(fd);
	return alive;
}

int control_start(struct hyve_vm *vm)
{
	const char *cfg = get_config_value("control.socket");
	char dir[108];
	clock_gettime(CLOCK_MONOTONIC, &started);
	ctl_vm = vm;
	control_register("checkpoint", cmd_checkpoint);
	control_register("suspend", cmd_suspend);
	control_register("pause", cmd_pause);
	control_register("resume", cmd_resume);
	control_register("destroy", cmd_destroy);
	control_register("force-reset", cmd_force_reset);
	control_register("force-poweroff", cmd_force_poweroff);
	control_register("stats", cmd_stats);
	/* vCPU threads start parked (they have not started yet: nothing to wait for). */
	if (get_config_bool_default("boot.paused", false)) {
		vcpus_pause(vm);
		user_paused = true;
	}
	if (cfg && strcmp(cfg, "none") == 0)
		return 0;
	if (cfg) {
		if (strlen(cfg) >= sizeof(sock_path)) {
			log_err("config: control.socket: path longer than %zu bytes", sizeof(sock_path) - 1);
			return -1;
		}
		snprintf(sock_path, sizeof(sock_path), "%s", cfg);
	} else {
		control_default_dir(dir, sizeof(dir));
		if (mkdir(dir, 0700) && errno != EEXIST) {
			log_warn("control socket directory %s: %s; hyvectl will not reach this VM", dir, strerror(errno));
			return 0;
		}
		/* One that was there before must be as private as one we made. */
		char why[160];
		if (control_dir_problem(dir, why, sizeof(why))) {
			log_err("control socket directory %s %s; remove it or set control.socket", dir, why);
			return -1;
		}
		if (snprintf(sock_path, sizeof(sock_path), "%s/%s.sock", dir, get_config_value("name")) >=
		    (int)sizeof(sock_path)) {
			log_err("control socket path for VM '%s' is too long; set control.socket", get_config_value("name"));
			return -1;
		}
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	struct stat st;
	if (lstat(sock_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_err("control socket %s exists and is not a socket", sock_path);
			sock_path[0] = '\0';
			return -1;
		}
		if (socket_alive(&sa)) {
			log_err("a VM named '%s' is already running (control socket %s)", get_config_value("name"), sock_path);
			sock_path[0] = '\0';
			return -1;
		}
		unlink(sock_path);   /* left behind by a hyve that died */
	}
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/*
	 * Linux creates the socket file with the socket's own mode (less the
	 * umask): set before bind, the file is 0600 from its first moment; a
	 * chmod after bind would leave a window with the umask's mode.
	 */
	if (listen_fd < 0 || fchmod(listen_fd, 0600) || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(listen_fd, MAX_CONNS)) {
		log_err("control socket %s: %s", sock_path, strerror(errno));
		sock_path[0] = '\0';
		return -1;
	}
	sandbox_allow_parent(sock_path, true);   /* removed at exit */
	pthread_t t;
	if (pthread_create(&t, NULL, accept_thread, NULL)) {
		log_err("cannot start the control thread");
		return -1;
	}
	pthread_detach(t);
	log_debug("control socket %s", sock_path);
	return 0;
}

void control_stop(void)
{
	if (sock_path[0])
		unlink(sock_path);
	sock_path[0] = '\0';
}
