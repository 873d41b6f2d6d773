/*
 * Unit tests for devices/net_backend.c's slirp backend, without /dev/kvm:
 * the test plays the guest, writing Ethernet frames into the backend.
 *
 * The guest must not reach the host's 127.0.0.1 through 10.0.2.2 unless
 * slirp.hostloopback=true: a UDP datagram to 10.0.2.2:PORT reaches a host
 * socket on 127.0.0.1:PORT only then.  (UDP because a datagram needs no
 * handshake the test would have to answer; libslirp applies the same
 * check to TCP connections and ICMP.)
 *
 * test-sources: devices/net_backend.c core/config.c core/log.c
 * test-libs: -lslirp -lglib-2.0
 */
#include <arpa/inet.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../core/config.h"
#include "../../core/mevent.h"
#include "../../devices/net_backend.h"

static int failures;

#define CHECK(cond, what)                                                     \
	do {                                                                  \
		if (cond)                                                     \
			printf("ok - %s\n", what);                            \
		else {                                                        \
			printf("FAIL - %s (%s:%d)\n", what, __FILE__, __LINE__); \
			failures++;                                           \
		}                                                             \
	} while (0)

/* config.c's getters exit through these on fatal errors; not reached here. */
void vm_request_exit(int status) { (void)status; }
int vm_exit_requested(void) { return -1; }

/* ---- a fake event loop: fd events only, run by pump() ---- */

struct mevent {
	int fd;
	bool timer;
	mevent_cb_t cb;
	void *arg;
};
static struct mevent evs[64];
static int nevs;

struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg)
{
	(void)kind;
	if (nevs == 64)
		return NULL;
	evs[nevs] = (struct mevent){ .fd = fd, .cb = cb, .arg = arg };
	return &evs[nevs++];
}

struct mevent *mevent_add_timer(uint64_t first_ns, uint64_t period_ns, mevent_cb_t cb, void *arg)
{
	(void)first_ns; (void)period_ns;
	if (nevs == 64)
		return NULL;
	evs[nevs] = (struct mevent){ .fd = -1, .timer = true, .cb = cb, .arg = arg };
	return &evs[nevs++];
}

int mevent_timer_set(struct mevent *ev, uint64_t first_ns, uint64_t period_ns)
{
	(void)ev; (void)first_ns; (void)period_ns;
	return 0;
}

int mevent_delete(struct mevent *ev)
{
	ev->cb = NULL;
	return 0;
}

/* Run the callbacks of ready descriptors (slirp's frame socket, its epoll set). */
static void pump(void)
{
	for (int i = 0; i < nevs; i++) {
		struct pollfd p = { .fd = evs[i].fd, .events = POLLIN };
		if (!evs[i].timer && evs[i].cb && poll(&p, 1, 0) == 1)
			evs[i].cb(evs[i].fd, evs[i].arg);
	}
}

/* ---- the guest's frames ---- */

static uint16_t ip_checksum(const uint8_t *p, size_t n)
{
	uint32_t sum = 0;
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Ethernet + IPv4 + UDP (checksum 0: none, allowed for IPv4) from 10.0.2.15:5555. */
static size_t udp_frame(uint8_t *f, const char *dst_ip, uint16_t dport, const char *payload)
{
	static const uint8_t slirp_mac[6] = { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 };
	static const uint8_t guest_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
	size_t plen = strlen(payload), udplen = 8 + plen, iplen = 20 + udplen;
	memset(f, 0, 14 + iplen);
	memcpy(f, slirp_mac, 6);
	memcpy(f + 6, guest_mac, 6);
	f[12] = 0x08, f[13] = 0x00;
	uint8_t *ip = f + 14;
	ip[0] = 0x45;
	ip[2] = (uint8_t)(iplen >> 8), ip[3] = (uint8_t)iplen;
	ip[8] = 64;
	ip[9] = 17;
	inet_pton(AF_INET, "10.0.2.15", ip + 12);
	inet_pton(AF_INET, dst_ip, ip + 16);
	uint16_t c = ip_checksum(ip, 20);
	ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
	uint8_t *udp = ip + 20;
	udp[0] = 5555 >> 8, udp[1] = 5555 & 0xff;
	udp[2] = (uint8_t)(dport >> 8), udp[3] = (uint8_t)dport;
	udp[4] = (uint8_t)(udplen >> 8), udp[5] = (uint8_t)udplen;
	memcpy(udp + 8, payload, plen);
	return 14 + iplen;
}

/*
 * Send "payload" from the guest to 10.0.2.2:port and report whether the
 * host socket on 127.0.0.1:port received it within wait_ms.
 */
static bool guest_reaches_host_loopback(struct net_backend *be, int host, uint16_t port, const char *payload,
                                        int wait_ms)
{
	uint8_t f[256];
	struct iovec iov = { f, udp_frame(f, "10.0.2.2", port, payload) };
	if (netbe_send(be, &iov, 1))
		return false;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		pump();
		char buf[256];
		ssize_t n = recv(host, buf, sizeof(buf) - 1, MSG_DONTWAIT);
		if (n > 0) {
			buf[n] = '\0';
			return strcmp(buf, payload) == 0;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > wait_ms)
			return false;
		usleep(5000);
	}
}

int main(void)
{
	char err[256];
	int host = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t salen = sizeof(sa);
	if (host < 0 || bind(host, (struct sockaddr *)&sa, sizeof(sa)) || getsockname(host, (struct sockaddr *)&sa, &salen)) {
		printf("FAIL - a UDP socket on 127.0.0.1\n");
		return 1;
	}
	uint16_t port = ntohs(sa.sin_port);

	/* Default: 10.0.2.2 is not the host's loopback. */
	/* Static: backends are never closed (hyve exits with them), and LeakSanitizer knows these. */
	static struct net_backend *be, *be2;
	be = netbe_open("slirp", NULL, 0, err, sizeof(err));
	CHECK(be != NULL, "slirp backend opens");
	if (be)
		CHECK(!guest_reaches_host_loopback(be, host, port, "default", 3000),
		      "by default the guest cannot reach the host's 127.0.0.1 through 10.0.2.2");

	/* The sanity check of the test itself: with the option, the same datagram arrives. */
	CHECK(set_config_value("slirp.hostloopback", "true") == 0 && config_validate(err, sizeof(err)) == 0,
	      "slirp.hostloopback is a known boolean key");
	be2 = netbe_open("slirp", NULL, 0, err, sizeof(err));
	CHECK(be2 != NULL, "second slirp backend opens");
	if (be2)
		CHECK(guest_reaches_host_loopback(be2, host, port, "hostloopback", 3000),
		      "with slirp.hostloopback=true it can");

	set_config_value("slirp.hostloopback", "maybe");
	CHECK(config_validate(err, sizeof(err)) == -1 && strstr(err, "slirp.hostloopback"), "a bad value is named");

	printf("%s\n", failures ? "FAILED" : "all ok");
	return failures ? 1 : 0;
}
