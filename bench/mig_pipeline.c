/*
 * Live migration without a VM: hyve's real migration code (core/migration.c,
 * source and destination, in two processes over loopback TCP) moving a
 * guest's RAM at native speed, with only the KVM layer stubbed
 * (tests/fuzz/fuzz_vm_stubs.c, the fuzz targets' small VM: its devices and
 * vmstate sections are real).  It answers "where does migration time go"
 * on a host without /dev/kvm, and how close hyve gets to the machine's own
 * limits, which it measures in the same run:
 *
 *   memcpy_gib_s     one core copying 256 MiB (4 KiB at a time)
 *   loopback_gib_s   one TCP stream over loopback, 256 KiB sends
 *
 * The "guest" is a writer thread standing in for the test guest's
 * `worker` (guests/testguest/utests.c): before the migration it fills
 * DATA MiB with non-zero pages; with --dirty it then rewrites a quarter of
 * them per pass and reads them all, marking each page in a dirty bitmap
 * before writing it, as KVM's dirty log would.  vcpus_pause() parks it.
 * The destination checks at the end that its RAM equals the source's.
 *
 *   build/mig_pipeline [--data MIB] [--dirty] [--streams N] [--tls]
 *                      [--verify] [--compress lz4] [--json]
 *                      [--no-limits | --limits-only]
 *
 * --tls: both ends with a fresh random migration.psk_file (TLS 1.3 + PSK,
 * core/migration_tls.c), the cost of an encrypted migration.
 * --limits-only measures and prints the two limits alone (bench_state.py
 * puts them next to its migration rows).
 *
 * Prints one line per run (or one JSON object with --json): the source's
 * summary (rounds, MiB sent, total and downtime in ms), GiB/s of RAM moved,
 * and the two limits.  Built by `make bench-pipeline` (bench/README.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/control.h"
#include "core/migration.h"
#include "tests/fuzz/fuzz_vm_stubs.h"
#include "vmm/vmm.h"

#define PAGE 4096

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the dirty log and vCPU run control the source sees ---- */

static _Atomic uint64_t *dirty_map;          /* one bit per page of region 0 */
static atomic_bool logging, pause_req, parked;
static bool writer_running(void);

int vm_dirty_log_enable(struct vmctx *ctx, bool on)
{
	(void)ctx;
	atomic_store(&logging, on);
	return 0;
}

int vm_dirty_log_get(struct vmctx *ctx, int i, uint64_t *bitmap)
{
	(void)ctx;
	uint64_t words = (fz_ram_size[i] / PAGE + 63) / 64;
	for (uint64_t w = 0; w < words; w++)
		bitmap[w] = i == 0 ? atomic_exchange(&dirty_map[w], 0) : 0;
	return 0;
}

int vm_dirty_log_clear(struct vmctx *ctx, int i, uint64_t first, uint32_t n, uint64_t *bitmap)
{
	(void)ctx; (void)i; (void)first; (void)n; (void)bitmap;
	return 0;   /* vm_dirty_log_get already cleared (KVM: re-protect) */
}

void vcpus_pause(struct hyve_vm *v)
{
	(void)v;
	atomic_store(&pause_req, true);
	while (!atomic_load(&parked) && writer_running())
		sched_yield();
}

void vcpus_resume(struct hyve_vm *v)
{
	(void)v;
	atomic_store(&pause_req, false);
}

/* Auto-converge: the writer sleeps this share of its time. */
static atomic_int throttle_pct;
void vcpus_set_throttle(struct hyve_vm *v, int pct)
{
	(void)v;
	atomic_store(&throttle_pct, pct);
}

static control_handler_t migrate_live;
void control_register(const char *command, control_handler_t fn)
{
	if (strcmp(command, "migrate-live") == 0)
		migrate_live = fn;
}

/* ---- the guest stand-in ---- */

static uint64_t data_pages;
static atomic_bool writer_on;
static bool writer_dirties;

static bool writer_running(void) { return atomic_load(&writer_on); }

static void page_fill(uint64_t *w, uint64_t idx, uint64_t gen)
{
	uint64_t x = (idx << 32 | gen) * 0xff51afd7ed558ccdULL + 1;
	for (int k = 0; k < PAGE / 8; k++, x += 0x9e3779b97f4a7c15ULL)
		w[k] = x;
}

