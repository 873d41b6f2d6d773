/*
 * Migration transport security: TLS 1.3 with an external pre-shared key
 * (OpenSSL), keyed by `migration.psk_file` on both ends.
 *
 * Why TLS-PSK: a migration stream carries the guest's whole memory and the
 * configuration the destination builds a VM from, so both ends must prove
 * they hold the key before anything is accepted (the PSK binder and the
 * Finished messages do that, mutually), and the stream must be encrypted and
 * integrity-protected (AES-GCM records).  No certificates are involved; the
 * (EC)DHE share gives forward secrecy.  Nothing cryptographic is written
 * here: OpenSSL does it all.
 *
 * migration.c keeps working on plain fds: a stream fd that went through
 * mig_tls_handshake() is looked up in a small table and its I/O goes
 * through its SSL object instead of sendmsg()/recv().
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "migration_tls.h"

#define PSK_IDENTITY "hyve-migration"
#define PSK_MIN_BYTES 16
#define PSK_MAX_BYTES 64
#define MAX_CHANNELS 32   /* 8 streams per migration, a few spare */

static const unsigned char tls13_aes128gcm_sha256[] = { 0x13, 0x01 };

static unsigned char psk[PSK_MAX_BYTES];
static size_t psk_len;
static SSL_CTX *ctx_client, *ctx_server;

static pthread_mutex_t chan_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	int fd;
	SSL *ssl;
	BIO *out;   /* records collect here; one send() per message */
} chans[MAX_CHANNELS];
static int nchans;

bool mig_tls_enabled(void)
{
	return psk_len != 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The key file: hex digits (e.g. `openssl rand -hex 32`), whitespace ignored. */
static int load_key(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st)) {
		snprintf(err, errlen, "migration.psk_file: %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
		snprintf(err, errlen, "migration.psk_file: %s: %s", path,
		         !S_ISREG(st.st_mode) ? "not a regular file" : "readable or writable by other users (chmod 600 it)");
		close(fd);
		return -1;
	}
	char text[4 * PSK_MAX_BYTES];
	ssize_t n = read(fd, text, sizeof(text));
	close(fd);
	if (n < 0) {
		snprintf(err, errlen, "migration.psk_file: %s: %s", path, strerror(errno));
		return -1;
	}
	size_t len = 0;
	int hi = -1;
	for (ssize_t i = 0; i < n; i++) {
		int c = (unsigned char)text[i];
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		int v = hexval(c);
		if (v < 0 || (hi < 0 && len == PSK_MAX_BYTES)) {
			snprintf(err, errlen, "migration.psk_file: %s: expected %d to %d bytes as hex digits", path,
			         PSK_MIN_BYTES, PSK_MAX_BYTES);
			return -1;
		}
		if (hi < 0) {
			hi = v;
		} else {
			psk[len++] = (unsigned char)(hi << 4 | v);
			hi = -1;
		}
	}
	if (hi >= 0 || len < PSK_MIN_BYTES || n == (ssize_t)sizeof(text)) {
		snprintf(err, errlen, "migration.psk_file: %s: expected %d to %d bytes as hex digits (e.g. openssl rand -hex 32)",
		         path, PSK_MIN_BYTES, PSK_MAX_BYTES);
		memset(psk, 0, sizeof(psk));
		return -1;
	}
	psk_len = len;
	return 0;
}

static SSL_SESSION *psk_session(SSL *ssl)
{
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, tls13_aes128gcm_sha256);
	SSL_SESSION *s = cipher ? SSL_SESSION_new() : NULL;
	if (s && (!SSL_SESSION_set1_master_key(s, psk, psk_len) || !SSL_SESSION_set_cipher(s, cipher) ||
	          !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION))) {
		SSL_SESSION_free(s);
		s = NULL;
	}
	return s;
}

static int use_session_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen, SSL_SESSION **sess)
{
	SSL_SESSION *s = psk_session(ssl);
	if (!s)
		return 0;
	if (md && SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s)) != md) {
		/* A HelloRetryRequest chose another hash: no PSK for it. */
		SSL_SESSION_free(s);
		*sess = NULL;
		*id = NULL;
		*idlen = 0;
		return 1;
	}
	*sess = s;
	*id = (const unsigned char *)PSK_IDENTITY;
	*idlen = strlen(PSK_IDENTITY);
	return 1;
}

static int find_session_cb(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
	/* An unknown identity: no PSK, and with no certificate the handshake fails. */
	if (idlen != strlen(PSK_IDENTITY) || memcmp(id, PSK_IDENTITY, idlen)) {
		*sess = NULL;
		return 1;
	}
	*sess = psk_session(ssl);
	return *sess ? 1 : 0;
}

