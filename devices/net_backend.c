/*
 * virtio-net backends: Linux tap and libslirp.  See net_backend.h.
 *
 * slirp on the main event loop (core/mevent): libslirp wants a poll() loop
 * (slirp_pollfds_fill -> poll -> slirp_pollfds_poll) and timers.  The fds
 * it asks for go into a private epoll set whose descriptor is one mevent,
 * so the main loop wakes when any slirp socket is ready; the revents are
 * then read with a zero-timeout poll() over the same list.  The timeout
 * slirp_pollfds_fill asks for (its TCP timers) is a timerfd, and each
 * libslirp timer is one more timerfd.  Everything runs on the main thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <slirp/libslirp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/log.h"
#include "../core/mevent.h"
#include "net_backend.h"

/* Largest frame either way: a 64 KiB TSO packet plus Ethernet/VLAN headers
 * and the vnet header. */
#define NETBE_MAX_FRAME (65536 + 64)
#define SLIRP_FRAMES_PER_WAKEUP 64   /* then let other events run */
#define SLIRP_MTU_MAX 65521          /* libslirp's IF_MTU_MAX */
#define SLIRP_IDLE_POLL_MS 10000     /* slirp_pollfds_fill lowers it as needed */

/* ---- backend spec syntax ---- */

static bool is_slirp(const char *spec)
{
	return strcmp(spec, "slirp") == 0;
}

/* An interface name we would hand to TUNSETIFF. */
static bool valid_ifname(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= IFNAMSIZ)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '_' || *p == '-' || *p == '.'))
			return false;
	return true;
}

struct hostfwd {
	bool udp;
	struct in_addr host_addr, guest_addr;
	int host_port, guest_port;
};

static bool parse_port(const char *s, int *port)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > 65535)
		return false;
	*port = (int)v;
	return true;
}

/* "ADDR:PORT" with ADDR possibly empty (def then). */
static bool parse_addr_port(const char *s, struct in_addr def, struct in_addr *addr, int *port)
{
	const char *colon = strrchr(s, ':');
	if (!colon)
		return false;
	char a[INET_ADDRSTRLEN];
	size_t alen = (size_t)(colon - s);
	if (alen >= sizeof(a))
		return false;
	memcpy(a, s, alen);
	a[alen] = '\0';
	if (alen == 0)
		*addr = def;
	else if (inet_pton(AF_INET, a, addr) != 1)
		return false;
	return parse_port(colon + 1, port);
}

/* QEMU's syntax: [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT */
static int parse_hostfwd(const char *rule, struct hostfwd *fw, char *err, size_t errlen)
{
	char buf[128];
	if (strlen(rule) >= sizeof(buf))
		goto bad;
	snprintf(buf, sizeof(buf), "%s", rule);
	char *colon = strchr(buf, ':');
	char *dash = strchr(buf, '-');
	if (!colon || !dash || dash < colon)
		goto bad;
	*colon = '\0';
	*dash = '\0';
	if (!strcmp(buf, "udp"))
		fw->udp = true;
	else if (!strcmp(buf, "tcp") || !buf[0])
		fw->udp = false;
	else
		goto bad;
	struct in_addr any = { .s_addr = htonl(INADDR_ANY) }, guest;
	inet_pton(AF_INET, "10.0.2.15", &guest);
	if (!parse_addr_port(colon + 1, any, &fw->host_addr, &fw->host_port) ||
	    !parse_addr_port(dash + 1, guest, &fw->guest_addr, &fw->guest_port))
		goto bad;
	return 0;
bad:
	snprintf(err, errlen, "bad hostfwd rule '%s' (expected [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, "
	         "e.g. tcp::8080-:80; several separated by ';')", rule);
	return -1;
}

/* Call fn on every ';'-separated rule; stops at the first failure. */
static int foreach_hostfwd(const char *list, int (*fn)(const struct hostfwd *, const char *, void *, char *, size_t),
                           void *arg, char *err, size_t errlen)
{
	if (!list)
		return 0;
	char *copy = strdup(list), *save = NULL;
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int rc = 0;
	for (char *r = strtok_r(copy, ";", &save); r && !rc; r = strtok_r(NULL, ";", &save)) {
		struct hostfwd fw;
		rc = parse_hostfwd(r, &fw, err, errlen);
		if (!rc && fn)
			rc = fn(&fw, r, arg, err, errlen);
	}
	free(copy);
	return rc;
}

