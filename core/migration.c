/*
 * Live migration (docs/migration.md): pre-copy over one or more TCP
 * streams, KVM dirty logging with manual re-protection, vCPU state and
 * devices through vmstate sections.
 *
 * Source: a control request runs migrate_run() on its connection thread;
 * the VM keeps running (and its event loop serving devices) during the
 * pre-copy rounds.  Pages go out on streams chosen by their 2 MiB chunk,
 * so a page always travels on the same stream and a newer copy can never
 * overtake an older one.  Any failure before the destination confirms
 * leaves the source running (resumed if it was paused).
 *
 * Verify pass: on this project's PVM development host, an experiment that
 * compared RAM snapshots with KVM's dirty log found changed pages the log
 * did not report in some 200 ms windows.  So the source remembers a hash
 * of every page as sent (pages are copied before hashing and sending, so
 * the hash is of exactly the bytes sent) and, during stop-and-copy,
 * re-hashes all of RAM and resends any page whose content differs:
 * correctness then does not depend on the dirty log, and the count it
 * finds is reported.  migration.verify=auto does this on emulating hosts.
 *
 * Destination: migration_accept() then migration_receive(); every value
 * from the wire is checked (page addresses through vm_map_gpa, lengths
 * against fixed bounds) like guest input.
 */
#include <errno.h>
#include <lz4.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "exitcode.h"
#include "log.h"
#include "migration.h"
#include "migration_tls.h"
#include "vmstate.h"

#define MIG_MAGIC "HYVEMIGR"
#define MIG_PROTO 2
#define MAX_STREAMS 8
#define PAGE 4096
#define PAGES_PER_MSG 64
#define CHUNK_PAGES 512              /* stream affinity granule: 2 MiB */
#define MAX_MSG (PAGES_PER_MSG * (12 + PAGE + 64) + 64)
#define LZ4_PAGE_BOUND LZ4_COMPRESSBOUND(PAGE)
#define MAX_STATE_BYTES (256u << 20)
#define MAX_CONFIG_BYTES (1u << 20)
#define MAX_REGIONS 2

enum msg_type {
	MSG_HELLO = 1, MSG_STREAM, MSG_ACCEPT, MSG_REFUSE, MSG_CONFIG, MSG_COMPAT, MSG_READY,
	MSG_PAGES, MSG_STREAM_END, MSG_STATE, MSG_RUNNING,
};
enum page_enc { ENC_RAW = 0, ENC_ZERO = 1, ENC_LZ4 = 2 };
enum { COMP_NONE = 0, COMP_LZ4 = 1 };

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- framing: 16-byte header {u32 type, u32 aux, u64 length}, payload ---- */

/* Step past `done` bytes of an iovec array (partial sendmsg/recvmsg). */
static void iov_advance(struct iovec **iov, int *n, size_t done)
{
	while (*n > 0 && done >= (*iov)->iov_len) {
		done -= (*iov)->iov_len;
		(*iov)++;
		(*n)--;
	}
	if (*n > 0) {
		(*iov)->iov_base = (uint8_t *)(*iov)->iov_base + done;
		(*iov)->iov_len -= done;
	}
}

static int send_iov(int fd, struct iovec *iov, int n)
{
	bool tls;
	int rc = mig_tls_sendv(fd, iov, n, &tls);
	if (tls)
		return rc;
	while (n > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)(n > 1024 ? 1024 : n) };
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		iov_advance(&iov, &n, (size_t)w);
	}
	return 0;
}

static int send_msg(int fd, uint32_t type, uint32_t aux, const void *p, uint64_t len)
{
	uint8_t h[16];
	put32(h, type);
	put32(h + 4, aux);
	put64(h + 8, len);
	struct iovec iov[2] = { { h, 16 }, { (void *)p, (size_t)len } };
	return send_iov(fd, iov, len ? 2 : 1);
}

static int recv_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	while (n) {
		bool tls;
		ssize_t r = mig_tls_recv(fd, b, n, &tls);
		if (!tls)
			r = recv(fd, b, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			return -1;
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Fill every buffer of iov in order (plain: one recvmsg for many pages). */
static int recv_iov(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		bool tls;
		ssize_t r = mig_tls_recv(fd, iov->iov_base, iov->iov_len, &tls);
		if (!tls) {
			struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)(n > 1024 ? 1024 : n) };
			r = recvmsg(fd, &mh, MSG_WAITALL);
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			return -1;
		}
		iov_advance(&iov, &n, (size_t)r);
	}
	return 0;
}

static int recv_hdr(int fd, uint32_t *type, uint32_t *aux, uint64_t *len)
{
	uint8_t h[16];
	if (recv_all(fd, h, 16))
		return -1;
	*type = get32(h);
	*aux = get32(h + 4);
	*len = get64(h + 8);
	return 0;
}

