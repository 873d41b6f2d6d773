/*
 * RFB (VNC, RFC 6143) server for the framebuffer device: protocol 3.3,
 * 3.7 and 3.8, security None or VNC authentication, Raw and zlib
 * encodings, DesktopSize, any true-colour pixel format the client asks
 * for, several clients at once (one thread each).  What a client sends is
 * checked: a malformed or oversized message drops that client, never the
 * VM.
 */
#ifndef HYVE_RFB_H
#define HYVE_RFB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the server shows and where input goes; called from client threads. */
struct rfb_source {
	/*
	 * Copy the current picture as XRGB8888 rows into dst (w*h pixels,
	 * tightly packed) if it is w x h; returns false if dst is NULL or the
	 * size differs (*w, *h then hold the current size, nothing copied).
	 */
	bool (*snapshot)(void *arg, uint32_t *dst, int *w, int *h);
	void (*key)(void *arg, bool down, uint32_t keysym);             /* may be NULL */
	void (*pointer)(void *arg, uint8_t buttons, int x, int y);       /* may be NULL */
	void *arg;
	const char *name;   /* desktop name */
};

struct rfb_server;

/*
 * Serve on listen_fd (a listening socket the caller made).  password
 * NULL: no authentication; else VNC authentication with it (at most 8
 * characters count, as in every VNC).
 */
struct rfb_server *rfb_start(int listen_fd, const char *password, const struct rfb_source *src, char *err,
                             size_t errlen);
/* Block until a client has completed its handshake (the "wait" option). */
void rfb_wait_first_client(struct rfb_server *s);
/* Clients served so far (tests, stats). */
int rfb_clients_total(struct rfb_server *s);

#endif
