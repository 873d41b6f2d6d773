/*
 * libFuzzer target for the control socket server (core/control.c; the
 * protocol is in core/control.h): what hyvectl clients send, through a
 * real unix socket served by control_start's accept and connection threads.
 *
 *   tests/fuzz/run.sh -t 60 control
 *
 * Input: byte 0 is a separator; the rest, split at that byte, is what up
 * to 4 clients send, one after the other (the fourth gets the remainder,
 * separators included; a separator byte that does not occur: one client).
 * Each client connects, sends its bytes (reading whatever comes back
 * meanwhile), shuts down its write side and reads until the server closes.
 *
 * control.c is #included (as tests/unit/test_control.c does) to reach its
 * command table and state: every registered handler is wrapped to record
 * its calls, and the user-pause flag is reset between inputs.  The commands
 * run against stubs: the built-in ones (checkpoint, suspend, pause, resume,
 * destroy, stats) over a checkpoint_save, vCPU and VM-exit stubs that only
 * record; migrate, migrate-live and migrate-status are stand-ins registered
 * here (no migration.c: nothing connects anywhere).
 *
 * Properties checked besides the sanitizers:
 *   - every connection is answered with zero or more "key value" lines and
 *     one final "OK[ text]" or "ERR message" line, each ending in a
 *     newline, and then closed; or closed without a word;  never a hang
 *     (each client waits at most 1.5 s for the close);
 *   - a command runs exactly when the request line is well-formed by the
 *     grammar in control.h (oracle_command() below), and with the argument
 *     it carries; a line that is not gets ERR, never OK;
 *   - every connection thread ends (nconns back to 0), and the VM is asked
 *     to exit once for each destroy, force-reset, force-poweroff, suspend or migrate answered OK (after
 *     the reply), never otherwise.
 */
#include "../../core/control.c"

#include <ctype.h>
#include <signal.h>

static char tmpdir[] = "/tmp/fuzz_control.XXXXXX";
static char sock[80];

/* ---- stubs: the VM, logging ---- */

int log_level_max = LOG_ERR;
void logmsg(enum log_level lvl, const char *fmt, ...) { (void)lvl; (void)fmt; }
void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	abort();
}

static pthread_mutex_t rec_mtx = PTHREAD_MUTEX_INITIALIZER;
static int pauses;          /* vcpus_pause - vcpus_resume */
static int exits;           /* vm_request_exit calls */

void vm_request_exit(int status) { (void)status; pthread_mutex_lock(&rec_mtx); exits++; pthread_mutex_unlock(&rec_mtx); }
void vcpus_pause(struct hyve_vm *vm) { (void)vm; pthread_mutex_lock(&rec_mtx); pauses++; pthread_mutex_unlock(&rec_mtx); }
void vcpus_resume(struct hyve_vm *vm) { (void)vm; pthread_mutex_lock(&rec_mtx); pauses--; pthread_mutex_unlock(&rec_mtx); }
bool vcpus_suspended(void) { return false; }
bool vcpus_paused(void) { pthread_mutex_lock(&rec_mtx); bool p = pauses > 0; pthread_mutex_unlock(&rec_mtx); return p; }
void vcpus_get_stats(struct vcpu_stats *s) { memset(s, 0, sizeof(*s)); s->exits = 42; }
uint64_t vm_get_lowmem_size(struct vmctx *ctx) { (void)ctx; return 1 << 20; }
uint64_t vm_get_highmem_size(struct vmctx *ctx) { (void)ctx; return 0; }
int mevent_call(void (*fn)(void *), void *arg) { (void)fn; (void)arg; return -1; }   /* no loop: run inline */

/* A checkpoint "fails" when its path says so (the error path), else is recorded. */
int checkpoint_save(struct hyve_vm *vm, const char *path, bool suspend, char *err, size_t errlen)
{
	(void)vm; (void)suspend;
	if (strstr(path, "fail")) {
		snprintf(err, errlen, "%s: no space left (stub)", path);
		return -1;
	}
	return 0;
}

/* ---- stand-ins for the migration commands ---- */