static SSL_CTX *make_ctx(bool server)
{
	SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!c)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) || !SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256")) {
		SSL_CTX_free(c);
		return NULL;
	}
	/* Read whole socket buffers, not a record header then its body: on an
	 * emulating host a syscall per 16 KiB record costs more than the
	 * decryption. */
	SSL_CTX_set_read_ahead(c, 1);
	SSL_CTX_set_default_read_buffer_len(c, 256 << 10);
	if (server) {
		SSL_CTX_set_psk_find_session_callback(c, find_session_cb);
		SSL_CTX_set_num_tickets(c, 0);   /* one connection per stream: nothing to resume */
	} else {
		SSL_CTX_set_psk_use_session_callback(c, use_session_cb);
	}
	return c;
}

int mig_tls_setup(const char *psk_file, char *err, size_t errlen)
{
	if (!psk_file || !psk_file[0])
		return 0;
	if (psk_len)
		return 0;   /* already loaded (a second migration from the same VM) */
	if (load_key(psk_file, err, errlen))
		return -1;
	ctx_client = make_ctx(false);
	ctx_server = make_ctx(true);
	if (!ctx_client || !ctx_server) {
		snprintf(err, errlen, "cannot set up TLS: %s", ERR_reason_error_string(ERR_get_error()));
		psk_len = 0;
		return -1;
	}
	return 0;
}

static SSL *chan_find(int fd, BIO **out)
{
	SSL *s = NULL;
	pthread_mutex_lock(&chan_lock);
	for (int i = 0; i < nchans; i++)
		if (chans[i].fd == fd) {
			s = chans[i].ssl;
			if (out)
				*out = chans[i].out;
		}
	pthread_mutex_unlock(&chan_lock);
	return s;
}

/*
 * The output side of a stream after the handshake: a BIO that appends the
 * records SSL_write makes to a growing buffer, which flush_out() sends in
 * one send() per message.  (A memory BIO would do, but its reset clears
 * the whole buffer every time.)
 */
#define GATHER_BYTES (256u << 10)

struct outbuf {
	unsigned char *data;
	size_t len, cap;
	unsigned char *gather;   /* mig_tls_sendv's staging buffer, GATHER_BYTES */
};

static int out_write(BIO *b, const char *p, int n)
{
	struct outbuf *o = BIO_get_data(b);
	if (n <= 0)
		return 0;
	if (o->len + (size_t)n > o->cap) {
		size_t cap = o->cap ? o->cap : 64 << 10;
		while (cap < o->len + (size_t)n)
			cap *= 2;
		unsigned char *d = realloc(o->data, cap);
		if (!d)
			return -1;
		o->data = d;
		o->cap = cap;
	}
	memcpy(o->data + o->len, p, (size_t)n);
	o->len += (size_t)n;
	return n;
}

static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;   /* flushing is flush_out's job */
}

static int out_destroy(BIO *b)
{
	struct outbuf *o = BIO_get_data(b);
	if (o) {
		free(o->data);
		free(o->gather);
		free(o);
	}
	BIO_set_data(b, NULL);
	return 1;
}

static BIO_METHOD *out_meth;

static void out_meth_make(void)
{
	out_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hyve migration output");
	if (out_meth && (!BIO_meth_set_write(out_meth, out_write) || !BIO_meth_set_ctrl(out_meth, out_ctrl) ||
	                 !BIO_meth_set_destroy(out_meth, out_destroy))) {
		BIO_meth_free(out_meth);
		out_meth = NULL;
	}
}

static BIO *out_bio_new(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, out_meth_make);
	struct outbuf *o = calloc(1, sizeof(*o));
	BIO *b = out_meth && o ? BIO_new(out_meth) : NULL;
	if (!b) {
		free(o);
		return NULL;
	}
	BIO_set_data(b, o);
	BIO_set_init(b, 1);
	return b;
}

/* The reason for a failed handshake, in words a user can act on. */
static void handshake_error(SSL *ssl, int rc, char *err, size_t errlen)
{
	unsigned long e = ERR_peek_last_error();
	int code = SSL_get_error(ssl, rc);
	if (code == SSL_ERROR_SYSCALL || (code == SSL_ERROR_SSL && !e))
		snprintf(err, errlen, "authentication failed: connection closed during the TLS handshake (%s)",
		         errno ? strerror(errno) : "no reason given; a key mismatch or a peer without migration.psk_file");
	else
		snprintf(err, errlen, "authentication failed (the peer's migration.psk_file key differs, or it has none): %s",
		         e ? ERR_reason_error_string(e) : "TLS error");
	ERR_clear_error();
}