int netbe_check(const char *spec, const char *hostfwd, char *err, size_t errlen)
{
	if (!spec || !*spec) {
		snprintf(err, errlen, "missing backend (expected slirp, tapN or the name of a tap interface)");
		return -1;
	}
	if (!is_slirp(spec) && !valid_ifname(spec)) {
		snprintf(err, errlen, "unknown backend '%s' (expected slirp, tapN or the name of a tap interface)", spec);
		return -1;
	}
	if (hostfwd && *hostfwd && !is_slirp(spec)) {
		snprintf(err, errlen, "hostfwd needs the slirp backend, not '%s'", spec);
		return -1;
	}
	return foreach_hostfwd(hostfwd, NULL, NULL, err, errlen);
}

/* ---- tap ---- */

static int tap_open(struct net_backend *be, const char *name, unsigned mtu, char *err, size_t errlen)
{
	/* Only tap* names are created on demand: a typo elsewhere should not
	 * leave a stray interface behind. */
	if (strncmp(name, "tap", 3) != 0 && if_nametoindex(name) == 0) {
		snprintf(err, errlen, "no interface '%s' (a backend not named tapN must be an existing tap interface)",
		         name);
		return -1;
	}
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "tap %s: cannot open /dev/net/tun: %s", name, strerror(errno));
		return -1;
	}
	unsigned features = 0;
	if (ioctl(fd, TUNGETFEATURES, &features))
		features = 0;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | ((features & IFF_VNET_HDR) ? IFF_VNET_HDR : 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr)) {
		int e = errno;
		snprintf(err, errlen, "tap %s: %s%s", name, strerror(e),
		         e == EPERM   ? " (needs CAP_NET_ADMIN, or a persistent tap owned by this user)"
		         : e == EBUSY ? " (in use by another process)"
		         : e == EINVAL ? " (not a tap interface?)"
		                       : "");
		close(fd);
		return -1;
	}
	be->be_fd = fd;
	if (features & IFF_VNET_HDR) {
		int sz = NETBE_VNET_HDR_LEN;
		be->be_vnet_hdr = ioctl(fd, TUNSETVNETHDRSZ, &sz) == 0;
		/* The guest turns offloads on when it negotiates them. */
		be->be_offload = be->be_vnet_hdr && ioctl(fd, TUNSETOFFLOAD, 0) == 0;
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s >= 0) {
		memset(&ifr.ifr_ifru, 0, sizeof(ifr.ifr_ifru));
		if (mtu && ioctl(s, SIOCGIFMTU, &ifr) == 0 && (unsigned)ifr.ifr_mtu < mtu)
			log_warn("tap %s: interface MTU %d is below the device's mtu=%u: larger frames will be dropped "
			         "(ip link set %s mtu %u)", name, ifr.ifr_mtu, mtu, name, mtu);
		close(s);
	}
	log_debug("tap %s: vnet header %s, offload %s", name, be->be_vnet_hdr ? "yes" : "no",
	          be->be_offload ? "yes" : "no");
	return 0;
}

int netbe_set_offload(struct net_backend *be, unsigned offloads)
{
	if (!be->be_offload)
		return offloads ? -1 : 0;
	unsigned f = 0;
	if (offloads & NETBE_OFFLOAD_CSUM) {
		f |= TUN_F_CSUM;
		/* TSO without checksum offload means nothing to the kernel. */
		if (offloads & NETBE_OFFLOAD_TSO4)
			f |= TUN_F_TSO4;
		if (offloads & NETBE_OFFLOAD_TSO6)
			f |= TUN_F_TSO6;
	}
	return ioctl(be->be_fd, TUNSETOFFLOAD, (unsigned long)f) ? -1 : 0;
}

