/* Listening sockets for hyve's servers (GDB stub, RFB). */
#ifndef HYVE_NETLISTEN_H
#define HYVE_NETLISTEN_H

#include <stdbool.h>
#include <stddef.h>

/*
 * A TCP socket listening on addr (a host name or numeric address, IPv6
 * without brackets) and port (digits), SO_REUSEADDR, close-on-exec.  The
 * descriptor, or -1 with "cannot listen on ADDR port PORT: why" in err.
 */
int net_listen_tcp(const char *addr, const char *port, int backlog, char *err, size_t errlen);
/* The same on a unix stream socket at path (an existing socket file is replaced). */
int net_listen_unix(const char *path, int backlog, char *err, size_t errlen);
/* Send all len bytes (no SIGPIPE); false if the peer went away or a send timed out. */
bool net_send_all(int fd, const void *buf, size_t len);

#endif
