/*
 * libFuzzer target for the live-migration destination (core/migration.c):
 * the whole incoming byte stream of one source, as hyve -R reads it.
 *
 *   tests/fuzz/run.sh -t 60 migration
 *
 * The message format is docs/migration.md's "Protocol (version 2)": a
 * 16-byte header (u32 type, u32 aux, u64 payload length, little-endian)
 * and its payload; the source sends HELLO, CONFIG, COMPAT, PAGES...,
 * STREAM_END, STATE and hyve answers ACCEPT, READY, RUNNING (or REFUSE).
 * This harness assumes only that table (the seeds are built from it); the
 * bounds it relies on are migration.c's.
 *
 * Per input, on one AF_UNIX stream (socketpair), as core/main.c does it:
 *   migration_accept_fd  HELLO, the ACCEPT reply, CONFIG into the config
 *                        tree (one stream: HELLO's stream count must be 1);
 *   config_hold_host_keys, the harness's own host keys (-o) unless the
 *                        source is trusted, config_release_host_keys,
 *                        config_validate (hyve's check_config);
 *   migration_receive    COMPAT checked against the fixed VM (cpuid_build
 *                        over a stubbed KVM_GET_SUPPORTED_CPUID), READY,
 *                        PAGES into guest RAM through vm_map_gpa, STREAM_END,
 *                        STATE through every section decoder (vmstate_load),
 *                        RUNNING.
 * A writer thread sends the input bytes (the source), then shuts down its
 * write side, and reads and keeps what hyve replies (so hyve's sends never
 * block): every receive ends at the end of the input, never at the 30/60 s
 * socket timeouts.
 *
 * The VM is fuzz_ckpt's (tests/fuzz/fuzz_vm_stubs.h: only the KVM layer,
 * event loop and control hooks stubbed; lpc, virtio-rnd, virtio-9p,
 * virtio-console; 1 vCPU; 8 KiB + 4 KiB RAM), built once; between inputs
 * the config tree is cleared, the devices' initial state reloaded and RAM
 * zeroed.  The received configuration does not rebuild the devices (as in
 * fuzz_ckpt, state sections meet the fixed VM's devices).
 *
 * Input: byte 0 is a mode, the rest is the stream.
 *   bit 0: the source's host-side keys are trusted (migration.trust_source);
 *          clear, the harness gives them itself as -o options would.
 *   bit 1: after a successful receive, vmstate_resume() as hyve does next
 *          (devices look at the received rings), then vmstate_quiesce().
 *
 * Properties checked besides the sanitizers: hyve's replies are well-formed
 * messages of the types it may send, in order (ACCEPT first; after a
 * successful receive exactly ACCEPT, READY, RUNNING; RUNNING never after a
 * failure); a state that receive accepted saves and loads again; restored
 * BARs fit their type; the initial device state always loads.
 *
 * -DFUZZ_MAKE_SEEDS builds a main() that writes well-formed streams for the
 * fixed VM (CONFIG = its configuration, COMPAT as build_compat makes it,
 * raw/zero/lz4 pages, STATE = vmstate_save's sections, with virtio-rnd's
 * queue up in one of them), checks that each is received, and writes them
 * into a directory: tests/fuzz/run.sh --make-seeds migration refreshes
 * tests/fuzz/corpus/migration/.
 */
#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/config.h"
#include "../../core/config_trust.h"
#include "../../core/log.h"
#include "../../core/migration.h"
#include "../../core/snapshot.h"
#include "../../core/vm.h"
#include "../../core/vmstate.h"
#include "../../devices/virtio.h"
#include "fuzz_vm_stubs.h"

/* docs/migration.md's message types. */
enum { M_HELLO = 1, M_STREAM, M_ACCEPT, M_REFUSE, M_CONFIG, M_COMPAT, M_READY, M_PAGES, M_STREAM_END, M_STATE, M_RUNNING };

static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

static bool verbose;   /* FUZZ_VERBOSE=1: say how far each input got */

/* ---- the source: a writer thread on the other end of the socketpair ---- */

