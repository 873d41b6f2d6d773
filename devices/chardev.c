/*
 * Character-device backends shared by the UART and virtio-console: stdio,
 * file=, sock=, tcp= and terminal devices.  The interface and the rules
 * are in chardev.h.
 *
 * A chardev has at most one connection (struct cd_conn) at a time: for
 * stdio, file= and a tty the one made at open, for its whole life; for a
 * server (sock=, tcp=) one per client.  A connection reads from in_fd and
 * writes to out_fd; epoll (mevent) takes one registration per descriptor,
 * so where input and output are one socket or tty, out_fd is a dup of it
 * and the read and write events never share a descriptor.
 *
 * When a client's connection ends (end of stream or an error, found by a
 * device's chardev_read()/chardev_write(), or a hang-up found at the next
 * accept), its events are disabled and its descriptors closed at once, and
 * the device hears disconnected from a call queued on the event loop:
 * never from inside the chardev_*() call that ran into it, where the
 * device holds its own lock.  A new client is accepted only after that
 * notice was given, so a device sees disconnected and connected in order.
 * The ended connection's events may still be in the epoll batch being
 * dispatched; they are freed two loop passes later (a call queued from a
 * queued call runs in a later batch, whose epoll_wait no longer returns
 * them).
 *
 * stdio's descriptors are shared with the rest of the process: they are
 * not made non-blocking; reads and writes poll(2) first.  Unpollable
 * input or output (a regular file, /dev/null: epoll refuses them) is
 * polled on a 10 ms timer instead.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../core/log.h"
#include "../core/mevent.h"
#include "../core/sandbox.h"
#include "chardev.h"

#define CD_IO_CHUNK 4096u                /* stdout: <= PIPE_BUF, a write after POLLOUT won't block */
#define CD_POLL_NS  10000000ull          /* timer polling for fds epoll refuses */
#define CD_SUN_MAX  (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

struct cd_conn {
	struct chardev *cd;
	int in_fd, out_fd;             /* -1: none */
	bool own_fds;                  /* ours to close (not stdio's 0 and 1) */
	bool poll_first;               /* stdio: blocking descriptors, poll before I/O */
	bool is_sock;
	bool client;                   /* a server's client: the connection can end */
	bool in_eof;                   /* input over: not watched any more */
	bool out_dead;                 /* output failed (not a client) */
	bool ended;                    /* a client's connection is over */
	bool notified;                 /* ...and the device was told */
	bool tx_blocked;               /* out_ev armed, waiting for POLLOUT */
	struct mevent *in_ev, *out_ev;
};

struct chardev {
	char name[64];
	enum chardev_kind kind;
	const struct chardev_ops *ops;
	void *arg;
	struct cd_conn *cur;           /* servers: NULL while nobody is connected */
	struct cd_conn *pending;       /* an ended connection whose disconnected is due */
	int lfd;                       /* servers */
	struct mevent *lev;
	struct mevent *accept_retry;   /* one-shot: re-arm lev after EMFILE */
	char *sock_path;               /* unix socket file to remove */
	int tio_fd;                    /* tty whose mode tio_orig restores */
	struct termios tio_orig;
	bool tio_saved;
	bool closed;
	bool out_error_logged;
	struct chardev *next_all;
};

static struct chardev *cd_all;          /* main thread, for the exit cleanup */
static struct chardev *cd_stdio_owner;

/* ---- specs ---- */

#define CD_EXPECT "expected stdio, file=PATH, sock=PATH, tcp=ADDR:PORT or a tty path such as /dev/nmdm0A"
#define CD_EXPECT_BARE "expected PATH (a unix socket), sock=PATH, tcp=ADDR:PORT, file=PATH or a tty path"
#define CD_TCP_RULE "ADDR: numeric IPv4, [IPv6] or localhost; tcp=:PORT is 127.0.0.1"

