/*
 * MC146818 real-time clock and CMOS RAM at ports 0x70 (index; bit 7 is the
 * NMI mask, kept as readable state) and 0x71 (data), IRQ 8.  bhyve's
 * vrtc.c and the datasheet are the behavioural model.
 *
 * Time keeping.  The guest's clock is "host monotonic time + base_ns",
 * in nanoseconds since the epoch, read as local time (bhyve's default;
 * the offset is added once, at start) or as UTC with -u
 * (rtc.use_localtime=false).  Registers
 * 0-9 and the century byte (0x32) are computed from it when read, in BCD
 * or binary (reg B DM) and 12 or 24 hour (reg B 24/12) format.  A guest
 * that writes them moves base_ns: its clock then runs from the new value.
 * Reg B SET (or a divider held in reset) stops updates: the registers keep
 * the values written, and clearing SET restarts the clock from them.
 *
 * Interrupts.  Reg C's flags are computed lazily from the clock: UF when a
 * second boundary passed, AF when the time at one of those boundaries
 * matched the alarm (0xC0-0xFF is "don't care"), PF when a tick of the
 * periodic rate (reg A RS, 2 Hz .. 8192 Hz) passed, since the last look.
 * IRQF is set when a flag and its enable (PIE/AIE/UIE) are both set; the
 * IRQ 8 line follows IRQF, and reading reg C clears both.  A main-thread
 * timer runs only while one of PIE/AIE/UIE is enabled, to raise the flags
 * on time; without it reg C still reports them when read.
 *
 * The CMOS memory-size bytes and checksum are filled in at start from the
 * VM's memory layout.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/config.h"
#include "../core/init.h"
#include "../core/inout.h"
#include "../core/log.h"
#include "../core/mevent.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "acpi_pm.h"

#define RTC_PORT_INDEX 0x70
#define RTC_PORT_DATA  0x71
#define RTC_IRQ        8

/* CMOS offsets. */
#define RTC_SEC       0x00
#define RTC_SEC_ALARM 0x01
#define RTC_MIN       0x02
#define RTC_MIN_ALARM 0x03
#define RTC_HOUR      0x04
#define RTC_HOUR_ALARM 0x05
#define RTC_DOW       0x06
#define RTC_DOM       0x07
#define RTC_MONTH     0x08
#define RTC_YEAR      0x09
#define RTC_REG_A     0x0a
#define RTC_REG_B     0x0b
#define RTC_REG_C     0x0c
#define RTC_REG_D     0x0d
#define RTC_BASEMEM_LO 0x15
#define RTC_BASEMEM_HI 0x16
#define RTC_EXTMEM_LO  0x17
#define RTC_EXTMEM_HI  0x18
#define RTC_CKSUM_HI   0x2e
#define RTC_CKSUM_LO   0x2f
#define RTC_EXTMEM2_LO 0x30
#define RTC_EXTMEM2_HI 0x31
#define RTC_CENTURY    0x32
#define RTC_MEM16M_LO  0x34
#define RTC_MEM16M_HI  0x35
#define RTC_HIMEM_LO   0x5b
#define RTC_HIMEM_MID  0x5c
#define RTC_HIMEM_HI   0x5d

#define RTC_CMOS_SIZE 128

/* Reg A */
#define RTCSA_UIP     0x80
#define RTCSA_DIVIDER 0x70
#define RTCSA_DV_32K  0x20    /* 32.768 kHz time base: the only one that runs */
#define RTCSA_RATE    0x0f
/* Reg B */
#define RTCSB_SET     0x80
#define RTCSB_PIE     0x40
#define RTCSB_AIE     0x20
#define RTCSB_UIE     0x10
#define RTCSB_SQWE    0x08
#define RTCSB_BIN     0x04    /* DM: binary, else BCD */
#define RTCSB_24HR    0x02
#define RTCSB_DSE     0x01
#define RTCSB_INTRS   (RTCSB_PIE | RTCSB_AIE | RTCSB_UIE)
/* Reg C: flags in the same bit positions as their enables in reg B. */
#define RTCIR_IRQF    0x80
#define RTCIR_PF      0x40
#define RTCIR_AF      0x20
#define RTCIR_UF      0x10
#define RTCIR_FLAGS   (RTCIR_PF | RTCIR_AF | RTCIR_UF)
/* Reg D */
#define RTCSD_VRT     0x80

