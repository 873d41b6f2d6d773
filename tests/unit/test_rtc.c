/*
 * Unit tests for devices/rtc.c, without /dev/kvm.
 *
 * The device file is #included so the tests can reach its static state,
 * replace its clocks with fake ones and call its save/load functions; the
 * core functions it calls are faked below.  Build and run (from the
 * repository root):
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -I. \
 *      tests/unit/test_rtc.c core/snapshot.c -o /tmp/test_rtc && /tmp/test_rtc
 *
 * One line per check ("ok - ..." / "FAIL - ..."), exit status 1 on failure.
 * test-sources: core/snapshot.c
 */
#include "../../devices/rtc.c"

#include <stdarg.h>
#include <stdio.h>

/* ---- reporting ---- */

static int nchecks, nfailed;

static void check(bool ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(bool ok, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	nchecks++;
	if (ok) {
		printf("ok - %s\n", msg);
	} else {
		nfailed++;
		printf("FAIL - %s (test_rtc.c:%d)\n", msg, line);
	}
	fflush(stdout);
}
#define CHECK(cond, ...) check((cond), __LINE__, __VA_ARGS__)

/* ---- fakes of the core ---- */

void logmsg(enum log_level lvl, const char *fmt, ...)
{
	(void)lvl;
	if (!getenv("TEST_VERBOSE"))
		return;
	va_list ap;
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

static bool cfg_localtime_set, cfg_localtime;

bool get_config_bool_default(const char *path, bool def)
{
	if (strcmp(path, "rtc.use_localtime") == 0 && cfg_localtime_set)
		return cfg_localtime;
	return def;
}

static uint64_t fake_lowmem, fake_highmem;
uint64_t vm_get_lowmem_size(struct vmctx *ctx) { (void)ctx; return fake_lowmem; }
uint64_t vm_get_highmem_size(struct vmctx *ctx) { (void)ctx; return fake_highmem; }

static struct inout_port port70;
static int nregistered;

static void use_sc(struct rtc_softc *sc);

int register_inout(const struct inout_port *iop)
{
	port70 = *iop;
	use_sc(iop->arg);
	nregistered++;
	return 0;
}

static int irq_level[24];
static int irq_calls;
static int acpi_alarms;   /* acpi_pm_rtc_alarm calls: RTC_STS and the S3 wake */

void acpi_pm_rtc_alarm(void)
{
	acpi_alarms++;
}

int vm_set_irq_line(struct vmctx *ctx, int gsi, int level)
{
	(void)ctx;
	irq_level[gsi] = level;
	irq_calls++;
	return 0;
}

struct mevent {
	bool is_timer, enabled;
	mevent_cb_t cb;
	void *arg;
	uint64_t first, period;
};
static struct mevent evs[16];
static int nevs;

struct mevent *mevent_add_timer(uint64_t first_ns, uint64_t period_ns, mevent_cb_t cb, void *arg)
{
	struct mevent *ev = &evs[nevs++];
	*ev = (struct mevent){ .is_timer = true, .enabled = true, .cb = cb, .arg = arg,
	                       .first = first_ns, .period = period_ns };
	return ev;
}

int mevent_timer_set(struct mevent *ev, uint64_t first_ns, uint64_t period_ns)
{
	ev->first = first_ns;
	ev->period = period_ns;
	return 0;
}

int mevent_enable(struct mevent *ev) { ev->enabled = true; return 0; }
int mevent_disable(struct mevent *ev) { ev->enabled = false; return 0; }

static struct { void (*fn)(void *); void *arg; } callq[64];
static int ncallq;

int mevent_call(void (*fn)(void *), void *arg)
{
	callq[ncallq].fn = fn;
	callq[ncallq].arg = arg;
	ncallq++;
	return 0;
}

static void run_callq(void)
{
	for (int i = 0; i < ncallq; i++)
		callq[i].fn(callq[i].arg);
	ncallq = 0;
}

/* Fake clocks. */
static uint64_t fmono;
static int64_t freal;
static uint64_t fake_mono(void) { return fmono; }
static int64_t fake_real(void) { return freal; }

/* ---- helpers ---- */

static struct vmctx *const CTX = (struct vmctx *)0x1;
#define NS NS_PER_SEC

/* Host time passes: both clocks advance. */
static void tick(uint64_t ns)
{
	fmono += ns;
	freal += (int64_t)ns;
}

/* Every RTC the tests create stays reachable (for LeakSanitizer). */
static struct rtc_softc *all_rtcs[32];
static int nrtcs;

static void use_sc(struct rtc_softc *sc)
{
	all_rtcs[nrtcs++] = sc;
	port70.arg = sc;
}

static uint8_t pin(uint16_t port)
{
	uint32_t v = 0;
	port70.handler(NULL, true, port, 1, &v, port70.arg);
	return (uint8_t)v;
}

static void pout(uint16_t port, uint8_t v)
{
	uint32_t val = v;
	port70.handler(NULL, false, port, 1, &val, port70.arg);
}

static uint8_t rd(uint8_t off)
{
	pout(0x70, off);
	return pin(0x71);
}

static void wr(uint8_t off, uint8_t v)
{
	pout(0x70, off);
	pout(0x71, v);
}

static int bcd(uint8_t v) { return (v >> 4) * 10 + (v & 0xf); }

static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
	                 .tm_hour = h, .tm_min = mi, .tm_sec = s };
	return (int64_t)timegm(&tm);
}

