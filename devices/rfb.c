/*
 * RFB server (rfb.h, RFC 6143).  One thread accepts; each client gets a
 * thread that does the handshake and then alternates between reading the
 * client's messages and, when it asked for an update, sending what changed.
 *
 * Change detection compares the picture with the last one this client was
 * sent, in 64x64 tiles: no dirty log, no coupling to the vCPUs, and a
 * client that fell behind gets the final state, not every frame.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "../core/log.h"
#include "../core/netlisten.h"
#include "../core/sandbox.h"
#include "rfb.h"

#define MAX_CLIENTS 8
#define TILE 64
#define MAX_DIM 4096
#define MAX_CUT_TEXT (1 << 20)
#define UPDATE_PERIOD_MS 30

enum { SEC_NONE = 1, SEC_VNC = 2 };
enum { ENC_RAW = 0, ENC_ZLIB = 6, ENC_DESKTOP_SIZE = -223 };

struct rfb_server {
	int lfd;
	bool auth;
	char password[9];
	struct rfb_source src;
	pthread_t thread;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	int served;          /* clients past the handshake, ever */
	atomic_int live;     /* client threads running */
};

struct pixfmt {
	uint8_t bpp, depth, big_endian, true_colour;
	uint16_t rmax, gmax, bmax;
	uint8_t rshift, gshift, bshift;
};

struct client {
	struct rfb_server *s;
	int fd;
	int minor;                   /* 3, 7 or 8 */
	struct pixfmt pf;
	bool zlib, desktop_size;
	z_stream zs;
	bool zs_ready;
	int w, h;
	uint32_t *cur, *sent;        /* this picture, the one the client has */
	bool pending, full;
	uint8_t *out;                /* encoding buffer */
	size_t outcap;
};

/* ---- socket helpers ---- */

static bool recv_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = recv(fd, p, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }

/* ---- handshake ---- */

/* VNC authentication: DES-encrypt the challenge with the password (each byte bit-reversed) as key. */
static bool vnc_response_ok(const char *password, const uint8_t challenge[16], const uint8_t response[16])
{
	uint8_t key[24], want[16 + 8];
	memset(key, 0, sizeof(key));
	for (int i = 0; i < 8 && password[i]; i++) {
		uint8_t c = (uint8_t)password[i], r = 0;
		for (int b = 0; b < 8; b++)
			if (c & (1u << b))
				r |= (uint8_t)(0x80u >> b);
		key[i] = r;
	}
	/* Triple DES with three equal keys is single DES (OpenSSL 3 keeps plain DES in its legacy provider). */
	memcpy(key + 8, key, 8);
	memcpy(key + 16, key, 8);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n1 = 0, n2 = 0;
	bool ok = c && EVP_EncryptInit_ex(c, EVP_des_ede3_ecb(), NULL, key, NULL) &&
	          EVP_CIPHER_CTX_set_padding(c, 0) && EVP_EncryptUpdate(c, want, &n1, challenge, 16) &&
	          EVP_EncryptFinal_ex(c, want + n1, &n2) && n1 + n2 == 16;
	EVP_CIPHER_CTX_free(c);
	/* Constant time: the response is a guess at the password. */
	uint8_t diff = 0;
	for (int i = 0; i < 16; i++)
		diff |= (uint8_t)(want[i] ^ response[i]);
	return ok && diff == 0;
}

static bool security_result(struct client *c, bool ok, const char *why)
{
	uint8_t b[4 + 4 + 64];
	put32(b, ok ? 0 : 1);
	size_t n = 4;
	if (!ok && c->minor >= 8) {
		size_t l = strlen(why);
		put32(b + 4, (uint32_t)l);
		memcpy(b + 8, why, l);
		n = 8 + l;
	}
	return net_send_all(c->fd, b, n);
}