/* A user's string, printable and shortened, for one error line. */
static const char *cd_quote(const char *s, char *buf, size_t len)
{
	size_t i = 0;
	for (; s[i] && i + 4 < len; i++)
		buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	if (s[i])
		buf[i++] = '.', buf[i++] = '.', buf[i++] = '.';
	buf[i] = '\0';
	return buf;
}

static int cd_parse_tcp(const char *v, struct chardev_spec *out, char *err, size_t errlen)
{
	char q[32], host[64];
	const char *port;
	bool v6 = false;
	if (v[0] == '[') {
		const char *close = strchr(v, ']');
		if (!close || close[1] != ':' || (size_t)(close - v - 1) >= sizeof(host))
			goto bad;
		memcpy(host, v + 1, (size_t)(close - v - 1));
		host[close - v - 1] = '\0';
		port = close + 2;
		v6 = true;
	} else {
		const char *colon = strrchr(v, ':');
		if (!colon || memchr(v, ':', (size_t)(colon - v)) || (size_t)(colon - v) >= sizeof(host))
			goto bad;
		memcpy(host, v, (size_t)(colon - v));
		host[colon - v] = '\0';
		port = colon + 1;
	}
	char *end;
	errno = 0;
	unsigned long pn = strtoul(port, &end, 10);
	if (!*port || *end || port[0] < '0' || port[0] > '9' || errno || pn < 1 || pn > 65535) {
		snprintf(err, errlen, "bad port '%s' (1-65535)", cd_quote(port, q, sizeof(q)));
		return -1;
	}
	memset(&out->addr, 0, sizeof(out->addr));
	if (v6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->addr;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)pn);
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			goto badaddr;
		out->addrlen = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->addr;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)pn);
		if (!host[0] || !strcmp(host, "localhost"))
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			goto badaddr;
		out->addrlen = sizeof(*sin);
	}
	out->kind = CHARDEV_TCP;
	return 0;
badaddr:
	snprintf(err, errlen, "bad address '%s' (%s)", cd_quote(host, q, sizeof(q)), CD_TCP_RULE);
	return -1;
bad:
	snprintf(err, errlen, "expected tcp=ADDR:PORT (%s)", CD_TCP_RULE);
	return -1;
}

int chardev_parse(const char *spec, unsigned flags, struct chardev_spec *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	const char *expect = (flags & CHARDEV_F_BARE_SOCK) ? CD_EXPECT_BARE : CD_EXPECT;
	if ((flags & CHARDEV_F_STDIO) && !strcmp(spec, "stdio")) {
		out->kind = CHARDEV_STDIO;
		return 0;
	}
	if (!strncmp(spec, "tcp=", 4))
		return cd_parse_tcp(spec + 4, out, err, errlen);
	if (!strncmp(spec, "file=", 5) || !strncmp(spec, "sock=", 5)) {
		out->kind = spec[0] == 'f' ? CHARDEV_FILE : CHARDEV_SOCK;
		out->path = spec + 5;
	} else if ((flags & CHARDEV_F_BARE_SOCK) && spec[0]) {
		out->kind = CHARDEV_SOCK;
		out->path = spec;
		out->bare = true;
	} else if (strchr(spec, '/')) {
		out->kind = CHARDEV_TTY;
		out->path = spec;
	} else {
		snprintf(err, errlen, "%s", expect);
		return -1;
	}
	if (!out->path[0]) {
		snprintf(err, errlen, "%s", expect);
		return -1;
	}
	if (out->kind == CHARDEV_SOCK && strlen(out->path) > CD_SUN_MAX) {
		snprintf(err, errlen, "socket path too long (max %zu bytes)", CD_SUN_MAX);
		return -1;
	}
	return 0;
}

/* ---- connections ---- */

static void cd_in_ready(int fd, void *arg);
static void cd_out_ready(int fd, void *arg);