/* The timer the RTC armed, or NULL if none is armed. */
static struct mevent *armed_timer(void)
{
	struct rtc_softc *sc = port70.arg;
	return sc->timer && sc->timer->enabled ? sc->timer : NULL;
}

/* Let the armed timer expire once: advance the clock to it and run it. */
static bool fire_timer(void)
{
	struct mevent *ev = armed_timer();
	if (!ev)
		return false;
	fmono += ev->first;
	ev->cb(-1, ev->arg);
	return true;
}

/* Read the time registers; binary tells how to decode. */
struct rtime { int sec, min, hour, dow, dom, mon, year, cent; };

static struct rtime read_time(bool binary)
{
	struct rtime t;
	int (*d)(uint8_t) = bcd;
	uint8_t r[8] = { rd(0), rd(2), rd(4), rd(6), rd(7), rd(8), rd(9), rd(0x32) };
	if (binary) {
		t = (struct rtime){ r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] };
	} else {
		t = (struct rtime){ d(r[0]), d(r[1]), d(r[2]), d(r[3]), d(r[4]), d(r[5]), d(r[6]), d(r[7]) };
	}
	return t;
}

static bool time_matches(struct rtime t, time_t host)
{
	struct tm tm;
	gmtime_r(&host, &tm);
	return t.sec == tm.tm_sec && t.min == tm.tm_min && t.hour == tm.tm_hour &&
	       t.dow == tm.tm_wday + 1 && t.dom == tm.tm_mday && t.mon == tm.tm_mon + 1 &&
	       t.year == tm.tm_year % 100 && t.cent == (tm.tm_year + 1900) / 100;
}

/* Compare with the real host clock, retrying across a second boundary. */
static bool matches_host_clock(bool binary)
{
	for (int i = 0; i < 5; i++) {
		time_t t0 = time(NULL);
		struct rtime t = read_time(binary);
		time_t t1 = time(NULL);
		if (t0 == t1)
			return time_matches(t, t0);
	}
	return false;
}

/* ---- tests ---- */

static void test_host_clock(void)
{
	fake_lowmem = 256ULL << 20;
	fake_highmem = 0;
	CHECK(rtc_init(CTX) == 0 && nregistered == 1 && port70.port == 0x70 && port70.size == 2,
	      "init: ports 0x70-0x71 registered");
	CHECK(nevs == 0, "init: no timer while no interrupt is enabled");
	CHECK(rd(RTC_REG_A) == 0x26 && rd(RTC_REG_B) == RTCSB_24HR && rd(RTC_REG_D) == RTCSD_VRT,
	      "init: reg A 0x26, reg B 24h BCD, reg D VRT");
	CHECK(matches_host_clock(false), "BCD time and date match the host clock (UTC)");
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_BIN);
	CHECK(matches_host_clock(true), "binary time and date match the host clock");
	wr(RTC_REG_B, RTCSB_24HR);
}

