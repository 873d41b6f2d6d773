/*
 * 16550A UART: com1..com4 at the PC's standard ports, one per configured
 * lpc.comN.path (bhyve's uart_emul.c is the behavioural model).  The
 * backend is a chardev (chardev.h): stdio, file=PATH, sock=PATH,
 * tcp=ADDR:PORT or a tty path (bhyve's -l com1,/dev/nmdm0A).  With a
 * server backend and no client connected, output is dropped.
 *
 * Threads: the register handlers run on vCPU threads, concurrently; all
 * backend I/O runs on the main thread (mevent).  Each UART has a mutex.
 * The vCPU side only moves bytes between registers and two buffers:
 *
 *   TX: THR writes are appended to a 64 KiB ring and a flush is queued on
 *       the main thread with mevent_call().  LSR.THRE is reported only while
 *       the ring can take a whole FIFO load (16 bytes), so a guest that
 *       honours THRE is throttled instead of losing bytes when the backend
 *       (say, a pipe nobody reads) stalls.  LSR.TEMT is set once the ring
 *       is empty, i.e. the bytes were handed to the host.  Output order is
 *       preserved: one ring, one writer (the main thread).
 *   RX: the main thread reads the backend only while the RX FIFO has room
 *       (and not in loopback mode); when it is full the backend's input is
 *       turned off and the guest's RBR read that makes room queues a
 *       resume.  No input byte is dropped.
 *
 * The interrupt output follows the 16550A's INTR pin gated by MCR.OUT2
 * (the PC wiring): the GSI is high while an enabled interrupt is pending
 * and OUT2 is set.  com1/com3 and com2/com4 share IRQ 4/3: the line is the
 * OR of the UARTs on it.
 *
 * Public function for the core (no header: declare it where used):
 *   void uart_cleanup(void);           flush output, then close the
 *                                      backends (also registered with
 *                                      atexit; idempotent)
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/init.h"
#include "../core/inout.h"
#include "../core/log.h"
#include "../core/mevent.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "chardev.h"

/* Register offsets. */
#define REG_DATA 0      /* RBR (read) / THR (write); DLL when LCR.DLAB */
#define REG_IER  1      /* DLM when LCR.DLAB */
#define REG_IIR  2      /* read */
#define REG_FCR  2      /* write */
#define REG_LCR  3
#define REG_MCR  4
#define REG_LSR  5
#define REG_MSR  6
#define REG_SCR  7

#define IER_ERBFI 0x01  /* received data available */
#define IER_ETBEI 0x02  /* THR empty */
#define IER_ELSI  0x04  /* line status */
#define IER_EDSSI 0x08  /* modem status */
#define IER_MASK  0x0f

#define IIR_MLSC   0x00
#define IIR_NOPEND 0x01
#define IIR_TXRDY  0x02
#define IIR_RXRDY  0x04
#define IIR_RLS    0x06
#define IIR_RXTOUT 0x0c
#define IIR_FIFO   0xc0

#define FCR_ENABLE  0x01
#define FCR_RCV_RST 0x02
#define FCR_XMT_RST 0x04
#define FCR_DMA     0x08
#define FCR_RX_MASK 0xc0

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR   0x01
#define LSR_OE   0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_DCTS  0x01
#define MSR_DDSR  0x02
#define MSR_TERI  0x04
#define MSR_DDCD  0x08
#define MSR_DELTA 0x0f
#define MSR_CTS   0x10
#define MSR_DSR   0x20
#define MSR_RI    0x40
#define MSR_DCD   0x80

#define UART_FIFOSZ   16
#define UART_TXBUF_SZ 65536u          /* power of two */
#define UART_IO_CHUNK 4096u           /* bytes per backend write */
#define UART_RCLK     1843200
#define UART_BAUD     9600

#define UART_NUNITS 4
static const struct {
	const char *name;
	uint16_t port;
	int irq;
} uart_units[UART_NUNITS] = {
	{ "com1", 0x3f8, 4 },
	{ "com2", 0x2f8, 3 },
	{ "com3", 0x3e8, 4 },
	{ "com4", 0x2e8, 3 },
};

struct uart_softc {
	pthread_mutex_t mtx;
	struct vmctx *ctx;
	const char *name;
	uint16_t port;
	int irq;

