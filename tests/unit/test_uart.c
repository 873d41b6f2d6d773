/*
 * Unit tests for devices/uart_16550.c, without /dev/kvm.
 *
 * The device file and its backend layer (devices/chardev.c) are #included
 * so the tests can reach their static state and the save/load functions;
 * the core functions they call are faked below (the event loop too:
 * tests/unit/test_chardev.c drives the backends with the real one).
 * Build and run (from the repository root):
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -I. \
 *      tests/unit/test_uart.c core/snapshot.c -o /tmp/test_uart && /tmp/test_uart
 *
 * One line per check ("ok - ..." / "FAIL - ..."), exit status 1 on failure.
 * test-sources: core/snapshot.c core/sandbox_landlock.c
 */
#include "../../devices/uart_16550.c"
#include "../../devices/chardev.c"

#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <termios.h>

/* ---- reporting ---- */

#include "check.h"

/* ---- fakes of the core ---- */

/* Device messages only with TEST_VERBOSE set: the tests provoke errors on purpose. */
static char last_log[512];   /* the last message above debug level */
void logmsg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	if (lvl != LOG_DEBUG) {
		va_start(ap, fmt);
		vsnprintf(last_log, sizeof(last_log), fmt, ap);
		va_end(ap);
	}
	if (!getenv("TEST_VERBOSE"))
		return;
	va_start(ap, fmt);
	fprintf(stderr, "hyve: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	abort();
}

void init_register(enum init_level level, const char *name, init_fn_t fn)
{
	(void)level; (void)name; (void)fn;
}

/* Config: a small key/value table. */
static struct { char key[64]; char value[256]; } cfg[16];
static int ncfg;

static void cfg_set(const char *key, const char *value)
{
	snprintf(cfg[ncfg].key, sizeof(cfg[ncfg].key), "%s", key);
	snprintf(cfg[ncfg].value, sizeof(cfg[ncfg].value), "%s", value);
	ncfg++;
}