/* A whole message of an expected type with a bounded payload (malloc'd, NUL-terminated). */
static int recv_expect(int fd, uint32_t want, uint64_t max, uint8_t **out, uint64_t *len, char *err, size_t errlen)
{
	uint32_t type, aux;
	if (recv_hdr(fd, &type, &aux, len)) {
		snprintf(err, errlen, "connection lost: %s", strerror(errno));
		return -1;
	}
	if (type == MSG_REFUSE && *len <= 4096)
		max = *len;   /* a refusal carries its reason */
	if (*len > max || (type != want && type != MSG_REFUSE)) {
		snprintf(err, errlen, "protocol error: message type %u (%llu bytes), expected %u", type,
		         (unsigned long long)*len, want);
		return -1;
	}
	*out = malloc(*len + 1);
	if (!*out || recv_all(fd, *out, *len)) {
		free(*out);
		*out = NULL;
		snprintf(err, errlen, "connection lost: %s", strerror(errno));
		return -1;
	}
	(*out)[*len] = '\0';
	if (type == MSG_REFUSE) {
		snprintf(err, errlen, "refused by the other side: %s", (char *)*out);
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

static void set_timeouts(int fd, int seconds)
{
	struct timeval tv = { seconds, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Wait up to `seconds` for an empty message of this type (or a refusal). */
static int await_msg(int fd, uint32_t type, int seconds, char *err, size_t errlen)
{
	uint8_t *reply;
	uint64_t len;
	set_timeouts(fd, seconds);
	if (recv_expect(fd, type, 0, &reply, &len, err, errlen))
		return -1;
	free(reply);
	return 0;
}

/* "[ADDR:]PORT" -> host (NULL for any) and port strings. */
static int split_addr(const char *s, char *host, size_t hn, char *port, size_t pn)
{
	const char *colon = strrchr(s, ':');
	const char *p = colon ? colon + 1 : s;
	if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) >= pn)
		return -1;
	snprintf(port, pn, "%s", p);
	host[0] = '\0';
	if (colon) {
		size_t n = (size_t)(colon - s);
		if (n >= hn)
			return -1;
		memcpy(host, s, n);
		host[n] = '\0';
		if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {   /* [v6] */
			memmove(host, host + 1, n - 2);
			host[n - 2] = '\0';
		}
	}
	return 0;
}

/* What both sides must agree on before any page moves. */
static void build_compat(struct hyve_vm *vm, struct snap_buf *sb)
{
	sb_u64(sb, vm_get_lowmem_size(vm->ctx) + vm_get_highmem_size(vm->ctx));
	sb_u32(sb, (uint32_t)vm->ncpus);
	size_t n;
	char *cfg = config_to_string(&n);
	/* The device list: every pci.B.S.F.device line. */
	char devs[4096] = "", *save = NULL;
	for (char *line = cfg ? strtok_r(cfg, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save))
		if (strncmp(line, "pci.", 4) == 0 && strstr(line, ".device="))
			snprintf(devs + strlen(devs), sizeof(devs) - strlen(devs), "%s;", line);
	free(cfg);
	sb_str(sb, devs);
	struct kvm_cpuid2 *c = cpuid_build(vm->ctx, 0, vm->ncpus);
	sb_u32(sb, c ? c->nent : 0);
	for (uint32_t i = 0; c && i < c->nent; i++) {
		sb_u32(sb, c->entries[i].function);
		sb_u32(sb, c->entries[i].index);
		sb_u32(sb, c->entries[i].ebx);
		sb_u32(sb, c->entries[i].ecx);
		sb_u32(sb, c->entries[i].edx);
	}
	free(c);
}

/* The destination's verdict on the source's compat block: NULL = compatible. */
static const char *check_compat(struct hyve_vm *vm, const uint8_t *p, size_t len, char *why, size_t wn)
{
	struct snap_buf mine;
	sb_init(&mine);
	build_compat(vm, &mine);
	struct snap_rd a, b;
	sr_init(&a, p, len);
	sr_init(&b, mine.data, mine.len);
	char da[4096], db[4096];
	uint64_t ma = sr_u64(&a), mb = sr_u64(&b);
	uint32_t ca = sr_u32(&a), cb = sr_u32(&b);
	sr_str(&a, da, sizeof(da), NULL);
	sr_str(&b, db, sizeof(db), NULL);
	why[0] = '\0';
	if (!sr_ok(&a))
		snprintf(why, wn, "malformed compatibility data");
	else if (ma != mb)
		snprintf(why, wn, "memory size differs (source %llu MiB, destination %llu MiB)",
		         (unsigned long long)(ma >> 20), (unsigned long long)(mb >> 20));
	else if (ca != cb)
		snprintf(why, wn, "vCPU count differs (source %u, destination %u)", ca, cb);
	else if (strcmp(da, db))
		snprintf(why, wn, "device list differs (source '%.200s', destination '%.200s')", da, db);
	if (!why[0]) {
		/* Every CPUID feature bit the guest may have seen must exist here. */
		uint32_t na = sr_u32(&a), nb = sr_u32(&b);
		uint32_t (*eb)[5] = calloc(nb + 1, sizeof(*eb));
		for (uint32_t i = 0; eb && i < nb; i++)
			for (int k = 0; k < 5; k++)
				eb[i][k] = sr_u32(&b);
		for (uint32_t i = 0; eb && i < na && !why[0] && sr_ok(&a); i++) {
			uint32_t e[5];
			for (int k = 0; k < 5; k++)
				e[k] = sr_u32(&a);
			bool feature_leaf = e[0] == 1 || (e[0] == 7 && e[1] == 0) || e[0] == 0x80000001u;
			if (!feature_leaf)
				continue;
			for (uint32_t j = 0; j < nb; j++) {
				if (eb[j][0] != e[0] || eb[j][1] != e[1])
					continue;
				/* leaf 1 EBX holds the APIC id and counts, not features */
				uint32_t mb_ebx = e[0] == 1 ? 0 : e[2] & ~eb[j][2];
				uint32_t miss[3] = { mb_ebx, e[3] & ~eb[j][3], e[4] & ~eb[j][4] };
				for (int r = 0; r < 3; r++)
					if (miss[r])
						snprintf(why, wn, "CPUID leaf 0x%x.%u %s: features 0x%08x missing here", e[0], e[1],
						         r == 0 ? "EBX" : r == 1 ? "ECX" : "EDX", miss[r]);
			}
		}
		free(eb);
	}
	sb_free(&mine);
	return why[0] ? why : NULL;
}

/* ==================== source ==================== */

enum mig_state { MIG_NONE, MIG_SETUP, MIG_ACTIVE, MIG_STOPCOPY, MIG_DONE, MIG_FAILED };
static const char *const state_names[] = { "none", "setup", "active", "stop-and-copy", "completed", "failed" };

static struct {
	pthread_mutex_t mtx;
	enum mig_state state;
	int round;
	uint64_t bytes, pages, zero_pages, last_dirty;
	double dirty_rate, bandwidth, expected_ms, total_ms, downtime_ms;
	double started;   /* now_s() at the start: the rate before round 0 ends */
	int throttle;
	uint64_t verify_resent;
	char error[256];
} st = { .mtx = PTHREAD_MUTEX_INITIALIZER };

/* A fast 4-lane multiplicative hash: detects changed pages (not adversarial). */
static uint64_t page_hash(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)(const void *)p;
	const uint64_t k = 0x9e3779b97f4a7c15ULL;
	uint64_t a = 1, b = 2, c = 3, d = 4;
	for (int i = 0; i < PAGE / 8; i += 4) {
		a = (a ^ q[i]) * k;
		b = (b ^ q[i + 1]) * k;
		c = (c ^ q[i + 2]) * k;
		d = (d ^ q[i + 3]) * k;
	}
	return a ^ (b << 16 | b >> 48) ^ (c << 32 | c >> 32) ^ (d << 48 | d >> 16);
}

struct src_stream {
	int fd;
	int index;
	uint64_t bytes;
	int comp;
	bool skip_zero;     /* round 0: the destination's RAM is already zero */
	struct vm_mem_region *r;
	int nr;
	uint64_t **sendmap;
	int nstreams;
	int rc;
	char *lz4buf;
	uint8_t *stage;     /* pages are copied here, then hashed and sent */
	uint64_t **sent_hash;
};

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)(const void *)p;
	for (int i = 0; i < PAGE / 8; i += 4)
		if (q[i] | q[i + 1] | q[i + 2] | q[i + 3])
			return false;
	return true;
}

/* One PAGES message: header, the entries, then the data in entry order. */
static int flush_pages(struct src_stream *s, struct iovec *iov, int niov, uint8_t (*ent)[12], int np,
                       uint64_t payload, uint64_t zeros)
{
	uint8_t hdr[16];
	put32(hdr, MSG_PAGES);
	put32(hdr + 4, (uint32_t)np);
	put64(hdr + 8, payload);
	iov[0] = (struct iovec){ hdr, 16 };
	iov[1] = (struct iovec){ ent, (size_t)np * 12 };
	int rc = send_iov(s->fd, iov, niov);
	s->bytes += 16 + payload;
	pthread_mutex_lock(&st.mtx);   /* live progress for --migrate-status */
	st.bytes += 16 + payload;
	st.pages += (uint64_t)np;
	st.zero_pages += zeros;
	pthread_mutex_unlock(&st.mtx);
	return rc;
}