	/* Registers. */
	uint8_t dll, dlh, ier, lcr, mcr, msr, scr, fcr;
	uint8_t lsr;                   /* only the sticky OE bit is stored */
	bool thre_int_pending;
	bool intr;                     /* our contribution to the GSI */
	struct {
		uint8_t buf[UART_FIFOSZ];
		int rindex, num, size;
	} rxfifo;

	/* TX ring: vCPUs append at txhead, the main thread consumes at txtail. */
	uint8_t *txbuf;
	uint64_t txhead, txtail;
	uint64_t txdropped;
	bool tx_flush_queued;

	/* RX flow control. */
	bool rx_stalled;               /* backend input off: FIFO full / loopback */
	bool rx_resume_queued;

	/* Backend (the chardev itself: main thread only). */
	struct chardev *cd;
	bool have_out;                 /* output goes somewhere (a client is connected...) */
};

static struct uart_softc *uart_sc[UART_NUNITS];
static pthread_mutex_t uart_irq_mtx = PTHREAD_MUTEX_INITIALIZER;
static int uart_irq_count[16];

/* ---- interrupt line ---- */

static void uart_irq_set(struct vmctx *ctx, int irq, bool on)
{
	pthread_mutex_lock(&uart_irq_mtx);
	if (on) {
		if (uart_irq_count[irq]++ == 0)
			vm_set_irq_line(ctx, irq, 1);
	} else if (uart_irq_count[irq] > 0 && --uart_irq_count[irq] == 0) {
		vm_set_irq_line(ctx, irq, 0);
	}
	pthread_mutex_unlock(&uart_irq_mtx);
}

/* ---- RX FIFO ---- */

static void rxfifo_reset(struct uart_softc *sc, int size)
{
	sc->rxfifo.rindex = 0;
	sc->rxfifo.num = 0;
	sc->rxfifo.size = size;
}

static int rxfifo_room(const struct uart_softc *sc)
{
	return sc->rxfifo.size - sc->rxfifo.num;
}

static void rxfifo_put(struct uart_softc *sc, uint8_t ch)
{
	if (rxfifo_room(sc) == 0) {
		sc->lsr |= LSR_OE;      /* overrun: the new byte is lost */
		return;
	}
	int w = (sc->rxfifo.rindex + sc->rxfifo.num) % sc->rxfifo.size;
	sc->rxfifo.buf[w] = ch;
	sc->rxfifo.num++;
}

static uint8_t rxfifo_get(struct uart_softc *sc)
{
	if (sc->rxfifo.num == 0)
		return 0;
	uint8_t ch = sc->rxfifo.buf[sc->rxfifo.rindex];
	sc->rxfifo.rindex = (sc->rxfifo.rindex + 1) % sc->rxfifo.size;
	sc->rxfifo.num--;
	return ch;
}

static int rx_trigger_level(const struct uart_softc *sc)
{
	static const int levels[4] = { 1, 4, 8, 14 };
	return (sc->fcr & FCR_ENABLE) ? levels[(sc->fcr & FCR_RX_MASK) >> 6] : 1;
}

/* ---- TX ring ---- */

static uint64_t tx_used(const struct uart_softc *sc)
{
	return sc->txhead - sc->txtail;
}

/* THR "empty": the ring can take at least a FIFO load. */
static bool tx_thre(const struct uart_softc *sc)
{
	return UART_TXBUF_SZ - tx_used(sc) >= UART_FIFOSZ;
}

/* ---- registers ---- */

static uint8_t modem_status(uint8_t mcr)
{
	if (mcr & MCR_LOOP) {
		uint8_t msr = 0;
		if (mcr & MCR_RTS)
			msr |= MSR_CTS;
		if (mcr & MCR_DTR)
			msr |= MSR_DSR;
		if (mcr & MCR_OUT1)
			msr |= MSR_RI;
		if (mcr & MCR_OUT2)
			msr |= MSR_DCD;
		return msr;
	}
	/* A modem that is always there, so opens and CRTSCTS never block. */
	return MSR_DCD | MSR_DSR | MSR_CTS;
}

static uint8_t uart_lsr(const struct uart_softc *sc)
{
	uint8_t lsr = sc->lsr & LSR_OE;
	if (sc->rxfifo.num > 0)
		lsr |= LSR_DR;
	if (tx_thre(sc)) {
		lsr |= LSR_THRE;
		if (tx_used(sc) == 0)
			lsr |= LSR_TEMT;
	}
	return lsr;
}