const char *get_config_valuef(const char *fmt, ...)
{
	char key[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(key, sizeof(key), fmt, ap);
	va_end(ap);
	for (int i = 0; i < ncfg; i++)
		if (strcmp(cfg[i].key, key) == 0)
			return cfg[i].value;
	return NULL;
}

/* Port I/O registry. */
static struct inout_port ports[16];
static int nports;

int register_inout(const struct inout_port *iop)
{
	for (int i = 0; i < nports; i++)
		if (iop->port < ports[i].port + ports[i].size && ports[i].port < iop->port + iop->size)
			return -1;
	ports[nports++] = *iop;
	return 0;
}

static const struct inout_port *port_lookup(uint16_t port)
{
	for (int i = 0; i < nports; i++)
		if (port >= ports[i].port && port < ports[i].port + ports[i].size)
			return &ports[i];
	return NULL;
}

static uint8_t in8(uint16_t port)
{
	const struct inout_port *p = port_lookup(port);
	uint32_t v = 0xffffffff;
	if (p)
		p->handler(NULL, true, port, 1, &v, p->arg);
	return (uint8_t)v;
}

static void out8(uint16_t port, uint8_t v)
{
	const struct inout_port *p = port_lookup(port);
	uint32_t val = v;
	if (p)
		p->handler(NULL, false, port, 1, &val, p->arg);
}

/* IRQ lines: current level and a log of every call. */
static int irq_level[24];
static int irq_log[256], nirq_log;

int vm_set_irq_line(struct vmctx *ctx, int gsi, int level)
{
	(void)ctx;
	irq_level[gsi] = level;
	if (nirq_log < 256)
		irq_log[nirq_log++] = gsi * 10 + level;
	return 0;
}

/* mevent: fd events polled by fake_loop(), timers fired by it, call queue. */
struct mevent {
	int fd;
	enum mevent_kind kind;
	bool is_timer, enabled, deleted, failed;
	mevent_cb_t cb;
	void *arg;
	uint64_t first, period;
};
static struct mevent evs[256];
static int nevs;

/* Like epoll: one registration per fd (core/mevent.c gets EEXIST otherwise). */
static bool fd_watched(int fd, const struct mevent *except)
{
	for (int i = 0; i < nevs; i++)
		if (&evs[i] != except && !evs[i].is_timer && evs[i].enabled && !evs[i].deleted && evs[i].fd == fd)
			return true;
	return false;
}

struct mevent *mevent_add(int fd, enum mevent_kind kind, mevent_cb_t cb, void *arg)
{
	struct stat st;
	/* Like epoll: regular files and non-pollable devices are refused. */
	if (fstat(fd, &st) != 0 || S_ISREG(st.st_mode) || (S_ISCHR(st.st_mode) && !isatty(fd)))
		return NULL;
	if (fd_watched(fd, NULL))
		return NULL;
	struct mevent *ev = &evs[nevs++];
	*ev = (struct mevent){ .fd = fd, .kind = kind, .enabled = true, .cb = cb, .arg = arg };
	return ev;
}

struct mevent *mevent_add_timer(uint64_t first_ns, uint64_t period_ns, mevent_cb_t cb, void *arg)
{
	struct mevent *ev = &evs[nevs++];
	*ev = (struct mevent){ .fd = -1, .is_timer = true, .enabled = true, .cb = cb, .arg = arg,
	                       .first = first_ns, .period = period_ns };
	return ev;
}

int mevent_timer_set(struct mevent *ev, uint64_t first_ns, uint64_t period_ns)
{
	ev->first = first_ns;
	ev->period = period_ns;
	return 0;
}

int mevent_enable(struct mevent *ev)
{
	if (ev->enabled)
		return 0;
	ev->enabled = true;   /* as core/mevent.c: flagged even if the re-add fails */
	if (!ev->is_timer && fd_watched(ev->fd, ev)) {
		ev->failed = true;
		return -1;
	}
	return 0;
}
int mevent_disable(struct mevent *ev) { ev->enabled = false; return 0; }
int mevent_delete(struct mevent *ev) { ev->enabled = false; ev->deleted = true; return 0; }

static struct { void (*fn)(void *); void *arg; } callq[1024];
static int ncallq, ncalls_total;

int mevent_call(void (*fn)(void *), void *arg)
{
	if (ncallq == 1024)
		return -1;
	callq[ncallq].fn = fn;
	callq[ncallq].arg = arg;
	ncallq++;
	ncalls_total++;
	return 0;
}

/* Run the "main thread": queued calls, ready fds, enabled timers. */
static void fake_loop(int rounds)
{
	for (int r = 0; r < rounds; r++) {
		int n = ncallq;
		for (int i = 0; i < n; i++)
			callq[i].fn(callq[i].arg);
		memmove(callq, callq + n, sizeof(callq[0]) * (size_t)(ncallq - n));
		ncallq -= n;
		for (int i = 0; i < nevs; i++) {
			struct mevent *ev = &evs[i];
			if (!ev->enabled || ev->deleted)
				continue;
			if (ev->failed)
				continue;
			if (ev->is_timer) {
				ev->cb(-1, ev->arg);
				continue;
			}
			struct pollfd pfd = { .fd = ev->fd, .events = ev->kind == EVF_READ ? POLLIN : POLLOUT };
			if (poll(&pfd, 1, 0) > 0)
				ev->cb(ev->fd, ev->arg);
		}
	}
}

/* ---- helpers ---- */

/* Objects the tests create outside uart_sc[]: kept reachable for LeakSanitizer. */
static void *keep[16];
static int nkeep;
static void *keep_alive(void *p)
{
	keep[nkeep++] = p;
	return p;
}

#define COM1 0x3f8
#define COM2 0x2f8
#define COM3 0x3e8
#define COM4 0x2e8
static struct vmctx *const CTX = (struct vmctx *)0x1;
static char tmpdir[] = "/tmp/test_uart.XXXXXX";

static void guest_puts(uint16_t base, const char *s)
{
	while (*s)
		out8(base + REG_DATA, (uint8_t)*s++);
}

/* Read whatever is available from a non-blocking fd, appending to buf. */
static size_t drain_fd(int fd, uint8_t *buf, size_t have, size_t cap)
{
	for (;;) {
		ssize_t n = read(fd, buf + have, cap - have);
		if (n <= 0)
			return have;
		have += (size_t)n;
	}
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return n > 0 ? (size_t)n : 0;
}

/* ---- register-level tests (com1, file backend) ---- */

static void test_registers(void)
{
	uint16_t b = COM1;

	CHECK(in8(b + REG_LSR) == (LSR_THRE | LSR_TEMT), "reset: LSR = THRE|TEMT (0x%02x)", in8(b + REG_LSR));
	CHECK(in8(b + REG_IIR) == IIR_NOPEND, "reset: IIR = no interrupt, FIFOs off");
	CHECK(in8(b + REG_LCR) == 0 && in8(b + REG_MCR) == 0 && in8(b + REG_IER) == 0,
	      "reset: LCR, MCR, IER are 0");
	CHECK(in8(b + REG_MSR) == (MSR_DCD | MSR_DSR | MSR_CTS), "reset: MSR = DCD|DSR|CTS, no deltas");

	/* Divisor latch. */
	out8(b + REG_LCR, LCR_DLAB);
	CHECK(in8(b + 0) == 12 && in8(b + 1) == 0, "divisor latch: default 12 (9600 baud)");
	out8(b + 0, 0x01);
	out8(b + 1, 0x02);
	out8(b + REG_LCR, 0x03);
	CHECK(in8(b + REG_LCR) == 0x03, "LCR reads back 8N1");
	CHECK(in8(b + REG_IER) == 0, "with DLAB clear, offset 1 is IER, not DLM");
	out8(b + REG_LCR, 0x83);
	CHECK(in8(b + 0) == 0x01 && in8(b + 1) == 0x02, "divisor latch keeps DLL=1 DLM=2");
	out8(b + 0, 0x01);
	out8(b + 1, 0x00);
	out8(b + REG_LCR, 0x03);

	out8(b + REG_SCR, 0x5a);
	CHECK(in8(b + REG_SCR) == 0x5a, "scratch register round trip");

	/* IER: only the four enables stick (Linux's probe checks 0x0f). */
	out8(b + REG_IER, 0xff);
	CHECK(in8(b + REG_IER) == 0x0f, "IER keeps only bits 0-3");
	out8(b + REG_IER, 0);
	(void)in8(b + REG_IIR);

	/* THRE interrupt, gated by OUT2. */
	nirq_log = 0;
	out8(b + REG_IER, IER_ETBEI);
	CHECK(irq_level[4] == 0, "THRE pending but MCR.OUT2 clear: IRQ 4 stays low");
	out8(b + REG_MCR, MCR_OUT2);
	CHECK(irq_level[4] == 1, "setting OUT2 raises IRQ 4 for the pending THRE interrupt");
	CHECK(in8(b + REG_IIR) == IIR_TXRDY, "IIR reports THRE (0x02)");
	CHECK(irq_level[4] == 0, "reading IIR clears THRE: IRQ 4 low");
	CHECK(in8(b + REG_IIR) == IIR_NOPEND, "IIR then reports no interrupt");
	/* Linux's THRE test: toggling ETBEI must re-raise it. */
	out8(b + REG_IER, 0);
	out8(b + REG_IER, IER_ETBEI);
	CHECK(irq_level[4] == 1 && in8(b + REG_IIR) == IIR_TXRDY,
	      "re-enabling ETBEI re-raises THRE (8250 THRE test passes)");
	out8(b + REG_DATA, 'x');
	CHECK(irq_level[4] == 1, "writing THR re-arms the THRE interrupt");
	CHECK(in8(b + REG_IIR) == IIR_TXRDY && irq_level[4] == 0, "... cleared again by IIR read");
	out8(b + REG_IER, 0);
	CHECK(nirq_log == 6 && irq_log[0] == 41 && irq_log[1] == 40 && irq_log[2] == 41 &&
	      irq_log[3] == 40 && irq_log[4] == 41 && irq_log[5] == 40,
	      "IRQ 4 level transitions 1,0,1,0,1,0 (%d calls)", nirq_log);

	/* Loopback. */
	out8(b + REG_MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
	CHECK((in8(b + REG_MSR) & 0xf0) == (MSR_DCD | MSR_CTS), "loopback: MSR = 0x90 for MCR RTS|OUT2");
	out8(b + REG_MCR, MCR_LOOP | MCR_DTR | MCR_OUT1);
	uint8_t msr = in8(b + REG_MSR);
	CHECK((msr & 0xf0) == (MSR_DSR | MSR_RI) && (msr & MSR_DDSR) && (msr & MSR_DCTS) && (msr & MSR_DDCD),
	      "loopback: DTR->DSR, OUT1->RI with delta bits (0x%02x)", msr);
	CHECK((in8(b + REG_MSR) & MSR_DELTA) == 0, "reading MSR clears the deltas");
	out8(b + REG_MCR, MCR_LOOP | MCR_DTR);
	CHECK(in8(b + REG_MSR) & MSR_TERI, "RI falling sets TERI");
	out8(b + REG_IER, IER_EDSSI);
	out8(b + REG_MCR, MCR_LOOP | MCR_OUT2);
	CHECK(in8(b + REG_IIR) == IIR_MLSC && irq_level[4] == 1, "modem status interrupt (IIR 0x00)");
	(void)in8(b + REG_MSR);
	CHECK(in8(b + REG_IIR) == IIR_NOPEND && irq_level[4] == 0, "MSR read clears it");

	out8(b + REG_IER, IER_ERBFI);
	out8(b + REG_DATA, 'A');
	CHECK(in8(b + REG_LSR) & LSR_DR, "loopback echo: LSR.DR set after THR write");
	CHECK(irq_level[4] == 1 && in8(b + REG_IIR) == IIR_RXRDY, "RX data interrupt (IIR 0x04)");
	CHECK(in8(b + REG_DATA) == 'A', "loopback echo: RBR returns 'A'");
	CHECK(irq_level[4] == 0 && !(in8(b + REG_LSR) & LSR_DR), "RBR read empties RX, IRQ low");

	/* 16450 mode: 1-byte holding register, overrun. */
	out8(b + REG_IER, IER_ERBFI | IER_ELSI);
	out8(b + REG_DATA, '1');
	out8(b + REG_DATA, '2');
	CHECK(in8(b + REG_IIR) == IIR_RLS, "overrun: line status interrupt has top priority (0x06)");
	uint8_t lsr = in8(b + REG_LSR);
	CHECK((lsr & (LSR_OE | LSR_DR)) == (LSR_OE | LSR_DR), "LSR shows OE and DR (0x%02x)", lsr);
	CHECK(!(in8(b + REG_LSR) & LSR_OE), "LSR read clears OE");
	CHECK(in8(b + REG_IIR) == IIR_RXRDY, "then RX data is reported");
	CHECK(in8(b + REG_DATA) == '1', "the first byte is kept, the second was lost");

	/* FIFO mode and trigger levels. */
	out8(b + REG_FCR, FCR_ENABLE | 0x40);   /* trigger 4 */
	CHECK((in8(b + REG_IIR) & IIR_FIFO) == IIR_FIFO, "FCR enable: IIR bits 7:6 = 11 (16550A)");
	guest_puts(b, "abc");
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_RXTOUT), "3 bytes below trigger 4: timeout (0xcc)");
	guest_puts(b, "d");
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_RXRDY), "4 bytes reach trigger 4: data available (0xc4)");
	(void)in8(b + REG_DATA);
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_RXTOUT), "back below trigger after one read");
	out8(b + REG_FCR, FCR_ENABLE | 0xc0 | FCR_RCV_RST);
	CHECK(!(in8(b + REG_LSR) & LSR_DR) && in8(b + REG_IIR) == (IIR_FIFO | IIR_NOPEND),
	      "FCR RX reset empties the FIFO");
	guest_puts(b, "0123456789abc");
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_RXTOUT), "13 bytes below trigger 14");
	guest_puts(b, "d");
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_RXRDY), "14 bytes reach trigger 14");
	guest_puts(b, "efg");   /* 17 bytes into 16 */
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_RLS), "17th byte overruns the 16-byte FIFO");
	(void)in8(b + REG_LSR);
	char got[17] = { 0 };
	for (int i = 0; i < 16 && (in8(b + REG_LSR) & LSR_DR); i++)
		got[i] = (char)in8(b + REG_DATA);
	CHECK(strcmp(got, "0123456789abcdef") == 0, "FIFO delivers the first 16 bytes in order (%s)", got);

	/* Priorities: RX data over THRE. */
	out8(b + REG_IER, IER_ERBFI | IER_ETBEI);
	guest_puts(b, "z");
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_RXTOUT), "RX data outranks THRE");
	(void)in8(b + REG_DATA);
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_TXRDY), "THRE reported once RX is drained");
	CHECK(in8(b + REG_IIR) == (IIR_FIFO | IIR_NOPEND) && irq_level[4] == 0, "and cleared by that IIR read");
	out8(b + REG_FCR, 0);
	CHECK((in8(b + REG_IIR) & IIR_FIFO) == 0, "FCR=0 returns to 16450 mode");
	out8(b + REG_IER, 0);
	out8(b + REG_MCR, 0);

	/* Two UARTs on one IRQ: the line is their OR (com1 and com3 on IRQ 4). */
	out8(b + REG_MCR, MCR_OUT2);
	out8(COM3 + REG_MCR, MCR_OUT2);
	out8(b + REG_IER, IER_ETBEI);
	out8(COM3 + REG_IER, IER_ETBEI);
	(void)in8(b + REG_IIR);
	CHECK(irq_level[4] == 1, "shared IRQ 4 stays high while com3 still asserts it");
	(void)in8(COM3 + REG_IIR);
	CHECK(irq_level[4] == 0, "and goes low when neither does");
	out8(b + REG_IER, 0);
	out8(COM3 + REG_IER, 0);
	out8(b + REG_MCR, 0);
	out8(COM3 + REG_MCR, 0);

	/* Word access = two byte accesses (THR then IER). */
	const struct inout_port *p = port_lookup(b);
	uint32_t w = 0x0000 | 'W';
	p->handler(NULL, false, b, 2, &w, p->arg);
	w = 0;
	p->handler(NULL, true, b + REG_LCR, 2, &w, p->arg);
	CHECK(w == 0x0003, "16-bit read at LCR returns LCR and MCR (0x%04x)", w);
}