/*
 * Send this stream's share of the pages set in sendmap.  With the verify
 * pass on, each page is copied first and the copy hashed and sent, so the
 * hash is of exactly the bytes sent; without it the page goes from guest
 * RAM to the socket (a write racing the send is in the dirty log).
 */
static void *stream_send_round(void *arg)
{
	struct src_stream *s = arg;
	struct iovec iov[2 + 2 * PAGES_PER_MSG];
	uint8_t ent[PAGES_PER_MSG][12];
	int np = 0, niov = 2;
	uint64_t payload = 0, zeros = 0;
	s->rc = 0;
	for (int ri = 0; ri < s->nr && !s->rc; ri++) {
		uint64_t npages = s->r[ri].size / PAGE;
		for (uint64_t p = 0; p < npages && !s->rc; p++) {
			if ((p / CHUNK_PAGES) % (uint64_t)s->nstreams != (uint64_t)s->index) {
				p += CHUNK_PAGES - 1 - (p % CHUNK_PAGES);   /* skip to our next chunk */
				continue;
			}
			uint64_t w = s->sendmap[ri][p / 64];
			if (!(w >> (p % 64) & 1)) {
				if (w == 0)
					p |= 63;   /* whole word clear */
				continue;
			}
			uint64_t gpa = s->r[ri].gpa + p * PAGE;
			const uint8_t *page = s->r[ri].hva + p * PAGE;
			if (s->sent_hash) {
				uint8_t *copy = s->stage + (size_t)np * PAGE;
				memcpy(copy, page, PAGE);
				page = copy;
			}
			bool zero = page_is_zero(page);
			if (zero && s->skip_zero)
				continue;
			if (s->sent_hash)
				s->sent_hash[ri][p] = page_hash(page);
			uint32_t enc = zero ? ENC_ZERO : ENC_RAW;
			int clen = 0;
			char *cdst = s->lz4buf + (size_t)np * LZ4_PAGE_BOUND;
			if (!zero && s->comp == COMP_LZ4) {
				clen = LZ4_compress_default((const char *)page, cdst, PAGE, LZ4_PAGE_BOUND);
				if (clen > 0 && clen < PAGE - 64)
					enc = ENC_LZ4;
			}
			put64(ent[np], gpa | enc);
			put32(ent[np] + 8, enc == ENC_LZ4 ? (uint32_t)clen : 0);
			payload += 12;
			if (enc == ENC_RAW) {
				iov[niov++] = (struct iovec){ (void *)page, PAGE };
				payload += PAGE;
			} else if (enc == ENC_LZ4) {
				iov[niov++] = (struct iovec){ cdst, (size_t)clen };
				payload += (uint64_t)clen;
			}
			zeros += zero;
			if (++np == PAGES_PER_MSG) {
				s->rc = flush_pages(s, iov, niov, ent, np, payload, zeros);
				np = 0, niov = 2, payload = 0, zeros = 0;
			}
		}
	}
	if (np && !s->rc)
		s->rc = flush_pages(s, iov, niov, ent, np, payload, zeros);
	return NULL;
}

struct mig_src {
	struct hyve_vm *vm;
	struct src_stream s[MAX_STREAMS];
	int nstreams;
	struct vm_mem_region r[MAX_REGIONS];
	int nr;
	uint64_t *sendmap[MAX_REGIONS];
	uint64_t *sent_hash[MAX_REGIONS];
	bool paused, quiesced, logging;
};

struct verify_job {
	struct mig_src *m;
	int part, nparts;
	uint64_t added;
};

/* Stop-and-copy: mark every page whose content is not what was sent. */
static void *verify_part(void *arg)
{
	struct verify_job *j = arg;
	struct mig_src *m = j->m;
	for (int ri = 0; ri < m->nr; ri++) {
		uint64_t npages = m->r[ri].size / PAGE;
		uint64_t lo = npages * (uint64_t)j->part / (uint64_t)j->nparts / 64 * 64;
		uint64_t hi = j->part + 1 == j->nparts ? npages : npages * (uint64_t)(j->part + 1) / (uint64_t)j->nparts / 64 * 64;
		for (uint64_t p = lo; p < hi; p++) {
			if (m->sendmap[ri][p / 64] >> (p % 64) & 1)
				continue;
			if (page_hash(m->r[ri].hva + p * PAGE) != m->sent_hash[ri][p]) {
				m->sendmap[ri][p / 64] |= 1ULL << (p % 64);   /* word owned by this part */
				j->added++;
			}
		}
	}
	return NULL;
}

static uint64_t verify_pages(struct mig_src *m)
{
	struct verify_job j[2] = { { m, 0, 2, 0 }, { m, 1, 2, 0 } };
	pthread_t t;
	bool threaded = pthread_create(&t, NULL, verify_part, &j[1]) == 0;
	verify_part(&j[0]);
	if (threaded)
		pthread_join(t, NULL);
	else
		verify_part(&j[1]);
	return j[0].added + j[1].added;
}

static int send_round(struct mig_src *m, bool skip_zero, uint64_t *bytes)
{
	pthread_t th[MAX_STREAMS];
	uint64_t before = 0, after = 0;
	for (int i = 0; i < m->nstreams; i++) {
		before += m->s[i].bytes;
		m->s[i].skip_zero = skip_zero;
	}
	for (int i = 1; i < m->nstreams; i++)
		if (pthread_create(&th[i], NULL, stream_send_round, &m->s[i]))
			return -1;
	stream_send_round(&m->s[0]);
	int rc = m->s[0].rc;
	for (int i = 1; i < m->nstreams; i++) {
		pthread_join(th[i], NULL);
		rc |= m->s[i].rc;
	}
	for (int i = 0; i < m->nstreams; i++)
		after += m->s[i].bytes;
	*bytes = after - before;
	return rc ? -1 : 0;
}

/*
 * Fetch (and re-protect) the dirty pages of every region and add them to
 * sendmap, which holds what the next round must send; *count is its size.
 */
static int fetch_dirty(struct mig_src *m, uint64_t *count)
{
	*count = 0;
	for (int i = 0; i < m->nr; i++) {
		uint64_t npages = m->r[i].size / PAGE, words = (npages + 63) / 64;
		uint64_t *bm = calloc(words + 1, 8);
		if (!bm || vm_dirty_log_get(m->vm->ctx, i, bm) ||
		    vm_dirty_log_clear(m->vm->ctx, i, 0, (uint32_t)npages, bm)) {
			free(bm);
			return -1;
		}
		for (uint64_t w = 0; w < words; w++) {
			m->sendmap[i][w] |= bm[w];
			*count += (uint64_t)__builtin_popcountll(m->sendmap[i][w]);
		}
		free(bm);
	}
	return 0;
}