static struct rtc_softc *new_rtc_at(int64_t secs)
{
	freal = secs * NS;
	struct rtc_softc *sc = rtc_create(CTX, false);
	use_sc(sc);
	return sc;
}

static void test_formats(void)
{
	fmono = 1000 * NS;
	new_rtc_at(utc(2024, 2, 29, 23, 59, 58));
	struct rtime t = read_time(false);
	CHECK(t.sec == 58 && t.min == 59 && t.hour == 23 && t.dom == 29 && t.mon == 2 && t.year == 24 &&
	      t.cent == 20 && t.dow == 5, "fake clock: 2024-02-29 23:59:58 Thursday, BCD");
	CHECK(rd(RTC_SEC) == 0x58 && rd(RTC_YEAR) == 0x24 && rd(RTC_CENTURY) == 0x20, "BCD encoding of sec, year, century");
	fmono += 2 * NS;
	t = read_time(false);
	CHECK(t.sec == 0 && t.min == 0 && t.hour == 0 && t.dom == 1 && t.mon == 3 && t.dow == 6,
	      "two seconds later: 2024-03-01 00:00:00 Friday");

	wr(RTC_REG_B, 0);                  /* 12 hour, BCD */
	CHECK(rd(RTC_HOUR) == 0x12, "12h BCD: midnight reads 12 AM (0x12)");
	fmono += 13 * 3600 * NS;
	CHECK(rd(RTC_HOUR) == 0x81, "12h BCD: 13:00 reads 1 PM (0x81)");
	wr(RTC_REG_B, RTCSB_BIN);          /* 12 hour, binary */
	CHECK(rd(RTC_HOUR) == 0x81, "12h binary: 13:00 reads 0x81");
	fmono -= 1 * 3600 * NS;
	CHECK(rd(RTC_HOUR) == 0x8c, "12h binary: noon reads 12 PM (0x8c)");
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_BIN);
	CHECK(rd(RTC_HOUR) == 12 && rd(RTC_YEAR) == 24 && rd(RTC_CENTURY) == 20, "24h binary: 12, year 24, century 20");
	wr(RTC_REG_B, RTCSB_24HR);

	/* UIP: set in the last 244 us before each update. */
	struct rtc_softc *sc = port70.arg;
	uint64_t base = fmono - (uint64_t)rtc_phase(sc, fmono);   /* start of this second */
	fmono = base + NS - 100000;
	CHECK(rd(RTC_REG_A) == (0x26 | RTCSA_UIP), "UIP set 100 us before the update");
	fmono = base + NS - 300000;
	CHECK(rd(RTC_REG_A) == 0x26, "UIP clear 300 us before the update");
	fmono = base + NS / 2;
	CHECK(rd(RTC_REG_A) == 0x26, "UIP clear mid-second");
	fmono = base + NS - 100000;
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_SET);
	CHECK(!(rd(RTC_REG_A) & RTCSA_UIP), "UIP clear while SET halts updates");
	wr(RTC_REG_B, RTCSB_24HR);

	/* Reg C/D read-only, D reads VRT. */
	(void)rd(RTC_REG_C);
	wr(RTC_REG_D, 0x00);
	wr(RTC_REG_C, 0xff);
	CHECK(rd(RTC_REG_D) == 0x80 && rd(RTC_REG_C) == 0x00, "reg C and D ignore writes; D reads 0x80");

	/* Index port: NMI mask bit kept as state; word access. */
	pout(0x70, 0x80 | 0x0d);
	CHECK(pin(0x70) == 0x8d && pin(0x71) == 0x80, "port 0x70 reads back index with NMI bit; data is reg D");
	uint32_t w = 0x5540;
	port70.handler(NULL, false, 0x70, 2, &w, port70.arg);
	CHECK(rd(0x40) == 0x55, "outw 0x70 writes index and data (CMOS 0x40 = 0x55)");
	wr(0x7f, 0xaa);
	CHECK(rd(0x7f) == 0xaa, "NVRAM byte 0x7f round trip");
}