/* Highest-priority pending interrupt, as IIR bits 3:0. */
static uint8_t uart_intr_reason(const struct uart_softc *sc)
{
	if ((sc->lsr & LSR_OE) && (sc->ier & IER_ELSI))
		return IIR_RLS;
	if (sc->rxfifo.num > 0 && (sc->ier & IER_ERBFI))
		/*
		 * Below the trigger level a real FIFO raises the character
		 * timeout after four idle character times; it is raised at
		 * once here.
		 */
		return sc->rxfifo.num >= rx_trigger_level(sc) ? IIR_RXRDY : IIR_RXTOUT;
	if (sc->thre_int_pending && (sc->ier & IER_ETBEI))
		return IIR_TXRDY;
	if ((sc->msr & MSR_DELTA) && (sc->ier & IER_EDSSI))
		return IIR_MLSC;
	return IIR_NOPEND;
}

static void uart_update_intr(struct uart_softc *sc)
{
	bool on = uart_intr_reason(sc) != IIR_NOPEND && (sc->mcr & MCR_OUT2);
	if (on != sc->intr) {
		sc->intr = on;
		uart_irq_set(sc->ctx, sc->irq, on);
	}
}

static void uart_set_msr(struct uart_softc *sc)
{
	uint8_t msr = modem_status(sc->mcr);
	uint8_t delta = sc->msr & MSR_DELTA;
	if ((msr ^ sc->msr) & MSR_CTS)
		delta |= MSR_DCTS;
	if ((msr ^ sc->msr) & MSR_DSR)
		delta |= MSR_DDSR;
	if ((msr ^ sc->msr) & MSR_DCD)
		delta |= MSR_DDCD;
	if ((sc->msr & MSR_RI) && !(msr & MSR_RI))
		delta |= MSR_TERI;
	sc->msr = msr | delta;
}

static void uart_reset(struct uart_softc *sc)
{
	uint16_t divisor = UART_RCLK / UART_BAUD / 16;
	sc->dll = (uint8_t)divisor;
	sc->dlh = (uint8_t)(divisor >> 8);
	sc->ier = sc->lcr = sc->mcr = sc->scr = sc->fcr = sc->lsr = 0;
	sc->msr = modem_status(0);
	sc->thre_int_pending = false;
	rxfifo_reset(sc, 1);
}

/* Work for the main thread, decided under the lock, queued after it. */
struct uart_deferred {
	bool flush, rx_resume;
};

static void uart_tx_flush_call(void *arg);
static void uart_rx_resume_call(void *arg);

/* Under sc->mtx: does the main thread need to resume reading input? */
static void uart_check_rx_resume(struct uart_softc *sc, struct uart_deferred *d)
{
	if (sc->rx_stalled && !sc->rx_resume_queued && rxfifo_room(sc) > 0 &&
	    !(sc->mcr & MCR_LOOP)) {
		sc->rx_resume_queued = true;
		d->rx_resume = true;
	}
}

static void uart_run_deferred(struct uart_softc *sc, const struct uart_deferred *d)
{
	if (d->flush && mevent_call(uart_tx_flush_call, sc) != 0) {
		pthread_mutex_lock(&sc->mtx);
		sc->tx_flush_queued = false;
		pthread_mutex_unlock(&sc->mtx);
	}
	if (d->rx_resume && mevent_call(uart_rx_resume_call, sc) != 0) {
		pthread_mutex_lock(&sc->mtx);
		sc->rx_resume_queued = false;
		pthread_mutex_unlock(&sc->mtx);
	}
}

static void uart_thr_write(struct uart_softc *sc, uint8_t ch, struct uart_deferred *d)
{
	if (sc->mcr & MCR_LOOP) {
		rxfifo_put(sc, ch);
	} else if (sc->have_out) {
		if (tx_used(sc) < UART_TXBUF_SZ) {
			sc->txbuf[sc->txhead % UART_TXBUF_SZ] = ch;
			sc->txhead++;
		} else if (sc->txdropped++ == 0) {
			log_warn("%s: output backend stalled, dropping bytes", sc->name);
		}
		if (!sc->tx_flush_queued) {
			sc->tx_flush_queued = true;
			d->flush = true;
		}
	}
	/* else: no backend output (a server with no client): dropped */
	sc->thre_int_pending = tx_thre(sc);
}