static void clear_sendmap(struct mig_src *m)
{
	for (int i = 0; i < m->nr; i++)
		memset(m->sendmap[i], 0, (m->r[i].size / PAGE + 63) / 64 * 8);
}

static void quiesce_on_main(void *arg)
{
	(void)arg;
	vmstate_quiesce();
}

static void resume_on_main(void *arg)
{
	(void)arg;
	vmstate_resume();
}

struct state_call {
	struct hyve_vm *vm;
	struct vm_sections secs;
	int rc;
	char err[512];
};

static void save_on_main(void *arg)
{
	struct state_call *c = arg;
	c->rc = vmstate_save(c->vm, &c->secs, c->err, sizeof(c->err));
}

static void src_cleanup(struct mig_src *m, bool failed)
{
	if (failed && m->quiesced)
		control_run_on_main(resume_on_main, NULL);
	if (failed && m->paused)
		vcpus_resume(m->vm);
	vcpus_set_throttle(m->vm, 0);
	if (m->logging)
		vm_dirty_log_enable(m->vm->ctx, false);
	for (int i = 0; i < m->nstreams; i++) {
		if (m->s[i].fd >= 0)
			mig_tls_close(m->s[i].fd);
		free(m->s[i].lz4buf);
		free(m->s[i].stage);
	}
	for (int i = 0; i < m->nr; i++) {
		free(m->sendmap[i]);
		free(m->sent_hash[i]);
	}
}