static void test_file_backend(const char *path)
{
	char buf[256];
	guest_puts(COM1, "hello\r\n");
	CHECK((in8(COM1 + REG_LSR) & (LSR_THRE | LSR_TEMT)) == LSR_THRE,
	      "file: THRE set, TEMT clear while bytes wait for the main thread");
	fake_loop(2);
	read_file(path, buf, sizeof(buf));
	/* 'x' and 'W' were written earlier by test_registers outside loopback. */
	CHECK(strcmp(buf, "xWhello\r\n") == 0,
	      "file: output appended in order, loopback bytes not output (%zu bytes)", strlen(buf));
	CHECK(in8(COM1 + REG_LSR) & LSR_TEMT, "file: TEMT set once flushed");
}

/* ---- save/restore ---- */

static void test_save_restore(void)
{
	uint16_t b = COM1;
	out8(b + REG_LCR, LCR_DLAB);
	out8(b + 0, 0x30);
	out8(b + 1, 0x01);
	out8(b + REG_LCR, 0x1b);
	out8(b + REG_SCR, 0xa5);
	out8(b + REG_FCR, FCR_ENABLE | 0x80);
	out8(b + REG_MCR, MCR_LOOP | MCR_RTS | MCR_DTR);
	out8(b + REG_IER, IER_ERBFI | IER_ELSI);
	guest_puts(b, "0123456789ABCDEFG");   /* 17: overrun */
	(void)in8(b + REG_DATA);
	(void)in8(b + REG_DATA);
	guest_puts(b, "xy");                  /* wraps the ring */
	out8(b + REG_MCR, MCR_RTS | MCR_DTR); /* leave loopback; FIFO keeps its bytes */

	uint8_t buf[UART_SAVE_MAX], buf2[UART_SAVE_MAX];
	size_t n = uart_save(uart_sc[0], buf, sizeof(buf));
	CHECK(n == UART_SAVE_HDR + 16 && buf[0] == 'U' && buf[2] == 1 && get_le16(buf + 3) == n,
	      "save: %zu bytes with magic, version 1, LE length", n);
	CHECK(uart_save(uart_sc[0], buf2, 10) == 0, "save: refuses a short buffer");

	struct uart_softc *sc2 = keep_alive(uart_create(CTX, 1));   /* com2-like, IRQ 3, no backend */
	CHECK(uart_load(sc2, buf, n) == 0, "load: accepted");
	size_t n2 = uart_save(sc2, buf2, sizeof(buf2));
	CHECK(n2 == n && memcmp(buf, buf2, n) == 0, "load+save reproduces the same bytes");
	CHECK(sc2->dll == 0x30 && sc2->dlh == 0x01 && sc2->lcr == 0x1b && sc2->scr == 0xa5 &&
	      sc2->fcr == (FCR_ENABLE | 0x80) && (sc2->lsr & LSR_OE) && sc2->ier == (IER_ERBFI | IER_ELSI),
	      "load restores divisor, LCR, SCR, FCR, IER, OE");
	char got[17] = { 0 };
	struct uart_deferred d = { false, false };
	for (int i = 0; i < 16 && sc2->rxfifo.num; i++)
		got[i] = (char)uart_reg_read(sc2, REG_DATA, &d);
	CHECK(strcmp(got, "23456789ABCDEFxy") == 0, "load restores the FIFO contents in order (%s)", got);

	uint8_t bad[UART_SAVE_MAX];
	memcpy(bad, buf, n);
	bad[2] = 2;
	CHECK(uart_load(sc2, bad, n) == -1, "load rejects an unknown version");
	CHECK(uart_load(sc2, buf, n - 1) == -1, "load rejects a truncated record");
	memcpy(bad, buf, n);
	put_le16(bad + 17, 17);
	CHECK(uart_load(sc2, bad, n) == -1, "load rejects a FIFO count above its size");
	memcpy(bad, buf, n);
	put_le16(bad + 15, 8);
	CHECK(uart_load(sc2, bad, n) == -1, "load rejects a FIFO size other than 1 or 16");

	/* Leave com1 quiet for later tests. */
	out8(b + REG_FCR, FCR_ENABLE | FCR_RCV_RST);
	(void)in8(b + REG_LSR);
	out8(b + REG_IER, 0);
	out8(b + REG_MCR, 0);
	out8(b + REG_LCR, 0x03);
}