#define REPLY_MAX 8192
struct source {
	int fd;
	const uint8_t *data;
	size_t len;
	uint8_t reply[REPLY_MAX];   /* what hyve sent (the first REPLY_MAX bytes) */
	size_t rlen;
	bool reply_overflow;
};

/* Send everything (while reading what comes back), shut down the write side, read until hyve's side closes. */
static void *source_thread(void *arg)
{
	struct source *s = arg;
	size_t off = 0;
	bool wr_open = true;
	for (;;) {
		if (wr_open && off == s->len) {
			shutdown(s->fd, SHUT_WR);
			wr_open = false;
		}
		struct pollfd p = { .fd = s->fd, .events = (short)(POLLIN | (wr_open ? POLLOUT : 0)) };
		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			abort();
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			uint8_t buf[4096];
			ssize_t r = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r > 0) {
				size_t keep = (size_t)r <= REPLY_MAX - s->rlen ? (size_t)r : REPLY_MAX - s->rlen;
				memcpy(s->reply + s->rlen, buf, keep);
				s->rlen += keep;
				s->reply_overflow |= keep < (size_t)r;
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				break;   /* hyve's side is gone */
			}
		}
		if (wr_open && (p.revents & (POLLOUT | POLLERR))) {
			ssize_t w = send(s->fd, s->data + off, s->len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w > 0)
				off += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				off = s->len;   /* EPIPE: hyve stopped reading; just drain */
		}
	}
	return NULL;
}

/* hyve's replies: well-formed messages of the types the destination sends. */
static void check_replies(const struct source *s, bool accepted, bool received)
{
	static const char *const names[] = { "?", "HELLO", "STREAM", "ACCEPT", "REFUSE", "CONFIG", "COMPAT", "READY",
		                             "PAGES", "STREAM_END", "STATE", "RUNNING" };
	uint32_t seq[8];
	int n = 0;
	size_t off = 0;
	const char *why = NULL;
	if (s->reply_overflow)
		why = "more than 8 KiB of replies";
	while (!why && off < s->rlen) {
		if (s->rlen - off < 16) {
			why = "a truncated message header";
			break;
		}
		uint32_t type = get32(s->reply + off), aux = get32(s->reply + off + 4);
		uint64_t len = get64(s->reply + off + 8);
		off += 16;
		if (len > s->rlen - off) {
			why = "a truncated payload";
			break;
		}
		if (n == (int)(sizeof(seq) / sizeof(seq[0]))) {
			why = "too many messages";
			break;
		}
		seq[n++] = type;
		if (aux != 0)
			why = "a reply with aux set";
		else if (type == M_ACCEPT && (len != 4 || get32(s->reply + off) > 1))
			why = "ACCEPT without a u32 compression 0 or 1";
		else if ((type == M_READY || type == M_RUNNING) && len != 0)
			why = "READY/RUNNING with a payload";
		else if (type == M_REFUSE && (len == 0 || len > 1024))
			why = "REFUSE without a reason or with more than 1 KiB";
		else if (type != M_ACCEPT && type != M_READY && type != M_RUNNING && type != M_REFUSE)
			why = "a message type the destination never sends";
		off += len;
	}
	/* Order: ACCEPT first; READY after it; RUNNING after READY and last; REFUSE last. */
	for (int i = 0; !why && i < n; i++) {
		if ((i == 0) != (seq[i] == M_ACCEPT) && seq[i] != M_REFUSE)
			why = "ACCEPT not first, or twice";
		else if (seq[i] == M_READY && (i != 1 || seq[0] != M_ACCEPT))
			why = "READY not right after ACCEPT";
		else if (seq[i] == M_RUNNING && (i != 2 || seq[1] != M_READY || !received))
			why = "RUNNING out of order or after a failure";
		else if (seq[i] == M_REFUSE && i != n - 1)
			why = "a message after REFUSE";
	}
	if (!why && accepted && (n < 1 || seq[0] != M_ACCEPT))
		why = "accepted without an ACCEPT";
	if (!why && received && (n != 3 || seq[2] != M_RUNNING))
		why = "received without exactly ACCEPT, READY, RUNNING";
	if (why) {
		fprintf(stderr, "migration: hyve's replies: %s (accepted %d, received %d):", why, accepted, received);
		for (int i = 0; i < n; i++)
			fprintf(stderr, " %s", seq[i] < 12 ? names[seq[i]] : "?");
		fprintf(stderr, "\n");
		abort();
	}
}