int mig_tls_handshake(int fd, bool server, char *err, size_t errlen)
{
	if (!psk_len)
		return 0;
	SSL *ssl = SSL_new(server ? ctx_server : ctx_client);
	if (!ssl || !SSL_set_fd(ssl, fd)) {
		snprintf(err, errlen, "cannot set up TLS: out of memory");
		SSL_free(ssl);
		return -1;
	}
	errno = 0;
	int rc = server ? SSL_accept(ssl) : SSL_connect(ssl);
	if (rc != 1) {
		handshake_error(ssl, rc, err, errlen);
		SSL_free(ssl);
		return -1;
	}
	/* From now on records are collected and sent by us, a whole message
	 * per send() (SSL_set0_wbio drops the socket BIO's write side). */
	BIO *out = out_bio_new();
	if (!out) {
		snprintf(err, errlen, "cannot set up TLS: out of memory");
		SSL_free(ssl);
		return -1;
	}
	SSL_set0_wbio(ssl, out);
	pthread_mutex_lock(&chan_lock);
	if (nchans == MAX_CHANNELS) {
		pthread_mutex_unlock(&chan_lock);
		SSL_free(ssl);
		snprintf(err, errlen, "too many migration connections");
		return -1;
	}
	chans[nchans].fd = fd;
	chans[nchans].ssl = ssl;
	chans[nchans].out = out;
	nchans++;
	pthread_mutex_unlock(&chan_lock);
	return 0;
}

void mig_tls_close(int fd)
{
	SSL *ssl = NULL;
	pthread_mutex_lock(&chan_lock);
	for (int i = 0; i < nchans; i++)
		if (chans[i].fd == fd) {
			ssl = chans[i].ssl;
			chans[i] = chans[--nchans];
			break;
		}
	pthread_mutex_unlock(&chan_lock);
	SSL_free(ssl);   /* no close_notify: the protocol has its own end markers */
	if (fd >= 0)
		close(fd);
}

/* SSL_write/SSL_read failures as errno, so callers report them as before. */
static int ssl_errno(SSL *ssl, int rc)
{
	int code = SSL_get_error(ssl, rc);
	ERR_clear_error();
	if (code == SSL_ERROR_ZERO_RETURN)
		return ECONNRESET;
	if (code == SSL_ERROR_SYSCALL || code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE)
		return errno ? errno : ECONNRESET;
	return EPROTO;   /* a record that does not authenticate: tampering or garbage */
}

/* Send what SSL_write put in the output BIO, and empty it. */
static int flush_out(int fd, BIO *out)
{
	struct outbuf *o = BIO_get_data(out);
	for (size_t off = 0; off < o->len;) {
		ssize_t w = send(fd, o->data + off, o->len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = ECONNRESET;
			return -1;
		}
		off += (size_t)w;
	}
	o->len = 0;
	return 0;
}

int mig_tls_sendv(int fd, const struct iovec *iov, int n, bool *handled)
{
	BIO *out = NULL;
	SSL *ssl = psk_len ? chan_find(fd, &out) : NULL;   /* plain migrations: no lookup */
	*handled = ssl != NULL;
	if (!ssl)
		return 0;
	struct outbuf *o = BIO_get_data(out);
	if (!o->gather && !(o->gather = malloc(GATHER_BYTES))) {
		errno = ENOMEM;
		return -1;
	}
	unsigned char *buf = o->gather;
	/* Gather a message into full records: one SSL_write per small iovec
	 * (12-byte page headers) would cost a record each. */
	size_t used = 0;
	for (int i = 0; i <= n; i++) {
		const unsigned char *p = i < n ? iov[i].iov_base : NULL;
		size_t len = i < n ? iov[i].iov_len : 0;
		while (len || (i == n && used)) {
			size_t take = GATHER_BYTES - used < len ? GATHER_BYTES - used : len;
			if (take) {
				memcpy(buf + used, p, take);
				used += take;
				p += take;
				len -= take;
			}
			if (used == GATHER_BYTES || (i == n && used)) {
				size_t w;
				int rc = SSL_write_ex(ssl, buf, used, &w);
				if (rc != 1) {
					errno = ssl_errno(ssl, rc);
					return -1;
				}
				used = 0;
				if (flush_out(fd, out))
					return -1;
			}
		}
	}
	return 0;
}

ssize_t mig_tls_recv(int fd, void *p, size_t n, bool *handled)
{
	SSL *ssl = psk_len ? chan_find(fd, NULL) : NULL;
	*handled = ssl != NULL;
	if (!ssl)
		return 0;
	size_t r;
	errno = 0;
	int rc = SSL_read_ex(ssl, p, n, &r);
	if (rc != 1) {
		int e = ssl_errno(ssl, rc);
		if (e == ECONNRESET && SSL_get_error(ssl, rc) == SSL_ERROR_ZERO_RETURN)
			return 0;
		errno = e;
		return -1;
	}
	return (ssize_t)r;
}