/* ---- stdio backend (fds 0 and 1 replaced by pipes) ---- */

static void test_stdio(void)
{
	int inp[2], outp[2];
	if (pipe(inp) || pipe(outp)) {
		CHECK(false, "pipes");
		return;
	}
	fcntl(outp[1], F_SETPIPE_SZ, 4096);
	int pipesz = fcntl(outp[1], F_GETPIPE_SZ);
	check_fd = dup(STDOUT_FILENO);
	dup2(inp[0], STDIN_FILENO);
	dup2(outp[1], STDOUT_FILENO);
	close(inp[0]);
	close(outp[1]);
	fcntl(outp[0], F_SETFL, O_NONBLOCK);

	CHECK(uart_init_unit(CTX, 2, "stdio") == 0, "stdio: com3 on pipes");
	CHECK(uart_init_unit(CTX, 3, "stdio") == -1 && strstr(last_log, "stdio is already used by com3"),
	      "stdio: a second stdio UART is refused (%s)", last_log);
	struct uart_softc *sc = uart_sc[2];
	uint16_t b = COM3;
	struct cd_conn *cc = sc ? sc->cd->cur : NULL;
	CHECK(cc && cc->in_ev && !cc->in_ev->is_timer, "stdio: stdin watched for reads");
	CHECK(!sc->cd->tio_saved, "stdio: stdin is not a tty: terminal left alone");

	/* Input with flow control: 40 bytes through a 16-byte FIFO. */
	out8(b + REG_FCR, FCR_ENABLE);
	char in[41];
	for (int i = 0; i < 40; i++)
		in[i] = (char)('A' + i % 26);
	in[40] = '\0';
	CHECK(write(inp[1], in, 40) == 40, "stdio: 40 bytes queued on stdin");
	fake_loop(3);
	int pending = -1;
	ioctl(STDIN_FILENO, FIONREAD, &pending);
	CHECK(sc->rxfifo.num == 16 && sc->rx_stalled && !cc->in_ev->enabled && pending == 24,
	      "stdio: FIFO full -> read event disabled, 24 bytes left on stdin (fifo %d, left %d)",
	      sc->rxfifo.num, pending);
	char got[64] = { 0 };
	int ngot = 0;
	/* The guest takes 5 bytes at a time: refills must fit the room left. */
	for (int iter = 0; iter < 40 && ngot < 40; iter++) {
		for (int k = 0; k < 5 && (in8(b + REG_LSR) & LSR_DR); k++)
			got[ngot++] = (char)in8(b + REG_DATA);
		fake_loop(2);
	}
	CHECK(ngot == 40 && memcmp(got, in, 40) == 0 && !(in8(b + REG_LSR) & LSR_OE),
	      "stdio: all 40 input bytes delivered in order, no overrun (%d)", ngot);
	CHECK(!sc->rx_stalled && cc->in_ev->enabled, "stdio: read event re-enabled after the guest drained");

	/* Loopback mode holds input back instead of discarding it. */
	out8(b + REG_MCR, MCR_LOOP);
	CHECK(write(inp[1], "12345", 5) == 5, "stdio: 5 more bytes on stdin");
	fake_loop(3);
	CHECK(sc->rxfifo.num == 0 && sc->rx_stalled, "stdio: no input taken in loopback mode");
	out8(b + REG_MCR, 0);
	fake_loop(3);
	ngot = 0;
	while (in8(b + REG_LSR) & LSR_DR)
		got[ngot++] = (char)in8(b + REG_DATA);
	CHECK(ngot == 5 && memcmp(got, "12345", 5) == 0, "stdio: held input delivered after loopback ends");

	/* Output through a small pipe: partial writes, POLLOUT wait, order. */
	enum { NOUT = 20000 };
	static uint8_t pat[70000], rcv[70000];
	for (int i = 0; i < (int)sizeof(pat); i++)
		pat[i] = (uint8_t)(i * 7 + i / 251);
	for (int i = 0; i < NOUT; i++)
		out8(b + REG_DATA, pat[i]);
	fake_loop(2);
	CHECK(cc->tx_blocked && cc->out_ev && cc->out_ev->kind == EVF_WRITE &&
	      tx_used(sc) == (uint64_t)(NOUT - pipesz),
	      "stdio: pipe full after %d bytes, rest waits for POLLOUT (%llu left)", pipesz,
	      (unsigned long long)tx_used(sc));
	size_t have = 0;
	for (int iter = 0; iter < 1000 && have < NOUT; iter++) {
		have = drain_fd(outp[0], rcv, have, sizeof(rcv));
		fake_loop(1);
	}
	have = drain_fd(outp[0], rcv, have, sizeof(rcv));
	CHECK(have == NOUT && memcmp(rcv, pat, NOUT) == 0, "stdio: %zu output bytes arrive intact and in order", have);

	/* Backpressure: with nobody reading, THRE drops when the ring is nearly full. */
	out8(b + REG_MCR, MCR_OUT2);
	out8(b + REG_IER, IER_ETBEI);
	(void)in8(b + REG_IIR);
	int nw = 0;
	while ((in8(b + REG_LSR) & LSR_THRE) && nw < 100000)
		out8(b + REG_DATA, pat[nw++ % 65536]);
	CHECK(nw == UART_TXBUF_SZ - UART_FIFOSZ + 1, "stdio: THRE clears once the ring can't take a FIFO load (%d)", nw);
	CHECK(irq_level[4] == 0 && in8(b + REG_IIR) == (IIR_FIFO | IIR_NOPEND), "stdio: no THRE interrupt while full");
	for (int i = 0; i < 20; i++)
		out8(b + REG_DATA, pat[nw++ % 65536]);
	CHECK(sc->txdropped == 5, "stdio: a guest ignoring THRE loses only what exceeds the ring (%llu)",
	      (unsigned long long)sc->txdropped);
	nw -= 5;
	have = 0;
	for (int iter = 0; iter < 5000 && have < (size_t)nw; iter++) {
		have = drain_fd(outp[0], rcv, have, sizeof(rcv));
		fake_loop(1);
	}
	bool same = have == (size_t)nw;
	for (int i = 0; same && i < nw; i++)
		same = rcv[i] == pat[i % 65536];
	CHECK(same, "stdio: %zu bytes of backpressured output arrive in order", have);
	CHECK(irq_level[4] == 1 && in8(b + REG_IIR) == (IIR_FIFO | IIR_TXRDY),
	      "stdio: THRE interrupt when the ring drains");
	out8(b + REG_IER, 0);
	out8(b + REG_MCR, 0);

	/* EOF on stdin: stop polling it. */
	close(inp[1]);
	fake_loop(2);
	CHECK(cc->in_eof && !cc->in_ev->enabled, "stdio: EOF on stdin stops reading, no error");
	guest_puts(b, "after eof\n");
	fake_loop(2);
	have = drain_fd(outp[0], rcv, 0, sizeof(rcv));
	CHECK(have == 10 && memcmp(rcv, "after eof\n", 10) == 0, "stdio: output still works after input EOF");

	/* stdin on /dev/null: epoll would refuse it, polled on a timer instead. */
	cd_stdio_owner = NULL;   /* com3 keeps stdout; com4 may take stdio again */
	int dn = open("/dev/null", O_RDONLY);
	dup2(dn, STDIN_FILENO);
	close(dn);
	CHECK(uart_init_unit(CTX, 3, "stdio") == 0, "stdio: com4 with stdin on /dev/null");
	struct uart_softc *sc4 = uart_sc[3];
	struct cd_conn *c4 = sc4->cd->cur;
	CHECK(c4->in_ev && c4->in_ev->is_timer, "stdio: unpollable stdin falls back to a timer");
	fake_loop(2);
	CHECK(c4->in_eof && !c4->in_ev->enabled, "stdio: /dev/null reads as EOF, timer stopped");
	(void)in8(COM4 + REG_IIR);
	close(outp[0]);
}