static void test_guest_set_time(void)
{
	fmono = 5000 * NS + 123456789;
	new_rtc_at(utc(2024, 1, 1, 0, 0, 0));

	wr(RTC_REG_B, RTCSB_24HR | RTCSB_SET);
	wr(RTC_SEC, 0x56);
	wr(RTC_MIN, 0x34);
	wr(RTC_HOUR, 0x12);
	wr(RTC_DOM, 0x15);
	wr(RTC_MONTH, 0x06);
	wr(RTC_YEAR, 0x30);
	wr(RTC_CENTURY, 0x20);
	fmono += 5 * NS;
	struct rtime t = read_time(false);
	CHECK(t.sec == 56 && t.min == 34 && t.hour == 12, "SET halts updates: written time stays 12:34:56");
	wr(RTC_REG_B, RTCSB_24HR);
	t = read_time(false);
	CHECK(t.sec == 56 && t.min == 34 && t.hour == 12 && t.dom == 15 && t.mon == 6 && t.year == 30 &&
	      t.cent == 20 && t.dow == 7, "after SET clears: 2030-06-15 12:34:56, Saturday");
	fmono += NS;
	t = read_time(false);
	CHECK(t.sec == 57 && t.min == 34, "guest clock advances from the written time (12:34:57)");
	fmono += 3600 * NS;
	t = read_time(false);
	CHECK(t.hour == 13 && t.min == 34 && t.sec == 57, "an hour later: 13:34:57");

	wr(RTC_MIN, 0x00);
	t = read_time(false);
	CHECK(t.hour == 13 && t.min == 0 && t.sec == 57, "minute written without SET takes effect at once");
	fmono += NS;
	CHECK(bcd(rd(RTC_SEC)) == 58 && bcd(rd(RTC_MIN)) == 0, "and the clock keeps running from it");

	wr(RTC_REG_B, RTCSB_24HR | RTCSB_SET);
	wr(RTC_MONTH, 0x13);
	wr(RTC_REG_B, RTCSB_24HR);
	t = read_time(false);
	CHECK(t.mon == 6 && t.dom == 15 && t.hour == 13, "an invalid month is ignored: the clock goes on");

	/* Divider reset stops the clock; leaving it, the first update is 500 ms later. */
	uint8_t s0 = rd(RTC_SEC);
	wr(RTC_REG_A, 0x76);
	fmono += 10 * NS;
	CHECK(rd(RTC_SEC) == s0, "divider in reset: time stands still");
	wr(RTC_REG_A, 0x26);
	fmono += 400000000;
	CHECK(rd(RTC_SEC) == s0, "400 ms after leaving reset: no update yet");
	fmono += 200000000;
	CHECK(bcd(rd(RTC_SEC)) == bcd(s0) + 1, "600 ms after: one update");

	/* SET clears UIE. */
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_UIE | RTCSB_SET);
	CHECK(rd(RTC_REG_B) == (RTCSB_24HR | RTCSB_SET), "writing SET clears UIE");
	wr(RTC_REG_B, RTCSB_24HR);
	run_callq();
}

