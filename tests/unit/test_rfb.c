/*
 * Unit tests for devices/rfb.c against a real client: Debian's vncsnapshot
 * (TightVNC, protocol 3.3) takes screenshots of a made-up picture (four
 * coloured quadrants, later resized) and djpeg turns its JPEG into a PPM
 * whose pixels are checked.  VNC authentication with vncsnapshot's
 * password file (the standard obfuscated format); a wrong password is
 * refused; a protocol 3.8 client and a hostile one written here (raw
 * socket) check what vncsnapshot does not reach.  Without vncsnapshot or
 * djpeg the screenshot checks are skipped (the test says so).
 * test-sources: devices/rfb.c core/netlisten.c core/log.c core/sandbox_landlock.c core/sandbox.c
 * test-libs: -lseccomp -pthread
 * test-libs: -lz -lcrypto
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "../../core/netlisten.h"
#include "../../devices/rfb.h"
#include "check.h"

static pthread_mutex_t pic_mtx = PTHREAD_MUTEX_INITIALIZER;
static int pic_w = 320, pic_h = 200;
static uint32_t keys_down;

static uint32_t pixel(int x, int y)
{
	bool right = x >= pic_w / 2, bottom = y >= pic_h / 2;
	return !right && !bottom ? 0xff0000 : right && !bottom ? 0x00ff00 : !right ? 0x0000ff : 0xffffff;
}

static bool snapshot(void *arg, uint32_t *dst, int *w, int *h)
{
	(void)arg;
	pthread_mutex_lock(&pic_mtx);
	bool same = dst && *w == pic_w && *h == pic_h;
	*w = pic_w;
	*h = pic_h;
	if (same)
		for (int y = 0; y < pic_h; y++)
			for (int x = 0; x < pic_w; x++)
				dst[y * pic_w + x] = pixel(x, y);
	pthread_mutex_unlock(&pic_mtx);
	return same;
}

static void key(void *arg, bool down, uint32_t sym)
{
	(void)arg;
	if (down)
		__atomic_fetch_add(&keys_down, sym, __ATOMIC_SEQ_CST);
}

static int start(const char *password, int *port)
{
	char err[256];
	int fd = net_listen_tcp("127.0.0.1", "0", 8, err, sizeof(err));
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&sa, &len))
		return -1;
	*port = ntohs(sa.sin_port);
	static const struct rfb_source src = { .snapshot = snapshot, .key = key, .name = "hyve-test" };
	return rfb_start(fd, password, &src, err, sizeof(err)) ? 0 : -1;
}

/* Screenshot through vncsnapshot; the PPM's pixels in rgb (w*h*3). */
static bool screenshot(int port, const char *passwd_file, int *w, int *h, uint8_t **rgb)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
	         "cd /tmp && timeout -k 5 30 vncsnapshot -quiet -allowblank -nojpeg -quality 100 %s%s 127.0.0.1::%d /tmp/hyve-rfb-%d.jpg "
	         ">/dev/null 2>&1 && djpeg -pnm /tmp/hyve-rfb-%d.jpg >/tmp/hyve-rfb-%d.ppm",
	         passwd_file ? "-passwd " : "", passwd_file ? passwd_file : "", port, (int)getpid(), (int)getpid(),
	         (int)getpid());
	if (system(cmd) != 0)
		return false;
	snprintf(cmd, sizeof(cmd), "/tmp/hyve-rfb-%d.ppm", (int)getpid());
	FILE *f = fopen(cmd, "rb");
	int max = 0;
	bool ok = f && fscanf(f, "P6 %d %d %d", w, h, &max) == 3 && max == 255 && fgetc(f) != EOF;
	if (ok) {
		*rgb = malloc((size_t)*w * (size_t)*h * 3);
		ok = *rgb && fread(*rgb, 3, (size_t)*w * (size_t)*h, f) == (size_t)*w * (size_t)*h;
	}
	if (f)
		fclose(f);
	unlink(cmd);
	snprintf(cmd, sizeof(cmd), "/tmp/hyve-rfb-%d.jpg", (int)getpid());
	unlink(cmd);
	return ok;
}

