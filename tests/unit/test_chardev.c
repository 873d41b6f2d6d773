/*
 * Unit tests for devices/chardev.c, the UART's and virtio-console's
 * backend layer, driven by the real event loop (core/mevent.c) without
 * /dev/kvm.  The other end of every backend is real: a python3 relay for
 * sock= and tcp= (a client process whose stdin/stdout are pipes to this
 * test), a pty pair for a tty (this test holds the master, the nmdm-like
 * other end), pipes for stdio, a file for file=.  A small fake device
 * takes the callbacks, reads into a buffer with a settable limit (input
 * flow control) and writes a pending buffer (output flow control).
 *
 * chardev.c is #included to reach its state (the client socket's buffer
 * size, the listener's address).
 * test-sources: core/mevent.c core/sandbox_landlock.c
 */
#include "../../devices/chardev.c"

#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/wait.h>

#include "../../core/exitcode.h"

/* ---- reporting and fakes of the core ---- */

#include "check.h"

static char last_log[512];      /* the last message above debug level */
static int nwarn, ninfo;

void logmsg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	if (lvl != LOG_DEBUG) {
		va_start(ap, fmt);
		vsnprintf(last_log, sizeof(last_log), fmt, ap);
		va_end(ap);
		nwarn += lvl == LOG_WARN;
		ninfo += lvl == LOG_INFO;
	}
	if (!getenv("TEST_VERBOSE"))
		return;
	va_start(ap, fmt);
	fprintf(stderr, "hyve: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	abort();
}

static int exit_status = -1;
void vm_request_exit(int status)
{
	if (exit_status < 0)
		exit_status = status;
	mevent_wakeup();
}
int vm_exit_requested(void) { return exit_status; }

/* ---- the event loop, run until a condition holds ---- */

struct waiter {
	bool (*cond)(void *);
	void *arg;
	struct timespec deadline;
	bool met;
};

static void tick(int fd, void *arg)
{
	(void)fd;
	struct waiter *w = arg;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (w->cond && w->cond(w->arg)) {
		w->met = true;
		vm_request_exit(0);
	} else if (now.tv_sec > w->deadline.tv_sec ||
	           (now.tv_sec == w->deadline.tv_sec && now.tv_nsec >= w->deadline.tv_nsec)) {
		vm_request_exit(0);
	}
}

/* Run mevent_dispatch() until cond(arg) (checked every millisecond) or timeout_ms. */
static bool run_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
	struct waiter w = { .cond = cond, .arg = arg };
	clock_gettime(CLOCK_MONOTONIC, &w.deadline);
	w.deadline.tv_sec += timeout_ms / 1000;
	w.deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (w.deadline.tv_nsec >= 1000000000) {
		w.deadline.tv_sec++;
		w.deadline.tv_nsec -= 1000000000;
	}
	struct mevent *t = mevent_add_timer(1000000, 1000000, tick, &w);
	exit_status = -1;
	mevent_dispatch();
	exit_status = -1;
	mevent_delete(t);   /* the loop is not dispatching: safe */
	return w.met;
}

static void run_for(int ms)
{
	run_until(NULL, NULL, ms);
}

/* ---- a fake device ---- */

#define DEV_BUF (4u << 20)

struct dev {
	struct chardev *cd;
	uint8_t *in;                  /* bytes read */
	size_t nin, limit;            /* takes input up to limit bytes in all */
	bool rx_off;
	int readable, writable, connected, disconnected, in_end;
	const uint8_t *out;           /* output still to write */
	size_t outlen, outoff;
	int write0, write_fail;       /* chardev_write() returned 0 / -1 */
};

static void dev_readable(void *arg)
{
	struct dev *d = arg;
	d->readable++;
	for (;;) {
		size_t room = d->limit - d->nin;
		if (room == 0) {
			chardev_set_rx(d->cd, false);   /* full: the bytes wait at the other end */
			d->rx_off = true;
			return;
		}
		ssize_t n = chardev_read(d->cd, d->in + d->nin, room < 65536 ? room : 65536);
		if (n > 0) {
			d->nin += (size_t)n;
			continue;
		}
		if (n < 0)
			d->in_end++;
		return;
	}
}