static int connect_to(const char *addr, char *err, size_t errlen)
{
	char host[256], port[16];
	if (split_addr(addr, host, sizeof(host), port, sizeof(port)) || !host[0]) {
		snprintf(err, errlen, "expected HOST:PORT, got '%s'", addr);
		return -1;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai, *a;
	int rc = getaddrinfo(host, port, &hints, &ai);
	if (rc) {
		snprintf(err, errlen, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	int fd = -1;
	for (a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(errno));
		return -1;
	}
	set_timeouts(fd, 30);
	char why[256];
	if (mig_tls_handshake(fd, false, why, sizeof(why))) {
		snprintf(err, errlen, "%s: %s", addr, why);
		close(fd);
		return -1;
	}
	return fd;
}

/* One stream per host core (up to 8): the receiving side's copies and page
 * faults, not the wire, limit one stream (docs/migration.md). */
static uint64_t default_streams(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > MAX_STREAMS ? MAX_STREAMS : (uint64_t)n;
}

static int migrate_run(struct hyve_vm *vm, const char *addr, bool live, char *err, size_t errlen)
{
	struct mig_src m = { .vm = vm };
	double t0 = now_s(), tpause = 0;
	int nstreams = (int)get_config_uint_default("migration.streams", default_streams());
	uint64_t downtime_ms = get_config_uint_default("migration.downtime_ms", 300);
	int max_rounds = (int)get_config_uint_default("migration.max_rounds", 30);
	const char *comp_cfg = get_config_value("migration.compress");
	const char *verify_cfg = get_config_value("migration.verify");
	bool verify = vm->emulating, vb;
	if (verify_cfg && strcmp(verify_cfg, "auto") && config_parse_bool(verify_cfg, &vb) == 0)
		verify = vb;
	int comp = comp_cfg && strcmp(comp_cfg, "lz4") == 0 ? COMP_LZ4 : COMP_NONE;
	if (nstreams < 1 || nstreams > MAX_STREAMS) {
		snprintf(err, errlen, "migration.streams must be 1..%d", MAX_STREAMS);
		return -1;
	}
	if (vmstate_check_supported(err, errlen))
		return -1;
	if (mig_tls_setup(get_config_value("migration.psk_file"), err, errlen))
		return -1;
	pthread_mutex_lock(&st.mtx);
	int prev = st.state;
	if (prev == MIG_SETUP || prev == MIG_ACTIVE || prev == MIG_STOPCOPY) {
		pthread_mutex_unlock(&st.mtx);
		snprintf(err, errlen, "a migration is already running");
		return -1;
	}
	st.round = st.throttle = 0;
	st.bytes = st.pages = st.zero_pages = st.last_dirty = st.verify_resent = 0;
	st.dirty_rate = st.bandwidth = st.expected_ms = st.total_ms = st.downtime_ms = 0;
	st.error[0] = '\0';
	st.started = t0;
	st.state = MIG_SETUP;
	pthread_mutex_unlock(&st.mtx);
	for (int i = 0; i < MAX_STREAMS; i++)
		m.s[i].fd = -1;
	m.nstreams = nstreams;
	m.nr = vm_mem_regions(vm->ctx, m.r, MAX_REGIONS);
	uint8_t zero_page[PAGE] = { 0 };
	uint64_t zero_hash = page_hash(zero_page);
	for (int i = 0; i < m.nr; i++) {
		uint64_t npages = m.r[i].size / PAGE;
		m.sendmap[i] = calloc((npages + 63) / 64 + 1, 8);
		m.sent_hash[i] = verify && live ? malloc(npages * sizeof(uint64_t)) : NULL;
		if (!m.sendmap[i] || (verify && live && !m.sent_hash[i])) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		/* The destination starts with zeroed RAM. */
		for (uint64_t p = 0; m.sent_hash[i] && p < npages; p++)
			m.sent_hash[i][p] = zero_hash;
	}
	uint64_t session;
	if (getentropy(&session, sizeof(session)))
		session = (uint64_t)t0 ^ (uint64_t)getpid();

	/* Handshake on stream 0: hello, the answer, config and compat. */
	m.s[0].fd = connect_to(addr, err, errlen);
	if (m.s[0].fd < 0)
		goto fail;
	uint8_t hello[8 + 4 + 4 + 4 + 8 + 32];
	memset(hello, 0, sizeof(hello));
	memcpy(hello, MIG_MAGIC, 8);
	put32(hello + 8, MIG_PROTO);
	put32(hello + 12, (uint32_t)nstreams);
	put32(hello + 16, comp == COMP_LZ4 ? 1u << COMP_LZ4 : 0);
	put64(hello + 20, session);
	snprintf((char *)hello + 28, 32, "hyve 0.2");
	if (send_msg(m.s[0].fd, MSG_HELLO, 0, hello, sizeof(hello))) {
		snprintf(err, errlen, "send to %s: %s", addr, strerror(errno));
		goto fail;
	}
	for (int i = 1; i < nstreams; i++) {
		uint8_t sh[12];
		put64(sh, session);
		put32(sh + 8, (uint32_t)i);
		m.s[i].fd = connect_to(addr, err, errlen);
		if (m.s[i].fd < 0 || send_msg(m.s[i].fd, MSG_STREAM, 0, sh, sizeof(sh))) {
			if (m.s[i].fd >= 0)
				snprintf(err, errlen, "stream %d: %s", i, strerror(errno));
			goto fail;
		}
	}
	uint8_t *reply;
	uint64_t rlen;
	if (recv_expect(m.s[0].fd, MSG_ACCEPT, 64, &reply, &rlen, err, errlen))
		goto fail;
	int chosen = rlen >= 4 ? (int)get32(reply) : -1;
	free(reply);
	if (chosen != COMP_NONE && chosen != comp) {
		snprintf(err, errlen, "destination chose unknown compression %d", chosen);
		goto fail;
	}
	size_t clen;
	char *cfg = config_to_string(&clen);
	int rc = cfg ? send_msg(m.s[0].fd, MSG_CONFIG, 0, cfg, clen) : -1;
	free(cfg);
	struct snap_buf compat;
	sb_init(&compat);
	build_compat(vm, &compat);
	rc = rc ? rc : send_msg(m.s[0].fd, MSG_COMPAT, 0, compat.data, compat.len);
	sb_free(&compat);
	if (rc) {
		snprintf(err, errlen, "send to %s: %s", addr, strerror(errno));
		goto fail;
	}
	/* The destination builds the VM from the config before it answers. */
	if (await_msg(m.s[0].fd, MSG_READY, 120, err, errlen))
		goto fail;
	set_timeouts(m.s[0].fd, 30);
	for (int i = 0; i < nstreams; i++) {
		m.s[i].index = i;
		m.s[i].nstreams = nstreams;
		m.s[i].comp = chosen;
		m.s[i].r = m.r;
		m.s[i].nr = m.nr;
		m.s[i].sendmap = m.sendmap;
		m.s[i].lz4buf = malloc((size_t)PAGES_PER_MSG * LZ4_PAGE_BOUND);
		m.s[i].stage = malloc((size_t)PAGES_PER_MSG * PAGE);
		m.s[i].sent_hash = m.sent_hash[0] ? m.sent_hash : NULL;
		if (!m.s[i].lz4buf || !m.s[i].stage) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}

	uint64_t bytes, dirty = 0;
	pthread_mutex_lock(&st.mtx);
	st.state = live ? MIG_ACTIVE : MIG_STOPCOPY;
	pthread_mutex_unlock(&st.mtx);
	if (live) {
		if (vm_dirty_log_enable(vm->ctx, true)) {
			snprintf(err, errlen, "cannot enable dirty page logging: %s", strerror(errno));
			goto fail;
		}
		m.logging = true;
		/* Round 0: everything; later rounds: what was dirtied meanwhile. */
		for (int i = 0; i < m.nr; i++)
			memset(m.sendmap[i], 0xff, (m.r[i].size / PAGE + 63) / 64 * 8);
		int throttle = 0;
		for (int round = 0;; round++) {
			double rs = now_s();
			if (send_round(&m, round == 0, &bytes)) {
				snprintf(err, errlen, "sending memory to %s failed in round %d: %s", addr, round, strerror(errno));
				goto fail;
			}
			double rt = now_s() - rs;
			clear_sendmap(&m);
			if (fetch_dirty(&m, &dirty)) {
				snprintf(err, errlen, "reading the dirty log: %s", strerror(errno));
				goto fail;
			}
			double bw = rt > 0 ? (double)bytes / rt : 1e12;
			double expected = bw > 0 ? (double)dirty * PAGE / bw * 1e3 : 1e9;
			pthread_mutex_lock(&st.mtx);
			st.round = round + 1;
			st.last_dirty = dirty;
			st.bandwidth = bw;
			st.dirty_rate = rt > 0 ? (double)dirty / rt : 0;
			st.expected_ms = expected;
			st.throttle = throttle;
			pthread_mutex_unlock(&st.mtx);
			log_debug("migration round %d: %.1f MiB in %.0f ms, %llu pages dirtied, expected downtime %.0f ms",
			          round, (double)bytes / (1 << 20), rt * 1e3, (unsigned long long)dirty, expected);
			if (expected <= (double)downtime_ms || round + 1 >= max_rounds + 10)
				break;
			if (round + 1 >= max_rounds && throttle < 90) {
				throttle = throttle + 20 > 90 ? 90 : throttle + 20;   /* auto-converge (docs/migration.md) */
				vcpus_set_throttle(vm, throttle);
			}
		}
	}

	/* Stop and copy: vCPUs out, devices drained, the last pages, state. */
	tpause = now_s();
	vcpus_pause(vm);
	m.paused = true;
	control_run_on_main(quiesce_on_main, NULL);
	m.quiesced = true;
	pthread_mutex_lock(&st.mtx);
	st.state = MIG_STOPCOPY;
	pthread_mutex_unlock(&st.mtx);
	uint64_t missed = 0;
	if (live) {
		if (fetch_dirty(&m, &dirty)) {
			snprintf(err, errlen, "reading the dirty log: %s", strerror(errno));
			goto fail;
		}
		if (m.sent_hash[0])
			missed = verify_pages(&m);
		pthread_mutex_lock(&st.mtx);
		st.verify_resent = missed;
		pthread_mutex_unlock(&st.mtx);
	} else {
		for (int i = 0; i < m.nr; i++)
			memset(m.sendmap[i], 0xff, (m.r[i].size / PAGE + 63) / 64 * 8);
	}
	if (send_round(&m, !live, &bytes)) {
		snprintf(err, errlen, "sending memory to %s failed: %s", addr, strerror(errno));
		goto fail;
	}
	struct state_call sc = { .vm = vm };
	control_run_on_main(save_on_main, &sc);
	if (sc.rc) {
		snprintf(err, errlen, "%s", sc.err);
		vm_sections_free(&sc.secs);
		goto fail;
	}
	struct snap_buf state;
	sb_init(&state);
	for (int i = 0; i < sc.secs.n; i++) {
		char name[VMSTATE_NAME_MAX] = { 0 };
		snprintf(name, sizeof(name), "%s", sc.secs.s[i].name);
		sb_put(&state, name, sizeof(name));
		sb_u32(&state, sc.secs.s[i].version);
		sb_u64(&state, sc.secs.s[i].data.len);
		sb_put(&state, sc.secs.s[i].data.data, sc.secs.s[i].data.len);
	}
	uint32_t nsections = (uint32_t)sc.secs.n;
	vm_sections_free(&sc.secs);
	rc = state.failed;
	for (int i = 0; i < nstreams && !rc; i++)
		rc = send_msg(m.s[i].fd, MSG_STREAM_END, 0, NULL, 0);
	rc = rc ? rc : send_msg(m.s[0].fd, MSG_STATE, nsections, state.data, state.len);
	pthread_mutex_lock(&st.mtx);
	st.bytes += state.len;
	pthread_mutex_unlock(&st.mtx);
	sb_free(&state);
	if (rc) {
		snprintf(err, errlen, "sending device state to %s failed: %s", addr, strerror(errno));
		goto fail;
	}
	/* The VM is the destination's only once it says it runs. */
	if (await_msg(m.s[0].fd, MSG_RUNNING, 60, err, errlen))
		goto fail;
	double t1 = now_s();
	pthread_mutex_lock(&st.mtx);
	st.state = MIG_DONE;
	st.total_ms = (t1 - t0) * 1e3;
	st.downtime_ms = (t1 - tpause) * 1e3;
	uint64_t total_bytes = st.bytes;
	int rounds = st.round;
	pthread_mutex_unlock(&st.mtx);
	/* On success err carries the summary (hyvectl prints it). */
	snprintf(err, errlen, "migrated to %s: %d rounds, %.1f MiB sent, total %.0f ms, downtime %.0f ms", addr, rounds,
	         (double)total_bytes / (1 << 20), (t1 - t0) * 1e3, (t1 - tpause) * 1e3);
	log_info("%s", err);
	if (m.sent_hash[0])
		log_info("migration verify pass: %llu pages changed that the dirty log did not report",
		         (unsigned long long)missed);
	src_cleanup(&m, false);
	return 0;
fail:
	pthread_mutex_lock(&st.mtx);
	st.state = MIG_FAILED;
	snprintf(st.error, sizeof(st.error), "%s", err);
	pthread_mutex_unlock(&st.mtx);
	src_cleanup(&m, true);
	log_warn("migration to %s failed (the VM keeps running here): %s", addr, err);
	return -1;
}

static int migrate_command(struct hyve_vm *vm, struct control_conn *c, const char *arg, bool live, char *err,
                           size_t errlen)
{
	if (!arg) {
		snprintf(err, errlen, "%s needs HOST:PORT", live ? "migrate-live" : "migrate");
		return -1;
	}
	if (migrate_run(vm, arg, live, err, errlen))
		return -1;
	control_reply(c, "%s", err);   /* the summary */
	/* The VM lives on at the destination: this process ends once hyvectl knows. */
	control_exit_after_reply(c, HYVE_EXIT_MIGRATED);
	return 0;
}

static int cmd_migrate(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	return migrate_command(vm, c, arg, false, err, errlen);
}

static int cmd_migrate_live(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	return migrate_command(vm, c, arg, true, err, errlen);
}

static int cmd_migrate_status(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)vm; (void)arg; (void)err; (void)errlen;
	/* Render under the lock, reply after it: a client slow to read must not
	 * hold up the senders that update these counters. */
	char lines[16][300];
	int n = 0;
#define LINE(...) snprintf(lines[n++], sizeof(lines[0]), __VA_ARGS__)
	pthread_mutex_lock(&st.mtx);
	LINE("state %s", state_names[st.state]);
	LINE("round %d", st.round);
	LINE("bytes_sent %llu", (unsigned long long)st.bytes);
	LINE("pages_sent %llu", (unsigned long long)st.pages);
	LINE("zero_pages %llu", (unsigned long long)st.zero_pages);
	LINE("dirty_pages_last_round %llu", (unsigned long long)st.last_dirty);
	LINE("dirty_rate_pages_per_s %.0f", st.dirty_rate);
	/* Until round 0 ends there is no measured round: the average since the start. */
	double elapsed = st.state == MIG_NONE ? 0 : now_s() - st.started;
	double bw = st.bandwidth > 0 ? st.bandwidth : elapsed > 0 ? (double)st.bytes / elapsed : 0;
	LINE("bandwidth_mib_per_s %.1f", bw / (1 << 20));
	LINE("elapsed_ms %.0f", st.state == MIG_DONE ? st.total_ms : elapsed * 1e3);
	LINE("expected_downtime_ms %.0f", st.expected_ms);
	LINE("throttle_percent %d", st.throttle);
	LINE("verify_resent_pages %llu", (unsigned long long)st.verify_resent);
	if (st.state == MIG_DONE) {
		LINE("total_ms %.0f", st.total_ms);
		LINE("downtime_ms %.0f", st.downtime_ms);
	}
	if (st.state == MIG_FAILED)
		LINE("error %s", st.error);
	pthread_mutex_unlock(&st.mtx);
#undef LINE
	for (int i = 0; i < n; i++)
		control_reply(c, "%s", lines[i]);
	return 0;
}

void migration_register_commands(void)
{
	control_register("migrate", cmd_migrate);
	control_register("migrate-live", cmd_migrate_live);
	control_register("migrate-status", cmd_migrate_status);
}

/* ==================== destination ==================== */

static struct {
	int fd[MAX_STREAMS];
	int nstreams;
	int comp;
	char peer[64];
} dst = { .fd = { -1, -1, -1, -1, -1, -1, -1, -1 } };

void migration_refuse(const char *reason)
{
	if (dst.fd[0] >= 0)
		send_msg(dst.fd[0], MSG_REFUSE, 0, reason, strlen(reason));
}

static int dst_fail(char *err, size_t errlen, const char *fmt, const char *a)
{
	snprintf(err, errlen, fmt, a);
	migration_refuse(err);
	return -1;
}

/*
 * The first connection is in dst.fd[0] (authenticated when TLS is on):
 * HELLO, the other streams (accepted on lfd; -1: none may join), ACCEPT,
 * then the configuration into the config tree.
 */
static int dst_handshake(int lfd, char *err, size_t errlen)
{
	set_timeouts(dst.fd[0], 30);
	uint8_t *hello;
	uint64_t len;
	if (recv_expect(dst.fd[0], MSG_HELLO, 256, &hello, &len, err, errlen)) {
		return -1;
	}
	if (len < 60 || memcmp(hello, MIG_MAGIC, 8)) {
		free(hello);
		return dst_fail(err, errlen, "%s", "not a hyve migration stream");
	}
	uint32_t proto = get32(hello + 8), nstreams = get32(hello + 12), comps = get32(hello + 16);
	uint64_t session = get64(hello + 20);
	free(hello);
	if (proto != MIG_PROTO) {
		char why[96];
		snprintf(why, sizeof(why), "protocol version %u not supported (this hyve speaks %d)", proto, MIG_PROTO);
		return dst_fail(err, errlen, "%s", why);
	}
	if (nstreams < 1 || nstreams > MAX_STREAMS || (nstreams > 1 && lfd < 0))
		return dst_fail(err, errlen, "%s", "bad stream count");
	dst.nstreams = (int)nstreams;
	dst.comp = comps & (1u << COMP_LZ4) ? COMP_LZ4 : COMP_NONE;
	/* The other streams identify themselves with the session number (and
	 * must come soon: accept() honours the receive timeout). */
	struct timeval tv = { 30, 0 };
	if (lfd >= 0)
		setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (uint32_t i = 1; i < nstreams; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		uint8_t *sh = NULL;
		if (fd < 0) {
			return dst_fail(err, errlen, "accepting stream: %s", strerror(errno));
		}
		set_timeouts(fd, 30);
		char why[256];
		if (mig_tls_handshake(fd, true, why, sizeof(why))) {
			close(fd);
			return dst_fail(err, errlen, "stream connection: %s", why);
		}
		if (recv_expect(fd, MSG_STREAM, 64, &sh, &len, err, errlen) || len != 12 || get64(sh) != session ||
		    get32(sh + 8) < 1 || get32(sh + 8) >= nstreams || dst.fd[get32(sh + 8)] >= 0) {
			free(sh);
			mig_tls_close(fd);
			return dst_fail(err, errlen, "%s", "a stream connection does not belong to this migration");
		}
		dst.fd[get32(sh + 8)] = fd;
		free(sh);
	}
	uint8_t acc[4];
	put32(acc, (uint32_t)dst.comp);
	uint8_t *cfg;
	if (send_msg(dst.fd[0], MSG_ACCEPT, 0, acc, 4) ||
	    recv_expect(dst.fd[0], MSG_CONFIG, MAX_CONFIG_BYTES, &cfg, &len, err, errlen)) {
		if (!err[0])
			snprintf(err, errlen, "connection lost: %s", strerror(errno));
		return -1;
	}
	char e[256];
	int rc = config_from_string((const char *)cfg, len, e, sizeof(e));
	free(cfg);
	if (rc)
		return dst_fail(err, errlen, "configuration from the source: %s", e);
	return 0;
}

/* Is this listening address reachable only from this host? */
static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
	return false;
}

