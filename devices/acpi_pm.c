/*
 * ACPI fixed hardware: PM1a event/control blocks, the PM timer and the
 * reset register (0xcf9), at the I/O ports the FADT announces.  ACPI is
 * always enabled (no SMI_CMD), so SCI_EN reads as set.  Sleeping in S5
 * powers off (exit 1); the reset register reboots (exit 0).  The fixed
 * power button (PM1 PWRBTN_STS/EN) is what SIGTERM presses: the SCI (ISA
 * IRQ 9, level) is high while an enabled status bit is set.
 *
 * S3 (when the DSDT offers \_S3, boot/firmware.c): SLP_EN parks the vCPUs
 * with RAM and device state kept; `hyvectl --wakeup`, the RTC alarm (with
 * RTC_EN) or the power button wakes them: WAK_STS is set and vCPU 0 starts
 * in real mode at the FACS firmware waking vector, as a BIOS resume does.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "../core/control.h"
#include "../core/exitcode.h"
#include "../core/init.h"
#include "../core/inout.h"
#include "../core/log.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "../core/vmstate.h"
#include "../vmm/vmm.h"
#include "acpi_pm.h"
#include "debugcon.h"

#define PM1_SCI_EN 0x0001
#define PM1_SLP_EN 0x2000
#define PM1_SLP_TYP(v) (((v) >> 10) & 7)
#define PM1_WAK_STS 0x8000
#define PM1_PWRBTN 0x0100   /* PWRBTN_STS in the status, PWRBTN_EN in the enable register */
#define PM1_RTC 0x0400      /* RTC_STS / RTC_EN */
#define FACS_WAKING_VECTOR 12

static struct {
	pthread_mutex_t lock;
	uint16_t sts, en, cnt;
	bool sci;            /* the level the SCI line was last set to */
	struct vmctx *ctx;
} pm = { PTHREAD_MUTEX_INITIALIZER, 0, 0, PM1_SCI_EN, false, NULL };

/* The SCI follows (status & enable); under pm.lock. */
static void sci_update(void)
{
	bool level = (pm.sts & pm.en) != 0;
	if (level != pm.sci && pm.ctx) {
		pm.sci = level;
		vm_set_irq_line(pm.ctx, ACPI_SCI_IRQ, level);
	}
}

bool acpi_pm_power_button(void)
{
	pthread_mutex_lock(&pm.lock);
	bool listening = (pm.en & PM1_PWRBTN) != 0;
	pm.sts |= PM1_PWRBTN;
	sci_update();
	pthread_mutex_unlock(&pm.lock);
	if (vcpus_suspended()) {   /* a sleeping PC wakes on its power button */
		char err[160];
		if (acpi_pm_wake("power button", err, sizeof(err)))
			log_warn("ACPI: %s", err);
	}
	return listening;
}

int acpi_pm_wake(const char *why, char *err, size_t errlen)
{
	if (!vcpus_suspended()) {
		snprintf(err, errlen, "the guest is not suspended (S3)");
		return -1;
	}
	uint32_t vector = 0;
	uint64_t facs = acpi_facs_gpa();
	if (!facs || vm_copy_from_guest(pm.ctx, facs + FACS_WAKING_VECTOR, &vector, 4) || !vector) {
		/* Nothing to resume to: as a BIOS would, start over. */
		log_info("ACPI: wake (%s) but the guest set no waking vector: rebooting", why);
		vm_request_exit(HYVE_EXIT_REBOOT);
		return 0;
	}
	pthread_mutex_lock(&pm.lock);
	pm.sts |= PM1_WAK_STS;
	pthread_mutex_unlock(&pm.lock);
	if (vcpus_wake(vector, err, errlen))
		return -1;
	log_info("ACPI: guest woken from S3 (%s), waking vector %#x", why, vector);
	return 0;
}

void acpi_pm_rtc_alarm(void)
{
	pthread_mutex_lock(&pm.lock);
	pm.sts |= PM1_RTC;
	bool wake = (pm.en & PM1_RTC) != 0;
	sci_update();
	pthread_mutex_unlock(&pm.lock);
	if (wake && vcpus_suspended()) {
		char err[160];
		if (acpi_pm_wake("RTC alarm", err, sizeof(err)))
			log_warn("ACPI: %s", err);
	}
}