static int cmd_migrate_stub(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)vm;
	if (!arg || !strchr(arg, ':')) {
		snprintf(err, errlen, "migrate needs HOST:PORT");
		return -1;
	}
	control_exit_after_reply(c, HYVE_EXIT_MIGRATED);
	return 0;
}

static int cmd_migrate_status_stub(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err,
                                   size_t errlen)
{
	(void)vm; (void)arg; (void)err; (void)errlen;
	control_reply(c, "state none");
	control_reply(c, "round 0");
	return 0;
}

/* ---- recording every handler ---- */

struct call {
	char cmd[32];
	bool has_arg;
	char arg[CONTROL_MAX_REQUEST + 1];
};
static struct call calls[8];
static int ncalls;
static control_handler_t orig_fn[MAX_COMMANDS];

#define WRAP(i)                                                                                      \
	static int wrap_##i(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err,  \
	                    size_t errlen)                                                           \
	{                                                                                            \
		record(i, arg);                                                                      \
		return orig_fn[i](vm, c, arg, err, errlen);                                          \
	}

static void record(int i, const char *arg)
{
	pthread_mutex_lock(&rec_mtx);
	if (ncalls < (int)(sizeof(calls) / sizeof(calls[0]))) {
		struct call *k = &calls[ncalls];
		snprintf(k->cmd, sizeof(k->cmd), "%s", commands[i].name);
		k->has_arg = arg != NULL;
		snprintf(k->arg, sizeof(k->arg), "%s", arg ? arg : "");
	}
	ncalls++;
	pthread_mutex_unlock(&rec_mtx);
}

WRAP(0) WRAP(1) WRAP(2) WRAP(3) WRAP(4) WRAP(5) WRAP(6) WRAP(7) WRAP(8) WRAP(9) WRAP(10) WRAP(11) WRAP(12) WRAP(13)
WRAP(14) WRAP(15)
static const control_handler_t wrappers[MAX_COMMANDS] = {
	wrap_0, wrap_1, wrap_2, wrap_3, wrap_4, wrap_5, wrap_6, wrap_7,
	wrap_8, wrap_9, wrap_10, wrap_11, wrap_12, wrap_13, wrap_14, wrap_15,
};

static bool registered(const char *name)
{
	for (int i = 0; i < ncommands; i++)
		if (strcmp(commands[i].name, name) == 0)
			return true;
	return false;
}

static void cleanup(void)
{
	control_stop();   /* removes the socket */
	rmdir(tmpdir);
}

static void setup(void)
{
	static struct hyve_vm vm = { .ncpus = 1 };
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(tmpdir))
		abort();
	atexit(cleanup);
	snprintf(sock, sizeof(sock), "%s/ctl.sock", tmpdir);
	set_config_value("name", "fuzzctl");
	set_config_value("control.socket", sock);
	control_register("migrate", cmd_migrate_stub);
	control_register("migrate-live", cmd_migrate_stub);
	control_register("migrate-status", cmd_migrate_status_stub);
	if (control_start(&vm))
		abort();
	for (int i = 0; i < ncommands; i++) {
		orig_fn[i] = commands[i].fn;
		commands[i].fn = wrappers[i];
	}
}

/* ---- the oracle: control.h's grammar ---- */

/*
 * Which command a request must run: "HYVECTL" <blanks> <version> <blanks>
 * <command>[ <argument>] "\n", the line (newline included) at most
 * CONTROL_MAX_REQUEST bytes, no NUL byte in it; version the decimal number
 * 1 in at most 9 characters (leading zeros or a '+' tolerated: a longer
 * number is another version, never one that overflowed); blanks are whitespace
 * other than newline; the command ends at the next space and is a
 * registered one; the argument is the rest after the spaces that follow
 * it (none if empty).  0 and the command, or -1: no command may run.
 */