static void test_tty_raw(void)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m)) {
		CHECK(true, "tty: no pty available, skipped");
		return;
	}
	int s = open(ptsname(m), O_RDWR | O_NOCTTY);
	int saved_in = dup(STDIN_FILENO);
	dup2(s, STDIN_FILENO);
	struct termios before, during, after;
	tcgetattr(STDIN_FILENO, &before);
	/* What chardev_open("stdio") does to a tty stdin, and chardev_close() undoes. */
	struct chardev tcd = { .name = "stdio-test", .lfd = -1, .tio_fd = -1 };
	cd_tty_raw(&tcd, STDIN_FILENO);
	tcgetattr(STDIN_FILENO, &during);
	chardev_close(&tcd);
	tcgetattr(STDIN_FILENO, &after);
	CHECK((before.c_lflag & (ICANON | ECHO)) && !(during.c_lflag & (ICANON | ECHO | ISIG)),
	      "tty: stdin tty put in raw mode");
	CHECK(after.c_lflag == before.c_lflag && after.c_iflag == before.c_iflag &&
	      after.c_oflag == before.c_oflag, "tty: chardev_close restores it");
	dup2(saved_in, STDIN_FILENO);
	close(saved_in);
	close(s);
	close(m);
}

/* ---- socket backend (com2) ---- */

