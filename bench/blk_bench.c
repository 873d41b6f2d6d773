/*
 * blk_bench: hyve's disk path without a guest -- blockif over the format
 * layer (devices/blockif.c, devices/qcow2*.c), driven the way
 * `qemu-img bench` drives QEMU's block layer, with the same options, so
 * bench/storage.sh can run both on the same image in one run:
 *
 *   blk_bench [-c COUNT] [-d DEPTH] [-f raw|qcow2] [-o OFFSET] [-s SIZE]
 *             [-S STEP] [-w] [--pattern=BYTE] IMAGE
 *
 * COUNT requests of SIZE bytes, DEPTH in flight, the first at OFFSET, each
 * next one STEP further (default SIZE); reads, or writes of BYTE (-w).
 * The requests must fit in the image (no wrap-around: storage.sh picks
 * them so).  Prints one JSON line: {"seconds": S, "requests": N, "bytes": B}.
 * Exit status 1 if a request fails.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/log.h"
#include "../core/mevent.h"
#include "../devices/blockif.h"

/* No event loop here: blockif runs every request on its threads (a qcow2
 * image always does; a raw one falls back to them without the loop). */
struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg)
{
	(void)fd;
	(void)kind;
	(void)cb;
	(void)arg;
	return NULL;
}
int mevent_delete(struct mevent *ev)
{
	(void)ev;
	return 0;
}

struct slot {
	struct blockif_req br;
	struct iovec iov;
	int busy;
};

static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned inflight;
static int failed;

static void done(struct blockif_req *br, int err)
{
	struct slot *s = br->br_param;
	pthread_mutex_lock(&mtx);
	s->busy = 0;
	inflight--;
	if (err && !failed)
		failed = err;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&mtx);
}

static unsigned long long num(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);
	switch (*end) {
	case 'k': case 'K': v <<= 10; break;
	case 'm': case 'M': v <<= 20; break;
	case 'g': case 'G': v <<= 30; break;
	default: break;
	}
	return v;
}

int main(int argc, char **argv)
{
	unsigned long long count = 75000, depth = 64, size = 4096, step = 0, offset = 0;
	const char *fmt = NULL;
	int write = 0, pattern = 0;
	static const struct option lo[] = { { "pattern", required_argument, NULL, 'P' }, { 0, 0, 0, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "c:d:f:o:s:S:w", lo, NULL)) != -1) {
		switch (c) {
		case 'c': count = num(optarg); break;
		case 'd': depth = num(optarg); break;
		case 'f': fmt = optarg; break;
		case 'o': offset = num(optarg); break;
		case 's': size = num(optarg); break;
		case 'S': step = num(optarg); break;
		case 'w': write = 1; break;
		case 'P': pattern = (int)num(optarg); break;
		default:
			fprintf(stderr, "usage: blk_bench [-c COUNT] [-d DEPTH] [-f FMT] [-o OFFSET] [-s SIZE] [-S STEP] [-w] "
			                "[--pattern=BYTE] IMAGE\n");
			return 2;
		}
	}
	if (optind != argc - 1 || !count || !depth || depth > 1024 || !size) {
		fprintf(stderr, "blk_bench: one IMAGE, COUNT, DEPTH (1-1024) and SIZE > 0\n");
		return 2;
	}
	if (!step)
		step = size;
	log_level_max = LOG_WARN;
	char err[1024];
	struct blockif_opts o = { .name = "bench", .format = fmt, .depth = (unsigned)depth, .ro = !write };
	struct blockif_ctxt *bc = blockif_open(argv[optind], &o, err, sizeof(err));
	if (!bc) {
		fprintf(stderr, "blk_bench: %s\n", err);
		return 1;
	}
	if (offset + (count - 1) * step + size > (unsigned long long)blockif_size(bc)) {
		fprintf(stderr, "blk_bench: the requests run past the end of the %lld-byte disk\n",
		        (long long)blockif_size(bc));
		return 2;
	}
	struct slot *slots = calloc(depth, sizeof(*slots));
	uint8_t *bufs = aligned_alloc(4096, ((size + 4095) & ~4095ULL) * depth);
	if (!slots || !bufs)
		return 1;
	memset(bufs, pattern, ((size + 4095) & ~4095ULL) * depth);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned long long next = 0;
	pthread_mutex_lock(&mtx);
	while ((next < count || inflight) && !failed) {
		for (unsigned long long i = 0; i < depth && next < count; i++) {
			struct slot *s = &slots[i];
			if (s->busy)
				continue;
			s->iov = (struct iovec){ bufs + i * ((size + 4095) & ~4095ULL), size };
			s->br = (struct blockif_req){ .br_iov = &s->iov, .br_iovcnt = 1,
			                              .br_offset = (off_t)(offset + next * step), .br_callback = done,
			                              .br_param = s };
			s->busy = 1;
			inflight++;
			next++;
			pthread_mutex_unlock(&mtx);
			int rc = write ? blockif_write(bc, &s->br) : blockif_read(bc, &s->br);
			pthread_mutex_lock(&mtx);
			if (rc) {
				s->busy = 0;
				inflight--;
				failed = rc;
			}
		}
		if (inflight && (next == count || inflight == depth || failed))
			pthread_cond_wait(&cond, &mtx);
	}
	pthread_mutex_unlock(&mtx);
	blockif_drain(bc);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	blockif_close(bc);
	if (failed) {
		fprintf(stderr, "blk_bench: a request failed: %s\n", strerror(failed));
		return 1;
	}
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("{\"seconds\": %.4f, \"requests\": %llu, \"bytes\": %llu}\n", s, count, count * size);
	free(slots);
	free(bufs);
	return 0;
}