static bool handshake(struct client *c)
{
	struct rfb_server *s = c->s;
	char ver[13] = "";
	if (!net_send_all(c->fd, "RFB 003.008\n", 12) || !recv_all(c->fd, ver, 12))
		return false;
	int major = 0, minor = 0;
	if (sscanf(ver, "RFB %3d.%3d\n", &major, &minor) != 2 || major != 3)
		return false;
	c->minor = minor >= 8 ? 8 : minor == 7 ? 7 : 3;   /* 3.889 (Apple) speaks 3.8 */
	uint8_t type = s->auth ? SEC_VNC : SEC_NONE;
	if (c->minor == 3) {
		uint8_t b[4];
		put32(b, type);
		if (!net_send_all(c->fd, b, 4))
			return false;
	} else {
		uint8_t offer[2] = { 1, type }, chosen;
		if (!net_send_all(c->fd, offer, 2) || !recv_all(c->fd, &chosen, 1))
			return false;
		if (chosen != type) {
			if (c->minor >= 8)
				security_result(c, false, "security type not offered");
			return false;
		}
	}
	if (type == SEC_VNC) {
		uint8_t challenge[16], response[16];
		if (getrandom(challenge, sizeof(challenge), 0) != (ssize_t)sizeof(challenge))
			return false;
		if (!net_send_all(c->fd, challenge, 16) || !recv_all(c->fd, response, 16))
			return false;
		bool ok = vnc_response_ok(s->password, challenge, response);
		if (!security_result(c, ok, "authentication failed") || !ok) {
			log_info("rfb: a client failed VNC authentication");
			return false;
		}
	} else if (c->minor >= 8 && !security_result(c, true, "")) {
		return false;
	}
	uint8_t shared;
	if (!recv_all(c->fd, &shared, 1))
		return false;
	/* ServerInit: the size, our pixel format (32 bpp XRGB, little-endian), the name. */
	c->w = c->h = 0;
	s->src.snapshot(s->src.arg, NULL, &c->w, &c->h);
	const char *name = s->src.name ? s->src.name : "hyve";
	size_t nl = strlen(name) > 255 ? 255 : strlen(name);
	uint8_t init[24 + 255];
	memset(init, 0, sizeof(init));
	put16(init, (uint16_t)c->w);
	put16(init + 2, (uint16_t)c->h);
	c->pf = (struct pixfmt){ 32, 24, 0, 1, 255, 255, 255, 16, 8, 0 };
	init[4] = 32; init[5] = 24; init[6] = 0; init[7] = 1;
	put16(init + 8, 255); put16(init + 10, 255); put16(init + 12, 255);
	init[14] = 16; init[15] = 8; init[16] = 0;
	put32(init + 20, (uint32_t)nl);
	memcpy(init + 24, name, nl);
	return net_send_all(c->fd, init, 24 + nl);
}

/* ---- updates ---- */

static bool ensure_out(struct client *c, size_t n)
{
	if (n <= c->outcap)
		return true;
	uint8_t *p = realloc(c->out, n);
	if (!p)
		return false;
	c->out = p;
	c->outcap = n;
	return true;
}

static size_t convert(const struct client *c, const uint32_t *src, int stride, int x, int y, int w, int h, uint8_t *dst)
{
	const struct pixfmt *f = &c->pf;
	int bytes = f->bpp / 8;
	uint8_t *o = dst;
	if (bytes == 4 && !f->big_endian && f->rmax == 255 && f->gmax == 255 && f->bmax == 255 && f->rshift == 16 &&
	    f->gshift == 8 && f->bshift == 0) {
		/* The framebuffer's own XRGB (the default format): rows as they are. */
		for (int j = 0; j < h; j++, o += (size_t)w * 4)
			memcpy(o, src + (size_t)(y + j) * (size_t)stride + x, (size_t)w * 4);
		return (size_t)(o - dst);
	}
	for (int j = 0; j < h; j++) {
		const uint32_t *row = src + (size_t)(y + j) * (size_t)stride + x;
		for (int i = 0; i < w; i++) {
			uint32_t p = row[i];
			uint32_t r = ((p >> 16) & 255) * f->rmax / 255, g = ((p >> 8) & 255) * f->gmax / 255,
			         b = (p & 255) * f->bmax / 255;
			uint32_t v = r << f->rshift | g << f->gshift | b << f->bshift;
			for (int k = 0; k < bytes; k++)
				o[k] = (uint8_t)(f->big_endian ? v >> (8 * (bytes - 1 - k)) : v >> (8 * k));
			o += bytes;
		}
	}
	return (size_t)(o - dst);
}