static void test_periodic(void)
{
	CHECK(rtc_rate_period_ns(0) == 0, "rate 0: periodic interrupt off");
	CHECK(rtc_rate_period_ns(1) == 3906250 && rtc_rate_period_ns(2) == 7812500,
	      "rates 1, 2: 256 Hz (3.90625 ms), 128 Hz (7.8125 ms)");
	CHECK(rtc_rate_period_ns(3) == 122070 && rtc_rate_hz(3) == 8192, "rate 3: 8192 Hz (122.07 us)");
	CHECK(rtc_rate_period_ns(6) == 976562 && rtc_rate_hz(6) == 1024, "rate 6: 1024 Hz (976.56 us)");
	CHECK(rtc_rate_period_ns(15) == 500000000 && rtc_rate_hz(15) == 2, "rate 15: 2 Hz (500 ms)");

	fmono = 7000 * NS + 100000000;     /* 7000.1 s */
	struct rtc_softc *sc = new_rtc_at(utc(2024, 5, 5, 5, 5, 5));
	wr(RTC_REG_A, 0x2f);               /* 2 Hz */
	run_callq();
	CHECK(armed_timer() == NULL, "PIE off: no timer even with a rate set");
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_PIE);
	CHECK(ncallq == 1, "enabling PIE queues a timer update on the main thread");
	run_callq();
	struct mevent *ev = armed_timer();
	CHECK(ev && ev->first == 400000000 && ev->period == 500000000,
	      "2 Hz: timer due at the next 500 ms tick (%llu ns), period 500 ms",
	      ev ? (unsigned long long)ev->first : 0ULL);
	CHECK(irq_level[8] == 0, "IRQ 8 low before the first tick");
	fire_timer();
	CHECK(sc->cmos[RTC_REG_C] == (RTCIR_IRQF | RTCIR_PF) && irq_level[8] == 1,
	      "tick: reg C = IRQF|PF, IRQ 8 asserted");
	CHECK(armed_timer() == NULL, "IRQF latched with PF: timer paused until reg C is read");
	CHECK(rd(RTC_REG_C) == (RTCIR_IRQF | RTCIR_PF), "reg C read returns IRQF|PF");
	CHECK(irq_level[8] == 0, "reading reg C deasserts IRQ 8");
	CHECK(rd(RTC_REG_C) == 0, "and clears it");
	CHECK(ncallq == 1, "reading reg C queues re-arming the timer");
	run_callq();
	ev = armed_timer();
	CHECK(ev && ev->first == 500000000, "timer re-armed for the next tick");

	int irqs = 0;
	uint64_t start = fmono;
	while (fmono - start < 10 * NS) {
		fire_timer();
		if (irq_level[8]) {
			irqs++;
			(void)rd(RTC_REG_C);
			run_callq();
		}
	}
	CHECK(irqs == 20, "2 Hz for 10 s: 20 interrupts (%d)", irqs);

	wr(RTC_REG_A, 0x23);               /* 8192 Hz */
	run_callq();
	ev = armed_timer();
	CHECK(ev && ev->period == 122070, "8192 Hz: timer period 122070 ns");
	(void)rd(RTC_REG_C);
	run_callq();
	irqs = 0;
	start = fmono;
	int fires = 0;
	while (fmono - start < NS && fires < 20000) {
		if (!fire_timer())
			break;
		fires++;
		if (irq_level[8]) {
			irqs++;
			(void)rd(RTC_REG_C);
			run_callq();
		}
	}
	CHECK(irqs >= 8191 && irqs <= 8193, "8192 Hz for 1 s: %d interrupts, no drift", irqs);

	wr(RTC_REG_B, RTCSB_24HR);
	run_callq();
	CHECK(armed_timer() == NULL, "PIE cleared: timer stopped");
	(void)rd(RTC_REG_C);
	fmono += NS;
	uint8_t c = rd(RTC_REG_C);
	CHECK((c & RTCIR_PF) && !(c & RTCIR_IRQF) && irq_level[8] == 0,
	      "PF still reported when polled without PIE, no IRQF or IRQ (0x%02x)", c);
	CHECK(rd(RTC_REG_C) == 0, "polled reg C read clears it");

	/* Flag pending, then its enable set: IRQF and the line follow at once. */
	fmono += NS;
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_PIE);
	CHECK(irq_level[8] == 1 && (sc->cmos[RTC_REG_C] & RTCIR_IRQF), "enabling PIE with PF pending asserts IRQ 8");
	wr(RTC_REG_B, RTCSB_24HR);
	CHECK(irq_level[8] == 0, "disabling PIE again deasserts it");
	run_callq();
	(void)rd(RTC_REG_C);
}