static void *writer(void *arg)
{
	(void)arg;
	uint64_t rng = 0x243f6a8885a308d3ULL, gen = 1, sink = 0;
	double batch = now();
	while (atomic_load(&writer_on)) {
		for (uint64_t d = 0; d < data_pages / 4; d++) {
			int pct = atomic_load_explicit(&throttle_pct, memory_order_relaxed);
			if (pct > 0 && d % 256 == 0) {
				double busy = now() - batch;
				usleep((useconds_t)(busy * 1e6 * pct / (100 - pct)));
				batch = now();
			}
			if (atomic_load_explicit(&pause_req, memory_order_relaxed)) {
				atomic_store(&parked, true);
				while (atomic_load(&pause_req) && atomic_load(&writer_on))
					sched_yield();
				atomic_store(&parked, false);
				if (!atomic_load(&writer_on))
					break;   /* migrated: this RAM is what the destination must hold */
			}
			rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
			uint64_t p = (rng >> 24) % data_pages;
			if (atomic_load_explicit(&logging, memory_order_relaxed))
				atomic_fetch_or(&dirty_map[p / 64], 1ULL << (p % 64));
			page_fill((uint64_t *)(void *)(fz_ram[0] + p * PAGE), p, gen);
		}
		for (uint64_t p = 0; p < data_pages; p++) {   /* the worker's verify read */
			const volatile uint64_t *w = (const volatile uint64_t *)(void *)(fz_ram[0] + p * PAGE);
			for (int k = 0; k < PAGE / 8; k++)
				sink = (sink << 1 | sink >> 63) ^ w[k];
		}
		gen++;
	}
	return (void *)(uintptr_t)sink;
}

/* ---- the limits ---- */

static double memcpy_gib_s(void)
{
	size_t n = 256u << 20;
	uint8_t *a = malloc(n), *b = malloc(n);
	if (!a || !b)
		return 0;
	memset(a, 1, n);
	memset(b, 2, n);
	double best = 0;
	for (int rep = 0; rep < 3; rep++) {
		double t = now();
		for (size_t o = 0; o < n; o += PAGE)
			memcpy(b + o, a + o, PAGE);
		t = now() - t;
		if (t > 0 && n / t > best)
			best = n / t;
	}
	free(a);
	free(b);
	return best / (1 << 30);
}

static int listen_any(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 8) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl))
		return -1;
	*port = ntohs(sa.sin_port);
	return fd;
}