static void addr_text(const struct sockaddr *sa, socklen_t len, char *buf, size_t n)
{
	char h[NI_MAXHOST], p[NI_MAXSERV];
	if (getnameinfo(sa, len, h, sizeof(h), p, sizeof(p), NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(buf, n, "?");
	else
		snprintf(buf, n, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, p);
}

int migration_accept(const char *addrport, char *err, size_t errlen)
{
	char host[256], port[16];
	if (split_addr(addrport, host, sizeof(host), port, sizeof(port))) {
		snprintf(err, errlen, "-R %s: expected [ADDR:]PORT", addrport);
		return -1;
	}
	/* Without an address, only this host may connect (as QEMU's -incoming
	 * tcp:localhost:PORT): any other address is the user's explicit choice. */
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
	int rc = getaddrinfo(host[0] ? host : "127.0.0.1", port, &hints, &ai);
	if (rc) {
		snprintf(err, errlen, "-R %s: %s", addrport, gai_strerror(rc));
		return -1;
	}
	if (mig_tls_setup(get_config_value("migration.psk_file"), err, errlen)) {
		freeaddrinfo(ai);
		return -1;
	}
	if (!is_loopback(ai->ai_addr) && !mig_tls_enabled() && !get_config_bool_default("migration.insecure", false)) {
		snprintf(err, errlen, "-R %s: listening beyond loopback needs -o migration.psk_file=FILE on both ends "
		         "(or -o migration.insecure=true: anyone who can connect then sends this host a VM)", addrport);
		freeaddrinfo(ai);
		return -1;
	}
	int lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	if (lfd >= 0)
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) || listen(lfd, MAX_STREAMS)) {
		snprintf(err, errlen, "-R %s: %s", addrport, strerror(errno));
		freeaddrinfo(ai);
		if (lfd >= 0)
			close(lfd);
		return -1;
	}
	freeaddrinfo(ai);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char where[80] = "?", peer[80];
	if (getsockname(lfd, (struct sockaddr *)&ss, &sl) == 0)
		addr_text((struct sockaddr *)&ss, sl, where, sizeof(where));
	/* Port 0 picks a free one: the line says which (tests wait for it). */
	log_info("waiting for an incoming VM on %s%s", where, mig_tls_enabled() ? " (TLS, pre-shared key)" : "");
	for (;;) {
		sl = sizeof(ss);
		dst.fd[0] = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (dst.fd[0] < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			snprintf(err, errlen, "accept: %s", strerror(errno));
			close(lfd);
			return -1;
		}
		addr_text((struct sockaddr *)&ss, sl, peer, sizeof(peer));
		set_timeouts(dst.fd[0], 30);
		char why[256];
		if (mig_tls_handshake(dst.fd[0], true, why, sizeof(why)) == 0)
			break;
		/* A peer without the key gets nothing and cannot end the wait for the real source. */
		log_warn("refused a connection from %s: %s", peer, why);
		close(dst.fd[0]);
		dst.fd[0] = -1;
	}
	log_info("migration source %s connected", peer);
	rc = dst_handshake(lfd, err, errlen);
	close(lfd);
	return rc;
}

