/*
 * What the device fuzz targets (fuzz_nvme.c, fuzz_ahci.c, fuzz_xhci.c)
 * share: reading operands from the input, and their -DFUZZ_MAKE_SEEDS
 * mains writing seed files.  Header-only: each target includes it once.
 */
#ifndef HYVE_FUZZ_INPUT_H
#define HYVE_FUZZ_INPUT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct fuzz_input {
	const uint8_t *p;
	size_t n;
	bool eof;   /* an operand ran past the end: the sequence is over */
};

/* A little-endian operand of 1 to 8 bytes; 0 and eof when the input is shorter. */
static inline uint64_t fuzz_take(struct fuzz_input *in, int bytes)
{
	uint64_t v = 0;
	if (in->n < (size_t)bytes) {
		in->eof = true;
		in->n = 0;
		return 0;
	}
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)in->p[i] << (8 * i);
	in->p += bytes;
	in->n -= (size_t)bytes;
	return v;
}

struct fuzz_seed {
	uint8_t b[4096];
	size_t n;
};

static inline void seed_bytes(struct fuzz_seed *s, const void *p, size_t n)
{
	if (s->n + n > sizeof(s->b))
		abort();
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static inline void seed_u(struct fuzz_seed *s, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++) {
		uint8_t b = (uint8_t)(v >> (8 * i));
		seed_bytes(s, &b, 1);
	}
}

static inline void seed_write(const char *dir, const char *name, const struct fuzz_seed *s)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(s->b, 1, s->n, f) != s->n || fclose(f))
		abort();
	printf("%s: %zu bytes\n", name, s->n);
}

/* The seed directory of a seed-writing main(argv[1]), made if missing; exits 2 without one. */
static inline const char *seed_dir(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		exit(2);
	}
	mkdir(argv[1], 0755);
	return argv[1];
}

#endif