static void dev_pump(struct dev *d)
{
	while (d->outoff < d->outlen) {
		ssize_t w = chardev_write(d->cd, d->out + d->outoff, d->outlen - d->outoff);
		if (w > 0) {
			d->outoff += (size_t)w;
			continue;
		}
		if (w == 0) {
			d->write0++;
		} else {
			d->write_fail++;
			d->outoff = d->outlen;   /* nowhere to write: the device drops it */
		}
		return;
	}
}

static void dev_writable(void *arg)
{
	struct dev *d = arg;
	d->writable++;
	dev_pump(d);
}

static void dev_connected(void *arg) { ((struct dev *)arg)->connected++; }
static void dev_disconnected(void *arg) { ((struct dev *)arg)->disconnected++; }

static const struct chardev_ops dev_ops = {
	.readable = dev_readable, .writable = dev_writable,
	.connected = dev_connected, .disconnected = dev_disconnected,
};

/* Every device stays reachable (LeakSanitizer): a chardev may still point at it. */
static struct dev *devs[32];
static int ndevs;

static struct dev *dev_new(void)
{
	struct dev *d = calloc(1, sizeof(*d));
	d->in = malloc(DEV_BUF);
	d->limit = DEV_BUF;
	if (ndevs < 32)
		devs[ndevs++] = d;
	return d;
}

static void dev_send(struct dev *d, const void *p, size_t n)
{
	d->out = p;
	d->outlen = n;
	d->outoff = 0;
	dev_pump(d);
}

static struct chardev *dev_open(struct dev *d, const char *spec, unsigned flags, char *err, size_t errlen)
{
	d->cd = chardev_open(spec, flags, "test", &dev_ops, d, err, errlen);
	return d->cd;
}

static bool dev_has(void *arg);   /* below, with the conditions */

/* ---- a relay client: python3 connected to the socket, stdin/stdout piped here ---- */

static const char relay_py[] =
	"import os, select, socket, sys\n"
	"kind, addr = sys.argv[1], sys.argv[2]\n"
	"if kind == 'unix':\n"
	"    s = socket.socket(socket.AF_UNIX)\n"
	"    target = addr\n"
	"else:\n"
	"    host, port = addr.rsplit(':', 1)\n"
	"    host = host.strip('[]')\n"
	"    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)\n"
	"    target = (host, int(port))\n"
	"s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # backpressure comes soon\n"
	"s.connect(target)\n"
	"rd = [0, s]\n"
	"while True:\n"
	"    r, _, _ = select.select(rd, [], [])\n"
	"    if 0 in r:\n"
	"        d = os.read(0, 65536)\n"
	"        if not d:\n"
	"            break\n"
	"        s.sendall(d)\n"
	"    if s in r:\n"
	"        d = s.recv(65536)\n"
	"        if not d:\n"
	"            break\n"
	"        os.write(1, d)\n"
	"s.close()\n";

struct client {
	pid_t pid;
	int to, from;                 /* its stdin (write end), its stdout (read end, non-blocking) */
	uint8_t *got;
	size_t ngot;
	bool eof;
};

extern char **environ;

static struct client *client_start(const char *kind, const char *addr)
{
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
		return NULL;
	struct client *c = calloc(1, sizeof(*c));
	c->got = malloc(DEV_BUF);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	if (!getenv("TEST_VERBOSE"))
		posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	char *argv[] = { "python3", "-c", (char *)relay_py, (char *)kind, (char *)addr, NULL };
	int rc = posix_spawnp(&c->pid, "python3", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in[0]);
	close(out[1]);
	if (rc != 0) {
		close(in[1]);
		close(out[0]);
		free(c->got);
		free(c);
		return NULL;
	}
	c->to = in[1];
	c->from = out[0];
	fcntl(c->from, F_SETFL, O_NONBLOCK);
	return c;
}

