/*
 * TLS 1.3 with a pre-shared key for migration streams (core/migration_tls.c,
 * docs/security.md).  Without migration.psk_file every call is a no-op and
 * streams stay plain TCP.
 */
#ifndef HYVE_MIGRATION_TLS_H
#define HYVE_MIGRATION_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Load the key from PSK_FILE (NULL/empty: no TLS).  0, or -1 with err. */
int mig_tls_setup(const char *psk_file, char *err, size_t errlen);
bool mig_tls_enabled(void);
/* Authenticate a connected stream (client: source, server: destination);
 * from then on I/O on fd goes through TLS.  0, or -1 with err. */
int mig_tls_handshake(int fd, bool server, char *err, size_t errlen);
/* Send/receive on a TLS stream; *handled is false for a plain fd (the
 * caller does plain I/O).  Errors come back as -1 with errno. */
int mig_tls_sendv(int fd, const struct iovec *iov, int n, bool *handled);
ssize_t mig_tls_recv(int fd, void *p, size_t n, bool *handled);
/* Forget the stream's TLS state and close fd. */
void mig_tls_close(int fd);

#endif