/* hyvectl --wakeup */
static int cmd_wakeup(struct hyve_vm *vm, struct control_conn *c, const char *arg, char *err, size_t errlen)
{
	(void)vm; (void)c; (void)arg;
	return acpi_pm_wake("hyvectl --wakeup", err, errlen);
}

/* No checkpoint or migration of a sleeping guest: its vCPUs wait for a reset. */
static bool blocks_saving(char *err, size_t errlen)
{
	if (!vcpus_suspended())
		return false;
	snprintf(err, errlen, "the guest is suspended (S3): wake it first (hyvectl --wakeup)");
	return true;
}

/* The block's base: the FADT's ports, or (arg) where a PIIX4 PMBA moved a copy. */
static uint16_t block_base(void *arg)
{
	return arg ? (uint16_t)(uintptr_t)arg : ACPI_PM1A_EVT_PORT;
}

static int pm1_evt_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu;
	int off = port - block_base(arg);
	if (!arg && port == DEBUGCON_PORT && bytes == 1 && debugcon_access(in, val))
		return 0;
	pthread_mutex_lock(&pm.lock);
	uint32_t reg = (uint32_t)pm.sts | (uint32_t)pm.en << 16;
	if (in) {
		*val = (reg >> (8 * off)) & (bytes == 4 ? 0xffffffffu : (1u << (8 * bytes)) - 1);
	} else {
		uint32_t v = *val << (8 * off);
		uint32_t mask = (bytes == 4 ? 0xffffffffu : (1u << (8 * bytes)) - 1) << (8 * off);
		pm.sts &= (uint16_t)~(v & mask & 0xffff);            /* write-one-to-clear */
		if (mask >> 16)
			pm.en = (uint16_t)(((pm.en << 16 & ~mask) | (v & mask)) >> 16);
		sci_update();
	}
	pthread_mutex_unlock(&pm.lock);
	return 0;
}

static int pm1_cnt_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu;
	int off = port - (block_base(arg) + (ACPI_PM1A_CNT_PORT - ACPI_PM1A_EVT_PORT));
	pthread_mutex_lock(&pm.lock);
	if (in) {
		*val = (uint32_t)(pm.cnt >> (8 * off)) & (bytes >= 2 ? 0xffffu : 0xffu);
		pthread_mutex_unlock(&pm.lock);
		return 0;
	}
	uint16_t v = off ? (uint16_t)((pm.cnt & 0xff) | (*val & 0xff) << 8) : (uint16_t)(bytes >= 2 ? *val : ((pm.cnt & 0xff00) | (*val & 0xff)));
	pm.cnt = (uint16_t)((v & ~PM1_SLP_EN) | PM1_SCI_EN);
	pthread_mutex_unlock(&pm.lock);
	unsigned slp_typ = PM1_SLP_TYP(v);
	/* The PIIX4 copy speaks QEMU's PIIX4 encoding, where S5 is type 0 (its
	 * DSDT's \_S5): OVMF's shutdown writes that to PMBA + 4 directly. */
	if (arg && slp_typ == 0)
		slp_typ = ACPI_S5_SLP_TYP;
	if (v & PM1_SLP_EN) {
		if (slp_typ == ACPI_S5_SLP_TYP) {
			log_info("ACPI: guest powered off");
			vm_request_exit(HYVE_EXIT_POWEROFF);
		} else if (slp_typ == ACPI_S3_SLP_TYP && acpi_facs_gpa()) {
			log_info("ACPI: guest suspended to RAM (S3): hyvectl --wakeup or its RTC alarm resumes it");
			vcpus_suspend();
		} else {
			log_warn("ACPI: sleep type %u not supported; ignored", slp_typ);
		}
	}
	return 0;
}

/* 24-bit counter at 3.579545 MHz, derived from the host's monotonic clock. */
static int pm_tmr_handler(struct vcpu *vcpu, bool in, uint16_t port, int bytes, uint32_t *val, void *arg)
{
	(void)vcpu; (void)port; (void)bytes; (void)arg;
	if (in) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		unsigned __int128 ns = (unsigned __int128)ts.tv_sec * 1000000000u + (unsigned)ts.tv_nsec;
		*val = (uint32_t)(ns * 3579545u / 1000000000u) & 0xffffff;
	}
	return 0;
}