static struct cd_conn *cd_conn_new(struct chardev *cd, int in_fd, int out_fd, bool own)
{
	struct cd_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->cd = cd;
	c->in_fd = in_fd;
	c->out_fd = out_fd;
	c->own_fds = own;
	c->in_eof = in_fd < 0;
	return c;
}

/* Watch the input (stdio and ttys: on a timer if epoll refuses the fd). -1: not possible. */
static int cd_watch_input(struct cd_conn *c, bool timer_ok)
{
	if (c->in_fd < 0 || !c->cd->ops->readable)
		return 0;
	c->in_ev = mevent_add(c->in_fd, EVF_READ, cd_in_ready, c);
	if (!c->in_ev && timer_ok)
		c->in_ev = mevent_add_timer(CD_POLL_NS, CD_POLL_NS, cd_in_ready, c);
	return c->in_ev ? 0 : -1;
}

static void cd_free_call(void *arg)
{
	struct cd_conn *c = arg;
	if (c->in_ev)
		mevent_delete(c->in_ev);
	if (c->out_ev)
		mevent_delete(c->out_ev);
	free(c);
}

/* Tell the device a connection is gone (once). */
static void cd_deliver_disconnect(struct cd_conn *c)
{
	struct chardev *cd = c->cd;
	if (c->notified)
		return;
	c->notified = true;
	if (cd->pending == c)
		cd->pending = NULL;
	if (!cd->closed && cd->ops->disconnected)
		cd->ops->disconnected(cd->arg);
}

/* Event loop: the notice queued when a connection ended, then (clients) the free. */
static void cd_notify_call(void *arg)
{
	struct cd_conn *c = arg;
	cd_deliver_disconnect(c);
	if (c->client && mevent_call(cd_free_call, c) != 0)
		log_debug("%s: cannot queue freeing a connection", c->cd->name);
}

static void cd_queue_notice(struct cd_conn *c)
{
	c->cd->pending = c;
	/* Out of memory: the notice is given at the next accept instead. */
	if (mevent_call(cd_notify_call, c) != 0)
		log_warn("%s: cannot queue the disconnect notice (out of memory)", c->cd->name);
}

static void cd_close_fds(struct cd_conn *c)
{
	if (c->own_fds) {
		if (c->in_fd >= 0)
			close(c->in_fd);
		if (c->out_fd >= 0 && c->out_fd != c->in_fd)
			close(c->out_fd);
	}
	c->in_fd = c->out_fd = -1;
}

/* A client's connection is over: stop it now, tell the device from the loop. */
static void cd_conn_end(struct cd_conn *c, const char *why)
{
	struct chardev *cd = c->cd;
	if (c->ended)
		return;
	c->ended = true;
	c->tx_blocked = false;
	if (c->in_ev)
		mevent_disable(c->in_ev);
	if (c->out_ev)
		mevent_disable(c->out_ev);
	cd_close_fds(c);
	if (cd->cur == c)
		cd->cur = NULL;
	log_debug("%s: client disconnected (%s)", cd->name, why);
	cd_queue_notice(c);
}

static void cd_input_end(struct cd_conn *c, const char *why)
{
	if (c->client) {
		cd_conn_end(c, why);
		return;
	}
	c->in_eof = true;
	if (c->in_ev)
		mevent_disable(c->in_ev);
	log_debug("%s: end of input (%s)", c->cd->name, why);
}

static void cd_output_fail(struct cd_conn *c, int err)
{
	struct chardev *cd = c->cd;
	if (c->client) {
		log_debug("%s: send: %s", cd->name, strerror(err));
		cd_conn_end(c, strerror(err));
		return;
	}
	if (c->out_dead)
		return;
	if (!cd->out_error_logged) {
		cd->out_error_logged = true;
		log_warn("%s: output: %s; discarding output", cd->name, strerror(err));
	}
	c->out_dead = true;
	c->tx_blocked = false;
	if (c->out_ev)
		mevent_disable(c->out_ev);
	if (c->own_fds && c->out_fd >= 0 && c->out_fd != c->in_fd)
		close(c->out_fd);
	c->out_fd = -1;
	cd_queue_notice(c);
}