int migration_accept_fd(int fd, char *err, size_t errlen)
{
	dst.fd[0] = fd;
	return dst_handshake(-1, err, errlen);
}

struct dst_stream {
	struct vmctx *ctx;
	int fd;
	int rc;
	char err[160];
	uint64_t pages;
};

/*
 * Apply one PAGES message whose header was read: its entries first, all
 * checked before any data is read, then the data straight into guest RAM
 * (lz4 blocks into lzbuf, PAGES_PER_MSG x LZ4_PAGE_BOUND, then decompressed).
 */
static int recv_pages(struct dst_stream *s, uint32_t count, uint64_t len, char *lzbuf)
{
	uint8_t ent[PAGES_PER_MSG][12];
	struct iovec iov[PAGES_PER_MSG];
	uint8_t *lz_page[PAGES_PER_MSG];
	int niov = 0;
	uint64_t used = (uint64_t)count * 12;
	if (count == 0 || count > PAGES_PER_MSG || len > MAX_MSG || used > len) {
		snprintf(s->err, sizeof(s->err), "malformed page batch (%u pages, %llu bytes)", count, (unsigned long long)len);
		return -1;
	}
	if (recv_all(s->fd, ent, (size_t)used))
		goto lost;
	for (uint32_t i = 0; i < count; i++) {
		uint64_t v = get64(ent[i]);
		uint32_t enc = (uint32_t)(v & (PAGE - 1)), clen = get32(ent[i] + 8);
		uint64_t gpa = v & ~(uint64_t)(PAGE - 1);
		uint8_t *hva = vm_map_gpa(s->ctx, gpa, PAGE);
		lz_page[i] = NULL;
		if (!hva || enc > ENC_LZ4) {
			snprintf(s->err, sizeof(s->err), "page 0x%llx (encoding %u) is not in guest RAM", (unsigned long long)gpa, enc);
			return -1;
		}
		if (enc == ENC_ZERO) {
			if (!page_is_zero(hva))
				memset(hva, 0, PAGE);
		} else if (enc == ENC_RAW) {
			iov[niov++] = (struct iovec){ hva, PAGE };
			used += PAGE;
		} else {
			if (clen == 0 || clen > (uint32_t)LZ4_PAGE_BOUND)
				goto bad;
			lz_page[i] = hva;
			iov[niov++] = (struct iovec){ lzbuf + (size_t)i * LZ4_PAGE_BOUND, clen };
			used += clen;
		}
	}
	if (used != len)
		goto bad;
	if (recv_iov(s->fd, iov, niov))
		goto lost;
	for (uint32_t i = 0; i < count; i++)
		if (lz_page[i] && LZ4_decompress_safe(lzbuf + (size_t)i * LZ4_PAGE_BOUND, (char *)lz_page[i],
		                                      (int)get32(ent[i] + 8), PAGE) != PAGE)
			goto bad;
	s->pages += count;
	return 0;
bad:
	snprintf(s->err, sizeof(s->err), "malformed page batch: its pages do not fit the header's %llu bytes",
	         (unsigned long long)len);
	return -1;
lost:
	snprintf(s->err, sizeof(s->err), "connection lost: %s", strerror(errno));
	return -1;
}