static uint8_t uart_reg_read(struct uart_softc *sc, int reg, struct uart_deferred *d)
{
	uint8_t v = 0xff;
	if ((sc->lcr & LCR_DLAB) && reg == REG_DATA)
		return sc->dll;
	if ((sc->lcr & LCR_DLAB) && reg == REG_IER)
		return sc->dlh;
	switch (reg) {
	case REG_DATA:
		v = rxfifo_get(sc);
		uart_check_rx_resume(sc, d);
		break;
	case REG_IER:
		v = sc->ier;
		break;
	case REG_IIR: {
		uint8_t reason = uart_intr_reason(sc);
		/* Reading IIR clears a THRE interrupt it reports. */
		if (reason == IIR_TXRDY)
			sc->thre_int_pending = false;
		v = ((sc->fcr & FCR_ENABLE) ? IIR_FIFO : 0) | reason;
		break;
	}
	case REG_LCR:
		v = sc->lcr;
		break;
	case REG_MCR:
		v = sc->mcr;
		break;
	case REG_LSR:
		v = uart_lsr(sc);
		sc->lsr &= (uint8_t)~LSR_OE;
		break;
	case REG_MSR:
		v = sc->msr;
		sc->msr &= (uint8_t)~MSR_DELTA;
		break;
	case REG_SCR:
		v = sc->scr;
		break;
	}
	uart_update_intr(sc);
	return v;
}

static void uart_reg_write(struct uart_softc *sc, int reg, uint8_t v, struct uart_deferred *d)
{
	if ((sc->lcr & LCR_DLAB) && reg == REG_DATA) {
		sc->dll = v;
		return;
	}
	if ((sc->lcr & LCR_DLAB) && reg == REG_IER) {
		sc->dlh = v;
		return;
	}
	switch (reg) {
	case REG_DATA:
		uart_thr_write(sc, v, d);
		break;
	case REG_IER:
		/* Enabling the THRE interrupt raises it if THR is empty. */
		if (!(sc->ier & IER_ETBEI) && (v & IER_ETBEI))
			sc->thre_int_pending = tx_thre(sc);
		sc->ier = v & IER_MASK;
		break;
	case REG_FCR:
		/* Switching between FIFO and 16450 mode resets the FIFO. */
		if ((sc->fcr ^ v) & FCR_ENABLE)
			rxfifo_reset(sc, (v & FCR_ENABLE) ? UART_FIFOSZ : 1);
		if (!(v & FCR_ENABLE)) {
			sc->fcr = 0;
		} else {
			if (v & FCR_RCV_RST)
				rxfifo_reset(sc, UART_FIFOSZ);
			/*
			 * FCR_XMT_RST: bytes already in the TX ring have been
			 * handed to the host "wire" and are still delivered.
			 */
			sc->fcr = v & (FCR_ENABLE | FCR_DMA | FCR_RX_MASK);
		}
		uart_check_rx_resume(sc, d);
		break;
	case REG_LCR:
		sc->lcr = v;
		break;
	case REG_MCR:
		sc->mcr = v & MCR_MASK;
		uart_set_msr(sc);
		uart_check_rx_resume(sc, d);
		break;
	case REG_LSR:
	case REG_MSR:
		/* Factory test registers: writes ignored. */
		break;
	case REG_SCR:
		sc->scr = v;
		break;
	}
	uart_update_intr(sc);
}

static int uart_io_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes,
                           uint32_t *val, void *arg)
{
	(void)vcpu;
	struct uart_softc *sc = arg;
	struct uart_deferred d = { false, false };
	int reg = port - sc->port;
	uint32_t out = 0;

	pthread_mutex_lock(&sc->mtx);
	/* Wider accesses are treated as consecutive byte accesses. */
	for (int i = 0; i < bytes; i++) {
		if (reg + i > REG_SCR) {
			out |= 0xffu << (8 * i);
			continue;
		}
		if (in)
			out |= (uint32_t)uart_reg_read(sc, reg + i, &d) << (8 * i);
		else
			uart_reg_write(sc, reg + i, (uint8_t)(*val >> (8 * i)), &d);
	}
	pthread_mutex_unlock(&sc->mtx);
	if (in)
		*val = out;
	uart_run_deferred(sc, &d);
	return 0;
}