/* Has the client hung up?  (A device that stopped reading does not see it.) */
static bool cd_conn_gone(const struct cd_conn *c)
{
	struct pollfd pfd = { .fd = c->in_fd, .events = POLLRDHUP };
	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static void cd_accept_again(int fd, void *arg)
{
	(void)fd;
	struct chardev *cd = arg;
	if (!cd->closed)
		mevent_enable(cd->lev);
}

static void cd_accept(int fd, void *arg)
{
	struct chardev *cd = arg;
	if (cd->closed)
		return;
	int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0) {
		/* Out of descriptors: the pending connection keeps the level-
		 * triggered event firing, so stop listening for 100 ms instead of
		 * spinning the main loop. */
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			if (!cd->accept_retry)
				cd->accept_retry = mevent_add_timer(100000000ULL, 0, cd_accept_again, cd);
			else
				mevent_timer_set(cd->accept_retry, 100000000ULL, 0);
			if (cd->accept_retry)
				mevent_disable(cd->lev);
		}
		return;
	}
	/* The device hears of the old connection's end before of a new one. */
	if (cd->pending)
		cd_deliver_disconnect(cd->pending);
	if (cd->cur && cd_conn_gone(cd->cur)) {
		struct cd_conn *old = cd->cur;
		cd_conn_end(old, "hung up");   /* unread bytes of the old client are lost */
		cd_deliver_disconnect(old);
	}
	if (cd->cur) {
		log_info("%s: a client is already connected; refusing another", cd->name);
		close(cfd);
		return;
	}
	if (cd->kind == CHARDEV_TCP) {
		int one = 1;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	struct cd_conn *c = cd_conn_new(cd, cfd, fcntl(cfd, F_DUPFD_CLOEXEC, 0), true);
	if (!c || c->out_fd < 0 || cd_watch_input(c, false) != 0) {
		log_warn("%s: cannot watch the new client", cd->name);
		if (c) {
			cd_close_fds(c);
			free(c);
		} else {
			close(cfd);
		}
		return;
	}
	c->client = true;
	c->is_sock = true;
	cd->cur = c;   /* input on: its read event starts enabled */
	log_debug("%s: client connected", cd->name);
	if (cd->ops->connected)
		cd->ops->connected(cd->arg);
}

static void cd_in_ready(int fd, void *arg)
{
	(void)fd;   /* the timer's fd when input is polled */
	struct cd_conn *c = arg;
	struct chardev *cd = c->cd;
	if (cd->closed || c->ended || c->in_eof || cd->cur != c)
		return;
	cd->ops->readable(cd->arg);
}

static void cd_out_ready(int fd, void *arg)
{
	(void)fd;
	struct cd_conn *c = arg;
	struct chardev *cd = c->cd;
	if (cd->closed || c->ended || cd->cur != c || !c->tx_blocked)
		return;
	c->tx_blocked = false;
	mevent_disable(c->out_ev);
	if (cd->ops->writable)
		cd->ops->writable(cd->arg);
}

/* ---- I/O ---- */