static void test_update_and_alarm(void)
{
	fmono = 9000 * NS;
	freal = utc(2024, 7, 1, 10, 0, 0) * NS + 250000000;   /* 10:00:00.25 */
	struct rtc_softc *sc = rtc_create(CTX, false);
	use_sc(sc);
	wr(RTC_REG_A, 0x20);               /* no periodic rate: PF stays out of reg C */
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_UIE);
	run_callq();
	struct mevent *ev = armed_timer();
	CHECK(ev && ev->first == 750000000, "UIE: timer due at the next second boundary (750 ms)");
	fire_timer();
	CHECK(rd(RTC_REG_C) == (RTCIR_IRQF | RTCIR_UF) && bcd(rd(RTC_SEC)) == 1,
	      "update-ended interrupt at 10:00:01 (reg C 0x90)");
	run_callq();
	fire_timer();
	CHECK(irq_level[8] == 1 && rtc_phase(sc, fmono) == 0, "and again one second later");
	(void)rd(RTC_REG_C);
	run_callq();

	/* Alarm at 10:00:05. */
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_AIE);
	wr(RTC_SEC_ALARM, 0x05);
	wr(RTC_MIN_ALARM, 0x00);
	wr(RTC_HOUR_ALARM, 0x10);
	run_callq();
	fire_timer();   /* 10:00:03 */
	fire_timer();   /* 10:00:04 */
	uint8_t c = sc->cmos[RTC_REG_C];
	CHECK((c & RTCIR_UF) && !(c & RTCIR_AF) && irq_level[8] == 0,
	      "before the alarm: UF set but not enabled, no IRQ (0x%02x)", c);
	int acpi_before = acpi_alarms;
	fire_timer();   /* 10:00:05 */
	CHECK(acpi_alarms == acpi_before + 1, "the alarm is reported to ACPI once (RTC_STS, S3 wake): %d calls",
	      acpi_alarms - acpi_before);
	c = rd(RTC_REG_C);
	run_callq();
	CHECK(c == (RTCIR_IRQF | RTCIR_AF | RTCIR_UF) && bcd(rd(RTC_SEC)) == 5,
	      "alarm at 10:00:05: reg C = IRQF|AF|UF (0x%02x)", c);
	fire_timer();
	CHECK(!(sc->cmos[RTC_REG_C] & RTCIR_AF) && irq_level[8] == 0, "no alarm at 10:00:06");

	/* Don't-care hour and minute: fires at every :30. */
	wr(RTC_SEC_ALARM, 0x30);
	wr(RTC_MIN_ALARM, 0xc0);
	wr(RTC_HOUR_ALARM, 0xff);
	run_callq();
	int alarms = 0;
	for (int i = 0; i < 180; i++) {
		fire_timer();
		if (irq_level[8]) {
			alarms++;
			CHECK(bcd(rd(RTC_SEC)) == 30, "don't-care alarm fires at second 30");
			(void)rd(RTC_REG_C);
			run_callq();
		}
	}
	CHECK(alarms == 3, "don't-care hour/minute: 3 alarms in 3 minutes (%d)", alarms);

	/* Alarm matched while nobody looked: reported by a later reg C read. */
	wr(RTC_REG_B, RTCSB_24HR);
	run_callq();
	CHECK(armed_timer() == NULL, "no interrupt enabled: timer stopped");
	(void)rd(RTC_REG_C);
	fmono += 60 * NS;
	c = rd(RTC_REG_C);
	CHECK((c & (RTCIR_AF | RTCIR_UF)) == (RTCIR_AF | RTCIR_UF) && !(c & RTCIR_IRQF),
	      "polled: AF and UF after a minute, no IRQF (0x%02x)", c);
}