/* Streams other than 0: pages until STREAM_END. */
static void *dst_stream_thread(void *arg)
{
	struct dst_stream *s = arg;
	char *lzbuf = malloc((size_t)PAGES_PER_MSG * LZ4_PAGE_BOUND);
	s->rc = -1;
	for (;;) {
		uint32_t type, aux;
		uint64_t len;
		if (!lzbuf || recv_hdr(s->fd, &type, &aux, &len)) {
			snprintf(s->err, sizeof(s->err), "connection lost: %s", strerror(errno));
			break;
		}
		if (type == MSG_STREAM_END && len == 0) {
			s->rc = 0;
			break;
		}
		if (type != MSG_PAGES) {
			snprintf(s->err, sizeof(s->err), "unexpected message type %u", type);
			break;
		}
		if (recv_pages(s, aux, len, lzbuf))
			break;
	}
	free(lzbuf);
	return NULL;
}

static int parse_state(const uint8_t *p, uint64_t len, uint32_t n, struct vm_sections *out)
{
	struct snap_rd rd;
	sr_init(&rd, p, len);
	for (uint32_t i = 0; i < n; i++) {
		char name[VMSTATE_NAME_MAX + 1];
		sr_get(&rd, name, VMSTATE_NAME_MAX);
		name[VMSTATE_NAME_MAX] = '\0';
		uint32_t version = sr_u32(&rd);
		uint64_t dl = sr_u64(&rd);
		if (!sr_ok(&rd) || dl > sr_left(&rd) || vm_sections_find(out, name))
			return -1;
		struct vm_section *s = vm_sections_add(out, name, version);
		if (!s)
			return -1;
		sb_put(&s->data, rd.p + rd.off, dl);
		rd.off += dl;
		if (s->data.failed)
			return -1;
	}
	return sr_done(&rd) ? 0 : -1;
}

int migration_receive(struct hyve_vm *vm, char *err, size_t errlen)
{
	uint8_t *compat, *state = NULL;
	uint64_t len;
	char why[512];
	int rc = -1;
	pthread_t th[MAX_STREAMS];
	struct dst_stream s[MAX_STREAMS];
	int started = 1;
	double t0 = now_s();
	if (recv_expect(dst.fd[0], MSG_COMPAT, 1 << 20, &compat, &len, err, errlen))
		return -1;
	const char *bad = check_compat(vm, compat, len, why, sizeof(why));
	free(compat);
	if (bad)
		return dst_fail(err, errlen, "incompatible: %s", bad);
	if (send_msg(dst.fd[0], MSG_READY, 0, NULL, 0)) {
		snprintf(err, errlen, "connection lost: %s", strerror(errno));
		return -1;
	}
	memset(s, 0, sizeof(s));
	for (int i = 0; i < dst.nstreams; i++) {
		s[i].ctx = vm->ctx;
		s[i].fd = dst.fd[i];
		set_timeouts(s[i].fd, 60);   /* a source that vanishes does not hang us */
	}
	for (; started < dst.nstreams; started++)
		if (pthread_create(&th[started], NULL, dst_stream_thread, &s[started]))
			break;
	/* Stream 0: pages, its end marker, then the device state. */
	char *lzbuf = malloc((size_t)PAGES_PER_MSG * LZ4_PAGE_BOUND);
	bool ended = false;
	if (!lzbuf) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	uint32_t nsec = 0;
	for (;;) {
		uint32_t type, aux;
		if (recv_hdr(s[0].fd, &type, &aux, &len)) {
			snprintf(err, errlen, "connection lost: %s", strerror(errno));
			goto out;
		}
		if (type == MSG_PAGES && !ended) {
			if (recv_pages(&s[0], aux, len, lzbuf)) {
				snprintf(err, errlen, "%s", s[0].err);
				goto out;
			}
		} else if (type == MSG_STREAM_END && !ended && len == 0) {
			ended = true;
		} else if (type == MSG_STATE && ended && len <= MAX_STATE_BYTES) {
			state = malloc(len + 1);
			if (!state || recv_all(s[0].fd, state, len)) {
				snprintf(err, errlen, "connection lost: %s", strerror(errno));
				goto out;
			}
			nsec = aux;
			break;
		} else {
			snprintf(err, errlen, "protocol error: message type %u", type);
			goto out;
		}
	}
	for (int i = 1; i < started; i++) {
		pthread_join(th[i], NULL);
		if (s[i].rc) {
			snprintf(err, errlen, "stream %d: %s", i, s[i].err);
			started = 1;
			goto out_joined;
		}
	}
	started = 1;
	struct vm_sections secs = { 0 };
	if (parse_state(state, len, nsec, &secs)) {
		vm_sections_free(&secs);
		dst_fail(err, errlen, "%s", "malformed device state");
		goto out_joined;
	}
	rc = vmstate_load(vm, &secs, err, errlen);
	vm_sections_free(&secs);
	if (rc) {
		snprintf(why, sizeof(why), "%s", err);
		dst_fail(err, errlen, "destination cannot load the state: %s", why);
		goto out_joined;
	}
	uint64_t pages = 0;
	for (int i = 0; i < dst.nstreams; i++)
		pages += s[i].pages;
	if (send_msg(dst.fd[0], MSG_RUNNING, 0, NULL, 0)) {
		snprintf(err, errlen, "connection lost before confirming: %s", strerror(errno));
		rc = -1;
		goto out_joined;
	}
	log_info("incoming VM received: %llu pages in %.0f ms over %d stream%s, compression %s", (unsigned long long)pages,
	         (now_s() - t0) * 1e3, dst.nstreams, dst.nstreams > 1 ? "s" : "", dst.comp == COMP_LZ4 ? "lz4" : "none");
	rc = 0;
	goto out_joined;
out:
	/* Unblock and collect the stream threads. */
	for (int i = 0; i < dst.nstreams; i++)
		shutdown(dst.fd[i], SHUT_RDWR);
	for (int i = 1; i < started; i++)
		pthread_join(th[i], NULL);
out_joined:
	free(lzbuf);
	free(state);
	for (int i = 0; i < dst.nstreams; i++) {
		mig_tls_close(dst.fd[i]);
		dst.fd[i] = -1;
	}
	return rc;
}