/* ---- backend: main thread ---- */

/* Under sc->mtx: the backend takes no output now; the ring was "on the wire". */
static void uart_tx_drop(struct uart_softc *sc)
{
	bool thre_before = tx_thre(sc);
	sc->have_out = false;
	sc->txtail = sc->txhead;
	if (!thre_before)
		sc->thre_int_pending = true;
	uart_update_intr(sc);
}

/* Under sc->mtx: stop reading input until the guest makes room. */
static void uart_rx_stall(struct uart_softc *sc)
{
	if (!sc->rx_stalled) {
		sc->rx_stalled = true;
		chardev_set_rx(sc->cd, false);
	}
}

static void uart_cd_readable(void *arg)
{
	struct uart_softc *sc = arg;
	uint8_t buf[UART_FIFOSZ];

	pthread_mutex_lock(&sc->mtx);
	int room = rxfifo_room(sc);
	if (room == 0 || (sc->mcr & MCR_LOOP)) {
		uart_rx_stall(sc);
		pthread_mutex_unlock(&sc->mtx);
		return;
	}
	ssize_t n = chardev_read(sc->cd, buf, (size_t)room);
	if (n > 0) {
		for (ssize_t i = 0; i < n; i++)
			rxfifo_put(sc, buf[i]);
		if (rxfifo_room(sc) == 0)
			uart_rx_stall(sc);
		uart_update_intr(sc);
	}
	/* n == -1: end of input; the chardev stops asking. */
	pthread_mutex_unlock(&sc->mtx);
}

static void uart_rx_resume_call(void *arg)
{
	struct uart_softc *sc = arg;
	pthread_mutex_lock(&sc->mtx);
	sc->rx_resume_queued = false;
	if (sc->rx_stalled && rxfifo_room(sc) > 0 && !(sc->mcr & MCR_LOOP)) {
		sc->rx_stalled = false;
		chardev_set_rx(sc->cd, true);
	}
	pthread_mutex_unlock(&sc->mtx);
}

/* Main thread: hand the TX ring to the backend, in order. */
static void uart_tx_flush(struct uart_softc *sc)
{
	pthread_mutex_lock(&sc->mtx);
	sc->tx_flush_queued = false;
	while (sc->have_out && tx_used(sc) > 0) {
		uint64_t used = tx_used(sc);
		size_t off = (size_t)(sc->txtail % UART_TXBUF_SZ);
		size_t n = UART_TXBUF_SZ - off;
		if (n > used)
			n = (size_t)used;
		if (n > UART_IO_CHUNK)
			n = UART_IO_CHUNK;
		/* Only this thread consumes: the region is stable without the lock. */
		const uint8_t *p = &sc->txbuf[off];
		pthread_mutex_unlock(&sc->mtx);
		ssize_t w = chardev_write(sc->cd, p, n);
		pthread_mutex_lock(&sc->mtx);
		if (w > 0) {
			bool thre_before = tx_thre(sc);
			sc->txtail += (uint64_t)w;
			if (!thre_before && tx_thre(sc)) {
				/* THR became empty: that is a THRE interrupt. */
				sc->thre_int_pending = true;
				uart_update_intr(sc);
			}
			continue;
		}
		if (w < 0)
			uart_tx_drop(sc);   /* nowhere to write: disconnected follows */
		break;                      /* w == 0: writable follows */
	}
	pthread_mutex_unlock(&sc->mtx);
}

static void uart_tx_flush_call(void *arg)
{
	uart_tx_flush(arg);
}

static void uart_cd_connected(void *arg)
{
	struct uart_softc *sc = arg;
	pthread_mutex_lock(&sc->mtx);
	sc->have_out = chardev_connected(sc->cd);
	sc->rx_stalled = false;   /* a new client starts with input on */
	pthread_mutex_unlock(&sc->mtx);
}

static void uart_cd_disconnected(void *arg)
{
	struct uart_softc *sc = arg;
	pthread_mutex_lock(&sc->mtx);
	uart_tx_drop(sc);
	pthread_mutex_unlock(&sc->mtx);
}

static const struct chardev_ops uart_cd_ops = {
	.readable = uart_cd_readable,
	.writable = uart_tx_flush_call,
	.connected = uart_cd_connected,
	.disconnected = uart_cd_disconnected,
};