int acpi_reset_port_access(bool in, uint32_t *val)
{
	if (in) {
		*val = 0;
	} else if (*val & 0x4) {   /* RST_CPU */
		log_info("ACPI: reset register written");
		vm_request_exit(HYVE_EXIT_REBOOT);
	}
	return 0;
}

/* PM1 registers; the PM timer follows the host clock and has no state. */
static int pm_save(void *arg, struct snap_buf *out, char *err, size_t errlen)
{
	(void)arg; (void)err; (void)errlen;
	pthread_mutex_lock(&pm.lock);
	sb_u16(out, pm.sts);
	sb_u16(out, pm.en);
	sb_u16(out, pm.cnt);
	pthread_mutex_unlock(&pm.lock);
	return 0;
}

static int pm_load(void *arg, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	(void)arg;
	uint16_t sts = sr_u16(in), en = sr_u16(in), cnt = sr_u16(in);
	if (version != 1 || !sr_ok(in)) {
		snprintf(err, errlen, "ACPI PM state is not valid");
		return -1;
	}
	pthread_mutex_lock(&pm.lock);
	pm.sts = sts;
	pm.en = en;
	pm.cnt = (uint16_t)((cnt & ~PM1_SLP_EN) | PM1_SCI_EN);
	pm.sci = false;   /* the saved irqchip state has the line; make it agree */
	sci_update();
	pthread_mutex_unlock(&pm.lock);
	return 0;
}

static const struct snapshot_ops pm_snapshot_ops = { .version = 1, .save = pm_save, .load = pm_load };

/* The three register blocks at base (PM1a event, PM1a control, PM timer). */
static int register_blocks(uint16_t base, void *arg)
{
	struct inout_port ports[] = {
		{ "acpi-pm1a-evt", base, ACPI_PM1A_EVT_LEN, pm1_evt_handler, arg },
		{ "acpi-pm1a-cnt", (uint16_t)(base + ACPI_PM1A_CNT_PORT - ACPI_PM1A_EVT_PORT), ACPI_PM1A_CNT_LEN,
		  pm1_cnt_handler, arg },
		{ "acpi-pm-tmr", (uint16_t)(base + ACPI_PM_TMR_PORT - ACPI_PM1A_EVT_PORT), ACPI_PM_TMR_LEN,
		  pm_tmr_handler, arg },
	};
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++)
		if (register_inout(&ports[i])) {
			while (i-- > 0)
				unregister_inout(ports[i].port, ports[i].size);
			return -1;
		}
	return 0;
}

static void unregister_blocks(uint16_t base)
{
	unregister_inout(base, ACPI_PM1A_EVT_LEN);
	unregister_inout((uint16_t)(base + ACPI_PM1A_CNT_PORT - ACPI_PM1A_EVT_PORT), ACPI_PM1A_CNT_LEN);
	unregister_inout((uint16_t)(base + ACPI_PM_TMR_PORT - ACPI_PM1A_EVT_PORT), ACPI_PM_TMR_LEN);
}

int acpi_pm_set_alias(uint16_t base)
{
	static uint16_t alias;
	static pthread_mutex_t alias_lock = PTHREAD_MUTEX_INITIALIZER;
	if (base == ACPI_PM1A_EVT_PORT)
		base = 0;   /* the FADT's own ports: nothing to add */
	pthread_mutex_lock(&alias_lock);
	int r = 0;
	if (base != alias) {
		if (alias)
			unregister_blocks(alias);
		alias = 0;
		if (base && (r = register_blocks(base, (void *)(uintptr_t)base)) == 0)
			alias = base;
	}
	pthread_mutex_unlock(&alias_lock);
	return r;
}

static int acpi_pm_init(struct vmctx *ctx)
{
	pm.ctx = ctx;
	if (register_blocks(ACPI_PM1A_EVT_PORT, NULL))
		return -1;
	vmstate_add_blocker(blocks_saving);
	control_register("wakeup", cmd_wakeup);
	return snapshot_register("acpi-pm", &pm_snapshot_ops, NULL);
}
hyve_init(INIT_PLATFORM, acpi_pm_init)