/* ---- one incoming migration ---- */

/* Run the destination on the stream; the stage it got to ("received" when all went well). */
static const char *run_stream(uint8_t mode, const uint8_t *stream, size_t len, char *err, size_t errlen)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
	/* hyve gets a duplicate: migration_receive closes its descriptor on
	 * most paths, the early failures leave it (hyve exits then); sv[0]
	 * keeps the socket (and so the duplicate's inode) alive either way. */
	int h = fcntl(sv[0], F_DUPFD_CLOEXEC, 0);
	struct stat hst;
	if (h < 0 || fstat(h, &hst))
		abort();
	struct source *src = calloc(1, sizeof(*src));
	if (!src)
		abort();
	src->fd = sv[1];
	src->data = stream;
	src->len = len;
	pthread_t th;
	if (pthread_create(&th, NULL, source_thread, src))
		abort();

	const char *stage = "accept";
	bool accepted = false, received = false;
	err[0] = '\0';
	if (migration_accept_fd(h, err, errlen) == 0) {
		accepted = true;
		stage = "host keys";
		int hrc = config_hold_host_keys("the migration source's configuration", err, errlen);
		/* -o KEY=VALUE that the received tree refuses: hyve exits (config_fail). */
		if (hrc == 0 && !(mode & 1) && fz_set_host_keys()) {
			snprintf(err, errlen, "-o host keys do not fit the received configuration");
			hrc = -1;
		}
		if (hrc == 0) {
			hrc = config_release_host_keys(mode & 1, "migration.trust_source", err, errlen);
		} else {
			/* hyve exits here; the harness must not keep what was held for the next input. */
			char e2[512];
			config_release_host_keys(false, "migration.trust_source", e2, sizeof(e2));
		}
		if (hrc) {
			migration_refuse(err);
		} else {
			stage = "config";
			if (config_validate(err, errlen) == 0) {
				stage = "receive";
				if (migration_receive(&fz_vm, err, errlen) == 0) {
					stage = "received";
					received = true;
				}
			}
		}
	}

	struct stat now;
	if (fstat(h, &now) == 0 && now.st_ino == hst.st_ino && now.st_dev == hst.st_dev)
		close(h);   /* not closed by migration.c */
	shutdown(sv[0], SHUT_RDWR);   /* the source's reads end */
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	check_replies(src, accepted, received);
	free(src);
	return stage;
}

static void after_receive(uint8_t mode)
{
	char err[1024];
	fz_check_bars();
	struct vm_sections again = { 0 };
	if (vmstate_save(&fz_vm, &again, err, sizeof(err)) || vmstate_load(&fz_vm, &again, err, sizeof(err))) {
		fprintf(stderr, "received state does not save and load again: %s\n", err);
		abort();
	}
	vm_sections_free(&again);
	if (mode & 2) {
		vmstate_resume();
		vmstate_quiesce();
	}
}

static void reset_vm(void)
{
	config_clear();
	fz_set_fixed_config();
	fz_load_baseline();
	for (int i = 0; i < FZ_NREGIONS; i++)
		memset(fz_ram[i], 0, fz_ram_size[i]);
}

