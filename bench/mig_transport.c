/*
 * The cost of encrypting migration streams, without a VM: hyve's own
 * transport code (core/migration_tls.c) sends migration-shaped messages
 * (a 16-byte header, then 64 x {12-byte entry, 4 KiB page}) over loopback
 * TCP, plain and with TLS 1.3 + PSK, N streams in parallel as migration.streams
 * does, and prints GiB/s for both and their ratio.  The page data is random
 * (incompressible, like a busy guest's RAM).
 *
 *   bench/mig_transport [MIB_PER_STREAM] [STREAMS]     (default 1024 MiB, 1 stream)
 *
 * Built by `make bench` (bench/run.sh) and by hand:
 *   cc -O2 -I. -o build/mig_transport bench/mig_transport.c core/migration_tls.c -lssl -lcrypto -pthread
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/migration_tls.h"

#define PAGE 4096
#define PAGES_PER_MSG 64
#define MSG_BYTES (16 + PAGES_PER_MSG * (12 + PAGE))
#define MAX_STREAMS 8

static uint64_t bytes_per_stream;
static uint8_t *pages;   /* 16 MiB of random pages, reused round-robin */
#define POOL_PAGES 4096

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_iov(int fd, struct iovec *iov, int n)
{
	bool tls;
	int rc = mig_tls_sendv(fd, iov, n, &tls);
	if (tls)
		return rc;
	while (n > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (w <= 0)
			return -1;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static void *receiver(void *arg)
{
	int fd = (int)(intptr_t)arg;
	size_t cap = 1 << 20;
	uint8_t *buf = malloc(cap);
	uint64_t got = 0;
	for (;;) {
		bool tls;
		ssize_t r = mig_tls_recv(fd, buf, cap, &tls);
		if (!tls)
			r = recv(fd, buf, cap, 0);
		if (r <= 0)
			break;
		got += (uint64_t)r;
	}
	free(buf);
	return (void *)(uintptr_t)got;
}

static void *sender(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct iovec iov[1 + 2 * PAGES_PER_MSG];
	uint8_t hdr[16] = { 8 }, ent[PAGES_PER_MSG][12];
	uint64_t sent = 0, p = 0;
	while (sent < bytes_per_stream) {
		int n = 0;
		iov[n++] = (struct iovec){ hdr, 16 };
		for (int i = 0; i < PAGES_PER_MSG; i++, p++) {
			memcpy(ent[i], &p, 8);
			iov[n++] = (struct iovec){ ent[i], 12 };
			iov[n++] = (struct iovec){ pages + (p % POOL_PAGES) * PAGE, PAGE };
		}
		if (send_iov(fd, iov, n))
			return (void *)1;
		sent += MSG_BYTES;
	}
	return NULL;
}

struct handshake {
	int fd, rc;
	char err[256];
};

static void *server_handshake(void *arg)
{
	struct handshake *h = arg;
	h->rc = mig_tls_handshake(h->fd, true, h->err, sizeof(h->err));
	return NULL;
}

/* One run: N connected pairs, senders and receivers in threads; GiB/s. */
static double run(int nstreams, bool tls)
{
	int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, MAX_STREAMS) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
		perror("listen");
		exit(1);
	}
	int cfd[MAX_STREAMS], sfd[MAX_STREAMS];
	pthread_t rt[MAX_STREAMS], st[MAX_STREAMS];
	for (int i = 0; i < nstreams; i++) {
		cfd[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(cfd[i], (struct sockaddr *)&sa, sizeof(sa))) {
			perror("connect");
			exit(1);
		}
		sfd[i] = accept(lfd, NULL, NULL);
		setsockopt(cfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (tls) {
			/* The handshake needs both ends at once: the server side in a thread. */
			struct handshake h = { .fd = sfd[i] };
			pthread_t th;
			char err[256];
			pthread_create(&th, NULL, server_handshake, &h);
			int rc = mig_tls_handshake(cfd[i], false, err, sizeof(err));
			pthread_join(th, NULL);
			if (rc || h.rc) {
				fprintf(stderr, "handshake: %s\n", rc ? err : h.err);
				exit(1);
			}
		}
	}
	close(lfd);
	double t0 = now();
	for (int i = 0; i < nstreams; i++) {
		pthread_create(&rt[i], NULL, receiver, (void *)(intptr_t)sfd[i]);
		pthread_create(&st[i], NULL, sender, (void *)(intptr_t)cfd[i]);
	}
	uint64_t total = 0;
	for (int i = 0; i < nstreams; i++) {
		pthread_join(st[i], NULL);
		shutdown(cfd[i], SHUT_WR);
	}
	for (int i = 0; i < nstreams; i++) {
		void *got;
		pthread_join(rt[i], &got);
		total += (uint64_t)(uintptr_t)got;
	}
	double dt = now() - t0;
	for (int i = 0; i < nstreams; i++) {
		mig_tls_close(cfd[i]);
		mig_tls_close(sfd[i]);
	}
	return (double)total / dt / (1 << 30);
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 1024;
	int nstreams = argc > 2 ? atoi(argv[2]) : 1;
	if (mib == 0 || nstreams < 1 || nstreams > MAX_STREAMS) {
		fprintf(stderr, "usage: %s [MIB_PER_STREAM] [STREAMS 1..%d]\n", argv[0], MAX_STREAMS);
		return 2;
	}
	bytes_per_stream = mib << 20;
	pages = malloc((size_t)POOL_PAGES * PAGE);
	FILE *r = fopen("/dev/urandom", "r");
	if (!pages || !r || fread(pages, PAGE, POOL_PAGES, r) != POOL_PAGES)
		return 1;
	fclose(r);
	char key[] = "/tmp/hyve-bench-psk.XXXXXX", err[256];
	int kfd = mkstemp(key);
	if (kfd < 0 || write(kfd, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 65) != 65)
		return 1;
	close(kfd);
	int rc = mig_tls_setup(key, err, sizeof(err));
	unlink(key);
	if (rc) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* Alternate, best of three each: the machine is noisy. */
	double plain = 0, tls = 0;
	for (int i = 0; i < 3; i++) {
		double a = run(nstreams, false), b = run(nstreams, true);
		plain = a > plain ? a : plain;
		tls = b > tls ? b : tls;
	}
	printf("{\"streams\": %d, \"mib_per_stream\": %llu, \"plain_gib_s\": %.2f, \"tls_gib_s\": %.2f, "
	       "\"time_ratio_tls_over_plain\": %.2f}\n",
	       nstreams, (unsigned long long)mib, plain, tls, plain / tls);
	return 0;
}