/* Take what the client printed (what the chardev sent it). */
static void client_poll(struct client *c)
{
	for (;;) {
		ssize_t n = read(c->from, c->got + c->ngot, DEV_BUF - c->ngot);
		if (n > 0) {
			c->ngot += (size_t)n;
			continue;
		}
		if (n == 0)
			c->eof = true;
		return;
	}
}

static bool client_send(struct client *c, const void *p, size_t n)
{
	return write(c->to, p, n) == (ssize_t)n;
}

/* Hang up (its stdin closed: the relay closes the socket) and reap it. */
static void client_end(struct client *c)
{
	if (c->to >= 0)
		close(c->to);
	c->to = -1;
	waitpid(c->pid, NULL, 0);
	close(c->from);
	free(c->got);
	free(c);
}

/* ---- conditions for run_until ---- */

struct want_bytes {
	struct client *c;
	size_t n;
};

static bool client_got_n(void *arg)
{
	struct want_bytes *w = arg;
	client_poll(w->c);
	return w->c->ngot >= w->n;
}

static bool client_eof(void *arg)
{
	struct client *c = arg;
	client_poll(c);
	return c->eof;
}

struct want_count {
	int *counter;
	int n;
};

static bool count_reached(void *arg)
{
	struct want_count *w = arg;
	return *w->counter >= w->n;
}

struct want_dev {
	struct dev *d;
	size_t n;
};

static bool dev_has(void *arg)
{
	struct want_dev *w = arg;
	return w->d->nin >= w->n;
}

/* The device's output fully taken and what the client got is n bytes. */
struct want_flow {
	struct dev *d;
	struct client *c;
	size_t n;
};

static bool flow_done(void *arg)
{
	struct want_flow *w = arg;
	client_poll(w->c);
	return w->d->outoff == w->d->outlen && w->c->ngot >= w->n;
}

static bool wait_count(int *counter, int n, int ms)
{
	struct want_count w = { counter, n };
	return run_until(count_reached, &w, ms);
}

static bool wait_dev(struct dev *d, size_t n, int ms)
{
	struct want_dev w = { d, n };
	return run_until(dev_has, &w, ms);
}

static bool wait_client(struct client *c, size_t n, int ms)
{
	struct want_bytes w = { c, n };
	return run_until(client_got_n, &w, ms);
}

/* ---- helpers ---- */

static char tmpdir[] = "/tmp/test_chardev.XXXXXX";
static uint8_t pattern[2u << 20];

static bool one_line(const char *s)
{
	return s[0] && !strchr(s, '\n');
}

static int free_tcp_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	if (bind(s, (struct sockaddr *)&sin, sizeof(sin)) != 0 || getsockname(s, (struct sockaddr *)&sin, &len) != 0) {
		close(s);
		return -1;
	}
	close(s);
	return ntohs(sin.sin_port);
}

/* ---- servers: the same scenario for sock= and tcp= ---- */