/* ---- configuration and setup ---- */

static int uart_open_backend(struct uart_softc *sc, const char *value)
{
	char err[320];
	sc->cd = chardev_open(value, CHARDEV_F_STDIO, sc->name, &uart_cd_ops, sc, err, sizeof(err));
	if (!sc->cd) {
		log_err("config: lpc.%s.path: %s", sc->name, err);
		return -1;
	}
	sc->have_out = chardev_connected(sc->cd);
	return 0;
}

static struct uart_softc *uart_create(struct vmctx *ctx, int unit)
{
	struct uart_softc *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return NULL;
	sc->txbuf = malloc(UART_TXBUF_SZ);
	if (!sc->txbuf) {
		free(sc);
		return NULL;
	}
	pthread_mutex_init(&sc->mtx, NULL);
	sc->ctx = ctx;
	sc->name = uart_units[unit].name;
	sc->port = uart_units[unit].port;
	sc->irq = uart_units[unit].irq;
	uart_reset(sc);
	return sc;
}

/* Flush what is left, for up to *budget_ms in total.  Under sc->mtx. */
static void uart_drain_sync(struct uart_softc *sc, int *budget_ms)
{
	while (sc->have_out && tx_used(sc) > 0 && *budget_ms > 0) {
		size_t off = (size_t)(sc->txtail % UART_TXBUF_SZ);
		size_t n = UART_TXBUF_SZ - off;
		if (n > tx_used(sc))
			n = (size_t)tx_used(sc);
		ssize_t w = chardev_write_drain(sc->cd, &sc->txbuf[off], n, budget_ms);
		if (w <= 0)
			break;
		sc->txtail += (uint64_t)w;
	}
}

void uart_cleanup(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	int budget_ms = 2000;
	for (int i = 0; i < UART_NUNITS; i++) {
		struct uart_softc *sc = uart_sc[i];
		if (!sc)
			continue;
		pthread_mutex_lock(&sc->mtx);
		uart_drain_sync(sc, &budget_ms);
		pthread_mutex_unlock(&sc->mtx);
		chardev_close(sc->cd);
	}
}

static void uart_snapshot_register(struct uart_softc *sc, const char *unit);

static int uart_init_unit(struct vmctx *ctx, int unit, const char *value)
{
	struct uart_softc *sc = uart_create(ctx, unit);
	if (!sc)
		return -1;
	if (uart_open_backend(sc, value) != 0) {
		pthread_mutex_destroy(&sc->mtx);
		free(sc->txbuf);
		free(sc);
		return -1;
	}
	struct inout_port iop = {
		.name = sc->name, .port = sc->port, .size = 8,
		.handler = uart_io_handler, .arg = sc,
	};
	if (register_inout(&iop) != 0) {
		log_err("%s: cannot register I/O ports 0x%x-0x%x", sc->name, sc->port, sc->port + 7);
		return -1;
	}
	uart_sc[unit] = sc;
	uart_snapshot_register(sc, uart_units[unit].name);
	return 0;
}

static int uart_init(struct vmctx *ctx)
{
	static bool atexit_done;
	for (int unit = 0; unit < UART_NUNITS; unit++) {
		const char *value = get_config_valuef("lpc.%s.path", uart_units[unit].name);
		if (!value)
			continue;
		if (!atexit_done) {
			atexit(uart_cleanup);
			atexit_done = true;
		}
		if (uart_init_unit(ctx, unit, value) != 0)
			return -1;
	}
	return 0;
}
hyve_init(INIT_PLATFORM, uart_init)

/* ---- save/restore ---- */

/*
 * Register state and RX FIFO contents as a byte string, for checkpoints.
 * Backend state (the chardev, its clients, the TX ring) is not part of it:
 * connections are host-side and the ring is output already "on the wire".
 * The checkpoint issue will wire uart_save/uart_load to its device registry.
 *
 * Layout (version 1), multi-byte fields little-endian:
 *   0  'U' 'A'        magic
 *   2  u8  version    1
 *   3  u16 length     of the whole record
 *   5  u8  dll dlh ier lcr mcr lsr msr scr fcr
 *   14 u8  flags      bit 0 thre_int_pending
 *   15 u16 fifo size  1 or 16
 *   17 u16 fifo count
 *   19 u8[count]      FIFO bytes, oldest first
 */