static int oracle_command(const uint8_t *d, size_t n, char *cmd, size_t cmdcap, const char **arg, size_t *arglen)
{
	const uint8_t *nl = memchr(d, '\n', n);
	if (!nl || (size_t)(nl - d) + 1 > CONTROL_MAX_REQUEST || memchr(d, '\0', (size_t)(nl - d)))
		return -1;
	size_t len = (size_t)(nl - d), i = 7;
	if (len < 7 || memcmp(d, "HYVECTL", 7))
		return -1;
	size_t ws = i;
	while (i < len && isspace(d[i]))
		i++;
	if (i == ws)
		return -1;
	size_t tok = i;
	if (i < len && d[i] == '+')
		i++;
	while (i < len && d[i] == '0')
		i++;
	if (!(i < len && d[i] == '1'))
		return -1;
	i++;
	if ((i < len && isdigit(d[i])) || i - tok > 9)
		return -1;   /* 10, 11, ... or more than 9 characters: another version */
	ws = i;
	while (i < len && isspace(d[i]))
		i++;
	if (i == ws)
		return -1;
	size_t c0 = i;
	while (i < len && d[i] != ' ')
		i++;
	if (i == c0 || i - c0 >= cmdcap)
		return -1;
	memcpy(cmd, d + c0, i - c0);
	cmd[i - c0] = '\0';
	if (!registered(cmd))
		return -1;
	while (i < len && d[i] == ' ')
		i++;
	*arg = (const char *)d + i;
	*arglen = len - i;
	return 0;
}

/* ---- clients ---- */

#define REPLY_CAP 65536

/* Send d[0..n), shut down writing, read everything until the server closes. -1: no close within 1.5 s. */
static int client(const uint8_t *d, size_t n, char *reply, size_t *rlen)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		abort();
	size_t off = 0;
	bool wr_open = true;
	int64_t deadline = now_ms() + 1500;
	*rlen = 0;
	int rc = -1;
	for (;;) {
		if (wr_open && off == n) {
			shutdown(fd, SHUT_WR);
			wr_open = false;
		}
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		struct pollfd p = { .fd = fd, .events = (short)(POLLIN | (wr_open ? POLLOUT : 0)) };
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			char buf[4096];
			ssize_t got = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (got > 0) {
				size_t keep = (size_t)got <= REPLY_CAP - *rlen ? (size_t)got : REPLY_CAP - *rlen;
				memcpy(reply + *rlen, buf, keep);
				*rlen += keep;
			} else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
				rc = 0;   /* closed (or reset) */
				break;
			}
		}
		if (wr_open && (p.revents & (POLLOUT | POLLERR))) {
			ssize_t w = send(fd, d + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w > 0)
				off += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				off = n;   /* the server stopped reading */
		}
	}
	close(fd);
	return rc;
}

static void show(const char *what, const uint8_t *d, size_t n, const char *reply, size_t rlen)
{
	fprintf(stderr, "control: %s\n  request (%zu bytes): '", what, n);
	for (size_t i = 0; i < n && i < 200; i++)
		fprintf(stderr, isprint(d[i]) ? "%c" : "\\x%02x", d[i]);
	fprintf(stderr, "%s'\n  reply: '%.*s'\n", n > 200 ? "..." : "", (int)(rlen < 500 ? rlen : 500), reply);
}

/* Zero or more lines, the last one OK or ERR and the only one; 1: OK, 0: ERR, -1: malformed, 2: nothing. */
static int reply_verdict(const char *r, size_t n)
{
	if (n == 0)
		return 2;
	if (r[n - 1] != '\n' || memchr(r, '\0', n))
		return -1;
	size_t start = 0;
	int verdict = -1;
	while (start < n) {
		const char *nl = memchr(r + start, '\n', n - start);
		size_t len = (size_t)(nl - (r + start));
		bool last = start + len + 1 == n;
		const char *l = r + start;
		bool ok = len >= 2 && memcmp(l, "OK", 2) == 0 && (len == 2 || l[2] == ' ');
		bool er = len >= 4 && memcmp(l, "ERR ", 4) == 0;
		if ((ok || er) != last)
			return -1;
		if (last)
			verdict = ok ? 1 : 0;
		start += len + 1;
	}
	return verdict;
}

