/*
 * test=s3 [wake=rtc]: ACPI S3, suspend to RAM and resume, as an OS does
 * it: the resume stub (s3stub.S) goes to S3_STUB_ADDR and becomes the FACS
 * firmware waking vector, a magic word stays in RAM, and PM1_CNT gets
 * SLP_TYP = 1 (the DSDT's \_S3) with SLP_EN.  hyve parks the vCPUs; then
 * `hyvectl --wakeup` (tests/test_guest.sh) or, with wake=rtc, the RTC
 * alarm 2 s later (AIE and PM1 RTC_EN set first) wakes the guest, and the
 * stub checks in real mode what a resume must have kept and set.
 */
#include "kernel.h"
#include "tests.h"

#define S3_STUB_ADDR 0x6000
#define PM1_STS 0x400
#define PM1_EN 0x402     /* word accesses only: a byte at 0x402 is the debug console */
#define PM1_CNT 0x404
#define PM1_RTC 0x0400
#define PM1_WAK 0x8000
#define SLP_TYP_S3 1
#define SLP_EN 0x2000

extern const u8 s3_stub_start[], s3_stub_end[], s3_stub_magic[], s3_stub_want[];

static u8 bcd_add(u8 bcd, int n, int mod)
{
	int v = ((bcd >> 4) * 10 + (bcd & 15) + n) % mod;
	return (u8)((v / 10) << 4 | v % 10);
}

/* Alarm at the RTC's time + 2 s (BCD, 24 h: hyve's defaults), AIE on. */
static void rtc_alarm_in_2s(void)
{
	while (cmos_read(0x0a) & 0x80)   /* update in progress */
		;
	u8 s = cmos_read(0x00), m = cmos_read(0x02), h = cmos_read(0x04);
	int carry_m = ((s >> 4) * 10 + (s & 15) + 2) >= 60;
	int carry_h = carry_m && m == 0x59;
	cmos_write(0x01, bcd_add(s, 2, 60));
	cmos_write(0x03, carry_m ? bcd_add(m, 1, 60) : m);
	cmos_write(0x05, carry_h ? bcd_add(h, 1, 24) : h);
	(void)cmos_read(0x0c);                       /* clear stale flags */
	cmos_write(0x0b, (u8)(cmos_read(0x0b) | 0x20)); /* AIE */
}

static void t_s3(void)
{
	const char *wake = cmdline_get("wake");
	bool rtc = wake && !strcmp(wake, "rtc");
	u64 facs = acpi_facs();
	if (!facs)
		test_fail("s3", "no FACS in the FADT");
	memcpy((void *)S3_STUB_ADDR, s3_stub_start, (u64)(s3_stub_end - s3_stub_start));
	*(volatile u32 *)(S3_STUB_ADDR + (s3_stub_magic - s3_stub_start)) = 0x53335a17;
	*(volatile u16 *)(S3_STUB_ADDR + (s3_stub_want - s3_stub_start)) = PM1_WAK | (rtc ? PM1_RTC : 0);
	*(volatile u32 *)(facs + 12) = S3_STUB_ADDR;   /* Firmware Waking Vector */
	outw(PM1_STS, 0xffff);                          /* clear every status bit */
	if (rtc) {
		outw(PM1_EN, PM1_RTC);
		rtc_alarm_in_2s();
	}
	printf("s3: sleeping (wake by %s)\n", rtc ? "the RTC alarm" : "hyvectl --wakeup");
	cli();
	outw(PM1_CNT, (u16)(SLP_TYP_S3 << 10 | SLP_EN));
	/* Real hardware never gets here: the resume starts at the waking vector. */
	for (volatile int i = 0; i < 1000000; i++)
		;
	test_fail("s3", "still running after SLP_EN (no S3?)");
}
GUEST_TEST(s3, t_s3);