static void test_server(const char *what, const char *spec, const char *kind, const char *addr)
{
	char err[256];
	struct dev *d = dev_new();
	bool opened = dev_open(d, spec, 0, err, sizeof(err)) != NULL;
	CHECK(opened, "%s: open %s (%s)", what, spec, opened ? "listening" : err);
	if (!d->cd)
		return;
	CHECK(!chardev_connected(d->cd) && chardev_write(d->cd, "x", 1) == -1 && chardev_read(d->cd, err, 1) == -1,
	      "%s: no client: not connected, writes have nowhere to go (-1: dropped)", what);

	/* A client: bytes both ways. */
	struct client *c = client_start(kind, addr);
	CHECK(c && wait_count(&d->connected, 1, 5000) && chardev_connected(d->cd), "%s: client connects", what);
	if (!c || !d->connected)
		return;
	CHECK(client_send(c, "hello device", 12) && wait_dev(d, 12, 5000) && !memcmp(d->in, "hello device", 12),
	      "%s: client -> device: 12 bytes", what);
	dev_send(d, "hello client", 12);
	CHECK(wait_client(c, 12, 5000) && !memcmp(c->got, "hello client", 12), "%s: device -> client: 12 bytes",
	      what);

	/* Input flow control: the device takes 10 more bytes, then input waits. */
	d->limit = d->nin + 10;
	static uint8_t msg[100];
	for (int i = 0; i < 100; i++)
		msg[i] = (uint8_t)('a' + i % 26);
	client_send(c, msg, sizeof(msg));
	wait_dev(d, d->limit, 5000);
	int before = d->readable;
	run_for(100);
	CHECK(d->nin == 22 && d->rx_off && d->readable == before,
	      "%s: input off at the device's limit, nothing read and no callbacks meanwhile (%zu bytes)", what, d->nin);
	d->limit = DEV_BUF;
	d->rx_off = false;
	chardev_set_rx(d->cd, true);
	CHECK(wait_dev(d, 112, 5000) && !memcmp(d->in + 12, msg, 100), "%s: input on again: all 100 bytes, in order",
	      what);

	/* Output flow control: 2 MiB to a client that reads only later. */
	int sndbuf = 8192;
	setsockopt(d->cd->cur->out_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	c->ngot = 0;
	dev_send(d, pattern, sizeof(pattern));
	CHECK(d->write0 == 1 && d->outoff < sizeof(pattern) && chardev_write(d->cd, "y", 1) == 0,
	      "%s: the backend fills up: write returns 0 (%zu bytes taken), and 0 again until writable", what,
	      d->outoff);
	struct want_flow wf = { d, c, sizeof(pattern) };
	bool flowed = run_until(flow_done, &wf, 30000);
	CHECK(flowed && c->ngot == sizeof(pattern) && !memcmp(c->got, pattern, sizeof(pattern)),
	      "%s: writable resumes: %zu bytes arrive intact and in order (%d writable callbacks)", what, c->ngot,
	      d->writable);

	/* One client at a time: a second one is accepted and closed at once. */
	ninfo = 0;
	struct client *c2 = client_start(kind, addr);
	CHECK(c2 && run_until(client_eof, c2, 5000) && ninfo == 1 &&
	      strstr(last_log, "a client is already connected; refusing another") && d->connected == 1,
	      "%s: a second client is refused (%s)", what, last_log);
	if (c2)
		client_end(c2);
	c->ngot = 0;
	dev_send(d, "still", 5);
	CHECK(wait_client(c, 5, 5000) && !memcmp(c->got, "still", 5), "%s: the first client keeps working", what);

	/* Disconnect, then reconnect. */
	client_end(c);
	CHECK(wait_count(&d->disconnected, 1, 5000) && !chardev_connected(d->cd) && d->in_end == 1,
	      "%s: the client hangs up: input ends, disconnected", what);
	d->write_fail = 0;
	dev_send(d, "lost", 4);
	CHECK(d->write_fail == 1, "%s: output with nobody connected: -1, dropped", what);
	c = client_start(kind, addr);
	CHECK(c && wait_count(&d->connected, 2, 5000), "%s: a new client connects", what);
	if (!c)
		return;
	dev_send(d, "new", 3);
	size_t had = d->nin;
	client_send(c, "again", 5);
	CHECK(wait_client(c, 3, 5000) && c->ngot == 3 && !memcmp(c->got, "new", 3) && wait_dev(d, had + 5, 5000) &&
	      !memcmp(d->in + had, "again", 5), "%s: the new client gets only new output; bytes both ways", what);

	/* A client that hangs up while the device does not read is dropped for the next one. */
	chardev_set_rx(d->cd, false);
	client_end(c);
	run_for(100);
	CHECK(d->disconnected == 1, "%s: input off: the hang-up is not seen yet", what);
	c = client_start(kind, addr);
	CHECK(c && wait_count(&d->connected, 3, 5000) && d->disconnected == 2,
	      "%s: the next client brings it out: disconnected, then connected", what);
	had = d->nin;
	client_send(c, "on", 2);
	CHECK(wait_dev(d, had + 2, 5000), "%s: a new client starts with input on", what);
	client_end(c);
	wait_count(&d->disconnected, 3, 5000);
	chardev_close(d->cd);
	CHECK(d->disconnected == 3 && d->connected == 3, "%s: connected and disconnected paired (%d/%d)", what,
	      d->connected, d->disconnected);
}

static void test_sock(void)
{
	char path[96], spec[160], err[256], notsock[96], live[96];
	snprintf(path, sizeof(path), "%s/s.sock", tmpdir);
	snprintf(spec, sizeof(spec), "sock=%s", path);
	/* A stale socket file is replaced. */
	int st = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	bind(st, (struct sockaddr *)&sun, sizeof(sun));
	close(st);
	test_server("sock", spec, "unix", path);
	CHECK(access(path, F_OK) != 0, "sock: the socket file is removed at close");

	struct dev *d = dev_new();
	snprintf(notsock, sizeof(notsock), "%s/plain", tmpdir);
	close(open(notsock, O_CREAT | O_WRONLY, 0644));
	snprintf(spec, sizeof(spec), "sock=%s", notsock);
	CHECK(!dev_open(d, spec, 0, err, sizeof(err)) && strstr(err, "exists and is not a socket") && one_line(err) &&
	      access(notsock, F_OK) == 0, "sock: a file that is not a socket is refused and kept (%s)", err);
	CHECK(!dev_open(d, notsock, CHARDEV_F_BARE_SOCK, err, sizeof(err)) && strstr(err, "exists and is not a socket"),
	      "sock: so is a bare PATH for a console port (%s)", err);

	snprintf(live, sizeof(live), "%s/live.sock", tmpdir);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", live);
	bind(lfd, (struct sockaddr *)&sun, sizeof(sun));
	listen(lfd, 4);
	snprintf(spec, sizeof(spec), "sock=%s", live);
	CHECK(!dev_open(d, spec, 0, err, sizeof(err)) && strstr(err, "is in use (another process listens on it)") &&
	      one_line(err) && access(live, F_OK) == 0, "sock: a live listener's path is refused (%s)", err);
	close(lfd);
	unlink(live);

	char longp[200] = "sock=/";
	memset(longp + 6, 'a', 150);
	longp[156] = '\0';
	CHECK(!dev_open(d, longp, 0, err, sizeof(err)) && strstr(err, "socket path too long") && one_line(err),
	      "sock: an over-long path is refused (%s)", err);
	CHECK(!dev_open(d, "sock=", 0, err, sizeof(err)) && strstr(err, "expected") && one_line(err),
	      "sock: an empty path is refused (%s)", err);
	unlink(notsock);
}

static void test_tcp(void)
{
	char spec[64], addr[64], err[256];
	int port = free_tcp_port();
	snprintf(spec, sizeof(spec), "tcp=127.0.0.1:%d", port);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	test_server("tcp", spec, "tcp", addr);

	/* tcp=:PORT listens on 127.0.0.1, nowhere else. */
	struct dev *d = dev_new();
	port = free_tcp_port();
	snprintf(spec, sizeof(spec), "tcp=:%d", port);
	bool opened = dev_open(d, spec, 0, err, sizeof(err)) != NULL;
	CHECK(opened, "tcp: %s opens (%s)", spec, opened ? "listening" : err);
	if (d->cd) {
		struct sockaddr_in sin;
		socklen_t len = sizeof(sin);
		getsockname(d->cd->lfd, (struct sockaddr *)&sin, &len);
		CHECK(sin.sin_family == AF_INET && sin.sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
		      ntohs(sin.sin_port) == port, "tcp: tcp=:PORT binds 127.0.0.1 (not a wildcard)");
		/* The port is in use now. */
		struct dev *d2 = dev_new();
		snprintf(spec, sizeof(spec), "tcp=127.0.0.1:%d", port);
		CHECK(!dev_open(d2, spec, 0, err, sizeof(err)) && strstr(err, "Address already in use") && one_line(err),
		      "tcp: a port in use is refused (%s)", err);
		chardev_close(d->cd);
	}
	/* IPv6 in brackets, where the host has ::1. */
	port = free_tcp_port();
	snprintf(spec, sizeof(spec), "tcp=[::1]:%d", port);
	if (dev_open(d, spec, 0, err, sizeof(err))) {
		snprintf(addr, sizeof(addr), "[::1]:%d", port);
		struct client *c = client_start("tcp", addr);
		CHECK(c && wait_count(&d->connected, 1, 5000), "tcp: a client over IPv6 ([::1])");
		if (c)
			client_end(c);
		chardev_close(d->cd);
	} else {
		CHECK(true, "tcp: no IPv6 loopback here (%s), skipped", err);
	}

	static const struct {
		const char *spec, *want;
	} bad[] = {
		{ "tcp=127.0.0.1", "expected tcp=ADDR:PORT" },
		{ "tcp=", "expected tcp=ADDR:PORT" },
		{ "tcp=1.2.3:80", "bad address '1.2.3'" },
		{ "tcp=example.com:80", "bad address 'example.com'" },
		{ "tcp=::1:80", "expected tcp=ADDR:PORT" },
		{ "tcp=[::1:80", "expected tcp=ADDR:PORT" },
		{ "tcp=[nope]:80", "bad address 'nope'" },
		{ "tcp=127.0.0.1:0", "bad port '0'" },
		{ "tcp=127.0.0.1:65536", "bad port '65536'" },
		{ "tcp=127.0.0.1:http", "bad port 'http'" },
		{ "tcp=127.0.0.1:-1", "bad port '-1'" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct chardev_spec ps;
		bool parse_bad = chardev_parse(bad[i].spec, 0, &ps, err, sizeof(err)) == -1 && strstr(err, bad[i].want);
		CHECK(parse_bad && !dev_open(d, bad[i].spec, 0, err, sizeof(err)) && strstr(err, bad[i].want) &&
		      one_line(err), "tcp: '%s' refused (%s)", bad[i].spec, err);
	}
}

static int open_pty(char *path, size_t len)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (m < 0 || grantpt(m) || unlockpt(m) || !ptsname(m)) {
		if (m >= 0)
			close(m);
		return -1;
	}
	snprintf(path, len, "%s", ptsname(m));
	return m;
}

struct want_master {
	int m;
	uint8_t *buf;
	size_t have, n;
	struct dev *d;
};

static bool master_got(void *arg)
{
	struct want_master *w = arg;
	for (;;) {
		ssize_t r = read(w->m, w->buf + w->have, DEV_BUF - w->have);
		if (r <= 0)
			break;
		w->have += (size_t)r;
	}
	return w->have >= w->n && (!w->d || w->d->outoff == w->d->outlen);
}

static void test_tty(void)
{
	char path[64], err[256];
	int m = open_pty(path, sizeof(path));
	if (m < 0) {
		CHECK(true, "tty: no pty here, skipped");
		return;
	}
	int watch = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);   /* the slave's mode, seen from outside */
	struct termios before, during, after;
	tcgetattr(watch, &before);
	struct dev *d = dev_new();
	CHECK(dev_open(d, path, 0, err, sizeof(err)) && d->cd->kind == CHARDEV_TTY && chardev_connected(d->cd),
	      "tty: %s opens as a tty, connected from the start", path);
	if (!d->cd)
		return;
	tcgetattr(watch, &during);
	CHECK((before.c_lflag & (ICANON | ECHO)) && !(during.c_lflag & (ICANON | ECHO | ISIG)) &&
	      !(during.c_oflag & OPOST) && (during.c_cflag & CLOCAL), "tty: raw mode (cfmakeraw, CLOCAL)");

	/* Bytes both ways, untranslated. */
	CHECK(write(m, "ping\r\n", 6) == 6 && wait_dev(d, 6, 5000) && !memcmp(d->in, "ping\r\n", 6),
	      "tty: other end -> device: 6 bytes, untranslated");
	uint8_t *buf = malloc(DEV_BUF);
	struct want_master wm = { m, buf, 0, 6, NULL };
	dev_send(d, "pong\r\n", 6);
	CHECK(run_until(master_got, &wm, 5000) && wm.have == 6 && !memcmp(buf, "pong\r\n", 6),
	      "tty: device -> other end: 6 bytes, untranslated");

	/* Output flow control: nobody reads the master for a while. */
	size_t n = 256 * 1024;
	dev_send(d, pattern, n);
	CHECK(d->write0 == 1 && d->outoff < n, "tty: the pty fills up: write returns 0 (%zu bytes taken)", d->outoff);
	wm = (struct want_master){ m, buf, 0, n, d };
	bool flowed = run_until(master_got, &wm, 30000);
	CHECK(flowed && wm.have == n && !memcmp(buf, pattern, n),
	      "tty: writable resumes: %zu bytes arrive intact and in order", wm.have);

	/* Input flow control. */
	d->limit = d->nin + 4;
	CHECK(write(m, "0123456789", 10) == 10 && wait_dev(d, d->limit, 5000), "tty: 10 bytes from the other end");
	run_for(50);
	CHECK(d->nin == 10 && d->rx_off, "tty: the device takes 4, input off");
	d->limit = DEV_BUF;
	chardev_set_rx(d->cd, true);
	CHECK(wait_dev(d, 16, 5000) && !memcmp(d->in + 6, "0123456789", 10), "tty: input on: the rest, in order");

	/* The other end goes away (a pty's master closed): input ends, output is discarded once warned. */
	close(m);
	nwarn = 0;
	CHECK(wait_count(&d->in_end, 1, 5000), "tty: the hang-up ends input");
	dev_send(d, "lost", 4);
	CHECK(d->write_fail == 1 && nwarn == 1 && strstr(last_log, "test: output: Input/output error; discarding output") &&
	      wait_count(&d->disconnected, 1, 5000) && !chardev_connected(d->cd),
	      "tty: output after the hang-up: -1, one warning, disconnected (%s)", last_log);
	dev_send(d, "more", 4);
	CHECK(d->write_fail == 2 && nwarn == 1, "tty: later output dropped quietly");
	chardev_close(d->cd);
	close(watch);

	/* The mode is restored at close (a pty whose other end is still there). */
	m = open_pty(path, sizeof(path));
	watch = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	tcgetattr(watch, &before);
	d = dev_new();
	dev_open(d, path, 0, err, sizeof(err));
	chardev_close(d->cd);
	tcgetattr(watch, &after);
	CHECK(after.c_lflag == before.c_lflag && after.c_iflag == before.c_iflag && after.c_oflag == before.c_oflag &&
	      after.c_cflag == before.c_cflag, "tty: chardev_close restores the mode");
	/* A console port's bare PATH naming a character device is a tty, not a socket. */
	d = dev_new();
	CHECK(dev_open(d, path, CHARDEV_F_BARE_SOCK, err, sizeof(err)) && d->cd->kind == CHARDEV_TTY,
	      "tty: a console port's bare PATH to a tty opens it as a tty");
	if (d->cd)
		chardev_close(d->cd);
	close(watch);
	close(m);

	/* Not ttys. */
	char plain[128];
	snprintf(plain, sizeof(plain), "%s/plain.txt", tmpdir);
	close(open(plain, O_CREAT | O_WRONLY, 0644));
	CHECK(!dev_open(d, "/dev/null", 0, err, sizeof(err)) && strstr(err, "/dev/null is not a tty") && one_line(err),
	      "tty: a character device that is not a tty is refused (%s)", err);
	CHECK(!dev_open(d, plain, 0, err, sizeof(err)) && strstr(err, "is not a tty") && one_line(err),
	      "tty: a regular file is refused (%s)", err);
	CHECK(!dev_open(d, "/nonexistent/ttyX", 0, err, sizeof(err)) && strstr(err, "No such file or directory") &&
	      one_line(err), "tty: a missing device is refused (%s)", err);
	CHECK(!dev_open(d, "telepathy", 0, err, sizeof(err)) && strstr(err, "'telepathy': expected") && one_line(err),
	      "tty: a bare word is no tty path (%s)", err);
	CHECK(!dev_open(d, "stdio", 0, err, sizeof(err)) && strstr(err, "expected"),
	      "stdio: refused without CHARDEV_F_STDIO, as for console ports (%s)", err);
	unlink(plain);
	free(buf);
}