/* One rectangle: header, then Raw pixels or a zlib block. */
static bool send_rect(struct client *c, int x, int y, int w, int h)
{
	size_t raw = (size_t)w * (size_t)h * (c->pf.bpp / 8);
	if (!ensure_out(c, 16 + raw + raw / 100 + 64 + 12 + raw))
		return false;
	uint8_t *hdr = c->out, *pix = c->out + 16 + raw / 100 + 64 + raw;
	put16(hdr, (uint16_t)x);
	put16(hdr + 2, (uint16_t)y);
	put16(hdr + 4, (uint16_t)w);
	put16(hdr + 6, (uint16_t)h);
	size_t n = convert(c, c->cur, c->w, x, y, w, h, pix);
	if (!c->zlib) {
		put32(hdr + 8, ENC_RAW);
		return net_send_all(c->fd, hdr, 12) && net_send_all(c->fd, pix, n);
	}
	put32(hdr + 8, ENC_ZLIB);
	c->zs.next_in = pix;
	c->zs.avail_in = (uInt)n;
	c->zs.next_out = hdr + 16;
	c->zs.avail_out = (uInt)(raw + raw / 100 + 64);
	if (deflate(&c->zs, Z_SYNC_FLUSH) != Z_OK || c->zs.avail_in != 0)
		return false;
	size_t z = (size_t)(c->zs.next_out - (hdr + 16));
	put32(hdr + 12, (uint32_t)z);
	return net_send_all(c->fd, hdr, 16 + z);
}

static bool tile_dirty(const struct client *c, int tx, int ty, int tw, int th)
{
	for (int j = 0; j < th; j++) {
		size_t off = (size_t)(ty + j) * (size_t)c->w + (size_t)tx;
		if (memcmp(c->cur + off, c->sent + off, (size_t)tw * 4))
			return true;
	}
	return false;
}

static bool resize(struct client *c, int w, int h)
{
	free(c->cur);
	free(c->sent);
	c->w = w;
	c->h = h;
	c->cur = calloc((size_t)w * (size_t)h + 1, 4);
	c->sent = calloc((size_t)w * (size_t)h + 1, 4);
	return c->cur && c->sent;
}

static bool send_update(struct client *c)
{
	int w = c->w, h = c->h;
	if (!c->s->src.snapshot(c->s->src.arg, c->cur, &w, &h)) {
		if (w < 1 || h < 1 || w > MAX_DIM || h > MAX_DIM)
			return true;   /* no picture yet: try again later */
		if (!c->desktop_size) {
			log_info("rfb: the screen is now %dx%d; a client that cannot resize is dropped", w, h);
			return false;
		}
		if (!resize(c, w, h))
			return false;
		uint8_t m[4 + 12];
		m[0] = 0; m[1] = 0;
		put16(m + 2, 1);
		put16(m + 4, 0); put16(m + 6, 0); put16(m + 8, (uint16_t)w); put16(m + 10, (uint16_t)h);
		put32(m + 12, (uint32_t)ENC_DESKTOP_SIZE);
		if (!net_send_all(c->fd, m, sizeof(m)))
			return false;
		c->full = true;
		if (!c->s->src.snapshot(c->s->src.arg, c->cur, &w, &h))
			return true;
	}
	/* The tiles that changed (all of them for a full update). */
	int cols = (c->w + TILE - 1) / TILE, rows = (c->h + TILE - 1) / TILE, n = 0;
	static _Thread_local uint8_t dirty[(MAX_DIM / TILE) * (MAX_DIM / TILE)];
	for (int ty = 0; ty < rows; ty++)
		for (int tx = 0; tx < cols; tx++) {
			int tw = c->w - tx * TILE < TILE ? c->w - tx * TILE : TILE;
			int th = c->h - ty * TILE < TILE ? c->h - ty * TILE : TILE;
			dirty[ty * cols + tx] = c->full || tile_dirty(c, tx * TILE, ty * TILE, tw, th);
			n += dirty[ty * cols + tx];
		}
	if (n == 0)
		return true;   /* nothing new: the request stays pending */
	uint8_t m[4] = { 0, 0, 0, 0 };
	put16(m + 2, (uint16_t)n);
	if (!net_send_all(c->fd, m, 4))
		return false;
	for (int ty = 0; ty < rows; ty++)
		for (int tx = 0; tx < cols; tx++) {
			if (!dirty[ty * cols + tx])
				continue;
			int x = tx * TILE, y = ty * TILE;
			int tw = c->w - x < TILE ? c->w - x : TILE, th = c->h - y < TILE ? c->h - y : TILE;
			if (!send_rect(c, x, y, tw, th))
				return false;
			for (int j = 0; j < th; j++)
				memcpy(c->sent + (size_t)(y + j) * (size_t)c->w + (size_t)x,
				       c->cur + (size_t)(y + j) * (size_t)c->w + (size_t)x, (size_t)tw * 4);
		}
	c->pending = c->full = false;
	return true;
}

