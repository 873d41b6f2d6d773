/*
 * Character-device backends for serial-like device models: the 16550 UART
 * (lpc.comN.path) and virtio-console ports (pci.B.S.F.port.K.path) share
 * this layer, as bhyve's uart_backend.c is shared by its UART models.
 *
 * A backend is named by a spec string:
 *
 *   stdio            hyve's stdin/stdout; stdin in raw mode if it is a tty.
 *                    One user per process.  Only with CHARDEV_F_STDIO.
 *   file=PATH        output appended to PATH (created 0644), no input
 *   sock=PATH        unix stream socket server at PATH
 *   tcp=ADDR:PORT    TCP server.  ADDR is a numeric IPv4 address, an IPv6
 *                    address in brackets ([::1]) or "localhost"; empty
 *                    (tcp=:PORT) means 127.0.0.1.  Nothing listens on a
 *                    wildcard address unless it is written (0.0.0.0, [::]).
 *                    PORT is 1..65535.
 *   PATH             a terminal device, bhyve's -l com1,/dev/nmdm0A (on
 *                    Linux a pty slave /dev/pts/N or a serial port): opened
 *                    O_RDWR|O_NOCTTY|O_NONBLOCK, refused unless isatty(),
 *                    put in raw mode (cfmakeraw, CLOCAL), restored at exit.
 *                    Without CHARDEV_F_BARE_SOCK PATH must contain a '/'
 *                    (a bare word is a typo, not a device).  With it, a bare
 *                    PATH is a unix socket (virtio-console's NAME=PATH)
 *                    unless PATH names an existing character device.
 *
 * Servers (sock=, tcp=) serve one client at a time: a second connection is
 * accepted and closed at once (logged), unless the current client has hung
 * up unnoticed (a device not reading it), which is then dropped for the new
 * one.  After a disconnect the next client is served.  A unix socket file
 * left by an earlier run is replaced; a path another process listens on,
 * or an existing file that is not a socket, is refused and left alone.  The
 * socket file is removed at exit.
 *
 * Connections are host-side state: checkpoints and migration save none of
 * it, and a restored VM starts with no client (devices decide what the
 * guest is told).
 *
 * Threads: everything here runs on the main thread (mevent), except
 * chardev_parse(), which touches no state.  Callbacks are called from the
 * event loop only, never from inside a chardev_*() call, so a device may
 * call chardev_read()/chardev_write() under its own lock and take that
 * lock in its callbacks.
 */
#ifndef HYVE_CHARDEV_H
#define HYVE_CHARDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct chardev;

/* Device callbacks; any may be NULL.  arg is chardev_open()'s. */
struct chardev_ops {
	/*
	 * Input is waiting.  Level-triggered: the device must read (until
	 * chardev_read() returns 0 or -1) or turn input off with
	 * chardev_set_rx(false), or it is called again at once.
	 */
	void (*readable)(void *arg);
	/* A chardev_write() that returned 0 may be retried (called once per 0). */
	void (*writable)(void *arg);
	/* A server's client connected: output has somewhere to go, input is on. */
	void (*connected)(void *arg);
	/*
	 * Output has nowhere to go any more: the client went away (a server;
	 * the next client brings connected), or the output of stdio, file=
	 * or a tty failed (for good; warned once).  Called after the
	 * chardev_read()/chardev_write() that ran into it returned -1.
	 */
	void (*disconnected)(void *arg);
};

/* chardev_parse()/chardev_open() flags. */
#define CHARDEV_F_STDIO     0x1   /* "stdio" is allowed (the UART) */
#define CHARDEV_F_BARE_SOCK 0x2   /* a bare PATH is a unix socket (virtio-console ports) */

enum chardev_kind { CHARDEV_STDIO, CHARDEV_FILE, CHARDEV_SOCK, CHARDEV_TCP, CHARDEV_TTY };

struct chardev_spec {
	enum chardev_kind kind;
	const char *path;             /* FILE, SOCK, TTY: points into the spec string */
	bool bare;                    /* SOCK from a bare PATH: a tty if it is a character device */
	struct sockaddr_storage addr; /* TCP */
	socklen_t addrlen;
};

/*
 * Check a spec without touching the host: 0, or -1 with what is wrong in
 * err (one line, naming neither the key nor the whole value).
 */
int chardev_parse(const char *spec, unsigned flags, struct chardev_spec *out, char *err, size_t errlen);

/*
 * Open a backend, ready for the event loop (mevent_init() done): NULL with
 * one line in err on failure (nothing is left open or created; no key
 * prefix: callers add "config: KEY: ").  name prefixes the layer's log
 * messages ("com1", "virtio-console: port1").
 */
struct chardev *chardev_open(const char *spec, unsigned flags, const char *name,
                             const struct chardev_ops *ops, void *arg, char *err, size_t errlen);

/*
 * Output has somewhere to go now: stdio (stdout open), file= and a tty
 * until their output fails; a server while a client is connected.
 */
bool chardev_connected(const struct chardev *cd);

/*
 * Read up to n bytes: >0 bytes read; 0 nothing waiting now (readable comes
 * when there is); -1 no input: none connected, or input ended (end of
 * stream or an error: a client's connection is over, disconnected follows;
 * stdio's or a tty's input stays ended).
 */
ssize_t chardev_read(struct chardev *cd, void *buf, size_t n);
ssize_t chardev_readv(struct chardev *cd, const struct iovec *iov, int iovcnt);

/*
 * Write without blocking: >0 bytes taken (maybe fewer than offered); 0 the
 * backend is full: writable follows when it can take more, and until then
 * every write returns 0; -1 nowhere to write (no client, or the output
 * failed: disconnected follows): the bytes are the device's to drop.
 */
ssize_t chardev_write(struct chardev *cd, const void *buf, size_t n);
ssize_t chardev_writev(struct chardev *cd, const struct iovec *iov, int iovcnt);

/*
 * Input flow control: with rx off the layer stops watching the input
 * (bytes wait in the socket, pipe or tty); on again resumes readable.
 * A new client starts with rx on.
 */
void chardev_set_rx(struct chardev *cd, bool on);

/*
 * For exit paths (the event loop may be gone): write, waiting with poll(2)
 * for up to *budget_ms in total (decremented).  Bytes written, 0 when the
 * budget ran out, -1 nowhere to write.  Touches no event.
 */
ssize_t chardev_write_drain(struct chardev *cd, const void *buf, size_t n, int *budget_ms);

/*
 * At exit: restore a tty's mode, remove the socket file, close the
 * descriptors (not stdio's).  Idempotent; callbacks stop.  Events are left
 * to mevent_fini().  Every chardev still open is closed this way by an
 * atexit handler registered before main(), so it runs after the devices'
 * own exit handlers (which may drain output first).
 */
void chardev_close(struct chardev *cd);

#endif