#define NS_PER_SEC   1000000000LL
#define RTC_UIP_NS   244140LL        /* UIP is set this long before an update */

struct rtc_softc {
	pthread_mutex_t mtx;
	struct vmctx *ctx;
	uint8_t cmos[RTC_CMOS_SIZE];
	uint8_t addr;                 /* last write to 0x70: index | NMI mask */
	int64_t base_ns;              /* guest ns = host monotonic ns + base_ns */
	int64_t last_upd_ns;          /* guest time UF/AF were last evaluated at */
	uint64_t last_per_mono;       /* host time PF was last evaluated at */
	bool irq;                     /* IRQ 8 asserted by us */
	bool alarm_for_acpi;          /* an alarm fired: tell ACPI (RTC_STS, S3 wake) outside mtx */
	struct mevent *timer;
	bool timer_on;
	bool resched_queued;
};

static struct rtc_softc *rtc_sc;

/* ---- clocks (replaceable by the unit tests) ---- */

static uint64_t rtc_host_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

static int64_t rtc_host_real_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static uint64_t (*rtc_mono_ns)(void) = rtc_host_mono_ns;
static int64_t (*rtc_real_ns)(void) = rtc_host_real_ns;

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t floor_mod(int64_t a, int64_t b)
{
	return a - floor_div(a, b) * b;
}

/* ---- state predicates ---- */

static bool rtc_divider_on(const struct rtc_softc *sc)
{
	return (sc->cmos[RTC_REG_A] & RTCSA_DIVIDER) == RTCSA_DV_32K;
}

/* Does the clock advance (updates enabled)? */
static bool rtc_running(const struct rtc_softc *sc)
{
	return rtc_divider_on(sc) && !(sc->cmos[RTC_REG_B] & RTCSB_SET);
}

/* Periodic interrupt frequency for a rate select value, 0 if off. */
static unsigned rtc_rate_hz(unsigned rate)
{
	if (rate == 0)
		return 0;
	if (rate <= 2)            /* 1, 2: 256 Hz and 128 Hz with a 32.768 kHz base */
		return 32768u >> (rate + 6);
	return 32768u >> (rate - 1);
}

static unsigned rtc_periodic_hz(const struct rtc_softc *sc)
{
	if (!rtc_divider_on(sc))
		return 0;
	return rtc_rate_hz(sc->cmos[RTC_REG_A] & RTCSA_RATE);
}

/* Nominal period of a rate select value in ns (rounded down), 0 if off. */
static uint64_t rtc_rate_period_ns(unsigned rate)
{
	unsigned hz = rtc_rate_hz(rate);
	return hz ? (uint64_t)NS_PER_SEC / hz : 0;
}

/* Number of periodic ticks at hz from time 0 to mono (no overflow). */
static uint64_t rtc_tick_index(uint64_t mono, unsigned hz)
{
	return (mono / NS_PER_SEC) * hz + ((mono % NS_PER_SEC) * hz) / NS_PER_SEC;
}

/* First host time at which tick k has happened. */
static uint64_t rtc_tick_time(uint64_t k, unsigned hz)
{
	return (k / hz) * NS_PER_SEC + ((k % hz) * NS_PER_SEC + hz - 1) / hz;
}

/* ---- register encoding ---- */