static void test_file(void)
{
	char path[128], spec[160], err[256], buf[64];
	snprintf(path, sizeof(path), "%s/out.log", tmpdir);
	snprintf(spec, sizeof(spec), "file=%s", path);
	int fd = open(path, O_CREAT | O_WRONLY, 0644);
	CHECK(write(fd, "old:", 4) == 4, "file: an existing file");
	close(fd);
	struct dev *d = dev_new();
	CHECK(dev_open(d, spec, 0, err, sizeof(err)) && chardev_connected(d->cd), "file: opens, connected");
	if (!d->cd)
		return;
	dev_send(d, "abc", 3);
	CHECK(d->outoff == 3 && chardev_read(d->cd, buf, sizeof(buf)) == -1, "file: output taken; no input (-1)");
	run_for(30);
	CHECK(d->readable == 0, "file: no readable callbacks");
	chardev_close(d->cd);
	fd = open(path, O_RDONLY);
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	CHECK(n == 7 && !memcmp(buf, "old:abc", 7), "file: output appended");
	CHECK(!dev_open(d, "file=/nonexistent/dir/x", 0, err, sizeof(err)) &&
	      strstr(err, "/nonexistent/dir/x: No such file or directory") && one_line(err),
	      "file: an unusable path is refused (%s)", err);
	unlink(path);
}