static void init_once(void)
{
	if (fz_ram[0])
		return;
	fz_setup("fuzz_migration");
	fz_save_baseline();
	verbose = getenv("FUZZ_VERBOSE") != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	init_once();
	if (size < 1)
		return 0;
	config_clear();   /* hyve -R starts from the source's configuration */
	const char *stage = run_stream(data[0], data + 1, size - 1, err, sizeof(err));
	if (strcmp(stage, "received") == 0)
		after_receive(data[0]);
	if (verbose)
		fprintf(stderr, "migration: %s%s%s\n", stage, err[0] ? ": " : "", err);
	reset_vm();
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
/* ---- seeds: well-formed streams for the fixed VM ---- */

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

static void msg(struct snap_buf *out, uint32_t type, uint32_t aux, const void *p, size_t len)
{
	uint8_t h[16];
	put32(h, type);
	put32(h + 4, aux);
	put64(h + 8, len);
	sb_put(out, h, 16);
	if (len)
		sb_put(out, p, len);
}

/* As build_compat (core/migration.c) makes it for a VM of this configuration. */
static void compat(struct snap_buf *sb)
{
	sb_u64(sb, FZ_RAM0_SIZE + FZ_RAM1_SIZE);
	sb_u32(sb, FZ_NCPUS);
	size_t n;
	char *cfg = config_to_string(&n), devs[4096] = "", *save = NULL;
	for (char *line = strtok_r(cfg, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (strncmp(line, "pci.", 4) == 0 && strstr(line, ".device="))
			snprintf(devs + strlen(devs), sizeof(devs) - strlen(devs), "%s;", line);
	free(cfg);
	sb_str(sb, devs);
	struct kvm_cpuid2 *c = cpuid_build(FZ_CTX, 0, FZ_NCPUS);
	if (!c)
		abort();
	sb_u32(sb, c->nent);
	for (uint32_t i = 0; i < c->nent; i++) {
		sb_u32(sb, c->entries[i].function);
		sb_u32(sb, c->entries[i].index);
		sb_u32(sb, c->entries[i].ebx);
		sb_u32(sb, c->entries[i].ecx);
		sb_u32(sb, c->entries[i].edx);
	}
	free(c);
}

/* One PAGES message: every page of RAM as raw, zero or lz4 (whichever `how` picks). */
static void pages(struct snap_buf *out, char (*how)(uint64_t gpa, const uint8_t *page))
{
	struct snap_buf body, data;   /* the entries, then the pages' data in entry order */
	sb_init(&body);
	sb_init(&data);
	uint32_t count = 0;
	static char lz[LZ4_COMPRESSBOUND(4096)];
	for (int r = 0; r < FZ_NREGIONS; r++)
		for (uint64_t off = 0; off < fz_ram_size[r]; off += 4096) {
			uint64_t gpa = fz_ram_gpa[r] + off;
			const uint8_t *p = fz_ram[r] + off;
			uint8_t ent[12];
			char enc = how(gpa, p);
			if (enc == 's')
				continue;
			int clen = enc == 'l' ? LZ4_compress_default((const char *)p, lz, 4096, (int)sizeof(lz)) : 0;
			if (enc == 'l' && clen <= 0)
				abort();
			put64(ent, gpa | (enc == 'z' ? 1 : enc == 'l' ? 2 : 0));
			put32(ent + 8, (uint32_t)clen);
			sb_put(&body, ent, 12);
			if (enc == 'r')
				sb_put(&data, p, 4096);
			else if (enc == 'l')
				sb_put(&data, lz, (size_t)clen);
			count++;
		}
	sb_put(&body, data.data, data.len);
	if (count)
		msg(out, M_PAGES, count, body.data, body.len);
	sb_free(&body);
	sb_free(&data);
}

/* Zero pages as markers, the first page raw, the others lz4. */
static char enc_mixed(uint64_t gpa, const uint8_t *p)
{
	static const uint8_t zero[4096];
	return memcmp(p, zero, 4096) == 0 ? 'z' : gpa == 0 ? 'r' : 'l';
}
static char enc_raw(uint64_t gpa, const uint8_t *p) { (void)gpa; (void)p; return 'r'; }

/* A stream as the source writes it for the VM as it is now. */
static void stream(struct snap_buf *out, uint32_t comps, char (*how)(uint64_t, const uint8_t *))
{
	uint8_t hello[60] = "HYVEMIGR";
	put32(hello + 8, 2);        /* protocol */
	put32(hello + 12, 1);       /* streams */
	put32(hello + 16, comps);
	put64(hello + 20, 0x1234567890abcdefULL);
	snprintf((char *)hello + 28, 32, "hyve fuzz seed");
	msg(out, M_HELLO, 0, hello, sizeof(hello));
	/* The source host's resources: fixed names (not this run's scratch directory). */
	if (set_config_value("pci.0.4.0.path", "/srv/fuzz/share") ||
	    set_config_value("pci.0.5.0.port.0.path", "/srv/fuzz/con.sock"))
		abort();
	size_t n;
	char *cfg = config_to_string(&n);
	msg(out, M_CONFIG, 0, cfg, n);
	free(cfg);
	if (fz_set_host_keys())
		abort();
	struct snap_buf c;
	sb_init(&c);
	compat(&c);
	msg(out, M_COMPAT, 0, c.data, c.len);
	sb_free(&c);
	pages(out, how);
	msg(out, M_STREAM_END, 0, NULL, 0);
	struct vm_sections secs = { 0 };
	char err[512];
	if (vmstate_save(&fz_vm, &secs, err, sizeof(err)))
		fatal("vmstate_save: %s", err);
	struct snap_buf st;
	sb_init(&st);
	for (int i = 0; i < secs.n; i++) {
		char name[VMSTATE_NAME_MAX] = { 0 };
		snprintf(name, sizeof(name), "%s", secs.s[i].name);
		sb_put(&st, name, sizeof(name));
		sb_u32(&st, secs.s[i].version);
		sb_u64(&st, secs.s[i].data.len);
		sb_put(&st, secs.s[i].data.data, secs.s[i].data.len);
	}
	msg(out, M_STATE, (uint32_t)secs.n, st.data, st.len);
	sb_free(&st);
	vm_sections_free(&secs);
	if (out->failed)
		abort();
}

static void emit(const char *dir, const char *name, uint8_t mode, const struct snap_buf *s)
{
	char path[512], err[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fputc(mode, f) == EOF || fwrite(s->data, 1, s->len, f) != s->len || fclose(f))
		fatal("cannot write %s", path);
	/* The seed must be received (fatal here, not a fuzzer finding later); RAM as sent. */
	uint8_t *copy[FZ_NREGIONS];
	for (int i = 0; i < FZ_NREGIONS; i++) {
		copy[i] = malloc(fz_ram_size[i]);
		memcpy(copy[i], fz_ram[i], fz_ram_size[i]);
		memset(fz_ram[i], 0xee, fz_ram_size[i]);
	}
	config_clear();
	const char *stage = run_stream(mode, s->data, s->len, err, sizeof(err));
	if (strcmp(stage, "received"))
		fatal("seed %s is not received: %s: %s", name, stage, err);
	for (int i = 0; i < FZ_NREGIONS; i++) {
		if (memcmp(copy[i], fz_ram[i], fz_ram_size[i]))
			fatal("seed %s: RAM region %d not as sent", name, i);
		free(copy[i]);
	}
	config_clear();
	fz_set_fixed_config();
	printf("%s: %zu bytes\n", path, s->len + 1);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : ".";
	init_once();
	/* Guest RAM: a pattern page, a zero page, a compressible page at 4 GiB. */
	for (int i = 0; i < 4096; i++)
		fz_ram[0][i] = (uint8_t)(i * 13 + (i >> 8));
	memset(fz_ram[1], 0x5a, 64);
	memcpy(fz_ram[1] + 2048, "hyve migration seed", 19);
	struct snap_buf s;
	sb_init(&s);
	stream(&s, 1u << 1, enc_mixed);
	emit(dir, "seed-lz4", 0, &s);
	emit(dir, "seed-lz4-trusted", 1, &s);
	sb_free(&s);
	sb_init(&s);
	stream(&s, 0, enc_raw);
	emit(dir, "seed-raw", 0, &s);
	sb_free(&s);
	/* virtio-rnd with its queue up and a buffer posted (resumed: bit 1). */
	struct vring_desc d = { 0x300, 64, VRING_DESC_F_WRITE, 0 };
	memcpy(fz_ram[0] + 0x1000, &d, sizeof(d));
	fz_ram[0][0x1100 + 2] = 1;   /* avail idx 1, ring[0] = 0 */
	if (!fz_slot(3))
		fatal("virtio-rnd missing");
	fz_bring_up(fz_slot(3), 16, 0x1000, 0x1100, 0x1140);
	sb_init(&s);
	stream(&s, 1u << 1, enc_mixed);
	emit(dir, "seed-rnd-running", 2, &s);
	sb_free(&s);
	return 0;
}
#endif

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