static uint8_t rtc_enc(const struct rtc_softc *sc, int v)
{
	if (sc->cmos[RTC_REG_B] & RTCSB_BIN)
		return (uint8_t)v;
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

/* -1 if not a valid value in the current format. */
static int rtc_dec(const struct rtc_softc *sc, uint8_t v)
{
	if (sc->cmos[RTC_REG_B] & RTCSB_BIN)
		return v;
	if ((v & 0x0f) > 9 || (v >> 4) > 9)
		return -1;
	return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t rtc_enc_hour(const struct rtc_softc *sc, int hour)
{
	if (sc->cmos[RTC_REG_B] & RTCSB_24HR)
		return rtc_enc(sc, hour);
	int h12 = hour % 12 ? hour % 12 : 12;
	return (uint8_t)(rtc_enc(sc, h12) | (hour >= 12 ? 0x80 : 0));
}

static int rtc_dec_hour(const struct rtc_softc *sc, uint8_t v)
{
	if (sc->cmos[RTC_REG_B] & RTCSB_24HR) {
		int h = rtc_dec(sc, v);
		return h >= 0 && h <= 23 ? h : -1;
	}
	int h = rtc_dec(sc, v & 0x7f);
	if (h < 1 || h > 12)
		return -1;
	return h % 12 + ((v & 0x80) ? 12 : 0);
}

/* Write the time registers for guest second 'secs'. */
static void rtc_secs_to_regs(struct rtc_softc *sc, int64_t secs)
{
	time_t t = (time_t)secs;
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		return;
	int year = tm.tm_year + 1900;
	sc->cmos[RTC_SEC] = rtc_enc(sc, tm.tm_sec);
	sc->cmos[RTC_MIN] = rtc_enc(sc, tm.tm_min);
	sc->cmos[RTC_HOUR] = rtc_enc_hour(sc, tm.tm_hour);
	sc->cmos[RTC_DOW] = rtc_enc(sc, tm.tm_wday + 1);
	sc->cmos[RTC_DOM] = rtc_enc(sc, tm.tm_mday);
	sc->cmos[RTC_MONTH] = rtc_enc(sc, tm.tm_mon + 1);
	sc->cmos[RTC_YEAR] = rtc_enc(sc, year % 100);
	sc->cmos[RTC_CENTURY] = rtc_enc(sc, year / 100);
}

/* Guest second from the time registers; false if they hold no valid time. */
static bool rtc_regs_to_secs(const struct rtc_softc *sc, int64_t *secs)
{
	int sec = rtc_dec(sc, sc->cmos[RTC_SEC]);
	int min = rtc_dec(sc, sc->cmos[RTC_MIN]);
	int hour = rtc_dec_hour(sc, sc->cmos[RTC_HOUR]);
	int mday = rtc_dec(sc, sc->cmos[RTC_DOM]);
	int mon = rtc_dec(sc, sc->cmos[RTC_MONTH]);
	int yy = rtc_dec(sc, sc->cmos[RTC_YEAR]);
	int cent = rtc_dec(sc, sc->cmos[RTC_CENTURY]);
	if (sec < 0 || sec > 59 || min < 0 || min > 59 || hour < 0 || mday < 1 || mday > 31 ||
	    mon < 1 || mon > 12 || yy < 0 || yy > 99)
		return false;
	if (cent < 19 || cent > 99)      /* no century byte: guess as the BIOSes do */
		cent = yy < 70 ? 20 : 19;
	struct tm tm = {
		.tm_sec = sec, .tm_min = min, .tm_hour = hour,
		.tm_mday = mday, .tm_mon = mon - 1, .tm_year = cent * 100 + yy - 1900,
	};
	time_t t = timegm(&tm);
	if (tm.tm_mday != mday)          /* Feb 30 and the like */
		return false;
	*secs = (int64_t)t;
	return true;
}

static bool rtc_is_time_reg(int off)
{
	return off == RTC_SEC || off == RTC_MIN || off == RTC_HOUR || off == RTC_DOW ||
	       off == RTC_DOM || off == RTC_MONTH || off == RTC_YEAR || off == RTC_CENTURY;
}

static bool rtc_alarm_match(uint8_t alarm, uint8_t v)
{
	return (alarm & 0xc0) == 0xc0 || alarm == v;
}

/* Would the alarm fire at the update to guest second 'secs'? */
static bool rtc_alarm_at(const struct rtc_softc *sc, int64_t secs)
{
	int64_t tod = floor_mod(secs, 86400);
	int hour = (int)(tod / 3600), min = (int)(tod / 60 % 60), sec = (int)(tod % 60);
	return rtc_alarm_match(sc->cmos[RTC_SEC_ALARM], rtc_enc(sc, sec)) &&
	       rtc_alarm_match(sc->cmos[RTC_MIN_ALARM], rtc_enc(sc, min)) &&
	       rtc_alarm_match(sc->cmos[RTC_HOUR_ALARM], rtc_enc_hour(sc, hour));
}

/* ---- interrupts ---- */

static void rtc_update_irq(struct rtc_softc *sc)
{
	uint8_t flags = sc->cmos[RTC_REG_C] & RTCIR_FLAGS;
	bool irqf = (flags & sc->cmos[RTC_REG_B] & RTCSB_INTRS) != 0;
	sc->cmos[RTC_REG_C] = (uint8_t)(flags | (irqf ? RTCIR_IRQF : 0));
	if (irqf != sc->irq) {
		sc->irq = irqf;
		vm_set_irq_line(sc->ctx, RTC_IRQ, irqf ? 1 : 0);
	}
}

/* Bring reg C's flags up to host time 'mono'. */
static void rtc_eval(struct rtc_softc *sc, uint64_t mono)
{
	uint8_t flags = 0;
	if (rtc_running(sc)) {
		int64_t now = (int64_t)mono + sc->base_ns;
		int64_t s0 = floor_div(sc->last_upd_ns, NS_PER_SEC);
		int64_t s1 = floor_div(now, NS_PER_SEC);
		if (s1 > s0) {
			flags |= RTCIR_UF;
			/* A day covers every alarm setting. */
			int64_t from = s1 - s0 > 86400 ? s1 - 86400 : s0;
			for (int64_t s = s1; s > from; s--)
				if (rtc_alarm_at(sc, s)) {
					flags |= RTCIR_AF;
					sc->alarm_for_acpi = true;
					break;
				}
		}
		if (now > sc->last_upd_ns)
			sc->last_upd_ns = now;
	}
	unsigned hz = rtc_periodic_hz(sc);
	if (hz && mono > sc->last_per_mono &&
	    rtc_tick_index(mono, hz) > rtc_tick_index(sc->last_per_mono, hz))
		flags |= RTCIR_PF;
	if (mono > sc->last_per_mono)
		sc->last_per_mono = mono;
	if (flags) {
		sc->cmos[RTC_REG_C] |= flags;
		rtc_update_irq(sc);
	}
}

static void rtc_timer_cb(int fd, void *arg);

/*
 * Main thread, under sc->mtx: arm the timer for the next event an enabled
 * interrupt needs, or stop it.  The timer is re-armed from the clock at
 * every expiry, so it never drifts from the guest's second boundaries.
 */
static void rtc_resched(struct rtc_softc *sc, uint64_t mono)
{
	uint8_t b = sc->cmos[RTC_REG_B], c = sc->cmos[RTC_REG_C];
	uint64_t next = UINT64_MAX, period = 0;
	unsigned hz = rtc_periodic_hz(sc);
	/*
	 * Every enabled flag already latched: nothing can change until the
	 * guest reads reg C (which re-arms us), so don't tick meanwhile.
	 */
	bool latched = (c & RTCIR_IRQF) && (c & b & RTCSB_INTRS) == (b & RTCSB_INTRS);
	if (!latched && (b & RTCSB_PIE) && hz) {
		next = rtc_tick_time(rtc_tick_index(mono, hz) + 1, hz);
		period = rtc_rate_period_ns(sc->cmos[RTC_REG_A] & RTCSA_RATE);
	}
	if (!latched && (b & (RTCSB_UIE | RTCSB_AIE)) && rtc_running(sc)) {
		int64_t now = (int64_t)mono + sc->base_ns;
		uint64_t t = mono + (uint64_t)(NS_PER_SEC - floor_mod(now, NS_PER_SEC));
		if (t < next)
			next = t;
		if (!period)
			period = NS_PER_SEC;
	}
	if (next == UINT64_MAX) {
		if (sc->timer_on) {
			/* mevent has no disarm: park the timerfd far away, then unwatch it. */
			mevent_timer_set(sc->timer, 1ULL << 62, 0);
			mevent_disable(sc->timer);
			sc->timer_on = false;
		}
		return;
	}
	uint64_t delay = next > mono ? next - mono : 1;
	if (!sc->timer) {
		sc->timer = mevent_add_timer(delay, period, rtc_timer_cb, sc);
		if (!sc->timer) {
			log_err("rtc: cannot create a timer: %s", strerror(errno));
			return;
		}
		sc->timer_on = true;
		return;
	}
	mevent_timer_set(sc->timer, delay, period);
	if (!sc->timer_on) {
		mevent_enable(sc->timer);
		sc->timer_on = true;
	}
}

static void rtc_timer_cb(int fd, void *arg)
{
	(void)fd;
	struct rtc_softc *sc = arg;
	pthread_mutex_lock(&sc->mtx);
	uint64_t mono = rtc_mono_ns();
	rtc_eval(sc, mono);
	rtc_resched(sc, mono);
	bool alarm = sc->alarm_for_acpi;
	sc->alarm_for_acpi = false;
	pthread_mutex_unlock(&sc->mtx);
	if (alarm)   /* on the main thread: an S3 wake waits for the parked vCPUs */
		acpi_pm_rtc_alarm();
}

static void rtc_resched_call(void *arg)
{
	struct rtc_softc *sc = arg;
	pthread_mutex_lock(&sc->mtx);
	sc->resched_queued = false;
	uint64_t mono = rtc_mono_ns();
	rtc_eval(sc, mono);
	rtc_resched(sc, mono);
	bool alarm = sc->alarm_for_acpi;
	sc->alarm_for_acpi = false;
	pthread_mutex_unlock(&sc->mtx);
	if (alarm)
		acpi_pm_rtc_alarm();
}

/* Under sc->mtx: does the timer need re-arming on the main thread? */
static bool rtc_want_resched(struct rtc_softc *sc)
{
	if (sc->resched_queued)
		return false;
	sc->resched_queued = true;
	return true;
}

static void rtc_queue_resched(struct rtc_softc *sc)
{
	if (mevent_call(rtc_resched_call, sc) != 0) {
		pthread_mutex_lock(&sc->mtx);
		sc->resched_queued = false;
		pthread_mutex_unlock(&sc->mtx);
	}
}

/* ---- clock control ---- */

/* Under sc->mtx: the registers show the current guest time. */
static void rtc_refresh(struct rtc_softc *sc, uint64_t mono)
{
	if (rtc_running(sc))
		rtc_secs_to_regs(sc, floor_div((int64_t)mono + sc->base_ns, NS_PER_SEC));
}

/*
 * Restart the clock from the time registers, keeping the divider chain's
 * phase within the second.  If they hold no valid time, the clock goes on
 * from where it was.
 */
static void rtc_restart_from_regs(struct rtc_softc *sc, uint64_t mono, int64_t phase_ns)
{
	int64_t secs;
	if (rtc_regs_to_secs(sc, &secs))
		sc->base_ns = secs * NS_PER_SEC + phase_ns - (int64_t)mono;
	else
		log_debug("rtc: guest wrote an invalid time; ignored");
	sc->last_upd_ns = (int64_t)mono + sc->base_ns;
}

static int64_t rtc_phase(const struct rtc_softc *sc, uint64_t mono)
{
	return floor_mod((int64_t)mono + sc->base_ns, NS_PER_SEC);
}

static void rtc_write_reg_a(struct rtc_softc *sc, uint8_t v, uint64_t mono)
{
	bool div_was_on = rtc_divider_on(sc);
	/* If this stops the clock, the registers keep the time it stopped at. */
	rtc_refresh(sc, mono);
	sc->cmos[RTC_REG_A] = v & (uint8_t)~RTCSA_UIP;
	if (rtc_divider_on(sc) && !div_was_on) {
		/* Out of divider reset: the first update comes 500 ms later. */
		if (rtc_running(sc))
			rtc_restart_from_regs(sc, mono, NS_PER_SEC / 2);
		else
			sc->base_ns = NS_PER_SEC / 2 - (int64_t)mono;
	}
	/* Periodic ticks restart from a fresh baseline when the rate changes. */
	sc->last_per_mono = mono;
}

static void rtc_write_reg_b(struct rtc_softc *sc, uint8_t v, uint64_t mono)
{
	bool was_running = rtc_running(sc);
	rtc_refresh(sc, mono);
	if (v & RTCSB_SET)
		v &= (uint8_t)~RTCSB_UIE;    /* datasheet: SET clears UIE */
	sc->cmos[RTC_REG_B] = v;
	if (!was_running && rtc_running(sc))
		rtc_restart_from_regs(sc, mono, rtc_phase(sc, mono));
	rtc_update_irq(sc);
}

static void rtc_write_time_reg(struct rtc_softc *sc, int off, uint8_t v, uint64_t mono)
{
	if (!rtc_running(sc)) {
		sc->cmos[off] = v;
		return;
	}
	/* Written while running: the clock jumps to the new value at once. */
	rtc_refresh(sc, mono);
	sc->cmos[off] = v;
	rtc_restart_from_regs(sc, mono, rtc_phase(sc, mono));
}

/* ---- port handlers ---- */

static uint8_t rtc_data_read(struct rtc_softc *sc, int off, uint64_t mono)
{
	switch (off) {
	case RTC_REG_A: {
		uint8_t a = sc->cmos[RTC_REG_A];
		if (rtc_running(sc) && rtc_phase(sc, mono) >= NS_PER_SEC - RTC_UIP_NS)
			a |= RTCSA_UIP;
		return a;
	}
	case RTC_REG_C: {
		uint8_t c = sc->cmos[RTC_REG_C];
		sc->cmos[RTC_REG_C] = 0;
		rtc_update_irq(sc);
		return c;
	}
	case RTC_REG_D:
		return RTCSD_VRT;
	default:
		if (rtc_is_time_reg(off))
			rtc_refresh(sc, mono);
		return sc->cmos[off];
	}
}

/* Returns true if the interrupt timer needs re-arming. */
static bool rtc_data_write(struct rtc_softc *sc, int off, uint8_t v, uint64_t mono)
{
	switch (off) {
	case RTC_REG_A:
		rtc_write_reg_a(sc, v, mono);
		return true;
	case RTC_REG_B:
		rtc_write_reg_b(sc, v, mono);
		return true;
	case RTC_REG_C:
	case RTC_REG_D:
		return false;            /* read-only */
	default:
		if (rtc_is_time_reg(off)) {
			rtc_write_time_reg(sc, off, v, mono);
			return true;
		}
		sc->cmos[off] = v;       /* alarms and NVRAM */
		return off == RTC_SEC_ALARM || off == RTC_MIN_ALARM || off == RTC_HOUR_ALARM;
	}
}

static int rtc_io_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes,
                          uint32_t *val, void *arg)
{
	(void)vcpu;
	struct rtc_softc *sc = arg;
	uint32_t out = 0;
	bool resched = false;

	pthread_mutex_lock(&sc->mtx);
	uint64_t mono = rtc_mono_ns();
	rtc_eval(sc, mono);
	/* outw 0x70 sets the index and writes the data port: byte by byte. */
	for (int i = 0; i < bytes; i++) {
		uint16_t p = (uint16_t)(port + i);
		uint8_t v = (uint8_t)(*val >> (8 * i)), r = 0xff;
		if (p == RTC_PORT_INDEX) {
			if (in)
				r = sc->addr;
			else
				sc->addr = v;
		} else if (p == RTC_PORT_DATA) {
			int off = sc->addr & 0x7f;
			/* Reading reg C with IRQF set: the timer may be paused. */
			if (in && off == RTC_REG_C && (sc->cmos[RTC_REG_C] & RTCIR_IRQF))
				resched = true;
			if (in)
				r = rtc_data_read(sc, off, mono);
			else if (rtc_data_write(sc, off, v, mono))
				resched = true;
		}
		out |= (uint32_t)r << (8 * i);
	}
	if (resched)
		resched = rtc_want_resched(sc);
	pthread_mutex_unlock(&sc->mtx);
	if (in)
		*val = out;
	if (resched)
		rtc_queue_resched(sc);
	return 0;
}

/* ---- setup ---- */

static void rtc_set_checksum(struct rtc_softc *sc)
{
	unsigned sum = 0;
	for (int i = 0x10; i <= 0x2d; i++)
		sum += sc->cmos[i];
	sc->cmos[RTC_CKSUM_HI] = (uint8_t)(sum >> 8);
	sc->cmos[RTC_CKSUM_LO] = (uint8_t)sum;
}

static void rtc_set_memsize(struct rtc_softc *sc, uint64_t lowmem, uint64_t highmem)
{
	const uint64_t k = 1024, m = 1024 * 1024;
	/* Base memory: 640 KiB. */
	sc->cmos[RTC_BASEMEM_LO] = (uint8_t)(640 & 0xff);
	sc->cmos[RTC_BASEMEM_HI] = (uint8_t)(640 >> 8);
	/* Extended memory between 1 MiB and 64 MiB, in KiB. */
	uint64_t ext = lowmem > m ? (lowmem - m) / k : 0;
	if (ext > 0xfc00)
		ext = 0xfc00;
	sc->cmos[RTC_EXTMEM_LO] = sc->cmos[RTC_EXTMEM2_LO] = (uint8_t)ext;
	sc->cmos[RTC_EXTMEM_HI] = sc->cmos[RTC_EXTMEM2_HI] = (uint8_t)(ext >> 8);
	/* Memory above 16 MiB up to the top of low memory, in 64 KiB units. */
	uint64_t m16 = lowmem > 16 * m ? (lowmem - 16 * m) / (64 * k) : 0;
	if (m16 > 0xffff)
		m16 = 0xffff;
	sc->cmos[RTC_MEM16M_LO] = (uint8_t)m16;
	sc->cmos[RTC_MEM16M_HI] = (uint8_t)(m16 >> 8);
	/* Memory above 4 GiB, in 64 KiB units. */
	uint64_t hi = highmem / (64 * k);
	if (hi > 0xffffff)
		hi = 0xffffff;
	sc->cmos[RTC_HIMEM_LO] = (uint8_t)hi;
	sc->cmos[RTC_HIMEM_MID] = (uint8_t)(hi >> 8);
	sc->cmos[RTC_HIMEM_HI] = (uint8_t)(hi >> 16);
	rtc_set_checksum(sc);
}

static struct rtc_softc *rtc_create(struct vmctx *ctx, bool localtime)
{
	struct rtc_softc *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return NULL;
	pthread_mutex_init(&sc->mtx, NULL);
	sc->ctx = ctx;
	uint64_t mono = rtc_mono_ns();
	int64_t real = rtc_real_ns();
	if (localtime) {
		time_t t = (time_t)floor_div(real, NS_PER_SEC);
		struct tm tm;
		if (localtime_r(&t, &tm))
			real += (int64_t)tm.tm_gmtoff * NS_PER_SEC;
	}
	sc->base_ns = real - (int64_t)mono;
	sc->last_upd_ns = real;
	sc->last_per_mono = mono;
	sc->cmos[RTC_REG_A] = RTCSA_DV_32K | 0x06;    /* 1024 Hz, as the BIOS leaves it */
	sc->cmos[RTC_REG_B] = RTCSB_24HR;
	sc->cmos[RTC_REG_C] = 0;
	sc->cmos[RTC_REG_D] = RTCSD_VRT;
	rtc_secs_to_regs(sc, floor_div(real, NS_PER_SEC));
	rtc_set_memsize(sc, vm_get_lowmem_size(ctx), vm_get_highmem_size(ctx));
	return sc;
}

static void rtc_snapshot_register(struct rtc_softc *sc);

static int rtc_init(struct vmctx *ctx)
{
	/* Local time unless -u (rtc.use_localtime=false), as bhyve. */
	bool localtime = get_config_bool_default("rtc.use_localtime", true);
	struct rtc_softc *sc = rtc_create(ctx, localtime);
	if (!sc)
		return -1;
	struct inout_port iop = {
		.name = "rtc", .port = RTC_PORT_INDEX, .size = 2,
		.handler = rtc_io_handler, .arg = sc,
	};
	if (register_inout(&iop) != 0)
		return -1;
	rtc_sc = sc;
	rtc_snapshot_register(sc);
	return 0;
}
hyve_init(INIT_PLATFORM, rtc_init)

/* ---- save/restore ---- */

/*
 * CMOS contents and clock state as a byte string, for checkpoints.  The
 * checkpoint issue will wire rtc_save/rtc_load to its device registry.
 *
 * Layout (version 1), multi-byte fields little-endian:
 *   0   'R' 'T'     magic
 *   2   u8  version 1
 *   3   u8  index   last write to port 0x70 (index | NMI mask)
 *   4   u8[128]     CMOS (time registers as of the save)
 *   132 i64         guest clock - host CLOCK_REALTIME, ns: on load the
 *                   guest clock goes on from the host's clock, so the time
 *                   that passed while saved is not lost
 */
#define RTC_SAVE_VERSION 1
#define RTC_SAVE_SIZE    140

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Bytes written, or 0 if buf is too small. */
static size_t rtc_save(struct rtc_softc *sc, uint8_t *buf, size_t len)
{
	if (len < RTC_SAVE_SIZE)
		return 0;
	pthread_mutex_lock(&sc->mtx);
	uint64_t mono = rtc_mono_ns();
	rtc_eval(sc, mono);
	rtc_refresh(sc, mono);
	buf[0] = 'R';
	buf[1] = 'T';
	buf[2] = RTC_SAVE_VERSION;
	buf[3] = sc->addr;
	memcpy(buf + 4, sc->cmos, RTC_CMOS_SIZE);
	put_le64(buf + 132, (uint64_t)((int64_t)mono + sc->base_ns - rtc_real_ns()));
	pthread_mutex_unlock(&sc->mtx);
	return RTC_SAVE_SIZE;
}

/* 0, or -1 if the record is malformed (state unchanged). */
static int rtc_load(struct rtc_softc *sc, const uint8_t *buf, size_t len)
{
	if (len < RTC_SAVE_SIZE || buf[0] != 'R' || buf[1] != 'T' || buf[2] != RTC_SAVE_VERSION)
		return -1;
	pthread_mutex_lock(&sc->mtx);
	uint64_t mono = rtc_mono_ns();
	sc->addr = buf[3];
	memcpy(sc->cmos, buf + 4, RTC_CMOS_SIZE);
	sc->cmos[RTC_REG_A] &= (uint8_t)~RTCSA_UIP;
	sc->cmos[RTC_REG_D] = RTCSD_VRT;
	sc->base_ns = rtc_real_ns() + (int64_t)get_le64(buf + 132) - (int64_t)mono;
	sc->last_upd_ns = (int64_t)mono + sc->base_ns;
	sc->last_per_mono = mono;
	rtc_update_irq(sc);
	bool resched = rtc_want_resched(sc);
	pthread_mutex_unlock(&sc->mtx);
	if (resched)
		rtc_queue_resched(sc);
	return 0;
}

static int rtc_snap_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	uint8_t buf[RTC_SAVE_SIZE];
	if (rtc_save(arg, buf, sizeof(buf)) != RTC_SAVE_SIZE) {
		snprintf(err, errlen, "RTC state does not fit");
		return -1;
	}
	sb_put(out, buf, sizeof(buf));
	return 0;
}

static int rtc_snap_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	size_t n = sr_left(in);
	if (version != RTC_SAVE_VERSION || n != RTC_SAVE_SIZE || rtc_load(arg, in->p + in->off, n) != 0) {
		snprintf(err, errlen, "RTC state (version %u, %zu bytes) is not valid", version, n);
		return -1;
	}
	in->off += n;
	return 0;
}

static const struct snapshot_ops rtc_snapshot_ops = {
	.version = RTC_SAVE_VERSION, .save = rtc_snap_save, .load = rtc_snap_load,
};

static void rtc_snapshot_register(struct rtc_softc *sc)
{
	snapshot_register("rtc", &rtc_snapshot_ops, sc);
}