/* Last: it takes fds 0 and 1. */
static void test_stdio(void)
{
	char err[256];
	int inp[2], outp[2];
	if (pipe(inp) || pipe(outp))
		return;
	check_fd = dup(STDOUT_FILENO);
	dup2(inp[0], STDIN_FILENO);
	dup2(outp[1], STDOUT_FILENO);
	close(inp[0]);
	close(outp[1]);
	fcntl(outp[0], F_SETFL, O_NONBLOCK);
	struct dev *d = dev_new();
	CHECK(dev_open(d, "stdio", CHARDEV_F_STDIO, err, sizeof(err)) && chardev_connected(d->cd),
	      "stdio: opens on pipes");
	struct dev *d2 = dev_new();
	CHECK(!dev_open(d2, "stdio", CHARDEV_F_STDIO, err, sizeof(err)) && strstr(err, "stdio is already used by test"),
	      "stdio: one user (%s)", err);
	if (!d->cd)
		return;
	CHECK(write(inp[1], "typed", 5) == 5 && wait_dev(d, 5, 5000) && !memcmp(d->in, "typed", 5),
	      "stdio: stdin -> device");
	dev_send(d, "shown", 5);
	char buf[16];
	CHECK(read(outp[0], buf, sizeof(buf)) == 5 && !memcmp(buf, "shown", 5), "stdio: device -> stdout");
	close(inp[1]);
	CHECK(wait_count(&d->in_end, 1, 5000) && d->disconnected == 0, "stdio: EOF on stdin ends input only");
	dev_send(d, "after", 5);
	CHECK(read(outp[0], buf, sizeof(buf)) == 5 && chardev_connected(d->cd), "stdio: output still works");
	chardev_close(d->cd);
	close(outp[0]);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);   /* as hyve's main() */
	if (system("python3 -c pass >/dev/null 2>&1") != 0) {
		printf("SKIP: python3 not installed (the socket clients)\n");
		return 77;
	}
	if (!mkdtemp(tmpdir) || mevent_init() != 0) {
		perror("set-up");
		return 1;
	}
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 7 + i / 251);
	test_sock();
	test_tcp();
	test_tty();
	test_file();
	test_stdio();
	rmdir(tmpdir);
	return check_summary();
}