static bool verbose;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *reply;
	if (!reply) {
		setup();
		reply = malloc(REPLY_CAP);
		verbose = getenv("FUZZ_VERBOSE") != NULL;
	}
	if (size < 1)
		return 0;
	uint8_t sep = data[0];
	const uint8_t *p = data + 1, *end = data + size;
	int want_exits = 0;
	pthread_mutex_lock(&rec_mtx);
	exits = 0;
	pthread_mutex_unlock(&rec_mtx);
	for (int conn = 0; conn < 4 && (conn == 0 || p <= end); conn++) {
		const uint8_t *q = conn < 3 ? memchr(p, sep, (size_t)(end - p)) : NULL;
		size_t n = q ? (size_t)(q - p) : (size_t)(end - p);
		char cmd[32];
		const char *arg = NULL;
		size_t arglen = 0;
		int want = oracle_command(p, n, cmd, sizeof(cmd), &arg, &arglen);
		pthread_mutex_lock(&rec_mtx);
		ncalls = 0;
		pthread_mutex_unlock(&rec_mtx);
		size_t rlen;
		if (client(p, n, reply, &rlen)) {
			show("no reply and no close within 1.5 s", p, n, reply, rlen);
			abort();
		}
		int v = reply_verdict(reply, rlen);
		if (v < 0) {
			show("reply is not lines ending in one OK/ERR line", p, n, reply, rlen);
			abort();
		}
		/* The handler finished before the server closed: its record is in. */
		pthread_mutex_lock(&rec_mtx);
		int nc = ncalls;
		struct call k = calls[0];
		pthread_mutex_unlock(&rec_mtx);
		if (want != 0 && nc) {
			show("a command ran for a malformed request line", p, n, reply, rlen);
			fprintf(stderr, "  ran: %s (arg '%.100s')\n", k.cmd, k.arg);
			abort();
		}
		if (want != 0 && v == 1) {
			show("OK for a malformed request line", p, n, reply, rlen);
			abort();
		}
		if (want == 0 && (nc != 1 || strcmp(k.cmd, cmd) || k.has_arg != (arglen > 0) ||
		                  (arglen && (strlen(k.arg) != arglen || memcmp(k.arg, arg, arglen))))) {
			show(nc ? "the command ran with another name or argument" : "a well-formed request ran no command", p, n,
			     reply, rlen);
			fprintf(stderr, "  expected %s (arg %zu bytes), ran %d: %s (arg '%.100s')\n", cmd, arglen, nc,
			        nc ? k.cmd : "-", nc ? k.arg : "");
			abort();
		}
		if (want == 0 && v == 2) {
			show("a command ran and the server closed without OK/ERR", p, n, reply, rlen);
			abort();
		}
		/* These stop the VM once the client has its OK. */
		if (want == 0 && v == 1 && (strcmp(cmd, "destroy") == 0 || strcmp(cmd, "suspend") == 0 ||
		                            strcmp(cmd, "force-reset") == 0 || strcmp(cmd, "force-poweroff") == 0 ||
		                            strcmp(cmd, "migrate") == 0 || strcmp(cmd, "migrate-live") == 0))
			want_exits++;
		if (verbose)
			fprintf(stderr, "control: conn %d: %s -> %.*s", conn, want == 0 ? cmd : "(malformed)",
			        (int)strcspn(reply, "\n") + 1, rlen ? reply : "(closed)\n");
		if (!q)
			break;
		p = q + 1;
	}
	/* Every connection thread ends. */
	for (int i = 0; i < 2000 && atomic_load(&nconns) != 0; i++)
		usleep(1000);
	if (atomic_load(&nconns) != 0) {
		fprintf(stderr, "control: %d connection threads still alive\n", atomic_load(&nconns));
		abort();
	}
	pthread_mutex_lock(&rec_mtx);
	int got_exits = exits;
	pthread_mutex_unlock(&rec_mtx);
	if (got_exits != want_exits) {
		fprintf(stderr, "control: %d VM exits requested, %d expected (destroy, suspend, migrate answered OK)\n",
		        got_exits, want_exits);
		abort();
	}
	/* Back to a running, unpaused VM for the next input. */
	pthread_mutex_lock(&rec_mtx);
	pauses = 0;
	pthread_mutex_unlock(&rec_mtx);
	user_paused = false;
	return 0;
}