static void test_memory(void)
{
	fake_lowmem = 256ULL << 20;
	fake_highmem = 0;
	struct rtc_softc *sc = rtc_create(CTX, false);
	use_sc(sc);
	CHECK(rd(0x15) == 0x80 && rd(0x16) == 0x02, "256 MiB: base memory 640 KiB (0x0280)");
	CHECK(rd(0x17) == 0x00 && rd(0x18) == 0xfc && rd(0x30) == 0x00 && rd(0x31) == 0xfc,
	      "256 MiB: extended memory capped at 0xfc00 KiB (0x17/0x18, 0x30/0x31)");
	CHECK(rd(0x34) == 0x00 && rd(0x35) == 0x0f, "256 MiB: 240 MiB above 16 MiB = 0x0f00 x 64 KiB");
	CHECK(rd(0x5b) == 0 && rd(0x5c) == 0 && rd(0x5d) == 0, "256 MiB: nothing above 4 GiB");
	unsigned sum = 0;
	for (int i = 0x10; i <= 0x2d; i++)
		sum += rd((uint8_t)i);
	CHECK(rd(0x2e) == (sum >> 8) && rd(0x2f) == (sum & 0xff), "256 MiB: checksum 0x%04x at 0x2e/0x2f", sum);

	fake_lowmem = 3ULL << 30;
	fake_highmem = 2ULL << 30;
	sc = rtc_create(CTX, false);
	use_sc(sc);
	CHECK(rd(0x17) == 0x00 && rd(0x18) == 0xfc, "5 GiB: extended memory capped at 0xfc00");
	CHECK(rd(0x34) == 0x00 && rd(0x35) == 0xbf, "5 GiB: 3 GiB - 16 MiB = 0xbf00 x 64 KiB");
	CHECK(rd(0x5b) == 0x00 && rd(0x5c) == 0x80 && rd(0x5d) == 0x00, "5 GiB: 2 GiB above 4 GiB = 0x008000 x 64 KiB");
	sum = 0;
	for (int i = 0x10; i <= 0x2d; i++)
		sum += rd((uint8_t)i);
	CHECK(rd(0x2e) == (sum >> 8) && rd(0x2f) == (sum & 0xff), "5 GiB: checksum 0x%04x", sum);

	fake_lowmem = 32ULL << 20;
	fake_highmem = 0;
	sc = rtc_create(CTX, false);
	use_sc(sc);
	CHECK(rd(0x17) == 0x00 && rd(0x18) == 0x7c, "32 MiB: extended memory 31 MiB = 0x7c00 KiB");
	CHECK(rd(0x34) == 0x00 && rd(0x35) == 0x01, "32 MiB: 16 MiB above 16 MiB = 0x0100 x 64 KiB");
	fake_lowmem = 256ULL << 20;
}