/* Within JPEG's error of the colour we drew. */
static bool near(const uint8_t *rgb, int w, int x, int y, uint32_t want)
{
	const uint8_t *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
	int d[3] = { p[0] - (int)((want >> 16) & 255), p[1] - (int)((want >> 8) & 255), p[2] - (int)(want & 255) };
	return abs(d[0]) < 24 && abs(d[1]) < 24 && abs(d[2]) < 24;
}

static bool quadrants_ok(const uint8_t *rgb, int w, int h)
{
	return near(rgb, w, w / 4, h / 4, 0xff0000) && near(rgb, w, 3 * w / 4, h / 4, 0x00ff00) &&
	       near(rgb, w, w / 4, 3 * h / 4, 0x0000ff) && near(rgb, w, 3 * w / 4, 3 * h / 4, 0xffffff);
}

/* The obfuscated password file vncpasswd writes: DES with VNC's fixed key. */
static bool write_passwd_file(const char *path, const char *password)
{
	static const uint8_t fixed[8] = { 23, 82, 107, 6, 35, 78, 88, 7 };
	uint8_t key[24], in[8] = { 0 }, out[16];
	for (int i = 0; i < 8; i++) {
		uint8_t r = 0;
		for (int b = 0; b < 8; b++)
			if (fixed[i] & (1u << b))
				r |= (uint8_t)(0x80u >> b);
		key[i] = key[i + 8] = key[i + 16] = r;
	}
	strncpy((char *)in, password, 8);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0;
	bool ok = c && EVP_EncryptInit_ex(c, EVP_des_ede3_ecb(), NULL, key, NULL) && EVP_CIPHER_CTX_set_padding(c, 0) &&
	          EVP_EncryptUpdate(c, out, &n, in, 8) && n == 8;
	EVP_CIPHER_CTX_free(c);
	FILE *f = ok ? fopen(path, "wb") : NULL;
	ok = f && fwrite(out, 1, 8, f) == 8;
	if (f)
		fclose(f);
	return ok;
}