static int sock_connect(const char *path)
{
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (connect(c, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		close(c);
		return -1;
	}
	return c;
}

static size_t sock_recv(int c, char *buf, size_t cap)
{
	size_t have = 0;
	for (;;) {
		ssize_t n = recv(c, buf + have, cap - 1 - have, MSG_DONTWAIT);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	buf[have] = '\0';
	return have;
}

static void test_sock(void)
{
	char path[96], value[160], notsock[96];
	snprintf(path, sizeof(path), "%s/com2.sock", tmpdir);
	snprintf(notsock, sizeof(notsock), "%s/plain", tmpdir);

	/* A stale socket file from an earlier run. */
	int st = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	bind(st, (struct sockaddr *)&sun, sizeof(sun));
	close(st);

	int fd = open(notsock, O_CREAT | O_WRONLY, 0644);
	close(fd);
	struct uart_softc *tmp = keep_alive(uart_create(CTX, 1));
	snprintf(value, sizeof(value), "sock=%s", notsock);
	CHECK(uart_open_backend(tmp, value) == -1 && access(notsock, F_OK) == 0 &&
	      strstr(last_log, "config: lpc.com2.path: ") && strstr(last_log, "exists and is not a socket"),
	      "sock: refuses to replace a file that is not a socket (%s)", last_log);

	/* Another process's live socket: refused, and it keeps its file and its listener. */
	char live[96];
	snprintf(live, sizeof(live), "%s/live.sock", tmpdir);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un lsun = { .sun_family = AF_UNIX };
	snprintf(lsun.sun_path, sizeof(lsun.sun_path), "%s", live);
	CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&lsun, sizeof(lsun)) == 0 && listen(lfd, 4) == 0,
	      "sock: a live listener for the next check");
	snprintf(value, sizeof(value), "sock=%s", live);
	CHECK(uart_open_backend(tmp, value) == -1 && strstr(last_log, "is in use (another process listens on it)"),
	      "sock: refuses a path another process listens on (%s)", last_log);
	int probe = sock_connect(live);
	CHECK(probe >= 0, "sock: the other process's socket still works");
	if (probe >= 0)
		close(probe);
	/* Its backlog full: still recognized as live (EAGAIN from the probe). */
	int filled[16], nfilled = 0;
	for (int i = 0; i < 16; i++) {
		filled[nfilled] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (connect(filled[nfilled], (struct sockaddr *)&lsun, sizeof(lsun)) != 0) {
			close(filled[nfilled]);
			break;
		}
		nfilled++;
	}
	CHECK(uart_open_backend(tmp, value) == -1 && access(live, F_OK) == 0,
	      "sock: refuses a live listener with a full backlog (%d queued)", nfilled);
	for (int i = 0; i < nfilled; i++)
		close(filled[i]);
	close(lfd);

	snprintf(value, sizeof(value), "sock=%s", path);
	CHECK(uart_init_unit(CTX, 1, value) == 0, "sock: com2 listening over a stale socket file");
	struct uart_softc *sc = uart_sc[1];
	uint16_t b = COM2;

	guest_puts(b, "nobody");
	CHECK(tx_used(sc) == 0 && (in8(b + REG_LSR) & LSR_TEMT), "sock: output with no client is dropped");

	int c = sock_connect(path);
	CHECK(c >= 0, "sock: client connects");
	fake_loop(2);
	CHECK(sc->have_out && sc->cd->cur, "sock: client accepted");
	guest_puts(b, "xyz");
	fake_loop(2);
	char buf[256];
	sock_recv(c, buf, sizeof(buf));
	CHECK(strcmp(buf, "xyz") == 0, "sock: guest output reaches the client only after it connected (\"%s\")", buf);

	out8(b + REG_FCR, FCR_ENABLE);
	char in[40];
	for (int i = 0; i < 40; i++)
		in[i] = (char)('a' + i % 26);
	CHECK(send(c, in, 40, 0) == 40, "sock: client sends 40 bytes");
	char got[64];
	int ngot = 0;
	fake_loop(2);
	CHECK(sc->rx_stalled && sc->rxfifo.num == 16, "sock: FIFO full, socket read paused");
	for (int iter = 0; iter < 40 && ngot < 40; iter++) {
		for (int k = 0; k < 7 && (in8(b + REG_LSR) & LSR_DR); k++)
			got[ngot++] = (char)in8(b + REG_DATA);
		fake_loop(2);
	}
	CHECK(ngot == 40 && memcmp(got, in, 40) == 0 && !(in8(b + REG_LSR) & LSR_OE),
	      "sock: all 40 client bytes delivered in order, no overrun");

	/*
	 * Input stalled (FIFO full) while output waits for POLLOUT, then input
	 * resumes: epoll allows one registration per fd, so the read and
	 * write events must not share one.
	 */
	int sndbuf = 4096;
	setsockopt(sc->cd->cur->out_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	CHECK(send(c, in, 40, 0) == 40, "sock: client sends 40 more bytes");
	fake_loop(2);
	CHECK(sc->rx_stalled, "sock: input stalled on a full FIFO");
	static uint8_t big[60000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 31 + i / 199);
	for (size_t i = 0; i < sizeof(big); i++)
		out8(b + REG_DATA, big[i]);
	fake_loop(2);
	CHECK(sc->cd->cur->tx_blocked && sc->cd->cur->out_ev && !sc->cd->cur->out_ev->is_timer,
	      "sock: output waits for POLLOUT on the socket");
	ngot = 0;
	static uint8_t rbig[60000];
	size_t have = 0;
	for (int iter = 0; iter < 2000 && (ngot < 40 || have < sizeof(big)); iter++) {
		while (in8(b + REG_LSR) & LSR_DR)
			got[ngot++] = (char)in8(b + REG_DATA);
		ssize_t r = recv(c, rbig + have, sizeof(rbig) - have, MSG_DONTWAIT);
		if (r > 0)
			have += (size_t)r;
		fake_loop(1);
	}
	bool no_failed = true;
	for (int i = 0; i < nevs; i++)
		no_failed = no_failed && !evs[i].failed;
	CHECK(ngot == 40 && memcmp(got, in, 40) == 0 && no_failed,
	      "sock: input resumes while output is blocked (%d bytes)", ngot);
	CHECK(have == sizeof(big) && memcmp(rbig, big, have) == 0, "sock: %zu blocked output bytes arrive in order", have);

	int c2 = sock_connect(path);
	fake_loop(2);
	struct pollfd pfd = { .fd = c2, .events = POLLIN };
	poll(&pfd, 1, 1000);
	CHECK(c2 >= 0 && recv(c2, buf, sizeof(buf), MSG_DONTWAIT) == 0, "sock: a second client is refused (EOF)");
	close(c2);
	guest_puts(b, "1");
	fake_loop(2);
	sock_recv(c, buf, sizeof(buf));
	CHECK(strcmp(buf, "1") == 0, "sock: the first client keeps working");

	close(c);
	fake_loop(2);
	CHECK(!sc->have_out && !sc->cd->cur, "sock: client disconnect noticed");
	guest_puts(b, "lost");
	fake_loop(2);
	c = sock_connect(path);
	fake_loop(2);
	guest_puts(b, "new");
	fake_loop(2);
	sock_recv(c, buf, sizeof(buf));
	CHECK(strcmp(buf, "new") == 0, "sock: a new client gets only new output (\"%s\")", buf);
	close(c);
	fake_loop(2);

	CHECK(access(path, F_OK) == 0, "sock: socket file exists while running");
	uart_cleanup();
	CHECK(access(path, F_OK) != 0, "sock: socket file removed at exit");
	unlink(notsock);
}

static void test_config(void)
{
	char err[256];
	struct chardev_spec ps;
	const unsigned F = CHARDEV_F_STDIO;   /* what lpc.comN.path takes */
	CHECK(chardev_parse("stdio", F, &ps, err, sizeof(err)) == 0 && ps.kind == CHARDEV_STDIO, "config: stdio");
	CHECK(chardev_parse("file=/tmp/x", F, &ps, err, sizeof(err)) == 0 && ps.kind == CHARDEV_FILE &&
	      strcmp(ps.path, "/tmp/x") == 0, "config: file=PATH");
	CHECK(chardev_parse("sock=/tmp/s", F, &ps, err, sizeof(err)) == 0 && ps.kind == CHARDEV_SOCK,
	      "config: sock=PATH");
	CHECK(chardev_parse("tcp=127.0.0.1:4444", F, &ps, err, sizeof(err)) == 0 && ps.kind == CHARDEV_TCP,
	      "config: tcp=ADDR:PORT");
	CHECK(chardev_parse("/dev/ttyS0", F, &ps, err, sizeof(err)) == 0 && ps.kind == CHARDEV_TTY &&
	      strcmp(ps.path, "/dev/ttyS0") == 0, "config: a tty path (bhyve's /dev/nmdm0A form)");
	CHECK(chardev_parse("file=", F, &ps, err, sizeof(err)) == -1 && strstr(err, "expected"),
	      "config: empty file= rejected with a reason (%s)", err);
	CHECK(chardev_parse("telepathy", F, &ps, err, sizeof(err)) == -1 && strstr(err, "expected stdio"),
	      "config: unknown backend rejected (%s)", err);
	CHECK(chardev_parse("tcp=127.0.0.1", F, &ps, err, sizeof(err)) == -1 && strstr(err, "expected tcp=ADDR:PORT"),
	      "config: tcp= without a port rejected (%s)", err);
	char longp[200] = "sock=/";
	memset(longp + 6, 'a', 150);
	longp[156] = '\0';
	CHECK(chardev_parse(longp, F, &ps, err, sizeof(err)) == -1 && strstr(err, "too long"),
	      "config: over-long socket path rejected (%s)", err);
}

/* ---- tcp= and tty backends through the UART (extra units at 0x500, 0x508, 0x510) ---- */

static struct uart_softc *extra_uart(uint16_t base, const char *value)
{
	struct uart_softc *sc = keep_alive(uart_create(CTX, 1));
	sc->port = base;
	if (uart_open_backend(sc, value) != 0)
		return NULL;
	struct inout_port iop = { "extra", base, 8, uart_io_handler, sc };
	register_inout(&iop);
	return sc;
}

static int free_tcp_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	if (bind(s, (struct sockaddr *)&sin, sizeof(sin)) != 0 || getsockname(s, (struct sockaddr *)&sin, &len) != 0) {
		close(s);
		return -1;
	}
	close(s);
	return ntohs(sin.sin_port);
}