/* ---- client messages ---- */

static bool valid_format(const uint8_t *p, struct pixfmt *f)
{
	*f = (struct pixfmt){ p[0], p[1], p[2], p[3], get16(p + 4), get16(p + 6), get16(p + 8), p[10], p[11], p[12] };
	/* True colour only (colour maps are for 1990s displays), 8/16/32 bpp, fields inside the pixel. */
	if ((f->bpp != 8 && f->bpp != 16 && f->bpp != 32) || !f->true_colour || !f->rmax || !f->gmax || !f->bmax)
		return false;
	int bits = f->bpp;
	return f->rshift < bits && f->gshift < bits && f->bshift < bits &&
	       ((uint64_t)f->rmax << f->rshift) < (1ULL << bits) && ((uint64_t)f->gmax << f->gshift) < (1ULL << bits) &&
	       ((uint64_t)f->bmax << f->bshift) < (1ULL << bits);
}

/* One message from the client; false drops it. */
static bool client_message(struct client *c)
{
	uint8_t t, b[20];
	if (!recv_all(c->fd, &t, 1))
		return false;
	switch (t) {
	case 0:   /* SetPixelFormat */
		if (!recv_all(c->fd, b, 19))
			return false;
		if (!valid_format(b + 3, &c->pf)) {
			log_info("rfb: a client asked for a pixel format hyve does not serve; dropped");
			return false;
		}
		c->full = true;
		return true;
	case 2: { /* SetEncodings */
		if (!recv_all(c->fd, b, 3))
			return false;
		uint16_t n = get16(b + 1);
		c->zlib = c->desktop_size = false;
		for (uint16_t i = 0; i < n; i++) {
			if (!recv_all(c->fd, b, 4))
				return false;
			int32_t e = (int32_t)get32(b);
			c->zlib |= e == ENC_ZLIB;
			c->desktop_size |= e == ENC_DESKTOP_SIZE;
		}
		return true;
	}
	case 3:   /* FramebufferUpdateRequest: the whole screen is considered */
		if (!recv_all(c->fd, b, 9))
			return false;
		c->pending = true;
		c->full |= b[0] == 0;
		return true;
	case 4:   /* KeyEvent */
		if (!recv_all(c->fd, b, 7))
			return false;
		if (c->s->src.key)
			c->s->src.key(c->s->src.arg, b[0] != 0, get32(b + 3));
		return true;
	case 5:   /* PointerEvent */
		if (!recv_all(c->fd, b, 5))
			return false;
		if (c->s->src.pointer)
			c->s->src.pointer(c->s->src.arg, b[0], get16(b + 1), get16(b + 3));
		return true;
	case 6: { /* ClientCutText: read and dropped */
		if (!recv_all(c->fd, b, 7))
			return false;
		uint32_t len = get32(b + 3);
		if (len > MAX_CUT_TEXT)
			return false;
		uint8_t skip[4096];
		while (len) {
			uint32_t k = len > sizeof(skip) ? (uint32_t)sizeof(skip) : len;
			if (!recv_all(c->fd, skip, k))
				return false;
			len -= k;
		}
		return true;
	}
	default:
		return false;
	}
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *client_thread(void *arg)
{
	struct client *c = arg;
	struct rfb_server *s = c->s;
	pthread_setname_np(pthread_self(), "hyve-rfb");
	sandbox_thread_landlock();   /* made by a thread that predates the sandbox */
	/* A client that stops reading its updates is dropped, not waited for. */
	struct timeval tv = { 10, 0 };
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* From here on the thread parses what the network sends: the device
	 * role's allow-list (no files opened, no new sockets). */
	sandbox_thread_role(SANDBOX_ROLE_DEVICE);
	if (handshake(c) && resize(c, c->w, c->h) && deflateInit(&c->zs, 6) == Z_OK) {
		c->zs_ready = true;
		pthread_mutex_lock(&s->mtx);
		s->served++;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mtx);
		int64_t last = 0;
		for (;;) {
			/* A pending request is answered as soon as the period since the
			 * last update is over, not a whole period after the request. */
			int64_t left = c->pending ? last + UPDATE_PERIOD_MS - now_ms() : UPDATE_PERIOD_MS;
			struct pollfd pf = { c->fd, POLLIN, 0 };
			int r = poll(&pf, 1, left < 0 ? 0 : (int)left);
			if (r < 0 && errno != EINTR)
				break;
			if (r > 0 && !client_message(c))
				break;
			if (c->pending && now_ms() - last >= UPDATE_PERIOD_MS) {
				last = now_ms();
				if (!send_update(c))
					break;
			}
		}
	}
	if (c->zs_ready)
		deflateEnd(&c->zs);
	close(c->fd);
	free(c->cur);
	free(c->sent);
	free(c->out);
	free(c);
	atomic_fetch_sub(&s->live, 1);
	return NULL;
}