static double loopback_gib_s(void)
{
	int port, lfd = listen_any(&port);
	size_t total = 1u << 30, chunk = 256u << 10;
	if (lfd < 0)
		return 0;
	pid_t pid = fork();
	if (pid == 0) {
		int fd = accept(lfd, NULL, NULL);
		char *buf = malloc(chunk);
		while (buf && fd >= 0 && recv(fd, buf, chunk, 0) > 0)
			;
		_exit(0);
	}
	close(lfd);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char *buf = malloc(chunk);
	double t = now(), rate = 0;
	if (buf && fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		memset(buf, 7, chunk);
		size_t sent = 0;
		while (sent < total) {
			ssize_t w = send(fd, buf, chunk, MSG_NOSIGNAL);
			if (w <= 0)
				break;
			sent += (size_t)w;
		}
		shutdown(fd, SHUT_WR);
		char c;
		while (recv(fd, &c, 1, 0) > 0)   /* EOF: the receiver has read everything */
			;
		t = now() - t;
		rate = sent == total && t > 0 ? total / t / (1 << 30) : 0;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	waitpid(pid, NULL, 0);
	return rate;
}

/* ---- the run ---- */

static uint64_t ram_hash(void)
{
	uint64_t h = 0;
	for (int i = 0; i < FZ_NREGIONS; i++) {
		const uint64_t *q = (const uint64_t *)(const void *)fz_ram[i];
		for (uint64_t k = 0; k < fz_ram_size[i] / 8; k++)
			h = (h ^ q[k]) * 0x100000001b3ULL + k;
	}
	return h;
}

static void usage(void)
{
	fprintf(stderr, "usage: mig_pipeline [--data MIB] [--dirty] [--streams N] [--tls] [--verify] [--compress lz4] [--json]\n"
	                "                    [--no-limits | --limits-only]\n"
	                "       (guest RAM is FZ_RAM0_SIZE, set at build time)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t data_mib = 1000;
	const char *streams = NULL, *compress = "none";   /* streams: hyve's default unless given */
	bool verify = false, json = false, limits = true, tls = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--data") && i + 1 < argc)
			data_mib = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--dirty"))
			writer_dirties = true;
		else if (!strcmp(argv[i], "--streams") && i + 1 < argc)
			streams = argv[++i];
		else if (!strcmp(argv[i], "--verify"))
			verify = true;
		else if (!strcmp(argv[i], "--tls"))
			tls = true;
		else if (!strcmp(argv[i], "--compress") && i + 1 < argc)
			compress = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--no-limits"))
			limits = false;
		else if (!strcmp(argv[i], "--limits-only")) {
			printf("{\"memcpy_gib_s\": %.2f, \"loopback_gib_s\": %.2f}\n", memcpy_gib_s(), loopback_gib_s());
			return 0;
		}
		else
			usage();
	}
	data_pages = (data_mib << 20) / PAGE;
	if (data_pages == 0 || data_pages > FZ_RAM0_SIZE / PAGE)
		usage();
	double lim_memcpy = limits ? memcpy_gib_s() : 0, lim_tcp = limits ? loopback_gib_s() : 0;

	fz_setup("mig_pipeline");
	migration_register_commands();
	/* Guest RAM as vmm/vmm.c maps it: anonymous, transparent huge pages. */
	void *ram = mmap(NULL, FZ_RAM0_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ram == MAP_FAILED)
		return 1;
	madvise(ram, FZ_RAM0_SIZE, MADV_HUGEPAGE);
	free(fz_ram[0]);
	fz_ram[0] = ram;
	dirty_map = calloc(FZ_RAM0_SIZE / PAGE / 64 + 1, 8);
	int port, pfd[2], lfd = listen_any(&port);   /* a free port, handed to the destination */
	if (!dirty_map || lfd < 0 || pipe(pfd))
		return 1;
	close(lfd);
	char where[32], err[512] = "";
	snprintf(where, sizeof(where), "127.0.0.1:%d", port);
	if ((streams && set_config_value("migration.streams", streams)) || set_config_value("migration.compress", compress) ||
	    set_config_value("migration.verify", verify ? "true" : "false"))
		return 1;
	if (tls) {   /* a 32-byte key in hex, mode 0600, as docs/security.md asks */
		char path[160], hex[65];
		uint8_t key[32];
		snprintf(path, sizeof(path), "%s/psk", fz_tmpdir);
		int kfd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (kfd < 0 || getentropy(key, sizeof(key)))
			return 1;
		for (int k = 0; k < 32; k++)
			snprintf(hex + 2 * k, 3, "%02x", key[k]);
		if (write(kfd, hex, 64) != 64 || close(kfd) || set_config_value("migration.psk_file", path))
			return 1;
	}

	pid_t pid = fork();
	if (pid == 0) {   /* destination: fresh zero RAM, as hyve -R maps it */
		close(pfd[0]);
		uint64_t h = 0;
		if (migration_accept(where, err, sizeof(err)) || migration_receive(&fz_vm, err, sizeof(err)))
			fprintf(stderr, "destination: %s\n", err);
		else
			h = ram_hash();
		if (write(pfd[1], &h, sizeof(h)) != sizeof(h))
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	for (uint64_t p = 0; p < data_pages; p++)
		page_fill((uint64_t *)(void *)(fz_ram[0] + p * PAGE), p, 0);
	pthread_t wt;
	atomic_store(&writer_on, writer_dirties);
	if (writer_dirties && pthread_create(&wt, NULL, writer, NULL))
		return 1;
	/* The destination listens once its process runs: retry the connection briefly. */
	int rc = -1;
	double t0 = now();
	for (int tries = 0; tries < 200 && rc; tries++) {
		err[0] = '\0';
		rc = migrate_live(&fz_vm, NULL, where, err, sizeof(err));
		if (rc && strstr(err, "onnection refused"))
			usleep(10000);
		else
			break;
	}
	double wall = now() - t0;
	if (writer_dirties) {
		atomic_store(&writer_on, false);
		pthread_join(wt, NULL);
	}
	uint64_t dst_hash = 0;
	if (read(pfd[0], &dst_hash, sizeof(dst_hash)) != sizeof(dst_hash))
		dst_hash = 0;
	waitpid(pid, NULL, 0);
	bool same = rc == 0 && dst_hash == ram_hash();
	int rounds = 0;
	double mib = 0, total = 0, down = 0;
	const char *s = strstr(err, ": ");
	if (rc == 0 && s)
		sscanf(s, ": %d rounds, %lf MiB sent, total %lf ms, downtime %lf ms", &rounds, &mib, &total, &down);
	double gib_s = total > 0 ? (double)data_mib / 1024 / (total / 1e3) : 0;
	if (json)
		printf("{\"ram_mib\": %llu, \"data_mib\": %llu, \"dirty\": %s, \"streams\": \"%s\", \"tls\": %s, \"verify\": %s, "
		       "\"compress\": \"%s\", \"ok\": %s, \"rounds\": %d, \"mib_sent\": %.1f, \"total_ms\": %.0f, "
		       "\"downtime_ms\": %.0f, \"gib_s\": %.2f, \"memcpy_gib_s\": %.2f, \"loopback_gib_s\": %.2f, "
		       "\"fraction_of_loopback\": %.2f}\n",
		       (unsigned long long)(FZ_RAM0_SIZE >> 20), (unsigned long long)data_mib, writer_dirties ? "true" : "false",
		       streams ? streams : "default", tls ? "true" : "false", verify ? "true" : "false", compress, same ? "true" : "false", rounds, mib, total, down, gib_s,
		       lim_memcpy, lim_tcp, lim_tcp > 0 ? gib_s / lim_tcp : 0);
	else {
		printf("%s%s (wall %.0f ms): %.2f GiB/s of data", rc ? "FAILED: " : "", err, wall * 1e3, gib_s);
		if (limits)
			printf("; limits here: memcpy %.2f GiB/s, loopback TCP %.2f GiB/s (%.0f %% of it)", lim_memcpy, lim_tcp,
			       lim_tcp > 0 ? 100 * gib_s / lim_tcp : 0);
		printf("%s\n", rc == 0 && !same ? " -- DESTINATION RAM DIFFERS" : "");
	}
	return same ? 0 : 1;
}
