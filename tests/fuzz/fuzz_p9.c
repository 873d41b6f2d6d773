/*
 * libFuzzer target for the 9P2000.L message decoder and server
 * (devices/p9_server.c), against a scratch share directory.
 *
 *   clang-14 -std=c11 -D_GNU_SOURCE -g -O1 -pthread -I. \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       tests/fuzz/fuzz_p9.c devices/p9_server.c devices/p9_fs.c -o /tmp/fuzz_p9
 *   mkdir -p /tmp/p9-corpus && /tmp/fuzz_p9 -max_total_time=60 /tmp/p9-corpus
 *
 * (-DFUZZ_STANDALONE builds a main() that replays input files.)
 *
 * Only devices/p9_server.c and p9_fs.c are needed: the checkpoint code beside it
 * (devices/p9_state.c, p9_server_save/load) is not linked here; its loader
 * is exercised against truncated and bit-flipped states by
 * tests/unit/test_p9_server.c.
 *
 * Input: byte 0 bit 0 picks the read-only or the writable server, bits
 * 1..7 the reply buffer size (11 bytes up to the msize); the rest is a
 * stream of 9P messages, each as long as its own size field says (clamped
 * to what is left).  Before the stream, the harness resets the server and
 * sends Tversion, Tattach(fid 0) and Twalk(0 -> 1, "f"), so fids 0 and 1
 * exist.  Every reply must fit the buffer and carry its own length.
 * The share is a fresh directory under /tmp with a file, a subdirectory,
 * a FIFO "p" and symlinks pointing out of it; a sibling directory
 * "outside" must never be touched.  Nothing may block (a Tlopen of the
 * FIFO that waited would hit libFuzzer's -timeout), and after each input
 * the share's top level and "d" must hold no setuid/setgid entry and no
 * device node (the server drops those bits and makes no devices).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../devices/p9_server.h"

static struct p9_server *srv_rw, *srv_ro;
static uint8_t *rep;
static char outside[128];
static struct stat outside_st;
static char share[128];

static void setup(void)
{
	char base[] = "/tmp/fuzz_p9.XXXXXX";
	if (!mkdtemp(base))
		abort();
	char p[256];
	snprintf(outside, sizeof(outside), "%s/outside", base);
	mkdir(outside, 0755);
	if (stat(outside, &outside_st) < 0)
		abort();
	snprintf(p, sizeof(p), "%s/share", base);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/share/f", base);
	FILE *f = fopen(p, "w");
	if (f) {
		fputs("some file content\n", f);
		fclose(f);
	}
	snprintf(p, sizeof(p), "%s/share/d", base);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/share/abs", base);
	if (symlink("/etc", p) < 0) { /* ignore */ }
	snprintf(p, sizeof(p), "%s/share/rel", base);
	if (symlink("../outside", p) < 0) { /* ignore */ }
	snprintf(p, sizeof(p), "%s/share/p", base);
	if (mkfifo(p, 0644) < 0)
		abort();
	snprintf(share, sizeof(share), "%s/share", base);
	srv_rw = p9_server_new(share, false);
	srv_ro = p9_server_new(share, true);
	rep = malloc(P9_MAX_MSIZE);
	if (!srv_rw || !srv_ro || !rep)
		abort();
}

static void put32(uint8_t *b, uint32_t v) { memcpy(b, &v, 4); }

/* No entry of directory rel (in the share) is setuid, setgid or a device. */
static void check_dir(const char *rel)
{
	int dfd = openat(AT_FDCWD, share, O_RDONLY | O_DIRECTORY);
	int fd = dfd < 0 ? -1 : openat(dfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
	if (dfd >= 0)
		close(dfd);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;   /* "d" may have been removed or replaced */
	}
	struct dirent *e;
	struct stat st;
	while ((e = readdir(d))) {
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if ((st.st_mode & (S_ISUID | S_ISGID)) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
			fprintf(stderr, "share entry %s/%s has mode 0%o\n", rel, e->d_name, (unsigned)st.st_mode);
			abort();
		}
	}
	closedir(d);
}

static void send1(struct p9_server *s, const uint8_t *m, size_t n, size_t cap)
{
	size_t r = p9_handle(s, m, n, rep, cap);
	uint32_t sz;
	if (r < 7 || r > cap)
		abort();
	memcpy(&sz, rep, 4);
	if (sz != r) {
		fprintf(stderr, "reply type %u: size field %u, length %zu\n", rep[4], sz, r);
		abort();
	}
}

static void prologue(struct p9_server *s)
{
	uint8_t m[64];
	p9_server_reset(s);
	/* Tversion msize=65536 "9P2000.L" */
	size_t n = 0;
	m[4] = 100; m[5] = 0xff; m[6] = 0xff;
	put32(m + 7, 65536);
	m[11] = 8; m[12] = 0;
	memcpy(m + 13, "9P2000.L", 8);
	n = 21;
	put32(m, (uint32_t)n);
	send1(s, m, n, P9_MAX_MSIZE);
	/* Tattach fid 0, afid NOFID, "" "", n_uname 0 */
	m[4] = 104; m[5] = 1; m[6] = 0;
	put32(m + 7, 0);
	put32(m + 11, 0xffffffffu);
	m[15] = m[16] = m[17] = m[18] = 0;
	put32(m + 19, 0);
	n = 23;
	put32(m, (uint32_t)n);
	send1(s, m, n, P9_MAX_MSIZE);
	/* Twalk 0 -> 1 "f" */
	m[4] = 110; m[5] = 2; m[6] = 0;
	put32(m + 7, 0);
	put32(m + 11, 1);
	m[15] = 1; m[16] = 0;
	m[17] = 1; m[18] = 0; m[19] = 'f';
	n = 20;
	put32(m, (uint32_t)n);
	send1(s, m, n, P9_MAX_MSIZE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!srv_rw)
		setup();
	if (size < 1)
		return 0;
	struct p9_server *s = (data[0] & 1) ? srv_ro : srv_rw;
	unsigned sel = data[0] >> 1;
	size_t cap = sel == 0 ? P9_MAX_MSIZE : 11 + (size_t)sel * sel * 4;
	prologue(s);
	size_t off = 1;
	while (off < size) {
		size_t left = size - off, n = left;
		if (left >= 4) {
			uint32_t sz;
			memcpy(&sz, data + off, 4);
			if (sz >= 1 && sz < left)
				n = sz;
		}
		/* A private copy, exactly n bytes: ASan sees any overread. */
		uint8_t *m = malloc(n);
		if (!m)
			abort();
		memcpy(m, data + off, n);
		send1(s, m, n, cap);
		free(m);
		off += n;
	}
	struct stat st;
	if (stat(outside, &st) < 0 || st.st_mtim.tv_sec != outside_st.st_mtim.tv_sec ||
	    st.st_mtim.tv_nsec != outside_st.st_mtim.tv_nsec || st.st_mode != outside_st.st_mode)
		abort();   /* the directory outside the share was touched */
	check_dir(".");
	check_dir("d");
	return 0;
}

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f)
			continue;
		static uint8_t buf[1 << 20];
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
		printf("%s: ok\n", argv[i]);
	}
	return 0;
}
#endif