static size_t cd_iov_len(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;
	for (int i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	return n;
}

ssize_t chardev_readv(struct chardev *cd, const struct iovec *iov, int iovcnt)
{
	struct cd_conn *c = cd->cur;
	if (cd->closed || !c || c->ended || c->in_eof)
		return -1;
	if (cd_iov_len(iov, iovcnt) == 0)
		return 0;
	for (;;) {
		if (c->poll_first) {
			/* stdin is not ours to make non-blocking: check first. */
			struct pollfd pfd = { .fd = c->in_fd, .events = POLLIN };
			int r = poll(&pfd, 1, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return 0;
		}
		ssize_t n = readv(c->in_fd, iov, iovcnt);
		if (n > 0)
			return n;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		cd_input_end(c, n == 0 ? "end of stream" : strerror(errno));
		return -1;
	}
}

ssize_t chardev_read(struct chardev *cd, void *buf, size_t n)
{
	struct iovec iov = { .iov_base = buf, .iov_len = n };
	return chardev_readv(cd, &iov, 1);
}

/* One non-blocking write: >0 written, 0 would block, -1 error (errno). */
static ssize_t cd_raw_write(struct cd_conn *c, const struct iovec *iov, int iovcnt)
{
	for (;;) {
		ssize_t w;
		if (c->is_sock) {
			struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
			w = sendmsg(c->out_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		} else if (c->poll_first) {
			/* fd 1 is shared with others: don't make it non-blocking, poll. */
			struct pollfd pfd = { .fd = c->out_fd, .events = POLLOUT };
			int r = poll(&pfd, 1, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r == 0)
				return 0;
			size_t n = iov[0].iov_len < CD_IO_CHUNK ? iov[0].iov_len : CD_IO_CHUNK;
			w = write(c->out_fd, iov[0].iov_base, n);
		} else {
			w = writev(c->out_fd, iov, iovcnt);
		}
		if (w > 0)
			return w;
		if (w == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -1;
	}
}

/* Wait for the output to take more (a timer if epoll refuses it). */
static int cd_tx_wait(struct cd_conn *c)
{
	if (!c->out_ev) {
		c->out_ev = mevent_add(c->out_fd, EVF_WRITE, cd_out_ready, c);
		if (!c->out_ev)
			c->out_ev = mevent_add_timer(CD_POLL_NS, CD_POLL_NS, cd_out_ready, c);
		if (!c->out_ev)
			return -1;
	} else if (mevent_enable(c->out_ev) != 0) {
		return -1;
	}
	c->tx_blocked = true;
	return 0;
}

ssize_t chardev_writev(struct chardev *cd, const struct iovec *iov, int iovcnt)
{
	struct cd_conn *c = cd->cur;
	if (cd->closed || !c || c->ended || c->out_dead || c->out_fd < 0)
		return -1;
	if (c->tx_blocked || iovcnt <= 0 || cd_iov_len(iov, iovcnt) == 0)
		return 0;
	/* A stdout write is one chunk of the first buffer: skip empty ones. */
	while (c->poll_first && iov[0].iov_len == 0) {
		iov++;
		iovcnt--;
	}
	ssize_t w = cd_raw_write(c, iov, iovcnt);
	if (w > 0)
		return w;
	int err = errno;
	if (w == 0) {
		if (cd_tx_wait(c) == 0)
			return 0;
		err = errno;
		log_err("%s: cannot wait for the output backend: %s", cd->name, strerror(err));
	}
	cd_output_fail(c, err);
	return -1;
}

ssize_t chardev_write(struct chardev *cd, const void *buf, size_t n)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = n };
	return chardev_writev(cd, &iov, 1);
}

ssize_t chardev_write_drain(struct chardev *cd, const void *buf, size_t n, int *budget_ms)
{
	struct cd_conn *c = cd->cur;
	if (cd->closed || !c || c->ended || c->out_dead || c->out_fd < 0)
		return -1;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = n };
	while (*budget_ms > 0) {
		ssize_t w = cd_raw_write(c, &iov, 1);
		if (w != 0)
			return w;
		struct pollfd pfd = { .fd = c->out_fd, .events = POLLOUT };
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		poll(&pfd, 1, *budget_ms);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		long spent = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
		*budget_ms -= spent > 0 ? (int)spent : 1;
	}
	return 0;
}

bool chardev_connected(const struct chardev *cd)
{
	const struct cd_conn *c = cd->cur;
	return !cd->closed && c && !c->ended && !c->out_dead && c->out_fd >= 0;
}

void chardev_set_rx(struct chardev *cd, bool on)
{
	struct cd_conn *c = cd->cur;
	if (cd->closed || !c || !c->in_ev || c->ended || c->in_eof)
		return;
	if (!on) {
		mevent_disable(c->in_ev);
	} else if (mevent_enable(c->in_ev) != 0) {
		log_warn("%s: cannot resume reading input: %s", cd->name, strerror(errno));
		cd_input_end(c, "event loop error");
	}
}

/* ---- opening ---- */

/* Raw mode for a tty, the old mode kept for chardev_close(). */
static void cd_tty_raw(struct chardev *cd, int fd)
{
	if (!isatty(fd) || tcgetattr(fd, &cd->tio_orig) != 0)
		return;
	struct termios tio = cd->tio_orig;
	cfmakeraw(&tio);
	tio.c_cflag |= CLOCAL;
	cd->tio_fd = fd;
	cd->tio_saved = true;
	if (tcsetattr(fd, TCSANOW, &tio) != 0) {
		cd->tio_saved = false;
		log_warn("%s: cannot put the terminal in raw mode: %s", cd->name, strerror(errno));
	}
}

static int cd_open_stdio(struct chardev *cd, char *err, size_t errlen)
{
	if (cd_stdio_owner) {
		snprintf(err, errlen, "stdio is already used by %s", cd_stdio_owner->name);
		return -1;
	}
	struct stat st;
	int out_fd = fstat(STDOUT_FILENO, &st) == 0 ? STDOUT_FILENO : -1;
	int in_fd = fstat(STDIN_FILENO, &st) == 0 ? STDIN_FILENO : -1;
	struct cd_conn *c = cd_conn_new(cd, in_fd, out_fd, false);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->poll_first = true;
	if (cd_watch_input(c, true) != 0) {
		log_warn("%s: cannot watch stdin; no input", cd->name);
		c->in_eof = true;
	}
	cd_stdio_owner = cd;
	cd_tty_raw(cd, STDIN_FILENO);
	cd->cur = c;
	return 0;
}

static int cd_open_file(struct chardev *cd, const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOCTTY | O_NONBLOCK | O_CLOEXEC, 0644);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	cd->cur = cd_conn_new(cd, -1, fd, true);
	if (!cd->cur) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int cd_open_tty(struct chardev *cd, const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!isatty(fd)) {
		close(fd);
		snprintf(err, errlen, "%s is not a tty (a terminal device such as /dev/nmdm0A or /dev/pts/N)", path);
		return -1;
	}
	struct cd_conn *c = cd_conn_new(cd, fd, fcntl(fd, F_DUPFD_CLOEXEC, 0), true);
	if (!c || c->out_fd < 0 || cd_watch_input(c, true) != 0) {
		snprintf(err, errlen, "%s: cannot watch the tty", path);
		if (c) {
			cd_close_fds(c);
			free(c);
		} else {
			close(fd);
		}
		return -1;
	}
	cd_tty_raw(cd, fd);
	cd->cur = c;
	return 0;
}