int netbe_send(struct net_backend *be, const struct iovec *iov, int n)
{
	for (;;) {
		ssize_t r = writev(be->be_fd, iov, n);
		if (r >= 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/* ---- slirp ---- */

struct slirp_timer {
	struct netbe_slirp *ns;
	struct mevent *ev;
	SlirpTimerId id;          /* timer_new_opaque timers */
	SlirpTimerCb cb;          /* timer_new timers (older interface) */
	void *cb_opaque;
};

struct netbe_slirp {
	Slirp *slirp;
	int fd;                   /* slirp's end of the socketpair */
	int epfd;                 /* slirp's sockets, as one mevent */
	struct mevent *ev_frames, *ev_socks, *ev_timeout;
	struct pollfd *pfd;       /* what the last slirp_pollfds_fill asked for */
	int npfd, cap_pfd;
	int *watched;             /* fds in epfd */
	int nwatched, cap_watched;
	bool filled;              /* slirp_pollfds_poll needs a fill first */
	uint8_t *frame;
};

static int64_t slirp_clock_ns(void *opaque)
{
	(void)opaque;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static ssize_t slirp_send_packet(const void *buf, size_t len, void *opaque)
{
	struct netbe_slirp *ns = opaque;
	/* A full socket means the guest is not taking frames: drop, as a wire
	 * would; slirp's TCP retransmits. */
	if (send(ns->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_debug("slirp: frame of %zu bytes dropped: %s", len, strerror(errno));
	return (ssize_t)len;
}

static void slirp_guest_error(const char *msg, void *opaque)
{
	(void)opaque;
	log_debug("slirp: guest error: %s", msg);
}

static void slirp_timer_fire(int fd, void *arg)
{
	(void)fd;
	struct slirp_timer *t = arg;
	if (t->cb)
		t->cb(t->cb_opaque);
	else
		slirp_handle_timer(t->ns->slirp, t->id, t->cb_opaque);
}

static struct slirp_timer *slirp_timer_alloc(struct netbe_slirp *ns)
{
	struct slirp_timer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->ns = ns;
	/* Created disarmed in effect (an hour away); timer_mod sets it. */
	t->ev = mevent_add_timer(3600ULL * 1000000000ULL, 0, slirp_timer_fire, t);
	if (!t->ev) {
		free(t);
		return NULL;
	}
	return t;
}

static void *slirp_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
	struct slirp_timer *t = slirp_timer_alloc(opaque);
	if (t) {
		t->cb = cb;
		t->cb_opaque = cb_opaque;
	}
	return t;
}

static void *slirp_timer_new_opaque(SlirpTimerId id, void *cb_opaque, void *opaque)
{
	struct slirp_timer *t = slirp_timer_alloc(opaque);
	if (t) {
		t->id = id;
		t->cb_opaque = cb_opaque;
	}
	return t;
}

static void slirp_timer_free(void *timer, void *opaque)
{
	(void)opaque;
	struct slirp_timer *t = timer;
	if (!t)
		return;
	mevent_delete(t->ev);
	free(t);
}

static void slirp_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
	struct slirp_timer *t = timer;
	int64_t delta_ns = expire_ms * 1000000LL - slirp_clock_ns(opaque);
	if (t)
		mevent_timer_set(t->ev, delta_ns > 0 ? (uint64_t)delta_ns : 0, 0);
}

static void slirp_register_poll_fd(int fd, void *opaque)
{
	(void)fd;
	(void)opaque;
}

static void slirp_notify(void *opaque)
{
	(void)opaque;   /* the next fill (after any event we handle) catches up */
}

static int slirp_add_poll(int fd, int events, void *opaque)
{
	struct netbe_slirp *ns = opaque;
	if (ns->npfd == ns->cap_pfd) {
		int cap = ns->cap_pfd ? 2 * ns->cap_pfd : 16;
		struct pollfd *p = realloc(ns->pfd, (size_t)cap * sizeof(*p));
		if (!p)
			return -1;   /* slirp then skips this socket this round */
		ns->pfd = p;
		ns->cap_pfd = cap;
	}
	short ev = 0;
	if (events & SLIRP_POLL_IN)
		ev |= POLLIN;
	if (events & SLIRP_POLL_OUT)
		ev |= POLLOUT;
	if (events & SLIRP_POLL_PRI)
		ev |= POLLPRI;
	ns->pfd[ns->npfd] = (struct pollfd){ .fd = fd, .events = ev };
	return ns->npfd++;
}

static int slirp_get_revents(int idx, void *opaque)
{
	struct netbe_slirp *ns = opaque;
	if (idx < 0 || idx >= ns->npfd)
		return 0;
	short re = ns->pfd[idx].revents;
	int r = 0;
	if (re & POLLIN)
		r |= SLIRP_POLL_IN;
	if (re & POLLOUT)
		r |= SLIRP_POLL_OUT;
	if (re & POLLPRI)
		r |= SLIRP_POLL_PRI;
	if (re & (POLLERR | POLLNVAL))
		r |= SLIRP_POLL_ERR;
	if (re & POLLHUP)
		r |= SLIRP_POLL_HUP;
	return r;
}

/* Make epfd watch exactly the fds of the last fill.  MOD-then-ADD for
 * every fd each time: slirp closes and reopens sockets, and a reused fd
 * number must not be mistaken for one that is still registered. */
static void slirp_sync_epoll(struct netbe_slirp *ns)
{
	for (int i = 0; i < ns->npfd; i++) {
		struct epoll_event e = { .events = 0, .data.fd = ns->pfd[i].fd };
		if (ns->pfd[i].events & POLLIN)
			e.events |= EPOLLIN;
		if (ns->pfd[i].events & POLLOUT)
			e.events |= EPOLLOUT;
		if (ns->pfd[i].events & POLLPRI)
			e.events |= EPOLLPRI;
		if (epoll_ctl(ns->epfd, EPOLL_CTL_MOD, ns->pfd[i].fd, &e) && errno == ENOENT)
			epoll_ctl(ns->epfd, EPOLL_CTL_ADD, ns->pfd[i].fd, &e);
	}
	for (int i = 0; i < ns->nwatched; i++) {
		bool keep = false;
		for (int k = 0; k < ns->npfd && !keep; k++)
			keep = ns->pfd[k].fd == ns->watched[i];
		if (!keep)
			epoll_ctl(ns->epfd, EPOLL_CTL_DEL, ns->watched[i], NULL);   /* may be closed already */
	}
	if (ns->npfd > ns->cap_watched) {
		int *w = realloc(ns->watched, (size_t)ns->npfd * sizeof(*w));
		if (!w) {
			ns->nwatched = 0;   /* stale entries only cost a failed DEL later */
			return;
		}
		ns->watched = w;
		ns->cap_watched = ns->npfd;
	}
	for (int i = 0; i < ns->npfd; i++)
		ns->watched[i] = ns->pfd[i].fd;
	ns->nwatched = ns->npfd;
}

/* One round of slirp's poll loop, without sleeping: handle what is ready,
 * then ask again what to wait for. */
static void slirp_cycle(struct netbe_slirp *ns)
{
	if (ns->filled) {
		int r = ns->npfd ? poll(ns->pfd, (nfds_t)ns->npfd, 0) : 0;
		if (r < 0 && errno == EINTR) {
			for (int i = 0; i < ns->npfd; i++)
				ns->pfd[i].revents = 0;
			r = 0;
		}
		slirp_pollfds_poll(ns->slirp, r < 0, slirp_get_revents, ns);
	}
	ns->npfd = 0;
	uint32_t timeout_ms = SLIRP_IDLE_POLL_MS;
	slirp_pollfds_fill(ns->slirp, &timeout_ms, slirp_add_poll, ns);
	ns->filled = true;
	slirp_sync_epoll(ns);
	if (timeout_ms == 0)
		timeout_ms = 1;   /* a 0 would spin the main loop */
	mevent_timer_set(ns->ev_timeout, (uint64_t)timeout_ms * 1000000ULL, 0);
}

static void slirp_socks_ready(int fd, void *arg)
{
	(void)fd;
	slirp_cycle(arg);
}

static void slirp_frames_ready(int fd, void *arg)
{
	struct netbe_slirp *ns = arg;
	for (int i = 0; i < SLIRP_FRAMES_PER_WAKEUP; i++) {
		ssize_t n = recv(fd, ns->frame, NETBE_MAX_FRAME, MSG_DONTWAIT);
		if (n <= 0)
			break;
		slirp_input(ns->slirp, ns->frame, (int)n);
	}
	/* Guest frames may have opened sockets: fill again. */
	slirp_cycle(ns);
}

static int add_one_hostfwd(const struct hostfwd *fw, const char *rule, void *arg, char *err, size_t errlen)
{
	struct netbe_slirp *ns = arg;
	errno = 0;
	if (slirp_add_hostfwd(ns->slirp, fw->udp, fw->host_addr, fw->host_port, fw->guest_addr, fw->guest_port) < 0) {
		char a[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &fw->host_addr, a, sizeof(a));
		snprintf(err, errlen, "hostfwd %s: cannot listen on %s port %s:%d%s%s", rule, fw->udp ? "udp" : "tcp", a,
		         fw->host_port, errno ? ": " : "", errno ? strerror(errno) : "");
		return -1;
	}
	log_debug("slirp: forwarding %s %s:%d to guest port %d", fw->udp ? "udp" : "tcp", inet_ntoa(fw->host_addr),
	          fw->host_port, fw->guest_port);
	return 0;
}

static const SlirpCb slirp_callbacks = {
	.send_packet = slirp_send_packet,
	.guest_error = slirp_guest_error,
	.clock_get_ns = slirp_clock_ns,
	.timer_new = slirp_timer_new,
	.timer_free = slirp_timer_free,
	.timer_mod = slirp_timer_mod,
	.register_poll_fd = slirp_register_poll_fd,
	.unregister_poll_fd = slirp_register_poll_fd,
	.notify = slirp_notify,
	.timer_new_opaque = slirp_timer_new_opaque,
};

static int slirp_open(struct net_backend *be, const char *hostfwd, unsigned mtu, char *err, size_t errlen)
{
	struct netbe_slirp *ns = calloc(1, sizeof(*ns));
	int sv[2] = { -1, -1 };
	if (!ns || !(ns->frame = malloc(NETBE_MAX_FRAME))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ns->fd = ns->epfd = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv)) {
		snprintf(err, errlen, "slirp: socketpair: %s", strerror(errno));
		goto fail;
	}
	/* Room for some full-size frames in each direction (capped by wmem_max). */
	int sndbuf = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	be->be_fd = sv[0];
	ns->fd = sv[1];
	ns->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ns->epfd < 0) {
		snprintf(err, errlen, "slirp: epoll_create1: %s", strerror(errno));
		goto fail;
	}
	if (mtu > SLIRP_MTU_MAX) {
		log_warn("slirp: mtu %u is above libslirp's limit; its interface uses %u", mtu, SLIRP_MTU_MAX);
		mtu = SLIRP_MTU_MAX;
	}
	SlirpConfig cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.version = 4;
	cfg.in_enabled = true;
	inet_pton(AF_INET, "10.0.2.0", &cfg.vnetwork);
	inet_pton(AF_INET, "255.255.255.0", &cfg.vnetmask);
	inet_pton(AF_INET, "10.0.2.2", &cfg.vhost);
	inet_pton(AF_INET, "10.0.2.15", &cfg.vdhcp_start);
	inet_pton(AF_INET, "10.0.2.3", &cfg.vnameserver);
	cfg.in6_enabled = true;
	inet_pton(AF_INET6, "fec0::", &cfg.vprefix_addr6);
	cfg.vprefix_len = 64;
	inet_pton(AF_INET6, "fec0::2", &cfg.vhost6);
	inet_pton(AF_INET6, "fec0::3", &cfg.vnameserver6);
	cfg.if_mtu = mtu;
	cfg.if_mru = mtu;
	/*
	 * Without this, the guest's connections to 10.0.2.2 go to the host's
	 * 127.0.0.1: services that trust local clients (databases, admin
	 * ports, other VMs' hostfwd ports) would trust the guest.  QEMU's
	 * default is to allow it, so it can be turned back on.  (A SlirpConfig
	 * version 1 field: libslirp 4.0 and later.)
	 */
	cfg.disable_host_loopback = !get_config_bool_default("slirp.hostloopback", false);
	ns->slirp = slirp_new(&cfg, &slirp_callbacks, ns);
	if (!ns->slirp) {
		snprintf(err, errlen, "slirp: cannot create the user-mode network stack");
		goto fail;
	}
	if (foreach_hostfwd(hostfwd, add_one_hostfwd, ns, err, errlen))
		goto fail;
	ns->ev_frames = mevent_add(ns->fd, EVF_READ, slirp_frames_ready, ns);
	ns->ev_socks = mevent_add(ns->epfd, EVF_READ, slirp_socks_ready, ns);
	ns->ev_timeout = mevent_add_timer(1000000ULL, 0, slirp_socks_ready, ns);
	if (!ns->ev_frames || !ns->ev_socks || !ns->ev_timeout) {
		snprintf(err, errlen, "slirp: cannot register with the event loop");
		goto fail;   /* start-up fails: hyve exits, nothing to unwind */
	}
	be->be_slirp = ns;
	return 0;
fail:
	if (ns) {
		if (ns->slirp)
			slirp_cleanup(ns->slirp);
		if (ns->epfd >= 0)
			close(ns->epfd);
		free(ns->frame);
		free(ns);
	}
	if (sv[0] >= 0) {
		close(sv[0]);
		close(sv[1]);
	}
	be->be_fd = -1;
	return -1;
}

static const struct config_key netbe_keys[] = {
	{ "slirp.hostloopback", CFG_BOOL,
	  "slirp: the guest reaches the host's 127.0.0.1 through 10.0.2.2 (default false)", NULL },
	{ NULL, 0, NULL, NULL },
};

static void __attribute__((constructor)) netbe_keys_register(void)
{
	config_register_keys(netbe_keys);
}

struct net_backend *netbe_open(const char *spec, const char *hostfwd, unsigned mtu, char *err, size_t errlen)
{
	if (netbe_check(spec, hostfwd, err, errlen))
		return NULL;
	struct net_backend *be = calloc(1, sizeof(*be));
	if (!be) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	be->be_fd = -1;
	snprintf(be->be_name, sizeof(be->be_name), "%s", spec);
	int rc = is_slirp(spec) ? slirp_open(be, hostfwd, mtu, err, errlen) : tap_open(be, spec, mtu, err, errlen);
	if (rc) {
		free(be);
		return NULL;
	}
	return be;
}