static int connect_to(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = { 5, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool read_n(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

/* A 3.8 client: None security, ServerInit, one key event, a full update in Raw. */
static void test_protocol_38(int port)
{
	int fd = connect_to(port);
	char ver[13] = "";
	uint8_t b[64];
	bool ok = fd >= 0 && read_n(fd, ver, 12) && !strcmp(ver, "RFB 003.008\n") && send(fd, "RFB 003.008\n", 12, 0) == 12 &&
	          read_n(fd, b, 2) && b[0] == 1 && b[1] == 1;
	CHECK(ok, "3.8: version and one security type, None");
	b[0] = 1;
	ok = ok && send(fd, b, 1, 0) == 1 && read_n(fd, b, 4) && b[3] == 0;
	CHECK(ok, "3.8: SecurityResult OK after None");
	b[0] = 1;
	ok = ok && send(fd, b, 1, 0) == 1 && read_n(fd, b, 24);
	CHECK(ok && (b[0] << 8 | b[1]) == 320 && (b[2] << 8 | b[3]) == 200 && b[4] == 32 && b[7] == 1,
	      "3.8: ServerInit says 320x200, 32 bpp true colour");
	uint32_t nl = (uint32_t)b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23];
	char name[32] = "";
	ok = ok && nl < sizeof(name) && read_n(fd, name, nl);
	CHECK(ok && !strcmp(name, "hyve-test"), "3.8: the desktop name");
	uint8_t keyev[8] = { 4, 1, 0, 0, 0, 0, 0xff, 0x0d };   /* Return down */
	uint8_t req[10] = { 3, 0, 0, 0, 0, 0, 0x01, 0x40, 0, 0xc8 };
	ok = ok && send(fd, keyev, 8, 0) == 8 && send(fd, req, 10, 0) == 10 && read_n(fd, b, 4) && b[0] == 0;
	int rects = b[2] << 8 | b[3];
	size_t pixels = 0;
	for (int i = 0; ok && i < rects; i++) {
		ok = read_n(fd, b, 12) && b[8] == 0 && b[9] == 0 && b[10] == 0 && b[11] == 0;   /* Raw */
		size_t n = (size_t)(b[4] << 8 | b[5]) * (size_t)(b[6] << 8 | b[7]);
		uint8_t *pix = malloc(n * 4);
		ok = ok && pix && read_n(fd, pix, n * 4);
		pixels += n;
		free(pix);
	}
	CHECK(ok && pixels == 320 * 200, "3.8: a full update covers 320x200 pixels in Raw (%zu)", pixels);
	CHECK(__atomic_load_n(&keys_down, __ATOMIC_SEQ_CST) == 0xff0d, "the key event reached the source");
	if (fd >= 0)
		close(fd);
}

/* Garbage, an absurd cut-text length, an unknown message, a vanishing client: each dropped. */
static void test_hostile(int port)
{
#define MSG(s) { s, sizeof(s) - 1 }
	static const struct { const char *s; size_t n; } bad[] = {
		MSG("GET / HTTP/1.0\r\n\r\n"),                                                    /* not RFB */
		MSG("RFB 004.000\n"),                                                                /* unknown major */
		MSG("RFB 003.008\n\x01\x01\x06\x00\x00\x00\xff\xff\xff\xff"),                  /* 4 GiB cut text */
		MSG("RFB 003.008\n\x63"),                                                            /* security type not offered */
		MSG("RFB 003.008\n\x01\x01\x00\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00\x01"), /* 1-bpp format */
	};
#undef MSG
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = connect_to(port);
		char buf[4096];
		ssize_t r = -1;
		int why = 0;
		if (fd >= 0) {
			(void)!send(fd, bad[i].s, bad[i].n, MSG_NOSIGNAL);
			shutdown(fd, SHUT_WR);
			while ((r = recv(fd, buf, sizeof(buf), 0)) > 0)
				;
			why = errno;
			close(fd);
		}
		/* Closed (EOF, or a reset when it left our bytes unread); EAGAIN would be our 5 s timeout: a hung thread. */
		CHECK(r == 0 || (r < 0 && why == ECONNRESET), "hostile client %zu: dropped by the server", i);
	}
}

int main(void)
{
	int port = 0, pport = 0;
	int rc = start(NULL, &port);
	CHECK(rc == 0, "server without a password listens on port %d", port);
	rc = start("s3cret", &pport);
	CHECK(rc == 0, "server with a password listens on port %d", pport);
	test_protocol_38(port);
	test_hostile(port);

	if (system("command -v vncsnapshot >/dev/null && command -v djpeg >/dev/null") != 0) {
		printf("ok - (skipped: vncsnapshot or djpeg not installed; tests/install-deps.sh installs them)\n");
		return check_summary();
	}
	int w, h;
	uint8_t *rgb = NULL;
	CHECK(screenshot(port, NULL, &w, &h, &rgb) && w == 320 && h == 200 && quadrants_ok(rgb, w, h),
	      "vncsnapshot: 320x200, the four quadrants in their colours (after the hostile clients)");
	free(rgb);
	rgb = NULL;
	pthread_mutex_lock(&pic_mtx);
	pic_w = 640;
	pic_h = 480;
	pthread_mutex_unlock(&pic_mtx);
	CHECK(screenshot(port, NULL, &w, &h, &rgb) && w == 640 && h == 480 && quadrants_ok(rgb, w, h),
	      "a second client after the first left, at the new size 640x480");
	free(rgb);
	rgb = NULL;

	char pw[64], wrong[64];
	snprintf(pw, sizeof(pw), "/tmp/hyve-rfb-pw.%d", (int)getpid());
	snprintf(wrong, sizeof(wrong), "/tmp/hyve-rfb-wrong.%d", (int)getpid());
	CHECK(write_passwd_file(pw, "s3cret") && write_passwd_file(wrong, "guess"), "password files written");
	CHECK(screenshot(pport, pw, &w, &h, &rgb) && w == 640 && quadrants_ok(rgb, w, h),
	      "VNC authentication with the right password");
	free(rgb);
	rgb = NULL;
	CHECK(!screenshot(pport, wrong, &w, &h, &rgb), "a wrong password is refused");
	free(rgb);
	unlink(pw);
	unlink(wrong);
	return check_summary();
}