/* Listen on fd (bound); the caller closes it on failure. */
static int cd_listen(struct chardev *cd, int fd, const char *what, char *err, size_t errlen)
{
	if (listen(fd, 1) != 0) {
		snprintf(err, errlen, "%s: listen: %s", what, strerror(errno));
		return -1;
	}
	cd->lev = mevent_add(fd, EVF_READ, cd_accept, cd);
	if (!cd->lev) {
		snprintf(err, errlen, "cannot watch %s", what);
		return -1;
	}
	cd->lfd = fd;
	return 0;
}

static int cd_open_sock(struct chardev *cd, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	memcpy(sun.sun_path, path, strlen(path) + 1);   /* length checked by chardev_parse */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return -1;
		}
		/* Replace a stale socket from an earlier run, but not one someone still listens on. */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (probe >= 0) {
			/* Non-blocking: a listener with a full backlog answers EAGAIN. */
			int r = connect(probe, (struct sockaddr *)&sun, sizeof(sun));
			bool live = r == 0 || errno == EAGAIN || errno == EINPROGRESS;
			close(probe);
			if (live) {
				snprintf(err, errlen, "%s is in use (another process listens on it)", path);
				return -1;
			}
		}
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	cd->sock_path = strdup(path);
	if (!cd->sock_path || cd_listen(cd, fd, path, err, errlen) != 0) {
		if (!cd->sock_path)
			snprintf(err, errlen, "out of memory");
		unlink(path);
		close(fd);
		free(cd->sock_path);
		cd->sock_path = NULL;
		return -1;
	}
	sandbox_allow_parent(path, true);   /* removed at exit */
	return 0;
}