#define UART_SAVE_VERSION 1
#define UART_SAVE_HDR     19
#define UART_SAVE_MAX     (UART_SAVE_HDR + UART_FIFOSZ)

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Bytes written, or 0 if buf is too small. */
static size_t uart_save(struct uart_softc *sc, uint8_t *buf, size_t len)
{
	pthread_mutex_lock(&sc->mtx);
	size_t total = UART_SAVE_HDR + (size_t)sc->rxfifo.num;
	if (len < total) {
		pthread_mutex_unlock(&sc->mtx);
		return 0;
	}
	buf[0] = 'U';
	buf[1] = 'A';
	buf[2] = UART_SAVE_VERSION;
	put_le16(buf + 3, (uint16_t)total);
	buf[5] = sc->dll;
	buf[6] = sc->dlh;
	buf[7] = sc->ier;
	buf[8] = sc->lcr;
	buf[9] = sc->mcr;
	buf[10] = sc->lsr;
	buf[11] = sc->msr;
	buf[12] = sc->scr;
	buf[13] = sc->fcr;
	buf[14] = sc->thre_int_pending ? 1 : 0;
	put_le16(buf + 15, (uint16_t)sc->rxfifo.size);
	put_le16(buf + 17, (uint16_t)sc->rxfifo.num);
	for (int i = 0; i < sc->rxfifo.num; i++)
		buf[UART_SAVE_HDR + i] = sc->rxfifo.buf[(sc->rxfifo.rindex + i) % sc->rxfifo.size];
	pthread_mutex_unlock(&sc->mtx);
	return total;
}

/* 0, or -1 if the record is malformed (state unchanged). */
static int uart_load(struct uart_softc *sc, const uint8_t *buf, size_t len)
{
	if (len < UART_SAVE_HDR || buf[0] != 'U' || buf[1] != 'A' || buf[2] != UART_SAVE_VERSION)
		return -1;
	size_t total = get_le16(buf + 3);
	unsigned size = get_le16(buf + 15), num = get_le16(buf + 17);
	if (total > len || total != UART_SAVE_HDR + num || (size != 1 && size != UART_FIFOSZ) ||
	    num > size || (buf[14] & ~1u))
		return -1;

	struct uart_deferred d = { false, false };
	pthread_mutex_lock(&sc->mtx);
	sc->dll = buf[5];
	sc->dlh = buf[6];
	sc->ier = buf[7] & IER_MASK;
	sc->lcr = buf[8];
	sc->mcr = buf[9] & MCR_MASK;
	sc->lsr = buf[10] & LSR_OE;
	sc->msr = buf[11];
	sc->scr = buf[12];
	sc->fcr = buf[13] & (FCR_ENABLE | FCR_DMA | FCR_RX_MASK);
	sc->thre_int_pending = buf[14] & 1;
	rxfifo_reset(sc, (int)size);
	for (unsigned i = 0; i < num; i++)
		rxfifo_put(sc, buf[UART_SAVE_HDR + i]);
	uart_check_rx_resume(sc, &d);
	uart_update_intr(sc);
	pthread_mutex_unlock(&sc->mtx);
	uart_run_deferred(sc, &d);
	return 0;
}

static int uart_snap_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	uint8_t buf[UART_SAVE_MAX];
	size_t n = uart_save(arg, buf, sizeof(buf));
	if (n == 0) {
		snprintf(err, errlen, "UART state does not fit");
		return -1;
	}
	sb_put(out, buf, n);
	return 0;
}

static int uart_snap_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	size_t n = sr_left(in);
	if (version != UART_SAVE_VERSION || uart_load(arg, in->p + in->off, n) != 0) {
		snprintf(err, errlen, "UART state (version %u, %zu bytes) is not valid", version, n);
		return -1;
	}
	in->off += n;
	return 0;
}

static const struct snapshot_ops uart_snapshot_ops = {
	.version = UART_SAVE_VERSION, .save = uart_snap_save, .load = uart_snap_load,
};

static void uart_snapshot_register(struct uart_softc *sc, const char *unit)
{
	char name[32];
	snprintf(name, sizeof(name), "uart.%s", unit);
	snapshot_register(name, &uart_snapshot_ops, sc);
}