static void test_save_restore(void)
{
	fmono = 20000 * NS;
	struct rtc_softc *sc = new_rtc_at(utc(2031, 12, 31, 23, 0, 0));
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_BIN);
	wr(RTC_SEC_ALARM, 7);
	wr(0x50, 0x42);
	wr(RTC_REG_A, 0x2f);
	tick(NS);
	(void)rd(RTC_REG_C);
	tick(NS);
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_BIN | RTCSB_PIE);   /* PF pending: IRQF, line high */
	pout(0x70, 0x80 | 0x0c);
	CHECK(irq_level[8] == 1, "before save: IRQ 8 asserted");
	run_callq();

	uint8_t buf[RTC_SAVE_SIZE + 8], buf2[RTC_SAVE_SIZE + 8];
	size_t n = rtc_save(sc, buf, sizeof(buf));
	CHECK(n == RTC_SAVE_SIZE && buf[0] == 'R' && buf[1] == 'T' && buf[2] == 1, "save: %zu bytes, magic, version 1", n);
	CHECK(rtc_save(sc, buf2, 100) == 0, "save: refuses a short buffer");
	int64_t off = (int64_t)get_le64(buf + 132);
	CHECK(off == 0, "save: guest clock offset from host realtime is 0 for an untouched clock");

	/* Restore on a "different host": other monotonic clock, 100 s later. */
	vm_set_irq_line(CTX, 8, 0);
	fmono = 50 * NS;
	freal += 100 * NS;
	struct rtc_softc *sc2 = rtc_create(CTX, false);
	use_sc(sc2);
	CHECK(rtc_load(sc2, buf, n) == 0, "load: accepted");
	CHECK(irq_level[8] == 1, "load: IRQ 8 re-asserted from the saved IRQF");
	run_callq();
	CHECK(armed_timer() == NULL, "load: timer paused while the saved IRQF is latched");
	CHECK(pin(0x70) == 0x8c, "load: index register with NMI bit restored");
	CHECK(sc2->cmos[RTC_SEC_ALARM] == 7 && sc2->cmos[0x50] == 0x42 && sc2->cmos[RTC_REG_A] == 0x2f &&
	      sc2->cmos[RTC_REG_B] == (RTCSB_24HR | RTCSB_BIN | RTCSB_PIE) &&
	      sc2->cmos[RTC_REG_C] == (RTCIR_IRQF | RTCIR_PF | RTCIR_UF),
	      "load: CMOS bytes and reg C (IRQF|PF|UF) restored (0x%02x)", sc2->cmos[RTC_REG_C]);
	CHECK(rd(RTC_REG_C) == (RTCIR_IRQF | RTCIR_PF | RTCIR_UF) && irq_level[8] == 0,
	      "load: reg C read clears the restored IRQ");
	run_callq();
	CHECK(armed_timer() != NULL, "load: periodic timer runs again for the saved PIE");
	struct rtime t = read_time(true);
	CHECK(t.hour == 23 && t.min == 1 && t.sec == 42 && t.dom == 31 && t.year == 31,
	      "load: clock continues from the host clock (23:01:42 = saved 23:00:02 + 100 s)");
	CHECK(rtc_save(sc2, buf2, sizeof(buf2)) == RTC_SAVE_SIZE && (int64_t)get_le64(buf2 + 132) == off,
	      "save after load: same clock offset");

	uint8_t bad[RTC_SAVE_SIZE];
	memcpy(bad, buf, RTC_SAVE_SIZE);
	bad[2] = 9;
	CHECK(rtc_load(sc2, bad, RTC_SAVE_SIZE) == -1, "load rejects an unknown version");
	CHECK(rtc_load(sc2, buf, RTC_SAVE_SIZE - 1) == -1, "load rejects a truncated record");
	bad[2] = 1;
	bad[0] = 'X';
	CHECK(rtc_load(sc2, bad, RTC_SAVE_SIZE) == -1, "load rejects a bad magic");

	/* A guest-set clock keeps its offset across save/restore. */
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_BIN | RTCSB_SET);
	wr(RTC_YEAR, 40);
	wr(RTC_REG_B, RTCSB_24HR | RTCSB_BIN);
	n = rtc_save(sc2, buf, sizeof(buf));
	freal += 10 * NS;
	fmono += 10 * NS;
	struct rtc_softc *sc3 = rtc_create(CTX, false);
	use_sc(sc3);
	rtc_load(sc3, buf, n);
	t = read_time(true);
	CHECK(t.year == 40 && t.min == 1 && t.sec == 52, "load: guest-set year 2040 kept, clock advanced 10 s (%02d:%02d:%02d year %d)",
	      t.hour, t.min, t.sec, t.year);
	run_callq();
}

static void test_localtime(void)
{
	setenv("TZ", "EST5", 1);
	tzset();
	fmono = 30000 * NS;
	freal = utc(2024, 1, 10, 12, 0, 0) * NS;
	cfg_localtime_set = true;
	cfg_localtime = true;
	CHECK(rtc_init(CTX) == 0, "init with rtc.use_localtime=true");
	struct rtime t = read_time(false);
	CHECK(t.hour == 7 && t.min == 0, "local time: 12:00 UTC reads 07:00 in EST5");
	cfg_localtime = false;
	CHECK(rtc_init(CTX) == 0, "init with rtc.use_localtime=false");
	t = read_time(false);
	CHECK(t.hour == 12, "UTC: 12:00 reads 12:00");
	/* Unset: local time, as bhyve (-u asks for UTC). */
	cfg_localtime_set = false;
	CHECK(rtc_init(CTX) == 0, "init without rtc.use_localtime");
	t = read_time(false);
	CHECK(t.hour == 7, "the default is local time: 12:00 UTC reads 07:00 in EST5");
	run_callq();
}

int main(void)
{
	setenv("TZ", "UTC", 1);
	tzset();
	test_host_clock();
	rtc_mono_ns = fake_mono;
	rtc_real_ns = fake_real;
	test_formats();
	test_guest_set_time();
	test_periodic();
	test_update_and_alarm();
	test_memory();
	test_save_restore();
	test_localtime();
	printf("%d checks, %d failed\n", nchecks, nfailed);
	return nfailed ? 1 : 0;
}