static int cd_open_tcp(struct chardev *cd, const char *spec, const struct chardev_spec *ps, char *err,
                       size_t errlen)
{
	char q[96];
	cd_quote(spec, q, sizeof(q));
	int fd = socket(ps->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", q, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));   /* restart over TIME_WAIT */
	if (ps->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&ps->addr, ps->addrlen) != 0) {
		snprintf(err, errlen, "%s: %s", q, strerror(errno));
		close(fd);
		return -1;
	}
	if (cd_listen(cd, fd, q, err, errlen) != 0) {
		close(fd);
		return -1;
	}
	return 0;
}

struct chardev *chardev_open(const char *spec, unsigned flags, const char *name,
                             const struct chardev_ops *ops, void *arg, char *err, size_t errlen)
{
	static const struct chardev_ops no_ops;
	struct chardev_spec ps;
	char why[256], q[96];
	if (chardev_parse(spec, flags, &ps, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "'%s': %s", cd_quote(spec, q, sizeof(q)), why);
		return NULL;
	}
	struct chardev *cd = calloc(1, sizeof(*cd));
	if (!cd) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(cd->name, sizeof(cd->name), "%s", name);
	cd->ops = ops ? ops : &no_ops;
	cd->arg = arg;
	cd->lfd = cd->tio_fd = -1;
	if (ps.bare) {
		struct stat st;
		if (stat(ps.path, &st) == 0 && S_ISCHR(st.st_mode))
			ps.kind = CHARDEV_TTY;
	}
	cd->kind = ps.kind;
	int rc;
	switch (ps.kind) {
	case CHARDEV_STDIO: rc = cd_open_stdio(cd, err, errlen); break;
	case CHARDEV_FILE:  rc = cd_open_file(cd, ps.path, err, errlen); break;
	case CHARDEV_SOCK:  rc = cd_open_sock(cd, ps.path, err, errlen); break;
	case CHARDEV_TCP:   rc = cd_open_tcp(cd, spec, &ps, err, errlen); break;
	default:            rc = cd_open_tty(cd, ps.path, err, errlen); break;
	}
	if (rc != 0) {
		free(cd);
		return NULL;
	}
	cd->next_all = cd_all;
	cd_all = cd;
	return cd;
}

/* ---- exit ---- */

void chardev_close(struct chardev *cd)
{
	if (!cd || cd->closed)
		return;
	cd->closed = true;
	if (cd->tio_saved) {
		tcsetattr(cd->tio_fd, TCSANOW, &cd->tio_orig);
		cd->tio_saved = false;
	}
	if (cd->sock_path) {
		unlink(cd->sock_path);
		free(cd->sock_path);
		cd->sock_path = NULL;
	}
	if (cd->lfd >= 0)
		close(cd->lfd);
	cd->lfd = -1;
	if (cd->cur && !cd->cur->ended)
		cd_close_fds(cd->cur);
	if (cd_stdio_owner == cd)
		cd_stdio_owner = NULL;
}

static void cd_exit_cleanup(void)
{
	for (struct chardev *cd = cd_all; cd; cd = cd->next_all)
		chardev_close(cd);
}

/* Registered before main(): runs after every exit handler a device registers. */
static void __attribute__((constructor)) cd_register_cleanup(void)
{
	atexit(cd_exit_cleanup);
}