static int tcp_connect(int port)
{
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (connect(c, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		close(c);
		return -1;
	}
	return c;
}

/* Bytes the guest can read now, as a string. */
static size_t guest_gets(uint16_t base, char *buf, size_t cap)
{
	size_t n = 0;
	while (n + 1 < cap && (in8(base + REG_LSR) & LSR_DR))
		buf[n++] = (char)in8(base + REG_DATA);
	buf[n] = '\0';
	return n;
}

static void test_tcp(void)
{
	char value[64], buf[256];
	int port = free_tcp_port();
	snprintf(value, sizeof(value), "tcp=127.0.0.1:%d", port);
	struct uart_softc *sc = extra_uart(0x500, value);
	CHECK(sc && !sc->have_out, "tcp: UART listening on %s, no client yet", value);
	if (!sc)
		return;
	out8(0x500 + REG_FCR, FCR_ENABLE);
	guest_puts(0x500, "nobody");
	CHECK(tx_used(sc) == 0, "tcp: output with no client is dropped");
	int c = tcp_connect(port);
	fake_loop(2);
	CHECK(c >= 0 && sc->have_out, "tcp: client accepted");
	guest_puts(0x500, "hello tcp\r\n");
	fake_loop(2);
	sock_recv(c, buf, sizeof(buf));
	CHECK(strcmp(buf, "hello tcp\r\n") == 0, "tcp: THR bytes reach the TCP client (%zu bytes)", strlen(buf));
	CHECK(send(c, "abc", 3, 0) == 3, "tcp: client sends 3 bytes");
	fake_loop(2);
	guest_gets(0x500, buf, sizeof(buf));
	CHECK(strcmp(buf, "abc") == 0, "tcp: client bytes arrive in RBR (\"%s\")", buf);
	int c2 = tcp_connect(port);
	fake_loop(2);
	struct pollfd pfd = { .fd = c2, .events = POLLIN };
	poll(&pfd, 1, 1000);
	CHECK(c2 >= 0 && recv(c2, buf, sizeof(buf), MSG_DONTWAIT) == 0, "tcp: a second client is refused (EOF)");
	close(c2);
	close(c);
	fake_loop(2);
	CHECK(!sc->have_out, "tcp: disconnect noticed");
	c = tcp_connect(port);
	fake_loop(2);
	guest_puts(0x500, "again");
	fake_loop(2);
	sock_recv(c, buf, sizeof(buf));
	CHECK(strcmp(buf, "again") == 0, "tcp: a new client is served (\"%s\")", buf);
	close(c);
	fake_loop(2);
	struct uart_softc *busy = keep_alive(uart_create(CTX, 1));
	CHECK(uart_open_backend(busy, value) == -1 && strstr(last_log, "config: lpc.com2.path: ") &&
	      strstr(last_log, "Address already in use"), "tcp: a port in use is refused (%s)", last_log);
	chardev_close(sc->cd);
	CHECK(tcp_connect(port) < 0, "tcp: the listener is closed at exit");
}

static void test_tty_backend(void)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (m < 0 || grantpt(m) || unlockpt(m)) {
		CHECK(true, "tty backend: no pty available, skipped");
		return;
	}
	char path[64], buf[256];
	snprintf(path, sizeof(path), "%s", ptsname(m));
	int watch = open(path, O_RDWR | O_NOCTTY);   /* the slave's mode, seen from outside */
	struct termios before, during, after;
	tcgetattr(watch, &before);
	struct uart_softc *sc = extra_uart(0x508, path);
	CHECK(sc && sc->have_out, "tty backend: UART on %s (bhyve's -l com1,/dev/nmdm0A)", path);
	if (!sc)
		return;
	tcgetattr(watch, &during);
	CHECK((before.c_lflag & ICANON) && !(during.c_lflag & (ICANON | ECHO | ISIG)) && !(during.c_oflag & OPOST),
	      "tty backend: raw mode while in use");
	out8(0x508 + REG_FCR, FCR_ENABLE);
	guest_puts(0x508, "to pty\n");
	fake_loop(2);
	size_t n = drain_fd(m, (uint8_t *)buf, 0, sizeof(buf) - 1);
	buf[n] = '\0';
	CHECK(strcmp(buf, "to pty\n") == 0, "tty backend: THR bytes reach the pty's other end, untranslated (%zu bytes)",
	      n);
	CHECK(write(m, "from pty", 8) == 8, "tty backend: the other end writes 8 bytes");
	fake_loop(2);
	guest_gets(0x508, buf, sizeof(buf));
	CHECK(strcmp(buf, "from pty") == 0, "tty backend: they arrive in RBR (\"%s\")", buf);
	chardev_close(sc->cd);
	tcgetattr(watch, &after);
	CHECK(after.c_lflag == before.c_lflag && after.c_oflag == before.c_oflag && after.c_iflag == before.c_iflag,
	      "tty backend: mode restored at exit");
	close(watch);
	close(m);

	/* The other end goes away: input ends, output is discarded with one warning. */
	m = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (m < 0 || grantpt(m) || unlockpt(m))
		return;
	snprintf(path, sizeof(path), "%s", ptsname(m));
	sc = extra_uart(0x510, path);
	CHECK(sc && sc->have_out, "tty backend: a second pty");
	if (!sc)
		return;
	close(m);
	fake_loop(2);
	CHECK(sc->cd->cur->in_eof, "tty backend: hang-up ends input");
	last_log[0] = '\0';
	guest_puts(0x510, "lost");
	fake_loop(3);
	CHECK(!sc->have_out && strstr(last_log, "output: Input/output error; discarding output"),
	      "tty backend: output after the hang-up discarded, one warning (%s)", last_log);
	guest_puts(0x510, "more");
	CHECK(tx_used(sc) == 0 && (in8(0x510 + REG_LSR) & LSR_TEMT), "tty backend: later output dropped at once");
	chardev_close(sc->cd);

	/* Not a tty. */
	struct uart_softc *bad = keep_alive(uart_create(CTX, 1));
	CHECK(uart_open_backend(bad, "/dev/null") == -1 && strstr(last_log, "/dev/null is not a tty"),
	      "tty backend: a path that is not a tty is refused (%s)", last_log);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);   /* as hyve's main() */
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	char filepath[128];
	snprintf(filepath, sizeof(filepath), "%s/com1.out", tmpdir);
	char value[160];
	snprintf(value, sizeof(value), "file=%s", filepath);
	cfg_set("lpc.com1.path", value);

	test_config();
	CHECK(uart_init(CTX) == 0 && uart_sc[0] && port_lookup(COM1) && port_lookup(COM1)->size == 8,
	      "init: lpc.com1.path=file=... creates com1 at 0x3f8");
	CHECK(!uart_sc[1] && !port_lookup(COM2), "init: com2 absent without its key");

	/* com3 for the shared-IRQ checks: stdio comes later, give it a file for now. */
	char f3[128], v3[160];
	snprintf(f3, sizeof(f3), "%s/com3.out", tmpdir);
	snprintf(v3, sizeof(v3), "file=%s", f3);
	struct uart_softc *com3_file = keep_alive(uart_create(CTX, 2));
	uart_open_backend(com3_file, v3);
	struct inout_port iop = { "com3-tmp", COM3, 8, uart_io_handler, com3_file };
	register_inout(&iop);

	test_registers();
	test_file_backend(filepath);
	test_save_restore();
	/* Swap the temporary com3 for the stdio one. */
	nports--;
	test_stdio();
	test_tty_raw();
	test_sock();
	test_tcp();
	test_tty_backend();

	unlink(filepath);
	unlink(f3);
	rmdir(tmpdir);
	return check_summary();
}