static void *accept_thread(void *arg)
{
	struct rfb_server *s = arg;
	pthread_setname_np(pthread_self(), "hyve-rfb-accept");
	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
				usleep(10000);
				continue;
			}
			return NULL;
		}
		struct client *c = calloc(1, sizeof(*c));
		if (!c || atomic_fetch_add(&s->live, 1) >= MAX_CLIENTS) {
			if (c)
				atomic_fetch_sub(&s->live, 1);
			free(c);
			close(fd);
			continue;
		}
		c->s = s;
		c->fd = fd;
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &a, client_thread, c)) {
			atomic_fetch_sub(&s->live, 1);
			close(fd);
			free(c);
		}
		pthread_attr_destroy(&a);
	}
}

struct rfb_server *rfb_start(int listen_fd, const char *password, const struct rfb_source *src, char *err,
                             size_t errlen)
{
	struct rfb_server *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->lfd = listen_fd;
	s->src = *src;
	if (password) {
		s->auth = true;
		snprintf(s->password, sizeof(s->password), "%s", password);
	}
	pthread_mutex_init(&s->mtx, NULL);
	pthread_cond_init(&s->cv, NULL);
	int rc = pthread_create(&s->thread, NULL, accept_thread, s);
	if (rc) {
		snprintf(err, errlen, "cannot start the RFB server thread: %s", strerror(rc));
		free(s);
		return NULL;
	}
	pthread_detach(s->thread);
	return s;
}

void rfb_wait_first_client(struct rfb_server *s)
{
	pthread_mutex_lock(&s->mtx);
	while (s->served == 0)
		pthread_cond_wait(&s->cv, &s->mtx);
	pthread_mutex_unlock(&s->mtx);
}

int rfb_clients_total(struct rfb_server *s)
{
	pthread_mutex_lock(&s->mtx);
	int n = s->served;
	pthread_mutex_unlock(&s->mtx);
	return n;
}
